//! The chunk layer: the data plane below the filesystem.
//!
//! Owns the chunk records ([`ChunkTable`]), encoding chunks through CES on
//! a pool of threads and making their files durable before anything names
//! them, loading a chunk (cache, then its shards through a
//! [`ShardSource`], verified, rebuilt from any k good shards), repairing a
//! damaged one in place, decoding ahead of sequential readers, and their
//! counters. Knows nothing of files, inodes or the namespace: the
//! filesystem names chunks by [`ChunkId`] and keeps the extents that
//! reference them. May not import `fs`, `placement`, `node` or `workers`.
//!
//! Threads: `encode` (one per core, below the FUSE threads' priority;
//! encodes, and decodes read-ahead), `fetch` (reads read-ahead chunks'
//! shards), `sync` (makes new chunk files durable). A job touches no lock
//! of the layers above, so waiting for one never deadlocks; dropping
//! [`Chunks`] drains and joins them (fetch, then encode, then sync: each
//! feeds the next).

mod decode;
pub(crate) mod encode;
pub mod error;
pub mod pool;
pub mod record;
pub mod source;
pub mod table;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::cache::{CacheStats, ChunkCache, Plain};
use crate::ces::{Ces, ChunkId, ShardParams};
use crate::store::{ChunkStore, Kv};

pub use error::{ChunkError, ChunkResult};
pub use pool::{Job, Pool};
pub use record::{ChunkEntry, ChunkRecord, FileId, Holder, Location, Stored};
pub use source::{Fetched, LocalShards, ShardSource, ShardsAt};
pub use table::{ChunkTable, RecordsGuard};

/// Tunables of the chunk layer.
#[derive(Debug, Clone)]
pub struct ChunkConfig {
    /// (k, m) of new chunks.
    pub shard_params: ShardParams,
    /// Encodings whose shards total at most this many bytes live in the
    /// index instead of a file of their own (small files).
    pub inline_max: usize,
    /// Read-cache capacity in bytes.
    pub cache_capacity: u64,
    /// Read-cache entry lifetime after its last read.
    pub cache_ttl: Duration,
    /// Write nothing: no repair of damaged chunks on read.
    pub read_only: bool,
}

/// Chunks waiting for an encoder thread: bounds the memory held by writers
/// that run ahead of encoding (at 4 MiB chunks, 16 MiB).
const ENCODE_QUEUE: usize = 4;
/// Threads that read chunk files for read-ahead. They wait on the disk, not
/// the CPU: three keep three chunk reads in flight while the pool decodes
/// (this virtio disk reads 4.5 MiB files at 545 MiB/s one at a time, 835
/// two at a time, 921 four at a time).
const FETCH_THREADS: usize = 3;
/// Read-ahead chunks waiting for a fetch thread (they hold no buffer yet).
const FETCH_QUEUE: usize = 8;
/// Threads that sync new chunk files (they wait on the disk: several syncs
/// in flight are committed together by the file system's journal).
const SYNC_THREADS: usize = 3;
/// Chunk files waiting for a sync thread (each holds its encoding's
/// plaintext until committed).
const SYNC_QUEUE: usize = 4;
/// The longest a read waits for the shards of one chunk.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// A chunk ready to be referenced: named, and encoded unless it was stored
/// already.
pub struct Prepared {
    /// The caller's tag for it (the filesystem's slot index).
    pub slot: u64,
    pub id: ChunkId,
    pub len: u32,
    pub plain: Plain,
    /// Set when this encoding stored the chunk (None: it was stored already).
    pub encoded: Option<Stored>,
}

/// An encoding job's result: the chunk ready to commit, or the error with
/// the slot and its buffer handed back (nothing acknowledged is lost).
pub type JobResult = Result<Prepared, (ChunkError, u64, Plain)>;

/// Where a job's result goes.
pub type Deliver = Box<dyn FnOnce(JobResult) + Send>;

/// Counters of the chunk layer.
#[derive(Default)]
struct Counters {
    encoded: AtomicU64,
    deduped: AtomicU64,
    decoded: AtomicU64,
    repaired: AtomicU64,
    lost: AtomicU64,
    deleted: AtomicU64,
}

/// A snapshot of the chunk layer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStats {
    /// Chunks run through CES on the write path.
    pub encoded: u64,
    /// Chunks whose plaintext was already stored (no encoding).
    pub deduped: u64,
    /// Chunks decoded on the read path (cache misses).
    pub decoded: u64,
    /// Chunks read with missing or corrupt shards, rebuilt and rewritten.
    pub repaired: u64,
    /// Chunks with fewer than k good shards (reads failed with EIO).
    pub lost: u64,
    /// Chunks whose last reference went away and that were deleted.
    pub deleted: u64,
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// What the jobs on the pools share with the callers.
struct Plane {
    ces: Ces,
    table: ChunkTable,
    /// This node's shards (writes of new encodings, durability).
    local: LocalShards,
    /// Where reads get shards (the local disk, for now).
    source: Arc<dyn ShardSource>,
    cache: ChunkCache,
    cfg: ChunkConfig,
    /// (k, m) of new encodings: `cfg.shard_params` until the node changes
    /// it ([`Chunks::set_shard_params`]), as k << 16 | m.
    params: std::sync::atomic::AtomicU32,
    stats: Counters,
    /// Chunks being decoded ahead of readers (no chunk twice at once).
    prefetching: Mutex<HashSet<ChunkId>>,
    /// Signalled when a prefetch ends, for readers waiting on it.
    prefetched: Condvar,
    /// Chunk files a repair wrote for a record deleted meanwhile: the
    /// filesystem deletes them like any unreferenced file (once the batch
    /// that deleted the record is durable).
    orphans: Mutex<Vec<FileId>>,
}

