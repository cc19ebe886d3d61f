/* table_reader: CSV/TSV (libcsv) and .xlsx (libzip + libxml2) rows as JSON
 * records (see table_reader.h for the rules).
 *
 * Both formats end in the same place: a header (column names) and, per
 * row, cells indexed by column, which table_row_json turns into the JSON
 * object dataset.c parses. CSV is fed to libcsv one line at a time, so the
 * line a record starts on is known and a file is never held whole; libcsv
 * reports finished fields and rows through callbacks, which fill a small
 * queue that table_next drains. */
#define _GNU_SOURCE
#include "table_reader.h"

#include <cJSON.h>
#include <csv.h>
#include <ctype.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlreader.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zip.h>

#include "dataset.h"
#include "util.h"

/* The largest zip entry read whole (workbook.xml and its relationships,
 * a few KB): a guard against a zip bomb. The sheet and the shared strings
 * are streamed. */
#define TABLE_MAX_XML ((zip_uint64_t)64 << 20)

static int ends_with_ci(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

int table_is_table_path(const char *path) {
    return ends_with_ci(path, ".csv") || ends_with_ci(path, ".tsv") || ends_with_ci(path, ".xlsx");
}

/* ============================================================ JSON rows */

static const char *const TEXT_COLUMNS[] = {"prompt", "question", "answer", "completion",
                                           "chosen", "rejected", "text", "messages"};
static const char *const NUMBER_COLUMNS[] = {"margin", "score_chosen", "score_rejected"};
static const char *const KNOWN_COLUMNS[] = {"prompt", "question", "answer", "completion", "chosen", "rejected", "text",
                                            "messages", "margin", "score_chosen", "score_rejected", "label"};

static int in_list(const char *name, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(name, list[i])) return 1;
    return 0;
}

static int is_blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

/* "true"/"false" as spreadsheets and pandas write them; -1 when neither. */
static int parse_bool(const char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    /* "1.0"/"0.0": pandas writes an integer column holding a missing value
     * as floats, so a 0/1 label column comes out so from to_csv */
    static const char *const T[] = {"true", "1", "yes", "1.0"}, *const F[] = {"false", "0", "no", "0.0"};
    for (int i = 0; i < 4; i++) {
        if (strlen(T[i]) == n && !strncasecmp(s, T[i], n)) return 1;
        if (strlen(F[i]) == n && !strncasecmp(s, F[i], n)) return 0;
    }
    return -1;
}

static cJSON *cell_value(const char *name, const char *cell, const char *where) {
    if (!strcmp(name, "messages")) {
        cJSON *v = cJSON_Parse(cell);
        if (!v) align_errorf("%s: column \"messages\" is not valid JSON (expected a list of {role, content} messages)", where);
        return v;
    }
    if (in_list(name, NUMBER_COLUMNS, sizeof NUMBER_COLUMNS / sizeof *NUMBER_COLUMNS)) {
        char *end;
        double x = strtod(cell, &end);
        if (end == cell || !is_blank(end) || !isfinite(x)) {
            align_errorf("%s: column \"%s\": \"%.40s\" is not a number", where, name, cell);
            return NULL;
        }
        return cJSON_CreateNumber(x);
    }
    if (!strcmp(name, "label")) {
        int b = parse_bool(cell);
        if (b < 0) {
            align_errorf("%s: column \"label\": \"%.40s\" is not true or false", where, cell);
            return NULL;
        }
        return cJSON_CreateBool(b);
    }
    return cJSON_CreateString(cell);
}

