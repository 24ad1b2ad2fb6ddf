//! The network layer: the only module that will name `libp2p` (issue 12).
//! So far it holds the shard protocol's wire format ([`wire`]); the swarm,
//! its client, the membership roster and the guard come next, behind the
//! seams the layers below already have (`placement::ShardTransport` to place
//! shards, `chunks::ShardSource` to read them back).
//!
//! May not: import `fs`, `workers` or `node` (the node wires the network
//! in; the filesystem never waits on it directly).

pub mod wire;
