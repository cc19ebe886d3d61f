/* test_prompt_learning: prompt tuning and prefix tuning against the `peft`
 * library, and the properties the trainers rely on.
 *
 * Fixtures: tests/fixtures/make_prompt_prefix_fixtures.py ran peft 0.21
 * (PromptTuningConfig, 4 virtual tokens; PrefixTuningConfig without
 * projection, 3) on the tiny Llama (GQA, llama3 RoPE scaling), the tiny
 * GPT-2 (learned positions) and the tiny Mistral (a sliding window of 5,
 * which the virtual tokens fall out of) and the tiny Gemma 2 / Gemma 3
 * (embedding scale, which peft's virtual tokens do not get; soft caps; q/k
 * norms; sliding layers), float32, one sequence at a time; align packs
 * both sequences (12 + 7 tokens; Gemma 14 + 9) in one batch.
 *   logits of the real tokens            1e-5 absolute (+1e-5 relative)
 *   d loss / d prompt_embeddings         1e-4 relative, tensor norm
 *   virtual tokens off                   bit-identical to the plain base
 *   cached decoding (chunked prefill, then one token at a time, two
 *     slots, one copied from the other) = the full forward's logits, 1e-4
 *   prefix_projection (peft's MLP): logits 1e-5, the five tensors'
 *     gradients 1e-4, cached decoding, .ckpt round trip, peft's and
 *     align's saved (projected) adapters load as plain prefixes
 *   peft's own save_pretrained directory read by align: peft's logits
 *   align's adapter directory and .ckpt re-read: bit-identical logits
 *   Gemma: the TEXT init equals peft's (the scaled input embedding), 1e-5 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "model_load.h"
#include "peft_prompt.h"
#include "prompt_learning.h"
#include "safetensors.h"
#include "test.h"
#include "fixture_tensors.h"
#include "util.h"

static StFile fx;

static Model *load_base(const char *arch) {
    char path[512];
    if (!strncmp(arch, "gemma", 5)) snprintf(path, sizeof path, "%s/fixtures/gemma/%s", ALIGN_TEST_DIR, arch);
    else snprintf(path, sizeof path, "%s/fixtures/hf_tiny_%s", ALIGN_TEST_DIR, arch);
    ModelBundle b;
    if (model_load_any(path, &backend_cpu, 0, &b)) {
        CHECK(0, "load %s: %s", path, align_error());
        exit(1);
    }
    Model *m = b.model;
    b.model = NULL;
    model_bundle_free(&b);
    return m;
}

static double rel_err(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        den += (double)want[i] * want[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* The logits of every row of the batch, [n, V]. */
static float *all_logits(Model *m, const Batch *b) {
    int V = m->cfg.vocab_size;
    float *out = malloc((size_t)b->n_tokens * V * sizeof(float));
    int32_t *rows = malloc(b->n_tokens * sizeof(int32_t));
    for (int i = 0; i < b->n_tokens; i++) rows[i] = i;
    CHECK(model_forward(m, b) == 0, "forward: %s", align_error());
    CHECK(model_logits(m, rows, b->n_tokens, out) == 0, "logits: %s", align_error());
    free(rows);
    return out;
}

/* peft's TEXT init (the fixture's text_init: its word_embeddings module on
 * the ids, so Gemma's embedding scale included), when the fixture has it. */
static void check_text_init(const char *arch, int n_virtual) {
    if (!st_find(&fx, "text_init")) return;
    int64_t n_ids, n_want;
    int32_t *ids = fixture_i32(&fx, "text_init_ids", &n_ids);
    float *want = fixture_f32(&fx, "text_init", &n_want);
    Model *m = load_base(arch);
    PromptConfig pc = {.kind = PROMPT_TUNING, .n_virtual = n_virtual, .seed = 1, .init_tokens = ids,
                       .n_init_tokens = (int)n_ids};
    CHECK(model_prompt_attach(m, &pc) == 0, "attach with a text init: %s", align_error());
    ParamInfo *p = model_prompt_param(m);
    float *got = malloc(p->numel * sizeof(float));
    m->be->to_host(got, m->params + p->offset, p->numel * sizeof(float));
    double d = (int64_t)p->numel == n_want ? max_abs_diff(got, want, p->numel) : INFINITY;
    CHECK(d < 1e-5, "%s: the text init differs from peft's by %.3g", arch, d);
    free(got), free(want), free(ids);
    model_free(m);
}

