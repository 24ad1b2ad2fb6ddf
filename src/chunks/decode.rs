//! The read half: a chunk's plaintext from the cache, else from its shards
//! (the k data shards first: no Reed-Solomon work for a healthy chunk),
//! verified and, when some are bad or missing, rebuilt from any k good ones
//! and repaired in place; and decoding ahead of sequential readers.

use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use super::{
    ChunkEntry, ChunkError, ChunkResult, Chunks, Job, Location, Plane, Pool, READ_DEADLINE,
    ShardSource, ShardsAt, bump,
};
use crate::cache::Plain;
use crate::ces::{ChunkId, DecodeReport};

impl ChunkEntry {
    /// Where this encoding's shards are kept on this node.
    pub fn at(&self) -> ShardsAt {
        ShardsAt {
            chunk: self.id,
            location: self.rec.location,
            file: self.file(),
        }
    }
}

impl Chunks {
    /// The plaintext of chunk `id`: from the cache, else from its shards
    /// (verified, rebuilt if some are missing or corrupt, then repaired).
    pub fn load(&self, id: &ChunkId) -> ChunkResult<Plain> {
        let p = &self.plane;
        if let Some(plain) = p.cache.get(id.as_bytes()) {
            return Ok(plain);
        }
        p.wait_for_prefetch(id);
        if let Some(plain) = p.cache.get(id.as_bytes()) {
            return Ok(plain);
        }
        let entry = p
            .table
            .get(id)?
            .ok_or(ChunkError::Corrupt("extent names a missing chunk"))?;
        let (plain, report, remote) = match p.decode_stored(&entry) {
            Ok(x) => x,
            Err(e) => {
                if matches!(e, ChunkError::Unreadable { .. }) {
                    bump(&p.stats.lost, 1);
                }
                warn!(chunk = %id, error = %e, "chunk unreadable");
                return Err(e);
            }
        };
        bump(&p.stats.decoded, 1);
        let plain = Arc::new(plain);
        let damaged = !report.corrupt.is_empty() || !report.missing.is_empty();
        if damaged && remote {
            // Peers' copies: the network layer counted the bad ones against
            // their holders; re-placing them is the healer's work.
            warn!(chunk = %id, corrupt = ?report.corrupt, missing = ?report.missing, "chunk rebuilt from peers' shards");
        } else if damaged && !p.cfg.read_only {
            warn!(chunk = %id, corrupt = ?report.corrupt, missing = ?report.missing, "damaged chunk rebuilt; rewriting its bad shards");
            match self.repair(&entry) {
                Ok(()) => bump(&p.stats.repaired, 1),
                Err(e) => warn!(chunk = %id, error = %e, "repair failed; will retry on next read"),
            }
        }
        p.cache.insert(id.0, plain.clone());
        Ok(plain)
    }

    /// Rebuilds a damaged chunk's bad or missing shards from its good ones
    /// and writes them back in place: the same manifest, nonce and shard
    /// addresses (nothing is decrypted or re-encoded), so the record does
    /// not change and copies of the good shards held elsewhere stay valid.
    pub fn repair(&self, entry: &ChunkEntry) -> ChunkResult<()> {
        let p = &self.plane;
        let m = &entry.manifest;
        let at = entry.at();
        let total = m.params.total();
        let s = m.shard_len as usize;
        let deadline = Instant::now() + READ_DEADLINE;
        let stored = p.source.get(&at, s, 0..total, Vec::new(), deadline)?;
        let view: Vec<Option<&[u8]>> = (0..total)
            .map(|i| stored.as_ref().and_then(|f| f.shard(i, s)))
            .collect();
        let whole = stored
            .as_ref()
            .map_or(0, |f| f.bytes.len().saturating_sub(f.start));
        let (all, report) =
            crate::ces::rebuild_shards(m, &view).map_err(|e| ChunkError::Unreadable {
                chunk: entry.id,
                source: e,
            })?;
        if report.corrupt.is_empty() && report.missing.is_empty() && whole == all.len() {
            return Ok(()); // repaired meanwhile
        }
        if at.location == Location::File {
            // Same name (the manifest's hash): replaced atomically, durably.
            p.local.put(&at, &all, true)?;
        }
        let _records = p.table.lock();
        let same = p
            .table
            .record(&entry.id)?
            .is_some_and(|c| c.manifest == entry.rec.manifest && c.location == entry.rec.location);
        if !same {
            // Deleted (or replaced) meanwhile: the file just written is
            // nobody's; it goes like any unreferenced one.
            if at.location == Location::File {
                p.orphans
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(at.file);
            }
            return Ok(());
        }
        if at.location == Location::Inline {
            p.local.put(&at, &all, false)?;
        }
        Ok(())
    }

