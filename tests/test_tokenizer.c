/* test_tokenizer: byte-level BPE against Hugging Face `tokenizers`.
 *
 * Reference: tests/fixtures/tokenizer/ (made by
 * tests/fixtures/make_tokenizer_fixtures.py with `tokenizers` 0.23): a
 * corpus (English, code, CJK, emoji, white-space runs, digits, contractions,
 * special-token strings, mixed newlines, random mixes) and the exact ids for
 * GPT-2's vocabulary under the GPT-2, Llama-3, Qwen2 and SmolLM2
 * pre-tokenizers with their added tokens. The tokenizer.json files are
 * assembled here from spec.json and GPT-2's real vocabulary in
 * fixtures/gpt2, so the 1.5 MB vocabulary is stored once, not per variant.
 * Tolerance: none, every id must match.
 *
 * `test_tokenizer --dump DIR` also writes tok_to_hf_json's output per variant
 * to DIR, for the fixture script's --check-export (HF loads our export). */
#include <cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tokenizer.h"
#include "util.h"

static cJSON *corpus, *expected, *spec, *encoder;
static char **merges;
static int n_merges;

static cJSON *load_json(const char *path) {
    size_t n;
    char *s = align_read_file(path, &n);
    if (!s) {
        fprintf(stderr, "cannot read %s: %s\n", path, align_error());
        exit(1);
    }
    cJSON *j = cJSON_ParseWithLength(s, n);
    free(s);
    if (!j) {
        fprintf(stderr, "%s is not JSON\n", path);
        exit(1);
    }
    return j;
}

static void load_gpt2_merges(void) {
    size_t n;
    char *s = align_read_file(ALIGN_TEST_DIR "/fixtures/gpt2/vocab.bpe", &n);
    if (!s) exit(1);
    merges = malloc(60000 * sizeof *merges);
    char *line = strtok(s, "\n");
    for (int i = 0; line; line = strtok(NULL, "\n"), i++) {
        if (i == 0 && line[0] == '#') continue;
        merges[n_merges++] = strdup(line);
    }
    free(s);
}

/* spec.json variant + fixtures/gpt2 vocabulary -> tokenizer.json text. */
static char *build_hf_json(const char *variant) {
    const cJSON *v = cJSON_GetObjectItem(spec, variant);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    const char *keys[] = {"added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"};
    for (int i = 0; i < 5; i++)
        cJSON_AddItemToObject(root, keys[i], cJSON_Duplicate(cJSON_GetObjectItem(v, keys[i]), 1));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(v, "model_extra"))
        cJSON_AddItemToObject(model, it->string, cJSON_Duplicate(it, 1));
    cJSON_AddItemToObject(model, "vocab", cJSON_Duplicate(encoder, 1));
    int pairs = strcmp(cJSON_GetObjectItem(v, "merges_format")->valuestring, "pairs") == 0;
    cJSON *m = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < n_merges; i++) {
        if (pairs) {
            char *a = strdup(merges[i]), *b = strchr(a, ' ');
            *b++ = 0;
            const char *ab[2] = {a, b};
            cJSON_AddItemToArray(m, cJSON_CreateStringArray(ab, 2));
            free(a);
        } else {
            cJSON_AddItemToArray(m, cJSON_CreateString(merges[i]));
        }
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static int ids_equal(const int32_t *got, int n, const cJSON *want) {
    if (n != cJSON_GetArraySize(want)) return 0;
    int i = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, want) if (got[i++] != w->valueint) return 0;
    return 1;
}

static void print_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "  %s:", what);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Every corpus text: ids equal to the fixture with special tokens on and
 * off, and decode(encode(text)) == text. */
static void check_corpus(const Tokenizer *t, const char *variant, const char *how) {
    const cJSON *exp = cJSON_GetObjectItem(expected, variant);
    const cJSON *special = cJSON_GetObjectItem(exp, "special"), *plain = cJSON_GetObjectItem(exp, "plain");
    int k = 0, bad = 0;
    const cJSON *text;
    cJSON_ArrayForEach(text, corpus) {
        const char *s = text->valuestring;
        size_t len = strlen(s);
        for (int allow = 1; allow >= 0; allow--) {
            char key[16];
            snprintf(key, sizeof key, "%d", k);
            const cJSON *want = cJSON_GetArrayItem(special, k);
            if (!allow && cJSON_GetObjectItem(plain, key)) want = cJSON_GetObjectItem(plain, key);
            int32_t *ids;
            int n;
            int rc = tok_encode(t, s, len, allow, &ids, &n);
            CHECK(rc == 0, "%s/%s: encode failed: %s", variant, how, align_error());
            if (rc) continue;
            int ok = ids_equal(ids, n, want);
            CHECK(ok, "%s/%s: text %d (allow_special=%d) ids differ from tokenizers", variant, how, k, allow);
            if (!ok && bad++ < 3) {
                print_ids("got ", ids, n);
                char *w = cJSON_PrintUnformatted(want);
                fprintf(stderr, "  want: %.300s\n", w);
                free(w);
            }
            size_t dl;
            char *d = tok_decode(t, ids, n, &dl);
            CHECK(d && dl == len && memcmp(d, s, len) == 0, "%s/%s: text %d does not decode back", variant, how, k);
            free(d);
            free(ids);
        }
        k++;
    }
}

