/* matmul_quant.c: see matmul_quant.h for the design.
 *
 * The quantised input: row i, block b (nb = C / 32 blocks a row) is
 *   aq[(i*nb + b)*32 ..] 32 int8 codes, ad[i*nb + b] its scale,
 *   as[(i*nb + b)*2 + h] ad * (sum of the codes of half h: inputs 0..15,
 *   16..31),
 * so the weight offsets m (one per half) contribute the dot product of the
 * row's 2 nb offsets with as, done once per row and input after the
 * blocks (8 blocks' halves per vector op, not one block per op). */
#include "matmul_quant.h"

#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"
#include "util.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MQ_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define MQ_512 1 /* the K-quants' kernel (forward512) */
#endif
#endif

#define MQ_INLINE static inline __attribute__((always_inline))

/* Input rows each decoded weight block serves at once: 2 x 8 accumulators
 * fit AVX-512VL's 32 vector registers beside the block (AVX2's 16 hold 2 x 4). */
#if defined(__AVX512VL__)
#define MQ_NX 8
#else
#define MQ_NX 4
#endif

int mquant_has_int8(int t) {
#ifdef MQ_AVX2
    return t == QUANT_Q4_0 || t == QUANT_Q4_1 || t == QUANT_Q5_0 || t == QUANT_Q5_1 || t == QUANT_Q8_0 ||
           t == QUANT_Q4_K || t == QUANT_Q5_K || t == QUANT_Q6_K;
#else
    (void)t;
    return 0;
#endif
}

/* Below ~64k multiply-adds a fork/join costs more than it saves. */
static int threads_for(int N, int C, int OC) {
    return omp_in_parallel() || (double)N * C * OC < 65536.0 ? 1 : omp_get_max_threads();
}

/* Rows [lo, hi) of the weight for thread t of n: contiguous slices. */
static void slice_of(int OC, int t, int n, int *lo, int *hi) {
    *lo = (int)((long)OC * t / n);
    *hi = (int)((long)OC * (t + 1) / n);
}

/* The fp32 path: each weight row dequantised into buf and dotted with the
 * fp32 inputs (types without an integer kernel, or no AVX2). */
static int fallback(float *out, const float *inp, const void *wq, int qtype, const float *bias, int N, int C, int OC) {
    int nth = threads_for(N, C, OC), failed = 0;
    size_t rb = quant_row_bytes((QuantType)qtype, C);
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        float *buf = align_alloc((size_t)C * sizeof(float));
        int lo, hi;
        slice_of(OC, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        if (!failed)
            for (int o = lo; o < hi; o++) {
                quant_dequantize_rows((QuantType)qtype, (const uint8_t *)wq + (size_t)o * rb, buf, 1, C);
                for (int i = 0; i < N; i++) {
                    const float *x = inp + (size_t)i * C;
                    float s = 0.0f;
                    for (int k = 0; k < C; k++) s += buf[k] * x[k];
                    out[(size_t)i * OC + o] = bias ? s + bias[o] : s;
                }
            }
        align_free(buf);
    }
    return failed ? align_errorf("out of memory for a row of %d inputs", C) : 0;
}

#ifdef MQ_AVX2

MQ_INLINE float f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    return quant_f16_to_f32(h);
#endif
}

/* 8 int32 lanes; lanes 0-3 sum to the dot product of bytes 0..15 (u
 * unsigned, a signed), lanes 4-7 to that of bytes 16..31. */
MQ_INLINE __m256i dot_u8s8_acc(__m256i acc, __m256i u, __m256i a) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, a);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, u, a);
#else
    /* 16-bit products (exact: 255 * 128 * 2 fits an int32 pair sum) */
    __m256i lo = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(u)),
                                   _mm256_cvtepi8_epi16(_mm256_castsi256_si128(a)));
    __m256i hi = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(u, 1)),
                                   _mm256_cvtepi8_epi16(_mm256_extracti128_si256(a, 1)));
    __m128i l4 = _mm_add_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
    __m128i h4 = _mm_add_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
    return _mm256_add_epi32(acc, _mm256_set_m128i(h4, l4));
#endif
}

MQ_INLINE __m256i dot_u8s8(__m256i u, __m256i a) { return dot_u8s8_acc(_mm256_setzero_si256(), u, a); }

/* Types whose offset is a whole number of steps, m = -K d (Q4_0: 8,
 * Q5_0: 16, Q8_0: 128): the offset's term is then integer, -K times the
 * sum of the input codes, and starts the block's integer dot product
 * (the input's "pre" vector, per lane -K times its 4 codes), so these
 * blocks need no offsets pass and one fewer rounding. 0 for the others. */
#define MQ_SYM_K(T) ((T) == QUANT_Q4_0 ? 8 : (T) == QUANT_Q5_0 ? 16 : (T) == QUANT_Q8_0 ? 128 : 0)

MQ_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Row i of the input into its int8 blocks: scale absmax / 127, codes
 * rounded to nearest even (cvtps), as ggml's quantize_row_q8_0. */
static void quantize_row(const float *x, int nb, int8_t *aq, float *ad, float *as, __m256i *ap, int K) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i ones = _mm256_set1_epi8(1);
    for (int b = 0; b < nb; b++, x += 32) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16),
               v3 = _mm256_loadu_ps(x + 24);
        __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                  _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4), d = amax / 127.0f;
        __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
        /* packs work within 128-bit lanes; the permutation restores input order */
        __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        q = _mm256_permutevar8x32_epi32(q, perm);
        _mm256_storeu_si256((__m256i *)(aq + (size_t)b * 32), q);
        ad[b] = d;
        __m256i sum = dot_u8s8(ones, q); /* lanes 0-3: inputs 0..15, 4-7: 16..31 */
        if (K) ap[b] = _mm256_mullo_epi32(sum, _mm256_set1_epi32(-K));
        __m128i h = _mm_hadd_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        h = _mm_hadd_epi32(h, h); /* [lo, hi, lo, hi] */
        as[2 * b] = d * (float)_mm_cvtsi128_si32(h);
        as[2 * b + 1] = d * (float)_mm_extract_epi32(h, 1);
    }
}

/* One decoded 32-input weight block: x = u * d + m, d per lane (lanes
 * 0-3: inputs 0..15, lanes 4-7: inputs 16..31), m per half. */
typedef struct {
    __m256i u;
    __m256 d;
    float m0, m1;
} WBlock;

/* Low nibbles: inputs 0..15, high: 16..31. The 16 bytes are loaded into
 * both halves (a broadcast load, no shuffle) and the upper half shifted:
 * two vector operations, not four. */
