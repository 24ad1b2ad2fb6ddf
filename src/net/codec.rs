//! The request-response codec of `/pangea/shard/1`: each message is a
//! 4-byte little-endian length, then the message ([`super::wire`]). The
//! length is checked against the limit of its direction before a byte of
//! the message is read (the built-in codecs cap requests at 1 MiB, below
//! the largest shard).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use super::member::{Invite, NetworkInfo, Role, SignedRoster};
use super::wire::{MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Request, Response, WireError};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardCodec;

fn invalid(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Reads one length-prefixed message of at most `max` bytes.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let n = u32::from_le_bytes(len) as usize;
    if n > max {
        return Err(invalid(WireError::TooLarge {
            what: "a message",
            max,
            got: n,
        }));
    }
    let mut buf = vec![0u8; n];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one length-prefixed message.
async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let n = u32::try_from(bytes.len()).map_err(|_| {
        invalid(WireError::TooLarge {
            what: "a message",
            max: u32::MAX as usize,
            got: bytes.len(),
        })
    })?;
    io.write_all(&n.to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

impl request_response::Codec for ShardCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        Request::decode(&read_frame(io, MAX_REQUEST_LEN).await?).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        Response::decode(&read_frame(io, MAX_RESPONSE_LEN).await?).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.encode().map_err(invalid)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode().map_err(invalid)?).await
    }
}

/// The membership protocol (`/pangea/member/1`): postcard messages
/// ([`MemberRequest`], [`MemberResponse`]), length-prefixed like the shard
/// protocol's and bounded by [`MAX_MEMBER_MSG`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberCodec;

/// The largest membership message (a full roster and its signature).
pub const MAX_MEMBER_MSG: usize = super::member::MAX_ROSTER_LEN + (8 << 10);

fn postcard_invalid(_: postcard::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed membership message")
}

impl request_response::Codec for MemberCodec {
    type Protocol = StreamProtocol;
    type Request = MemberRequest;
    type Response = MemberResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<MemberRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        postcard::from_bytes(&read_frame(io, MAX_MEMBER_MSG).await?).map_err(postcard_invalid)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<MemberResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        postcard::from_bytes(&read_frame(io, MAX_MEMBER_MSG).await?).map_err(postcard_invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: MemberRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &postcard::to_allocvec(&req).map_err(postcard_invalid)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: MemberResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &postcard::to_allocvec(&res).map_err(postcard_invalid)?).await
    }
}

/// What members (and joiners) ask each other.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MemberRequest {
    /// Admit me with this invite (the only request a stranger may make).
    Join {
        invite: Invite,
        role: Role,
        name: String,
        addrs: Vec<String>,
    },
    /// Here is my roster; send yours if it is newer.
    Sync { roster: SignedRoster },
    /// A recovering device (a stranger holding the owner's recovery kit)
    /// asks for the current roster, proving it holds the admin key: the
    /// admin's signature over [`recover_message`] for its own peer id at
    /// `time_ms` (within ten minutes of the answerer's clock).
    Recover {
        time_ms: u64,
        signature: Vec<u8>,
        /// The owner's backup-root slot: its root is sent back too.
        slot: [u8; 32],
    },
}

/// What the admin key signs to ask for the roster as `asker` at `time_ms`.
pub fn recover_message(network: &[u8; 16], asker: &libp2p::PeerId, time_ms: u64) -> Vec<u8> {
    let mut m = b"pangea recover v1\0".to_vec();
    m.extend_from_slice(network);
    m.extend_from_slice(&asker.to_bytes());
    m.extend_from_slice(&time_ms.to_le_bytes());
    m
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JoinRefusal {
    Expired,
    UsedUp,
    Forged,
    OtherNetwork,
    NotAdmin,
    Malformed,
    Banned,
    Removed,
    Full,
    /// The admin node could not admit anyone just now (its own disk or
    /// roster); no fault of the joiner's.
    Unavailable,
}

impl std::fmt::Display for JoinRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinRefusal::Expired => "the invite has expired; ask for a new one (pangea invite)",
            JoinRefusal::UsedUp => "the invite has been used up; ask for a new one (pangea invite)",
            JoinRefusal::Forged => {
                "the invite was not signed by the network's admin key (forged or altered)"
            }
            JoinRefusal::OtherNetwork => "the invite is for another network",
            JoinRefusal::NotAdmin => "the node dialled holds no admin key and cannot admit anyone",
            JoinRefusal::Malformed => "the invite is damaged",
            JoinRefusal::Banned => {
                "this device is banned by the admin node (too many failed attempts); wait and retry"
            }
            JoinRefusal::Removed => {
                "this device was removed from the network; the admin must invite a new device"
            }
            JoinRefusal::Full => "the network has as many members as a roster holds",
            JoinRefusal::Unavailable => {
                "the admin node cannot admit anyone just now (see its log); try again later"
            }
        })
    }
}

/// The answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MemberResponse {
    /// Admitted: the network and the roster that names the newcomer.
    Welcome {
        network: NetworkInfo,
        roster: SignedRoster,
    },
    /// The answer to a sync: our roster when it is newer than the one sent.
    Roster { newer: Option<SignedRoster> },
    /// Not admitted.
    Refused(JoinRefusal),
    /// The answer to a recovery's proof: the current roster, and the
    /// backup root this node keeps in the slot asked for (seq, blob).
    Recovered {
        roster: SignedRoster,
        root: Option<(u64, Vec<u8>)>,
    },
}
