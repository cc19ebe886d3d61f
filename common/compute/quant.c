/* quant.c: ggml's block formats (see quant.h): Q4_0, Q4_1 and Q8_0 both
 * ways, Q5_0, Q5_1 and the K-quants dequantised only. */
#include "quant.h"

/* ggml's reference code rounds every float operation on its own; a fused
 * multiply-add (what -march=native with GCC's default fp-contract=fast
 * makes of x * id + 8.5f) rounds once and can land on the other side of a
 * .5 tie, giving a block llama.cpp's reference quantizer would not. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <float.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "quant_bnb.h"
#include "quant_int4.h"
#include "util.h"

int quant_parse(const char *name, QuantType *out) {
    if (!strcasecmp(name, "q4_0")) *out = QUANT_Q4_0;
    else if (!strcasecmp(name, "q4_1")) *out = QUANT_Q4_1;
    else if (!strcasecmp(name, "q8_0")) *out = QUANT_Q8_0;
    else if (!strcasecmp(name, "nf4")) *out = QUANT_NF4;
    else if (!strcasecmp(name, "fp4")) *out = QUANT_FP4;
    else return align_errorf("unknown quantisation '%s' (expected q4_0, q4_1, q8_0, nf4 or fp4)", name);
    return 0;
}

const char *quant_name(QuantType t) {
    switch (t) {
    case QUANT_Q4_0: return "q4_0";
    case QUANT_Q4_1: return "q4_1";
    case QUANT_Q5_0: return "q5_0";
    case QUANT_Q5_1: return "q5_1";
    case QUANT_Q8_0: return "q8_0";
    case QUANT_Q2_K: return "q2_k";
    case QUANT_Q3_K: return "q3_k";
    case QUANT_Q4_K: return "q4_k";
    case QUANT_Q5_K: return "q5_k";
    case QUANT_Q6_K: return "q6_k";
    case QUANT_NF4: return "nf4";
    case QUANT_FP4: return "fp4";
    case QUANT_I4_G32: return "int4_g32";
    case QUANT_I4_G64: return "int4_g64";
    case QUANT_I4_G128: return "int4_g128";
    case QUANT_I4_ROW: return "int4_per_row";
    case QUANT_I4_G32_ACT: return "int4_g32_act_order";
    case QUANT_I4_G64_ACT: return "int4_g64_act_order";
    case QUANT_I4_G128_ACT: return "int4_g128_act_order";
    default: return "f32";
    }
}

int quant_is_ggml(int t) { return t != QUANT_NONE && quant_block_bytes((QuantType)t) != 0; }
int quant_supported(int t) { return quant_is_ggml(t) || t == QUANT_NF4 || t == QUANT_FP4 || quant_int4_is(t); }

int quant_can_quantize(int t) {
    return t == QUANT_Q4_0 || t == QUANT_Q4_1 || t == QUANT_Q5_0 || t == QUANT_Q8_0 || t == QUANT_Q4_K || t == QUANT_Q6_K ||
           t == QUANT_NF4 || t == QUANT_FP4;
}

int quant_base_type(int t) {
    return t == QUANT_Q4_0 || t == QUANT_Q4_1 || t == QUANT_Q8_0 || t == QUANT_NF4 || t == QUANT_FP4;
}

int quant_block_elems(QuantType t) {
    if (t == QUANT_NF4 || t == QUANT_FP4) return QUANT_BNB_BLOCK;
    if (quant_int4_is(t)) return QUANT_BLOCK; /* a shorter last group is allowed */
    return t >= QUANT_Q2_K && t <= QUANT_Q6_K ? 256 : QUANT_BLOCK;
}

size_t quant_block_bytes(QuantType t) {
    switch (t) {
    case QUANT_Q4_0: return 18;
    case QUANT_Q4_1: return 20;
    case QUANT_Q5_0: return 22;
    case QUANT_Q5_1: return 24;
    case QUANT_Q8_0: return 34;
    case QUANT_Q2_K: return 84;
    case QUANT_Q3_K: return 110;
    case QUANT_Q4_K: return 144;
    case QUANT_Q5_K: return 176;
    case QUANT_Q6_K: return 210;
    default: return 0;
    }
}

