/* align_report: one self-contained report.html for one or more runs.
 *
 *   align_report RUN_DIR_OR_FILE... [--out report.html]
 *
 * Each argument is a metrics JSONL (--metrics of a trainer), a generate
 * output, or a directory holding them: every metrics file is a run (its
 * curves overlaid with the other runs', its eval rows in a table) and
 * every generate output a set of samples (shown side by side per prompt,
 * oldest set first). See common/io/report.h. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "report.h"
#include "util.h"

int main(int argc, char **argv) {
    const char *out = NULL;
    CliFlag flags[] = {
        {"out", CLI_STRING, &out, "the page to write (default RUN_DIR/report.html for one directory, else report.html)"},
    };
    CliSpec spec = {.prog = "align_report", .usage = "align_report RUN_DIR_OR_FILE... [--out report.html]",
                    .about = "One self-contained report.html (no network, no external files): the curves of every "
                             "metric in the metrics JSONL files (several runs overlaid), their eval rows, and the "
                             "completions of generate outputs side by side per prompt. A directory contributes its "
                             "*.jsonl files of either kind.",
                    .flags = flags, .n_flags = sizeof flags / sizeof *flags, .min_positional = 1, .max_positional = 8};
    cli_parse_or_exit(&spec, argc, argv);
    char def[4200];
    struct stat st;
    if (!out) {
        if (spec.n_positional == 1 && stat(spec.positional[0], &st) == 0 && S_ISDIR(st.st_mode))
            snprintf(def, sizeof def, "%s/report.html", spec.positional[0]);
        else
            snprintf(def, sizeof def, "report.html");
        out = def;
    }
    if (report_write(out, spec.positional, spec.n_positional, REPORT_DIR_METRICS)) align_die_error("align_report");
    fprintf(stderr, "align_report: wrote %s\n", out);
    cli_free(&spec);
    return 0;
}
