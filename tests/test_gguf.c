/* test_gguf: the GGUF reader and importer.
 *
 * Small GGUF files are built byte by byte here:
 *   - typed metadata reads back; Q4_0, Q4_1, Q8_0, F16, BF16, F32 tensors
 *     dequantise to the values worked out by hand from docs/REFERENCE.md's
 *     block layouts (exact: every value is representable);
 *   - a tiny Llama written the way llama.cpp's converter writes it (q/k rows
 *     permuted, GGUF dims reversed) imports bit-exact to the original;
 *   - malformed files (bad magic/version, lying counts and lengths, tensors
 *     outside the data, unaligned offsets, unknown types, every truncation)
 *     are refused with -1 and never crash.
 * `test_gguf --smollm2` (its own ctest entry, test_gguf_smollm2) imports
 * cache/SmolLM2-135M-Instruct.Q4_1.gguf (docs/REFERENCE.md,
 * scripts/fetch-smollm2.sh) and checks config, finite weights, tokenizer,
 * chat template, and that it completes "The capital of France is" with
 * " Paris"; without the file it skips (exit 77), or fails when CI=true. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gguf.h"
#include "model_load.h"
#include "quant.h"
#include "test.h"
#include "util.h"

/* ------------------------------------------------------------------ a byte builder */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} Buf;

