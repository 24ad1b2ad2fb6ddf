//! Bringing a node onto its network: its identity, its membership (an
//! existing one, a join with a token, or, for the first filesystem node, a
//! new network), and the running swarm. The node calls [`bring_up`] with
//! text options; nothing outside `net` names libp2p.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tracing::info;

use super::guard::GuardConfig;
use super::member::{Invite, MemberError, MemberFiles, Role};
use super::remote::RemoteStats;
use super::roster::Membership;
use super::swarm::{NetClient, NetConfig, NetError, Network, ShardService, join};
use super::wire::{Refusal, Request, Response};

/// The port Pangea listens on by default (TCP and QUIC).
pub const DEFAULT_PORT: u16 = 7410;
/// How long a join may take.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(15);

/// The default listen addresses: TCP and QUIC on every interface.
pub fn default_listen() -> Vec<String> {
    vec![
        format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"),
        format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1"),
    ]
}

/// How a node goes online.
#[derive(Clone, Debug)]
pub struct NetSetup {
    /// Listen addresses (multiaddrs).
    pub listen: Vec<String>,
    /// An invite token to join with (ignored when already a member of the
    /// token's network).
    pub join: Option<String>,
    pub role: Role,
    /// The node's name in the roster.
    pub name: String,
    /// The longest a read waits on peers.
    pub op_timeout: Duration,
    pub guard: GuardConfig,
    /// Look for members on the local network (`--mdns`; off by default).
    pub mdns: bool,
    /// This node's failure domain, announced to the others (`--zone`).
    pub zone: Option<String>,
    /// A simulated slow link (tests and benchmarks; `--simulate-delay`).
    pub impair: Option<crate::net::impair::Impairment>,
    /// Recovery (`--recover KIT`): a data dir with no network yet takes
    /// the kit's network over instead of creating one.
    pub recover: Option<Arc<super::roots::Recovery>>,
}

impl NetSetup {
    pub fn new(role: Role) -> NetSetup {
        NetSetup {
            listen: default_listen(),
            join: None,
            role,
            name: host_name(),
            op_timeout: Duration::from_secs(10),
            guard: GuardConfig::default(),
            mdns: false,
            zone: None,
            impair: None,
            recover: None,
        }
    }
}

/// This machine's host name (the default member name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pangea".into())
}

/// A node on its network.
pub struct Online {
    pub network: Network,
    pub members: Arc<Membership>,
    pub stats: Arc<RemoteStats>,
    /// What this node learned of its peers (the prober's).
    pub book: Arc<crate::placement::PeerBook>,
}

impl Online {
    /// A cloneable handle for the control socket.
    pub fn handle(&self) -> OnlineHandle {
        OnlineHandle {
            client: self.network.client(),
            members: self.members.clone(),
            stats: self.stats.clone(),
            guard: self.network.guard().clone(),
            book: self.book.clone(),
        }
    }

    pub fn client(&self) -> NetClient {
        self.network.client()
    }

    pub fn peer_id(&self) -> String {
        self.network.client().local_peer_id().to_string()
    }
}

/// What the control socket needs of the network.
#[derive(Clone)]
pub struct OnlineHandle {
    pub client: NetClient,
    pub members: Arc<Membership>,
    pub stats: Arc<RemoteStats>,
    pub guard: Arc<super::guard::Guard>,
    pub book: Arc<crate::placement::PeerBook>,
}

impl OnlineHandle {
    /// A new invite token (admin nodes only) that dials this node.
    pub fn invite(&self, expires: Duration, uses: u16) -> Result<String, NetError> {
        let me = self.client.local_peer_id();
        let addrs = dialable(self.client.listeners()?);
        Ok(self.members.invite(expires, uses, vec![(me, addrs)])?)
    }

