/* kvcache.c: the decoder's layer loop for cached inference. It mirrors
 * model_forward (same backend calls, same fused projections) except that
 * positions continue from each slot's cached length and attention reads the
 * cache; no activation is kept, so buffers hold one layer at a time.
 * Quantised base weights and enabled LoRA adapters are applied exactly as
 * in model_forward (no dropout: decoding is inference). Virtual tokens
 * (prompt_learning.h) are the first kv->virt entries of every slot, hidden
 * from the callers: a slot is primed with them before its first tokens
 * (run through the layers with the model's hooks, once per call, and copied
 * to the other fresh slots), and positions and lengths count past them. */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

struct KVCache {
    Model *m;
    int n_slots, max_len;    /* max_len: the callers' tokens per slot */
    int virt, phys;          /* virtual tokens first in every slot; phys = virt + max_len */
    int32_t *len;            /* host: the callers' tokens cached per slot */
    unsigned char *primed;   /* host: the slot holds its virtual tokens */
    float *k, *v;            /* backend: [L][n_slots][phys][Hkv*hd] */
    /* per-call scratch, grown as needed */
    int cap;
    float *x, *norm, *qkv, *attn, *tmp, *up, *act, *stats, *last_h, *logits;
    float *post;             /* Gemma: an output before its post norm */
    int32_t *tokens, *pos, *last_rows;
};

static size_t layer_stride(const KVCache *kv) {
    const ModelConfig *c = &kv->m->cfg;
    return (size_t)kv->n_slots * kv->phys * c->n_kv_heads * c->head_dim;
}

KVCache *kvcache_create(Model *m, int n_slots, int max_len) {
    const ModelConfig *c = &m->cfg;
    if (n_slots <= 0 || max_len <= 0) {
        align_errorf("kv cache: slots (%d) and max length (%d) must be positive", n_slots, max_len);
        return NULL;
    }
    int virt = m->virt ? m->virt->n_virtual(m) : 0;
    if (c->arch == ARCH_GPT2 && max_len > c->max_seq_len - virt) max_len = c->max_seq_len - virt;
    if (max_len <= 0) {
        align_errorf("kv cache: %d virtual tokens fill the model's %d positions", virt, c->max_seq_len);
        return NULL;
    }
    KVCache *kv = calloc(1, sizeof *kv);
    if (!kv) {
        align_errorf("out of memory creating the kv cache");
        return NULL;
    }
    kv->m = m;
    kv->n_slots = n_slots;
    kv->max_len = max_len;
    kv->virt = virt;
    kv->phys = virt + max_len;
    kv->len = calloc(n_slots, sizeof(int32_t));
    kv->primed = calloc(n_slots, 1);
    size_t bytes = (size_t)c->n_layers * layer_stride(kv) * sizeof(float);
    kv->k = m->be->alloc(bytes);
    kv->v = m->be->alloc(bytes);
    if (!kv->len || !kv->primed || !kv->k || !kv->v) {
        align_errorf("out of memory for a kv cache of %d x %d tokens (%.1f MiB)", n_slots, max_len, 2.0 * bytes / 1048576);
        kvcache_free(kv);
        return NULL;
    }
    return kv;
}

static void scratch_free(KVCache *kv) {
    const Backend *be = kv->m->be;
    float **f[] = {&kv->x,     &kv->norm,   &kv->qkv,    &kv->attn, &kv->tmp,  &kv->up,
                   &kv->act,   &kv->stats,  &kv->last_h, &kv->logits, &kv->post};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        be->free(*f[i]);
        *f[i] = NULL;
    }
    be->free(kv->tokens);
    be->free(kv->pos);
    be->free(kv->last_rows);
    kv->tokens = kv->pos = kv->last_rows = NULL;
    kv->cap = 0;
}

void kvcache_free(KVCache *kv) {
    if (!kv) return;
    scratch_free(kv);
    kv->m->be->free(kv->k);
    kv->m->be->free(kv->v);
    free(kv->len);
    free(kv->primed);
    free(kv);
}

void kvcache_reset(KVCache *kv, int slot) {
    if (slot >= 0 && slot < kv->n_slots) kv->len[slot] = 0, kv->primed[slot] = 0;
}

