/* model_load: the one place that decides what a model path is. A path that
 * names a directory is a Hugging Face model; otherwise the extension
 * decides (.ckpt, .gguf), and failing that the file's first bytes (GGUF
 * magic, or a safetensors header). */
#include "model_load.h"

#include "chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "hf_export.h"
#include "hf_import.h"
#include "util.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void model_bundle_free(ModelBundle *b) {
    if (!b) return;
    model_free(b->model);
    if (b->tok) tok_free(b->tok);
    ckpt_extras_free(&b->extras);
    memset(b, 0, sizeof *b);
}

int model_load_any(const char *path, const Backend *be, int flags, ModelBundle *out) {
    memset(out, 0, sizeof *out);
    ckpt_extras_init(&out->extras);
    struct stat sb;
    if (stat(path, &sb) != 0) return align_errorf("model path %s does not exist", path);
    int rc;
    if (S_ISDIR(sb.st_mode)) {
        rc = hf_import_dir(path, be, out);
    } else {
        int is_gguf = ends_with(path, ".gguf");
        if (!is_gguf && !ends_with(path, ".ckpt")) {
            char magic[4] = {0};
            FILE *f = fopen(path, "rb");
            if (f) {
                if (fread(magic, 1, 4, f) != 4) magic[0] = 0;
                fclose(f);
            }
            is_gguf = memcmp(magic, "GGUF", 4) == 0;
        }
        if (is_gguf) rc = gguf_import(path, be, out);
        else rc = ckpt_load(path, be, &out->model, &out->extras);
    }
    if (rc != 0) return -1;
    if ((flags & MODEL_LOAD_TOKENIZER) && !out->tok) {
        if (!out->extras.tokenizer_json) {
            model_bundle_free(out);
            return align_errorf("%s has no tokenizer", path);
        }
        out->tok = tok_load_hf_json(out->extras.tokenizer_json, strlen(out->extras.tokenizer_json),
                                    path);
        if (!out->tok) {
            model_bundle_free(out);
            return -1;
        }
    }
    return 0;
}

int model_save_any(const char *path, ModelBundle *b) {
    if (ends_with(path, ".ckpt")) return ckpt_save(path, b->model, &b->extras);
    if (ends_with(path, ".gguf")) return align_errorf("%s: writing GGUF is not supported", path);
    return hf_export_dir(path, b->model, &b->extras);
}

/* ------------------------------------------------------------------ templates */

/* One source of truth for templates: chat_template.c. */
const char *model_detect_chat_template(const char *jinja) {
    ChatTemplate t;
    if (!jinja || chat_template_detect(jinja, &t) != CHAT_DETECT_MATCHED) return NULL;
    return chat_template_name(t);
}

const char *model_chat_template_jinja(const char *name) {
    if (!name || !strcmp(name, "none")) return NULL;
    return chat_template_jinja(name);
}
