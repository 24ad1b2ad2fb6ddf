//! `pangea serve`: a storage node. No filesystem and no keys: its data dir
//! holds its lock, its own identity and network files (`net/`), its index
//! of the shards it holds for members (`index/`, `Cf::Held`) and the shard
//! files (`held/`). It answers members' shard requests within its quota.
//!
//! Shutdown order: the control socket, the network (no more requests),
//! then the store and its index, then the lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::NodeError;
use super::control::ControlServer;
use crate::net::held::HeldStore;
use crate::net::online::{NetSetup, Online, bring_up};
use crate::store::{ChunkFiles, DataDirLock, RocksKv, StoreError};

/// How a storage node is started.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// Bytes of shards it accepts.
    pub quota: u64,
    pub net: NetSetup,
}

/// See the module documentation. Field order is drop order.
pub struct StorageNode {
    control: Option<ControlServer>,
    online: Online,
    held: Arc<HeldStore>,
    root: PathBuf,
    _lock: DataDirLock,
}

impl StorageNode {
    pub fn open(cfg: ServeConfig) -> Result<StorageNode, NodeError> {
        let root = &cfg.data_dir;
        std::fs::create_dir_all(root)
            .map_err(|e| NodeError::Net(format!("{}: {e}", root.display())))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
        }
        let lock = DataDirLock::acquire(root).map_err(|e| match e {
            StoreError::Locked { .. } => NodeError::InUse { path: root.clone() },
            e => NodeError::Index(e),
        })?;
        if root.join("master.key").exists() {
            return Err(NodeError::Net(format!(
                "{} is a filesystem node's data dir (it holds keys); give pangea serve a data dir of its own (--data-dir)",
                root.display()
            )));
        }
        let kv = RocksKv::open(&root.join("index")).map_err(NodeError::Index)?;
        let files = ChunkFiles::open(&root.join("held")).map_err(NodeError::ChunkStore)?;
        let held = Arc::new(
            HeldStore::open(Arc::new(kv), Arc::new(files), cfg.quota).map_err(NodeError::Index)?,
        );
        let online = bring_up(
            &root.join("net"),
            &cfg.net,
            held.clone(),
            Arc::new(crate::placement::PeerBook::in_memory()),
        )
        .map_err(|e| NodeError::Net(e.to_string()))?;
        let control = ControlServer::start(
            root,
            super::status::serve_handler(held.clone(), online.handle()),
        )
        .map_err(|e| NodeError::Net(format!("control socket: {e}")))?;
        Ok(StorageNode {
            control: Some(control),
            online,
            held,
            root: root.clone(),
            _lock: lock,
        })
    }

    pub fn peer_id(&self) -> String {
        self.online.peer_id()
    }

    pub fn listen_addrs(&self) -> Vec<String> {
        self.online
            .client()
            .listeners()
            .unwrap_or_default()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    pub fn network_id(&self) -> String {
        self.online.members.network().id_hex()
    }

    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    pub fn held(&self) -> &Arc<HeldStore> {
        &self.held
    }

    /// Stops in the order of the module documentation.
    pub fn shutdown(mut self) {
        drop(self.control.take());
        let StorageNode {
            online,
            held,
            _lock,
            ..
        } = self;
        drop(online);
        drop(held);
        drop(_lock);
    }
}
