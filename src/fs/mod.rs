//! The filesystem core: namespace (inodes, dentries, hard links, symlinks,
//! rename: `namespace.rs`), open files and their write buffers (`open.rs`,
//! `buffers.rs`), writes, truncate and holes (`write.rs`), reads
//! (`read.rs`), storing buffers as chunks (`commit.rs`), deleting chunk
//! files and crash recovery (`gc.rs`), xattrs, and the POSIX rules the
//! kernel leaves to the filesystem (ownership of new files, setgid
//! inheritance, suid/sgid clearing on chown, nlink, timestamps). Chunks
//! themselves (records, encoding, loading, repair) are the chunk layer's
//! (`crate::chunks`), which `Fs` holds as one sub-owner.
//!
//! May not: know about FUSE (the adapter in `mount/` maps these calls and
//! their errors), or the network. Permission checks on access are the
//! kernel's (`default_permissions`, always set by `pangea-mount`).
//!
//! Concurrency: one mutex (`ns`) serializes every change to the namespace
//! (each a single atomic WriteBatch), and takes the chunk table's lock
//! inside it (a batch may change refcounts); reads of the index take no
//! lock, and no fsync, encoding or scan of a whole file runs under it. Each
//! open file has its own lock over its write buffers; lock order is file →
//! `ns` → chunk records.
//!
//! Durability: a chunk file is durable before any batch names it, so the
//! index's log may reach the disk at any time; fsync stores a file's
//! buffers and syncs that log (docs/SEMANTICS.md, `tests/power_loss.rs`).
//!
//! Invariants (checked by `fsck::fsck`, which the power-loss simulator runs
//! after every simulated crash, and by `src/fs/tests.rs`:
//! `directories_count_links_and_refuse_removal_when_not_empty`,
//! `unlinked_open_file_stays_readable_until_release`,
//! `orphans_left_by_a_crash_are_deleted_at_the_next_open`,
//! `identical_chunks_are_stored_once`,
//! `overwrite_rewrites_only_touched_chunks_and_gc_frees_the_old`):
//! * every dentry points to an inode; a directory's nlink is 2 + its subdirs;
//! * an inode with nlink 0 exists only while open (listed in the orphan CF)
//!   and is deleted, with its data, on last release or at the next mount;
//! * a chunk record's refcount is the number of extents naming it; a chunk
//!   whose count drops to zero is deleted in the same batch and its file
//!   removed once that batch is durable (via the GC CF, and the sweep after
//!   a crash, so nothing leaks).

mod buffers;
mod commit;
pub mod error;
pub mod fsck;
mod gc;
mod namespace;
mod open;
mod read;
pub mod types;
mod write;
pub mod xattr;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::cache::CacheStats;
use crate::ces::{Ces, CompressionPolicy, ShardParams};
use crate::chunks::{ChunkConfig, Chunks, FileId, RecordsGuard};
use crate::store::{Batch, Cf, ChunkStore, CountingKv, Kv};

pub use error::{FsError, FsResult};
pub use read::ReadData;
pub use types::{FileKind, Ino, Inode, NAME_MAX, ROOT_INO, Time};
pub use write::SYNCED_CHUNK_SIZE;

