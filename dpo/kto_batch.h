/* kto_batch: one micro-batch of KTO examples through the policy.
 *
 * Example i is (prompt_i, completion_i) with a label; its mismatched pair
 * for the reference point is (prompt_i, completion_{i-1}), the completions
 * rotated by one within the micro-batch (the first gets the last one's),
 * as TRL's KTOTrainer builds its KL_completion_ids. Both sequences of an
 * example share its prompt, so the reference runs the 2n sequences packed
 * like DPO's pairs (seq_pack_pairs: each prompt runs once) in ONE forward.
 * The mismatched sequences get no gradient (the reference point is
 * detached, as TRL computes it under no_grad), so only the examples' own
 * completion tokens carry kto_batch_loss's gradient (times scale) back.
 * When training, the policy runs them in the same packing with the
 * mismatched sequences moved behind all the examples' rows (KTO_KL_LAST,
 * the default): one forward over everything, the prompts once, then a
 * backward over the examples' rows only (model_backward_rows), so the
 * pairs cost a forward and nothing else, as under TRL's no_grad.
 * KTO_KL_SHARED (the reference's packing, the backward crossing the
 * pairs' rows with a zero gradient) and KTO_KL_SEPARATE (a forward-only
 * pass over the pairs, then forward and backward over the examples) give
 * the same gradient at a higher cost; tests compare the three.
 * Evaluation (train = 0) always runs the one shared forward. The reference
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

typedef enum { KTO_KL_AUTO = -1, KTO_KL_SHARED = 0, KTO_KL_SEPARATE = 1, KTO_KL_LAST = 2 } KtoKlPass;

/* seqs[i], desirable[i] (1 or 0) for i < n. Returns the tokens of all 2n
 * sequences (as if unshared), or -1 with an error. train = 0: forward and
 * metrics only. kto_batch is kto_batch_pass with KTO_KL_AUTO. */
long kto_batch(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
               int n, float scale, int train, Metrics *acc);
long kto_batch_pass(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
                    int n, float scale, int train, KtoKlPass pass, Metrics *acc);

#endif
