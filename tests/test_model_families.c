/* test_model_families: Qwen3 (per-head q/k RMSNorm, head_dim != dim/heads)
 * and Phi-3 (fused qkv_proj / gate_up_proj files, sliding window) against
 * transformers on the tiny random models of tests/fixtures/family/
 * (make_family_fixtures.py): log-probs and last-token logits from the
 * Hugging Face directory and from the GGUF file, gradients of the summed
 * log-probs, cached decoding, export -> import round trips (HF directory and
 * .ckpt) with equal logits, and the config errors for what is not supported. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvcache.h"
#include "model.h"
#include "model_config_json.h"
#include "model_load.h"
#include "lora.h"
#include "peft.h"
#include "phi3_fused.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

#define FIX ALIGN_TEST_DIR "/fixtures/family/"

typedef struct {
    int n_seqs, n_tokens;
    int32_t tokens[64], seq_start[8], targets[64], last[8];
    float logprobs[64]; /* per token with a target */
    float *last_logits; /* [n_seqs, vocab] */
    float *decode_logits; /* [len(seq 0), vocab]: transformers' cached decoding, step by step; or NULL */
    int vocab;
} Reference;

static int read_reference(const char *dir, Reference *r) {
    char path[512];
    snprintf(path, sizeof path, "%s/reference.json", dir);
    size_t len;
    char *text = align_read_file(path, &len);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    if (!root) return -1;
    memset(r, 0, sizeof *r);
    const cJSON *seqs = cJSON_GetObjectItem(root, "sequences"), *lps = cJSON_GetObjectItem(root, "logprobs");
    const cJSON *last = cJSON_GetObjectItem(root, "last_logits");
    int s = 0, n = 0;
    r->vocab = cJSON_GetArraySize(cJSON_GetArrayItem(last, 0));
    r->last_logits = malloc((size_t)cJSON_GetArraySize(seqs) * r->vocab * sizeof(float));
    for (const cJSON *seq = seqs->child; seq; seq = seq->next, s++) {
        r->seq_start[s] = n;
        int k = 0;
        for (const cJSON *t = seq->child; t; t = t->next, k++) r->tokens[n + k] = t->valueint;
        const cJSON *lp = cJSON_GetArrayItem(lps, s);
        for (int i = 0; i < k; i++) {
            r->targets[n + i] = i + 1 < k ? r->tokens[n + i + 1] : -1;
            r->logprobs[n + i] = i + 1 < k ? (float)cJSON_GetArrayItem(lp, i)->valuedouble : 0.0f;
        }
        const cJSON *ll = cJSON_GetArrayItem(last, s);
        for (int v = 0; v < r->vocab; v++) r->last_logits[(size_t)s * r->vocab + v] = (float)cJSON_GetArrayItem(ll, v)->valuedouble;
        n += k;
        r->last[s] = n - 1;
    }
    const cJSON *dec = cJSON_GetObjectItem(root, "decode_logits");
    if (dec) {
        int T = cJSON_GetArraySize(dec);
        r->decode_logits = malloc((size_t)T * r->vocab * sizeof(float));
        for (int t = 0; t < T; t++)
            for (int v = 0; v < r->vocab; v++)
                r->decode_logits[(size_t)t * r->vocab + v] =
                    (float)cJSON_GetArrayItem(cJSON_GetArrayItem(dec, t), v)->valuedouble;
    }
    r->n_seqs = s;
    r->n_tokens = n;
    r->seq_start[s] = n;
    cJSON_Delete(root);
    return 0;
}

/* Largest |got - want| over the log-probs and the last-token logits. */
static double max_err(Model *m, const Reference *r, float *logits_out) {
    Batch b = {r->n_tokens, r->n_seqs, r->tokens, r->seq_start, NULL};
    float lp[64], *logits = malloc((size_t)r->n_seqs * r->vocab * sizeof(float));
    if (model_forward(m, &b) || model_token_logprobs(m, r->targets, lp) ||
        model_logits(m, r->last, r->n_seqs, logits)) {
        fprintf(stderr, "forward: %s\n", align_error());
        free(logits);
        return INFINITY;
    }
    double worst = 0;
    for (int i = 0; i < r->n_tokens; i++)
        if (r->targets[i] >= 0) worst = fmax(worst, fabs(lp[i] - r->logprobs[i]));
    for (int i = 0; i < r->n_seqs * r->vocab; i++) worst = fmax(worst, fabs(logits[i] - r->last_logits[i]));
    if (logits_out) memcpy(logits_out, logits, (size_t)r->n_seqs * r->vocab * sizeof(float));
    free(logits);
    return worst;
}