/// Tunables of the filesystem core.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Size of new files' chunks.
    pub chunk_size: u32,
    /// (k, m) of new chunks.
    pub shard_params: ShardParams,
    /// Encoded chunks whose shards total at most this many bytes are stored
    /// in the index instead of a file of their own (small files).
    pub inline_max: usize,
    /// Read-cache capacity in bytes.
    pub cache_capacity: u64,
    /// Read-cache entry lifetime after its last read.
    pub cache_ttl: Duration,
    /// Bytes of unflushed writes across all files before writers flush
    /// (with the cache, this bounds the daemon's memory).
    pub dirty_limit: usize,
    /// zstd levels by content class.
    pub policy: CompressionPolicy,
    /// Where write buffers spill when over `dirty_limit` (anonymous files,
    /// plaintext like the page cache; cleared by closing). None: buffers
    /// over the limit are encoded instead.
    pub staging_dir: Option<std::path::PathBuf>,
    /// Chunks decoded ahead of a sequential reader: their shards are read
    /// on the fetch threads, then decoded in parallel on the encoder pool.
    pub read_ahead: usize,
    /// Queue new encodings for placement on peers (`crate::placement`). Set when
    /// the node has peers; a node alone keeps the upload queue empty.
    pub upload: bool,
    /// The data dir's space set aside for the index: restored after chunk
    /// files are deleted, once the disk has room for it again.
    pub reserve: Option<crate::store::Reserve>,
    /// Write nothing to the store (`-o ro`): no recovery at open, no
    /// garbage collection, no repair of damaged chunks on read. The kernel
    /// refuses every change of a read-only mount before it gets here.
    pub read_only: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            chunk_size: types::DEFAULT_CHUNK_SIZE,
            shard_params: ShardParams::LOCAL,
            inline_max: 64 * 1024,
            cache_capacity: crate::cache::DEFAULT_CAPACITY,
            cache_ttl: crate::cache::DEFAULT_TTL,
            dirty_limit: 64 << 20,
            policy: CompressionPolicy::default(),
            staging_dir: None,
            read_ahead: 4,
            upload: false,
            reserve: None,
            read_only: false,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Ctx {
    /// Root, for tests and internal work.
    pub const ROOT: Ctx = Ctx {
        uid: 0,
        gid: 0,
        pid: 0,
    };

    /// Is `gid` the caller's primary or a supplementary group?
    pub fn in_group(&self, gid: u32) -> bool {
        if gid == self.gid {
            return true;
        }
        if self.pid == 0 {
            return false;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
    }
}

/// Time to set in setattr.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(Time),
}

/// Attribute changes of one setattr call.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Time>,
}

/// Rename flags (renameat2).
#[derive(Debug, Clone, Copy, Default)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

/// statfs answer.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// One readdir entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: Ino,
    /// Offset to pass to continue after this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

/// The filesystem.
pub struct Fs {
    kv: Arc<dyn Kv>,
    /// The same store, for its write count (what open files' cached inode
    /// and extents are checked against).
    counted: Arc<CountingKv>,
    /// The data plane: chunk records, encoding, loading, the read cache.
    chunks: Arc<Chunks>,
    cfg: FsConfig,
    /// Serializes every index mutation (see the module docs).
    ns: Arc<NsLock>,
    next_ino: AtomicU64,
    /// Per-inode state of open files.
    open: Mutex<HashMap<Ino, open::OpenEntry>>,
    /// File handle → inode.
    handles: Mutex<HashMap<u64, Ino>>,
    /// Files whose kernel page cache may hold bytes they do not have
    /// (`Fs::keep_cache`).
    cache_suspect: Mutex<std::collections::HashSet<Ino>>,
    next_fh: AtomicU64,
    /// Bytes held in write buffers across all files (see `buffers`).
    dirty_total: Arc<AtomicU64>,
    /// Bytes spilled to staging files across all files (`open::Staged`).
    staged_total: Arc<AtomicU64>,
    /// Chunk files to delete after the next WAL sync (see `collect_garbage`).
    gc_pending: Mutex<Vec<(FileId, u64)>>,
    /// Inode → references the kernel holds (FUSE's lookup count, see
    /// `remember`/`forget`). An inode unlinked while the kernel still knows
    /// it stays, as an orphan, until forgotten: an open(2) that resolved the
    /// name just before a rename or unlink must still find it.
    lookups: Mutex<HashMap<Ino, u64>>,
    /// What `user.pangea.health` says of a file's chunks (set by the node
    /// when it has peers; else every chunk is local-only).
    health: std::sync::OnceLock<Arc<HealthFn>>,
    /// `-o sync_remote`: what fsync and close wait for after the local
    /// sync (enough shards of each chunk on peers); unset, nothing.
    remote_sync: std::sync::OnceLock<Arc<RemoteSyncFn>>,
    /// The write path's own counters.
    stats: Counters,
}

