/* model_load: open any model path the programs accept, and save to any.
 *
 * A path is a .ckpt (ckpt_load), a .gguf (gguf_import) or a directory
 * holding a Hugging Face model (hf_import_dir). Every program calls
 * model_load_any, so --model, --policy, --ref and --reward accept all three.
 * The result is a ModelBundle: the model plus what travels with it (tokenizer
 * text, chat template name and Jinja source, training state and extra
 * tensors from a .ckpt). model_save_any writes a .ckpt, or exports a Hugging
 * Face directory for any other path. */
#ifndef ALIGN_MODEL_LOAD_H
#define ALIGN_MODEL_LOAD_H

#include "ckpt.h"
#include "model.h"
#include "tokenizer.h"

typedef struct {
    Model *model;
    Tokenizer *tok;     /* built when MODEL_LOAD_TOKENIZER is given; else NULL */
    CkptExtras extras;  /* tokenizer_json, chat_template, chat_template_jinja, train_state, tensors */
} ModelBundle;

enum {
    MODEL_LOAD_TOKENIZER = 1, /* also build bundle->tok (an error when the model has none) */
};

int model_load_any(const char *path, const Backend *be, int flags, ModelBundle *out);
void model_bundle_free(ModelBundle *b);

/* path ending in .ckpt: checkpoint; anything else: HF export directory. */
int model_save_any(const char *path, ModelBundle *b);

/* The built-in template ("chatml", "llama3", "hh") a Jinja chat template
 * implements, judged from its markers; NULL when none matches. */
const char *model_detect_chat_template(const char *jinja);
/* The Jinja source of a built-in template, for tokenizer_config.json; NULL
 * for "none" or an unknown name. */
const char *model_chat_template_jinja(const char *name);

#endif
