/* gguf_write: write a model as a GGUF v3 file that llama.cpp and Ollama load.
 *
 * What convert_hf_to_gguf.py writes for the same model: architecture
 * "llama" (q/k rows permuted to llama.cpp's RoPE layout, the inverse of
 * gguf_import's un-permutation), "qwen2" (a Llama-family model with q/k/v
 * biases, stored unpermuted), "qwen3" (q/k norms), "phi3" (fused attn_qkv
 * and gate|up in ffn_up, longrope factors as rope_factors_long/short
 * tensors, partial rotary as rope.dimension_count), "gemma2" / "gemma3"
 * (norm weights stored as 1 + w, soft caps, sliding window and its
 * pattern, Gemma 3's local RoPE base as rope.freq_base_swa) or "gpt2";
 * the <arch>.* hyper-parameters; the
 * byte-level BPE tokenizer as tokenizer.ggml.* (model "gpt2", tokens,
 * token_type, merges, pre, bos/eos/padding ids, add_bos_token) from the
 * bundle's tokenizer.json, a SentencePiece-style one (byte fallback: Llama
 * 2, Mistral, Gemma, Phi-3) as model "llama" (pieces, scores ordered as the
 * merges, byte pieces, add_space_prefix); tokenizer.chat_template from its
 * Jinja source.
 *
 * Tensor types: 1-D tensors (norms, biases) and GPT-2's position table are
 * always F32; 2-D ones take
 * the requested type, except that a row not a multiple of 32 falls back to
 * F16 for the block types, and q4_0 keeps the token embedding and output
 * head at Q8_0 (llama-quantize gives the head Q6_K). q4_k_m follows
 * llama-quantize's Q4_K_M recipe (llama_tensor_get_type, no importance
 * matrix): Q4_K, with attn_v and ffn_down at Q6_K in the layers
 * use_more_bits picks, the output head (a tied embedding is the head) Q6_K,
 * GPT-2's fused attn_qkv Q6_K
 * (llama.cpp: Q5_K, which align does not write), and rows not a multiple
 * of 256 at Q5_0 (for Q4_K) or Q8_0 (for Q6_K), as llama.cpp falls back.
 * A weight kept quantised in the model (a QLoRA base) in the type chosen
 * for it is copied as it is, not re-quantised.
 *
 * Refused with an error: LoRA adapters not merged (save merged), a value
 * head (reward models have no GGUF form), Llama-3.1 rope scaling, and a
 * Gemma that llama.cpp would compute otherwise (query_pre_attn_scalar not
 * the one it derives, an untied Gemma 2, Gemma 2 without soft caps, Gemma 3
 * with attention soft caps). */
#ifndef ALIGN_GGUF_WRITE_H
#define ALIGN_GGUF_WRITE_H

#include "model_bundle.h"

typedef enum { GGUF_OUT_F32, GGUF_OUT_F16, GGUF_OUT_BF16, GGUF_OUT_Q8_0, GGUF_OUT_Q4_0, GGUF_OUT_Q4_K_M } GgufOutType;

/* "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m" (case-insensitive); -1
 * with an error. */
int gguf_out_type_parse(const char *name, GgufOutType *out);

/* Write b's model (and tokenizer, chat template) to path, through a
 * temporary file renamed into place. */
int gguf_write(const char *path, const ModelBundle *b, GgufOutType type);

#endif
