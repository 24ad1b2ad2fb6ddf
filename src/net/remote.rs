//! The network behind the core's two seams:
//!
//! * [`NetTransport`], the uploader's `placement::ShardTransport`: a
//!   chunk's shards go to distinct storage members (best first: connected,
//!   lowest RTT), at most ⌈shards / members⌉ per member, all of them in
//!   flight at once; a member that is down or full is skipped for a while
//!   and its shards go to the next one.
//! * [`RemoteShards`], the chunk layer's `chunks::ShardSource`: the local
//!   disk first; for what it lacks, the holders named in the chunk's record
//!   are asked in parallel, every shard is checked against its address
//!   (a wrong one is counted against its holder and dropped), and after a
//!   hedge delay the parity holders are asked too. Any k good shards
//!   rebuild the wanted ones (data shards of a healthy chunk need no
//!   Reed-Solomon work). Everything ends at the caller's deadline, capped
//!   by the operation timeout: a silent peer costs a read that much at
//!   most, never a hang.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId as NetPeer;
use tracing::{debug, warn};

use super::roster::Membership;
use super::swarm::{NetClient, NetError};
use super::wire::{Refusal, Request, Response, check_shard};
use crate::ces::{Manifest, ShardId};
use crate::chunks::{
    ChunkError, ChunkRecord, ChunkResult, Fetched, LocalShards, ShardSource, ShardsAt,
};
use crate::placement::{
    PeerBook, PeerId, PeerTable, PlaceError, ShardToPlace, ShardTransport, Spread,
};
use crate::store::{Cf, Kv};

/// How long a member that failed a put is skipped.
const SKIP_DOWN: Duration = Duration::from_secs(10);
/// How long a full member is skipped.
const SKIP_FULL: Duration = Duration::from_secs(60);
/// How long a put may take (a 4 MiB shard on a slow uplink).
const PUT_DEADLINE: Duration = Duration::from_secs(60);
/// How long a proof may take (the peer reads and hashes one shard).
const PROVE_DEADLINE: Duration = Duration::from_secs(20);
/// How long a release may take.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);
/// How old the RTT table may be.
const RTT_REFRESH: Duration = Duration::from_secs(2);

fn to_net(p: &PeerId) -> Option<NetPeer> {
    NetPeer::from_bytes(p.as_bytes()).ok()
}

fn from_net(p: &NetPeer) -> PeerId {
    PeerId(p.to_bytes())
}

/// (connected, RTT in ms) by peer.
type RttTable = HashMap<NetPeer, (bool, f64)>;
/// A chunk's manifest and its holders by shard index.
type Holders = (Manifest, HashMap<usize, Vec<NetPeer>>);

/// Peers ordered best first: connected, then by the book's score
/// (proximity, availability, loss), then by RTT.
struct Proximity {
    client: NetClient,
    book: Arc<PeerBook>,
    table: Mutex<(Instant, RttTable)>,
    refreshing: std::sync::atomic::AtomicBool,
}

