//! The scrubber: finds rot before a read does.
//!
//! * **Local pass.** Re-hashes every shard of every local chunk file
//!   against the addresses in its manifest, a few chunks per step, so
//!   that a full pass takes the configured period (30 days by default,
//!   each pass 25-35 days at random, so that machines do not scrub in
//!   step). A bad or missing shard is rebuilt in place from the good ones
//!   (or from peers) by the chunk layer's repair.
//! * **Remote proofs.** At a bounded rate (challenges per step), each
//!   holder of a placed chunk that is up is asked to prove it holds its
//!   shard: BLAKE3 keyed with a fresh random nonce over the shard's bytes,
//!   checked against the local copy; for a chunk evicted from this disk
//!   the peer's copy is fetched and checked against its address instead.
//!   A peer that fails (says it lacks the shard, or proves wrong bytes)
//!   loses the holder entry, its copy is queued for release, and the chunk
//!   for the healer. A peer that is down or does not answer is the
//!   prober's and the healer's business, not a failed proof.
//!
//! Pausable (`pause`): a paused scrubber does nothing and says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};
use crate::ces::{ChunkId, ShardId};
use crate::chunks::{ChunkEntry, ChunkRecord, Chunks, Location, ShardSource};
use crate::placement::{HealQueue, PeerBook, ShardTransport, UploadQueue};
use crate::store::{Cf, Kv};

/// The scrubber's counters.
#[derive(Debug, Default)]
pub struct ScrubStats {
    pub local_chunks: AtomicU64,
    pub local_bytes: AtomicU64,
    pub local_bad: AtomicU64,
    pub local_passes: AtomicU64,
    pub challenges: AtomicU64,
    pub challenges_failed: AtomicU64,
    pub remote_passes: AtomicU64,
    /// Set to pause the scrubber (`pangea scrub --pause`).
    pub paused: AtomicBool,
}

/// See the module documentation.
pub struct ScrubberWorker {
    kv: Arc<dyn Kv>,
    chunks: Arc<Chunks>,
    heal: HealQueue,
    uploads: UploadQueue,
    book: Arc<PeerBook>,
    transport: Arc<dyn ShardTransport>,
    /// A local pass's target length (each pass is 5/6 to 7/6 of it).
    period: Duration,
    /// How often a step runs.
    step: Duration,
    /// Proofs asked per step.
    challenges_per_step: usize,
    stats: Arc<ScrubStats>,
    local_cursor: Option<Vec<u8>>,
    local_per_step: u64,
    remote_cursor: Option<Vec<u8>>,
    pass_started: Instant,
}

