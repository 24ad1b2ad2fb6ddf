//! Tests of the filesystem core without FUSE (MemKv + chunk files in a temp dir).

use std::sync::Arc;

use crate::testutil::{corrupt_chunk_files, random};

use super::xattr::{XattrMode, XattrReply};
use super::*;
use crate::ces::{Ces, CompressionPolicy, MasterKey};
use crate::store::{ChunkFiles, MemKv};

struct T {
    fs: Fs,
    kv: Arc<MemKv>,
    dir: tempfile::TempDir,
}

fn cfg() -> FsConfig {
    FsConfig {
        chunk_size: 64 * 1024,
        inline_max: 8 * 1024,
        ..FsConfig::default()
    }
}

fn setup_with(cfg: FsConfig) -> T {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(MemKv::new());
    let fs = open(&kv, &dir, cfg);
    T { fs, kv, dir }
}

fn open(kv: &Arc<MemKv>, dir: &tempfile::TempDir, cfg: FsConfig) -> Fs {
    let chunks = ChunkFiles::open(&dir.path().join("chunks")).unwrap();
    let ces = Ces::new(
        &MasterKey::from_bytes([5; 32]),
        CompressionPolicy::default(),
    )
    .unwrap();
    Fs::new(kv.clone(), Arc::new(chunks), ces, cfg, (0, 0)).unwrap()
}

fn setup() -> T {
    setup_with(cfg())
}

const C: Ctx = Ctx {
    uid: 1000,
    gid: 1000,
    pid: 0,
};

/// Chunk files on disk once pending deletions have run (they wait for a WAL sync).
fn chunk_files(t: &T) -> usize {
    t.fs.sync_all().unwrap();
    let mut n = 0;
    ChunkFiles::open(&t.dir.path().join("chunks"))
        .unwrap()
        .visit(&mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
    n
}

fn names(fs: &Fs, dir: Ino) -> Vec<String> {
    let mut out = Vec::new();
    fs.readdir(dir, 0, &mut |e| {
        out.push(String::from_utf8_lossy(&e.name).into_owned());
        true
    })
    .unwrap();
    out
}

#[test]
fn write_read_round_trip_at_chunk_boundaries() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"f", 0o644).unwrap();
    assert_eq!((f.uid, f.gid, f.perm), (1000, 1000, 0o644));
    let data = random(3 * 64 * 1024 + 17, 1);
    // Unaligned pieces.
    let mut off = 0;
    for piece in data.chunks(10_001) {
        assert_eq!(t.fs.write(f.ino, off, piece).unwrap() as usize, piece.len());
        off += piece.len() as u64;
    }
    assert_eq!(t.fs.read(f.ino, 0, data.len() as u32 + 100).unwrap(), data);
    t.fs.flush(fh).unwrap();
    t.fs.release(fh).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().size, data.len() as u64);
    assert_eq!(t.fs.read(f.ino, 65_530, 20).unwrap(), data[65_530..65_550]);
    // Survives a restart of the core on the same index and chunk files.
    drop(t.fs);
    let fs = open(&t.kv, &t.dir, cfg());
    assert_eq!(fs.read(f.ino, 0, data.len() as u32).unwrap(), data);
}

#[test]
fn sparse_files_read_zeros_in_holes() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"s", 0o644).unwrap();
    t.fs.write(f.ino, 1_000_000, b"end").unwrap();
    t.fs.release(fh).unwrap();
    let a = t.fs.getattr(f.ino).unwrap();
    assert_eq!(a.size, 1_000_003);
    let r = t.fs.read(f.ino, 0, 1_000_003).unwrap();
    assert!(r[..1_000_000].iter().all(|&b| b == 0));
    assert_eq!(&r[1_000_000..], b"end");
}

#[test]
fn truncate_shrinks_then_extending_reads_zeros() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"t", 0o644).unwrap();
    t.fs.write(f.ino, 0, &random(200_000, 2)).unwrap();
    t.fs.flush(fh).unwrap();
    t.fs.setattr(
        &C,
        f.ino,
        &SetAttr {
            size: Some(70_000),
            ..Default::default()
        },
    )
    .unwrap();
    t.fs.setattr(
        &C,
        f.ino,
        &SetAttr {
            size: Some(150_000),
            ..Default::default()
        },
    )
    .unwrap();
    let r = t.fs.read(f.ino, 0, 200_000).unwrap();
    assert_eq!(r.len(), 150_000);
    assert_eq!(r[..70_000], random(200_000, 2)[..70_000]);
    assert!(r[70_000..].iter().all(|&b| b == 0));
    t.fs.release(fh).unwrap();
}

#[test]
fn overwrite_rewrites_only_touched_chunks_and_gc_frees_the_old() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"o", 0o644).unwrap();
    t.fs.write(f.ino, 0, &random(4 * 64 * 1024, 3)).unwrap();
    t.fs.flush(fh).unwrap();
    let before = t.fs.data_stats();
    assert_eq!(chunk_files(&t), 4);
    t.fs.write(f.ino, 70_000, b"patch").unwrap();
    t.fs.flush(fh).unwrap();
    let after = t.fs.data_stats();
    assert_eq!(
        after.chunks_encoded - before.chunks_encoded,
        1,
        "only the touched chunk is re-encoded"
    );
    assert_eq!(chunk_files(&t), 4, "the replaced chunk's file was deleted");
    t.fs.release(fh).unwrap();
    t.fs.unlink(ROOT_INO, b"o").unwrap();
    assert_eq!(chunk_files(&t), 0, "unlink frees every chunk file");
}

#[test]
fn identical_chunks_are_stored_once() {
    let t = setup();
    let data = random(2 * 64 * 1024, 4);
    for name in [&b"a"[..], b"b"] {
        let (f, fh) = t.fs.create(&C, ROOT_INO, name, 0o644).unwrap();
        t.fs.write(f.ino, 0, &data).unwrap();
        t.fs.release(fh).unwrap();
    }
    assert_eq!(chunk_files(&t), 2);
    assert_eq!(t.fs.data_stats().chunks_deduped, 2);
    t.fs.unlink(ROOT_INO, b"a").unwrap();
    assert_eq!(chunk_files(&t), 2, "still referenced by b");
    let b = t.fs.lookup(ROOT_INO, b"b").unwrap();
    assert_eq!(t.fs.read(b.ino, 0, data.len() as u32).unwrap(), data);
    t.fs.unlink(ROOT_INO, b"b").unwrap();
    assert_eq!(chunk_files(&t), 0);
}

