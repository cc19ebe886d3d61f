/* generate: completions of a prompt file as JSON Lines, or an interactive chat.
 *
 *   generate --model M --prompts F [--out FILE] [sampling flags]
 *   generate --model M --chat
 *
 * Prompts are any record the dataset reader accepts as a prompt ({prompt}
 * as a string or messages, {messages}, {question}, or a preference / SFT
 * record whose prompt is taken), rendered with the chat template: the
 * --chat-template flag, else the model's own, else none (a base model gets
 * raw text). Records are read and generated in chunks, with sequence seeds
 * from (seed, record index, sample index), so the output does not depend
 * on --batch-size or the chunking.
 *
 * Each output line: {"index", "sample", "prompt" (the rendered prompt text
 * the model saw), "completion" (text, without the stop token or stop
 * string), "tokens" and "logprobs" (every generated id, a final stop token
 * included, with its log-prob under the model's unmodified distribution),
 * "finish_reason": "stop" | "length"}. Invalid UTF-8 in the text (a
 * completion cut inside a character) becomes U+FFFD.
 *
 * Generation stops at the tokenizer's EOS, the template's end-of-turn token
 * and the model's eos id; --stop adds strings (repeatable or comma-separated;
 * \n and \t escapes), which end the completion when its text contains one.
 *
 * --chat reads one user message per line from stdin and streams the reply
 * as it is generated, keeping the conversation; /reset forgets it, /quit
 * (or end of input) ends. Ctrl-C stops a reply and returns to the prompt;
 * at the prompt it exits (130). It works the same when stdin is a pipe. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "chat_template.h"
#include "cli.h"
#include "dataset.h"
#include "generate.h"
#include "model_load.h"
#include "progress.h"
#include "table_reader.h"
#include "util.h"

#define PROG "generate"

/* ---------------------------------------------------------------- text */

typedef struct {
    char *s;
    size_t len, cap;
} Buf;

static void buf_add(Buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2 + 64;
        b->s = realloc(b->s, b->cap);
        if (!b->s) align_die(PROG, "out of memory");
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

/* Length of the valid UTF-8 sequence starting at s (0 = invalid). */
static int utf8_len(const unsigned char *s, size_t n) {
    int len = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (!len || (size_t)len > n) return 0;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (len == 2 && s[0] < 0xC2) return 0;
    if (len == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0))) return 0;
    if (len == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || s[0] > 0xF4 || (s[0] == 0xF4 && s[1] >= 0x90))) return 0;
    return len;
}

/* A JSON string literal of s[0..n), invalid UTF-8 replaced by U+FFFD. */
static void json_str(FILE *f, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c), i++;
        else if (c == '\n') fputs("\\n", f), i++;
        else if (c == '\t') fputs("\\t", f), i++;
        else if (c == '\r') fputs("\\r", f), i++;
        else if (c < 0x20) fprintf(f, "\\u%04x", c), i++;
        else {
            int l = utf8_len(u + i, n - i);
            if (l) fwrite(u + i, 1, l, f), i += l;
            else fputs("\xEF\xBF\xBD", f), i++;
        }
    }
    fputc('"', f);
}

/* ---------------------------------------------------------------- stops */

typedef struct {
    char **s;
    int n;
    size_t longest;
} StopStrings;

static void stop_add(StopStrings *st, const char *list) {
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n) {
            char *s = malloc(n + 1);
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                if (p[i] == '\\' && i + 1 < n && (p[i + 1] == 'n' || p[i + 1] == 't' || p[i + 1] == '\\')) {
                    s[k++] = p[i + 1] == 'n' ? '\n' : p[i + 1] == 't' ? '\t' : '\\';
                    i++;
                } else {
                    s[k++] = p[i];
                }
            }
            s[k] = 0;
            st->s = realloc(st->s, (st->n + 1) * sizeof(char *));
            st->s[st->n++] = s;
            if (k > st->longest) st->longest = k;
        }
        p += n + (e ? 1 : 0);
    }
}

/* The earliest stop string in text[0..len) that ends at or after `from`
 * (only those can be new), as its start offset; -1 when none. */
static long stop_find(const StopStrings *st, const char *text, size_t len, size_t from) {
    long best = -1;
    size_t lo = from > st->longest ? from - st->longest : 0;
    for (int k = 0; k < st->n; k++) {
        size_t sl = strlen(st->s[k]);
        for (size_t i = lo; i + sl <= len; i++)
            if (!memcmp(text + i, st->s[k], sl) && (best < 0 || (long)i < best)) {
                best = (long)i;
                break;
            }
    }
    return best;
}

