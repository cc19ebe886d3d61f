/* test_lora: LoRA adapters against the `peft` library, and the properties
 * the trainers rely on.
 *
 * Fixture: tests/fixtures/make_lora_fixtures.py ran peft 0.12 (LoraConfig
 * r 4, alpha 8, dropout 0, all seven projections, A and B random) on the
 * tiny Qwen2 (GQA, q/k/v bias, tied embeddings) over a packed batch of two
 * sequences (12 + 7 tokens), in float32.
 *   logits with adapters             2e-4 absolute (+1e-4 relative)
 *   logits with adapters off         bit-identical to the plain base model
 *                                    (and 2e-4 from peft's disable_adapter)
 *   d loss / d lora_A, lora_B        1e-3 relative, per-tensor norm
 *   adapter read from peft's own save_pretrained directory: same logits
 *   adapter saved by align and re-read: bit-identical logits
 *   merged weights: logits 1e-5 from base+adapter; unmerge restores W 1e-6
 *   flat get/set of the adapters round-trips exactly
 *   DPO with the reference = base with adapters off: losses and metrics
 *     identical to an explicit frozen copy of the base
 *   dropout: same (seed, key) -> same gradients; another key -> different;
 *     training mode off -> no dropout (logits equal dropout-free ones)
 *   cached decoding with adapters gives the full forward's last logits
 *     (1e-4) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dpo_batch.h"
#include "kvcache.h"
#include "lora.h"
#include "model_load.h"
#include "peft.h"
#include "safetensors.h"
#include "test.h"
#include "fixture_tensors.h"
#include "util.h"

static const char *BASE = ALIGN_TEST_DIR "/fixtures/hf_tiny_qwen2";
static StFile fx;
static int32_t *tokens, *seq_start, *targets;
static float *mask;
static int N, V;

static Model *load_base(void) {
    ModelBundle b;
    if (model_load_any(BASE, &backend_cpu, 0, &b)) {
        CHECK(0, "load %s: %s", BASE, align_error());
        return NULL;
    }
    Model *m = b.model;
    b.model = NULL;
    model_bundle_free(&b);
    return m;
}

static LoraConfig fixture_lora(void) {
    LoraConfig c;
    lora_config_defaults(&c);
    c.rank = 4, c.alpha = 8, c.dropout = 0, c.targets = LORA_T_ALL, c.seed = 7;
    return c;
}

/* Copy the fixture's adapter values into m's adapters. */
static void set_fixture_adapters(Model *m) {
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (!p->lora) continue;
        int64_t n;
        float *x = fixture_f32(&fx, p->name, &n);
        if (!x) continue;
        CHECK((size_t)n == p->numel, "%s: %lld elements, want %zu", p->name, (long long)n, p->numel);
        memcpy(m->params + p->offset, x, p->numel * sizeof(float));
        free(x);
    }
}

static Batch batch(void) { return (Batch){.n_tokens = N, .n_seqs = 2, .tokens = tokens, .seq_start = seq_start}; }

static float *all_logits(Model *m) {
    Batch b = batch();
    int32_t *rows = malloc(N * sizeof(int32_t));
    for (int i = 0; i < N; i++) rows[i] = i;
    float *out = malloc((size_t)N * V * sizeof(float));
    CHECK(model_forward(m, &b) == 0 && model_logits(m, rows, N, out) == 0, "forward: %s", align_error());
    free(rows);
    return out;
}

