/* peft_prompt.c: prompt-learning adapter directories (see peft_prompt.h). */
#include "peft_prompt.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "util.h"

/* peft's num_attention_heads and token_dim for this model and kind. */
static void peft_heads(const Model *m, PromptKind kind, int *heads, int *token_dim) {
    const ModelConfig *c = &m->cfg;
    if (kind == PREFIX_TUNING) {
        *heads = c->n_kv_heads;
        *token_dim = c->n_kv_heads * c->head_dim;
    } else {
        *heads = c->n_heads;
        *token_dim = c->dim;
    }
}

int peft_prompt_save(const char *dir, Model *m, const char *base_name) {
    const PromptConfig *pc = model_prompt_config(m);
    if (!pc) return align_errorf("the model has no virtual tokens to save");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return align_errorf("cannot create %s: %s", dir, strerror(errno));
    int64_t shape[2] = {pc->n_virtual, pc->kind == PROMPT_TUNING ? m->cfg.dim
                                                                  : (int64_t)2 * m->cfg.n_layers * m->cfg.n_kv_heads * m->cfg.head_dim};
    float *host = malloc((size_t)shape[0] * shape[1] * sizeof(float));
    StWriter *w = st_writer_new();
    cJSON *cfg = NULL;
    char *text = NULL, path[4096];
    int rc = -1;
    if (!host || !w) {
        align_errorf("out of memory saving the adapter");
        goto done;
    }
    /* peft saves what the virtual rows use: with the projection, its output */
    if (model_prompt_values(m, host)) goto done;
    if (st_writer_add(w, "prompt_embeddings", ST_F32, 2, shape, host) || st_writer_meta(w, "format", "pt")) goto done;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (st_writer_save(w, path)) goto done;
    int heads, token_dim;
    peft_heads(m, pc->kind, &heads, &token_dim);
    cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "peft_type", pc->kind == PREFIX_TUNING ? "PREFIX_TUNING" : "PROMPT_TUNING");
    cJSON_AddStringToObject(cfg, "task_type", "CAUSAL_LM");
    if (base_name) cJSON_AddStringToObject(cfg, "base_model_name_or_path", base_name);
    else cJSON_AddNullToObject(cfg, "base_model_name_or_path");
    cJSON_AddNumberToObject(cfg, "num_virtual_tokens", pc->n_virtual);
    cJSON_AddNumberToObject(cfg, "token_dim", token_dim);
    cJSON_AddNumberToObject(cfg, "num_layers", m->cfg.n_layers);
    cJSON_AddNumberToObject(cfg, "num_attention_heads", heads);
    cJSON_AddNumberToObject(cfg, "num_transformer_submodules", 1);
    cJSON_AddBoolToObject(cfg, "inference_mode", 1);
    cJSON_AddNullToObject(cfg, "modules_to_save");
    if (pc->kind == PREFIX_TUNING) {
        /* projected, the file holds the MLP's output: peft loads it so for inference */
        cJSON_AddBoolToObject(cfg, "prefix_projection", pc->projection != 0);
        cJSON_AddNumberToObject(cfg, "encoder_hidden_size", token_dim);
    } else {
        /* the init only shapes a new adapter; a TEXT one would make peft
         * want its tokenizer, so the trained values are recorded as RANDOM */
        cJSON_AddStringToObject(cfg, "prompt_tuning_init", "RANDOM");
        cJSON_AddNullToObject(cfg, "prompt_tuning_init_text");
        cJSON_AddNullToObject(cfg, "tokenizer_name_or_path");
    }
    text = cJSON_Print(cfg);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (!text || align_write_file_atomic(path, text, strlen(text))) goto done;
    rc = 0;
done:
    free(text);
    cJSON_Delete(cfg);
    st_writer_free(w);
    free(host);
    return rc;
}

static cJSON *read_config(const char *dir, char *path, size_t n) {
    snprintf(path, n, "%s/adapter_config.json", dir);
    size_t len;
    char *text = align_read_file(path, &len);
    if (!text) return NULL;
    cJSON *o = cJSON_Parse(text);
    free(text);
    if (!o) align_errorf("%s is not valid JSON", path);
    return o;
}

static int kind_of(const cJSON *o) {
    const cJSON *pt = cJSON_GetObjectItem(o, "peft_type");
    if (!cJSON_IsString(pt)) return 0;
    if (!strcmp(pt->valuestring, "PROMPT_TUNING")) return PROMPT_TUNING;
    if (!strcmp(pt->valuestring, "PREFIX_TUNING")) return PREFIX_TUNING;
    return 0;
}

int peft_prompt_is_adapter(const char *dir) {
    char path[4096];
    cJSON *o = read_config(dir, path, sizeof path);
    if (!o) return -1;
    int k = kind_of(o);
    cJSON_Delete(o);
    return k != 0;
}

/* An integer field that must be present, or must equal want when want >= 0. */
static int config_int(const cJSON *o, const char *path, const char *key, int want, int *out) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    if (!cJSON_IsNumber(v)) return align_errorf("%s: %s is missing", path, key);
    if (want >= 0 && v->valueint != want)
        return align_errorf("%s: %s is %d, this model needs %d (an adapter for another model?)", path, key, v->valueint, want);
    *out = v->valueint;
    return 0;
}

