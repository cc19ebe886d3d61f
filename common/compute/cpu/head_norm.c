/* head_norm: see the header. The q and k heads of one token are contiguous
 * in the fused qkv row (q heads, then k heads, then v), so head h of token
 * i starts at i * (Hq + 2*Hkv) * hd + h * hd for h < Hq + Hkv. */
#include "head_norm.h"

#include <math.h>
#include <stddef.h>

void cpu_head_rmsnorm_forward(float *qkv, float *saved, float *rstd, const float *wq, const float *wk, int N, int Hq,
                              int Hkv, int hd, float eps) {
    int H = Hq + Hkv;
    size_t ld = (size_t)(Hq + 2 * Hkv) * hd;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++) {
            float *x = qkv + i * ld + (size_t)h * hd;
            const float *w = h < Hq ? wq : wk;
            float ss = 0.0f;
            for (int c = 0; c < hd; c++) ss += x[c] * x[c];
            float r = 1.0f / sqrtf(ss / hd + eps);
            size_t row = (size_t)i * H + h;
            if (saved)
                for (int c = 0; c < hd; c++) saved[row * hd + c] = x[c];
            if (rstd) rstd[row] = r;
            for (int c = 0; c < hd; c++) x[c] = x[c] * r * w[c];
        }
}

/* As rmsnorm_backward: dx = r * g - x * r^3 * mean(g * x), g = dy * w;
 * dw += dy * x * r, summed over tokens in order per column (deterministic). */
void cpu_head_rmsnorm_backward(float *dqkv, float *dwq, float *dwk, const float *saved, const float *rstd,
                               const float *wq, const float *wk, int N, int Hq, int Hkv, int hd) {
    int H = Hq + Hkv;
    size_t ld = (size_t)(Hq + 2 * Hkv) * hd;
    /* weight gradients first: they need dy, which the loop below overwrites */
    for (int part = 0; part < 2; part++) {
        float *dw = part ? dwk : dwq;
        int h0 = part ? Hq : 0, h1 = part ? H : Hq;
        if (!dw) continue;
#pragma omp parallel for schedule(static)
        for (int c = 0; c < hd; c++) {
            float acc = 0.0f;
            for (int i = 0; i < N; i++)
                for (int h = h0; h < h1; h++) {
                    size_t row = (size_t)i * H + h;
                    acc += dqkv[i * ld + (size_t)h * hd + c] * saved[row * hd + c] * rstd[row];
                }
            dw[c] += acc;
        }
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++) {
            float *d = dqkv + i * ld + (size_t)h * hd;
            size_t row = (size_t)i * H + h;
            const float *x = saved + row * hd, *w = h < Hq ? wq : wk;
            float r = rstd[row], gx = 0.0f;
            for (int c = 0; c < hd; c++) gx += d[c] * w[c] * x[c];
            float k = r * r * r * gx / hd;
            for (int c = 0; c < hd; c++) d[c] = r * d[c] * w[c] - x[c] * k;
        }
}
