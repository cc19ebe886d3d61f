/* test_quant: 4-bit (and 8-bit) base weights, and LoRA on top of them.
 *
 *   dequantisation of every block type read from GGUF (Q4_0, Q4_1, Q5_0,
 *     Q5_1, Q8_0, Q2_K .. Q6_K) equals the `gguf` package's (llama.cpp's
 *     ggml-quants.c in numpy) on random blocks: fixtures/quant/blocks.bin,
 *     made by fixtures/make_quant_fixtures.py; K-quant matmul tiles equal
 *     dequantise-then-fp32
 *   quantisation to Q4_0, Q5_0, Q8_0, Q4_K and Q6_K gives the bytes of
 *     ggml's own quantize_row_*_ref (fixtures/quant/quantize_ref.bin: loud,
 *     all-zero, one-signed, outlier and tied super-blocks)
 *   fixtures/quant/tiny_kquant.gguf (a tiny llama of random Q2_K..Q6_K,
 *     Q5_0 and Q5_1 blocks mixed as in a Q4_K_M file): gguf_import_quant
 *     keeps every block as stored except the mixed-type q|k|v of layer 0,
 *     and gives the dequantised import's logits (1e-4); LoRA on that frozen
 *     base gets the adapter gradients of LoRA on the fp32 import (1e-4 of
 *     the largest), so a Q4_K_M file is a QLoRA base
 *   block formats: a dequantised Q4_0 / Q8_0 tensor re-quantises to the
 *     same bytes; Q4_1 to within one code; per-element error within half a
 *     step (d/2) of the block's scale
 *   matmul_forward_q / matmul_backward_input_q against dequantise-then-fp32
 *     matmuls: equal up to summation order (1e-5 relative to the row's
 *     magnitude), with several row tiles, bias, N = 1 (sgemv) and accumulate
 *   a quantised model = the fp32 model holding the dequantised weights
 *     (logits 1e-4); quantised tensors are frozen and take no fp32 room
 *   finite-difference gradients (central, eps 1e-2, 2e-2 of the largest
 *     gradient, as test_gradcheck) of lora_A / lora_B of every projection
 *     on a Q4_0 base, with dropout 0.2 under a fixed key, and of the
 *     layer input through the quantised backward-input path
 *   cached decoding on a quantised base with adapters = full forward
 *   NF4 / FP4 (QLoRA), against tests/fixtures/nf4_reference.json, an
 *     independent PyTorch implementation of bitsandbytes' scheme
 *     (make_nf4_fixtures.py): the codebooks and the dynamic map are equal;
 *     the reference's codes, absmax codes, group scales and offset laid
 *     out as quant.h's rows dequantise to the reference's values bit for
 *     bit (also a row range alone, across a group boundary inside a row);
 *     align's quantiser gives the reference's codes (all but ties: at
 *     least 99.9%) and values within 1e-6 of the largest; matmuls and a
 *     model on an NF4 base as for the GGUF types
 *   `test_quant --smollm2` (ctest: test_quant_smollm2), the SmolLM2 GGUF:
 *     kept Q4_1 blocks give the dequantised import's logits (1e-3) at 1/4
 *     of the weight memory; re-quantised to NF4, the same greedy token and
 *     logits moved no more than 1.5x what re-quantising to Q4_0 moves
 *     them; skips without cache/'s file
 *     (fails if CI=true) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "gguf.h"
#include "model_load.h"
#include "kvcache.h"
#include "lora.h"
#include "quant.h"
#include "rng.h"
#include "test.h"
#include "util.h"

static const Backend *be = &backend_cpu;
static Rng rng;

static void fill(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_normal(&rng) * s);
}

static void test_blocks(void) {
    enum { R = 8, C = 96 };
    float x[R * C], y[R * C], z[R * C];
    uint8_t b1[R * C * 2], b2[R * C * 2];
    fill(x, R * C, 1.0f);
    QuantType types[3] = {QUANT_Q4_0, QUANT_Q4_1, QUANT_Q8_0};
    for (int k = 0; k < 3; k++) {
        QuantType t = types[k];
        size_t bytes = R * quant_row_bytes(t, C);
        quant_quantize_rows(t, x, b1, R, C);
        quant_dequantize_rows(t, b1, y, R, C);
        double worst = 0;
        for (int blk = 0; blk < R * C / 32; blk++) {
            float lo = INFINITY, hi = -INFINITY, amax = 0;
            for (int j = 0; j < 32; j++) {
                float v = x[blk * 32 + j];
                lo = fminf(lo, v), hi = fmaxf(hi, v), amax = fmaxf(amax, fabsf(v));
            }
            float step = t == QUANT_Q4_0 ? amax / 8 : t == QUANT_Q4_1 ? (hi - lo) / 15 : amax / 127;
            for (int j = 0; j < 32; j++) worst = fmax(worst, fabs(x[blk * 32 + j] - y[blk * 32 + j]) / step);
        }
        CHECK(worst <= (t == QUANT_Q8_0 ? 0.6 : 0.51), "%s: error %.3g steps (<= 1/2 plus fp16 rounding of the scale)", quant_name(t), worst);
        quant_quantize_rows(t, y, b2, R, C);
        quant_dequantize_rows(t, b2, z, R, C);
        if (t != QUANT_Q4_1) CHECK(memcmp(b1, b2, bytes) == 0, "%s: dequantised weights re-quantise to the same blocks", quant_name(t));
        double d = 0;
        for (int i = 0; i < R * C; i++) d = fmax(d, fabs(y[i] - z[i]));
        CHECK(d < 1e-2, "%s: re-quantising is stable (%.3g)", quant_name(t), d);
    }
    CHECK(quant_f16_to_f32(quant_f32_to_f16(0.1f)) == 0.0999755859375f, "fp16 round to nearest");
}

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void test_fixture_blocks(void) {
    size_t len;
    uint8_t *buf = (uint8_t *)align_read_file(ALIGN_TEST_DIR "/fixtures/quant/blocks.bin", &len);
    CHECK(buf && len > 8 && !memcmp(buf, "AQFX", 4), "fixtures/quant/blocks.bin: %s", buf ? "bad magic" : align_error());
    if (!buf || len <= 8) return;
    uint32_t n = rd32(buf + 4);
    size_t at = 8;
    int seen = 0;
    for (uint32_t e = 0; e < n && at + 16 <= len; e++) {
        QuantType t = (QuantType)rd32(buf + at);
        uint32_t nb = rd32(buf + at + 4), ne = rd32(buf + at + 8), bb = rd32(buf + at + 12);
        at += 16;
        const uint8_t *blocks = buf + at;
        at += (size_t)nb * bb;
        float *want = malloc((size_t)nb * ne * 4), *got = malloc((size_t)nb * ne * 4);
        memcpy(want, buf + at, (size_t)nb * ne * 4);
        at += (size_t)nb * ne * 4;
        CHECK(at <= len, "fixture entry %u lies inside the file", e);
        CHECK(quant_supported(t) && quant_block_elems(t) == (int)ne && quant_block_bytes(t) == bb,
              "%s: %u elements in %u bytes per block", quant_name(t), ne, bb);
        /* two rows, so row strides are exercised too */
        quant_dequantize_rows(t, blocks, got, 2, (int64_t)nb / 2 * ne);
        double worst = 0, scale = 0;
        for (size_t i = 0; i < (size_t)nb * ne; i++)
            worst = fmax(worst, fabs(want[i] - got[i])), scale = fmax(scale, fabs(want[i]));
        /* one rounding apart at most: the compiler may fuse d*q - m */
        printf("%s: %u blocks, max |align - gguf| %.3g (values up to %.3g)\n", quant_name(t), nb, worst, scale);
        CHECK(worst <= 2.4e-7 * scale, "%s dequantises as llama.cpp (max diff %.3g, values up to %.3g)", quant_name(t), worst, scale);
        if (ne == 256) {
            /* matmul tiles of K-quant rows: 2 rows of nb/2 super-blocks */
            int C = (int)(nb / 2 * ne), OC = 2, N = 3;
            float *x = malloc((size_t)N * C * 4), *o1 = malloc(N * OC * 4), *o2 = malloc(N * OC * 4);
            float *dy = malloc(N * OC * 4), *d1 = malloc((size_t)N * C * 4), *d2 = malloc((size_t)N * C * 4);
            fill(x, (size_t)N * C, 1), fill(dy, N * OC, 1);
            be->matmul_forward(o1, x, got, NULL, N, C, OC);
            be->matmul_forward_q(o2, x, blocks, t, NULL, N, C, OC);
            be->matmul_backward_input(d1, dy, got, N, C, OC, 0);
            be->matmul_backward_input_q(d2, dy, blocks, t, N, C, OC, 0);
            double wf = 0, wb = 0;
            for (int i = 0; i < N * OC; i++) wf = fmax(wf, fabs(o1[i] - o2[i]) / (1 + fabs(o1[i])));
            for (int i = 0; i < N * C; i++) wb = fmax(wb, fabs(d1[i] - d2[i]) / (1 + fabs(d1[i])));
            CHECK(wf < 1e-5 && wb < 1e-5, "%s matmul_forward_q / backward_input_q = fp32 (%.3g, %.3g)", quant_name(t), wf, wb);
            free(x), free(o1), free(o2), free(dy), free(d1), free(d2);
        }
        free(want), free(got);
        seen++;
    }
    CHECK(seen == 10, "ten block types in the fixture (%d)", seen);
    CHECK(!quant_can_quantize(QUANT_Q5_K) && quant_quantize_rows(QUANT_Q5_K, NULL, NULL, 1, 256) != 0,
          "quantising to Q5_K (not written) is refused with an error");
    free(buf);
}