MQ_INLINE __m256i nibbles16(const uint8_t *qs) {
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
}

/* nib with 0x10 added to byte j where bit j of the 32 bits at p is set
 * (Q5_0/Q5_1's fifth bits; nib < 16, so the add is an or). AVX-512BW
 * takes the bits as a byte mask in one masked add; AVX2 spreads them with
 * a shuffle and a compare. */
MQ_INLINE __m256i add_bit4(__m256i nib, const uint8_t *p) {
    uint32_t x;
    memcpy(&x, p, 4);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    return _mm256_mask_add_epi8(nib, (__mmask32)x, nib, _mm256_set1_epi8(0x10));
#else
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                            3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), spread);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_or_si256(nib, _mm256_and_si256(v, _mm256_set1_epi8(0x10)));
#endif
}

MQ_INLINE void scale_min_k4(int j, const uint8_t *q, int *d, int *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

MQ_INLINE __m256 halves(float lo, float hi) { return _mm256_setr_ps(lo, lo, lo, lo, hi, hi, hi, hi); }

/* Block b (of 32 inputs) of a row of type T. */
MQ_INLINE void decode(int T, const uint8_t *row, int b, WBlock *w) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    switch (T) {
    case QUANT_Q4_0: {
        const uint8_t *s = row + (size_t)b * 18;
        float d = f16(s);
        w->u = nibbles16(s + 2), w->d = _mm256_set1_ps(d), w->m0 = w->m1 = -8.0f * d;
        break;
    }
    case QUANT_Q4_1: {
        const uint8_t *s = row + (size_t)b * 20;
        w->u = nibbles16(s + 4), w->d = _mm256_set1_ps(f16(s)), w->m0 = w->m1 = f16(s + 2);
        break;
    }
    case QUANT_Q5_0: {
        const uint8_t *s = row + (size_t)b * 22;
        float d = f16(s);
        w->u = add_bit4(nibbles16(s + 6), s + 2);
        w->d = _mm256_set1_ps(d), w->m0 = w->m1 = -16.0f * d;
        break;
    }
    case QUANT_Q5_1: {
        const uint8_t *s = row + (size_t)b * 24;
        w->u = add_bit4(nibbles16(s + 8), s + 4);
        w->d = _mm256_set1_ps(f16(s)), w->m0 = w->m1 = f16(s + 2);
        break;
    }
    case QUANT_Q8_0: {
        const uint8_t *s = row + (size_t)b * 34;
        float d = f16(s);
        w->u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(s + 2)), _mm256_set1_epi8((char)0x80));
        w->d = _mm256_set1_ps(d), w->m0 = w->m1 = -128.0f * d;
        break;
    }
    case QUANT_Q4_K:
    case QUANT_Q5_K: {
        int five = T == QUANT_Q5_K, j = b & 7, sc, mn;
        const uint8_t *s = row + (size_t)(b >> 3) * (five ? 176 : 144);
        scale_min_k4(j, s + 4, &sc, &mn);
        __m256i v = _mm256_loadu_si256((const __m256i *)(s + (five ? 48 : 16) + 32 * (j >> 1)));
        w->u = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(v, 4) : v, m4);
        if (five) {
            const __m256i bit = _mm256_set1_epi8((char)(1 << j));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(s + 16));
#if defined(__AVX512BW__) && defined(__AVX512VL__)
            w->u = _mm256_mask_add_epi8(w->u, _mm256_test_epi8_mask(qh, bit), w->u, _mm256_set1_epi8(0x10));
#else
            __m256i h = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
            w->u = _mm256_or_si256(w->u, _mm256_and_si256(h, _mm256_set1_epi8(0x10)));
#endif
        }
        w->d = _mm256_set1_ps(f16(s) * sc), w->m0 = w->m1 = -f16(s + 2) * mn;
        break;
    }
    default: { /* QUANT_Q6_K: 16-input sub-blocks, codes 0..63, x = d * sc * (u - 32) */
        int j = b & 7, h = j >> 2, k = j & 3;
        const uint8_t *s = row + (size_t)(b >> 3) * 210, *ql = s + 64 * h, *qh = s + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(s + 192) + 8 * h + 2 * k;
        __m256i lo = _mm256_loadu_si256((const __m256i *)(ql + 32 * (k & 1)));
        lo = _mm256_and_si256(k >> 1 ? _mm256_srli_epi16(lo, 4) : lo, m4);
        __m256i hi = _mm256_loadu_si256((const __m256i *)qh);
        hi = _mm256_and_si256(_mm256_srli_epi16(hi, 2 * k), _mm256_set1_epi8(3));
        w->u = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
        float d = f16(s + 208);
        w->d = halves(d * sc[0], d * sc[1]);
        w->m0 = -32.0f * d * sc[0], w->m1 = -32.0f * d * sc[1];
        break;
    }
    }
}

/* out[(i0+i)*OC + o], i < NX (a constant after inlining, so the
 * accumulators stay in registers): one weight row against NX input rows,
 * each block decoded once for all of them. */
MQ_INLINE void block_dot(int T, int NX, const uint8_t *row, int b, const int8_t *aq, const float *ad,
                         const __m256i *ap, int i0, int nb, float *mrow, __m256 *acc) {
    WBlock w;
    decode(T, row, b, &w);
    if (!MQ_SYM_K(T)) mrow[2 * b] = w.m0, mrow[2 * b + 1] = w.m1;
#pragma GCC unroll 8
    for (int i = 0; i < NX; i++) {
        size_t ib = (size_t)(i0 + i) * nb + b;
        __m256i a = _mm256_loadu_si256((const __m256i *)(aq + ib * 32));
        __m256 s = _mm256_cvtepi32_ps(MQ_SYM_K(T) ? dot_u8s8_acc(ap[ib], w.u, a) : dot_u8s8(w.u, a));
        acc[i] = _mm256_fmadd_ps(s, _mm256_mul_ps(w.d, _mm256_broadcast_ss(ad + ib)), acc[i]);
    }
}

/* Even and odd blocks go to separate accumulators: one chain of FMAs would
 * make a one-row call wait on the FMA latency every block. The order is
 * the same whatever NX, so a row's result does not depend on N. */
