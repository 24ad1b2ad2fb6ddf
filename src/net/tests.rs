//! Networks in one process on loopback: the shard protocol over TCP and
//! QUIC at the largest shard, a silent peer's deadline, membership (join
//! with good and bad tokens, strangers, removal), the guard against a
//! flood, and remote reads around a lying holder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, identity};

use super::guard::GuardConfig;
use super::member::{MemberError, MemberFiles, Role};
use super::roster::Membership;
use super::swarm::{NetConfig, NetError, Network, ShardService, join};
use super::wire::{MAX_SHARD_LEN, Refusal, Request, Response, check_shard};
use crate::ces::ShardId;

/// A storage node in memory: shards by (member, address).
#[derive(Default)]
struct MemShards {
    held: Mutex<HashMap<(PeerId, ShardId), Vec<u8>>>,
    /// Answers every get and proof from these bytes instead, and says it
    /// holds every shard (a lying peer).
    lie: Option<Vec<u8>>,
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
            Request::Get { address } => {
                if let Some(l) = &self.lie {
                    return Response::Shard { bytes: l.clone() };
                }
                match held.iter().find(|((_, a), _)| *a == address) {
                    Some((_, b)) => Response::Shard { bytes: b.clone() },
                    None => Response::Refused(Refusal::NotFound),
                }
            }
            Request::Has { addresses } => Response::Have {
                held: addresses
                    .iter()
                    .map(|a| self.lie.is_some() || held.contains_key(&(*from, *a)))
                    .collect(),
            },
            Request::Prove { address, nonce } => {
                if let Some(l) = &self.lie {
                    return Response::Proof {
                        hash: *blake3::keyed_hash(&nonce, l).as_bytes(),
                    };
                }
                match held.get(&(*from, address)) {
                    Some(b) => Response::Proof {
                        hash: *blake3::keyed_hash(&nonce, b).as_bytes(),
                    },
                    None => Response::Refused(Refusal::NotFound),
                }
            }
            Request::Delete { address } => Response::Deleted {
                existed: held.remove(&(*from, address)).is_some(),
            },
            Request::List { .. } | Request::PutRoot { .. } | Request::GetRoot { .. } => {
                Response::Refused(Refusal::Malformed)
            }
        }
    }
}

/// One network: an admin and members, each with its own files.
struct Net {
    _dirs: Vec<tempfile::TempDir>,
    admin: Arc<Membership>,
}

struct Node {
    net: Network,
    held: Arc<MemShards>,
    members: Arc<Membership>,
}

impl Node {
    fn peer(&self) -> PeerId {
        self.net.client().local_peer_id()
    }
}

fn start(
    keypair: identity::Keypair,
    members: Arc<Membership>,
    listen: &str,
    guard: GuardConfig,
    lie: Option<Vec<u8>>,
) -> Node {
    let held = Arc::new(MemShards {
        lie,
        ..MemShards::default()
    });
    let mut cfg = NetConfig::new(keypair, vec![listen.parse().unwrap()]);
    cfg.guard = guard;
    cfg.join_window = Duration::from_millis(800);
    let net = Network::start(cfg, members.clone(), held.clone()).unwrap();
    Node { net, held, members }
}

/// Admits `peer` to `admin`'s network as a storage member (an invite of
/// one use, taken at once).
fn admit(admin: &Membership, peer: &PeerId, name: &str) {
    let token = admin.invite(Duration::from_secs(60), 1, vec![]).unwrap();
    let (invite, _) = super::member::Invite::parse(&token).unwrap();
    admin.admit(&invite, peer, Role::Serve, name, &[]).unwrap();
}

/// Connects `a` to `b` (a request carrying `b`'s addresses).
fn connect(a: &Node, b: &Node) {
    let addrs = b.net.client().listeners().unwrap();
    let r = a.net.client().request(
        b.peer(),
        addrs,
        Request::Has {
            addresses: Vec::new(),
        },
        Duration::from_secs(10),
    );
    assert!(matches!(r, Ok(Response::Have { .. })), "{r:?}");
}

/// A network whose admin is the first of `n` nodes; the others are
/// admitted with an invite and given the roster (as a join would).
/// A member admitted to `net` that lies: every get and proof is answered
/// from `lie`, and it says it holds every shard. Its files' dir is kept
/// alive by the caller.
fn start_liar(net: &Net, lie: Vec<u8>) -> (Node, tempfile::TempDir) {
    let key = identity::Keypair::generate_ed25519();
    let liar_id = key.public().to_peer_id();
    admit(&net.admin, &liar_id, "liar");
    let d = tempfile::tempdir().unwrap();
    let liar_members = Membership::joined(
        MemberFiles::new(d.path()),
        net.admin.network().clone(),
        net.admin.signed(),
        &liar_id,
    )
    .unwrap();
    let liar = start(
        key,
        Arc::new(liar_members),
        "/ip4/127.0.0.1/tcp/0",
        GuardConfig::default(),
        Some(lie),
    );
    (liar, d)
}

