#include "model_bundle.h"

#include <string.h>

void model_bundle_free(ModelBundle *b) {
    if (!b) return;
    model_free(b->model);
    if (b->tok) tok_free(b->tok);
    ckpt_extras_free(&b->extras);
    memset(b, 0, sizeof *b);
}
