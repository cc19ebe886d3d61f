#include "trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist.h"
#include "freeze.h"
#include "gguf.h"
#include "grad_overlap.h"
#include "job_agree.h"
#include "model_load.h"
#include "optim.h"
#include "peft.h"
#include "peft_prompt.h"
#include "report.h"
#include "rng.h"
#include "tb_events.h"
#include "util.h"

void train_args_defaults(TrainArgs *a) {
    memset(a, 0, sizeof *a);
    a->lr = 5e-7f; /* TRL's DPOConfig default; programs override (sft: 2e-5) */
    a->weight_decay = 0.0f;
    a->max_grad_norm = 1.0f;
    a->adam_beta1 = 0.9f; /* torch.optim.AdamW and TrainingArguments */
    a->adam_beta2 = 0.999f;
    a->adam_epsilon = 1e-8f;
    a->logging_steps = 10;
    a->save_total_limit = 1; /* the newest only, as before the flag existed */
    a->batch_size = 8;
    a->grad_accum = 1;
    a->epochs = 1;
    a->max_steps = -1;
    a->lr_schedule = "linear";
    a->eval_every = 0;
    a->save_every = 0;
    a->seed = 42;
    a->device = "cpu";
    a->max_length = 1024;
    a->lora_alpha = -1;   /* default: 2 * rank (TRL: r 16, alpha 32) */
    a->lora_dropout = 0.05f;
    a->dist_timeout = 600; /* longer than any evaluation or save rank 0 makes the others wait for */
    a->dist_overlap = 1; /* as DDP's bucketed all-reduce: on unless asked off */
    a->rank = -1;        /* --rank and --world-size only go with --dist-init */
}

int train_args_flags(TrainArgs *a, CliFlag *f) {
    CliFlag shared[] = {
        {"lr", CLI_FLOAT, &a->lr, "peak learning rate", CLI_NONNEG},
        {"batch-size", CLI_INT, &a->batch_size, "examples per micro-batch (one packed forward)", CLI_AT_LEAST_1},
        {"grad-accum", CLI_INT, &a->grad_accum, "micro-batches per optimizer step", CLI_AT_LEAST_1},
        {"epochs", CLI_INT, &a->epochs, "passes over the training data", CLI_AT_LEAST_1},
        {"max-steps", CLI_INT, &a->max_steps, "optimizer steps, overriding --epochs (-1 = as many as --epochs give)", CLI_UNSET_OR_POSITIVE},
        {"warmup-steps", CLI_INT, &a->warmup_steps, "linear LR warmup steps", CLI_NONNEG},
        {"lr-schedule", CLI_STRING, &a->lr_schedule, "constant, linear or cosine"},
        {"weight-decay", CLI_FLOAT, &a->weight_decay, "AdamW decoupled weight decay (not on biases and norms)", CLI_NONNEG},
        {"max-grad-norm", CLI_FLOAT, &a->max_grad_norm, "clip gradients to this global norm (0 = off)", CLI_NONNEG},
        {"adam-beta1", CLI_FLOAT, &a->adam_beta1, "AdamW beta1, the first moment's decay, in [0, 1)", CLI_UNIT_OPEN},
        {"adam-beta2", CLI_FLOAT, &a->adam_beta2, "AdamW beta2, the second moment's decay, in [0, 1)", CLI_UNIT_OPEN},
        {"adam-epsilon", CLI_FLOAT, &a->adam_epsilon, "AdamW epsilon, added after the square root", CLI_POSITIVE},
        {"logging-steps", CLI_INT, &a->logging_steps, "print a progress line every N steps when not on a terminal (--metrics has every step)", CLI_AT_LEAST_1},
        {"save-total-limit", CLI_INT, &a->save_total_limit, "keep only the newest N --save-every checkpoints (0 = keep all)", CLI_NONNEG},
        {"eval-data", CLI_STRING, &a->eval_data, "held-out data for evaluation"},
        {"eval-every", CLI_INT, &a->eval_every, "evaluate every N steps (0 = at the end only)", CLI_NONNEG},
        {"save-every", CLI_INT, &a->save_every, "checkpoint every N steps (0 = off)", CLI_NONNEG},
        {"resume", CLI_STRING, &a->resume, "continue from a checkpoint written by --save-every or Ctrl-C"},
        {"metrics", CLI_STRING, &a->metrics, "write one JSON object per step to this .jsonl file"},
        {"out", CLI_STRING, &a->out, "where to write the trained model (.ckpt or a directory for Hugging Face)"},
        {"seed", CLI_INT, &a->seed, "seed for the data order (and anything random)", CLI_ANY},
        {"device", CLI_STRING, &a->device, "cpu or cuda"},
        {"max-length", CLI_INT, &a->max_length, "longest prompt + completion in tokens (0 = no limit)", CLI_NONNEG},
        {"chat-template", CLI_STRING, &a->chat_template, "none, chatml, llama3, hh or a model family (qwen2.5, qwen3, llama3.1, gemma3, phi4, mistral-v7, ...; default: the model's own)"},
        {"skip-bad", CLI_BOOL, &a->skip_bad, "skip malformed records (counted) instead of stopping"},
        {"sheet", CLI_STRING, &a->sheet, "the worksheet of an .xlsx --data (ppo_run: --prompts) file (default: the first)"},
        {"eval-sheet", CLI_STRING, &a->eval_sheet, "the worksheet of an .xlsx --eval-data file (default: the first)"},
        {"last-turn-only", CLI_BOOL, &a->last_turn_only, "SFT {messages}: train only the last assistant turn (default: every assistant turn, as TRL's assistant_only_loss)"},
        {"lora-rank", CLI_INT, &a->lora_rank, "train LoRA adapters of this rank on a frozen base (0 = full fine-tuning)", CLI_NONNEG},
        {"lora-alpha", CLI_FLOAT, &a->lora_alpha, "LoRA scale numerator: updates are scaled by alpha/rank (default, or -1: 2*rank)", CLI_UNSET_OR_POSITIVE},
        {"lora-dropout", CLI_FLOAT, &a->lora_dropout, "dropout on the adapters' input while training, in [0, 1)", CLI_UNIT_OPEN},
        {"lora-targets", CLI_STRING, &a->lora_targets, "modules to adapt: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (GPT-2: c_attn,c_proj,c_fc); default all"},
        {"lora-adapter", CLI_STRING, &a->lora_adapter, "start from a peft adapter directory (adapter_config.json + adapter_model.safetensors)"},
        {"lora-out", CLI_STRING, &a->lora_out, "directory for the trained adapter alone (LoRA, prompt or prefix tuning), peft layout (default <out>-adapter)"},
        {"report-to", CLI_STRING, &a->report_to, "also log the metrics to: none or tensorboard (event files under --logging-dir)"},
        {"logging-dir", CLI_STRING, &a->logging_dir, "directory for the TensorBoard event files (default <out>-logs)"},
        {"zero-stage", CLI_INT, &a->zero_stage, "with several ranks: 0 = every rank keeps all AdamW moments, 1 = each keeps 1/N (ZeRO-1)", CLI_NONNEG},
        {"dist-timeout", CLI_FLOAT, &a->dist_timeout, "with several ranks: seconds a collective may wait for a hung rank before the job aborts, and --dist-init waits for every rank to arrive (0 = forever)", CLI_NONNEG},
        {"dist-overlap", CLI_INT, &a->dist_overlap, "with several ranks: 1 = sum each layer's gradients while the backward pass computes the layers below (as DDP's buckets), 0 = one all-reduce after it", CLI_UNIT},
        {"dist-init", CLI_STRING, &a->dist_init, "without mpirun: tcp://HOST:PORT where rank 0 listens; start each of the --world-size ranks with its own --rank (as torchrun's rendezvous)"},
        {"rank", CLI_INT, &a->rank, "with --dist-init: this process's rank, 0 to N-1", CLI_NONNEG},
        {"world-size", CLI_INT, &a->world_size, "with --dist-init: the number of ranks N", CLI_AT_LEAST_1},
        {"quantize-base", CLI_STRING, &a->quantize_base, "keep the frozen base quantised: q4_0, q4_1, q8_0 (a GGUF's own blocks, K-quants included, are kept as stored), or QLoRA's nf4 or fp4 (bitsandbytes' blocks of 64, double quantisation; CPU); needs LoRA"},
        {"peft", CLI_STRING, &a->peft, "parameter-efficient method: lora (the --lora-* flags), dora (LoRA with a trained magnitude per output, peft's use_dora), ia3 (trained scales of k, v and the down projection's input), bitfit (biases only), freeze (--trainable-layers/--trainable-modules), prompt (prompt tuning) or prefix (prefix tuning / P-tuning v2; both --num-virtual-tokens); default full fine-tuning, or LoRA with --lora-rank"},
        {"use-dora", CLI_BOOL, &a->use_dora, "DoRA: LoRA adapters with a trained magnitude per output row (peft's use_dora; as --peft dora)"},
        {"train-only", CLI_STRING, &a->train_only, "bias: train only the bias vectors (BitFit, as --peft bitfit)"},
        {"trainable-layers", CLI_INT, &a->trainable_layers, "freeze tuning: the last N layers train, negative: the first -N (default 2, as LLaMA-Factory)", CLI_ANY},
        {"trainable-modules", CLI_STRING, &a->trainable_modules, "freeze tuning: modules of those layers that train, e.g. mlp,self_attn (default all)"},
        {"num-virtual-tokens", CLI_INT, &a->num_virtual_tokens, "--peft prompt|prefix: virtual tokens before every sequence (default 20)", CLI_NONNEG},
        {"prefix-projection", CLI_BOOL, &a->prefix_projection, "--peft prefix: reparametrise the prefix as an MLP (Linear, Tanh, Linear) of learned embeddings, peft's prefix_projection; the adapter saves its output"},
        {"prompt-tuning-init-text", CLI_STRING, &a->prompt_tuning_init_text, "--peft prompt: start the virtual tokens as this text's token embeddings, repeated or cut (peft's TEXT init; default random N(0,1))"},
    };
    /* programs size their tables by TRAIN_ARGS_N_FLAGS: a flag added here
     * without raising it stops the build instead of overrunning them */
    _Static_assert(sizeof shared / sizeof *shared == TRAIN_ARGS_N_FLAGS, "TRAIN_ARGS_N_FLAGS must count train_args_flags' table");
    memcpy(f, shared, sizeof shared);
    return TRAIN_ARGS_N_FLAGS;
}