static const char *VARIANTS[] = {"gpt2", "gpt2_pairs", "llama3", "qwen2", "smollm"};

static void test_hf_variants(const char *dump_dir) {
    for (int v = 0; v < 5; v++) {
        char *json = build_hf_json(VARIANTS[v]);
        Tokenizer *t = tok_load_hf_json(json, strlen(json), VARIANTS[v]);
        free(json);
        CHECK(t != NULL, "%s: load failed: %s", VARIANTS[v], align_error());
        if (!t) continue;
        check_corpus(t, VARIANTS[v], "tokenizer.json");
        /* the export loads back and gives the same ids */
        char *out = tok_to_hf_json(t);
        CHECK(out != NULL, "%s: export failed: %s", VARIANTS[v], align_error());
        Tokenizer *t2 = out ? tok_load_hf_json(out, strlen(out), "export") : NULL;
        CHECK(t2 != NULL, "%s: export does not load back: %s", VARIANTS[v], align_error());
        if (t2) {
            check_corpus(t2, VARIANTS[v], "exported");
            CHECK(tok_pretok(t2) == tok_pretok(t), "%s: export keeps the pre-tokenizer", VARIANTS[v]);
        }
        if (dump_dir && out) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s.json", dump_dir, VARIANTS[v]);
            FILE *f = fopen(path, "w");
            if (f) {
                fputs(out, f);
                fclose(f);
            }
        }
        free(out);
        tok_free(t2);
        tok_free(t);
    }
}

static void test_detect_pretok(void) {
    const TokPretok want[] = {TOK_PRE_GPT2, TOK_PRE_GPT2, TOK_PRE_LLAMA3, TOK_PRE_QWEN2, TOK_PRE_SMOLLM};
    for (int v = 0; v < 5; v++) {
        char *json = build_hf_json(VARIANTS[v]);
        Tokenizer *t = tok_load_hf_json(json, strlen(json), VARIANTS[v]);
        free(json);
        CHECK(t && tok_pretok(t) == want[v], "%s: pre-tokenizer detected as %d", VARIANTS[v], t ? (int)tok_pretok(t) : -1);
        tok_free(t);
    }
}

static void test_gpt2_files(void) {
    Tokenizer *t = tok_load_gpt2_files(ALIGN_TEST_DIR "/fixtures/gpt2/encoder.json", ALIGN_TEST_DIR "/fixtures/gpt2/vocab.bpe");
    CHECK(t != NULL, "gpt2 files: %s", align_error());
    if (!t) return;
    check_corpus(t, "gpt2", "encoder.json+vocab.bpe");
    CHECK(tok_vocab_size(t) == 50257, "gpt2 vocab size %d", tok_vocab_size(t));
    CHECK(tok_eos_id(t) == 50256 && tok_bos_id(t) == 50256, "gpt2 bos/eos are <|endoftext|>");
    CHECK(tok_pad_id(t) == -1, "gpt2 has no pad");
    CHECK(tok_token_id(t, "Ġthe") == 262, "id of \"Ġthe\" is 262");
    CHECK(tok_token_str(t, 262) && strcmp(tok_token_str(t, 262), "Ġthe") == 0, "token 262 is \"Ġthe\"");
    CHECK(tok_token_id(t, "no-such-token-xyz") == -1, "unknown token string gives -1");
    CHECK(tok_is_special(t, 50256) && !tok_is_special(t, 262), "<|endoftext|> is special, Ġthe is not");
    const char *b;
    size_t bl;
    CHECK(tok_token_bytes(t, 262, &b, &bl) == 0 && bl == 4 && memcmp(b, " the", 4) == 0, "token 262 is \" the\"");
    tok_set_special_ids(t, 1, 2, 3);
    CHECK(tok_bos_id(t) == 1 && tok_eos_id(t) == 2 && tok_pad_id(t) == 3, "tok_set_special_ids sets them");
    int32_t bad[] = {5, 50257};
    CHECK(tok_decode(t, bad, 2, NULL) == NULL && strstr(align_error(), "50257"),
          "decoding an id out of range fails naming it: %s", align_error());
    tok_free(t);
}

