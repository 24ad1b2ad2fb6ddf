//! The (k, m) of new chunks follows the storage members present and what
//! the prober learned of them: a worker asks the tuner
//! (`placement::tuner`) every few seconds and sets the chunk layer's
//! parameters. Existing chunks keep the (k, m) they were written with.
//!
//! The same look at the roster finds members removed from the network
//! (by this node or, in a roster taken from another, by the admin): their
//! copies count as lost, and the chunks they held are queued to be placed
//! again (`UploadQueue::forget_peer`), once per removed peer and run.

use std::sync::Arc;
use std::time::Duration;

use crate::ces::ShardParams;
use crate::chunks::Chunks;
use crate::net::roster::Membership;
use crate::net::swarm::NetClient;
use crate::workers::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};

/// See the module documentation.
pub struct FitParams {
    /// Fit (k, m) (false: `--k/--m` were given; only removals are seen to).
    pub auto: bool,
    pub chunks: Arc<Chunks>,
    pub members: Arc<Membership>,
    pub client: NetClient,
    /// What a node without enough storage members uses.
    pub alone: ShardParams,
    pub changes: u64,
    /// The upload queue (copies of removed members are forgotten there).
    pub queue: crate::placement::UploadQueue,
    /// Removed members already forgotten in this run.
    pub forgotten: std::collections::HashSet<Vec<u8>>,
    /// What the peers have shown (the tuner's inputs).
    pub book: Arc<crate::placement::PeerBook>,
    /// Hours between repairs (for the durability model).
    pub repair_h: f64,
    /// The last choice with its inputs and candidates (`pangea tune
    /// --explain`).
    pub explained: Arc<std::sync::Mutex<Option<serde_json::Value>>>,
}

/// The tuner's inputs from the peer book and the storage members.
pub fn tune_input(
    book: &crate::placement::PeerBook,
    storage: &[crate::net::NetPeerId],
    repair_h: f64,
) -> crate::placement::tuner::TuneInput {
    use crate::placement::tuner::{NetClass, PeerModel, TuneInput};
    let now = crate::placement::unix_now_ms();
    let mut rtts = Vec::new();
    let mut losses = Vec::new();
    let peers = storage
        .iter()
        .map(|p| {
            let id = crate::placement::PeerId(p.to_bytes());
            let r = book.get(&id).unwrap_or_default();
            if r.srtt_ms > 0.0 {
                rtts.push(r.srtt_ms);
            }
            losses.push(r.loss);
            PeerModel {
                losses: r.long_downs,
                observed_h: if r.first_seen_ms == 0 {
                    0.0
                } else {
                    r.observed_h(now)
                },
                domain: if r.domain.is_empty() {
                    p.to_string()
                } else {
                    r.domain
                },
            }
        })
        .collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    TuneInput {
        peers,
        net: NetClass::of(median(&mut rtts), median(&mut losses)),
        repair_h,
        domain_rate_per_h: 1.0 / (365.0 * 24.0),
        target: crate::placement::tuner::DEFAULT_TARGET,
        chunk_bytes: 4 << 20,
        cpu_load: load / cores,
    }
}

impl Worker for FitParams {
    fn name(&self) -> String {
        "fit-params".into()
    }

    fn status(&self) -> WorkerProgress {
        let p = self.chunks.shard_params();
        WorkerProgress {
            queue_length: None,
            counters: vec![
                ("k", u64::from(p.k())),
                ("m", u64::from(p.m())),
                ("changes", self.changes),
            ],
        }
    }

    fn work(&mut self, _: &Stop) -> Result<WorkerState, WorkerError> {
        for gone in self.members.roster().revoked {
            if self.forgotten.contains(&gone) {
                continue;
            }
            let n = self
                .queue
                .forget_peer(&crate::placement::PeerId(gone.clone()))
                .map_err(WorkerError::from)?;
            if n > 0 {
                tracing::info!(
                    chunks = n,
                    "a removed member's copies count as lost: placed again"
                );
            }
            self.forgotten.insert(gone);
        }
        if !self.auto {
            return Ok(WorkerState::Idle);
        }
        let me = self.client.local_peer_id();
        let storage: Vec<_> = self
            .members
            .storage_peers(&me)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let input = tune_input(&self.book, &storage, self.repair_h);
        let tuned = crate::placement::tuner::tune(&input);
        let want = tuned
            .as_ref()
            .and_then(|t| ShardParams::new(t.k, t.m).ok())
            .unwrap_or(self.alone);
        *self.explained.lock().unwrap_or_else(|e| e.into_inner()) = Some(serde_json::json!({
            "inputs": input,
            "choice": tuned.as_ref().map(|t| serde_json::json!({"k": t.k, "m": t.m, "how": t.how})),
            "candidates": tuned.map(|t| t.candidates).unwrap_or_default(),
        }));
        let storage = storage.len();
        if want != self.chunks.shard_params() {
            tracing::info!(
                storage_members = storage,
                k = want.k(),
                m = want.m(),
                "new chunks get a new (k, m)"
            );
            self.chunks.set_shard_params(want);
            self.changes += 1;
        }
        Ok(WorkerState::Idle)
    }

    fn wait_for_work(&mut self) -> Duration {
        Duration::from_secs(2)
    }
}
