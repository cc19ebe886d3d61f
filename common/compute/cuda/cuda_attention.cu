/* cuda_attention: RoPE and causal attention over packed sequences.
 *
 * Attention is flash-attention style in fp32 on the CUDA cores: the
 * forward pass walks key tiles with an online softmax and saves only the
 * log-sum-exp of each score row (lse[h * N + i], as the CPU), so memory is
 * linear in sequence length; the backward pass recomputes the probabilities
 * from it. Scores are kept in log2 units (q pre-scaled by scale * log2 e) so
 * the exponentials are exp2f.
 *
 * Work units are 64-row tiles of one sequence (tiles never straddle a
 * sequence boundary, so the block-diagonal causal mask is only "key <= query"
 * inside a tile pair). The host builds the tile list from the host
 * seq_start array and passes it BY VALUE as a __grid_constant__ kernel
 * parameter (up to ATT_MAX_TILES tiles per launch; bigger batches take
 * several launches), so no host-to-device copy or synchronisation is needed.
 *
 * Backward is deterministic: no atomics. One kernel owns a key tile of one
 * kv head and loops over the query heads of its group and every later query
 * tile, accumulating dK and dV in registers; a second kernel owns a query
 * tile and loops over key tiles for dQ. Scores and dP are computed twice
 * (7 tile products against flash-attention-2's 5) in exchange.
 *
 * Inside a block, 128 threads share tiles in shared memory; each thread owns
 * a 4 x CN patch of every product (mma_tile), reading float4s of k-major
 * operands. Head dims are padded to HDP in {32, 64, 128}; padded dims are
 * zero and never written. Tensor-core (mma.sync bf16) versions are the next
 * step; this one is exact fp32 and serves as their reference. */
#include <math.h>
#include <string.h>

#include "cuda_common.cuh"

#define ATT_TILE 64      /* rows per work tile, in all three kernels */
#define ATT_SUB 32       /* inner tile: queries in the dK/dV kernel, keys in the dQ kernel */
#define ATT_THREADS 128
#define ATT_PAD 4        /* floats of padding per shared row: keeps float4 alignment */
#define ATT_MAX_TILES 300
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* tile t covers rows [start[t], min(start[t] + ATT_TILE, end[t])) of the
 * sequence [sbeg[t], end[t]) */
struct TileTable {
    int n;
    int start[ATT_MAX_TILES];
    int end[ATT_MAX_TILES];
    int sbeg[ATT_MAX_TILES];
};

struct AttnArgs {
    const float *qkv;  /* [N, ld] */
    const float *out;  /* [N, ldo] forward output (backward reads it for D) */
    const float *dout; /* [N, ldo] */
    const float *D;    /* [Hq, N] rowsum(dout * out) */
    const float *lse;  /* [Hq, N] */
    float *o;          /* forward: out */
    float *lse_out;    /* forward: lse */
    float *dqkv;       /* backward */
    int N, Hq, Hkv, hd, ld, ldo;
    float scale;       /* 1/sqrt(hd) */
};

/* acc[i][j] += sum_k A[k * lda + i] * B[k * ldb + j]; A, B already offset to
 * the thread's patch, 16-byte aligned, lda and ldb multiples of 4. */
