//! The uploader: drains the upload queue (`placement`), placing the shards
//! of new chunks on peers and releasing peers' copies of deleted ones.
//!
//! One job, one thread. It talks to peers only through a [`ShardTransport`]
//! (the network layer's; a node alone has none and starts no uploader).
//! Every step is recorded in the index in one batch, so a crash repeats at
//! most the step it interrupted; a failed entry is retried with exponential
//! back-off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};

use crate::chunks::ChunkError;
use crate::placement::{PlaceError, Placed, QueuedUpload, ShardTransport, UploadQueue, UploadTask};

/// Entries taken from the queue per round.
const BATCH: usize = 64;

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
    pub chunks_placed: u64,
    pub shards_placed: u64,
    pub shards_released: u64,
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

/// The running uploader (see the module documentation).
pub struct Uploader {
    stop: Arc<(Mutex<bool>, Condvar)>,
    stats: Arc<UploaderStats>,
    thread: Option<JoinHandle<()>>,
}

impl Uploader {
    /// Starts the uploader thread: a round every `interval`, and at once
    /// after a round that found work.
    pub fn start(
        queue: UploadQueue,
        placer: Arc<dyn ShardTransport>,
        interval: Duration,
    ) -> std::io::Result<Uploader> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stats = Arc::new(UploaderStats::default());
        let thread = {
            let stop = stop.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("pangea-uploader".into())
                .spawn(move || {
                    loop {
                        let did = run_round(&queue, placer.as_ref(), &stats);
                        let (lock, cv) = &*stop;
                        let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                        if *stopped {
                            break;
                        }
                        if did == 0 {
                            let (stopped, _) = cv
                                .wait_timeout_while(stopped, interval, |s| !*s)
                                .unwrap_or_else(|p| p.into_inner());
                            if *stopped {
                                break;
                            }
                        }
                    }
                })?
        };
        Ok(Uploader {
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> UploaderSnapshot {
        self.stats.snapshot()
    }

    /// Stops after the current step; returns once the thread has ended.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// One round: every due entry (at most [`BATCH`]). Returns how many entries
/// it handled (placed, released or failed).
pub fn run_round(queue: &UploadQueue, placer: &dyn ShardTransport, stats: &UploaderStats) -> usize {
    let due = match queue.due(BATCH) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot read the upload queue");
            return 0;
        }
    };
    let n = due.len();
    for q in due {
        if let Err(why) = step(queue, placer, stats, &q) {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            debug!(task = ?kind(&q.task), attempts = q.entry.attempts + 1, error = %why, "upload step failed; retried later");
            if let Err(e) = queue.failed(&q) {
                warn!(error = %e, "cannot reschedule an upload entry");
            }
        }
    }
    n
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
            let results = placer.place(&todo, &avoid);
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