/* Gradients of the summed log-probs against grads.safetensors (HF names;
 * Phi-3's fused tensors compare with our adjacent members' gradients). */
static void check_grads(Model *m, const Reference *r, const char *dir) {
    Batch b = {r->n_tokens, r->n_seqs, r->tokens, r->seq_start, NULL};
    float dlogp[64];
    for (int i = 0; i < r->n_tokens; i++) dlogp[i] = 1.0f;
    model_zero_grad(m);
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, r->targets, NULL) == 0 &&
              model_backward(m, dlogp, NULL) == 0,
          "backward: %s", align_error());
    char path[512];
    snprintf(path, sizeof path, "%s/grads.safetensors", dir);
    StFile f;
    CHECK(st_open(&f, path) == 0, "%s", align_error());
    int compared = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        ParamInfo group;
        int fused = phi3_fused_group(&m->cfg, p, &group);
        if (fused == 2) continue;
        if (fused == 1) p = &group;
        const StTensor *t = st_find(&f, p->name);
        if (!t) continue;
        float *want = malloc(p->numel * sizeof(float));
        CHECK(st_read_f32(&f, t, want) == 0 && (size_t)t->shape[0] * (t->ndim > 1 ? t->shape[1] : 1) == p->numel,
              "%s: %s", p->name, align_error());
        const float *got = m->grads + p->grad_offset;
        double err = 0, scale = 0;
        for (size_t k = 0; k < p->numel; k++) {
            err = fmax(err, fabs(got[k] - want[k]));
            scale = fmax(scale, fabs(want[k]));
        }
        printf("  grad %-42s max |diff| / max |grad| = %.2g (max |grad| %.3g)\n", p->name, err / scale, scale);
        CHECK(scale > 0 && err <= 1e-4 * scale, "%s: gradient differs from transformers by %.3g of %.3g", p->name,
              err, scale);
        compared++;
        free(want);
    }
    CHECK(compared == (int)f.n_tensors, "compared %d of the %d gradients in %s", compared, (int)f.n_tensors, path);
    st_close(&f);
}

/* max |got - want| / max |want| */
static double rel_err(const float *got, const float *want, int n) {
    double e = 0, s = 0;
    for (int i = 0; i < n; i++) {
        e = fmax(e, fabs(got[i] - want[i]));
        s = fmax(s, fabs(want[i]));
    }
    return s > 0 ? e / s : e;
}

/* Cached decoding (generate's path) gives the full forward's logits; with
 * longrope only up to original_max_position_embeddings tokens: past it
 * the full forward rotates every key by the long factors while the cache
 * keeps the keys it rotated with the short ones, as transformers' cache
 * does, so there each step is compared with transformers' own cached
 * decoding (decode_logits) instead. */
static void check_cached(Model *m, const Reference *r) {
    int V = m->cfg.vocab_size, T = r->seq_start[1];
    int same_as_full = m->cfg.rope_scaling == ROPE_SCALING_LONGROPE ? m->cfg.rope_original_max_pos : T;
    KVCache *kv = kvcache_create(m, 1, T);
    float *got = malloc(V * sizeof(float)), *want = malloc(V * sizeof(float));
    double worst = 0, worst_hf = 0;
    int slot = 0;
    for (int len = 1; len <= T; len++) {
        int32_t st[2] = {0, 1}, fs[2] = {0, len}, last = len - 1;
        Batch one = {1, 1, r->tokens + len - 1, st, NULL}, full = {len, 1, r->tokens, fs, NULL};
        CHECK(model_forward_cached(m, kv, &slot, &one, got) == 0, "decode: %s", align_error());
        if (r->decode_logits) {
            double e = 0;
            for (int v = 0; v < V; v++) e = fmax(e, fabs(got[v] - r->decode_logits[(size_t)(len - 1) * V + v]));
            worst_hf = fmax(worst_hf, e);
        }
        if (len > same_as_full) continue;
        CHECK(model_forward(m, &full) == 0 && model_logits(m, &last, 1, want) == 0, "forward: %s", align_error());
        worst = fmax(worst, rel_err(got, want, V));
    }
    printf("  cached decoding against full forwards (%d steps): %.2g (relative)\n", same_as_full, worst);
    CHECK(worst < 1e-5, "cached decoding differs from the full forward by %.3g", worst);
    if (r->decode_logits) {
        printf("  cached decoding of %d tokens across original_max %d against transformers': %.2g\n", T,
               m->cfg.rope_original_max_pos, worst_hf);
        CHECK(worst_hf < 1e-4, "cached decoding differs from transformers' by %.3g", worst_hf);
    }
    kvcache_free(kv);
    free(got), free(want);
}

