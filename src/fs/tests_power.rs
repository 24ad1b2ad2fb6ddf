//! Durability under power cuts and faults, one finding at a time (the
//! random search over many of them is `tests/power_loss.rs`). Each test
//! runs the core over a simulated disk (`store::SimDisk`) that loses what
//! was not synced, and failed on the code before the fixes it names.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::*;
use crate::ces::{Ces, CompressionPolicy, MasterKey, ShardParams};
use crate::store::{Batch, Cf, ChunkStore, DiskUsage, Kv, SimDisk, StoreError};
use crate::testutil::random;

fn cfg() -> FsConfig {
    FsConfig {
        inline_max: 8 * 1024,
        shard_params: ShardParams::new(4, 2).unwrap(),
        read_ahead: 0,
        ..FsConfig::default()
    }
}

fn ces() -> Ces {
    Ces::new(
        &MasterKey::from_bytes([3; 32]),
        CompressionPolicy::default(),
    )
    .unwrap()
}

fn open_with(disk: &SimDisk, cfg: FsConfig) -> Fs {
    Fs::new(disk.kv(), disk.chunks(), ces(), cfg, (0, 0)).unwrap()
}

fn open(disk: &SimDisk) -> Fs {
    open_with(disk, cfg())
}

fn create(fs: &Fs, name: &str) -> (Ino, u64) {
    let (inode, fh) = fs
        .create(&Ctx::ROOT, ROOT_INO, name.as_bytes(), 0o644)
        .unwrap();
    (inode.ino, fh)
}

fn write_all(fs: &Fs, ino: Ino, data: &[u8]) {
    for (i, piece) in data.chunks(128 * 1024).enumerate() {
        fs.write(ino, (i * 128 * 1024) as u64, piece).unwrap();
    }
}

fn read_file(fs: &Fs, name: &str) -> FsResult<Vec<u8>> {
    let inode = fs.lookup(ROOT_INO, name.as_bytes())?;
    fs.read(inode.ino, 0, u32::try_from(inode.size).unwrap())
}

fn assert_consistent(disk: &SimDisk) {
    let report = fsck::fsck(&*disk.kv(), &*disk.chunks(), false).unwrap();
    assert!(report.is_clean(), "{report}");
}

/// Finding: the first fsync of a small file re-cut it and stored the new
/// chunk size in a batch of its own; a failure before the next batch left
/// every byte past 32 KiB reading as zeros.
#[test]
fn a_recut_interrupted_at_any_disk_call_loses_nothing() {
    let content = random(200 * 1024, 1);
    for n in 0..40 {
        for crash in [false, true] {
            let disk = SimDisk::new(n);
            let fs = open(&disk);
            let (ino, fh) = create(&fs, "db");
            write_all(&fs, ino, &content);
            fs.release(fh).unwrap();
            fs.sync_all().unwrap(); // durable, at the large chunk size
            let fh = fs.open(ino, false).unwrap();
            if crash {
                disk.crash_at(disk.calls() + n);
            } else {
                disk.fail_at(disk.calls() + n);
            }
            let synced = fs.fsync(ino); // re-cuts into 32 KiB chunks
            disk.disarm();
            if !crash {
                // A failed fsync keeps the data; closing stores it.
                assert_eq!(
                    read_file(&fs, "db").unwrap(),
                    content,
                    "call {n}: {synced:?}"
                );
                let _ = fs.release(fh);
                assert_eq!(
                    read_file(&fs, "db").unwrap(),
                    content,
                    "call {n}, after close"
                );
                fs.sync_all().unwrap();
            }
            drop(fs);
            let after = disk.restart(n + 100);
            let fs = open(&after);
            assert_eq!(
                read_file(&fs, "db").unwrap(),
                content,
                "call {n}, crash {crash}"
            );
            drop(fs);
            assert_consistent(&after);
        }
    }
}

/// Finding: fsync synced only the chunk files its own handle encoded; a
/// chunk written by an earlier release (write, close, reopen, fsync) was
/// never synced, so after a power cut the fsynced file read as EIO.
#[test]
fn fsync_makes_chunks_written_by_an_earlier_release_durable() {
    let content = random(3 << 20, 2);
    for seed in 0..12 {
        let disk = SimDisk::new(seed);
        let fs = open(&disk);
        let (ino, fh) = create(&fs, "f");
        write_all(&fs, ino, &content);
        fs.release(fh).unwrap();
        let fh = fs.open(ino, false).unwrap();
        fs.fsync(ino).unwrap();
        let _ = fh;
        let fs2 = open(&disk.restart(seed));
        assert_eq!(read_file(&fs2, "f").unwrap(), content, "seed {seed}");
        drop(fs);
    }
}

