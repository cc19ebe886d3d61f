/* test_matmul_quant: the integer kernels of cpu/matmul_quant.c (inference
 * on a quantised GGUF, llama.cpp's arithmetic).
 *
 *   every ggml block type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K) on
 *     random blocks (random bytes, scales set to sane fp16 values), at
 *     N = 1, 3, 4, 5, 13, 15, 16 and 45 input rows (every grouping of
 *     rows; 45: the prefill tiles and Q8_0's interleaved groups, 5 x 8 + 5),
 *     odd OC (uneven thread slices), with and without bias, against two
 *     references computed here in double:
 *     - dequant(W) . q8(x), where q8 is the input quantised as the kernel
 *       must (blocks of 32, scale absmax/127, round half to even): equal up
 *       to fp32 summation (1e-5 of sum |w x|); so the integer arithmetic,
 *       the block decoding and the scales are exact;
 *     - dequant(W) . x, the fp32 product: within the bound the input
 *       quantisation allows, sum_k |w_k| * (absmax of x's block) / 254
 *       (half an input step per input), which is why the kernel's error is
 *       acceptable. Q2_K and Q3_K (the fp32 fallback) must be within 1e-5
 *       of it.
 *   a row's result does not depend on the other rows of the call (N = 16
 *     row i = N = 1 on row i, bit for bit; so for N = 45, the prefill path,
 *     against N = 1 and N = 16).
 *   the backend op (Backend.matmul_forward_q_int8) = mquant_forward.
 *   fixtures/quant/tiny_kquant.gguf through gguf_import_blocks: the blocks
 *     kept as gguf_import_quant keeps them, the LM head's Q6_K blocks kept,
 *     and cached decoding's logits (int8 inputs) close to the dequantised
 *     import's full forward (2% of the logits' range; greedy picks equal
 *     but at most one, a near tie within twice that error: random
 *     weights make flat logits).
 *   fixtures/quant/tiny_mixed.gguf: fused groups of mixed Q4_0 / Q5_0 /
 *     Q8_0 members kept as Q8_0 holding the file's values bit for bit
 *     (blocks import and QLoRA base), a Q4_1 + Q5_0 group fp32, and its
 *     cached decoding close to the fp32 forward as above. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gguf.h"
#include "kvcache.h"
#include "matmul_quant.h"
#include "quant.h"
#include "rng.h"
#include "test.h"
#include "util.h"

static const QuantType TYPES[] = {QUANT_Q4_0, QUANT_Q4_1, QUANT_Q5_0, QUANT_Q5_1, QUANT_Q8_0,
                                  QUANT_Q2_K, QUANT_Q3_K, QUANT_Q4_K, QUANT_Q5_K, QUANT_Q6_K};

/* byte offsets of a block's fp16 scales (d, and dmin / m where present) */
static void scale_offsets(QuantType t, int *o, int *n) {
    *n = 1;
    switch (t) {
    case QUANT_Q4_1: case QUANT_Q5_1: case QUANT_Q4_K: case QUANT_Q5_K: o[0] = 0, o[1] = 2, *n = 2; break;
    case QUANT_Q2_K: o[0] = 80, o[1] = 82, *n = 2; break;
    case QUANT_Q3_K: o[0] = 108; break;
    case QUANT_Q6_K: o[0] = 208; break;
    default: o[0] = 0;
    }
}

static void random_blocks(QuantType t, uint8_t *w, int OC, int C, Rng *r) {
    size_t bb = quant_block_bytes(t), nb = (size_t)OC * C / quant_block_elems(t);
    for (size_t i = 0; i < nb * bb; i++) w[i] = (uint8_t)rng_below(r, 256);
    int off[2], n;
    scale_offsets(t, off, &n);
    for (size_t b = 0; b < nb; b++)
        for (int k = 0; k < n; k++) {
            uint16_t h = quant_f32_to_f16((float)(0.002 + 0.02 * rng_uniform(r)) * (k ? -1.0f : 1.0f));
            memcpy(w + b * bb + off[k], &h, 2);
        }
}

/* The input as the kernel must quantise it, and each block's absmax. */
static void q8_ref(const float *x, int C, float *xq, float *amax) {
    for (int b = 0; b < C / 32; b++) {
        float a = 0;
        for (int k = 0; k < 32; k++) a = fmaxf(a, fabsf(x[32 * b + k]));
        float d = a / 127.0f, id = a > 0 ? 127.0f / a : 0.0f;
        for (int k = 0; k < 32; k++) xq[32 * b + k] = (float)nearbyintf(x[32 * b + k] * id) * d;
        amax[b] = a;
    }
}

