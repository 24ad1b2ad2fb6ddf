//! The uploader: drains the upload queue (`fs::replica`), placing the shards
//! of new chunks on peers and releasing peers' copies of deleted ones.
//!
//! A [`Worker`]: one round of the queue per step, run by the workers'
//! runner. It talks to peers only through a [`ShardPlacer`] (the network
//! layer's; a node alone has none and starts no uploader). Every step is
//! recorded in the index in one batch, so a crash repeats at most the step
//! it interrupted; a failed entry is retried with exponential back-off (in
//! the queue: `fs::replica`), a queue that cannot be read with the runner's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{debug, warn};

use super::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};
use crate::fs::replica::{Placed, QueuedUpload, UploadTask};
use crate::fs::{Fs, FsResult};

/// Entries taken from the queue per round.
const BATCH: usize = 64;

/// Where shards go: the transport to peers.
pub trait ShardPlacer: Send + Sync {
    /// Stores a copy of a shard (its BLAKE3 `address` and `bytes`) on a
    /// peer, preferably not one of `avoid` (the chunk's shards are spread
    /// over distinct peers where there are enough); returns the identity of
    /// the peer that now holds it.
    fn place(&self, address: &[u8; 32], bytes: &[u8], avoid: &[Vec<u8>])
    -> Result<Vec<u8>, String>;

    /// Asks `peer` to delete its copy of the shard at `address`.
    fn release(&self, peer: &[u8], address: &[u8; 32]) -> Result<(), String>;
}

/// The uploader's counters.
#[derive(Debug, Default)]
pub struct UploaderStats {
    /// Chunks whose every shard was placed and recorded.
    pub chunks_placed: AtomicU64,
    /// Shard copies placed on peers.
    pub shards_placed: AtomicU64,
    /// Peer copies released after their chunk was deleted.
    pub shards_released: AtomicU64,
    /// Queue entries that failed (and were put back with back-off).
    pub failures: AtomicU64,
}

/// A snapshot of [`UploaderStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploaderSnapshot {
    /// [`UploaderStats::chunks_placed`].
    pub chunks_placed: u64,
    /// [`UploaderStats::shards_placed`].
    pub shards_placed: u64,
    /// [`UploaderStats::shards_released`].
    pub shards_released: u64,
    /// [`UploaderStats::failures`].
    pub failures: u64,
}

impl UploaderStats {
    pub fn snapshot(&self) -> UploaderSnapshot {
        UploaderSnapshot {
            chunks_placed: self.chunks_placed.load(Ordering::Relaxed),
            shards_placed: self.shards_placed.load(Ordering::Relaxed),
            shards_released: self.shards_released.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// The uploader as a [`Worker`]: one round of the queue per step (see the
/// module documentation). The node starts it when it has peers.
pub struct UploaderWorker {
    /// The core whose upload queue it drains.
    fs: Arc<Fs>,
    /// The transport to peers.
    placer: Arc<dyn ShardPlacer>,
    /// Its counters, shared with whoever asked for them ([`Self::stats`]).
    stats: Arc<UploaderStats>,
    /// How long to wait after a round that found nothing due: entries
    /// become due by time (their back-off), not only by new writes.
    interval: Duration,
}

impl UploaderWorker {
    /// An uploader over `fs`'s queue, sending through `placer`, looking
    /// again every `interval` while the queue has nothing due.
    pub fn new(fs: Arc<Fs>, placer: Arc<dyn ShardPlacer>, interval: Duration) -> UploaderWorker {
        UploaderWorker {
            fs,
            placer,
            stats: Arc::new(UploaderStats::default()),
            interval,
        }
    }

    /// Its counters (they stay readable after the worker was handed to the
    /// runner).
    pub fn stats(&self) -> Arc<UploaderStats> {
        self.stats.clone()
    }
}

impl Worker for UploaderWorker {
    fn name(&self) -> String {
        "uploader".into()
    }

    fn status(&self) -> WorkerProgress {
        let s = self.stats.snapshot();
        WorkerProgress {
            queue_length: None,
            counters: vec![
                ("chunks_placed", s.chunks_placed),
                ("shards_placed", s.shards_placed),
                ("shards_released", s.shards_released),
                ("failures", s.failures),
            ],
        }
    }

    /// One round: at most `BATCH` (64) due entries. A failed entry is not a
    /// failed step (it backs off in the queue); an unreadable queue is.
    fn work(&mut self, _stop: &Stop) -> Result<WorkerState, WorkerError> {
        let n = run_round(&self.fs, self.placer.as_ref(), &self.stats)?;
        Ok(if n == 0 {
            WorkerState::Idle
        } else {
            WorkerState::Busy
        })
    }

    fn wait_for_work(&mut self) -> Duration {
        self.interval
    }
}

/// One round: every due entry (at most [`BATCH`]). Returns how many entries
/// it handled (placed, released or failed); fails when the queue cannot be
/// read.
pub fn run_round(fs: &Fs, placer: &dyn ShardPlacer, stats: &UploaderStats) -> FsResult<usize> {
    let due = fs.due_uploads(BATCH)?;
    let n = due.len();
    for q in due {
        if let Err(why) = step(fs, placer, stats, &q) {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            debug!(task = ?kind(&q.task), attempts = q.entry.attempts + 1, error = %why, "upload step failed; retried later");
            if let Err(e) = fs.upload_failed(&q) {
                warn!(error = %e, "cannot reschedule an upload entry");
            }
        }
    }
    Ok(n)
}

fn kind(t: &UploadTask) -> &'static str {
    match t {
        UploadTask::Place { .. } => "place",
        UploadTask::Drop { .. } => "release",
    }
}

fn step(
    fs: &Fs,
    placer: &dyn ShardPlacer,
    stats: &UploaderStats,
    q: &QueuedUpload,
) -> Result<(), String> {
    match &q.task {
        UploadTask::Place { chunk } => {
            let Some(shards) = fs.shards_to_place(chunk).map_err(|e| e.to_string())? else {
                // Deleted: its entry went with it, unless this read raced the delete.
                return fs.record_placement(chunk, &[]).map_err(|e| e.to_string());
            };
            let already: Vec<(u16, Vec<u8>)> =
                fs.chunk_holders(chunk).map_err(|e| e.to_string())?;
            let mut used: Vec<Vec<u8>> = already.iter().map(|(_, p)| p.clone()).collect();
            let mut placed = Vec::with_capacity(shards.len());
            for s in shards {
                if already.iter().any(|(i, _)| *i == s.index) {
                    continue;
                }
                let result = placer.place(&s.address, &s.bytes, &used);
                match result {
                    Ok(peer) => {
                        stats.shards_placed.fetch_add(1, Ordering::Relaxed);
                        if !used.contains(&peer) {
                            used.push(peer.clone());
                        }
                        placed.push(Placed {
                            index: s.index,
                            address: s.address,
                            peer,
                        });
                    }
                    Err(e) => {
                        // Keep what was placed: the next try skips those shards.
                        fs.record_partial_placement(chunk, &placed)
                            .map_err(|e| e.to_string())?;
                        return Err(e);
                    }
                }
            }
            fs.record_placement(chunk, &placed)
                .map_err(|e| e.to_string())?;
            stats.chunks_placed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        UploadTask::Drop { shard, peer } => {
            placer.release(peer, shard)?;
            fs.record_dropped(q).map_err(|e| e.to_string())?;
            stats.shards_released.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}