char *table_row_json(const char *const *names, const char *const *cells, int n, const char *where, int *all_empty) {
    *all_empty = 1;
    for (int i = 0; i < n; i++)
        if (names[i] && *names[i] && cells[i] && *cells[i]) *all_empty = 0;
    if (*all_empty) return NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        align_errorf("out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const char *name = names[i], *cell = cells[i];
        if (!name || !*name) continue;
        if (!cell || !*cell) {
            if (in_list(name, TEXT_COLUMNS, sizeof TEXT_COLUMNS / sizeof *TEXT_COLUMNS)) {
                align_errorf("%s: column \"%s\" is empty", where, name);
                cJSON_Delete(o);
                return NULL;
            }
            continue; /* a missing value: the field is left out */
        }
        cJSON *v = cell_value(name, cell, where);
        if (!v) {
            if (!strstr(align_error(), "column")) align_errorf("out of memory");
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToObject(o, name, v);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) align_errorf("out of memory");
    return s;
}

/* ============================================================ rows */

typedef struct {
    char **cell;
    int n, cap;
    long row;
} Row;

static void row_clear(Row *r) {
    for (int i = 0; i < r->n; i++) free(r->cell[i]);
    r->n = 0;
}

static void row_free(Row *r) {
    row_clear(r);
    free(r->cell);
    memset(r, 0, sizeof *r);
}

/* Put s (owned; NULL = empty) at column col, growing the row. */
static int row_set(Row *r, int col, char *s) {
    if (col >= r->cap) {
        int cap = r->cap ? r->cap : 8;
        while (cap <= col) cap *= 2;
        char **c = realloc(r->cell, (size_t)cap * sizeof *c);
        if (!c) {
            free(s);
            return align_errorf("out of memory");
        }
        r->cell = c;
        r->cap = cap;
    }
    while (r->n <= col) r->cell[r->n++] = NULL;
    free(r->cell[col]);
    r->cell[col] = s;
    return 0;
}

/* ============================================================ the reader */

struct TableReader {
    char *path;
    int xlsx;
    char **names; /* the header: NULL for columns without a name */
    int n_names;
    char *json;   /* the last row handed out */
    int fatal;    /* the file cannot be read further */
    /* CSV/TSV */
    FILE *f;
    struct csv_parser csv;
    int csv_ready;
    char *line;
    size_t line_cap;
    long lineno, start_line;
    int in_record; /* bytes of a record fed since the last row ended */
    int cb_error;  /* a callback ran out of memory */
    Row cur;
    Row *queue;
    int q_head, q_n, q_cap;
    int eof;
    /* .xlsx */
    zip_t *zip;
    xmlTextReaderPtr xml; /* the sheet, streamed */
    long last_row;
    char err[ALIGN_ERR_LEN]; /* a bad cell's message while its row is read to the end */
    char **sst;
    size_t n_sst;
};

static int take_header(TableReader *t, Row *h) {
    if (h->n == 0) return align_errorf("%s: the header row is empty (it names the fields: e.g. question,answer)", t->path);
    t->names = calloc((size_t)h->n, sizeof *t->names);
    if (!t->names) return align_errorf("out of memory");
    t->n_names = h->n;
    int named = 0;
    for (int i = 0; i < h->n; i++) {
        char *s = h->cell[i];
        h->cell[i] = NULL;
        if (!s) continue;
        /* "question, answer" typed by hand: the names without their spaces */
        size_t a = 0, b = strlen(s);
        while (a < b && isspace((unsigned char)s[a])) a++;
        while (b > a && isspace((unsigned char)s[b - 1])) b--;
        memmove(s, s + a, b - a);
        s[b - a] = 0;
        if (!*s) {
            free(s);
            continue;
        }
        /* "Question", "ANSWER": a spreadsheet's capitalised header names the record field */
        for (size_t k = 0; k < sizeof KNOWN_COLUMNS / sizeof *KNOWN_COLUMNS; k++)
            if (!strcasecmp(s, KNOWN_COLUMNS[k])) strcpy(s, KNOWN_COLUMNS[k]);
        for (int j = 0; j < i; j++)
            if (t->names[j] && !strcmp(t->names[j], s)) {
                align_errorf("%s:%ld: the header row names column \"%s\" twice", t->path, h->row, s);
                free(s);
                return -1;
            }
        t->names[i] = s;
        named++;
    }
    if (!named) return align_errorf("%s:%ld: the header row names no column", t->path, h->row);
    return 0;
}

/* Hand out row r as JSON: 1, 0 = skip it (all empty), -1 = bad row. */
static int emit(TableReader *t, Row *r, const char **json, size_t *len, long *rowno) {
    char where[600];
    snprintf(where, sizeof where, "%s:%ld", t->path, r->row);
    *rowno = r->row;
    if (!t->xlsx && r->n > t->n_names) {
        for (int i = t->n_names; i < r->n; i++)
            if (r->cell[i] && *r->cell[i])
                return align_errorf("%s: the row has %d cells but the header names %d columns (a comma inside an "
                                    "unquoted field?)",
                                    where, r->n, t->n_names);
    }
    /* A row shorter than the header has its last cells empty: Excel leaves
     * a blank cell out of the sheet, and a CSV line may stop early. They
     * are empty cells, so a blank "answer" is named as one. */
    if (r->n < t->n_names && row_set(r, t->n_names - 1, NULL)) return -1;
    int n = t->n_names;
    int all_empty;
    free(t->json);
    t->json = table_row_json((const char *const *)t->names, (const char *const *)r->cell, n, where, &all_empty);
    if (!t->json) return all_empty ? 0 : -1;
    *json = t->json;
    *len = strlen(t->json);
    return 1;
}

/* ------------------------------------------------------------ CSV */

static int never_space(unsigned char c) {
    (void)c;
    return 0;
}

static void on_field(void *s, size_t len, void *data) {
    TableReader *t = data;
    char *c = malloc(len + 1);
    if (!c) {
        t->cb_error = 1;
        return;
    }
    if (len) memcpy(c, s, len);
    c[len] = 0;
    if (row_set(&t->cur, t->cur.n, c)) t->cb_error = 1;
}

static void on_row(int term, void *data) {
    (void)term;
    TableReader *t = data;
    t->in_record = 0;
    if (t->q_head + t->q_n == t->q_cap) {
        if (t->q_head > 0) {
            memmove(t->queue, t->queue + t->q_head, (size_t)t->q_n * sizeof *t->queue);
            t->q_head = 0;
        } else {
            int cap = t->q_cap ? 2 * t->q_cap : 4;
            Row *q = realloc(t->queue, (size_t)cap * sizeof *q);
            if (!q) {
                t->cb_error = 1;
                row_clear(&t->cur);
                return;
            }
            t->queue = q;
            t->q_cap = cap;
        }
    }
    t->cur.row = t->start_line;
    t->queue[t->q_head + t->q_n++] = t->cur;
    memset(&t->cur, 0, sizeof t->cur);
}

/* Feed lines until a row is queued or the file ends: 1 = a row is
 * queued, 0 = end, -1 = error (fatal). */
static int csv_fill(TableReader *t) {
    while (t->q_n == 0 && !t->eof) {
        ssize_t got = getline(&t->line, &t->line_cap, t->f);
        if (got < 0) {
            if (ferror(t->f)) return align_errorf("%s: read error after line %ld", t->path, t->lineno);
            t->eof = 1;
            if (csv_fini(&t->csv, on_field, on_row, t) != 0) {
                if (t->in_record)
                    return align_errorf("%s:%ld: a quoted field is not closed by the end of the file", t->path,
                                        t->start_line);
                return align_errorf("%s: %s", t->path, csv_strerror(csv_error(&t->csv)));
            }
            break;
        }
        t->lineno++;
        char *s = t->line;
        size_t n = (size_t)got;
        if (t->lineno == 1 && n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) s += 3, n -= 3; /* Excel's "CSV UTF-8" */
        /* "sep=;" as the first line: Excel's own way for a file to name its
         * separator (Excel reads it and hides the line); honoured, since the
         * file says it, where a guess would not be */
        if (t->lineno == 1 && n >= 5 && !memcmp(s, "sep=", 4)) {
            size_t e = 5;
            while (e < n && (s[e] == '\r' || s[e] == '\n')) e++;
            unsigned char d = (unsigned char)s[4];
            if (e == n && (d == ',' || d == ';' || d == '\t' || d == '|')) {
                csv_set_delim(&t->csv, d);
                continue;
            }
        }
        char where[600];
        snprintf(where, sizeof where, "%s:%ld", t->path, t->lineno);
        if (ds_check_utf8(s, n, where)) return -1;
        if (!t->in_record) {
            size_t k = 0;
            while (k < n && (s[k] == '\r' || s[k] == '\n')) k++;
            if (k == n) continue; /* a blank line between records */
            t->start_line = t->lineno;
            t->in_record = 1;
        }
        if (csv_parse(&t->csv, s, n, on_field, on_row, t) != n) {
            int e = csv_error(&t->csv);
            if (e == CSV_EPARSE)
                return align_errorf("%s:%ld: a quote inside a field that is not quoted, or text after a closing "
                                    "quote (RFC 4180: quote the field and double its quotes, \"say \"\"hi\"\"\")",
                                    t->path, t->lineno);
            return align_errorf("%s:%ld: %s", t->path, t->lineno, csv_strerror(e));
        }
        if (t->cb_error) return align_errorf("out of memory reading %s", t->path);
    }
    return t->q_n > 0;
}

static int csv_next_row(TableReader *t, Row *out) {
    int k = csv_fill(t);
    if (k <= 0) return k;
    *out = t->queue[t->q_head++];
    t->q_n--;
    return 1;
}

/* A header that came out as one column holding another separator: Excel
 * in a locale with a decimal comma (de, fr, ...) saves "CSV" with
 * semicolons, and tab-separated text is often named .csv (or the reverse).
 * Without this the first row would fail as "no SFT fields", which hides
 * the cause. Only a single column is judged: a real header with several
 * columns is never second-guessed. */
static int check_separator(const TableReader *t, long row) {
    int named = 0;
    const char *name = NULL;
    for (int i = 0; i < t->n_names; i++)
        if (t->names[i]) named++, name = t->names[i];
    if (named != 1) return 0;
    int tsv = ends_with_ci(t->path, ".tsv");
    if (strchr(name, ';'))
        return align_errorf("%s:%ld: the header is one column \"%s\": the fields look separated by semicolons "
                            "(Excel's CSV where the decimal point is a comma); align reads %s (RFC 4180): save it "
                            "as \"CSV UTF-8 (comma delimited)\" or as .xlsx",
                            t->path, row, name, tsv ? "tabs in a .tsv" : "commas in a .csv");
    if (!tsv && strchr(name, '\t'))
        return align_errorf("%s:%ld: the header is one column \"%s\": the fields look separated by tabs; name the file "
                            ".tsv to read it as TSV",
                            t->path, row, name);
    if (tsv && strchr(name, ','))
        return align_errorf("%s:%ld: the header is one column \"%s\": the fields look separated by commas; name the "
                            "file .csv to read it as CSV",
                            t->path, row, name);
    return 0;
}

static int csv_open(TableReader *t) {
    if (csv_init(&t->csv, CSV_STRICT | CSV_STRICT_FINI)) return align_errorf("out of memory");
    t->csv_ready = 1;
    csv_set_space_func(&t->csv, never_space); /* spaces are part of the field, as RFC 4180 says */
    if (ends_with_ci(t->path, ".tsv")) csv_set_delim(&t->csv, CSV_TAB);
    Row h = {0};
    int k = csv_next_row(t, &h);
    if (k == 0) return align_errorf("%s is empty (the first row names the fields: e.g. question,answer)", t->path);
    if (k < 0) return -1;
    int rc = take_header(t, &h);
    if (!rc) rc = check_separator(t, h.row);
    row_free(&h);
    return rc;
}

/* ------------------------------------------------------------ .xlsx */

static char *zip_entry(TableReader *t, const char *name, int required, size_t *len) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat(t->zip, name, 0, &st) != 0) {
        if (required) align_errorf("%s: not an Excel .xlsx workbook (no %s inside)", t->path, name);
        return NULL;
    }
    if (!(st.valid & ZIP_STAT_SIZE) || st.size > TABLE_MAX_XML) {
        align_errorf("%s: %s is too large to read (over %llu bytes)", t->path, name, (unsigned long long)TABLE_MAX_XML);
        return NULL;
    }
    char *buf = malloc((size_t)st.size + 1);
    zip_file_t *zf = buf ? zip_fopen(t->zip, name, 0) : NULL;
    zip_int64_t got = zf ? zip_fread(zf, buf, st.size) : -1;
    if (zf) zip_fclose(zf);
    if (got < 0 || (zip_uint64_t)got != st.size) {
        free(buf);
        align_errorf("%s: cannot read %s from the workbook (%s)", t->path, name, zip_strerror(t->zip));
        return NULL;
    }
    buf[st.size] = 0;
    *len = (size_t)st.size;
    return buf;
}

