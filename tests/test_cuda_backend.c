/* test_cuda_backend: the CUDA backend against the CPU backend (the oracle).
 *
 * Without a CUDA build or a device it prints "skipped: ..." and exits 77
 * (ctest: skipped). With one, every op runs on both backends from the same
 * random inputs and the CUDA result must match the CPU's:
 *   - fp32 ops (everything but matrix products): relative L2 error
 *     ||cuda - cpu|| / ||cpu|| <= 2e-5 (different summation orders only);
 *     the embedding scatter-add must be bit-identical (same order of adds);
 *   - matrix products: 1e-5 in fp32 mode, 3e-3 with tf32, 1.5e-2 with bf16
 *     operands (8-bit mantissas, fp32 accumulation: llm.c-style tolerances);
 *   - a whole training step (forward, log-probs, backward, AdamW) of a tiny
 *     GPT-2 and a tiny Llama: 1e-4 on log-probs and gradients with fp32
 *     products, 5e-2 with bf16 products.
 * Every output buffer is poisoned with NaN first, so an element a kernel
 * forgets to write fails the check. Determinism: attention backward and a
 * whole training step give bit-identical results when repeated. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "test.h"
#include "util.h"
#ifdef ALIGN_HAVE_CUDA
#include "cuda/backend_cuda.h"
#endif

#ifdef ALIGN_HAVE_CUDA

static const Backend *CPU = &backend_cpu, *GPU = &backend_cuda;
static Rng rng;

/* ------------------------------------------------------------ buffers */

/* One logical tensor held by both backends: c in CPU memory, g on the GPU. */
typedef struct {
    float *c, *g;
    size_t n;
} Buf;
typedef struct {
    int32_t *c, *g;
    size_t n;
} IBuf;

static Buf buf_new(size_t n) {
    Buf b = {CPU->alloc(n * sizeof(float)), GPU->alloc(n * sizeof(float)), n};
    if (!b.c || !b.g) {
        fprintf(stderr, "allocation failed: %s\n", align_error());
        exit(1);
    }
    return b;
}
static void buf_set(Buf b, const float *host) {
    memcpy(b.c, host, b.n * sizeof(float));
    GPU->to_device(b.g, host, b.n * sizeof(float));
}
/* uniform in [-a, a] */
static Buf buf_rand(size_t n, float a) {
    Buf b = buf_new(n);
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = (float)((2.0 * rng_uniform(&rng) - 1.0) * a);
    buf_set(b, h);
    free(h);
    return b;
}
/* NaN everywhere: an element left unwritten shows up in the comparison */
static void buf_poison(Buf b) {
    memset(b.c, 0xFF, b.n * sizeof(float));
    GPU->to_device(b.g, b.c, b.n * sizeof(float));
}
static Buf buf_poisoned(size_t n) {
    Buf b = buf_new(n);
    buf_poison(b);
    return b;
}
static void buf_free(Buf b) {
    CPU->free(b.c);
    GPU->free(b.g);
}
static IBuf ibuf_from(const int32_t *host, size_t n) {
    IBuf b = {CPU->alloc(n * sizeof(int32_t) + 4), GPU->alloc(n * sizeof(int32_t) + 4), n};
    memcpy(b.c, host, n * sizeof(int32_t));
    GPU->to_device(b.g, host, n * sizeof(int32_t));
    return b;
}
static void ibuf_free(IBuf b) {
    CPU->free(b.c);
    GPU->free(b.g);
}

/* ||gpu - cpu|| / ||cpu|| (absolute when the reference is all zeros) */
static double rel_err(const float *got, const float *want, size_t n, double *max_abs) {
    double num = 0, den = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        if (isnan(got[i]) != isnan(want[i])) return INFINITY;
        num += d * d;
        den += (double)want[i] * want[i];
        if (fabs(d) > mx) mx = fabs(d);
    }
    if (max_abs) *max_abs = mx;
    if (isnan(num)) return INFINITY;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
