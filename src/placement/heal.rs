//! Healing: which placed chunks lack live shards, the durable queue of
//! chunks to repair (`Cf::Heal`), and the repair itself.
//!
//! A chunk's shards are counted by index: an index is *live* when a peer
//! that is up holds it, *available* when its holder is up or down for less
//! than the grace period ([`Life`]). Spare shards are those beyond k.
//!
//! * A chunk is repaired when its available spare shards fall below
//!   `min_spare` (a lost holder), or at once, whatever the grace period,
//!   when only k+1 shards or fewer are live (one more failure from loss).
//! * A repair re-places the indices that are not live, until `target_spare`
//!   spare shards are live. Both are capped by the chunk's m: by default
//!   (2, 4), so a chunk of m = 2 is kept whole, one of m = 6 at 4 spare
//!   (the "minimum 3, target 5 copies" of replication, in shards).
//! * Repair fetches the shards (any k rebuild the others), never decrypts:
//!   the rebuilt shards carry the same addresses under the same manifest.
//!   The new copies are recorded as holders, and the old holders of those
//!   indices are dropped from the record, their copies queued for release
//!   (sent when they come back).
//!
//! Keys of `Cf::Heal`:
//! * `q ‖ due (u64 BE, Unix ms) ‖ spare (u8) ‖ chunk id`: the queue, in
//!   due order; among due entries the fewest spare shards go first.
//! * `c ‖ chunk id → q key`: one entry per chunk.
//!
//! Values of `q` keys are [`HealEntry`] (version byte, then postcard).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::book::{Life, PeerBook};
use super::peers::{NewPeers, PeerId, PeerTable};
use super::transport::{PlaceError, Placed, ShardTransport};
use super::{UploadQueue, queue, unix_now_ms};
use crate::ces::{ChunkId, Manifest};
use crate::chunks::{ChunkError, ChunkRecord, ChunkResult, Chunks, Holder};
use crate::store::{Batch, Cf, Kv};

const QUEUE: u8 = b'q';
const BY_CHUNK: u8 = b'c';
const ENTRY_VERSION: u8 = 1;
/// First wait after a failed repair; doubled per failure up to an hour.
pub const RETRY_FIRST_MS: u64 = 60_000;
pub const RETRY_MAX_MS: u64 = 3_600_000;

/// When to repair (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealPolicy {
    /// How long a peer may be down before its copies count as lost.
    pub grace_ms: u64,
    /// Repair when fewer spare shards than this are available.
    pub min_spare: u16,
    /// Repair up to this many live spare shards.
    pub target_spare: u16,
}

impl Default for HealPolicy {
    fn default() -> HealPolicy {
        HealPolicy {
            grace_ms: 3_600_000,
            min_spare: 2,
            target_spare: 4,
        }
    }
}

/// A queued chunk: how often its repair failed, why last, and since when
/// it has been degraded (Unix ms).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealEntry {
    pub attempts: u32,
    pub since_ms: u64,
    pub last_error: String,
}

impl HealEntry {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![ENTRY_VERSION];
        v.extend(postcard::to_allocvec(self).unwrap_or_default());
        v
    }

    fn decode(v: &[u8]) -> ChunkResult<HealEntry> {
        match v.split_first() {
            Some((&ENTRY_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|_| ChunkError::Corrupt("heal queue entry"))
            }
            _ => Err(ChunkError::Corrupt("heal queue entry")),
        }
    }
}

/// One queued chunk.
#[derive(Debug, Clone)]
pub struct QueuedHeal {
    pub chunk: ChunkId,
    pub due_ms: u64,
    pub spare: u8,
    pub entry: HealEntry,
}

/// How a chunk stands (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub k: usize,
    pub total: usize,
    /// Indices held by a peer that is up.
    pub live: usize,
    /// Indices held by a peer that is up or within its grace period.
    pub available: usize,
    /// Only k+1 or fewer live: repaired at once.
    pub urgent: bool,
    /// The indices a repair re-places, in order.
    pub rebuild: Vec<u16>,
}

