/* test_safetensors: the .ckpt container.
 *
 * Round trip: what st_writer_save writes, st_open reads back bit-exact, with
 * metadata, F16/BF16/F64 conversion and an 8-byte-aligned data section.
 * Malformed files (built here byte by byte): each must be refused with -1 and
 * an error naming the file, never a crash or a huge allocation. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"
#include "test.h"
#include "util.h"

static char tmpdir[256];

static void path_in_tmp(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmpdir, name);
}

/* Write a raw safetensors file: header text + data bytes. */
static void write_raw(const char *path, uint64_t hlen_field, const char *hdr, const void *data,
                      size_t data_len) {
    FILE *f = fopen(path, "wb");
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(hlen_field >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(hdr, 1, strlen(hdr), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}

static void expect_refused(const char *label, const char *hdr, size_t data_len, int lie_len,
                           uint64_t len_field, const char *must_contain) {
    char path[512];
    path_in_tmp(path, sizeof path, "bad.safetensors");
    uint8_t *data = calloc(data_len ? data_len : 1, 1);
    write_raw(path, lie_len ? len_field : strlen(hdr), hdr, data, data_len);
    free(data);
    StFile f;
    align_error_clear();
    int rc = st_open(&f, path);
    CHECK(rc == -1, "%s: accepted a malformed file", label);
    if (rc == 0) st_close(&f);
    const char *e = align_error();
    CHECK(strstr(e, path) != NULL, "%s: error does not name the file: %s", label, e);
    if (must_contain)
        CHECK(strstr(e, must_contain) != NULL, "%s: error \"%s\" lacks \"%s\"", label, e,
              must_contain);
}

static void test_round_trip(void) {
    char path[512];
    path_in_tmp(path, sizeof path, "rt.safetensors");
    float a[6] = {1.5f, -2.25f, 3.0e-8f, 1e30f, -0.0f, 42.0f};
    uint16_t h[3] = {0x3c00, 0xc000, 0x0001}; /* 1.0, -2.0, smallest subnormal */
    uint16_t bf[2] = {0x3f80, 0xc0a0};        /* 1.0, -5.0 */
    double d[2] = {0.125, -1e10};
    int32_t ids[4] = {1, 2, 3, -4};
    int64_t sa[2] = {2, 3}, sh[1] = {3}, sb[1] = {2}, sd[2] = {1, 2}, si[1] = {4};
    StWriter *w = st_writer_new();
    CHECK(st_writer_add(w, "a.weight", ST_F32, 2, sa, a) == 0, "add a");
    CHECK(st_writer_add(w, "h", ST_F16, 1, sh, h) == 0, "add h");
    CHECK(st_writer_add(w, "bf", ST_BF16, 1, sb, bf) == 0, "add bf");
    CHECK(st_writer_add(w, "d", ST_F64, 2, sd, d) == 0, "add d");
    CHECK(st_writer_add(w, "ids", ST_I32, 1, si, ids) == 0, "add ids");
    CHECK(st_writer_add(w, "scalar", ST_F32, 0, NULL, a) == 0, "add scalar");
    CHECK(st_writer_add(w, "a.weight", ST_F32, 2, sa, a) == -1, "duplicate name refused");
    CHECK(st_writer_meta(w, "config", "{\"x\": \"quoted \\\" and\\nnewline\"}") == 0, "meta");
    CHECK(st_writer_meta(w, "empty", "") == 0, "meta empty");
    CHECK(st_writer_save(w, path) == 0, "save: %s", align_error());
    st_writer_free(w);

    StFile f;
    CHECK(st_open(&f, path) == 0, "open: %s", align_error());
    CHECK(f.n_tensors == 6, "6 tensors, got %d", f.n_tensors);
    CHECK(((uintptr_t)f.data & 7) == 0, "data section 8-byte aligned");
    const StTensor *t = st_find(&f, "a.weight");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3,
          "a.weight header");
    float out[6];
    if (t) {
        CHECK(st_read_f32(&f, t, out) == 0, "read a");
        CHECK(memcmp(out, a, sizeof a) == 0, "a bit-exact");
    }
    t = st_find(&f, "h");
    if (t && st_read_f32(&f, t, out) == 0) {
        CHECK(out[0] == 1.0f && out[1] == -2.0f, "f16 normal values");
        CHECK_CLOSE(out[2], 5.9604644775390625e-08, 0, 1e-15, "f16 subnormal");
    } else CHECK(0, "h missing");
    t = st_find(&f, "bf");
    if (t && st_read_f32(&f, t, out) == 0) CHECK(out[0] == 1.0f && out[1] == -5.0f, "bf16");
    else CHECK(0, "bf missing");
    t = st_find(&f, "d");
    if (t && st_read_f32(&f, t, out) == 0) CHECK(out[0] == 0.125f && out[1] == -1e10f, "f64");
    else CHECK(0, "d missing");
    t = st_find(&f, "ids");
    CHECK(t && st_read_f32(&f, t, out) == -1, "I32 is not read as floats");
    if (t) CHECK(memcmp(f.data + t->begin, ids, sizeof ids) == 0, "I32 raw bytes");
    t = st_find(&f, "scalar");
    CHECK(t && t->ndim == 0 && st_numel(t) == 1, "scalar tensor");
    CHECK(st_find(&f, "nope") == NULL, "absent tensor");
    const char *m = st_meta(&f, "config");
    CHECK(m && strcmp(m, "{\"x\": \"quoted \\\" and\\nnewline\"}") == 0, "metadata escaped");
    CHECK(st_meta(&f, "empty") && st_meta(&f, "empty")[0] == 0, "empty metadata");
    CHECK(st_meta(&f, "missing") == NULL, "absent metadata");
    st_close(&f);

    /* No temp files left behind. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp >/dev/null", tmpdir);
    CHECK(system(cmd) != 0, "temporary file left behind");

    /* Overwrite in place works (rename over an existing file). */
    w = st_writer_new();
    CHECK(st_writer_add(w, "only", ST_F32, 1, sb, a) == 0, "add only");
    CHECK(st_writer_save(w, path) == 0, "overwrite: %s", align_error());
    st_writer_free(w);
    CHECK(st_open(&f, path) == 0 && f.n_tensors == 1 && f.n_meta == 0, "overwritten file");
    st_close(&f);

    /* An empty file (no tensors) is valid. */
    w = st_writer_new();
    CHECK(st_writer_save(w, path) == 0, "save empty");
    st_writer_free(w);
    CHECK(st_open(&f, path) == 0 && f.n_tensors == 0 && f.data_len == 0, "empty file");
    st_close(&f);

    /* Saving into a missing directory fails cleanly. */
    w = st_writer_new();
    CHECK(st_writer_save(w, "/nonexistent-dir-xyz/a.safetensors") == -1, "bad dir refused");
    st_writer_free(w);
}

static void test_malformed(void) {
    char path[512];
    path_in_tmp(path, sizeof path, "bad.safetensors");

    /* Shorter than the length field. */
    FILE *fp = fopen(path, "wb");
    fwrite("abc", 1, 3, fp);
    fclose(fp);
    StFile f;
    CHECK(st_open(&f, path) == -1 && strstr(align_error(), "too short"), "3-byte file: %s",
          align_error());
    CHECK(st_open(&f, "/nonexistent/x.safetensors") == -1, "missing file refused");

    const char *good = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    expect_refused("header length > file", good, 8, 1, 1000, "exceeds");
    expect_refused("huge header length", good, 8, 1, UINT64_MAX, "exceeds");
    expect_refused("truncated data", good, 4, 0, 0, NULL);
    expect_refused("extra data", good, 12, 0, 0, "cover");
    expect_refused("non-JSON header", "this is not json at all", 0, 0, 0, "JSON");
    expect_refused("JSON array header", "[1,2,3]", 0, 0, 0, "object");
    expect_refused("trailing garbage", "{}xyz", 0, 0, 0, "trailing");
    expect_refused("overlapping offsets",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                   12, 0, 0, "overlap");
    expect_refused("gap between tensors",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                   12, 0, 0, "gap");
    expect_refused("shape/byte mismatch",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0, 0,
                   "bytes");
    expect_refused("offsets past the data",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, 0, 0,
                   "outside");
    expect_refused("begin > end",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, 0, 0,
                   NULL);
    expect_refused("huge shape",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                   "\"data_offsets\":[0,8]}}",
                   8, 0, 0, "larger");
    expect_refused("huge offsets",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                   "\"data_offsets\":[18446744073709551608,18446744073709551616]}}",
                   8, 0, 0, NULL);
    expect_refused("negative shape",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0, 0,
                   "shape");
    expect_refused("fractional offset",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8]}}", 8, 0, 0,
                   "data_offsets");
    expect_refused("unknown dtype",
                   "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, 0,
                   "dtype");
    expect_refused("missing fields", "{\"a\":{\"dtype\":\"F32\"}}", 0, 0, 0, "lacks");
    expect_refused("tensor not an object", "{\"a\":5}", 0, 0, 0, NULL);
    expect_refused("too many dims",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                   "\"data_offsets\":[0,4]}}",
                   4, 0, 0, "dimensions");
    expect_refused("metadata not strings",
                   "{\"__metadata__\":{\"k\":5},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                   8, 0, 0, "metadata");
    expect_refused("duplicate tensor",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                   8, 0, 0, "twice");
    expect_refused("unterminated JSON", "{\"a\":{\"dtype\":\"F3", 0, 0, 0, "JSON");

    /* A file with a valid prefix, truncated at every length: never a crash. */
    char good_path[512];
    path_in_tmp(good_path, sizeof good_path, "trunc_src.safetensors");
    float v[16];
    for (int i = 0; i < 16; i++) v[i] = (float)i;
    int64_t s[1] = {16};
    StWriter *w = st_writer_new();
    st_writer_add(w, "v", ST_F32, 1, s, v);
    st_writer_meta(w, "k", "value");
    st_writer_save(w, good_path);
    st_writer_free(w);
    size_t len;
    char *bytes = align_read_file(good_path, &len);
    int refused = 0;
    for (size_t cut = 0; bytes && cut < len; cut++) {
        FILE *o = fopen(path, "wb");
        fwrite(bytes, 1, cut, o);
        fclose(o);
        if (st_open(&f, path) == -1) refused++;
        else st_close(&f);
    }
    CHECK(bytes && refused == (int)len, "every truncation refused (%d of %zu)", refused, len);
    free(bytes);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/align_test_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_malformed();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
