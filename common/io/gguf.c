/* gguf: see the header.
 *
 * Parsing limits: every count read from the file is checked against the
 * bytes left before anything is sized from it (a KV needs at least 12 bytes,
 * a tensor info at least 24, an array element at least its own size or 8
 * for a string), and tensor ranges are checked against the data section.
 * Nested arrays are refused (llama.cpp writes none). */
#include "gguf.h"
#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat_template.h"
#include "phi3_fused.h"
#include "util.h"

/* ------------------------------------------------------------------ cursor */

typedef struct {
    const uint8_t *p, *end;
    const char *origin;
} Cur;

static int need(Cur *c, size_t n, const char *what) {
    if ((size_t)(c->end - c->p) < n)
        return align_errorf("%s is truncated or corrupt: %s runs past the end of the file",
                            c->origin, what);
    return 0;
}
static int rd_u32(Cur *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    memcpy(v, c->p, 4);
    c->p += 4;
    return 0;
}
static int rd_u64(Cur *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    memcpy(v, c->p, 8);
    c->p += 8;
    return 0;
}
static int rd_str(Cur *c, char **out, const char *what) {
    uint64_t n;
    if (rd_u64(c, &n, what)) return -1;
    if (n > (uint64_t)(c->end - c->p))
        return align_errorf("%s is corrupt: a %s claims %llu bytes, more than the file holds",
                            c->origin, what, (unsigned long long)n);
    char *s = malloc(n + 1);
    if (!s) return align_errorf("out of memory reading %s", c->origin);
    memcpy(s, c->p, n);
    s[n] = 0;
    c->p += n;
    *out = s;
    return 0;
}

static const size_t scalar_size[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static void set_scalar(GgufKV *kv, const uint8_t *p) {
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        uint64_t u64;
        int64_t i64;
        double f64;
    } u;
    memcpy(&u, p, scalar_size[kv->type]);
    switch (kv->type) {
    case GGUF_UINT8: kv->i = u.u8; break;
    case GGUF_INT8: kv->i = u.i8; break;
    case GGUF_UINT16: kv->i = u.u16; break;
    case GGUF_INT16: kv->i = u.i16; break;
    case GGUF_UINT32: kv->i = u.u32; break;
    case GGUF_INT32: kv->i = u.i32; break;
    case GGUF_BOOL: kv->i = u.u8 != 0; break;
    case GGUF_UINT64: kv->i = (int64_t)u.u64; break;
    case GGUF_INT64: kv->i = u.i64; break;
    /* a float outside int64's range (or NaN) has no integer value */
    case GGUF_FLOAT32: kv->f = u.f32; kv->i = (kv->f >= -9.2e18 && kv->f <= 9.2e18) ? (int64_t)kv->f : 0; return;
    case GGUF_FLOAT64: kv->f = u.f64; kv->i = (kv->f >= -9.2e18 && kv->f <= 9.2e18) ? (int64_t)kv->f : 0; return;
    default: return;
    }
    kv->f = (double)kv->i;
}

static int read_kv(Cur *c, GgufKV *kv) {
    if (rd_str(c, &kv->key, "metadata key")) return -1;
    uint32_t t;
    if (rd_u32(c, &t, "metadata type")) return -1;
    if (t >= GGUF_TYPE_COUNT)
        return align_errorf("%s is corrupt: metadata %.64s has unknown type %u", c->origin, kv->key,
                            t);
    kv->type = (GgufType)t;
    if (t == GGUF_STRING) return rd_str(c, &kv->str, "metadata string");
    if (t != GGUF_ARRAY) {
        if (need(c, scalar_size[t], "metadata value")) return -1;
        set_scalar(kv, c->p);
        c->p += scalar_size[t];
        return 0;
    }
    uint32_t at;
    uint64_t n;
    if (rd_u32(c, &at, "array type") || rd_u64(c, &n, "array length")) return -1;
    if (at >= GGUF_TYPE_COUNT || at == GGUF_ARRAY)
        return align_errorf("%s: metadata %.64s is an array of unsupported type %u", c->origin,
                            kv->key, at);
    kv->arr_type = (GgufType)at;
    size_t left = (size_t)(c->end - c->p);
    size_t min_elem = at == GGUF_STRING ? 8 : scalar_size[at];
    if (n > left / min_elem)
        return align_errorf("%s is corrupt: array %.64s claims %llu elements, more than the file "
                            "holds",
                            c->origin, kv->key, (unsigned long long)n);
    kv->arr_n = n;
    if (at != GGUF_STRING) {
        kv->arr = c->p;
        c->p += n * scalar_size[at];
        return 0;
    }
    kv->arr_str = calloc(n ? n : 1, sizeof(char *));
    if (!kv->arr_str) return align_errorf("out of memory reading %s", c->origin);
    for (uint64_t i = 0; i < n; i++)
        if (rd_str(c, &kv->arr_str[i], "array string")) return -1;
    return 0;
}

/* ------------------------------------------------------------------ tensors */

static int type_block(uint32_t type, size_t *block, size_t *bytes) {
    switch (type) {
    case GGML_F32: *block = 1, *bytes = 4; return 0;
    case GGML_F16: *block = 1, *bytes = 2; return 0;
    case GGML_BF16: *block = 1, *bytes = 2; return 0;
    default: /* the block types: QuantType values are the ggml ids */
        if (!quant_is_ggml((int)type)) return -1;
        *block = (size_t)quant_block_elems((QuantType)type), *bytes = quant_block_bytes((QuantType)type);
        return 0;
    }
}

