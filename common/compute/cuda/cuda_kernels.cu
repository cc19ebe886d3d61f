/* cuda_kernels: the CUDA backend's ops other than matmul and attention:
 * embeddings, norms, activations, elementwise, LM-head log-probs, and the
 * optimizer's sum of squares and fused AdamW.
 *
 * Each op computes the same fp32 formula, in the same order where it
 * matters, as its twin in ops_cpu.c. Reductions across rows (bias, norm
 * weight and embedding gradients) never use atomics: partial sums over fixed
 * row groups are added in a fixed order, and the embedding scatter-add sums
 * each row's contributions in token order, which is exactly the CPU's order,
 * so the same inputs give bit-identical results run after run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

/* ------------------------------------------------------------ elementwise */

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}
__global__ void add_inplace_kernel(float *acc, const float *x, size_t n) {
    GRID_STRIDE(i, n) acc[i] += x[i];
}
__global__ void scale_kernel(float *x, float s, size_t n) {
    GRID_STRIDE(i, n) x[i] *= s;
}
__global__ void bias_fill_kernel(float *out, const float *bias, size_t N, int OC) {
    GRID_STRIDE(i, N * OC) out[i] = bias[i % OC];
}

void cuda_add(float *out, const float *a, const float *b, size_t n) {
    if (!n || !cuda_ok()) return;
    add_kernel<<<cuda_grid_for(n, 256), 256>>>(out, a, b, n);
    LAUNCH_CHECK("add_kernel");
}
void cuda_add_inplace(float *acc, const float *x, size_t n) {
    if (!n || !cuda_ok()) return;
    add_inplace_kernel<<<cuda_grid_for(n, 256), 256>>>(acc, x, n);
    LAUNCH_CHECK("add_inplace_kernel");
}
void cuda_scale(float *x, float s, size_t n) {
    if (!n || !cuda_ok()) return;
    scale_kernel<<<cuda_grid_for(n, 256), 256>>>(x, s, n);
    LAUNCH_CHECK("scale_kernel");
}
void cuda_bias_fill(float *out, const float *bias, int N, int OC) {
    size_t n = (size_t)N * OC;
    if (!n || !cuda_ok()) return;
    bias_fill_kernel<<<cuda_grid_for(n, 256), 256>>>(out, bias, N, OC);
    LAUNCH_CHECK("bias_fill_kernel");
}

/* ------------------------------------------------------------ activations */

__global__ void gelu_forward_kernel(float *out, const float *inp, size_t n) {
    GRID_STRIDE(i, n) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}
__global__ void gelu_backward_kernel(float *dinp, const float *dout, const float *inp, size_t n) {
    GRID_STRIDE(i, n) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        float t = tanhf(u);
        float sech2 = 1.0f - t * t;
        float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * x * sech2 * du);
    }
}
/* gate_up[N, 2F] = gate | up; out[N, F] = silu(gate) * up */
__global__ void swiglu_forward_kernel(float *out, const float *gate_up, size_t N, int F) {
    GRID_STRIDE(k, N * F) {
        size_t i = k / F, j = k - i * F;
        float g = gate_up[i * 2 * F + j], u = gate_up[i * 2 * F + F + j];
        out[k] = g / (1.0f + expf(-g)) * u;
    }
}
/* silu'(g) = s * (1 + g * (1 - s)), s = sigmoid(g) */
__global__ void swiglu_backward_kernel(float *dgate_up, const float *dout, const float *gate_up,
                                       size_t N, int F) {
    GRID_STRIDE(k, N * F) {
        size_t i = k / F, j = k - i * F;
        float g = gate_up[i * 2 * F + j], u = gate_up[i * 2 * F + F + j], d = dout[k];
        float s = 1.0f / (1.0f + expf(-g));
        dgate_up[i * 2 * F + F + j] = d * g * s;
        dgate_up[i * 2 * F + j] = d * u * s * (1.0f + g * (1.0f - s));
    }
}

