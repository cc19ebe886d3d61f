/* ia3.c: IA3's learned scaling vectors (see lora.h), as peft's IA3 Linear
 * computes them:
 *   output scaling (k, v; GPT-2's c_attn):  y = (x W^T + b) * l   (the bias
 *                                           is scaled too, as peft scales
 *                                           base_layer(x))
 *   input scaling (down; GPT-2's mlp.c_proj, peft's feedforward_modules):
 *                                           y = (x * l) W^T + b
 * The base product is already in y when the hook runs, so the forward adds
 * the difference: (l - 1) * y for the output, ((l - 1) * x) W^T for the
 * input. Backward: the base's dx = dy W is already there;
 *   output: dl_o += sum_n dy_no y0_no (y0 the unscaled output, saved),
 *           dx += ((l - 1) dy) W;
 *   input:  dx holds d(x * l) = dy W alone (the down projection has no
 *           other adapter), so dl_j += sum_n x_nj dx_nj, then dx_nj *= l_j.
 * CPU backend only: host loops over backend memory. */
#include <stdlib.h>

#include "lora_impl.h"
#include "util.h"

static float *param(Model *m, int i) { return m->params + m->info[i].offset; }

void ia3_forward(Model *m, ModelLora *L, int idx, const float *x, float *y, int ldy, int N, int save) {
    const LoraAdapter *ad = &L->ad[idx];
    const float *l = param(m, ad->pm);
    int OC = ad->OC, C = ad->C;
    float *yc = y + ad->col0;
    if (!ad->ff) {
        float *y0 = save ? L->zs + L->zoff[idx] * L->cap : NULL;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                float *v = &yc[(size_t)n * ldy + o];
                if (y0) y0[(size_t)n * OC + o] = *v;
                *v *= l[o];
            }
        return;
    }
    float *xs = L->sx, *dy = L->sy;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) xs[(size_t)n * C + c] = x[(size_t)n * C + c] * (l[c] - 1.0f);
    const float *w;
    const void *wq;
    int qt;
    lora_base_weight(m, ad, &w, &wq, &qt);
    model_linear_forward(m, dy, xs, w, wq, qt, NULL, N, C, OC); /* ((l - 1) x) W^T */
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) yc[(size_t)n * ldy + o] += dy[(size_t)n * OC + o];
}

void ia3_backward(Model *m, ModelLora *L, int idx, const float *x, const float *dy, int ldy, float *dx, int N) {
    const LoraAdapter *ad = &L->ad[idx];
    const ParamInfo *p = &m->info[ad->pm];
    const float *l = param(m, ad->pm);
    float *gl = p->grad_offset >= 0 && m->grads ? m->grads + p->grad_offset : NULL;
    int OC = ad->OC, C = ad->C;
    if (ad->ff) {
        if (!dx) return;
        for (int c = 0; c < C; c++) {
            double acc = 0;
            for (int n = 0; n < N; n++) {
                float *d = &dx[(size_t)n * C + c];
                acc += (double)x[(size_t)n * C + c] * *d;
                *d *= l[c];
            }
            if (gl) gl[c] += (float)acc;
        }
        return;
    }
    const float *dyk = dy + ad->col0, *y0 = L->zs + L->zoff[idx] * L->cap;
    if (gl)
        for (int o = 0; o < OC; o++) {
            double acc = 0;
            for (int n = 0; n < N; n++) acc += (double)dyk[(size_t)n * ldy + o] * y0[(size_t)n * OC + o];
            gl[o] += (float)acc;
        }
    if (!dx) return;
    float *t = L->sy;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) t[(size_t)n * OC + o] = (l[o] - 1.0f) * dyk[(size_t)n * ldy + o];
    const float *w;
    const void *wq;
    int qt;
    lora_base_weight(m, ad, &w, &wq, &qt);
    model_linear_backward_input(m, dx, t, w, wq, qt, N, C, OC, 1); /* dx += ((l - 1) dy) W */
}

int ia3_merge_into(Model *m, ModelLora *L, int idx, float *W, float *bias) {
    const LoraAdapter *ad = &L->ad[idx];
    const float *l = param(m, ad->pm);
    for (int o = 0; o < ad->OC; o++)
        for (int c = 0; c < ad->C; c++) W[(size_t)o * ad->C + c] *= ad->ff ? l[c] : l[o];
    if (!ad->ff && bias)
        for (int o = 0; o < ad->OC; o++) bias[o] *= l[o];
    return 0;
}
