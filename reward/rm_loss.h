/* rm_loss: the Bradley-Terry reward-model loss, per pair and per batch.
 *
 * A reward model r(x) scores a sequence; for a preference pair with chosen
 * score sc and rejected score sr the model of human choice is
 *   P(chosen preferred) = sigmoid(sc - sr)
 * and training maximises its log-likelihood. As TRL's RewardTrainer:
 *   loss = -logsigmoid(sc - sr - margin) + center * (sc + sr)^2
 * The optional per-record margin asks the model to separate pairs the
 * labellers marked as clearly different by at least that much (Llama-2's
 * margin loss). The centering term (TRL's center_rewards_coefficient,
 * "Helping or Herding?", Eisenstein et al. 2023) pulls the scores' mean
 * towards 0: Bradley-Terry only sees differences, so without it the level
 * of the scores drifts freely, which hurts their use as PPO rewards.
 *
 * The batch loss is the mean over pairs. Metrics (TRL's names): loss,
 * accuracy (sc > sr; a tie is not a win), margin (mean sc - sr),
 * rewards/chosen, rewards/rejected (mean scores). Pure arithmetic: no
 * model, testable against PyTorch (tests/fixtures/make_rm_fixtures.py). */
#ifndef ALIGN_RM_LOSS_H
#define ALIGN_RM_LOSS_H

#include "metrics.h"

typedef struct {
    float center; /* coefficient of (sc + sr)^2; 0 = off (TRL's default None) */
} RmLossConfig;

typedef struct {
    double loss;
    double dchosen, drejected; /* d loss / d sc, d loss / d sr */
    int correct;               /* sc > sr */
} RmPairResult;

/* One pair; margin 0 when the record has none. Stable for any |sc - sr|. */
void rm_pair_loss(const RmLossConfig *cfg, double sc, double sr, double margin, RmPairResult *r);

/* n pairs: the mean loss; dsc[i], dsr[i] (may be NULL) are the gradients of
 * that MEAN, i.e. per-pair gradients / n. margins may be NULL (all 0).
 * acc (may be NULL) receives loss, accuracy, margin, rewards/chosen,
 * rewards/rejected, each with weight n. Returns the mean loss. */
double rm_batch_loss(const RmLossConfig *cfg, const float *sc, const float *sr, const float *margins,
                     int n, double *dsc, double *dsr, Metrics *acc);

#endif