#[test]
fn unlinked_open_file_stays_readable_until_release() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"u", 0o644).unwrap();
    let data = random(100_000, 5);
    t.fs.write(f.ino, 0, &data).unwrap();
    t.fs.flush(fh).unwrap();
    t.fs.unlink(ROOT_INO, b"u").unwrap();
    assert!(matches!(
        t.fs.lookup(ROOT_INO, b"u"),
        Err(FsError::NotFound)
    ));
    assert_eq!(t.fs.read(f.ino, 0, 100_000).unwrap(), data);
    assert_eq!(t.fs.getattr(f.ino).unwrap().nlink, 0);
    t.fs.release(fh).unwrap();
    assert!(matches!(t.fs.getattr(f.ino), Err(FsError::NotFound)));
    assert_eq!(chunk_files(&t), 0);
}

#[test]
fn opens_racing_last_releases_are_always_counted() {
    // An open that waited for the last release must count on a live entry,
    // not on the one that release removed: a file with an open handle is
    // open (so an unlink keeps it).
    let t = Arc::new(setup());
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"r", 0o644).unwrap();
    t.fs.release(fh).unwrap();
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    let fh = t.fs.open(f.ino, false).unwrap();
                    assert!(
                        t.fs.is_open(f.ino),
                        "worker {w} round {i}: open file not counted"
                    );
                    t.fs.write(f.ino, w * 8, &i.to_le_bytes()).unwrap();
                    t.fs.release(fh).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(!t.fs.is_open(f.ino));
    let want: Vec<u8> = (0..3).flat_map(|_| 299u64.to_le_bytes()).collect();
    assert_eq!(t.fs.read(f.ino, 0, 24).unwrap(), want);
    t.fs.unlink(ROOT_INO, b"r").unwrap();
    assert!(matches!(t.fs.getattr(f.ino), Err(FsError::NotFound)));
}

#[test]
fn inode_replaced_by_rename_lives_until_the_kernel_forgets_it() {
    // The kernel resolved "doc" (lookup), then a rename replaced it before
    // the open arrived: the open must still find the old inode.
    let t = setup();
    let (old, fh) = t.fs.create(&C, ROOT_INO, b"doc", 0o644).unwrap();
    t.fs.remember(old.ino);
    let data = random(100_000, 7);
    t.fs.write(old.ino, 0, &data).unwrap();
    t.fs.release(fh).unwrap();
    let (new, fh) = t.fs.create(&C, ROOT_INO, b"tmp", 0o644).unwrap();
    t.fs.release(fh).unwrap();
    t.fs.rename(ROOT_INO, b"tmp", ROOT_INO, b"doc", RenameFlags::default())
        .unwrap();
    assert_eq!(t.fs.lookup(ROOT_INO, b"doc").unwrap().ino, new.ino);
    let fh = t.fs.open(old.ino, false).unwrap();
    assert_eq!(t.fs.read(old.ino, 0, 100_000).unwrap(), data);
    t.fs.release(fh).unwrap();
    assert_eq!(t.fs.getattr(old.ino).unwrap().nlink, 0, "known: kept");
    t.fs.forget(old.ino, 1).unwrap();
    assert!(matches!(t.fs.getattr(old.ino), Err(FsError::NotFound)));
    assert_eq!(chunk_files(&t), 0);
}

#[test]
fn orphans_left_by_a_crash_are_deleted_at_the_next_open() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"u", 0o644).unwrap();
    t.fs.write(f.ino, 0, &random(100_000, 6)).unwrap();
    t.fs.flush(fh).unwrap();
    t.fs.unlink(ROOT_INO, b"u").unwrap();
    drop(t.fs); // "crash" with the file open
    let fs = open(&t.kv, &t.dir, cfg());
    assert!(matches!(fs.getattr(f.ino), Err(FsError::NotFound)));
    let mut n = 0;
    ChunkFiles::open(&t.dir.path().join("chunks"))
        .unwrap()
        .visit(&mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn directories_count_links_and_refuse_removal_when_not_empty() {
    let t = setup();
    let a = t.fs.mkdir(&C, ROOT_INO, b"a", 0o755).unwrap();
    let _b = t.fs.mkdir(&C, a.ino, b"b", 0o755).unwrap();
    assert_eq!(t.fs.getattr(a.ino).unwrap().nlink, 3);
    assert_eq!(t.fs.getattr(ROOT_INO).unwrap().nlink, 3);
    assert!(matches!(t.fs.rmdir(ROOT_INO, b"a"), Err(FsError::NotEmpty)));
    assert!(matches!(t.fs.unlink(ROOT_INO, b"a"), Err(FsError::IsDir)));
    t.fs.rmdir(a.ino, b"b").unwrap();
    assert_eq!(t.fs.getattr(a.ino).unwrap().nlink, 2);
    t.fs.rmdir(ROOT_INO, b"a").unwrap();
    assert_eq!(t.fs.getattr(ROOT_INO).unwrap().nlink, 2);
}

#[test]
fn hard_links_share_the_inode() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"x", 0o644).unwrap();
    t.fs.write(f.ino, 0, b"hello").unwrap();
    t.fs.release(fh).unwrap();
    let l = t.fs.link(f.ino, ROOT_INO, b"y").unwrap();
    assert_eq!((l.ino, l.nlink), (f.ino, 2));
    assert!(matches!(
        t.fs.link(ROOT_INO, ROOT_INO, b"z"),
        Err(FsError::Perm)
    ));
    t.fs.unlink(ROOT_INO, b"x").unwrap();
    assert_eq!(t.fs.read(f.ino, 0, 10).unwrap(), b"hello");
    assert_eq!(t.fs.getattr(f.ino).unwrap().nlink, 1);
}

