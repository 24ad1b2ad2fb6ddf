//! Encoding off the FUSE threads: a fixed pool of workers (one per core)
//! fed through a bounded queue. A writer that fills a chunk hands it to the
//! pool and goes on; the results come back on the open file's channel and
//! are committed by its next write, flush, fsync or release. A full queue
//! makes the writer wait (bounded by the pool's progress), which is the
//! back-pressure that keeps memory bounded.
//!
//! Invariant: a job touches no filesystem lock (only the index, which is
//! thread-safe, and chunk files), so waiting for a job can never deadlock.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tracing::warn;

use super::data::{ChunkRecord, Counters, LOC_FILE, LOC_INLINE, Prepared, Stored, bump, hex8};
use super::{FsError, FsResult};
use crate::cache::{ChunkCache, Plain};
use crate::ces::{Ces, Hint, Manifest, ShardParams};
use crate::store::{Batch, Cf, ChunkFiles, ChunkStore, Kv};

/// What an encoding job needs, shared by the pool and the FUSE threads.
pub(crate) struct EncodeCtx {
    pub(crate) ces: Arc<Ces>,
    pub(crate) kv: Arc<dyn Kv>,
    pub(crate) chunks: Arc<dyn ChunkStore>,
    pub(crate) stats: Arc<Counters>,
    pub(crate) shard_params: ShardParams,
    pub(crate) inline_max: usize,
    pub(crate) cache: Arc<ChunkCache>,
    /// Chunks being decoded ahead of readers (no chunk twice at once).
    pub(crate) prefetching: Mutex<HashSet<[u8; 32]>>,
    /// Signalled when a prefetch ends, for readers waiting on it.
    pub(crate) prefetched: Condvar,
}

/// A job's result: the chunk ready to commit, or the error with the slot
/// and its buffer handed back.
pub(crate) type JobResult = Result<Prepared, (FsError, u64, Plain)>;

/// Set by a test to make the next encoding job of a chunk that starts with
/// `PANIC_MARK` panic (once).
#[cfg(test)]
pub(crate) static PANIC_NEXT_JOB: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
#[cfg(test)]
pub(crate) const PANIC_MARK: &[u8] = b"pangea test: this chunk's job panics";

