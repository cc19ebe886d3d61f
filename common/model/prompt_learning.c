/* prompt_learning.c: the virtual-token hooks (model.h, ModelVirtualOps) for
 * prompt tuning and prefix tuning; see prompt_learning.h. */
#include "prompt_learning.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

struct ModelPrompt {
    PromptConfig cfg;
    int param;   /* index of the (first) tensor in m->info; the others follow */
    int n_tensors; /* 1, or 5 with the projection: embedding, W1, b1, W2, b2 */
    int enabled;
    /* --prefix-projection (backend memory): the prefix P [n, width] the
     * MLP made at the last forward, d loss/dP gathered over the layers, the
     * hidden tanh(W1 e + b1) [n, H] and scratch of that size */
    float *P, *dP, *h, *dh;
    float *host; /* [n, H] host scratch for the tanh */
};

enum { T_EMB = 0, T_W1, T_B1, T_W2, T_B2 };
static const char *const projection_names[5] = {"prefix_tuning.embedding.weight", "prefix_tuning.transform.0.weight",
                                                "prefix_tuning.transform.0.bias", "prefix_tuning.transform.2.weight",
                                                "prefix_tuning.transform.2.bias"};

const char *prompt_kind_name(PromptKind k) { return k == PREFIX_TUNING ? "prefix" : "prompt"; }

const char *prompt_param_name(PromptKind k) {
    return k == PREFIX_TUNING ? "prefix_tuning.prompt_embeddings" : "prompt_tuning.prompt_embeddings";
}

ParamInfo *model_prompt_param(Model *m) { return m->prompt ? &m->info[m->prompt->param] : NULL; }

const PromptConfig *model_prompt_config(const Model *m) { return m->prompt ? &m->prompt->cfg : NULL; }

int model_prompt_enable(Model *m, int on) {
    if (!m->prompt) return -1;
    int was = m->prompt->enabled;
    m->prompt->enabled = on != 0;
    return was;
}

static int n_virtual(const Model *m) { return m->prompt->enabled ? m->prompt->cfg.n_virtual : 0; }

static const float *tensor(const Model *m, int k) { return m->params + m->info[m->prompt->param + k].offset; }

/* Tensor k's gradient, NULL when frozen or not allocated. */
static float *tensor_grad(const Model *m, int k) {
    const ParamInfo *p = &m->info[m->prompt->param + k];
    return p->grad_offset < 0 || !m->grads ? NULL : m->grads + p->grad_offset;
}

/* What the virtual rows use: the tensor, or the projection's output. */
static const float *weights(const Model *m) { return m->prompt->P ? m->prompt->P : tensor(m, 0); }

/* Where d(weights) gathers: the tensor's gradient, or dP. */
static float *grads(const Model *m) { return m->prompt->P ? m->prompt->dP : tensor_grad(m, 0); }

/* Width of one virtual token's keys and values over all layers. */
static size_t prefix_width(const Model *m);

/* peft's PrefixEncoder with prefix_projection: P = W2 tanh(W1 e + b1) + b2
 * (the hidden size is token_dim's, peft's default). */
static void project(Model *m) {
    ModelPrompt *mp = m->prompt;
    const Backend *be = m->be;
    int n = mp->cfg.n_virtual, td = (int)m->info[mp->param].shape[1], H = td, O = (int)prefix_width(m);
    be->matmul_forward(mp->h, tensor(m, T_EMB), tensor(m, T_W1), tensor(m, T_B1), n, td, H);
    be->to_host(mp->host, mp->h, (size_t)n * H * sizeof(float));
    for (size_t i = 0; i < (size_t)n * H; i++) mp->host[i] = tanhf(mp->host[i]);
    be->to_device(mp->h, mp->host, (size_t)n * H * sizeof(float));
    be->matmul_forward(mp->P, mp->h, tensor(m, T_W2), tensor(m, T_B2), n, H, O);
    be->zero(mp->dP, (size_t)n * O * sizeof(float));
}