/// Finding: `cp a b; fsync b` did not sync the chunks `b` shares with `a`
/// through dedup.
#[test]
fn fsync_of_a_copy_makes_the_shared_chunks_durable() {
    let content = random(3 << 20, 3);
    for seed in 0..12 {
        let disk = SimDisk::new(seed);
        let fs = open(&disk);
        let (a, fh) = create(&fs, "a");
        write_all(&fs, a, &content);
        fs.release(fh).unwrap();
        let (b, _) = create(&fs, "b");
        write_all(&fs, b, &content);
        fs.fsync(b).unwrap();
        assert!(fs.data_stats().chunks_deduped > 0);
        let after = disk.restart(seed);
        let fs2 = open(&after);
        assert_eq!(read_file(&fs2, "b").unwrap(), content, "seed {seed}");
        drop(fs);
    }
}

/// Finding: fsync of one file synced the index's log, which also made
/// durable the entries of other files whose chunk files were not: those
/// files then read as EIO for good. Now a file is absent, old or new.
#[test]
fn fsync_of_one_file_never_leaves_another_unreadable() {
    let other = random(3 << 20, 4);
    for seed in 0..16 {
        let disk = SimDisk::new(seed);
        let fs = open(&disk);
        let (a, fh) = create(&fs, "unsynced");
        write_all(&fs, a, &other);
        fs.release(fh).unwrap();
        let (b, _) = create(&fs, "synced");
        write_all(&fs, b, b"small");
        fs.fsync(b).unwrap();
        let after = disk.restart(seed);
        let fs2 = open(&after);
        assert_eq!(read_file(&fs2, "synced").unwrap(), b"small");
        match read_file(&fs2, "unsynced") {
            Ok(got) => assert!(
                got.is_empty() || got == other || other.starts_with(&got),
                "seed {seed}: {} bytes of something else",
                got.len()
            ),
            Err(FsError::NotFound) => {}
            Err(e) => panic!("seed {seed}: the unsynced file reads as {e}"),
        }
        drop(fs2);
        assert_consistent(&after);
        drop(fs);
    }
}

/// Finding: fsync synced the index, then deleted every chunk file pending
/// deletion, including one unreferenced by a batch written after that
/// sync. Deletions now wait for a sync that covers their batch.
#[test]
fn chunk_files_are_deleted_only_once_their_unreferencing_batch_is_durable() {
    let disk = SimDisk::new(5);
    let fs = open(&disk);
    let (ino, fh) = create(&fs, "f");
    write_all(&fs, ino, &random(5 << 20, 5));
    fs.release(fh).unwrap();
    fs.sync_all().unwrap();
    let mut files = 0;
    disk.chunks()
        .visit(&mut |_, _| {
            files += 1;
            true
        })
        .unwrap();
    assert!(files > 0);
    // As another thread's fsync sees it: its sync covered writes up to
    // `synced`; then this unlink's batch lands and queues the files.
    let synced = fs.counted.writes();
    fs.unlink(ROOT_INO, b"f").unwrap();
    fs.collect_garbage(Some(synced));
    let mut left = 0;
    disk.chunks()
        .visit(&mut |_, _| {
            left += 1;
            true
        })
        .unwrap();
    assert_eq!(left, files, "deleted before the unlink was durable");
    // A cut now must find the file (the unlink was not durable) readable.
    let after = disk.restart(6);
    let fs2 = open(&after);
    if let Ok(inode) = fs2.lookup(ROOT_INO, b"f") {
        fs2.read(inode.ino, 0, 1 << 20).unwrap();
    }
    drop(fs2);
    assert_consistent(&after);
}

