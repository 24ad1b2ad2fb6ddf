//! The write half: naming a chunk, encoding it through CES unless it is
//! stored already, writing its shards, and making its file durable before
//! the result is delivered, so that no index batch ever names a chunk file
//! that a power cut could take back.

use tracing::warn;

use super::{
    ChunkError, ChunkResult, Chunks, Deliver, Job, JobResult, Location, Plane, Pool, Prepared,
    ShardSource, ShardsAt, Stored, bump,
};
use crate::cache::Plain;
use crate::ces::Hint;
use crate::store::Batch;

/// Set by a test to make the next encoding job of a chunk that starts with
/// `PANIC_MARK` panic (once).
#[cfg(test)]
pub(crate) static PANIC_NEXT_JOB: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
#[cfg(test)]
pub(crate) const PANIC_MARK: &[u8] = b"pangea test: this chunk's job panics";

impl Chunks {
    /// Names and (unless stored already) encodes `plain` on the encoder
    /// pool, waiting while its queue is full; `deliver` gets the result
    /// once any new chunk file is durable. `slot` is the caller's tag and
    /// `file_name` guides the compression level.
    pub fn submit_encode(&self, slot: u64, plain: Plain, file_name: String, deliver: Deliver) {
        let plane = self.plane.clone();
        let syncer = self.syncer.clone();
        let job: Job = Box::new(move || {
            let r = plane.prepare_guarded(slot, plain, &file_name);
            plane.deliver_durable(r, &syncer, deliver);
        });
        if let Err(job) = self.pool.submit(job) {
            job();
        }
    }

    /// CES-encodes a chunk on the caller's thread and stores it durably
    /// (the path of a commit that finds a deduplicated chunk deleted
    /// meanwhile).
    pub fn encode_and_store(&self, plain: &[u8], hint: &Hint<'_>) -> ChunkResult<Stored> {
        self.plane.encode_with(plain, hint, true)
    }
}

impl Plane {
    /// `prepare_one`, with a panic turned into an error that hands the
    /// slot's buffer back (the request that waits for the job fails with
    /// EIO instead of waiting forever).
    fn prepare_guarded(&self, slot: u64, plain: Plain, file_name: &str) -> JobResult {
        let mine = plain.clone();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(test)]
            if plain.starts_with(PANIC_MARK)
                && PANIC_NEXT_JOB.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("test: an encoding job panics");
            }
            self.prepare_one(slot, plain, file_name)
        }))
        .unwrap_or_else(|_| {
            warn!(slot, "an encoding job panicked; the write is kept buffered");
            Err((ChunkError::Internal("an encoding job panicked"), slot, mine))
        })
    }

    /// Names `plain`; encodes and stores it unless a chunk with the same id
    /// is already stored. Its chunk file is written without a sync (see
    /// `deliver_durable`).
    fn prepare_one(&self, slot: u64, plain: Plain, file_name: &str) -> JobResult {
        let id = self.ces.chunk_id(&plain);
        let exists = match self.table.contains(&id) {
            Ok(e) => e,
            Err(e) => return Err((e, slot, plain)),
        };
        let len = plain.len() as u32;
        if exists {
            bump(&self.stats.deduped, 1);
            return Ok(Prepared {
                slot,
                id,
                len,
                plain,
                encoded: None,
            });
        }
        let hint = Hint {
            file_name: Some(file_name),
            not_first_chunk: slot > 0,
        };
        match self.encode_with(&plain, &hint, false) {
            Ok(enc) => Ok(Prepared {
                slot,
                id,
                len,
                plain,
                encoded: Some(enc),
            }),
            Err(e) => Err((e, slot, plain)),
        }
    }

    /// CES-encodes a chunk and, unless small enough to live in the index,
    /// writes its shards to a chunk file, announced in the GC table first
    /// (a crash before the commit does not leak it; after a power cut, the
    /// sweep at the next mount removes it). `durable`: synced before this
    /// returns; otherwise the caller syncs it before any batch names it.
    fn encode_with(&self, plain: &[u8], hint: &Hint<'_>, durable: bool) -> ChunkResult<Stored> {
        let enc = self
            .ces
            .encode(plain, self.shard_params(), hint)
            .map_err(ChunkError::Encode)?;
        bump(&self.stats.encoded, 1);
        let (manifest, shards) = enc.into_parts();
        let chunk = manifest.chunk_id;
        let manifest = manifest.encode();
        if shards.len() <= self.cfg.inline_max {
            return Ok(Stored {
                manifest,
                location: Location::Inline,
                inline: shards,
            });
        }
        let stored = Stored {
            manifest,
            location: Location::File,
            inline: Vec::new(),
        };
        let file = super::FileId::of(&stored.manifest);
        let mut b = Batch::new();
        self.table.collectable(&mut b, &file);
        self.table.kv().write(b, false)?;
        let at = ShardsAt {
            chunk,
            location: Location::File,
            file,
        };
        self.local.put(&at, &shards, durable)?;
        Ok(stored)
    }

    /// Delivers a job's result once its chunk file, written without a
    /// sync, is durable: the sync runs on `syncer`, whose threads wait on
    /// the disk while the encoder threads go on encoding (and the kernel
    /// commits concurrent syncs together). A failed sync deletes the file
    /// and hands the slot's buffer back.
    fn deliver_durable(&self, r: JobResult, syncer: &Pool, deliver: Deliver) {
        let file = match &r {
            Ok(p) => p.encoded.as_ref().and_then(Stored::file),
            Err(_) => None,
        };
        let Some(file) = file else {
            return deliver(r);
        };
        let files = self.local.files().clone();
        let job: Job = Box::new(move || {
            let synced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                files.sync(file.as_bytes())
            }));
            let r = r.and_then(|p| match synced {
                Ok(Ok(true)) => Ok(p),
                Ok(Ok(false)) => Err((
                    ChunkError::Corrupt("chunk file vanished before its sync"),
                    p.slot,
                    p.plain,
                )),
                Ok(Err(e)) => {
                    let _ = files.delete(file.as_bytes());
                    Err((e.into(), p.slot, p.plain))
                }
                Err(_) => Err((
                    ChunkError::Internal("a chunk sync panicked"),
                    p.slot,
                    p.plain,
                )),
            });
            deliver(r);
        });
        if let Err(job) = syncer.submit(job) {
            job();
        }
    }
}