static xmlDoc *zip_xml(TableReader *t, const char *name, int required) {
    size_t len = 0;
    char *buf = zip_entry(t, name, required, &len);
    if (!buf) return NULL;
    /* no network, no entity expansion, libxml2's own messages off (the error is ours) */
    xmlDoc *d = xmlReadMemory(buf, (int)len, name, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    free(buf);
    if (!d || !xmlDocGetRootElement(d)) {
        if (d) xmlFreeDoc(d);
        align_errorf("%s: %s in the workbook is not valid XML", t->path, name);
        return NULL;
    }
    return d;
}

static int is_elem(const xmlNode *n, const char *local) {
    return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, local);
}

static xmlNode *child(const xmlNode *n, const char *local) {
    for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (is_elem(c, local)) return c;
    return NULL;
}

static char *attr(const xmlNode *n, const char *name) {
    return (char *)xmlGetProp(n, (const xmlChar *)name);
}

/* ------------------------------------------------------------ streaming XML */

/* The shared strings and the sheet are streamed (xmlTextReader over
 * zip_fread): memory is the strings and one row, not a tree of the sheet,
 * which for 100k rows of Q&A is ~300 MB as a DOM. */
static int zip_read_cb(void *ctx, char *buf, int len) {
    zip_int64_t n = zip_fread(ctx, buf, (zip_uint64_t)len);
    return n < 0 ? -1 : (int)n;
}