/// Finding: punching a hole wrote zeros over the whole range, holes
/// included (1 GiB: 256 extents; an 8 EiB range never ended).
#[test]
fn punching_a_hole_costs_the_extents_not_the_range() {
    let disk = SimDisk::new(6);
    let fs = open(&disk);
    let (ino, _) = create(&fs, "sparse");
    let cs = u64::from(cfg().chunk_size);
    let big = types::MAX_FILE_SIZE - 2 * cs;
    fs.write(ino, 0, b"head").unwrap();
    fs.write(ino, 1 << 40, &random(100, 7)).unwrap();
    fs.write(ino, big, b"tail").unwrap();
    fs.fsync(ino).unwrap();
    let before = disk.calls();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fs.fallocate(ino, 2, big + 1 - 2, mode).unwrap();
    fs.fsync(ino).unwrap();
    assert!(
        disk.calls() - before < 30,
        "{} disk calls",
        disk.calls() - before
    );
    assert_eq!(fs.read(ino, 0, 6).unwrap(), b"he\0\0\0\0");
    assert_eq!(fs.read(ino, 1 << 40, 100).unwrap(), vec![0; 100]);
    assert_eq!(fs.read(ino, big, 4).unwrap(), b"\0ail");
    let mut extents = 0;
    disk.kv()
        .scan(Cf::Extent, &types::ino_key(ino), &[], &mut |_, _| {
            extents += 1;
            true
        })
        .unwrap();
    assert_eq!(
        extents, 2,
        "the covered slot is gone, the two partial ones stay"
    );
    assert_eq!(fs.getattr(ino).unwrap().size, big + 4);
}

/// Finding: a panic in an encoding job hung the FUSE thread waiting for
/// it, or dropped the slot's data. Now the request fails with EIO and the
/// data stays buffered until a later flush stores it.
#[test]
fn a_panicking_encoding_job_fails_its_request_and_loses_nothing() {
    let disk = SimDisk::new(7);
    let fs = open(&disk);
    let (ino, fh) = create(&fs, "f");
    let mut content = random(9 << 20, 8);
    content[..crate::chunks::encode::PANIC_MARK.len()]
        .copy_from_slice(crate::chunks::encode::PANIC_MARK);
    crate::chunks::encode::PANIC_NEXT_JOB.store(true, Ordering::SeqCst);
    // Full chunks go to the pool as they fill; the panic surfaces at the
    // next call that collects the jobs.
    let mut failed = None;
    for (i, piece) in content.chunks(128 * 1024).enumerate() {
        if let Err(e) = fs.write(ino, (i * 128 * 1024) as u64, piece) {
            failed = Some((i, e));
            break;
        }
    }
    let flushed = match failed {
        Some((i, e)) => {
            assert_eq!(e.errno(), libc::EIO);
            for (j, piece) in content.chunks(128 * 1024).enumerate().skip(i) {
                fs.write(ino, (j * 128 * 1024) as u64, piece).unwrap();
            }
            fs.fsync(ino)
        }
        None => fs.fsync(ino).and(Err(FsError::Internal("no failure seen"))),
    };
    if let Err(e) = flushed {
        assert_eq!(e.errno(), libc::EIO);
        fs.fsync(ino).unwrap();
    }
    assert_eq!(read_file(&fs, "f").unwrap(), content);
    fs.release(fh).unwrap();
    let fs2 = open(&disk.restart(9));
    assert_eq!(read_file(&fs2, "f").unwrap(), content);
}

/// A store that checks, at every call, that the calling thread does not
/// hold the namespace mutex across an fsync or a chunk write (which
/// follows an encoding on the same thread), and that no scan under it
/// visits more than a bounded number of entries.
struct Probe {
    ns: OnceLock<Arc<NsLock>>,
    violation: AtomicBool,
    widest_scan_under_ns: AtomicUsize,
}

impl Probe {
    fn held(&self) -> bool {
        self.ns.get().is_some_and(|ns| ns.is_held_here())
    }

    fn check(&self, what: &str) {
        if self.held() {
            eprintln!("{what} under ns");
            self.violation.store(true, Ordering::SeqCst);
        }
    }
}

struct ProbedKv(Arc<dyn Kv>, Arc<Probe>);
struct ProbedChunks(Arc<dyn ChunkStore>, Arc<Probe>);

impl Kv for ProbedKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(cf, key)
    }
    fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        if sync {
            self.1.check("index sync");
        }
        self.0.write(batch, sync)
    }
    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let held = self.1.held();
        let mut n = 0;
        let r = self.0.scan(cf, prefix, start, &mut |k, v| {
            n += 1;
            visit(k, v)
        });
        if held {
            self.1.widest_scan_under_ns.fetch_max(n, Ordering::SeqCst);
        }
        r
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.1.check("index sync");
        self.0.sync()
    }
}

