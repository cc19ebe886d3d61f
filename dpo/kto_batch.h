/* kto_batch: one micro-batch of KTO examples through the policy.
 *
 * Example i is (prompt_i, completion_i) with a label; its mismatched pair
 * for the reference point is (prompt_i, completion_{i-1}), the completions
 * rotated by one within the micro-batch (the first gets the last one's),
 * as TRL's KTOTrainer builds its KL_completion_ids. Both sequences of an
 * example share its prompt, so the 2n sequences pack like DPO's pairs
 * (seq_pack_pairs: each prompt runs once) into ONE forward of the policy
 * and one of the reference. The mismatched sequences get no gradient (the
 * reference point is detached), so only the examples' own completion
 * tokens carry kto_batch_loss's gradient (times scale) back. The reference
 * is ref, or the policy itself with its LoRA adapters off when ref ==
 * policy. Metrics under TRL's names: loss, kl, rewards/chosen,
 * rewards/rejected, logps/chosen, logps/rejected (each micro-batch's value
 * weighs 1, as TRL averages its per-batch values) and rewards/margins
 * (chosen minus rejected, in micro-batches that have both). */
#ifndef ALIGN_KTO_BATCH_H
#define ALIGN_KTO_BATCH_H

#include "dataset.h"
#include "kto_loss.h"
#include "metrics.h"
#include "model.h"

/* seqs[i], desirable[i] (1 or 0) for i < n. Returns the tokens of all 2n
 * sequences (as if unshared), or -1 with an error. train = 0: forward and
 * metrics only. */
long kto_batch(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
               int n, float scale, int train, Metrics *acc);

#endif
