//! [`DataDirLock`]: at most one Pangea process per data directory.
//!
//! Owns: the file `<data_dir>/lock`.
//!
//! May not: touch anything else in the data directory.
//!
//! Invariants: while a `DataDirLock` lives, its process holds an exclusive
//! `flock(2)` on the lock file, and the file holds that process's pid (for
//! messages only; the lock, not the pid, is the truth). The kernel releases
//! the lock when the file is closed, so a crashed holder never blocks the
//! next start. `flock` locks belong to an open file description: a second
//! acquisition in the same process, through a new open, fails too.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{StoreError, from_io};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "lock";

/// Mode of the data directory when the lock creates it.
const DIR_MODE: u32 = 0o700;
/// Mode of the lock file.
const FILE_MODE: u32 = 0o600;

/// An exclusive lock on a data directory, released on drop.
#[derive(Debug)]
pub struct DataDirLock {
    /// The open, locked lock file; closing it releases the lock.
    file: File,
    /// `<data_dir>/lock`, for messages.
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (created if missing) without waiting.
    /// Fails with [`StoreError::Locked`] if another process, or another
    /// `DataDirLock` in this one, holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(data_dir)
            .map_err(from_io)?;
        let path = data_dir.join(LOCK_FILE);
        // No truncation before the lock is ours: the holder's pid stays
        // readable for the message below.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(from_io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                tracing::warn!(
                    path = %path.display(),
                    holder_pid = ?DataDirLock::holder_pid(data_dir),
                    "data directory is locked by another process"
                );
                return Err(StoreError::Locked { path });
            }
            Err(TryLockError::Error(e)) => return Err(from_io(e)),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0).map_err(from_io)?;
        file.write_all_at(pid.as_bytes(), 0).map_err(from_io)?;
        Ok(DataDirLock { file, path })
    }

    /// Takes the lock of an existing `data_dir` without writing anything
    /// (a read-only mount, fsck): the lock file must exist (every data dir
    /// mounted once has one) and keeps the pid of its last writer.
    pub fn acquire_read_only(data_dir: &Path) -> Result<DataDirLock, StoreError> {
        let path = data_dir.join(LOCK_FILE);
        let file = File::open(&path).map_err(from_io)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { file, path }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
            Err(TryLockError::Error(e)) => Err(from_io(e)),
        }
    }

    /// The pid recorded in `data_dir`'s lock file, if any. Informative only:
    /// it may name a process that has exited (its lock went with it).
    pub fn holder_pid(data_dir: &Path) -> Option<u32> {
        let text = std::fs::read_to_string(data_dir.join(LOCK_FILE)).ok()?;
        text.trim().parse().ok()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first makes
        // the release independent of any duplicated descriptor.
        if let Err(e) = self.file.unlock() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot unlock data directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_twice_in_one_process_fails_then_succeeds_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).unwrap();
        assert_eq!(first.path(), data.join(LOCK_FILE));
        assert_eq!(DataDirLock::holder_pid(&data), Some(std::process::id()));

        let err = DataDirLock::acquire(&data).unwrap_err();
        match &err {
            StoreError::Locked { path } => assert_eq!(path, &data.join(LOCK_FILE)),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert!(err.to_string().contains("locked"), "{err}");
        // The failed attempt did not wipe the holder's pid.
        assert_eq!(DataDirLock::holder_pid(&data), Some(std::process::id()));

        drop(first);
        let again = DataDirLock::acquire(&data).unwrap();
        drop(again);
    }

    #[test]
    fn stale_pid_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), b"999999999\nleftover").unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(
            DataDirLock::holder_pid(dir.path()),
            Some(std::process::id())
        );
        drop(lock);
    }

    #[test]
    fn different_dirs_do_not_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let a = DataDirLock::acquire(&dir.path().join("a")).unwrap();
        let b = DataDirLock::acquire(&dir.path().join("b")).unwrap();
        drop((a, b));
    }
}
