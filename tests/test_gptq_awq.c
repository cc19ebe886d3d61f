/* GPTQ and AWQ checkpoints as a frozen base, against
 * tests/fixtures/gptq_awq/ (make_gptq_awq_fixtures.py: tiny Llamas packed
 * in each layout by PyTorch code of its own, with their dequantised rows
 * and logits):
 *   - every quantised weight is kept in its QUANT_I4 type (act-order ones
 *     carrying g_idx) and dequantises bit for bit to the reference's
 *     fp32(scale) * (q - zero), for GPTQ v1 and v2, group sizes 32, 64, 128
 *     and per row, act-order on and off, and AWQ gemm 32 and 128;
 *   - the logits equal transformers' on the dequantised weights (1e-4);
 *   - the kept weights take 4.2-4.8 bits a weight (act-order: + 4 or 8);
 *   - LoRA trains on such a base (gradients reach the adapters through
 *     the quantised matmuls);
 *   - unsupported configurations are refused naming the file and field;
 *   - the act-order row layout with more than 16 groups (a byte a g_idx);
 *   - a backend other than the CPU refused at load. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "ckpt.h"
#include "lora.h"
#include "model_load.h"
#include "quant_int4.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

#define FIX ALIGN_TEST_DIR "/fixtures/gptq_awq/"

static const Backend *be;

static const char *const linears[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

/* want_down: down_proj's type (its 256 inputs make two groups of 128 in
 * gptq_g128_act, the only weight act-order shuffles there); want_qkv:
 * q|k|v's (gptq_g32_act_v2's k_proj is in plain order, so the fused group
 * has no one type and is dequantised to fp32 while loading). */
static void test_variant(const char *name, QuantType want_type, QuantType want_down, QuantType want_qkv) {
    char dir[512], exp[512];
    snprintf(dir, sizeof dir, FIX "%s", name);
    snprintf(exp, sizeof exp, FIX "%s.expected.safetensors", name);
    ModelBundle b;
    StFile ef;
    if (model_load_any(dir, be, 0, &b) != 0) {
        CHECK(0, "%s: load: %s", name, align_error());
        return;
    }
    CHECK(st_open(&ef, exp) == 0, "%s: %s", exp, align_error());
    Model *m = b.model;
    int kept = 0;
    size_t q_numel = 0, qb = 0;
    for (int i = 0; i < 7; i++) {
        char pn[128], en[160];
        snprintf(pn, sizeof pn, "model.layers.0.%s.weight", linears[i]);
        snprintf(en, sizeof en, "%s.rows", pn);
        ParamInfo *p = model_find_param(m, pn);
        const StTensor *t = st_find(&ef, en);
        if (!p || !t) {
            CHECK(0, "%s: %s present", name, pn);
            continue;
        }
        kept += p->qtype == (int)(i == 6 ? want_down : i < 3 ? want_qkv : want_type);
        if (p->qtype) q_numel += p->numel, qb += (size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1]);
        float *got = malloc(p->numel * 4), *want = malloc(st_numel(t) * 4);
        CHECK(model_param_to_host(m, p, got) == 0 && st_read_f32(&ef, t, want) == 0, "read %s", pn);
        int64_t R = p->shape[0], C = p->shape[1];
        /* rows 0..7 and the last one: every nibble place of a word of outputs */
        int same = !memcmp(got, want, 8 * C * 4) && !memcmp(got + (R - 1) * C, want + 8 * C, C * 4);
        CHECK(same, "%s: %s dequantises bit for bit to the reference", name, pn);
        free(got), free(want);
    }
    CHECK(kept == 7, "%s: %d of 7 weights kept as %s (q|k|v %s, down_proj %s)", name, kept, quant_name(want_type),
          quant_name(want_qkv), quant_name(want_down));
    double bits = 8.0 * (double)qb / (double)q_numel;
    printf("%s: %s, %.2f bits a weight\n", name, quant_name(want_type), bits);
    CHECK(bits > 4.0 && bits < (quant_int4_act(want_type) || quant_int4_act(want_down) ? 9.0 : 5.0), "%s: %.2f bits a weight", name, bits);

    const StTensor *tt = st_find(&ef, "tokens"), *tl = st_find(&ef, "logits");
    if (tt && tl) {
        int T = (int)tt->shape[0], V = m->cfg.vocab_size;
        int32_t toks[16], seq[2] = {0, T}, rows[16];
        memcpy(toks, ef.data + tt->begin, T * 4);
        for (int i = 0; i < T; i++) rows[i] = i;
        float *want = malloc((size_t)T * V * 4), *got = malloc((size_t)T * V * 4);
        Batch bt = {T, 1, toks, seq, NULL};
        CHECK(st_read_f32(&ef, tl, want) == 0 && model_forward(m, &bt) == 0 && model_logits(m, rows, T, got) == 0,
              "%s: forward", name);
        double worst = 0;
        for (int i = 0; i < T * V; i++) worst = fmax(worst, fabs(got[i] - want[i]));
        CHECK(worst < 1e-4, "%s: logits equal transformers' on the dequantised weights (max diff %.3g)", name, worst);
        free(want), free(got);
    } else {
        CHECK(0, "%s: the expected logits", name);
    }
    st_close(&ef);
    model_bundle_free(&b);
}

