/* test_hf_import: importing real Hugging Face directories.
 *
 * Fixtures (tests/fixtures/hf_tiny_{gpt2,llama,qwen2}, made by
 * make_format_fixtures.py with transformers) cover GPT-2 names without the
 * "transformer." prefix in F16, a sharded BF16 Llama with GQA and llama3
 * rope scaling, and an F32 Qwen2 with q/k/v biases and tied embeddings.
 * For each:
 *   - every imported tensor equals the file's tensor (transposed where HF
 *     stores Conv1D [in, out]);
 *   - next-token log-probs of two sequences, packed in one batch, match
 *     transformers' within 1e-5 (fp32 arithmetic, weights exactly as stored);
 *   - hf_tiny_llama31 (transformers 5's "rope_parameters", llama3 scaling,
 *     a 56-token sequence past original_max_position_embeddings, weights
 *     large enough that attention is not uniform): also its RoPE table;
 *   - .ckpt round trip and HF export -> re-import are bit-exact;
 *   - the chat template is recognised, and the tokenizer (when tokenizer.c
 *     is built) encodes the sample text to transformers' ids. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "hf_export.h"
#include "hf_import.h"
#include "model_load.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

static char tmpdir[256];

static cJSON *read_json(const char *path) {
    size_t n;
    char *s = align_read_file(path, &n);
    if (!s) return NULL;
    cJSON *j = cJSON_ParseWithLength(s, n);
    free(s);
    return j;
}

/* Every parameter equals its tensor in the directory's (possibly sharded)
 * files, read independently here. */
static void check_tensors(const char *dir, Model *m) {
    const char *files[4] = {0};
    int nf = 0;
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    static char shard_paths[4][1024];
    if (access(path, R_OK) == 0) {
        snprintf(shard_paths[0], 1024, "%s", path);
        files[nf++] = shard_paths[0];
    } else {
        for (int i = 1; i <= 2; i++) {
            snprintf(shard_paths[nf], 1024, "%s/model-0000%d-of-00002.safetensors", dir, i);
            files[nf] = shard_paths[nf];
            nf++;
        }
    }
    int mismatches = 0, found = 0;
    for (int k = 0; k < nf; k++) {
        StFile f;
        if (st_open(&f, files[k]) != 0) {
            CHECK(0, "open %s: %s", files[k], align_error());
            continue;
        }
        for (int i = 0; i < m->n_params; i++) {
            ParamInfo *p = &m->info[i];
            const StTensor *t = st_find(&f, p->name);
            if (!t && !strncmp(p->name, "transformer.", 12)) t = st_find(&f, p->name + 12);
            if (!t) continue;
            found++;
            float *buf = malloc(p->numel * sizeof(float));
            st_read_f32(&f, t, buf);
            const float *got = m->params + p->offset;
            for (size_t e = 0; e < p->numel; e++) {
                size_t src = e;
                if (p->hf_transposed) { /* ours [R, C] <- file [C, R] */
                    size_t r = e / p->shape[1], c = e % p->shape[1];
                    src = c * p->shape[0] + r;
                }
                if (memcmp(&got[e], &buf[src], 4) != 0) {
                    mismatches++;
                    break;
                }
            }
            free(buf);
        }
        st_close(&f);
    }
    CHECK(found == m->n_params, "%s: found %d of %d tensors in the files", dir, found, m->n_params);
    CHECK(mismatches == 0, "%s: %d tensors differ from the file", dir, mismatches);
}