/* ---------------------------------------------------------------- run state */

typedef struct {
    Buf text;      /* completion bytes so far */
    long cut;      /* stop string start, -1 when none */
    size_t shown;  /* chat: bytes already printed */
} SeqText;

typedef struct {
    const Tokenizer *tok;
    const GenConfig *gc;
    StopStrings *stops;
    SeqText *seqs;  /* one per output */
    int stream;     /* chat: print as it comes */
    Progress *progress; /* file mode: completions finished so far */
    long finished;
} Run;

static int is_stop_id(const GenConfig *gc, int32_t t) {
    for (int i = 0; i < gc->n_stop_ids; i++)
        if (gc->stop_ids[i] == t) return 1;
    return 0;
}

/* Ctrl-C in --chat, as llama.cpp and Ollama do it: during a reply it stops
 * the reply (the callback below sees the flag) and the prompt comes back;
 * at the prompt it ends the program. The handler exits itself there, so no
 * check can miss a signal that lands just before getline blocks. */
static volatile sig_atomic_t chat_replying, chat_stop;

static void on_chat_sigint(int sig) {
    (void)sig;
    if (chat_replying) {
        chat_stop = 1;
        return;
    }
    (void)!write(STDERR_FILENO, "\n", 1);
    _exit(130);
}

static int on_token(void *ctx, const GenOutput *o) {
    Run *r = ctx;
    if (r->stream && chat_stop) return 1; /* Ctrl-C: end the reply here */
    SeqText *st = &r->seqs[o->prompt_index * r->gc->n_samples + o->sample_index];
    int32_t t = o->tokens[o->n_tokens - 1];
    if (r->progress && (is_stop_id(r->gc, t) || o->n_tokens >= r->gc->max_new_tokens)) {
        r->finished++;
        progress_update(r->progress, r->finished, NULL);
    }
    if (is_stop_id(r->gc, t)) return 0; /* generate_run ends it; its text stays out */
    const char *b;
    size_t n;
    if (tok_token_bytes(r->tok, t, &b, &n)) b = "", n = 0; /* padded vocabulary rows */
    size_t from = st->text.len;
    buf_add(&st->text, b, n);
    if (r->stops->n) st->cut = stop_find(r->stops, st->text.s, st->text.len, from);
    if (r->progress && st->cut >= 0 && o->n_tokens < r->gc->max_new_tokens) { /* a stop string ends it */
        r->finished++;
        progress_update(r->progress, r->finished, NULL);
    }
    if (r->stream) {
        /* hold back what could still become a stop string */
        size_t upto = st->cut >= 0 ? (size_t)st->cut : st->text.len;
        if (st->cut < 0 && r->stops->n) upto = upto > r->stops->longest - 1 ? upto - (r->stops->longest - 1) : 0;
        if (upto > st->shown) {
            fwrite(st->text.s + st->shown, 1, upto - st->shown, stdout);
            fflush(stdout);
            st->shown = upto;
        }
    }
    return st->cut >= 0;
}

/* Completion text length: up to the stop string when one was found. */
static size_t seq_text_len(const SeqText *st) { return st->cut >= 0 ? (size_t)st->cut : st->text.len; }

/* ---------------------------------------------------------------- main */

typedef struct {
    const char *model, *prompts, *out, *stop, *chat_template, *device, *system, *sheet;
    int max_new_tokens, top_k, n, seed, batch_size, chat, max_length, skip_bad, prefill_chunk;
    float temperature, top_p;
} Args;

static void stop_ids_add(int32_t *ids, int *n, int32_t id) {
    if (id < 0) return;
    for (int i = 0; i < *n; i++)
        if (ids[i] == id) return;
    ids[(*n)++] = id;
}