int64_t gguf_tensor_numel(const GgufTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

static int read_tensor_info(Cur *c, GgufTensor *t) {
    if (rd_str(c, &t->name, "tensor name")) return -1;
    uint32_t nd;
    if (rd_u32(c, &nd, "tensor rank")) return -1;
    if (nd < 1 || nd > 4)
        return align_errorf("%s: tensor %.64s has %u dimensions (1 to 4)", c->origin, t->name, nd);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t d;
        if (rd_u64(c, &d, "tensor dimension")) return -1;
        if (d == 0 || d > ((uint64_t)1 << 40) || numel > ((uint64_t)1 << 42) / d)
            return align_errorf("%s: tensor %.64s has an implausible dimension %llu", c->origin,
                                t->name, (unsigned long long)d);
        t->ne[i] = (int64_t)d;
        numel *= d;
    }
    if (rd_u32(c, &t->type, "tensor type") || rd_u64(c, &t->offset, "tensor offset")) return -1;
    size_t block, bytes;
    if (type_block(t->type, &block, &bytes) != 0)
        return align_errorf("%s: tensor %.64s has ggml type %u, which is not supported (F32, F16, "
                            "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; "
                            "not the IQ types)",
                            c->origin, t->name, t->type);
    if (t->ne[0] % (int64_t)block != 0)
        return align_errorf("%s: tensor %.64s row of %lld is not a whole number of %zu-blocks",
                            c->origin, t->name, (long long)t->ne[0], block);
    t->bytes = (size_t)(numel / block * bytes);
    return 0;
}

/* ------------------------------------------------------------------ open */

void gguf_close(GgufFile *f) {
    if (!f) return;
    for (int i = 0; i < f->n_kv; i++) {
        GgufKV *kv = &f->kv[i];
        free(kv->key);
        free(kv->str);
        if (kv->arr_str) {
            for (uint64_t j = 0; j < kv->arr_n; j++) free(kv->arr_str[j]);
            free(kv->arr_str);
        }
    }
    free(f->kv);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* Parse into f, which is zeroed except for its mapping. */
static int parse_into(GgufFile *f, const uint8_t *buf, size_t len, const char *origin) {
    f->path = strdup(origin);
    if (!f->path) return align_errorf("out of memory reading %s", origin);
    Cur c = {buf, buf + len, f->path};
    uint32_t version;
    uint64_t n_tensors, n_kv;
    if (len < 4 || memcmp(buf, "GGUF", 4) != 0) return align_errorf("%s is not a GGUF file", origin);
    c.p += 4;
    if (rd_u32(&c, &version, "version")) return -1;
    if (version != 2 && version != 3)
        return align_errorf("%s has GGUF version %u; only versions 2 and 3 are supported", origin,
                            version);
    f->version = version;
    if (rd_u64(&c, &n_tensors, "tensor count") || rd_u64(&c, &n_kv, "metadata count")) return -1;
    size_t left = (size_t)(c.end - c.p);
    if (n_kv > left / 12 || n_tensors > left / 24)
        return align_errorf("%s is corrupt: it claims %llu tensors and %llu metadata entries, more "
                            "than its %zu bytes can hold",
                            origin, (unsigned long long)n_tensors, (unsigned long long)n_kv, len);
    f->kv = calloc(n_kv ? n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) return align_errorf("out of memory reading %s", origin);
    for (uint64_t i = 0; i < n_kv; i++) {
        f->n_kv++;
        if (read_kv(&c, &f->kv[i])) return -1;
    }
    f->alignment = 32;
    const GgufKV *al = gguf_find_kv(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_UINT32 || al->i <= 0 || (al->i & (al->i - 1)) || al->i > 65536)
            return align_errorf("%s: general.alignment must be a power of two", origin);
        f->alignment = (size_t)al->i;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->n_tensors++;
        if (read_tensor_info(&c, &f->tensors[i])) return -1;
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->tensors[j].name, f->tensors[i].name) == 0)
                return align_errorf("%s: tensor %.64s appears twice", origin, f->tensors[i].name);
    }
    size_t hdr = (size_t)(c.p - buf);
    size_t data_start = (hdr + f->alignment - 1) / f->alignment * f->alignment;
    if (data_start > len) {
        if (n_tensors == 0) data_start = len;
        else return align_errorf("%s is truncated: no data section", origin);
    }
    f->data = buf + data_start;
    f->data_len = len - data_start;
    for (int i = 0; i < f->n_tensors; i++) {
        const GgufTensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return align_errorf("%s: tensor %.64s offset %llu is not aligned to %zu", origin,
                                t->name, (unsigned long long)t->offset, f->alignment);
        if (t->offset > f->data_len || t->bytes > f->data_len - t->offset)
            return align_errorf("%s is truncated or corrupt: tensor %.64s (%zu bytes at offset "
                                "%llu) lies outside the %zu-byte data section",
                                origin, t->name, t->bytes, (unsigned long long)t->offset,
                                f->data_len);
    }
    return 0;
}

int gguf_parse(GgufFile *f, const uint8_t *buf, size_t len, const char *origin) {
    memset(f, 0, sizeof *f);
    if (parse_into(f, buf, len, origin) != 0) {
        gguf_close(f);
        return -1;
    }
    return 0;
}

