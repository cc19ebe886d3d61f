/* quant: block-quantised weights, as GGUF stores them, for a frozen base.
 *
 * A quantised matrix [rows, cols] is rows of blocks; every block covers 32
 * (256 for the K-quants) consecutive inputs of one row (cols must be a
 * multiple of quant_block_elems), so a row
 * range of a matrix is a byte range of its blocks and fused projections
 * (q|k|v, gate|up) stay one matrix when their members share a type. The
 * layouts are ggml's (llama.cpp), so GGUF tensors are kept byte for byte:
 *   Q4_0  fp16 d, 16 bytes of nibbles       x = (q - 8) * d      18 B / 32
 *   Q4_1  fp16 d, fp16 m, 16 bytes nibbles  x = q * d + m        20 B / 32
 *   Q8_0  fp16 d, 32 int8                   x = q * d            34 B / 32
 *   Q5_0  fp16 d, 4 B high bits, 16 B nibbles  x = (q - 16) * d  22 B / 32
 *   Q5_1  fp16 d, fp16 m, 4 B high bits, 16 B   x = q * d + m    24 B / 32
 * (nibble j of a block's byte k: low nibble is input k, high is k + 16).
 * The K-quants pack 256 inputs in a super-block of 16 or 8 sub-blocks whose
 * scales are themselves quantised (ggml-quants.c dequantize_row_q*_K):
 *   Q2_K  84 B, Q3_K 110 B, Q4_K 144 B, Q5_K 176 B, Q6_K 210 B per 256.
 * All are read and kept as stored (a GGUF's Q4_K_M mixes Q4_K, Q6_K and,
 * for rows not a multiple of 256, Q5_0/Q8_0). quant_quantize_rows writes
 * Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K as ggml's quantize_row_*_ref (no
 * importance matrix), what a Q4_K_M GGUF needs; quant_can_quantize says so.
 * Quantisation follows ggml's reference quantize_row_*_ref, so a tensor
 * quantised here equals what llama.cpp's quantizer writes, and a Q4_0 or
 * Q8_0 tensor that was dequantised re-quantises to the same blocks.
 *
 * NF4 and FP4 (QLoRA, bitsandbytes' quantize_4bit with double quantisation)
 * are align's own types, not GGUF ones: blocks of 64 inputs scaled by their
 * absmax, 4-bit codes into the 16-value NF4 (normal quantiles) or FP4
 * (e2m1) codebook; the absmax of every block, less the tensor's mean absmax
 * (the offset), is quantised to 8 bits in the dynamic map in groups of 256
 * consecutive blocks (flattened order over the whole tensor), each group
 * scaled by its own fp32 absmax. Dequantisation is bitsandbytes':
 *   absmax = dynamic[q8] * group_absmax + offset;  x = code4[q4] * absmax
 * To keep "a row range is a byte range", every row carries what its blocks
 * need: [fp32 offset][u32 phase = first block's place in its group]
 * [fp32 group absmax of each group the row touches: nb/256 + 2 slots]
 * [u8 qabsmax of its nb = cols/64 blocks][cols/2 bytes of codes, two per
 * byte, the first in the high nibble as bitsandbytes packs them]. That is
 * 4.13 bits a weight plus 8 + 4 (nb/256 + 2) bytes a row (SmolLM2's rows:
 * 4.35 bits; Q4_0: 4.5). A tensor is quantised whole (the offset and the
 * groups span it); cols must be a multiple of 64.
 *
 * GPTQ and AWQ checkpoints keep their groups in QUANT_I4_* rows
 * (quant_int4.h): [fp16 scales][u8 zeros][codes][act-order: g_idx].
 *
 * The backend's matmul_forward_q / matmul_backward_input_q dequantise tiles
 * of rows into a small fp32 buffer and run sgemm on the tile, so the fp32
 * matrix never exists whole. For inference, matmul_forward_q_int8 (CPU:
 * cpu/matmul_quant.c) multiplies the blocks as stored with int8-quantised
 * inputs, as llama.cpp does. */
#ifndef ALIGN_QUANT_H
#define ALIGN_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* Values are the ggml type ids; QUANT_NONE (0, ggml's F32) is plain fp32.
 * NF4 and FP4 have ids no ggml type uses (no GGUF file holds them). */
