//! Membership: who belongs to a network, and how a newcomer gets in.
//!
//! * A **network** has an id (16 random bytes) and an **admin key**
//!   (Ed25519, apart from every device's own key). The first node creates
//!   both and keeps the admin key; members know the admin's public key.
//! * The **roster** is the list of members' peer ids (with a role, a name
//!   and the addresses they listen on), versioned by an epoch and signed by
//!   the admin key. Every member keeps the highest valid epoch it has seen;
//!   rosters are exchanged on every connection, and a change is pushed to
//!   every connected member. Removed peers are listed as revoked.
//! * An **invite** is a one-line token signed by the admin key: the
//!   network id, the admin's public key, the invite's id, its expiry, how
//!   many devices it may admit, and the addresses of the admin node to
//!   dial. The admin node counts the uses it admitted.
//!
//! Everything here is bytes and signatures: no I/O but [`MemberFiles`],
//! which keeps the network's files in a directory (docs/FORMAT.md).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use libp2p::{PeerId, identity};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Domain separation of the admin key's two kinds of signature.
const ROSTER_DOMAIN: &[u8] = b"pangea roster v1\0";
const TOKEN_DOMAIN: &[u8] = b"pangea invite v1\0";
/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "pangea-invite-1.";
/// Most members a roster holds (and revoked peers it remembers).
pub const MAX_MEMBERS: usize = 512;
/// Most addresses kept per member.
pub const MAX_ADDRS: usize = 8;
/// The largest signed roster, in bytes.
pub const MAX_ROSTER_LEN: usize = 256 << 10;
/// The largest token, in characters.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why membership data is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MemberError {
    #[error(
        "not an invite token (it should start with {TOKEN_PREFIX}); check that it was copied whole"
    )]
    NotAToken,
    #[error("the invite token is damaged (it does not decode); check that it was copied whole")]
    Malformed,
    #[error("the invite token's signature is not valid: it was altered or forged")]
    Forged,
    #[error("the invite expired {0} s ago; ask for a new one (pangea invite)")]
    Expired(u64),
    #[error("the invite has been used up; ask for a new one (pangea invite)")]
    UsedUp,
    #[error("the invite is for another network")]
    OtherNetwork,
    #[error("the roster is not valid: {0}")]
    BadRoster(&'static str),
    #[error(
        "this node holds no admin key for the network (run the command on the node that created it)"
    )]
    NotAdmin,
    #[error("this device was removed from the network; the admin must invite a new device")]
    Removed,
    #[error("the network is full ({MAX_MEMBERS} members)")]
    Full,
    #[error("{0}")]
    Io(String),
}

/// What a member does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A filesystem node (`pangea-mount`): owns data, stores shards on peers.
    Mount,
    /// A storage node (`pangea serve`): stores other members' shards.
    Serve,
}

/// One member of the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its peer id, as bytes.
    pub peer: Vec<u8>,
    pub role: Role,
    /// A name for people (the host name by default).
    pub name: String,
    /// Where it listens (multiaddrs as text).
    pub addrs: Vec<String>,
    /// When it joined (Unix ms).
    pub added_ms: u64,
}

impl Member {
    /// Its peer id, if the bytes are one.
    pub fn peer_id(&self) -> Option<PeerId> {
        PeerId::from_bytes(&self.peer).ok()
    }
}

/// The signed content of a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterBody {
    pub network: [u8; 16],
    /// Grows by one with every change; the highest valid epoch wins.
    pub epoch: u64,
    pub members: Vec<Member>,
    /// Peers removed from the network (refused even if a stale roster
    /// still names them).
    pub revoked: Vec<Vec<u8>>,
}

/// A roster as exchanged and stored: its body's bytes and the admin key's
/// signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRoster {
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
}

impl SignedRoster {
    /// Signs `body` with the admin key.
    pub fn sign(body: &RosterBody, admin: &identity::Keypair) -> Result<SignedRoster, MemberError> {
        let bytes = postcard::to_allocvec(body).map_err(|_| MemberError::BadRoster("encoding"))?;
        if bytes.len() > MAX_ROSTER_LEN {
            return Err(MemberError::BadRoster("too many members"));
        }
        let signature = admin
            .sign(&[ROSTER_DOMAIN, &bytes].concat())
            .map_err(|_| MemberError::BadRoster("signing"))?;
        Ok(SignedRoster {
            body: bytes,
            signature,
        })
    }

