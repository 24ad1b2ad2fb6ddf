//! The runner: one thread per [`Worker`], and everything workers have in
//! common, so that no worker hand-rolls it:
//! * **back-off on errors**: after the n-th failure in a row the worker
//!   waits [`ERROR_BACKOFF_START`] × 2^(n−1), at most
//!   [`ERROR_BACKOFF_MAX`]; a success resets it. A worker never stops on
//!   an error.
//! * **tranquility**: after a busy step that took d, the worker pauses
//!   tranquility × d, so it takes at most 1 / (1 + tranquility) of a core
//!   (0: no pause).
//! * **the exit deadline**: [`Runner::shutdown`] raises the stop signal
//!   (which ends every sleep at once), waits for the workers' threads at
//!   most the deadline (real time: it bounds how long the process takes
//!   to exit), and names the workers that did not stop.
//! * **the status table**: [`Runner::status`], one [`WorkerStatus`] row per
//!   worker.
//!
//! Time (steps' durations, sleeps) comes from the injected [`Clock`].

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::clock::{Clock, Stop};
use super::{Worker, WorkerProgress, WorkerState};

/// Back-off after a worker's first failure in a row: long enough that a
/// failing index or peer is not hammered, short enough that a passing
/// fault costs little.
pub const ERROR_BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest back-off: a worker whose cause of failure went away resumes
/// within a minute.
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Exit deadline used when a runner is dropped without
/// [`Runner::shutdown`]: steps are bounded (the uploader's is one batch),
/// so a worker still running after this is stuck, and the process goes on
/// without it.
pub const DEFAULT_EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// What a worker is doing, as the status table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// In a step, or about to start one.
    Busy,
    /// Waiting for work ([`Worker::wait_for_work`]).
    Idle,
    /// Backing off after a failed step.
    Throttled {
        /// The back-off in progress.
        retry_in: Duration,
    },
    /// The worker said it is done.
    Done,
    /// Stopped by the runner's shutdown (or ended by a panic).
    Stopped,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunState::Busy => write!(f, "busy"),
            RunState::Idle => write!(f, "idle"),
            RunState::Throttled { retry_in } => write!(f, "throttled ({retry_in:?})"),
            RunState::Done => write!(f, "done"),
            RunState::Stopped => write!(f, "stopped"),
        }
    }
}

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The worker's name ([`Worker::name`]).
    pub name: String,
    /// What it is doing now.
    pub state: RunState,
    /// Its own report ([`Worker::status`]) after its last step.
    pub progress: WorkerProgress,
    /// Failed steps since it started.
    pub errors: u64,
    /// Failed steps in a row (0 after a success): what the back-off is
    /// computed from.
    pub consecutive_failures: u32,
    /// The message of the last failure, for the operator (kept after a
    /// success, so a flapping worker's cause stays visible).
    pub last_error: Option<String>,
    /// Its tranquility (see the module docs).
    pub tranquility: u32,
}

/// Why a worker was not started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The runner is shutting down.
    #[error("worker {name} not started: the runner is shutting down")]
    Stopping {
        /// The worker's name.
        name: String,
    },
    /// The thread could not be created.
    #[error("cannot start the thread of worker {name}: {source}")]
    Thread {
        /// The worker's name.
        name: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Runs workers (see the module docs).
pub struct Runner {
    /// Where the workers' time comes from.
    clock: Arc<dyn Clock>,
    /// Raised once, by `shutdown`: asks every worker to stop and ends
    /// their sleeps.
    stop: Stop,
    /// The workers started and not yet reaped by `shutdown`.
    workers: Mutex<Vec<Running>>,
}

/// The runner's handle on one worker's thread.
struct Running {
    /// The worker's name (kept here: its status may be unreadable after a
    /// panic, the name is needed for the report).
    name: String,
    /// Its row of the status table, updated by its thread.
    status: Arc<Mutex<WorkerStatus>>,
    /// Set when its thread has dropped the worker and is about to end:
    /// what `shutdown` waits for, with a deadline (std has no timed join).
    ended: Arc<(Mutex<bool>, Condvar)>,
    /// Joined once `ended` is set.
    thread: JoinHandle<()>,
}

/// Locks, ignoring poison: the runner's state stays valid when a worker
/// panics (it is only ever assigned whole values).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The back-off after the `failures`-th failure in a row (≥ 1).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    ERROR_BACKOFF_START
        .saturating_mul(1u32 << doublings)
        .min(ERROR_BACKOFF_MAX)
}

impl Runner {
    /// A runner with no workers yet.
    pub fn new(clock: Arc<dyn Clock>) -> Runner {
        Runner {
            clock,
            stop: Stop::new(),
            workers: Mutex::new(Vec::new()),
        }
    }

