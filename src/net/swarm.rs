//! One task owns the libp2p `Swarm`; the rest of the node holds a
//! [`NetClient`] (cloneable, bounded command channel, a reply channel per
//! call, a deadline on every call). The client's methods block: they are
//! for the synchronous core and are never called from the runtime.
//!
//! Transports: TCP (noise, yamux) and QUIC; identify and ping; connection
//! limits; two request-response protocols: the shard protocol
//! (`/pangea/shard/1`, [`ShardCodec`]) and membership (`/pangea/member/1`,
//! [`MemberCodec`]: join, roster sync).
//!
//! Membership is enforced here, alike on TCP and QUIC:
//! * at connection time ([`Gate`]): handshakes per IP are rate-limited;
//!   banned and removed peers are refused;
//! * a stranger (not in the roster) may only ask to join, and its
//!   connection is closed after [`NetConfig::join_window`];
//! * on every shard request: the asker must be a member now, within its
//!   rate limits ([`Guard`]), and this node's roster must have been
//!   compared with another member's since it started;
//! * a newer roster closes the connections of everyone it no longer names.
//!
//! Inbound shard requests are answered by a [`ShardService`] on the
//! runtime's blocking threads.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, identity, noise, ping,
    tcp, yamux,
};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::mpsc;

use super::codec::{JoinRefusal, MemberCodec, MemberRequest, MemberResponse, ShardCodec};
use super::gate::Gate;
use super::guard::{Guard, GuardConfig};
use super::member::{Invite, MemberError, NetworkInfo, Role, SignedRoster};
use super::roster::Membership;
use super::task::Task;
use super::wire::{MAX_SHARD_LEN, PROTOCOL, Request, Response};

/// Commands waiting for the swarm task: a full queue makes callers wait
/// (bounded by their deadline).
const COMMAND_QUEUE: usize = 256;
/// Streams of the shard protocol open at once per connection.
pub(super) const MAX_STREAMS: usize = 64;
/// Slowest transfer rate a request is given time for (a 4 MiB shard on a
/// slow home uplink), and the shortest request timeout.
const SLOWEST_RATE: usize = 256 << 10;
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `start` waits for the listeners to be up.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);
/// The membership protocol's name.
pub const MEMBER_PROTOCOL: &str = "/pangea/member/1";
/// How often the task looks after its connections (strangers' windows,
/// members to dial).
pub(super) const TICK: Duration = Duration::from_millis(250);
/// How often an unconnected member is dialled again.
pub(super) const REDIAL: Duration = Duration::from_secs(3);

/// Answers inbound shard requests (a storage node's store; tests' maps).
/// Called on a blocking thread: it may do disk I/O. Only members within
/// their limits reach it.
pub trait ShardService: Send + Sync + 'static {
    fn serve(&self, from: &PeerId, request: Request) -> Response;
}