    /// Queues the decode of chunk `id` into the cache, if it is stored and
    /// not cached; never waits. False when the pools' queues are full
    /// (nothing queued).
    pub fn read_ahead(&self, id: &ChunkId) -> bool {
        let p = &self.plane;
        if p.cache.contains(id.as_bytes()) {
            return true;
        }
        let Ok(Some(entry)) = p.table.get(id) else {
            return true; // unreadable: the reader's own path reports it
        };
        if !p.begin_prefetch(id) {
            return true; // cached meanwhile, or already on its way
        }
        let plane = p.clone();
        let id = *id;
        let queued = if entry.rec.location != Location::Inline {
            // A fetch thread reads the data shards (from the disk, or from
            // peers for an evicted chunk: never on the encode pool), then
            // queues their decode on the pool. The disk is asked for them
            // now, in case the fetch reads through the page cache.
            let m = &entry.manifest;
            if entry.rec.location == Location::File {
                p.local.will_need(
                    &entry.file(),
                    u64::from(m.params.k()) * u64::from(m.shard_len),
                );
            }
            let pool = self.pool.clone();
            self.fetch.try_submit(Box::new(move || {
                let p2 = plane.clone();
                p2.guard_prefetch(id, move || plane.fetch(&pool, entry));
            }))
        } else {
            self.pool.try_submit(Box::new(move || {
                plane.guard_prefetch(id, || plane.prefetch(&entry));
            }))
        };
        if !queued {
            p.end_prefetch(&id, None);
        }
        queued
    }
}

impl Plane {
    /// Decodes a chunk from its shards. Reads only the k data shards first
    /// (the common case: no Reed-Solomon, 1/(k+m) less I/O); reads all
    /// shards when that is not enough.
    fn decode_stored(&self, entry: &ChunkEntry) -> ChunkResult<(Vec<u8>, DecodeReport, bool)> {
        let m = &entry.manifest;
        let s = m.shard_len as usize;
        let total = m.params.total();
        let k = usize::from(m.params.k());
        let at = entry.at();
        let deadline = Instant::now() + READ_DEADLINE;
        let unreadable = |e| ChunkError::Unreadable {
            chunk: entry.id,
            source: e,
        };
        let buf = self
            .cache
            .take_buffer(super::LocalShards::buffer_capacity(k * s));
        if let Some(f) = self.source.get(&at, s, 0..k, buf, deadline)?
            && f.bytes.len().saturating_sub(f.start) >= k * s
            && let Ok(plain) = self.ces.decode_data_shards_at(m, f.bytes, f.start)
        {
            return Ok((plain, DecodeReport::default(), f.remote));
        }
        let all = self.source.get(&at, s, 0..total, Vec::new(), deadline)?;
        let remote = all.as_ref().is_some_and(|f| f.remote);
        let view: Vec<Option<&[u8]>> = (0..total)
            .map(|i| all.as_ref().and_then(|f| f.shard(i, s)))
            .collect();
        match self.ces.decode(m, &view) {
            Ok((plain, report)) => Ok((plain, report, remote)),
            Err(e) if !remote => {
                // The local copy is damaged beyond its parity: the peers'
                // copies (if any) may still be whole.
                drop(view);
                match self.source.get_remote(&at, 0..total, deadline)? {
                    Some(f) => {
                        let view: Vec<Option<&[u8]>> = (0..total).map(|i| f.shard(i, s)).collect();
                        let (plain, report) = self.ces.decode(m, &view).map_err(unreadable)?;
                        Ok((plain, report, true))
                    }
                    None => Err(unreadable(e)),
                }
            }
            Err(e) => Err(unreadable(e)),
        }
    }

