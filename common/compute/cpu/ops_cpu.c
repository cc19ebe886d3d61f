/* ops_cpu: the CPU backend. fp32 everywhere; every matmul is an OpenBLAS
 * sgemm (forward with up to 32 rows: matmul_small.c), everything else an
 * OpenMP loop. It is the oracle the CUDA backend is tested against, so
 * clarity wins over cleverness outside the matmuls.
 *
 * Determinism: reductions across rows (weight and bias gradients of norms
 * and embeddings, sums of squares) are split by COLUMN blocks or by fixed
 * per-thread chunks summed in order, never by atomics, so the same inputs
 * and thread count give bit-identical results.
 *
 * Attention calls sgemm per block of query rows of one (sequence, head)
 * from inside an OpenMP parallel region; OpenBLAS's OpenMP build runs those
 * calls single-threaded, so the parallelism is over (block, kv head) units
 * forward and (sequence, kv head) units backward.
 *
 * Errors: an op that cannot allocate its scratch records the failure for
 * Backend.status and returns without computing; none exits or crashes. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "head_norm.h"
#include "matmul_quant.h"
#include "matmul_small.h"
#include "quant.h"
#include "util.h"
#include "vexp.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------ memory */

static void *cpu_alloc(size_t bytes) { return align_calloc(bytes); }
static void cpu_free(void *p) { align_free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}
static void cpu_sync(void) {}

/* ------------------------------------------------------------------ errors */

/* The first failure since the last status() (Backend.status). Ops run on
 * OpenMP threads and the message is read on the caller's, hence the lock
 * rather than align_errorf's thread-local message. */
static int g_failed;
static char g_error[ALIGN_ERR_LEN];

static void cpu_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void cpu_fail(const char *fmt, ...) {
#pragma omp critical(cpu_status)
    if (!g_failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_error, sizeof g_error, fmt, ap);
        va_end(ap);
        g_failed = 1;
    }
}

/* Reports and forgets: what fails here is memory, which a later, smaller
 * call may find. */
static int cpu_status(void) {
    int failed;
#pragma omp critical(cpu_status)
    {
        failed = g_failed;
        g_failed = 0;
        if (failed) align_errorf("%s", g_error);
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------- batch invariance */

/* backend.h: backend_cpu_set_batch_invariant. Read by the forward ops at
 * each call; set once by a program before it computes. */
static atomic_int g_invariant;

void backend_cpu_set_batch_invariant(int on) { atomic_store(&g_invariant, on != 0); }
int backend_cpu_batch_invariant(void) { return atomic_load(&g_invariant); }

/* The fixed-order pieces of batch-invariant mode. Each sums in 8 lanes
 * (element k into lane k % 8, lanes in k order), reduces the lanes as
 * ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), then adds the tail in order, with
 * fmaf where a product is accumulated: what the source says, so every
 * compiled copy (vectorised or not, whatever the pointers' alignment, which
 * differs between a KV cache and a packed batch) gives the same bits. An
 * `omp simd reduction` would let the compiler pick the order. */
static inline float lanes_sum(const float a[8]) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static inline float dot_fixed(const float *x, const float *y, int n) {
    float a[8] = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) a[l] = fmaf(x[k + l], y[k + l], a[l]);
    float s = lanes_sum(a);
    for (; k < n; k++) s = fmaf(x[k], y[k], s);
    return s;
}

/* exp(x - mx) in place over n values; returns their sum. */
static inline float exp_sum_fixed(float *x, int n, float mx) {
    float a[8] = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) a[l] += x[k + l] = vexp(x[k + l] - mx);
    float s = lanes_sum(a);
    for (; k < n; k++) s += x[k] = vexp(x[k] - mx);
    return s;
}

static float row_max(const float *x, int n);

/* log-sum-exp of one row of logits, without writing it. */
static float lse_fixed(const float *x, int n) {
    float mx = row_max(x, n), a[8] = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) a[l] += vexp(x[k + l] - mx);
    float s = lanes_sum(a);
    for (; k < n; k++) s += vexp(x[k] - mx);
    return mx + logf(s);
}

float backend_cpu_logprob(const float *logits, int V, int32_t token) { return logits[token] - lse_fixed(logits, V); }

/* One query row of one head against the keys it sees, given as two runs
 * in position order (k1/v1: n1 rows, then k2/v2: n2 rows; rows ld1 / ld2
 * floats apart): a packed sequence's shared prefix and its own keys, or a
 * cache slot's keys as one run (n2 = 0). S holds n1 + n2 scores. Writes
 * o[hd] = softmax(scale q.k) V (the scores soft-capped when softcap > 0)
 * and, when lse is non-NULL, the row's
 * log-sum-exp. The same code for the training forward and for decoding is
 * what makes the two agree to the bit. */
static void attention_row_fixed(float *o, float *lse, const float *q, const float *k1, const float *v1, int ld1,
                                int n1, const float *k2, const float *v2, int ld2, int n2, int hd, float scale,
                                float softcap, float *S) {
    int T = n1 + n2;
    for (int j = 0; j < n1; j++) S[j] = scale * dot_fixed(q, k1 + (size_t)j * ld1, hd);
    for (int j = 0; j < n2; j++) S[n1 + j] = scale * dot_fixed(q, k2 + (size_t)j * ld2, hd);
    if (softcap > 0) /* Gemma 2: as attention_probs and the cached path */
        for (int j = 0; j < T; j++) S[j] = softcap * tanhf(S[j] * (1.0f / softcap));
    float mx = row_max(S, T), sum = exp_sum_fixed(S, T, mx), inv = 1.0f / sum;
    if (lse) *lse = mx + logf(sum);
    for (int d = 0; d < hd; d++) o[d] = 0.0f;
    for (int j = 0; j < T; j++) {
        const float *v = j < n1 ? v1 + (size_t)j * ld1 : v2 + (size_t)(j - n1) * ld2;
        float p = S[j] * inv;
        for (int d = 0; d < hd; d++) o[d] = fmaf(p, v[d], o[d]);
    }
}

/* ------------------------------------------------------------------ linear */

/* out[N,OC] = inp[N,C] @ w[OC,C]^T + bias */
static void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                           int N, int C, int OC) {
    /* decoding: 1.1-2x sgemv/sgemm at 1-32 rows (matmul_small.h); in
     * batch-invariant mode every row count, for its fixed summation order */
    if (N <= MSMALL_MAX_ROWS || atomic_load(&g_invariant)) {
        msmall_forward(out, inp, w, bias, N, C, OC);
        return;
    }
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < N; i++) memcpy(out + (size_t)i * OC, bias, OC * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
}

/* dinp[N,C] (+)= dout[N,OC] @ w[OC,C] */
static void matmul_backward_input(float *dinp, const float *dout, const float *w, int N, int C,
                                  int OC, int accumulate) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C,
                accumulate ? 1.0f : 0.0f, dinp, C);
}

