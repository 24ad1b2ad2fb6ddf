/*
 * ces_roundtrip: exercises libpangea_ces from C on a real file.
 *
 *   ces_roundtrip FILE [K M]        (default K=4, M=2)
 *
 * Splits FILE into 4 MiB chunks (one chunk when smaller, one empty chunk when
 * empty) and, for each chunk: encodes it, rebuilds it with every shard, with
 * M shards missing (data only, parity only, and a mix), checks that a flipped
 * byte in a shard plus M missing ones is refused (never wrong bytes), that a
 * wrong key fails authentication, that a damaged manifest is refused, and
 * that shard verification spots the damage. Then checks that NULL and garbage
 * arguments give errors. Prints a summary; exits 0 only if every check held.
 *
 * Built by src/ffi/tests/c_roundtrip.rs with
 *   cc -Wall -Wextra -Werror -std=c11 -I src/ffi ... -lpangea_ces
 */
#include "pangea_ces.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_LEN ((size_t)4 << 20)

static unsigned long passed;
static unsigned long failed;

/* Counts one check; on failure prints where, why and the library's message. */
#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (cond) {                                                           \
            passed++;                                                         \
        } else {                                                              \
            failed++;                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, " [last error: %s]\n", ces_last_error());        \
        }                                                                     \
    } while (0)

/* Reads a whole file; *len receives its size. NULL on error. */
static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        if (n == cap) {
            uint8_t *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static int parse_count(const char *s, unsigned long max, unsigned *out) {
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v > max) {
        return 0;
    }
    *out = (unsigned)v;
    return 1;
}

static int same_bytes(const ces_buffer *got, const uint8_t *want, size_t want_len) {
    if (got->len != want_len) {
        return 0;
    }
    if (want_len == 0) {
        return got->ptr == NULL;
    }
    return got->ptr != NULL && memcmp(got->ptr, want, want_len) == 0;
}

/* The shards of one encoded chunk as the pointer and length arrays that
 * ces_reconstruct takes; drop[i] != 0 leaves slot i NULL. */
typedef struct {
    size_t total;
    const uint8_t **ptrs;
    size_t *lens;
} shard_set;

static void fill_set(shard_set *set, const ces_encoded *enc, const unsigned char *drop) {
    for (size_t i = 0; i < set->total; i++) {
        set->ptrs[i] = drop[i] ? NULL : enc->shards + i * enc->shard_len;
        set->lens[i] = drop[i] ? 0 : enc->shard_len;
    }
}

/* Marks m shards to drop, alternating data and parity shards (rotated by
 * `seed`), so every chunk loses a mix of both. */
static void mixed_drop(size_t k, size_t m, size_t seed, unsigned char *drop) {
    memset(drop, 0, k + m);
    size_t di = 0, pi = 0, dropped = 0;
    while (dropped < m) {
        if (di < k && (dropped % 2 == 0 || pi >= m)) {
            drop[(seed + di++) % k] = 1;
        } else {
            drop[k + (seed + pi++) % m] = 1;
        }
        dropped++;
    }
}

static size_t lowest_kept(const unsigned char *drop, size_t total) {
    for (size_t i = 0; i < total; i++) {
        if (!drop[i]) {
            return i;
        }
    }
    return total;
}

/* Rebuilds with `set` and expects the original bytes back. */
static void expect_rebuild(const ces_ctx *ctx, const ces_encoded *enc, const shard_set *set,
                           const uint8_t *data, size_t len, const char *what,
                           size_t want_missing, size_t want_corrupt) {
    ces_buffer out = {NULL, 0};
    ces_decode_report rep;
    memset(&rep, 0xff, sizeof rep);
    ces_status st = ces_reconstruct_ex(ctx, enc->manifest, enc->manifest_len, set->ptrs,
                                       set->lens, set->total, &out, &rep);
    CHECK(st == CES_STATUS_OK, "%s: status %d (%s)", what, (int)st, ces_status_str(st));
    CHECK(same_bytes(&out, data, len), "%s: rebuilt %zu bytes differ from the %zu original",
          what, out.len, len);
    CHECK(rep.missing == want_missing && rep.corrupt == want_corrupt,
          "%s: report missing=%zu corrupt=%zu, expected %zu and %zu", what, rep.missing,
          rep.corrupt, want_missing, want_corrupt);
    ces_buffer_free(&out);
    CHECK(out.ptr == NULL && out.len == 0, "%s: ces_buffer_free did not reset the buffer", what);
}

