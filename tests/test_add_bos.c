/* test_add_bos: models whose tokenizer adds BOS (Llama 2/3, Mistral, Gemma)
 * against transformers' tokenizer(text) (tests/fixtures/add_bos, made by
 * make_add_bos_fixtures.py):
 *  - a post-processor that adds BOS (TemplateProcessing, also inside a
 *    Sequence) is recognised, tok_encode_start gives transformers' ids with
 *    special tokens and tok_encode its ids without, for byte-level BPE and
 *    SentencePiece BPE; it survives tok_to_hf_json, and tok_set_add_bos
 *    (GGUF's and tokenizer_config.json's add_bos_token) switches both ways;
 *  - a tokenizer without one (hf_tiny_llama, as SmolLM2 and Qwen) adds none,
 *    and given add_bos writes a post-processor transformers agrees with;
 *  - a Hugging Face directory's tokenizer_config.json add_bos_token decides
 *    over its tokenizer.json, both ways;
 *  - datasets: a raw {prompt, completion} or {text} record starts with BOS
 *    once and its completion has none; a text that starts with the BOS
 *    token keeps one; the chat-template path is unchanged. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "model_load.h"
#include "test.h"
#include "tokenizer.h"
#include "util.h"

#define DIR ALIGN_TEST_DIR "/fixtures/add_bos/"

static cJSON *load_json(const char *name) {
    size_t n;
    char *s = align_read_file(name, &n);
    cJSON *j = s ? cJSON_ParseWithLength(s, n) : NULL;
    free(s);
    return j;
}

static Tokenizer *load_tok(const char *path) {
    Tokenizer *t = tok_load_hf_file(path);
    CHECK(t != NULL, "load %s: %s", path, t ? "" : align_error());
    return t;
}

static int ids_equal(const int32_t *got, int n, const cJSON *want) {
    if (n != cJSON_GetArraySize(want)) return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != cJSON_GetArrayItem(want, i)->valueint) return 0;
    return 1;
}

/* Every text: encode_start == want, or tok_encode == want when start is 0. */
static int all_equal(const Tokenizer *t, const cJSON *texts, const cJSON *want, int start) {
    int ok = 1;
    for (int i = 0; i < cJSON_GetArraySize(texts); i++) {
        const char *s = cJSON_GetArrayItem(texts, i)->valuestring;
        int32_t *ids = NULL;
        int n = 0;
        int rc = start ? tok_encode_start(t, s, strlen(s), 0, &ids, &n) : tok_encode(t, s, strlen(s), 0, &ids, &n);
        if (rc || !ids_equal(ids, n, cJSON_GetArrayItem(want, i))) {
            fprintf(stderr, "  \"%s\" (%s): got", s, start ? "start" : "plain");
            for (int j = 0; j < n; j++) fprintf(stderr, " %d", ids[j]);
            fprintf(stderr, "\n");
            ok = 0;
        }
        free(ids);
    }
    return ok;
}

static Tokenizer *reload(const Tokenizer *t) {
    char *j = tok_to_hf_json(t);
    Tokenizer *r = j ? tok_load_hf_json(j, strlen(j), "exported") : NULL;
    free(j);
    CHECK(r != NULL, "reload: %s", align_error());
    return r;
}

static void check_family(const char *name, const cJSON *exp) {
    char path[512];
    snprintf(path, sizeof path, DIR "%s.json", name);
    const cJSON *texts = cJSON_GetObjectItem(exp, "texts"), *e = cJSON_GetObjectItem(exp, name);
    const cJSON *with = cJSON_GetObjectItem(e, "with"), *without = cJSON_GetObjectItem(e, "without");
    Tokenizer *t = load_tok(path);
    if (!t) return;
    CHECK(tok_add_bos(t) == 1, "%s: the post-processor adds BOS", name);
    CHECK(tok_bos_id(t) == cJSON_GetObjectItem(e, "bos_id")->valueint, "%s: bos id %d", name, tok_bos_id(t));
    CHECK(all_equal(t, texts, with, 1), "%s: tok_encode_start == transformers tokenizer(text)", name);
    CHECK(all_equal(t, texts, without, 0), "%s: tok_encode == tokenizer(text, add_special_tokens=False)", name);
    Tokenizer *r = reload(t);
    if (r) {
        CHECK(tok_add_bos(r) == 1 && all_equal(r, texts, with, 1), "%s: add_bos survives tok_to_hf_json", name);
        tok_free(r);
    }
    CHECK(tok_set_add_bos(t, 0) == 0, "%s: set off", name);
    CHECK(tok_add_bos(t) == 0 && all_equal(t, texts, without, 1), "%s: off: no BOS", name);
    r = reload(t);
    if (r) {
        CHECK(tok_add_bos(r) == 0, "%s: off survives tok_to_hf_json", name);
        tok_free(r);
    }
    CHECK(tok_set_add_bos(t, 1) == 0 && all_equal(t, texts, with, 1), "%s: on again", name);
    r = reload(t);
    if (r) {
        CHECK(tok_add_bos(r) == 1 && all_equal(r, texts, with, 1), "%s: on again survives tok_to_hf_json", name);
        tok_free(r);
    }
    tok_free(t);
}

