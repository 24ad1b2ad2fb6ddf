//! File data: write buffers, chunk encoding through CES, the chunk records
//! (refcounted, deduplicated by chunk id), reads through the cache, repair
//! of damaged chunks, truncate and fallocate.
//!
//! A file is a sequence of `chunk_size` slots; slot i holds bytes
//! `i·chunk_size ..` and is either a hole (no extent: zeros) or an extent
//! naming a chunk whose plaintext may be shorter than the slot (the rest,
//! up to the file size, reads as zeros).
//!
//! Writes go to an in-memory buffer per touched slot. A slot is encoded
//! when it fills, when the file is flushed, fsynced or released, when
//! buffers across all files exceed `dirty_limit`, and before a truncate.
//! Encoding runs on a thread pool (one thread per core), then one
//! WriteBatch under `ns` swaps the extents, adjusts chunk refcounts and
//! updates the inode.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, info, warn};

use super::encoder::JobResult;
use super::types::{self, ChunkRef, FileKind, Inode, Time};
use super::{Fs, FsError, FsResult};
use crate::cache::Plain;
use crate::ces::{Hint, Manifest};
use crate::store::{Batch, Cf, StoreError};

/// Chunk records are written at version 2 (with shard holders); version 1
/// records (no holders) are still read.
const CHUNK_RECORD_VERSION: u8 = 2;
/// Chunk size of files fsynced while small (databases, logs). Small enough
/// that an encoded chunk lives in the index (under `inline_max`): a commit
/// then re-encodes at most a few 32 KiB chunks and costs one fsync, the
/// index WAL's, instead of a chunk file's, its directory's and the WAL's.
pub(crate) const SYNCED_CHUNK_SIZE: u32 = 32 * 1024;
/// "Small" for that rule.
const SMALL_SYNCED_FILE: u64 = 1 << 20;
/// Written chunks up to this size go into the read cache.
const WRITE_CACHE_MAX: usize = 1 << 20;
/// Chunk files whose deletion waits for one shared WAL sync.
const GC_BATCH: usize = 64;
/// With less free space than this (or than 1/20 of the disk), chunk files
/// are deleted at once (a WAL sync each time) instead of in batches.
const GC_NOW_BELOW_FREE_BYTES: u64 = 1 << 30;
pub(crate) const LOC_INLINE: u8 = 0;
pub(crate) const LOC_FILE: u8 = 1;

/// Per-inode state while a file is open.
#[derive(Default)]
pub(crate) struct OpenFile {
    /// Open count, size and times: shared with the open map so that getattr
    /// and the namespace (which hold `ns`) read them without this file's lock.
    attrs: Arc<Mutex<Pending>>,
    /// Slot index → the slot's full plaintext as it should become.
    dirty: BTreeMap<u64, Vec<u8>>,
    dirty_bytes: usize,
    /// After a truncate: extents from this slot on are to be dropped.
    drop_from: Option<u64>,
    /// After a punched hole: extents of these slots (start..end) are to be
    /// dropped.
    holes: Vec<(u64, u64)>,
    /// After a re-cut (see `shrink_chunks_of_small_synced_file`): the new
    /// chunk size, stored by the commit that stores the re-cut slots, in
    /// the same batch. The file's slots are counted in it meanwhile.
    recut: Option<u32>,
    /// Slots handed to the encoder pool, by slot: their plaintext, for reads.
    inflight: BTreeMap<u64, Plain>,
    /// Jobs not yet collected from `results`.
    pending: usize,
    /// Where the pool's jobs for this file report.
    results: Option<(Sender<JobResult>, Receiver<JobResult>)>,
    /// End of the last read: a read starting near there is sequential, and
    /// the next chunks are decoded ahead on the pool.
    last_read_end: u64,
    /// Highest slot whose decode ahead has been queued for this reader.
    ahead_until: u64,
    /// The inode and extents as last read from the index, with the index's
    /// write count noted before reading them: valid while it is unchanged
    /// (reads then cost no index lookup).
    view: Option<(u64, Inode)>,
    extents: HashMap<u64, Option<ChunkRef>>,
    extents_at: u64,
    /// Slots spilled to the staging file (slot → bytes): written there in
    /// place, encoded at the next flush. Newer than any in-flight version.
    staged: BTreeMap<u64, usize>,
    /// The staging file (unlinked, O_TMPFILE): slot i at i·chunk_size.
    staging: Option<std::fs::File>,
}

/// What an open file has that the index does not have yet. Its lock is a
/// leaf: nothing else is locked while it is held.
#[derive(Default)]
pub(crate) struct Pending {
    opens: u32,
    size: Option<u64>,
    mtime: Option<Time>,
    ctime: Option<Time>,
}

/// An open file in the open map: its state, and its pending attributes.
#[derive(Clone)]
pub(crate) struct OpenEntry {
    state: Arc<Mutex<OpenFile>>,
    attrs: Arc<Mutex<Pending>>,
}

impl OpenFile {
    fn a(&self) -> MutexGuard<'_, Pending> {
        self.attrs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The size of this file's slots: the stored one, or a re-cut's.
    fn chunk_size(&self, inode: &Inode) -> u64 {
        u64::from(self.recut.unwrap_or(inode.chunk_size).max(1))
    }

    /// Is the stored extent of slot `index` about to be dropped (truncated
    /// away, punched, re-cut)? Such a slot is a hole until then.
    fn dropped(&self, index: u64) -> bool {
        self.drop_from.is_some_and(|d| index >= d)
            || self.holes.iter().any(|&(a, b)| (a..b).contains(&index))
    }

