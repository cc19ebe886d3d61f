/* fuzz_table: libFuzzer target for table data files (common/text/table_reader.c).
 *
 * The input's first byte picks the format: 0 CSV, 1 TSV, 2 .xlsx (first
 * sheet), 3 .xlsx --sheet qa; the rest is the file, read from memory with
 * table_open_mem. Every row handed out must be one JSON object, and goes on
 * through ds_parse_record as an SFT and a preference record (the tiny Qwen2
 * tokenizer, ChatML), so table rows reach the record checks as they do in
 * training. Seeds: tests/fuzz/corpus/fuzz_table (the fixtures of
 * tests/fixtures/tables, written by make_corpus.py). */
#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "dataset.h"
#include "table_reader.h"
#include "tokenizer.h"
#include "util.h"

#ifndef ALIGN_FUZZ_FIXTURES
#define ALIGN_FUZZ_FIXTURES "tests/fixtures"
#endif

static Tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    tok = tok_load_hf_file(ALIGN_FUZZ_FIXTURES "/hf_tiny_qwen2/tokenizer.json");
    if (!tok) {
        fprintf(stderr, "fuzz_table: %s\n", align_error());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char *const names[] = {"f.csv", "f.tsv", "f.xlsx", "f.xlsx"};
    int kind = data[0] % 4;
    TableReader *t = table_open_mem(names[kind], data + 1, size - 1, kind == 3 ? "qa" : NULL);
    if (!t) return 0;
    for (int rows = 0; rows < 10000; rows++) {
        const char *json;
        size_t len;
        long row;
        int k = table_next(t, &json, &len, &row);
        if (k == 0 || k == -2) break;
        if (k < 0) continue;
        cJSON *o = cJSON_ParseWithLength(json, len);
        if (!o || !cJSON_IsObject(o) || row < 1) abort();
        cJSON_Delete(o);
        for (int kind2 = DS_PREFERENCE; kind2 <= DS_SFT; kind2++) {
            DsOptions opt;
            ds_options_default(&opt);
            opt.kind = (DsKind)kind2;
            opt.chat_template = CHAT_TEMPLATE_CHATML;
            opt.max_length = 64;
            DsExample ex;
            if (ds_parse_record(json, len, "row", tok, &opt, &ex) == 1) ds_example_free(&ex);
        }
    }
    table_close(t);
    return 0;
}
