//! The read cache: plaintext chunks by chunk id, in a moka cache weighted by
//! bytes, whose entries live `ttl` after their last read (every hit extends
//! the TTL). Counters for hits, misses and bytes feed `pangea status`.
//!
//! May not: know about files, the index or shards. Invariant: an entry is the
//! exact plaintext of its chunk id (ids are content hashes, so entries never
//! go stale; deletes only free memory early).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

/// Default capacity: 256 MiB of plaintext.
pub const DEFAULT_CAPACITY: u64 = 256 << 20;
/// Default time an entry lives after its last read.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// A chunk's plaintext, shared between the cache and readers.
pub type Plain = Arc<Vec<u8>>;

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
}

/// The chunk cache.
pub struct ChunkCache {
    cache: Cache<[u8; 32], Plain>,
    hits: AtomicU64,
    misses: AtomicU64,
    hit_bytes: AtomicU64,
    inserted_bytes: AtomicU64,
}

impl ChunkCache {
    /// A cache of at most `capacity` bytes whose entries expire `ttl` after
    /// their last read.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_k: &[u8; 32], v: &Plain| u32::try_from(v.len()).unwrap_or(u32::MAX).max(1))
            .expire_after(RefreshOnRead(ttl))
            .build();
        ChunkCache {
            cache,
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
        self.cache.insert(id, plain);
    }

    pub fn remove(&self, id: &[u8; 32]) {
        self.cache.invalidate(id);
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
    fn reads_extend_the_ttl() {
        let c = ChunkCache::new(1 << 20, Duration::from_millis(300));
        c.insert([1; 32], Arc::new(vec![1; 10]));
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                c.get(&[1; 32]).is_some(),
                "entry expired although read every 100 ms"
            );
        }
        std::thread::sleep(Duration::from_millis(450));
        assert!(c.get(&[1; 32]).is_none(), "entry outlived its TTL");
    }
}
