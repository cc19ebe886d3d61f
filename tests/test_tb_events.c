/* TensorBoard event files (common/base/tb_events.h, crc32c.h) read back:
 * CRC-32C against the published check values (RFC 3720 B.4 and the
 * "123456789" check), the TFRecord framing of every record (length, masked
 * CRC of the length, masked CRC of the data), the first event's file
 * version, and the scalars written through MetricsLog (step rows with
 * "epoch", eval rows as "eval_<key>", a 0 value present) decoded with
 * protobuf-c's own unpacker. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"
#include "metrics.h"
#include "tb_event.pb-c.h"
#include "tb_events.h"
#include "test.h"
#include "util.h"

static uint32_t get_u32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* the records of an event file; framing and CRCs checked on the way */
static int read_records(const char *path, uint8_t **data, size_t *lens, int max) {
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "open %s", path);
    if (!f) return 0;
    int n = 0;
    uint8_t head[12];
    while (n < max && fread(head, 1, 12, f) == 12) {
        uint64_t len = 0;
        for (int i = 0; i < 8; i++) len |= (uint64_t)head[i] << (8 * i);
        CHECK(get_u32(head + 8) == crc32c_masked(crc32c(head, 8)), "record %d: length CRC", n);
        uint8_t *d = malloc(len + 4);
        CHECK(fread(d, 1, len + 4, f) == len + 4, "record %d: %llu bytes and a CRC", n, (unsigned long long)len);
        CHECK(get_u32(d + len) == crc32c_masked(crc32c(d, len)), "record %d: data CRC", n);
        data[n] = d;
        lens[n++] = len;
    }
    CHECK(fgetc(f) == EOF, "no bytes after the last whole record");
    fclose(f);
    return n;
}

static const Tb__SummaryValue *find_tag(const Tb__Event *e, const char *tag) {
    if (e->what_case != TB__EVENT__WHAT_SUMMARY) return NULL;
    for (size_t i = 0; i < e->summary->n_value; i++)
        if (!strcmp(e->summary->value[i]->tag, tag)) return e->summary->value[i];
    return NULL;
}

int main(void) {
    /* CRC-32C check values */
    uint8_t buf[32];
    CHECK(crc32c("123456789", 9) == 0xE3069283u, "crc32c(\"123456789\") = %08x", crc32c("123456789", 9));
    memset(buf, 0, 32);
    CHECK(crc32c(buf, 32) == 0x8A9136AAu, "32 zero bytes: %08x", crc32c(buf, 32));
    memset(buf, 0xff, 32);
    CHECK(crc32c(buf, 32) == 0x62A8AB43u, "32 0xff bytes: %08x", crc32c(buf, 32));
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    CHECK(crc32c(buf, 32) == 0x46DD794Eu, "0..31: %08x", crc32c(buf, 32));
    CHECK(crc32c_update(crc32c(buf, 10), buf + 10, 22) == crc32c(buf, 32), "continued CRC equals the whole");

    /* a run's log: two steps and an eval, as the trainers write them */
    char dir[] = "/tmp/align-tb-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temp dir");
    char logdir[256];
    snprintf(logdir, sizeof logdir, "%s/logs/run1", dir); /* parents made too */
    MetricsLog log;
    CHECK(metrics_log_open(&log, "test", NULL, 0) == 0, "open log");
    CHECK(metrics_log_tensorboard(&log, logdir) == 0, "tensorboard: %s", align_error());
    Metrics m;
    const double loss[2] = {0.6931, 0.25}, acc[2] = {0.0, 0.75};
    for (int s = 0; s < 2; s++) {
        metrics_clear(&m);
        metrics_add(&m, "loss", loss[s], 1);
        metrics_add(&m, "rewards/accuracies", acc[s], 1);
        CHECK(metrics_log_step(&log, s + 1, 2, 0.5 * (s + 1), &m, NULL) == 0, "step %d", s + 1);
    }
    metrics_clear(&m);
    metrics_add(&m, "loss", 0.5, 1);
    metrics_add(&m, "loss", 0.3, 1); /* eval value is the mean, 0.4 */
    CHECK(metrics_log_eval(&log, 2, &m) == 0, "eval");
    char path[512];
    snprintf(path, sizeof path, "%s", tb_writer_path(log.tb));
    metrics_log_close(&log);
    CHECK(!strncmp(path, logdir, strlen(logdir)) && strstr(path, "/events.out.tfevents."), "file name: %s", path);

    uint8_t *rec[16];
    size_t lens[16];
    int n = read_records(path, rec, lens, 16);
    CHECK(n == 4, "records: %d (file version, two steps, one eval)", n);
    Tb__Event *ev[16] = {0};
    for (int i = 0; i < n; i++) {
        ev[i] = tb__event__unpack(NULL, lens[i], rec[i]);
        CHECK(ev[i] != NULL, "record %d is an Event", i);
    }
    if (n == 4 && ev[0] && ev[1] && ev[2] && ev[3]) {
        CHECK(ev[0]->what_case == TB__EVENT__WHAT_FILE_VERSION && !strcmp(ev[0]->file_version, "brain.Event:2"),
              "first event: file version");
        CHECK(ev[0]->wall_time > 1.6e9, "wall time in seconds since 1970: %f", ev[0]->wall_time);
        for (int s = 0; s < 2; s++) {
            const Tb__Event *e = ev[1 + s];
            CHECK(e->step == s + 1, "step %lld", (long long)e->step);
            const Tb__SummaryValue *v = find_tag(e, "loss"), *a = find_tag(e, "rewards/accuracies"), *ep = find_tag(e, "epoch");
            CHECK(v && v->value_case == TB__SUMMARY_VALUE__VALUE_SIMPLE_VALUE && v->simple_value == (float)loss[s],
                  "step %d loss", s + 1);
            CHECK(a && a->value_case == TB__SUMMARY_VALUE__VALUE_SIMPLE_VALUE && a->simple_value == (float)acc[s],
                  "step %d accuracy (a 0 is written too)", s + 1);
            CHECK(ep && ep->simple_value == (float)(0.5 * (s + 1)), "step %d epoch", s + 1);
        }
        const Tb__SummaryValue *el = find_tag(ev[3], "eval_loss");
        CHECK(ev[3]->step == 2 && el && el->simple_value == 0.4f, "eval_loss at step 2");
        CHECK(!find_tag(ev[3], "loss") && !find_tag(ev[3], "epoch"), "eval rows carry only eval_ tags");
    }
    for (int i = 0; i < n; i++) tb__event__free_unpacked(ev[i], NULL), free(rec[i]);

    /* a bit flipped in the data no longer matches its CRC */
    uint8_t *framed;
    size_t flen;
    CHECK(tb_record_frame("abc", 3, &framed, &flen) == 0 && flen == 19, "frame of 3 bytes is 19");
    CHECK(get_u32(framed + 15) == crc32c_masked(crc32c("abc", 3)), "data CRC of the frame");
    framed[13] ^= 1;
    CHECK(get_u32(framed + 15) != crc32c_masked(crc32c(framed + 12, 3)), "a flipped bit shows");
    free(framed);

    /* a directory that cannot be made is an error naming it */
    MetricsLog bad;
    metrics_log_open(&bad, "test", NULL, 0);
    CHECK(metrics_log_tensorboard(&bad, "/proc/align-no/such") != 0 && strstr(align_error(), "/proc/align-no/such"),
          "bad --logging-dir named: %s", align_error());
    metrics_log_close(&bad);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", dir);
    return test_summary();
}
