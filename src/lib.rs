//! Pangea core library.
//!
//! Module map (imports point up this list, never down: `fs` may use the
//! modules above it, `cache`, `store` and `ces` use none of the others;
//! `scripts/check-layering` keeps it true):
//! * [`ces`]: compress → encrypt → shard and back. Pure: no I/O, no async,
//!   no threads; knows nothing of files, the index or the network.
//! * [`store`]: the local store: a column-family key-value index (RocksDB,
//!   or in memory for tests) and whole files named by 32-byte ids. Knows
//!   nothing of filesystems, CES or the network; the only user of `rocksdb`.
//! * [`cache`]: the moka cache of plaintext chunks (byte-weighted, TTL
//!   extended on every read).
//! * [`fs`]: the filesystem core: namespace, file data through CES, xattrs,
//!   POSIX rules. Knows nothing of FUSE (the adapter lives in `mount/`).
//! * [`workers`]: one `Worker` trait and one runner (back-off, tranquility,
//!   exit deadline, status table, injected clock) for every background
//!   job; the uploader is the first. Uses `fs`; never imports `node`.
//! * [`node`]: the process, for every front end: the data dir and its key,
//!   the index, the `Fs`, the release queue and the workers, opened by
//!   `Node::open` and taken apart in one written-down shutdown order. Uses
//!   all of the above; nothing in the crate imports it (the front ends in
//!   `mount/` do).
//!
//! Later layers (see docs/ARCHITECTURE.md): `net`, `ctl`.

pub mod cache;
pub mod ces;
pub mod fs;
#[cfg(feature = "rocksdb")]
pub mod node;
pub mod store;
pub mod workers;

#[cfg(test)]
mod testutil;
