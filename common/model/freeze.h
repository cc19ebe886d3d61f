/* freeze: parameter-efficient tuning without adapters, by choosing which
 * base tensors train (everything else is frozen: no gradient slot, no
 * optimizer state).
 *   BitFit (Ben Zaken et al. 2021): only the bias vectors train.
 *   Freeze tuning, as LLaMA-Factory's `finetuning_type: freeze`: only the
 *   last N decoder layers train (N < 0: the first |N|), optionally only
 *   some modules of them (`mlp`, `self_attn`, `input_layernorm`, ... for
 *   Llama; `mlp`, `attn`, `ln_1`, `ln_2` for GPT-2: the name component
 *   after the layer index, as freeze_trainable_modules matches it).
 * Embeddings, the final norm and the LM head stay frozen in both, as in
 * LLaMA-Factory (no freeze_extra_modules); a value head is the caller's
 * choice (model_set_trainable). */
#ifndef ALIGN_FREEZE_H
#define ALIGN_FREEZE_H

#include "model.h"

/* Freeze everything, then thaw every `.bias` tensor. Returns how many
 * tensors train; -1 with an error when the model has no bias (Llama-family
 * models without qkv_bias). */
int model_train_only_biases(Model *m);

/* Freeze everything, then thaw the layers' tensors picked by `layers` (the
 * last N; negative: the first |N|; |N| <= n_layers, N != 0) and `modules`
 * (comma list of module names, NULL or "all" = every tensor of those
 * layers). Returns how many tensors train; -1 with an error naming a bad
 * count or a module no chosen layer has (listing the ones it has). */
int model_train_layers(Model *m, int layers, const char *modules);

/* The layer index of a tensor name (`model.layers.N.` / `transformer.h.N.`)
 * and the start of the module component after it; -1 when not in a layer. */
int freeze_layer_of(const char *name, const char **module);

#endif
