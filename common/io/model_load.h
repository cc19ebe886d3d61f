/* model_load: open any model path the programs accept, and save to any.
 *
 * A path is a .ckpt (ckpt_load), a .gguf (gguf_import) or a directory
 * holding a Hugging Face model (hf_import_dir). Every program calls
 * model_load_any, so --model, --policy, --ref and --reward accept all three.
 * The result is a ModelBundle: the model plus what travels with it (tokenizer
 * text, chat template name and Jinja source, training state and extra
 * tensors from a .ckpt). model_save_any writes a .ckpt, a .gguf (gguf_write,
 * f16) or exports a Hugging Face directory for any other path. */
#ifndef ALIGN_MODEL_LOAD_H
#define ALIGN_MODEL_LOAD_H

#include "model_bundle.h"

enum {
    MODEL_LOAD_TOKENIZER = 1, /* also build bundle->tok (an error when the model has none) */
    /* a GGUF keeps its quantised blocks as stored, LM head included
     * (gguf_import_blocks), for inference on the CPU; other formats load as usual */
    MODEL_LOAD_GGUF_BLOCKS = 2,
};

int model_load_any(const char *path, const Backend *be, int flags, ModelBundle *out);
/* The same with the linear weights of the layers stored as qtype (QuantType;
 * 0 = fp32), each quantised as it is read from any of the three formats, so
 * the fp32 model never exists whole. A GGUF's Q4_0/Q4_1/Q8_0 tensors are
 * kept as stored for the GGUF types; NF4 and FP4 re-quantise them. */
int model_load_any_quant(const char *path, const Backend *be, int flags, int qtype, ModelBundle *out);

/* Where the bundle's weights load from in Hugging Face terms, into
 * extras.base_model when the importer found nothing better (a .ckpt's
 * recorded base, a GGUF's source repository): the absolute path. A peft
 * adapter records it as base_model_name_or_path. model_load_any calls it. */
int model_load_note_source(ModelBundle *b, const char *path);

/* What a save to `path` writes, from its name: .ckpt and .gguf in any
 * case; an existing directory, or any other name, is a Hugging Face
 * directory. A name that ends like a single file of another format
 * (x.safetensors, x.bin, x.pt, x.json, ...) is an error saying what to
 * write instead: a directory by that name would surprise its owner. */
typedef enum { MODEL_SAVE_CKPT, MODEL_SAVE_GGUF, MODEL_SAVE_HF_DIR } ModelSaveFormat;
int model_save_format(const char *path, ModelSaveFormat *fmt);

/* path ending in .ckpt: checkpoint; .gguf: GGUF for llama.cpp (f16);
 * anything else: HF export directory (model_save_format decides). */
int model_save_any(const char *path, ModelBundle *b);
/* The same, with the GGUF tensor type ("f32", "f16", "bf16", "q8_0",
 * "q4_0", "q4_k_m"; NULL: f16); a type with any other output is an error. */
int model_save_as(const char *path, ModelBundle *b, const char *gguf_type);
/* The same for a model with LoRA adapters or a quantised base: what it
 * computes now, as a plain fp32 model (adapters merged, base dequantised). */
int model_save_merged(const char *path, ModelBundle *b);

#endif
