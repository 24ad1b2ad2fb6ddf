//! [`ChunkFiles`]: whole files named by a 32-byte id, one file per id, in a
//! directory of this machine.
//!
//! Owns: the directory given to [`ChunkFiles::open`]. Its layout is
//! `dir/ab/<64 hex digits>`, where `ab` is the id's first byte in hex (256
//! subdirectories at most, created on first use), plus temporary files
//! `dir/ab/tmp.<64 hex>.<n>` while a write is in flight.
//!
//! May not: know what the bytes are (shards, chunks) or verify them; the
//! layers above check hashes. No other code writes into the directory.
//!
//! Invariants:
//! * A chunk file is absent or complete. A write goes to a temp file in the
//!   same directory and is renamed over the final name; on any failure
//!   (ENOSPC included) the temp file is removed and nothing else changed.
//! * `write(.., sync = true)` returns after the data, the name, and (if it had
//!   to be created) the subdirectory are on disk: fdatasync of the file, then
//!   rename, then fsync of the subdirectory.
//! * Temp files only outlive their write after a crash; [`ChunkFiles::open`]
//!   removes them. Open it only under the data directory's [`super::DataDirLock`],
//!   or it could remove another process's in-flight writes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::{StoreError, from_io};

/// Name prefix of in-flight writes. Chunk files are exactly 64 hex digits,
/// so the two can never be confused.
const TEMP_PREFIX: &str = "tmp.";

/// The largest offset `pread(2)` accepts (`off_t` is signed).
const MAX_OFFSET: u64 = i64::MAX as u64;

/// Mode of chunk files: the bytes are encrypted, but still the owner's only.
const FILE_MODE: u32 = 0o600;
/// Mode of the store's directories.
const DIR_MODE: u32 = 0o700;

/// Alignment of `O_DIRECT` reads' offset and length, and of their buffer
/// where the file system does not say: the page size, which covers every
/// logical block size in use.
const DIRECT_ALIGN: usize = 4096;

/// A directory of chunk files.
#[derive(Debug)]
pub struct ChunkFiles {
    /// The root; chunk files live one level below, in `ab/` subdirectories.
    dir: PathBuf,
    /// Makes temp file names unique within this process (and the data
    /// directory lock makes this process the only writer).
    next_temp: AtomicU64,
    /// Whether reads may bypass the page cache (`O_DIRECT`); cleared the
    /// first time the file system refuses it.
    direct: AtomicBool,
    /// Memory alignment `O_DIRECT` reads need here (`STATX_DIOALIGN`, asked
    /// at the first direct read; 0 until then). Smaller than a page where
    /// the disk allows it, so that the bytes land close to the buffer's
    /// start.
    mem_align: AtomicUsize,
}

/// Space and inodes of the file system holding a [`ChunkFiles`] directory,
/// as `statvfs(3)` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Preferred I/O size (`f_bsize`).
    pub block_size: u64,
    /// The unit of the block counts (`f_frsize`).
    pub fragment_size: u64,
    /// Size of the file system in bytes.
    pub total_bytes: u64,
    /// Free bytes, including those reserved for root.
    pub free_bytes: u64,
    /// Free bytes an unprivileged process may use.
    pub available_bytes: u64,
    /// Inodes in total.
    pub total_inodes: u64,
    /// Free inodes.
    pub free_inodes: u64,
    /// Free inodes an unprivileged process may use.
    pub available_inodes: u64,
    /// Longest file name, in bytes.
    pub name_max: u64,
}

