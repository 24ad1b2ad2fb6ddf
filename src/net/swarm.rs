//! One task owns the libp2p `Swarm`; the rest of the node holds a
//! [`NetClient`] (cloneable, bounded command channel, a reply channel per
//! call, a deadline on every call). The client's methods block: they are
//! for the synchronous core and are never called from the runtime.
//!
//! Transports: TCP (noise, yamux) and QUIC; identify and ping; the shard
//! protocol over request-response with [`ShardCodec`]. Inbound requests are
//! answered by a [`ShardService`] on the runtime's blocking threads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify, identity, noise, ping, tcp, yamux,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::codec::ShardCodec;
use super::wire::{MAX_SHARD_LEN, PROTOCOL, Request, Response};

/// Commands waiting for the swarm task: a full queue makes callers wait
/// (bounded by their deadline).
const COMMAND_QUEUE: usize = 64;
/// Streams of the shard protocol open at once per connection.
const MAX_STREAMS: usize = 64;
/// Slowest transfer rate a request is given time for (a 4 MiB shard on a
/// slow home uplink), and the shortest request timeout.
const SLOWEST_RATE: usize = 256 << 10;
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `start` waits for the listeners to be up.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// Answers inbound shard requests (a storage node's store; tests' maps).
/// Called on a blocking thread: it may do disk I/O.
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
}

/// How to start the network.
pub struct NetConfig {
    /// This device's identity (one Ed25519 key per device).
    pub keypair: identity::Keypair,
    /// Where to listen (`/ip4/127.0.0.1/tcp/0`, `/ip4/0.0.0.0/udp/4001/quic-v1`...).
    pub listen: Vec<Multiaddr>,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    shard: request_response::Behaviour<ShardCodec>,
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
    runtime: Option<tokio::runtime::Runtime>,
}

impl Network {
    /// Starts the swarm on its own runtime, listening on `cfg.listen`;
    /// returns once every listener is up.
    pub fn start(cfg: NetConfig, service: Arc<dyn ShardService>) -> Result<Network, NetError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pangea-net")
            .enable_all()
            .build()
            .map_err(|e| NetError::Transport(e.to_string()))?;
        let local = cfg.keypair.public().to_peer_id();
        // Transports and listeners register with the runtime's reactor.
        let entered = runtime.enter();
        let mut swarm = build_swarm(&cfg)?;
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        runtime.spawn(run(swarm, rx, service));
        drop(entered);
        let net = Network {
            client: NetClient { tx, local },
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
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn build_swarm(cfg: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let transport = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let timeout =
        MIN_REQUEST_TIMEOUT.max(Duration::from_secs((MAX_SHARD_LEN / SLOWEST_RATE) as u64));
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
            shard: request_response::Behaviour::new(
                [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(timeout)
                    .with_max_concurrent_streams(MAX_STREAMS),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/pangea/id/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_timeout))
        .build();
    Ok(swarm)
}

/// The swarm task: commands in, events out, until every client is gone.
async fn run(
    mut swarm: Swarm<Behaviour>,
    mut rx: mpsc::Receiver<Command>,
    service: Arc<dyn ShardService>,
) {
    let mut pending: HashMap<OutboundRequestId, Reply<Response>> = HashMap::new();
    // Answers computed on blocking threads, to send from here.
    let (done_tx, mut done_rx) =
        mpsc::channel::<(ResponseChannel<Response>, Response)>(MAX_STREAMS);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Command::Request { peer, addresses, request, reply }) => {
                    let id = swarm
                        .behaviour_mut()
                        .shard
                        .send_request_with_addresses(&peer, request, addresses);
                    pending.insert(id, reply);
                }
                Some(Command::Listeners { reply }) => {
                    let _ = reply.try_send(Ok(swarm.listeners().cloned().collect()));
                }
            },
            Some((channel, response)) = done_rx.recv() => {
                if swarm.behaviour_mut().shard.send_response(channel, response).is_err() {
                    debug!("a response found its stream closed");
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Shard(ev)) => match ev {
                    request_response::Event::Message { peer, message, .. } => match message {
                        request_response::Message::Request { request, channel, .. } => {
                            let service = service.clone();
                            let done = done_tx.clone();
                            tokio::spawn(async move {
                                let answer = tokio::task::spawn_blocking(move || {
                                    service.serve(&peer, request)
                                })
                                .await;
                                match answer {
                                    Ok(response) => {
                                        let _ = done.send((channel, response)).await;
                                    }
                                    Err(e) => warn!(error = %e, "a shard request's handler failed"),
                                }
                            });
                        }
                        request_response::Message::Response { request_id, response } => {
                            if let Some(reply) = pending.remove(&request_id) {
                                let _ = reply.try_send(Ok(response));
                            }
                        }
                    },
                    request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                        if let Some(reply) = pending.remove(&request_id) {
                            let _ = reply.try_send(Err(NetError::Peer { peer, reason: error.to_string() }));
                        }
                    }
                    request_response::Event::InboundFailure { peer, error, .. } => {
                        debug!(%peer, %error, "inbound shard request failed");
                    }
                    request_response::Event::ResponseSent { .. } => {}
                },
                SwarmEvent::NewListenAddr { address, .. } => debug!(%address, "listening"),
                _ => {}
            },
        }
    }
}

impl NetClient {
    /// This device's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Sends `request` to `peer` (dialing `addresses` if not connected) and
    /// waits for its answer until `deadline`.
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