size_t quant_row_bytes(QuantType t, int64_t cols) {
    if (t == QUANT_NF4 || t == QUANT_FP4) return quant_bnb_row_bytes(cols);
    if (quant_int4_is(t)) return quant_int4_row_bytes(t, cols);
    return (size_t)(cols / quant_block_elems(t)) * quant_block_bytes(t);
}

float quant_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: normalise */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* Round to nearest even, as ggml's GGML_FP32_TO_FP16 (F16C / the portable
 * bit-twiddling version give the same result). */
uint16_t quant_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000) return (uint16_t)(sign | (absx > 0x7f800000 ? 0x7e00 : 0x7c00));
    if (absx >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
    if (absx < 0x38800000) {                                   /* subnormal half */
        if (absx < 0x33000000) return (uint16_t)sign;          /* below half the smallest */
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)e; /* 14..24 */
        uint32_t half_m = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half_m & 1))) half_m++;
        return (uint16_t)(sign | half_m);
    }
    uint32_t h = ((absx >> 13) - (112u << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static void st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* ggml quantize_row_q4_0_ref */
static void q4_0_block(const float *x, uint8_t *y) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
    const float d = max / -8, id = d ? 1.0f / d : 0.0f;
    st16(y, quant_f32_to_f16(d));
    for (int j = 0; j < 16; j++) {
        float x0 = x[j] * id, x1 = x[16 + j] * id;
        int xi0 = (int8_t)(x0 + 8.5f), xi1 = (int8_t)(x1 + 8.5f);
        if (xi0 > 15) xi0 = 15;
        if (xi1 > 15) xi1 = 15;
        y[2 + j] = (uint8_t)(xi0 | (xi1 << 4));
    }
}

/* ggml quantize_row_q4_1_ref */
static void q4_1_block(const float *x, uint8_t *y) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 15, id = d ? 1.0f / d : 0.0f;
    st16(y, quant_f32_to_f16(d));
    st16(y + 2, quant_f32_to_f16(min));
    for (int j = 0; j < 16; j++) {
        float x0 = (x[j] - min) * id, x1 = (x[16 + j] - min) * id;
        int xi0 = (int8_t)(x0 + 0.5f), xi1 = (int8_t)(x1 + 0.5f);
        if (xi0 > 15) xi0 = 15;
        if (xi1 > 15) xi1 = 15;
        y[4 + j] = (uint8_t)(xi0 | (xi1 << 4));
    }
}

/* ggml quantize_row_q8_0_ref */
static void q8_0_block(const float *x, uint8_t *y) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
    st16(y, quant_f32_to_f16(d));
    for (int j = 0; j < 32; j++) y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* ggml get_scale_min_k4: eight 6-bit scales and mins in 12 bytes */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* ggml quantize_row_q5_0_ref */
static void q5_0_block(const float *x, uint8_t *y) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
    const float d = max / -16, id = d ? 1.0f / d : 0.0f;
    st16(y, quant_f32_to_f16(d));
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        float x0 = x[j] * id, x1 = x[16 + j] * id;
        int xi0 = (int8_t)(x0 + 16.5f), xi1 = (int8_t)(x1 + 16.5f);
        uint8_t u0 = (uint8_t)(xi0 < 31 ? xi0 : 31), u1 = (uint8_t)(xi1 < 31 ? xi1 : 31);
        y[6 + j] = (uint8_t)((u0 & 0x0F) | ((u1 & 0x0F) << 4));
        qh |= ((u0 & 0x10u) >> 4) << j;
        qh |= ((u1 & 0x10u) >> 4) << (j + 16);
    }
    memcpy(y + 2, &qh, 4);
}

/* ggml nearest_int: round half to even through the float mantissa trick */
static int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

#define GROUP_MAX_EPS 1e-15f

