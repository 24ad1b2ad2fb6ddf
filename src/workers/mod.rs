//! Background workers: every background job implements one [`Worker`]
//! trait, and one [`Runner`] runs them all.
//!
//! Owns:
//! * [`Worker`]: a name, a status snapshot, one bounded unit of work
//!   ([`Worker::work`]) and how long to wait when there is none
//!   ([`Worker::wait_for_work`]).
//! * [`Runner`] ([`runner`]): one thread per worker; back-off on errors
//!   (doubling, capped, reset on success), tranquility (after a busy step
//!   of duration d, sleep tranquility × d: a bounded share of the
//!   machine), the exit deadline, and the status table
//!   ([`Runner::status`]).
//! * [`Clock`] ([`clock`]): time, injected ([`SystemClock`], or
//!   [`ManualClock`] in tests), and the [`Stop`] signal.
//! * The workers: [`UploaderWorker`] ([`uploader`]) places new chunks'
//!   shards on peers and releases peers' copies of deleted chunks (the
//!   upload queue of `placement`).
//!
//! May not: import `node` (the node starts workers, not the reverse);
//! take the core's locks (workers reach `fs` through its public API: the
//! index and its queues); know about libp2p.
//!
//! Invariants: a worker never stops forever on an error (the runner backs
//! off and tries again); a worker's step is bounded, so a stop is seen
//! within one step; every durable effect of a step is one index batch, so
//! a crash repeats at most the step it interrupted.

pub mod clock;
pub mod healer;
pub mod runner;
pub mod scrubber;
pub mod uploader;

use std::time::Duration;

pub use clock::{Clock, ManualClock, Stop, SystemClock};
pub use healer::{HealerStats, HealerWorker};
pub use runner::{ERROR_BACKOFF_MAX, ERROR_BACKOFF_START, RunState, Runner, WorkerStatus};
pub use scrubber::{ScrubStats, ScrubberWorker};
pub use uploader::{StepError, UploaderSnapshot, UploaderStats, UploaderWorker};

use crate::chunks::ChunkError;
use crate::fs::FsError;
use crate::store::StoreError;

/// What a step of work found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// It did work and there may be more: the next step comes at once
    /// (after the tranquility pause).
    Busy,
    /// Nothing to do: the next step comes after [`Worker::wait_for_work`].
    Idle,
    /// Finished for good: the runner ends the worker.
    Done,
}

/// Why a step failed. The runner logs it, counts it and backs off; the
/// worker is tried again.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The filesystem core failed (e.g. its queue could not be read).
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chunk layer failed (a record, the upload queue).
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

/// What a worker tells the status table about its own progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerProgress {
    /// Items waiting, when the worker knows without a scan.
    pub queue_length: Option<u64>,
    /// The worker's counters, by name (e.g. `chunks_placed`).
    pub counters: Vec<(&'static str, u64)>,
}

/// A background job (see the module docs). Runs on a thread of its own:
/// methods may block, but [`Worker::work`] must return within a bounded
/// time (a batch of items, not a whole queue), so that a stop is seen.
pub trait Worker: Send {
    /// A short name for logs and the status table (e.g. `uploader`).
    fn name(&self) -> String;

    /// A snapshot of the worker's progress. Called after every step: keep
    /// it cheap (counters, no scans).
    fn status(&self) -> WorkerProgress {
        WorkerProgress::default()
    }

    /// Does one bounded unit of work. `stop` is raised when the node shuts
    /// down: a long step may look at it and return early.
    fn work(&mut self, stop: &Stop) -> Result<WorkerState, WorkerError>;

    /// How long to wait before the next step after an idle one.
    fn wait_for_work(&mut self) -> Duration;
}

#[cfg(test)]
mod runner_tests;
#[cfg(test)]
mod tests;