/* The MLP's backward from dP (all layers gathered) into its tensors. */
static void project_backward(Model *m) {
    ModelPrompt *mp = m->prompt;
    const Backend *be = m->be;
    int n = mp->cfg.n_virtual, td = (int)m->info[mp->param].shape[1], H = td, O = (int)prefix_width(m);
    float *gW2 = tensor_grad(m, T_W2), *gb2 = tensor_grad(m, T_B2), *gW1 = tensor_grad(m, T_W1),
          *gb1 = tensor_grad(m, T_B1), *ge = tensor_grad(m, T_EMB);
    if (gW2 || gb2) be->matmul_backward_weight(gW2, gb2, mp->dP, O, mp->h, n, H, O);
    be->matmul_backward_input(mp->dh, mp->dP, tensor(m, T_W2), n, H, O, 0);
    /* tanh' = 1 - tanh^2, on the host (n x H floats) */
    float *d = malloc((size_t)n * H * sizeof(float));
    if (!d) return; /* the gradients of W1, b1 and e stay unchanged; nothing else to do without memory */
    be->to_host(d, mp->dh, (size_t)n * H * sizeof(float));
    be->to_host(mp->host, mp->h, (size_t)n * H * sizeof(float));
    for (size_t i = 0; i < (size_t)n * H; i++) d[i] *= 1.0f - mp->host[i] * mp->host[i];
    be->to_device(mp->dh, d, (size_t)n * H * sizeof(float));
    free(d);
    if (gW1 || gb1) be->matmul_backward_weight(gW1, gb1, mp->dh, H, tensor(m, T_EMB), n, td, H);
    if (ge) be->matmul_backward_input(ge, mp->dh, tensor(m, T_W1), n, td, H, 1);
}

/* Width of one layer's key | value in a qkv row and in the prefix rows. */
static size_t kv_width(const Model *m) { return 2 * (size_t)m->cfg.n_kv_heads * m->cfg.head_dim; }
static size_t prefix_width(const Model *m) { return kv_width(m) * m->cfg.n_layers; }

static void embed(Model *m, float *x) {
    if (m->prompt->P) project(m); /* once per forward, before the layers read it */
    if (m->prompt->cfg.kind != PROMPT_TUNING) return; /* prefix tuning: the rows' inputs never matter */
    size_t n = (size_t)m->prompt->cfg.n_virtual * m->cfg.dim;
    m->be->copy(x, weights(m), n * sizeof(float));
    /* GPT-2 adds its learned positions to inputs_embeds, the prompt's too */
    if (m->w.wpe) m->be->add_inplace(x, m->w.wpe, n);
}

static void embed_backward(Model *m, const float *dx) {
    float *g = grads(m);
    if (m->prompt->cfg.kind == PROMPT_TUNING && g)
        m->be->add_inplace(g, dx, (size_t)m->prompt->cfg.n_virtual * m->cfg.dim);
}

static void kv(Model *m, int layer, float *qkv, int ldq) {
    if (m->prompt->cfg.kind != PREFIX_TUNING) return;
    size_t w = kv_width(m), row = w * m->cfg.n_layers, qw = (size_t)m->cfg.n_heads * m->cfg.head_dim;
    const float *p = weights(m) + layer * w;
    for (int i = 0; i < m->prompt->cfg.n_virtual; i++)
        m->be->copy(qkv + i * (size_t)ldq + qw, p + i * row, w * sizeof(float));
}

static void kv_backward(Model *m, int layer, float *dqkv, int ldq) {
    if (m->prompt->cfg.kind != PREFIX_TUNING) return;
    size_t w = kv_width(m), row = w * m->cfg.n_layers, qw = (size_t)m->cfg.n_heads * m->cfg.head_dim;
    float *g = grads(m);
    int n = m->prompt->cfg.n_virtual;
    if (g)
        for (int i = 0; i < n; i++) m->be->add_inplace(g + i * row + layer * w, dqkv + i * (size_t)ldq + qw, w);
    /* the virtual rows' own stream fed nothing but these keys and values */
    m->be->zero(dqkv, (size_t)n * ldq * sizeof(float));
    /* layer 0 comes last (lowest_layer is 0): dP is whole */
    if (layer == 0 && m->prompt->P && m->info[m->prompt->param].grad_offset >= 0 && m->grads) project_backward(m);
}

