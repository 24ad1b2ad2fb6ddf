//! The shard seam: where the chunk layer gets and puts an encoding's
//! shards. [`LocalShards`] is the local disk (chunk files, and inline
//! encodings in the index); the network adds a source of peers' copies
//! behind the same trait, so that loading, verifying and repairing a chunk
//! do not change when its shards come from elsewhere.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use super::error::ChunkResult;
use super::record::{FileId, Location};
use crate::ces::ChunkId;
use crate::store::{Batch, Cf, ChunkFiles, ChunkStore, Kv};

/// Where one encoding's shards are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardsAt {
    /// The chunk (inline shards are keyed by it).
    pub chunk: ChunkId,
    /// This node's copy: inline or in a file.
    pub location: Location,
    /// The chunk file's name (meaningful for `Location::File`).
    pub file: FileId,
}

/// Shards as fetched: shard `want.start` begins at `bytes[start]` and the
/// others follow it, each `shard_len` long. The bytes may end early: the
/// shards past the end are missing (or the last one is short).
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub start: usize,
    /// The shards came from peers, not from this node's copy (which is
    /// then missing or short): damage found in them is no reason to
    /// rewrite the local copy.
    pub remote: bool,
}

impl Fetched {
    /// Shard `i` of the fetched range (0 = `want.start`), if it is whole.
    pub fn shard(&self, i: usize, shard_len: usize) -> Option<&[u8]> {
        let from = self.start.checked_add(i.checked_mul(shard_len)?)?;
        self.bytes.get(from..from.checked_add(shard_len)?)
    }
}

/// Where shards come from and go to.
pub trait ShardSource: Send + Sync {
    /// Shards `want` (indices, data shards first) of the encoding at `at`,
    /// each `shard_len` bytes, read into `buf` (a recycled buffer, replaced);
    /// None when this source has none of them. Gives up at `deadline` (a
    /// local disk answers well within any deadline).
    fn get(
        &self,
        at: &ShardsAt,
        shard_len: usize,
        want: Range<usize>,
        buf: Vec<u8>,
        deadline: Instant,
    ) -> ChunkResult<Option<Fetched>>;

    /// Shards `want` from copies other than this node's own (peers),
    /// for when the local copy is damaged beyond repair; None when there
    /// are none (the default: a source without peers).
    fn get_remote(
        &self,
        _at: &ShardsAt,
        _want: Range<usize>,
        _deadline: Instant,
    ) -> ChunkResult<Option<Fetched>> {
        Ok(None)
    }

    /// Stores all the shards of the encoding at `at` (back to back),
    /// replacing any earlier copy; `durable`: on stable storage before
    /// this returns.
    fn put(&self, at: &ShardsAt, shards: &[u8], durable: bool) -> ChunkResult<()>;

    /// Does this source hold the shards at `at`?
    fn has(&self, at: &ShardsAt) -> ChunkResult<bool>;

    /// Removes the shards at `at`; false if there were none.
    fn delete(&self, at: &ShardsAt) -> ChunkResult<bool>;
}

/// The local disk: chunk files, and inline encodings in the index.
///
/// Inline shards are normally written and deleted in the batch that writes
/// or deletes their record (atomically with it); `put` and `delete` here
/// serve a repair, which rewrites them alone.
#[derive(Clone)]
pub struct LocalShards {
    /// The index, for inline encodings.
    kv: Arc<dyn Kv>,
    /// The chunk files.
    files: Arc<dyn ChunkStore>,
}

impl LocalShards {
    pub fn new(kv: Arc<dyn Kv>, files: Arc<dyn ChunkStore>) -> LocalShards {
        LocalShards { kv, files }
    }

    /// The chunk-file store (durability, garbage collection, the disk's
    /// space).
    pub fn files(&self) -> &Arc<dyn ChunkStore> {
        &self.files
    }

    /// A hint that the first `len` bytes of the chunk file `file` are about
    /// to be read.
    pub fn will_need(&self, file: &FileId, len: u64) {
        self.files.will_need(file.as_bytes(), len);
    }

    /// The capacity a buffer needs for a `get` of `len` bytes to fill it
    /// without growing it.
    pub fn buffer_capacity(len: usize) -> usize {
        ChunkFiles::read_buffer_capacity(len)
    }
}

impl ShardSource for LocalShards {
    fn get(
        &self,
        at: &ShardsAt,
        shard_len: usize,
        want: Range<usize>,
        buf: Vec<u8>,
        _deadline: Instant,
    ) -> ChunkResult<Option<Fetched>> {
        let from = want.start.saturating_mul(shard_len);
        let len = want.len().saturating_mul(shard_len);
        let all = match at.location {
            Location::Inline => self.kv.get(Cf::Inline, at.chunk.as_bytes())?,
            Location::File if from == 0 => {
                // The common read: the data shards, from the file's start,
                // straight into the recycled buffer.
                return Ok(self
                    .files
                    .read_prefix_at(at.file.as_bytes(), len, buf)?
                    .map(|(bytes, start)| Fetched {
                        bytes,
                        start,
                        remote: false,
                    }));
            }
            Location::File => self.files.read_all(at.file.as_bytes())?,
            Location::Remote => None,
        };
        Ok(all.map(|bytes| {
            let end = bytes.len().min(from.saturating_add(len));
            let bytes = bytes.get(from..end).map(<[u8]>::to_vec).unwrap_or_default();
            Fetched {
                bytes,
                start: 0,
                remote: false,
            }
        }))
    }

    fn put(&self, at: &ShardsAt, shards: &[u8], durable: bool) -> ChunkResult<()> {
        match at.location {
            Location::File => self.files.write(at.file.as_bytes(), shards, durable)?,
            // No local copy is kept of an evicted chunk.
            Location::Remote => {}
            Location::Inline => {
                let mut b = Batch::new();
                b.put(Cf::Inline, at.chunk.as_bytes(), shards);
                self.kv.write(b, durable)?;
            }
        }
        Ok(())
    }

    fn has(&self, at: &ShardsAt) -> ChunkResult<bool> {
        Ok(match at.location {
            Location::Inline => self.kv.get(Cf::Inline, at.chunk.as_bytes())?.is_some(),
            // Not on a hot path: existence, through a whole read.
            Location::File => self.files.exists(at.file.as_bytes())?,
            Location::Remote => false,
        })
    }

    fn delete(&self, at: &ShardsAt) -> ChunkResult<bool> {
        match at.location {
            Location::File => Ok(self.files.delete(at.file.as_bytes())?),
            Location::Remote => Ok(false),
            Location::Inline => {
                let had = self.kv.get(Cf::Inline, at.chunk.as_bytes())?.is_some();
                let mut b = Batch::new();
                b.delete(Cf::Inline, at.chunk.as_bytes());
                self.kv.write(b, false)?;
                Ok(had)
            }
        }
    }
}
