/* matmul_small.c: see matmul_small.h for the design.
 *
 * Tile: 4 weight rows x NX input rows (NX = 1..3), 8 columns per step. The
 * 4 rows are adjacent, or, at up to 6 input rows, one from each of 4 far
 * apart parts of the thread's slice (4 memory streams). With NX = 3 that is
 * 12 accumulators, 3 input vectors and one weight vector: all 16 AVX2
 * registers, 7 loads per 12 FMAs, so the FMA units, not the loads, set the
 * pace once the weight tile is in L1, where it stays for all the input
 * tiles while the next one is prefetched.
 *
 * Summation order of one element (fixed, shared by every tile shape and by
 * the portable build): 8 lane sums over the columns C & ~7, reduced as
 * ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) (what two _mm256_hadd_ps and a
 * 128-bit add give), then the columns past C & ~7 one at a time, then the
 * bias. */
#include "matmul_small.h"

#include <omp.h>
#include <stddef.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MSMALL_AVX2 1
#endif

#define MSMALL_INLINE static inline __attribute__((always_inline))

/* The columns past C & ~7 and the bias, added to the lane sum r. */
MSMALL_INLINE float finish(float r, const float *w, const float *x, int C8, int C, const float *bias, int o) {
    for (int k = C8; k < C; k++) r += w[k] * x[k];
    return bias ? r + bias[o] : r;
}

#ifdef MSMALL_AVX2

/* [sum a0, sum a1, sum a2, sum a3], each in the order of the file comment. */
MSMALL_INLINE __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Columns [k0, k1) (multiples of 8) of out[i, o + j*os], j < 4, i < NX:
 * out points at out[0, o] and w at weight row o; x rows are ldx apart, the
 * 4 weight rows ws apart, out rows ldo apart. With pf, each weight row's
 * line pf floats ahead is prefetched every 64 bytes. The 8-lane sums start
 * at zero when k0 == 0, else from part[NX][4][8], and go back there unless
 * k1 is C & ~7, when they are reduced into out: splitting the columns
 * changes nothing in the summation order. */
MSMALL_INLINE void tile4(float *out, int ldo, const float *x, int ldx, const float *w, size_t ws, int C,
                         const float *bias, int o, int os, int NX, int k0, int k1, float *part, int pf) {
    __m256 acc[3][4];
    for (int i = 0; i < NX; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = k0 ? _mm256_load_ps(part + (i * 4 + j) * 8) : _mm256_setzero_ps();
    /* unrolled twice: the prefetch test folds away, 5-10% at 16 rows */
#pragma GCC unroll 2
    for (int k = k0; k < k1; k += 8) {
        if (pf && !(k & 15)) /* every 64 bytes: each row's line pf floats ahead */
            for (int j = 0; j < 4; j++) __builtin_prefetch(w + j * ws + k + pf);
        /* The empty asm statements keep xv and wv in registers: left to
         * itself the compiler folds them into the FMAs as memory operands,
         * 15-16 loads per 12 FMAs, and the loop is load-bound. */
        __m256 xv[3];
        for (int i = 0; i < NX; i++) {
            xv[i] = _mm256_loadu_ps(x + (size_t)i * ldx + k);
            __asm__("" : "+x"(xv[i]));
        }
        for (int j = 0; j < 4; j++) {
            __m256 wv = _mm256_loadu_ps(w + j * ws + k);
            __asm__("" : "+x"(wv));
            for (int i = 0; i < NX; i++) acc[i][j] = _mm256_fmadd_ps(wv, xv[i], acc[i][j]);
        }
    }
    int C8 = C & ~7;
    if (k1 < C8) {
        for (int i = 0; i < NX; i++)
            for (int j = 0; j < 4; j++) _mm256_store_ps(part + (i * 4 + j) * 8, acc[i][j]);
        return;
    }
    for (int i = 0; i < NX; i++) {
        float r[4];
        _mm_storeu_ps(r, hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
        const float *xi = x + (size_t)i * ldx;
        for (int j = 0; j < 4; j++)
            out[(size_t)i * ldo + j * os] = finish(r[j], w + j * ws, xi, C8, C, bias, o + j * os);
    }
}

/* out[i, o] for i < NX: one weight row (the last OC % 4). */
MSMALL_INLINE void tile1(float *out, int ldo, const float *x, int ldx, const float *w, int C, const float *bias,
                         int o, int NX) {
    __m256 acc[3];
    for (int i = 0; i < NX; i++) acc[i] = _mm256_setzero_ps();
    int C8 = C & ~7;
    for (int k = 0; k < C8; k += 8) {
        __m256 wv = _mm256_loadu_ps(w + k);
        for (int i = 0; i < NX; i++) acc[i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (size_t)i * ldx + k), acc[i]);
    }
    for (int i = 0; i < NX; i++) {
        float r[4];
        _mm_storeu_ps(r, hsum4(acc[i], acc[i], acc[i], acc[i]));
        out[(size_t)i * ldo] = finish(r[0], w, x + (size_t)i * ldx, C8, C, bias, o);
    }
}

#else /* portable: the same tiles and summation order in plain C */

MSMALL_INLINE float lanes_sum(const float *l) { return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); }