static void check_logprobs(const char *name, Model *m, const cJSON *ref) {
    const cJSON *seqs = cJSON_GetObjectItem(ref, "sequences");
    const cJSON *lps = cJSON_GetObjectItem(ref, "logprobs");
    int n_seqs = cJSON_GetArraySize(seqs), n = 0;
    int32_t tokens[256], starts[9] = {0};
    float want[256];
    for (int s = 0; s < n_seqs && s < 8; s++) {
        const cJSON *seq = cJSON_GetArrayItem(seqs, s), *lp = cJSON_GetArrayItem(lps, s);
        int len = cJSON_GetArraySize(seq);
        for (int i = 0; i < len; i++) {
            tokens[n + i] = cJSON_GetArrayItem(seq, i)->valueint;
            want[n + i] = i + 1 < len ? (float)cJSON_GetArrayItem(lp, i)->valuedouble : 0.0f;
        }
        n += len;
        starts[s + 1] = n;
    }
    Batch b = {n, n_seqs, tokens, starts};
    int32_t targets[256];
    float got[256];
    batch_next_token_targets(&b, targets);
    CHECK(model_forward(m, &b) == 0, "%s: forward: %s", name, align_error());
    CHECK(model_token_logprobs(m, targets, got) == 0, "%s: logprobs: %s", name, align_error());
    double worst = 0;
    for (int i = 0; i < n; i++)
        if (targets[i] >= 0) worst = fmax(worst, fabs(got[i] - want[i]));
    double worst_sum = 0;
    for (int s = 0; s < n_seqs; s++) {
        double d = 0;
        for (int i = starts[s]; i < starts[s + 1] - 1; i++) d += got[i] - want[i];
        worst_sum = fmax(worst_sum, fabs(d));
    }
    printf("%s: max |logp - transformers| = %.3g over %d tokens, summed per sequence %.3g\n", name, worst,
           n - n_seqs, worst_sum);
    CHECK(worst <= 1e-5, "%s: log-probs differ from transformers by %.3g", name, worst);
    CHECK(worst_sum <= 1e-4, "%s: summed log-probs differ from transformers by %.3g", name, worst_sum);
    /* The RoPE table itself, where the fixture records transformers' */
    const cJSON *inv = cJSON_GetObjectItem(ref, "inv_freq");
    if (inv) {
        const float *ours = model_rope_inv_freq(m);
        int k = cJSON_GetArraySize(inv), same = k == m->cfg.head_dim / 2;
        double rel = 0;
        for (int j = 0; same && j < k; j++) {
            double w = cJSON_GetArrayItem(inv, j)->valuedouble;
            rel = fmax(rel, fabs(ours[j] - w) / w);
        }
        printf("%s: RoPE inverse frequencies: max relative difference %.3g\n", name, rel);
        CHECK(same && rel <= 1e-6, "%s: RoPE inverse frequencies differ from transformers' (relative %.3g)", name, rel);
    }
}

static int same_params(const Model *a, const Model *b) {
    return a->n_elems == b->n_elems &&
           memcmp(a->params, b->params, a->n_elems * sizeof(float)) == 0;
}

