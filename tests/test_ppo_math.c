/* The PPO math (ppo/ppo_math.h) against PyTorch (fixtures/make_ppo_fixtures.py,
 * written after TRL's PPOTrainer / RLOOTrainer, OpenRLHF's GRPO and
 * REINFORCE++, verl's dual clip; loss gradients by autograd), plus
 * hand-checked edge cases.
 *
 * Tolerances: per-token float outputs within 1e-5 relative + 1e-6 absolute
 * (the C side stores them as float; the reference is float64 from the same
 * float32 inputs); scalar losses, stats and metrics within 1e-5 relative +
 * 1e-7 absolute. Counts and the edge cases below are exact.
 *
 * The batch: 12 completions of lengths 5 1 7 3 9 2 4 6 3 3 8 1 (two of
 * length 1), two without EOS, groups of 4 for RLOO/GRPO with the last
 * group's scores all equal (GRPO std 0). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ppo_math.h"
#include "test.h"
#include "util.h"

#define TOK_RTOL 1e-5
#define TOK_ATOL 1e-6
#define SC_RTOL 1e-5
#define SC_ATOL 1e-7

static cJSON *get(cJSON *o, const char *k) {
    cJSON *v = cJSON_GetObjectItem(o, k);
    if (!v) {
        fprintf(stderr, "fixture: missing key %s\n", k);
        exit(2);
    }
    return v;
}
static double num(cJSON *o, const char *k) { return get(o, k)->valuedouble; }
static const char *str(cJSON *o, const char *k) { return get(o, k)->valuestring; }

static float *farr(cJSON *a) {
    int n = cJSON_GetArraySize(a);
    float *x = malloc((n + 1) * sizeof *x);
    for (int i = 0; i < n; i++) x[i] = (float)cJSON_GetArrayItem(a, i)->valuedouble;
    return x;
}

static void check_tokens(const float *got, cJSON *want, int n, const char *what, const char *case_name) {
    CHECK(cJSON_GetArraySize(want) == n, "%s %s: %d values in the fixture, %d here", case_name, what,
          cJSON_GetArraySize(want), n);
    int bad = 0;
    for (int i = 0; i < n && bad < 3; i++) {
        double w = cJSON_GetArrayItem(want, i)->valuedouble, g = got[i];
        if (!(fabs(g - w) <= TOK_ATOL + TOK_RTOL * fabs(w))) {
            bad++;
            CHECK(0, "%s %s[%d]: got %.9g want %.9g", case_name, what, i, g, w);
        }
    }
    if (!bad) CHECK(1, "ok");
}

static void check_scalar(double got, double want, const char *what, const char *case_name) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s", case_name, what);
    CHECK_CLOSE(got, want, SC_RTOL, SC_ATOL, msg);
}

/* ---- the fixture's batch ---- */
static int S, T;
static int32_t *offsets;
static PpoSeqs seqs;
static float *logp, *ref_logp, *values, *entropy, *scores_raw, *prior_scores;
static uint8_t *has_eos;
static int n_prior;

static void load_batch(cJSON *root) {
    cJSON *off = get(root, "offsets");
    S = cJSON_GetArraySize(off) - 1;
    offsets = malloc((S + 1) * sizeof *offsets);
    for (int i = 0; i <= S; i++) offsets[i] = cJSON_GetArrayItem(off, i)->valueint;
    T = offsets[S];
    seqs = (PpoSeqs){S, offsets};
    logp = farr(get(root, "logp"));
    ref_logp = farr(get(root, "ref_logp"));
    values = farr(get(root, "values"));
    entropy = farr(get(root, "entropy"));
    scores_raw = farr(get(root, "scores_raw"));
    prior_scores = farr(get(root, "prior_scores"));
    n_prior = cJSON_GetArraySize(get(root, "prior_scores"));
    has_eos = malloc(S);
    for (int i = 0; i < S; i++) has_eos[i] = (uint8_t)cJSON_GetArrayItem(get(root, "has_eos"), i)->valueint;
}

