//! The chunk table: chunk records in the index (`Cf::Chunk`), keyed by
//! chunk id, with inline encodings beside them (`Cf::Inline`).
//!
//! Reads take no lock. Every read-modify-write of a record (a refcount
//! change, new holders, a repair's check) holds the table's lock from the
//! read until its batch is written, so two writers never lose each
//! other's change. The filesystem takes it inside its namespace lock (lock
//! order: namespace → records); placement and repair take it alone.

use std::sync::{Arc, Mutex, MutexGuard};

use super::error::ChunkResult;
use super::record::{ChunkEntry, ChunkRecord, FileId, Location};
use crate::ces::ChunkId;
use crate::store::{Batch, Cf, Kv};

/// See the module documentation.
pub struct ChunkTable {
    /// The index.
    kv: Arc<dyn Kv>,
    /// Serializes read-modify-writes of records.
    lock: Mutex<()>,
}

/// Holds the table's lock (see the module documentation).
pub struct RecordsGuard<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

impl ChunkTable {
    pub fn new(kv: Arc<dyn Kv>) -> ChunkTable {
        ChunkTable {
            kv,
            lock: Mutex::new(()),
        }
    }

    /// Takes the table's lock.
    pub fn lock(&self) -> RecordsGuard<'_> {
        RecordsGuard(self.lock.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The record of `id` with its manifest decoded, if the chunk exists.
    pub fn get(&self, id: &ChunkId) -> ChunkResult<Option<ChunkEntry>> {
        match self.kv.get(Cf::Chunk, id.as_bytes())? {
            Some(v) => Ok(Some(ChunkEntry::decode(*id, &v)?)),
            None => Ok(None),
        }
    }

    /// The record of `id` alone (its manifest left encoded).
    pub fn record(&self, id: &ChunkId) -> ChunkResult<Option<ChunkRecord>> {
        match self.kv.get(Cf::Chunk, id.as_bytes())? {
            Some(v) => Ok(Some(ChunkRecord::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Is chunk `id` stored?
    pub fn contains(&self, id: &ChunkId) -> ChunkResult<bool> {
        Ok(self.kv.get(Cf::Chunk, id.as_bytes())?.is_some())
    }

    /// Writes `rec` as the record of `id` in `b`.
    pub fn put(&self, b: &mut Batch, id: &ChunkId, rec: &ChunkRecord) {
        b.put(Cf::Chunk, id.as_bytes(), &rec.encode());
    }

    /// Writes a new record in `b`, with its inline shards if it has any.
    pub fn create(&self, b: &mut Batch, id: &ChunkId, rec: &ChunkRecord, inline: &[u8]) {
        if rec.location == Location::Inline {
            b.put(Cf::Inline, id.as_bytes(), inline);
        } else {
            // The file is referenced from now on: no longer garbage.
            b.delete(Cf::Gc, rec.file().as_bytes());
        }
        self.put(b, id, rec);
    }

    /// Deletes the record of `id` in `b`, with its inline shards; returns
    /// its chunk file, if it has one (announced in the GC table in `b`, to
    /// be deleted once `b` is durable).
    pub fn remove(&self, b: &mut Batch, id: &ChunkId, rec: &ChunkRecord) -> Option<FileId> {
        b.delete(Cf::Chunk, id.as_bytes());
        match rec.location {
            Location::Inline => {
                b.delete(Cf::Inline, id.as_bytes());
                None
            }
            Location::File => {
                let file = rec.file();
                b.put(Cf::Gc, file.as_bytes(), &[]);
                Some(file)
            }
            Location::Remote => None,
        }
    }

    /// Announces chunk file `file` as garbage in `b`.
    pub fn collectable(&self, b: &mut Batch, file: &FileId) {
        b.put(Cf::Gc, file.as_bytes(), &[]);
    }

    /// Ids of every stored chunk (tests and tools: scans the table).
    pub fn ids(&self) -> ChunkResult<Vec<ChunkId>> {
        Ok(self.keys(Cf::Chunk)?.into_iter().map(ChunkId).collect())
    }

    /// Chunk files announced as garbage (to delete at mount).
    pub fn garbage(&self) -> ChunkResult<Vec<FileId>> {
        Ok(self.keys(Cf::Gc)?.into_iter().map(FileId).collect())
    }

    /// Every 32-byte key of `cf`.
    fn keys(&self, cf: Cf) -> ChunkResult<Vec<[u8; 32]>> {
        let mut out = Vec::new();
        self.kv.scan(cf, &[], &[], &mut |k, _| {
            if let Ok(id) = <[u8; 32]>::try_from(k) {
                out.push(id);
            }
            true
        })?;
        Ok(out)
    }

    /// The index this table lives in.
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }
}