static void test_fixture(const char *name, const char *want_template, int want_tied) {
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/fixtures/%s", ALIGN_TEST_DIR, name);
    snprintf(path, sizeof path, "%s/reference.json", dir);
    cJSON *ref = read_json(path);
    CHECK(ref != NULL, "%s: reference.json", name);
    if (!ref) return;
    ModelBundle b;
    int rc = model_load_any(dir, &backend_cpu, 0, &b);
    CHECK(rc == 0, "%s: import: %s", name, align_error());
    if (rc != 0) {
        cJSON_Delete(ref);
        return;
    }
    Model *m = b.model;
    CHECK(m->cfg.vocab_size == 300 && m->cfg.dim == 32 && m->cfg.n_layers == 2,
          "%s: config sizes", name);
    CHECK(m->cfg.tied_embeddings == want_tied, "%s: tied embeddings", name);
    CHECK(b.extras.tokenizer_json != NULL, "%s: tokenizer.json read", name);
    if (want_template)
        CHECK(b.extras.chat_template && !strcmp(b.extras.chat_template, want_template),
              "%s: chat template %s detected (got %s)", name, want_template,
              b.extras.chat_template ? b.extras.chat_template : "none");
    check_tensors(dir, m);
    check_logprobs(name, m, ref);

    /* .ckpt round trip, then HF export -> re-import: bit-exact. */
    snprintf(path, sizeof path, "%s/%s.ckpt", tmpdir, name);
    CHECK(ckpt_save(path, m, &b.extras) == 0, "%s: save: %s", name, align_error());
    ModelBundle c;
    if (model_load_any(path, &backend_cpu, 0, &c) == 0) {
        CHECK(same_params(m, c.model), "%s: .ckpt round trip not bit-exact", name);
        const char *j1 = b.extras.chat_template_jinja, *j2 = c.extras.chat_template_jinja;
        CHECK((!j1 && !j2) || (j1 && j2 && !strcmp(j1, j2)),
              "%s: chat template source kept in the .ckpt", name);
        snprintf(path, sizeof path, "%s/export_%s", tmpdir, name);
        CHECK(hf_export_dir(path, c.model, &c.extras) == 0, "%s: export: %s", name, align_error());
        ModelBundle d;
        if (model_load_any(path, &backend_cpu, 0, &d) == 0) {
            CHECK(same_params(m, d.model), "%s: export -> import not bit-exact", name);
            CHECK(d.model->cfg.sliding_window == m->cfg.sliding_window &&
                      d.model->cfg.window_from_layer == m->cfg.window_from_layer &&
                      c.model->cfg.sliding_window == m->cfg.sliding_window,
                  "%s: sliding window kept by .ckpt and export (%d from layer %d)", name, d.model->cfg.sliding_window,
                  d.model->cfg.window_from_layer);
            model_bundle_free(&d);
        } else {
            CHECK(0, "%s: re-import: %s", name, align_error());
        }
        model_bundle_free(&c);
    } else {
        CHECK(0, "%s: load .ckpt: %s", name, align_error());
    }

    /* The tokenizer agrees with transformers' on the sample text. */
    Tokenizer *tok = tok_load_hf_json(b.extras.tokenizer_json, strlen(b.extras.tokenizer_json), dir);
    CHECK(tok != NULL, "%s: tokenizer.json loads: %s", name, align_error());
    if (tok) {
        const char *text = cJSON_GetObjectItem(ref, "text")->valuestring;
        const cJSON *ids = cJSON_GetObjectItem(ref, "text_ids");
        int32_t *got = NULL;
        int n = 0;
        CHECK(tok_encode(tok, text, strlen(text), 0, &got, &n) == 0, "%s: encode", name);
        int same = n == cJSON_GetArraySize(ids);
        for (int i = 0; same && i < n; i++) same = got[i] == cJSON_GetArrayItem(ids, i)->valueint;
        CHECK(same, "%s: token ids differ from transformers'", name);
        free(got);
        tok_free(tok);
    }
    model_bundle_free(&b);
    cJSON_Delete(ref);
}

/* The windowed fixtures test the window: what their configs say is read,
 * and the same weights without the window miss transformers' log-probs. */
static void test_window_matters(void) {
    static const struct {
        const char *name;
        int window, from;
    } fx[] = {{"hf_tiny_mistral_sw", 5, 0}, {"hf_tiny_qwen2_sw", 7, 1}};
    for (int i = 0; i < 2; i++) {
        char dir[1024], path[1200];
        snprintf(dir, sizeof dir, "%s/fixtures/%s", ALIGN_TEST_DIR, fx[i].name);
        ModelBundle b;
        if (model_load_any(dir, &backend_cpu, 0, &b)) {
            CHECK(0, "%s: %s", fx[i].name, align_error());
            continue;
        }
        Model *m = b.model;
        CHECK(m->cfg.sliding_window == fx[i].window && m->cfg.window_from_layer == fx[i].from &&
                  model_layer_window(&m->cfg, 0) == (fx[i].from ? 0 : fx[i].window) &&
                  model_layer_window(&m->cfg, 1) == fx[i].window,
              "%s: window %d from layer %d read (got %d from %d)", fx[i].name, fx[i].window, fx[i].from,
              m->cfg.sliding_window, m->cfg.window_from_layer);
        snprintf(path, sizeof path, "%s/reference.json", dir);
        cJSON *ref = read_json(path);
        const cJSON *seq = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "sequences"), 0);
        const cJSON *lp = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "logprobs"), 0);
        int n = cJSON_GetArraySize(seq);
        int32_t tokens[128], starts[2] = {0, n}, targets[128];
        float got[128];
        for (int k = 0; k < n; k++) tokens[k] = cJSON_GetArrayItem(seq, k)->valueint;
        m->cfg.sliding_window = 0; /* full attention on the same weights */
        Batch bt = {n, 1, tokens, starts};
        batch_next_token_targets(&bt, targets);
        double worst = 0;
        if (model_forward(m, &bt) == 0 && model_token_logprobs(m, targets, got) == 0)
            for (int k = 0; k + 1 < n; k++)
                worst = fmax(worst, fabs(got[k] - cJSON_GetArrayItem(lp, k)->valuedouble));
        CHECK(worst > 1e-2, "%s: without the window the log-probs move (by %.3g)", fx[i].name, worst);
        cJSON_Delete(ref);
        model_bundle_free(&b);
    }
}