/// Why a network call failed.
#[derive(Debug, Error)]
pub enum NetError {
    #[error("no answer within {0:?}")]
    Deadline(Duration),
    #[error("the network task has stopped")]
    Stopped,
    #[error("peer {peer}: {reason}")]
    Peer { peer: PeerId, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("peer {0} is not a member of the network")]
    NotMember(PeerId),
    #[error("joining refused: {0}")]
    JoinRefused(JoinRefusal),
    #[error(transparent)]
    Member(#[from] MemberError),
}

/// How to start the network.
pub struct NetConfig {
    /// This device's identity (one Ed25519 key per device).
    pub keypair: identity::Keypair,
    /// Where to listen (`/ip4/127.0.0.1/tcp/0`, `/ip4/0.0.0.0/udp/4001/quic-v1`...).
    pub listen: Vec<Multiaddr>,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Rate limits and bans.
    pub guard: GuardConfig,
    /// How long a stranger's connection may stay open to ask to join.
    pub join_window: Duration,
    /// Look for members on the local network with mDNS (multicast on
    /// every interface). Off unless asked for (`--mdns`); never in tests.
    pub mdns: bool,
    /// The failure domain this node announces (`--zone`), sent in
    /// identify's agent version as `zone=NAME`.
    pub zone: Option<String>,
    /// A simulated slow link on every TCP connection (`--simulate-delay`;
    /// tests and benchmarks). QUIC is off while it is set.
    pub impair: Option<crate::net::impair::Impairment>,
}

impl NetConfig {
    pub fn new(keypair: identity::Keypair, listen: Vec<Multiaddr>) -> NetConfig {
        NetConfig {
            keypair,
            listen,
            idle_timeout: Duration::from_secs(300),
            guard: GuardConfig::default(),
            join_window: Duration::from_secs(10),
            mdns: false,
            zone: None,
            impair: None,
        }
    }
}

/// A peer as the swarm sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerState {
    pub peer: String,
    pub connected: bool,
    pub rtt_ms: Option<f64>,
    pub addr: Option<String>,
    /// The zone it announces (`--zone`), if any.
    pub zone: Option<String>,
}

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) gate: Gate,
    pub(super) limits: connection_limits::Behaviour,
    pub(super) shard: request_response::Behaviour<ShardCodec>,
    pub(super) member: request_response::Behaviour<MemberCodec>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    /// Only with [`NetConfig::mdns`]: members found on the local network
    /// get their addresses added (strangers found are ignored).
    pub(super) mdns: libp2p::swarm::behaviour::toggle::Toggle<libp2p::mdns::tokio::Behaviour>,
}

pub(super) type Reply<T> = SyncSender<Result<T, NetError>>;

pub(super) enum Command {
    Request {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Request,
        reply: Reply<Response>,
    },
    Listeners {
        reply: Reply<Vec<Multiaddr>>,
    },
    Peers {
        reply: Reply<Vec<PeerState>>,
    },
    /// The roster changed here: send it to every connected member and close
    /// the connections of those it no longer names.
    PushRoster {
        reply: Reply<()>,
    },
    /// Join with an invite (the join swarm only).
    Join {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: MemberRequest,
        reply: Reply<MemberResponse>,
    },
}

/// A handle on the network task (see the module documentation).
#[derive(Clone)]
pub struct NetClient {
    tx: mpsc::Sender<Command>,
    local: PeerId,
}

/// The running network: its runtime and task. Dropping it stops both.
pub struct Network {
    client: NetClient,
    guard: Arc<Guard>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn runtime() -> Result<tokio::runtime::Runtime, NetError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pangea-net")
        .enable_all()
        .build()
        .map_err(|e| NetError::Transport(e.to_string()))
}

