/* quant.c: ggml's Q4_0, Q4_1 and Q8_0 blocks (see quant.h). */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "quant_bnb.h"
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
    case QUANT_Q8_0: return "q8_0";
    case QUANT_NF4: return "nf4";
    case QUANT_FP4: return "fp4";
    default: return "f32";
    }
}

int quant_is_ggml(int t) { return t == QUANT_Q4_0 || t == QUANT_Q4_1 || t == QUANT_Q8_0; }
int quant_supported(int t) { return quant_is_ggml(t) || t == QUANT_NF4 || t == QUANT_FP4; }
int quant_col_multiple(QuantType t) { return t == QUANT_NF4 || t == QUANT_FP4 ? QUANT_BNB_BLOCK : QUANT_BLOCK; }

size_t quant_block_bytes(QuantType t) {
    switch (t) {
    case QUANT_Q4_0: return 18;
    case QUANT_Q4_1: return 20;
    case QUANT_Q8_0: return 34;
    default: return 0;
    }
}

size_t quant_row_bytes(QuantType t, int64_t cols) {
    if (t == QUANT_NF4 || t == QUANT_FP4) return quant_bnb_row_bytes(cols);
    return (size_t)(cols / QUANT_BLOCK) * quant_block_bytes(t);
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

int quant_quantize_rows(QuantType t, const float *x, void *out, int64_t rows, int64_t cols) {
    if (t == QUANT_NF4 || t == QUANT_FP4) return quant_bnb_quantize(t == QUANT_FP4, x, out, rows, cols);
    size_t bb = quant_block_bytes(t);
    int64_t nb = (int64_t)rows * (cols / QUANT_BLOCK);
    uint8_t *y = out;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * QUANT_BLOCK;
        uint8_t *yb = y + b * bb;
        if (t == QUANT_Q4_0) q4_0_block(xb, yb);
        else if (t == QUANT_Q4_1) q4_1_block(xb, yb);
        else q8_0_block(xb, yb);
    }
    return 0;
}

/* gguf_read_f32 dequantises through this too, so a kept GGUF block and a
 * dequantised import agree bit for bit. */
void quant_dequantize_rows(QuantType t, const void *blocks, float *out, int64_t rows, int64_t cols) {
    if (t == QUANT_NF4 || t == QUANT_FP4) {
        quant_bnb_dequantize_rows(t == QUANT_FP4, blocks, out, rows, cols);
        return;
    }
    int64_t nb = rows * (cols / QUANT_BLOCK);
    const uint8_t *src = blocks;
    if (t == QUANT_Q4_0) {
        for (int64_t b = 0; b < nb; b++, src += 18, out += 32) {
            float d = quant_f16_to_f32(ld16(src));
            for (int j = 0; j < 16; j++) {
                out[j] = ((src[2 + j] & 0xF) - 8) * d;
                out[j + 16] = ((src[2 + j] >> 4) - 8) * d;
            }
        }
    } else if (t == QUANT_Q4_1) {
        for (int64_t b = 0; b < nb; b++, src += 20, out += 32) {
            float d = quant_f16_to_f32(ld16(src)), m = quant_f16_to_f32(ld16(src + 2));
            for (int j = 0; j < 16; j++) {
                out[j] = (src[4 + j] & 0xF) * d + m;
                out[j + 16] = (src[4 + j] >> 4) * d + m;
            }
        }
    } else if (t == QUANT_Q8_0) {
        for (int64_t b = 0; b < nb; b++, src += 34, out += 32) {
            float d = quant_f16_to_f32(ld16(src));
            for (int j = 0; j < 32; j++) out[j] = (int8_t)src[2 + j] * d;
        }
    }
}

const float *quant_nf4_codebook(void) { return quant_bnb_nf4(); }
const float *quant_fp4_codebook(void) { return quant_bnb_fp4(); }
const float *quant_dynamic_map(void) { return quant_bnb_dynamic(); }