/* ggml make_qx_quants (rmse_type 1, no importance weights): signed codes
 * in [-nmax, nmax-1] + nmax, scale searched over 19 candidates */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) amax = ax, max = x[i];
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2, best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml make_qkx2_quants (use_mad false): codes in [0, nmax] with a scale
 * and a min, searched over nstep + 1 candidates */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                              uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; i++) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* ggml quantize_row_q4_K_ref, one super-block */
static void q4_k_block(const float *x, uint8_t *y) {
    uint8_t L[256], Laux[32], *scl = y + 4, *q = y + 16;
    float weights[32], mins[8], scales[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]), lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scl[j] = ls;
            scl[j + 4] = lm;
        } else {
            scl[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scl[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scl[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    uint16_t dh = quant_f32_to_f16(max_scale / 63.f), mh = quant_f32_to_f16(max_min / 63.f);
    st16(y, dh);
    st16(y + 2, mh);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        scale_min_k4(j, scl, &sc, &m);
        const float d = quant_f16_to_f32(dh) * sc;
        if (!d) continue;
        const float dm = quant_f16_to_f32(mh) * m;
        for (int ii = 0; ii < 32; ii++) {
            int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)(l < 0 ? 0 : l > 15 ? 15 : l);
        }
    }
    for (int j = 0; j < 256; j += 64, q += 32)
        for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

/* ggml quantize_row_q6_K_ref, one super-block */
static void q6_k_block(const float *x, uint8_t *y) {
    int8_t L[256], *scl = (int8_t *)(y + 192);
    uint8_t *ql = y, *qh = y + 128;
    float scales[16], max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ib++) {
        const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
        scales[ib] = scale;
        if (fabsf(scale) > max_abs_scale) max_abs_scale = fabsf(scale), max_scale = scale;
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
        memset(y, 0, 210);
        return;
    }
    float iscale = -128.f / max_scale;
    uint16_t dh = quant_f32_to_f16(1 / iscale);
    st16(y + 208, dh);
    for (int ib = 0; ib < 16; ib++) {
        int v = nearest_int(iscale * scales[ib]);
        scl[ib] = (int8_t)(v < 127 ? v : 127);
    }
    for (int j = 0; j < 16; j++) {
        float d = quant_f16_to_f32(dh) * scl[j];
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = nearest_int(x[16 * j + ii] / d);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            L[16 * j + ii] = (int8_t)(l + 32);
        }
    }
    for (int j = 0; j < 256; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
    }
}

int quant_quantize_rows(QuantType t, const float *x, void *out, int64_t rows, int64_t cols) {
    if (t == QUANT_NF4 || t == QUANT_FP4) return quant_bnb_quantize(t == QUANT_FP4, x, out, rows, cols);
    if (!quant_can_quantize(t))
        return align_errorf("align does not quantise to %s (q4_0, q4_1, q5_0, q8_0, q4_k or q6_k)", quant_name(t));
    int ne = quant_block_elems(t);
    if (cols % ne) return align_errorf("%s needs rows of a multiple of %d inputs, not %lld", quant_name(t), ne, (long long)cols);
    size_t bb = quant_block_bytes(t);
    int64_t nb = (int64_t)rows * (cols / ne);
    uint8_t *y = out;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * ne;
        uint8_t *yb = y + b * bb;
        switch (t) {
        case QUANT_Q4_0: q4_0_block(xb, yb); break;
        case QUANT_Q4_1: q4_1_block(xb, yb); break;
        case QUANT_Q5_0: q5_0_block(xb, yb); break;
        case QUANT_Q4_K: q4_k_block(xb, yb); break;
        case QUANT_Q6_K: q6_k_block(xb, yb); break;
        default: q8_0_block(xb, yb);
        }
    }
    return 0;
}

/* ---- dequantisation, one block at a time, as ggml-quants.c's
 * dequantize_row_* (same operations in the same order, so equal floats) */

