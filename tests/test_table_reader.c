/* test_table_reader: CSV/TSV and .xlsx data files as dataset records.
 *
 * The fixtures (tests/fixtures/tables, written by make_tables.py) hold the
 * RFC 4180 cases (BOM, CRLF, doubled quotes, a newline and a comma inside
 * quotes, a blank line, an index column without a name), a TSV with a
 * quoted tab and an empty number cell, and a two-sheet workbook (shared,
 * rich, inline and formula strings, numbers, a boolean, a row gap). Each
 * row is checked against the JSON object written here by hand from the
 * fixture's text, and each example ds_load makes from a table against the
 * example the JSONL path makes from that object. Bad files and cells must
 * give one exact "file:row: ..." sentence. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "dataset.h"
#include "table_reader.h"
#include "test.h"
#include "util.h"

#define TABLES ALIGN_TEST_DIR "/fixtures/tables/"

static Tokenizer *tok;
static char dir[64];

static char *write_file(const char *name, const char *text) {
    static char path[8][256];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fputs(text, f);
    fclose(f);
    return p;
}

typedef struct {
    long row;
    const char *json;
} Want;

/* Every row of the table equals want[] (row numbers and JSON objects). */
static void expect_rows(TableReader *t, const char *what, const Want *want, int n) {
    CHECK(t != NULL, "%s opens: %s", what, t ? "" : align_error());
    if (!t) return;
    for (int i = 0; i <= n; i++) {
        const char *json = NULL;
        size_t len = 0;
        long row = 0;
        int k = table_next(t, &json, &len, &row);
        if (i == n) {
            CHECK(k == 0, "%s: ends after %d rows (got %d: %s)", what, n, k, k == 1 ? json : align_error());
            break;
        }
        CHECK(k == 1, "%s: row %d read (%s)", what, i, k < 0 ? align_error() : "end");
        if (k != 1) break;
        cJSON *got = cJSON_ParseWithLength(json, len), *exp = cJSON_Parse(want[i].json);
        CHECK(exp && got && cJSON_Compare(got, exp, 1), "%s row %ld:\n got  %.*s\n want %s", what, row, (int)len, json,
              want[i].json);
        CHECK(row == want[i].row, "%s: row number %ld, want %ld", what, row, want[i].row);
        cJSON_Delete(got);
        cJSON_Delete(exp);
    }
    table_close(t);
}

static const Want QA_CSV[] = {
    {2, "{\"question\":\"What is 2+2?\",\"answer\":\"4\"}"},
    {3, "{\"question\":\"Say \\\"hi\\\"\",\"answer\":\"He said \\\"hi\\\", then left.\"}"},
    {5, "{\"question\":\"Two\\r\\nlines?\",\"answer\":\"Yes,\\ntwo.\"}"},
    {8, "{\"question\":\"O\xC3\xB9 est Z\xC3\xBCrich ?\",\"answer\":\"En Suisse.\"}"},
};
static const Want PREFS_TSV[] = {
    {2, "{\"prompt\":\"Name a color.\",\"chosen\":\"Blue.\",\"rejected\":\"No.\",\"margin\":1.5}"},
    {3, "{\"prompt\":\"Count to three.\",\"chosen\":\"one\\ttwo three\",\"rejected\":\"four\"}"},
    {4, "{\"prompt\":\"Say hi.\",\"chosen\":\"Hi there!\",\"rejected\":\"Go away.\",\"margin\":0.25}"},
};
static const Want PREFS_XLSX[] = {
    {2, "{\"prompt\":\"Name a color.\",\"chosen\":\"Bold move\",\"rejected\":\"No.\",\"margin\":1.5}"},
    {3, "{\"prompt\":\"Say hi.\",\"chosen\":\"Hi there!\",\"rejected\":\"Go & stay away.\"}"},
    {5, "{\"prompt\":\"Count to three.\",\"chosen\":\"one two three\",\"rejected\":\"four\",\"margin\":0.1}"},
};
static const Want QA_XLSX[] = {
    {2, "{\"question\":\"What is 6*7?\",\"answer\":\"42\"}"},
    {3, "{\"question\":\"What is 1/10?\",\"answer\":\"0.1\"}"},
    {4, "{\"question\":\"Is water wet?\",\"answer\":\"TRUE\"}"},
};
static const Want KTO_CSV[] = {
    {2, "{\"prompt\":\"Say hi.\",\"completion\":\"Hi there!\",\"label\":true}"},
    {3, "{\"prompt\":\"Say hi.\",\"completion\":\"Go away.\",\"label\":false}"},
};

