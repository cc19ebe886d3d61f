/* The gradient sum overlapping the backward pass (common/train/grad_overlap.h,
 * Model.grads_ready), in one process (the 2- and 3-rank sums are
 * tests/cli/mpi_train.sh's):
 *  - model_backward calls the hook once per layer, from the last layer
 *    down, and a layer's gradient is final when the hook sees it (a copy
 *    taken then equals the gradient after the backward, exactly), on the
 *    Llama and GPT-2 layouts;
 *  - grad_overlap_plan: one bucket per layer covering exactly the layer's
 *    trainable tensors, the rest (embeddings, final norm, heads) outside
 *    every bucket; freeze tuning of the last layer plans empty buckets for
 *    the frozen layers; LoRA adapters fall back (0, with a reason);
 *  - armed for a backward, every non-empty layer bucket starts during it
 *    and grad_overlap_finish leaves the gradient as it was (a world of 1). */
#include <stdlib.h>
#include <string.h>

#include "grad_overlap.h"
#include "lora.h"
#include "model.h"
#include "rng.h"
#include "test.h"
#include "util.h"

static Model *tiny(ModelArch arch) {
    ModelConfig c;
    model_config_defaults(&c, arch);
    c.vocab_size = 50, c.dim = 32, c.n_layers = 3, c.n_heads = 4, c.head_dim = 8, c.ffn_dim = 40;
    c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    c.max_seq_len = 64;
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, 7);
    return m;
}

static int backward(Model *m) {
    Rng r;
    rng_seed(&r, 11);
    int32_t tokens[24], targets[24], starts[3] = {0, 10, 24};
    for (int i = 0; i < 24; i++) tokens[i] = (int32_t)rng_below(&r, 50);
    Batch b = {.n_tokens = 24, .n_seqs = 2, .tokens = tokens, .seq_start = starts};
    batch_next_token_targets(&b, targets);
    float lp[24], d[24];
    for (int i = 0; i < 24; i++) d[i] = targets[i] >= 0 ? -1.0f : 0.0f;
    model_zero_grad(m);
    if (model_forward(m, &b) || model_token_logprobs(m, targets, lp)) return -1;
    return model_backward(m, d, NULL);
}

/* What the hook saw: the order of the layers and a copy of their ranges. */
typedef struct {
    GradOverlap *g;
    int order[8], n;
    float *seen; /* [n_grad_elems]: each layer's range copied when its hook ran */
} Spy;

static void spy(void *ctx, int layer) {
    Spy *s = ctx;
    if (s->n < 8) s->order[s->n] = layer;
    s->n++;
    size_t lo = s->g->lo[layer], hi = s->g->hi[layer];
    memcpy(s->seen + lo, s->g->m->grads + lo, (hi - lo) * sizeof(float));
}

static void check_hook(ModelArch arch, const char *what) {
    Model *m = tiny(arch);
    GradOverlap g;
    const char *why;
    CHECK(model_ensure_grads(m) == 0 && grad_overlap_plan(&g, m, &why) == 1, "%s: plan (%s)", what, why ? why : "");
    int L = m->cfg.n_layers;
    /* each layer's range holds exactly its tensors; the rest holds none */
    int bad = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        int in_layer = -1;
        for (int l = 0; l < L; l++)
            if ((size_t)p->grad_offset >= g.lo[l] && (size_t)p->grad_offset + p->numel <= g.hi[l]) in_layer = l;
        char want[32];
        int expect = -1;
        for (int l = 0; l < L; l++) {
            snprintf(want, sizeof want, arch == ARCH_LLAMA ? "model.layers.%d." : "transformer.h.%d.", l);
            if (!strncmp(p->name, want, strlen(want))) expect = l;
        }
        if (in_layer != expect) bad++, fprintf(stderr, "  %s: %s in bucket %d, expected %d\n", what, p->name, in_layer, expect);
    }
    CHECK(bad == 0, "%s: every layer tensor in its layer's bucket, the rest in none (%d wrong)", what, bad);
    Spy s = {.g = &g, .seen = calloc(m->n_grad_elems, sizeof(float))};
    m->grads_ready = spy, m->grads_ready_ctx = &s;
    CHECK(backward(m) == 0, "%s: backward: %s", what, align_error());
    m->grads_ready = NULL;
    int ordered = s.n == L;
    for (int k = 0; ordered && k < L; k++) ordered = s.order[k] == L - 1 - k;
    CHECK(ordered, "%s: the hook ran once per layer, last layer first (%d calls)", what, s.n);
    size_t diff = 0, nonzero = 0;
    for (int l = 0; l < L; l++)
        for (size_t k = g.lo[l]; k < g.hi[l]; k++) diff += s.seen[k] != m->grads[k], nonzero += m->grads[k] != 0;
    CHECK(diff == 0 && nonzero > 0, "%s: each layer's gradient was final when its hook ran (%zu of them changed later)",
          what, diff);
    /* armed: every layer bucket starts during the backward; finish keeps the gradient (one rank) */
    float *before = malloc(m->n_grad_elems * sizeof(float));
    memcpy(before, m->grads, m->n_grad_elems * sizeof(float));
    grad_overlap_arm(&g);
    int rc = backward(m);
    CHECK(rc == 0 && grad_overlap_finish(&g) == 0 && m->grads_ready == NULL, "%s: armed backward and finish", what);
    CHECK(g.started_early == L && g.started == L + 2, "%s: %ld of %ld buckets started during the backward (want %d of %d)",
          what, g.started_early, g.started, L, L + 2);
    CHECK(!memcmp(before, m->grads, m->n_grad_elems * sizeof(float)), "%s: the same gradient with the hook armed", what);
    free(before), free(s.seen);
    grad_overlap_free(&g);
    model_free(m);
}

int main(void) {
    check_hook(ARCH_LLAMA, "llama");
    check_hook(ARCH_GPT2, "gpt2");

    /* freeze tuning of the last layer: the frozen layers' buckets are empty */
    Model *m = tiny(ARCH_LLAMA);
    model_set_trainable(m, "", 0);
    model_set_trainable(m, "model.layers.2.", 1);
    GradOverlap g;
    const char *why;
    CHECK(grad_overlap_plan(&g, m, &why) == 1 && g.lo[0] == g.hi[0] && g.lo[1] == g.hi[1] &&
              g.hi[2] - g.lo[2] == m->n_grad_elems,
          "freeze tuning: one bucket, the last layer's whole gradient");
    CHECK(model_ensure_grads(m) == 0, "grads");
    grad_overlap_arm(&g);
    CHECK(backward(m) == 0 && grad_overlap_finish(&g) == 0 && g.started_early == 1 && g.started == 1,
          "freeze tuning: its one bucket starts during the backward (%ld of %ld)", g.started_early, g.started);
    grad_overlap_free(&g);
    model_free(m);

    /* LoRA: adapters are appended after the heads; the plain path */
    m = tiny(ARCH_LLAMA);
    LoraConfig lc;
    lora_config_defaults(&lc);
    lc.rank = 2;
    CHECK(model_lora_attach(m, &lc) == 0, "lora attach: %s", align_error());
    int r = grad_overlap_plan(&g, m, &why);
    CHECK(r == 0 && why && strstr(why, "adapters"), "LoRA falls back to the all-reduce after the backward (%d, %s)", r,
          why ? why : "no reason");
    grad_overlap_free(&g);
    model_free(m);
    return test_summary();
}
