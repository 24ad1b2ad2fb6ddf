//! The chunk manifest: everything needed to rebuild a chunk from its shards
//! (besides the key), in a versioned, self-describing, fixed-layout binary
//! encoding. Layout and rules: docs/FORMAT.md ("Chunk manifest v1").
//!
//! Invariant: a manifest returned by [`Manifest::decode`] has passed
//! [`Manifest::validate`], so its lengths are consistent with each other.

use super::codec::Codec;
use super::error::{ManifestError, ParamError, Result};
use super::ids::{ChunkId, ShardId};
use super::seal::{NONCE_LEN, TAG_LEN};
use super::shard::ShardParams;

/// Magic bytes opening every manifest: "Pangea Chunk Manifest".
pub const MAGIC: [u8; 4] = *b"PGCM";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Largest plaintext chunk accepted (1 GiB): bounds every allocation made
/// while decoding.
pub const MAX_CHUNK_LEN: u64 = 1 << 30;

const HEADER_LEN: usize = 88;
const CHECKSUM_LEN: usize = 8;

/// Describes one encoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// How the payload was compressed.
    pub codec: Codec,
    /// Data and parity shard counts.
    pub params: ShardParams,
    /// Length of every shard in bytes.
    pub shard_len: u32,
    /// Length of the plaintext chunk.
    pub plain_len: u64,
    /// Length of the payload before sealing (compressed or not).
    pub stored_len: u64,
    /// Keyed BLAKE3 of the plaintext.
    pub chunk_id: ChunkId,
    /// XChaCha20 nonce.
    pub nonce: [u8; NONCE_LEN],
    /// BLAKE3 of each shard, data shards first: k + m entries.
    pub shard_ids: Vec<ShardId>,
}

impl Manifest {
    /// Size of the encoding for `shards` shards.
    pub fn encoded_len(shards: usize) -> usize {
        HEADER_LEN + 32 * shards + CHECKSUM_LEN
    }

    /// Length of the sealed payload (ciphertext + tag). Saturates on a
    /// manifest whose `stored_len` was never validated, which
    /// [`Manifest::validate`] then rejects.
    pub fn sealed_len(&self) -> u64 {
        self.stored_len.saturating_add(TAG_LEN as u64)
    }

    /// Checks that the fields agree with each other.
    pub fn validate(&self) -> Result<(), ManifestError> {
        use ManifestError::Lengths;
        if self.plain_len > MAX_CHUNK_LEN {
            return Err(ManifestError::Params(ParamError::ChunkTooLarge {
                len: self.plain_len,
                max: MAX_CHUNK_LEN,
            }));
        }
        match self.codec {
            Codec::None if self.stored_len != self.plain_len => {
                return Err(Lengths(
                    "uncompressed payload length differs from plaintext",
                ));
            }
            Codec::Zstd { level } => {
                if !(1..=22).contains(&level) {
                    return Err(ManifestError::Params(ParamError::Level(level.into())));
                }
                if self.stored_len >= self.plain_len {
                    return Err(Lengths("compressed payload is not smaller than plaintext"));
                }
            }
            Codec::None => {}
        }
        if self.params.shard_len(self.sealed_len()) != Some(self.shard_len) {
            return Err(Lengths("shard length does not match payload length and k"));
        }
        if self.shard_ids.len() != self.params.total() {
            return Err(Lengths("shard id count is not k + m"));
        }
        Ok(())
    }

    /// The binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::encoded_len(self.shard_ids.len()));
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.codec.id());
        out.push(self.codec.level_byte());
        out.push(0); // flags
        out.extend_from_slice(&self.params.k().to_le_bytes());
        out.extend_from_slice(&self.params.m().to_le_bytes());
        out.extend_from_slice(&self.shard_len.to_le_bytes());
        out.extend_from_slice(&self.plain_len.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(self.chunk_id.as_bytes());
        out.extend_from_slice(&self.nonce);
        for id in &self.shard_ids {
            out.extend_from_slice(id.as_bytes());
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(&sum.as_bytes()[..CHECKSUM_LEN]);
        out
    }

    /// Parses and validates an encoding. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut r = Reader { bytes, at: 0 };
        let min = Self::encoded_len(1);
        if bytes.len() < min {
            return Err(ManifestError::Truncated {
                need: min,
                got: bytes.len(),
            });
        }
        if r.take::<4>()? != MAGIC {
            return Err(ManifestError::Magic);
        }
        let [version] = r.take::<1>()?;
        if version != FORMAT_VERSION {
            return Err(ManifestError::Version(version));
        }
        let [codec_id, level, flags] = r.take::<3>()?;
        let codec = match codec_id {
            0 if level == 0 => Codec::None,
            0 => return Err(ManifestError::Lengths("level set for uncompressed payload")),
            1 => Codec::Zstd { level: level as i8 },
            other => return Err(ManifestError::Codec(other)),
        };
        if flags != 0 {
            return Err(ManifestError::Flags(flags));
        }
        let k = u16::from_le_bytes(r.take()?);
        let m = u16::from_le_bytes(r.take()?);
        let params = ShardParams::new(k, m).map_err(|e| match e {
            super::CesError::InvalidParameters(p) => ManifestError::Params(p),
            _ => ManifestError::Params(ParamError::UnsupportedShardCounts { k, m }),
        })?;
        let expected = Self::encoded_len(params.total());
        if bytes.len() != expected {
            return Err(ManifestError::Size {
                expected,
                got: bytes.len(),
            });
        }
        let shard_len = u32::from_le_bytes(r.take()?);
        let plain_len = u64::from_le_bytes(r.take()?);
        let stored_len = u64::from_le_bytes(r.take()?);
        let chunk_id = ChunkId(r.take()?);
        let nonce = r.take::<NONCE_LEN>()?;
        let mut shard_ids = Vec::with_capacity(params.total());
        for _ in 0..params.total() {
            shard_ids.push(ShardId(r.take()?));
        }
        let body = r.at;
        let sum: [u8; CHECKSUM_LEN] = r.take()?;
        if blake3::hash(&bytes[..body]).as_bytes()[..CHECKSUM_LEN] != sum {
            return Err(ManifestError::Checksum);
        }
        let manifest = Manifest {
            codec,
            params,
            shard_len,
            plain_len,
            stored_len,
            chunk_id,
            nonce,
            shard_ids,
        };
        manifest.validate()?;
        Ok(manifest)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let end = self.at.checked_add(N).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(ManifestError::Truncated {
                need: self.at.saturating_add(N),
                got: self.bytes.len(),
            });
        };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(out)
    }
}