static void write_record(FILE *f, const Tokenizer *tok, long index, const int32_t *prompt, int n_prompt,
                         const GenOutput *o, const SeqText *st) {
    size_t plen;
    char *ptext = tok_decode(tok, prompt, n_prompt, &plen);
    if (!ptext) align_die_error(PROG);
    fprintf(f, "{\"index\":%ld,\"sample\":%d,\"prompt\":", index, o->sample_index);
    json_str(f, ptext, plen);
    fputs(",\"completion\":", f);
    json_str(f, st->text.s ? st->text.s : "", seq_text_len(st));
    fputs(",\"tokens\":[", f);
    for (int k = 0; k < o->n_tokens; k++) fprintf(f, "%s%d", k ? "," : "", o->tokens[k]);
    fputs("],\"logprobs\":[", f);
    for (int k = 0; k < o->n_tokens; k++) fprintf(f, "%s%.7g", k ? "," : "", o->logprobs[k]);
    fprintf(f, "],\"finish_reason\":\"%s\"}\n", generate_finish_name(o->finish));
    free(ptext);
}

/* A failed write (a full disk, a closed pipe) is an error naming where the
 * records went: the stream's error flag is sticky, so checking it after
 * each record covers every fputs/fprintf/fwrite before it. Callers clear
 * errno before writing, so the reason shown is the failed write's. */
static int check_written(FILE *f, const char *name, int flush) {
    if ((flush && fflush(f)) || ferror(f))
        return align_errorf("%s: write failed (%s); the output is incomplete", name, errno ? strerror(errno) : "I/O error");
    return 0;
}

static int run_file(const Args *a, Model *m, const Tokenizer *tok, ChatTemplate tmpl, GenConfig *gc, StopStrings *stops) {
    DsOptions opt;
    ds_options_default(&opt);
    opt.kind = DS_PROMPT;
    opt.chat_template = tmpl;
    opt.skip_bad = a->skip_bad;
    opt.sheet = a->sheet;
    if (a->max_length > 0) {
        if (a->max_length <= a->max_new_tokens)
            return align_errorf("--max-length %d leaves no room for a prompt with --max-new-tokens %d", a->max_length, a->max_new_tokens);
        opt.max_prompt_length = a->max_length - a->max_new_tokens;
    }
    DsReader *rd = ds_reader_open(a->prompts, tok, &opt);
    if (!rd) return align_error_prefix("--prompts");
    FILE *f = stdout;
    if (a->out && !(f = fopen(a->out, "w"))) {
        ds_reader_close(rd);
        return align_errorf("--out %s: cannot open for writing", a->out);
    }
    /* chunks of records: enough to keep every slot busy, bounded memory */
    int chunk = a->batch_size * 8 > 64 ? a->batch_size * 8 : 64;
    int32_t **ptoks = calloc(chunk, sizeof *ptoks);
    GenPrompt *gp = calloc(chunk, sizeof *gp);
    GenOutput *out = calloc((size_t)chunk * gc->n_samples, sizeof *out);
    SeqText *seqs = calloc((size_t)chunk * gc->n_samples, sizeof *seqs);
    long base = 0, n_tokens = 0;
    int rc = 0, done = 0;
    char where[4200];
    if (a->out) snprintf(where, sizeof where, "--out %s", a->out);
    else snprintf(where, sizeof where, "standard output");
    double t0 = align_now();
    Progress progress;
    /* one record a line for JSONL; a table's lines (a header, quoted
     * newlines, a zip) do not count its rows, so its total stays unknown */
    long n_lines = table_is_table_path(a->prompts) ? -1 : progress_count_lines(a->prompts);
    progress_start(&progress, PROG, "completion", 0, n_lines > 0 ? n_lines * gc->n_samples : 0);
    while (!done && rc == 0) {
        int np = 0;
        while (np < chunk) {
            DsExample ex;
            int r = ds_reader_next(rd, &ex);
            if (r < 0) {
                rc = -1;
                break;
            }
            if (r == 0) {
                done = 1;
                break;
            }
            if (ex.n_prompt == 0) {
                rc = align_errorf("%s: record %ld has an empty prompt", a->prompts, ex.line);
                break;
            }
            ptoks[np] = malloc(ex.n_prompt * sizeof(int32_t));
            memcpy(ptoks[np], ex.prompt, ex.n_prompt * sizeof(int32_t));
            gp[np] = (GenPrompt){ptoks[np], ex.n_prompt};
            np++;
        }
        if (rc == 0 && np > 0) {
            int no = np * gc->n_samples;
            for (int i = 0; i < no; i++) seqs[i] = (SeqText){.cut = -1};
            Run run = {.tok = tok, .gc = gc, .stops = stops, .seqs = seqs, .progress = &progress,
                       .finished = base * gc->n_samples};
            gc->prompt_index_base = base;
            if (generate_run(m, gc, gp, np, out, on_token, &run)) rc = -1;
            for (int i = 0; rc == 0 && i < no; i++) {
                errno = 0;
                write_record(f, tok, base + out[i].prompt_index, gp[out[i].prompt_index].tokens,
                             gp[out[i].prompt_index].n_tokens, &out[i], &seqs[i]);
                n_tokens += out[i].n_tokens;
                rc = check_written(f, where, 0);
            }
            generate_outputs_free(out, no);
            for (int i = 0; i < no; i++) free(seqs[i].text.s);
            base += np;
            progress_update(&progress, base * gc->n_samples, NULL); /* exact at each chunk's end */
        }
        for (int i = 0; i < np; i++) free(ptoks[i]);
        errno = 0;
        if (rc == 0) rc = check_written(f, where, 1);
    }
    size_t n_bad = 0;
    ds_reader_counts(rd, &n_bad, NULL, NULL);
    if (rc == 0 && base == 0) rc = align_errorf("%s: no prompts", a->prompts);
    double dt = align_now() - t0;
    if (rc == 0) progress_finish(&progress, NULL);
    else progress_break(&progress);
    if (rc == 0)
        fprintf(stderr, "%s: %ld prompts x %d samples, %ld tokens in %.1f s (%.1f tokens/s)%s\n", PROG, base,
                gc->n_samples, n_tokens, dt, n_tokens / (dt > 0 ? dt : 1), n_bad ? ", some records skipped" : "");
    if (n_bad) fprintf(stderr, "%s: skipped %zu bad records; the first: %s\n", PROG, n_bad, ds_reader_first_bad(rd));
    ds_reader_close(rd);
    errno = 0;
    if (rc == 0) rc = check_written(f, where, 1);
    if (f != stdout && fclose(f) && rc == 0)
        rc = align_errorf("%s: write failed (%s); the output is incomplete", where, errno ? strerror(errno) : "I/O error");
    free(ptoks), free(gp), free(out), free(seqs);
    return rc;
}