int gguf_open(GgufFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return align_errorf("cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 24) {
        close(fd);
        return align_errorf("%s is not a GGUF file (too short or not a regular file)", path);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return align_errorf("cannot map %s: %s", path, strerror(errno));
    f->map = map;
    f->map_len = (size_t)sb.st_size;
    if (parse_into(f, map, f->map_len, path) != 0) {
        gguf_close(f);
        return -1;
    }
    return 0;
}

const GgufKV *gguf_find_kv(const GgufFile *f, const char *key) {
    for (int i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && strcmp(f->kv[i].key, key) == 0) return &f->kv[i];
    return NULL;
}

int gguf_get_int(const GgufFile *f, const char *key, int64_t *out) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv || kv->type == GGUF_STRING || kv->type == GGUF_ARRAY) return -1;
    *out = kv->i;
    return 0;
}

int gguf_get_float(const GgufFile *f, const char *key, double *out) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv || kv->type == GGUF_STRING || kv->type == GGUF_ARRAY) return -1;
    *out = kv->f;
    return 0;
}

const char *gguf_get_str(const GgufFile *f, const char *key) {
    const GgufKV *kv = gguf_find_kv(f, key);
    return kv && kv->type == GGUF_STRING ? kv->str : NULL;
}

const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* ------------------------------------------------------------------ dequant */

static uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

int gguf_read_f32(const GgufFile *f, const GgufTensor *t, float *out) {
    const uint8_t *src = f->data + t->offset;
    size_t n = (size_t)gguf_tensor_numel(t);
    switch (t->type) {
    case GGML_F32: memcpy(out, src, n * 4); return 0;
    case GGML_F16:
        for (size_t i = 0; i < n; i++) out[i] = quant_f16_to_f32(ld16(src + 2 * i));
        return 0;
    case GGML_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)ld16(src + 2 * i) << 16;
            memcpy(&out[i], &bits, 4);
        }
        return 0;
    default:
        if (!quant_is_ggml((int)t->type)) break;
        quant_dequantize_rows((QuantType)t->type, src, out, 1, (int64_t)n); /* QuantType values are the ggml ids */
        return 0;
    }
    return align_errorf("%s: tensor %s has unsupported type %u", f->path, t->name, t->type);
}

/* ------------------------------------------------------------------ import */

int gguf_tensor_name(const char *hf, ModelArch arch, char *out, size_t n) {
    int l;
    char rest[96];
    static const char *const llama_map[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
        {"self_attn.q_norm.weight", "attn_q_norm.weight"}, /* Qwen3 */
        {"self_attn.k_norm.weight", "attn_k_norm.weight"},
        {"self_attn.qkv_proj.weight", "attn_qkv.weight"},  /* Phi-3's fused groups (phi3_fused.h) */
        {"mlp.gate_up_proj.weight", "ffn_up.weight"},
    };
    static const char *const gpt2_map[][2] = {
        {"ln_1.weight", "attn_norm.weight"},         {"ln_1.bias", "attn_norm.bias"},
        {"attn.c_attn.weight", "attn_qkv.weight"},   {"attn.c_attn.bias", "attn_qkv.bias"},
        {"attn.c_proj.weight", "attn_output.weight"}, {"attn.c_proj.bias", "attn_output.bias"},
        {"ln_2.weight", "ffn_norm.weight"},          {"ln_2.bias", "ffn_norm.bias"},
        {"mlp.c_fc.weight", "ffn_up.weight"},        {"mlp.c_fc.bias", "ffn_up.bias"},
        {"mlp.c_proj.weight", "ffn_down.weight"},    {"mlp.c_proj.bias", "ffn_down.bias"},
    };
    if (arch == ARCH_LLAMA) {
        if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, n, "token_embd.weight"), 0;
        if (!strcmp(hf, "model.norm.weight")) return snprintf(out, n, "output_norm.weight"), 0;
        if (!strcmp(hf, "lm_head.weight")) return snprintf(out, n, "output.weight"), 0;
        if (sscanf(hf, "model.layers.%d.%95s", &l, rest) == 2)
            for (size_t i = 0; i < sizeof llama_map / sizeof llama_map[0]; i++)
                if (!strcmp(rest, llama_map[i][0]))
                    return snprintf(out, n, "blk.%d.%s", l, llama_map[i][1]), 0;
    } else {
        if (!strcmp(hf, "transformer.wte.weight")) return snprintf(out, n, "token_embd.weight"), 0;
        if (!strcmp(hf, "transformer.wpe.weight")) return snprintf(out, n, "position_embd.weight"), 0;
        if (!strcmp(hf, "transformer.ln_f.weight")) return snprintf(out, n, "output_norm.weight"), 0;
        if (!strcmp(hf, "transformer.ln_f.bias")) return snprintf(out, n, "output_norm.bias"), 0;
        if (sscanf(hf, "transformer.h.%d.%95s", &l, rest) == 2)
            for (size_t i = 0; i < sizeof gpt2_map / sizeof gpt2_map[0]; i++)
                if (!strcmp(rest, gpt2_map[i][0]))
                    return snprintf(out, n, "blk.%d.%s", l, gpt2_map[i][1]), 0;
    }
    return -1;
}

static int kv_int(const GgufFile *f, const char *arch, const char *key, int *out, int required) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t v;
    if (gguf_get_int(f, k, &v) != 0) {
        if (required) return align_errorf("%s lacks metadata %s", f->path, k);
        return 0;
    }
    if (v < 0 || v > 0x7fffffff) return align_errorf("%s: metadata %s is out of range", f->path, k);
    *out = (int)v;
    return 0;
}

static int kv_float(const GgufFile *f, const char *arch, const char *key, float *out) {
    char k[128];
    double v;
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_get_float(f, k, &v) == 0) *out = (float)v;
    return 0;
}

/* The Gemma names llama.cpp gives the tensors the Llama map lacks or maps
 * otherwise (there post_attention_layernorm is the pre-MLP ffn_norm). */
