//! Property tests of the CES contract: encode → drop any ≤ m shards → flip
//! bytes in others → decode gives back the plaintext or a typed error, never
//! other bytes.

use pangea::ces::{
    Ces, CesError, ChunkId, Codec, CompressionPolicy, FORMAT_VERSION, Hint, Manifest,
    ManifestError, MasterKey, ShardId, ShardParams,
};
use proptest::prelude::*;

fn ces() -> Ces {
    Ces::new(
        &MasterKey::from_bytes([3; 32]),
        CompressionPolicy::default(),
    )
    .unwrap()
}

/// Plaintexts that exercise both codecs: random bytes, repetitive text, and a mix.
fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..5000),
        (0usize..20_000, any::<u8>()).prop_map(|(n, b)| {
            let line = format!("line {b} of some text that repeats\n");
            line.bytes().cycle().take(n).collect()
        }),
        (prop::collection::vec(any::<u8>(), 0..300), 0usize..40)
            .prop_map(|(seed, reps)| seed.repeat(reps)),
    ]
}

fn params() -> impl Strategy<Value = (u16, u16)> {
    prop_oneof![
        Just((1, 0)),
        Just((1, 2)),
        Just((3, 0)),
        Just((4, 2)),
        Just((8, 4)),
        Just((10, 3)),
        (1u16..20, 0u16..8)
    ]
}

/// Damage to apply: for each shard, maybe drop it, maybe flip a byte.
#[derive(Debug, Clone)]
struct Damage {
    drop: Vec<bool>,
    flips: Vec<(usize, usize, u8)>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        prop::collection::vec(any::<bool>(), 32),
        prop::collection::vec((any::<usize>(), any::<usize>(), 1u8..=255), 0..4),
    )
        .prop_map(|(drop, flips)| Damage { drop, flips })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decode_is_identity_or_typed_error(data in plaintext(), (k, m) in params(), dmg in damage()) {
        let c = ces();
        let p = ShardParams::new(k, m).unwrap();
        let enc = c.encode(&data, p, &Hint::default()).unwrap();
        let total = usize::from(k + m);
        let mut shards: Vec<Option<Vec<u8>>> = enc.shards().map(|s| Some(s.to_vec())).collect();
        // Drop up to m shards.
        let mut dropped = 0;
        for (i, slot) in shards.iter_mut().enumerate() {
            if dmg.drop[i % dmg.drop.len()] && dropped < usize::from(m) {
                *slot = None;
                dropped += 1;
            }
        }
        let mut flipped = std::collections::BTreeSet::new();
        for &(i, at, x) in &dmg.flips {
            let i = i % total;
            if let Some(s) = shards[i].as_mut() {
                let at = at % s.len();
                s[at] ^= x;
                flipped.insert(i);
            }
        }
        let view: Vec<Option<&[u8]>> = shards.iter().map(|s| s.as_deref()).collect();
        match c.decode(&enc.manifest, &view) {
            Ok((out, report)) => {
                prop_assert_eq!(&out, &data);
                // Every shard reported corrupt really was damaged.
                for i in &report.corrupt {
                    prop_assert!(flipped.contains(&usize::from(*i)));
                }
            }
            Err(CesError::NotEnoughShards { needed, got, .. }) => {
                prop_assert_eq!(needed, usize::from(k));
                prop_assert!(got < needed);
                prop_assert!(dropped + flipped.len() > usize::from(m));
            }
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    #[test]
    fn undamaged_with_up_to_m_missing_always_decodes(data in plaintext(), (k, m) in params(), dmg in damage()) {
        let c = ces();
        let enc = c.encode(&data, ShardParams::new(k, m).unwrap(), &Hint::default()).unwrap();
        let mut view: Vec<Option<&[u8]>> = enc.shards().map(Some).collect();
        let mut dropped = 0;
        for (i, slot) in view.iter_mut().enumerate() {
            if dmg.drop[i % dmg.drop.len()] && dropped < usize::from(m) {
                *slot = None;
                dropped += 1;
            }
        }
        let (out, report) = c.decode(&enc.manifest, &view).unwrap();
        prop_assert_eq!(out, data);
        prop_assert!(report.corrupt.is_empty());
        let data_missing = view[..usize::from(k)].iter().any(Option::is_none);
        prop_assert_eq!(report.reconstructed, data_missing);
    }

    #[test]
    fn manifest_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Manifest::decode(&bytes);
    }

    /// Every single-byte change of an encoded manifest is rejected, with
    /// the error of the field it hit: the header's own checks first, the
    /// checksum for everything after (k, m).
    #[test]
    fn manifest_byte_flips_are_rejected_with_the_right_error(data in plaintext(), (k, m) in params(), at in any::<usize>(), x in 1u8..=255) {
        let enc = ces().encode(&data, ShardParams::new(k, m).unwrap(), &Hint::default()).unwrap();
        let mut bytes = enc.manifest.encode();
        prop_assert_eq!(Manifest::decode(&bytes), Ok(enc.manifest.clone()));
        let at = at % bytes.len();
        bytes[at] ^= x;
        let e = Manifest::decode(&bytes).expect_err("a flipped byte passed");
        match at {
            0..4 => prop_assert_eq!(e, ManifestError::Magic),
            4 => prop_assert_eq!(e, ManifestError::Version(FORMAT_VERSION ^ x)),
            5 | 6 => prop_assert!(
                matches!(e, ManifestError::Codec(_) | ManifestError::Lengths(_) | ManifestError::Checksum),
                "{e:?}"
            ),
            7 => prop_assert_eq!(e, ManifestError::Flags(x)),
            8..12 => prop_assert!(
                matches!(e, ManifestError::Params(_) | ManifestError::Size { .. }),
                "{e:?}"
            ),
            _ => prop_assert_eq!(e, ManifestError::Checksum),
        }
    }

    /// A manifest edited field by field and re-encoded with a valid
    /// checksum (what a forger without the key can make): it either fails
    /// validation, or decodes to exactly the edited fields and then the
    /// chunk fails authentication, except an edited shard address, which
    /// only costs that shard (it is rebuilt from parity). Never other
    /// bytes.
    #[test]
    fn re_encoded_edited_manifests_fail_authentication_or_validation(data in plaintext(), edit in edit()) {
        let c = ces();
        let (k, m) = (4u16, 2u16);
        let enc = c.encode(&data, ShardParams::new(k, m).unwrap(), &Hint::default()).unwrap();
        let mut edited = enc.manifest.clone();
        apply(&edit, &mut edited);
        prop_assume!(edited != enc.manifest);
        let view: Vec<Option<&[u8]>> = enc.shards().map(Some).collect();
        let decoded = match Manifest::decode(&edited.encode()) {
            Ok(d) => d,
            Err(e) => {
                // Only edits of lengths and codec can break validation
                // (a zstd level breaks it only on an uncompressed chunk).
                let was_zstd = matches!(enc.manifest.codec, Codec::Zstd { .. });
                prop_assert!(
                    match edit {
                        Edit::PlainLen(_) | Edit::StoredLen(_) | Edit::BothLens(_) | Edit::Codec => true,
                        Edit::Level(_) => !was_zstd,
                        Edit::ChunkId(..) | Edit::Nonce(..) | Edit::ShardId(..) => false,
                    },
                    "{:?} rejected: {:?}", edit, e
                );
                // And the pipeline refuses the same manifest with the same error.
                prop_assert_eq!(c.decode(&edited, &view).err(), Some(CesError::MalformedManifest(e)));
                return Ok(());
            }
        };
        prop_assert_eq!(&decoded, &edited);
        match edit {
            Edit::ShardId(i, _, _) => {
                let i = i % usize::from(k + m);
                let (out, report) = c.decode(&decoded, &view).unwrap();
                prop_assert_eq!(out, data);
                // Shards past the first k good ones are not checked.
                let expected: Vec<u16> = if i < usize::from(k) { vec![i as u16] } else { vec![] };
                prop_assert_eq!(report.corrupt, expected);
            }
            _ => prop_assert_eq!(
                c.decode(&decoded, &view).err(),
                Some(CesError::AuthenticationFailed),
                "{:?}", edit
            ),
        }
    }
}