fn network(n: usize, listen: &str, guard: GuardConfig) -> (Net, Vec<Node>) {
    let mut dirs = Vec::new();
    let keys: Vec<identity::Keypair> = (0..n)
        .map(|_| identity::Keypair::generate_ed25519())
        .collect();
    let d = tempfile::tempdir().unwrap();
    let admin = Arc::new(
        Membership::create(
            MemberFiles::new(d.path()),
            &keys[0].public().to_peer_id(),
            Role::Mount,
            "admin",
            &[],
        )
        .unwrap(),
    );
    dirs.push(d);
    let token = admin.invite(Duration::from_secs(60), 100, vec![]).unwrap();
    let (invite, _) = super::member::Invite::parse(&token).unwrap();
    let mut rosters = Vec::new();
    for k in &keys[1..] {
        let r = admin
            .admit(&invite, &k.public().to_peer_id(), Role::Serve, "box", &[])
            .unwrap();
        rosters.push(r);
    }
    let mut nodes = vec![start(
        keys[0].clone(),
        admin.clone(),
        listen,
        guard.clone(),
        None,
    )];
    for k in &keys[1..] {
        let d = tempfile::tempdir().unwrap();
        let m = Membership::joined(
            MemberFiles::new(d.path()),
            admin.network().clone(),
            admin.signed(),
            &k.public().to_peer_id(),
        )
        .unwrap();
        dirs.push(d);
        nodes.push(start(k.clone(), Arc::new(m), listen, guard.clone(), None));
    }
    // The admin node connects to every member (the roster carries no
    // addresses here), as members do at start.
    for n in &nodes[1..] {
        connect(&nodes[0], n);
    }
    (Net { _dirs: dirs, admin }, nodes)
}