static void test_rows(void) {
    CHECK(table_is_table_path("a/QA.CSV") && table_is_table_path("x.tsv") && table_is_table_path("x.xlsx") &&
              !table_is_table_path("x.jsonl") && !table_is_table_path("csv"),
          "table paths by extension");
    expect_rows(table_open(TABLES "qa.csv", NULL), "qa.csv", QA_CSV, 4);
    expect_rows(table_open(TABLES "prefs.tsv", NULL), "prefs.tsv", PREFS_TSV, 3);
    expect_rows(table_open(TABLES "kto.csv", NULL), "kto.csv", KTO_CSV, 2);
    expect_rows(table_open(TABLES "prefs.xlsx", NULL), "prefs.xlsx", PREFS_XLSX, 3);
    expect_rows(table_open(TABLES "prefs.xlsx", "prefs"), "prefs.xlsx --sheet prefs", PREFS_XLSX, 3);
    expect_rows(table_open(TABLES "prefs.xlsx", "qa"), "prefs.xlsx --sheet qa", QA_XLSX, 3);
    /* the same bytes from memory (what the fuzz target reads) */
    size_t len = 0;
    char *x = align_read_file(TABLES "prefs.xlsx", &len);
    CHECK(x != NULL, "read prefs.xlsx");
    if (x) expect_rows(table_open_mem("mem.xlsx", x, len, "qa"), "prefs.xlsx from memory", QA_XLSX, 3);
    free(x);
    char *c = align_read_file(TABLES "qa.csv", &len);
    if (c) expect_rows(table_open_mem("mem.csv", c, len, NULL), "qa.csv from memory", QA_CSV, 4);
    free(c);
}

/* ds_load on a table equals the JSONL path on the hand-written objects. */
static void expect_same_as_json(const char *path, const char *sheet, DsKind kind, const Want *want, int n) {
    DsOptions o;
    ds_options_default(&o);
    o.kind = kind;
    o.chat_template = CHAT_TEMPLATE_CHATML;
    o.sheet = sheet;
    Dataset ds;
    int rc = ds_load(path, tok, &o, &ds);
    CHECK(rc == 0 && (int)ds.n == n, "%s: %d examples (rc %d, %s)", path, n, rc, rc ? align_error() : "");
    if (rc) return;
    for (int i = 0; i < n && i < (int)ds.n; i++) {
        DsExample e;
        int k = ds_parse_record(want[i].json, strlen(want[i].json), "want", tok, &o, &e);
        const DsExample *g = &ds.ex[i];
        int same = k == 1 && g->n_prompt == e.n_prompt && g->n_chosen == e.n_chosen && g->n_rejected == e.n_rejected &&
                   (!e.n_prompt || !memcmp(g->prompt, e.prompt, (size_t)e.n_prompt * 4)) &&
                   (!e.n_chosen || !memcmp(g->chosen, e.chosen, (size_t)e.n_chosen * 4)) &&
                   (!e.n_rejected || !memcmp(g->rejected, e.rejected, (size_t)e.n_rejected * 4)) &&
                   g->margin == e.margin && g->has_margin == e.has_margin;
        CHECK(same, "%s example %d equals the JSONL record's", path, i);
        CHECK(g->line == want[i].row, "%s example %d: line %ld, want %ld", path, i, g->line, want[i].row);
        if (k == 1) ds_example_free(&e);
    }
    ds_free(&ds);
}

