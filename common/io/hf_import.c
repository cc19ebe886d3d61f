/* hf_import: see the header. Shards are opened once each (mapped, so only
 * the pages of tensors we read are touched) and every parameter is looked up
 * by its HF name through the index's weight_map. */
#include "hf_import.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hf_quant.h"
#include "model_config_json.h"
#include "quant_int4.h"
#include "chat_template.h"
#include "phi3_fused.h"
#include "util.h"

#define HF_MAX_SHARDS 1024

typedef struct {
    int n;
    char *names[HF_MAX_SHARDS];
    StFile files[HF_MAX_SHARDS];
} Shards;

static void shards_close(Shards *s) {
    for (int i = 0; i < s->n; i++) {
        st_close(&s->files[i]);
        free(s->names[i]);
    }
    s->n = 0;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* A shard file name from the index must stay inside the directory. */
static int safe_shard_name(const char *s) {
    return s[0] && s[0] != '/' && !strstr(s, "..") && strlen(s) < 512;
}

static int shards_open(Shards *s, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (file_exists(path)) {
        s->names[0] = strdup("model.safetensors");
        if (st_open(&s->files[0], path) != 0) {
            free(s->names[0]);
            return -1;
        }
        s->n = 1;
        return 0;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!file_exists(path)) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin", dir);
        if (file_exists(bin))
            return align_errorf("%s holds pytorch_model.bin only; convert it to safetensors first "
                                "(transformers: save_pretrained(safe_serialization=True))",
                                dir);
        return align_errorf("%s has neither model.safetensors nor model.safetensors.index.json",
                            dir);
    }
    size_t len;
    char *text = align_read_file(path, &len);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map"), *it;
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return align_errorf("%s has no weight_map object", path);
    }
    cJSON_ArrayForEach(it, map) {
        if (!cJSON_IsString(it) || !safe_shard_name(it->valuestring)) {
            cJSON_Delete(root);
            return align_errorf("%s: bad shard file name for %.64s", path, it->string);
        }
        int known = 0;
        for (int i = 0; i < s->n && !known; i++) known = strcmp(s->names[i], it->valuestring) == 0;
        if (known) continue;
        if (s->n == HF_MAX_SHARDS) {
            cJSON_Delete(root);
            return align_errorf("%s lists more than %d shards", path, HF_MAX_SHARDS);
        }
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/%s", dir, it->valuestring);
        if (st_open(&s->files[s->n], sp) != 0) {
            cJSON_Delete(root);
            return -1;
        }
        s->names[s->n++] = strdup(it->valuestring);
    }
    cJSON_Delete(root);
    if (s->n == 0) return align_errorf("%s lists no shards", path);
    return 0;
}

static const StTensor *shards_find(const Shards *s, const char *name, const StFile **file) {
    for (int i = 0; i < s->n; i++) {
        const StTensor *t = st_find(&s->files[i], name);
        if (t) {
            *file = &s->files[i];
            return t;
        }
    }
    return NULL;
}

static const StTensor *find_cb(void *ctx, const char *name, const StFile **file) { return shards_find(ctx, name, file); }

/* Storage types while creating the model: a GPTQ/AWQ layer keeps its
 * groups (QUANT_I4_*), any other quantizable weight takes the fallback
 * (--quantize-base, or fp32). The first bad g_idx is kept in err. */
typedef struct {
    Shards *sh;
    const HfQuant *hq;
    int fallback, err;
} QuantPick;

static int pick_quant(const ParamInfo *p, void *ctx) {
    QuantPick *c = ctx;
    if (c->hq->method && hf_quant_has(find_cb, c->sh, p->name)) {
        QuantType t = QUANT_NONE;
        if (!c->err && hf_quant_peek_type(c->hq, find_cb, c->sh, p->name, p->shape[0], p->shape[1], &t)) c->err = 1;
        return t;
    }
    return c->fallback;
}

/* One GPTQ/AWQ layer into parameter p: its groups kept as rows of p's
 * QUANT_I4 type, or (a layer align cannot keep: lm_head, a fused group
 * whose members differ) dequantised to fp32 and stored as p's type. */