static void test_errors(void) {
    ModelBundle b;
    CHECK(model_load_any("/nonexistent/model", &backend_cpu, 0, &b) == -1 &&
              strstr(align_error(), "/nonexistent/model"),
          "missing path refused: %s", align_error());
    CHECK(model_load_any(tmpdir, &backend_cpu, 0, &b) == -1 && strstr(align_error(), tmpdir),
          "directory without config.json refused: %s", align_error());
    /* A directory whose config needs a tensor the weights lack. */
    char dir[600], cmd[4096];
    snprintf(dir, sizeof dir, "%s/broken", tmpdir);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && cp %s/fixtures/hf_tiny_qwen2/config.json %s/ && "
             "sed -i 's/\"num_hidden_layers\": 2/\"num_hidden_layers\": 3/' %s/config.json && "
             "cp %s/fixtures/hf_tiny_qwen2/model.safetensors %s/",
             dir, ALIGN_TEST_DIR, dir, dir, ALIGN_TEST_DIR, dir);
    CHECK(system(cmd) == 0, "make broken dir");
    CHECK(model_load_any(dir, &backend_cpu, 0, &b) == -1 && strstr(align_error(), "model.layers.2"),
          "missing layer refused: %s", align_error());
}

/* A tokenizer that does not fit the model's vocabulary is refused at load:
 * larger (ids without an embedding) or smaller by more than padding; the
 * padding Hugging Face models carry is accepted. */
