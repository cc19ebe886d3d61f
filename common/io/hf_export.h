/* hf_export: write a Hugging Face model directory transformers loads.
 *
 * config.json (model_config_json), model.safetensors (F32, HF names and
 * layout, metadata {"format": "pt"}), tokenizer.json (when the bundle has
 * it), tokenizer_config.json (PreTrainedTokenizerFast with bos/eos/pad token
 * strings and the chat template: the model's own Jinja source when known,
 * else the built-in template's), and generation_config.json. Each file is
 * written atomically; the directory is created when missing. */
#ifndef ALIGN_HF_EXPORT_H
#define ALIGN_HF_EXPORT_H

#include "model_bundle.h"

int hf_export_dir(const char *dir, Model *m, const CkptExtras *extras);

#endif
