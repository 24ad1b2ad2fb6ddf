//! Compression: zstd at a chosen level, or none. Contexts are reused per
//! thread (creating a zstd context costs more than compressing a small chunk).
//! Decompression is bounded by the length recorded in the manifest, so a
//! forged frame cannot make it allocate more.

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};

use super::error::{CesError, Result};

/// How a chunk's payload is stored before encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as is.
    None,
    /// One zstd frame at `level`.
    Zstd { level: i8 },
}

impl Codec {
    /// Wire id (see docs/FORMAT.md).
    pub(crate) fn id(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd { .. } => 1,
        }
    }

    /// The level byte stored next to the id (0 for `None`).
    pub(crate) fn level_byte(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd { level } => level as u8,
        }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut Compressor<'static>) -> Option<T>,
) -> Option<T> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.is_none() {
            *slot = Some(Compressor::new(level).ok()?);
        }
        let c = slot.as_mut()?;
        c.set_compression_level(level).ok()?;
        f(c)
    })
}

/// Compresses `data` into `out` (cleared first; its capacity is reused).
/// Returns false, leaving `out` empty, when the result would not be smaller
/// than the input: the caller then stores the data uncompressed.
pub(crate) fn compress_into(data: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    out.clear();
    let bound = zstd::zstd_safe::compress_bound(data.len());
    if out.capacity() < bound {
        out.reserve(bound);
    }
    let ok = with_compressor(level, |c| c.compress_to_buffer(data, &mut *out).ok());
    match ok {
        Some(n) if n < data.len() => true,
        _ => {
            out.clear();
            false
        }
    }
}

/// Size of `data` compressed at `level` (used by the compressibility probe).
pub(crate) fn compressed_len(data: &[u8], level: i32) -> Option<usize> {
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    with_compressor(level, |c| c.compress_to_buffer(data, &mut out).ok())
}

/// Decompresses one frame that must expand to exactly `expected_len` bytes.
pub(crate) fn decompress_exact(frame: &[u8], expected_len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(expected_len);
    let n = DECOMPRESSOR
        .with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if slot.is_none() {
                *slot = Some(Decompressor::new().ok()?);
            }
            slot.as_mut()?.decompress_to_buffer(frame, &mut out).ok()
        })
        .ok_or(CesError::Decompression)?;
    if n != expected_len {
        return Err(CesError::Decompression);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_length() {
        let data = b"abcabcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(100);
        let mut out = Vec::new();
        assert!(compress_into(&data, 3, &mut out));
        assert!(out.len() < data.len());
        assert_eq!(decompress_exact(&out, data.len()).unwrap(), data);
        assert_eq!(
            decompress_exact(&out, data.len() - 1),
            Err(CesError::Decompression)
        );
        assert_eq!(
            decompress_exact(&out, data.len() + 1),
            Err(CesError::Decompression)
        );
    }

    #[test]
    fn incompressible_input_is_refused() {
        let mut data = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let mut out = Vec::new();
        assert!(!compress_into(&data, 3, &mut out));
        assert!(out.is_empty());
        assert!(!compress_into(b"", 3, &mut out));
    }

    #[test]
    fn garbage_frames_are_an_error() {
        assert_eq!(
            decompress_exact(b"not zstd", 10),
            Err(CesError::Decompression)
        );
    }
}
