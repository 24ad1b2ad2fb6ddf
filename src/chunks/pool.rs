//! Fixed pools of named threads behind bounded queues: the encoder pool
//! (one thread per core, below the FUSE threads' priority), the fetch
//! threads of read-ahead, the sync threads of new chunk files.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::warn;

pub type Job = Box<dyn FnOnce() + Send>;

/// Nice value of the encoder threads: CES work yields the CPU to the FUSE
/// threads, whose requests a program is waiting for.
const ENCODER_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority to `ENCODER_NICE`
/// (best effort: a failure only costs latency).
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id
    // only changes this thread's nice value.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, ENCODER_NICE)
    };
    if r != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot lower the encoder threads' priority");
    }
}

/// The worker pool.
pub struct Pool {
    tx: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// `threads` encoder workers behind a queue of `queue` jobs, running
    /// below the FUSE threads' priority.
    pub fn new(threads: usize, queue: usize) -> Pool {
        Pool::named("encode", threads, queue, true)
    }

    /// `threads` workers named `pangea-{name}-N` behind a queue of `queue`
    /// jobs; `lower` runs them at `ENCODER_NICE`.
    pub fn named(name: &str, threads: usize, queue: usize, lower: bool) -> Pool {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pangea-{name}-{i}"))
                .spawn(move || {
                    if lower {
                        lower_priority();
                    }
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(p) => p.into_inner().recv(),
                        };
                        match job {
                            // A panicking job must not take the thread
                            // with it (the jobs report their own panics).
                            Ok(job) => {
                                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                                    .is_err()
                                {
                                    warn!("a pool job panicked");
                                }
                            }
                            Err(_) => break, // the pool is shutting down
                        }
                    }
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => warn!(error = %e, "cannot start an encoder thread"),
            }
        }
        Pool {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
        }
    }

    /// Queues a job if the queue has room; false (job dropped) if not.
    pub fn try_submit(&self, job: Job) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => tx.try_send(job).is_ok(),
            None => false,
        }
    }

    /// Queues a job, waiting while the queue is full. Hands the job back
    /// when the pool has no worker (the caller then runs it itself).
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Err(job);
        }
        match tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        for h in self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_threads_run_below_the_callers_priority() {
        let pool = Pool::new(1, 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            // SAFETY: getpriority on our own thread id reads its nice value.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            let _ = tx.send(nice);
        });
        assert!(pool.submit(job).is_ok());
        let nice = rx.recv().expect("the job ran");
        // SAFETY: as above, for the test thread.
        let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        assert_eq!(nice, ENCODER_NICE.max(ours));
    }
}