MQ_INLINE void group(int T, int NX, float *out, const uint8_t *row, const int8_t *aq, const float *ad,
                     const float *as, const __m256i *ap, const float *bias, int i0, int nb, int OC, int o,
                     float *mrow) {
    __m256 acc0[MQ_NX], acc1[MQ_NX];
#pragma GCC unroll 8
    for (int i = 0; i < NX; i++) acc0[i] = acc1[i] = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        block_dot(T, NX, row, b, aq, ad, ap, i0, nb, mrow, acc0);
        block_dot(T, NX, row, b + 1, aq, ad, ap, i0, nb, mrow, acc1);
    }
    if (b < nb) block_dot(T, NX, row, b, aq, ad, ap, i0, nb, mrow, acc0);
#pragma GCC unroll 8
    for (int i = 0; i < NX; i++) { /* the offsets: mrow . as over the 2 nb halves */
        const float *ai = as + (size_t)(i0 + i) * nb * 2;
        __m256 m = _mm256_setzero_ps();
        int k = MQ_SYM_K(T) ? 2 * nb : 0; /* the offsets are in the integer dot products */
        for (; k + 8 <= 2 * nb; k += 8) m = _mm256_fmadd_ps(_mm256_loadu_ps(mrow + k), _mm256_loadu_ps(ai + k), m);
        float r = hsum8(_mm256_add_ps(_mm256_add_ps(acc0[i], acc1[i]), m));
        for (; k < 2 * nb; k++) r += mrow[k] * ai[k];
        out[(size_t)(i0 + i) * OC + o] = bias ? r + bias[o] : r;
    }
}

/* out[i*OC + o] for weight rows [lo, hi) and all N input rows, type T.
 * Weight rows go in tiles of MQ_OT, each tile against one group of input
 * rows after the other: a group's quantised inputs (8 rows of C = 1536:
 * 29 KB) then stay in L1 across the tile's rows, instead of all N rows'
 * (0.8 MB at a 256-token prefill) streaming from L2 for every weight row;
 * the tile (16 KB) is what is re-read, from L2. Every output is computed
 * as before, so the results do not change. Below 4 groups (a batch of 16
 * decoding) the weight is streamed row by row as before: measured faster
 * there (Q8_0 at batch 16: 8%). */
#ifndef MQ_OT
#define MQ_OT 16
#endif
/* The walk both kernels (slice, slice512) share over one thread's output
 * rows lo..hi: GROUP(nx, row, i0, o) computes inputs i0..i0+nx-1 of output
 * o from its weight row; inputs come in groups of MQ_NX, then one of 4,
 * then the last 1-3. A macro so that nx stays a constant in each call of
 * the always-inline kernels. */
#define MQ_TAIL(GROUP, row, i, o)                                                                                      \
    do {                                                                                                               \
        if (MQ_NX > 4 && N - (i) >= 4) GROUP(4, row, i, o), (i) += 4;                                                  \
        switch (N - (i)) {                                                                                             \
        case 3: GROUP(3, row, i, o); break;                                                                            \
        case 2: GROUP(2, row, i, o); break;                                                                            \
        case 1: GROUP(1, row, i, o); break;                                                                            \
        default: break;                                                                                                \
        }                                                                                                              \
    } while (0)
#define MQ_SLICE_WALK(GROUP)                                                                                           \
    do {                                                                                                               \
        if (N < 4 * MQ_NX) { /* row by row */                                                                          \
            for (int o = lo; o < hi; o++) {                                                                            \
                int i0 = 0;                                                                                            \
                for (; i0 + MQ_NX <= N; i0 += MQ_NX) GROUP(MQ_NX, wq + (size_t)o * rb, i0, o);                         \
                MQ_TAIL(GROUP, wq + (size_t)o * rb, i0, o);                                                            \
            }                                                                                                          \
            break;                                                                                                     \
        }                                                                                                              \
        for (int t = lo; t < hi; t += MQ_OT) {                                                                         \
            int te = hi - t < MQ_OT ? hi : t + MQ_OT, i0 = 0;                                                          \
            for (; i0 + MQ_NX <= N; i0 += MQ_NX)                                                                       \
                for (int o = t; o < te; o++) GROUP(MQ_NX, wq + (size_t)o * rb, i0, o);                                 \
            for (int o = t; o < te; o++) {                                                                             \
                int i = i0;                                                                                            \
                MQ_TAIL(GROUP, wq + (size_t)o * rb, i, o);                                                             \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

MQ_INLINE void slice(int T, float *out, const uint8_t *wq, size_t rb, const int8_t *aq, const float *ad,
                     const float *as, const __m256i *ap, const float *bias, int N, int nb, int OC, int lo, int hi,
                     float *mrow) {
#define MQ_GROUP(nx, row, i, o) group(T, nx, out, row, aq, ad, as, ap, bias, i, nb, OC, o, mrow)
    MQ_SLICE_WALK(MQ_GROUP);
#undef MQ_GROUP
}

#ifdef MQ_512
/* The K-quants' AVX-512 kernel: a super-block's (256 inputs) scales are
 * unpacked once, with vector ops, for its 8 blocks, and two 32-input blocks
 * share a 512-bit vector (block b in lanes 0-7, b + 1 in lanes 8-15): Q4_K
 * and Q5_K pairs are the two nibbles of the same 32 bytes, Q6_K's the
 * same nibble of 64 consecutive bytes. (On Zen 4 a 512-bit op costs two
 * 256-bit ones, so for the 32-input types, whose decoding is already a few
 * ops, the 256-bit kernel above is as fast or faster and stays theirs.)
 * The quantised input keeps, per block of row i (ib = i * nb + b):
 *   aq[ib*32 ..]  32 int8 codes;
 *   ap[ib*8 ..]   -K times the sum of each 4 codes (the dot product's start);
 *   a8[ib*8 ..]   its scale, 8 times (a block pair's 16 lane scales are
 *                 one load);
 *   asb[ib]       its scale times the sum of its codes (the offsets' term).
 * Q6_K's offset, x = d sc (u - 32), is 32 whole steps of each 16-input
 * sub-block's scale, so it folds into the integer dot product (K = 32) and
 * Q6_K needs no offsets pass; Q4_K/Q5_K keep one float m per block
 * (-dmin mn), dotted with asb once per row and input. */

#define MQ5_SYM_K(T) ((T) == QUANT_Q6_K ? 32 : 0)
#define MQ_KQUANT(T) ((T) == QUANT_Q4_K || (T) == QUANT_Q5_K || (T) == QUANT_Q6_K)

static void quantize_row512(const float *x, int nb, int8_t *aq, int32_t *ap, float *a8, float *asb, int K) {
    const __m256i ones = _mm256_set1_epi8(1);
    for (int b = 0; b < nb; b++, x += 32) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))), d = amax / 127.0f;
        __m512 id = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        /* |x id| <= 127 after rounding (to nearest even, as ggml), so the
         * saturating narrowing is exact */
        __m128i q0 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, id)));
        __m128i q1 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, id)));
        __m256i q = _mm256_set_m128i(q1, q0);
        _mm256_storeu_si256((__m256i *)(aq + (size_t)b * 32), q);
        __m256i sum = dot_u8s8(ones, q); /* 8 lanes: the sums of 4 codes */
        _mm256_storeu_si256((__m256i *)(ap + (size_t)b * 8), _mm256_mullo_epi32(sum, _mm256_set1_epi32(-K)));
        _mm256_storeu_ps(a8 + (size_t)b * 8, _mm256_set1_ps(d));
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 1));
        asb[b] = d * (float)_mm_cvtsi128_si32(h);
    }
}