static void check_fixture(const char *arch, PromptKind kind) {
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/prompt_learning/%s_%s.safetensors", ALIGN_TEST_DIR, arch,
             prompt_kind_name(kind));
    if (st_open(&fx, path)) {
        CHECK(0, "open %s: %s", path, align_error());
        return;
    }
    int64_t n_tok, n_seq1, n_emb;
    int32_t *tokens = fixture_i32(&fx, "tokens", &n_tok), *starts = fixture_i32(&fx, "seq_start", &n_seq1), *targets = fixture_i32(&fx, "targets", NULL);
    float *mask = fixture_f32(&fx, "mask", NULL), *want_logits = fixture_f32(&fx, "logits", NULL), *emb = fixture_f32(&fx, "prompt_embeddings", &n_emb);
    float *want_grad = fixture_f32(&fx, "grad", NULL);
    int N = (int)n_tok;
    Batch b = {.n_tokens = N, .n_seqs = (int)n_seq1 - 1, .tokens = tokens, .seq_start = starts};

    Model *base = load_base(arch), *m = load_base(arch);
    int V = m->cfg.vocab_size;
    float *base_logits = all_logits(base, &b);
    const StTensor *et = st_find(&fx, "prompt_embeddings");
    PromptConfig pc = {.kind = kind, .n_virtual = (int)et->shape[0], .seed = 1};
    CHECK(model_prompt_attach(m, &pc) == 0, "attach: %s", align_error());
    ParamInfo *p = model_prompt_param(m);
    CHECK(p && (int64_t)p->numel == n_emb, "%s %s: tensor of %zu elements, peft's %lld", arch, prompt_kind_name(kind),
          p ? p->numel : 0, (long long)n_emb);
    CHECK(model_trainable_elems(m) == p->numel, "only the virtual tokens train");
    m->be->to_device(m->params + p->offset, emb, p->numel * sizeof(float));
    if (kind == PROMPT_TUNING) check_text_init(arch, pc.n_virtual);

    /* forward against peft */
    float *logits = all_logits(m, &b);
    double d = 0;
    for (size_t i = 0; i < (size_t)N * V; i++)
        d = fmax(d, fabs((double)logits[i] - want_logits[i]) / (1e-5 + 1e-5 * fabs(want_logits[i])));
    CHECK(d <= 1.0, "%s %s: logits differ from peft's by %.3g of the tolerance", arch, prompt_kind_name(kind), d);
    CHECK(max_abs_diff(logits, base_logits, (size_t)N * V) > 1e-3, "the virtual tokens change the logits");

    /* gradient of the virtual tokens against peft's */
    float msum = 0;
    for (int i = 0; i < N; i++) msum += mask[i];
    float *dlogp = malloc(N * sizeof(float)), *lp = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) dlogp[i] = -mask[i] / msum;
    model_zero_grad(m);
    CHECK(model_forward(m, &b) == 0, "forward: %s", align_error());
    CHECK(model_token_logprobs(m, targets, lp) == 0, "logprobs: %s", align_error());
    double loss = 0;
    for (int i = 0; i < N; i++) loss -= mask[i] * lp[i] / msum;
    float *want_loss = fixture_f32(&fx, "loss", NULL);
    CHECK_CLOSE(loss, want_loss[0], 1e-5, 1e-6, "loss");
    CHECK(model_backward(m, dlogp, NULL) == 0, "backward: %s", align_error());
    float *grad = malloc(p->numel * sizeof(float));
    m->be->to_host(grad, m->grads + p->grad_offset, p->numel * sizeof(float));
    double e = rel_err(grad, want_grad, p->numel);
    CHECK(e < 1e-4, "%s %s: gradient relative error %.3g", arch, prompt_kind_name(kind), e);

    /* off: the base, bit for bit */
    CHECK(model_prompt_enable(m, 0) == 1, "was enabled");
    float *off = all_logits(m, &b);
    CHECK(memcmp(off, base_logits, (size_t)N * V * sizeof(float)) == 0, "%s %s: off is not the base",
          arch, prompt_kind_name(kind));
    model_prompt_enable(m, 1);

    /* cached decoding: sequence 0 in slot 1 (a chunk, then one at a time),
     * sequence 1 in slot 0; slot 2 copies slot 1's first 3 tokens */
    KVCache *kv = kvcache_create(m, 3, starts[1] + 8);
    CHECK(kv != NULL, "kv cache: %s", align_error());
    int len0 = starts[1], len1 = starts[2] - starts[1];
    float *last = malloc(2 * (size_t)V * sizeof(float));
    int32_t st[3] = {0, 3, 3 + len1}, slots[2] = {1, 0};
    int32_t tok[64];
    memcpy(tok, tokens, 3 * sizeof(int32_t));
    memcpy(tok + 3, tokens + starts[1], len1 * sizeof(int32_t));
    Batch pre = {.n_tokens = 3 + len1, .n_seqs = 2, .tokens = tok, .seq_start = st};
    CHECK(model_forward_cached(m, kv, slots, &pre, last) == 0, "prefill: %s", align_error());
    double worst = max_abs_diff(last, logits + 2 * (size_t)V, V);
    worst = fmax(worst, max_abs_diff(last + V, logits + (size_t)(starts[2] - 1) * V, V));
    CHECK(kvcache_len(kv, 1) == 3, "the cache counts the caller's tokens only (got %d)", kvcache_len(kv, 1));
    CHECK(kvcache_copy_prefix(kv, 2, 1, 3) == 0, "copy: %s", align_error());
    for (int i = 3; i < len0; i++) {
        int32_t s1[2] = {0, 1}, sl = i % 2 ? 1 : 2; /* alternate the original and the copy */
        Batch one = {.n_tokens = 1, .n_seqs = 1, .tokens = &tokens[i], .seq_start = s1};
        if (sl == 2 && kvcache_len(kv, 2) != i) kvcache_copy_prefix(kv, 2, 1, i);
        if (sl == 1 && kvcache_len(kv, 1) != i) kvcache_copy_prefix(kv, 1, 2, i);
        CHECK(model_forward_cached(m, kv, &sl, &one, last) == 0, "decode: %s", align_error());
        worst = fmax(worst, max_abs_diff(last, logits + (size_t)i * V, V));
    }
    CHECK(worst < 1e-4, "%s %s: cached logits differ from the full forward by %.3g", arch, prompt_kind_name(kind), worst);
    kvcache_free(kv);

    /* peft's directory, read by align */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/fixtures/prompt_learning/%s_%s_adapter", ALIGN_TEST_DIR, arch, prompt_kind_name(kind));
    CHECK(peft_prompt_is_adapter(dir) == 1, "%s is a prompt-learning adapter", dir);
    Model *pm = load_base(arch);
    CHECK(peft_prompt_load(dir, pm) == 0, "load %s: %s", dir, align_error());
    float *pl = all_logits(pm, &b);
    CHECK(memcmp(pl, logits, (size_t)N * V * sizeof(float)) == 0, "%s: peft's adapter gives other logits", dir);
    /* align's directory and .ckpt, re-read */
    char tmp[] = "/tmp/test_prompt_learning.XXXXXX", sub[600];
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    snprintf(sub, sizeof sub, "%s/adapter", tmp);
    CHECK(peft_prompt_save(sub, m, "hf_tiny") == 0, "save: %s", align_error());
    Model *rm = load_base(arch);
    CHECK(peft_prompt_load(sub, rm) == 0, "re-load: %s", align_error());
    float *rl = all_logits(rm, &b);
    CHECK(memcmp(rl, logits, (size_t)N * V * sizeof(float)) == 0, "align's adapter re-read gives other logits");
    ModelBundle mb = {0};
    ckpt_extras_init(&mb.extras);
    mb.model = m;
    snprintf(sub, sizeof sub, "%s/m.ckpt", tmp);
    CHECK(model_save_any(sub, &mb) == 0, "save ckpt: %s", align_error());
    snprintf(sub, sizeof sub, "%s/m-hf", tmp);
    CHECK(model_save_any(sub, &mb) != 0 && strstr(align_error(), ".ckpt"), "an HF directory is refused");
    snprintf(sub, sizeof sub, "%s/m.ckpt", tmp);
    ModelBundle lb;
    CHECK(model_load_any(sub, &backend_cpu, 0, &lb) == 0, "load ckpt: %s", align_error());
    CHECK(lb.model->prompt && model_prompt_config(lb.model)->kind == kind, "the .ckpt carries its virtual tokens");
    float *cl = all_logits(lb.model, &b);
    CHECK(memcmp(cl, logits, (size_t)N * V * sizeof(float)) == 0, "the .ckpt re-read gives other logits");
    model_bundle_free(&lb);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK(system(cmd) == 0, "cleanup");
    free(pl), free(rl), free(cl);
    model_free(pm), model_free(rm);

    free(last), free(off), free(grad), free(want_loss), free(dlogp), free(lp), free(logits), free(base_logits);
    free(tokens), free(starts), free(targets), free(mask), free(want_logits), free(emb), free(want_grad);
    model_free(m);
    model_free(base);
    st_close(&fx);
}

