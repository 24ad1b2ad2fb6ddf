//! The network side of index backups and recovery.
//!
//! * [`Roots`]: an owner's backup root on every storage member
//!   (`put_root`/`get_root`, kept by `held.rs`), and shards fetched by
//!   address alone (from the holders a backup names, else from any member
//!   that has them), each checked against its address.
//! * [`Recovery`]: what a new device needs before it has an index: the
//!   network's current roster, asked for with a proof that it holds the
//!   admin key (from the owner's recovery kit), then its own admission
//!   under that key (`Membership::recovered`).
//!
//! Every wait on a peer has the deadline given.

use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId, identity};
use zeroize::Zeroizing;

use super::codec::{JoinRefusal, MemberRequest, MemberResponse, recover_message};
use super::member::{MemberError, MemberFiles, NetworkInfo, SignedRoster, now_ms};
use super::roster::Membership;
use super::swarm::{NetClient, NetError, ask_as_stranger};
use super::wire::{Request, Response, check_shard};
use crate::ces::ShardId;

/// See the module documentation.
pub struct Roots {
    client: NetClient,
    members: Arc<Membership>,
    deadline: Duration,
}

impl Roots {
    pub fn new(client: NetClient, members: Arc<Membership>, deadline: Duration) -> Roots {
        Roots {
            client,
            members,
            deadline,
        }
    }

    fn storage(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.members.storage_peers(&self.client.local_peer_id())
    }

    /// How many storage members the roster names.
    pub fn storage_members(&self) -> usize {
        self.storage().len()
    }

    /// Asks every storage member at once; the answers in roster order.
    fn ask_all(&self, request: &Request) -> Vec<(PeerId, Result<Response, NetError>)> {
        let peers = self.storage();
        std::thread::scope(|s| {
            let handles: Vec<_> = peers
                .iter()
                .map(|(p, addrs)| {
                    let request = request.clone();
                    s.spawn(move || {
                        self.client
                            .request(*p, addrs.clone(), request, self.deadline)
                    })
                })
                .collect();
            peers
                .iter()
                .zip(handles)
                .map(|((p, _), h)| {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(NetError::Transport("a request panicked".into())));
                    (*p, r)
                })
                .collect()
        })
    }

    /// Puts a backup root in `slot` on every storage member; how many kept
    /// it.
    pub fn put(&self, slot: [u8; 32], seq: u64, blob: &[u8]) -> usize {
        let request = Request::PutRoot {
            slot,
            seq,
            blob: blob.to_vec(),
        };
        self.ask_all(&request)
            .into_iter()
            .filter(|(_, r)| matches!(r, Ok(Response::Stored)))
            .count()
    }

    /// Every root the storage members hold in `slot` (those that answered).
    pub fn get_all(&self, slot: [u8; 32]) -> Vec<KeptRoot> {
        self.ask_all(&Request::GetRoot { slot })
            .into_iter()
            .filter_map(|(_, r)| match r {
                Ok(Response::Root { seq, blob }) => Some((seq, blob)),
                _ => None,
            })
            .collect()
    }

    /// Shard `address`: from the holders `hint` names first, then from any
    /// storage member that says it has it. Checked against its address;
    /// None when no member gives it within the deadlines.
    pub fn fetch(&self, address: &ShardId, hint: &[Vec<u8>]) -> Option<Vec<u8>> {
        let get = |p: PeerId, addrs: Vec<Multiaddr>| match self.client.request(
            p,
            addrs,
            Request::Get { address: *address },
            self.deadline,
        ) {
            Ok(Response::Shard { bytes }) if check_shard(address, &bytes).is_ok() => Some(bytes),
            _ => None,
        };
        for h in hint {
            if let Ok(p) = PeerId::from_bytes(h) {
                let addrs = self.members.addrs(&p);
                if let Some(b) = get(p, addrs) {
                    return Some(b);
                }
            }
        }
        let has = Request::Has {
            addresses: vec![*address],
        };
        for (p, r) in self.ask_all(&has) {
            if matches!(r, Ok(Response::Have { held }) if held.first() == Some(&true)) {
                let addrs = self.members.addrs(&p);
                if let Some(b) = get(p, addrs) {
                    return Some(b);
                }
            }
        }
        None
    }

    /// Removes the device `peer` from the network (it was replaced by a
    /// recovery) and tells every member.
    pub fn remove_device(&self, peer: &[u8]) -> Result<(), NetError> {
        let p = PeerId::from_bytes(peer)
            .map_err(|_| NetError::Transport("a malformed device id".into()))?;
        if p == self.client.local_peer_id() || !self.members.is_member(&p) {
            return Ok(());
        }
        self.members.remove(&p)?;
        self.client.push_roster()
    }
}

/// A backup root as a storage member keeps it: (generation, sealed bytes).
pub type KeptRoot = (u64, Vec<u8>);

/// What the recovery kit gives to get back into the network.
pub struct Recovery {
    /// The admin's Ed25519 secret key.
    pub admin: Zeroizing<[u8; 32]>,
    pub network: [u8; 16],
    /// Storage members to ask first: (peer id bytes, multiaddrs).
    pub peers: Vec<(Vec<u8>, Vec<String>)>,
}