/* [0] x 8, [1] x 8 */
#define MQ_IDX01 _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)

/* A K-quant super-block's (256 inputs, blocks 8 sb .. 8 sb + 7) scales,
 * once for its 4 block pairs: Q4_K/Q5_K d sc_j in lanes j of sc (and
 * -dmin mn_j into m[8 sb + j]); Q6_K d sc_k of its 16 sub-blocks. */
MQ_INLINE __m512 kscales(int T, const uint8_t *s, float *m) {
    if (T == QUANT_Q6_K) {
        __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(s + 192))));
        return _mm512_mul_ps(sc, _mm512_set1_ps(f16(s + 208)));
    }
    /* 12 bytes: 6-bit scales and mins of sub-blocks 0-3 in the low bits of
     * bytes 0-3 / 4-7; those of 4-7 as nibbles of bytes 8-11 (scale low,
     * min high) with their top 2 bits in bytes 0-3 / 4-7's top bits */
    uint32_t a0, a1, a2;
    memcpy(&a0, s + 4, 4), memcpy(&a1, s + 8, 4), memcpy(&a2, s + 12, 4);
    uint32_t sc_lo = a0 & 0x3F3F3F3Fu, mn_lo = a1 & 0x3F3F3F3Fu;
    uint32_t sc_hi = (a2 & 0x0F0F0F0Fu) | ((a0 >> 6) & 0x03030303u) << 4;
    uint32_t mn_hi = ((a2 >> 4) & 0x0F0F0F0Fu) | ((a1 >> 6) & 0x03030303u) << 4;
    __m128i v = _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi);
    __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); /* 8 scales, 8 mins */
    __m512 dm = _mm512_insertf32x8(_mm512_set1_ps(f16(s)), _mm256_set1_ps(-f16(s + 2)), 1);
    f = _mm512_mul_ps(f, dm);
    _mm256_storeu_ps(m, _mm512_extractf32x8_ps(f, 1));
    return f;
}

/* Pair p (blocks 2p, 2p + 1) of the K-quant super-block at s. */
MQ_INLINE void kdecode2(int T, const uint8_t *s, int p, __m512 sc, __m512i *u, __m512 *d) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    if (T == QUANT_Q6_K) { /* blocks 4h + k, k = 2 (p & 1) + (0, 1): ql nibble k >> 1 of bytes 32 (k & 1) .., qh bits 2k */
        int h = p >> 1, hi = p & 1;
        __m512i lo = _mm512_loadu_si512((const void *)(s + 64 * h));
        lo = _mm512_and_si512(hi ? _mm512_srli_epi16(lo, 4) : lo, m4);
        __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(s + 128 + 32 * h)));
        q = _mm512_srlv_epi64(q, hi ? _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6) : _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2));
        *u = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(q, _mm512_set1_epi8(3)), 4));
        /* sub-blocks 4p .. 4p + 3, 4 lanes each */
        __m512i idx = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                       _mm512_set1_epi32(4 * p));
        *d = _mm512_permutexvar_ps(idx, sc);
        return;
    }
    int five = T == QUANT_Q5_K; /* 32 bytes qs[32 p ..]: low nibbles block 2p, high 2p + 1 */
    __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(s + (five ? 48 : 16) + 32 * p)));
    *u = _mm512_and_si512(_mm512_srlv_epi64(q, _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4)), m4);
    if (five) { /* bit j of qh byte k: input k of block j */
        __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(s + 16)));
        __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << 2 * p)), _mm256_set1_epi8((char)(2 << 2 * p)), 1);
        *u = _mm512_mask_add_epi8(*u, _mm512_test_epi8_mask(qh, bit), *u, _mm512_set1_epi8(0x10));
    }
    *d = _mm512_permutexvar_ps(_mm512_add_epi32(MQ_IDX01, _mm512_set1_epi32(2 * p)), sc);
}

/* A decoded pair (blocks b, b + 1) against NX input rows. */
MQ_INLINE void pair_dot(int T, int NX, __m512i u, __m512 d, int b, const int8_t *aq, const int32_t *ap,
                        const float *a8, int i0, int nb, __m512 *acc) {
#pragma GCC unroll 8
    for (int i = 0; i < NX; i++) {
        size_t ib = (size_t)(i0 + i) * nb + b;
        __m512i a = _mm512_loadu_si512((const void *)(aq + ib * 32));
        __m512i s0 = MQ5_SYM_K(T) ? _mm512_loadu_si512((const void *)(ap + ib * 8)) : _mm512_setzero_si512();
        __m512 s = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(s0, u, a));
        acc[i] = _mm512_fmadd_ps(s, _mm512_mul_ps(d, _mm512_loadu_ps(a8 + ib * 8)), acc[i]);
    }
}

/* One weight row against NX input rows (the order of operations per row
 * is the same whatever NX, so a row's result does not depend on N). */
MQ_INLINE void group512(int T, int NX, float *out, const uint8_t *row, const int8_t *aq, const int32_t *ap,
                        const float *a8, const float *asb, const float *bias, int i0, int nb, int OC, int o,
                        float *mrow) {
    __m512 acc[MQ_NX];
#pragma GCC unroll 8
    for (int i = 0; i < NX; i++) acc[i] = _mm512_setzero_ps();
    __m512i u;
    __m512 d;
    size_t sbb = T == QUANT_Q4_K ? 144 : T == QUANT_Q5_K ? 176 : 210;
    for (int sb = 0; sb < nb / 8; sb++) {
        const uint8_t *s = row + sb * sbb;
        __m512 sc = kscales(T, s, mrow + 8 * sb);
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            kdecode2(T, s, p, sc, &u, &d);
            pair_dot(T, NX, u, d, 8 * sb + 2 * p, aq, ap, a8, i0, nb, acc);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < NX; i++) {
        __m512 v = acc[i];
        if (!MQ5_SYM_K(T)) { /* the offsets: mrow . asb over the row's blocks */
            const float *ai = asb + (size_t)(i0 + i) * nb;
            for (int k = 0; k < nb; k += 16) {
                __mmask16 k16 = nb - k >= 16 ? 0xFFFF : (__mmask16)((1u << (nb - k)) - 1);
                v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k16, mrow + k), _mm512_maskz_loadu_ps(k16, ai + k), v);
            }
        }
        float r = _mm512_reduce_add_ps(v);
        out[(size_t)(i0 + i) * OC + o] = bias ? r + bias[o] : r;
    }
}

