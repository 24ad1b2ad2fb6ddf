//! The tuner: the (k, m) of new chunks, from what the node has learned of
//! its peers and its network.
//!
//! **Durability model.** A chunk is lost when more than m of its k+m
//! shards are lost within one repair interval (the healer rebuilds the
//! rest before the next). Each peer is lost in an interval with
//! probability q = 1 − exp(−λ·T), where λ is its learned rate of losses
//! (times it was down for an hour or more), shrunk towards the rate of
//! all peers together by the weight of one loss: λ = (losses + 1) /
//! (hours watched + 1/λ_all), where λ_all is all losses plus one over all
//! hours plus a year. Peers of one failure domain also fail together, at a given
//! rate (one a year by default). Placement spreads a chunk's shards
//! evenly over the domains, over distinct peers where there are enough;
//! the probability that more than m are lost is computed exactly over the
//! domains (a domain fails whole, or its shards' peers fail one by one,
//! each with its domain's mean q).
//!
//! **Choice.** Among k in 1..=16 and m in 1..=8, within the peers present
//! (k+m ≤ N), the candidates that meet the target (P(loss) ≤ 1e-9 per
//! interval by default) are ordered by storage overhead (k+m)/k, then by
//! width. The network caps k (a read needs k shards: on a poor network
//! fewer, larger ones): good (RTT < 50 ms, loss < 1 %) 16, medium (< 150
//! ms, < 5 %) 8, poor 6; small files (chunks under 256 KiB) cap k at 4;
//! a loaded CPU (load per core > 0.8) caps k+m at 10.
//!
//! **Knowing little.** Until the peers have been watched for a day in all,
//! the table is used: good network 10+3, medium 8+4, poor 6+6, cut down to
//! the peers present (one shard each, a third of them parity, as
//! `params_for` does).

use serde::Serialize;

/// Bounds of the search.
pub const MAX_K: u16 = 16;
pub const MAX_M: u16 = 8;
/// The default durability target: P(chunk loss) per repair interval.
pub const DEFAULT_TARGET: f64 = 1e-9;
/// One year in hours: the prior of the loss rates.
const YEAR_H: f64 = 365.0 * 24.0;
/// Watching time (all peers together) before the model is trusted.
const LEARNED_AFTER_H: f64 = 24.0;

/// What the tuner knows of one peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerModel {
    /// Times it was lost (down past the grace period).
    pub losses: u64,
    /// Hours it has been watched.
    pub observed_h: f64,
    /// Its failure domain.
    pub domain: String,
}

impl PeerModel {
    /// Its loss rate per hour: its own record, shrunk towards `pooled`
    /// (the rate of all peers together) by the weight of one loss.
    pub fn rate_per_h(&self, pooled: f64) -> f64 {
        (self.losses as f64 + 1.0) / (self.observed_h + 1.0 / pooled.max(1e-12))
    }
}

/// The loss rate of all peers together, per hour (prior: one a year, with
/// the weight of one loss).
pub fn pooled_rate(peers: &[PeerModel]) -> f64 {
    let losses: u64 = peers.iter().map(|p| p.losses).sum();
    let hours: f64 = peers.iter().map(|p| p.observed_h).sum();
    (losses as f64 + 1.0) / (hours + YEAR_H)
}

/// How the network looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NetClass {
    Good,
    Medium,
    Poor,
}

impl NetClass {
    /// From the median RTT (ms) and loss (0-1) of the peers.
    pub fn of(rtt_ms: f64, loss: f64) -> NetClass {
        if rtt_ms < 50.0 && loss < 0.01 {
            NetClass::Good
        } else if rtt_ms < 150.0 && loss < 0.05 {
            NetClass::Medium
        } else {
            NetClass::Poor
        }
    }

    fn max_k(self) -> u16 {
        match self {
            NetClass::Good => MAX_K,
            NetClass::Medium => 8,
            NetClass::Poor => 6,
        }
    }

    /// The table's row.
    pub fn table(self) -> (u16, u16) {
        match self {
            NetClass::Good => (10, 3),
            NetClass::Medium => (8, 4),
            NetClass::Poor => (6, 6),
        }
    }
}

/// The tuner's inputs.
#[derive(Debug, Clone, Serialize)]
pub struct TuneInput {
    pub peers: Vec<PeerModel>,
    pub net: NetClass,
    /// Hours between repairs (the healer's rescan or grace, whichever is
    /// longer).
    pub repair_h: f64,
    /// Domain failures per hour (prior: one a year).
    pub domain_rate_per_h: f64,
    pub target: f64,
    /// Typical chunk size of new writes, bytes.
    pub chunk_bytes: u64,
    /// Load average per core.
    pub cpu_load: f64,
}

