//! CES: **C**ompress → **E**ncrypt → **S**hard, and back.
//!
//! Owns: content classification and the codec choice ([`detect`]), zstd
//! ([`codec`]), XChaCha20-Poly1305 ([`seal`]), Reed-Solomon ([`shard`]), chunk
//! and shard ids ([`ids`]), key derivation ([`keys`]) and the chunk manifest
//! ([`manifest`]).
//!
//! May not: do I/O, spawn threads, or use async. Everything here is a pure
//! function of its inputs, except [`Ces::encode`], which draws the nonce from
//! the OS RNG ([`Ces::encode_with_nonce`] takes it as an argument).
//!
//! Invariants:
//! * A shard reaches the Reed-Solomon decoder only after its BLAKE3 matched
//!   the manifest (the codec cannot detect corruption).
//! * Decoding returns the original bytes or a typed error, never other bytes:
//!   the AEAD tag covers the ciphertext, and the associated data binds the
//!   chunk id, plaintext length, codec and format version.
//! * With all k data shards present and valid, decoding does no
//!   Reed-Solomon work ([`DecodeReport::reconstructed`] is false).
//! * Incompressible input is stored at its plaintext length plus the 16-byte
//!   tag plus at most 2k − 1 bytes of shard padding.

pub mod codec;
pub mod detect;
pub mod error;
pub mod ids;
pub mod keys;
pub mod manifest;
pub mod seal;
pub mod shard;

pub use codec::Codec;
pub use detect::{CompressionPolicy, ContentClass, Hint};
pub use error::{CesError, ManifestError, ParamError, Result, ShardFault};
pub use ids::{ChunkId, ShardId};
pub use keys::{KEY_CHECK_LEN, KEY_LEN, MasterKey};
pub use manifest::{FORMAT_VERSION, MAX_CHUNK_LEN, Manifest};
pub use seal::{NONCE_LEN, TAG_LEN};
pub use shard::ShardParams;

use keys::DerivedKeys;

/// The CES pipeline of one owner: derived keys plus the compression policy.
/// Cheap to share across threads (`&Ces` is all encode/decode need).
#[derive(Debug, Clone)]
pub struct Ces {
    keys: DerivedKeys,
    policy: CompressionPolicy,
}

/// The result of encoding one chunk.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    /// Describes the chunk; store it in the index.
    pub manifest: Manifest,
    /// What the classifier decided the chunk holds.
    pub class: ContentClass,
    /// All shards back to back, each `manifest.shard_len` bytes.
    shards: Vec<u8>,
}

impl EncodedChunk {
    /// Shard `i` (0..k+m), or None past the end.
    pub fn shard(&self, i: usize) -> Option<&[u8]> {
        let s = self.manifest.shard_len as usize;
        self.shards
            .get(i.checked_mul(s)?..i.checked_add(1)?.checked_mul(s)?)
    }

    /// All shards in index order.
    pub fn shards(&self) -> std::slice::ChunksExact<'_, u8> {
        self.shards.chunks_exact(self.manifest.shard_len as usize)
    }

    /// The manifest and the shard buffer (shard i at `i * shard_len`).
    pub fn into_parts(self) -> (Manifest, Vec<u8>) {
        (self.manifest, self.shards)
    }
}

/// What decoding found on the way, for the healer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeReport {
    /// Shards that were given but failed verification.
    pub corrupt: Vec<u16>,
    /// Shard slots that were `None`.
    pub missing: Vec<u16>,
    /// True when Reed-Solomon decoding ran (some data shard was missing or bad).
    pub reconstructed: bool,
}

impl Ces {
    /// A pipeline keyed by `master`.
    pub fn new(master: &MasterKey, policy: CompressionPolicy) -> Result<Self> {
        policy.validate()?;
        Ok(Ces {
            keys: DerivedKeys::derive(master),
            policy,
        })
    }

    /// The compression policy in use.
    pub fn policy(&self) -> &CompressionPolicy {
        &self.policy
    }

