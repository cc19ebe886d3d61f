/* ppo_batch: PPO's sequences (prompt + sampled response) packed for one
 * forward, and the per-response-token views PPO needs: log-probs of the
 * sampled tokens, values of the states before them, and the backward of
 * gradients given per response token.
 *
 * Response token t of sequence s (the action a_t) is predicted by the
 * packed row just before it, row seq_start[s] + n_prompt_s + t - 1: its
 * log-prob is read there (the LM head at that row, target a_t) and so is
 * V(s_t), the critic's value of the prefix prompt + a_<t. That is why a
 * prompt must have at least one token. Response arrays are the ragged
 * layout of ppo_config.h (concatenated, offsets), prompt rows never appear
 * in them. */
#ifndef ALIGN_PPO_BATCH_H
#define ALIGN_PPO_BATCH_H

#include <stdint.h>

#include "dataset.h"
#include "model.h"

typedef struct {
    DsPacked p;
    int32_t *rows;     /* [n_resp] packed row of each response token */
    int32_t *resp_off; /* [n_seqs + 1] response offsets within this batch */
    int n_resp;
    float *full;       /* scratch [p.batch.n_tokens] */
} PpoPacked;

/* Pack sequences idx[0..n) (idx NULL: 0..n-1) of a ragged set: prompts
 * (ptok, poff) and responses (rtok, roff). */
int ppo_pack(const int32_t *ptok, const int32_t *poff, const int32_t *rtok, const int32_t *roff, const int32_t *idx,
             int n, PpoPacked *out);
void ppo_packed_free(PpoPacked *b);

/* model_forward then the sampled tokens' log-probs [n_resp] (logp may be
 * NULL when only the backward is wanted later) and/or the values [n_resp]
 * (values NULL: not read; needs a value head). */
int ppo_forward(Model *m, PpoPacked *b, float *logp, float *values);
/* Backward of per-response-token gradients (either may be NULL). */
int ppo_backward(Model *m, PpoPacked *b, const float *dlogp, const float *dvalues);

/* Forward only over a whole ragged set in chunks of about max_tokens
 * tokens: log-probs and/or values per response token, [roff[n]] each. */
int ppo_score_all(Model *m, const int32_t *ptok, const int32_t *poff, const int32_t *rtok, const int32_t *roff, int n,
                  int max_tokens, float *logp, float *values);

#endif