/* dw[OC,C] += dout^T @ inp; dbias[OC] += column sums of dout */
static void matmul_backward_weight(float *dw, float *dbias, const float *dout, int ld_dout,
                                   const float *inp, int N, int C, int OC) {
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, ld_dout, inp, C,
                    1.0f, dw, C);
    if (dbias) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++) {
            float s = 0.0f;
            for (int i = 0; i < N; i++) s += dout[(size_t)i * ld_dout + o];
            dbias[o] += s;
        }
    }
}

/* -------------------------------------------------------------- embeddings */

static void embedding_forward(float *out, const int32_t *tokens, const int32_t *pos,
                              const float *wte, const float *wpe, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        float *o = out + (size_t)i * C;
        const float *e = wte + (size_t)tokens[i] * C;
        if (wpe) {
            const float *p = wpe + (size_t)pos[i] * C;
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        } else {
            memcpy(o, e, C * sizeof(float));
        }
    }
}

/* Column blocks keep the scatter-add race-free and in a fixed order. */
#define COL_BLOCK 64

static void embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                               const int32_t *pos, int N, int C) {
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        for (int i = 0; i < N; i++) {
            const float *d = dout + (size_t)i * C;
            if (dwte) {
                float *g = dwte + (size_t)tokens[i] * C;
                for (int c = c0; c < c1; c++) g[c] += d[c];
            }
            if (dwpe) {
                float *g = dwpe + (size_t)pos[i] * C;
                for (int c = c0; c < c1; c++) g[c] += d[c];
            }
        }
    }
}

/* ------------------------------------------------------------------- norms */

static void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                              const float *w, const float *b, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float m = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        float v = 0.0f;
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            v += d * d;
        }
        v /= C;
        float r = 1.0f / sqrtf(v + eps);
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * r * w[c] + (b ? b[c] : 0.0f);
        mean[i] = m;
        rstd[i] = r;
    }
}

static void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                               const float *inp, const float *w, const float *mean,
                               const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *d = dout + (size_t)i * C, *x = inp + (size_t)i * C;
        float m = mean[i], r = rstd[i];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int c = 0; c < C; c++) {
            float n = (x[c] - m) * r, dn = w[c] * d[c];
            dnorm_mean += dn;
            dnorm_norm_mean += dn * n;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        float *di = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) {
            float n = (x[c] - m) * r, dn = w[c] * d[c];
            di[c] += (dn - dnorm_mean - n * dnorm_norm_mean) * r;
        }
    }
    if (!dw && !db) return;
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int bk = 0; bk < nblocks; bk++) {
        int c0 = bk * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        for (int i = 0; i < N; i++) {
            const float *d = dout + (size_t)i * C, *x = inp + (size_t)i * C;
            for (int c = c0; c < c1; c++) {
                if (dw) dw[c] += (x[c] - mean[i]) * rstd[i] * d[c];
                if (db) db[c] += d[c];
            }
        }
    }
}

static void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N,
                            int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = x[c] * r * w[c];
        rstd[i] = r;
    }
}

/* y = w * x * r, r = (mean(x^2) + eps)^-1/2:
 * dx = r * g - x * r^3 * mean(g * x) with g = dout * w; dw += dout * x * r */
static void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *d = dout + (size_t)i * C, *x = inp + (size_t)i * C;
        float r = rstd[i], gx = 0.0f;
        for (int c = 0; c < C; c++) gx += d[c] * w[c] * x[c];
        float k = r * r * r * gx / C;
        float *di = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) di[c] += r * d[c] * w[c] - x[c] * k;
    }
    if (!dw) return;
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int bk = 0; bk < nblocks; bk++) {
        int c0 = bk * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        for (int i = 0; i < N; i++) {
            const float *d = dout + (size_t)i * C, *x = inp + (size_t)i * C;
            for (int c = c0; c < c1; c++) dw[c] += d[c] * x[c] * rstd[i];
        }
    }
}

/* ---------------------------------------------------------------- rope */

/* model_create refuses larger head dims; the angles of one token live on the stack. */
#define ROPE_MAX_HALF 1024

/* Rotate-half RoPE, as Hugging Face Llama: pairs (j, j + rot/2) of the
 * first rot dims of each head rotate by pos * inv_freq[j]; the rest pass
 * through (Phi-4-mini's partial rotary). cos and sin are multiplied by
 * scale (longrope's attention factor, applied to cos/sin as transformers
 * does, so the pass-through dims stay unscaled). sign = +1 forward, -1 for
 * the transpose (backward). */
static void rope_apply(float *qkv, const int32_t *pos, const float *inv_freq, int N, int Hq,
                       int Hkv, int hd, int rot, float scale, float sign) {
    int half = rot / 2, row = (Hq + 2 * Hkv) * hd;
    if (half > ROPE_MAX_HALF || rot > hd || rot % 2) {
        cpu_fail("rope: rotary dims %d of head_dim %d (at most %d, even)", rot, hd, 2 * ROPE_MAX_HALF);
        return;
    }
#pragma omp parallel
    {
        float cs[2 * ROPE_MAX_HALF];
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++) {
            for (int j = 0; j < half; j++) {
                float angle = (float)pos[i] * inv_freq[j];
                cs[j] = cosf(angle) * scale;
                cs[half + j] = sign * (sinf(angle) * scale);
            }
            for (int h = 0; h < Hq + Hkv; h++) { /* q heads then k heads */
                float *x = qkv + (size_t)i * row + h * hd;
                for (int j = 0; j < half; j++) {
                    float x1 = x[j], x2 = x[j + half], c = cs[j], s = cs[half + j];
                    x[j] = x1 * c - x2 * s;
                    x[j + half] = x2 * c + x1 * s;
                }
            }
        }
    }
}

static void rope_forward(float *qkv, const int32_t *pos, const float *inv_freq, int N, int Hq,
                         int Hkv, int hd) {
    rope_apply(qkv, pos, inv_freq, N, Hq, Hkv, hd, hd, 1.0f, 1.0f);
}

static void rope_backward(float *dqkv, const int32_t *pos, const float *inv_freq, int N, int Hq,
                          int Hkv, int hd) {
    rope_apply(dqkv, pos, inv_freq, N, Hq, Hkv, hd, hd, 1.0f, -1.0f);
}

static void rope_ext_forward(float *qkv, const int32_t *pos, const float *inv_freq, int N, int Hq, int Hkv,
                             int hd, int rot, float scale) {
    rope_apply(qkv, pos, inv_freq, N, Hq, Hkv, hd, rot, scale, 1.0f);
}

static void rope_ext_backward(float *dqkv, const int32_t *pos, const float *inv_freq, int N, int Hq, int Hkv,
                              int hd, int rot, float scale) {
    rope_apply(dqkv, pos, inv_freq, N, Hq, Hkv, hd, rot, scale, -1.0f);
}

/* ------------------------------------------------------------- attention */

/* Query rows per block. Attention runs a block of rows at a time against
 * every key the block can see, so its scratch is ATTN_BQ x (prefix + T)
 * floats per buffer, linear in sequence length (a 30,000-token sequence:
 * 7.3 MiB, where whole T x T score matrices took 3.4 GiB per thread), and
 * keys after a block's last row, all masked, are never multiplied. 64 rows
 * keep every product a sgemm big enough to run at full speed. */