static void config_from(cJSON *c, PpoConfig *cfg) {
    ppo_config_defaults(cfg);
    CHECK(ppo_kl_estimator_parse("--kl-estimator", str(c, "kl_estimator"), &cfg->kl_estimator) == 0, "kl estimator");
    CHECK(ppo_score_norm_parse("--score-norm", str(c, "score_norm"), &cfg->score_norm) == 0, "score norm");
    CHECK(ppo_no_eos_parse("--no-eos", str(c, "no_eos"), &cfg->no_eos) == 0, "no eos");
    CHECK(ppo_advantage_parse("--advantage", str(c, "advantage"), &cfg->advantage) == 0, "advantage");
    cfg->kl_coef = num(c, "kl_coef");
    cfg->score_mean = num(c, "score_mean");
    cfg->score_std = num(c, "score_std");
    cfg->score_clip = num(c, "score_clip");
    cfg->no_eos_penalty = num(c, "no_eos_penalty");
    cfg->whiten_rewards = get(c, "whiten_rewards")->valueint;
    cfg->gamma = num(c, "gamma");
    cfg->lam = num(c, "lam");
    cfg->whiten_advantages = get(c, "whiten_advantages")->valueint;
    cfg->group_size = get(c, "group_size")->valueint;
    cfg->grpo_eps = num(c, "grpo_eps");
    cfg->grpo_scale_std = get(c, "grpo_scale_std")->valueint;
    CHECK(ppo_config_check(cfg) == 0, "config valid: %s", align_error());
}

/* Scores, KL, rewards, advantages, returns and rollout metrics of every
 * estimator and reward setting. */
static void test_reward_cases(cJSON *root) {
    float *kl = malloc(T * sizeof *kl), *rew = malloc(T * sizeof *rew), *adv = malloc(T * sizeof *adv);
    float *ret = malloc(T * sizeof *ret), *sc = malloc(S * sizeof *sc);
    cJSON *c;
    cJSON_ArrayForEach(c, get(root, "reward_cases")) {
        const char *name = str(c, "name");
        PpoConfig cfg;
        config_from(c, &cfg);
        PpoRunningMoments rm;
        ppo_running_init(&rm);
        ppo_running_update(&rm, prior_scores, n_prior); /* an earlier batch */
        CHECK(ppo_process_scores(&cfg, &rm, scores_raw, has_eos, S, sc) == 0, "%s: scores", name);
        check_tokens(sc, get(c, "scores"), S, "scores", name);
        ppo_kl(cfg.kl_estimator, logp, ref_logp, T, kl);
        check_tokens(kl, get(c, "kl"), T, "kl", name);
        CHECK(ppo_advantages(&cfg, &seqs, sc, kl, values, rew, adv, ret) == 0, "%s: advantages: %s", name, align_error());
        check_tokens(rew, get(c, "rewards"), T, "rewards", name);
        check_tokens(adv, get(c, "advantages"), T, "advantages", name);
        check_tokens(ret, get(c, "returns"), T, "returns", name);

        int gae = cfg.advantage == PPO_ADV_GAE;
        Metrics m;
        metrics_clear(&m);
        CHECK(ppo_rollout_metrics(&cfg, &seqs, kl, logp, sc, scores_raw, has_eos, entropy, gae ? values : NULL,
                                  gae ? ret : NULL, &m) == 0, "%s: metrics", name);
        cJSON *want = get(c, "metrics"), *w;
        cJSON_ArrayForEach(w, want) {
            if (!strcmp(w->string, "objective/entropy_from_logp")) continue;
            check_scalar(metrics_get(&m, w->string, NAN), w->valuedouble, w->string, name);
        }
        CHECK(isnan(metrics_get(&m, "val/explained_variance", NAN)) == !gae, "%s: explained variance iff a critic", name);
        check_scalar(metrics_get(&m, "objective/kl_coef", NAN), cfg.kl_coef, "objective/kl_coef", name);
        /* the pitfall: the logged KL is the penalty's own estimator, so the
         * penalty is exactly -kl_coef times the logged KL */
        check_scalar(metrics_get(&m, "objective/non_score_reward", NAN),
                     -cfg.kl_coef * metrics_get(&m, "objective/kl", NAN), "non_score_reward == -kl_coef * kl", name);
        /* without per-token entropies: TRL's sampled estimate -logp */
        metrics_clear(&m);
        ppo_rollout_metrics(&cfg, &seqs, kl, logp, sc, scores_raw, has_eos, NULL, NULL, NULL, &m);
        check_scalar(metrics_get(&m, "objective/entropy", NAN), num(want, "objective/entropy_from_logp"),
                     "objective/entropy from -logp", name);
    }
    free(kl), free(rew), free(adv), free(ret), free(sc);
}