#[test]
fn rename_replace_noreplace_exchange_and_across_parents() {
    let t = setup();
    let d1 = t.fs.mkdir(&C, ROOT_INO, b"d1", 0o755).unwrap();
    let d2 = t.fs.mkdir(&C, ROOT_INO, b"d2", 0o755).unwrap();
    let sub = t.fs.mkdir(&C, d1.ino, b"sub", 0o755).unwrap();
    let (a, fh) = t.fs.create(&C, d1.ino, b"a", 0o644).unwrap();
    t.fs.release(fh).unwrap();
    let (b, fh) = t.fs.create(&C, d2.ino, b"b", 0o644).unwrap();
    t.fs.release(fh).unwrap();
    // Directory across parents: nlinks move, "..", ancestors refused.
    assert!(matches!(
        t.fs.rename(ROOT_INO, b"d1", sub.ino, b"x", RenameFlags::default()),
        Err(FsError::Invalid)
    ));
    t.fs.rename(d1.ino, b"sub", d2.ino, b"sub2", RenameFlags::default())
        .unwrap();
    assert_eq!(t.fs.getattr(d1.ino).unwrap().nlink, 2);
    assert_eq!(t.fs.getattr(d2.ino).unwrap().nlink, 3);
    assert_eq!(t.fs.lookup(sub.ino, b"..").unwrap().ino, d2.ino);
    // Noreplace.
    let noreplace = RenameFlags {
        noreplace: true,
        exchange: false,
    };
    assert!(matches!(
        t.fs.rename(d1.ino, b"a", d2.ino, b"b", noreplace),
        Err(FsError::Exists)
    ));
    // Exchange.
    let exchange = RenameFlags {
        noreplace: false,
        exchange: true,
    };
    t.fs.rename(d1.ino, b"a", d2.ino, b"b", exchange).unwrap();
    assert_eq!(t.fs.lookup(d1.ino, b"a").unwrap().ino, b.ino);
    assert_eq!(t.fs.lookup(d2.ino, b"b").unwrap().ino, a.ino);
    // Replace.
    t.fs.rename(d1.ino, b"a", d2.ino, b"b", RenameFlags::default())
        .unwrap();
    assert_eq!(t.fs.lookup(d2.ino, b"b").unwrap().ino, b.ino);
    assert!(matches!(t.fs.getattr(a.ino), Err(FsError::NotFound)));
    assert_eq!(names(&t.fs, d1.ino), vec![".", ".."]);
    // Dir over non-empty dir, file over dir, dir over file.
    let (c, fh) = t.fs.create(&C, d2.ino, b"c", 0o644).unwrap();
    t.fs.release(fh).unwrap();
    assert!(matches!(
        t.fs.rename(d2.ino, b"c", d2.ino, b"sub2", RenameFlags::default()),
        Err(FsError::IsDir)
    ));
    assert!(matches!(
        t.fs.rename(d2.ino, b"sub2", d2.ino, b"c", RenameFlags::default()),
        Err(FsError::NotDir)
    ));
    assert!(matches!(
        t.fs.rename(ROOT_INO, b"d1", ROOT_INO, b"d2", RenameFlags::default()),
        Err(FsError::NotEmpty)
    ));
    let _ = c;
}

#[test]
fn readdir_offsets_are_stable_while_entries_come_and_go() {
    let t = setup();
    for i in 0..500 {
        let (f, fh) =
            t.fs.create(&C, ROOT_INO, format!("f{i:04}").as_bytes(), 0o644)
                .unwrap();
        t.fs.release(fh).unwrap();
        let _ = f;
    }
    // Read the first 100, then delete some seen and some unseen entries, and add new ones.
    let mut seen = Vec::new();
    let mut last = 0;
    t.fs.readdir(ROOT_INO, 0, &mut |e| {
        last = e.offset;
        seen.push(e.name.clone());
        seen.len() < 102
    })
    .unwrap();
    t.fs.unlink(ROOT_INO, b"f0010").unwrap();
    t.fs.unlink(ROOT_INO, b"f0300").unwrap();
    let (_, fh) = t.fs.create(&C, ROOT_INO, b"new", 0o644).unwrap();
    t.fs.release(fh).unwrap();
    t.fs.readdir(ROOT_INO, last, &mut |e| {
        seen.push(e.name.clone());
        true
    })
    .unwrap();
    let names: std::collections::HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(names.len(), seen.len(), "no entry listed twice");
    assert!(!names.contains(b"f0300".as_slice()));
    assert!(names.contains(b"f0499".as_slice()));
    assert!(names.contains(b"new".as_slice()));
}

#[test]
fn names_longer_than_255_bytes_are_refused() {
    let t = setup();
    let long = vec![b'a'; 256];
    assert!(matches!(
        t.fs.create(&C, ROOT_INO, &long, 0o644),
        Err(FsError::NameTooLong)
    ));
    assert!(matches!(
        t.fs.lookup(ROOT_INO, &long),
        Err(FsError::NameTooLong)
    ));
    assert!(t.fs.create(&C, ROOT_INO, &long[..255], 0o644).is_ok());
}

#[test]
fn setgid_directories_pass_their_group_on() {
    let t = setup();
    let d = t.fs.mkdir(&Ctx::ROOT, ROOT_INO, b"g", 0o2775).unwrap();
    t.fs.setattr(
        &Ctx::ROOT,
        d.ino,
        &SetAttr {
            gid: Some(50),
            ..Default::default()
        },
    )
    .unwrap();
    let sub = t.fs.mkdir(&C, d.ino, b"s", 0o755).unwrap();
    assert_eq!(sub.gid, 50);
    assert_eq!(sub.perm & 0o2000, 0o2000);
    let (f, _) = t.fs.create(&C, d.ino, b"f", 0o644).unwrap();
    assert_eq!(f.gid, 50);
}

