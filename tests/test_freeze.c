/* BitFit and freeze tuning (common/model/freeze.h) on tiny models:
 *  - BitFit: exactly the `.bias` tensors get gradient slots, their gradient
 *    equals the same tensors' gradient with everything trainable (the
 *    backward pass through frozen weights loses nothing), and a model
 *    without biases (Llama) is refused with a sentence;
 *  - freeze tuning, LLaMA-Factory's matching: --trainable-layers N picks
 *    the last N layers (negative: the first), --trainable-modules the
 *    module components after the layer index; the chosen tensors' gradient
 *    equals the all-trainable one; a module no layer has is named with
 *    the ones there are; a count out of range is refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "freeze.h"
#include "model.h"
#include "rng.h"
#include "test.h"
#include "util.h"

static Model *tiny(ModelArch arch, int qkv_bias) {
    ModelConfig c;
    model_config_defaults(&c, arch);
    c.vocab_size = 50, c.dim = 32, c.n_layers = 3, c.n_heads = 4, c.head_dim = 8, c.ffn_dim = 40;
    c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    c.max_seq_len = 64;
    c.qkv_bias = qkv_bias;
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, 7);
    return m;
}

/* Gradient of a fixed loss (sum of -log p over next tokens) into grads. */
static void run_grad(Model *m) {
    Rng r;
    rng_seed(&r, 11);
    int32_t tokens[24], targets[24], starts[3] = {0, 10, 24};
    for (int i = 0; i < 24; i++) tokens[i] = (int32_t)rng_below(&r, 50);
    Batch b = {.n_tokens = 24, .n_seqs = 2, .tokens = tokens, .seq_start = starts};
    batch_next_token_targets(&b, targets);
    float lp[24], d[24];
    for (int i = 0; i < 24; i++) d[i] = targets[i] >= 0 ? -1.0f : 0.0f;
    model_zero_grad(m);
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, targets, lp) == 0 && model_backward(m, d, NULL) == 0,
          "forward/backward: %s", align_error());
}

/* The trainable tensors of m are exactly those `want` accepts, and their
 * gradient equals the all-trainable model's (same weights). */
static void check_selection(Model *m, int (*want)(const char *name, void *ctx), void *ctx, const char *what) {
    Model *full = tiny(m->cfg.arch, m->cfg.qkv_bias);
    memcpy(full->params, m->params, m->n_elems * sizeof(float));
    run_grad(full);
    run_grad(m);
    int wrong = 0, n_train = 0;
    double maxdiff = 0, maxg = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        int w = want(p->name, ctx);
        if (w != (p->grad_offset >= 0)) {
            wrong++;
            fprintf(stderr, "  %s: %s %s\n", what, p->name, w ? "should train" : "should be frozen");
        }
        if (p->grad_offset < 0) continue;
        n_train++;
        const float *g = m->grads + p->grad_offset, *gf = full->grads + full->info[i].grad_offset;
        for (size_t k = 0; k < p->numel; k++) {
            maxdiff = fmax(maxdiff, fabs(g[k] - gf[k]));
            maxg = fmax(maxg, fabs(gf[k]));
        }
    }
    CHECK(!wrong && n_train > 0, "%s: %d tensors wrongly (un)frozen, %d train", what, wrong, n_train);
    CHECK(maxg > 0 && maxdiff <= 1e-5 * maxg, "%s: gradient differs from the all-trainable one by %g (max %g)", what,
          maxdiff, maxg);
    model_free(full);
}

static int is_bias(const char *name, void *ctx) {
    (void)ctx;
    size_t n = strlen(name);
    return n > 5 && !strcmp(name + n - 5, ".bias");
}

typedef struct {
    const char *const *prefixes; /* trainable name prefixes, NULL-terminated */
} Prefixes;
static int has_prefix(const char *name, void *ctx) {
    for (const char *const *p = ((Prefixes *)ctx)->prefixes; *p; p++)
        if (!strncmp(name, *p, strlen(*p))) return 1;
    return 0;
}

static void test_bitfit(void) {
    Model *g = tiny(ARCH_GPT2, 0);
    int n = model_train_only_biases(g);
    CHECK(n > 0, "gpt2 bitfit: %s", align_error());
    check_selection(g, is_bias, NULL, "gpt2 bitfit");
    model_free(g);

    Model *q = tiny(ARCH_LLAMA, 1); /* Qwen2: q/k/v biases */
    CHECK(model_train_only_biases(q) == 3 * 3, "qwen2 bitfit trains the 3 layers' q/k/v biases: %s", align_error());
    check_selection(q, is_bias, NULL, "qwen2 bitfit");
    model_free(q);

    Model *l = tiny(ARCH_LLAMA, 0);
    CHECK(model_train_only_biases(l) == -1 && strstr(align_error(), "no bias"), "llama bitfit refused: %s", align_error());
    model_free(l);
}

static void test_freeze_layers(void) {
    Model *l = tiny(ARCH_LLAMA, 0);
    CHECK(model_train_layers(l, 2, NULL) > 0, "last 2 layers: %s", align_error());
    static const char *const last2[] = {"model.layers.1.", "model.layers.2.", NULL};
    check_selection(l, has_prefix, &(Prefixes){last2}, "llama last 2 layers");

    CHECK(model_train_layers(l, -1, "all") > 0, "first layer: %s", align_error());
    static const char *const first[] = {"model.layers.0.", NULL};
    check_selection(l, has_prefix, &(Prefixes){first}, "llama first layer");

    CHECK(model_train_layers(l, 1, "mlp,input_layernorm") == 4, "last layer's mlp + input norm: %s", align_error());
    static const char *const mods[] = {"model.layers.2.mlp.", "model.layers.2.input_layernorm.", NULL};
    check_selection(l, has_prefix, &(Prefixes){mods}, "llama mlp,input_layernorm");

    CHECK(model_train_layers(l, 1, "mlp,attn") == -1 && strstr(align_error(), "\"attn\"") &&
              strstr(align_error(), "self_attn"),
          "a module the layers lack is named with those they have: %s", align_error());
    CHECK(model_train_layers(l, 4, NULL) == -1 && strstr(align_error(), "--trainable-layers 4"), "4 of 3 layers refused: %s",
          align_error());
    CHECK(model_train_layers(l, 0, NULL) == -1, "0 layers refused");
    model_free(l);

    Model *g = tiny(ARCH_GPT2, 0);
    CHECK(model_train_layers(g, 1, "attn") == 4, "gpt2 last layer's attn (c_attn, c_proj weights + biases): %s", align_error());
    static const char *const gattn[] = {"transformer.h.2.attn.", NULL};
    check_selection(g, has_prefix, &(Prefixes){gattn}, "gpt2 attn");
    model_free(g);
}

int main(void) {
    test_bitfit();
    test_freeze_layers();
    return test_summary();
}
