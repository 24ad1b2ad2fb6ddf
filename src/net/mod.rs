//! The network layer: the only module that names `libp2p`.
//!
//! * [`wire`]: the shard protocol's messages (`/pangea/shard/1`) and their
//!   bounded, versioned bytes (always built: the fuzz targets use it).
//! * [`codec`]: those messages over libp2p's request-response, length
//!   checked before a byte is read.
//! * [`swarm`]: one task owns the `Swarm` (TCP with noise and yamux, QUIC,
//!   identify, ping, the shard protocol); the rest of the node holds a
//!   [`swarm::NetClient`] whose calls block with a deadline.
//!
//! * [`member`], [`roster`]: the network, its signed roster and invites;
//!   [`guard`] and the gate: rate limits, bans, refusals at the door;
//! * [`held`]: what a storage node holds for the members;
//! * [`remote`]: the network behind `placement::ShardTransport` and
//!   `chunks::ShardSource`; [`online`]: bringing a node online.
//!
//! May not: import `fs`, `workers` or `node` (the node wires the network
//! in; the filesystem never waits on it directly). mDNS and public
//! bootstrap nodes are never used unless asked for.

/// A device's key and its peer id, for those who hold them without
/// naming libp2p (tools, benchmarks).
#[cfg(feature = "net")]
pub use libp2p::{PeerId as NetPeerId, identity::Keypair as NetKeypair};

#[cfg(feature = "net")]
pub mod codec;
#[cfg(feature = "net")]
mod gate;
#[cfg(feature = "net")]
pub mod guard;
#[cfg(feature = "net")]
pub mod held;
/// A simulated slow link (tests and benchmarks).
#[cfg(feature = "net")]
pub mod impair;
#[cfg(feature = "net")]
pub mod member;
#[cfg(feature = "net")]
pub mod online;
#[cfg(feature = "net")]
pub mod remote;
/// Index backup roots on the storage members; recovery of a lost device.
#[cfg(feature = "net")]
pub mod roots;
#[cfg(feature = "net")]
pub mod roster;
#[cfg(feature = "net")]
pub mod swarm;
#[cfg(feature = "net")]
mod task;
pub mod wire;

#[cfg(all(test, feature = "net"))]
mod tests;
