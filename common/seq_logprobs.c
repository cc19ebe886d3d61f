#include "seq_logprobs.h"

#include <stdlib.h>

#include "util.h"

void seq_logprobs_reduce(const DsPacked *p, const float *logp, double *sums, int *counts) {
    for (int s = 0; s < p->batch.n_seqs; s++) {
        double sum = 0;
        int n = 0;
        for (int i = p->seq_start[s]; i < p->seq_start[s + 1]; i++)
            if (p->loss_mask[i]) sum += logp[i], n++;
        sums[s] = sum;
        counts[s] = n;
    }
}

int seq_logprobs(Model *m, const DsSeq *seqs, int n, int max_batch, double *sums, int *counts) {
    if (max_batch <= 0) max_batch = 1;
    for (int at = 0; at < n; at += max_batch) {
        int k = n - at < max_batch ? n - at : max_batch;
        DsPacked p;
        if (ds_pack(seqs + at, k, 1, &p)) return -1;
        float *logp = malloc(p.batch.n_tokens * sizeof(float));
        int rc = !logp ? align_errorf("out of memory")
                       : model_forward(m, &p.batch) || model_token_logprobs(m, p.targets, logp);
        if (!rc) seq_logprobs_reduce(&p, logp, sums + at, counts + at);
        free(logp);
        ds_packed_free(&p);
        if (rc) return -1;
    }
    return 0;
}
