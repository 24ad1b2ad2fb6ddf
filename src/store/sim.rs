//! A simulated disk under both halves of the local store, for power-loss
//! tests: [`SimKv`] (the index) and [`SimChunks`] (chunk files) share one
//! [`SimDisk`], which remembers what was made durable and what was not.
//!
//! At a power cut ([`SimDisk::power_cut`], or armed at the N-th mutating
//! call with [`SimDisk::crash_at`]) the disk computes, from a seeded RNG,
//! what a real disk could hold afterwards:
//! * the index keeps every synced batch and a random prefix of the unsynced
//!   ones (RocksDB's WAL is a log: recovery stops at the first torn record,
//!   so a torn batch is a dropped one);
//! * each chunk file whose last change was not made durable comes back as
//!   it was before that change, as it is now, or torn (a prefix of its new
//!   bytes, or its new length with a zeroed tail), following the POSIX
//!   rules: file data is durable after fsync/fdatasync of the file, a new
//!   or removed name after fsync of its directory.
//!
//! After the cut every mutating call fails with EIO (the process is gone;
//! its threads may still run). [`SimDisk::restart`] gives the disk as the
//! next boot finds it. The same seed and the same sequence of calls give
//! the same outcome.
//!
//! A fault can also be injected without a power cut ([`SimDisk::fail_at`]):
//! the N-th mutating call fails with ENOSPC and changes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Batch, Cf, ChunkStore, DiskUsage, Kv, MemKv, StoreError};

/// SplitMix64: a tiny seeded generator (the tests need replayable, not
/// strong, randomness).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// One chunk file as the disk knows it.
#[derive(Debug, Clone)]
struct SimFile {
    /// What the running process sees (None: deleted).
    live: Option<Vec<u8>>,
    /// What a power cut falls back to when the change since is lost.
    stable: Option<Vec<u8>>,
    /// `live`'s bytes are on the disk (fsync or fdatasync).
    data_synced: bool,
    /// `live`'s existence (its name, or its removal) is on the disk.
    name_synced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    PowerCut,
    NoSpace,
}

#[derive(Debug)]
struct DiskState {
    /// The index as a power cut right now would at least keep.
    durable: MemKv,
    /// Batches written since the last sync, in order.
    unsynced: Vec<Batch>,
    files: BTreeMap<[u8; 32], SimFile>,
    /// Mutating calls so far.
    calls: u64,
    /// A fault armed at a call number.
    armed: Option<(u64, Fault)>,
    off: bool,
    rng: Rng,
    /// The disk as the next boot finds it (set at the power cut).
    after: Option<(MemKv, BTreeMap<[u8; 32], SimFile>)>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<DiskState>,
    /// What the running process reads (the index with every write).
    live: MemKv,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one mutating call; fails it if the power is off, cuts the
    /// power or injects ENOSPC if armed for this call.
    fn begin(&self, st: &mut DiskState) -> Result<(), StoreError> {
        if st.off {
            return Err(powered_off());
        }
        let n = st.calls;
        st.calls += 1;
        match st.armed {
            Some((at, Fault::PowerCut)) if at == n => {
                cut(st);
                Err(powered_off())
            }
            Some((at, Fault::NoSpace)) if at == n => {
                st.armed = None;
                Err(StoreError::NoSpace)
            }
            _ => Ok(()),
        }
    }
}

fn powered_off() -> StoreError {
    StoreError::Io(std::io::Error::from_raw_os_error(libc::EIO))
}