impl Proximity {
    fn new(client: NetClient, book: Arc<PeerBook>) -> Proximity {
        Proximity {
            client,
            book,
            table: Mutex::new((
                Instant::now()
                    .checked_sub(RTT_REFRESH * 2)
                    .unwrap_or_else(Instant::now),
                HashMap::new(),
            )),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// (connected, rtt ms) of `peer`, from a table refreshed every few s.
    /// The refresh (a call to the network task) is made by one reader at a
    /// time, without the table's lock: the others use the old table.
    fn of(&self, peer: &NetPeer) -> (bool, f64) {
        let stale = self.lock().0.elapsed() > RTT_REFRESH;
        if stale
            && self
                .refreshing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let fresh: Option<RttTable> = self.client.peers().ok().map(|peers| {
                peers
                    .into_iter()
                    .filter_map(|p| {
                        Some((p.peer.parse().ok()?, (p.connected, p.rtt_ms.unwrap_or(1e3))))
                    })
                    .collect()
            });
            let mut t = self.lock();
            if let Some(f) = fresh {
                t.1 = f;
            }
            t.0 = Instant::now();
            drop(t);
            self.refreshing.store(false, Ordering::Release);
        }
        self.lock().1.get(peer).copied().unwrap_or((false, 1e4))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Instant, RttTable)> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sort(&self, peers: &mut [NetPeer]) {
        let mut keyed: Vec<(NetPeer, (bool, f64, f64))> = peers
            .iter()
            .map(|p| {
                let (up, rtt) = self.of(p);
                (*p, (up, self.book.score(&from_net(p)), rtt))
            })
            .collect();
        keyed.sort_by(|a, b| {
            b.1.0
                .cmp(&a.1.0)
                .then(b.1.1.total_cmp(&a.1.1))
                .then(a.1.2.total_cmp(&b.1.2))
        });
        for (slot, (p, _)) in peers.iter_mut().zip(keyed) {
            *slot = p;
        }
    }
}

/// Counters of the network's two seams.
#[derive(Debug, Default)]
pub struct RemoteStats {
    pub shards_fetched: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bad_shards: AtomicU64,
    pub fetch_failures: AtomicU64,
    pub hedged: AtomicU64,
    pub puts: AtomicU64,
    pub put_failures: AtomicU64,
}

/// See the module documentation.
pub struct NetTransport {
    client: NetClient,
    members: Arc<Membership>,
    proximity: Proximity,
    /// Members skipped until the given time (down or full).
    skip: Mutex<HashMap<NetPeer, Instant>>,
    /// Members that said "full", until when that is believed.
    full: Mutex<HashMap<NetPeer, Instant>>,
    stats: Arc<RemoteStats>,
}

impl NetTransport {
    pub fn new(
        client: NetClient,
        members: Arc<Membership>,
        stats: Arc<RemoteStats>,
        book: Arc<PeerBook>,
    ) -> NetTransport {
        NetTransport {
            proximity: Proximity::new(client.clone(), book),
            client,
            members,
            skip: Mutex::new(HashMap::new()),
            full: Mutex::new(HashMap::new()),
            stats,
        }
    }

    fn skip_for(&self, peer: NetPeer, d: Duration) {
        self.skip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, Instant::now() + d);
    }

    fn full(&self, peer: &NetPeer) -> bool {
        self.full
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .is_some_and(|t| Instant::now() < *t)
    }

    fn skipped(&self, peer: &NetPeer) -> bool {
        self.skip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .is_some_and(|t| Instant::now() < *t)
    }

    fn put(&self, peer: NetPeer, shard: &ShardToPlace) -> Result<(), PlaceError> {
        let who = from_net(&peer);
        // The sender's check of the bytes against their address was made
        // where they were read (`UploadQueue::shards_to_place`, the
        // transport's contract): hashing them again here cost ~1 CPU-s per
        // GiB placed.
        let request = Request::Put {
            address: shard.address,
            bytes: shard.bytes.clone(),
        };
        let t = Instant::now();
        match self.client.request(peer, Vec::new(), request, PUT_DEADLINE) {
            Ok(Response::Stored) => {
                self.proximity.book.transfer(
                    &who,
                    shard.bytes.len() as u64,
                    t.elapsed().as_secs_f64(),
                );
                Ok(())
            }
            Ok(Response::Refused(Refusal::Full)) => Err(PlaceError::Full(who)),
            Ok(Response::Refused(Refusal::Busy)) => Err(PlaceError::PeerDown(who)),
            Ok(Response::Refused(r)) => Err(PlaceError::Refused {
                peer: who,
                reason: refusal_text(r),
            }),
            Ok(_) => Err(PlaceError::Refused {
                peer: who,
                reason: "an answer that is not to a put",
            }),
            Err(_) => Err(PlaceError::PeerDown(who)),
        }
    }
}

/// Why a request to `peer` did not get the answer it wanted: refused (and
/// why), answered with something else (`other`), or not answered.
fn failed(peer: &PeerId, answer: Result<Response, NetError>, other: &'static str) -> PlaceError {
    match answer {
        Ok(Response::Refused(r)) => PlaceError::Refused {
            peer: peer.clone(),
            reason: refusal_text(r),
        },
        Ok(_) => PlaceError::Refused {
            peer: peer.clone(),
            reason: other,
        },
        Err(_) => PlaceError::PeerDown(peer.clone()),
    }
}

fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::Full => "full",
        Refusal::NotFound => "not found",
        Refusal::BadAddress => "bytes not matching the address",
        Refusal::NotMember => "not a member (or banned)",
        Refusal::Busy => "busy",
        Refusal::Malformed => "malformed request",
    }
}

impl ShardTransport for NetTransport {
    fn place(&self, shards: &[ShardToPlace], avoid: &[PeerId]) -> Vec<Result<PeerId, PlaceError>> {
        self.place_spread(shards, avoid, Spread::ANY)
    }

    fn place_spread(
        &self,
        shards: &[ShardToPlace],
        avoid: &[PeerId],
        spread: Spread,
    ) -> Vec<Result<PeerId, PlaceError>> {
        let per_domain = spread.per_domain;
        let up = |p: &NetPeer| !spread.only_up || self.proximity.book.is_up(&from_net(p));
        let me = self.client.local_peer_id();
        let mut candidates: Vec<NetPeer> = self
            .members
            .storage_peers(&me)
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| !self.skipped(p) && up(p))
            .collect();
        if candidates.is_empty() {
            return shards.iter().map(|_| Err(PlaceError::NoPeer)).collect();
        }
        self.proximity.sort(&mut candidates);
        // Members that can take shards: full ones do not count (their
        // share goes to the others), down ones do (their shards wait).
        let all = self
            .members
            .storage_peers(&me)
            .iter()
            .filter(|(p, _)| !self.full(p) && up(p))
            .count()
            .max(1);
        // At most ⌈(shards of the chunk) / members⌉ on one member.
        let cap = (shards.len() + avoid.len()).div_ceil(all).max(1);
        let load: Mutex<HashMap<NetPeer, usize>> = Mutex::new(HashMap::new());
        {
            let mut l = load.lock().unwrap_or_else(|e| e.into_inner());
            for a in avoid.iter().filter_map(to_net) {
                *l.entry(a).or_default() += 1;
            }
        }
        // Failure domains: capped only where the members span two or more.
        let domain = |p: &NetPeer| {
            self.proximity
                .book
                .domain(&from_net(p))
                .unwrap_or_else(|| p.to_string())
        };
        let domains: HashSet<String> = candidates.iter().map(domain).collect();
        // As even as the domains allow, and never more than m in one.
        let dom_cap = if domains.len() >= 2 {
            per_domain
                .min((shards.len() + avoid.len()).div_ceil(domains.len()))
                .max(1)
        } else {
            usize::MAX
        };
        let dom_load: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
        {
            let mut l = dom_load.lock().unwrap_or_else(|e| e.into_inner());
            for a in avoid.iter().filter_map(to_net) {
                *l.entry(domain(&a)).or_default() += 1;
            }
        }
        let failed: Mutex<HashSet<NetPeer>> = Mutex::new(HashSet::new());
        let candidates = &candidates;
        let load = &load;
        let dom_load = &dom_load;
        let domain = &domain;
        let failed = &failed;
        std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .iter()
                .enumerate()
                .map(|(n, shard)| {
                    scope.spawn(move || {
                        let mut last = PlaceError::NoPeer;
                        // Rotate the start so that shards spread. The
                        // first round keeps the domain cap; the second
                        // (only if the first found no peer) does not.
                        let rounds = if dom_cap == usize::MAX { 1 } else { 2 };
                        let len = candidates.len();
                        for (round, i) in (0..rounds).flat_map(|r| (0..len).map(move |i| (r, i))) {
                            let first_round = round == 0;
                            let peer = candidates[(n + i) % candidates.len()];
                            if failed.lock().unwrap_or_else(|e| e.into_inner()).contains(&peer) {
                                continue;
                            }
                            let d = domain(&peer);
                            {
                                let mut l = load.lock().unwrap_or_else(|e| e.into_inner());
                                let mut dl = dom_load.lock().unwrap_or_else(|e| e.into_inner());
                                let c = l.entry(peer).or_default();
                                let dc = dl.entry(d.clone()).or_default();
                                if *c >= cap || (first_round && *dc >= dom_cap) {
                                    continue;
                                }
                                *c += 1;
                                *dc += 1;
                            }
                            self.stats.puts.fetch_add(1, Ordering::Relaxed);
                            match self.put(peer, shard) {
                                Ok(()) => return Ok(from_net(&peer)),
                                Err(e) => {
                                    self.stats.put_failures.fetch_add(1, Ordering::Relaxed);
                                    debug!(peer = %peer, error = %e, "put failed; trying another member");
                                    match &e {
                                        PlaceError::Full(_) => {
                                            self.skip_for(peer, SKIP_FULL);
                                            self.full
                                                .lock()
                                                .unwrap_or_else(|e| e.into_inner())
                                                .insert(peer, Instant::now() + SKIP_FULL);
                                        }
                                        _ => self.skip_for(peer, SKIP_DOWN),
                                    }
                                    failed
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .insert(peer);
                                    if let Some(c) = load
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .get_mut(&peer)
                                    {
                                        *c = c.saturating_sub(1);
                                    }
                                    if let Some(c) = dom_load
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .get_mut(&d)
                                    {
                                        *c = c.saturating_sub(1);
                                    }
                                    last = e;
                                }
                            }
                        }
                        Err(last)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(PlaceError::NoPeer)))
                .collect()
        })
    }

    fn prove(
        &self,
        peer: &PeerId,
        address: &ShardId,
        nonce: &[u8; 32],
    ) -> Result<Option<[u8; 32]>, PlaceError> {
        let p = to_net(peer).ok_or(PlaceError::NoPeer)?;
        let request = Request::Prove {
            address: *address,
            nonce: *nonce,
        };
        match self.client.request(p, Vec::new(), request, PROVE_DEADLINE) {
            Ok(Response::Proof { hash }) => Ok(Some(hash)),
            Ok(Response::Refused(Refusal::NotFound)) => Ok(None),
            other => Err(failed(peer, other, "an answer that is not to a prove")),
        }
    }

    fn fetch(&self, peer: &PeerId, address: &ShardId) -> Result<Option<Vec<u8>>, PlaceError> {
        let p = to_net(peer).ok_or(PlaceError::NoPeer)?;
        let t = Instant::now();
        match self.client.request(
            p,
            Vec::new(),
            Request::Get { address: *address },
            PUT_DEADLINE,
        ) {
            Ok(Response::Shard { bytes }) => {
                if check_shard(address, &bytes).is_err() {
                    self.stats.bad_shards.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
                self.proximity
                    .book
                    .transfer(peer, bytes.len() as u64, t.elapsed().as_secs_f64());
                Ok(Some(bytes))
            }
            Ok(Response::Refused(Refusal::NotFound)) => Ok(None),
            other => Err(failed(peer, other, "an answer that is not to a get")),
        }
    }

    fn release(&self, peer: &PeerId, address: &ShardId) -> Result<(), PlaceError> {
        let Some(p) = to_net(peer) else {
            // Not a peer id: nothing to release anywhere.
            return Ok(());
        };
        if !self.members.is_member(&p) {
            // A removed member: its copies are not ours to manage any more.
            return Ok(());
        }
        match self.client.request(
            p,
            Vec::new(),
            Request::Delete { address: *address },
            RELEASE_DEADLINE,
        ) {
            Ok(Response::Deleted { .. }) => Ok(()),
            other => Err(failed(peer, other, "an answer that is not to a delete")),
        }
    }
}

