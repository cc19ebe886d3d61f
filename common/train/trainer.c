#include "trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "optim.h"
#include "peft.h"
#include "rng.h"
#include "util.h"

void train_args_defaults(TrainArgs *a) {
    memset(a, 0, sizeof *a);
    a->lr = 5e-7f; /* TRL's DPOConfig default; programs override (sft: 2e-5) */
    a->weight_decay = 0.0f;
    a->max_grad_norm = 1.0f;
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
}

int train_args_flags(TrainArgs *a, CliFlag *f) {
    CliFlag shared[TRAIN_ARGS_N_FLAGS] = {
        {"lr", CLI_FLOAT, &a->lr, "peak learning rate", CLI_NONNEG},
        {"batch-size", CLI_INT, &a->batch_size, "examples per micro-batch (one packed forward)", CLI_AT_LEAST_1},
        {"grad-accum", CLI_INT, &a->grad_accum, "micro-batches per optimizer step", CLI_AT_LEAST_1},
        {"epochs", CLI_INT, &a->epochs, "passes over the training data", CLI_AT_LEAST_1},
        {"max-steps", CLI_INT, &a->max_steps, "optimizer steps, overriding --epochs (-1 = as many as --epochs give)", CLI_UNSET_OR_POSITIVE},
        {"warmup-steps", CLI_INT, &a->warmup_steps, "linear LR warmup steps", CLI_NONNEG},
        {"lr-schedule", CLI_STRING, &a->lr_schedule, "constant, linear or cosine"},
        {"weight-decay", CLI_FLOAT, &a->weight_decay, "AdamW decoupled weight decay (not on biases and norms)", CLI_NONNEG},
        {"max-grad-norm", CLI_FLOAT, &a->max_grad_norm, "clip gradients to this global norm (0 = off)", CLI_NONNEG},
        {"eval-data", CLI_STRING, &a->eval_data, "held-out data for evaluation"},
        {"eval-every", CLI_INT, &a->eval_every, "evaluate every N steps (0 = at the end only)", CLI_NONNEG},
        {"save-every", CLI_INT, &a->save_every, "checkpoint every N steps (0 = off)", CLI_NONNEG},
        {"resume", CLI_STRING, &a->resume, "continue from a checkpoint written by --save-every or Ctrl-C"},
        {"metrics", CLI_STRING, &a->metrics, "write one JSON object per step to this .jsonl file"},
        {"out", CLI_STRING, &a->out, "where to write the trained model (.ckpt or a directory for Hugging Face)"},
        {"seed", CLI_INT, &a->seed, "seed for the data order (and anything random)", CLI_ANY},
        {"device", CLI_STRING, &a->device, "cpu or cuda"},
        {"max-length", CLI_INT, &a->max_length, "longest prompt + completion in tokens (0 = no limit)", CLI_NONNEG},
        {"chat-template", CLI_STRING, &a->chat_template, "chatml, llama3, hh or none (default: the model's own)"},
        {"skip-bad", CLI_BOOL, &a->skip_bad, "skip malformed records (counted) instead of stopping"},
        {"last-turn-only", CLI_BOOL, &a->last_turn_only, "SFT {messages}: train only the last assistant turn (default: every assistant turn, as TRL's assistant_only_loss)"},
        {"lora-rank", CLI_INT, &a->lora_rank, "train LoRA adapters of this rank on a frozen base (0 = full fine-tuning)", CLI_NONNEG},
        {"lora-alpha", CLI_FLOAT, &a->lora_alpha, "LoRA scale numerator: updates are scaled by alpha/rank (default, or -1: 2*rank)", CLI_UNSET_OR_POSITIVE},
        {"lora-dropout", CLI_FLOAT, &a->lora_dropout, "dropout on the adapters' input while training, in [0, 1)", CLI_UNIT_OPEN},
        {"lora-targets", CLI_STRING, &a->lora_targets, "modules to adapt: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (GPT-2: c_attn,c_proj,c_fc); default all"},
        {"lora-adapter", CLI_STRING, &a->lora_adapter, "start from a peft adapter directory (adapter_config.json + adapter_model.safetensors)"},
        {"lora-out", CLI_STRING, &a->lora_out, "directory for the trained adapter alone, peft layout (default <out>-adapter)"},
        {"quantize-base", CLI_STRING, &a->quantize_base, "keep the frozen base quantised: q4_0, q4_1 or q8_0 (GGUF Q4_0/Q4_1/Q8_0 tensors are kept as stored); needs LoRA"},
    };
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
    if (has_suffix(a->out, ".gguf")) return align_errorf("--out %s: writing GGUF is not supported (use .ckpt or a directory)", a->out);
    if (check_writable("--out", a->out, !has_suffix(a->out, ".ckpt"))) return -1;
    if (a->lora_out && (a->lora_rank > 0 || a->lora_adapter) && check_writable("--lora-out", a->lora_out, 1)) return -1;
    if (a->eval_every > 0 && !a->eval_data)
        return align_errorf("--eval-every %d needs --eval-data (the held-out set to evaluate)", a->eval_every);
    return 0;
}

