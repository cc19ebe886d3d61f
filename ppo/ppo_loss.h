/* ppo_loss: PPO's clipped policy loss and clipped value loss, per token,
 * with their gradients, testable without a model (tests/test_ppo_math.c
 * checks both against PyTorch autograd).
 *
 * Policy (Schulman et al. 2017). The batch was sampled by pi_old; after the
 * first gradient step pi differs, and ratio = pi/pi_old = exp(logp - old)
 * reweights the samples. The surrogate -A * ratio alone would let one batch
 * push the policy arbitrarily far, so the loss takes the pessimistic of the
 * plain and the clipped surrogate:
 *   pg[t] = max(-A ratio, -A clip(ratio, 1 - clip_low, 1 + clip_high))
 * Once the ratio has moved past the clip in the direction A rewards, the
 * token gives no gradient. Dual clip (Ye et al. 2020, verl/OpenRLHF): with
 * A < 0 and a huge ratio, -A ratio is unbounded; pg[t] = min(pg[t], -A c)
 * caps it (c = dual_clip > 1), again with no gradient past the cap.
 * With kl_loss_coef > 0 (GRPO) the loss adds kl_loss_coef * k(logp, ref)
 * per token, the KL paid in the loss instead of the reward.
 *
 * The family (c->policy_loss):
 *   vanilla  the above, per token (GRPO; DAPO = clip_high > clip_low
 *            ("clip-higher", 0.2/0.28) with token-mean aggregation)
 *   gspo     (Zheng et al. 2025) one ratio per sequence,
 *            s_i = exp(mean_t (logp - old)), in the clipped surrogate of
 *            every token of i; the gradient is verl's GSPO-token form,
 *            r_t = sg(s_i) exp(logp_t - sg(logp_t)), which equals the
 *            sequence form when A is constant over i and the aggregation
 *            is seq-mean-token-mean. Its clip ranges are ~1e-3, not 0.2.
 *   cispo    (MiniMax-M1, 2025) l_t = -sg(min(r_t, 1 + clip_high)) A_t logp_t:
 *            the ratio is a capped, detached weight, so no token loses its
 *            gradient (tokens clipped away by PPO are often the rare
 *            "reflection" tokens); only the upper cap, as MiniMax ran it.
 *
 * Value. The critic regresses the returns R computed at rollout time:
 * 0.5 (V - R)^2. The value clip (PPO2 in OpenAI baselines, TRL, OpenRLHF)
 * makes it a trust region too:
 *   Vc = old_V + clip(V - old_V, -cliprange_value, cliprange_value)
 *   vf[t] = 0.5 max((V - R)^2, (Vc - R)^2)
 * Returns are noisy, early ones especially (the critic starts from the
 * reward model, which knows nothing about per-token values); without the
 * clip one minibatch of large errors can move V far from the values the
 * advantages were computed with, and the next epochs' updates then chase
 * that noise. With the max, the gradient vanishes once V has moved more
 * than cliprange_value from old_V toward R, while a V that moved away from
 * R is still pulled back. (Engstrom et al. 2020 found the clip helps little
 * in control tasks; it stays on by default as in TRL, 0 turns it off.)
 *
 * Aggregation (c->loss_agg, ppo_config.h): token-mean by default, as TRL's
 * masked_mean: every response token of the batch weighs the same. `denom`
 * > 0 replaces this call's own count (tokens for token-mean, completions
 * otherwise): for a minibatch split into micro-batches, pass the
 * minibatch's count and micro-batch gradients add up to the minibatch
 * loss's gradient (TRL instead averages micro-batch means, which weighs the
 * tokens of a short micro-batch more).
 *
 * Gradients are of the returned loss with respect to each token's input and
 * follow PyTorch's subgradient conventions: at ratio exactly 1 +- clip the
 * token keeps its gradient (clamp passes it at the bounds; the two terms of
 * the max are then equal). */
#ifndef ALIGN_PPO_LOSS_H
#define ALIGN_PPO_LOSS_H

#include "ppo_config.h"

typedef struct {
    double loss;          /* aggregated (policy + KL term) */
    double pg_loss;       /* the clipped surrogate alone, aggregated */
    double kl_loss;       /* token mean of k(logp, ref) (0 without the KL term) */
    double clipfrac;      /* token fraction where the clipped surrogate won (TRL: pg_losses2 > pg_losses);
                           * cispo: where the weight was capped */
    double clipfrac_low;  /* ratio < 1 - clip_low with A < 0 (TRL's clip_ratio/low_mean) */
    double clipfrac_high; /* ratio > 1 + clip_high with A > 0 (TRL's clip_ratio/high_mean) */
    double dual_clipfrac; /* token fraction capped by the dual clip */
    double approxkl;      /* 0.5 * token mean of (logp - old)^2 (TRL's approxkl) */
    double ratio;         /* token mean of the ratio */
    double entropy;       /* token mean of the given entropies (0 when not given) */
    int n_tokens;
} PpoPolicyStats;

typedef struct {
    double loss;          /* aggregated 0.5 max(...); the caller weighs it by vf_coef */
    double clipfrac;      /* token fraction where the clipped error won (TRL's vf_clipfrac) */
    double vpred;         /* token mean of V */
    int n_tokens;
} PpoValueStats;

/* logp: the current policy's log-probs (what dlogp differentiates),
 * old_logp: the rollout policy's, adv: advantages; ref_logp: needed when
 * c->kl_loss_coef > 0, else may be NULL; entropy: optional per-token
 * entropies for the stats. dlogp [T] receives d loss / d logp[t] (may be
 * NULL). */
int ppo_policy_loss(const PpoConfig *c, const PpoSeqs *s, const float *logp, const float *old_logp, const float *adv,
                    const float *ref_logp, const float *entropy, double denom, float *dlogp, PpoPolicyStats *st);
/* The same with per-token importance weights is_weight [T] (NULL = none):
 * the surrogate of token t (not the KL term) and its gradient are
 * multiplied by is_weight[t], a constant (truncated importance sampling). */
int ppo_policy_loss_w(const PpoConfig *c, const PpoSeqs *s, const float *logp, const float *old_logp, const float *adv,
                      const float *ref_logp, const float *entropy, const float *is_weight, double denom, float *dlogp,
                      PpoPolicyStats *st);

/* Truncated importance sampling (Yao et al. 2025, "Your efficient RL
 * framework secretly brings you off-policy RL training"; verl's
 * tis_imp_ratio_cap): the sampler's log-probs (rollout_logp) differ from
 * the trainer's for the same weights (other kernels, batch shapes); the
 * trainer's old_logp is the policy PPO's ratio is taken against, so each
 * token is reweighted by w = min(exp(old_logp - rollout_logp), cap). */
void ppo_tis_weights(const float *old_logp, const float *rollout_logp, int n, double cap, float *w);

/* values: the critic now; old_values: at rollout; returns: targets.
 * dvalues [T] receives d loss / d values[t] (may be NULL). No clip when
 * c->cliprange_value <= 0. */
int ppo_value_loss(const PpoConfig *c, const PpoSeqs *s, const float *values, const float *old_values,
                   const float *returns, double denom, float *dvalues, PpoValueStats *st);

#endif
