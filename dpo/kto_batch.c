#include "kto_batch.h"

#include <stdlib.h>
#include <string.h>

#include "lora.h"
#include "seq_logprobs.h"
#include "util.h"

/* p (seq_pack_pairs of n (example, mismatched pair) sequences) repacked
 * with every mismatched sequence moved behind all the rest, order kept
 * otherwise: *n_rows is then where they start, and a backward over the
 * first *n_rows rows (model_backward_rows) is the whole backward, since
 * nothing attends to them (each extends only its prompt, which stays
 * ahead) and their gradient is zero. */
static int pack_pairs_last(const DsPacked *p, int n, DsPacked *out, int *n_rows) {
    int S = p->batch.n_seqs, N = p->batch.n_tokens;
    memset(out, 0, sizeof *out);
    int *is_kl = calloc(S, sizeof(int)), *new_of = malloc(S * sizeof(int));
    out->tokens = malloc(N * sizeof(int32_t));
    out->targets = malloc(N * sizeof(int32_t));
    out->loss_mask = malloc(N);
    out->seq_start = malloc((S + 1) * sizeof(int32_t));
    out->seq_of = malloc(2 * (size_t)n * sizeof(int32_t));
    out->seq_prefix = p->seq_prefix ? malloc(S * sizeof(int32_t)) : NULL;
    if (!is_kl || !new_of || !out->tokens || !out->targets || !out->loss_mask || !out->seq_start || !out->seq_of ||
        (p->seq_prefix && !out->seq_prefix)) {
        free(is_kl), free(new_of);
        ds_packed_free(out);
        return align_errorf("out of memory");
    }
    for (int i = 0; i < n; i++) is_kl[ds_packed_seq(p, 2 * i + 1)] = 1;
    int at = 0, rows = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int s = 0; s < S; s++) {
            if (is_kl[s] != pass) continue;
            int a = p->seq_start[s], len = p->seq_start[s + 1] - a;
            if (pass == 1 && *n_rows < 0) *n_rows = rows;
            new_of[s] = at;
            out->seq_start[at++] = rows;
            memcpy(out->tokens + rows, p->tokens + a, len * sizeof(int32_t));
            memcpy(out->targets + rows, p->targets + a, len * sizeof(int32_t));
            memcpy(out->loss_mask + rows, p->loss_mask + a, len);
            rows += len;
        }
    out->seq_start[S] = rows;
    for (int s = 0; s < S && out->seq_prefix; s++)
        out->seq_prefix[new_of[s]] = p->seq_prefix[s] >= 0 ? new_of[p->seq_prefix[s]] : -1;
    for (int k = 0; k < 2 * n; k++) out->seq_of[k] = new_of[ds_packed_seq(p, k)];
    out->n_loss_tokens = p->n_loss_tokens;
    out->n_inputs = p->n_inputs;
    out->batch = (Batch){.n_tokens = N, .n_seqs = S, .tokens = out->tokens, .seq_start = out->seq_start,
                         .seq_prefix = out->seq_prefix};
    free(is_kl), free(new_of);
    return 0;
}

long kto_batch(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
               int n, float scale, int train, Metrics *acc) {
    return kto_batch_pass(loss, policy, ref, seqs, desirable, n, scale, train, KTO_KL_AUTO, acc);
}

long kto_batch_pass(const KtoLossConfig *loss, Model *policy, Model *ref, const DsSeq *seqs, const int *desirable,
                    int n, float scale, int train, KtoKlPass pass, Metrics *acc) {
    if (n <= 0) return align_errorf("kto_batch: an empty micro-batch");
    if (!ref) return align_errorf("KTO needs a reference model");
    /* virtual tokens (prompt/prefix tuning) put rows before every sequence:
     * the pairs cannot be cut off the end of the backward */
    int virt = policy->virt && policy->virt->n_virtual(policy) > 0;
    if (pass == KTO_KL_AUTO) pass = !train ? KTO_KL_SHARED : virt ? KTO_KL_SEPARATE : KTO_KL_LAST;
    if (!train) pass = KTO_KL_SHARED; /* one forward, no backward to spare */
    int separate = pass == KTO_KL_SEPARATE, n_rows = -1;
    size_t s2 = 2 * (size_t)n;
    DsSeq *both = malloc(s2 * sizeof *both);
    double *sums = malloc(s2 * sizeof(double)), *refs = malloc(s2 * sizeof(double));
    double *own = malloc(4 * (size_t)n * sizeof(double)), *grad = malloc((size_t)n * sizeof(double));
    int *counts = malloc(s2 * sizeof(int));
    float *dlogp = NULL;
    DsPacked p = {0}, pk = {0}, po = {0}, pl = {0};
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
        if (pass == KTO_KL_LAST) {
            if (pack_pairs_last(&p, n, &pl, &n_rows)) goto done;
            grad_of = &pl;
        }
        if (seq_logprobs_packed(policy, grad_of, sums, counts)) goto done;
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
    if (train && (n_rows >= 0 ? model_backward_rows(policy, dlogp, NULL, n_rows) : model_backward(policy, dlogp, NULL)))
        goto done;
    rc = 0;
    for (size_t i = 0; i < s2; i++) rc += both[i].n_prompt + both[i].n_completion;
done:
    free(both), free(sums), free(refs), free(own), free(grad), free(counts), free(dlogp);
    ds_packed_free(&p), ds_packed_free(&pk), ds_packed_free(&po), ds_packed_free(&pl);
    return rc;
}
