/* backend: the interface every compute device implements.
 *
 * The model, the losses and the optimizer only ever call these operations,
 * on pointers the backend allocated, so the CUDA backend plugs in beside the
 * CPU one without touching model code. The CPU backend (fp32, OpenBLAS sgemm,
 * OpenMP elsewhere) is the oracle the others are tested against.
 *
 * Conventions (llm.c style): forward and backward of an op sit together and
 * take the same argument order; shapes are in the comments; a backward pass
 * ADDS into weight gradients (so micro-batches accumulate) and into input
 * gradients only where the comment says so. Matrices are row-major; a linear
 * weight is [OC, C] (out, in). Index arrays (tokens, positions, targets) are
 * backend memory too. */
#ifndef ALIGN_BACKEND_H
#define ALIGN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct Backend {
    const char *name;

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);     /* zeroed; NULL + align_errorf on failure */
    void (*free)(void *p);
    void (*to_device)(void *dst, const void *host_src, size_t bytes);
    void (*to_host)(void *host_dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*zero)(void *p, size_t bytes);
    void (*sync)(void);

    /* ---- errors ----
     * Ops return nothing, so one that fails (out of memory for its scratch,
     * a CUDA or cuBLAS error) records the failure and leaves its outputs
     * undefined; later ops may then compute on garbage. status() is 0 when
     * every op since the last status() succeeded, else -1 with the first
     * failure's sentence in align_error(). Callers check it after a run of
     * ops (model_forward, model_backward, model_forward_cached do) and before
     * trusting what they computed. The CPU backend forgets a failure once
     * reported (memory may be there next time); the CUDA backend keeps
     * reporting a device error, since its ops do nothing after one. It does
     * not wait for the device: a fault inside a kernel surfaces at the next
     * call that waits (to_host, sync). */
    int (*status)(void);

    /* ---- linear layers ----
     * out[N,OC] = inp[N,C] @ w[OC,C]^T (+ bias[OC] when non-NULL) */
    void (*matmul_forward)(float *out, const float *inp, const float *w, const float *bias,
                           int N, int C, int OC);
    /* dinp[N,C] (= or += when accumulate) dout[N,OC] @ w[OC,C] */
    void (*matmul_backward_input)(float *dinp, const float *dout, const float *w,
                                  int N, int C, int OC, int accumulate);
    /* dw[OC,C] += dout[N,OC]^T @ inp[N,C]; dbias[OC] += column sums of dout.
     * dout rows are ld_dout apart, so a slice of a fused output can be used.
     * dw or dbias may be NULL. */
    void (*matmul_backward_weight)(float *dw, float *dbias, const float *dout, int ld_dout,
                                   const float *inp, int N, int C, int OC);

    /* ---- embeddings ----
     * out[N,C] = wte[tokens[i]] (+ wpe[pos[i]] when wpe is non-NULL) */
    void (*embedding_forward)(float *out, const int32_t *tokens, const int32_t *pos,
                              const float *wte, const float *wpe, int N, int C);
    /* dwte[tokens[i]] += dout[i]; dwpe[pos[i]] += dout[i]; either may be NULL */
    void (*embedding_backward)(float *dwte, float *dwpe, const float *dout,
                               const int32_t *tokens, const int32_t *pos, int N, int C);

    /* ---- norms ----
     * LayerNorm: out = (x - mean) * rstd * w + b, saves mean[N], rstd[N] */
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *w, const float *b, int N, int C, float eps);
    /* dinp += ...; dw, db += ... (dw/db may be NULL) */
    void (*layernorm_backward)(float *dinp, float *dw, float *db, const float *dout,
                               const float *inp, const float *w, const float *mean,
                               const float *rstd, int N, int C);
    /* RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps) */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *w,
                            int N, int C, float eps);
    void (*rmsnorm_backward)(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, const float *rstd, int N, int C);

    /* ---- attention ----
     * qkv[N, (Hq + 2*Hkv) * hd] holds q | k | v per token.
     * RoPE (rotate-half convention, as Hugging Face Llama) rotates the q and k
     * parts in place by angle pos * inv_freq[j], inv_freq[hd/2]. */
    void (*rope_forward)(float *qkv, const int32_t *pos, const float *inv_freq,
                         int N, int Hq, int Hkv, int hd);
    /* The inverse rotation applied to dqkv in place. */
    void (*rope_backward)(float *dqkv, const int32_t *pos, const float *inv_freq,
                          int N, int Hq, int Hkv, int hd);
    /* Causal attention within each packed sequence: out[N, Hq*hd]; saves the
     * log-sum-exp of each row of scores, lse[Hq * N], instead of the
     * probabilities, so memory stays linear in sequence length; backward
     * recomputes them. Query head h reads kv head h / (Hq/Hkv).
     * seq_start is a HOST array of n_seqs+1 offsets. */
    void (*attention_forward)(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                              int n_seqs, int N, int Hq, int Hkv, int hd);
    /* dqkv[N, (Hq+2Hkv)*hd] = (overwritten) gradient wrt qkv */
    void (*attention_backward)(float *dqkv, const float *dout, const float *out, const float *lse,
                               const float *qkv, const int32_t *seq_start, int n_seqs, int N,
                               int Hq, int Hkv, int hd);

    /* Attention for decoding with a KV cache. kcache/vcache hold one layer:
     * [n_slots][max_len][Hkv*hd]. Sequence s appends its new tokens
     * (rows seq_start[s]..seq_start[s+1] of qkv, q and k already rotated) to
     * slot slots[s] after past[s] cached tokens, then each new token attends
     * causally to everything in its slot. slots, past and seq_start are HOST
     * arrays. out[N, Hq*hd]. */
    void (*attention_forward_cached)(float *out, const float *qkv, float *kcache, float *vcache,
                                     const int32_t *slots, const int32_t *past,
                                     const int32_t *seq_start, int n_seqs, int N, int Hq, int Hkv,
                                     int hd, int max_len);

    /* ---- activations ----
     * GELU (tanh approximation): out[n] = gelu(inp[n]); dinp = dout * gelu'(inp) */
    void (*gelu_forward)(float *out, const float *inp, size_t n);
    void (*gelu_backward)(float *dinp, const float *dout, const float *inp, size_t n);
    /* SwiGLU over gate_up[N, 2F] (gate | up): out[N,F] = silu(gate) * up */
    void (*swiglu_forward)(float *out, const float *gate_up, int N, int F);
    void (*swiglu_backward)(float *dgate_up, const float *dout, const float *gate_up, int N, int F);

    /* ---- elementwise ---- */
    void (*add)(float *out, const float *a, const float *b, size_t n); /* out = a + b */
    void (*add_inplace)(float *acc, const float *x, size_t n);         /* acc += x */
    void (*scale)(float *x, float s, size_t n);
    /* out[i] = inp[rows[i]], rows of C floats */
    void (*gather_rows)(float *out, const float *inp, const int32_t *rows, int n_rows, int C);
    /* out[rows[i]] += inp[i] */
    void (*scatter_add_rows)(float *out, const float *inp, const int32_t *rows, int n_rows, int C);

    /* ---- LM head log-probs ----
     * logits[n,V]: lse[i] = logsumexp(logits[i]); logp[i] = logits[i][tgt[i]] - lse[i] */
    void (*logprobs_forward)(float *logp, float *lse, const float *logits, const int32_t *tgt,
                             int n, int V);
    /* In place: logits[i] becomes dlogp[i] * (onehot(tgt[i]) - softmax(logits[i])) */
    void (*logprobs_backward)(float *logits, const float *dlogp, const float *lse,
                              const int32_t *tgt, int n, int V);

    /* ---- optimizer ----
     * sum of squares of x[n] (the caller takes the square root) */
    double (*sum_squares)(const float *x, size_t n);
    /* One AdamW step (PyTorch semantics) on n elements: p -= lr*wd*p;
     * m, v moments; bias corrections bc1 = 1 - beta1^t, bc2 = 1 - beta2^t;
     * the gradient is multiplied by grad_scale first (clipping). */
    void (*adamw)(float *p, const float *g, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                  float grad_scale);

    /* ---- LoRA and quantised weights (common/model/lora.h, common/compute/quant.h) ----
     * A plain strided GEMM, row-major: C[M,N] (ldc) = alpha * op(A) op(B)
     * + beta * C, op(X) = X^T when transX. A is [M,K] (or [K,M] when
     * transposed) with leading dimension lda; B likewise [K,N] / [N,K].
     * LoRA's thin products (x A^T, h B^T into a column slice of a fused
     * output, their gradients) and merging B A into a weight use it. */
    void (*gemm)(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
    /* Inverted dropout with a mask that is a pure function of (seed, i):
     * out[i] (= or += when accumulate) inp[i] * (keep ? 1/(1-p) : 0), keep
     * when u(seed, i) >= p, u = top 24 bits of splitmix64(seed ^ i*phi) / 2^24.
     * The backward pass is the same call on the gradient (the mask is
     * recomputed, never stored); every backend draws the same mask. */
    void (*dropout)(float *out, const float *inp, size_t n, float p, uint64_t seed, int accumulate);
    /* matmul_forward / matmul_backward_input with a block-quantised weight
     * wq (QuantType qtype, rows of blocks, C a multiple of 32): tiles of rows
     * are dequantised into a small fp32 buffer and multiplied there, so the
     * fp32 weight never exists whole. No weight gradient: quantised weights
     * are frozen. */
    void (*matmul_forward_q)(float *out, const float *inp, const void *wq, int qtype,
                             const float *bias, int N, int C, int OC);
    void (*matmul_backward_input_q)(float *dinp, const float *dout, const void *wq, int qtype,
                                    int N, int C, int OC, int accumulate);
    /* Optional (NULL: callers use matmul_forward_q): matmul_forward_q for
     * inference, llama.cpp's way: the input is quantised to int8 blocks of
     * 32 and multiplied in integers against the weight's blocks, any ggml
     * type (cpu/matmul_quant.h; its error is the input's quantisation).
     * The cached (decoding) forward uses it; training never does. */
    void (*matmul_forward_q_int8)(float *out, const float *inp, const void *wq, int qtype,
                                  const float *bias, int N, int C, int OC);

    /* Optional (NULL where a backend lacks them; model_forward then refuses
     * batches with shared prefixes): attention_forward / attention_backward
     * where sequence s with seq_prefix[s] = p >= 0 also attends to every
     * token of the earlier sequence p, which has no prefix itself. A DPO
     * pair packed as [prompt | chosen | rejected] computes its prompt once.
     * seq_prefix is a HOST array of n_seqs entries (-1: none) or NULL. */
    void (*attention_forward_prefixed)(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                                       const int32_t *seq_prefix, int n_seqs, int N, int Hq, int Hkv,
                                       int hd);
    void (*attention_backward_prefixed)(float *dqkv, const float *dout, const float *out, const float *lse,
                                        const float *qkv, const int32_t *seq_start,
                                        const int32_t *seq_prefix, int n_seqs, int N, int Hq, int Hkv,
                                        int hd);

    /* Optional (NULL where a backend lacks them; model_create then refuses a
     * model with sliding-window layers): the attention ops above with a
     * sliding window, as Mistral's and Qwen2's: a query at position i sees
     * the keys at positions j with i - window < j <= i (window keys, itself
     * included; positions count from the start of the prefix, when there is
     * one). window 0 is plain causal attention. seq_prefix may be NULL. */
    void (*attention_forward_window)(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                                     const int32_t *seq_prefix, int n_seqs, int N, int Hq, int Hkv, int hd,
                                     int window);
    void (*attention_backward_window)(float *dqkv, const float *dout, const float *out, const float *lse,
                                      const float *qkv, const int32_t *seq_start, const int32_t *seq_prefix,
                                      int n_seqs, int N, int Hq, int Hkv, int hd, int window);
    void (*attention_forward_cached_window)(float *out, const float *qkv, float *kcache, float *vcache,
                                            const int32_t *slots, const int32_t *past, const int32_t *seq_start,
                                            int n_seqs, int N, int Hq, int Hkv, int hd, int max_len, int window);

    /* ---- Gemma 2 / 3 pieces ----
     * Optional (NULL where a backend lacks them; model_create then refuses a
     * model that needs them). The window ops above with the score scale
     * given (Gemma: query_pre_attn_scalar^-1/2 instead of hd^-1/2) and
     * Gemma 2's soft cap on the scores, s -> softcap * tanh(s / softcap)
     * before the softmax (softcap 0: none). */
    void (*attention_forward_ext)(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                                  const int32_t *seq_prefix, int n_seqs, int N, int Hq, int Hkv, int hd, int window,
                                  float scale, float softcap);
    void (*attention_backward_ext)(float *dqkv, const float *dout, const float *out, const float *lse,
                                   const float *qkv, const int32_t *seq_start, const int32_t *seq_prefix,
                                   int n_seqs, int N, int Hq, int Hkv, int hd, int window, float scale,
                                   float softcap);
    void (*attention_forward_cached_ext)(float *out, const float *qkv, float *kcache, float *vcache,
                                         const int32_t *slots, const int32_t *past, const int32_t *seq_start,
                                         int n_seqs, int N, int Hq, int Hkv, int hd, int max_len, int window,
                                         float scale, float softcap);
    /* GeGLU over gate_up[N, 2F] (gate | up): out[N,F] = gelu_tanh(gate) * up */
    void (*geglu_forward)(float *out, const float *gate_up, int N, int F);
    void (*geglu_backward)(float *dgate_up, const float *dout, const float *gate_up, int N, int F);
    /* In place x = cap * tanh(x / cap) (Gemma's final logit soft cap). */
    void (*softcap_forward)(float *x, size_t n, float cap);
    /* logprobs_backward on capped logits y = cap * tanh(x / cap): logits
     * (holding y) becomes the gradient wrt the uncapped x. */
    void (*logprobs_backward_softcap)(float *logits, const float *dlogp, const float *lse, const int32_t *tgt,
                                      int n, int V, float cap);
    /* Optional (NULL where a backend lacks them; model_create then refuses a
     * model with q/k norms): per-head RMSNorm of q and k (Qwen3's and
     * Gemma 3's q_norm / k_norm; Gemma's 1+w is the caller's to pass), in
     * place in qkv[N, (Hq + 2*Hkv) * hd] before RoPE: each of the Hq query
     * heads by wq[hd], each of the Hkv key heads by wk[hd], v untouched.
     * saved [N, (Hq+Hkv)*hd] receives the inputs and rstd [N*(Hq+Hkv)] their
     * 1/rms for backward; both may be NULL (inference). */
    void (*head_rmsnorm_forward)(float *qkv, float *saved, float *rstd, const float *wq, const float *wk, int N,
                                 int Hq, int Hkv, int hd, float eps);
    /* dqkv's q and k parts turn in place from d(normed) into d(input);
     * dwq, dwk += (either may be NULL when frozen). */
    void (*head_rmsnorm_backward)(float *dqkv, float *dwq, float *dwk, const float *saved, const float *rstd,
                                  const float *wq, const float *wk, int N, int Hq, int Hkv, int hd);
    /* Optional (NULL where a backend lacks them; model_create then refuses
     * Phi-3's longrope and partial rotary): rope_forward on the first rot
     * dims of each q and k head only (pairs (j, j + rot/2), inv_freq[rot/2]),
     * the other hd - rot passing through, with cos and sin multiplied by
     * scale; backward applies the transpose to dqkv. */
    void (*rope_ext_forward)(float *qkv, const int32_t *pos, const float *inv_freq, int N, int Hq, int Hkv,
                             int hd, int rot, float scale);
    void (*rope_ext_backward)(float *dqkv, const int32_t *pos, const float *inv_freq, int N, int Hq, int Hkv,
                              int hd, int rot, float scale);
} Backend;