/* GGUF-style construction: vocabulary in id order, "a b" merges, token types
 * 3 (control) / 4 (user-defined) for added tokens. */
static void test_from_vocab(void) {
    const char *variant[] = {"qwen2", "llama3", "smollm"};
    TokPretok pre[] = {TOK_PRE_QWEN2, TOK_PRE_LLAMA3, TOK_PRE_SMOLLM};
    for (int v = 0; v < 3; v++) {
        const cJSON *added = cJSON_GetObjectItem(cJSON_GetObjectItem(spec, variant[v]), "added_tokens"), *a, *it;
        int n = 50257;
        cJSON_ArrayForEach(a, added) if (cJSON_GetObjectItem(a, "id")->valueint + 1 > n) n =
            cJSON_GetObjectItem(a, "id")->valueint + 1;
        const char **toks = calloc((size_t)n, sizeof *toks);
        int32_t *types = calloc((size_t)n, sizeof *types);
        cJSON_ArrayForEach(it, encoder) {
            toks[it->valueint] = it->string;
            types[it->valueint] = 1;
        }
        cJSON_ArrayForEach(a, added) {
            int id = cJSON_GetObjectItem(a, "id")->valueint;
            toks[id] = cJSON_GetObjectItem(a, "content")->valuestring;
            types[id] = cJSON_IsTrue(cJSON_GetObjectItem(a, "special")) ? 3 : 4;
        }
        Tokenizer *t = tok_from_vocab(toks, n, (const char *const *)merges, n_merges, types, pre[v]);
        CHECK(t != NULL, "from_vocab %s: %s", variant[v], align_error());
        if (t) check_corpus(t, variant[v], "tok_from_vocab");
        tok_free(t);
        free(toks);
        free(types);
    }
}

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Random valid UTF-8 (every plane, surrogates excluded) and random bytes
 * (mostly invalid UTF-8): decode(encode(s)) == s, never a crash. */
static void test_roundtrip_random(void) {
    const char *variants[] = {"gpt2", "llama3", "qwen2", "smollm"};
    char buf[1024];
    for (int v = 0; v < 4; v++) {
        char *json = build_hf_json(variants[v]);
        Tokenizer *t = tok_load_hf_json(json, strlen(json), variants[v]);
        free(json);
        if (!t) continue;
        int fails = 0;
        for (int trial = 0; trial < 600; trial++) {
            size_t len = 0;
            int mode = trial % 3, n = 1 + (int)(rnd() % 60);
            for (int i = 0; i < n && len < sizeof buf - 8; i++) {
                uint32_t cp, r = rnd() % 100;
                if (mode == 2) {
                    buf[len++] = (char)(rnd() & 0xff);  /* raw bytes */
                    continue;
                }
                if (r < 40) cp = 0x20 + rnd() % 0x5f;
                else if (r < 55) cp = "\t\n\r \x0b\x0c"[rnd() % 6];
                else if (r < 75) cp = 0x80 + rnd() % 0x780;
                else if (r < 90) cp = 0x800 + rnd() % 0xF800;
                else cp = 0x10000 + rnd() % 0x100000;
                if (cp >= 0xD800 && cp < 0xE000) cp = 'x';
                if (mode == 1 && r % 7 == 0) {  /* special-token text in the middle */
                    const char *sp = "<|endoftext|>";
                    memcpy(buf + len, sp, strlen(sp));
                    len += strlen(sp);
                    if (len > sizeof buf - 64) break;
                    continue;
                }
                len += put_utf8(buf + len, cp);
            }
            for (int allow = 0; allow < 2; allow++) {
                int32_t *ids;
                int nid;
                if (tok_encode(t, buf, len, allow, &ids, &nid)) {
                    fails++;
                    continue;
                }
                size_t dl;
                char *d = tok_decode(t, ids, nid, &dl);
                if (!d || dl != len || memcmp(d, buf, len) != 0) fails++;
                free(d);
                free(ids);
            }
        }
        CHECK(fails == 0, "%s: %d random strings did not round-trip", variants[v], fails);
        tok_free(t);
    }
}

typedef struct {
    const Tokenizer *t;
    int bad;
} ThreadArg;

static void *thread_encode(void *p) {
    ThreadArg *a = p;
    for (int rep = 0; rep < 5; rep++) {
        int k = 0;
        const cJSON *text;
        cJSON_ArrayForEach(text, corpus) {
            int32_t *ids;
            int n;
            const cJSON *want = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(expected, "llama3"), "special"), k++);
            if (tok_encode(a->t, text->valuestring, strlen(text->valuestring), 1, &ids, &n) || !ids_equal(ids, n, want))
                a->bad++;
            else
                free(ids);
        }
    }
    return NULL;
}

