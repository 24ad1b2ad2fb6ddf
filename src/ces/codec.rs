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

/// Per-thread scratch buffers above this capacity are freed after use, so a
/// rare huge chunk does not pin its compression bound for the thread's life.
const SCRATCH_KEEP: usize = 16 << 20;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `data` at `level` into a reused per-thread buffer and passes
/// the frame to `f`. Returns None without calling `f` when compression fails
/// or the frame would not be smaller than the input: the caller then stores
/// the data uncompressed. Reusing the buffer lets the caller allocate its
/// output at the exact compressed size instead of the compression bound.
pub(crate) fn compress_then<T>(data: &[u8], level: i32, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
    if data.is_empty() {
        return None;
    }
    with_compressor(level, move |c| {
        SCRATCH.with(|cell| {
            let mut out = cell.try_borrow_mut().ok()?;
            out.clear();
            out.reserve(zstd::zstd_safe::compress_bound(data.len()));
            let n = c.compress_to_buffer(data, &mut *out).ok();
            let result = match n {
                Some(n) if n < data.len() => out.get(..n).map(f),
                _ => None,
            };
            if out.capacity() > SCRATCH_KEEP {
                *out = Vec::new();
            }
            result
        })
    })
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
        let out = compress_then(&data, 3, <[u8]>::to_vec).unwrap();
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
        assert_eq!(compress_then(&data, 3, <[u8]>::len), None);
        assert_eq!(compress_then(b"", 3, <[u8]>::len), None);
    }

    #[test]
    fn huge_scratch_is_released() {
        let data = vec![b'a'; SCRATCH_KEEP + 1];
        assert!(compress_then(&data, 1, |f| f.len()).is_some());
        assert_eq!(SCRATCH.with(|s| s.borrow().capacity()), 0);
        let small = vec![b'a'; 4096];
        assert!(compress_then(&small, 1, |f| f.len()).is_some());
        assert!(SCRATCH.with(|s| s.borrow().capacity()) > 0);
    }

    #[test]
    fn garbage_frames_are_an_error() {
        assert_eq!(
            decompress_exact(b"not zstd", 10),
            Err(CesError::Decompression)
        );
    }
}