/* LoRA on the quantised base: adapters attach, the loss's gradient reaches
 * them through matmul_backward_input_q, and one step changes the output. */
static void test_lora(void) {
    ModelBundle b;
    if (model_load_any(FIX "gptq_g128_act", be, 0, &b) != 0) {
        CHECK(0, "load: %s", align_error());
        return;
    }
    Model *m = b.model;
    LoraConfig lc;
    lora_config_defaults(&lc);
    lc.rank = 4;
    lc.alpha = 8;
    lc.seed = 3;
    CHECK(model_lora_attach(m, &lc) == 0, "attach: %s", align_error());
    int32_t toks[6] = {3, 7, 11, 5, 9, 2}, seq[2] = {0, 6}, tg[6];
    Batch bt = {6, 1, toks, seq, NULL};
    batch_next_token_targets(&bt, tg);
    float lp[6], d[6];
    CHECK(model_forward(m, &bt) == 0 && model_token_logprobs(m, tg, lp) == 0, "forward: %s", align_error());
    for (int i = 0; i < 6; i++) d[i] = tg[i] >= 0 ? -1.0f : 0.0f;
    model_zero_grad(m);
    CHECK(model_backward(m, d, NULL) == 0, "backward: %s", align_error());
    float *g = malloc(m->n_grad_elems * 4);
    m->be->to_host(g, m->grads, m->n_grad_elems * 4);
    double n2 = 0;
    for (size_t i = 0; i < m->n_grad_elems; i++) n2 += (double)g[i] * g[i];
    CHECK(m->n_grad_elems > 0 && n2 > 0, "LoRA gradients through the quantised base (|g|^2 %.3g over %zu)", n2, m->n_grad_elems);
    free(g);
    model_bundle_free(&b);
}

/* A copy of a fixture whose config.json has one field of
 * quantization_config replaced; loading it must fail with a sentence
 * naming config.json and the field. */
