/* model.c: building the parameter table, the forward pass over a packed
 * batch, the two heads, and the backward pass. See model.h for the design;
 * every numeric operation is a backend call. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

/* Saved activations for one batch (backend memory unless noted). */
struct ModelActs {
    int cap;                 /* tokens the buffers hold */
    int stored;              /* layers whose activations are kept: all when anything
                                trains, else 1 (a frozen model, e.g. a DPO/PPO
                                reference, reuses one layer's buffers) */
    float *buf;              /* one allocation for everything below */
    float *resid;            /* [L+1][N,d]: input of layer l; resid[L] feeds the final norm */
    float *resid_mid;        /* [L][N,d]: after attention's residual add */
    float *norm1, *norm2;    /* [L][N,d] */
    float *stats1, *stats2;  /* [L][2N]: mean (LayerNorm only) and rstd */
    float *qkv;              /* [L][N,qkv_dim], q and k after RoPE */
    float *qkn, *qkn_rstd;   /* qk_norm: [L][N,(Hq+Hkv)*hd] q and k before their norm, [L][N*(Hq+Hkv)] */
    float *attn;             /* [L][N,Hq*hd] */
    float *lse;              /* [L][Hq*N] */
    float *up;               /* [L][N,up_dim] before the activation */
    float *act;              /* [L][N,F] */
    float *normf, *statsf;   /* [N,d], [2N] */
    /* scratch for the backward pass */
    float *dresid, *dtmp, *dh, *dqkv, *dattn, *dup, *dact;
    int32_t *tokens, *pos;   /* backend copies */
    int32_t *seq_start;      /* host copy, n_seqs + 1, then seq_prefix's n_seqs */
    const int32_t *seq_prefix; /* into seq_start's allocation, or NULL */
    int seq_cap;
    int n_tokens, n_seqs;
    int row0;                /* virtual-token rows packed before the caller's (model.h) */
    int32_t *vbuf;           /* host: the expanded batch's tokens, offsets and prefixes */
    int vcap;
    int forward_done;
    /* LM head: only rows with a target */
    int lm_cap, n_lm;
    int32_t *lm_rows_host, *lm_tgt_host;
    int32_t *lm_rows, *lm_tgt;   /* backend */
    float *lm_h, *lm_logits, *lm_lse, *lm_dlogp, *lm_dh;
    int lm_done;
    float *values;           /* [N] value head output (backend) */
    int values_done;
    float *inv_freq;         /* [hd/2] RoPE frequencies (backend) */
    float *inv_freq_local;   /* [hd/2] sliding layers' (rope_local_theta), or NULL */
    float *inv_freq_long;    /* [rot/2] longrope's long factors (inv_freq holds the short), or NULL */
    int32_t *pos_host;       /* [N] host copy of the positions (longrope's per-chunk choice) */
    /* Gemma (sandwich_norms): attention and MLP outputs before their post
     * norms [L][N,d], and those norms' stats [L][2N] */
    float *o_out, *f_out, *stats_pa, *stats_pf;
};

/* ------------------------------------------------------------ config */

void model_config_defaults(ModelConfig *c, ModelArch arch) {
    memset(c, 0, sizeof *c);
    c->arch = arch;
    c->norm_eps = arch == ARCH_GPT2 ? 1e-5f : 1e-6f;
    c->rope_theta = 10000.0f;
    c->rope_scaling = ROPE_SCALING_NONE;
    c->rope_factor = 1.0f;
    c->rope_attn_factor = 1.0f;
    c->tied_embeddings = arch == ARCH_GPT2;
    c->lm_head = 1;
    c->bos_id = c->eos_id = c->pad_id = -1;
}

int model_config_validate(const ModelConfig *c) {
    if (c->arch != ARCH_GPT2 && c->arch != ARCH_LLAMA) return align_errorf("model config: unknown architecture %d", c->arch);
    if (c->vocab_size <= 0) return align_errorf("model config: vocab_size must be positive (got %d)", c->vocab_size);
    if (c->dim <= 0) return align_errorf("model config: hidden size must be positive (got %d)", c->dim);
    if (c->n_layers <= 0) return align_errorf("model config: n_layers must be positive (got %d)", c->n_layers);
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return align_errorf("model config: n_heads (%d) must be a positive multiple of n_kv_heads (%d)", c->n_heads, c->n_kv_heads);
    if (c->head_dim <= 0 || (c->arch == ARCH_LLAMA && c->head_dim % 2))
        return align_errorf("model config: head_dim must be positive (and even for RoPE), got %d", c->head_dim);
    if (c->ffn_dim <= 0) return align_errorf("model config: ffn_dim must be positive (got %d)", c->ffn_dim);
    if (c->arch == ARCH_GPT2) {
        if (c->n_heads != c->n_kv_heads) return align_errorf("model config: GPT-2 has no grouped-query attention");
        if (c->n_heads * c->head_dim != c->dim) return align_errorf("model config: GPT-2 needs n_heads * head_dim == dim");
        if (c->max_seq_len <= 0) return align_errorf("model config: GPT-2 needs max_seq_len (n_positions)");
    }
    if (!c->lm_head && !c->value_head) return align_errorf("model config: a model needs an LM head or a value head");
    if (!(c->norm_eps > 0)) return align_errorf("model config: norm_eps must be positive");
    if (c->arch == ARCH_LLAMA && !(c->rope_theta > 0)) return align_errorf("model config: rope_theta must be positive");
    if (c->sliding_window < 0 || c->window_from_layer < 0)
        return align_errorf("model config: sliding_window (%d) and its first layer (%d) must not be negative",
                            c->sliding_window, c->window_from_layer);
    if (c->sliding_window && c->arch != ARCH_LLAMA) return align_errorf("model config: GPT-2 has no sliding window");
    if ((c->qk_norm || c->phi3) && c->arch != ARCH_LLAMA)
        return align_errorf("model config: q/k norms and Phi-3's fused files belong to the Llama family, not GPT-2");
    if (c->arch != ARCH_LLAMA && (c->gemma || c->norm_plus_one || c->embed_scale > 0 || c->sandwich_norms || c->geglu ||
                                  c->attn_scalar > 0 || c->attn_softcap > 0 || c->final_softcap > 0 ||
                                  c->sliding_pattern || c->rope_local_theta > 0))
        return align_errorf("model config: the Gemma pieces need the Llama-family decoder");
    if (c->attn_scalar < 0 || c->attn_softcap < 0 || c->final_softcap < 0 || c->embed_scale < 0 ||
        c->sliding_pattern < 0 || c->rope_local_theta < 0)
        return align_errorf("model config: query_pre_attn_scalar, soft caps, embedding scale, sliding pattern and "
                            "local RoPE base must not be negative");
    if (c->rotary_dim < 0 || c->rotary_dim > c->head_dim || c->rotary_dim % 2)
        return align_errorf("model config: rotary dims %d must be even and at most head_dim %d", c->rotary_dim,
                            c->head_dim);
    if ((c->rotary_dim || c->rope_scaling == ROPE_SCALING_LONGROPE) && c->arch != ARCH_LLAMA)
        return align_errorf("model config: partial rotary and longrope belong to the Llama family, not GPT-2");
    if (c->rope_scaling == ROPE_SCALING_LONGROPE) {
        int half = model_rotary_dim(c) / 2;
        if (half > MODEL_ROPE_MAX_FACTORS)
            return align_errorf("model config: longrope needs %d factors, at most %d are held", half,
                                MODEL_ROPE_MAX_FACTORS);
        if (c->rope_original_max_pos <= 0 || !(c->rope_attn_factor > 0))
            return align_errorf("model config: longrope needs original_max_position_embeddings and a positive "
                                "attention factor");
        for (int j = 0; j < half; j++)
            if (!(c->rope_short_factor[j] > 0) || !(c->rope_long_factor[j] > 0))
                return align_errorf("model config: longrope factor %d must be positive", j);
        if (c->rope_local_theta > 0) return align_errorf("model config: longrope with Gemma 3's local RoPE base");
    }
    return 0;
}

int model_rotary_dim(const ModelConfig *c) { return c->rotary_dim > 0 ? c->rotary_dim : c->head_dim; }

int model_layer_sliding(const ModelConfig *c, int l) {
    if (c->sliding_pattern > 0) return (l + 1) % c->sliding_pattern != 0;
    return c->sliding_window > 0 && l >= c->window_from_layer;
}

int model_layer_window(const ModelConfig *c, int l) { return model_layer_sliding(c, l) ? c->sliding_window : 0; }

float model_attn_scale(const ModelConfig *c) {
    return 1.0f / sqrtf(c->attn_scalar > 0 ? c->attn_scalar : (float)c->head_dim);
}

int model_attn_ext(const ModelConfig *c) { return c->attn_scalar > 0 || c->attn_softcap > 0; }

/* Does any layer of c use its sliding window? */
static int uses_window(const ModelConfig *c) {
    for (int l = 0; l < c->n_layers; l++)
        if (model_layer_window(c, l)) return 1;
    return 0;
}

static int qkv_dim(const ModelConfig *c) { return (c->n_heads + 2 * c->n_kv_heads) * c->head_dim; }
static int up_dim(const ModelConfig *c) { return c->arch == ARCH_LLAMA ? 2 * c->ffn_dim : c->ffn_dim; }

/* ------------------------------------------------------------ param table */

typedef struct {
    ParamInfo *info;
    int n, cap;
    size_t elems;
} Table;

static int table_add(Table *t, const char *name, int64_t d0, int64_t d1, int transposed) {
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        ParamInfo *p = realloc(t->info, cap * sizeof *p);
        if (!p) return align_errorf("out of memory building the parameter table");
        t->info = p;
        t->cap = cap;
    }
    ParamInfo *p = &t->info[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = d1 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = (size_t)d0 * (d1 ? d1 : 1);
    p->offset = t->elems;
    p->grad_offset = -1;
    p->hf_transposed = transposed;
    p->no_decay = p->ndim == 1;
    t->elems += p->numel;
    return 0;
}

#define ADD(name, d0, d1, tr) do { if (table_add(&t, name, d0, d1, tr)) goto fail; } while (0)

