//! The tuner on a simulated churn trace: 120 peers in 12 failure domains
//! (servers, desktops and laptops, each class with its own rate of
//! leaving for good; domains that fail whole), hour by hour.
//!
//! 1. Four weeks are watched: every peer's losses and hours go to the
//!    tuner's model, which chooses (k, m).
//! 2. Twelve more weeks are run for the tuner's choice and for every fixed
//!    row of the table (10+3, 8+4, 6+6), on 10,000 chunks each: in an hour
//!    where more than m of a chunk's shards are lost the chunk is lost;
//!    otherwise the healer re-places the lost shards before the next hour.
//!
//! Two traces: a stable one (the durability target is met with less
//! overhead than every row), and a churny one (the 10+3 row loses chunks;
//! the tuner's choice does not). Seeded (`PANGEA_SIM_SEED` replays).

use pangea::placement::tuner::{self, NetClass, PeerModel, TuneInput};

const YEAR_H: f64 = 365.0 * 24.0;
const WEEK_H: usize = 7 * 24;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Per-hour loss rates of a peer of each class.
#[derive(Clone, Copy)]
struct Trace {
    server: f64,
    desktop: f64,
    laptop: f64,
    domain: f64,
}

const PEERS: usize = 120;
const DOMAINS: usize = 12;

fn class_rate(t: &Trace, i: usize) -> f64 {
    match i % 10 {
        0..=3 => t.server,
        4..=7 => t.desktop,
        _ => t.laptop,
    }
}

/// Watches the trace for `hours`: each peer's losses and hours watched,
/// and the domains' failures per hour (hours in which every peer of a
/// domain was lost at once).
fn watch(t: &Trace, rng: &mut Rng, hours: usize) -> (Vec<PeerModel>, f64) {
    let mut whole = 0u64;
    let mut models: Vec<PeerModel> = (0..PEERS)
        .map(|i| PeerModel {
            losses: 0,
            observed_h: 0.0,
            domain: format!("d{}", i % DOMAINS),
        })
        .collect();
    for _ in 0..hours {
        let failed_domain: Vec<bool> = (0..DOMAINS).map(|_| rng.unit() < t.domain).collect();
        let mut lost = [0usize; DOMAINS];
        for (i, m) in models.iter_mut().enumerate() {
            m.observed_h += 1.0;
            if failed_domain[i % DOMAINS] || rng.unit() < class_rate(t, i) {
                m.losses += 1;
                lost[i % DOMAINS] += 1;
            }
        }
        whole += lost.iter().filter(|n| **n == PEERS / DOMAINS).count() as u64;
    }
    // Prior: one a year per domain, with the weight of one failure.
    let rate = (whole as f64 + 1.0) / (DOMAINS as f64 * hours as f64 + YEAR_H);
    (models, rate)
}

/// A peer of domain `d` (peers i with i % DOMAINS == d) not in `taken`
/// nor in `failed`.
fn peer_in(rng: &mut Rng, d: usize, taken: &[usize], failed: &[usize]) -> Option<usize> {
    let per = PEERS / DOMAINS;
    let start = rng.below(per);
    (0..per)
        .map(|j| d + DOMAINS * ((start + j) % per))
        .find(|p| !taken.contains(p) && !failed.contains(p))
}

/// Where a new shard of a chunk held by `holders` goes: the domain with
/// the fewest of its shards (random among ties), a peer there that holds
/// none; as the real placement does.
fn place_one(rng: &mut Rng, holders: &[usize], failed: &[usize]) -> usize {
    let mut count = [0usize; DOMAINS];
    for h in holders {
        count[h % DOMAINS] += 1;
    }
    let start = rng.below(DOMAINS);
    let mut order: Vec<usize> = (0..DOMAINS).map(|j| (start + j) % DOMAINS).collect();
    order.sort_by_key(|d| count[*d]);
    order
        .into_iter()
        .find_map(|d| peer_in(rng, d, holders, failed))
        .unwrap_or(0)
}

