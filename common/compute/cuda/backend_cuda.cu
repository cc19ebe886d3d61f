/* backend_cuda: device setup, error state, memory, and the matrix products;
 * the Backend table that gathers the ops of the other files.
 *
 * Matrix products. The interface keeps fp32 buffers everywhere (fp32 master
 * weights, gradients and moments, as docs/DESIGN.md asks), and the default mode
 * (CUDA_GEMM_BF16) rounds both operands to bf16 into scratch buffers with one
 * small kernel each, then runs cuBLAS's bf16 x bf16 -> fp32 GEMM with fp32
 * accumulation, writing (or accumulating into) the fp32 output. That costs
 * one extra read and half a write of each operand per product, a few percent
 * of a training step's GEMM time, and in exchange uses cuBLAS's best-tuned
 * kernels, the ones the benchmark's peak is measured with. The alternative,
 * CUBLAS_COMPUTE_32F_FAST_16BF on the fp32 buffers (cuBLAS rounds inside),
 * needs no scratch; tests/gpu/bench_gpu.c times every mode on one product so
 * the faster one can become the default. A later version keeps bf16 shadow
 * copies of the weights, written by the AdamW kernel, to drop the per-call
 * weight conversion.
 *
 * Row-major to cuBLAS (column-major): a row-major [R, C] matrix is a
 * column-major [C, R] one with the same leading dimension, so
 *   out[N,OC] = inp[N,C] w[OC,C]^T   is  out^T = w^T' inp^T  : (T, N, OC, N, C)
 *   dinp[N,C] = dout[N,OC] w[OC,C]   is  dinp^T = w^T dout^T : (N, N, C, N, OC)
 *   dw[OC,C] += dout^T inp           is  dw^T += inp^T dout  : (N, T, C, OC, N) */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_common.cuh"

/* ------------------------------------------------------------ error state */

static int g_inited, g_failed;
static char g_first_error[ALIGN_ERR_LEN];
static cublasHandle_t g_cublas;
static void *g_cublas_ws;
static CudaGemmMode g_gemm = CUDA_GEMM_BF16;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

int cuda_fail(const char *fmt, ...) {
    char msg[ALIGN_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!g_failed) {
        g_failed = 1;
        snprintf(g_first_error, sizeof g_first_error, "%s", msg);
    }
    return align_errorf("%s", msg);
}

int cuda_check_call(cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return 0;
    const char *base = strrchr(file, '/');
    return cuda_fail("CUDA error in %s (%s:%d): %s (%s)", call, base ? base + 1 : file, line,
                     cudaGetErrorString(e), cudaGetErrorName(e));
}

int cublas_check_call(cublasStatus_t s, const char *call, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    const char *base = strrchr(file, '/');
    return cuda_fail("cuBLAS error in %s (%s:%d): %s", call, base ? base + 1 : file, line,
                     cublasGetStatusString(s));
}

static void cuda_init_once(void) {
    int n = 0;
    if (CU_CHECK(cudaGetDeviceCount(&n))) return;
    if (n <= 0) {
        cuda_fail("no CUDA device is available");
        return;
    }
    int dev = 0;
    if (CU_CHECK(cudaGetDevice(&dev))) return;
    if (CU_CHECK(cudaFree(0))) return; /* create the context now, not inside the first op */
    if (CUBLAS_CHECK(cublasCreate(&g_cublas))) return;
    /* A workspace of our own keeps cuBLAS from allocating behind our back. */
    const size_t ws = (size_t)32 << 20;
    if (CU_CHECK(cudaMalloc(&g_cublas_ws, ws))) return;
    if (CUBLAS_CHECK(cublasSetWorkspace(g_cublas, g_cublas_ws, ws))) return;
    if (CUBLAS_CHECK(cublasSetStream(g_cublas, 0))) return;
    const char *env = getenv("ALIGN_CUDA_GEMM");
    if (env && *env) {
        if (!strcmp(env, "bf16")) g_gemm = CUDA_GEMM_BF16;
        else if (!strcmp(env, "fast-bf16")) g_gemm = CUDA_GEMM_FAST_BF16;
        else if (!strcmp(env, "tf32")) g_gemm = CUDA_GEMM_TF32;
        else if (!strcmp(env, "fp32")) g_gemm = CUDA_GEMM_FP32;
        else {
            cuda_fail("ALIGN_CUDA_GEMM=%s: unknown mode (expected bf16, fast-bf16, tf32 or fp32)", env);
            return;
        }
    }
    g_inited = 1;
}

