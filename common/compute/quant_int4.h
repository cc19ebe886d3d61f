/* quant_int4: the row layout GPTQ and AWQ checkpoints are kept in.
 *
 * Both formats store w = scale[g] * (q - zero[g]) with 4-bit codes q, an
 * fp16 scale and an integer zero per group of `group_size` inputs of one
 * output; they differ only in how the codes are packed into int32 words
 * (common/io/hf_quant.c unpacks both). On load every output row becomes
 *   [G fp16 scales][G u8 zeros][cols/2 bytes of codes, input 2k in the low
 *    nibble of byte k, 2k+1 in the high][act-order only: the group of every
 *    input, 4 bits each (low nibble first) when G <= 16, else a byte each]
 * with G = ceil(cols / group_size) groups (1 for group_size -1, "per
 * channel"); the last group may be shorter, as AutoGPTQ allows (SmolLM2's
 * 576 inputs in groups of 128: four and one of 64).
 * Zeros are bytes because GPTQ's v1 checkpoints store zero - 1, so a zero
 * of 16 exists. Dequantisation is fp32(scale) * (float)(q - zero), exact
 * in fp32 (an 11-bit mantissa times an integer of at most 5 bits).
 *
 * Act-order (desc_act: g_idx not i / group_size) puts inputs of one group
 * anywhere in the row; every row then carries its inputs' groups, so a row
 * range stays a byte range (tiles, fused q|k|v) at 4 or 8 bits a weight
 * more. A g_idx equal to i / group_size uses the plain type. */
#ifndef ALIGN_QUANT_INT4_H
#define ALIGN_QUANT_INT4_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

/* 1 for the QUANT_I4_* types. */
int quant_int4_is(int t);
/* The type for group_size (32, 64, 128, or -1 for one group a row) with or
 * without act-order; -1 with an error for another group size. */
int quant_int4_type(int group_size, int act_order, QuantType *out);
/* Inputs a group covers (cols for the per-row type), and the groups of a
 * row of cols inputs; 1 when t carries g_idx. */
int64_t quant_int4_group_size(QuantType t, int64_t cols);
int64_t quant_int4_groups(QuantType t, int64_t cols);
int quant_int4_act(QuantType t);
size_t quant_int4_row_bytes(QuantType t, int64_t cols);

/* Build rows [rows, cols] of type t from codes[rows * cols] (0..15),
 * scales[rows * G] (fp16 bits), zeros[rows * G] (0..16) and, for an
 * act-order type, g_idx[cols] (each < G); -1 with an error naming a bad
 * code, zero or group. */
int quant_int4_pack(QuantType t, int64_t rows, int64_t cols, const uint8_t *codes, const uint16_t *scales,
                    const uint8_t *zeros, const int32_t *g_idx, void *out);
void quant_int4_dequantize_rows(QuantType t, const void *in, float *out, int64_t rows, int64_t cols);

#endif
