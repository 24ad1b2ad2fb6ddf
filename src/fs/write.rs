//! Writes: buffering a file's bytes per slot, truncate, fallocate and
//! punched holes, spilling buffers to a staging file over the memory
//! budget, and the re-cut of small fsynced files into small chunks.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::open::{OpenFile, lock, open_staging};
use super::types::Ino;
use super::types::{self, FileKind, Time};
use super::{Fs, FsError, FsResult};
use crate::cache::Plain;
use crate::store::StoreError;

/// Chunk size of files fsynced while small (databases, logs). Small enough
/// that an encoded chunk lives in the index (under `inline_max`): a commit
/// then re-encodes at most a few 32 KiB chunks and costs one fsync, the
/// index WAL's, instead of a chunk file's, its directory's and the WAL's.
pub const SYNCED_CHUNK_SIZE: u32 = 32 * 1024;

/// "Small" for that rule.
const SMALL_SYNCED_FILE: u64 = 1 << 20;

impl Fs {
    /// Writes `data` at `offset`; returns the bytes written. On an error
    /// the kernel's cached pages of the file may hold bytes that were not
    /// written (`Fs::keep_cache`).
    pub fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.write_at(ino, offset, data)
            .inspect_err(|_| self.suspect_cache(ino))
    }

    fn write_at(&self, ino: Ino, offset: u64, data: &[u8]) -> FsResult<u32> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooBig)?;
        if end > types::MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let s = self.state(ino);
        let mut st = lock(&s);
        // Commit finished encoder jobs before loading the inode: a commit
        // stores the size and clears it from the overlay, so an inode loaded
        // before it would make this write shrink the file to its old size.
        self.drain(ino, &mut st, false)?;
        let inode = self.load(ino)?;
        match inode.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid),
        }
        let cs = st.chunk_size(&inode);
        let mut pos = offset;
        let mut src = data;
        let mut full = Vec::new();
        while !src.is_empty() {
            let index = pos / cs;
            let within = (pos % cs) as usize;
            let n = ((cs - within as u64) as usize).min(src.len());
            if !st.dirty.contains(index) && st.staged.contains_key(&index) {
                st.write_staged(index, cs, within, &src[..n])?;
                pos += n as u64;
                src = &src[n..];
                continue;
            }
            if !st.dirty.contains(index) {
                // Whole-slot overwrites need not read the old chunk.
                let mut base = if within == 0 && n as u64 == cs {
                    Vec::new()
                } else if let Some(p) = st.inflight.get(&index) {
                    p.to_vec()
                } else {
                    self.slot_base(ino, &st, index)?.to_vec()
                };
                if within == 0 && n >= 128 << 10 {
                    // A large write at a slot's start (a sequential writer):
                    // size the buffer once instead of doubling it through
                    // copies.
                    base.reserve_exact((cs as usize).saturating_sub(base.len()));
                }
                st.dirty.insert(index, base);
            }
            let len = st
                .dirty
                .write(index, within, &src[..n])
                .ok_or(FsError::Corrupt("write buffer"))?;
            if len as u64 == cs && within + n == cs as usize {
                full.push(index);
            }
            pos += n as u64;
            src = &src[n..];
        }
        let now = Time::now();
        {
            let mut a = st.a();
            a.size = Some(a.size.unwrap_or(inode.size).max(end));
            a.mtime = Some(now);
            a.ctime = Some(now);
        }
        if st.dirty.total() > self.cfg.dirty_limit as u64 {
            // Over the memory budget: spill this file's buffers to its
            // staging file (cheap, and later writes to them are plain
            // pwrites), or, without a staging dir, encode them now.
            if self.cfg.staging_dir.is_some() {
                self.spill(&mut st, cs)?;
            } else {
                self.flush_file(ino, &mut st)?;
            }
        } else if !full.is_empty() {
            self.submit_slots(&inode, &mut st, &full);
        }
        if st.a().opens == 0 {
            // A write without an open handle (internal callers): persist now.
            self.flush_file(ino, &mut st)?;
            drop(st);
            self.forget_if_closed(ino);
        }
        Ok(data.len() as u32)
    }

    /// Sets the size of `ino` (truncate or extend with zeros).
    pub(super) fn truncate(&self, ino: Ino, size: u64) -> FsResult<()> {
        if size > types::MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let s = self.state(ino);
        let mut st = lock(&s);
        let inode = self.load(ino)?;
        match inode.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid),
        }
        self.drain(ino, &mut st, true)?;
        self.flush_staged(ino, &mut st)?;
        // Loaded again: the commits above may have stored a re-cut.
        let inode = self.load(ino)?;
        let cs = st.chunk_size(&inode);
        let keep = size.div_ceil(cs);
        st.dirty.remove_range(keep..);
        let within = (size % cs) as usize;
        if within > 0 {
            let last = size / cs;
            if !st.dirty.contains(last) {
                let stored = self.slot_base(ino, &st, last)?;
                if stored.len() > within {
                    let buf = stored[..within].to_vec();
                    st.dirty.insert(last, buf);
                }
            }
            st.dirty.truncate_slot(last, within);
        }
        st.drop_from = Some(st.drop_from.map_or(keep, |d| d.min(keep)));
        let now = Time::now();
        {
            let mut a = st.a();
            a.size = Some(size);
            a.mtime = Some(now);
            a.ctime = Some(now);
        }
        self.flush_file(ino, &mut st)?;
        if st.a().opens == 0 {
            drop(st);
            self.forget_if_closed(ino);
        }
        Ok(())
    }

    /// fallocate: mode 0 (allocate, may extend) and KEEP_SIZE; PUNCH_HOLE
    /// with KEEP_SIZE zeroes the range. Other modes are not supported.
    pub fn fallocate(&self, ino: Ino, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        self.fallocate_at(ino, offset, len, mode)
            .inspect_err(|_| self.suspect_cache(ino))
    }

    fn fallocate_at(&self, ino: Ino, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        use nix::libc::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
        let end = offset.checked_add(len).ok_or(FsError::FileTooBig)?;
        if end > types::MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        if len == 0 {
            return Err(FsError::Invalid);
        }
        if mode == 0 || mode == FALLOC_FL_KEEP_SIZE {
            let size = self.getattr(ino)?.size;
            if mode == 0 && end > size {
                self.truncate(ino, end)?;
            }
            return Ok(());
        }
        if mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE {
            return self.punch_hole(ino, offset, end);
        }
        Err(FsError::NotSupported)
    }

    /// fallocate(PUNCH_HOLE): bytes `offset..end` (within the size) read as
    /// zeros. The slots the range covers whole lose their extents and
    /// buffers (one batch, whatever the range: the work is the extents that
    /// exist, never the range's length); the at most two slots it covers in
    /// part get zeros written.
    fn punch_hole(&self, ino: Ino, offset: u64, end: u64) -> FsResult<()> {
        let (head, tail) = {
            let s = self.state(ino);
            let mut st = lock(&s);
            self.drain(ino, &mut st, true)?;
            let inode = self.load(ino)?;
            match inode.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid),
            }
            let size = st.a().size.unwrap_or(inode.size);
            let end = end.min(size);
            if offset >= end {
                return Ok(());
            }
            let cs = st.chunk_size(&inode);
            let first = offset.div_ceil(cs);
            // The last slot ends at the file's size.
            let last = if end == size {
                end.div_ceil(cs)
            } else {
                end / cs
            };
            if first < last {
                st.dirty.remove_range(first..last);
                let staged: Vec<u64> = st.staged.range(first..last).map(|(k, _)| *k).collect();
                for k in staged {
                    st.staged.remove(&k);
                }
                st.holes.push((first, last));
                let now = Time::now();
                {
                    let mut a = st.a();
                    a.mtime = Some(now);
                    a.ctime = Some(now);
                }
                self.flush_file(ino, &mut st)?;
            }
            let full_start = first.saturating_mul(cs);
            let full_end = last.saturating_mul(cs).max(full_start);
            let head = (offset, end.min(full_start));
            let tail = (offset.max(full_end), end);
            let idle = st.a().opens == 0;
            drop(st);
            if idle {
                self.forget_if_closed(ino);
            }
            (head, tail)
        };
        for (from, to) in [head, tail] {
            if from < to {
                self.write(ino, from, &vec![0u8; (to - from) as usize])?;
            }
        }
        Ok(())
    }

    /// Moves every buffered slot of this file to its staging file.
    pub(super) fn spill(&self, st: &mut OpenFile, cs: u64) -> FsResult<()> {
        if st.staging.is_none() {
            let Some(dir) = &self.cfg.staging_dir else {
                return Ok(());
            };
            st.staging = Some(open_staging(dir)?);
        }
        let slots: Vec<u64> = st.dirty.keys().copied().collect();
        for index in slots {
            let Some(buf) = st.dirty.remove(index) else {
                continue;
            };
            if let Err(e) = st.put_staged(index, cs, &buf) {
                st.dirty.insert(index, buf);
                return Err(e);
            }
            self.stats.slots_spilled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Encodes and stores the staged slots, a few at a time (bounded memory).
    pub(super) fn flush_staged(&self, ino: Ino, st: &mut OpenFile) -> FsResult<()> {
        const BATCH: usize = 8;
        while !st.staged.is_empty() {
            let Some(file) = &st.staging else { break };
            let file = file
                .try_clone()
                .map_err(|e| FsError::from(StoreError::from(e)))?;
            let inode = self.load(ino)?;
            let cs = st.chunk_size(&inode);
            let batch: Vec<(u64, usize)> = st
                .staged
                .iter()
                .take(BATCH)
                .map(|(k, v)| (*k, *v))
                .collect();
            let mut loaded = Vec::with_capacity(batch.len());
            for &(index, len) in &batch {
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, index * cs)
                    .map_err(|e| FsError::from(StoreError::from(e)))?;
                loaded.push((index, buf));
            }
            for (index, buf) in loaded {
                st.staged.remove(&index);
                st.dirty.insert(index, buf);
            }
            let slots: Vec<u64> = batch.iter().map(|(k, _)| *k).collect();
            if let Err(e) = self.flush_slots(ino, st, &slots) {
                // Back to the staging file: nothing is lost.
                let cs_slots: Vec<u64> = slots
                    .iter()
                    .copied()
                    .filter(|&i| st.dirty.contains(i))
                    .collect();
                for index in cs_slots {
                    if let Some(buf) = st.dirty.remove(index) {
                        let _ = st.put_staged(index, cs, &buf);
                    }
                }
                return Err(e);
            }
        }
        if let Some(f) = &st.staging
            && st.staged.is_empty()
        {
            let _ = f.set_len(0);
        }
        Ok(())
    }

    /// Puts a slot's plaintext back into the write buffers after a failed
    /// store, unless newer data for the slot is buffered already.
    pub(super) fn redirty(&self, st: &mut OpenFile, index: u64, plain: Plain) {
        if st.dirty.contains(index) {
            return;
        }
        let buf = Arc::try_unwrap(plain).unwrap_or_else(|a| a.to_vec());
        st.dirty.insert(index, buf);
    }

    /// A file fsynced while still small is a database or a log: its commits
    /// rewrite its last chunk each time, so it gets small chunks
    /// (`SYNCED_CHUNK_SIZE`): the whole file is re-cut once, here, into
    /// write buffers that the caller's flush stores in one batch with the
    /// new chunk size (a failure leaves the file as it was, its content
    /// buffered).
    pub(super) fn shrink_chunks_of_small_synced_file(
        &self,
        ino: Ino,
        st: &mut OpenFile,
    ) -> FsResult<()> {
        self.drain(ino, st, true)?;
        if st.recut.is_some() {
            return Ok(()); // re-cut already, not stored yet
        }
        let inode = self.load(ino)?;
        let size = st.a().size.unwrap_or(inode.size);
        if inode.kind != FileKind::File
            || inode.chunk_size <= SYNCED_CHUNK_SIZE
            || size > SMALL_SYNCED_FILE
        {
            return Ok(());
        }
        let content = self.read_in(ino, Some(&mut *st), 0, size)?.into_vec();
        // Every buffer (staged ones too) is in `content`: drop them, and
        // buffer the content again in the new slots.
        st.staged.clear();
        if let Some(f) = &st.staging {
            let _ = f.set_len(0);
        }
        st.dirty.take_all();
        st.recut = Some(SYNCED_CHUNK_SIZE);
        st.drop_from = Some(0);
        st.holes.clear();
        let cs = SYNCED_CHUNK_SIZE as usize;
        for (i, piece) in content.chunks(cs).enumerate() {
            st.dirty.insert(i as u64, piece.to_vec());
        }
        st.a().size.get_or_insert(size);
        Ok(())
    }
}
