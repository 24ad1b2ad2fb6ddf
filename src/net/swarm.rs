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

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, multiaddr::Protocol};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, identity, noise, ping,
    tcp, yamux,
};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::codec::{JoinRefusal, MemberCodec, MemberRequest, MemberResponse, ShardCodec};
use super::guard::{Guard, GuardConfig, Verdict};
use super::member::{Invite, MemberError, NetworkInfo, Role, SignedRoster};
use super::roster::Membership;
use super::wire::{MAX_SHARD_LEN, PROTOCOL, Refusal, Request, Response};

/// Commands waiting for the swarm task: a full queue makes callers wait
/// (bounded by their deadline).
const COMMAND_QUEUE: usize = 256;
/// Streams of the shard protocol open at once per connection.
const MAX_STREAMS: usize = 64;
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
const TICK: Duration = Duration::from_millis(250);
/// How often an unconnected member is dialled again.
const REDIAL: Duration = Duration::from_secs(3);

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
}

impl NetConfig {
    pub fn new(keypair: identity::Keypair, listen: Vec<Multiaddr>) -> NetConfig {
        NetConfig {
            keypair,
            listen,
            idle_timeout: Duration::from_secs(300),
            guard: GuardConfig::default(),
            join_window: Duration::from_secs(10),
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
}

/// Refuses connections at the door: too many handshakes from one IP,
/// banned peers, removed members.
struct Gate {
    guard: Arc<Guard>,
    members: Option<Arc<Membership>>,
}

impl Gate {
    fn enforce(&self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        #[derive(Debug, Error)]
        #[error("refused: banned or removed")]
        struct Refused;
        let removed = self.members.as_ref().is_some_and(|m| m.is_revoked(peer));
        if removed || self.guard.is_banned(peer) {
            return Err(ConnectionDenied::new(Refused));
        }
        Ok(())
    }
}

fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        #[derive(Debug, Error)]
        #[error("too many handshakes from this address")]
        struct TooMany;
        match ip_of(remote) {
            Some(ip) if !self.guard.allow_handshake(ip) => Err(ConnectionDenied::new(TooMany)),
            _ => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.enforce(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(p) = peer {
            self.enforce(&p)?;
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.enforce(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gate: Gate,
    limits: connection_limits::Behaviour,
    shard: request_response::Behaviour<ShardCodec>,
    member: request_response::Behaviour<MemberCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

type Reply<T> = SyncSender<Result<T, NetError>>;

enum Command {
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
        let task = Task {
            swarm,
            local,
            members: Some(members),
            guard: guard.clone(),
            service: Some(service),
            join_window: cfg.join_window,
            pending: HashMap::new(),
            pending_member: HashMap::new(),
            connected: HashMap::new(),
            strangers: HashMap::new(),
            rtt: HashMap::new(),
            last_dial: HashMap::new(),
        };
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
    let runtime = runtime()?;
    let local = keypair.public().to_peer_id();
    let guard = Arc::new(Guard::new(GuardConfig::default()));
    let cfg = NetConfig::new(keypair.clone(), Vec::new());
    let entered = runtime.enter();
    let swarm = build_swarm(&cfg, guard.clone(), None)?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let task = Task {
        swarm,
        local,
        members: None,
        guard,
        service: None,
        join_window: cfg.join_window,
        pending: HashMap::new(),
        pending_member: HashMap::new(),
        connected: HashMap::new(),
        strangers: HashMap::new(),
        rtt: HashMap::new(),
        last_dial: HashMap::new(),
    };
    runtime.spawn(task.run(rx));
    drop(entered);
    let client = NetClient { tx, local };
    let until = Instant::now() + deadline;
    let mut last = NetError::Transport("the invite names no node to dial".into());
    let net = Network {
        client: client.clone(),
        guard: Arc::new(Guard::new(GuardConfig::default())),
        runtime: Some(runtime),
    };
    for (peer, peer_addrs) in &body.bootstrap {
        let Ok(peer) = PeerId::from_bytes(peer) else {
            continue;
        };
        let addresses: Vec<Multiaddr> = peer_addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let request = MemberRequest::Join {
            invite: invite.clone(),
            role,
            name: name.to_owned(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        };
        match client.call(left, |reply| Command::Join {
            peer,
            addresses,
            request,
            reply,
        }) {
            Ok(MemberResponse::Welcome { network, roster }) => {
                drop(net);
                return Ok(Welcome { network, roster });
            }
            Ok(MemberResponse::Refused(why)) => return Err(NetError::JoinRefused(why)),
            Ok(MemberResponse::Roster { .. }) => {
                last = NetError::Transport("unexpected answer to a join".into());
            }
            Err(e) => last = e,
        }
    }
    drop(net);
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
    let swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport(&e))?
        .with_quic()
        .with_behaviour(|key| Behaviour {
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
            identify: identify::Behaviour::new(identify::Config::new(
                "/pangea/id/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5))),
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_timeout))
        .build();
    Ok(swarm)
}

/// What a finished inbound request sends back from a blocking thread.
enum Done {
    Shard(PeerId, ResponseChannel<Response>, Response),
    Member(PeerId, ResponseChannel<MemberResponse>, MemberResponse, bool),
}

struct Task {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    members: Option<Arc<Membership>>,
    guard: Arc<Guard>,
    service: Option<Arc<dyn ShardService>>,
    join_window: Duration,
    pending: HashMap<OutboundRequestId, Reply<Response>>,
    pending_member: HashMap<OutboundRequestId, Option<Reply<MemberResponse>>>,
    /// Connected peers: since when, and the remote address.
    connected: HashMap<PeerId, (Instant, Multiaddr)>,
    /// Connected peers that are not members, and when they connected.
    strangers: HashMap<PeerId, Instant>,
    rtt: HashMap<PeerId, Duration>,
    last_dial: HashMap<PeerId, Instant>,
}

fn request_size(r: &Request) -> usize {
    match r {
        Request::Put { bytes, .. } => bytes.len(),
        _ => 64,
    }
}

impl Task {
    /// The task: commands in, events out, until every client is gone.
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(MAX_STREAMS);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(cmd) => self.command(cmd),
                },
                Some(done) = done_rx.recv() => self.answer(done),
                _ = tick.tick() => self.tick(),
                event = self.swarm.select_next_some() => self.event(event, &done_tx),
            }
        }
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.members.as_ref().is_some_and(|m| m.is_member(peer))
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Request {
                peer,
                mut addresses,
                request,
                reply,
            } => {
                if !self.is_member(&peer) {
                    let _ = reply.try_send(Err(NetError::NotMember(peer)));
                    return;
                }
                if let Some(m) = &self.members {
                    addresses.extend(m.addrs(&peer));
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .shard
                    .send_request_with_addresses(&peer, request, addresses);
                self.pending.insert(id, reply);
            }
            Command::Listeners { reply } => {
                let _ = reply.try_send(Ok(self.swarm.listeners().cloned().collect()));
            }
            Command::Peers { reply } => {
                let mut out = Vec::new();
                if let Some(m) = &self.members {
                    for (p, _) in m.others(&self.local) {
                        let c = self.connected.get(&p);
                        out.push(PeerState {
                            peer: p.to_string(),
                            connected: c.is_some(),
                            rtt_ms: self.rtt.get(&p).map(|d| d.as_secs_f64() * 1000.0),
                            addr: c.map(|(_, a)| a.to_string()),
                        });
                    }
                }
                let _ = reply.try_send(Ok(out));
            }
            Command::PushRoster { reply } => {
                self.push_roster();
                self.enforce_roster();
                let _ = reply.try_send(Ok(()));
            }
            Command::Join {
                peer,
                addresses,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .member
                    .send_request_with_addresses(&peer, request, addresses);
                self.pending_member.insert(id, Some(reply));
            }
        }
    }

    /// Sends our roster to every connected member.
    fn push_roster(&mut self) {
        let Some(m) = self.members.clone() else {
            return;
        };
        let signed = m.signed();
        let peers: Vec<PeerId> = self.connected.keys().copied().collect();
        for p in peers {
            if m.is_member(&p) {
                self.sync_with(p, signed.clone());
            }
        }
    }

    fn sync_with(&mut self, peer: PeerId, roster: SignedRoster) {
        let id = self
            .swarm
            .behaviour_mut()
            .member
            .send_request(&peer, MemberRequest::Sync { roster });
        self.pending_member.insert(id, None);
    }

    /// Closes the connections of connected peers the roster does not name
    /// (they may stay while a stranger's join window is open).
    fn enforce_roster(&mut self) {
        let Some(m) = self.members.clone() else {
            return;
        };
        let now = Instant::now();
        let peers: Vec<PeerId> = self.connected.keys().copied().collect();
        for p in peers {
            if m.is_member(&p) {
                self.strangers.remove(&p);
                continue;
            }
            let window_over = self
                .strangers
                .get(&p)
                .is_none_or(|t| now.duration_since(*t) >= self.join_window);
            if window_over || m.is_revoked(&p) {
                debug!(peer = %p, "closing a connection the roster does not allow");
                let _ = self.swarm.disconnect_peer_id(p);
                self.strangers.remove(&p);
            }
        }
    }

    fn tick(&mut self) {
        self.enforce_roster();
        self.guard.tidy();
        // Keep connected to every member (dial those we are not).
        let Some(m) = self.members.clone() else {
            return;
        };
        let now = Instant::now();
        for (p, addrs) in m.others(&self.local) {
            if self.connected.contains_key(&p) || addrs.is_empty() {
                continue;
            }
            if self
                .last_dial
                .get(&p)
                .is_some_and(|t| now.duration_since(*t) < REDIAL)
            {
                continue;
            }
            self.last_dial.insert(p, now);
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(p)
                .addresses(addrs)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(peer = %p, error = %e, "dial failed");
            }
        }
    }

    fn answer(&mut self, done: Done) {
        match done {
            Done::Shard(peer, channel, response) => {
                if let Response::Shard { bytes } = &response {
                    self.guard.sent(&peer, bytes.len());
                }
                if self
                    .swarm
                    .behaviour_mut()
                    .shard
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!("a response found its stream closed");
                }
            }
            Done::Member(peer, channel, response, roster_changed) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .member
                    .send_response(channel, response);
                if roster_changed {
                    self.strangers.remove(&peer);
                    self.push_roster();
                    self.enforce_roster();
                }
            }
        }
    }

    fn refuse(&mut self, channel: ResponseChannel<Response>, why: Refusal) {
        let _ = self
            .swarm
            .behaviour_mut()
            .shard
            .send_response(channel, Response::Refused(why));
    }

    fn strike(&mut self, peer: PeerId) {
        if self.guard.refused(&peer) {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>, done: &mpsc::Sender<Done>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Shard(ev)) => self.shard_event(ev, done),
            SwarmEvent::Behaviour(BehaviourEvent::Member(ev)) => self.member_event(ev, done),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                self.rtt.insert(peer, rtt);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if self.is_member(&peer_id) {
                    for a in info.listen_addrs {
                        self.swarm.add_peer_address(peer_id, a);
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                self.connected.insert(peer_id, (Instant::now(), addr));
                if num_established.get() == 1 {
                    if self.is_member(&peer_id) {
                        if let Some(m) = &self.members {
                            let signed = m.signed();
                            self.sync_with(peer_id, signed);
                        }
                    } else if self.members.is_some() {
                        self.strangers.insert(peer_id, Instant::now());
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.strangers.remove(&peer_id);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => debug!(%address, "listening"),
            _ => {}
        }
    }

    fn shard_event(
        &mut self,
        ev: request_response::Event<Request, Response>,
        done: &mpsc::Sender<Done>,
    ) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if !self.is_member(&peer) {
                        self.refuse(channel, Refusal::NotMember);
                        self.strike(peer);
                        return;
                    }
                    match self.guard.check(&peer, request_size(&request)) {
                        Verdict::Allow => {}
                        Verdict::Throttle => return self.refuse(channel, Refusal::Busy),
                        Verdict::Banned => {
                            self.refuse(channel, Refusal::NotMember);
                            let _ = self.swarm.disconnect_peer_id(peer);
                            return;
                        }
                    }
                    let synced = self.members.as_ref().is_some_and(|m| m.synced());
                    let Some(service) = self.service.clone().filter(|_| synced) else {
                        return self.refuse(channel, Refusal::Busy);
                    };
                    let done = done.clone();
                    let guard = self.guard.clone();
                    tokio::spawn(async move {
                        let answer =
                            tokio::task::spawn_blocking(move || service.serve(&peer, request))
                                .await;
                        match answer {
                            Ok(response) => {
                                if matches!(
                                    response,
                                    Response::Refused(Refusal::BadAddress | Refusal::Malformed)
                                ) {
                                    guard.refused(&peer);
                                } else if matches!(response, Response::Refused(_)) {
                                    guard.declined(&peer);
                                }
                                let _ = done.send(Done::Shard(peer, channel, response)).await;
                            }
                            Err(e) => warn!(error = %e, "a shard request's handler failed"),
                        }
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.try_send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.try_send(Err(NetError::Peer {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound shard request failed");
                if let request_response::InboundFailure::Io(e) = &error
                    && e.kind() == std::io::ErrorKind::InvalidData
                {
                    self.strike(peer);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn member_event(
        &mut self,
        ev: request_response::Event<MemberRequest, MemberResponse>,
        done: &mpsc::Sender<Done>,
    ) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.member_request(peer, request, channel, done),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let reply = self.pending_member.remove(&request_id).flatten();
                    if let Some(reply) = reply {
                        let _ = reply.try_send(Ok(response));
                    } else if let (MemberResponse::Roster { newer }, Some(m)) =
                        (response, self.members.clone())
                    {
                        if m.is_member(&peer) {
                            m.mark_synced();
                        }
                        if let Some(r) = newer {
                            match m.offer(&r) {
                                Ok(true) => self.enforce_roster(),
                                Ok(false) => {}
                                Err(e) => {
                                    warn!(%peer, error = %e, "a member sent an invalid roster");
                                    self.strike(peer);
                                }
                            }
                        }
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(Some(reply)) = self.pending_member.remove(&request_id) {
                    let _ = reply.try_send(Err(NetError::Peer {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound membership request failed");
                if let request_response::InboundFailure::Io(e) = &error
                    && e.kind() == std::io::ErrorKind::InvalidData
                {
                    self.strike(peer);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn member_request(
        &mut self,
        peer: PeerId,
        request: MemberRequest,
        channel: ResponseChannel<MemberResponse>,
        done: &mpsc::Sender<Done>,
    ) {
        let Some(m) = self.members.clone() else {
            let _ = self
                .swarm
                .behaviour_mut()
                .member
                .send_response(channel, MemberResponse::Refused(JoinRefusal::NotAdmin));
            return;
        };
        match request {
            MemberRequest::Sync { roster } => {
                let valid = roster.verify(m.network());
                let taken = match m.offer(&roster) {
                    Ok(t) => t,
                    Err(e) => {
                        debug!(%peer, error = %e, "an invalid roster was offered");
                        false
                    }
                };
                // Only members learn the roster (who is in, and where).
                let newer = match valid {
                    Ok(theirs) if m.is_member(&peer) => {
                        m.mark_synced();
                        (m.epoch() > theirs.epoch).then(|| m.signed())
                    }
                    _ => None,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .member
                    .send_response(channel, MemberResponse::Roster { newer });
                if taken {
                    self.enforce_roster();
                }
            }
            MemberRequest::Join {
                invite,
                role,
                name,
                addrs,
            } => {
                if self.guard.is_banned(&peer) {
                    let _ = self.swarm.behaviour_mut().member.send_response(
                        channel,
                        MemberResponse::Refused(JoinRefusal::Banned),
                    );
                    return;
                }
                let done = done.clone();
                let guard = self.guard.clone();
                tokio::spawn(async move {
                    let answer = tokio::task::spawn_blocking(move || {
                        match m.admit(&invite, &peer, role, &name, &addrs) {
                            Ok(roster) => (
                                MemberResponse::Welcome {
                                    network: m.network().clone(),
                                    roster,
                                },
                                true,
                            ),
                            Err(e) => {
                                info!(%peer, error = %e, "a join was refused");
                                guard.refused(&peer);
                                let why = match e {
                                    MemberError::Expired(_) => JoinRefusal::Expired,
                                    MemberError::UsedUp => JoinRefusal::UsedUp,
                                    MemberError::Forged => JoinRefusal::Forged,
                                    MemberError::OtherNetwork => JoinRefusal::OtherNetwork,
                                    MemberError::NotAdmin => JoinRefusal::NotAdmin,
                                    _ => JoinRefusal::Malformed,
                                };
                                (MemberResponse::Refused(why), false)
                            }
                        }
                    })
                    .await;
                    if let Ok((response, changed)) = answer {
                        let _ = done
                            .send(Done::Member(peer, channel, response, changed))
                            .await;
                    }
                });
            }
        }
    }
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
        self.call(Duration::from_secs(5), |reply| Command::PushRoster { reply })
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
