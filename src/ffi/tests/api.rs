//! The C API called from Rust, as a C caller would: NULL pointers, wrong
//! lengths, garbage manifests, shard-count mismatches, and the status codes
//! and messages they give.

use std::ffi::{CStr, c_char};
use std::ptr;

use pangea_ces::*;

const KEY: [u8; CES_KEY_LEN] = [0x5a; CES_KEY_LEN];

fn config(key: &[u8], k: u16, m: u16) -> CesConfig {
    CesConfig {
        k,
        m,
        key: key.as_ptr(),
        key_len: key.len(),
        zstd_level: CES_ZSTD_LEVEL_DEFAULT,
    }
}

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated, valid until the next call.
    unsafe { CStr::from_ptr(ces_last_error()) }
        .to_str()
        .unwrap()
        .to_owned()
}

fn status_str(code: i32) -> String {
    // SAFETY: never NULL, static.
    unsafe { CStr::from_ptr(ces_status_str(code)) }
        .to_str()
        .unwrap()
        .to_owned()
}

/// A context that frees itself.
struct Ctx(*mut CesCtx);

impl Ctx {
    fn new(key: &[u8], k: u16, m: u16) -> Ctx {
        let mut ctx = ptr::null_mut();
        let status = unsafe { ces_new(&config(key, k, m), &mut ctx) };
        assert_eq!(status, CesStatus::Ok, "{}", last_error());
        assert!(!ctx.is_null());
        Ctx(ctx)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        unsafe { ces_free(self.0) }
    }
}

