/* dpo_loss: the DPO family of preference losses, per pair, with their
 * gradients, testable without a model (tests/test_dpo_loss.c checks every
 * loss and metric against PyTorch autograd).
 *
 * Inputs per pair: policy log-probs of the chosen and rejected completions
 * summed over completion tokens (prompt excluded, TRL's default), the same
 * under the reference model, and the token counts. Notation as in
 * docs/REFERENCE.md: h = (pc - rc) - (pr - rr).
 *
 *   sigmoid  -(1-ls) logsigmoid(b h) - ls logsigmoid(-b h)   (cDPO when ls > 0)
 *   robust   (-(1-ls) logsigmoid(b h) + ls logsigmoid(-b h)) / (1 - 2 ls)
 *            (TRL's unbiased robust DPO)
 *   hinge    relu(1 - b h)
 *   ipo      (h - 1/(2b))^2 with log-probs averaged over tokens
 *   simpo    -logsigmoid(b (pc/|c| - pr/|r|) - gamma), reference-free
 *            (label smoothing as in sigmoid)
 *   orpo     NLL(chosen) - lambda logsigmoid(log_odds(c) - log_odds(r)),
 *            log_odds(x) = m - log1p(-exp(m)), m = mean token log-prob;
 *            reference-free, lambda = beta (TRL's ORPO naming)
 * Any loss can add an SFT term rpo_alpha * NLL(chosen) (token mean).
 *
 * The output gradient is per TOKEN: d(loss)/d(logp of one chosen token) is
 * the same for every chosen completion token (the losses depend on the
 * sum or the mean), likewise for rejected, so the caller spreads it over
 * the pair's completion tokens. */
#ifndef ALIGN_DPO_LOSS_H
#define ALIGN_DPO_LOSS_H

typedef enum { DPO_SIGMOID = 0, DPO_ROBUST, DPO_HINGE, DPO_IPO, DPO_SIMPO, DPO_ORPO, DPO_LOSS_COUNT } DpoLossType;

typedef struct {
    DpoLossType type;
    float beta;            /* 0.1 for DPO; ~2 for SimPO; ORPO's lambda */
    float label_smoothing; /* sigmoid, robust, simpo */
    float simpo_gamma;     /* SimPO's target margin */
    float rpo_alpha;       /* weight of the SFT term on chosen; 0 = off */
} DpoLossConfig;

typedef struct {
    double pc, pr;  /* policy, summed over completion tokens */
    double rc, rr;  /* reference (ignored by simpo and orpo) */
    int nc, nr;     /* completion token counts */
} DpoPair;

typedef struct {
    double loss;
    double dtok_chosen, dtok_rejected; /* d loss / d logp of each completion token */
    double reward_chosen, reward_rejected; /* TRL's rewards/chosen and rewards/rejected */
} DpoPairResult;

void dpo_loss_defaults(DpoLossConfig *c);
/* "sigmoid" | "robust" | "hinge" | "ipo" | "simpo" | "orpo" */
int dpo_loss_parse(const char *name, DpoLossType *out);
/* 1 when the loss uses no reference model. */
int dpo_loss_reference_free(DpoLossType t);
void dpo_pair_loss(const DpoLossConfig *c, const DpoPair *p, DpoPairResult *out);

#endif
