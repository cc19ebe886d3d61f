/* ckpt: see the header for the format.
 *
 * Saving stages the parameters on the host in Hugging Face layout (only the
 * transposed GPT-2 Conv1D tensors need a copy on the CPU backend), adds the
 * extras, hashes the data section in the order the writer will lay it out,
 * and lets st_writer_save stream everything to a temporary file and rename
 * it. Loading maps the file (st_open validates the structure), checks the
 * hash before trusting any value, builds the model from the stored config,
 * and fills every parameter, refusing a missing or mis-shaped one. */
#include "ckpt.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_config_json.h"
#include "phi3_fused.h"
#include "util.h"

/* ------------------------------------------------------------------ XXH64 */

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* little-endian hosts only, as the rest of the formats code */
}
static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t xxh_round(uint64_t acc, uint64_t in) {
    acc += in * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}
static inline uint64_t xxh_merge(uint64_t acc, uint64_t val) {
    acc ^= xxh_round(0, val);
    return acc * P1 + P4;
}

void ckpt_hash_init(CkptHash *h) {
    memset(h, 0, sizeof *h);
    h->v[0] = P1 + P2;
    h->v[1] = P2;
    h->v[2] = 0;
    h->v[3] = (uint64_t)0 - P1;
}

static void xxh_stripe(uint64_t *v, const uint8_t *p) {
    v[0] = xxh_round(v[0], rd64(p));
    v[1] = xxh_round(v[1], rd64(p + 8));
    v[2] = xxh_round(v[2], rd64(p + 16));
    v[3] = xxh_round(v[3], rd64(p + 24));
}

void ckpt_hash_update(CkptHash *h, const void *data, size_t len) {
    const uint8_t *p = data;
    h->total += len;
    if (h->buf_len) {
        size_t take = 32 - h->buf_len < len ? 32 - h->buf_len : len;
        memcpy(h->buf + h->buf_len, p, take);
        h->buf_len += take;
        p += take;
        len -= take;
        if (h->buf_len < 32) return;
        xxh_stripe(h->v, h->buf);
        h->buf_len = 0;
    }
    while (len >= 32) {
        xxh_stripe(h->v, p);
        p += 32;
        len -= 32;
    }
    memcpy(h->buf, p, len);
    h->buf_len = len;
}

uint64_t ckpt_hash_final(const CkptHash *h) {
    uint64_t acc;
    if (h->total >= 32) {
        acc = rotl64(h->v[0], 1) + rotl64(h->v[1], 7) + rotl64(h->v[2], 12) + rotl64(h->v[3], 18);
        for (int i = 0; i < 4; i++) acc = xxh_merge(acc, h->v[i]);
    } else {
        acc = h->v[2] + P5;
    }
    acc += h->total;
    const uint8_t *p = h->buf;
    size_t len = h->buf_len;
    while (len >= 8) {
        acc ^= xxh_round(0, rd64(p));
        acc = rotl64(acc, 27) * P1 + P4;
        p += 8;
        len -= 8;
    }
    if (len >= 4) {
        acc ^= (uint64_t)rd32(p) * P1;
        acc = rotl64(acc, 23) * P2 + P3;
        p += 4;
        len -= 4;
    }
    while (len--) {
        acc ^= (*p++) * P5;
        acc = rotl64(acc, 11) * P1;
    }
    acc ^= acc >> 33;
    acc *= P2;
    acc ^= acc >> 29;
    acc *= P3;
    acc ^= acc >> 32;
    return acc;
}

uint64_t ckpt_hash64(const void *data, size_t len) {
    CkptHash h;
    ckpt_hash_init(&h);
    ckpt_hash_update(&h, data, len);
    return ckpt_hash_final(&h);
}

/* ------------------------------------------------------------------ extras */

void ckpt_extras_init(CkptExtras *e) { memset(e, 0, sizeof *e); }

void ckpt_extras_free(CkptExtras *e) {
    if (!e) return;
    free(e->tokenizer_json);
    free(e->chat_template);
    free(e->chat_template_jinja);
    free(e->train_state);
    free(e->base_model);
    for (int i = 0; i < e->n_tensors; i++) {
        free(e->tensors[i].name);
        if (e->tensors[i].owned) align_free(e->tensors[i].data);
    }
    free(e->tensors);
    memset(e, 0, sizeof *e);
}

