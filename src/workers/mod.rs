//! Background workers: small structs with one job each, a shutdown path
//! and counters. They reach the filesystem core only through its public
//! API (the index and its queues), never through its locks.
//!
//! * [`Uploader`]: places new chunks' shards on peers and releases peers'
//!   copies of deleted chunks (the upload queue of `placement`).

pub mod uploader;

pub use uploader::{StepError, Uploader, UploaderSnapshot, UploaderStats};

#[cfg(test)]
mod tests;
