/* test_peft_methods: DoRA and IA3 against the `peft` library.
 *
 * Fixtures: tests/fixtures/make_dora_ia3_fixtures.py ran peft 0.21 (DoRA:
 * LoraConfig r 4, alpha 8, dropout 0, use_dora, every linear; IA3: IA3Config
 * with peft's targets, k/v/down and c_attn/mlp.c_proj) on the tiny Qwen2
 * (GQA, q/k/v bias) and the tiny GPT-2 (Conv1D, fused c_attn) over a packed
 * batch of two sequences, float32, with every adapter tensor randomised
 * away from its init. Per method and model:
 *   the tensors attach under peft's names and shapes; their init equals
 *     peft's (DoRA's magnitude = the row norms of W, 1e-5 relative; IA3: 1)
 *   logits with the adapters            1e-5 absolute + 1e-5 relative
 *   d loss / d every adapter tensor     1e-4 relative, per-tensor norm
 *   adapters off: bit-identical to the base model
 *   model_export_copy (the merged model) = the adapters' logits (1e-5)
 *   cached decoding = the full forward's last logits (1e-4)
 *   peft's save_pretrained directory loads to the same logits; align's
 *     saved directory reloads bit-identically and says use_dora / IA3
 * and for DoRA: on a q8_0 base (the norm from the dequantised rows) the
 * export equals the model; the dropout path matches peft at p = 1e-6, and
 * at p = 0.3 the magnitudes' gradients match central differences of the
 * same masked loss. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvcache.h"
#include "lora.h"
#include "model_load.h"
#include "peft.h"
#include "safetensors.h"
#include "test.h"
#include "fixture_tensors.h"
#include "util.h"

static StFile fx;
static int32_t *tokens, *seq_start, *targets;
static float *mask;
static int N, V;

static Model *load_base(const char *dir) {
    ModelBundle b;
    if (model_load_any(dir, &backend_cpu, 0, &b)) {
        CHECK(0, "load %s: %s", dir, align_error());
        return NULL;
    }
    Model *m = b.model;
    b.model = NULL;
    model_bundle_free(&b);
    return m;
}

/* The fixture's key of adapter tensor p: peft's parameter name, which for
 * the magnitude carries ".weight" (the saved directory drops it). */
static void fixture_key(const ParamInfo *p, const char *prefix, char *buf, size_t n) {
    snprintf(buf, n, "%s%s%s", prefix, p->name, strstr(p->name, "lora_magnitude_vector") ? ".weight" : "");
}

static int set_fixture_adapters(Model *m) {
    int n_set = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (!p->lora) continue;
        char key[200];
        fixture_key(p, "", key, sizeof key);
        int64_t n;
        float *x = fixture_f32(&fx, key, &n);
        if (!x) continue;
        CHECK((size_t)n == p->numel, "%s: %lld elements, want %zu", p->name, (long long)n, p->numel);
        memcpy(m->params + p->offset, x, p->numel * sizeof(float));
        free(x);
        n_set++;
    }
    return n_set;
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

/* Masked mean loss; with grads, its backward into m->grads (zeroed first). */
static double loss_of(Model *m, int grads) {
    Batch b = batch();
    float *logp = malloc(N * sizeof(float)), *dlogp = calloc(N, sizeof(float));
    double msum = 0, loss = 0;
    for (int i = 0; i < N; i++) msum += mask[i];
    if (grads) model_zero_grad(m);
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, targets, logp) == 0, "logprobs: %s", align_error());
    for (int i = 0; i < N; i++) loss -= mask[i] * logp[i] / msum, dlogp[i] = (float)(-mask[i] / msum);
    if (grads) CHECK(model_backward(m, dlogp, NULL) == 0, "backward: %s", align_error());
    free(logp), free(dlogp);
    return loss;
}

static LoraConfig config_for(int method, ModelArch arch) {
    LoraConfig c;
    lora_config_defaults(&c);
    c.method = method;
    c.rank = 4, c.alpha = 8, c.dropout = 0, c.seed = 7;
    c.targets = method == LORA_METHOD_IA3 ? lora_ia3_default_targets(arch) : LORA_T_ALL;
    return c;
}

