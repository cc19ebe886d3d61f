/* rm_train: train a reward model on preference pairs (Bradley-Terry).
 *
 *   rm_train prefs.jsonl --model M --out rm.ckpt [flags]
 *
 * The starting model (a causal LM, or a reward model to train further)
 * becomes a reward model with rm_from_base: score head on, LM head dropped
 * (see rm_model.h for why). Each micro-batch packs chosen and rejected of
 * every pair into one forward; the score of a sequence is the value head at
 * its last token; the loss is -logsigmoid(sc - sr - margin) (+ center *
 * (sc + sr)^2 with --center-rewards), as TRL's RewardTrainer. Records are
 * any preference shape the dataset layer reads: explicit prompts, implicit
 * ones (hh-rlhf transcripts), message lists, optional "margin".
 *
 * After training, every training sequence (chosen and rejected) is scored
 * once and the mean and standard deviation of those rewards are stored in
 * the checkpoint's train_state as "reward_mean" / "reward_std" (with
 * "reward_count"), so PPO and rm_score can normalise scores without
 * another pass over the data (`reward_server --normalize`). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "rm_model.h"
#include "trainer.h"
#include "util.h"

typedef struct {
    Model *model;
    RmLossConfig loss;
    Dataset train, eval;
    int batch_size;
} RmTrain;

/* chosen and rejected of examples idx[0..n) side by side, with margins */
static long run_pairs(RmTrain *t, const Dataset *d, const int32_t *idx, int n, float scale, int train,
                      Metrics *acc, float *scores) {
    DsSeq *seqs = malloc(2 * (size_t)n * sizeof(DsSeq));
    float *margins = malloc((size_t)n * sizeof(float));
    if (!seqs || !margins) {
        free(seqs), free(margins);
        return align_errorf("out of memory");
    }
    for (int i = 0; i < n; i++) {
        const DsExample *ex = &d->ex[idx[i]];
        seqs[2 * i] = ds_example_seq(ex, 0);
        seqs[2 * i + 1] = ds_example_seq(ex, 1);
        margins[i] = ex->has_margin ? ex->margin : 0.0f;
    }
    long rc = rm_pairs_step(&t->loss, t->model, seqs, margins, n, scale, train, acc, scores);
    free(seqs), free(margins);
    return rc;
}

static long rm_micro_step(void *ctx, const int32_t *idx, int n, float scale, Metrics *acc) {
    RmTrain *t = ctx;
    return run_pairs(t, &t->train, idx, n, scale, 1, acc, NULL);
}

/* Scores of every chosen and rejected sequence of d, in batches; returns
 * their mean and standard deviation (population). */
static int score_all(RmTrain *t, const Dataset *d, Metrics *acc, double *mean, double *std) {
    double s = 0, s2 = 0;
    size_t count = 0;
    for (size_t at = 0; at < d->n; at += t->batch_size) {
        int n = d->n - at < (size_t)t->batch_size ? (int)(d->n - at) : t->batch_size;
        int32_t *idx = malloc(n * sizeof(int32_t));
        float *scores = malloc(2 * (size_t)n * sizeof(float));
        if (!idx || !scores) {
            free(idx), free(scores);
            return align_errorf("out of memory");
        }
        for (int i = 0; i < n; i++) idx[i] = (int32_t)(at + i);
        long rc = run_pairs(t, d, idx, n, 0, 0, acc, scores);
        for (int i = 0; rc >= 0 && i < 2 * n; i++) s += scores[i], s2 += (double)scores[i] * scores[i], count++;
        free(idx), free(scores);
        if (rc < 0) return -1;
    }
    *mean = count ? s / count : 0;
    double var = count ? s2 / count - *mean * *mean : 0;
    *std = var > 0 ? sqrt(var) : 0;
    return 0;
}

static int rm_evaluate(void *ctx, Metrics *out) {
    RmTrain *t = ctx;
    Metrics acc;
    metrics_clear(&acc);
    double mean, std;
    if (score_all(t, &t->eval, &acc, &mean, &std)) return -1;
    static const char *keys[] = {"loss", "accuracy", "margin"};
    for (int k = 0; k < 3; k++) metrics_set(out, keys[k], metrics_get(&acc, keys[k], 0));
    metrics_set(out, "reward_mean", mean);
    metrics_set(out, "reward_std", std);
    return 0;
}

/* train_state += reward_mean, reward_std, reward_count */
static int add_reward_stats(ModelBundle *b, double mean, double std, size_t count) {
    cJSON *o = b->extras.train_state ? cJSON_Parse(b->extras.train_state) : NULL;
    if (!o) o = cJSON_CreateObject();
    cJSON_DeleteItemFromObject(o, "reward_mean");
    cJSON_DeleteItemFromObject(o, "reward_std");
    cJSON_DeleteItemFromObject(o, "reward_count");
    cJSON_AddNumberToObject(o, "reward_mean", mean);
    cJSON_AddNumberToObject(o, "reward_std", std);
    cJSON_AddNumberToObject(o, "reward_count", (double)count);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    int rc = s ? ckpt_extras_set(&b->extras.train_state, s) : align_errorf("out of memory");
    free(s);
    return rc;
}

