/* test.h: the few macros every test program uses.
 *
 * CHECK(cond, fmt, ...) records one check; a failing check prints the
 * message with file and line. CHECK_CLOSE(got, want, rtol, atol, what)
 * compares floats the way numpy.isclose does. test_summary() prints
 * "N passed, N failed" and returns the exit status; a program that ran no
 * check at all fails, since it proved nothing. test_skip(why) ends a
 * program that cannot run here (no GPU, no real model) with status 77, which
 * ctest counts as skipped (SKIP_RETURN_CODE, tests/CMakeLists.txt);
 * test_need_file(path, hint) skips without a file, or fails when the
 * environment variable CI is "true", where every asset must be present. */
#ifndef ALIGN_TEST_H
#define ALIGN_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEST_SKIP_STATUS 77

/* The real model the real-model tests run (scripts/fetch-smollm2.sh). */
#define TEST_SMOLLM2_GGUF ALIGN_TEST_DIR "/../cache/SmolLM2-135M-Instruct.Q4_1.gguf"

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
    if (test_passed_count + test_failed_count == 0) {
        fprintf(stderr, "FAIL: no check ran (a test that cannot run must call test_skip)\n");
        return 1;
    }
    return test_failed_count ? 1 : 0;
}

static inline void test_skip(const char *why) {
    printf("skipped: %s\n", why);
    fflush(stdout);
    exit(TEST_SKIP_STATUS);
}

static inline void test_need_file(const char *path, const char *hint) {
    if (access(path, R_OK) == 0) return;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "FAIL: %s is not present (%s); with CI=true a real-model test may not skip\n", path, hint);
        exit(1);
    }
    char why[1200];
    snprintf(why, sizeof why, "%s is not present (%s)", path, hint);
    test_skip(why);
}

#endif