    /// The chunk's identity: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        self.keys.chunk_id(plaintext)
    }

    /// Encodes a chunk with a fresh random nonce.
    pub fn encode(
        &self,
        plaintext: &[u8],
        params: ShardParams,
        hint: &Hint<'_>,
    ) -> Result<EncodedChunk> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CesError::Random)?;
        self.encode_with_nonce(plaintext, params, hint, nonce)
    }

    /// Encodes a chunk with the given nonce. A nonce must never be reused with
    /// the same chunk id and different bytes; [`Ces::encode`] draws a random
    /// one, which is safe with XChaCha20's 192-bit nonces.
    pub fn encode_with_nonce(
        &self,
        plaintext: &[u8],
        params: ShardParams,
        hint: &Hint<'_>,
        nonce: [u8; NONCE_LEN],
    ) -> Result<EncodedChunk> {
        let plain_len = plaintext.len() as u64;
        if plain_len > MAX_CHUNK_LEN {
            return Err(ParamError::ChunkTooLarge {
                len: plain_len,
                max: MAX_CHUNK_LEN,
            }
            .into());
        }
        let chunk_id = self.keys.chunk_id(plaintext);
        let (class, mut codec) = self.policy.choose(plaintext, hint);

        // One allocation, at its exact final size, holds the payload, its tag,
        // the padding and the parity. zstd compresses into a reused per-thread
        // buffer first, so a compressed chunk does not carry the compression
        // bound (the plaintext size) as dead capacity.
        let compressed = match codec {
            Codec::Zstd { level } => codec::compress_then(plaintext, level.into(), |frame| {
                working_buffer(frame, params, plain_len)
            }),
            Codec::None => None,
        };
        let mut buf = match compressed {
            Some(buf) => buf?,
            None => {
                codec = Codec::None;
                working_buffer(plaintext, params, plain_len)?
            }
        };
        let stored_len = buf.len() as u64;
        let k = usize::from(params.k());

        let aad = seal::associated_data(FORMAT_VERSION, &chunk_id, plain_len, codec);
        let tag = seal::seal(self.keys.chunk_key(&chunk_id), &nonce, &aad, &mut buf)?;
        buf.extend_from_slice(&tag);

        let sealed_len = buf.len() as u64;
        let s = params
            .shard_len(sealed_len)
            .ok_or(ParamError::ChunkTooLarge {
                len: plain_len,
                max: MAX_CHUNK_LEN,
            })?;
        buf.resize(k * s as usize, 0);
        shard::append_parity(&mut buf, params, s as usize)?;

        let shard_ids = buf.chunks_exact(s as usize).map(ShardId::of).collect();
        let manifest = Manifest {
            codec,
            params,
            shard_len: s,
            plain_len,
            stored_len,
            chunk_id,
            nonce,
            shard_ids,
        };
        debug_assert_eq!(manifest.validate(), Ok(()));
        Ok(EncodedChunk {
            manifest,
            class,
            shards: buf,
        })
    }

    /// Rebuilds a chunk from any k valid shards. `shards[i]` is shard i or
    /// None; exactly k + m slots. Shards are verified in index order (data
    /// first) until k have matched; those after that are not looked at.
    pub fn decode(
        &self,
        manifest: &Manifest,
        shards: &[Option<&[u8]>],
    ) -> Result<(Vec<u8>, DecodeReport)> {
        let k = usize::from(manifest.params.k());
        let (payload, report) = data_shards(manifest, shards, k, 0)?;
        Ok((self.open_payload(manifest, payload)?, report))
    }

    /// Decodes a chunk from its k data shards laid end to end in one buffer
    /// (as a local chunk file stores them), without copying: the buffer is
    /// decrypted in place, and the AEAD's tag proves every byte (no
    /// per-shard hash). A damaged shard is `AuthenticationFailed`, a short
    /// buffer `NotEnoughShards`: the caller then falls back to
    /// [`Ces::decode`], which names the bad shards and uses the parity.
    pub fn decode_data_shards(&self, manifest: &Manifest, data: Vec<u8>) -> Result<Vec<u8>> {
        self.decode_data_shards_at(manifest, data, 0)
    }

    /// [`Ces::decode_data_shards`] for shards that start at `offset` in
    /// `data` (where an aligned direct read put them). Each shard is moved
    /// to the front right after it is verified, while it is still in the
    /// CPU's cache, rather than in one pass over the whole buffer.
    pub fn decode_data_shards_at(
        &self,
        manifest: &Manifest,
        mut data: Vec<u8>,
        offset: usize,
    ) -> Result<Vec<u8>> {
        manifest.validate()?;
        let k = usize::from(manifest.params.k());
        let s = manifest.shard_len as usize;
        let have = data.len().saturating_sub(offset);
        if have != k * s {
            return Err(CesError::NotEnoughShards {
                needed: k,
                got: have / s.max(1),
                corrupt: Vec::new(),
            });
        }
        // What the payload needs: ciphertext and tag (the rest is padding).
        let needed = manifest.stored_len as usize + TAG_LEN;
        // No per-shard hash: the AEAD's tag covers every payload byte of
        // the data shards, so a flipped byte anywhere in them fails the
        // open (docs/SECURITY.md, "Clean reads trust the AEAD"). The
        // caller then falls back to [`Ces::decode`], which hashes every
        // shard, names the bad ones and rebuilds them from the others.
        // Shards from peers were checked against their addresses on
        // receipt.
        if offset > 0 {
            for i in 0..k {
                // Shard i lands in [i*s, (i+1)*s), below where shard i+1
                // starts, so no shard is overwritten before it is moved.
                let at = offset + i * s;
                let keep = needed.saturating_sub(i * s).min(s);
                data.copy_within(at..at + keep, i * s);
            }
        }
        data.truncate(needed);
        self.open_payload(manifest, data)
    }

    /// Opens a sealed payload (ciphertext, tag, then anything) in place and
    /// decompresses it.
    fn open_payload(&self, manifest: &Manifest, mut payload: Vec<u8>) -> Result<Vec<u8>> {
        let stored_len = manifest.stored_len as usize;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&payload[stored_len..stored_len + TAG_LEN]);
        payload.truncate(stored_len);
        let aad = seal::associated_data(
            FORMAT_VERSION,
            &manifest.chunk_id,
            manifest.plain_len,
            manifest.codec,
        );
        seal::open(
            self.keys.chunk_key(&manifest.chunk_id),
            &manifest.nonce,
            &aad,
            &mut payload,
            &tag,
        )?;
        Ok(match manifest.codec {
            Codec::None => payload,
            Codec::Zstd { .. } => codec::decompress_exact(&payload, manifest.plain_len as usize)?,
        })
    }
}