/* The tokenizer a GGUF's add_bos_token builds on a tokenizer.json without a
 * post-processor (hf_tiny_llama: same vocabulary as byte_level.json). */
static void check_plain(const cJSON *exp) {
    const cJSON *texts = cJSON_GetObjectItem(exp, "texts"), *e = cJSON_GetObjectItem(exp, "byte_level");
    Tokenizer *t = load_tok(ALIGN_TEST_DIR "/fixtures/hf_tiny_llama/tokenizer.json");
    if (!t) return;
    CHECK(tok_add_bos(t) == 0, "hf_tiny_llama: no post-processor, no BOS");
    CHECK(all_equal(t, texts, cJSON_GetObjectItem(e, "without"), 1), "hf_tiny_llama: encode_start adds nothing");
    tok_set_special_ids(t, tok_token_id(t, "<|begin_of_text|>"), tok_eos_id(t), tok_pad_id(t));
    CHECK(tok_set_add_bos(t, 1) == 0, "hf_tiny_llama: set on");
    Tokenizer *r = reload(t);
    if (r) {
        CHECK(tok_add_bos(r) == 1 && all_equal(r, texts, cJSON_GetObjectItem(e, "with"), 1),
              "hf_tiny_llama + add_bos: the written post-processor gives transformers' ids");
        tok_free(r);
    }
    tok_free(t);
}

static int count(const int32_t *v, int n, int32_t x) {
    int k = 0;
    for (int i = 0; i < n; i++) k += v[i] == x;
    return k;
}

static void check_dataset(const cJSON *exp) {
    const cJSON *e = cJSON_GetObjectItem(exp, "byte_level");
    const cJSON *with0 = cJSON_GetArrayItem(cJSON_GetObjectItem(e, "with"), 0);
    const cJSON *plain1 = cJSON_GetArrayItem(cJSON_GetObjectItem(e, "without"), 1);
    Tokenizer *t = load_tok(DIR "byte_level.json");
    Tokenizer *p = load_tok(ALIGN_TEST_DIR "/fixtures/hf_tiny_llama/tokenizer.json");
    if (!t || !p) goto out;
    int32_t bos = tok_bos_id(t);
    int n_eos = tok_eos_id(t) >= 0; /* the EOS a raw completion ends with, when the tokenizer names one */
    DsOptions o;
    ds_options_default(&o);
    o.kind = DS_SFT;
    DsExample ex;
    const char *rec = "{\"prompt\": \"The capital of France is\", \"completion\": \"Hello world\"}";
    CHECK(ds_parse_record(rec, strlen(rec), "rec", t, &o, &ex) == 1, "raw record: %s", align_error());
    CHECK(ids_equal(ex.prompt, ex.n_prompt, with0), "raw prompt: BOS once, then transformers' ids");
    CHECK(ex.n_chosen == cJSON_GetArraySize(plain1) + n_eos && ids_equal(ex.chosen, ex.n_chosen - n_eos, plain1) &&
              count(ex.chosen, ex.n_chosen, bos) == 0,
          "completion: its text (and EOS), no BOS");
    ds_example_free(&ex);
    /* no BOS on a tokenizer that does not add it */
    CHECK(ds_parse_record(rec, strlen(rec), "rec", p, &o, &ex) == 1 && ex.n_prompt == cJSON_GetArraySize(with0) - 1 &&
              count(ex.prompt, ex.n_prompt, bos) == 0,
          "raw prompt without add_bos: unchanged");
    ds_example_free(&ex);
    const char *lead = "{\"prompt\": \"<|begin_of_text|>The capital of France is\", \"completion\": \"x\"}";
    CHECK(ds_parse_record(lead, strlen(lead), "rec", t, &o, &ex) == 1 && ids_equal(ex.prompt, ex.n_prompt, with0),
          "a prompt that starts with the BOS token gets no second one");
    ds_example_free(&ex);
    const char *text = "{\"text\": \"The capital of France is\"}";
    CHECK(ds_parse_record(text, strlen(text), "rec", t, &o, &ex) == 1 && ex.n_prompt == 0 &&
              ex.n_chosen == cJSON_GetArraySize(with0) + n_eos && ids_equal(ex.chosen, ex.n_chosen - n_eos, with0),
          "{text}: BOS once, then the text (and EOS)");
    ds_example_free(&ex);
    /* a chat template renders its own BOS: the same ids with and without add_bos */
    o.chat_template = CHAT_TEMPLATE_LLAMA3;
    DsExample a, b;
    int ra = ds_parse_record(rec, strlen(rec), "rec", t, &o, &a), rb = ds_parse_record(rec, strlen(rec), "rec", p, &o, &b);
    CHECK(ra == 1 && rb == 1 && a.n_prompt == b.n_prompt && !memcmp(a.prompt, b.prompt, a.n_prompt * sizeof *a.prompt) &&
              a.n_chosen == b.n_chosen && !memcmp(a.chosen, b.chosen, a.n_chosen * sizeof *a.chosen),
          "llama3 template: ids unchanged by add_bos");
    CHECK(ra == 1 && count(a.prompt, a.n_prompt, bos) == 1 && a.prompt[0] == bos, "llama3 template: one BOS, first");
    if (ra == 1) ds_example_free(&a);
    if (rb == 1) ds_example_free(&b);
out:
    tok_free(t);
    tok_free(p);
}

