//! Open files: the open-file table, handles, open counts, the attributes
//! of unflushed writes (size and times) that getattr overlays on the stored
//! inode, and the last release that stores a file's buffers.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use super::buffers::Buffers;
use super::types::Ino;
use super::types::{ChunkRef, FileKind, Inode, Time};
use super::{Fs, FsError, FsResult};
use crate::cache::Plain;
use crate::chunks::JobResult;
use crate::store::StoreError;

/// Per-inode state while a file is open.
pub(crate) struct OpenFile {
    /// Open count, size and times: shared with the open map so that getattr
    /// and the namespace (which hold `ns`) read them without this file's lock.
    pub(super) attrs: Arc<Mutex<Pending>>,
    /// The write buffers.
    pub(super) dirty: Buffers,
    /// After a truncate: extents from this slot on are to be dropped.
    pub(super) drop_from: Option<u64>,
    /// After a punched hole: extents of these slots (start..end) are to be
    /// dropped.
    pub(super) holes: Vec<(u64, u64)>,
    /// After a re-cut (see `shrink_chunks_of_small_synced_file`): the new
    /// chunk size, stored by the commit that stores the re-cut slots, in
    /// the same batch. The file's slots are counted in it meanwhile.
    pub(super) recut: Option<u32>,
    /// Slots handed to the encoder pool, by slot: their plaintext, for reads.
    pub(super) inflight: BTreeMap<u64, Plain>,
    /// Jobs not yet collected from `results`.
    pub(super) pending: usize,
    /// Where the pool's jobs for this file report.
    pub(super) results: Option<(Sender<JobResult>, Receiver<JobResult>)>,
    /// End of the last read: a read starting near there is sequential, and
    /// the next chunks are decoded ahead on the pool.
    pub(super) last_read_end: u64,
    /// Highest slot whose decode ahead has been queued for this reader.
    pub(super) ahead_until: u64,
    /// The inode and extents as last read from the index, with the index's
    /// write count noted before reading them: valid while it is unchanged
    /// (reads then cost no index lookup).
    pub(super) view: Option<(u64, Inode)>,
    pub(super) extents: HashMap<u64, Option<ChunkRef>>,
    pub(super) extents_at: u64,
    /// Slots spilled to the staging file (slot → bytes): written there in
    /// place, encoded at the next flush. Newer than any in-flight version.
    pub(super) staged: Staged,
    /// The staging file (unlinked, O_TMPFILE): slot i at i·chunk_size.
    pub(super) staging: Option<std::fs::File>,
}

/// What an open file has that the index does not have yet. Its lock is a
/// leaf: nothing else is locked while it is held.
#[derive(Default)]
pub(crate) struct Pending {
    pub(super) opens: u32,
    pub(super) size: Option<u64>,
    pub(super) mtime: Option<Time>,
    pub(super) ctime: Option<Time>,
}

/// An open file in the open map: its state, and its pending attributes.
#[derive(Clone)]
pub(crate) struct OpenEntry {
    pub(super) state: Arc<Mutex<OpenFile>>,
    pub(super) attrs: Arc<Mutex<Pending>>,
}

impl OpenFile {
    pub(super) fn a(&self) -> MutexGuard<'_, Pending> {
        self.attrs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The size of this file's slots: the stored one, or a re-cut's.
    pub(super) fn chunk_size(&self, inode: &Inode) -> u64 {
        u64::from(self.recut.unwrap_or(inode.chunk_size).max(1))
    }

    /// Is the stored extent of slot `index` about to be dropped (truncated
    /// away, punched, re-cut)? Such a slot is a hole until then.
    pub(super) fn dropped(&self, index: u64) -> bool {
        self.drop_from.is_some_and(|d| index >= d)
            || self.holes.iter().any(|&(a, b)| (a..b).contains(&index))
    }

    /// Writes a whole slot to the staging file.
    pub(super) fn put_staged(&mut self, index: u64, cs: u64, buf: &[u8]) -> FsResult<()> {
        let file = self
            .staging
            .as_ref()
            .ok_or(FsError::Corrupt("no staging file"))?;
        file.write_all_at(buf, index * cs)
            .map_err(|e| FsError::from(StoreError::from(e)))?;
        self.staged.insert(index, buf.len());
        Ok(())
    }

