/* peft.c: PEFT adapter directories and merged exports (see peft.h). */
#include "peft.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "util.h"

static int score_trains(Model *m) {
    ParamInfo *p = model_find_param(m, "score.weight");
    return p && p->grad_offset >= 0;
}

int peft_save_adapter(const char *dir, Model *m, const char *base_name) {
    const LoraConfig *lc = model_lora_config(m);
    if (!lc) return align_errorf("the model has no LoRA adapters to save");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return align_errorf("cannot create %s: %s", dir, strerror(errno));
    size_t n = model_lora_numel(m);
    ParamInfo *score = score_trains(m) ? model_find_param(m, "score.weight") : NULL;
    float *host = malloc((n + (score ? score->numel : 0) + 1) * sizeof(float));
    StWriter *w = st_writer_new();
    int rc = -1;
    char path[4096];
    cJSON *cfg = NULL;
    char *text = NULL;
    if (!host || !w) {
        align_errorf("out of memory saving the adapter");
        goto done;
    }
    if (model_lora_get(m, host)) goto done;
    size_t base = m->info[m->n_params - 1].offset + m->info[m->n_params - 1].numel - n;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (!p->lora) continue;
        if (st_writer_add(w, p->name, ST_F32, p->ndim, p->shape, host + (p->offset - base))) goto done;
    }
    if (score) {
        m->be->to_host(host + n, m->params + score->offset, score->numel * sizeof(float));
        if (st_writer_add(w, "base_model.model.score.weight", ST_F32, 2, score->shape, host + n)) goto done;
    }
    if (st_writer_meta(w, "format", "pt")) goto done;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (st_writer_save(w, path)) goto done;

    char names[8][24];
    int nt = lora_target_modules(lc->targets, m->cfg.arch, names);
    if (m->cfg.phi3) { /* peft adapts Phi-3's fused modules, as our adapters do (lora.c) */
        unsigned t = lc->targets;
        nt = 0;
        if (t & (LORA_T_Q | LORA_T_K | LORA_T_V)) strcpy(names[nt++], "qkv_proj");
        if (t & LORA_T_O) strcpy(names[nt++], "o_proj");
        if (t & (LORA_T_GATE | LORA_T_UP)) strcpy(names[nt++], "gate_up_proj");
        if (t & LORA_T_DOWN) strcpy(names[nt++], "down_proj");
    }
    cfg = cJSON_CreateObject();
    int ia3 = lc->method == LORA_METHOD_IA3;
    cJSON_AddStringToObject(cfg, "peft_type", ia3 ? "IA3" : "LORA");
    cJSON_AddStringToObject(cfg, "task_type", score ? "SEQ_CLS" : "CAUSAL_LM");
    if (base_name) cJSON_AddStringToObject(cfg, "base_model_name_or_path", base_name);
    else cJSON_AddNullToObject(cfg, "base_model_name_or_path");
    if (ia3) { /* peft's IA3Config: the down projection's input is scaled */
        cJSON *tm = cJSON_AddArrayToObject(cfg, "target_modules");
        for (int i = 0; i < nt; i++) cJSON_AddItemToArray(tm, cJSON_CreateString(names[i]));
        char ff[8][24];
        int nf = lora_target_modules(lc->targets & LORA_T_DOWN, m->cfg.arch, ff);
        cJSON *fm = cJSON_AddArrayToObject(cfg, "feedforward_modules");
        for (int i = 0; i < nf; i++) cJSON_AddItemToArray(fm, cJSON_CreateString(ff[i]));
        cJSON_AddBoolToObject(cfg, "fan_in_fan_out", m->cfg.arch == ARCH_GPT2);
        cJSON_AddBoolToObject(cfg, "inference_mode", 1);
        cJSON_AddBoolToObject(cfg, "init_ia3_weights", 1);
        goto modules_to_save;
    }
    cJSON_AddNumberToObject(cfg, "r", lc->rank);
    cJSON_AddNumberToObject(cfg, "lora_alpha", lc->alpha);
    cJSON_AddNumberToObject(cfg, "lora_dropout", lc->dropout);
    cJSON *tm = cJSON_AddArrayToObject(cfg, "target_modules");
    for (int i = 0; i < nt; i++) cJSON_AddItemToArray(tm, cJSON_CreateString(names[i]));
    cJSON_AddStringToObject(cfg, "bias", "none");
    cJSON_AddBoolToObject(cfg, "fan_in_fan_out", m->cfg.arch == ARCH_GPT2);
    cJSON_AddBoolToObject(cfg, "inference_mode", 1);
    cJSON_AddBoolToObject(cfg, "init_lora_weights", 1);
    cJSON_AddBoolToObject(cfg, "use_rslora", 0);
    cJSON_AddBoolToObject(cfg, "use_dora", lc->method == LORA_METHOD_DORA);