/* Can a file be created in dir? Creating (and removing) one is the only
 * test that answers for every case: read-only mounts, /proc, a file where
 * a directory should be, and root, whom mode bits do not stop. */
static int dir_accepts_files(const char *dir) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/.align-write-test-XXXXXX", dir);
    int fd = mkstemp(tmp);
    if (fd < 0) return -1;
    close(fd);
    unlink(tmp);
    return 0;
}

/* The directory `path` will be created in (or written into, as_dir and it
 * exists), so a bad --out stops the program before any work. */
static int check_writable(const char *flag, const char *path, int as_dir) {
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    if (exists && as_dir && !S_ISDIR(sb.st_mode))
        return align_errorf("%s %s: exists and is not a directory (a Hugging Face directory goes here)", flag, path);
    if (exists && !as_dir && S_ISDIR(sb.st_mode)) return align_errorf("%s %s: is a directory, not a file", flag, path);
    char dir[4096];
    if (exists && as_dir) {
        snprintf(dir, sizeof dir, "%s", path);
    } else {
        size_t len = strlen(path);
        while (len > 1 && path[len - 1] == '/') len--;
        while (len > 0 && path[len - 1] != '/') len--;
        while (len > 1 && path[len - 1] == '/') len--;
        if (len == 0) snprintf(dir, sizeof dir, ".");
        else snprintf(dir, sizeof dir, "%.*s", (int)len, path);
    }
    if (dir_accepts_files(dir)) return align_errorf("%s %s: cannot write in %s: %s", flag, path, dir, strerror(errno));
    return 0;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int trainer_check_args(const TrainArgs *a) {
    if (!a->out) return align_errorf("--out is required (where the trained model goes)");
    ModelSaveFormat fmt;
    if (model_save_format(a->out, &fmt)) return align_error_prefix("--out");
    /* a trainer's checkpoints (--save-every, --resume) hold the optimizer
     * state, which a GGUF has no place for: GGUF is one conversion away */
    if (fmt == MODEL_SAVE_GGUF)
        return align_errorf("--out %s: a trainer writes a .ckpt or a Hugging Face directory; convert the result for "
                            "llama.cpp / Ollama with: ckpt_convert OUT.ckpt %s --type q8_0",
                            a->out, a->out);
    if (check_writable("--out", a->out, fmt != MODEL_SAVE_CKPT)) return -1;
    int mode = trainer_peft_mode(a);
    if (mode < 0) return -1;
    if (a->lora_out && (mode == TRAIN_PEFT_LORA || mode == TRAIN_PEFT_PROMPT || mode == TRAIN_PEFT_PREFIX) &&
        check_writable("--lora-out", a->lora_out, 1))
        return -1;
    if ((mode == TRAIN_PEFT_PROMPT || mode == TRAIN_PEFT_PREFIX) && !has_suffix(a->out, ".ckpt"))
        return align_errorf("--out %s: --peft %s keeps the base and its virtual tokens apart, so the model goes to a "
                            ".ckpt (the peft adapter to <out>-adapter/)", a->out, a->peft);
    if (a->eval_every > 0 && !a->eval_data)
        return align_errorf("--eval-every %d needs --eval-data (the held-out set to evaluate)", a->eval_every);
    if (a->zero_stage > 1) return align_errorf("--zero-stage %d: expected 0 or 1 (ZeRO-2 and 3 are not built)", a->zero_stage);
    if (a->report_to && strcmp(a->report_to, "none") && strcmp(a->report_to, "tensorboard"))
        return align_errorf("--report-to %s: expected none or tensorboard", a->report_to);
    return dist_set_rendezvous(a->dist_init, a->rank, a->world_size);
}

void trainer_out_sibling(const char *out, const char *suffix, char *buf, size_t n) {
    size_t len = strlen(out);
    while (len > 1 && out[len - 1] == '/') len--;
    if (len > 5 && !strncmp(out + len - 5, ".ckpt", 5)) len -= 5;
    snprintf(buf, n, "%.*s%s", (int)len, out, suffix);
}

int trainer_metrics_open(const char *prog, const TrainArgs *a, MetricsLog *log) {
    if (metrics_log_open(log, prog, a->metrics, a->resume != NULL)) return -1;
    if (a->report_to && !strcmp(a->report_to, "tensorboard")) {
        char dir[4096];
        if (a->logging_dir) snprintf(dir, sizeof dir, "%s", a->logging_dir);
        else trainer_out_sibling(a->out, "-logs", dir, sizeof dir);
        if (metrics_log_tensorboard(log, dir)) {
            metrics_log_close(log);
            return -1;
        }
        fprintf(stderr, "%s: TensorBoard events in %s (tensorboard --logdir %s)\n", prog, tb_writer_path(log->tb), dir);
    }
    return 0;
}

void trainer_write_report(const char *prog, const TrainArgs *a) {
    if (!a->metrics || !a->out) return;
    char path[4096];
    trainer_out_sibling(a->out, "-report.html", path, sizeof path);
    /* this run's metrics, and the generate outputs beside them (samples
     * before training, say); other runs' metrics there are left out */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", a->metrics);
    char *slash = strrchr(dir, '/');
    if (slash) slash[slash == dir] = 0; /* "/x.jsonl": the root */
    else snprintf(dir, sizeof dir, ".");
    const char *inputs[2] = {a->metrics, dir};
    if (report_write(path, inputs, 2, 0)) fprintf(stderr, "%s: no report page: %s\n", prog, align_error());
    else fprintf(stderr, "%s: wrote %s\n", prog, path);
}

int trainer_peft_mode(const TrainArgs *a) {
    static const char *const later[] = {"p-tuning", "ptuning", "adalora", "loha", "lokr", NULL};
    int lora_flags = a->lora_rank > 0 || a->lora_adapter || a->use_dora;
    int freeze_flags = a->trainable_layers != 0 || a->trainable_modules;
    int mode;
    if (a->train_only && strcmp(a->train_only, "bias"))
        return align_errorf("--train-only %s: expected bias (BitFit); --peft freeze trains whole layers", a->train_only);
    if (a->peft) {
        /* DoRA and IA3 are adapters on LoRA's plumbing (lora.h) */
        if (!strcmp(a->peft, "lora") || !strcmp(a->peft, "dora") || !strcmp(a->peft, "ia3")) mode = TRAIN_PEFT_LORA;
        else if (!strcmp(a->peft, "bitfit")) mode = TRAIN_PEFT_BITFIT;
        else if (!strcmp(a->peft, "freeze")) mode = TRAIN_PEFT_FREEZE;
        else if (!strcmp(a->peft, "prompt")) mode = TRAIN_PEFT_PROMPT;
        else if (!strcmp(a->peft, "prefix")) mode = TRAIN_PEFT_PREFIX;
        else {
            for (int i = 0; later[i]; i++)
                if (!strcmp(a->peft, later[i]))
                    return align_errorf("--peft %s: not implemented yet (available: lora, dora, ia3, bitfit, freeze, prompt, prefix)", a->peft);
            return align_errorf("--peft %s: unknown method (expected lora, dora, ia3, bitfit, freeze, prompt or prefix)", a->peft);
        }
        if (a->use_dora && strcmp(a->peft, "lora") && strcmp(a->peft, "dora"))
            return align_errorf("--use-dora is LoRA's: it cannot be combined with --peft %s", a->peft);
        if (!strcmp(a->peft, "ia3") && (a->lora_rank > 0 || a->lora_alpha > 0))
            return align_errorf("--peft ia3 trains scaling vectors: %s does not apply", a->lora_rank > 0 ? "--lora-rank" : "--lora-alpha");
        if (a->train_only && mode != TRAIN_PEFT_BITFIT)
            return align_errorf("--train-only bias is BitFit: it cannot be combined with --peft %s", a->peft);
    } else {
        mode = a->train_only ? TRAIN_PEFT_BITFIT : freeze_flags ? TRAIN_PEFT_FREEZE : lora_flags ? TRAIN_PEFT_LORA : TRAIN_PEFT_FULL;
    }
    int virt = mode == TRAIN_PEFT_PROMPT || mode == TRAIN_PEFT_PREFIX;
    if ((a->num_virtual_tokens || a->prompt_tuning_init_text) && !virt)
        return align_errorf("%s is for --peft prompt or prefix", a->num_virtual_tokens ? "--num-virtual-tokens" : "--prompt-tuning-init-text");
    if (a->prefix_projection && mode != TRAIN_PEFT_PREFIX) return align_errorf("--prefix-projection is for --peft prefix");
    if (a->prompt_tuning_init_text && mode != TRAIN_PEFT_PROMPT)
        return align_errorf("--prompt-tuning-init-text is for --peft prompt (prefix tuning's keys and values are no token embeddings)");
    if (virt && a->lora_rank > 0) return align_errorf("--peft %s cannot be combined with --lora-rank", a->peft);
    if (virt && a->lora_adapter && a->num_virtual_tokens)
        return align_errorf("--lora-adapter %s sets the virtual tokens: drop --num-virtual-tokens", a->lora_adapter);
    if (virt && a->quantize_base)
        return align_errorf("--quantize-base is for LoRA; --peft %s keeps the base as it is", a->peft);
    const char *name = mode == TRAIN_PEFT_BITFIT ? "bitfit" : "freeze";
    if (lora_flags && (mode == TRAIN_PEFT_BITFIT || mode == TRAIN_PEFT_FREEZE))
        return align_errorf("--peft %s trains base tensors: it cannot be combined with %s", name,
                            a->lora_adapter ? "--lora-adapter" : a->use_dora ? "--use-dora" : "--lora-rank");
    if (freeze_flags && mode != TRAIN_PEFT_FREEZE)
        return align_errorf("%s chooses layers for freeze tuning: it needs --peft freeze, not %s",
                            a->trainable_modules ? "--trainable-modules" : "--trainable-layers",
                            mode == TRAIN_PEFT_LORA ? "LoRA" : "BitFit");
    return mode;
}

int trainer_lora_config(const TrainArgs *a, LoraConfig *lc) {
    lora_config_defaults(lc);
    if (a->peft && !strcmp(a->peft, "ia3")) {
        lc->method = LORA_METHOD_IA3;
        lc->targets = 0; /* peft's IA3 targets for the family, chosen at attach */
    } else if (a->use_dora || (a->peft && !strcmp(a->peft, "dora"))) {
        lc->method = LORA_METHOD_DORA;
    }
    if (a->lora_rank > 0) lc->rank = a->lora_rank; /* --peft lora alone: peft's default rank */
    lc->alpha = a->lora_alpha > 0 ? a->lora_alpha : 2.0f * lc->rank;
    lc->dropout = lc->method == LORA_METHOD_IA3 ? 0.0f : a->lora_dropout;
    lc->seed = (uint64_t)a->seed;
    if (a->lora_targets && lora_parse_targets(a->lora_targets, &lc->targets)) return align_error_prefix("--lora-targets");
    return 0;
}

/* BitFit or freeze tuning: freeze the base but for the chosen tensors. */
static int setup_frozen_base(const char *prog, const TrainArgs *a, Model *m, int mode) {
    int n = mode == TRAIN_PEFT_BITFIT ? model_train_only_biases(m)
                                      : model_train_layers(m, a->trainable_layers ? a->trainable_layers : 2, a->trainable_modules);
    if (n < 0) return -1;
    if (m->cfg.value_head) model_set_trainable(m, "score.weight", 1); /* a reward model's head trains too */
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += m->info[i].numel;
    fprintf(stderr, "%s: %s: %zu trainable parameters (%.2f%% of %zu) in %d tensors\n", prog,
            mode == TRAIN_PEFT_BITFIT ? "BitFit" : "freeze tuning", model_trainable_elems(m),
            100.0 * model_trainable_elems(m) / (double)total, total, n);
    return 0;
}

/* Prompt or prefix tuning: attach the virtual tokens, or keep those the
 * loaded .ckpt carried (--resume, or a prompt-tuned model trained further)
 * when they agree with the flags. */
static int setup_virtual_tokens(const char *prog, const TrainArgs *a, ModelBundle *policy, int mode) {
    Model *m = policy->model;
    PromptKind kind = mode == TRAIN_PEFT_PREFIX ? PREFIX_TUNING : PROMPT_TUNING;
    const PromptConfig *have = model_prompt_config(m);
    if (have) {
        if (have->kind != kind || (a->num_virtual_tokens && a->num_virtual_tokens != have->n_virtual) ||
            (have->projection != 0) != (a->prefix_projection != 0))
            return align_errorf("%s carries %d %s-tuning virtual tokens%s, not what --peft %s%s%s asks",
                                a->resume ? a->resume : "the model", have->n_virtual, prompt_kind_name(have->kind),
                                have->projection ? " (projected)" : "", a->peft,
                                a->num_virtual_tokens ? " --num-virtual-tokens" : "",
                                a->prefix_projection ? " --prefix-projection" : "");
        model_prompt_enable(m, 1);
    } else if (a->lora_adapter) { /* a peft PROMPT_TUNING / PREFIX_TUNING directory to start from */
        if (a->prefix_projection)
            return align_errorf("--lora-adapter %s: a saved prefix is the projection's output; it trains on as a plain "
                                "prefix (drop --prefix-projection)", a->lora_adapter);
        if (peft_prompt_load(a->lora_adapter, m)) return align_error_prefix("--lora-adapter");
        if (model_prompt_config(m)->kind != kind)
            return align_errorf("--lora-adapter %s holds %s tuning, not what --peft %s asks", a->lora_adapter,
                                prompt_kind_name(model_prompt_config(m)->kind), a->peft);
    } else {
        PromptConfig pc = {.kind = kind, .n_virtual = a->num_virtual_tokens ? a->num_virtual_tokens : 20,
                           .seed = (uint64_t)a->seed, .projection = a->prefix_projection};
        int32_t *ids = NULL;
        if (a->prompt_tuning_init_text) {
            if (!policy->tok) return align_errorf("--prompt-tuning-init-text needs the model's tokenizer");
            if (tok_encode(policy->tok, a->prompt_tuning_init_text, strlen(a->prompt_tuning_init_text), 0, &ids,
                           &pc.n_init_tokens))
                return align_error_prefix("--prompt-tuning-init-text");
            pc.init_tokens = ids;
        }
        int rc = model_prompt_attach(m, &pc);
        free(ids);
        if (rc) return align_error_prefix("--peft %s", a->peft);
    }
    if (m->cfg.value_head) model_set_trainable(m, "score.weight", 1); /* a reward model's head trains too */
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += m->info[i].numel;
    fprintf(stderr, "%s: %s tuning%s, %d virtual tokens: %zu trainable parameters (%.2f%% of %zu)\n", prog,
            prompt_kind_name(kind), model_prompt_config(m)->projection ? " (projected)" : "",
            model_prompt_config(m)->n_virtual, model_trainable_elems(m),
            100.0 * model_trainable_elems(m) / (double)total, total);
    return 0;
}

/* --quantize-base's type, refused where the backend cannot run it */
static int parse_quantize_base(const TrainArgs *a, const Backend *be, QuantType *qt) {
    if (quant_parse(a->quantize_base, qt)) return align_error_prefix("--quantize-base");
    /* the CUDA dequantisation kernel knows the GGUF block types only */
    if ((*qt == QUANT_NF4 || *qt == QUANT_FP4) && strcmp(be->name, "cpu"))
        return align_errorf("--quantize-base %s runs on the CPU backend only for now (--device cpu)", a->quantize_base);
    return 0;
}

int trainer_check_quantised_base(const TrainArgs *a, const char *path, const Model *m) {
    int n = 0;
    for (int i = 0; i < m->n_params; i++) n += m->info[i].qtype != QUANT_NONE;
    if (!n || a->quantize_base) return 0; /* --quantize-base asks for LoRA itself */
    int mode = trainer_peft_mode(a);
    /* adapters and virtual tokens leave the base frozen */
    if (mode < 0 || mode == TRAIN_PEFT_LORA || mode == TRAIN_PEFT_PROMPT || mode == TRAIN_PEFT_PREFIX) return mode < 0 ? -1 : 0;
    return align_errorf("%s keeps %d weights quantised as its GPTQ or AWQ checkpoint stores them: they cannot train, so "
                        "train LoRA adapters on it (--lora-rank) or convert it to fp32 first (ckpt_convert %s model.ckpt)",
                        path, n, path);
}

int trainer_load_policy(const TrainArgs *a, const char *model_path, ModelBundle *out, ChatTemplate *tmpl) {
    /* Hand-started ranks meet before anything loads: a rank that then fails
     * to load (a file missing on its host) is seen leaving, with its exit
     * status, by the others at once, instead of never arriving while rank 0
     * waits --dist-timeout for it. (mpirun sees a rank die before MPI_Init
     * itself, so its ranks still meet in trainer_run.) */
    if (a->dist_init) {
        const CliSpec *spec = cli_parsed();
        if (dist_set_rendezvous(a->dist_init, a->rank, a->world_size) ||
            dist_init(spec ? spec->prog : "align", a->dist_timeout))
            return -1;
    }
    const Backend *be = backend_get(a->device);
    if (!be) return -1;
    const char *path = a->resume ? a->resume : model_path;
    if (!path) return align_errorf("no model given");
    QuantType qt = QUANT_NONE;
    if (a->quantize_base && parse_quantize_base(a, be, &qt)) return -1;
    /* quantised tensor by tensor while reading: the fp32 base never exists */
    if (model_load_any_quant(path, be, MODEL_LOAD_TOKENIZER, qt, out)) return -1;
    /* a template align cannot render exactly stops training here, naming --chat-template */
    if (chat_template_choose_for_training(a->chat_template, out->extras.chat_template, out->extras.chat_template_jinja,
                                          tmpl))
        return -1;
    /* The trained model carries the template training rendered with, so
     * transformers and llama.cpp format prompts as training did: align's
     * Jinja for a built-in format (--chat-template may name another format
     * than the model's), the model's own for a model family it renders
     * exactly (none when --chat-template forced a family the model's Jinja
     * is not). */
    const char *name = chat_template_name(*tmpl);
    char *jinja = NULL;
    const char *own = chat_template_own_jinja(*tmpl, out->extras.chat_template_jinja);
    if (own && !(jinja = strdup(own))) return align_errorf("out of memory");
    int rc = ckpt_extras_set(&out->extras.chat_template, name) ||
             ckpt_extras_set(&out->extras.chat_template_jinja, jinja);
    free(jinja);
    return rc ? -1 : 0;
}

/* How many of the model's tensors are held quantised, and their types ("q5_0, q4_k") for the log line. */
static int quantised_types(const Model *m, char *types, size_t size) {
    int kept = 0, seen[8], n_seen = 0;
    types[0] = 0;
    for (int i = 0; i < m->n_params; i++) {
        int t = m->info[i].qtype, dup = 0;
        if (!t) continue;
        kept++;
        for (int k = 0; k < n_seen; k++) dup |= seen[k] == t;
        if (dup || n_seen == 8) continue;
        seen[n_seen++] = t;
        snprintf(types + strlen(types), size - strlen(types), "%s%s", n_seen > 1 ? ", " : "", quant_name((QuantType)t));
    }
    return kept;
}

int trainer_setup_peft(const char *prog, const TrainArgs *a, ModelBundle *policy) {
    Model *m = policy->model;
    int mode = trainer_peft_mode(a);
    if (mode < 0) return -1;
    int want_lora = mode == TRAIN_PEFT_LORA;
    if (trainer_check_quantised_base(a, policy->extras.base_model ? policy->extras.base_model : "the model", m)) return -1;
    if (a->quantize_base && !want_lora)
        return align_errorf("--quantize-base needs LoRA (--lora-rank or --lora-adapter): quantised weights are frozen");
    if (a->quantize_base) {
        QuantType qt;
        if (parse_quantize_base(a, m->be, &qt)) return -1;
        size_t before = model_weight_bytes(m);
        int n = model_quantize_base(m, qt);
        if (n < 0) return -1;
        char types[200];
        int kept = quantised_types(m, types, sizeof types);
        if (n) fprintf(stderr, "%s: base weights: %d tensors quantised (%d newly, %s; held as %s), %.1f MiB -> %.1f MiB\n", prog,
                       kept, n, quant_name(qt), types, before / 1048576.0, model_weight_bytes(m) / 1048576.0);
        else fprintf(stderr, "%s: base weights: %d tensors quantised (%s) while loading, %.1f MiB of weights\n", prog,
                     kept, types, model_weight_bytes(m) / 1048576.0);
    } else {
        /* a GPTQ/AWQ checkpoint's groups, kept as stored: name its types */
        char types[200];
        int kept = quantised_types(m, types, sizeof types);
        if (kept)
            fprintf(stderr, "%s: base weights: %d tensors kept quantised as the checkpoint stores them (%s), %.1f MiB of weights\n",
                    prog, kept, types, model_weight_bytes(m) / 1048576.0);
    }
    if (mode == TRAIN_PEFT_PROMPT || mode == TRAIN_PEFT_PREFIX) return setup_virtual_tokens(prog, a, policy, mode);
    if (m->prompt)
        return align_errorf("the model carries %s-tuning virtual tokens: continue it with --peft %s",
                            prompt_kind_name(model_prompt_config(m)->kind), prompt_kind_name(model_prompt_config(m)->kind));
    if (!want_lora) {
        for (int i = 0; i < policy->extras.n_tensors; i++)
            if (strstr(policy->extras.tensors[i].name, ".lora_A.weight") || strstr(policy->extras.tensors[i].name, ".ia3_l"))
                return align_errorf("%s holds adapters: resume with the same --peft / --lora-* flags", a->resume);
        if (mode != TRAIN_PEFT_FULL) return setup_frozen_base(prog, a, m, mode);
        fprintf(stderr, "%s: full fine-tuning: %zu trainable parameters\n", prog, model_trainable_elems(m));
        return 0;
    }
    if (m->lora) return 0;
    LoraConfig want;
    if (trainer_lora_config(a, &want)) return -1;
    if (a->lora_adapter) {
        if (peft_prompt_is_adapter(a->lora_adapter) == 1)
            return align_errorf("--lora-adapter %s is a prompt- or prefix-tuning adapter: add --peft prompt or --peft prefix",
                                a->lora_adapter);
        if (peft_load_adapter(a->lora_adapter, m, (uint64_t)a->seed)) return -1;
        const LoraConfig *lc = model_lora_config(m);
        /* the directory says which method it holds; a flag naming another is a mistake */
        if ((a->peft || a->use_dora) && lc->method != want.method)
            return align_errorf("--lora-adapter %s holds %s adapters, not the %s that %s asks for", a->lora_adapter,
                                lora_method_name(lc->method), lora_method_name(want.method),
                                a->use_dora ? "--use-dora" : "--peft");
        if (lc->method == LORA_METHOD_IA3) fprintf(stderr, "%s: IA3 adapter %s\n", prog, a->lora_adapter);
        else fprintf(stderr, "%s: %s adapter %s: rank %d, alpha %g\n", prog, lora_method_name(lc->method), a->lora_adapter,
                     lc->rank, lc->alpha);
    } else {
        if (model_lora_attach(m, &want)) return -1;
    }
    if (m->cfg.value_head) model_set_trainable(m, "score.weight", 1); /* a reward model's head trains with the adapters */
    if (a->resume) {
        int n = peft_adapter_from_extras(m, &policy->extras);
        if (n < 0) return -1;
        if (n == 0) return align_errorf("--resume %s: the checkpoint has no %s adapters (it was not trained with them)", a->resume,
                                        lora_method_name(model_lora_config(m)->method));
    }
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += m->info[i].numel;
    fprintf(stderr, "%s: %s: %zu trainable parameters (%.2f%% of %zu)\n", prog, lora_method_name(model_lora_config(m)->method),
            model_trainable_elems(m),
            100.0 * model_trainable_elems(m) / (double)total, total);
    return 0;
}

int trainer_save_model(const char *prog, const TrainArgs *a, ModelBundle *policy, const char *path) {
    Model *m = policy->model;
    if (m->lora) {
        char dir[4096];
        if (a->lora_out) {
            snprintf(dir, sizeof dir, "%s", a->lora_out);
        } else {
            trainer_out_sibling(path, "-adapter", dir, sizeof dir);
        }
        if (peft_save_adapter(dir, m, policy->extras.base_model)) return -1;
        fprintf(stderr, "%s: saved the %s adapter to %s\n", prog, lora_method_name(model_lora_config(m)->method), dir);
    }
    if (m->prompt && m->cfg.value_head) {
        fprintf(stderr, "%s: no peft adapter directory for a reward model's virtual tokens (peft's layout has no place "
                        "for its score head); %s holds both\n", prog, path);
    } else if (m->prompt) {
        char dir[4096];
        if (a->lora_out) snprintf(dir, sizeof dir, "%s", a->lora_out);
        else trainer_out_sibling(path, "-adapter", dir, sizeof dir);
        if (peft_prompt_save(dir, m, policy->extras.base_model)) return -1;
        fprintf(stderr, "%s: saved the %s-tuning adapter to %s\n", prog, prompt_kind_name(model_prompt_config(m)->kind), dir);
    }
    /* trained weights are no longer those of the base they were loaded from */
    ckpt_extras_set(&policy->extras.base_model, NULL);
    if (m->lora || m->qparams) return model_save_merged(path, policy);
    return model_save_any(path, policy);
}

int trainer_load_data(const char *prog, const TrainArgs *a, const char *path, const Tokenizer *tok,
                      ChatTemplate tmpl, DsKind kind, Dataset *out) {
    DsOptions o;
    ds_options_default(&o);
    o.kind = kind;
    o.chat_template = tmpl;
    o.max_length = a->max_length;
    o.skip_bad = a->skip_bad;
    o.sheet = path == a->eval_data ? a->eval_sheet : a->sheet;
    o.last_turn_only = a->last_turn_only;
    if (ds_load(path, tok, &o, out)) return -1;
    if (path != a->eval_data) job_agree_note_data(out); /* the ranks compare what they train on */
    if (dist_rank() != 0) return 0; /* every rank loads the same data: say it once */
    fprintf(stderr, "%s: %s: %zu examples", prog, path, out->n);
    if (out->n_truncated) fprintf(stderr, ", %zu cut to --max-length %d", out->n_truncated, a->max_length);
    if (out->n_dropped) fprintf(stderr, ", %zu dropped as too long", out->n_dropped);
    if (out->n_bad) fprintf(stderr, ", %zu bad records skipped (first: %s)", out->n_bad, out->first_bad);
    fputc('\n', stderr);
    return 0;
}

void trainer_epoch_order(int seed, int epoch, int n, int32_t *order) {
    Rng r;
    rng_seed(&r, (uint64_t)(uint32_t)seed * 0x9E3779B97F4A7C15ULL + (uint64_t)epoch);
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)rng_below(&r, (uint64_t)i + 1);
        int32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

/* "<out without .ckpt>-step<N>.ckpt" */
static void checkpoint_path(const char *out, long step, char *buf, size_t n) {
    size_t len = strlen(out);
    while (len > 1 && out[len - 1] == '/') len--;
    if (len > 5 && !strncmp(out + len - 5, ".ckpt", 5)) len -= 5;
    snprintf(buf, n, "%.*s-step%ld.ckpt", (int)len, out, step);
}

/* The step checkpoints written so far, oldest first, so that only the
 * newest `limit` stay on disk (--save-total-limit; 0 keeps all). Resuming
 * starts a fresh list: checkpoints of the earlier run stay. */
typedef struct {
    int limit, n;
    char **paths;
} CkptRing;

static void ckpt_ring_push(CkptRing *r, const char *path) {
    if (r->n && !strcmp(r->paths[r->n - 1], path)) return; /* the same step saved twice (Ctrl-C on a save step) */
    char **grown = realloc(r->paths, (r->n + 1) * sizeof *grown);
    char *copy = strdup(path);
    if (!grown || !copy) { /* keeping a file too many is the safe failure */
        if (grown) r->paths = grown;
        free(copy);
        return;
    }
    r->paths = grown;
    r->paths[r->n++] = copy;
    while (r->limit > 0 && r->n > r->limit) {
        unlink(r->paths[0]);
        free(r->paths[0]);
        memmove(r->paths, r->paths + 1, (r->n - 1) * sizeof *r->paths);
        r->n--;
    }
}

static void ckpt_ring_free(CkptRing *r) {
    for (int i = 0; i < r->n; i++) free(r->paths[i]);
    free(r->paths);
    r->paths = NULL;
    r->n = 0;
}

typedef struct {
    long step, total_steps;
    int epoch, cursor;
} TrainPos;

static char *train_state_json(const char *prog, const TrainArgs *a, const TrainPos *p) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "program", prog);
    cJSON_AddNumberToObject(o, "step", (double)p->step);
    cJSON_AddNumberToObject(o, "total_steps", (double)p->total_steps);
    cJSON_AddNumberToObject(o, "epoch", p->epoch);
    cJSON_AddNumberToObject(o, "cursor", p->cursor);
    cJSON_AddNumberToObject(o, "seed", a->seed);
    cJSON_AddNumberToObject(o, "lr", a->lr);
    cJSON_AddNumberToObject(o, "batch_size", a->batch_size);
    cJSON_AddNumberToObject(o, "grad_accum", a->grad_accum);
    cJSON_AddStringToObject(o, "lr_schedule", a->lr_schedule);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static int parse_train_state(const char *json, const char *path, TrainPos *p) {
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    cJSON *step = cJSON_GetObjectItem(o, "step"), *epoch = cJSON_GetObjectItem(o, "epoch"),
          *cursor = cJSON_GetObjectItem(o, "cursor");
    if (!cJSON_IsNumber(step) || !cJSON_IsNumber(epoch) || !cJSON_IsNumber(cursor)) {
        cJSON_Delete(o);
        return align_errorf("--resume %s: no training state in this checkpoint (was it written by --save-every or Ctrl-C?)", path);
    }
    p->step = (long)step->valuedouble;
    p->epoch = (int)epoch->valuedouble;
    p->cursor = (int)cursor->valuedouble;
    cJSON_Delete(o);
    return 0;
}