impl ChunkStore for ProbedChunks {
    fn write(&self, id: &[u8; 32], bytes: &[u8], sync: bool) -> Result<(), StoreError> {
        self.1.check("chunk write (after an encode)");
        self.0.write(id, bytes, sync)
    }
    fn read_prefix_at(
        &self,
        id: &[u8; 32],
        len: usize,
        buf: Vec<u8>,
    ) -> Result<Option<(Vec<u8>, usize)>, StoreError> {
        self.0.read_prefix_at(id, len, buf)
    }
    fn read_all(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.read_all(id)
    }
    fn delete(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.0.delete(id)
    }
    fn sync(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.1.check("chunk sync");
        self.0.sync(id)
    }
    fn sync_dir(&self, id: &[u8; 32]) -> Result<(), StoreError> {
        self.1.check("directory sync");
        self.0.sync_dir(id)
    }
    fn visit(&self, visit: &mut dyn FnMut(&[u8; 32], u64) -> bool) -> Result<(), StoreError> {
        self.0.visit(visit)
    }
    fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        self.0.disk_usage()
    }
}

/// Finding: the namespace mutex was held across fsyncs (repair), a CES
/// encode (commit) and whole-file scans (unlink, truncate).
#[test]
fn no_fsync_encode_or_whole_file_scan_runs_under_the_namespace_mutex() {
    let disk = SimDisk::new(8);
    let probe = Arc::new(Probe {
        ns: OnceLock::new(),
        violation: AtomicBool::new(false),
        widest_scan_under_ns: AtomicUsize::new(0),
    });
    let kv: Arc<dyn Kv> = Arc::new(ProbedKv(disk.kv(), probe.clone()));
    let chunks: Arc<dyn ChunkStore> = Arc::new(ProbedChunks(disk.chunks(), probe.clone()));
    let cfg = FsConfig {
        chunk_size: 4096,
        inline_max: 64,
        ..cfg()
    };
    let fs = Fs::new(kv, chunks, ces(), cfg, (0, 0)).unwrap();
    let _ = probe.ns.set(fs.ns.clone());
    // 1,500 chunks: truncate, unlink and reaping must not scan them under ns.
    let content = random(1500 * 4096, 9);
    for name in ["a", "b"] {
        let (ino, fh) = create(&fs, name);
        write_all(&fs, ino, &content);
        fs.fsync(ino).unwrap();
        fs.release(fh).unwrap();
    }
    // A damaged chunk is repaired on read (re-encoded, written, synced).
    let blob = {
        let mut any = None;
        disk.chunks()
            .visit(&mut |id, _| {
                any = Some(*id);
                false
            })
            .unwrap();
        any.unwrap()
    };
    assert!(disk.chunks().damage(&blob, |b| b[10] ^= 1));
    let a = fs.lookup(ROOT_INO, b"a").unwrap().ino;
    assert_eq!(fs.read(a, 0, content.len() as u32).unwrap(), content);
    fs.setattr(
        &Ctx::ROOT,
        a,
        &SetAttr {
            size: Some(4096),
            ..SetAttr::default()
        },
    )
    .unwrap();
    fs.unlink(ROOT_INO, b"b").unwrap();
    fs.sync_all().unwrap();
    assert!(
        !probe.violation.load(Ordering::SeqCst),
        "see the lines above"
    );
    let widest = probe.widest_scan_under_ns.load(Ordering::SeqCst);
    assert!(widest <= 300, "a scan under ns visited {widest} entries");
    assert!(fs.lookup(ROOT_INO, b"b").is_err());
    drop(fs);
    assert_consistent(&disk);
}

/// An I/O error storing a file's data at its last close (after close(2)
/// returned, so nobody can be told but the log) is returned by the release
/// (the adapter logs it, and so does the core), drops only that file's
/// unstored buffers, and leaves the store consistent: the file reads what
/// was stored before.
#[test]
fn an_error_storing_a_closed_files_data_is_reported_and_drops_only_its_buffers() {
    let disk = SimDisk::new(12);
    let fs = open(&disk);
    let first = random(5 << 20, 13);
    let (ino, fh) = create(&fs, "f");
    write_all(&fs, ino, &first);
    fs.fsync(ino).unwrap();
    // Rewrite the first chunk; the store fails at the release.
    fs.write(ino, 0, &random(1000, 14)).unwrap();
    disk.fail_at(disk.calls());
    let released = fs.release(fh);
    disk.disarm();
    assert!(released.is_err(), "the failure must reach the release");
    assert_eq!(read_file(&fs, "f").unwrap(), first);
    fs.sync_all().unwrap();
    drop(fs);
    assert_consistent(&disk);
}