static void test_vocab_mismatch(void) {
    const char *specials[] = {"<|endoftext|>"};
    Tokenizer *byte = tok_byte_level(specials, 1); /* 257 tokens */
    char *tj = tok_to_hf_json(byte);
    int t = tok_vocab_size(byte);
    static const struct {
        int vocab, ok;
        const char *says;
    } cases[] = {{257, 1, ""}, {257 + 64, 1, ""}, {257 + 128, 1, ""}, {200, 0, "ids 200 and up have no embedding"},
                 {256, 0, "ids 256 and up"}, {257 + 129, 0, "more than padding"}, {4096, 0, "more than padding"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ModelConfig c;
        model_config_defaults(&c, ARCH_LLAMA);
        c.vocab_size = cases[i].vocab, c.dim = 16, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 2, c.ffn_dim = 32, c.head_dim = 8;
        c.max_seq_len = 32;
        Model *m = model_create(&c, &backend_cpu);
        CHECK(m != NULL, "model: %s", align_error());
        if (!m) continue;
        model_init_random(m, 1);
        CkptExtras ex;
        ckpt_extras_init(&ex);
        ckpt_extras_set(&ex.tokenizer_json, tj);
        char path[600];
        snprintf(path, sizeof path, "%s/vocab%d.ckpt", tmpdir, cases[i].vocab);
        CHECK(ckpt_save(path, m, &ex) == 0, "save: %s", align_error());
        ckpt_extras_free(&ex);
        model_free(m);
        ModelBundle b;
        int rc = model_load_any(path, &backend_cpu, MODEL_LOAD_TOKENIZER, &b);
        if (cases[i].ok) {
            CHECK(rc == 0, "tokenizer %d, vocabulary %d accepted: %s", t, cases[i].vocab, align_error());
            if (rc == 0) model_bundle_free(&b);
        } else {
            CHECK(rc == -1 && strstr(align_error(), path) && strstr(align_error(), cases[i].says),
                  "tokenizer %d, vocabulary %d refused: %s", t, cases[i].vocab, rc ? align_error() : "(loaded)");
        }
    }
    free(tj);
    tok_free(byte);
}

/* transformers' save_pretrained (4.5x and 5) writes the template to
 * chat_template.jinja, not tokenizer_config.json, and from_pretrained lets
 * that file win over a tokenizer_config entry: a model TRL saved today
 * must not load as one without a template. */
static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_template_file(void) {
    char src[600], dir[600], path[700], cmd[4096];
    snprintf(src, sizeof src, "%s/fixtures/hf_tiny_qwen2", ALIGN_TEST_DIR);
    snprintf(dir, sizeof dir, "%s/jinja", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/config.json %s/model.safetensors %s/tokenizer.json %s/", dir, src,
             src, src, dir);
    CHECK(system(cmd) == 0, "make %s", dir);
    /* the llama3 template (hf_tiny_llama's) in the file; the config's entry
     * first removed, then kept (chatml) to show the file wins */
    snprintf(path, sizeof path, "%s/fixtures/hf_tiny_llama/tokenizer_config.json", ALIGN_TEST_DIR);
    cJSON *llama = read_json(path);
    const char *l3 = cJSON_GetStringValue(cJSON_GetObjectItem(llama, "chat_template"));
    snprintf(path, sizeof path, "%s/tokenizer_config.json", src);
    cJSON *qcfg = read_json(path);
    CHECK(l3 && qcfg, "read the fixtures' tokenizer configs");
    if (!l3 || !qcfg) return;
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    write_text(path, l3);
    for (int keep = 0; keep < 2; keep++) {
        cJSON *cfg = cJSON_Duplicate(qcfg, 1);
        if (!keep) cJSON_DeleteItemFromObject(cfg, "chat_template");
        char *text = cJSON_Print(cfg);
        snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
        write_text(path, text);
        free(text);
        cJSON_Delete(cfg);
        ModelBundle b;
        int rc = model_load_any(dir, &backend_cpu, 0, &b);
        CHECK(rc == 0, "load %s: %s", dir, align_error());
        if (rc) continue;
        CHECK(b.extras.chat_template && !strcmp(b.extras.chat_template, "llama3") && b.extras.chat_template_jinja &&
                  !strcmp(b.extras.chat_template_jinja, l3),
              "chat_template.jinja is the template (%s in tokenizer_config.json): got %s", keep ? "chatml" : "none",
              b.extras.chat_template ? b.extras.chat_template : "no template");
        model_bundle_free(&b);
    }
    /* exporting a chatml model over that directory: the stale file must not
     * hand transformers (or align) the llama3 template */
    snprintf(path, sizeof path, "%s/fixtures/hf_tiny_qwen2", ALIGN_TEST_DIR);
    ModelBundle q, back;
    CHECK(model_load_any(path, &backend_cpu, 0, &q) == 0, "load qwen2: %s", align_error());
    CHECK(model_save_any(dir, &q) == 0, "export over %s: %s", dir, align_error());
    CHECK(model_load_any(dir, &backend_cpu, 0, &back) == 0, "reload: %s", align_error());
    CHECK(back.extras.chat_template && !strcmp(back.extras.chat_template, "chatml") &&
              !strcmp(back.extras.chat_template_jinja, q.extras.chat_template_jinja),
          "an export over a directory with chat_template.jinja keeps its own template: got %s",
          back.extras.chat_template ? back.extras.chat_template : "none");
    model_bundle_free(&q);
    model_bundle_free(&back);
    cJSON_Delete(llama);
    cJSON_Delete(qcfg);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/align_test_hf_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_fixture("hf_tiny_gpt2", NULL, 1);
    test_fixture("hf_tiny_llama", "llama3", 0);
    test_fixture("hf_tiny_qwen2", "chatml", 1);
    test_fixture("hf_tiny_llama31", "llama3", 0); /* rope_parameters (transformers 5), llama3 scaling */
    test_fixture("hf_tiny_mistral_sw", "llama3", 0); /* sliding_window 5 < the 56-token sequence */
    test_fixture("hf_tiny_qwen2_sw", "chatml", 1);   /* window 7 on layer 1 only (max_window_layers 1) */
    test_window_matters();
    test_errors();
    test_vocab_mismatch();
    test_template_file();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
