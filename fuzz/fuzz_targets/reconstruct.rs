//! A real chunk, damaged: `Ces::decode` returns exactly the original plaintext
//! or an error, never other bytes and never a panic.
//!
//! The input first picks the chunk (plaintext, (k, m), compression policy,
//! file-name hint), which is encoded with the fixed key and nonce. The rest is
//! a list of damage operations: drop, flip, truncate, extend, swap or restore
//! shards; rewrite manifest fields (nonce, chunk id, lengths, codec, params)
//! or the manifest's shard hashes, so damaged shards pass verification and
//! reach Reed-Solomon and the AEAD; mutate the encoded manifest (optionally
//! fixing its checksum) and decode it again; add or remove a shard slot.
//!
//! Checked after decoding:
//! * Ok(bytes) ⇒ bytes == the plaintext.
//! * Ok ⇒ the report lists exactly the `None` slots as missing, and
//!   `reconstructed` is false iff all k data shards verified.
//! * Manifest untouched, k + m slots, at least k of them holding their
//!   original bytes ⇒ Ok (damage within the code's budget is always repaired).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pangea::ces::{Codec, Manifest, ShardId, ShardParams, verify_shard};
use pangea_fuzz::{NAMES, PARAMS, ces, encode, fix_checksum, plaintext};

const MAX_OPS: usize = 24;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let params = *u.choose(PARAMS)?;
    let policy = u.int_in_range(0..=3usize)?;
    let name = *u.choose(NAMES)?;
    let not_first = u.arbitrary()?;
    let plain = plaintext(u)?;
    let enc = encode(policy, &plain, params, name, not_first);
    let (original_manifest, buf) = enc.into_parts();
    let s = original_manifest.shard_len as usize;
    let originals: Vec<Vec<u8>> = buf.chunks_exact(s).map(<[u8]>::to_vec).collect();

    let mut manifest = original_manifest.clone();
    let mut shards: Vec<Option<Vec<u8>>> = originals.iter().cloned().map(Some).collect();

    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let n = shards.len();
        match u.int_in_range(0..=10u8)? {
            // Drop a shard.
            0 => {
                let i = u.choose_index(n)?;
                shards[i] = None;
            }
            // Flip bits in a shard.
            1 => {
                let i = u.choose_index(n)?;
                let mask = u.int_in_range(1..=255u8)?;
                if let Some(sh) = shards[i].as_mut().filter(|sh| !sh.is_empty()) {
                    let at = u.choose_index(sh.len())?;
                    sh[at] ^= mask;
                }
            }
            // Truncate or extend a shard.
            2 => {
                let i = u.choose_index(n)?;
                let grow = u.arbitrary::<bool>()?;
                let by = u.int_in_range(1..=4usize)?;
                if let Some(sh) = shards[i].as_mut() {
                    if grow {
                        sh.extend(std::iter::repeat_n(0, by));
                    } else {
                        sh.truncate(sh.len().saturating_sub(by));
                    }
                }
            }
            // Swap two shards.
            3 => {
                let (i, j) = (u.choose_index(n)?, u.choose_index(n)?);
                shards.swap(i, j);
            }
            // Put a shard back.
            4 => {
                let i = u.choose_index(n)?;
                if let Some(orig) = originals.get(i) {
                    shards[i] = Some(orig.clone());
                }
            }
            // Rewrite a shard hash so the (damaged) shard verifies.
            5 => {
                let i = u.choose_index(n)?;
                if let (Some(sh), Some(id)) = (&shards[i], manifest.shard_ids.get_mut(i)) {
                    *id = ShardId::of(sh);
                }
            }
            // The same, for every shard present.
            6 => {
                for (sh, id) in shards.iter().zip(manifest.shard_ids.iter_mut()) {
                    if let Some(sh) = sh {
                        *id = ShardId::of(sh);
                    }
                }
            }
            // Rewrite one manifest field.
            7 => mutate_field(u, &mut manifest)?,
            // Mutate the encoded manifest and parse it again.
            8 => {
                let mut bytes = manifest.encode();
                for _ in 0..u.int_in_range(1..=3u8)? {
                    let at = u.choose_index(bytes.len())?;
                    bytes[at] ^= u.int_in_range(1..=255u8)?;
                }
                if u.arbitrary()? {
                    fix_checksum(&mut bytes);
                }
                match Manifest::decode(&bytes) {
                    Ok(m) => manifest = m,
                    // Nothing to decode a chunk with: the realistic end.
                    Err(_) => return Ok(()),
                }
            }
            // Add a slot.
            9 => shards.push(None),
            // Remove the last slot.
            _ => {
                shards.pop();
            }
        }
    }

    let slots: Vec<Option<&[u8]>> = shards.iter().map(Option::as_deref).collect();
    let result = ces().decode(&manifest, &slots);
    let k = usize::from(manifest.params.k());
    match result {
        Ok((out, report)) => {
            assert!(
                out == plain,
                "decode returned {} bytes that are not the {}-byte plaintext",
                out.len(),
                plain.len()
            );
            let missing: Vec<u16> = (0..slots.len())
                .filter(|&i| slots[i].is_none())
                .map(|i| i as u16)
                .collect();
            assert_eq!(report.missing, missing);
            let data_ok = slots[..k]
                .iter()
                .enumerate()
                .all(|(i, sh)| sh.is_some_and(|sh| verify_shard(&manifest, i, sh).is_ok()));
            assert_eq!(report.reconstructed, !data_ok, "{report:?}");
        }
        Err(e) => {
            let intact = slots
                .iter()
                .zip(&originals)
                .filter(|(sh, orig)| sh.is_some_and(|sh| sh == orig.as_slice()))
                .count();
            let k0 = usize::from(original_manifest.params.k());
            assert!(
                !(manifest == original_manifest && slots.len() == originals.len() && intact >= k0),
                "decode failed with {intact} intact shards of {} (k = {k0}): {e}",
                originals.len()
            );
        }
    }
    Ok(())
}