#[test]
fn chown_clears_setuid() {
    let t = setup();
    let (f, fh) = t.fs.create(&Ctx::ROOT, ROOT_INO, b"s", 0o6755).unwrap();
    t.fs.release(fh).unwrap();
    let a =
        t.fs.setattr(
            &Ctx::ROOT,
            f.ino,
            &SetAttr {
                uid: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.perm, 0o0755);
}

#[test]
fn xattrs_follow_linux_limits() {
    let t = setup();
    let (f, _) = t.fs.create(&C, ROOT_INO, b"x", 0o644).unwrap();
    t.fs.setxattr(&C, f.ino, b"user.a", b"1", XattrMode::Any)
        .unwrap();
    assert!(matches!(
        t.fs.setxattr(&C, f.ino, b"user.a", b"2", XattrMode::Create),
        Err(FsError::Exists)
    ));
    assert!(matches!(
        t.fs.setxattr(&C, f.ino, b"user.b", b"2", XattrMode::Replace),
        Err(FsError::NoData)
    ));
    assert!(matches!(
        t.fs.setxattr(&C, f.ino, b"user.big", &vec![0; 65_537], XattrMode::Any),
        Err(FsError::TooBig)
    ));
    assert!(matches!(
        t.fs.setxattr(&C, f.ino, b"system.posix_acl_access", b"", XattrMode::Any),
        Err(FsError::NotSupported)
    ));
    assert_eq!(
        t.fs.getxattr(&C, f.ino, b"user.a", 0).unwrap(),
        XattrReply::Size(1)
    );
    assert_eq!(
        t.fs.getxattr(&C, f.ino, b"user.a", 10).unwrap(),
        XattrReply::Data(b"1".to_vec())
    );
    t.fs.setxattr(&C, f.ino, b"user.long", &[7; 100], XattrMode::Any)
        .unwrap();
    assert!(matches!(
        t.fs.getxattr(&C, f.ino, b"user.long", 10),
        Err(FsError::Range)
    ));
    assert_eq!(
        t.fs.listxattr(f.ino, 100).unwrap(),
        XattrReply::Data(b"user.a\0user.long\0".to_vec())
    );
    t.fs.removexattr(&C, f.ino, b"user.a").unwrap();
    assert!(matches!(
        t.fs.getxattr(&C, f.ino, b"user.a", 10),
        Err(FsError::NoData)
    ));
}

/// Creates `name` in the root with `data`, and closes it.
fn write_closed(fs: &Fs, name: &[u8], data: &[u8]) -> Inode {
    let (f, fh) = fs.create(&C, ROOT_INO, name, 0o644).unwrap();
    fs.write(f.ino, 0, data).unwrap();
    fs.release(fh).unwrap();
    f
}

#[test]
fn damaged_chunks_are_rebuilt_and_rewritten() {
    let t = setup();
    let data = random(64 * 1024, 7);
    let f = write_closed(&t.fs, b"r", &data);
    corrupt_chunk_files(t.kv.as_ref(), t.dir.path(), 2);
    // A fresh core: nothing cached.
    drop(t.fs);
    let fs = open(&t.kv, &t.dir, cfg());
    assert_eq!(fs.read(f.ino, 0, data.len() as u32).unwrap(), data);
    assert_eq!(fs.data_stats().chunks_repaired, 1);
    drop(fs);
    // The rewrite healed it: damage 2 more shards and it still reads.
    corrupt_chunk_files(t.kv.as_ref(), t.dir.path(), 2);
    let fs = open(&t.kv, &t.dir, cfg());
    assert_eq!(fs.read(f.ino, 0, data.len() as u32).unwrap(), data);
}

/// Clean local reads trust the AEAD's tag and hash no shard: every kind of
/// damage still reads right. A flipped byte in a data shard or in the tag
/// fails the tag, and the read falls back to the full decode, which names
/// the bad shard and repairs it; a parity shard's damage (flipped, or the
/// file cut short in it) is not on the read path at all (the scrubber's
/// hash finds it); a file cut into its data shards, with nothing to
/// rebuild from, is EIO, never wrong bytes.
#[test]
fn clean_reads_trust_the_tag_and_every_damage_reads_right_or_fails() {
    for case in ["data", "tag", "parity", "cut in parity", "cut in data"] {
        let t = setup();
        let data = random(64 * 1024, 23);
        let f = write_closed(&t.fs, b"r", &data);
        let manifests = crate::testutil::chunk_manifests(t.kv.as_ref());
        assert_eq!(manifests.len(), 1);
        let (id, m) = manifests.iter().next().unwrap();
        let files = ChunkFiles::open(&t.dir.path().join("chunks")).unwrap();
        let mut bytes = files.read_all(id).unwrap().unwrap();
        let s = m.shard_len as usize;
        let k = usize::from(m.params.k());
        let needed = m.stored_len as usize + 16;
        assert!(m.params.m() > 0 && needed <= k * s);
        match case {
            "data" => bytes[needed / 3] ^= 1,
            "tag" => bytes[needed - 1] ^= 1,
            "parity" => bytes[k * s + s / 2] ^= 1,
            "cut in parity" => bytes.truncate(k * s + s / 2),
            _ => bytes.truncate(k * s - 1),
        }
        files.write(id, &bytes, false).unwrap();
        drop(t.fs);
        let fs = open(&t.kv, &t.dir, cfg());
        let got = fs.read(f.ino, 0, data.len() as u32);
        match case {
            "cut in data" => {
                assert_eq!(got.map(|_| ()).map_err(|e| e.errno()), Err(nix::libc::EIO))
            }
            _ => assert_eq!(got.unwrap(), data, "{case}"),
        }
        let repaired = fs.data_stats().chunks_repaired;
        let want = u64::from(matches!(case, "data" | "tag"));
        assert_eq!(repaired, want, "{case}");
    }
}

/// A repair rebuilds only the damaged shards, under the same manifest and
/// nonce, without re-encoding: the record, the chunk file's name and every
/// good shard stay byte for byte what they were (peers' copies of them
/// stay valid), and the bad shards come back as the encoding made them.
#[test]
fn a_repair_rebuilds_only_the_bad_shards_under_the_same_manifest() {
    let t = setup();
    let data = random(64 * 1024, 17);
    let f = write_closed(&t.fs, b"r", &data);
    let records = |kv: &MemKv| {
        let mut out = Vec::new();
        crate::store::Kv::scan(kv, crate::store::Cf::Chunk, &[], &[], &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        out
    };
    let before = records(&t.kv);
    assert_eq!(before.len(), 1);
    let rec = crate::chunks::ChunkRecord::decode(&before[0].1).unwrap();
    let manifest = crate::ces::Manifest::decode(&rec.manifest).unwrap();
    let files = ChunkFiles::open(&t.dir.path().join("chunks")).unwrap();
    let good = files.read_all(rec.file().as_bytes()).unwrap().unwrap();
    corrupt_chunk_files(t.kv.as_ref(), t.dir.path(), 2);
    drop(t.fs);
    let fs = open(&t.kv, &t.dir, cfg());
    assert_eq!(fs.read(f.ino, 0, data.len() as u32).unwrap(), data);
    assert_eq!(fs.data_stats().chunks_repaired, 1);
    drop(fs);
    assert_eq!(
        records(&t.kv),
        before,
        "the record (manifest, nonce) changed"
    );
    assert_eq!(
        manifest.nonce,
        crate::ces::Manifest::decode(&rec.manifest).unwrap().nonce
    );
    let after = files
        .read_all(rec.file().as_bytes())
        .unwrap()
        .expect("same file name");
    assert_eq!(after, good, "the chunk file is not what the encoding made");
    for i in 0..manifest.params.total() {
        let s = manifest.shard_len as usize;
        crate::ces::verify_shard(&manifest, i, &after[i * s..(i + 1) * s]).unwrap();
    }
}

/// Reads open file `ino` front to back in `step`-byte requests, as the
/// kernel does for a sequential reader.
fn read_sequentially(fs: &Fs, ino: Ino, len: usize, step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        let got = fs.read(ino, out.len() as u64, step as u32).unwrap();
        assert!(!got.is_empty(), "early end at {}", out.len());
        out.extend_from_slice(&got);
    }
    out
}

#[test]
fn sequential_readers_find_the_next_chunks_decoded_ahead() {
    let t = setup();
    let cs = 64 * 1024;
    let data = random(12 * cs, 21);
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"seq", 0o644).unwrap();
    t.fs.write(f.ino, 0, &data).unwrap();
    t.fs.release(fh).unwrap();
    drop(t.fs);
    let fs = open(&t.kv, &t.dir, cfg());
    let fh = fs.open(f.ino, false).unwrap();
    // Two reads within chunk 0, the second sequential: chunks 1..=4 are
    // fetched and decoded ahead (read_ahead = 4).
    assert_eq!(fs.read(f.ino, 0, 4096).unwrap(), data[..4096]);
    assert_eq!(fs.read(f.ino, 4096, 4096).unwrap(), data[4096..8192]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fs.data_stats().chunks_decoded < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing decoded ahead"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let misses = fs.cache_stats().misses;
    assert_eq!(
        fs.read(f.ino, cs as u64, (4 * cs) as u32).unwrap(),
        data[cs..5 * cs]
    );
    assert_eq!(fs.cache_stats().misses, misses, "chunks 1..=4 were ready");
    // The whole file, front to back, in kernel-sized requests.
    fs.drop_cache();
    assert_eq!(read_sequentially(&fs, f.ino, data.len(), 16 * 1024), data);
    fs.release(fh).unwrap();
    drop(fs);

    // Damaged data shards: what is fetched ahead fails to decode and is not
    // cached; the reader's own path rebuilds every chunk.
    corrupt_chunk_files(t.kv.as_ref(), t.dir.path(), 1);
    let fs = open(&t.kv, &t.dir, cfg());
    let fh = fs.open(f.ino, false).unwrap();
    assert_eq!(read_sequentially(&fs, f.ino, data.len(), 16 * 1024), data);
    assert_eq!(fs.data_stats().chunks_repaired, 12);
    fs.release(fh).unwrap();
}

#[test]
fn too_much_damage_is_an_io_error_never_wrong_bytes() {
    let t = setup();
    let data = random(64 * 1024, 8);
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"l", 0o644).unwrap();
    t.fs.write(f.ino, 0, &data).unwrap();
    t.fs.release(fh).unwrap();
    corrupt_chunk_files(t.kv.as_ref(), t.dir.path(), 3);
    drop(t.fs);
    let fs = open(&t.kv, &t.dir, cfg());
    let e = fs.read(f.ino, 0, 10).unwrap_err();
    assert_eq!(e.errno(), nix::libc::EIO);
    assert_eq!(fs.data_stats().chunks_lost, 1);
}

