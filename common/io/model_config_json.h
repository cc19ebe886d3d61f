/* model_config_json: ModelConfig <-> Hugging Face config.json.
 *
 * Reading accepts model_type gpt2, llama, qwen2, mistral, gemma2,
 * gemma3_text and gemma3 (its text_config; model_config_gemma.c) (and,
 * failing a model_type, the architectures list). Every key that changes the maths and
 * that our decoder does not implement (another activation, o_proj or MLP
 * biases, sliding-window attention shorter than the context, rope scaling
 * other than llama3/linear) is refused with a sentence naming it, rather than
 * silently giving different logits.
 *
 * Writing emits what transformers needs to rebuild the same network:
 * GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM (Llama family with
 * q/k/v bias), or *ForSequenceClassification with num_labels 1 for a pure
 * value/reward model (score.weight, no LM head). A model with both heads is
 * exported as the causal LM; its score.weight travels as an extra tensor and
 * "align_value_head": true records it so a re-import restores it. */
#ifndef ALIGN_MODEL_CONFIG_JSON_H
#define ALIGN_MODEL_CONFIG_JSON_H

#include <stddef.h>

#include "model.h"

/* Parse config.json text (origin names the file in errors) into *out. */
int model_config_from_hf_json(const char *json, size_t len, const char *origin, ModelConfig *out);

/* config.json text for c (malloc'd, caller frees); NULL with an error. */
char *model_config_to_hf_json(const ModelConfig *c);

#endif