int trainer_load_policy(const TrainArgs *a, const char *model_path, ModelBundle *out, ChatTemplate *tmpl) {
    const Backend *be = backend_get(a->device);
    if (!be) return -1;
    const char *path = a->resume ? a->resume : model_path;
    if (!path) return align_errorf("no model given");
    size_t len = strlen(path);
    if (a->quantize_base && len > 5 && !strcmp(path + len - 5, ".gguf")) {
        QuantType qt;
        if (quant_parse(a->quantize_base, &qt)) return align_error_prefix("--quantize-base");
        if (gguf_import_quant(path, be, qt, out)) return -1; /* the fp32 base never exists */
    } else if (model_load_any(path, be, MODEL_LOAD_TOKENIZER, out)) {
        return -1;
    }
    return chat_template_choose(a->chat_template, out->extras.chat_template, out->extras.chat_template_jinja, tmpl) < 0
               ? -1 : 0;
}

int trainer_setup_peft(const char *prog, const TrainArgs *a, ModelBundle *policy) {
    Model *m = policy->model;
    int want_lora = a->lora_rank > 0 || a->lora_adapter;
    if (a->quantize_base && !want_lora)
        return align_errorf("--quantize-base needs LoRA (--lora-rank or --lora-adapter): quantised weights are frozen");
    if (a->quantize_base) {
        QuantType qt;
        if (quant_parse(a->quantize_base, &qt)) return align_error_prefix("--quantize-base");
        size_t before = model_weight_bytes(m);
        int n = model_quantize_base(m, qt);
        if (n < 0) return -1;
        int kept = 0;
        for (int i = 0; i < m->n_params; i++) kept += m->info[i].qtype != QUANT_NONE;
        fprintf(stderr, "%s: base weights: %d tensors quantised (%d newly, %s), %.1f MiB -> %.1f MiB\n", prog, kept, n,
                quant_name(qt), before / 1048576.0, model_weight_bytes(m) / 1048576.0);
    }
    if (!want_lora) {
        for (int i = 0; i < policy->extras.n_tensors; i++)
            if (strstr(policy->extras.tensors[i].name, ".lora_A.weight"))
                return align_errorf("%s holds LoRA adapters: resume with the same --lora-* flags", a->resume);
        return 0;
    }
    if (m->lora) return 0;
    if (a->lora_adapter) {
        if (peft_load_adapter(a->lora_adapter, m, (uint64_t)a->seed)) return -1;
        const LoraConfig *lc = model_lora_config(m);
        fprintf(stderr, "%s: LoRA adapter %s: rank %d, alpha %g\n", prog, a->lora_adapter, lc->rank, lc->alpha);
    } else {
        LoraConfig lc;
        lora_config_defaults(&lc);
        lc.rank = a->lora_rank;
        lc.alpha = a->lora_alpha > 0 ? a->lora_alpha : 2.0f * a->lora_rank;
        lc.dropout = a->lora_dropout;
        lc.seed = (uint64_t)a->seed;
        if (a->lora_targets && lora_parse_targets(a->lora_targets, &lc.targets)) return align_error_prefix("--lora-targets");
        if (model_lora_attach(m, &lc)) return -1;
    }
    if (m->cfg.value_head) model_set_trainable(m, "score.weight", 1); /* a reward model's head trains with the adapters */
    if (a->resume) {
        int n = peft_adapter_from_extras(m, &policy->extras);
        if (n < 0) return -1;
        if (n == 0) return align_errorf("--resume %s: the checkpoint has no LoRA adapters (it was not trained with LoRA)", a->resume);
    }
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += m->info[i].numel;
    fprintf(stderr, "%s: LoRA: %zu trainable parameters (%.2f%% of %zu)\n", prog, model_trainable_elems(m),
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
            size_t len = strlen(path);
            while (len > 1 && path[len - 1] == '/') len--;
            if (len > 5 && !strncmp(path + len - 5, ".ckpt", 5)) len -= 5;
            snprintf(dir, sizeof dir, "%.*s-adapter", (int)len, path);
        }
        if (peft_save_adapter(dir, m, NULL)) return -1;
        fprintf(stderr, "%s: saved the LoRA adapter to %s\n", prog, dir);
    }
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
    o.last_turn_only = a->last_turn_only;
    if (ds_load(path, tok, &o, out)) return -1;
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

