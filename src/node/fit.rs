//! The (k, m) of new chunks follows the storage members present: a worker
//! looks at the roster every few seconds and sets the chunk layer's
//! parameters with [`super::params_for`] (the tuner of a later issue
//! replaces the rule). Existing chunks keep the (k, m) they were written
//! with.

use std::sync::Arc;
use std::time::Duration;

use crate::ces::ShardParams;
use crate::chunks::Chunks;
use crate::net::roster::Membership;
use crate::net::swarm::NetClient;
use crate::workers::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};

/// See the module documentation.
pub struct FitParams {
    pub chunks: Arc<Chunks>,
    pub members: Arc<Membership>,
    pub client: NetClient,
    /// What a node without enough storage members uses.
    pub alone: ShardParams,
    pub changes: u64,
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
