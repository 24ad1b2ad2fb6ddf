//! Helpers shared by the fuzz targets in `fuzz_targets/` and by
//! `examples/make_seeds.rs`. Setup code may unwrap: it never sees fuzz input.

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use pangea::ces::{
    Ces, CompressionPolicy, EncodedChunk, Hint, KEY_LEN, MasterKey, NONCE_LEN, ShardParams,
};

/// The one key every target uses.
pub const KEY: [u8; KEY_LEN] = [0x5a; KEY_LEN];
/// The one nonce every target uses (`Ces::encode_with_nonce`).
pub const NONCE: [u8; NONCE_LEN] = [0xa5; NONCE_LEN];

/// (k, m) choices: no redundancy, the smallest codes, the defaults and a
/// couple of wider ones.
pub const PARAMS: &[(u16, u16)] = &[
    (1, 0),
    (1, 1),
    (2, 1),
    (3, 0),
    (3, 2),
    (4, 2),
    (6, 3),
    (8, 4),
    (10, 3),
    (16, 8),
];

/// Largest plaintext the targets build: past every shard and stripe edge of
/// the (k, m) above for small shards, small enough for thousands of execs/s.
pub const MAX_PLAIN: usize = 4200;

/// Pipelines with the fixed key, one per compression policy: the default,
/// compression off, and zstd forced at a low and a high level.
pub fn pipelines() -> &'static [Ces] {
    static CES: OnceLock<Vec<Ces>> = OnceLock::new();
    CES.get_or_init(|| {
        let key = MasterKey::from_bytes(KEY);
        [
            CompressionPolicy::default(),
            CompressionPolicy::uniform(None),
            CompressionPolicy::uniform(Some(1)),
            CompressionPolicy::uniform(Some(19)),
        ]
        .into_iter()
        .map(|p| Ces::new(&key, p).unwrap())
        .collect()
    })
}

/// The default pipeline (decoding does not depend on the policy).
pub fn ces() -> &'static Ces {
    &pipelines()[0]
}

/// `n` bytes from the input, zero-padded when it runs out.
pub fn fill(u: &mut Unstructured<'_>, n: usize) -> Vec<u8> {
    let take = n.min(u.len());
    let mut out = u.bytes(take).map(<[u8]>::to_vec).unwrap_or_default();
    out.resize(n, 0);
    out
}

/// A plaintext of up to [`MAX_PLAIN`] bytes derived from the input: raw input
/// bytes, a short pattern repeated (compresses, so the zstd path runs),
/// BLAKE3 output (incompressible) or all zeros.
pub fn plaintext(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=MAX_PLAIN)?;
    Ok(match u.int_in_range(0..=3u8)? {
        0 => fill(u, len),
        1 => {
            let plen = u.int_in_range(1..=24usize)?;
            let pattern = fill(u, plen);
            pattern.iter().copied().cycle().take(len).collect()
        }
        2 => {
            let seed: u64 = u.arbitrary()?;
            let mut out = vec![0u8; len];
            blake3::Hasher::new()
                .update(&seed.to_le_bytes())
                .finalize_xof()
                .fill(&mut out);
            out
        }
        _ => vec![0u8; len],
    })
}

/// File names that steer the classifier: none, text, media, already
/// compressed.
pub const NAMES: &[Option<&str>] = &[None, Some("notes.txt"), Some("movie.mkv"), Some("a.zst")];

/// Encodes `plain` with the fixed key and nonce.
pub fn encode(
    policy: usize,
    plain: &[u8],
    (k, m): (u16, u16),
    name: Option<&str>,
    not_first_chunk: bool,
) -> EncodedChunk {
    let hint = Hint {
        file_name: name,
        not_first_chunk,
    };
    let params = ShardParams::new(k, m).unwrap();
    pipelines()[policy % pipelines().len()]
        .encode_with_nonce(plain, params, &hint, NONCE)
        .unwrap()
}

/// Replaces the last 8 bytes of an encoded manifest with the checksum of the
/// rest, so mutations reach the field checks behind the checksum.
pub fn fix_checksum(bytes: &mut [u8]) {
    if let Some(body) = bytes.len().checked_sub(8) {
        let sum = blake3::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum.as_bytes()[..8]);
    }
}
