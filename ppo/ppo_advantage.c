#include "ppo_advantage.h"

#include <math.h>
#include <stdlib.h>

#include "util.h"

int ppo_gae(const PpoSeqs *s, const float *rewards, const float *values, double gamma, double lam, float *adv,
            float *ret) {
    if (ppo_seqs_check(s)) return -1;
    if (!values) return align_errorf("ppo gae: needs the critic's values");
    for (int i = 0; i < s->n_seq; i++) {
        double next_value = 0.0, last_gae = 0.0; /* past the last token the episode is over */
        for (int t = s->offsets[i + 1] - 1; t >= s->offsets[i]; t--) {
            double delta = rewards[t] + gamma * next_value - values[t];
            last_gae = delta + gamma * lam * last_gae;
            adv[t] = (float)last_gae;
            ret[t] = (float)(last_gae + values[t]);
            next_value = values[t];
        }
    }
    return 0;
}

void ppo_returns_to_go(const PpoSeqs *s, const float *rewards, double gamma, float *ret) {
    for (int i = 0; i < s->n_seq; i++) {
        double acc = 0.0;
        for (int t = s->offsets[i + 1] - 1; t >= s->offsets[i]; t--) {
            acc = rewards[t] + gamma * acc;
            ret[t] = (float)acc;
        }
    }
}

static int check_groups(const char *what, int n_seq, int k) {
    if (k < 2) return align_errorf("--group-size %d: %s needs at least 2 completions per prompt", k, what);
    if (n_seq <= 0 || n_seq % k)
        return align_errorf("%s: %d completions do not split into groups of %d (--group-size)", what, n_seq, k);
    return 0;
}

int ppo_rloo_advantages(int n_seq, int k, const double *seq_rewards, int normalize, double *adv) {
    if (check_groups("rloo", n_seq, k)) return -1;
    for (int g = 0; g < n_seq; g += k) {
        double sum = 0;
        for (int j = 0; j < k; j++) sum += seq_rewards[g + j];
        /* r_i - (sum - r_i)/(k-1) = (k r_i - sum)/(k-1) */
        for (int j = 0; j < k; j++) adv[g + j] = seq_rewards[g + j] - (sum - seq_rewards[g + j]) / (k - 1);
    }
    if (normalize) {
        double mean = 0, var = 0;
        for (int i = 0; i < n_seq; i++) mean += adv[i];
        mean /= n_seq;
        for (int i = 0; i < n_seq; i++) var += (adv[i] - mean) * (adv[i] - mean);
        double sd = n_seq > 1 ? sqrt(var / (n_seq - 1)) : 0.0;
        for (int i = 0; i < n_seq; i++) adv[i] = (adv[i] - mean) / (sd + 1e-8);
    }
    return 0;
}

int ppo_grpo_advantages(int n_seq, int k, const double *rewards, double eps, int scale_std, double *adv) {
    if (check_groups("grpo", n_seq, k)) return -1;
    double batch_sd = 0;
    if (scale_std == PPO_SCALE_BATCH) { /* TRL scale_rewards="batch": one std over every completion (unbiased) */
        double mean = 0, var = 0;
        for (int i = 0; i < n_seq; i++) mean += rewards[i];
        mean /= n_seq;
        for (int i = 0; i < n_seq; i++) var += (rewards[i] - mean) * (rewards[i] - mean);
        batch_sd = sqrt(var / (n_seq - 1));
    }
    for (int g = 0; g < n_seq; g += k) {
        double mean = 0, var = 0;
        int equal = 1;
        for (int j = 0; j < k; j++) {
            mean += rewards[g + j];
            equal &= rewards[g + j] == rewards[g];
        }
        mean /= k;
        for (int j = 0; j < k; j++) var += (rewards[g + j] - mean) * (rewards[g + j] - mean);
        double sd = scale_std == PPO_SCALE_BATCH ? batch_sd : sqrt(var / (k - 1));
        for (int j = 0; j < k; j++) {
            /* equal rewards: exactly 0, not the rounding error of their mean over eps */
            double a = equal ? 0.0 : rewards[g + j] - mean;
            adv[g + j] = scale_std != PPO_SCALE_NONE ? a / (sd + eps) : a;
        }
    }
    return 0;
}