static void put(Buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u32(Buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(Buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(Buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(Buf *b, size_t align) {
    static const uint8_t z[64];
    while (b->n % align) put(b, z, 1);
}
static void kv_u32(Buf *b, const char *k, uint32_t v) {
    put_str(b, k);
    put_u32(b, GGUF_UINT32);
    put_u32(b, v);
}
static void kv_f32(Buf *b, const char *k, float v) {
    put_str(b, k);
    put_u32(b, GGUF_FLOAT32);
    put(b, &v, 4);
}
static void kv_str(Buf *b, const char *k, const char *v) {
    put_str(b, k);
    put_u32(b, GGUF_STRING);
    put_str(b, v);
}

static void kv_arr(Buf *b, const char *k, uint32_t type, const void *v, uint64_t n, size_t each) {
    put_str(b, k);
    put_u32(b, GGUF_ARRAY);
    put_u32(b, type);
    put_u64(b, n);
    if (type == GGUF_STRING)
        for (uint64_t i = 0; i < n; i++) put_str(b, ((const char *const *)v)[i]);
    else
        put(b, v, n * each);
}
static void kv_bool(Buf *b, const char *k, int v) {
    uint8_t x = (uint8_t)v;
    put_str(b, k);
    put_u32(b, GGUF_BOOL);
    put(b, &x, 1);
}

typedef struct {
    const char *name;
    int ndim;
    int64_t ne[5];
    uint32_t type;
    const void *data;
    size_t bytes;
} TInfo;

/* A whole GGUF v3 file: header, kvs (already encoded, n_kv of them), tensor
 * infos, data aligned to 32. */
static Buf make_gguf(const Buf *kvs, int n_kv, const TInfo *t, int n_t) {
    Buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, n_t);
    put_u64(&b, n_kv);
    if (kvs->n) put(&b, kvs->p, kvs->n);
    uint64_t off = 0;
    for (int i = 0; i < n_t; i++) {
        put_str(&b, t[i].name);
        put_u32(&b, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++) put_u64(&b, t[i].ne[d]);
        put_u32(&b, t[i].type);
        put_u64(&b, off);
        off += (t[i].bytes + 31) / 32 * 32;
    }
    pad_to(&b, 32);
    for (int i = 0; i < n_t; i++) {
        put(&b, t[i].data, t[i].bytes);
        pad_to(&b, 32);
    }
    return b;
}

/* ------------------------------------------------------------------ dequantisation */

static void test_dequant(void) {
    /* Q4_0, d = 0.5 (f16 0x3800): nibble k -> (k - 8) * 0.5. qs[j] = j | (15-j)<<4,
     * so element j = (j-8)/2 and element j+16 = (7-j)/2. */
    uint8_t q40[18] = {0x00, 0x38};
    for (int j = 0; j < 16; j++) q40[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    /* Q4_1, two blocks: d = 2 (0x4000), m = -1 (0xBC00): x = k*2 - 1; then
     * d = 0.25 (0x3400), m = 3 (0x4200): x = k/4 + 3. qs[j] = (j) | (j)<<4. */
    uint8_t q41[40] = {0x00, 0x40, 0x00, 0xBC};
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (j << 4));
    q41[20] = 0x00, q41[21] = 0x34, q41[22] = 0x00, q41[23] = 0x42;
    for (int j = 0; j < 16; j++) q41[24 + j] = (uint8_t)((15 - j) | (j << 4));
    /* Q8_0, d = 0.125 (0x3000): x = q / 8 with q = j - 16. */
    uint8_t q80[34] = {0x00, 0x30};
    for (int j = 0; j < 32; j++) q80[2 + j] = (uint8_t)(int8_t)(j - 16);
    uint16_t f16[4] = {0x3C00, 0xC000, 0x7BFF, 0x0001}; /* 1, -2, 65504, 2^-24 */
    uint16_t bf16[2] = {0x3F80, 0xC2C8};                 /* 1, -100 */
    float f32[3] = {0.1f, -7.5f, 1e-30f};
    TInfo t[] = {
        {"q40", 1, {32}, GGML_Q4_0, q40, sizeof q40},
        {"q41", 2, {32, 2}, GGML_Q4_1, q41, sizeof q41},
        {"q80", 1, {32}, GGML_Q8_0, q80, sizeof q80},
        {"f16", 1, {4}, GGML_F16, f16, sizeof f16},
        {"bf16", 1, {2}, GGML_BF16, bf16, sizeof bf16},
        {"f32", 1, {3}, GGML_F32, f32, sizeof f32},
    };
    Buf kvs = {0};
    kv_u32(&kvs, "test.u32", 4000000000u);
    kv_f32(&kvs, "test.f32", 0.25f);
    kv_str(&kvs, "test.str", "hello");
    put_str(&kvs, "test.arr"); /* array of 3 int32 */
    put_u32(&kvs, GGUF_ARRAY);
    put_u32(&kvs, GGUF_INT32);
    put_u64(&kvs, 3);
    int32_t arr[3] = {-1, 0, 7};
    put(&kvs, arr, sizeof arr);
    put_str(&kvs, "test.sarr"); /* array of 2 strings */
    put_u32(&kvs, GGUF_ARRAY);
    put_u32(&kvs, GGUF_STRING);
    put_u64(&kvs, 2);
    put_str(&kvs, "a b");
    put_str(&kvs, "");
    put_str(&kvs, "test.bool");
    put_u32(&kvs, GGUF_BOOL);
    uint8_t one = 1;
    put(&kvs, &one, 1);
    Buf b = make_gguf(&kvs, 6, t, 6);
    GgufFile f;
    int rc = gguf_parse(&f, b.p, b.n, "mem.gguf");
    CHECK(rc == 0, "parse: %s", align_error());
    if (rc == 0) {
        int64_t i;
        double d;
        CHECK(gguf_get_int(&f, "test.u32", &i) == 0 && i == 4000000000LL, "u32 kv");
        CHECK(gguf_get_float(&f, "test.f32", &d) == 0 && d == 0.25, "f32 kv");
        CHECK(gguf_get_str(&f, "test.str") && !strcmp(gguf_get_str(&f, "test.str"), "hello"), "str kv");
        CHECK(gguf_get_int(&f, "test.bool", &i) == 0 && i == 1, "bool kv");
        CHECK(gguf_get_int(&f, "test.str", &i) == -1 && gguf_get_str(&f, "test.u32") == NULL,
              "type-checked getters");
        const GgufKV *a = gguf_find_kv(&f, "test.arr");
        int32_t back[3];
        if (a) memcpy(back, a->arr, sizeof back);
        CHECK(a && a->arr_type == GGUF_INT32 && a->arr_n == 3 && back[0] == -1 && back[2] == 7,
              "int array kv");
        a = gguf_find_kv(&f, "test.sarr");
        CHECK(a && a->arr_n == 2 && !strcmp(a->arr_str[0], "a b") && !strcmp(a->arr_str[1], ""),
              "string array kv");
        float out[64];
        int ok = gguf_read_f32(&f, gguf_find_tensor(&f, "q40"), out) == 0;
        for (int j = 0; j < 16; j++) ok &= out[j] == (j - 8) * 0.5f && out[j + 16] == (7 - j) * 0.5f;
        CHECK(ok, "Q4_0 dequantisation");
        ok = gguf_read_f32(&f, gguf_find_tensor(&f, "q41"), out) == 0;
        for (int j = 0; j < 16; j++)
            ok &= out[j] == j * 2.0f - 1 && out[j + 16] == j * 2.0f - 1 &&
                  out[32 + j] == (15 - j) * 0.25f + 3 && out[48 + j] == j * 0.25f + 3;
        CHECK(ok, "Q4_1 dequantisation (two blocks)");
        ok = gguf_read_f32(&f, gguf_find_tensor(&f, "q80"), out) == 0;
        for (int j = 0; j < 32; j++) ok &= out[j] == (j - 16) * 0.125f;
        CHECK(ok, "Q8_0 dequantisation");
        ok = gguf_read_f32(&f, gguf_find_tensor(&f, "f16"), out) == 0;
        CHECK(ok && out[0] == 1 && out[1] == -2 && out[2] == 65504 && out[3] == ldexpf(1, -24),
              "F16 conversion");
        ok = gguf_read_f32(&f, gguf_find_tensor(&f, "bf16"), out) == 0;
        CHECK(ok && out[0] == 1 && out[1] == -100, "BF16 conversion");
        ok = gguf_read_f32(&f, gguf_find_tensor(&f, "f32"), out) == 0;
        CHECK(ok && !memcmp(out, f32, sizeof f32), "F32 copy");
        gguf_close(&f);
    }
    /* Every truncation is refused, nothing crashes. */
    int refused = 0;
    for (size_t cut = 0; cut < b.n; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, b.p, cut);
        if (gguf_parse(&f, copy, cut, "cut.gguf") == -1) refused++;
        else gguf_close(&f);
        free(copy);
    }
    /* The data section's final padding is optional, so only cuts before the
     * last tensor's end must fail. */
    CHECK(refused >= (int)b.n - 32, "truncations refused: %d of %zu", refused, b.n);
    free(kvs.p);
    free(b.p);
}

/* ------------------------------------------------------------------ malformed files */

static void expect_bad(const char *label, const uint8_t *p, size_t n, const char *needle) {
    GgufFile f;
    align_error_clear();
    int rc = gguf_parse(&f, p, n, "bad.gguf");
    CHECK(rc == -1, "%s: accepted", label);
    if (rc == 0) gguf_close(&f);
    else
        CHECK(strstr(align_error(), "bad.gguf") && (!needle || strstr(align_error(), needle)),
              "%s: error \"%s\" lacks the file name or \"%s\"", label, align_error(),
              needle ? needle : "");
}

static Buf header(uint32_t version, uint64_t n_t, uint64_t n_kv) {
    Buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, version);
    put_u64(&b, n_t);
    put_u64(&b, n_kv);
    return b;
}

static void test_malformed(void) {
    Buf b = header(3, 0, 0);
    b.p[0] = 'X';
    expect_bad("bad magic", b.p, b.n, "not a GGUF");
    free(b.p);
    b = header(1, 0, 0);
    expect_bad("version 1", b.p, b.n, "version");
    free(b.p);
    b = header(3, UINT64_MAX, 0);
    expect_bad("huge tensor count", b.p, b.n, "claims");
    free(b.p);
    b = header(3, 0, 1ULL << 60);
    expect_bad("huge kv count", b.p, b.n, "claims");
    free(b.p);
    b = header(3, 0, 1);
    put_u64(&b, 1ULL << 62); /* key length */
    put(&b, "abcdefghijkl", 12);
    expect_bad("huge string length", b.p, b.n, "claims");
    free(b.p);
    b = header(3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_UINT64);
    put_u64(&b, 1ULL << 61);
    put_u64(&b, 0);
    expect_bad("huge array length", b.p, b.n, "claims");
    free(b.p);
    b = header(3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_ARRAY);
    put_u64(&b, 1);
    put_u64(&b, 0);
    expect_bad("nested array", b.p, b.n, "array");
    free(b.p);
    b = header(3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, 99);
    put_u64(&b, 0);
    expect_bad("unknown kv type", b.p, b.n, "type");
    free(b.p);
    b = header(3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_UINT32);
    put_u32(&b, 24);
    put_u64(&b, 0);
    expect_bad("alignment not a power of two", b.p, b.n, "alignment");
    free(b.p);

    float data[8] = {0};
    Buf none = {0};
    struct {
        const char *label;
        TInfo t;
        uint64_t offset_override;
        const char *needle;
    } cases[] = {
        {"rank 5", {"t", 5, {1, 1, 1, 1, 1}, GGML_F32, data, 4}, 0, "dimensions"},
        {"zero dimension", {"t", 1, {0}, GGML_F32, data, 4}, 0, "dimension"},
        {"huge dimensions", {"t", 2, {1LL << 40, 1LL << 40}, GGML_F32, data, 4}, 0, "dimension"},
        {"unsupported ggml type (IQ2_XXS)", {"t", 1, {256}, 16, data, 32}, 0, "not supported"},
        {"row not whole blocks", {"t", 1, {16}, GGML_Q8_0, data, 32}, 0, "block"},
        {"tensor past the data", {"t", 1, {64}, GGML_F32, data, 32}, 0, "outside"},
        {"offset past the data", {"t", 1, {8}, GGML_F32, data, 32}, 1ULL << 40, "outside"},
        {"unaligned offset", {"t", 1, {2}, GGML_F32, data, 32}, 4, "aligned"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TInfo t = cases[i].t;
        Buf g = make_gguf(&none, 0, &t, 1);
        if (cases[i].offset_override) {
            /* offset is the last 8 bytes of the tensor info: find it */
            size_t info_end = 24 + 8 + strlen(t.name) + 4 + 8 * t.ndim + 4 + 8;
            memcpy(g.p + info_end - 8, &cases[i].offset_override, 8);
        }
        expect_bad(cases[i].label, g.p, g.n, cases[i].needle);
        free(g.p);
    }
    /* Duplicate tensor names. */
    TInfo two[2] = {{"t", 1, {8}, GGML_F32, data, 32}, {"t", 1, {8}, GGML_F32, data, 32}};
    Buf g = make_gguf(&none, 0, two, 2);
    expect_bad("duplicate tensor", g.p, g.n, "twice");
    free(g.p);

    GgufFile f;
    CHECK(gguf_open(&f, "/nonexistent/m.gguf") == -1 && strstr(align_error(), "/nonexistent/m.gguf"),
          "missing file refused");
}

/* ------------------------------------------------------------------ llama import */

/* llama.cpp's permute(): HF row h*hd + s*hd/2 + j goes to h*hd + 2j + s. */
static void permute_rows(float *dst, const float *src, int heads, int hd, int cols) {
    for (int h = 0; h < heads; h++)
        for (int s = 0; s < 2; s++)
            for (int j = 0; j < hd / 2; j++)
                memcpy(dst + ((size_t)h * hd + 2 * j + s) * cols,
                       src + ((size_t)h * hd + s * hd / 2 + j) * cols, cols * sizeof(float));
}

static void test_llama_import(void) {
    ModelConfig c;
    model_config_defaults(&c, ARCH_LLAMA);
    c.vocab_size = 40;
    c.dim = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.ffn_dim = 64;
    c.max_seq_len = 128;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = 0;
    Model *m = model_create(&c, &backend_cpu);
    CHECK(m != NULL, "create: %s", align_error());
    if (!m) return;
    model_init_random(m, 7);
    static const char *const names[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"}, {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"}};
    static const char *const layer[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"}};
    TInfo t[64];
    char gnames[64][64];
    float *bufs[64];
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        const char *g = NULL;
        int l;
        char rest[96];
        for (int k = 0; k < 3; k++)
            if (!strcmp(p->name, names[k][0])) g = names[k][1];
        if (!g && sscanf(p->name, "model.layers.%d.%95s", &l, rest) == 2)
            for (int k = 0; k < 9; k++)
                if (!strcmp(rest, layer[k][0])) {
                    snprintf(gnames[n], 64, "blk.%d.%s", l, layer[k][1]);
                    g = gnames[n];
                }
        CHECK(g != NULL, "no GGUF name for %s", p->name);
        if (!g) continue;
        bufs[n] = malloc(p->numel * sizeof(float));
        const float *src = m->params + p->offset;
        if (strstr(p->name, "q_proj.weight")) permute_rows(bufs[n], src, 4, 8, 32);
        else if (strstr(p->name, "k_proj.weight")) permute_rows(bufs[n], src, 2, 8, 32);
        else memcpy(bufs[n], src, p->numel * sizeof(float));
        t[n] = (TInfo){g, p->ndim, {p->ndim == 2 ? p->shape[1] : p->shape[0], p->shape[0]},
                       GGML_F32, bufs[n], p->numel * sizeof(float)};
        n++;
    }
    Buf kvs = {0};
    kv_str(&kvs, "general.architecture", "llama");
    kv_u32(&kvs, "llama.block_count", 2);
    kv_u32(&kvs, "llama.context_length", 128);
    kv_u32(&kvs, "llama.embedding_length", 32);
    kv_u32(&kvs, "llama.feed_forward_length", 64);
    kv_u32(&kvs, "llama.attention.head_count", 4);
    kv_u32(&kvs, "llama.attention.head_count_kv", 2);
    kv_f32(&kvs, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_f32(&kvs, "llama.rope.freq_base", 10000.0f);
    kv_str(&kvs, "tokenizer.chat_template", "{{'<|im_start|>'}}...{{'<|im_end|>'}}");
    Buf g = make_gguf(&kvs, 10, t, n);
    char path[] = "/tmp/align_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, g.p, g.n) == (ssize_t)g.n, "write temp gguf");
    close(fd);
    ModelBundle b;
    int rc = gguf_import(path, &backend_cpu, &b);
    CHECK(rc == 0, "import: %s", align_error());
    if (rc == 0) {
        CHECK(b.model->cfg.n_kv_heads == 2 && !b.model->cfg.tied_embeddings &&
                  b.model->cfg.vocab_size == 40 && b.model->cfg.ffn_dim == 64,
              "imported config");
        CHECK(b.model->n_elems == m->n_elems &&
                  !memcmp(b.model->params, m->params, m->n_elems * sizeof(float)),
              "imported llama bit-exact (q/k un-permuted)");
        CHECK(b.extras.chat_template && !strcmp(b.extras.chat_template, "chatml"),
              "chat template detected");
        CHECK(b.tok == NULL && b.extras.tokenizer_json == NULL, "no tokenizer keys: no tokenizer");
        model_bundle_free(&b);
    }
    /* The same file through model_load_any (dispatch by magic, no .gguf suffix). */
    rc = model_load_any(path, &backend_cpu, 0, &b);
    CHECK(rc == 0 && b.model && !memcmp(b.model->params, m->params, m->n_elems * 4),
          "model_load_any recognises GGUF by its magic: %s", rc ? align_error() : "");
    if (rc == 0) model_bundle_free(&b);
    unlink(path);

    /* With a SentencePiece ("llama") tokenizer: pieces, scores and types and
     * add_space_prefix reach tok_from_spm (tests/test_spm.c checks it
     * against sentencepiece); the ids equal its own on the same arrays. */
    static const char *const pieces[12] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "c",
                                           "\xe2\x96\x81" "a", "ab", "\xe2\x96\x81" "ab", "bc", "\xe2\x96\x81" "c"};
    static const float scores[12] = {0, 0, 0, -1, -2, -3, -4, -5, -6, -7, -8, -9};
    static const int32_t types[12] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static const char *const texts[] = {"ab", "abc cab", " a b  c", "abd"};
    for (int prefix = 0; prefix < 2; prefix++) {
        Buf kv2 = {0};
        put(&kv2, kvs.p, kvs.n);
        kv_str(&kv2, "tokenizer.ggml.model", "llama");
        kv_arr(&kv2, "tokenizer.ggml.tokens", GGUF_STRING, pieces, 12, 0);
        kv_arr(&kv2, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, 12, 4);
        kv_arr(&kv2, "tokenizer.ggml.token_type", GGUF_INT32, types, 12, 4);
        kv_bool(&kv2, "tokenizer.ggml.add_space_prefix", prefix);
        Buf g2 = make_gguf(&kv2, 15, t, n);
        strcpy(path, "/tmp/align_test_gguf_XXXXXX");
        fd = mkstemp(path);
        CHECK(fd >= 0 && write(fd, g2.p, g2.n) == (ssize_t)g2.n, "write temp gguf");
        close(fd);
        rc = gguf_import(path, &backend_cpu, &b);
        CHECK(rc == 0 && b.tok && b.extras.tokenizer_json, "import with a llama tokenizer: %s",
              rc ? align_error() : "no tokenizer");
        Tokenizer *ref = tok_from_spm(pieces, scores, types, 12, prefix);
        for (size_t k = 0; rc == 0 && ref && k < sizeof texts / sizeof *texts; k++) {
            int32_t *a = NULL, *r = NULL;
            int na = 0, nr = 0;
            tok_encode(b.tok, texts[k], strlen(texts[k]), 0, &a, &na);
            tok_encode(ref, texts[k], strlen(texts[k]), 0, &r, &nr);
            CHECK(na == nr && !memcmp(a, r, sizeof(int32_t) * (size_t)na) && na > 0,
                  "\"%s\", add_space_prefix %d: the GGUF tokenizer's ids are tok_from_spm's", texts[k], prefix);
            free(a), free(r);
        }
        if (rc == 0) {
            int32_t *a = NULL;
            int na = 0;
            tok_encode(b.tok, "ab", 2, 0, &a, &na);
            CHECK(na == 1 && a[0] == (prefix ? 9 : 8), "add_space_prefix %d: \"ab\" -> %s", prefix,
                  prefix ? "\"\xe2\x96\x81" "ab\"" : "\"ab\"");
            free(a);
            model_bundle_free(&b);
        }
        tok_free(ref);
        unlink(path);
        free(kv2.p);
        free(g2.p);
    }
    /* other tokenizer models are refused by name */
    Buf kv3 = {0};
    put(&kv3, kvs.p, kvs.n);
    kv_str(&kv3, "tokenizer.ggml.model", "t5");
    kv_arr(&kv3, "tokenizer.ggml.tokens", GGUF_STRING, pieces, 12, 0);
    Buf g3 = make_gguf(&kv3, 12, t, n);
    strcpy(path, "/tmp/align_test_gguf_XXXXXX");
    fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, g3.p, g3.n) == (ssize_t)g3.n, "write temp gguf");
    close(fd);
    CHECK(gguf_import(path, &backend_cpu, &b) == -1 && strstr(align_error(), "\"t5\""),
          "tokenizer model t5 refused: %s", align_error());
    unlink(path);
    free(kv3.p);
    free(g3.p);

    for (int i = 0; i < n; i++) free(bufs[i]);
    free(kvs.p);
    free(g.p);
    model_free(m);
}

