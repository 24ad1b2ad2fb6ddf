//! Pangea core library.
//!
//! Module map (imports point down this list, never up):
//! * [`ces`]: compress → encrypt → shard and back. Pure: no I/O, no async,
//!   no threads; knows nothing of files, the index or the network.
//!
//! Later layers (see docs/ARCHITECTURE.md): `fs` (namespace and file data),
//! `store` (RocksDB index and shard store), `cache`, `net`, `workers`.

pub mod ces;
