#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void optim_config_defaults(OptimConfig *c) {
    memset(c, 0, sizeof *c);
    c->lr = 1e-5f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.0f;
    c->max_grad_norm = 1.0f;
    c->schedule = LR_LINEAR; /* the Hugging Face Trainer's default */
}

int optim_parse_schedule(const char *name, LrSchedule *out) {
    if (!strcmp(name, "constant")) *out = LR_CONSTANT;
    else if (!strcmp(name, "linear")) *out = LR_LINEAR;
    else if (!strcmp(name, "cosine")) *out = LR_COSINE;
    /* TRL's name for what "constant" is here: warmup (if any), then flat */
    else if (!strcmp(name, "constant_with_warmup")) *out = LR_CONSTANT;
    else return align_errorf("--lr-schedule %s: expected constant, linear or cosine (or constant_with_warmup)", name);
    return 0;
}

Optimizer *optim_create(Model *m, const OptimConfig *cfg) {
    if (model_ensure_grads(m)) return NULL;
    return optim_create_shard(m, cfg, 0, m->n_grad_elems);
}

Optimizer *optim_create_shard(Model *m, const OptimConfig *cfg, size_t lo, size_t hi) {
    Optimizer *o = calloc(1, sizeof *o);
    if (!o) {
        align_errorf("out of memory creating the optimizer");
        return NULL;
    }
    o->cfg = *cfg;
    o->model = m;
    if (model_ensure_grads(m)) {
        free(o);
        return NULL;
    }
    if (hi > m->n_grad_elems) hi = m->n_grad_elems;
    if (lo > hi) lo = hi;
    o->shard_lo = lo;
    o->shard_hi = hi;
    if (hi > lo) {
        o->m = m->be->alloc((hi - lo) * sizeof(float));
        o->v = m->be->alloc((hi - lo) * sizeof(float));
        if (!o->m || !o->v) {
            align_error_prefix("optimizer moments for %zu parameters", hi - lo);
            optim_free(o);
            return NULL;
        }
    }
    return o;
}

void optim_free(Optimizer *o) {
    if (!o) return;
    if (o->m) o->model->be->free(o->m);
    if (o->v) o->model->be->free(o->v);
    free(o);
}

float optim_lr_at(const OptimConfig *c, long step) {
    if (step < c->warmup_steps) return c->lr * (float)step / (float)(c->warmup_steps > 0 ? c->warmup_steps : 1);
    if (c->schedule == LR_CONSTANT) return c->lr;
    long decay_steps = c->total_steps - c->warmup_steps;
    if (decay_steps <= 0) return c->lr;
    double progress = (double)(step - c->warmup_steps) / decay_steps;
    if (progress > 1.0) progress = 1.0;
    if (c->schedule == LR_LINEAR) return (float)(c->lr * (1.0 - progress));
    return (float)(c->lr * 0.5 * (1.0 + cos(M_PI * progress)));
}

double optim_grad_norm(const Optimizer *o) {
    const Model *m = o->model;
    if (!m->grads) return 0.0;
    return sqrt(m->be->sum_squares(m->grads, m->n_grad_elems));
}

double optim_step(Optimizer *o, float *lr_used) { return optim_step_with_norm(o, optim_grad_norm(o), lr_used); }

double optim_step_with_norm(Optimizer *o, double norm, float *lr_used) {
    Model *m = o->model;
    const OptimConfig *c = &o->cfg;
    float scale = 1.0f;
    /* torch.nn.utils.clip_grad_norm_: multiply by max/(norm + 1e-6) when above */
    if (c->max_grad_norm > 0 && norm > c->max_grad_norm) scale = (float)(c->max_grad_norm / (norm + 1e-6));
    float lr = optim_lr_at(c, o->step);
    o->step++;
    float bc1 = (float)(1.0 - pow(c->beta1, (double)o->step));
    float bc2 = (float)(1.0 - pow(c->beta2, (double)o->step));
    /* one call per tensor (its part in the slice), so biases and norm
     * weights skip weight decay */
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (p->grad_offset < 0) continue;
        size_t g0 = (size_t)p->grad_offset, g1 = g0 + p->numel;
        size_t from = g0 > o->shard_lo ? g0 : o->shard_lo, to = g1 < o->shard_hi ? g1 : o->shard_hi;
        if (from >= to) continue;
        float wd = p->no_decay ? 0.0f : c->weight_decay;
        m->be->adamw(m->params + p->offset + (from - g0), m->grads + from, o->m + (from - o->shard_lo),
                     o->v + (from - o->shard_lo), to - from, lr, c->beta1, c->beta2, c->eps, wd, bc1, bc2, scale);
    }
    model_zero_grad(m);
    if (lr_used) *lr_used = lr;
    return norm;
}