/// One (k, m) looked at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub k: u16,
    pub m: u16,
    pub overhead: f64,
    pub p_loss: f64,
    pub meets: bool,
}

/// The choice and why.
#[derive(Debug, Clone, Serialize)]
pub struct Tuned {
    pub k: u16,
    pub m: u16,
    /// "model" or "table" (not enough watching yet) or "alone".
    pub how: &'static str,
    pub candidates: Vec<Candidate>,
}

/// P(more than `m` of the shards lost), shards spread over the best
/// `peers` (at most ⌈n/N⌉ each, in order), exact over the domains.
pub fn p_loss(input: &TuneInput, k: u16, m: u16) -> f64 {
    let n = usize::from(k + m);
    let np = input.peers.len();
    if np == 0 {
        return 1.0;
    }
    // Placement spreads a chunk evenly over the domains (round robin, at
    // most m in one), over distinct peers where there are enough; a shard
    // in a domain is lost with the mean probability of its peers.
    let pooled = pooled_rate(&input.peers);
    let mut by_domain: Vec<(String, Vec<f64>)> = Vec::new();
    for p in &input.peers {
        let q = 1.0 - (-p.rate_per_h(pooled) * input.repair_h).exp();
        match by_domain.iter_mut().find(|(d, _)| *d == p.domain) {
            Some((_, v)) => v.push(q),
            None => by_domain.push((p.domain.clone(), vec![q])),
        }
    }
    let nd = by_domain.len();
    let mut per_domain = vec![0usize; nd];
    for i in 0..n {
        per_domain[i % nd] += 1;
    }
    let mut domains: Vec<(String, Vec<(usize, f64)>)> = Vec::new();
    for ((name, qs), shards) in by_domain.iter().zip(&per_domain) {
        if *shards == 0 {
            continue;
        }
        let mean = qs.iter().sum::<f64>() / qs.len() as f64;
        // Distinct peers while they last, then some hold two.
        let mut holders = vec![0usize; qs.len().min(*shards)];
        for j in 0..*shards {
            let len = holders.len();
            holders[j % len] += 1;
        }
        domains.push((
            name.clone(),
            holders.into_iter().map(|c| (c, mean)).collect(),
        ));
    }
    let qd = 1.0 - (-input.domain_rate_per_h * input.repair_h).exp();
    // dist[j]: P(j shards lost so far).
    let mut dist = vec![0.0f64; n + 1];
    dist[0] = 1.0;
    for (_, holders) in &domains {
        // The domain's own loss distribution: peers one by one...
        let total: usize = holders.iter().map(|(c, _)| c).sum();
        let mut own = vec![0.0f64; total + 1];
        own[0] = 1.0;
        for (c, q) in holders {
            let mut next = vec![0.0f64; total + 1];
            for (j, p) in own.iter().enumerate() {
                if *p == 0.0 {
                    continue;
                }
                next[j] += p * (1.0 - q);
                if j + c <= total {
                    next[j + c] += p * q;
                }
            }
            own = next;
        }
        // ...or all at once, when the domain fails (only a domain of its
        // own among several counts: one domain alone is the peers).
        if domains.len() > 1 {
            for (j, p) in own.iter_mut().enumerate() {
                *p *= 1.0 - qd;
                if j == total {
                    *p += qd;
                }
            }
        }
        let mut next = vec![0.0f64; n + 1];
        for (a, pa) in dist.iter().enumerate() {
            if *pa == 0.0 {
                continue;
            }
            for (b, pb) in own.iter().enumerate() {
                if a + b <= n {
                    next[a + b] += pa * pb;
                }
            }
        }
        dist = next;
    }
    dist[usize::from(m) + 1..]
        .iter()
        .sum::<f64>()
        .clamp(0.0, 1.0)
}

/// The table's row cut down to `peers` storage peers.
pub fn table_params(net: NetClass, peers: usize) -> Option<(u16, u16)> {
    if peers < 2 {
        return None;
    }
    let (k, m) = net.table();
    if peers >= usize::from(k + m) {
        return Some((k, m));
    }
    // A third of them parity, rounded up (as `params_for`): any third of
    // the peers can be lost.
    let n = u16::try_from(peers).unwrap_or(u16::MAX);
    let m = n.div_ceil(3).max(1);
    Some(((n - m).max(1), m))
}