static int zip_close_cb(void *ctx) {
    zip_fclose(ctx);
    return 0;
}

static xmlTextReaderPtr zip_stream(TableReader *t, const char *name) {
    zip_file_t *zf = zip_fopen(t->zip, name, 0);
    if (!zf) {
        align_errorf("%s: not an Excel .xlsx workbook (cannot open %s inside: %s)", t->path, name, zip_strerror(t->zip));
        return NULL;
    }
    /* on failure libxml2 has called zip_close_cb already */
    xmlTextReaderPtr rd = xmlReaderForIO(zip_read_cb, zip_close_cb, zf, name, NULL,
                                         XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!rd) align_errorf("out of memory");
    return rd;
}

static int node_is(xmlTextReaderPtr rd, int type, const char *local) {
    const xmlChar *n = xmlTextReaderConstLocalName(rd);
    return xmlTextReaderNodeType(rd) == type && n && !strcmp((const char *)n, local);
}

static int is_text_node(xmlTextReaderPtr rd) {
    int ty = xmlTextReaderNodeType(rd);
    return ty == XML_READER_TYPE_TEXT || ty == XML_READER_TYPE_CDATA || ty == XML_READER_TYPE_WHITESPACE ||
           ty == XML_READER_TYPE_SIGNIFICANT_WHITESPACE;
}

typedef struct {
    char *s;
    size_t len, cap;
} Str;

static int str_add(Str *b, const char *x) {
    size_t k = strlen(x);
    if (b->len + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + k + 1) cap *= 2;
        char *g = realloc(b->s, cap);
        if (!g) return align_errorf("out of memory");
        b->s = g;
        b->cap = cap;
    }
    memcpy(b->s + b->len, x, k);
    b->len += k;
    b->s[b->len] = 0;
    return 0;
}