static int gemma_tensor_name(const char *hf, char *out, size_t n) {
    static const char *const map[][2] = {
        {"post_attention_layernorm.weight", "post_attention_norm.weight"},
        {"pre_feedforward_layernorm.weight", "ffn_norm.weight"},
        {"post_feedforward_layernorm.weight", "post_ffw_norm.weight"},
        {"self_attn.q_norm.weight", "attn_q_norm.weight"},
        {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    };
    int l;
    char rest[96];
    if (sscanf(hf, "model.layers.%d.%95s", &l, rest) == 2)
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(rest, map[i][0])) return snprintf(out, n, "blk.%d.%s", l, map[i][1]), 0;
    return gguf_tensor_name(hf, ARCH_LLAMA, out, n);
}

int gguf_tensor_name_for(const ModelConfig *c, const char *hf, char *out, size_t n) {
    return c->gemma ? gemma_tensor_name(hf, out, n) : gguf_tensor_name(hf, c->arch, out, n);
}

/* Gemma 2 / 3 as llama.cpp reads them: query_pre_attn_scalar is not stored
 * (llama.cpp takes hidden/heads for the 27B models, 46 and 62 layers, else
 * head_dim; an "attention.scale" key wins), the sliding pattern is 2 and 6
 * ("attention.sliding_window_pattern" wins), a Gemma 3 without
 * "attention.sliding_window" has none, Gemma 3's local layers use RoPE base
 * 10000 ("rope.freq_base_swa" wins), and norm weights are stored as 1 + w
 * (import_impl takes the 1 off). */
static int gguf_gemma_config(const GgufFile *f, const char *arch, ModelConfig *c) {
    int v3 = !strcmp(arch, "gemma3");
    c->gemma = v3 ? 3 : 2;
    c->norm_plus_one = 1;
    c->sandwich_norms = 1;
    c->geglu = 1;
    c->qk_norm = v3;
    c->embed_scale = (float)sqrt((double)c->dim);
    int big = c->n_layers == (v3 ? 62 : 46);
    c->attn_scalar = big ? (float)(c->dim / c->n_heads) : (float)c->head_dim;
    float scale = 0;
    kv_float(f, arch, "attention.scale", &scale);
    if (scale > 0) c->attn_scalar = 1.0f / (scale * scale);
    if (!v3) {
        c->attn_softcap = 50.0f;
        c->final_softcap = 30.0f;
    }
    kv_float(f, arch, "attn_logit_softcapping", &c->attn_softcap);
    kv_float(f, arch, "final_logit_softcapping", &c->final_softcap);
    /* Gemma 2 always slides (4096 by default); Gemma 3 only when the file
     * has a window, as llama.cpp */
    c->sliding_window = v3 ? 0 : 4096;
    c->sliding_pattern = v3 ? 6 : 2;
    if (kv_int(f, arch, "attention.sliding_window", &c->sliding_window, 0) ||
        kv_int(f, arch, "attention.sliding_window_pattern", &c->sliding_pattern, 0))
        return -1;
    if (c->sliding_window <= 0) c->sliding_window = 0, c->sliding_pattern = 0;
    if (v3) {
        c->rope_local_theta = 10000.0f;
        kv_float(f, arch, "rope.freq_base_swa", &c->rope_local_theta);
    } else if (c->rope_scaling != ROPE_SCALING_NONE)
        return align_errorf("%s: RoPE scaling is not supported for Gemma 2", f->path);
    return 0;
}

/* Phi's longrope as llama.cpp's converter writes it: F32 tensors
 * rope_factors_short / rope_factors_long of rotary_dim / 2 entries,
 * rope.scaling.original_context_length and rope.scaling.attn_factor (the
 * converter's sqrt(1 + ln(ctx / orig) / ln(orig)); derived the same way when
 * absent). None of them: plain RoPE. */
static int gguf_longrope(const GgufFile *f, const char *arch, ModelConfig *c) {
    const GgufTensor *ts = gguf_find_tensor(f, "rope_factors_short.weight");
    const GgufTensor *tl = gguf_find_tensor(f, "rope_factors_long.weight");
    if (!ts && !tl) return 0;
    int half = model_rotary_dim(c) / 2;
    if (!ts || !tl || gguf_tensor_numel(ts) != half || gguf_tensor_numel(tl) != half || half > MODEL_ROPE_MAX_FACTORS)
        return align_errorf("%s: longrope needs rope_factors_short and rope_factors_long of %d entries each (rotary "
                            "dims / 2)",
                            f->path, half);
    if (gguf_read_f32(f, ts, c->rope_short_factor) || gguf_read_f32(f, tl, c->rope_long_factor)) return -1;
    c->rope_original_max_pos = 0;
    if (kv_int(f, arch, "rope.scaling.original_context_length", &c->rope_original_max_pos, 0)) return -1;
    if (c->rope_original_max_pos <= 0)
        return align_errorf("%s: longrope factors without %s.rope.scaling.original_context_length", f->path, arch);
    double factor = c->max_seq_len > 0 ? (double)c->max_seq_len / c->rope_original_max_pos : 1.0;
    c->rope_scaling = ROPE_SCALING_LONGROPE;
    c->rope_factor = (float)factor;
    c->rope_attn_factor = factor <= 1.0 ? 1.0f : (float)sqrt(1.0 + log(factor) / log(c->rope_original_max_pos));
    kv_float(f, arch, "rope.scaling.attn_factor", &c->rope_attn_factor);
    return 0;
}

