/* trainer: the training loop sft_run, dpo_run and rm_train share.
 *
 * A program supplies a TrainTask: how many training examples there are and
 * a micro_step that runs forward + loss + backward on a list of example
 * indices (gradients accumulate in the model). The trainer owns the rest:
 * the shared flags of docs/DESIGN.md, a seeded data order (one permutation per
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
#include "lora.h"
#include "metrics.h"
#include "model_load.h"

typedef struct {
    float lr, weight_decay, max_grad_norm;
    float adam_beta1, adam_beta2, adam_epsilon; /* AdamW (TRL's names and defaults) */
    int logging_steps;      /* a progress line every N steps (off a terminal) */
    int save_total_limit;   /* step checkpoints kept: the newest N (0 = all) */
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
    const char *sheet, *eval_sheet; /* .xlsx worksheets of --data and --eval-data (NULL = the first) */
    int last_turn_only;         /* SFT {messages}: loss on the last assistant turn only */
    /* PEFT (common/model/lora.h, common/io/peft.h, common/compute/quant.h) */
    int lora_rank;              /* 0 = full fine-tuning */
    float lora_alpha, lora_dropout;
    const char *lora_targets;   /* comma list; default every attention and MLP projection */
    const char *lora_adapter;   /* start from a peft adapter directory */
    const char *lora_out;       /* where the adapter alone goes (default <out>-adapter) */
    const char *quantize_base;  /* q4_0, q4_1, q8_0, nf4, fp4: frozen base weights kept quantised */
    const char *peft;           /* lora, dora, ia3, bitfit or freeze (NULL: LoRA when --lora-* asks, else full) */
    int use_dora;               /* --use-dora: DoRA, as --peft dora (peft's use_dora) */
    const char *train_only;     /* "bias": BitFit, as --peft bitfit */
    int trainable_layers;       /* freeze tuning: the last N layers train (0 = unset: 2) */
    const char *trainable_modules; /* freeze tuning: modules of those layers (default all) */
    int num_virtual_tokens;     /* prompt / prefix tuning: virtual tokens (0 = unset: 20) */
    const char *prompt_tuning_init_text; /* prompt tuning: init from this text's embeddings (peft's TEXT) */
    int prefix_projection;      /* prefix tuning: the prefix is an MLP of learned embeddings (peft's prefix_projection) */
    /* where the metrics go besides --metrics: "none" or "tensorboard" */
    const char *report_to;
    const char *logging_dir;    /* TensorBoard event files (default <out>-logs) */
    /* data parallelism (dist.h): started by mpirun -np N, or by hand with --dist-init */
    int zero_stage;             /* 0: every rank keeps all AdamW moments; 1: each keeps 1/N (ZeRO-1) */
    float dist_timeout;         /* seconds a collective may wait before the job aborts (0 = forever) */
    int dist_overlap;           /* 1: sum each layer's gradients while the backward goes on (grad_overlap.h); 0: after it */
    const char *dist_init;      /* tcp://HOST:PORT: rank 0's address, the ranks started without mpirun (NULL: none) */
    int rank, world_size;       /* with dist_init: this process's rank (-1 = unset) and the number of ranks (0 = unset) */
} TrainArgs;

void train_args_defaults(TrainArgs *a);
/* Write the shared flags into flags[at...]; returns how many were added
 * (TRAIN_ARGS_N_FLAGS). */
#define TRAIN_ARGS_N_FLAGS 51
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
    /* Data parallelism: the weight of examples idx[0..n) in the loss's
     * mean (SFT: their loss tokens, as the loss is a token mean), so a
     * rank scales its shard's loss by its share of the micro-batch and the
     * summed gradients equal one process's. NULL: every example weighs 1
     * (the loss is a mean over examples: DPO, reward models). */
    double (*weight)(void *ctx, const int32_t *idx, int n);
    /* Set by the trainer before each micro_step: step * grad_accum + micro,
     * the same after --resume (online sampling seeds its draws with it). */
    long micro_key;
    /* 1: micro_step runs at most one model_backward on the trained model,
     * so under mpirun the last micro-batch's gradients can be summed layer
     * by layer while that backward runs (common/train/grad_overlap.h); 0
     * (a task that backpropagates twice would add into buffers already
     * being summed): one all-reduce after the backward. */
    int one_backward;
} TrainTask;

/* Checks that need no model, to run right after parsing: --out is given,
 * is a .ckpt or a directory (not GGUF) and can be written (a file can be
 * created where it goes; likewise --lora-out), and --eval-every has
 * --eval-data. An error names the flag. trainer_run checks them again.
 * --dist-init, --rank and --world-size are checked and handed to dist.h
 * here, so dist_rank() is this rank's while the models and data load. */
int trainer_check_args(const TrainArgs *a);

/* "<out without .ckpt or trailing />" + suffix into buf: where the files
 * that belong to a run go (-adapter, -logs, -report.html). */
void trainer_out_sibling(const char *out, const char *suffix, char *buf, size_t n);
/* Open the run's metrics log: --metrics (appended to when resuming) and,
 * with --report-to tensorboard, a new event file under --logging-dir. */