/* Tokens of the conversation so far plus the assistant header, through the
 * dataset reader (control tokens by id, content with specials disallowed). */
static int chat_tokens(cJSON *msgs, const Tokenizer *tok, ChatTemplate tmpl, DsExample *ex) {
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(rec, "messages", msgs);
    char *json = cJSON_PrintUnformatted(rec);
    cJSON_Delete(rec);
    DsOptions opt;
    ds_options_default(&opt);
    opt.kind = DS_PROMPT;
    opt.chat_template = tmpl;
    int r = ds_parse_record(json, strlen(json), "chat", tok, &opt, ex);
    free(json);
    return r == 1 ? 0 : -1;
}

static void add_message(cJSON *msgs, const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
}

static cJSON *new_conversation(const Args *a) {
    cJSON *msgs = cJSON_CreateArray();
    if (a->system && *a->system) add_message(msgs, "system", a->system);
    return msgs;
}

static int run_chat(const Args *a, Model *m, const Tokenizer *tok, ChatTemplate tmpl, GenConfig *gc, StopStrings *stops) {
    int tty = isatty(0);
    if (tty)
        fprintf(stderr, "%s: chat with %s (template %s); /reset starts over, /quit or Ctrl-D ends, Ctrl-C stops a reply\n", PROG, a->model,
                chat_template_name(tmpl));
    gc->n_samples = 1;
    struct sigaction sa = {0}, old_int;
    sa.sa_handler = on_chat_sigint;
    sa.sa_flags = SA_RESTART; /* a write to stdout must not fail with EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    cJSON *msgs = new_conversation(a);
    char *line = NULL;
    size_t cap = 0;
    long turn = 0;
    for (;;) {
        if (tty) fputs("> ", stderr);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            cJSON_Delete(msgs);
            msgs = new_conversation(a);
            printf("[conversation reset]\n");
            fflush(stdout);
            continue;
        }
        if (!n) continue;
        add_message(msgs, "user", line);
        DsExample ex;
        if (chat_tokens(msgs, tok, tmpl, &ex)) {
            fprintf(stderr, "%s: %s\n", PROG, align_error());
            cJSON_DeleteItemFromArray(msgs, cJSON_GetArraySize(msgs) - 1);
            continue;
        }
        GenPrompt p = {ex.prompt, ex.n_prompt};
        GenOutput o;
        SeqText st = {.cut = -1};
        Run run = {.tok = tok, .gc = gc, .stops = stops, .seqs = &st, .stream = 1};
        gc->prompt_index_base = turn++;
        chat_stop = 0;
        chat_replying = 1;
        int rc = generate_run(m, gc, &p, 1, &o, on_token, &run);
        chat_replying = 0;
        int stopped = chat_stop;
        chat_stop = 0;
        ds_example_free(&ex);
        if (rc) {
            /* e.g. the conversation outgrew the model: keep the session */
            fprintf(stderr, "\n%s: %s (try /reset)\n", PROG, align_error());
            cJSON_DeleteItemFromArray(msgs, cJSON_GetArraySize(msgs) - 1);
            generate_outputs_free(&o, 1);
            free(st.text.s);
            continue;
        }
        size_t len = seq_text_len(&st);
        if (len > st.shown) fwrite(st.text.s + st.shown, 1, len - st.shown, stdout);
        if (o.finish == GEN_FINISH_LENGTH && tty) fputs(" [max new tokens]", stdout);
        if (stopped && tty) fputs(" [stopped]", stdout);
        errno = 0; /* the reply's writes happened since; a flush that fails sets it */
        putchar('\n');
        if (check_written(stdout, "standard output", 1)) {
            free(st.text.s);
            generate_outputs_free(&o, 1);
            free(line);
            cJSON_Delete(msgs);
            sigaction(SIGINT, &old_int, NULL);
            return -1;
        }
        char *reply = malloc(len + 1);
        memcpy(reply, st.text.s ? st.text.s : "", len);
        reply[len] = 0;
        add_message(msgs, "assistant", reply); /* the part shown stays in the conversation */
        if (stopped && !tty) fprintf(stderr, "%s: reply stopped (Ctrl-C); Ctrl-C at the prompt or end of input exits\n", PROG);
        free(reply);
        free(st.text.s);
        generate_outputs_free(&o, 1);
    }
    free(line);
    cJSON_Delete(msgs);
    sigaction(SIGINT, &old_int, NULL);
    return 0;
}

