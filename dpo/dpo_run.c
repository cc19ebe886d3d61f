/* dpo_run: Direct Preference Optimization and its family, one process.
 *
 * Each micro-batch packs prompt+chosen and prompt+rejected of every pair
 * into ONE forward of the policy (no padding); the summed completion
 * log-probs per sequence feed the pair loss (dpo_loss.c), whose per-token
 * gradient goes back through the same packed batch.
 *
 * The reference model is --ref, or by default a frozen copy of the starting
 * policy (it gets no gradient buffer and no optimizer state). With
 * --precompute-ref the reference log-probs of every example are computed
 * once before training and the reference is freed, so only one model is in
 * memory while training (the usual cure for running out of memory);
 * --ref-logprobs reads them from a file written by `logprobs` instead.
 * SimPO and ORPO need no reference at all. With LoRA (--lora-rank or
 * --lora-adapter) and no --ref, the reference is the policy's own frozen
 * base with the adapters switched off (as TRL does for a PeftModel): no
 * second model and no precomputation are needed.
 *
 * --loss kto trains KTO instead (kto_batch.c): unpaired examples
 * {prompt, completion, label}, and preference records split into one
 * desirable and one undesirable example each; every example is one unit
 * of the data order. Built a second time as kto_run, whose --loss
 * defaults to kto (TRL has a separate KTOTrainer; both names run the same
 * code).
 *
 * --online trains on fresh pairs (dpo_online.c): --data holds prompts; in
 * every micro-step the current policy samples --n completions of each
 * prompt, a judge (--reward RM in process, or --reward-connect EP, a
 * reward_server) scores them, and best vs worst is the pair the DPO loss
 * then trains on. --online-data FILE keeps every judged pair.
 *
 * --rounds R is iterative DPO: each round samples and judges the whole
 * prompt set with the current policy, keeps the pairs on disk
 * (<out>-round<r>.pairs.jsonl), trains on them as offline DPO (--epochs or
 * --max-steps per round, a fresh optimizer) and saves <out>-round<r>.ckpt;
 * the last round's model is --out. The reference stays the starting
 * model. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpo_batch.h"
#include "dpo_online.h"
#include "kto_batch.h"
#include "rm_model.h"
#include "lora.h"
#include "prompt_learning.h"
#include "seq_logprobs.h"
#include "trainer.h"
#include "util.h"

#ifdef DPO_RUN_KTO /* the kto_run build */
#define PROG "kto_run"
#define DEFAULT_LOSS "kto"
#else
#define PROG "dpo_run"
#define DEFAULT_LOSS "sigmoid"
#endif

/* KTO's units: the examples' present sides, (example, side) with side 0 =
 * chosen (desirable), 1 = rejected (undesirable). */
typedef struct {
    int32_t *ex;
    uint8_t *side;
    int n, n_desirable;
} KtoUnits;

typedef struct {
    Model *policy, *ref;
    DpoLossConfig loss;
    int kto;
    KtoLossConfig kto_loss;
    KtoUnits kto_train, kto_eval;
    Dataset train, eval;
    double *ref_train, *ref_eval; /* precomputed: [2*i] chosen, [2*i+1] rejected */
    int batch_size, grad_accum;
    /* --online */
    int online;
    DpoOnline judge;
    TrainTask *task;    /* its micro_key seeds the samples */
    const Tokenizer *tok;
    FILE *online_out;   /* --online-data, or this round's pairs */
    int round;          /* --rounds: the round being sampled */
} Dpo;

static int kto_units(const Dataset *d, KtoUnits *u) {
    u->ex = malloc(2 * d->n * sizeof(int32_t) + 1);
    u->side = malloc(2 * d->n + 1);
    u->n = u->n_desirable = 0;
    if (!u->ex || !u->side) return align_errorf("out of memory");
    for (size_t i = 0; i < d->n; i++)
        for (int side = 0; side < 2; side++)
            if (side ? d->ex[i].n_rejected : d->ex[i].n_chosen) {
                u->ex[u->n] = (int32_t)i, u->side[u->n++] = (uint8_t)side;
                u->n_desirable += !side;
            }
    return 0;
}

static void kto_units_free(KtoUnits *u) { free(u->ex), free(u->side); }

/* TRL's advice when the labels are unbalanced (KTO paper, eq. 8): the
 * weighted counts should satisfy 1 <= wd*nd / (wu*nu) <= 4/3. */
