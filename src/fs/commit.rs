//! Storing a file's buffers: encoding slots on the chunk layer's pool,
//! collecting the results, and the commit: one batch under the namespace
//! lock that swaps extents, adjusts chunk refcounts and writes the inode.
//! Also fsync and the flush of every open file.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::open::{OpenFile, lock};
use super::types::Ino;
use super::types::{self, ChunkRef, Inode};
use super::{Fs, FsError, FsResult};
use crate::cache::Plain;
use crate::ces::{ChunkId, Hint};
use crate::chunks::{ChunkRecord, FileId, Prepared, Stored};
use crate::placement::queue;
use crate::store::{Batch, Cf};

/// Written chunks up to this size go into the read cache.
const WRITE_CACHE_MAX: usize = 1 << 20;

/// How an attempt to commit ended.
enum Commit {
    /// Stored; these chunk files are to be deleted once the batch is durable.
    Done(Vec<FileId>),
    /// Chunks deduplicated against records deleted since: encode them, then
    /// try again.
    Vanished(Vec<ChunkId>),
}

impl Fs {
    /// fsync(2): data and metadata durable on local disk before returning.
    /// Every chunk file is durable before any index batch names it (see
    /// `chunks::encode`), so storing the file's buffers and
    /// syncing the index's log is enough, whoever wrote the chunks (this
    /// handle, an earlier release, a deduplicated copy). Then the chunk
    /// files that batches now durable unreferenced are deleted.
    pub fn fsync(&self, ino: Ino) -> FsResult<()> {
        if let Some(s) = self.existing_state(ino) {
            let mut st = lock(&s);
            self.shrink_chunks_of_small_synced_file(ino, &mut st)
                .and_then(|()| self.flush_file(ino, &mut st))
                .inspect_err(|_| self.suspect_cache(ino))?;
        }
        self.sync_index()?;
        self.sync_remote(ino)
    }

    /// Syncs the index's log, then deletes the chunk files whose
    /// unreferencing batches that sync made durable.
    pub(super) fn sync_index(&self) -> FsResult<()> {
        let upto = self.counted.writes();
        self.kv.sync()?;
        self.collect_garbage(Some(upto));
        Ok(())
    }

