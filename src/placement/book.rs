//! The peer book: what this node has learned about each peer, kept in
//! `Cf::Peer` under `b ‖ identity` so that it survives restarts.
//!
//! Fed by the prober (a probe per peer every few seconds: up or down, and
//! the round trip) and by real transfers (bandwidth). Read by placement
//! (best peers first, failure domains), by reads (nearest first), by the
//! healer (up, down within the grace period, or lost) and by the tuner
//! (learned availability).
//!
//! * RTT: smoothed as TCP does (RFC 6298: srtt += (s − srtt)/8, rttvar +=
//!   (|s − srtt| − rttvar)/4), so `rttvar` is the jitter.
//! * Loss: an exponentially weighted share of probes to a connected peer
//!   that got no answer in time.
//! * Availability: the share of probes that found the peer up, with a
//!   prior of 9 in 10 (a peer seen once is not assumed perfect or dead).
//! * Proximity: 1.0 under 10 ms, 0.8 under 50, 0.6 under 100, 0.4 under
//!   200, 0.2 under 500, else 0.1; the score is proximity × availability ×
//!   (1 − loss).
//! * Failure domain: the zone a peer announces (`--zone`), else the /24 of
//!   its IPv4 address or the /56 of its IPv6 address (the same host has
//!   the same address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::peers::PeerId;
use crate::chunks::ChunkResult;
use crate::store::{Batch, Cf, Kv};

const BOOK: u8 = b'b';
const RECORD_VERSION: u8 = 1;
/// Weight of a new probe in the loss average.
const LOSS_ALPHA: f64 = 0.1;
/// An answer this much later than twice the smoothed RTT was lost on the
/// way and retransmitted (TCP's first retransmission waits at least
/// 200 ms): it counts as a loss, and (Karn's rule) its round trip does not
/// feed the RTT, unless the answer before it was late too (the path
/// really got slower).
const RETRANSMIT_MS: f64 = 150.0;
/// Weight of a new transfer in the bandwidth average.
const BW_ALPHA: f64 = 0.2;
/// Prior of the availability estimate: `PRIOR_UP` up in `PRIOR_PROBES`.
const PRIOR_UP: f64 = 9.0;
const PRIOR_PROBES: f64 = 10.0;
/// A down period this long counts as a loss for the tuner (the healer's
/// default grace period).
pub const LONG_DOWN_MS: u64 = 3_600_000;
/// Transfers smaller than this say little about bandwidth.
const BW_MIN_BYTES: u64 = 256 * 1024;

/// What this node knows of one peer (persisted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Smoothed round trip of probes, ms (0: no sample yet).
    pub srtt_ms: f64,
    /// Its mean deviation (jitter), ms.
    pub rttvar_ms: f64,
    /// Weighted share of probes to a connected peer that were lost: not
    /// answered in time, or answered so late that a retransmission shows.
    pub loss: f64,
    /// Probes that found the peer up, and all probes.
    pub up_probes: u64,
    pub probes: u64,
    /// Weighted bytes per second of real transfers (0: none yet).
    pub bw_bps: f64,
    /// When it was last seen up, and since when it has been down (Unix ms).
    pub last_seen_ms: u64,
    pub down_since_ms: Option<u64>,
    /// Its failure domain (see the module documentation); empty: unknown.
    pub domain: String,
    /// When it was first probed (Unix ms), and how often it was down for
    /// longer than [`LONG_DOWN_MS`] (the tuner's losses).
    pub first_seen_ms: u64,
    pub long_downs: u64,
    /// The current down period was counted in `long_downs`.
    pub down_counted: bool,
    /// The last answer was late (see `RETRANSMIT_MS`; not persisted).
    #[serde(skip)]
    pub last_late: bool,
}

impl PeerRecord {
    /// Hours it has been watched.
    pub fn observed_h(&self, now_ms: u64) -> f64 {
        now_ms.saturating_sub(self.first_seen_ms) as f64 / 3_600_000.0
    }
}