/* LoRA adapters (on q|k|v, under Qwen3's norms, and on Phi-3's groups)
 * give the logits of their merge into the base, and off, the base's. */
static void check_lora_merge(const char *dir, const Reference *r, const char *name) {
    ModelBundle b;
    CHECK(model_load_any(dir, &backend_cpu, 0, &b) == 0, "%s", align_error());
    if (!b.model) return;
    Model *m = b.model;
    size_t n = (size_t)r->n_seqs * r->vocab;
    float *base = malloc(n * sizeof(float)), *on = malloc(n * sizeof(float)), *merged = malloc(n * sizeof(float)),
          *off = malloc(n * sizeof(float));
    max_err(m, r, base);
    LoraConfig lc;
    lora_config_defaults(&lc);
    lc.rank = 2;
    lc.dropout = 0;
    CHECK(model_lora_attach(m, &lc) == 0, "%s: attach: %s", name, align_error());
    unsigned x = 99;
    for (int i = 0; i < m->n_params; i++)
        if (m->info[i].lora)
            for (size_t k = 0; k < m->info[i].numel; k++) {
                x = x * 1103515245u + 12345u;
                m->params[m->info[i].offset + k] = ((x >> 9) / 4194304.0f - 1.0f) * 0.3f;
            }
    max_err(m, r, on);
    model_lora_enable(m, 0);
    max_err(m, r, off);
    model_lora_enable(m, 1);
    CHECK(model_lora_merge(m) == 0, "%s: merge: %s", name, align_error());
    max_err(m, r, merged);
    double moved = rel_err(on, base, (int)n), e = rel_err(merged, on, (int)n);
    printf("  LoRA: adapters move the logits by %.2g, merged equals adapted within %.2g\n", moved, e);
    CHECK(moved > 1e-2 && e < 1e-5 && !memcmp(off, base, n * sizeof(float)),
          "%s: LoRA adapted %.3g, merged %.3g, off equals base %d", name, moved, e, !memcmp(off, base, n * sizeof(float)));
    model_bundle_free(&b);
    free(base), free(on), free(merged), free(off);
}

