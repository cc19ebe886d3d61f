/* reward_terms: a reward made of weighted terms, as `ppo_run --reward`
 * spells it: "math,format:0.2,rm.ckpt:0.5" (a --config list of the same
 * strings works too). A completion's reward is sum_k weight_k * term_k.
 *
 *   math exact regex format length overlong   the rule-based verifiers
 *                                             (verify.h), weight 1 unless
 *                                             ":W" follows
 *   url                                       the remote function of
 *                                             --reward-url (reward_http.h)
 *   anything else                             a reward model's path (at
 *                                             most one), served by a
 *                                             reward_server
 * Weights may be negative (length:-0.1 penalises length). */
#ifndef ALIGN_REWARD_TERMS_H
#define ALIGN_REWARD_TERMS_H

#include "verify.h"

typedef enum { RT_MATH = 0, RT_EXACT, RT_REGEX, RT_FORMAT, RT_LENGTH, RT_OVERLONG, RT_URL, RT_MODEL } RewardTermKind;

#define REWARD_MAX_TERMS 16

typedef struct {
    RewardTermKind kind;
    double weight;
    char name[64];  /* the built-in's name; "model" for a reward model; "url" */
    char path[512]; /* RT_MODEL */
} RewardTerm;

typedef struct {
    RewardTerm t[REWARD_MAX_TERMS];
    int n;
    int model; /* index of the reward-model term, -1 when none */
    int url;   /* index of the url term, -1 when none */
} RewardSpec;

/* -1 with a sentence naming the term at fault (an empty term, a repeated
 * one, a second reward model, too many terms). */
int reward_spec_parse(const char *spec, RewardSpec *out);
/* Adds a term (the implicit url or model term); -1 when full. */
int reward_spec_add(RewardSpec *s, RewardTermKind kind, const char *name, double weight);

/* What one rule-based term needs to know beyond the completion. */
typedef struct {
    const VerifyPattern *format; /* the format term's pattern (--format-pattern) */
    int max_tokens;              /* --max-new-tokens: length and overlong */
    int overlong_buffer;         /* DAPO's L_cache */
} RewardRuleCtx;

/* The value of rule-based term t for one completion (label may be NULL).
 * -1 with a sentence (a regex label that does not compile). */
int reward_term_eval(const RewardTerm *t, const RewardRuleCtx *ctx, const char *completion, const char *label,
                     int n_tokens, double *out);

#endif
