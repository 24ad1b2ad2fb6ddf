//! The data dir: `index/` (RocksDB), `chunks/` (shard files), `master.key`
//! (0600, 32 random bytes, created on first use, never logged), `lock` and
//! `reserve` (space set aside for the index, see [`Reserve`]).

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
    /// Released by `open`: restore it once the index is open.
    pub reserve: Reserve,
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
        // The index's recovery may need room on a disk that filled up.
        let reserve = Reserve::new(root);
        if let Err(e) = reserve.release() {
            tracing::warn!(error = %e, "cannot release the index's reserve");
        }
        Ok(DataDir {
            root: root.to_path_buf(),
            master,
            reserve,
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

/// Space set aside on the data dir's disk for the index: a file of
/// preallocated blocks, deleted whenever the data dir is opened and created
/// again once the index is open.
///
/// When the disk fills up (with chunks, or with anything else on the same
/// disk), opening RocksDB still needs some room: it replays its log and
/// writes new tables, a new manifest and an options file. Without this
/// reserve a data dir whose disk filled up could not be mounted again, and
/// so its files could not be deleted to make room.
#[derive(Debug, Clone)]
pub struct Reserve {
    path: PathBuf,
    /// Bytes to set aside (1 MiB where the disk's size is unknown).
    bytes: u64,
}

impl Reserve {
    /// The reserve of the data dir at `root`: 1/32 of its disk, between
    /// 1 MiB and 64 MiB (the index's write buffers and logs are bounded by
    /// `store::rocks`' limits, 32 and 64 MiB).
    pub fn new(root: &Path) -> Reserve {
        let total = nix::sys::statvfs::statvfs(root)
            .map(|s| s.blocks().saturating_mul(s.fragment_size()))
            .unwrap_or(0);
        Reserve {
            path: root.join("reserve"),
            bytes: (total / 32).clamp(1 << 20, 64 << 20),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives the reserve's space back to the disk (with that of a restore
    /// a crash interrupted).
    pub fn release(&self) -> std::io::Result<()> {
        let _ = fs::remove_file(self.path.with_extension("tmp"));
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether the reserve holds its space.
    pub fn is_in_place(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| m.len() == self.bytes)
    }

    /// Sets the space aside again (allocated blocks, not a sparse file).
    /// Fails with ENOSPC, leaving no partial file, while the disk has no
    /// room for it.
    pub fn restore(&self) -> std::io::Result<()> {
        if self.is_in_place() {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        let r = (|| {
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            let len = i64::try_from(self.bytes).unwrap_or(i64::MAX);
            nix::fcntl::posix_fallocate(&f, 0, len).map_err(std::io::Error::from)?;
            fs::rename(&tmp, &self.path)
        })();
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_released_at_open_and_restored_with_allocated_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let dd = DataDir::open(&root).unwrap();
        let r = &dd.reserve;
        assert!((1 << 20..=64 << 20).contains(&r.bytes()));
        assert!(!r.is_in_place());
        r.restore().unwrap();
        assert!(r.is_in_place());
        let md = fs::metadata(root.join("reserve")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(md.blocks() * 512 >= r.bytes(), "allocated, not sparse");
        assert_eq!(md.mode() & 0o777, 0o600);
        r.restore().unwrap(); // already in place: nothing to do
        drop(dd);
        // As a crash in the middle of a restore leaves it.
        fs::write(root.join("reserve.tmp"), b"partial").unwrap();
        // The next open gives the space back before the index opens.
        let dd = DataDir::open(&root).unwrap();
        assert!(!dd.reserve.is_in_place());
        assert!(!root.join("reserve").exists());
        assert!(!root.join("reserve.tmp").exists());
    }
}
