/* mquant_vs_ggml: one weight row type at a time, align's mquant_forward at
 * one input row (batch-1 decoding's matmul) against llama.cpp's own CPU
 * dot product for that type (ggml_get_type_traits_cpu(type)->vec_dot, the
 * input quantised by its from_float once, as ggml's mul_mat does), on the
 * same random blocks, 1 thread. Not built by CMake: it needs ggml's headers
 * and libraries, e.g. those of llama-cpp-python (bench/README.md):
 *
 *   L=<venv>/lib/python3.11/site-packages; B=build/common
 *   gcc -O2 -march=native -fopenmp -I$L/include -Icommon/compute/cpu -Icommon/compute \
 *     -Icommon/base bench/ggml/mquant_vs_ggml.c $B/libalign_compute.a $B/libalign_base.a \
 *     -L$L/llama_cpp/lib -Wl,-rpath,$L/llama_cpp/lib -lggml-cpu -lggml-base -lggml -lm \
 *     -o build/mquant_vs_ggml
 *   OMP_NUM_THREADS=1 build/mquant_vs_ggml [MB of weights, default 1: in L2] [reps, default 300]
 *
 * Prints per type and row length: best-of-reps milliseconds and GB/s of
 * weights for both, their ratio (>1: align faster) and the largest output
 * difference (the two quantise the input differently for the K-quants:
 * ggml's Q8_K has one scale per 256 inputs). Process CPU time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

#include "ggml-cpu.h"
#include "ggml.h"
#include "matmul_quant.h"
#include "quant.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* random bytes, each block's fp16 scales (and mins) set to small values */
static void fill(int T, uint8_t *w, size_t bytes) {
    size_t bb = quant_block_bytes((QuantType)T);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rand();
    for (size_t k = 0; k < bytes / bb; k++) {
        uint8_t *b = w + k * bb;
        uint16_t h = quant_f32_to_f16(0.01f * (1 + rand() % 100) / 100.f);
        memcpy(b + (T == QUANT_Q6_K ? 208 : 0), &h, 2);
        if (T == QUANT_Q4_K || T == QUANT_Q5_K || T == QUANT_Q4_1 || T == QUANT_Q5_1) memcpy(b + 2, &h, 2);
    }
}

int main(int argc, char **argv) {
    ggml_cpu_init();
    const int types[] = {QUANT_Q5_0, QUANT_Q8_0, QUANT_Q4_0, QUANT_Q4_1, QUANT_Q6_K, QUANT_Q4_K, QUANT_Q5_K};
    const int Cs[] = {576, 1536};
    size_t total = (argc > 1 ? (size_t)atol(argv[1]) : 1) << 20;
    int reps = argc > 2 ? atoi(argv[2]) : 300;
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (int ci = 0; ci < 2; ci++) {
            int T = types[ti], C = Cs[ci];
            if (C % quant_block_elems((QuantType)T)) continue;
            size_t rb = quant_row_bytes((QuantType)T, C);
            int OC = (int)(total / rb);
            uint8_t *w = aligned_alloc(64, (rb * OC + 63) / 64 * 64);
            float *x = malloc(C * 4), *o = malloc(OC * 4), *o2 = malloc(OC * 4);
            void *xq = malloc(C * 4);
            fill(T, w, rb * OC);
            for (int i = 0; i < C; i++) x[i] = (rand() % 2001 - 1000) / 1000.f;
            const struct ggml_type_traits_cpu *tr = ggml_get_type_traits_cpu((enum ggml_type)T);
            double best = 1e9, bestg = 1e9;
            for (int r = 0; r < reps; r++) {
                double t0 = now();
                mquant_forward(o, x, w, T, NULL, 1, C, OC);
                double t1 = now();
                if (t1 - t0 < best) best = t1 - t0;
                t0 = now();
                ggml_get_type_traits_cpu(tr->vec_dot_type)->from_float(x, xq, C);
                for (int r2 = 0; r2 < OC; r2++) tr->vec_dot(C, o2 + r2, 0, w + (size_t)r2 * rb, 0, xq, 0, 1);
                t1 = now();
                if (t1 - t0 < bestg) bestg = t1 - t0;
            }
            double md = 0;
            for (int i = 0; i < OC; i++) md = fabs(o[i] - o2[i]) > md ? fabs(o[i] - o2[i]) : md;
            printf("%-5s C=%4d rows=%6d %6.1f MB  align %8.4f ms (%5.1f GB/s)  ggml %8.4f ms (%5.1f GB/s)  "
                   "ggml/align %.2f  max diff %.2g\n",
                   quant_name((QuantType)T), C, OC, rb * OC / 1e6, best * 1e3, rb * OC / best / 1e9, bestg * 1e3,
                   rb * OC / bestg / 1e9, bestg / best, md);
            free(w), free(x), free(o), free(o2), free(xq);
        }
    return 0;
}
