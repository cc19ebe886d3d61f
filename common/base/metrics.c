#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#include "tb_events.h"
#include "util.h"

void metrics_clear(Metrics *m) { m->n = 0; }

static int slot(Metrics *m, const char *key) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key)) return i;
    if (m->n == METRICS_MAX) return -1;
    int i = m->n++;
    snprintf(m->key[i], sizeof m->key[i], "%s", key);
    m->sum[i] = m->weight[i] = 0;
    return i;
}

void metrics_add(Metrics *m, const char *key, double value, double weight) {
    int i = slot(m, key);
    if (i < 0) return;
    m->sum[i] += value * weight;
    m->weight[i] += weight;
}

void metrics_set(Metrics *m, const char *key, double value) {
    int i = slot(m, key);
    if (i < 0) return;
    m->sum[i] = value;
    m->weight[i] = 1;
}

void metrics_merge(Metrics *m, const Metrics *from) {
    for (int j = 0; j < from->n; j++) {
        int i = slot(m, from->key[j]);
        if (i < 0) return;
        m->sum[i] += from->sum[j];
        m->weight[i] += from->weight[j];
    }
}

double metrics_get(const Metrics *m, const char *key, double fallback) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key)) return m->weight[i] > 0 ? m->sum[i] / m->weight[i] : fallback;
    return fallback;
}

int metrics_log_open(MetricsLog *log, const char *prog, const char *path, int append) {
    memset(log, 0, sizeof *log);
    log->prog = prog;
    log->print_every = 10;
    if (path) {
        log->file = fopen(path, append ? "a" : "w");
        if (!log->file) return align_errorf("--metrics %s: cannot open for writing", path);
        log->path = strdup(path);
    }
    return 0;
}

int metrics_log_tensorboard(MetricsLog *log, const char *dir) {
    if (!(log->tb = tb_writer_open(dir))) return -1;
    return 0;
}

/* The step's values as one TensorBoard event; eval keys get the prefix. */
static int tb_write(MetricsLog *log, long step, const Metrics *m, const char *prefix, int with_epoch, double epoch) {
    const char *tags[METRICS_MAX + 1];
    char names[METRICS_MAX][56];
    double vals[METRICS_MAX + 1];
    int n = 0;
    if (with_epoch) tags[n] = "epoch", vals[n++] = epoch;
    for (int i = 0; i < m->n; i++) {
        snprintf(names[i], sizeof names[i], "%s%s", prefix, m->key[i]);
        tags[n] = names[i];
        vals[n++] = m->weight[i] > 0 ? m->sum[i] / m->weight[i] : 0;
    }
    return tb_writer_scalars(log->tb, step, n, tags, vals);
}

void metrics_log_begin(MetricsLog *log, long step, long total) {
    /* the rate counts this run's steps only: a resumed run starts at `step` */
    progress_start(&log->progress, log->prog, "step", step, total);
    log->progress.every_n = log->print_every;
}

/* JSON has no NaN/Inf: write null so readers don't choke. */
static void json_number(FILE *f, double v) {
    if (v != v || v > 1e300 || v < -1e300) fputs("null", f);
    else fprintf(f, "%.8g", v);
}

int metrics_log_step(MetricsLog *log, long step, long total, double epoch, const Metrics *m,
                     const char *const *shown) {
    if (log->file) {
        fprintf(log->file, "{\"step\": %ld, \"epoch\": %.4f", step, epoch);
        for (int i = 0; i < m->n; i++) {
            fprintf(log->file, ", \"%s\": ", m->key[i]);
            json_number(log->file, m->weight[i] > 0 ? m->sum[i] / m->weight[i] : 0);
        }
        fputs("}\n", log->file);
        if (fflush(log->file) != 0) return align_errorf("--metrics %s: write failed", log->path);
    }
    if (log->tb && tb_write(log, step, m, "", 1, epoch)) return -1;
    if (!log->progress.unit && !log->progress.printed) metrics_log_begin(log, step - 1, total);
    char line[512];
    int n = 0;
    line[0] = 0;
    for (int i = 0; shown && shown[i] && n < (int)sizeof line; i++) {
        double v = metrics_get(m, shown[i], 0.0 / 0.0);
        if (v == v) n += snprintf(line + n, sizeof line - n, "%s%s %.4g", n ? "  " : "", shown[i], v);
    }
    if (step >= total) {
        log->progress.done = step;
        progress_finish(&log->progress, line);
    } else {
        progress_update(&log->progress, step, line);
    }
    return 0;
}

int metrics_log_eval(MetricsLog *log, long step, const Metrics *m) {
    if (log->file) {
        fprintf(log->file, "{\"step\": %ld", step);
        for (int i = 0; i < m->n; i++) {
            fprintf(log->file, ", \"eval_%s\": ", m->key[i]);
            json_number(log->file, m->weight[i] > 0 ? m->sum[i] / m->weight[i] : 0);
        }
        fputs("}\n", log->file);
        fflush(log->file);
    }
    if (log->tb && tb_write(log, step, m, "eval_", 0, 0)) return -1;
    progress_break(&log->progress);
    fprintf(stderr, "eval at step %ld:", step);
    for (int i = 0; i < m->n; i++) fprintf(stderr, "  %s %.4g", m->key[i], m->weight[i] > 0 ? m->sum[i] / m->weight[i] : 0);
    fputc('\n', stderr);
    return 0;
}

void metrics_log_close(MetricsLog *log) {
    progress_break(&log->progress);
    if (log->file) fclose(log->file);
    tb_writer_close(log->tb);
    free(log->path);
    memset(log, 0, sizeof *log);
}