template <int RM, int CN, int K>
__device__ __forceinline__ void mma_tile(float (&acc)[RM][CN], const float *A, int lda,
                                         const float *B, int ldb) {
#pragma unroll 4
    for (int k = 0; k < K; k++) {
        float a[RM], b[CN];
#pragma unroll
        for (int i = 0; i < RM; i += 4) *(float4 *)&a[i] = *(const float4 *)(A + k * lda + i);
#pragma unroll
        for (int j = 0; j < CN; j += 4) *(float4 *)&b[j] = *(const float4 *)(B + k * ldb + j);
#pragma unroll
        for (int i = 0; i < RM; i++)
#pragma unroll
            for (int j = 0; j < CN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

template <int RM, int CN>
__device__ __forceinline__ void zero_tile(float (&acc)[RM][CN]) {
#pragma unroll
    for (int i = 0; i < RM; i++)
#pragma unroll
        for (int j = 0; j < CN; j++) acc[i][j] = 0.0f;
}

/* ------------------------------------------------------------ forward */

template <int HDP>
struct FwdSmem {
    static constexpr int LQ = ATT_TILE + ATT_PAD, LK = ATT_TILE + ATT_PAD, LV = HDP + ATT_PAD;
    static constexpr int floats = HDP * LQ + HDP * LK + ATT_TILE * LV + ATT_TILE * LQ;
};

/* grid (tiles, Hq): one 64-query tile of one head */
template <int HDP>
__global__ void __launch_bounds__(ATT_THREADS)
attn_fwd_kernel(const __grid_constant__ TileTable tt, const AttnArgs a) {
    typedef FwdSmem<HDP> L;
    constexpr int BR = ATT_TILE, BC = ATT_TILE, CNO = HDP / 8;
    extern __shared__ float4 smem4[];
    float *Qt = (float *)smem4;   /* [HDP][LQ]  q^T, pre-scaled */
    float *Kt = Qt + HDP * L::LQ; /* [HDP][LK]  k^T */
    float *Vs = Kt + HDP * L::LK; /* [BC][LV]   v */
    float *Pt = Vs + BC * L::LV;  /* [BC][LQ]   p^T */
    const int tid = threadIdx.x, lane = tid & 31;
    const int ty = (tid >> 5) * 4 + (lane >> 3), tx = lane & 7; /* rows 4ty.., keys 8tx.. */
    const int t = blockIdx.x, h = blockIdx.y, hd = a.hd, ld = a.ld;
    const int q0 = tt.start[t], sbeg = tt.sbeg[t];
    const int qend = min(q0 + BR, tt.end[t]);
    const int g = h / (a.Hq / a.Hkv);
    const float *Qg = a.qkv + h * hd, *Kg = a.qkv + (a.Hq + g) * hd, *Vg = a.qkv + (a.Hq + a.Hkv + g) * hd;
    const float qscale = a.scale * LOG2E;

    for (int idx = tid; idx < BR * HDP; idx += ATT_THREADS) {
        int r = idx / HDP, d = idx - r * HDP, tok = q0 + r;
        Qt[d * L::LQ + r] = (tok < qend && d < hd) ? Qg[(size_t)tok * ld + d] * qscale : 0.0f;
    }
    float m[4], l[4], O[4][CNO];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    zero_tile(O);

    for (int k0 = sbeg; k0 < qend; k0 += BC) {
        __syncthreads(); /* the previous tile's readers are done */
        for (int idx = tid; idx < BC * HDP; idx += ATT_THREADS) {
            int j = idx / HDP, d = idx - j * HDP, tok = k0 + j;
            int ok = tok < qend && d < hd;
            Kt[d * L::LK + j] = ok ? Kg[(size_t)tok * ld + d] : 0.0f;
            Vs[j * L::LV + d] = ok ? Vg[(size_t)tok * ld + d] : 0.0f;
        }
        __syncthreads();
        float S[4][8];
        zero_tile(S);
        mma_tile<4, 8, HDP>(S, Qt + 4 * ty, L::LQ, Kt + 8 * tx, L::LK);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int q = q0 + 4 * ty + i;
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                if (k0 + 8 * tx + j > q) S[i][j] = -INFINITY;
                mx = fmaxf(mx, S[i][j]);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
            float mnew = fmaxf(m[i], mx);
            float alpha = (mnew == -INFINITY || m[i] == -INFINITY) ? (mnew == -INFINITY ? 1.0f : 0.0f)
                                                                   : exp2f(m[i] - mnew);
            float rs = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float p = mnew == -INFINITY ? 0.0f : exp2f(S[i][j] - mnew);
                rs += p;
                Pt[(8 * tx + j) * L::LQ + 4 * ty + i] = p;
            }
            rs += __shfl_xor_sync(0xffffffffu, rs, 1);
            rs += __shfl_xor_sync(0xffffffffu, rs, 2);
            rs += __shfl_xor_sync(0xffffffffu, rs, 4);
            l[i] = l[i] * alpha + rs;
            m[i] = mnew;
#pragma unroll
            for (int c = 0; c < CNO; c++) O[i][c] *= alpha;
        }
        __syncthreads();
        mma_tile<4, CNO, BC>(O, Pt + 4 * ty, L::LQ, Vs + CNO * tx, L::LV);
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        int q = q0 + 4 * ty + i;
        if (q >= qend) continue;
        float inv = 1.0f / l[i];
        float *o = a.o + (size_t)q * a.ldo + h * hd;
#pragma unroll
        for (int c = 0; c < CNO; c++) {
            int d = CNO * tx + c;
            if (d < hd) o[d] = O[i][c] * inv;
        }
        if (tx == 0) a.lse_out[(size_t)h * a.N + q] = (m[i] + log2f(l[i])) * LN2;
    }
}

/* ------------------------------------------------------------ backward */

/* D[h * N + i] = sum_d dout[i, h, d] * out[i, h, d]: one warp per (i, h) */
__global__ void attn_bwd_dot_kernel(float *D, const AttnArgs a) {
    long w = (blockIdx.x * (long)blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (w >= (long)a.N * a.Hq) return;
    int h = (int)(w / a.N), i = (int)(w - (long)h * a.N);
    const float *o = a.out + (size_t)i * a.ldo + h * a.hd, *d = a.dout + (size_t)i * a.ldo + h * a.hd;
    float s = 0.0f;
    for (int c = lane; c < a.hd; c += 32) s += d[c] * o[c];
    s = warp_sum(s);
    if (lane == 0) D[(size_t)h * a.N + i] = s;
}

template <int HDP>
struct KVSmem {
    static constexpr int LK = ATT_TILE + ATT_PAD, LQ = ATT_SUB + ATT_PAD, LN = HDP + ATT_PAD,
                         LP = ATT_TILE + ATT_PAD;
    static constexpr int floats = 2 * HDP * LK + 2 * HDP * LQ + 2 * ATT_SUB * LN + 2 * ATT_SUB * LP + 2 * ATT_SUB;
};

/* grid (tiles, Hkv): dK and dV of one 64-key tile of one kv head, summed
 * over the query heads of its group and the later 32-query tiles. */
template <int HDP>
__global__ void __launch_bounds__(ATT_THREADS)
attn_bwd_kv_kernel(const __grid_constant__ TileTable tt, const AttnArgs a) {
    typedef KVSmem<HDP> L;
    constexpr int BK = ATT_TILE, BQ = ATT_SUB, CN = HDP / 8;
    extern __shared__ float4 smem4[];
    float *Kt = (float *)smem4;     /* [HDP][LK] */
    float *Vt = Kt + HDP * L::LK;   /* [HDP][LK] */
    float *Qt = Vt + HDP * L::LK;   /* [HDP][LQ] pre-scaled */
    float *dOt = Qt + HDP * L::LQ;  /* [HDP][LQ] */
    float *Qn = dOt + HDP * L::LQ;  /* [BQ][LN] */
    float *dOn = Qn + BQ * L::LN;   /* [BQ][LN] */
    float *Ps = dOn + BQ * L::LN;   /* [BQ][LP] p for (query, key) */
    float *dSs = Ps + BQ * L::LP;   /* [BQ][LP] */
    float *lse2 = dSs + BQ * L::LP; /* [BQ] */
    float *Dq = lse2 + BQ;          /* [BQ] */
    const int tid = threadIdx.x, lane = tid & 31;
    const int ty = (tid >> 5) * 4 + (lane >> 3), tx = lane & 7; /* keys 4ty.., queries 4tx.. */
    const int t = blockIdx.x, g = blockIdx.y, hd = a.hd, ld = a.ld, N = a.N;
    const int k0 = tt.start[t], send = tt.end[t];
    const int kend = min(k0 + BK, send);
    const int group = a.Hq / a.Hkv;
    const float qscale = a.scale * LOG2E;
    const float *Kg = a.qkv + (a.Hq + g) * hd, *Vg = a.qkv + (a.Hq + a.Hkv + g) * hd;

    for (int idx = tid; idx < BK * HDP; idx += ATT_THREADS) {
        int j = idx / HDP, d = idx - j * HDP, tok = k0 + j;
        int ok = tok < kend && d < hd;
        Kt[d * L::LK + j] = ok ? Kg[(size_t)tok * ld + d] : 0.0f;
        Vt[d * L::LK + j] = ok ? Vg[(size_t)tok * ld + d] : 0.0f;
    }
    float dK[4][CN], dV[4][CN];
    zero_tile(dK);
    zero_tile(dV);

    for (int h = g * group; h < (g + 1) * group; h++) {
        const float *Qg = a.qkv + h * hd, *dOg = a.dout + h * hd;
        for (int qb = k0; qb < send; qb += BQ) {
            __syncthreads();
            for (int idx = tid; idx < BQ * HDP; idx += ATT_THREADS) {
                int r = idx / HDP, d = idx - r * HDP, tok = qb + r;
                int ok = tok < send && d < hd;
                float q = ok ? Qg[(size_t)tok * ld + d] : 0.0f;
                float o = ok ? dOg[(size_t)tok * a.ldo + d] : 0.0f;
                Qt[d * L::LQ + r] = q * qscale;
                Qn[r * L::LN + d] = q;
                dOt[d * L::LQ + r] = o;
                dOn[r * L::LN + d] = o;
            }
            if (tid < BQ) {
                int tok = qb + tid;
                lse2[tid] = tok < send ? a.lse[(size_t)h * N + tok] * LOG2E : 0.0f;
                Dq[tid] = tok < send ? a.D[(size_t)h * N + tok] : 0.0f;
            }
            __syncthreads();
            float S[4][4], dP[4][4];
            zero_tile(S);
            zero_tile(dP);
            mma_tile<4, 4, HDP>(S, Kt + 4 * ty, L::LK, Qt + 4 * tx, L::LQ);
            mma_tile<4, 4, HDP>(dP, Vt + 4 * ty, L::LK, dOt + 4 * tx, L::LQ);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int key = k0 + 4 * ty + i;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    int r = 4 * tx + j, q = qb + r;
                    float p = (key <= q && q < send && key < kend) ? exp2f(S[i][j] - lse2[r]) : 0.0f;
                    Ps[r * L::LP + 4 * ty + i] = p;
                    dSs[r * L::LP + 4 * ty + i] = p * (dP[i][j] - Dq[r]);
                }
            }
            __syncthreads();
            mma_tile<4, CN, BQ>(dV, Ps + 4 * ty, L::LP, dOn + CN * tx, L::LN);
            mma_tile<4, CN, BQ>(dK, dSs + 4 * ty, L::LP, Qn + CN * tx, L::LN);
        }
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        int key = k0 + 4 * ty + i;
        if (key >= kend) continue;
        float *dk = a.dqkv + (size_t)key * ld + (a.Hq + g) * hd;
        float *dv = a.dqkv + (size_t)key * ld + (a.Hq + a.Hkv + g) * hd;
#pragma unroll
        for (int c = 0; c < CN; c++) {
            int d = CN * tx + c;
            if (d < hd) {
                dk[d] = dK[i][c] * a.scale;
                dv[d] = dV[i][c];
            }
        }
    }
}

