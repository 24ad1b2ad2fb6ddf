//! The transport seam: how shards reach peers. The network layer
//! implements it; tests use peers in memory.

use thiserror::Error;

use super::peers::PeerId;
use crate::ces::ShardId;

/// A shard to place: its index in the chunk, its address and bytes. The
/// bytes have been checked against the address by whoever read them (the
/// sender's check; the receiving peer checks again).
#[derive(Debug, Clone)]
pub struct ShardToPlace {
    pub index: u16,
    pub address: ShardId,
    pub bytes: Vec<u8>,
}

/// A shard copy a peer now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub index: u16,
    pub address: ShardId,
    pub peer: PeerId,
}

/// Why one shard was not placed (or one copy not released).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlaceError {
    /// No peer is available for it (none known, or all excluded).
    #[error("no peer can take the shard")]
    NoPeer,
    /// The peer did not answer in time, or is not connected.
    #[error("peer {0} is down or did not answer in time")]
    PeerDown(PeerId),
    /// The peer has no room (its quota).
    #[error("peer {0} is full")]
    Full(PeerId),
    /// The peer refused the request (not a member, banned, bad request).
    #[error("peer {peer} refused: {reason}")]
    Refused { peer: PeerId, reason: &'static str },
    /// The peer answered with bytes that are not the shard.
    #[error("peer {0} answered with a wrong shard")]
    Corrupt(PeerId),
}

/// How a chunk's shards are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// At most this many of the chunk's shards (those of `avoid`
    /// included) in one failure domain where the peers span two or more
    /// (the chunk's m: losing a domain leaves k). A shard that cannot be
    /// placed so is placed anyway, on the best peer left.
    pub per_domain: usize,
    /// Place on peers that are up only, and share the chunk among them
    /// (a repair, or a shard that waited long enough for a down peer).
    /// False: a down member keeps its share, and its shards wait for it.
    pub only_up: bool,
}

impl Spread {
    /// No domain cap; down members keep their share.
    pub const ANY: Spread = Spread {
        per_domain: usize::MAX,
        only_up: false,
    };
}

/// Where shards go: the transport to peers.
pub trait ShardTransport: Send + Sync {
    /// Stores a copy of each of `shards` (the shards of one chunk still
    /// unplaced) on peers, spread over distinct peers where there are
    /// enough and on none of `avoid` if possible (they hold other shards of
    /// the chunk already). May run the puts concurrently. Returns one
    /// result per shard, in order: the peer that now holds it, or why not.
    fn place(&self, shards: &[ShardToPlace], avoid: &[PeerId]) -> Vec<Result<PeerId, PlaceError>>;

    /// [`ShardTransport::place`], spread as `spread` says. Transports that
    /// know no domains or liveness place as `place` does.
    fn place_spread(
        &self,
        shards: &[ShardToPlace],
        avoid: &[PeerId],
        spread: Spread,
    ) -> Vec<Result<PeerId, PlaceError>> {
        let _ = spread;
        self.place(shards, avoid)
    }

    /// Asks `peer` to delete its copy of the shard at `address`.
    fn release(&self, peer: &PeerId, address: &ShardId) -> Result<(), PlaceError>;

    /// Asks `peer` to prove it holds the shard at `address`: its BLAKE3
    /// keyed with `nonce` over the shard's bytes. Ok(None): the peer says
    /// it does not hold it. Transports without proofs refuse.
    fn prove(
        &self,
        peer: &PeerId,
        address: &ShardId,
        nonce: &[u8; 32],
    ) -> Result<Option<[u8; 32]>, PlaceError> {
        let _ = (address, nonce);
        Err(PlaceError::Refused {
            peer: peer.clone(),
            reason: "no proofs on this transport",
        })
    }

    /// `peer`'s copy of the shard at `address`, checked against the
    /// address (Ok(None): not held, or wrong bytes). Transports without
    /// fetches refuse.
    fn fetch(&self, peer: &PeerId, address: &ShardId) -> Result<Option<Vec<u8>>, PlaceError> {
        let _ = address;
        Err(PlaceError::Refused {
            peer: peer.clone(),
            reason: "no fetches on this transport",
        })
    }
}