static void test_against_peft(void) {
    Model *m = load_base();
    LoraConfig lc = fixture_lora();
    CHECK(model_lora_attach(m, &lc) == 0, "attach: %s", align_error());
    int n_lora = 0;
    for (int i = 0; i < m->n_params; i++) n_lora += m->info[i].lora;
    CHECK(n_lora == 28, "2 layers x 7 projections x (A, B) = 28 adapter tensors, got %d", n_lora);
    CHECK(model_find_param(m, "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight") != NULL, "PEFT names");
    for (int i = 0; i < m->n_params; i++)
        CHECK((m->info[i].grad_offset >= 0) == m->info[i].lora, "%s: only adapters train", m->info[i].name);
    set_fixture_adapters(m);

    float *want = fixture_f32(&fx, "logits", NULL), *got = all_logits(m);
    double worst = 0;
    for (size_t i = 0; i < (size_t)N * V; i++) worst = fmax(worst, fabs(got[i] - want[i]) / (2e-4 + 1e-4 * fabs(want[i])));
    CHECK(worst <= 1, "logits with adapters vs peft: worst error %.3g of tolerance", worst);

    /* loss and gradients */
    Batch b = batch();
    float *logp = malloc(N * sizeof(float)), *dlogp = calloc(N, sizeof(float));
    double msum = 0, loss = 0;
    for (int i = 0; i < N; i++) msum += mask[i];
    model_zero_grad(m);
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, targets, logp) == 0, "logprobs");
    for (int i = 0; i < N; i++) loss -= mask[i] * logp[i] / msum, dlogp[i] = (float)(-mask[i] / msum);
    float *wl = fixture_f32(&fx, "loss", NULL);
    CHECK_CLOSE(loss, wl[0], 1e-4, 0, "masked mean loss vs peft");
    CHECK(model_backward(m, dlogp, NULL) == 0, "backward: %s", align_error());
    int checked = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (!p->lora) continue;
        char name[160];
        snprintf(name, sizeof name, "grad.%s", p->name);
        float *g = fixture_f32(&fx, name, NULL);
        const float *mine = m->grads + p->grad_offset;
        double num = 0, den = 0;
        for (size_t k = 0; k < p->numel; k++) num += pow(mine[k] - g[k], 2), den += pow(g[k], 2);
        CHECK(den > 0 && sqrt(num / den) < 1e-3, "%s: gradient error %.3g relative", p->name, sqrt(num / (den + 1e-30)));
        checked++;
        free(g);
    }
    CHECK(checked == 28, "every adapter gradient compared (%d)", checked);

    /* adapters off: exactly the base model */
    Model *plain = load_base();
    float *base_plain = all_logits(plain);
    CHECK(model_lora_enable(m, 0) == 1, "enable returns the previous state");
    float *off = all_logits(m);
    CHECK(memcmp(off, base_plain, (size_t)N * V * sizeof(float)) == 0, "adapters off: bit-identical to the base model");
    float *peft_base = fixture_f32(&fx, "base_logits", NULL);
    CHECK(max_abs_diff(off, peft_base, (size_t)N * V) < 2e-4, "adapters off vs peft disable_adapter: %.3g",
          max_abs_diff(off, peft_base, (size_t)N * V));
    model_lora_enable(m, 1);

    /* flat adapter access */
    size_t n = model_lora_numel(m);
    float *flat = malloc(n * sizeof(float)), *zero = calloc(n, sizeof(float));
    CHECK(n == model_trainable_elems(m), "flat adapters: %zu elements", n);
    model_lora_get(m, flat);
    model_lora_set(m, zero);
    float *z = all_logits(m);
    CHECK(memcmp(z, base_plain, (size_t)N * V * sizeof(float)) == 0, "zero adapters = base");
    model_lora_set(m, flat);
    float *back = all_logits(m);
    CHECK(memcmp(back, got, (size_t)N * V * sizeof(float)) == 0, "get/set round trip");

    /* merge / unmerge */
    ParamInfo *wq = model_find_param(m, "model.layers.0.self_attn.k_proj.weight");
    float *w0 = malloc(wq->numel * sizeof(float));
    memcpy(w0, m->params + wq->offset, wq->numel * sizeof(float));
    CHECK(model_lora_merge(m) == 0, "merge");
    float *merged = all_logits(m);
    CHECK(max_abs_diff(merged, got, (size_t)N * V) < 1e-5, "merged logits = base + adapter logits (%.3g)",
          max_abs_diff(merged, got, (size_t)N * V));
    CHECK(model_lora_unmerge(m) == 0, "unmerge");
    CHECK(max_abs_diff(w0, m->params + wq->offset, wq->numel) < 1e-6, "unmerge restores the base weight");

    /* model_export_copy: a plain model computing the same */
    Model *e = model_export_copy(m);
    float *exp_logits = all_logits(e);
    CHECK(e->lora == NULL && max_abs_diff(exp_logits, got, (size_t)N * V) < 1e-5, "export copy = merged");

    /* cached decoding with adapters */
    KVCache *kv = kvcache_create(m, 1, 32);
    Batch one = {.n_tokens = seq_start[1], .n_seqs = 1, .tokens = tokens, .seq_start = (int32_t[]){0, seq_start[1]}};
    float *last = malloc(V * sizeof(float));
    CHECK(kv && model_forward_cached(m, kv, (int32_t[]){0}, &one, last) == 0, "cached forward");
    CHECK(max_abs_diff(last, got + (size_t)(seq_start[1] - 1) * V, V) < 1e-4, "cached decoding with LoRA = full forward");
    kvcache_free(kv);

    free(want), free(got), free(logp), free(dlogp), free(wl), free(base_plain), free(off), free(peft_base), free(w0);
    free(merged), free(exp_logits), free(flat), free(zero), free(z), free(back), free(last);
    model_free(e), model_free(plain), model_free(m);
}

static void test_peft_dirs(void) {
    float *want = fixture_f32(&fx, "logits", NULL);
    Model *m = load_base();
    CHECK(peft_load_adapter(ALIGN_TEST_DIR "/fixtures/lora/peft_adapter", m, 1) == 0, "load peft's adapter: %s", align_error());
    const LoraConfig *lc = model_lora_config(m);
    CHECK(lc && lc->rank == 4 && lc->alpha == 8 && lc->targets == LORA_T_ALL, "adapter_config.json read");
    float *got = all_logits(m);
    CHECK(max_abs_diff(got, want, (size_t)N * V) < 2e-4, "peft's save_pretrained adapter: logits %.3g from peft",
          max_abs_diff(got, want, (size_t)N * V));
    char dir[] = "/tmp/align_lora_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "tmpdir");
    CHECK(peft_save_adapter(dir, m, "tiny-qwen2") == 0, "save: %s", align_error());
    Model *m2 = load_base();
    CHECK(peft_load_adapter(dir, m2, 1) == 0, "reload: %s", align_error());
    float *again = all_logits(m2);
    CHECK(memcmp(again, got, (size_t)N * V * sizeof(float)) == 0, "saved adapter reloads bit-identically");
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    free(want), free(got), free(again);
    model_free(m), model_free(m2);
}