template <int HDP>
struct QSmem {
    static constexpr int LQ = ATT_TILE + ATT_PAD, LK = ATT_SUB + ATT_PAD, LN = HDP + ATT_PAD;
    static constexpr int floats = 2 * HDP * LQ + 2 * HDP * LK + ATT_SUB * LN + ATT_SUB * LQ + 2 * ATT_TILE;
};

/* grid (tiles, Hq): dQ of one 64-query tile of one head */
template <int HDP>
__global__ void __launch_bounds__(ATT_THREADS)
attn_bwd_q_kernel(const __grid_constant__ TileTable tt, const AttnArgs a) {
    typedef QSmem<HDP> L;
    constexpr int BQ = ATT_TILE, BK = ATT_SUB, CN = HDP / 8;
    extern __shared__ float4 smem4[];
    float *Qt = (float *)smem4;     /* [HDP][LQ] pre-scaled */
    float *dOt = Qt + HDP * L::LQ;  /* [HDP][LQ] */
    float *Kt = dOt + HDP * L::LQ;  /* [HDP][LK] */
    float *Vt = Kt + HDP * L::LK;   /* [HDP][LK] */
    float *Kn = Vt + HDP * L::LK;   /* [BK][LN] */
    float *dSt = Kn + BK * L::LN;   /* [BK][LQ] */
    float *lse2 = dSt + BK * L::LQ; /* [BQ] */
    float *Dq = lse2 + BQ;          /* [BQ] */
    const int tid = threadIdx.x, lane = tid & 31;
    const int ty = (tid >> 5) * 4 + (lane >> 3), tx = lane & 7; /* queries 4ty.., keys 4tx.. */
    const int t = blockIdx.x, h = blockIdx.y, hd = a.hd, ld = a.ld, N = a.N;
    const int q0 = tt.start[t], sbeg = tt.sbeg[t];
    const int qend = min(q0 + BQ, tt.end[t]);
    const int g = h / (a.Hq / a.Hkv);
    const float qscale = a.scale * LOG2E;
    const float *Qg = a.qkv + h * hd, *dOg = a.dout + h * hd;
    const float *Kg = a.qkv + (a.Hq + g) * hd, *Vg = a.qkv + (a.Hq + a.Hkv + g) * hd;

    for (int idx = tid; idx < BQ * HDP; idx += ATT_THREADS) {
        int r = idx / HDP, d = idx - r * HDP, tok = q0 + r;
        int ok = tok < qend && d < hd;
        Qt[d * L::LQ + r] = ok ? Qg[(size_t)tok * ld + d] * qscale : 0.0f;
        dOt[d * L::LQ + r] = ok ? dOg[(size_t)tok * a.ldo + d] : 0.0f;
    }
    if (tid < BQ) {
        int tok = q0 + tid;
        lse2[tid] = tok < qend ? a.lse[(size_t)h * N + tok] * LOG2E : 0.0f;
        Dq[tid] = tok < qend ? a.D[(size_t)h * N + tok] : 0.0f;
    }
    float dQ[4][CN];
    zero_tile(dQ);

    for (int kb = sbeg; kb < qend; kb += BK) {
        __syncthreads();
        for (int idx = tid; idx < BK * HDP; idx += ATT_THREADS) {
            int j = idx / HDP, d = idx - j * HDP, tok = kb + j;
            int ok = tok < qend && d < hd;
            float k = ok ? Kg[(size_t)tok * ld + d] : 0.0f;
            Kt[d * L::LK + j] = k;
            Kn[j * L::LN + d] = k;
            Vt[d * L::LK + j] = ok ? Vg[(size_t)tok * ld + d] : 0.0f;
        }
        __syncthreads();
        float S[4][4], dP[4][4];
        zero_tile(S);
        zero_tile(dP);
        mma_tile<4, 4, HDP>(S, Qt + 4 * ty, L::LQ, Kt + 4 * tx, L::LK);
        mma_tile<4, 4, HDP>(dP, dOt + 4 * ty, L::LQ, Vt + 4 * tx, L::LK);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int r = 4 * ty + i, q = q0 + r;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int key = kb + 4 * tx + j;
                float p = (key <= q && q < qend) ? exp2f(S[i][j] - lse2[r]) : 0.0f;
                dSt[(4 * tx + j) * L::LQ + r] = p * (dP[i][j] - Dq[r]);
            }
        }
        __syncthreads();
        mma_tile<4, CN, BK>(dQ, dSt + 4 * ty, L::LQ, Kn + CN * tx, L::LN);
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        int q = q0 + 4 * ty + i;
        if (q >= qend) continue;
        float *dq = a.dqkv + (size_t)q * ld + h * hd;
