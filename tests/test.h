/* test.h: the few macros every test program uses.
 *
 * CHECK(cond, fmt, ...) records one check; a failing check prints the
 * message with file and line. CHECK_CLOSE(got, want, rtol, atol, what)
 * compares floats the way numpy.isclose does. test_summary() prints
 * "N passed, N failed" and returns the exit status. */
#ifndef ALIGN_TEST_H
#define ALIGN_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int test_passed_count, test_failed_count;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            test_passed_count++;                                          \
        } else {                                                          \
            test_failed_count++;                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
        }                                                                 \
    } while (0)

#define CHECK_CLOSE(got, want, rtol, atol, what)                                       \
    do {                                                                               \
        double g_ = (got), w_ = (want);                                                \
        CHECK(fabs(g_ - w_) <= (atol) + (rtol) * fabs(w_) && !isnan(g_),             \
              "%s: got %.9g want %.9g", (what), g_, w_);                               \
    } while (0)

static inline int test_summary(void) {
    printf("%d passed, %d failed\n", test_passed_count, test_failed_count);
    return test_failed_count ? 1 : 0;
}

#endif
