//! Reads: a file's bytes from its write buffers, in-flight encodings and
//! stored chunks (through the chunk layer and its cache), and the decode
//! ahead of sequential readers.

use std::collections::HashMap;
use std::sync::Arc;

use super::open::{OpenFile, lock};
use super::types::Ino;
use super::types::{self, ChunkRef, FileKind};
use super::{Fs, FsError, FsResult};
use crate::cache::Plain;
use crate::store::Cf;

/// Bytes read: a copy, or a range of a stored chunk's plaintext.
pub enum ReadData {
    Owned(Vec<u8>),
    Shared {
        chunk: Plain,
        from: usize,
        len: usize,
    },
}

impl ReadData {
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Shared { .. } => self.to_vec(),
        }
    }
}

impl std::ops::Deref for ReadData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Shared { chunk, from, len } => &chunk[*from..*from + *len],
        }
    }
}

impl Fs {
    pub(super) fn extent(&self, ino: Ino, index: u64) -> FsResult<Option<ChunkRef>> {
        match self.kv.get(Cf::Extent, &types::extent_key(ino, index))? {
            Some(v) => Ok(Some(ChunkRef::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// What slot `index` of an open file holds under its buffers: the
    /// stored chunk, or nothing if the slot is a hole or about to be
    /// dropped.
    pub(super) fn slot_base(&self, ino: Ino, st: &OpenFile, index: u64) -> FsResult<Plain> {
        if st.dropped(index) {
            return Ok(Arc::new(Vec::new()));
        }
        self.stored_slot(ino, index)
    }

    /// The stored plaintext of slot `index` (empty for a hole).
    pub(super) fn stored_slot(&self, ino: Ino, index: u64) -> FsResult<Plain> {
        match self.extent(ino, index)? {
            Some(r) => self.load_chunk(&r),
            None => Ok(Arc::new(Vec::new())),
        }
    }

    /// Reads `size` bytes at `offset`.
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_data(ino, offset, size).map(ReadData::into_vec)
    }

    /// `read` without a copy when the bytes lie in one cached chunk: the
    /// result then shares the chunk's buffer.
    pub fn read_data(&self, ino: Ino, offset: u64, size: u32) -> FsResult<ReadData> {
        let state = self.existing_state(ino);
        let mut guard = state.as_ref().map(|s| lock(s));
        self.read_in(ino, guard.as_deref_mut(), offset, u64::from(size))
    }

    /// `read` with the file's state already locked (or not open).
    pub(super) fn read_in(
        &self,
        ino: Ino,
        mut guard: Option<&mut OpenFile>,
        offset: u64,
        size: u64,
    ) -> FsResult<ReadData> {
        let writes = self.counted.writes();
        let inode = match guard.as_deref_mut() {
            Some(g) => match &g.view {
                Some((at, inode)) if *at == writes => inode.clone(),
                _ => {
                    let inode = self.load(ino)?;
                    g.view = Some((writes, inode.clone()));
                    inode
                }
            },
            None => self.load(ino)?,
        };
        if inode.kind == FileKind::Dir {
            return Err(FsError::IsDir);
        }
        // The extents cache, taken out while the buffers are borrowed.
        let mut extents = match guard.as_deref_mut() {
            Some(g) if g.extents_at == writes => std::mem::take(&mut g.extents),
            _ => HashMap::new(),
        };
        let file_size = guard
            .as_ref()
            .and_then(|g| g.a().size)
            .unwrap_or(inode.size);
        if offset >= file_size {
            return Ok(ReadData::Owned(Vec::new()));
        }
        let end = file_size.min(offset.saturating_add(size));
        let cs = match guard.as_deref() {
            Some(g) => g.chunk_size(&inode),
            None => u64::from(inode.chunk_size.max(1)),
        };
        // Within one slot, the reply can share a stored chunk's buffer.
        let one_slot = offset / cs == (end - 1) / cs;
        let mut shared = None;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let index = pos / cs;
            let within = (pos % cs) as usize;
            let n = ((cs - within as u64).min(end - pos)) as usize;
            let dirty = guard.as_deref().and_then(|g| g.dirty.get(index));
            let staged = match guard.as_deref() {
                Some(g) if dirty.is_none() => g.read_staged(index, cs)?,
                _ => None,
            };
            let inflight = guard.as_deref().and_then(|g| g.inflight.get(&index));
            let stored;
            let slot: &[u8] = match (dirty, &staged, inflight) {
                (Some(buf), _, _) => buf,
                (None, Some(buf), _) => buf,
                (None, None, Some(buf)) => buf,
                (None, None, None) => {
                    let dropped = guard.as_deref().is_some_and(|g| g.dropped(index));
                    let r = match extents.get(&index) {
                        _ if dropped => None,
                        Some(r) => *r,
                        None => {
                            let r = self.extent(ino, index)?;
                            extents.insert(index, r);
                            r
                        }
                    };
                    stored = match r {
                        Some(r) => self.load_chunk(&r)?,
                        None => Arc::new(Vec::new()),
                    };
                    if one_slot && stored.len() >= within + n {
                        shared = Some((stored.clone(), within, n));
                        break;
                    }
                    &stored
                }
            };
            if out.capacity() == 0 {
                out.reserve_exact((end - offset) as usize);
            }
            let have = slot.len().saturating_sub(within).min(n);
            if have > 0 {
                out.extend_from_slice(&slot[within..within + have]);
            }
            out.resize(out.len() + (n - have), 0);
            pos += n as u64;
        }
        if let Some(g) = guard {
            if extents.len() > 4096 {
                extents.clear(); // bounded: a huge file read all over
            }
            g.extents = extents;
            g.extents_at = writes;
            // Sequential, allowing for the kernel's read-ahead requests
            // arriving out of order on several FUSE threads.
            const SLACK: u64 = 1 << 20;
            let sequential = offset > 0
                && offset <= g.last_read_end.saturating_add(SLACK)
                && offset.saturating_add(SLACK) >= g.last_read_end;
            g.last_read_end = end;
            if sequential {
                // Keep the next `read_ahead` slots decoding on the pool.
                let cur = (end - 1) / cs;
                let last = (file_size - 1) / cs;
                if g.ahead_until < cur || g.ahead_until > cur + self.cfg.read_ahead as u64 {
                    g.ahead_until = cur;
                }
                let want = cur.saturating_add(self.cfg.read_ahead as u64).min(last);
                while g.ahead_until < want {
                    let next = g.ahead_until + 1;
                    if !g.dirty.contains(next) && !self.read_ahead(ino, next) {
                        break; // the pool is busy: try again at the next read
                    }
                    g.ahead_until = next;
                }
            }
        }
        Ok(match shared {
            Some((chunk, from, len)) => ReadData::Shared { chunk, from, len },
            None => ReadData::Owned(out),
        })
    }

    /// Queues the decode of slot `index` of `ino` into the cache, if it is
    /// stored and not cached; never waits. False when the pools are busy
    /// (nothing queued).
    fn read_ahead(&self, ino: Ino, index: u64) -> bool {
        match self.extent(ino, index) {
            Ok(Some(r)) => self.chunks.read_ahead(&r.id),
            _ => true, // a hole, or unreadable: nothing to decode ahead
        }
    }

    /// The plaintext of the chunk an extent names.
    pub(super) fn load_chunk(&self, r: &ChunkRef) -> FsResult<Plain> {
        Ok(self.chunks.load(&r.id)?)
    }
}