static int gguf_config(const GgufFile *f, ModelConfig *c, int *permuted) {
    const char *arch = gguf_get_str(f, "general.architecture");
    if (!arch) return align_errorf("%s lacks general.architecture", f->path);
    int is_gpt2 = !strcmp(arch, "gpt2"), qwen3 = !strcmp(arch, "qwen3"), phi3 = !strcmp(arch, "phi3");
    int gemma = !strcmp(arch, "gemma2") || !strcmp(arch, "gemma3");
    if (!is_gpt2 && !gemma && strcmp(arch, "llama") && strcmp(arch, "qwen2") && strcmp(arch, "mistral") && !qwen3 &&
        !phi3)
        return align_errorf("%s has architecture \"%.32s\"; supported: llama, qwen2, qwen3, mistral, phi3, gemma2, "
                            "gemma3, gpt2",
                            f->path, arch);
    *permuted = !strcmp(arch, "llama") || !strcmp(arch, "mistral");
    model_config_defaults(c, is_gpt2 ? ARCH_GPT2 : ARCH_LLAMA);
    c->n_kv_heads = -1;
    if (kv_int(f, arch, "embedding_length", &c->dim, 1) ||
        kv_int(f, arch, "block_count", &c->n_layers, 1) ||
        kv_int(f, arch, "feed_forward_length", &c->ffn_dim, 1) ||
        kv_int(f, arch, "attention.head_count", &c->n_heads, 1) ||
        kv_int(f, arch, "attention.head_count_kv", &c->n_kv_heads, 0) ||
        kv_int(f, arch, "context_length", &c->max_seq_len, 0))
        return -1;
    if (c->n_kv_heads < 0 || is_gpt2) c->n_kv_heads = c->n_heads;
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    if (kv_int(f, arch, "attention.key_length", &c->head_dim, 0)) return -1;
    if (is_gpt2) {
        kv_float(f, arch, "attention.layer_norm_epsilon", &c->norm_eps);
        c->tied_embeddings = 1;
    } else {
        kv_float(f, arch, "attention.layer_norm_rms_epsilon", &c->norm_eps);
        kv_float(f, arch, "rope.freq_base", &c->rope_theta);
        c->qkv_bias = !strcmp(arch, "qwen2");
        c->tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
        char k[128];
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        const char *st = gguf_get_str(f, k);
        if (st && !strcmp(st, "linear")) {
            c->rope_scaling = ROPE_SCALING_LINEAR;
            kv_float(f, arch, "rope.scaling.factor", &c->rope_factor);
        } else if (st && strcmp(st, "none")) {
            return align_errorf("%s: rope scaling \"%.32s\" is not supported", f->path, st);
        }
        if (gguf_find_tensor(f, "rope_freqs.weight"))
            return align_errorf("%s carries rope_freqs (Llama-3.1 rope scaling), which GGUF import "
                                "does not support; import the Hugging Face directory instead",
                                f->path);
        c->qk_norm = qwen3;
        c->phi3 = phi3;
        if (phi3) { /* llama.cpp masks as transformers does: window keys, the query's own included */
            if (kv_int(f, arch, "attention.sliding_window", &c->sliding_window, 0)) return -1;
            if (c->max_seq_len > 0 && c->sliding_window >= c->max_seq_len) c->sliding_window = 0;
        }
        /* llama.cpp's rope.dimension_count: the rotated dims of a head
         * (Phi-4-mini's partial_rotary_factor), the rest pass through */
        int rot = c->head_dim;
        if (kv_int(f, arch, "rope.dimension_count", &rot, 0)) return -1;
        if (rot <= 0 || rot > c->head_dim || rot % 2)
            return align_errorf("%s: RoPE on %d of the %d dimensions of a head; it needs an even number, at most "
                                "head_dim",
                                f->path, rot, c->head_dim);
        c->rotary_dim = rot == c->head_dim ? 0 : rot;
        if (phi3 && gguf_longrope(f, arch, c)) return -1;
    }
    if (gemma && gguf_gemma_config(f, arch, c)) return -1;
    /* Vocabulary: the embedding's row count is the truth. */
    const GgufTensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb || emb->ndim != 2) return align_errorf("%s lacks a 2-D token_embd.weight", f->path);
    if (emb->ne[1] > 0x7fffffff) return align_errorf("%s: vocabulary too large", f->path);
    c->vocab_size = (int)emb->ne[1];
    int64_t v;
    if (gguf_get_int(f, "tokenizer.ggml.bos_token_id", &v) == 0) c->bos_id = (int)v;
    if (gguf_get_int(f, "tokenizer.ggml.eos_token_id", &v) == 0) c->eos_id = (int)v;
    if (gguf_get_int(f, "tokenizer.ggml.padding_token_id", &v) == 0) c->pad_id = (int)v;
    if (model_config_validate(c) != 0) return align_error_prefix("%s", f->path);
    return 0;
}

/* llama.cpp's converter reorders each head's rows of q_proj/k_proj from
 * HF's rotate-half layout to interleaved pairs: HF row h*hd + s*hd/2 + j sits
 * at row h*hd + 2j + s. Put them back. */
static void unpermute_rows(float *w, int n_heads, int head_dim, int64_t cols, float *tmp) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *blk = w + (size_t)h * head_dim * cols;
        memcpy(tmp, blk, (size_t)head_dim * cols * sizeof(float));
        for (int s = 0; s < 2; s++)
            for (int j = 0; j < half; j++)
                memcpy(blk + (size_t)(s * half + j) * cols, tmp + (size_t)(2 * j + s) * cols,
                       (size_t)cols * sizeof(float));
    }
}