    /// The body, if the signature is the admin's and the roster is of
    /// `network`.
    pub fn verify(&self, network: &NetworkInfo) -> Result<RosterBody, MemberError> {
        if self.body.len() > MAX_ROSTER_LEN {
            return Err(MemberError::BadRoster("too large"));
        }
        let admin = network.admin_key()?;
        if !admin.verify(&[ROSTER_DOMAIN, &self.body].concat(), &self.signature) {
            return Err(MemberError::BadRoster("signature"));
        }
        let body: RosterBody =
            postcard::from_bytes(&self.body).map_err(|_| MemberError::BadRoster("decoding"))?;
        if !bool::from(body.network.ct_eq(&network.network)) {
            return Err(MemberError::BadRoster("another network"));
        }
        if body.members.len() > MAX_MEMBERS || body.revoked.len() > MAX_MEMBERS {
            return Err(MemberError::BadRoster("too many members"));
        }
        Ok(body)
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedRoster, MemberError> {
        if bytes.len() > MAX_ROSTER_LEN + 256 {
            return Err(MemberError::BadRoster("too large"));
        }
        postcard::from_bytes(bytes).map_err(|_| MemberError::BadRoster("decoding"))
    }
}

impl RosterBody {
    /// The member `peer`, if it is one (and not revoked).
    pub fn member(&self, peer: &PeerId) -> Option<&Member> {
        let bytes = peer.to_bytes();
        if self.revoked.contains(&bytes) {
            return None;
        }
        self.members.iter().find(|m| m.peer == bytes)
    }

    /// Is `peer` a member?
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.member(peer).is_some()
    }
}

/// What every member knows of its network: the id and the admin's public
/// key (to check rosters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub network: [u8; 16],
    /// The admin's public key (libp2p's protobuf encoding).
    pub admin: Vec<u8>,
}

impl NetworkInfo {
    pub fn admin_key(&self) -> Result<identity::PublicKey, MemberError> {
        identity::PublicKey::try_decode_protobuf(&self.admin)
            .map_err(|_| MemberError::BadRoster("admin key"))
    }

    /// The network id in hex (for people and logs; not a secret).
    pub fn id_hex(&self) -> String {
        self.network.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The signed content of an invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteBody {
    pub network: NetworkInfo,
    /// Names the invite (its uses are counted under it).
    pub id: [u8; 16],
    /// Unix ms after which it admits no one.
    pub expires_ms: u64,
    /// How many devices it may admit.
    pub uses: u16,
    /// Admin nodes to dial: (peer id bytes, multiaddrs).
    pub bootstrap: Vec<(Vec<u8>, Vec<String>)>,
}

/// An invite token: its body and the admin key's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Invite {
    /// Signs an invite with the admin key.
    pub fn sign(body: &InviteBody, admin: &identity::Keypair) -> Result<Invite, MemberError> {
        let bytes = postcard::to_allocvec(body).map_err(|_| MemberError::Malformed)?;
        let signature = admin
            .sign(&[TOKEN_DOMAIN, &bytes].concat())
            .map_err(|_| MemberError::Malformed)?;
        Ok(Invite {
            body: bytes,
            signature,
        })
    }

    /// The one-line token.
    pub fn to_token(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        format!("{TOKEN_PREFIX}{}", BASE64URL_NOPAD.encode(&bytes))
    }

    /// Parses a token and checks it is signed by the admin key it names
    /// and has not expired (what a joiner can check alone). The admin node
    /// checks [`Invite::verify_for`] as well.
    pub fn parse(token: &str) -> Result<(Invite, InviteBody), MemberError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(MemberError::Malformed);
        }
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(MemberError::NotAToken)?;
        let bytes = BASE64URL_NOPAD
            .decode(rest.as_bytes())
            .map_err(|_| MemberError::Malformed)?;
        let invite: Invite = postcard::from_bytes(&bytes).map_err(|_| MemberError::Malformed)?;
        let body = invite.open(None)?;
        Ok((invite, body))
    }

    /// The body, if signed by the key it names (or by `network`'s admin key
    /// when given, for the same network) and not expired.
    fn open(&self, network: Option<&NetworkInfo>) -> Result<InviteBody, MemberError> {
        let body: InviteBody =
            postcard::from_bytes(&self.body).map_err(|_| MemberError::Malformed)?;
        if let Some(n) = network {
            let same = n.network.ct_eq(&body.network.network) & n.admin.ct_eq(&body.network.admin);
            if !bool::from(same) {
                return Err(MemberError::OtherNetwork);
            }
        }
        let key = body
            .network
            .admin_key()
            .map_err(|_| MemberError::Malformed)?;
        if !key.verify(&[TOKEN_DOMAIN, &self.body].concat(), &self.signature) {
            return Err(MemberError::Forged);
        }
        let now = now_ms();
        if now > body.expires_ms {
            return Err(MemberError::Expired((now - body.expires_ms) / 1000));
        }
        Ok(body)
    }

    /// The body, checked against the admin node's own network.
    pub fn verify_for(&self, network: &NetworkInfo) -> Result<InviteBody, MemberError> {
        self.open(Some(network))
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Invite, MemberError> {
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(MemberError::Malformed);
        }
        postcard::from_bytes(bytes).map_err(|_| MemberError::Malformed)
    }
}