/* The clipped policy loss: value, per-token gradient, stats. */
static void test_policy_cases(cJSON *root) {
    float *adv = farr(get(root, "advantages_for_losses")), *ent = farr(get(root, "entropy_new"));
    float *g = malloc(T * sizeof *g);
    int hi = get(get(root, "boundary"), "hi_index")->valueint, lo = get(get(root, "boundary"), "lo_index")->valueint;
    int dual_i = get(root, "dual_clip_index")->valueint;
    cJSON *c;
    cJSON_ArrayForEach(c, get(root, "policy_cases")) {
        const char *name = str(c, "name");
        PpoConfig cfg;
        ppo_config_defaults(&cfg);
        cfg.clip_low = num(c, "clip_low");
        cfg.clip_high = num(c, "clip_high");
        cfg.dual_clip = num(c, "dual_clip");
        cfg.kl_loss_coef = num(c, "kl_loss_coef");
        CHECK(ppo_kl_estimator_parse("--kl-loss-estimator", str(c, "kl_loss_estimator"), &cfg.kl_loss_estimator) == 0, "est");
        CHECK(ppo_loss_agg_parse("--loss-agg", str(c, "loss_agg"), &cfg.loss_agg) == 0, "agg");
        CHECK(ppo_config_check(&cfg) == 0, "%s: config: %s", name, align_error());
        float *lp = farr(get(c, "logp"));
        PpoPolicyStats st;
        CHECK(ppo_policy_loss(&cfg, &seqs, lp, logp, adv, ref_logp, ent, num(c, "denom"), g, &st) == 0, "%s", name);
        check_tokens(g, get(c, "dlogp"), T, "dlogp", name);
        cJSON *w = get(c, "stats");
        check_scalar(st.loss, num(w, "loss"), "loss", name);
        check_scalar(st.pg_loss, num(w, "pg_loss"), "pg_loss", name);
        check_scalar(st.kl_loss, num(w, "kl_loss"), "kl_loss", name);
        check_scalar(st.clipfrac, num(w, "clipfrac"), "clipfrac", name);
        check_scalar(st.dual_clipfrac, num(w, "dual_clipfrac"), "dual_clipfrac", name);
        check_scalar(st.approxkl, num(w, "approxkl"), "approxkl", name);
        check_scalar(st.ratio, num(w, "ratio"), "ratio", name);
        check_scalar(st.entropy, num(w, "entropy"), "entropy", name);
        CHECK(st.n_tokens == T, "%s: n_tokens", name);
        if (strstr(name, "exactly at")) {
            /* the ratios really sit on the bounds, and those tokens keep the
             * unclipped gradient -A * ratio / T (PyTorch's clamp passes it at
             * the bounds), where one ulp further out they would get 0 */
            double rh = exp((double)lp[hi] - logp[hi]), rl = exp((double)lp[lo] - logp[lo]);
            CHECK(rh == 1.0 + cfg.clip_high && adv[hi] > 0, "ratio %.17g at 1 + clip_high %.17g", rh, 1.0 + cfg.clip_high);
            CHECK(rl == 1.0 - cfg.clip_low && adv[lo] < 0, "ratio %.17g at 1 - clip_low %.17g", rl, 1.0 - cfg.clip_low);
            CHECK_CLOSE(g[hi], -adv[hi] * rh / T, 1e-6, 0, "gradient at the upper bound");
            CHECK_CLOSE(g[lo], -adv[lo] * rl / T, 1e-6, 0, "gradient at the lower bound");
            CHECK(g[hi] != 0 && g[lo] != 0, "boundary tokens keep their gradient");
        }
        if (cfg.dual_clip > 0)
            CHECK(g[dual_i] == 0 && adv[dual_i] < 0, "%s: ratio ~4 with A < 0 is capped by the dual clip (no gradient)", name);
        else
            CHECK(g[dual_i] != 0, "%s: ratio ~4 with A < 0 keeps its gradient without the dual clip", name);
        free(lp);
    }
    free(adv), free(ent), free(g);
}

