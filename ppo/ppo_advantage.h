/* ppo_advantage: how much better each sampled token was than expected.
 *
 * With a critic (PPO): generalised advantage estimation (Schulman et al.
 * 2016) over each completion's response tokens,
 *   delta[t] = rewards[t] + gamma * V[t+1] - V[t]     (V[n] = 0: the episode ends)
 *   A[t]     = delta[t] + gamma * lam * A[t+1]
 *   R[t]     = A[t] + V[t]                           (the critic's target)
 * then A whitened over every token of the batch. lam trades bias (lam = 0:
 * one-step TD, leans on the critic) against variance (lam = 1: Monte Carlo
 * returns minus V). gamma = 1 because a completion is short and only its end
 * is scored.
 *
 * Without a critic, a baseline from other completions of the same prompt
 * (k completions per prompt, laid out prompt by prompt: completions
 * g*k .. g*k+k-1 share prompt g):
 *   RLOO  (Ahmadian et al. 2024, TRL RLOOTrainer): a completion's reward
 *         r_i = score_i - kl_coef * sum_t kl (the KL folded in), baseline the
 *         mean of the other k-1: A_i = r_i - mean_{j != i} r_j, the same A_i
 *         on every token.
 *   GRPO  (Shao et al. 2024, OpenRLHF group_norm): the score normalised in
 *         its group, (r - mean_g) / (std_g + eps) (unbiased std, as
 *         torch.std); the KL usually goes into the loss (kl_loss_coef), and
 *         any kl_coef > 0 is paid per token as in PPO, A = returns-to-go.
 *   REINFORCE++ (Hu 2025, OpenRLHF): PPO's per-token rewards, A = returns-
 *         to-go sum_{u >= t} gamma^(u-t) rewards[u], normalised over every
 *         token of the batch (a global baseline instead of a critic).
 * (TRL lays RLOO batches out sample-major, index j*P + g; ours is prompt-
 * major like OpenRLHF, so a group is contiguous.) */
#ifndef ALIGN_PPO_ADVANTAGE_H
#define ALIGN_PPO_ADVANTAGE_H

#include "ppo_config.h"
#include "ppo_reward.h" /* advantages are computed from rewards: the dependency runs this way only */

/* GAE over each completion of s. values: V(s_t) from the critic at rollout
 * time. adv and ret may not alias rewards or values. */
int ppo_gae(const PpoSeqs *s, const float *rewards, const float *values, double gamma, double lam, float *adv,
            float *ret);

/* Returns-to-go sum_{u >= t} gamma^(u-t) rewards[u] within each completion. */
void ppo_returns_to_go(const PpoSeqs *s, const float *rewards, double gamma, float *ret);

/* RLOO over n_seq = groups * k completions. seq_rewards[i]: the completion's
 * whole reward (score with its KL penalty, ppo_seq_sum of the token rewards).
 * normalize: then (A - mean) / (std + 1e-8) over the batch's completions
 * (TRL's normalize_advantage, unbiased std). k >= 2. */
int ppo_rloo_advantages(int n_seq, int k, const double *seq_rewards, int normalize, double *adv);

/* GRPO: (r - mean_g) / (std_g + eps) within each group of k
 * (PPO_SCALE_GROUP), / (std of the whole batch + eps) (PPO_SCALE_BATCH), or
 * r - mean_g (PPO_SCALE_NONE: Dr. GRPO, Liu et al. 2025: dividing by the
 * group's std favours groups that are nearly all right or all wrong). A
 * group whose rewards are all equal carries no signal: its advantages are
 * exactly 0. k >= 2. */
int ppo_grpo_advantages(int n_seq, int k, const double *rewards, double eps, int scale_std, double *adv);

/* DAPO's dynamic sampling (Yu et al. 2025): a group whose k rewards all
 * agree (all right, all wrong) has zero advantage everywhere and only
 * dilutes the batch, so the caller drops it and samples more prompts.
 * keep[g] = 1 for group g (of n_seq / k) whose rewards differ; returns the
 * count kept, -1 on a bad layout. Exact equality: rule-based rewards are
 * exactly equal when they agree. */
int ppo_groups_with_spread(int n_seq, int k, const float *rewards, uint8_t *keep);

/* per_token[t] = per_seq[s] for every token t of completion s. */
void ppo_broadcast(const PpoSeqs *s, const double *per_seq, float *per_token);

/* REINFORCE++: returns-to-go of the token rewards (ret), then
 * adv = (ret - mean) / sqrt(max(var, 1e-8)) over every token of the batch,
 * biased variance (OpenRLHF). */
void ppo_reinforce_pp(const PpoSeqs *s, const float *rewards, double gamma, float *adv, float *ret);

/* Everything from processed scores and per-token KL to advantages, by
 * c->advantage:
 *   gae           rewards = ppo_compute_rewards; GAE with values; whiten if
 *                 c->whiten_advantages; ret = A + V (before whitening).
 *   rloo          rewards as gae; A_i from the completions' summed rewards,
 *                 on every token; ret = A (no critic).
 *   grpo          scores group-normalised, then rewards (with c->kl_coef,
 *                 usually 0) and A = ret = returns-to-go.
 *   reinforce++   rewards as gae; ppo_reinforce_pp.
 * rewards [T] receives the per-token rewards used; values is needed for gae
 * only. rloo/grpo use c->group_size; rloo normalises when
 * c->whiten_advantages. -1 with a sentence on a bad layout or group. */
int ppo_advantages(const PpoConfig *c, const PpoSeqs *s, const float *scores, const float *kl, const float *values,
                   float *rewards, float *adv, float *ret);

#endif