static void check_host(const char *what, const float *got, const float *want, size_t n, double tol) {
    double mx = 0, e = rel_err(got, want, n, &mx);
    CHECK(e <= tol, "%s: relative error %.3g > %.3g (max abs diff %.3g, %zu elements)", what, e, tol,
          mx, n);
}
static void check_buf(const char *what, Buf b, double tol) {
    float *h = malloc(b.n * sizeof(float));
    GPU->to_host(h, b.g, b.n * sizeof(float));
    check_host(what, h, b.c, b.n, tol);
    free(h);
}
static void check_exact(const char *what, Buf b) {
    float *h = malloc(b.n * sizeof(float));
    GPU->to_host(h, b.g, b.n * sizeof(float));
    CHECK(!memcmp(h, b.c, b.n * sizeof(float)), "%s: not bit-identical to the CPU", what);
    free(h);
}
static void check_backend_ok(const char *after) {
    int rc = cuda_backend_check();
    CHECK(rc == 0, "CUDA backend failed after %s: %s", after, align_error());
}

/* ------------------------------------------------------------ linear */

static void test_matmul(int N, int C, int OC, CudaGemmMode mode, double tol) {
    char what[160];
    cuda_backend_set_gemm(mode);
    const char *mn = cuda_gemm_mode_name(mode);
    Buf inp = buf_rand((size_t)N * C, 1), w = buf_rand((size_t)OC * C, 1), bias = buf_rand(OC, 1);
    Buf out = buf_poisoned((size_t)N * OC);
    CPU->matmul_forward(out.c, inp.c, w.c, bias.c, N, C, OC);
    GPU->matmul_forward(out.g, inp.g, w.g, bias.g, N, C, OC);
    snprintf(what, sizeof what, "matmul_forward %dx%dx%d %s", N, C, OC, mn);
    check_buf(what, out, tol);
    buf_poison(out);
    CPU->matmul_forward(out.c, inp.c, w.c, NULL, N, C, OC);
    GPU->matmul_forward(out.g, inp.g, w.g, NULL, N, C, OC);
    snprintf(what, sizeof what, "matmul_forward (no bias) %dx%dx%d %s", N, C, OC, mn);
    check_buf(what, out, tol);

    /* dout: a column slice of a wider fused output, rows ld apart */
    int ld = OC + 24;
    Buf dfull = buf_rand((size_t)N * ld, 1);
    Buf dout = buf_rand((size_t)N * OC, 1);
    Buf dinp = buf_poisoned((size_t)N * C);
    CPU->matmul_backward_input(dinp.c, dout.c, w.c, N, C, OC, 0);
    GPU->matmul_backward_input(dinp.g, dout.g, w.g, N, C, OC, 0);
    snprintf(what, sizeof what, "matmul_backward_input = %dx%dx%d %s", N, C, OC, mn);
    check_buf(what, dinp, tol);
    Buf dacc = buf_rand((size_t)N * C, 1);
    CPU->matmul_backward_input(dacc.c, dout.c, w.c, N, C, OC, 1);
    GPU->matmul_backward_input(dacc.g, dout.g, w.g, N, C, OC, 1);
    snprintf(what, sizeof what, "matmul_backward_input += %dx%dx%d %s", N, C, OC, mn);
    check_buf(what, dacc, tol);

    Buf dw = buf_rand((size_t)OC * C, 1), db = buf_rand(OC, 1);
    CPU->matmul_backward_weight(dw.c, db.c, dfull.c + 8, ld, inp.c, N, C, OC);
    GPU->matmul_backward_weight(dw.g, db.g, dfull.g + 8, ld, inp.g, N, C, OC);
    snprintf(what, sizeof what, "matmul_backward_weight dw %dx%dx%d ld %d %s", N, C, OC, ld, mn);
    check_buf(what, dw, tol);
    snprintf(what, sizeof what, "matmul_backward_weight dbias %dx%dx%d %s", N, C, OC, mn);
    check_buf(what, db, 2e-5); /* column sums are fp32 in every mode */
    buf_free(inp), buf_free(w), buf_free(bias), buf_free(out), buf_free(dfull), buf_free(dout);
    buf_free(dinp), buf_free(dacc), buf_free(dw), buf_free(db);
    check_backend_ok("matmul");
}

/* ------------------------------------------------------------ embeddings, norms */