/* Each rank's slice [lo, hi) of the flat gradient buffer under ZeRO-1:
 * counts and displacements in floats, for MPI_Gatherv/Allgatherv. */
typedef struct {
    int world;
    size_t *count, *displ; /* [world] each */
} Shards;

static int shards_make(Shards *s, size_t n, int world) {
    s->world = world;
    s->count = malloc(2 * (size_t)world * sizeof(size_t));
    if (!s->count) return align_errorf("out of memory");
    s->displ = s->count + world;
    for (int r = 0; r < world; r++) {
        s->displ[r] = n * r / world;
        s->count[r] = n * (r + 1) / world - s->displ[r];
    }
    return 0;
}

/* After each rank updated its slice of the parameters: share them. The
 * trainable tensors' parameters lie in runs that are contiguous both in
 * Model.params and in the gradient buffer (all of them, in a full
 * fine-tune); each run is one in-place MPI_Allgatherv, so no staging copy
 * of the parameters ever exists. */
static int allgather_params(Model *m, const Shards *sh) {
    size_t *cnt = malloc(2 * (size_t)sh->world * sizeof(size_t));
    if (!cnt) return align_errorf("out of memory");
    size_t *dsp = cnt + sh->world;
    int rc = 0;
    for (int i = 0; i < m->n_params && rc == 0;) {
        if (m->info[i].grad_offset < 0) {
            i++;
            continue;
        }
        size_t g0 = (size_t)m->info[i].grad_offset, g1 = g0 + m->info[i].numel, p0 = m->info[i].offset;
        int j = i + 1;
        while (j < m->n_params && m->info[j].grad_offset >= 0 && (size_t)m->info[j].grad_offset == g1 &&
               m->info[j].offset == p0 + (g1 - g0)) {
            g1 += m->info[j].numel;
            j++;
        }
        for (int r = 0; r < sh->world; r++) {
            size_t lo = sh->displ[r], hi = lo + sh->count[r];
            size_t from = lo > g0 ? lo : g0, to = hi < g1 ? hi : g1;
            cnt[r] = from < to ? to - from : 0;
            dsp[r] = from < to ? from - g0 : 0;
        }
        rc = dist_allgatherv(m->params + p0, cnt, dsp);
        i = j;
    }
    free(cnt);
    return rc;
}