impl Recovery {
    fn admin_keypair(&self) -> Result<identity::Keypair, NetError> {
        let mut secret = *self.admin;
        identity::Keypair::ed25519_from_bytes(&mut secret).map_err(|_| {
            NetError::Member(MemberError::Io("the kit's admin key is malformed".into()))
        })
    }

    /// Asks the kit's storage members for the network's roster (proving
    /// the admin key) and admits this device (`keypair`, listening at
    /// `addrs`) in a roster of the next epoch, signed with that key.
    pub fn take_over(
        &self,
        files: MemberFiles,
        keypair: &identity::Keypair,
        name: &str,
        addrs: &[Multiaddr],
        deadline: Duration,
    ) -> Result<Membership, NetError> {
        let admin = self.admin_keypair()?;
        let network = NetworkInfo {
            network: self.network,
            admin: admin.public().encode_protobuf(),
        };
        let me = keypair.public().to_peer_id();
        let (roster, _) = self.ask(keypair, [0; 32], deadline)?;
        Ok(Membership::recovered(
            files, network, admin, roster, &me, name, addrs,
        )?)
    }

    /// `pangea recover --dry-run`: [`Recovery::ask`] as a throwaway
    /// identity; how many members the roster names, and the root kept.
    pub fn probe(
        &self,
        slot: [u8; 32],
        deadline: Duration,
    ) -> Result<(usize, Option<KeptRoot>), NetError> {
        let keypair = identity::Keypair::generate_ed25519();
        let admin = self.admin_keypair()?;
        let network = NetworkInfo {
            network: self.network,
            admin: admin.public().encode_protobuf(),
        };
        let (roster, root) = self.ask(&keypair, slot, deadline)?;
        let body = roster.verify(&network)?;
        Ok((body.members.len(), root))
    }

    /// Proves the kit's admin key to the first of its storage members
    /// that answers (as the stranger `keypair`): the network's current
    /// roster, and the backup root that member keeps in `slot`. Changes
    /// nothing anywhere (`pangea recover --dry-run`).
    pub fn ask(
        &self,
        keypair: &identity::Keypair,
        slot: [u8; 32],
        deadline: Duration,
    ) -> Result<(SignedRoster, Option<KeptRoot>), NetError> {
        let admin = self.admin_keypair()?;
        let me = keypair.public().to_peer_id();
        let targets: Vec<(PeerId, Vec<Multiaddr>)> = self
            .peers
            .iter()
            .filter_map(|(p, a)| {
                Some((
                    PeerId::from_bytes(p).ok()?,
                    a.iter().filter_map(|a| a.parse().ok()).collect(),
                ))
            })
            .collect();
        if targets.is_empty() {
            return Err(NetError::Transport(
                "the kit names no storage member to ask".into(),
            ));
        }
        let time_ms = now_ms();
        let message = recover_message(&self.network, &me, time_ms);
        let signature = admin
            .sign(&message)
            .map_err(|e| NetError::Transport(format!("cannot sign: {e}")))?;
        let (from, answer) = ask_as_stranger(
            keypair,
            &targets,
            |_| MemberRequest::Recover {
                time_ms,
                signature: signature.clone(),
                slot,
            },
            deadline,
        )?;
        match answer {
            MemberResponse::Recovered { roster, root } => Ok((roster, root)),
            MemberResponse::Refused(JoinRefusal::Forged) => Err(NetError::Transport(format!(
                "{from} refused the kit: its admin key is not this network's"
            ))),
            MemberResponse::Refused(why) => {
                Err(NetError::Transport(format!("{from} refused: {why}")))
            }
            _ => Err(NetError::Transport(format!(
                "{from} answered something other than the roster"
            ))),
        }
    }
}

/// What a kit needs from this device's network files: the admin's secret
/// key, the network id and up to `limit` storage members with their
/// addresses. None when this device is not the network's admin.
pub fn kit_material(dir: &std::path::Path, limit: usize) -> Result<Option<Recovery>, MemberError> {
    let files = MemberFiles::new(dir);
    let Some(admin) = files.admin()? else {
        return Ok(None);
    };
    let Some(m) = Membership::open(MemberFiles::new(dir))? else {
        return Ok(None);
    };
    let secret = admin
        .try_into_ed25519()
        .map_err(|_| MemberError::Io("the admin key is not Ed25519".into()))?
        .secret();
    let mut bytes = Zeroizing::new([0u8; 32]);
    bytes.copy_from_slice(secret.as_ref());
    let me = files.identity()?.public().to_peer_id();
    let peers = m
        .storage_peers(&me)
        .into_iter()
        .take(limit)
        .map(|(p, a)| {
            (
                p.to_bytes(),
                a.iter().take(2).map(|a| a.to_string()).collect(),
            )
        })
        .collect();
    Ok(Some(Recovery {
        admin: bytes,
        network: m.network().network,
        peers,
    }))
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("admin", &"<redacted>")
            .field("network", &data_encoding::HEXLOWER.encode(&self.network))
            .field("peers", &self.peers.len())
            .finish()
    }
}