#[test]
fn small_files_live_in_the_index() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"small", 0o644).unwrap();
    t.fs.write(f.ino, 0, b"tiny file").unwrap();
    t.fs.release(fh).unwrap();
    assert_eq!(chunk_files(&t), 0);
    assert_eq!(t.kv.len(crate::store::Cf::Inline), 1);
    assert_eq!(t.fs.read(f.ino, 0, 100).unwrap(), b"tiny file");
    t.fs.unlink(ROOT_INO, b"small").unwrap();
    assert_eq!(t.kv.len(crate::store::Cf::Inline), 0);
}

#[test]
fn symlinks_and_special_files() {
    let t = setup();
    let l = t.fs.symlink(&C, ROOT_INO, b"l", b"/some/where").unwrap();
    assert_eq!(l.size, 11);
    assert_eq!(t.fs.readlink(l.ino).unwrap(), b"/some/where");
    let p =
        t.fs.mknod(&C, ROOT_INO, b"p", nix::libc::S_IFIFO | 0o644, 0)
            .unwrap();
    assert_eq!(p.kind, FileKind::Fifo);
    let d =
        t.fs.mknod(
            &Ctx::ROOT,
            ROOT_INO,
            b"c",
            nix::libc::S_IFCHR | 0o600,
            0x0501,
        )
        .unwrap();
    assert_eq!((d.kind, d.rdev), (FileKind::CharDev, 0x0501));
}

// --- Divergences from POSIX/Linux, as documented in docs/SEMANTICS.md ---

#[test]
fn semantics_read_does_not_update_atime() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"a", 0o644).unwrap();
    t.fs.write(f.ino, 0, b"data").unwrap();
    t.fs.release(fh).unwrap();
    let before = t.fs.getattr(f.ino).unwrap().atime;
    std::thread::sleep(std::time::Duration::from_millis(5));
    t.fs.read(f.ino, 0, 4).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().atime, before);
}