static TokPretok pretok_for(const char *pre) {
    if (!pre) return TOK_PRE_GPT2;
    if (!strcmp(pre, "smollm")) return TOK_PRE_SMOLLM;
    if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) return TOK_PRE_LLAMA3;
    if (!strcmp(pre, "qwen2")) return TOK_PRE_QWEN2;
    return TOK_PRE_GPT2;
}

/* The tokenizer's special ids from the model config, whether it adds BOS
 * (tokenizer.ggml.add_bos_token; without the key llama.cpp's default: yes for
 * SentencePiece and Llama 3's BPE, no for other BPE), then its JSON form. */
static int gguf_tokenizer_finish(const GgufFile *f, ModelBundle *b, int spm) {
    const ModelConfig *c = &b->model->cfg;
    tok_set_special_ids(b->tok, c->bos_id, c->eos_id, c->pad_id);
    int64_t add_bos = spm || tok_pretok(b->tok) == TOK_PRE_LLAMA3;
    gguf_get_int(f, "tokenizer.ggml.add_bos_token", &add_bos);
    if (add_bos && tok_bos_id(b->tok) < 0) add_bos = 0; /* nothing to add */
    if (tok_set_add_bos(b->tok, add_bos != 0)) return align_error_prefix("%s", f->path);
    b->extras.tokenizer_json = tok_to_hf_json(b->tok);
    if (!b->extras.tokenizer_json)
        return align_errorf("%s: cannot serialise the tokenizer as tokenizer.json", f->path);
    return 0;
}

/* tokenizer.ggml.model "llama": SentencePiece pieces with scores and types
 * (no merges; tok_from_spm derives them), add_space_prefix default true. */
static int gguf_spm_tokenizer(const GgufFile *f, ModelBundle *b, const GgufKV *toks) {
    const GgufKV *sc = gguf_find_kv(f, "tokenizer.ggml.scores");
    const GgufKV *types = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (!sc || sc->type != GGUF_ARRAY || sc->arr_type != GGUF_FLOAT32 || sc->arr_n != toks->arr_n)
        return align_errorf("%s: a \"llama\" tokenizer needs tokenizer.ggml.scores, one float per token", f->path);
    size_t n = toks->arr_n ? toks->arr_n : 1;
    float *scores = malloc(n * sizeof *scores);
    int32_t *tt = NULL;
    if (!scores) return align_errorf("out of memory reading %s", f->path);
    memcpy(scores, sc->arr, toks->arr_n * sizeof *scores);
    if (types && types->type == GGUF_ARRAY && types->arr_type == GGUF_INT32 && types->arr_n == toks->arr_n) {
        tt = malloc(n * sizeof *tt);
        if (!tt) {
            free(scores);
            return align_errorf("out of memory reading %s", f->path);
        }
        memcpy(tt, types->arr, toks->arr_n * sizeof *tt);
    }
    int64_t prefix = 1;
    gguf_get_int(f, "tokenizer.ggml.add_space_prefix", &prefix);
    b->tok = tok_from_spm((const char *const *)toks->arr_str, scores, tt, (int)toks->arr_n, prefix != 0);
    free(scores);
    free(tt);
    if (!b->tok) return align_error_prefix("%s", f->path);
    return gguf_tokenizer_finish(f, b, 1);
}

static int gguf_tokenizer(const GgufFile *f, ModelBundle *b) {
    const char *model = gguf_get_str(f, "tokenizer.ggml.model");
    const GgufKV *toks = gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (!model || !toks) return 0; /* no tokenizer: the model still imports */
    int spm = strcmp(model, "llama") == 0;
    if (strcmp(model, "gpt2") != 0 && !spm)
        return align_errorf("%s: tokenizer model \"%.32s\" is not supported (\"gpt2\": byte-level BPE, "
                            "\"llama\": SentencePiece BPE)",
                            f->path, model);
    if (toks->type != GGUF_ARRAY || toks->arr_type != GGUF_STRING || toks->arr_n > 0x7fffffff)
        return align_errorf("%s: tokenizer.ggml.tokens is not a string array", f->path);
    if (spm) return gguf_spm_tokenizer(f, b, toks);
    const GgufKV *merges = gguf_find_kv(f, "tokenizer.ggml.merges");
    if (merges && (merges->type != GGUF_ARRAY || merges->arr_type != GGUF_STRING ||
                   merges->arr_n > 0x7fffffff))
        return align_errorf("%s: tokenizer.ggml.merges is not a string array", f->path);
    const GgufKV *types = gguf_find_kv(f, "tokenizer.ggml.token_type");
    int32_t *tt = NULL;
    if (types && types->type == GGUF_ARRAY && types->arr_type == GGUF_INT32 &&
        types->arr_n == toks->arr_n) {
        tt = malloc((toks->arr_n ? toks->arr_n : 1) * sizeof *tt);
        if (!tt) return align_errorf("out of memory reading %s", f->path);
        memcpy(tt, types->arr, toks->arr_n * sizeof *tt);
    }
    b->tok = tok_from_vocab((const char *const *)toks->arr_str, (int)toks->arr_n,
                            merges ? (const char *const *)merges->arr_str : NULL,
                            merges ? (int)merges->arr_n : 0, tt,
                            pretok_for(gguf_get_str(f, "tokenizer.ggml.pre")));
    free(tt);
    if (!b->tok) return align_error_prefix("%s", f->path);
    return gguf_tokenizer_finish(f, b, 0);
}