static void test_dpo_reference(void) {
    Model *pol = load_base(), *ref = load_base();
    LoraConfig lc = fixture_lora();
    model_lora_attach(pol, &lc);
    set_fixture_adapters(pol);
    model_set_trainable(ref, "", 0);
    DpoLossConfig loss;
    dpo_loss_defaults(&loss);
    DsSeq seqs[4] = {{tokens, 4, tokens + 4, 8}, {tokens, 4, tokens + 12 - 4, 4},
                     {tokens + 12, 2, tokens + 14, 5}, {tokens + 12, 2, tokens + 3, 6}};
    Metrics a, b;
    metrics_clear(&a);
    metrics_clear(&b);
    model_zero_grad(pol);
    long ta = dpo_batch(&loss, pol, pol, seqs, 2, NULL, 1.0f, 1, &a);
    size_t n = model_trainable_elems(pol);
    float *ga = malloc(n * sizeof(float));
    memcpy(ga, pol->grads, n * sizeof(float));
    model_zero_grad(pol);
    long tb = dpo_batch(&loss, pol, ref, seqs, 2, NULL, 1.0f, 1, &b);
    CHECK(ta > 0 && ta == tb, "both batches ran (%ld, %ld): %s", ta, tb, align_error());
    static const char *keys[] = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"};
    for (int k = 0; k < 5; k++)
        CHECK(metrics_get(&a, keys[k], NAN) == metrics_get(&b, keys[k], NAN), "%s: base-as-reference %.9g vs copy %.9g",
              keys[k], metrics_get(&a, keys[k], NAN), metrics_get(&b, keys[k], NAN));
    CHECK(fabs(metrics_get(&a, "rewards/margins", 0)) > 0, "the adapters changed the policy (non-trivial check)");
    CHECK(memcmp(ga, pol->grads, n * sizeof(float)) == 0, "identical adapter gradients");
    CHECK(model_lora_enable(pol, 1) == 1, "adapters are back on after the reference pass");
    free(ga);
    model_free(pol), model_free(ref);
}

static void grads_with_key(Model *m, uint64_t key, float *out) {
    Batch b = batch();
    float *logp = malloc(N * sizeof(float)), *d = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) d[i] = mask[i];
    model_zero_grad(m);
    model_lora_train_mode(m, 1, key);
    model_forward(m, &b);
    model_token_logprobs(m, targets, logp);
    model_backward(m, d, NULL);
    model_lora_train_mode(m, 0, 0);
    memcpy(out, m->grads, model_trainable_elems(m) * sizeof(float));
    free(logp), free(d);
}

static void test_dropout(void) {
    Model *m = load_base();
    LoraConfig lc = fixture_lora();
    lc.dropout = 0.3f;
    model_lora_attach(m, &lc);
    set_fixture_adapters(m);
    size_t n = model_trainable_elems(m);
    float *g1 = malloc(n * 4), *g2 = malloc(n * 4), *g3 = malloc(n * 4);
    grads_with_key(m, 5, g1);
    grads_with_key(m, 5, g2);
    grads_with_key(m, 6, g3);
    CHECK(memcmp(g1, g2, n * 4) == 0, "same key: same dropout masks, same gradients");
    CHECK(memcmp(g1, g3, n * 4) != 0, "another key: other masks");
    float *eval = all_logits(m), *want = fixture_f32(&fx, "logits", NULL);
    CHECK(max_abs_diff(eval, want, (size_t)N * V) < 2e-4, "outside training mode there is no dropout");
    free(g1), free(g2), free(g3), free(eval), free(want);
    model_free(m);
}

int main(void) {
    if (st_open(&fx, ALIGN_TEST_DIR "/fixtures/lora/lora_qwen2.safetensors")) {
        fprintf(stderr, "%s\n", align_error());
        return 1;
    }
    int64_t n;
    tokens = fixture_i32(&fx, "tokens", &n);
    N = (int)n;
    seq_start = fixture_i32(&fx, "seq_start", NULL);
    targets = fixture_i32(&fx, "targets", NULL);
    mask = fixture_f32(&fx, "mask", NULL);
    int64_t nl = 1;
    free(fixture_f32(&fx, "logits", &nl));
    V = (int)(nl / N);
    test_against_peft();
    test_peft_dirs();
    test_dpo_reference();
    test_dropout();
    st_close(&fx);
    return test_summary();
}
