//! Arbitrary manifest + arbitrary shards → `Ces::decode` never panics, and
//! returns bytes only if they are a real chunk under the fixed key: the
//! plaintext's length and keyed BLAKE3 must match the manifest.
//!
//! The manifest is either parsed from input bytes (checksum optionally fixed
//! up) or built field by field, with lengths either consistent (so it passes
//! validation) or arbitrary. Shards are input bytes of the manifest's shard
//! length or of any length, or missing; the manifest's shard hashes are
//! optionally those of the given shards, so they verify and the bytes reach
//! Reed-Solomon and the AEAD.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pangea::ces::{ChunkId, Codec, MAX_CHUNK_LEN, Manifest, ShardId, ShardParams, TAG_LEN};
use pangea_fuzz::{ces, fill, fix_checksum};

/// Shard bytes built per input at most (the work would be the harness's,
/// not the decoder's).
const SHARD_BUDGET: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});

/// Input: a mode byte. Bit 0 set: a 2-byte little-endian length L and L bytes
/// of manifest follow (bit 1 set: fix the checksum up first). Clear: the
/// manifest is built from the input. Either way the rest of the input makes
/// the shards.
fn run(data: &[u8]) -> Result<()> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let (mut manifest, mut u) = if mode & 1 == 1 {
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            return Ok(());
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (bytes, rest) = rest.split_at(len);
        let mut bytes = bytes.to_vec();
        if mode & 2 == 2 {
            fix_checksum(&mut bytes);
        }
        match Manifest::decode(&bytes) {
            Ok(m) => (m, Unstructured::new(rest)),
            Err(_) => return Ok(()),
        }
    } else {
        let mut u = Unstructured::new(rest);
        let m = built(&mut u)?;
        if m.validate().is_ok() {
            assert_eq!(Manifest::decode(&m.encode()).as_ref(), Ok(&m));
        }
        (m, u)
    };
    let u = &mut u;

    let total = manifest.params.total();
    let n = match u.int_in_range(0..=15u8)? {
        0 => total.saturating_sub(1),
        1 => total + 1,
        _ => total,
    };
    let s = manifest.shard_len as usize;
    let mut shards: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
    let mut budget = SHARD_BUDGET;
    for _ in 0..n {
        shards.push(match u.int_in_range(0..=7u8)? {
            0 => None,
            1 => {
                let len = u.int_in_range(0..=64usize)?;
                Some(fill(u, len))
            }
            _ if s <= budget => {
                budget -= s;
                Some(fill(u, s))
            }
            _ => None,
        });
    }
    if u.arbitrary()? {
        for (sh, id) in shards.iter().zip(manifest.shard_ids.iter_mut()) {
            if let Some(sh) = sh {
                *id = ShardId::of(sh);
            }
        }
    }

    let slots: Vec<Option<&[u8]>> = shards.iter().map(Option::as_deref).collect();
    if let Ok((out, _)) = ces().decode(&manifest, &slots) {
        assert_eq!(out.len() as u64, manifest.plain_len);
        assert!(
            ces().chunk_id(&out) == manifest.chunk_id,
            "decode returned bytes that are not the chunk"
        );
    }
    Ok(())
}

/// A manifest built field by field.
fn built(u: &mut Unstructured<'_>) -> Result<Manifest> {
    let k = u.int_in_range(1..=12u16)?;
    let m = u.int_in_range(0..=6u16)?;
    let params =
        ShardParams::new(k, m).map_err(|_| libfuzzer_sys::arbitrary::Error::IncorrectFormat)?;
    let codec = if u.arbitrary()? {
        Codec::None
    } else {
        Codec::Zstd {
            level: u.arbitrary()?,
        }
    };
    let consistent = u.ratio(7u8, 8u8)?;
    let (plain_len, stored_len, shard_len) = if consistent {
        let plain_len = u.int_in_range(0..=MAX_CHUNK_LEN.min(1 << 14))?;
        let stored_len = match codec {
            Codec::None => plain_len,
            Codec::Zstd { .. } => u.int_in_range(0..=plain_len.saturating_sub(1))?,
        };
        let shard_len = params
            .shard_len(stored_len + TAG_LEN as u64)
            .unwrap_or(u32::MAX);
        (plain_len, stored_len, shard_len)
    } else {
        (u.arbitrary()?, u.arbitrary()?, u.arbitrary()?)
    };
    let mut chunk_id = [0u8; 32];
    u.fill_buffer(&mut chunk_id)?;
    let mut nonce = [0u8; 24];
    u.fill_buffer(&mut nonce)?;
    let mut shard_ids = Vec::with_capacity(params.total());
    for _ in 0..params.total() {
        let mut id = [0u8; 32];
        u.fill_buffer(&mut id)?;
        shard_ids.push(ShardId(id));
    }
    Ok(Manifest {
        codec,
        params,
        shard_len,
        plain_len,
        stored_len,
        chunk_id: ChunkId(chunk_id),
        nonce,
        shard_ids,
    })
}