/* The dropout keep-test every backend uses (see Backend.dropout). */
static inline int backend_dropout_keep(uint64_t seed, uint64_t i, float p) {
    uint64_t z = seed ^ (i * 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

extern const Backend backend_cpu;

/* For tests of the CPU backend: the most attention scratch one thread has
 * held so far, in bytes, and making the next n scratch requests fail as if
 * memory had run out (0 stops). */
size_t backend_cpu_attention_scratch_peak(void);
void backend_cpu_inject_alloc_failures(int n);

/* Batch-invariant mode of the CPU backend (process-wide, off by default):
 * every forward op computes a row with the same operations in the same
 * order whatever the number of rows in the call and the row's place among
 * them, so a token's log-prob is bit-identical whether it was decoded one
 * step at a time over the KV cache (generate.c) or recomputed in a packed
 * training forward. It covers matmul_forward (every row count runs
 * matmul_small's fixed-order tiles instead of sgemm), the attention
 * forwards (one fixed-order loop per query row, the same for the packed,
 * prefixed, windowed and cached variants) and logprobs_forward (a
 * fixed-lane log-sum-exp, also what backend_cpu_logprob gives the
 * sampler's token), and gemm's A B^T form (LoRA's adapter forward).
 * Backward ops and quantised matmuls are unchanged.
 * Costs time where sgemm beat the fixed-order kernels (long batches): see
 * docs/DECISIONS.md ("Batch-invariant log-probs"). */
void backend_cpu_set_batch_invariant(int on);
int backend_cpu_batch_invariant(void);
/* log softmax(logits[0..V))[token] exactly as logprobs_forward computes it
 * in batch-invariant mode (host memory). */
float backend_cpu_logprob(const float *logits, int V, int32_t token);

/* 0 when be->status() reports no failure, else -1 with align_error() as
 * "what: <the failure>". */
int backend_check(const Backend *be, const char *what);

/* "cpu" or "cuda"; NULL with an error when unknown or not available. */
const Backend *backend_get(const char *name);

#endif