static void test_embedding(void) {
    int N = 300, C = 72, V = 50, P = 40;
    int32_t tok[300], pos[300];
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)rng_below(&rng, V / 5); /* many repeats */
        pos[i] = (int32_t)rng_below(&rng, P);
    }
    IBuf t = ibuf_from(tok, N), p = ibuf_from(pos, N);
    Buf wte = buf_rand((size_t)V * C, 1), wpe = buf_rand((size_t)P * C, 1);
    Buf out = buf_poisoned((size_t)N * C);
    CPU->embedding_forward(out.c, t.c, p.c, wte.c, wpe.c, N, C);
    GPU->embedding_forward(out.g, t.g, p.g, wte.g, wpe.g, N, C);
    check_buf("embedding_forward", out, 0);
    buf_poison(out);
    CPU->embedding_forward(out.c, t.c, p.c, wte.c, NULL, N, C);
    GPU->embedding_forward(out.g, t.g, p.g, wte.g, NULL, N, C);
    check_buf("embedding_forward (no positions)", out, 0);
    Buf dout = buf_rand((size_t)N * C, 1);
    CPU->embedding_backward(wte.c, wpe.c, dout.c, t.c, p.c, N, C);
    GPU->embedding_backward(wte.g, wpe.g, dout.g, t.g, p.g, N, C);
    check_exact("embedding_backward dwte (same order of adds as the CPU)", wte);
    check_exact("embedding_backward dwpe", wpe);
    ibuf_free(t), ibuf_free(p), buf_free(wte), buf_free(wpe), buf_free(out), buf_free(dout);
    check_backend_ok("embedding");
}

static void test_norms(int N, int C) {
    char what[128];
    Buf x = buf_rand((size_t)N * C, 2), w = buf_rand(C, 1), b = buf_rand(C, 1);
    Buf out = buf_poisoned((size_t)N * C), mean = buf_poisoned(N), rstd = buf_poisoned(N);
    CPU->layernorm_forward(out.c, mean.c, rstd.c, x.c, w.c, b.c, N, C, 1e-5f);
    GPU->layernorm_forward(out.g, mean.g, rstd.g, x.g, w.g, b.g, N, C, 1e-5f);
    snprintf(what, sizeof what, "layernorm_forward out N=%d C=%d", N, C);
    check_buf(what, out, 2e-5);
    check_buf("layernorm_forward mean", mean, 2e-5);
    check_buf("layernorm_forward rstd", rstd, 2e-5);
    Buf dout = buf_rand((size_t)N * C, 1), dinp = buf_rand((size_t)N * C, 1);
    Buf dw = buf_rand(C, 1), db = buf_rand(C, 1);
    /* the CUDA side reads the CPU's saved statistics, so only backward is compared */
    GPU->to_device(mean.g, mean.c, N * sizeof(float));
    GPU->to_device(rstd.g, rstd.c, N * sizeof(float));
    CPU->layernorm_backward(dinp.c, dw.c, db.c, dout.c, x.c, w.c, mean.c, rstd.c, N, C);
    GPU->layernorm_backward(dinp.g, dw.g, db.g, dout.g, x.g, w.g, mean.g, rstd.g, N, C);
    snprintf(what, sizeof what, "layernorm_backward dinp N=%d C=%d", N, C);
    check_buf(what, dinp, 2e-5);
    check_buf("layernorm_backward dw", dw, 2e-5);
    check_buf("layernorm_backward db", db, 2e-5);

    buf_poison(out);
    buf_poison(rstd);
    CPU->rmsnorm_forward(out.c, rstd.c, x.c, w.c, N, C, 1e-6f);
    GPU->rmsnorm_forward(out.g, rstd.g, x.g, w.g, N, C, 1e-6f);
    snprintf(what, sizeof what, "rmsnorm_forward out N=%d C=%d", N, C);
    check_buf(what, out, 2e-5);
    check_buf("rmsnorm_forward rstd", rstd, 2e-5);
    GPU->to_device(rstd.g, rstd.c, N * sizeof(float));
    CPU->rmsnorm_backward(dinp.c, dw.c, dout.c, x.c, w.c, rstd.c, N, C);
    GPU->rmsnorm_backward(dinp.g, dw.g, dout.g, x.g, w.g, rstd.g, N, C);
    snprintf(what, sizeof what, "rmsnorm_backward dinp N=%d C=%d", N, C);
    check_buf(what, dinp, 2e-5);
    check_buf("rmsnorm_backward dw", dw, 2e-5);
    buf_free(x), buf_free(w), buf_free(b), buf_free(out), buf_free(mean), buf_free(rstd);
    buf_free(dout), buf_free(dinp), buf_free(dw), buf_free(db);
    check_backend_ok("norms");
}

