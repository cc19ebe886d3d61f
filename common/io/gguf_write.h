/* gguf_write: write a model as a GGUF v3 file that llama.cpp and Ollama load.
 *
 * What convert_hf_to_gguf.py writes for the same model: architecture
 * "llama" (q/k rows permuted to llama.cpp's RoPE layout, the inverse of
 * gguf_import's un-permutation), "qwen2" (a Llama-family model with q/k/v
 * biases, stored unpermuted) or "gpt2"; the <arch>.* hyper-parameters; the
 * byte-level BPE tokenizer as tokenizer.ggml.* (model "gpt2", tokens,
 * token_type, merges, pre, bos/eos/padding ids, add_bos_token) from the
 * bundle's tokenizer.json; tokenizer.chat_template from its Jinja source.
 *
 * Tensor types: 1-D tensors (norms, biases) are always F32; 2-D ones take
 * the requested type, except that a row not a multiple of 32 falls back to
 * F16 for q8_0/q4_0, and q4_0 keeps the token embedding and output head at
 * Q8_0 (llama.cpp's quantizer gives them a higher-precision type too; align
 * writes no K-quants). A weight kept quantised in the model (a QLoRA base)
 * in the requested block type is copied as it is, not re-quantised.
 *
 * Refused with an error: LoRA adapters not merged (save merged), a value
 * head (reward models have no GGUF form), Llama-3.1 rope scaling. */
#ifndef ALIGN_GGUF_WRITE_H
#define ALIGN_GGUF_WRITE_H

#include "model_bundle.h"

typedef enum { GGUF_OUT_F32, GGUF_OUT_F16, GGUF_OUT_BF16, GGUF_OUT_Q8_0, GGUF_OUT_Q4_0 } GgufOutType;

/* "f32", "f16", "bf16", "q8_0", "q4_0" (case-insensitive); -1 with an error. */
int gguf_out_type_parse(const char *name, GgufOutType *out);

/* Write b's model (and tokenizer, chat template) to path, through a
 * temporary file renamed into place. */
int gguf_write(const char *path, const ModelBundle *b, GgufOutType type);

#endif
