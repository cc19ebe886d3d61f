/* bench_gpu: speed of the CUDA backend on one GPU (not a test: it asserts
 * nothing). Run by tests/gpu/check.sh; prints a short table last.
 *
 *   1. the bf16 peak: a cuBLAS bf16 GEMM (8192^3, fp32 accumulation, random
 *      data), the denominator of every MFU below;
 *   2. one training-shaped product (8192 x 768 -> 3072, fp32 buffers) in each
 *      CUDA_GEMM mode, to pick the default (see backend_cuda.cu);
 *   3. attention forward + backward alone at GPT-2 shape (12 heads of 64,
 *      8 sequences of 1024);
 *   4. a whole training step (forward, LM-head log-probs, backward, AdamW)
 *      for the GPT-2 124M, SmolLM2-135M and a Llama-3.2-1B-like shape:
 *      tokens/s and MFU = model_flops_per_token * tokens/s / peak.
 * Decode (KV-cache generation) benchmarks are left out until generation
 * exists. Weights are filled by copying one random block around on the
 * device (norm weights 1, biases 0): host-side model_init_random would take
 * half a minute for the 1B model and timing does not need it. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda/backend_cuda.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "util.h"

static const Backend *be = &backend_cuda;

#define CK(x)                                                                          \
    do {                                                                               \
        cudaError_t e_ = (x);                                                          \
        if (e_ != cudaSuccess) {                                                       \
            fprintf(stderr, "bench_gpu: %s: %s\n", #x, cudaGetErrorString(e_));        \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static void die_if_failed(const char *what) {
    if (cuda_backend_check()) {
        fprintf(stderr, "bench_gpu: %s: %s\n", what, align_error());
        exit(1);
    }
}

/* random floats (normal * std) on the host, copied to the device */
static float *dev_random(size_t n, float std, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = (float)(rng_normal(&r) * std);
    float *d = be->alloc(n * sizeof(float));
    if (!d) {
        fprintf(stderr, "bench_gpu: %s\n", align_error());
        exit(1);
    }
    be->to_device(d, h, n * sizeof(float));
    free(h);
    return d;
}

/* ------------------------------------------------------------ 1. peak */

