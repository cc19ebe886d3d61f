/* vexp (common/base/vexp.h) against double-precision exp: within 2 ulp of the
 * correctly rounded result over [-87.3, 88.3] on a dense sweep and random
 * points, 0 below, +inf above, NaN kept; the vectorized loop (as the
 * softmax kernels run it) gives the same values as one-at-a-time calls. */
#include <math.h>
#include <stdlib.h>

#include "rng.h"
#include "test.h"
#include "vexp.h"

static double ulp_error(float got, double want) {
    float w = (float)want;
    double ulp = nextafterf(fabsf(w), INFINITY) - fabsf(w);
    return fabs(got - want) / ulp;
}

static void vexp_array(float *out, const float *x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) out[i] = vexp(x[i]);
}

int main(void) {
    enum { N = 2000001 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < N; i++)
        x[i] = i % 2 ? -87.3f + 176.0f * (float)i / N : (float)(rng_uniform(&r) * 176.0 - 87.3);
    vexp_array(y, x, N);
    double worst = 0, at = 0;
    int same = 1;
    for (int i = 0; i < N; i++) {
        if (x[i] < -87.33f || x[i] > 88.37f) continue;
        double e = ulp_error(y[i], exp((double)x[i]));
        if (e > worst) worst = e, at = x[i];
        same &= y[i] == vexp(x[i]);
    }
    printf("vexp: worst %.2f ulp at x = %.7g\n", worst, at);
    CHECK(worst <= 2.0, "vexp is %.2f ulp off at x = %.7g", worst, at);
    CHECK(same, "the vectorized loop and scalar calls agree");
    CHECK(vexp(0.0f) == 1.0f, "exp(0) = 1");
    CHECK(vexp(-INFINITY) == 0.0f && vexp(-100.0f) == 0.0f, "0 below the range");
    CHECK(isinf(vexp(INFINITY)) && isinf(vexp(100.0f)), "+inf above the range");
    CHECK(isnan(vexp(NAN)), "NaN stays NaN");
    CHECK(fabs(vexp(1.0f) - 2.718281828) < 3e-7, "exp(1)");
    /* the vector path on the inputs the clamp exists for */
    float sx[6] = {NAN, -NAN, INFINITY, -INFINITY, 3.4e38f, -3.4e38f}, sy[6];
    vexp_array(sy, sx, 6);
    CHECK(isnan(sy[0]) && isnan(sy[1]) && isinf(sy[2]) && sy[3] == 0.0f && isinf(sy[4]) && sy[5] == 0.0f,
          "vectorized: NaN %g %g, inf %g, -inf %g, huge %g, -huge %g", sy[0], sy[1], sy[2], sy[3], sy[4], sy[5]);
    free(x), free(y);
    return test_summary();
}
