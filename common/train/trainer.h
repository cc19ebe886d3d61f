/* trainer: the training loop sft_run, dpo_run and rm_train share.
 *
 * A program supplies a TrainTask: how many training examples there are and
 * a micro_step that runs forward + loss + backward on a list of example
 * indices (gradients accumulate in the model). The trainer owns the rest:
 * the shared flags of DESIGN.md, a seeded data order (one permutation per
 * epoch, derived from --seed and the epoch, so no state beyond a cursor is
 * needed to resume), gradient accumulation, AdamW with clipping and the LR
 * schedule, metrics under TRL's names, evaluation, periodic checkpoints
 * with optimizer moments, Ctrl-C (finish the step, save, say how to
 * resume), and --resume, which continues exactly where the checkpoint
 * stopped: same data order, same LR, same moments, same weights. A step
 * whose loss or gradient norm is not finite stops the run before the
 * update, naming the step; nothing is saved. */
#ifndef ALIGN_TRAINER_H
#define ALIGN_TRAINER_H

#include <stdint.h>

#include "chat_template.h"
#include "cli.h"
#include "dataset.h"
#include "metrics.h"
#include "model_load.h"

typedef struct {
    float lr, weight_decay, max_grad_norm;
    int batch_size, grad_accum, epochs, max_steps, warmup_steps;
    const char *lr_schedule;
    const char *eval_data;
    int eval_every, save_every;
    const char *resume, *metrics, *out;
    int seed;
    const char *device;
    int max_length;
    const char *chat_template;
    int skip_bad;
    int last_turn_only;         /* SFT {messages}: loss on the last assistant turn only */
    /* PEFT (common/model/lora.h, common/io/peft.h, common/compute/quant.h) */
    int lora_rank;              /* 0 = full fine-tuning */
    float lora_alpha, lora_dropout;
    const char *lora_targets;   /* comma list; default every attention and MLP projection */
    const char *lora_adapter;   /* start from a peft adapter directory */
    const char *lora_out;       /* where the adapter alone goes (default <out>-adapter) */
    const char *quantize_base;  /* q4_0, q4_1, q8_0: frozen base weights kept quantised */
} TrainArgs;

void train_args_defaults(TrainArgs *a);
/* Write the shared flags into flags[at...]; returns how many were added
 * (TRAIN_ARGS_N_FLAGS). */
#define TRAIN_ARGS_N_FLAGS 28
int train_args_flags(TrainArgs *a, CliFlag *flags);

typedef struct {
    void *ctx;
    int n_train;
    /* Forward, loss (times loss_scale) and backward on examples idx[0..n);
     * add metrics into acc (weighted means). Returns the number of tokens
     * processed, or -1 with an error. */
    long (*micro_step)(void *ctx, const int32_t *idx, int n, float loss_scale, Metrics *acc);
    /* Evaluate on the eval set into out; NULL when there is none. */
    int (*evaluate)(void *ctx, Metrics *out);
    const char *const *shown; /* metric keys for the progress line */
} TrainTask;

/* Checks that need no model, to run right after parsing: --out is given,
 * is a .ckpt or a directory (not GGUF) and can be written (a file can be
 * created where it goes; likewise --lora-out), and --eval-every has
 * --eval-data. An error names the flag. trainer_run checks them again. */
int trainer_check_args(const TrainArgs *a);

/* Run the loop on policy->model; saves the result to a->out (a .ckpt or a
 * Hugging Face directory). Returns 0, 1 when interrupted (a checkpoint was
 * saved), -1 on error. */
int trainer_run(const char *prog, const TrainArgs *a, ModelBundle *policy, TrainTask *task);

/* Load the model to train: the --resume checkpoint when given (weights,
 * moments and train state), else model_path; with its tokenizer. The chat
 * template is --chat-template, else the model's own, else none. */
int trainer_load_policy(const TrainArgs *a, const char *model_path, ModelBundle *out,
                        ChatTemplate *tmpl);
/* Quantise the base (--quantize-base), attach LoRA (--lora-rank or
 * --lora-adapter) and, when resuming, restore the adapters from the
 * checkpoint. Call after any change of heads (rm_from_base) and before
 * trainer_run. With LoRA every base tensor is frozen. */
int trainer_setup_peft(const char *prog, const TrainArgs *a, ModelBundle *policy);
/* Save the trained model: a plain model to `path` (adapters merged, a
 * quantised base dequantised), and with LoRA the adapter alone as a peft
 * directory (a->lora_out, default <path without .ckpt>-adapter). */
int trainer_save_model(const char *prog, const TrainArgs *a, ModelBundle *policy, const char *path);

/* Load and tokenize a dataset with the shared options (max length,
 * skip-bad) and report what was kept, skipped and cut on stderr. */
int trainer_load_data(const char *prog, const TrainArgs *a, const char *path, const Tokenizer *tok,
                      ChatTemplate tmpl, DsKind kind, Dataset *out);

/* The permutation of epoch e for n examples (what the trainer uses). */
void trainer_epoch_order(int seed, int epoch, int n, int32_t *order);

#endif
