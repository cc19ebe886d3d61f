/* Gemma 2 and Gemma 3 (text) against transformers on tiny random models
 * (tests/fixtures/make_gemma_fixtures.py): per-token log-probs (soft caps,
 * query_pre_attn_scalar, sliding layers, GeGLU, sandwich norms, (1 + w)
 * norms, embedding scale, q/k norms, per-layer RoPE) and the gradient of
 * every parameter (and the backward over leading rows = the full one);
 * cached decoding against the full forward; export to a Hugging Face
 * directory and back; the GGUF llama.cpp's converter writes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "gguf.h"
#include "hf_export.h"
#include "hf_import.h"
#include "kvcache.h"
#include "model.h"
#include "model_bundle.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

#define FIX ALIGN_TEST_DIR "/fixtures/gemma/"

typedef struct {
    int n_seqs, N;
    int32_t tokens[64], seq_start[8], targets[64];
    float want_lp[64], weight[64];
} Ref;

static int read_ref(const char *name, Ref *r) {
    char path[512];
    snprintf(path, sizeof path, FIX "%s/reference.json", name);
    size_t len;
    char *text = align_read_file(path, &len);
    if (!text) return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    memset(r, 0, sizeof *r);
    const cJSON *seqs = cJSON_GetObjectItem(j, "sequences"), *lps = cJSON_GetObjectItem(j, "logprobs"),
                *ws = cJSON_GetObjectItem(j, "weights");
    for (int s = 0; s < cJSON_GetArraySize(seqs); s++) {
        const cJSON *seq = cJSON_GetArrayItem(seqs, s);
        r->seq_start[s] = r->N;
        for (int i = 0; i < cJSON_GetArraySize(seq); i++) {
            r->tokens[r->N] = cJSON_GetArrayItem(seq, i)->valueint;
            r->want_lp[r->N] = (float)cJSON_GetArrayItem(cJSON_GetArrayItem(lps, s), i)->valuedouble;
            r->weight[r->N] = (float)cJSON_GetArrayItem(cJSON_GetArrayItem(ws, s), i)->valuedouble;
            r->N++;
        }
        r->n_seqs++;
    }
    r->seq_start[r->n_seqs] = r->N;
    cJSON_Delete(j);
    Batch b = {.n_tokens = r->N, .n_seqs = r->n_seqs, .tokens = r->tokens, .seq_start = r->seq_start};
    batch_next_token_targets(&b, r->targets);
    return 0;
}

static Batch ref_batch(const Ref *r) {
    return (Batch){.n_tokens = r->N, .n_seqs = r->n_seqs, .tokens = r->tokens, .seq_start = r->seq_start};
}

/* Largest |ours - transformers'| over the log-probs. */
static double logprob_diff(Model *m, const Ref *r) {
    Batch b = ref_batch(r);
    float lp[64];
    if (model_forward(m, &b) || model_token_logprobs(m, r->targets, lp)) {
        fprintf(stderr, "forward: %s\n", align_error());
        return INFINITY;
    }
    double worst = 0;
    for (int i = 0; i < r->N; i++) worst = fmax(worst, fabs(lp[i] - r->want_lp[i]));
    return worst;
}

static void check_gradients(const char *name, Model *m, const Ref *r) {
    char path[512];
    snprintf(path, sizeof path, FIX "%s/grads.safetensors", name);
    StFile f;
    CHECK(st_open(&f, path) == 0, "%s: %s", path, align_error());
    model_zero_grad(m);
    Batch b = ref_batch(r);
    float lp[64];
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, r->targets, lp) == 0 &&
              model_backward(m, r->weight, NULL) == 0,
          "%s: backward: %s", name, align_error());
    float *ours = malloc(m->n_grad_elems * sizeof(float));
    m->be->to_host(ours, m->grads, m->n_grad_elems * sizeof(float));
    int n_checked = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        const StTensor *t = st_find(&f, p->name);
        CHECK(t != NULL, "%s: no transformers gradient for %s", name, p->name);
        if (!t || p->grad_offset < 0) continue;
        float *want = malloc(p->numel * sizeof(float));
        st_read_f32(&f, t, want);
        double scale = 0, diff = 0;
        for (size_t k = 0; k < p->numel; k++) {
            scale = fmax(scale, fabs(want[k]));
            diff = fmax(diff, fabs(ours[p->grad_offset + k] - want[k]));
        }
        double rel = diff / fmax(scale, 1e-3);
        if (rel > worst) worst = rel, worst_name = p->name;
        CHECK(rel < 1e-4, "%s: gradient of %s differs from transformers' by %.3g (relative to its largest %.3g)", name,
              p->name, rel, scale);
        n_checked++;
        free(want);
    }
    printf("%s: %d gradients, largest difference %.2g relative (%s)\n", name, n_checked, worst, worst_name);
    free(ours);
    st_close(&f);
}