#pragma unroll
        for (int c = 0; c < CN; c++) {
            int d = CN * tx + c;
            if (d < hd) dq[d] = dQ[i][c] * a.scale;
        }
    }
}

/* ------------------------------------------------------------ host side */

static int attn_check_shapes(const int32_t *seq_start, int n_seqs, int N, int Hq, int Hkv, int hd) {
    if (hd <= 0 || hd > 128) return cuda_fail("attention: head_dim %d is not supported by the CUDA backend (1..128)", hd);
    if (Hkv <= 0 || Hq % Hkv) return cuda_fail("attention: %d query heads are not a multiple of %d kv heads", Hq, Hkv);
    if (n_seqs < 0 || (n_seqs > 0 && !seq_start)) return cuda_fail("attention: no sequence offsets");
    for (int s = 0; s < n_seqs; s++)
        if (seq_start[s] < 0 || seq_start[s + 1] < seq_start[s] || seq_start[s + 1] > N)
            return cuda_fail("attention: sequence offsets are not increasing within %d tokens", N);
    return 0;
}

/* Calls launch(table) for each run of up to ATT_MAX_TILES tiles. */
template <typename F>
static void for_tile_chunks(const int32_t *seq_start, int n_seqs, F launch) {
    static TileTable tt; /* 3.6 KB: static, not on the stack; one host thread drives the backend */
    tt.n = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int r = seq_start[s]; r < seq_start[s + 1]; r += ATT_TILE) {
            tt.start[tt.n] = r;
            tt.end[tt.n] = seq_start[s + 1];
            tt.sbeg[tt.n] = seq_start[s];
            if (++tt.n == ATT_MAX_TILES) {
                launch(tt);
                tt.n = 0;
                if (!cuda_ok()) return;
            }
        }
    }
    if (tt.n) launch(tt);
}