#[test]
fn semantics_blocks_follow_the_size_even_for_sparse_files() {
    let t = setup();
    // Numbers worked out by hand, not by the formula under test: one byte
    // written at 10 MiB makes a 10,485,761-byte file, 20,480 full 512-byte
    // blocks and one partial block (ext4 would report 8 blocks: one 4 KiB
    // block allocated).
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"s", 0o644).unwrap();
    t.fs.write(f.ino, 10 << 20, b"x").unwrap();
    t.fs.release(fh).unwrap();
    let a = t.fs.getattr(f.ino).unwrap();
    assert_eq!(a.size, 10_485_761);
    assert_eq!(a.blocks(), 20_481);
    // Around the block boundary, and small files (inline in the index).
    for (len, blocks) in [
        (0usize, 0u64),
        (1, 1),
        (511, 1),
        (512, 1),
        (513, 2),
        (4096, 8),
    ] {
        let name = format!("f{len}");
        let (f, fh) = t.fs.create(&C, ROOT_INO, name.as_bytes(), 0o644).unwrap();
        t.fs.write(f.ino, 0, &vec![7u8; len]).unwrap();
        t.fs.release(fh).unwrap();
        let a = t.fs.getattr(f.ino).unwrap();
        assert_eq!(
            (a.size, a.blocks()),
            (len as u64, blocks),
            "{len}-byte file"
        );
    }
    // A symlink counts its target's length; a directory 8 blocks.
    let l = t.fs.symlink(&C, ROOT_INO, b"l", &[b'x'; 600]).unwrap();
    assert_eq!(t.fs.getattr(l.ino).unwrap().blocks(), 2);
    let d = t.fs.mkdir(&C, ROOT_INO, b"d", 0o755).unwrap();
    assert_eq!(t.fs.getattr(d.ino).unwrap().blocks(), 8);
}

#[test]
fn semantics_hard_links_stop_at_65000_with_emlink() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"f", 0o644).unwrap();
    t.fs.release(fh).unwrap();
    for i in 1..65_000u32 {
        t.fs.link(f.ino, ROOT_INO, format!("l{i}").as_bytes())
            .unwrap();
    }
    assert_eq!(t.fs.getattr(f.ino).unwrap().nlink, 65_000);
    let e = t.fs.link(f.ino, ROOT_INO, b"one-more").unwrap_err();
    assert_eq!(e.errno(), nix::libc::EMLINK);
    assert!(matches!(
        t.fs.lookup(ROOT_INO, b"one-more"),
        Err(FsError::NotFound)
    ));
    // One fewer, and a link can be made again.
    t.fs.unlink(ROOT_INO, b"l1").unwrap();
    t.fs.link(f.ino, ROOT_INO, b"one-more").unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().nlink, 65_000);
}

#[test]
fn semantics_directories_have_size_0() {
    let t = setup();
    let d = t.fs.mkdir(&C, ROOT_INO, b"d", 0o755).unwrap();
    assert_eq!(d.size, 0);
    for i in 0..100 {
        let (_, fh) =
            t.fs.create(&C, d.ino, format!("file {i}").as_bytes(), 0o644)
                .unwrap();
        t.fs.release(fh).unwrap();
    }
    t.fs.mkdir(&C, d.ino, b"sub", 0o755).unwrap();
    assert_eq!(t.fs.getattr(d.ino).unwrap().size, 0);
    assert_eq!(t.fs.getattr(ROOT_INO).unwrap().size, 0);
}

/// What the data dir holds of a file's bytes: no plaintext in chunk files
/// or in the index (inline small files are ciphertext too), and write
/// buffers spilled to staging are in anonymous files (no name in the
/// staging dir).
#[test]
fn security_chunk_files_and_the_index_hold_no_plaintext_and_staging_files_have_no_name() {
    let staging = tempfile::tempdir().unwrap();
    let t = setup_with(FsConfig {
        chunk_size: 64 * 1024,
        inline_max: 8 * 1024,
        dirty_limit: 100 * 1024,
        staging_dir: Some(staging.path().to_path_buf()),
        ..FsConfig::default()
    });
    // Incompressible: stored uncompressed, so only encryption can hide it.
    let big = random(10 * 64 * 1024, 77);
    let small = random(3000, 78); // inline, in the index
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"big", 0o644).unwrap();
    // Half of every chunk, then the other halves: no chunk fills (and goes
    // to the encoder) before the buffers pass the dirty limit and spill.
    for half in [0, 1] {
        for c in 0..10 {
            let at = c * 64 * 1024 + half * 32 * 1024;
            t.fs.write(f.ino, at as u64, &big[at..at + 32 * 1024])
                .unwrap();
        }
    }
    assert!(t.fs.data_stats().slots_spilled > 0, "nothing was spilled");
    let names = std::fs::read_dir(staging.path()).unwrap().count();
    assert_eq!(names, 0, "a staging file has a name");
    t.fs.release(fh).unwrap();
    let (g, gh) = t.fs.create(&C, ROOT_INO, b"small", 0o644).unwrap();
    t.fs.write(g.ino, 0, &small).unwrap();
    t.fs.release(gh).unwrap();
    assert_eq!(t.kv.len(crate::store::Cf::Inline), 1);
    assert_eq!(t.fs.read(f.ino, 0, big.len() as u32).unwrap(), big);

    // Any 32-byte window of either plaintext, looked for everywhere.
    let windows: std::collections::HashSet<&[u8]> = big
        .windows(32)
        .chain(small.windows(32))
        .step_by(7)
        .collect();
    let holds_plaintext = |bytes: &[u8]| bytes.windows(32).any(|w| windows.contains(w));
    // The search finds what it looks for, at any offset.
    assert!(holds_plaintext(&big[1001..1100]) && holds_plaintext(&small[5..60]));
    let mut files = 0;
    let chunks = ChunkFiles::open(&t.dir.path().join("chunks")).unwrap();
    chunks
        .visit(&mut |id, _| {
            let bytes = chunks.read_all(id).unwrap().unwrap();
            assert!(!holds_plaintext(&bytes), "plaintext in a chunk file");
            files += 1;
            true
        })
        .unwrap();
    assert_eq!(files, 10);
    for cf in crate::store::Cf::ALL {
        crate::store::Kv::scan(t.kv.as_ref(), cf, b"", b"", &mut |k, v| {
            assert!(
                !holds_plaintext(k) && !holds_plaintext(v),
                "plaintext in {cf:?}"
            );
            true
        })
        .unwrap();
    }
}

