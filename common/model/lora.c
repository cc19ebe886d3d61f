/* lora.c: attaching adapters, their forward and backward passes (called
 * from model.c's layer loop), merge/unmerge, flat access and export. See
 * lora.h for the design. */
#include "lora.h"
#include "lora_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------ config */

void lora_config_defaults(LoraConfig *c) {
    c->method = LORA_METHOD_LORA;
    c->rank = 16;
    c->alpha = 32.0f;
    c->dropout = 0.05f;
    c->targets = LORA_T_ALL;
    c->seed = 42;
}

unsigned lora_ia3_default_targets(ModelArch arch) {
    return arch == ARCH_GPT2 ? LORA_T_Q | LORA_T_K | LORA_T_V | LORA_T_DOWN : LORA_T_K | LORA_T_V | LORA_T_DOWN;
}

const char *lora_method_name(int method) {
    return method == LORA_METHOD_DORA ? "DoRA" : method == LORA_METHOD_IA3 ? "IA3" : "LoRA";
}

int lora_parse_targets(const char *list, unsigned *out) {
    static const struct { const char *name; unsigned bits; } names[] = {
        {"q_proj", LORA_T_Q}, {"k_proj", LORA_T_K}, {"v_proj", LORA_T_V}, {"o_proj", LORA_T_O},
        {"gate_proj", LORA_T_GATE}, {"up_proj", LORA_T_UP}, {"down_proj", LORA_T_DOWN},
        {"c_attn", LORA_T_Q | LORA_T_K | LORA_T_V}, {"c_proj", LORA_T_O | LORA_T_DOWN},
        {"attn.c_proj", LORA_T_O}, {"mlp.c_proj", LORA_T_DOWN}, {"c_fc", LORA_T_UP},
        {"qkv_proj", LORA_T_Q | LORA_T_K | LORA_T_V}, {"gate_up_proj", LORA_T_GATE | LORA_T_UP}, /* Phi-3's */
        {"all", LORA_T_ALL}, {"all-linear", LORA_T_ALL},
    };
    unsigned bits = 0;
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ') p++;
        if (!*p) break;
        size_t n = strcspn(p, ", ");
        int found = 0;
        for (size_t k = 0; k < sizeof names / sizeof *names; k++)
            if (strlen(names[k].name) == n && !strncmp(p, names[k].name, n)) {
                bits |= names[k].bits;
                found = 1;
            }
        if (!found)
            return align_errorf("LoRA target '%.*s' is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                                "down_proj (GPT-2: c_attn, c_proj, c_fc) or all",
                                (int)n, p);
        p += n;
    }
    if (!bits) return align_errorf("no LoRA targets given");
    *out = bits;
    return 0;
}