/// A buffer holding `payload`, with the capacity for its tag, the shard
/// padding and the parity shards, so that nothing after it reallocates.
fn working_buffer(payload: &[u8], params: ShardParams, plain_len: u64) -> Result<Vec<u8>> {
    let too_large = ParamError::ChunkTooLarge {
        len: plain_len,
        max: MAX_CHUNK_LEN,
    };
    let capacity = params
        .shard_len(payload.len() as u64 + TAG_LEN as u64)
        .and_then(|s| (s as usize).checked_mul(params.total()))
        .ok_or(too_large)?;
    let mut buf = Vec::with_capacity(capacity);
    buf.extend_from_slice(payload);
    Ok(buf)
}

/// Rebuilds every shard of a chunk from any k valid ones, under the same
/// manifest: `shards[i]` is shard i or None (k + m slots). Returns all
/// k + m shards end to end, each verified against its address, and which
/// were missing or corrupt. Nothing is decrypted (no key is needed): the
/// good shards come back byte for byte, and the rebuilt ones are exactly
/// the shards the encoding made, so copies held elsewhere stay valid.
pub fn rebuild_shards(
    manifest: &Manifest,
    shards: &[Option<&[u8]>],
) -> Result<(Vec<u8>, DecodeReport)> {
    let total = manifest.params.total();
    let s = manifest.shard_len as usize;
    let (mut all, report) = data_shards(manifest, shards, total, total * s)?;
    shard::append_parity(&mut all, manifest.params, s)?;
    for i in 0..total {
        // The rebuilt bytes must be the encoding's (a mismatch would mean a
        // manifest that does not describe these shards).
        verify_shard(manifest, i, &all[i * s..(i + 1) * s])?;
    }
    Ok((all, report))
}