/// What the disk holds after a power cut now.
fn cut(st: &mut DiskState) {
    st.off = true;
    let kv = st.durable.snapshot();
    let keep = st.rng.below(st.unsynced.len() as u64 + 1) as usize;
    for b in st.unsynced.iter().take(keep) {
        let _ = kv.write(b.clone(), false);
    }
    let mut files = BTreeMap::new();
    for (id, f) in &st.files {
        let torn = |rng: &mut Rng, bytes: &Vec<u8>| {
            let at = rng.below(bytes.len() as u64 + 1) as usize;
            let mut t = bytes[..at].to_vec();
            if rng.chance(1, 2) {
                t.resize(bytes.len(), 0);
            }
            t
        };
        let outcome = match (f.name_synced, f.data_synced) {
            (true, true) => f.live.clone(),
            (true, false) => match &f.live {
                Some(b) if st.rng.chance(1, 2) => Some(torn(&mut st.rng, b)),
                other => other.clone(),
            },
            (false, true) => {
                if st.rng.chance(1, 2) {
                    f.stable.clone()
                } else {
                    f.live.clone()
                }
            }
            (false, false) => match (st.rng.below(3), &f.live) {
                (0, _) => f.stable.clone(),
                (1, Some(b)) => Some(torn(&mut st.rng, b)),
                _ => f.live.clone(),
            },
        };
        if let Some(bytes) = outcome {
            files.insert(
                *id,
                SimFile {
                    live: Some(bytes.clone()),
                    stable: Some(bytes),
                    data_synced: true,
                    name_synced: true,
                },
            );
        }
    }
    st.after = Some((kv, files));
}

/// A simulated disk holding an index and chunk files.
#[derive(Debug, Clone)]
pub struct SimDisk {
    shared: Arc<Shared>,
}

impl SimDisk {
    /// An empty disk whose power cuts are drawn from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        Self::with(MemKv::new(), BTreeMap::new(), seed)
    }

    fn with(kv: MemKv, files: BTreeMap<[u8; 32], SimFile>, seed: u64) -> SimDisk {
        SimDisk {
            shared: Arc::new(Shared {
                live: kv.snapshot(),
                state: Mutex::new(DiskState {
                    durable: kv,
                    unsynced: Vec::new(),
                    files,
                    calls: 0,
                    armed: None,
                    off: false,
                    rng: Rng::new(seed),
                    after: None,
                }),
            }),
        }
    }

    /// The index on this disk.
    pub fn kv(&self) -> Arc<SimKv> {
        Arc::new(SimKv {
            shared: self.shared.clone(),
        })
    }

    /// The chunk files on this disk.
    pub fn chunks(&self) -> Arc<SimChunks> {
        Arc::new(SimChunks {
            shared: self.shared.clone(),
        })
    }

    /// Mutating calls (index writes and syncs, chunk file writes, syncs and
    /// deletions) made so far.
    pub fn calls(&self) -> u64 {
        self.shared.lock().calls
    }

    /// Cuts the power at mutating call number `n` (0-based, counted from
    /// the disk's start): that call and every later one fail.
    pub fn crash_at(&self, n: u64) {
        self.shared.lock().armed = Some((n, Fault::PowerCut));
    }

    /// Fails mutating call number `n` with ENOSPC, changing nothing.
    pub fn fail_at(&self, n: u64) {
        self.shared.lock().armed = Some((n, Fault::NoSpace));
    }

    /// Drops an armed cut or fault that has not happened yet.
    pub fn disarm(&self) {
        self.shared.lock().armed = None;
    }

    /// Cuts the power now (no-op if it is already off).
    pub fn power_cut(&self) {
        let mut st = self.shared.lock();
        if !st.off {
            cut(&mut st);
        }
    }

    /// Whether the power is off.
    pub fn is_off(&self) -> bool {
        self.shared.lock().off
    }

    /// The disk as the next boot finds it: the state a power cut left (one
    /// is made now if the power is still on). `seed` draws the next cut.
    pub fn restart(&self, seed: u64) -> SimDisk {
        self.power_cut();
        let (kv, files) = match &self.shared.lock().after {
            Some((kv, files)) => (kv.snapshot(), files.clone()),
            None => (MemKv::new(), BTreeMap::new()),
        };
        Self::with(kv, files, seed)
    }
}

/// The index half of a [`SimDisk`].
#[derive(Debug)]
pub struct SimKv {
    shared: Arc<Shared>,
}

impl Kv for SimKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.live.get(cf, key)
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        let mut st = self.shared.lock();
        self.shared.begin(&mut st)?;
        self.shared.live.write(batch.clone(), false)?;
        st.unsynced.push(batch);
        if sync {
            sync_index(&mut st);
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
        self.shared.live.scan(cf, prefix, start, visit)
    }

    fn sync(&self) -> Result<(), StoreError> {
        let mut st = self.shared.lock();
        self.shared.begin(&mut st)?;
        sync_index(&mut st);
        Ok(())
    }
}