impl ChunkFiles {
    /// Opens (creating it if missing) the chunk directory `dir` and removes
    /// the temp files a crash left behind.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(from_io)?;
        let files = ChunkFiles {
            dir: dir.to_path_buf(),
            next_temp: AtomicU64::new(0),
            direct: AtomicBool::new(true),
            mem_align: AtomicUsize::new(0),
        };
        let removed = files.remove_temp_files()?;
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "removed temp files left by a crash");
        }
        Ok(files)
    }

    /// Opens the existing chunk directory `dir` for reading only: nothing
    /// is created or removed (temp files a crash left stay).
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no chunk directory {}", dir.display()),
            )));
        }
        Ok(ChunkFiles {
            dir: dir.to_path_buf(),
            next_temp: AtomicU64::new(0),
            direct: AtomicBool::new(true),
            mem_align: AtomicUsize::new(0),
        })
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file of `id` lives (whether or not it exists).
    pub fn path(&self, id: &[u8; 32]) -> PathBuf {
        let name = hex(id);
        self.dir.join(&name[..2]).join(name)
    }

    /// Writes `bytes` as the whole file of `id`, replacing any earlier one
    /// atomically. `sync`: also make it durable (see the module invariants).
    /// On ENOSPC returns [`StoreError::NoSpace`] and leaves nothing behind.
    pub fn write(&self, id: &[u8; 32], bytes: &[u8], sync: bool) -> Result<(), StoreError> {
        self.write_with(id, sync, |file| file.write_all(bytes))
    }

    /// The write path with the filling of the temp file as a parameter, so
    /// tests can fail it.
    fn write_with(
        &self,
        id: &[u8; 32],
        sync: bool,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let target = self.path(id);
        let Some(sub) = target.parent() else {
            return Err(StoreError::Corrupt("chunk path has no parent"));
        };
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = sub.join(format!("{TEMP_PREFIX}{}.{n}", hex(id)));

        let file = match create_file(&temp) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.create_subdir(sub)?;
                create_file(&temp).map_err(from_io)?
            }
            Err(e) => return Err(from_io(e)),
        };
        if let Err(e) = fill_and_rename(file, fill, sync, &temp, &target) {
            if let Err(rm) = fs::remove_file(&temp)
                && rm.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %temp.display(), error = %rm, "cannot remove temp file");
            }
            return Err(from_io(e));
        }
        if sync {
            sync_path(sub)?;
        }
        Ok(())
    }

    /// Reads from the file of `id` at `offset` into `buf`. Returns
    /// `Ok(None)` when there is no such file, otherwise the number of bytes
    /// read: `buf.len()`, or fewer at the end of the file (0 at or past it).
    pub fn read_at(
        &self,
        id: &[u8; 32],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Option<usize>, StoreError> {
        let Some(file) = self.open_existing(id)? else {
            return Ok(None);
        };
        let mut done = 0;
        while done < buf.len() {
            // pread takes a signed offset: anything beyond is past the end.
            let at = offset.saturating_add(done as u64);
            if at > MAX_OFFSET {
                break;
            }
            match file.read_at(&mut buf[done..], at) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(from_io(e)),
            }
        }
        Ok(Some(done))
    }

    /// The first `len` bytes of the file of `id` (fewer if it is shorter),
    /// read into `buf`, whose contents are replaced (a recycled buffer: no
    /// fresh pages to fault in). None if there is no file.
    ///
    /// The bytes go from the disk straight into `buf` (`O_DIRECT`), without
    /// a copy in the page cache (chunk files are read once per cache miss;
    /// the plaintext cache above is what keeps hot data). Where the file
    /// system refuses `O_DIRECT` (EINVAL), this and every later read are
    /// plain reads.
    pub fn read_prefix_into(
        &self,
        id: &[u8; 32],
        len: usize,
        buf: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read_prefix_at(id, len, buf)?.map(|(mut buf, start)| {
            if start > 0 {
                buf.copy_within(start.., 0);
                buf.truncate(buf.len() - start);
            }
            buf
        }))
    }

    /// `read_prefix_into` without moving the bytes to the front: they are
    /// `buf[start..]` of the returned `(buf, start)` (`start` is where an
    /// aligned direct read put them; 0 for a plain read).
    pub fn read_prefix_at(
        &self,
        id: &[u8; 32],
        len: usize,
        mut buf: Vec<u8>,
    ) -> Result<Option<(Vec<u8>, usize)>, StoreError> {
        while self.direct.load(Ordering::Relaxed) {
            match self.read_direct(id, len, &mut buf) {
                Ok(found) => return Ok(found.map(|start| (buf, start))),
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && self.mem_align.load(Ordering::Relaxed) < DIRECT_ALIGN =>
                {
                    // The alignment the file system gave was not enough:
                    // retry with a page.
                    self.mem_align.store(DIRECT_ALIGN, Ordering::Relaxed);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct.store(false, Ordering::Relaxed);
                    tracing::debug!(dir = %self.dir.display(), "O_DIRECT refused here; chunk files are read through the page cache");
                }
                Err(e) => return Err(from_io(e)),
            }
        }
        let Some(file) = self.open_existing(id)? else {
            return Ok(None);
        };
        buf.clear();
        buf.reserve(len);
        match file.take(len as u64).read_to_end(&mut buf) {
            Ok(_) => Ok(Some((buf, 0))),
            Err(e) => Err(from_io(e)),
        }
    }

    /// The capacity a buffer needs for `read_prefix_into(.., len, ..)` to
    /// fill it without growing it (room to align an `O_DIRECT` read).
    pub fn read_buffer_capacity(len: usize) -> usize {
        len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN + DIRECT_ALIGN
    }

    /// `read_prefix_at` with `O_DIRECT`: reads whole aligned blocks into an
    /// aligned window of `buf`, which ends up holding the wanted bytes from
    /// the returned offset on. None when there is no file.
    fn read_direct(
        &self,
        id: &[u8; 32],
        len: usize,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<usize>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(self.path(id))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let want = len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        buf.reserve(Self::read_buffer_capacity(len).saturating_sub(buf.len()));
        let start = buf.as_ptr().align_offset(self.direct_mem_align(&file));
        if start >= DIRECT_ALIGN {
            // No aligned address in reach (never for bytes in practice).
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if buf.len() < start + want {
            // Zero-fills only what the buffer never held (nothing, for a
            // recycled buffer of the same size).
            buf.resize(start + want, 0);
        }
        let window = &mut buf[start..start + want];
        let mut done = 0;
        while done < want {
            match file.read_at(&mut window[done..], done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if done % DIRECT_ALIGN != 0 {
                break; // a short read ends at the end of the file
            }
        }
        buf.truncate(start + done.min(len));
        Ok(Some(start))
    }

    /// The memory alignment of direct reads of `file`'s file system, asked
    /// once (`statx(STATX_DIOALIGN)`, Linux 6.1); a page where the kernel
    /// does not say.
    fn direct_mem_align(&self, file: &File) -> usize {
        let known = self.mem_align.load(Ordering::Relaxed);
        if known != 0 {
            return known;
        }
        // SAFETY: an all-zero statx is a valid value of this plain C struct.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is open for the call's duration, the path is a valid
        // C string and `stx` is a writable statx.
        let r = unsafe {
            libc::statx(
                file.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_DIOALIGN,
                &mut stx,
            )
        };
        let align = stx.stx_dio_mem_align as usize;
        let align = if r == 0
            && stx.stx_mask & libc::STATX_DIOALIGN != 0
            && align.is_power_of_two()
            && align <= DIRECT_ALIGN
        {
            align
        } else {
            DIRECT_ALIGN
        };
        self.mem_align.store(align, Ordering::Relaxed);
        align
    }

    /// Asks the kernel to start reading the first `len` bytes of the file
    /// of `id` into its cache now, without waiting (read-ahead for a decode
    /// that is about to be queued). Only a hint: errors are ignored. Does
    /// nothing while reads bypass the page cache (`read_prefix_into`).
    pub fn will_need(&self, id: &[u8; 32], len: u64) {
        if self.direct.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(Some(file)) = self.open_existing(id) {
            let _ = nix::fcntl::posix_fadvise(
                &file,
                0,
                i64::try_from(len).unwrap_or(i64::MAX),
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// The whole file of `id`, or None if there is none.
    pub fn read_all(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(self.path(id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(from_io(e)),
        }
    }

    /// The length of the file of `id`, or None if there is none.
    pub fn len(&self, id: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        match fs::metadata(self.path(id)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(from_io(e)),
        }
    }

    /// True when the file of `id` exists.
    pub fn contains(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.len(id)?.is_some())
    }

    /// Removes the file of `id`. Returns false if there was none. Not durable
    /// until [`ChunkFiles::sync_dir`] of the same id.
    pub fn delete(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(from_io(e)),
        }
    }

    /// Makes the file of `id` durable: fsync of the file, then of its
    /// directory. Returns false (and syncs nothing) if there is no such file.
    pub fn sync(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        let Some(file) = self.open_existing(id)? else {
            return Ok(false);
        };
        file.sync_all().map_err(from_io)?;
        self.sync_dir(id)?;
        Ok(true)
    }

    /// fsyncs the directory holding the file of `id`, which makes earlier
    /// creations, renames and deletions of files in it durable. A directory
    /// that does not exist yet holds nothing to sync.
    pub fn sync_dir(&self, id: &[u8; 32]) -> Result<(), StoreError> {
        let path = self.path(id);
        let Some(sub) = path.parent() else {
            return Err(StoreError::Corrupt("chunk path has no parent"));
        };
        match sync_path(sub) {
            Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Visits every chunk file (id and length) until `visit` returns false.
    /// Order is unspecified; streams one directory entry at a time. Files
    /// that are not chunk files (temp files, strays) are skipped.
    pub fn visit(&self, visit: &mut dyn FnMut(&[u8; 32], u64) -> bool) -> Result<(), StoreError> {
        for sub in self.subdirs()? {
            for entry in fs::read_dir(&sub).map_err(from_io)? {
                let entry = entry.map_err(from_io)?;
                let Some(id) = entry.file_name().to_str().and_then(parse_hex) else {
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Deleted since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(from_io(e)),
                };
                if meta.is_file() && !visit(&id, meta.len()) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Removes the temp files of interrupted writes; returns how many. Called
    /// by [`ChunkFiles::open`]; must not run while writes are in flight.
    pub fn remove_temp_files(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for sub in self.subdirs()? {
            for entry in fs::read_dir(&sub).map_err(from_io)? {
                let entry = entry.map_err(from_io)?;
                if entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(TEMP_PREFIX.as_bytes())
                {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(from_io(e)),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Space and inodes of the file system holding the directory.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let st = nix::sys::statvfs::statvfs(self.dir.as_path()).map_err(|e| from_io(e.into()))?;
        // The libc types are aliases of u64 on Linux; `as` keeps this portable.
        let unit = st.fragment_size() as u64;
        let bytes = |blocks: u64| blocks.saturating_mul(unit);
        Ok(DiskUsage {
            block_size: st.block_size() as u64,
            fragment_size: unit,
            total_bytes: bytes(st.blocks() as u64),
            free_bytes: bytes(st.blocks_free() as u64),
            available_bytes: bytes(st.blocks_available() as u64),
            total_inodes: st.files() as u64,
            free_inodes: st.files_free() as u64,
            available_inodes: st.files_available() as u64,
            name_max: st.name_max() as u64,
        })
    }

    /// The `ab/` subdirectories that exist (two lowercase hex digits).
    fn subdirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut subs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(from_io)? {
            let entry = entry.map_err(from_io)?;
            let name = entry.file_name();
            let is_shard_dir = name.len() == 2
                && name
                    .as_encoded_bytes()
                    .iter()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if is_shard_dir && entry.file_type().map_err(from_io)?.is_dir() {
                subs.push(entry.path());
            }
        }
        subs.sort();
        Ok(subs)
    }

    /// Creates a subdirectory and makes its name durable in the root.
    fn create_subdir(&self, sub: &Path) -> Result<(), StoreError> {
        match DirBuilder::new().mode(DIR_MODE).create(sub) {
            Ok(()) => sync_path(&self.dir),
            // Another thread created it first; it synced the root.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(from_io(e)),
        }
    }

    /// The file of `id` opened for reading, or None if there is none.
    fn open_existing(&self, id: &[u8; 32]) -> Result<Option<File>, StoreError> {
        match File::open(self.path(id)) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(from_io(e)),
        }
    }
}

impl super::ChunkStore for ChunkFiles {
    fn write(&self, id: &[u8; 32], bytes: &[u8], sync: bool) -> Result<(), StoreError> {
        ChunkFiles::write(self, id, bytes, sync)
    }

    fn read_prefix_at(
        &self,
        id: &[u8; 32],
        len: usize,
        buf: Vec<u8>,
    ) -> Result<Option<(Vec<u8>, usize)>, StoreError> {
        ChunkFiles::read_prefix_at(self, id, len, buf)
    }

    fn read_all(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        ChunkFiles::read_all(self, id)
    }

    fn exists(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(ChunkFiles::len(self, id)?.is_some())
    }

    fn delete(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        ChunkFiles::delete(self, id)
    }

    fn sync(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        ChunkFiles::sync(self, id)
    }

    fn sync_dir(&self, id: &[u8; 32]) -> Result<(), StoreError> {
        ChunkFiles::sync_dir(self, id)
    }

    fn visit(&self, visit: &mut dyn FnMut(&[u8; 32], u64) -> bool) -> Result<(), StoreError> {
        ChunkFiles::visit(self, visit)
    }

    fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        ChunkFiles::disk_usage(self)
    }

    fn will_need(&self, id: &[u8; 32], len: u64) {
        ChunkFiles::will_need(self, id, len)
    }
}

/// Fills the temp file, fdatasyncs it if `sync`, closes it and renames it to
/// `target`.
fn fill_and_rename(
    mut file: File,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
    sync: bool,
    temp: &Path,
    target: &Path,
) -> io::Result<()> {
    fill(&mut file)?;
    if sync {
        file.sync_data()?;
    } else {
        // Start writing it back now, without waiting: the next fsync then
        // finds the disk already busy with it instead of all of it dirty.
        // Only a hint, so its failure is ignored.
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a file descriptor `file` owns; it reads
        // no user memory.
        let _ =
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    drop(file);
    fs::rename(temp, target)
}

/// Creates (or truncates a stale) temp file for writing.
fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// fsync of a file or directory by path.
fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(from_io)
}

/// `id` as 64 lowercase hex digits.
fn hex(id: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in id {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The id named by exactly 64 lowercase hex digits.
fn parse_hex(name: &str) -> Option<[u8; 32]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = name.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (out, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
        *out = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 32] {
        let mut id = [n; 32];
        id[31] = n.wrapping_mul(7);
        id
    }

    fn open() -> (tempfile::TempDir, ChunkFiles) {
        let dir = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(&dir.path().join("chunks")).unwrap();
        (dir, files)
    }

    #[test]
    fn hex_roundtrips_and_rejects_strays() {
        let id = id(0xab);
        let name = hex(&id);
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("abab"));
        assert_eq!(parse_hex(&name), Some(id));
        assert_eq!(parse_hex(&name[..63]), None);
        assert_eq!(parse_hex(&name.to_uppercase()), None);
        assert_eq!(parse_hex(&format!("{TEMP_PREFIX}{}", &name[4..])), None);
    }

    #[test]
    fn path_is_first_byte_dir_then_full_hex() {
        let (_d, files) = open();
        let id = id(0x3c);
        let p = files.path(&id);
        assert_eq!(p.parent().unwrap(), files.dir().join("3c"));
        assert_eq!(p.file_name().unwrap().to_str().unwrap(), hex(&id));
    }

    #[test]
    fn write_read_delete_roundtrip() {
        let (_d, files) = open();
        let a = id(1);
        assert_eq!(files.read_all(&a).unwrap(), None);
        assert_eq!(files.len(&a).unwrap(), None);
        assert!(!files.delete(&a).unwrap());
        for (sync, bytes) in [(false, b"hello\0world".to_vec()), (true, vec![])] {
            files.write(&a, &bytes, sync).unwrap();
            assert_eq!(files.read_all(&a).unwrap(), Some(bytes.clone()));
            assert_eq!(files.len(&a).unwrap(), Some(bytes.len() as u64));
        }
        assert!(files.contains(&a).unwrap());
        assert!(files.delete(&a).unwrap());
        files.sync_dir(&a).unwrap();
        assert!(!files.contains(&a).unwrap());
        assert!(!files.delete(&a).unwrap());
    }

    #[test]
    fn write_replaces_whole_file() {
        let (_d, files) = open();
        let a = id(2);
        files.write(&a, &[1; 1000], true).unwrap();
        files.write(&a, &[2; 10], true).unwrap();
        assert_eq!(files.read_all(&a).unwrap(), Some(vec![2; 10]));
    }

    #[test]
    fn large_file_roundtrips() {
        let (_d, files) = open();
        let a = id(3);
        let bytes: Vec<u8> = (0..(4 << 20) + 1).map(|i: u32| (i % 251) as u8).collect();
        files.write(&a, &bytes, false).unwrap();
        assert_eq!(files.read_all(&a).unwrap(), Some(bytes));
    }

    #[test]
    fn prefix_reads_return_exactly_the_file_bytes_with_and_without_o_direct() {
        let (_d, files) = open();
        let mut data = vec![0u8; 3 * DIRECT_ALIGN + 123];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 7 + i / 251) as u8;
        }
        let a = id(9);
        files.write(&a, &data, false).unwrap();
        // Direct reads at the alignment the file system gives (0: ask it),
        // at 512 bytes, and at 1 byte (refused where the file system needs
        // more: the read is retried at a page), then plain reads.
        for (direct, align) in [(true, 0), (true, 512), (true, 1), (false, 0)] {
            files.direct.store(direct, Ordering::Relaxed);
            files.mem_align.store(align, Ordering::Relaxed);
            // Fresh, recycled-with-stale-bytes and odd-offset buffers.
            let stale = vec![0xEE; 5 * DIRECT_ALIGN];
            let mut odd = Vec::with_capacity(DIRECT_ALIGN * 8);
            odd.extend_from_slice(&[1, 2, 3]);
            for buf in [Vec::new(), stale, odd] {
                for len in [
                    0,
                    1,
                    DIRECT_ALIGN,
                    DIRECT_ALIGN + 1,
                    2 * DIRECT_ALIGN - 5,
                    data.len(),
                    data.len() + 4000,
                ] {
                    let got = files
                        .read_prefix_into(&a, len, buf.clone())
                        .unwrap()
                        .unwrap();
                    assert_eq!(
                        got,
                        data[..len.min(data.len())],
                        "direct={direct} align={align} len={len}"
                    );
                    let (got, start) = files.read_prefix_at(&a, len, buf.clone()).unwrap().unwrap();
                    assert_eq!(
                        got[start..],
                        data[..len.min(data.len())],
                        "direct={direct} align={align} len={len}"
                    );
                    assert!(direct || start == 0);
                }
            }
            assert!(
                files
                    .read_prefix_into(&id(10), 10, Vec::new())
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn read_at_short_at_eof() {
        let (_d, files) = open();
        let a = id(4);
        let mut buf = [0u8; 4];
        assert_eq!(files.read_at(&a, 0, &mut buf).unwrap(), None);
        files.write(&a, b"0123456789", false).unwrap();
        assert_eq!(files.read_at(&a, 0, &mut buf).unwrap(), Some(4));
        assert_eq!(&buf, b"0123");
        assert_eq!(files.read_at(&a, 8, &mut buf).unwrap(), Some(2));
        assert_eq!(&buf[..2], b"89");
        assert_eq!(files.read_at(&a, 10, &mut buf).unwrap(), Some(0));
        assert_eq!(files.read_at(&a, u64::MAX, &mut buf).unwrap(), Some(0));
        assert_eq!(files.read_at(&a, 3, &mut []).unwrap(), Some(0));
    }

    #[test]
    fn sync_reports_absence() {
        let (_d, files) = open();
        let a = id(5);
        assert!(!files.sync(&a).unwrap());
        files.sync_dir(&a).unwrap();
        files.write(&a, b"x", false).unwrap();
        assert!(files.sync(&a).unwrap());
    }

    #[test]
    fn enospc_while_writing_leaves_nothing() {
        let (_d, files) = open();
        let a = id(6);
        let err = files
            .write_with(&a, true, |f| {
                f.write_all(b"partial")?;
                Err(io::Error::from_raw_os_error(28))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::NoSpace), "{err:?}");
        assert!(err.is_no_space());
        assert!(!files.contains(&a).unwrap());
        let left: Vec<_> = fs::read_dir(files.path(&a).parent().unwrap())
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn failed_overwrite_keeps_old_file() {
        let (_d, files) = open();
        let a = id(7);
        files.write(&a, b"old", true).unwrap();
        let err = files
            .write_with(&a, false, |_| Err(io::Error::from_raw_os_error(5)))
            .unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        assert_eq!(files.read_all(&a).unwrap(), Some(b"old".to_vec()));
    }

    #[test]
    fn open_removes_temp_leftovers_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("chunks");
        let a = id(8);
        {
            let files = ChunkFiles::open(&root).unwrap();
            files.write(&a, b"keep", true).unwrap();
        }
        let sub = root.join(&hex(&a)[..2]);
        let temp = sub.join(format!("{TEMP_PREFIX}{}.7", hex(&a)));
        fs::write(&temp, b"half").unwrap();
        let files = ChunkFiles::open(&root).unwrap();
        assert!(!temp.exists());
        assert_eq!(files.read_all(&a).unwrap(), Some(b"keep".to_vec()));
        assert_eq!(files.remove_temp_files().unwrap(), 0);
    }

    #[test]
    fn visit_lists_chunk_files_and_stops() {
        let (_d, files) = open();
        let ids = [id(9), id(10), id(11)];
        for (i, id) in ids.iter().enumerate() {
            files.write(id, &vec![0; i], false).unwrap();
        }
        fs::write(files.dir().join(&hex(&ids[0])[..2]).join("stray"), b"").unwrap();
        let mut seen = Vec::new();
        files
            .visit(&mut |id, len| {
                seen.push((*id, len));
                true
            })
            .unwrap();
        seen.sort();
        let mut want: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u64))
            .collect();
        want.sort();
        assert_eq!(seen, want);
        let mut count = 0;
        files
            .visit(&mut |_, _| {
                count += 1;
                false
            })
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn disk_usage_is_consistent() {
        let (_d, files) = open();
        let u = files.disk_usage().unwrap();
        assert!(u.fragment_size > 0);
        assert!(u.total_bytes >= u.free_bytes);
        assert!(u.free_bytes >= u.available_bytes);
        assert!(u.total_inodes >= u.free_inodes);
        assert!(u.name_max >= 64);
    }
}
