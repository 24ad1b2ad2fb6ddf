//! The local store: a typed-column-family key-value index and a chunk-file
//! store, both on this machine's disk.
//!
//! Owns:
//! * [`Kv`], the key-value contract, with its two implementations:
//!   [`RocksKv`] ([`rocks`], the index on disk) and [`MemKv`] ([`mem`], the
//!   same semantics in memory, for fast tests). One conformance suite
//!   (`conformance.rs`) runs against both.
//! * [`Cf`], the column families, and the index schema version
//!   ([`SCHEMA_VERSION`], checked at open).
//! * [`ChunkFiles`] ([`chunkfiles`]): whole files named by a 32-byte id,
//!   written atomically (temp file, rename).
//! * [`DataDirLock`] ([`lock`]): one process per data directory.
//! * [`Reserve`] ([`reserve`]): space set aside on the data dir's disk so
//!   that the index can open again after the disk filled up.
//!
//! May not: know about filesystems (inodes, dentries), CES, peers or the
//! network. Keys and values are opaque bytes; the layers above encode them.
//! Only this module names `rocksdb` (`scripts/check-layering`).
//!
//! Invariants:
//! * A [`Batch`] is applied atomically and in order: after [`Kv::write`]
//!   returns, either every op is visible or (on error) none is.
//! * [`Kv::scan`] streams: memory does not grow with the size of the range,
//!   and it sees the store as of its start (writes made by `visit` itself are
//!   not seen by the ongoing scan).
//! * A chunk file is either absent or complete: readers never see a
//!   half-written file, and a failed write leaves no file behind.

pub mod chunkfiles;
pub mod lock;
pub mod mem;
pub mod reserve;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod sim;

#[cfg(all(test, feature = "rocksdb"))]
mod conformance;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use chunkfiles::{ChunkFiles, DiskUsage};
pub use lock::DataDirLock;
pub use mem::MemKv;
pub use reserve::Reserve;
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksKv, SCHEMA_KEY, SCHEMA_VERSION};
pub use sim::{SimChunks, SimDisk, SimKv};

/// The first 16 bytes of an index key in hex, for messages about keys that
/// do not parse (ids have their own display).
pub fn key_hex(k: &[u8]) -> String {
    k.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// `errno` of "No space left on device".
const ENOSPC: i32 = 28;
/// `errno` of "Disk quota exceeded": the same condition for the caller.
const EDQUOT: i32 = 122;
/// How RocksDB spells ENOSPC in its messages.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
const NO_SPACE_MESSAGE: &str = "No space left on device";

/// Column families. Names are part of the on-disk format: never rename one,
/// only add (and bump [`SCHEMA_VERSION`] when the layout changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Store-wide records: the schema version, filesystem-wide settings.
    Meta,
    /// Inode attributes, by inode number.
    Inode,
    /// Directory entries, by (parent, name).
    Dentry,
    /// Directory entries in readdir order, by (parent, position).
    DirPos,
    /// File extents: which chunk holds which byte range of a file.
    Extent,
    /// Chunk records: manifest, reference count.
    Chunk,
    /// Small file contents kept in the index rather than as chunks.
    Inline,
    /// Extended attributes.
    Xattr,
    /// Inodes unlinked while still open, to reclaim after a crash.
    Orphan,
    /// Chunks waiting for garbage collection.
    Gc,
    /// Chunks whose shards are waiting to be placed on peers (empty while
    /// the node is alone).
    Upload,
    /// Peers that hold shards: small numbers (used in chunk records) and
    /// their identities, both ways.
    Peer,
    /// On a storage node: the shards it holds for each member (owner,
    /// address, size).
    Held,
    /// Chunks whose shards on peers are to be repaired (the healer's
    /// queue: due time, risk).
    Heal,
}

impl Cf {
    /// Every column family, in a fixed order (the order of [`Cf::index`]).
    pub const ALL: [Cf; 14] = [
        Cf::Meta,
        Cf::Inode,
        Cf::Dentry,
        Cf::DirPos,
        Cf::Extent,
        Cf::Chunk,
        Cf::Inline,
        Cf::Xattr,
        Cf::Orphan,
        Cf::Gc,
        Cf::Upload,
        Cf::Peer,
        Cf::Held,
        Cf::Heal,
    ];

    /// The on-disk name of the column family.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Inode => "inode",
            Cf::Dentry => "dentry",
            Cf::DirPos => "dirpos",
            Cf::Extent => "extent",
            Cf::Chunk => "chunk",
            Cf::Inline => "inline",
            Cf::Xattr => "xattr",
            Cf::Orphan => "orphan",
            Cf::Gc => "gc",
            Cf::Upload => "upload",
            Cf::Peer => "peer",
            Cf::Held => "held",
            Cf::Heal => "heal",
        }
    }

    /// Position in [`Cf::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One operation of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`, replacing any earlier value.
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Remove `key`; a no-op if absent.
    Delete { cf: Cf, key: Vec<u8> },
}