/* Inside a rich-text element (<si> or <is>, the reader on its start tag):
 * the text of its <t> elements in order, leaving out phonetic runs
 * (<rPh>), up to its end tag. 0, or -1 (out of memory) / -2 (bad XML). */
static int read_rich(xmlTextReaderPtr rd, Str *out) {
    out->len = 0;
    if (str_add(out, "")) return -1;
    if (xmlTextReaderIsEmptyElement(rd)) return 0;
    int depth = xmlTextReaderDepth(rd), in_t = 0, rph = 0, k;
    while ((k = xmlTextReaderRead(rd)) == 1) {
        int ty = xmlTextReaderNodeType(rd);
        if (ty == XML_READER_TYPE_END_ELEMENT && xmlTextReaderDepth(rd) == depth) return 0;
        if (node_is(rd, XML_READER_TYPE_ELEMENT, "rPh") && !xmlTextReaderIsEmptyElement(rd)) rph++;
        else if (node_is(rd, XML_READER_TYPE_END_ELEMENT, "rPh")) rph--;
        else if (node_is(rd, XML_READER_TYPE_ELEMENT, "t")) in_t = !xmlTextReaderIsEmptyElement(rd);
        else if (node_is(rd, XML_READER_TYPE_END_ELEMENT, "t")) in_t = 0;
        else if (in_t && !rph && is_text_node(rd) && str_add(out, (const char *)xmlTextReaderConstValue(rd))) return -1;
    }
    return -2;
}

static int read_shared_strings(TableReader *t) {
    if (zip_name_locate(t->zip, "xl/sharedStrings.xml", 0) < 0) return 0; /* a workbook without text cells */
    xmlTextReaderPtr rd = zip_stream(t, "xl/sharedStrings.xml");
    if (!rd) return -1;
    size_t cap = 0;
    Str b = {0};
    int k, rc = 0;
    while (rc == 0 && (k = xmlTextReaderRead(rd)) == 1) {
        if (!node_is(rd, XML_READER_TYPE_ELEMENT, "si")) continue;
        if (t->n_sst == cap) {
            cap = cap ? 2 * cap : 1024;
            char **g = realloc(t->sst, cap * sizeof *g);
            if (!g) {
                rc = align_errorf("out of memory");
                break;
            }
            t->sst = g;
        }
        int r = read_rich(rd, &b);
        if (r == 0 && !(t->sst[t->n_sst] = strdup(b.s))) r = -1;
        if (r == -1) rc = align_errorf("out of memory");
        if (r == -2) k = -1;
        if (r) break;
        t->n_sst++;
    }
    if (rc == 0 && k < 0) rc = align_errorf("%s: xl/sharedStrings.xml in the workbook is not valid XML", t->path);
    free(b.s);
    xmlFreeTextReader(rd);
    return rc;
}

/* The zip path of the worksheet named `sheet` (NULL = the first). */
static char *find_sheet(TableReader *t, const char *sheet) {
    xmlDoc *wb = zip_xml(t, "xl/workbook.xml", 1);
    if (!wb) return NULL;
    xmlDoc *rels = zip_xml(t, "xl/_rels/workbook.xml.rels", 1);
    char *rid = NULL, *target = NULL;
    char names[400] = "";
    xmlNode *sheets = child(xmlDocGetRootElement(wb), "sheets");
    for (xmlNode *s = sheets ? sheets->children : NULL; rels && s && !rid; s = s->next) {
        if (!is_elem(s, "sheet")) continue;
        char *name = attr(s, "name");
        if (!sheet || (name && !strcmp(name, sheet))) {
            /* r:id, in whichever relationships namespace the file uses */
            for (xmlAttr *a = s->properties; a; a = a->next)
                if (a->ns && !strcmp((const char *)a->name, "id")) rid = (char *)xmlNodeGetContent((xmlNode *)a);
            if (!rid) align_errorf("%s: sheet \"%s\" has no r:id in xl/workbook.xml", t->path, name ? name : "");
        }
        size_t k = strlen(names);
        if (name && k + strlen(name) + 8 < sizeof names) snprintf(names + k, sizeof names - k, "%s\"%s\"", k ? ", " : "", name);
        xmlFree(name);
    }
    if (rels && !rid && !strstr(align_error(), "r:id")) {
        if (sheet) align_errorf("%s: no sheet named \"%s\" (the workbook has %s)", t->path, sheet, *names ? names : "none");
        else align_errorf("%s: the workbook has no sheet", t->path);
    }
    for (xmlNode *r = rels && rid ? xmlDocGetRootElement(rels)->children : NULL; r && !target; r = r->next) {
        if (!is_elem(r, "Relationship")) continue;
        char *id = attr(r, "Id");
        if (id && !strcmp(id, rid)) {
            char *tg = attr(r, "Target");
            if (tg) {
                /* relative to xl/, or absolute within the package */
                size_t k = strlen(tg) + 8;
                target = malloc(k);
                if (target) snprintf(target, k, "%s%s", tg[0] == '/' ? "" : "xl/", tg[0] == '/' ? tg + 1 : tg);
                xmlFree(tg);
            }
        }
        xmlFree(id);
    }
    if (rid && !target) align_errorf("%s: sheet relationship %s is missing from xl/_rels/workbook.xml.rels", t->path, rid);
    xmlFree(rid);
    if (rels) xmlFreeDoc(rels);
    xmlFreeDoc(wb);
    return target;
}

