/* hf_quant: see the header. The unpacking follows the formats' published
 * definitions (AutoGPTQ's QuantLinear.pack, AutoAWQ's WQLinear_GEMM
 * .from_linear) read backwards; tests/fixtures/make_gptq_awq_fixtures.py
 * packs with its own PyTorch code and checks the result. */
#include "hf_quant.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "quant_int4.h"
#include "util.h"

const char *hf_quant_method_name(HfQuantMethod m) { return m == HF_QUANT_GPTQ ? "GPTQ" : m == HF_QUANT_AWQ ? "AWQ" : "none"; }

static const cJSON *field(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

int hf_quant_parse(const char *json, size_t len, const char *path, HfQuant *q) {
    memset(q, 0, sizeof *q);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return align_errorf("%s is not valid JSON", path);
    const cJSON *qc = field(root, "quantization_config");
    int rc = -1;
    if (!qc || cJSON_IsNull(qc)) {
        rc = 0;
        goto done;
    }
    const cJSON *m = field(qc, "quant_method");
    if (!cJSON_IsObject(qc) || !cJSON_IsString(m)) {
        align_errorf("%s: quantization_config has no quant_method string", path);
        goto done;
    }
    if (!strcasecmp(m->valuestring, "gptq")) q->method = HF_QUANT_GPTQ;
    else if (!strcasecmp(m->valuestring, "awq")) q->method = HF_QUANT_AWQ;
    else {
        align_errorf("%s: quantization_config.quant_method \"%s\" is not supported (align reads 4-bit gptq and awq checkpoints)",
                     path, m->valuestring);
        goto done;
    }
    const cJSON *bits = field(qc, "bits");
    if (!bits) bits = field(qc, "w_bit"); /* AutoAWQ's own quant_config.json spelling */
    if (!cJSON_IsNumber(bits) || bits->valuedouble != 4) {
        if (cJSON_IsNumber(bits))
            align_errorf("%s: quantization_config.bits is %g; align reads 4-bit %s checkpoints only", path, bits->valuedouble,
                         hf_quant_method_name(q->method));
        else
            align_errorf("%s: quantization_config has no bits number", path);
        goto done;
    }
    const cJSON *gs = field(qc, "group_size");
    if (!gs) gs = field(qc, "q_group_size");
    double g = cJSON_IsNumber(gs) ? gs->valuedouble : 0;
    if (g != 32 && g != 64 && g != 128 && g != -1) {
        align_errorf("%s: quantization_config.group_size %g is not supported (32, 64, 128 or -1)", path, g);
        goto done;
    }
    q->group_size = (int)g;
    if (q->method == HF_QUANT_GPTQ) {
        /* checkpoint_format (transformers, optimum) or format (GPTQModel):
         * the stored layout; v1 ("gptq") keeps zero - 1 */
        const cJSON *fmt = field(qc, "checkpoint_format");
        const char *key = "checkpoint_format";
        if (!cJSON_IsString(fmt)) fmt = field(qc, "format"), key = "format";
        const char *f = cJSON_IsString(fmt) ? fmt->valuestring : "gptq";
        if (!strcasecmp(f, "gptq")) q->zero_offset = 1;
        else if (!strcasecmp(f, "gptq_v2")) q->zero_offset = 0;
        else {
            align_errorf("%s: quantization_config.%s \"%s\" is not supported (align reads the gptq and gptq_v2 layouts; "
                         "marlin, bitblas and other kernel formats are repacked for one GPU kernel)",
                         path, key, f);
            goto done;
        }
    } else {
        const cJSON *v = field(qc, "version");
        if (cJSON_IsString(v) && strcasecmp(v->valuestring, "gemm")) {
            align_errorf("%s: quantization_config.version \"%s\" is not supported (align reads AWQ's gemm layout)", path,
                         v->valuestring);
            goto done;
        }
        const cJSON *zp = field(qc, "zero_point");
        if (cJSON_IsFalse(zp)) {
            align_errorf("%s: quantization_config.zero_point is false; align reads AWQ checkpoints with zero points", path);
            goto done;
        }
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

static int base_name(const char *weight_name, const char *suffix, char *out, size_t n) {
    size_t k = strlen(weight_name);
    if (k < 7 || strcmp(weight_name + k - 7, ".weight") || k - 7 + strlen(suffix) + 1 >= n) return -1;
    snprintf(out, n, "%.*s.%s", (int)(k - 7), weight_name, suffix);
    return 0;
}

int hf_quant_has(HfQuantFind find, void *ctx, const char *weight_name) {
    char nm[256];
    const StFile *f;
    return base_name(weight_name, "qweight", nm, sizeof nm) == 0 && find(ctx, nm, &f) != NULL;
}

/* A tensor of the given dtype and 1-D / 2-D shape, else an error naming it. */
static const void *tensor(HfQuantFind find, void *ctx, const char *weight_name, const char *suffix, StDtype dt, int ndim,
                          int64_t d0, int64_t d1) {
    char nm[256];
    const StFile *f = NULL;
    base_name(weight_name, suffix, nm, sizeof nm);
    const StTensor *t = find(ctx, nm, &f);
    if (!t) {
        align_errorf("the checkpoint has %.*s.qweight but no %s", (int)strlen(nm) - (int)strlen(suffix) - 1, nm, nm);
        return NULL;
    }
    if (t->dtype != dt) {
        align_errorf("%s: %s is %s, expected %s", f->path, nm, st_dtype_name(t->dtype), st_dtype_name(dt));
        return NULL;
    }
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char got[64] = "";
        for (int i = 0; i < t->ndim && strlen(got) < 40; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t->shape[i]);
        if (ndim == 2)
            align_errorf("%s: %s has shape [%s], expected [%lld,%lld] from the config's sizes and group_size", f->path, nm, got,
                         (long long)d0, (long long)d1);
        else
            align_errorf("%s: %s has shape [%s], expected [%lld]", f->path, nm, got, (long long)d0);
        return NULL;
    }
    return f->data + t->begin;
}

static int32_t ld32(const void *p, size_t i) {
    int32_t v;
    memcpy(&v, (const uint8_t *)p + 4 * i, 4);
    return v;
}

/* groups and group size of a layer with cols inputs */
static void layout(const HfQuant *q, int64_t cols, int64_t *groups, int64_t *gs) {
    *gs = q->group_size > 0 ? q->group_size : cols;
    *groups = (cols + *gs - 1) / *gs;
}

/* g_idx: the tensor's (checked) or i / group_size; sets *act */
static int read_gidx(const HfQuant *q, HfQuantFind find, void *ctx, const char *weight_name, int64_t cols, int64_t groups,
                     int64_t gs, int32_t *out, int *act) {
    *act = 0;
    char nm[256];
    const StFile *f;
    const void *g = NULL;
    base_name(weight_name, "g_idx", nm, sizeof nm);
    if (q->method == HF_QUANT_GPTQ && find(ctx, nm, &f) &&
        !(g = tensor(find, ctx, weight_name, "g_idx", ST_I32, 1, cols, 0)))
        return -1;
    for (int64_t i = 0; i < cols; i++) {
        int32_t v = g ? ld32(g, (size_t)i) : (int32_t)(i / gs);
        if (v < 0 || v >= groups)
            return align_errorf("%.*s.g_idx[%lld] = %d is not one of its %lld groups", (int)strlen(weight_name) - 7,
                                weight_name, (long long)i, v, (long long)groups);
        if (v != i / gs) *act = 1;
        if (out) out[i] = v;
    }
    return 0;
}

static int type_for(int64_t cols, int64_t groups, int64_t gs, int act, int group_size, QuantType *t) {
    if (cols % 32 || (act && groups > 256)) return -1;
    QuantType k;
    if (quant_int4_type(group_size, act, &k)) return -1;
    *t = k;
    return 0;
}

int hf_quant_peek_type(const HfQuant *q, HfQuantFind find, void *ctx, const char *weight_name, int64_t rows, int64_t cols,
                       QuantType *t) {
    (void)rows;
    int64_t groups, gs;
    int act;
    layout(q, cols, &groups, &gs);
    if (read_gidx(q, find, ctx, weight_name, cols, groups, gs, NULL, &act)) return -1;
    if (type_for(cols, groups, gs, act, q->group_size, t)) *t = QUANT_NONE;
    return 0;
}

int hf_quant_type(const HfQuant *q, const HfQuantLinear *l, QuantType *t) {
    return type_for(l->cols, l->groups, l->group_size, l->act_order, q->group_size, t);
}

void hf_quant_linear_free(HfQuantLinear *l) {
    free(l->codes), free(l->zeros), free(l->scales), free(l->g_idx);
    memset(l, 0, sizeof *l);
}

/* where output o sits in an int32 word of AWQ's packing: nibble
 * awq_nibble[o % 8] (the inverse of the order [0,2,4,6,1,3,5,7]) */
static const int awq_nibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};

int hf_quant_read(const HfQuant *q, HfQuantFind find, void *ctx, const char *weight_name, int64_t rows, int64_t cols,
                  HfQuantLinear *l) {
    memset(l, 0, sizeof *l);
    int64_t G, gs;
    layout(q, cols, &G, &gs);
    int awq = q->method == HF_QUANT_AWQ;
    if (rows % 8 || cols % 8)
        return align_errorf("%s: a quantised [%lld, %lld] weight must have a multiple of 8 outputs and inputs", weight_name,
                            (long long)rows, (long long)cols);
    const void *qw = awq ? tensor(find, ctx, weight_name, "qweight", ST_I32, 2, cols, rows / 8)
                         : tensor(find, ctx, weight_name, "qweight", ST_I32, 2, cols / 8, rows);
    const void *qz = qw ? tensor(find, ctx, weight_name, "qzeros", ST_I32, 2, G, rows / 8) : NULL;
    const void *sc = qz ? tensor(find, ctx, weight_name, "scales", ST_F16, 2, G, rows) : NULL;
    if (!sc) return -1;
    l->rows = rows, l->cols = cols, l->groups = G, l->group_size = gs;
    l->codes = malloc((size_t)rows * cols);
    l->zeros = malloc((size_t)rows * G);
    l->scales = malloc((size_t)rows * G * 2);
    l->g_idx = malloc((size_t)cols * 4);
    if (!l->codes || !l->zeros || !l->scales || !l->g_idx) {
        hf_quant_linear_free(l);
        return align_errorf("out of memory reading %s", weight_name);
    }
    if (read_gidx(q, find, ctx, weight_name, cols, G, gs, l->g_idx, &l->act_order)) {
        hf_quant_linear_free(l);
        return -1;
    }
    for (int64_t o = 0; o < rows; o++) {
        uint8_t *c = l->codes + o * cols;
        int shift = 4 * (awq ? awq_nibble[o % 8] : (int)(o % 8));
        for (int64_t i = 0; i < cols; i++) {
            uint32_t w = awq ? (uint32_t)ld32(qw, (size_t)(i * (rows / 8) + o / 8))
                             : (uint32_t)ld32(qw, (size_t)((i / 8) * rows + o));
            c[i] = (uint8_t)((awq ? w >> shift : w >> (4 * (i % 8))) & 0xF);
        }
        for (int64_t g = 0; g < G; g++) {
            uint32_t z = (uint32_t)ld32(qz, (size_t)(g * (rows / 8) + o / 8));
            l->zeros[o * G + g] = (uint8_t)(((z >> shift) & 0xF) + (uint32_t)q->zero_offset);
            memcpy(&l->scales[o * G + g], (const uint8_t *)sc + 2 * (size_t)(g * rows + o), 2);
        }
    }
    return 0;
}

int hf_quant_to_rows(const HfQuantLinear *l, QuantType t, void *out) {
    return quant_int4_pack(t, l->rows, l->cols, l->codes, l->scales, l->zeros, l->g_idx, out);
}

void hf_quant_dequantize(const HfQuantLinear *l, float *out) {
    for (int64_t o = 0; o < l->rows; o++)
        for (int64_t i = 0; i < l->cols; i++) {
            int64_t g = l->g_idx[i];
            out[o * l->cols + i] =
                quant_f16_to_f32(l->scales[o * l->groups + g]) * (float)((int)l->codes[o * l->cols + i] - l->zeros[o * l->groups + g]);
        }
}
