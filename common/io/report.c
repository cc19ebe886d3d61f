#include "report.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* report_page.html, embedded at build time (embed.cmake): the style and
 * the drawing script, with DATA_MARKER where the JSON goes */
extern const char report_page_html[];
#define DATA_MARKER "/*REPORT_DATA*/"


typedef enum { IN_OTHER, IN_METRICS, IN_SAMPLES } InKind;

typedef struct {
    char *path;
    InKind kind;
    double mtime;
} Input;

/* The kind of a JSONL file from its first record. */
static InKind classify(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return IN_OTHER;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    InKind k = IN_OTHER;
    while ((n = getline(&line, &cap, f)) > 0) {
        const char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p) continue;
        cJSON *o = cJSON_ParseWithLength(line, n);
        if (cJSON_IsObject(o)) {
            if (cJSON_IsString(cJSON_GetObjectItem(o, "completion")) && cJSON_GetObjectItem(o, "finish_reason")) k = IN_SAMPLES;
            else if (cJSON_IsNumber(cJSON_GetObjectItem(o, "step")) && !cJSON_GetObjectItem(o, "prompt")) k = IN_METRICS;
        }
        cJSON_Delete(o);
        break;
    }
    free(line);
    fclose(f);
    return k;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static int add_input(Input **in, int *n, const char *path, InKind kind) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*in)[i].path, path)) return 0;
    Input *t = realloc(*in, (*n + 1) * sizeof **in);
    if (!t) return align_errorf("out of memory");
    *in = t;
    struct stat st;
    double mt = stat(path, &st) == 0 ? st.st_mtim.tv_sec + st.st_mtim.tv_nsec * 1e-9 : 0;
    t[(*n)++] = (Input){strdup(path), kind, mt};
    return 0;
}

static int scan_dir(Input **in, int *n, const char *dir, int flags) {
    DIR *d = opendir(dir);
    if (!d) return align_errorf("%s: cannot read the directory (%s)", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !has_suffix(e->d_name, ".jsonl")) continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        snprintf(p, len, "%s/%s", dir, e->d_name);
        InKind k = classify(p);
        if (k == IN_SAMPLES || (k == IN_METRICS && (flags & REPORT_DIR_METRICS))) rc = add_input(in, n, p, k);
        free(p);
    }
    closedir(d);
    return rc;
}

/* oldest first, then by name: samples read as before -> after */
static int by_time(const void *a, const void *b) {
    const Input *x = a, *y = b;
    if (x->mtime != y->mtime) return x->mtime < y->mtime ? -1 : 1;
    return strcmp(x->path, y->path);
}

/* "dir/name" without .jsonl; the directory only when it tells runs apart */
static char *label(const Input *in, int n, int i) {
    const char *path = in[i].path, *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base) - (has_suffix(base, ".jsonl") ? 6 : 0);
    int clash = 0;
    for (int j = 0; j < n; j++) {
        if (j == i || in[j].kind != in[i].kind) continue;
        const char *b = strrchr(in[j].path, '/');
        b = b ? b + 1 : in[j].path;
        if (!strncmp(b, base, bl) && (b[bl] == 0 || !strcmp(b + bl, ".jsonl"))) clash = 1;
    }
    size_t start = base - path;
    if (clash && start > 1) { /* include the parent directory's name */
        size_t s = start - 1;
        while (s > 0 && path[s - 1] != '/') s--;
        start = s;
    }
    size_t len = base - path - start + bl;
    char *out = malloc(len + 1);
    memcpy(out, path + start, len);
    out[len] = 0;
    return out;
}

/* One run: {"name", "path", "rows", "series": {key: [[step, value], ...]},
 * "eval": [{"step", "eval_...": v}, ...]}. */