static void test_kquant_gguf(void) {
    const char *path = ALIGN_TEST_DIR "/fixtures/quant/tiny_kquant.gguf";
    ModelBundle a, q;
    CHECK(gguf_import(path, be, &a) == 0, "import %s: %s", path, align_error());
    CHECK(gguf_import_quant(path, be, QUANT_Q8_0, &q) == 0, "import keeping blocks: %s", align_error());
    if (!a.model || !q.model) return;
    static const struct {
        const char *name;
        int type;
    } want[] = {
        {"model.layers.0.self_attn.q_proj.weight", QUANT_NONE}, /* q, k Q4_K with v Q6_K: one fused matmul, fp32 */
        {"model.layers.0.self_attn.v_proj.weight", QUANT_NONE},
        {"model.layers.0.self_attn.o_proj.weight", QUANT_Q5_K},
        {"model.layers.0.mlp.gate_proj.weight", QUANT_Q4_K},
        {"model.layers.0.mlp.up_proj.weight", QUANT_Q4_K},
        {"model.layers.0.mlp.down_proj.weight", QUANT_Q6_K},
        {"model.layers.1.self_attn.q_proj.weight", QUANT_Q3_K},
        {"model.layers.1.self_attn.k_proj.weight", QUANT_Q3_K},
        {"model.layers.1.self_attn.v_proj.weight", QUANT_Q3_K},
        {"model.layers.1.self_attn.o_proj.weight", QUANT_Q2_K},
        {"model.layers.1.mlp.gate_proj.weight", QUANT_Q5_0},
        {"model.layers.1.mlp.down_proj.weight", QUANT_Q5_1},
        {"lm_head.weight", QUANT_NONE},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const ParamInfo *p = model_find_param(q.model, want[i].name);
        CHECK(p && p->qtype == want[i].type, "%s kept as %s (%s)", want[i].name, quant_name((QuantType)want[i].type),
              p ? quant_name((QuantType)p->qtype) : "missing");
    }
    printf("tiny K-quant GGUF: weights %.2f MiB kept vs %.2f MiB dequantised\n", model_weight_bytes(q.model) / 1048576.0,
           model_weight_bytes(a.model) / 1048576.0);
    int32_t t[7] = {1, 5, 9, 3, 17, 30, 2}, s[2] = {0, 7}, rows[7] = {0, 1, 2, 3, 4, 5, 6};
    Batch b = {7, 1, t, s};
    int V = a.model->cfg.vocab_size;
    float *l1 = malloc(7 * V * 4), *l2 = malloc(7 * V * 4);
    model_forward(a.model, &b), model_logits(a.model, rows, 7, l1);
    model_forward(q.model, &b), model_logits(q.model, rows, 7, l2);
    double worst = 0, scale = 0;
    for (int i = 0; i < 7 * V; i++) worst = fmax(worst, fabs(l1[i] - l2[i])), scale = fmax(scale, fabs(l1[i]));
    CHECK(worst < 1e-4 * (1 + scale), "kept K-quant blocks = dequantised import (%.3g, logits up to %.3g)", worst, scale);

    /* the same adapters on both: equal gradients through the kept blocks */
    LoraConfig lc;
    lora_config_defaults(&lc);
    lc.rank = 2, lc.alpha = 4, lc.dropout = 0;
    Model *ms[2] = {a.model, q.model};
    int32_t tg[7];
    float w7[7] = {1, 1, 1, 1, 1, 1, 0};
    batch_next_token_targets(&b, tg);
    for (int k = 0; k < 2; k++) {
        Model *m = ms[k];
        CHECK(model_lora_attach(m, &lc) == 0, "attach LoRA: %s", align_error());
        Rng r;
        rng_seed(&r, 5);
        for (int i = 0; i < m->n_params; i++)
            if (m->info[i].lora)
                for (size_t j = 0; j < m->info[i].numel; j++) m->params[m->info[i].offset + j] = (float)(rng_normal(&r) * 0.05);
        model_zero_grad(m);
        model_forward(m, &b);
        model_token_logprobs(m, tg, NULL);
        model_backward(m, w7, NULL);
    }
    double gw = 0, gmax = 1e-9;
    int n_lora = 0;
    for (int i = 0; i < q.model->n_params; i++) {
        const ParamInfo *pq = &q.model->info[i];
        if (!pq->lora) continue;
        const ParamInfo *pa = model_find_param(a.model, pq->name);
        if (!pa || pa->numel != pq->numel) continue;
        n_lora++;
        for (size_t j = 0; j < pq->numel; j++) {
            float g1 = a.model->grads[pa->grad_offset + j], g2 = q.model->grads[pq->grad_offset + j];
            gw = fmax(gw, fabs(g1 - g2)), gmax = fmax(gmax, fabs(g1));
        }
    }
    CHECK(n_lora >= 2 * 7 * 2, "LoRA on every projection (%d tensors)", n_lora);
    CHECK(gw < 1e-4 * gmax, "LoRA gradients on the K-quant base = on the fp32 import (%.3g of %.3g)", gw, gmax);
    free(l1), free(l2);
    model_bundle_free(&a), model_bundle_free(&q);
}

