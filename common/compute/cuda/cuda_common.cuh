/* cuda_common: what the CUDA backend's files share (private to common/cuda).
 *
 * Error handling: every CUDA and cuBLAS call goes through CU_CHECK /
 * CUBLAS_CHECK, and every kernel launch is followed by LAUNCH_CHECK. A failure
 * records one sentence (call, file, line, CUDA's own words) with
 * align_errorf() and marks the backend failed; ops test cuda_ok() on entry
 * and do nothing once it is false (see backend_cuda.h).
 *
 * Scratch: a few grow-only device buffers, one per use (bf16 operand copies,
 * reduction partials, attention's per-row terms). Work is issued in one
 * stream, so a buffer can be reused by the next op without waiting; growing
 * one frees the old buffer, and cudaFree waits for the device first. */
#ifndef ALIGN_CUDA_COMMON_CUH
#define ALIGN_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "util.h"
}
#include "backend_cuda.h"

/* ---- error state (backend_cuda.cu) ---- */
int cuda_ok(void);  /* 1 while no error happened; initialises the device lazily */
int cuda_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cuda_check_call(cudaError_t e, const char *call, const char *file, int line);
int cublas_check_call(cublasStatus_t s, const char *call, const char *file, int line);

#define CU_CHECK(call) cuda_check_call((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check_call((call), #call, __FILE__, __LINE__)
#define LAUNCH_CHECK(what) cuda_check_call(cudaGetLastError(), what, __FILE__, __LINE__)

enum {
    SCRATCH_GEMM_A = 0, /* bf16 copy of a GEMM operand */
    SCRATCH_GEMM_B,
    SCRATCH_REDUCE,     /* column-reduction and sum-of-squares partials */
    SCRATCH_ATTN,       /* attention backward: rowsum(dO * O) */
    SCRATCH_INDEX,      /* embedding backward: bucketed row order */
    SCRATCH_DEQUANT,    /* one quantised weight matrix dequantised to fp32 */
    SCRATCH_COUNT
};
/* A device buffer of at least `bytes` for this use; NULL (and failed) on OOM. */
void *cuda_scratch(int slot, size_t bytes);

/* Blocks for an elementwise grid-stride kernel over n items. */
static inline unsigned cuda_grid_for(size_t n, int threads) {
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 16u) b = 65535u * 16u;
    return b ? (unsigned)b : 1u;
}

/* ---- deterministic reductions (fixed shuffle trees, no atomics) ---- */
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum over a block of blockDim.x threads (a multiple of 32, at most 1024);
 * every thread gets the result. `sh` holds 32 T. */
template <typename T>
__device__ __forceinline__ T block_sum(T v, T *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    T r = lane < nw ? sh[lane] : (T)0;
    return warp_sum(r);
}

/* ---- ops implemented in the other files, gathered into backend_cuda ---- */
/* cuda_kernels.cu */
void cuda_embedding_forward(float *out, const int32_t *tokens, const int32_t *pos, const float *wte,
                            const float *wpe, int N, int C);
void cuda_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                             const int32_t *pos, int N, int C);
void cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                            const float *b, int N, int C, float eps);
void cuda_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                             const float *w, const float *mean, const float *rstd, int N, int C);
void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                          float eps);
void cuda_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                           const float *w, const float *rstd, int N, int C);
void cuda_gelu_forward(float *out, const float *inp, size_t n);
void cuda_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void cuda_swiglu_forward(float *out, const float *gate_up, int N, int F);
void cuda_swiglu_backward(float *dgate_up, const float *dout, const float *gate_up, int N, int F);
void cuda_add(float *out, const float *a, const float *b, size_t n);
void cuda_add_inplace(float *acc, const float *x, size_t n);
void cuda_scale(float *x, float s, size_t n);
void cuda_gather_rows(float *out, const float *inp, const int32_t *rows, int n_rows, int C);
void cuda_scatter_add_rows(float *out, const float *inp, const int32_t *rows, int n_rows, int C);
void cuda_logprobs_forward(float *logp, float *lse, const float *logits, const int32_t *tgt, int n,
                           int V);
void cuda_logprobs_backward(float *logits, const float *dlogp, const float *lse, const int32_t *tgt,
                            int n, int V);
double cuda_sum_squares(const float *x, size_t n);
void cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                float beta2, float eps, float wd, float bc1, float bc2, float grad_scale);
/* dbias[OC] += column sums of dout[N, OC] (rows ld apart), in a fixed order */
void cuda_bias_backward(float *dbias, const float *dout, int ld, int N, int OC);
/* out[i, :] = bias for every row */
void cuda_bias_fill(float *out, const float *bias, int N, int OC);

/* cuda_attention.cu */
void cuda_rope_forward(float *qkv, const int32_t *pos, const float *inv_freq, int N, int Hq, int Hkv,
                       int hd);
void cuda_rope_backward(float *dqkv, const int32_t *pos, const float *inv_freq, int N, int Hq,
                        int Hkv, int hd);
void cuda_attention_forward(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                            int n_seqs, int N, int Hq, int Hkv, int hd);
void cuda_attention_backward(float *dqkv, const float *dout, const float *out, const float *lse,
                             const float *qkv, const int32_t *seq_start, int n_seqs, int N, int Hq,
                             int Hkv, int hd);
void cuda_attention_forward_cached(float *out, const float *qkv, float *kcache, float *vcache,
                                   const int32_t *slots, const int32_t *past, const int32_t *seq_start,
                                   int n_seqs, int N, int Hq, int Hkv, int hd, int max_len);

#endif
