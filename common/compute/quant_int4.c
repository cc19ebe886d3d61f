/* quant_int4.c: GPTQ / AWQ rows (quant_int4.h). */
#include "quant_int4.h"

#include <string.h>

#include "util.h"

int quant_int4_is(int t) { return t >= QUANT_I4_G32 && t <= QUANT_I4_G128_ACT; }

int quant_int4_type(int group_size, int act_order, QuantType *out) {
    switch (group_size) {
    case 32: *out = act_order ? QUANT_I4_G32_ACT : QUANT_I4_G32; return 0;
    case 64: *out = act_order ? QUANT_I4_G64_ACT : QUANT_I4_G64; return 0;
    case 128: *out = act_order ? QUANT_I4_G128_ACT : QUANT_I4_G128; return 0;
    case -1: *out = QUANT_I4_ROW; return 0; /* one group: act-order changes nothing */
    default: return align_errorf("group size %d (align reads 32, 64, 128 or -1)", group_size);
    }
}

int quant_int4_act(QuantType t) { return t >= QUANT_I4_G32_ACT && t <= QUANT_I4_G128_ACT; }

int64_t quant_int4_group_size(QuantType t, int64_t cols) {
    switch (t) {
    case QUANT_I4_G32:
    case QUANT_I4_G32_ACT: return 32;
    case QUANT_I4_G64:
    case QUANT_I4_G64_ACT: return 64;
    case QUANT_I4_G128:
    case QUANT_I4_G128_ACT: return 128;
    default: return cols;
    }
}

int64_t quant_int4_groups(QuantType t, int64_t cols) {
    int64_t gs = quant_int4_group_size(t, cols);
    return gs > 0 ? (cols + gs - 1) / gs : 0;
}

/* bits of one g_idx entry in an act-order row */
static int gidx_bits(int64_t groups) { return groups <= 16 ? 4 : 8; }

size_t quant_int4_row_bytes(QuantType t, int64_t cols) {
    int64_t G = quant_int4_groups(t, cols);
    size_t b = 3 * (size_t)G + (size_t)cols / 2;
    if (quant_int4_act(t)) b += (size_t)cols * gidx_bits(G) / 8;
    return b;
}

int quant_int4_pack(QuantType t, int64_t rows, int64_t cols, const uint8_t *codes, const uint16_t *scales,
                    const uint8_t *zeros, const int32_t *g_idx, void *out) {
    int64_t G = quant_int4_groups(t, cols);
    size_t rb = quant_int4_row_bytes(t, cols);
    int act = quant_int4_act(t);
    if (act && G > 256) return align_errorf("%lld groups in a row: act-order rows hold at most 256", (long long)G);
    if (act)
        for (int64_t i = 0; i < cols; i++)
            if (g_idx[i] < 0 || g_idx[i] >= G)
                return align_errorf("g_idx[%lld] = %d is not a group of this tensor (0..%lld)", (long long)i, g_idx[i],
                                    (long long)G - 1);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = (uint8_t *)out + (size_t)r * rb, *z = row + 2 * G, *q = z + G;
        memcpy(row, scales + r * G, 2 * (size_t)G);
        for (int64_t g = 0; g < G; g++) {
            if (zeros[r * G + g] > 16)
                return align_errorf("zero point %d at row %lld, group %lld (4-bit zeros are 0..16)", zeros[r * G + g],
                                    (long long)r, (long long)g);
            z[g] = zeros[r * G + g];
        }
        const uint8_t *c = codes + r * cols;
        for (int64_t i = 0; i < cols; i += 2) {
            if ((c[i] | c[i + 1]) > 15) return align_errorf("a 4-bit code above 15 at row %lld", (long long)r);
            q[i / 2] = (uint8_t)(c[i] | c[i + 1] << 4);
        }
        if (!act) continue;
        uint8_t *gi = q + cols / 2;
        if (gidx_bits(G) == 8)
            for (int64_t i = 0; i < cols; i++) gi[i] = (uint8_t)g_idx[i];
        else
            for (int64_t i = 0; i < cols; i += 2) gi[i / 2] = (uint8_t)(g_idx[i] | g_idx[i + 1] << 4);
    }
    return 0;
}

void quant_int4_dequantize_rows(QuantType t, const void *in, float *out, int64_t rows, int64_t cols) {
    int64_t G = quant_int4_groups(t, cols), gs = quant_int4_group_size(t, cols);
    size_t rb = quant_int4_row_bytes(t, cols);
    int act = quant_int4_act(t), wide = gidx_bits(G) == 8;
    float s[256];
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)in + (size_t)r * rb, *z = row + 2 * G, *q = z + G, *gi = q + cols / 2;
        float *o = out + r * cols;
        if (!act) {
            for (int64_t g = 0; g < G; g++) {
                uint16_t h;
                memcpy(&h, row + 2 * g, 2);
                float sc = quant_f16_to_f32(h);
                int zg = z[g];
                int64_t end = (g + 1) * gs < cols ? (g + 1) * gs : cols;
                for (int64_t i = g * gs; i < end; i += 2) {
                    o[i] = sc * (float)((q[i / 2] & 0xF) - zg);
                    o[i + 1] = sc * (float)((q[i / 2] >> 4) - zg);
                }
            }
            continue;
        }
        for (int64_t g = 0; g < G; g++) {
            uint16_t h;
            memcpy(&h, row + 2 * g, 2);
            s[g] = quant_f16_to_f32(h);
        }
        for (int64_t i = 0; i < cols; i++) {
            int g = wide ? gi[i] : (gi[i / 2] >> (4 * (i & 1))) & 0xF;
            int c = (q[i / 2] >> (4 * (i & 1))) & 0xF;
            o[i] = s[g] * (float)(c - z[g]);
        }
    }
}