/* "BC12" -> 54 (0-based column), -1 when it is not a cell reference. */
static int column_of(const char *ref) {
    long c = 0;
    int k = 0;
    for (; ref[k] >= 'A' && ref[k] <= 'Z'; k++) {
        c = c * 26 + (ref[k] - 'A' + 1);
        if (c > 16384) return -1; /* Excel's last column is XFD */
    }
    return k ? (int)(c - 1) : -1;
}

/* "column \"answer\"" for a named column, else Excel's letter ("column C"). */
static const char *col_desc(const TableReader *t, int col, char *buf, size_t cap) {
    if (t->names && col < t->n_names && t->names[col]) {
        snprintf(buf, cap, "column \"%s\"", t->names[col]);
    } else {
        char l[8];
        int k = 7;
        l[k] = 0;
        for (int c = col + 1; c > 0 && k > 0; c = (c - 1) / 26) l[--k] = (char)('A' + (c - 1) % 26);
        snprintf(buf, cap, "column %s", l + k);
    }
    return buf;
}

/* A cell's text as the sheet shows it, from its type (t="...") and value
 * (<v>, or the inline string's text): 0 with *out (NULL = empty), or -1
 * with an error naming the row and column. */
static int cell_text(TableReader *t, const char *type, const char *vs, const char *inl, long row, int col, char **out) {
    *out = NULL;
    int rc = 0;
    const char *tp = type ? type : "n";
    char num[64], cd[300];
    const char *copy = NULL;
    if (!strcmp(tp, "inlineStr")) {
        copy = inl;
    } else if (!vs) {
        /* no value: an empty (formatted) cell */
    } else if (!strcmp(tp, "s")) {
        char *end;
        unsigned long i = strtoul(vs, &end, 10);
        if (end == vs || *end || i >= t->n_sst)
            rc = align_errorf("%s:%ld: %s: shared string %.20s does not exist (%zu in the workbook)", t->path, row,
                              col_desc(t, col, cd, sizeof cd), vs, t->n_sst);
        else
            copy = t->sst[i];
    } else if (!strcmp(tp, "b")) {
        copy = !strcmp(vs, "1") ? "TRUE" : "FALSE";
    } else if (!strcmp(tp, "e")) {
        rc = align_errorf("%s:%ld: %s holds the Excel error %.20s", t->path, row, col_desc(t, col, cd, sizeof cd), vs);
    } else if (!strcmp(tp, "n")) {
        /* a number as Excel shows it: 15 significant digits, so the stored
         * binary double 0.10000000000000001 reads "0.1" */
        char *end;
        double x = strtod(vs, &end);
        copy = vs;
        if (end != vs && !*end && isfinite(x)) {
            snprintf(num, sizeof num, "%.15g", x);
            copy = num;
        }
    } else { /* str (a formula's string), d (ISO date): the text */
        copy = vs;
    }
    if (copy && !(*out = strdup(copy))) rc = align_errorf("out of memory");
    return rc;
}

static char *get_attr(xmlTextReaderPtr rd, const char *name) {
    return (char *)xmlTextReaderGetAttribute(rd, (const xmlChar *)name);
}

/* One <c> (the reader on its start tag) into the row. 0, -1 = a bad cell
 * (the reader is past it), -2 = bad XML. */
