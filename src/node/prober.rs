//! The prober: every few seconds, each storage member is asked a tiny
//! question (an empty `has`) with a short deadline. A member that misses
//! three probes in a row (not connected, or no answer in time) is down;
//! one that answers is up, and the answer's round trip feeds its smoothed
//! RTT; a probe unanswered on a live connection is a loss. Its failure domain comes from the zone it
//! announces or the address it is connected from. The results go to the
//! peer book (`placement::book`), persisted every 30 s, which placement,
//! reads, the healer and the status read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::roster::Membership;
use crate::net::swarm::NetClient;
use crate::net::wire::{Request, Response};
use crate::placement::{PeerBook, PeerId, Probe, book::domain_of};
use crate::workers::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};

/// How long a probe may take.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);
/// Probes missed in a row that make a connected peer down.
const MISSES_DOWN: u32 = 3;
/// How often the book is written to the index.
const PERSIST_EVERY: Duration = Duration::from_secs(30);

/// See the module documentation.
pub struct Prober {
    pub client: NetClient,
    pub members: Arc<Membership>,
    pub book: Arc<PeerBook>,
    pub every: Duration,
    pub probes: u64,
    pub misses: HashMap<PeerId, u32>,
    pub persisted: Instant,
}

impl Prober {
    pub fn new(
        client: NetClient,
        members: Arc<Membership>,
        book: Arc<PeerBook>,
        every: Duration,
    ) -> Prober {
        Prober {
            client,
            members,
            book,
            every,
            probes: 0,
            misses: HashMap::new(),
            persisted: Instant::now(),
        }
    }
}

/// The IP of a multiaddr string (`/ip4/1.2.3.4/tcp/...`).
fn ip_of(addr: &str) -> Option<std::net::IpAddr> {
    let mut parts = addr.split('/').skip(1);
    while let Some(proto) = parts.next() {
        let value = parts.next()?;
        if proto == "ip4" || proto == "ip6" {
            return value.parse().ok();
        }
    }
    None
}

impl Worker for Prober {
    fn name(&self) -> String {
        "prober".into()
    }

    fn status(&self) -> WorkerProgress {
        WorkerProgress {
            queue_length: None,
            counters: vec![("probes", self.probes)],
        }
    }

    fn work(&mut self, _: &Stop) -> Result<WorkerState, WorkerError> {
        let me = self.client.local_peer_id();
        let states: HashMap<String, crate::net::swarm::PeerState> = self
            .client
            .peers()
            .map(|v| v.into_iter().map(|s| (s.peer.clone(), s)).collect())
            .unwrap_or_default();
        let storage = self.members.storage_peers(&me);
        let client = &self.client;
        let results: Vec<(PeerId, bool, Option<f64>, Option<String>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = storage
                    .iter()
                    .map(|(p, _)| {
                        let st = states.get(&p.to_string()).cloned();
                        scope.spawn(move || {
                            let id = PeerId(p.to_bytes());
                            let connected = st.as_ref().is_some_and(|s| s.connected);
                            let domain = st.as_ref().and_then(|s| {
                                s.zone
                                    .clone()
                                    .map(|z| format!("zone:{z}"))
                                    .or_else(|| s.addr.as_deref().and_then(ip_of).map(domain_of))
                            });
                            if !connected {
                                return (id, false, None, domain);
                            }
                            let t = Instant::now();
                            let answered = matches!(
                                client.request(
                                    *p,
                                    Vec::new(),
                                    Request::Has {
                                        addresses: Vec::new()
                                    },
                                    PROBE_DEADLINE
                                ),
                                Ok(Response::Have { .. })
                            );
                            let rtt = answered.then(|| t.elapsed().as_secs_f64() * 1000.0);
                            (id, true, rtt, domain)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
        let now = crate::placement::unix_now_ms();
        for (id, connected, rtt, domain) in results {
            let missed = if !connected || rtt.is_none() {
                let n = self.misses.entry(id.clone()).or_default();
                *n += 1;
                *n
            } else {
                self.misses.remove(&id);
                0
            };
            // Down after three missed probes in a row, connected or not:
            // a node just started, and a connection being re-made, are
            // not a peer down.
            let up = missed < MISSES_DOWN;
            let outcome = match (connected, rtt) {
                (false, _) => Probe::NotSent,
                (true, None) => Probe::Lost,
                (true, Some(ms)) => Probe::Answered(ms),
            };
            self.book.probe(&id, up, outcome, now);
            if let Some(d) = domain {
                self.book.set_domain(&id, &d);
            }
            self.probes += 1;
        }
        if self.persisted.elapsed() >= PERSIST_EVERY {
            self.book.persist().map_err(WorkerError::from)?;
            self.persisted = Instant::now();
        }
        Ok(WorkerState::Idle)
    }

    fn wait_for_work(&mut self) -> Duration {
        self.every
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ip_of_reads_multiaddrs() {
        assert_eq!(
            super::ip_of("/ip4/10.1.2.3/tcp/7410"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            super::ip_of("/ip6/::1/udp/7410/quic-v1"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(super::ip_of("/dns4/example.org/tcp/1"), None);
    }
}