static void test_value_cases(cJSON *root) {
    float *vnew = farr(get(root, "values_new")), *ret = farr(get(root, "returns_for_losses"));
    float *g = malloc(T * sizeof *g);
    cJSON *c;
    cJSON_ArrayForEach(c, get(root, "value_cases")) {
        const char *name = str(c, "name");
        PpoConfig cfg;
        ppo_config_defaults(&cfg);
        cfg.cliprange_value = num(c, "cliprange_value");
        CHECK(ppo_loss_agg_parse("--loss-agg", str(c, "loss_agg"), &cfg.loss_agg) == 0, "agg");
        PpoValueStats st;
        CHECK(ppo_value_loss(&cfg, &seqs, vnew, values, ret, num(c, "denom"), g, &st) == 0, "%s", name);
        check_tokens(g, get(c, "dvalues"), T, "dvalues", name);
        cJSON *w = get(c, "stats");
        check_scalar(st.loss, num(w, "loss"), "loss", name);
        check_scalar(st.clipfrac, num(w, "clipfrac"), "clipfrac", name);
        check_scalar(st.vpred, num(w, "vpred"), "vpred", name);
    }
    free(vnew), free(ret), free(g);
}

/* TRL's AdaptiveKLController over a sequence of updates; the fixed one never moves. */
static void test_kl_controller(cJSON *root) {
    cJSON *k = get(root, "kl_controller"), *u;
    PpoConfig cfg;
    ppo_config_defaults(&cfg);
    cfg.kl_coef = num(k, "init");
    cfg.kl_target = num(k, "target");
    cfg.kl_horizon = num(k, "horizon");
    cfg.adaptive_kl = 1;
    PpoKlController ad, fx;
    ppo_kl_controller_init(&ad, &cfg);
    cfg.adaptive_kl = 0;
    ppo_kl_controller_init(&fx, &cfg);
    cJSON_ArrayForEach(u, get(k, "updates")) {
        double v = ppo_kl_controller_update(&ad, num(u, "current"), (long)num(u, "n_steps"));
        char what[96];
        snprintf(what, sizeof what, "adaptive kl_coef after kl %g, n %g", num(u, "current"), num(u, "n_steps"));
        CHECK_CLOSE(v, num(u, "value"), 1e-12, 0, what);
        CHECK(ppo_kl_controller_update(&fx, num(u, "current"), (long)num(u, "n_steps")) == num(k, "init"), "fixed");
    }
}

/* ---- hand-checked behaviour ---- */

/* One completion of one token: A = r - V, R = r; whitening a single entry
 * gives 0 (PyTorch's unbiased variance would be NaN). */
static void test_single_token(void) {
    int32_t off[2] = {0, 1};
    PpoSeqs s = {1, off};
    PpoConfig cfg;
    ppo_config_defaults(&cfg);
    cfg.whiten_advantages = 0;
    float lp = -0.5f, ref = -0.7f, v = 0.25f, score = 2.0f, kl, rew, adv, ret;
    ppo_kl(PPO_KL_K1, &lp, &ref, 1, &kl);
    CHECK(ppo_advantages(&cfg, &s, &score, &kl, &v, &rew, &adv, &ret) == 0, "one token");
    double r = 2.0 - 0.05 * ((double)-0.5f - (double)-0.7f);
    CHECK_CLOSE(rew, r, 1e-6, 0, "reward = score - kl_coef * kl");
    CHECK_CLOSE(adv, r - 0.25, 1e-6, 0, "advantage = r - V");
    CHECK_CLOSE(ret, r, 1e-6, 0, "return = r");
    ppo_whiten(&adv, 1, 1);
    CHECK(adv == 0.0f, "one whitened advantage is 0");
    float x = 3.0f;
    ppo_whiten(&x, 1, 0);
    CHECK(x == 3.0f, "one whitened value keeps its mean when shift_mean = 0");
}