static void test_quantize_ref(void) {
    size_t len;
    uint8_t *buf = (uint8_t *)align_read_file(ALIGN_TEST_DIR "/fixtures/quant/quantize_ref.bin", &len);
    CHECK(buf && len > 8 && !memcmp(buf, "AQQZ", 4), "fixtures/quant/quantize_ref.bin: %s", buf ? "bad magic" : align_error());
    if (!buf || len <= 8) return;
    uint32_t n = rd32(buf + 4);
    size_t at = 8;
    int seen = 0;
    for (uint32_t e = 0; e < n && at + 8 <= len; e++) {
        QuantType t = (QuantType)rd32(buf + at);
        uint32_t nv = rd32(buf + at + 4);
        float *x = malloc((size_t)nv * 4);
        memcpy(x, buf + at + 8, (size_t)nv * 4);
        at += 8 + (size_t)nv * 4;
        uint32_t nbytes = rd32(buf + at);
        const uint8_t *want = buf + at + 4;
        at += 4 + nbytes;
        CHECK(at <= len && quant_row_bytes(t, nv) == nbytes, "%s: %u bytes for %u values", quant_name(t), nbytes, nv);
        uint8_t *got = calloc(nbytes + 1, 1);
        /* three rows, so the row loop is exercised */
        CHECK(quant_quantize_rows(t, x, got, 3, nv / 3) == 0, "%s quantises: %s", quant_name(t), align_error());
        size_t diff = 0;
        for (uint32_t i = 0; i < nbytes; i++) diff += got[i] != want[i];
        CHECK(diff == 0, "%s: quantize_rows = ggml's quantize_row_%s_ref (%zu of %u bytes differ)", quant_name(t), quant_name(t), diff, nbytes);
        free(x), free(got);
        seen++;
    }
    CHECK(seen == 5, "five types in the fixture (%d)", seen);
    free(buf);
}

