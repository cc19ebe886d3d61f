/* metrics: per-step training metrics under TRL's names.
 *
 * A Metrics is a small accumulator of (key, sum, weight) pairs: micro-steps
 * add weighted values, and the mean is what gets logged. A MetricsLog
 * writes one JSON object per optimizer step to a .jsonl file (--metrics)
 * and a progress line (progress.h: steps done, rate, time left and the
 * shown metrics) to the terminal: rewritten in place on a TTY, a plain
 * line every 10 steps or 10 seconds otherwise (logs stay readable). */
#ifndef ALIGN_METRICS_H
#define ALIGN_METRICS_H

#include <stdio.h>

#include "progress.h"

#define METRICS_MAX 48

typedef struct {
    int n;
    char key[METRICS_MAX][48];
    double sum[METRICS_MAX], weight[METRICS_MAX];
} Metrics;

void metrics_clear(Metrics *m);
/* Add value with a weight (its mean is sum(w*v)/sum(w)). */
void metrics_add(Metrics *m, const char *key, double value, double weight);
/* Set a value (replaces whatever was accumulated). */
void metrics_set(Metrics *m, const char *key, double value);
/* Add another accumulator's sums and weights into m, key by key (keys
 * only in `from` are appended): data-parallel ranks merge their shards'
 * metrics into the global step's. */
void metrics_merge(Metrics *m, const Metrics *from);
/* Mean of key, or `fallback` when absent. */
double metrics_get(const Metrics *m, const char *key, double fallback);

typedef struct {
    FILE *file;       /* NULL: no metrics file */
    char *path;
    int print_every;  /* non-TTY: a line every N steps */
    const char *prog;
    Progress progress; /* started at the first logged step */
    struct TbWriter *tb; /* --report-to tensorboard: the same scalars as events */
} MetricsLog;

/* path may be NULL (terminal only). */
int metrics_log_open(MetricsLog *log, const char *prog, const char *path, int append);
/* Also write every logged value as a TensorBoard scalar (tb_events.h)
 * into a new event file under dir, under the JSONL's names ("epoch" too,
 * eval values as "eval_<key>"). */
int metrics_log_tensorboard(MetricsLog *log, const char *dir);
/* The run starts (or resumes) at `step` of `total`: the progress clock
 * starts now, so the first step's rate is right. Without it the clock
 * starts at the first logged step. */
void metrics_log_begin(MetricsLog *log, long step, long total);
/* One optimizer step: the JSON line (step, epoch and every key) and the
 * progress line showing `shown` keys (NULL-terminated list). */
int metrics_log_step(MetricsLog *log, long step, long total_steps, double epoch, const Metrics *m,
                     const char *const *shown);
/* An evaluation result: a JSON line with keys prefixed by "eval_", and a
 * terminal line. */
int metrics_log_eval(MetricsLog *log, long step, const Metrics *m);
void metrics_log_close(MetricsLog *log);

#endif