/// Write-path counters (the chunk layer keeps its own).
#[derive(Default)]
struct Counters {
    bytes_flushed: AtomicU64,
    slots_spilled: AtomicU64,
}

/// A snapshot of the data path's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataStats {
    /// Chunks run through CES on the write path.
    pub chunks_encoded: u64,
    /// Chunks whose plaintext was already stored (no encoding, refcount + 1).
    pub chunks_deduped: u64,
    /// Chunks decoded on the read path (cache misses).
    pub chunks_decoded: u64,
    /// Chunks read with missing or corrupt shards, rebuilt and rewritten.
    pub chunks_repaired: u64,
    /// Chunks with fewer than k good shards (reads failed with EIO).
    pub chunks_lost: u64,
    /// Chunks whose last reference went away and that were deleted.
    pub chunks_deleted: u64,
    /// Plaintext bytes flushed from write buffers.
    pub bytes_flushed: u64,
    /// Write buffers moved to a staging file over the memory budget.
    pub slots_spilled: u64,
}

/// The namespace mutex, which knows which thread holds it (tests check
/// that no fsync, encoding or unbounded scan runs under it).
#[derive(Default)]
pub(crate) struct NsLock {
    m: Mutex<()>,
    /// `thread_tag()` of the holder; 0 when free.
    holder: AtomicU64,
}

/// A small number naming the calling thread (never 0).
fn thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TAG: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TAG.with(|t| *t)
}

impl NsLock {
    /// Does the calling thread hold the mutex?
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_held_here(&self) -> bool {
        self.holder.load(Ordering::Acquire) == thread_tag()
    }
}

/// Holds `ns`, and the chunk table's lock inside it (every namespace batch
/// may change refcounts); clears its holder when dropped.
pub(crate) struct NsGuard<'a> {
    holder: &'a AtomicU64,
    _records: RecordsGuard<'a>,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for NsGuard<'_> {
    fn drop(&mut self) {
        self.holder.store(0, Ordering::Release);
    }
}

const META_NEXT_INO: &[u8] = b"next_ino";
/// Present while the filesystem is closed cleanly (written by
/// [`Fs::shutdown`], removed at the next open): its absence at open means
/// the last run crashed, and the open sweeps what a crash can leave.
pub(crate) const META_CLEAN: &[u8] = b"clean_shutdown";

/// Describes the placement of a file's chunks, for `user.pangea.health`.
pub type HealthFn = dyn Fn(&[crate::ces::ChunkId]) -> String + Send + Sync;
/// Waits until a file's chunks are safe on peers (`-o sync_remote`).
pub type RemoteSyncFn = dyn Fn(&[crate::ces::ChunkId]) -> Result<(), String> + Send + Sync;

impl Fs {
    /// Makes fsync and close wait for `f` after their local work (once).
    pub fn set_remote_sync(&self, f: Arc<RemoteSyncFn>) {
        let _ = self.remote_sync.set(f);
    }

    /// Waits, if `-o sync_remote`, until file `ino`'s chunks are on peers.
    pub(crate) fn sync_remote(&self, ino: Ino) -> FsResult<()> {
        match self.remote_sync.get() {
            Some(f) => f(&self.file_chunks(ino)?).map_err(FsError::Remote),
            None => Ok(()),
        }
    }

    /// Sets what `user.pangea.health` reports (once; the node's network).
    pub fn set_health(&self, f: Arc<HealthFn>) {
        let _ = self.health.set(f);
    }