    /// Writes `data` at `within` into staged slot `index`; the gap between
    /// the slot's end and `within` becomes zeros (old bytes may be there).
    pub(super) fn write_staged(
        &mut self,
        index: u64,
        cs: u64,
        within: usize,
        data: &[u8],
    ) -> FsResult<()> {
        let file = self
            .staging
            .as_ref()
            .ok_or(FsError::Corrupt("no staging file"))?;
        let len = self.staged.get(&index).copied().unwrap_or(0);
        let io = |e: std::io::Error| FsError::from(StoreError::from(e));
        if within > len {
            file.write_all_at(&vec![0u8; within - len], index * cs + len as u64)
                .map_err(io)?;
        }
        file.write_all_at(data, index * cs + within as u64)
            .map_err(io)?;
        self.staged.insert(index, len.max(within + data.len()));
        Ok(())
    }

    /// A staged slot's bytes, if the slot is staged.
    pub(super) fn read_staged(&self, index: u64, cs: u64) -> FsResult<Option<Vec<u8>>> {
        let (Some(len), Some(file)) = (self.staged.get(&index), &self.staging) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; *len];
        file.read_exact_at(&mut buf, index * cs)
            .map_err(|e| FsError::from(StoreError::from(e)))?;
        Ok(Some(buf))
    }
}

/// Applies pending attributes (see [`Fs::pending_attrs`]) to a loaded inode.
pub(super) fn apply_pending(
    inode: &mut Inode,
    (size, mtime, ctime): (Option<u64>, Option<Time>, Option<Time>),
) {
    if let Some(size) = size {
        inode.size = size;
    }
    if let Some(t) = mtime {
        inode.mtime = t;
    }
    if let Some(t) = ctime {
        inode.ctime = t;
    }
}

/// An anonymous file in `dir` (O_TMPFILE: gone when closed or on a crash).
pub(super) fn open_staging(dir: &std::path::Path) -> FsResult<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
        .map_err(|e| FsError::from(StoreError::from(e)))
}

/// The slots of a file spilled to its staging file (slot → bytes), counted
/// in the total across all files (`Fs::staged_total`: storing them needs
/// that much room again, which `Fs::disk_is_low` counts). Read through
/// `Deref`; every change goes through the methods that keep the count.
#[derive(Debug)]
pub(crate) struct Staged {
    slots: BTreeMap<u64, usize>,
    total: Arc<AtomicU64>,
}

impl Staged {
    pub(super) fn new(total: Arc<AtomicU64>) -> Staged {
        Staged {
            slots: BTreeMap::new(),
            total,
        }
    }

    pub(super) fn insert(&mut self, index: u64, len: usize) {
        let old = self.slots.insert(index, len).unwrap_or(0);
        self.total.fetch_add(len as u64, Ordering::Relaxed);
        self.total.fetch_sub(old as u64, Ordering::Relaxed);
    }

    pub(super) fn remove(&mut self, index: &u64) -> Option<usize> {
        let old = self.slots.remove(index)?;
        self.total.fetch_sub(old as u64, Ordering::Relaxed);
        Some(old)
    }