/// The network's files in a node's data dir (`net/`): the device's own key
/// (`identity.key`), the network (`network`), the roster (`roster`), and on
/// the admin node the admin key (`admin.key`) and the invites' uses
/// (`invites`). Secrets are written 0600, every file atomically.
pub struct MemberFiles {
    dir: PathBuf,
}

/// How many devices each invite admitted (the admin node's record).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InviteUses {
    pub used: Vec<([u8; 16], u16, u64)>,
}

impl MemberFiles {
    pub fn new(dir: &Path) -> MemberFiles {
        MemberFiles {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, MemberError> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(MemberError::Io(format!(
                "{}: {e}",
                self.dir.join(name).display()
            ))),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), MemberError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| MemberError::Io(format!("{}: {e}", self.dir.display()));
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, self.dir.join(name)).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// The device's key, created on first use (never copied elsewhere).
    pub fn identity(&self) -> Result<identity::Keypair, MemberError> {
        if let Some(b) = self.read("identity.key")? {
            return identity::Keypair::from_protobuf_encoding(&b)
                .map_err(|_| MemberError::Io("net/identity.key is damaged".into()));
        }
        let key = identity::Keypair::generate_ed25519();
        let bytes = key
            .to_protobuf_encoding()
            .map_err(|e| MemberError::Io(e.to_string()))?;
        self.write("identity.key", &bytes)?;
        Ok(key)
    }

    pub fn network(&self) -> Result<Option<NetworkInfo>, MemberError> {
        self.read("network")?
            .map(|b| {
                postcard::from_bytes(&b)
                    .map_err(|_| MemberError::Io("net/network is damaged".into()))
            })
            .transpose()
    }

    pub fn save_network(&self, n: &NetworkInfo) -> Result<(), MemberError> {
        self.write(
            "network",
            &postcard::to_allocvec(n).map_err(|e| MemberError::Io(e.to_string()))?,
        )
    }

    pub fn admin(&self) -> Result<Option<identity::Keypair>, MemberError> {
        self.read("admin.key")?
            .map(|b| {
                identity::Keypair::from_protobuf_encoding(&b)
                    .map_err(|_| MemberError::Io("net/admin.key is damaged".into()))
            })
            .transpose()
    }

    pub fn save_admin(&self, key: &identity::Keypair) -> Result<(), MemberError> {
        let bytes = key
            .to_protobuf_encoding()
            .map_err(|e| MemberError::Io(e.to_string()))?;
        self.write("admin.key", &bytes)
    }

    pub fn roster(&self) -> Result<Option<SignedRoster>, MemberError> {
        self.read("roster")?
            .map(|b| SignedRoster::decode(&b))
            .transpose()
    }

    pub fn save_roster(&self, r: &SignedRoster) -> Result<(), MemberError> {
        self.write("roster", &r.encode())
    }

    /// The uses counted so far. A damaged file is an error, not an empty
    /// count (which would let used-up invites admit again).
    pub fn invite_uses(&self) -> Result<InviteUses, MemberError> {
        match self.read("invites")? {
            None => Ok(InviteUses::default()),
            Some(b) => postcard::from_bytes(&b)
                .map_err(|_| MemberError::Io("net/invites is damaged".into())),
        }
    }

