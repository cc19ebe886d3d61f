/* logprobs: summed completion log-probabilities of a dataset under a model.
 *
 * Preference records give chosen_logp, rejected_logp, chosen_tokens and
 * rejected_tokens per record (the reference log-probs dpo_run
 * --ref-logprobs reads); SFT records give logp and tokens. Prompt tokens
 * never count, as in DPO. One JSON line per record, in input order.
 *
 * A log-probability that is not finite (a model with NaN or Inf weights)
 * stops the program with an error naming the first such record, and
 * nothing is written: JSON has no NaN, and a null would only move the
 * failure to whoever reads the file (dpo_run --ref-logprobs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "cli.h"
#include "model_load.h"
#include "seq_logprobs.h"
#include "table_reader.h"
#include "progress.h"
#include "trainer.h"
#include "util.h"

/* Where a record came from, as the dataset layer names records. */
static void record_name(const char *path, const DsExample *ex, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    int c = ' ';
    while (f && (c = fgetc(f)) != EOF && (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0xEF || c == 0xBB || c == 0xBF)) {}
    if (f) fclose(f);
    if (c == '[') snprintf(buf, n, "%s: element %ld", path, ex->line);
    else snprintf(buf, n, "%s:%ld", path, ex->line);
}

/* Preference data when the first record mentions "chosen". */
static int looks_like_preferences(const char *path, const char *sheet) {
    if (table_is_table_path(path)) {
        /* a table's first row as its record: the header names "chosen" (a
         * CSV's bytes would do, an .xlsx's are a zip); a file that does not
         * open is reported by the load */
        TableReader *t = table_open(path, sheet);
        if (!t) return 0;
        const char *json = NULL;
        size_t len;
        long row;
        int pref = table_next(t, &json, &len, &row) == 1 && strstr(json, "\"chosen\"") != NULL;
        table_close(t);
        return pref;
    }
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *end = buf[0] == '[' ? buf + n : strchr(buf, '\n');
    if (end) *end = 0;
    return strstr(buf, "\"chosen\"") != NULL;
}

int main(int argc, char **argv) {
    TrainArgs a; /* for the shared data options and device */
    train_args_defaults(&a);
    const char *model = NULL, *data = NULL, *out_path = NULL, *kind = "auto";
    CliFlag flags[] = {
        {"model", CLI_STRING, &model, "model: .ckpt, .gguf or a Hugging Face directory"},
        {"data", CLI_STRING, &data, "preference or SFT records (JSONL, .json, .csv, .tsv or .xlsx)"},
        {"sheet", CLI_STRING, &a.sheet, "the worksheet of an .xlsx --data file (default: the first)"},
        {"kind", CLI_STRING, &kind, "auto, preference or sft"},
        {"out", CLI_STRING, &out_path, "output JSONL (default: standard output)"},
        {"batch-size", CLI_INT, &a.batch_size, "sequences per forward", CLI_AT_LEAST_1},
        {"max-length", CLI_INT, &a.max_length, "longest prompt + completion in tokens", CLI_NONNEG},
        {"chat-template", CLI_STRING, &a.chat_template, "none, chatml, llama3, hh or a model family (qwen2.5, qwen3, llama3.1, gemma3, phi4, mistral-v7, ...; default: the model's own)"},
        {"skip-bad", CLI_BOOL, &a.skip_bad, "skip malformed records (counted) instead of stopping"},
        {"device", CLI_STRING, &a.device, "cpu or cuda"},
    };
    CliSpec spec = {.prog = "logprobs", .usage = "logprobs --model M --data F [flags]",
                    .about = "Per record, the summed log-probability of the completion tokens (prompt excluded) and their count. "
                             "A log-probability that is not finite (NaN or Inf: a broken model) stops the program with an error "
                             "naming the record, and nothing is written.",
                    .flags = flags, .n_flags = sizeof flags / sizeof *flags};
    cli_parse_or_exit(&spec, argc, argv);
    if (!model || !data) align_die("logprobs", "--model and --data are required (see --help)");
    int pref;
    if (!strcmp(kind, "auto")) pref = looks_like_preferences(data, a.sheet);
    else if (!strcmp(kind, "preference")) pref = 1;
    else if (!strcmp(kind, "sft")) pref = 0;
    else align_die("logprobs", "--kind %s: expected auto, preference or sft", kind);

    ModelBundle b;
    ChatTemplate tmpl;
    if (trainer_load_policy(&a, model, &b, &tmpl)) align_die_error("logprobs");
    if (!b.model->cfg.lm_head) align_die("logprobs", "%s has no LM head (it is a reward/value model)", model);
    Dataset d;
    if (trainer_load_data("logprobs", &a, data, b.tok, tmpl, pref ? DS_PREFERENCE : DS_SFT, &d)) align_die_error("logprobs");
    int per = pref ? 2 : 1;
    size_t n = d.n * per;
    DsSeq *seqs = malloc(n * sizeof(DsSeq));
    double *sums = malloc(n * sizeof(double));
    int *counts = malloc(n * sizeof(int));
    if (!seqs || !sums || !counts) align_die("logprobs", "out of memory for %zu records", d.n);
    for (size_t i = 0; i < d.n; i++)
        for (int k = 0; k < per; k++) seqs[i * per + k] = ds_example_seq(&d.ex[i], k);
    /* one forward of seq_logprobs' size at a time, so progress moves with each */
    int step = a.batch_size < 1 ? 1 : a.batch_size;
    if (pref) step = step < 2 ? 2 : step - step % 2;
    Progress progress;
    progress_start(&progress, "logprobs", "record", 0, (long)d.n);
    for (size_t at = 0; at < n; at += step) {
        int k = n - at < (size_t)step ? (int)(n - at) : step;
        if (seq_logprobs(b.model, seqs + at, k, a.batch_size, pref, sums + at, counts + at)) {
            progress_break(&progress);
            align_die_error("logprobs");
        }
        progress_update(&progress, (long)((at + k) / per), NULL);
    }
    progress_finish(&progress, NULL);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(sums[i])) {
            char where[4200];
            record_name(data, &d.ex[i / per], where, sizeof where);
            align_die("logprobs", "%s: the %slog-probability is %s under %s; nothing written", where,
                      !pref ? "" : i % 2 ? "rejected " : "chosen ", isnan(sums[i]) ? "NaN" : sums[i] > 0 ? "+Inf" : "-Inf", model);
        }
    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) align_die("logprobs", "--out %s: cannot open for writing", out_path);
    for (size_t i = 0; i < d.n; i++) {
        if (pref)
            fprintf(out, "{\"chosen_logp\": %.9g, \"rejected_logp\": %.9g, \"chosen_tokens\": %d, \"rejected_tokens\": %d}\n",
                    sums[2 * i], sums[2 * i + 1], counts[2 * i], counts[2 * i + 1]);
        else
            fprintf(out, "{\"logp\": %.9g, \"tokens\": %d}\n", sums[i], counts[i]);
    }
    /* ferror too: a write that failed before the flush leaves nothing for fflush to report */
    if (fflush(out) != 0 || ferror(out) || (out_path && fclose(out) != 0))
        align_die("logprobs", "writing %s failed (%s); the output is incomplete", out_path ? out_path : "standard output",
                  errno ? strerror(errno) : "I/O error");
    free(seqs), free(sums), free(counts);
    ds_free(&d);
    model_bundle_free(&b);
    return 0;
}