MSMALL_INLINE void tile4(float *out, int ldo, const float *x, int ldx, const float *w, size_t ws, int C,
                         const float *bias, int o, int os, int NX, int k0, int k1, float *part, int pf) {
    (void)pf;
    float acc[3][4][8];
    for (int i = 0; i < NX; i++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++) acc[i][j][l] = k0 ? part[(i * 4 + j) * 8 + l] : 0.0f;
    for (int k = k0; k < k1; k += 8)
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < NX; i++)
                for (int l = 0; l < 8; l++) acc[i][j][l] += w[j * ws + k + l] * x[(size_t)i * ldx + k + l];
    int C8 = C & ~7;
    if (k1 < C8) {
        for (int i = 0; i < NX; i++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 8; l++) part[(i * 4 + j) * 8 + l] = acc[i][j][l];
        return;
    }
    for (int i = 0; i < NX; i++)
        for (int j = 0; j < 4; j++)
            out[(size_t)i * ldo + j * os] =
                finish(lanes_sum(acc[i][j]), w + j * ws, x + (size_t)i * ldx, C8, C, bias, o + j * os);
}

MSMALL_INLINE void tile1(float *out, int ldo, const float *x, int ldx, const float *w, int C, const float *bias,
                         int o, int NX) {
    float acc[3][8] = {{0}};
    int C8 = C & ~7;
    for (int k = 0; k < C8; k += 8)
        for (int i = 0; i < NX; i++)
            for (int l = 0; l < 8; l++) acc[i][l] += w[k + l] * x[(size_t)i * ldx + k + l];
    for (int i = 0; i < NX; i++) out[(size_t)i * ldo] = finish(lanes_sum(acc[i]), w, x + (size_t)i * ldx, C8, C, bias, o);
}

#endif

/* Input-row tiles: as many 3-row tiles as possible without leaving a 1-row
 * one (16 = 3+3+3+3+2+2): a 1-row tile does 4 FMAs per 5 loads. */
static int row_tiles(int N, int *start, int *rows) {
    if (N == 1) {
        start[0] = 0, rows[0] = 1;
        return 1;
    }
    int T = (N + 2) / 3, n3 = N - 2 * T;
    for (int t = 0, i = 0; t < T; t++) {
        start[t] = i, rows[t] = t < n3 ? 3 : 2;
        i += rows[t];
    }
    return T;
}

/* Up to MSMALL_STREAM_ROWS input rows (at most 2 input tiles), where a step
 * waits mostly on memory. The thread's weight rows are read as
 * MSMALL_STREAMS contiguous parts side by side, one row of each per tile:
 * this machine's memory (and, generally, a core's hardware prefetchers)
 * serves several independent streams much faster than one. Each stream's
 * line 512 bytes ahead is prefetched while the first input tile reads the
 * weight tile; the second finds it in L1. Measured against contiguous tiles
 * over the SmolLM2 linears (medians of 15 alternating runs): 1.47x at one
 * row, 1.26-1.28x at 2-3, 1.15-1.18x at 4-6, level at 8, 0.9x from 12 on. */
#define MSMALL_STREAMS 4 /* = the rows of tile4 */
#define MSMALL_STREAM_ROWS 6
#define MSMALL_STREAM_PREFETCH 128 /* floats; measured 64-256 */
#define MSMALL_TILES ((MSMALL_MAX_ROWS + 2) / 3)
static void slice_streams(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC,
                          int o0, int o1) {
    int C8 = C & ~7, part = (o1 - o0) / MSMALL_STREAMS, start[MSMALL_TILES], rows[MSMALL_TILES];
    int T = row_tiles(N, start, rows);
    size_t ws = (size_t)part * C; /* from one stream's row to the next's */
    for (int o = o0; o < o0 + part; o++) {
        const float *wo = w + (size_t)o * C;
        for (int t = 0; t < T; t++) {
            float *ot = out + (size_t)start[t] * OC + o;
            const float *xt = inp + (size_t)start[t] * C;
            int pf = t == 0 ? MSMALL_STREAM_PREFETCH : 0;
            if (rows[t] == 1) tile4(ot, OC, xt, C, wo, ws, C, bias, o, part, 1, 0, C8, NULL, pf);
            else if (rows[t] == 2) tile4(ot, OC, xt, C, wo, ws, C, bias, o, part, 2, 0, C8, NULL, pf);
            else tile4(ot, OC, xt, C, wo, ws, C, bias, o, part, 3, 0, C8, NULL, pf);
        }
    }
    for (int o = o0 + MSMALL_STREAMS * part; o < o1; o++)
        for (int i = 0; i < N; i++)
            tile1(out + (size_t)i * OC + o, OC, inp + (size_t)i * C, C, w + (size_t)o * C, C, bias, o, 1);
}

