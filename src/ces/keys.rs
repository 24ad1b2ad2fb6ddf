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
const CTX_KEY_CHECK: &str = "pangea 2026-12 master key check";

/// Length of a master key's check value ([`MasterKey::check_value`]).
pub const KEY_CHECK_LEN: usize = 16;

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

    /// A value that identifies this key without revealing it, stored beside
    /// the data the key protects to tell a wrong key from the right one:
    /// the first [`KEY_CHECK_LEN`] bytes of a BLAKE3 key derivation under
    /// its own context (independent of every other subkey).
    pub fn check_value(&self) -> [u8; KEY_CHECK_LEN] {
        let mut full = blake3::derive_key(CTX_KEY_CHECK, &self.0);
        let mut out = [0u8; KEY_CHECK_LEN];
        out.copy_from_slice(&full[..KEY_CHECK_LEN]);
        full.zeroize();
        out
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

    /// No formatting of the key bytes may appear: decimal (what a derived
    /// `Debug` prints), hex in either case, with or without `0x`. The key
    /// bytes are distinctive (0xA7 = 167, never part of the placeholders),
    /// and the derived keys' bytes are checked the same way.
    #[test]
    fn debug_never_prints_key_bytes() {
        let k = MasterKey::from_bytes([0xA7; KEY_LEN]);
        let d = DerivedKeys::derive(&k);
        let s = format!("{k:?} {k:#?} {d:?} {d:#?}");
        let mut forbidden = vec![
            "167".to_owned(),
            "a7".to_owned(),
            "A7".to_owned(),
            "0xa7".to_owned(),
            "[".to_owned(), // an array of any formatting
        ];
        // The first bytes of each derived key, in decimal and hex.
        for b in [d.encryption_root[0], d.dedup[0]] {
            forbidden.push(format!("{b}, "));
            forbidden.push(format!("{b:#x}"));
        }
        for f in &forbidden {
            assert!(!s.contains(f.as_str()), "{f:?} in {s}");
        }
        assert_eq!(s.matches("<redacted>").count(), 4, "placeholders only: {s}");
    }

    #[test]
    fn the_check_value_is_the_documented_derivation_and_differs_between_keys() {
        let a = MasterKey::from_bytes([1; KEY_LEN]);
        let b = MasterKey::from_bytes([2; KEY_LEN]);
        let full = blake3::derive_key("pangea 2026-12 master key check", &[1; KEY_LEN]);
        assert_eq!(a.check_value()[..], full[..KEY_CHECK_LEN]);
        assert_ne!(a.check_value(), b.check_value());
        // Independent of the subkeys (distinct contexts).
        let d = DerivedKeys::derive(&a);
        assert_ne!(a.check_value()[..], d.encryption_root[..KEY_CHECK_LEN]);
        assert_ne!(a.check_value()[..], d.dedup[..KEY_CHECK_LEN]);
    }

    #[test]
    fn subkeys_differ_from_each_other_and_between_masters() {
        let a = DerivedKeys::derive(&MasterKey::from_bytes([1; KEY_LEN]));
        let b = DerivedKeys::derive(&MasterKey::from_bytes([2; KEY_LEN]));
        assert_ne!(a.encryption_root, a.dedup);
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        // Keyed: not the plain hash anyone could compute from the content.
        assert_ne!(a.chunk_id(b"x").0, *blake3::hash(b"x").as_bytes());
        let id = a.chunk_id(b"x");
        assert_ne!(a.chunk_key(&id), b.chunk_key(&id));
    }

    /// Key types wipe their bytes when dropped (a compile-time check).
    #[test]
    fn key_types_zeroize_on_drop() {
        fn wipes_on_drop<T: ZeroizeOnDrop>() {}
        wipes_on_drop::<MasterKey>();
        wipes_on_drop::<DerivedKeys>();
    }

    #[test]
    fn from_slice_rejects_wrong_length() {
        assert!(MasterKey::from_slice(&[0; 31]).is_err());
        assert!(MasterKey::from_slice(&[0; 32]).is_ok());
    }
}
