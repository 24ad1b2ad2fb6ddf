//! `pangea fsck`: the offline check of a data dir, through the binary, on a
//! data dir written by the filesystem core (no FUSE needed).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use pangea::ces::{Ces, CompressionPolicy};
use pangea::fs::{Ctx, Fs, FsConfig, ROOT_INO};
use pangea::node::datadir::DataDir;
use pangea::store::{ChunkFiles, RocksKv};

fn fsck(dir: &Path, repair: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pangea"));
    cmd.arg("fsck").arg("--data-dir").arg(dir);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("pangea runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A data dir with two files of several chunk files each, closed cleanly.
fn populate(dir: &Path) {
    let dd = DataDir::open(dir).expect("data dir");
    let kv = RocksKv::open(&dd.index_dir()).expect("index");
    let chunks = ChunkFiles::open(&dd.chunks_dir()).expect("chunks");
    let ces = Ces::new(&dd.master, CompressionPolicy::default()).expect("ces");
    let cfg = FsConfig {
        chunk_size: 256 * 1024,
        ..FsConfig::default()
    };
    let fs = Fs::new(Arc::new(kv), Arc::new(chunks), ces, cfg, (0, 0)).expect("fs");
    for (name, seed) in [("a", 1u8), ("b", 2u8)] {
        let (inode, fh) = fs
            .create(&Ctx::ROOT, ROOT_INO, name.as_bytes(), 0o644)
            .expect("create");
        // Incompressible (xorshift), so that the chunks get files.
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
        let data: Vec<u8> = (0..1_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs.write(inode.ino, 0, &data).expect("write");
        fs.release(fh).expect("close");
    }
    fs.shutdown().expect("shutdown");
}

fn chunk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir.join("chunks")).expect("chunks dir") {
        let sub = sub.expect("entry").path();
        if sub.is_dir() {
            for f in std::fs::read_dir(&sub).expect("subdir") {
                out.push(f.expect("entry").path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fsck_reports_in_words_and_repair_removes_only_what_nothing_uses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    populate(&dir);
    let (code, text) = fsck(&dir, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no problems found"), "{text}");

    // A chunk file nothing names (as a crash could leave), and one shard
    // file of a chunk in use deleted.
    let files = chunk_files(&dir);
    assert!(files.len() >= 4, "{files:?}");
    let stray = dir.join("chunks/00").join(format!("{:064x}", 0xabcdefu64));
    std::fs::create_dir_all(dir.join("chunks/00")).expect("subdir");
    std::fs::write(&stray, b"not a chunk").expect("plant");
    std::fs::remove_file(&files[1]).expect("remove");
    let (code, text) = fsck(&dir, false);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains("is not used by any chunk (removable)"),
        "{text}"
    );
    assert!(text.contains("is lost"), "{text}");
    assert!(stray.exists(), "a check without --repair removed something");

    let (code, text) = fsck(&dir, true);
    assert_eq!(code, 4, "the lost chunk is still there: {text}");
    assert!(text.contains("removed 1 unreferenced items"), "{text}");
    assert!(!stray.exists());
    let left = chunk_files(&dir);
    assert_eq!(left.len(), files.len() - 1, "repair removed a chunk in use");

    // Locked: a running mount (here: this test holding the lock) is refused.
    let _lock = pangea::store::DataDirLock::acquire(&dir).expect("lock");
    let (code, text) = fsck(&dir, false);
    assert_ne!(code, 0);
    assert!(text.contains("in use"), "{text}");
}
