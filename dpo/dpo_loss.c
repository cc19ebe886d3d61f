#include "dpo_loss.h"

#include <math.h>
#include <string.h>

#include "util.h"

static const char *NAMES[DPO_LOSS_COUNT] = {"sigmoid", "robust", "hinge", "ipo", "simpo", "orpo"};

void dpo_loss_defaults(DpoLossConfig *c) {
    memset(c, 0, sizeof *c);
    c->type = DPO_SIGMOID;
    c->beta = 0.1f;
    c->simpo_gamma = 0.5f;
}

int dpo_loss_parse(const char *name, DpoLossType *out) {
    for (int i = 0; i < DPO_LOSS_COUNT; i++)
        if (!strcmp(name, NAMES[i])) {
            *out = (DpoLossType)i;
            return 0;
        }
    return align_errorf("--loss %s: expected sigmoid, robust, hinge, ipo, simpo or orpo", name);
}

int dpo_loss_reference_free(DpoLossType t) { return t == DPO_SIMPO || t == DPO_ORPO; }

/* log(sigmoid(x)) without overflow, and its derivative sigmoid(-x). */
static double logsigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

void dpo_pair_loss(const DpoLossConfig *c, const DpoPair *p, DpoPairResult *out) {
    double b = c->beta, ls = c->label_smoothing;
    double nc = p->nc > 0 ? p->nc : 1, nr = p->nr > 0 ? p->nr : 1;
    double loss = 0, dz = 0; /* dz: d loss / d z for the loss's argument z */
    double dpc = 0, dpr = 0; /* d loss / d (summed) pc, pr */
    memset(out, 0, sizeof *out);
    switch (c->type) {
    case DPO_SIGMOID:
    case DPO_ROBUST:
    case DPO_HINGE: {
        double h = (p->pc - p->rc) - (p->pr - p->rr), z = b * h;
        if (c->type == DPO_SIGMOID) {
            loss = -(1 - ls) * logsigmoid(z) - ls * logsigmoid(-z);
            dz = -(1 - ls) * sigmoid(-z) + ls * sigmoid(z);
        } else if (c->type == DPO_ROBUST) {
            loss = (-(1 - ls) * logsigmoid(z) + ls * logsigmoid(-z)) / (1 - 2 * ls);
            dz = (-(1 - ls) * sigmoid(-z) - ls * sigmoid(z)) / (1 - 2 * ls);
        } else {
            loss = 1 - z > 0 ? 1 - z : 0;
            dz = 1 - z > 0 ? -1 : 0;
        }
        dpc = dz * b, dpr = -dz * b;
        out->reward_chosen = b * (p->pc - p->rc);
        out->reward_rejected = b * (p->pr - p->rr);
        break;
    }
    case DPO_IPO: {
        /* token-averaged log-probs for policy and reference alike */
        double h = (p->pc / nc - p->rc / nc) - (p->pr / nr - p->rr / nr);
        double d = h - 1.0 / (2 * b);
        loss = d * d;
        dpc = 2 * d / nc, dpr = -2 * d / nr;
        out->reward_chosen = b * (p->pc - p->rc) / nc;
        out->reward_rejected = b * (p->pr - p->rr) / nr;
        break;
    }
    case DPO_SIMPO: {
        double z = b * (p->pc / nc - p->pr / nr) - c->simpo_gamma;
        loss = -(1 - ls) * logsigmoid(z) - ls * logsigmoid(-z);
        dz = -(1 - ls) * sigmoid(-z) + ls * sigmoid(z);
        dpc = dz * b / nc, dpr = -dz * b / nr;
        out->reward_chosen = b * p->pc / nc;
        out->reward_rejected = b * p->pr / nr;
        break;
    }
    case DPO_ORPO: {
        double mc = p->pc / nc, mr = p->pr / nr;
        /* log_odds(m) = m - log1p(-exp(m)); d/dm = 1 / (1 - exp(m)) */
        double oc = mc - log1p(-exp(mc)), orr = mr - log1p(-exp(mr));
        double z = oc - orr;
        double lam = b;
        loss = -mc - lam * logsigmoid(z);
        dz = -lam * sigmoid(-z);
        dpc = (-1.0 + dz / (1 - exp(mc))) / nc;
        dpr = (-dz / (1 - exp(mr))) / nr;
        out->reward_chosen = b * mc;
        out->reward_rejected = b * mr;
        break;
    }
    default:
        break;
    }
    if (c->rpo_alpha > 0) {
        loss += -c->rpo_alpha * p->pc / nc;
        dpc += -c->rpo_alpha / nc;
    }
    out->loss = loss;
    /* summed log-probs: d/d(token) == d/d(sum) */
    out->dtok_chosen = dpc;
    out->dtok_rejected = dpr;
}
