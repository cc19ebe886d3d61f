/* Sliding-window attention (Mistral's sliding_window, Qwen2's
 * use_sliding_window from max_window_layers on):
 *  - the CPU window ops against a double-precision reference that masks
 *    keys by position (i - window < j <= i), over sequences spanning several
 *    64-row query blocks, plainly packed and extending shared prefixes, for
 *    windows inside a block, at and across block edges, and longer than the
 *    sequences (then bit-identical to plain causal attention);
 *  - cached decoding (prefill, then one token at a time, two slots) gives the
 *    logits of a full forward of a windowed model;
 *  - a backend without the window ops refuses such a model by name, and
 *    config.json's sliding-window keys are read as transformers reads them.
 * The model against transformers is test_hf_import (hf_tiny_mistral_sw,
 * hf_tiny_qwen2_sw); finite differences are test_gradcheck. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_reference.h"
#include "kvcache.h"
#include "model.h"
#include "model_config_json.h"
#include "rng.h"
#include "test.h"
#include "util.h"

static void test_ops_match_reference(void) {
    enum { NS = 5, HQ = 4, HKV = 2, HD = 16 };
    int lens[NS] = {150, 70, 1, 129, 64};
    int32_t seq_start[NS + 1] = {0}, seq_prefix[NS] = {-1, 0, -1, 0, -1};
    for (int s = 0; s < NS; s++) seq_start[s + 1] = seq_start[s] + lens[s];
    int N = seq_start[NS], ld = (HQ + 2 * HKV) * HD, ldo = HQ * HD;
    size_t nq = (size_t)N * ld, no = (size_t)N * ldo, nl = (size_t)N * HQ;
    float *qkv = malloc(sizeof(float) * nq), *dout = malloc(sizeof(float) * no);
    float *out = malloc(sizeof(float) * no), *lse = malloc(sizeof(float) * nl), *dqkv = malloc(sizeof(float) * nq);
    float *rout = malloc(sizeof(float) * no), *rlse = malloc(sizeof(float) * nl), *rdqkv = malloc(sizeof(float) * nq);
    float *pout = malloc(sizeof(float) * no), *plse = malloc(sizeof(float) * nl), *pdqkv = malloc(sizeof(float) * nq);
    Rng r;
    rng_seed(&r, 21);
    for (size_t i = 0; i < nq; i++) qkv[i] = 3.0f * (rng_uniform(&r) - 0.5f);
    for (size_t i = 0; i < no; i++) dout[i] = rng_uniform(&r) - 0.5f;
    const Backend *be = &backend_cpu;
    /* inside a block, a block, one past it, across two, longer than everything */
    static const int windows[] = {1, 5, 64, 65, 100, 1000};
    for (int prefixed = 0; prefixed < 2; prefixed++) {
        const int32_t *pre = prefixed ? seq_prefix : NULL;
        for (size_t w = 0; w < sizeof windows / sizeof *windows; w++) {
            int W = windows[w];
            be->attention_forward_window(out, lse, qkv, seq_start, pre, NS, N, HQ, HKV, HD, W);
            be->attention_backward_window(dqkv, dout, out, lse, qkv, seq_start, pre, NS, N, HQ, HKV, HD, W);
            CHECK(be->status() == 0, "window %d: %s", W, align_error());
            reference_attention(rout, rlse, rdqkv, dout, qkv, seq_start, pre, NS, N, HQ, HKV, HD, W);
            double eo = reference_rel_err(out, rout, no), el = reference_rel_err(lse, rlse, nl), ed = reference_rel_err(dqkv, rdqkv, nq);
            printf("window %4d%s: output %.2g, lse %.2g, gradient %.2g (relative to the reference)\n", W,
                   prefixed ? ", prefixed" : "", eo, el, ed);
            CHECK(eo < 1e-5 && el < 1e-5 && ed < 1e-5,
                  "window %d%s differs from the reference: output %.3g, lse %.3g, gradient %.3g", W,
                  prefixed ? " (prefixed)" : "", eo, el, ed);
        }
        /* a window longer than every sequence is plain causal attention, bit for bit */
        be->attention_forward_prefixed(pout, plse, qkv, seq_start, pre, NS, N, HQ, HKV, HD);
        be->attention_backward_prefixed(pdqkv, dout, pout, plse, qkv, seq_start, pre, NS, N, HQ, HKV, HD);
        CHECK(!memcmp(out, pout, no * sizeof(float)) && !memcmp(lse, plse, nl * sizeof(float)) &&
                  !memcmp(dqkv, pdqkv, nq * sizeof(float)),
              "a window longer than the sequences changes plain attention%s", prefixed ? " (prefixed)" : "");
    }
    free(qkv), free(dout), free(out), free(lse), free(dqkv), free(rout), free(rlse), free(rdqkv);
    free(pout), free(plse), free(pdqkv);
}