/* A block of hf_tiny_llama's weights (bf16 values) where x * id + 8.5 is
 * 1.99999990 exactly but 2.0 in float32: ggml's reference (and the gguf
 * package's port) rounds the product first and gets nibble 2; a fused
 * multiply-add got 1. The blocks are gguf.quants.quantize's. */
static void test_q4_0_rounding(void) {
    static const uint32_t bits[32] = {
        0x3cd40000, 0xbc750000, 0x3b860000, 0xbd090000, 0xbca80000, 0x3ab40000, 0xbd070000, 0x3c230000,
        0xbba20000, 0x3c180000, 0x3be90000, 0xbc9a0000, 0xbbff0000, 0xbba10000, 0xbb0a0000, 0x3c7f0000,
        0x3be80000, 0xbcee0000, 0xbae50000, 0x3c140000, 0xbc9f0000, 0x3d140000, 0xbad30000, 0x3b240000,
        0xbc390000, 0x3d130000, 0xbb8e0000, 0xbb0d0000, 0x3d020000, 0x3d200000, 0x3d030000, 0x3c360000};
    static const uint8_t want[18] = {0, 157, 115, 235, 135, 111, 204, 24, 143, 118, 169, 22, 151, 140, 42, 9, 24, 101};
    float x[32];
    uint8_t got[18];
    memcpy(x, bits, sizeof x);
    quant_quantize_rows(QUANT_Q4_0, x, got, 1, 32);
    CHECK(!memcmp(got, want, 18), "q4_0 rounds as ggml's reference quantizer (byte 14: %d, want %d)", got[14], want[14]);
}

static void test_matmuls(void) {
    /* C = 4096 gives tiles of 16 rows: OC = 40 is three tiles, the last partial */
    enum { N = 3, C = 4096, OC = 40 };
    float *x = malloc(N * C * 4), *w = malloc((size_t)OC * C * 4), *wd = malloc((size_t)OC * C * 4), *bias = malloc(OC * 4);
    float *o1 = malloc(N * OC * 4), *o2 = malloc(N * OC * 4), *dy = malloc(N * OC * 4), *d1 = malloc(N * C * 4), *d2 = malloc(N * C * 4);
    uint8_t *q = malloc((size_t)OC * C * 2);
    fill(x, N * C, 1), fill(w, (size_t)OC * C, 0.05f), fill(bias, OC, 1), fill(dy, N * OC, 1);
    QuantType types[5] = {QUANT_Q4_0, QUANT_Q4_1, QUANT_Q8_0, QUANT_NF4, QUANT_FP4};
    for (int k = 0; k < 5; k++) {
        QuantType t = types[k];
        quant_quantize_rows(t, w, q, OC, C);
        quant_dequantize_rows(t, q, wd, OC, C);
        for (int n = 1; n <= N; n += N - 1) {
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                be->matmul_forward(o1, x, wd, with_bias ? bias : NULL, n, C, OC);
                be->matmul_forward_q(o2, x, q, t, with_bias ? bias : NULL, n, C, OC);
                double worst = 0;
                for (int i = 0; i < n * OC; i++) worst = fmax(worst, fabs(o1[i] - o2[i]) / (1 + fabs(o1[i])));
                CHECK(worst < 1e-5, "%s forward N=%d bias=%d: %.3g", quant_name(t), n, with_bias, worst);
            }
        }
        for (int acc = 0; acc < 2; acc++) {
            for (int i = 0; i < N * C; i++) d1[i] = d2[i] = acc ? 0.5f : 99.0f;
            be->matmul_backward_input(d1, dy, wd, N, C, OC, acc);
            be->matmul_backward_input_q(d2, dy, q, t, N, C, OC, acc);
            double worst = 0;
            for (int i = 0; i < N * C; i++) worst = fmax(worst, fabs(d1[i] - d2[i]) / (1 + fabs(d1[i])));
            CHECK(worst < 1e-5, "%s backward-input accumulate=%d: %.3g", quant_name(t), acc, worst);
        }
    }
    free(x), free(w), free(wd), free(bias), free(o1), free(o2), free(dy), free(d1), free(d2), free(q);
}