impl EncodeCtx {
    /// `prepare_one`, with a panic turned into an error that hands the
    /// slot's buffer back (nothing acknowledged is lost; the request that
    /// waits for the job fails with EIO instead of waiting forever).
    pub(crate) fn prepare_guarded(
        &self,
        index: u64,
        plain: Plain,
        file_name: &str,
        durable: bool,
    ) -> JobResult {
        let mine = plain.clone();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(test)]
            if plain.starts_with(PANIC_MARK)
                && PANIC_NEXT_JOB.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("test: an encoding job panics");
            }
            self.prepare_one(index, plain, file_name, durable)
        }))
        .unwrap_or_else(|_| {
            warn!(
                slot = index,
                "an encoding job panicked; the write is kept buffered"
            );
            Err((FsError::Internal("an encoding job panicked"), index, mine))
        })
    }

    /// Runs a job that holds the decode-ahead claim on `id`; if it panics,
    /// the claim ends (readers stop waiting for it).
    pub(crate) fn guard_prefetch(&self, id: [u8; 32], job: impl FnOnce()) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            warn!(chunk = %hex8(&id), "a read-ahead job panicked");
            self.end_prefetch(&id, None);
        }
    }

    /// Delivers a job's result once its chunk file, written without a
    /// sync, is durable: the sync runs on `syncer`, whose threads wait on
    /// the disk while the encoder threads go on encoding (and the kernel
    /// commits concurrent syncs together). A failed sync deletes the file
    /// and hands the slot's buffer back.
    pub(crate) fn deliver_durable(
        &self,
        r: JobResult,
        syncer: &Pool,
        deliver: Box<dyn FnOnce(JobResult) + Send>,
    ) {
        let blob = match &r {
            Ok(p) => p.encoded.as_ref().and_then(Stored::file),
            Err(_) => None,
        };
        let Some(blob) = blob else {
            return deliver(r);
        };
        let chunks = self.chunks.clone();
        let job: Job = Box::new(move || {
            let synced =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| chunks.sync(&blob)));
            let r = r.and_then(|p| match synced {
                Ok(Ok(true)) => Ok(p),
                Ok(Ok(false)) => Err((
                    FsError::Corrupt("chunk file vanished before its sync"),
                    p.index,
                    p.plain,
                )),
                Ok(Err(e)) => {
                    let _ = chunks.delete(&blob);
                    Err((e.into(), p.index, p.plain))
                }
                Err(_) => Err((FsError::Internal("a chunk sync panicked"), p.index, p.plain)),
            });
            deliver(r);
        });
        if let Err(job) = syncer.submit(job) {
            job();
        }
    }

    /// Names slot `index`'s plaintext; encodes and stores it unless a chunk
    /// with the same id is already stored. `durable`: its chunk file is
    /// synced before this returns; otherwise the caller syncs it (see
    /// `deliver_durable`) before any batch names it.
    pub(crate) fn prepare_one(
        &self,
        index: u64,
        plain: Plain,
        file_name: &str,
        durable: bool,
    ) -> JobResult {
        let id = *self.ces.chunk_id(&plain).as_bytes();
        let exists = match self.kv.get(Cf::Chunk, &id) {
            Ok(v) => v.is_some(),
            Err(e) => return Err((e.into(), index, plain)),
        };
        let len = plain.len() as u32;
        if exists {
            bump(&self.stats.chunks_deduped, 1);
            return Ok(Prepared {
                index,
                id,
                len,
                plain,
                encoded: None,
            });
        }
        let hint = Hint {
            file_name: Some(file_name),
            not_first_chunk: index > 0,
        };
        match self.encode_with(&plain, &hint, durable) {
            Ok(enc) => Ok(Prepared {
                index,
                id,
                len,
                plain,
                encoded: Some(enc),
            }),
            Err(e) => Err((e, index, plain)),
        }
    }

    /// CES-encodes a chunk and, unless small enough to live in the index,
    /// writes its shards to a chunk file, durably: no index batch ever names
    /// a chunk file that a power cut could take back (the file is announced
    /// in the GC table first, so a crash before the commit does not leak it;
    /// after a power cut, the sweep at the next mount removes it).
    pub(crate) fn encode_and_store(&self, plain: &[u8], hint: &Hint<'_>) -> FsResult<Stored> {
        self.encode_with(plain, hint, true)
    }

    /// `encode_and_store`, with the chunk file's sync left to the caller
    /// unless `durable`.
    fn encode_with(&self, plain: &[u8], hint: &Hint<'_>, durable: bool) -> FsResult<Stored> {
        let enc = self
            .ces
            .encode(plain, self.shard_params, hint)
            .map_err(|e| FsError::Chunk {
                chunk: "new".into(),
                source: e,
            })?;
        bump(&self.stats.chunks_encoded, 1);
        let (manifest, shards) = enc.into_parts();
        let manifest = manifest.encode();
        if shards.len() <= self.inline_max {
            return Ok(Stored {
                manifest,
                loc: LOC_INLINE,
                inline: shards,
            });
        }
        let stored = Stored {
            manifest,
            loc: LOC_FILE,
            inline: Vec::new(),
        };
        let blob = stored.blob();
        let mut b = Batch::new();
        b.put(Cf::Gc, &blob, &[]);
        self.kv.write(b, false)?;
        self.chunks.write(&blob, &shards, durable)?;
        Ok(stored)
    }
}

impl EncodeCtx {
    /// Decodes a chunk from its stored shards. Reads only the k data shards
    /// first (the common case: no Reed-Solomon, 1/(k+m) less I/O); reads all
    /// shards when that is not enough.
    pub(crate) fn decode_stored(
        &self,
        id: &[u8; 32],
        rec: &ChunkRecord,
        manifest: &Manifest,
    ) -> FsResult<(Vec<u8>, crate::ces::DecodeReport)> {
        let s = manifest.shard_len as usize;
        let total = manifest.params.total();
        let k = usize::from(manifest.params.k());
        let decode = |shards: &[u8]| {
            let view: Vec<Option<&[u8]>> =
                (0..total).map(|i| shards.get(i * s..(i + 1) * s)).collect();
            self.ces.decode(manifest, &view)
        };
        if rec.location == LOC_INLINE {
            let shards = self.kv.get(Cf::Inline, id)?.unwrap_or_default();
            return decode(&shards).map_err(|e| FsError::Chunk {
                chunk: hex8(id),
                source: e,
            });
        }
        let blob = rec.blob();
        let buf = self
            .cache
            .take_buffer(ChunkFiles::read_buffer_capacity(k * s));
        if let Some((data, start)) = self.chunks.read_prefix_at(&blob, k * s, buf)?
            && let Ok(plain) = self.ces.decode_data_shards_at(manifest, data, start)
        {
            return Ok((plain, crate::ces::DecodeReport::default()));
        }
        let shards = self.chunks.read_all(&blob)?.unwrap_or_default();
        decode(&shards).map_err(|e| FsError::Chunk {
            chunk: hex8(id),
            source: e,
        })
    }