impl Plane {
    fn shard_params(&self) -> ShardParams {
        let v = self.params.load(std::sync::atomic::Ordering::Relaxed);
        let (k, m) = ((v >> 16) as u16, (v & 0xffff) as u16);
        ShardParams::new(k, m).unwrap_or(self.cfg.shard_params)
    }
}

/// See the module documentation.
pub struct Chunks {
    plane: Arc<Plane>,
    /// Reads the shards of chunks decoded ahead of sequential readers, and
    /// queues their decode on `pool` (declared first: dropped, so drained,
    /// before it).
    fetch: Pool,
    /// Encodes chunks off the FUSE threads (and decodes read-ahead).
    pool: Arc<Pool>,
    /// Makes new chunk files durable before their results are delivered
    /// (declared after `pool`, whose jobs feed it: dropped, so drained,
    /// after it).
    syncer: Arc<Pool>,
}

impl Chunks {
    /// The chunk layer over the index `kv` and the chunk files `files`.
    pub fn new(kv: Arc<dyn Kv>, files: Arc<dyn ChunkStore>, ces: Ces, cfg: ChunkConfig) -> Chunks {
        Chunks::with_source(kv, files, ces, cfg, |local| Arc::new(local))
    }

    /// Where reads get shards (the local disk, then peers when online).
    pub fn source(&self) -> &Arc<dyn ShardSource> {
        &self.plane.source
    }

    /// Is chunk `id`'s plaintext in the cache (read lately)?
    pub fn is_cached(&self, id: &ChunkId) -> bool {
        self.plane.cache.contains(id.as_bytes())
    }

    /// (k, m) for new encodings from now on (existing chunks keep theirs).
    pub fn set_shard_params(&self, p: ShardParams) {
        self.plane.params.store(
            u32::from(p.k()) << 16 | u32::from(p.m()),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// (k, m) of new encodings.
    pub fn shard_params(&self) -> ShardParams {
        self.plane.shard_params()
    }

    /// `new`, reading shards through the source `source` makes from the
    /// local one (e.g. the local disk first, then peers). New encodings and
    /// repairs are still written to the local disk.
    pub fn with_source(
        kv: Arc<dyn Kv>,
        files: Arc<dyn ChunkStore>,
        ces: Ces,
        cfg: ChunkConfig,
        source: impl FnOnce(LocalShards) -> Arc<dyn ShardSource>,
    ) -> Chunks {
        let local = LocalShards::new(kv.clone(), files);
        let plane = Arc::new(Plane {
            ces,
            table: ChunkTable::new(kv),
            source: source(local.clone()),
            local,
            cache: ChunkCache::new(cfg.cache_capacity, cfg.cache_ttl),
            params: std::sync::atomic::AtomicU32::new(
                u32::from(cfg.shard_params.k()) << 16 | u32::from(cfg.shard_params.m()),
            ),
            cfg,
            stats: Counters::default(),
            prefetching: Mutex::new(HashSet::new()),
            prefetched: Condvar::new(),
            orphans: Mutex::new(Vec::new()),
        });
        // One thread per core. One more would fill the waits for chunk file
        // reads, but the chunks decoded ahead then share the cores and the
        // next one a reader needs comes later: the benchmark read at 1.00×
        // gocryptfs with it, 1.45× without (docs/PERFORMANCE.md).
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Chunks {
            plane,
            fetch: Pool::named("fetch", FETCH_THREADS, FETCH_QUEUE, false),
            pool: Arc::new(Pool::new(threads, ENCODE_QUEUE)),
            syncer: Arc::new(Pool::named("sync", SYNC_THREADS, SYNC_QUEUE, false)),
        }
    }

    /// The chunk records.
    pub fn table(&self) -> &ChunkTable {
        &self.plane.table
    }

    /// This node's shards on its disk.
    pub fn local(&self) -> &LocalShards {
        &self.plane.local
    }

    /// The CES instance (chunk ids of plaintext).
    pub fn ces(&self) -> &Ces {
        &self.plane.ces
    }

    /// The counters so far.
    pub fn stats(&self) -> ChunkStats {
        let s = &self.plane.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ChunkStats {
            encoded: g(&s.encoded),
            deduped: g(&s.deduped),
            decoded: g(&s.decoded),
            repaired: g(&s.repaired),
            lost: g(&s.lost),
            deleted: g(&s.deleted),
        }
    }

    /// Read-cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.plane.cache.stats()
    }

    /// Empties the read cache.
    pub fn drop_cache(&self) {
        self.plane.cache.clear();
    }

    /// Caches the plaintext of a chunk just written (likely read soon).
    pub fn cache_written(&self, id: ChunkId, plain: Plain) {
        self.plane.cache.insert(id.0, plain);
    }

    /// Chunk `id` was deleted (its last reference went): drops it from the
    /// cache and counts it.
    pub fn deleted(&self, id: &ChunkId) {
        self.plane.cache.remove(id.as_bytes());
        bump(&self.plane.stats.deleted, 1);
    }

    /// Chunk files written by repairs of records deleted meanwhile (see
    /// `Plane::orphans`), to delete like any unreferenced one.
    pub fn take_orphans(&self) -> Vec<FileId> {
        std::mem::take(&mut *self.plane.orphans.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Deletes chunk file `file` now (it must be unreferenced by any
    /// durable batch).
    pub fn delete_file(&self, file: &FileId) -> ChunkResult<bool> {
        Ok(self.plane.local.files().delete(file.as_bytes())?)
    }
}