/* Every check on one encoded chunk. */
static void check_chunk(const ces_ctx *ctx, const ces_ctx *wrong_ctx, const ces_encoded *enc,
                        const uint8_t *data, size_t len, size_t k, size_t m, size_t seed) {
    size_t total = k + m;
    unsigned char *drop = calloc(total, 1);
    shard_set set = {total, calloc(total, sizeof(uint8_t *)), calloc(total, sizeof(size_t))};
    uint8_t *bad_shard = malloc(enc->shard_len);
    uint8_t *bad_manifest = malloc(enc->manifest_len);
    if (drop == NULL || set.ptrs == NULL || set.lens == NULL || bad_shard == NULL ||
        bad_manifest == NULL) {
        CHECK(0, "out of memory");
        goto done;
    }

    /* Every shard present. */
    fill_set(&set, enc, drop);
    expect_rebuild(ctx, enc, &set, data, len, "all shards", 0, 0);
    for (size_t i = 0; i < total; i++) {
        ces_status st = ces_verify_shard(enc->manifest, enc->manifest_len, i, set.ptrs[i],
                                         set.lens[i]);
        CHECK(st == CES_STATUS_OK, "verify shard %zu: status %d", i, (int)st);
    }

    /* m missing: a mix of data and parity, the first m, the last m. */
    mixed_drop(k, m, seed, drop);
    fill_set(&set, enc, drop);
    expect_rebuild(ctx, enc, &set, data, len, "m missing (mixed)", m, 0);
    memset(drop, 0, total);
    memset(drop, 1, m);
    fill_set(&set, enc, drop);
    expect_rebuild(ctx, enc, &set, data, len, "m missing (first m)", m, 0);
    memset(drop, 0, total);
    memset(drop + k, 1, m);
    fill_set(&set, enc, drop);
    expect_rebuild(ctx, enc, &set, data, len, "m missing (parity)", m, 0);

    /* A flipped byte in a kept shard, plus m missing: refused, never wrong bytes. */
    mixed_drop(k, m, seed, drop);
    fill_set(&set, enc, drop);
    size_t victim = lowest_kept(drop, total);
    memcpy(bad_shard, set.ptrs[victim], enc->shard_len);
    bad_shard[seed % enc->shard_len] ^= 0x01;
    set.ptrs[victim] = bad_shard;
    {
        ces_buffer out = {NULL, 0};
        ces_decode_report rep;
        ces_status st = ces_reconstruct_ex(ctx, enc->manifest, enc->manifest_len, set.ptrs,
                                           set.lens, total, &out, &rep);
        CHECK(st == CES_STATUS_NOT_ENOUGH_SHARDS || st == CES_STATUS_CORRUPT_SHARD,
              "corrupt + m missing: status %d (%s), expected NOT_ENOUGH_SHARDS or CORRUPT_SHARD",
              (int)st, ces_status_str(st));
        CHECK(out.ptr == NULL && out.len == 0, "corrupt + m missing: output not cleared");
        CHECK(rep.corrupt == 1 && rep.missing == m, "corrupt + m missing: report %zu/%zu",
              rep.corrupt, rep.missing);
        ces_buffer_free(&out);
    }
    {
        ces_status st = ces_verify_shard(enc->manifest, enc->manifest_len, victim, bad_shard,
                                         enc->shard_len);
        CHECK(st == CES_STATUS_CORRUPT_SHARD, "verify flipped shard: status %d", (int)st);
        st = ces_verify_shard(enc->manifest, enc->manifest_len, victim, bad_shard,
                              enc->shard_len - 1);
        CHECK(st == CES_STATUS_CORRUPT_SHARD, "verify short shard: status %d", (int)st);
    }
    /* The same flipped byte with one fewer missing: rebuilt, damage reported. */
    if (m > 0) {
        for (size_t i = total; i-- > 0;) {
            if (drop[i]) {
                drop[i] = 0;
                break;
            }
        }
        fill_set(&set, enc, drop);
        set.ptrs[victim] = bad_shard;
        /* Shards are verified in index order until k are valid: the damaged
         * one is reported only if it came before that. */
        size_t good = 0, seen_bad = 0;
        for (size_t i = 0; i < total && good < k; i++) {
            if (i == victim) {
                seen_bad = 1;
            } else if (!drop[i]) {
                good++;
            }
        }
        expect_rebuild(ctx, enc, &set, data, len, "corrupt + m-1 missing", m - 1, seen_bad);
    }

    /* The wrong key. */
    memset(drop, 0, total);
    fill_set(&set, enc, drop);
    {
        ces_buffer out = {NULL, 0};
        ces_status st = ces_reconstruct(wrong_ctx, enc->manifest, enc->manifest_len, set.ptrs,
                                        set.lens, total, &out);
        CHECK(st == CES_STATUS_AUTHENTICATION_FAILED, "wrong key: status %d (%s)", (int)st,
              ces_status_str(st));
        CHECK(out.ptr == NULL && out.len == 0, "wrong key: output not cleared");
    }

    /* A damaged manifest. */
    memcpy(bad_manifest, enc->manifest, enc->manifest_len);
    bad_manifest[(seed * 7 + 5) % enc->manifest_len] ^= 0x20;
    {
        ces_buffer out = {NULL, 0};
        ces_status st = ces_reconstruct(ctx, bad_manifest, enc->manifest_len, set.ptrs,
                                        set.lens, total, &out);
        CHECK(st == CES_STATUS_MALFORMED_MANIFEST, "damaged manifest: status %d (%s)", (int)st,
              ces_status_str(st));
        st = ces_reconstruct(ctx, enc->manifest, enc->manifest_len - 1, set.ptrs, set.lens,
                             total, &out);
        CHECK(st == CES_STATUS_MALFORMED_MANIFEST, "truncated manifest: status %d", (int)st);
    }

done:
    free(bad_manifest);
    free(bad_shard);
    free(set.lens);
    free(set.ptrs);
    free(drop);
}