int ckpt_extras_set(char **field, const char *s) {
    char *c = NULL;
    if (s && !(c = strdup(s))) return align_errorf("out of memory copying checkpoint metadata");
    free(*field);
    *field = c;
    return 0;
}

int ckpt_extras_add(CkptExtras *e, const char *name, int ndim, const int64_t *shape,
                    const float *data, int copy) {
    if (ndim < 0 || ndim > 8) return align_errorf("extra tensor %s: bad rank %d", name, ndim);
    if (ckpt_extras_find(e, name)) return align_errorf("extra tensor %s added twice", name);
    CkptTensor *t = realloc(e->tensors, (e->n_tensors + 1) * sizeof *t);
    if (!t) return align_errorf("out of memory adding extra tensor %s", name);
    e->tensors = t;
    t = &e->tensors[e->n_tensors];
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->name = strdup(name);
    if (!t->name) return align_errorf("out of memory adding extra tensor %s", name);
    if (copy) {
        t->data = align_alloc(t->numel * sizeof(float));
        if (!t->data) {
            free(t->name);
            return -1;
        }
        memcpy(t->data, data, t->numel * sizeof(float));
        t->owned = 1;
    } else {
        t->data = (float *)data;
    }
    e->n_tensors++;
    return 0;
}

const CkptTensor *ckpt_extras_find(const CkptExtras *e, const char *name) {
    for (int i = 0; i < e->n_tensors; i++)
        if (strcmp(e->tensors[i].name, name) == 0) return &e->tensors[i];
    return NULL;
}

int ckpt_extras_add_moments(CkptExtras *e, const Model *m, const float *m1, const float *m2) {
    char name[160];
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (p->grad_offset < 0) continue;
        snprintf(name, sizeof name, "optim.m.%s", p->name);
        if (ckpt_extras_add(e, name, p->ndim, p->shape, m1 + p->grad_offset, 0)) return -1;
        snprintf(name, sizeof name, "optim.v.%s", p->name);
        if (ckpt_extras_add(e, name, p->ndim, p->shape, m2 + p->grad_offset, 0)) return -1;
    }
    return 0;
}

int ckpt_extras_get_moments(const CkptExtras *e, const Model *m, float *m1, float *m2) {
    char name[160];
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (p->grad_offset < 0) continue;
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "optim.%c.%s", k ? 'v' : 'm', p->name);
            const CkptTensor *t = ckpt_extras_find(e, name);
            if (!t) return align_errorf("checkpoint has no optimizer moment %s", name);
            if (t->numel != p->numel)
                return align_errorf("optimizer moment %s has %zu elements, the parameter %zu",
                                    name, t->numel, p->numel);
            memcpy((k ? m2 : m1) + p->grad_offset, t->data, p->numel * sizeof(float));
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ staging */

static int is_cpu(const Model *m) { return !m->be || strcmp(m->be->name, "cpu") == 0; }

float *ckpt_host_params(Model *m, int fetch) {
    if (is_cpu(m)) return m->params;
    float *h = align_alloc(m->n_elems * sizeof(float));
    if (h && fetch) m->be->to_host(h, m->params, m->n_elems * sizeof(float));
    return h;
}

void ckpt_host_params_release(Model *m, float *host, int commit) {
    if (!host || host == m->params) return;
    if (commit) m->be->to_device(m->params, host, m->n_elems * sizeof(float));
    align_free(host);
}

struct CkptStage {
    Model *m;
    float *host;
    int n_bufs;
    float **bufs;
    const float **src;  /* per parameter: the data handed to the writer */
};

void ckpt_stage_free(CkptStage *s) {
    if (!s) return;
    for (int i = 0; i < s->n_bufs; i++) align_free(s->bufs[i]);
    free(s->bufs);
    free(s->src);
    ckpt_host_params_release(s->m, s->host, 0);
    free(s);
}