#define ATTN_BQ 64

/* Rows r0 .. r0 + B - 1 of one (sequence, query head), a block of its T
 * queries: they see all Lp prefix keys (kp, vp; NULL when Lp == 0) and the
 * sequence's first r0 + i + 1 keys. Key columns are numbered by position:
 * [0, Lp) the prefix, the rest the sequence. With a sliding window, row i
 * (position Lp + r0 + i) sees only columns > its position - window, so
 * the block computes columns [c0, Lp + r0 + B) and no others: c0 is its
 * first row's lowest visible column (0 without a window). Scores and
 * probabilities are B x Wb, Wb = Lp + r0 + B - c0, row-major with ld Wb:
 * the first pc = max(Lp - c0, 0) columns are prefix keys from c0, the rest
 * sequence keys from ks0 = max(c0 - Lp, 0). */
typedef struct {
    const float *q, *k, *v, *kp, *vp; /* q: the block's first row; rows of stride ld (qkv layout) */
    int B, r0, Lp, hd, ld;
    int window;        /* 0: causal only */
    int c0, pc, ks0, Wb;
    float scale;
    float softcap;     /* 0: none; else scores -> softcap * tanh(s / softcap) (Gemma 2) */
} AttnBlock;

/* The columns row i of the block sees: [*a, *e) of its score row. */
static void attn_row_span(const AttnBlock *t, int i, int *a, int *e) {
    int pos = t->Lp + t->r0 + i, lo = t->window > 0 && pos - t->window + 1 > 0 ? pos - t->window + 1 : 0;
    *a = lo - t->c0;
    *e = pos + 1 - t->c0;
}

static float row_max(const float *x, int n) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

/* Scores S = scale * Q [Kp; K]^T turned in place into probabilities
 * P = exp(S - lse) under the (prefix +) causal mask; lse computed when
 * lse_out is non-NULL, else read from lse_in (both indexed by block row). */
static void attention_probs(float *S, const AttnBlock *t, float *lse_out, const float *lse_in) {
    int B = t->B, W = t->Wb, pc = t->pc;
    if (pc)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, pc, t->hd, t->scale, t->q, t->ld,
                    t->kp + (size_t)t->c0 * t->ld, t->ld, 0.0f, S, W);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, W - pc, t->hd, t->scale, t->q, t->ld,
                t->k + (size_t)t->ks0 * t->ld, t->ld, 0.0f, S + pc, W);
    for (int i = 0; i < B; i++) {
        float *s = S + (size_t)i * W;
        int a, n; /* visible keys: columns [a, n) */
        attn_row_span(t, i, &a, &n);
        for (int j = 0; j < a; j++) s[j] = 0.0f;
        s += a;
        n -= a;
        if (t->softcap > 0) {
            float c = t->softcap, ic = 1.0f / c;
            for (int j = 0; j < n; j++) s[j] = c * tanhf(s[j] * ic);
        }
        if (lse_out) {
            float mx = row_max(s, n), sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < n; j++) sum += s[j] = vexp(s[j] - mx);
            lse_out[i] = mx + logf(sum);
            float inv = 1.0f / sum;
            for (int j = 0; j < n; j++) s[j] *= inv;
        } else {
            float l = lse_in[i];
#pragma omp simd
            for (int j = 0; j < n; j++) s[j] = vexp(s[j] - l);
        }
        for (int j = n; j < W - a; j++) s[j] = 0.0f;
    }
}

/* The most attention scratch one thread has held, in bytes, and failures
 * to inject (backend_cpu_attention_scratch_peak and
 * backend_cpu_inject_alloc_failures in backend.h). */
static size_t g_scratch_peak;
static atomic_int g_inject_failures;

/* Per-thread scratch that survives across calls: blocks of score rows are
 * large enough that malloc would mmap (and page-fault) them afresh in every
 * layer. NULL, with the failure recorded, when it cannot grow. */
static float *thread_scratch(int slot, size_t floats) {
    static _Thread_local float *buf[2];
    static _Thread_local size_t cap[2];
    int pending = atomic_load(&g_inject_failures);
    while (pending > 0 && !atomic_compare_exchange_weak(&g_inject_failures, &pending, pending - 1)) {}
    if (pending > 0) {
        cpu_fail("out of memory for %.1f MiB of attention scratch (injected)", floats * 4.0 / 1048576);
        return NULL;
    }
    if (floats > cap[slot]) {
        free(buf[slot]);
        buf[slot] = malloc(floats * sizeof(float));
        cap[slot] = buf[slot] ? floats : 0;
        if (!buf[slot]) {
            cpu_fail("out of memory for %.1f MiB of attention scratch", floats * 4.0 / 1048576);
            return NULL;
        }
        size_t held = (cap[0] + cap[1]) * sizeof(float);
#pragma omp critical(cpu_scratch_peak)
        if (held > g_scratch_peak) g_scratch_peak = held;
    }
    return buf[slot];
}

size_t backend_cpu_attention_scratch_peak(void) {
    size_t p;
#pragma omp critical(cpu_scratch_peak)
    p = g_scratch_peak;
    return p;
}

void backend_cpu_inject_alloc_failures(int n) { atomic_store(&g_inject_failures, n > 0 ? n : 0); }

/* Inside a parallel region: every thread has taken its scratch (ok cleared
 * by any that could not); 1 when the whole team may work. All threads must
 * call it, since it waits for them. */
static int team_ready(int *ok, int mine) {
    if (!mine) {
#pragma omp atomic write
        *ok = 0;
    }
#pragma omp barrier
    int all;
#pragma omp atomic read
    all = *ok;
    return all;
}

static int seq_len_of(const int32_t *seq_start, int s) { return seq_start[s + 1] - seq_start[s]; }

static int prefix_len_of(const int32_t *seq_start, const int32_t *seq_prefix, int s) {
    return seq_prefix && seq_prefix[s] >= 0 ? seq_len_of(seq_start, seq_prefix[s]) : 0;
}

/* The largest block of scores any sequence needs, at most ATTN_BQ x (Lp + T). */
static size_t max_block_scores(const int32_t *seq_start, const int32_t *seq_prefix, int n_seqs) {
    size_t mx = 0;
    for (int s = 0; s < n_seqs; s++) {
        size_t T = (size_t)seq_len_of(seq_start, s), W = T + prefix_len_of(seq_start, seq_prefix, s);
        size_t rows = T < ATTN_BQ ? T : ATTN_BQ;
        mx = rows * W > mx ? rows * W : mx;
    }
    return mx;
}

