//! Helpers shared by the unit tests of `fs` and `workers` (`ces` keeps its
//! own: it depends on no other module of the crate).

/// `n` pseudo-random bytes, the same for the same seed (BLAKE3 XOF).
pub(crate) fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}