static int read_quantised(Model *m, const ParamInfo *p, const HfQuant *hq, Shards *sh, float *host) {
    if (p->ndim != 2) return align_errorf("%s is stored quantised but is not a matrix", p->name);
    HfQuantLinear l;
    if (hf_quant_read(hq, find_cb, sh, p->name, p->shape[0], p->shape[1], &l)) return -1;
    int rc = -1;
    QuantType t;
    void *blk = NULL;
    float *x = NULL;
    if (quant_int4_is(p->qtype)) {
        if (hf_quant_type(hq, &l, &t) || t != (QuantType)p->qtype) {
            align_errorf("%s: its groups changed between two reads", p->name);
            goto out;
        }
        if (!(blk = malloc((size_t)p->shape[0] * quant_row_bytes(t, p->shape[1])))) goto oom;
        if (hf_quant_to_rows(&l, t, blk) || model_param_set_blocks(m, p, blk)) goto out;
        rc = 0;
        goto out;
    }
    if (!p->qtype) {
        hf_quant_dequantize(&l, host + p->offset);
    } else {
        if (!(x = align_alloc(p->numel * sizeof(float)))) goto oom;
        hf_quant_dequantize(&l, x);
        if (!(blk = malloc((size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1])))) goto oom;
        if (quant_quantize_rows((QuantType)p->qtype, x, blk, p->shape[0], p->shape[1]) || model_param_set_blocks(m, p, blk))
            goto out;
    }
    rc = 0;
    goto out;
oom:
    align_errorf("out of memory reading %s", p->name);
out:
    hf_quant_linear_free(&l);
    free(blk);
    align_free(x);
    return rc;
}

/* The chat template of tokenizer_config.json: a string, or a list of
 * {name, template} where "default" is the one used for chat. */
static char *read_chat_template(const char *dir) {
    char path[4096];
    size_t len;
    /* transformers' save_pretrained writes the template to its own file
     * (tokenizer_config.json then has none), and from_pretrained lets that
     * file win over a tokenizer_config entry: so here, or a model TRL saved
     * would load without its template */
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    if (file_exists(path)) return align_read_file(path, &len);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *text = file_exists(path) ? align_read_file(path, &len) : NULL;
    if (!text) return NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "chat_template"), *it;
    char *out = NULL;
    if (cJSON_IsString(ct)) {
        out = strdup(ct->valuestring);
    } else if (cJSON_IsArray(ct)) {
        cJSON_ArrayForEach(it, ct) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "template");
            if (cJSON_IsString(n) && cJSON_IsString(t) && strcmp(n->valuestring, "default") == 0)
                out = strdup(t->valuestring);
        }
    }
    cJSON_Delete(root);
    return out;
}

/* tokenizer_config.json's add_bos_token: 1, 0, or -1 when absent. */
static int read_add_bos(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    size_t len;
    char *text = file_exists(path) ? align_read_file(path, &len) : NULL;
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
    int out = cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
    cJSON_Delete(root);
    return out;
}

/* transformers' slow-to-fast tokenizers rebuild the post-processor from
 * tokenizer_config.json's add_bos_token when it is given, so it decides over
 * tokenizer.json's; the JSON that travels on is rewritten to say so. */
static int apply_add_bos(const char *dir, char **json) {
    int want = read_add_bos(dir);
    if (want < 0) return 0;
    Tokenizer *t = tok_load_hf_json(*json, strlen(*json), "tokenizer.json");
    if (!t) return align_error_prefix("%s", dir);
    int rc = 0;
    if (tok_add_bos(t) != want && tok_bos_id(t) >= 0) {
        char *j = NULL;
        rc = tok_set_add_bos(t, want) || !(j = tok_to_hf_json(t)) ? -1 : 0;
        if (!rc) free(*json), *json = j;
        else align_error_prefix("%s: add_bos_token", dir);
    }
    tok_free(t);
    return rc;
}

