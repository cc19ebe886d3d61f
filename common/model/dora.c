/* dora.c: DoRA's magnitude on top of LoRA (see lora.h), as peft's
 * DoraLinearLayer computes it:
 *
 *   g   = m / ||W + s B A||_row          (one scale per output; the norm is
 *                                         detached: no gradient flows into it,
 *                                         "section 4.3 of the paper")
 *   y   = x W^T + b + (g - 1) u + g (s x~ A^T B^T),   u = x~ W^T
 *
 * where x~ is the dropped-out input while training with dropout (peft then
 * recomputes the base product on x~), else x (and u = y_base - b). The
 * whole model is then W' = g (W + s B A) per row, what the export folds in.
 *
 * The row norm needs W only through ||W_o||^2 (fixed, taken once at attach
 * from the dequantised rows, so a quantised base works) and P = A W^T, one
 * matmul with r rows through the base's own kernel:
 *   ||W_o + s (BA)_o||^2 = ||W_o||^2 + 2 s B_o . P_:o + s^2 B_o (A A^T) B_o^T.
 * Backward (dy the output gradient, z = u + s x~ A^T B^T recomputed: one
 * base matmul rather than N x out floats kept per adapted linear):
 *   dm_o += sum_n dy_no z_no / ||.||_o;  LoRA's gradients with g dy;
 *   dx   += mask(((g - 1) dy) W) + mask(s (g dy) B A)   (the base's dy W is
 *   already there). CPU backend only: host loops over backend memory. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lora_impl.h"
#include "util.h"

static float *param(Model *m, int i) { return m->params + m->info[i].offset; }
static float *grad(Model *m, int i) {
    return i >= 0 && m->info[i].grad_offset >= 0 && m->grads ? m->grads + m->info[i].grad_offset : NULL;
}

int dora_attach(Model *m, ModelLora *L) {
    int total = L->per_layer * m->cfg.n_layers;
    size_t rows = 0, maxw = 0;
    L->goff = malloc(total * sizeof *L->goff);
    if (!L->goff) return align_errorf("out of memory");
    for (int i = 0; i < total; i++) {
        L->goff[i] = rows;
        rows += (size_t)L->ad[i].OC;
        size_t w = (size_t)L->ad[i].OC * L->ad[i].C;
        if (w > maxw) maxw = w;
    }
    L->gscale = malloc(rows * sizeof(float));
    L->gnorm = malloc(rows * sizeof(float));
    L->wnorm2 = malloc(rows * sizeof(double));
    float *W = malloc(maxw * sizeof(float));
    if (!L->gscale || !L->gnorm || !L->wnorm2 || !W) {
        free(W);
        return align_errorf("out of memory attaching DoRA");
    }
    for (int i = 0; i < total; i++) {
        const LoraAdapter *ad = &L->ad[i];
        if (model_param_to_host(m, &m->info[ad->pbase], W)) {
            free(W);
            return -1;
        }
        float *mag = param(m, ad->pm);
        for (int o = 0; o < ad->OC; o++) {
            double s = 0;
            for (int c = 0; c < ad->C; c++) s += (double)W[(size_t)o * ad->C + c] * W[(size_t)o * ad->C + c];
            L->wnorm2[L->goff[i] + o] = s;
            mag[o] = (float)sqrt(s);
        }
    }
    free(W);
    L->gvalid = 0;
    return 0;
}

/* A fingerprint of the adapter tensors, so cached decoding recomputes the
 * scales only after an update. */
static uint64_t adapters_sum(Model *m, const ModelLora *L) {
    const ParamInfo *first = &m->info[L->first_param], *last = &m->info[m->n_params - 1];
    const uint32_t *u = (const uint32_t *)(m->params + first->offset);
    size_t n = last->offset + last->numel - first->offset;
    uint64_t h = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ u[i]) * 0x100000001B3ULL + (h >> 29);
    return h;
}