/* model_backward_rows over the first sequence (KTO's pairs-last pass) is
 * the full backward with the second sequence's weights zeroed (Gemma's
 * post norms, GeGLU, soft caps and q/k norms over the leading rows). */
static void check_backward_rows(const char *name, Model *m, const Ref *r) {
    Batch b = ref_batch(r);
    float lp[64], w[64];
    size_t n = m->n_grad_elems;
    float *full = malloc(n * sizeof(float)), *rows = malloc(n * sizeof(float));
    for (int i = 0; i < r->N; i++) w[i] = i < r->seq_start[1] ? r->weight[i] : 0.0f;
    model_zero_grad(m);
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, r->targets, lp) == 0 &&
              model_backward(m, w, NULL) == 0,
          "%s: backward: %s", name, align_error());
    m->be->to_host(full, m->grads, n * sizeof(float));
    model_zero_grad(m);
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, r->targets, lp) == 0 &&
              model_backward_rows(m, w, NULL, r->seq_start[1]) == 0,
          "%s: backward_rows: %s", name, align_error());
    m->be->to_host(rows, m->grads, n * sizeof(float));
    double scale = 0, diff = 0;
    for (size_t k = 0; k < n; k++) scale = fmax(scale, fabs(full[k])), diff = fmax(diff, fabs(full[k] - rows[k]));
    CHECK(scale > 0 && diff <= 1e-5 * scale, "%s: backward over the first sequence differs from the full one by %.3g "
          "(largest gradient %.3g)", name, diff, scale);
    free(full), free(rows);
}

/* Prefill 3 tokens, then one at a time: each step's logits equal the full
 * forward's logits at that position (soft caps, windows, norms included). */
static void check_decode(const char *name, Model *m, const Ref *r) {
    int T = r->seq_start[1], V = m->cfg.vocab_size;
    Batch full = {.n_tokens = T, .n_seqs = 1, .tokens = r->tokens, .seq_start = (int32_t[]){0, T}};
    float *want = malloc((size_t)T * V * sizeof(float)), *got = malloc((size_t)V * sizeof(float));
    int32_t rows[64];
    for (int i = 0; i < T; i++) rows[i] = i;
    CHECK(model_forward(m, &full) == 0 && model_logits(m, rows, T, want) == 0, "%s: %s", name, align_error());
    KVCache *kv = kvcache_create(m, 1, 32);
    int32_t slot = 0;
    double worst = 0;
    for (int at = 0; at < T;) {
        int n = at == 0 ? 3 : 1;
        Batch step = {.n_tokens = n, .n_seqs = 1, .tokens = r->tokens + at, .seq_start = (int32_t[]){0, n}};
        CHECK(model_forward_cached(m, kv, &slot, &step, got) == 0, "%s: decode: %s", name, align_error());
        at += n;
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(got[v] - want[(size_t)(at - 1) * V + v]));
    }
    printf("%s: cached decoding of %d tokens vs the full forward: largest logit difference %.2g\n", name, T, worst);
    CHECK(worst < 1e-4, "%s: cached decoding differs from the full forward by %.3g", name, worst);
    kvcache_free(kv);
    free(want), free(got);
}

static void check_export_roundtrip(const char *name, Model *m, const Ref *r) {
    char dir[] = "/tmp/align_gemma_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char out[600];
    snprintf(out, sizeof out, "%s/export", dir);
    CHECK(hf_export_dir(out, m, NULL) == 0, "%s: export: %s", name, align_error());
    ModelBundle back;
    CHECK(hf_import_dir(out, &backend_cpu, &back) == 0, "%s: re-import: %s", name, align_error());
    if (back.model) {
        CHECK(back.model->cfg.gemma == m->cfg.gemma && back.model->cfg.sliding_pattern == m->cfg.sliding_pattern &&
                  back.model->cfg.attn_softcap == m->cfg.attn_softcap &&
                  back.model->cfg.final_softcap == m->cfg.final_softcap &&
                  back.model->cfg.attn_scalar == m->cfg.attn_scalar &&
                  back.model->cfg.rope_local_theta == m->cfg.rope_local_theta &&
                  back.model->cfg.rope_scaling == m->cfg.rope_scaling,
              "%s: the exported config.json reads back differently", name);
        CHECK(back.model->n_elems == m->n_elems, "%s: parameter count changed", name);
        float *a = malloc(m->n_elems * 4), *bb = malloc(m->n_elems * 4);
        m->be->to_host(a, m->params, m->n_elems * 4);
        back.model->be->to_host(bb, back.model->params, m->n_elems * 4);
        CHECK(!memcmp(a, bb, m->n_elems * 4), "%s: export -> import changed the weights", name);
        free(a), free(bb);
        double d = logprob_diff(back.model, r);
        CHECK(d < 1e-4, "%s: re-imported log-probs differ by %.3g", name, d);
    }
    model_bundle_free(&back);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "rm");
}

