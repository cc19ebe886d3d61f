/* dpo_batch: one micro-batch of preference pairs through the policy.
 *
 * The 2n sequences (chosen and rejected of each pair, side by side) are
 * packed into ONE forward, each pair's prompt computed once for both
 * (seq_pack_pairs); summed completion log-probs per sequence feed
 * dpo_pair_loss, and its per-token gradient (times scale / n: the batch
 * loss is the mean over pairs) goes back through the same packed batch.
 * Reference sums come from ref_sums (precomputed) or a forward of ref, or
 * are zero for reference-free losses; ref may be the policy itself when it
 * carries LoRA adapters: the reference is then its base, adapters off.
 * Metrics use TRL's names. */
#ifndef ALIGN_DPO_BATCH_H
#define ALIGN_DPO_BATCH_H

#include "dataset.h"
#include "dpo_loss.h"
#include "metrics.h"
#include "model.h"

/* Returns the pairs' tokens (prompt + completion of each sequence, as if
 * unshared), or -1 with an error. train = 0: forward and metrics only. */
long dpo_batch(const DpoLossConfig *loss, Model *policy, Model *ref, const DsSeq *pairs, int n,
               const double *ref_sums, float scale, int train, Metrics *acc);

#endif
