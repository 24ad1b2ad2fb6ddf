//! The uploader: drains the upload queue (`fs::replica`), placing the shards
//! of new chunks on peers and releasing peers' copies of deleted ones.
//!
//! One job, one thread. It talks to peers only through a [`ShardPlacer`]
//! (the network layer's; a node alone has none and starts no uploader).
//! Every step is recorded in the index in one batch, so a crash repeats at
//! most the step it interrupted; a failed entry is retried with exponential
//! back-off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};

use crate::fs::Fs;
use crate::fs::replica::{Placed, QueuedUpload, UploadTask};

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
        fs: Arc<Fs>,
        placer: Arc<dyn ShardPlacer>,
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
                        let did = run_round(&fs, placer.as_ref(), &stats);
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
pub fn run_round(fs: &Fs, placer: &dyn ShardPlacer, stats: &UploaderStats) -> usize {
    let due = match fs.due_uploads(BATCH) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot read the upload queue");
            return 0;
        }
    };
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
    n
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
