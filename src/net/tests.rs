//! Two networks in one process on loopback: the shard protocol over TCP and
//! over QUIC, at the largest shard, and a dead peer's deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, identity};

use super::swarm::{NetConfig, NetError, Network, ShardService};
use super::wire::{MAX_SHARD_LEN, Refusal, Request, Response, check_shard};
use crate::ces::ShardId;

/// A storage node in memory: shards by (member, address).
#[derive(Default)]
struct MemShards {
    held: Mutex<HashMap<(PeerId, ShardId), Vec<u8>>>,
}

impl ShardService for MemShards {
    fn serve(&self, from: &PeerId, request: Request) -> Response {
        let mut held = self.held.lock().unwrap();
        match request {
            Request::Put { address, bytes } => {
                if check_shard(&address, &bytes).is_err() {
                    return Response::Refused(Refusal::BadAddress);
                }
                held.insert((*from, address), bytes);
                Response::Stored
            }
            Request::Get { address } => match held.get(&(*from, address)) {
                Some(b) => Response::Shard { bytes: b.clone() },
                None => Response::Refused(Refusal::NotFound),
            },
            Request::Has { addresses } => Response::Have {
                held: addresses
                    .iter()
                    .map(|a| held.contains_key(&(*from, *a)))
                    .collect(),
            },
            Request::Delete { address } => Response::Deleted {
                existed: held.remove(&(*from, address)).is_some(),
            },
            Request::List { .. } => Response::Refused(Refusal::Malformed),
        }
    }
}

fn node(listen: &str) -> (Network, Arc<MemShards>) {
    let service = Arc::new(MemShards::default());
    let net = Network::start(
        NetConfig {
            keypair: identity::Keypair::generate_ed25519(),
            listen: vec![listen.parse().unwrap()],
            idle_timeout: Duration::from_secs(30),
        },
        service.clone(),
    )
    .unwrap();
    (net, service)
}

fn round_trip(listen: &str) {
    let (a, _) = node(listen);
    let (b, held) = node(listen);
    let (a, b_client) = (a.client(), b.client());
    let addrs: Vec<Multiaddr> = b_client.listeners().unwrap();
    assert_eq!(addrs.len(), 1);
    let peer = b_client.local_peer_id();
    let deadline = Duration::from_secs(30);
    let shard: Vec<u8> = (0..MAX_SHARD_LEN).map(|i| (i * 7 % 251) as u8).collect();
    let address = ShardId::of(&shard);
    let put = Request::Put {
        address,
        bytes: shard.clone(),
    };
    assert_eq!(
        a.request(peer, addrs.clone(), put, deadline).unwrap(),
        Response::Stored
    );
    assert_eq!(held.held.lock().unwrap().len(), 1);
    // Bytes that are not the shard the address names are refused.
    let forged = Request::Put {
        address,
        bytes: vec![1; 10],
    };
    assert_eq!(
        a.request(peer, Vec::new(), forged, deadline).unwrap(),
        Response::Refused(Refusal::BadAddress)
    );
    let got = a
        .request(peer, Vec::new(), Request::Get { address }, deadline)
        .unwrap();
    assert_eq!(got, Response::Shard { bytes: shard });
    let has = Request::Has {
        addresses: vec![address, ShardId([0; 32])],
    };
    assert_eq!(
        a.request(peer, Vec::new(), has, deadline).unwrap(),
        Response::Have {
            held: vec![true, false]
        }
    );
    // Eight in flight at once, from several threads.
    let shards: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1 << 20]).collect();
    std::thread::scope(|s| {
        for bytes in &shards {
            let a = a.clone();
            s.spawn(move || {
                let req = Request::Put {
                    address: ShardId::of(bytes),
                    bytes: bytes.clone(),
                };
                assert_eq!(
                    a.request(peer, Vec::new(), req, deadline).unwrap(),
                    Response::Stored
                );
            });
        }
    });
    assert_eq!(held.held.lock().unwrap().len(), 9);
}

#[test]
fn shards_travel_over_tcp_at_the_largest_size() {
    round_trip("/ip4/127.0.0.1/tcp/0");
}

#[test]
fn shards_travel_over_quic_at_the_largest_size() {
    round_trip("/ip4/127.0.0.1/udp/0/quic-v1");
}

#[test]
fn a_silent_peer_costs_at_most_the_deadline() {
    let (a, _) = node("/ip4/127.0.0.1/tcp/0");
    // A socket on loopback that accepts connections and never says a word:
    // the handshake hangs, as with a peer whose packets are dropped.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let nobody = identity::Keypair::generate_ed25519().public().to_peer_id();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let started = Instant::now();
    let r = a.client().request(
        nobody,
        vec![addr],
        Request::Get {
            address: ShardId([1; 32]),
        },
        Duration::from_millis(700),
    );
    let took = started.elapsed();
    assert!(matches!(r, Err(NetError::Deadline(_))), "{r:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