static ModelConfig tiny(void) {
    ModelConfig c;
    model_config_defaults(&c, ARCH_LLAMA);
    c.vocab_size = 50, c.dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 16;
    c.ffn_dim = 96, c.max_seq_len = 64, c.qkv_bias = 1, c.tied_embeddings = 1;
    return c;
}

static int32_t toks[11] = {1, 5, 9, 3, 44, 17, 2, 8, 30, 11, 4};
static int32_t starts[3] = {0, 5, 11};
static int32_t tgts[11];
static float rw[11];
static Model *gm;
static uint64_t gkey = 3;

static double model_loss(void) {
    Batch b = {11, 2, toks, starts};
    float lp[11];
    model_lora_train_mode(gm, 1, gkey); /* the same dropout masks every time */
    model_forward(gm, &b);
    model_token_logprobs(gm, tgts, lp);
    model_lora_train_mode(gm, 0, 0);
    double s = 0;
    for (int i = 0; i < 11; i++) s += (double)rw[i] * lp[i];
    return s;
}

static void test_quant_model(void) {
    ModelConfig c = tiny();
    Batch b = {11, 2, toks, starts};
    batch_next_token_targets(&b, tgts);
    fill(rw, 11, 1);
    Model *fp = model_create(&c, be);
    model_init_random(fp, 11);
    Model *m = model_create(&c, be);
    model_init_random(m, 11);
    int nq = model_quantize_base(m, QUANT_Q4_0);
    /* q,k,v,o,gate,up quantised (inputs 64); down_proj's input is 96 = 3 blocks: also */
    CHECK(nq == 2 * 7, "14 linear weights quantised, got %d", nq);
    CHECK(model_weight_bytes(m) < model_weight_bytes(fp) / 2, "weights %zu bytes vs %zu fp32", model_weight_bytes(m), model_weight_bytes(fp));
    for (int i = 0; i < m->n_params; i++)
        if (m->info[i].qtype) CHECK(m->info[i].grad_offset < 0, "%s is frozen", m->info[i].name);
    Model *deq = model_export_copy(m);
    int32_t rows[11];
    for (int i = 0; i < 11; i++) rows[i] = i;
    float *l1 = malloc(11 * 50 * 4), *l2 = malloc(11 * 50 * 4);
    model_forward(m, &b), model_logits(m, rows, 11, l1);
    model_forward(deq, &b), model_logits(deq, rows, 11, l2);
    double worst = 0;
    for (int i = 0; i < 11 * 50; i++) worst = fmax(worst, fabs(l1[i] - l2[i]));
    CHECK(worst < 1e-4, "quantised model = fp32 model of the dequantised weights (%.3g)", worst);

    /* LoRA on the quantised base: finite differences */
    LoraConfig lc;
    lora_config_defaults(&lc);
    lc.rank = 2, lc.alpha = 4, lc.dropout = 0.2f;
    CHECK(model_lora_attach(m, &lc) == 0, "attach on a quantised base: %s", align_error());
    CHECK(model_lora_merge(m) != 0, "merging into a quantised base is refused");
    for (int i = 0; i < m->n_params; i++)
        if (m->info[i].lora) fill(m->params + m->info[i].offset, m->info[i].numel, 0.1f);
    /* also train the embeddings so the input gradient through the quantised path is checked */
    model_set_trainable(m, "embed_tokens", 1);
    gm = m;
    model_zero_grad(m);
    model_lora_train_mode(m, 1, gkey);
    model_forward(m, &b);
    model_token_logprobs(m, tgts, NULL);
    model_lora_train_mode(m, 0, 0);
    model_backward(m, rw, NULL);
    int checked = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (p->grad_offset < 0) continue;
        float *x = m->params + p->offset, *g = m->grads + p->grad_offset;
        double gmax = 1e-6, err = 0;
        for (size_t k = 0; k < p->numel; k++) gmax = fmax(gmax, fabs(g[k]));
        size_t stride = p->numel / 8 + 1;
        for (size_t k = rng_below(&rng, stride); k < p->numel; k += stride) {
            float keep = x[k], h = 1e-2f * fmaxf(1.0f, fabsf(keep));
            x[k] = keep + h;
            double lp = model_loss();
            x[k] = keep - h;
            double lm = model_loss();
            x[k] = keep;
            err = fmax(err, fabs((lp - lm) / (2.0 * h) - g[k]) / gmax);
        }
        CHECK(err < 2e-2, "%s: finite-difference error %.3g of max |grad| %.3g", p->name, err, gmax);
        checked++;
    }
    CHECK(checked == 1 + 2 * 7 * 2, "embedding + 28 adapter tensors checked (%d)", checked);

    /* cached decoding on the quantised base with adapters */
    KVCache *kv = kvcache_create(m, 1, 16);
    Batch one = {5, 1, toks, (int32_t[]){0, 5}};
    float last[50];
    model_forward_cached(m, kv, (int32_t[]){0}, &one, last);
    model_forward(m, &b), model_logits(m, (int32_t[]){4}, 1, l1);
    worst = 0;
    for (int i = 0; i < 50; i++) worst = fmax(worst, fabs(last[i] - l1[i]));
    CHECK(worst < 1e-4, "cached decoding on a quantised base with LoRA (%.3g)", worst);
    kvcache_free(kv);
    free(l1), free(l2);
    model_free(fp), model_free(m), model_free(deq);
}

