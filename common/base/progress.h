/* progress: done/total, rate and time left for every long program.
 *
 * On a terminal one line is rewritten in place (at most ten times a
 * second); when stderr is not a terminal (CI logs, nohup) a plain line is
 * printed at the first update, then every `every_s` seconds (and every
 * `every_n` units when set) and at the end, so a log stays readable. The
 * rate counts only this run's work (`done` at progress_start: a resumed
 * run does not claim the earlier run's steps), and the time left is the
 * units left divided by that rate.
 *
 * progress_format is the whole formatting, a pure function of the counts
 * and the elapsed time, so it is tested with fixed clock values. */
#ifndef ALIGN_PROGRESS_H
#define ALIGN_PROGRESS_H

#include <stddef.h>

typedef struct {
    const char *prog;   /* prefix, e.g. "generate" */
    const char *unit;   /* what is counted, e.g. "step", "record" */
    long total;         /* <= 0: unknown (no percentage, no time left) */
    long done0, done;   /* at the start; last update */
    long printed_done;
    double t0, last_print;
    int tty, printed, open_line;
    double every_s;     /* non-terminal: a line at most this often (default 10 s) */
    long every_n;       /* non-terminal: also a line every N units (0 = off) */
} Progress;

/* Start counting at `done` units of `total`; the clock starts now. */
void progress_start(Progress *p, const char *prog, const char *unit, long done, long total);
/* `done` units are finished; `extra` (may be NULL) follows the counts, e.g.
 * the current loss. Prints when due. */
void progress_update(Progress *p, long done, const char *extra);
/* The final line (always printed), ending the in-place line on a terminal. */
void progress_finish(Progress *p, const char *extra);
/* Before printing anything else on stderr: ends an open in-place line so
 * the message does not land in the middle of it. */
void progress_break(Progress *p);

/* Non-blank lines of a text file (the records of a JSONL file, for a
 * total), or -1 when it cannot be read (the caller's reader reports that). */
long progress_count_lines(const char *path);

/* "prog: unit done/total  pct%  rate  ETA t  elapsed t  extra" into buf
 * (always terminated); `elapsed` in seconds since `done0`. Returns the
 * length. The rate reads "12.3 unit/s", or "4.56 s/unit" when slower than
 * one a second; time left is "?" until one unit is done. */
int progress_format(char *buf, size_t size, const char *prog, const char *unit, long done0, long done, long total,
                    double elapsed, const char *extra);
/* A duration as "42s", "3:07" (minutes) or "1:02:03" (hours). */
void progress_duration(char *buf, size_t size, double seconds);

#endif