/* ------------------------------------------------------------ attention */

static void test_rope(void) {
    int N = 50, Hq = 4, Hkv = 2, hd = 64, half = hd / 2;
    int32_t pos[50];
    for (int i = 0; i < N; i++) pos[i] = (int32_t)rng_below(&rng, 4096);
    float invf[32];
    for (int j = 0; j < half; j++) invf[j] = powf(10000.0f, -2.0f * j / hd);
    IBuf p = ibuf_from(pos, N);
    Buf inv = buf_new(half);
    buf_set(inv, invf);
    Buf qkv = buf_rand((size_t)N * (Hq + 2 * Hkv) * hd, 1);
    CPU->rope_forward(qkv.c, p.c, inv.c, N, Hq, Hkv, hd);
    GPU->rope_forward(qkv.g, p.g, inv.g, N, Hq, Hkv, hd);
    check_buf("rope_forward", qkv, 2e-5);
    CPU->rope_backward(qkv.c, p.c, inv.c, N, Hq, Hkv, hd);
    GPU->rope_backward(qkv.g, p.g, inv.g, N, Hq, Hkv, hd);
    check_buf("rope_backward", qkv, 2e-5);
    ibuf_free(p), buf_free(inv), buf_free(qkv);
    check_backend_ok("rope");
}

static void test_attention(const char *name, const int *lens, int n_seqs, int Hq, int Hkv, int hd) {
    char what[160];
    int32_t *ss = malloc((n_seqs + 1) * sizeof(int32_t));
    ss[0] = 0;
    for (int s = 0; s < n_seqs; s++) ss[s + 1] = ss[s] + lens[s];
    int N = ss[n_seqs], ld = (Hq + 2 * Hkv) * hd;
    Buf qkv = buf_rand((size_t)N * ld, 1.5f), out = buf_poisoned((size_t)N * Hq * hd);
    Buf lse = buf_poisoned((size_t)Hq * N);
    CPU->attention_forward(out.c, lse.c, qkv.c, ss, n_seqs, N, Hq, Hkv, hd);
    GPU->attention_forward(out.g, lse.g, qkv.g, ss, n_seqs, N, Hq, Hkv, hd);
    snprintf(what, sizeof what, "attention_forward out (%s)", name);
    check_buf(what, out, 2e-5);
    snprintf(what, sizeof what, "attention_forward lse (%s)", name);
    check_buf(what, lse, 2e-5);
    /* backward from the CPU's forward results, so only backward is compared */
    GPU->to_device(out.g, out.c, out.n * sizeof(float));
    GPU->to_device(lse.g, lse.c, lse.n * sizeof(float));
    Buf dout = buf_rand(out.n, 1), dqkv = buf_poisoned(qkv.n);
    CPU->attention_backward(dqkv.c, dout.c, out.c, lse.c, qkv.c, ss, n_seqs, N, Hq, Hkv, hd);
    GPU->attention_backward(dqkv.g, dout.g, out.g, lse.g, qkv.g, ss, n_seqs, N, Hq, Hkv, hd);
    snprintf(what, sizeof what, "attention_backward dqkv (%s)", name);
    check_buf(what, dqkv, 5e-5);
    float *first = malloc(dqkv.n * sizeof(float)), *second = malloc(dqkv.n * sizeof(float));
    GPU->to_host(first, dqkv.g, dqkv.n * sizeof(float));
    buf_poison(dqkv);
    GPU->attention_backward(dqkv.g, dout.g, out.g, lse.g, qkv.g, ss, n_seqs, N, Hq, Hkv, hd);
    GPU->to_host(second, dqkv.g, dqkv.n * sizeof(float));
    CHECK(!memcmp(first, second, dqkv.n * sizeof(float)), "attention_backward (%s) is not deterministic", name);
    free(first), free(second), free(ss);
    buf_free(qkv), buf_free(out), buf_free(lse), buf_free(dout), buf_free(dqkv);
    check_backend_ok(name);
}