/// One edit of a manifest's fields.
#[derive(Debug, Clone)]
enum Edit {
    ChunkId(usize, u8),
    Nonce(usize, u8),
    /// Shard index (mod k + m), byte, xor.
    ShardId(usize, usize, u8),
    PlainLen(i64),
    StoredLen(i64),
    /// Both lengths by the same amount (an uncompressed chunk stays
    /// consistent; its shard length may then still match).
    BothLens(i64),
    /// Another zstd level (or zstd for an uncompressed chunk).
    Level(i8),
    /// Uncompressed <-> zstd.
    Codec,
}

fn edit() -> impl Strategy<Value = Edit> {
    let delta = prop_oneof![1i64..8, 8i64..100_000, -8i64..0, -100_000i64..-8];
    prop_oneof![
        (0usize..32, 1u8..=255).prop_map(|(a, x)| Edit::ChunkId(a, x)),
        (0usize..24, 1u8..=255).prop_map(|(a, x)| Edit::Nonce(a, x)),
        (any::<usize>(), 0usize..32, 1u8..=255).prop_map(|(i, a, x)| Edit::ShardId(i, a, x)),
        delta.clone().prop_map(Edit::PlainLen),
        delta.clone().prop_map(Edit::StoredLen),
        delta.prop_map(Edit::BothLens),
        (1i8..=22).prop_map(Edit::Level),
        Just(Edit::Codec),
    ]
}

fn apply(edit: &Edit, m: &mut Manifest) {
    let add = |v: u64, d: i64| v.saturating_add_signed(d);
    match *edit {
        Edit::ChunkId(a, x) => {
            let mut id = *m.chunk_id.as_bytes();
            id[a] ^= x;
            m.chunk_id = ChunkId(id);
        }
        Edit::Nonce(a, x) => m.nonce[a] ^= x,
        Edit::ShardId(i, a, x) => {
            let i = i % m.shard_ids.len();
            let mut id = *m.shard_ids[i].as_bytes();
            id[a] ^= x;
            m.shard_ids[i] = ShardId(id);
        }
        Edit::PlainLen(d) => m.plain_len = add(m.plain_len, d),
        Edit::StoredLen(d) => m.stored_len = add(m.stored_len, d),
        Edit::BothLens(d) => {
            m.plain_len = add(m.plain_len, d);
            m.stored_len = add(m.stored_len, d);
        }
        Edit::Level(l) => m.codec = Codec::Zstd { level: l },
        Edit::Codec => {
            m.codec = match m.codec {
                Codec::None => Codec::Zstd { level: 3 },
                Codec::Zstd { .. } => Codec::None,
            }
        }
    }
}