#[test]
fn semantics_only_basic_fallocate_modes_are_supported() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"f", 0o644).unwrap();
    t.fs.write(f.ino, 0, &[1; 8192]).unwrap();
    let e =
        t.fs.fallocate(f.ino, 0, 4096, nix::libc::FALLOC_FL_COLLAPSE_RANGE)
            .unwrap_err();
    assert_eq!(e.errno(), nix::libc::EOPNOTSUPP);
    t.fs.fallocate(
        f.ino,
        100,
        200,
        nix::libc::FALLOC_FL_PUNCH_HOLE | nix::libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    let r = t.fs.read(f.ino, 0, 8192).unwrap();
    assert!(r[100..300].iter().all(|&b| b == 0) && r[99] == 1 && r[300] == 1);
    t.fs.release(fh).unwrap();
}

#[test]
fn semantics_user_xattrs_only_on_files_and_directories() {
    let t = setup();
    let l = t.fs.symlink(&C, ROOT_INO, b"l", b"target").unwrap();
    let e =
        t.fs.setxattr(&C, l.ino, b"user.x", b"1", XattrMode::Any)
            .unwrap_err();
    assert_eq!(e.errno(), nix::libc::EPERM);
}

#[test]
fn full_chunks_encode_in_the_background_and_stay_readable_meanwhile() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"seq", 0o644).unwrap();
    let data = random(10 * 64 * 1024 + 5, 9);
    for (i, piece) in data.chunks(16 * 1024).enumerate() {
        t.fs.write(f.ino, (i * 16 * 1024) as u64, piece).unwrap();
        // Read back what was just written while earlier chunks are being encoded.
        let back = t.fs.read(f.ino, 0, ((i + 1) * 16 * 1024) as u32).unwrap();
        assert_eq!(back, data[..back.len()]);
    }
    t.fs.flush(fh).unwrap();
    assert_eq!(t.fs.data_stats().chunks_encoded, 11);
    t.fs.release(fh).unwrap();
    assert_eq!(t.fs.read(f.ino, 0, data.len() as u32).unwrap(), data);
}

#[test]
fn writers_and_namespace_changes_on_one_file_do_not_deadlock() {
    // write/flush take the file's lock, then `ns`; chmod, link and unlink
    // take `ns` and look at the open file's pending attributes: those must
    // not need the file's lock.
    let t = Arc::new(setup());
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"w", 0o644).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer = {
        let t = t.clone();
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            let data = random(64 * 1024, 11);
            for i in 0..200u64 {
                t.fs.write(f.ino, (i % 8) * 64 * 1024, &data).unwrap();
                if i % 10 == 0 {
                    t.fs.flush(fh).unwrap();
                }
            }
            done_tx.send(()).unwrap();
        })
    };
    let namer = {
        let t = t.clone();
        std::thread::spawn(move || {
            for i in 0..200u32 {
                t.fs.setattr(
                    &C,
                    f.ino,
                    &SetAttr {
                        mode: Some(0o600 + (i % 2) * 0o44),
                        ..Default::default()
                    },
                )
                .unwrap();
                t.fs.link(f.ino, ROOT_INO, b"w2").unwrap();
                t.fs.getattr(f.ino).unwrap();
                t.fs.unlink(ROOT_INO, b"w2").unwrap();
            }
            done_tx.send(()).unwrap();
        })
    };
    for _ in 0..2 {
        done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("deadlock: a thread did not finish in 60 s");
    }
    writer.join().unwrap();
    namer.join().unwrap();
    t.fs.release(fh).unwrap();
}

/// Waits until the encoder pool has stored `n` chunks in all, then a little
/// longer so the job's result has reached the file's channel.
fn wait_encoded(t: &T, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t.fs.data_stats().chunks_encoded < n {
        assert!(
            std::time::Instant::now() < deadline,
            "encoder job did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
}

#[test]
fn a_write_after_a_background_commit_keeps_the_committed_size() {
    // fsx (multi-chunk file): a write filling a slot up to its end extends
    // the file; the slot is committed in the background, which stores the
    // size and clears it from the overlay. The next write must start from
    // that stored size, not from the inode it loaded before the commit.
    let t = setup();
    let cs = 64 * 1024u64;
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"f", 0o644).unwrap();
    t.fs.write(f.ino, 0, b"head").unwrap();
    t.fs.flush(fh).unwrap();
    let encoded = t.fs.data_stats().chunks_encoded;
    // Ends exactly at the end of slot 2: slot 2 is full and goes to the pool.
    t.fs.write(f.ino, 3 * cs - 10, &[7; 10]).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().size, 3 * cs);
    wait_encoded(&t, encoded + 1);
    t.fs.write(f.ino, 0, b"HEAD").unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().size, 3 * cs);
    t.fs.release(fh).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().size, 3 * cs);
    let r = t.fs.read(f.ino, 0, 3 * cs as u32).unwrap();
    assert_eq!(&r[..4], b"HEAD");
    assert_eq!(&r[3 * cs as usize - 10..], &[7; 10]);
}

