//! The read cache: plaintext chunks by chunk id, in a moka cache weighted by
//! bytes, whose entries live `ttl` after their last read (every hit extends
//! the TTL). Counters for hits, misses and bytes feed `pangea status`.
//!
//! May not: know about files, the index or shards. Invariant: an entry is the
//! exact plaintext of its chunk id (ids are content hashes, so entries never
//! go stale; deletes only free memory early).
//!
//! Buffers of evicted entries are kept in a small pool (`take_buffer`) for
//! the next decode, so a streaming reader does not fault in and zero fresh
//! pages for every chunk: the pool holds at most `POOL_BUFFERS` buffers, and
//! only those no reader still holds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

/// Default capacity: 256 MiB of plaintext.
pub const DEFAULT_CAPACITY: u64 = 256 << 20;
/// Default time an entry lives after its last read.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// A chunk's plaintext, shared between the cache and readers.
pub type Plain = Arc<Vec<u8>>;

/// Buffers of evicted entries kept for reuse (each up to a chunk's size).
const POOL_BUFFERS: usize = 4;
/// Buffers smaller than this are not worth keeping.
const POOL_MIN_CAPACITY: usize = 256 << 10;

struct RefreshOnRead(Duration);

impl Expiry<[u8; 32], Plain> for RefreshOnRead {
    fn expire_after_create(&self, _k: &[u8; 32], _v: &Plain, _now: Instant) -> Option<Duration> {
        Some(self.0)
    }

    fn expire_after_read(
        &self,
        _k: &[u8; 32],
        _v: &Plain,
        _read_at: Instant,
        _remaining: Option<Duration>,
        _last_modified: Instant,
    ) -> Option<Duration> {
        Some(self.0)
    }
}

/// Counters (monotonic).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub hit_bytes: u64,
    pub inserted_bytes: u64,
    /// Bytes held now (approximate until moka's housekeeping ran).
    pub weighted_size: u64,
    pub entries: u64,
    /// Buffers handed out by `take_buffer` from the pool / freshly allocated.
    pub buffers_reused: u64,
    pub buffers_allocated: u64,
}

/// Evicted entries' buffers, for the next decode. An entry is kept as it
/// was evicted (shared: moka and readers may still hold it) and handed out
/// once this pool holds its only reference.
#[derive(Default)]
struct BufferPool {
    free: Mutex<VecDeque<Plain>>,
}

impl BufferPool {
    fn put(&self, buf: Plain) {
        if buf.capacity() < POOL_MIN_CAPACITY {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push_back(buf);
        if free.len() > POOL_BUFFERS {
            free.pop_front(); // the oldest goes back to the allocator
        }
    }

    fn take(&self, capacity: usize) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let i = free
            .iter()
            .position(|b| b.capacity() >= capacity && Arc::strong_count(b) == 1)?;
        // The pool holds the only reference (no weak ones exist), so this
        // always succeeds.
        Arc::try_unwrap(free.remove(i)?).ok()
    }
}

/// The chunk cache.
pub struct ChunkCache {
    cache: Cache<[u8; 32], Plain>,
    pool: Arc<BufferPool>,
    reused: AtomicU64,
    allocated: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    hit_bytes: AtomicU64,
    inserted_bytes: AtomicU64,
}

