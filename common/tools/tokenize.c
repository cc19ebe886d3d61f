/* tokenize: text in, token ids out, and back.
 *
 *   tokenize --model M [--special] < lines.txt           one line of ids per line
 *   tokenize --model M --data F.jsonl --field NAME        one line of ids per record
 *   tokenize --model M --decode < ids.txt                 one line of text per line
 *
 * M is a tokenizer.json, a directory holding tokenizer.json (any Hugging Face
 * model directory) or GPT-2's encoder.json + vocab.bpe, or a .ckpt / .gguf
 * model (through model_load_any, which loads the weights too: slower, but
 * the tokenizer is then exactly the one the model carries). All tokenizer
 * finding is in load_tokenizer_for_model. The program only parses flags and
 * streams lines; a bad line stops it with "FILE:LINE: reason" and exit 1. */
#define _GNU_SOURCE
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_load.h"
#include "tokenizer.h"
#include "util.h"

static const char *PROG = "tokenize";

static void usage(FILE *out) {
    fprintf(out,
            "usage: tokenize --model M [--special] [--data F.jsonl --field NAME] [--decode]\n"
            "\n"
            "Encode text lines from stdin to token ids (space-separated, one line per input\n"
            "line), or decode ids back to text.\n"
            "  --model M      tokenizer.json; a directory with tokenizer.json or with GPT-2's\n"
            "                 encoder.json + vocab.bpe; or a .ckpt / .gguf model\n"
            "  --data F       read JSON Lines from F instead of text lines from stdin\n"
            "  --field NAME   the string field of each --data record to encode (default text)\n"
            "  --special      special-token strings in the input (\"<|endoftext|>\") become\n"
            "                 their ids; by default they are encoded as plain text\n"
            "  --decode       read lines of ids from stdin and print the text of each line\n"
            "  --help         show this help\n"
            "exit status: 0 on success, 1 on any error (message on stderr)\n");
}

static int file_exists(const char *dir, const char *name, char *buf, size_t cap) {
    struct stat sb;
    snprintf(buf, cap, "%s/%s", dir, name);
    return stat(buf, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Every way a --model path can name a tokenizer. */
static Tokenizer *load_tokenizer_for_model(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        align_errorf("--model %s: no such file or directory", path);
        return NULL;
    }
    char a[4096], b[4096];
    if (S_ISDIR(sb.st_mode)) {
        if (file_exists(path, "tokenizer.json", a, sizeof a)) return tok_load_hf_file(a);
        if (file_exists(path, "encoder.json", a, sizeof a) && file_exists(path, "vocab.bpe", b, sizeof b))
            return tok_load_gpt2_files(a, b);
        align_errorf("--model %s: the directory has no tokenizer.json and no encoder.json + vocab.bpe", path);
        return NULL;
    }
    if (ends_with(path, ".json")) return tok_load_hf_file(path);
    ModelBundle mb;
    if (model_load_any(path, &backend_cpu, MODEL_LOAD_TOKENIZER, &mb) != 0) return NULL;
    Tokenizer *t = mb.tok;
    mb.tok = NULL;
    model_bundle_free(&mb);
    return t;
}

static void print_ids(const int32_t *ids, int n) {
    char buf[16];
    for (int i = 0; i < n; i++) {
        int k = snprintf(buf, sizeof buf, i ? " %d" : "%d", (int)ids[i]);
        fwrite(buf, 1, (size_t)k, stdout);
    }
    fputc('\n', stdout);
}

static void encode_line(const Tokenizer *t, const char *s, size_t n, int special, const char *where) {
    int32_t *ids = NULL;
    int k = 0;
    if (tok_encode(t, s, n, special, &ids, &k) != 0) {
        align_error_prefix("%s", where);
        align_die_error(PROG);
    }
    print_ids(ids, k);
    free(ids);
}

static void encode_jsonl(const Tokenizer *t, const char *path, const char *fieldname, int special) {
    FILE *f = fopen(path, "rb");
    if (!f) align_die(PROG, "--data %s: cannot open: %s", path, strerror(errno));
    char *line = NULL, where[4200];
    size_t cap = 0;
    long lineno = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        size_t n = (size_t)got;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) n--;
        if (n == 0) continue;
        cJSON *o = cJSON_ParseWithLength(line, n);
        if (!o) align_die(PROG, "%s: not valid JSON", where);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, fieldname);
        if (!v) align_die(PROG, "%s: missing field \"%s\"", where, fieldname);
        if (!cJSON_IsString(v)) align_die(PROG, "%s: field \"%s\" is not a string", where, fieldname);
        encode_line(t, v->valuestring, strlen(v->valuestring), special, where);
        cJSON_Delete(o);
    }
    if (ferror(f)) align_die(PROG, "%s: read error", path);
    free(line);
    fclose(f);
}

