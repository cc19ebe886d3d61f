/* report: one self-contained report.html for one or more runs.
 *
 * Inputs are files or directories. A metrics JSONL (trainers' --metrics:
 * objects with "step") is one run: every numeric key becomes a curve over
 * the steps, several runs overlaid in one chart per metric, and its
 * "eval_*" rows fill the eval table. A generate output (objects with
 * "completion" and "finish_reason") is one set of samples: the first
 * sample of each prompt is shown next to the other sets' answers to the
 * same prompt, the sets in the order they were written (oldest first:
 * before, then after). A directory contributes its *.jsonl files of either
 * kind (metrics files only with REPORT_DIR_METRICS); other files are
 * skipped.
 *
 * The page holds everything it shows: the data as JSON and the inline
 * script that draws it as SVG; no network, no external files. */
#ifndef ALIGN_REPORT_H
#define ALIGN_REPORT_H

enum { REPORT_DIR_METRICS = 1 };

/* Write the page to out_path (atomically: a temporary file renamed).
 * -1 with an error naming the file at fault; an error too when no input
 * holds a run or samples. */
int report_write(const char *out_path, const char *const *inputs, int n_inputs, int flags);

#endif