static void run_case(const char *method_name, int method, const char *arch_name) {
    char path[512], base_dir[512];
    snprintf(path, sizeof path, ALIGN_TEST_DIR "/fixtures/peft_methods/%s_%s.safetensors", method_name, arch_name);
    snprintf(base_dir, sizeof base_dir, ALIGN_TEST_DIR "/fixtures/hf_tiny_%s", arch_name);
    printf("-- %s on %s\n", method_name, arch_name);
    if (st_open(&fx, path)) {
        CHECK(0, "open %s: %s", path, align_error());
        return;
    }
    int64_t nt, ns;
    tokens = fixture_i32(&fx, "tokens", &nt);
    seq_start = fixture_i32(&fx, "seq_start", &ns);
    targets = fixture_i32(&fx, "targets", NULL);
    mask = fixture_f32(&fx, "mask", NULL);
    N = (int)nt;

    Model *m = load_base(base_dir);
    V = m->cfg.vocab_size;
    LoraConfig lc = config_for(method, m->cfg.arch);
    CHECK(model_lora_attach(m, &lc) == 0, "attach: %s", align_error());
    /* every tensor the fixture has, under peft's name and shape, and no other */
    int n_fixture = 0, n_adapter = 0;
    for (int i = 0; i < fx.n_tensors; i++)
        n_fixture += !strncmp(fx.tensors[i].name, "base_model.", 11);
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        CHECK((p->grad_offset >= 0) == p->lora, "%s: only adapters train", p->name);
        if (!p->lora) continue;
        n_adapter++;
        char key[200];
        fixture_key(p, "", key, sizeof key);
        const StTensor *t = st_find(&fx, key);
        CHECK(t && t->ndim == p->ndim && t->shape[0] == p->shape[0] && (p->ndim == 1 || t->shape[1] == p->shape[1]),
              "%s: peft's name and shape", p->name);
        /* the init: DoRA's magnitude = ||W|| per row, IA3's vectors = 1 (A is random, B zero as for LoRA) */
        if (strstr(p->name, "lora_A")) continue;
        fixture_key(p, "init.", key, sizeof key);
        float *want = fixture_f32(&fx, key, NULL);
        double worst = 0;
        for (size_t k = 0; want && k < p->numel; k++)
            worst = fmax(worst, fabs(m->params[p->offset + k] - want[k]) / (1e-6 + fabs(want[k])));
        CHECK(worst < 1e-5, "%s: init as peft's (worst relative %.3g)", p->name, worst);
        free(want);
    }
    CHECK(n_adapter == n_fixture && n_adapter > 0, "%d adapter tensors, peft has %d", n_adapter, n_fixture);
    float *plain_logits = all_logits(m); /* a fresh adapter changes nothing */
    Model *plain = load_base(base_dir);
    float *base_logits = all_logits(plain);
    CHECK(max_abs_diff(plain_logits, base_logits, (size_t)N * V) < 1e-5, "fresh adapters leave the model as it was (%.3g)",
          max_abs_diff(plain_logits, base_logits, (size_t)N * V));
    set_fixture_adapters(m);

    float *want = fixture_f32(&fx, "logits", NULL), *got = all_logits(m);
    double worst = 0;
    for (size_t i = 0; i < (size_t)N * V; i++) worst = fmax(worst, fabs(got[i] - want[i]) / (1e-5 + 1e-5 * fabs(want[i])));
    CHECK(worst <= 1, "logits vs peft: worst error %.3g of tolerance (max abs %.3g)", worst,
          max_abs_diff(got, want, (size_t)N * V));

    double loss = loss_of(m, 1);
    float *wl = fixture_f32(&fx, "loss", NULL);
    CHECK_CLOSE(loss, wl[0], 1e-5, 1e-5, "masked mean loss vs peft");
    int checked = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (!p->lora) continue;
        char key[200];
        fixture_key(p, "grad.", key, sizeof key);
        float *g = fixture_f32(&fx, key, NULL);
        if (!g) continue;
        const float *mine = m->grads + p->grad_offset;
        double num = 0, den = 0;
        for (size_t k = 0; k < p->numel; k++) num += pow(mine[k] - g[k], 2), den += pow(g[k], 2);
        CHECK(den > 0 && sqrt(num / den) < 1e-4, "%s: gradient error %.3g relative", p->name, sqrt(num / (den + 1e-30)));
        checked++;
        free(g);
    }
    CHECK(checked == n_adapter, "every adapter gradient compared (%d)", checked);

    /* adapters off: exactly the base model */
    model_lora_enable(m, 0);
    float *off = all_logits(m);
    CHECK(memcmp(off, base_logits, (size_t)N * V * sizeof(float)) == 0, "adapters off: bit-identical to the base model");
    float *peft_base = fixture_f32(&fx, "base_logits", NULL);
    CHECK(max_abs_diff(off, peft_base, (size_t)N * V) < 1e-4, "adapters off vs peft disable_adapter: %.3g",
          max_abs_diff(off, peft_base, (size_t)N * V));
    model_lora_enable(m, 1);
    CHECK(model_lora_merge(m) != 0, "merge in place is refused (%s)", align_error());

    /* the merged export */
    Model *e = model_export_copy(m);
    CHECK(e != NULL, "export: %s", align_error());
    float *exp_logits = e ? all_logits(e) : NULL;
    CHECK(e && !e->lora && max_abs_diff(exp_logits, got, (size_t)N * V) < 1e-5, "export copy = the adapters' logits (%.3g)",
          exp_logits ? max_abs_diff(exp_logits, got, (size_t)N * V) : -1.0);

    /* cached decoding with the adapters */
    KVCache *kv = kvcache_create(m, 1, 32);
    Batch one = {.n_tokens = seq_start[1], .n_seqs = 1, .tokens = tokens, .seq_start = (int32_t[]){0, seq_start[1]}};
    float *last = malloc(V * sizeof(float));
    CHECK(kv && model_forward_cached(m, kv, (int32_t[]){0}, &one, last) == 0, "cached forward: %s", align_error());
    CHECK(max_abs_diff(last, got + (size_t)(seq_start[1] - 1) * V, V) < 1e-4, "cached decoding = full forward (%.3g)",
          max_abs_diff(last, got + (size_t)(seq_start[1] - 1) * V, V));
    kvcache_free(kv);

    /* peft's own directory, and ours */
    char adir[512];
    snprintf(adir, sizeof adir, ALIGN_TEST_DIR "/fixtures/peft_methods/%s_%s_adapter", method_name, arch_name);
    Model *m2 = load_base(base_dir);
    CHECK(peft_load_adapter(adir, m2, 1) == 0, "load peft's %s adapter: %s", method_name, align_error());
    const LoraConfig *got_cfg = model_lora_config(m2);
    CHECK(got_cfg && got_cfg->method == method && model_lora_numel(m2) == model_lora_numel(m),
          "adapter_config.json: the method and targets");
    float *from_dir = all_logits(m2);
    CHECK(max_abs_diff(from_dir, got, (size_t)N * V) == 0, "peft's save_pretrained directory: same logits (%.3g)",
          max_abs_diff(from_dir, got, (size_t)N * V));
    char dir[] = "/tmp/align_peft_methods_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "tmpdir");
    CHECK(peft_save_adapter(dir, m, "tiny") == 0, "save: %s", align_error());
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    size_t len;
    char *cfg = align_read_file(path, &len);
    CHECK(cfg && (method == LORA_METHOD_IA3 ? strstr(cfg, "\"IA3\"") && strstr(cfg, "feedforward_modules")
                                            : strstr(cfg, "\"use_dora\":\ttrue") != NULL),
          "adapter_config.json names the method: %s", cfg ? cfg : "(none)");
    free(cfg);
    Model *m3 = load_base(base_dir);
    CHECK(peft_load_adapter(dir, m3, 1) == 0, "reload: %s", align_error());
    float *again = all_logits(m3);
    CHECK(memcmp(again, got, (size_t)N * V * sizeof(float)) == 0, "saved adapter reloads bit-identically");
    snprintf(path, sizeof path, "rm -rf %s", dir);
    CHECK(system(path) == 0, "cleanup");

    free(plain_logits), free(base_logits), free(want), free(got), free(wl), free(off), free(peft_base);
    free(exp_logits), free(last), free(from_dir), free(again);
    model_free(e), model_free(m), model_free(m2), model_free(m3), model_free(plain);
    free(tokens), free(seq_start), free(targets), free(mask);
    st_close(&fx);
}

