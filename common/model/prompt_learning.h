/* prompt_learning: virtual tokens, as the `peft` library's prompt tuning
 * (Lester et al. 2021) and prefix tuning (Li & Liang 2021; P-tuning v2,
 * Liu et al. 2022) give them to a decoder.
 *
 * Prompt tuning learns n_virtual input embeddings [n_virtual, dim] that go
 * before every sequence's token embeddings: they run through every layer
 * (at positions 0..n-1, so the real tokens' positions start at n, as peft
 * prepends them with position_ids left to the model), and only the real
 * tokens' log-probs count.
 *
 * Prefix tuning learns, per layer, n_virtual keys and values that every
 * query attends to before the sequence's own keys: peft's past_key_values,
 * entered into the cache as given (not rotated by RoPE again), with the real
 * tokens at positions n.. . The tensor is peft's saved `prompt_embeddings`
 * [n_virtual, n_layers * 2 * Hkv * head_dim], each row laid out
 * [layer][key, value][kv head][head_dim] (peft's num_attention_heads and
 * token_dim are the key/value heads' under grouped-query attention).
 *
 * Both live in one tensor appended to the model's table, named
 * `prompt_tuning.prompt_embeddings` or `prefix_tuning.prompt_embeddings`
 * (prompt_param_name; a .ckpt carrying it so says which it is) (ParamInfo.lora = 1: an adapter tensor, so checkpoints, --resume and
 * the base fingerprint treat it as LoRA's), trained while the base is
 * frozen. The model runs them through the Batch prefix machinery
 * (model.h, ModelVirtualOps): one virtual sequence per batch that every
 * sequence extends, so the virtual rows cost once per batch, not once per
 * sequence; the KV cache holds them as the first entries of every slot
 * (kvcache.h). Needs a backend with attention_*_prefixed (the CPU one). */
#ifndef ALIGN_PROMPT_LEARNING_H
#define ALIGN_PROMPT_LEARNING_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef enum { PROMPT_TUNING = 1, PREFIX_TUNING = 2 } PromptKind;

typedef struct {
    PromptKind kind;
    int n_virtual;           /* peft's num_virtual_tokens */
    /* Prefix tuning's prefix_projection: the prefix is a two-layer MLP
     * (Linear, Tanh, Linear; hidden size = token_dim, peft's default) of n
     * learned token_dim embeddings, as peft's PrefixEncoder; its tensors
     * `prefix_tuning.embedding.weight`, `prefix_tuning.transform.{0,2}.
     * {weight,bias}` train instead. */
    int projection;
    uint64_t seed;           /* RANDOM init: N(0, 1) as torch.nn.Embedding */
    /* Prompt tuning's TEXT init (peft's prompt_tuning_init_text): the
     * embeddings of these token ids, repeated or cut to n_virtual. NULL:
     * RANDOM. */
    const int32_t *init_tokens;
    int n_init_tokens;
} PromptConfig;

/* Attach virtual tokens (a model has at most one set, and not beside LoRA
 * adapters). Freezes the base and re-lays out the gradient buffer: call
 * before creating the optimizer. */
int model_prompt_attach(Model *m, const PromptConfig *c);
const PromptConfig *model_prompt_config(const Model *m); /* NULL when none */
/* Virtual tokens on (1) or off (0: the base model, the DPO/PPO
 * reference); returns the previous state, -1 when none are attached. */
int model_prompt_enable(Model *m, int on);
/* The tensor (with the projection: the first of its five, the embedding);
 * NULL when none. */
ParamInfo *model_prompt_param(Model *m);
/* All the virtual tokens' tensors, which lie together in m->params: their
 * elements, and where they start (for weight sync). */
size_t model_prompt_numel(const Model *m);
float *model_prompt_data(Model *m);
/* What the virtual rows use now, [n_virtual, width] on the host: the
 * prompt embeddings or the prefix (the projection's output): peft's saved
 * `prompt_embeddings`. */
int model_prompt_values(Model *m, float *host);
const char *prompt_kind_name(PromptKind k);  /* "prompt" or "prefix" */
const char *prompt_param_name(PromptKind k); /* the tensor's name in the table */

#endif
