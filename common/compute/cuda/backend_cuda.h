/* backend_cuda: the CUDA implementation of the Backend interface.
 *
 * Every op keeps the CPU backend's semantics (common/compute/cpu/ops_cpu.c is the
 * oracle) with fp32 buffers at the interface: parameters, gradients, AdamW
 * moments and activations are fp32 in device memory. Matrix products run on
 * the tensor cores with bf16 operands and fp32 accumulation by default (see
 * cuda_backend_set_gemm); everything else computes in fp32.
 *
 * Errors: an op that fails (a CUDA or cuBLAS call, a kernel launch, an
 * unsupported shape) records one sentence with align_errorf() and leaves the
 * backend in a failed state; later ops do nothing, to_host fills its
 * destination with 0xFF bytes (NaN as floats, -1 as int32) and sum_squares
 * returns NaN. Backend.status reports that state without waiting for the
 * device (model_forward, model_backward and model_forward_cached return it
 * as their error); cuda_backend_check() synchronises first, so it also
 * catches a fault inside a kernel still running.
 * alloc() failing (out of memory) is not sticky: it returns NULL with a
 * message giving the size asked for and the memory free.
 *
 * The backend drives one device (the current one when it first runs) from
 * one host thread at a time, in the legacy default stream. Host syncs per
 * training step: the loss and norm read-backs the model asks for, and one
 * in embedding_backward (its deterministic scatter-add sorts token ids on
 * the host). attention_forward_cached is a simple first version (one warp
 * per new token and head), correct but not tuned. */
#ifndef ALIGN_BACKEND_CUDA_H
#define ALIGN_BACKEND_CUDA_H

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const Backend backend_cuda;

/* 1 when a CUDA device can be used; 0 with no driver, no device or a broken
 * install (never crashes, never prints). */
int cuda_backend_available(void);

/* Synchronise the device; 0 when every op so far succeeded, else -1 with
 * the first error's message in align_error(). */
int cuda_backend_check(void);
/* The first error's message, or NULL while none happened. */
const char *cuda_backend_error(void);

/* How matrix products compute (fp32 in, fp32 out in every mode):
 *   CUDA_GEMM_BF16       operands rounded to bf16 into scratch buffers, then
 *                        a bf16 x bf16 -> fp32 cuBLAS GEMM (the default)
 *   CUDA_GEMM_FAST_BF16  cuBLAS on the fp32 buffers, CUBLAS_COMPUTE_32F_FAST_16BF
 *                        (cuBLAS rounds to bf16 itself; no scratch)
 *   CUDA_GEMM_TF32       cuBLAS on the fp32 buffers, CUBLAS_COMPUTE_32F_FAST_TF32
 *   CUDA_GEMM_FP32       plain fp32 (slow; for testing against the CPU)
 * The environment variable ALIGN_CUDA_GEMM = bf16 | fast-bf16 | tf32 | fp32
 * sets the initial mode. */
typedef enum {
    CUDA_GEMM_BF16 = 0,
    CUDA_GEMM_FAST_BF16 = 1,
    CUDA_GEMM_TF32 = 2,
    CUDA_GEMM_FP32 = 3
} CudaGemmMode;
void cuda_backend_set_gemm(CudaGemmMode mode);
CudaGemmMode cuda_backend_get_gemm(void);
const char *cuda_gemm_mode_name(CudaGemmMode mode);

#ifdef __cplusplus
}
#endif

#endif