CkptStage *ckpt_stage_model(Model *m, StWriter *w) { return ckpt_stage_model_hf(m, w, 0); }

CkptStage *ckpt_stage_model_hf(Model *m, StWriter *w, int hf_names) {
    CkptStage *s = calloc(1, sizeof *s);
    if (!s || !(s->bufs = calloc(m->n_params ? 2 * m->n_params : 1, sizeof *s->bufs)) ||
        !(s->src = calloc(m->n_params ? m->n_params : 1, sizeof *s->src))) {
        if (s) free(s->bufs);
        free(s);
        align_errorf("out of memory staging the model for writing");
        return NULL;
    }
    s->m = m;
    s->host = ckpt_host_params(m, 1);
    if (!s->host) goto fail;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        ParamInfo group;
        int fused = hf_names ? phi3_fused_group(&m->cfg, p, &group) : 0;
        if (fused == 2) continue; /* written with its group's first member */
        int members = fused ? (strstr(p->name, "q_proj") ? 3 : 2) : 1;
        if (fused) p = &group;
        const float *src = s->host + p->offset;
        if (p->qtype) { /* a quantised base weight is saved dequantised (a fused group member by member) */
            float *t = align_alloc(p->numel * sizeof(float));
            if (!t) goto fail;
            s->bufs[s->n_bufs++] = t;
            for (size_t k = 0, off = 0; k < (size_t)members; k++) {
                const ParamInfo *mp = &m->info[i + k];
                if (model_param_to_host(m, mp, t + off)) goto fail;
                off += mp->numel;
            }
            src = t;
        }
        /* a NaN or Inf weight poisons every output: such a model is
         * refused here, where every writer passes, for one read of it */
        for (size_t k = 0; k < p->numel; k++)
            if (!isfinite(src[k])) {
                align_errorf("parameter %s holds %g at element %zu: refusing to write a model that is not finite",
                             p->name, src[k], k);
                goto fail;
            }
        int64_t shape[2] = {p->shape[0], p->shape[1]};
        if (p->hf_transposed && p->ndim == 2) {
            int64_t R = p->shape[0], C = p->shape[1]; /* ours [out=R, in=C] -> HF [C, R] */
            float *t = align_alloc(p->numel * sizeof(float));
            if (!t) goto fail;
            s->bufs[s->n_bufs++] = t;
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) t[c * R + r] = src[r * C + c];
            src = t;
            shape[0] = C;
            shape[1] = R;
        }
        s->src[i] = src;
        if (st_writer_add(w, p->name, ST_F32, p->ndim, shape, src) != 0) goto fail;
    }
    return s;
fail:
    ckpt_stage_free(s);
    return NULL;
}

int ckpt_read_param(const ParamInfo *p, const StFile *f, const StTensor *t, float *host) {
    int64_t want0 = p->shape[0], want1 = p->ndim == 2 ? p->shape[1] : 0;
    if (p->hf_transposed && p->ndim == 2) {
        want0 = p->shape[1];
        want1 = p->shape[0];
    }
    int ok = t->ndim == p->ndim && t->shape[0] == want0 && (p->ndim < 2 || t->shape[1] == want1);
    if (!ok) {
        char got[64] = "", want[64];
        for (int i = 0; i < t->ndim && strlen(got) < 40; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRId64, i ? "," : "",
                     t->shape[i]);
        if (p->ndim == 2) snprintf(want, sizeof want, "%" PRId64 ",%" PRId64, want0, want1);
        else snprintf(want, sizeof want, "%" PRId64, want0);
        return align_errorf("%s: tensor %s has shape [%s], the config needs [%s]", f->path, p->name,
                            got, want);
    }
    float *dst = host + p->offset;
    if (!(p->hf_transposed && p->ndim == 2)) {
        if (st_read_f32(f, t, dst) != 0) return -1;
        return 0;
    }
    float *tmp = align_alloc(p->numel * sizeof(float));
    if (!tmp) return -1;
    if (st_read_f32(f, t, tmp) != 0) {
        align_free(tmp);
        return -1;
    }
    int64_t R = p->shape[0], C = p->shape[1]; /* file [C, R] -> ours [R, C] */
    for (int64_t c = 0; c < C; c++)
        for (int64_t r = 0; r < R; r++) dst[r * C + c] = tmp[c * R + r];
    align_free(tmp);
    return 0;
}