int hf_import_dir(const char *dir, const Backend *be, ModelBundle *out) { return hf_import_dir_quant(dir, be, 0, out); }

int hf_import_dir_quant(const char *dir, const Backend *be, int qtype, ModelBundle *out) {
    memset(out, 0, sizeof *out);
    ckpt_extras_init(&out->extras);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len;
    char *text = align_read_file(path, &len);
    if (!text) return align_error_prefix("%s is not a Hugging Face model directory", dir);
    ModelConfig cfg;
    int rc = model_config_from_hf_json(text, len, path, &cfg);
    HfQuant hq;
    if (rc == 0) rc = hf_quant_parse(text, len, path, &hq);
    free(text);
    if (rc != 0) return -1;
    /* the CUDA dequantisation kernel knows the GGUF block types only */
    if (hq.method && strcmp(be->name, "cpu"))
        return align_errorf("%s: %s checkpoints run on the CPU backend only for now (--device cpu)", dir,
                            hf_quant_method_name(hq.method));

    Shards *sh = calloc(1, sizeof *sh);
    if (!sh) return align_errorf("out of memory opening %s", dir);
    Model *m = NULL;
    float *host = NULL;
    rc = -1;
    if (shards_open(sh, dir) != 0) goto done;
    QuantPick qp = {sh, &hq, qtype, 0};
    m = hq.method ? model_create_quant(&cfg, be, pick_quant, &qp) : ckpt_model_create(&cfg, be, qtype);
    if (!m || qp.err) {
        align_error_prefix("%s", dir);
        goto done;
    }
    if (!(host = ckpt_host_params(m, 0))) goto done;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        ParamInfo group;
        int fused = phi3_fused_group(&m->cfg, p, &group);
        if (fused == 2) continue; /* read with its group's first member */
        if (fused == 1) p = &group;
        const StFile *f = NULL;
        const StTensor *t = shards_find(sh, p->name, &f);
        /* The original GPT-2 checkpoints name tensors without the prefix. */
        if (!t && strncmp(p->name, "transformer.", 12) == 0) t = shards_find(sh, p->name + 12, &f);
        /* Gemma 3 with a vision tower: the text model's tensors sit under
         * language_model (transformers 4: language_model.model.*, 5:
         * model.language_model.*) */
        if (!t && cfg.gemma == 3) {
            char alt[160];
            int model_pre = strncmp(p->name, "model.", 6) == 0;
            snprintf(alt, sizeof alt, "language_model.%s", p->name);
            t = shards_find(sh, alt, &f);
            if (!t && model_pre) {
                snprintf(alt, sizeof alt, "model.language_model.%s", p->name + 6);
                t = shards_find(sh, alt, &f);
            }
        }
        if (!t && hq.method && hf_quant_has(find_cb, sh, p->name)) {
            if (read_quantised(m, p, &hq, sh, host)) {
                align_error_prefix("%s", dir);
                goto done;
            }
            continue;
        }
        if (!t) {
            align_errorf("%s lacks tensor %s that its config.json requires", dir, p->name);
            goto done;
        }
        if (ckpt_read_param_into(m, p, f, t, host) != 0) goto done;
    }
    ckpt_host_params_release(m, host, 1);
    host = NULL;

    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (file_exists(path) && !(out->extras.tokenizer_json = align_read_file(path, &len))) goto done;
    if (out->extras.tokenizer_json && apply_add_bos(dir, &out->extras.tokenizer_json)) goto done;
    out->extras.chat_template_jinja = read_chat_template(dir);
    if (out->extras.chat_template_jinja) {
        const char *name = chat_template_detect_name(out->extras.chat_template_jinja);
        if (name && ckpt_extras_set(&out->extras.chat_template, name)) goto done;
    }
    rc = 0;
done:
    if (host) ckpt_host_params_release(m, host, 0);
    shards_close(sh);
    free(sh);
    if (rc != 0) {
        model_free(m);
        ckpt_extras_free(&out->extras);
    } else {
        out->model = m;
    }
    return rc;
}