impl PeerRecord {
    /// Learned availability in 0-1 (see the module documentation).
    pub fn availability(&self) -> f64 {
        (self.up_probes as f64 + PRIOR_UP) / (self.probes as f64 + PRIOR_PROBES)
    }

    /// Proximity score of the smoothed RTT (1.0 when none is known yet).
    pub fn proximity(&self) -> f64 {
        if self.rtt_samples_known() {
            proximity(self.srtt_ms)
        } else {
            1.0
        }
    }

    fn rtt_samples_known(&self) -> bool {
        self.srtt_ms > 0.0
    }

    /// proximity × availability × (1 − loss), in 0-1.
    pub fn score(&self) -> f64 {
        (self.proximity() * self.availability() * (1.0 - self.loss)).clamp(0.0, 1.0)
    }
}

/// The proximity of a round trip of `rtt_ms` (see the module docs).
pub fn proximity(rtt_ms: f64) -> f64 {
    match rtt_ms {
        r if r < 10.0 => 1.0,
        r if r < 50.0 => 0.8,
        r if r < 100.0 => 0.6,
        r if r < 200.0 => 0.4,
        r if r < 500.0 => 0.2,
        _ => 0.1,
    }
}

/// The failure domain of an address: its /24 (IPv4) or /56 (IPv6); every
/// loopback address is one domain, this host.
pub fn domain_of(ip: IpAddr) -> String {
    // Every loopback address is this very host: one domain, whichever
    // of 127.0.0.0/8 a peer listens on or connects from.
    if ip.is_loopback() {
        return "this host (loopback)".into();
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return domain_of(IpAddr::V4(v4));
            }
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}00::/56", s[0], s[1], s[2], s[3] >> 8)
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Probe {
    /// No connection to send it on.
    NotSent,
    /// Sent on a live connection; no answer in time.
    Lost,
    /// Answered after this many ms.
    Answered(f64),
}

/// Where a peer stands for the healer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Life {
    /// Up (or never probed: nothing says otherwise).
    Up,
    /// Down, for less than the grace period.
    Down,
    /// Down for longer than the grace period: its copies count as lost.
    Lost,
}

/// See the module documentation. Cheap to share (`Arc`); the records are
/// written to the index by [`PeerBook::persist`].
pub struct PeerBook {
    kv: Option<Arc<dyn Kv>>,
    records: RwLock<HashMap<PeerId, PeerRecord>>,
    /// Bumped when a peer goes up or down.
    changes: AtomicU64,
}

fn key(peer: &PeerId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + peer.as_bytes().len());
    k.push(BOOK);
    k.extend_from_slice(peer.as_bytes());
    k
}

impl PeerBook {
    /// A book kept in memory only (tests, a node without an index).
    pub fn in_memory() -> PeerBook {
        PeerBook {
            kv: None,
            records: RwLock::new(HashMap::new()),
            changes: AtomicU64::new(0),
        }
    }

    /// The book stored in `kv` (malformed records are dropped, logged).
    pub fn load(kv: Arc<dyn Kv>) -> ChunkResult<PeerBook> {
        let mut records = HashMap::new();
        kv.scan(Cf::Peer, &[BOOK], &[], &mut |k, v| {
            match v.split_first() {
                Some((&RECORD_VERSION, body)) => match postcard::from_bytes::<PeerRecord>(body) {
                    Ok(r) => {
                        records.insert(PeerId(k[1..].to_vec()), r);
                    }
                    Err(_) => warn!("a malformed peer book record was dropped"),
                },
                _ => warn!("a peer book record of an unknown version was dropped"),
            }
            true
        })?;
        Ok(PeerBook {
            kv: Some(kv),
            records: RwLock::new(records),
            changes: AtomicU64::new(0),
        })
    }