/* Row permutation of unpermute_rows on rows of `rb` bytes (quantised). */
static void unpermute_rows_bytes(uint8_t *w, int n_heads, int head_dim, size_t rb, uint8_t *tmp) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        uint8_t *blk = w + (size_t)h * head_dim * rb;
        memcpy(tmp, blk, (size_t)head_dim * rb);
        for (int s = 0; s < 2; s++)
            for (int j = 0; j < half; j++) memcpy(blk + (size_t)(s * half + j) * rb, tmp + (size_t)(2 * j + s) * rb, rb);
    }
}

typedef struct {
    const GgufFile *f;
    ModelArch arch;
    int fallback;
    const ModelConfig *cfg;
} QuantPick;

/* The GGUF tensor holding parameter p: its own, or for a Phi-3 group member
 * the fused tensor (blk.N.attn_qkv, blk.N.ffn_up). */
static int param_gguf_name(const ModelConfig *c, const ParamInfo *p, char *out, size_t n) {
    int l;
    if (c->phi3 && sscanf(p->name, "model.layers.%d.", &l) == 1) {
        if (strstr(p->name, "self_attn.q_proj.weight") || strstr(p->name, "self_attn.k_proj.weight") ||
            strstr(p->name, "self_attn.v_proj.weight"))
            return snprintf(out, n, "blk.%d.attn_qkv.weight", l), 0;
        if (strstr(p->name, "mlp.gate_proj.weight") || strstr(p->name, "mlp.up_proj.weight"))
            return snprintf(out, n, "blk.%d.ffn_up.weight", l), 0;
    }
    return gguf_tensor_name(p->name, c->arch, out, n);
}

static int pick_quant(const ParamInfo *p, void *ctx) {
    const QuantPick *q = ctx;
    char gname[128];
    if (param_gguf_name(q->cfg, p, gname, sizeof gname) != 0) return QUANT_NONE;
    const GgufTensor *t = gguf_find_tensor(q->f, gname);
    if (!t) return QUANT_NONE;
    /* NF4/FP4 (QLoRA) are asked for as the base's type: a GGUF block type
     * is re-quantised to them rather than kept */
    if (q->fallback == QUANT_NF4 || q->fallback == QUANT_FP4) return q->fallback;
    return quant_is_ggml((int)t->type) ? (int)t->type : q->fallback;
}

static int import_impl(const char *path, const Backend *be, int quant, int fallback, ModelBundle *out);

/* One quantised parameter: the file's blocks when the types agree, else
 * dequantised and re-quantised one tensor at a time. */
static int import_quantised(Model *m, const ParamInfo *p, const GgufFile *f, const GgufTensor *t, int permuted) {
    const ModelConfig *c = &m->cfg;
    size_t rb = quant_row_bytes((QuantType)p->qtype, p->shape[1]), bytes = rb * (size_t)p->shape[0];
    uint8_t *blk = malloc(bytes ? bytes : 1), *tmp = NULL;
    float *x = NULL;
    int rc = -1, heads = 0;
    if (permuted && strstr(p->name, "q_proj.weight")) heads = c->n_heads;
    else if (permuted && strstr(p->name, "k_proj.weight")) heads = c->n_kv_heads;
    if (!blk) goto oom;
    if ((int)t->type == p->qtype) {
        memcpy(blk, f->data + t->offset, bytes);
    } else if (p->qtype == QUANT_Q8_0 && quant_exact_in_q8_0((int)t->type)) { /* a mixed group (fix_groups) */
        if (quant_to_q8_0_exact((QuantType)t->type, f->data + t->offset, blk, p->shape[0], p->shape[1])) goto out;
    } else {
        if (!(x = malloc(p->numel * sizeof(float)))) goto oom;
        if (gguf_read_f32(f, t, x) != 0) goto out;
        if (heads) { /* undo llama.cpp's q/k row order before quantising: NF4 groups span rows */
            size_t xrb = (size_t)p->shape[1] * sizeof(float);
            if (!(tmp = malloc((size_t)c->head_dim * xrb))) goto oom;
            unpermute_rows_bytes((uint8_t *)x, heads, c->head_dim, xrb, tmp);
            heads = 0;
        }
        if (quant_quantize_rows((QuantType)p->qtype, x, blk, p->shape[0], p->shape[1])) goto out;
    }
    if (heads) {
        if (!(tmp = malloc((size_t)c->head_dim * rb))) goto oom;
        unpermute_rows_bytes(blk, heads, c->head_dim, rb, tmp);
    }
    rc = model_param_set_blocks(m, p, blk);
    goto out;
oom:
    align_errorf("out of memory importing %s", p->name);
out:
    free(blk), free(tmp), free(x);
    return rc;
}

int gguf_import(const char *path, const Backend *be, ModelBundle *out) { return import_impl(path, be, 0, 0, out); }

int gguf_import_blocks(const char *path, const Backend *be, ModelBundle *out) {
    return import_impl(path, be, 2, QUANT_NONE, out);
}

int gguf_import_quant(const char *path, const Backend *be, int fallback, ModelBundle *out) {
    if (!quant_base_type(fallback))
        return align_errorf("unsupported quantisation type %d for the base", fallback);
    return import_impl(path, be, 1, fallback, out);
}

