//! Errors of the filesystem core and their errno, in one exhaustive match.

use thiserror::Error;

use crate::chunks::ChunkError;
use crate::store::StoreError;

/// Why a filesystem operation failed.
#[derive(Debug, Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("name longer than 255 bytes")]
    NameTooLong,
    #[error("invalid argument")]
    Invalid,
    #[error("operation not permitted")]
    Perm,
    #[error("permission denied")]
    Access,
    #[error("no space left on the data dir's disk")]
    NoSpace,
    #[error("no such attribute")]
    NoData,
    #[error("buffer too small")]
    Range,
    #[error("attribute value too large")]
    TooBig,
    #[error("operation not supported")]
    NotSupported,
    #[error("bad file handle")]
    BadHandle,
    #[error("file too large")]
    FileTooBig,
    #[error("too many links")]
    TooManyLinks,
    /// A chunk could not be stored or loaded (unreadable, or an encoding
    /// that failed).
    #[error("{0}")]
    Chunk(ChunkError),
    #[error("index: {0}")]
    Store(StoreError),
    #[error("index record {0} is corrupt")]
    Corrupt(&'static str),
    /// A background job failed without an answer (it panicked); the
    /// request fails, its data stays buffered.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A read-only open of a store that has no filesystem yet.
    #[error("the data dir holds no filesystem yet; mount it read-write once first")]
    ReadOnlyEmpty,
    /// `-o sync_remote`: the data did not reach enough peers in time.
    #[error("peers: {0}")]
    Remote(String),
}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        if e.is_no_space() {
            FsError::NoSpace
        } else {
            FsError::Store(e)
        }
    }
}

impl From<ChunkError> for FsError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::Store(e) => e.into(),
            ChunkError::Corrupt(what) => FsError::Corrupt(what),
            ChunkError::Internal(what) => FsError::Internal(what),
            e => FsError::Chunk(e),
        }
    }
}

impl FsError {
    /// The errno reported to the kernel.
    pub fn errno(&self) -> i32 {
        use nix::libc;
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid => libc::EINVAL,
            FsError::Perm => libc::EPERM,
            FsError::Access => libc::EACCES,
            FsError::NoSpace => libc::ENOSPC,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::E2BIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::BadHandle => libc::EBADF,
            FsError::FileTooBig => libc::EFBIG,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::Chunk(_) => libc::EIO,
            FsError::Store(_) => libc::EIO,
            FsError::Corrupt(_) => libc::EIO,
            FsError::Internal(_) => libc::EIO,
            FsError::ReadOnlyEmpty => libc::EROFS,
            FsError::Remote(_) => libc::EIO,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;
