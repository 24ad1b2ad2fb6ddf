//! The guard: what a peer may do, how fast, and what happens when it
//! misbehaves.
//!
//! * Per-peer rate limits on requests and on bytes ([`governor`]), whose
//!   defaults are far above what a normal transfer needs (the uploader
//!   keeps at most 64 shards in flight; bench-swarm runs under them).
//! * Handshakes per remote IP address are limited before a connection is
//!   even established.
//! * Strikes: a request from a non-member, a malformed or lying request,
//!   a forged token or a throttled request is a strike; after
//!   [`GuardConfig::ban_after`] strikes the peer is banned for
//!   [`GuardConfig::ban_for`]: its connections are closed and refused.
//! * Counters per peer (accepted, refused, throttled, bytes in and out)
//!   and in total, for `pangea status`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use libp2p::PeerId;
use serde::Serialize;

/// The guard's limits.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Requests per second a peer may send (sustained), and in a burst.
    pub requests_per_s: u32,
    pub request_burst: u32,
    /// KiB per second a peer may send or fetch (sustained), and in a burst.
    pub kib_per_s: u32,
    pub kib_burst: u32,
    /// Strikes before a ban.
    pub ban_after: u32,
    /// How long a ban lasts.
    pub ban_for: Duration,
    /// New inbound connections per remote IP address per minute.
    pub handshakes_per_ip_per_min: u32,
}

impl Default for GuardConfig {
    fn default() -> GuardConfig {
        GuardConfig {
            requests_per_s: 2000,
            request_burst: 4000,
            // 4 GiB/s sustained, a 1 GiB burst: never reached by a transfer.
            kib_per_s: 4 << 20,
            kib_burst: 1 << 20,
            ban_after: 5,
            ban_for: Duration::from_secs(600),
            handshakes_per_ip_per_min: 120,
        }
    }
}

/// What the guard says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over its rate: answer "busy" (a strike).
    Throttle,
    /// Banned: refuse and close its connections.
    Banned,
}

/// One peer's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerCounters {
    pub accepted: u64,
    pub refused: u64,
    pub throttled: u64,
    pub strikes: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub banned: bool,
}

/// Totals over every peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuardTotals {
    pub accepted: u64,
    pub refused: u64,
    pub throttled: u64,
    pub banned: u64,
    pub handshakes_refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

struct PeerState {
    counters: PeerCounters,
    banned_until: Option<Instant>,
    /// The last request, refusal or strike: quiet peers are forgotten, and
    /// their strikes with them.
    last: Instant,
}

impl Default for PeerState {
    fn default() -> PeerState {
        PeerState {
            counters: PeerCounters::default(),
            banned_until: None,
            last: Instant::now(),
        }
    }
}

/// See the module documentation.
pub struct Guard {
    cfg: GuardConfig,
    requests: DefaultKeyedRateLimiter<PeerId>,
    bytes: DefaultKeyedRateLimiter<PeerId>,
    handshakes: DefaultKeyedRateLimiter<IpAddr>,
    peers: Mutex<HashMap<PeerId, PeerState>>,
    banned_total: AtomicU64,
    handshakes_refused: AtomicU64,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

impl Guard {
    pub fn new(cfg: GuardConfig) -> Guard {
        Guard {
            requests: RateLimiter::keyed(
                Quota::per_second(nz(cfg.requests_per_s)).allow_burst(nz(cfg.request_burst)),
            ),
            bytes: RateLimiter::keyed(
                Quota::per_second(nz(cfg.kib_per_s)).allow_burst(nz(cfg.kib_burst)),
            ),
            handshakes: RateLimiter::keyed(
                Quota::per_minute(nz(cfg.handshakes_per_ip_per_min))
                    .allow_burst(nz(cfg.handshakes_per_ip_per_min)),
            ),
            cfg,
            peers: Mutex::new(HashMap::new()),
            banned_total: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, PeerState>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Is `peer` banned now? (A ban that ran out is lifted here.)
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        let mut peers = self.peers();
        let Some(s) = peers.get_mut(peer) else {
            return false;
        };
        match s.banned_until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                s.banned_until = None;
                s.counters.banned = false;
                s.counters.strikes = 0;
                false
            }
            None => false,
        }
    }

