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

/// The manifests of the chunk records in `kv`, by the name of their chunk
/// file (BLAKE3 of the encoded manifest). A record ends with its encoded
/// manifest (the rest of its layout is the `fs` module's business): the
/// manifest is the suffix that decodes (magic, sizes and checksum agree).
pub(crate) fn chunk_manifests(
    kv: &dyn crate::store::Kv,
) -> std::collections::HashMap<[u8; 32], crate::ces::Manifest> {
    let mut out = std::collections::HashMap::new();
    kv.scan(crate::store::Cf::Chunk, b"", b"", &mut |_, v| {
        if let Some((m, blob)) = (0..v.len()).find_map(|at| {
            crate::ces::Manifest::decode(&v[at..])
                .ok()
                .map(|m| (m, *blake3::hash(&v[at..]).as_bytes()))
        }) {
            out.insert(blob, m);
        }
        true
    })
    .unwrap();
    out
}

/// Flips a byte in each of the first `shards_to_damage` shards (data shards
/// first) of every chunk file under `data_dir/chunks` that a chunk record
/// of `kv` names, at the shard boundaries its manifest gives ((k, m) and
/// the shard length). Returns the number of files damaged (at least one).
pub(crate) fn corrupt_chunk_files(
    kv: &dyn crate::store::Kv,
    data_dir: &std::path::Path,
    shards_to_damage: usize,
) -> usize {
    let manifests = chunk_manifests(kv);
    let chunks = crate::store::ChunkFiles::open(&data_dir.join("chunks")).unwrap();
    let mut ids = Vec::new();
    chunks
        .visit(&mut |id, _| {
            ids.push(*id);
            true
        })
        .unwrap();
    let mut damaged = 0;
    for id in ids {
        // A file no record names is garbage waiting for deletion.
        let Some(m) = manifests.get(&id) else {
            continue;
        };
        let s = m.shard_len as usize;
        let total = m.params.total();
        assert!(shards_to_damage <= total, "only {total} shards");
        let mut bytes = chunks.read_all(&id).unwrap().unwrap();
        assert_eq!(
            bytes.len(),
            s * total,
            "chunk file layout: {total} shards of {s} bytes"
        );
        for i in 0..shards_to_damage {
            bytes[i * s + s / 2] ^= 0xff;
        }
        chunks.write(&id, &bytes, false).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0, "no chunk file to damage");
    damaged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ces::{Ces, CompressionPolicy, Hint, MasterKey, ShardParams};
    use crate::store::{Batch, Cf, ChunkFiles, Kv, MemKv};

    /// With (k, m) = (16, 2), damaging n shards damages exactly shards
    /// 0..n (one byte each), which decoding then reports as corrupt.
    #[test]
    fn damage_lands_on_the_first_shards_whatever_k_and_m() {
        let ces = Ces::new(
            &MasterKey::from_bytes([5; 32]),
            CompressionPolicy::default(),
        )
        .unwrap();
        for (k, m) in [(16, 2), (4, 2), (3, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let kv = MemKv::new();
            let chunks = ChunkFiles::open(&dir.path().join("chunks")).unwrap();
            let data = random(64 * 1024, 3);
            let enc = ces
                .encode(&data, ShardParams::new(k, m).unwrap(), &Hint::default())
                .unwrap();
            let (manifest, shards) = enc.into_parts();
            let encoded = manifest.encode();
            let blob = *blake3::hash(&encoded).as_bytes();
            // A record: some fields, then the manifest.
            let mut record = vec![2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
            record.extend_from_slice(&encoded);
            let mut b = Batch::new();
            b.put(Cf::Chunk, manifest.chunk_id.as_bytes(), &record);
            kv.write(b, false).unwrap();
            chunks.write(&blob, &shards, false).unwrap();
            let s = manifest.shard_len as usize;
            for n in 1..=usize::from(m) {
                let before = chunks.read_all(&blob).unwrap().unwrap();
                assert_eq!(corrupt_chunk_files(&kv, dir.path(), 1), 1);
                let after = chunks.read_all(&blob).unwrap().unwrap();
                let hit: Vec<usize> = (0..before.len())
                    .filter(|&i| before[i] != after[i])
                    .map(|i| i / s)
                    .collect();
                assert_eq!(hit, vec![0], "({k}, {m})");
                // Undo, then damage n shards at once.
                chunks.write(&blob, &before, false).unwrap();
                corrupt_chunk_files(&kv, dir.path(), n);
                let after = chunks.read_all(&blob).unwrap().unwrap();
                let hit: Vec<usize> = (0..before.len())
                    .filter(|&i| before[i] != after[i])
                    .map(|i| i / s)
                    .collect();
                assert_eq!(hit, (0..n).collect::<Vec<_>>(), "({k}, {m})");
                let view: Vec<Option<&[u8]>> = after.chunks(s).map(Some).collect();
                let (out, report) = ces.decode(&manifest, &view).unwrap();
                assert_eq!(out, data);
                let corrupt: Vec<usize> = report.corrupt.iter().map(|&i| usize::from(i)).collect();
                assert_eq!(corrupt, (0..n).collect::<Vec<_>>(), "({k}, {m})");
                chunks.write(&blob, &before, false).unwrap();
            }
        }
    }
}