/* The generator make_nf4_fixtures.py's bnb_input reproduces: exact in fp32. */
static void bnb_input(float *x, int64_t n, uint32_t seed) {
    uint32_t st = seed;
    for (int64_t i = 0; i < n; i++) {
        st = st * 1664525u + 1013904223u;
        double v = ((st >> 8) / 16777216.0 - 0.5) / 16.0;
        if (i % 97 == 0) v *= 8.0;
        x[i] = (float)v;
    }
}

/* hex of the fixture into bytes; returns the byte count */
static size_t unhex(const cJSON *o, const char *key, void *out, size_t cap) {
    const char *h = cJSON_GetStringValue(cJSON_GetObjectItem(o, key));
    size_t n = h ? strlen(h) / 2 : 0;
    if (n > cap) n = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        ((uint8_t *)out)[i] = (uint8_t)v;
    }
    return n;
}

static void test_bnb_reference(void) {
    size_t len;
    char *text = align_read_file(ALIGN_TEST_DIR "/fixtures/nf4_reference.json", &len);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    CHECK(root != NULL, "read nf4_reference.json: %s", align_error());
    if (!root) return;
    float table[256];
    CHECK(unhex(root, "dynamic_map", table, sizeof table) == sizeof table && !memcmp(table, quant_dynamic_map(), sizeof table),
          "the dynamic map (create_dynamic_map) equals PyTorch's");
    CHECK(unhex(root, "nf4", table, 64) == 64 && !memcmp(table, quant_nf4_codebook(), 64), "the NF4 codebook");
    CHECK(unhex(root, "fp4", table, 64) == 64 && !memcmp(table, quant_fp4_codebook(), 64), "the FP4 codebook");
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(c, "kind"));
        QuantType t;
        quant_parse(kind, &t);
        int rows = cJSON_GetObjectItem(c, "rows")->valueint, cols = cJSON_GetObjectItem(c, "cols")->valueint;
        int64_t n = (int64_t)rows * cols, nb = cols / 64, nblocks = n / 64, ngroups = (nblocks + 255) / 256;
        int K = (int)(nb / 256) + 2;
        uint8_t *codes = malloc(n), *q8 = malloc(nblocks), *blk = malloc(rows * quant_row_bytes(t, cols)),
                *mine = malloc(rows * quant_row_bytes(t, cols));
        float *a2 = malloc(ngroups * 4), *want = malloc(n * 4), *got = malloc(n * 4), *x = malloc(n * 4), offset;
        CHECK(unhex(c, "codes", codes, n) == (size_t)n && unhex(c, "qabsmax", q8, nblocks) == (size_t)nblocks &&
                  unhex(c, "group_absmax", a2, ngroups * 4) == (size_t)ngroups * 4 && unhex(c, "offset", &offset, 4) == 4 &&
                  unhex(c, "dequantised", want, n * 4) == (size_t)n * 4,
              "%s [%d, %d]: fixture fields", kind, rows, cols);
        /* the reference's quantisation in quant.h's row layout */
        size_t rb = quant_row_bytes(t, cols);
        for (int r = 0; r < rows; r++) {
            uint8_t *row = blk + r * rb;
            int64_t b0 = r * nb;
            uint32_t phase = (uint32_t)(b0 % 256);
            memcpy(row, &offset, 4), memcpy(row + 4, &phase, 4);
            for (int k = 0; k < K; k++) {
                float v = b0 / 256 + k < ngroups ? a2[b0 / 256 + k] : 0.0f;
                memcpy(row + 8 + 4 * k, &v, 4);
            }
            memcpy(row + 8 + 4 * K, q8 + b0, nb);
            for (int64_t j = 0; j < cols; j += 2) row[8 + 4 * K + nb + j / 2] = (uint8_t)(codes[r * cols + j] << 4 | codes[r * cols + j + 1]);
        }
        quant_dequantize_rows(t, blk, got, rows, cols);
        CHECK(!memcmp(got, want, n * 4), "%s [%d, %d]: dequantised = PyTorch's, bit for bit", kind, rows, cols);
        quant_dequantize_rows(t, blk + (rows - 1) * rb, got, 1, cols);
        CHECK(!memcmp(got, want + (rows - 1) * cols, cols * 4), "%s [%d, %d]: the last row alone", kind, rows, cols);

        /* align's own quantiser on the same input */
        bnb_input(x, n, (uint32_t)cJSON_GetObjectItem(c, "seed")->valueint);
        CHECK(quant_quantize_rows(t, x, mine, rows, cols) == 0, "quantise: %s", align_error());
        quant_dequantize_rows(t, mine, got, rows, cols);
        int64_t same = 0, same8 = 0;
        double worst = 0, amax = 0;
        for (int r = 0; r < rows; r++) {
            const uint8_t *row = mine + r * rb;
            for (int64_t j = 0; j < nb; j++) same8 += row[8 + 4 * K + j] == q8[r * nb + j];
            for (int64_t j = 0; j < cols; j++) {
                uint8_t b = row[8 + 4 * K + nb + j / 2];
                same += ((j % 2 ? b & 0xF : b >> 4) == codes[r * cols + j]);
            }
        }
        for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(got[i] - want[i])), amax = fmax(amax, fabs(want[i]));
        CHECK(same >= n - n / 1000 && same8 >= nblocks - nblocks / 100, "%s [%d, %d]: align's codes = the reference's (%lld/%lld, absmax %lld/%lld)",
              kind, rows, cols, (long long)same, (long long)n, (long long)same8, (long long)nblocks);
        CHECK(worst <= 1e-6 * amax, "%s [%d, %d]: align's quantisation dequantises to the reference's (%.3g of %.3g)", kind, rows, cols,
              worst, amax);
        free(codes), free(q8), free(blk), free(mine), free(a2), free(want), free(got), free(x);
    }
    cJSON_Delete(root);
    free(text);
}