static void test_refusal(const char *src, const char *from, const char *to, const char *field) {
    char dir[256] = "/tmp/align_gptq_XXXXXX", path[512], cmd[1024];
    if (!mkdtemp(dir)) return;
    snprintf(path, sizeof path, FIX "%s/config.json", src);
    size_t len;
    char *text = align_read_file(path, &len);
    char *at = text ? strstr(text, from) : NULL;
    CHECK(at != NULL, "%s holds %s", path, from);
    if (!at) {
        free(text);
        rmdir(dir);
        return;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    fclose(f);
    free(text);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(symlink(FIX "gptq_g32/model.safetensors", path) == 0, "link");
    ModelBundle b;
    int rc = model_load_any(dir, be, 0, &b);
    const char *e = align_error();
    CHECK(rc != 0 && strstr(e, "config.json") && strstr(e, field), "%s -> %s refused naming %s: %s", from, to, field,
          rc ? e : "loaded");
    if (!rc) model_bundle_free(&b);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

/* Act-order rows with more groups than a nibble holds: g_idx a byte each.
 * 20 groups of 32 over 640 inputs, the groups shuffled as act-order does. */
static void test_wide_gidx(void) {
    enum { R = 3, C = 640, G = 20 };
    uint8_t codes[R * C], zeros[R * G];
    uint16_t scales[R * G];
    int32_t gidx[C], perm[C];
    uint64_t s = 7;
    for (int i = 0; i < C; i++) perm[i] = i;
    for (int i = C - 1; i > 0; i--) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int j = (int)((s >> 33) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int j = 0; j < C; j++) gidx[perm[j]] = j / 32;
    for (int i = 0; i < R * C; i++) codes[i] = (uint8_t)((i * 7 + i / 5) % 16);
    for (int i = 0; i < R * G; i++) zeros[i] = (uint8_t)(i % 17), scales[i] = quant_f32_to_f16(0.01f * (1 + i % 9));
    size_t rb = quant_row_bytes(QUANT_I4_G32_ACT, C);
    CHECK(rb == 3 * G + C / 2 + C, "row bytes %zu", rb);
    uint8_t *blk = malloc(R * rb);
    float *out = malloc(R * C * 4);
    CHECK(quant_int4_pack(QUANT_I4_G32_ACT, R, C, codes, scales, zeros, gidx, blk) == 0, "pack: %s", align_error());
    quant_dequantize_rows(QUANT_I4_G32_ACT, blk, out, R, C);
    int bad = 0;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < C; i++) {
            int g = gidx[i];
            float want = quant_f16_to_f32(scales[r * G + g]) * (float)(codes[r * C + i] - zeros[r * G + g]);
            bad += out[r * C + i] != want;
        }
    CHECK(bad == 0, "%d of %d values differ from scale[g_idx] * (q - zero)", bad, R * C);
    zeros[4] = 17;
    CHECK(quant_int4_pack(QUANT_I4_G32_ACT, R, C, codes, scales, zeros, gidx, blk) != 0 && strstr(align_error(), "zero"),
          "a zero above 16 refused: %s", align_error());
    free(blk), free(out);
}

/* Another backend (the CUDA kernel knows the GGUF types only) is refused
 * at load, naming the directory, rather than failing in a matmul. */
static void test_other_backend(void) {
    Backend other = *be;
    other.name = "cuda";
    ModelBundle b;
    int rc = model_load_any(FIX "awq_g32", &other, 0, &b);
    CHECK(rc != 0 && strstr(align_error(), "awq_g32") && strstr(align_error(), "CPU backend only"), "refused: %s",
          rc ? align_error() : "loaded");
    if (!rc) model_bundle_free(&b);
}

int main(void) {
    be = backend_get("cpu");
    test_variant("gptq_g32", QUANT_I4_G32, QUANT_I4_G32, QUANT_I4_G32);
    test_variant("gptq_g128_act", QUANT_I4_G128, QUANT_I4_G128_ACT, QUANT_I4_G128);
    test_variant("gptq_g32_act_v2", QUANT_I4_G32_ACT, QUANT_I4_G32_ACT, QUANT_NONE);
    test_variant("gptq_g64", QUANT_I4_G64, QUANT_I4_G64, QUANT_I4_G64);
    test_variant("gptq_per_row", QUANT_I4_ROW, QUANT_I4_ROW, QUANT_I4_ROW);
    test_variant("awq_g32", QUANT_I4_G32, QUANT_I4_G32, QUANT_I4_G32);
    test_variant("awq_g128", QUANT_I4_G128, QUANT_I4_G128, QUANT_I4_G128);
    test_lora();
    test_refusal("gptq_g32", "\"bits\": 4", "\"bits\": 8", "quantization_config.bits");
    test_refusal("gptq_g32", "\"bits\": 4", "\"bits\": 3", "quantization_config.bits");
    test_refusal("gptq_g32", "\"checkpoint_format\": \"gptq\"", "\"checkpoint_format\": \"marlin\"",
                 "quantization_config.checkpoint_format");
    test_refusal("gptq_g32", "\"quant_method\": \"gptq\"", "\"quant_method\": \"exl2\"", "quantization_config.quant_method");
    test_refusal("gptq_g32", "\"group_size\": 32", "\"group_size\": 16", "quantization_config.group_size");
    test_refusal("awq_g32", "\"version\": \"gemm\"", "\"version\": \"gemv\"", "quantization_config.version");
    test_wide_gidx();
    test_other_backend();
    return test_summary();
}