/* Raise a kernel's dynamic shared-memory limit once; fail cleanly where the
 * device has less than it needs. */
static int attn_smem_ok(const void *kernel, size_t bytes, int *done) {
    if (*done) return 0;
    int dev = 0, optin = 0;
    if (CU_CHECK(cudaGetDevice(&dev))) return -1;
    if (CU_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev))) return -1;
    if ((size_t)optin < bytes)
        return cuda_fail("attention needs %zu bytes of shared memory per block; this device allows %d", bytes, optin);
    if (CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes))) return -1;
    *done = 1;
    return 0;
}

template <int HDP>
static void attn_forward_hdp(const AttnArgs &a, const int32_t *seq_start, int n_seqs) {
    static int ready;
    size_t smem = FwdSmem<HDP>::floats * sizeof(float);
    if (attn_smem_ok((const void *)attn_fwd_kernel<HDP>, smem, &ready)) return;
    for_tile_chunks(seq_start, n_seqs, [&](const TileTable &tt) {
        attn_fwd_kernel<HDP><<<dim3(tt.n, a.Hq), ATT_THREADS, smem>>>(tt, a);
        LAUNCH_CHECK("attn_fwd_kernel");
    });
}

template <int HDP>
static void attn_backward_hdp(const AttnArgs &a, const int32_t *seq_start, int n_seqs) {
    static int ready_kv, ready_q;
    size_t smem_kv = KVSmem<HDP>::floats * sizeof(float), smem_q = QSmem<HDP>::floats * sizeof(float);
    if (attn_smem_ok((const void *)attn_bwd_kv_kernel<HDP>, smem_kv, &ready_kv)) return;
    if (attn_smem_ok((const void *)attn_bwd_q_kernel<HDP>, smem_q, &ready_q)) return;
    for_tile_chunks(seq_start, n_seqs, [&](const TileTable &tt) {
        attn_bwd_kv_kernel<HDP><<<dim3(tt.n, a.Hkv), ATT_THREADS, smem_kv>>>(tt, a);
        if (LAUNCH_CHECK("attn_bwd_kv_kernel")) return;
        attn_bwd_q_kernel<HDP><<<dim3(tt.n, a.Hq), ATT_THREADS, smem_q>>>(tt, a);
        LAUNCH_CHECK("attn_bwd_q_kernel");
    });
}