static void kto_report_balance(const KtoUnits *u, float wd, float wu) {
    int nd = u->n_desirable, nu = u->n - u->n_desirable;
    fprintf(stderr, PROG ": KTO on %d desirable and %d undesirable examples\n", nd, nu);
    if (nd == 0 || nu == 0) {
        fprintf(stderr, PROG ": warning: every example is %s; KTO learns from both labels\n",
                nd ? "desirable" : "undesirable");
        return;
    }
    double ratio = (double)wd * nd / ((double)wu * nu);
    if (nd != nu && (ratio < 1 || ratio > 4.0 / 3.0))
        fprintf(stderr,
                PROG ": warning: desirable_weight * %d / (undesirable_weight * %d) = %.2f; the KTO paper suggests "
                "1 to 1.33: --desirable-weight in [%.2f, %.2f] or --undesirable-weight in [%.2f, %.2f]\n",
                nd, nu, ratio, (double)nu * wu / nd, (double)nu * wu / nd * 1.33, (double)nd * wd / nu / 1.33,
                (double)nd * wd / nu);
}

/* KTO units by unit index (NULL: the first n). */
static long run_kto(Dpo *d, const Dataset *data, const KtoUnits *u, const int32_t *idx, int n, float scale,
                    int train, Metrics *acc) {
    DsSeq *seqs = malloc((size_t)n * sizeof(DsSeq));
    int *des = malloc((size_t)n * sizeof(int));
    if (!seqs || !des) {
        free(seqs), free(des);
        return align_errorf("out of memory");
    }
    for (int i = 0; i < n; i++) {
        int k = idx ? idx[i] : i;
        seqs[i] = ds_example_seq(&data->ex[u->ex[k]], u->side[k]);
        des[i] = !u->side[k];
    }
    long rc = kto_batch(&d->kto_loss, d->policy, d->ref, seqs, des, n, scale, train, acc);
    free(seqs), free(des);
    return rc;
}

/* The 2n sequences of n pairs: chosen and rejected side by side. */
static DsSeq *pair_seqs(const Dataset *d, const int32_t *idx, int n) {
    DsSeq *s = malloc(2 * (size_t)n * sizeof(DsSeq));
    if (!s) return NULL;
    for (int i = 0; i < n; i++) {
        const DsExample *ex = &d->ex[idx ? idx[i] : i];
        s[2 * i] = ds_example_seq(ex, 0);
        s[2 * i + 1] = ds_example_seq(ex, 1);
    }
    return s;
}

/* One batch of pairs by example index, with the precomputed reference
 * sums of those examples when there are any. */
static long run_pairs(Dpo *d, const Dataset *data, const double *table, const int32_t *idx, int n,
                      float scale, int train, Metrics *acc) {
    DsSeq *seqs = pair_seqs(data, idx, n);
    double *ref = table ? malloc(2 * (size_t)n * sizeof(double)) : NULL;
    if (!seqs || (table && !ref)) {
        free(seqs), free(ref);
        return align_errorf("out of memory");
    }
    for (int i = 0; table && i < n; i++) {
        ref[2 * i] = table[2 * idx[i]];
        ref[2 * i + 1] = table[2 * idx[i] + 1];
    }
    long rc = dpo_batch(&d->loss, d->policy, d->ref, seqs, n, ref, scale, train, acc);
    free(seqs), free(ref);
    return rc;
}

/* One JSON line per judged pair: the prompt's record (line or element
 * of --data), the step, the texts and scores. */
static int write_online(Dpo *d, const DpoOnlinePairs *op, const int32_t *idx) {
    for (int p = 0; p < op->n_pairs; p++) {
        cJSON *o = cJSON_CreateObject();
        const DsExample *ex = &d->train.ex[idx[op->prompt_of[p]]];
        if (d->round) cJSON_AddNumberToObject(o, "round", d->round);
        else cJSON_AddNumberToObject(o, "step", (double)(d->task->micro_key / d->grad_accum + 1));
        cJSON_AddNumberToObject(o, "record", (double)ex->line);
        for (int side = 0; side < 2; side++) {
            const DsSeq *q = &op->seqs[2 * p + side];
            char *text = side == 0 ? tok_decode(d->tok, q->prompt, q->n_prompt, NULL) : NULL;
            if (text) cJSON_AddStringToObject(o, "prompt", text);
            free(text);
            text = tok_decode(d->tok, q->completion, q->n_completion, NULL);
            cJSON_AddStringToObject(o, side ? "rejected" : "chosen", text ? text : "");
            free(text);
        }
        cJSON_AddNumberToObject(o, "score_chosen", op->score_chosen[p]);
        cJSON_AddNumberToObject(o, "score_rejected", op->score_rejected[p]);
        char *line = cJSON_PrintUnformatted(o);
        int bad = !line || fprintf(d->online_out, "%s\n", line) < 0;
        free(line);
        cJSON_Delete(o);
        if (bad) return align_errorf("--online-data: write failed");
    }
    return fflush(d->online_out) ? align_errorf("--online-data: write failed") : 0;
}

