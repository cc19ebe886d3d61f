#include "dpo_online.h"

#include <stdlib.h>
#include <string.h>

#include "rm_model.h"
#include "util.h"

void dpo_online_pairs_free(DpoOnlinePairs *p) {
    if (!p) return;
    if (p->outs) generate_outputs_free(p->outs, p->n_outs);
    free(p->outs), free(p->seqs), free(p->prompt_of), free(p->score_chosen), free(p->score_rejected);
    memset(p, 0, sizeof *p);
}

static int same_tokens(const GenOutput *a, const GenOutput *b) {
    return a->n_tokens == b->n_tokens && memcmp(a->tokens, b->tokens, a->n_tokens * sizeof(int32_t)) == 0;
}

int dpo_online_pairs(const DpoOnline *o, Model *policy, const DsSeq *prompts, int n, long index_base,
                     DpoOnlinePairs *out, Metrics *acc) {
    memset(out, 0, sizeof *out);
    int k = o->gen.n_samples, total = n * k, rc = -1;
    if (k < 2) return align_errorf("online DPO needs at least 2 samples per prompt");
    GenConfig gc = o->gen;
    gc.prompt_index_base = index_base;
    if (gc.n_slots < total) gc.n_slots = total < 64 ? total : 64;
    GenPrompt *gp = malloc((size_t)n * sizeof *gp);
    DsSeq *all = malloc((size_t)total * sizeof *all);
    float *score = malloc((size_t)total * sizeof *score);
    out->outs = calloc((size_t)total, sizeof *out->outs);
    out->n_outs = total;
    out->seqs = malloc(2 * (size_t)n * sizeof *out->seqs);
    out->prompt_of = malloc((size_t)n * sizeof(int));
    out->score_chosen = malloc((size_t)n * sizeof(float));
    out->score_rejected = malloc((size_t)n * sizeof(float));
    if (!gp || !all || !score || !out->outs || !out->seqs || !out->prompt_of || !out->score_chosen ||
        !out->score_rejected) {
        align_errorf("out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) gp[i] = (GenPrompt){prompts[i].prompt, prompts[i].n_prompt};
    if (generate_run(policy, &gc, gp, n, out->outs, NULL, NULL)) goto done;
    for (int s = 0; s < total; s++)
        all[s] = (DsSeq){prompts[s / k].prompt, prompts[s / k].n_prompt, out->outs[s].tokens, out->outs[s].n_tokens};
    if (o->rm ? rm_score_seqs(o->rm, all, total, o->rm_max_batch_tokens, score)
              : rm_client_score_seqs(o->client, all, total, score))
        goto done;
    int ended = 0;
    double sum = 0;
    for (int s = 0; s < total; s++) {
        int stop = out->outs[s].finish == GEN_FINISH_STOP;
        ended += stop;
        if (!stop) score[s] -= o->missing_eos_penalty;
        sum += score[s];
    }
    for (int i = 0; i < n; i++) {
        int best = i * k, worst = i * k;
        for (int s = i * k + 1; s < (i + 1) * k; s++) {
            if (score[s] > score[best]) best = s;
            if (score[s] < score[worst]) worst = s;
        }
        if (score[best] == score[worst] || same_tokens(&out->outs[best], &out->outs[worst])) continue;
        int p = out->n_pairs++;
        out->seqs[2 * p] = all[best];
        out->seqs[2 * p + 1] = all[worst];
        out->prompt_of[p] = i;
        out->score_chosen[p] = score[best];
        out->score_rejected[p] = score[worst];
        metrics_add(acc, "objective/scores_margin", score[best] - score[worst], 1);
    }
    metrics_add(acc, "objective/scores", sum / total, total);
    metrics_add(acc, "val/contain_eos_token", (double)ended / total, total);
    metrics_add(acc, "online/pairs", out->n_pairs, 1);
    metrics_add(acc, "online/no_pair", n - out->n_pairs, 1);
    rc = 0;
done:
    free(gp), free(all), free(score);
    if (rc) dpo_online_pairs_free(out);
    return rc;
}