int trainer_metrics_open(const char *prog, const TrainArgs *a, MetricsLog *log);
/* At the end of a run with --metrics: <out>-report.html (report.h) from the
 * metrics file and the generate outputs beside it. A failure is reported
 * on stderr and does not fail the run: the model is saved by then. */
void trainer_write_report(const char *prog, const TrainArgs *a);

/* Run the loop on policy->model; saves the result to a->out (a .ckpt or a
 * Hugging Face directory). Returns 0, 1 when interrupted (a checkpoint was
 * saved), -1 on error.
 *
 * Under mpirun -np N (dist.h) the loop is data-parallel: every rank runs
 * the same global batches (same --seed, --batch-size, --grad-accum) and
 * takes its contiguous shard of each micro-batch; gradients are summed
 * with MPI_Allreduce before clipping and AdamW (with --dist-overlap 1 and a
 * task with one_backward, layer by layer during the last micro-batch's
 * backward: grad_overlap.h), metrics are merged so rank
 * 0 logs the global values, and rank 0 alone writes checkpoints, metrics
 * and the model. With --zero-stage 1 each rank keeps 1/N of the moments,
 * updates its slice of the parameters and MPI_Allgatherv shares them. The
 * data cursor is global, so --resume works with any number of ranks. A
 * rank that fails aborts the job (MPI_Abort). */
int trainer_run(const char *prog, const TrainArgs *a, ModelBundle *policy, TrainTask *task);

/* Which parameters train (--peft and the flags that imply a method). */
typedef enum { TRAIN_PEFT_FULL = 0, TRAIN_PEFT_LORA, TRAIN_PEFT_BITFIT, TRAIN_PEFT_FREEZE } TrainPeftMode;
/* Prompt and prefix tuning (common/model/prompt_learning.h), apart so the
 * list above can grow without renumbering them. */
enum { TRAIN_PEFT_PROMPT = 16, TRAIN_PEFT_PREFIX = 17 };
/* The method the flags ask for; -1 with an error naming the flag for
 * unknown or not yet implemented methods and for flags that contradict
 * each other (--lora-rank with --peft bitfit, --trainable-layers without
 * freeze tuning). */
int trainer_peft_mode(const TrainArgs *a);
/* The adapters the flags ask for when trainer_peft_mode is
 * TRAIN_PEFT_LORA (LoRA, DoRA with --peft dora or --use-dora, IA3 with
 * --peft ia3): method, rank, alpha, dropout, targets (0 for IA3 without
 * --lora-targets: peft's targets for the model's family), seed. */
int trainer_lora_config(const TrainArgs *a, LoraConfig *lc);

/* A model whose checkpoint keeps its weights quantised (GPTQ, AWQ) trains
 * adapters only: -1 with a sentence naming path when it holds quantised
 * tensors and the flags ask for another method than LoRA. */
int trainer_check_quantised_base(const TrainArgs *a, const char *path, const Model *m);

/* Load the model to train: the --resume checkpoint when given (weights,
 * moments and train state), else model_path; with its tokenizer. The chat
 * template is --chat-template, else the model's own, else none; the bundle
 * then records that template (name and align's Jinja for it), so the
 * trained model is saved with the template training rendered with.
 * With --dist-init the ranks meet here first (dist_init), so a rank that
 * fails to load is seen leaving at once by the others. */
int trainer_load_policy(const TrainArgs *a, const char *model_path, ModelBundle *out,
                        ChatTemplate *tmpl);
/* Quantise the base (--quantize-base), attach LoRA (--lora-rank or
 * --lora-adapter) and, when resuming, restore the adapters from the
 * checkpoint; or, for BitFit and freeze tuning (common/model/freeze.h),
 * freeze all but the chosen tensors. Call after any change of heads
 * (rm_from_base) and before trainer_run. With LoRA every base tensor is
 * frozen; a value head trains with every method. */
int trainer_setup_peft(const char *prog, const TrainArgs *a, ModelBundle *policy);
/* Save the trained model: a plain model to `path` (adapters merged, a
 * quantised base dequantised), and with LoRA the adapter alone as a peft
 * directory (a->lora_out, default <path without .ckpt>-adapter). Prompt
 * and prefix tuning cannot merge: `path` (a .ckpt) carries the virtual
 * tokens beside the base, and the adapter directory is written likewise
 * (but for a reward model, whose score head peft's layout cannot hold). */
int trainer_save_model(const char *prog, const TrainArgs *a, ModelBundle *policy, const char *path);

/* Load and tokenize a dataset with the shared options (max length,
 * skip-bad) and report what was kept, skipped and cut on stderr. */
int trainer_load_data(const char *prog, const TrainArgs *a, const char *path, const Tokenizer *tok,
                      ChatTemplate tmpl, DsKind kind, Dataset *out);

/* The permutation of epoch e for n examples (what the trainer uses). */
void trainer_epoch_order(int seed, int epoch, int n, int32_t *order);

#endif