static int build_table(const ModelConfig *c, Table *out) {
    Table t = {0};
    char nm[96];
    int d = c->dim, F = c->ffn_dim, hd = c->head_dim, Hq = c->n_heads, Hkv = c->n_kv_heads;
    if (c->arch == ARCH_GPT2) {
        ADD("transformer.wte.weight", c->vocab_size, d, 0);
        ADD("transformer.wpe.weight", c->max_seq_len, d, 0);
        for (int l = 0; l < c->n_layers; l++) {
#define L(fmt) (snprintf(nm, sizeof nm, "transformer.h.%d." fmt, l), nm)
            ADD(L("ln_1.weight"), d, 0, 0);
            ADD(L("ln_1.bias"), d, 0, 0);
            ADD(L("attn.c_attn.weight"), 3 * d, d, 1);
            ADD(L("attn.c_attn.bias"), 3 * d, 0, 0);
            ADD(L("attn.c_proj.weight"), d, d, 1);
            ADD(L("attn.c_proj.bias"), d, 0, 0);
            ADD(L("ln_2.weight"), d, 0, 0);
            ADD(L("ln_2.bias"), d, 0, 0);
            ADD(L("mlp.c_fc.weight"), F, d, 1);
            ADD(L("mlp.c_fc.bias"), F, 0, 0);
            ADD(L("mlp.c_proj.weight"), d, F, 1);
            ADD(L("mlp.c_proj.bias"), d, 0, 0);
#undef L
        }
        ADD("transformer.ln_f.weight", d, 0, 0);
        ADD("transformer.ln_f.bias", d, 0, 0);
    } else {
        ADD("model.embed_tokens.weight", c->vocab_size, d, 0);
        for (int l = 0; l < c->n_layers; l++) {
#define L(fmt) (snprintf(nm, sizeof nm, "model.layers.%d." fmt, l), nm)
            ADD(L("input_layernorm.weight"), d, 0, 0);
            ADD(L("self_attn.q_proj.weight"), Hq * hd, d, 0);
            ADD(L("self_attn.k_proj.weight"), Hkv * hd, d, 0);
            ADD(L("self_attn.v_proj.weight"), Hkv * hd, d, 0);
            if (c->qkv_bias) {
                ADD(L("self_attn.q_proj.bias"), Hq * hd, 0, 0);
                ADD(L("self_attn.k_proj.bias"), Hkv * hd, 0, 0);
                ADD(L("self_attn.v_proj.bias"), Hkv * hd, 0, 0);
            }
            /* after v_proj: q|k|v stay one matrix */
            if (c->qk_norm) {
                ADD(L("self_attn.q_norm.weight"), hd, 0, 0);
                ADD(L("self_attn.k_norm.weight"), hd, 0, 0);
            }
            ADD(L("self_attn.o_proj.weight"), d, Hq * hd, 0);
            ADD(L("post_attention_layernorm.weight"), d, 0, 0);
            if (c->sandwich_norms) {
                ADD(L("pre_feedforward_layernorm.weight"), d, 0, 0);
                ADD(L("post_feedforward_layernorm.weight"), d, 0, 0);
            }
            ADD(L("mlp.gate_proj.weight"), F, d, 0);
            ADD(L("mlp.up_proj.weight"), F, d, 0);
            ADD(L("mlp.down_proj.weight"), d, F, 0);
#undef L
        }
        ADD("model.norm.weight", d, 0, 0);
    }
    if (c->lm_head && !c->tied_embeddings) ADD("lm_head.weight", c->vocab_size, d, 0);
    if (c->value_head) ADD("score.weight", 1, d, 0);
    *out = t;
    return 0;
fail:
    free(t.info);
    return -1;
}
#undef ADD

ParamInfo *model_find_param(Model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->info[i].name, name)) return &m->info[i];
    return NULL;
}

/* Pointer to tensor `name` inside base (params or grads); NULL when the
 * tensor is absent or, for grads, frozen. */
static float *tensor_ptr(Model *m, float *base, int grads, const char *name) {
    ParamInfo *p = model_find_param(m, name);
    if (!p || !base || p->qtype) return NULL;
    if (grads) return p->grad_offset < 0 ? NULL : base + p->grad_offset;
    return base + p->offset;
}

static void bind_views(Model *m, ModelTensors *v, float *base, int grads) {
    const ModelConfig *c = &m->cfg;
    char nm[96];
#define T(name) tensor_ptr(m, base, grads, name)
#define TL(fmt) (snprintf(nm, sizeof nm, fmt, l), tensor_ptr(m, base, grads, nm))
    if (c->arch == ARCH_GPT2) {
        v->wte = T("transformer.wte.weight");
        v->wpe = T("transformer.wpe.weight");
        v->normf_w = T("transformer.ln_f.weight");
        v->normf_b = T("transformer.ln_f.bias");
        for (int l = 0; l < c->n_layers; l++) {
            LayerTensors *t = &v->layers[l];
            int d = c->dim;
            t->norm1_w = TL("transformer.h.%d.ln_1.weight");
            t->norm1_b = TL("transformer.h.%d.ln_1.bias");
            /* c_attn is the fused q|k|v matrix; expose its row blocks */
            float *w = TL("transformer.h.%d.attn.c_attn.weight");
            float *b = TL("transformer.h.%d.attn.c_attn.bias");
            t->wq = w, t->wk = w ? w + (size_t)d * d : NULL, t->wv = w ? w + (size_t)2 * d * d : NULL;
            t->bq = b, t->bk = b ? b + d : NULL, t->bv = b ? b + 2 * d : NULL;
            t->wo = TL("transformer.h.%d.attn.c_proj.weight");
            t->bo = TL("transformer.h.%d.attn.c_proj.bias");
            t->norm2_w = TL("transformer.h.%d.ln_2.weight");
            t->norm2_b = TL("transformer.h.%d.ln_2.bias");
            t->w_gate = NULL;
            t->w_up = TL("transformer.h.%d.mlp.c_fc.weight");
            t->b_up = TL("transformer.h.%d.mlp.c_fc.bias");
            t->w_down = TL("transformer.h.%d.mlp.c_proj.weight");
            t->b_down = TL("transformer.h.%d.mlp.c_proj.bias");
        }
    } else {
        v->wte = T("model.embed_tokens.weight");
        v->wpe = NULL;
        v->normf_w = T("model.norm.weight");
        v->normf_b = NULL;
        for (int l = 0; l < c->n_layers; l++) {
            LayerTensors *t = &v->layers[l];
            t->norm1_w = TL("model.layers.%d.input_layernorm.weight");
            t->norm1_b = NULL;
            t->wq = TL("model.layers.%d.self_attn.q_proj.weight");
            t->wk = TL("model.layers.%d.self_attn.k_proj.weight");
            t->wv = TL("model.layers.%d.self_attn.v_proj.weight");
            t->bq = TL("model.layers.%d.self_attn.q_proj.bias");
            t->bk = TL("model.layers.%d.self_attn.k_proj.bias");
            t->bv = TL("model.layers.%d.self_attn.v_proj.bias");
            t->wo = TL("model.layers.%d.self_attn.o_proj.weight");
            t->bo = NULL;
            t->norm2_w = TL("model.layers.%d.post_attention_layernorm.weight");
            t->norm2_b = NULL;
            t->post_attn_norm_w = t->post_ffn_norm_w = NULL;
            if (c->sandwich_norms) {
                t->post_attn_norm_w = t->norm2_w;
                t->norm2_w = TL("model.layers.%d.pre_feedforward_layernorm.weight");
                t->post_ffn_norm_w = TL("model.layers.%d.post_feedforward_layernorm.weight");
            }
            t->q_norm = TL("model.layers.%d.self_attn.q_norm.weight");
            t->k_norm = TL("model.layers.%d.self_attn.k_norm.weight");
            t->w_gate = TL("model.layers.%d.mlp.gate_proj.weight");
            t->w_up = TL("model.layers.%d.mlp.up_proj.weight");
            t->b_up = NULL;
            t->w_down = TL("model.layers.%d.mlp.down_proj.weight");
            t->b_down = NULL;
        }
    }
    v->lm_head = c->lm_head ? (c->tied_embeddings ? v->wte : T("lm_head.weight")) : NULL;
    v->score = T("score.weight");
#undef T
#undef TL
}

/* Lay out the gradient buffer for the trainable tensors, in table order.
 * The buffer itself is allocated on first use (model_ensure_grads), so a
 * model loaded only for inference never pays for it. */
static void layout_grads(Model *m) {
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (p->grad_offset >= 0) {
            p->grad_offset = (long)off;
            off += p->numel;
        }
    }
    if (m->grads) m->be->free(m->grads);
    m->grads = NULL;
    m->n_grad_elems = off;
    bind_views(m, &m->g, NULL, 1);
}

int model_ensure_grads(Model *m) {
    if (m->grads || !m->n_grad_elems) return 0;
    m->grads = m->be->alloc(m->n_grad_elems * sizeof(float));
    if (!m->grads) return align_error_prefix("gradients for %zu trainable parameters", m->n_grad_elems);
    bind_views(m, &m->g, m->grads, 1);
    return 0;
}

/* RoPE inverse frequencies as Hugging Face computes them, with the
 * "linear", "llama3" and "longrope" scalings (long = 1: longrope's long
 * factors), over the rotated dims only (partial_rotary_factor). */