    /// May a new connection from `ip` go on to its handshake?
    pub fn allow_handshake(&self, ip: IpAddr) -> bool {
        let ok = self.handshakes.check_key(&ip).is_ok();
        if !ok {
            self.handshakes_refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Checks one request of `bytes` bytes from `peer` against its limits.
    pub fn check(&self, peer: &PeerId, bytes: usize) -> Verdict {
        if self.is_banned(peer) {
            return Verdict::Banned;
        }
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let within = self.requests.check_key(peer).is_ok()
            && (kib == 0 || matches!(self.bytes.check_key_n(peer, nz(kib)), Ok(Ok(()))));
        if within {
            let mut peers = self.peers();
            let s = peers.entry(*peer).or_default();
            s.last = Instant::now();
            s.counters.accepted += 1;
            s.counters.bytes_in += bytes as u64;
            return Verdict::Allow;
        }
        {
            let mut peers = self.peers();
            peers.entry(*peer).or_default().counters.throttled += 1;
        }
        if self.strike(peer) {
            Verdict::Banned
        } else {
            Verdict::Throttle
        }
    }

    /// Counts a refused request (not a member, malformed, a wrong shard, a
    /// forged token) as a strike; true when it got the peer banned.
    pub fn refused(&self, peer: &PeerId) -> bool {
        self.peers().entry(*peer).or_default().counters.refused += 1;
        self.strike(peer)
    }

    /// Counts a refusal that is no fault of the peer (a full disk, a
    /// shard not held).
    pub fn declined(&self, peer: &PeerId) {
        self.peers().entry(*peer).or_default().counters.refused += 1;
    }

    /// Bytes sent to `peer` in answers.
    pub fn sent(&self, peer: &PeerId, bytes: usize) {
        self.peers().entry(*peer).or_default().counters.bytes_out += bytes as u64;
    }

    fn strike(&self, peer: &PeerId) -> bool {
        let mut peers = self.peers();
        let s = peers.entry(*peer).or_default();
        // Strikes decay: a member throttled once a day is never banned.
        if s.banned_until.is_none() && s.last.elapsed() > self.cfg.ban_for {
            s.counters.strikes = 0;
        }
        s.last = Instant::now();
        s.counters.strikes += 1;
        if s.counters.strikes >= self.cfg.ban_after && s.banned_until.is_none() {
            s.banned_until = Some(Instant::now() + self.cfg.ban_for);
            s.counters.banned = true;
            self.banned_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, strikes = s.counters.strikes, secs = self.cfg.ban_for.as_secs(), "peer banned");
            return true;
        }
        false
    }

    /// Each peer's counters.
    pub fn peer_counters(&self) -> Vec<(PeerId, PeerCounters)> {
        self.peers()
            .iter()
            .map(|(p, s)| (*p, s.counters.clone()))
            .collect()
    }

    /// Totals.
    pub fn totals(&self) -> GuardTotals {
        let mut t = GuardTotals {
            banned: self.banned_total.load(Ordering::Relaxed),
            handshakes_refused: self.handshakes_refused.load(Ordering::Relaxed),
            ..GuardTotals::default()
        };
        for s in self.peers().values() {
            t.accepted += s.counters.accepted;
            t.refused += s.counters.refused;
            t.throttled += s.counters.throttled;
            t.bytes_in += s.counters.bytes_in;
            t.bytes_out += s.counters.bytes_out;
        }
        t
    }

    /// Forgets peers not seen lately (and not banned), and their
    /// rate-limiter state: strangers cannot grow the table without bound.
    pub fn tidy(&self) {
        let keep = self.cfg.ban_for;
        let now = Instant::now();
        self.peers().retain(|_, s| {
            s.banned_until.is_some_and(|t| now < t) || now.duration_since(s.last) < keep
        });
        self.requests.retain_recent();
        self.bytes.retain_recent();
        self.handshakes.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_throttled_then_banned_and_a_normal_peer_is_not() {
        let g = Guard::new(GuardConfig {
            requests_per_s: 10,
            request_burst: 10,
            ban_for: Duration::from_millis(300),
            ..GuardConfig::default()
        });
        let flooder = PeerId::random();
        let normal = PeerId::random();
        let mut seen = Vec::new();
        for _ in 0..30 {
            seen.push(g.check(&flooder, 1024));
        }
        assert!(seen[..10].iter().all(|v| *v == Verdict::Allow));
        assert_eq!(seen[10], Verdict::Throttle);
        assert!(seen.contains(&Verdict::Banned));
        assert!(g.is_banned(&flooder));
        assert_eq!(g.check(&normal, 4 << 20), Verdict::Allow);
        let t = g.totals();
        assert_eq!(t.banned, 1);
        assert_eq!(t.accepted, 11);
        std::thread::sleep(Duration::from_millis(350));
        assert!(!g.is_banned(&flooder), "a ban runs out");
    }

    #[test]
    fn five_refusals_ban_and_declines_do_not() {
        let g = Guard::new(GuardConfig::default());
        let p = PeerId::random();
        for _ in 0..20 {
            g.declined(&p);
        }
        assert!(!g.is_banned(&p));
        for i in 0..5 {
            assert_eq!(g.refused(&p), i == 4);
        }
        assert!(g.is_banned(&p));
        assert_eq!(g.check(&p, 0), Verdict::Banned);
    }

    #[test]
    fn the_default_limits_let_a_gigabyte_of_shards_through() {
        let g = Guard::new(GuardConfig::default());
        let p = PeerId::random();
        for _ in 0..256 {
            assert_eq!(g.check(&p, 4 << 20), Verdict::Allow);
        }
    }

    #[test]
    fn handshakes_are_limited_per_address() {
        let g = Guard::new(GuardConfig {
            handshakes_per_ip_per_min: 3,
            ..GuardConfig::default()
        });
        let a: IpAddr = "127.0.0.9".parse().unwrap();
        let b: IpAddr = "127.0.0.10".parse().unwrap();
        assert!((0..3).all(|_| g.allow_handshake(a)));
        assert!(!g.allow_handshake(a));
        assert!(g.allow_handshake(b));
    }
}
