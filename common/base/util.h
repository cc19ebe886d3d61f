/* util: the library's error convention, checked allocation, timing.
 *
 * Library functions never exit() on bad input. They return a status
 * (0 = ok, -1 = error) or NULL and record one sentence with align_errorf();
 * the program that called them prints align_error() and exits non-zero.
 * The message is thread-local, so workers on different threads don't mix
 * their errors. */
#ifndef ALIGN_UTIL_H
#define ALIGN_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ALIGN_ERR_LEN 1024

/* Record the current error (printf-style). Always returns -1 so a caller can
 * write `return align_errorf("...")`. */
int align_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefix the current error with more context: "ctx: <old message>". */
int align_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *align_error(void);
void align_error_clear(void);

/* Allocation that records an error instead of crashing; NULL on failure.
 * Memory from align_alloc is 64-byte aligned and must be released with
 * align_free. align_calloc zeroes it. */
void *align_alloc(size_t bytes);
void *align_calloc(size_t bytes);
void align_free(void *p);

/* Program-side helpers (never used inside common/ on input errors): print
 * "prog: message" to stderr and exit(1). */
void align_die(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
void align_die_error(const char *prog) __attribute__((noreturn));

/* Monotonic wall-clock seconds. */
double align_now(void);

/* Read a whole file into a NUL-terminated buffer (size excludes the NUL). */
char *align_read_file(const char *path, size_t *size);

/* Write n bytes to path atomically: a temporary file beside it, fsync, then
 * rename, so a reader never sees half a file and a crash leaves the old
 * one. -1 with an error naming the path. */
int align_write_file_atomic(const char *path, const void *data, size_t n);

#endif