int cuda_ok(void) {
    if (g_inited && !g_failed) return 1;
    pthread_once(&g_once, cuda_init_once);
    return g_inited && !g_failed;
}

extern "C" int cuda_backend_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: not an error of ours */
        return 0;
    }
    return n > 0;
}

extern "C" int cuda_backend_check(void) {
    if (!cuda_ok()) return align_errorf("%s", g_first_error[0] ? g_first_error : "CUDA backend failed");
    if (CU_CHECK(cudaDeviceSynchronize())) return -1;
    return 0;
}

extern "C" const char *cuda_backend_error(void) { return g_failed ? g_first_error : NULL; }

extern "C" void cuda_backend_set_gemm(CudaGemmMode mode) {
    cuda_ok(); /* initialise first, so the environment can't override this later */
    g_gemm = mode;
}
extern "C" CudaGemmMode cuda_backend_get_gemm(void) {
    cuda_ok(); /* the environment is read at initialisation */
    return g_gemm;
}
extern "C" const char *cuda_gemm_mode_name(CudaGemmMode mode) {
    switch (mode) {
    case CUDA_GEMM_BF16: return "bf16";
    case CUDA_GEMM_FAST_BF16: return "fast-bf16";
    case CUDA_GEMM_TF32: return "tf32";
    case CUDA_GEMM_FP32: return "fp32";
    }
    return "?";
}

/* ------------------------------------------------------------ scratch */

static void *g_scratch[SCRATCH_COUNT];
static size_t g_scratch_bytes[SCRATCH_COUNT];

void *cuda_scratch(int slot, size_t bytes) {
    if (bytes <= g_scratch_bytes[slot]) return g_scratch[slot];
    if (g_scratch[slot] && CU_CHECK(cudaFree(g_scratch[slot]))) return NULL;
    g_scratch[slot] = NULL;
    g_scratch_bytes[slot] = 0;
    size_t want = bytes + bytes / 8; /* some headroom: shapes grow by a little */
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, want);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        cuda_fail("CUDA out of memory: a %.2f GiB scratch buffer does not fit (%.2f GiB free of %.2f GiB)",
                  want / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0);
        return NULL;
    }
    g_scratch[slot] = p;
    g_scratch_bytes[slot] = want;
    return p;
}

/* ------------------------------------------------------------ memory */

static void *cu_alloc(size_t bytes) {
    if (!cuda_ok()) {
        align_errorf("CUDA backend unavailable: %s", g_first_error);
        return NULL;
    }
    size_t n = bytes < 256 ? 256 : bytes; /* never NULL for a zero-size request */
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* out of memory is not sticky: the caller may recover */
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        align_errorf("CUDA out of memory: cannot allocate %.2f GiB (%.2f GiB free of %.2f GiB on the device)",
                     bytes / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0);
        return NULL;
    }
    if (CU_CHECK(e)) return NULL;
    if (CU_CHECK(cudaMemsetAsync(p, 0, n, 0))) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_free(void *p) {
    if (p) CU_CHECK(cudaFree(p));
}

static void cu_to_device(void *dst, const void *host_src, size_t bytes) {
    if (!bytes || !cuda_ok()) return;
    CU_CHECK(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice));
}

static void cu_to_host(void *host_dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (!cuda_ok() || CU_CHECK(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost)))
        memset(host_dst, 0xFF, bytes); /* NaN floats, -1 ints: a failure can't pass for data */
}

static void cu_copy(void *dst, const void *src, size_t bytes) {
    if (!bytes || !cuda_ok()) return;
    CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
}

static void cu_zero(void *p, size_t bytes) {
    if (!bytes || !cuda_ok()) return;
    CU_CHECK(cudaMemsetAsync(p, 0, bytes, 0));
}

static void cu_sync(void) {
    if (!cuda_ok()) return;
    CU_CHECK(cudaDeviceSynchronize());
}

/* ------------------------------------------------------------ matmul */