/// Writes to apply together, atomically and in order (a later op on the same
/// key wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Appends a put of `key` = `value` in `cf`.
    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.ops.push(Op::Put {
            cf,
            key: key.to_vec(),
            value: value.to_vec(),
        });
    }

    /// Appends a delete of `key` in `cf`.
    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.ops.push(Op::Delete {
            cf,
            key: key.to_vec(),
        });
    }

    /// True when the batch holds no op.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The ops in the order they will be applied.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Appends every op of `other` after this batch's ops.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }
}

/// A key-value store with a fixed set of column families.
///
/// Keys within a column family are ordered bytewise (memcmp, shorter first on
/// a common prefix). Every method may be called from any thread.
pub trait Kv: Send + Sync + 'static {
    /// The value of `key` in `cf`, or None.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies every op atomically (one RocksDB WriteBatch). `sync`: fsync the
    /// WAL before returning. An empty batch is a no-op (but still syncs when
    /// asked).
    fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError>;

    /// Visits, in key order, the entries of `cf` whose key starts with
    /// `prefix` and is >= `start` (`start` begins with `prefix`, or is empty
    /// meaning from `prefix`), until `visit` returns false.
    ///
    /// Streams (a RocksDB iterator), never loads the range into memory. The
    /// scan sees the store as of its start: `visit` may call other methods,
    /// including [`Kv::write`], and those writes are not seen by this scan.
    /// A `start` below `prefix` means from `prefix`; a `start` past every key
    /// with the prefix visits nothing.
    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// Makes every earlier write durable (WAL fsync).
    fn sync(&self) -> Result<(), StoreError>;

    /// A consistent copy of the whole store in the new directory `dir`
    /// (for backups; hard links where it can). Stores that cannot say so.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        let _ = dir;
        Err(StoreError::Db("this store cannot be checkpointed".into()))
    }

    /// A number that moves on every write (0 where not known).
    fn sequence(&self) -> u64 {
        0
    }
}

/// A [`Kv`] that counts its writes. A reader that notes [`CountingKv::writes`]
/// before reading may reuse what it read for as long as the count has not
/// moved: the count goes up after every write lands (failed ones included).
pub struct CountingKv {
    inner: Arc<dyn Kv>,
    writes: std::sync::atomic::AtomicU64,
}

impl CountingKv {
    pub fn new(inner: Arc<dyn Kv>) -> CountingKv {
        CountingKv {
            inner,
            writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Kv for CountingKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(cf, key)
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        let r = self.inner.write(batch, sync);
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        r
    }

    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan(cf, prefix, start, visit)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }

    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        self.inner.checkpoint(dir)
    }

    fn sequence(&self) -> u64 {
        self.inner.sequence()
    }
}

impl<K: Kv + ?Sized> Kv for Arc<K> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(cf, key)
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        (**self).write(batch, sync)
    }

    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        (**self).scan(cf, prefix, start, visit)
    }

    fn sync(&self) -> Result<(), StoreError> {
        (**self).sync()
    }

    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        (**self).checkpoint(dir)
    }

    fn sequence(&self) -> u64 {
        (**self).sequence()
    }
}