int dora_update_scale(Model *m, ModelLora *L, int force) {
    uint64_t sum = 0;
    if (!force) {
        sum = adapters_sum(m, L);
        if (L->gvalid && sum == L->gsum) return 0;
    }
    int total = L->per_layer * m->cfg.n_layers, r = L->cfg.rank;
    float s = L->scale;
    float *P = malloc((size_t)r * L->max_oc * sizeof(float));
    double *G = malloc((size_t)r * r * sizeof(double));
    if (!P || !G) {
        free(P), free(G);
        return align_errorf("out of memory for DoRA's norms");
    }
    for (int i = 0; i < total; i++) {
        const LoraAdapter *ad = &L->ad[i];
        const float *A = param(m, ad->pa), *B = param(m, ad->pb), *mag = param(m, ad->pm);
        const float *w;
        const void *wq;
        int qt;
        lora_base_weight(m, ad, &w, &wq, &qt);
        model_linear_forward(m, P, A, w, wq, qt, NULL, r, ad->C, ad->OC); /* P = A W^T [r, OC] */
        for (int a = 0; a < r; a++)
            for (int b = a; b < r; b++) {
                double d = 0;
                for (int c = 0; c < ad->C; c++) d += (double)A[(size_t)a * ad->C + c] * A[(size_t)b * ad->C + c];
                G[a * r + b] = G[b * r + a] = d;
            }
        for (int o = 0; o < ad->OC; o++) {
            const float *Bo = B + (size_t)o * r;
            double cross = 0, bb = 0;
            for (int a = 0; a < r; a++) {
                cross += (double)Bo[a] * P[(size_t)a * ad->OC + o];
                double t = 0;
                for (int b = 0; b < r; b++) t += G[a * r + b] * Bo[b];
                bb += Bo[a] * t;
            }
            double n2 = L->wnorm2[L->goff[i] + o] + 2.0 * s * cross + (double)s * s * bb;
            float norm = (float)sqrt(n2 > 0 ? n2 : 0);
            L->gnorm[L->goff[i] + o] = norm;
            L->gscale[L->goff[i] + o] = norm > 0 ? mag[o] / norm : 0.0f;
        }
    }
    free(P), free(G);
    if (!force) L->gsum = sum;
    L->gvalid = !force;
    return 0;
}

void dora_forward(Model *m, ModelLora *L, int idx, const float *x, const float *xin, float *y, int ldy, int N,
                  int save) {
    const Backend *be = m->be;
    const LoraAdapter *ad = &L->ad[idx];
    int r = L->cfg.rank, OC = ad->OC;
    const float *A = param(m, ad->pa), *B = param(m, ad->pb);
    const float *g = L->gscale + L->goff[idx], *bias = ad->pbias >= 0 ? param(m, ad->pbias) : NULL;
    float *h = save ? L->hs + (size_t)idx * L->cap * r : L->sh;
    float *lr = L->sy, *u = L->sy2, *yc = y + ad->col0;
    (void)x;
    be->gemm(0, 1, N, r, ad->C, L->scale, xin, ad->C, A, ad->C, 0.0f, h, r); /* h = s x~ A^T */
    be->gemm(0, 1, N, OC, r, 1.0f, h, r, B, r, 0.0f, lr, OC);                /* lr = h B^T */
    int dropped = xin != x;
    if (dropped) { /* peft recomputes the base product on the dropped input */
        const float *w;
        const void *wq;
        int qt;
        lora_base_weight(m, ad, &w, &wq, &qt);
        model_linear_forward(m, u, xin, w, wq, qt, NULL, N, ad->C, OC);
    }
    for (int n = 0; n < N; n++) {
        float *yr = yc + (size_t)n * ldy;
        const float *lrr = lr + (size_t)n * OC;
        for (int o = 0; o < OC; o++) {
            float un = dropped ? u[(size_t)n * OC + o] : yr[o] - (bias ? bias[o] : 0.0f);
            yr[o] += (g[o] - 1.0f) * un + g[o] * lrr[o];
        }
    }
}

