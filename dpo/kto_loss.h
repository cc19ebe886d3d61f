/* kto_loss: the KTO loss of one micro-batch of unpaired examples, with its
 * gradients, testable without a model (tests/test_kto_loss.c checks it
 * against PyTorch autograd, tests/fixtures/make_kto_fixtures.py).
 *
 * Kahneman-Tversky Optimization (Ethayarajh et al. 2024, eq. 7), as TRL's
 * KTOTrainer computes it. Each example i has a completion labelled
 * desirable or undesirable, its policy and reference log-probs summed over
 * the completion tokens (prompt excluded), r_i = logp_i - ref_i, and a
 * mismatched completion (another example's, against this prompt) whose
 * log-probs estimate the reference point
 *
 *   z = max(0, mean_i(kl_logp_i - ref_kl_logp_i))   (detached: no gradient)
 *
 *   desirable    w_d * (1 - sigmoid(beta * (r_i - z)))
 *   undesirable  w_u * (1 - sigmoid(beta * (z - r_i)))
 *
 * The micro-batch loss is the mean over its n examples (TRL's nanmean of
 * the weighted losses). Metrics are TRL's: rewards = beta * r, averaged
 * over the desirable (chosen) and the undesirable (rejected) examples of
 * the micro-batch, likewise the policy log-probs, and kl = z. */
#ifndef ALIGN_KTO_LOSS_H
#define ALIGN_KTO_LOSS_H

typedef struct {
    float beta;               /* 0.1, TRL's default */
    float desirable_weight;   /* 1.0 */
    float undesirable_weight; /* 1.0 */
} KtoLossConfig;

typedef struct {
    double loss; /* mean over the micro-batch */
    double kl;   /* z, TRL's "kl" */
    int n_chosen, n_rejected;
    /* means over the desirable / undesirable examples; NAN when none */
    double rewards_chosen, rewards_rejected, logps_chosen, logps_rejected;
} KtoBatchResult;

void kto_loss_defaults(KtoLossConfig *c);

/* The reference point z from the mismatched pairs' policy and reference
 * log-probs (n of them): max(0, mean(kl_logp - ref_kl_logp)). */
double kto_kl_estimate(const double *kl_logp, const double *ref_kl_logp, int n);

/* n examples: desirable[i] 1 or 0; logp / ref_logp their completions'
 * sums; kl the reference point (kto_kl_estimate). dlogp[i] (may be NULL)
 * gets d(mean loss)/d(logp of each of example i's completion tokens): the
 * loss depends on the sum, so every token of a completion gets the same. */
void kto_batch_loss(const KtoLossConfig *c, int n, const int *desirable, const double *logp,
                    const double *ref_logp, double kl, double *dlogp, KtoBatchResult *out);

#endif
