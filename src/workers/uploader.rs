//! The uploader: drains the upload queue (`placement`), placing the shards
//! of new chunks on peers and releasing peers' copies of deleted ones.
//!
//! A [`Worker`]: one round of the queue per step, run by the workers'
//! runner. It talks to peers only through a [`ShardTransport`] (the network
//! layer's; a node alone has none and starts no uploader). Every step is
//! recorded in the index in one batch, so a crash repeats at most the step
//! it interrupted; a failed entry is retried with exponential back-off (in
//! the queue), a queue that cannot be read with the runner's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{debug, warn};

use super::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};
use crate::chunks::{ChunkError, ChunkResult};
use crate::placement::{
    PlaceError, Placed, QueuedUpload, ShardTransport, Spread, UploadQueue, UploadTask,
};

/// Entries taken from the queue per round.
const BATCH: usize = 64;
/// Entries handled at once.
const PARALLEL: usize = 4;
/// The longest wait before retrying a chunk that found no peer.
const NO_PEER_RETRY_SECS: u64 = 10;
/// Failed tries after which a chunk's shards stop waiting for a down
/// member and go to those that are up.
const WAIT_FOR_DOWN_TRIES: u32 = 3;
/// The longest wait before retrying a chunk a peer failed.
const PEER_RETRY_SECS: u64 = 60;

/// Why one step of the uploader failed (the entry is retried later).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The index or the local shards.
    #[error(transparent)]
    Local(#[from] ChunkError),
    /// The transport or a peer.
    #[error(transparent)]
    Peer(#[from] PlaceError),
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
    /// The upload queue it drains.
    queue: UploadQueue,
    /// The transport to peers.
    placer: Arc<dyn ShardTransport>,
    /// Its counters, shared with whoever asked for them ([`Self::stats`]).
    stats: Arc<UploaderStats>,
    /// How long to wait after a round that found nothing due: entries
    /// become due by time (their back-off), not only by new writes.
    interval: Duration,
}

impl UploaderWorker {
    /// An uploader over `queue`, sending through `placer`, looking again
    /// every `interval` while the queue has nothing due.
    pub fn new(
        queue: UploadQueue,
        placer: Arc<dyn ShardTransport>,
        interval: Duration,
    ) -> UploaderWorker {
        UploaderWorker {
            queue,
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
        let n = run_round(&self.queue, self.placer.as_ref(), &self.stats)?;
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
pub fn run_round(
    queue: &UploadQueue,
    placer: &dyn ShardTransport,
    stats: &UploaderStats,
) -> ChunkResult<usize> {
    let due = queue.due(BATCH)?;
    let n = due.len();
    // Several chunks at once: each places its k+m shards concurrently, so
    // a node keeps (k+m) x PARALLEL shards in flight (at least 8).
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(n) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(q) = due.get(i) else { break };
                    if let Err(why) = step(queue, placer, stats, q) {
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                        debug!(task = ?kind(&q.task), attempts = q.entry.attempts + 1, error = %why, "upload step failed; retried later");
                        // No member to place on: one may join any moment.
                        // A peer down or full: retried within a minute (home
                        // machines reboot); a local fault backs off longer.
                        let cap = match why {
                            StepError::Peer(PlaceError::NoPeer) => NO_PEER_RETRY_SECS,
                            StepError::Peer(_) => PEER_RETRY_SECS,
                            StepError::Local(_) => u64::MAX,
                        };
                        if let Err(e) = queue.failed_within(q, cap) {
                            warn!(error = %e, "cannot reschedule an upload entry");
                        }
                    }
                }
            });
        }
    });
    Ok(n)
}

fn kind(t: &UploadTask) -> &'static str {
    match t {
        UploadTask::Place { .. } => "place",
        UploadTask::Drop { .. } => "release",
    }
}

fn step(
    queue: &UploadQueue,
    placer: &dyn ShardTransport,
    stats: &UploaderStats,
    q: &QueuedUpload,
) -> Result<(), StepError> {
    match &q.task {
        UploadTask::Place { chunk } => {
            let Some(shards) = queue.shards_to_place(chunk)? else {
                // Deleted: its entry went with it, unless this read raced the delete.
                return Ok(queue.record_placement(chunk, &[])?);
            };
            let already = queue.holders(chunk)?;
            let avoid: Vec<_> = already.iter().map(|(_, p)| p.clone()).collect();
            let todo: Vec<_> = shards
                .into_iter()
                .filter(|s| !already.iter().any(|(i, _)| *i == s.index))
                .collect();
            // At most m of the chunk's shards in one failure domain; a
            // shard waits for a down member a few tries, then goes to the
            // members that are up.
            let spread = Spread {
                per_domain: queue.parity(chunk)?.max(1),
                only_up: q.entry.attempts >= WAIT_FOR_DOWN_TRIES,
            };
            let results = placer.place_spread(&todo, &avoid, spread);
            let mut placed = Vec::with_capacity(todo.len());
            let mut first_err = None;
            for (s, r) in todo.iter().zip(results) {
                match r {
                    Ok(peer) => {
                        stats.shards_placed.fetch_add(1, Ordering::Relaxed);
                        placed.push(Placed {
                            index: s.index,
                            address: s.address,
                            peer,
                        });
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if placed.len() < todo.len() {
                // Keep what was placed: the next try skips those shards.
                queue.record_partial_placement(chunk, &placed)?;
                return Err(first_err.unwrap_or(PlaceError::NoPeer).into());
            }
            queue.record_placement(chunk, &placed)?;
            stats.chunks_placed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        UploadTask::Drop { shard, peer } => {
            placer.release(peer, shard)?;
            queue.record_dropped(q)?;
            stats.shards_released.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}
