/* Finite-difference gradient checks.
 *
 * 1. Every backend op: for a random scalar loss L = sum(r * op(x)), the
 *    backward pass must match central differences of L in double-checked
 *    fp32 (eps 1e-2 on O(1) inputs; tolerance 2e-2 relative to the largest
 *    gradient, the usual fp32 finite-difference budget).
 * 2. The whole model (tiny GPT-2, tiny Llama with GQA + bias + tied
 *    embeddings, and a value head, and with a sliding window of 2 on its
 *    second layer), on a packed batch of two sequences:
 *    d(loss)/d(param) for sampled entries of EVERY tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "rng.h"
#include "test.h"
#include "util.h"

static const Backend *be = &backend_cpu;
static Rng rng;

static void fill(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_normal(&rng) * s);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Compare analytic gradient g of f at x (n entries) with central
 * differences, for up to 24 sampled entries. */
typedef double (*LossFn)(void *ctx);
static void check_grad(const char *what, float *x, const float *g, size_t n, LossFn f, void *ctx) {
    double gmax = 1e-6;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
    double worst = 0;
    size_t stride = n / 24 + 1;
    for (size_t i = rng_below(&rng, stride); i < n; i += stride) {
        float keep = x[i];
        float h = 1e-2f * fmaxf(1.0f, fabsf(keep));
        x[i] = keep + h;
        double lp = f(ctx);
        x[i] = keep - h;
        double lm = f(ctx);
        x[i] = keep;
        double num = (lp - lm) / (2.0 * h);
        double err = fabs(num - g[i]) / gmax;
        if (err > worst) worst = err;
    }
    CHECK(worst < 2e-2, "%s: finite-difference error %.3g of max |grad| %.3g", what, worst, gmax);
}

/* ---- linear ---- */
enum { N = 6, C = 8, OC = 5 };
static float x_[N * C], w_[OC * C], b_[OC], r_[N * OC], out_[N * OC];
static double loss_linear(void *ctx) {
    be->matmul_forward(out_, x_, w_, b_, N, C, OC);
    return dot(out_, r_, N * OC);
}
static void test_linear(void) {
    fill(x_, N * C, 1), fill(w_, OC * C, 1), fill(b_, OC, 1), fill(r_, N * OC, 1);
    float dx[N * C], dw[OC * C] = {0}, db[OC] = {0};
    be->matmul_backward_input(dx, r_, w_, N, C, OC, 0);
    be->matmul_backward_weight(dw, db, r_, OC, x_, N, C, OC);
    check_grad("linear dinp", x_, dx, N * C, loss_linear, NULL);
    check_grad("linear dweight", w_, dw, OC * C, loss_linear, NULL);
    check_grad("linear dbias", b_, db, OC, loss_linear, NULL);
}

/* ---- norms ---- */
static float nx[N * C], nw[C], nb[C], nr[N * C], nout[N * C], nstat[2 * N];
static int norm_is_layer;
static double loss_norm(void *ctx) {
    if (norm_is_layer) be->layernorm_forward(nout, nstat, nstat + N, nx, nw, nb, N, C, 1e-5f);
    else be->rmsnorm_forward(nout, nstat + N, nx, nw, N, C, 1e-6f);
    return dot(nout, nr, N * C);
}
static void test_norms(void) {
    for (norm_is_layer = 0; norm_is_layer < 2; norm_is_layer++) {
        fill(nx, N * C, 1), fill(nw, C, 1), fill(nb, C, 1), fill(nr, N * C, 1);
        loss_norm(NULL);
        float dx[N * C] = {0}, dw[C] = {0}, db[C] = {0};
        if (norm_is_layer) be->layernorm_backward(dx, dw, db, nr, nx, nw, nstat, nstat + N, N, C);
        else be->rmsnorm_backward(dx, dw, nr, nx, nw, nstat + N, N, C);
        const char *nm = norm_is_layer ? "layernorm" : "rmsnorm";
        char buf[64];
        snprintf(buf, sizeof buf, "%s dinp", nm);
        check_grad(buf, nx, dx, N * C, loss_norm, NULL);
        snprintf(buf, sizeof buf, "%s dweight", nm);
        check_grad(buf, nw, dw, C, loss_norm, NULL);
        if (norm_is_layer) check_grad("layernorm dbias", nb, db, C, loss_norm, NULL);
    }
}