/* The block of query head h over rows r0.. of sequence s (and its prefix, if any). */
static AttnBlock attn_block(const float *qkv, const int32_t *seq_start, const int32_t *seq_prefix, int s,
                            int r0, int h, int g, int Hq, int Hkv, int hd, int window, float scale, float softcap) {
    int ld = (Hq + 2 * Hkv) * hd, t0 = seq_start[s], T = seq_len_of(seq_start, s);
    AttnBlock t = {.B = T - r0 < ATTN_BQ ? T - r0 : ATTN_BQ, .r0 = r0,
                   .Lp = prefix_len_of(seq_start, seq_prefix, s), .hd = hd, .ld = ld, .window = window,
                   .scale = scale, .softcap = softcap};
    int first = t.Lp + r0; /* the block's first row's position */
    t.c0 = window > 0 && first - window + 1 > 0 ? first - window + 1 : 0;
    t.pc = t.Lp > t.c0 ? t.Lp - t.c0 : 0;
    t.ks0 = t.c0 > t.Lp ? t.c0 - t.Lp : 0;
    t.Wb = t.Lp + r0 + t.B - t.c0;
    t.q = qkv + (size_t)(t0 + r0) * ld + h * hd;
    t.k = qkv + (size_t)t0 * ld + (Hq + g) * hd;
    t.v = qkv + (size_t)t0 * ld + (Hq + Hkv + g) * hd;
    if (t.Lp) {
        int p0 = seq_start[seq_prefix[s]];
        t.kp = qkv + (size_t)p0 * ld + (Hq + g) * hd;
        t.vp = qkv + (size_t)p0 * ld + (Hq + Hkv + g) * hd;
    }
    return t;
}

/* attention_forward_ext in batch-invariant mode: each query row alone
 * through attention_row_fixed, a unit of work being one (sequence, query
 * head). */
static void attention_forward_rows(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                                   const int32_t *seq_prefix, int n_seqs, int N, int Hq, int Hkv, int hd,
                                   int window, float scale, float softcap) {
    int ld = (Hq + 2 * Hkv) * hd, ldo = Hq * hd, group = Hq / Hkv, units = n_seqs * Hq, ok = 1;
    size_t Tmax = 0;
    for (int s = 0; s < n_seqs; s++) {
        size_t t = (size_t)seq_len_of(seq_start, s) + prefix_len_of(seq_start, seq_prefix, s);
        Tmax = t > Tmax ? t : Tmax;
    }
#pragma omp parallel
    {
        float *S = thread_scratch(0, Tmax);
        if (team_ready(&ok, S != NULL)) {
#pragma omp for schedule(dynamic, 1)
            for (int u = 0; u < units; u++) {
                int s = u / Hq, h = u % Hq, g = h / group, t0 = seq_start[s], T = seq_len_of(seq_start, s);
                int Lp = prefix_len_of(seq_start, seq_prefix, s);
                const float *k = qkv + (size_t)t0 * ld + (Hq + g) * hd, *v = k + Hkv * hd, *kp = NULL, *vp = NULL;
                if (Lp) {
                    kp = qkv + (size_t)seq_start[seq_prefix[s]] * ld + (Hq + g) * hd;
                    vp = kp + Hkv * hd;
                }
                for (int r = 0; r < T; r++) {
                    int pos = Lp + r, lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
                    int n1 = lo < Lp ? Lp - lo : 0, ks = lo > Lp ? lo - Lp : 0;
                    size_t i = (size_t)t0 + r;
                    attention_row_fixed(out + i * ldo + h * hd, lse + (size_t)h * N + i, qkv + i * ld + h * hd,
                                        n1 ? kp + (size_t)lo * ld : NULL, n1 ? vp + (size_t)lo * ld : NULL, ld, n1,
                                        k + (size_t)ks * ld, v + (size_t)ks * ld, ld, r + 1 - ks, hd, scale,
                                        softcap, S);
                }
            }
        }
    }
}

/* Causal attention within each packed sequence; a sequence s with
 * seq_prefix[s] = p >= 0 also attends to every token of sequence p (one
 * level: p has no prefix itself). That is how a DPO pair shares its prompt:
 * [prompt | chosen | rejected] with both completions extending the prompt.
 * Query blocks are independent here, so a unit of work is one block of one
 * kv head's query heads: a single long sequence still spreads over every
 * thread. */
static void attention_forward_ext(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                                  const int32_t *seq_prefix, int n_seqs, int N, int Hq, int Hkv, int hd, int window,
                                  float scale, float softcap) {
    if (atomic_load(&g_invariant)) {
        attention_forward_rows(out, lse, qkv, seq_start, seq_prefix, n_seqs, N, Hq, Hkv, hd, window, scale, softcap);
        return;
    }
    int ldo = Hq * hd, group = Hq / Hkv;
    /* first_block[s]: sequence s's first query block, numbered across the batch */
    int *first_block = malloc(sizeof(int) * ((size_t)n_seqs + 1));
    if (!first_block) {
        cpu_fail("out of memory in attention forward");
        return;
    }
    first_block[0] = 0;
    for (int s = 0; s < n_seqs; s++)
        first_block[s + 1] = first_block[s] + (seq_len_of(seq_start, s) + ATTN_BQ - 1) / ATTN_BQ;
    size_t smax = max_block_scores(seq_start, seq_prefix, n_seqs);
    int n_blocks = first_block[n_seqs], units = n_blocks * Hkv, ok = 1;
#pragma omp parallel
    {
        float *S = thread_scratch(0, smax);
        if (team_ready(&ok, S != NULL)) {
#pragma omp for schedule(dynamic, 1)
            for (int u = 0; u < units; u++) {
                /* backwards: a sequence's later blocks see more keys, so the
                 * longest units start first */
                int b = n_blocks - 1 - u / Hkv, g = u % Hkv, lo = 0, hi = n_seqs - 1;
                while (lo < hi) { /* the sequence holding block b */
                    int mid = (lo + hi + 1) / 2;
                    if (first_block[mid] <= b) lo = mid;
                    else hi = mid - 1;
                }
                int s = lo, t0 = seq_start[s], r0 = (b - first_block[s]) * ATTN_BQ;
                for (int h = g * group; h < (g + 1) * group; h++) {
                    AttnBlock t = attn_block(qkv, seq_start, seq_prefix, s, r0, h, g, Hq, Hkv, hd, window, scale,
                                             softcap);
                    int W = t.Wb, pc = t.pc;
                    float *o = out + (size_t)(t0 + r0) * ldo + h * hd;
                    attention_probs(S, &t, lse + (size_t)h * N + t0 + r0, NULL);
                    if (pc)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t.B, hd, pc, 1.0f, S, W,
                                    t.vp + (size_t)t.c0 * t.ld, t.ld, 0.0f, o, ldo);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t.B, hd, W - pc, 1.0f, S + pc, W,
                                t.v + (size_t)t.ks0 * t.ld, t.ld, pc ? 1.0f : 0.0f, o, ldo);
                }
            }
        }
    }
    free(first_block);
}

static void attention_forward_window(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                                     const int32_t *seq_prefix, int n_seqs, int N, int Hq, int Hkv, int hd,
                                     int window) {
    attention_forward_ext(out, lse, qkv, seq_start, seq_prefix, n_seqs, N, Hq, Hkv, hd, window,
                          1.0f / sqrtf((float)hd), 0.0f);
}

