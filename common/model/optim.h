/* optim: AdamW over the model's flat gradient buffer, global-norm clipping,
 * and learning-rate schedules.
 *
 * AdamW follows PyTorch's torch.optim.AdamW: decoupled weight decay
 * (p -= lr * wd * p before the Adam update), bias-corrected moments, eps
 * added after the square root. As in the Hugging Face Trainer, biases and
 * norm weights (ParamInfo.no_decay) get no weight decay. Moments exist only
 * for trainable tensors (they mirror Model.grads).
 *
 * Schedules match transformers' get_*_schedule_with_warmup: the multiplier
 * at optimizer step s (0-based) is s/warmup during warmup, then constant,
 * linear to 0 at total_steps, or half a cosine to 0 at total_steps. */
#ifndef ALIGN_OPTIM_H
#define ALIGN_OPTIM_H

#include "model.h"

typedef enum { LR_CONSTANT = 0, LR_LINEAR, LR_COSINE } LrSchedule;

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float max_grad_norm;   /* 0 = no clipping */
    LrSchedule schedule;
    int warmup_steps;
    int total_steps;       /* for linear and cosine decay */
} OptimConfig;

typedef struct {
    OptimConfig cfg;
    Model *model;
    float *m, *v;          /* backend memory, shard_hi - shard_lo each */
    long step;             /* optimizer steps taken */
    /* The slice [shard_lo, shard_hi) of the flat gradient buffer this
     * optimizer owns (ZeRO-1: each data-parallel rank updates its slice of
     * the parameters and keeps only its slice of the moments; the trainer
     * all-gathers the parameters). The whole buffer by default. */
    size_t shard_lo, shard_hi;
} Optimizer;

void optim_config_defaults(OptimConfig *c); /* lr 1e-5 ... as TRL: betas .9/.999, eps 1e-8, wd 0 */
int optim_parse_schedule(const char *name, LrSchedule *out); /* "constant" | "linear" | "cosine" */
Optimizer *optim_create(Model *m, const OptimConfig *cfg);
/* An optimizer for the slice [lo, hi) of the gradient buffer only. */
Optimizer *optim_create_shard(Model *m, const OptimConfig *cfg, size_t lo, size_t hi);
void optim_free(Optimizer *o);

/* The learning rate used at 0-based optimizer step `step`. */
float optim_lr_at(const OptimConfig *c, long step);

/* Global L2 norm of all gradients. */
double optim_grad_norm(const Optimizer *o);

/* Clip (when max_grad_norm > 0), take one AdamW step with the scheduled LR
 * on the optimizer's slice, and zero the gradients (all of them). Returns the pre-clip gradient norm; *lr_used gets
 * the LR (may be NULL). */
double optim_step(Optimizer *o, float *lr_used);
/* optim_step with the norm the caller already has (optim_grad_norm of the
 * current gradients), so a caller that checks it first reads them once. */
double optim_step_with_norm(Optimizer *o, double norm, float *lr_used);

#endif
