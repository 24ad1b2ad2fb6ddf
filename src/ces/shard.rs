//! Reed-Solomon layout: the sealed payload (ciphertext + tag, `L` bytes) is
//! split into k data shards of `s` bytes, the last zero-padded, plus m parity
//! shards. `s` is the smallest even number (the codec's rule) with k·s ≥ L.
//! Encoder and decoder working memory is reused per thread.

use std::cell::RefCell;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use super::error::{ParamError, Result};

/// Data and parity shard counts of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardParams {
    k: u16,
    m: u16,
}

impl ShardParams {
    /// 4 data + 2 parity shards: survives any 2 lost or corrupt shards at 1.5x.
    pub const DEFAULT: ShardParams = ShardParams { k: 4, m: 2 };

    /// 16 data + 2 parity shards: the single-node default. With every shard
    /// on the one local disk, parity guards against damaged regions of a
    /// chunk file (any 2 of its 18 shards), not against losing the disk, so
    /// it is kept to 1.125x the data written.
    pub const LOCAL: ShardParams = ShardParams { k: 16, m: 2 };

    /// k data + m parity shards. Any k ≥ 1 with m = 0 (no redundancy), or any
    /// combination the Reed-Solomon codec supports.
    pub fn new(k: u16, m: u16) -> Result<Self> {
        if k == 0 {
            return Err(ParamError::ZeroDataShards.into());
        }
        if m > 0 && !ReedSolomonEncoder::supports(usize::from(k), usize::from(m)) {
            return Err(ParamError::UnsupportedShardCounts { k, m }.into());
        }
        Ok(ShardParams { k, m })
    }

    /// Data shards.
    pub fn k(self) -> u16 {
        self.k
    }

    /// Parity shards.
    pub fn m(self) -> u16 {
        self.m
    }

    /// k + m.
    pub fn total(self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// The shard length for a sealed payload of `sealed_len` bytes, or None
    /// when it would not fit the format's 32-bit shard length.
    pub fn shard_len(self, sealed_len: u64) -> Option<u32> {
        let k = u64::from(self.k);
        let s = sealed_len.div_ceil(k).max(2);
        let s = s.checked_add(s & 1)?;
        u32::try_from(s).ok()
    }
}

thread_local! {
    static ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
}

/// `buf` holds k·s bytes of data shards; appends the m parity shards.
pub(crate) fn append_parity(buf: &mut Vec<u8>, p: ShardParams, s: usize) -> Result<()> {
    let (k, m) = (usize::from(p.k), usize::from(p.m));
    debug_assert_eq!(buf.len(), k * s);
    if m == 0 {
        return Ok(());
    }
    let invalid = |_| ParamError::UnsupportedShardCounts { k: p.k, m: p.m };
    ENCODER.with(|cell| -> Result<()> {
        let mut slot = cell.borrow_mut();
        let enc = match slot.as_mut() {
            Some(enc) => {
                enc.reset(k, m, s).map_err(invalid)?;
                enc
            }
            None => slot.insert(ReedSolomonEncoder::new(k, m, s).map_err(invalid)?),
        };
        for shard in buf.chunks_exact(s) {
            enc.add_original_shard(shard).map_err(invalid)?;
        }
        let result = enc.encode().map_err(invalid)?;
        for parity in result.recovery_iter() {
            buf.extend_from_slice(parity);
        }
        Ok(())
    })
}

/// Rebuilds the k·s data bytes from verified shards (`present[i]` is shard i,
/// `Some` only if it matched its hash; at least k are `Some`). Writes them to
/// `out`.
pub(crate) fn reconstruct(
    present: &[Option<&[u8]>],
    p: ShardParams,
    s: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let (k, m) = (usize::from(p.k), usize::from(p.m));
    let invalid = |_| ParamError::UnsupportedShardCounts { k: p.k, m: p.m };
    DECODER.with(|cell| -> Result<()> {
        let mut slot = cell.borrow_mut();
        let dec = match slot.as_mut() {
            Some(dec) => {
                dec.reset(k, m, s).map_err(invalid)?;
                dec
            }
            None => slot.insert(ReedSolomonDecoder::new(k, m, s).map_err(invalid)?),
        };
        let mut fed = 0;
        for (i, shard) in present.iter().enumerate() {
            let Some(shard) = shard else { continue };
            if fed == k {
                break;
            }
            if i < k {
                dec.add_original_shard(i, shard).map_err(invalid)?;
            } else {
                dec.add_recovery_shard(i - k, shard).map_err(invalid)?;
            }
            fed += 1;
        }
        let result = dec.decode().map_err(invalid)?;
        out.clear();
        out.reserve(k * s);
        for (i, shard) in present.iter().take(k).enumerate() {
            match shard {
                Some(shard) => out.extend_from_slice(shard),
                None => out.extend_from_slice(
                    result
                        .restored_original(i)
                        .ok_or(ParamError::UnsupportedShardCounts { k: p.k, m: p.m })?,
                ),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_validate() {
        assert!(ShardParams::new(0, 2).is_err());
        assert!(ShardParams::new(1, 0).is_ok());
        assert!(ShardParams::new(u16::MAX, 0).is_ok());
        assert!(ShardParams::new(60_000, 4_000).is_ok());
        assert!(ShardParams::new(60_000, 5_000).is_err());
    }

    #[test]
    fn shard_len_of_a_huge_payload_is_none() {
        // Found by fuzz/reconstruct: rounding u64::MAX up to even overflowed
        // (a panic in debug, Some(0) in release).
        for k in [1u16, 2, 3] {
            let p = ShardParams::new(k, 0).unwrap();
            assert_eq!(p.shard_len(u64::MAX), None, "k={k}");
            assert_eq!(p.shard_len(u64::MAX - 1), None, "k={k}");
        }
        let one = ShardParams::new(1, 0).unwrap();
        let top = u32::MAX - 1;
        assert_eq!(one.shard_len(u64::from(top)), Some(top));
        assert_eq!(one.shard_len(u64::from(top) + 1), None);
    }

    #[test]
    fn shard_len_is_even_and_covers_the_payload() {
        for k in [1u16, 2, 3, 4, 8, 10, 255] {
            let p = ShardParams::new(k, 0).unwrap();
            for l in [16u64, 17, 31, 32, 33, 4 << 20] {
                let s = u64::from(p.shard_len(l).unwrap());
                assert!(s % 2 == 0 && s >= 2);
                assert!(s * u64::from(k) >= l);
                assert!((s - 2) * u64::from(k) < l || s == 2, "k={k} l={l} s={s}");
            }
        }
    }
}