int lora_target_modules(unsigned t, ModelArch arch, char names[8][24]) {
    int n = 0;
    if (arch == ARCH_GPT2) {
        if (t & (LORA_T_Q | LORA_T_K | LORA_T_V)) strcpy(names[n++], "c_attn");
        if ((t & LORA_T_O) && (t & LORA_T_DOWN)) strcpy(names[n++], "c_proj");
        else if (t & LORA_T_O) strcpy(names[n++], "attn.c_proj");
        else if (t & LORA_T_DOWN) strcpy(names[n++], "mlp.c_proj");
        if (t & (LORA_T_UP | LORA_T_GATE)) strcpy(names[n++], "c_fc");
        return n;
    }
    static const char *const ll[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    for (int k = 0; k < 7; k++)
        if (t & (1u << k)) strcpy(names[n++], ll[k]);
    return n;
}

/* ------------------------------------------------------------ attach */

typedef struct {
    int slot;
    unsigned bits;
    const char *module; /* after the layer prefix */
    int col0, OC, C;
    const char *base;   /* the base weight's module when not `module` (Phi-3: a group's first member) */
} Site;

static int sites_of(const ModelConfig *c, unsigned targets, Site *s) {
    int d = c->dim, F = c->ffn_dim, q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim, n = 0;
    Site all[7];
    int na = 0;
    if (c->arch == ARCH_GPT2) {
        all[na++] = (Site){MODEL_SLOT_QKV, LORA_T_Q | LORA_T_K | LORA_T_V, "attn.c_attn", 0, 3 * d, d};
        all[na++] = (Site){MODEL_SLOT_O, LORA_T_O, "attn.c_proj", 0, d, d};
        all[na++] = (Site){MODEL_SLOT_UP, LORA_T_UP | LORA_T_GATE, "mlp.c_fc", 0, F, d};
        all[na++] = (Site){MODEL_SLOT_DOWN, LORA_T_DOWN, "mlp.c_proj", 0, d, F};
    } else if (c->phi3) {
        /* one adapter per fused module, as peft sees Phi-3 (the members are
         * adjacent rows of the first one's weight) */
        all[na++] = (Site){MODEL_SLOT_QKV, LORA_T_Q | LORA_T_K | LORA_T_V, "self_attn.qkv_proj", 0, q + 2 * kv, d,
                           "self_attn.q_proj"};
        all[na++] = (Site){MODEL_SLOT_O, LORA_T_O, "self_attn.o_proj", 0, d, q, NULL};
        all[na++] = (Site){MODEL_SLOT_UP, LORA_T_GATE | LORA_T_UP, "mlp.gate_up_proj", 0, 2 * F, d, "mlp.gate_proj"};
        all[na++] = (Site){MODEL_SLOT_DOWN, LORA_T_DOWN, "mlp.down_proj", 0, d, F, NULL};
    } else {
        all[na++] = (Site){MODEL_SLOT_QKV, LORA_T_Q, "self_attn.q_proj", 0, q, d};
        all[na++] = (Site){MODEL_SLOT_QKV, LORA_T_K, "self_attn.k_proj", q, kv, d};
        all[na++] = (Site){MODEL_SLOT_QKV, LORA_T_V, "self_attn.v_proj", q + kv, kv, d};
        all[na++] = (Site){MODEL_SLOT_O, LORA_T_O, "self_attn.o_proj", 0, d, q};
        all[na++] = (Site){MODEL_SLOT_UP, LORA_T_GATE, "mlp.gate_proj", 0, F, d};
        all[na++] = (Site){MODEL_SLOT_UP, LORA_T_UP, "mlp.up_proj", F, F, d};
        all[na++] = (Site){MODEL_SLOT_DOWN, LORA_T_DOWN, "mlp.down_proj", 0, d, F};
    }
    for (int i = 0; i < na; i++)
        if (all[i].bits & targets) s[n++] = all[i];
    return n;
}

static void layer_prefix(const ModelConfig *c, int l, char *buf, size_t n) {
    snprintf(buf, n, c->arch == ARCH_GPT2 ? "transformer.h.%d." : "model.layers.%d.", l);
}

static const ModelAdapterOps lora_ops;

/* Tensors per site: LoRA A, B; DoRA A, B, magnitude; IA3 one vector. */
static int tensors_per_site(int method) { return method == LORA_METHOD_DORA ? 3 : method == LORA_METHOD_IA3 ? 1 : 2; }

int model_lora_attach(Model *m, const LoraConfig *cfg) {
    const ModelConfig *c = &m->cfg;
    int method = cfg->method, ia3 = method == LORA_METHOD_IA3;
    if (m->lora) return align_errorf("this model already has adapters");
    if (method < LORA_METHOD_LORA || method > LORA_METHOD_IA3) return align_errorf("unknown adapter method %d", method);
    if (method != LORA_METHOD_LORA && strcmp(m->be->name, "cpu"))
        return align_errorf("%s adapters run on the CPU backend only for now (--device cpu)", lora_method_name(method));
    if (!ia3 && cfg->rank <= 0) return align_errorf("--lora-rank must be positive (got %d)", cfg->rank);
    if (!ia3 && !(cfg->dropout >= 0 && cfg->dropout < 1)) return align_errorf("--lora-dropout must be in [0, 1) (got %g)", cfg->dropout);
    if (!ia3 && !(cfg->alpha > 0)) return align_errorf("--lora-alpha must be positive (got %g)", cfg->alpha);
    /* targets 0: the method's default (peft's IA3 targets for the family; LoRA's all) */
    unsigned targets = cfg->targets ? cfg->targets : ia3 ? lora_ia3_default_targets(c->arch) : LORA_T_ALL;
    Site sites[7];
    int ns = sites_of(c, targets, sites);
    if (!ns) return align_errorf("no adapter targets");
    int tps = tensors_per_site(method);
    ModelLora *L = calloc(1, sizeof *L);
    int total = ns * c->n_layers;
    ParamInfo *extra = calloc((size_t)tps * total, sizeof *extra);
    if (L) L->ad = calloc(total, sizeof *L->ad);
    if (!L || !extra || !L->ad) {
        if (L) free(L->ad);
        free(L), free(extra);
        return align_errorf("out of memory attaching adapters");
    }
    L->cfg = *cfg;
    L->cfg.targets = targets;
    if (ia3) L->cfg.rank = 0, L->cfg.alpha = 0, L->cfg.dropout = 0; /* peft's IA3 has none of them */
    L->scale = ia3 ? 0.0f : cfg->alpha / cfg->rank;
    L->enabled = 1;
    L->per_layer = ns;
    for (int i = 0; i < ns; i++) L->n_slot[sites[i].slot]++;
    for (int s = 1; s < MODEL_N_SLOTS; s++) L->slot_start[s] = L->slot_start[s - 1] + L->n_slot[s - 1];
    L->first_param = m->n_params;
    int r = L->cfg.rank, k = 0;
    for (int l = 0; l < c->n_layers; l++) {
        char pre[48], base[128];
        layer_prefix(c, l, pre, sizeof pre);
        for (int i = 0; i < ns; i++, k++) {
            const Site *s = &sites[i];
            snprintf(base, sizeof base, "%s%s.weight", pre, s->base ? s->base : s->module);
            ParamInfo *pb = model_find_param(m, base);
            if (!pb) {
                free(L->ad), free(L), free(extra);
                return align_errorf("%s: the model has no tensor %s", lora_method_name(method), base);
            }
            /* sites come slot-ordered, so site i is the layer's i-th adapter */
            LoraAdapter *ad = &L->ad[l * ns + i];
            int first = m->n_params + tps * k;
            ad->pa = ad->pb = ad->pm = -1;
            ad->pbase = (int)(pb - m->info);
            snprintf(base, sizeof base, "%s%s.bias", pre, s->module);
            ParamInfo *pbias = model_find_param(m, base);
            ad->pbias = pbias ? (int)(pbias - m->info) : -1;
            ad->col0 = s->col0, ad->OC = s->OC, ad->C = s->C, ad->slot = s->slot;
            ad->ff = ia3 && s->slot == MODEL_SLOT_DOWN;
            if (s->C > L->max_c) L->max_c = s->C;
            if (s->OC > L->max_oc) L->max_oc = s->OC;
            ParamInfo *t = &extra[tps * k];
            if (ia3) {
                /* peft's shapes: (out, 1) scales the output, (1, in) a feedforward module's input */
                snprintf(t->name, sizeof t->name, "base_model.model.%s%s.ia3_l", pre, s->module);
                t->ndim = 2;
                t->shape[0] = ad->ff ? 1 : s->OC, t->shape[1] = ad->ff ? s->C : 1;
                t->numel = ad->ff ? (size_t)s->C : (size_t)s->OC;
                t->lora = 1;
                ad->pm = first;
                continue;
            }
            ParamInfo *A = &t[0], *B = &t[1];
            snprintf(A->name, sizeof A->name, "base_model.model.%s%s.lora_A.weight", pre, s->module);
            snprintf(B->name, sizeof B->name, "base_model.model.%s%s.lora_B.weight", pre, s->module);
            A->ndim = B->ndim = 2;
            A->shape[0] = r, A->shape[1] = s->C;
            B->shape[0] = s->OC, B->shape[1] = r;
            A->numel = (size_t)r * s->C;
            B->numel = (size_t)s->OC * r;
            A->lora = B->lora = 1;
            ad->pa = first;
            ad->pb = first + 1;
            if (method == LORA_METHOD_DORA) {
                ParamInfo *M = &t[2];
                snprintf(M->name, sizeof M->name, "base_model.model.%s%s.lora_magnitude_vector", pre, s->module);
                M->ndim = 1;
                M->shape[0] = s->OC;
                M->numel = (size_t)s->OC;
                M->lora = 1;
                M->no_decay = 0; /* peft's optimizer decays it like any adapter weight */
                ad->pm = first + 2;
            }
        }
    }
    if (model_append_params(m, extra, tps * total)) {
        free(L->ad), free(L), free(extra);
        return -1;
    }
    free(extra);
    m->lora = L;
    m->adapter = &lora_ops;
    if (method == LORA_METHOD_IA3) { /* what IA3 keeps for backward: the unscaled output, [N, OC] per adapter */
        L->zoff = calloc(total, sizeof *L->zoff);
        if (!L->zoff) return align_errorf("out of memory");
        for (int i = 0; i < total; i++) {
            L->zoff[i] = L->zrow;
            if (method == LORA_METHOD_IA3 && !L->ad[i].ff) L->zrow += (size_t)L->ad[i].OC;
        }
    }
    /* the base is frozen; only the adapters train */
    model_set_trainable(m, "", 0);
    model_set_trainable(m, ia3 ? ".ia3_l" : ".lora_", 1);
    if (ia3) { /* peft's init_ia3_weights: ones */
        for (int i = 0; i < total; i++) {
            const ParamInfo *p = &m->info[L->ad[i].pm];
            float *host = malloc(p->numel * sizeof(float));
            if (!host) return align_errorf("out of memory");
            for (size_t j = 0; j < p->numel; j++) host[j] = 1.0f;
            m->be->to_device(m->params + p->offset, host, p->numel * sizeof(float));
            free(host);
        }
        return 0;
    }
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)) (peft: kaiming_uniform_ with a = sqrt(5)), B = 0 */
    Rng rng;
    rng_seed(&rng, cfg->seed ^ 0x10A4ADA97E5ULL);
    for (int i = 0; i < total; i++) {
        const LoraAdapter *ad = &L->ad[i];
        ParamInfo *A = &m->info[ad->pa];
        float *host = malloc(A->numel * sizeof(float));
        if (!host) return align_errorf("out of memory");
        float bound = 1.0f / sqrtf((float)ad->C);
        for (size_t j = 0; j < A->numel; j++) host[j] = (float)((2.0 * rng_uniform(&rng) - 1.0) * bound);
        m->be->to_device(m->params + A->offset, host, A->numel * sizeof(float));
        free(host);
    }
    /* DoRA's magnitude starts at the row norms of W (B = 0), as peft's */
    if (method == LORA_METHOD_DORA && dora_attach(m, L)) return -1;
    return 0;
}

