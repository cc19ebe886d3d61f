/* model_bundle: a model with what travels with it (tokenizer text, chat
 * template name and Jinja source, training state and extra tensors of a
 * .ckpt). Every importer fills one; the dispatcher (model_load) picks the
 * importer, so the importers do not depend on it. */
#ifndef ALIGN_MODEL_BUNDLE_H
#define ALIGN_MODEL_BUNDLE_H

#include "ckpt.h"
#include "model.h"
#include "tokenizer.h"

typedef struct {
    Model *model;
    Tokenizer *tok;     /* built when MODEL_LOAD_TOKENIZER is given; else NULL */
    CkptExtras extras;  /* tokenizer_json, chat_template, chat_template_jinja, train_state, tensors */
} ModelBundle;

/* Frees what b holds and zeroes it (NULL and a zeroed bundle are fine). */
void model_bundle_free(ModelBundle *b);

#endif