/* ---- activations ---- */
static float ax[N * 2 * C], ar[N * 2 * C], aout[N * 2 * C];
static int act_is_gelu;
static double loss_act(void *ctx) {
    if (act_is_gelu) {
        be->gelu_forward(aout, ax, N * C);
        return dot(aout, ar, N * C);
    }
    be->swiglu_forward(aout, ax, N, C);
    return dot(aout, ar, N * C);
}
static void test_activations(void) {
    for (act_is_gelu = 0; act_is_gelu < 2; act_is_gelu++) {
        fill(ax, N * 2 * C, 1.5f), fill(ar, N * C, 1);
        float dx[N * 2 * C];
        if (act_is_gelu) be->gelu_backward(dx, ar, ax, N * C);
        else be->swiglu_backward(dx, ar, ax, N, C);
        check_grad(act_is_gelu ? "gelu" : "swiglu", ax, dx, act_is_gelu ? N * C : N * 2 * C, loss_act, NULL);
    }
}

/* ---- rope + attention over a packed batch (GQA: 4 q heads, 2 kv heads) ---- */
enum { AN = 9, HQ = 4, HKV = 2, HD = 6, QD = (HQ + 2 * HKV) * HD };
static float qkv0[AN * QD], qkv1[AN * QD], att[AN * HQ * HD], lse[HQ * AN], atr[AN * HQ * HD], invf[HD / 2];
static int32_t apos[AN], seqs[3] = {0, 4, AN};
static double loss_attn(void *ctx) {
    memcpy(qkv1, qkv0, sizeof qkv0);
    be->rope_forward(qkv1, apos, invf, AN, HQ, HKV, HD);
    be->attention_forward(att, lse, qkv1, seqs, 2, AN, HQ, HKV, HD);
    return dot(att, atr, AN * HQ * HD);
}
static void test_attention(void) {
    fill(qkv0, AN * QD, 1), fill(atr, AN * HQ * HD, 1);
    for (int j = 0; j < HD / 2; j++) invf[j] = powf(10000.0f, -2.0f * j / HD);
    for (int i = 0; i < AN; i++) apos[i] = i < 4 ? i : i - 4;
    loss_attn(NULL);
    float dqkv[AN * QD];
    be->attention_backward(dqkv, atr, att, lse, qkv1, seqs, 2, AN, HQ, HKV, HD);
    be->rope_backward(dqkv, apos, invf, AN, HQ, HKV, HD);
    check_grad("rope+attention dqkv", qkv0, dqkv, AN * QD, loss_attn, NULL);
    /* attention must never look across the sequence boundary */
    float out2[AN * HQ * HD];
    memcpy(out2, att, sizeof att);
    for (int c = 0; c < QD; c++) qkv0[6 * QD + c] += 1.0f; /* token 6 in sequence 2 */
    loss_attn(NULL);
    int leak = 0;
    for (int i = 0; i < 4 * HQ * HD; i++) leak |= att[i] != out2[i];
    CHECK(!leak, "changing a token of sequence 2 changed attention outputs of sequence 1");
}

/* ---- attention with shared prefixes: [root | a | b | plain], a and b extend root ---- */
enum { PN = 12 };
static float pqkv0[PN * QD], pqkv1[PN * QD], patt[PN * HQ * HD], plse[HQ * PN], patr[PN * HQ * HD];
static int32_t ppos[PN] = {0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 0, 1}, pstart[5] = {0, 3, 7, 10, PN},
               pprefix[4] = {-1, 0, 0, -1};