/* A resumable checkpoint: weights, moments, train state. Every rank calls
 * it (ZeRO-1 gathers the moments' slices to rank 0); rank 0 writes. */
static int save_checkpoint(const char *prog, const TrainArgs *a, ModelBundle *policy, Optimizer *o,
                           const Shards *sh, const TrainPos *p, const char *path) {
    Model *m = policy->model;
    size_t n = m->n_grad_elems;
    int rank = dist_rank();
    float *m1 = NULL, *m2 = NULL;
    if (rank == 0 || !sh) {
        m1 = malloc(n * sizeof(float) + 1), m2 = malloc(n * sizeof(float) + 1);
        if (!m1 || !m2) {
            free(m1), free(m2);
            return align_errorf("out of memory saving a checkpoint");
        }
    }
    if (sh) {
        if (dist_gatherv(o->m, m1, sh->count, sh->displ, 0) || dist_gatherv(o->v, m2, sh->count, sh->displ, 0)) {
            free(m1), free(m2);
            return -1;
        }
    } else if (n && m1) {
        m->be->to_host(m1, o->m, n * sizeof(float));
        m->be->to_host(m2, o->v, n * sizeof(float));
    }
    if (rank != 0) return 0;
    CkptExtras ex;
    ckpt_extras_init(&ex);
    char *state = train_state_json(prog, a, p);
    int rc = ckpt_extras_set(&ex.tokenizer_json, policy->extras.tokenizer_json) ||
             ckpt_extras_set(&ex.chat_template, policy->extras.chat_template) ||
             ckpt_extras_set(&ex.chat_template_jinja, policy->extras.chat_template_jinja) ||
             ckpt_extras_set(&ex.train_state, state) || ckpt_extras_add_moments(&ex, m, m1, m2) ||
             /* LoRA leaves the base as loaded: --resume still knows it */
             (m->lora && ckpt_extras_set(&ex.base_model, policy->extras.base_model)) ||
             ckpt_save(path, m, &ex);
    free(state);
    ckpt_extras_free(&ex);
    free(m1), free(m2);
    return rc ? -1 : 0;
}