    /// Starts `worker` on a thread of its own, with the given tranquility.
    pub fn spawn(&self, worker: Box<dyn Worker>, tranquility: u32) -> Result<(), SpawnError> {
        let name = worker.name();
        // Under the table's lock: a shutdown cannot slip between the check
        // and the push, and then miss this worker.
        let mut workers = lock(&self.workers);
        if self.stop.is_raised() {
            return Err(SpawnError::Stopping { name });
        }
        let status = Arc::new(Mutex::new(WorkerStatus {
            name: name.clone(),
            state: RunState::Busy,
            progress: worker.status(),
            errors: 0,
            consecutive_failures: 0,
            last_error: None,
            tranquility,
        }));
        let ended = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let (clock, stop) = (self.clock.clone(), self.stop.clone());
            let (status, ended) = (status.clone(), ended.clone());
            std::thread::Builder::new()
                .name(format!("pangea-{name}"))
                .spawn(move || {
                    let _ended = Ended {
                        ended,
                        status: status.clone(),
                    };
                    run(worker, tranquility, clock.as_ref(), &stop, &status);
                })
                .map_err(|source| SpawnError::Thread {
                    name: name.clone(),
                    source,
                })?
        };
        info!(worker = %name, tranquility, "worker started");
        workers.push(Running {
            name,
            status,
            ended,
            thread,
        });
        Ok(())
    }

    /// Live handles on the rows of the workers started so far (for a
    /// status reader that outlives this borrow: the control socket).
    pub fn status_handles(&self) -> Vec<Arc<Mutex<WorkerStatus>>> {
        lock(&self.workers)
            .iter()
            .map(|w| w.status.clone())
            .collect()
    }

    /// The status table: one row per worker not yet reaped by `shutdown`.
    pub fn status(&self) -> Vec<WorkerStatus> {
        lock(&self.workers)
            .iter()
            .map(|w| lock(&w.status).clone())
            .collect()
    }

    /// Asks every worker to stop, waits for them at most `deadline`, and
    /// returns the names of those that did not stop in time (their threads
    /// are left to end on their own). Idempotent: a second call finds no
    /// workers.
    pub fn shutdown(&self, deadline: Duration) -> Vec<String> {
        let workers = {
            let mut table = lock(&self.workers);
            // Raised under the table's lock (see `spawn`).
            self.stop.raise();
            std::mem::take(&mut *table)
        };
        let give_up = Instant::now() + deadline;
        let mut stuck = Vec::new();
        for w in workers {
            let (flag, cv) = &*w.ended;
            let guard = lock(flag);
            let left = give_up.saturating_duration_since(Instant::now());
            let (guard, _) = cv
                .wait_timeout_while(guard, left, |ended| !*ended)
                .unwrap_or_else(|p| p.into_inner());
            let ended = *guard;
            drop(guard);
            if ended {
                if w.thread.join().is_err() {
                    warn!(worker = %w.name, "worker thread panicked");
                }
            } else {
                error!(worker = %w.name, ?deadline, "worker did not stop within the exit deadline; left running");
                stuck.push(w.name);
            }
        }
        stuck
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let stuck = self.shutdown(DEFAULT_EXIT_DEADLINE);
        if !stuck.is_empty() {
            warn!(workers = ?stuck, "runner dropped with workers that did not stop");
        }
    }
}

/// Marks a worker's thread as ended when dropped: after `run` returned
/// (so after the worker, and what it holds, was dropped), or during a
/// panic's unwinding.
struct Ended {
    /// The flag `shutdown` waits on.
    ended: Arc<(Mutex<bool>, Condvar)>,
    /// The worker's row: `Stopped` after a panic.
    status: Arc<Mutex<WorkerStatus>>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut st = lock(&self.status);
            st.state = RunState::Stopped;
            st.last_error = Some("the worker panicked".into());
        }
        let (flag, cv) = &*self.ended;
        *lock(flag) = true;
        cv.notify_all();
    }
}

/// A worker's thread: steps, pauses and back-offs until stopped or done.
/// Takes the worker by value: it is dropped when this returns, before the
/// thread reports that it ended.
fn run(
    mut worker: Box<dyn Worker>,
    tranquility: u32,
    clock: &dyn Clock,
    stop: &Stop,
    status: &Mutex<WorkerStatus>,
) {
    let name = worker.name();
    let set = |state: RunState| lock(status).state = state;
    let mut failures: u32 = 0;
    let mut last = RunState::Stopped;
    while !stop.is_raised() {
        set(RunState::Busy);
        let started = clock.now();
        match worker.work(stop) {
            Ok(state) => {
                failures = 0;
                let progress = worker.status();
                {
                    let mut st = lock(status);
                    st.consecutive_failures = 0;
                    st.progress = progress;
                }
                let pause = match state {
                    WorkerState::Done => {
                        last = RunState::Done;
                        break;
                    }
                    WorkerState::Busy => {
                        let took = clock.now().saturating_duration_since(started);
                        took.checked_mul(tranquility).unwrap_or(Duration::MAX)
                    }
                    WorkerState::Idle => {
                        set(RunState::Idle);
                        worker.wait_for_work()
                    }
                };
                if !pause.is_zero() && sleep(clock, pause, stop) {
                    break;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let retry_in = backoff(failures);
                warn!(worker = %name, error = %e, failures, ?retry_in, "worker step failed; retried after a back-off");
                let progress = worker.status();
                {
                    let mut st = lock(status);
                    st.errors += 1;
                    st.consecutive_failures = failures;
                    st.last_error = Some(e.to_string());
                    st.state = RunState::Throttled { retry_in };
                    st.progress = progress;
                }
                if sleep(clock, retry_in, stop) {
                    break;
                }
            }
        }
    }
    set(last);
    info!(worker = %name, state = %last, "worker ended");
}

/// Sleeps `d` on `clock` (a deadline past the clock's range is "forever");
/// true when stopped.
fn sleep(clock: &dyn Clock, d: Duration, stop: &Stop) -> bool {
    let now = clock.now();
    let deadline = now
        .checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(u32::MAX.into())))
        .unwrap_or(now);
    clock.sleep_until(deadline, stop)
}
