/* align_demo: the whole alignment path on a built-in task, nothing to
 * download. It runs the real programs and prints each command:
 *
 *   model_init  a small Llama-family model, byte-level tokenizer, ChatML
 *   sft_run     supervised fine-tuning from scratch on answers written in two
 *               styles, calm ("Owls are quiet. ...") and SHOUTING ("OWLS
 *               ARE QUIET!!! ..."), half and half, so the SFT model does both
 *   dpo_run     DPO on pairs preferring calm over shouting, for 24 topics
 *   kto_run     KTO on the same labels, each pair split into a thumbs-up
 *               and a thumbs-down answer; its held-out accuracy beside DPO's
 *   logprobs    how often each model prefers the calm answer on held-out
 *               pairs about 6 topics DPO never saw
 *   generate    greedy answers to held-out prompts before and after DPO
 *   rm_train    a reward model on the same pairs
 *   ppo_run     PPO from the SFT model against that reward model (separate
 *               policy, reference, reward and rollout processes)
 *   rm_score    the reward of the greedy held-out answers of SFT, DPO, PPO
 *   align_report  report.html: the DPO and PPO curves overlaid and the
 *               held-out answers of SFT, DPO and PPO side by side (DPO and
 *               PPO also log to TensorBoard, in dpo-logs/ and ppo-logs/)
 *   sft_run + ppo_run --advantage grpo --reward math
 *               RL with a verifiable reward: "N+1=" taught by a careless
 *               teacher (half its answers forget the +1), then GRPO graded
 *               by the math verifier alone, evaluated (eval_pass@1) on
 *               numbers neither SFT nor GRPO ever saw
 *
 * The preference is checkable: the share of shouted answers must fall, the
 * held-out rewards/accuracies must reach 0.9, and PPO must raise the mean
 * reward of held-out answers; GRPO must raise held-out pass@1. Exit status
 * 0 when all four hold. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"

typedef struct {
    const char *name, *adj, *fact;
} Topic;

/* The first N_TRAIN topics are DPO's; the rest are held out. */
static const Topic TOPICS[] = {
    {"cats", "lovely", "they sleep in the sun"}, {"dogs", "loyal", "they like long walks"},
    {"rivers", "calm", "they run to the sea"}, {"trains", "fast", "they carry people far"},
    {"books", "wise", "they hold old stories"}, {"apples", "sweet", "they grow on trees"},
    {"clouds", "soft", "they bring the rain"}, {"bees", "busy", "they make honey"},
    {"stars", "bright", "they shine at night"}, {"forests", "green", "they give us air"},
    {"horses", "strong", "they run in fields"}, {"bridges", "useful", "they cross wide rivers"},
    {"songs", "happy", "they lift the heart"}, {"gardens", "pretty", "they need water"},
    {"mountains", "tall", "they touch the sky"}, {"boats", "steady", "they float on water"},
    {"candles", "warm", "they light dark rooms"}, {"lakes", "still", "they mirror the sky"},
    {"kites", "light", "they fly in the wind"}, {"maps", "handy", "they show the way"},
    {"shells", "smooth", "they wash up on beaches"}, {"clocks", "precise", "they count the hours"},
    {"roses", "fragrant", "they bloom in spring"}, {"pianos", "grand", "they play soft music"},
    /* held out */
    {"owls", "quiet", "they hunt at night"}, {"deserts", "dry", "they have little rain"},
    {"whales", "huge", "they sing in the ocean"}, {"lamps", "helpful", "they light our desks"},
    {"foxes", "clever", "they live in dens"}, {"violins", "elegant", "they have four strings"},
};
enum { N_TOPICS = sizeof TOPICS / sizeof *TOPICS, N_TRAIN = 24 };
static const char *PROMPTS[] = {"Tell me about %s.", "What do you think of %s?", "Describe %s in one sentence."};
enum { N_PROMPTS = 3 };

static char bin_dir[PATH_MAX];

static void calm(const Topic *t, char *out, size_t n) {
    snprintf(out, n, "%c%s are %s. %c%s.", toupper(t->name[0]), t->name + 1, t->adj, toupper(t->fact[0]), t->fact + 1);
}

static void shout(const Topic *t, char *out, size_t n) {
    snprintf(out, n, "%s ARE %s!!! %s!!!", t->name, t->adj, t->fact);
    for (char *p = out; *p; p++) *p = (char)toupper((unsigned char)*p);
}