static void check_family(const char *name, int qk_norm, int phi3) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, FIX "%s", name);
    printf("%s\n", name);
    Reference r;
    CHECK(read_reference(dir, &r) == 0, "%s/reference.json unreadable", dir);
    ModelBundle b;
    CHECK(model_load_any(dir, &backend_cpu, 0, &b) == 0, "import %s: %s", dir, align_error());
    Model *m = b.model;
    if (!m) return;
    int window = m->cfg.sliding_window, rotary = m->cfg.rotary_dim, scaling = m->cfg.rope_scaling;
    CHECK(m->cfg.qk_norm == qk_norm && m->cfg.phi3 == phi3, "%s: qk_norm %d phi3 %d", name, m->cfg.qk_norm,
          m->cfg.phi3);
    float *logits = malloc((size_t)r.n_seqs * r.vocab * sizeof(float)), *again = malloc((size_t)r.n_seqs * r.vocab * sizeof(float));
    double e = max_err(m, &r, logits);
    printf("  HF import: log-probs and logits within %.2g of transformers\n", e);
    CHECK(e < 1e-4, "%s: HF import differs from transformers by %.3g", name, e);
    check_grads(m, &r, dir);
    check_cached(m, &r);
    check_lora_merge(dir, &r, name);

    /* export -> import: HF directory, .ckpt and an f32 GGUF give the same logits */
    char tmp[] = "/tmp/test_families_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    const char *outs[3] = {"hf", "m.ckpt", "m.gguf"};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", tmp, outs[k]);
        CHECK(model_save_as(path, &b, k == 2 ? "f32" : NULL) == 0, "export %s: %s", path, align_error());
        ModelBundle b2;
        CHECK(model_load_any(path, &backend_cpu, 0, &b2) == 0, "re-import %s: %s", path, align_error());
        if (!b2.model) continue;
        CHECK(b2.model->cfg.qk_norm == qk_norm && b2.model->cfg.phi3 == phi3 &&
                  b2.model->cfg.sliding_window == m->cfg.sliding_window && b2.model->cfg.head_dim == m->cfg.head_dim &&
                  b2.model->cfg.rotary_dim == m->cfg.rotary_dim && b2.model->cfg.rope_scaling == m->cfg.rope_scaling &&
                  b2.model->cfg.rope_original_max_pos == m->cfg.rope_original_max_pos &&
                  b2.model->cfg.rope_attn_factor == m->cfg.rope_attn_factor &&
                  !memcmp(b2.model->cfg.rope_long_factor, m->cfg.rope_long_factor, sizeof m->cfg.rope_long_factor) &&
                  !memcmp(b2.model->cfg.rope_short_factor, m->cfg.rope_short_factor, sizeof m->cfg.rope_short_factor),
              "%s: the family did not survive the round trip", path);
        max_err(b2.model, &r, again);
        int same = !memcmp(logits, again, (size_t)r.n_seqs * r.vocab * sizeof(float));
        printf("  %s round trip: logits %s\n", outs[k], same ? "bit-identical" : "DIFFER");
        CHECK(same, "%s: logits after export -> import differ", path);
        model_bundle_free(&b2);
    }
    /* the exported HF directory names the family and fuses Phi-3's tensors */
    snprintf(path, sizeof path, "%s/hf/config.json", tmp);
    char *cfg = align_read_file(path, NULL);
    CHECK(cfg && strstr(cfg, qk_norm ? "\"qwen3\"" : "\"phi3\""), "%s names no %s", path, name);
    free(cfg);
    snprintf(path, sizeof path, "%s/hf/model.safetensors", tmp);
    StFile f;
    if (st_open(&f, path) == 0) {
        CHECK((st_find(&f, "model.layers.1.self_attn.qkv_proj.weight") != NULL) == phi3 &&
                  (st_find(&f, "model.layers.1.mlp.gate_up_proj.weight") != NULL) == phi3 &&
                  (st_find(&f, "model.layers.1.self_attn.q_proj.weight") != NULL) == !phi3 &&
                  (st_find(&f, "model.layers.0.self_attn.k_norm.weight") != NULL) == qk_norm,
              "%s: tensor names are not the family's", path);
        st_close(&f);
    }
    snprintf(path, sizeof path, "rm -rf '%s'", tmp);
    CHECK(system(path) == 0, "cleanup");
    model_bundle_free(&b);

    /* the GGUF file llama.cpp's converter would write */
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    CHECK(model_load_any(path, &backend_cpu, 0, &b) == 0, "import %s: %s", path, align_error());
    if (b.model) {
        CHECK(b.model->cfg.qk_norm == qk_norm && b.model->cfg.phi3 == phi3 &&
                  b.model->cfg.sliding_window == window && b.model->cfg.rotary_dim == rotary &&
                  b.model->cfg.rope_scaling == scaling,
              "%s: family (rotary dims %d, rope scaling %d)", path, b.model->cfg.rotary_dim,
              b.model->cfg.rope_scaling);
        e = max_err(b.model, &r, NULL);
        printf("  GGUF import: within %.2g of transformers\n", e);
        CHECK(e < 1e-4, "%s: GGUF import differs from transformers by %.3g", path, e);
        model_bundle_free(&b);
    }
    /* a quantised base (QLoRA) from either file: the fused groups stay one
     * type and land in their rows (a misplaced block would move the logits
     * by far more than q8_0's rounding) */
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, k ? "%s/model.gguf" : "%s", dir);
        CHECK(model_load_any_quant(path, &backend_cpu, 0, QUANT_Q8_0, &b) == 0, "q8_0 import %s: %s", path,
              align_error());
        if (!b.model) continue;
        int nq = 0;
        for (int i = 0; i < b.model->n_params; i++) nq += b.model->info[i].qtype == QUANT_Q8_0;
        const ParamInfo *q = model_find_param(b.model, "model.layers.1.self_attn.q_proj.weight");
        const ParamInfo *v = model_find_param(b.model, "model.layers.1.self_attn.v_proj.weight");
        const ParamInfo *u = model_find_param(b.model, "model.layers.1.mlp.up_proj.weight");
        CHECK(q && v && u && q->qtype == QUANT_Q8_0 && v->qtype == QUANT_Q8_0 && u->qtype == QUANT_Q8_0,
              "%s: q|k|v and gate|up are quantised as groups", name);
        max_err(b.model, &r, again);
        double rel = rel_err(again, logits, r.n_seqs * r.vocab);
        printf("  q8_0 base from %s (%d tensors quantised): logits within %.2g (relative) of fp32\n",
               k ? "GGUF" : "HF", nq, rel);
        CHECK(rel < 5e-2, "%s: the q8_0 base moves the logits by %.3g", path, rel);
        if (k == 0) { /* exported dequantised (member by member into a fused group), it computes the same */
            char out[] = "/tmp/test_families_q_XXXXXX", cmd[64];
            CHECK(mkdtemp(out) != NULL, "mkdtemp");
            float *qlogits = malloc((size_t)r.n_seqs * r.vocab * sizeof(float));
            memcpy(qlogits, again, (size_t)r.n_seqs * r.vocab * sizeof(float));
            ModelBundle b2;
            CHECK(model_save_any(out, &b) == 0 && model_load_any(out, &backend_cpu, 0, &b2) == 0,
                  "q8_0 export %s: %s", out, align_error());
            if (b2.model) {
                max_err(b2.model, &r, again);
                double d = rel_err(again, qlogits, r.n_seqs * r.vocab);
                printf("  q8_0 base exported to HF and re-imported: logits within %.2g (relative)\n", d);
                CHECK(d < 1e-4, "%s: the dequantised export differs by %.3g", name, d);
                model_bundle_free(&b2);
            }
            free(qlogits);
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
            CHECK(system(cmd) == 0, "cleanup");
        }
        model_bundle_free(&b);
    }
    free(logits), free(again), free(r.last_logits), free(r.decode_logits);
}