void cuda_gelu_forward(float *out, const float *inp, size_t n) {
    if (!n || !cuda_ok()) return;
    gelu_forward_kernel<<<cuda_grid_for(n, 256), 256>>>(out, inp, n);
    LAUNCH_CHECK("gelu_forward_kernel");
}
void cuda_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    if (!n || !cuda_ok()) return;
    gelu_backward_kernel<<<cuda_grid_for(n, 256), 256>>>(dinp, dout, inp, n);
    LAUNCH_CHECK("gelu_backward_kernel");
}
void cuda_swiglu_forward(float *out, const float *gate_up, int N, int F) {
    size_t n = (size_t)N * F;
    if (!n || !cuda_ok()) return;
    swiglu_forward_kernel<<<cuda_grid_for(n, 256), 256>>>(out, gate_up, N, F);
    LAUNCH_CHECK("swiglu_forward_kernel");
}
void cuda_swiglu_backward(float *dgate_up, const float *dout, const float *gate_up, int N, int F) {
    size_t n = (size_t)N * F;
    if (!n || !cuda_ok()) return;
    swiglu_backward_kernel<<<cuda_grid_for(n, 256), 256>>>(dgate_up, dout, gate_up, N, F);
    LAUNCH_CHECK("swiglu_backward_kernel");
}

/* ------------------------------------------------------------ rows */