void dora_backward(Model *m, ModelLora *L, int idx, const float *x, const float *dy, int ldy, float *dx, int N) {
    const Backend *be = m->be;
    const LoraAdapter *ad = &L->ad[idx];
    int r = L->cfg.rank, OC = ad->OC, C = ad->C;
    const float *A = param(m, ad->pa), *B = param(m, ad->pb);
    float *gA = grad(m, ad->pa), *gB = grad(m, ad->pb), *gM = grad(m, ad->pm);
    const float *g = L->gscale + L->goff[idx], *nrm = L->gnorm + L->goff[idx];
    const float *hs = L->hs + (size_t)idx * L->cap * r, *dyk = dy + ad->col0;
    float *gdy = L->sy, *g1dy = L->sy2;
    const float *w;
    const void *wq;
    int qt;
    lora_base_weight(m, ad, &w, &wq, &qt);
    const float *xin = x;
    uint64_t seed = 0;
    if (L->fwd_dropout) { /* the forward's mask, recomputed */
        seed = lora_adapter_seed(L, idx);
        be->dropout(L->sx, x, (size_t)N * C, L->cfg.dropout, seed, 0);
        xin = L->sx;
    }
    if (gM) { /* z = x~ W^T + h B^T recomputed (one matmul, instead of keeping N x OC floats per adapter) */
        float *z = L->sy;
        model_linear_forward(m, z, xin, w, wq, qt, NULL, N, C, OC);
        be->gemm(0, 1, N, OC, r, 1.0f, hs, r, B, r, 1.0f, z, OC);
        for (int o = 0; o < OC; o++) {
            if (!(nrm[o] > 0)) continue;
            double acc = 0;
            for (int n = 0; n < N; n++) acc += (double)dyk[(size_t)n * ldy + o] * z[(size_t)n * OC + o];
            gM[o] += (float)(acc / nrm[o]);
        }
    }
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            float d = dyk[(size_t)n * ldy + o];
            gdy[(size_t)n * OC + o] = g[o] * d;
            g1dy[(size_t)n * OC + o] = (g[o] - 1.0f) * d;
        }
    if (gB) be->gemm(1, 0, OC, r, N, 1.0f, gdy, OC, hs, r, 1.0f, gB, r);   /* dB += (g dy)^T hs */
    be->gemm(0, 0, N, r, OC, L->scale, gdy, OC, B, r, 0.0f, L->sh, r);     /* dh = s (g dy) B */
    if (gA) be->gemm(1, 0, r, C, N, 1.0f, L->sh, r, xin, C, 1.0f, gA, C); /* dA += dh^T x~ */
    if (!dx) return;
    if (L->fwd_dropout) {
        be->gemm(0, 0, N, C, r, 1.0f, L->sh, r, A, C, 0.0f, L->sx, C);             /* dh A */
        model_linear_backward_input(m, L->sx, g1dy, w, wq, qt, N, C, OC, 1);        /* + ((g-1) dy) W */
        be->dropout(dx, L->sx, (size_t)N * C, L->cfg.dropout, seed, 1);             /* dx += mask(...) */
    } else {
        be->gemm(0, 0, N, C, r, 1.0f, L->sh, r, A, C, 1.0f, dx, C);                /* dx += dh A */
        model_linear_backward_input(m, dx, g1dy, w, wq, qt, N, C, OC, 1);           /* dx += ((g-1) dy) W */
    }
}

int dora_merge_into(Model *m, ModelLora *L, int idx, float *W) {
    const LoraAdapter *ad = &L->ad[idx];
    int r = L->cfg.rank;
    const float *A = param(m, ad->pa), *B = param(m, ad->pb), *g = L->gscale + L->goff[idx];
    m->be->gemm(0, 0, ad->OC, ad->C, r, L->scale, B, r, A, ad->C, 1.0f, W, ad->C); /* W += s B A */
    for (int o = 0; o < ad->OC; o++)
        for (int c = 0; c < ad->C; c++) W[(size_t)o * ad->C + c] *= g[o];
    return 0;
}
