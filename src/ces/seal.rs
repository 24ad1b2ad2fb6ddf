//! Authenticated encryption of a chunk: XChaCha20-Poly1305 with the chunk's
//! own key and a random 24-byte nonce. The associated data binds the format
//! version, the chunk id, the plaintext length and the codec, so ciphertext
//! of one chunk cannot be passed off as another's, nor its manifest edited.
//! (k, m) are deliberately *not* bound: a chunk can be re-sharded from its
//! ciphertext without the key.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroize;

use super::codec::Codec;
use super::error::{CesError, Result};
use super::ids::ChunkId;

/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// XChaCha20 nonce length.
pub const NONCE_LEN: usize = 24;

const AAD_DOMAIN: &[u8; 10] = b"pangea/ces";
const AAD_LEN: usize = AAD_DOMAIN.len() + 1 + 32 + 8 + 1 + 1;

/// The associated data of a chunk (layout in docs/FORMAT.md).
pub(crate) fn associated_data(
    format_version: u8,
    id: &ChunkId,
    plain_len: u64,
    codec: Codec,
) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    let mut at = 0;
    for part in [
        &AAD_DOMAIN[..],
        &[format_version][..],
        &id.0[..],
        &plain_len.to_le_bytes()[..],
        &[codec.id(), codec.level_byte()][..],
    ] {
        aad[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    aad
}

/// Encrypts `buf` in place and returns the tag.
pub(crate) fn seal(
    mut key: [u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN]> {
    // By reference: no unwiped copy of the key on the stack.
    let cipher = XChaCha20Poly1305::new((&key).into());
    key.zeroize();
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(*nonce), aad, buf.into())
        // Only fails past 256 GiB per message, far above MAX_CHUNK_LEN.
        .map_err(|_| CesError::AuthenticationFailed)?;
    Ok(tag.into())
}

/// Decrypts `buf` in place; fails (leaving garbage in `buf`) if the tag does
/// not verify.
pub(crate) fn open(
    mut key: [u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<()> {
    // By reference: no unwiped copy of the key on the stack.
    let cipher = XChaCha20Poly1305::new((&key).into());
    key.zeroize();
    cipher
        .decrypt_inout_detached(&XNonce::from(*nonce), aad, buf.into(), &(*tag).into())
        .map_err(|_| CesError::AuthenticationFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cipher wipes its copy of the key when dropped (chacha20poly1305's
    /// `zeroize` feature): a compile-time check.
    #[test]
    fn the_cipher_wipes_its_key_when_dropped() {
        fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wipes_on_drop::<XChaCha20Poly1305>();
        // And the round trip still works with the key passed by reference.
        let key = [9u8; 32];
        let nonce = [3u8; NONCE_LEN];
        let mut buf = *b"sealed and opened";
        let tag = seal(key, &nonce, b"aad", &mut buf).unwrap();
        assert_ne!(&buf, b"sealed and opened");
        open(key, &nonce, b"aad", &mut buf, &tag).unwrap();
        assert_eq!(&buf, b"sealed and opened");
        assert!(open(key, &nonce, b"other", &mut buf, &tag).is_err());
    }
}