static void decode_stream(const Tokenizer *t) {
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    ssize_t got;
    int vocab = tok_vocab_size(t);
    int32_t *ids = NULL;
    size_t ids_cap = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t n_ids = 0;
        char *p = line;
        for (;;) {
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
            if (!*p) break;
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || (*end && !strchr(" \t\r\n,", *end))) {
                size_t w = strcspn(p, " \t\r\n,");
                align_die(PROG, "stdin:%ld: \"%.*s\" is not a token id", lineno, (int)(w > 40 ? 40 : w), p);
            }
            if (v < 0 || v >= vocab)
                align_die(PROG, "stdin:%ld: token id %ld is outside the vocabulary (0..%d)", lineno, v, vocab - 1);
            if (n_ids == ids_cap) {
                ids_cap = ids_cap ? 2 * ids_cap : 256;
                ids = realloc(ids, ids_cap * sizeof *ids);
                if (!ids) align_die(PROG, "out of memory");
            }
            ids[n_ids++] = (int32_t)v;
            p = end;
        }
        size_t len = 0;
        char *text = tok_decode(t, ids, (int)n_ids, &len);
        if (!text) {
            align_error_prefix("stdin:%ld", lineno);
            align_die_error(PROG);
        }
        fwrite(text, 1, len, stdout);
        fputc('\n', stdout);
        free(text);
    }
    free(ids);
    free(line);
}

int main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *fieldname = NULL;
    int decode = 0, special = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--data") || !strcmp(a, "--field")) {
            if (++i >= argc) align_die(PROG, "%s needs a value", a);
            if (!strcmp(a, "--model")) model = argv[i];
            else if (!strcmp(a, "--data")) data = argv[i];
            else fieldname = argv[i];
        } else if (!strcmp(a, "--decode")) {
            decode = 1;
        } else if (!strcmp(a, "--special")) {
            special = 1;
        } else {
            usage(stderr);
            align_die(PROG, "unknown argument %s", a);
        }
    }
    if (!model) {
        usage(stderr);
        align_die(PROG, "--model is required");
    }
    if (decode && (data || fieldname)) align_die(PROG, "--decode reads ids from stdin; --data and --field are for encoding");
    if (fieldname && !data) align_die(PROG, "--field needs --data");
    Tokenizer *t = load_tokenizer_for_model(model);
    if (!t) align_die_error(PROG);
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    if (decode) {
        decode_stream(t);
    } else if (data) {
        encode_jsonl(t, data, fieldname ? fieldname : "text", special);
    } else {
        char *line = NULL;
        size_t cap = 0;
        long lineno = 0;
        ssize_t got;
        char where[64];
        while ((got = getline(&line, &cap, stdin)) >= 0) {
            lineno++;
            snprintf(where, sizeof where, "stdin:%ld", lineno);
            size_t n = (size_t)got;
            if (n && line[n - 1] == '\n') n--;
            encode_line(t, line, n, special, where);
        }
        free(line);
    }
    tok_free(t);
    if (fflush(stdout) != 0 || ferror(stdout)) align_die(PROG, "cannot write the output: %s", strerror(errno));
    return 0;
}