impl Network {
    /// Starts the swarm of a member of `members`' network on its own
    /// runtime, listening on `cfg.listen`; returns once every listener is
    /// up. Members are dialled at once and kept connected.
    pub fn start(
        cfg: NetConfig,
        members: Arc<Membership>,
        service: Arc<dyn ShardService>,
    ) -> Result<Network, NetError> {
        let runtime = runtime()?;
        let local = cfg.keypair.public().to_peer_id();
        let guard = Arc::new(Guard::new(cfg.guard.clone()));
        // Transports and listeners register with the runtime's reactor.
        let entered = runtime.enter();
        let mut swarm = build_swarm(&cfg, guard.clone(), Some(members.clone()))?;
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let task = Task::new(
            swarm,
            local,
            Some(members),
            guard.clone(),
            Some(service),
            cfg.join_window,
        );
        runtime.spawn(task.run(rx));
        drop(entered);
        let net = Network {
            client: NetClient { tx, local },
            guard,
            runtime: Some(runtime),
        };
        let deadline = Instant::now() + LISTEN_DEADLINE;
        while net.client.listeners()?.len() < cfg.listen.len() {
            if Instant::now() > deadline {
                return Err(NetError::Deadline(LISTEN_DEADLINE));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(net)
    }

    /// A handle for calls.
    pub fn client(&self) -> NetClient {
        self.client.clone()
    }

    /// The guard's counters.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// What a joiner gets: the network and its first roster.
pub struct Welcome {
    pub network: NetworkInfo,
    pub roster: SignedRoster,
}

/// Joins a network with `token`: dials the admin nodes the token names
/// (with this device's `keypair`) and asks to be admitted as `role`,
/// reachable at `addrs`. Everything that can be checked alone (format,
/// signature, expiry) is checked first; the whole exchange has `deadline`.
pub fn join(
    keypair: &identity::Keypair,
    token: &str,
    role: Role,
    name: &str,
    addrs: &[Multiaddr],
    deadline: Duration,
) -> Result<Welcome, NetError> {
    let (invite, body) = Invite::parse(token)?;
    let targets: Vec<(PeerId, Vec<Multiaddr>)> = body
        .bootstrap
        .iter()
        .filter_map(|(peer, peer_addrs)| {
            Some((
                PeerId::from_bytes(peer).ok()?,
                peer_addrs.iter().filter_map(|a| a.parse().ok()).collect(),
            ))
        })
        .collect();
    if targets.is_empty() {
        return Err(NetError::Transport(
            "the invite names no node to dial".into(),
        ));
    }
    let request = MemberRequest::Join {
        invite,
        role,
        name: name.to_owned(),
        addrs: addrs.iter().map(|a| a.to_string()).collect(),
    };
    match ask_as_stranger(keypair, &targets, |_| request.clone(), deadline)?.1 {
        MemberResponse::Welcome { network, roster } => Ok(Welcome { network, roster }),
        MemberResponse::Refused(why) => Err(NetError::JoinRefused(why)),
        MemberResponse::Roster { .. } | MemberResponse::Recovered { .. } => {
            Err(NetError::Transport("unexpected answer to a join".into()))
        }
    }
}

/// Asks the nodes `targets`, in turn, a membership request as a stranger
/// with this device's `keypair` (on a network of its own, dropped when
/// this returns), until one answers; the whole exchange has `deadline`.
/// The request must be made for each target (`request(peer)`: a recovery
/// proof names its asker, not its answerer, but a join names neither).
pub fn ask_as_stranger(
    keypair: &identity::Keypair,
    targets: &[(PeerId, Vec<Multiaddr>)],
    request: impl Fn(&PeerId) -> MemberRequest,
    deadline: Duration,
) -> Result<(PeerId, MemberResponse), NetError> {
    let runtime = runtime()?;
    let local = keypair.public().to_peer_id();
    let guard = Arc::new(Guard::new(GuardConfig::default()));
    let cfg = NetConfig::new(keypair.clone(), Vec::new());
    let entered = runtime.enter();
    let swarm = build_swarm(&cfg, guard.clone(), None)?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let task = Task::new(swarm, local, None, guard.clone(), None, cfg.join_window);
    runtime.spawn(task.run(rx));
    drop(entered);
    let net = Network {
        client: NetClient { tx, local },
        guard,
        runtime: Some(runtime),
    };
    let client = net.client();
    let until = Instant::now() + deadline;
    let mut last = NetError::Transport("no node to ask".into());
    // One silent node does not use up the others' time.
    let share = (deadline / u32::try_from(targets.len()).unwrap_or(u32::MAX).max(1))
        .max(Duration::from_secs(5));
    for (peer, addresses) in targets {
        let left = until.saturating_duration_since(Instant::now()).min(share);
        if left.is_zero() {
            break;
        }
        let request = request(peer);
        match client.call(left, |reply| Command::Join {
            peer: *peer,
            addresses: addresses.clone(),
            request,
            reply,
        }) {
            Ok(answer) => return Ok((*peer, answer)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn build_swarm(
    cfg: &NetConfig,
    guard: Arc<Guard>,
    members: Option<Arc<Membership>>,
) -> Result<Swarm<Behaviour>, NetError> {
    let transport = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let timeout =
        MIN_REQUEST_TIMEOUT.max(Duration::from_secs((MAX_SHARD_LEN / SLOWEST_RATE) as u64));
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(64))
        .with_max_established_incoming(Some(256))
        .with_max_established_per_peer(Some(4));
    let mdns = if cfg.mdns {
        Some(
            libp2p::mdns::tokio::Behaviour::new(
                libp2p::mdns::Config::default(),
                cfg.keypair.public().to_peer_id(),
            )
            .map_err(|e| NetError::Transport(format!("mdns: {e}")))?,
        )
    } else {
        None
    };
    let behaviour = |key: &identity::Keypair| Behaviour {
        gate: Gate { guard, members },
        limits: connection_limits::Behaviour::new(limits),
        shard: request_response::Behaviour::new(
            [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(timeout)
                .with_max_concurrent_streams(MAX_STREAMS),
        ),
        member: request_response::Behaviour::new(
            [(StreamProtocol::new(MEMBER_PROTOCOL), ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(10))
                .with_max_concurrent_streams(8),
        ),
        identify: identify::Behaviour::new(
            identify::Config::new("/pangea/id/1".into(), key.public()).with_agent_version(
                match &cfg.zone {
                    Some(z) => format!("pangea/{} zone={z}", env!("CARGO_PKG_VERSION")),
                    None => format!("pangea/{}", env!("CARGO_PKG_VERSION")),
                },
            ),
        ),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5))),
        mdns: mdns.into(),
    };
    // Requests open a stream each: the dialer names its one protocol and
    // sends at once (no round trip for the negotiation), so a request
    // costs one round trip, not two. Every member speaks every protocol.
    let swarm_config = |c: libp2p::swarm::Config| {
        c.with_idle_connection_timeout(cfg.idle_timeout)
            .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
    };
    let builder = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone()).with_tokio();
    let swarm = match cfg.impair {
        None => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| transport(&e))?
            .with_quic()
            .with_behaviour(behaviour)
            .map_err(|e| transport(&e))?
            .with_swarm_config(swarm_config)
            .build(),
        Some(impairment) => builder
            .with_other_transport(|key| {
                use libp2p::core::Transport as _;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .map(move |s, _| crate::net::impair::Delayed::new(s, impairment))
                        .upgrade(libp2p::core::upgrade::Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()),
                )
            })
            .map_err(|e| transport(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| transport(&e))?
            .with_swarm_config(swarm_config)
            .build(),
    };
    Ok(swarm)
}

impl NetClient {
    /// This device's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Sends `request` to member `peer` (dialing `addresses` and the
    /// roster's addresses if not connected) and waits for its answer until
    /// `deadline`.
    pub fn request(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Request,
        deadline: Duration,
    ) -> Result<Response, NetError> {
        self.call(deadline, |reply| Command::Request {
            peer,
            addresses,
            request,
            reply,
        })
    }

    /// The addresses the node listens on.
    pub fn listeners(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call(Duration::from_secs(5), |reply| Command::Listeners { reply })
    }

    /// Every other member: connected or not, and the last RTT.
    pub fn peers(&self) -> Result<Vec<PeerState>, NetError> {
        self.call(Duration::from_secs(5), |reply| Command::Peers { reply })
    }

    /// The roster changed on this node: send it to every connected member
    /// and close what it no longer allows.
    pub fn push_roster(&self) -> Result<(), NetError> {
        self.call(Duration::from_secs(5), |reply| Command::PushRoster {
            reply,
        })
    }

    fn call<T>(
        &self,
        deadline: Duration,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, NetError> {
        let (reply, rx): (Reply<T>, Receiver<Result<T, NetError>>) = sync_channel(1);
        let until = Instant::now() + deadline;
        let mut cmd = make(reply);
        loop {
            match self.tx.try_send(cmd) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(NetError::Stopped),
                Err(mpsc::error::TrySendError::Full(c)) => {
                    if Instant::now() > until {
                        return Err(NetError::Deadline(deadline));
                    }
                    cmd = c;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(NetError::Deadline(deadline)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(NetError::Stopped),
        }
    }
}
