/* attention_reference.h: packed causal attention from its definition, in
 * double, for the tests of the CPU attention ops (test_attention_memory,
 * test_sliding_window). Layouts as Backend.attention_forward: qkv [N, (Hq +
 * 2 Hkv) hd], out [N, Hq hd], lse [Hq, N]. Query i of sequence s sits at
 * position Lp + i (Lp: the length of its prefix sequence seq_prefix[s], if
 * any) and sees the keys at positions j <= Lp + i, and with window > 0 only
 * those with j > Lp + i - window. out/lse may be NULL (gradient only needs
 * them internally); dqkv (with dout) is the gradient wrt qkv, or NULL. */
#ifndef ALIGN_TEST_ATTENTION_REFERENCE_H
#define ALIGN_TEST_ATTENTION_REFERENCE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void reference_attention(float *out, float *lse, float *dqkv, const float *dout, const float *qkv,
                                const int32_t *seq_start, const int32_t *seq_prefix, int n_seqs, int N, int Hq,
                                int Hkv, int hd, int window) {
    int ld = (Hq + 2 * Hkv) * hd, ldo = Hq * hd, group = Hq / Hkv;
    double scale = 1.0 / sqrt((double)hd);
    int *rows = malloc(sizeof(int) * (size_t)N);
    double *p = malloc(sizeof(double) * (size_t)N), *o = malloc(sizeof(double) * hd);
    if (dqkv) memset(dqkv, 0, sizeof(float) * (size_t)N * ld);
    for (int s = 0; s < n_seqs; s++) {
        int pre = seq_prefix && seq_prefix[s] >= 0 ? seq_prefix[s] : -1;
        int Lp = pre >= 0 ? seq_start[pre + 1] - seq_start[pre] : 0;
        for (int h = 0; h < Hq; h++) {
            int g = h / group;
            for (int i = 0; i < seq_start[s + 1] - seq_start[s]; i++) {
                int t = seq_start[s] + i, qpos = Lp + i, n = 0;
                for (int kpos = 0; kpos <= qpos; kpos++) {
                    if (window > 0 && kpos <= qpos - window) continue;
                    rows[n++] = kpos < Lp ? seq_start[pre] + kpos : seq_start[s] + kpos - Lp;
                }
                const float *q = qkv + (size_t)t * ld + h * hd;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j < n; j++) {
                    const float *k = qkv + (size_t)rows[j] * ld + (Hq + g) * hd;
                    double d = 0.0;
                    for (int c = 0; c < hd; c++) d += (double)q[c] * k[c];
                    p[j] = d * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j < n; j++) sum += p[j] = exp(p[j] - mx);
                for (int c = 0; c < hd; c++) o[c] = 0.0;
                for (int j = 0; j < n; j++) {
                    p[j] /= sum;
                    const float *v = qkv + (size_t)rows[j] * ld + (Hq + Hkv + g) * hd;
                    for (int c = 0; c < hd; c++) o[c] += p[j] * v[c];
                }
                if (out) {
                    for (int c = 0; c < hd; c++) out[(size_t)t * ldo + h * hd + c] = (float)o[c];
                    lse[(size_t)h * N + t] = (float)(mx + log(sum));
                }
                if (!dqkv) continue;
                const float *dO = dout + (size_t)t * ldo + h * hd;
                double D = 0.0;
                for (int c = 0; c < hd; c++) D += dO[c] * o[c];
                for (int j = 0; j < n; j++) {
                    const float *k = qkv + (size_t)rows[j] * ld + (Hq + g) * hd;
                    const float *v = qkv + (size_t)rows[j] * ld + (Hq + Hkv + g) * hd;
                    float *dq = dqkv + (size_t)t * ld + h * hd;
                    float *dk = dqkv + (size_t)rows[j] * ld + (Hq + g) * hd;
                    float *dv = dqkv + (size_t)rows[j] * ld + (Hq + Hkv + g) * hd;
                    double dp = 0.0;
                    for (int c = 0; c < hd; c++) dp += (double)dO[c] * v[c];
                    double ds = p[j] * (dp - D) * scale;
                    for (int c = 0; c < hd; c++) {
                        dv[c] += (float)(p[j] * dO[c]);
                        dq[c] += (float)(ds * k[c]);
                        dk[c] += (float)(ds * q[c]);
                    }
                }
            }
        }
    }
    free(rows), free(p), free(o);
}

/* The largest |got - want| (NaN counts as infinitely large), relative to the
 * largest |want|. */
static double reference_rel_err(const float *got, const float *want, size_t n) {
    double e = 0.0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        e = d > e || isnan(d) ? d : e;
        m = fabs(want[i]) > m ? fabs(want[i]) : m;
    }
    return e / m;
}

#endif