static void test_datasets(void) {
    expect_same_as_json(TABLES "qa.csv", NULL, DS_SFT, QA_CSV, 4);
    expect_same_as_json(TABLES "qa.csv", NULL, DS_PROMPT, QA_CSV, 4);
    expect_same_as_json(TABLES "prefs.tsv", NULL, DS_PREFERENCE, PREFS_TSV, 3);
    expect_same_as_json(TABLES "prefs.xlsx", NULL, DS_PREFERENCE, PREFS_XLSX, 3);
    expect_same_as_json(TABLES "prefs.xlsx", "qa", DS_SFT, QA_XLSX, 3);
    /* a prompt-only load keeps the answer as the label (RLVR) */
    DsOptions o;
    ds_options_default(&o);
    o.kind = DS_PROMPT;
    o.sheet = "qa";
    Dataset ds;
    int rc = ds_load(TABLES "prefs.xlsx", tok, &o, &ds);
    CHECK(rc == 0 && ds.n == 3 && ds.ex[0].label && !strcmp(ds.ex[0].label, "42") && !strcmp(ds.ex[1].label, "0.1"),
          "answers kept as labels");
    if (rc == 0) ds_free(&ds);
    /* KTO-style rows: a false label is not an SFT target, skipped and counted with skip_bad */
    ds_options_default(&o);
    o.kind = DS_SFT;
    o.skip_bad = 1;
    rc = ds_load(TABLES "kto.csv", tok, &o, &ds);
    CHECK(rc == 0 && ds.n == 1 && ds.n_bad == 1 && strstr(ds.first_bad, "kto.csv:3: the completion is labelled false"),
          "kto.csv: 1 kept, 1 bad (%s)", rc ? align_error() : ds.first_bad);
    if (rc == 0) ds_free(&ds);
    /* a messages column holds JSON */
    const char *msgs = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi, you\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}";
    char *p = write_file("msgs.csv", "messages\n\"[{\"\"role\"\":\"\"user\"\",\"\"content\"\":\"\"hi, you\"\"},"
                                     "{\"\"role\"\":\"\"assistant\"\",\"\"content\"\":\"\"yo\"\"}]\"\n");
    Want w = {2, msgs};
    expect_same_as_json(p, NULL, DS_SFT, &w, 1);
}

static void expect_error(const char *name, const char *content, const char *sheet, DsKind kind, const char *want_fmt) {
    char *path = content ? write_file(name, content) : (char *)name;
    DsOptions o;
    ds_options_default(&o);
    o.kind = kind;
    o.sheet = sheet;
    Dataset ds;
    char want[1024];
    snprintf(want, sizeof want, want_fmt, path);
    int rc = ds_load(path, tok, &o, &ds);
    CHECK(rc == -1 && strcmp(align_error(), want) == 0, "error:\n got  %s\n want %s", rc ? align_error() : "(loaded)",
          want);
    if (rc == 0) ds_free(&ds);
}