/* A completion that hit the length limit: subtract or replace, then clip. */
static void test_no_eos(void) {
    PpoConfig cfg;
    ppo_config_defaults(&cfg);
    float raw[3] = {1.5f, 1.5f, -4.0f}, out[3];
    uint8_t eos[3] = {1, 0, 0};
    cfg.no_eos = PPO_NO_EOS_SUBTRACT;
    cfg.no_eos_penalty = 1.0;
    ppo_process_scores(&cfg, NULL, raw, eos, 3, out);
    CHECK(out[0] == 1.5f && out[1] == 0.5f && out[2] == -5.0f, "subtract: %g %g %g", out[0], out[1], out[2]);
    cfg.score_clip = 4.5;
    ppo_process_scores(&cfg, NULL, raw, eos, 3, out);
    CHECK(out[2] == -4.5f, "clip after the penalty: %g", out[2]);
    cfg.no_eos = PPO_NO_EOS_REPLACE;
    ppo_process_scores(&cfg, NULL, raw, eos, 3, out);
    CHECK(out[0] == 1.5f && out[1] == -1.0f && out[2] == -1.0f, "replace: %g %g %g", out[0], out[1], out[2]);
    ppo_process_scores(&cfg, NULL, raw, NULL, 3, out);
    CHECK(out[1] == 1.5f, "has_eos NULL: every completion ended");
    cfg.score_norm = PPO_SCORE_RUNNING;
    CHECK(ppo_process_scores(&cfg, NULL, raw, eos, 3, out) == -1, "running normalisation needs its statistics");
}

/* GRPO: a group whose rewards are all equal has exactly zero advantages,
 * whatever eps; RLOO likewise; k < 2 or a ragged group count is an error. */
static void test_groups(void) {
    double r[6] = {0.3, 0.3, 0.3, 1.0, 2.0, 4.0}, a[6];
    CHECK(ppo_grpo_advantages(6, 3, r, 1e-9, 1, a) == 0, "grpo");
    CHECK(a[0] == 0 && a[1] == 0 && a[2] == 0, "equal group: exactly 0 (%g %g %g)", a[0], a[1], a[2]);
    /* second group: mean 7/3, unbiased std sqrt(7/3) */
    CHECK_CLOSE(a[5], (4.0 - 7.0 / 3) / (sqrt(7.0 / 3) + 1e-9), 1e-12, 0, "grpo (r - mean) / (std + eps)");
    CHECK(ppo_rloo_advantages(6, 3, r, 0, a) == 0, "rloo");
    CHECK(fabs(a[0]) < 1e-15 && fabs(a[1]) < 1e-15, "rloo: equal group gives 0");
    CHECK_CLOSE(a[3], 1.0 - (2.0 + 4.0) / 2, 1e-12, 0, "rloo: r_i - mean of the others");
    CHECK_CLOSE(a[3] + a[4] + a[5], 0.0, 0, 1e-12, "rloo advantages of a group sum to 0");
    CHECK(ppo_grpo_advantages(6, 4, r, 1e-4, 1, a) == -1 && strstr(align_error(), "groups of 4"), "6 into 4: %s", align_error());
    CHECK(ppo_rloo_advantages(6, 1, r, 0, a) == -1 && strstr(align_error(), "--group-size 1"), "k = 1: %s", align_error());
}

/* Splitting a minibatch into micro-batches with denom = the minibatch's
 * count gives the same per-token gradients and summed loss as one call. */
