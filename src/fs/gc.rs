//! Garbage collection of chunk files: a file whose record is gone is
//! deleted only once the batch that unreferenced it is durable; the crash
//! recovery at mount (orphan inodes, pending deletions, the sweep after an
//! unclean end); the data dir's disk running low.

use tracing::{debug, info, warn};

use super::types::Ino;
use super::{Fs, FsResult};
use crate::chunks::FileId;
use crate::store::{Batch, Cf};

/// Chunk files whose deletion waits for one shared WAL sync.
const GC_BATCH: usize = 64;

/// With less free space than this, plus twice the bytes still buffered in
/// memory, the disk is low ([`Fs::disk_is_low`]).
const GC_NOW_BELOW_FREE_BYTES: u64 = 1 << 30;

impl Fs {
    /// Schedules the deletion of chunk files whose records are gone, by
    /// batches already written. A file is deleted only once the batch that
    /// unreferenced it is durable (the index's log synced after it), so a
    /// power cut can never leave the index naming a deleted file; until
    /// then its name waits here (and in the GC table), with the index's
    /// write count, which tells which sync covers its batch.
    pub(super) fn delete_chunk_files(&self, blobs: &[FileId]) {
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
    /// ENOSPC reaches the writer.
    pub fn disk_is_low(&self) -> bool {
        self.chunks.local().files().disk_usage().map_or(true, |u| {
            // What the deferred stores can still need: the bytes buffered
            // in memory (at most `dirty_limit`, plus those being encoded)
            // and spilled to staging files (which stay until every slot is
            // stored), encoded with parity (at most 2x), and a margin for
            // the index. Not a share of the disk: 5 % of a large disk is
            // many gigabytes, and below it every close(2) would store on
            // the caller's path.
            let buffered = self.dirty_total.load(std::sync::atomic::Ordering::Relaxed)
                + self.staged_total.load(std::sync::atomic::Ordering::Relaxed);
            u.available_bytes < GC_NOW_BELOW_FREE_BYTES.saturating_add(buffered.saturating_mul(2))
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
        let blobs: Vec<FileId> = {
            let mut pending = self.gc_pending.lock().unwrap_or_else(|p| p.into_inner());
            // Files of repairs that lost a race with a deletion: that
            // deletion's batch was written before the repair looked.
            pending.extend(self.chunks.take_orphans().into_iter().map(|f| (f, upto)));
            let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(_, w)| *w <= upto);
            *pending = later;
            due.into_iter().map(|(b, _)| b).collect()
        };
        if blobs.is_empty() {
            return;
        }
        let mut b = Batch::new();
        for blob in &blobs {
            match self.chunks.delete_file(blob) {
                Ok(_) => b.delete(Cf::Gc, blob.as_bytes()),
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
                orphans.push(Ino(u64::from_be_bytes(k)));
            }
            true
        })?;
        for ino in orphans {
            self.reap(ino)?;
            debug!(%ino, "deleted orphan inode");
        }
        let gc = self.chunks.table().garbage()?;
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
        let files = self.chunks.local().files();
        files.visit(&mut |id, _| {
            if !named.contains(id) {
                stray.push(*id);
            }
            true
        })?;
        for blob in &stray {
            files.delete(blob)?;
        }
        Ok(stray.len())
    }
}