impl Assessment {
    /// Spare shards available (beyond k), saturating at 0.
    pub fn spare(&self) -> u8 {
        u8::try_from(self.available.saturating_sub(self.k)).unwrap_or(u8::MAX)
    }
}

/// Assesses a placed chunk: None when it needs no repair (or is not
/// placed yet: the uploader's work). `life` says where a holder stands.
pub fn assess(
    rec: &ChunkRecord,
    m: &Manifest,
    policy: &HealPolicy,
    life: &mut dyn FnMut(u32) -> Life,
) -> Option<Assessment> {
    assess_holders(
        &rec.holders,
        usize::from(m.params.k()),
        m.params.total(),
        policy,
        life,
    )
}

/// [`assess`] over a chunk's holders, k and k+m.
pub fn assess_holders(
    holders: &[Holder],
    k: usize,
    total: usize,
    policy: &HealPolicy,
    life: &mut dyn FnMut(u32) -> Life,
) -> Option<Assessment> {
    if holders.is_empty() || k == 0 || total < k {
        return None;
    }
    let parity = total - k;
    let mut live = vec![false; total];
    let mut avail = vec![false; total];
    for h in holders {
        let i = usize::from(h.shard);
        if i >= total {
            continue;
        }
        match life(h.peer) {
            Life::Up => {
                live[i] = true;
                avail[i] = true;
            }
            Life::Down => avail[i] = true,
            Life::Lost => {}
        }
    }
    let n_live = live.iter().filter(|x| **x).count();
    let n_avail = avail.iter().filter(|x| **x).count();
    let min_spare = usize::from(policy.min_spare).min(parity);
    let target = usize::from(policy.target_spare).min(parity).max(min_spare);
    let urgent = n_live <= k + 1 && n_live < total;
    if !urgent && n_avail >= k + min_spare {
        return None;
    }
    let want = (k + target).saturating_sub(n_live);
    let rebuild: Vec<u16> = (0..total)
        .filter(|i| !live[*i])
        .take(want)
        .filter_map(|i| u16::try_from(i).ok())
        .collect();
    if rebuild.is_empty() {
        return None;
    }
    Some(Assessment {
        k,
        total,
        live: n_live,
        available: n_avail,
        urgent,
        rebuild,
    })
}

/// What a repair did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Shards placed on new holders.
    pub shards: u64,
    /// Bytes fetched and sent.
    pub bytes: u64,
}

/// The heal queue and the repair (see the module documentation).
pub struct HealQueue {
    kv: Arc<dyn Kv>,
    chunks: Arc<Chunks>,
    peers: PeerTable,
    uploads: UploadQueue,
}

fn q_key(due_ms: u64, spare: u8, chunk: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + 1 + 32);
    k.push(QUEUE);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.push(spare);
    k.extend_from_slice(chunk.as_bytes());
    k
}

fn c_key(chunk: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(BY_CHUNK);
    k.extend_from_slice(chunk.as_bytes());
    k
}

fn parse_q(k: &[u8]) -> Option<(u64, u8, ChunkId)> {
    if k.len() != 42 || k[0] != QUEUE {
        return None;
    }
    let due = u64::from_be_bytes(k[1..9].try_into().ok()?);
    let id = <[u8; 32]>::try_from(&k[10..42]).ok()?;
    Some((due, k[9], ChunkId(id)))
}

impl HealQueue {
    pub fn new(kv: Arc<dyn Kv>, chunks: Arc<Chunks>) -> HealQueue {
        HealQueue {
            peers: PeerTable::new(kv.clone()),
            uploads: UploadQueue::new(kv.clone(), chunks.clone()),
            kv,
            chunks,
        }
    }