    /// Flushes every open file's buffers and makes everything durable
    /// (syncfs, fsyncdir, unmount). Files no longer open have nothing
    /// buffered: their chunk files were durable before their batches.
    pub(super) fn flush_all(&self) -> FsResult<()> {
        let states: Vec<(Ino, Arc<Mutex<OpenFile>>)> = self
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

    /// Encodes and stores every buffered slot of `ino`, and writes its size
    /// and times.
    pub(super) fn flush_file(&self, ino: Ino, st: &mut OpenFile) -> FsResult<()> {
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
    pub(super) fn flush_slots(&self, ino: Ino, st: &mut OpenFile, slots: &[u64]) -> FsResult<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let inode = self.load(ino)?;
        let mut bufs = Vec::with_capacity(slots.len());
        for i in slots {
            if let Some(b) = st.dirty.remove(*i) {
                bufs.push((*i, b));
            }
        }
        let prepared = match self.prepare(&inode, bufs) {
            Ok(p) => p,
            Err((e, bufs)) => {
                // Keep the data buffered: the caller sees the error, nothing is lost.
                for (i, b) in bufs {
                    st.dirty.insert(i, b);
                }
                return Err(e);
            }
        };
        let kept: Vec<(u64, Plain)> = prepared.iter().map(|p| (p.slot, p.plain.clone())).collect();
        if let Err(e) = self.commit(ino, st, prepared) {
            for (index, plain) in kept {
                self.redirty(st, index, plain);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Hands full slots to the encoder pool. A slot whose previous version
    /// is still being encoded stays buffered (versions of one slot must
    /// commit in order; it is flushed synchronously later).
    pub(super) fn submit_slots(&self, inode: &Inode, st: &mut OpenFile, slots: &[u64]) {
        let tx = st.results.get_or_insert_with(channel).0.clone();
        for &index in slots {
            if st.inflight.contains_key(&index) {
                continue;
            }
            // Still counted in the shared total until settled.
            let Some(buf) = st.dirty.hand_off(index) else {
                continue;
            };
            let plain: Plain = Arc::new(buf);
            st.inflight.insert(index, plain.clone());
            st.pending += 1;
            let tx = tx.clone();
            self.chunks.submit_encode(
                index,
                plain,
                inode.ino.to_string(),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
        }
    }

    /// Commits the results of finished encoder jobs; with `wait`, waits for
    /// every job of this file first. A failed job puts its data back into
    /// the write buffers and its error is returned.
    pub(super) fn drain(&self, ino: Ino, st: &mut OpenFile, wait: bool) -> FsResult<()> {
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
            first_err.get_or_insert(e.into());
        }
        if !done.is_empty() {
            let kept: Vec<(u64, Plain)> = done.iter().map(|p| (p.slot, p.plain.clone())).collect();
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
        st.dirty.settled(plain.len());
    }

    /// Computes ids and encodes new chunks (in parallel); writes chunk files.
    /// On error, hands the buffers back.
    #[allow(clippy::type_complexity)]
    pub(super) fn prepare(
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
            let tx = tx.clone();
            self.chunks.submit_encode(
                index,
                Arc::new(buf),
                name.clone(),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
        }
        drop(tx);
        let results: Vec<Result<Prepared, (FsError, (u64, Vec<u8>))>> = rx
            .iter()
            .take(n)
            .map(|r| {
                r.map_err(|(e, i, p)| {
                    (
                        e.into(),
                        (i, Arc::try_unwrap(p).unwrap_or_else(|a| a.to_vec())),
                    )
                })
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
                    if let Some(file) = p.encoded.as_ref().and_then(Stored::file) {
                        let _ = self.chunks.delete_file(&file);
                    }
                    failed.push((
                        p.slot,
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
    pub(super) fn commit(
        &self,
        ino: Ino,
        st: &mut OpenFile,
        mut prepared: Vec<Prepared>,
    ) -> FsResult<()> {
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
                        p.encoded = Some(self.chunks.encode_and_store(&p.plain, &Hint::default())?);
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
        ino: Ino,
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
        ino: Ino,
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
                for file in prepared.iter().filter_map(|p| p.encoded.as_ref()?.file()) {
                    let _ = self.chunks.delete_file(&file);
                }
                prepared.clear();
                return Ok(Commit::Done(Vec::new()));
            }
            Err(e) => return Err(e),
        };
        // Deduplicated against a chunk deleted since: encode it (not here).
        let mut vanished = Vec::new();
        for p in prepared.iter().filter(|p| p.encoded.is_none()) {
            if !self.chunks.table().contains(&p.id)? && !vanished.contains(&p.id) {
                vanished.push(p.id);
            }
        }
        if !vanished.is_empty() {
            return Ok(Commit::Vanished(vanished));
        }
        let new_files: Vec<FileId> = prepared
            .iter()
            .filter_map(|p| p.encoded.as_ref()?.file())
            .collect();
        let mut b = Batch::new();
        let committing: Vec<u64> = prepared.iter().map(|p| p.slot).collect();
        let mut delta: HashMap<ChunkId, i64> = HashMap::new();
        let mut new_records: HashMap<ChunkId, Stored> = HashMap::new();
        let mut orphaned_blobs = Vec::new();
        for (k, r) in gone {
            b.delete(Cf::Extent, k);
            if let Ok(r) = r {
                *delta.entry(r.id).or_default() -= 1;
            }
        }
        for p in prepared.iter_mut() {
            self.stats
                .bytes_flushed
                .fetch_add(u64::from(p.len), Ordering::Relaxed);
            let old = if st.dropped(p.slot) {
                None
            } else {
                self.extent(ino, p.slot)?
            };
            if let Some(old) = old {
                *delta.entry(old.id).or_default() -= 1;
            }
            *delta.entry(p.id).or_default() += 1;
            b.put(
                Cf::Extent,
                &types::extent_key(ino, p.slot),
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
                    && self.chunks.table().contains(&id)?
                {
                    orphaned_blobs.push(blob);
                }
                continue;
            }
            let existing = self.chunks.table().record(&id)?;
            let fresh = new_records.remove(&id);
            let rec = match (existing, fresh) {
                (Some(rec), fresh) => {
                    orphaned_blobs.extend(fresh.and_then(|s| s.file()));
                    rec
                }
                (None, Some(stored)) => {
                    let (rec, inline) = stored.into_record();
                    self.chunks.table().create(&mut b, &id, &rec, &inline);
                    if self.cfg.upload {
                        queue::place(&mut b, &id);
                    }
                    rec
                }
                (None, None) if d > 0 => {
                    return Err(FsError::Corrupt("deduplicated chunk vanished"));
                }
                (None, None) => continue,
            };
            let refs = u64::try_from(rec.refs as i64 + d).unwrap_or(0);
            self.set_refs(&mut b, &id, rec, refs, &mut dead);
        }
        for file in &orphaned_blobs {
            self.chunks.table().collectable(&mut b, file);
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
        let cached: Vec<(ChunkId, Plain)> = prepared
            .iter()
            .filter(|p| p.plain.len() <= WRITE_CACHE_MAX)
            .map(|p| (p.id, p.plain.clone()))
            .collect();
        if let Err(e) = self.kv.write(b, false) {
            // Nothing names the new encodings: their files go now.
            for file in new_files {
                let _ = self.chunks.delete_file(&file);
            }
            return Err(e.into());
        }
        for (id, plain) in cached {
            self.chunks.cache_written(id, plain);
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
    pub(super) fn set_refs(
        &self,
        b: &mut Batch,
        id: &ChunkId,
        mut rec: ChunkRecord,
        refs: u64,
        dead: &mut Vec<FileId>,
    ) {
        if refs > 0 {
            rec.refs = refs;
            self.chunks.table().put(b, id, &rec);
            return;
        }
        dead.extend(self.chunks.table().remove(b, id, &rec));
        // Peers' copies are released by the uploader, from the queue.
        queue::unqueue_place(b, id);
        if let Err(e) = queue::drops(b, &rec) {
            warn!(chunk = %id, error = %e, "remote copies of a deleted chunk cannot be named; they stay on their peers");
        }
        self.chunks.deleted(id);
    }

    /// Drops one reference to each chunk in `ids` inside `b`; returns the
    /// chunk files to delete once `b` has committed.
    pub(super) fn release_chunks(&self, b: &mut Batch, ids: &[ChunkId]) -> FsResult<Vec<FileId>> {
        let mut delta: HashMap<ChunkId, u64> = HashMap::new();
        for id in ids {
            *delta.entry(*id).or_default() += 1;
        }
        let mut dead = Vec::new();
        for (id, n) in delta {
            let Some(rec) = self.chunks.table().record(&id)? else {
                continue;
            };
            let refs = rec.refs.saturating_sub(n);
            self.set_refs(b, &id, rec, refs, &mut dead);
        }
        Ok(dead)
    }
}