    pub(super) fn clear(&mut self) {
        let n: usize = self.slots.values().sum();
        self.slots.clear();
        self.total.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Staged {
    type Target = BTreeMap<u64, usize>;
    fn deref(&self) -> &Self::Target {
        &self.slots
    }
}

impl Drop for Staged {
    /// Whatever is still staged leaves the shared total with the file.
    fn drop(&mut self) {
        self.clear();
    }
}

/// A fresh entry of the open-file table.
fn new_entry(total: &Arc<AtomicU64>, staged_total: &Arc<AtomicU64>) -> OpenEntry {
    let attrs = Arc::new(Mutex::new(Pending::default()));
    let state = OpenFile {
        attrs: attrs.clone(),
        dirty: Buffers::new(total.clone()),
        drop_from: None,
        holes: Vec::new(),
        recut: None,
        inflight: BTreeMap::new(),
        pending: 0,
        results: None,
        last_read_end: 0,
        ahead_until: 0,
        view: None,
        extents: HashMap::new(),
        extents_at: 0,
        staged: Staged::new(staged_total.clone()),
        staging: None,
    };
    OpenEntry {
        state: Arc::new(Mutex::new(state)),
        attrs,
    }
}

pub(super) fn pending(p: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn lock(m: &Mutex<OpenFile>) -> MutexGuard<'_, OpenFile> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fs {
    pub(super) fn state(&self, ino: Ino) -> Arc<Mutex<OpenFile>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.entry(ino)
            .or_insert_with(|| new_entry(&self.dirty_total, &self.staged_total))
            .state
            .clone()
    }

    /// Counts one more open of `ino`, without waiting for a release in
    /// progress (which holds the file's lock while it stores the buffers):
    /// the count is kept under the table's lock, where that release counts
    /// down and decides whether it was the last. Counted first, the open
    /// makes the release not the last one: the buffers (stored, or kept
    /// for the next try if they could not be) stay with the entry, and this
    /// handle's reads and writes take the file's lock after the store.
    /// Counted after the release removed the entry, it counts on a new one.
    /// A program that closes a file and opens it again (rsync sets the mode
    /// through a new descriptor) does not wait for the encoding of what it
    /// wrote.
    ///
    /// Except when the disk is low ([`Fs::disk_is_low`]), where stores fail:
    /// then an open waits for a release in progress, which stores the
    /// buffers or drops what it cannot store, so that the new handle does
    /// not read buffers whose store already failed (and their error).
    pub(super) fn count_open(&self, ino: Ino) {
        if !self.disk_is_low() {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let e = open
                .entry(ino)
                .or_insert_with(|| new_entry(&self.dirty_total, &self.staged_total));
            pending(&e.attrs).opens += 1;
            return;
        }
        loop {
            let s = self.state(ino);
            let st = lock(&s);
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if open.get(&ino).is_some_and(|e| Arc::ptr_eq(&e.state, &s)) {
                st.a().opens += 1;
                return;
            }
        }
    }

    pub(super) fn existing_state(&self, ino: Ino) -> Option<Arc<Mutex<OpenFile>>> {
        self.entry(ino).map(|e| e.state)
    }

    pub(super) fn entry(&self, ino: Ino) -> Option<OpenEntry> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .cloned()
    }

    /// Is `ino` open? Takes no file lock (callable under `ns`).
    pub(super) fn is_open(&self, ino: Ino) -> bool {
        self.entry(ino).is_some_and(|e| pending(&e.attrs).opens > 0)
    }

    /// Applies size and times of unflushed writes to `inode`. Takes no file
    /// lock (callable under `ns`).
    pub(super) fn overlay(&self, inode: &mut Inode) {
        let pending = self.pending_attrs(inode.ino);
        apply_pending(inode, pending);
    }

    /// The pending size, mtime and ctime of `ino`. Take them *before*
    /// loading the inode when not holding `ns`: a commit stores them and
    /// then clears them, so this order never misses both.
    pub(super) fn pending_attrs(&self, ino: Ino) -> (Option<u64>, Option<Time>, Option<Time>) {
        match self.entry(ino) {
            Some(e) => {
                let a = pending(&e.attrs);
                (a.size, a.mtime, a.ctime)
            }
            None => (None, None, None),
        }
    }

    /// setattr wrote times: pending ones from writes must not override them.
    pub(super) fn set_overlay_times(&self, ino: Ino, mtime: Time, ctime: Time) {
        if let Some(e) = self.entry(ino) {
            let mut a = pending(&e.attrs);
            if a.mtime.is_some() {
                a.mtime = Some(mtime);
            }
            if a.ctime.is_some() {
                a.ctime = Some(ctime);
            }
        }
    }

