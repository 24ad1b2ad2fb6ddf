//! Committed fixtures of chunk-manifest format v1 (docs/FORMAT.md): this code
//! must keep decoding what earlier builds wrote. `PANGEA_BLESS=1 cargo test
//! --test ces_fixtures` rewrites them (only when the format version changes;
//! refused in CI), and the files written are then checked as always.
//!
//! Each fixture directory holds `manifest.bin`, `shards.bin` (k + m shards
//! back to back) and `plaintext.bin`; the key is [`FIXTURE_KEY`].

use std::fs;
use std::path::{Path, PathBuf};

use pangea::ces::{Ces, Codec, CompressionPolicy, Hint, Manifest, MasterKey, ShardParams};

const FIXTURE_KEY: [u8; 32] = [0x11; 32];
const FIXTURE_NONCE: [u8; 24] = [0x22; 24];

struct Fixture {
    name: &'static str,
    k: u16,
    m: u16,
    plaintext: fn() -> Vec<u8>,
    codec_is_zstd: bool,
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "text-4-2",
        k: 4,
        m: 2,
        plaintext: || b"Pangea fixture text: compress, encrypt, shard.\n".repeat(40),
        codec_is_zstd: true,
    },
    Fixture {
        name: "random-3-1",
        k: 3,
        m: 1,
        plaintext: || {
            let mut v = vec![0u8; 777];
            blake3::Hasher::new()
                .update(b"fixture")
                .finalize_xof()
                .fill(&mut v);
            v
        },
        codec_is_zstd: false,
    },
    Fixture {
        name: "empty-2-2",
        k: 2,
        m: 2,
        plaintext: Vec::new,
        codec_is_zstd: false,
    },
];

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ces-v1")
        .join(name)
}

/// The policy the fixtures were written with (pinned: the default may change
/// without changing the format).
fn fixture_policy() -> CompressionPolicy {
    CompressionPolicy {
        text: Some(6),
        binary: Some(3),
        image: Some(1),
        ..CompressionPolicy::default()
    }
}

fn ces() -> Ces {
    Ces::new(&MasterKey::from_bytes(FIXTURE_KEY), fixture_policy()).unwrap()
}

/// Whether to rewrite the fixtures: only for `PANGEA_BLESS=1`, and never
/// in CI (`CI` or `PANGEA_REQUIRE_ALL=1` set), where a bless would make the
/// check below compare the code with itself.
fn bless_requested(bless: Option<&str>, ci: bool) -> Result<bool, String> {
    match bless {
        None | Some("" | "0") => Ok(false),
        Some("1") if ci => Err("PANGEA_BLESS=1 in CI: refusing to rewrite the fixtures".into()),
        Some("1") => Ok(true),
        Some(other) => Err(format!(
            "PANGEA_BLESS={other:?}: only PANGEA_BLESS=1 rewrites the fixtures"
        )),
    }
}

#[test]
fn only_pangea_bless_1_outside_ci_rewrites_the_fixtures() {
    assert_eq!(bless_requested(None, false), Ok(false));
    assert_eq!(bless_requested(None, true), Ok(false));
    assert_eq!(bless_requested(Some("1"), false), Ok(true));
    assert!(bless_requested(Some("1"), true).is_err());
    assert_eq!(bless_requested(Some("0"), false), Ok(false));
    assert_eq!(bless_requested(Some(""), true), Ok(false));
    for v in ["true", "yes", "01", "2"] {
        assert!(bless_requested(Some(v), false).is_err(), "{v:?}");
    }
}

#[test]
fn committed_v1_fixtures_decode() {
    let c = ces();
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
        || std::env::var("PANGEA_REQUIRE_ALL").as_deref() == Ok("1");
    let bless = std::env::var("PANGEA_BLESS").ok();
    // Fails on an unclear PANGEA_BLESS (or one in CI) rather than guess.
    if bless_requested(bless.as_deref(), ci).unwrap_or_else(|e| panic!("{e}")) {
        eprintln!("PANGEA_BLESS=1: rewriting tests/fixtures/ces-v1 (review the diff)");
        for f in FIXTURES {
            let p = ShardParams::new(f.k, f.m).unwrap();
            let enc = c
                .encode_with_nonce(&(f.plaintext)(), p, &Hint::default(), FIXTURE_NONCE)
                .unwrap();
            let d = dir(f.name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("manifest.bin"), enc.manifest.encode()).unwrap();
            fs::write(d.join("plaintext.bin"), (f.plaintext)()).unwrap();
            fs::write(d.join("shards.bin"), enc.into_parts().1).unwrap();
        }
    }
    // Checked in every case, after a bless too (from the files, as a later
    // build reads them).
    for f in FIXTURES {
        let d = dir(f.name);
        let manifest = Manifest::decode(&fs::read(d.join("manifest.bin")).unwrap()).unwrap();
        let shards = fs::read(d.join("shards.bin")).unwrap();
        let plaintext = fs::read(d.join("plaintext.bin")).unwrap();
        assert_eq!(plaintext, (f.plaintext)(), "{}", f.name);
        assert_eq!(manifest.params, ShardParams::new(f.k, f.m).unwrap());
        assert_eq!(
            matches!(manifest.codec, Codec::Zstd { .. }),
            f.codec_is_zstd,
            "{}",
            f.name
        );
        let s = manifest.shard_len as usize;
        let mut view: Vec<Option<&[u8]>> = shards.chunks_exact(s).map(Some).collect();
        assert_eq!(view.len(), usize::from(f.k + f.m));
        assert_eq!(
            c.decode(&manifest, &view).unwrap().0,
            plaintext,
            "{}",
            f.name
        );
        // And with m shards missing.
        for slot in view.iter_mut().take(usize::from(f.m)) {
            *slot = None;
        }
        assert_eq!(
            c.decode(&manifest, &view).unwrap().0,
            plaintext,
            "{}",
            f.name
        );
    }
}

/// Encoding is deterministic given key and nonce. When this fails because
/// the compressor's output changed (a zstd upgrade), the fixtures above still
/// prove old data decodes; only bless them for a real format change.
#[test]
fn encoding_with_a_fixed_nonce_reproduces_the_fixtures() {
    let c = ces();
    for f in FIXTURES {
        let p = ShardParams::new(f.k, f.m).unwrap();
        let enc = c
            .encode_with_nonce(&(f.plaintext)(), p, &Hint::default(), FIXTURE_NONCE)
            .unwrap();
        let d = dir(f.name);
        assert_eq!(
            enc.manifest.encode(),
            fs::read(d.join("manifest.bin")).unwrap(),
            "{}",
            f.name
        );
    }
}
