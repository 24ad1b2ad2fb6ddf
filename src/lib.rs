//! Pangea core library.
//!
//! Module map (imports point up this list, never down: `fs` may use the
//! modules above it, `cache`, `store` and `ces` use none of the others):
//! * [`ces`]: compress → encrypt → shard and back. Pure: no I/O, no async,
//!   no threads; knows nothing of files, the index or the network.
//! * [`store`]: the local store: a column-family key-value index (RocksDB,
//!   or in memory for tests) and whole files named by 32-byte ids. Knows
//!   nothing of filesystems, CES or the network; the only user of `rocksdb`.
//! * [`cache`]: the moka cache of plaintext chunks (byte-weighted, TTL
//!   extended on every read).
//! * [`fs`]: the filesystem core: namespace, file data through CES, xattrs,
//!   POSIX rules. Knows nothing of FUSE (the adapter lives in `mount/`).
//! * [`workers`]: background workers over the core (the uploader).
//!
//! Later layers (see docs/ARCHITECTURE.md): `net`, `ctl`.

pub mod cache;
pub mod ces;
pub mod fs;
pub mod store;
pub mod workers;

#[cfg(test)]
mod testutil;
