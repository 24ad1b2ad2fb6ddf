//! The index side of placing shards on peers: the upload queue, the peer
//! table and the shard holders of chunk records.
//!
//! The queue (`Cf::Upload`) has two kinds of entries:
//! * `P ‖ chunk id`: the chunk's shards are to be placed on peers. Written
//!   in the batch that creates the chunk's record, when the node has peers
//!   (`FsConfig::upload`); a node alone never writes one. Removed in the
//!   batch that records the holders, or that deletes the chunk.
//! * `D ‖ shard address ‖ peer number`: a peer's copy of a shard that is no
//!   longer wanted is to be released. Written in the batch that deletes the
//!   chunk record, or that records a placement which finished after it
//!   (or that carried shards which are not the chunk's). A repair keeps the
//!   encoding (its shards are rebuilt in place), so it queues nothing.
//!
//! Each value is an [`UploadEntry`] (attempts and the earliest next try), so
//! a failing peer is retried with exponential back-off. The worker that
//! drains the queue is `workers::Uploader`; the transport is the network
//! layer's (`workers::ShardPlacer`).

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::warn;

use super::data::{ChunkRecord, Holder, LOC_INLINE, hex8};
use super::{Fs, FsError, FsResult};
use crate::ces::{CesError, Manifest, ShardFault};
use crate::store::{Batch, Cf};

const ENTRY_VERSION: u8 = 1;
const PLACE: u8 = b'P';
const DROP: u8 = b'D';
/// Peer table keys: number → identity, identity → number.
const PEER_BY_NUMBER: u8 = b'n';
const PEER_BY_ID: u8 = b'i';
const META_NEXT_PEER: &[u8] = b"next_peer";
/// Longest wait between two tries of one entry.
const MAX_BACKOFF_SECS: u64 = 3600;

/// An upload-queue value: how often the entry failed, and when it may be
/// tried again (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadEntry {
    pub attempts: u32,
    pub not_before: u64,
}

impl UploadEntry {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13);
        v.push(ENTRY_VERSION);
        v.extend_from_slice(&self.attempts.to_le_bytes());
        v.extend_from_slice(&self.not_before.to_le_bytes());
        v
    }

    fn decode(v: &[u8]) -> FsResult<Self> {
        const BAD: FsError = FsError::Corrupt("upload queue entry");
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
    Place { chunk: [u8; 32] },
    /// Ask `peer` (its identity) to release its copy of shard `shard`.
    Drop { shard: [u8; 32], peer: Vec<u8> },
}

/// One due entry of the queue.
#[derive(Debug, Clone)]
pub struct QueuedUpload {
    key: Vec<u8>,
    pub task: UploadTask,
    pub entry: UploadEntry,
}

/// A shard to place: its index in the chunk, its BLAKE3 address and bytes.
#[derive(Debug, Clone)]
pub struct ShardToPlace {
    pub index: u16,
    pub address: [u8; 32],
    pub bytes: Vec<u8>,
}

/// A shard copy a peer now holds: the shard's index, address and the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub index: u16,
    pub address: [u8; 32],
    pub peer: Vec<u8>,
}

/// Peer numbers handed out while building one batch (not yet readable).
#[derive(Default)]
struct NewPeers {
    numbers: std::collections::HashMap<Vec<u8>, u32>,
    next: Option<u32>,
}

