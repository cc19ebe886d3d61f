/* hf_quant: GPTQ and AWQ checkpoints (Hugging Face safetensors with
 * `qweight` / `qzeros` / `scales` / `g_idx`), read as a frozen base.
 *
 * config.json's quantization_config says which: quant_method "gptq"
 * (bits 4, group_size 32/64/128/-1, desc_act, sym, checkpoint_format "gptq"
 * as AutoGPTQ, optimum and transformers save it, or "gptq_v2") or "awq"
 * (bits 4, version "gemm", zero_point true). Per linear layer `<m>`:
 *   GPTQ  <m>.qweight int32 [in/8, out]: input i of output o is nibble i%8
 *         of word [i/8][o]; <m>.qzeros int32 [G, out/8]: zero of (g, o) is
 *         nibble o%8 of word [g][o/8], plus 1 in the v1 format (AutoGPTQ
 *         stores zero - 1); <m>.scales fp16 [G, out]; <m>.g_idx int32
 *         [in] (absent: i / group_size).
 *   AWQ   <m>.qweight int32 [in, out/8] and <m>.qzeros int32 [G, out/8]
 *         pack the 8 outputs of a word in AutoAWQ's order: nibble k holds
 *         output 8c + [0,2,4,6,1,3,5,7][k]; <m>.scales fp16 [G, out].
 * and w[o][i] = scale[g][o] * (q[i][o] - zero[g][o]) with g = g_idx[i].
 * Anything else (other bits, another quant_method or format: exl2, marlin,
 * bitsandbytes, AWQ gemv) is refused with one sentence naming the file and
 * the field. */
#ifndef ALIGN_HF_QUANT_H
#define ALIGN_HF_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"
#include "safetensors.h"

typedef enum { HF_QUANT_NONE = 0, HF_QUANT_GPTQ = 1, HF_QUANT_AWQ = 2 } HfQuantMethod;

typedef struct {
    HfQuantMethod method;
    int group_size;   /* 32, 64, 128 or -1 (one group per output) */
    int zero_offset;  /* added to stored zeros: 1 for GPTQ v1, else 0 */
} HfQuant;

/* quantization_config of config.json text (path names it in errors);
 * method HF_QUANT_NONE when there is none. */
int hf_quant_parse(const char *json, size_t len, const char *path, HfQuant *q);
const char *hf_quant_method_name(HfQuantMethod m);

/* Where a checkpoint's tensors are looked up (hf_import's shards). */
typedef const StTensor *(*HfQuantFind)(void *ctx, const char *name, const StFile **file);

/* One linear layer unpacked: codes[rows * cols], scales[rows * groups]
 * (fp16 bits), zeros[rows * groups], g_idx[cols]; rows = outputs. */
typedef struct {
    int64_t rows, cols, groups, group_size;
    int act_order;    /* g_idx is not i / group_size */
    uint8_t *codes, *zeros;
    uint16_t *scales;
    int32_t *g_idx;
} HfQuantLinear;

/* 1 when the checkpoint stores weight_name ("<m>.weight") quantised
 * (<m>.qweight exists). */
int hf_quant_has(HfQuantFind find, void *ctx, const char *weight_name);
/* The storage type hf_quant_type would give <m> (reads g_idx only);
 * QUANT_NONE when it is to be dequantised. -1 with an error on a bad
 * g_idx. */
int hf_quant_peek_type(const HfQuant *q, HfQuantFind find, void *ctx, const char *weight_name, int64_t rows, int64_t cols,
                       QuantType *t);
/* Read and unpack <m>'s tensors for a [rows = out, cols = in] weight,
 * checking every dtype and shape. */
int hf_quant_read(const HfQuant *q, HfQuantFind find, void *ctx, const char *weight_name, int64_t rows, int64_t cols,
                  HfQuantLinear *out);
void hf_quant_linear_free(HfQuantLinear *l);
/* The QUANT_I4 type that keeps l as it is; -1 (no error set) when none
 * does (inputs not a multiple of 32, more than 256 act-order groups): the
 * caller dequantises. */
int hf_quant_type(const HfQuant *q, const HfQuantLinear *l, QuantType *t);
/* Into rows of type t (from hf_quant_type); into fp32 [rows, cols]. */
int hf_quant_to_rows(const HfQuantLinear *l, QuantType t, void *out);
void hf_quant_dequantize(const HfQuantLinear *l, float *out);

#endif