static void test_errors(void) {
    expect_error("e1.csv", "question,answer\nq1,a1\nq2,\n", NULL, DS_SFT, "%s:3: column \"answer\" is empty");
    expect_error("e2.csv", "question,answer\nq1,a \"b\" c\n", NULL, DS_SFT,
                 "%s:2: a quote inside a field that is not quoted, or text after a closing quote (RFC 4180: quote the "
                 "field and double its quotes, \"say \"\"hi\"\"\")");
    expect_error("e3.csv", "question,answer\nq1,a1\nq2,\"open\nstill open\n", NULL, DS_SFT,
                 "%s:3: a quoted field is not closed by the end of the file");
    expect_error("e4.csv", "question,answer\nq1,a1,extra\n", NULL, DS_SFT,
                 "%s:2: the row has 3 cells but the header names 2 columns (a comma inside an unquoted field?)");
    expect_error("e5.csv", "question, question\nq,a\n", NULL, DS_SFT, "%s:1: the header row names column \"question\" twice");
    expect_error("e6.csv", "prompt,chosen,rejected,margin\np,c,r,abc\n", NULL, DS_PREFERENCE,
                 "%s:2: column \"margin\": \"abc\" is not a number");
    expect_error("e7.csv", "question,answer\nq,caf\xE9\n", NULL, DS_SFT,
                 "%s:2: not valid UTF-8 (byte 0xE9 at column 6); convert the file to UTF-8 (Excel's \"CSV (Comma delimited)\" and Windows editors write Windows-1252: iconv -f cp1252 -t utf-8; or save as \"CSV UTF-8\")");
    expect_error("e8.csv", "", NULL, DS_SFT, "%s is empty (the first row names the fields: e.g. question,answer)");
    expect_error("e9.csv", "question,answer\nq,a\n", "Sheet1", DS_SFT,
                 "%s: --sheet Sheet1 names an Excel worksheet, and this is a CSV file");
    expect_error("e10.xlsx", "question,answer\n", NULL, DS_SFT,
                 "%s: not an Excel .xlsx workbook but text (a CSV saved under an .xlsx name? name it .csv or .tsv)");
    expect_error("e11.csv", "question,answer\nq,a\n", NULL, DS_PREFERENCE, "%s:2: missing field \"chosen\"");
    {
        /* pandas' 0/1 column with a gap is written as floats */
        char *q = write_file("kto_float.csv", "prompt,completion,label\np,c,1.0\np,d,0.0\n");
        Want fl[] = {{2, "{\"prompt\":\"p\",\"completion\":\"c\",\"label\":true}"},
                     {3, "{\"prompt\":\"p\",\"completion\":\"d\",\"label\":false}"}};
        expect_rows(table_open(q, NULL), "kto_float.csv", fl, 2);
    }
    expect_error("e12.csv", "prompt,completion,label\np,c,maybe\n", NULL, DS_SFT,
                 "%s:2: column \"label\": \"maybe\" is not true or false");
    expect_error("e13.csv", "messages\n[oops\n", NULL, DS_SFT,
                 "%s:2: column \"messages\" is not valid JSON (expected a list of {role, content} messages)");
    expect_error("e14.jsonl", "{\"question\":\"q\",\"answer\":\"a\"}\n", "qa", DS_SFT,
                 "%s: --sheet qa names an Excel worksheet, and this is not an .xlsx file");
    expect_error(TABLES "prefs.xlsx", NULL, "nope", DS_SFT,
                 "%s: no sheet named \"nope\" (the workbook has \"prefs\", \"qa\")");
    expect_error(TABLES "prefs.xlsx", NULL, NULL, DS_SFT, "%s:2: missing field \"completion\"");
    /* a blank last cell: a CSV line that stops early, and Excel, which
     * writes no cell for a blank one, name the empty column as "q,," does */
    expect_error("e15.csv", "question,answer\nq1,a1\nq2\n", NULL, DS_SFT, "%s:3: column \"answer\" is empty");
    expect_error(TABLES "bad.xlsx", NULL, "blank", DS_SFT, "%s:3: column \"answer\" is empty");
    expect_error(TABLES "bad.xlsx", NULL, "formula", DS_SFT,
                 "%s:3: column \"answer\" holds a formula with no saved result (the workbook was written by a "
                 "program that does not compute formulas, e.g. openpyxl): open and save it in Excel or LibreOffice, "
                 "or write the values");
    /* the separator the file really uses, named at the header */
    expect_error("e16.csv", "question;answer\nq;a\n", NULL, DS_SFT,
                 "%s:1: the header is one column \"question;answer\": the fields look separated by semicolons "
                 "(Excel's CSV where the decimal point is a comma); align reads commas in a .csv (RFC 4180): save it "
                 "as \"CSV UTF-8 (comma delimited)\" or as .xlsx");
    expect_error("e17.csv", "\xEF\xBB\xBFprompt\tchosen\trejected\np\tc\tr\n", NULL, DS_PREFERENCE,
                 "%s:1: the header is one column \"prompt\tchosen\trejected\": the fields look separated by tabs; "
                 "name the file .tsv to read it as TSV");
    expect_error("e18.tsv", "question,answer\nq,a\n", NULL, DS_SFT,
                 "%s:1: the header is one column \"question,answer\": the fields look separated by commas; name the "
                 "file .csv to read it as CSV");
    {
        /* Excel's "sep=;" first line names the separator: honoured, and the
         * rows keep their line numbers */
        char *q = write_file("sep.csv", "\xEF\xBB\xBFsep=;\r\nquestion;answer\r\nq;a, b\r\n");
        Want sep = {3, "{\"question\":\"q\",\"answer\":\"a, b\"}"};
        expect_rows(table_open(q, NULL), "sep.csv", &sep, 1);
    }
    /* a one-column file is still a one-column file */
    {
        char *q = write_file("one.csv", "text\nhello; world\n");
        Want one = {2, "{\"text\":\"hello; world\"}"};
        expect_rows(table_open(q, NULL), "one.csv", &one, 1);
    }
    /* .xlsx files that are not zip archives: why, from their first bytes */
    expect_error("e19.xlsx", "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1 rest of an OLE file", NULL, DS_SFT,
                 "%s: an Excel 97-2003 (.xls) or password-protected workbook, not an .xlsx one: save it in Excel as "
                 ".xlsx without a password, or as CSV");
    {
        FILE *f = fopen(TABLES "prefs.xlsx", "rb");
        static char buf[1 << 16];
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f) fclose(f);
        char *q = write_file("cut.xlsx", "");
        f = fopen(q, "wb");
        fwrite(buf, 1, n / 2, f); /* a download stopped halfway */
        fclose(f);
        expect_error(q, NULL, NULL, DS_SFT,
                     "%s: the .xlsx workbook is cut off or damaged (its zip directory cannot be read); copy or "
                     "download it again");
    }
    expect_error(TABLES "no-such-file.xlsx", NULL, NULL, DS_SFT, "cannot open data file %s");
    /* skip_bad: a bad row is counted and reading goes on after it */
    char *p = write_file("skip.csv", "question,answer\nq1,a1\nq2,\nq3,a3\n");
    DsOptions o;
    ds_options_default(&o);
    o.kind = DS_SFT;
    o.skip_bad = 1;
    Dataset ds;
    int rc = ds_load(p, tok, &o, &ds);
    CHECK(rc == 0 && ds.n == 2 && ds.n_bad == 1 && ds.ex[1].line == 4 && strstr(ds.first_bad, ":3: column \"answer\" is empty"),
          "skip_bad on a table: 2 kept, 1 skipped (%s)", rc ? align_error() : ds.first_bad);
    if (rc == 0) ds_free(&ds);
    /* a CSV syntax error stops reading even with skip_bad (the rows after it are unknown) */
    p = write_file("skip2.csv", "question,answer\nq1,a1\nq2,a \"b\" c\nq3,a3\n");
    rc = ds_load(p, tok, &o, &ds);
    CHECK(rc == -1 && strstr(align_error(), ":3: a quote inside"), "skip_bad stops at a CSV syntax error (%s)",
          rc ? align_error() : "loaded");
    if (rc == 0) ds_free(&ds);
    /* .xlsx: an error cell and a missing shared string are bad rows (skipped
     * with skip_bad, reading goes on); a sheet cut off stops the load */
    expect_error(TABLES "bad.xlsx", NULL, "errors", DS_SFT, "%s:3: column \"answer\" holds the Excel error #N/A");
    ds_options_default(&o);
    o.kind = DS_SFT;
    o.skip_bad = 1;
    o.sheet = "errors";
    rc = ds_load(TABLES "bad.xlsx", tok, &o, &ds);
    CHECK(rc == 0 && ds.n == 2 && ds.n_bad == 2 && ds.ex[0].line == 2 && ds.ex[1].line == 5 &&
              strstr(ds.first_bad, "bad.xlsx:3: column \"answer\" holds the Excel error #N/A"),
          "bad.xlsx errors: 2 kept, 2 skipped (%s)", rc ? align_error() : ds.first_bad);
    if (rc == 0) ds_free(&ds);
    TableReader *t = table_open(TABLES "bad.xlsx", "errors");
    const char *json;
    size_t len;
    long row;
    int k = t ? table_next(t, &json, &len, &row) : -9;
    k = t ? table_next(t, &json, &len, &row) : -9;
    k = t ? table_next(t, &json, &len, &row) : -9;
    CHECK(k == -1 && strstr(align_error(), "bad.xlsx:4: column \"answer\": shared string 7 does not exist (1 in the workbook)"),
          "a missing shared string (%d: %s)", k, align_error());
    table_close(t);
    o.sheet = "broken";
    rc = ds_load(TABLES "bad.xlsx", tok, &o, &ds);
    CHECK(rc == -1 && strstr(align_error(), "bad.xlsx: the sheet is not valid XML (in row 3)"), "a cut-off sheet stops (%s)",
          rc ? align_error() : "loaded");
    if (rc == 0) ds_free(&ds);
    /* capitalised field names in the header */
    p = write_file("caps.csv", " Question ,ANSWER,Notes\nq,a,n\n");
    Want caps = {2, "{\"question\":\"q\",\"answer\":\"a\",\"Notes\":\"n\"}"};
    expect_rows(table_open(p, NULL), "caps.csv", &caps, 1);
    /* all-empty rows are skipped; fewer cells than columns are missing values */
    p = write_file("gaps.csv", "question,answer,id\nq1,a1\n,,\nq2,a2,7\n");
    Want w[] = {{2, "{\"question\":\"q1\",\"answer\":\"a1\"}"}, {4, "{\"question\":\"q2\",\"answer\":\"a2\",\"id\":\"7\"}"}};
    expect_rows(table_open(p, NULL), "gaps.csv", w, 2);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/test_table_reader_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    tok = tok_load_hf_file(ALIGN_TEST_DIR "/fixtures/hf_tiny_qwen2/tokenizer.json");
    if (!tok) {
        fprintf(stderr, "tokenizer: %s\n", align_error());
        return 1;
    }
    test_rows();
    test_datasets();
    test_errors();
    tok_free(tok);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary();
}
