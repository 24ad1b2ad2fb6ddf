//! The healer: keeps every placed chunk's shards on live peers
//! (`placement::heal` has the rules and the repair).
//!
//! Each step:
//! 1. **Scan.** A full scan of the chunk records runs every
//!    `rescan_every` (300 s by default), and at once when a peer goes up or
//!    down or passes its grace period; it goes on from a cursor, a bounded
//!    number of records per step, and queues the chunks that need repair.
//!    The queue is durable (`Cf::Heal`); the scan re-finds anything it
//!    lost.
//! 2. **Repair** the due entries, fewest spare shards first, at most a
//!    few per step, within the bandwidth cap. A failed repair backs off
//!    (60 s doubling up to 1 h) with its error kept for `pangea heal`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};
use crate::placement::{
    HealPolicy, HealQueue, Life, PeerBook, PeerId, QueuedHeal, RepairError, ShardTransport,
};

/// Chunk records looked at per step of a scan.
const SCAN_PER_STEP: usize = 4096;
/// Repairs per step.
const REPAIRS_PER_STEP: usize = 32;
/// Repairs at once.
const PARALLEL: usize = 4;

/// The healer's counters (shared with the status and metrics).
#[derive(Debug, Default)]
pub struct HealerStats {
    pub chunks_checked: AtomicU64,
    pub chunks_queued: AtomicU64,
    pub chunks_repaired: AtomicU64,
    pub shards_rebuilt: AtomicU64,
    pub repairs_failed: AtomicU64,
    pub bytes_moved: AtomicU64,
    pub scans_finished: AtomicU64,
    /// Entries in the queue at the last step.
    pub queued_now: AtomicU64,
    /// The oldest degraded chunk's age at the last step, seconds.
    pub oldest_degraded_secs: AtomicU64,
    /// Set by `pangea heal --now`: scan at once.
    pub rescan_now: AtomicBool,
}

/// See the module documentation.
pub struct HealerWorker {
    heal: HealQueue,
    book: Arc<PeerBook>,
    transport: Arc<dyn ShardTransport>,
    policy: HealPolicy,
    rescan_every: Duration,
    /// Bytes per second the repairs may move (None: no cap).
    rate: Option<u64>,
    stats: Arc<HealerStats>,
    /// The scan's cursor (Some: a scan is under way).
    cursor: Option<Vec<u8>>,
    scanning: bool,
    next_scan: Instant,
    /// The book's change count and the lost peers at the last scan.
    seen_changes: u64,
    seen_lost: HashSet<PeerId>,
}

impl HealerWorker {
    pub fn new(
        heal: HealQueue,
        book: Arc<PeerBook>,
        transport: Arc<dyn ShardTransport>,
        policy: HealPolicy,
        rescan_every: Duration,
        rate: Option<u64>,
    ) -> HealerWorker {
        HealerWorker {
            heal,
            book,
            transport,
            policy,
            rescan_every,
            rate,
            stats: Arc::new(HealerStats::default()),
            cursor: None,
            scanning: false,
            next_scan: Instant::now(),
            seen_changes: u64::MAX,
            seen_lost: HashSet::new(),
        }
    }

    pub fn stats(&self) -> Arc<HealerStats> {
        self.stats.clone()
    }

    /// Peers whose copies count as lost now.
    fn lost(&self) -> HashSet<PeerId> {
        let now = crate::placement::unix_now_ms();
        self.book
            .all()
            .into_iter()
            .filter(|(p, _)| self.book.life(p, now, self.policy.grace_ms) == Life::Lost)
            .map(|(p, _)| p)
            .collect()
    }

