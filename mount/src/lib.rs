//! `pangea-mount`'s library: the FUSE adapter ([`fuse`]) and the mount
//! command's option handling and start-up checks ([`cli`]).
//!
//! May not: hold filesystem logic (it belongs in `pangea::fs`).

pub mod cli;
pub mod fuse;
