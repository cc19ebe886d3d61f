/* hf_import: load a Hugging Face model directory.
 *
 * Reads config.json (model_config_json), the weights from model.safetensors
 * or from the shards listed in model.safetensors.index.json (F32, F16, BF16,
 * F64; GPT-2 names with or without the "transformer." prefix; Conv1D tensors
 * transposed into our [out, in] layout), tokenizer.json as text, and the
 * chat template from tokenizer_config.json (a string, or the "default" entry
 * of a list), matched against the built-in templates. Tensors the model
 * does not use (GPT-2's attention-mask buffers, a tied lm_head copy) are
 * ignored; a tensor the config needs and the files lack is an error.
 * A config.json with a GPTQ or AWQ quantization_config (hf_quant.h) keeps
 * every linear layer stored as <m>.qweight in its 4-bit groups (QUANT_I4
 * rows, CPU backend only), unpacked one tensor at a time. */
#ifndef ALIGN_HF_IMPORT_H
#define ALIGN_HF_IMPORT_H

#include "model_bundle.h"

int hf_import_dir(const char *dir, const Backend *be, ModelBundle *out);
/* The same with the quantizable linear weights stored as qtype (QuantType,
 * 0 = fp32), quantised tensor by tensor while reading (ckpt_load_quant). */
int hf_import_dir_quant(const char *dir, const Backend *be, int qtype, ModelBundle *out);

#endif
