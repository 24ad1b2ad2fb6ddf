//! Key material. The master key is the root secret of one owner; every other
//! key is derived from it with BLAKE3's key derivation mode, under a distinct
//! context string, so the subkeys are independent.
//!
//! Invariants: key bytes are zeroized on drop and never formatted (`Debug`
//! prints a placeholder).

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::error::{ParamError, Result};
use super::ids::ChunkId;

/// Length of every key in bytes.
pub const KEY_LEN: usize = 32;

const CTX_ENCRYPTION: &str = "pangea 2026-11 ces v1 chunk encryption root";
const CTX_DEDUP: &str = "pangea 2026-11 ces v1 chunk id (dedup) key";

/// The owner's root secret (32 random bytes).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    /// Wraps existing key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey(bytes)
    }

    /// Wraps a slice that must be exactly [`KEY_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| ParamError::KeyLength {
            expected: KEY_LEN,
            got: bytes.len(),
        })?;
        Ok(MasterKey(arr))
    }

    /// A fresh key from the operating system's RNG.
    pub fn generate() -> Result<Self> {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k).map_err(|_| super::CesError::Random)?;
        Ok(MasterKey(k))
    }

    /// The raw bytes, for writing the key file. Handle with care.
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The keys CES derives from a master key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct DerivedKeys {
    /// Root of the per-chunk encryption keys.
    encryption_root: [u8; KEY_LEN],
    /// Key of the keyed BLAKE3 that names chunks.
    dedup: [u8; KEY_LEN],
}

impl DerivedKeys {
    pub(crate) fn derive(master: &MasterKey) -> Self {
        DerivedKeys {
            encryption_root: blake3::derive_key(CTX_ENCRYPTION, &master.0),
            dedup: blake3::derive_key(CTX_DEDUP, &master.0),
        }
    }

    /// Keyed BLAKE3 of the plaintext: the chunk's identity.
    pub(crate) fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.dedup, plaintext).as_bytes())
    }

    /// The XChaCha20-Poly1305 key of one chunk.
    pub(crate) fn chunk_key(&self, id: &ChunkId) -> [u8; KEY_LEN] {
        *blake3::keyed_hash(&self.encryption_root, id.as_bytes()).as_bytes()
    }
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKeys(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_bytes() {
        let k = MasterKey::from_bytes([0x42; KEY_LEN]);
        let s = format!("{k:?} {:?}", DerivedKeys::derive(&k));
        assert!(!s.contains("42"), "{s}");
    }

    #[test]
    fn subkeys_differ_from_each_other_and_between_masters() {
        let a = DerivedKeys::derive(&MasterKey::from_bytes([1; KEY_LEN]));
        let b = DerivedKeys::derive(&MasterKey::from_bytes([2; KEY_LEN]));
        assert_ne!(a.encryption_root, a.dedup);
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        let id = a.chunk_id(b"x");
        assert_ne!(a.chunk_key(&id), b.chunk_key(&id));
    }

    #[test]
    fn from_slice_rejects_wrong_length() {
        assert!(MasterKey::from_slice(&[0; 31]).is_err());
        assert!(MasterKey::from_slice(&[0; 32]).is_ok());
    }
}
