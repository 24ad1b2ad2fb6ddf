//! Writes the seed inputs under fuzz/seeds/ (committed; rerun after a format
//! change): `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.
//!
//! * manifest_decode: real manifests for several (k, m) and both codecs,
//!   behind mode byte 0 (checksum kept as is).
//! * decode_arbitrary: a real chunk, manifest and all shards, in that
//!   target's raw-manifest layout, so the fuzzer starts from an input that
//!   decodes.
//! * reconstruct: a few short inputs; any bytes make a valid case there.

use std::fs;
use std::path::Path;

use pangea_fuzz::encode;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let text: Vec<u8> = b"fn main() { println!(\"pangea\"); }\n"
        .iter()
        .copied()
        .cycle()
        .take(700)
        .collect();
    let mut noise = vec![0u8; 300];
    blake3::Hasher::new().finalize_xof().fill(&mut noise);

    let dir = root.join("manifest_decode");
    fs::create_dir_all(&dir).unwrap();
    for (k, m) in [(1, 0), (2, 1), (4, 2), (10, 3)] {
        for (what, plain) in [("text", &text), ("noise", &noise)] {
            let enc = encode(0, plain, (k, m), None, false);
            let mut seed = vec![0u8];
            seed.extend(enc.manifest.encode());
            fs::write(dir.join(format!("{what}-{k}-{m}")), seed).unwrap();
        }
    }

    let dir = root.join("decode_arbitrary");
    fs::create_dir_all(&dir).unwrap();
    for (k, m) in [(2, 1), (4, 2)] {
        for (what, plain) in [("text", &text), ("noise", &noise)] {
            let enc = encode(0, plain, (k, m), None, false);
            let manifest = enc.manifest.encode();
            let mut seed = vec![1u8];
            seed.extend(u16::try_from(manifest.len()).unwrap().to_le_bytes());
            seed.extend(&manifest);
            // Slot count: total. Then each slot: a full shard of its bytes.
            seed.push(2);
            for shard in enc.shards() {
                seed.push(2);
                seed.extend(shard);
            }
            seed.push(0); // keep the manifest's shard hashes
            fs::write(dir.join(format!("{what}-{k}-{m}")), seed).unwrap();
        }
    }

    let dir = root.join("reconstruct");
    fs::create_dir_all(&dir).unwrap();
    for (i, len) in [8usize, 32, 128].into_iter().enumerate() {
        fs::write(dir.join(format!("seed-{i}")), &noise[..len]).unwrap();
    }
}