/* Online: sample, judge, then one DPO micro-batch on the pairs found. */
static long online_step(Dpo *d, const int32_t *idx, int n, float scale, Metrics *acc) {
    DsSeq *prompts = malloc((size_t)n * sizeof *prompts);
    if (!prompts) return align_errorf("out of memory");
    for (int i = 0; i < n; i++) prompts[i] = ds_example_seq(&d->train.ex[idx[i]], 0);
    long key = d->task->micro_key;
    /* sampling sees the policy as it is, without LoRA dropout */
    model_lora_train_mode(d->policy, 0, 0);
    DpoOnlinePairs op;
    int bad = dpo_online_pairs(&d->judge, d->policy, prompts, n, key * d->batch_size, &op, acc);
    model_lora_train_mode(d->policy, 1, (uint64_t)key);
    free(prompts);
    if (bad) return -1;
    long rc = 0;
    for (int s = 0; s < op.n_outs; s++) rc += op.outs[s].n_tokens;
    if (d->online_out && write_online(d, &op, idx)) rc = -1;
    if (rc >= 0 && op.n_pairs > 0) {
        long t = dpo_batch(&d->loss, d->policy, d->ref, op.seqs, op.n_pairs, NULL, scale, 1, acc);
        rc = t < 0 ? -1 : rc + t;
    }
    dpo_online_pairs_free(&op);
    return rc;
}

/* "dir/name.ckpt" + "-round2" + ".pairs.jsonl" -> "dir/name-round2.pairs.jsonl" */
static void round_path(const char *base, int r, const char *ext, char *out, size_t cap) {
    size_t n = strlen(base);
    const char *dot = strrchr(base, '.'), *slash = strrchr(base, '/');
    if (dot && (!slash || dot > slash)) n = (size_t)(dot - base);
    snprintf(out, cap, "%.*s-round%d%s", (int)n, base, r, ext ? ext : (dot && (!slash || dot > slash) ? dot : ""));
}

/* One round's pairs, sampled and judged over the whole prompt set. */
typedef struct {
    DpoOnlinePairs *chunks;
    int n_chunks;
    Dataset pairs; /* ex[] points into chunks' tokens and the prompts' pool */
} Round;

static void round_free(Round *r) {
    for (int i = 0; i < r->n_chunks; i++) dpo_online_pairs_free(&r->chunks[i]);
    free(r->chunks);
    free(r->pairs.ex);
    memset(r, 0, sizeof *r);
}

static int round_sample(Dpo *d, const Dataset *prompts, int round, const char *pairs_path, Round *r) {
    memset(r, 0, sizeof *r);
    const int chunk = 16;
    int n = (int)prompts->n;
    r->chunks = calloc((size_t)(n + chunk - 1) / chunk, sizeof *r->chunks);
    r->pairs.ex = calloc(prompts->n, sizeof *r->pairs.ex);
    int32_t *idx = malloc((size_t)chunk * sizeof(int32_t));
    DsSeq *seqs = malloc((size_t)chunk * sizeof(DsSeq));
    if (!r->chunks || !r->pairs.ex || !idx || !seqs) {
        free(idx), free(seqs);
        return align_errorf("out of memory");
    }
    d->online_out = fopen(pairs_path, "w");
    if (!d->online_out) {
        free(idx), free(seqs);
        return align_errorf("cannot write %s", pairs_path);
    }
    Metrics acc;
    metrics_clear(&acc);
    int rc = 0;
    d->round = round;
    for (int at = 0; at < n && !rc; at += chunk) {
        int k = n - at < chunk ? n - at : chunk;
        for (int i = 0; i < k; i++) idx[i] = at + i, seqs[i] = ds_example_seq(&prompts->ex[at + i], 0);
        DpoOnlinePairs *op = &r->chunks[r->n_chunks++];
        /* sample j of prompt i in round r: seeded by (seed, r * n + i, j) */
        if (dpo_online_pairs(&d->judge, d->policy, seqs, k, (long)round * n + at, op, &acc) ||
            write_online(d, op, idx)) {
            rc = -1;
            break;
        }
        for (int p = 0; p < op->n_pairs; p++) {
            DsExample *ex = &r->pairs.ex[r->pairs.n++];
            ex->prompt = (int32_t *)op->seqs[2 * p].prompt, ex->n_prompt = op->seqs[2 * p].n_prompt;
            ex->chosen = (int32_t *)op->seqs[2 * p].completion, ex->n_chosen = op->seqs[2 * p].n_completion;
            ex->rejected = (int32_t *)op->seqs[2 * p + 1].completion, ex->n_rejected = op->seqs[2 * p + 1].n_completion;
            ex->line = prompts->ex[at + op->prompt_of[p]].line;
        }
    }
    if (fclose(d->online_out) && !rc) rc = align_errorf("cannot write %s", pairs_path);
    d->online_out = NULL;
    free(idx), free(seqs);
    if (!rc)
        fprintf(stderr, PROG ": round %d: %d prompts -> %zu pairs in %s (objective/scores %.4g, "
                "objective/scores_margin %.4g, val/contain_eos_token %.3g)\n", round, n, r->pairs.n, pairs_path,
                metrics_get(&acc, "objective/scores", 0), metrics_get(&acc, "objective/scores_margin", 0),
                metrics_get(&acc, "val/contain_eos_token", 0));
    return rc;
}