/* hf_tiny_llama's weights with the given tokenizer.json and a
 * tokenizer_config.json saying add_bos_token: the bundle's tokenizer. */
static void check_config(const char *tokenizer_json, int add, const cJSON *texts, const cJSON *want) {
    char dir[] = "/tmp/test_add_bos_XXXXXX", src[1024], dst[1024];
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    const char *files[] = {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json"};
    for (int i = 0; i < 4; i++) {
        snprintf(src, sizeof src, ALIGN_TEST_DIR "/fixtures/hf_tiny_llama/%s", files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        CHECK(symlink(src, dst) == 0, "link %s", files[i]);
    }
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    CHECK(symlink(tokenizer_json, dst) == 0, "link tokenizer.json");
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(dst, "w");
    if (f) fprintf(f, "{\"bos_token\": \"<|begin_of_text|>\", \"add_bos_token\": %s}\n", add ? "true" : "false"), fclose(f);
    ModelBundle b;
    int rc = model_load_any(dir, &backend_cpu, MODEL_LOAD_TOKENIZER, &b);
    CHECK(rc == 0, "load %s: %s", dir, rc ? align_error() : "");
    if (!rc) {
        CHECK(tok_add_bos(b.tok) == add && all_equal(b.tok, texts, want, 1),
              "tokenizer_config.json add_bos_token %d decides over %s", add, tokenizer_json);
        Tokenizer *r = tok_load_hf_json(b.extras.tokenizer_json, strlen(b.extras.tokenizer_json), "kept");
        CHECK(r && tok_add_bos(r) == add, "the tokenizer.json the bundle keeps (.ckpt, export) says %d", add);
        tok_free(r);
        model_bundle_free(&b);
    }
    const char *all[] = {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                         "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 6; i++) {
        snprintf(dst, sizeof dst, "%s/%s", dir, all[i]);
        unlink(dst);
    }
    rmdir(dir);
}

int main(void) {
    cJSON *exp = load_json(DIR "expected.json");
    CHECK(exp != NULL, "read %sexpected.json", DIR);
    if (exp) {
        check_family("byte_level", exp);
        check_family("spm", exp);
        check_plain(exp);
        check_dataset(exp);
        const cJSON *texts = cJSON_GetObjectItem(exp, "texts"), *e = cJSON_GetObjectItem(exp, "byte_level");
        check_config(ALIGN_TEST_DIR "/fixtures/hf_tiny_llama/tokenizer.json", 1, texts, cJSON_GetObjectItem(e, "with"));
        check_config(DIR "byte_level.json", 0, texts, cJSON_GetObjectItem(e, "without"));
    }
    cJSON_Delete(exp);
    return test_summary();
}