/* dst[r, c] = bf16(src[r * ld + c]) for r < rows, c < cols (dense dst). */
__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, long rows, int cols, long ld) {
    long n = rows * cols;
    if ((cols & 3) == 0 && (ld & 3) == 0 && ((uintptr_t)src & 15) == 0) {
        long n4 = n >> 2;
        int cols4 = cols >> 2;
        for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n4; i += (long)gridDim.x * blockDim.x) {
            long r = i / cols4, c = (i - r * cols4) * 4;
            float4 v = *(const float4 *)(src + r * ld + c);
            __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
            __nv_bfloat162 *d = (__nv_bfloat162 *)(dst + r * cols + c);
            d[0] = lo;
            d[1] = hi;
        }
        return;
    }
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        long r = i / cols, c = i - r * cols;
        dst[i] = __float2bfloat16_rn(src[r * ld + c]);
    }
}

/* A bf16 copy of a column-major operand stored as `vecs` vectors of `len`
 * floats, `ld` apart; the copy is dense (leading dimension len). */
static const __nv_bfloat16 *bf16_copy(int slot, const float *src, long vecs, int len, long ld) {
    __nv_bfloat16 *dst = (__nv_bfloat16 *)cuda_scratch(slot, (size_t)vecs * len * sizeof(__nv_bfloat16));
    if (!dst) return NULL;
    size_t n = (size_t)vecs * len;
    to_bf16_kernel<<<cuda_grid_for((n + 3) / 4, 256), 256>>>(dst, src, vecs, len, ld);
    if (LAUNCH_CHECK("to_bf16_kernel")) return NULL;
    return dst;
}

/* C[m,n] (col-major, ldc) = op(A) op(B) + beta C, fp32 in and out, computed
 * as the current mode says. */
static void gemm_a(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc);
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    gemm_a(ta, tb, m, n, k, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* C = alpha op(A) op(B) + beta C (column-major), as gemm with a scale. */
static void gemm_a(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { /* an empty sum: C = beta C */
        if (beta == 0.0f) {
            for (int j = 0; j < n; j++) CU_CHECK(cudaMemsetAsync(C + (size_t)j * ldc, 0, m * sizeof(float), 0));
        }
        return;
    }
    const float one = alpha;
    cublasHandle_t h = g_cublas;
    if (g_gemm == CUDA_GEMM_BF16) {
        /* stored shapes: op N keeps [rows x cols] = [m x k] for A, [k x n] for B */
        long a_vecs = ta == CUBLAS_OP_N ? k : m, b_vecs = tb == CUBLAS_OP_N ? n : k;
        int a_len = ta == CUBLAS_OP_N ? m : k, b_len = tb == CUBLAS_OP_N ? k : n;
        const __nv_bfloat16 *a16 = bf16_copy(SCRATCH_GEMM_A, A, a_vecs, a_len, lda);
        const __nv_bfloat16 *b16 = a16 ? bf16_copy(SCRATCH_GEMM_B, B, b_vecs, b_len, ldb) : NULL;
        if (!b16) return;
        CUBLAS_CHECK(cublasGemmEx(h, ta, tb, m, n, k, &one, a16, CUDA_R_16BF, a_len, b16, CUDA_R_16BF,
                                  b_len, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
        return;
    }
    cublasComputeType_t ct = g_gemm == CUDA_GEMM_FAST_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                             : g_gemm == CUDA_GEMM_TF32    ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                           : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasGemmEx(h, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta,
                              C, CUDA_R_32F, ldc, ct, CUBLAS_GEMM_DEFAULT));
}

/* out[N,OC] = inp[N,C] @ w[OC,C]^T (+ bias) */
static void cu_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N,
                              int C, int OC) {
    if (!cuda_ok() || N <= 0 || OC <= 0) return;
    float beta = 0.0f;
    if (bias) { /* as the CPU backend: rows start as the bias, the GEMM adds */
        cuda_bias_fill(out, bias, N, OC);
        beta = 1.0f;
    }
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, w, C, inp, C, beta, out, OC);
}

/* dinp[N,C] (+)= dout[N,OC] @ w[OC,C] */
static void cu_matmul_backward_input(float *dinp, const float *dout, const float *w, int N, int C,
                                     int OC, int accumulate) {
    if (!cuda_ok() || N <= 0 || C <= 0) return;
    gemm(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, w, C, dout, OC, accumulate ? 1.0f : 0.0f, dinp, C);
}

