/* test_spm: SentencePiece-style BPE with byte fallback (Llama 2, Mistral,
 * TinyLlama) and Unigram models against Hugging Face `tokenizers` and
 * `sentencepiece` on a fixture corpus (tests/fixtures/spm, made by
 * make_spm_fixtures.py):
 *  - tokenizer.json in Llama 2's legacy form (Prepend + Replace normalizer),
 *    in the Metaspace form (prepend_scheme "first"), and Unigram (Metaspace
 *    "always" with split, with and without byte fallback): the ids of
 *    `tokenizers` with special tokens matched, and its decoded text;
 *  - the GGUF form (pieces, scores, types; merges derived from the scores):
 *    sentencepiece's own ids, special-token strings taken as text;
 *  - decode(encode(s)) == s, export to tokenizer.json and back gives the
 *    same ids, and forms align cannot follow are refused by name. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tokenizer.h"
#include "util.h"

#define DIR ALIGN_TEST_DIR "/fixtures/spm/"

static cJSON *load_json(const char *name) {
    size_t n;
    char *s = align_read_file(name, &n);
    cJSON *j = s ? cJSON_ParseWithLength(s, n) : NULL;
    free(s);
    return j;
}

static int ids_equal(const int32_t *got, int n, const cJSON *want) {
    if (n != cJSON_GetArraySize(want)) return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != cJSON_GetArrayItem(want, i)->valueint) return 0;
    return 1;
}

/* Every corpus text encodes to want[name] (and decodes to want[name_decoded]
 * when given); decode(encode(s)) == s with special tokens as text. */
static void check_corpus(const char *what, const Tokenizer *t, const cJSON *corpus, const cJSON *want,
                         const cJSON *decoded, int allow_special) {
    /* Metaspace forms add no dummy prefix to text that starts with a space */
    int metaspace = strstr(what, "metaspace") || strstr(what, "unigram");
    int32_t unk_id = strstr(what, "unigram") && !strstr(what, "bytes") ? tok_token_id(t, "<unk>") : -1;
    int n = cJSON_GetArraySize(corpus), same = 0, dec_same = 0, round = 0;
    for (int i = 0; i < n; i++) {
        const char *text = cJSON_GetArrayItem(corpus, i)->valuestring;
        int32_t *ids = NULL;
        int k = 0;
        if (tok_encode(t, text, strlen(text), allow_special, &ids, &k)) {
            CHECK(0, "%s: encode \"%s\": %s", what, text, align_error());
            continue;
        }
        int ok = ids_equal(ids, k, cJSON_GetArrayItem(want, i));
        same += ok;
        if (!ok) {
            fprintf(stderr, "%s: \"%s\": got", what, text);
            for (int j = 0; j < k; j++) fprintf(stderr, " %d", ids[j]);
            fprintf(stderr, "\n");
        }
        size_t len;
        char *back = tok_decode(t, ids, k, &len);
        if (decoded) dec_same += back && !strcmp(back, cJSON_GetArrayItem(decoded, i)->valuestring);
        free(back);
        free(ids);
        /* special-token strings as plain text: an exact round trip (with
         * Metaspace, a text that starts with a space gets no dummy prefix
         * and loses that space in decoding, in tokenizers too) */
        if (text[0] == ' ' && metaspace) {
            round++;
        } else if (tok_encode(t, text, strlen(text), 0, &ids, &k) == 0) {
            back = tok_decode(t, ids, k, &len);
            int unk = 0; /* without byte fallback, what the vocabulary lacks is lost */
            for (int j = 0; j < k; j++) unk |= ids[j] == unk_id && unk_id >= 0;
            round += unk || (back && len == strlen(text) && !memcmp(back, text, len));
            free(back);
            free(ids);
        }
    }
    printf("%s: %d of %d texts as the reference, %d decode as it, %d round trips\n", what, same, n,
           decoded ? dec_same : n, round);
    CHECK(same == n, "%s: %d of %d texts give the reference ids", what, same, n);
    if (decoded) CHECK(dec_same == n, "%s: %d of %d decode as tokenizers does", what, dec_same, n);
    CHECK(round == n, "%s: %d of %d texts round-trip", what, round, n);
}