static void rope_inv_freq(const ModelConfig *c, float *out, int long_factors) {
    int hd = model_rotary_dim(c);
    for (int j = 0; j < hd / 2; j++) {
        double f = 1.0 / pow(c->rope_theta, (2.0 * j) / hd);
        if (c->rope_scaling == ROPE_SCALING_LONGROPE) {
            f /= long_factors ? c->rope_long_factor[j] : c->rope_short_factor[j];
        } else if (c->rope_scaling == ROPE_SCALING_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
            double old = c->rope_original_max_pos, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
            double wavelen = 2.0 * M_PI / f;
            double low_wavelen = old / lo, high_wavelen = old / hi;
            if (wavelen > low_wavelen) {
                f /= c->rope_factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (old / wavelen - lo) / (hi - lo);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        out[j] = (float)f;
    }
}

int model_quantizable(const ModelConfig *c, const ParamInfo *p) {
    if (p->ndim != 2 || p->lora || p->shape[1] % QUANT_BLOCK) return 0;
    const char *pre = c->arch == ARCH_GPT2 ? "transformer.h." : "model.layers.";
    size_t n = strlen(p->name);
    return !strncmp(p->name, pre, strlen(pre)) && n > 7 && !strcmp(p->name + n - 7, ".weight");
}

/* Fused members (q|k|v, gate|up) must share a storage type so one matmul
 * serves them. A group mixing Q4_0, Q5_0 and Q8_0 (llama.cpp's Q4_K_M on
 * rows that are not 256-blocks: Q5_0 q, k with a Q8_0 v) becomes Q8_0,
 * which holds those values exactly (quant_to_q8_0_exact) in a third of
 * fp32's bytes; any other mixed group falls back to fp32. qt[i] is
 * info[i]'s type. */
static void fix_groups(const Model *m, int *qt) {
    if (m->cfg.arch != ARCH_LLAMA) return;
    static const char *const groups[2][3] = {{"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"},
                                             {"mlp.gate_proj.weight", "mlp.up_proj.weight", NULL}};
    char nm[96];
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int g = 0; g < 2; g++) {
            int idx[3], k = 0, same = 1, q8 = 1;
            for (; k < 3 && groups[g][k]; k++) {
                snprintf(nm, sizeof nm, "model.layers.%d.%s", l, groups[g][k]);
                idx[k] = (int)(model_find_param((Model *)m, nm) - m->info);
                if (qt[idx[k]] != qt[idx[0]]) same = 0;
                if (!quant_exact_in_q8_0(qt[idx[k]])) q8 = 0;
            }
            if (!same)
                for (int j = 0; j < k; j++) qt[idx[j]] = q8 ? QUANT_Q8_0 : QUANT_NONE;
        }
}

/* fp32 tensors take consecutive element offsets in params, quantised ones
 * consecutive byte offsets in qparams, both in table order (so fused
 * members stay adjacent in either). */
static void assign_offsets(Model *m) {
    size_t off = 0, qoff = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (p->qtype) {
            p->offset = 0;
            p->qoffset = qoff;
            qoff += (size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1]);
            p->grad_offset = -1;
        } else {
            p->offset = off;
            off += p->numel;
        }
    }
    m->n_elems = off;
    m->n_qbytes = qoff;
}

static const void *qptr(const Model *m, const char *name, int *type) {
    ParamInfo *p = model_find_param((Model *)m, name);
    if (!p || !p->qtype) return NULL;
    *type = p->qtype;
    return m->qparams + p->qoffset;
}

static void bind_quant(Model *m) {
    char nm[96];
    for (int l = 0; l < m->cfg.n_layers; l++) {
        LayerQuant *q = &m->qw[l];
        memset(q, 0, sizeof *q);
#define QL(fmt, field, t) (snprintf(nm, sizeof nm, fmt, l), q->field = qptr(m, nm, &q->t))
        if (m->cfg.arch == ARCH_GPT2) {
            QL("transformer.h.%d.attn.c_attn.weight", qkv, t_qkv);
            QL("transformer.h.%d.attn.c_proj.weight", o, t_o);
            QL("transformer.h.%d.mlp.c_fc.weight", up, t_up);
            QL("transformer.h.%d.mlp.c_proj.weight", down, t_down);
        } else {
            QL("model.layers.%d.self_attn.q_proj.weight", qkv, t_qkv);
            QL("model.layers.%d.self_attn.o_proj.weight", o, t_o);
            QL("model.layers.%d.mlp.gate_proj.weight", up, t_up);
            QL("model.layers.%d.mlp.down_proj.weight", down, t_down);
        }
#undef QL
    }
}

Model *model_create(const ModelConfig *cfg, const Backend *be) { return model_create_quant(cfg, be, NULL, NULL); }

Model *model_create_quant(const ModelConfig *cfg, const Backend *be, ModelQuantPick pick, void *ctx) {
    if (model_config_validate(cfg)) return NULL;
    if (uses_window(cfg) && (!be->attention_forward_window || !be->attention_backward_window ||
                             !be->attention_forward_cached_window)) {
        align_errorf("sliding-window attention (sliding_window %d) is not implemented on the %s backend; "
                     "use --device cpu",
                     cfg->sliding_window, be->name);
        return NULL;
    }
    if ((cfg->rope_scaling == ROPE_SCALING_LONGROPE || (cfg->rotary_dim && cfg->rotary_dim != cfg->head_dim)) &&
        (!be->rope_ext_forward || !be->rope_ext_backward)) {
        align_errorf("Phi-3's longrope and partial rotary RoPE are not implemented on the %s backend; use --device cpu",
                     be->name);
        return NULL;
    }
    if (cfg->qk_norm && !cfg->gemma && (!be->head_rmsnorm_forward || !be->head_rmsnorm_backward)) {
        align_errorf("the q/k norms of Qwen3 are not implemented on the %s backend; use --device cpu", be->name);
        return NULL;
    }
    if ((model_attn_ext(cfg) && (!be->attention_forward_ext || !be->attention_backward_ext ||
                                 !be->attention_forward_cached_ext)) ||
        (cfg->geglu && (!be->geglu_forward || !be->geglu_backward)) ||
        (cfg->final_softcap > 0 && (!be->softcap_forward || !be->logprobs_backward_softcap)) ||
        (cfg->qk_norm && (!be->head_rmsnorm_forward || !be->head_rmsnorm_backward))) {
        align_errorf("this model's Gemma pieces (soft caps, query_pre_attn_scalar, GeGLU, q/k norms) are not "
                     "implemented on the %s backend; use --device cpu",
                     be->name);
        return NULL;
    }
    Model *m = calloc(1, sizeof *m);
    if (!m) {
        align_errorf("out of memory creating the model");
        return NULL;
    }
    m->cfg = *cfg;
    m->be = be;
    Table t;
    if (build_table(cfg, &t)) goto fail;
    m->info = t.info;
    m->n_params = t.n;
    if (pick) {
        int *qt = calloc(t.n, sizeof(int));
        if (!qt) {
            align_errorf("out of memory");
            goto fail;
        }
        for (int i = 0; i < t.n; i++) {
            int q = model_quantizable(cfg, &t.info[i]) ? pick(&t.info[i], ctx) : QUANT_NONE;
            qt[i] = quant_supported(q) && t.info[i].shape[1] % quant_block_elems((QuantType)q) == 0 ? q : QUANT_NONE;
        }
        fix_groups(m, qt);
        for (int i = 0; i < t.n; i++) t.info[i].qtype = qt[i];
        free(qt);
    }
    assign_offsets(m);
    m->params = be->alloc((m->n_elems ? m->n_elems : 1) * sizeof(float));
    if (m->n_qbytes) m->qparams = be->alloc(m->n_qbytes);
    m->w.layers = calloc(cfg->n_layers, sizeof(LayerTensors));
    m->g.layers = calloc(cfg->n_layers, sizeof(LayerTensors));
    m->qw = calloc(cfg->n_layers, sizeof(LayerQuant));
    m->acts = calloc(1, sizeof(ModelActs));
    if (!m->params || (m->n_qbytes && !m->qparams) || !m->w.layers || !m->g.layers || !m->qw || !m->acts) {
        align_errorf("out of memory allocating %.1f MiB of parameters", (m->n_elems * 4.0 + m->n_qbytes) / 1048576);
        goto fail;
    }
    bind_views(m, &m->w, m->params, 0);
    bind_quant(m);
    for (int i = 0; i < m->n_params; i++) m->info[i].grad_offset = m->info[i].qtype ? -1 : 0; /* all trainable but quantised */
    layout_grads(m);
    if (cfg->arch == ARCH_LLAMA) {
        float host[1024];
        if (cfg->head_dim / 2 > 1024) {
            align_errorf("model config: head_dim %d is too large", cfg->head_dim);
            goto fail;
        }
        rope_inv_freq(cfg, host, 0);
        m->acts->inv_freq = be->alloc(cfg->head_dim / 2 * sizeof(float));
        if (!m->acts->inv_freq) goto fail;
        be->to_device(m->acts->inv_freq, host, cfg->head_dim / 2 * sizeof(float));
        if (cfg->rope_local_theta > 0) {
            /* Gemma 3's sliding layers: their own base, never scaled */
            ModelConfig lc = *cfg;
            lc.rope_theta = cfg->rope_local_theta;
            lc.rope_scaling = ROPE_SCALING_NONE;
            rope_inv_freq(&lc, host, 0);
            m->acts->inv_freq_local = be->alloc(cfg->head_dim / 2 * sizeof(float));
            if (!m->acts->inv_freq_local) goto fail;
            be->to_device(m->acts->inv_freq_local, host, cfg->head_dim / 2 * sizeof(float));
        }
        if (cfg->rope_scaling == ROPE_SCALING_LONGROPE) {
            rope_inv_freq(cfg, host, 1);
            m->acts->inv_freq_long = be->alloc(cfg->head_dim / 2 * sizeof(float));
            if (!m->acts->inv_freq_long) goto fail;
            be->to_device(m->acts->inv_freq_long, host, cfg->head_dim / 2 * sizeof(float));
        }
    }
    return m;
fail:
    model_free(m);
    return NULL;
}

/* The LM-head buffers (lm_reserve grows them). */
static void lm_release(const Backend *be, ModelActs *a) {
    free(a->lm_rows_host);
    free(a->lm_tgt_host);
    be->free(a->lm_rows);
    be->free(a->lm_tgt);
    be->free(a->lm_h);
    be->free(a->lm_logits);
    be->free(a->lm_lse);
    be->free(a->lm_dlogp);
    be->free(a->lm_dh);
    a->lm_rows_host = a->lm_tgt_host = a->lm_rows = a->lm_tgt = NULL;
    a->lm_h = a->lm_logits = a->lm_lse = a->lm_dlogp = a->lm_dh = NULL;
    a->lm_cap = 0;
}

static void acts_release(const Backend *be, ModelActs *a) {
    be->free(a->buf);
    be->free(a->tokens);
    be->free(a->pos);
    free(a->seq_start);
    free(a->vbuf);
    lm_release(be, a);
}