void lora_base_weight(const Model *m, const LoraAdapter *ad, const float **w, const void **wq, int *qtype) {
    const ParamInfo *p = &m->info[ad->pbase];
    *qtype = p->qtype;
    *w = p->qtype ? NULL : m->params + p->offset;
    *wq = p->qtype ? (const void *)(m->qparams + p->qoffset) : NULL;
}

const LoraConfig *model_lora_config(const Model *m) { return m->lora ? &m->lora->cfg : NULL; }

int model_lora_enable(Model *m, int on) {
    if (!m->lora) return 0;
    int was = m->lora->enabled;
    m->lora->enabled = on ? 1 : 0;
    return was;
}

void model_lora_train_mode(Model *m, int training, uint64_t key) {
    if (!m->lora) return;
    m->lora->training = training;
    m->lora->key = key;
    m->lora->counter = 0;
}

/* ------------------------------------------------------------ merge */

static int merge_sign(Model *m, float sign, int want_merged) {
    ModelLora *L = m->lora;
    if (!L) return align_errorf("the model has no LoRA adapters");
    if (L->merged == want_merged) return 0;
    if (L->cfg.method != LORA_METHOD_LORA)
        return align_errorf("%s adapters are not merged in place: export the merged model with model_export_copy",
                            lora_method_name(L->cfg.method));
    int total = L->per_layer * m->cfg.n_layers;
    for (int i = 0; i < total; i++)
        if (m->info[L->ad[i].pbase].qtype)
            return align_errorf("cannot merge LoRA into the quantised %s (export with model_export_copy instead)",
                                m->info[L->ad[i].pbase].name);
    for (int i = 0; i < total; i++) {
        const LoraAdapter *ad = &L->ad[i];
        float *W = m->params + m->info[ad->pbase].offset;
        const float *A = m->params + m->info[ad->pa].offset, *B = m->params + m->info[ad->pb].offset;
        /* W[OC, C] += sign * scale * B[OC, r] A[r, C] */
        m->be->gemm(0, 0, ad->OC, ad->C, L->cfg.rank, sign * L->scale, B, L->cfg.rank, A, ad->C, 1.0f, W, ad->C);
    }
    L->merged = want_merged;
    return 0;
}

