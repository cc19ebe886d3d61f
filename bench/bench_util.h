/* bench_util.h: what several benchmarks measure the same way (header only:
 * each .c in bench/ is a program of its own). */
#ifndef ALIGN_BENCH_UTIL_H
#define ALIGN_BENCH_UTIL_H

#include <cblas.h>
#include <stdlib.h>

#include "util.h"

/* This machine's sgemm rate in FLOP/s: a large product, best of 5 runs. The
 * yardstick for "fraction of sgemm" figures. */
static inline double bench_sgemm_peak(void) {
    int M = 1024, N = 2048, K = 2048;
    float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N), *c = malloc(sizeof(float) * M * N);
    if (!a || !b || !c) return 0;
    for (long i = 0; i < (long)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (long i = 0; i < (long)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t = align_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        t = align_now() - t;
        if (2.0 * M * N * K / t > best) best = 2.0 * M * N * K / t;
    }
    free(a), free(b), free(c);
    return best;
}

#endif
