//! Placement: the durable queue of shards to place on peers and copies to
//! release, the peer table, and the transport seam the network implements.
//!
//! Sits above the chunk layer (it reads chunk records and local shards and
//! records holders under the chunk table's lock) and below the filesystem
//! (which queues entries in the batches that create and delete records).
//! The worker that drains the queue is `workers::Uploader`. May not import
//! `fs`, `node` or `workers`.

pub mod book;
pub mod heal;
pub mod peers;
pub mod queue;
pub mod transport;
pub mod tuner;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::ces::{ChunkId, ShardFault, ShardId};
use crate::chunks::{ChunkError, ChunkResult, Chunks, Holder};
use crate::store::{Batch, Cf, Kv, key_hex};

pub use book::{Life, PeerBook, PeerRecord, Probe};

/// `Cf::Meta`: releases of peer copies queued at or after this Unix time
/// (ms) wait (the newest complete index backup's checkpoint time, written
/// by `node::backup`).
pub const RELEASE_FLOOR: &[u8] = b"backup/floor";
pub use heal::{HealPolicy, HealQueue, QueuedHeal, RepairError, Repaired};
pub use peers::{PeerId, PeerTable};
pub use queue::{QueuedUpload, UploadEntry, UploadTask};
pub use transport::{PlaceError, Placed, ShardToPlace, ShardTransport, Spread};

/// Longest wait between two tries of one entry.
const MAX_BACKOFF_SECS: u64 = 3600;

/// Unix time in milliseconds.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Chunks by how far they are placed ([`UploadQueue::health`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// Every shard on a live peer.
    pub placed: u64,
    /// Some shards on live peers, not all.
    pub degraded: u64,
    /// No shard on a peer (only this node's copy).
    pub local_only: u64,
}

/// The upload queue over the index (see [`queue`]).
pub struct UploadQueue {
    /// The index holding the queue.
    kv: Arc<dyn Kv>,
    /// Chunk records (holders) and the local shards to send.
    chunks: Arc<Chunks>,
    /// Peer numbers of the holders.
    peers: PeerTable,
}

impl UploadQueue {
    pub fn new(kv: Arc<dyn Kv>, chunks: Arc<Chunks>) -> UploadQueue {
        UploadQueue {
            peers: PeerTable::new(kv.clone()),
            kv,
            chunks,
        }
    }

    /// Entries that are due now, at most `limit`. The whole queue is
    /// scanned if need be, so entries backing off never hide due ones
    /// behind them. A malformed entry is logged and skipped (it cannot
    /// block the queue).
    pub fn due(&self, limit: usize) -> ChunkResult<Vec<QueuedUpload>> {
        let now = unix_now_ms();
        // Releases queued after the newest complete index backup wait for
        // the next one (`node::backup`); without backups, none waits.
        let floor = match self.kv.get(Cf::Meta, RELEASE_FLOOR)? {
            Some(v) if v.len() == 8 => u64::from_le_bytes(v.try_into().unwrap_or([0xff; 8])),
            _ => u64::MAX,
        };
        let mut due = Vec::new();
        self.kv.scan(Cf::Upload, &[], &[], &mut |k, v| {
            let release = k.first() == Some(&queue::DROP);
            match UploadEntry::decode(v) {
                Ok(entry) if release && entry.not_before >= floor => {}
                Ok(entry) if entry.not_before <= now => due.push((k.to_vec(), entry)),
                Ok(_) => {}
                Err(_) => warn!(key = %key_hex(k), "malformed upload queue entry skipped"),
            }
            due.len() < limit
        })?;
        let mut out = Vec::with_capacity(due.len());
        for (key, entry) in due {
            match self.task_of(&key) {
                Ok(task) => out.push(QueuedUpload { key, task, entry }),
                Err(e) => warn!(key = %key_hex(&key), error = %e, "upload queue entry skipped"),
            }
        }
        Ok(out)
    }

