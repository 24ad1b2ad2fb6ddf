//! The data dir: `index/` (RocksDB), `chunks/` (shard files), `master.key`
//! (0600, 32 random bytes, created on first use, never logged) and `lock`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ces::{KEY_LEN, MasterKey};
use crate::store::{DataDirLock, StoreError};

/// Errors opening a data dir, with what to do about them.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create or open data dir {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}: {source}")]
    Key {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} must be {KEY_LEN} bytes, found {len}: restore it from your recovery kit"
    )]
    KeyLength { path: PathBuf, len: usize },
    #[error("key file {path} is readable by others (mode {mode:o}): chmod 600 it")]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("the system random number generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An opened, locked data dir.
pub struct DataDir {
    pub root: PathBuf,
    pub master: MasterKey,
    /// Held for as long as the data dir is in use.
    _lock: DataDirLock,
}

impl DataDir {
    /// Opens `root`, creating it and its key on first use, and locks it.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        let create = |p: &Path| {
            fs::create_dir_all(p).map_err(|source| DataDirError::Create {
                path: p.to_path_buf(),
                source,
            })
        };
        create(root)?;
        let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o700));
        let lock = DataDirLock::acquire(root)?;
        create(&root.join("chunks"))?;
        create(&root.join("staging"))?;
        let master = load_or_create_key(&root.join("master.key"))?;
        Ok(DataDir {
            root: root.to_path_buf(),
            master,
            _lock: lock,
        })
    }

    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    pub fn chunks_dir(&self) -> PathBuf {
        self.root.join("chunks")
    }

    /// Where write buffers spill (anonymous files only).
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }
}

fn load_or_create_key(path: &Path) -> Result<MasterKey, DataDirError> {
    let err = |source| DataDirError::Key {
        path: path.to_path_buf(),
        source,
    };
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path).map_err(err)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(DataDirError::KeyMode {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            MasterKey::from_slice(&bytes).map_err(|_| DataDirError::KeyLength {
                path: path.to_path_buf(),
                len: bytes.len(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate().map_err(|_| DataDirError::Random)?;
            let tmp = path.with_extension("key.tmp");
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(key.expose_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
            fs::rename(&tmp, path).map_err(err)?;
            if let Some(dir) = path.parent() {
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(err)?;
            }
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}
