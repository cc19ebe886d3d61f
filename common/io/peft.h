/* peft: LoRA adapters in the layout the Hugging Face `peft` library saves
 * and loads, and merged exports.
 *
 * An adapter directory holds adapter_model.safetensors (F32 lora_A/lora_B
 * tensors under `base_model.model.<module>.lora_{A,B}.weight`, metadata
 * {"format": "pt"}) and adapter_config.json (peft_type LORA, task_type
 * CAUSAL_LM, or SEQ_CLS with modules_to_save ["score"] for a reward model
 * whose score head trains, r, lora_alpha, lora_dropout, target_modules,
 * base_model_name_or_path, fan_in_fan_out true for GPT-2's Conv1D). So
 * `PeftModel.from_pretrained(base, dir)` loads what align trained, and
 * align loads adapters peft trained (--lora-adapter DIR). */
#ifndef ALIGN_PEFT_H
#define ALIGN_PEFT_H

#include "lora.h"
#include "model_bundle.h"

/* Write dir/adapter_model.safetensors and dir/adapter_config.json (the
 * directory is created when missing). base_name is recorded as
 * base_model_name_or_path (may be NULL). */
int peft_save_adapter(const char *dir, Model *m, const char *base_name);

/* Read dir/adapter_config.json, attach adapters so configured (seed for the
 * dropout masks) and load their weights. A reward model's saved score head
 * is loaded too. */
int peft_load_adapter(const char *dir, Model *m, uint64_t seed);

/* After --resume: copy adapter tensors a checkpoint carried as extra
 * tensors into the attached adapters and drop them from the extras.
 * Returns how many were restored (0 when the checkpoint had none). */
int peft_adapter_from_extras(Model *m, CkptExtras *e);


#endif