static double loss_prefixed(void *ctx) {
    memcpy(pqkv1, pqkv0, sizeof pqkv0);
    be->rope_forward(pqkv1, ppos, invf, PN, HQ, HKV, HD);
    be->attention_forward_prefixed(patt, plse, pqkv1, pstart, pprefix, 4, PN, HQ, HKV, HD);
    return dot(patt, patr, PN * HQ * HD);
}
static void test_attention_prefixed(void) {
    fill(pqkv0, PN * QD, 1), fill(patr, PN * HQ * HD, 1);
    loss_prefixed(NULL);
    float dqkv[PN * QD];
    be->attention_backward_prefixed(dqkv, patr, patt, plse, pqkv1, pstart, pprefix, 4, PN, HQ, HKV, HD);
    be->rope_backward(dqkv, ppos, invf, PN, HQ, HKV, HD);
    check_grad("rope+attention with shared prefixes dqkv", pqkv0, dqkv, PN * QD, loss_prefixed, NULL);
    /* b's rows equal plain causal attention over the contiguous root + b */
    float cat[6 * QD], out[6 * HQ * HD], clse[HQ * 6];
    int32_t cstart[2] = {0, 6};
    memcpy(cat, pqkv1, 3 * QD * sizeof(float));
    memcpy(cat + 3 * QD, pqkv1 + 7 * QD, 3 * QD * sizeof(float));
    be->attention_forward(out, clse, cat, cstart, 1, 6, HQ, HKV, HD);
    double worst = 0;
    for (int i = 0; i < 3 * HQ * HD; i++) {
        double d = fabs(out[3 * HQ * HD + i] - patt[7 * HQ * HD + i]);
        worst = d > worst ? d : worst;
    }
    CHECK(worst < 1e-6, "a prefixed sequence's attention differs from the contiguous sequence by %g", worst);
    /* a never sees b, the plain sequence never sees root; a sees root */
    float before[PN * HQ * HD];
    loss_prefixed(NULL); /* check_grad left the outputs of a perturbed input */
    memcpy(before, patt, sizeof patt);
    for (int c = 0; c < QD; c++) pqkv0[8 * QD + c] += 1.0f; /* a token of b */
    loss_prefixed(NULL);
    int leak = 0;
    for (int i = 0; i < 7 * HQ * HD; i++) leak |= patt[i] != before[i];
    for (int i = 10 * HQ * HD; i < PN * HQ * HD; i++) leak |= patt[i] != before[i];
    CHECK(!leak, "changing a token of one extension changed the root, its sibling or another sequence");
    for (int c = 0; c < QD; c++) pqkv0[1 * QD + c] += 1.0f; /* a token of root */
    memcpy(before, patt, sizeof patt);
    loss_prefixed(NULL);
    int seen = 0;
    for (int i = 3 * HQ * HD; i < 7 * HQ * HD; i++) seen |= patt[i] != before[i];
    CHECK(seen, "changing a token of the root did not change its extension");
}

/* ---- sliding-window attention on the same prefixed batch: window 2 ---- */
static int pwindow;
static double loss_window(void *ctx) {
    memcpy(pqkv1, pqkv0, sizeof pqkv0);
    be->rope_forward(pqkv1, ppos, invf, PN, HQ, HKV, HD);
    be->attention_forward_window(patt, plse, pqkv1, pstart, ctx ? pprefix : NULL, 4, PN, HQ, HKV, HD, pwindow);
    return dot(patt, patr, PN * HQ * HD);
}
static void test_attention_window(void) {
    for (int prefixed = 0; prefixed < 2; prefixed++)
        for (pwindow = 1; pwindow <= 3; pwindow++) {
            void *ctx = prefixed ? (void *)1 : NULL;
            fill(pqkv0, PN * QD, 1), fill(patr, PN * HQ * HD, 1);
            loss_window(ctx);
            float dqkv[PN * QD];
            be->attention_backward_window(dqkv, patr, patt, plse, pqkv1, pstart, ctx ? pprefix : NULL, 4, PN, HQ, HKV,
                                          HD, pwindow);
            be->rope_backward(dqkv, ppos, invf, PN, HQ, HKV, HD);
            char what[96];
            snprintf(what, sizeof what, "rope+attention, window %d%s, dqkv", pwindow, prefixed ? ", prefixed" : "");
            check_grad(what, pqkv0, dqkv, PN * QD, loss_window, ctx);
        }
}

/* ---- embeddings and log-probs ---- */
enum { V = 7 };
static float logits[N * V], lsev[N], logp[N], lr_[N];
static int32_t tgt[N] = {0, 3, 6, 2, 2, 5};
static double loss_logp(void *ctx) {
    be->logprobs_forward(logp, lsev, logits, tgt, N, V);
    return dot(logp, lr_, N);
}
static void test_logprobs(void) {
    fill(logits, N * V, 2), fill(lr_, N, 1);
    loss_logp(NULL);
    float d[N * V];
    memcpy(d, logits, sizeof d);
    be->logprobs_backward(d, lr_, lsev, tgt, N, V);
    check_grad("logprobs dlogits", logits, d, N * V, loss_logp, NULL);
    double s = 0;
    for (int v = 0; v < V; v++) s += exp(logits[v] - lsev[0]);
    CHECK_CLOSE(s, 1.0, 1e-5, 0, "softmax sums to one");
}