static void check_gguf(const char *name, Model *hf, const Ref *r) {
    char path[512];
    snprintf(path, sizeof path, FIX "%s/model.gguf", name);
    ModelBundle g;
    CHECK(gguf_import(path, &backend_cpu, &g) == 0, "%s: GGUF import: %s", name, align_error());
    if (!g.model) return;
    const ModelConfig *a = &g.model->cfg, *b = &hf->cfg;
    CHECK(a->gemma == b->gemma && a->n_layers == b->n_layers && a->head_dim == b->head_dim &&
              a->sliding_window == b->sliding_window && a->sliding_pattern == b->sliding_pattern &&
              a->attn_softcap == b->attn_softcap && a->final_softcap == b->final_softcap &&
              a->tied_embeddings == b->tied_embeddings && a->qk_norm == b->qk_norm,
          "%s: the GGUF's config differs from config.json's", name);
    double worst = 0;
    for (int i = 0; i < hf->n_params; i++) {
        const ParamInfo *p = &hf->info[i];
        ParamInfo *q = model_find_param(g.model, p->name);
        CHECK(q != NULL && q->numel == p->numel, "%s: GGUF import lacks %s", name, p->name);
        if (!q || q->numel != p->numel) continue;
        float *x = malloc(p->numel * 4), *y = malloc(p->numel * 4);
        model_param_to_host(hf, p, x);
        model_param_to_host(g.model, q, y);
        for (size_t k = 0; k < p->numel; k++) worst = fmax(worst, fabs(x[k] - y[k]));
        free(x), free(y);
    }
    /* norms come back from 1 + w stored in fp32: one rounding of 1 + w */
    CHECK(worst < 1e-6, "%s: GGUF weights differ from the safetensors' by %.3g", name, worst);
    double d = logprob_diff(g.model, r);
    printf("%s: GGUF import: weights within %.2g, log-probs within %.2g\n", name, worst, d);
    CHECK(d < 1e-4, "%s: GGUF log-probs differ from transformers' by %.3g", name, d);
    model_bundle_free(&g);
}

static void test_fixture(const char *name) {
    Ref r;
    CHECK(read_ref(name, &r) == 0, "%s: reference.json: %s", name, align_error());
    ModelBundle b;
    char dir[512];
    snprintf(dir, sizeof dir, FIX "%s", name);
    CHECK(hf_import_dir(dir, &backend_cpu, &b) == 0, "%s: import: %s", name, align_error());
    if (!b.model) return;
    double d = logprob_diff(b.model, &r);
    printf("%s: log-probs vs transformers: largest difference %.2g\n", name, d);
    CHECK(d < 1e-4, "%s: log-probs differ from transformers' by %.3g", name, d);
    check_gradients(name, b.model, &r);
    check_backward_rows(name, b.model, &r);
    check_decode(name, b.model, &r);
    check_export_roundtrip(name, b.model, &r);
    check_gguf(name, b.model, &r);
    model_bundle_free(&b);
}

/* Gemma 3 with a vision tower (model_type gemma3): the text model imports
 * from text_config and model.language_model.*, and exports as gemma3_text. */
static void test_multimodal_text(void) {
    Ref r;
    CHECK(read_ref("gemma3_mm", &r) == 0, "gemma3_mm: reference.json: %s", align_error());
    ModelBundle b;
    CHECK(hf_import_dir(FIX "gemma3_mm", &backend_cpu, &b) == 0, "gemma3_mm: import: %s", align_error());
    if (!b.model) return;
    CHECK(b.model->cfg.gemma == 3 && b.model->cfg.qk_norm && b.model->cfg.n_layers == 4,
          "gemma3_mm: text_config read as a Gemma 3 text model");
    double d = logprob_diff(b.model, &r);
    printf("gemma3_mm: text log-probs vs transformers' Gemma3ForConditionalGeneration: %.2g\n", d);
    CHECK(d < 1e-4, "gemma3_mm: log-probs differ from transformers' by %.3g", d);
    check_export_roundtrip("gemma3_mm", b.model, &r);
    model_bundle_free(&b);
}

/* A backend without the Gemma ops (CUDA today) refuses such a model by
 * name instead of running the Llama maths. */
static void test_backend_without_ops(void) {
    Backend be = backend_cpu;
    be.name = "test-without-gemma-ops";
    be.geglu_forward = NULL;
    ModelBundle b;
    CHECK(hf_import_dir(FIX "gemma3", &backend_cpu, &b) == 0, "gemma3: import: %s", align_error());
    if (!b.model) return;
    Model *m = model_create(&b.model->cfg, &be);
    CHECK(m == NULL && strstr(align_error(), "--device cpu") && strstr(align_error(), "test-without-gemma-ops"),
          "a backend without GeGLU accepted a Gemma (%s)", m ? "created" : align_error());
    model_free(m);
    model_bundle_free(&b);
}

int main(void) {
    test_backend_without_ops();
    test_fixture("gemma2");
    test_fixture("gemma3");
    test_multimodal_text();
    return test_summary();
}
