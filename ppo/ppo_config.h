/* ppo_config: the settings of the PPO math and the ragged batch layout that
 * every function in ppo_reward / ppo_advantage / ppo_loss / ppo_metrics
 * shares.
 *
 * A batch of completions is ragged: completion s has n_s response tokens
 * (prompt tokens never appear here), and every per-token array is the
 * completions' arrays concatenated, tokens of s at [offsets[s],
 * offsets[s+1]). This is the layout the wire and the packed model batch
 * already use (docs/DESIGN.md, docs/DECISIONS.md "varlen"), so no padding
 * exists and no padding-mask bug (the reward read at a pad position, TRL's "_p1"
 * masks) can happen. Per-token arrays are float (what the model produces);
 * every sum is accumulated in double.
 *
 * Token t of a completion is the action a_t; logp[t] = log pi(a_t | s_t),
 * values[t] = V(s_t), the critic's value of the state before a_t (the value
 * head read at the position that predicts a_t). */
#ifndef ALIGN_PPO_CONFIG_H
#define ALIGN_PPO_CONFIG_H

#include <stdint.h>

typedef struct {
    int n_seq;                /* completions */
    const int32_t *offsets;   /* n_seq + 1 entries, offsets[0] == 0, non-decreasing */
} PpoSeqs;

static inline int ppo_seqs_tokens(const PpoSeqs *s) { return s->offsets[s->n_seq]; }

/* Per-token KL estimators of KL(pi || pi_ref) from samples of pi
 * (http://joschu.net/blog/kl-approx.html), with d = logp - ref_logp:
 *   k1 = d                        unbiased, any sign per token
 *   k2 = d^2 / 2                  biased, >= 0, low variance
 *   k3 = exp(-d) - 1 + d          unbiased, >= 0, low variance */
typedef enum { PPO_KL_K1 = 0, PPO_KL_K2, PPO_KL_K3, PPO_KL_COUNT } PpoKlEstimator;

/* How the reward-model score is put on a common scale before it enters the
 * reward (then clipped to +-score_clip when score_clip > 0). */
typedef enum {
    PPO_SCORE_RAW = 0,   /* as the reward model gave it */
    PPO_SCORE_STORED,    /* (s - score_mean) / score_std: the RM's own statistics (OpenRLHF normalize_reward) */
    PPO_SCORE_RUNNING,   /* (s - mean) / (std + eps) over all scores seen so far (TRL's use_score_scaling + use_score_norm) */
} PpoScoreNorm;

/* What happens to the score of a completion that hit the length limit
 * without EOS (truncated answers are often rewarded for being long). */
typedef enum {
    PPO_NO_EOS_KEEP = 0,  /* nothing */
    PPO_NO_EOS_SUBTRACT,  /* score -= no_eos_penalty (TRL's missing_eos_penalty) */
    PPO_NO_EOS_REPLACE,   /* score = -no_eos_penalty (TRL's older non_eos_penalty / penalty_reward_value) */
} PpoNoEos;

/* How per-token losses become the batch loss (weights w_t, loss = sum w_t l_t):
 *   token-mean           w = 1/T over all T tokens of the batch (TRL's masked_mean; the default;
 *                        DAPO's token-level loss)
 *   seq-mean-token-mean  w = 1/(S n_s): each completion counts once (GRPO's paper, OpenRLHF's older
 *                        default, GSPO)
 *   seq-mean-token-sum   w = 1/S: long completions weigh more
 *   seq-mean-token-sum-norm  w = 1/(S L), L = loss_norm_len (--max-new-tokens): Dr. GRPO's
 *                        length-unbiased aggregation, a constant divisor (TRL's loss_type=dr_grpo;
 *                        verl's name) */
typedef enum {
    PPO_AGG_TOKEN_MEAN = 0,
    PPO_AGG_SEQ_MEAN_TOKEN_MEAN,
    PPO_AGG_SEQ_MEAN_TOKEN_SUM,
    PPO_AGG_SEQ_MEAN_TOKEN_SUM_NORM,
    PPO_AGG_COUNT
} PpoLossAgg;

/* The policy-gradient surrogate (verl's policy_loss.loss_mode names; ppo_loss.h):
 *   vanilla  PPO's clipped token ratio (GRPO, DAPO with clip_high > clip_low)
 *   gspo     GSPO: one importance ratio per sequence, exp(mean_t(logp - old)), clipped
 *   cispo    CISPO: -sg(min(ratio, 1 + clip_high)) * A * logp, every token keeps a gradient */
typedef enum { PPO_PL_VANILLA = 0, PPO_PL_GSPO, PPO_PL_CISPO, PPO_PL_COUNT } PpoPolicyLoss;

