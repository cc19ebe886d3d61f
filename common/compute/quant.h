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
 * The backend's matmul_forward_q / matmul_backward_input_q dequantise tiles
 * of rows into a small fp32 buffer and run sgemm on the tile, so the fp32
 * matrix never exists whole. */
#ifndef ALIGN_QUANT_H
#define ALIGN_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* Values are the ggml type ids; QUANT_NONE (0, ggml's F32) is plain fp32. */
typedef enum {
    QUANT_NONE = 0, QUANT_Q4_0 = 2, QUANT_Q4_1 = 3, QUANT_Q5_0 = 6, QUANT_Q5_1 = 7, QUANT_Q8_0 = 8,
    QUANT_Q2_K = 10, QUANT_Q3_K = 11, QUANT_Q4_K = 12, QUANT_Q5_K = 13, QUANT_Q6_K = 14
} QuantType;

/* The smallest block (every type's block is a multiple of it). */
#define QUANT_BLOCK 32

/* "q4_0", "q4_1", "q8_0" (case-insensitive): the types align quantises
 * to; -1 with an error otherwise. */
int quant_parse(const char *name, QuantType *out);
const char *quant_name(QuantType t);
/* 1 when t is one of the types above (kept and dequantised). */
int quant_supported(int t);
/* 1 when quant_quantize_rows writes t (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K). */
int quant_can_quantize(int t);
/* Inputs per block (32, or 256 for a K-quant); bytes of one block, and of
 * one row of `cols` inputs (cols a multiple of quant_block_elems). */
int quant_block_elems(QuantType t);
size_t quant_block_bytes(QuantType t);
size_t quant_row_bytes(QuantType t, int64_t cols);

/* Quantise rows x[rows, cols] into blocks (-1 with an error for a type
 * quant_can_quantize refuses); dequantise them back. */
int quant_quantize_rows(QuantType t, const float *x, void *out, int64_t rows, int64_t cols);
void quant_dequantize_rows(QuantType t, const void *blocks, float *out, int64_t rows, int64_t cols);

float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);

#endif