static AttnArgs attn_args(const float *qkv, int N, int Hq, int Hkv, int hd) {
    AttnArgs a;
    memset(&a, 0, sizeof a);
    a.qkv = qkv;
    a.N = N;
    a.Hq = Hq;
    a.Hkv = Hkv;
    a.hd = hd;
    a.ld = (Hq + 2 * Hkv) * hd;
    a.ldo = Hq * hd;
    a.scale = 1.0f / sqrtf((float)hd);
    return a;
}

static int covers_all_rows(const int32_t *seq_start, int n_seqs, int N) {
    return n_seqs > 0 ? seq_start[0] == 0 && seq_start[n_seqs] == N : N == 0;
}

void cuda_attention_forward(float *out, float *lse, const float *qkv, const int32_t *seq_start,
                            int n_seqs, int N, int Hq, int Hkv, int hd) {
    if (N <= 0 || !cuda_ok()) return;
    if (attn_check_shapes(seq_start, n_seqs, N, Hq, Hkv, hd)) return;
    AttnArgs a = attn_args(qkv, N, Hq, Hkv, hd);
    a.o = out;
    a.lse_out = lse;
    if (!covers_all_rows(seq_start, n_seqs, N)) { /* rows outside every sequence: zero, as no tile writes them */
        if (CU_CHECK(cudaMemsetAsync(out, 0, (size_t)N * a.ldo * sizeof(float), 0))) return;
        if (CU_CHECK(cudaMemsetAsync(lse, 0, (size_t)N * Hq * sizeof(float), 0))) return;
    }
    if (hd <= 32) attn_forward_hdp<32>(a, seq_start, n_seqs);
    else if (hd <= 64) attn_forward_hdp<64>(a, seq_start, n_seqs);
    else attn_forward_hdp<128>(a, seq_start, n_seqs);
}