static void windowed_config(ModelConfig *c) {
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 50, c->dim = 32, c->n_layers = 3, c->n_heads = 4, c->n_kv_heads = 2, c->head_dim = 8;
    c->ffn_dim = 48, c->max_seq_len = 256;
    c->sliding_window = 6, c->window_from_layer = 1; /* layer 0 full, 1 and 2 windowed */
}

/* Prefill 3 tokens, then decode one at a time: each step's logits equal the
 * last-token logits of a full forward over the same tokens. Two slots run
 * side by side with different lengths. */
static void test_cached_decoding(void) {
    ModelConfig c;
    windowed_config(&c);
    Model *m = model_create(&c, &backend_cpu);
    CHECK(m != NULL, "model_create: %s", align_error());
    if (!m) return;
    model_init_random(m, 5);
    for (size_t i = 0; i < m->n_elems; i++) m->params[i] *= 4.0f; /* attention far from uniform */
    enum { T = 40 };
    int32_t tok[2][T];
    Rng r;
    rng_seed(&r, 8);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < T; i++) tok[s][i] = (int32_t)rng_below(&r, c.vocab_size);
    KVCache *kv = kvcache_create(m, 2, T + 4);
    float got[2 * 50], want[50];
    int32_t slots[2] = {0, 1}, pre[2] = {3, 5};
    double worst = 0;
    /* prefill slot 0 with 3 tokens and slot 1 with 5 */
    int32_t buf[8], st[3] = {0, 3, 8};
    memcpy(buf, tok[0], 3 * sizeof(int32_t));
    memcpy(buf + 3, tok[1], 5 * sizeof(int32_t));
    Batch b = {8, 2, buf, st};
    CHECK(model_forward_cached(m, kv, slots, &b, got) == 0, "prefill: %s", align_error());
    for (int len0 = pre[0]; len0 < T - 2; len0++) {
        int len1 = len0 - pre[0] + pre[1];
        for (int s = 0; s < 2; s++) {
            int len = s ? len1 : len0, last = len - 1, fs[2] = {0, len};
            Batch fb = {len, 1, tok[s], fs};
            CHECK(model_forward(m, &fb) == 0 && model_logits(m, &last, 1, want) == 0, "full forward: %s",
                  align_error());
            worst = fmax(worst, reference_rel_err(got + s * c.vocab_size, want, c.vocab_size));
        }
        int32_t step[2] = {tok[0][len0], tok[1][len1]}, ss[3] = {0, 1, 2};
        Batch sb = {2, 2, step, ss};
        CHECK(model_forward_cached(m, kv, slots, &sb, got) == 0, "decode: %s", align_error());
    }
    printf("cached decoding against full forwards: %.2g (relative)\n", worst);
    CHECK(worst < 1e-5, "cached decoding with a window differs from full forwards by %.3g", worst);
    /* the window matters here: without it the last logits move */
    int len = T - 2, last = len - 1, fs[2] = {0, len};
    Batch fb = {len, 1, tok[0], fs};
    model_forward(m, &fb);
    model_logits(m, &last, 1, want);
    m->cfg.sliding_window = 0;
    model_forward(m, &fb);
    model_logits(m, &last, 1, got);
    CHECK(reference_rel_err(got, want, c.vocab_size) > 1e-3, "the window changes nothing in this test (%.3g)",
          reference_rel_err(got, want, c.vocab_size));
    kvcache_free(kv);
    model_free(m);
}

/* A backend without the window ops (CUDA today) refuses the model by name;
 * a model whose window covers no layer is fine there. */
