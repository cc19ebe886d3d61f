#include "ppo_config.h"

#include <string.h>

#include "util.h"

void ppo_config_defaults(PpoConfig *c) {
    memset(c, 0, sizeof *c);
    c->kl_estimator = PPO_KL_K1;
    c->kl_coef = 0.05;
    c->score_norm = PPO_SCORE_RAW;
    c->score_mean = 0.0;
    c->score_std = 1.0;
    c->score_clip = 0.0;
    c->no_eos = PPO_NO_EOS_KEEP;
    c->no_eos_penalty = 1.0;
    c->adaptive_kl = 0;
    c->kl_target = 6.0;
    c->kl_horizon = 10000.0;
    c->advantage = PPO_ADV_GAE;
    c->gamma = 1.0;
    c->lam = 0.95;
    c->whiten_advantages = 1;
    c->group_size = 4;
    c->grpo_eps = 1e-4;
    c->grpo_scale_std = 1;
    c->clip_low = 0.2;
    c->clip_high = 0.2;
    c->dual_clip = 0.0;
    c->cliprange_value = 0.2;
    c->vf_coef = 0.1;
    c->kl_loss_coef = 0.0;
    c->kl_loss_estimator = PPO_KL_K3;
    c->loss_agg = PPO_AGG_TOKEN_MEAN;
    c->loss_norm_len = 0;
    c->policy_loss = PPO_PL_VANILLA;
    c->tis_cap = 0.0;
}

int ppo_config_check(const PpoConfig *c) {
    if (c->kl_estimator < 0 || c->kl_estimator >= PPO_KL_COUNT) return align_errorf("--kl-estimator: unknown estimator");
    if (c->kl_coef < 0) return align_errorf("--kl-coef %g: must be >= 0", c->kl_coef);
    if (c->score_norm == PPO_SCORE_STORED && !(c->score_std > 0))
        return align_errorf("--score-std %g: must be > 0 to normalise scores", c->score_std);
    if (c->score_clip < 0) return align_errorf("--score-clip %g: must be >= 0 (0 = off)", c->score_clip);
    if (c->adaptive_kl && !(c->kl_target > 0 && c->kl_horizon > 0))
        return align_errorf("--kl-target %g / --kl-horizon %g: both must be > 0 for the adaptive controller",
                            c->kl_target, c->kl_horizon);
    if (!(c->gamma >= 0 && c->gamma <= 1)) return align_errorf("--gamma %g: must be in [0, 1]", c->gamma);
    if (!(c->lam >= 0 && c->lam <= 1)) return align_errorf("--lam %g: must be in [0, 1]", c->lam);
    if ((c->advantage == PPO_ADV_RLOO || c->advantage == PPO_ADV_GRPO) && c->group_size < 2)
        return align_errorf("--group-size %d: %s needs at least 2 completions per prompt", c->group_size,
                            ppo_advantage_name(c->advantage));
    if (c->grpo_eps < 0) return align_errorf("--grpo-eps %g: must be >= 0", c->grpo_eps);
    if (!(c->clip_low >= 0 && c->clip_low < 1)) return align_errorf("--clip-low %g: must be in [0, 1)", c->clip_low);
    if (!(c->clip_high >= 0)) return align_errorf("--clip-high %g: must be >= 0", c->clip_high);
    if (c->dual_clip != 0 && !(c->dual_clip > 1))
        return align_errorf("--dual-clip %g: must be > 1 (0 = off)", c->dual_clip);
    if (c->cliprange_value < 0) return align_errorf("--cliprange-value %g: must be >= 0 (0 = off)", c->cliprange_value);
    if (c->kl_loss_coef < 0) return align_errorf("--kl-loss-coef %g: must be >= 0", c->kl_loss_coef);
    if (c->loss_agg < 0 || c->loss_agg >= PPO_AGG_COUNT) return align_errorf("--loss-agg: unknown aggregation");
    if (c->loss_agg == PPO_AGG_SEQ_MEAN_TOKEN_SUM_NORM && c->loss_norm_len < 1)
        return align_errorf("--loss-agg seq-mean-token-sum-norm: needs the length it divides by (--max-new-tokens)");
    if (c->policy_loss < 0 || c->policy_loss >= PPO_PL_COUNT) return align_errorf("--policy-loss: unknown loss");
    if (c->grpo_scale_std < PPO_SCALE_NONE || c->grpo_scale_std > PPO_SCALE_BATCH)
        return align_errorf("--scale-rewards: unknown scaling %d", c->grpo_scale_std);
    if (c->tis_cap != 0 && !(c->tis_cap >= 1)) return align_errorf("--tis-cap %g: must be >= 1 (0 = off)", c->tis_cap);
    return 0;
}

