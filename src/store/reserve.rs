//! [`Reserve`]: space set aside on the data dir's disk for the index.
//!
//! Owns: the files `<data_dir>/reserve` and `<data_dir>/reserve.tmp`.
//!
//! May not: touch anything else in the data directory. It is about the
//! local disk, not the filesystem: `fs` restores it after deleting chunk
//! files (`FsConfig::reserve`), the node releases it before the index opens
//! (`node::datadir`).
//!
//! Invariants: the reserve is either absent or a complete file of
//! allocated (not sparse) blocks of [`Reserve::bytes`]; a restore that
//! fails leaves no partial file.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_restored_reserve_holds_allocated_blocks_and_a_release_gives_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let r = Reserve::new(root);
        assert!((1 << 20..=64 << 20).contains(&r.bytes()));
        assert!(!r.is_in_place());
        r.restore().unwrap();
        assert!(r.is_in_place());
        let md = fs::metadata(root.join("reserve")).unwrap();
        assert!(md.blocks() * 512 >= r.bytes(), "allocated, not sparse");
        assert_eq!(md.mode() & 0o777, 0o600);
        r.restore().unwrap(); // already in place: nothing to do
        assert!(r.is_in_place());
        // As a crash in the middle of a restore leaves it.
        fs::write(root.join("reserve.tmp"), b"partial").unwrap();
        r.release().unwrap();
        assert!(!r.is_in_place());
        assert!(!root.join("reserve").exists());
        assert!(!root.join("reserve.tmp").exists());
        // Nothing to release: not an error.
        r.release().unwrap();
    }
}
