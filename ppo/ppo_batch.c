/* ppo_batch: packing PPO sequences and reading per-response-token
 * log-probs and values (see ppo_batch.h). */
#include "ppo_batch.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

int ppo_pack(const int32_t *ptok, const int32_t *poff, const int32_t *rtok, const int32_t *roff, const int32_t *idx,
             int n, PpoPacked *out) {
    memset(out, 0, sizeof *out);
    DsSeq *seqs = malloc((size_t)(n > 0 ? n : 1) * sizeof(DsSeq));
    out->resp_off = malloc(((size_t)n + 1) * sizeof(int32_t));
    if (!seqs || !out->resp_off) {
        free(seqs);
        ppo_packed_free(out);
        return align_errorf("out of memory");
    }
    out->resp_off[0] = 0;
    for (int i = 0; i < n; i++) {
        int s = idx ? idx[i] : i;
        /* a compound literal: fields not named here (the loss mask) are zero */
        seqs[i] = (DsSeq){.prompt = ptok + poff[s], .n_prompt = poff[s + 1] - poff[s],
                          .completion = rtok + roff[s], .n_completion = roff[s + 1] - roff[s]};
        if (seqs[i].n_prompt < 1 || seqs[i].n_completion < 1) {
            free(seqs);
            ppo_packed_free(out);
            return align_errorf("sequence %d has an empty prompt or response (each needs one token at least)", s);
        }
        out->resp_off[i + 1] = out->resp_off[i] + seqs[i].n_completion;
    }
    out->n_resp = out->resp_off[n];
    int rc = ds_pack(seqs, n, 1, &out->p);
    if (!rc) {
        out->rows = malloc((size_t)out->n_resp * sizeof(int32_t));
        out->full = malloc((size_t)out->p.batch.n_tokens * sizeof(float));
        if (!out->rows || !out->full) rc = align_errorf("out of memory");
    }
    for (int i = 0; !rc && i < n; i++)
        for (int t = 0; t < seqs[i].n_completion; t++)
            out->rows[out->resp_off[i] + t] = out->p.seq_start[i] + seqs[i].n_prompt + t - 1;
    free(seqs);
    if (rc) ppo_packed_free(out);
    return rc;
}

void ppo_packed_free(PpoPacked *b) {
    ds_packed_free(&b->p);
    free(b->rows), free(b->resp_off), free(b->full);
    memset(b, 0, sizeof *b);
}

int ppo_forward(Model *m, PpoPacked *b, float *logp, float *values) {
    if (model_forward(m, &b->p.batch)) return -1;
    if (values) {
        if (!m->cfg.value_head) return align_errorf("the model has no value head (score.weight)");
        if (model_values(m, b->full)) return -1;
        for (int i = 0; i < b->n_resp; i++) values[i] = b->full[b->rows[i]];
    }
    if (logp || m->cfg.lm_head) {
        if (!m->cfg.lm_head) return align_errorf("the model has no LM head");
        if (model_token_logprobs(m, b->p.targets, b->full)) return -1;
        if (logp)
            for (int i = 0; i < b->n_resp; i++) logp[i] = b->full[b->rows[i]];
    }
    return 0;
}

int ppo_backward(Model *m, PpoPacked *b, const float *dlogp, const float *dvalues) {
    int n = b->p.batch.n_tokens;
    float *dl = NULL, *dv = NULL;
    if (dlogp) {
        dl = calloc((size_t)n, sizeof(float));
        if (!dl) return align_errorf("out of memory");
        for (int i = 0; i < b->n_resp; i++) dl[b->rows[i]] = dlogp[i];
    }
    if (dvalues) {
        dv = calloc((size_t)n, sizeof(float));
        if (!dv) {
            free(dl);
            return align_errorf("out of memory");
        }
        for (int i = 0; i < b->n_resp; i++) dv[b->rows[i]] = dvalues[i];
    }
    int rc = model_backward(m, dl, dv);
    free(dl), free(dv);
    return rc;
}

int ppo_score_all(Model *m, const int32_t *ptok, const int32_t *poff, const int32_t *rtok, const int32_t *roff, int n,
                  int max_tokens, float *logp, float *values) {
    int32_t *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!idx) return align_errorf("out of memory");
    int rc = 0;
    for (int s = 0; !rc && s < n;) {
        int k = 0;
        long tokens = 0;
        while (s + k < n) {
            long len = (poff[s + k + 1] - poff[s + k]) + (roff[s + k + 1] - roff[s + k]);
            if (k > 0 && tokens + len > max_tokens) break;
            idx[k] = s + k;
            tokens += len;
            k++;
        }
        PpoPacked b;
        rc = ppo_pack(ptok, poff, rtok, roff, idx, k, &b);
        if (!rc) rc = ppo_forward(m, &b, logp ? logp + roff[s] : NULL, values ? values + roff[s] : NULL);
        ppo_packed_free(&b);
        s += k;
    }
    free(idx);
    return rc;
}
