//! The release queue: runs the last release of files ([`Fs::release`])
//! off the front end's request threads.
//!
//! Why: the kernel does not wait for a release (close(2) has returned), but
//! the release stores the file's buffers; on a FUSE thread it would hold
//! that thread, and a program's next request would wait for a free one.
//!
//! Rules: a full queue runs the release on the caller's thread
//! (back-pressure), as does a nearly full disk ([`Fs::disk_is_low`]: then
//! the release runs in order with the requests that follow), as does a
//! queue that no longer takes releases (draining, or no thread could be
//! started).
//! [`Releases::drain`] runs every queued release, then stops the threads;
//! it is a step of the node's shutdown, after the front end stopped.
//!
//! May not: know about FUSE (the front end passes a completion callback,
//! which replies to the kernel).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing::warn;

use crate::fs::{Fs, FsResult};

/// Releases queued for the release threads: bounds the buffers waiting to
/// be stored behind closed files; a full queue makes the caller wait.
pub const RELEASE_QUEUE: usize = 64;
/// Threads running releases. More than one: a release of a file with new
/// chunk files waits for their sync (the disk, not the CPU), and releases
/// of different files then overlap (the journal commits their syncs
/// together); an untar waits on them when the queue fills.
pub const RELEASE_THREADS: usize = 4;

/// What to do with a release's result (e.g. reply to the kernel). Called
/// exactly once, on whichever thread ran the release.
pub type ReleaseDone = Box<dyn FnOnce(FsResult<()>) + Send>;

/// A queued release: the file handle and its completion.
type Job = (u64, ReleaseDone);

/// The release queue (see the module docs).
pub struct Releases {
    /// The core whose `release` runs (on the caller's thread when the
    /// queue does not take the job).
    fs: Arc<Fs>,
    /// The queue's sending side; None once draining (or when no thread
    /// could be started): releases then run on the caller's thread.
    tx: Mutex<Option<SyncSender<Job>>>,
    /// The release threads, joined by `drain`.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Locks, ignoring poison (the guarded values stay valid: they are only
/// taken or replaced whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Releases {
    /// Starts [`RELEASE_THREADS`] release threads over `fs`. A thread that
    /// cannot be started is logged; with none, every release runs on the
    /// caller's thread.
    pub fn start(fs: Arc<Fs>) -> Releases {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(RELEASE_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..RELEASE_THREADS {
            let (fs, rx) = (fs.clone(), rx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("pangea-release-{i}"))
                .spawn(move || release_loop(&fs, &rx));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => warn!(error = %e, "cannot start a release thread"),
            }
        }
        let tx = if threads.is_empty() {
            warn!("no release thread; releases run on the request threads");
            None
        } else {
            Some(tx)
        };
        Releases {
            fs,
            tx: Mutex::new(tx),
            threads: Mutex::new(threads),
        }
    }

    /// Releases `fh` and calls `done` with the result: on a release
    /// thread, or here (before returning) when the disk is low, the queue
    /// is full or no longer takes releases (see the module docs).
    pub fn release(&self, fh: u64, done: ReleaseDone) {
        let job = if self.fs.disk_is_low() {
            Some((fh, done))
        } else {
            self.queue((fh, done))
        };
        if let Some((fh, done)) = job {
            done(self.fs.release(fh));
        }
    }

    /// Queues `job`; hands it back when it must run on the caller's thread.
    fn queue(&self, job: Job) -> Option<Job> {
        let tx = lock(&self.tx).clone();
        match tx {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => None,
                Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => Some(job),
            },
            None => Some(job),
        }
    }

    /// Stops taking releases (later ones run on the caller's thread), runs
    /// every queued release, then ends the threads. Returns once they have
    /// ended. Idempotent.
    pub fn drain(&self) {
        lock(&self.tx).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            if t.join().is_err() {
                warn!("a release thread panicked");
            }
        }
    }
}

impl Drop for Releases {
    fn drop(&mut self) {
        self.drain();
    }
}

/// A release thread: takes the next release until the queue is closed and
/// empty.
fn release_loop(fs: &Fs, rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only to take the next release.
        let next = lock(rx).recv();
        match next {
            Ok((fh, done)) => done(fs.release(fh)),
            Err(_) => break, // drained and closed
        }
    }
}