impl ScrubberWorker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kv: Arc<dyn Kv>,
        chunks: Arc<Chunks>,
        book: Arc<PeerBook>,
        transport: Arc<dyn ShardTransport>,
        period: Duration,
        challenges_per_step: usize,
    ) -> ScrubberWorker {
        ScrubberWorker {
            heal: HealQueue::new(kv.clone(), chunks.clone()),
            uploads: UploadQueue::new(kv.clone(), chunks.clone()),
            kv,
            chunks,
            book,
            transport,
            period,
            step: Duration::from_secs(1),
            challenges_per_step,
            stats: Arc::new(ScrubStats::default()),
            local_cursor: None,
            local_per_step: 0,
            remote_cursor: None,
            pass_started: Instant::now(),
        }
    }

    pub fn stats(&self) -> Arc<ScrubStats> {
        self.stats.clone()
    }

    /// Chunk records from `cursor` (exclusive), at most `limit`.
    fn records(
        &self,
        cursor: &Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, ChunkRecord)>, WorkerError> {
        let start = cursor.as_ref().map(|c| {
            let mut s = c.clone();
            s.push(0);
            s
        });
        let mut out = Vec::new();
        self.kv.scan(
            Cf::Chunk,
            &[],
            start.as_deref().unwrap_or(&[]),
            &mut |k, v| {
                if let (Ok(id), Ok(rec)) = (<[u8; 32]>::try_from(k), ChunkRecord::decode(v)) {
                    out.push((ChunkId(id), rec));
                }
                out.len() < limit
            },
        )?;
        Ok(out)
    }

    /// How many chunks a local step checks: a pass over `n` chunks spread
    /// over the period, jittered by ±1/6.
    fn plan_pass(&mut self) -> Result<(), WorkerError> {
        let mut n = 0u64;
        self.kv.scan(Cf::Chunk, &[], &[], &mut |_, _| {
            n += 1;
            true
        })?;
        let mut r = [0u8; 8];
        let jitter = match getrandom::fill(&mut r) {
            Ok(()) => (u64::from_le_bytes(r) % 1000) as f64 / 1000.0,
            Err(_) => 0.5,
        };
        let period = self.period.as_secs_f64() * (5.0 + 2.0 * jitter) / 6.0;
        let steps = (period / self.step.as_secs_f64()).max(1.0);
        self.local_per_step = ((n as f64 / steps).ceil() as u64).max(1);
        self.pass_started = Instant::now();
        Ok(())
    }

    /// Re-hashes the local shards of `entry`; a bad one is repaired.
    fn check_local(&self, entry: &ChunkEntry) -> Result<(), WorkerError> {
        let m = &entry.manifest;
        let s = m.shard_len as usize;
        let total = m.params.total();
        let at = entry.at();
        let fetched = self.chunks.local().get(
            &at,
            s,
            0..total,
            Vec::new(),
            Instant::now() + Duration::from_secs(30),
        );
        let f = match fetched {
            Ok(Some(f)) => f,
            // No local copy (evicted, or deleted meanwhile).
            Ok(None) => return Ok(()),
            // Unreadable: empty, so that every shard counts as bad.
            Err(_) => crate::chunks::Fetched {
                bytes: Vec::new(),
                start: 0,
                remote: false,
            },
        };
        self.stats
            .local_bytes
            .fetch_add((s * total) as u64, Ordering::Relaxed);
        let bad = (0..total).any(|i| {
            f.shard(i, s)
                .is_none_or(|b| ShardId::of(b) != m.shard_ids[i])
        });
        if bad {
            self.stats.local_bad.fetch_add(1, Ordering::Relaxed);
            warn!(chunk = %entry.id, "scrub: a local shard has rotted; rebuilding it");
            if let Err(e) = self.chunks.repair(entry) {
                warn!(chunk = %entry.id, error = %e, "scrub: repair failed; the next read or pass retries");
            }
        }
        Ok(())
    }

    fn local_step(&mut self, stop: &Stop) -> Result<(), WorkerError> {
        if self.local_cursor.is_none() && self.local_per_step == 0 {
            self.plan_pass()?;
        }
        let batch = self.records(
            &self.local_cursor,
            usize::try_from(self.local_per_step).unwrap_or(usize::MAX),
        )?;
        for (id, rec) in &batch {
            if stop.is_raised() {
                return Ok(());
            }
            if rec.location != Location::File {
                continue;
            }
            if let Some(entry) = self.chunks.table().get(id)? {
                self.check_local(&entry)?;
                self.stats.local_chunks.fetch_add(1, Ordering::Relaxed);
            }
        }
        if (batch.len() as u64) < self.local_per_step {
            // The pass is over: the next one starts when its time comes.
            self.local_cursor = None;
            self.stats.local_passes.fetch_add(1, Ordering::Relaxed);
            self.local_per_step = 0;
        } else {
            self.local_cursor = batch.last().map(|(id, _)| id.0.to_vec());
        }
        Ok(())
    }

    fn remote_step(&mut self, stop: &Stop) -> Result<(), WorkerError> {
        let mut asked = 0usize;
        while asked < self.challenges_per_step && !stop.is_raised() {
            let batch = self.records(&self.remote_cursor, 16)?;
            if batch.is_empty() {
                self.remote_cursor = None;
                self.stats.remote_passes.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            for (id, _) in &batch {
                self.remote_cursor = Some(id.0.to_vec());
                asked += self.challenge_chunk(id)?;
                if asked >= self.challenges_per_step {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Challenges every holder of chunk `id` that is up. Returns how many.
    fn challenge_chunk(&self, id: &ChunkId) -> Result<usize, WorkerError> {
        let Some(entry) = self.chunks.table().get(id)? else {
            return Ok(0);
        };
        let holders = self.uploads.holders(id)?;
        if holders.is_empty() {
            return Ok(0);
        }
        let m = &entry.manifest;
        let s = m.shard_len as usize;
        let local = if entry.rec.location == Location::File {
            self.chunks
                .local()
                .get(
                    &entry.at(),
                    s,
                    0..m.params.total(),
                    Vec::new(),
                    Instant::now() + Duration::from_secs(30),
                )
                .ok()
                .flatten()
        } else {
            None
        };
        let mut asked = 0;
        for (index, peer) in holders {
            if !self.book.is_up(&peer) {
                continue;
            }
            let i = usize::from(index);
            let Some(address) = m.shard_ids.get(i).copied() else {
                continue;
            };
            let mine = local
                .as_ref()
                .and_then(|f| f.shard(i, s))
                .filter(|b| ShardId::of(b) == address);
            asked += 1;
            self.stats.challenges.fetch_add(1, Ordering::Relaxed);
            let held = match mine {
                Some(bytes) => {
                    let mut nonce = [0u8; 32];
                    if getrandom::fill(&mut nonce).is_err() {
                        continue;
                    }
                    let want = *blake3::keyed_hash(&nonce, bytes).as_bytes();
                    match self.transport.prove(&peer, &address, &nonce) {
                        Ok(Some(got)) => Some(bool::from(subtle::ConstantTimeEq::ct_eq(
                            &got[..],
                            &want[..],
                        ))),
                        Ok(None) => Some(false),
                        Err(_) => None,
                    }
                }
                None => match self.transport.fetch(&peer, &address) {
                    Ok(got) => Some(got.is_some()),
                    Err(_) => None,
                },
            };
            if held == Some(false) {
                self.stats.challenges_failed.fetch_add(1, Ordering::Relaxed);
                warn!(chunk = %id, shard = index, peer = %peer, "scrub: a peer failed to prove it holds its shard; re-placing it");
                if self.heal.lost_copy(id, index, &peer)? {
                    info!(chunk = %id, "chunk queued for repair");
                }
            }
        }
        Ok(asked)
    }
}

impl Worker for ScrubberWorker {
    fn name(&self) -> String {
        "scrubber".into()
    }

    fn status(&self) -> WorkerProgress {
        let s = &self.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerProgress {
            queue_length: None,
            counters: vec![
                ("paused", u64::from(s.paused.load(Ordering::Relaxed))),
                ("local_chunks", r(&s.local_chunks)),
                ("local_bytes", r(&s.local_bytes)),
                ("local_bad", r(&s.local_bad)),
                ("local_passes", r(&s.local_passes)),
                ("challenges", r(&s.challenges)),
                ("challenges_failed", r(&s.challenges_failed)),
                ("remote_passes", r(&s.remote_passes)),
            ],
        }
    }

    fn work(&mut self, stop: &Stop) -> Result<WorkerState, WorkerError> {
        if self.stats.paused.load(Ordering::Relaxed) {
            return Ok(WorkerState::Idle);
        }
        self.local_step(stop)?;
        self.remote_step(stop)?;
        Ok(WorkerState::Idle)
    }

    fn wait_for_work(&mut self) -> Duration {
        self.step
    }
}