/* DoRA on a q8_0 base: the norm from the dequantised rows, the merged
 * export equal to the model; and DoRA's dropout path against finite
 * differences of the same masked loss. Uses the dora_qwen2 batch. */
static void test_dora_quantised_and_dropout(void) {
    printf("-- DoRA on a q8_0 base, and with dropout\n");
    if (st_open(&fx, ALIGN_TEST_DIR "/fixtures/peft_methods/dora_qwen2.safetensors")) {
        CHECK(0, "open: %s", align_error());
        return;
    }
    int64_t nt;
    tokens = fixture_i32(&fx, "tokens", &nt);
    seq_start = fixture_i32(&fx, "seq_start", NULL);
    targets = fixture_i32(&fx, "targets", NULL);
    mask = fixture_f32(&fx, "mask", NULL);
    N = (int)nt;
    const char *base = ALIGN_TEST_DIR "/fixtures/hf_tiny_qwen2";

    Model *q = load_base(base);
    V = q->cfg.vocab_size;
    CHECK(model_quantize_base(q, QUANT_Q8_0) > 0, "quantise: %s", align_error());
    LoraConfig lc = config_for(LORA_METHOD_DORA, q->cfg.arch);
    CHECK(model_lora_attach(q, &lc) == 0, "attach DoRA on q8_0: %s", align_error());
    set_fixture_adapters(q);
    float *got = all_logits(q);
    Model *e = model_export_copy(q);
    float *merged = all_logits(e);
    CHECK(max_abs_diff(merged, got, (size_t)N * V) < 1e-5, "q8_0 + DoRA: export = model (%.3g)",
          max_abs_diff(merged, got, (size_t)N * V));
    float *want = fixture_f32(&fx, "logits", NULL);
    double dq = max_abs_diff(got, want, (size_t)N * V);
    CHECK(dq > 0 && dq < 0.05, "q8_0 + DoRA near the fp32 base's logits (%.3g)", dq);
    free(got), free(merged), free(want);
    model_free(e), model_free(q);

    /* The dropout path with p = 1e-6 keeps (almost) every element: peft's
     * gradients again, through the code that recomputes the base product on
     * the dropped input and masks dx. */
    Model *m = load_base(base);
    lc.dropout = 1e-6f;
    CHECK(model_lora_attach(m, &lc) == 0, "attach DoRA with dropout: %s", align_error());
    set_fixture_adapters(m);
    model_lora_train_mode(m, 1, 99);
    loss_of(m, 1);
    double worst = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (!p->lora) continue;
        char key[200];
        fixture_key(p, "grad.", key, sizeof key);
        float *g = fixture_f32(&fx, key, NULL);
        double num = 0, den = 0;
        for (size_t k = 0; g && k < p->numel; k++) num += pow(m->grads[p->grad_offset + k] - g[k], 2), den += pow(g[k], 2);
        worst = fmax(worst, sqrt(num / (den + 1e-30)));
        free(g);
    }
    CHECK(worst < 1e-4, "DoRA's dropout path at p = 1e-6: gradients vs peft, worst %.3g relative", worst);
    model_free(m);

    /* p = 0.3: the magnitudes' gradients against central differences of the
     * same masked loss (the norm does not depend on them, so the detached
     * gradient is the true one); layer 0's pass through layer 1's masked dx.
     * (A and B get the detached-norm gradient peft defines, which
     * differences of the full function do not give.) */
    m = load_base(base);
    lc.dropout = 0.3f;
    CHECK(model_lora_attach(m, &lc) == 0, "attach DoRA with dropout 0.3: %s", align_error());
    set_fixture_adapters(m);
    model_lora_train_mode(m, 1, 99);
    loss_of(m, 1);
    const char *names[] = {"base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector",
                           "base_model.model.model.layers.0.mlp.down_proj.lora_magnitude_vector",
                           "base_model.model.model.layers.1.mlp.up_proj.lora_magnitude_vector",
                           "base_model.model.model.layers.1.self_attn.q_proj.lora_magnitude_vector"};
    worst = 0;
    for (int t = 0; t < 4; t++) {
        ParamInfo *p = model_find_param(m, names[t]);
        CHECK(p != NULL, "%s", names[t]);
        if (!p) continue;
        for (size_t k = 0; k < p->numel; k += p->numel / 4 + 1) {
            float *x = m->params + p->offset + k, x0 = *x, g = m->grads[p->grad_offset + k];
            float h = 1e-2f * fmaxf(1.0f, fabsf(x0));
            model_lora_train_mode(m, 1, 99); /* the same masks */
            *x = x0 + h;
            double lp = loss_of(m, 0);
            model_lora_train_mode(m, 1, 99);
            *x = x0 - h;
            double lm = loss_of(m, 0);
            *x = x0;
            double fd = (lp - lm) / (2 * h);
            worst = fmax(worst, fabs(fd - g) / (1e-3 + fabs(fd)));
        }
    }
    CHECK(worst < 2e-2, "DoRA with dropout 0.3: magnitude gradients vs finite differences, worst relative %.3g", worst);
    model_lora_train_mode(m, 0, 0);
    model_free(m);
    free(tokens), free(seq_start), free(targets), free(mask);
    st_close(&fx);
}

int main(void) {
    run_case("dora", LORA_METHOD_DORA, "qwen2");
    run_case("dora", LORA_METHOD_DORA, "gpt2");
    run_case("ia3", LORA_METHOD_IA3, "qwen2");
    run_case("ia3", LORA_METHOD_IA3, "gpt2");
    test_dora_quantised_and_dropout();
    return test_summary();
}