static float ewte[V * C], ewpe[N * C], eout[N * C], er[N * C];
static int32_t etok[N] = {1, 4, 1, 6, 0, 4}, epos[N] = {0, 1, 2, 0, 1, 2};
static double loss_emb(void *ctx) {
    be->embedding_forward(eout, etok, epos, ewte, ewpe, N, C);
    return dot(eout, er, N * C);
}
static void test_embedding(void) {
    fill(ewte, V * C, 1), fill(ewpe, N * C, 1), fill(er, N * C, 1);
    float dwte[V * C] = {0}, dwpe[N * C] = {0};
    be->embedding_backward(dwte, dwpe, er, etok, epos, N, C);
    check_grad("embedding dwte", ewte, dwte, V * C, loss_emb, NULL);
    check_grad("embedding dwpe", ewpe, dwpe, N * C, loss_emb, NULL);
}

/* ---- the whole model ---- */
typedef struct {
    Model *m;
    Batch b;
    int32_t *targets;
    float *wlogp, *wval;
} ModelCase;

static double loss_model(void *ctx) {
    ModelCase *mc = ctx;
    int n = mc->b.n_tokens;
    float logp[32], val[32];
    model_forward(mc->m, &mc->b);
    double L = 0;
    if (mc->m->cfg.lm_head) {
        model_token_logprobs(mc->m, mc->targets, logp);
        L += dot(logp, mc->wlogp, n);
    }
    if (mc->m->cfg.value_head) {
        model_values(mc->m, val);
        L += dot(val, mc->wval, n);
    }
    return L;
}

static void test_model(ModelArch arch, int value_head, int window, int qk_norm) {
    ModelConfig c;
    model_config_defaults(&c, arch);
    c.vocab_size = 11, c.dim = 12, c.n_layers = 2, c.n_heads = 4, c.head_dim = 3 * 2, c.ffn_dim = 10;
    c.sliding_window = window, c.window_from_layer = window ? 1 : 0; /* Qwen2-style: layer 1 only */
    c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    if (arch == ARCH_GPT2) c.head_dim = 3, c.max_seq_len = 16;
    else c.qkv_bias = 1, c.tied_embeddings = 1;
    if (qk_norm) c.qk_norm = 1, c.qkv_bias = 0; /* Qwen3: per-head q/k norms, no biases; head_dim 6 != 12/4 */
    c.value_head = value_head;
    Model *m = model_create(&c, be);
    CHECK(m != NULL, "model_create: %s", align_error());
    if (!m) return;
    model_init_random(m, 7);
    /* larger weights than training init so gradients are not tiny */
    for (size_t i = 0; i < m->n_elems; i++) m->params[i] += (float)(rng_normal(&rng) * 0.3);
    int32_t tokens[10] = {1, 5, 9, 2, 3, 10, 0, 4, 4, 7}, starts[3] = {0, 4, 10}, targets[10];
    ModelCase mc = {.m = m, .b = {.n_tokens = 10, .n_seqs = 2, .tokens = tokens, .seq_start = starts}, .targets = targets};
    batch_next_token_targets(&mc.b, targets);
    float wlogp[10], wval[10];
    fill(wlogp, 10, 1), fill(wval, 10, 1);
    mc.wlogp = wlogp, mc.wval = wval;
    loss_model(&mc);
    model_zero_grad(m);
    CHECK(model_backward(m, c.lm_head ? wlogp : NULL, value_head ? wval : NULL) == 0, "backward: %s", align_error());
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        char what[160];
        snprintf(what, sizeof what, "%s%s %s", arch == ARCH_GPT2 ? "gpt2" : qk_norm ? "qwen3" : "llama",
                 window ? " windowed" : "", p->name);
        check_grad(what, m->params + p->offset, m->grads + p->grad_offset, p->numel, loss_model, &mc);
    }
    model_free(m);
}

int main(void) {
    rng_seed(&rng, 1234);
    test_linear();
    test_norms();
    test_activations();
    test_attention();
    test_attention_prefixed();
    test_attention_window();
    test_logprobs();
    test_embedding();
    test_model(ARCH_GPT2, 0, 0, 0);
    test_model(ARCH_LLAMA, 0, 0, 0);
    test_model(ARCH_LLAMA, 1, 0, 0);
    test_model(ARCH_LLAMA, 0, 2, 0);
    test_model(ARCH_LLAMA, 0, 0, 1);
    return test_summary();
}
