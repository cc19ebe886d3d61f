/* sampler: pick the next token from one row of logits.
 *
 * Greedy (temperature 0), or a draw from the distribution filtered in
 * Hugging Face's order: divide by the temperature, keep the top_k largest,
 * then keep the smallest set of the most likely tokens whose probability
 * reaches top_p (always at least one token). Every draw uses the caller's
 * Rng, so a sequence with its own Rng is reproducible whatever else runs
 * beside it.
 *
 * The returned log-prob is ALWAYS log_softmax of the raw logits at the
 * chosen token: the probability under the model itself, not under the
 * tempered or truncated distribution the token was drawn from. PPO's ratio
 * and KL terms compare the policy's own log-probs, so a sampler setting must
 * not leak into them.
 *
 * Speed (vocabularies of 50k-130k): one pass finds the max and the
 * log-sum-exp; top-k keeps a k-element min-heap in a single pass instead of
 * sorting the vocabulary; top-p buckets tokens by log-probability, adds up
 * bucket masses from the top until they reach p, and sorts only the tokens
 * of the bucket where the mass crosses p. */
#ifndef ALIGN_SAMPLER_H
#define ALIGN_SAMPLER_H

#include <stdint.h>

#include "rng.h"

typedef struct {
    float temperature; /* 0 = greedy (argmax, lowest id on ties) */
    int top_k;         /* 0 (or >= vocab) = off */
    float top_p;       /* 1 = off; in (0, 1] */
} SamplerConfig;

typedef struct Sampler Sampler;

/* The defaults: temperature 1, top_k 0, top_p 1 (plain sampling). */
void sampler_config_defaults(SamplerConfig *c);
/* -1 with an error naming the bad field. */
int sampler_config_validate(const SamplerConfig *c);

/* Scratch for one vocabulary size; one Sampler per thread. */
Sampler *sampler_create(int vocab_size);
void sampler_free(Sampler *s);

/* Pick a token from logits[vocab]. *logprob (may be NULL) receives
 * log_softmax(logits)[token] of the UNMODIFIED logits. rng may be NULL for
 * greedy. Returns the token id, or -1 with an error (NaN logits, a bad
 * config). */
int32_t sampler_sample(Sampler *s, const SamplerConfig *c, const float *logits, Rng *rng,
                       float *logprob);

/* The set of token ids a draw with config c can return (the tokens that
 * survive temperature, top-k and top-p), in decreasing probability; *n_kept
 * receives its size. `kept` must hold vocab ints. For tests and tools:
 * sampler_sample draws only from this set. */
int sampler_kept_set(Sampler *s, const SamplerConfig *c, const float *logits, int32_t *kept,
                     int *n_kept);

/* log_softmax(logits)[token] (double accumulation). */
float sampler_logprob(const float *logits, int vocab_size, int32_t token);

#endif