fn sync_index(st: &mut DiskState) {
    for b in std::mem::take(&mut st.unsynced) {
        let _ = st.durable.write(b, false);
    }
}

/// The chunk-file half of a [`SimDisk`].
#[derive(Debug)]
pub struct SimChunks {
    shared: Arc<Shared>,
}

impl SimChunks {
    /// Replaces the bytes of an existing file behind the store's back, as
    /// bit rot would (durably). False if there is no such file.
    pub fn damage(&self, id: &[u8; 32], f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut st = self.shared.lock();
        let Some(file) = st.files.get_mut(id) else {
            return false;
        };
        let Some(live) = &mut file.live else {
            return false;
        };
        f(live);
        file.stable = file.live.clone();
        file.data_synced = true;
        file.name_synced = true;
        true
    }
}

/// Files in the same directory as `id` (ChunkFiles' `ab/` subdirectories).
fn same_dir(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a[0] == b[0]
}

impl ChunkStore for SimChunks {
    fn write(&self, id: &[u8; 32], bytes: &[u8], sync: bool) -> Result<(), StoreError> {
        let mut st = self.shared.lock();
        self.shared.begin(&mut st)?;
        let f = st.files.entry(*id).or_insert(SimFile {
            live: None,
            stable: None,
            data_synced: true,
            name_synced: true,
        });
        f.live = Some(bytes.to_vec());
        if sync {
            // fdatasync of the temp file, rename, fsync of the directory.
            f.data_synced = true;
            f.name_synced = true;
            f.stable = f.live.clone();
            let stable: Vec<[u8; 32]> = st.files.keys().copied().collect();
            sync_names(&mut st, id, &stable);
        } else {
            f.data_synced = false;
            f.name_synced = false;
        }
        Ok(())
    }

    fn read_prefix_at(
        &self,
        id: &[u8; 32],
        len: usize,
        mut buf: Vec<u8>,
    ) -> Result<Option<(Vec<u8>, usize)>, StoreError> {
        let st = self.shared.lock();
        match st.files.get(id).and_then(|f| f.live.as_ref()) {
            Some(bytes) => {
                buf.clear();
                buf.extend_from_slice(&bytes[..len.min(bytes.len())]);
                Ok(Some((buf, 0)))
            }
            None => Ok(None),
        }
    }

    fn read_all(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let st = self.shared.lock();
        Ok(st.files.get(id).and_then(|f| f.live.clone()))
    }

