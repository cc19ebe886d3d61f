/* dpo_online: the sampling and judging half of online DPO.
 *
 * For each prompt of a micro-batch the current policy samples n
 * completions (the shared generation code, common/infer/generate.h), a
 * judge scores every (prompt, completion) — a reward model in process or
 * a reward_server over rm_client — and the best and the worst score make
 * the prompt's (chosen, rejected) pair, which the caller trains on with
 * dpo_batch. A completion that did not end (no stop token within
 * max_new_tokens) can lose missing_eos_penalty from its score first
 * (TRL's missing_eos_penalty). A prompt whose best and worst samples
 * score the same, or are the same tokens, gives no pair (counted): TRL's
 * online DPO keeps such a pair with the first sample as chosen, which
 * trains on noise.
 *
 * Metrics under TRL's OnlineDPOTrainer names: objective/scores (mean
 * score of all samples, after the penalty), objective/scores_margin (mean
 * chosen minus rejected score), val/contain_eos_token (share of samples
 * that ended), and online/pairs, online/no_pair (counts per micro-batch). */
#ifndef ALIGN_DPO_ONLINE_H
#define ALIGN_DPO_ONLINE_H

#include "dataset.h"
#include "generate.h"
#include "metrics.h"
#include "model.h"
#include "rm_client.h"

typedef struct {
    GenConfig gen;             /* n_samples >= 2; seed; stop ids (the template's end of turn, EOS) */
    Model *rm;                 /* the judge in process, or */
    RmClient *client;          /* a reward_server */
    int rm_max_batch_tokens;   /* in process: tokens per scoring forward */
    float missing_eos_penalty; /* 0 = off */
} DpoOnline;

typedef struct {
    int n_pairs;
    DsSeq *seqs;               /* 2 * n_pairs: chosen, rejected; prompts point at the caller's */
    int *prompt_of;            /* the input prompt each pair came from */
    float *score_chosen, *score_rejected;
    GenOutput *outs;           /* own the completion tokens */
    int n_outs;
} DpoOnlinePairs;

/* prompts[i].prompt / n_prompt are the prompts (completion fields are
 * ignored). Sample j of prompt i is seeded by (gen.seed, index_base + i, j)
 * (generate_sequence_seed), so a caller that passes a position that does
 * not depend on how the run was split (the trainer's micro-step) gets the
 * same draws after --resume. Returns 0 (out->n_pairs may be 0) or -1. */
int dpo_online_pairs(const DpoOnline *o, Model *policy, const DsSeq *prompts, int n, long index_base,
                     DpoOnlinePairs *out, Metrics *acc);
void dpo_online_pairs_free(DpoOnlinePairs *p);

#endif