int model_lora_merge(Model *m) { return merge_sign(m, 1.0f, 1); }
int model_lora_unmerge(Model *m) { return merge_sign(m, -1.0f, 0); }

/* ------------------------------------------------------------ flat access */

size_t model_lora_numel(const Model *m) {
    if (!m->lora) return 0;
    const ParamInfo *first = &m->info[m->lora->first_param], *last = &m->info[m->n_params - 1];
    return last->offset + last->numel - first->offset;
}

int model_lora_get(Model *m, float *host) {
    if (!m->lora) return align_errorf("the model has no LoRA adapters");
    m->be->to_host(host, m->params + m->info[m->lora->first_param].offset, model_lora_numel(m) * sizeof(float));
    return 0;
}

int model_lora_set(Model *m, const float *host) {
    if (!m->lora) return align_errorf("the model has no LoRA adapters");
    if (m->lora->merged) return align_errorf("unmerge the LoRA adapters before replacing them");
    m->be->to_device(m->params + m->info[m->lora->first_param].offset, host, model_lora_numel(m) * sizeof(float));
    m->lora->gvalid = 0; /* DoRA's scales follow the new adapters */
    return 0;
}

Model *model_export_copy(Model *m) {
    Model *e = model_create(&m->cfg, m->be);
    if (!e) return NULL;
    size_t maxn = 1;
    for (int i = 0; i < e->n_params; i++)
        if (e->info[i].numel > maxn) maxn = e->info[i].numel;
    float *tmp = malloc(maxn * sizeof(float));
    if (!tmp) {
        model_free(e);
        align_errorf("out of memory");
        return NULL;
    }
    for (int i = 0; i < e->n_params; i++) {
        ParamInfo *p = &e->info[i], *q = model_find_param(m, p->name);
        if (!q || q->numel != p->numel || model_param_to_host(m, q, tmp)) {
            if (!q) align_errorf("export: %s is missing", p->name);
            free(tmp);
            model_free(e);
            return NULL;
        }
        e->be->to_device(e->params + p->offset, tmp, p->numel * sizeof(float));
    }
    free(tmp);
    ModelLora *L = m->lora;
    if (L && L->enabled && !L->merged && L->cfg.method != LORA_METHOD_LORA) {
        if (L->cfg.method == LORA_METHOD_DORA && dora_update_scale(m, L, 1)) {
            model_free(e);
            return NULL;
        }
        for (int i = 0; i < L->per_layer * m->cfg.n_layers; i++) {
            const LoraAdapter *ad = &L->ad[i];
            float *W = e->params + model_find_param(e, m->info[ad->pbase].name)->offset;
            float *bias = ad->pbias >= 0 ? e->params + model_find_param(e, m->info[ad->pbias].name)->offset : NULL;
            if (L->cfg.method == LORA_METHOD_DORA ? dora_merge_into(m, L, i, W) : ia3_merge_into(m, L, i, W, bias)) {
                model_free(e);
                return NULL;
            }
        }
    } else if (L && L->enabled && !L->merged) {
        for (int i = 0; i < L->per_layer * m->cfg.n_layers; i++) {
            const LoraAdapter *ad = &L->ad[i];
            float *W = e->params + model_find_param(e, m->info[ad->pbase].name)->offset;
            const float *A = m->params + m->info[ad->pa].offset, *B = m->params + m->info[ad->pb].offset;
            e->be->gemm(0, 0, ad->OC, ad->C, L->cfg.rank, L->scale, B, L->cfg.rank, A, ad->C, 1.0f, W, ad->C);
        }
    }
    return e;
}