/* Prefix tuning with peft's prefix_projection (an MLP makes the prefix). */
static void check_projection(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/prompt_learning/llama_prefixproj.safetensors", ALIGN_TEST_DIR);
    if (st_open(&fx, path)) {
        CHECK(0, "open %s: %s", path, align_error());
        return;
    }
    static const char *const names[5] = {"prefix_tuning.embedding.weight", "prefix_tuning.transform.0.weight",
                                         "prefix_tuning.transform.0.bias", "prefix_tuning.transform.2.weight",
                                         "prefix_tuning.transform.2.bias"};
    int64_t n_tok, n_seq1;
    int32_t *tokens = fixture_i32(&fx, "tokens", &n_tok), *starts = fixture_i32(&fx, "seq_start", &n_seq1), *targets = fixture_i32(&fx, "targets", NULL);
    float *mask = fixture_f32(&fx, "mask", NULL), *want_logits = fixture_f32(&fx, "logits", NULL);
    int N = (int)n_tok;
    Batch b = {.n_tokens = N, .n_seqs = (int)n_seq1 - 1, .tokens = tokens, .seq_start = starts};
    Model *m = load_base("llama");
    int V = m->cfg.vocab_size;
    PromptConfig pc = {.kind = PREFIX_TUNING, .n_virtual = 3, .projection = 1, .seed = 1};
    CHECK(model_prompt_attach(m, &pc) == 0, "attach: %s", align_error());
    size_t total = 0;
    for (int k = 0; k < 5; k++) {
        ParamInfo *p = model_find_param(m, names[k]);
        float *v = fixture_f32(&fx, names[k], NULL);
        CHECK(p != NULL, "the model has %s", names[k]);
        m->be->to_device(m->params + p->offset, v, p->numel * sizeof(float));
        total += p->numel;
        free(v);
    }
    CHECK(model_trainable_elems(m) == total && model_prompt_numel(m) == total, "the five tensors train, nothing else");
    float *logits = all_logits(m, &b);
    double d = 0;
    for (size_t i = 0; i < (size_t)N * V; i++)
        d = fmax(d, fabs((double)logits[i] - want_logits[i]) / (1e-5 + 1e-5 * fabs(want_logits[i])));
    CHECK(d <= 1.0, "projection: logits differ from peft's by %.3g of the tolerance", d);
    float msum = 0, *dlogp = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) msum += mask[i];
    for (int i = 0; i < N; i++) dlogp[i] = -mask[i] / msum;
    model_zero_grad(m);
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, targets, NULL) == 0 && model_backward(m, dlogp, NULL) == 0,
          "train step: %s", align_error());
    for (int k = 0; k < 5; k++) {
        char gname[128];
        snprintf(gname, sizeof gname, "grad.%s", names[k]);
        ParamInfo *p = model_find_param(m, names[k]);
        float *want = fixture_f32(&fx, gname, NULL), *got = malloc(p->numel * sizeof(float));
        m->be->to_host(got, m->grads + p->grad_offset, p->numel * sizeof(float));
        double e = rel_err(got, want, p->numel);
        CHECK(e < 1e-4, "projection: %s gradient relative error %.3g", names[k], e);
        free(want), free(got);
    }
    /* peft's saved adapter is the projected prefix: it loads as a plain one */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/fixtures/prompt_learning/llama_prefixproj_adapter", ALIGN_TEST_DIR);
    Model *pm = load_base("llama");
    CHECK(peft_prompt_load(dir, pm) == 0, "load %s: %s", dir, align_error());
    float *pl = all_logits(pm, &b);
    CHECK(max_abs_diff(pl, logits, (size_t)N * V) < 1e-5, "peft's projected adapter: other logits");
    /* cached decoding of sequence 0, the prefix projected in the cache's priming */
    KVCache *kv = kvcache_create(m, 1, starts[1]);
    float *last = malloc((size_t)V * sizeof(float));
    double worst = 0;
    for (int i = 0; i < starts[1]; i++) {
        int32_t s1[2] = {0, 1}, slot = 0;
        Batch one = {.n_tokens = 1, .n_seqs = 1, .tokens = &tokens[i], .seq_start = s1};
        CHECK(model_forward_cached(m, kv, &slot, &one, last) == 0, "decode: %s", align_error());
        worst = fmax(worst, max_abs_diff(last, logits + (size_t)i * V, V));
    }
    CHECK(worst < 1e-4, "projection: cached logits differ from the full forward by %.3g", worst);
    kvcache_free(kv);
    /* a .ckpt keeps the five tensors (training goes on); the adapter the projection's output */
    char tmp[] = "/tmp/test_prompt_learning.XXXXXX", sub[600];
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    ModelBundle mb = {0};
    ckpt_extras_init(&mb.extras);
    mb.model = m;
    snprintf(sub, sizeof sub, "%s/m.ckpt", tmp);
    CHECK(model_save_any(sub, &mb) == 0, "save ckpt: %s", align_error());
    ModelBundle lb;
    CHECK(model_load_any(sub, &backend_cpu, 0, &lb) == 0, "load ckpt: %s", align_error());
    CHECK(lb.model->prompt && model_prompt_config(lb.model)->projection && model_trainable_elems(lb.model) == total,
          "the .ckpt brings the projection back");
    float *cl = all_logits(lb.model, &b);
    CHECK(memcmp(cl, logits, (size_t)N * V * sizeof(float)) == 0, "the .ckpt re-read gives other logits");
    snprintf(sub, sizeof sub, "%s/adapter", tmp);
    CHECK(peft_prompt_save(sub, m, NULL) == 0, "save adapter: %s", align_error());
    Model *rm = load_base("llama");
    CHECK(peft_prompt_load(sub, rm) == 0 && !model_prompt_config(rm)->projection, "re-load: %s", align_error());
    float *rl = all_logits(rm, &b);
    CHECK(max_abs_diff(rl, logits, (size_t)N * V) < 1e-5, "align's projected adapter: other logits");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK(system(cmd) == 0, "cleanup");
    model_bundle_free(&lb);
    free(cl), free(rl), free(pl), free(last), free(dlogp), free(logits);
    free(tokens), free(starts), free(targets), free(mask), free(want_logits);
    model_free(rm), model_free(pm), model_free(m);
    st_close(&fx);
}

int main(void) {
    check_fixture("llama", PROMPT_TUNING);
    check_fixture("llama", PREFIX_TUNING);
    check_fixture("gpt2", PROMPT_TUNING);
    check_fixture("gpt2", PREFIX_TUNING);
    check_fixture("mistral_sw", PROMPT_TUNING);
    check_fixture("mistral_sw", PREFIX_TUNING);
    check_fixture("gemma2", PROMPT_TUNING);
    check_fixture("gemma2", PREFIX_TUNING);
    check_fixture("gemma3", PROMPT_TUNING);
    check_fixture("gemma3", PREFIX_TUNING);
    check_projection();
    return test_summary();
}