void model_free(Model *m) {
    if (!m) return;
    if (m->acts) {
        acts_release(m->be, m->acts);
        m->be->free(m->acts->inv_freq);
        m->be->free(m->acts->inv_freq_local);
        m->be->free(m->acts->inv_freq_long);
        free(m->acts->pos_host);
        free(m->acts);
    }
    if (m->adapter) m->adapter->free(m);
    if (m->virt) m->virt->free(m);
    if (m->params) m->be->free(m->params);
    if (m->qparams) m->be->free(m->qparams);
    if (m->lm_head_q) m->be->free(m->lm_head_q);
    if (m->grads) m->be->free(m->grads);
    if (m->norm_eff) m->be->free(m->norm_eff);
    if (m->ones) m->be->free(m->ones);
    free(m->wn.layers);
    free(m->qw);
    free(m->w.layers);
    free(m->g.layers);
    free(m->info);
    free(m);
}

void model_init_random(Model *m, uint64_t seed) {
    const ModelConfig *c = &m->cfg;
    Rng rng;
    rng_seed(&rng, seed);
    float *host = malloc((m->n_elems ? m->n_elems : 1) * sizeof(float));
    size_t qmax = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->info[i].qtype && m->info[i].numel > qmax) qmax = m->info[i].numel;
    float *qtmp = qmax ? malloc(qmax * sizeof(float)) : NULL;
    void *qblk = qmax ? malloc(qmax * sizeof(float)) : NULL;
    if (!host || (qmax && (!qtmp || !qblk))) {
        free(host), free(qtmp), free(qblk);
        return;
    }
    m->be->to_host(host, m->params, m->n_elems * sizeof(float)); /* keeps LoRA adapters as they are */
    float resid_std = 0.02f / sqrtf(2.0f * c->n_layers);
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        if (p->lora) continue;
        /* a quantised tensor draws the same numbers, then is quantised */
        float *x = p->qtype ? qtmp : host + p->offset;
        int is_norm = strstr(p->name, "norm") || strstr(p->name, "ln_");
        if (p->ndim == 1) {
            /* a (1 + w) norm starts at w = 0, as Gemma's */
            for (size_t k = 0; k < p->numel; k++) x[k] = is_norm && !c->norm_plus_one ? 1.0f : 0.0f;
            continue;
        }
        int resid = strstr(p->name, "c_proj") || strstr(p->name, "o_proj") || strstr(p->name, "down_proj");
        float std = resid ? resid_std : 0.02f;
        for (size_t k = 0; k < p->numel; k++) x[k] = (float)(rng_normal(&rng) * std);
        if (p->qtype) {
            quant_quantize_rows((QuantType)p->qtype, x, qblk, p->shape[0], p->shape[1]);
            model_param_set_blocks(m, p, qblk);
        }
    }
    m->be->to_device(m->params, host, m->n_elems * sizeof(float));
    free(host), free(qtmp), free(qblk);
}

int model_param_to_host(Model *m, const ParamInfo *p, float *out) {
    if (!p->qtype) {
        m->be->to_host(out, m->params + p->offset, p->numel * sizeof(float));
        return 0;
    }
    size_t bytes = (size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1]);
    void *blk = malloc(bytes ? bytes : 1);
    if (!blk) return align_errorf("out of memory dequantising %s", p->name);
    m->be->to_host(blk, m->qparams + p->qoffset, bytes);
    quant_dequantize_rows((QuantType)p->qtype, blk, out, p->shape[0], p->shape[1]);
    free(blk);
    return 0;
}

int model_param_set_blocks(Model *m, const ParamInfo *p, const void *blocks) {
    if (!p->qtype) return align_errorf("%s is not a quantised tensor", p->name);
    m->be->to_device(m->qparams + p->qoffset, blocks, (size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1]));
    return 0;
}

size_t model_weight_bytes(const Model *m) { return m->n_elems * sizeof(float) + m->n_qbytes; }

int model_quantize_base(Model *m, QuantType t) {
    /* the 256-element K-quants come only as a GGUF stores them */
    if (!quant_base_type(t)) return align_errorf("unsupported quantisation type %s for the base", quant_name(t));
    const Backend *be = m->be;
    int n = m->n_params, count = 0;
    int *qt = calloc(n, sizeof(int));
    ParamInfo *old = malloc(n * sizeof(ParamInfo));
    if (!qt || !old) {
        free(qt), free(old);
        return align_errorf("out of memory");
    }
    memcpy(old, m->info, n * sizeof(ParamInfo));
    for (int i = 0; i < n; i++)
        qt[i] = old[i].qtype                                                                            ? old[i].qtype
                : model_quantizable(&m->cfg, &old[i]) && old[i].shape[1] % quant_block_elems(t) == 0 ? (int)t
                                                                                                        : QUANT_NONE;
    fix_groups(m, qt);
    for (int i = 0; i < n; i++) count += qt[i] != old[i].qtype;
    if (!count) {
        free(qt), free(old);
        return 0;
    }
    float *old_params = m->params;
    uint8_t *old_q = m->qparams;
    size_t old_elems = m->n_elems, old_qbytes = m->n_qbytes;
    for (int i = 0; i < n; i++) m->info[i].qtype = qt[i];
    assign_offsets(m);
    float *np = be->alloc((m->n_elems ? m->n_elems : 1) * sizeof(float));
    uint8_t *nq = be->alloc(m->n_qbytes);
    size_t maxn = 0;
    for (int i = 0; i < n; i++)
        if (qt[i] != old[i].qtype && old[i].numel > maxn) maxn = old[i].numel;
    float *tmp = malloc(maxn * sizeof(float));
    void *blk = malloc(maxn * sizeof(float));
    if (!np || !nq || !tmp || !blk) {
        if (np) be->free(np);
        if (nq) be->free(nq);
        free(tmp), free(blk);
        memcpy(m->info, old, n * sizeof(ParamInfo));
        m->n_elems = old_elems, m->n_qbytes = old_qbytes;
        free(qt), free(old);
        return align_errorf("out of memory quantising the base weights");
    }
    for (int i = 0; i < n; i++) {
        ParamInfo *p = &m->info[i];
        if (!p->qtype) {
            be->copy(np + p->offset, old_params + old[i].offset, p->numel * sizeof(float));
        } else if (old[i].qtype) {
            be->copy(nq + p->qoffset, old_q + old[i].qoffset, (size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1]));
        } else {
            be->to_host(tmp, old_params + old[i].offset, p->numel * sizeof(float));
            quant_quantize_rows((QuantType)p->qtype, tmp, blk, p->shape[0], p->shape[1]);
            be->to_device(nq + p->qoffset, blk, (size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1]));
        }
    }
    free(tmp), free(blk), free(qt), free(old);
    be->free(old_params);
    if (old_q) be->free(old_q);
    m->params = np;
    m->qparams = nq;
    bind_views(m, &m->w, m->params, 0);
    bind_quant(m);
    layout_grads(m);
    return count;
}

int model_set_trainable(Model *m, const char *substring, int trainable) {
    int matched = 0;
    for (int i = 0; i < m->n_params; i++) {
        if (strstr(m->info[i].name, substring)) {
            m->info[i].grad_offset = trainable && !m->info[i].qtype ? 0 : -1; /* quantised: always frozen */
            matched++;
        }
    }
    layout_grads(m);
    return matched;
}

int model_set_trainable_mask(Model *m, const unsigned char *train) {
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        m->info[i].grad_offset = train[i] && !m->info[i].qtype ? 0 : -1;
        n += m->info[i].grad_offset == 0;
    }
    layout_grads(m);
    return n;
}

int model_append_params(Model *m, const ParamInfo *extra, int n) {
    ParamInfo *info = realloc(m->info, (m->n_params + n) * sizeof *info);
    if (!info) return align_errorf("out of memory growing the parameter table");
    m->info = info;
    size_t add = 0;
    for (int i = 0; i < n; i++) {
        ParamInfo *p = &info[m->n_params + i];
        *p = extra[i];
        p->qtype = QUANT_NONE;
        p->offset = m->n_elems + add;
        p->grad_offset = -1;
        add += p->numel;
    }
    float *np = m->be->alloc((m->n_elems + add) * sizeof(float));
    if (!np) return align_error_prefix("%zu new parameters", add);
    m->be->copy(np, m->params, m->n_elems * sizeof(float));
    m->be->free(m->params);
    m->params = np;
    m->n_params += n;
    m->n_elems += add;
    bind_views(m, &m->w, m->params, 0);
    layout_grads(m);
    return 0;
}

const float *model_rope_inv_freq(const Model *m) { return m->acts->inv_freq; }

const float *model_layer_rope_inv_freq(const Model *m, int l) {
    if (m->acts->inv_freq_local && model_layer_sliding(&m->cfg, l)) return m->acts->inv_freq_local;
    return m->acts->inv_freq;
}

/* Plain RoPE goes through the backend's rope op in one call; partial rotary
 * and longrope through rope_ext, once per chunk for longrope: transformers
 * recomputes its inv_freq per forward call from max(position_ids) + 1, so a
 * training forward of a whole sequence uses the long factors for every
 * token once the sequence is longer than original_max_position_embeddings,
 * and each cached decoding step decides by its own newest position. */
void model_rope(const Model *m, int l, float *qkv, const int32_t *pos, const int32_t *pos_host,
                const int32_t *seq_start, int S, int N, int backward) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    int Hq = c->n_heads, Hkv = c->n_kv_heads, hd = c->head_dim, rot = model_rotary_dim(c);
    const float *inv = model_layer_rope_inv_freq(m, l);
    if (rot == hd && c->rope_scaling != ROPE_SCALING_LONGROPE) {
        if (backward) be->rope_backward(qkv, pos, inv, N, Hq, Hkv, hd);
        else be->rope_forward(qkv, pos, inv, N, Hq, Hkv, hd);
        return;
    }
    float scale = c->rope_attn_factor > 0 ? c->rope_attn_factor : 1.0f;
    size_t row = (size_t)(Hq + 2 * Hkv) * hd;
    for (int s = 0; s < S && seq_start[s] < N; s++) {
        int r0 = seq_start[s], r1 = seq_start[s + 1] < N ? seq_start[s + 1] : N;
        if (r1 <= r0) continue;
        const float *f = inv;
        if (c->rope_scaling == ROPE_SCALING_LONGROPE) {
            int top = 0;
            for (int i = r0; i < r1; i++)
                if (pos_host[i] > top) top = pos_host[i];
            if (top + 1 > c->rope_original_max_pos) f = m->acts->inv_freq_long;
        } else {
            r1 = N; /* one call does: no per-chunk choice */
        }
        if (backward) be->rope_ext_backward(qkv + r0 * row, pos + r0, f, r1 - r0, Hq, Hkv, hd, rot, scale);
        else be->rope_ext_forward(qkv + r0 * row, pos + r0, f, r1 - r0, Hq, Hkv, hd, rot, scale);
        if (r1 == N) break;
    }
}

