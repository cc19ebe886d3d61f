/* test_harness: tests/test.h itself, since every other test's verdict rests
 * on it. Each case runs in a child process (they end with exit()):
 *   - a program that ran no check fails (exit 1), however it got there;
 *   - checks that all passed exit 0, one failed check exits 1;
 *   - test_skip exits 77 (ctest's SKIP_RETURN_CODE) and says why;
 *   - test_need_file on a missing file skips, but fails when CI=true, and
 *     returns when the file is there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* Status of fn run in a child with CI set to ci (NULL: unset), or -1. */
static int child_status(void (*fn)(void), const char *ci) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (ci) setenv("CI", ci, 1);
        else unsetenv("CI");
        /* the child's own counts start from zero */
        test_passed_count = test_failed_count = 0;
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(99);
        fn();
        _exit(98); /* fn must end the process itself */
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

static void no_checks(void) { exit(test_summary()); }
static void all_pass(void) {
    CHECK(1, "passes");
    exit(test_summary());
}
static void one_fails(void) {
    CHECK(1, "passes");
    CHECK(0, "fails");
    exit(test_summary());
}
static void skips(void) { test_skip("nothing to run here"); }
static void needs_missing(void) { test_need_file("/nonexistent/align/model.gguf", "a hint"); }
static void needs_present(void) {
    test_need_file(ALIGN_TEST_DIR "/test.h", "a hint");
    CHECK(1, "ran after the file was found");
    exit(test_summary());
}

int main(void) {
    int st;
    CHECK((st = child_status(no_checks, NULL)) == 1, "a program with no check fails (status %d)", st);
    CHECK((st = child_status(all_pass, NULL)) == 0, "passing checks exit 0 (status %d)", st);
    CHECK((st = child_status(one_fails, NULL)) == 1, "a failed check exits 1 (status %d)", st);
    CHECK((st = child_status(skips, NULL)) == TEST_SKIP_STATUS && TEST_SKIP_STATUS == 77,
          "test_skip exits 77 (status %d)", st);
    CHECK((st = child_status(needs_missing, NULL)) == 77, "a missing file skips (status %d)", st);
    CHECK((st = child_status(needs_missing, "false")) == 77, "CI=false: a missing file skips (status %d)", st);
    CHECK((st = child_status(needs_missing, "true")) == 1, "CI=true: a missing file fails (status %d)", st);
    CHECK((st = child_status(needs_present, "true")) == 0, "a present file runs the test (status %d)", st);
    return test_summary();
}