int kvcache_copy_prefix(KVCache *kv, int dst, int src, int len) {
    if (dst < 0 || dst >= kv->n_slots || src < 0 || src >= kv->n_slots || dst == src)
        return align_errorf("kv cache: cannot copy slot %d to slot %d (%d slots)", src, dst, kv->n_slots);
    if (len < 0 || len > kv->len[src])
        return align_errorf("kv cache: slot %d holds %d tokens, not %d", src, kv->len[src], len);
    const ModelConfig *c = &kv->m->cfg;
    size_t row = (size_t)c->n_kv_heads * c->head_dim, stride = layer_stride(kv);
    size_t n = (size_t)len + (kv->primed[src] ? kv->virt : 0); /* the virtual entries travel too */
    for (int l = 0; l < c->n_layers; l++) {
        size_t from = l * stride + (size_t)src * kv->phys * row, to = l * stride + (size_t)dst * kv->phys * row;
        kv->m->be->copy(kv->k + to, kv->k + from, n * row * sizeof(float));
        kv->m->be->copy(kv->v + to, kv->v + from, n * row * sizeof(float));
    }
    kv->len[dst] = len;
    kv->primed[dst] = kv->primed[src];
    return 0;
}

int kvcache_len(const KVCache *kv, int slot) { return slot >= 0 && slot < kv->n_slots ? kv->len[slot] : -1; }
int kvcache_max_len(const KVCache *kv) { return kv->max_len; }

static int scratch_reserve(KVCache *kv, int N, int n_seqs) {
    if (N <= kv->cap && n_seqs <= kv->cap) return 0;
    const ModelConfig *c = &kv->m->cfg;
    const Backend *be = kv->m->be;
    scratch_free(kv);
    size_t n = N > n_seqs ? N : n_seqs, d = c->dim;
    size_t q = (size_t)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim, ao = (size_t)c->n_heads * c->head_dim;
    size_t u = c->arch == ARCH_LLAMA ? 2 * (size_t)c->ffn_dim : c->ffn_dim;
    kv->x = be->alloc(n * d * 4);
    kv->norm = be->alloc(n * d * 4);
    kv->qkv = be->alloc(n * q * 4);
    kv->attn = be->alloc(n * ao * 4);
    kv->tmp = be->alloc(n * d * 4);
    kv->up = be->alloc(n * u * 4);
    kv->act = be->alloc(n * c->ffn_dim * 4);
    kv->stats = be->alloc(2 * n * 4);
    kv->last_h = be->alloc(n * d * 4);
    kv->logits = be->alloc(n * c->vocab_size * 4);
    kv->tokens = be->alloc(n * 4);
    kv->pos = be->alloc(n * 4);
    kv->last_rows = be->alloc(n * 4);
    kv->post = be->alloc(n * d * 4);
    if (!kv->post || !kv->x || !kv->norm || !kv->qkv || !kv->attn || !kv->tmp || !kv->up || !kv->act || !kv->stats ||
        !kv->last_h || !kv->logits || !kv->tokens || !kv->pos || !kv->last_rows) {
        scratch_free(kv);
        return align_errorf("out of memory for cached decoding of %d tokens", N);
    }
    kv->cap = (int)n;
    return 0;
}

static void norm(const Model *m, float *out, float *stats, const float *inp, const float *w, const float *b, int N) {
    const ModelConfig *c = &m->cfg;
    if (c->arch == ARCH_GPT2) m->be->layernorm_forward(out, stats, stats + N, inp, w, b, N, c->dim, c->norm_eps);
    else m->be->rmsnorm_forward(out, stats + N, inp, w, N, c->dim, c->norm_eps);
}

/* The layers over b's tokens appended to slots[s] after past[s] cached
 * entries (positions pos), then the logits of each sequence's last token
 * (rows last) when last_logits is non-NULL. virt: b is one sequence of
 * the virtual tokens, whose inputs or keys and values the hooks give. */
