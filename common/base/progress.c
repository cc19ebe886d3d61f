#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

void progress_duration(char *buf, size_t size, double s) {
    if (!(s >= 0) || s > 1e9) {
        snprintf(buf, size, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t < 60) snprintf(buf, size, "%lds", t);
    else if (t < 3600) snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

int progress_format(char *buf, size_t size, const char *prog, const char *unit, long done0, long done, long total,
                    double elapsed, const char *extra) {
    int n = 0;
#define PUT(...) (n += snprintf(buf + n, (size_t)n < size ? size - n : 0, __VA_ARGS__))
    if (size) buf[0] = 0;
    if (prog && *prog) PUT("%s: ", prog);
    if (total > 0) PUT("%s %ld/%ld  %3.0f%%", unit, done, total, 100.0 * done / total);
    else PUT("%s %ld", unit, done);
    long ran = done - done0;
    double rate = elapsed > 0 && ran > 0 ? ran / elapsed : 0;
    char t[32];
    if (rate <= 0) PUT("  - %s/s", unit);
    else if (rate >= 1) PUT("  %.3g %s/s", rate, unit);
    else PUT("  %.3g s/%s", 1 / rate, unit);
    if (total > 0) {
        if (done >= total) snprintf(t, sizeof t, "0s");
        else if (rate > 0) progress_duration(t, sizeof t, (total - done) / rate);
        else snprintf(t, sizeof t, "?");
        PUT("  ETA %s", t);
    }
    progress_duration(t, sizeof t, elapsed);
    PUT("  elapsed %s", t);
    if (extra && *extra) PUT("  %s", extra);
#undef PUT
    return n < (int)size ? n : (int)size - 1;
}

void progress_start(Progress *p, const char *prog, const char *unit, long done, long total) {
    memset(p, 0, sizeof *p);
    p->prog = prog;
    p->unit = unit;
    p->total = total;
    p->done0 = p->done = done;
    p->t0 = align_now();
    p->last_print = -1e300;
    p->tty = isatty(STDERR_FILENO);
    p->every_s = 10;
}

static void print_line(Progress *p, double now, const char *extra, int final) {
    char line[768];
    progress_format(line, sizeof line, p->prog, p->unit, p->done0, p->done, p->total, now - p->t0, extra);
    if (p->tty) {
        fprintf(stderr, "\r\033[K%s%s", line, final ? "\n" : "");
        p->open_line = !final;
    } else {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
    p->last_print = now;
    p->printed = 1;
    p->printed_done = p->done;
}

void progress_update(Progress *p, long done, const char *extra) {
    if (!p->unit) return; /* never started */
    p->done = done;
    double now = align_now();
    int due;
    if (p->tty) due = now - p->last_print >= 0.1 || (p->total > 0 && done >= p->total);
    else due = !p->printed || now - p->last_print >= p->every_s || (p->every_n > 0 && done % p->every_n == 0);
    if (due) print_line(p, now, extra, 0);
}

void progress_finish(Progress *p, const char *extra) {
    if (!p->unit) return;
    /* a log that already has this very line does not need it twice */
    if (p->tty || !p->printed || p->printed_done != p->done) print_line(p, align_now(), extra, 1);
    p->unit = NULL;
}

void progress_break(Progress *p) {
    if (p->tty && p->open_line) {
        fputs("\r\033[K", stderr); /* the next update draws it again below */
        p->open_line = 0;
    }
}

long progress_count_lines(const char *path) {
    /* a pipe (/dev/stdin) read here would be gone for the program: unknown */
    struct stat sb;
    if (!path || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long n = 0;
    int c, blank = 1;
    char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < got; i++) {
            c = (unsigned char)buf[i];
            if (c == '\n') {
                n += !blank;
                blank = 1;
            } else if (c != ' ' && c != '\t' && c != '\r') {
                blank = 0;
            }
        }
    n += !blank;
    fclose(f);
    return n;
}