static void test_attention_all(void) {
    int a[] = {1, 70, 130, 5};
    test_attention("hd 16, GQA 4/2, lengths 1 70 130 5", a, 4, 4, 2, 16);
    int b[] = {200, 64, 63};
    test_attention("hd 64, MHA 2/2, lengths 200 64 63", b, 3, 2, 2, 64);
    int c[] = {100, 33};
    test_attention("hd 80 (padded to 128), GQA 4/1", c, 2, 4, 1, 80);
    int d[] = {150};
    test_attention("hd 128, GQA 2/1, one sequence of 150", d, 1, 2, 1, 128);
    /* more tiles than one launch takes: the tile list is split */
    int many[400];
    for (int i = 0; i < 400; i++) many[i] = 1 + (int)rng_below(&rng, 8);
    test_attention("hd 32, 400 short sequences", many, 400, 2, 1, 32);
}

/* Decoding against a KV cache: new tokens appended to their slots, then
 * attending to everything cached before them and to each other, causally. */
static void test_attention_cached(int Hq, int Hkv, int hd) {
    char what[128];
    int n_slots = 3, max_len = 40, n_seqs = 3;
    int32_t slots[3] = {2, 0, 1}, past[3] = {5, 0, 30}, ss[4] = {0, 1, 8, 10};
    int N = ss[n_seqs], kvd = Hkv * hd;
    Buf qkv = buf_rand((size_t)N * (Hq + 2 * Hkv) * hd, 1.5f), out = buf_poisoned((size_t)N * Hq * hd);
    Buf kc = buf_rand((size_t)n_slots * max_len * kvd, 1), vc = buf_rand((size_t)n_slots * max_len * kvd, 1);
    CPU->attention_forward_cached(out.c, qkv.c, kc.c, vc.c, slots, past, ss, n_seqs, N, Hq, Hkv, hd, max_len);
    GPU->attention_forward_cached(out.g, qkv.g, kc.g, vc.g, slots, past, ss, n_seqs, N, Hq, Hkv, hd, max_len);
    snprintf(what, sizeof what, "attention_forward_cached out (hd %d, %d/%d heads)", hd, Hq, Hkv);
    check_buf(what, out, 2e-5);
    check_exact("attention_forward_cached k cache", kc);
    check_exact("attention_forward_cached v cache", vc);
    buf_free(qkv), buf_free(out), buf_free(kc), buf_free(vc);
    check_backend_ok("cached attention");
}

/* ------------------------------------------------------------ activations, rows */