static int lowest_layer(const Model *m) {
    if (!m->prompt->enabled || m->info[m->prompt->param].grad_offset < 0) return m->cfg.n_layers;
    return m->prompt->cfg.kind == PROMPT_TUNING ? -1 : 0;
}

static void prompt_free(Model *m) {
    ModelPrompt *mp = m->prompt;
    if (!mp) return;
    float *bufs[4] = {mp->P, mp->dP, mp->h, mp->dh};
    for (int i = 0; i < 4; i++)
        if (bufs[i]) m->be->free(bufs[i]);
    free(mp->host);
    free(m->prompt);
    m->prompt = NULL;
    m->virt = NULL;
}

static const ModelVirtualOps virtual_ops = {
    .n_virtual = n_virtual,
    .embed = embed,
    .kv = kv,
    .kv_backward = kv_backward,
    .embed_backward = embed_backward,
    .lowest_layer = lowest_layer,
    .free = prompt_free,
};

/* Fill a ParamInfo for an appended [d0, d1] (d1 0: 1-D) tensor. */
static void describe(ParamInfo *p, const char *name, int64_t d0, int64_t d1) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = d1 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = (size_t)d0 * (d1 ? d1 : 1);
    p->no_decay = p->ndim == 1; /* biases; an nn.Embedding weight is decayed, as the HF Trainer does */
    p->lora = 1;                /* an adapter tensor */
}