/* grpo_scale_std: how GRPO divides the centred reward (TRL's scale_rewards). */
enum { PPO_SCALE_NONE = 0, PPO_SCALE_GROUP = 1, PPO_SCALE_BATCH = 2 };

/* Where advantages come from. */
typedef enum { PPO_ADV_GAE = 0, PPO_ADV_RLOO, PPO_ADV_GRPO, PPO_ADV_REINFORCE_PP, PPO_ADV_COUNT } PpoAdvantage;

typedef struct {
    /* --- reward (ppo_reward) --- */
    PpoKlEstimator kl_estimator; /* k1 */
    double kl_coef;              /* 0.05; the adaptive controller overwrites it */
    PpoScoreNorm score_norm;     /* raw */
    double score_mean, score_std;/* for PPO_SCORE_STORED: 0, 1 */
    double score_clip;           /* 0 = off; 5 or 10 are common */
    PpoNoEos no_eos;             /* keep */
    double no_eos_penalty;       /* 1.0 */
    int whiten_rewards;          /* 0; TRL's whiten_rewards (token rewards, mean kept) */
    /* --- KL control (ppo_reward) --- */
    int adaptive_kl;             /* 0 = fixed kl_coef */
    double kl_target;            /* 6.0 nats per completion */
    double kl_horizon;           /* 10000 */
    /* --- advantages (ppo_advantage) --- */
    PpoAdvantage advantage;      /* gae */
    double gamma, lam;           /* 1.0, 0.95 */
    int whiten_advantages;       /* 1 (GAE and RLOO) */
    int group_size;              /* k completions per prompt for RLOO/GRPO: 4 */
    double grpo_eps;             /* 1e-4 (TRL GRPOTrainer; OpenRLHF uses 1e-9) */
    int grpo_scale_std;          /* PPO_SCALE_GROUP (1); PPO_SCALE_NONE (0) = Dr. GRPO (centre only);
                                  * PPO_SCALE_BATCH (2): the std of the whole batch (TRL's scale_rewards=batch) */
    /* --- losses (ppo_loss) --- */
    double clip_low, clip_high;  /* 0.2, 0.2: ratio kept in [1-clip_low, 1+clip_high] */
    double dual_clip;            /* 0 = off; else c > 1 (3.0): caps the loss of negative advantages */
    double cliprange_value;      /* 0.2; 0 = no value clip */
    double vf_coef;              /* 0.1: weight of the value loss in the caller's total */
    double kl_loss_coef;         /* 0; > 0 adds coef * KL(pi||ref) to the policy loss (GRPO's beta) */
    PpoKlEstimator kl_loss_estimator; /* k3 */
    PpoLossAgg loss_agg;         /* token-mean */
    int loss_norm_len;           /* L of seq-mean-token-sum-norm (ppo_run: --max-new-tokens); 0 = unset */
    PpoPolicyLoss policy_loss;   /* vanilla */
    double tis_cap;              /* 0 = off; else truncated importance sampling, weights min(w, cap) */
} PpoConfig;

/* The defaults above: TRL's PPOConfig where it has the setting. */
void ppo_config_defaults(PpoConfig *c);
/* Check ranges; -1 with a sentence naming the setting (as a --flag) when
 * something is out of range. */
int ppo_config_check(const PpoConfig *c);

/* Names: "k1" "k2" "k3"; "token-mean" "seq-mean-token-mean"
 * "seq-mean-token-sum" "seq-mean-token-sum-norm"; "gae" "rloo" "grpo"
 * "reinforce++"; "raw" "stored" "running"; "keep" "subtract" "replace";
 * "vanilla" "gspo" "cispo"; scale: "none" "group" "batch". Parsers return
 * -1 with a sentence naming `flag` on an unknown name. */
int ppo_kl_estimator_parse(const char *flag, const char *name, PpoKlEstimator *out);
int ppo_loss_agg_parse(const char *flag, const char *name, PpoLossAgg *out);
int ppo_advantage_parse(const char *flag, const char *name, PpoAdvantage *out);
int ppo_score_norm_parse(const char *flag, const char *name, PpoScoreNorm *out);
int ppo_no_eos_parse(const char *flag, const char *name, PpoNoEos *out);
int ppo_policy_loss_parse(const char *flag, const char *name, PpoPolicyLoss *out);
int ppo_scale_rewards_parse(const char *flag, const char *name, int *out);
const char *ppo_loss_agg_name(PpoLossAgg a);
const char *ppo_policy_loss_name(PpoPolicyLoss a);
const char *ppo_advantage_name(PpoAdvantage a);

/* -1 with a sentence when offsets are not a valid ragged layout: n_seq < 1,
 * offsets[0] != 0, or a completion with no token. Every completion has at
 * least one token (an immediate EOS is a token): the score needs a last
 * token to sit on. */
int ppo_seqs_check(const PpoSeqs *s);

#endif