/* 1 + w into norm_eff for every norm weight, and wn pointing there (the
 * other tensors as in w). Gradients wrt 1 + w are those wrt w, so backward
 * uses wn's values and g's slots unchanged. */
const ModelTensors *model_norm_weights(Model *m) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    if (!c->norm_plus_one) return &m->w;
    size_t d = c->dim, hd = c->head_dim, per = 4 * d + 2 * hd, need = c->n_layers * per + d;
    if (!m->norm_eff) {
        m->norm_eff = be->alloc(need * sizeof(float));
        m->ones = be->alloc((d > hd ? d : hd) * sizeof(float));
        m->wn.layers = calloc(c->n_layers, sizeof(LayerTensors));
        float *h = malloc((d > hd ? d : hd) * sizeof(float));
        if (!m->norm_eff || !m->ones || !m->wn.layers || !h) {
            free(h);
            align_errorf("out of memory for the norm weights");
            return NULL;
        }
        for (size_t i = 0; i < (d > hd ? d : hd); i++) h[i] = 1.0f;
        be->to_device(m->ones, h, (d > hd ? d : hd) * sizeof(float));
        free(h);
    }
    LayerTensors *keep = m->wn.layers;
    m->wn = m->w;
    m->wn.layers = keep;
    float *e = m->norm_eff;
#define EFF(dst, src, n) do { if (src) { be->add(e, src, m->ones, n); dst = e; } else dst = NULL; e += (n); } while (0)
    for (int l = 0; l < c->n_layers; l++) {
        const LayerTensors *w = &m->w.layers[l];
        LayerTensors *t = &m->wn.layers[l];
        *t = *w;
        EFF(t->norm1_w, w->norm1_w, d);
        EFF(t->norm2_w, w->norm2_w, d);
        EFF(t->post_attn_norm_w, w->post_attn_norm_w, d);
        EFF(t->post_ffn_norm_w, w->post_ffn_norm_w, d);
        EFF(t->q_norm, w->q_norm, hd);
        EFF(t->k_norm, w->k_norm, hd);
    }
    EFF(m->wn.normf_w, m->w.normf_w, d);
#undef EFF
    return &m->wn;
}

size_t model_trainable_elems(const Model *m) { return m->n_grad_elems; }

void model_zero_grad(Model *m) {
    if (model_ensure_grads(m)) return;
    if (m->grads) m->be->zero(m->grads, m->n_grad_elems * sizeof(float));
}

/* ------------------------------------------------------------ activations */

static int acts_reserve(Model *m, int N) {
    ModelActs *a = m->acts;
    const ModelConfig *c = &m->cfg;
    int stored = m->n_grad_elems ? c->n_layers : 1;
    if (N <= a->cap && stored == a->stored) return 0;
    const Backend *be = m->be;
    size_t L = (size_t)stored, d = c->dim, q = qkv_dim(c), ao = (size_t)c->n_heads * c->head_dim;
    size_t u = up_dim(c), F = c->ffn_dim, H = c->n_heads;
    size_t n = N, qkh = c->qk_norm ? (size_t)(c->n_heads + c->n_kv_heads) : 0; /* normed heads per token */
    size_t sand = c->sandwich_norms ? 2 * n * d + 4 * n : 0;
    size_t per_layer = n * d * 3 /* resid_mid, norm1, norm2 */ + 4 * n /* stats */ + n * q + n * ao +
                       H * n + n * u + n * F + sand + n * qkh * (c->head_dim + 1) /* qkn, qkn_rstd */;
    size_t total = L * per_layer + (L + 1) * n * d + n * d + 2 * n /* normf */ +
                   n * d * 3 /* dresid, dtmp, dh */ + n * q + n * ao + n * u + n * F + n /* values */;
    be->free(a->buf);
    be->free(a->tokens);
    be->free(a->pos);
    a->cap = 0;
    a->buf = be->alloc(total * sizeof(float));
    a->tokens = be->alloc(n * sizeof(int32_t));
    a->pos = be->alloc(n * sizeof(int32_t));
    if (!a->buf || !a->tokens || !a->pos)
        return align_error_prefix("activations for %d tokens (%.1f MiB)", N, total * 4.0 / 1048576);
    float *p = a->buf;
#define TAKE(field, count) (a->field = p, p += (count))
    TAKE(resid, (L + 1) * n * d);
    TAKE(resid_mid, L * n * d);
    TAKE(norm1, L * n * d);
    TAKE(norm2, L * n * d);
    TAKE(stats1, L * 2 * n);
    TAKE(stats2, L * 2 * n);
    TAKE(qkv, L * n * q);
    TAKE(qkn, L * n * qkh * c->head_dim);
    TAKE(qkn_rstd, L * n * qkh);
    TAKE(attn, L * n * ao);
    TAKE(lse, L * H * n);
    TAKE(up, L * n * u);
    TAKE(act, L * n * F);
    TAKE(normf, n * d);
    TAKE(statsf, 2 * n);
    TAKE(dresid, n * d);
    TAKE(dtmp, n * d);
    TAKE(dh, n * d);
    TAKE(dqkv, n * q);
    TAKE(dattn, n * ao);
    TAKE(dup, n * u);
    TAKE(dact, n * F);
    TAKE(values, n);
    if (c->sandwich_norms) {
        TAKE(o_out, L * n * d);
        TAKE(f_out, L * n * d);
        TAKE(stats_pa, L * 2 * n);
        TAKE(stats_pf, L * 2 * n);
    }
#undef TAKE
    a->cap = N;
    a->stored = stored;
    return 0;
}

/* ------------------------------------------------------------ forward */

static void norm_forward(const Model *m, float *out, float *stats, const float *inp, const float *w,
                         const float *b, int N) {
    const ModelConfig *c = &m->cfg;
    if (c->arch == ARCH_GPT2)
        m->be->layernorm_forward(out, stats, stats + N, inp, w, b, N, c->dim, c->norm_eps);
    else
        m->be->rmsnorm_forward(out, stats + N, inp, w, N, c->dim, c->norm_eps);
}

/* stats: [mean | rstd] of the forward's N rows; the first rows of them
 * (N, or fewer for model_backward_rows) are backpropagated. */
static void norm_backward(const Model *m, float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, const float *stats, int N, int rows) {
    const ModelConfig *c = &m->cfg;
    if (c->arch == ARCH_GPT2)
        m->be->layernorm_backward(dinp, dw, db, dout, inp, w, stats, stats + N, rows, c->dim);
    else
        m->be->rmsnorm_backward(dinp, dw, dout, inp, w, stats + N, rows, c->dim);
}

static int backend_prefixes(const Model *m) {
    return m->be->attention_forward_prefixed && m->be->attention_backward_prefixed;
}

/* Longrope picks its factors by a chunk's length: a continuation extending
 * a shared prompt could need the long factors while the prompt, computed
 * once as its own chunk, had the short ones; such models pack unshared. */
int model_shares_prefixes(const Model *m) {
    return backend_prefixes(m) && !m->virt && m->cfg.rope_scaling != ROPE_SCALING_LONGROPE;
}

static int validate_batch(const Model *m, const Batch *b) {
    const ModelConfig *c = &m->cfg;
    if (b->n_tokens <= 0 || b->n_seqs <= 0) return align_errorf("empty batch");
    if (b->seq_start[0] != 0 || b->seq_start[b->n_seqs] != b->n_tokens)
        return align_errorf("batch offsets must start at 0 and end at n_tokens");
    if (b->seq_prefix && !model_shares_prefixes(m))
        return m->virt ? align_errorf("a model with virtual tokens cannot run batches with shared prefixes")
                       : align_errorf("the %s backend cannot run batches with shared prefixes", m->be->name);
    for (int s = 0; s < b->n_seqs; s++) {
        int len = b->seq_start[s + 1] - b->seq_start[s], p = b->seq_prefix ? b->seq_prefix[s] : -1;
        if (len <= 0) return align_errorf("batch sequence %d is empty", s);
        if (p >= s || p < -1 || (p >= 0 && b->seq_prefix[p] != -1))
            return align_errorf("batch sequence %d: prefix %d is not an earlier sequence without a prefix", s, p);
        if (p >= 0) len += b->seq_start[p + 1] - b->seq_start[p];
        if (c->arch == ARCH_GPT2 && len > c->max_seq_len)
            return align_errorf("sequence of %d tokens is longer than the model's %d positions", len, c->max_seq_len);
    }
    for (int i = 0; i < b->n_tokens; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab_size)
            return align_errorf("token id %d at position %d is outside the vocabulary (%d)", b->tokens[i], i, c->vocab_size);
    return 0;
}

/* The caller's batch behind nv virtual rows: one more sequence, first, that
 * every other extends (model.h, ModelVirtualOps). Its tokens are 0: the
 * hooks supply what the virtual rows carry. */
static int expand_virtual(Model *m, const Batch *b, int nv, Batch *out) {
    ModelActs *a = m->acts;
    const ModelConfig *c = &m->cfg;
    int S = b->n_seqs + 1, need = nv + b->n_tokens + (S + 1) + S;
    if (need > a->vcap) {
        int32_t *v = realloc(a->vbuf, need * sizeof(int32_t));
        if (!v) return align_errorf("out of memory for a batch with virtual tokens");
        a->vbuf = v;
        a->vcap = need;
    }
    int32_t *tok = a->vbuf, *start = tok + nv + b->n_tokens, *pre = start + S + 1;
    memset(tok, 0, nv * sizeof(int32_t));
    memcpy(tok + nv, b->tokens, b->n_tokens * sizeof(int32_t));
    start[0] = 0;
    pre[0] = -1;
    for (int s = 0; s < b->n_seqs; s++) {
        start[s + 1] = nv + b->seq_start[s];
        pre[s + 1] = 0;
        int len = b->seq_start[s + 1] - b->seq_start[s];
        if (c->arch == ARCH_GPT2 && nv + len > c->max_seq_len)
            return align_errorf("sequence of %d tokens after %d virtual tokens is longer than the model's %d positions",
                                len, nv, c->max_seq_len);
    }
    start[S] = nv + b->n_tokens;
    *out = (Batch){.n_tokens = nv + b->n_tokens, .n_seqs = S, .tokens = tok, .seq_start = start, .seq_prefix = pre};
    return 0;
}