int main(int argc, char **argv) {
    TrainArgs a;
    train_args_defaults(&a);
    const char *model_path = NULL, *data = NULL;
    RmTrain t = {0};
    float center = 0;
    CliFlag flags[TRAIN_ARGS_N_FLAGS + 3] = {
        {"model", CLI_STRING, &model_path, "starting model: .ckpt, .gguf or a Hugging Face directory (an LM or a reward model)"},
        {"data", CLI_STRING, &data, "preference records {prompt?, chosen, rejected, margin?} (JSONL or .json); or the positional argument"},
        {"center-rewards", CLI_FLOAT, &center, "coefficient of (sc + sr)^2 that keeps rewards centred on 0 (TRL's center_rewards_coefficient; 0 = off)", CLI_NONNEG},
    };
    int nf = 3 + train_args_flags(&a, flags + 3);
    CliSpec spec = {.prog = "rm_train", .usage = "rm_train prefs.jsonl --model M --out rm.ckpt [flags]",
                    .about = "Reward model training (Bradley-Terry on preference pairs, optional margin and centering); "
                             "metrics named as TRL names them; reward mean/std of the training set saved in the checkpoint.",
                    .flags = flags, .n_flags = nf, .min_positional = 0, .max_positional = 1};
    cli_parse_or_exit(&spec, argc, argv);
    if (spec.n_positional == 1) {
        if (data && strcmp(data, spec.positional[0]))
            align_die("rm_train", "the data file was given twice (%s and --data %s)", spec.positional[0], data);
        data = spec.positional[0];
    }
    if (!model_path && !a.resume) align_die("rm_train", "--model is required (see --help)");
    if (!data) align_die("rm_train", "a preference data file is required: rm_train prefs.jsonl --model M --out rm.ckpt");
    if (trainer_check_args(&a)) cli_usage_error(&spec, "%s", align_error());
    t.loss.center = center;
    t.batch_size = a.batch_size;

    ModelBundle policy;
    ChatTemplate tmpl;
    TrainArgs load_args = a;
    load_args.quantize_base = NULL; /* quantised after the score head is added (trainer_setup_peft) */
    if (trainer_load_policy(&load_args, model_path, &policy, &tmpl)) align_die_error("rm_train");
    Model *rm;
    if (rm_from_base(policy.model, (uint64_t)a.seed, &rm)) align_die_error("rm_train");
    if (rm != policy.model) {
        fprintf(stderr, "rm_train: %s -> reward model (score head [1, %d], LM head dropped)\n", model_path, rm->cfg.dim);
        model_free(policy.model);
        policy.model = rm;
    }
    t.model = rm;
    if (trainer_setup_peft("rm_train", &a, &policy)) align_die_error("rm_train");
    if (trainer_load_data("rm_train", &a, data, policy.tok, tmpl, DS_PREFERENCE, &t.train)) align_die_error("rm_train");
    if (a.eval_data && trainer_load_data("rm_train", &a, a.eval_data, policy.tok, tmpl, DS_PREFERENCE, &t.eval))
        align_die_error("rm_train");

    static const char *shown[] = {"loss", "accuracy", "margin", "lr", "tokens_per_s", NULL};
    TrainTask task = {.ctx = &t, .n_train = (int)t.train.n, .micro_step = rm_micro_step,
                      .evaluate = a.eval_data ? rm_evaluate : NULL, .shown = shown,
                      .one_backward = 1 /* rm_pairs_step: one forward, one backward */};
    int rc = trainer_run("rm_train", &a, &policy, &task);
    if (rc < 0) align_die_error("rm_train");
    if (rc == 0 && dist_rank() == 0) { /* under mpirun, rank 0 writes (dist.h) */
        /* reward statistics of the trained model on its training data */
        Metrics acc;
        metrics_clear(&acc);
        double mean, std;
        if (score_all(&t, &t.train, &acc, &mean, &std) || add_reward_stats(&policy, mean, std, 2 * t.train.n) ||
            trainer_save_model("rm_train", &a, &policy, a.out))
            align_die_error("rm_train");
        fprintf(stderr, "rm_train: training set: accuracy %.4f, reward mean %.6g, std %.6g (stored in %s)\n",
                metrics_get(&acc, "accuracy", 0), mean, std, a.out);
    }
    ds_free(&t.train);
    if (a.eval_data) ds_free(&t.eval);
    model_bundle_free(&policy);
    cli_free(&spec);
    return rc == 1 ? 130 : 0;
}