/* Iterative DPO: sample + judge the prompt set, train offline on it, repeat. */
static int run_rounds(Dpo *d, const TrainArgs *a0, ModelBundle *policy, TrainTask *task, int rounds) {
    Dataset prompts = d->train;
    int rc = 0;
    for (int r = 1; r <= rounds && rc == 0; r++) {
        char pairs_path[4096], out[4096], metrics[4096];
        round_path(a0->out, r, ".pairs.jsonl", pairs_path, sizeof pairs_path);
        round_path(a0->out, r, NULL, out, sizeof out);
        TrainArgs a = *a0;
        a.out = r == rounds ? a0->out : out;
        if (a0->metrics) round_path(a0->metrics, r, NULL, metrics, sizeof metrics), a.metrics = metrics;
        Round rd;
        if (round_sample(d, &prompts, r, pairs_path, &rd)) {
            round_free(&rd);
            rc = -1;
            break;
        }
        if (rd.pairs.n == 0) {
            round_free(&rd);
            rc = align_errorf("round %d: no prompt gave two completions the judge scored differently", r);
            break;
        }
        d->online = 0; /* train on the round's pairs as offline DPO */
        d->train = rd.pairs;
        task->n_train = (int)rd.pairs.n;
        rc = trainer_run(PROG, &a, policy, task);
        d->online = 1;
        d->train = prompts;
        round_free(&rd);
    }
    return rc;
}

static long dpo_micro_step(void *ctx, const int32_t *idx, int n, float scale, Metrics *acc) {
    Dpo *d = ctx;
    if (d->online) return online_step(d, idx, n, scale, acc);
    if (d->kto) return run_kto(d, &d->train, &d->kto_train, idx, n, scale, 1, acc);
    return run_pairs(d, &d->train, d->ref_train, idx, n, scale, 1, acc);
}

/* KTO evaluated on preference pairs also reports DPO's rewards/accuracies
 * (chosen's beta * log-ratio above rejected's), so KTO and DPO compare on
 * the same held-out labels. */
static int kto_pair_accuracy(Dpo *d, Metrics *out) {
    int32_t *idx = malloc(d->eval.n * sizeof(int32_t) + 1);
    if (!idx) return align_errorf("out of memory");
    int n = 0;
    for (size_t i = 0; i < d->eval.n; i++)
        if (d->eval.ex[i].n_chosen && d->eval.ex[i].n_rejected) idx[n++] = (int32_t)i;
    DpoLossConfig sig;
    dpo_loss_defaults(&sig);
    sig.beta = d->kto_loss.beta;
    DpoLossConfig keep = d->loss;
    d->loss = sig;
    long rc = 0;
    for (int at = 0; at < n && rc >= 0; at += d->batch_size) {
        int k = n - at < d->batch_size ? n - at : d->batch_size;
        Metrics m;
        metrics_clear(&m);
        rc = run_pairs(d, &d->eval, NULL, idx + at, k, 0, 0, &m);
        if (rc >= 0) metrics_add(out, "rewards/accuracies", metrics_get(&m, "rewards/accuracies", 0), k);
    }
    d->loss = keep;
    free(idx);
    return rc < 0 ? -1 : 0;
}

static int dpo_evaluate(void *ctx, Metrics *out) {
    Dpo *d = ctx;
    size_t total = d->kto ? (size_t)d->kto_eval.n : d->eval.n;
    for (size_t at = 0; at < total; at += d->batch_size) {
        int n = total - at < (size_t)d->batch_size ? (int)(total - at) : d->batch_size;
        int32_t *idx = malloc(n * sizeof(int32_t));
        if (!idx) return align_errorf("out of memory");
        for (int i = 0; i < n; i++) idx[i] = (int32_t)(at + i);
        long rc = d->kto ? run_kto(d, &d->eval, &d->kto_eval, idx, n, 0, 0, out)
                         : run_pairs(d, &d->eval, d->ref_eval, idx, n, 0, 0, out);
        free(idx);
        if (rc < 0) return -1;
    }
    return d->kto ? kto_pair_accuracy(d, out) : 0;
}