/* The checkpoint's moments, or this rank's slice of them: the checkpoint
 * holds them whole, so any number of ranks can resume from it. */
static int restore_moments(ModelBundle *policy, Optimizer *o) {
    Model *m = policy->model;
    size_t n = m->n_grad_elems, k = o->shard_hi - o->shard_lo;
    if (!n) return 0;
    float *m1 = malloc(n * sizeof(float)), *m2 = malloc(n * sizeof(float));
    if (!m1 || !m2) {
        free(m1), free(m2);
        return align_errorf("out of memory restoring optimizer moments");
    }
    int rc = ckpt_extras_get_moments(&policy->extras, m, m1, m2);
    if (rc == 0 && k) {
        m->be->to_device(o->m, m1 + o->shard_lo, k * sizeof(float));
        m->be->to_device(o->v, m2 + o->shard_lo, k * sizeof(float));
    }
    free(m1), free(m2);
    return rc;
}

/* A rank's share of a micro-batch's loss: its shard's weight over the
 * whole micro-batch's (every rank knows the whole micro-batch). */
static double shard_share(const TrainTask *task, const int32_t *idx, int n, int lo, int hi) {
    if (!task->weight) return (double)(hi - lo) / n;
    double all = task->weight(task->ctx, idx, n);
    if (!(all > 0)) return (double)(hi - lo) / n;
    return hi > lo ? task->weight(task->ctx, idx + lo, hi - lo) / all : 0.0;
}