static void attention_forward_prefixed(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                                       const int32_t *seq_prefix, int n_seqs, int N, int Hq, int Hkv,
                                       int hd) {
    attention_forward_window(out, lse, qkv, seq_start, seq_prefix, n_seqs, N, Hq, Hkv, hd, 0);
}

static void attention_forward(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                              int n_seqs, int N, int Hq, int Hkv, int hd) {
    attention_forward_window(out, lse, qkv, seq_start, NULL, n_seqs, N, Hq, Hkv, hd, 0);
}

/* Backward of one query block, flash-attention style: recompute P from the
 * saved lse, then dV += P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)),
 * dQ = dS K * scale, dK += dS^T Q * scale, over the block's columns (see
 * AttnBlock: pc prefix columns from c0, then sequence keys from ks0; dkp,
 * dvp: the prefix's). dq, o, dO and lse start at the block's first row;
 * dk, dv, dkp, dvp at their sequence's. */
static void attention_backward_block(const AttnBlock *t, float *dq, float *dk, float *dv, float *dkp, float *dvp,
                                     const float *o, const float *dO, int ldo, const float *lse, float *P,
                                     float *dS) {
    int B = t->B, pc = t->pc, W = t->Wb, K = W - pc, hd = t->hd, ld = t->ld;
    size_t pk = (size_t)t->c0 * ld, sk = (size_t)t->ks0 * ld; /* first prefix / sequence key rows */
    attention_probs(P, t, NULL, lse);
    if (pc) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, pc, hd, B, 1.0f, P, W, dO, ldo, 1.0f, dvp + pk, ld);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, pc, hd, 1.0f, dO, ldo, t->vp + pk, ld, 0.0f, dS, W);
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, hd, B, 1.0f, P + pc, W, dO, ldo, 1.0f, dv + sk, ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, K, hd, 1.0f, dO, ldo, t->v + sk, ld, 0.0f, dS + pc, W);
    for (int i = 0; i < B; i++) {
        float d = 0.0f;
        for (int c = 0; c < hd; c++) d += dO[(size_t)i * ldo + c] * o[(size_t)i * ldo + c];
        float *ds = dS + (size_t)i * W;
        const float *p = P + (size_t)i * W;
        int a, n; /* P is 0 outside [a, n) */
        attn_row_span(t, i, &a, &n);
        for (int j = 0; j < a; j++) ds[j] = 0.0f;
        if (t->softcap > 0) {
            /* through the cap: d/ds of c tanh(s/c) = 1 - (y/c)^2, with the
             * capped score y = log p + lse recovered from P (p = 0: no gradient) */
            float ic = 1.0f / t->softcap, l = lse[i];
            for (int j = a; j < n; j++) {
                float y = p[j] > 0.0f ? (logf(p[j]) + l) * ic : 0.0f;
                ds[j] = p[j] * (ds[j] - d) * t->scale * (1.0f - y * y);
            }
        } else {
            for (int j = a; j < n; j++) ds[j] = p[j] * (ds[j] - d) * t->scale;
        }
        for (int j = n; j < W; j++) ds[j] = 0.0f;
    }
    if (pc) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, hd, pc, 1.0f, dS, W, t->kp + pk, ld, 0.0f, dq, ld);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, pc, hd, B, 1.0f, dS, W, t->q, ld, 1.0f, dkp + pk, ld);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, hd, K, 1.0f, dS + pc, W, t->k + sk, ld,
                pc ? 1.0f : 0.0f, dq, ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, hd, B, 1.0f, dS + pc, W, t->q, ld, 1.0f, dk + sk, ld);
}

/* dqkv = (overwritten) gradient wrt qkv. A unit owns one kv head of one
 * root sequence and of every sequence extending it, so the dK/dV rows that
 * all their query blocks add into (the prefix's too) are written by one
 * thread only. */
static void attention_backward_ext(float *dqkv, const float *dout, const float *out, const float *lse,
                                   const float *qkv, const int32_t *seq_start, const int32_t *seq_prefix,
                                   int n_seqs, int N, int Hq, int Hkv, int hd, int window, float scale,
                                   float softcap) {
    int ld = (Hq + 2 * Hkv) * hd, ldo = Hq * hd, group = Hq / Hkv;
    size_t smax = max_block_scores(seq_start, seq_prefix, n_seqs);
    /* roots[] and, per root, its extensions as a linked list: next[] */
    int *roots = malloc(sizeof(int) * (size_t)n_seqs), *first = malloc(sizeof(int) * (size_t)n_seqs),
        *next = malloc(sizeof(int) * (size_t)n_seqs);
    if (!roots || !first || !next) {
        free(roots), free(first), free(next);
        cpu_fail("out of memory in attention backward");
        return;
    }
    int n_roots = 0;
    for (int s = 0; s < n_seqs; s++) first[s] = next[s] = -1;
    for (int s = n_seqs - 1; s >= 0; s--) {
        int p = seq_prefix ? seq_prefix[s] : -1;
        if (p >= 0) next[s] = first[p], first[p] = s;
    }
    for (int s = 0; s < n_seqs; s++)
        if (!seq_prefix || seq_prefix[s] < 0) roots[n_roots++] = s;
    int units = n_roots * Hkv, ok = 1;
#pragma omp parallel
    {
        float *P = thread_scratch(0, smax);
        float *dS = thread_scratch(1, smax);
        if (team_ready(&ok, P && dS)) {
#pragma omp for schedule(dynamic, 1)
            for (int u = 0; u < units; u++) {
                int r = roots[u / Hkv], g = u % Hkv;
                for (int s = r; s >= 0; s = s == r ? first[r] : next[s])
                    for (int i = seq_start[s]; i < seq_start[s + 1]; i++) {
                        memset(dqkv + (size_t)i * ld + (Hq + g) * hd, 0, hd * sizeof(float));
                        memset(dqkv + (size_t)i * ld + (Hq + Hkv + g) * hd, 0, hd * sizeof(float));
                    }
                float *dkp = dqkv + (size_t)seq_start[r] * ld + (Hq + g) * hd;
                float *dvp = dqkv + (size_t)seq_start[r] * ld + (Hq + Hkv + g) * hd;
                for (int s = r; s >= 0; s = s == r ? first[r] : next[s]) {
                    size_t t0 = (size_t)seq_start[s];
                    float *dk = dqkv + t0 * ld + (Hq + g) * hd, *dv = dqkv + t0 * ld + (Hq + Hkv + g) * hd;
                    for (int h = g * group; h < (g + 1) * group; h++)
                        for (int r0 = 0; r0 < seq_len_of(seq_start, s); r0 += ATTN_BQ) {
                            AttnBlock t = attn_block(qkv, seq_start, seq_prefix, s, r0, h, g, Hq, Hkv, hd, window,
                                                     scale, softcap);
                            size_t row = t0 + r0;
                            attention_backward_block(&t, dqkv + row * ld + h * hd, dk, dv, dkp, dvp,
                                                     out + row * ldo + h * hd, dout + row * ldo + h * hd, ldo,
                                                     lse + (size_t)h * N + row, P, dS);
                        }
                }
            }
        }
    }
    free(roots), free(first), free(next);
}