/* Reference log-probs of every example of a dataset, in one pass. */
static double *precompute(Dpo *d, const Dataset *data) {
    double *table = malloc(2 * data->n * sizeof(double) + 1);
    int *counts = malloc(2 * data->n * sizeof(int) + 1);
    DsSeq *seqs = pair_seqs(data, NULL, (int)data->n);
    int was = d->ref == d->policy ? model_lora_enable(d->policy, 0) : -1; /* the base, adapters off */
    int was_virt = d->ref == d->policy ? model_prompt_enable(d->policy, 0) : -1; /* and virtual tokens */
    int bad = !table || !counts || !seqs || seq_logprobs(d->ref, seqs, 2 * (int)data->n, 2 * d->batch_size, 1, table, counts);
    if (was >= 0) model_lora_enable(d->policy, was);
    if (was_virt >= 0) model_prompt_enable(d->policy, was_virt);
    if (bad) {
        if (!table || !counts || !seqs) align_errorf("out of memory");
        free(table);
        table = NULL;
    }
    free(counts), free(seqs);
    return table;
}

/* chosen_logp / rejected_logp per record, in order, from `logprobs`. */
static double *read_ref_logprobs(const char *path, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) {
        align_errorf("--ref-logprobs %s: cannot open", path);
        return NULL;
    }
    double *table = malloc(2 * n * sizeof(double) + 1);
    char *line = NULL;
    size_t cap = 0, i = 0;
    long lineno = 0;
    while (table && getline(&line, &cap, f) > 0) {
        lineno++;
        if (line[0] == '\n') continue;
        cJSON *o = cJSON_Parse(line);
        cJSON *c = cJSON_GetObjectItem(o, "chosen_logp"), *r = cJSON_GetObjectItem(o, "rejected_logp");
        if (!cJSON_IsNumber(c) || !cJSON_IsNumber(r) || i >= n) {
            align_errorf(i >= n ? "%s:%ld: more records than the training data (%zu)"
                                : "%s:%ld: expected chosen_logp and rejected_logp (a file written by logprobs)",
                         path, lineno, n);
            cJSON_Delete(o);
            free(table);
            table = NULL;
            break;
        }
        table[2 * i] = c->valuedouble;
        table[2 * i + 1] = r->valuedouble;
        i++;
        cJSON_Delete(o);
    }
    if (table && i != n) {
        align_errorf("--ref-logprobs %s has %zu records but the training data has %zu", path, i, n);
        free(table);
        table = NULL;
    }
    free(line);
    fclose(f);
    return table;
}

static void stop_add(int32_t *ids, int *n, int32_t id, int vocab) {
    if (id < 0 || id >= vocab) return;
    for (int i = 0; i < *n; i++)
        if (ids[i] == id) return;
    ids[(*n)++] = id;
}

/* The judge, the sampling settings and --online-data. */
static int online_setup(Dpo *d, ModelBundle *policy, ChatTemplate tmpl, const TrainArgs *a, const char *reward_path,
                        const char *reward_ep, int n, int max_new, float temperature, float eos_penalty,
                        const char *online_data, ModelBundle *judge) {
    static int32_t stop[3];
    int n_stop = 0, vocab = policy->model->cfg.vocab_size;
    stop_add(stop, &n_stop, tok_eos_id(policy->tok), vocab);
    stop_add(stop, &n_stop, policy->model->cfg.eos_id, vocab);
    const char *marker = chat_template_end_marker(tmpl);
    if (marker) stop_add(stop, &n_stop, tok_token_id(policy->tok, marker), vocab);
    generate_config_defaults(&d->judge.gen);
    d->judge.gen.n_samples = n;
    d->judge.gen.max_new_tokens = max_new;
    d->judge.gen.sampler.temperature = temperature;
    d->judge.gen.seed = (uint64_t)a->seed;
    d->judge.gen.stop_ids = stop;
    d->judge.gen.n_stop_ids = n_stop;
    d->judge.missing_eos_penalty = eos_penalty;
    d->judge.rm_max_batch_tokens = 4096;
    d->tok = policy->tok;
    if (reward_path) {
        if (model_load_any(reward_path, policy->model->be, 0, judge)) return -1;
        if (!rm_is_reward_model(&judge->model->cfg))
            return align_errorf("--reward %s is not a reward model (no score head; rm_train makes one)", reward_path);
        if (judge->model->cfg.vocab_size != vocab)
            return align_errorf("--reward %s has a vocabulary of %d tokens, the policy %d: the judge reads the "
                                "policy's token ids, so both need one tokenizer", reward_path,
                                judge->model->cfg.vocab_size, vocab);
        model_set_trainable(judge->model, "", 0);
        d->judge.rm = judge->model;
    } else if (!(d->judge.client = rm_client_connect(NULL, reward_ep, NULL, 60000))) {
        return -1;
    }
    if (online_data && !(d->online_out = fopen(online_data, "a")))
        return align_errorf("--online-data %s: cannot open for appending", online_data);
    return 0;
}

