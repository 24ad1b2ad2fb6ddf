//! The local disk as a cache of placed chunks: a worker that, when the
//! chunk files take more than `--local-max` (or, without it, when the data
//! dir's disk has less than 10 % free), drops the local copies of chunks
//! whose every shard is on a live peer, those not read lately (not in the
//! plaintext cache) first. A chunk is never evicted before its k+m shards
//! are placed; reads of an evicted chunk go to its holders.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use crate::chunks::Chunks;
use crate::net::online::OnlineHandle;
use crate::placement::UploadQueue;
use crate::workers::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};

/// Candidates looked at per step.
const SCAN: usize = 4096;
/// Free space (of the data dir's disk) below which chunks are evicted
/// without `--local-max`, and the free space eviction then aims at.
const MIN_FREE_PERCENT: u64 = 10;
const AIM_FREE_PERCENT: u64 = 12;

/// See the module documentation.
pub struct Evictor {
    pub queue: UploadQueue,
    pub chunks: Arc<Chunks>,
    pub net: OnlineHandle,
    /// Bytes of chunk files to keep at most (None: the free-space rule).
    pub local_max: Option<u64>,
    pub evicted: u64,
    pub evicted_bytes: u64,
}

impl Evictor {
    /// Bytes to free now.
    fn over(&self) -> Result<u64, WorkerError> {
        let files = self.chunks.local().files();
        match self.local_max {
            Some(max) => {
                let mut used = 0u64;
                files
                    .visit(&mut |_, len| {
                        used += len;
                        true
                    })
                    .map_err(WorkerError::from)?;
                // Down to 90 % of the limit, so that eviction runs in batches.
                Ok(if used > max { used - max * 9 / 10 } else { 0 })
            }
            None => {
                let du = files.disk_usage().map_err(WorkerError::from)?;
                let min = du.total_bytes / 100 * MIN_FREE_PERCENT;
                Ok(if du.free_bytes < min {
                    (du.total_bytes / 100 * AIM_FREE_PERCENT).saturating_sub(du.free_bytes)
                } else {
                    0
                })
            }
        }
    }
}

impl Evictor {
    /// Does every holder of chunk `id` confirm it still has its shards?
    fn confirmed(&self, id: &crate::ces::ChunkId) -> bool {
        let Ok(Some(entry)) = self.chunks.table().get(id) else {
            return false;
        };
        let Ok(holders) = self.queue.holders(id) else {
            return false;
        };
        let mut by_peer: std::collections::HashMap<
            crate::placement::PeerId,
            Vec<crate::ces::ShardId>,
        > = std::collections::HashMap::new();
        for (i, p) in holders {
            if let Some(a) = entry.manifest.shard_ids.get(usize::from(i)) {
                by_peer.entry(p).or_default().push(*a);
            }
        }
        by_peer
            .iter()
            .all(|(p, addrs)| self.net.has_all(p, addrs, Duration::from_secs(5)))
    }
}

impl Worker for Evictor {
    fn name(&self) -> String {
        "evictor".into()
    }

    fn status(&self) -> WorkerProgress {
        WorkerProgress {
            queue_length: None,
            counters: vec![
                ("evicted", self.evicted),
                ("evicted_bytes", self.evicted_bytes),
            ],
        }
    }

    fn work(&mut self, stop: &Stop) -> Result<WorkerState, WorkerError> {
        let over = self.over()?;
        if over == 0 {
            return Ok(WorkerState::Idle);
        }
        let net = self.net.clone();
        let live = move |p: &crate::placement::PeerId| net.is_live(p);
        let mut candidates = self
            .queue
            .evictable(&live, SCAN)
            .map_err(WorkerError::from)?;
        // Not read lately first.
        candidates.sort_by_key(|(id, _)| self.chunks.is_cached(id));
        let mut freed = 0u64;
        for (id, size) in candidates {
            if freed >= over || stop.is_raised() {
                break;
            }
            // The holders are asked first: a record is what we wrote, not
            // what they still have.
            if !self.confirmed(&id) {
                continue;
            }
            match self.queue.evict(&id, &live) {
                Ok(true) => {
                    freed += size;
                    self.evicted += 1;
                    self.evicted_bytes += size;
                }
                Ok(false) => {}
                Err(e) => debug!(chunk = %id, error = %e, "eviction skipped"),
            }
        }
        if freed > 0 {
            info!(bytes = freed, "local copies of placed chunks evicted");
            Ok(WorkerState::Busy)
        } else {
            Ok(WorkerState::Idle)
        }
    }

    fn wait_for_work(&mut self) -> Duration {
        Duration::from_secs(5)
    }
}