int model_prompt_attach(Model *m, const PromptConfig *c) {
    const ModelConfig *mc = &m->cfg;
    if (m->prompt) return align_errorf("the model already has virtual tokens");
    if (m->lora || m->adapter) return align_errorf("virtual tokens cannot be combined with LoRA adapters");
    if (c->kind != PROMPT_TUNING && c->kind != PREFIX_TUNING) return align_errorf("unknown prompt-learning kind %d", c->kind);
    if (c->n_virtual <= 0) return align_errorf("num_virtual_tokens must be positive (got %d)", c->n_virtual);
    if (!m->be->attention_forward_prefixed || !m->be->attention_backward_prefixed)
        return align_errorf("%s tuning is not implemented on the %s backend; use --device cpu", prompt_kind_name(c->kind),
                            m->be->name);
    if (mc->arch == ARCH_GPT2 && c->n_virtual >= mc->max_seq_len)
        return align_errorf("%d virtual tokens leave none of the model's %d positions", c->n_virtual, mc->max_seq_len);
    if (c->projection && c->kind != PREFIX_TUNING) return align_errorf("the prefix projection is for prefix tuning only");
    if (c->init_tokens && c->kind != PROMPT_TUNING) return align_errorf("a text init is for prompt tuning only");
    if (c->init_tokens && c->n_init_tokens <= 0) return align_errorf("the prompt-tuning init text has no tokens");
    if (c->init_tokens && !m->w.wte) return align_errorf("the prompt-tuning text init needs fp32 token embeddings");
    for (int i = 0; c->init_tokens && i < c->n_init_tokens; i++)
        if (c->init_tokens[i] < 0 || c->init_tokens[i] >= mc->vocab_size)
            return align_errorf("prompt-tuning init token %d is outside the vocabulary (%d)", c->init_tokens[i],
                                mc->vocab_size);
    int n = c->n_virtual, nt = c->projection ? 5 : 1;
    int64_t td = (int64_t)mc->n_kv_heads * mc->head_dim, H = td, O = (int64_t)prefix_width(m);
    ParamInfo extra[5];
    if (!c->projection) {
        /* the kind in the name, so a checkpoint carrying it says what it is */
        describe(&extra[0], prompt_param_name(c->kind), n, c->kind == PROMPT_TUNING ? mc->dim : O);
    } else { /* peft's PrefixEncoder: embedding [n, token_dim], then Linear, Tanh, Linear */
        describe(&extra[T_EMB], projection_names[T_EMB], n, td);
        describe(&extra[T_W1], projection_names[T_W1], H, td);
        describe(&extra[T_B1], projection_names[T_B1], H, 0);
        describe(&extra[T_W2], projection_names[T_W2], O, H);
        describe(&extra[T_B2], projection_names[T_B2], O, 0);
    }
    size_t total = 0, width = (size_t)extra[0].shape[1];
    for (int k = 0; k < nt; k++) total += extra[k].numel;
    float *host = malloc(total * sizeof(float));
    ModelPrompt *mp = calloc(1, sizeof *mp);
    if (!host || !mp) {
        free(host), free(mp);
        return align_errorf("out of memory for %d virtual tokens", n);
    }
    Rng rng;
    rng_seed(&rng, c->seed ^ 0x70726f6d7074ull);
    if (c->init_tokens) {
        /* peft's TEXT init: the text's token embeddings, repeated, cut to n,
         * as the model's input embedding gives them (Gemma's scaled one:
         * the virtual tokens themselves go in unscaled) */
        for (int i = 0; i < n; i++)
            m->be->to_host(host + (size_t)i * width, m->w.wte + (size_t)c->init_tokens[i % c->n_init_tokens] * mc->dim,
                           width * sizeof(float));
        if (mc->embed_scale > 0)
            for (size_t j = 0; j < (size_t)n * width; j++) host[j] *= mc->embed_scale;
    } else {
        /* peft's RANDOM init: nn.Embedding's N(0, 1); the projection's
         * Linears as nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
        float *x = host;
        for (int k = 0; k < nt; k++) {
            double bound = k == T_EMB ? 0 : 1.0 / sqrt((double)(k <= T_B1 ? td : H));
            for (size_t j = 0; j < extra[k].numel; j++)
                x[j] = (float)(k == T_EMB ? rng_normal(&rng) : (2 * rng_uniform(&rng) - 1) * bound);
            x += extra[k].numel;
        }
    }
    if (c->projection) {
        const Backend *be = m->be;
        mp->P = be->alloc((size_t)n * O * sizeof(float));
        mp->dP = be->alloc((size_t)n * O * sizeof(float));
        mp->h = be->alloc((size_t)n * H * sizeof(float));
        mp->dh = be->alloc((size_t)n * H * sizeof(float));
        mp->host = malloc((size_t)n * H * sizeof(float));
    }
    if ((c->projection && (!mp->P || !mp->dP || !mp->h || !mp->dh || !mp->host)) || model_append_params(m, extra, nt)) {
        m->prompt = mp; /* prompt_free releases what was allocated */
        prompt_free(m);
        free(host);
        return c->projection ? align_errorf("out of memory for the prefix projection") : -1;
    }
    mp->cfg = *c;
    mp->cfg.init_tokens = NULL; /* the caller's array: only the init reads it */
    mp->cfg.n_init_tokens = 0;
    mp->param = m->n_params - nt;
    mp->n_tensors = nt;
    mp->enabled = 1;
    m->be->to_device(m->params + m->info[mp->param].offset, host, total * sizeof(float)); /* appended together */
    free(host);
    m->prompt = mp;
    m->virt = &virtual_ops;
    /* the base freezes; only the virtual tokens train */
    unsigned char *train = calloc(m->n_params, 1);
    if (!train) return align_errorf("out of memory");
    for (int k = 0; k < nt; k++) train[mp->param + k] = 1;
    model_set_trainable_mask(m, train);
    free(train);
    return 0;
}

size_t model_prompt_numel(const Model *m) {
    if (!m->prompt) return 0;
    size_t n = 0;
    for (int k = 0; k < m->prompt->n_tensors; k++) n += m->info[m->prompt->param + k].numel;
    return n;
}

float *model_prompt_data(Model *m) { return m->prompt ? m->params + m->info[m->prompt->param].offset : NULL; }

int model_prompt_values(Model *m, float *host) {
    if (!m->prompt) return align_errorf("the model has no virtual tokens");
    ModelPrompt *mp = m->prompt;
    if (mp->P) project(m);
    size_t w = mp->cfg.kind == PROMPT_TUNING ? (size_t)m->cfg.dim : prefix_width(m);
    m->be->to_host(host, weights(m), (size_t)mp->cfg.n_virtual * w * sizeof(float));
    return backend_check(m->be, "virtual tokens");
}