int trainer_run(const char *prog, const TrainArgs *a, ModelBundle *policy, TrainTask *task) {
    Model *m = policy->model;
    if (task->n_train <= 0) return align_errorf("no training examples");
    if (a->batch_size <= 0 || a->grad_accum <= 0) return align_errorf("--batch-size and --grad-accum must be positive");
    if (trainer_check_args(a)) return -1;
    if (dist_init(prog, a->dist_timeout)) return -1;
    int rank = dist_rank(), world = dist_size();
    /* a rank given other flags, data or weights would train another model
     * silently (or end early and hang the others): refused, naming it */
    if (world > 1 && job_agree_check(prog, m, task->n_train)) dist_abort(align_error(), 1);
    /* Under a launcher the GPU's gradients are summed by NCCL, whatever the
     * world size (mpirun -np 1 runs that path alone: tests/gpu/check.sh). */
    int nccl = dist_launched() && a->device && strcmp(a->device, "cpu");
    if (nccl && a->zero_stage == 1 && world > 1)
        return align_errorf("--zero-stage 1 on --device %s: the sharded optimizer runs on the CPU for now; use --zero-stage 0 "
                            "(plain data parallelism, gradients summed by NCCL)", a->device);
    if (nccl && dist_nccl_init()) return -1;
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = a->lr;
    oc.weight_decay = a->weight_decay;
    oc.max_grad_norm = a->max_grad_norm;
    oc.beta1 = a->adam_beta1;
    oc.beta2 = a->adam_beta2;
    oc.eps = a->adam_epsilon;
    oc.warmup_steps = a->warmup_steps;
    if (optim_parse_schedule(a->lr_schedule, &oc.schedule)) return -1;
    long per_step = (long)a->batch_size * a->grad_accum;
    long steps_per_epoch = (task->n_train + per_step - 1) / per_step;
    TrainPos p = {0};
    p.total_steps = a->max_steps > 0 ? a->max_steps : steps_per_epoch * (a->epochs > 0 ? a->epochs : 1);
    oc.total_steps = (int)p.total_steps;
    if (model_ensure_grads(m)) return -1;
    Shards shards = {0}, *sh = NULL;
    if (world > 1 && a->zero_stage == 1) {
        if (shards_make(&shards, m->n_grad_elems, world)) return -1;
        sh = &shards;
    }
    Optimizer *o = sh ? optim_create_shard(m, &oc, sh->displ[rank], sh->displ[rank] + sh->count[rank])
                      : optim_create(m, &oc);
    if (!o) {
        free(shards.count);
        return -1;
    }
    if (world > 1 && rank == 0) {
        double full = 2.0 * m->n_grad_elems * sizeof(float) / 1048576.0;
        double mine = 2.0 * (o->shard_hi - o->shard_lo) * sizeof(float) / 1048576.0;
        fprintf(stderr, "%s: %d ranks (data parallel), %d examples per rank per micro-batch; ZeRO-%d: AdamW moments %.1f MiB per rank (%.1f MiB unsharded)\n",
                prog, world, (a->batch_size + world - 1) / world, sh ? 1 : 0, mine, full);
    }
    /* Overlap the last micro-batch's gradient sum with its backward (CPU
     * ranks; NCCL sums after the backward's kernels) when the task and the
     * gradient layout allow; otherwise one all-reduce after the backward. */
    GradOverlap ov = {0};
    int overlap = 0;
    if (world > 1 && !nccl && a->dist_overlap && m->n_grad_elems) {
        const char *why = NULL;
        overlap = task->one_backward ? grad_overlap_plan(&ov, m, &why) : 0;
        if (!task->one_backward) why = "the task may run more than one backward per micro-batch";
        if (overlap < 0) {
            optim_free(o);
            free(shards.count);
            return -1;
        }
        if (rank == 0 && overlap) {
            int nb = 0;
            for (int l = 0; l < ov.n_layers; l++) nb += ov.hi[l] > ov.lo[l];
            fprintf(stderr, "%s: gradient sums overlap the backward pass: %d layer buckets, the rest after it\n", prog, nb);
        } else if (rank == 0) {
            fprintf(stderr, "%s: gradient sums after the backward pass (%s)\n", prog, why);
        }
    } else if (world > 1 && rank == 0 && !nccl && m->n_grad_elems) {
        fprintf(stderr, "%s: gradient sums after the backward pass (--dist-overlap 0)\n", prog);
    }
    int rc = -1;
    int32_t *order = malloc(task->n_train * sizeof(int32_t)), *idx = malloc(a->batch_size * sizeof(int32_t));
    MetricsLog log;
    memset(&log, 0, sizeof log);
    CkptRing ring = {.limit = a->save_total_limit};
    struct sigaction sa = {0}, old_int, old_term;
    if (!order || !idx) {
        align_errorf("out of memory");
        goto done;
    }
    if (a->resume) {
        if (parse_train_state(policy->extras.train_state, a->resume, &p) || restore_moments(policy, o)) goto done;
        o->step = p.step;
        dist_set_resume_hint(a->resume);
        if (rank == 0)
            fprintf(stderr, "%s: resuming from %s at step %ld (epoch %d, example %d)\n", prog, a->resume, p.step, p.epoch, p.cursor);
    }
    if (rank == 0) {
        if (trainer_metrics_open(prog, a, &log)) goto done;
        log.print_every = a->logging_steps > 0 ? a->logging_steps : 10;
    }
    trainer_epoch_order(a->seed, p.epoch, task->n_train, order);
    interrupted = 0;
    /* under mpirun, dist.h owns SIGINT/SIGTERM: mpirun stops the whole job */
    sa.sa_handler = on_signal;
    if (world == 1) {
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    }
    model_zero_grad(m);
    if (rank == 0) metrics_log_begin(&log, p.step, p.total_steps);
    dist_take_comm_time();
    while (p.step < p.total_steps) {
        Metrics acc;
        metrics_clear(&acc);
        double t0 = align_now();
        long tokens = 0;
        for (int micro = 0; micro < a->grad_accum; micro++) {
            if (p.cursor >= task->n_train) { /* next epoch, next permutation */
                p.epoch++;
                p.cursor = 0;
                trainer_epoch_order(a->seed, p.epoch, task->n_train, order);
            }
            int n = task->n_train - p.cursor < a->batch_size ? task->n_train - p.cursor : a->batch_size;
            memcpy(idx, order + p.cursor, n * sizeof(int32_t));
            p.cursor += n;
            /* this rank's contiguous shard of the global micro-batch */
            int lo = (int)((long)n * rank / world), hi = (int)((long)n * (rank + 1) / world);
            float scale = world == 1 ? 1.0f / a->grad_accum : (float)(shard_share(task, idx, n, lo, hi) / a->grad_accum);
            if (hi == lo) continue; /* fewer examples than ranks: this one adds nothing */
            /* dropout masks keyed by the micro-step, so --resume draws the same ones */
            task->micro_key = (long)p.step * a->grad_accum + micro;
            model_lora_train_mode(m, 1, (uint64_t)task->micro_key);
            /* earlier micro-batches only accumulate: the sum starts with the last */
            if (overlap && micro == a->grad_accum - 1) grad_overlap_arm(&ov);
            long t = task->micro_step(task->ctx, idx + lo, hi - lo, scale, &acc);
            if (overlap) grad_overlap_disarm(&ov);
            model_lora_train_mode(m, 0, 0);
            if (t < 0) goto restore;
            tokens += t;
        }
        if (world > 1 || nccl) {
            /* the shards' losses were scaled by their share, so the sum is
             * the whole batch's gradient */
            double tok = (double)tokens;
            int summed = !m->n_grad_elems ? 0
                       : nccl    ? dist_nccl_allreduce_sum(m->grads, m->n_grad_elems)
                       : overlap ? grad_overlap_finish(&ov) /* what the backward did not start, then wait */
                                 : dist_allreduce_sum(m->grads, m->n_grad_elems);
            if (summed || dist_merge_metrics(&acc) || dist_allreduce_sum_double(&tok, 1)) goto restore;
            tokens = (long)tok;
        }
        /* One non-finite step would make every weight NaN: stop before the
         * update, so the last checkpoint written stays the last good one. */
        double gnorm = optim_grad_norm(o), loss = metrics_get(&acc, "loss", 0);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            double bad = isfinite(loss) ? gnorm : loss;
            align_errorf("step %ld: the %s is %s; stopped before updating the weights and saved nothing "
                         "(lower --lr or --max-grad-norm, or look for bad records)",
                         p.step + 1, isfinite(loss) ? "gradient norm" : "loss", isnan(bad) ? "NaN" : bad > 0 ? "+Inf" : "-Inf");
            goto restore;
        }
        float lr;
        optim_step_with_norm(o, gnorm, &lr);
        if (sh && allgather_params(m, sh)) goto restore;
        p.step++;
        double dt = align_now() - t0;
        metrics_set(&acc, "lr", lr);
        metrics_set(&acc, "learning_rate", lr); /* TRL's key, for TRL's plotting scripts */
        metrics_set(&acc, "grad_norm", gnorm);
        metrics_set(&acc, "tokens_per_s", dt > 0 ? tokens / dt : 0);
        metrics_set(&acc, "step_time_s", dt);
        if (world > 1) metrics_set(&acc, "comm_time_s", dist_take_comm_time()); /* rank 0's wait in collectives */
        double epoch = p.epoch + (double)p.cursor / task->n_train;
        if (rank == 0 && metrics_log_step(&log, p.step, p.total_steps, epoch, &acc, task->shown)) goto restore;
        if (rank == 0 && task->evaluate && a->eval_every > 0 && p.step % a->eval_every == 0 && p.step < p.total_steps) {
            Metrics ev;
            metrics_clear(&ev);
            if (task->evaluate(task->ctx, &ev) || metrics_log_eval(&log, p.step, &ev)) goto restore;
        }
        int periodic = a->save_every > 0 && p.step % a->save_every == 0 && p.step < p.total_steps;
        if (periodic || interrupted) {
            char path[4096];
            checkpoint_path(a->out, p.step, path, sizeof path);
            if (save_checkpoint(prog, a, policy, o, sh, &p, path)) goto restore;
            /* the fault message may name it once it is whole on disk */
            if (world > 1 && dist_barrier()) goto restore;
            dist_set_resume_hint(path);
            if (rank == 0) ckpt_ring_push(&ring, path);
            if (interrupted) {
                fprintf(stderr, "\n%s: interrupted at step %ld; saved %s (continue with --resume %s)\n", prog, p.step, path, path);
                rc = 1;
                goto restore;
            }
        }
    }
    if (rank == 0 && task->evaluate) {
        Metrics ev;
        metrics_clear(&ev);
        if (task->evaluate(task->ctx, &ev) || metrics_log_eval(&log, p.step, &ev)) goto restore;
    }
    if (rank == 0) {
        char *state = train_state_json(prog, a, &p);
        ckpt_extras_set(&policy->extras.train_state, state);
        free(state);
        /* the final model carries no optimizer moments: it is for use, and
         * the periodic checkpoints are for resuming */
        for (int i = 0; i < policy->extras.n_tensors; i++)
            if (policy->extras.tensors[i].owned) free(policy->extras.tensors[i].data);
        for (int i = 0; i < policy->extras.n_tensors; i++) free(policy->extras.tensors[i].name);
        free(policy->extras.tensors);
        policy->extras.tensors = NULL;
        policy->extras.n_tensors = 0;
        if (trainer_save_model(prog, a, policy, a->out)) goto restore;
        fprintf(stderr, "%s: saved %s after %ld steps\n", prog, a->out, p.step);
    }
    rc = 0;
restore:
    if (world == 1) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
done:
    ckpt_ring_free(&ring);
    metrics_log_close(&log);
    if (rc >= 0 && rank == 0) trainer_write_report(prog, a); /* finished or interrupted: the curves so far */
    if (overlap && rank == 0 && rc >= 0)
        fprintf(stderr, "%s: %ld of %ld gradient buckets were started during the backward pass\n", prog,
                ov.started_early, ov.started);
    grad_overlap_free(&ov);
    if (world > 1) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            fprintf(stderr, "%s: rank %d of %d: peak memory %.1f MiB\n", prog, rank, world, ru.ru_maxrss / 1024.0);
    }
    free(order), free(idx);
    optim_free(o);
    free(shards.count);
    if (nccl) dist_nccl_finalize();
    /* one rank's failure is the job's: the others wait in a collective */
    if (rc < 0 && world > 1) dist_abort(align_error(), 1);
    return rc;
}
