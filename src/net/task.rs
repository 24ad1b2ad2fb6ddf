//! The swarm task: owns the `Swarm`, takes the clients' commands, answers
//! inbound requests (the shard protocol through the [`ShardService`] on
//! blocking threads, membership itself), keeps connected to the members,
//! and enforces the roster and the guard (see [`super::swarm`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, ping};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::codec::{JoinRefusal, MemberRequest, MemberResponse};
use super::guard::{Guard, Verdict};
use super::member::{MemberError, SignedRoster};
use super::roster::Membership;
use super::swarm::{
    Behaviour, BehaviourEvent, Command, MAX_STREAMS, NetError, PeerState, REDIAL, Reply,
    ShardService, TICK,
};
use super::wire::{Refusal, Request, Response};

/// What a finished inbound request sends back from a blocking thread.
enum Done {
    Shard(PeerId, ResponseChannel<Response>, Response),
    Member(
        PeerId,
        ResponseChannel<MemberResponse>,
        MemberResponse,
        bool,
    ),
}

pub(super) struct Task {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) local: PeerId,
    pub(super) members: Option<Arc<Membership>>,
    pub(super) guard: Arc<Guard>,
    pub(super) service: Option<Arc<dyn ShardService>>,
    pub(super) join_window: Duration,
    pub(super) pending: HashMap<OutboundRequestId, Reply<Response>>,
    pub(super) pending_member: HashMap<OutboundRequestId, Option<Reply<MemberResponse>>>,
    /// Connected peers: since when, and the remote address.
    pub(super) connected: HashMap<PeerId, (Instant, Multiaddr)>,
    /// Connected peers that are not members, and when they connected.
    pub(super) strangers: HashMap<PeerId, Instant>,
    pub(super) rtt: HashMap<PeerId, Duration>,
    /// The zones members announce (identify's agent version).
    pub(super) zones: HashMap<PeerId, String>,
    pub(super) last_dial: HashMap<PeerId, Instant>,
}

/// The zone in an agent version (`pangea/0.1.0 zone=NAME`): at most 64
/// characters of `[A-Za-z0-9._-]`.
fn zone_of(agent: &str) -> Option<String> {
    let z = agent
        .split_whitespace()
        .find_map(|w| w.strip_prefix("zone="))?;
    (!z.is_empty()
        && z.len() <= 64
        && z.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    .then(|| z.to_owned())
}

fn request_size(r: &Request) -> usize {
    match r {
        Request::Put { bytes, .. } => bytes.len(),
        _ => 64,
    }
}

impl Task {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        local: PeerId,
        members: Option<Arc<Membership>>,
        guard: Arc<Guard>,
        service: Option<Arc<dyn ShardService>>,
        join_window: Duration,
    ) -> Task {
        Task {
            swarm,
            local,
            members,
            guard,
            service,
            join_window,
            pending: HashMap::new(),
            pending_member: HashMap::new(),
            connected: HashMap::new(),
            strangers: HashMap::new(),
            rtt: HashMap::new(),
            zones: HashMap::new(),
            last_dial: HashMap::new(),
        }
    }

    /// The task: commands in, events out, until every client is gone.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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

    /// A joiner's listen addresses as others can dial them: a wildcard IP
    /// (`0.0.0.0`, `::`) becomes the address it connected from.
    fn dialable(&self, peer: &PeerId, addrs: Vec<String>) -> Vec<String> {
        use libp2p::multiaddr::Protocol;
        let seen = self
            .connected
            .get(peer)
            .and_then(|(_, a)| super::gate::ip_of(a));
        addrs
            .into_iter()
            .filter_map(|a| {
                let m: Multiaddr = a.parse().ok()?;
                let out: Multiaddr = m
                    .iter()
                    .map(|p| match (p, seen) {
                        (Protocol::Ip4(ip), Some(std::net::IpAddr::V4(s)))
                            if ip.is_unspecified() =>
                        {
                            Protocol::Ip4(s)
                        }
                        (Protocol::Ip6(ip), Some(std::net::IpAddr::V6(s)))
                            if ip.is_unspecified() =>
                        {
                            Protocol::Ip6(s)
                        }
                        (p, _) => p,
                    })
                    .collect();
                Some(out.to_string())
            })
            .collect()
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
                            zone: self.zones.get(&p).cloned(),
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
            })) if self.is_member(&peer_id) => {
                match zone_of(&info.agent_version) {
                    Some(z) => self.zones.insert(peer_id, z),
                    None => self.zones.remove(&peer_id),
                };
                for a in info.listen_addrs {
                    self.swarm.add_peer_address(peer_id, a);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found))) => {
                for (peer, a) in found {
                    if self.is_member(&peer) {
                        debug!(%peer, addr = %a, "a member found on the local network");
                        self.swarm.add_peer_address(peer, a);
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
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                self.strangers.remove(&peer_id);
                self.rtt.remove(&peer_id);
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
            MemberRequest::Recover {
                time_ms,
                signature,
                slot,
            } => {
                let fresh = crate::net::member::now_ms().abs_diff(time_ms) < 10 * 60 * 1000;
                let message = super::codec::recover_message(&m.network().network, &peer, time_ms);
                let signed = m
                    .network()
                    .admin_key()
                    .is_ok_and(|k| k.verify(&message, &signature));
                let response = if fresh && signed {
                    info!(%peer, "a recovering device proved the admin key: sent it the roster");
                    let root = match self
                        .service
                        .as_ref()
                        .map(|s| s.serve(&peer, crate::net::wire::Request::GetRoot { slot }))
                    {
                        Some(crate::net::wire::Response::Root { seq, blob }) => Some((seq, blob)),
                        _ => None,
                    };
                    MemberResponse::Recovered {
                        roster: m.signed(),
                        root,
                    }
                } else {
                    self.guard.refused(&peer);
                    MemberResponse::Refused(if signed {
                        JoinRefusal::Expired
                    } else {
                        JoinRefusal::Forged
                    })
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .member
                    .send_response(channel, response);
            }
            MemberRequest::Join {
                invite,
                role,
                name,
                addrs,
            } => {
                if self.guard.is_banned(&peer) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .member
                        .send_response(channel, MemberResponse::Refused(JoinRefusal::Banned));
                    return;
                }
                let addrs = self.dialable(&peer, addrs);
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
                                let why = match e {
                                    MemberError::Expired(_) => JoinRefusal::Expired,
                                    MemberError::UsedUp => JoinRefusal::UsedUp,
                                    MemberError::Forged => JoinRefusal::Forged,
                                    MemberError::OtherNetwork => JoinRefusal::OtherNetwork,
                                    MemberError::NotAdmin => JoinRefusal::NotAdmin,
                                    MemberError::Removed => JoinRefusal::Removed,
                                    MemberError::Full => JoinRefusal::Full,
                                    MemberError::Io(_) | MemberError::BadRoster(_) => {
                                        JoinRefusal::Unavailable
                                    }
                                    _ => JoinRefusal::Malformed,
                                };
                                // The admin node's own faults strike no one.
                                if matches!(why, JoinRefusal::Unavailable | JoinRefusal::Full) {
                                    guard.declined(&peer);
                                } else {
                                    guard.refused(&peer);
                                }
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
