//! Opening a data dir for an offline tool (`pangea fsck`): its lock, its
//! index and its chunk files, without the key or the filesystem core.
//!
//! May not: write anything unless asked to (`write`: the lock records
//! this process, the index opens read-write); run while a node has the
//! data dir (the lock refuses).

use std::path::{Path, PathBuf};

use crate::store::{ChunkFiles, DataDirLock, RocksKv, StoreError};

/// Why a data dir did not open for an offline tool.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A node (or another tool) holds the data dir.
    #[error("{} is in use (mounted?): unmount it first", .path.display())]
    InUse {
        /// The data dir.
        path: PathBuf,
    },
    /// Nothing there looks like a data dir (no lock file; only a
    /// read-only open says so, a read-write one creates the lock).
    #[error("{} is not a Pangea data dir (no lock file)", .path.display())]
    NotADataDir {
        /// The directory given.
        path: PathBuf,
    },
    /// The lock, index or chunk files could not open.
    #[error("{}: {error}", .path.display())]
    Store {
        /// The data dir.
        path: PathBuf,
        /// What failed.
        error: StoreError,
    },
}

/// A data dir opened for an offline tool. Field order is drop order: the
/// index closes before the lock goes.
pub struct OfflineDataDir {
    /// The index.
    pub kv: RocksKv,
    /// The chunk files.
    pub chunks: ChunkFiles,
    /// Held while the tool runs: no node opens the data dir meanwhile.
    _lock: DataDirLock,
}

/// Opens the data dir at `dir`: read-write when `write` (a repair),
/// otherwise without writing anything.
pub fn open(dir: &Path, write: bool) -> Result<OfflineDataDir, OfflineError> {
    let fail = |e: StoreError| match e {
        StoreError::Locked { .. } => OfflineError::InUse {
            path: dir.to_path_buf(),
        },
        error => OfflineError::Store {
            path: dir.to_path_buf(),
            error,
        },
    };
    let index = dir.join("index");
    let chunks = dir.join("chunks");
    if write {
        let lock = DataDirLock::acquire(dir).map_err(fail)?;
        let kv = RocksKv::open(&index).map_err(fail)?;
        let chunks = ChunkFiles::open(&chunks).map_err(fail)?;
        return Ok(OfflineDataDir {
            kv,
            chunks,
            _lock: lock,
        });
    }
    let lock = DataDirLock::acquire_read_only(dir).map_err(|e| match e {
        StoreError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            OfflineError::NotADataDir {
                path: dir.to_path_buf(),
            }
        }
        e => fail(e),
    })?;
    let kv = RocksKv::open_read_only(&index, &std::env::temp_dir()).map_err(fail)?;
    let chunks = ChunkFiles::open_read_only(&chunks).map_err(fail)?;
    Ok(OfflineDataDir {
        kv,
        chunks,
        _lock: lock,
    })
}
