/* seq_logprobs: the summed log-probability of each sequence's completion
 * tokens (prompt excluded, TRL's default) and their count, for a list of
 * (prompt, completion) sequences packed into forwards of at most
 * max_batch sequences. The reference model in DPO, the `logprobs` program
 * and evaluation all use it; training computes the same sums inside its own
 * packed forward. */
#ifndef ALIGN_SEQ_LOGPROBS_H
#define ALIGN_SEQ_LOGPROBS_H

#include "dataset.h"
#include "model.h"

/* Sums of a packed batch already run through model_token_logprobs:
 * per-token logp, loss mask and offsets -> sums and counts per input
 * sequence (p->n_inputs of them, in the order given to ds_pack*). */
void seq_logprobs_reduce(const DsPacked *p, const float *logp, double *sums, int *counts);

/* Packs (seqs[2i], seqs[2i+1]) pairs for m: each pair's shared prompt
 * computed once (ds_pack_pairs) where m's backend can, else ds_pack. */
int seq_pack_pairs(const Model *m, const DsSeq *seqs, int n_pairs, DsPacked *out);

/* Forward of one packed batch: sums and counts per input sequence. */
int seq_logprobs_packed(Model *m, const DsPacked *p, double *sums, int *counts);
/* The same under the reference model of `policy`: ref == policy is a LoRA
 * policy whose reference is its base, so its adapters are off for the pass. */
int seq_logprobs_reference(Model *ref, Model *policy, const DsPacked *p, double *sums, int *counts);

/* Forward only: sums[i], counts[i] for seqs[i]. pairs = 1: seqs are
 * (chosen, rejected) pairs, packed with seq_pack_pairs (n and the
 * forward size max_batch are then even). */
int seq_logprobs(Model *m, const DsSeq *seqs, int n, int max_batch, int pairs, double *sums, int *counts);

#endif