int ppo_groups_with_spread(int n_seq, int k, const float *rewards, uint8_t *keep) {
    if (check_groups("dynamic sampling", n_seq, k)) return -1;
    int kept = 0;
    for (int g = 0; g < n_seq; g += k) {
        int equal = 1;
        for (int j = 1; j < k; j++) equal &= rewards[g + j] == rewards[g];
        keep[g / k] = !equal;
        kept += !equal;
    }
    return kept;
}

void ppo_broadcast(const PpoSeqs *s, const double *per_seq, float *per_token) {
    for (int i = 0; i < s->n_seq; i++)
        for (int t = s->offsets[i]; t < s->offsets[i + 1]; t++) per_token[t] = (float)per_seq[i];
}

void ppo_reinforce_pp(const PpoSeqs *s, const float *rewards, double gamma, float *adv, float *ret) {
    int T = ppo_seqs_tokens(s);
    ppo_returns_to_go(s, rewards, gamma, ret);
    double mean = 0, var = 0;
    for (int t = 0; t < T; t++) mean += ret[t];
    mean /= T;
    for (int t = 0; t < T; t++) var += (ret[t] - mean) * (ret[t] - mean);
    var /= T;
    double rs = 1.0 / sqrt(var > 1e-8 ? var : 1e-8);
    for (int t = 0; t < T; t++) adv[t] = (float)((ret[t] - mean) * rs);
}

int ppo_advantages(const PpoConfig *c, const PpoSeqs *s, const float *scores, const float *kl, const float *values,
                   float *rewards, float *adv, float *ret) {
    if (ppo_seqs_check(s)) return -1;
    int S = s->n_seq, T = ppo_seqs_tokens(s), rc = 0;
    switch (c->advantage) {
    case PPO_ADV_GAE:
        if (!values) return align_errorf("--advantage gae: needs a critic's values");
        if (ppo_compute_rewards(c, s, kl, scores, rewards) || ppo_gae(s, rewards, values, c->gamma, c->lam, adv, ret))
            return -1;
        if (c->whiten_advantages) ppo_whiten(adv, T, 1);
        return 0;
    case PPO_ADV_REINFORCE_PP:
        if (ppo_compute_rewards(c, s, kl, scores, rewards)) return -1;
        ppo_reinforce_pp(s, rewards, c->gamma, adv, ret);
        return 0;
    case PPO_ADV_RLOO:
    case PPO_ADV_GRPO: {
        double *a = align_alloc(2 * (size_t)S * sizeof(double)), *r = a ? a + S : NULL;
        if (!a) return -1;
        if (c->advantage == PPO_ADV_RLOO) {
            if (ppo_compute_rewards(c, s, kl, scores, rewards)) rc = -1;
            if (!rc) ppo_seq_sum(s, rewards, r);
            if (!rc) rc = ppo_rloo_advantages(S, c->group_size, r, c->whiten_advantages, a);
            if (!rc) {
                ppo_broadcast(s, a, adv);
                for (int t = 0; t < T; t++) ret[t] = adv[t];
            }
        } else {
            for (int i = 0; i < S; i++) r[i] = scores[i];
            rc = ppo_grpo_advantages(S, c->group_size, r, c->grpo_eps, c->grpo_scale_std, a);
            float *normed = rc ? NULL : align_alloc((size_t)S * sizeof(float));
            if (!rc && !normed) rc = -1;
            if (!rc) {
                for (int i = 0; i < S; i++) normed[i] = (float)a[i];
                rc = ppo_compute_rewards(c, s, kl, normed, rewards);
            }
            if (!rc) {
                ppo_returns_to_go(s, rewards, c->gamma, ret);
                for (int t = 0; t < T; t++) adv[t] = ret[t];
            }
            align_free(normed);
        }
        align_free(a);
        return rc;
    }
    default:
        return align_errorf("--advantage: unknown estimator %d", (int)c->advantage);
    }
}
