#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_buf[ALIGN_ERR_LEN];

int align_errorf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

int align_error_prefix(const char *fmt, ...) {
    char prefix[256], old[ALIGN_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    snprintf(err_buf, sizeof err_buf, "%s: %.*s", prefix, (int)(sizeof err_buf - sizeof prefix - 3), old);
    return -1;
}

const char *align_error(void) { return err_buf[0] ? err_buf : "unknown error"; }
void align_error_clear(void) { err_buf[0] = 0; }

void *align_alloc(size_t bytes) {
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&p, 64, rounded) != 0) {
        align_errorf("out of memory allocating %.1f MiB", bytes / 1048576.0);
        return NULL;
    }
    return p;
}

void *align_calloc(size_t bytes) {
    void *p = align_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void align_free(void *p) { free(p); }

void align_die(const char *prog, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void align_die_error(const char *prog) { align_die(prog, "%s", align_error()); }

double align_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

char *align_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        align_errorf("cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0) goto fail;
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) goto fail;
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        align_errorf("out of memory reading %s", path);
        return NULL;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        goto fail;
    }
    buf[n] = 0;
    fclose(f);
    if (size) *size = (size_t)n;
    return buf;
fail:
    fclose(f);
    align_errorf("cannot read %s: %s", path, strerror(errno));
    return NULL;
}

int align_write_file_atomic(const char *path, const void *data, size_t n) {
    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    if (!tmp) return align_errorf("out of memory");
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        align_errorf("cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    const char *p = data;
    size_t off = 0;
    int e = 0;
    while (off < n && !e) {
        ssize_t k = write(fd, p + off, n - off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) e = errno;
        else off += (size_t)k;
    }
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) unlink(tmp);
    free(tmp);
    return e ? align_errorf("cannot write %s: %s", path, strerror(e)) : 0;
}
