//! A file's write buffers, and the accounting of their bytes in one place.

use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slot index → the slot's full plaintext as it should become.
///
/// Every byte added or removed here is counted in the file's own total and
/// in the total across all files (the memory budget writers check against
/// `FsConfig::dirty_limit`). A slot handed to the encoder leaves this file's
/// buffers but stays in the shared total until its job settles.
pub(super) struct Buffers {
    /// The buffered slots.
    slots: BTreeMap<u64, Vec<u8>>,
    /// Bytes in `slots`.
    bytes: usize,
    /// Bytes buffered or being encoded across all files (`Fs::dirty_total`).
    total: Arc<AtomicU64>,
}

impl Buffers {
    pub(super) fn new(total: Arc<AtomicU64>) -> Buffers {
        Buffers {
            slots: BTreeMap::new(),
            bytes: 0,
            total,
        }
    }

    fn add(&mut self, n: usize) {
        self.bytes += n;
        self.total.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn sub(&mut self, n: usize) {
        self.bytes -= n;
        self.total.fetch_sub(n as u64, Ordering::Relaxed);
    }

    /// Bytes buffered across all files.
    pub(super) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(super) fn get(&self, index: u64) -> Option<&Vec<u8>> {
        self.slots.get(&index)
    }

    pub(super) fn contains(&self, index: u64) -> bool {
        self.slots.contains_key(&index)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The buffered slots' indices, in order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &u64> {
        self.slots.keys()
    }

    /// The buffered slots' indices in `range`.
    pub(super) fn keys_in(&self, range: impl RangeBounds<u64>) -> Vec<u64> {
        self.slots.range(range).map(|(k, _)| *k).collect()
    }

    /// Buffers `buf` as slot `index` (replacing any buffer of it).
    pub(super) fn insert(&mut self, index: u64, buf: Vec<u8>) {
        self.remove(index);
        self.add(buf.len());
        self.slots.insert(index, buf);
    }

    /// Takes slot `index` out of the buffers.
    pub(super) fn remove(&mut self, index: u64) -> Option<Vec<u8>> {
        let buf = self.slots.remove(&index)?;
        self.sub(buf.len());
        Some(buf)
    }

    /// Drops the slots in `range`.
    pub(super) fn remove_range(&mut self, range: impl RangeBounds<u64>) {
        for k in self.keys_in(range) {
            self.remove(k);
        }
    }

    /// Takes every slot out of the buffers.
    pub(super) fn take_all(&mut self) -> BTreeMap<u64, Vec<u8>> {
        let all = std::mem::take(&mut self.slots);
        let n = self.bytes;
        self.sub(n);
        all
    }

    /// Writes `data` at `within` into buffered slot `index` (zeros fill any
    /// gap); returns the slot's new length. False-free: the slot must be
    /// buffered (None otherwise).
    pub(super) fn write(&mut self, index: u64, within: usize, data: &[u8]) -> Option<usize> {
        let buf = self.slots.get_mut(&index)?;
        let before = buf.len();
        if buf.len() < within + data.len() {
            buf.resize(within + data.len(), 0);
        }
        buf[within..within + data.len()].copy_from_slice(data);
        let len = buf.len();
        self.add(len - before);
        Some(len)
    }

    /// Cuts buffered slot `index` to `len` bytes.
    pub(super) fn truncate_slot(&mut self, index: u64, len: usize) {
        let cut = match self.slots.get_mut(&index) {
            Some(buf) if buf.len() > len => {
                let cut = buf.len() - len;
                buf.truncate(len);
                cut
            }
            _ => return,
        };
        self.sub(cut);
    }

    /// Takes slot `index` out for encoding: its bytes stay in the shared
    /// total until [`Buffers::settled`].
    pub(super) fn hand_off(&mut self, index: u64) -> Option<Vec<u8>> {
        let buf = self.slots.remove(&index)?;
        self.bytes -= buf.len();
        Some(buf)
    }

    /// A slot handed off earlier (`len` bytes) is settled: committed, or
    /// back in the buffers (counted again there).
    pub(super) fn settled(&self, len: usize) {
        self.total.fetch_sub(len as u64, Ordering::Relaxed);
    }
}

impl Drop for Buffers {
    /// Whatever is still buffered leaves the shared total with the file.
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_counted_in_the_file_and_the_shared_total() {
        let total = Arc::new(AtomicU64::new(0));
        let mut a = Buffers::new(total.clone());
        let mut b = Buffers::new(total.clone());
        a.insert(0, vec![1; 10]);
        b.insert(3, vec![2; 5]);
        assert_eq!(total.load(Ordering::Relaxed), 15);
        assert_eq!(a.write(0, 8, &[9; 4]), Some(12));
        assert_eq!(a.write(1, 0, &[9]), None);
        assert_eq!(total.load(Ordering::Relaxed), 17);
        a.truncate_slot(0, 4);
        assert_eq!(a.bytes, 4);
        let off = a.hand_off(0).map(|v| v.len());
        assert_eq!((a.bytes, total.load(Ordering::Relaxed)), (0, 9));
        a.settled(off.unwrap_or(0));
        assert_eq!(total.load(Ordering::Relaxed), 5);
        a.insert(7, vec![0; 3]);
        a.insert(7, vec![0; 2]);
        assert_eq!(total.load(Ordering::Relaxed), 7);
        drop(a);
        assert_eq!(total.load(Ordering::Relaxed), 5);
        assert_eq!(b.take_all().len(), 1);
        assert_eq!((b.bytes, total.load(Ordering::Relaxed)), (0, 0));
    }
}