static void attention_backward_window(float *dqkv, const float *dout, const float *out, const float *lse,
                                      const float *qkv, const int32_t *seq_start, const int32_t *seq_prefix,
                                      int n_seqs, int N, int Hq, int Hkv, int hd, int window) {
    attention_backward_ext(dqkv, dout, out, lse, qkv, seq_start, seq_prefix, n_seqs, N, Hq, Hkv, hd, window,
                           1.0f / sqrtf((float)hd), 0.0f);
}

static void attention_backward_prefixed(float *dqkv, const float *dout, const float *out, const float *lse,
                                        const float *qkv, const int32_t *seq_start, const int32_t *seq_prefix,
                                        int n_seqs, int N, int Hq, int Hkv, int hd) {
    attention_backward_window(dqkv, dout, out, lse, qkv, seq_start, seq_prefix, n_seqs, N, Hq, Hkv, hd, 0);
}

static void attention_backward(float *dqkv, const float *dout, const float *out, const float *lse,
                               const float *qkv, const int32_t *seq_start, int n_seqs, int N,
                               int Hq, int Hkv, int hd) {
    attention_backward_window(dqkv, dout, out, lse, qkv, seq_start, NULL, n_seqs, N, Hq, Hkv, hd, 0);
}

/* Decoding: each new token's scores are one row of at most past + new keys
 * (the last `window` of them with a sliding window), so the scratch is
 * already linear in the cache's length. */
static void attention_forward_cached_ext(float *out, const float *qkv, float *kcache, float *vcache,
                                         const int32_t *slots, const int32_t *past, const int32_t *seq_start,
                                         int n_seqs, int N, int Hq, int Hkv, int hd, int max_len, int window,
                                         float scale, float softcap) {
    int ld = (Hq + 2 * Hkv) * hd, ldo = Hq * hd, kvd = Hkv * hd, group = Hq / Hkv;
    int Tmax = 0;
    for (int s = 0; s < n_seqs; s++) {
        int t = past[s] + seq_start[s + 1] - seq_start[s];
        Tmax = t > Tmax ? t : Tmax;
    }
    int units = n_seqs * Hq, ok = 1; /* one query head of one sequence: 9 units at batch 1, not 3 */
    int invariant = atomic_load(&g_invariant);
#pragma omp parallel
    {
        /* append the new keys and values to their slots */
#pragma omp for schedule(static)
        for (int s = 0; s < n_seqs; s++) {
            for (int i = seq_start[s]; i < seq_start[s + 1]; i++) {
                size_t at = ((size_t)slots[s] * max_len + past[s] + (i - seq_start[s])) * kvd;
                memcpy(kcache + at, qkv + (size_t)i * ld + Hq * hd, kvd * sizeof(float));
                memcpy(vcache + at, qkv + (size_t)i * ld + (Hq + Hkv) * hd, kvd * sizeof(float));
            }
        }
        float *S = thread_scratch(0, (size_t)Tmax);
        /* static: each thread takes a run of consecutive units, so the heads
         * of one kv group (and a sequence's groups) mostly stay on one thread
         * with their K and V in its cache: at batch 16 over 800 keys 1.4x
         * faster than dynamic, 1, and 1.1x faster than one group per chunk */
        if (team_ready(&ok, S != NULL)) {
#pragma omp for schedule(static)
            for (int u = 0; u < units; u++) {
                int s = u / Hq, h = u % Hq, g = h / group;
                const float *K = kcache + (size_t)slots[s] * max_len * kvd + g * hd;
                const float *Vc = vcache + (size_t)slots[s] * max_len * kvd + g * hd;
                for (int i = seq_start[s]; i < seq_start[s + 1]; i++) {
                    int end = past[s] + (i - seq_start[s]) + 1; /* keys [lo, end) are visible to this token */
                    int lo = window > 0 && end > window ? end - window : 0, T = end - lo;
                    const float *q = qkv + (size_t)i * ld + h * hd;
                    if (invariant) { /* the training forward's row, to the bit */
                        attention_row_fixed(out + (size_t)i * ldo + h * hd, NULL, q, K + (size_t)lo * kvd,
                                            Vc + (size_t)lo * kvd, kvd, T, NULL, NULL, kvd, 0, hd, scale, softcap,
                                            S);
                        continue;
                    }
                    /* S = scale K q, o = V^T softmax(S): single-threaded gemvs inside the region */
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, T, hd, scale, K + (size_t)lo * kvd, kvd, q, 1, 0.0f,
                                S, 1);
                    if (softcap > 0)
                        for (int j = 0; j < T; j++) S[j] = softcap * tanhf(S[j] * (1.0f / softcap));
                    float mx = row_max(S, T), sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                    for (int j = 0; j < T; j++) sum += S[j] = vexp(S[j] - mx);
                    cblas_sgemv(CblasRowMajor, CblasTrans, T, hd, 1.0f / sum, Vc + (size_t)lo * kvd, kvd, S, 1,
                                0.0f, out + (size_t)i * ldo + h * hd, 1);
                }
            }
        }
    }
}

static void attention_forward_cached_window(float *out, const float *qkv, float *kcache, float *vcache,
                                            const int32_t *slots, const int32_t *past,
                                            const int32_t *seq_start, int n_seqs, int N, int Hq, int Hkv,
                                            int hd, int max_len, int window) {
    attention_forward_cached_ext(out, qkv, kcache, vcache, slots, past, seq_start, n_seqs, N, Hq, Hkv, hd, max_len,
                                 window, 1.0f / sqrtf((float)hd), 0.0f);
}

static void attention_forward_cached(float *out, const float *qkv, float *kcache, float *vcache,
                                     const int32_t *slots, const int32_t *past,
                                     const int32_t *seq_start, int n_seqs, int N, int Hq, int Hkv,
                                     int hd, int max_len) {
    attention_forward_cached_window(out, qkv, kcache, vcache, slots, past, seq_start, n_seqs, N, Hq, Hkv, hd,
                                    max_len, 0);
}

/* ------------------------------------------------------------ activations */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

static void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

static void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        float t = tanhf(u);
        float sech2 = 1.0f - t * t;
        float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * x * sech2 * du);
    }
}

static void swiglu_forward(float *out, const float *gate_up, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *g = gate_up + (size_t)i * 2 * F, *u = g + F;
        float *o = out + (size_t)i * F;
#pragma omp simd
        for (int j = 0; j < F; j++) o[j] = g[j] / (1.0f + vexp(-g[j])) * u[j];
    }
}

/* silu'(g) = s * (1 + g * (1 - s)), s = sigmoid(g) */
static void swiglu_backward(float *dgate_up, const float *dout, const float *gate_up, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *g = gate_up + (size_t)i * 2 * F, *u = g + F, *d = dout + (size_t)i * F;
        float *dg = dgate_up + (size_t)i * 2 * F, *du = dg + F;
#pragma omp simd
        for (int j = 0; j < F; j++) {
            float s = 1.0f / (1.0f + vexp(-g[j]));
            du[j] = d[j] * g[j] * s;
            dg[j] = d[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
        }
    }
}