fn round_trip(listen: &str) {
    let (_net, nodes) = network(2, listen, GuardConfig::default());
    let (a, b) = (nodes[0].net.client(), nodes[1].net.client());
    let addrs: Vec<Multiaddr> = b.listeners().unwrap();
    assert_eq!(addrs.len(), 1);
    let peer = b.local_peer_id();
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
    assert_eq!(nodes[1].held.held.lock().unwrap().len(), 1);
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
    assert_eq!(nodes[1].held.held.lock().unwrap().len(), 9);
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
    let (net, nodes) = network(1, "/ip4/127.0.0.1/tcp/0", GuardConfig::default());
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
    // A member (in the roster) whose machine went silent.
    let nobody = identity::Keypair::generate_ed25519().public().to_peer_id();
    admit(&net.admin, &nobody, "silent");
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let started = Instant::now();
    let r = nodes[0].net.client().request(
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

/// Joins `admin`'s node with `token` from a fresh device; the answer and
/// how long it took.
fn try_join(token: &str) -> (Result<super::swarm::Welcome, NetError>, Duration) {
    let key = identity::Keypair::generate_ed25519();
    let t = Instant::now();
    let r = join(
        &key,
        token,
        Role::Serve,
        "new",
        &[],
        Duration::from_secs(10),
    );
    (r, t.elapsed())
}

#[test]
fn tokens_admit_until_used_up_and_forged_or_expired_ones_fail_fast() {
    let (net, nodes) = network(1, "/ip4/127.0.0.1/tcp/0", GuardConfig::default());
    let me = nodes[0].peer();
    let addrs = nodes[0].net.client().listeners().unwrap();
    let boot = vec![(me, addrs)];
    let token = net
        .admin
        .invite(Duration::from_secs(60), 2, boot.clone())
        .unwrap();
    for _ in 0..2 {
        let (r, took) = try_join(&token);
        let w = r.unwrap();
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(&w.network, net.admin.network());
    }
    let (r, took) = try_join(&token);
    assert!(
        matches!(
            r,
            Err(NetError::JoinRefused(super::codec::JoinRefusal::UsedUp))
        ),
        "{:?}",
        r.err()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(net.admin.roster().members.len(), 3);

    // A token signed by another admin key but naming this network: the
    // admin node refuses it (a joiner alone cannot tell).
    let other = tempfile::tempdir().unwrap();
    let fake = Membership::create(
        MemberFiles::new(other.path()),
        &PeerId::random(),
        Role::Mount,
        "x",
        &[],
    )
    .unwrap();
    let forged = fake
        .invite(Duration::from_secs(60), 1, boot.clone())
        .unwrap();
    let (r, took) = try_join(&forged);
    assert!(
        matches!(
            r,
            Err(NetError::JoinRefused(
                super::codec::JoinRefusal::OtherNetwork
            ))
        ),
        "{:?}",
        r.err()
    );
    assert!(took < Duration::from_secs(5));
    // Altered bytes: refused before dialling anyone.
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let altered: String = chars.into_iter().collect();
    let (r, took) = try_join(&altered);
    assert!(matches!(r, Err(NetError::Member(_))), "{:?}", r.err());
    assert!(took < Duration::from_secs(1));
    let (r, _) = try_join("pangea-invite-1.AAAA");
    assert!(matches!(r, Err(NetError::Member(MemberError::Malformed))));
    // Expired: refused by the joiner at once.
    let old = net.admin.invite(Duration::from_millis(1), 1, boot).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let (r, took) = try_join(&old);
    assert!(
        matches!(r, Err(NetError::Member(MemberError::Expired(_)))),
        "{:?}",
        r.err()
    );
    assert!(took < Duration::from_secs(1));
}

#[test]
fn a_stranger_cannot_store_or_fetch_and_is_banned_then_cut_off() {
    let (_net, nodes) = network(2, "/ip4/127.0.0.1/tcp/0", GuardConfig::default());
    let target = &nodes[1];
    let target_id = target.peer();
    let addrs = target.net.client().listeners().unwrap();
    // The stranger's own network lists the target (so its client will
    // send); the target's roster does not list the stranger.
    let key = identity::Keypair::generate_ed25519();
    let d = tempfile::tempdir().unwrap();
    let own = Membership::create(
        MemberFiles::new(d.path()),
        &key.public().to_peer_id(),
        Role::Mount,
        "stranger",
        &[],
    )
    .unwrap();
    admit(&own, &target_id, "t");
    let stranger = start(
        key,
        Arc::new(own),
        "/ip4/127.0.0.1/tcp/0",
        GuardConfig::default(),
        None,
    );
    let c = stranger.net.client();
    let bytes = vec![7u8; 1000];
    let put = Request::Put {
        address: ShardId::of(&bytes),
        bytes,
    };
    let r = c.request(target_id, addrs.clone(), put, Duration::from_secs(10));
    assert_eq!(r.unwrap(), Response::Refused(Refusal::NotMember));
    assert!(target.held.held.lock().unwrap().is_empty());
    for _ in 0..6 {
        let _ = c.request(
            target_id,
            addrs.clone(),
            Request::Get {
                address: ShardId([1; 32]),
            },
            Duration::from_secs(5),
        );
    }
    assert!(target.net.guard().is_banned(&stranger.peer()));
    // Banned: its connections are refused at the door.
    let r = c.request(
        target_id,
        addrs,
        Request::Get {
            address: ShardId([1; 32]),
        },
        Duration::from_secs(5),
    );
    assert!(r.is_err(), "{r:?}");
    assert!(target.net.guard().totals().banned >= 1);
}

#[test]
fn a_removed_member_is_cut_off_within_two_seconds_everywhere() {
    let (net, nodes) = network(3, "/ip4/127.0.0.1/tcp/0", GuardConfig::default());
    let gone = nodes[2].peer();
    let b = nodes[1].peer();
    let b_addrs = nodes[1].net.client().listeners().unwrap();
    // Everyone connected (members dial each other), and the removed member
    // can fetch from b.
    let bytes = vec![3u8; 4096];
    let address = ShardId::of(&bytes);
    let put = Request::Put {
        address,
        bytes: bytes.clone(),
    };
    let c = nodes[2].net.client();
    assert_eq!(
        c.request(b, b_addrs.clone(), put, Duration::from_secs(10))
            .unwrap(),
        Response::Stored
    );
    net.admin.remove(&gone).unwrap();
    let t = Instant::now();
    nodes[0].net.client().push_roster().unwrap();
    loop {
        let seen = nodes[1].members.is_revoked(&gone);
        let connected = nodes[1]
            .net
            .client()
            .peers()
            .unwrap()
            .iter()
            .any(|p| p.peer == gone.to_string() && p.connected);
        if seen && !connected {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "not cut off in 2 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its requests are refused (at the door, or as a non-member).
    let r = c.request(b, b_addrs, Request::Get { address }, Duration::from_secs(5));
    assert!(
        !matches!(r, Ok(Response::Shard { .. })),
        "a removed member fetched a shard: {r:?}"
    );
}

#[test]
fn a_flood_is_throttled_then_banned() {
    let guard = GuardConfig {
        requests_per_s: 20,
        request_burst: 20,
        ..GuardConfig::default()
    };
    let (_net, nodes) = network(2, "/ip4/127.0.0.1/tcp/0", guard);
    let (a, b) = (nodes[0].net.client(), nodes[1].peer());
    let addrs = nodes[1].net.client().listeners().unwrap();
    let mut busy = 0;
    let mut failed = 0;
    for _ in 0..60 {
        match a.request(
            b,
            addrs.clone(),
            Request::Has {
                addresses: vec![ShardId([0; 32])],
            },
            Duration::from_secs(5),
        ) {
            Ok(Response::Refused(Refusal::Busy)) => busy += 1,
            Ok(_) => {}
            Err(_) => failed += 1,
        }
    }
    assert!(busy >= 1, "never throttled");
    assert!(nodes[1].net.guard().is_banned(&nodes[0].peer()));
    assert!(failed >= 1, "a banned peer's requests still went through");
    let t = nodes[1].net.guard().totals();
    assert!(t.throttled >= 1 && t.banned == 1, "{t:?}");
}

#[test]
fn a_read_goes_around_a_lying_holder_and_counts_it() {
    use crate::ces::{Ces, CompressionPolicy, Hint, MasterKey, ShardParams};
    use crate::chunks::{ChunkRecord, Holder, LocalShards, Location, ShardSource, ShardsAt};
    use crate::placement::PeerTable;
    use crate::store::{Batch, Cf, ChunkFiles, Kv, MemKv};

    // Two storage members: one lies about every shard it is asked for.
    let (net, mut nodes) = network(2, "/ip4/127.0.0.1/tcp/0", GuardConfig::default());
    let honest = nodes.remove(1);
    let (liar, _liar_dir) = start_liar(&net, vec![0u8; 1]);
    connect(&nodes[0], &liar);
    let ces = Ces::new(
        &MasterKey::generate().unwrap(),
        CompressionPolicy::default(),
    )
    .unwrap();
    let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let enc = ces
        .encode(&plain, ShardParams::new(2, 2).unwrap(), &Hint::default())
        .unwrap();
    let shards: Vec<Vec<u8>> = enc.shards().map(<[u8]>::to_vec).collect();
    let (manifest, _) = enc.into_parts();
    // The honest member holds shards 1-3 (stored by the admin node).
    let admin_client = nodes[0].net.client();
    let honest_addrs = honest.net.client().listeners().unwrap();
    for s in &shards[1..] {
        let put = Request::Put {
            address: ShardId::of(s),
            bytes: s.clone(),
        };
        let r = admin_client.request(
            honest.peer(),
            honest_addrs.clone(),
            put,
            Duration::from_secs(10),
        );
        assert_eq!(r.unwrap(), Response::Stored);
    }
    // The record: shard 0 on the liar, 1-3 on the honest member; no local copy.
    let kv: Arc<dyn Kv> = Arc::new(MemKv::new());
    let peers = PeerTable::new(kv.clone());
    let mut b = Batch::new();
    let mut new = Default::default();
    let nl = peers
        .number(
            &mut b,
            &mut new,
            &crate::placement::PeerId(liar.peer().to_bytes()),
        )
        .unwrap();
    let nh = peers
        .number(
            &mut b,
            &mut new,
            &crate::placement::PeerId(honest.peer().to_bytes()),
        )
        .unwrap();
    let mut holders = vec![Holder { shard: 0, peer: nl }];
    holders.extend((1..4).map(|i| Holder { shard: i, peer: nh }));
    let rec = ChunkRecord {
        refs: 1,
        location: Location::File,
        holders,
        manifest: manifest.encode(),
    };
    b.put(Cf::Chunk, manifest.chunk_id.as_bytes(), &rec.encode());
    kv.write(b, false).unwrap();
    let files = tempfile::tempdir().unwrap();
    let local = LocalShards::new(
        kv.clone(),
        Arc::new(ChunkFiles::open(files.path()).unwrap()),
    );
    let stats = Arc::new(super::remote::RemoteStats::default());
    let source = super::remote::RemoteShards::new(
        local,
        kv,
        admin_client,
        net.admin.clone(),
        Duration::from_secs(5),
        stats.clone(),
        Arc::new(crate::placement::PeerBook::in_memory()),
    );
    let at = ShardsAt {
        chunk: manifest.chunk_id,
        location: Location::File,
        file: rec.file(),
    };
    let s = manifest.shard_len as usize;
    let t = Instant::now();
    let f = source
        .get(
            &at,
            s,
            0..2,
            Vec::new(),
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(f.remote);
    assert_eq!(
        f.shard(0, s).unwrap(),
        &shards[0][..],
        "rebuilt around the liar"
    );
    assert_eq!(f.shard(1, s).unwrap(), &shards[1][..]);
    assert_eq!(
        stats.bad_shards.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the wrong shard is counted"
    );
    assert_eq!(source.bad_shards(), vec![(liar.peer().to_string(), 1)]);
    let back = ces
        .decode_data_shards_at(&manifest, f.bytes, f.start)
        .unwrap();
    assert_eq!(back, plain);
}

#[test]
fn concurrent_joins_count_every_use() {
    let (net, nodes) = network(1, "/ip4/127.0.0.1/tcp/0", GuardConfig::default());
    let boot = vec![(nodes[0].peer(), nodes[0].net.client().listeners().unwrap())];
    let token = net.admin.invite(Duration::from_secs(60), 3, boot).unwrap();
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..5 {
            s.spawn(|| {
                if try_join(&token).0.is_ok() {
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(ok.into_inner(), 3, "a use was lost or counted twice");
    assert_eq!(net.admin.roster().members.len(), 4);
}

#[test]
fn mdns_is_off_unless_asked_for() {
    // Multicast never leaves this machine in tests: only the defaults are
    // checked here (`--mdns` turns it on).
    let c = NetConfig::new(identity::Keypair::generate_ed25519(), Vec::new());
    assert!(!c.mdns);
    assert!(!super::online::NetSetup::new(Role::Serve).mdns);
    assert!(!super::online::NetSetup::new(Role::Mount).mdns);
}

#[test]
fn a_peer_that_claims_shards_it_dropped_is_caught_by_the_challenge() {
    use crate::placement::{PeerBook, ShardTransport};
    let (net, nodes) = network(2, "/ip4/127.0.0.1/tcp/0", GuardConfig::default());
    let (liar, _liar_dir) = start_liar(&net, vec![0u8; 16]);
    connect(&nodes[0], &liar);
    connect(&nodes[0], &nodes[1]);
    let transport = super::remote::NetTransport::new(
        nodes[0].net.client(),
        net.admin.clone(),
        Arc::new(super::remote::RemoteStats::default()),
        Arc::new(PeerBook::in_memory()),
    );
    let shard = vec![42u8; 300_000];
    let address = ShardId::of(&shard);
    let put = Request::Put {
        address,
        bytes: shard.clone(),
    };
    let honest = &nodes[1];
    assert_eq!(
        nodes[0]
            .net
            .client()
            .request(honest.peer(), Vec::new(), put, Duration::from_secs(10))
            .unwrap(),
        Response::Stored
    );
    let nonce = [3u8; 32];
    let want = *blake3::keyed_hash(&nonce, &shard).as_bytes();
    let as_placement = |p: PeerId| crate::placement::PeerId(p.to_bytes());
    // The honest holder proves it; another nonce gives another answer.
    assert_eq!(
        transport.prove(&as_placement(honest.peer()), &address, &nonce),
        Ok(Some(want))
    );
    let other = transport
        .prove(&as_placement(honest.peer()), &address, &[4u8; 32])
        .unwrap()
        .unwrap();
    assert_ne!(other, want, "a proof depends on the nonce");
    // The liar says it holds the shard, but cannot prove it.
    let has = nodes[0].net.client().request(
        liar.peer(),
        Vec::new(),
        Request::Has {
            addresses: vec![address],
        },
        Duration::from_secs(5),
    );
    assert_eq!(has.unwrap(), Response::Have { held: vec![true] });
    let lie = transport
        .prove(&as_placement(liar.peer()), &address, &nonce)
        .unwrap()
        .unwrap();
    assert_ne!(lie, want, "the liar's proof must not pass");
    // Its copy fetched is caught by the address check too.
    assert_eq!(
        transport.fetch(&as_placement(liar.peer()), &address),
        Ok(None)
    );
    assert_eq!(
        transport.fetch(&as_placement(honest.peer()), &address),
        Ok(Some(shard.clone()))
    );
    // A holder that dropped the shard says so.
    honest.held.held.lock().unwrap().clear();
    assert_eq!(
        transport.prove(&as_placement(honest.peer()), &address, &nonce),
        Ok(None)
    );
}