static int read_cell(TableReader *t, Row *out, long rowno, int *col) {
    xmlTextReaderPtr rd = t->xml;
    char *ref = get_attr(rd, "r"), *type = get_attr(rd, "t");
    int k = ref ? column_of(ref) : -1;
    xmlFree(ref);
    *col = k >= 0 ? k : *col + 1;
    Str v = {0}, inl = {0};
    int has_v = 0, has_is = 0, has_f = 0, rc = 0;
    if (!xmlTextReaderIsEmptyElement(rd)) {
        int depth = xmlTextReaderDepth(rd), in_v = 0, r;
        while ((r = xmlTextReaderRead(rd)) == 1) {
            if (xmlTextReaderNodeType(rd) == XML_READER_TYPE_END_ELEMENT && xmlTextReaderDepth(rd) == depth) break;
            if (node_is(rd, XML_READER_TYPE_ELEMENT, "v")) {
                has_v = 1;
                in_v = !xmlTextReaderIsEmptyElement(rd);
                if (str_add(&v, "")) rc = -1;
            } else if (node_is(rd, XML_READER_TYPE_END_ELEMENT, "v")) {
                in_v = 0;
            } else if (in_v && is_text_node(rd)) {
                if (str_add(&v, (const char *)xmlTextReaderConstValue(rd))) rc = -1;
            } else if (node_is(rd, XML_READER_TYPE_ELEMENT, "f")) {
                has_f = 1;
            } else if (node_is(rd, XML_READER_TYPE_ELEMENT, "is")) {
                has_is = 1;
                int q = read_rich(rd, &inl);
                if (q == -2) r = -1;
                if (q) rc = -1;
                if (q == -2) break;
            }
        }
        if (r != 1) rc = -2;
    }
    char *text = NULL;
    /* a formula with no saved result: written by a library that does not
     * compute formulas (openpyxl, xlsxwriter); Excel saves the result in
     * <v>. Read as empty it would be "column is empty", which the user can
     * see is not; say what it is instead */
    if (rc == 0 && has_f && !has_v && !has_is) {
        char cd[300];
        rc = align_errorf("%s:%ld: %s holds a formula with no saved result (the workbook was written by a program "
                          "that does not compute formulas, e.g. openpyxl): open and save it in Excel or LibreOffice, "
                          "or write the values",
                          t->path, rowno, col_desc(t, *col, cd, sizeof cd));
    }
    if (rc == 0) rc = cell_text(t, type, has_v ? v.s : NULL, has_is ? inl.s : NULL, rowno, *col, &text);
    if (rc == 0 && row_set(out, *col, text)) rc = -1;
    free(v.s);
    free(inl.s);
    xmlFree(type);
    return rc;
}

/* The next <row> as cells: 1, 0 = end, -1 = a bad row (read past), -2 =
 * the sheet cannot be read further (bad XML). */
static int xlsx_next_row(TableReader *t, Row *out) {
    xmlTextReaderPtr rd = t->xml;
    memset(out, 0, sizeof *out);
    int k;
    while ((k = xmlTextReaderRead(rd)) == 1 && !node_is(rd, XML_READER_TYPE_ELEMENT, "row")) {
    }
    if (k == 0) return 0;
    if (k < 0) return align_errorf("%s: the sheet is not valid XML (after row %ld)", t->path, t->last_row), -2;
    char *rs = get_attr(rd, "r");
    long rowno = rs ? strtol(rs, NULL, 10) : 0;
    xmlFree(rs);
    if (rowno <= 0) rowno = t->last_row + 1;
    t->last_row = rowno;
    out->row = rowno;
    if (xmlTextReaderIsEmptyElement(rd)) return 1;
    int depth = xmlTextReaderDepth(rd), col = -1, bad = 0;
    while ((k = xmlTextReaderRead(rd)) == 1) {
        if (xmlTextReaderNodeType(rd) == XML_READER_TYPE_END_ELEMENT && xmlTextReaderDepth(rd) == depth) break;
        if (!node_is(rd, XML_READER_TYPE_ELEMENT, "c")) continue;
        int c = read_cell(t, out, rowno, &col);
        if (c == -2) {
            k = -1;
            break;
        }
        if (c < 0 && !bad) {
            bad = 1; /* keep the first message, read on to the row's end */
            snprintf(t->err, sizeof t->err, "%s", align_error());
        }
    }
    if (k != 1) {
        row_free(out);
        return align_errorf("%s: the sheet is not valid XML (in row %ld)", t->path, rowno), -2;
    }
    if (bad) {
        row_free(out);
        return align_errorf("%s", t->err);
    }
    return 1;
}

/* Why a file named .xlsx did not open as a zip archive, from its first
 * bytes: a workbook cut off in a download or a copy (the zip's directory
 * is at its end), an old .xls or a password-protected workbook (both OLE
 * compound files), a CSV saved under an .xlsx name, or none of these. */
static int xlsx_not_zip(const TableReader *t, const void *data, size_t len) {
    unsigned char head[512];
    size_t n = 0;
    if (data) {
        n = len < sizeof head ? len : sizeof head;
        memcpy(head, data, n);
    } else {
        FILE *f = fopen(t->path, "rb");
        if (!f) return align_errorf("cannot open data file %s", t->path);
        n = fread(head, 1, sizeof head, f);
        fclose(f);
    }
    if (n == 0) return align_errorf("%s is empty (an .xlsx workbook is a zip archive)", t->path);
    if (n >= 4 && !memcmp(head, "PK\3\4", 4))
        return align_errorf("%s: the .xlsx workbook is cut off or damaged (its zip directory cannot be read); copy "
                            "or download it again",
                            t->path);
    if (n >= 8 && !memcmp(head, "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", 8))
        return align_errorf("%s: an Excel 97-2003 (.xls) or password-protected workbook, not an .xlsx one: save it "
                            "in Excel as .xlsx without a password, or as CSV",
                            t->path);
    size_t text = 0;
    for (size_t i = 0; i < n; i++) text += head[i] >= 0x20 || head[i] == '\t' || head[i] == '\n' || head[i] == '\r';
    if (text == n)
        return align_errorf("%s: not an Excel .xlsx workbook but text (a CSV saved under an .xlsx name? name it .csv "
                            "or .tsv)",
                            t->path);
    return align_errorf("%s: not an Excel .xlsx workbook (not a zip archive)", t->path);
}