void cuda_attention_backward(float *dqkv, const float *dout, const float *out, const float *lse,
                             const float *qkv, const int32_t *seq_start, int n_seqs, int N, int Hq,
                             int Hkv, int hd) {
    if (N <= 0 || !cuda_ok()) return;
    if (attn_check_shapes(seq_start, n_seqs, N, Hq, Hkv, hd)) return;
    AttnArgs a = attn_args(qkv, N, Hq, Hkv, hd);
    a.out = out;
    a.dout = dout;
    a.lse = lse;
    a.dqkv = dqkv;
    if (!covers_all_rows(seq_start, n_seqs, N) &&
        CU_CHECK(cudaMemsetAsync(dqkv, 0, (size_t)N * a.ld * sizeof(float), 0)))
        return;
    float *D = (float *)cuda_scratch(SCRATCH_ATTN, (size_t)N * Hq * sizeof(float));
    if (!D) return;
    long warps = (long)N * Hq;
    attn_bwd_dot_kernel<<<(unsigned)((warps + 7) / 8), 256>>>(D, a);
    if (LAUNCH_CHECK("attn_bwd_dot_kernel")) return;
    a.D = D;
    if (hd <= 32) attn_backward_hdp<32>(a, seq_start, n_seqs);
    else if (hd <= 64) attn_backward_hdp<64>(a, seq_start, n_seqs);
    else attn_backward_hdp<128>(a, seq_start, n_seqs);
}

/* ------------------------------------------------------------ rope */

/* Rotate-half RoPE on the q and k heads of qkv[N, (Hq + 2Hkv) * hd]:
 * (x_j, x_{j+hd/2}) rotates by sign * pos * inv_freq[j]. */
__global__ void rope_kernel(float *qkv, const int32_t *pos, const float *inv_freq, int N, int Hqk,
                            int ld, int hd, float sign) {
    int half = hd / 2;
    size_t n = (size_t)N * Hqk * half;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(k % half);
        size_t rest = k / half;
        int hh = (int)(rest % Hqk), i = (int)(rest / Hqk);
        float angle = (float)pos[i] * inv_freq[j];
        float c = cosf(angle), s = sign * sinf(angle);
        float *x = qkv + (size_t)i * ld + hh * hd;
        float x1 = x[j], x2 = x[j + half];
        x[j] = x1 * c - x2 * s;
        x[j + half] = x2 * c + x1 * s;
    }
}

static void rope(float *qkv, const int32_t *pos, const float *inv_freq, int N, int Hq, int Hkv,
                 int hd, float sign) {
    if (N <= 0 || hd < 2 || !cuda_ok()) return;
    size_t n = (size_t)N * (Hq + Hkv) * (hd / 2);
    rope_kernel<<<cuda_grid_for(n, 256), 256>>>(qkv, pos, inv_freq, N, Hq + Hkv, (Hq + 2 * Hkv) * hd, hd, sign);
    LAUNCH_CHECK("rope_kernel");
}

void cuda_rope_forward(float *qkv, const int32_t *pos, const float *inv_freq, int N, int Hq, int Hkv,
                       int hd) {
    rope(qkv, pos, inv_freq, N, Hq, Hkv, hd, 1.0f);
}

void cuda_rope_backward(float *dqkv, const int32_t *pos, const float *inv_freq, int N, int Hq,
                        int Hkv, int hd) {
    rope(dqkv, pos, inv_freq, N, Hq, Hkv, hd, -1.0f);
}

/* ------------------------------------------------------------ cached decoding */

/* Attention against a KV cache, for generation: a first version that is
 * simple rather than fast (one warp per new token and head, keys one at a
 * time with an online softmax). Per-sequence slot, past length and offsets
 * travel by value, up to DEC_MAX_SEQS sequences per launch. */
#define DEC_MAX_SEQS 256

struct DecodeTable {
    int n;
    int first[DEC_MAX_SEQS + 1]; /* seq_start of this chunk's sequences, then the end */
    int slot[DEC_MAX_SEQS];
    int past[DEC_MAX_SEQS];
};

struct DecodeArgs {
    const float *qkv;
    float *kcache, *vcache, *out;
    int Hq, Hkv, hd, ld, ldo, kvd, max_len;
    float scale;
};

/* grid (sequences): copy each new token's k and v into its slot */
__global__ void kv_append_kernel(const __grid_constant__ DecodeTable dt, const DecodeArgs a) {
    int s = blockIdx.x;
    int t0 = dt.first[s], n = dt.first[s + 1] - t0;
    size_t base = ((size_t)dt.slot[s] * a.max_len + dt.past[s]) * a.kvd;
    for (int k = threadIdx.x; k < n * a.kvd; k += blockDim.x) {
        int r = k / a.kvd, c = k - r * a.kvd;
        const float *row = a.qkv + (size_t)(t0 + r) * a.ld;
        a.kcache[base + (size_t)r * a.kvd + c] = row[a.Hq * a.hd + c];
        a.vcache[base + (size_t)r * a.kvd + c] = row[(a.Hq + a.Hkv) * a.hd + c];
    }
}