/* tok_to_hf_json -> tok_load_hf_json: the same ids. */
static void check_export(const char *what, const Tokenizer *t, const cJSON *corpus, const cJSON *want,
                         int allow_special) {
    char *json = tok_to_hf_json(t);
    Tokenizer *back = json ? tok_load_hf_json(json, strlen(json), what) : NULL;
    free(json);
    CHECK(back != NULL, "%s: exported tokenizer.json loads: %s", what, align_error());
    if (!back) return;
    char name[128];
    snprintf(name, sizeof name, "%s, exported and re-read", what);
    check_corpus(name, back, corpus, want, NULL, allow_special);
    tok_free(back);
}

static Tokenizer *from_vocab_json(const cJSON *v) {
    const cJSON *toks = cJSON_GetObjectItem(v, "tokens"), *sc = cJSON_GetObjectItem(v, "scores"),
                *ty = cJSON_GetObjectItem(v, "token_type");
    int n = cJSON_GetArraySize(toks);
    const char **pieces = malloc(sizeof(char *) * n);
    float *scores = malloc(sizeof(float) * n);
    int32_t *types = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) {
        pieces[i] = cJSON_GetArrayItem(toks, i)->valuestring;
        scores[i] = (float)cJSON_GetArrayItem(sc, i)->valuedouble;
        types[i] = cJSON_GetArrayItem(ty, i)->valueint;
    }
    Tokenizer *t = tok_from_spm(pieces, scores, types, n, 1);
    free(pieces), free(scores), free(types);
    return t;
}

static void test_refusals(void) {
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}",
         "byte_fallback"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Metaspace\","
         "\"replacement\":\"_\",\"prepend_scheme\":\"always\"}}",
         "replacement"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Metaspace\","
         "\"replacement\":\"\\u2581\",\"prepend_scheme\":\"sometimes\"}}",
         "prepend_scheme"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"normalizer\":{\"type\":\"Prepend\","
         "\"prepend\":\"\\u2581\"}}",
         "Prepend"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        Tokenizer *t = tok_load_hf_json(bad[i].json, strlen(bad[i].json), "bad.json");
        CHECK(!t && strstr(align_error(), bad[i].want) && strstr(align_error(), "bad.json"),
              "refused, naming %s: %s", bad[i].want, t ? "(loaded)" : align_error());
        tok_free(t);
    }
}

int main(void) {
    cJSON *corpus = load_json(DIR "corpus.json"), *want = load_json(DIR "expected.json");
    cJSON *vocab = load_json(DIR "vocab.json");
    if (!corpus || !want || !vocab) {
        fprintf(stderr, "cannot read the fixtures in %s\n", DIR);
        return 1;
    }
    static const char *forms[] = {"legacy", "metaspace", "unigram", "unigram_bytes"};
    for (int f = 0; f < 4; f++) {
        char path[512], dec[64];
        snprintf(path, sizeof path, DIR "%s.json", forms[f]);
        snprintf(dec, sizeof dec, "%s_decoded", forms[f]);
        Tokenizer *t = tok_load_hf_file(path);
        CHECK(t != NULL, "%s: %s", path, align_error());
        if (!t) continue;
        check_corpus(forms[f], t, corpus, cJSON_GetObjectItem(want, forms[f]), cJSON_GetObjectItem(want, dec), 1);
        check_export(forms[f], t, corpus, cJSON_GetObjectItem(want, forms[f]), 1);
        tok_free(t);
    }
    Tokenizer *g = from_vocab_json(vocab);
    CHECK(g != NULL, "pieces + scores: %s", align_error());
    if (g) {
        CHECK(tok_token_id(g, "<unk>") == 0 && tok_is_special(g, 1) && tok_is_special(g, 2), "unknown and control pieces");
        check_corpus("GGUF-style pieces + scores vs sentencepiece", g, corpus, cJSON_GetObjectItem(want, "sp"), NULL, 0);
        check_export("GGUF-style pieces + scores", g, corpus, cJSON_GetObjectItem(want, "sp"), 0);
        tok_free(g);
    }
    test_refusals();
    cJSON_Delete(corpus), cJSON_Delete(want), cJSON_Delete(vocab);
    return test_summary();
}
