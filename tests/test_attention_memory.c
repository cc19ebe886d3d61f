/* Attention memory and backend errors:
 *  - the CPU attention, which works on blocks of query rows, gives the
 *    outputs, log-sum-exps and gradients of a plain double-precision
 *    reference over sequences spanning several blocks, with and without
 *    shared prefixes and grouped-query heads;
 *  - a model forward and backward over one 30,000-token sequence succeeds
 *    under an address-space limit 1 GiB above what the process already
 *    maps (a T x T score matrix alone is 3.4 GiB), holding scratch linear in
 *    T, and the last token's logits at a moderate length equal those of the
 *    reference attention;
 *  - an op that cannot get memory surfaces as an error from model_forward,
 *    model_backward and model_forward_cached (nothing crashes, nothing
 *    returns garbage as success), and the next call works again. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "attention_reference.h"
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

/* Sequences longer than a block (and one shorter, and one of one token),
 * plainly packed or extending a shared prefix, against the reference. */
static void test_blocks_match_reference(int prefixed) {
    enum { NS = 5, HQ = 4, HKV = 2, HD = 16 };
    int lens[NS] = {150, 70, 1, 129, 64};
    int32_t seq_start[NS + 1] = {0}, seq_prefix[NS] = {-1, 0, -1, 0, -1};
    for (int s = 0; s < NS; s++) seq_start[s + 1] = seq_start[s] + lens[s];
    int N = seq_start[NS], ld = (HQ + 2 * HKV) * HD, ldo = HQ * HD;
    const int32_t *pre = prefixed ? seq_prefix : NULL;
    float *qkv = malloc(sizeof(float) * N * ld), *dout = malloc(sizeof(float) * N * ldo);
    float *out = malloc(sizeof(float) * N * ldo), *lse = malloc(sizeof(float) * N * HQ);
    float *dqkv = malloc(sizeof(float) * N * ld);
    float *rout = malloc(sizeof(float) * N * ldo), *rlse = malloc(sizeof(float) * N * HQ);
    float *rdqkv = malloc(sizeof(float) * N * ld);
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < N * ld; i++) qkv[i] = 3.0f * (rng_uniform(&r) - 0.5f);
    for (int i = 0; i < N * ldo; i++) dout[i] = rng_uniform(&r) - 0.5f;
    const Backend *be = &backend_cpu;
    if (prefixed) {
        be->attention_forward_prefixed(out, lse, qkv, seq_start, pre, NS, N, HQ, HKV, HD);
        be->attention_backward_prefixed(dqkv, dout, out, lse, qkv, seq_start, pre, NS, N, HQ, HKV, HD);
    } else {
        be->attention_forward(out, lse, qkv, seq_start, NS, N, HQ, HKV, HD);
        be->attention_backward(dqkv, dout, out, lse, qkv, seq_start, NS, N, HQ, HKV, HD);
    }
    CHECK(be->status() == 0, "attention failed: %s", align_error());
    reference_attention(rout, rlse, rdqkv, dout, qkv, seq_start, pre, NS, N, HQ, HKV, HD, 0);
    const char *what = prefixed ? "prefixed" : "plain";
    double e_out = reference_rel_err(out, rout, (size_t)N * ldo), e_lse = reference_rel_err(lse, rlse, (size_t)N * HQ);
    double e_d = reference_rel_err(dqkv, rdqkv, (size_t)N * ld);
    printf("%s attention against the reference: output %.2g, lse %.2g, gradient %.2g (relative)\n", what, e_out,
           e_lse, e_d);
    CHECK(e_out < 1e-5, "%s attention output differs from the reference by %.3g (relative)", what, e_out);
    CHECK(e_lse < 1e-5, "%s attention lse differs from the reference by %.3g (relative)", what, e_lse);
    CHECK(e_d < 1e-5, "%s attention gradient differs from the reference by %.3g (relative)", what, e_d);
    free(qkv), free(dout), free(out), free(lse), free(dqkv), free(rout), free(rlse), free(rdqkv);
}

/* ------------------------------------------------------------ models */

static void long_config(ModelConfig *c) {
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 64, c->dim = 16, c->n_layers = 1, c->n_heads = 1, c->n_kv_heads = 1, c->head_dim = 8;
    c->ffn_dim = 32;
}

/* The reference attention as a backend op, to run a whole model with. */
static void reference_attention_forward(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                                        int n_seqs, int N, int Hq, int Hkv, int hd) {
    reference_attention(out, lse, NULL, NULL, qkv, seq_start, NULL, n_seqs, N, Hq, Hkv, hd, 0);
}

/* Bytes of address space this process maps now. */
static size_t mapped_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return (size_t)pages * 4096;
}