/* Weight rows [o0, o1) against all N input rows.
 *
 * Long rows go in column chunks of at most MSMALL_KC, so that a chunk of the
 * weight tile and of an input tile stay in L1 together: at C = 1536 whole
 * rows would not (24 + 18 KiB), and the kernel would wait on L2 (measured
 * 1.3x slower at 16 rows). Shorter rows stay whole: chunks of C = 576 were
 * slower (the 8-lane sums go to memory and back between chunks).
 *
 * The weight tile the next 4 rows make (contiguous) is prefetched a slice
 * per (chunk, input tile) while this one is worked on: the arithmetic takes
 * several times the tile's memory time and, left to the hardware
 * prefetcher, the two barely overlap (1.1-1.2x). */
#define MSMALL_KC 640
static void slice(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC, int o0,
                  int o1) {
    int o = o0, C8 = C & ~7;
    if (N <= MSMALL_STREAM_ROWS) {
        slice_streams(out, inp, w, bias, N, C, OC, o0, o1);
        return;
    }
    if (N <= MSMALL_MAX_ROWS) {
        int start[MSMALL_TILES], rows[MSMALL_TILES];
        float part[MSMALL_TILES][3 * 4 * 8] __attribute__((aligned(32)));
        int T = row_tiles(N, start, rows);
        int nck = C8 > MSMALL_KC ? (C8 + MSMALL_KC - 1) / MSMALL_KC : 1;
        size_t lines = (size_t)4 * C * sizeof(float) / 64, per = (lines + nck * T - 1) / (nck * T);
        for (; o + 4 <= o1; o += 4) {
            const float *wo = w + (size_t)o * C;
            const char *next = (const char *)(wo + (size_t)4 * C);
            int pf = o + 8 <= o1;
            for (int c = 0, step = 0; c < nck; c++) {
                int k0 = C8 / 8 * c / nck * 8, k1 = C8 / 8 * (c + 1) / nck * 8;
                for (int t = 0; t < T; t++, step++) {
                    if (pf)
                        for (size_t l = step * per; l < (step + 1) * per && l < lines; l++) __builtin_prefetch(next + 64 * l);
                    float *ot = out + (size_t)start[t] * OC + o;
                    const float *xt = inp + (size_t)start[t] * C;
                    if (rows[t] == 3) tile4(ot, OC, xt, C, wo, C, C, bias, o, 1, 3, k0, k1, part[t], 0);
                    else tile4(ot, OC, xt, C, wo, C, C, bias, o, 1, 2, k0, k1, part[t], 0);
                }
            }
        }
    }
    for (; o + 4 <= o1; o += 4) { /* N above the tile table: plain order */
        const float *wo = w + (size_t)o * C;
        float *oo = out + o;
        int i = 0;
        for (; i + 3 <= N; i += 3) tile4(oo + (size_t)i * OC, OC, inp + (size_t)i * C, C, wo, C, C, bias, o, 1, 3, 0, C8, NULL, 0);
        if (N - i == 2) tile4(oo + (size_t)i * OC, OC, inp + (size_t)i * C, C, wo, C, C, bias, o, 1, 2, 0, C8, NULL, 0);
        if (N - i == 1) tile4(oo + (size_t)i * OC, OC, inp + (size_t)i * C, C, wo, C, C, bias, o, 1, 1, 0, C8, NULL, 0);
    }
    for (; o < o1; o++) {
        const float *wo = w + (size_t)o * C;
        int i = 0;
        for (; i + 3 <= N; i += 3) tile1(out + (size_t)i * OC + o, OC, inp + (size_t)i * C, C, wo, C, bias, o, 3);
        if (N - i == 2) tile1(out + (size_t)i * OC + o, OC, inp + (size_t)i * C, C, wo, C, bias, o, 2);
        if (N - i == 1) tile1(out + (size_t)i * OC + o, OC, inp + (size_t)i * C, C, wo, C, bias, o, 1);
    }
}

void msmall_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    /* below ~64k multiply-adds a fork/join costs more than it saves */
    int nth = omp_in_parallel() || (double)N * C * OC < 65536.0 ? 1 : omp_get_max_threads();
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        /* contiguous slices of whole 4-row tiles, one per thread */
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int tiles = (OC + 3) / 4;
        int lo = (int)((long)tiles * t / n) * 4, hi = (int)((long)tiles * (t + 1) / n) * 4;
        if (hi > OC) hi = OC;
        if (lo < hi) slice(out, inp, w, bias, N, C, OC, lo, hi);
    }
}