/// `-o ro`: opening read-only writes nothing to the store, and a store
/// that has no filesystem yet is refused.
#[test]
fn a_read_only_open_writes_nothing() {
    let disk = SimDisk::new(10);
    let ro = FsConfig {
        read_only: true,
        ..cfg()
    };
    assert!(matches!(
        Fs::new(disk.kv(), disk.chunks(), ces(), ro.clone(), (0, 0)),
        Err(FsError::ReadOnlyEmpty)
    ));
    assert_eq!(disk.calls(), 0);
    let fs = open(&disk);
    let (ino, fh) = create(&fs, "f");
    write_all(&fs, ino, &random(1 << 20, 11));
    fs.release(fh).unwrap();
    fs.unlink(ROOT_INO, b"f").unwrap(); // pending deletions, no clean mark
    drop(fs);
    let calls = disk.calls();
    let fs = open_with(&disk, ro);
    assert!(fs.lookup(ROOT_INO, b"f").is_err());
    fs.sync_all().unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    assert_eq!(disk.calls(), calls, "a read-only open wrote to the store");
}

/// A chunk store whose writes wait at a gate while it is closed, and fail
/// with ENOSPC while `full` is set.
struct GatedChunks {
    inner: Arc<dyn ChunkStore>,
    full: AtomicBool,
    /// (closed, writers waiting)
    gate: std::sync::Mutex<(bool, usize)>,
    changed: std::sync::Condvar,
}

impl GatedChunks {
    /// A core over `disk` whose chunk store is gated, with 64 KiB chunks
    /// stored in chunk files (not inline) and `dirty_limit` bytes buffered.
    fn fs_over(disk: &SimDisk, dirty_limit: usize) -> (Arc<GatedChunks>, Fs) {
        let chunks = Arc::new(GatedChunks {
            inner: disk.chunks(),
            full: AtomicBool::new(false),
            gate: std::sync::Mutex::new((false, 0)),
            changed: std::sync::Condvar::new(),
        });
        let cfg = FsConfig {
            chunk_size: 64 * 1024,
            inline_max: 64,
            dirty_limit,
            ..cfg()
        };
        let fs = Fs::new(disk.kv(), chunks.clone(), ces(), cfg, (0, 0)).unwrap();
        (chunks, fs)
    }

    fn set_closed(&self, closed: bool) {
        self.gate.lock().unwrap().0 = closed;
        self.changed.notify_all();
    }

    /// Waits until a writer waits at the closed gate.
    fn wait_for_writer(&self) {
        let g = self.gate.lock().unwrap();
        let (g, timeout) = self
            .changed
            .wait_timeout_while(g, std::time::Duration::from_secs(10), |(_, n)| *n == 0)
            .unwrap();
        assert!(
            !timeout.timed_out() && g.1 > 0,
            "no chunk write reached the gate"
        );
    }
}

impl ChunkStore for GatedChunks {
    fn write(&self, id: &[u8; 32], bytes: &[u8], sync: bool) -> Result<(), StoreError> {
        let mut g = self.gate.lock().unwrap();
        g.1 += 1;
        self.changed.notify_all();
        while g.0 {
            g = self.changed.wait(g).unwrap();
        }
        g.1 -= 1;
        drop(g);
        if self.full.load(Ordering::Relaxed) {
            return Err(StoreError::from(std::io::Error::from_raw_os_error(
                nix::libc::ENOSPC,
            )));
        }
        self.inner.write(id, bytes, sync)
    }
    fn read_prefix_at(
        &self,
        id: &[u8; 32],
        len: usize,
        buf: Vec<u8>,
    ) -> Result<Option<(Vec<u8>, usize)>, StoreError> {
        self.inner.read_prefix_at(id, len, buf)
    }
    fn read_all(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.read_all(id)
    }
    fn delete(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.inner.delete(id)
    }
    fn sync(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.inner.sync(id)
    }
    fn sync_dir(&self, id: &[u8; 32]) -> Result<(), StoreError> {
        self.inner.sync_dir(id)
    }
    fn visit(&self, visit: &mut dyn FnMut(&[u8; 32], u64) -> bool) -> Result<(), StoreError> {
        self.inner.visit(visit)
    }
    fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        self.inner.disk_usage()
    }
}