/* GeGLU (Gemma): gelu_tanh(gate) * up, the GELU of gelu_forward above */
static void geglu_forward(float *out, const float *gate_up, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *g = gate_up + (size_t)i * 2 * F, *u = g + F;
        float *o = out + (size_t)i * F;
        for (int j = 0; j < F; j++) {
            float x = g[j];
            o[j] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x))) * u[j];
        }
    }
}

static void geglu_backward(float *dgate_up, const float *dout, const float *gate_up, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *g = gate_up + (size_t)i * 2 * F, *u = g + F, *d = dout + (size_t)i * F;
        float *dg = dgate_up + (size_t)i * 2 * F, *du = dg + F;
        for (int j = 0; j < F; j++) {
            float x = g[j], t = tanhf(GELU_K * (x + 0.044715f * x * x * x));
            float dgelu = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
            du[j] = d[j] * 0.5f * x * (1.0f + t);
            dg[j] = d[j] * u[j] * dgelu;
        }
    }
}

/* ------------------------------------------------------------ elementwise */

static void add(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void add_inplace(float *acc, const float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) acc[i] += x[i];
}

static void scale(float *x, float s, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static void gather_rows(float *out, const float *inp, const int32_t *rows, int n_rows, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n_rows; i++)
        memcpy(out + (size_t)i * C, inp + (size_t)rows[i] * C, C * sizeof(float));
}

static void scatter_add_rows(float *out, const float *inp, const int32_t *rows, int n_rows, int C) {
    /* rows are distinct in every caller, so rows never race */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n_rows; i++) {
        float *o = out + (size_t)rows[i] * C;
        const float *x = inp + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] += x[c];
    }
}

/* ------------------------------------------------------------ LM log-probs */

static void logprobs_forward(float *logp, float *lse, const float *logits, const int32_t *tgt,
                             int n, int V) {
    int invariant = atomic_load(&g_invariant);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *x = logits + (size_t)i * V;
        if (invariant) { /* the sampler's backend_cpu_logprob, to the bit */
            lse[i] = lse_fixed(x, V);
            if (logp) logp[i] = x[tgt[i]] - lse[i];
            continue;
        }
        float mx = row_max(x, V), sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int v = 0; v < V; v++) sum += vexp(x[v] - mx);
        float l = mx + logf(sum);
        lse[i] = l;
        if (logp) logp[i] = x[tgt[i]] - l;
    }
}

static void logprobs_backward(float *logits, const float *dlogp, const float *lse,
                              const int32_t *tgt, int n, int V) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float *x = logits + (size_t)i * V;
        float d = dlogp[i], l = lse[i];
#pragma omp simd
        for (int v = 0; v < V; v++) x[v] = -d * vexp(x[v] - l);
        x[tgt[i]] += d;
    }
}

/* Gemma's final soft cap on the logits: y = cap * tanh(x / cap). */
static void softcap_forward(float *x, size_t n, float cap) {
    float ic = 1.0f / cap;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] * ic);
}

/* logprobs_backward on the capped logits y, then through the cap:
 * dx = dy * (1 - (y / cap)^2), from y before it is overwritten. */
static void logprobs_backward_softcap(float *logits, const float *dlogp, const float *lse, const int32_t *tgt, int n,
                                      int V, float cap) {
    float ic = 1.0f / cap;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float *x = logits + (size_t)i * V;
        float d = dlogp[i], l = lse[i];
        for (int v = 0; v < V; v++) {
            float y = x[v], t = y * ic;
            x[v] = (-d * vexp(y - l) + (v == tgt[i] ? d : 0.0f)) * (1.0f - t * t);
        }
    }
}

/* -------------------------------------------------------------- optimizer */

/* Fixed chunks summed in order: the same result whatever the thread count.
 * Within a chunk, 8 double lanes (element i into lane i % 8) reduced in a
 * fixed order: a single running sum waits 4 cycles per element on the add
 * before it (the gradient norm was 3% of a KTO step on SmolLM2), the lanes
 * let the loop run 4-8 wide at memory speed. */
static double sum_squares(const float *x, size_t n) {
    enum { CHUNKS = 64 };
    double part[CHUNKS];
    size_t per = (n + CHUNKS - 1) / CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < CHUNKS; c++) {
        size_t a = c * per, b = a + per < n ? a + per : n, i = a;
        double l[8] = {0};
        for (; i + 8 <= b; i += 8)
            for (int k = 0; k < 8; k++) l[k] += (double)x[i + k] * x[i + k];
        double s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        for (; i < b; i++) s += (double)x[i] * x[i];
        part[c] = a < n ? s : 0.0;
    }
    double total = 0.0;
    for (int c = 0; c < CHUNKS; c++) total += part[c];
    return total;
}

/* One AdamW element, every rounding spelled out (fmaf where a product is
 * accumulated), so the AVX2 path below gives the same bits and the result
 * does not depend on which elements go 8 at a time. */
static inline float adamw_one(float *p, float g, float *m, float *v, float b1, float c1, float b2, float c2,
                              float eps, float decay, float step, float ib) {
    float mi = fmaf(b1, *m, c1 * g), vi = fmaf(b2, *v, (c2 * g) * g);
    *m = mi, *v = vi;
    return fmaf(*p, decay, -((step * mi) / fmaf(sqrtf(vi), ib, eps)));
}

/* AdamW over [a, b). sqrtf keeps a scalar loop scalar (errno: GCC will not
 * vectorise it without -fno-math-errno), so with AVX2 8 elements go through
 * the same operations as vector instructions: the step was ~5 cycles an
 * element on sqrtss and divss (AdamW 9.5% of a KTO step on SmolLM2), now
 * memory-bound. */
static void adamw_range(float *p, const float *g, float *m, float *v, size_t a, size_t b, float b1, float b2,
                        float eps, float decay, float step, float ib, float gs) {
    float c1 = 1.0f - b1, c2 = 1.0f - b2;
    size_t i = a;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 vb1 = _mm256_set1_ps(b1), vc1 = _mm256_set1_ps(c1), vb2 = _mm256_set1_ps(b2), vc2 = _mm256_set1_ps(c2);
    __m256 veps = _mm256_set1_ps(eps), vdec = _mm256_set1_ps(decay), vstep = _mm256_set1_ps(step);
    __m256 vib = _mm256_set1_ps(ib), vgs = _mm256_set1_ps(gs);
    for (; i + 8 <= b; i += 8) {
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), vgs);
        __m256 mi = _mm256_fmadd_ps(vb1, _mm256_loadu_ps(m + i), _mm256_mul_ps(vc1, gi));
        __m256 vi = _mm256_fmadd_ps(vb2, _mm256_loadu_ps(v + i), _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 q = _mm256_div_ps(_mm256_mul_ps(vstep, mi), _mm256_fmadd_ps(_mm256_sqrt_ps(vi), vib, veps));
        __m256 pi = _mm256_loadu_ps(p + i);
        _mm256_storeu_ps(p + i, _mm256_fmadd_ps(pi, vdec, _mm256_sub_ps(_mm256_setzero_ps(), q)));
    }
