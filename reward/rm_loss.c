/* rm_loss: Bradley-Terry loss with margin and centering (see rm_loss.h). */
#include "rm_loss.h"

#include <math.h>
#include <stddef.h>

/* -logsigmoid(z) = log(1 + exp(-z)), without overflow for either sign. */
static double neg_logsigmoid(double z) { return z >= 0 ? log1p(exp(-z)) : -z + log1p(exp(z)); }

static double sigmoid(double z) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

void rm_pair_loss(const RmLossConfig *cfg, double sc, double sr, double margin, RmPairResult *r) {
    double z = sc - sr - margin;
    double centre = sc + sr;
    r->loss = neg_logsigmoid(z) + cfg->center * centre * centre;
    double g = -sigmoid(-z); /* d/dz of -logsigmoid(z) */
    r->dchosen = g + 2.0 * cfg->center * centre;
    r->drejected = -g + 2.0 * cfg->center * centre;
    r->correct = sc > sr;
}

double rm_batch_loss(const RmLossConfig *cfg, const float *sc, const float *sr, const float *margins,
                     int n, double *dsc, double *dsr, Metrics *acc) {
    if (n <= 0) return 0;
    double loss = 0, correct = 0, margin = 0, mc = 0, mr = 0;
    for (int i = 0; i < n; i++) {
        RmPairResult r;
        rm_pair_loss(cfg, sc[i], sr[i], margins ? margins[i] : 0.0, &r);
        loss += r.loss;
        correct += r.correct;
        margin += (double)sc[i] - sr[i];
        mc += sc[i];
        mr += sr[i];
        if (dsc) dsc[i] = r.dchosen / n;
        if (dsr) dsr[i] = r.drejected / n;
    }
    if (acc) {
        metrics_add(acc, "loss", loss / n, n);
        metrics_add(acc, "accuracy", correct / n, n);
        metrics_add(acc, "margin", margin / n, n);
        metrics_add(acc, "rewards/chosen", mc / n, n);
        metrics_add(acc, "rewards/rejected", mr / n, n);
    }
    return loss / n;
}