modules_to_save:
    if (score) {
        cJSON *ms = cJSON_AddArrayToObject(cfg, "modules_to_save");
        cJSON_AddItemToArray(ms, cJSON_CreateString("score"));
    } else {
        cJSON_AddNullToObject(cfg, "modules_to_save");
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

/* Copy file tensor t ([rows, cols] F32/F16/BF16) into parameter p. */
static int read_into(Model *m, const StFile *f, const StTensor *t, const ParamInfo *p) {
    if (t->ndim != p->ndim || t->shape[0] != p->shape[0] || (p->ndim == 2 && t->shape[1] != p->shape[1]))
        return align_errorf("%s: %s has shape [%lld, %lld], the adapter config needs [%lld, %lld]", f->path, t->name,
                            (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                            (long long)p->shape[0], (long long)p->shape[1]);
    float *host = malloc(p->numel * sizeof(float));
    if (!host) return align_errorf("out of memory");
    int rc = st_read_f32(f, t, host);
    if (!rc) m->be->to_device(m->params + p->offset, host, p->numel * sizeof(float));
    free(host);
    return rc;
}

int peft_load_adapter(const char *dir, Model *m, uint64_t seed) {
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    size_t len;
    char *text = align_read_file(path, &len);
    if (!text) return align_error_prefix("--lora-adapter");
    cJSON *o = cJSON_Parse(text);
    free(text);
    if (!o) return align_errorf("%s is not valid JSON", path);
    LoraConfig lc;
    lora_config_defaults(&lc);
    lc.seed = seed;
    int rc = -1;
    cJSON *pt = cJSON_GetObjectItem(o, "peft_type"), *r = cJSON_GetObjectItem(o, "r"),
          *al = cJSON_GetObjectItem(o, "lora_alpha"), *dr = cJSON_GetObjectItem(o, "lora_dropout"),
          *tm = cJSON_GetObjectItem(o, "target_modules");
    int ia3 = cJSON_IsString(pt) && !strcmp(pt->valuestring, "IA3");
    if (!cJSON_IsString(pt) || (strcmp(pt->valuestring, "LORA") && !ia3)) {
        align_errorf("%s: peft_type is %s, expected LORA or IA3", path, cJSON_IsString(pt) ? pt->valuestring : "missing");
        goto done;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItem(o, "use_rslora"))) {
        align_errorf("%s: rsLoRA adapters are not supported", path);
        goto done;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItem(o, "use_dora"))) lc.method = LORA_METHOD_DORA;
    if (ia3) lc.method = LORA_METHOD_IA3;
    cJSON *rp = cJSON_GetObjectItem(o, "rank_pattern"), *ap = cJSON_GetObjectItem(o, "alpha_pattern");
    if ((cJSON_IsObject(rp) && rp->child) || (cJSON_IsObject(ap) && ap->child)) {
        align_errorf("%s: per-module rank_pattern/alpha_pattern is not supported", path);
        goto done;
    }
    if (!ia3 && (!cJSON_IsNumber(r) || !cJSON_IsNumber(al))) {
        align_errorf("%s: r and lora_alpha are required", path);
        goto done;
    }
    if (!ia3) {
        lc.rank = r->valueint;
        lc.alpha = (float)al->valuedouble;
        lc.dropout = cJSON_IsNumber(dr) ? (float)dr->valuedouble : 0.0f;
    }
    char list[1024] = "";
    if (cJSON_IsArray(tm)) {
        cJSON *it;
        cJSON_ArrayForEach(it, tm) {
            if (!cJSON_IsString(it)) continue;
            /* peft matches by suffix; we know modules by their last names */
            const char *nm = it->valuestring;
            if (strlen(list) + strlen(nm) + 2 < sizeof list) {
                if (list[0]) strcat(list, ",");
                strcat(list, nm);
            }
        }
    } else if (cJSON_IsString(tm)) {
        if (!strcmp(tm->valuestring, "all-linear")) strcpy(list, "all");
        else {
            align_errorf("%s: target_modules as a regular expression is not supported", path);
            goto done;
        }
    }
    if (ia3 && !list[0]) lc.targets = lora_ia3_default_targets(m->cfg.arch); /* target_modules null: peft's default */
    else if (lora_parse_targets(list, &lc.targets)) {
        align_error_prefix("%s", path);
        goto done;
    }
    if (ia3) { /* align scales the input of the down projection, the output of the others, as peft's defaults */
        cJSON *fm = cJSON_GetObjectItem(o, "feedforward_modules"), *it;
        unsigned ff = 0, bits;
        if (cJSON_IsArray(fm))
            cJSON_ArrayForEach(it, fm) {
                if (!cJSON_IsString(it) || lora_parse_targets(it->valuestring, &bits)) {
                    align_errorf("%s: feedforward_modules: %s", path, cJSON_IsString(it) ? align_error() : "not a string");
                    goto done;
                }
                ff |= bits;
            }
        else if (!cJSON_IsNull(fm) && fm) {
            align_errorf("%s: feedforward_modules must be a list", path);
            goto done;
        } else ff = lc.targets & LORA_T_DOWN;
        if ((ff & lc.targets) != (lc.targets & LORA_T_DOWN)) {
            align_errorf("%s: feedforward_modules must be the targeted down projections (down_proj; GPT-2: mlp.c_proj)",
                         path);
            goto done;
        }
    }
    if (model_lora_attach(m, &lc)) goto done;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    StFile f;
    if (st_open(&f, path)) goto done;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (!p->lora) continue;
        const StTensor *t = st_find(&f, p->name);
        if (!t) {
            /* peft also writes the adapter name in some versions */
            char alt[160];
            size_t k = strlen(p->name);
            int w = k > 7 && !strcmp(p->name + k - 7, ".weight");
            snprintf(alt, sizeof alt, "%.*s.default%s", (int)(w ? k - 7 : k), p->name, w ? ".weight" : "");
            t = st_find(&f, alt);
        }
        if (!t) {
            align_errorf("%s lacks %s", path, p->name);
            st_close(&f);
            goto done;
        }
        if (read_into(m, &f, t, p)) {
            st_close(&f);
            goto done;
        }
    }
    const StTensor *st = st_find(&f, "base_model.model.score.weight");
    ParamInfo *sp = model_find_param(m, "score.weight");
    if (st && sp && read_into(m, &f, st, sp)) {
        st_close(&f);
        goto done;
    }
    st_close(&f);
    rc = 0;
done:
    cJSON_Delete(o);
    return rc;
}

int peft_adapter_from_extras(Model *m, CkptExtras *e) {
    int restored = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (!p->lora) continue;
        const CkptTensor *t = ckpt_extras_find(e, p->name);
        if (!t) continue;
        if (t->numel != p->numel)
            return align_errorf("checkpoint adapter %s has %zu elements, the LoRA settings need %zu (resume with the same --lora-* flags)",
                                p->name, t->numel, p->numel);
        m->be->to_device(m->params + p->offset, t->data, p->numel * sizeof(float));
        restored++;
    }
    /* drop them, so the final save doesn't write them twice */
    int k = 0;
    for (int i = 0; i < e->n_tensors; i++) {
        CkptTensor *t = &e->tensors[i];
        ParamInfo *p = model_find_param(m, t->name);
        if (p && p->lora) {
            if (t->owned) align_free(t->data);
            free(t->name);
            continue;
        }
        e->tensors[k++] = *t;
    }
    e->n_tensors = k;
    return restored;
}
