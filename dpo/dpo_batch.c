#include "dpo_batch.h"

#include <stdlib.h>

#include "lora.h"
#include "seq_logprobs.h"
#include "util.h"

long dpo_batch(const DpoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, int n,
               const double *ref_sums, float scale, int train, Metrics *acc) {
    size_t s2 = 2 * (size_t)n;
    double *sums = malloc(s2 * sizeof(double)), *refs = calloc(s2, sizeof(double));
    int *counts = malloc(s2 * sizeof(int));
    float *dlogp = NULL;
    DsPacked p = {0};
    long rc = -1;
    if (!sums || !refs || !counts) {
        align_errorf("out of memory");
        goto done;
    }
    /* one packing for reference and policy: each pair's prompt runs once */
    if (seq_pack_pairs(policy, seqs, n, &p)) goto done;
    if (!dpo_loss_reference_free(loss->type)) {
        if (ref_sums) {
            for (size_t i = 0; i < s2; i++) refs[i] = ref_sums[i];
        } else if (!ref) {
            align_errorf("this loss needs a reference model or precomputed reference log-probs");
            goto done;
        } else if (seq_logprobs_reference(ref, policy, &p, refs, counts)) {
            goto done;
        }
    }
    dlogp = calloc(p.batch.n_tokens, sizeof(float));
    if (!dlogp) {
        align_errorf("out of memory");
        goto done;
    }
    if (seq_logprobs_packed(policy, &p, sums, counts)) goto done;
    for (int i = 0; i < n; i++) {
        DpoPair pair = {sums[2 * i], sums[2 * i + 1], refs[2 * i], refs[2 * i + 1], counts[2 * i], counts[2 * i + 1]};
        DpoPairResult r;
        dpo_pair_loss(loss, &pair, &r);
        for (int side = 0; side < 2; side++) {
            float g = (float)((side ? r.dtok_rejected : r.dtok_chosen) * scale / n);
            int s = ds_packed_seq(&p, 2 * i + side);
            for (int t = p.seq_start[s]; t < p.seq_start[s + 1]; t++)
                if (p.loss_mask[t]) dlogp[t] = g;
        }
        metrics_add(acc, "loss", r.loss, 1);
        metrics_add(acc, "rewards/chosen", r.reward_chosen, 1);
        metrics_add(acc, "rewards/rejected", r.reward_rejected, 1);
        metrics_add(acc, "rewards/accuracies", r.reward_chosen > r.reward_rejected ? 1.0 : 0.0, 1);
        metrics_add(acc, "rewards/margins", r.reward_chosen - r.reward_rejected, 1);
        metrics_add(acc, "logps/chosen", sums[2 * i], 1);
        metrics_add(acc, "logps/rejected", sums[2 * i + 1], 1);
    }
    if (train && model_backward(policy, dlogp, NULL)) goto done;
    rc = 0; /* the pairs' tokens, whatever sharing the prompt saved */
    for (size_t i = 0; i < s2; i++) rc += seqs[i].n_prompt + seqs[i].n_completion;
done:
    free(sums), free(refs), free(counts), free(dlogp);
    ds_packed_free(&p);
    return rc;
}