/* out[i] = inp[rows[i]], rows of C floats: one block per row */
__global__ void gather_rows_kernel(float *out, const float *inp, const int32_t *rows, int C) {
    const float *src = inp + (size_t)rows[blockIdx.x] * C;
    float *dst = out + (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}
/* out[rows[i]] += inp[i]; rows are distinct in every caller (as on the CPU) */
__global__ void scatter_add_rows_kernel(float *out, const float *inp, const int32_t *rows, int C) {
    float *dst = out + (size_t)rows[blockIdx.x] * C;
    const float *src = inp + (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] += src[c];
}

void cuda_gather_rows(float *out, const float *inp, const int32_t *rows, int n_rows, int C) {
    if (n_rows <= 0 || C <= 0 || !cuda_ok()) return;
    gather_rows_kernel<<<n_rows, 256>>>(out, inp, rows, C);
    LAUNCH_CHECK("gather_rows_kernel");
}
void cuda_scatter_add_rows(float *out, const float *inp, const int32_t *rows, int n_rows, int C) {
    if (n_rows <= 0 || C <= 0 || !cuda_ok()) return;
    scatter_add_rows_kernel<<<n_rows, 256>>>(out, inp, rows, C);
    LAUNCH_CHECK("scatter_add_rows_kernel");
}

/* ------------------------------------------------------------ embeddings */

/* out[N,C] = wte[tokens[i]] (+ wpe[pos[i]]) */
__global__ void embedding_forward_kernel(float *out, const int32_t *tokens, const int32_t *pos,
                                         const float *wte, const float *wpe, size_t N, int C) {
    GRID_STRIDE(k, N * C) {
        size_t i = k / C, c = k - i * C;
        float v = wte[(size_t)tokens[i] * C + c];
        if (wpe) v += wpe[(size_t)pos[i] * C + c];
        out[k] = v;
    }
}

void cuda_embedding_forward(float *out, const int32_t *tokens, const int32_t *pos, const float *wte,
                            const float *wpe, int N, int C) {
    size_t n = (size_t)N * C;
    if (!n || !cuda_ok()) return;
    embedding_forward_kernel<<<cuda_grid_for(n, 256), 256>>>(out, tokens, pos, wte, wpe, N, C);
    LAUNCH_CHECK("embedding_forward_kernel");
}

/* Segment s of the sorted order adds rows order[seg_start[s] .. seg_start[s+1])
 * of dout, in that (ascending token) order, into table row seg_id[s]. */
__global__ void segment_add_kernel(float *table, const float *dout, const int32_t *order,
                                   const int32_t *seg_id, const int32_t *seg_start, int C) {
    int s = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float *dst = table + (size_t)seg_id[s] * C + c;
    float acc = *dst;
    for (int k = seg_start[s]; k < seg_start[s + 1]; k++) acc += dout[(size_t)order[k] * C + c];
    *dst = acc;
}

/* Host side of the deterministic scatter-add: bring the ids over (the only
 * synchronisation in a training step's backward pass besides the loss), sort
 * row numbers by id with a stable counting sort, and hand the segments to
 * segment_add_kernel. */
static void scatter_add_by_id(float *table, const float *dout, const int32_t *ids_dev, int N, int C) {
    static int32_t *ids, *buf, *counts;
    static size_t ids_cap, counts_cap;
    if ((size_t)N > ids_cap) {
        free(ids);
        free(buf);
        ids = (int32_t *)malloc(N * sizeof(int32_t));
        buf = (int32_t *)malloc((3 * (size_t)N + 1) * sizeof(int32_t)); /* order | seg_id | seg_start */
        ids_cap = ids && buf ? N : 0;
        if (!ids_cap) {
            cuda_fail("out of host memory for the embedding gradient of %d tokens", N);
            return;
        }
    }
    if (CU_CHECK(cudaMemcpy(ids, ids_dev, N * sizeof(int32_t), cudaMemcpyDeviceToHost))) return;
    int32_t mx = 0;
    for (int i = 0; i < N; i++) {
        if (ids[i] < 0) {
            cuda_fail("embedding_backward: negative row id %d at position %d", ids[i], i);
            return;
        }
        if (ids[i] > mx) mx = ids[i];
    }
    if ((size_t)mx + 2 > counts_cap) {
        free(counts);
        counts = (int32_t *)malloc(((size_t)mx + 2) * sizeof(int32_t));
        counts_cap = counts ? (size_t)mx + 2 : 0;
        if (!counts) {
            cuda_fail("out of host memory for the embedding gradient");
            return;
        }
    }
    memset(counts, 0, ((size_t)mx + 2) * sizeof(int32_t));
    for (int i = 0; i < N; i++) counts[ids[i] + 1]++;
    for (int32_t v = 0; v <= mx; v++) counts[v + 1] += counts[v]; /* counts[v] = first slot of v */
    /* layout in one upload: order[N], then seg_id[S], then seg_start[S+1] */
    int32_t *order = buf;
    for (int i = 0; i < N; i++) order[counts[ids[i]]++] = i; /* counts[v] now = end of v */
    int S = 0;
    int32_t *seg_id = buf + N;
    for (int k = 0; k < N; k++)
        if (k == 0 || ids[order[k]] != ids[order[k - 1]]) seg_id[S++] = ids[order[k]];
    int32_t *seg_start = seg_id + S;
    int s = 0;
    for (int k = 0; k < N; k++)
        if (k == 0 || ids[order[k]] != ids[order[k - 1]]) seg_start[s++] = k;
    seg_start[S] = N; /* N + S + S + 1 <= 3N + 1 ints in all */
    size_t words = (size_t)N + S + S + 1;
    int32_t *dev = (int32_t *)cuda_scratch(SCRATCH_INDEX, words * sizeof(int32_t));
    if (!dev) return;
    if (CU_CHECK(cudaMemcpy(dev, buf, words * sizeof(int32_t), cudaMemcpyHostToDevice))) return;
    dim3 grid(S, (C + 255) / 256);
    segment_add_kernel<<<grid, 256>>>(table, dout, dev, dev + N, dev + N + S, C);
    LAUNCH_CHECK("segment_add_kernel");
}

/* dwte[tokens[i]] += dout[i]; dwpe[pos[i]] += dout[i]; either may be NULL */
void cuda_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                             const int32_t *pos, int N, int C) {
    if (N <= 0 || C <= 0 || !cuda_ok()) return;
    if (dwte) scatter_add_by_id(dwte, dout, tokens, N, C);
    if (dwpe && cuda_ok()) scatter_add_by_id(dwpe, dout, pos, N, C);
}

/* ------------------------------------------------------------ column sums */