/// Whole files of encoded shards named by a 32-byte id: the seam between
/// the layers above and the disk. [`ChunkFiles`] is the real one;
/// [`sim::SimChunks`] simulates a disk that loses unsynced writes at a power
/// cut (the power-loss tests).
///
/// Contract (the one [`ChunkFiles`] documents): a file is absent or
/// complete while the process runs; `write(.., sync = true)` returns once
/// the bytes and the name are durable; `delete` is durable after
/// `sync_dir`; after a power cut, an unsynced file may be absent, hold its
/// old bytes, its new bytes, or be torn.
pub trait ChunkStore: Send + Sync + 'static {
    /// Writes `bytes` as the whole file of `id`, replacing any earlier one.
    fn write(&self, id: &[u8; 32], bytes: &[u8], sync: bool) -> Result<(), StoreError>;
    /// The first `len` bytes of the file of `id` in `buf[start..]` of the
    /// returned `(buf, start)`; None when there is no such file.
    fn read_prefix_at(
        &self,
        id: &[u8; 32],
        len: usize,
        buf: Vec<u8>,
    ) -> Result<Option<(Vec<u8>, usize)>, StoreError>;
    /// The whole file of `id`, or None.
    fn read_all(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Is there a file for `id`? (Without reading it where the store can.)
    fn exists(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.read_all(id)?.is_some())
    }
    /// Removes the file of `id`; false if there was none.
    fn delete(&self, id: &[u8; 32]) -> Result<bool, StoreError>;
    /// Makes the file of `id` (bytes and name) durable; false if absent.
    fn sync(&self, id: &[u8; 32]) -> Result<bool, StoreError>;
    /// Makes earlier creations and deletions next to `id` durable.
    fn sync_dir(&self, id: &[u8; 32]) -> Result<(), StoreError>;
    /// Every file (id, length) until `visit` returns false.
    fn visit(&self, visit: &mut dyn FnMut(&[u8; 32], u64) -> bool) -> Result<(), StoreError>;
    /// Space of the disk holding the files.
    fn disk_usage(&self) -> Result<DiskUsage, StoreError>;
    /// A hint that the first `len` bytes of `id` are about to be read.
    fn will_need(&self, _id: &[u8; 32], _len: u64) {}
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error; the text is RocksDB's message.
    #[error("index error: {0}")]
    Db(String),
    /// The index was written by another version of Pangea.
    #[error("index schema version {found}, this build reads version {expected}")]
    Schema { found: u32, expected: u32 },
    /// A file system call failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The disk (or the quota) is full. Nothing was half-written.
    #[error("no space left on device")]
    NoSpace,
    /// Another process (or another handle in this process) holds the lock.
    #[error(
        "{} is locked: another Pangea process is using this data directory",
        path.display()
    )]
    Locked { path: PathBuf },
    /// Stored bytes that cannot be what this store wrote.
    #[error("corrupt store: {0}")]
    Corrupt(&'static str),
}

impl StoreError {
    /// True when the failure is ENOSPC (or EDQUOT) anywhere: an I/O error,
    /// a RocksDB message, or [`StoreError::NoSpace`].
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace => true,
            StoreError::Io(e) => io_is_no_space(e),
            StoreError::Db(msg) => msg.contains(NO_SPACE_MESSAGE),
            StoreError::Schema { .. } | StoreError::Locked { .. } | StoreError::Corrupt(_) => false,
        }
    }
}

/// True when `e` is ENOSPC or EDQUOT.
fn io_is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT)) || e.kind() == io::ErrorKind::StorageFull
}

/// An I/O error as a [`StoreError`], with ENOSPC as [`StoreError::NoSpace`].
fn from_io(e: io::Error) -> StoreError {
    if io_is_no_space(&e) {
        StoreError::NoSpace
    } else {
        StoreError::Io(e)
    }
}

/// The smallest key greater than every key starting with `prefix`, or None
/// when there is none (`prefix` is empty or all 0xff).
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// Where a scan of `prefix` from `start` begins: the larger of the two.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
fn scan_from<'a>(prefix: &'a [u8], start: &'a [u8]) -> &'a [u8] {
    if start > prefix { start } else { prefix }
}

/// Reads until `buf` is full or the reader ends; how many bytes it read.
pub fn read_full(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cf_all_matches_index_and_names_are_unique() {
        for (i, cf) in Cf::ALL.iter().enumerate() {
            assert_eq!(cf.index(), i);
        }
        let mut names: Vec<_> = Cf::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Cf::ALL.len());
        assert!(!names.contains(&"default"));
    }

    #[test]
    fn prefix_end_edges() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0, 0xff, 0xff]), Some(vec![1]));
    }

    #[test]
    fn is_no_space_recognises_every_form() {
        assert!(StoreError::NoSpace.is_no_space());
        assert!(StoreError::Io(io::Error::from_raw_os_error(ENOSPC)).is_no_space());
        assert!(StoreError::Io(io::Error::from_raw_os_error(EDQUOT)).is_no_space());
        assert!(
            StoreError::Db("IO error: No space left on device: While appending".into())
                .is_no_space()
        );
        assert!(!StoreError::Io(io::Error::from_raw_os_error(5)).is_no_space());
        assert!(!StoreError::Db("Corruption: bad block".into()).is_no_space());
        assert!(matches!(
            from_io(io::Error::from_raw_os_error(ENOSPC)),
            StoreError::NoSpace
        ));
    }

    #[test]
    fn batch_keeps_ops_in_order() {
        let mut b = Batch::new();
        assert!(b.is_empty());
        b.put(Cf::Inode, b"k", b"v");
        b.delete(Cf::Inode, b"k");
        assert_eq!(b.len(), 2);
        assert!(matches!(b.ops()[1], Op::Delete { cf: Cf::Inode, .. }));
    }
}
