#include "ppo_reward.h"

#include <float.h>
#include <math.h>

#include "util.h"

/* ---- KL estimators ---- */

double ppo_kl_token(PpoKlEstimator e, double logp, double ref_logp) {
    double d = logp - ref_logp;
    switch (e) {
    case PPO_KL_K2: return 0.5 * d * d;
    case PPO_KL_K3: return expm1(-d) + d; /* exp(-d) - 1 + d without cancellation near d = 0 */
    default: return d;
    }
}

double ppo_kl_token_grad(PpoKlEstimator e, double logp, double ref_logp) {
    double d = logp - ref_logp;
    switch (e) {
    case PPO_KL_K2: return d;
    case PPO_KL_K3: return -expm1(-d); /* 1 - exp(-d) */
    default: return 1.0;
    }
}

void ppo_kl(PpoKlEstimator e, const float *logp, const float *ref_logp, int n, float *kl) {
    for (int i = 0; i < n; i++) kl[i] = (float)ppo_kl_token(e, logp[i], ref_logp[i]);
}

/* ---- scores ---- */

void ppo_running_init(PpoRunningMoments *r) {
    r->mean = 0.0;
    r->var = 1.0;
    r->std = 1.0;
    r->count = 1e-24;
}

void ppo_running_update(PpoRunningMoments *r, const float *x, int n) {
    if (n <= 0) return;
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n; /* biased within the batch, as torch.var_mean(unbiased=False) */
    double delta = mean - r->mean, tot = r->count + n;
    double m2 = r->var * r->count + delta * delta * r->count * n / tot + var * n;
    r->mean += delta * n / tot;
    r->var = m2 / tot;
    r->std = sqrt(r->var * tot / (tot - 1));
    r->count = tot;
}

int ppo_process_scores(const PpoConfig *c, PpoRunningMoments *running, const float *raw, const uint8_t *has_eos,
                       int n_seq, float *scores) {
    if (c->score_norm == PPO_SCORE_RUNNING) {
        if (!running) return align_errorf("ppo scores: running normalisation needs its running statistics");
        ppo_running_update(running, raw, n_seq);
    } else if (c->score_norm == PPO_SCORE_STORED && !(c->score_std > 0)) {
        return align_errorf("--score-std %g: must be > 0 to normalise scores", c->score_std);
    }
    for (int i = 0; i < n_seq; i++) {
        double s = raw[i];
        if (c->score_norm == PPO_SCORE_STORED) s = (s - c->score_mean) / c->score_std;
        else if (c->score_norm == PPO_SCORE_RUNNING) s = (s - running->mean) / (running->std + FLT_EPSILON);
        if (has_eos && !has_eos[i]) {
            if (c->no_eos == PPO_NO_EOS_SUBTRACT) s -= c->no_eos_penalty;
            else if (c->no_eos == PPO_NO_EOS_REPLACE) s = -c->no_eos_penalty;
        }
        if (c->score_clip > 0) s = s < -c->score_clip ? -c->score_clip : s > c->score_clip ? c->score_clip : s;
        scores[i] = (float)s;
    }
    return 0;
}

/* ---- per-token rewards ---- */

void ppo_whiten(float *x, int n, int shift_mean) {
    if (n <= 0) return;
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var = n > 1 ? var / (n - 1) : 0.0; /* unbiased; torch would give NaN for n = 1 */
    double rs = 1.0 / sqrt(var + 1e-8);
    for (int i = 0; i < n; i++) x[i] = (float)((x[i] - mean) * rs + (shift_mean ? 0.0 : mean));
}


int ppo_compute_rewards(const PpoConfig *c, const PpoSeqs *s, const float *kl, const float *scores, float *rewards) {
    if (ppo_seqs_check(s)) return -1;
    int T = ppo_seqs_tokens(s);
    for (int t = 0; t < T; t++) rewards[t] = (float)(-c->kl_coef * kl[t]);
    for (int i = 0; i < s->n_seq; i++) {
        int last = s->offsets[i + 1] - 1;
        rewards[last] = (float)((double)rewards[last] + scores[i]);
    }
    if (c->whiten_rewards) ppo_whiten(rewards, T, 0);
    return 0;
}

void ppo_seq_sum(const PpoSeqs *s, const float *x, double *out) {
    for (int i = 0; i < s->n_seq; i++) {
        double acc = 0;
        for (int t = s->offsets[i]; t < s->offsets[i + 1]; t++) acc += x[t];
        out[i] = acc;
    }
}

/* ---- KL control ---- */

void ppo_kl_controller_init(PpoKlController *k, const PpoConfig *c) {
    k->value = c->kl_coef;
    k->target = c->kl_target;
    k->horizon = c->kl_horizon;
    k->adaptive = c->adaptive_kl;
}

double ppo_kl_controller_update(PpoKlController *k, double current_kl, long n_steps) {
    if (!k->adaptive || !(k->target > 0) || !(k->horizon > 0)) return k->value;
    double e = current_kl / k->target - 1.0;
    e = e < -0.2 ? -0.2 : e > 0.2 ? 0.2 : e;
    k->value *= 1.0 + e * (double)n_steps / k->horizon;
    return k->value;
}
