/* Attention memory and backend errors:
 *  - an op that cannot get memory surfaces as an error from model_forward,
 *    model_backward and model_forward_cached (nothing crashes, nothing
 *    returns garbage as success), and the next call works again. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "model.h"
#include "rng.h"
#include "test.h"
#include "util.h"

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* The largest |got - want|, relative to the largest |want|. */
static double rel_err(const float *got, const float *want, size_t n) {
    double e = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        e = d > e || isnan(d) ? d : e;
    }
    return e / (max_abs(want, n) + 1e-30);
}

/* ------------------------------------------------------------ models */

static void long_config(ModelConfig *c) {
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 64, c->dim = 16, c->n_layers = 1, c->n_heads = 1, c->n_kv_heads = 1, c->head_dim = 8;
    c->ffn_dim = 32;
}

/* A scratch allocation that fails inside an op is an error of the call that
 * ran it, and is forgotten once reported. */
static void test_failure_surfaces(void) {
    ModelConfig c;
    long_config(&c);
    c.n_heads = 2, c.n_kv_heads = 1;
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, 9);
    enum { T = 100 };
    int32_t tokens[T], targets[T], st[2] = {0, T}, last = T - 1;
    float logp[T], dlogp[T];
    Rng r;
    rng_seed(&r, 4);
    for (int i = 0; i < T; i++) tokens[i] = (int32_t)rng_below(&r, c.vocab_size);
    Batch b = {.n_tokens = T, .n_seqs = 1, .tokens = tokens, .seq_start = st};
    batch_next_token_targets(&b, targets);
    for (int i = 0; i < T; i++) dlogp[i] = targets[i] >= 0 ? 1.0f : 0.0f;
    float *clean = malloc(sizeof(float) * c.vocab_size), *again = malloc(sizeof(float) * c.vocab_size);
    CHECK(model_forward(m, &b) == 0 && model_logits(m, &last, 1, clean) == 0, "forward: %s", align_error());

    backend_cpu_inject_alloc_failures(1);
    align_error_clear();
    CHECK(model_forward(m, &b) == -1, "model_forward succeeded although its attention had no scratch");
    CHECK(strstr(align_error(), "model forward") && strstr(align_error(), "attention scratch"),
          "model_forward's error does not say what failed: \"%s\"", align_error());
    CHECK(model_logits(m, &last, 1, again) == -1, "model_logits read a failed forward");
    CHECK(model_forward(m, &b) == 0 && model_logits(m, &last, 1, again) == 0, "forward after a failure: %s",
          align_error());
    CHECK(memcmp(clean, again, sizeof(float) * c.vocab_size) == 0, "logits after a failure differ");

    CHECK(model_token_logprobs(m, targets, logp) == 0, "log-probs: %s", align_error());
    backend_cpu_inject_alloc_failures(1);
    align_error_clear();
    CHECK(model_backward(m, dlogp, NULL) == -1, "model_backward succeeded although its attention had no scratch");
    CHECK(strstr(align_error(), "model backward") != NULL, "model_backward's error: \"%s\"", align_error());

    KVCache *kv = kvcache_create(m, 1, T);
    int slot = 0;
    CHECK(kv != NULL, "kvcache_create: %s", align_error());
    if (kv) {
        backend_cpu_inject_alloc_failures(1);
        align_error_clear();
        CHECK(model_forward_cached(m, kv, &slot, &b, again) == -1,
              "model_forward_cached succeeded although its attention had no scratch");
        CHECK(strstr(align_error(), "attention scratch") != NULL, "model_forward_cached's error: \"%s\"",
              align_error());
        CHECK(kvcache_len(kv, 0) == 0, "a failed cached forward left %d tokens in its slot", kvcache_len(kv, 0));
        CHECK(model_forward_cached(m, kv, &slot, &b, again) == 0, "cached forward after a failure: %s", align_error());
        CHECK(rel_err(again, clean, c.vocab_size) < 1e-5, "cached logits after a failure differ");
        kvcache_free(kv);
    }
    backend_cpu_inject_alloc_failures(0);
    free(clean), free(again);
    model_free(m);
}

int main(void) {
    test_failure_surfaces();
    return test_summary();
}
