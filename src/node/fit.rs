//! The (k, m) of new chunks follows the storage members present: a worker
//! looks at the roster every few seconds and sets the chunk layer's
//! parameters with [`super::params_for`] (the tuner of a later issue
//! replaces the rule). Existing chunks keep the (k, m) they were written
//! with.
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
        let storage = self.members.storage_peers(&me).len();
        let want = super::params_for(storage).unwrap_or(self.alone);
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