static double bf16_peak_tflops(void) {
    const int M = 8192;
    size_t n = (size_t)M * M;
    uint16_t *h = malloc(n * sizeof(uint16_t));
    Rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < n; i++) {
        float f = (float)(rng_uniform(&r) * 2 - 1);
        uint32_t u;
        memcpy(&u, &f, 4);
        h[i] = (uint16_t)(u >> 16);
    }
    void *A, *B, *C;
    CK(cudaMalloc(&A, n * 2));
    CK(cudaMalloc(&B, n * 2));
    CK(cudaMalloc(&C, n * 2));
    CK(cudaMemcpy(A, h, n * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(B, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
    cublasHandle_t hd;
    if (cublasCreate(&hd) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "bench_gpu: cublasCreate failed\n");
        exit(1);
    }
    float one = 1, zero = 0;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    double best = 0;
    for (int it = 0; it < 13; it++) {
        CK(cudaEventRecord(e0, 0));
        cublasStatus_t s = cublasGemmEx(hd, CUBLAS_OP_T, CUBLAS_OP_N, M, M, M, &one, A, CUDA_R_16BF, M, B,
                                        CUDA_R_16BF, M, &zero, C, CUDA_R_16BF, M, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT);
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        if (s != CUBLAS_STATUS_SUCCESS) {
            fprintf(stderr, "bench_gpu: bf16 GEMM failed: %s\n", cublasGetStatusString(s));
            exit(1);
        }
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        double tf = 2.0 * M * M * (double)M / (ms * 1e-3) / 1e12;
        if (it >= 3 && tf > best) best = tf; /* best of 10 after 3 warm-ups */
    }
    cublasDestroy(hd);
    cudaFree(A), cudaFree(B), cudaFree(C);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return best;
}

/* ------------------------------------------------------------ 2. GEMM modes */

static double time_matmul(CudaGemmMode mode, int N, int C, int OC, float *inp, float *w, float *out) {
    cuda_backend_set_gemm(mode);
    for (int i = 0; i < 3; i++) be->matmul_forward(out, inp, w, NULL, N, C, OC);
    be->sync();
    int reps = mode == CUDA_GEMM_FP32 ? 5 : 20;
    double t0 = align_now();
    for (int i = 0; i < reps; i++) be->matmul_forward(out, inp, w, NULL, N, C, OC);
    be->sync();
    die_if_failed("matmul");
    double s = (align_now() - t0) / reps;
    return 2.0 * N * C * (double)OC / s / 1e12;
}

/* ------------------------------------------------------------ 3. attention */

static void time_attention(double *fwd_ms, double *bwd_ms) {
    int B = 8, T = 1024, H = 12, hd = 64, N = B * T, ld = 3 * H * hd;
    int32_t ss[9];
    for (int s = 0; s <= B; s++) ss[s] = s * T;
    float *qkv = dev_random((size_t)N * ld, 1, 3), *out = be->alloc((size_t)N * H * hd * 4);
    float *lse = be->alloc((size_t)N * H * 4), *dout = dev_random((size_t)N * H * hd, 1, 4);
    float *dqkv = be->alloc((size_t)N * ld * 4);
    be->attention_forward(out, lse, qkv, ss, B, N, H, H, hd);
    be->attention_backward(dqkv, dout, out, lse, qkv, ss, B, N, H, H, hd);
    be->sync();
    int reps = 5;
    double t0 = align_now();
    for (int i = 0; i < reps; i++) be->attention_forward(out, lse, qkv, ss, B, N, H, H, hd);
    be->sync();
    double t1 = align_now();
    for (int i = 0; i < reps; i++) be->attention_backward(dqkv, dout, out, lse, qkv, ss, B, N, H, H, hd);
    be->sync();
    double t2 = align_now();
    die_if_failed("attention");
    *fwd_ms = (t1 - t0) / reps * 1e3;
    *bwd_ms = (t2 - t1) / reps * 1e3;
    be->free(qkv), be->free(out), be->free(lse), be->free(dout), be->free(dqkv);
}

/* ------------------------------------------------------------ 4. training step */

typedef struct {
    const char *name;
    ModelConfig cfg;
    int B, T;
    double ms, tok_s, mfu, mem_gib, loss;
    int ok;
} Row;

static void fill_params(Model *m) {
    const size_t blk = (size_t)1 << 24;
    float *rnd = dev_random(blk, 0.02f, 5);
    float *ones = be->alloc(blk * sizeof(float));
    float *h = malloc(blk * sizeof(float));
    for (size_t i = 0; i < blk; i++) h[i] = 1.0f;
    be->to_device(ones, h, blk * sizeof(float));
    free(h);
    size_t salt = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        float *dst = m->params + p->offset;
        int is_norm = strstr(p->name, "norm") || strstr(p->name, "ln_");
        for (size_t off = 0; off < p->numel; off += blk) {
            size_t k = p->numel - off < blk ? p->numel - off : blk;
            if (p->ndim == 1) {
                if (is_norm) be->copy(dst + off, ones, k * sizeof(float));
                else be->zero(dst + off, k * sizeof(float));
            } else {
                /* start at a varying offset so tensors don't repeat exactly */
                size_t s = (salt += 7919) % (blk - k + 1);
                be->copy(dst + off, rnd + s, k * sizeof(float));
            }
        }
    }
    be->sync();
    be->free(rnd), be->free(ones);
}

