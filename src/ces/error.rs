//! Typed errors of the CES pipeline. Every failure names what failed; nothing
//! in `ces` panics on input, and no variant carries key material.

use thiserror::Error;

/// Why a CES operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CesError {
    /// Fewer than `needed` shards were present and matched their hash.
    /// `corrupt` lists the shard indices that were present but did not verify.
    #[error("not enough valid shards: needed {needed}, got {got} (corrupt: {corrupt:?})")]
    NotEnoughShards {
        needed: usize,
        got: usize,
        corrupt: Vec<u16>,
    },
    /// A single shard did not match its address (BLAKE3) or has the wrong length.
    #[error("shard {index} is corrupt: {reason}")]
    CorruptShard { index: u16, reason: ShardFault },
    /// The AEAD tag did not verify: wrong key, or tampered ciphertext or manifest.
    #[error("authentication failed: wrong key or tampered chunk")]
    AuthenticationFailed,
    /// The chunk authenticated but its payload does not decode to the recorded
    /// length. Only reachable with a forged manifest and the real key.
    #[error("chunk payload does not decompress to its recorded length")]
    Decompression,
    /// Parameters outside what the pipeline supports.
    #[error("invalid parameters: {0}")]
    InvalidParameters(#[from] ParamError),
    /// A manifest that does not parse or is inconsistent.
    #[error("malformed manifest: {0}")]
    MalformedManifest(#[from] ManifestError),
    /// The caller passed a shard list of the wrong length.
    #[error("expected {expected} shard slots (k + m), got {got}")]
    ShardCountMismatch { expected: usize, got: usize },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Why a shard was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ShardFault {
    #[error("length {got}, expected {expected}")]
    Length { expected: u32, got: usize },
    #[error("BLAKE3 does not match its address")]
    Hash,
}

/// Invalid pipeline parameters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamError {
    #[error("k must be at least 1")]
    ZeroDataShards,
    #[error("(k={k}, m={m}) is not supported by the Reed-Solomon codec")]
    UnsupportedShardCounts { k: u16, m: u16 },
    #[error("chunk of {len} bytes exceeds the maximum of {max} bytes")]
    ChunkTooLarge { len: u64, max: u64 },
    #[error("zstd level {0} is out of range (1..=22)")]
    Level(i32),
    #[error("master key must be {expected} bytes, got {got}")]
    KeyLength { expected: usize, got: usize },
}

/// Why a manifest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    #[error("{got} bytes, need at least {need}")]
    Truncated { need: usize, got: usize },
    #[error("bad magic bytes")]
    Magic,
    #[error("unsupported format version {0}")]
    Version(u8),
    #[error("unknown codec {0}")]
    Codec(u8),
    #[error("reserved flags set: {0:#04x}")]
    Flags(u8),
    #[error("{0}")]
    Params(ParamError),
    #[error("length fields are inconsistent: {0}")]
    Lengths(&'static str),
    #[error("trailing bytes: expected {expected} bytes in all, got {got}")]
    Size { expected: usize, got: usize },
    #[error("checksum mismatch")]
    Checksum,
}

pub type Result<T, E = CesError> = std::result::Result<T, E>;