int main(int argc, char **argv) {
    TrainArgs a;
    train_args_defaults(&a);
    const char *policy_path = NULL, *data = NULL, *ref_path = NULL, *loss_name = DEFAULT_LOSS, *ref_logprobs = NULL;
    int precompute_ref = 0;
    Dpo d = {0};
    dpo_loss_defaults(&d.loss);
    kto_loss_defaults(&d.kto_loss);
    float beta = 0.1f, gamma = d.loss.simpo_gamma, ls = 0, rpo = 0;
    float wd = d.kto_loss.desirable_weight, wu = d.kto_loss.undesirable_weight;
    const char *reward_path = NULL, *reward_ep = NULL, *online_data = NULL;
    int online = 0, n_samples = 2, max_new = 64, rounds = 0;
    float temperature = 0.9f, eos_penalty = 0;
    CliFlag flags[TRAIN_ARGS_N_FLAGS + 22] = {
        {"policy", CLI_STRING, &policy_path, "starting policy: .ckpt, .gguf or a Hugging Face directory"},
        {"data", CLI_STRING, &data, "preference records {prompt?, chosen, rejected}; KTO also {prompt, completion, label} (JSONL or .json)"},
        {"ref", CLI_STRING, &ref_path, "reference model (default: a frozen copy of the starting policy)"},
        {"loss", CLI_STRING, &loss_name, "sigmoid, robust, hinge, ipo, simpo, orpo or kto (default " DEFAULT_LOSS ")"},
        {"beta", CLI_FLOAT, &beta, "KL strength, > 0 (default 0.1; 2.0 for simpo; ORPO's lambda)", CLI_POSITIVE},
        {"label-smoothing", CLI_FLOAT, &ls, "conservative DPO smoothing for sigmoid/robust/simpo, in [0, 0.5)", CLI_UNIT_OPEN},
        {"simpo-gamma", CLI_FLOAT, &gamma, "SimPO's target reward margin", CLI_NONNEG},
        {"rpo-alpha", CLI_FLOAT, &rpo, "weight of an SFT term on the chosen completion (0 = off)", CLI_NONNEG},
        {"precompute-ref", CLI_BOOL, &precompute_ref, "compute reference log-probs once, then free the reference"},
        {"ref-logprobs", CLI_STRING, &ref_logprobs, "read reference log-probs from a file written by logprobs"},
        {"desirable-weight", CLI_FLOAT, &wd, "KTO: weight of the desirable (label true) examples' loss (default 1)", CLI_NONNEG},
        {"undesirable-weight", CLI_FLOAT, &wu, "KTO: weight of the undesirable (label false) examples' loss (default 1)", CLI_NONNEG},
        {"online", CLI_BOOL, &online, "online DPO: --data holds prompts; each step samples from the policy and a judge picks the pair"},
        {"reward", CLI_STRING, &reward_path, "online: the judge, a reward model (.ckpt or HF directory) run in process"},
        {"reward-connect", CLI_STRING, &reward_ep, "online: the judge, a reward_server endpoint (tcp://host:port)"},
        {"n", CLI_INT, &n_samples, "online: completions sampled per prompt (default 2)", CLI_AT_LEAST_1},
        {"max-new-tokens", CLI_INT, &max_new, "online: most tokens per completion (default 64)", CLI_AT_LEAST_1},
        {"temperature", CLI_FLOAT, &temperature, "online: sampling temperature (default 0.9; 0 = greedy)", CLI_NONNEG},
        {"missing-eos-penalty", CLI_FLOAT, &eos_penalty, "online: subtracted from the score of a completion that did not end (default 0)", CLI_NONNEG},
        {"online-data", CLI_STRING, &online_data, "online: append every judged pair to this JSONL file"},
        {"rounds", CLI_INT, &rounds, "online: iterative DPO in R rounds (sample + judge every prompt, train on the pairs, repeat)", CLI_AT_LEAST_1},
    };
    const int n_own = 21;
    int nf = n_own + train_args_flags(&a, flags + n_own);
    CliSpec spec = {.prog = PROG, .usage = PROG " --policy M --data prefs.jsonl --out O [flags]",
                    .about = "DPO and its family (sigmoid, robust, hinge, IPO, SimPO, ORPO) and KTO on unpaired "
                             "thumbs-up/down data, metrics named as TRL names them.",
                    .flags = flags, .n_flags = nf};
    cli_parse_or_exit(&spec, argc, argv);
    if (!policy_path && !a.resume) align_die(PROG, "--policy is required (see --help)");
    if (!data) align_die(PROG, "--data is required (see --help)");
    d.kto = strcmp(loss_name, "kto") == 0;
    if (!d.kto && dpo_loss_parse(loss_name, &d.loss.type))
        cli_usage_error(&spec, "--loss %s: expected sigmoid, robust, hinge, ipo, simpo, orpo or kto", loss_name);
    if (d.kto) {
        static const char *not_kto[] = {"label-smoothing", "simpo-gamma", "rpo-alpha", "precompute-ref", "ref-logprobs"};
        for (size_t i = 0; i < sizeof not_kto / sizeof *not_kto; i++)
            if (cli_was_set(&spec, not_kto[i]))
                cli_usage_error(&spec, "--%s does not apply to --loss kto%s", not_kto[i],
                                i >= 3 ? " (its reference point needs reference log-probs of each micro-batch's "
                                         "mismatched pairs; the reference stays loaded)"
                                       : "");
        /* TRL refuses per_device_train_batch_size 1 for the same reason */
        if (a.batch_size < 2)
            cli_usage_error(&spec, "--batch-size %d: KTO needs at least 2 examples per micro-batch (its KL estimate "
                                   "pairs each prompt with another example's completion)", a.batch_size);
        if (wd == 0 && wu == 0) cli_usage_error(&spec, "--desirable-weight and --undesirable-weight are both 0");
    }
    if (online) {
        if (d.kto) cli_usage_error(&spec, "--online trains a pairwise loss, not --loss kto");
        if (!reward_path == !reward_ep) cli_usage_error(&spec, "--online needs one judge: --reward RM or --reward-connect EP");
        if (n_samples < 2) cli_usage_error(&spec, "--n %d: online DPO needs at least 2 completions per prompt", n_samples);
        if (precompute_ref || ref_logprobs)
            cli_usage_error(&spec, "--%s does not apply to --online (the samples are new every step)",
                            precompute_ref ? "precompute-ref" : "ref-logprobs");
        if (rounds && a.resume) cli_usage_error(&spec, "--resume continues one training run, not --rounds");
        if (rounds && online_data)
            cli_usage_error(&spec, "--online-data with --rounds: each round's pairs go to <out>-round<r>.pairs.jsonl");
    } else {
        static const char *only_online[] = {"reward", "reward-connect", "n", "max-new-tokens", "temperature",
                                            "missing-eos-penalty", "online-data", "rounds"};
        for (size_t i = 0; i < sizeof only_online / sizeof *only_online; i++)
            if (cli_was_set(&spec, only_online[i])) cli_usage_error(&spec, "--%s applies to --online only", only_online[i]);
    }
    if (!d.kto) {
        if (cli_was_set(&spec, "desirable-weight") || cli_was_set(&spec, "undesirable-weight"))
            cli_usage_error(&spec, "--desirable-weight and --undesirable-weight apply to --loss kto only, not %s", loss_name);
    }
    if (!cli_was_set(&spec, "beta")) beta = d.loss.type == DPO_SIMPO ? 2.0f : 0.1f;
    /* robust divides by 1 - 2 * label_smoothing; TRL asks for [0, 0.5) too */
    if (ls >= 0.5f) cli_usage_error(&spec, "--label-smoothing %g: expected a number in [0, 0.5)", ls);
    int smoothed = !d.kto && (d.loss.type == DPO_SIGMOID || d.loss.type == DPO_ROBUST || d.loss.type == DPO_SIMPO);
    if (ls > 0 && !smoothed && !d.kto)
        cli_usage_error(&spec, "--label-smoothing applies to --loss sigmoid, robust and simpo, not %s", loss_name);
    if (cli_was_set(&spec, "simpo-gamma") && d.loss.type != DPO_SIMPO && !d.kto)
        cli_usage_error(&spec, "--simpo-gamma applies to --loss simpo only, not %s", loss_name);
    if (trainer_check_args(&a)) cli_usage_error(&spec, "%s", align_error());
    d.loss.beta = beta;
    d.loss.simpo_gamma = gamma;
    d.loss.label_smoothing = ls;
    d.loss.rpo_alpha = rpo;
    d.kto_loss.beta = beta;
    d.kto_loss.desirable_weight = wd;
    d.kto_loss.undesirable_weight = wu;
    d.batch_size = a.batch_size;
    d.grad_accum = a.grad_accum;
    d.online = online;

    ModelBundle policy, ref = {0};
    ChatTemplate tmpl;
    if (trainer_load_policy(&a, policy_path, &policy, &tmpl)) align_die_error(PROG);
    d.policy = policy.model;
    if (!d.policy->cfg.lm_head) align_die(PROG, "the policy has no LM head (it is a reward/value model)");
    if (trainer_setup_peft(PROG, &a, &policy)) align_die_error(PROG);
    DsKind kind = d.kto ? DS_UNPAIRED : DS_PREFERENCE;
    if (trainer_load_data(PROG, &a, data, policy.tok, tmpl, online ? DS_PROMPT : kind, &d.train)) align_die_error(PROG);
    if (a.eval_data && trainer_load_data(PROG, &a, a.eval_data, policy.tok, tmpl, kind, &d.eval))
        align_die_error(PROG);
    if (d.kto && (kto_units(&d.train, &d.kto_train) || (a.eval_data && kto_units(&d.eval, &d.kto_eval))))
        align_die_error(PROG);
    if (d.kto) kto_report_balance(&d.kto_train, wd, wu);

    ModelBundle judge = {0};
    if (online && online_setup(&d, &policy, tmpl, &a, reward_path, reward_ep, n_samples, max_new, temperature,
                               eos_penalty, online_data, &judge))
        align_die_error(PROG);
    int need_ref = d.kto || !dpo_loss_reference_free(d.loss.type);
    if (need_ref && ref_logprobs) {
        if (!(d.ref_train = read_ref_logprobs(ref_logprobs, d.train.n))) align_die_error(PROG);
        if (a.eval_data) precompute_ref = 1; /* eval still needs a reference pass */
    }
    if (need_ref && (d.policy->lora || d.policy->prompt) && !ref_path && (!d.ref_train || a.eval_data)) {
        d.ref = d.policy; /* the base with adapters off */
        fprintf(stderr, PROG ": reference = the base model (%s off), no second copy\n",
                d.policy->lora ? "LoRA adapters" : "virtual tokens");
        if (precompute_ref) {
            if (!d.ref_train && !(d.ref_train = precompute(&d, &d.train))) align_die_error(PROG);
            if (a.eval_data && !(d.ref_eval = precompute(&d, &d.eval))) align_die_error(PROG);
            d.ref = NULL;
        }
    } else if (need_ref && (!d.ref_train || a.eval_data)) {
        /* the reference is the STARTING policy, also when resuming */
        const char *rp = ref_path ? ref_path : policy_path;
        if (!rp) align_die(PROG, "--resume needs --policy or --ref to rebuild the reference model");
        if (model_load_any(rp, policy.model->be, 0, &ref)) align_die_error(PROG);
        model_set_trainable(ref.model, "", 0); /* frozen: no gradients, no optimizer state */
        d.ref = ref.model;
        if (precompute_ref) {
            fprintf(stderr, PROG ": precomputing reference log-probs\n");
            if (!d.ref_train && !(d.ref_train = precompute(&d, &d.train))) align_die_error(PROG);
            if (a.eval_data && !(d.ref_eval = precompute(&d, &d.eval))) align_die_error(PROG);
            model_bundle_free(&ref); /* train with one model in memory */
            d.ref = NULL;
        }
    }
    static const char *shown[] = {"loss", "rewards/accuracies", "rewards/margins", "lr", "tokens_per_s", NULL};
    static const char *shown_kto[] = {"loss", "kl", "rewards/margins", "lr", "tokens_per_s", NULL};
    TrainTask task = {.ctx = &d, .n_train = d.kto ? d.kto_train.n : (int)d.train.n, .micro_step = dpo_micro_step,
                      .evaluate = a.eval_data ? dpo_evaluate : NULL, .shown = d.kto ? shown_kto : shown,
                      /* dpo_batch and kto_batch backpropagate once (KTO's pairs-last pass too);
                       * online DPO samples, then runs one dpo_batch (none without pairs) */
                      .one_backward = 1};
    static const char *shown_online[] = {"loss", "objective/scores", "objective/scores_margin", "rewards/margins",
                                         "lr", NULL};
    if (online && !rounds) task.shown = shown_online;
    d.task = &task;
    int rc = rounds ? run_rounds(&d, &a, &policy, &task, rounds) : trainer_run(PROG, &a, &policy, &task);
    if (rc < 0) align_die_error(PROG);
    if (d.ref && d.ref != d.policy) model_bundle_free(&ref);
    free(d.ref_train), free(d.ref_eval);
    kto_units_free(&d.kto_train), kto_units_free(&d.kto_eval);
    if (d.online_out) fclose(d.online_out);
    if (d.judge.client) rm_client_close(d.judge.client);
    model_bundle_free(&judge);
    ds_free(&d.train);
    if (a.eval_data) ds_free(&d.eval);
    model_bundle_free(&policy);
    cli_free(&spec);
    return rc == 1 ? 130 : 0;
}