static int xlsx_open(TableReader *t, const char *sheet, zip_source_t *src, const void *data, size_t len) {
    int err = 0;
    zip_error_t ze;
    zip_error_init(&ze);
    t->zip = src ? zip_open_from_source(src, ZIP_RDONLY, &ze) : zip_open(t->path, ZIP_RDONLY, &err);
    if (!t->zip) {
        if (src) zip_source_free(src);
        zip_error_fini(&ze);
        return xlsx_not_zip(t, data, len);
    }
    zip_error_fini(&ze);
    char *path = find_sheet(t, sheet);
    if (!path) return -1;
    if (read_shared_strings(t)) {
        free(path);
        return -1;
    }
    if (zip_name_locate(t->zip, path, 0) < 0) {
        align_errorf("%s: not an Excel .xlsx workbook (no %s inside)", t->path, path);
        free(path);
        return -1;
    }
    t->xml = zip_stream(t, path);
    free(path);
    if (!t->xml) return -1;
    Row h;
    for (;;) { /* the header: the first row with a cell */
        int k = xlsx_next_row(t, &h);
        if (k < 0) return -1;
        if (k == 0) return align_errorf("%s: the sheet is empty (its first row names the fields: e.g. question, answer)", t->path);
        int any = 0;
        for (int i = 0; i < h.n; i++) any |= h.cell[i] && *h.cell[i];
        if (any) break;
        row_free(&h);
    }
    int rc = take_header(t, &h);
    row_free(&h);
    return rc;
}

/* ------------------------------------------------------------ public */

static TableReader *open_any(const char *path, const void *data, size_t len, const char *sheet) {
    TableReader *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(path))) {
        free(t);
        align_errorf("out of memory");
        return NULL;
    }
    t->xlsx = ends_with_ci(path, ".xlsx");
    int rc;
    if (t->xlsx) {
        zip_source_t *src = NULL;
        if (data) {
            zip_error_t ze;
            zip_error_init(&ze);
            src = zip_source_buffer_create(data, len, 0, &ze);
            zip_error_fini(&ze);
            if (!src) {
                table_close(t);
                align_errorf("out of memory");
                return NULL;
            }
        }
        rc = xlsx_open(t, sheet, src, data, len);
    } else if (sheet) {
        rc = align_errorf("%s: --sheet %s names an Excel worksheet, and this is a %s file", path, sheet,
                          ends_with_ci(path, ".tsv") ? "TSV" : "CSV");
    } else {
        t->f = !data ? fopen(path, "rb") : len ? fmemopen((void *)data, len, "rb") : NULL;
        rc = t->f ? csv_open(t)
             : data ? align_errorf("%s is empty (the first row names the fields: e.g. question,answer)", path)
                    : align_errorf("cannot open data file %s", path);
    }
    if (rc) {
        table_close(t);
        return NULL;
    }
    return t;
}

TableReader *table_open(const char *path, const char *sheet) { return open_any(path, NULL, 0, sheet); }

TableReader *table_open_mem(const char *name, const void *data, size_t len, const char *sheet) {
    static const char empty[1];
    return open_any(name, data ? data : empty, len, sheet);
}

int table_next(TableReader *t, const char **json, size_t *len, long *row) {
    for (;;) {
        if (t->fatal) return -2;
        Row r;
        int k = t->xlsx ? xlsx_next_row(t, &r) : csv_next_row(t, &r);
        if (k == 0) return 0;
        if (k < 0) {
            /* a CSV that libcsv stopped on, or bad XML, cannot go on; a bad .xlsx cell spoils one row */
            if (!t->xlsx || k == -2) t->fatal = 1;
            return t->fatal ? -2 : -1;
        }
        k = emit(t, &r, json, len, row);
        row_free(&r);
        if (k != 0) return k;
    }
}

void table_close(TableReader *t) {
    if (!t) return;
    for (int i = 0; i < t->n_names; i++) free(t->names[i]);
    free(t->names);
    free(t->json);
    if (t->f) fclose(t->f);
    if (t->csv_ready) csv_free(&t->csv);
    free(t->line);
    row_free(&t->cur);
    for (int i = 0; i < t->q_n; i++) row_free(&t->queue[t->q_head + i]);
    free(t->queue);
    if (t->xml) xmlFreeTextReader(t->xml);
    if (t->zip) zip_discard(t->zip);
    for (size_t i = 0; i < t->n_sst; i++) free(t->sst[i]);
    free(t->sst);
    free(t->path);
    free(t);
}