static void bench_model(Row *row, double peak) {
    const ModelConfig *c = &row->cfg;
    int B = row->B, T = row->T, N = B * T;
    size_t fr0, tot;
    CK(cudaMemGetInfo(&fr0, &tot));
    Model *m = model_create(c, be);
    if (!m) {
        fprintf(stderr, "bench_gpu: %s: %s\n", row->name, align_error());
        return;
    }
    fill_params(m);
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 1e-4f;
    oc.schedule = LR_CONSTANT;
    Optimizer *o = optim_create(m, &oc);
    if (!o) {
        fprintf(stderr, "bench_gpu: %s: %s\n", row->name, align_error());
        model_free(m);
        return;
    }
    int32_t *tokens = malloc(N * sizeof(int32_t)), *targets = malloc(N * sizeof(int32_t));
    int32_t *ss = malloc((B + 1) * sizeof(int32_t));
    float *dlogp = malloc(N * sizeof(float)), *logp = malloc(N * sizeof(float));
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < N; i++) tokens[i] = (int32_t)rng_below(&r, c->vocab_size);
    for (int s = 0; s <= B; s++) ss[s] = s * T;
    Batch b = {N, B, tokens, ss};
    batch_next_token_targets(&b, targets);
    int count = 0;
    for (int i = 0; i < N; i++) count += targets[i] >= 0;
    for (int i = 0; i < N; i++) dlogp[i] = targets[i] >= 0 ? -1.0f / count : 0.0f;
    int warm = 1, reps = 3;
    double t0 = 0;
    for (int it = 0; it < warm + reps; it++) {
        if (it == warm) {
            be->sync();
            t0 = align_now();
        }
        if (model_forward(m, &b) || model_token_logprobs(m, targets, it == warm + reps - 1 ? logp : NULL) ||
            model_backward(m, dlogp, NULL)) {
            fprintf(stderr, "bench_gpu: %s: %s\n", row->name, align_error());
            goto done;
        }
        optim_step(o, NULL);
    }
    be->sync();
    double dt = (align_now() - t0) / reps;
    if (cuda_backend_check()) {
        fprintf(stderr, "bench_gpu: %s: %s\n", row->name, align_error());
        goto done;
    }
    size_t fr1;
    CK(cudaMemGetInfo(&fr1, &tot));
    double loss = 0;
    for (int i = 0; i < N; i++) loss -= logp[i];
    row->loss = loss / count;
    row->ms = dt * 1e3;
    row->tok_s = N / dt;
    row->mfu = model_flops_per_token(c, T, 1) * row->tok_s / (peak * 1e12);
    row->mem_gib = (double)(fr0 - fr1) / 1073741824.0;
    row->ok = 1;
    printf("%-14s B=%d T=%d: %.1f ms/step, %.0f tokens/s, MFU %.1f%%, %.1f GiB, loss %.3f\n", row->name,
           B, T, row->ms, row->tok_s, 100 * row->mfu, row->mem_gib, row->loss);
    fflush(stdout);
done:
    free(tokens), free(targets), free(ss), free(dlogp), free(logp);
    optim_free(o);
    model_free(m);
}