    fn task_of(&self, key: &[u8]) -> ChunkResult<UploadTask> {
        Ok(match queue::parse_key(key)? {
            queue::Key::Place(chunk) => UploadTask::Place { chunk },
            queue::Key::Drop(shard, number) => UploadTask::Drop {
                shard,
                peer: self
                    .peers
                    .identity(number)?
                    .ok_or(ChunkError::Corrupt("upload queue names an unknown peer"))?,
            },
        })
    }

    /// Queues the placement of every chunk that has no remote copy yet
    /// (those written while the node was alone), once: the first time the
    /// node goes online.
    pub fn seed_unplaced(&self) -> ChunkResult<u64> {
        const SEEDED: &[u8] = b"placement_seeded";
        if self.kv.get(Cf::Meta, SEEDED)?.is_some() {
            return Ok(0);
        }
        let table = self.chunks.table();
        let _records = table.lock();
        let mut b = Batch::new();
        let mut n = 0u64;
        let mut bad = None;
        self.kv.scan(Cf::Chunk, &[], &[], &mut |k, v| {
            match (
                <[u8; 32]>::try_from(k),
                crate::chunks::ChunkRecord::decode(v),
            ) {
                (Ok(id), Ok(rec)) if rec.holders.is_empty() => {
                    queue::place(&mut b, &ChunkId(id));
                    n += 1;
                }
                (Ok(_), Ok(_)) => {}
                _ => bad = Some(key_hex(k)),
            }
            true
        })?;
        if let Some(k) = bad {
            warn!(key = %k, "a malformed chunk record was not queued for placement");
        }
        b.put(Cf::Meta, SEEDED, &[1]);
        self.kv.write(b, true)?;
        Ok(n)
    }