/* A model loaded for inference streams every weight byte once per token
 * (batch-1 decoding reads 100-150 MB a token for SmolLM2 at 8 bits). In
 * 4 KB pages that is a TLB miss every 4 KB, and the CPU's prefetchers
 * stop at every page boundary; in 2 MB pages the stream runs on (SmolLM2
 * Q8_0, batch-1 decode at 1 thread: 27% fewer CPU seconds). The buffers are
 * already written (the backend's alloc zeroes them), so they are collapsed
 * into huge pages now (MADV_COLLAPSE, Linux 6.1) besides being marked for
 * the kernel's background collapsing. Advice only: where transparent huge
 * pages are off or the kernel is older, nothing changes. */
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
static void advise_huge_pages(void *p, size_t bytes) {
    uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, e = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
    if (!p || e <= a + (2u << 20)) return; /* smaller than a huge page */
    if (madvise((void *)a, e - a, MADV_HUGEPAGE) == 0) (void)madvise((void *)a, e - a, MADV_COLLAPSE);
}

static int import_impl(const char *path, const Backend *be, int quant, int fallback, ModelBundle *out) {
    memset(out, 0, sizeof *out);
    ckpt_extras_init(&out->extras);
    GgufFile f;
    if (gguf_open(&f, path) != 0) return -1;
    ModelConfig cfg;
    int permuted = 0, rc = -1;
    Model *m = NULL;
    float *host = NULL, *tmp = NULL;
    if (gguf_config(&f, &cfg, &permuted) != 0) goto done;
    QuantPick qp = {&f, cfg.arch, fallback, &cfg};
    if (!(m = quant ? model_create_quant(&cfg, be, pick_quant, &qp) : model_create(&cfg, be))) {
        align_error_prefix("%s", path);
        goto done;
    }
    if (!(host = ckpt_host_params(m, 0))) goto done;
    size_t tmp_n = (size_t)cfg.head_dim * (cfg.arch == ARCH_GPT2 ? 1 : cfg.dim);
    if (!(tmp = align_alloc(tmp_n * sizeof(float)))) goto done;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        ParamInfo group;
        int fused = phi3_fused_group(&cfg, p, &group);
        if (fused == 2) continue; /* read with its group's first member */
        if (fused == 1) p = &group;
        char gname[128];
        if (gguf_tensor_name_for(&cfg, p->name, gname, sizeof gname) != 0) {
            align_errorf("%s: no GGUF tensor corresponds to %s", path, p->name);
            goto done;
        }
        const GgufTensor *t = gguf_find_tensor(&f, gname);
        if (!t) {
            align_errorf("%s lacks tensor %s (%s)", path, gname, p->name);
            goto done;
        }
        /* GGUF dims are reversed: ne[0] is our last (input) dimension. */
        int ok = t->ndim == p->ndim && (p->ndim == 1 ? t->ne[0] == p->shape[0]
                                                     : t->ne[0] == p->shape[1] &&
                                                           t->ne[1] == p->shape[0]);
        if (!ok) {
            align_errorf("%s: tensor %s has the wrong shape for %s", path, gname, p->name);
            goto done;
        }
        if (p->qtype) {
            if (import_quantised(m, p, &f, t, permuted) != 0) goto done;
            continue;
        }
        float *dst = host + p->offset;
        if (gguf_read_f32(&f, t, dst) != 0) goto done;
        if (cfg.norm_plus_one && p->ndim == 1 && strstr(p->name, "norm.weight")) /* llama.cpp stored 1 + w */
            for (int64_t k = 0; k < p->shape[0]; k++) dst[k] -= 1.0f;
        if (permuted && p->ndim == 2) {
            if (strstr(p->name, "q_proj.weight"))
                unpermute_rows(dst, cfg.n_heads, cfg.head_dim, p->shape[1], tmp);
            else if (strstr(p->name, "k_proj.weight"))
                unpermute_rows(dst, cfg.n_kv_heads, cfg.head_dim, p->shape[1], tmp);
        }
    }
    ckpt_host_params_release(m, host, 1);
    host = NULL;
    if (quant == 2) m->infer_int8 = 1;
    if (quant == 2 && cfg.lm_head) { /* the head's blocks too, for inference (llama.cpp reads them so) */
        const GgufTensor *t = gguf_find_tensor(&f, "output.weight");
        if (!t) t = gguf_find_tensor(&f, "token_embd.weight");
        if (t && quant_is_ggml((int)t->type) && cfg.dim % quant_block_elems((QuantType)t->type) == 0 &&
            model_set_lm_head_blocks(m, (int)t->type, f.data + t->offset))
            goto done;
    }
    if (quant == 2 && be == &backend_cpu) advise_huge_pages(m->qparams, m->n_qbytes);
    if (quant == 2 && be == &backend_cpu && m->lm_head_q)
        advise_huge_pages(m->lm_head_q, (size_t)cfg.vocab_size * quant_row_bytes((QuantType)m->lm_head_qtype, cfg.dim));
    out->model = m;
    if (gguf_tokenizer(&f, out) != 0) goto done;
    /* the Hugging Face repository the file was converted from, when the
     * converter recorded it (peft adapters name it as their base) */
    const char *repo = gguf_get_str(&f, "general.source.huggingface.repository");
    if (repo && *repo && ckpt_extras_set(&out->extras.base_model, repo)) goto done;
    const char *ct = gguf_get_str(&f, "tokenizer.chat_template");
    if (ct) {
        if (ckpt_extras_set(&out->extras.chat_template_jinja, ct)) goto done;
        const char *name = chat_template_detect_name(ct);
        if (name && ckpt_extras_set(&out->extras.chat_template, name)) goto done;
    }
    rc = 0;
done:
    align_free(tmp);
    if (host) ckpt_host_params_release(m, host, 0);
    gguf_close(&f);
    if (rc != 0) {
        if (out->model) model_bundle_free(out);
        else {
            model_free(m);
            ckpt_extras_free(&out->extras);
        }
        memset(out, 0, sizeof *out);
    }
    return rc;
}
