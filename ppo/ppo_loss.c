#include "ppo_loss.h"

#include <math.h>
#include <string.h>

#include "ppo_reward.h"
#include "util.h"

/* The weight of one token of completion i in the aggregated loss (see
 * PpoLossAgg). denom > 0 overrides this call's count. */
static double token_weight(PpoLossAgg agg, const PpoSeqs *s, int i, double denom, int norm_len) {
    int n = s->offsets[i + 1] - s->offsets[i];
    switch (agg) {
    case PPO_AGG_SEQ_MEAN_TOKEN_MEAN: return 1.0 / ((denom > 0 ? denom : s->n_seq) * n);
    case PPO_AGG_SEQ_MEAN_TOKEN_SUM: return 1.0 / (denom > 0 ? denom : s->n_seq);
    case PPO_AGG_SEQ_MEAN_TOKEN_SUM_NORM: return 1.0 / ((denom > 0 ? denom : s->n_seq) * (double)norm_len);
    default: return 1.0 / (denom > 0 ? denom : ppo_seqs_tokens(s));
    }
}

void ppo_tis_weights(const float *old_logp, const float *rollout_logp, int n, double cap, float *w) {
    for (int t = 0; t < n; t++) {
        double x = exp((double)old_logp[t] - (double)rollout_logp[t]);
        w[t] = (float)(x < cap ? x : cap);
    }
}

int ppo_policy_loss(const PpoConfig *c, const PpoSeqs *s, const float *logp, const float *old_logp, const float *adv,
                    const float *ref_logp, const float *entropy, double denom, float *dlogp, PpoPolicyStats *st) {
    return ppo_policy_loss_w(c, s, logp, old_logp, adv, ref_logp, entropy, NULL, denom, dlogp, st);
}

int ppo_policy_loss_w(const PpoConfig *c, const PpoSeqs *s, const float *logp, const float *old_logp, const float *adv,
                      const float *ref_logp, const float *entropy, const float *is_weight, double denom, float *dlogp,
                      PpoPolicyStats *st) {
    if (ppo_seqs_check(s)) return -1;
    if (c->kl_loss_coef > 0 && !ref_logp) return align_errorf("--kl-loss-coef %g: needs reference log-probs", c->kl_loss_coef);
    if (c->loss_agg == PPO_AGG_SEQ_MEAN_TOKEN_SUM_NORM && c->loss_norm_len < 1)
        return align_errorf("--loss-agg seq-mean-token-sum-norm: needs the length it divides by (--max-new-tokens)");
    double lo = 1.0 - c->clip_low, hi = 1.0 + c->clip_high, dual = c->dual_clip;
    double loss = 0, pg = 0, kl_sum = 0, clip_n = 0, dual_n = 0, akl = 0, ratio_sum = 0, ent = 0, low_n = 0, high_n = 0;
    int T = ppo_seqs_tokens(s);
    for (int i = 0; i < s->n_seq; i++) {
        double w = token_weight(c->loss_agg, s, i, denom, c->loss_norm_len);
        double seq_ratio = 0;
        if (c->policy_loss == PPO_PL_GSPO) { /* GSPO: exp of the mean log-ratio, one per sequence */
            double sum = 0;
            for (int t = s->offsets[i]; t < s->offsets[i + 1]; t++) sum += (double)logp[t] - (double)old_logp[t];
            seq_ratio = exp(sum / (s->offsets[i + 1] - s->offsets[i]));
        }
        for (int t = s->offsets[i]; t < s->offsets[i + 1]; t++) {
            double A = adv[t], d = (double)logp[t] - (double)old_logp[t];
            double r = c->policy_loss == PPO_PL_GSPO ? seq_ratio : exp(d);
            double l, g; /* g: d l / d logp */
            low_n += r < lo && A < 0;
            high_n += r > hi && A > 0;
            if (c->policy_loss == PPO_PL_CISPO) {
                /* the ratio is only a weight, capped and detached: every token keeps -A's gradient */
                double wr = r > hi ? hi : r;
                l = -wr * A * logp[t];
                g = -wr * A;
                clip_n += r > hi;
            } else {
                /* vanilla: d r / d logp = r. GSPO-token: r_t = sg(s_i) exp(logp_t - sg(logp_t)),
                 * whose value is s_i and whose d r_t / d logp_t is s_i too: the same two lines */
                double rc = r < lo ? lo : r > hi ? hi : r;
                double l1 = -A * r, l2 = -A * rc;
                l = l1, g = -A * r;
                if (l2 > l1) { /* the clipped term wins: ratio strictly outside the range, no gradient */
                    l = l2;
                    g = 0.0;
                    clip_n++;
                }
                if (dual > 0 && A < 0 && l > -A * dual) { /* dual clip: the loss of a negative advantage is capped */
                    l = -A * dual;
                    g = 0.0;
                    dual_n++;
                }
            }
            if (is_weight) { /* truncated importance sampling: a detached per-token weight */
                l *= is_weight[t];
                g *= is_weight[t];
            }
            pg += w * l;
            double gl = w * g;
            if (c->kl_loss_coef > 0) {
                double k = ppo_kl_token(c->kl_loss_estimator, logp[t], ref_logp[t]);
                kl_sum += k;
                l += c->kl_loss_coef * k;
                gl += w * c->kl_loss_coef * ppo_kl_token_grad(c->kl_loss_estimator, logp[t], ref_logp[t]);
            }
            loss += w * l;
            if (dlogp) dlogp[t] = (float)gl;
            akl += d * d;
            ratio_sum += r;
            if (entropy) ent += entropy[t];
        }
    }
    memset(st, 0, sizeof *st);
    st->loss = loss;
    st->pg_loss = pg;
    st->kl_loss = kl_sum / T;
    st->clipfrac = clip_n / T;
    st->clipfrac_low = low_n / T;
    st->clipfrac_high = high_n / T;
    st->dual_clipfrac = dual_n / T;
    st->approxkl = 0.5 * akl / T;
    st->ratio = ratio_sum / T;
    st->entropy = entropy ? ent / T : 0.0;
    st->n_tokens = T;
    return 0;
}

int ppo_value_loss(const PpoConfig *c, const PpoSeqs *s, const float *values, const float *old_values,
                   const float *returns, double denom, float *dvalues, PpoValueStats *st) {
    if (ppo_seqs_check(s)) return -1;
    double cv = c->cliprange_value, loss = 0, clip_n = 0, vsum = 0;
    int T = ppo_seqs_tokens(s);
    for (int i = 0; i < s->n_seq; i++) {
        double w = token_weight(c->loss_agg, s, i, denom, c->loss_norm_len);
        for (int t = s->offsets[i]; t < s->offsets[i + 1]; t++) {
            double v = values[t], R = returns[t], l = 0.5 * (v - R) * (v - R), g = v - R;
            if (cv > 0) {
                double lo = (double)old_values[t] - cv, hi = (double)old_values[t] + cv;
                double vc = v < lo ? lo : v > hi ? hi : v;
                double l2 = 0.5 * (vc - R) * (vc - R);
                if (l2 > l) { /* the clipped error wins: v is past the clip toward R, no gradient */
                    l = l2;
                    g = 0.0;
                    clip_n++;
                }
            }
            loss += w * l;
            if (dvalues) dvalues[t] = (float)(w * g);
            vsum += v;
        }
    }
    memset(st, 0, sizeof *st);
    st->loss = loss;
    st->clipfrac = clip_n / T;
    st->vpred = vsum / T;
    st->n_tokens = T;
    return 0;
}