/* Partial column sums over row group g (rows g*8+ty, stepping G*8) of
 *   KIND 0 (bias):      a = dout
 *   KIND 1 (layernorm): a = (x - mean) * rstd * dout, b = dout
 *   KIND 2 (rmsnorm):   a = dout * x * rstd
 * into part[g][c] (a) and part[G + g][c] (b). Block (32, 8). */
template <int KIND>
__global__ void colsum_partial_kernel(float *part, int G, const float *dout, int ld, const float *inp,
                                      const float *mean, const float *rstd, int N, int C) {
    __shared__ float sa[8][33], sb[8][33];
    int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * 32 + tx, g = blockIdx.y;
    float a = 0.0f, b = 0.0f;
    if (c < C) {
        for (int r = g * 8 + ty; r < N; r += G * 8) {
            float d = dout[(size_t)r * ld + c];
            if (KIND == 0) {
                a += d;
            } else if (KIND == 1) {
                a += (inp[(size_t)r * C + c] - mean[r]) * rstd[r] * d;
                b += d;
            } else {
                a += d * inp[(size_t)r * C + c] * rstd[r];
            }
        }
    }
    sa[ty][tx] = a;
    sb[ty][tx] = b;
    __syncthreads();
    if (ty == 0 && c < C) {
        float s = 0.0f, t = 0.0f;
        for (int k = 0; k < 8; k++) {
            s += sa[k][tx];
            t += sb[k][tx];
        }
        part[(size_t)g * C + c] = s;
        if (KIND == 1) part[(size_t)(G + g) * C + c] = t;
    }
}

/* dst_a[c] += sum_g part[g][c]; dst_b likewise from the second half */
__global__ void colsum_final_kernel(float *dst_a, float *dst_b, const float *part, int G, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    if (dst_a) {
        float s = 0.0f;
        for (int g = 0; g < G; g++) s += part[(size_t)g * C + c];
        dst_a[c] += s;
    }
    if (dst_b) {
        float s = 0.0f;
        for (int g = 0; g < G; g++) s += part[(size_t)(G + g) * C + c];
        dst_b[c] += s;
    }
}

template <int KIND>
static void colsum(float *dst_a, float *dst_b, const float *dout, int ld, const float *inp,
                   const float *mean, const float *rstd, int N, int C) {
    int G = (N + 63) / 64; /* depends on N only: the same grouping every run */
    if (G > 256) G = 256;
    float *part = (float *)cuda_scratch(SCRATCH_REDUCE, 2 * (size_t)G * C * sizeof(float));
    if (!part) return;
    dim3 grid((C + 31) / 32, G), block(32, 8);
    colsum_partial_kernel<KIND><<<grid, block>>>(part, G, dout, ld, inp, mean, rstd, N, C);
    if (LAUNCH_CHECK("colsum_partial_kernel")) return;
    colsum_final_kernel<<<(C + 255) / 256, 256>>>(dst_a, dst_b, part, G, C);
    LAUNCH_CHECK("colsum_final_kernel");
}

void cuda_bias_backward(float *dbias, const float *dout, int ld, int N, int OC) {
    if (N <= 0 || OC <= 0 || !cuda_ok()) return;
    colsum<0>(dbias, NULL, dout, ld, NULL, NULL, NULL, N, OC);
}

/* ------------------------------------------------------------ norms */

/* One warp per row. mean and variance in two passes, as the CPU. */
__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                         const float *w, const float *b, int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = x[c] - m;
        v += d * d;
    }
    v = warp_sum(v) / C;
    float r = 1.0f / sqrtf(v + eps);
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * r * w[c] + (b ? b[c] : 0.0f);
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