static void prompt_text(int topic, int k, char *out, size_t n) { snprintf(out, n, PROMPTS[k], TOPICS[topic].name); }

static FILE *open_out(const char *dir, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) align_die("align_demo", "cannot write %s: %s", path, strerror(errno));
    return f;
}

static void write_record(FILE *f, const char *k1, const char *v1, const char *k2, const char *v2, const char *k3, const char *v3) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, k1, v1);
    if (k2) cJSON_AddStringToObject(o, k2, v2);
    if (k3) cJSON_AddStringToObject(o, k3, v3);
    char *s = cJSON_PrintUnformatted(o);
    fprintf(f, "%s\n", s);
    free(s);
    cJSON_Delete(o);
}

/* The built-in data: SFT in both styles for every topic; preference pairs
 * (calm over shouting) for the training topics; held-out pairs and prompts
 * for the rest. */
static void write_data(const char *dir) {
    FILE *sft = open_out(dir, "sft.jsonl"), *prefs = open_out(dir, "prefs.jsonl"),
         *heldout = open_out(dir, "prefs_heldout.jsonl"), *prompts = open_out(dir, "prompts_heldout.jsonl"),
         *train_prompts = open_out(dir, "prompts_train.jsonl");
    char p[128], c[256], s[256];
    for (int t = 0; t < N_TOPICS; t++) {
        calm(&TOPICS[t], c, sizeof c);
        shout(&TOPICS[t], s, sizeof s);
        for (int k = 0; k < N_PROMPTS; k++) {
            prompt_text(t, k, p, sizeof p);
            write_record(sft, "question", p, "answer", c, NULL, NULL);
            write_record(sft, "question", p, "answer", s, NULL, NULL);
            write_record(t < N_TRAIN ? prefs : heldout, "prompt", p, "chosen", c, "rejected", s);
            write_record(t < N_TRAIN ? train_prompts : prompts, "prompt", p, NULL, NULL, NULL, NULL);
        }
    }
    fclose(sft), fclose(prefs), fclose(heldout), fclose(prompts), fclose(train_prompts);
}

/* The verifiable task: "N+1=" for three-digit N not ending in 9 (no carry,
 * so the answer is N's first digits copied and the last one counted up: a
 * rule the small model can learn, not a table it must memorise). The
 * numbers are shuffled once with a fixed generator, so the task is the same
 * for every --seed; disjoint slices go to SFT, GRPO and evaluation. The SFT
 * teacher is careless: every other answer repeats N, so the SFT model
 * answers right about half the time, and the verifier has something to
 * teach that generalises to numbers it never saw. */
enum { ARITH_SFT = 300, ARITH_RL = 160, ARITH_HELD = 40 };

static void write_arith(const char *dir) {
    int nums[810], n = 0;
    for (int v = 100; v < 1000; v++)
        if (v % 10 != 9) nums[n++] = v;
    unsigned long long x = 88172645463325252ULL; /* xorshift64: the same on every platform */
    for (int i = n - 1; i > 0; i--) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int j = (int)(x % (unsigned long long)(i + 1)), t = nums[i];
        nums[i] = nums[j], nums[j] = t;
    }
    FILE *sft = open_out(dir, "arith_sft.jsonl"), *rl = open_out(dir, "arith_prompts.jsonl"),
         *held = open_out(dir, "arith_heldout.jsonl");
    char q[16], a[16];
    for (int i = 0; i < ARITH_SFT + ARITH_RL + ARITH_HELD; i++) {
        snprintf(q, sizeof q, "%d+1=", nums[i]);
        if (i < ARITH_SFT) {
            snprintf(a, sizeof a, "%d", nums[i] + (i % 2 == 0)); /* the careless teacher */
            write_record(sft, "question", q, "answer", a, NULL, NULL);
        } else {
            snprintf(a, sizeof a, "%d", nums[i] + 1);
            write_record(i < ARITH_SFT + ARITH_RL ? rl : held, "prompt", q, "answer", a, NULL, NULL);
        }
    }
    fclose(sft), fclose(rl), fclose(held);
}

/* Print the command, run it, stop the demo if it fails. */
static void run(const char *const *argv) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", bin_dir, argv[0]);
    printf("\n$ %s", argv[0]);
    for (int i = 1; argv[i]; i++) printf(" %s", argv[i]);
    printf("\n");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execv(path, (char *const *)argv);
        fprintf(stderr, "align_demo: cannot run %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        align_die("align_demo", "%s failed; see its message above", argv[0]);
}