    /// A closure giving the life of a holder (by peer number), caching the
    /// peer table's lookups. Unknown numbers count as lost.
    pub fn life_of<'a>(
        &'a self,
        book: &'a PeerBook,
        policy: &'a HealPolicy,
        now_ms: u64,
    ) -> impl FnMut(u32) -> Life + 'a {
        let mut cache: HashMap<u32, Life> = HashMap::new();
        move |n| {
            *cache.entry(n).or_insert_with(|| {
                match self.peers.identity(n) {
                    Ok(Some(p)) => book.life(&p, now_ms, policy.grace_ms),
                    // An unreadable peer table: do not heal on a guess.
                    Err(_) => Life::Up,
                    Ok(None) => Life::Lost,
                }
            })
        }
    }

    /// Is `chunk` queued?
    pub fn is_queued(&self, chunk: &ChunkId) -> ChunkResult<bool> {
        Ok(self.kv.get(Cf::Heal, &c_key(chunk))?.is_some())
    }

    /// Queues `chunk` (due now, at risk `spare`) unless it is queued.
    pub fn enqueue(&self, chunk: &ChunkId, spare: u8) -> ChunkResult<bool> {
        if self.is_queued(chunk)? {
            return Ok(false);
        }
        let now = unix_now_ms();
        let entry = HealEntry {
            since_ms: now,
            ..HealEntry::default()
        };
        let key = q_key(now, spare, chunk);
        let mut b = Batch::new();
        b.put(Cf::Heal, &key, &entry.encode());
        b.put(Cf::Heal, &c_key(chunk), &key);
        self.kv.write(b, false)?;
        Ok(true)
    }

    /// Entries due at `now_ms`, at most `limit`, fewest spare shards first.
    pub fn due(&self, now_ms: u64, limit: usize) -> ChunkResult<Vec<QueuedHeal>> {
        let mut out = Vec::new();
        self.kv.scan(Cf::Heal, &[QUEUE], &[], &mut |k, v| {
            let Some((due, spare, chunk)) = parse_q(k) else {
                warn!("malformed heal queue key skipped");
                return true;
            };
            if due > now_ms {
                return false;
            }
            match HealEntry::decode(v) {
                Ok(entry) => out.push(QueuedHeal {
                    chunk,
                    due_ms: due,
                    spare,
                    entry,
                }),
                Err(_) => warn!(chunk = %chunk, "malformed heal queue entry skipped"),
            }
            out.len() < limit
        })?;
        out.sort_by_key(|q| (q.spare, q.due_ms));
        Ok(out)
    }

    /// Every queued entry (due or not), at most `limit`.
    pub fn list(&self, limit: usize) -> ChunkResult<Vec<QueuedHeal>> {
        let mut out = Vec::new();
        self.kv.scan(Cf::Heal, &[QUEUE], &[], &mut |k, v| {
            if let (Some((due, spare, chunk)), Ok(entry)) = (parse_q(k), HealEntry::decode(v)) {
                out.push(QueuedHeal {
                    chunk,
                    due_ms: due,
                    spare,
                    entry,
                });
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Entries in the queue.
    pub fn len(&self) -> ChunkResult<u64> {
        let mut n = 0;
        self.kv.scan(Cf::Heal, &[BY_CHUNK], &[], &mut |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Is the queue empty?
    pub fn is_empty(&self) -> ChunkResult<bool> {
        Ok(self.len()? == 0)
    }

    /// Takes `chunk` off the queue.
    pub fn done(&self, chunk: &ChunkId) -> ChunkResult<()> {
        let mut b = Batch::new();
        self.unqueue(&mut b, chunk)?;
        self.kv.write(b, false)?;
        Ok(())
    }

    fn unqueue(&self, b: &mut Batch, chunk: &ChunkId) -> ChunkResult<()> {
        if let Some(key) = self.kv.get(Cf::Heal, &c_key(chunk))? {
            b.delete(Cf::Heal, &key);
        }
        b.delete(Cf::Heal, &c_key(chunk));
        Ok(())
    }

    /// Puts a failed repair back: due after 60 s, doubling per failure up
    /// to an hour, with `why` kept for `pangea heal`.
    pub fn failed(&self, q: &QueuedHeal, why: &str) -> ChunkResult<()> {
        let attempts = q.entry.attempts.saturating_add(1);
        let wait = RETRY_FIRST_MS
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
            .min(RETRY_MAX_MS);
        let entry = HealEntry {
            attempts,
            since_ms: q.entry.since_ms,
            last_error: why.chars().take(200).collect(),
        };
        self.requeue(
            &q.chunk,
            q.spare,
            unix_now_ms().saturating_add(wait),
            &entry,
        )
    }

    fn requeue(
        &self,
        chunk: &ChunkId,
        spare: u8,
        due_ms: u64,
        entry: &HealEntry,
    ) -> ChunkResult<()> {
        let mut b = Batch::new();
        self.unqueue(&mut b, chunk)?;
        let key = q_key(due_ms, spare, chunk);
        b.put(Cf::Heal, &key, &entry.encode());
        b.put(Cf::Heal, &c_key(chunk), &key);
        self.kv.write(b, false)?;
        Ok(())
    }

    /// Makes every queued entry due now (`pangea heal --now`): how many.
    pub fn retry_all_now(&self) -> ChunkResult<u64> {
        let all = self.list(usize::MAX)?;
        let now = unix_now_ms();
        for q in &all {
            self.requeue(&q.chunk, q.spare, now, &q.entry)?;
        }
        Ok(all.len() as u64)
    }

    /// Assesses chunk `chunk` now (None: needs nothing, or not placed, or
    /// gone, or still queued for placement: the uploader's work).
    pub fn assess(
        &self,
        chunk: &ChunkId,
        book: &PeerBook,
        policy: &HealPolicy,
    ) -> ChunkResult<Option<Assessment>> {
        if self.uploads.is_queued(chunk)? {
            return Ok(None);
        }
        let Some(entry) = self.chunks.table().get(chunk)? else {
            return Ok(None);
        };
        let mut life = self.life_of(book, policy, unix_now_ms());
        Ok(assess(&entry.rec, &entry.manifest, policy, &mut life))
    }

    /// Repairs `chunk` (see the module documentation). Ok(None): nothing
    /// to do. An error leaves whatever was placed recorded.
    pub fn repair(
        &self,
        chunk: &ChunkId,
        book: &PeerBook,
        policy: &HealPolicy,
        transport: &dyn ShardTransport,
    ) -> Result<Option<Repaired>, RepairError> {
        let Some(a) = self.assess(chunk, book, policy)? else {
            return Ok(None);
        };
        let Some(shards) = self.uploads.shards_to_place(chunk)? else {
            return Ok(None);
        };
        let shard_len = shards.first().map_or(0, |s| s.bytes.len() as u64);
        let todo: Vec<_> = shards
            .into_iter()
            .filter(|s| a.rebuild.contains(&s.index))
            .collect();
        // Avoid the peers holding the live shards that stay.
        let now = unix_now_ms();
        let mut avoid = Vec::new();
        for (index, peer) in self.uploads.holders(chunk)? {
            if !a.rebuild.contains(&index) && book.life(&peer, now, policy.grace_ms) == Life::Up {
                avoid.push(peer);
            }
        }
        let spread = super::Spread {
            per_domain: (a.total - a.k).max(1),
            only_up: true,
        };
        let results = transport.place_spread(&todo, &avoid, spread);
        let mut placed = Vec::new();
        let mut first_err = None;
        for (s, r) in todo.iter().zip(results) {
            match r {
                Ok(peer) => placed.push(Placed {
                    index: s.index,
                    address: s.address,
                    peer,
                }),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.record(chunk, &placed)?;
        let done = Repaired {
            shards: placed.len() as u64,
            bytes: shard_len * (a.k as u64 + placed.len() as u64),
        };
        match first_err {
            Some(e) => Err(RepairError::Place {
                done,
                error: e,
                wanted: todo.len(),
            }),
            None => Ok(Some(done)),
        }
    }

    /// Records new holders of repaired indices: each replaces the old
    /// holders of its index, whose copies are queued for release.
    fn record(&self, chunk: &ChunkId, placed: &[Placed]) -> ChunkResult<()> {
        if placed.is_empty() {
            return Ok(());
        }
        let table = self.chunks.table();
        let _records = table.lock();
        let mut b = Batch::new();
        let mut new_peers = NewPeers::default();
        let mut numbered = Vec::with_capacity(placed.len());
        for p in placed {
            numbered.push(Holder {
                shard: p.index,
                peer: self.peers.number(&mut b, &mut new_peers, &p.peer)?,
            });
        }
        let release = |b: &mut Batch, p: &Placed, peer: u32| queue::release(b, &p.address, peer);
        match table.get(chunk)? {
            Some(mut entry) => {
                for (p, h) in placed.iter().zip(numbered) {
                    let current =
                        entry.manifest.shard_ids.get(usize::from(p.index)) == Some(&p.address);
                    if !current {
                        release(&mut b, p, h.peer);
                        continue;
                    }
                    let mut kept = Vec::with_capacity(entry.rec.holders.len());
                    for old in entry.rec.holders.drain(..) {
                        if old.shard == h.shard && old.peer != h.peer {
                            release(&mut b, p, old.peer);
                        } else {
                            kept.push(old);
                        }
                    }
                    entry.rec.holders = kept;
                    if !entry.rec.holders.contains(&h) {
                        entry.rec.holders.push(h);
                    }
                }
                table.put(&mut b, chunk, &entry.rec);
            }
            None => {
                for (p, h) in placed.iter().zip(&numbered) {
                    release(&mut b, p, h.peer);
                }
            }
        }
        self.kv.write(b, true)?;
        Ok(())
    }

    /// Scans up to `limit` chunk records from `from` (exclusive; None: the
    /// start), queueing those that need repair. Returns the last key seen
    /// (None: the scan reached the end), the records checked and queued.
    pub fn scan(
        &self,
        from: Option<&[u8]>,
        limit: usize,
        book: &PeerBook,
        policy: &HealPolicy,
    ) -> ChunkResult<(Option<Vec<u8>>, u64, u64)> {
        let mut hits = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        let mut seen = 0usize;
        let now = unix_now_ms();
        {
            let mut life = self.life_of(book, policy, now);
            let start = from.map(|f| {
                let mut s = f.to_vec();
                s.push(0);
                s
            });
            self.kv.scan(
                Cf::Chunk,
                &[],
                start.as_deref().unwrap_or(&[]),
                &mut |k, v| {
                    seen += 1;
                    last = Some(k.to_vec());
                    if let (Ok(id), Ok(rec)) = (<[u8; 32]>::try_from(k), ChunkRecord::decode(v))
                        && let Ok(m) = Manifest::decode(&rec.manifest)
                        && let Some(a) = assess(&rec, &m, policy, &mut life)
                    {
                        hits.push((ChunkId(id), a.spare()));
                    }
                    seen < limit
                },
            )?;
        }
        let mut queued = 0;
        for (id, spare) in hits {
            if !self.uploads.is_queued(&id)? && self.enqueue(&id, spare)? {
                queued += 1;
            }
        }
        let next = if seen < limit { None } else { last };
        Ok((next, seen as u64, queued))
    }

    /// `peer`'s copy of shard `index` of `chunk` is gone or wrong (a
    /// failed proof): the holder leaves the record, the copy is queued for
    /// release, and the chunk for repair. False if the record did not
    /// name that holder.
    pub fn lost_copy(&self, chunk: &ChunkId, index: u16, peer: &PeerId) -> ChunkResult<bool> {
        let table = self.chunks.table();
        let found = {
            let _records = table.lock();
            let Some(mut entry) = table.get(chunk)? else {
                return Ok(false);
            };
            let mut gone = None;
            for h in &entry.rec.holders {
                if h.shard == index && self.peers.identity(h.peer)?.as_ref() == Some(peer) {
                    gone = Some(*h);
                }
            }
            let Some(h) = gone else { return Ok(false) };
            entry.rec.holders.retain(|x| *x != h);
            let mut b = Batch::new();
            table.put(&mut b, chunk, &entry.rec);
            if let Some(addr) = entry.manifest.shard_ids.get(usize::from(index)) {
                queue::release(&mut b, addr, h.peer);
            }
            self.kv.write(b, true)?;
            true
        };
        if found {
            self.enqueue(chunk, 0)?;
        }
        Ok(found)
    }

    /// The oldest `since` among queued entries (Unix ms).
    pub fn oldest_since(&self) -> ChunkResult<Option<u64>> {
        Ok(self.list(100_000)?.iter().map(|q| q.entry.since_ms).min())
    }

    /// The peer of a holder number (for reports).
    pub fn peer(&self, n: u32) -> ChunkResult<Option<PeerId>> {
        self.peers.identity(n)
    }
}

/// Why a repair did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The index or the chunk's shards (fewer than k reachable).
    #[error(transparent)]
    Local(#[from] ChunkError),
    /// Some rebuilt shards found no new holder.
    #[error("{} of {wanted} shards placed: {error}", done.shards)]
    Place {
        done: Repaired,
        error: PlaceError,
        wanted: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(n: u16) -> Vec<Holder> {
        (0..n)
            .map(|i| Holder {
                shard: i,
                peer: u32::from(i),
            })
            .collect()
    }

    fn policy() -> HealPolicy {
        HealPolicy::default()
    }

    #[test]
    fn a_whole_chunk_needs_nothing() {
        let mut up = |_| Life::Up;
        assert_eq!(assess_holders(&holders(4), 2, 4, &policy(), &mut up), None);
        assert_eq!(
            assess_holders(&holders(13), 10, 13, &policy(), &mut up),
            None
        );
        assert_eq!(
            assess_holders(&[], 2, 4, &policy(), &mut up),
            None,
            "not placed yet"
        );
    }

    #[test]
    fn a_peer_down_within_its_grace_waits_unless_the_chunk_is_at_k_plus_one() {
        // 10+3: one peer down leaves 12 live, far from k+1: wait.
        let mut one_down = |p| if p == 0 { Life::Down } else { Life::Up };
        assert_eq!(
            assess_holders(&holders(13), 10, 13, &policy(), &mut one_down),
            None
        );
        // 2+2: one down leaves 3 = k+1 live: at once.
        let mut one_down = |p| if p == 3 { Life::Down } else { Life::Up };
        let a = assess_holders(&holders(4), 2, 4, &policy(), &mut one_down).expect("urgent");
        assert!(a.urgent);
        assert_eq!(a.rebuild, vec![3]);
    }

    #[test]
    fn lost_shards_are_rebuilt_up_to_the_target() {
        // 8+4 with min 2, target 4 spare: one lost leaves 3 spare: fine.
        let mut one = |p| if p == 0 { Life::Lost } else { Life::Up };
        assert_eq!(
            assess_holders(&holders(12), 8, 12, &policy(), &mut one),
            None
        );
        // Three lost leave 1 spare (k+1 live): rebuild all three (target
        // 4 = m).
        let mut three = |p| if p < 3 { Life::Lost } else { Life::Up };
        let a = assess_holders(&holders(12), 8, 12, &policy(), &mut three).expect("repair");
        assert!(a.urgent);
        assert_eq!(a.rebuild, vec![0, 1, 2]);
        assert_eq!(a.spare(), 1);
        // 6+6 loses 4: 2 spare left, not below the minimum.
        let mut four = |p| if p < 4 { Life::Lost } else { Life::Up };
        assert_eq!(
            assess_holders(&holders(12), 6, 12, &policy(), &mut four),
            None
        );
        // It loses 5: target 4 of 6 spare: rebuild only three of them.
        let mut five = |p| if p < 5 { Life::Lost } else { Life::Up };
        let a = assess_holders(&holders(12), 6, 12, &policy(), &mut five).expect("repair");
        assert_eq!(a.rebuild, vec![0, 1, 2]);
        // A higher minimum repairs before the chunk is at k+1.
        let strict = HealPolicy {
            min_spare: 4,
            ..policy()
        };
        let mut one = |p| if p == 0 { Life::Lost } else { Life::Up };
        let a = assess_holders(&holders(12), 8, 12, &strict, &mut one).expect("repair");
        assert!(!a.urgent);
        assert_eq!(a.rebuild, vec![0]);
    }

    #[test]
    fn a_second_holder_of_an_index_keeps_it_live() {
        let mut h = holders(4);
        h.push(Holder { shard: 3, peer: 9 });
        let mut life = |p| if p == 3 { Life::Lost } else { Life::Up };
        assert_eq!(assess_holders(&h, 2, 4, &policy(), &mut life), None);
    }
}
