/* rm_model: reward model from a base model, last-token scores, the
 * Bradley-Terry micro-batch (see rm_model.h). */
#include "rm_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "seq_logprobs.h"
#include "util.h"

int rm_is_reward_model(const ModelConfig *c) { return c->value_head && !c->lm_head; }

int rm_from_base(Model *base, uint64_t seed, Model **out) {
    *out = NULL;
    if (rm_is_reward_model(&base->cfg)) {
        *out = base;
        return 0;
    }
    ModelConfig cfg = base->cfg;
    cfg.lm_head = 0;
    cfg.value_head = 1;
    const Backend *be = base->be;
    Model *m = model_create(&cfg, be);
    if (!m) return align_error_prefix("building the reward model");
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        ParamInfo *q = model_find_param(base, p->name);
        if (q) {
            if (q->numel != p->numel) {
                model_free(m);
                return align_errorf("reward model: tensor %s has %zu elements in the base but %zu here", p->name,
                                    q->numel, p->numel);
            }
            be->copy(m->params + p->offset, base->params + q->offset, p->numel * sizeof(float));
        } else if (!strcmp(p->name, "score.weight")) {
            float *w = malloc(p->numel * sizeof(float));
            if (!w) {
                model_free(m);
                return align_errorf("out of memory");
            }
            Rng r;
            rng_seed(&r, seed ^ 0x5c0e5c0e5c0eULL);
            double std = 1.0 / sqrt((double)cfg.dim + 1.0);
            for (size_t k = 0; k < p->numel; k++) w[k] = (float)(rng_normal(&r) * std);
            be->to_device(m->params + p->offset, w, p->numel * sizeof(float));
            free(w);
        } else {
            model_free(m);
            return align_errorf("reward model: the base model has no tensor %s", p->name);
        }
    }
    *out = m;
    return 0;
}

int rm_score_batch(Model *m, const Batch *b, float *scores) {
    if (!m->cfg.value_head) return align_errorf("this model has no score head (score.weight): train it with rm_train");
    float *values = malloc(((size_t)b->n_tokens + 1) * sizeof(float));
    if (!values) return align_errorf("out of memory");
    int rc = model_forward(m, b) || model_values(m, values);
    if (!rc)
        for (int s = 0; s < b->n_seqs; s++) scores[s] = values[b->seq_start[s + 1] - 1];
    free(values);
    return rc ? -1 : 0;
}

int rm_score_seqs(Model *m, const DsSeq *seqs, int n, int max_batch_tokens, float *scores) {
    int at = 0;
    while (at < n) {
        long tokens = 0;
        int k = 0;
        while (at + k < n) {
            long len = (long)seqs[at + k].n_prompt + seqs[at + k].n_completion;
            if (k > 0 && tokens + len > max_batch_tokens) break;
            tokens += len;
            k++;
        }
        DsPacked p;
        if (ds_pack(seqs + at, k, 0, &p)) return -1;
        int rc = rm_score_batch(m, &p.batch, scores + at);
        ds_packed_free(&p);
        if (rc) return -1;
        at += k;
    }
    return 0;
}

/* The row of input sequence k's last token. */
static int last_row(const DsPacked *p, int k) { return p->seq_start[ds_packed_seq(p, k) + 1] - 1; }

long rm_pairs_step(const RmLossConfig *cfg, Model *m, const DsSeq *pairs, const float *margins, int n,
                   float scale, int train, Metrics *acc, float *scores_out) {
    DsPacked p; /* each pair's prompt runs once where the backend can */
    if (seq_pack_pairs(m, pairs, n, &p)) return -1;
    long N = p.batch.n_tokens;
    float *values = malloc((N + 1) * sizeof(float)), *dvalues = train ? calloc(N + 1, sizeof(float)) : NULL;
    float *sc = malloc(n * sizeof(float)), *sr = malloc(n * sizeof(float));
    double *dsc = malloc(n * sizeof(double)), *dsr = malloc(n * sizeof(double));
    long rc = -1;
    if (!values || (train && !dvalues) || !sc || !sr || !dsc || !dsr) {
        align_errorf("out of memory");
        goto done;
    }
    if (model_forward(m, &p.batch) || model_values(m, values)) goto done;
    for (int i = 0; i < n; i++) {
        sc[i] = values[last_row(&p, 2 * i)];
        sr[i] = values[last_row(&p, 2 * i + 1)];
        if (scores_out) scores_out[2 * i] = sc[i], scores_out[2 * i + 1] = sr[i];
    }
    rm_batch_loss(cfg, sc, sr, margins, n, dsc, dsr, acc);
    if (train) {
        /* only the last token of each sequence carries a gradient */
        for (int i = 0; i < n; i++) {
            dvalues[last_row(&p, 2 * i)] = (float)(dsc[i] * scale);
            dvalues[last_row(&p, 2 * i + 1)] = (float)(dsr[i] * scale);
        }
        if (model_backward(m, NULL, dvalues)) goto done;
    }
    rc = 0; /* the pairs' tokens, whatever sharing the prompt saved */
    for (int i = 0; i < 2 * n; i++) rc += pairs[i].n_prompt + pairs[i].n_completion;
done:
    free(values), free(dvalues), free(sc), free(sr), free(dsc), free(dsr);
    ds_packed_free(&p);
    return rc;
}
