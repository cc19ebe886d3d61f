/* peft_prompt: prompt-tuning and prefix-tuning adapters in the directory
 * layout the Hugging Face `peft` library saves and loads, and the virtual
 * tokens a .ckpt carries.
 *
 * A directory holds adapter_model.safetensors (one F32 tensor,
 * `prompt_embeddings`, as peft's get_peft_model_state_dict writes it:
 * [num_virtual_tokens, token_dim] for PROMPT_TUNING, [num_virtual_tokens,
 * num_layers * 2 * token_dim] for PREFIX_TUNING) and adapter_config.json
 * (peft_type, task_type CAUSAL_LM, num_virtual_tokens, token_dim,
 * num_layers, num_attention_heads — the key/value heads' count and width
 * for prefix tuning, as peft sets them under grouped-query attention —,
 * num_transformer_submodules 1, prefix_projection (true when the prefix
 * came from --prefix-projection's MLP: the file then holds its output, as
 * peft saves it), inference_mode true). So `PeftModel.from_pretrained(base, dir)` loads
 * what align trained, and align loads what peft trained (a prefix adapter
 * trained with prefix_projection is saved projected, so it loads as a plain
 * prefix, as peft loads it for inference). */
#ifndef ALIGN_PEFT_PROMPT_H
#define ALIGN_PEFT_PROMPT_H

#include "model_bundle.h"
#include "prompt_learning.h"

/* Write dir/adapter_model.safetensors and dir/adapter_config.json (dir is
 * created when missing); base_name is base_model_name_or_path (may be
 * NULL). */
int peft_prompt_save(const char *dir, Model *m, const char *base_name);

/* 1 when dir/adapter_config.json names PROMPT_TUNING or PREFIX_TUNING,
 * 0 for another peft_type, -1 with an error when it cannot be read. */
int peft_prompt_is_adapter(const char *dir);

/* Attach the virtual tokens dir holds (checked against m's shape) and load
 * their values. */
int peft_prompt_load(const char *dir, Model *m);

/* A loaded .ckpt's extras holding prompt_param_name(kind): attach those
 * virtual tokens with their values and drop the tensor from the extras.
 * Returns 1 when attached, 0 when there were none, -1 on error. */
int peft_prompt_from_extras(Model *m, CkptExtras *e);

#endif