/* ------------------------------------------------------------ forward / backward */

static int reserve(Model *m, ModelLora *L, int N, int save) {
    const Backend *be = m->be;
    size_t r = L->cfg.rank;
    if (save && N > L->cap) {
        be->free(L->hs);
        be->free(L->zs);
        L->cap = 0;
        L->zs = NULL;
        L->hs = be->alloc((size_t)m->cfg.n_layers * L->per_layer * N * (r ? r : 1) * sizeof(float));
        if (!L->hs) return align_error_prefix("adapter activations for %d tokens", N);
        if (L->zrow) {
            L->zs = be->alloc((size_t)N * L->zrow * sizeof(float));
            if (!L->zs) return align_error_prefix("%s activations for %d tokens", lora_method_name(L->cfg.method), N);
        }
        L->cap = N;
    }
    if (N > L->scap) {
        be->free(L->sx);
        be->free(L->sh);
        be->free(L->sy);
        be->free(L->sy2);
        L->scap = 0;
        L->sx = be->alloc((size_t)N * L->max_c * sizeof(float));
        L->sh = be->alloc((size_t)N * (r ? r : 1) * sizeof(float));
        L->sy = be->alloc((size_t)N * L->max_oc * sizeof(float));
        L->sy2 = be->alloc((size_t)N * L->max_oc * sizeof(float));
        if (!L->sx || !L->sh || !L->sy || !L->sy2) return align_error_prefix("adapter scratch for %d tokens", N);
        L->scap = N;
    }
    return 0;
}