int model_forward(Model *m, const Batch *b) {
    ModelActs *a = m->acts;
    a->forward_done = 0; /* first: a refused batch must not leave the previous one's activations readable */
    if (validate_batch(m, b)) return -1;
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    int nv = m->virt ? m->virt->n_virtual(m) : 0;
    Batch vb = {0};
    if (nv > 0) {
        if (expand_virtual(m, b, nv, &vb)) return -1;
        b = &vb;
    }
    a->row0 = nv;
    int N = b->n_tokens;
    if (acts_reserve(m, N)) return -1;
    if (2 * b->n_seqs + 1 > a->seq_cap) {
        int32_t *s = realloc(a->seq_start, (2 * b->n_seqs + 1) * sizeof(int32_t));
        if (!s) return align_errorf("out of memory for batch offsets");
        a->seq_start = s;
        a->seq_cap = 2 * b->n_seqs + 1;
    }
    memcpy(a->seq_start, b->seq_start, (b->n_seqs + 1) * sizeof(int32_t));
    a->seq_prefix = NULL;
    if (b->seq_prefix) {
        memcpy(a->seq_start + b->n_seqs + 1, b->seq_prefix, b->n_seqs * sizeof(int32_t));
        a->seq_prefix = a->seq_start + b->n_seqs + 1;
    }
    a->n_tokens = N;
    a->n_seqs = b->n_seqs;
    a->lm_done = a->values_done = 0;

    /* per-sequence positions, restarting at 0 (after the prefix, if any) */
    int32_t *pos = malloc(N * sizeof(int32_t));
    if (!pos) return align_errorf("out of memory for positions");
    for (int s = 0; s < b->n_seqs; s++) {
        int p = b->seq_prefix ? b->seq_prefix[s] : -1;
        int first = p >= 0 ? b->seq_start[p + 1] - b->seq_start[p] : 0;
        for (int i = b->seq_start[s]; i < b->seq_start[s + 1]; i++) pos[i] = first + i - b->seq_start[s];
    }
    be->to_device(a->pos, pos, N * sizeof(int32_t));
    be->to_device(a->tokens, b->tokens, N * sizeof(int32_t));
    free(a->pos_host);
    a->pos_host = pos; /* longrope's per-chunk choice, forward and backward */

    size_t d = c->dim, q = qkv_dim(c), ao = (size_t)c->n_heads * c->head_dim, u = up_dim(c),
           F = c->ffn_dim, n = N;
    int Hq = c->n_heads, Hkv = c->n_kv_heads, hd = c->head_dim;
    int lora = m->adapter ? m->adapter->begin_forward(m, N) : 0;
    if (lora < 0) return -1;
    const ModelTensors *W = model_norm_weights(m);
    if (!W) return -1;
    be->embedding_forward(a->resid, a->tokens, a->pos, m->w.wte, m->w.wpe, N, c->dim);
    /* the scale is the embedding module's (transformers' *ScaledWordEmbedding):
     * virtual tokens, like peft's inputs_embeds, go in unscaled */
    if (c->embed_scale > 0) be->scale(a->resid, c->embed_scale, n * d);
    if (nv) m->virt->embed(m, a->resid);
    size_t S = (size_t)a->stored; /* layer slots: l % S; residual slots: l % (S + 1) */
    size_t HQK = (size_t)(Hq + Hkv);
    float ascale = model_attn_scale(c);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerTensors *w = &W->layers[l];
        const LayerQuant *qw = &m->qw[l];
        size_t k = l % S;
        float *in = a->resid + (l % (S + 1)) * n * d, *out = a->resid + ((l + 1) % (S + 1)) * n * d;
        float *mid = a->resid_mid + k * n * d;
        float *norm1 = a->norm1 + k * n * d, *norm2 = a->norm2 + k * n * d;
        float *qkv = a->qkv + k * n * q, *attn = a->attn + k * n * ao;
        float *up = a->up + k * n * u, *act = a->act + k * n * F;
        /* attention block: mid = in + o(attn(norm(in))) */
        norm_forward(m, norm1, a->stats1 + k * 2 * n, in, w->norm1_w, w->norm1_b, N);
        model_linear_forward(m, qkv, norm1, w->wq, qw->qkv, qw->t_qkv, w->bq, N, c->dim, (int)q);
        if (lora) m->adapter->forward(m, l, MODEL_SLOT_QKV, norm1, qkv, (int)q, N, 1);
        if (c->qk_norm)
            be->head_rmsnorm_forward(qkv, a->qkn + k * n * HQK * hd, a->qkn_rstd + k * n * HQK, w->q_norm, w->k_norm, N,
                                     Hq, Hkv, hd, c->norm_eps);
        if (c->arch == ARCH_LLAMA) model_rope(m, l, qkv, a->pos, a->pos_host, a->seq_start, b->n_seqs, N, 0);
        if (nv) m->virt->kv(m, l, qkv, (int)q);
        int window = model_layer_window(c, l);
        if (model_attn_ext(c))
            be->attention_forward_ext(attn, a->lse + k * Hq * n, qkv, a->seq_start, a->seq_prefix, b->n_seqs, N, Hq,
                                      Hkv, hd, window, ascale, c->attn_softcap);
        else if (window)
            be->attention_forward_window(attn, a->lse + k * Hq * n, qkv, a->seq_start, a->seq_prefix, b->n_seqs, N,
                                         Hq, Hkv, hd, window);
        else if (a->seq_prefix)
            be->attention_forward_prefixed(attn, a->lse + k * Hq * n, qkv, a->seq_start, a->seq_prefix, b->n_seqs,
                                           N, Hq, Hkv, hd);
        else
            be->attention_forward(attn, a->lse + k * Hq * n, qkv, a->seq_start, b->n_seqs, N, Hq, Hkv, hd);
        float *o_out = c->sandwich_norms ? a->o_out + k * n * d : a->dtmp;
        model_linear_forward(m, o_out, attn, w->wo, qw->o, qw->t_o, w->bo, N, (int)ao, c->dim);
        if (lora) m->adapter->forward(m, l, MODEL_SLOT_O, attn, o_out, c->dim, N, 1);
        if (c->sandwich_norms) norm_forward(m, a->dtmp, a->stats_pa + k * 2 * n, o_out, w->post_attn_norm_w, NULL, N);
        be->add(mid, in, a->dtmp, n * d);
        /* MLP block: out = mid + down(act(up(norm(mid)))) */
        norm_forward(m, norm2, a->stats2 + k * 2 * n, mid, w->norm2_w, w->norm2_b, N);
        model_linear_forward(m, up, norm2, c->arch == ARCH_LLAMA ? w->w_gate : w->w_up, qw->up, qw->t_up, w->b_up,
                             N, c->dim, (int)u);
        if (lora) m->adapter->forward(m, l, MODEL_SLOT_UP, norm2, up, (int)u, N, 1);
        if (c->geglu) be->geglu_forward(act, up, N, c->ffn_dim);
        else if (c->arch == ARCH_LLAMA) be->swiglu_forward(act, up, N, c->ffn_dim);
        else be->gelu_forward(act, up, n * F);
        float *f_out = c->sandwich_norms ? a->f_out + k * n * d : a->dtmp;
        model_linear_forward(m, f_out, act, w->w_down, qw->down, qw->t_down, w->b_down, N, c->ffn_dim, c->dim);
        if (lora) m->adapter->forward(m, l, MODEL_SLOT_DOWN, act, f_out, c->dim, N, 1);
        if (c->sandwich_norms) norm_forward(m, a->dtmp, a->stats_pf + k * 2 * n, f_out, w->post_ffn_norm_w, NULL, N);
        be->add(out, mid, a->dtmp, n * d);
    }
    norm_forward(m, a->normf, a->statsf, a->resid + (c->n_layers % (S + 1)) * n * d, W->normf_w, m->w.normf_b, N);
    a->forward_done = backend_check(be, "model forward") == 0;
    return a->forward_done ? 0 : -1;
}

/* LM-head buffers for up to N rows. */
static int lm_reserve(Model *m, int N) {
    ModelActs *a = m->acts;
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    if (N <= a->lm_cap) return 0;
    lm_release(be, a);
    a->lm_rows_host = malloc(N * sizeof(int32_t));
    a->lm_tgt_host = malloc(N * sizeof(int32_t));
    a->lm_rows = be->alloc(N * sizeof(int32_t));
    a->lm_tgt = be->alloc(N * sizeof(int32_t));
    a->lm_h = be->alloc((size_t)N * c->dim * sizeof(float));
    a->lm_logits = be->alloc((size_t)N * c->vocab_size * sizeof(float));
    a->lm_lse = be->alloc(N * sizeof(float));
    a->lm_dlogp = be->alloc(N * sizeof(float));
    a->lm_dh = be->alloc((size_t)N * c->dim * sizeof(float));
    if (!a->lm_rows_host || !a->lm_tgt_host || !a->lm_rows || !a->lm_tgt || !a->lm_h ||
        !a->lm_logits || !a->lm_lse || !a->lm_dlogp || !a->lm_dh)
        return align_errorf("out of memory for the LM head of %d tokens (%.1f MiB of logits)", N,
                            (double)N * c->vocab_size * 4 / 1048576);
    a->lm_cap = N;
    return 0;
}

int model_logits(Model *m, const int32_t *rows, int n_rows, float *out) {
    ModelActs *a = m->acts;
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    if (!a->forward_done) return align_errorf("model_logits called before model_forward");
    if (!c->lm_head) return align_errorf("this model has no LM head (it is a reward/value model)");
    for (int i = 0; i < n_rows; i++)
        if (rows[i] < 0 || rows[i] >= a->n_tokens - a->row0)
            return align_errorf("model_logits: row %d is outside the batch", rows[i]);
    if (lm_reserve(m, n_rows)) return -1;
    a->lm_done = 0; /* the LM buffers now hold these rows, not the targets' */
    for (int i = 0; i < n_rows; i++) a->lm_rows_host[i] = rows[i] + a->row0; /* past the virtual rows */
    be->to_device(a->lm_rows, a->lm_rows_host, n_rows * sizeof(int32_t));
    be->gather_rows(a->lm_h, a->normf, a->lm_rows, n_rows, c->dim);
    be->matmul_forward(a->lm_logits, a->lm_h, m->w.lm_head, NULL, n_rows, c->dim, c->vocab_size);
    if (c->final_softcap > 0) be->softcap_forward(a->lm_logits, (size_t)n_rows * c->vocab_size, c->final_softcap);
    be->to_host(out, a->lm_logits, (size_t)n_rows * c->vocab_size * sizeof(float));
    return backend_check(be, "model logits");
}