static int parse(const char *json, ModelConfig *c) { return model_config_from_hf_json(json, strlen(json), "config.json", c); }

#define BASE "\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"intermediate_size\": 64, \"vocab_size\": 300"

/* What the families' config.json files say that we read or refuse. */
static void check_configs(void) {
    ModelConfig c;
    CHECK(parse("{\"model_type\": \"qwen3\", " BASE ", \"head_dim\": 12}", &c) == 0 && c.qk_norm && !c.qkv_bias &&
              c.head_dim == 12 && !c.phi3,
          "qwen3 config: %s", align_error());
    CHECK(parse("{\"model_type\": \"phi3\", " BASE ", \"sliding_window\": 2047, \"max_position_embeddings\": 4096}",
                &c) == 0 && c.phi3 && !c.qk_norm && c.sliding_window == 2047 && c.head_dim == 8,
          "phi3 config: %s", align_error());
    /* Phi-3.5's legacy "su" with factor lists of head_dim / 2 = 4; the
     * attention factor from max_position_embeddings / original, as
     * transformers derives it when the file has none */
    CHECK(parse("{\"model_type\": \"phi3\", " BASE ", \"max_position_embeddings\": 131072, "
                "\"original_max_position_embeddings\": 4096, \"rope_scaling\": {\"type\": \"su\", "
                "\"short_factor\": [1, 1.5, 2, 3], \"long_factor\": [2, 4, 8, 16]}}", &c) == 0 &&
              c.rope_scaling == ROPE_SCALING_LONGROPE && c.rope_original_max_pos == 4096 &&
              c.rope_long_factor[3] == 16.0f && c.rope_short_factor[1] == 1.5f &&
              fabsf(c.rope_attn_factor - (float)sqrt(1 + log(32.0) / log(4096.0))) < 1e-6f,
          "longrope config: %s", align_error());
    CHECK(parse("{\"model_type\": \"phi3\", " BASE ", \"rope_scaling\": {\"type\": \"longrope\", "
                "\"original_max_position_embeddings\": 16, \"short_factor\": [1], \"long_factor\": [1]}}", &c) != 0 &&
              strstr(align_error(), "short_factor must be a list of 4"),
          "longrope factor lists of the wrong length are named: %s", align_error());
    CHECK(parse("{\"model_type\": \"phi3\", " BASE ", \"head_dim\": 16, \"partial_rotary_factor\": 0.75}", &c) == 0 &&
              c.rotary_dim == 12,
          "partial_rotary_factor 0.75 of head_dim 16 rotates 12 dims: %s (%d)", align_error(), c.rotary_dim);
    CHECK(parse("{\"model_type\": \"phi3\", " BASE ", \"partial_rotary_factor\": 0.625}", &c) != 0 &&
              strstr(align_error(), "partial_rotary_factor 0.625 gives 5"),
          "an odd number of rotary dims is refused by name: %s", align_error());
    CHECK(parse("{\"model_type\": \"phi\", " BASE "}", &c) != 0 && strstr(align_error(), "\"phi\"") &&
              strstr(align_error(), "qwen3") && strstr(align_error(), "phi3"),
          "an unknown model_type is named with the supported list: %s", align_error());
}