static void dq_q4_0(const uint8_t *s, float *o) {
    float d = quant_f16_to_f32(ld16(s));
    for (int j = 0; j < 16; j++) {
        o[j] = ((s[2 + j] & 0xF) - 8) * d;
        o[j + 16] = ((s[2 + j] >> 4) - 8) * d;
    }
}

static void dq_q4_1(const uint8_t *s, float *o) {
    float d = quant_f16_to_f32(ld16(s)), m = quant_f16_to_f32(ld16(s + 2));
    for (int j = 0; j < 16; j++) {
        o[j] = (s[4 + j] & 0xF) * d + m;
        o[j + 16] = (s[4 + j] >> 4) * d + m;
    }
}

/* Q5_0 / Q5_1: bit j of the 32-bit qh is the fifth bit of input j. */
static void dq_q5(const uint8_t *s, float *o, int has_min) {
    float d = quant_f16_to_f32(ld16(s)), m = has_min ? quant_f16_to_f32(ld16(s + 2)) : 0.0f;
    const uint8_t *p = s + (has_min ? 4 : 2), *qs = p + 4;
    uint32_t qh;
    memcpy(&qh, p, 4);
    for (int j = 0; j < 16; j++) {
        int x0 = (qs[j] & 0xF) | (((qh >> j) << 4) & 0x10);
        int x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
        if (has_min) {
            o[j] = x0 * d + m;
            o[j + 16] = x1 * d + m;
        } else {
            o[j] = (x0 - 16) * d;
            o[j + 16] = (x1 - 16) * d;
        }
    }
}

static void dq_q8_0(const uint8_t *s, float *o) {
    float d = quant_f16_to_f32(ld16(s));
    for (int j = 0; j < 32; j++) o[j] = (int8_t)s[2 + j] * d;
}

/* block_q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin */
static void dq_q2_k(const uint8_t *s, float *y) {
    const uint8_t *sc = s, *q = s + 16;
    float d = quant_f16_to_f32(ld16(s + 80)), min = quant_f16_to_f32(ld16(s + 82));
    int is = 0;
    for (int n = 0; n < 256; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half = 0; half < 2; half++) {
                int c = sc[is++];
                float dl = d * (c & 0xF), ml = min * (c >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * (int8_t)((q[l + 16 * half] >> shift) & 3) - ml;
            }
        }
        q += 32;
    }
}

/* block_q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales), d */
static void dq_q3_k(const uint8_t *s, float *y) {
    const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
    const uint8_t *hm = s, *q = s + 32;
    float d_all = quant_f16_to_f32(ld16(s + 108));
    uint32_t aux[4];
    memcpy(aux, s + 96, 12);
    uint32_t tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
    int8_t scales[16];
    memcpy(scales, aux, 16);
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < 256; n += 128) {
        for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
            for (int half = 0; half < 2; half++) {
                float dl = d_all * (scales[is++] - 32);
                const uint8_t *qq = q + 16 * half, *hh = hm + 16 * half;
                for (int l = 0; l < 16; l++) *y++ = dl * ((int8_t)((qq[l] >> shift) & 3) - ((hh[l] & m) ? 0 : 4));
            }
        }
        q += 32;
    }
}

