/* hf_export: see the header. The weights go through the same staging as
 * ckpt_save, so an exported directory re-imports bit-exact. Token strings
 * for bos/eos/pad in tokenizer_config.json come from the tokenizer.json
 * text itself (added_tokens first, then the model vocabulary). */
#include "hf_export.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_config_json.h"
#include "chat_template.h"
#include "util.h"

/* Write text to dir/name (atomically: util.h). */
static int write_text_atomic(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return align_write_file_atomic(path, text, strlen(text));
}

/* The string of token `id` in a tokenizer.json document, or NULL. */
static const char *token_string(const cJSON *tok, int id) {
    if (id < 0 || !tok) return NULL;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tok, "added_tokens"), *it;
    cJSON_ArrayForEach(it, added) {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (cJSON_IsNumber(i) && i->valueint == id && cJSON_IsString(c)) return c->valuestring;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tok, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    cJSON_ArrayForEach(it, vocab) if (cJSON_IsNumber(it) && it->valueint == id) return it->string;
    return NULL;
}

static char *tokenizer_config_json(const ModelConfig *c, const CkptExtras *x) {
    cJSON *tok = x && x->tokenizer_json ? cJSON_Parse(x->tokenizer_json) : NULL;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "tokenizer_class", "PreTrainedTokenizerFast");
    const char *bos = token_string(tok, c->bos_id), *eos = token_string(tok, c->eos_id);
    const char *pad = token_string(tok, c->pad_id);
    if (bos) cJSON_AddStringToObject(r, "bos_token", bos);
    if (eos) cJSON_AddStringToObject(r, "eos_token", eos);
    if (pad) cJSON_AddStringToObject(r, "pad_token", pad);
    cJSON_AddNumberToObject(r, "model_max_length", c->max_seq_len > 0 ? c->max_seq_len : 2048);
    cJSON_AddFalseToObject(r, "clean_up_tokenization_spaces");
    const char *jinja = x ? x->chat_template_jinja : NULL;
    if (!jinja && x && x->chat_template) jinja = chat_template_export_jinja(x->chat_template);
    if (jinja) cJSON_AddStringToObject(r, "chat_template", jinja);
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    cJSON_Delete(tok);
    return s;
}

static char *generation_config_json(const ModelConfig *c) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddTrueToObject(r, "_from_model_config");
    if (c->bos_id >= 0) cJSON_AddNumberToObject(r, "bos_token_id", c->bos_id);
    if (c->eos_id >= 0) cJSON_AddNumberToObject(r, "eos_token_id", c->eos_id);
    if (c->pad_id >= 0) cJSON_AddNumberToObject(r, "pad_token_id", c->pad_id);
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}

int hf_export_dir(const char *dir, Model *m, const CkptExtras *x) {
    char path[4096];
    int rc = -1;
    char *config = NULL, *tcfg = NULL, *gcfg = NULL;
    StWriter *w = st_writer_new();
    CkptStage *s = NULL;
    /* staged first: a model refused there (not finite) leaves no directory */
    if (!w || !(s = ckpt_stage_model_hf(m, w, 1))) {
        align_error_prefix("cannot save %s", dir);
        goto done;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        align_errorf("cannot create directory %s: %s", dir, strerror(errno));
        goto done;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        align_errorf("%s exists and is not a directory", dir);
        goto done;
    }
    if (st_writer_meta(w, "format", "pt")) goto done;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (st_writer_save(w, path)) goto done;
    if (!(config = model_config_to_hf_json(&m->cfg))) goto done;
    if (write_text_atomic(dir, "config.json", config)) goto done;
    if (x && x->tokenizer_json && write_text_atomic(dir, "tokenizer.json", x->tokenizer_json))
        goto done;
    if (!(tcfg = tokenizer_config_json(&m->cfg, x)) || !(gcfg = generation_config_json(&m->cfg))) {
        align_errorf("out of memory writing %s", dir);
        goto done;
    }
    if (write_text_atomic(dir, "tokenizer_config.json", tcfg) ||
        write_text_atomic(dir, "generation_config.json", gcfg))
        goto done;
    /* a chat_template.jinja already in the directory (transformers'
     * save_pretrained writes one) wins over tokenizer_config.json when
     * transformers loads it: it gets this model's template, or goes */
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    if (stat(path, &sb) == 0) {
        const char *jinja = x ? x->chat_template_jinja : NULL;
        if (!jinja && x && x->chat_template) jinja = chat_template_export_jinja(x->chat_template);
        if (jinja ? write_text_atomic(dir, "chat_template.jinja", jinja) : unlink(path) != 0) {
            if (!jinja) align_errorf("cannot remove %s: %s", path, strerror(errno));
            goto done;
        }
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
done:
    free(config);
    free(tcfg);
    free(gcfg);
    ckpt_stage_free(s);
    st_writer_free(w);
    return rc;
}
