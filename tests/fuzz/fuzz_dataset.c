/* fuzz_dataset: libFuzzer target for dataset records (common/text/dataset.c).
 *
 * The input is the text of ONE JSONL record. It goes through
 * ds_parse_record for every DsKind (preference, SFT, prompt-only) and every
 * chat template (none, chatml, llama3, hh), with real byte-level BPE
 * tokenizers loaded once: the tiny Qwen2 tokenizer.json (ChatML control
 * tokens) for none/chatml/hh, the tiny Llama one (Llama-3 control tokens)
 * for llama3 (tests/fixtures/hf_tiny_*, path compiled in as
 * ALIGN_FUZZ_FIXTURES). The length limits vary with the input size so both
 * overflow modes and prompt truncation are reached. Accepted examples are
 * checked (ids inside the vocabulary, counts sane, chosen present when it
 * must be) and packed with ds_pack. Multi-turn SFT records train every
 * assistant turn or, for every other input size, the last only. Seeds:
 * tests/fuzz/corpus/fuzz_dataset. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "dataset.h"
#include "tokenizer.h"
#include "util.h"

#ifndef ALIGN_FUZZ_FIXTURES
#define ALIGN_FUZZ_FIXTURES "tests/fixtures"
#endif

static Tokenizer *tok_chatml, *tok_llama3;

static Tokenizer *load(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", ALIGN_FUZZ_FIXTURES, dir);
    Tokenizer *t = tok_load_hf_file(path);
    if (!t) {
        fprintf(stderr, "fuzz_dataset: cannot load %s: %s\n", path, align_error());
        abort();
    }
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    tok_chatml = load("hf_tiny_qwen2");
    tok_llama3 = load("hf_tiny_llama");
    return 0;
}

static void check_ids(const Tokenizer *t, const int32_t *ids, int n) {
    if (n < 0 || (n > 0 && !ids)) abort();
    int V = tok_vocab_size(t);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int max_lens[] = {0, 6, 24, 0, 3};
    for (int kind = DS_PREFERENCE; kind <= DS_UNPAIRED; kind++) {
        /* every template: the built-ins and each model family */
        for (int ti = 0; ti < CHAT_TEMPLATE_COUNT; ti++) {
            const Tokenizer *tok = ti == CHAT_TEMPLATE_LLAMA3 || ti == CHAT_TEMPLATE_LLAMA31 || ti == CHAT_TEMPLATE_LLAMA32
                                       ? tok_llama3
                                       : tok_chatml;
            DsOptions o;
            ds_options_default(&o);
            o.kind = (DsKind)kind;
            o.chat_template = (ChatTemplate)ti;
            o.max_length = max_lens[(size + ti) % 5];
            o.max_prompt_length = (size + kind) % 3 == 0 ? 4 : 0;
            o.overflow = (size + kind + ti) % 2 ? DS_OVERFLOW_DROP : DS_OVERFLOW_TRUNCATE;
            o.last_turn_only = (int)((size >> 1) & 1);
            DsExample ex;
            int rc = ds_parse_record((const char *)data, size, "fuzz.jsonl:1", tok, &o, &ex);
            if (rc == 1) {
                check_ids(tok, ex.prompt, ex.n_prompt);
                check_ids(tok, ex.chosen, ex.n_chosen);
                check_ids(tok, ex.rejected, ex.n_rejected);
                if (kind != DS_PROMPT && kind != DS_UNPAIRED && ex.n_chosen < 1) abort();
                if (kind == DS_UNPAIRED && ex.n_chosen < 1 && ex.n_rejected < 1) abort(); /* a side is labelled */
                if (kind == DS_PREFERENCE && ex.n_rejected < 1) abort();
                if (o.max_length > 0 && o.overflow == DS_OVERFLOW_TRUNCATE && kind != DS_PROMPT) {
                    int longest = ex.n_chosen > ex.n_rejected ? ex.n_chosen : ex.n_rejected;
                    if (ex.n_prompt + longest > o.max_length) abort();
                }
                if (kind != DS_PROMPT && ex.n_prompt + ex.n_chosen + ex.n_rejected > 0) {
                    DsSeq seqs[2];
                    int n = 0;
                    if (ex.n_chosen || kind != DS_UNPAIRED) seqs[n++] = ds_example_seq(&ex, 0);
                    if (kind == DS_PREFERENCE || (kind == DS_UNPAIRED && ex.n_rejected)) seqs[n++] = ds_example_seq(&ex, 1);
                    DsPacked p;
                    if (ds_pack(seqs, n, (int)(size & 1), &p) == 0) {
                        /* a multi-turn mask only ever removes completion rows from the loss */
                        if (p.n_loss_tokens > ex.n_chosen + ex.n_rejected) abort();
                        ds_packed_free(&p);
                    }
                }
            } else if (rc != 0 && rc != -1) {
                abort();
            }
            ds_example_free(&ex);
        }
    }
    return 0;
}
