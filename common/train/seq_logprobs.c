#include "seq_logprobs.h"

#include <stdlib.h>

#include "lora.h"
#include "prompt_learning.h"
#include "util.h"

void seq_logprobs_reduce(const DsPacked *p, const float *logp, double *sums, int *counts) {
    for (int k = 0; k < p->n_inputs; k++) {
        int s = ds_packed_seq(p, k);
        double sum = 0;
        int n = 0;
        for (int i = p->seq_start[s]; i < p->seq_start[s + 1]; i++)
            if (p->loss_mask[i]) sum += logp[i], n++;
        sums[k] = sum;
        counts[k] = n;
    }
}

int seq_pack_pairs(const Model *m, const DsSeq *seqs, int n_pairs, DsPacked *out) {
    return model_shares_prefixes(m) ? ds_pack_pairs(seqs, n_pairs, 1, out) : ds_pack(seqs, 2 * n_pairs, 1, out);
}

int seq_logprobs_packed(Model *m, const DsPacked *p, double *sums, int *counts) {
    float *logp = malloc(p->batch.n_tokens * sizeof(float));
    int rc = !logp ? align_errorf("out of memory")
                   : model_forward(m, &p->batch) || model_token_logprobs(m, p->targets, logp);
    if (!rc) seq_logprobs_reduce(p, logp, sums, counts);
    free(logp);
    return rc ? -1 : 0;
}

int seq_logprobs(Model *m, const DsSeq *seqs, int n, int max_batch, int pairs, double *sums, int *counts) {
    if (pairs && n % 2) return align_errorf("an odd number of sequences cannot be pairs");
    if (max_batch < 2) max_batch = pairs ? 2 : 1;
    if (pairs) max_batch -= max_batch % 2;
    for (int at = 0; at < n; at += max_batch) {
        int k = n - at < max_batch ? n - at : max_batch;
        DsPacked p;
        if (pairs ? seq_pack_pairs(m, seqs + at, k / 2, &p) : ds_pack(seqs + at, k, 1, &p)) return -1;
        int rc = seq_logprobs_packed(m, &p, sums + at, counts + at);
        ds_packed_free(&p);
        if (rc) return -1;
    }
    return 0;
}

int seq_logprobs_reference(Model *ref, Model *policy, const DsPacked *p, double *sums, int *counts) {
    int was = ref == policy ? model_lora_enable(policy, 0) : -1;
    int was_virt = ref == policy ? model_prompt_enable(policy, 0) : -1; /* virtual tokens off too */
    int rc = seq_logprobs_packed(ref, p, sums, counts);
    if (was >= 0) model_lora_enable(policy, was);
    if (was_virt >= 0) model_prompt_enable(policy, was_virt);
    return rc;
}