#endif
    for (; i < b; i++) p[i] = adamw_one(p + i, g[i] * gs, m + i, v + i, b1, c1, b2, c2, eps, decay, step, ib);
}

static void adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float wd, float bc1, float bc2, float grad_scale) {
    float decay = 1.0f - lr * wd;
    float step = lr / bc1, inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
#pragma omp parallel
    {
        size_t t = (size_t)omp_get_thread_num(), T = (size_t)omp_get_num_threads();
        adamw_range(p, g, m, v, n * t / T, n * (t + 1) / T, beta1, beta2, eps, decay, step, inv_sqrt_bc2,
                    grad_scale);
    }
}

/* -------------------------------------------------- LoRA and quantised */

static void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (!ta && tb && atomic_load(&g_invariant)) {
        /* C = alpha A B^T + beta C, the product a forward takes (LoRA's
         * adapters): each element a dot_fixed of its two rows, so a row's
         * result does not depend on M in batch-invariant mode */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float d = alpha * dot_fixed(A + (size_t)i * lda, B + (size_t)j * ldb, K);
                float *c = C + (size_t)i * ldc + j;
                *c = beta == 0.0f ? d : d + beta * *c;
            }
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}

static void dropout(float *out, const float *inp, size_t n, float p, uint64_t seed, int accumulate) {
    const float s = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = backend_dropout_keep(seed, i, p) ? inp[i] * s : 0.0f;
        out[i] = accumulate ? out[i] + v : v;
    }
}

/* Rows per dequantised tile: about 256 KiB of fp32, at least 16 rows. */
static int q_tile_rows(int C, int OC) {
    int r = (1 << 16) / (C > 0 ? C : 1);
    if (r < 16) r = 16;
    return r < OC ? r : OC;
}

static void dequant_tile(float *buf, const void *wq, int qtype, int r0, int rows, int C) {
    size_t rb = quant_row_bytes((QuantType)qtype, C);
    const uint8_t *src = (const uint8_t *)wq + (size_t)r0 * rb;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) quant_dequantize_rows((QuantType)qtype, src + r * rb, buf + (size_t)r * C, 1, C);
}

/* out[N,OC] = inp[N,C] @ dequant(wq)[OC,C]^T (+ bias), a tile of rows at a time */
static void matmul_forward_q(float *out, const float *inp, const void *wq, int qtype, const float *bias,
                             int N, int C, int OC) {
    int T = q_tile_rows(C, OC);
    float *buf = align_alloc((size_t)T * C * sizeof(float));
    if (!buf) {
        cpu_fail("out of memory for a %.1f MiB dequantisation tile", (double)T * C * 4 / 1048576);
        return;
    }
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < N; i++) memcpy(out + (size_t)i * OC, bias, OC * sizeof(float));
    }
    for (int r0 = 0; r0 < OC; r0 += T) {
        int rows = OC - r0 < T ? OC - r0 : T;
        dequant_tile(buf, wq, qtype, r0, rows, C);
        if (N == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, C, 1.0f, buf, C, inp, 1, bias ? 1.0f : 0.0f, out + r0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, rows, C, 1.0f, inp, C, buf, C,
                        bias ? 1.0f : 0.0f, out + r0, OC);
    }
    align_free(buf);
}

/* dinp[N,C] (+)= dout[N,OC] @ dequant(wq)[OC,C], summed over row tiles */
static void matmul_backward_input_q(float *dinp, const float *dout, const void *wq, int qtype, int N,
                                    int C, int OC, int accumulate) {
    int T = q_tile_rows(C, OC);
    float *buf = align_alloc((size_t)T * C * sizeof(float));
    if (!buf) {
        cpu_fail("out of memory for a %.1f MiB dequantisation tile", (double)T * C * 4 / 1048576);
        return;
    }
    for (int r0 = 0; r0 < OC; r0 += T) {
        int rows = OC - r0 < T ? OC - r0 : T;
        dequant_tile(buf, wq, qtype, r0, rows, C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, rows, 1.0f, dout + r0, OC, buf, C,
                    (accumulate || r0 > 0) ? 1.0f : 0.0f, dinp, C);
    }
    align_free(buf);
}

static void matmul_forward_q_int8(float *out, const float *inp, const void *wq, int qtype, const float *bias,
                                  int N, int C, int OC) {
    if (mquant_forward(out, inp, wq, qtype, bias, N, C, OC)) cpu_fail("%s", align_error());
}

const Backend backend_cpu = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .status = cpu_status,
    .matmul_forward = matmul_forward,
    .matmul_backward_input = matmul_backward_input,
    .matmul_backward_weight = matmul_backward_weight,
    .embedding_forward = embedding_forward,
    .embedding_backward = embedding_backward,
    .layernorm_forward = layernorm_forward,
    .layernorm_backward = layernorm_backward,
    .rmsnorm_forward = rmsnorm_forward,
    .rmsnorm_backward = rmsnorm_backward,
    .rope_forward = rope_forward,
    .rope_backward = rope_backward,
    .rope_ext_forward = rope_ext_forward,
    .rope_ext_backward = rope_ext_backward,
    .attention_forward = attention_forward,
    .attention_backward = attention_backward,
    .attention_forward_cached = attention_forward_cached,
    .gelu_forward = gelu_forward,
    .gelu_backward = gelu_backward,
    .swiglu_forward = swiglu_forward,
    .swiglu_backward = swiglu_backward,
    .add = add,
    .add_inplace = add_inplace,
    .scale = scale,
    .gather_rows = gather_rows,
    .scatter_add_rows = scatter_add_rows,
    .logprobs_forward = logprobs_forward,
    .logprobs_backward = logprobs_backward,
    .sum_squares = sum_squares,
    .adamw = adamw,
    .gemm = gemm,
    .dropout = dropout,
    .matmul_forward_q = matmul_forward_q,
    .matmul_backward_input_q = matmul_backward_input_q,
    .matmul_forward_q_int8 = matmul_forward_q_int8,
    .attention_forward_prefixed = attention_forward_prefixed,
    .attention_backward_prefixed = attention_backward_prefixed,
    .attention_forward_window = attention_forward_window,
    .attention_backward_window = attention_backward_window,
    .attention_forward_cached_window = attention_forward_cached_window,
    .attention_forward_ext = attention_forward_ext,
    .attention_backward_ext = attention_backward_ext,
    .attention_forward_cached_ext = attention_forward_cached_ext,
    .geglu_forward = geglu_forward,
    .geglu_backward = geglu_backward,
    .softcap_forward = softcap_forward,
    .logprobs_backward_softcap = logprobs_backward_softcap,
    .head_rmsnorm_forward = cpu_head_rmsnorm_forward,
    .head_rmsnorm_backward = cpu_head_rmsnorm_backward,
};