/* ------------------------------------------------------------------ SmolLM2 */

static void test_smollm2(void) {
    const char *path = TEST_SMOLLM2_GGUF;
    test_need_file(path, "scripts/fetch-smollm2.sh fetches it");
    ModelBundle b;
    int rc = model_load_any(path, &backend_cpu, MODEL_LOAD_TOKENIZER, &b);
    CHECK(rc == 0, "SmolLM2 import: %s", align_error());
    if (rc != 0) return;
    const ModelConfig *c = &b.model->cfg;
    CHECK(c->arch == ARCH_LLAMA && c->n_layers == 30 && c->dim == 576 && c->n_heads == 9 &&
              c->n_kv_heads == 3 && c->vocab_size == 49152 && c->tied_embeddings &&
              c->ffn_dim == 1536 && c->head_dim == 64 && c->rope_theta == 100000.0f,
          "SmolLM2 config");
    size_t bad = 0;
    for (size_t i = 0; i < b.model->n_elems; i++) bad += !isfinite(b.model->params[i]);
    CHECK(bad == 0, "SmolLM2: %zu non-finite parameters", bad);
    CHECK(b.extras.chat_template && !strcmp(b.extras.chat_template, "smollm2"), "SmolLM2 smollm2");
    CHECK(b.tok && tok_vocab_size(b.tok) == 49152, "SmolLM2 tokenizer");
    if (b.tok) {
        /* A correct import (q/k un-permuted) knows the capital of France. */
        const char *text = "The capital of France is";
        int32_t *ids = NULL, paris_ids[8], london_ids[8];
        int n = 0;
        tok_encode(b.tok, text, strlen(text), 0, &ids, &n);
        int32_t *tp = NULL, *tl = NULL;
        int np = 0, nl = 0;
        tok_encode(b.tok, " Paris", 6, 0, &tp, &np);
        tok_encode(b.tok, " London", 7, 0, &tl, &nl);
        if (n > 0 && n < 60 && np >= 1 && nl >= 1) {
            memcpy(paris_ids, tp, 4);
            memcpy(london_ids, tl, 4);
            int32_t seq[64], starts[2] = {0, n}, targets[64];
            float lp[64];
            memcpy(seq, ids, n * sizeof *seq);
            for (int i = 0; i < n; i++) targets[i] = -1;
            Batch batch = {n, 1, seq, starts};
            targets[n - 1] = paris_ids[0];
            model_forward(b.model, &batch);
            model_token_logprobs(b.model, targets, lp);
            float lp_paris = lp[n - 1];
            targets[n - 1] = london_ids[0];
            model_forward(b.model, &batch);
            model_token_logprobs(b.model, targets, lp);
            float lp_london = lp[n - 1];
            printf("SmolLM2: log p(' Paris') = %.3f, log p(' London') = %.3f\n", lp_paris,
                   lp_london);
            CHECK(lp_paris > -2.0f && lp_paris > lp_london + 2.0f,
                  "SmolLM2 should complete with Paris (%.3f vs %.3f)", lp_paris, lp_london);
        }
        free(ids);
        free(tp);
        free(tl);
    }
    model_bundle_free(&b);
}

