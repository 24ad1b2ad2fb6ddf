//! A node's live membership: the network it belongs to, the highest valid
//! roster it has seen, and, on the admin node, the admin key with which it
//! admits newcomers and removes members. Shared by the swarm task (which
//! enforces it on every connection and request) and the node (which serves
//! `pangea invite` and `pangea remove`).

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId, identity};
use tracing::info;

use super::member::{
    Invite, InviteBody, Member, MemberError, MemberFiles, NetworkInfo, Role, RosterBody,
    SignedRoster, now_ms,
};

struct Current {
    signed: SignedRoster,
    body: RosterBody,
}

/// See the module documentation.
pub struct Membership {
    files: MemberFiles,
    network: NetworkInfo,
    admin: Option<identity::Keypair>,
    current: RwLock<Current>,
    /// Whether the roster was compared with another member's since start
    /// (a node that was offline serves no shards before it has).
    synced: AtomicBool,
    /// Held through an admission: the invites' use counts are read,
    /// checked and written by one join at a time.
    admitting: std::sync::Mutex<()>,
}

impl Membership {
    /// Creates a network with this device as its first member (and admin).
    pub fn create(
        files: MemberFiles,
        me: &PeerId,
        role: Role,
        name: &str,
        addrs: &[Multiaddr],
    ) -> Result<Membership, MemberError> {
        let admin = identity::Keypair::generate_ed25519();
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| MemberError::Io(e.to_string()))?;
        let network = NetworkInfo {
            network: id,
            admin: admin.public().encode_protobuf(),
        };
        let body = RosterBody {
            network: id,
            epoch: 1,
            members: vec![Member {
                peer: me.to_bytes(),
                role,
                name: name.to_owned(),
                addrs: addrs.iter().map(|a| a.to_string()).collect(),
                added_ms: now_ms(),
            }],
            revoked: Vec::new(),
        };
        let signed = SignedRoster::sign(&body, &admin)?;
        files.save_admin(&admin)?;
        files.save_roster(&signed)?;
        files.save_network(&network)?;
        info!(network = %network.id_hex(), "created a network");
        Ok(Membership {
            files,
            network,
            admin: Some(admin),
            current: RwLock::new(Current { signed, body }),
            // Alone in a new network: nothing to sync with.
            synced: AtomicBool::new(true),
            admitting: std::sync::Mutex::new(()),
        })
    }

    /// The network saved in `files`, if this node has one.
    pub fn open(files: MemberFiles) -> Result<Option<Membership>, MemberError> {
        let Some(network) = files.network()? else {
            return Ok(None);
        };
        let signed = files
            .roster()?
            .ok_or(MemberError::BadRoster("net/roster is missing"))?;
        let body = signed.verify(&network)?;
        let admin = files.admin()?;
        // The admin node's roster is the newest there is.
        let synced = admin.is_some();
        Ok(Some(Membership {
            files,
            network,
            admin,
            current: RwLock::new(Current { signed, body }),
            synced: AtomicBool::new(synced),
            admitting: std::sync::Mutex::new(()),
        }))
    }

    /// Recovery: a new device holding the admin key (from the owner's
    /// kit) takes `current`, the roster the members hold, adds itself as
    /// a filesystem node and signs the next epoch. The device it replaces
    /// is removed later ([`Membership::remove`]), once the backup names it.
    pub fn recovered(
        files: MemberFiles,
        network: NetworkInfo,
        admin: identity::Keypair,
        current: SignedRoster,
        me: &PeerId,
        name: &str,
        addrs: &[Multiaddr],
    ) -> Result<Membership, MemberError> {
        if admin.public().encode_protobuf() != network.admin {
            return Err(MemberError::NotAdmin);
        }
        let body = current.verify(&network)?;
        files.save_network(&network)?;
        files.save_admin(&admin)?;
        files.save_roster(&current)?;
        let m = Membership {
            files,
            network,
            admin: Some(admin),
            current: RwLock::new(Current {
                signed: current,
                body,
            }),
            synced: AtomicBool::new(true),
            admitting: std::sync::Mutex::new(()),
        };
        let bytes = me.to_bytes();
        m.change(|b| {
            b.revoked.retain(|r| *r != bytes);
            b.members.retain(|x| x.peer != bytes);
            b.members.push(Member {
                peer: bytes.clone(),
                role: Role::Mount,
                name: name.to_owned(),
                addrs: addrs.iter().map(|a| a.to_string()).collect(),
                added_ms: now_ms(),
            });
        })?;
        info!(network = %m.network.id_hex(), epoch = m.epoch(), "took over the network with the recovery kit");
        Ok(m)
    }

    /// Joins with what the admin node answered (the network and a roster
    /// that must name `me`).
    pub fn joined(
        files: MemberFiles,
        network: NetworkInfo,
        roster: SignedRoster,
        me: &PeerId,
    ) -> Result<Membership, MemberError> {
        let body = roster.verify(&network)?;
        if !body.is_member(me) {
            return Err(MemberError::BadRoster(
                "the admin's roster does not name us",
            ));
        }
        files.save_roster(&roster)?;
        files.save_network(&network)?;
        Ok(Membership {
            files,
            network,
            admin: None,
            current: RwLock::new(Current {
                signed: roster,
                body,
            }),
            synced: AtomicBool::new(true),
            admitting: std::sync::Mutex::new(()),
        })
    }

    pub fn network(&self) -> &NetworkInfo {
        &self.network
    }

    pub fn is_admin(&self) -> bool {
        self.admin.is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Is `peer` a member now?
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.read().body.is_member(peer)
    }

    /// Was `peer` removed from the network?
    pub fn is_revoked(&self, peer: &PeerId) -> bool {
        let b = peer.to_bytes();
        self.read().body.revoked.contains(&b)
    }

    /// The roster as it is now.
    pub fn roster(&self) -> RosterBody {
        self.read().body.clone()
    }

    /// The signed roster, to send.
    pub fn signed(&self) -> SignedRoster {
        self.read().signed.clone()
    }

    pub fn epoch(&self) -> u64 {
        self.read().body.epoch
    }

    /// Whether the roster has been compared with another member's.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Takes `offered` if it is valid and newer than ours; true if taken.
    pub fn offer(&self, offered: &SignedRoster) -> Result<bool, MemberError> {
        let body = offered.verify(&self.network)?;
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if body.epoch <= cur.body.epoch {
            return Ok(false);
        }
        self.files.save_roster(offered)?;
        info!(
            epoch = body.epoch,
            members = body.members.len(),
            "took a newer roster"
        );
        *cur = Current {
            signed: offered.clone(),
            body,
        };
        Ok(true)
    }

    fn admin(&self) -> Result<&identity::Keypair, MemberError> {
        self.admin.as_ref().ok_or(MemberError::NotAdmin)
    }

    /// Signs and takes the next roster, made by `change` from the current
    /// one (admin only).
    fn change(&self, change: impl FnOnce(&mut RosterBody)) -> Result<SignedRoster, MemberError> {
        let admin = self.admin()?;
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut body = cur.body.clone();
        change(&mut body);
        body.epoch += 1;
        let signed = SignedRoster::sign(&body, admin)?;
        self.files.save_roster(&signed)?;
        *cur = Current {
            signed: signed.clone(),
            body,
        };
        Ok(signed)
    }

    /// A new invite token (admin only): valid for `expires`, admitting at
    /// most `uses` devices, telling them to dial `bootstrap`.
    pub fn invite(
        &self,
        expires: Duration,
        uses: u16,
        bootstrap: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<String, MemberError> {
        let admin = self.admin()?;
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| MemberError::Io(e.to_string()))?;
        let body = InviteBody {
            network: self.network.clone(),
            id,
            expires_ms: now_ms()
                .saturating_add(u64::try_from(expires.as_millis()).unwrap_or(u64::MAX)),
            uses: uses.max(1),
            bootstrap: bootstrap
                .into_iter()
                .map(|(p, a)| (p.to_bytes(), a.iter().map(|a| a.to_string()).collect()))
                .collect(),
        };
        Ok(Invite::sign(&body, admin)?.to_token())
    }

    /// Admits `peer` with `invite` (admin only): checks the token against
    /// this network (signature, expiry, uses), adds the member and signs
    /// the next roster. A member that joins again gets the roster as is.
    pub fn admit(
        &self,
        invite: &Invite,
        peer: &PeerId,
        role: Role,
        name: &str,
        addrs: &[String],
    ) -> Result<SignedRoster, MemberError> {
        self.admin()?;
        let _one = self.admitting.lock().unwrap_or_else(|e| e.into_inner());
        let body = invite.verify_for(&self.network)?;
        if self.is_revoked(peer) {
            return Err(MemberError::Removed);
        }
        if self.read().body.members.len() >= super::member::MAX_MEMBERS {
            return Err(MemberError::Full);
        }
        if self.is_member(peer) {
            return Ok(self.signed());
        }
        let mut uses = self.files.invite_uses()?;
        let now = now_ms();
        uses.used.retain(|(_, _, expires)| *expires >= now);
        let used = uses
            .used
            .iter()
            .find(|(id, _, _)| *id == body.id)
            .map_or(0, |u| u.1);
        if used >= body.uses {
            return Err(MemberError::UsedUp);
        }
        match uses.used.iter_mut().find(|(id, _, _)| *id == body.id) {
            Some(u) => u.1 += 1,
            None => uses.used.push((body.id, 1, body.expires_ms)),
        }
        let member = Member {
            peer: peer.to_bytes(),
            role,
            name: name.chars().take(64).collect(),
            addrs: addrs
                .iter()
                .filter(|a| a.len() <= 256)
                .take(super::member::MAX_ADDRS)
                .cloned()
                .collect(),
            added_ms: now,
        };
        // The roster first: a use is counted only for a member admitted
        // (a failure after it can at worst leave one use uncounted).
        let signed = self.change(|b| b.members.push(member))?;
        self.files.save_invite_uses(&uses)?;
        info!(%peer, ?role, "admitted a new member");
        Ok(signed)
    }

    /// Removes `peer` from the network (admin only).
    pub fn remove(&self, peer: &PeerId) -> Result<SignedRoster, MemberError> {
        let bytes = peer.to_bytes();
        if self.read().body.revoked.len() >= super::member::MAX_MEMBERS {
            return Err(MemberError::Full);
        }
        self.change(|b| {
            b.members.retain(|m| m.peer != bytes);
            if !b.revoked.contains(&bytes) {
                b.revoked.push(bytes);
            }
        })
    }

    /// Updates this node's own addresses in the roster if they changed
    /// (admin only; others' entries are the addresses they joined with).
    pub fn set_own_addrs(&self, me: &PeerId, addrs: &[Multiaddr]) -> Result<(), MemberError> {
        if self.admin.is_none() {
            return Ok(());
        }
        let mine: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let bytes = me.to_bytes();
        let same = self
            .read()
            .body
            .members
            .iter()
            .any(|m| m.peer == bytes && m.addrs == mine);
        if !same {
            self.change(|b| {
                if let Some(m) = b.members.iter_mut().find(|m| m.peer == bytes) {
                    m.addrs = mine;
                }
            })?;
        }
        Ok(())
    }

    /// Storage members other than `me`, with their addresses.
    pub fn storage_peers(&self, me: &PeerId) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.read()
            .body
            .members
            .iter()
            .filter(|m| m.role == Role::Serve)
            .filter_map(|m| Some((m.peer_id()?, addrs_of(m))))
            .filter(|(p, _)| p != me)
            .collect()
    }

    /// Every member other than `me`, with their addresses.
    pub fn others(&self, me: &PeerId) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.read()
            .body
            .members
            .iter()
            .filter_map(|m| Some((m.peer_id()?, addrs_of(m))))
            .filter(|(p, _)| p != me)
            .collect()
    }

    /// The addresses the roster gives for `peer`.
    pub fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.read()
            .body
            .member(peer)
            .map(addrs_of)
            .unwrap_or_default()
    }
}

fn addrs_of(m: &Member) -> Vec<Multiaddr> {
    m.addrs.iter().filter_map(|a| a.parse().ok()).collect()
}