int ckpt_read_param_into(Model *m, const ParamInfo *p, const StFile *f, const StTensor *t, float *host) {
    if (!p->qtype) return ckpt_read_param(p, f, t, host);
    ParamInfo one = *p;
    one.offset = 0;
    size_t bytes = (size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1]);
    float *x = align_alloc(p->numel * sizeof(float));
    void *blk = malloc(bytes ? bytes : 1);
    int rc = -1;
    if (!x || !blk) align_errorf("out of memory reading %s", p->name);
    else if (ckpt_read_param(&one, f, t, x) == 0 &&
             quant_quantize_rows((QuantType)p->qtype, x, blk, p->shape[0], p->shape[1]) == 0)
        rc = model_param_set_blocks(m, p, blk);
    align_free(x);
    free(blk);
    return rc;
}

static int pick_fixed(const ParamInfo *p, void *ctx) {
    (void)p;
    return *(const int *)ctx;
}

Model *ckpt_model_create(const ModelConfig *cfg, const Backend *be, int qtype) {
    return qtype ? model_create_quant(cfg, be, pick_fixed, &qtype) : model_create(cfg, be);
}

/* ------------------------------------------------------------------ save / load */

int ckpt_save(const char *path, Model *m, const CkptExtras *extras) {
    StWriter *w = st_writer_new();
    if (!w) return -1;
    CkptStage *s = NULL;
    char *config = NULL;
    int rc = -1;
    if (!(s = ckpt_stage_model(m, w))) goto done;
    if (extras)
        for (int i = 0; i < extras->n_tensors; i++) {
            const CkptTensor *t = &extras->tensors[i];
            if (model_find_param(m, t->name)) {
                align_errorf("extra tensor %s has the name of a model parameter", t->name);
                goto done;
            }
            if (st_writer_add(w, t->name, ST_F32, t->ndim, t->shape, t->data)) goto done;
        }
    if (!(config = model_config_to_hf_json(&m->cfg))) goto done;
    /* The data section is the tensors in the order added: hash it so. */
    CkptHash h;
    ckpt_hash_init(&h);
    {
        for (int i = 0; i < m->n_params; i++) ckpt_hash_update(&h, s->src[i], m->info[i].numel * sizeof(float));
        if (extras)
            for (int i = 0; i < extras->n_tensors; i++)
                ckpt_hash_update(&h, extras->tensors[i].data,
                                 extras->tensors[i].numel * sizeof(float));
    }
    char sum[32];
    snprintf(sum, sizeof sum, "xxh64:%016" PRIx64, ckpt_hash_final(&h));
    if (st_writer_meta(w, "format", "pt") || st_writer_meta(w, "align_format", "ckpt-1") ||
        st_writer_meta(w, "config", config) || st_writer_meta(w, "checksum", sum))
        goto done;
    if (extras) {
        if ((extras->tokenizer_json && st_writer_meta(w, "tokenizer", extras->tokenizer_json)) ||
            (extras->chat_template && st_writer_meta(w, "chat_template", extras->chat_template)) ||
            (extras->chat_template_jinja &&
             st_writer_meta(w, "chat_template_jinja", extras->chat_template_jinja)) ||
            (extras->train_state && st_writer_meta(w, "train_state", extras->train_state)) ||
            (extras->base_model && st_writer_meta(w, "base_model", extras->base_model)))
            goto done;
    }
    rc = st_writer_save(w, path);
done:
    if (rc != 0 && !strstr(align_error(), path)) align_error_prefix("cannot save %s", path);
    free(config);
    ckpt_stage_free(s);
    st_writer_free(w);
    return rc;
}