int model_token_logprobs(Model *m, const int32_t *targets, float *logp) {
    ModelActs *a = m->acts;
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    if (!a->forward_done) return align_errorf("model_token_logprobs called before model_forward");
    if (!c->lm_head) return align_errorf("this model has no LM head (it is a reward/value model)");
    int N = a->n_tokens - a->row0, n = 0; /* the caller's rows, after any virtual ones */
    if (lm_reserve(m, N)) return -1;
    for (int i = 0; i < N; i++) {
        if (targets[i] < 0) continue;
        if (targets[i] >= c->vocab_size)
            return align_errorf("target id %d at position %d is outside the vocabulary (%d)", targets[i], i, c->vocab_size);
        a->lm_rows_host[n] = i + a->row0;
        a->lm_tgt_host[n] = targets[i];
        n++;
    }
    a->n_lm = n;
    a->lm_done = 1;
    if (logp) memset(logp, 0, N * sizeof(float));
    if (n == 0) return 0;
    be->to_device(a->lm_rows, a->lm_rows_host, n * sizeof(int32_t));
    be->to_device(a->lm_tgt, a->lm_tgt_host, n * sizeof(int32_t));
    be->gather_rows(a->lm_h, a->normf, a->lm_rows, n, c->dim);
    be->matmul_forward(a->lm_logits, a->lm_h, m->w.lm_head, NULL, n, c->dim, c->vocab_size);
    if (c->final_softcap > 0) be->softcap_forward(a->lm_logits, (size_t)n * c->vocab_size, c->final_softcap);
    be->logprobs_forward(a->lm_dlogp /* reused as output */, a->lm_lse, a->lm_logits, a->lm_tgt, n, c->vocab_size);
    if (logp) {
        float *tmp = malloc(n * sizeof(float));
        if (!tmp) return align_errorf("out of memory");
        be->to_host(tmp, a->lm_dlogp, n * sizeof(float));
        for (int k = 0; k < n; k++) logp[a->lm_rows_host[k] - a->row0] = tmp[k];
        free(tmp);
    }
    if (backend_check(be, "model log-probs")) {
        a->lm_done = 0;
        return -1;
    }
    return 0;
}