/* As slice: tiles of MQ_OT weight rows from 4 input groups on. */
MQ_INLINE void slice512(int T, float *out, const uint8_t *wq, size_t rb, const int8_t *aq, const int32_t *ap,
                        const float *a8, const float *asb, const float *bias, int N, int nb, int OC, int lo, int hi,
                        float *mrow) {
#define MQ_GROUP(nx, row, i, o) group512(T, nx, out, row, aq, ap, a8, asb, bias, i, nb, OC, o, mrow)
    MQ_SLICE_WALK(MQ_GROUP);
#undef MQ_GROUP
}

static int forward512(float *out, const float *inp, const void *wq, int qtype, const float *bias, int N, int C,
                      int OC) {
    int nb = C / 32;
    size_t nblk = (size_t)N * nb;
    int8_t *aq = align_alloc(nblk * 32);
    int32_t *ap = align_alloc(nblk * 8 * sizeof(int32_t));
    float *a8 = align_alloc(nblk * 8 * sizeof(float)), *asb = align_alloc(nblk * sizeof(float));
    if (!aq || !ap || !a8 || !asb) {
        align_free(aq), align_free(ap), align_free(a8), align_free(asb);
        return align_errorf("out of memory for %d quantised input rows", N);
    }
    size_t rb = quant_row_bytes((QuantType)qtype, C);
    int K = MQ5_SYM_K(qtype), nth = threads_for(N, C, OC), failed = 0;
#pragma omp parallel num_threads(nth) if (nth > 1) reduction(| : failed)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++)
            quantize_row512(inp + (size_t)i * C, nb, aq + (size_t)i * C, ap + (size_t)i * nb * 8,
                            a8 + (size_t)i * nb * 8, asb + (size_t)i * nb, K);
        int lo, hi;
        slice_of(OC, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        const uint8_t *w = wq;
        float *mrow = align_alloc((size_t)(nb + 8) * sizeof(float)); /* the row's offsets */
        if (!mrow) lo = hi = 0, failed = 1;
        switch (qtype) { /* one instance of the kernel per type */
        case QUANT_Q4_K: slice512(QUANT_Q4_K, out, w, rb, aq, ap, a8, asb, bias, N, nb, OC, lo, hi, mrow); break;
        case QUANT_Q5_K: slice512(QUANT_Q5_K, out, w, rb, aq, ap, a8, asb, bias, N, nb, OC, lo, hi, mrow); break;
        default: slice512(QUANT_Q6_K, out, w, rb, aq, ap, a8, asb, bias, N, nb, OC, lo, hi, mrow); break;
        }
        align_free(mrow);
    }
    align_free(aq), align_free(ap), align_free(a8), align_free(asb);
    return failed ? align_errorf("out of memory for a row's %d offsets", nb) : 0;
}

/* Q8_0's AVX-512 (VNNI) kernel: every block's integer dot product is made
 * whole (one int32 per weight row, input row and block, exact) before it
 * meets a float, and each output is then one chain of FMAs over the row's
 * blocks, in block order, starting from 0:
 *   acc = fma((float)S_b, d_w[b] * d_in[b], acc);   out = acc (+ bias).
 * Integer sums are exact whatever their order, so two kernels that group
 * the work differently give the same bits:
 *  - few input rows (q8_tree): 8 weight rows at a time; the 8 rows' 32-byte
 *    dot products with one input block are summed across lanes by a tree
 *    of horizontal adds into one vector (lane r: weight row r), so the
 *    float work is one vector op per 8 rows, not one per row;
 *  - 8 input rows and more (q8_ileave): the quantised inputs are stored
 *    8 rows interleaved by 4 bytes (a vector holds bytes 4k..4k+3 of 8
 *    rows), and 4 bytes of a weight row broadcast against it: 8 vpdpbusd
 *    make 8 rows' whole block sums, with no decoding and no horizontal
 *    add; 4 weight rows x 16 input rows a step (llama.cpp's repacked
 *    gemm, with the inputs repacked per call instead of the weights at
 *    load: the weights stay the file's blocks).
 * vpdpbusd multiplies unsigned by signed bytes: q8_tree makes the weight
 * unsigned (q + 128) and takes off 128 * sum(a) per input block;
 * q8_ileave stores the input unsigned (a + 128) and takes off 128 * sum(q)
 * per weight block (made once per 4 rows). */

/* Lane r: the sum of the 8 lanes of p[r]. */
MQ_INLINE __m256i hsum8x8(const __m256i *p) {
    __m256i t0 = _mm256_hadd_epi32(p[0], p[1]), t1 = _mm256_hadd_epi32(p[2], p[3]);
    __m256i t2 = _mm256_hadd_epi32(p[4], p[5]), t3 = _mm256_hadd_epi32(p[6], p[7]);
    __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3); /* rows 0-3 / 4-7, halves apart */
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}

MQ_INLINE int32_t hsum_i32(__m256i v) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
    return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 1)));
}

/* Row i: aq its int8 codes, ad its block scales, sa K times the sum of
 * each block's codes. */
static void q8_quantize_row(const float *x, int nb, int8_t *aq, float *ad, int32_t *sa, int K) {
    const __m256i ones = _mm256_set1_epi8(1);
    for (int b = 0; b < nb; b++, x += 32) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        __m512 id = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        __m128i q0 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, id)));
        __m128i q1 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, id)));
        __m256i q = _mm256_set_m128i(q1, q0);
        _mm256_storeu_si256((__m256i *)(aq + (size_t)b * 32), q);
        ad[b] = amax / 127.0f;
        sa[b] = K * hsum_i32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q));
    }
}

/* Weight rows o0 .. o0 + 7 (rows past hi repeat row hi - 1, not stored)
 * against NX input rows from i0; T: Q4_0, Q5_0 or Q8_0. */