/* NULL and garbage arguments: errors, never crashes. */
static void check_bad_arguments(const ces_ctx *ctx, const uint8_t *key) {
    ces_ctx *c = (ces_ctx *)1;
    ces_config cfg = {4, 2, key, CES_KEY_LEN, CES_ZSTD_LEVEL_DEFAULT};
    ces_status st;

    CHECK(ces_new(NULL, &c) == CES_STATUS_NULL_POINTER && c == NULL, "ces_new(NULL cfg)");
    CHECK(strlen(ces_last_error()) > 0, "no message after a failure");
    CHECK(ces_new(&cfg, NULL) == CES_STATUS_NULL_POINTER, "ces_new(NULL out)");
    cfg.key = NULL;
    CHECK(ces_new(&cfg, &c) == CES_STATUS_NULL_POINTER && c == NULL, "ces_new(NULL key)");
    cfg.key = key;
    cfg.key_len = CES_KEY_LEN - 1;
    CHECK(ces_new(&cfg, &c) == CES_STATUS_INVALID_PARAMETERS, "ces_new(31-byte key)");
    cfg.key_len = CES_KEY_LEN + 1;
    CHECK(ces_new(&cfg, &c) == CES_STATUS_INVALID_PARAMETERS, "ces_new(33-byte key)");
    cfg.key_len = CES_KEY_LEN;
    cfg.k = 0;
    CHECK(ces_new(&cfg, &c) == CES_STATUS_INVALID_PARAMETERS, "ces_new(k = 0)");
    cfg.k = 4;
    cfg.zstd_level = 23;
    CHECK(ces_new(&cfg, &c) == CES_STATUS_INVALID_PARAMETERS, "ces_new(level 23)");
    cfg.zstd_level = -2;
    CHECK(ces_new(&cfg, &c) == CES_STATUS_INVALID_PARAMETERS, "ces_new(level -2)");
    cfg.zstd_level = CES_ZSTD_LEVEL_NONE;
    st = ces_new(&cfg, &c);
    CHECK(st == CES_STATUS_OK && c != NULL, "ces_new(never compress): status %d", (int)st);
    CHECK(strcmp(ces_last_error(), "") == 0, "message left after a success");
    ces_free(c);

    static const uint8_t hello[] = "hello, pangea";
    ces_encoded *enc = (ces_encoded *)1;
    CHECK(ces_process(NULL, hello, sizeof hello, NULL, &enc) == CES_STATUS_NULL_POINTER &&
              enc == NULL,
          "ces_process(NULL ctx)");
    CHECK(ces_process(ctx, NULL, 5, NULL, &enc) == CES_STATUS_NULL_POINTER,
          "ces_process(NULL data, len 5)");
    CHECK(ces_process(ctx, hello, sizeof hello, NULL, NULL) == CES_STATUS_NULL_POINTER,
          "ces_process(NULL out)");
    st = ces_process(ctx, hello, sizeof hello, "hello.txt", &enc);
    CHECK(st == CES_STATUS_OK && enc != NULL, "ces_process(hello): status %d", (int)st);
    if (st != CES_STATUS_OK) {
        return;
    }

    size_t total = enc->shard_count;
    const uint8_t **ptrs = calloc(total + 1, sizeof *ptrs);
    size_t *lens = calloc(total + 1, sizeof *lens);
    uint8_t garbage[512];
    uint32_t x = 0x9e3779b9u;
    for (size_t i = 0; i < sizeof garbage; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        garbage[i] = (uint8_t)x;
    }
    if (ptrs == NULL || lens == NULL) {
        CHECK(0, "out of memory");
        goto done;
    }
    for (size_t i = 0; i <= total; i++) {
        ptrs[i] = enc->shards + (i % total) * enc->shard_len;
        lens[i] = enc->shard_len;
    }
    const uint8_t *man = enc->manifest;
    size_t man_len = enc->manifest_len;
    ces_buffer out = {(uint8_t *)1, 1};

    st = ces_reconstruct(NULL, man, man_len, ptrs, lens, total, &out);
    CHECK(st == CES_STATUS_NULL_POINTER && out.ptr == NULL && out.len == 0,
          "ces_reconstruct(NULL ctx): %d", (int)st);
    st = ces_reconstruct(ctx, NULL, man_len, ptrs, lens, total, &out);
    CHECK(st == CES_STATUS_NULL_POINTER, "ces_reconstruct(NULL manifest): %d", (int)st);
    st = ces_reconstruct(ctx, man, man_len, NULL, lens, total, &out);
    CHECK(st == CES_STATUS_NULL_POINTER, "ces_reconstruct(NULL shards): %d", (int)st);
    st = ces_reconstruct(ctx, man, man_len, ptrs, NULL, total, &out);
    CHECK(st == CES_STATUS_NULL_POINTER, "ces_reconstruct(NULL shard_lens): %d", (int)st);
    st = ces_reconstruct(ctx, man, man_len, ptrs, lens, total, NULL);
    CHECK(st == CES_STATUS_NULL_POINTER, "ces_reconstruct(NULL out): %d", (int)st);
    st = ces_reconstruct(ctx, garbage, man_len, ptrs, lens, total, &out);
    CHECK(st == CES_STATUS_MALFORMED_MANIFEST, "garbage manifest: %d", (int)st);
    st = ces_reconstruct(ctx, garbage, sizeof garbage, ptrs, lens, total, &out);
    CHECK(st == CES_STATUS_MALFORMED_MANIFEST, "long garbage manifest: %d", (int)st);
    st = ces_reconstruct(ctx, garbage, 0, ptrs, lens, total, &out);
    CHECK(st == CES_STATUS_MALFORMED_MANIFEST, "empty manifest: %d", (int)st);
    st = ces_reconstruct(ctx, man, man_len, ptrs, lens, total - 1, &out);
    CHECK(st == CES_STATUS_SHARD_COUNT_MISMATCH, "n_shards = k + m - 1: %d", (int)st);
    st = ces_reconstruct(ctx, man, man_len, ptrs, lens, total + 1, &out);
    CHECK(st == CES_STATUS_SHARD_COUNT_MISMATCH, "n_shards = k + m + 1: %d", (int)st);
    st = ces_reconstruct(ctx, man, man_len, ptrs, lens, 0, &out);
    CHECK(st == CES_STATUS_SHARD_COUNT_MISMATCH, "n_shards = 0: %d", (int)st);
    if (total > enc->data_shards) {
        /* A zero-length shard is a corrupt one; m >= 1 covers it. */
        lens[0] = 0;
        ptrs[0] = garbage;
        st = ces_reconstruct(ctx, man, man_len, ptrs, lens, total, &out);
        CHECK(st == CES_STATUS_OK && same_bytes(&out, hello, sizeof hello), "empty shard 0: %d",
              (int)st);
        ces_buffer_free(&out);
        ces_buffer_free(&out);
        ptrs[0] = enc->shards;
        lens[0] = enc->shard_len;
    }

    CHECK(ces_verify_shard(man, man_len, total, ptrs[1], lens[1]) ==
              CES_STATUS_INVALID_ARGUMENT,
          "ces_verify_shard(index k + m)");
    CHECK(ces_verify_shard(NULL, man_len, 1, ptrs[1], lens[1]) == CES_STATUS_NULL_POINTER,
          "ces_verify_shard(NULL manifest)");
    CHECK(ces_verify_shard(man, man_len, 1, NULL, lens[1]) == CES_STATUS_NULL_POINTER,
          "ces_verify_shard(NULL shard)");
    CHECK(ces_verify_shard(garbage, man_len, 1, ptrs[1], lens[1]) ==
              CES_STATUS_MALFORMED_MANIFEST,
          "ces_verify_shard(garbage manifest)");

    for (int s = CES_STATUS_OK; s <= CES_STATUS_PANIC; s++) {
        const char *text = ces_status_str(s);
        CHECK(text != NULL && strlen(text) > 0 && strcmp(text, "unknown status") != 0,
              "ces_status_str(%d)", s);
    }
    CHECK(strcmp(ces_status_str(999), "unknown status") == 0, "ces_status_str(999)");
    CHECK(strcmp(ces_status_str(-1), "unknown status") == 0, "ces_status_str(-1)");

done:
    free(lens);
    free(ptrs);
    ces_encoded_free(enc);
    ces_encoded_free(NULL);
    ces_free(NULL);
    ces_buffer_free(NULL);
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s FILE [K M]\n", argv[0]);
        return 2;
    }
    unsigned k = 4, m = 2;
    if (argc == 4 && (!parse_count(argv[2], 65535, &k) || !parse_count(argv[3], 65535, &m))) {
        fprintf(stderr, "K and M must be integers in 0..65535\n");
        return 2;
    }
    const char *path = argv[1];
    size_t len = 0;
    uint8_t *data = read_file(path, &len);
    if (data == NULL) {
        fprintf(stderr, "cannot read %s\n", path);
        return 2;
    }

    uint8_t key[CES_KEY_LEN], wrong_key[CES_KEY_LEN];
    for (size_t i = 0; i < CES_KEY_LEN; i++) {
        key[i] = (uint8_t)(0xa5 ^ (i * 29));
        wrong_key[i] = key[i];
    }
    wrong_key[CES_KEY_LEN - 1] ^= 0x80;

    ces_config cfg = {(uint16_t)k, (uint16_t)m, key, sizeof key, CES_ZSTD_LEVEL_DEFAULT};
    ces_ctx *ctx = NULL, *wrong_ctx = NULL;
    ces_status st = ces_new(&cfg, &ctx);
    if (st != CES_STATUS_OK) {
        fprintf(stderr, "ces_new(k=%u, m=%u): %s\n", k, m, ces_last_error());
        free(data);
        return 1;
    }
    cfg.key = wrong_key;
    st = ces_new(&cfg, &wrong_ctx);
    CHECK(st == CES_STATUS_OK, "ces_new(wrong key): status %d", (int)st);
    memset(wrong_key, 0, sizeof wrong_key);

    size_t chunks = len == 0 ? 1 : (len + CHUNK_LEN - 1) / CHUNK_LEN;
    size_t stored = 0;
    for (size_t c = 0; c < chunks && wrong_ctx != NULL; c++) {
        size_t off = c * CHUNK_LEN;
        size_t clen = len - off < CHUNK_LEN ? len - off : CHUNK_LEN;
        const uint8_t *cdata = clen == 0 ? NULL : data + off;
        ces_encoded *enc = NULL;
        if (c == 0) {
            st = ces_process(ctx, cdata, clen, path, &enc);
        } else {
            ces_hint hint = {path, true};
            st = ces_process_ex(ctx, cdata, clen, &hint, &enc);
        }
        CHECK(st == CES_STATUS_OK && enc != NULL, "chunk %zu: ces_process status %d", c, (int)st);
        if (enc == NULL) {
            continue;
        }
        CHECK(enc->shard_count == (size_t)k + m && enc->data_shards == k && enc->shard_len > 0 &&
                  enc->manifest != NULL && enc->manifest_len > 0,
              "chunk %zu: encoded chunk has %zu shards of %zu bytes", c, enc->shard_count,
              enc->shard_len);
        stored += enc->shard_count * enc->shard_len;
        check_chunk(ctx, wrong_ctx, enc, cdata, clen, k, m, c);
        ces_encoded_free(enc);
    }
    check_bad_arguments(ctx, key);
    ces_free(wrong_ctx);
    ces_free(ctx);
    free(data);

    printf("ces_roundtrip: %s: %zu bytes in %zu chunk(s), k=%u m=%u, %zu bytes stored\n", path,
           len, chunks, k, m, stored);
    printf("ces_roundtrip: %s: %lu checks passed, %lu failed\n", failed == 0 ? "OK" : "FAILED",
           passed, failed);
    return failed == 0 ? 0 : 1;
}