    /// Writes every record to the index (not synced: the book is advice,
    /// and a crash loses at most a few probes).
    pub fn persist(&self) -> ChunkResult<()> {
        let Some(kv) = &self.kv else { return Ok(()) };
        let mut b = Batch::new();
        for (p, r) in self.read().iter() {
            let mut v = vec![RECORD_VERSION];
            v.extend(postcard::to_allocvec(r).unwrap_or_default());
            b.put(Cf::Peer, &key(p), &v);
        }
        kv.write(b, false)?;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PeerId, PeerRecord>> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PeerId, PeerRecord>> {
        self.records.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a probe of `peer` at `now_ms`: whether it counts as up, and
    /// what the probe found.
    pub fn probe(&self, peer: &PeerId, up: bool, outcome: Probe, now_ms: u64) {
        let mut all = self.write();
        let r = all.entry(peer.clone()).or_default();
        if r.first_seen_ms == 0 {
            r.first_seen_ms = now_ms;
        }
        r.probes += 1;
        let was_down = r.down_since_ms.is_some();
        if let Some(since) = r.down_since_ms
            && !r.down_counted
            && now_ms.saturating_sub(since) >= LONG_DOWN_MS
        {
            r.long_downs += 1;
            r.down_counted = true;
        }
        if up {
            r.up_probes += 1;
            r.last_seen_ms = now_ms;
            r.down_since_ms = None;
            r.down_counted = false;
            match outcome {
                Probe::Answered(s) => {
                    let late = r.srtt_ms > 0.0 && s > 2.0 * r.srtt_ms + RETRANSMIT_MS;
                    let sample = !late || r.last_late;
                    r.last_late = late;
                    if sample && r.srtt_ms <= 0.0 {
                        r.srtt_ms = s.max(0.001);
                        r.rttvar_ms = s / 2.0;
                    } else if sample {
                        r.rttvar_ms += ((s - r.srtt_ms).abs() - r.rttvar_ms) / 4.0;
                        r.srtt_ms += (s - r.srtt_ms) / 8.0;
                    }
                    r.loss = r.loss * (1.0 - LOSS_ALPHA) + if late { LOSS_ALPHA } else { 0.0 };
                }
                Probe::Lost => r.loss = r.loss * (1.0 - LOSS_ALPHA) + LOSS_ALPHA,
                Probe::NotSent => {}
            }
        } else if r.down_since_ms.is_none() {
            r.down_since_ms = Some(now_ms);
        }
        if was_down == up {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a real transfer of `bytes` to or from `peer` that took
    /// `secs` (small ones are ignored).
    pub fn transfer(&self, peer: &PeerId, bytes: u64, secs: f64) {
        if bytes < BW_MIN_BYTES || secs <= 0.0 {
            return;
        }
        let rate = bytes as f64 / secs;
        let mut all = self.write();
        let r = all.entry(peer.clone()).or_default();
        r.bw_bps = if r.bw_bps <= 0.0 {
            rate
        } else {
            r.bw_bps * (1.0 - BW_ALPHA) + rate * BW_ALPHA
        };
    }

    /// Sets `peer`'s failure domain.
    pub fn set_domain(&self, peer: &PeerId, domain: &str) {
        let mut all = self.write();
        let r = all.entry(peer.clone()).or_default();
        if r.domain != domain {
            r.domain = domain.to_owned();
        }
    }

    /// `peer`'s record, if any.
    pub fn get(&self, peer: &PeerId) -> Option<PeerRecord> {
        self.read().get(peer).cloned()
    }

    /// Every record.
    pub fn all(&self) -> Vec<(PeerId, PeerRecord)> {
        let mut v: Vec<_> = self
            .read()
            .iter()
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Forgets `peer` (removed from the network).
    pub fn forget(&self, peer: &PeerId) -> ChunkResult<()> {
        self.write().remove(peer);
        if let Some(kv) = &self.kv {
            let mut b = Batch::new();
            b.delete(Cf::Peer, &key(peer));
            kv.write(b, false)?;
        }
        Ok(())
    }

    /// Where `peer` stands at `now_ms` with a grace period of `grace_ms`.
    pub fn life(&self, peer: &PeerId, now_ms: u64, grace_ms: u64) -> Life {
        match self.read().get(peer).and_then(|r| r.down_since_ms) {
            None => Life::Up,
            Some(since) if now_ms.saturating_sub(since) < grace_ms => Life::Down,
            Some(_) => Life::Lost,
        }
    }

    /// Is `peer` up (or unknown)?
    pub fn is_up(&self, peer: &PeerId) -> bool {
        self.read()
            .get(peer)
            .is_none_or(|r| r.down_since_ms.is_none())
    }

    /// `peer`'s score (1.0 when unknown).
    pub fn score(&self, peer: &PeerId) -> f64 {
        self.read().get(peer).map_or(1.0, PeerRecord::score)
    }

    /// `peer`'s failure domain, if known.
    pub fn domain(&self, peer: &PeerId) -> Option<String> {
        self.read()
            .get(peer)
            .map(|r| r.domain.clone())
            .filter(|d| !d.is_empty())
    }

    /// A number that changes whenever a peer goes up or down.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> PeerId {
        PeerId(vec![n; 4])
    }

    #[test]
    fn proximity_follows_the_thresholds() {
        let cases = [
            (1.0, 1.0),
            (9.9, 1.0),
            (10.0, 0.8),
            (49.0, 0.8),
            (60.0, 0.6),
            (150.0, 0.4),
            (300.0, 0.2),
            (800.0, 0.1),
        ];
        for (rtt, want) in cases {
            assert_eq!(proximity(rtt), want, "rtt {rtt}");
        }
    }

    #[test]
    fn rtt_is_smoothed_and_jitter_tracked() {
        let b = PeerBook::in_memory();
        for i in 0..50 {
            let s = if i % 2 == 0 { 20.0 } else { 40.0 };
            b.probe(&p(1), true, Probe::Answered(s), 1000 + i);
        }
        let r = b.get(&p(1)).expect("record");
        assert!((r.srtt_ms - 30.0).abs() < 3.0, "srtt {}", r.srtt_ms);
        assert!(
            r.rttvar_ms > 5.0 && r.rttvar_ms < 15.0,
            "rttvar {}",
            r.rttvar_ms
        );
        assert_eq!(r.proximity(), 0.8);
    }

    #[test]
    fn losses_and_downtime_lower_the_score() {
        let b = PeerBook::in_memory();
        for i in 0..40 {
            b.probe(&p(1), true, Probe::Answered(2.0), i);
            let lossy = if i % 2 == 0 {
                Probe::Answered(2.0)
            } else {
                Probe::Lost
            };
            b.probe(&p(2), true, lossy, i);
            b.probe(&p(3), i % 4 != 0, Probe::Answered(2.0), i);
        }
        // Answers a retransmission late (TCP's loss, seen from above).
        for i in 0..40 {
            let late = if i % 4 == 3 { 210.0 } else { 2.0 };
            b.probe(&p(4), true, Probe::Answered(late), i);
        }
        let r4 = b.get(&p(4)).expect("record");
        assert!(r4.loss > 0.15, "late answers are losses: {}", r4.loss);
        assert!(r4.srtt_ms < 10.0, "Karn: late answers are no RTT samples");
        let (s1, s2, s3) = (b.score(&p(1)), b.score(&p(2)), b.score(&p(3)));
        assert!(b.score(&p(4)) < s1 * 0.9, "{} vs {s1}", b.score(&p(4)));
        assert!(s1 > 0.95, "{s1}");
        assert!(s2 < s1 * 0.7, "lossy {s2} vs {s1}");
        assert!(s3 < s1 * 0.9, "often down {s3} vs {s1}");
        assert!(b.score(&p(9)) == 1.0, "unknown peers are not penalised");
    }

    #[test]
    fn a_peer_is_lost_only_after_the_grace_period() {
        let b = PeerBook::in_memory();
        b.probe(&p(1), true, Probe::Answered(1.0), 0);
        let c0 = b.changes();
        b.probe(&p(1), false, Probe::NotSent, 1_000);
        assert_eq!(b.changes(), c0 + 1);
        b.probe(&p(1), false, Probe::NotSent, 2_000);
        assert_eq!(b.changes(), c0 + 1, "still down is no change");
        assert_eq!(b.life(&p(1), 5_000, 10_000), Life::Down);
        assert_eq!(b.life(&p(1), 11_000, 10_000), Life::Lost);
        b.probe(&p(1), true, Probe::Answered(1.0), 12_000);
        assert_eq!(b.life(&p(1), 12_000, 10_000), Life::Up);
        assert_eq!(b.life(&p(7), 12_000, 10_000), Life::Up);
    }

    #[test]
    fn domains_are_subnets() {
        assert_eq!(domain_of("10.1.2.3".parse().unwrap()), "10.1.2.0/24");
        // A peer on this host connects from 127.0.0.1 and listens on any
        // of 127/8: one domain.
        assert_eq!(
            domain_of("127.77.13.14".parse().unwrap()),
            domain_of("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            domain_of("::1".parse().unwrap()),
            domain_of("::ffff:127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            domain_of("10.1.2.3".parse().unwrap()),
            domain_of("10.1.2.200".parse().unwrap())
        );
        assert_ne!(
            domain_of("10.1.2.3".parse().unwrap()),
            domain_of("10.1.3.3".parse().unwrap())
        );
        assert_eq!(
            domain_of("2001:db8:1:2ff::1".parse().unwrap()),
            domain_of("2001:db8:1:200::9".parse().unwrap())
        );
        assert_ne!(
            domain_of("2001:db8:1:2ff::1".parse().unwrap()),
            domain_of("2001:db8:1:3ff::1".parse().unwrap())
        );
    }

    #[test]
    fn the_book_survives_a_restart() {
        let kv: Arc<dyn Kv> = Arc::new(crate::store::MemKv::new());
        let b = PeerBook::load(kv.clone()).expect("load");
        b.probe(&p(1), true, Probe::Answered(12.0), 5);
        b.probe(&p(2), false, Probe::NotSent, 6);
        b.transfer(&p(1), 4 << 20, 0.1);
        b.set_domain(&p(1), "zone-a");
        b.persist().expect("persist");
        let again = PeerBook::load(kv).expect("load again");
        assert_eq!(again.get(&p(1)), b.get(&p(1)));
        assert_eq!(again.get(&p(2)), b.get(&p(2)));
        assert_eq!(again.domain(&p(1)).as_deref(), Some("zone-a"));
    }
}

#[cfg(test)]
mod long_down_tests {
    use super::*;

    #[test]
    fn a_long_down_period_counts_once() {
        let b = PeerBook::in_memory();
        let p = PeerId(vec![1]);
        b.probe(&p, true, Probe::Answered(1.0), 1);
        b.probe(&p, false, Probe::NotSent, 10);
        b.probe(&p, false, Probe::NotSent, 10 + LONG_DOWN_MS / 2);
        assert_eq!(b.get(&p).unwrap().long_downs, 0);
        b.probe(&p, false, Probe::NotSent, 10 + LONG_DOWN_MS);
        b.probe(&p, false, Probe::NotSent, 10 + 2 * LONG_DOWN_MS);
        assert_eq!(b.get(&p).unwrap().long_downs, 1);
        b.probe(&p, true, Probe::Answered(1.0), 20 + 2 * LONG_DOWN_MS);
        b.probe(&p, false, Probe::NotSent, 30 + 2 * LONG_DOWN_MS);
        b.probe(&p, false, Probe::NotSent, 30 + 4 * LONG_DOWN_MS);
        assert_eq!(b.get(&p).unwrap().long_downs, 2);
        assert!(b.get(&p).unwrap().observed_h(1 + 4 * LONG_DOWN_MS) > 3.9);
    }
}
