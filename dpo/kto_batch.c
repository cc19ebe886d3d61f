#include "kto_batch.h"

#include <stdlib.h>

#include "lora.h"
#include "seq_logprobs.h"
#include "util.h"

int kto_kl_separate_pays(const Model *policy, const DsSeq *seqs, int n) {
    /* Shared: the prompt (once where the backend shares prefixes) and both
     * completions go forward and backward: 3 (P + 2C), or 3 (2P + 2C).
     * Separate: P + C forward only, then P + C forward and backward:
     * 4 (P + C). Completions of one micro-batch are the same set either
     * way, so C sums them once. */
    long P = 0, C = 0;
    for (int i = 0; i < n; i++) P += seqs[i].n_prompt, C += seqs[i].n_completion;
    long shared = 3 * ((model_shares_prefixes(policy) ? P : 2 * P) + 2 * C);
    return 4 * (P + C) < shared;
}

long kto_batch(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
               int n, float scale, int train, Metrics *acc) {
    return kto_batch_pass(loss, policy, ref, seqs, desirable, n, scale, train, KTO_KL_AUTO, acc);
}

long kto_batch_pass(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
                    int n, float scale, int train, KtoKlPass pass, Metrics *acc) {
    if (n <= 0) return align_errorf("kto_batch: an empty micro-batch");
    if (!ref) return align_errorf("KTO needs a reference model");
    int separate = train && (pass == KTO_KL_AUTO ? kto_kl_separate_pays(policy, seqs, n) : pass == KTO_KL_SEPARATE);
    size_t s2 = 2 * (size_t)n;
    DsSeq *both = malloc(s2 * sizeof *both);
    double *sums = malloc(s2 * sizeof(double)), *refs = malloc(s2 * sizeof(double));
    double *own = malloc(4 * (size_t)n * sizeof(double)), *grad = malloc((size_t)n * sizeof(double));
    int *counts = malloc(s2 * sizeof(int));
    float *dlogp = NULL;
    DsPacked p = {0}, pk = {0}, po = {0};
    const DsPacked *grad_of = &p; /* the packed batch the backward runs over */
    long rc = -1;
    if (!both || !sums || !refs || !own || !grad || !counts) {
        align_errorf("out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const DsSeq *other = &seqs[(i + n - 1) % n]; /* TRL: [completions[-1]] + completions[:-1] */
        both[2 * i] = seqs[i];
        both[2 * i + 1] = (DsSeq){seqs[i].prompt, seqs[i].n_prompt, other->completion, other->n_completion};
    }
    if (seq_pack_pairs(policy, both, n, &p)) goto done;
    /* The reference first: when it is the policy with adapters off, its
     * forward must not overwrite the activations the backward needs. */
    if (seq_logprobs_reference(ref, policy, &p, refs, counts)) goto done;
    if (separate) {
        /* The mismatched pairs forward only, then the examples, whose
         * activations the backward reads: own[2n..3n) from the first,
         * own[0..n) from the second. */
        DsSeq *kl = malloc((size_t)n * sizeof *kl);
        if (!kl) {
            align_errorf("out of memory");
            goto done;
        }
        for (int i = 0; i < n; i++) kl[i] = both[2 * i + 1];
        int bad = ds_pack(kl, n, 1, &pk) || seq_logprobs_packed(policy, &pk, sums + n, counts) ||
                  ds_pack(seqs, n, 1, &po) || seq_logprobs_packed(policy, &po, sums, counts);
        free(kl);
        if (bad) goto done;
        for (int i = 0; i < n; i++) own[i] = sums[i], own[2 * n + i] = sums[n + i];
        grad_of = &po;
    } else {
        if (seq_logprobs_packed(policy, &p, sums, counts)) goto done;
        for (int i = 0; i < n; i++) own[i] = sums[2 * i], own[2 * n + i] = sums[2 * i + 1];
    }
    /* own[0..n) policy, [n..2n) reference of the examples; [2n..3n), [3n..4n) the mismatched pairs */
    for (int i = 0; i < n; i++) own[n + i] = refs[2 * i], own[3 * n + i] = refs[2 * i + 1];
    dlogp = calloc(grad_of->batch.n_tokens, sizeof(float));
    if (!dlogp) {
        align_errorf("out of memory");
        goto done;
    }
    KtoBatchResult r;
    double z = kto_kl_estimate(own + 2 * (size_t)n, own + 3 * (size_t)n, n);
    kto_batch_loss(loss, n, desirable, own, own + n, z, grad, &r);
    for (int i = 0; i < n; i++) {
        int s = ds_packed_seq(grad_of, separate ? i : 2 * i);
        float g = (float)(grad[i] * scale);
        for (int t = grad_of->seq_start[s]; t < grad_of->seq_start[s + 1]; t++)
            if (grad_of->loss_mask[t]) dlogp[t] = g;
    }
    metrics_add(acc, "loss", r.loss, 1);
    metrics_add(acc, "kl", r.kl, 1);
    if (r.n_chosen) {
        metrics_add(acc, "rewards/chosen", r.rewards_chosen, 1);
        metrics_add(acc, "logps/chosen", r.logps_chosen, 1);
    }
    if (r.n_rejected) {
        metrics_add(acc, "rewards/rejected", r.rewards_rejected, 1);
        metrics_add(acc, "logps/rejected", r.logps_rejected, 1);
    }
    if (r.n_chosen && r.n_rejected) metrics_add(acc, "rewards/margins", r.rewards_chosen - r.rewards_rejected, 1);
    if (train && model_backward(policy, dlogp, NULL)) goto done;
    rc = 0;
    for (size_t i = 0; i < s2; i++) rc += both[i].n_prompt + both[i].n_completion;
done:
    free(both), free(sums), free(refs), free(own), free(grad), free(counts), free(dlogp);
    ds_packed_free(&p), ds_packed_free(&pk), ds_packed_free(&po);
    return rc;
}
