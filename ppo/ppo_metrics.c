#include "ppo_metrics.h"

#include <math.h>

#include "util.h"

double ppo_explained_variance(const float *values, const float *returns, int n) {
    if (n <= 0) return NAN;
    double mr = 0, me = 0;
    for (int i = 0; i < n; i++) {
        mr += returns[i];
        me += (double)returns[i] - values[i];
    }
    mr /= n;
    me /= n;
    double vr = 0, ve = 0;
    for (int i = 0; i < n; i++) {
        double e = (double)returns[i] - values[i];
        vr += (returns[i] - mr) * (returns[i] - mr);
        ve += (e - me) * (e - me);
    }
    return vr > 0 ? 1.0 - ve / vr : NAN;
}

int ppo_rollout_metrics(const PpoConfig *c, const PpoSeqs *s, const float *kl, const float *logp,
                        const float *scores, const float *raw_scores, const uint8_t *has_eos,
                        const float *entropy, const float *values, const float *returns, Metrics *m) {
    if (ppo_seqs_check(s)) return -1;
    int S = s->n_seq, T = ppo_seqs_tokens(s);
    double kl_sum = 0, ent_sum = 0, sc = 0, raw = 0, eos = 0;
    for (int t = 0; t < T; t++) {
        kl_sum += kl[t];
        ent_sum += entropy ? entropy[t] : -(double)logp[t];
    }
    for (int i = 0; i < S; i++) {
        sc += scores[i];
        raw += raw_scores ? raw_scores[i] : scores[i];
        eos += has_eos ? (has_eos[i] != 0) : 1;
    }
    /* sum over tokens then mean over completions == total / S */
    double mean_kl = kl_sum / S, non_score = -c->kl_coef * kl_sum / S;
    metrics_set(m, "objective/kl", mean_kl);
    metrics_set(m, "objective/entropy", ent_sum / S);
    metrics_set(m, "objective/non_score_reward", non_score);
    metrics_set(m, "objective/scores", sc / S);
    metrics_set(m, "objective/scores_raw", raw / S);
    metrics_set(m, "objective/rlhf_reward", sc / S + non_score);
    metrics_set(m, "objective/kl_coef", c->kl_coef);
    metrics_set(m, "val/num_eos_tokens", eos);
    if (values && returns) {
        double ev = ppo_explained_variance(values, returns, T);
        if (!isnan(ev)) metrics_set(m, "val/explained_variance", ev);
    }
    return 0;
}

void ppo_train_metrics_add(Metrics *m, const PpoConfig *c, const PpoPolicyStats *p, const PpoValueStats *v) {
    if (p) {
        double w = p->n_tokens;
        metrics_add(m, "policy/approxkl_avg", p->approxkl, w);
        metrics_add(m, "policy/clipfrac_avg", p->clipfrac, w);
        metrics_add(m, "clip_ratio/low_mean", p->clipfrac_low, w);
        metrics_add(m, "clip_ratio/high_mean", p->clipfrac_high, w);
        metrics_add(m, "clip_ratio/region_mean", p->clipfrac_low + p->clipfrac_high, w);
        metrics_add(m, "policy/entropy_avg", p->entropy, w);
        metrics_add(m, "loss/policy_avg", p->pg_loss, w);
        metrics_add(m, "val/ratio", p->ratio, w);
        if (c->dual_clip > 0) metrics_add(m, "policy/dual_clipfrac_avg", p->dual_clipfrac, w);
        if (c->kl_loss_coef > 0) metrics_add(m, "loss/kl_avg", p->kl_loss, w);
    }
    if (v) {
        double w = v->n_tokens;
        metrics_add(m, "loss/value_avg", v->loss, w);
        metrics_add(m, "val/clipfrac_avg", v->clipfrac, w);
        metrics_add(m, "val/vpred", v->vpred, w);
    }
}

int ppo_completion_metrics(const PpoSeqs *s, const uint8_t *has_eos, const float *rewards, int group_size, Metrics *m) {
    if (ppo_seqs_check(s)) return -1;
    int S = s->n_seq, mn = 0, mx = 0;
    double sum = 0, cut = 0;
    for (int i = 0; i < S; i++) {
        int n = s->offsets[i + 1] - s->offsets[i];
        mn = i == 0 || n < mn ? n : mn;
        mx = n > mx ? n : mx;
        sum += n;
        cut += has_eos && !has_eos[i];
    }
    metrics_set(m, "completions/mean_length", sum / S);
    metrics_set(m, "completions/min_length", mn);
    metrics_set(m, "completions/max_length", mx);
    metrics_set(m, "completions/clipped_ratio", cut / S);
    if (rewards && group_size >= 2 && S % group_size == 0) {
        int zero = 0;
        for (int g = 0; g < S; g += group_size) {
            int equal = 1;
            for (int j = 1; j < group_size; j++) equal &= rewards[g + j] == rewards[g];
            zero += equal;
        }
        metrics_set(m, "frac_reward_zero_std", (double)zero / (S / group_size));
    }
    return 0;
}
