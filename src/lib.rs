//! Pangea core library.
//!
//! Module map, top-down: each module may use the ones below it, never one
//! above (`scripts/check-layering` keeps this true, and no two modules
//! import each other):
//! * [`node`]: the process, for every front end: the data dir and its key,
//!   the index, the `Fs`, the release queue and the workers, opened by
//!   `Node::open` and taken apart in one written-down shutdown order.
//!   Nothing in the crate imports it (the front ends in `mount/` do).
//! * [`workers`]: one `Worker` trait and one runner (back-off, tranquility,
//!   exit deadline, status table, injected clock) for every background
//!   job; the uploader is the first.
//! * [`fs`]: the filesystem core: namespace, open files and write buffers,
//!   commits, garbage collection, xattrs, POSIX rules, fsck. Knows nothing
//!   of FUSE (the adapter lives in `mount/`).
//! * [`net`]: the network layer (the only user of `libp2p`): the shard and
//!   membership protocols, the swarm, the guard, a storage node's store,
//!   and the network behind the placement and chunk seams.
//! * [`placement`]: the durable upload queue, the peer table and the
//!   transport seam through which shards reach peers.
//! * [`chunks`]: the data plane: chunk records, encoding and loading chunks
//!   through CES on thread pools, shard sources, repair, read-ahead.
//! * [`store`], [`cache`], [`ces`] (leaves, apart from each other): the
//!   local index and chunk files (the only user of `rocksdb`); the moka
//!   cache of plaintext chunks; compress → encrypt → shard, pure (no I/O,
//!   no async, no threads).

pub mod cache;
pub mod ces;
pub mod chunks;
pub mod fs;
pub mod net;
#[cfg(feature = "rocksdb")]
pub mod node;
pub mod placement;
pub mod store;
pub mod workers;

#[cfg(test)]
mod testutil;