    /// Writes a whole slot to the staging file.
    fn put_staged(&mut self, index: u64, cs: u64, buf: &[u8]) -> FsResult<()> {
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
    fn write_staged(&mut self, index: u64, cs: u64, within: usize, data: &[u8]) -> FsResult<()> {
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
    fn read_staged(&self, index: u64, cs: u64) -> FsResult<Option<Vec<u8>>> {
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
fn open_staging(dir: &std::path::Path) -> FsResult<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
        .map_err(|e| FsError::from(StoreError::from(e)))
}

/// A fresh entry of the open-file table.
fn new_entry() -> OpenEntry {
    let attrs = Arc::new(Mutex::new(Pending::default()));
    let state = OpenFile {
        attrs: attrs.clone(),
        ..OpenFile::default()
    };
    OpenEntry {
        state: Arc::new(Mutex::new(state)),
        attrs,
    }
}

fn pending(p: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A peer holding one shard of a chunk: the shard's index (data shards
/// first) and the peer's number in the `peer` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    pub shard: u16,
    pub peer: u32,
}

/// A chunk record: refcount, where the local shards are, which peers hold
/// copies of shards, and the manifest.
pub(crate) struct ChunkRecord {
    pub(crate) refs: u64,
    pub(crate) location: u8,
    /// Remote copies (the local ones are implied by `location`); empty
    /// while the node is alone.
    pub(crate) holders: Vec<Holder>,
    pub(crate) manifest: Vec<u8>,
}

impl ChunkRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let n = u16::try_from(self.holders.len()).unwrap_or(u16::MAX);
        let mut v = Vec::with_capacity(12 + 6 * usize::from(n) + self.manifest.len());
        v.push(CHUNK_RECORD_VERSION);
        v.extend_from_slice(&self.refs.to_le_bytes());
        v.push(self.location);
        v.extend_from_slice(&n.to_le_bytes());
        for h in self.holders.iter().take(usize::from(n)) {
            v.extend_from_slice(&h.shard.to_le_bytes());
            v.extend_from_slice(&h.peer.to_le_bytes());
        }
        v.extend_from_slice(&self.manifest);
        v
    }

    pub(crate) fn decode(v: &[u8]) -> FsResult<ChunkRecord> {
        const BAD: FsError = FsError::Corrupt("chunk record");
        if v.len() < 10 || !(1..=CHUNK_RECORD_VERSION).contains(&v[0]) || v[9] > LOC_FILE {
            return Err(BAD);
        }
        let refs = u64::from_le_bytes(v[1..9].try_into().map_err(|_| BAD)?);
        let mut rest = &v[10..];
        let mut holders = Vec::new();
        if v[0] >= 2 {
            let n = rest.get(..2).ok_or(BAD)?;
            let n = usize::from(u16::from_le_bytes([n[0], n[1]]));
            let list = rest.get(2..2 + 6 * n).ok_or(BAD)?;
            holders = list
                .chunks_exact(6)
                .map(|h| Holder {
                    shard: u16::from_le_bytes([h[0], h[1]]),
                    peer: u32::from_le_bytes([h[2], h[3], h[4], h[5]]),
                })
                .collect();
            rest = &rest[2 + 6 * n..];
        }
        Ok(ChunkRecord {
            refs,
            location: v[9],
            holders,
            manifest: rest.to_vec(),
        })
    }

    /// Name of the chunk file holding the shards: BLAKE3 of the manifest,
    /// unique per encoding (two encodings of one chunk never share a file).
    pub(crate) fn blob(&self) -> [u8; 32] {
        blob_of(&self.manifest)
    }
}

fn blob_of(manifest: &[u8]) -> [u8; 32] {
    *blake3::hash(manifest).as_bytes()
}

/// Data-path counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) chunks_encoded: AtomicU64,
    pub(crate) chunks_deduped: AtomicU64,
    pub(crate) chunks_decoded: AtomicU64,
    pub(crate) chunks_repaired: AtomicU64,
    pub(crate) chunks_lost: AtomicU64,
    pub(crate) chunks_deleted: AtomicU64,
    pub(crate) bytes_flushed: AtomicU64,
    pub(crate) slots_spilled: AtomicU64,
}

/// A snapshot of the data-path counters.
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

impl Counters {
    pub(crate) fn snapshot(&self) -> DataStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DataStats {
            chunks_encoded: g(&self.chunks_encoded),
            chunks_deduped: g(&self.chunks_deduped),
            chunks_decoded: g(&self.chunks_decoded),
            chunks_repaired: g(&self.chunks_repaired),
            chunks_lost: g(&self.chunks_lost),
            chunks_deleted: g(&self.chunks_deleted),
            bytes_flushed: g(&self.bytes_flushed),
            slots_spilled: g(&self.slots_spilled),
        }
    }
}

pub(crate) fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn lock(m: &Mutex<OpenFile>) -> MutexGuard<'_, OpenFile> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A chunk this process encoded and stored, not yet referenced.
pub(crate) struct Stored {
    /// The encoded manifest.
    pub(crate) manifest: Vec<u8>,
    pub(crate) loc: u8,
    /// The shards, when they live in the index (`LOC_INLINE`).
    pub(crate) inline: Vec<u8>,
}

impl Stored {
    pub(crate) fn blob(&self) -> [u8; 32] {
        blob_of(&self.manifest)
    }

    /// The chunk file this encoding wrote, if any.
    pub(crate) fn file(&self) -> Option<[u8; 32]> {
        (self.loc == LOC_FILE).then(|| self.blob())
    }

    /// The record of a new encoding, its inline shards, and (with
    /// `upload`: the node has peers) its entry in the upload queue.
    fn into_record(self, b: &mut Batch, id: &[u8; 32], upload: bool) -> ChunkRecord {
        if self.loc == LOC_INLINE {
            b.put(Cf::Inline, id, &self.inline);
        } else {
            b.delete(Cf::Gc, &self.blob());
        }
        if upload {
            b.put(
                Cf::Upload,
                &super::replica::place_key(id),
                &super::replica::UploadEntry::new().encode(),
            );
        }
        ChunkRecord {
            refs: 0,
            location: self.loc,
            holders: Vec::new(),
            manifest: self.manifest,
        }
    }
}

/// How an attempt to commit ended.
enum Commit {
    /// Stored; these chunk files are to be deleted once the batch is durable.
    Done(Vec<[u8; 32]>),
    /// Chunks deduplicated against records deleted since: encode them, then
    /// try again.
    Vanished(Vec<[u8; 32]>),
}

/// A chunk ready to be referenced by a flush.
pub(crate) struct Prepared {
    pub(crate) index: u64,
    pub(crate) id: [u8; 32],
    pub(crate) len: u32,
    pub(crate) plain: Plain,
    /// Set when this flush encoded the chunk (None: it was already stored).
    pub(crate) encoded: Option<Stored>,
}

