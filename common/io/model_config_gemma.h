/* model_config_gemma: the Gemma 2 / Gemma 3 text part of config.json
 * (model_config_json.c dispatches here on model_type gemma2, gemma3_text
 * and gemma3's text_config). Private to the io layer. */
#ifndef ALIGN_MODEL_CONFIG_GEMMA_H
#define ALIGN_MODEL_CONFIG_GEMMA_H

#include <cjson/cJSON.h>

#include "model.h"

/* Fill *c from a Gemma config object (version 2 or 3); -1 with a sentence
 * naming the key that our decoder cannot reproduce. */
int model_config_parse_gemma(const cJSON *r, ModelConfig *c, const char *origin, int version);
/* Add the architecture, model_type and every Gemma key to r. */
void model_config_write_gemma(cJSON *r, const ModelConfig *c, int classifier);

#endif