/// Chooses (k, m) (see the module documentation). None: no peers to
/// spread over (the node keeps its own parameters).
pub fn tune(input: &TuneInput) -> Option<Tuned> {
    let np = input.peers.len();
    if np < 2 {
        return None;
    }
    let watched: f64 = input.peers.iter().map(|p| p.observed_h).sum();
    let mut max_k = input.net.max_k();
    if input.chunk_bytes < 256 * 1024 {
        max_k = max_k.min(4);
    }
    let max_n = if input.cpu_load > 0.8 { 10 } else { usize::MAX };
    let mut candidates = Vec::new();
    for k in 1..=max_k {
        for m in 1..=MAX_M {
            let n = usize::from(k + m);
            if n > np || n > max_n {
                continue;
            }
            let p = p_loss(input, k, m);
            candidates.push(Candidate {
                k,
                m,
                overhead: f64::from(k + m) / f64::from(k),
                p_loss: p,
                meets: p <= input.target,
            });
        }
    }
    if watched < LEARNED_AFTER_H {
        let (k, m) = table_params(input.net, np)?;
        return Some(Tuned {
            k,
            m,
            how: "table",
            candidates,
        });
    }
    let best = candidates
        .iter()
        .filter(|c| c.meets)
        .min_by(|a, b| {
            a.overhead
                .total_cmp(&b.overhead)
                .then((a.k + a.m).cmp(&(b.k + b.m)))
        })
        // Nothing meets the target: the most parity the peers allow.
        .or_else(|| {
            candidates
                .iter()
                .min_by(|a, b| a.p_loss.total_cmp(&b.p_loss))
        })
        .cloned()?;
    Some(Tuned {
        k: best.k,
        m: best.m,
        how: "model",
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(peers: Vec<PeerModel>) -> TuneInput {
        TuneInput {
            peers,
            net: NetClass::Good,
            repair_h: 1.0,
            domain_rate_per_h: 1.0 / YEAR_H,
            target: DEFAULT_TARGET,
            chunk_bytes: 4 << 20,
            cpu_load: 0.2,
        }
    }

    fn peer(losses: u64, observed_h: f64, domain: &str) -> PeerModel {
        PeerModel {
            losses,
            observed_h,
            domain: domain.into(),
        }
    }

    #[test]
    fn p_loss_matches_the_binomial_for_independent_peers() {
        // 4 peers, one domain, 2+2: P(>2 of 4 lost) with q each.
        let i = input((0..4).map(|_| peer(0, 0.0, "d")).collect());
        let q = 1.0 - (-1.0f64 / YEAR_H).exp();
        let want = 4.0 * q.powi(3) * (1.0 - q) + q.powi(4);
        let got = p_loss(&i, 2, 2);
        assert!((got - want).abs() / want < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn domains_make_loss_likelier() {
        let flat = input((0..6).map(|i| peer(0, 1e4, &format!("d{i}"))).collect());
        let two = input(
            (0..6)
                .map(|i| peer(0, 1e4, &format!("d{}", i % 2)))
                .collect(),
        );
        // 3+3 survives one of six independent domains failing, not one of
        // two domains holding three shards each... which it also survives
        // (m = 3): but 4+2 does not.
        assert!(p_loss(&two, 4, 2) > p_loss(&flat, 4, 2) * 10.0);
    }

    #[test]
    fn little_watching_uses_the_table_and_much_the_model() {
        let fresh = input((0..20).map(|i| peer(0, 0.1, &format!("d{i}"))).collect());
        let t = tune(&fresh).expect("tuned");
        assert_eq!((t.k, t.m, t.how), (10, 3, "table"));
        let few = input((0..5).map(|i| peer(0, 0.1, &format!("d{i}"))).collect());
        let t = tune(&few).expect("tuned");
        assert_eq!((t.k, t.m), (3, 2), "cut to five peers");
        // Reliable peers, watched for weeks: less overhead than 10+3.
        let solid = input((0..20).map(|i| peer(0, 2000.0, &format!("d{i}"))).collect());
        let t = tune(&solid).expect("tuned");
        assert_eq!(t.how, "model");
        assert!(
            f64::from(t.k + t.m) / f64::from(t.k) < 1.3,
            "{}+{}",
            t.k,
            t.m
        );
        // Flaky peers: more parity than the table's good row.
        let flaky = input(
            (0..20)
                .map(|i| peer(200, 2000.0, &format!("d{i}")))
                .collect(),
        );
        let t = tune(&flaky).expect("tuned");
        assert!(t.m > 3, "{}+{}", t.k, t.m);
        assert!(
            t.candidates
                .iter()
                .any(|c| c.k == t.k && c.m == t.m && c.meets)
        );
    }

    #[test]
    fn small_files_and_poor_networks_get_narrow_stripes() {
        let mut i = input((0..20).map(|i| peer(0, 2000.0, &format!("d{i}"))).collect());
        i.chunk_bytes = 64 << 10;
        assert!(tune(&i).expect("tuned").k <= 4);
        i.chunk_bytes = 4 << 20;
        i.net = NetClass::Poor;
        assert!(tune(&i).expect("tuned").k <= 6);
    }
}
