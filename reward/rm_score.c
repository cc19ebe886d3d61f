/* rm_score: score JSONL records with a reward model, in process or remote.
 *
 *   rm_score --model rm.ckpt --data F [--out scores.jsonl]
 *   rm_score --connect EP    --data F
 *
 * Each input record comes back as itself plus its scores: preference
 * records ({prompt?, chosen, rejected}) get "chosen_score" and
 * "rejected_score", every other record the dataset layer reads as SFT
 * ({prompt, completion}, {question, answer}, {messages}, {text}) gets
 * "score". Records are tokenized here in both modes, exactly as rm_train
 * tokenizes them (chat template, end-of-turn token); with --connect the
 * tokenizer and template come from the server ("tokenizer" op) and token
 * ids travel, so the remote scores are the in-process scores. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "model_load.h"
#include "progress.h"
#include "rm_client.h"
#include "rm_model.h"
#include "table_reader.h"
#include "util.h"

typedef struct {
    cJSON *rec;
    DsExample ex;
    int pref;
} Item;

typedef struct {
    Model *model;          /* in process */
    RmClient *client;      /* or remote */
    int max_batch_tokens;
    int normalize;
    double mean, std;
} Scorer;

static int flush(Scorer *sc, Item *items, int n, FILE *out) {
    int n_seqs = 0;
    for (int i = 0; i < n; i++) n_seqs += items[i].pref ? 2 : 1;
    DsSeq *seqs = malloc((n_seqs + 1) * sizeof(DsSeq));
    float *scores = malloc((n_seqs + 1) * sizeof(float));
    if (!seqs || !scores) {
        free(seqs), free(scores);
        return align_errorf("out of memory");
    }
    for (int i = 0, k = 0; i < n; i++) {
        seqs[k++] = ds_example_seq(&items[i].ex, 0);
        if (items[i].pref) seqs[k++] = ds_example_seq(&items[i].ex, 1);
    }
    int rc = sc->model ? rm_score_seqs(sc->model, seqs, n_seqs, sc->max_batch_tokens, scores)
                       : rm_client_score_seqs(sc->client, seqs, n_seqs, scores);
    if (!rc && sc->normalize)
        for (int i = 0; i < n_seqs; i++) scores[i] = (float)((scores[i] - sc->mean) / (sc->std > 0 ? sc->std : 1));
    for (int i = 0, k = 0; !rc && i < n; i++) {
        if (items[i].pref) {
            cJSON_AddNumberToObject(items[i].rec, "chosen_score", scores[k++]);
            cJSON_AddNumberToObject(items[i].rec, "rejected_score", scores[k++]);
        } else {
            cJSON_AddNumberToObject(items[i].rec, "score", scores[k++]);
        }
        char *s = cJSON_PrintUnformatted(items[i].rec);
        fprintf(out, "%s\n", s);
        free(s);
    }
    for (int i = 0; i < n; i++) cJSON_Delete(items[i].rec), ds_example_free(&items[i].ex);
    free(seqs), free(scores);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* A full disk or a closed pipe stops the program naming the output, rather
 * than reporting success over missing scores (the error flag is sticky, so
 * this covers every fprintf since the last check). */
static void check_written(FILE *out, const char *out_path) {
    errno = 0;
    if (fflush(out) || ferror(out))
        align_die("rm_score", "%s%s: write failed (%s); the output is incomplete", out_path ? "--out " : "",
                  out_path ? out_path : "standard output", errno ? strerror(errno) : "I/O error");
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *connect = NULL, *data = NULL, *out_path = NULL, *device = "cpu";
    const char *chat_template = NULL, *server_key_file = NULL, *secret_file = NULL, *sheet = NULL;
    int batch_size = 16, max_batch_tokens = 4096, max_length = 0, skip_bad = 0, seed = 0, timeout = 180, normalize = 0;
    CliFlag flags[] = {
        {"model", CLI_STRING, &model_path, "reward model to run in this process (.ckpt from rm_train)"},
        {"connect", CLI_STRING, &connect, "reward_server endpoint to ask instead (tcp://HOST:PORT or ipc://PATH)"},
        {"data", CLI_STRING, &data, "records (JSONL, .json, .csv, .tsv, .xlsx): preference ({prompt?, chosen, rejected}) or SFT/text records"},
        {"sheet", CLI_STRING, &sheet, "the worksheet of an .xlsx --data file (default: the first)"},
        {"out", CLI_STRING, &out_path, "output JSONL (default stdout)"},
        {"batch-size", CLI_INT, &batch_size, "records per batch / request (default 16)", CLI_AT_LEAST_1},
        {"max-batch-tokens", CLI_INT, &max_batch_tokens, "tokens per forward in process (default 4096)", CLI_AT_LEAST_1},
        {"max-length", CLI_INT, &max_length, "truncate prompt + completion to this many tokens, as rm_train does (0 = no limit)", CLI_NONNEG},
        {"chat-template", CLI_STRING, &chat_template, "chat template (default: the model's)"},
        {"device", CLI_STRING, &device, "cpu or cuda (in process)"},
        {"normalize", CLI_BOOL, &normalize, "in process: (score - reward_mean) / reward_std from the checkpoint"},
        {"curve-server-key", CLI_STRING, &server_key_file, "file with the server's CURVE public key (turns CURVE on)"},
        {"curve-secret-file", CLI_STRING, &secret_file, "this client's CURVE secret key file (reward_server --curve-keygen)"},
        {"timeout", CLI_INT, &timeout, "seconds each request may take, its send included (default 180)", CLI_AT_LEAST_1},
        {"skip-bad", CLI_BOOL, &skip_bad, "skip and count bad records instead of stopping"},
        {"seed", CLI_INT, &seed, "accepted for a uniform command line; scoring draws no random numbers"},
    };
    CliSpec spec = {.prog = "rm_score", .usage = "rm_score (--model RM | --connect EP) --data F [--out F]",
                    .about = "Score records with a reward model; JSONL in, the same records with scores out.",
                    .flags = flags, .n_flags = sizeof flags / sizeof flags[0]};
    cli_parse_or_exit(&spec, argc, argv);
    if (!!model_path == !!connect) align_die("rm_score", "give exactly one of --model and --connect");
    if (!data) align_die("rm_score", "--data is required (see --help)");
    if (timeout > 86400) align_die("rm_score", "--timeout %d: at most 86400 seconds", timeout);
    /* checked before a model is loaded or a server asked */
    struct stat dst;
    if (stat(data, &dst)) align_die("rm_score", "--data %s: %s", data, strerror(errno));
    if (S_ISDIR(dst.st_mode)) align_die("rm_score", "--data %s is a directory: give a JSONL file", data);

    Scorer sc = {.max_batch_tokens = max_batch_tokens, .normalize = normalize};
    ModelBundle b = {0};
    Tokenizer *tok = NULL;
    char *tmpl_name = NULL;
    ChatTemplate tmpl = CHAT_TEMPLATE_NONE;
    if (model_path) {
        const Backend *be = backend_get(device);
        if (!be || model_load_any(model_path, be, MODEL_LOAD_TOKENIZER, &b)) align_die_error("rm_score");
        if (!b.model->cfg.value_head) align_die("rm_score", "%s has no score head (score.weight): train it with rm_train", model_path);
        sc.model = b.model;
        tok = b.tok;
        if (b.extras.chat_template) tmpl_name = strdup(b.extras.chat_template);
        if (normalize) {
            cJSON *st = b.extras.train_state ? cJSON_Parse(b.extras.train_state) : NULL;
            cJSON *m = cJSON_GetObjectItem(st, "reward_mean"), *s = cJSON_GetObjectItem(st, "reward_std");
            if (!cJSON_IsNumber(m) || !cJSON_IsNumber(s)) align_die("rm_score", "--normalize: %s has no reward_mean/reward_std", model_path);
            sc.mean = m->valuedouble, sc.std = s->valuedouble;
            cJSON_Delete(st);
        }
    } else {
        if (normalize) align_die("rm_score", "--normalize with --connect: start reward_server with --normalize instead");
        RmCurveClient curve = {0};
        char server_key[41];
        if (server_key_file) {
            if (wire_read_z85_key(server_key_file, server_key)) align_die_error("rm_score");
            curve.server_public = server_key;
            curve.secret_file = secret_file;
        }
        sc.client = rm_client_connect(NULL, connect, server_key_file ? &curve : NULL, timeout * 1000);
        char *tj = NULL;
        if (!sc.client || rm_client_tokenizer(sc.client, &tj, &tmpl_name)) align_die_error("rm_score");
        if (!tj) align_die("rm_score", "the server's model has no tokenizer");
        if (!(tok = tok_load_hf_json(tj, strlen(tj), connect))) align_die_error("rm_score");
        free(tj);
    }
    if (chat_template_choose(chat_template, tmpl_name, b.extras.chat_template_jinja, &tmpl) < 0)
        align_die_error("rm_score");
    free(tmpl_name);

    DsOptions opt;
    ds_options_default(&opt);
    opt.chat_template = tmpl;
    opt.max_length = max_length;
    opt.sheet = sheet;
    /* the dataset reader, not lines read here: .json arrays, CSV/TSV and
     * .xlsx score as they train (each record still picks preference or SFT
     * by its own fields) */
    DsReader *in = ds_reader_open(data, tok, &opt);
    if (!in) align_die_error("rm_score");
    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) align_die("rm_score", "--out %s: cannot write", out_path);
    Item *items = calloc(batch_size, sizeof(Item));
    Progress progress;
    /* a JSONL line is a record; other formats' records are not counted ahead */
    int jsonl = !table_is_table_path(data) && !ends_with(data, ".json");
    progress_start(&progress, "rm_score", "record", 0, jsonl ? progress_count_lines(data) : 0);
    int n = 0;
    long n_bad = 0, n_done = 0;
    const char *line;
    size_t len;
    long row;
    char where[4200];
    int got;
    while ((got = ds_reader_next_record(in, &line, &len, &row, where, sizeof where)) != 0) {
        if (got == -2) {
            progress_break(&progress);
            align_die_error("rm_score");
        }
        if (got == -1) {
            if (!skip_bad) {
                progress_break(&progress);
                align_die_error("rm_score");
            }
            n_bad++;
            continue;
        }
        cJSON *rec = cJSON_ParseWithLength(line, len);
        int pref = rec && cJSON_GetObjectItem(rec, "chosen") && cJSON_GetObjectItem(rec, "rejected");
        opt.kind = pref ? DS_PREFERENCE : DS_SFT;
        Item *it = &items[n];
        memset(&it->ex, 0, sizeof it->ex);
        int rc = rec ? ds_parse_record(line, len, where, tok, &opt, &it->ex) : (align_errorf("%s: not valid JSON", where), -1);
        if (rc != 1) {
            cJSON_Delete(rec);
            ds_example_free(&it->ex);
            if (!skip_bad) {
                progress_break(&progress);
                align_die_error("rm_score");
            }
            n_bad++;
            continue;
        }
        it->rec = rec;
        it->pref = pref;
        if (++n == batch_size) {
            if (flush(&sc, items, n, out)) {
                progress_break(&progress);
                align_die_error("rm_score");
            }
            check_written(out, out_path);
            n_done += n;
            n = 0;
            progress_update(&progress, n_done + n_bad, NULL);
        }
    }
    if (n && flush(&sc, items, n, out)) {
        progress_break(&progress);
        align_die_error("rm_score");
    }
    n_done += n;
    progress.done = n_done + n_bad;
    progress_finish(&progress, NULL);
    /* an empty input is a mistake (a wrong path, a failed export), not a run */
    if (!n_done && !n_bad) align_die("rm_score", "--data %s: no records in the file", data);
    if (!n_done) align_die("rm_score", "--data %s: none of its %ld records could be scored (all skipped as bad)", data, n_bad);
    check_written(out, out_path);
    if (out != stdout && fclose(out)) align_die("rm_score", "--out %s: write failed (%s)", out_path, strerror(errno));
    ds_reader_close(in);
    free(items);
    fprintf(stderr, "rm_score: scored %ld records%s", n_done, n_bad ? "" : "\n");
    if (n_bad) fprintf(stderr, " (%ld bad records skipped)\n", n_bad);
    if (sc.client) {
        rm_client_close(sc.client);
        tok_free(tok);
    }
    model_bundle_free(&b);
    cli_free(&spec);
    return 0;
}