/// See the module documentation.
pub struct RemoteShards {
    local: LocalShards,
    kv: Arc<dyn Kv>,
    peers: PeerTable,
    client: NetClient,
    members: Arc<Membership>,
    proximity: Proximity,
    /// The longest any read waits on peers.
    op_timeout: Duration,
    /// How long the data shards' holders get before parity holders are
    /// asked as well.
    hedge: Duration,
    stats: Arc<RemoteStats>,
    /// Wrong shards received, per member.
    bad: Mutex<HashMap<NetPeer, u64>>,
}

impl RemoteShards {
    pub fn new(
        local: LocalShards,
        kv: Arc<dyn Kv>,
        client: NetClient,
        members: Arc<Membership>,
        op_timeout: Duration,
        stats: Arc<RemoteStats>,
        book: Arc<PeerBook>,
    ) -> RemoteShards {
        RemoteShards {
            local,
            peers: PeerTable::new(kv.clone()),
            kv,
            proximity: Proximity::new(client.clone(), book),
            client,
            members,
            op_timeout,
            hedge: Duration::from_millis(400),
            stats,
            bad: Mutex::new(HashMap::new()),
        }
    }

    /// Members that sent wrong shards, and how many.
    pub fn bad_shards(&self) -> Vec<(String, u64)> {
        self.bad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, n)| (p.to_string(), *n))
            .collect()
    }

    /// The manifest and the holders (by shard index) of chunk `at`.
    fn holders(&self, at: &ShardsAt) -> ChunkResult<Option<Holders>> {
        let Some(v) = self.kv.get(Cf::Chunk, at.chunk.as_bytes())? else {
            return Ok(None);
        };
        let rec = ChunkRecord::decode(&v)?;
        let manifest =
            Manifest::decode(&rec.manifest).map_err(|_| ChunkError::Corrupt("chunk manifest"))?;
        let mut by_index: HashMap<usize, Vec<NetPeer>> = HashMap::new();
        for h in &rec.holders {
            if let Some(id) = self.peers.identity(h.peer)?
                && let Some(p) = to_net(&id)
                && self.members.is_member(&p)
            {
                by_index.entry(usize::from(h.shard)).or_default().push(p);
            }
        }
        for v in by_index.values_mut() {
            self.proximity.sort(v);
        }
        Ok(Some((manifest, by_index)))
    }

    /// Fetches shards of `at` from peers until the `want` ones are whole
    /// (fetched, or rebuilt from any k good ones) or `deadline`.
    fn fetch(
        &self,
        at: &ShardsAt,
        want: Range<usize>,
        deadline: Instant,
    ) -> ChunkResult<Option<Fetched>> {
        let Some((m, holders)) = self.holders(at)? else {
            return Ok(None);
        };
        let total = m.params.total();
        let k = usize::from(m.params.k());
        let s = m.shard_len as usize;
        if holders.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel::<(usize, NetPeer, Result<Vec<u8>, NetError>)>();
        let mut asked: HashSet<usize> = HashSet::new();
        let ask = |i: usize, asked: &mut HashSet<usize>| {
            let Some(peers) = holders.get(&i) else {
                return;
            };
            let Some(peer) = peers.first().copied() else {
                return;
            };
            asked.insert(i);
            let tx = tx.clone();
            let client = self.client.clone();
            let book = self.proximity.book.clone();
            let address = m.shard_ids[i];
            let left = deadline.saturating_duration_since(Instant::now());
            let spawned = std::thread::Builder::new()
                .name("pangea-get".into())
                .spawn(move || {
                    let t = Instant::now();
                    let r = match client.request(peer, Vec::new(), Request::Get { address }, left) {
                        Ok(Response::Shard { bytes }) => {
                            book.transfer(
                                &from_net(&peer),
                                bytes.len() as u64,
                                t.elapsed().as_secs_f64(),
                            );
                            Ok(bytes)
                        }
                        Ok(other) => Err(NetError::Peer {
                            peer,
                            reason: format!("{other:?}").chars().take(64).collect(),
                        }),
                        Err(e) => Err(e),
                    };
                    let _ = tx.send((i, peer, r));
                });
            if spawned.is_err() {
                asked.remove(&i);
            }
        };
        for i in want.clone() {
            ask(i, &mut asked);
        }
        // Not enough holders among the wanted: ask the others now.
        if asked.len() < want.len().min(k) {
            for i in 0..total {
                if !asked.contains(&i) {
                    ask(i, &mut asked);
                }
            }
        }
        let hedge_at = Instant::now() + self.hedge;
        let mut hedged = false;
        let mut got: HashMap<usize, Vec<u8>> = HashMap::new();
        let mut answered = 0usize;
        loop {
            if want.clone().all(|i| got.contains_key(&i)) {
                break;
            }
            if got.len() >= k && answered == asked.len() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let any_failed = answered > got.len();
            if !hedged && (now >= hedge_at || any_failed) {
                hedged = true;
                let before = asked.len();
                for i in 0..total {
                    if !asked.contains(&i) {
                        ask(i, &mut asked);
                    }
                }
                if asked.len() > before {
                    self.stats.hedged.fetch_add(1, Ordering::Relaxed);
                }
            }
            if hedged && got.len() >= k {
                break;
            }
            if answered == asked.len() {
                break; // every ask answered; nothing left to wait for
            }
            let wait = if hedged {
                deadline
            } else {
                hedge_at.min(deadline)
            };
            match rx.recv_timeout(wait.saturating_duration_since(now)) {
                Ok((i, peer, r)) => {
                    answered += 1;
                    match r {
                        Ok(bytes)
                            if bytes.len() == s && check_shard(&m.shard_ids[i], &bytes).is_ok() =>
                        {
                            self.stats.shards_fetched.fetch_add(1, Ordering::Relaxed);
                            self.stats
                                .bytes_fetched
                                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            got.insert(i, bytes);
                        }
                        Ok(_) => {
                            warn!(%peer, chunk = %at.chunk, shard = i, "a member sent a wrong shard; counted against it, read goes on from others");
                            self.stats.bad_shards.fetch_add(1, Ordering::Relaxed);
                            *self
                                .bad
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(peer)
                                .or_default() += 1;
                        }
                        Err(e) => {
                            self.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                            debug!(%peer, shard = i, error = %e, "fetching a shard failed");
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut out = vec![0u8; want.len() * s];
        if want.clone().all(|i| got.contains_key(&i)) {
            for (n, i) in want.clone().enumerate() {
                out[n * s..(n + 1) * s].copy_from_slice(&got[&i]);
            }
        } else if got.len() >= k {
            let view: Vec<Option<&[u8]>> =
                (0..total).map(|i| got.get(&i).map(Vec::as_slice)).collect();
            let (all, _) =
                crate::ces::rebuild_shards(&m, &view).map_err(|e| ChunkError::Unreadable {
                    chunk: at.chunk,
                    source: e,
                })?;
            out.copy_from_slice(&all[want.start * s..want.end * s]);
        } else {
            // Fewer than k: give what came (holes stay zeros, which fail
            // their check), so the caller reports the chunk unreadable.
            for (n, i) in want.clone().enumerate() {
                if let Some(b) = got.get(&i) {
                    out[n * s..(n + 1) * s].copy_from_slice(b);
                }
            }
        }
        Ok(Some(Fetched {
            bytes: out,
            start: 0,
            remote: true,
        }))
    }
}

impl ShardSource for RemoteShards {
    fn get(
        &self,
        at: &ShardsAt,
        shard_len: usize,
        want: Range<usize>,
        buf: Vec<u8>,
        deadline: Instant,
    ) -> ChunkResult<Option<Fetched>> {
        let need = want.len().saturating_mul(shard_len);
        match self.local.get(at, shard_len, want.clone(), buf, deadline) {
            Ok(Some(f)) if f.bytes.len().saturating_sub(f.start) >= need => return Ok(Some(f)),
            Ok(_) => {}
            // The local copy cannot be read (EIO...): the peers' can.
            Err(e) => {
                debug!(chunk = %at.chunk, error = %e, "local shards unreadable; asking peers")
            }
        }
        let deadline = deadline.min(Instant::now() + self.op_timeout);
        self.fetch(at, want, deadline)
    }

    fn put(&self, at: &ShardsAt, shards: &[u8], durable: bool) -> ChunkResult<()> {
        self.local.put(at, shards, durable)
    }

    fn get_remote(
        &self,
        at: &ShardsAt,
        want: Range<usize>,
        deadline: Instant,
    ) -> ChunkResult<Option<Fetched>> {
        let deadline = deadline.min(Instant::now() + self.op_timeout);
        self.fetch(at, want, deadline)
    }

    fn has(&self, at: &ShardsAt) -> ChunkResult<bool> {
        self.local.has(at)
    }

    fn delete(&self, at: &ShardsAt) -> ChunkResult<bool> {
        self.local.delete(at)
    }
}
