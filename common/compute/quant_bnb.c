/* quant_bnb.c: NF4 / FP4 with double quantisation, bitsandbytes' scheme
 * (functional.quantize_4bit(blocksize=64, compress_statistics=True)); the
 * row layout is quant.h's. Every constant and every rounding step follows
 * bitsandbytes so that dequantised values are bit for bit its own. */
#include "quant_bnb.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* bitsandbytes computes a*b + c as two roundings; a fused multiply-add
 * would change the last bit */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#define BLK 64
#define GRP 256

/* get_4bit_type("nf4"), by code */
static const float nf4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                              -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                              0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
                              0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
/* the thresholds of bitsandbytes' dQuantizeNF4: code = how many lie below x */
static const float nf4_cut[15] = {-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
                                  -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
                                  -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
                                  0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
                                  0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};
/* dQuantizeFP4: the sign bit, then |x| against these (ascending), giving
 * the codes of the ascending magnitudes 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1 */
static const float fp4_cut[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f};
static const uint8_t fp4_code[8] = {0x0, 0x1, 0x6, 0x7, 0x4, 0x5, 0x2, 0x3};

static float fp4[16], dyn[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* torch.linspace(start, end, steps) in float32 as PyTorch's CPU kernel
 * computes it (what bitsandbytes' map is made with): step and each value
 * in double from both ends towards the middle, except that pairs of vectors
 * of 8 start from one such value and add float multiples of the step.
 * Checked against python3-torch by tests/fixtures/make_nf4_fixtures.py. */
static void linspace_f32(float start, float end, int steps, float *out) {
    double s = start, e = end, step = (e - s) / (steps - 1);
    int half = steps / 2, nvec = steps / 16 * 16; /* its loop takes two vectors at a time */
    for (int b = 0; b < nvec; b += 8) {
        float base = (float)(b < half ? s + step * b : e - step * (steps - b - 1)), fstep = (float)step;
        for (int j = 0; j < 8; j++) {
            volatile float t = (float)j * fstep;
            out[b + j] = base + t;
        }
    }
    for (int i = nvec; i < steps; i++) out[i] = (float)(i < half ? s + step * i : e - step * (steps - i - 1));
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void init_tables(void) {
    static const float fp4_raw[16] = {0, 0.0625f, 8, 12, 4, 6, 2, 3, -0.0f, -0.0625f, -8, -12, -4, -6, -2, -3};
    for (int i = 0; i < 16; i++) fp4[i] = fp4_raw[i] / 12.0f;
    /* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
     * for exponent i, 2^i means of linspace(0.1, 1, 2^i + 1) scaled by
     * 10^(i-6), both signs; then 0 and 1; sorted */
    int n = 0;
    float b[65];
    for (int i = 0; i < 7; i++) {
        int k = (1 << i) + 1;
        linspace_f32(0.1f, 1.0f, k, b);
        float scale = (float)pow(10.0, i - 6);
        for (int j = 0; j + 1 < k; j++) {
            float mean = (b[j] + b[j + 1]) / 2.0f;
            dyn[n++] = scale * mean;
            dyn[n++] = -(scale * mean);
        }
    }
    dyn[n++] = 0.0f;
    dyn[n++] = 1.0f;
    qsort(dyn, 256, sizeof *dyn, cmp_float);
}

const float *quant_bnb_nf4(void) { return nf4; }
const float *quant_bnb_fp4(void) {
    pthread_once(&once, init_tables);
    return fp4;
}
const float *quant_bnb_dynamic(void) {
    pthread_once(&once, init_tables);
    return dyn;
}

static int slots(int64_t cols) { return (int)(cols / BLK / GRP) + 2; }

size_t quant_bnb_row_bytes(int64_t cols) { return 8 + 4 * (size_t)slots(cols) + (size_t)(cols / BLK) + (size_t)(cols / 2); }

static uint8_t code4(int is_fp4, float x) {
    int q = 0;
    if (!is_fp4) {
        while (q < 15 && x > nf4_cut[q]) q++;
        return (uint8_t)q;
    }
    uint8_t sign = x < 0 ? 0x8 : 0x0;
    x = fabsf(x);
    while (q < 7 && x > fp4_cut[q]) q++;
    return (uint8_t)(fp4_code[q] + sign);
}

/* dQuantize: the nearest of the 256 (ascending) map values */
static uint8_t code8(float x) {
    int lo = 0, hi = 255;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (dyn[mid] <= x) lo = mid;
        else hi = mid;
    }
    return (uint8_t)(fabsf(dyn[hi] - x) < fabsf(x - dyn[lo]) ? hi : lo);
}

int quant_bnb_quantize(int is_fp4, const float *x, void *out, int64_t rows, int64_t cols) {
    pthread_once(&once, init_tables);
    int64_t nb = cols / BLK, nblocks = rows * nb, ngroups = (nblocks + GRP - 1) / GRP;
    size_t rb = quant_bnb_row_bytes(cols);
    int K = slots(cols);
    float *absmax = malloc((size_t)nblocks * sizeof(float)), *amax2 = malloc((size_t)ngroups * sizeof(float));
    if (!absmax || !amax2) {
        free(absmax), free(amax2);
        return align_errorf("out of memory quantising a [%lld, %lld] tensor to %s", (long long)rows, (long long)cols,
                            is_fp4 ? "fp4" : "nf4");
    }
    uint8_t *y = out;
    /* 4-bit codes: x * (1 / absmax), as kQuantizeBlockwise scales */
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblocks; b++) {
        const float *xb = x + b * BLK;
        float a = 0.0f;
        for (int j = 0; j < BLK; j++) a = fmaxf(a, fabsf(xb[j]));
        absmax[b] = a;
        /* an all-zero block: bitsandbytes would divide by zero; code 0.0 */
        float inv = a > 0 ? 1.0f / a : 0.0f;
        int64_t r = b / nb, j0 = (b % nb) * BLK;
        uint8_t *q = y + (size_t)r * rb + 8 + 4 * (size_t)K + (size_t)nb + (size_t)j0 / 2;
        for (int j = 0; j < BLK; j += 2)
            q[j / 2] = (uint8_t)(code4(is_fp4, xb[j] * inv) << 4 | code4(is_fp4, xb[j + 1] * inv));
    }
    /* double quantisation: absmax less its mean, groups of 256 in the
     * dynamic map */
    double sum = 0;
    for (int64_t b = 0; b < nblocks; b++) sum += absmax[b];
    float offset = nblocks ? (float)(sum / (double)nblocks) : 0.0f;
    for (int64_t b = 0; b < nblocks; b++) absmax[b] -= offset;
    for (int64_t g = 0; g < ngroups; g++) {
        float a = 0.0f;
        for (int64_t b = g * GRP; b < nblocks && b < (g + 1) * GRP; b++) a = fmaxf(a, fabsf(absmax[b]));
        amax2[g] = a;
    }
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = y + (size_t)r * rb;
        int64_t b0 = r * nb, g0 = b0 / GRP;
        uint32_t phase = (uint32_t)(b0 % GRP);
        memcpy(row, &offset, 4);
        memcpy(row + 4, &phase, 4);
        for (int k = 0; k < K; k++) {
            float v = g0 + k < ngroups ? amax2[g0 + k] : 0.0f;
            memcpy(row + 8 + 4 * k, &v, 4);
        }
        for (int64_t j = 0; j < nb; j++) {
            float a2 = amax2[(b0 + j) / GRP], inv = a2 > 0 ? 1.0f / a2 : 0.0f;
            row[8 + 4 * K + j] = code8(absmax[b0 + j] * inv);
        }
    }
    free(absmax), free(amax2);
    return 0;
}

