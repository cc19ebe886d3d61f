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
 * per-token logp, loss mask and offsets -> per-sequence sums and counts. */
void seq_logprobs_reduce(const DsPacked *p, const float *logp, double *sums, int *counts);

/* Forward only: sums[i], counts[i] for seqs[i]. */
int seq_logprobs(Model *m, const DsSeq *seqs, int n, int max_batch, double *sums, int *counts);

#endif