static void test_elementwise(void) {
    size_t n = 10007;
    Buf x = buf_rand(n, 4), y = buf_rand(n, 1), out = buf_poisoned(n), d = buf_rand(n, 1);
    CPU->gelu_forward(out.c, x.c, n);
    GPU->gelu_forward(out.g, x.g, n);
    check_buf("gelu_forward", out, 2e-6);
    buf_poison(out);
    CPU->gelu_backward(out.c, d.c, x.c, n);
    GPU->gelu_backward(out.g, d.g, x.g, n);
    check_buf("gelu_backward", out, 2e-6);
    buf_poison(out);
    CPU->add(out.c, x.c, y.c, n);
    GPU->add(out.g, x.g, y.g, n);
    check_buf("add", out, 0);
    CPU->add_inplace(out.c, d.c, n);
    GPU->add_inplace(out.g, d.g, n);
    check_buf("add_inplace", out, 0);
    CPU->scale(out.c, 0.37f, n);
    GPU->scale(out.g, 0.37f, n);
    check_buf("scale", out, 0);

    int N = 33, F = 97;
    Buf gu = buf_rand((size_t)N * 2 * F, 4), so = buf_poisoned((size_t)N * F), sd = buf_rand((size_t)N * F, 1);
    Buf dgu = buf_poisoned((size_t)N * 2 * F);
    CPU->swiglu_forward(so.c, gu.c, N, F);
    GPU->swiglu_forward(so.g, gu.g, N, F);
    check_buf("swiglu_forward", so, 2e-6);
    CPU->swiglu_backward(dgu.c, sd.c, gu.c, N, F);
    GPU->swiglu_backward(dgu.g, sd.g, gu.g, N, F);
    check_buf("swiglu_backward", dgu, 2e-6);

    int R = 40, C = 130, n_rows = 17;
    int32_t rows[17];
    for (int i = 0; i < n_rows; i++) rows[i] = (i * 7 + 3) % R; /* distinct */
    IBuf ri = ibuf_from(rows, n_rows);
    Buf src = buf_rand((size_t)R * C, 1), g = buf_poisoned((size_t)n_rows * C);
    CPU->gather_rows(g.c, src.c, ri.c, n_rows, C);
    GPU->gather_rows(g.g, src.g, ri.g, n_rows, C);
    check_buf("gather_rows", g, 0);
    CPU->scatter_add_rows(src.c, g.c, ri.c, n_rows, C);
    GPU->scatter_add_rows(src.g, g.g, ri.g, n_rows, C);
    check_buf("scatter_add_rows", src, 0);
    buf_free(x), buf_free(y), buf_free(out), buf_free(d), buf_free(gu), buf_free(so), buf_free(sd);
    buf_free(dgu), ibuf_free(ri), buf_free(src), buf_free(g);
    check_backend_ok("elementwise");
}

static void test_logprobs(int n, int V) {
    char what[96];
    int32_t tgt[8];
    for (int i = 0; i < n; i++) tgt[i] = (int32_t)rng_below(&rng, V);
    IBuf t = ibuf_from(tgt, n);
    Buf logits = buf_rand((size_t)n * V, 8), logp = buf_poisoned(n), lse = buf_poisoned(n);
    Buf dlogp = buf_rand(n, 1);
    CPU->logprobs_forward(logp.c, lse.c, logits.c, t.c, n, V);
    GPU->logprobs_forward(logp.g, lse.g, logits.g, t.g, n, V);
    snprintf(what, sizeof what, "logprobs_forward logp V=%d", V);
    check_buf(what, logp, 2e-6);
    snprintf(what, sizeof what, "logprobs_forward lse V=%d", V);
    check_buf(what, lse, 2e-6);
    GPU->to_device(lse.g, lse.c, n * sizeof(float));
    CPU->logprobs_backward(logits.c, dlogp.c, lse.c, t.c, n, V);
    GPU->logprobs_backward(logits.g, dlogp.g, lse.g, t.g, n, V);
    snprintf(what, sizeof what, "logprobs_backward V=%d", V);
    check_buf(what, logits, 2e-6);
    ibuf_free(t), buf_free(logits), buf_free(logp), buf_free(lse), buf_free(dlogp);
    check_backend_ok("logprobs");
}

static void test_optimizer(void) {
    size_t n = 1000003;
    Buf x = buf_rand(n, 1);
    double c = CPU->sum_squares(x.c, n), g = GPU->sum_squares(x.g, n), g2 = GPU->sum_squares(x.g, n);
    CHECK_CLOSE(g, c, 1e-9, 0, "sum_squares");
    CHECK(g == g2, "sum_squares is not deterministic (%.17g vs %.17g)", g, g2);
    Buf p = buf_rand(n, 1), gr = buf_rand(n, 1e-2f), m = buf_rand(n, 1e-3f), v = buf_new(n);
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = (float)(rng_uniform(&rng) * 1e-5);
    buf_set(v, h);
    free(h);
    for (int step = 1; step <= 3; step++) {
        float bc1 = 1.0f - powf(0.9f, step), bc2 = 1.0f - powf(0.999f, step);
        CPU->adamw(p.c, gr.c, m.c, v.c, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, bc1, bc2, 0.5f);
        GPU->adamw(p.g, gr.g, m.g, v.g, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, bc1, bc2, 0.5f);
    }
    check_buf("adamw params", p, 1e-6);
    check_buf("adamw m", m, 1e-6);
    check_buf("adamw v", v, 1e-6);
    buf_free(x), buf_free(p), buf_free(gr), buf_free(m), buf_free(v);
    check_backend_ok("optimizer");
}