static void test_backend_refuses(void) {
    Backend nowin = backend_cpu;
    nowin.name = "cuda";
    nowin.attention_forward_window = NULL;
    nowin.attention_backward_window = NULL;
    nowin.attention_forward_cached_window = NULL;
    ModelConfig c;
    windowed_config(&c);
    align_error_clear();
    Model *m = model_create(&c, &nowin);
    CHECK(!m && strstr(align_error(), "sliding-window attention") && strstr(align_error(), "cuda backend"),
          "a backend without window ops refuses a windowed model: %s", m ? "(created)" : align_error());
    model_free(m);
    c.window_from_layer = c.n_layers;
    m = model_create(&c, &nowin);
    CHECK(m != NULL, "no windowed layer: accepted (%s)", m ? "" : align_error());
    model_free(m);
}

static int parse(const char *json, ModelConfig *c) {
    return model_config_from_hf_json(json, strlen(json), "config.json", c);
}

#define BASE "\"hidden_size\":32,\"num_hidden_layers\":4,\"num_attention_heads\":4,\"intermediate_size\":48," \
             "\"vocab_size\":50,\"max_position_embeddings\":64"

static void test_config(void) {
    ModelConfig c;
    CHECK(parse("{\"model_type\":\"mistral\"," BASE ",\"sliding_window\":16}", &c) == 0 && c.sliding_window == 16 &&
              c.window_from_layer == 0,
          "mistral: every layer (%s)", align_error());
    CHECK(parse("{\"model_type\":\"mistral\"," BASE ",\"sliding_window\":null}", &c) == 0 && c.sliding_window == 0,
          "mistral, null: none");
    CHECK(parse("{\"model_type\":\"mistral\"," BASE ",\"sliding_window\":64}", &c) == 0 && c.sliding_window == 0,
          "a window as long as the context changes nothing: dropped");
    CHECK(parse("{\"model_type\":\"qwen2\"," BASE ",\"sliding_window\":16,\"use_sliding_window\":false}", &c) == 0 &&
              c.sliding_window == 0,
          "qwen2 without use_sliding_window: none");
    CHECK(parse("{\"model_type\":\"qwen2\"," BASE ",\"sliding_window\":16,\"use_sliding_window\":true,"
                "\"max_window_layers\":2}", &c) == 0 &&
              c.sliding_window == 16 && c.window_from_layer == 2,
          "qwen2: from max_window_layers (%s)", align_error());
    CHECK(parse("{\"model_type\":\"qwen2\"," BASE ",\"sliding_window\":16,\"use_sliding_window\":true}", &c) == 0 &&
              c.sliding_window == 0,
          "qwen2: max_window_layers defaults to 28, past the 4 layers");
    CHECK(parse("{\"model_type\":\"qwen2\"," BASE ",\"sliding_window\":16,\"use_sliding_window\":true,"
                "\"max_window_layers\":0,\"layer_types\":[\"full_attention\",\"full_attention\","
                "\"sliding_attention\",\"sliding_attention\"]}", &c) == 0 &&
              c.window_from_layer == 2,
          "layer_types wins (%s)", align_error());
    CHECK(parse("{\"model_type\":\"mistral\"," BASE ",\"sliding_window\":16,\"layer_types\":[\"sliding_attention\","
                "\"full_attention\",\"sliding_attention\",\"full_attention\"]}", &c) == -1 &&
              strstr(align_error(), "layer_types"),
          "alternating layers refused: %s", align_error());
    CHECK(parse("{\"model_type\":\"mistral\"," BASE ",\"sliding_window\":-3}", &c) == -1 &&
              strstr(align_error(), "sliding_window"),
          "negative window refused: %s", align_error());
    /* written back as transformers reads it */
    parse("{\"model_type\":\"mistral\"," BASE ",\"sliding_window\":16}", &c);
    char *j = model_config_to_hf_json(&c);
    ModelConfig d;
    CHECK(j && strstr(j, "\"MistralForCausalLM\"") && parse(j, &d) == 0 && d.sliding_window == 16 &&
              d.window_from_layer == 0,
          "mistral written as mistral: %s", j ? j : align_error());
    free(j);
    parse("{\"model_type\":\"qwen2\"," BASE ",\"sliding_window\":16,\"use_sliding_window\":true,"
          "\"max_window_layers\":3}", &c);
    j = model_config_to_hf_json(&c);
    CHECK(j && strstr(j, "\"Qwen2ForCausalLM\"") && parse(j, &d) == 0 && d.sliding_window == 16 &&
              d.window_from_layer == 3,
          "qwen2 written back: %s", j ? j : align_error());
    free(j);
}

int main(void) {
    test_ops_match_reference();
    test_cached_decoding();
    test_backend_refuses();
    test_config();
    return test_summary();
}