    /// The distinct chunks of file `ino`, in extent order.
    pub fn file_chunks(&self, ino: Ino) -> FsResult<Vec<crate::ces::ChunkId>> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.kv
            .scan(Cf::Extent, &types::ino_key(ino), &[], &mut |_, v| {
                if let Ok(r) = types::ChunkRef::decode(v)
                    && seen.insert(r.id)
                {
                    out.push(r.id);
                }
                true
            })?;
        Ok(out)
    }

    /// Opens the filesystem stored in `kv` and `chunks`, creating the root
    /// directory (owned by `root_owner`) on first use, and finishing work a
    /// crash interrupted (orphans, pending chunk deletions).
    pub fn new(
        kv: Arc<dyn Kv>,
        chunks: Arc<dyn ChunkStore>,
        ces: Ces,
        cfg: FsConfig,
        root_owner: (u32, u32),
    ) -> FsResult<Fs> {
        Fs::with_source(kv, chunks, ces, cfg, root_owner, |local, _| Arc::new(local))
    }

    /// `new`, with the chunk layer reading shards through the source that
    /// `source` makes from the local disk and the index (the node's
    /// network: the local disk first, then peers).
    pub fn with_source(
        kv: Arc<dyn Kv>,
        chunks: Arc<dyn ChunkStore>,
        ces: Ces,
        cfg: FsConfig,
        root_owner: (u32, u32),
        source: impl FnOnce(
            crate::chunks::LocalShards,
            Arc<dyn Kv>,
        ) -> Arc<dyn crate::chunks::ShardSource>,
    ) -> FsResult<Fs> {
        let counted = Arc::new(CountingKv::new(kv));
        let kv: Arc<dyn Kv> = counted.clone();
        let next = match kv.get(Cf::Meta, META_NEXT_INO)? {
            Some(v) => u64::from_le_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| FsError::Corrupt("next_ino"))?,
            ),
            None => types::ROOT_INO.0 + 1,
        };
        let source_kv = kv.clone();
        let chunks = Arc::new(Chunks::with_source(
            kv.clone(),
            chunks,
            ces,
            ChunkConfig {
                shard_params: cfg.shard_params,
                inline_max: cfg.inline_max,
                cache_capacity: cfg.cache_capacity,
                cache_ttl: cfg.cache_ttl,
                read_only: cfg.read_only,
            },
            move |local| source(local, source_kv),
        ));
        let fs = Fs {
            kv,
            counted,
            chunks,
            cfg,
            ns: Arc::new(NsLock::default()),
            next_ino: AtomicU64::new(next),
            open: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            cache_suspect: Mutex::new(std::collections::HashSet::new()),
            next_fh: AtomicU64::new(1),
            dirty_total: Arc::new(AtomicU64::new(0)),
            staged_total: Arc::new(AtomicU64::new(0)),
            gc_pending: Mutex::new(Vec::new()),
            lookups: Mutex::new(HashMap::new()),
            health: std::sync::OnceLock::new(),
            remote_sync: std::sync::OnceLock::new(),
            stats: Counters::default(),
        };
        let has_root = fs
            .kv
            .get(Cf::Inode, &types::ino_key(types::ROOT_INO))?
            .is_some();
        if fs.cfg.read_only {
            // Nothing is written: no root to create, no recovery.
            return if has_root {
                Ok(fs)
            } else {
                Err(FsError::ReadOnlyEmpty)
            };
        }
        if !has_root {
            let now = Time::now();
            let root = Inode {
                ino: types::ROOT_INO,
                kind: FileKind::Dir,
                perm: 0o755,
                uid: root_owner.0,
                gid: root_owner.1,
                nlink: 2,
                size: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                rdev: 0,
                target: Vec::new(),
                next_cookie: 1,
                parent: types::ROOT_INO,
                chunk_size: 0,
            };
            let mut b = Batch::new();
            b.put(Cf::Inode, &types::ino_key(root.ino), &root.encode());
            b.put(Cf::Meta, META_NEXT_INO, &next.to_le_bytes());
            fs.kv.write(b, true)?;
        }
        fs.recover()?;
        Ok(fs)
    }

    /// Read-cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.chunks.cache_stats()
    }

    /// Empties the read cache (benchmarks: a cold read after drop_caches).
    pub fn drop_cache(&self) {
        self.chunks.drop_cache();
    }

    /// Data-path counters.
    pub fn data_stats(&self) -> DataStats {
        let c = self.chunks.stats();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DataStats {
            chunks_encoded: c.encoded,
            chunks_deduped: c.deduped,
            chunks_decoded: c.decoded,
            chunks_repaired: c.repaired,
            chunks_lost: c.lost,
            chunks_deleted: c.deleted,
            bytes_flushed: g(&self.stats.bytes_flushed),
            slots_spilled: g(&self.stats.slots_spilled),
        }
    }

    /// The chunk layer (tests and tools: records, repair).
    pub fn chunk_layer(&self) -> &Arc<Chunks> {
        &self.chunks
    }

    /// The upload queue over this filesystem's index and chunks.
    pub fn upload_queue(&self) -> crate::placement::UploadQueue {
        crate::placement::UploadQueue::new(self.kv.clone(), self.chunks.clone())
    }

    /// The heal queue over this filesystem's index (the healer's).
    pub fn heal_queue(&self) -> crate::placement::HealQueue {
        crate::placement::HealQueue::new(self.kv.clone(), self.chunks.clone())
    }

    /// The configuration in use.
    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    fn lock_ns(&self) -> NsGuard<'_> {
        let guard = self.ns.m.lock().unwrap_or_else(|p| p.into_inner());
        let records = self.chunks.table().lock();
        self.ns.holder.store(thread_tag(), Ordering::Release);
        NsGuard {
            holder: &self.ns.holder,
            _records: records,
            _guard: guard,
        }
    }

    fn alloc_ino(&self, batch: &mut Batch) -> Ino {
        let ino = self.next_ino.fetch_add(1, Ordering::SeqCst);
        batch.put(Cf::Meta, META_NEXT_INO, &(ino + 1).to_le_bytes());
        Ino(ino)
    }

    /// The stored inode (without the overlay of unflushed writes).
    fn load(&self, ino: Ino) -> FsResult<Inode> {
        match self.kv.get(Cf::Inode, &types::ino_key(ino))? {
            Some(v) => Inode::decode(&v),
            None => Err(FsError::NotFound),
        }
    }

    fn put_inode(&self, b: &mut Batch, inode: &Inode) {
        b.put(Cf::Inode, &types::ino_key(inode.ino), &inode.encode());
    }

    /// Makes everything written so far durable (fsyncdir, syncfs, unmount),
    /// and deletes the chunk files that are no longer referenced.
    pub fn sync_all(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Ok(());
        }
        self.flush_all()
    }

    /// The last call before closing (unmount): stores everything, makes it
    /// durable and marks the store cleanly closed, so that the next open
    /// need not sweep for what a crash leaves. Nothing may write after it.
    pub fn shutdown(&self) -> FsResult<()> {
        if self.cfg.read_only {
            return Ok(());
        }
        self.flush_all()?;
        let mut b = Batch::new();
        b.put(Cf::Meta, META_CLEAN, &[1]);
        self.kv.write(b, true)?;
        Ok(())
    }

    /// statfs: the capacity of the data dir's disk.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let v = self.chunks.local().files().disk_usage()?;
        let bsize = 4096u64;
        Ok(StatFs {
            blocks: v.total_bytes / bsize,
            bfree: v.free_bytes / bsize,
            bavail: v.available_bytes / bsize,
            files: v.total_inodes.max(1 << 20),
            ffree: v.free_inodes.max(1 << 19),
            bsize: bsize as u32,
            namelen: NAME_MAX as u32,
            frsize: bsize as u32,
        })
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_power;