static void test_micro_batches(void) {
    int32_t off[5] = {0, 3, 4, 9, 11}, off_a[3] = {0, 3, 4}, off_b[3] = {0, 5, 7};
    PpoSeqs all = {4, off}, a = {2, off_a}, b = {2, off_b};
    float lp[11], old[11], adv[11], v[11], ov[11], R[11], g[11], ga[11], gv[11], gva[11];
    for (int i = 0; i < 11; i++) {
        old[i] = -1.0f - 0.1f * i;
        lp[i] = old[i] + 0.07f * ((i * 7) % 5 - 2);
        adv[i] = (float)sin(i * 1.3);
        ov[i] = (float)cos(i * 0.7);
        v[i] = ov[i] + 0.15f * ((i * 3) % 5 - 2);
        R[i] = (float)sin(i * 0.4 + 1);
    }
    for (int agg = 0; agg < PPO_AGG_COUNT; agg++) {
        PpoConfig cfg;
        ppo_config_defaults(&cfg);
        cfg.loss_agg = (PpoLossAgg)agg;
        cfg.loss_norm_len = 8;
        double denom = agg == PPO_AGG_TOKEN_MEAN ? 11 : 4;
        PpoPolicyStats p, pa, pb;
        PpoValueStats q, qa, qb;
        ppo_policy_loss(&cfg, &all, lp, old, adv, NULL, NULL, 0, g, &p);
        ppo_policy_loss(&cfg, &a, lp, old, adv, NULL, NULL, denom, ga, &pa);
        ppo_policy_loss(&cfg, &b, lp + 4, old + 4, adv + 4, NULL, NULL, denom, ga + 4, &pb);
        ppo_value_loss(&cfg, &all, v, ov, R, 0, gv, &q);
        ppo_value_loss(&cfg, &a, v, ov, R, denom, gva, &qa);
        ppo_value_loss(&cfg, &b, v + 4, ov + 4, R + 4, denom, gva + 4, &qb);
        const char *name = ppo_loss_agg_name(cfg.loss_agg);
        char what[96];
        snprintf(what, sizeof what, "%s: micro-batch policy losses add up", name);
        CHECK_CLOSE(pa.loss + pb.loss, p.loss, 1e-12, 1e-15, what);
        snprintf(what, sizeof what, "%s: micro-batch value losses add up", name);
        CHECK_CLOSE(qa.loss + qb.loss, q.loss, 1e-12, 1e-15, what);
        int same = 1;
        for (int i = 0; i < 11; i++) same &= fabsf(g[i] - ga[i]) <= 1e-7f * fabsf(g[i]) && fabsf(gv[i] - gva[i]) <= 1e-7f * fabsf(gv[i]);
        CHECK(same, "%s: micro-batch gradients equal the whole batch's", name);
    }
}

/* k3 is never negative, and is accurate for tiny differences (expm1). */
static void test_kl_estimators(void) {
    int neg = 0;
    for (int i = -50; i <= 50; i++) neg |= ppo_kl_token(PPO_KL_K3, -1.0 + 0.05 * i, -1.0) < 0;
    CHECK(!neg, "k3 >= 0");
    double d = 1e-9;
    CHECK_CLOSE(ppo_kl_token(PPO_KL_K3, d, 0), d * d / 2, 1e-6, 0, "k3 ~ d^2/2 near 0");
    CHECK(ppo_kl_token(PPO_KL_K1, -2.0, -1.0) == -1.0, "k1 can be negative (the logged-KL pitfall)");
    CHECK_CLOSE(ppo_kl_token_grad(PPO_KL_K3, -0.5, -0.2), 1 - exp(0.3), 1e-12, 0, "d k3 / d logp");
}