/* dw[OC,C] += dout[N,OC]^T @ inp[N,C]; dbias[OC] += column sums of dout */
static void cu_matmul_backward_weight(float *dw, float *dbias, const float *dout, int ld_dout,
                                      const float *inp, int N, int C, int OC) {
    if (!cuda_ok() || N <= 0 || OC <= 0) return;
    if (dw) gemm(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp, C, dout, ld_dout, 1.0f, dw, C);
    if (dbias) cuda_bias_backward(dbias, dout, ld_dout, N, OC);
}

/* ------------------------------------------------------------ LoRA and quantised weights */

/* Row-major C[M,N] = alpha op(A) op(B) + beta C is column-major
 * C^T = alpha op(B)^T op(A)^T. */
static void cu_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                    int ldb, float beta, float *C, int ldc) {
    if (!cuda_ok() || M <= 0 || N <= 0) return;
    gemm_a(tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
}

/* The same keep-test as backend_dropout_keep in backend.h. */
__device__ __forceinline__ bool dropout_keep(uint64_t seed, uint64_t i, float p) {
    uint64_t z = seed ^ (i * 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

__global__ void dropout_kernel(float *out, const float *inp, size_t n, float p, float s, uint64_t seed, int acc) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = dropout_keep(seed, i, p) ? inp[i] * s : 0.0f;
        out[i] = acc ? out[i] + v : v;
    }
}

static void cu_dropout(float *out, const float *inp, size_t n, float p, uint64_t seed, int accumulate) {
    if (!cuda_ok() || !n) return;
    dropout_kernel<<<cuda_grid_for(n, 256), 256>>>(out, inp, n, p, 1.0f / (1.0f - p), seed, accumulate);
    LAUNCH_CHECK("dropout_kernel");
}

/* One thread per 32-element block: ggml Q4_0 / Q4_1 / Q8_0 (common/compute/quant.h). */
__global__ void dequant_kernel(float *out, const uint8_t *q, int qtype, size_t n_blocks) {
    for (size_t b = blockIdx.x * (size_t)blockDim.x + threadIdx.x; b < n_blocks; b += (size_t)gridDim.x * blockDim.x) {
        float *o = out + b * 32;
        if (qtype == 2) {
            const uint8_t *s = q + b * 18;
            float d = __half2float(__ushort_as_half((unsigned short)(s[0] | (s[1] << 8))));
            for (int j = 0; j < 16; j++) {
                o[j] = ((s[2 + j] & 0xF) - 8) * d;
                o[j + 16] = ((s[2 + j] >> 4) - 8) * d;
            }
        } else if (qtype == 3) {
            const uint8_t *s = q + b * 20;
            float d = __half2float(__ushort_as_half((unsigned short)(s[0] | (s[1] << 8))));
            float m = __half2float(__ushort_as_half((unsigned short)(s[2] | (s[3] << 8))));
            for (int j = 0; j < 16; j++) {
                o[j] = (s[4 + j] & 0xF) * d + m;
                o[j + 16] = (s[4 + j] >> 4) * d + m;
            }
        } else {
            const uint8_t *s = q + b * 34;
            float d = __half2float(__ushort_as_half((unsigned short)(s[0] | (s[1] << 8))));
            for (int j = 0; j < 32; j++) o[j] = (int8_t)s[2 + j] * d;
        }
    }
}

/* The whole matrix of one linear layer dequantised into scratch (a layer's
 * weight, not the model's), then the fp32 path. */
static const float *dequant(const void *wq, int qtype, int C, int OC) {
    /* the kernel knows Q4_0 (2), Q4_1 (3) and Q8_0 (8); a GGUF's Q5_0/Q5_1
     * and K-quant blocks run on the CPU backend only */
    if (qtype != 2 && qtype != 3 && qtype != 8) {
        static const char *const names[15] = {0, 0, 0, 0, 0, 0, "Q5_0", "Q5_1", 0, 0, "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
        cuda_fail("the CUDA backend does not support %s weights (ggml type %d) kept from a GGUF; use --device cpu",
                  qtype >= 0 && qtype < 15 && names[qtype] ? names[qtype] : "these", qtype);
        return NULL;
    }
    size_t blocks = (size_t)OC * (C / 32);
    float *w = (float *)cuda_scratch(SCRATCH_DEQUANT, blocks * 32 * sizeof(float));
    if (!w) return NULL;
    dequant_kernel<<<cuda_grid_for(blocks, 128), 128>>>(w, (const uint8_t *)wq, qtype, blocks);
    if (LAUNCH_CHECK("dequant_kernel")) return NULL;
    return w;
}

static void cu_matmul_forward_q(float *out, const float *inp, const void *wq, int qtype, const float *bias, int N,
                                int C, int OC) {
    if (!cuda_ok() || N <= 0 || OC <= 0) return;
    const float *w = dequant(wq, qtype, C, OC);
    if (w) cu_matmul_forward(out, inp, w, bias, N, C, OC);
}

static void cu_matmul_backward_input_q(float *dinp, const float *dout, const void *wq, int qtype, int N, int C,
                                       int OC, int accumulate) {
    if (!cuda_ok() || N <= 0 || C <= 0) return;
    const float *w = dequant(wq, qtype, C, OC);
    if (w) cu_matmul_backward_input(dinp, dout, w, N, C, OC, accumulate);
}

/* ------------------------------------------------------------ the table */

/* Backend.status: the sticky failure, else a launch or call error that no
 * check has picked up yet. It does not synchronise (see backend.h). */
static int cu_status(void) {
    if (!cuda_ok()) return align_errorf("%s", g_first_error[0] ? g_first_error : "CUDA backend failed");
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_check_call(e, "an earlier CUDA call", __FILE__, __LINE__);
    return 0;
}

/* Filled by name: an op that backend.h gains and this table lacks stays
 * NULL instead of shifting every op after it onto the wrong slot. */
extern "C" const Backend backend_cuda = {
    .name = "cuda",
    .alloc = cu_alloc,
    .free = cu_free,
    .to_device = cu_to_device,
    .to_host = cu_to_host,
    .copy = cu_copy,
    .zero = cu_zero,
    .sync = cu_sync,
    .status = cu_status,
    .matmul_forward = cu_matmul_forward,
    .matmul_backward_input = cu_matmul_backward_input,
    .matmul_backward_weight = cu_matmul_backward_weight,
    .embedding_forward = cuda_embedding_forward,
    .embedding_backward = cuda_embedding_backward,
    .layernorm_forward = cuda_layernorm_forward,
    .layernorm_backward = cuda_layernorm_backward,
    .rmsnorm_forward = cuda_rmsnorm_forward,
    .rmsnorm_backward = cuda_rmsnorm_backward,
    .rope_forward = cuda_rope_forward,
    .rope_backward = cuda_rope_backward,
    .attention_forward = cuda_attention_forward,
    .attention_backward = cuda_attention_backward,
    .attention_forward_cached = cuda_attention_forward_cached,
    .gelu_forward = cuda_gelu_forward,
    .gelu_backward = cuda_gelu_backward,
    .swiglu_forward = cuda_swiglu_forward,
    .swiglu_backward = cuda_swiglu_backward,
    .add = cuda_add,
    .add_inplace = cuda_add_inplace,
    .scale = cuda_scale,
    .gather_rows = cuda_gather_rows,
    .scatter_add_rows = cuda_scatter_add_rows,
    .logprobs_forward = cuda_logprobs_forward,
    .logprobs_backward = cuda_logprobs_backward,
    .sum_squares = cuda_sum_squares,
    .adamw = cuda_adamw,
    .gemm = cu_gemm,
    .dropout = cu_dropout,
    .matmul_forward_q = cu_matmul_forward_q,
    .matmul_backward_input_q = cu_matmul_backward_input_q,
    .attention_forward_prefixed = NULL, /* not yet: DPO packs pairs plainly on CUDA */
    .attention_backward_prefixed = NULL,
    /* not yet: model_create refuses a model with sliding-window layers here */
    .attention_forward_window = NULL,
    .attention_backward_window = NULL,
    .attention_forward_cached_window = NULL,
    /* not yet: model_create refuses a Qwen3 (q/k norms) here */
    .head_rmsnorm_forward = NULL,
    .head_rmsnorm_backward = NULL,
};