int main(int argc, char **argv) {
    if (!cuda_backend_available()) {
        printf("bench_gpu: no CUDA device\n");
        return 0;
    }
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, %.1f GiB, compute %d.%d\n", prop.name, prop.multiProcessorCount,
           prop.totalGlobalMem / 1073741824.0, prop.major, prop.minor);
    double peak = bf16_peak_tflops();
    printf("bf16 GEMM peak (8192^3, cuBLAS, random data): %.0f TFLOP/s\n", peak);
    fflush(stdout);

    int gN = 8192, gC = 768, gOC = 3072;
    float *inp = dev_random((size_t)gN * gC, 1, 6), *w = dev_random((size_t)gOC * gC, 0.02f, 7);
    float *out = be->alloc((size_t)gN * gOC * 4);
    double gemm_tf[4];
    for (int k = 0; k < 4; k++) {
        gemm_tf[k] = time_matmul((CudaGemmMode)k, gN, gC, gOC, inp, w, out);
        printf("matmul_forward %dx%d->%d, %s: %.0f TFLOP/s\n", gN, gC, gOC, cuda_gemm_mode_name((CudaGemmMode)k), gemm_tf[k]);
        fflush(stdout);
    }
    be->free(inp), be->free(w), be->free(out);
    cuda_backend_set_gemm(CUDA_GEMM_BF16);
    const char *env = getenv("ALIGN_CUDA_GEMM");
    if (env && !strcmp(env, "fast-bf16")) cuda_backend_set_gemm(CUDA_GEMM_FAST_BF16);

    double afwd, abwd;
    time_attention(&afwd, &abwd);
    /* causal: T/2 keys per query on average; fwd 2 products, bwd 5 (as FA2 counts) */
    double attn_flops = 8.0 * 1024 * 12 * (1024 / 2.0) * 64 * 2;
    printf("attention fwd %.2f ms (%.1f TFLOP/s), bwd %.2f ms (%.1f TFLOP/s) [B=8 T=1024 H=12 hd=64]\n",
           afwd, attn_flops / (afwd * 1e-3) / 1e12, abwd, 2.5 * attn_flops / (abwd * 1e-3) / 1e12);
    fflush(stdout);

    Row rows[3];
    memset(rows, 0, sizeof rows);
    ModelConfig *c;
    rows[0].name = "gpt2-124M";
    c = &rows[0].cfg;
    model_config_defaults(c, ARCH_GPT2);
    c->vocab_size = 50257, c->dim = 768, c->n_layers = 12, c->n_heads = c->n_kv_heads = 12;
    c->head_dim = 64, c->ffn_dim = 3072, c->max_seq_len = 1024;
    rows[0].B = 8, rows[0].T = 1024;
    rows[1].name = "smollm2-135M";
    c = &rows[1].cfg;
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 49152, c->dim = 576, c->n_layers = 30, c->n_heads = 9, c->n_kv_heads = 3;
    c->head_dim = 64, c->ffn_dim = 1536, c->max_seq_len = 8192, c->rope_theta = 100000.0f;
    c->tied_embeddings = 1, c->norm_eps = 1e-5f;
    rows[1].B = 4, rows[1].T = 2048;
    rows[2].name = "llama-1B";
    c = &rows[2].cfg;
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 128256, c->dim = 2048, c->n_layers = 16, c->n_heads = 32, c->n_kv_heads = 8;
    c->head_dim = 64, c->ffn_dim = 8192, c->max_seq_len = 8192, c->rope_theta = 500000.0f;
    c->tied_embeddings = 1, c->norm_eps = 1e-5f;
    rows[2].B = 4, rows[2].T = 2048;
    int n_rows = quick ? 1 : 3;
    for (int i = 0; i < n_rows; i++) bench_model(&rows[i], peak);

    printf("\n== CUDA backend, %s, gemm %s ==\n", prop.name, cuda_gemm_mode_name(cuda_backend_get_gemm()));
    printf("bf16 peak %.0f TFLOP/s | matmul bf16 %.0f, fast-bf16 %.0f, tf32 %.0f, fp32 %.0f TFLOP/s\n", peak,
           gemm_tf[0], gemm_tf[1], gemm_tf[2], gemm_tf[3]);
    printf("attention (GPT-2 shape, 8k tokens): fwd %.2f ms, bwd %.2f ms\n", afwd, abwd);
    printf("%-14s %9s %10s %12s %7s %8s\n", "model", "tokens", "ms/step", "tokens/s", "MFU", "mem GiB");
    for (int i = 0; i < n_rows; i++) {
        if (!rows[i].ok) {
            printf("%-14s %9d %10s\n", rows[i].name, rows[i].B * rows[i].T, "failed");
            continue;
        }
        printf("%-14s %9d %10.1f %12.0f %6.1f%% %8.1f\n", rows[i].name, rows[i].B * rows[i].T, rows[i].ms,
               rows[i].tok_s, 100 * rows[i].mfu, rows[i].mem_gib);
    }
    printf("(decode benchmarks: not yet, generation does not exist)\n");
    return 0;
}
