#include "kto_loss.h"

#include <math.h>

void kto_loss_defaults(KtoLossConfig *c) {
    c->beta = 0.1f;
    c->desirable_weight = 1.0f;
    c->undesirable_weight = 1.0f;
}

double kto_kl_estimate(const double *kl_logp, const double *ref_kl_logp, int n) {
    if (n <= 0) return 0;
    double s = 0;
    for (int i = 0; i < n; i++) s += kl_logp[i] - ref_kl_logp[i];
    s /= n;
    return s > 0 ? s : 0; /* TRL: .clamp(min=0) */
}

static double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

void kto_batch_loss(const KtoLossConfig *c, int n, const int *desirable, const double *logp,
                    const double *ref_logp, double kl, double *dlogp, KtoBatchResult *out) {
    double beta = c->beta, loss = 0, rc = 0, rr = 0, lc = 0, lr = 0;
    int nc = 0, nr = 0;
    for (int i = 0; i < n; i++) {
        double r = logp[i] - ref_logp[i], l, d;
        if (desirable[i]) {
            /* 1 - s(b(r - z)); d/dr = -b s (1 - s) */
            double s = sigmoid(beta * (r - kl));
            l = c->desirable_weight * (1 - s);
            d = -c->desirable_weight * beta * s * (1 - s);
            rc += beta * r, lc += logp[i], nc++;
        } else {
            /* 1 - s(b(z - r)); d/dr = +b s (1 - s) */
            double s = sigmoid(beta * (kl - r));
            l = c->undesirable_weight * (1 - s);
            d = c->undesirable_weight * beta * s * (1 - s);
            rr += beta * r, lr += logp[i], nr++;
        }
        loss += l;
        if (dlogp) dlogp[i] = d / n;
    }
    out->loss = n > 0 ? loss / n : 0;
    out->kl = kl;
    out->n_chosen = nc, out->n_rejected = nr;
    out->rewards_chosen = nc ? rc / nc : NAN;
    out->logps_chosen = nc ? lc / nc : NAN;
    out->rewards_rejected = nr ? rr / nr : NAN;
    out->logps_rejected = nr ? lr / nr : NAN;
}