/// An open that arrives while the last release of the file stores its
/// buffers does not wait for that store (rsync closes a file it wrote and
/// opens it again to set its mode); the new handle reads what was written,
/// and once every handle is closed the data is stored and survives a cut.
#[test]
fn an_open_does_not_wait_for_the_release_storing_the_file() {
    let disk = SimDisk::new(8);
    let (chunks, fs) = GatedChunks::fs_over(&disk, cfg().dirty_limit);
    let fs = Arc::new(fs);
    let content = random(3 * 64 * 1024 + 777, 15);
    let (ino, fh) = create(&fs, "f");
    write_all(&fs, ino, &content);
    chunks.set_closed(true);
    let releasing = {
        let fs = fs.clone();
        std::thread::spawn(move || fs.release(fh))
    };
    chunks.wait_for_writer();
    // The writer at the gate may be an encoder job of a full slot: wait
    // until the release holds the file (it stores under its lock).
    let t0 = std::time::Instant::now();
    while fs.existing_state(ino).is_some_and(|s| s.try_lock().is_ok()) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the release never took the file"
        );
        std::thread::yield_now();
    }
    // The release is storing (held at the gate): an open returns anyway.
    let (tx, rx) = std::sync::mpsc::channel();
    let opening = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let _ = tx.send(fs.open(ino, false));
        })
    };
    let opened = rx.recv_timeout(std::time::Duration::from_secs(5));
    chunks.set_closed(false);
    let fh2 = opened
        .expect("the open waited for the release storing the file")
        .unwrap();
    opening.join().unwrap();
    releasing.join().unwrap().unwrap();
    assert_eq!(fs.read(ino, 0, content.len() as u32).unwrap(), content);
    fs.release(fh2).unwrap();
    fs.sync_all().unwrap();
    drop(fs);
    disk.power_cut();
    let fs = open(&disk);
    assert_eq!(read_file(&fs, "f").unwrap(), content);
    assert_consistent(&disk);
}

/// A change of a file's bytes that fails in the daemon (here a last
/// release that cannot store the buffers, which it then drops) makes the
/// next open let the kernel drop its cached pages (`Fs::keep_cache`), once:
/// they may hold the bytes of writes the file no longer has.
#[test]
fn a_failed_store_makes_the_next_open_drop_the_kernel_page_cache() {
    let disk = SimDisk::new(9);
    let (chunks, fs) = GatedChunks::fs_over(&disk, 1 << 20);
    let old = random(100_000, 16);
    let (ino, fh) = create(&fs, "f");
    write_all(&fs, ino, &old);
    fs.release(fh).unwrap();
    assert!(fs.keep_cache(ino), "nothing failed: the cache is kept");
    let fh = fs.open(ino, false).unwrap();
    fs.write(ino, 10, b"new bytes the disk cannot take")
        .unwrap();
    chunks.full.store(true, Ordering::Relaxed);
    assert!(fs.release(fh).is_err(), "the store failed");
    chunks.full.store(false, Ordering::Relaxed);
    assert_eq!(
        read_file(&fs, "f").unwrap(),
        old,
        "the dropped write is gone"
    );
    assert!(
        !fs.keep_cache(ino),
        "the next open must drop the cached pages"
    );
    assert!(fs.keep_cache(ino), "only once");
    // A write that fails (the file's buffers over the limit, stored now).
    let fh = fs.open(ino, false).unwrap();
    chunks.full.store(true, Ordering::Relaxed);
    let big = random(4 << 20, 17);
    let failed = big
        .chunks(1 << 20)
        .enumerate()
        .any(|(i, piece)| fs.write(ino, (i << 20) as u64, piece).is_err());
    chunks.full.store(false, Ordering::Relaxed);
    assert!(failed, "a write over the buffer limit stores, and fails");
    assert!(!fs.keep_cache(ino), "a failed write drops the cached pages");
    let _ = fs.release(fh);
}