/* Phi-3's LoRA adapters are peft's: one per fused module (qkv_proj,
 * gate_up_proj), named and shaped as peft names them on Phi3ForCausalLM;
 * merged they add scale * B A over the group's rows, and the adapter
 * directory loads back onto the base with the same logits. (peft itself
 * loading such a directory: docs/DECISIONS.md.) */
static void check_phi3_adapter(const Reference *r) {
    ModelBundle b, b2;
    CHECK(model_load_any(FIX "phi3", &backend_cpu, 0, &b) == 0, "%s", align_error());
    if (!b.model) return;
    Model *m = b.model;
    LoraConfig lc;
    lora_config_defaults(&lc);
    lc.rank = 4;
    lc.alpha = 8;
    lc.dropout = 0;
    CHECK(lora_parse_targets("q_proj,gate_up_proj,o_proj", &lc.targets) == 0 && model_lora_attach(m, &lc) == 0,
          "attach: %s", align_error());
    unsigned x = 12345;
    for (int i = 0; i < m->n_params; i++)
        if (m->info[i].lora)
            for (size_t k = 0; k < m->info[i].numel; k++) {
                x = x * 1103515245u + 12345u;
                m->params[m->info[i].offset + k] = ((x >> 9) / 4194304.0f - 1.0f) * 0.2f;
            }
    size_t n = (size_t)r->n_seqs * r->vocab;
    float *adapted = malloc(n * sizeof(float)), *loaded = malloc(n * sizeof(float));
    max_err(m, r, adapted);
    char tmp[] = "/tmp/test_families_XXXXXX", path[600];
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/adapter", tmp);
    CHECK(peft_save_adapter(path, m, "phi3") == 0, "peft_save_adapter: %s", align_error());
    /* the directory loads back onto a fresh base: same logits */
    CHECK(model_load_any(FIX "phi3", &backend_cpu, 0, &b2) == 0 && peft_load_adapter(path, b2.model, 1) == 0,
          "peft_load_adapter: %s", align_error());
    if (b2.model) {
        max_err(b2.model, r, loaded);
        CHECK(!memcmp(adapted, loaded, n * sizeof(float)), "the re-loaded adapter gives other logits");
        model_bundle_free(&b2);
    }
    snprintf(path, sizeof path, "%s/adapter/adapter_config.json", tmp);
    char *text = align_read_file(path, NULL);
    CHECK(text && strstr(text, "\"qkv_proj\"") && strstr(text, "\"gate_up_proj\"") && !strstr(text, "\"q_proj\""),
          "adapter_config.json targets the fused modules: %s", text ? text : "");
    free(text);
    /* the fused groups' weights before merging */
    const ParamInfo *q = model_find_param(m, "model.layers.1.self_attn.q_proj.weight");
    const ParamInfo *g = model_find_param(m, "model.layers.1.mlp.gate_proj.weight");
    ParamInfo gq, gg;
    phi3_fused_group(&m->cfg, q, &gq);
    phi3_fused_group(&m->cfg, g, &gg);
    const ParamInfo *groups[2] = {&gq, &gg};
    const char *paths[2] = {"self_attn.qkv_proj", "mlp.gate_up_proj"};
    float *before[2];
    for (int k = 0; k < 2; k++) {
        before[k] = malloc(groups[k]->numel * sizeof(float));
        memcpy(before[k], m->params + groups[k]->offset, groups[k]->numel * sizeof(float));
    }
    CHECK(model_lora_merge(m) == 0, "merge: %s", align_error());
    snprintf(path, sizeof path, "%s/adapter/adapter_model.safetensors", tmp);
    StFile f;
    CHECK(st_open(&f, path) == 0, "%s", align_error());
    CHECK(!st_find(&f, "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight") &&
              st_find(&f, "base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight"),
          "adapters are on the fused modules and o_proj");
    for (int k = 0; k < 2; k++) {
        char nm[128];
        snprintf(nm, sizeof nm, "base_model.model.model.layers.1.%s.lora_A.weight", paths[k]);
        const StTensor *ta = st_find(&f, nm);
        snprintf(nm, sizeof nm, "base_model.model.model.layers.1.%s.lora_B.weight", paths[k]);
        const StTensor *tb = st_find(&f, nm);
        CHECK(ta && tb, "%s has adapters for %s", path, paths[k]);
        if (!ta || !tb) continue;
        int R = (int)ta->shape[0], C = (int)ta->shape[1], OC = (int)tb->shape[0];
        CHECK(R == 4 && OC == groups[k]->shape[0] && C == groups[k]->shape[1] && tb->shape[1] == R, "%s shapes", paths[k]);
        float *A = malloc((size_t)R * C * sizeof(float)), *B = malloc((size_t)OC * R * sizeof(float));
        st_read_f32(&f, ta, A);
        st_read_f32(&f, tb, B);
        double scale = lc.alpha / lc.rank, err = 0, moved = 0;
        for (int i = 0; i < OC; i++)
            for (int j = 0; j < C; j++) {
                double w = before[k][(size_t)i * C + j];
                for (int t = 0; t < R; t++) w += scale * B[(size_t)i * R + t] * A[(size_t)t * C + j];
                float merged = m->params[groups[k]->offset + (size_t)i * C + j];
                err = fmax(err, fabs(w - merged));
                moved = fmax(moved, fabs(merged - before[k][(size_t)i * C + j]));
            }
        printf("phi3 adapter %s: W + (alpha/r) B A over the fused rows equals our merge within %.2g (moved %.3g)\n",
               paths[k], err, moved);
        CHECK(err < 1e-6 && moved > 1e-3, "%s: fused adapter merge differs by %.3g (moved %.3g)", paths[k], err, moved);
        free(A), free(B), free(before[k]);
    }
    st_close(&f);
    snprintf(path, sizeof path, "rm -rf '%s'", tmp);
    CHECK(system(path) == 0, "cleanup");
    free(adapted), free(loaded);
    model_bundle_free(&b);
}