/* A model on an NF4 / FP4 base = the fp32 model of its dequantised weights;
 * inputs not a multiple of 64 (down_proj's 96) stay fp32. */
static void test_bnb_model(QuantType t) {
    ModelConfig c = tiny();
    int32_t tg[11];
    Batch b = {11, 2, toks, starts};
    batch_next_token_targets(&b, tg);
    Model *fp = model_create(&c, be);
    model_init_random(fp, 11);
    Model *m = model_create(&c, be);
    model_init_random(m, 11);
    int nq = model_quantize_base(m, t);
    CHECK(nq == 2 * 6, "%s: q,k,v,o,gate,up of 2 layers quantised, got %d", quant_name(t), nq);
    CHECK(model_weight_bytes(m) < model_weight_bytes(fp), "%s: weights %zu bytes vs %zu fp32", quant_name(t), model_weight_bytes(m),
          model_weight_bytes(fp));
    Model *deq = model_export_copy(m);
    int32_t rows[11];
    for (int i = 0; i < 11; i++) rows[i] = i;
    float *l1 = malloc(11 * 50 * 4), *l2 = malloc(11 * 50 * 4), *l0 = malloc(11 * 50 * 4);
    model_forward(m, &b), model_logits(m, rows, 11, l1);
    model_forward(deq, &b), model_logits(deq, rows, 11, l2);
    model_forward(fp, &b), model_logits(fp, rows, 11, l0);
    double worst = 0, drift = 0;
    for (int i = 0; i < 11 * 50; i++) worst = fmax(worst, fabs(l1[i] - l2[i])), drift = fmax(drift, fabs(l1[i] - l0[i]));
    CHECK(worst < 1e-4, "%s model = fp32 model of the dequantised weights (%.3g)", quant_name(t), worst);
    CHECK(drift > 0 && drift < 0.5, "%s model near the fp32 one (%.3g)", quant_name(t), drift);
    free(l0), free(l1), free(l2);
    model_free(fp), model_free(m), model_free(deq);
}

/* Quantising while reading (tensor by tensor) = reading fp32, then
 * quantising the whole model: the same blocks, so the same logits. */