impl Fs {
    fn state(&self, ino: u64) -> Arc<Mutex<OpenFile>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.entry(ino).or_insert_with(new_entry).state.clone()
    }

    /// Counts one more open of `ino`, after any release in progress (which
    /// holds the file's lock): a last release stores the file's buffers,
    /// or drops them if they cannot be stored, and an open must find the
    /// result. If that release removed the entry meanwhile, the open counts
    /// on a new one (never on the removed entry, where the count would be
    /// lost).
    fn count_open(&self, ino: u64) {
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

    fn existing_state(&self, ino: u64) -> Option<Arc<Mutex<OpenFile>>> {
        self.entry(ino).map(|e| e.state)
    }

    fn entry(&self, ino: u64) -> Option<OpenEntry> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .cloned()
    }

    /// Is `ino` open? Takes no file lock (callable under `ns`).
    pub(super) fn is_open(&self, ino: u64) -> bool {
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
    pub(super) fn pending_attrs(&self, ino: u64) -> (Option<u64>, Option<Time>, Option<Time>) {
        match self.entry(ino) {
            Some(e) => {
                let a = pending(&e.attrs);
                (a.size, a.mtime, a.ctime)
            }
            None => (None, None, None),
        }
    }

    /// setattr wrote times: pending ones from writes must not override them.
    pub(super) fn set_overlay_times(&self, ino: u64, mtime: Time, ctime: Time) {
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
    pub fn open(&self, ino: u64, truncate: bool) -> FsResult<u64> {
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
        parent: u64,
        name: &[u8],
        mode: u32,
    ) -> FsResult<(Inode, u64)> {
        let inode = self.mknod(ctx, parent, name, (mode & 0o7777) | nix::libc::S_IFREG, 0)?;
        let fh = self.open(inode.ino, false)?;
        Ok((inode, fh))
    }

    fn handle_ino(&self, fh: u64) -> FsResult<u64> {
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
            self.flush_file(ino, &mut st)?;
        }
        Ok(())
    }

    /// close(2) of one descriptor (FUSE's flush). The kernel does not make
    /// close(2) wait for the release that follows the last close, so the
    /// buffers are normally encoded and stored there, off the caller's
    /// path, as a local filesystem's page cache writes back after close.
    /// When the disk is low they are stored now instead, so that close(2)
    /// reports ENOSPC and the caller knows its data did not fit.
    pub fn close_descriptor(&self, fh: u64) -> FsResult<()> {
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
        // The count and the removal under the table's lock: an open waiting
        // for this file's lock then finds the entry gone and starts afresh
        // (`count_open`).
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
            warn!(ino, error = %e, "data of a closed file could not be stored and is dropped");
        }
        self.dirty_total
            .fetch_sub(st.dirty_bytes as u64, Ordering::Relaxed);
        st.dirty.clear();
        st.dirty_bytes = 0;
        drop(st);
        // The last close of an unlinked file deletes it (unless the kernel
        // still knows it: then its `forget` will).
        self.reap(ino)?;
        flushed
    }

    /// fsync(2): data and metadata durable on local disk before returning.
    /// Every chunk file is durable before any index batch names it (see
    /// `EncodeCtx::encode_and_store`), so storing the file's buffers and
    /// syncing the index's log is enough, whoever wrote the chunks (this
    /// handle, an earlier release, a deduplicated copy). Then the chunk
    /// files that batches now durable unreferenced are deleted.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        if let Some(s) = self.existing_state(ino) {
            let mut st = lock(&s);
            self.shrink_chunks_of_small_synced_file(ino, &mut st)?;
            self.flush_file(ino, &mut st)?;
        }
        self.sync_index()
    }

    /// Syncs the index's log, then deletes the chunk files whose
    /// unreferencing batches that sync made durable.
    fn sync_index(&self) -> FsResult<()> {
        let upto = self.counted.writes();
        self.kv.sync()?;
        self.collect_garbage(Some(upto));
        Ok(())
    }

    /// A file fsynced while still small is a database or a log: its commits
    /// rewrite its last chunk each time, so it gets small chunks
    /// (`SYNCED_CHUNK_SIZE`): the whole file is re-cut once, here, into
    /// write buffers that the caller's flush stores in one batch with the
    /// new chunk size (a failure leaves the file as it was, its content
    /// buffered).
    fn shrink_chunks_of_small_synced_file(&self, ino: u64, st: &mut OpenFile) -> FsResult<()> {
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
        for (_, buf) in std::mem::take(&mut st.dirty) {
            self.dirty_total
                .fetch_sub(buf.len() as u64, Ordering::Relaxed);
        }
        st.dirty_bytes = 0;
        st.recut = Some(SYNCED_CHUNK_SIZE);
        st.drop_from = Some(0);
        st.holes.clear();
        let cs = SYNCED_CHUNK_SIZE as usize;
        for (i, piece) in content.chunks(cs).enumerate() {
            st.dirty_bytes += piece.len();
            self.dirty_total
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
            st.dirty.insert(i as u64, piece.to_vec());
        }
        st.a().size.get_or_insert(size);
        Ok(())
    }

    /// Flushes every open file's buffers and makes everything durable
    /// (syncfs, fsyncdir, unmount). Files no longer open have nothing
    /// buffered: their chunk files were durable before their batches.
    pub(super) fn flush_all(&self) -> FsResult<()> {
        let states: Vec<(u64, Arc<Mutex<OpenFile>>)> = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.state.clone()))
            .collect();
        for (ino, s) in states {
            let mut st = lock(&s);
            self.flush_file(ino, &mut st)?;
        }
        self.sync_index()
    }

    fn extent(&self, ino: u64, index: u64) -> FsResult<Option<ChunkRef>> {
        match self.kv.get(Cf::Extent, &types::extent_key(ino, index))? {
            Some(v) => Ok(Some(ChunkRef::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// What slot `index` of an open file holds under its buffers: the
    /// stored chunk, or nothing if the slot is a hole or about to be
    /// dropped.
    fn slot_base(&self, ino: u64, st: &OpenFile, index: u64) -> FsResult<Plain> {
        if st.dropped(index) {
            return Ok(Arc::new(Vec::new()));
        }
        self.stored_slot(ino, index)
    }

    /// The stored plaintext of slot `index` (empty for a hole).
    fn stored_slot(&self, ino: u64, index: u64) -> FsResult<Plain> {
        match self.extent(ino, index)? {
            Some(r) => self.load_chunk(&r),
            None => Ok(Arc::new(Vec::new())),
        }
    }

    /// Reads `size` bytes at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_data(ino, offset, size).map(ReadData::into_vec)
    }

    /// `read` without a copy when the bytes lie in one cached chunk: the
    /// result then shares the chunk's buffer.
    pub fn read_data(&self, ino: u64, offset: u64, size: u32) -> FsResult<ReadData> {
        let state = self.existing_state(ino);
        let mut guard = state.as_ref().map(|s| lock(s));
        self.read_in(ino, guard.as_deref_mut(), offset, u64::from(size))
    }

    /// `read` with the file's state already locked (or not open).
    fn read_in(
        &self,
        ino: u64,
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
            let dirty = guard.as_deref().and_then(|g| g.dirty.get(&index));
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
                    if !g.dirty.contains_key(&next) && !self.read_ahead(ino, next) {
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

    /// Writes `data` at `offset`; returns the bytes written.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
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
            if !st.dirty.contains_key(&index) && st.staged.contains_key(&index) {
                st.write_staged(index, cs, within, &src[..n])?;
                pos += n as u64;
                src = &src[n..];
                continue;
            }
            if !st.dirty.contains_key(&index) {
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
                st.dirty_bytes += base.len();
                self.dirty_total
                    .fetch_add(base.len() as u64, Ordering::Relaxed);
                st.dirty.insert(index, base);
            }
            let grow = {
                let buf = st
                    .dirty
                    .get_mut(&index)
                    .ok_or(FsError::Corrupt("write buffer"))?;
                let before = buf.len();
                if buf.len() < within + n {
                    buf.resize(within + n, 0);
                }
                buf[within..within + n].copy_from_slice(&src[..n]);
                if buf.len() as u64 == cs && within + n == cs as usize {
                    full.push(index);
                }
                buf.len() - before
            };
            st.dirty_bytes += grow;
            self.dirty_total.fetch_add(grow as u64, Ordering::Relaxed);
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
        if self.dirty_total.load(Ordering::Relaxed) > self.cfg.dirty_limit as u64 {
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

    fn forget_if_closed(&self, ino: u64) {
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

    /// Sets the size of `ino` (truncate or extend with zeros).
    pub(super) fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
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
        let dropped: Vec<u64> = st.dirty.range(keep..).map(|(k, _)| *k).collect();
        for k in dropped {
            if let Some(buf) = st.dirty.remove(&k) {
                st.dirty_bytes -= buf.len();
                self.dirty_total
                    .fetch_sub(buf.len() as u64, Ordering::Relaxed);
            }
        }
        let within = (size % cs) as usize;
        if within > 0 {
            let last = size / cs;
            if !st.dirty.contains_key(&last) {
                let stored = self.slot_base(ino, &st, last)?;
                if stored.len() > within {
                    let buf = stored[..within].to_vec();
                    st.dirty_bytes += buf.len();
                    self.dirty_total
                        .fetch_add(buf.len() as u64, Ordering::Relaxed);
                    st.dirty.insert(last, buf);
                }
            }
            if let Some(buf) = st.dirty.get_mut(&last)
                && buf.len() > within
            {
                let cut = buf.len() - within;
                buf.truncate(within);
                st.dirty_bytes -= cut;
                self.dirty_total.fetch_sub(cut as u64, Ordering::Relaxed);
            }
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
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
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
    fn punch_hole(&self, ino: u64, offset: u64, end: u64) -> FsResult<()> {
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
                let gone: Vec<u64> = st.dirty.range(first..last).map(|(k, _)| *k).collect();
                for k in gone {
                    if let Some(buf) = st.dirty.remove(&k) {
                        st.dirty_bytes -= buf.len();
                        self.dirty_total
                            .fetch_sub(buf.len() as u64, Ordering::Relaxed);
                    }
                }
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

    /// Encodes and stores every buffered slot of `ino`, and writes its size
    /// and times.
    pub(super) fn flush_file(&self, ino: u64, st: &mut OpenFile) -> FsResult<()> {
        self.drain(ino, st, true)?;
        let all: Vec<u64> = st.dirty.keys().copied().collect();
        self.flush_slots(ino, st, &all)?;
        self.flush_staged(ino, st)?;
        let nothing = {
            let a = st.a();
            a.size.is_none() && a.mtime.is_none()
        };
        if nothing && st.drop_from.is_none() && st.holes.is_empty() && st.recut.is_none() {
            return Ok(());
        }
        self.commit(ino, st, Vec::new())
    }

    /// Encodes and stores the given buffered slots.
    fn flush_slots(&self, ino: u64, st: &mut OpenFile, slots: &[u64]) -> FsResult<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let inode = self.load(ino)?;
        let mut bufs = Vec::with_capacity(slots.len());
        for i in slots {
            if let Some(b) = st.dirty.remove(i) {
                st.dirty_bytes -= b.len();
                self.dirty_total
                    .fetch_sub(b.len() as u64, Ordering::Relaxed);
                bufs.push((*i, b));
            }
        }
        let prepared = match self.prepare(&inode, bufs) {
            Ok(p) => p,
            Err((e, bufs)) => {
                // Keep the data buffered: the caller sees the error, nothing is lost.
                for (i, b) in bufs {
                    st.dirty_bytes += b.len();
                    self.dirty_total
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    st.dirty.insert(i, b);
                }
                return Err(e);
            }
        };
        let kept: Vec<(u64, Plain)> = prepared
            .iter()
            .map(|p| (p.index, p.plain.clone()))
            .collect();
        if let Err(e) = self.commit(ino, st, prepared) {
            for (index, plain) in kept {
                self.redirty(st, index, plain);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Moves every buffered slot of this file to its staging file.
    fn spill(&self, st: &mut OpenFile, cs: u64) -> FsResult<()> {
        if st.staging.is_none() {
            let Some(dir) = &self.cfg.staging_dir else {
                return Ok(());
            };
            st.staging = Some(open_staging(dir)?);
        }
        let slots: Vec<u64> = st.dirty.keys().copied().collect();
        for index in slots {
            let Some(buf) = st.dirty.remove(&index) else {
                continue;
            };
            if let Err(e) = st.put_staged(index, cs, &buf) {
                st.dirty.insert(index, buf);
                return Err(e);
            }
            st.dirty_bytes -= buf.len();
            self.dirty_total
                .fetch_sub(buf.len() as u64, Ordering::Relaxed);
            bump(&self.stats.slots_spilled, 1);
        }
        Ok(())
    }

    /// Encodes and stores the staged slots, a few at a time (bounded memory).
    fn flush_staged(&self, ino: u64, st: &mut OpenFile) -> FsResult<()> {
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
                st.dirty_bytes += buf.len();
                self.dirty_total
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                st.dirty.insert(index, buf);
            }
            let slots: Vec<u64> = batch.iter().map(|(k, _)| *k).collect();
            if let Err(e) = self.flush_slots(ino, st, &slots) {
                // Back to the staging file: nothing is lost.
                let cs_slots: Vec<u64> = slots
                    .iter()
                    .copied()
                    .filter(|i| st.dirty.contains_key(i))
                    .collect();
                for index in cs_slots {
                    if let Some(buf) = st.dirty.remove(&index) {
                        st.dirty_bytes -= buf.len();
                        self.dirty_total
                            .fetch_sub(buf.len() as u64, Ordering::Relaxed);
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
    fn redirty(&self, st: &mut OpenFile, index: u64, plain: Plain) {
        if st.dirty.contains_key(&index) {
            return;
        }
        let buf = Arc::try_unwrap(plain).unwrap_or_else(|a| a.to_vec());
        st.dirty_bytes += buf.len();
        self.dirty_total
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        st.dirty.insert(index, buf);
    }

    /// Hands full slots to the encoder pool. A slot whose previous version
    /// is still being encoded stays buffered (versions of one slot must
    /// commit in order; it is flushed synchronously later).
    fn submit_slots(&self, inode: &Inode, st: &mut OpenFile, slots: &[u64]) {
        let tx = st.results.get_or_insert_with(channel).0.clone();
        for &index in slots {
            if st.inflight.contains_key(&index) {
                continue;
            }
            let Some(buf) = st.dirty.remove(&index) else {
                continue;
            };
            // Still counted in `dirty_total` until committed.
            st.dirty_bytes -= buf.len();
            let plain: Plain = Arc::new(buf);
            st.inflight.insert(index, plain.clone());
            st.pending += 1;
            let enc = self.enc.clone();
            let tx = tx.clone();
            let name = inode.ino.to_string();
            let syncer = self.syncer.clone();
            let job = Box::new(move || {
                let r = enc.prepare_guarded(index, plain, &name, false);
                enc.deliver_durable(
                    r,
                    &syncer,
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                );
            });
            if let Err(job) = self.pool.submit(job) {
                job();
            }
        }
    }

    /// Commits the results of finished encoder jobs; with `wait`, waits for
    /// every job of this file first. A failed job puts its data back into
    /// the write buffers and its error is returned.
    fn drain(&self, ino: u64, st: &mut OpenFile, wait: bool) -> FsResult<()> {
        if st.pending == 0 {
            return Ok(());
        }
        let mut done = Vec::new();
        let mut failed = Vec::new();
        if let Some((_, rx)) = &st.results {
            while st.pending > 0 {
                let r = if wait {
                    match rx.recv() {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                } else {
                    match rx.try_recv() {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                };
                st.pending -= 1;
                match r {
                    Ok(p) => done.push(p),
                    Err(f) => failed.push(f),
                }
            }
        }
        let mut first_err = None;
        for (e, index, plain) in failed {
            self.settle_inflight(st, index, &plain);
            self.redirty(st, index, plain);
            first_err.get_or_insert(e);
        }
        if !done.is_empty() {
            let kept: Vec<(u64, Plain)> = done.iter().map(|p| (p.index, p.plain.clone())).collect();
            let committed = self.commit(ino, st, done);
            for (index, plain) in kept {
                self.settle_inflight(st, index, &plain);
                if committed.is_err() {
                    self.redirty(st, index, plain);
                }
            }
            if let Err(e) = committed {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A job for `index` is over: forget its in-flight copy (if it is still
    /// the current one) and stop counting its bytes.
    fn settle_inflight(&self, st: &mut OpenFile, index: u64, plain: &Plain) {
        if st
            .inflight
            .get(&index)
            .is_some_and(|p| Arc::ptr_eq(p, plain))
        {
            st.inflight.remove(&index);
        }
        self.dirty_total
            .fetch_sub(plain.len() as u64, Ordering::Relaxed);
    }

    /// Computes ids and encodes new chunks (in parallel); writes chunk files.
    /// On error, hands the buffers back.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        inode: &Inode,
        bufs: Vec<(u64, Vec<u8>)>,
    ) -> Result<Vec<Prepared>, (FsError, Vec<(u64, Vec<u8>)>)> {
        // On the encoder pool, whose threads run at a lower priority than
        // the FUSE threads: this thread sleeps meanwhile, so the requests
        // that arrive in the meantime (a program goes on after close(2)
        // while its release encodes) are not queued behind CES work.
        let name = inode.ino.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let n = bufs.len();
        for (index, buf) in bufs {
            let enc = self.enc.clone();
            let tx = tx.clone();
            let name = name.clone();
            let syncer = self.syncer.clone();
            let job: Box<dyn FnOnce() + Send> = Box::new(move || {
                let r = enc.prepare_guarded(index, Arc::new(buf), &name, false);
                enc.deliver_durable(
                    r,
                    &syncer,
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                );
            });
            if let Err(job) = self.pool.submit(job) {
                job();
            }
        }
        drop(tx);
        let results: Vec<Result<Prepared, (FsError, (u64, Vec<u8>))>> = rx
            .iter()
            .take(n)
            .map(|r| {
                r.map_err(|(e, i, p)| (e, (i, Arc::try_unwrap(p).unwrap_or_else(|a| a.to_vec()))))
            })
            .collect();
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(p) => ok.push(p),
                Err((e, b)) => {
                    first_err.get_or_insert(e);
                    failed.push(b);
                }
            }
        }
        match first_err {
            None => Ok(ok),
            Some(e) => {
                // Return every buffer, including those that did encode: their
                // files are unreferenced and get collected.
                for p in ok {
                    if let Some(blob) = p.encoded.as_ref().and_then(Stored::file) {
                        let _ = self.chunks.delete(&blob);
                    }
                    failed.push((
                        p.index,
                        Arc::try_unwrap(p.plain).unwrap_or_else(|a| a.to_vec()),
                    ));
                }
                Err((e, failed))
            }
        }
    }

    /// One batch: new extents, refcounts, dropped extents, the inode (with
    /// a re-cut's chunk size). No encoding, fsync or scan of the file runs
    /// under `ns`: extents to drop are listed first, under the file's lock
    /// (every other change to this file's extents takes it too, or deletes
    /// the inode, which the batch then finds); a chunk deduplicated against
    /// a record deleted since is encoded with `ns` released, and the batch
    /// is made again.
    fn commit(&self, ino: u64, st: &mut OpenFile, mut prepared: Vec<Prepared>) -> FsResult<()> {
        let gone = self.extents_to_drop(ino, st)?;
        loop {
            match self.try_commit(ino, st, &mut prepared, &gone)? {
                Commit::Done(dead) => {
                    st.drop_from = None;
                    st.holes.clear();
                    st.recut = None;
                    self.delete_chunk_files(&dead);
                    return Ok(());
                }
                Commit::Vanished(ids) => {
                    for p in prepared
                        .iter_mut()
                        .filter(|p| p.encoded.is_none() && ids.contains(&p.id))
                    {
                        p.encoded = Some(self.enc.encode_and_store(&p.plain, &Hint::default())?);
                    }
                }
            }
        }
    }

    /// The stored extents a commit of `st` drops: (key, chunk) of every
    /// extent from `drop_from` on and in each punched hole.
    #[allow(clippy::type_complexity)]
    fn extents_to_drop(
        &self,
        ino: u64,
        st: &OpenFile,
    ) -> FsResult<Vec<(Vec<u8>, FsResult<ChunkRef>)>> {
        let mut ranges: Vec<(u64, u64)> = st.holes.clone();
        if let Some(from) = st.drop_from {
            ranges.push((from, u64::MAX));
        }
        let prefix = types::ino_key(ino);
        let mut gone = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (from, to) in ranges {
            let start = types::extent_key(ino, from);
            let end = types::extent_key(ino, to);
            self.kv.scan(Cf::Extent, &prefix, &start, &mut |k, v| {
                if k >= end.as_slice() && to != u64::MAX {
                    return false;
                }
                if seen.insert(k.to_vec()) {
                    gone.push((k.to_vec(), ChunkRef::decode(v)));
                }
                true
            })?;
        }
        Ok(gone)
    }

    /// One attempt at `commit`, under `ns`.
    fn try_commit(
        &self,
        ino: u64,
        st: &mut OpenFile,
        prepared: &mut Vec<Prepared>,
        gone: &[(Vec<u8>, FsResult<ChunkRef>)],
    ) -> FsResult<Commit> {
        let _g = self.lock_ns();
        let mut inode = match self.load(ino) {
            Ok(i) => i,
            Err(FsError::NotFound) => {
                // Deleted meanwhile: nothing to attach the data to. No batch
                // names these files.
                for blob in prepared.iter().filter_map(|p| p.encoded.as_ref()?.file()) {
                    let _ = self.chunks.delete(&blob);
                }
                prepared.clear();
                return Ok(Commit::Done(Vec::new()));
            }
            Err(e) => return Err(e),
        };
        // Deduplicated against a chunk deleted since: encode it (not here).
        let mut vanished = Vec::new();
        for p in prepared.iter().filter(|p| p.encoded.is_none()) {
            if self.kv.get(Cf::Chunk, &p.id)?.is_none() && !vanished.contains(&p.id) {
                vanished.push(p.id);
            }
        }
        if !vanished.is_empty() {
            return Ok(Commit::Vanished(vanished));
        }
        let new_files: Vec<[u8; 32]> = prepared
            .iter()
            .filter_map(|p| p.encoded.as_ref()?.file())
            .collect();
        let mut b = Batch::new();
        let committing: Vec<u64> = prepared.iter().map(|p| p.index).collect();
        let mut delta: HashMap<[u8; 32], i64> = HashMap::new();
        let mut new_records: HashMap<[u8; 32], Stored> = HashMap::new();
        let mut orphaned_blobs = Vec::new();
        for (k, r) in gone {
            b.delete(Cf::Extent, k);
            if let Ok(r) = r {
                *delta.entry(r.id).or_default() -= 1;
            }
        }
        for p in prepared.iter_mut() {
            bump(&self.stats.bytes_flushed, u64::from(p.len));
            let old = if st.dropped(p.index) {
                None
            } else {
                self.extent(ino, p.index)?
            };
            if let Some(old) = old {
                *delta.entry(old.id).or_default() -= 1;
            }
            *delta.entry(p.id).or_default() += 1;
            b.put(
                Cf::Extent,
                &types::extent_key(ino, p.index),
                &ChunkRef {
                    id: p.id,
                    len: p.len,
                }
                .encode(),
            );
            if let Some(enc) = p.encoded.take()
                && let Some(blob) = new_records.insert(p.id, enc).and_then(|dup| dup.file())
            {
                orphaned_blobs.push(blob);
            }
        }
        let mut dead = Vec::new();
        for (id, d) in delta {
            if d == 0 {
                // A chunk replaced by itself; a fresh encoding of it is surplus.
                if let Some(blob) = new_records.remove(&id).and_then(|s| s.file())
                    && self.kv.get(Cf::Chunk, &id)?.is_some()
                {
                    orphaned_blobs.push(blob);
                }
                continue;
            }
            let existing = self
                .kv
                .get(Cf::Chunk, &id)?
                .map(|v| ChunkRecord::decode(&v))
                .transpose()?;
            let fresh = new_records.remove(&id);
            let rec = match (existing, fresh) {
                (Some(rec), fresh) => {
                    orphaned_blobs.extend(fresh.and_then(|s| s.file()));
                    rec
                }
                (None, Some(stored)) => stored.into_record(&mut b, &id, self.cfg.upload),
                (None, None) if d > 0 => {
                    return Err(FsError::Corrupt("deduplicated chunk vanished"));
                }
                (None, None) => continue,
            };
            let refs = u64::try_from(rec.refs as i64 + d).unwrap_or(0);
            self.set_refs(&mut b, &id, rec, refs, &mut dead);
        }
        for blob in &orphaned_blobs {
            b.put(Cf::Gc, blob, &[]);
        }
        dead.extend(orphaned_blobs);
        if let Some(cs) = st.recut {
            inode.chunk_size = cs;
        }
        let pending_size = st.a().size;
        if let Some(size) = pending_size {
            // The stored size never covers appended data that is not
            // stored yet (buffered, or still being encoded): if storing
            // it fails (ENOSPC), the file must not show zeros where data
            // was written. The full size stays in the overlay until then.
            let cs = st.chunk_size(&inode);
            let limit = st
                .dirty
                .keys()
                .chain(st.inflight.keys())
                .chain(st.staged.keys())
                .filter(|i| !committing.contains(i))
                .filter(|&&i| i.saturating_add(1).saturating_mul(cs) > inode.size)
                .map(|&i| i.saturating_mul(cs).max(inode.size))
                .min();
            inode.size = limit.map_or(size, |l| size.min(l));
        }
        {
            let a = st.a();
            if let Some(t) = a.mtime {
                inode.mtime = t;
            }
            if let Some(t) = a.ctime {
                inode.ctime = t;
            }
        }
        self.put_inode(&mut b, &inode);
        // Small chunks are likely read again soon (editors, builds); large
        // streams would only evict the read working set.
        let cached: Vec<([u8; 32], Plain)> = prepared
            .iter()
            .filter(|p| p.plain.len() <= WRITE_CACHE_MAX)
            .map(|p| (p.id, p.plain.clone()))
            .collect();
        if let Err(e) = self.kv.write(b, false) {
            // Nothing names the new encodings: their files go now.
            for blob in new_files {
                let _ = self.chunks.delete(&blob);
            }
            return Err(e.into());
        }
        for (id, plain) in cached {
            self.cache.insert(id, plain);
        }
        // Only now (a failed batch keeps them in the overlay), and only
        // what was stored (a write may have moved them on meanwhile).
        let mut a = st.a();
        if a.size == Some(inode.size) {
            a.size = None;
        }
        if a.mtime == Some(inode.mtime) {
            a.mtime = None;
        }
        if a.ctime == Some(inode.ctime) {
            a.ctime = None;
        }
        Ok(Commit::Done(dead))
    }

    /// Writes chunk `id`'s new refcount into `b`; at zero the record goes,
    /// with its inline shards, or its file is queued in `dead` for deletion
    /// once `b` is durable.
    fn set_refs(
        &self,
        b: &mut Batch,
        id: &[u8; 32],
        mut rec: ChunkRecord,
        refs: u64,
        dead: &mut Vec<[u8; 32]>,
    ) {
        if refs > 0 {
            rec.refs = refs;
            b.put(Cf::Chunk, id, &rec.encode());
            return;
        }
        b.delete(Cf::Chunk, id);
        b.delete(Cf::Upload, &super::replica::place_key(id));
        // Peers' copies are released by the uploader, from the queue.
        if let Err(e) = super::replica::queue_drops(b, &rec) {
            warn!(chunk = %hex8(id), error = %e, "remote copies of a deleted chunk cannot be named; they stay on their peers");
        }
        if rec.location == LOC_INLINE {
            b.delete(Cf::Inline, id);
        } else {
            let blob = rec.blob();
            b.put(Cf::Gc, &blob, &[]);
            dead.push(blob);
        }
        self.cache.remove(id);
        bump(&self.stats.chunks_deleted, 1);
    }

    /// Drops one reference to each chunk in `ids` inside `b`; returns the
    /// chunk files to delete once `b` has committed.
    pub(super) fn release_chunks(
        &self,
        b: &mut Batch,
        ids: &[[u8; 32]],
    ) -> FsResult<Vec<[u8; 32]>> {
        let mut delta: HashMap<[u8; 32], u64> = HashMap::new();
        for id in ids {
            *delta.entry(*id).or_default() += 1;
        }
        let mut dead = Vec::new();
        for (id, n) in delta {
            let Some(v) = self.kv.get(Cf::Chunk, &id)? else {
                continue;
            };
            let rec = ChunkRecord::decode(&v)?;
            let refs = rec.refs.saturating_sub(n);
            self.set_refs(b, &id, rec, refs, &mut dead);
        }
        Ok(dead)
    }

    /// Schedules the deletion of chunk files whose records are gone, by
    /// batches already written. A file is deleted only once the batch that
    /// unreferenced it is durable (the index's log synced after it), so a
    /// power cut can never leave the index naming a deleted file; until
    /// then its name waits here (and in the GC table), with the index's
    /// write count, which tells which sync covers its batch.
    pub(super) fn delete_chunk_files(&self, blobs: &[[u8; 32]]) {
        if blobs.is_empty() {
            return;
        }
        let written = self.counted.writes();
        let n = {
            let mut pending = self.gc_pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.extend(blobs.iter().map(|b| (*b, written)));
            pending.len()
        };
        if n >= GC_BATCH || self.disk_is_low() {
            self.collect_garbage(None);
        }
    }

    /// Is the data dir's disk nearly full? Then deletions are not batched
    /// (the space is what the user is waiting for), and close(2) and the
    /// last release store a file's buffers on the caller's path, so that an
    /// ENOSPC reaches the writer and whoever opens the file next finds only
    /// what was stored.
    pub fn disk_is_low(&self) -> bool {
        self.chunks.disk_usage().map_or(true, |u| {
            u.available_bytes < GC_NOW_BELOW_FREE_BYTES.max(u.total_bytes / 20)
        })
    }

    /// Deletes the pending chunk files whose batches are durable: those
    /// written before the sync that left the index's write count at
    /// `synced` (None: sync now), then their GC entries.
    pub(super) fn collect_garbage(&self, synced: Option<u64>) {
        if self.cfg.read_only {
            return;
        }
        let upto = match synced {
            Some(upto) => upto,
            None => {
                let upto = self.counted.writes();
                if let Err(e) = self.kv.sync() {
                    warn!(error = %e, "index sync failed; chunk deletion postponed");
                    return;
                }
                upto
            }
        };
        let blobs: Vec<[u8; 32]> = {
            let mut pending = self.gc_pending.lock().unwrap_or_else(|p| p.into_inner());
            let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(_, w)| *w <= upto);
            *pending = later;
            due.into_iter().map(|(b, _)| b).collect()
        };
        if blobs.is_empty() {
            return;
        }
        let mut b = Batch::new();
        for blob in &blobs {
            match self.chunks.delete(blob) {
                Ok(_) => b.delete(Cf::Gc, blob),
                Err(e) => warn!(error = %e, "chunk file deletion failed; retried at next mount"),
            }
        }
        if let Err(e) = self.kv.write(b, false) {
            warn!(error = %e, "GC bookkeeping failed; retried at next mount");
        }
        // Space came back: the index's reserve first, if it was missing.
        if let Some(r) = &self.cfg.reserve
            && !r.is_in_place()
        {
            match r.restore() {
                Ok(()) => info!(bytes = r.bytes(), "the index's reserve is back in place"),
                Err(e) => debug!(error = %e, "the index's reserve is not restored yet"),
            }
        }
    }

    /// At mount: deletes orphans (unlinked while open when the last run
    /// ended) and chunk files left by interrupted deletions or writes.
    /// After a run that did not end cleanly (a crash or a power cut: no
    /// clean-shutdown mark), every chunk file that no record names is
    /// deleted: a power cut can keep a durable chunk file whose GC entry
    /// was still in the index's unsynced log.
    pub(super) fn recover(&self) -> FsResult<()> {
        let clean = self.kv.get(Cf::Meta, super::META_CLEAN)?.is_some();
        if clean {
            // Durably: a later power cut must not find the mark.
            let mut b = Batch::new();
            b.delete(Cf::Meta, super::META_CLEAN);
            self.kv.write(b, true)?;
        }
        let mut orphans = Vec::new();
        self.kv.scan(Cf::Orphan, &[], &[], &mut |k, _| {
            if let Ok(k) = <[u8; 8]>::try_from(k) {
                orphans.push(u64::from_be_bytes(k));
            }
            true
        })?;
        for ino in orphans {
            self.reap(ino)?;
            debug!(ino, "deleted orphan inode");
        }
        let gc = self.ids_in(Cf::Gc)?;
        self.delete_chunk_files(&gc);
        self.collect_garbage(None);
        if !clean {
            let swept = self.sweep_unreferenced_files()?;
            if swept > 0 {
                info!(
                    files = swept,
                    "removed chunk files that no chunk uses (left by a crash)"
                );
            }
        }
        Ok(())
    }

    /// Deletes every chunk file that no chunk record names; returns how
    /// many. Only while nothing is being encoded (at mount).
    fn sweep_unreferenced_files(&self) -> FsResult<usize> {
        let named = super::fsck::named_files(&*self.kv)?;
        let mut stray = Vec::new();
        self.chunks.visit(&mut |id, _| {
            if !named.contains(id) {
                stray.push(*id);
            }
            true
        })?;
        for blob in &stray {
            self.chunks.delete(blob)?;
        }
        Ok(stray.len())
    }

    /// Queues the decode of slot `index` of `ino` into the cache on the
    /// pool, if it is stored and not cached; never waits. False when the
    /// pool's queue is full (nothing queued).
    fn read_ahead(&self, ino: u64, index: u64) -> bool {
        let Ok(Some(r)) = self.extent(ino, index) else {
            return true; // a hole, or unreadable: nothing to decode ahead
        };
        if self.cache.contains(&r.id) {
            return true;
        }
        let Some((rec, m)) = self
            .kv
            .get(Cf::Chunk, &r.id)
            .ok()
            .flatten()
            .and_then(|v| ChunkRecord::decode(&v).ok())
            .and_then(|rec| Manifest::decode(&rec.manifest).ok().map(|m| (rec, m)))
        else {
            return true; // unreadable: the reader's own path reports it
        };
        if !self.enc.begin_prefetch(&r.id) {
            return true; // cached meanwhile, or already on its way
        }
        let enc = self.enc.clone();
        let queued = if rec.location == LOC_FILE {
            // A fetch thread reads the data shards, then queues their decode
            // on the pool. The disk is asked for them now, in case the
            // fetch reads through the page cache.
            self.chunks.will_need(
                &rec.blob(),
                u64::from(m.params.k()) * u64::from(m.shard_len),
            );
            let pool = self.pool.clone();
            self.fetch.try_submit(Box::new(move || {
                let e = enc.clone();
                e.guard_prefetch(r.id, move || enc.fetch(&pool, r.id, &rec, m));
            }))
        } else {
            self.pool.try_submit(Box::new(move || {
                enc.guard_prefetch(r.id, || enc.prefetch(r.id, &rec, &m));
            }))
        };
        if !queued {
            self.enc.end_prefetch(&r.id, None);
        }
        queued
    }

    /// The plaintext of a chunk: from the cache, else from its shards
    /// (verified, rebuilt if some are missing or corrupt, then rewritten).
    fn load_chunk(&self, r: &ChunkRef) -> FsResult<Plain> {
        if let Some(p) = self.cache.get(&r.id) {
            return Ok(p);
        }
        self.enc.wait_for_prefetch(&r.id);
        if let Some(p) = self.cache.get(&r.id) {
            return Ok(p);
        }
        let rec = self
            .kv
            .get(Cf::Chunk, &r.id)?
            .ok_or(FsError::Corrupt("extent names a missing chunk"))?;
        let rec = ChunkRecord::decode(&rec)?;
        let manifest =
            Manifest::decode(&rec.manifest).map_err(|_| FsError::Corrupt("chunk manifest"))?;
        let short = hex8(&r.id);
        let (plain, report) = match self.enc.decode_stored(&r.id, &rec, &manifest) {
            Ok(x) => x,
            Err(e) => {
                if matches!(e, FsError::Chunk { .. }) {
                    bump(&self.stats.chunks_lost, 1);
                }
                warn!(chunk = %short, error = %e, "chunk unreadable");
                return Err(e);
            }
        };
        bump(&self.stats.chunks_decoded, 1);
        let plain = Arc::new(plain);
        if (!report.corrupt.is_empty() || !report.missing.is_empty()) && !self.cfg.read_only {
            warn!(chunk = %short, corrupt = ?report.corrupt, missing = ?report.missing, "damaged chunk rebuilt; rewriting its bad shards");
            if let Err(e) = self.repair(&r.id, &rec, &manifest) {
                warn!(chunk = %short, error = %e, "repair failed; will retry on next read");
            } else {
                bump(&self.stats.chunks_repaired, 1);
            }
        }
        self.cache.insert(r.id, plain.clone());
        Ok(plain)
    }

    /// Rebuilds a damaged chunk's bad or missing shards from its good ones
    /// and writes them back in place: the same manifest, nonce and shard
    /// addresses (nothing is decrypted or re-encoded), so the record does
    /// not change and copies of the good shards held elsewhere stay valid.
    fn repair(&self, id: &[u8; 32], rec: &ChunkRecord, manifest: &Manifest) -> FsResult<()> {
        let stored = match rec.location {
            LOC_INLINE => self.kv.get(Cf::Inline, id)?,
            _ => self.chunks.read_all(&rec.blob())?,
        }
        .unwrap_or_default();
        let s = manifest.shard_len as usize;
        let view: Vec<Option<&[u8]>> = (0..manifest.params.total())
            .map(|i| stored.get(i * s..(i + 1) * s))
            .collect();
        let (all, report) =
            crate::ces::rebuild_shards(manifest, &view).map_err(|e| FsError::Chunk {
                chunk: hex8(id),
                source: e,
            })?;
        if report.corrupt.is_empty() && report.missing.is_empty() && stored.len() == all.len() {
            return Ok(()); // repaired meanwhile
        }
        if rec.location == LOC_FILE {
            // Same name (the manifest's hash): replaced atomically, durably.
            self.chunks.write(&rec.blob(), &all, true)?;
        }
        let _g = self.lock_ns();
        let current = self.kv.get(Cf::Chunk, id)?;
        let same = current
            .as_deref()
            .map(ChunkRecord::decode)
            .transpose()?
            .is_some_and(|c| c.manifest == rec.manifest);
        if !same {
            // Deleted (or replaced) meanwhile: the file just written is
            // nobody's; it goes like any unreferenced one.
            drop(_g);
            if rec.location == LOC_FILE {
                self.delete_chunk_files(&[rec.blob()]);
            }
            return Ok(());
        }
        if rec.location == LOC_INLINE {
            let mut b = Batch::new();
            b.put(Cf::Inline, id, &all);
            self.kv.write(b, false)?;
        }
        Ok(())
    }
}

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

pub(crate) fn hex8(id: &[u8; 32]) -> String {
    id[..8].iter().map(|b| format!("{b:02x}")).collect()
}