__global__ void layernorm_backward_kernel(float *dinp, const float *dout, const float *inp,
                                          const float *w, const float *mean, const float *rstd,
                                          int N, int C) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *d = dout + (size_t)row * C, *x = inp + (size_t)row * C;
    float m = mean[row], r = rstd[row];
    float dm = 0.0f, dnm = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float n = (x[c] - m) * r, dn = w[c] * d[c];
        dm += dn;
        dnm += dn * n;
    }
    dm = warp_sum(dm) / C;
    dnm = warp_sum(dnm) / C;
    float *di = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float n = (x[c] - m) * r, dn = w[c] * d[c];
        di[c] += (dn - dm - n * dnm) * r;
    }
}

__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp, const float *w,
                                       int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    ss = warp_sum(ss);
    float r = 1.0f / sqrtf(ss / C + eps);
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = x[c] * r * w[c];
    if (lane == 0) rstd[row] = r;
}

/* dx = r * g - x * r^3 * mean(g * x) with g = dout * w */
__global__ void rmsnorm_backward_kernel(float *dinp, const float *dout, const float *inp,
                                        const float *w, const float *rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *d = dout + (size_t)row * C, *x = inp + (size_t)row * C;
    float r = rstd[row], gx = 0.0f;
    for (int c = lane; c < C; c += 32) gx += d[c] * w[c] * x[c];
    gx = warp_sum(gx);
    float k = r * r * r * gx / C;
    float *di = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) di[c] += r * d[c] * w[c] - x[c] * k;
}

#define ROWS_PER_BLOCK 8 /* warps per block in the row kernels */

void cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                            const float *b, int N, int C, float eps) {
    if (N <= 0 || !cuda_ok()) return;
    layernorm_forward_kernel<<<(N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, 32 * ROWS_PER_BLOCK>>>(
        out, mean, rstd, inp, w, b, N, C, eps);
    LAUNCH_CHECK("layernorm_forward_kernel");
}

void cuda_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                             const float *w, const float *mean, const float *rstd, int N, int C) {
    if (N <= 0 || !cuda_ok()) return;
    layernorm_backward_kernel<<<(N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, 32 * ROWS_PER_BLOCK>>>(
        dinp, dout, inp, w, mean, rstd, N, C);
    if (LAUNCH_CHECK("layernorm_backward_kernel")) return;
    if (dw || db) colsum<1>(dw, db, dout, C, inp, mean, rstd, N, C);
}

void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                          float eps) {
    if (N <= 0 || !cuda_ok()) return;
    rmsnorm_forward_kernel<<<(N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, 32 * ROWS_PER_BLOCK>>>(
        out, rstd, inp, w, N, C, eps);
    LAUNCH_CHECK("rmsnorm_forward_kernel");
}

void cuda_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                           const float *w, const float *rstd, int N, int C) {
    if (N <= 0 || !cuda_ok()) return;
    rmsnorm_backward_kernel<<<(N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, 32 * ROWS_PER_BLOCK>>>(
        dinp, dout, inp, w, rstd, N, C);
    if (LAUNCH_CHECK("rmsnorm_backward_kernel")) return;
    if (dw) colsum<2>(dw, NULL, dout, C, inp, NULL, rstd, N, C);
}

/* ------------------------------------------------------------ LM log-probs */

/* Online (max, sum of exp) pairs: merging keeps one pass over the logits. */
__device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2) {
    float mx = fmaxf(m, m2);
    if (mx == -INFINITY) return; /* both empty */
    s = (m == -INFINITY ? 0.0f : s * expf(m - mx)) + (m2 == -INFINITY ? 0.0f : s2 * expf(m2 - mx));
    m = mx;
}

#define LP_THREADS 512

/* One block per row: lse[i] = logsumexp(logits[i]); logp[i] = logits[i][tgt[i]] - lse[i] */
__global__ void logprobs_forward_kernel(float *logp, float *lse, const float *logits,
                                        const int32_t *tgt, int V) {
    __shared__ float sm[32], ss[32];
    const float *x = logits + (size_t)blockIdx.x * V;
    float m = -INFINITY, s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float xv = x[v];
        if (xv > m) {
            s = (m == -INFINITY ? 0.0f : s * expf(m - xv)) + 1.0f;
            m = xv;
        } else if (m != -INFINITY) { /* both -inf: nothing to add */
            s += expf(xv - m);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < nw ? sm[lane] : -INFINITY;
        s = lane < nw ? ss[lane] : 0.0f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            lse_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            float l = m + logf(s);
            lse[blockIdx.x] = l;
            if (logp) logp[blockIdx.x] = x[tgt[blockIdx.x]] - l;
        }
    }
}

