//! Errors of the chunk layer.

use thiserror::Error;

use crate::ces::{CesError, ChunkId};
use crate::store::StoreError;

/// Why a chunk could not be stored, loaded or repaired.
#[derive(Debug, Error)]
pub enum ChunkError {
    /// Fewer than k good shards, a failed tag, or an encoding error.
    #[error("chunk {chunk} is unreadable: {source}")]
    Unreadable { chunk: ChunkId, source: CesError },
    /// CES refused to encode a chunk (its size, its parameters).
    #[error("a new chunk cannot be encoded: {0}")]
    Encode(CesError),
    /// The index or a chunk file failed (ENOSPC among them).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A record or queue entry that does not parse.
    #[error("index record {0} is corrupt")]
    Corrupt(&'static str),
    /// A job ended without an answer (it panicked).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Results of the chunk layer.
pub type ChunkResult<T> = Result<T, ChunkError>;