    /// Removes member `peer` (text peer id; admin nodes only) and tells
    /// every connected member.
    /// Its copies count as lost: the `fit-params` worker of every
    /// filesystem node that takes the new roster places them again.
    pub fn remove(&self, peer: &str) -> Result<crate::placement::PeerId, NetError> {
        let p: PeerId = peer
            .parse()
            .map_err(|_| NetError::Transport(format!("{peer:?} is not a peer id")))?;
        if !self.members.is_member(&p) {
            return Err(NetError::NotMember(p));
        }
        self.members.remove(&p)?;
        self.client.push_roster()?;
        Ok(crate::placement::PeerId(p.to_bytes()))
    }

    /// Every other member: name, role, connection, RTT; and the guard's
    /// counters for it.
    pub fn peers_json(&self) -> serde_json::Value {
        let me = self.client.local_peer_id();
        let roster = self.members.roster();
        let state = self.client.peers().unwrap_or_default();
        let counters: std::collections::HashMap<String, super::guard::PeerCounters> = self
            .guard
            .peer_counters()
            .into_iter()
            .map(|(p, c)| (p.to_string(), c))
            .collect();
        let mut out = Vec::new();
        for m in &roster.members {
            let Some(p) = m.peer_id() else { continue };
            if p == me {
                continue;
            }
            let id = p.to_string();
            let st = state.iter().find(|s| s.peer == id);
            let learned = self.book.get(&crate::placement::PeerId(p.to_bytes()));
            out.push(serde_json::json!({
                "id": id,
                "name": m.name,
                "role": format!("{:?}", m.role).to_lowercase(),
                "addrs": m.addrs,
                "connected": st.is_some_and(|s| s.connected),
                "rtt_ms": st.and_then(|s| s.rtt_ms),
                "srtt_ms": learned.as_ref().map(|r| r.srtt_ms),
                "jitter_ms": learned.as_ref().map(|r| r.rttvar_ms),
                "loss": learned.as_ref().map(|r| r.loss),
                "availability": learned.as_ref().map(|r| r.availability()),
                "bandwidth_mbps": learned.as_ref().map(|r| r.bw_bps / 1e6),
                "score": learned.as_ref().map_or(1.0, |r| r.score()),
                "domain": learned.as_ref().map(|r| r.domain.clone()).filter(|d| !d.is_empty()),
                "up": learned.as_ref().is_none_or(|r| r.down_since_ms.is_none()),
                "guard": counters.get(&id),
            }));
        }
        serde_json::Value::Array(out)
    }

    /// This node's network, as JSON.
    pub fn identity_json(&self) -> serde_json::Value {
        serde_json::json!({
            "peer_id": self.client.local_peer_id().to_string(),
            "network": self.members.network().id_hex(),
            "admin": self.members.is_admin(),
            "roster_epoch": self.members.epoch(),
            "listen": self.client.listeners().unwrap_or_default().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        })
    }

    /// Does member `peer` say it holds every one of `addresses`? (False
    /// if it does not answer within `deadline`.)
    pub fn has_all(
        &self,
        peer: &crate::placement::PeerId,
        addresses: &[crate::ces::ShardId],
        deadline: Duration,
    ) -> bool {
        let Ok(p) = PeerId::from_bytes(peer.as_bytes()) else {
            return false;
        };
        addresses.chunks(super::wire::MAX_HAS).all(|batch| {
            matches!(
                self.client.request(
                    p,
                    Vec::new(),
                    Request::Has {
                        addresses: batch.to_vec()
                    },
                    deadline
                ),
                Ok(Response::Have { held }) if held.len() == batch.len() && held.iter().all(|h| *h)
            )
        })
    }

    /// Is `peer` (a placement peer id) a member now, and up (as far as
    /// the prober knows)?
    pub fn is_live(&self, peer: &crate::placement::PeerId) -> bool {
        PeerId::from_bytes(peer.as_bytes()).is_ok_and(|p| self.members.is_member(&p))
            && self.book.is_up(peer)
    }
}

