/* ppo_metrics: PPO's metrics under TRL's names, computed from the same
 * arrays the rewards and losses were computed from.
 *
 * Rollout metrics (once per batch; S completions, sums per completion then
 * the mean over completions, as TRL's kl.sum(1).mean()):
 *   objective/kl               mean_s sum_t kl[t], kl with the PENALTY'S
 *                              estimator (c->kl_estimator). Logging k1 while
 *                              penalising k3 (or the reverse) is the
 *                              "negative KL" users keep reporting: k1 is
 *                              negative on tokens the policy likes less than
 *                              the reference, and a logged number that is not
 *                              what the reward paid cannot explain the
 *                              reward, nor drive the adaptive controller.
 *   objective/entropy          mean_s sum_t entropy[t] (given per-token
 *                              entropies; without them -logp[t], TRL's
 *                              sampled estimate)
 *   objective/non_score_reward mean_s sum_t -kl_coef kl[t]
 *   objective/scores           mean of the processed scores (what entered the reward)
 *   objective/scores_raw       mean of the reward model's raw scores
 *   objective/rlhf_reward      objective/scores + objective/non_score_reward
 *   objective/kl_coef          the kl_coef the rewards were built with
 *   val/num_eos_tokens         completions that ended with EOS
 *   val/explained_variance     1 - Var(R - V) / Var(R) over tokens (critic
 *                              only; absent when Var(R) = 0)
 * Training metrics (per policy/value loss call, token-weighted means over
 * the calls of a step; TRL averages micro-batch means unweighted):
 *   policy/approxkl_avg, policy/clipfrac_avg, policy/entropy_avg,
 *   loss/policy_avg, loss/value_avg, val/clipfrac_avg, val/ratio,
 *   policy/dual_clipfrac_avg (dual clip on), loss/kl_avg (KL in the loss),
 *   clip_ratio/low_mean, clip_ratio/high_mean, clip_ratio/region_mean
 *   (TRL's GRPOTrainer: ratio below 1 - clip_low with A < 0, above
 *   1 + clip_high with A > 0, either). */
#ifndef ALIGN_PPO_METRICS_H
#define ALIGN_PPO_METRICS_H

#include <stdint.h>

#include "metrics.h"
#include "ppo_config.h"
#include "ppo_loss.h"

/* 1 - Var(returns - values) / Var(returns) over n tokens: 1 = the critic
 * predicts the returns, 0 = no better than their mean, < 0 worse. NaN when
 * Var(returns) = 0 (as Stable-Baselines3). */
double ppo_explained_variance(const float *values, const float *returns, int n);

/* Sets the rollout metrics in m. kl, logp: [T]; scores (processed) and
 * raw_scores: [S]; has_eos [S] may be NULL (all ended); entropy [T] may be
 * NULL (uses -logp); values and returns [T] may be NULL (no critic). */
int ppo_rollout_metrics(const PpoConfig *c, const PpoSeqs *s, const float *kl, const float *logp,
                        const float *scores, const float *raw_scores, const uint8_t *has_eos,
                        const float *entropy, const float *values, const float *returns, Metrics *m);

/* What users of rule-based rewards watch (TRL's GRPOTrainer names):
 * completions/mean_length, min_length, max_length (tokens), and
 * clipped_ratio (the fraction cut at the length limit: has_eos[s] == 0;
 * has_eos may be NULL = none cut); with rewards [S] (a completion's total
 * reward) and group_size >= 2, frac_reward_zero_std: the fraction of
 * groups whose rewards all agree, which teach nothing under GRPO. */
int ppo_completion_metrics(const PpoSeqs *s, const uint8_t *has_eos, const float *rewards, int group_size, Metrics *m);

/* Adds one loss call's stats, weighted by its tokens. v may be NULL
 * (critic-free). */
void ppo_train_metrics_add(Metrics *m, const PpoConfig *c, const PpoPolicyStats *p, const PpoValueStats *v);

#endif