typedef struct {
    long step, total_steps;
    int epoch, cursor;
} Progress;

static char *train_state_json(const char *prog, const TrainArgs *a, const Progress *p) {
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

static int parse_train_state(const char *json, const char *path, Progress *p) {
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

/* A resumable checkpoint: weights, moments, train state. */
static int save_checkpoint(const char *prog, const TrainArgs *a, ModelBundle *policy, Optimizer *o,
                           const Progress *p, const char *path) {
    Model *m = policy->model;
    size_t n = m->n_grad_elems;
    float *m1 = malloc(n * sizeof(float) + 1), *m2 = malloc(n * sizeof(float) + 1);
    if (!m1 || !m2) {
        free(m1), free(m2);
        return align_errorf("out of memory saving a checkpoint");
    }
    if (n) {
        m->be->to_host(m1, o->m, n * sizeof(float));
        m->be->to_host(m2, o->v, n * sizeof(float));
    }
    CkptExtras ex;
    ckpt_extras_init(&ex);
    char *state = train_state_json(prog, a, p);
    int rc = ckpt_extras_set(&ex.tokenizer_json, policy->extras.tokenizer_json) ||
             ckpt_extras_set(&ex.chat_template, policy->extras.chat_template) ||
             ckpt_extras_set(&ex.chat_template_jinja, policy->extras.chat_template_jinja) ||
             ckpt_extras_set(&ex.train_state, state) || ckpt_extras_add_moments(&ex, m, m1, m2) ||
             ckpt_save(path, m, &ex);
    free(state);
    ckpt_extras_free(&ex);
    free(m1), free(m2);
    return rc ? -1 : 0;
}

static int restore_moments(ModelBundle *policy, Optimizer *o) {
    Model *m = policy->model;
    size_t n = m->n_grad_elems;
    if (!n) return 0;
    float *m1 = malloc(n * sizeof(float)), *m2 = malloc(n * sizeof(float));
    if (!m1 || !m2) {
        free(m1), free(m2);
        return align_errorf("out of memory restoring optimizer moments");
    }
    int rc = ckpt_extras_get_moments(&policy->extras, m, m1, m2);
    if (rc == 0) {
        m->be->to_device(o->m, m1, n * sizeof(float));
        m->be->to_device(o->v, m2, n * sizeof(float));
    }
    free(m1), free(m2);
    return rc;
}

int trainer_run(const char *prog, const TrainArgs *a, ModelBundle *policy, TrainTask *task) {
    Model *m = policy->model;
    if (task->n_train <= 0) return align_errorf("no training examples");
    if (a->batch_size <= 0 || a->grad_accum <= 0) return align_errorf("--batch-size and --grad-accum must be positive");
    if (trainer_check_args(a)) return -1;
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = a->lr;
    oc.weight_decay = a->weight_decay;
    oc.max_grad_norm = a->max_grad_norm;
    oc.warmup_steps = a->warmup_steps;
    if (optim_parse_schedule(a->lr_schedule, &oc.schedule)) return -1;
    long per_step = (long)a->batch_size * a->grad_accum;
    long steps_per_epoch = (task->n_train + per_step - 1) / per_step;
    Progress p = {0};
    p.total_steps = a->max_steps > 0 ? a->max_steps : steps_per_epoch * (a->epochs > 0 ? a->epochs : 1);
    oc.total_steps = (int)p.total_steps;
    Optimizer *o = optim_create(m, &oc);
    if (!o) return -1;
    int rc = -1;
    int32_t *order = malloc(task->n_train * sizeof(int32_t)), *idx = malloc(a->batch_size * sizeof(int32_t));
    MetricsLog log;
    memset(&log, 0, sizeof log);
    if (!order || !idx) {
        align_errorf("out of memory");
        goto done;
    }
    if (a->resume) {
        if (parse_train_state(policy->extras.train_state, a->resume, &p) || restore_moments(policy, o)) goto done;
        o->step = p.step;
        fprintf(stderr, "%s: resuming from %s at step %ld (epoch %d, example %d)\n", prog, a->resume, p.step, p.epoch, p.cursor);
    }
    if (metrics_log_open(&log, prog, a->metrics, a->resume != NULL)) goto done;
    trainer_epoch_order(a->seed, p.epoch, task->n_train, order);
    interrupted = 0;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    char last_ckpt[4096] = "";
    model_zero_grad(m);
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
            /* dropout masks keyed by the micro-step, so --resume draws the same ones */
            model_lora_train_mode(m, 1, (uint64_t)p.step * a->grad_accum + micro);
            long t = task->micro_step(task->ctx, idx, n, 1.0f / a->grad_accum, &acc);
            model_lora_train_mode(m, 0, 0);
            if (t < 0) goto restore;
            tokens += t;
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
        p.step++;
        double dt = align_now() - t0;
        metrics_set(&acc, "lr", lr);
        metrics_set(&acc, "grad_norm", gnorm);
        metrics_set(&acc, "tokens_per_s", dt > 0 ? tokens / dt : 0);
        metrics_set(&acc, "step_time_s", dt);
        double epoch = p.epoch + (double)p.cursor / task->n_train;
        if (metrics_log_step(&log, p.step, p.total_steps, epoch, &acc, task->shown)) goto restore;
        if (task->evaluate && a->eval_every > 0 && p.step % a->eval_every == 0 && p.step < p.total_steps) {
            Metrics ev;
            metrics_clear(&ev);
            if (task->evaluate(task->ctx, &ev) || metrics_log_eval(&log, p.step, &ev)) goto restore;
        }
        int periodic = a->save_every > 0 && p.step % a->save_every == 0 && p.step < p.total_steps;
        if (periodic || interrupted) {
            char path[4096];
            checkpoint_path(a->out, p.step, path, sizeof path);
            if (save_checkpoint(prog, a, policy, o, &p, path)) goto restore;
            if (last_ckpt[0] && strcmp(last_ckpt, path)) unlink(last_ckpt); /* keep only the newest */
            snprintf(last_ckpt, sizeof last_ckpt, "%s", path);
            if (interrupted) {
                fprintf(stderr, "\n%s: interrupted at step %ld; saved %s (continue with --resume %s)\n", prog, p.step, path, path);
                rc = 1;
                goto restore;
            }
        }
    }
    if (task->evaluate) {
        Metrics ev;
        metrics_clear(&ev);
        if (task->evaluate(task->ctx, &ev) || metrics_log_eval(&log, p.step, &ev)) goto restore;
    }
    {
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
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
done:
    metrics_log_close(&log);
    free(order), free(idx);
    optim_free(o);
    return rc;
}