static const char *KL_NAMES[] = {"k1", "k2", "k3"};
static const char *AGG_NAMES[] = {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"};
static const char *PL_NAMES[] = {"vanilla", "gspo", "cispo"};
static const char *SCALE_NAMES[] = {"none", "group", "batch"}; /* indexed by PPO_SCALE_* */
static const char *ADV_NAMES[] = {"gae", "rloo", "grpo", "reinforce++"};
static const char *NORM_NAMES[] = {"raw", "stored", "running"};
static const char *EOS_NAMES[] = {"keep", "subtract", "replace"};

static int parse(const char *flag, const char *name, const char *const *names, int n, int *out) {
    for (int i = 0; i < n; i++)
        if (!strcmp(name, names[i])) {
            *out = i;
            return 0;
        }
    char list[200] = "";
    for (int i = 0; i < n; i++) {
        strcat(list, i == 0 ? "" : i == n - 1 ? " or " : ", ");
        strcat(list, names[i]);
    }
    return align_errorf("%s %s: expected %s", flag, name, list);
}

#define PARSER(fn, Type, names)                                                   \
    int fn(const char *flag, const char *name, Type *out) {                       \
        int v = 0;                                                                \
        if (parse(flag, name, names, (int)(sizeof names / sizeof *names), &v)) return -1; \
        *out = (Type)v;                                                           \
        return 0;                                                                 \
    }
PARSER(ppo_kl_estimator_parse, PpoKlEstimator, KL_NAMES)
PARSER(ppo_loss_agg_parse, PpoLossAgg, AGG_NAMES)
PARSER(ppo_advantage_parse, PpoAdvantage, ADV_NAMES)
PARSER(ppo_score_norm_parse, PpoScoreNorm, NORM_NAMES)
PARSER(ppo_no_eos_parse, PpoNoEos, EOS_NAMES)
PARSER(ppo_policy_loss_parse, PpoPolicyLoss, PL_NAMES)
PARSER(ppo_scale_rewards_parse, int, SCALE_NAMES)

const char *ppo_loss_agg_name(PpoLossAgg a) { return a >= 0 && a < PPO_AGG_COUNT ? AGG_NAMES[a] : "?"; }
const char *ppo_policy_loss_name(PpoPolicyLoss a) { return a >= 0 && a < PPO_PL_COUNT ? PL_NAMES[a] : "?"; }
const char *ppo_advantage_name(PpoAdvantage a) { return a >= 0 && a < PPO_ADV_COUNT ? ADV_NAMES[a] : "?"; }

int ppo_seqs_check(const PpoSeqs *s) {
    if (!s || s->n_seq < 1 || !s->offsets) return align_errorf("ppo batch: no completions");
    if (s->offsets[0] != 0) return align_errorf("ppo batch: offsets[0] is %d, not 0", (int)s->offsets[0]);
    for (int i = 0; i < s->n_seq; i++)
        if (s->offsets[i + 1] <= s->offsets[i])
            return align_errorf("ppo batch: completion %d has no tokens (offsets %d..%d)", i, (int)s->offsets[i],
                                (int)s->offsets[i + 1]);
    return 0;
}
