/* vexp: expf in a form the compiler vectorizes.
 *
 * Softmax over attention scores and over the vocabulary, and SwiGLU's
 * sigmoid, call exp hundreds of millions of times per training step; glibc's
 * expf is scalar (its vector variants are only declared under -ffast-math,
 * which would also break the -INFINITY masks used here). This is the Cephes
 * single-precision exp: x = n ln2 + r with |r| <= ln2/2, exp(r) by a
 * degree-6 polynomial, 2^n put into the exponent bits. Plain float and
 * int32 arithmetic and selects, so in a `#pragma omp simd` loop GCC emits
 * 8-wide AVX2 code (with -fno-trapping-math, set in CMakeLists.txt; without
 * it the same code runs scalar). Within 2 ulp of the correctly rounded exp
 * on [-87.3, 88.3] (tests/test_vexp.c); 0 below, +inf above (a little
 * early: 88.38, not 88.72, which keeps 2^n a normal float), NaN stays NaN. */
#ifndef ALIGN_VEXP_H
#define ALIGN_VEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float vexp(float x) {
    const float hi = 88.3762626f, lo = -87.3365478f; /* n stays in [-126, 127] */
    /* NaN fails both comparisons and leaves as hi, so n is always a small
     * integer and the int conversion below is defined for every input */
    float c = x < hi ? x : hi;
    c = c > lo ? c : lo;
    /* n = round(c / ln2) via the 1.5 * 2^23 trick: exact for |n| < 2^22 */
    float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - n * 0.693359375f - n * -2.12194440e-4f; /* ln2 split in two: exact n * ln2_hi */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    y = x < lo ? 0.0f : y;
    return x <= hi ? y : x + INFINITY; /* +inf above the range, NaN stays NaN */
}

#endif