#define MQ_BS(T) ((T) == QUANT_Q8_0 ? 34 : (T) == QUANT_Q5_0 ? 22 : 18)
MQ_INLINE void q8_tree(int T, int NX, float *out, const uint8_t *wq, size_t rb, const int8_t *aq, const float *ad,
                       const int32_t *sa, const float *bias, int i0, int nb, int OC, int o0, int hi) {
    const uint8_t *row[8];
    for (int r = 0; r < 8; r++) row[r] = wq + (size_t)(o0 + r < hi ? o0 + r : hi - 1) * rb;
    __m256 acc[4];
#pragma GCC unroll 4
    for (int i = 0; i < NX; i++) acc[i] = _mm256_setzero_ps();
    const int bs = MQ_BS(T);
    /* The 8 rows are one contiguous run of 8 rb bytes; the next group's
     * run is fetched meanwhile, 8 blocks' bytes each block. Without it,
     * batch-1 decoding (every weight from DRAM) ran 3x slower: 8 rows read
     * side by side, 34 bytes at a time, are 8 streams the hardware
     * prefetchers follow badly. Measured on SmolLM2 Q8_0, 64 steps: one
     * group ahead 0.40-0.42 CPU s (the one-row kernel 0.39-0.40), two
     * 0.42, four 0.60, past the slice's end or into L2 only worse. */
#ifndef MQ_PFH
#define MQ_PFH _MM_HINT_T0
#endif
#ifndef MQ_PFD
#define MQ_PFD 1
#endif
    const char *next = (const char *)row[0] + MQ_PFD * 8 * rb;
    int pf = MQ_PFD > 0 && i0 == 0 && o0 + 8 * MQ_PFD < hi; /* within this slice of the weight */
    for (int b = 0; b < nb; b++) {
        if (pf)
            for (int off = b * 8 * bs; off < (b + 1) * 8 * bs; off += 64) _mm_prefetch(next + off, MQ_PFH);
        __m256i u[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            WBlock w;
            decode(T, row[r], b, &w);
            u[r] = w.u;
        }
        __m256 d; /* the 8 rows' block scales */
#ifdef __F16C__
        /* lane by lane with constant lanes, as _mm_insert_epi16 needs (the
         * unrolled loop gives them at -O3, not at -O1: the sanitizer build) */
        __m128i h = _mm_setzero_si128();
        uint16_t x;
#define MQ_SCALE_LANE(r) (memcpy(&x, row[r] + (size_t)b * bs, 2), h = _mm_insert_epi16(h, x, r))
        MQ_SCALE_LANE(0), MQ_SCALE_LANE(1), MQ_SCALE_LANE(2), MQ_SCALE_LANE(3);
        MQ_SCALE_LANE(4), MQ_SCALE_LANE(5), MQ_SCALE_LANE(6), MQ_SCALE_LANE(7);
#undef MQ_SCALE_LANE
        d = _mm256_cvtph_ps(h);
#else
        d = _mm256_setr_ps(f16(row[0] + (size_t)b * bs), f16(row[1] + (size_t)b * bs), f16(row[2] + (size_t)b * bs),
                           f16(row[3] + (size_t)b * bs), f16(row[4] + (size_t)b * bs), f16(row[5] + (size_t)b * bs),
                           f16(row[6] + (size_t)b * bs), f16(row[7] + (size_t)b * bs));
#endif
#pragma GCC unroll 4
        for (int i = 0; i < NX; i++) {
            size_t ib = (size_t)(i0 + i) * nb + b;
            __m256i a = _mm256_loadu_si256((const __m256i *)(aq + ib * 32)), p[8];
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++) p[r] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u[r], a);
            __m256i s = _mm256_sub_epi32(hsum8x8(p), _mm256_set1_epi32(sa[ib]));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(d, _mm256_set1_ps(ad[ib])), acc[i]);
        }
    }
    int nr = hi - o0 < 8 ? hi - o0 : 8;
#pragma GCC unroll 4
    for (int i = 0; i < NX; i++) {
        float v[8];
        _mm256_storeu_ps(v, acc[i]);
        for (int r = 0; r < nr; r++) out[(size_t)(i0 + i) * OC + o0 + r] = bias ? v[r] + bias[o0 + r] : v[r];
    }
}

/* Weight rows o0 .. o0 + 3 (past hi: row hi - 1, not stored) against NG
 * groups of 8 interleaved input rows from group g0. ai: group g, block b,
 * k = 0..7: 32 bytes, bytes 4k..4k+3 of the group's 8 rows, plus 128;
 * a8: the 8 rows' block scales; sw[r * nb + b]: 128 sum(q) of row o0 + r. */
MQ_INLINE void q8_ileave(int NG, float *out, const uint8_t *wq, size_t rb, const uint8_t *ai, const float *a8,
                         const int32_t *sw, const float *bias, int N, int g0, int nb, int OC, int o0, int hi) {
    const uint8_t *row[4];
    for (int r = 0; r < 4; r++) row[r] = wq + (size_t)(o0 + r < hi ? o0 + r : hi - 1) * rb;
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i s[4][2];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) s[r][0] = s[r][1] = _mm256_set1_epi32(-sw[r * nb + b]);
        const uint8_t *a = ai + ((size_t)g0 * nb + b) * 256;
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(a + 32 * k));
            __m256i x1 = NG > 1 ? _mm256_loadu_si256((const __m256i *)(a + (size_t)nb * 256 + 32 * k)) : x0;
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                int32_t wv;
                memcpy(&wv, row[r] + (size_t)b * 34 + 2 + 4 * k, 4);
                __m256i w = _mm256_set1_epi32(wv);
                s[r][0] = _mm256_dpbusd_epi32(s[r][0], x0, w);
                if (NG > 1) s[r][1] = _mm256_dpbusd_epi32(s[r][1], x1, w);
            }
        }
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++) {
            __m256 da = _mm256_loadu_ps(a8 + ((size_t)(g0 + g) * nb + b) * 8);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
                acc[r][g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r][g]),
                                            _mm256_mul_ps(_mm256_set1_ps(f16(row[r] + (size_t)b * 34)), da), acc[r][g]);
        }
    }
    int nr = hi - o0 < 4 ? hi - o0 : 4;
    for (int g = 0; g < NG; g++) {
        int ni = N - 8 * (g0 + g) < 8 ? N - 8 * (g0 + g) : 8;
        for (int r = 0; r < nr; r++) {
            float v[8];
            _mm256_storeu_ps(v, acc[r][g]);
            for (int l = 0; l < ni; l++)
                out[(size_t)(8 * (g0 + g) + l) * OC + o0 + r] = bias ? v[l] + bias[o0 + r] : v[l];
        }
    }
}