/* One tokenizer, four threads at once (the piece cache is shared). */
static void test_threads(void) {
    char *json = build_hf_json("llama3");
    Tokenizer *t = tok_load_hf_json(json, strlen(json), "llama3");
    free(json);
    pthread_t th[4];
    ThreadArg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (ThreadArg){t, 0};
        pthread_create(&th[i], NULL, thread_encode, &args[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        bad += args[i].bad;
    }
    CHECK(bad == 0, "threads: %d encodes differ", bad);
    tok_free(t);
}

static void test_pretok_names(void) {
    TokPretok p;
    CHECK(tok_pretok_from_name("llama-bpe", &p) == 0 && p == TOK_PRE_LLAMA3, "llama-bpe is Llama-3");
    CHECK(tok_pretok_from_name("smollm", &p) == 0 && p == TOK_PRE_SMOLLM, "smollm is SmolLM");
    CHECK(tok_pretok_from_name("qwen2", &p) == 0 && p == TOK_PRE_QWEN2, "qwen2 is Qwen2");
    CHECK(tok_pretok_from_name("gpt-2", &p) == 0 && p == TOK_PRE_GPT2, "gpt-2 is GPT-2");
    CHECK(tok_pretok_from_name("deepseek-coder", &p) == -1 && strstr(align_error(), "deepseek-coder"),
          "an unknown name is refused: %s", align_error());
    for (int i = 0; i < 4; i++)
        CHECK(tok_pretok_from_name(tok_pretok_name((TokPretok)i), &p) == 0 && p == (TokPretok)i,
              "name of %d maps back", i);
}

static void test_errors(void) {
    Tokenizer *t = tok_load_hf_json("{not json", 9, "bad.json");
    CHECK(!t && strstr(align_error(), "bad.json"), "invalid JSON names the file: %s", align_error());
    const char *unk_merge =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]},"
        "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}";
    t = tok_load_hf_json(unk_merge, strlen(unk_merge), "m.json");
    CHECK(!t && strstr(align_error(), "merge 1"), "a merge whose result is not in the vocabulary: %s", align_error());
    const char *wp = "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}";
    t = tok_load_hf_json(wp, strlen(wp), "wp.json");
    CHECK(!t && strstr(align_error(), "WordPiece"), "a WordPiece model is refused: %s", align_error());
    const char *meta =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Metaspace\"}}";
    t = tok_load_hf_json(meta, strlen(meta), "sp.json");
    CHECK(!t && strstr(align_error(), "Metaspace"), "a Metaspace pre-tokenizer is refused: %s", align_error());
    /* a vocabulary without byte tokens cannot encode every byte: an error, not a crash */
    const char *tiny =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]},"
        "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}";
    t = tok_load_hf_json(tiny, strlen(tiny), "tiny.json");
    CHECK(t != NULL, "tiny vocabulary loads: %s", align_error());
    if (t) {
        int32_t *ids;
        int n;
        CHECK(tok_encode(t, "abab", 4, 1, &ids, &n) == 0 && n == 2 && ids[0] == 2 && ids[1] == 2, "abab -> [2, 2]");
        if (n == 2) free(ids);
        CHECK(tok_encode(t, "abc", 3, 1, &ids, &n) == -1 && strstr(align_error(), "0x63"),
              "a byte with no token is an error: %s", align_error());
        CHECK(tok_encode(t, "", 0, 1, &ids, &n) == 0 && n == 0, "empty text gives no ids");
        free(ids);
        tok_free(t);
    }
    CHECK(tok_load_gpt2_files("/nonexistent/encoder.json", "/nonexistent/vocab.bpe") == NULL &&
              strstr(align_error(), "/nonexistent/encoder.json"),
          "a missing file is named: %s", align_error());
}

int main(int argc, char **argv) {
    const char *dump = argc == 3 && strcmp(argv[1], "--dump") == 0 ? argv[2] : NULL;
    corpus = load_json(ALIGN_TEST_DIR "/fixtures/tokenizer/corpus.json");
    expected = load_json(ALIGN_TEST_DIR "/fixtures/tokenizer/expected.json");
    spec = load_json(ALIGN_TEST_DIR "/fixtures/tokenizer/spec.json");
    encoder = load_json(ALIGN_TEST_DIR "/fixtures/gpt2/encoder.json");
    load_gpt2_merges();
    test_gpt2_files();
    test_hf_variants(dump);
    test_detect_pretok();
    test_from_vocab();
    test_roundtrip_random();
    test_threads();
    test_pretok_names();
    test_errors();
    return test_summary();
}