static int lora_reserve_scratch(Model *m, int N) {
    if (!m->lora) return 0;
    if (reserve(m, m->lora, N, 0)) return -1;
    /* cached decoding: DoRA's scales, recomputed only when the adapters changed */
    return m->lora->cfg.method == LORA_METHOD_DORA ? dora_update_scale(m, m->lora, 0) : 0;
}

static int lora_begin_forward(Model *m, int N) {
    ModelLora *L = m->lora;
    if (!L) return 0;
    L->fwd_active = L->enabled && !L->merged;
    if (!L->fwd_active) return 0;
    if (reserve(m, L, N, 1)) return -1;
    L->fwd_dropout = L->training && L->cfg.dropout > 0;
    if (L->fwd_dropout) L->fwd_seed = mix64(L->cfg.seed ^ mix64(L->key ^ mix64(L->counter++)));
    if (L->cfg.method == LORA_METHOD_DORA && dora_update_scale(m, L, 1)) return -1;
    return 1;
}

static int lora_inference_active(const Model *m) { return m->lora && m->lora->enabled && !m->lora->merged; }

static int lora_backward_active(const Model *m) { return m->lora && m->lora->fwd_active; }

uint64_t lora_adapter_seed(const ModelLora *L, int index) { return mix64(L->fwd_seed + (uint64_t)index + 1); }

static void lora_forward(Model *m, int l, int slot, const float *x, float *y, int ldy, int N, int save) {
    ModelLora *L = m->lora;
    const Backend *be = m->be;
    int r = L->cfg.rank;
    for (int k = 0; k < L->n_slot[slot]; k++) {
        int idx = l * L->per_layer + L->slot_start[slot] + k;
        const LoraAdapter *ad = &L->ad[idx];
        if (L->cfg.method == LORA_METHOD_IA3) {
            ia3_forward(m, L, idx, x, y, ldy, N, save);
            continue;
        }
        const float *xin = x;
        if (save && L->fwd_dropout) {
            be->dropout(L->sx, x, (size_t)N * ad->C, L->cfg.dropout, lora_adapter_seed(L, idx), 0);
            xin = L->sx;
        }
        if (L->cfg.method == LORA_METHOD_DORA) {
            dora_forward(m, L, idx, x, xin, y, ldy, N, save);
            continue;
        }
        const float *A = m->params + m->info[ad->pa].offset, *B = m->params + m->info[ad->pb].offset;
        float *h = save ? L->hs + (size_t)idx * L->cap * r : L->sh;
        be->gemm(0, 1, N, r, ad->C, L->scale, xin, ad->C, A, ad->C, 0.0f, h, r);        /* h = s x A^T */
        be->gemm(0, 1, N, ad->OC, r, 1.0f, h, r, B, r, 1.0f, y + ad->col0, ldy);        /* y += h B^T */
    }
}