typedef enum {
    QUANT_NONE = 0, QUANT_Q4_0 = 2, QUANT_Q4_1 = 3, QUANT_Q5_0 = 6, QUANT_Q5_1 = 7, QUANT_Q8_0 = 8,
    QUANT_Q2_K = 10, QUANT_Q3_K = 11, QUANT_Q4_K = 12, QUANT_Q5_K = 13, QUANT_Q6_K = 14,
    QUANT_NF4 = 200, QUANT_FP4 = 201,
    /* GPTQ / AWQ checkpoints (quant_int4.h): 4-bit codes, fp16 scale and
     * integer zero per group of 32, 64, 128 inputs or the whole row; _ACT
     * rows carry act-order's g_idx */
    QUANT_I4_G32 = 210, QUANT_I4_G64 = 211, QUANT_I4_G128 = 212, QUANT_I4_ROW = 213,
    QUANT_I4_G32_ACT = 214, QUANT_I4_G64_ACT = 215, QUANT_I4_G128_ACT = 216
} QuantType;

/* The smallest block (every type's block is a multiple of it). */
#define QUANT_BLOCK 32
#define QUANT_BNB_BLOCK 64        /* NF4/FP4 weights per absmax */
#define QUANT_BNB_GROUP 256       /* absmax values per double-quantisation group */

/* "q4_0", "q4_1", "q8_0", "nf4", "fp4" (case-insensitive): the types a
 * base can be quantised to; -1 with an error otherwise. */
int quant_parse(const char *name, QuantType *out);
const char *quant_name(QuantType t);
/* 1 when t is one of the types above (kept and dequantised; the QUANT_I4
 * types come only from a GPTQ or AWQ checkpoint);
 * quant_is_ggml: a block type a GGUF file can hold (Q4_0 .. Q6_K). */
int quant_supported(int t);
int quant_is_ggml(int t);
/* 1 when quant_quantize_rows writes t (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K,
 * NF4, FP4). */
int quant_can_quantize(int t);
/* 1 when t may be asked for as a frozen base's type (--quantize-base):
 * q4_0, q4_1, q8_0, nf4, fp4. K-quants come only as a GGUF stores them. */
int quant_base_type(int t);
/* Inputs a row's length must be a multiple of: a block's inputs (32, 256
 * for a K-quant, 64 for NF4/FP4, 32 for the QUANT_I4 types). Bytes of one block (GGUF types; 0 for
 * NF4/FP4), and of one row of `cols` inputs. */
int quant_block_elems(QuantType t);
size_t quant_block_bytes(QuantType t);
size_t quant_row_bytes(QuantType t, int64_t cols);

/* Quantise rows x[rows, cols] into blocks (for NF4/FP4 x must be the whole
 * tensor; -1 with an error for a type quant_can_quantize refuses, or out of
 * memory); dequantise them back (any row range). */
int quant_quantize_rows(QuantType t, const float *x, void *out, int64_t rows, int64_t cols);
void quant_dequantize_rows(QuantType t, const void *blocks, float *out, int64_t rows, int64_t cols);

/* 1 for the types whose blocks have an exact Q8_0 form (Q4_0, Q5_0, Q8_0:
 * int8 codes under the block's own fp16 scale); quant_to_q8_0_exact writes
 * it (out: rows * cols / 32 blocks of 34 bytes, not overlapping blocks), so
 * a fused group mixing them (a Q4_K_M file's Q5_0 q, k and Q8_0 v) stays
 * one quantised matrix with the very values the file holds. -1 with an
 * error for another type. */
int quant_exact_in_q8_0(int t);
int quant_to_q8_0_exact(QuantType t, const void *blocks, void *out, int64_t rows, int64_t cols);

/* The 16 values of NF4 / FP4 (bitsandbytes' get_4bit_type, by code) and
 * the 256 of the dynamic map the absmax values are quantised with
 * (create_dynamic_map(signed=True), ascending). */
const float *quant_nf4_codebook(void);
const float *quant_fp4_codebook(void);
const float *quant_dynamic_map(void);

float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);

#endif