void quant_bnb_dequantize_rows(int is_fp4, const void *in, float *out, int64_t rows, int64_t cols) {
    const float *cb = is_fp4 ? quant_bnb_fp4() : nf4;
    const float *dm = quant_bnb_dynamic();
    int64_t nb = cols / BLK;
    int K = slots(cols);
    size_t rb = quant_bnb_row_bytes(cols);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)in + (size_t)r * rb;
        float offset, a2[K];
        uint32_t phase;
        memcpy(&offset, row, 4);
        memcpy(&phase, row + 4, 4);
        memcpy(a2, row + 8, 4 * (size_t)K);
        const uint8_t *q8 = row + 8 + 4 * K, *q4 = q8 + nb;
        float *o = out + r * cols;
        for (int64_t j = 0; j < nb; j++) {
            /* dequantize_blockwise(qabsmax, state2), then + offset */
            volatile float scaled = dm[q8[j]] * a2[(phase + j) / GRP];
            float a = scaled + offset;
            const uint8_t *qb = q4 + j * (BLK / 2);
            float *ob = o + j * BLK;
            for (int k = 0; k < BLK / 2; k++) {
                ob[2 * k] = cb[qb[k] >> 4] * a;
                ob[2 * k + 1] = cb[qb[k] & 0xF] * a;
            }
        }
    }
}
