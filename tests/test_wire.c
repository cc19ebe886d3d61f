/* The message layer (common/net/wire.h): what a builder writes a parser reads
 * back exactly (every dtype, shapes, strings, string arrays, unaligned
 * bins); and every kind of malformed or hostile input is refused with a
 * sentence, without large allocations: truncation, trailing bytes, a
 * non-map, missing or mistyped op/v, duplicate keys, non-string keys, ext
 * types, nesting bombs, containers and bins whose declared length is far
 * beyond the bytes sent, shape/data mismatches, shape overflow, bad
 * offsets, over-limit sizes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "util.h"
#include "wire.h"

static WireMsg *parse_bytes(const uint8_t *b, size_t n) { return wire_parse(b, n, NULL); }

static void test_round_trip(void) {
    int32_t tok[5] = {1, -2, 300000, 4, 5};
    int64_t off[3] = {0, 2, 5};
    float f[4] = {1.5f, -0.25f, 3e30f, 0};
    double d[2] = {1e-300, -7};
    uint8_t u[3] = {0, 255, 7};
    int64_t shape2[2] = {2, 2};
    const char *strs[3] = {"a", "", "h\xc3\xa9llo"};
    WireWriter *w = wire_writer_new("score");
    wire_put_uint(w, "id", 0xfffffffffffULL);
    wire_put_int(w, "neg", -5);
    wire_put_float(w, "x", 0.125);
    wire_put_bool(w, "flag", 1);
    wire_put_str(w, "name", "tiny");
    wire_put_vec(w, "tokens", WIRE_I32, tok, 5);
    wire_put_vec(w, "offsets", WIRE_I64, off, 3);
    wire_put_array(w, "m", WIRE_F32, f, 2, shape2);
    wire_put_vec(w, "d", WIRE_F64, d, 2);
    wire_put_vec(w, "u", WIRE_U8, u, 3);
    wire_put_vec(w, "empty", WIRE_I32, NULL, 0);
    wire_put_str_array(w, "texts", strs, NULL, 3);
    void *buf;
    size_t len;
    CHECK(wire_finish(w, &buf, &len) == 0, "finish: %s", align_error());
    /* parse from an odd address so every bin is unaligned */
    uint8_t *odd = malloc(len + 1);
    memcpy(odd + 1, buf, len);
    WireMsg *m = wire_parse(odd + 1, len, NULL);
    CHECK(m != NULL, "parse: %s", align_error());
    if (!m) return;
    CHECK(!strcmp(wire_op(m), "score") && wire_version(m) == WIRE_VERSION, "op and v");
    uint64_t id;
    int64_t neg;
    double x;
    int flag;
    const char *s;
    size_t sl;
    CHECK(!wire_get_uint(m, "id", &id) && id == 0xfffffffffffULL, "id");
    CHECK(!wire_get_int(m, "neg", &neg) && neg == -5, "negative int");
    CHECK(!wire_get_float(m, "x", &x) && x == 0.125, "float");
    CHECK(!wire_get_bool(m, "flag", &flag) && flag == 1, "bool");
    CHECK(!wire_get_str(m, "name", &s, &sl) && sl == 4 && !memcmp(s, "tiny", 4), "string");
    WireArray a;
    CHECK(!wire_get_array(m, "tokens", WIRE_I32, NULL, &a) && a.numel == 5 && !memcmp(a.data, tok, sizeof tok), "i32 array");
    CHECK(((uintptr_t)a.data % 8) == 0, "array data copied out aligned");
    free(a.data);
    int64_t *o;
    size_t no;
    CHECK(!wire_get_index_array(m, "offsets", NULL, &o, &no) && no == 3 && o[2] == 5, "offsets");
    CHECK(wire_check_offsets(o, no, 5, "offsets") == 0, "offsets valid");
    CHECK(wire_check_offsets(o, no, 6, "offsets") == -1 && strstr(align_error(), "last offset"), "offsets vs total");
    free(o);
    CHECK(!wire_get_array(m, "m", WIRE_F32, NULL, &a) && a.ndim == 2 && a.shape[0] == 2 && !memcmp(a.data, f, sizeof f), "2-D f32");
    free(a.data);
    CHECK(!wire_get_array(m, "d", WIRE_F64, NULL, &a) && !memcmp(a.data, d, sizeof d), "f64");
    free(a.data);
    CHECK(!wire_get_array(m, "u", WIRE_U8, NULL, &a) && !memcmp(a.data, u, 3), "u8");
    free(a.data);
    CHECK(!wire_get_array(m, "empty", WIRE_I32, NULL, &a) && a.numel == 0, "empty array");
    free(a.data);
    CHECK(wire_get_array(m, "tokens", WIRE_F32, NULL, &a) == -1 && strstr(align_error(), "dtype i32 where f32"), "dtype checked");
    char **strv;
    size_t ns;
    CHECK(!wire_get_str_array(m, "texts", NULL, &strv, &ns) && ns == 3 && !strcmp(strv[2], strs[2]) && !strcmp(strv[1], ""), "strings");
    free(strv);
    CHECK(wire_get_str(m, "missing", &s, &sl) == -1 && strstr(align_error(), "\"missing\" is missing"), "missing field named");
    CHECK(wire_get_int(m, "name", &neg) == -1 && strstr(align_error(), "\"name\" must be an integer"), "wrong type named");
    WireLimits lim = {.max_elems = 4};
    CHECK(wire_get_array(m, "tokens", WIRE_I32, &lim, &a) == -1 && strstr(align_error(), "limit"), "element limit");
    wire_msg_free(m);
    free(odd);
    free(buf);
    CHECK(wire_error_message("bad_request", "why", 1, 7, &buf, &len) == 0, "error message");
    m = wire_parse(buf, len, NULL);
    CHECK(m && !strcmp(wire_op(m), "error") && !wire_get_uint(m, "id", &id) && id == 7, "error reply parses");
    wire_msg_free(m);
    free(buf);
}