/// Listen addresses others can dial: wildcard ones are left out (the
/// swarm reports each interface's address for them).
fn dialable(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    addrs
        .into_iter()
        .filter(|a| {
            !a.iter().any(|p| match p {
                libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_unspecified(),
                libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_unspecified(),
                _ => false,
            })
        })
        .collect()
}

/// Answers shard requests on a node that stores nothing for others (a
/// filesystem node): every put is "full", every get "not found".
pub struct StoresNothing;

impl ShardService for StoresNothing {
    fn serve(&self, _: &PeerId, request: Request) -> Response {
        match request {
            Request::Put { .. } => Response::Refused(Refusal::Full),
            Request::Has { addresses } => Response::Have {
                held: vec![false; addresses.len()],
            },
            Request::Delete { .. } => Response::Deleted { existed: false },
            Request::List { .. } => Response::Listed {
                addresses: Vec::new(),
                more: false,
            },
            Request::Get { .. } | Request::Prove { .. } | Request::GetRoot { .. } => {
                Response::Refused(Refusal::NotFound)
            }
            Request::PutRoot { .. } => Response::Refused(Refusal::Full),
        }
    }
}

/// Brings the node whose network files are in `dir` online (see the module
/// documentation). A storage node must have joined (now or before); a
/// filesystem node without a network creates one.
pub fn bring_up(
    dir: &Path,
    setup: &NetSetup,
    service: Arc<dyn ShardService>,
    book: Arc<crate::placement::PeerBook>,
) -> Result<Online, NetError> {
    let files = MemberFiles::new(dir);
    let keypair = files.identity()?;
    let me = keypair.public().to_peer_id();
    let mut listen = Vec::with_capacity(setup.listen.len());
    for a in &setup.listen {
        listen.push(
            a.parse::<Multiaddr>()
                .map_err(|e| NetError::Transport(format!("--listen {a}: {e}")))?,
        );
    }
    let existing = Membership::open(MemberFiles::new(dir))?;
    let members = match (existing, &setup.join) {
        (Some(m), Some(token)) => {
            let (_, body) = Invite::parse(token)?;
            if body.network != *m.network() {
                return Err(NetError::Transport(format!(
                    "this data dir already belongs to network {}; use another --data-dir to join another network",
                    m.network().id_hex()
                )));
            }
            info!("already a member of the invite's network; the token is not used");
            m
        }
        (Some(m), None) => m,
        (None, Some(token)) => {
            let w = join(
                &keypair,
                token,
                setup.role,
                &setup.name,
                &listen,
                JOIN_DEADLINE,
            )?;
            let m = Membership::joined(files, w.network, w.roster, &me)?;
            info!(network = %m.network().id_hex(), "joined the network");
            m
        }
        (None, None) if setup.recover.is_some() && setup.role == Role::Mount => {
            let r = setup
                .recover
                .as_ref()
                .ok_or(NetError::Transport("no kit".into()))?;
            r.take_over(files, &keypair, &setup.name, &listen, JOIN_DEADLINE)?
        }
        (None, None) => match setup.role {
            Role::Mount => Membership::create(files, &me, setup.role, &setup.name, &[])?,
            Role::Serve => {
                return Err(NetError::Member(MemberError::Io(
                    "this storage node belongs to no network yet: run `pangea invite` on the first node and start this one with `pangea serve --join TOKEN`".into(),
                )));
            }
        },
    };
    let members = Arc::new(members);
    let mut cfg = NetConfig::new(keypair, listen);
    cfg.guard = setup.guard.clone();
    cfg.mdns = setup.mdns;
    cfg.zone = setup.zone.clone();
    cfg.impair = setup.impair;
    let network = Network::start(cfg, members.clone(), service)?;
    if members.is_admin() {
        let addrs = dialable(network.client().listeners()?);
        members.set_own_addrs(&me, &addrs)?;
    }
    Ok(Online {
        network,
        members,
        stats: Arc::new(RemoteStats::default()),
        book,
    })
}