int main(int argc, char **argv) {
    Args a = {.max_new_tokens = 256, .temperature = 1.0f, .top_p = 1.0f, .n = 1, .batch_size = 8,
              .device = "cpu", .prefill_chunk = 512};
    CliFlag flags[] = {
        {"model", CLI_STRING, &a.model, "model: .ckpt, .gguf or a Hugging Face directory"},
        {"prompts", CLI_STRING, &a.prompts, "prompt records (JSONL, .json, .csv, .tsv or .xlsx): {prompt}, {messages}, {question}, or preference/SFT records"},
        {"sheet", CLI_STRING, &a.sheet, "the worksheet of an .xlsx --prompts file (default: the first)"},
        {"out", CLI_STRING, &a.out, "write JSONL here (default stdout)"},
        {"chat", CLI_BOOL, &a.chat, "interactive chat on stdin/stdout (/reset, /quit)"},
        {"system", CLI_STRING, &a.system, "--chat: a system message opening the conversation"},
        {"max-new-tokens", CLI_INT, &a.max_new_tokens, "most tokens generated per completion", CLI_AT_LEAST_1},
        {"temperature", CLI_FLOAT, &a.temperature, "sampling temperature; 0 = greedy", CLI_NONNEG},
        {"top-p", CLI_FLOAT, &a.top_p, "nucleus sampling: keep the smallest set reaching this probability (1 = off)", CLI_UNIT_POS},
        {"top-k", CLI_INT, &a.top_k, "keep only the k most likely tokens (0 = off)", CLI_NONNEG},
        {"n", CLI_INT, &a.n, "completions per prompt", CLI_AT_LEAST_1},
        {"seed", CLI_INT, &a.seed, "seed of the draws (each completion's from seed, record and sample index)", CLI_ANY},
        {"stop", CLI_STRING, &a.stop, "stop strings, comma-separated or repeated (\\n, \\t escapes)"},
        {"batch-size", CLI_INT, &a.batch_size, "sequences decoded together (KV-cache slots)", CLI_AT_LEAST_1},
        {"prefill-chunk", CLI_INT, &a.prefill_chunk, "most prompt tokens fed per step", CLI_AT_LEAST_1},
        {"max-length", CLI_INT, &a.max_length, "prompt + completion tokens; longer prompts keep their end (0 = no limit)", CLI_NONNEG},
        {"chat-template", CLI_STRING, &a.chat_template, "none, chatml, llama3, hh or a model family (qwen2.5, qwen3, llama3.1, gemma3, phi4, mistral-v7, ...; default: the model's own)"},
        {"device", CLI_STRING, &a.device, "cpu or cuda"},
        {"skip-bad", CLI_BOOL, &a.skip_bad, "skip and count bad records instead of stopping"},
    };
    CliSpec spec = {.prog = PROG,
                    .usage = "generate --model M --prompts F [--out FILE] [flags]   |   generate --model M --chat",
                    .about = "Samples completions of prompts with a KV cache and continuous batching; writes JSON Lines "
                             "{index, sample, prompt, completion, tokens, logprobs, finish_reason}. --chat runs an "
                             "interactive conversation that streams the reply.",
                    .flags = flags, .n_flags = (int)(sizeof flags / sizeof *flags)};
    cli_parse_or_exit(&spec, argc, argv);
    if (!a.model) align_die(PROG, "--model is required (see --help)");
    if (!a.chat && !a.prompts) align_die(PROG, "--prompts is required unless --chat (see --help)");

    GenConfig gc;
    generate_config_defaults(&gc);
    gc.sampler.temperature = a.temperature, gc.sampler.top_k = a.top_k, gc.sampler.top_p = a.top_p;
    if (sampler_config_validate(&gc.sampler)) align_die(PROG, "%s", align_error());
    gc.max_new_tokens = a.max_new_tokens, gc.n_samples = a.n, gc.seed = (uint64_t)(int64_t)a.seed;
    gc.n_slots = a.batch_size, gc.prefill_chunk = a.prefill_chunk;

    /* every --stop on the command line (cli keeps only the last), or the config's */
    StopStrings stops = {0};
    int from_argv = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stop") && i + 1 < argc) stop_add(&stops, argv[++i]), from_argv = 1;
        else if (!strncmp(argv[i], "--stop=", 7)) stop_add(&stops, argv[i] + 7), from_argv = 1;
    }
    if (!from_argv && a.stop) stop_add(&stops, a.stop);

    const Backend *be = backend_get(a.device);
    if (!be) align_die(PROG, "--device: %s", align_error());
    ModelBundle mb;
    /* a quantised GGUF runs on its own blocks where the backend multiplies
     * them in integers (the CPU), as llama.cpp does */
    int load_flags = MODEL_LOAD_TOKENIZER | (be->matmul_forward_q_int8 ? MODEL_LOAD_GGUF_BLOCKS : 0);
    if (model_load_any(a.model, be, load_flags, &mb)) align_die(PROG, "--model %s: %s", a.model, align_error());
    Model *m = mb.model;
    if (!m->cfg.lm_head) align_die(PROG, "--model %s has no LM head (it is a reward/value model)", a.model);

    ChatTemplate tmpl;
    int chosen = chat_template_choose(a.chat_template, mb.extras.chat_template, mb.extras.chat_template_jinja, &tmpl);
    if (chosen < 0) align_die_error(PROG);
    if (chosen == CHAT_DETECT_UNKNOWN) {
        fprintf(stderr, "%s: warning: %s has a chat template align cannot render; using none (set --chat-template)\n",
                PROG, a.model);
    }

    int32_t stop_ids[4];
    int n_stop = 0;
    stop_ids_add(stop_ids, &n_stop, tok_eos_id(mb.tok));
    stop_ids_add(stop_ids, &n_stop, m->cfg.eos_id);
    const char *marker = chat_template_end_marker(tmpl);
    if (marker) stop_ids_add(stop_ids, &n_stop, tok_token_id(mb.tok, marker));
    for (int i = 0; i < n_stop; i++)
        if (stop_ids[i] >= m->cfg.vocab_size) stop_ids[i--] = stop_ids[--n_stop];
    gc.stop_ids = stop_ids, gc.n_stop_ids = n_stop;

    int rc = a.chat ? run_chat(&a, m, mb.tok, tmpl, &gc, &stops) : run_file(&a, m, mb.tok, tmpl, &gc, &stops);
    if (rc) align_die(PROG, "%s", align_error());
    for (int i = 0; i < stops.n; i++) free(stops.s[i]);
    free(stops.s);
    model_bundle_free(&mb);
    cli_free(&spec);
    return 0;
}