/// The k data shards of a chunk (k·s bytes, end to end), from any k valid
/// shards of `shards` (k + m slots): as given when all data shards are
/// valid, else rebuilt by Reed-Solomon. Shards are verified in index order
/// until `enough` have matched. `capacity`: room to reserve in the result.
fn data_shards(
    manifest: &Manifest,
    shards: &[Option<&[u8]>],
    enough: usize,
    capacity: usize,
) -> Result<(Vec<u8>, DecodeReport)> {
    manifest.validate()?;
    let params = manifest.params;
    let (k, total) = (usize::from(params.k()), params.total());
    if shards.len() != total {
        return Err(CesError::ShardCountMismatch {
            expected: total,
            got: shards.len(),
        });
    }
    let s = manifest.shard_len as usize;
    let (valid, mut report) = verify_shards(manifest, shards, enough)?;
    let mut out = Vec::with_capacity(capacity.max(k * s));
    if valid[..k].iter().all(Option::is_some) {
        for shard in valid[..k].iter().flatten() {
            out.extend_from_slice(shard);
        }
    } else {
        report.reconstructed = true;
        shard::reconstruct(&valid, params, s, &mut out)?;
    }
    Ok((out, report))
}

/// Verifies `shards` (k + m slots, None for missing ones) in index order
/// until `enough` have matched (those after are not looked at); fails
/// unless at least k did. Returns the verified ones and which were missing
/// or corrupt.
fn verify_shards<'a>(
    manifest: &Manifest,
    shards: &[Option<&'a [u8]>],
    enough: usize,
) -> Result<(Vec<Option<&'a [u8]>>, DecodeReport)> {
    let k = usize::from(manifest.params.k());
    let mut report = DecodeReport::default();
    let mut valid: Vec<Option<&[u8]>> = vec![None; shards.len()];
    let mut good = 0;
    for (i, slot) in shards.iter().enumerate() {
        let Some(bytes) = slot else {
            report.missing.push(i as u16);
            continue;
        };
        if good == enough {
            continue;
        }
        match verify_shard(manifest, i, bytes) {
            Ok(()) => {
                valid[i] = Some(bytes);
                good += 1;
            }
            Err(_) => report.corrupt.push(i as u16),
        }
    }
    if good < k {
        return Err(CesError::NotEnoughShards {
            needed: k,
            got: good,
            corrupt: report.corrupt,
        });
    }
    Ok((valid, report))
}

/// Checks shard `index` of `manifest`: its length and its BLAKE3 address.
pub fn verify_shard(manifest: &Manifest, index: usize, bytes: &[u8]) -> Result<()> {
    let idx = index as u16;
    let expected = manifest
        .shard_ids
        .get(index)
        .ok_or(CesError::ShardCountMismatch {
            expected: manifest.shard_ids.len(),
            got: index + 1,
        })?;
    if bytes.len() != manifest.shard_len as usize {
        return Err(CesError::CorruptShard {
            index: idx,
            reason: ShardFault::Length {
                expected: manifest.shard_len,
                got: bytes.len(),
            },
        });
    }
    if ShardId::of(bytes) != *expected {
        return Err(CesError::CorruptShard {
            index: idx,
            reason: ShardFault::Hash,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
