/* ppo_reward: from reward-model scores and log-probs to PPO's per-token
 * rewards, and the KL controllers that tune kl_coef.
 *
 * RLHF maximises score - kl_coef * KL(pi || pi_ref): the score says what
 * people prefer, the KL keeps the policy near the reference so the reward
 * model is only asked about text like what it was trained on. As in TRL's
 * PPOTrainer and OpenRLHF, the KL is paid per token and the score arrives
 * once, at the last token of the completion:
 *
 *   kl[t]          = k(logp[t], ref_logp[t])           (k1, k2 or k3; ppo_config.h)
 *   non_score[t]   = -kl_coef * kl[t]
 *   rewards[t]     = non_score[t] + (t == last ? score : 0)
 *
 * The score is processed first (ppo_process_scores): normalised (stored or
 * running statistics), penalised when the completion has no EOS, clipped.
 *
 * The last token is the last REAL token of the completion: in the ragged
 * layout there is no padding, so the score cannot land on a pad position.
 * (TRL's padded code adds it at index sequence_length + 1 and masks values
 * with the matching "_p1" mask; we follow OpenRLHF, which puts it on the
 * last action.) */
#ifndef ALIGN_PPO_REWARD_H
#define ALIGN_PPO_REWARD_H

#include <stdint.h>

#include "ppo_config.h"

/* ---- KL estimators ---- */

/* One token's estimate of KL(pi || pi_ref) (see PpoKlEstimator). */
double ppo_kl_token(PpoKlEstimator e, double logp, double ref_logp);
/* Its derivative with respect to logp: k1: 1; k2: d; k3: 1 - exp(-d). */
double ppo_kl_token_grad(PpoKlEstimator e, double logp, double ref_logp);
/* kl[i] for i < n. */
void ppo_kl(PpoKlEstimator e, const float *logp, const float *ref_logp, int n, float *kl);

/* ---- scores ---- */

/* Running mean and variance of every score seen, merged batch by batch
 * (Chan et al.), exactly TRL's RunningMoments: starts at mean 0, var 1,
 * count 1e-24; std is the unbiased estimate over all scores seen. Saved with
 * the training state so a resumed run normalises the same way. */
typedef struct {
    double mean, var, std, count;
} PpoRunningMoments;

void ppo_running_init(PpoRunningMoments *r);
void ppo_running_update(PpoRunningMoments *r, const float *x, int n);

/* scores[s] from raw[s], in this order:
 *   1. normalise: raw; (raw - score_mean) / score_std; or, with
 *      PPO_SCORE_RUNNING, update `running` with this batch's raw scores and
 *      use (raw - mean) / (std + FLT_EPSILON) as TRL does;
 *   2. no EOS (has_eos[s] == 0): keep, subtract no_eos_penalty, or replace
 *      with -no_eos_penalty (the penalty is in normalised units);
 *   3. clip to [-score_clip, score_clip] when score_clip > 0.
 * has_eos may be NULL (every completion ended with EOS). running may be NULL
 * unless score_norm is PPO_SCORE_RUNNING. -1 on a bad setting. */
int ppo_process_scores(const PpoConfig *c, PpoRunningMoments *running, const float *raw, const uint8_t *has_eos,
                       int n_seq, float *scores);

/* ---- per-token rewards ---- */

/* TRL's masked_whiten over all n entries: (x - mean) / sqrt(var + 1e-8) with
 * the unbiased variance; shift_mean = 0 adds the mean back (only the scale
 * changes). Whitening makes the step size independent of the reward's
 * scale, which drifts as the policy improves; rewards (whiten_rewards) and
 * advantages (ppo_advantage.h) both use it, so it lives here, below both.
 * n = 1 has no variance: the entry becomes 0 (its mean with shift_mean =
 * 0). In place. */
void ppo_whiten(float *x, int n, int shift_mean);

/* rewards[t] = -kl_coef * kl[t], plus scores[s] on the last token of each
 * completion s; with whiten_rewards, then whitened over all tokens of the
 * batch keeping their mean (TRL's masked_whiten(shift_mean=False)). */
int ppo_compute_rewards(const PpoConfig *c, const PpoSeqs *s, const float *kl, const float *scores, float *rewards);

/* out[s] = sum over completion s of x[t] (a completion's total reward, or its
 * summed KL). */
void ppo_seq_sum(const PpoSeqs *s, const float *x, double *out);

/* ---- KL control ---- */

/* The fixed controller keeps kl_coef. The adaptive one (Ziegler et al. 2019,
 * TRL's AdaptiveKLController) steers the KL toward a target, in proportion
 * to the error and to how much data the step saw:
 *   e = clip(current_kl / target - 1, -0.2, 0.2)
 *   kl_coef *= 1 + e * n_steps / horizon
 * current_kl is a completion's summed KL averaged over the batch (the logged
 * objective/kl, with the penalty's estimator), n_steps the completions in
 * the batch. A KL above target raises the coefficient, below lowers it; the
 * clip keeps one bad batch from moving it more than 20% of n/horizon. */
typedef struct {
    double value;    /* the current kl_coef */
    double target, horizon;
    int adaptive;
} PpoKlController;

void ppo_kl_controller_init(PpoKlController *k, const PpoConfig *c);
/* Updates and returns the new kl_coef (unchanged when fixed). */
double ppo_kl_controller_update(PpoKlController *k, double current_kl, long n_steps);

#endif
