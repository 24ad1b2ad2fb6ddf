//! The upload queue's entries (`Cf::Upload`) and the batch helpers that the
//! filesystem calls when it creates or deletes a chunk record.
//!
//! Two kinds of keys:
//! * `P ‖ chunk id`: the chunk's shards are to be placed on peers. Written
//!   in the batch that creates the chunk's record, when the node has peers;
//!   a node alone never writes one. Removed in the batch that records the
//!   holders, or that deletes the chunk.
//! * `D ‖ shard address ‖ peer number`: a peer's copy of a shard that is no
//!   longer wanted is to be released. Written in the batch that deletes the
//!   chunk record, or that records a placement which finished after it (or
//!   that carried shards which are not the chunk's). A repair keeps the
//!   encoding (its shards are rebuilt in place), so it queues nothing.
//!
//! Each value is an [`UploadEntry`] (attempts and the earliest next try).

use crate::ces::{ChunkId, ShardId};
use crate::chunks::{ChunkError, ChunkRecord, ChunkResult};
use crate::store::{Batch, Cf};

use super::peers::PeerId;

const ENTRY_VERSION: u8 = 1;
const PLACE: u8 = b'P';
pub(crate) const DROP: u8 = b'D';

/// An upload-queue value: how often the entry failed, and when it may be
/// tried again (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadEntry {
    pub attempts: u32,
    pub not_before: u64,
}

impl UploadEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13);
        v.push(ENTRY_VERSION);
        v.extend_from_slice(&self.attempts.to_le_bytes());
        v.extend_from_slice(&self.not_before.to_le_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> ChunkResult<Self> {
        const BAD: ChunkError = ChunkError::Corrupt("upload queue entry");
        if v.len() != 13 || v[0] != ENTRY_VERSION {
            return Err(BAD);
        }
        Ok(UploadEntry {
            attempts: u32::from_le_bytes(v[1..5].try_into().map_err(|_| BAD)?),
            not_before: u64::from_le_bytes(v[5..13].try_into().map_err(|_| BAD)?),
        })
    }
}

/// What an upload-queue entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadTask {
    /// Place the shards of this chunk on peers.
    Place { chunk: ChunkId },
    /// Ask `peer` to release its copy of shard `shard`.
    Drop { shard: ShardId, peer: PeerId },
}

/// One due entry of the queue.
#[derive(Debug, Clone)]
pub struct QueuedUpload {
    pub(super) key: Vec<u8>,
    pub task: UploadTask,
    pub entry: UploadEntry,
}

/// The key of a chunk's placement entry.
pub fn place_key(chunk: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(PLACE);
    k.extend_from_slice(chunk.as_bytes());
    k
}

pub(super) fn drop_key(shard: &ShardId, peer: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(37);
    k.push(DROP);
    k.extend_from_slice(shard.as_bytes());
    k.extend_from_slice(&peer.to_be_bytes());
    k
}

/// What a key asks for: the chunk to place, or the shard and peer number
/// of a copy to release.
pub(super) enum Key {
    Place(ChunkId),
    Drop(ShardId, u32),
}

pub(super) fn parse_key(key: &[u8]) -> ChunkResult<Key> {
    match (key.first(), key.len()) {
        (Some(&PLACE), 33) => {
            let mut chunk = [0; 32];
            chunk.copy_from_slice(&key[1..]);
            Ok(Key::Place(ChunkId(chunk)))
        }
        (Some(&DROP), 37) => {
            let mut shard = [0; 32];
            shard.copy_from_slice(&key[1..33]);
            let number = u32::from_be_bytes([key[33], key[34], key[35], key[36]]);
            Ok(Key::Drop(ShardId(shard), number))
        }
        _ => Err(ChunkError::Corrupt("upload queue key")),
    }
}

/// Queues, in `b`, the placement of new chunk `id`'s shards.
pub fn place(b: &mut Batch, id: &ChunkId) {
    b.put(Cf::Upload, &place_key(id), &UploadEntry::default().encode());
}

/// Takes chunk `id`'s placement off the queue, in `b` (it is deleted).
pub fn unqueue_place(b: &mut Batch, id: &ChunkId) {
    b.delete(Cf::Upload, &place_key(id));
}

/// Queues, in `b`, the release of peer number `peer`'s copy of `shard`.
/// Its `not_before` is the time it was queued: with an index backup, it
/// runs only once a backup taken after that time is complete (the
/// release floor, `node::backup`), so no retained backup names a copy
/// that was let go.
pub fn release(b: &mut Batch, shard: &ShardId, peer: u32) {
    let entry = UploadEntry {
        attempts: 0,
        not_before: super::unix_now_ms(),
    };
    b.put(Cf::Upload, &drop_key(shard, peer), &entry.encode());
}

/// Queues, in `b`, the release of every remote copy named by `rec` (its
/// chunk is being deleted in the same batch).
pub fn drops(b: &mut Batch, rec: &ChunkRecord) -> ChunkResult<()> {
    if rec.holders.is_empty() {
        return Ok(());
    }
    let manifest =
        crate::ces::Manifest::decode(&rec.manifest).map_err(|_| ChunkError::Corrupt("manifest"))?;
    for h in &rec.holders {
        if let Some(addr) = manifest.shard_ids.get(usize::from(h.shard)) {
            release(b, addr, h.peer);
        }
    }
    Ok(())
}