static int ckpt_open_checked(StFile *f, const char *path, ModelConfig *cfg) {
    if (st_open(f, path) != 0) return -1;
    const char *fmt = st_meta(f, "align_format");
    const char *config = st_meta(f, "config");
    if (!fmt || !config) {
        st_close(f);
        return align_errorf("%s is a safetensors file but not an align checkpoint (no "
                            "align_format/config metadata)",
                            path);
    }
    if (strcmp(fmt, "ckpt-1") != 0) {
        align_errorf("%s has checkpoint format \"%.32s\", this build reads ckpt-1", path, fmt);
        st_close(f);
        return -1;
    }
    if (model_config_from_hf_json(config, strlen(config), path, cfg) != 0) {
        st_close(f);
        return -1;
    }
    return 0;
}

int ckpt_read_config(const char *path, ModelConfig *cfg) {
    StFile f;
    if (ckpt_open_checked(&f, path, cfg) != 0) return -1;
    st_close(&f);
    return 0;
}

int ckpt_load(const char *path, const Backend *be, Model **out, CkptExtras *extras_out) {
    return ckpt_load_quant(path, be, 0, out, extras_out);
}

int ckpt_load_quant(const char *path, const Backend *be, int qtype, Model **out, CkptExtras *extras_out) {
    *out = NULL;
    if (extras_out) ckpt_extras_init(extras_out);
    StFile f;
    ModelConfig cfg;
    if (ckpt_open_checked(&f, path, &cfg) != 0) return -1;
    Model *m = NULL;
    float *host = NULL;
    char *seen = NULL;
    int rc = -1;
    const char *sum = st_meta(&f, "checksum");
    if (!sum) {
        align_errorf("%s has no checksum; refusing to trust it", path);
        goto done;
    }
    char want[32];
    snprintf(want, sizeof want, "xxh64:%016" PRIx64, ckpt_hash64(f.data, f.data_len));
    if (strcmp(sum, want) != 0) {
        align_errorf("%s is corrupt: the data checksum is %s but the header says %.40s", path,
                     want, sum);
        goto done;
    }
    if (!(m = ckpt_model_create(&cfg, be, qtype))) {
        align_error_prefix("%s", path);
        goto done;
    }
    if (!(host = ckpt_host_params(m, 0))) goto done;
    seen = calloc(f.n_tensors ? f.n_tensors : 1, 1);
    if (!seen) {
        align_errorf("out of memory loading %s", path);
        goto done;
    }
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        const StTensor *t = st_find(&f, p->name);
        if (!t) {
            align_errorf("%s lacks tensor %s that its config requires", path, p->name);
            goto done;
        }
        seen[t - f.tensors] = 1;
        if (ckpt_read_param_into(m, p, &f, t, host) != 0) goto done;
    }
    for (int i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        if (seen[i] || !extras_out) continue;
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64) {
            align_errorf("%s: extra tensor %s has non-float dtype %s", path, t->name,
                         st_dtype_name(t->dtype));
            goto done;
        }
        size_t n = (size_t)st_numel(t);
        float *buf = align_alloc((n ? n : 1) * sizeof(float));
        if (!buf || st_read_f32(&f, t, buf) != 0 ||
            ckpt_extras_add(extras_out, t->name, t->ndim, t->shape, buf, 0) != 0) {
            align_free(buf);
            goto done;
        }
        extras_out->tensors[extras_out->n_tensors - 1].owned = 1;
    }
    if (extras_out) {
        if (ckpt_extras_set(&extras_out->tokenizer_json, st_meta(&f, "tokenizer")) ||
            ckpt_extras_set(&extras_out->chat_template, st_meta(&f, "chat_template")) ||
            ckpt_extras_set(&extras_out->chat_template_jinja, st_meta(&f, "chat_template_jinja")) ||
            ckpt_extras_set(&extras_out->train_state, st_meta(&f, "train_state")) ||
            ckpt_extras_set(&extras_out->base_model, st_meta(&f, "base_model")))
            goto done;
    }
    ckpt_host_params_release(m, host, 1);
    host = NULL;
    rc = 0;
done:
    free(seen);
    if (m && host) ckpt_host_params_release(m, host, 0);
    st_close(&f);
    if (rc != 0) {
        model_free(m);
        if (extras_out) ckpt_extras_free(extras_out);
    } else {
        *out = m;
    }
    return rc;
}
