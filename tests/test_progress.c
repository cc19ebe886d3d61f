/* progress (common/base/progress.h): the line's counts, percentage, rate
 * and time left from fixed clock values (hand-worked expectations), the
 * duration format, and when a log that is not a terminal gets a line. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "progress.h"
#include "test.h"

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

int main(void) {
    char b[512], d[32];

    /* durations: seconds, m:ss, h:mm:ss */
    progress_duration(d, sizeof d, 42.4);
    CHECK(!strcmp(d, "42s"), "42.4 s -> %s", d);
    progress_duration(d, sizeof d, 150);
    CHECK(!strcmp(d, "2:30"), "150 s -> %s", d);
    progress_duration(d, sizeof d, 3723);
    CHECK(!strcmp(d, "1:02:03"), "3723 s -> %s", d);
    progress_duration(d, sizeof d, -1);
    CHECK(!strcmp(d, "?"), "negative -> %s", d);

    /* 25 of 100 steps in 50 s: 0.5 step/s shown as 2 s/step, 75 left -> 150 s */
    progress_format(b, sizeof b, "dpo_run", "step", 0, 25, 100, 50.0, "loss 0.69");
    CHECK(has(b, "dpo_run: step 25/100"), "counts: %s", b);
    CHECK(has(b, " 25%"), "percentage: %s", b);
    CHECK(has(b, "2 s/step"), "slow rate as seconds per unit: %s", b);
    CHECK(has(b, "ETA 2:30"), "time left: %s", b);
    CHECK(has(b, "elapsed 50s"), "elapsed: %s", b);
    CHECK(has(b, "loss 0.69"), "extra text kept: %s", b);

    /* resumed at 40: 20 more in 10 s is 2 records/s, 140 left -> 70 s */
    progress_format(b, sizeof b, "generate", "record", 40, 60, 200, 10.0, NULL);
    CHECK(has(b, "2 record/s"), "rate counts this run only: %s", b);
    CHECK(has(b, "ETA 1:10"), "time left from this run's rate: %s", b);
    CHECK(has(b, " 30%"), "percentage of the whole: %s", b);

    /* nothing done yet: no rate, time left unknown */
    progress_format(b, sizeof b, "x", "step", 0, 0, 10, 3.0, NULL);
    CHECK(has(b, "ETA ?"), "unknown time left: %s", b);
    /* all done */
    progress_format(b, sizeof b, "x", "step", 0, 10, 10, 3.0, NULL);
    CHECK(has(b, "ETA 0s") && has(b, "100%"), "finished: %s", b);
    /* unknown total: no percentage, no ETA */
    progress_format(b, sizeof b, "x", "tensor", 0, 7, 0, 2.0, NULL);
    CHECK(has(b, "tensor 7 ") && !has(b, "ETA") && !has(b, "%"), "unknown total: %s", b);
    CHECK(has(b, "3.5 tensor/s"), "fast rate: %s", b);
    /* a small buffer is cut, still terminated */
    char small[16];
    int n = progress_format(small, sizeof small, "prog", "step", 0, 1, 2, 1.0, NULL);
    CHECK(n == (int)strlen(small) && n < 16, "cut to the buffer: %d '%s'", n, small);

    /* not a terminal: a line at the first update, every N units, at the end */
    FILE *tmp = tmpfile();
    fflush(stderr);
    int saved = dup(fileno(stderr));
    dup2(fileno(tmp), fileno(stderr));
    Progress p;
    progress_start(&p, "t", "step", 0, 25);
    p.every_s = 1e9;
    p.every_n = 10;
    for (long i = 1; i <= 25; i++) progress_update(&p, i, NULL);
    progress_finish(&p, NULL);
    fflush(stderr);
    dup2(saved, fileno(stderr));
    rewind(tmp);
    int lines = 0;
    char line[512], got[4][64];
    while (fgets(line, sizeof line, tmp)) {
        if (lines < 4) sscanf(line, "t: step %63s", got[lines]);
        lines++;
    }
    CHECK(lines == 4, "non-terminal lines: %d (want steps 1, 10, 20, 25)", lines);
    CHECK(lines >= 4 && !strcmp(got[0], "1/25") && !strcmp(got[1], "10/25") && !strcmp(got[2], "20/25") &&
              !strcmp(got[3], "25/25"),
          "non-terminal lines at steps 1, 10, 20 and the end");
    fclose(tmp);
    return test_summary();
}
