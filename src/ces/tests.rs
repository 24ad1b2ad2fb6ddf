//! Unit tests of the whole pipeline: boundary sizes, every kind of damage,
//! wrong keys, swapped chunks, and the no-RS fast path.

use super::*;

const KEY: [u8; KEY_LEN] = [7; KEY_LEN];
const NONCE: [u8; NONCE_LEN] = [9; NONCE_LEN];

fn ces() -> Ces {
    Ces::new(&MasterKey::from_bytes(KEY), CompressionPolicy::default()).unwrap()
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

fn text(n: usize) -> Vec<u8> {
    let line = b"fn shard(k: usize, m: usize) -> Result<Vec<u8>, Error> { todo }\n";
    line.iter().copied().cycle().take(n).collect()
}

fn all(enc: &EncodedChunk) -> Vec<Option<&[u8]>> {
    enc.shards().map(Some).collect()
}

fn params(k: u16, m: u16) -> ShardParams {
    ShardParams::new(k, m).unwrap()
}

/// Sizes around every boundary of the layout: empty, one byte, the tag, shard
/// and stripe edges for several k, and the 4 MiB chunk size.
fn interesting_sizes(k: u16) -> Vec<usize> {
    let k = usize::from(k);
    let mut v = vec![0, 1, 2, 15, 16, 17, 63, 64, 65, 4095, 4096, 4097];
    for s in [2usize, 64, 4096] {
        for stripe in [k * s, k * s - TAG_LEN.min(k * s)] {
            v.extend([stripe.saturating_sub(1), stripe, stripe + 1]);
        }
    }
    v.extend([(4 << 20) - 1, 4 << 20, (4 << 20) + 1]);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn round_trip_at_every_interesting_size() {
    let c = ces();
    for (k, m) in [(1, 0), (1, 1), (2, 1), (4, 2), (8, 4), (10, 3), (3, 0)] {
        for n in interesting_sizes(k) {
            for data in [random(n, n as u64), text(n)] {
                let enc = c
                    .encode_with_nonce(&data, params(k, m), &Hint::default(), NONCE)
                    .unwrap();
                assert_eq!(enc.shards().count(), usize::from(k + m));
                let (out, report) = c.decode(&enc.manifest, &all(&enc)).unwrap();
                assert_eq!(out, data, "k={k} m={m} n={n}");
                assert!(!report.reconstructed);
                // Drop the first m shards: data shards are rebuilt.
                let mut some = all(&enc);
                for slot in some.iter_mut().take(usize::from(m)) {
                    *slot = None;
                }
                let (out, report) = c.decode(&enc.manifest, &some).unwrap();
                assert_eq!(out, data, "k={k} m={m} n={n} with {m} missing");
                assert_eq!(report.reconstructed, m > 0);
            }
        }
    }
}

#[test]
fn round_trip_above_the_chunk_size() {
    let c = ces();
    let data = random((9 << 20) + 3, 1);
    let enc = c.encode(&data, params(4, 2), &Hint::default()).unwrap();
    let mut shards = all(&enc);
    shards[1] = None;
    shards[4] = None;
    assert_eq!(c.decode(&enc.manifest, &shards).unwrap().0, data);
}

#[test]
fn extreme_shard_counts_round_trip() {
    let c = ces();
    for (k, m) in [(255, 1), (1, 255), (300, 100), (u16::MAX, 0)] {
        let data = random(70_000, u64::from(k));
        let enc = c.encode(&data, params(k, m), &Hint::default()).unwrap();
        let mut shards = all(&enc);
        for slot in shards.iter_mut().take(usize::from(m)) {
            *slot = None;
        }
        assert_eq!(
            c.decode(&enc.manifest, &shards).unwrap().0,
            data,
            "k={k} m={m}"
        );
    }
}

#[test]
fn incompressible_data_is_stored_at_plaintext_size_plus_fixed_overhead() {
    let c = ces();
    for (k, n) in [(4u16, 4 << 20), (10, 1000), (8, 1)] {
        let data = random(n, 5);
        let enc = c.encode(&data, params(k, 2), &Hint::default()).unwrap();
        assert_eq!(enc.manifest.codec, Codec::None);
        let data_bytes = usize::from(k) * enc.manifest.shard_len as usize;
        assert!(
            data_bytes < n + TAG_LEN + 2 * usize::from(k),
            "k={k} n={n}: {data_bytes}"
        );
    }
}

#[test]
fn text_is_compressed_and_media_is_not() {
    let c = ces();
    let t = text(1 << 20);
    let enc = c.encode(&t, params(4, 2), &Hint::default()).unwrap();
    assert_eq!(enc.class, ContentClass::Text);
    assert!(matches!(enc.manifest.codec, Codec::Zstd { .. }));
    assert!(enc.manifest.stored_len * 10 < enc.manifest.plain_len);
    let hint = Hint {
        file_name: Some("movie.mkv"),
        ..Hint::default()
    };
    let enc = c.encode(&t, params(4, 2), &hint).unwrap();
    assert_eq!(enc.manifest.codec, Codec::None);
}

#[test]
fn equal_plaintexts_get_equal_ids_and_fresh_nonces() {
    let c = ces();
    let data = text(10_000);
    let a = c.encode(&data, params(4, 2), &Hint::default()).unwrap();
    let b = c.encode(&data, params(4, 2), &Hint::default()).unwrap();
    assert_eq!(a.manifest.chunk_id, b.manifest.chunk_id);
    assert_eq!(a.manifest.chunk_id, c.chunk_id(&data));
    assert_ne!(a.manifest.nonce, b.manifest.nonce);
    assert_ne!(a.manifest.shard_ids, b.manifest.shard_ids);
    // Another owner's ids for the same bytes differ.
    let other = Ces::new(
        &MasterKey::from_bytes([8; KEY_LEN]),
        CompressionPolicy::default(),
    )
    .unwrap();
    assert_ne!(other.chunk_id(&data), a.manifest.chunk_id);
}

#[test]
fn corrupt_shards_are_skipped_and_reported() {
    let c = ces();
    let data = random(100_000, 3);
    let enc = c.encode(&data, params(4, 2), &Hint::default()).unwrap();
    let mut bad0 = enc.shard(0).unwrap().to_vec();
    bad0[17] ^= 1;
    let short = &enc.shard(2).unwrap()[1..];
    let mut shards = all(&enc);
    shards[0] = Some(&bad0);
    shards[2] = Some(short);
    let (out, report) = c.decode(&enc.manifest, &shards).unwrap();
    assert_eq!(out, data);
    assert_eq!(report.corrupt, vec![0, 2]);
    assert!(report.reconstructed);
    // A third bad shard leaves fewer than k.
    shards[5] = None;
    assert_eq!(
        c.decode(&enc.manifest, &shards),
        Err(CesError::NotEnoughShards {
            needed: 4,
            got: 3,
            corrupt: vec![0, 2]
        })
    );
}

#[test]
fn verify_shard_names_the_fault() {
    let c = ces();
    let enc = c
        .encode(&random(1000, 4), params(2, 1), &Hint::default())
        .unwrap();
    let m = &enc.manifest;
    assert_eq!(verify_shard(m, 1, enc.shard(1).unwrap()), Ok(()));
    assert_eq!(
        verify_shard(m, 0, enc.shard(1).unwrap()),
        Err(CesError::CorruptShard {
            index: 0,
            reason: ShardFault::Hash
        })
    );
    assert!(matches!(
        verify_shard(m, 0, &[]),
        Err(CesError::CorruptShard {
            index: 0,
            reason: ShardFault::Length { .. }
        })
    ));
    assert!(matches!(
        verify_shard(m, 3, &[]),
        Err(CesError::ShardCountMismatch { .. })
    ));
}

#[test]
fn wrong_key_fails_authentication() {
    let data = text(5000);
    let enc = ces().encode(&data, params(4, 2), &Hint::default()).unwrap();
    let other = Ces::new(
        &MasterKey::from_bytes([8; KEY_LEN]),
        CompressionPolicy::default(),
    )
    .unwrap();
    assert_eq!(
        other.decode(&enc.manifest, &all(&enc)),
        Err(CesError::AuthenticationFailed)
    );
}

#[test]
fn shards_of_one_chunk_cannot_pass_as_another() {
    // Two chunks whose layouts are identical: only the chunk id differs.
    let c = ces();
    let a = c
        .encode(&random(5000, 10), params(4, 2), &Hint::default())
        .unwrap();
    let b = c
        .encode(&random(5000, 11), params(4, 2), &Hint::default())
        .unwrap();
    // Manifest of b pointing at a's shards (with a's hashes, so they verify).
    let mut forged = b.manifest.clone();
    forged.shard_ids = a.manifest.shard_ids.clone();
    forged.nonce = a.manifest.nonce;
    assert_eq!(
        c.decode(&forged, &all(&a)),
        Err(CesError::AuthenticationFailed)
    );
}

#[test]
fn tampered_manifest_fields_fail_authentication() {
    let c = ces();
    let data = text(50_000);
    let enc = c.encode(&data, params(4, 2), &Hint::default()).unwrap();
    let mut m = enc.manifest.clone();
    m.nonce[0] ^= 1;
    assert_eq!(
        c.decode(&m, &all(&enc)),
        Err(CesError::AuthenticationFailed)
    );
    let mut m = enc.manifest.clone();
    m.codec = Codec::Zstd { level: 5 };
    assert_eq!(
        c.decode(&m, &all(&enc)),
        Err(CesError::AuthenticationFailed)
    );
    // A shorter stored length is caught before anything else (shard length).
    let mut m = enc.manifest.clone();
    // (The text compresses to under 100 bytes: halve, never subtract.)
    m.stored_len /= 2;
    assert!(matches!(
        c.decode(&m, &all(&enc)),
        Err(CesError::MalformedManifest(_))
    ));
}

#[test]
fn ciphertext_flipped_under_matching_hashes_fails_authentication() {
    // An attacker who can also rewrite the manifest's shard hashes still
    // cannot get altered bytes accepted.
    let c = ces();
    let data = random(3000, 12);
    let enc = c.encode(&data, params(2, 1), &Hint::default()).unwrap();
    let mut s0 = enc.shard(0).unwrap().to_vec();
    s0[5] ^= 0x80;
    let mut m = enc.manifest.clone();
    m.shard_ids[0] = ShardId::of(&s0);
    let shards = vec![Some(&s0[..]), enc.shard(1), enc.shard(2)];
    assert_eq!(c.decode(&m, &shards), Err(CesError::AuthenticationFailed));
}

#[test]
fn wrong_slot_count_is_rejected() {
    let c = ces();
    let enc = c.encode(b"abc", params(2, 1), &Hint::default()).unwrap();
    assert_eq!(
        c.decode(&enc.manifest, &[enc.shard(0), enc.shard(1)]),
        Err(CesError::ShardCountMismatch {
            expected: 3,
            got: 2
        })
    );
}

#[test]
fn manifest_round_trips_and_rejects_damage() {
    let c = ces();
    let enc = c
        .encode(&text(9000), params(8, 4), &Hint::default())
        .unwrap();
    let bytes = enc.manifest.encode();
    assert_eq!(bytes.len(), Manifest::encoded_len(12));
    assert_eq!(Manifest::decode(&bytes).unwrap(), enc.manifest);
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(Manifest::decode(&b).is_err(), "flip at {i} accepted");
    }
    for n in 0..bytes.len() {
        assert!(Manifest::decode(&bytes[..n]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Manifest::decode(&longer),
        Err(ManifestError::Size { .. })
    ));
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert_eq!(Manifest::decode(&v2), Err(ManifestError::Version(2)));
}

#[test]
fn hand_built_manifest_with_huge_lengths_is_an_error() {
    // Found by fuzz/reconstruct: `sealed_len` overflowed on a stored length
    // near u64::MAX (a panic in debug builds), and `ShardParams::shard_len`
    // when rounding such a length up to even.
    let c = ces();
    let enc = c.encode(b"abc", params(1, 0), &Hint::default()).unwrap();
    for stored_len in [u64::MAX, u64::MAX - 15, u64::MAX - 16] {
        let mut m = enc.manifest.clone();
        m.stored_len = stored_len;
        m.plain_len = stored_len;
        assert_eq!(m.sealed_len(), stored_len.saturating_add(TAG_LEN as u64));
        assert!(m.validate().is_err());
        assert!(matches!(
            c.decode(&m, &all(&enc)),
            Err(CesError::MalformedManifest(_))
        ));
    }
}

#[test]
fn invalid_parameters_are_rejected() {
    assert!(matches!(
        ShardParams::new(0, 1),
        Err(CesError::InvalidParameters(ParamError::ZeroDataShards))
    ));
    assert!(matches!(
        ShardParams::new(40_000, 40_000),
        Err(CesError::InvalidParameters(
            ParamError::UnsupportedShardCounts { .. }
        ))
    ));
    assert!(
        Ces::new(
            &MasterKey::from_bytes(KEY),
            CompressionPolicy::uniform(Some(30))
        )
        .is_err()
    );
}

#[test]
fn decode_from_contiguous_data_shards_round_trips_and_fails_the_tag_on_damage() {
    let c = ces();
    for (k, m) in [(1, 0), (4, 2), (16, 2)] {
        for n in interesting_sizes(k) {
            for data in [random(n, n as u64), text(n)] {
                let enc = c
                    .encode_with_nonce(&data, params(k, m), &Hint::default(), NONCE)
                    .unwrap();
                let s = enc.manifest.shard_len as usize;
                let data_shards = enc.shards[..usize::from(k) * s].to_vec();
                let out = c
                    .decode_data_shards(&enc.manifest, data_shards.clone())
                    .unwrap();
                assert_eq!(out, data, "k={k} m={m} n={n}");
                // A flipped byte anywhere in the payload (first byte, last
                // byte of the tag) fails the tag: never wrong bytes. The
                // full decode then names the shard.
                let needed = enc.manifest.stored_len as usize + 16;
                for at in [0, needed / 2, needed - 1] {
                    let mut bad = data_shards.clone();
                    bad[at] ^= 1;
                    assert_eq!(
                        c.decode_data_shards(&enc.manifest, bad.clone()),
                        Err(CesError::AuthenticationFailed),
                        "k={k} m={m} n={n} at={at}"
                    );
                    if m == 0 {
                        continue;
                    }
                    let mut view: Vec<Option<&[u8]>> = bad.chunks(s).map(Some).collect();
                    view.extend(enc.shards().skip(usize::from(k)).map(Some));
                    let (out, report) = c.decode(&enc.manifest, &view).unwrap();
                    assert_eq!(out, data);
                    assert_eq!(report.corrupt, vec![(at / s) as u16], "{report:?}");
                }
                // Padding after the tag is no payload: a flip there reads
                // the same (the scrubber's hash finds it).
                if needed < data_shards.len() {
                    let mut pad = data_shards.clone();
                    let last = pad.len() - 1;
                    pad[last] ^= 1;
                    assert_eq!(c.decode_data_shards(&enc.manifest, pad).unwrap(), data);
                }
                // A short buffer (a truncated chunk file) is a typed error.
                let mut short = data_shards.clone();
                short.pop();
                assert!(matches!(
                    c.decode_data_shards(&enc.manifest, short),
                    Err(CesError::NotEnoughShards { .. })
                ));
                // The same shards behind junk (where a direct read puts
                // them) decode the same; damage is named, shortness typed.
                for offset in [1, 7, 4080, 3 * s + 5] {
                    let mut at = vec![0xA5; offset];
                    at.extend_from_slice(&data_shards);
                    let out = c
                        .decode_data_shards_at(&enc.manifest, at.clone(), offset)
                        .unwrap();
                    assert_eq!(out, data, "k={k} m={m} n={n} offset={offset}");
                    at[offset + (needed - 1) / 2] ^= 1;
                    assert_eq!(
                        c.decode_data_shards_at(&enc.manifest, at.clone(), offset),
                        Err(CesError::AuthenticationFailed)
                    );
                    at.pop();
                    assert!(matches!(
                        c.decode_data_shards_at(&enc.manifest, at, offset),
                        Err(CesError::NotEnoughShards { .. })
                    ));
                }
            }
        }
    }
}

#[test]
fn rebuild_shards_restores_the_encodings_own_shards_without_a_key() {
    let enc = ces()
        .encode(&random(300_000, 41), params(4, 2), &Hint::default())
        .unwrap();
    let s = enc.manifest.shard_len as usize;
    let original: Vec<u8> = enc.shards().flatten().copied().collect();
    // Every way of losing or damaging up to m shards, data and parity.
    for (a, b) in [(0, 1), (0, 5), (3, 4), (4, 5), (2, 2)] {
        let mut damaged = original.clone();
        damaged[a * s + 7] ^= 1;
        let mut view: Vec<Option<&[u8]>> = damaged.chunks(s).map(Some).collect();
        view[b] = None;
        let (all, report) = rebuild_shards(&enc.manifest, &view).unwrap();
        assert_eq!(all, original, "lost {a} and {b}");
        assert_eq!(report.corrupt.contains(&(a as u16)), a != b);
        assert_eq!(report.missing, vec![b as u16]);
    }
    // More than m bad: an error, never made-up shards.
    let mut view: Vec<Option<&[u8]>> = original.chunks(s).map(Some).collect();
    view[0] = None;
    view[1] = None;
    view[5] = None;
    assert!(matches!(
        rebuild_shards(&enc.manifest, &view),
        Err(CesError::NotEnoughShards { .. })
    ));
}