impl ChunkCache {
    /// A cache of at most `capacity` bytes whose entries expire `ttl` after
    /// their last read.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let pool = Arc::new(BufferPool::default());
        let recycle = pool.clone();
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_k: &[u8; 32], v: &Plain| u32::try_from(v.len()).unwrap_or(u32::MAX).max(1))
            .expire_after(RefreshOnRead(ttl))
            // Plain LRU: every decoded chunk is admitted. Under moka's
            // default (TinyLFU) a chunk decoded ahead of a sequential reader
            // loses admission to the older chunks already read several
            // times, and the reader decodes it again.
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |_k, v: Plain, _cause| recycle.put(v))
            .build();
        ChunkCache {
            cache,
            pool,
            reused: AtomicU64::new(0),
            allocated: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hit_bytes: AtomicU64::new(0),
            inserted_bytes: AtomicU64::new(0),
        }
    }

    /// The plaintext of `id`, if cached (extends its TTL).
    pub fn get(&self, id: &[u8; 32]) -> Option<Plain> {
        match self.cache.get(id) {
            Some(v) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.hit_bytes.fetch_add(v.len() as u64, Ordering::Relaxed);
                Some(v)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Is `id` cached? (Does not count as a read.)
    pub fn contains(&self, id: &[u8; 32]) -> bool {
        self.cache.contains_key(id)
    }

    pub fn insert(&self, id: [u8; 32], plain: Plain) {
        self.inserted_bytes
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        let large = plain.len() >= POOL_MIN_CAPACITY;
        self.cache.insert(id, plain);
        if large {
            // Evict now rather than at moka's next housekeeping, which may
            // come dozens of chunk-sized inserts later: memory stays at
            // capacity, and the evicted buffers reach the pool while it can
            // use them.
            self.cache.run_pending_tasks();
        }
    }

    pub fn remove(&self, id: &[u8; 32]) {
        self.cache.invalidate(id);
    }

    /// A buffer with room for at least `capacity` bytes and unspecified
    /// contents: an evicted entry's buffer when one is free (its pages
    /// already faulted in; it still holds that entry's bytes, for callers
    /// that overwrite without zeroing first), else a new, empty one.
    pub fn take_buffer(&self, capacity: usize) -> Vec<u8> {
        match self.pool.take(capacity) {
            Some(b) => {
                self.reused.fetch_add(1, Ordering::Relaxed);
                b
            }
            None => {
                self.allocated.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(capacity)
            }
        }
    }

    /// Empties the cache (counters are kept).
    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }

    pub fn stats(&self) -> CacheStats {
        self.cache.run_pending_tasks();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            hit_bytes: self.hit_bytes.load(Ordering::Relaxed),
            inserted_bytes: self.inserted_bytes.load(Ordering::Relaxed),
            weighted_size: self.cache.weighted_size(),
            entries: self.cache.entry_count(),
            buffers_reused: self.reused.load(Ordering::Relaxed),
            buffers_allocated: self.allocated.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hits_and_misses_and_bounds_bytes() {
        let c = ChunkCache::new(1000, Duration::from_secs(60));
        assert!(c.get(&[1; 32]).is_none());
        c.insert([1; 32], Arc::new(vec![0; 400]));
        assert_eq!(c.get(&[1; 32]).map(|v| v.len()), Some(400));
        for i in 2..10u8 {
            c.insert([i; 32], Arc::new(vec![0; 400]));
        }
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.hit_bytes), (1, 1, 400));
        assert!(s.weighted_size <= 1000, "{s:?}");
    }

    #[test]
    fn a_new_entry_is_admitted_over_entries_read_often() {
        // A chunk decoded ahead of a sequential reader must stay cached
        // even when every cached chunk was read several times (moka's
        // TinyLFU would reject it).
        let c = ChunkCache::new(4 << 20, Duration::from_secs(60));
        for i in 0..4u8 {
            c.insert([i; 32], Arc::new(vec![i; 1 << 20]));
            for _ in 0..8 {
                assert!(c.get(&[i; 32]).is_some());
            }
        }
        c.insert([9; 32], Arc::new(vec![9; 1 << 20]));
        assert!(c.contains(&[9; 32]), "the new entry was not admitted");
        assert!(
            !c.contains(&[0; 32]),
            "the least recently used entry stayed"
        );
        assert!(c.stats().weighted_size <= 4 << 20);
    }

    #[test]
    fn evicted_buffers_are_reused_once_no_reader_holds_them() {
        let c = ChunkCache::new(2 << 20, Duration::from_secs(60));
        c.insert([1; 32], Arc::new(vec![1; 1 << 20]));
        let held = c.get(&[1; 32]).unwrap();
        c.insert([2; 32], Arc::new(vec![2; 1 << 20]));
        c.insert([3; 32], Arc::new(vec![3; 1 << 20])); // evicts [1]
        assert!(!c.contains(&[1; 32]));
        // A reader still holds [1]: its buffer is not handed out.
        let fresh = c.take_buffer(1 << 20);
        assert!(fresh.capacity() >= 1 << 20);
        assert_ne!(fresh.as_ptr(), held.as_ptr());
        let s = c.stats();
        assert_eq!((s.buffers_reused, s.buffers_allocated), (0, 1));
        let ptr = held.as_ptr();
        drop(held);
        // moka drops its own reference to an evicted value through an
        // epoch-based collector, which other threads (other tests) can
        // delay: wait until the pool holds the only one.
        let deadline = Instant::now() + Duration::from_secs(10);
        let free_now = |c: &ChunkCache| {
            let free = c.pool.free.lock().unwrap_or_else(|p| p.into_inner());
            free.iter()
                .any(|b| b.as_ptr() == ptr && Arc::strong_count(b) == 1)
        };
        while !free_now(&c) && Instant::now() < deadline {
            for _ in 0..64 {
                c.contains(&[7; 32]); // pins the epoch, which lets it advance
            }
            c.cache.run_pending_tasks();
            std::thread::sleep(Duration::from_millis(1));
        }
        let reused = c.take_buffer(1 << 20);
        assert_eq!(reused.as_ptr(), ptr, "the released buffer was not reused");
        assert_eq!(c.stats().buffers_reused, 1);
        // Small requests may take it too; larger ones get a new buffer.
        assert!(c.take_buffer(4 << 20).capacity() >= 4 << 20);
    }

    #[test]
    fn reads_extend_the_ttl() {
        // A TTL well above the read interval: a loaded CI machine may stall
        // this thread for a few hundred milliseconds.
        let c = ChunkCache::new(1 << 20, Duration::from_millis(1500));
        c.insert([1; 32], Arc::new(vec![1; 10]));
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(400));
            assert!(
                c.get(&[1; 32]).is_some(),
                "entry expired although read every 400 ms"
            );
        }
        std::thread::sleep(Duration::from_millis(2000));
        assert!(c.get(&[1; 32]).is_none(), "entry outlived its TTL");
    }
}
