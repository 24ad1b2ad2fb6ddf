//! Helpers shared by the unit tests of `fs` and `workers` (`ces` keeps its
//! own: it depends on no other module of the crate).

/// `n` pseudo-random bytes, the same for the same seed (BLAKE3 XOF).
pub(crate) fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

/// Flips a byte in each of the first `shards_to_damage` shards of every
/// chunk file under `data_dir/chunks` (files of (k, m) = (4, 2)).
pub(crate) fn corrupt_chunk_files(data_dir: &std::path::Path, shards_to_damage: usize) {
    let chunks = crate::store::ChunkFiles::open(&data_dir.join("chunks")).unwrap();
    let mut ids = Vec::new();
    chunks
        .visit(&mut |id, _| {
            ids.push(*id);
            true
        })
        .unwrap();
    for id in ids {
        let mut bytes = chunks.read_all(&id).unwrap().unwrap();
        let s = bytes.len() / 6; // (4, 2)
        for i in 0..shards_to_damage {
            bytes[i * s + 3] ^= 0xff;
        }
        chunks.write(&id, &bytes, false).unwrap();
    }
}
