/* test_reward_bos: the reward service's "texts" form (OpenRLHF's query,
 * which serve_rm tokenizes as tokenizer(query)) on a tokenizer that adds
 * BOS (tests/fixtures/add_bos/byte_level.json, ids from transformers):
 * BOS first, once, also when the query was decoded with its BOS text; the
 * split form's prompt starts with it too; no BOS on a tokenizer without. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "rm_proto.h"
#include "test.h"
#include "tokenizer.h"
#include "util.h"
#include "wire.h"

#define DIR ALIGN_TEST_DIR "/fixtures/add_bos/"

/* Decodes a score request of the given texts (or prompts + responses). */
static int decode(const Tokenizer *tok, const char *const *texts, const char *const *resp, size_t n, RmRequest *r) {
    WireWriter *w = wire_writer_new("score");
    void *data = NULL;
    size_t len = 0;
    int rc = resp ? wire_put_str_array(w, "prompts", texts, NULL, n) || wire_put_str_array(w, "responses", resp, NULL, n)
                  : wire_put_str_array(w, "texts", texts, NULL, n);
    if (rc) wire_writer_free(w);
    else rc = wire_finish(w, &data, &len); /* frees the writer */
    WireLimits wl = {0};
    WireMsg *m = rc ? NULL : wire_parse(data, len, &wl);
    free(data);
    if (!m) return -1;
    RmProtoLimits pl = {.vocab_size = tok_vocab_size(tok), .max_tokens = 1 << 16, .max_seqs = 16, .wire = wl};
    const char *code = NULL;
    rc = rm_request_decode(m, tok, CHAT_TEMPLATE_NONE, &pl, r, &code);
    wire_msg_free(m);
    return rc;
}

static int seq_is(const RmRequest *r, int i, const cJSON *want) {
    int n = (int)(r->roff[i + 1] - r->roff[i]);
    if (n != cJSON_GetArraySize(want)) return 0;
    for (int k = 0; k < n; k++)
        if (r->resp[r->roff[i] + k] != cJSON_GetArrayItem(want, k)->valueint) return 0;
    return 1;
}

int main(void) {
    size_t len;
    char *s = align_read_file(DIR "expected.json", &len);
    cJSON *exp = s ? cJSON_ParseWithLength(s, len) : NULL;
    free(s);
    Tokenizer *t = tok_load_hf_file(DIR "byte_level.json");
    Tokenizer *p = tok_load_hf_file(ALIGN_TEST_DIR "/fixtures/hf_tiny_llama/tokenizer.json");
    CHECK(exp && t && p, "fixtures: %s", align_error());
    if (!exp || !t || !p) return test_summary();
    const cJSON *e = cJSON_GetObjectItem(exp, "byte_level");
    const cJSON *with0 = cJSON_GetArrayItem(cJSON_GetObjectItem(e, "with"), 0);
    const cJSON *without0 = cJSON_GetArrayItem(cJSON_GetObjectItem(e, "without"), 0);
    const char *texts[] = {"The capital of France is", "<|begin_of_text|>The capital of France is"};
    RmRequest r;
    CHECK(decode(t, texts, NULL, 2, &r) == 0, "texts: %s", align_error());
    CHECK(r.n_seqs == 2 && seq_is(&r, 0, with0), "texts: tokenizer(query), BOS first");
    CHECK(r.n_seqs == 2 && seq_is(&r, 1, with0), "texts: a query that starts with the BOS token keeps one");
    rm_request_free(&r);
    CHECK(decode(p, texts, NULL, 1, &r) == 0 && seq_is(&r, 0, without0), "texts without add_bos: no BOS");
    rm_request_free(&r);
    const char *resp[] = {" Paris"};
    CHECK(decode(t, texts, resp, 1, &r) == 0 && r.poff && r.poff[1] == cJSON_GetArraySize(with0) &&
              r.prompt[0] == tok_bos_id(t) && r.resp[0] != tok_bos_id(t),
          "split: the prompt starts with BOS, the response has none");
    rm_request_free(&r);
    tok_free(t);
    tok_free(p);
    cJSON_Delete(exp);
    return test_summary();
}