static void lora_backward(Model *m, int l, int slot, const float *x, const float *dy, int ldy, float *dx, int N) {
    ModelLora *L = m->lora;
    const Backend *be = m->be;
    int r = L->cfg.rank;
    for (int k = 0; k < L->n_slot[slot]; k++) {
        int idx = l * L->per_layer + L->slot_start[slot] + k;
        const LoraAdapter *ad = &L->ad[idx];
        if (L->cfg.method == LORA_METHOD_IA3) {
            ia3_backward(m, L, idx, x, dy, ldy, dx, N);
            continue;
        }
        if (L->cfg.method == LORA_METHOD_DORA) {
            dora_backward(m, L, idx, x, dy, ldy, dx, N);
            continue;
        }
        const ParamInfo *pa = &m->info[ad->pa], *pb = &m->info[ad->pb];
        const float *A = m->params + pa->offset, *B = m->params + pb->offset;
        float *gA = pa->grad_offset >= 0 && m->grads ? m->grads + pa->grad_offset : NULL;
        float *gB = pb->grad_offset >= 0 && m->grads ? m->grads + pb->grad_offset : NULL;
        const float *hs = L->hs + (size_t)idx * L->cap * r, *dyk = dy + ad->col0;
        int C = ad->C;
        if (gB) be->gemm(1, 0, ad->OC, r, N, 1.0f, dyk, ldy, hs, r, 1.0f, gB, r);          /* dB += dy^T hs */
        be->gemm(0, 0, N, r, ad->OC, L->scale, dyk, ldy, B, r, 0.0f, L->sh, r);            /* dh = s dy B */
        const float *xin = x;
        if (L->fwd_dropout) { /* the forward's mask, recomputed */
            be->dropout(L->sx, x, (size_t)N * C, L->cfg.dropout, lora_adapter_seed(L, idx), 0);
            xin = L->sx;
        }
        if (gA) be->gemm(1, 0, r, C, N, 1.0f, L->sh, r, xin, C, 1.0f, gA, C);              /* dA += dh^T x~ */
        if (!dx) continue;
        if (L->fwd_dropout) {
            be->gemm(0, 0, N, C, r, 1.0f, L->sh, r, A, C, 0.0f, L->sx, C);
            be->dropout(dx, L->sx, (size_t)N * C, L->cfg.dropout, lora_adapter_seed(L, idx), 1); /* dx += mask (dh A) */
        } else {
            be->gemm(0, 0, N, C, r, 1.0f, L->sh, r, A, C, 1.0f, dx, C);                    /* dx += dh A */
        }
    }
}

static int lora_lowest_layer(const Model *m) {
    const ModelLora *L = m->lora;
    if (!L || !L->fwd_active) return m->cfg.n_layers;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < L->per_layer; k++) {
            const LoraAdapter *ad = &L->ad[l * L->per_layer + k];
            if ((ad->pa >= 0 && m->info[ad->pa].grad_offset >= 0) || (ad->pb >= 0 && m->info[ad->pb].grad_offset >= 0) ||
                (ad->pm >= 0 && m->info[ad->pm].grad_offset >= 0))
                return l;
        }
    return m->cfg.n_layers;
}

static void lora_free(Model *m) {
    ModelLora *L = m->lora;
    if (!L) return;
    m->be->free(L->hs);
    m->be->free(L->sx);
    m->be->free(L->sh);
    m->be->free(L->sy);
    m->be->free(L->sy2);
    m->be->free(L->zs);
    free(L->zoff);
    free(L->goff);
    free(L->gscale);
    free(L->gnorm);
    free(L->wnorm2);
    free(L->ad);
    free(L);
    m->lora = NULL;
    m->adapter = NULL;
}

static const ModelAdapterOps lora_ops = {
    .begin_forward = lora_begin_forward,
    .forward = lora_forward,
    .backward = lora_backward,
    .reserve_scratch = lora_reserve_scratch,
    .inference_active = lora_inference_active,
    .backward_active = lora_backward_active,
    .lowest_layer = lora_lowest_layer,
    .free = lora_free,
};