    /// Opens `ino`; returns a file handle.
    pub fn open(&self, ino: Ino, truncate: bool) -> FsResult<u64> {
        let inode = self.load(ino)?;
        if inode.kind == FileKind::File {
            self.count_open(ino);
            if truncate && inode.size > 0 {
                self.truncate(ino, 0)?;
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, ino);
        Ok(fh)
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        ctx: &super::Ctx,
        parent: Ino,
        name: &[u8],
        mode: u32,
    ) -> FsResult<(Inode, u64)> {
        let inode = self.mknod(ctx, parent, name, (mode & 0o7777) | nix::libc::S_IFREG, 0)?;
        let fh = self.open(inode.ino, false)?;
        Ok((inode, fh))
    }

    pub(super) fn handle_ino(&self, fh: u64) -> FsResult<Ino> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .copied()
            .ok_or(FsError::BadHandle)
    }

    /// close(2) of one descriptor: write buffers are encoded and stored.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let ino = self.handle_ino(fh)?;
        if let Some(s) = self.existing_state(ino) {
            let mut st = lock(&s);
            self.flush_file(ino, &mut st)
                .inspect_err(|_| self.suspect_cache(ino))?;
        }
        Ok(())
    }

    /// May the kernel keep its cached pages of `ino` at this open? Not
    /// after a change of the file's bytes failed here (a write, truncate,
    /// punched hole or store): the kernel may cache bytes that the file
    /// does not have (a failed write's, or buffers that a failed last
    /// release dropped). Answering no makes the kernel drop its pages, once.
    pub fn keep_cache(&self, ino: Ino) -> bool {
        !self
            .cache_suspect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ino)
    }

    /// Notes that the kernel's cached pages of `ino` may be wrong.
    pub(super) fn suspect_cache(&self, ino: Ino) {
        self.cache_suspect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ino);
    }

    /// close(2) of one descriptor (FUSE's flush). The kernel does not make
    /// close(2) wait for the release that follows the last close, so the
    /// buffers are normally encoded and stored there, off the caller's
    /// path, as a local filesystem's page cache writes back after close.
    /// When the disk is low they are stored now instead, so that close(2)
    /// reports ENOSPC and the caller knows its data did not fit.
    pub fn close_descriptor(&self, fh: u64) -> FsResult<()> {
        if self.remote_sync.get().is_some() {
            // -o sync_remote: close(2) returns once the data is on peers.
            let ino = self.handle_ino(fh)?;
            self.flush(fh)?;
            self.sync_index()?;
            return self.sync_remote(ino);
        }
        if self.disk_is_low() {
            return self.flush(fh);
        }
        self.handle_ino(fh).map(|_| ())
    }

    /// Last close of a handle.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let ino = match self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)
        {
            Some(ino) => ino,
            None => return Err(FsError::BadHandle),
        };
        let Some(s) = self.existing_state(ino) else {
            return Ok(());
        };
        let mut st = lock(&s);
        let flushed = self.flush_file(ino, &mut st);
        if flushed.is_err() {
            self.suspect_cache(ino);
        }
        // The count and the removal under the table's lock, where opens
        // count (`count_open`): an open counted meanwhile makes this
        // release not the last; one counted after the removal starts a new
        // entry.
        let last = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let mut a = st.a();
            a.opens = a.opens.saturating_sub(1);
            if a.opens == 0 && open.get(&ino).is_some_and(|e| Arc::ptr_eq(&e.state, &s)) {
                open.remove(&ino);
            }
            a.opens == 0
        };
        if !last {
            return flushed;
        }
        if let Err(e) = &flushed {
            // close(2) already reported this error (flush runs first); the
            // buffers cannot outlive the last handle.
            warn!(%ino, error = %e, "data of a closed file could not be stored and is dropped");
        }
        st.dirty.take_all();
        drop(st);
        // The last close of an unlinked file deletes it (unless the kernel
        // still knows it: then its `forget` will).
        self.reap(ino)?;
        flushed
    }

    pub(super) fn forget_if_closed(&self, ino: Ino) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let idle = open.get(&ino).is_some_and(|s| {
            s.state.try_lock().is_ok_and(|st| {
                st.a().opens == 0
                    && st.dirty.is_empty()
                    && st.pending == 0
                    && st.inflight.is_empty()
            })
        });
        if idle {
            open.remove(&ino);
        }
    }
}
