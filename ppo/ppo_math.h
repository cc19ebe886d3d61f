/* ppo_math: the PPO math in one include, independent of any model.
 *
 *   ppo_config.h     settings (PpoConfig, defaults from TRL) and the ragged
 *                    batch layout (PpoSeqs)
 *   ppo_reward.h     KL estimators, score processing, per-token rewards,
 *                    whitening, KL controllers
 *   ppo_advantage.h  GAE, RLOO, GRPO, REINFORCE++ (on ppo_reward.h)
 *   ppo_loss.h       clipped policy and value losses with gradients
 *   ppo_metrics.h    TRL-named metrics from the same arrays
 *
 * One PPO step, as ppo_run drives it (S completions, T response tokens):
 *   ppo_kl(c.kl_estimator, logp, ref_logp, T, kl);
 *   ppo_process_scores(&c, &running, raw, has_eos, S, scores);
 *   ppo_advantages(&c, &seqs, scores, kl, values, rewards, adv, ret);
 *   ppo_rollout_metrics(&c, &seqs, kl, logp, scores, raw, has_eos, entropy, values, ret, &m);
 *   for each epoch, minibatch:
 *       (forward) ppo_policy_loss(...) / ppo_value_loss(...) -> gradients
 *       (backward, optimizer step) ppo_train_metrics_add(&m, &c, &pst, &vst);
 *   c.kl_coef = ppo_kl_controller_update(&ctl, metrics_get(&m, "objective/kl", 0), S); */
#ifndef ALIGN_PPO_MATH_H
#define ALIGN_PPO_MATH_H

#include "ppo_advantage.h"
#include "ppo_config.h"
#include "ppo_loss.h"
#include "ppo_metrics.h"
#include "ppo_reward.h"

#endif