/* As q8_ileave, for Q4_0 and Q5_0, whose codes are not whole bytes: the 4
 * rows decoded once into wu (unsigned codes, C a row) and wd (block
 * scales) for all the input groups; the input signed, ap8 its -K sum(a)
 * per row and block (the dot product's start). */
MQ_INLINE void sym_ileave(int NG, float *out, const uint8_t *wu, const float *wd, const int8_t *ai,
                          const float *a8, const int32_t *ap8, const float *bias, int N, int g0, int nb, int OC,
                          int o0, int hi) {
    size_t C = (size_t)nb * 32;
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        size_t gb0 = (size_t)g0 * nb + b, gb1 = gb0 + (NG > 1 ? nb : 0);
        __m256i s[4][2], p0 = _mm256_loadu_si256((const __m256i *)(ap8 + gb0 * 8)),
                         p1 = _mm256_loadu_si256((const __m256i *)(ap8 + gb1 * 8));
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) s[r][0] = p0, s[r][1] = p1;
        const int8_t *a = ai + gb0 * 256;
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(a + 32 * k));
            __m256i x1 = NG > 1 ? _mm256_loadu_si256((const __m256i *)(a + (size_t)nb * 256 + 32 * k)) : x0;
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                int32_t wv;
                memcpy(&wv, wu + r * C + (size_t)b * 32 + 4 * k, 4);
                __m256i w = _mm256_set1_epi32(wv);
                s[r][0] = _mm256_dpbusd_epi32(s[r][0], w, x0);
                if (NG > 1) s[r][1] = _mm256_dpbusd_epi32(s[r][1], w, x1);
            }
        }
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++) {
            __m256 da = _mm256_loadu_ps(a8 + (gb0 + (size_t)g * nb) * 8);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
                acc[r][g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r][g]), _mm256_mul_ps(_mm256_set1_ps(wd[r * nb + b]), da),
                                            acc[r][g]);
        }
    }
    /* the store as q8_ileave's, written out again: a shared helper taking acc
     * by pointer kept it in memory (Q8_0 prefill +20% CPU seconds, measured) */
    int nr = hi - o0 < 4 ? hi - o0 : 4;
    for (int g = 0; g < NG; g++) {
        int ni = N - 8 * (g0 + g) < 8 ? N - 8 * (g0 + g) : 8;
        for (int r = 0; r < nr; r++) {
            float v[8];
            _mm256_storeu_ps(v, acc[r][g]);
            for (int l = 0; l < ni; l++)
                out[(size_t)(8 * (g0 + g) + l) * OC + o0 + r] = bias ? v[l] + bias[o0 + r] : v[l];
        }
    }
}

#ifndef MQ_IL_MIN
#define MQ_IL_MIN 8 /* input rows from which q8_ileave / sym_ileave run */
#endif
/* The types whose offset is K whole steps (MQ_SYM_K: Q4_0, Q5_0, Q8_0),
 * with whole integer block sums (see above). */
MQ_INLINE int forward_sym(int T, float *out, const float *inp, const void *wq, const float *bias, int N, int C,
                          int OC) {
    int nb = C / 32, ng = (N + 7) / 8, il = N >= MQ_IL_MIN, K = MQ_SYM_K(T);
    size_t nblk = (size_t)N * nb, rb = quant_row_bytes((QuantType)T, C), ngb = (size_t)ng * nb;
    int8_t *aq = align_alloc(nblk * 32);
    float *ad = align_alloc(nblk * sizeof(float));
    int32_t *sa = align_alloc(nblk * sizeof(int32_t));
    uint8_t *ai = il ? align_alloc(ngb * 256) : NULL;
    float *a8 = il ? align_alloc(ngb * 8 * sizeof(float)) : NULL;
    int32_t *ap8 = il && T != QUANT_Q8_0 ? align_alloc(ngb * 8 * sizeof(int32_t)) : NULL;
    if (!aq || !ad || !sa || (il && (!ai || !a8)) || (il && T != QUANT_Q8_0 && !ap8)) {
        align_free(aq), align_free(ad), align_free(sa), align_free(ai), align_free(a8), align_free(ap8);
        return align_errorf("out of memory for %d quantised input rows", N);
    }
    /* Q8_0's interleaved input is unsigned (a + 128), the others' signed */
    const uint8_t flip = T == QUANT_Q8_0 ? 0x80 : 0;
    int nth = threads_for(N, C, OC), failed = 0;
#pragma omp parallel num_threads(nth) if (nth > 1) reduction(| : failed)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++)
            q8_quantize_row(inp + (size_t)i * C, nb, aq + (size_t)i * C, ad + (size_t)i * nb, sa + (size_t)i * nb, K);
        if (il) {
#pragma omp for schedule(static)
            for (int g = 0; g < ng; g++) /* rows past N: code 0, scale 0 */
                for (int b = 0; b < nb; b++) {
                    size_t gb = (size_t)g * nb + b;
                    uint8_t *dst = ai + gb * 256;
                    for (int l = 0; l < 8; l++) {
                        int i = 8 * g + l;
                        a8[gb * 8 + l] = i < N ? ad[(size_t)i * nb + b] : 0.0f;
                        if (ap8) ap8[gb * 8 + l] = i < N ? -sa[(size_t)i * nb + b] : 0;
                        for (int k = 0; k < 8; k++)
                            for (int j = 0; j < 4; j++)
                                dst[32 * k + 4 * l + j] =
                                    (uint8_t)((i < N ? aq[(size_t)i * C + 32 * b + 4 * k + j] : 0) ^ flip);
                    }
                }
        }
        int lo, hi;
        slice_of(OC, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        const uint8_t *w = wq;
        /* per 4-row group: Q8_0 128 sum(q) per block; the others the
         * decoded codes and block scales */
        int32_t *sw = align_alloc((size_t)nb * 4 * sizeof(int32_t));
        uint8_t *wu = il && T != QUANT_Q8_0 ? align_alloc((size_t)4 * C) : NULL;
        float *wd = il && T != QUANT_Q8_0 ? align_alloc((size_t)4 * nb * sizeof(float)) : NULL;
        if (!sw || (il && T != QUANT_Q8_0 && (!wu || !wd))) lo = hi = 0, failed = 1;
        if (il) {
            const __m256i ones = _mm256_set1_epi8(1);
            for (int o0 = lo; o0 < hi; o0 += 4) {
                for (int r = 0; r < 4; r++) {
                    const uint8_t *row = w + (size_t)(o0 + r < hi ? o0 + r : hi - 1) * rb;
                    for (int b = 0; b < nb; b++) {
                        if (T == QUANT_Q8_0) {
                            sw[r * nb + b] = 128 * hsum_i32(_mm256_dpbusd_epi32(
                                                       _mm256_setzero_si256(), ones,
                                                       _mm256_loadu_si256((const __m256i *)(row + (size_t)b * 34 + 2))));
                        } else {
                            WBlock wb;
                            decode(T, row, b, &wb);
                            _mm256_storeu_si256((__m256i *)(wu + (size_t)r * C + (size_t)b * 32), wb.u);
                            wd[r * nb + b] = f16(row + (size_t)b * MQ_BS(T));
                        }
                    }
                }
                int g = 0;
                if (T == QUANT_Q8_0) {
                    for (; g + 2 <= ng; g += 2) q8_ileave(2, out, w, rb, ai, a8, sw, bias, N, g, nb, OC, o0, hi);
                    if (g < ng) q8_ileave(1, out, w, rb, ai, a8, sw, bias, N, g, nb, OC, o0, hi);
                } else {
                    const int8_t *as = (const int8_t *)ai;
                    for (; g + 2 <= ng; g += 2) sym_ileave(2, out, wu, wd, as, a8, ap8, bias, N, g, nb, OC, o0, hi);
                    if (g < ng) sym_ileave(1, out, wu, wd, as, a8, ap8, bias, N, g, nb, OC, o0, hi);
                }
            }
        } else {
            for (int o0 = lo; o0 < hi; o0 += 8) {
                int i0 = 0;
                for (; i0 + 4 <= N; i0 += 4) q8_tree(T, 4, out, w, rb, aq, ad, sa, bias, i0, nb, OC, o0, hi);
                switch (N - i0) {
                case 3: q8_tree(T, 3, out, w, rb, aq, ad, sa, bias, i0, nb, OC, o0, hi); break;
                case 2: q8_tree(T, 2, out, w, rb, aq, ad, sa, bias, i0, nb, OC, o0, hi); break;
                case 1: q8_tree(T, 1, out, w, rb, aq, ad, sa, bias, i0, nb, OC, o0, hi); break;
                default: break;
                }
            }
        }
        align_free(sw), align_free(wu), align_free(wd);
    }
    align_free(aq), align_free(ad), align_free(sa), align_free(ai), align_free(a8), align_free(ap8);
    return failed ? align_errorf("out of memory for a row group's %d block sums", 4 * nb) : 0;
}
#endif /* MQ_512 */