/* In place: logits[i] = dlogp[i] * (onehot(tgt[i]) - exp(logits[i] - lse[i])) */
__global__ void logprobs_backward_kernel(float *logits, const float *dlogp, const float *lse,
                                         const int32_t *tgt, int V) {
    float *x = logits + (size_t)blockIdx.x * V;
    float d = dlogp[blockIdx.x], l = lse[blockIdx.x];
    int t = tgt[blockIdx.x];
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float g = -d * expf(x[v] - l);
        if (v == t) g += d;
        x[v] = g;
    }
}

void cuda_logprobs_forward(float *logp, float *lse, const float *logits, const int32_t *tgt, int n,
                           int V) {
    if (n <= 0 || !cuda_ok()) return;
    logprobs_forward_kernel<<<n, LP_THREADS>>>(logp, lse, logits, tgt, V);
    LAUNCH_CHECK("logprobs_forward_kernel");
}

void cuda_logprobs_backward(float *logits, const float *dlogp, const float *lse, const int32_t *tgt,
                            int n, int V) {
    if (n <= 0 || !cuda_ok()) return;
    logprobs_backward_kernel<<<n, LP_THREADS>>>(logits, dlogp, lse, tgt, V);
    LAUNCH_CHECK("logprobs_backward_kernel");
}

/* ------------------------------------------------------------ optimizer */

/* A fixed grid, so the summation order (and the result) is the same on
 * every run and every device. Partials in double, as the CPU. */
#define SS_BLOCKS 1024
#define SS_THREADS 256

__global__ void sum_squares_partial_kernel(double *part, const float *x, size_t n) {
    __shared__ double sh[32];
    double s = 0.0;
    GRID_STRIDE(i, n) {
        double v = x[i];
        s += v * v;
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void sum_squares_final_kernel(double *out, const double *part) {
    __shared__ double sh[32];
    double s = block_sum(part[threadIdx.x], sh); /* blockDim.x == SS_BLOCKS */
    if (threadIdx.x == 0) *out = s;
}

double cuda_sum_squares(const float *x, size_t n) {
    if (!cuda_ok()) return NAN;
    if (!n) return 0.0;
    double *part = (double *)cuda_scratch(SCRATCH_REDUCE, (SS_BLOCKS + 1) * sizeof(double));
    if (!part) return NAN;
    sum_squares_partial_kernel<<<SS_BLOCKS, SS_THREADS>>>(part, x, n);
    if (LAUNCH_CHECK("sum_squares_partial_kernel")) return NAN;
    sum_squares_final_kernel<<<1, SS_BLOCKS>>>(part + SS_BLOCKS, part);
    if (LAUNCH_CHECK("sum_squares_final_kernel")) return NAN;
    double r = NAN;
    if (CU_CHECK(cudaMemcpy(&r, part + SS_BLOCKS, sizeof r, cudaMemcpyDeviceToHost))) return NAN;
    return r;
}

/* PyTorch AdamW, the CPU's formula term for term */
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float beta1,
                             float beta2, float eps, float decay, float step, float inv_sqrt_bc2,
                             float grad_scale) {
    GRID_STRIDE(i, n) {
        float gi = g[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}

void cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                float beta2, float eps, float wd, float bc1, float bc2, float grad_scale) {
    if (!n || !cuda_ok()) return;
    float decay = 1.0f - lr * wd;
    float step = lr / bc1, inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
    adamw_kernel<<<cuda_grid_for(n, 256), 256>>>(p, g, m, v, n, beta1, beta2, eps, decay, step,
                                                 inv_sqrt_bc2, grad_scale);
    LAUNCH_CHECK("adamw_kernel");
}