#define REFUSED(bytes, n, what, needle)                                                        \
    do {                                                                                       \
        WireMsg *m_ = parse_bytes(bytes, n);                                                   \
        CHECK(m_ == NULL && strstr(align_error(), needle), "%s refused (got: %s)", what,        \
              m_ ? "accepted" : align_error());                                                \
        wire_msg_free(m_);                                                                     \
    } while (0)

static void test_malformed(void) {
    uint8_t b[64] = {0};
    REFUSED(b, 0, "empty message", "empty");
    /* {"op": "x", "v": 1} then truncate */
    uint8_t ok[] = {0x82, 0xa2, 'o', 'p', 0xa1, 'x', 0xa1, 'v', 0x01};
    WireMsg *m = parse_bytes(ok, sizeof ok);
    CHECK(m != NULL, "minimal message: %s", align_error());
    wire_msg_free(m);
    for (size_t n = 1; n < sizeof ok; n++) REFUSED(ok, n, "truncated message", "");
    uint8_t trail[sizeof ok + 1];
    memcpy(trail, ok, sizeof ok);
    trail[sizeof ok] = 0xc0;
    REFUSED(trail, sizeof trail, "trailing bytes", "garbage");
    uint8_t arr[] = {0x91, 0x01};
    REFUSED(arr, sizeof arr, "an array at the top", "must be a msgpack map");
    uint8_t noop[] = {0x81, 0xa1, 'v', 0x01};
    REFUSED(noop, sizeof noop, "no op", "\"op\"");
    uint8_t nov[] = {0x81, 0xa2, 'o', 'p', 0xa1, 'x'};
    REFUSED(nov, sizeof nov, "no v", "\"v\"");
    uint8_t vstr[] = {0x82, 0xa2, 'o', 'p', 0xa1, 'x', 0xa1, 'v', 0xa1, '1'};
    REFUSED(vstr, sizeof vstr, "v a string", "\"v\"");
    uint8_t dup[] = {0x83, 0xa2, 'o', 'p', 0xa1, 'x', 0xa1, 'v', 0x01, 0xa1, 'v', 0x01};
    REFUSED(dup, sizeof dup, "duplicate key", "twice");
    uint8_t intkey[] = {0x83, 0xa2, 'o', 'p', 0xa1, 'x', 0xa1, 'v', 0x01, 0x05, 0x01};
    REFUSED(intkey, sizeof intkey, "integer key", "keys must be strings");
    uint8_t ext[] = {0x83, 0xa2, 'o', 'p', 0xa1, 'x', 0xa1, 'v', 0x01, 0xa1, 'e', 0xd4, 0x01, 0x00};
    REFUSED(ext, sizeof ext, "ext type", "ext");
    uint8_t c1[] = {0x81, 0xc1, 0x00};
    REFUSED(c1, sizeof c1, "reserved byte 0xc1", "unsupported");
    /* lying lengths: each would be a huge allocation if believed */
    uint8_t big_arr[] = {0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
    REFUSED(big_arr, sizeof big_arr, "array32 claiming 2^32 entries", "claims 4294967295 entries");
    uint8_t big_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x00};
    REFUSED(big_map, sizeof big_map, "map32 claiming 2^32 entries", "claims");
    uint8_t big_bin[] = {0x81, 0xa1, 'a', 0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00};
    REFUSED(big_bin, sizeof big_bin, "bin32 claiming 2 GiB", "claims");
    uint8_t big_str[] = {0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a'};
    REFUSED(big_str, sizeof big_str, "str32 claiming 4 GiB", "claims");
    memset(b, 0x91, sizeof b); /* [[[[...]]]] */
    REFUSED(b, sizeof b, "nesting bomb", "nested deeper");
    /* too large for the limits */
    WireLimits lim = {.max_bytes = 4};
    CHECK(wire_parse(ok, sizeof ok, &lim) == NULL && strstr(align_error(), "over the limit"), "size limit");

    /* array maps that lie about their shape */
    const char *cases[][2] = {
        {"shape says more than data", "shape says"},
        {"shape overflow", "over the limit"},
        {"unknown dtype", "unknown dtype"},
        {"missing data", "needs"},
    };
    for (int c = 0; c < 4; c++) {
        uint8_t buf[128];
        size_t n = 0;
        const uint8_t head[] = {0x83, 0xa2, 'o', 'p', 0xa1, 'x', 0xa1, 'v', 0x01, 0xa1, 't'};
        memcpy(buf, head, sizeof head);
        n = sizeof head;
        buf[n++] = 0x83;
        buf[n++] = 0xa5, memcpy(buf + n, "dtype", 5), n += 5;
        if (c == 2) buf[n++] = 0xa3, memcpy(buf + n, "q99", 3), n += 3;
        else buf[n++] = 0xa3, memcpy(buf + n, "i32", 3), n += 3;
        buf[n++] = 0xa5, memcpy(buf + n, "shape", 5), n += 5;
        if (c == 1) { /* [2^40, 2^40]: the product overflows */
            buf[n++] = 0x92;
            for (int k = 0; k < 2; k++) {
                buf[n++] = 0xcf;
                const uint8_t v[8] = {0, 0, 1, 0, 0, 0, 0, 0};
                memcpy(buf + n, v, 8), n += 8;
            }
        } else {
            buf[n++] = 0x91, buf[n++] = 0x03;
        }
        if (c == 3) buf[n++] = 0xa4, memcpy(buf + n, "date", 4), n += 4;
        else buf[n++] = 0xa4, memcpy(buf + n, "data", 4), n += 4;
        buf[n++] = 0xc4, buf[n++] = 8; /* 8 bytes: 2 i32, not 3 */
        memset(buf + n, 0, 8), n += 8;
        WireMsg *mm = wire_parse(buf, n, NULL);
        CHECK(mm != NULL, "%s: outer message parses: %s", cases[c][0], align_error());
        if (!mm) continue;
        WireArray a;
        CHECK(wire_get_array(mm, "t", -1, NULL, &a) == -1 && strstr(align_error(), cases[c][1]), "%s refused (%s)",
              cases[c][0], align_error());
        wire_msg_free(mm);
    }
    int64_t off_bad[3] = {0, 4, 2};
    CHECK(wire_check_offsets(off_bad, 3, 2, "offsets") == -1 && strstr(align_error(), "decrease"), "decreasing offsets");
    int64_t off_start[2] = {1, 2};
    CHECK(wire_check_offsets(off_start, 2, 2, "offsets") == -1 && strstr(align_error(), "start at 0"), "offsets start");
}

/* Random mutations of a valid message never crash and never leak. */
static void test_mutations(void) {
    int32_t tok[6] = {1, 2, 3, 4, 5, 6};
    int64_t off[3] = {0, 2, 6};
    WireWriter *w = wire_writer_new("score");
    wire_put_vec(w, "tokens", WIRE_I32, tok, 6);
    wire_put_vec(w, "offsets", WIRE_I64, off, 3);
    void *buf;
    size_t len;
    wire_finish(w, &buf, &len);
    uint8_t *mut = malloc(len);
    uint64_t x = 88172645463325252ULL;
    int parsed = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(mut, buf, len);
        for (int k = 0; k < 3; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            mut[x % len] = (uint8_t)(x >> 32);
        }
        WireMsg *m = wire_parse(mut, len - (it % 7 == 0 ? (x >> 40) % len : 0), NULL);
        if (m) {
            parsed++;
            WireArray a;
            if (!wire_get_array(m, "tokens", -1, NULL, &a)) free(a.data);
            int64_t *o;
            size_t no;
            if (!wire_get_index_array(m, "offsets", NULL, &o, &no)) free(o);
        }
        wire_msg_free(m);
    }
    CHECK(parsed > 0, "some mutations still parse (%d)", parsed);
    free(mut);
    free(buf);
}

int main(void) {
    test_round_trip();
    test_malformed();
    test_mutations();
    return test_summary();
}