    /// Runs a job that holds the decode-ahead claim on `id`; if it panics,
    /// the claim ends (readers stop waiting for it).
    fn guard_prefetch(&self, id: ChunkId, job: impl FnOnce()) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            warn!(chunk = %id, "a read-ahead job panicked");
            self.end_prefetch(&id, None);
        }
    }

    /// Claims chunk `id` for decoding ahead of a reader: false when it is
    /// cached or already being decoded ahead. A claim ends with
    /// `end_prefetch`, whatever happens.
    fn begin_prefetch(&self, id: &ChunkId) -> bool {
        !self.cache.contains(id.as_bytes())
            && self
                .prefetching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(*id)
    }

    /// Ends the claim on `id`, caching `plain` if it decoded cleanly, and
    /// wakes the readers waiting for it.
    fn end_prefetch(&self, id: &ChunkId, plain: Option<Vec<u8>>) {
        if let Some(plain) = plain {
            bump(&self.stats.decoded, 1);
            self.cache.insert(id.0, Arc::new(plain));
        }
        self.prefetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.prefetched.notify_all();
    }

    /// Decodes claimed chunk `entry` into the cache for a sequential
    /// reader. Only a clean decode is cached; damage is left to the
    /// reader's own path, which repairs it.
    fn prefetch(&self, entry: &ChunkEntry) {
        let plain = match self.decode_stored(entry) {
            Ok((plain, report, _)) if report.corrupt.is_empty() && report.missing.is_empty() => {
                Some(plain)
            }
            _ => None,
        };
        self.end_prefetch(&entry.id, plain);
    }

    /// The I/O half of decoding claimed chunk `entry` ahead (on a fetch
    /// thread): reads its data shards, then queues their decode on `pool`,
    /// so that the disk read of one chunk overlaps the decode of another
    /// while the pool keeps one CPU-bound job per core.
    fn fetch(self: Arc<Self>, pool: &Pool, entry: ChunkEntry) {
        let m = &entry.manifest;
        let k = usize::from(m.params.k());
        let s = m.shard_len as usize;
        let buf = self
            .cache
            .take_buffer(super::LocalShards::buffer_capacity(k * s));
        let deadline = Instant::now() + READ_DEADLINE;
        let id = entry.id;
        let f = match self.source.get(&entry.at(), s, 0..k, buf, deadline) {
            Ok(Some(f)) if f.bytes.len().saturating_sub(f.start) >= k * s => f,
            _ => return self.end_prefetch(&id, None),
        };
        let job: Job = Box::new(move || {
            self.guard_prefetch(id, || {
                let plain = self
                    .ces
                    .decode_data_shards_at(&entry.manifest, f.bytes, f.start)
                    .ok();
                self.end_prefetch(&id, plain);
            });
        });
        if let Err(job) = pool.submit(job) {
            job();
        }
    }

    /// If chunk `id` is being decoded ahead, waits (bounded) for it to end
    /// rather than decoding it a second time.
    fn wait_for_prefetch(&self, id: &ChunkId) {
        let set = self.prefetching.lock().unwrap_or_else(|p| p.into_inner());
        let _ =
            self.prefetched
                .wait_timeout_while(set, std::time::Duration::from_millis(500), |s| {
                    s.contains(id)
                });
    }
}