/* A backend without the q/k norm op (CUDA today) refuses a Qwen3 by name. */
static void check_backend_refuses(void) {
    Backend nb = backend_cpu;
    nb.name = "test";
    nb.head_rmsnorm_forward = NULL;
    nb.head_rmsnorm_backward = NULL;
    ModelConfig c;
    CHECK(parse("{\"model_type\": \"qwen3\", " BASE ", \"head_dim\": 12}", &c) == 0, "%s", align_error());
    Model *m = model_create(&c, &nb);
    CHECK(!m && strstr(align_error(), "q/k norms") && strstr(align_error(), "test backend"),
          "a backend without head_rmsnorm refuses Qwen3: %s", align_error());
    model_free(m);
    c.qk_norm = 0; /* the same sizes without the norms are fine there */
    m = model_create(&c, &nb);
    CHECK(m != NULL, "without q/k norms: %s", align_error());
    model_free(m);
    /* nor without rope_ext (CUDA today): Phi-4-mini's partial rotary */
    nb.rope_ext_forward = NULL;
    nb.rope_ext_backward = NULL;
    CHECK(parse("{\"model_type\": \"phi3\", " BASE ", \"head_dim\": 16, \"partial_rotary_factor\": 0.5}", &c) == 0,
          "%s", align_error());
    m = model_create(&c, &nb);
    CHECK(!m && strstr(align_error(), "partial rotary") && strstr(align_error(), "use --device cpu"),
          "a backend without rope_ext refuses partial rotary: %s", align_error());
    model_free(m);
}

int main(void) {
    check_backend_refuses();
    check_configs();
    check_family("qwen3", 1, 0);
    check_family("phi3", 0, 1);
    check_family("phi3_longrope", 0, 1);
    check_family("phi3_partial", 0, 1);
    Reference r;
    if (read_reference(FIX "phi3", &r) == 0) {
        check_phi3_adapter(&r);
        free(r.last_logits);
    }
    return test_summary();
}