static void test_kernels(void) {
    const int Ns[] = {1, 3, 4, 5, 13, 15, 16, 45}, OC = 37; /* 13, 15: 8 + 4 + 1, 8 + 4 + 3 rows */
    enum { NM = 45 };
    Rng r;
    rng_seed(&r, 11);
    for (size_t ti = 0; ti < sizeof TYPES / sizeof TYPES[0]; ti++) {
        QuantType t = TYPES[ti];
        int C = quant_block_elems(t) == 256 ? 512 : 96, exact = mquant_has_int8(t);
        uint8_t *w = malloc((size_t)OC * quant_row_bytes(t, C));
        float *wf = malloc((size_t)OC * C * 4), *x = malloc(NM * C * 4), *xq = malloc(NM * C * 4);
        float *amax = malloc(NM * C / 32 * 4), *out = malloc(NM * OC * 4), *one = malloc(OC * 4), bias[37];
        random_blocks(t, w, OC, C, &r);
        quant_dequantize_rows(t, w, wf, OC, C);
        for (int i = 0; i < NM * C; i++) x[i] = (float)rng_normal(&r) * (i % 7 == 0 ? 3.0f : 1.0f);
        for (int i = 0; i < NM; i++) q8_ref(x + i * C, C, xq + i * C, amax + i * C / 32);
        for (int o = 0; o < OC; o++) bias[o] = (float)rng_normal(&r);
        double worst_q = 0, worst_f = 0; /* error / allowed */
        for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++) {
            int N = Ns[ni];
            const float *bs = ni % 2 ? bias : NULL;
            CHECK(mquant_forward(out, x, w, t, bs, N, C, OC) == 0, "%s N=%d: %s", quant_name(t), N, align_error());
            for (int i = 0; i < N; i++)
                for (int o = 0; o < OC; o++) {
                    double sq = 0, sf = 0, mag = 0, bound = 0;
                    for (int k = 0; k < C; k++) {
                        double wk = wf[(size_t)o * C + k];
                        sq += wk * xq[i * C + k], sf += wk * x[i * C + k];
                        mag += fabs(wk * x[i * C + k]);
                        bound += fabs(wk) * amax[i * C / 32 + k / 32] / 254.0;
                    }
                    double b0 = bs ? bs[o] : 0, got = out[i * OC + o];
                    if (exact) worst_q = fmax(worst_q, fabs(got - b0 - sq) / (1e-5 * mag + 1e-6));
                    worst_f = fmax(worst_f, fabs(got - b0 - sf) / (exact ? bound * 1.001 + 1e-5 * mag + 1e-6 : 1e-5 * mag + 1e-6));
                }
        }
        if (exact) CHECK(worst_q <= 1, "%s: = dequant(W) . q8(x) up to fp32 summation (%.3g of the allowance)", quant_name(t), worst_q);
        CHECK(worst_f <= 1, "%s: within the input quantisation's bound of the fp32 product (%.3g of it)", quant_name(t), worst_f);
        /* batch invariance: the prefill path (N = 45) against decoding one
         * row (N = 1) and 16 rows (the batch-16 path) */
        float *many = malloc(NM * OC * 4);
        mquant_forward(many, x, w, t, NULL, NM, C, OC);
        mquant_forward(one, x + 41 * C, w, t, NULL, 1, C, OC);
        CHECK(!memcmp(one, many + 41 * OC, OC * 4), "%s: row 41 of 45 = row 41 alone, bit for bit", quant_name(t));
        mquant_forward(out, x, w, t, NULL, 16, C, OC);
        CHECK(!memcmp(out, many, 16 * OC * 4), "%s: rows 0-15 of 45 = of 16, bit for bit", quant_name(t));
        free(many);
        /* the last call had N = 16; row 9 alone */
        mquant_forward(one, x + 9 * C, w, t, NULL, 1, C, OC);
        mquant_forward(out, x, w, t, NULL, 16, C, OC);
        CHECK(!memcmp(one, out + 9 * OC, OC * 4), "%s: row 9 of 16 = row 9 alone, bit for bit", quant_name(t));
        float *thirteen = malloc(13 * OC * 4); /* rows grouped 8 + 4 + 1 instead of 8 + 8 */
        mquant_forward(thirteen, x, w, t, NULL, 13, C, OC);
        CHECK(!memcmp(thirteen, out, 13 * OC * 4), "%s: rows 0-12 of 13 = of 16, bit for bit", quant_name(t));
        free(thirteen);
        /* the backend op */
        backend_cpu.matmul_forward_q_int8(one, x + 9 * C, w, t, NULL, 1, C, OC);
        CHECK(backend_cpu.status() == 0 && !memcmp(one, out + 9 * OC, OC * 4), "%s: Backend.matmul_forward_q_int8", quant_name(t));
        free(w), free(wf), free(x), free(xq), free(amax), free(out), free(one);
    }
}

static void decode_close(ModelBundle *pa, ModelBundle *pq);

static void test_kquant_model(void) {
    const char *path = ALIGN_TEST_DIR "/fixtures/quant/tiny_kquant.gguf";
    const Backend *be = &backend_cpu;
    ModelBundle a, q;
    CHECK(gguf_import(path, be, &a) == 0, "import %s: %s", path, align_error());
    CHECK(gguf_import_blocks(path, be, &q) == 0, "import keeping blocks: %s", align_error());
    if (!a.model || !q.model) return;
    const ParamInfo *p = model_find_param(q.model, "model.layers.0.mlp.down_proj.weight");
    CHECK(p && p->qtype == QUANT_Q6_K, "down_proj kept as Q6_K");
    p = model_find_param(q.model, "model.layers.1.self_attn.o_proj.weight");
    CHECK(p && p->qtype == QUANT_Q2_K, "o_proj kept as Q2_K");
    CHECK(q.model->lm_head_q && q.model->lm_head_qtype == QUANT_Q6_K && q.model->infer_int8,
          "the LM head's Q6_K blocks kept for inference");
    CHECK(!a.model->lm_head_q && !a.model->infer_int8, "gguf_import keeps no head blocks");
    decode_close(&a, &q);
    model_bundle_free(&a), model_bundle_free(&q);
}