/// Unix time in milliseconds.
fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex_prefix(key: &[u8]) -> String {
    key.iter().take(9).map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn place_key(chunk: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(PLACE);
    k.extend_from_slice(chunk);
    k
}

fn drop_key(shard: &[u8; 32], peer: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(37);
    k.push(DROP);
    k.extend_from_slice(shard);
    k.extend_from_slice(&peer.to_be_bytes());
    k
}

/// Queues, in `b`, the release of every remote copy named by `rec` (its
/// chunk is being deleted or re-encoded in the same batch).
pub(crate) fn queue_drops(b: &mut Batch, rec: &ChunkRecord) -> FsResult<()> {
    if rec.holders.is_empty() {
        return Ok(());
    }
    let manifest = Manifest::decode(&rec.manifest).map_err(|_| FsError::Corrupt("manifest"))?;
    for h in &rec.holders {
        if let Some(addr) = manifest.shard_ids.get(usize::from(h.shard)) {
            b.put(
                Cf::Upload,
                &drop_key(addr.as_bytes(), h.peer),
                &UploadEntry::new().encode(),
            );
        }
    }
    Ok(())
}

impl Fs {
    /// Entries of the upload queue that are due now, at most `limit`. The
    /// whole queue is scanned if need be, so entries backing off never hide
    /// due ones behind them. A malformed entry is logged and skipped (it
    /// cannot block the queue).
    pub fn due_uploads(&self, limit: usize) -> FsResult<Vec<QueuedUpload>> {
        let now = unix_now_ms();
        let mut due = Vec::new();
        self.kv.scan(Cf::Upload, &[], &[], &mut |k, v| {
            match UploadEntry::decode(v) {
                Ok(entry) if entry.not_before <= now => due.push((k.to_vec(), entry)),
                Ok(_) => {}
                Err(_) => warn!(key = %hex_prefix(k), "malformed upload queue entry skipped"),
            }
            due.len() < limit
        })?;
        let mut out = Vec::with_capacity(due.len());
        for (key, entry) in due {
            match self.task_of(&key) {
                Ok(task) => out.push(QueuedUpload { key, task, entry }),
                Err(e) => warn!(key = %hex_prefix(&key), error = %e, "upload queue entry skipped"),
            }
        }
        Ok(out)
    }

    /// What the queue key `key` asks for.
    fn task_of(&self, key: &[u8]) -> FsResult<UploadTask> {
        match (key.first(), key.len()) {
            (Some(&PLACE), 33) => {
                let mut chunk = [0; 32];
                chunk.copy_from_slice(&key[1..]);
                Ok(UploadTask::Place { chunk })
            }
            (Some(&DROP), 37) => {
                let mut shard = [0; 32];
                shard.copy_from_slice(&key[1..33]);
                let number = u32::from_be_bytes([key[33], key[34], key[35], key[36]]);
                let peer = self
                    .peer_identity(number)?
                    .ok_or(FsError::Corrupt("upload queue names an unknown peer"))?;
                Ok(UploadTask::Drop { shard, peer })
            }
            _ => Err(FsError::Corrupt("upload queue key")),
        }
    }

    /// Entries in the upload queue (due or not).
    pub fn upload_queue_len(&self) -> FsResult<u64> {
        let mut n = 0u64;
        self.kv.scan(Cf::Upload, &[], &[], &mut |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// The local shards of chunk `chunk`, verified against their addresses,
    /// or None when the chunk is gone. A bad local shard is an error: the
    /// read path repairs the chunk, and the entry is retried later.
    pub fn shards_to_place(&self, chunk: &[u8; 32]) -> FsResult<Option<Vec<ShardToPlace>>> {
        let Some(v) = self.kv.get(Cf::Chunk, chunk)? else {
            return Ok(None);
        };
        let rec = ChunkRecord::decode(&v)?;
        let manifest = Manifest::decode(&rec.manifest).map_err(|_| FsError::Corrupt("manifest"))?;
        let all = if rec.location == LOC_INLINE {
            self.kv.get(Cf::Inline, chunk)?
        } else {
            self.chunks.read_all(&rec.blob())?
        };
        let all = all.unwrap_or_default();
        let s = manifest.shard_len as usize;
        let mut out = Vec::with_capacity(manifest.shard_ids.len());
        for (i, addr) in manifest.shard_ids.iter().enumerate() {
            let index = u16::try_from(i).map_err(|_| FsError::Corrupt("manifest"))?;
            let bytes = all.get(i * s..(i + 1) * s);
            let fault = match bytes {
                None => Some(ShardFault::Length {
                    expected: manifest.shard_len,
                    got: all.len().saturating_sub(i * s).min(s),
                }),
                Some(b) if blake3::hash(b).as_bytes() != addr.as_bytes() => Some(ShardFault::Hash),
                Some(_) => None,
            };
            let (Some(bytes), None) = (bytes, fault) else {
                return Err(FsError::Chunk {
                    chunk: hex8(chunk),
                    source: CesError::CorruptShard {
                        index,
                        reason: fault.unwrap_or(ShardFault::Hash),
                    },
                });
            };
            out.push(ShardToPlace {
                index,
                address: *addr.as_bytes(),
                bytes: bytes.to_vec(),
            });
        }
        Ok(Some(out))
    }

    /// Records that peers now hold the copies in `placed`, and takes the
    /// chunk off the queue, in one batch. A chunk deleted meanwhile (or a
    /// copy that is not one of the chunk's shards) gets those copies queued
    /// for release instead.
    pub fn record_placement(&self, chunk: &[u8; 32], placed: &[Placed]) -> FsResult<()> {
        self.record_holders(chunk, placed, true)
    }

    /// Records the copies placed so far by a try that failed part-way; the
    /// chunk stays queued for the rest.
    pub fn record_partial_placement(&self, chunk: &[u8; 32], placed: &[Placed]) -> FsResult<()> {
        if placed.is_empty() {
            return Ok(());
        }
        self.record_holders(chunk, placed, false)
    }

    fn record_holders(&self, chunk: &[u8; 32], placed: &[Placed], done: bool) -> FsResult<()> {
        let _g = self.lock_ns();
        let mut b = Batch::new();
        let mut new_peers = NewPeers::default();
        let mut numbered = Vec::with_capacity(placed.len());
        for p in placed {
            numbered.push(Holder {
                shard: p.index,
                peer: self.peer_number(&mut b, &mut new_peers, &p.peer)?,
            });
        }
        match self.kv.get(Cf::Chunk, chunk)? {
            Some(v) => {
                let mut rec = ChunkRecord::decode(&v)?;
                let manifest =
                    Manifest::decode(&rec.manifest).map_err(|_| FsError::Corrupt("manifest"))?;
                // A copy that is not one of this encoding's shards (which a
                // repair keeps) is released, and the chunk stays queued.
                let mut stale = false;
                for (p, h) in placed.iter().zip(numbered) {
                    let current = manifest
                        .shard_ids
                        .get(usize::from(p.index))
                        .is_some_and(|a| a.as_bytes() == &p.address);
                    if !current {
                        stale = true;
                        b.put(
                            Cf::Upload,
                            &drop_key(&p.address, h.peer),
                            &UploadEntry::new().encode(),
                        );
                    } else if !rec.holders.contains(&h) {
                        rec.holders.push(h);
                    }
                }
                if done && !stale {
                    b.delete(Cf::Upload, &place_key(chunk));
                }
                b.put(Cf::Chunk, chunk, &rec.encode());
            }
            None => {
                // Deleted while its shards travelled: release the copies.
                if done {
                    b.delete(Cf::Upload, &place_key(chunk));
                }
                for (p, h) in placed.iter().zip(&numbered) {
                    b.put(
                        Cf::Upload,
                        &drop_key(&p.address, h.peer),
                        &UploadEntry::new().encode(),
                    );
                }
            }
        }
        self.kv.write(b, false)?;
        Ok(())
    }

    /// Takes a release entry off the queue once the peer confirmed it.
    pub fn record_dropped(&self, queued: &QueuedUpload) -> FsResult<()> {
        let mut b = Batch::new();
        b.delete(Cf::Upload, &queued.key);
        self.kv.write(b, false)?;
        Ok(())
    }

    /// Puts a failed entry back with exponential back-off (1 s, 2 s, 4 s...
    /// up to an hour).
    pub fn upload_failed(&self, queued: &QueuedUpload) -> FsResult<()> {
        let _g = self.lock_ns();
        // Gone meanwhile (placed by another try, or its chunk deleted).
        if self.kv.get(Cf::Upload, &queued.key)?.is_none() {
            return Ok(());
        }
        let attempts = queued.entry.attempts.saturating_add(1);
        let wait = 1u64
            .checked_shl(attempts.saturating_sub(1).min(31))
            .unwrap_or(MAX_BACKOFF_SECS)
            .min(MAX_BACKOFF_SECS);
        let entry = UploadEntry {
            attempts,
            not_before: unix_now_ms().saturating_add(wait.saturating_mul(1000)),
        };
        let mut b = Batch::new();
        b.put(Cf::Upload, &queued.key, &entry.encode());
        self.kv.write(b, false)?;
        Ok(())
    }

    /// The remote holders of chunk `chunk` (shard index, peer identity).
    pub fn chunk_holders(&self, chunk: &[u8; 32]) -> FsResult<Vec<(u16, Vec<u8>)>> {
        let Some(v) = self.kv.get(Cf::Chunk, chunk)? else {
            return Ok(Vec::new());
        };
        let rec = ChunkRecord::decode(&v)?;
        let mut out = Vec::with_capacity(rec.holders.len());
        for h in rec.holders {
            let id = self
                .peer_identity(h.peer)?
                .ok_or(FsError::Corrupt("chunk record names an unknown peer"))?;
            out.push((h.shard, id));
        }
        Ok(out)
    }

    /// Ids of every stored chunk (tests and tools; scans the chunk table).
    pub fn chunk_ids(&self) -> FsResult<Vec<[u8; 32]>> {
        self.ids_in(Cf::Chunk)
    }

    /// The identity of peer number `n`.
    fn peer_identity(&self, n: u32) -> FsResult<Option<Vec<u8>>> {
        let mut k = vec![PEER_BY_NUMBER];
        k.extend_from_slice(&n.to_be_bytes());
        Ok(self.kv.get(Cf::Peer, &k)?)
    }

    /// The number of peer `id`, allocated (in `b`) on first sight. Call
    /// under `ns`.
    fn peer_number(&self, b: &mut Batch, new: &mut NewPeers, id: &[u8]) -> FsResult<u32> {
        let mut by_id = vec![PEER_BY_ID];
        by_id.extend_from_slice(id);
        if let Some(v) = self.kv.get(Cf::Peer, &by_id)? {
            let n: [u8; 4] = v
                .as_slice()
                .try_into()
                .map_err(|_| FsError::Corrupt("peer table"))?;
            return Ok(u32::from_le_bytes(n));
        }
        if let Some(&n) = new.numbers.get(id) {
            return Ok(n);
        }
        let n = match new.next {
            Some(n) => n,
            None => match self.kv.get(Cf::Meta, META_NEXT_PEER)? {
                Some(v) => u32::from_le_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| FsError::Corrupt("next peer number"))?,
                ),
                None => 0,
            },
        };
        let next = n
            .checked_add(1)
            .ok_or(FsError::Corrupt("peer numbers exhausted"))?;
        new.next = Some(next);
        new.numbers.insert(id.to_vec(), n);
        let mut by_number = vec![PEER_BY_NUMBER];
        by_number.extend_from_slice(&n.to_be_bytes());
        b.put(Cf::Peer, &by_number, id);
        b.put(Cf::Peer, &by_id, &n.to_le_bytes());
        b.put(Cf::Meta, META_NEXT_PEER, &next.to_le_bytes());
        Ok(n)
    }
}