    pub fn save_invite_uses(&self, u: &InviteUses) -> Result<(), MemberError> {
        self.write(
            "invites",
            &postcard::to_allocvec(u).map_err(|e| MemberError::Io(e.to_string()))?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> (NetworkInfo, identity::Keypair) {
        let admin = identity::Keypair::generate_ed25519();
        (
            NetworkInfo {
                network: [7; 16],
                admin: admin.public().encode_protobuf(),
            },
            admin,
        )
    }

    fn invite(n: &NetworkInfo, admin: &identity::Keypair, expires_ms: u64) -> Invite {
        Invite::sign(
            &InviteBody {
                network: n.clone(),
                id: [1; 16],
                expires_ms,
                uses: 1,
                bootstrap: vec![(
                    PeerId::random().to_bytes(),
                    vec!["/ip4/127.0.0.1/tcp/1".into()],
                )],
            },
            admin,
        )
        .unwrap()
    }

    #[test]
    fn a_token_round_trips_and_checks_its_signature_and_expiry() {
        let (n, admin) = network();
        let inv = invite(&n, &admin, now_ms() + 60_000);
        let token = inv.to_token();
        assert!(token.len() < 600, "{}", token.len());
        let (back, body) = Invite::parse(&token).unwrap();
        assert_eq!(back, inv);
        assert_eq!(body.network, n);
        assert!(back.verify_for(&n).is_ok());

        let old = invite(&n, &admin, now_ms() - 5_000);
        assert!(matches!(
            Invite::parse(&old.to_token()),
            Err(MemberError::Expired(_))
        ));
        // Signed by another key than the one it names: forged.
        let (_, other) = network();
        let mut forged = invite(&n, &other, now_ms() + 60_000);
        assert_eq!(
            Invite::parse(&forged.to_token()).unwrap_err(),
            MemberError::Forged
        );
        // A valid token of another network, presented to this one.
        let (n2, admin2) = network();
        let foreign = invite(&n2, &admin2, now_ms() + 60_000);
        assert_eq!(
            foreign.verify_for(&n).unwrap_err(),
            MemberError::OtherNetwork
        );
        // Any changed byte of the body breaks the signature or the parse.
        forged = inv.clone();
        let last = forged.body.len() - 1;
        forged.body[last] ^= 1;
        assert!(Invite::parse(&forged.to_token()).is_err());
        assert_eq!(Invite::parse("hello").unwrap_err(), MemberError::NotAToken);
        assert_eq!(
            Invite::parse(&format!("{TOKEN_PREFIX}!!!")).unwrap_err(),
            MemberError::Malformed
        );
        let cut = &token[..token.len() - 10];
        assert!(Invite::parse(cut).is_err());
    }

    #[test]
    fn a_roster_is_valid_only_signed_by_its_admin_for_its_network() {
        let (n, admin) = network();
        let me = PeerId::random();
        let gone = PeerId::random();
        let body = RosterBody {
            network: n.network,
            epoch: 3,
            members: vec![
                Member {
                    peer: me.to_bytes(),
                    role: Role::Mount,
                    name: "laptop".into(),
                    addrs: vec![],
                    added_ms: 1,
                },
                Member {
                    peer: gone.to_bytes(),
                    role: Role::Serve,
                    name: "box".into(),
                    addrs: vec![],
                    added_ms: 1,
                },
            ],
            revoked: vec![gone.to_bytes()],
        };
        let signed = SignedRoster::sign(&body, &admin).unwrap();
        let back = SignedRoster::decode(&signed.encode()).unwrap();
        let checked = back.verify(&n).unwrap();
        assert!(checked.is_member(&me));
        assert!(!checked.is_member(&gone), "revoked wins over listed");
        assert!(!checked.is_member(&PeerId::random()));

        let (_, other) = network();
        let forged = SignedRoster::sign(&body, &other).unwrap();
        assert!(forged.verify(&n).is_err());
        let mut tampered = signed.clone();
        tampered.body[2] ^= 1;
        assert!(tampered.verify(&n).is_err());
        let foreign = RosterBody {
            network: [9; 16],
            ..body
        };
        let foreign = SignedRoster::sign(&foreign, &admin).unwrap();
        assert!(foreign.verify(&n).is_err());
    }

    #[test]
    fn files_keep_the_identity_and_write_secrets_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let files = MemberFiles::new(&d.path().join("net"));
        let a = files.identity().unwrap();
        let b = files.identity().unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = std::fs::metadata(d.path().join("net/identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(files.network().unwrap().is_none());
        let (n, admin) = network();
        files.save_network(&n).unwrap();
        files.save_admin(&admin).unwrap();
        assert_eq!(files.network().unwrap(), Some(n));
        assert_eq!(files.admin().unwrap().unwrap().public(), admin.public());
    }
}
