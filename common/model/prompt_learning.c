/* prompt_learning.c: the virtual-token hooks (model.h, ModelVirtualOps) for
 * prompt tuning and prefix tuning; see prompt_learning.h. */
#include "prompt_learning.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

struct ModelPrompt {
    PromptConfig cfg;
    int param;   /* index of prompt_embeddings in m->info */
    int enabled;
};

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

static const float *weights(const Model *m) { return m->params + m->info[m->prompt->param].offset; }

/* The tensor's gradient, NULL when frozen or not allocated. */
static float *grads(const Model *m) {
    const ParamInfo *p = &m->info[m->prompt->param];
    return p->grad_offset < 0 || !m->grads ? NULL : m->grads + p->grad_offset;
}

/* Width of one layer's key | value in a qkv row and in the prefix rows. */
static size_t kv_width(const Model *m) { return 2 * (size_t)m->cfg.n_kv_heads * m->cfg.head_dim; }

static void embed(Model *m, float *x) {
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
}

static int lowest_layer(const Model *m) {
    if (!m->prompt->enabled || m->info[m->prompt->param].grad_offset < 0) return m->cfg.n_layers;
    return m->prompt->cfg.kind == PROMPT_TUNING ? -1 : 0;
}

static void prompt_free(Model *m) {
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
    if (c->init_tokens && c->kind != PROMPT_TUNING) return align_errorf("a text init is for prompt tuning only");
    if (c->init_tokens && c->n_init_tokens <= 0) return align_errorf("the prompt-tuning init text has no tokens");
    if (c->init_tokens && !m->w.wte) return align_errorf("the prompt-tuning text init needs fp32 token embeddings");
    for (int i = 0; c->init_tokens && i < c->n_init_tokens; i++)
        if (c->init_tokens[i] < 0 || c->init_tokens[i] >= mc->vocab_size)
            return align_errorf("prompt-tuning init token %d is outside the vocabulary (%d)", c->init_tokens[i],
                                mc->vocab_size);
    size_t width = c->kind == PROMPT_TUNING ? (size_t)mc->dim : kv_width(m) * mc->n_layers;
    ParamInfo extra;
    memset(&extra, 0, sizeof extra);
    /* the kind in the name, so a checkpoint carrying it says what it is */
    snprintf(extra.name, sizeof extra.name, "%s", prompt_param_name(c->kind));
    extra.ndim = 2;
    extra.shape[0] = c->n_virtual;
    extra.shape[1] = (int64_t)width;
    extra.numel = (size_t)c->n_virtual * width;
    extra.no_decay = 0; /* an nn.Embedding weight: the HF Trainer decays it */
    extra.lora = 1;
    float *host = malloc(extra.numel * sizeof(float));
    ModelPrompt *mp = calloc(1, sizeof *mp);
    if (!host || !mp) {
        free(host), free(mp);
        return align_errorf("out of memory for %d virtual tokens", c->n_virtual);
    }
    if (c->init_tokens) {
        /* peft's TEXT init: the text's token embeddings, repeated, cut to n */
        for (int i = 0; i < c->n_virtual; i++)
            m->be->to_host(host + (size_t)i * width, m->w.wte + (size_t)c->init_tokens[i % c->n_init_tokens] * mc->dim,
                           width * sizeof(float));
    } else {
        Rng rng; /* peft's RANDOM init: nn.Embedding's N(0, 1) */
        rng_seed(&rng, c->seed ^ 0x70726f6d7074ull);
        for (size_t k = 0; k < extra.numel; k++) host[k] = (float)rng_normal(&rng);
    }
    if (model_append_params(m, &extra, 1)) {
        free(host), free(mp);
        return -1;
    }
    mp->cfg = *c;
    mp->cfg.init_tokens = NULL; /* the caller's array: only the init reads it */
    mp->cfg.n_init_tokens = 0;
    mp->param = m->n_params - 1;
    mp->enabled = 1;
    m->be->to_device(m->params + m->info[mp->param].offset, host, extra.numel * sizeof(float));
    free(host);
    m->prompt = mp;
    m->virt = &virtual_ops;
    /* the base freezes; only the virtual tokens train */
    unsigned char *train = calloc(m->n_params, 1);
    if (!train) return align_errorf("out of memory");
    train[mp->param] = 1;
    model_set_trainable_mask(m, train);
    free(train);
    return 0;
}