/* gguf_import_blocks (generate's load) asks for the weight blocks in huge
 * pages: batch-1 decoding streams all of them every token, and 4 KB pages
 * cost a TLB miss and a prefetch restart every 4 KB. Checked where the
 * kernel's transparent huge pages are not off. AnonHugePages of the
 * mapping holding p (the advice splits a buffer's mapping at its 4 KB-
 * aligned ends, so p is taken inside it). */
static long smaps_huge_kb(const void *p) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    long kb = -1;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
            break;
    }
    fclose(f);
    return kb;
}

static void test_smollm2_huge_pages(void) {
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (!fgets(mode, sizeof mode, f)) mode[0] = 0;
        fclose(f);
    }
    /* the kernel must collapse written pages on request (MADV_COLLAPSE,
     * Linux 6.1) and have huge pages to give: probed on 4 MB of our own */
    size_t pn = 4u << 20;
    uint8_t *probe = mmap(NULL, pn, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int can = probe != MAP_FAILED;
    if (can) {
        uint8_t *a = (uint8_t *)(((uintptr_t)probe + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1));
        memset(probe, 1, pn);
        can = madvise(a, 2u << 20, MADV_HUGEPAGE) == 0 && madvise(a, 2u << 20, 25 /* MADV_COLLAPSE */) == 0;
        munmap(probe, pn);
    }
    if (!f || strstr(mode, "[never]") || !can) {
        printf("no transparent huge pages on request here: huge-page check skipped\n");
        return;
    }
    ModelBundle b;
    CHECK(gguf_import_blocks(TEST_SMOLLM2_GGUF, &backend_cpu, &b) == 0, "SmolLM2 blocks import: %s", align_error());
    if (!b.model) return;
    size_t head_bytes = (size_t)b.model->cfg.vocab_size * quant_row_bytes((QuantType)b.model->lm_head_qtype, b.model->cfg.dim);
    long wq = smaps_huge_kb(b.model->qparams + b.model->n_qbytes / 2),
         head = smaps_huge_kb((const uint8_t *)b.model->lm_head_q + head_bytes / 2);
    printf("SmolLM2 blocks in huge pages: weights %ld kB of %zu, LM head %ld kB\n", wq, b.model->n_qbytes >> 10, head);
    CHECK(wq >= (long)(b.model->n_qbytes >> 11), "most of the weight blocks (%zu kB) in huge pages (%ld kB)",
          b.model->n_qbytes >> 10, wq);
    CHECK(head > 0, "the LM head's blocks in huge pages (%ld kB)", head);
    model_bundle_free(&b);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--smollm2") == 0) {
        test_smollm2();
        test_smollm2_huge_pages();
        return test_summary();
    }
    test_dequant();
    test_malformed();
    test_llama_import();
    return test_summary();
}