int peft_prompt_load(const char *dir, Model *m) {
    char path[4096];
    cJSON *o = read_config(dir, path, sizeof path);
    if (!o) return -1;
    int rc = -1, kind = kind_of(o), nv = 0, heads, token_dim, x;
    if (!kind) {
        align_errorf("%s: peft_type is not PROMPT_TUNING or PREFIX_TUNING", path);
        goto done;
    }
    const cJSON *tt = cJSON_GetObjectItem(o, "task_type");
    if (cJSON_IsString(tt) && strcmp(tt->valuestring, "CAUSAL_LM")) {
        align_errorf("%s: task_type %s; align reads CAUSAL_LM prompt-learning adapters", path, tt->valuestring);
        goto done;
    }
    peft_heads(m, (PromptKind)kind, &heads, &token_dim);
    if (config_int(o, path, "num_virtual_tokens", -1, &nv) || config_int(o, path, "token_dim", token_dim, &x) ||
        config_int(o, path, "num_layers", m->cfg.n_layers, &x) ||
        config_int(o, path, "num_attention_heads", heads, &x))
        goto done;
    const cJSON *sub = cJSON_GetObjectItem(o, "num_transformer_submodules");
    if (cJSON_IsNumber(sub) && sub->valueint != 1) {
        align_errorf("%s: num_transformer_submodules %d; a decoder has 1", path, sub->valueint);
        goto done;
    }
    PromptConfig pc = {.kind = (PromptKind)kind, .n_virtual = nv};
    if (model_prompt_attach(m, &pc)) {
        align_error_prefix("%s", path);
        goto done;
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    StFile f;
    if (st_open(&f, path)) goto done;
    const StTensor *t = st_find(&f, "prompt_embeddings");
    ParamInfo *p = model_prompt_param(m);
    if (!t) {
        align_errorf("%s lacks prompt_embeddings", path);
    } else if (t->ndim != 2 || t->shape[0] != p->shape[0] || t->shape[1] != p->shape[1]) {
        align_errorf("%s: prompt_embeddings has shape [%lld, %lld], the config needs [%lld, %lld]", path,
                     (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)p->shape[0],
                     (long long)p->shape[1]);
    } else {
        float *host = malloc(p->numel * sizeof(float));
        if (!host) align_errorf("out of memory");
        else if (!st_read_f32(&f, t, host)) {
            m->be->to_device(m->params + p->offset, host, p->numel * sizeof(float));
            rc = 0;
        }
        free(host);
    }
    st_close(&f);
done:
    cJSON_Delete(o);
    return rc;
}

/* The five tensors of a --prefix-projection checkpoint, if it has them. */
static int projection_from_extras(Model *m, CkptExtras *e) {
    static const char *const names[5] = {"prefix_tuning.embedding.weight", "prefix_tuning.transform.0.weight",
                                         "prefix_tuning.transform.0.bias", "prefix_tuning.transform.2.weight",
                                         "prefix_tuning.transform.2.bias"};
    const CkptTensor *emb = ckpt_extras_find(e, names[0]);
    if (!emb) return 0;
    PromptConfig pc = {.kind = PREFIX_TUNING, .n_virtual = emb->ndim == 2 ? (int)emb->shape[0] : 0, .projection = 1};
    if (model_prompt_attach(m, &pc)) return align_error_prefix("the checkpoint's prefix projection");
    for (int k = 0; k < 5; k++) {
        const CkptTensor *t = ckpt_extras_find(e, names[k]);
        const ParamInfo *p = model_find_param(m, names[k]);
        if (!t || t->numel != p->numel)
            return align_errorf("the checkpoint's prefix projection: %s is %s", names[k], t ? "of another size" : "missing");
        m->be->to_device(m->params + p->offset, t->data, p->numel * sizeof(float));
    }
    int k = 0; /* drop them, so a save does not write them twice */
    for (int i = 0; i < e->n_tensors; i++) {
        CkptTensor *t = &e->tensors[i];
        if (!strncmp(t->name, "prefix_tuning.", 14)) {
            if (t->owned) align_free(t->data);
            free(t->name);
            continue;
        }
        e->tensors[k++] = *t;
    }
    e->n_tensors = k;
    return 1;
}

int peft_prompt_from_extras(Model *m, CkptExtras *e) {
    int r = projection_from_extras(m, e);
    if (r) return r;
    for (int kind = PROMPT_TUNING; kind <= PREFIX_TUNING; kind++) {
        const char *name = prompt_param_name((PromptKind)kind);
        int idx = -1;
        for (int i = 0; i < e->n_tensors; i++)
            if (!strcmp(e->tensors[i].name, name)) idx = i;
        if (idx < 0) continue;
        CkptTensor *t = &e->tensors[idx];
        PromptConfig pc = {.kind = (PromptKind)kind, .n_virtual = t->ndim == 2 ? (int)t->shape[0] : 0};
        if (model_prompt_attach(m, &pc)) return align_error_prefix("the checkpoint's %s", name);
        ParamInfo *p = model_prompt_param(m);
        if (t->numel != p->numel)
            return align_errorf("the checkpoint's %s has %zu elements, this model's virtual tokens need %zu", name, t->numel,
                                p->numel);
        m->be->to_device(m->params + p->offset, t->data, p->numel * sizeof(float));
        if (t->owned) align_free(t->data);
        free(t->name);
        memmove(t, t + 1, (e->n_tensors - idx - 1) * sizeof *t);
        e->n_tensors--;
        return 1;
    }
    return 0;
}