    fn scan_step(&mut self) -> Result<bool, WorkerError> {
        let changes = self.book.changes();
        let lost = self.lost();
        let poked = self.stats.rescan_now.swap(false, Ordering::Relaxed);
        if changes != self.seen_changes || lost != self.seen_lost || poked {
            // Start over: what was scanned before the change is stale.
            self.seen_changes = changes;
            self.seen_lost = lost;
            self.scanning = true;
            self.cursor = None;
        } else if !self.scanning && Instant::now() >= self.next_scan {
            self.scanning = true;
            self.cursor = None;
        }
        if !self.scanning {
            return Ok(false);
        }
        let (next, checked, queued) = self.heal.scan(
            self.cursor.as_deref(),
            SCAN_PER_STEP,
            &self.book,
            &self.policy,
        )?;
        self.stats
            .chunks_checked
            .fetch_add(checked, Ordering::Relaxed);
        self.stats
            .chunks_queued
            .fetch_add(queued, Ordering::Relaxed);
        if queued > 0 {
            info!(chunks = queued, "chunks queued for repair");
        }
        match next {
            Some(c) => self.cursor = Some(c),
            None => {
                self.cursor = None;
                self.scanning = false;
                self.next_scan = Instant::now() + self.rescan_every;
                self.stats.scans_finished.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(checked > 0)
    }

    fn repair_step(&mut self, stop: &Stop) -> Result<usize, WorkerError> {
        let due = self
            .heal
            .due(crate::placement::unix_now_ms(), REPAIRS_PER_STEP)?;
        let started = Instant::now();
        let moved = AtomicU64::new(0);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: std::sync::Mutex<Option<WorkerError>> = std::sync::Mutex::new(None);
        // A few chunks at once: one repair is a fetch and a put or two,
        // bound by round trips, not by bandwidth.
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL.min(due.len()) {
                scope.spawn(|| {
                    loop {
                        if stop.is_raised() {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(q) = due.get(i) else { break };
                        if let Err(e) = self.repair_one(q, &moved) {
                            failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                            break;
                        }
                        // The bandwidth cap: the step lasts at least
                        // moved / rate.
                        if let Some(rate) = self.rate.filter(|r| *r > 0) {
                            let floor = Duration::from_secs_f64(
                                moved.load(Ordering::Relaxed) as f64 / rate as f64,
                            );
                            let spent = started.elapsed();
                            if floor > spent && stop.wait_timeout(floor - spent) {
                                break;
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        Ok(due.len())
    }

    /// Repairs one queued chunk and records the outcome in the queue and
    /// the counters.
    fn repair_one(&self, q: &QueuedHeal, moved: &AtomicU64) -> Result<(), WorkerError> {
        match self
            .heal
            .repair(&q.chunk, &self.book, &self.policy, self.transport.as_ref())
        {
            Ok(done) => {
                self.heal.done(&q.chunk)?;
                if let Some(r) = done {
                    moved.fetch_add(r.bytes, Ordering::Relaxed);
                    self.stats.chunks_repaired.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .shards_rebuilt
                        .fetch_add(r.shards, Ordering::Relaxed);
                    self.stats.bytes_moved.fetch_add(r.bytes, Ordering::Relaxed);
                    debug!(chunk = %q.chunk, shards = r.shards, "chunk repaired");
                }
            }
            Err(e) => {
                if let RepairError::Place { done, .. } = &e {
                    moved.fetch_add(done.bytes, Ordering::Relaxed);
                    self.stats
                        .shards_rebuilt
                        .fetch_add(done.shards, Ordering::Relaxed);
                    self.stats
                        .bytes_moved
                        .fetch_add(done.bytes, Ordering::Relaxed);
                }
                self.stats.repairs_failed.fetch_add(1, Ordering::Relaxed);
                warn!(chunk = %q.chunk, attempts = q.entry.attempts + 1, error = %e, "repair failed; retried later");
                self.heal.failed(q, &e.to_string())?;
            }
        }
        Ok(())
    }
}

impl Worker for HealerWorker {
    fn name(&self) -> String {
        "healer".into()
    }

    fn status(&self) -> WorkerProgress {
        let s = &self.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerProgress {
            queue_length: Some(r(&s.queued_now)),
            counters: vec![
                ("chunks_checked", r(&s.chunks_checked)),
                ("chunks_queued", r(&s.chunks_queued)),
                ("chunks_repaired", r(&s.chunks_repaired)),
                ("shards_rebuilt", r(&s.shards_rebuilt)),
                ("repairs_failed", r(&s.repairs_failed)),
                ("bytes_moved", r(&s.bytes_moved)),
                ("oldest_degraded_secs", r(&s.oldest_degraded_secs)),
            ],
        }
    }

    fn work(&mut self, stop: &Stop) -> Result<WorkerState, WorkerError> {
        let scanned = self.scan_step()?;
        let repaired = self.repair_step(stop)?;
        self.stats
            .queued_now
            .store(self.heal.len()?, Ordering::Relaxed);
        let oldest = self.heal.oldest_since()?.map_or(0, |since| {
            crate::placement::unix_now_ms().saturating_sub(since) / 1000
        });
        self.stats
            .oldest_degraded_secs
            .store(oldest, Ordering::Relaxed);
        Ok(if scanned || repaired > 0 {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        })
    }

    fn wait_for_work(&mut self) -> Duration {
        Duration::from_secs(1)
    }
}
