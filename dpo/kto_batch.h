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
 * The policy either runs them the reference's way (KTO_KL_SHARED: one
 * forward, and the backward crosses the mismatched rows too, with a zero
 * gradient) or splits (KTO_KL_SEPARATE: a forward-only pass over the
 * mismatched sequences, then forward and backward over the examples only;
 * each prompt then runs twice). KTO_KL_AUTO picks the one with fewer
 * token-passes (kto_kl_separate_pays); evaluation (train = 0) always
 * shares. The gradient is the same either way. The reference
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

typedef enum { KTO_KL_AUTO = -1, KTO_KL_SHARED = 0, KTO_KL_SEPARATE = 1 } KtoKlPass;

/* seqs[i], desirable[i] (1 or 0) for i < n. Returns the tokens of all 2n
 * sequences (as if unshared), or -1 with an error. train = 0: forward and
 * metrics only. kto_batch is kto_batch_pass with KTO_KL_AUTO. */
long kto_batch(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
               int n, float scale, int train, Metrics *acc);
long kto_batch_pass(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
                    int n, float scale, int train, KtoKlPass pass, Metrics *acc);

/* 1 when a training step of these n examples costs fewer token-passes
 * with the mismatched pairs in their own forward-only pass on `policy`
 * (a backward counted as two forwards). */
int kto_kl_separate_pays(const Model *policy, const DsSeq *seqs, int n);

#endif