static int run_cached(Model *m, KVCache *kv, const int32_t *slots, const int32_t *past, const int32_t *pos,
                      const int32_t *last, const Batch *b, int virt, float *last_logits) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    int N = b->n_tokens, S = b->n_seqs;
    if (scratch_reserve(kv, N, S)) return -1;
    int lora = m->adapter && m->adapter->inference_active(m);
    if (lora && m->adapter->reserve_scratch(m, N)) return -1;
    be->to_device(kv->tokens, b->tokens, N * sizeof(int32_t));
    be->to_device(kv->pos, pos, N * sizeof(int32_t));
    if (last_logits) be->to_device(kv->last_rows, last, S * sizeof(int32_t));

    size_t n = N, d = c->dim;
    int q = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim, ao = c->n_heads * c->head_dim;
    int u = c->arch == ARCH_LLAMA ? 2 * c->ffn_dim : c->ffn_dim;
    const ModelTensors *W = model_norm_weights(m); /* 1 + w for Gemma's norms */
    if (!W) return -1;
    float ascale = model_attn_scale(c);
    be->embedding_forward(kv->x, kv->tokens, kv->pos, m->w.wte, m->w.wpe, N, c->dim);
    /* as model_forward: the embedding's scale, not the virtual tokens' */
    if (c->embed_scale > 0) be->scale(kv->x, c->embed_scale, n * d);
    if (virt) m->virt->embed(m, kv->x);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerTensors *w = &W->layers[l];
        const LayerQuant *qw = &m->qw[l];
        float *kc = kv->k + l * layer_stride(kv), *vc = kv->v + l * layer_stride(kv);
        norm(m, kv->norm, kv->stats, kv->x, w->norm1_w, w->norm1_b, N);
        model_linear_forward_infer(m, kv->qkv, kv->norm, w->wq, qw->qkv, qw->t_qkv, w->bq, N, c->dim, q);
        if (lora) m->adapter->forward(m, l, MODEL_SLOT_QKV, kv->norm, kv->qkv, q, N, 0);
        if (c->qk_norm)
            be->head_rmsnorm_forward(kv->qkv, NULL, NULL, w->q_norm, w->k_norm, N, c->n_heads, c->n_kv_heads,
                                     c->head_dim, c->norm_eps);
        if (c->arch == ARCH_LLAMA)
            model_rope(m, l, kv->qkv, kv->pos, pos, b->seq_start, S, N, 0);
        if (virt) m->virt->kv(m, l, kv->qkv, q);
        int window = model_layer_window(c, l);
        if (model_attn_ext(c))
            be->attention_forward_cached_ext(kv->attn, kv->qkv, kc, vc, slots, past, b->seq_start, S, N, c->n_heads,
                                             c->n_kv_heads, c->head_dim, kv->phys, window, ascale, c->attn_softcap);
        else if (window)
            be->attention_forward_cached_window(kv->attn, kv->qkv, kc, vc, slots, past, b->seq_start, S, N,
                                                c->n_heads, c->n_kv_heads, c->head_dim, kv->phys, window);
        else
            be->attention_forward_cached(kv->attn, kv->qkv, kc, vc, slots, past, b->seq_start, S, N, c->n_heads,
                                         c->n_kv_heads, c->head_dim, kv->phys);
        float *o_out = c->sandwich_norms ? kv->post : kv->tmp;
        model_linear_forward_infer(m, o_out, kv->attn, w->wo, qw->o, qw->t_o, w->bo, N, ao, c->dim);
        if (lora) m->adapter->forward(m, l, MODEL_SLOT_O, kv->attn, o_out, c->dim, N, 0);
        if (c->sandwich_norms) norm(m, kv->tmp, kv->stats, o_out, w->post_attn_norm_w, NULL, N);
        be->add_inplace(kv->x, kv->tmp, n * d);
        norm(m, kv->norm, kv->stats, kv->x, w->norm2_w, w->norm2_b, N);
        model_linear_forward_infer(m, kv->up, kv->norm, c->arch == ARCH_LLAMA ? w->w_gate : w->w_up, qw->up, qw->t_up,
                             w->b_up, N, c->dim, u);
        if (lora) m->adapter->forward(m, l, MODEL_SLOT_UP, kv->norm, kv->up, u, N, 0);
        if (c->geglu) be->geglu_forward(kv->act, kv->up, N, c->ffn_dim);
        else if (c->arch == ARCH_LLAMA) be->swiglu_forward(kv->act, kv->up, N, c->ffn_dim);
        else be->gelu_forward(kv->act, kv->up, n * c->ffn_dim);
        float *f_out = c->sandwich_norms ? kv->post : kv->tmp;
        model_linear_forward_infer(m, f_out, kv->act, w->w_down, qw->down, qw->t_down, w->b_down, N, c->ffn_dim, c->dim);
        if (lora) m->adapter->forward(m, l, MODEL_SLOT_DOWN, kv->act, f_out, c->dim, N, 0);
        if (c->sandwich_norms) norm(m, kv->tmp, kv->stats, f_out, w->post_ffn_norm_w, NULL, N);
        be->add_inplace(kv->x, kv->tmp, n * d);
    }
    if (last_logits) {
        /* only each sequence's last token needs the final norm and the LM head */
        be->gather_rows(kv->last_h, kv->x, kv->last_rows, S, c->dim);
        norm(m, kv->norm, kv->stats, kv->last_h, W->normf_w, m->w.normf_b, S);
        model_linear_forward_infer(m, kv->logits, kv->norm, m->w.lm_head, m->lm_head_q, m->lm_head_qtype, NULL, S, c->dim,
                                   c->vocab_size);
        if (c->final_softcap > 0) be->softcap_forward(kv->logits, (size_t)S * c->vocab_size, c->final_softcap);
        be->to_host(last_logits, kv->logits, (size_t)S * c->vocab_size * sizeof(float));
    }
    return backend_check(be, "cached forward");
}