fn mutate_field(u: &mut Unstructured<'_>, m: &mut Manifest) -> Result<()> {
    match u.int_in_range(0..=7u8)? {
        0 => {
            let i = u.choose_index(m.nonce.len())?;
            m.nonce[i] ^= u.int_in_range(1..=255u8)?;
        }
        1 => {
            let i = u.choose_index(m.chunk_id.0.len())?;
            m.chunk_id.0[i] ^= u.int_in_range(1..=255u8)?;
        }
        2 => m.plain_len = bump(u, m.plain_len)?,
        3 => m.stored_len = bump(u, m.stored_len)?,
        4 => m.shard_len = bump(u, u64::from(m.shard_len))? as u32,
        5 => {
            m.codec = if u.arbitrary()? {
                Codec::None
            } else {
                Codec::Zstd {
                    level: u.arbitrary()?,
                }
            }
        }
        6 => {
            // Other (k, m); the shard id list follows, with zeros or repeats.
            let (k, p) = *u.choose(PARAMS)?;
            if let Ok(params) = ShardParams::new(k, p) {
                m.params = params;
                let fill = m.shard_ids.first().copied().unwrap_or(ShardId([0; 32]));
                m.shard_ids.resize(params.total(), fill);
            }
        }
        _ => {
            // Keep the lengths consistent with each other after a change, so
            // the manifest passes validation and decoding goes further.
            m.stored_len = bump(u, m.stored_len)?;
            if m.codec == Codec::None {
                m.plain_len = m.stored_len;
            }
            if let Some(s) = m.params.shard_len(m.sealed_len()) {
                m.shard_len = s;
            }
        }
    }
    Ok(())
}

/// A small step either way, or an arbitrary value.
fn bump(u: &mut Unstructured<'_>, v: u64) -> Result<u64> {
    Ok(match u.int_in_range(0..=2u8)? {
        0 => v.wrapping_add(u.int_in_range(1..=64u64)?),
        1 => v.wrapping_sub(u.int_in_range(1..=64u64)?),
        _ => u.arbitrary()?,
    })
}
