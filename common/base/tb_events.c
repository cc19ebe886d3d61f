#include "tb_events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "tb_event.pb-c.h"
#include "util.h"

struct TbWriter {
    FILE *f;
    char *path;
};

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

int tb_record_frame(const void *data, size_t n, uint8_t **buf, size_t *len) {
    uint8_t *b = malloc(n + 16);
    if (!b) return align_errorf("out of memory for a %zu-byte event", n);
    uint64_t n64 = n;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n64 >> (8 * i));
    put_u32(b + 8, crc32c_masked(crc32c(b, 8)));
    memcpy(b + 12, data, n);
    put_u32(b + 12 + n, crc32c_masked(crc32c(data, n)));
    *buf = b;
    *len = n + 16;
    return 0;
}

static int write_event(TbWriter *w, const Tb__Event *ev) {
    size_t n = tb__event__get_packed_size(ev);
    uint8_t *data = malloc(n ? n : 1), *rec = NULL;
    size_t len;
    if (!data) return align_errorf("out of memory for a %zu-byte event", n);
    tb__event__pack(ev, data);
    int rc = tb_record_frame(data, n, &rec, &len);
    free(data);
    if (rc) return -1;
    rc = fwrite(rec, 1, len, w->f) == len && fflush(w->f) == 0 ? 0 : -1;
    free(rec);
    return rc ? align_errorf("%s: write failed: %s", w->path, strerror(errno)) : 0;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* mkdir -p */
static int make_dirs(const char *dir) {
    char *p = strdup(dir);
    if (!p) return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) && errno != EEXIST) break;
        *s = '/';
    }
    int rc = mkdir(p, 0777) && errno != EEXIST ? -1 : 0;
    free(p);
    struct stat st;
    return rc == 0 && stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

TbWriter *tb_writer_open(const char *dir) {
    if (make_dirs(dir)) {
        align_errorf("--logging-dir %s: cannot create the directory (%s)", dir, strerror(errno));
        return NULL;
    }
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    TbWriter *w = calloc(1, sizeof *w);
    size_t cap = strlen(dir) + strlen(host) + 96;
    w->path = malloc(cap);
    double now = wall_now();
    snprintf(w->path, cap, "%s/events.out.tfevents.%ld.%s.%ld.align", dir, (long)now, host, (long)getpid());
    if (!(w->f = fopen(w->path, "wb"))) {
        align_errorf("--logging-dir %s: cannot create %s (%s)", dir, w->path, strerror(errno));
        tb_writer_close(w);
        return NULL;
    }
    Tb__Event ev = TB__EVENT__INIT;
    ev.wall_time = now;
    ev.what_case = TB__EVENT__WHAT_FILE_VERSION;
    ev.file_version = "brain.Event:2";
    if (write_event(w, &ev)) {
        tb_writer_close(w);
        return NULL;
    }
    return w;
}

int tb_writer_scalars(TbWriter *w, long step, int n, const char *const *tags, const double *values) {
    Tb__SummaryValue *vals = calloc(n ? n : 1, sizeof *vals);
    Tb__SummaryValue **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!vals || !ptrs) {
        free(vals), free(ptrs);
        return align_errorf("out of memory");
    }
    for (int i = 0; i < n; i++) {
        tb__summary_value__init(&vals[i]);
        vals[i].tag = (char *)tags[i];
        vals[i].value_case = TB__SUMMARY_VALUE__VALUE_SIMPLE_VALUE;
        vals[i].simple_value = (float)values[i];
        ptrs[i] = &vals[i];
    }
    Tb__Summary sum = TB__SUMMARY__INIT;
    sum.n_value = n;
    sum.value = ptrs;
    Tb__Event ev = TB__EVENT__INIT;
    ev.wall_time = wall_now();
    ev.step = step;
    ev.what_case = TB__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    int rc = write_event(w, &ev);
    free(vals), free(ptrs);
    return rc;
}

const char *tb_writer_path(const TbWriter *w) { return w->path; }

void tb_writer_close(TbWriter *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    free(w->path);
    free(w);
}