/* Give the fresh slots among slots[0..S) their virtual tokens: run them
 * once into the first, copy that to the others. */
static int prime_slots(Model *m, KVCache *kv, const int32_t *slots, int S) {
    int first = -1, nv = kv->virt;
    for (int s = 0; s < S; s++) {
        int slot = slots[s];
        if (kv->primed[slot]) continue;
        if (first < 0) {
            int32_t *tok = calloc(nv, sizeof(int32_t)), *pos = malloc(nv * sizeof(int32_t));
            if (!tok || !pos) {
                free(tok), free(pos);
                return align_errorf("out of memory");
            }
            for (int i = 0; i < nv; i++) pos[i] = i;
            int32_t start[2] = {0, nv}, past = 0;
            Batch vb = {.n_tokens = nv, .n_seqs = 1, .tokens = tok, .seq_start = start};
            int rc = run_cached(m, kv, &slot, &past, pos, NULL, &vb, 1, NULL);
            free(tok), free(pos);
            if (rc) return -1;
            kv->primed[slot] = 1;
            first = slot;
        } else if (kvcache_copy_prefix(kv, slot, first, 0)) {
            return -1;
        }
    }
    return 0;
}

int model_forward_cached(Model *m, KVCache *kv, const int32_t *slots, const Batch *b, float *last_logits) {
    const ModelConfig *c = &m->cfg;
    if (!c->lm_head) return align_errorf("cached decoding needs a model with an LM head");
    int N = b->n_tokens, S = b->n_seqs;
    if (N <= 0 || S <= 0 || b->seq_start[0] != 0 || b->seq_start[S] != N) return align_errorf("cached decoding: malformed batch");
    int nv = m->virt ? m->virt->n_virtual(m) : 0;
    if (nv != kv->virt)
        return align_errorf("cached decoding: the cache was made for %d virtual tokens, the model now gives %d", kv->virt, nv);
    int32_t *past = malloc(S * sizeof(int32_t)), *pos = malloc(N * sizeof(int32_t)), *last = malloc(S * sizeof(int32_t));
    if (!past || !pos || !last) {
        free(past), free(pos), free(last);
        return align_errorf("out of memory");
    }
    int rc = -1;
    for (int s = 0; s < S; s++) {
        int slot = slots[s], n_new = b->seq_start[s + 1] - b->seq_start[s];
        if (slot < 0 || slot >= kv->n_slots) { align_errorf("cached decoding: slot %d out of range", slot); goto done; }
        for (int t = 0; t < s; t++)
            if (slots[t] == slot) { align_errorf("cached decoding: slot %d used twice in one batch", slot); goto done; }
        if (n_new <= 0) { align_errorf("cached decoding: sequence %d has no new tokens", s); goto done; }
        if (kv->len[slot] + n_new > kv->max_len) {
            align_errorf("cached decoding: slot %d would hold %d tokens, more than its %d", slot, kv->len[slot] + n_new, kv->max_len);
            goto done;
        }
        past[s] = nv + kv->len[slot]; /* entries before the new tokens, virtual ones included */
        for (int i = b->seq_start[s]; i < b->seq_start[s + 1]; i++) pos[i] = past[s] + i - b->seq_start[s];
        last[s] = b->seq_start[s + 1] - 1;
    }
    for (int i = 0; i < N; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab_size) {
            align_errorf("token id %d is outside the vocabulary (%d)", b->tokens[i], c->vocab_size);
            goto done;
        }
    if (nv && prime_slots(m, kv, slots, S)) goto done;
    if (run_cached(m, kv, slots, past, pos, last, b, 0, last_logits)) goto done; /* the slots keep their old lengths */
    for (int s = 0; s < S; s++) kv->len[slots[s]] += b->seq_start[s + 1] - b->seq_start[s];
    rc = 0;
done:
    free(past), free(pos), free(last);
    return rc;
}