/* block_q4_K / block_q5_K: d, dmin, scales[12], (q5: qh[32]), qs[128] */
static void dq_q45_k(const uint8_t *s, float *y, int five) {
    float d = quant_f16_to_f32(ld16(s)), min = quant_f16_to_f32(ld16(s + 2));
    const uint8_t *scales = s + 4, *qh = s + 16, *ql = s + (five ? 48 : 16);
    uint8_t sc, mn, u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
        scale_min_k4(is, scales, &sc, &mn);
        float d1 = d * sc, m1 = min * mn;
        scale_min_k4(is + 1, scales, &sc, &mn);
        float d2 = d * sc, m2 = min * mn;
        if (five) {
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 <<= 2, u2 <<= 2;
        } else {
            for (int l = 0; l < 32; l++) *y++ = d1 * (ql[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (ql[l] >> 4) - m2;
        }
        ql += 32;
    }
}

/* block_q6_K: ql[128], qh[64], int8 scales[16], d */
static void dq_q6_k(const uint8_t *s, float *y) {
    const uint8_t *ql = s, *qh = s + 128;
    const int8_t *sc = (const int8_t *)(s + 192);
    float d = quant_f16_to_f32(ld16(s + 208));
    for (int n = 0; n < 256; n += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128, ql += 64, qh += 32, sc += 8;
    }
}

/* gguf_read_f32 dequantises through this too, so a kept GGUF block and a
 * dequantised import agree bit for bit. */
void quant_dequantize_rows(QuantType t, const void *blocks, float *out, int64_t rows, int64_t cols) {
    if (t == QUANT_NF4 || t == QUANT_FP4) {
        quant_bnb_dequantize_rows(t == QUANT_FP4, blocks, out, rows, cols);
        return;
    }
    if (quant_int4_is(t)) {
        quant_int4_dequantize_rows(t, blocks, out, rows, cols);
        return;
    }
    int ne = quant_block_elems(t);
    size_t bb = quant_block_bytes(t);
    int64_t nb = rows * (cols / ne);
    const uint8_t *src = blocks;
    for (int64_t b = 0; b < nb; b++, src += bb, out += ne) {
        switch (t) {
        case QUANT_Q4_0: dq_q4_0(src, out); break;
        case QUANT_Q4_1: dq_q4_1(src, out); break;
        case QUANT_Q5_0: dq_q5(src, out, 0); break;
        case QUANT_Q5_1: dq_q5(src, out, 1); break;
        case QUANT_Q8_0: dq_q8_0(src, out); break;
        case QUANT_Q2_K: dq_q2_k(src, out); break;
        case QUANT_Q3_K: dq_q3_k(src, out); break;
        case QUANT_Q4_K: dq_q45_k(src, out, 0); break;
        case QUANT_Q5_K: dq_q45_k(src, out, 1); break;
        case QUANT_Q6_K: dq_q6_k(src, out); break;
        default: return;
        }
    }
}

const float *quant_nf4_codebook(void) { return quant_bnb_nf4(); }
const float *quant_fp4_codebook(void) { return quant_bnb_fp4(); }
const float *quant_dynamic_map(void) { return quant_bnb_dynamic(); }

int quant_exact_in_q8_0(int t) { return t == QUANT_Q4_0 || t == QUANT_Q5_0 || t == QUANT_Q8_0; }

/* Q4_0 and Q5_0 codes (q - 8, q - 16) are int8 values under the same fp16
 * scale, so a Q8_0 block holding them dequantises to the same floats. */
int quant_to_q8_0_exact(QuantType t, const void *blocks, void *out, int64_t rows, int64_t cols) {
    if (!quant_exact_in_q8_0(t) || cols % 32)
        return align_errorf("%s blocks of %lld inputs have no exact Q8_0 form", quant_name(t), (long long)cols);
    int64_t nb = rows * (cols / 32);
    size_t bb = quant_block_bytes(t);
    const uint8_t *s = blocks;
    uint8_t *o = out;
    for (int64_t b = 0; b < nb; b++, s += bb, o += 34) {
        int8_t *q = (int8_t *)(o + 2);
        memcpy(o, s, 2); /* the fp16 scale */
        if (t == QUANT_Q8_0) {
            memcpy(q, s + 2, 32);
        } else if (t == QUANT_Q4_0) {
            for (int j = 0; j < 16; j++) q[j] = (int8_t)((s[2 + j] & 0xF) - 8), q[j + 16] = (int8_t)((s[2 + j] >> 4) - 8);
        } else {
            uint32_t qh;
            memcpy(&qh, s + 2, 4);
            const uint8_t *qs = s + 6;
            for (int j = 0; j < 16; j++) {
                q[j] = (int8_t)(((qs[j] & 0xF) | (((qh >> j) << 4) & 0x10)) - 16);
                q[j + 16] = (int8_t)(((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16);
            }
        }
    }
    return 0;
}