/* Training metrics are token-weighted means over the calls of a step. */
static void test_train_metrics(void) {
    PpoConfig cfg;
    ppo_config_defaults(&cfg);
    PpoPolicyStats a = {.pg_loss = 1.0, .clipfrac = 0.5, .n_tokens = 30}, b = {.pg_loss = 3.0, .clipfrac = 0.0, .n_tokens = 10};
    PpoValueStats va = {.loss = 2.0, .n_tokens = 30}, vb = {.loss = 6.0, .n_tokens = 10};
    Metrics m;
    metrics_clear(&m);
    ppo_train_metrics_add(&m, &cfg, &a, &va);
    ppo_train_metrics_add(&m, &cfg, &b, &vb);
    CHECK_CLOSE(metrics_get(&m, "loss/policy_avg", NAN), 1.5, 1e-12, 0, "loss/policy_avg token-weighted");
    CHECK_CLOSE(metrics_get(&m, "policy/clipfrac_avg", NAN), 0.375, 1e-12, 0, "policy/clipfrac_avg");
    CHECK_CLOSE(metrics_get(&m, "loss/value_avg", NAN), 3.0, 1e-12, 0, "loss/value_avg");
    CHECK(isnan(metrics_get(&m, "policy/dual_clipfrac_avg", NAN)), "no dual clip metric when it is off");
    float v[3] = {1, 2, 3}, r[3] = {1, 2, 3}, flat[3] = {2, 2, 2};
    CHECK(ppo_explained_variance(v, r, 3) == 1.0, "perfect critic: explained variance 1");
    CHECK(isnan(ppo_explained_variance(v, flat, 3)), "constant returns: NaN (metric left out)");
}

static void test_errors(void) {
    PpoKlEstimator e;
    CHECK(ppo_kl_estimator_parse("--kl-estimator", "k4", &e) == -1 && strstr(align_error(), "--kl-estimator k4") &&
              strstr(align_error(), "k1, k2 or k3"), "unknown estimator named: %s", align_error());
    PpoAdvantage a;
    CHECK(ppo_advantage_parse("--advantage", "reinforce++", &a) == 0 && a == PPO_ADV_REINFORCE_PP, "reinforce++");
    int32_t bad[3] = {0, 2, 2};
    PpoSeqs s = {2, bad};
    CHECK(ppo_seqs_check(&s) == -1 && strstr(align_error(), "completion 1 has no tokens"), "%s", align_error());
    PpoConfig cfg;
    ppo_config_defaults(&cfg);
    CHECK(ppo_config_check(&cfg) == 0, "defaults are valid");
    CHECK(cfg.kl_coef == 0.05 && cfg.gamma == 1.0 && cfg.lam == 0.95 && cfg.clip_low == 0.2 &&
              cfg.cliprange_value == 0.2 && cfg.kl_target == 6.0 && cfg.kl_horizon == 10000.0, "TRL defaults");
    cfg.dual_clip = 0.5;
    CHECK(ppo_config_check(&cfg) == -1 && strstr(align_error(), "--dual-clip 0.5"), "%s", align_error());
    ppo_config_defaults(&cfg);
    cfg.advantage = PPO_ADV_GRPO;
    cfg.group_size = 1;
    CHECK(ppo_config_check(&cfg) == -1 && strstr(align_error(), "--group-size 1"), "%s", align_error());
    ppo_config_defaults(&cfg);
    int32_t off[2] = {0, 2};
    PpoSeqs one = {1, off};
    float x[2] = {0, 0}, y[2];
    CHECK(ppo_advantages(&cfg, &one, x, x, NULL, y, y, y) == -1 && strstr(align_error(), "critic"), "gae without values");
    cfg.kl_loss_coef = 0.1;
    PpoPolicyStats st;
    CHECK(ppo_policy_loss(&cfg, &one, x, x, x, NULL, NULL, 0, NULL, &st) == -1 && strstr(align_error(), "reference"),
          "kl loss without ref log-probs: %s", align_error());
}

/* The GRPO family (DAPO, Dr. GRPO, GSPO, CISPO, truncated importance
 * sampling) against their formulas in PyTorch: loss, gradient, clip stats. */