static void test_errors(void) {
    void *p = GPU->alloc((size_t)1 << 52); /* 4 PiB */
    CHECK(p == NULL, "a 4 PiB allocation succeeded");
    CHECK(strstr(align_error(), "out of memory") != NULL, "unclear OOM message: %s", align_error());
    CHECK(cuda_backend_error() == NULL, "out of memory left the backend failed: %s", cuda_backend_error());
    void *q = GPU->alloc(1024);
    CHECK(q != NULL, "allocation after an OOM failed: %s", align_error());
    GPU->free(q);
    check_backend_ok("an out-of-memory allocation");
}

/* ------------------------------------------------------------ training step */

typedef struct {
    float *logp, *grads, *params_after;
    double norm;
    size_t n_grads, n_params;
} StepResult;

static StepResult train_step(const ModelConfig *cfg, const Backend *be, const Batch *b,
                             const int32_t *targets) {
    StepResult r = {0};
    Model *m = model_create(cfg, be);
    CHECK(m != NULL, "model_create on %s: %s", be->name, align_error());
    if (!m) exit(1);
    model_init_random(m, 1234);
    int N = b->n_tokens, count = 0;
    r.logp = calloc(N, sizeof(float));
    CHECK(model_forward(m, b) == 0, "model_forward on %s: %s", be->name, align_error());
    CHECK(model_token_logprobs(m, targets, r.logp) == 0, "model_token_logprobs: %s", align_error());
    float *dlogp = calloc(N, sizeof(float));
    for (int i = 0; i < N; i++) count += targets[i] >= 0;
    for (int i = 0; i < N; i++) dlogp[i] = targets[i] >= 0 ? -1.0f / count : 0.0f;
    CHECK(model_backward(m, dlogp, NULL) == 0, "model_backward on %s: %s", be->name, align_error());
    r.n_grads = m->n_grad_elems;
    r.n_params = m->n_elems;
    r.grads = malloc(r.n_grads * sizeof(float));
    be->to_host(r.grads, m->grads, r.n_grads * sizeof(float));
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 1e-3f;
    oc.weight_decay = 0.1f;
    oc.max_grad_norm = 0.5f;
    oc.schedule = LR_CONSTANT;
    Optimizer *o = optim_create(m, &oc);
    CHECK(o != NULL, "optim_create on %s: %s", be->name, align_error());
    r.norm = optim_step(o, NULL);
    r.params_after = malloc(r.n_params * sizeof(float));
    be->to_host(r.params_after, m->params, r.n_params * sizeof(float));
    optim_free(o);
    model_free(m);
    free(dlogp);
    return r;
}

static void step_free(StepResult *r) {
    free(r->logp), free(r->grads), free(r->params_after);
}