    /// Forgets every copy `peer` holds (it was removed from the network, or
    /// is lost): its holder entries go, and each chunk that had one is
    /// queued to be placed again. Returns how many chunks were queued.
    pub fn forget_peer(&self, peer: &PeerId) -> ChunkResult<u64> {
        let mut by_id = vec![b'i'];
        by_id.extend_from_slice(peer.as_bytes());
        let Some(v) = self.kv.get(Cf::Peer, &by_id)? else {
            return Ok(0);
        };
        let number = u32::from_le_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| ChunkError::Corrupt("peer table"))?,
        );
        let table = self.chunks.table();
        // Scanned without the records lock (FUSE takes it); each hit is
        // read again under it.
        let mut hit = Vec::new();
        self.kv.scan(Cf::Chunk, &[], &[], &mut |k, v| {
            if let (Ok(id), Ok(rec)) = (
                <[u8; 32]>::try_from(k),
                crate::chunks::ChunkRecord::decode(v),
            ) && rec.holders.iter().any(|h| h.peer == number)
            {
                hit.push(ChunkId(id));
            }
            true
        })?;
        let _records = table.lock();
        let mut b = Batch::new();
        for id in &hit {
            if let Some(mut rec) = table.record(id)?
                && rec.holders.iter().any(|h| h.peer == number)
            {
                rec.holders.retain(|h| h.peer != number);
                table.put(&mut b, id, &rec);
                queue::place(&mut b, id);
            }
        }
        self.kv.write(b, true)?;
        Ok(hit.len() as u64)
    }

    /// Is every shard of `rec` (of `total`, k of them data) held by a live
    /// peer, spread so that losing any one holder leaves k?
    fn fully_placed(
        &self,
        rec: &crate::chunks::ChunkRecord,
        total: usize,
        k: usize,
        live: &dyn Fn(&PeerId) -> bool,
    ) -> ChunkResult<bool> {
        let mut shards = std::collections::HashSet::new();
        let mut per_peer: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        for h in &rec.holders {
            if self.peers.identity(h.peer)?.is_some_and(|p| live(&p)) && shards.insert(h.shard) {
                *per_peer.entry(h.peer).or_default() += 1;
            }
        }
        let most = per_peer.values().copied().max().unwrap_or(0);
        Ok(shards.len() >= total && total - most >= k)
    }

    /// Chunks whose local copy (a chunk file) may go: every shard is on a
    /// live peer and none is queued. At most `limit`, with their sizes.
    pub fn evictable(
        &self,
        live: &dyn Fn(&PeerId) -> bool,
        limit: usize,
    ) -> ChunkResult<Vec<(ChunkId, u64)>> {
        // Filtered during the scan, so that chunks that cannot go (degraded,
        // queued) never hide those that can behind the limit.
        let mut out = Vec::new();
        let mut failed: Option<ChunkError> = None;
        self.kv.scan(Cf::Chunk, &[], &[], &mut |k, v| {
            let (Ok(id), Ok(rec)) = (
                <[u8; 32]>::try_from(k),
                crate::chunks::ChunkRecord::decode(v),
            ) else {
                return true;
            };
            if rec.location != crate::chunks::Location::File || rec.holders.is_empty() {
                return true;
            }
            let Ok(m) = crate::ces::Manifest::decode(&rec.manifest) else {
                return true;
            };
            let id = ChunkId(id);
            let total = m.params.total();
            let ok = (|| -> ChunkResult<bool> {
                Ok(self.kv.get(Cf::Upload, &queue::place_key(&id))?.is_none()
                    && self.fully_placed(&rec, total, usize::from(m.params.k()), live)?)
            })();
            match ok {
                Ok(true) => out.push((id, u64::from(m.shard_len) * total as u64)),
                Ok(false) => {}
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
            out.len() < limit
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Drops chunk `id`'s local copy if every shard is still on a live
    /// peer: the record says `Remote` (durably) before the file goes, so
    /// no crash leaves a record naming a file that is not there. True if
    /// evicted.
    pub fn evict(&self, id: &ChunkId, live: &dyn Fn(&PeerId) -> bool) -> ChunkResult<bool> {
        let table = self.chunks.table();
        let file = {
            let _records = table.lock();
            let Some(entry) = table.get(id)? else {
                return Ok(false);
            };
            let total = entry.manifest.params.total();
            let k = usize::from(entry.manifest.params.k());
            if entry.rec.location != crate::chunks::Location::File
                || self.kv.get(Cf::Upload, &queue::place_key(id))?.is_some()
                || !self.fully_placed(&entry.rec, total, k, live)?
            {
                return Ok(false);
            }
            let mut rec = entry.rec.clone();
            rec.location = crate::chunks::Location::Remote;
            let mut b = Batch::new();
            table.put(&mut b, id, &rec);
            self.kv.write(b, true)?;
            entry.file()
        };
        self.chunks.delete_file(&file)?;
        Ok(true)
    }

    /// The m (parity shards) of chunk `id` (0 when it is gone).
    pub fn parity(&self, id: &ChunkId) -> ChunkResult<usize> {
        Ok(self
            .chunks
            .table()
            .get(id)?
            .map_or(0, |e| usize::from(e.manifest.params.m())))
    }

    /// Is chunk `id` waiting to be placed?
    pub fn is_queued(&self, id: &ChunkId) -> ChunkResult<bool> {
        Ok(self.kv.get(Cf::Upload, &queue::place_key(id))?.is_some())
    }

    /// Chunks waiting to be placed, and the bytes of their shards.
    pub fn backlog(&self) -> ChunkResult<(u64, u64)> {
        let mut chunks = 0u64;
        let mut ids = Vec::new();
        self.kv.scan(Cf::Upload, b"P", &[], &mut |k, _| {
            chunks += 1;
            if let Ok(id) = <[u8; 32]>::try_from(&k[1..]) {
                ids.push(ChunkId(id));
            }
            true
        })?;
        let mut bytes = 0u64;
        for id in ids {
            if let Ok(Some(e)) = self.chunks.table().get(&id) {
                let m = &e.manifest;
                bytes += u64::from(m.shard_len) * m.params.total() as u64;
            }
        }
        Ok((chunks, bytes))
    }

    /// How the chunks stand on peers: every shard placed on a live peer,
    /// some, or none (`live` says whether a holder still counts).
    pub fn health(&self, live: &dyn Fn(&PeerId) -> bool) -> ChunkResult<Health> {
        let mut h = Health::default();
        let mut names: std::collections::HashMap<u32, bool> = std::collections::HashMap::new();
        let mut records = Vec::new();
        self.kv.scan(Cf::Chunk, &[], &[], &mut |_, v| {
            if let Ok(rec) = crate::chunks::ChunkRecord::decode(v) {
                records.push(rec);
            }
            true
        })?;
        for rec in records {
            let total = crate::ces::Manifest::decode(&rec.manifest)
                .map(|m| m.params.total())
                .unwrap_or(0);
            let mut shards = std::collections::HashSet::new();
            for holder in &rec.holders {
                let ok = match names.get(&holder.peer) {
                    Some(ok) => *ok,
                    None => {
                        let ok = self.peers.identity(holder.peer)?.is_some_and(|p| live(&p));
                        names.insert(holder.peer, ok);
                        ok
                    }
                };
                if ok {
                    shards.insert(holder.shard);
                }
            }
            if shards.is_empty() {
                h.local_only += 1;
            } else if shards.len() >= total {
                h.placed += 1;
            } else {
                h.degraded += 1;
            }
        }
        Ok(h)
    }

    /// Entries in the queue (due or not).
    pub fn len(&self) -> ChunkResult<u64> {
        let mut n = 0u64;
        self.kv.scan(Cf::Upload, &[], &[], &mut |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Is the queue empty?
    pub fn is_empty(&self) -> ChunkResult<bool> {
        Ok(self.len()? == 0)
    }

    /// The local shards of chunk `chunk`, verified against their addresses,
    /// or None when the chunk is gone. A bad local shard is an error: the
    /// read path repairs the chunk, and the entry is retried later.
    pub fn shards_to_place(&self, chunk: &ChunkId) -> ChunkResult<Option<Vec<ShardToPlace>>> {
        let Some(entry) = self.chunks.table().get(chunk)? else {
            return Ok(None);
        };
        let m = &entry.manifest;
        let s = m.shard_len as usize;
        let total = m.shard_ids.len();
        // The chunk layer's source: the local copy, or (evicted, or lost
        // locally) any k shards from peers, the rest rebuilt.
        let fetched = self.chunks.source().get(
            &entry.at(),
            s,
            0..total,
            Vec::new(),
            Instant::now() + std::time::Duration::from_secs(60),
        )?;
        let mut out = Vec::with_capacity(total);
        for (i, addr) in m.shard_ids.iter().enumerate() {
            let index = u16::try_from(i).map_err(|_| ChunkError::Corrupt("manifest"))?;
            let bytes = fetched.as_ref().and_then(|f| f.shard(i, s));
            let fault = match bytes {
                None => Some(ShardFault::Length {
                    expected: m.shard_len,
                    got: fetched
                        .as_ref()
                        .map_or(0, |f| f.bytes.len().saturating_sub(f.start + i * s).min(s)),
                }),
                Some(b) if ShardId::of(b) != *addr => Some(ShardFault::Hash),
                Some(_) => None,
            };
            let (Some(bytes), None) = (bytes, fault) else {
                return Err(ChunkError::Unreadable {
                    chunk: *chunk,
                    source: crate::ces::CesError::CorruptShard {
                        index,
                        reason: fault.unwrap_or(ShardFault::Hash),
                    },
                });
            };
            out.push(ShardToPlace {
                index,
                address: *addr,
                bytes: bytes.to_vec(),
            });
        }
        Ok(Some(out))
    }

    /// Records that peers now hold the copies in `placed`, and takes the
    /// chunk off the queue, in one batch. A chunk deleted meanwhile (or a
    /// copy that is not one of the chunk's shards) gets those copies queued
    /// for release instead.
    pub fn record_placement(&self, chunk: &ChunkId, placed: &[Placed]) -> ChunkResult<()> {
        self.record_holders(chunk, placed, true)
    }

    /// Records the copies placed so far by a try that failed part-way; the
    /// chunk stays queued for the rest.
    pub fn record_partial_placement(&self, chunk: &ChunkId, placed: &[Placed]) -> ChunkResult<()> {
        if placed.is_empty() {
            return Ok(());
        }
        self.record_holders(chunk, placed, false)
    }

    fn record_holders(&self, chunk: &ChunkId, placed: &[Placed], done: bool) -> ChunkResult<()> {
        let table = self.chunks.table();
        let _records = table.lock();
        let mut b = Batch::new();
        let mut new_peers = peers::NewPeers::default();
        let mut numbered = Vec::with_capacity(placed.len());
        for p in placed {
            numbered.push(Holder {
                shard: p.index,
                peer: self.peers.number(&mut b, &mut new_peers, &p.peer)?,
            });
        }
        let release = |b: &mut Batch, p: &Placed, h: &Holder| queue::release(b, &p.address, h.peer);
        match table.get(chunk)? {
            Some(mut entry) => {
                // A copy that is not one of this encoding's shards (which a
                // repair keeps) is released, and the chunk stays queued.
                let mut stale = false;
                for (p, h) in placed.iter().zip(numbered) {
                    let current =
                        entry.manifest.shard_ids.get(usize::from(p.index)) == Some(&p.address);
                    if !current {
                        stale = true;
                        release(&mut b, p, &h);
                    } else if !entry.rec.holders.contains(&h) {
                        entry.rec.holders.push(h);
                    }
                }
                if done && !stale {
                    queue::unqueue_place(&mut b, chunk);
                }
                table.put(&mut b, chunk, &entry.rec);
            }
            None => {
                // Deleted while its shards travelled: release the copies.
                if done {
                    queue::unqueue_place(&mut b, chunk);
                }
                for (p, h) in placed.iter().zip(&numbered) {
                    release(&mut b, p, h);
                }
            }
        }
        self.kv.write(b, false)?;
        Ok(())
    }

    /// Takes a release entry off the queue once the peer confirmed it.
    pub fn record_dropped(&self, queued: &QueuedUpload) -> ChunkResult<()> {
        let mut b = Batch::new();
        b.delete(Cf::Upload, &queued.key);
        self.kv.write(b, false)?;
        Ok(())
    }

    /// Puts a failed entry back with exponential back-off (1 s, 2 s, 4 s...
    /// up to an hour).
    pub fn failed(&self, queued: &QueuedUpload) -> ChunkResult<()> {
        self.failed_within(queued, MAX_BACKOFF_SECS)
    }

    /// `failed`, waiting at most `max_secs` (no peer to place on: one may
    /// join any moment, so the wait stays short).
    pub fn failed_within(&self, queued: &QueuedUpload, max_secs: u64) -> ChunkResult<()> {
        let _records = self.chunks.table().lock();
        // Gone meanwhile (placed by another try, or its chunk deleted).
        if self.kv.get(Cf::Upload, &queued.key)?.is_none() {
            return Ok(());
        }
        let attempts = queued.entry.attempts.saturating_add(1);
        let wait = 1u64
            .checked_shl(attempts.saturating_sub(1).min(31))
            .unwrap_or(MAX_BACKOFF_SECS)
            .min(MAX_BACKOFF_SECS)
            .min(max_secs.max(1));
        let entry = UploadEntry {
            attempts,
            not_before: unix_now_ms().saturating_add(wait.saturating_mul(1000)),
        };
        let mut b = Batch::new();
        b.put(Cf::Upload, &queued.key, &entry.encode());
        self.kv.write(b, false)?;
        Ok(())
    }

    /// The remote holders of chunk `chunk` (shard index, peer).
    pub fn holders(&self, chunk: &ChunkId) -> ChunkResult<Vec<(u16, PeerId)>> {
        let Some(rec) = self.chunks.table().record(chunk)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(rec.holders.len());
        for h in rec.holders {
            let id = self
                .peers
                .identity(h.peer)?
                .ok_or(ChunkError::Corrupt("chunk record names an unknown peer"))?;
            out.push((h.shard, id));
        }
        Ok(out)
    }
}