/// An encoded chunk copied out of the library.
struct Encoded {
    k: usize,
    shards: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

fn process(ctx: &Ctx, data: &[u8], name: Option<&CStr>) -> Encoded {
    let mut enc = ptr::null_mut();
    let status = unsafe {
        ces_process(
            ctx.0,
            data.as_ptr(),
            data.len(),
            name.map_or(ptr::null(), CStr::as_ptr),
            &mut enc,
        )
    };
    assert_eq!(status, CesStatus::Ok, "{}", last_error());
    assert_eq!(last_error(), "");
    let e = unsafe { &*enc };
    let all = unsafe { std::slice::from_raw_parts(e.shards, e.shard_count * e.shard_len) };
    let out = Encoded {
        k: e.data_shards,
        shards: all.chunks_exact(e.shard_len).map(<[u8]>::to_vec).collect(),
        manifest: unsafe { std::slice::from_raw_parts(e.manifest, e.manifest_len) }.to_vec(),
    };
    assert_eq!(out.shards.len(), e.shard_count);
    unsafe { ces_encoded_free(enc) };
    out
}

/// Calls `ces_reconstruct_ex` with `shards` (None: missing); returns the
/// status, the plaintext and the report.
fn reconstruct(
    ctx: &Ctx,
    manifest: &[u8],
    shards: &[Option<&[u8]>],
) -> (CesStatus, Vec<u8>, CesDecodeReport) {
    let ptrs: Vec<*const u8> = shards
        .iter()
        .map(|s| s.map_or(ptr::null(), <[u8]>::as_ptr))
        .collect();
    let lens: Vec<usize> = shards.iter().map(|s| s.map_or(0, <[u8]>::len)).collect();
    let mut out = CesBuffer {
        ptr: ptr::dangling_mut(),
        len: 7,
    };
    let mut report = CesDecodeReport::default();
    let status = unsafe {
        ces_reconstruct_ex(
            ctx.0,
            manifest.as_ptr(),
            manifest.len(),
            ptrs.as_ptr(),
            lens.as_ptr(),
            ptrs.len(),
            &mut out,
            &mut report,
        )
    };
    let plain = if out.ptr.is_null() {
        assert_eq!(out.len, 0);
        Vec::new()
    } else {
        assert_eq!(status, CesStatus::Ok);
        unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec()
    };
    unsafe { ces_buffer_free(&mut out) };
    assert!(out.ptr.is_null() && out.len == 0);
    (status, plain, report)
}

fn all_present(enc: &Encoded) -> Vec<Option<&[u8]>> {
    enc.shards.iter().map(|s| Some(s.as_slice())).collect()
}

fn sample() -> Vec<u8> {
    let mut data = b"pangea ces ffi sample text\n".repeat(2000);
    data.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    data
}

#[test]
fn new_rejects_null_pointers_and_bad_configs() {
    let mut ctx = ptr::dangling_mut::<CesCtx>();
    unsafe {
        assert_eq!(ces_new(ptr::null(), &mut ctx), CesStatus::NullPointer);
        assert!(ctx.is_null());
        assert_eq!(last_error(), "cfg is NULL");
        assert_eq!(
            ces_new(&config(&KEY, 4, 2), ptr::null_mut()),
            CesStatus::NullPointer
        );
        let mut cfg = config(&KEY, 4, 2);
        cfg.key = ptr::null();
        assert_eq!(ces_new(&cfg, &mut ctx), CesStatus::NullPointer);
        for len in [0, 1, 31, 33, 64] {
            let key = vec![0x41u8; len];
            assert_eq!(
                ces_new(&config(&key, 4, 2), &mut ctx),
                CesStatus::InvalidParameters,
                "{len}-byte key"
            );
            assert!(ctx.is_null());
            let msg = last_error();
            assert!(msg.contains("master key must be 32 bytes"), "{msg}");
            assert!(!msg.contains("AAAA") && !msg.contains("4141"), "{msg}");
        }
        // The length is checked before any slice is made from the pointer:
        // lengths no 32-byte key (nor the address space) can span, and a
        // dangling pointer with a wrong length, give the key-length error.
        let dangling = ptr::NonNull::<u8>::dangling().as_ptr().cast_const();
        for (key, len) in [
            (KEY.as_ptr(), usize::MAX),
            (KEY.as_ptr(), isize::MAX as usize + 1),
            (KEY.as_ptr(), 1 << 40),
            (dangling, 64),
            (dangling, usize::MAX),
        ] {
            let mut cfg = config(&KEY, 4, 2);
            cfg.key = key;
            cfg.key_len = len;
            assert_eq!(
                ces_new(&cfg, &mut ctx),
                CesStatus::InvalidParameters,
                "key_len {len}"
            );
            assert!(ctx.is_null());
            let msg = last_error();
            assert!(
                msg.contains(&format!("master key must be 32 bytes, got {len}")),
                "{msg}"
            );
        }
        for (k, m) in [(0, 0), (0, 2), (60_000, 5_000)] {
            assert_eq!(
                ces_new(&config(&KEY, k, m), &mut ctx),
                CesStatus::InvalidParameters,
                "k={k} m={m}"
            );
        }
        for level in [-2, 23, 100, i32::MIN, i32::MAX] {
            let mut cfg = config(&KEY, 4, 2);
            cfg.zstd_level = level;
            assert_eq!(
                ces_new(&cfg, &mut ctx),
                CesStatus::InvalidParameters,
                "level {level}"
            );
        }
        for level in [CES_ZSTD_LEVEL_NONE, CES_ZSTD_LEVEL_DEFAULT, 1, 22] {
            let mut cfg = config(&KEY, 4, 2);
            cfg.zstd_level = level;
            assert_eq!(ces_new(&cfg, &mut ctx), CesStatus::Ok, "level {level}");
            assert_eq!(last_error(), "");
            ces_free(ctx);
        }
    }
}

#[test]
fn process_rejects_null_pointers_and_impossible_lengths() {
    let ctx = Ctx::new(&KEY, 4, 2);
    let data = [1u8; 16];
    let mut enc = ptr::dangling_mut::<CesEncoded>();
    unsafe {
        assert_eq!(
            ces_process(ptr::null(), data.as_ptr(), 16, ptr::null(), &mut enc),
            CesStatus::NullPointer
        );
        assert!(enc.is_null());
        assert_eq!(
            ces_process(ctx.0, ptr::null(), 16, ptr::null(), &mut enc),
            CesStatus::NullPointer
        );
        assert_eq!(last_error(), "data is NULL");
        assert_eq!(
            ces_process(ctx.0, data.as_ptr(), 16, ptr::null(), ptr::null_mut()),
            CesStatus::NullPointer
        );
        assert_eq!(
            ces_process(ctx.0, data.as_ptr(), usize::MAX, ptr::null(), &mut enc),
            CesStatus::InvalidArgument
        );
        assert!(enc.is_null());
    }
}

#[test]
fn process_rejects_chunks_over_the_maximum() {
    let ctx = Ctx::new(&KEY, 4, 2);
    // calloc'd: the pages are never touched, the length is checked first.
    let big = vec![0u8; CES_MAX_CHUNK_LEN as usize + 1];
    let mut enc = ptr::null_mut();
    let status = unsafe { ces_process(ctx.0, big.as_ptr(), big.len(), ptr::null(), &mut enc) };
    assert_eq!(status, CesStatus::InvalidParameters);
    assert!(enc.is_null());
    assert!(
        last_error().contains("exceeds the maximum"),
        "{}",
        last_error()
    );
}

#[test]
fn empty_chunk_with_null_data_round_trips() {
    let ctx = Ctx::new(&KEY, 4, 2);
    let mut enc = ptr::null_mut();
    let status = unsafe { ces_process(ctx.0, ptr::null(), 0, ptr::null(), &mut enc) };
    assert_eq!(status, CesStatus::Ok, "{}", last_error());
    unsafe { ces_encoded_free(enc) };
    let enc = process(&ctx, &[], None);
    let (status, plain, report) = reconstruct(&ctx, &enc.manifest, &all_present(&enc));
    assert_eq!(status, CesStatus::Ok);
    assert!(plain.is_empty());
    assert_eq!(report, CesDecodeReport::default());
}

#[test]
fn round_trip_with_missing_and_corrupt_shards_and_report() {
    let ctx = Ctx::new(&KEY, 4, 2);
    let data = sample();
    let enc = process(&ctx, &data, Some(c"notes.txt"));
    assert_eq!((enc.k, enc.shards.len()), (4, 6));

    let (status, plain, report) = reconstruct(&ctx, &enc.manifest, &all_present(&enc));
    assert_eq!((status, &plain), (CesStatus::Ok, &data));
    assert!(!report.reconstructed);

    // One data and one parity shard missing.
    let mut slots = all_present(&enc);
    slots[1] = None;
    slots[5] = None;
    let (status, plain, report) = reconstruct(&ctx, &enc.manifest, &slots);
    assert_eq!((status, &plain), (CesStatus::Ok, &data));
    assert_eq!(
        report,
        CesDecodeReport {
            corrupt: 0,
            missing: 2,
            reconstructed: true
        }
    );

    // One corrupt, one missing: still k valid.
    let mut bad = enc.shards[0].clone();
    bad[3] ^= 0x40;
    let mut slots = all_present(&enc);
    slots[0] = Some(&bad);
    slots[2] = None;
    let (status, plain, report) = reconstruct(&ctx, &enc.manifest, &slots);
    assert_eq!((status, &plain), (CesStatus::Ok, &data));
    assert_eq!((report.corrupt, report.missing), (1, 1));

    // One corrupt, m missing: refused.
    slots[4] = None;
    let (status, plain, report) = reconstruct(&ctx, &enc.manifest, &slots);
    assert_eq!(status, CesStatus::NotEnoughShards);
    assert!(plain.is_empty());
    assert_eq!((report.corrupt, report.missing), (1, 2));
    assert!(last_error().contains("not enough valid shards"));
}

#[test]
fn wrong_key_fails_authentication() {
    let ctx = Ctx::new(&KEY, 4, 2);
    let mut other = KEY;
    other[31] ^= 1;
    let wrong = Ctx::new(&other, 4, 2);
    let enc = process(&ctx, &sample(), None);
    let (status, plain, _) = reconstruct(&wrong, &enc.manifest, &all_present(&enc));
    assert_eq!(status, CesStatus::AuthenticationFailed);
    assert!(plain.is_empty());
    let msg = last_error();
    assert!(msg.contains("authentication failed"), "{msg}");
}

#[test]
fn reconstruct_uses_the_manifests_shard_counts() {
    // A context's (k, m) only shapes what it encodes.
    let ctx42 = Ctx::new(&KEY, 4, 2);
    let ctx31 = Ctx::new(&KEY, 3, 1);
    let data = sample();
    let enc = process(&ctx31, &data, None);
    let (status, plain, _) = reconstruct(&ctx42, &enc.manifest, &all_present(&enc));
    assert_eq!((status, plain), (CesStatus::Ok, data));
}

#[test]
fn garbage_manifests_are_malformed() {
    let ctx = Ctx::new(&KEY, 4, 2);
    let enc = process(&ctx, b"a small chunk", None);
    let slots = all_present(&enc);

    let mut x = 0x1234_5678_u32;
    let noise: Vec<u8> = (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut magic_then_zeros = b"PGCM\x01".to_vec();
    magic_then_zeros.resize(enc.manifest.len(), 0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one byte", vec![0]),
        ("noise", noise[..enc.manifest.len()].to_vec()),
        ("long noise", noise.clone()),
        ("truncated", enc.manifest[..enc.manifest.len() - 1].to_vec()),
        ("extended", [enc.manifest.as_slice(), &[0]].concat()),
        ("magic then zeros", magic_then_zeros),
    ];
    for (what, manifest) in cases {
        let (status, plain, _) = reconstruct(&ctx, &manifest, &slots);
        assert_eq!(status, CesStatus::MalformedManifest, "{what}");
        assert!(plain.is_empty());
        assert!(last_error().starts_with("malformed manifest"), "{what}");
    }
    // Every single flipped bit is caught (by the checksum at the latest).
    for i in 0..enc.manifest.len() {
        let mut manifest = enc.manifest.clone();
        manifest[i] ^= 1 << (i % 8);
        let (status, _, _) = reconstruct(&ctx, &manifest, &slots);
        assert_eq!(status, CesStatus::MalformedManifest, "flip at byte {i}");
    }
}

#[test]
fn reconstruct_rejects_null_pointers_and_wrong_lengths() {
    let ctx = Ctx::new(&KEY, 4, 2);
    let enc = process(&ctx, &sample(), None);
    let ptrs: Vec<*const u8> = enc.shards.iter().map(|s| s.as_ptr()).collect();
    let lens: Vec<usize> = enc.shards.iter().map(Vec::len).collect();
    let (man, man_len) = (enc.manifest.as_ptr(), enc.manifest.len());
    let mut out = CesBuffer {
        ptr: ptr::null_mut(),
        len: 0,
    };
    let call = |ctx: *const CesCtx,
                man: *const u8,
                man_len: usize,
                ptrs: *const *const u8,
                lens: *const usize,
                n: usize,
                out: *mut CesBuffer| unsafe {
        ces_reconstruct(ctx, man, man_len, ptrs, lens, n, out)
    };
    let (p, l) = (ptrs.as_ptr(), lens.as_ptr());
    assert_eq!(
        call(ptr::null(), man, man_len, p, l, 6, &mut out),
        CesStatus::NullPointer
    );
    assert_eq!(last_error(), "ctx is NULL");
    assert_eq!(
        call(ctx.0, ptr::null(), man_len, p, l, 6, &mut out),
        CesStatus::NullPointer
    );
    assert_eq!(
        call(ctx.0, ptr::null(), 0, p, l, 6, &mut out),
        CesStatus::NullPointer
    );
    assert_eq!(
        call(ctx.0, man, man_len, ptr::null(), l, 6, &mut out),
        CesStatus::NullPointer
    );
    assert_eq!(
        call(ctx.0, man, man_len, p, ptr::null(), 6, &mut out),
        CesStatus::NullPointer
    );
    assert_eq!(
        call(ctx.0, man, man_len, p, l, 6, ptr::null_mut()),
        CesStatus::NullPointer
    );
    for n in [0, 1, 5] {
        assert_eq!(
            call(ctx.0, man, man_len, p, l, n, &mut out),
            CesStatus::ShardCountMismatch,
            "n_shards = {n}"
        );
        assert!(last_error().contains("expected 6 shard slots"));
    }
    let mut more_ptrs = ptrs.clone();
    more_ptrs.push(ptrs[0]);
    let mut more_lens = lens.clone();
    more_lens.push(lens[0]);
    assert_eq!(
        call(
            ctx.0,
            man,
            man_len,
            more_ptrs.as_ptr(),
            more_lens.as_ptr(),
            7,
            &mut out
        ),
        CesStatus::ShardCountMismatch
    );
    // Lengths beyond the address space and misaligned arrays.
    let mut huge = lens.clone();
    huge[2] = usize::MAX;
    assert_eq!(
        call(ctx.0, man, man_len, p, huge.as_ptr(), 6, &mut out),
        CesStatus::InvalidArgument
    );
    assert_eq!(
        call(ctx.0, man, usize::MAX, p, l, 6, &mut out),
        CesStatus::InvalidArgument
    );
    assert_eq!(
        call(ctx.0, man, man_len, p, l, usize::MAX, &mut out),
        CesStatus::InvalidArgument
    );
    let misaligned = lens.as_ptr().cast::<u8>().wrapping_add(1).cast::<usize>();
    assert_eq!(
        call(ctx.0, man, man_len, p, misaligned, 6, &mut out),
        CesStatus::InvalidArgument
    );
    // Wrong shard lengths are corrupt shards, not memory errors.
    let mut short = lens.clone();
    short[0] -= 1;
    short[1] = 0;
    short[2] = 1;
    let (status, report) = {
        let mut report = CesDecodeReport::default();
        let status = unsafe {
            ces_reconstruct_ex(
                ctx.0,
                man,
                man_len,
                p,
                short.as_ptr(),
                6,
                &mut out,
                &mut report,
            )
        };
        (status, report)
    };
    assert_eq!(status, CesStatus::NotEnoughShards);
    assert_eq!(report.corrupt, 3);
    assert!(out.ptr.is_null() && out.len == 0);
    // Everything right: works, and the NULL report is fine.
    assert_eq!(call(ctx.0, man, man_len, p, l, 6, &mut out), CesStatus::Ok);
    assert_eq!(out.len, sample().len());
    unsafe { ces_buffer_free(&mut out) };
}

#[test]
fn verify_shard_checks_length_hash_and_index() {
    let ctx = Ctx::new(&KEY, 4, 2);
    let enc = process(&ctx, &sample(), None);
    let man = &enc.manifest;
    let verify = |i: usize, shard: &[u8]| unsafe {
        ces_verify_shard(man.as_ptr(), man.len(), i, shard.as_ptr(), shard.len())
    };
    for (i, shard) in enc.shards.iter().enumerate() {
        assert_eq!(verify(i, shard), CesStatus::Ok);
    }
    assert_eq!(verify(1, &enc.shards[0]), CesStatus::CorruptShard);
    assert_eq!(verify(0, &enc.shards[0][1..]), CesStatus::CorruptShard);
    assert!(last_error().contains("shard 0 is corrupt"));
    assert_eq!(verify(6, &enc.shards[0]), CesStatus::InvalidArgument);
    assert_eq!(
        verify(usize::MAX, &enc.shards[0]),
        CesStatus::InvalidArgument
    );
    unsafe {
        assert_eq!(
            ces_verify_shard(ptr::null(), man.len(), 0, enc.shards[0].as_ptr(), 10),
            CesStatus::NullPointer
        );
        assert_eq!(
            ces_verify_shard(man.as_ptr(), man.len(), 0, ptr::null(), 10),
            CesStatus::NullPointer
        );
        assert_eq!(
            ces_verify_shard(man.as_ptr(), man.len(), 0, ptr::null(), 0),
            CesStatus::CorruptShard
        );
        assert_eq!(
            ces_verify_shard(b"junk".as_ptr(), 4, 0, enc.shards[0].as_ptr(), 10),
            CesStatus::MalformedManifest
        );
    }
}

#[test]
fn hints_are_optional_and_never_change_the_bytes() {
    let ctx = Ctx::new(&KEY, 2, 1);
    let data = sample();
    for name in [c"a.txt", c"movie.mp4", c"noext", c"\xff\xfe.bin"] {
        for not_first_chunk in [false, true] {
            let hint = CesHint {
                file_name: name.as_ptr(),
                not_first_chunk,
            };
            let mut enc = ptr::null_mut();
            let status =
                unsafe { ces_process_ex(ctx.0, data.as_ptr(), data.len(), &hint, &mut enc) };
            assert_eq!(status, CesStatus::Ok);
            let e = unsafe { &*enc };
            let manifest = unsafe { std::slice::from_raw_parts(e.manifest, e.manifest_len) };
            let shards: Vec<&[u8]> =
                unsafe { std::slice::from_raw_parts(e.shards, e.shard_count * e.shard_len) }
                    .chunks_exact(e.shard_len)
                    .collect();
            let slots: Vec<Option<&[u8]>> = shards.into_iter().map(Some).collect();
            let (status, plain, _) = reconstruct(&ctx, manifest, &slots);
            assert_eq!((status, &plain), (CesStatus::Ok, &data), "{name:?}");
            unsafe { ces_encoded_free(enc) };
        }
    }
    let mut enc = ptr::null_mut();
    let status = unsafe { ces_process_ex(ctx.0, data.as_ptr(), data.len(), ptr::null(), &mut enc) };
    assert_eq!(status, CesStatus::Ok);
    unsafe { ces_encoded_free(enc) };
}

#[test]
fn never_compress_stores_plaintext_length() {
    let mut cfg = config(&KEY, 1, 0);
    cfg.zstd_level = CES_ZSTD_LEVEL_NONE;
    let mut ctx = ptr::null_mut();
    assert_eq!(unsafe { ces_new(&cfg, &mut ctx) }, CesStatus::Ok);
    let ctx = Ctx(ctx);
    let data = vec![b'a'; 10_000];
    let enc = process(&ctx, &data, Some(c"a.txt"));
    // k = 1: one shard holding plaintext + 16-byte tag, padded to even.
    assert_eq!(enc.shards[0].len(), 10_016);
    let compressed = process(&Ctx::new(&KEY, 1, 0), &data, Some(c"a.txt"));
    assert!(compressed.shards[0].len() < 1000);
}

#[test]
fn status_codes_and_texts() {
    let all = [
        (CesStatus::Ok, 0),
        (CesStatus::NullPointer, 1),
        (CesStatus::InvalidArgument, 2),
        (CesStatus::InvalidParameters, 3),
        (CesStatus::ShardCountMismatch, 4),
        (CesStatus::NotEnoughShards, 5),
        (CesStatus::CorruptShard, 6),
        (CesStatus::AuthenticationFailed, 7),
        (CesStatus::MalformedManifest, 8),
        (CesStatus::DecompressionFailed, 9),
        (CesStatus::RandomFailed, 10),
        (CesStatus::Panic, 11),
    ];
    let mut texts = std::collections::HashSet::new();
    for (status, code) in all {
        assert_eq!(status as i32, code, "{status:?}: codes are ABI");
        assert_eq!(CesStatus::from_code(code), Some(status));
        let text = status_str(code);
        assert_eq!(text, status.description().to_str().unwrap());
        assert!(texts.insert(text));
    }
    assert_eq!(status_str(0), "ok");
    for code in [-1, 12, 999, i32::MIN, i32::MAX] {
        assert_eq!(CesStatus::from_code(code), None);
        assert_eq!(status_str(code), "unknown status");
    }
}

#[test]
fn last_error_is_per_thread_and_cleared_by_success() {
    let ctx = Ctx::new(&KEY, 4, 2);
    let mut enc = ptr::null_mut();
    unsafe { ces_process(ctx.0, ptr::null(), 1, ptr::null(), &mut enc) };
    assert_eq!(last_error(), "data is NULL");
    std::thread::spawn(|| assert_eq!(last_error(), ""))
        .join()
        .unwrap();
    assert_eq!(last_error(), "data is NULL");
    let _ = process(&ctx, b"ok", None);
    assert_eq!(last_error(), "");
    let p: *const c_char = ces_last_error();
    assert!(!p.is_null());
}

#[test]
fn free_functions_accept_null_and_cleared_buffers() {
    unsafe {
        ces_free(ptr::null_mut());
        ces_encoded_free(ptr::null_mut());
        ces_buffer_free(ptr::null_mut());
        let mut empty = CesBuffer {
            ptr: ptr::null_mut(),
            len: 0,
        };
        ces_buffer_free(&mut empty);
        ces_buffer_free(&mut empty);
    }
}

#[test]
fn a_context_is_shared_across_threads() {
    struct Shared(*mut CesCtx);
    // SAFETY: the C API documents contexts as usable from several threads.
    unsafe impl Sync for Shared {}
    let ctx = Ctx::new(&KEY, 4, 2);
    let shared = Shared(ctx.0);
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let shared = &shared;
            s.spawn(move || {
                let borrowed = std::mem::ManuallyDrop::new(Ctx(shared.0));
                for i in 0..20u8 {
                    let data = vec![t ^ i; 1000 + usize::from(i)];
                    let enc = process(&borrowed, &data, None);
                    let (status, plain, _) =
                        reconstruct(&borrowed, &enc.manifest, &all_present(&enc));
                    assert_eq!((status, plain), (CesStatus::Ok, data));
                }
            });
        }
    });
}
