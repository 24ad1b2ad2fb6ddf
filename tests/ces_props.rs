//! Property tests of the CES contract: encode → drop any ≤ m shards → flip
//! bytes in others → decode gives back the plaintext or a typed error, never
//! other bytes.

use pangea::ces::{Ces, CesError, CompressionPolicy, Hint, MasterKey, ShardParams};
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
        let _ = pangea::ces::Manifest::decode(&bytes);
    }

    #[test]
    fn mutated_manifests_are_rejected_or_fail_safely(data in plaintext(), at in any::<usize>(), x in 1u8..=255) {
        let c = ces();
        let enc = c.encode(&data, ShardParams::new(4, 2).unwrap(), &Hint::default()).unwrap();
        let mut bytes = enc.manifest.encode();
        let at = at % bytes.len();
        bytes[at] ^= x;
        if let Ok(m) = pangea::ces::Manifest::decode(&bytes) {
            let view: Vec<Option<&[u8]>> = enc.shards().map(Some).collect();
            if let Ok((out, _)) = c.decode(&m, &view) {
                prop_assert_eq!(out, data);
            }
        }
    }
}
