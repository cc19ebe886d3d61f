/* Cached decoding equals a full forward: for tiny GPT-2 and Llama (GQA,
 * q/k/v bias) models, the logits of each new token from model_forward_cached
 * (a prefill of prompts of different lengths in one batch, then one token
 * per sequence per step, then a multi-token chunk) match model_forward over
 * the whole sequence within 1e-5 relative. Also: overflow and misuse are
 * refused without changing the cache. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "rng.h"
#include "test.h"
#include "util.h"

static double max_rel_diff(const float *a, const float *b, int n) {
    double scale = 0, worst = 0;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i]) / scale);
    return worst;
}

/* Logits of the last token of tokens[0..n) by a full forward. */
static void full_logits(Model *m, const int32_t *tokens, int n, float *out) {
    int32_t st[2] = {0, n}, last = n - 1;
    Batch b = {.n_tokens = n, .n_seqs = 1, .tokens = tokens, .seq_start = st};
    model_forward(m, &b);
    model_logits(m, &last, 1, out);
}

static void check_arch(ModelArch arch) {
    const char *name = arch == ARCH_GPT2 ? "gpt2" : "llama";
    ModelConfig c;
    model_config_defaults(&c, arch);
    c.vocab_size = 40, c.dim = 32, c.n_layers = 3, c.n_heads = 4, c.head_dim = 8, c.ffn_dim = 48, c.max_seq_len = 64;
    c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    if (arch == ARCH_LLAMA) c.qkv_bias = 1, c.rope_theta = 500000;
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, 9);
    for (size_t i = 0; i < m->n_elems; i++) m->params[i] *= 5.0f; /* sharper distributions */
    KVCache *kv = kvcache_create(m, 4, 32);
    CHECK(kv != NULL, "kvcache_create: %s", align_error());
    Rng r;
    rng_seed(&r, 4);
    enum { S = 3 };
    int32_t seq[S][32];
    int len[S] = {5, 1, 9};
    for (int s = 0; s < S; s++)
        for (int i = 0; i < 32; i++) seq[s][i] = (int32_t)rng_below(&r, c.vocab_size);
    int32_t slots[S] = {2, 0, 3};
    float got[S * 40], want[40];
    double worst = 0;
    /* prefill all prompts at once */
    int32_t tokens[64], starts[S + 1] = {0};
    for (int s = 0; s < S; s++) {
        memcpy(tokens + starts[s], seq[s], len[s] * sizeof(int32_t));
        starts[s + 1] = starts[s] + len[s];
    }
    Batch pre = {.n_tokens = starts[S], .n_seqs = S, .tokens = tokens, .seq_start = starts};
    CHECK(model_forward_cached(m, kv, slots, &pre, got) == 0, "%s prefill: %s", name, align_error());
    for (int s = 0; s < S; s++) {
        full_logits(m, seq[s], len[s], want);
        worst = fmax(worst, max_rel_diff(got + s * 40, want, 40));
    }
    /* decode: one token per sequence per step */
    for (int step = 0; step < 6; step++) {
        int32_t one[S], st[S + 1];
        for (int s = 0; s < S; s++) one[s] = seq[s][len[s]], st[s] = s;
        st[S] = S;
        Batch dec = {.n_tokens = S, .n_seqs = S, .tokens = one, .seq_start = st};
        CHECK(model_forward_cached(m, kv, slots, &dec, got) == 0, "%s decode: %s", name, align_error());
        for (int s = 0; s < S; s++) {
            len[s]++;
            full_logits(m, seq[s], len[s], want);
            worst = fmax(worst, max_rel_diff(got + s * 40, want, 40));
        }
    }
    /* a multi-token chunk on one slot */
    int32_t one_slot = slots[2], st2[2] = {0, 4};
    Batch chunk = {.n_tokens = 4, .n_seqs = 1, .tokens = seq[2] + len[2], .seq_start = st2};
    CHECK(model_forward_cached(m, kv, &one_slot, &chunk, got) == 0, "%s chunk: %s", name, align_error());
    len[2] += 4;
    full_logits(m, seq[2], len[2], want);
    worst = fmax(worst, max_rel_diff(got, want, 40));
    CHECK(worst < 1e-5, "%s cached vs full forward: worst relative difference %.3g", name, worst);
    CHECK(kvcache_len(kv, slots[2]) == len[2], "%s slot length %d, want %d", name, kvcache_len(kv, slots[2]), len[2]);

    /* overflow refused, cache unchanged */
    int32_t big[40] = {0}, stb[2] = {0, 40};
    Batch over = {.n_tokens = 40, .n_seqs = 1, .tokens = big, .seq_start = stb};
    int before = kvcache_len(kv, slots[0]);
    CHECK(model_forward_cached(m, kv, slots, &over, got) == -1, "%s overflow refused", name);
    CHECK(kvcache_len(kv, slots[0]) == before, "%s overflow left the slot unchanged", name);
    int32_t dup[2] = {1, 1}, two[2] = {3, 4}, st3[3] = {0, 1, 2};
    Batch twice = {.n_tokens = 2, .n_seqs = 2, .tokens = two, .seq_start = st3};
    CHECK(model_forward_cached(m, kv, dup, &twice, got) == -1, "%s same slot twice refused", name);
    /* a copied prefix continues like the original: slot 1 takes the first 7
     * tokens of slot 3 (seq 2) and is fed the next two */
    CHECK(kvcache_copy_prefix(kv, 1, slots[2], 7) == 0, "%s copy prefix: %s", name, align_error());
    CHECK(kvcache_len(kv, 1) == 7, "%s copied slot holds 7 tokens", name);
    int32_t cslot = 1, st4[2] = {0, 2};
    Batch cont = {.n_tokens = 2, .n_seqs = 1, .tokens = seq[2] + 7, .seq_start = st4};
    CHECK(model_forward_cached(m, kv, &cslot, &cont, got) == 0, "%s after copy: %s", name, align_error());
    full_logits(m, seq[2], 9, want);
    double copied = max_rel_diff(got, want, 40);
    CHECK(copied < 1e-5, "%s copied prefix + 2 tokens vs full forward: %.3g", name, copied);
    CHECK(kvcache_copy_prefix(kv, 1, slots[2], len[2] + 1) == -1, "%s copying more than the source holds refused", name);
    CHECK(kvcache_copy_prefix(kv, 1, 1, 1) == -1 && kvcache_copy_prefix(kv, 4, 1, 1) == -1,
          "%s copying onto itself or past the slots refused", name);
    kvcache_reset(kv, slots[0]);
    CHECK(kvcache_len(kv, slots[0]) == 0, "%s reset empties the slot", name);
    kvcache_free(kv);
    model_free(m);
}

int main(void) {
    check_arch(ARCH_GPT2);
    check_arch(ARCH_LLAMA);
    return test_summary();
}