/* grid (sequences, Hq), 4 warps: warp w takes new tokens w, w+4, ... */
__global__ void decode_attn_kernel(const __grid_constant__ DecodeTable dt, const DecodeArgs a) {
    int s = blockIdx.x, h = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int t0 = dt.first[s], n = dt.first[s + 1] - t0, hd = a.hd;
    int g = h / (a.Hq / a.Hkv);
    const float *K = a.kcache + (size_t)dt.slot[s] * a.max_len * a.kvd + g * hd;
    const float *V = a.vcache + (size_t)dt.slot[s] * a.max_len * a.kvd + g * hd;
    for (int r = warp; r < n; r += blockDim.x >> 5) {
        const float *qr = a.qkv + (size_t)(t0 + r) * a.ld + h * hd;
        float q[4], o[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int c = lane + 32 * k;
            q[k] = c < hd ? qr[c] : 0.0f;
            o[k] = 0.0f;
        }
        int T = dt.past[s] + r + 1; /* keys this token sees */
        float m = -INFINITY, l = 0.0f;
        for (int j = 0; j < T; j++) {
            const float *kj = K + (size_t)j * a.kvd, *vj = V + (size_t)j * a.kvd;
            float d = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                int c = lane + 32 * k;
                if (c < hd) d += q[k] * kj[c];
            }
            float sc = warp_sum(d) * a.scale;
            float mnew = fmaxf(m, sc);
            float corr = expf(m - mnew), p = expf(sc - mnew); /* m = -inf first: corr = 0 */
            l = l * corr + p;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                int c = lane + 32 * k;
                o[k] = o[k] * corr + (c < hd ? p * vj[c] : 0.0f);
            }
            m = mnew;
        }
        float *orow = a.out + (size_t)(t0 + r) * a.ldo + h * hd;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int c = lane + 32 * k;
            if (c < hd) orow[c] = o[k] / l;
        }
    }
}

void cuda_attention_forward_cached(float *out, const float *qkv, float *kcache, float *vcache,
                                   const int32_t *slots, const int32_t *past, const int32_t *seq_start,
                                   int n_seqs, int N, int Hq, int Hkv, int hd, int max_len) {
    if (N <= 0 || !cuda_ok()) return;
    if (attn_check_shapes(seq_start, n_seqs, N, Hq, Hkv, hd)) return;
    for (int s = 0; s < n_seqs; s++)
        if (slots[s] < 0 || past[s] < 0 || past[s] + seq_start[s + 1] - seq_start[s] > max_len) {
            cuda_fail("cached attention: sequence %d does not fit its cache slot (%d + %d > %d tokens)", s,
                      past[s], seq_start[s + 1] - seq_start[s], max_len);
            return;
        }
    DecodeArgs a;
    a.qkv = qkv;
    a.kcache = kcache;
    a.vcache = vcache;
    a.out = out;
    a.Hq = Hq, a.Hkv = Hkv, a.hd = hd, a.ld = (Hq + 2 * Hkv) * hd, a.ldo = Hq * hd, a.kvd = Hkv * hd;
    a.max_len = max_len;
    a.scale = 1.0f / sqrtf((float)hd);
    static DecodeTable dt;
    /* all appends first: a new token attends to the new tokens before it */
    for (int pass = 0; pass < 2; pass++) {
        for (int s0 = 0; s0 < n_seqs; s0 += DEC_MAX_SEQS) {
            int n = n_seqs - s0 < DEC_MAX_SEQS ? n_seqs - s0 : DEC_MAX_SEQS;
            dt.n = n;
            for (int s = 0; s < n; s++) {
                dt.first[s] = seq_start[s0 + s];
                dt.slot[s] = slots[s0 + s];
                dt.past[s] = past[s0 + s];
            }
            dt.first[n] = seq_start[s0 + n];
            if (pass == 0) {
                kv_append_kernel<<<n, 256>>>(dt, a);
                if (LAUNCH_CHECK("kv_append_kernel")) return;
            } else {
                decode_attn_kernel<<<dim3(n, Hq), 128>>>(dt, a);
                if (LAUNCH_CHECK("decode_attn_kernel")) return;
            }
        }
    }
}