    /// Claims chunk `id` for decoding ahead of a reader: false when it is
    /// cached or already being decoded ahead. A claim ends with
    /// `end_prefetch`, whatever happens.
    pub(crate) fn begin_prefetch(&self, id: &[u8; 32]) -> bool {
        !self.cache.contains(id)
            && self
                .prefetching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(*id)
    }

    /// Ends the claim on `id`, caching `plain` if it decoded cleanly, and
    /// wakes the readers waiting for it.
    pub(crate) fn end_prefetch(&self, id: &[u8; 32], plain: Option<Vec<u8>>) {
        if let Some(plain) = plain {
            bump(&self.stats.chunks_decoded, 1);
            self.cache.insert(*id, Arc::new(plain));
        }
        self.prefetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.prefetched.notify_all();
    }

    /// Decodes claimed chunk `id` into the cache for a sequential reader.
    /// Only a clean decode is cached; damage is left to the reader's own
    /// path, which repairs it.
    pub(crate) fn prefetch(&self, id: [u8; 32], rec: &ChunkRecord, manifest: &Manifest) {
        let plain = match self.decode_stored(&id, rec, manifest) {
            Ok((plain, report)) if report.corrupt.is_empty() && report.missing.is_empty() => {
                Some(plain)
            }
            _ => None,
        };
        self.end_prefetch(&id, plain);
    }

    /// The I/O half of decoding claimed chunk `id` ahead (on a fetch
    /// thread): reads its data shards, then queues their decode on `pool`,
    /// so that the disk read of one chunk overlaps the decode of another
    /// while the pool keeps one CPU-bound job per core.
    pub(crate) fn fetch(
        self: Arc<Self>,
        pool: &Pool,
        id: [u8; 32],
        rec: &ChunkRecord,
        manifest: Manifest,
    ) {
        let k = usize::from(manifest.params.k());
        let len = k * manifest.shard_len as usize;
        let buf = self
            .cache
            .take_buffer(ChunkFiles::read_buffer_capacity(len));
        let (data, start) = match self.chunks.read_prefix_at(&rec.blob(), len, buf) {
            Ok(Some(read)) => read,
            _ => return self.end_prefetch(&id, None),
        };
        let job: Job = Box::new(move || {
            self.guard_prefetch(id, || {
                let plain = self.ces.decode_data_shards_at(&manifest, data, start).ok();
                self.end_prefetch(&id, plain);
            });
        });
        if let Err(job) = pool.submit(job) {
            job();
        }
    }

    /// If chunk `id` is being decoded ahead, waits (bounded) for it to end
    /// rather than decoding it a second time.
    pub(crate) fn wait_for_prefetch(&self, id: &[u8; 32]) {
        let set = self.prefetching.lock().unwrap_or_else(|p| p.into_inner());
        let _ =
            self.prefetched
                .wait_timeout_while(set, std::time::Duration::from_millis(500), |s| {
                    s.contains(id)
                });
    }
}

pub(crate) type Job = Box<dyn FnOnce() + Send>;

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
pub(crate) struct Pool {
    tx: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// `threads` encoder workers behind a queue of `queue` jobs, running
    /// below the FUSE threads' priority.
    pub(crate) fn new(threads: usize, queue: usize) -> Pool {
        Pool::named("encode", threads, queue, true)
    }

    /// `threads` workers named `pangea-{name}-N` behind a queue of `queue`
    /// jobs; `lower` runs them at `ENCODER_NICE`.
    pub(crate) fn named(name: &str, threads: usize, queue: usize, lower: bool) -> Pool {
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
    pub(crate) fn try_submit(&self, job: Job) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => tx.try_send(job).is_ok(),
            None => false,
        }
    }

    /// Queues a job, waiting while the queue is full. Hands the job back
    /// when the pool has no worker (the caller then runs it itself).
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
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