static void test_family(cJSON *root) {
    float *adv = farr(get(root, "advantages_for_losses")), *lp = farr(get(root, "logp_new"));
    float *roll = farr(get(root, "rollout_logp"));
    float *g = malloc(T * sizeof *g), *w = malloc(T * sizeof *w);
    cJSON *c;
    cJSON_ArrayForEach(c, get(root, "family_cases")) {
        const char *name = str(c, "name");
        PpoConfig cfg;
        ppo_config_defaults(&cfg);
        CHECK(ppo_policy_loss_parse("--policy-loss", str(c, "policy_loss"), &cfg.policy_loss) == 0, "%s", name);
        CHECK(ppo_loss_agg_parse("--loss-agg", str(c, "loss_agg"), &cfg.loss_agg) == 0, "%s", name);
        cfg.clip_low = num(c, "clip_low");
        cfg.clip_high = num(c, "clip_high");
        cfg.loss_norm_len = get(c, "norm_len")->valueint;
        cfg.tis_cap = num(c, "tis_cap");
        cfg.kl_loss_coef = num(c, "kl_loss_coef");
        CHECK(ppo_config_check(&cfg) == 0, "%s: config: %s", name, align_error());
        if (cfg.tis_cap > 0) ppo_tis_weights(logp, roll, T, cfg.tis_cap, w);
        PpoPolicyStats st;
        CHECK(ppo_policy_loss_w(&cfg, &seqs, lp, logp, adv, ref_logp, NULL, cfg.tis_cap > 0 ? w : NULL, 0, g, &st) == 0,
              "%s: %s", name, align_error());
        check_tokens(g, get(c, "dlogp"), T, "dlogp", name);
        cJSON *want = get(c, "stats");
        check_scalar(st.loss, num(want, "loss"), "loss", name);
        check_scalar(st.pg_loss, num(want, "pg_loss"), "pg_loss", name);
        check_scalar(st.clipfrac_low, num(want, "clipfrac_low"), "clipfrac_low", name);
        check_scalar(st.clipfrac_high, num(want, "clipfrac_high"), "clipfrac_high", name);
        check_scalar(st.ratio, num(want, "ratio"), "ratio", name);
    }
    /* the length-normalised aggregation needs its length */
    PpoConfig cfg;
    ppo_config_defaults(&cfg);
    cfg.loss_agg = PPO_AGG_SEQ_MEAN_TOKEN_SUM_NORM;
    CHECK(ppo_config_check(&cfg) == -1 && strstr(align_error(), "--max-new-tokens"), "%s", align_error());
    free(adv), free(lp), free(roll), free(g), free(w);
}

/* Dynamic sampling's group filter and the completion metrics, by hand. */
static void test_dynamic_sampling(void) {
    float r[12] = {1, 0, 1, 1, /* spread */ 0, 0, 0, 0, /* all wrong */ 0.5f, 0.5f, 0.5f, 0.25f /* spread */};
    uint8_t keep[3];
    CHECK(ppo_groups_with_spread(12, 4, r, keep) == 2 && keep[0] && !keep[1] && keep[2], "two groups kept");
    CHECK(ppo_groups_with_spread(10, 4, r, keep) == -1, "groups must divide the batch");
    int32_t off[5] = {0, 3, 4, 10, 12};
    PpoSeqs s4 = {4, off};
    uint8_t eos[4] = {1, 0, 1, 0};
    float rr[4] = {1, 1, 0, 2};
    Metrics m;
    metrics_clear(&m);
    CHECK(ppo_completion_metrics(&s4, eos, rr, 2, &m) == 0, "completion metrics");
    CHECK(metrics_get(&m, "completions/mean_length", 0) == 3.0, "mean length 12/4");
    CHECK(metrics_get(&m, "completions/min_length", 0) == 1.0, "min length");
    CHECK(metrics_get(&m, "completions/max_length", 0) == 6.0, "max length");
    CHECK(metrics_get(&m, "completions/clipped_ratio", 0) == 0.5, "two of four cut");
    CHECK(metrics_get(&m, "frac_reward_zero_std", -1) == 0.5, "one of two groups without spread");
}

int main(void) {
    size_t len;
    char *text = align_read_file(ALIGN_TEST_DIR "/fixtures/ppo_math.json", &len);
    CHECK(text != NULL, "fixture: %s", align_error());
    if (!text) return test_summary();
    cJSON *root = cJSON_Parse(text);
    load_batch(root);
    test_reward_cases(root);
    test_policy_cases(root);
    test_value_cases(root);
    test_kl_controller(root);
    test_single_token();
    test_no_eos();
    test_groups();
    test_micro_batches();
    test_kl_estimators();
    test_train_metrics();
    test_errors();
    test_family(root);
    test_dynamic_sampling();
    cJSON_Delete(root);
    free(text);
    return test_summary();
}