static void test_long_sequence(void) {
    ModelConfig c;
    long_config(&c);
    Model *m = model_create(&c, &backend_cpu);
    CHECK(m != NULL, "model_create: %s", align_error());
    if (!m) return;
    model_init_random(m, 7);
    enum { T = 30000, TM = 700 };
    int32_t *tokens = malloc(sizeof(int32_t) * T), *targets = malloc(sizeof(int32_t) * T);
    float *logp = malloc(sizeof(float) * T), *dlogp = malloc(sizeof(float) * T);
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < T; i++) tokens[i] = (int32_t)rng_below(&r, c.vocab_size);

    /* a moderate length first: the last token's logits against the reference */
    int32_t st[2] = {0, TM}, last = TM - 1;
    Batch b = {.n_tokens = TM, .n_seqs = 1, .tokens = tokens, .seq_start = st};
    float *got = malloc(sizeof(float) * c.vocab_size), *want = malloc(sizeof(float) * c.vocab_size);
    CHECK(model_forward(m, &b) == 0 && model_logits(m, &last, 1, got) == 0, "forward at %d tokens: %s", TM,
          align_error());
    Backend ref = backend_cpu;
    ref.attention_forward = reference_attention_forward;
    Model *mr = model_create(&c, &ref);
    model_init_random(mr, 7);
    CHECK(model_forward(mr, &b) == 0 && model_logits(mr, &last, 1, want) == 0, "reference forward: %s",
          align_error());
    CHECK(reference_rel_err(got, want, c.vocab_size) < 1e-5, "last-token logits at %d tokens differ from the reference by %.3g",
          TM, reference_rel_err(got, want, c.vocab_size));
    model_free(mr);

    /* then 30,000 tokens under a limit that no T x T buffer fits in */
    struct rlimit old;
    getrlimit(RLIMIT_AS, &old);
    struct rlimit lim = old;
    lim.rlim_cur = mapped_bytes() + ((size_t)1 << 30);
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < lim.rlim_cur) lim.rlim_cur = old.rlim_cur;
    CHECK(setrlimit(RLIMIT_AS, &lim) == 0, "setrlimit failed");
    st[1] = T;
    b.n_tokens = T;
    batch_next_token_targets(&b, targets);
    for (int i = 0; i < T; i++) dlogp[i] = targets[i] >= 0 ? -1.0f / (T - 1) : 0.0f;
    double t0 = align_now();
    int rc = model_forward(m, &b);
    CHECK(rc == 0, "forward over %d tokens: %s", T, align_error());
    if (rc == 0) {
        CHECK(model_token_logprobs(m, targets, logp) == 0, "log-probs over %d tokens: %s", T, align_error());
        CHECK(model_backward(m, dlogp, NULL) == 0, "backward over %d tokens: %s", T, align_error());
        int finite = 1;
        for (int i = 0; i < T - 1; i++) finite &= isfinite(logp[i]) && logp[i] < 0.0f;
        CHECK(finite, "log-probs over %d tokens are not all finite and negative", T);
        const ParamInfo *wq = model_find_param(m, "model.layers.0.self_attn.q_proj.weight");
        float *g = wq ? malloc(sizeof(float) * wq->numel) : NULL;
        if (g) {
            m->be->to_host(g, m->grads + wq->grad_offset, sizeof(float) * wq->numel);
            CHECK(isfinite(max_abs(g, wq->numel)) && max_abs(g, wq->numel) > 0, "q_proj gradient is %g",
                  max_abs(g, wq->numel));
            free(g);
        }
    }
    printf("%d tokens: forward + backward %.1f s, attention scratch peak %.1f MiB per thread\n", T,
           align_now() - t0, backend_cpu_attention_scratch_peak() / 1048576.0);
    setrlimit(RLIMIT_AS, &old);
    /* two buffers of 64 rows x T floats: 14.6 MiB; a T x T one: 3.4 GiB */
    CHECK(backend_cpu_attention_scratch_peak() <= (size_t)2 * 64 * T * sizeof(float),
          "attention scratch peaked at %zu bytes, more than linear in %d tokens", backend_cpu_attention_scratch_peak(), T);
    free(tokens), free(targets), free(logp), free(dlogp), free(got), free(want);
    model_free(m);
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
        CHECK(reference_rel_err(again, clean, c.vocab_size) < 1e-5, "cached logits after a failure differ");
        kvcache_free(kv);
    }
    backend_cpu_inject_alloc_failures(0);
    free(clean), free(again);
    model_free(m);
}

int main(void) {
    test_blocks_match_reference(0);
    test_blocks_match_reference(1);
    test_failure_surfaces();
    test_long_sequence();
    return test_summary();
}