static void test_train_step(const char *name, const ModelConfig *cfg, CudaGemmMode mode, double tol) {
    char what[160];
    int N = 64, n_seqs = 3; /* sequences of 17, 40 and 7 tokens */
    int32_t ss[4] = {0, 17, 57, 64}, tokens[64], targets[64];
    Rng r2;
    rng_seed(&r2, 99);
    for (int i = 0; i < N; i++) tokens[i] = (int32_t)rng_below(&r2, cfg->vocab_size);
    Batch b = {N, n_seqs, tokens, ss};
    batch_next_token_targets(&b, targets);
    cuda_backend_set_gemm(mode);
    const char *mn = cuda_gemm_mode_name(mode);
    StepResult c = train_step(cfg, CPU, &b, targets);
    StepResult g = train_step(cfg, GPU, &b, targets);
    check_backend_ok(name);
    snprintf(what, sizeof what, "%s %s: token log-probs", name, mn);
    check_host(what, g.logp, c.logp, N, tol);
    double lc = 0, lg = 0;
    for (int i = 0; i < N; i++) lc -= c.logp[i], lg -= g.logp[i];
    snprintf(what, sizeof what, "%s %s: loss", name, mn);
    CHECK_CLOSE(lg, lc, tol, 0, what);
    snprintf(what, sizeof what, "%s %s: all gradients", name, mn);
    check_host(what, g.grads, c.grads, c.n_grads, tol);
    snprintf(what, sizeof what, "%s %s: gradient norm", name, mn);
    CHECK_CLOSE(g.norm, c.norm, tol, 0, what);
    /* per tensor, so a wrong op points at its weights */
    Model *m = model_create(cfg, CPU);
    for (int i = 0; m && i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (p->grad_offset < 0) continue;
        snprintf(what, sizeof what, "%s %s: grad %s", name, mn, p->name);
        check_host(what, g.grads + p->grad_offset, c.grads + p->grad_offset, p->numel, 10 * tol);
    }
    model_free(m);
    snprintf(what, sizeof what, "%s %s: parameters after one AdamW step", name, mn);
    check_host(what, g.params_after, c.params_after, c.n_params, tol);
    /* the same step again on the GPU: bit-identical */
    StepResult g2 = train_step(cfg, GPU, &b, targets);
    CHECK(!memcmp(g.grads, g2.grads, g.n_grads * sizeof(float)), "%s %s: gradients differ between two identical runs", name, mn);
    CHECK(!memcmp(g.params_after, g2.params_after, g.n_params * sizeof(float)), "%s %s: parameters differ between two identical runs", name, mn);
    step_free(&c), step_free(&g), step_free(&g2);
}

static void test_models(void) {
    ModelConfig gpt2, llama;
    model_config_defaults(&gpt2, ARCH_GPT2);
    gpt2.vocab_size = 97;
    gpt2.dim = 64;
    gpt2.n_layers = 2;
    gpt2.n_heads = gpt2.n_kv_heads = 4;
    gpt2.head_dim = 16;
    gpt2.ffn_dim = 256;
    gpt2.max_seq_len = 64;
    model_config_defaults(&llama, ARCH_LLAMA);
    llama.vocab_size = 101;
    llama.dim = 64;
    llama.n_layers = 2;
    llama.n_heads = 4;
    llama.n_kv_heads = 2;
    llama.head_dim = 16;
    llama.ffn_dim = 96;
    llama.max_seq_len = 64;
    llama.tied_embeddings = 1;
    CudaGemmMode modes[2] = {CUDA_GEMM_FP32, CUDA_GEMM_BF16};
    double tols[2] = {1e-4, 5e-2};
    for (int k = 0; k < 2; k++) {
        test_train_step("tiny GPT-2", &gpt2, modes[k], tols[k]);
        test_train_step("tiny Llama", &llama, modes[k], tols[k]);
    }
}

#endif /* ALIGN_HAVE_CUDA */

int main(void) {
#ifndef ALIGN_HAVE_CUDA
    test_skip("this build has no CUDA backend (configure with -DALIGN_CUDA=ON)");
#else
    if (!cuda_backend_available()) test_skip("no CUDA device");
    rng_seed(&rng, 7);
    test_errors();
    CudaGemmMode modes[4] = {CUDA_GEMM_FP32, CUDA_GEMM_TF32, CUDA_GEMM_FAST_BF16, CUDA_GEMM_BF16};
    double tols[4] = {1e-5, 3e-3, 1.5e-2, 1.5e-2};
    for (int k = 0; k < 4; k++) {
        test_matmul(67, 96, 80, modes[k], tols[k]);
        test_matmul(256, 768, 300, modes[k], tols[k]);
        test_matmul(5, 64, 1, modes[k], tols[k]); /* a value head: one output column */
    }
    test_embedding();
    test_norms(37, 200);
    test_norms(130, 768);
    test_rope();
    test_attention_all();
    test_attention_cached(4, 2, 16);
    test_attention_cached(2, 1, 128);
    test_elementwise();
    test_logprobs(5, 1000);
    test_logprobs(3, 50257);
    test_optimizer();
    test_models();
    cuda_backend_set_gemm(CUDA_GEMM_BF16);
    return test_summary();
#endif
}
