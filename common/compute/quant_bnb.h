/* quant_bnb: the NF4 and FP4 row layout of quant.h (QLoRA's types, as
 * bitsandbytes quantises them with double quantisation); quant.c calls
 * these for QUANT_NF4 / QUANT_FP4. */
#ifndef ALIGN_QUANT_BNB_H
#define ALIGN_QUANT_BNB_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of one row of cols inputs (cols a multiple of 64). */
size_t quant_bnb_row_bytes(int64_t cols);
/* Quantise the whole tensor x[rows, cols]; fp4: 1 for FP4, 0 for NF4.
 * Returns -1 (out of memory) with an error. */
int quant_bnb_quantize(int fp4, const float *x, void *out, int64_t rows, int64_t cols);
/* Dequantise any rows of a quantised tensor. */
void quant_bnb_dequantize_rows(int fp4, const void *rows_in, float *out, int64_t rows, int64_t cols);

const float *quant_bnb_nf4(void);
const float *quant_bnb_fp4(void);
const float *quant_bnb_dynamic(void);

#endif