int mquant_forward(float *out, const float *inp, const void *wq, int qtype, const float *bias, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return 0;
    if (!mquant_has_int8(qtype) || C % 32) return fallback(out, inp, wq, qtype, bias, N, C, OC);
#ifdef MQ_512
    if (MQ_KQUANT(qtype)) return forward512(out, inp, wq, qtype, bias, N, C, OC);
    /* one instance per type */
    if (qtype == QUANT_Q8_0) return forward_sym(QUANT_Q8_0, out, inp, wq, bias, N, C, OC);
    if (qtype == QUANT_Q5_0) return forward_sym(QUANT_Q5_0, out, inp, wq, bias, N, C, OC);
    if (qtype == QUANT_Q4_0) return forward_sym(QUANT_Q4_0, out, inp, wq, bias, N, C, OC);
#endif
    int nb = C / 32;
    size_t nblk = (size_t)N * nb;
    int8_t *aq = align_alloc(nblk * 32);
    float *ad = align_alloc(nblk * sizeof(float)), *as = align_alloc(nblk * 2 * sizeof(float));
    int K = MQ_SYM_K(qtype);
    __m256i *ap = K ? align_alloc(nblk * sizeof(__m256i)) : NULL;
    if (!aq || !ad || !as || (K && !ap)) {
        align_free(aq), align_free(ad), align_free(as), align_free(ap);
        return align_errorf("out of memory for %d quantised input rows", N);
    }
    size_t rb = quant_row_bytes((QuantType)qtype, C);
    int nth = threads_for(N, C, OC), failed = 0;
#pragma omp parallel num_threads(nth) if (nth > 1) reduction(| : failed)
    {
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++)
            quantize_row(inp + (size_t)i * C, nb, aq + (size_t)i * C, ad + (size_t)i * nb, as + (size_t)i * nb * 2,
                         ap ? ap + (size_t)i * nb : NULL, K);
        int lo, hi;
        slice_of(OC, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        const uint8_t *w = wq;
        float *mrow = align_alloc((size_t)2 * nb * sizeof(float)); /* the row's offsets */
        if (!mrow) lo = hi = 0, failed = 1;
        switch (qtype) { /* one instance of the kernel per type */
        case QUANT_Q4_0: slice(QUANT_Q4_0, out, w, rb, aq, ad, as, ap, bias, N, nb, OC, lo, hi, mrow); break;
        case QUANT_Q4_1: slice(QUANT_Q4_1, out, w, rb, aq, ad, as, ap, bias, N, nb, OC, lo, hi, mrow); break;
        case QUANT_Q5_0: slice(QUANT_Q5_0, out, w, rb, aq, ad, as, ap, bias, N, nb, OC, lo, hi, mrow); break;
        case QUANT_Q5_1: slice(QUANT_Q5_1, out, w, rb, aq, ad, as, ap, bias, N, nb, OC, lo, hi, mrow); break;
        case QUANT_Q8_0: slice(QUANT_Q8_0, out, w, rb, aq, ad, as, ap, bias, N, nb, OC, lo, hi, mrow); break;
        case QUANT_Q4_K: slice(QUANT_Q4_K, out, w, rb, aq, ad, as, ap, bias, N, nb, OC, lo, hi, mrow); break;
        case QUANT_Q5_K: slice(QUANT_Q5_K, out, w, rb, aq, ad, as, ap, bias, N, nb, OC, lo, hi, mrow); break;
        default: slice(QUANT_Q6_K, out, w, rb, aq, ad, as, ap, bias, N, nb, OC, lo, hi, mrow); break;
        }
        align_free(mrow);
    }
    align_free(aq), align_free(ad), align_free(as), align_free(ap);
    return failed ? align_errorf("out of memory for a row's %d offsets", 2 * nb) : 0;
}

#else /* no AVX2: every type through the fp32 row path */

int mquant_forward(float *out, const float *inp, const void *wq, int qtype, const float *bias, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return 0;
    return fallback(out, inp, wq, qtype, bias, N, C, OC);
}

#endif