    fn delete(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        let mut st = self.shared.lock();
        self.shared.begin(&mut st)?;
        match st.files.get_mut(id) {
            Some(f) if f.live.is_some() => {
                f.live = None;
                f.name_synced = false;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn sync(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        let mut st = self.shared.lock();
        self.shared.begin(&mut st)?;
        match st.files.get_mut(id) {
            Some(f) if f.live.is_some() => {
                f.data_synced = true;
                let ids: Vec<[u8; 32]> = st.files.keys().copied().collect();
                sync_names(&mut st, id, &ids);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn sync_dir(&self, id: &[u8; 32]) -> Result<(), StoreError> {
        let mut st = self.shared.lock();
        self.shared.begin(&mut st)?;
        let ids: Vec<[u8; 32]> = st.files.keys().copied().collect();
        sync_names(&mut st, id, &ids);
        Ok(())
    }

    fn visit(&self, visit: &mut dyn FnMut(&[u8; 32], u64) -> bool) -> Result<(), StoreError> {
        let listed: Vec<([u8; 32], u64)> = {
            let st = self.shared.lock();
            st.files
                .iter()
                .filter_map(|(id, f)| f.live.as_ref().map(|b| (*id, b.len() as u64)))
                .collect()
        };
        for (id, len) in listed {
            if !visit(&id, len) {
                break;
            }
        }
        Ok(())
    }

    fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        Ok(DiskUsage {
            block_size: 4096,
            fragment_size: 4096,
            total_bytes: 1 << 40,
            free_bytes: 1 << 39,
            available_bytes: 1 << 39,
            total_inodes: 1 << 30,
            free_inodes: 1 << 29,
            available_inodes: 1 << 29,
            name_max: 255,
        })
    }
}

/// fsync of the directory holding `dir_of`: the names (and removals) of
/// every file in it are durable; files whose data is durable too become
/// stable.
fn sync_names(st: &mut DiskState, dir_of: &[u8; 32], ids: &[[u8; 32]]) {
    for id in ids.iter().filter(|id| same_dir(id, dir_of)) {
        let Some(f) = st.files.get_mut(id) else {
            continue;
        };
        f.name_synced = true;
        if f.live.is_none() {
            st.files.remove(id);
        } else if f.data_synced {
            f.stable = f.live.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn synced_writes_survive_every_cut_and_unsynced_ones_only_some() {
        let mut kept_unsynced = 0;
        let mut lost_unsynced = 0;
        for seed in 0..64 {
            let disk = SimDisk::new(seed);
            let kv = disk.kv();
            let chunks = disk.chunks();
            let mut b = Batch::new();
            b.put(Cf::Meta, b"a", b"1");
            kv.write(b, true).unwrap();
            chunks.write(&id(1), b"durable", true).unwrap();
            let mut b = Batch::new();
            b.put(Cf::Meta, b"b", b"2");
            kv.write(b, false).unwrap();
            chunks.write(&id(2), b"volatile", false).unwrap();
            let after = disk.restart(seed);
            let (kv, chunks) = (after.kv(), after.chunks());
            assert_eq!(kv.get(Cf::Meta, b"a").unwrap().as_deref(), Some(&b"1"[..]));
            assert_eq!(
                chunks.read_all(&id(1)).unwrap().as_deref(),
                Some(&b"durable"[..])
            );
            match kv.get(Cf::Meta, b"b").unwrap() {
                Some(_) => kept_unsynced += 1,
                None => lost_unsynced += 1,
            }
            if let Some(bytes) = chunks.read_all(&id(2)).unwrap() {
                assert!(
                    b"volatile".starts_with(&bytes) || bytes.len() == 8,
                    "{bytes:?}"
                );
            }
        }
        assert!(kept_unsynced > 0 && lost_unsynced > 0);
    }

    #[test]
    fn the_index_keeps_a_prefix_of_unsynced_batches() {
        for seed in 0..64 {
            let disk = SimDisk::new(seed);
            let kv = disk.kv();
            for i in 0u8..8 {
                let mut b = Batch::new();
                b.put(Cf::Meta, &[i], &[i]);
                kv.write(b, false).unwrap();
            }
            let kv = disk.restart(seed).kv();
            let present: Vec<bool> = (0u8..8)
                .map(|i| kv.get(Cf::Meta, &[i]).unwrap().is_some())
                .collect();
            let n = present.iter().filter(|p| **p).count();
            assert!(present[..n].iter().all(|p| *p), "not a prefix: {present:?}");
        }
    }

    #[test]
    fn a_deletion_is_durable_only_after_the_directory_sync() {
        let mut came_back = 0;
        for seed in 0..32 {
            let disk = SimDisk::new(seed);
            let chunks = disk.chunks();
            chunks.write(&id(3), b"x", true).unwrap();
            chunks.delete(&id(3)).unwrap();
            if disk
                .restart(seed)
                .chunks()
                .read_all(&id(3))
                .unwrap()
                .is_some()
            {
                came_back += 1;
            }
            let disk = SimDisk::new(seed);
            let chunks = disk.chunks();
            chunks.write(&id(3), b"x", true).unwrap();
            chunks.delete(&id(3)).unwrap();
            chunks.sync_dir(&id(3)).unwrap();
            assert!(
                disk.restart(seed)
                    .chunks()
                    .read_all(&id(3))
                    .unwrap()
                    .is_none()
            );
        }
        assert!(came_back > 0);
    }

    #[test]
    fn an_armed_cut_fails_that_call_and_every_later_one() {
        let disk = SimDisk::new(7);
        let kv = disk.kv();
        disk.crash_at(1);
        kv.write(Batch::new(), false).unwrap();
        assert!(kv.write(Batch::new(), false).is_err());
        assert!(disk.is_off());
        assert!(disk.chunks().write(&id(1), b"", true).is_err());
        let disk = SimDisk::new(7);
        disk.fail_at(0);
        let e = disk.kv().write(Batch::new(), false).unwrap_err();
        assert!(e.is_no_space());
        assert!(!disk.is_off());
        disk.kv().write(Batch::new(), false).unwrap();
    }
}
