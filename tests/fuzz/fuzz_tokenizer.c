/* fuzz_tokenizer: libFuzzer target for tokenizer.json loading
 * (tok_load_hf_json in common/text/tokenizer.c).
 *
 * The input is the text of a tokenizer.json. When it loads, a fixed string
 * (ASCII, digits, contractions, whitespace runs, Chinese, emoji, a special
 * token string) is encoded with and without special tokens and decoded
 * back; every id must lie in the vocabulary. (Exact round trips are not
 * asserted: a fuzzed vocabulary may lack byte tokens and map them to its
 * unk_token; test_tokenizer checks them on real vocabularies.) Then the
 * tokenizer is serialised with tok_to_hf_json and loaded again (the .ckpt
 * route): what align writes, align must read back.
 * Seeds: tests/fuzz/corpus/fuzz_tokenizer (the fixtures' tokenizer.json). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static const char TEXT[] =
    "Hello world! It's 2024: don't   stop\n\n\tcode(x) {return 42;} "
    "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80 <|im_end|> <|endoftext|> caf\xc3\xa9";

static void exercise(const Tokenizer *t) {
    int V = tok_vocab_size(t);
    if (V < 0) abort();
    for (int special = 0; special <= 1; special++) {
        int32_t *ids = NULL;
        int n = 0;
        if (tok_encode(t, TEXT, sizeof TEXT - 1, special, &ids, &n) == 0) {
            for (int i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= V) abort();
            size_t len = 0;
            char *s = tok_decode(t, ids, n, &len);
            if (s && strlen(s) > len) abort(); /* len counts every byte (NULs too) */
            free(s);
        }
        free(ids);
    }
    for (int32_t id = -1; id <= V && id < 64; id++) {
        const char *b;
        size_t bl;
        tok_token_bytes(t, id, &b, &bl);
        tok_token_str(t, id);
        tok_is_special(t, id);
    }
    tok_token_id(t, "<|im_end|>");
    tok_bos_id(t), tok_eos_id(t), tok_pad_id(t);
    tok_pretok(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Tokenizer *t = tok_load_hf_json((const char *)data, size, "fuzz/tokenizer.json");
    if (!t) return 0;
    exercise(t);
    char *json = tok_to_hf_json(t);
    if (json) {
        Tokenizer *t2 = tok_load_hf_json(json, strlen(json), "fuzz/reserialised.json");
        /* what align wrote, align must read back, with the same vocabulary */
        if (!t2 || tok_vocab_size(t2) != tok_vocab_size(t)) abort();
        exercise(t2);
        tok_free(t2);
        free(json);
    }
    tok_free(t);
    return 0;
}