/// Random writes, truncates, reads and flushes on one file agree with a
/// plain byte vector, with buffers small enough to spill to the staging file
/// and chunks small enough to cross many slots.
#[test]
fn random_ops_with_spilling_match_a_byte_vector_model() {
    // Seeds 4 and 5 start with chunks above the small-synced size, so their
    // first fsync re-cuts the file into smaller chunks.
    for seed in 0..6u64 {
        let staging = tempfile::tempdir().unwrap();
        let big = seed >= 4;
        let t = setup_with(FsConfig {
            chunk_size: if big { 512 * 1024 } else { 16 * 1024 },
            inline_max: 4 * 1024,
            dirty_limit: if big { 300 * 1024 } else { 40 * 1024 },
            staging_dir: Some(staging.path().to_path_buf()),
            ..FsConfig::default()
        });
        let (f, fh) = t.fs.create(&C, ROOT_INO, b"m", 0o644).unwrap();
        let mut model: Vec<u8> = Vec::new();
        let mut rng = blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof();
        let mut next = |n: u64| {
            let mut b = [0u8; 8];
            rng.fill(&mut b);
            u64::from_le_bytes(b) % n
        };
        for step in 0..400u64 {
            match next(11) {
                0..=5 => {
                    let off = next(200 * 1024);
                    let big = next(4) == 0;
                    let len = 1 + next(if big { 40 * 1024 } else { 3000 }) as usize;
                    let data = random(len, seed * 1000 + step);
                    t.fs.write(f.ino, off, &data).unwrap();
                    let end = off as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].copy_from_slice(&data);
                }
                6 => {
                    let size = next(220 * 1024);
                    t.fs.setattr(
                        &C,
                        f.ino,
                        &SetAttr {
                            size: Some(size),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                    model.resize(size as usize, 0);
                }
                7 => t.fs.flush(fh).unwrap(),
                8 => t.fs.fsync(f.ino).unwrap(),
                _ => {
                    let off = next(230 * 1024);
                    let len = 1 + next(50 * 1024) as u32;
                    let got = t.fs.read(f.ino, off, len).unwrap();
                    let lo = (off as usize).min(model.len());
                    let hi = (off as usize + len as usize).min(model.len());
                    assert_eq!(
                        got,
                        model[lo..hi],
                        "seed {seed} step {step}: read {off}+{len}"
                    );
                }
            }
            assert_eq!(
                t.fs.getattr(f.ino).unwrap().size,
                model.len() as u64,
                "seed {seed} step {step}"
            );
        }
        t.fs.release(fh).unwrap();
        assert!(
            big || t.fs.data_stats().slots_spilled > 0,
            "seed {seed}: nothing was spilled"
        );
        if big {
            assert_eq!(
                t.fs.getattr(f.ino).unwrap().chunk_size,
                super::SYNCED_CHUNK_SIZE,
                "seed {seed}: not re-cut"
            );
        }
        assert_eq!(
            t.fs.read(f.ino, 0, model.len() as u32 + 1).unwrap(),
            model,
            "seed {seed} after close"
        );
    }
}

#[test]
fn a_file_fsynced_while_small_gets_small_chunks_and_keeps_its_bytes() {
    let t = setup_with(FsConfig {
        chunk_size: 4 << 20,
        ..FsConfig::default()
    });
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"db", 0o644).unwrap();
    let data = random(700_000, 21);
    t.fs.write(f.ino, 0, &data).unwrap();
    t.fs.flush(fh).unwrap();
    t.fs.fsync(f.ino).unwrap();
    assert_eq!(
        t.fs.getattr(f.ino).unwrap().chunk_size,
        super::SYNCED_CHUNK_SIZE
    );
    assert_eq!(t.fs.read(f.ino, 0, 800_000).unwrap(), data);
    // Its chunks live in the index: a commit's only fsync is the WAL's.
    assert_eq!(chunk_files(&t), 0);
    // A commit now rewrites one small chunk, not the whole file.
    let before = t.fs.data_stats().chunks_encoded;
    t.fs.write(f.ino, 600_000, b"commit").unwrap();
    t.fs.fsync(f.ino).unwrap();
    assert_eq!(t.fs.data_stats().chunks_encoded - before, 1);
    t.fs.release(fh).unwrap();
    let mut expect = data.clone();
    expect[600_000..600_006].copy_from_slice(b"commit");
    assert_eq!(t.fs.read(f.ino, 0, 800_000).unwrap(), expect);
}

#[test]
fn flushed_bytes_are_counted() {
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"c", 0o644).unwrap();
    t.fs.write(f.ino, 0, &random(100_000, 31)).unwrap();
    t.fs.release(fh).unwrap();
    assert_eq!(t.fs.data_stats().bytes_flushed, 100_000);
}

#[test]
fn writes_and_truncates_without_fsetid_drop_setuid_setgid_and_capabilities() {
    let t = setup();
    let user = C; // uid 1000, no CAP_FSETID
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"s", 0o644).unwrap();
    let set_mode = |mode: u32| {
        t.fs.setattr(
            &C,
            f.ino,
            &SetAttr {
                mode: Some(mode),
                ..Default::default()
            },
        )
        .unwrap();
    };
    let cap = b"security.capability";
    // What the FUSE adapter calls before a write flagged KILL_SUIDGID.
    set_mode(0o6755);
    t.fs.setxattr(&C, f.ino, cap, b"caps", XattrMode::Any)
        .unwrap();
    t.fs.kill_privs(f.ino).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().perm, 0o755);
    assert!(matches!(
        t.fs.getxattr(&C, f.ino, cap, 0),
        Err(FsError::NoData)
    ));
    // setgid stays on a file that is not group-executable (mandatory locking).
    set_mode(0o6745);
    t.fs.kill_privs(f.ino).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().perm, 0o2745);
    // A truncate by a user drops them; one by root does not.
    set_mode(0o6755);
    let trunc = SetAttr {
        size: Some(3),
        ..Default::default()
    };
    t.fs.setattr(&Ctx::ROOT, f.ino, &trunc).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().perm, 0o6755);
    t.fs.setxattr(&C, f.ino, cap, b"caps", XattrMode::Any)
        .unwrap();
    t.fs.setattr(&user, f.ino, &trunc).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().perm, 0o755);
    assert!(matches!(
        t.fs.getxattr(&C, f.ino, cap, 0),
        Err(FsError::NoData)
    ));
    // Nothing to clear: nothing written, ctime unchanged.
    let before = t.fs.getattr(f.ino).unwrap().ctime;
    t.fs.kill_privs(f.ino).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().ctime, before);
    t.fs.release(fh).unwrap();
}

#[test]
fn close_leaves_encoding_to_the_release_that_follows_it() {
    // close(2) does not wait for CES: the kernel sends the release after
    // close(2) has returned, and that is where the buffers are stored (on a
    // disk with room; a low disk encodes at close to report ENOSPC there).
    let t = setup();
    let (f, fh) = t.fs.create(&C, ROOT_INO, b"c", 0o644).unwrap();
    let data = random(50_000, 41); // under one chunk: nothing goes to the pool
    t.fs.write(f.ino, 0, &data).unwrap();
    let before = t.fs.data_stats().chunks_encoded;
    t.fs.close_descriptor(fh).unwrap();
    assert_eq!(t.fs.data_stats().chunks_encoded, before);
    // Still visible to everyone meanwhile.
    assert_eq!(t.fs.getattr(f.ino).unwrap().size, 50_000);
    assert_eq!(t.fs.read(f.ino, 0, 50_000).unwrap(), data);
    t.fs.release(fh).unwrap();
    assert_eq!(t.fs.data_stats().chunks_encoded, before + 1);
    assert_eq!(t.fs.read(f.ino, 0, 50_000).unwrap(), data);
}