int model_values(Model *m, float *values) {
    ModelActs *a = m->acts;
    const ModelConfig *c = &m->cfg;
    if (!a->forward_done) return align_errorf("model_values called before model_forward");
    if (!c->value_head) return align_errorf("this model has no value head (score.weight)");
    m->be->matmul_forward(a->values, a->normf, m->w.score, NULL, a->n_tokens, c->dim, 1);
    a->values_done = 1;
    if (values) m->be->to_host(values, a->values + a->row0, (a->n_tokens - a->row0) * sizeof(float));
    if (backend_check(m->be, "model values")) {
        a->values_done = 0;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ backward */

/* Lowest layer holding a trainable tensor (-1: the embeddings), so backward
 * stops where no gradient is needed any more (e.g. a value head alone). */
static int lowest_trainable_layer(const Model *m) {
    const ModelConfig *c = &m->cfg;
    if (m->g.wte || m->g.wpe) return -1;
    int virt = m->virt && m->acts->row0 ? m->virt->lowest_layer(m) : c->n_layers;
    if (virt < 0) return -1;
    int lora = m->adapter ? m->adapter->lowest_layer(m) : c->n_layers; /* n_layers when no adapter trains */
    if (virt < lora) lora = virt;
    for (int l = 0; l < c->n_layers && l < lora; l++) {
        const LayerTensors *g = &m->g.layers[l];
        const float *const *p = (const float *const *)g;
        for (size_t k = 0; k < sizeof *g / sizeof(float *); k++)
            if (p[k]) return l;
    }
    return lora;
}

/* Weight gradients of a fused projection whose members are row blocks of
 * one matrix: one call when the member gradients are adjacent (the usual
 * case), else one call per trainable member. */
static void fused_weight_grads(const Model *m, float *const *dw, float *const *db, const int *rows,
                               int k, const float *dout, int ld, const float *inp, int N, int C) {
    int adjacent = 1, off = 0;
    for (int i = 0; i < k; i++) {
        if (!dw[i] || dw[i] != dw[0] + (size_t)off * C) adjacent = 0;
        if (db && (!db[i] || db[i] != db[0] + off)) adjacent = 0;
        off += rows[i];
    }
    if (adjacent) {
        m->be->matmul_backward_weight(dw[0], db ? db[0] : NULL, dout, ld, inp, N, C, off);
        return;
    }
    off = 0;
    for (int i = 0; i < k; i++) {
        if (dw[i] || (db && db[i]))
            m->be->matmul_backward_weight(dw[i], db ? db[i] : NULL, dout + off, ld, inp, N, C, rows[i]);
        off += rows[i];
    }
}

int model_backward(Model *m, const float *dlogp, const float *dvalues) {
    return model_backward_rows(m, dlogp, dvalues, m->acts->forward_done ? m->acts->n_tokens : 0);
}

int model_backward_rows(Model *m, const float *dlogp, const float *dvalues, int n_rows) {
    ModelActs *a = m->acts;
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    if (!a->forward_done) return align_errorf("model_backward called before model_forward");
    if (dlogp && !a->lm_done) return align_errorf("model_backward got dlogp but model_token_logprobs was not called");
    if (dvalues && !a->values_done) return align_errorf("model_backward got dvalues but model_values was not called");
    if (!m->grads && m->n_grad_elems) {
        if (model_ensure_grads(m)) return -1;
        model_zero_grad(m);
    }
    /* A forward with nothing trainable kept one layer's activations (a->stored
     * records that); the heads' gradients need none of them, anything below
     * the final norm needs every layer's, so refuse rather than reuse the
     * last layer's buffers for all of them. */
    int stop = lowest_trainable_layer(m);
    if (a->stored < c->n_layers && (stop < c->n_layers || m->g.normf_w || m->g.normf_b))
        return align_errorf("the last forward kept no activations for backward: run the forward again after "
                            "changing what is trainable");
    /* N: the forward's rows (the stride of every per-layer slab and of lse);
     * Nr, S: the leading rows and sequences the backward runs over */
    int N = a->n_tokens, Nr = n_rows, S = 0;
    while (S < a->n_seqs && a->seq_start[S + 1] <= Nr) S++;
    if (Nr <= 0 || Nr > N || (Nr < N && a->seq_start[S] != Nr))
        return align_errorf("model_backward_rows: %d rows is not a sequence boundary of the %d-row batch", Nr, N);
    if (a->row0 && Nr < N) /* every sequence attends to the virtual rows: their gradient needs them all */
        return align_errorf("model_backward_rows: a model with virtual tokens runs its backward over the whole batch");
    size_t n = N, d = c->dim, q = qkv_dim(c), ao = (size_t)c->n_heads * c->head_dim, u = up_dim(c),
           F = c->ffn_dim;
    int Hq = c->n_heads, Hkv = c->n_kv_heads, hd = c->head_dim;

    /* gradient wrt the final normalised hidden state, from the heads */
    be->zero(a->dh, n * d * sizeof(float));
    int k = 0; /* the LM rows among the leading Nr (model_token_logprobs lists them in order) */
    while (k < a->n_lm && a->lm_rows_host[k] < Nr) k++;
    if (dlogp && k > 0) {
        float *tmp = malloc(k * sizeof(float));
        if (!tmp) return align_errorf("out of memory");
        for (int i = 0; i < k; i++) tmp[i] = dlogp[a->lm_rows_host[i] - a->row0];
        be->to_device(a->lm_dlogp, tmp, k * sizeof(float));
        free(tmp);
        if (c->final_softcap > 0)
            be->logprobs_backward_softcap(a->lm_logits, a->lm_dlogp, a->lm_lse, a->lm_tgt, k, c->vocab_size,
                                          c->final_softcap);
        else
            be->logprobs_backward(a->lm_logits, a->lm_dlogp, a->lm_lse, a->lm_tgt, k, c->vocab_size);
        float *dW = c->tied_embeddings ? m->g.wte : m->g.lm_head;
        if (dW) be->matmul_backward_weight(dW, NULL, a->lm_logits, c->vocab_size, a->lm_h, k, c->dim, c->vocab_size);
        be->matmul_backward_input(a->lm_dh, a->lm_logits, m->w.lm_head, k, c->dim, c->vocab_size, 0);
        be->scatter_add_rows(a->dh, a->lm_dh, a->lm_rows, k, c->dim);
        a->lm_done = 0; /* the logits were overwritten by their gradient */
    }
    if (dvalues) {
        if (a->row0) be->zero(a->dact, a->row0 * sizeof(float)); /* virtual rows have no value */
        be->to_device(a->dact + a->row0, dvalues, (Nr - a->row0) * sizeof(float)); /* dact as scratch [N] */
        if (m->g.score) be->matmul_backward_weight(m->g.score, NULL, a->dact, 1, a->normf, Nr, c->dim, 1);
        be->matmul_backward_input(a->dh, a->dact, m->w.score, Nr, c->dim, 1, 1);
    }

    int lora = m->adapter && m->adapter->backward_active(m);
    if (stop >= c->n_layers && !m->g.normf_w && !m->g.normf_b) return backend_check(be, "model backward");
    /* the norm weights the last forward applied (1 + w for Gemma) */
    const ModelTensors *W = c->norm_plus_one ? &m->wn : &m->w;
    size_t HQK = (size_t)(Hq + Hkv);
    float ascale = model_attn_scale(c);
    be->zero(a->dresid, n * d * sizeof(float));
    norm_backward(m, a->dresid, m->g.normf_w, m->g.normf_b, a->dh, a->resid + c->n_layers * n * d,
                  W->normf_w, a->statsf, N, Nr);
    for (int l = c->n_layers - 1; l >= 0 && l >= stop; l--) {
        const LayerTensors *w = &W->layers[l], *g = &m->g.layers[l];
        const LayerQuant *qw = &m->qw[l];
        float *in = a->resid + l * n * d, *mid = a->resid_mid + l * n * d;
        float *norm1 = a->norm1 + l * n * d, *norm2 = a->norm2 + l * n * d;
        float *qkv = a->qkv + l * n * q, *attn = a->attn + l * n * ao;
        float *up = a->up + l * n * u, *act = a->act + l * n * F;
        /* MLP block; dresid holds d(out); dy: d(down's output), through the post norm for Gemma */
        float *dy = a->dresid;
        if (c->sandwich_norms) {
            dy = a->dtmp;
            be->zero(dy, n * d * sizeof(float));
            norm_backward(m, dy, g->post_ffn_norm_w, NULL, a->dresid, a->f_out + l * n * d, w->post_ffn_norm_w,
                          a->stats_pf + l * 2 * n, N, Nr);
        }
        be->matmul_backward_weight(g->w_down, g->b_down, dy, c->dim, act, Nr, c->ffn_dim, c->dim);
        model_linear_backward_input(m, a->dact, dy, w->w_down, qw->down, qw->t_down, Nr, c->ffn_dim, c->dim, 0);
        if (lora) m->adapter->backward(m, l, MODEL_SLOT_DOWN, act, dy, c->dim, a->dact, Nr);
        if (c->arch == ARCH_LLAMA) {
            if (c->geglu) be->geglu_backward(a->dup, a->dact, up, Nr, c->ffn_dim);
            else be->swiglu_backward(a->dup, a->dact, up, Nr, c->ffn_dim);
            float *dw[2] = {g->w_gate, g->w_up};
            int rows[2] = {c->ffn_dim, c->ffn_dim};
            fused_weight_grads(m, dw, NULL, rows, 2, a->dup, (int)u, norm2, Nr, c->dim);
        } else {
            be->gelu_backward(a->dup, a->dact, up, (size_t)Nr * F);
            be->matmul_backward_weight(g->w_up, g->b_up, a->dup, (int)u, norm2, Nr, c->dim, (int)u);
        }
        model_linear_backward_input(m, a->dtmp, a->dup, c->arch == ARCH_LLAMA ? w->w_gate : w->w_up, qw->up, qw->t_up,
                                    Nr, c->dim, (int)u, 0);
        if (lora) m->adapter->backward(m, l, MODEL_SLOT_UP, norm2, a->dup, (int)u, a->dtmp, Nr);
        norm_backward(m, a->dresid, g->norm2_w, g->norm2_b, a->dtmp, mid, w->norm2_w, a->stats2 + l * 2 * n, N, Nr);
        /* attention block; dresid now holds d(mid) */
        dy = a->dresid;
        if (c->sandwich_norms) {
            dy = a->dtmp;
            be->zero(dy, n * d * sizeof(float));
            norm_backward(m, dy, g->post_attn_norm_w, NULL, a->dresid, a->o_out + l * n * d, w->post_attn_norm_w,
                          a->stats_pa + l * 2 * n, N, Nr);
        }
        be->matmul_backward_weight(g->wo, g->bo, dy, c->dim, attn, Nr, (int)ao, c->dim);
        model_linear_backward_input(m, a->dattn, dy, w->wo, qw->o, qw->t_o, Nr, (int)ao, c->dim, 0);
        if (lora) m->adapter->backward(m, l, MODEL_SLOT_O, attn, dy, c->dim, a->dattn, Nr);
        int window = model_layer_window(c, l);
        if (model_attn_ext(c))
            be->attention_backward_ext(a->dqkv, a->dattn, attn, a->lse + l * Hq * n, qkv, a->seq_start, a->seq_prefix,
                                       S, N, Hq, Hkv, hd, window, ascale, c->attn_softcap);
        else if (window)
            be->attention_backward_window(a->dqkv, a->dattn, attn, a->lse + l * Hq * n, qkv, a->seq_start,
                                          a->seq_prefix, S, N, Hq, Hkv, hd, window);
        else if (a->seq_prefix)
            be->attention_backward_prefixed(a->dqkv, a->dattn, attn, a->lse + l * Hq * n, qkv, a->seq_start,
                                            a->seq_prefix, S, N, Hq, Hkv, hd);
        else
            be->attention_backward(a->dqkv, a->dattn, attn, a->lse + l * Hq * n, qkv, a->seq_start,
                                   S, N, Hq, Hkv, hd);
        if (a->row0) m->virt->kv_backward(m, l, a->dqkv, (int)q);
        if (c->arch == ARCH_LLAMA) model_rope(m, l, a->dqkv, a->pos, a->pos_host, a->seq_start, S, Nr, 1);
        if (c->qk_norm)
            be->head_rmsnorm_backward(a->dqkv, g->q_norm, g->k_norm, a->qkn + l * n * HQK * hd, a->qkn_rstd + l * n * HQK,
                                      w->q_norm, w->k_norm, Nr, Hq, Hkv, hd);
        float *dw[3] = {g->wq, g->wk, g->wv};
        float *db[3] = {g->bq, g->bk, g->bv};
        int rows[3] = {Hq * hd, Hkv * hd, Hkv * hd};
        int has_bias = w->bq != NULL;
        fused_weight_grads(m, dw, has_bias ? db : NULL, rows, 3, a->dqkv, (int)q, norm1, Nr, c->dim);
        model_linear_backward_input(m, a->dtmp, a->dqkv, w->wq, qw->qkv, qw->t_qkv, Nr, c->dim, (int)q, 0);
        if (lora) m->adapter->backward(m, l, MODEL_SLOT_QKV, norm1, a->dqkv, (int)q, a->dtmp, Nr);
        norm_backward(m, a->dresid, g->norm1_w, g->norm1_b, a->dtmp, in, w->norm1_w, a->stats1 + l * 2 * n, N, Nr);
        if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, l); /* nothing below writes layer l's gradients */
    }
    if (stop < 0 && a->row0) {
        int r = a->row0; /* the virtual rows' inputs are the hook's, the rest the embeddings' */
        m->virt->embed_backward(m, a->dresid);
        if (c->embed_scale > 0) be->scale(a->dresid + (size_t)r * d, c->embed_scale, (size_t)(N - r) * d);
        be->embedding_backward(m->g.wte, m->g.wpe, a->dresid + (size_t)r * d, a->tokens + r, a->pos + r, N - r, c->dim);
    } else if (stop < 0) {
        if (c->embed_scale > 0) be->scale(a->dresid, c->embed_scale, (size_t)Nr * d);
        be->embedding_backward(m->g.wte, m->g.wpe, a->dresid, a->tokens, a->pos, Nr, c->dim);
    }
    return backend_check(be, "model backward");
}

/* ------------------------------------------------------------ helpers */

void model_linear_forward(const Model *m, float *out, const float *inp, const float *w, const void *wq, int qtype,
                          const float *bias, int N, int C, int OC) {
    if (qtype) m->be->matmul_forward_q(out, inp, wq, qtype, bias, N, C, OC);
    else m->be->matmul_forward(out, inp, w, bias, N, C, OC);
}

void model_linear_forward_infer(const Model *m, float *out, const float *inp, const float *w, const void *wq,
                                int qtype, const float *bias, int N, int C, int OC) {
    if (qtype && m->infer_int8 && m->be->matmul_forward_q_int8) m->be->matmul_forward_q_int8(out, inp, wq, qtype, bias, N, C, OC);
    else model_linear_forward(m, out, inp, w, wq, qtype, bias, N, C, OC);
}

int model_set_lm_head_blocks(Model *m, int qtype, const void *blocks) {
    if (m->lm_head_q) m->be->free(m->lm_head_q);
    m->lm_head_q = NULL;
    m->lm_head_qtype = 0;
    if (!qtype) return 0;
    const ModelConfig *c = &m->cfg;
    if (!quant_is_ggml(qtype) || c->dim % quant_block_elems((QuantType)qtype))
        return align_errorf("an LM head of type %s and %d inputs cannot be kept quantised", quant_name((QuantType)qtype),
                            c->dim);
    size_t bytes = (size_t)c->vocab_size * quant_row_bytes((QuantType)qtype, c->dim);
    if (!(m->lm_head_q = m->be->alloc(bytes)))
        return align_errorf("out of memory for the LM head's %.1f MiB of blocks", bytes / 1048576.0);
    m->be->to_device(m->lm_head_q, blocks, bytes);
    m->lm_head_qtype = qtype;
    return 0;
}

void model_linear_backward_input(const Model *m, float *dinp, const float *dout, const float *w, const void *wq,
                                 int qtype, int N, int C, int OC, int accumulate) {
    if (qtype) m->be->matmul_backward_input_q(dinp, dout, wq, qtype, N, C, OC, accumulate);
    else m->be->matmul_backward_input(dinp, dout, w, N, C, OC, accumulate);
}

double model_flops_per_token(const ModelConfig *c, int seq_len, int training) {
    /* matmul FLOPs: 2 per weight per token forward (the LM head counted,
     * embeddings lookups not), plus causal attention QK^T and PV; backward
     * is twice the forward */
    double d = c->dim, hd = c->head_dim, Hq = c->n_heads, Hkv = c->n_kv_heads, F = c->ffn_dim;
    double per_layer = d * (Hq + 2 * Hkv) * hd + Hq * hd * d + d * F * (c->arch == ARCH_LLAMA ? 3 : 2);
    double weights = c->n_layers * per_layer + (c->lm_head ? d * c->vocab_size : 0);
    /* causal: on average T/2 keys per query, 2*hd FLOPs each for QK^T and for PV */
    double attn = c->n_layers * 2.0 * Hq * hd * seq_len;
    double fwd = 2.0 * weights + attn;
    return training ? 3.0 * fwd : fwd;
}

void batch_next_token_targets(const Batch *b, int32_t *targets) {
    for (int s = 0; s < b->n_seqs; s++) {
        int a = b->seq_start[s], e = b->seq_start[s + 1];
        for (int i = a; i < e - 1; i++) targets[i] = b->tokens[i + 1];
        targets[e - 1] = -1;
    }
}
