//! [`MemKv`]: the [`Kv`] contract in memory, for fast tests of the layers
//! above. Same semantics as [`super::RocksKv`] (the conformance suite runs
//! against both), no durability: [`Kv::sync`] does nothing.
//!
//! Owns: one ordered map per column family behind one lock, so a batch that
//! spans column families is atomic.
//!
//! May not: touch the disk.
//!
//! Invariants: each map is behind an `Arc`. A scan clones the `Arc` (its
//! snapshot) and releases the lock before visiting, so `visit` may write; a
//! write while a scan holds a snapshot copies that column family's map
//! (copy-on-write), which is fine for test-sized data.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Batch, Cf, Kv, Op, StoreError, scan_from};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory [`Kv`].
#[derive(Debug, Default)]
pub struct MemKv {
    /// One map per column family, indexed by [`Cf::index`]. One lock for all
    /// of them makes a batch atomic across column families.
    maps: Mutex<[Arc<Map>; Cf::ALL.len()]>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        MemKv::default()
    }

    /// A copy of the store as it is now (copy-on-write: cheap until either
    /// side writes).
    pub fn snapshot(&self) -> MemKv {
        MemKv {
            maps: Mutex::new(self.lock().clone()),
        }
    }

    /// The number of entries in `cf`.
    pub fn len(&self, cf: Cf) -> usize {
        self.lock()[cf.index()].len()
    }

    /// True when `cf` holds no entry.
    pub fn is_empty(&self, cf: Cf) -> bool {
        self.len(cf) == 0
    }

    /// The lock, recovered if a panicking thread poisoned it: every mutation
    /// happens on plain maps and completes before the guard drops, so the
    /// maps are consistent even then.
    fn lock(&self) -> MutexGuard<'_, [Arc<Map>; Cf::ALL.len()]> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Kv for MemKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()[cf.index()].get(key).cloned())
    }

    fn write(&self, batch: Batch, _sync: bool) -> Result<(), StoreError> {
        let mut maps = self.lock();
        for op in batch.ops {
            match op {
                Op::Put { cf, key, value } => {
                    Arc::make_mut(&mut maps[cf.index()]).insert(key, value);
                }
                Op::Delete { cf, key } => {
                    let map = &mut maps[cf.index()];
                    if map.contains_key(&key) {
                        Arc::make_mut(map).remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let snapshot = Arc::clone(&self.lock()[cf.index()]);
        let from = scan_from(prefix, start);
        for (k, v) in snapshot.range::<[u8], _>((Bound::Included(from), Bound::Unbounded)) {
            if !k.starts_with(prefix) || !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