/* Cached decoding of q (int8 inputs) against a's fp32 full forward. */
static void decode_close(ModelBundle *pa, ModelBundle *pq) {
    ModelBundle a = *pa, q = *pq;
    int32_t t[7] = {1, 5, 9, 3, 17, 30, 2}, s[2] = {0, 7}, rows[7] = {0, 1, 2, 3, 4, 5, 6};
    Batch b = {7, 1, t, s};
    int V = a.model->cfg.vocab_size;
    float *want = malloc(7 * V * 4), *got = malloc(V * 4);
    model_forward(a.model, &b), model_logits(a.model, rows, 7, want);
    KVCache *kv = kvcache_create(q.model, 1, 16);
    double worst = 0, lo = 1e30, hi = -1e30;
    int same = 0, near = 0;
    for (int i = 0; i < 7; i++) { /* token by token: every step is a one-row decode */
        Batch one = {1, 1, t + i, (int32_t[]){0, 1}};
        CHECK(model_forward_cached(q.model, kv, (int32_t[]){0}, &one, got) == 0, "cached step %d: %s", i, align_error());
        int am = 0, bm = 0;
        for (int v = 0; v < V; v++) {
            const float *w = want + (size_t)i * V;
            worst = fmax(worst, fabs(got[v] - w[v])), lo = fmin(lo, w[v]), hi = fmax(hi, w[v]);
            if (got[v] > got[am]) am = v;
            if (w[v] > w[bm]) bm = v;
        }
        same += am == bm;
        /* a different pick only where the fp32 logits nearly tie */
        near += want[(size_t)i * V + am] >= want[(size_t)i * V + bm] - 2 * worst;
    }
    CHECK(worst < 0.02 * (hi - lo), "int8 decoding within 2%% of the logits' range of the fp32 forward (%.3g of %.3g)",
          worst, hi - lo);
    printf("int8 decoding: logits within %.3g (range %.3g), the same greedy token at %d of 7 positions\n", worst,
           hi - lo, same);
    CHECK(same >= 6 && near == 7, "greedy picks equal but at a near tie (%d equal, %d within 2x the error)", same, near);
    kvcache_free(kv);
    free(want), free(got);
}

/* Fused groups whose members' types differ (llama.cpp's Q4_K_M on rows that
 * are not 256-blocks: Q5_0 q, k and Q8_0 v) stay quantised as Q8_0 holding
 * exactly the file's values, not fp32; a group with no exact common type
 * (Q4_1 gate, Q5_0 up) is fp32 as before. */
static void test_mixed_groups(void) {
    const char *path = ALIGN_TEST_DIR "/fixtures/quant/tiny_mixed.gguf";
    const Backend *be = &backend_cpu;
    ModelBundle a, q, lq;
    CHECK(gguf_import(path, be, &a) == 0, "import %s: %s", path, align_error());
    CHECK(gguf_import_blocks(path, be, &q) == 0, "import keeping blocks: %s", align_error());
    CHECK(gguf_import_quant(path, be, QUANT_Q4_0, &lq) == 0, "import as a QLoRA base: %s", align_error());
    if (!a.model || !q.model || !lq.model) return;
    static const char *const names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj",
                                        "mlp.up_proj"};
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 5; k++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, names[k]);
            const ParamInfo *p = model_find_param(q.model, nm), *pl = model_find_param(lq.model, nm),
                            *pa = model_find_param(a.model, nm);
            int want = l == 1 && k >= 3 ? QUANT_NONE : QUANT_Q8_0;
            CHECK(p && pl && pa && p->qtype == want && pl->qtype == want, "%s: kept as %s (got %s, QLoRA base %s)", nm,
                  want ? "Q8_0" : "fp32", p ? quant_name((QuantType)p->qtype) : "-",
                  pl ? quant_name((QuantType)pl->qtype) : "-");
            if (!p || !pa || p->qtype != QUANT_Q8_0) continue;
            float *w = malloc(pa->numel * sizeof(float));
            quant_dequantize_rows(QUANT_Q8_0, q.model->qparams + p->qoffset, w, p->shape[0], p->shape[1]);
            CHECK(!memcmp(w, a.model->params + pa->offset, pa->numel * sizeof(float)),
                  "%s: the Q8_0 blocks hold the file's values bit for bit", nm);
            free(w);
        }
    decode_close(&a, &q);
    model_bundle_free(&a), model_bundle_free(&q), model_bundle_free(&lq);
}

int main(void) {
    test_kernels();
    test_kquant_model();
    test_mixed_groups();
    return test_summary();
}