static cJSON *read_metrics(const char *path, const char *name) {
    FILE *f = fopen(path, "r");
    if (!f) {
        align_errorf("%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    cJSON *run = cJSON_CreateObject(), *series = cJSON_CreateObject(), *eval = cJSON_CreateArray();
    cJSON_AddStringToObject(run, "name", name);
    cJSON_AddStringToObject(run, "path", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0, rows = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        cJSON *o = cJSON_ParseWithLength(line, n);
        cJSON *st = cJSON_GetObjectItem(o, "step");
        if (!cJSON_IsObject(o) || !cJSON_IsNumber(st)) { /* a torn last line of a killed run: skip */
            cJSON_Delete(o);
            continue;
        }
        rows++;
        int is_eval = 0;
        cJSON *it;
        cJSON_ArrayForEach(it, o) {
            if (!cJSON_IsNumber(it) || !strcmp(it->string, "step")) continue;
            if (!strncmp(it->string, "eval_", 5)) is_eval = 1;
            cJSON *s = cJSON_GetObjectItem(series, it->string);
            if (!s) cJSON_AddItemToObject(series, it->string, s = cJSON_CreateArray());
            cJSON *pt = cJSON_CreateArray();
            cJSON_AddItemToArray(pt, cJSON_CreateNumber(st->valuedouble));
            cJSON_AddItemToArray(pt, cJSON_CreateNumber(it->valuedouble));
            cJSON_AddItemToArray(s, pt);
        }
        if (is_eval) cJSON_AddItemToArray(eval, cJSON_Duplicate(o, 1));
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    cJSON_AddNumberToObject(run, "rows", rows);
    cJSON_AddItemToObject(run, "series", series);
    cJSON_AddItemToObject(run, "eval", eval);
    return run;
}

#define MAX_PROMPTS 200
#define MAX_TEXT 6000

/* cJSON string of s, cut to MAX_TEXT bytes at a character boundary */
static cJSON *text_item(const char *s) {
    size_t n = strlen(s);
    if (n <= MAX_TEXT) return cJSON_CreateString(s);
    size_t k = MAX_TEXT;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    char *t = malloc(k + 4);
    memcpy(t, s, k);
    memcpy(t + k, "\xE2\x80\xA6", 4); /* ... */
    cJSON *c = cJSON_CreateString(t);
    free(t);
    return c;
}

/* Adds set `col` of n_cols to prompts: [{"prompt", "completions": [...]}]. */
static int read_samples(const char *path, int col, int n_cols, cJSON *prompts) {
    FILE *f = fopen(path, "r");
    if (!f) return align_errorf("%s: cannot open (%s)", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        cJSON *o = cJSON_ParseWithLength(line, n);
        cJSON *pr = cJSON_GetObjectItem(o, "prompt"), *co = cJSON_GetObjectItem(o, "completion"),
              *sa = cJSON_GetObjectItem(o, "sample");
        if (!cJSON_IsString(pr) || !cJSON_IsString(co) || (cJSON_IsNumber(sa) && sa->valueint != 0)) {
            cJSON_Delete(o);
            continue;
        }
        cJSON *row = NULL, *it;
        cJSON_ArrayForEach(it, prompts) {
            if (!strcmp(cJSON_GetObjectItem(it, "key")->valuestring, pr->valuestring)) {
                row = it;
                break;
            }
        }
        if (!row && cJSON_GetArraySize(prompts) < MAX_PROMPTS) {
            row = cJSON_CreateObject();
            cJSON_AddStringToObject(row, "key", pr->valuestring);
            cJSON_AddItemToObject(row, "prompt", text_item(pr->valuestring));
            cJSON *cs = cJSON_AddArrayToObject(row, "completions");
            for (int i = 0; i < n_cols; i++) cJSON_AddItemToArray(cs, cJSON_CreateNull());
            cJSON_AddItemToArray(prompts, row);
        }
        if (row) {
            cJSON *cs = cJSON_GetObjectItem(row, "completions");
            if (cJSON_IsNull(cJSON_GetArrayItem(cs, col))) {
                cJSON *fr = cJSON_GetObjectItem(o, "finish_reason");
                cJSON *c = cJSON_CreateObject();
                cJSON_AddItemToObject(c, "text", text_item(co->valuestring));
                cJSON_AddStringToObject(c, "finish", cJSON_IsString(fr) ? fr->valuestring : "");
                cJSON_ReplaceItemInArray(cs, col, c);
            }
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return 0;
}

/* JSON inside <script>: "<" escaped so no "</script>" can end it early */
static int write_json_script(FILE *f, const char *json) {
    for (const char *p = json; *p; p++) {
        if (*p == '<') fputs("\\u003c", f);
        else fputc(*p, f);
    }
    return 0;
}

int report_write(const char *out_path, const char *const *inputs, int n_inputs, int flags) {
    Input *in = NULL;
    int n = 0, rc = -1;
    cJSON *doc = NULL;
    FILE *f = NULL;
    char *tmp = NULL, *json = NULL;
    for (int i = 0; i < n_inputs; i++) {
        struct stat st;
        if (stat(inputs[i], &st) != 0) {
            align_errorf("%s: %s", inputs[i], strerror(errno));
            goto done;
        }
        if (S_ISDIR(st.st_mode)) {
            if (scan_dir(&in, &n, inputs[i], flags)) goto done;
        } else {
            InKind k = classify(inputs[i]);
            if (k == IN_OTHER) {
                align_errorf("%s: neither a metrics JSONL (objects with \"step\") nor generate output (\"completion\")", inputs[i]);
                goto done;
            }
            if (add_input(&in, &n, inputs[i], k)) goto done;
        }
    }
    qsort(in, n, sizeof *in, by_time);
    doc = cJSON_CreateObject();
    cJSON *runs = cJSON_AddArrayToObject(doc, "runs"), *sets = cJSON_AddArrayToObject(doc, "sets"),
          *prompts = cJSON_AddArrayToObject(doc, "prompts");
    int n_sets = 0;
    for (int i = 0; i < n; i++) n_sets += in[i].kind == IN_SAMPLES;
    for (int i = 0, col = 0; i < n; i++) {
        char *name = label(in, n, i);
        if (in[i].kind == IN_METRICS) {
            cJSON *run = read_metrics(in[i].path, name);
            if (!run) {
                free(name);
                goto done;
            }
            cJSON_AddItemToArray(runs, run);
        } else {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddStringToObject(s, "name", name);
            cJSON_AddStringToObject(s, "path", in[i].path);
            cJSON_AddItemToArray(sets, s);
            if (read_samples(in[i].path, col++, n_sets, prompts)) {
                free(name);
                goto done;
            }
        }
        free(name);
    }
    if (!cJSON_GetArraySize(runs) && !cJSON_GetArraySize(sets)) {
        align_errorf("no metrics JSONL and no generate output among the inputs");
        goto done;
    }
    cJSON *it;
    cJSON_ArrayForEach(it, prompts) cJSON_DeleteItemFromObject(it, "key");
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&now));
    cJSON_AddStringToObject(doc, "generated", when);
    json = cJSON_PrintUnformatted(doc);
    size_t tl = strlen(out_path) + 16;
    tmp = malloc(tl);
    snprintf(tmp, tl, "%s.tmp", out_path);
    if (!json || !(f = fopen(tmp, "w"))) {
        align_errorf("%s: cannot write (%s)", out_path, strerror(errno));
        goto done;
    }
    const char *mark = strstr(report_page_html, DATA_MARKER);
    fwrite(report_page_html, 1, mark - report_page_html, f);
    write_json_script(f, json);
    fputs(mark + strlen(DATA_MARKER), f);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    f = NULL;
    if (bad || rename(tmp, out_path) != 0) {
        align_errorf("%s: write failed (%s)", out_path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
done:
    if (f) fclose(f);
    free(tmp);
    free(json);
    cJSON_Delete(doc);
    for (int i = 0; i < n; i++) free(in[i].path);
    free(in);
    return rc;
}
