/* Tensors of a safetensors fixture (PyTorch references written by the
 * scripts in tests/fixtures/) as fresh malloc'd arrays, and the largest
 * difference of two arrays, for the tests that compare against them. A
 * tensor the fixture lacks fails the test at once: every later check would
 * read it. Include after test.h. */
#ifndef ALIGN_TEST_FIXTURE_TENSORS_H
#define ALIGN_TEST_FIXTURE_TENSORS_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static inline const StTensor *fixture_tensor(const StFile *fx, const char *name) {
    const StTensor *t = st_find(fx, name);
    if (!t) {
        CHECK(0, "fixture lacks %s", name);
        exit(1);
    }
    return t;
}

static inline float *fixture_f32(const StFile *fx, const char *name, int64_t *numel) {
    const StTensor *t = fixture_tensor(fx, name);
    float *out = malloc(st_numel(t) * sizeof(float));
    st_read_f32(fx, t, out);
    if (numel) *numel = st_numel(t);
    return out;
}

static inline int32_t *fixture_i32(const StFile *fx, const char *name, int64_t *numel) {
    const StTensor *t = fixture_tensor(fx, name);
    int32_t *out = malloc(st_numel(t) * sizeof(int32_t));
    memcpy(out, fx->data + t->begin, st_numel(t) * sizeof(int32_t));
    if (numel) *numel = st_numel(t);
    return out;
}

/* The largest |a[i] - b[i]|, in double. */
static inline double max_abs_diff(const float *a, const float *b, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) w = fmax(w, fabs((double)a[i] - b[i]));
    return w;
}

#endif