static void test_load_quant(void) {
    ModelBundle a, q;
    const char *dir = ALIGN_TEST_DIR "/fixtures/hf_tiny_gpt2";
    CHECK(model_load_any(dir, be, 0, &a) == 0 && model_load_any_quant(dir, be, 0, QUANT_NF4, &q) == 0, "load: %s", align_error());
    CHECK(model_quantize_base(a.model, QUANT_NF4) == 2, "the two MLP c_proj weights (64 inputs) quantised");
    CHECK(a.model->n_elems == q.model->n_elems && a.model->n_qbytes == q.model->n_qbytes &&
              !memcmp(a.model->qparams, q.model->qparams, a.model->n_qbytes),
          "read-time NF4 blocks = NF4 blocks of the fp32 load");
    model_bundle_free(&a), model_bundle_free(&q);
}

static void test_gguf(void) {
    const char *path = TEST_SMOLLM2_GGUF;
    test_need_file(path, "scripts/fetch-smollm2.sh fetches it");
    ModelBundle a, q;
    CHECK(gguf_import(path, be, &a) == 0, "import: %s", align_error());
    CHECK(gguf_import_quant(path, be, QUANT_Q4_0, &q) == 0, "import keeping blocks: %s", align_error());
    int kept = 0;
    for (int i = 0; i < q.model->n_params; i++) kept += q.model->info[i].qtype == QUANT_Q4_1;
    CHECK(kept >= 30 * 6, "Q4_1 blocks kept for the linear weights (%d tensors)", kept);
    printf("SmolLM2 Q4_1: %d tensors kept as Q4_1; weights %.1f MiB vs %.1f MiB dequantised\n", kept,
           model_weight_bytes(q.model) / 1048576.0, model_weight_bytes(a.model) / 1048576.0);
    int32_t t[8] = {1, 504, 3300, 281, 17, 900, 42, 2}, s[2] = {0, 8}, row = 7;
    Batch b = {8, 1, t, s};
    int V = a.model->cfg.vocab_size;
    float *l1 = malloc(V * 4), *l2 = malloc(V * 4);
    model_forward(a.model, &b), model_logits(a.model, &row, 1, l1);
    model_forward(q.model, &b), model_logits(q.model, &row, 1, l2);
    double worst = 0, scale = 0;
    for (int i = 0; i < V; i++) worst = fmax(worst, fabs(l1[i] - l2[i])), scale = fmax(scale, fabs(l1[i]));
    CHECK(worst < 1e-3 * (1 + scale), "kept blocks = dequantised import (%.3g, logits up to %.3g)", worst, scale);
    model_bundle_free(&q);

    /* NF4: every linear weight re-quantised from the Q4_1 blocks. Its
     * logits move by re-quantisation error, which must be of the size
     * Q4_0's re-quantisation of the same weights gives (a wrong layout or
     * scale would give noise) and keep the greedy token */
    CHECK(gguf_import_quant(path, be, QUANT_NF4, &q) == 0, "import as nf4: %s", align_error());
    int nf4 = 0;
    for (int i = 0; i < q.model->n_params; i++) nf4 += q.model->info[i].qtype == QUANT_NF4;
    float *l3 = malloc(V * 4);
    model_forward(q.model, &b), model_logits(q.model, &row, 1, l2);
    CHECK(model_quantize_base(a.model, QUANT_Q4_0) == 30 * 7, "the fp32 import re-quantised to q4_0");
    model_forward(a.model, &b), model_logits(a.model, &row, 1, l3);
    int am1 = 0, am2 = 0;
    double d_nf4 = 0, d_q4 = 0;
    for (int i = 0; i < V; i++) {
        d_nf4 = fmax(d_nf4, fabs(l1[i] - l2[i])), d_q4 = fmax(d_q4, fabs(l1[i] - l3[i]));
        if (l1[i] > l1[am1]) am1 = i;
        if (l2[i] > l2[am2]) am2 = i;
    }
    printf("SmolLM2 NF4: %d tensors, weights %.1f MiB; logits off the Q4_1 model's by at most %.3g (Q4_0 re-quantised: %.3g)\n",
           nf4, model_weight_bytes(q.model) / 1048576.0, d_nf4, d_q4);
    CHECK(nf4 == 30 * 7 && am1 == am2 && d_nf4 < 1.5 * d_q4, "nf4: %d tensors, argmax %d vs %d, max diff %.3g (q4_0: %.3g)", nf4,
          am1, am2, d_nf4, d_q4);
    free(l3);
    free(l1), free(l2);
    model_bundle_free(&a), model_bundle_free(&q);
}

int main(int argc, char **argv) {
    rng_seed(&rng, 99);
    if (argc == 2 && strcmp(argv[1], "--smollm2") == 0) {
        test_gguf();
        return test_summary();
    }
    test_blocks();
    test_fixture_blocks();
    test_q4_0_rounding();
    test_quantize_ref();
    test_kquant_gguf();
    test_bnb_reference();
    test_bnb_model(QUANT_NF4);
    test_bnb_model(QUANT_FP4);
    test_load_quant();
    test_matmuls();
    test_quant_model();
    return test_summary();
}
