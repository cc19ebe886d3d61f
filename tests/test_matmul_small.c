/* test_matmul_small: the few-row matmul kernel (matmul_small.c) and the CPU
 * backend's matmul_forward, which routes N <= MSMALL_MAX_ROWS to it.
 *
 *   against a double-precision reference, N = 1..40 and odd C and OC (column
 *     tails past C & ~7, weight-row tails past OC & ~3, thread slices of
 *     unequal length), with and without bias: every element within the
 *     forward error bound of a length-C fp32 sum, (C + 1) * 2^-24 * (sum
 *     |w x| + |bias|), which holds for any summation order
 *   the backend's matmul_forward the same way on both sides of the switch
 *     (N = 1, 2, 16, 31, 32, 33, 64) and on the decode shapes of SmolLM2-135M
 *   a row's result is bit-identical whatever N, whatever the thread count
 *     and when called from inside an OpenMP parallel region (fixed
 *     summation order: batched decoding = batch-1 decoding exactly) */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "matmul_small.h"
#include "rng.h"
#include "test.h"

static Rng rng;

static float *rand_vec(size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_normal(&rng));
    return x;
}

typedef void (*MatmulFn)(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);

/* Largest |got - ref| / bound over out[N,OC]; <= 1 passes. */
static double worst_vs_double(const float *out, const float *inp, const float *w, const float *bias, int N, int C,
                              int OC) {
    double worst = 0;
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0, a = bias ? fabs(bias[o]) : 0;
            for (int k = 0; k < C; k++) {
                double p = (double)w[(size_t)o * C + k] * inp[(size_t)i * C + k];
                s += p, a += fabs(p);
            }
            double bound = (C + 1) * ldexp(1.0, -24) * a + 1e-30;
            double e = fabs(out[(size_t)i * OC + o] - s) / bound;
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    return worst;
}

static void check_shape(MatmulFn fn, const char *name, int N, int C, int OC, int with_bias) {
    float *inp = rand_vec((size_t)N * C), *w = rand_vec((size_t)OC * C), *bias = with_bias ? rand_vec(OC) : NULL;
    float *out = malloc((size_t)N * OC * sizeof(float));
    for (size_t i = 0; i < (size_t)N * OC; i++) out[i] = NAN; /* every element must be written */
    fn(out, inp, w, bias, N, C, OC);
    double e = worst_vs_double(out, inp, w, bias, N, C, OC);
    CHECK(e <= 1.0, "%s N=%d C=%d OC=%d bias=%d: error %.3g of the fp32 bound", name, N, C, OC, with_bias, e);
    free(inp), free(w), free(bias), free(out);
}

static void test_against_double(void) {
    static const int Cs[] = {1, 7, 8, 13, 64, 576, 1001};
    static const int OCs[] = {1, 3, 4, 5, 9, 130, 577};
    int n = 0;
    for (int N = 1; N <= 40; N++)
        for (int c = 0; c < 7; c++)
            for (int oc = 0; oc < 7; oc++) {
                /* all N at small sizes, a spread of N at large ones */
                if ((Cs[c] >= 576 || OCs[oc] >= 577) && N % 7 != 1 && N != 16 && N != 40) continue;
                check_shape(msmall_forward, "msmall_forward", N, Cs[c], OCs[oc], (N + c + oc) % 2);
                n++;
            }
    printf("msmall_forward vs double: %d shapes\n", n);
}

static void test_backend(void) {
    static const int Ns[] = {1, 2, 16, 31, 32, 33, 64};
    for (int k = 0; k < 7; k++) {
        check_shape(backend_cpu.matmul_forward, "backend matmul_forward", Ns[k], 96, 67, 1);
        check_shape(backend_cpu.matmul_forward, "backend matmul_forward", Ns[k], 45, 130, 0);
    }
    /* SmolLM2-135M's decode shapes (C, OC): qkv, o_proj, gate_up, down */
    static const int shapes[4][2] = {{576, 960}, {576, 576}, {576, 3072}, {1536, 576}};
    for (int s = 0; s < 4; s++) {
        check_shape(backend_cpu.matmul_forward, "backend matmul_forward (SmolLM2)", 1, shapes[s][0], shapes[s][1], 0);
        check_shape(backend_cpu.matmul_forward, "backend matmul_forward (SmolLM2)", 16, shapes[s][0], shapes[s][1], 1);
    }
}

/* Row i of an N-row call == the same row alone, and 1 thread == 2 threads ==
 * a call from inside a parallel region, bit for bit. C = 1001: columns in
 * several chunks plus a tail; N = 37 takes the path above MSMALL_MAX_ROWS. */
static void test_bit_identity(int N) {
    enum { C = 1001, OC = 99 };
    float *inp = rand_vec((size_t)N * C), *w = rand_vec((size_t)OC * C), *bias = rand_vec(OC);
    float *all = malloc(sizeof(float) * N * OC), *one = malloc(sizeof(float) * OC);
    float *t1 = malloc(sizeof(float) * N * OC), *nested = malloc(sizeof(float) * N * OC);
    msmall_forward(all, inp, w, bias, N, C, OC);
    int same = 1;
    for (int i = 0; i < N; i++) {
        msmall_forward(one, inp + (size_t)i * C, w, bias, 1, C, OC);
        if (memcmp(one, all + (size_t)i * OC, sizeof(float) * OC)) same = 0;
    }
    CHECK(same, "each row of a %d-row call equals that row alone", N);
    int nth = omp_get_max_threads();
    omp_set_num_threads(1);
    msmall_forward(t1, inp, w, bias, N, C, OC);
    omp_set_num_threads(nth);
    CHECK(!memcmp(t1, all, sizeof(float) * N * OC), "N=%d: 1 thread equals %d threads", N, nth);
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        msmall_forward(nested, inp, w, bias, N, C, OC);
    }
    CHECK(!memcmp(nested, all, sizeof(float) * N * OC), "N=%d: a call inside a parallel region equals one outside", N);
    free(inp), free(w), free(bias), free(all), free(one), free(t1), free(nested);
}

int main(void) {
    rng_seed(&rng, 42);
    test_against_double();
    test_backend();
    static const int Ns[] = {2, 4, 16, 32, 37};
    for (int k = 0; k < 5; k++) test_bit_identity(Ns[k]);
    return test_summary();
}