/// Runs `hours` with `chunks` chunks of (k, m); returns chunks lost.
fn run(t: &Trace, rng: &mut Rng, k: usize, m: usize, chunks: usize, hours: usize) -> u64 {
    let n = k + m;
    // holders[c]: the peers holding chunk c's shards (distinct).
    let mut holders: Vec<Vec<usize>> = Vec::with_capacity(chunks);
    let mut by_peer: Vec<Vec<usize>> = vec![Vec::new(); PEERS];
    for c in 0..chunks {
        let mut h = Vec::with_capacity(n);
        while h.len() < n {
            let p = place_one(rng, &h, &[]);
            h.push(p);
        }
        for p in &h {
            by_peer[*p].push(c);
        }
        holders.push(h);
    }
    let mut lost_chunks = 0u64;
    let mut lost_now = vec![0usize; chunks];
    for _ in 0..hours {
        let failed_domain: Vec<bool> = (0..DOMAINS).map(|_| rng.unit() < t.domain).collect();
        let failed: Vec<usize> = (0..PEERS)
            .filter(|i| failed_domain[i % DOMAINS] || rng.unit() < class_rate(t, *i))
            .collect();
        if failed.is_empty() {
            continue;
        }
        let mut touched = Vec::new();
        for p in &failed {
            for c in &by_peer[*p] {
                if lost_now[*c] == 0 {
                    touched.push(*c);
                }
                lost_now[*c] += 1;
            }
        }
        // Each failed peer is replaced by a new, empty one (same id).
        for p in &failed {
            by_peer[*p].clear();
        }
        for c in touched {
            if lost_now[c] > m {
                lost_chunks += 1;
            }
            // Repaired (or, if lost, written again by its owner): the lost
            // shards go to peers that are up and do not hold it.
            let kept: Vec<usize> = holders[c]
                .iter()
                .copied()
                .filter(|p| !failed.contains(p))
                .collect();
            let mut now = kept;
            while now.len() < n {
                let q = place_one(rng, &now, &failed);
                now.push(q);
                by_peer[q].push(c);
            }
            holders[c] = now;
            lost_now[c] = 0;
        }
    }
    lost_chunks
}

fn scenario(name: &str, t: Trace, seed: u64) -> (f64, u64, Vec<(usize, usize, u64)>) {
    let mut rng = Rng(seed.max(1));
    let (models, domain_rate) = watch(&t, &mut rng, 4 * WEEK_H);
    let input = TuneInput {
        peers: models,
        net: NetClass::Good,
        repair_h: 1.0,
        domain_rate_per_h: domain_rate,
        target: tuner::DEFAULT_TARGET,
        chunk_bytes: 4 << 20,
        cpu_load: 0.1,
    };
    let choice = tuner::tune(&input).expect("tuned");
    assert_eq!(choice.how, "model");
    let (k, m) = (usize::from(choice.k), usize::from(choice.m));
    let p = tuner::p_loss(&input, choice.k, choice.m);
    let chunks = 10_000;
    let hours = 12 * WEEK_H;
    let tuned_lost = run(&t, &mut rng, k, m, chunks, hours);
    println!(
        "{name}: tuner chose {k}+{m} (overhead {:.3}, model P(loss)/h {p:.2e}): {tuned_lost} of {chunks} chunks lost in 12 weeks",
        (k + m) as f64 / k as f64
    );
    let mut rows = Vec::new();
    for (fk, fm) in [(10usize, 3usize), (8, 4), (6, 6)] {
        let lost = run(&t, &mut rng, fk, fm, chunks, hours);
        let fp = tuner::p_loss(&input, fk as u16, fm as u16);
        println!(
            "{name}: fixed {fk}+{fm} (overhead {:.3}, model P(loss)/h {fp:.2e}): {lost} lost",
            (fk + fm) as f64 / fk as f64
        );
        rows.push((fk, fm, lost));
    }
    ((k + m) as f64 / k as f64, tuned_lost, rows)
}

fn seed() -> u64 {
    std::env::var("PANGEA_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261207)
}

#[test]
fn on_a_stable_trace_the_tuner_meets_the_target_with_less_overhead_than_every_row() {
    let t = Trace {
        server: 1.0 / YEAR_H,
        desktop: 2.0 / YEAR_H,
        laptop: 6.0 / YEAR_H,
        domain: 0.5 / YEAR_H,
    };
    let (overhead, lost, rows) = scenario("stable", t, seed());
    assert_eq!(lost, 0, "the tuner's choice lost chunks");
    for (k, m, _) in rows {
        let row = (k + m) as f64 / k as f64;
        assert!(
            overhead < row,
            "tuner overhead {overhead:.3} not below {k}+{m}'s {row:.3}"
        );
    }
}

#[test]
fn on_a_churny_trace_the_tuner_adds_parity_where_the_table_loses_chunks() {
    let t = Trace {
        server: 4.0 / YEAR_H,
        desktop: 1.0 / (4.0 * WEEK_H as f64),
        laptop: 1.0 / WEEK_H as f64,
        domain: 2.0 / YEAR_H,
    };
    let (_, lost, rows) = scenario("churny", t, seed());
    let ten_three = rows
        .iter()
        .find(|(k, m, _)| (*k, *m) == (10, 3))
        .map_or(0, |r| r.2);
    assert!(ten_three > 0, "the trace is not churny enough to tell");
    assert_eq!(lost, 0, "the tuner's choice lost chunks");
}