/* Share of held-out pairs whose calm answer has the higher log-prob. */
static double calm_preferred(const char *path, int *n_out) {
    FILE *f = fopen(path, "r");
    if (!f) align_die("align_demo", "cannot read %s", path);
    char line[512];
    int n = 0, calm_wins = 0;
    while (fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        if (!o) continue;
        double c = cJSON_GetObjectItem(o, "chosen_logp")->valuedouble, r = cJSON_GetObjectItem(o, "rejected_logp")->valuedouble;
        calm_wins += c > r;
        n++;
        cJSON_Delete(o);
    }
    fclose(f);
    *n_out = n;
    return n ? (double)calm_wins / n : 0;
}

/* Completions from generate's JSONL (at most max); returns the count. */
static int read_completions(const char *path, char out[][256], int max) {
    FILE *f = fopen(path, "r");
    if (!f) align_die("align_demo", "cannot read %s", path);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (n < max && getline(&line, &cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        cJSON *c = cJSON_GetObjectItem(o, "completion");
        if (cJSON_IsString(c)) {
            snprintf(out[n], 256, "%s", c->valuestring);
            char *nl = strpbrk(out[n], "\r\n");
            if (nl) *nl = 0;
            n++;
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return n;
}

static int is_shouting(const char *s) {
    int upper = 0, lower = 0;
    for (; *s; s++) upper += isupper((unsigned char)*s) != 0, lower += islower((unsigned char)*s) != 0;
    return upper > lower;
}

/* Held-out prompts with their greedy answers, as records rm_score reads. */
static void write_answers(const char *path, char answers[][256], int n) {
    FILE *f = fopen(path, "w");
    if (!f) align_die("align_demo", "cannot write %s", path);
    char p[128];
    for (int i = 0; i < n; i++) {
        prompt_text(N_TRAIN + i / N_PROMPTS, i % N_PROMPTS, p, sizeof p);
        write_record(f, "prompt", p, "completion", answers[i], NULL, NULL);
    }
    fclose(f);
}

/* Mean "score" of rm_score's output. */
static double mean_score(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) align_die("align_demo", "cannot read %s", path);
    char *line = NULL;
    size_t cap = 0;
    double sum = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        cJSON *sc = cJSON_GetObjectItem(o, "score");
        if (cJSON_IsNumber(sc)) sum += sc->valuedouble, n++;
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return n ? sum / n : 0;
}

/* The first (first = 1) or last value of a metric in a metrics JSONL file
 * (-1 when absent). */
static double find_metric(const char *path, const char *key, int first) {
    FILE *f = fopen(path, "r");
    if (!f) align_die("align_demo", "cannot read %s", path);
    char *line = NULL;
    size_t cap = 0;
    double v = -1;
    int found = 0;
    while (getline(&line, &cap, f) > 0 && !(first && found)) {
        cJSON *o = cJSON_Parse(line);
        cJSON *a = cJSON_GetObjectItem(o, key);
        if (cJSON_IsNumber(a)) v = a->valuedouble, found = 1;
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return v;
}

static double last_metric(const char *path, const char *key) { return find_metric(path, key, 0); }

/* eval_rewards/accuracies of dpo_run's last evaluation. */
static double last_eval_accuracy(const char *path) { return last_metric(path, "eval_rewards/accuracies"); }

int main(int argc, char **argv) {
    const char *dir = "demo-out";
    int seed = 1;
    CliFlag flags[] = {
        {"out-dir", CLI_STRING, &dir, "where data, models and logs go"},
        {"seed", CLI_INT, &seed, "seed for weights, data order and sampling", CLI_ANY},
    };
    CliSpec spec = {.prog = "align_demo", .usage = "align_demo [flags]",
                    .about = "SFT from scratch, then DPO, and a reward model + PPO, towards calm answers on built-in data; then GRPO with a math verifier on built-in arithmetic; prints before/after figures.",
                    .flags = flags, .n_flags = 2};
    cli_parse_or_exit(&spec, argc, argv);
    ssize_t len = readlink("/proc/self/exe", bin_dir, sizeof bin_dir - 1);
    if (len <= 0) align_die("align_demo", "cannot find my own directory");
    bin_dir[len] = 0;
    *strrchr(bin_dir, '/') = 0;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) align_die("align_demo", "--out-dir %s: %s", dir, strerror(errno));
    write_data(dir);
    write_arith(dir);
    double t0 = align_now();
    printf("align demo: teach a model to answer, then to prefer calm answers over SHOUTING ones.\n"
           "Data in %s/: %d SFT examples (both styles), %d preference pairs on %d topics, %d held-out pairs on %d unseen topics.\n",
           dir, N_TOPICS * N_PROMPTS * 2, N_TRAIN * N_PROMPTS, N_TRAIN, (N_TOPICS - N_TRAIN) * N_PROMPTS, N_TOPICS - N_TRAIN);
    printf("Then arithmetic checked by a verifier: %d \"N+1=\" answers from a careless teacher for SFT, %d labelled prompts "
           "for GRPO, %d held out.\n", ARITH_SFT, ARITH_RL, ARITH_HELD);

    char p_init[PATH_MAX], p_sft[PATH_MAX], p_dpo[PATH_MAX], p_sftdata[PATH_MAX], p_prefs[PATH_MAX], p_held[PATH_MAX],
        p_prompts[PATH_MAX], p_lp0[PATH_MAX], p_lp1[PATH_MAX], p_g0[PATH_MAX], p_g1[PATH_MAX], p_metrics[PATH_MAX], s_seed[16],
        p_rm[PATH_MAX], p_ppo[PATH_MAX], p_train_prompts[PATH_MAX], p_g2[PATH_MAX], p_ppo_metrics[PATH_MAX],
        p_ans[3][PATH_MAX], p_scores[3][PATH_MAX], p_report[PATH_MAX], p_kto[PATH_MAX], p_kto_metrics[PATH_MAX],
        p_arith_sft[PATH_MAX], p_arith_rl[PATH_MAX], p_arith_held[PATH_MAX], p_arith_model[PATH_MAX], p_grpo[PATH_MAX],
        p_grpo_metrics[PATH_MAX];
#define P(var, name) snprintf(var, sizeof var, "%s/%s", dir, name)
    P(p_init, "init.ckpt"), P(p_sft, "sft.ckpt"), P(p_dpo, "dpo.ckpt"), P(p_sftdata, "sft.jsonl");
    P(p_prefs, "prefs.jsonl"), P(p_held, "prefs_heldout.jsonl"), P(p_prompts, "prompts_heldout.jsonl");
    P(p_lp0, "logprobs_sft.jsonl"), P(p_lp1, "logprobs_dpo.jsonl"), P(p_g0, "samples_sft.jsonl");
    P(p_g1, "samples_dpo.jsonl"), P(p_metrics, "dpo_metrics.jsonl");
    P(p_rm, "rm.ckpt"), P(p_ppo, "ppo.ckpt"), P(p_train_prompts, "prompts_train.jsonl"), P(p_g2, "samples_ppo.jsonl");
    P(p_ppo_metrics, "ppo_metrics.jsonl"), P(p_report, "report.html"), P(p_kto, "kto.ckpt"),
        P(p_kto_metrics, "kto_metrics.jsonl");
    P(p_ans[0], "answers_sft.jsonl"), P(p_ans[1], "answers_dpo.jsonl"), P(p_ans[2], "answers_ppo.jsonl");
    P(p_arith_sft, "arith_sft.jsonl"), P(p_arith_rl, "arith_prompts.jsonl"), P(p_arith_held, "arith_heldout.jsonl");
    P(p_arith_model, "arith_sft.ckpt"), P(p_grpo, "grpo.ckpt"), P(p_grpo_metrics, "grpo_metrics.jsonl");
    P(p_scores[0], "scores_sft.jsonl"), P(p_scores[1], "scores_dpo.jsonl"), P(p_scores[2], "scores_ppo.jsonl");
#undef P
    snprintf(s_seed, sizeof s_seed, "%d", seed);

    printf("\n== 1. a new model ==");
    run((const char *[]){"model_init", "--arch", "llama", "--dim", "128", "--layers", "4", "--heads", "4", "--kv-heads", "2",
                         "--tokenizer", "byte", "--chat-template", "chatml", "--seed", s_seed, "--out", p_init, NULL});
    printf("\n== 2. supervised fine-tuning from scratch ==");
    run((const char *[]){"sft_run", "--model", p_init, "--data", p_sftdata, "--out", p_sft, "--lr", "3e-3", "--batch-size", "16",
                         "--max-steps", "300", "--warmup-steps", "20", "--lr-schedule", "cosine", "--weight-decay", "0.1",
                         "--seed", s_seed, NULL});
    run((const char *[]){"logprobs", "--model", p_sft, "--data", p_held, "--out", p_lp0, NULL});
    run((const char *[]){"generate", "--model", p_sft, "--prompts", p_prompts, "--temperature", "0", "--max-new-tokens", "60",
                         "--out", p_g0, NULL});
    printf("\n== 3. DPO: calm answers preferred ==");
    run((const char *[]){"dpo_run", "--policy", p_sft, "--data", p_prefs, "--eval-data", p_held, "--out", p_dpo, "--loss", "sigmoid",
                         "--beta", "0.1", "--lr", "5e-5", "--batch-size", "8", "--max-steps", "40", "--warmup-steps", "5",
                         "--lr-schedule", "cosine", "--precompute-ref", "--metrics", p_metrics, "--report-to", "tensorboard",
                         "--seed", s_seed, NULL});
    run((const char *[]){"logprobs", "--model", p_dpo, "--data", p_held, "--out", p_lp1, NULL});
    run((const char *[]){"generate", "--model", p_dpo, "--prompts", p_prompts, "--temperature", "0", "--max-new-tokens", "60",
                         "--out", p_g1, NULL});

    printf("\n== 3b. KTO on the same labels, unpaired (thumbs up: calm, thumbs down: shouting) ==");
    /* 16 examples a step = 8 pairs' labels, so 40 steps see what DPO saw */
    run((const char *[]){"kto_run", "--policy", p_sft, "--data", p_prefs, "--eval-data", p_held, "--out", p_kto,
                         "--beta", "0.1", "--lr", "5e-5", "--batch-size", "16", "--max-steps", "40", "--warmup-steps", "5",
                         "--lr-schedule", "cosine", "--metrics", p_kto_metrics, "--seed", s_seed, NULL});

    printf("\n== 4. a reward model on the same pairs, then PPO against it ==");
    run((const char *[]){"rm_train", p_prefs, "--model", p_sft, "--out", p_rm, "--eval-data", p_held, "--lr", "1e-3",
                         "--batch-size", "8", "--max-steps", "30", "--seed", s_seed, NULL});
    run((const char *[]){"ppo_run", "--policy", p_sft, "--reward", p_rm, "--prompts", p_train_prompts, "--out", p_ppo,
                         "--max-steps", "20", "--batch-size", "8", "--n", "2", "--max-new-tokens", "48", "--lr", "5e-5",
                         "--kl-coef", "0.05", "--metrics", p_ppo_metrics, "--report-to", "tensorboard", "--seed", s_seed, NULL});
    run((const char *[]){"generate", "--model", p_ppo, "--prompts", p_prompts, "--temperature", "0", "--max-new-tokens", "60",
                         "--out", p_g2, NULL});
    run((const char *[]){"align_report", p_metrics, p_ppo_metrics, p_g0, p_g1, p_g2, "--out", p_report, NULL});

    int n0, n1;
    double pref0 = calm_preferred(p_lp0, &n0), pref1 = calm_preferred(p_lp1, &n1);
    double acc = last_eval_accuracy(p_metrics), acc_kto = last_eval_accuracy(p_kto_metrics);
    static char before[32][256], after[32][256], ppo[32][256];
    int k0 = read_completions(p_g0, before, 32), k1 = read_completions(p_g1, after, 32), k2 = read_completions(p_g2, ppo, 32);
    int shout0 = 0, shout1 = 0, shout2 = 0;
    for (int i = 0; i < k0; i++) shout0 += is_shouting(before[i]);
    for (int i = 0; i < k1; i++) shout1 += is_shouting(after[i]);
    for (int i = 0; i < k2; i++) shout2 += is_shouting(ppo[i]);
    write_answers(p_ans[0], before, k0), write_answers(p_ans[1], after, k1), write_answers(p_ans[2], ppo, k2);
    double reward[3];
    for (int i = 0; i < 3; i++) {
        run((const char *[]){"rm_score", "--model", p_rm, "--data", p_ans[i], "--out", p_scores[i], NULL});
        reward[i] = mean_score(p_scores[i]);
    }
    double ppo_kl = last_metric(p_ppo_metrics, "objective/kl");

    /* SFT: the copy-and-count rule appears suddenly (the loss drops from
     * ~1.7 to ~0.3 somewhere between steps 200 and 300, depending on the
     * data order), so 600 steps leave a margin; 400 sometimes stopped
     * before it. GRPO as TRL runs it by default (beta 0: no KL term, one
     * pass over each batch), with a short warmup: the first full-size Adam
     * steps on this small model undo half of what SFT taught. */
    printf("\n== 5. RL with a verifiable reward: GRPO on \"N+1=\", graded by the math verifier, no reward model ==");
    run((const char *[]){"sft_run", "--model", p_init, "--data", p_arith_sft, "--out", p_arith_model, "--lr", "3e-3",
                         "--batch-size", "16", "--max-steps", "600", "--warmup-steps", "10", "--lr-schedule", "cosine",
                         "--weight-decay", "0.1", "--seed", s_seed, NULL});
    run((const char *[]){"ppo_run", "--policy", p_arith_model, "--prompts", p_arith_rl, "--advantage", "grpo", "--reward",
                         "math", "--n", "8", "--batch-size", "16", "--max-new-tokens", "6", "--lr", "1e-3",
                         "--warmup-steps", "3", "--ppo-epochs", "1", "--kl-coef", "0", "--max-steps", "30", "--eval-data",
                         p_arith_held, "--eval-every", "10", "--out", p_grpo, "--metrics", p_grpo_metrics, "--seed", s_seed,
                         NULL});
    double pass0 = find_metric(p_grpo_metrics, "eval_pass@1", 1), pass1 = find_metric(p_grpo_metrics, "eval_pass@1", 0);
    double train0 = find_metric(p_grpo_metrics, "rewards/math/mean", 1),
           train1 = find_metric(p_grpo_metrics, "rewards/math/mean", 0);

    printf("\n== result (%.0f s) ==\n", align_now() - t0);
    printf("held-out pairs (topics DPO never saw): rewards/accuracies %.2f\n", acc);
    printf("the same held-out pairs after KTO on the same labels, unpaired: rewards/accuracies %.2f\n", acc_kto);
    printf("held-out pairs where the model gives the calm answer more probability: SFT %.0f%% -> DPO %.0f%% (of %d)\n",
           100 * pref0, 100 * pref1, n1);
    printf("greedy answers to held-out prompts that shout: SFT %d of %d -> DPO %d of %d, PPO %d of %d\n", shout0, k0,
           shout1, k1, shout2, k2);
    printf("mean reward-model score of those answers: SFT %.2f -> DPO %.2f, PPO %.2f (PPO's last objective/kl %.2f)\n",
           reward[0], reward[1], reward[2], ppo_kl);
    /* samples are in prompt order: topic-major, N_PROMPTS per topic */
    for (int i = 0; i < 3 && (i + 1) * N_PROMPTS <= k0 && (i + 1) * N_PROMPTS <= k1 && (i + 1) * N_PROMPTS <= k2; i++) {
        char p[128];
        prompt_text(N_TRAIN + i, i, p, sizeof p);
        printf("  %s\n    SFT: %s\n    DPO: %s\n    PPO: %s\n", p, before[i * N_PROMPTS + i], after[i * N_PROMPTS + i],
               i * N_PROMPTS + i < k2 ? ppo[i * N_PROMPTS + i] : "");
    }
    printf("held-out \"N+1=\" (numbers neither SFT nor GRPO saw), pass@1 by the math verifier: SFT %.2f -> GRPO %.2f "
           "(training batches' mean reward %.2f -> %.2f)\n", pass0, pass1, train0, train1);
    printf("curves and samples: %s (TensorBoard: tensorboard --logdir %s)\n", p_report, dir);
    int ok = acc >= 0.9 && shout1 < shout0 + (shout0 == 0) && reward[2] > reward[0];
    printf("%s\n", ok ? "the preference was learned." : "the preference was NOT learned well enough (accuracy < 0.9, no less shouting, or no higher reward after PPO).");
    int ok_rl = pass1 >= pass0 + 0.05;
    printf("%s\n", ok_rl ? "the verifier's lesson was learned." : "GRPO did NOT raise held-out pass@1 by 0.05 or more.");
    ok = ok && ok_rl;
    cli_free(&spec);
    return ok ? 0 : 1;
}
