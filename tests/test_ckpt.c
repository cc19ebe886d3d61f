/* test_ckpt: the .ckpt checkpoint, config.json mapping and HF export.
 *
 * Specification checked here (no Python needed):
 *   - the checksum is XXH64 (published test vectors), streaming == one shot;
 *   - config.json written for GPT-2, Llama, Qwen2 (q/k/v bias), llama3 rope
 *     scaling and a value-head model reads back to the same ModelConfig;
 *     unsupported keys are refused by name;
 *   - a .ckpt round trip is bit-exact for parameters, metadata, training
 *     state and optimizer moments (Conv1D tensors really are stored [in,out]);
 *   - a flipped data byte, a truncated file, or a missing file is refused
 *     with an error naming the file;
 *   - HF export then import is bit-exact;
 *   - a save removes the temp files of its path left by dead processes (a
 *     kill during a save), and keeps a live process's and other paths';
 *   - a model holding a NaN or Inf is refused by both writers, naming the
 *     parameter, and nothing is left on disk. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt.h"
#include "hf_export.h"
#include "hf_import.h"
#include "model_config_json.h"
#include "model_load.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

static char tmpdir[256];

static void tiny_gpt2(ModelConfig *c) {
    model_config_defaults(c, ARCH_GPT2);
    c->vocab_size = 64;
    c->dim = 32;
    c->n_layers = 2;
    c->n_heads = 4;
    c->n_kv_heads = 4;
    c->head_dim = 8;
    c->ffn_dim = 128;
    c->max_seq_len = 16;
    c->bos_id = c->eos_id = 63;
}

static void tiny_llama(ModelConfig *c) {
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 64;
    c->dim = 32;
    c->n_layers = 2;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = 8;
    c->ffn_dim = 48;
    c->max_seq_len = 64;
    c->norm_eps = 1e-5f;
    c->rope_theta = 100000.0f;
    c->qkv_bias = 1;
    c->tied_embeddings = 0;
    c->value_head = 1;
    c->bos_id = 1;
    c->eos_id = 2;
    c->pad_id = 0;
}

static int same_config(const ModelConfig *a, const ModelConfig *b) {
    return a->arch == b->arch && a->vocab_size == b->vocab_size && a->dim == b->dim &&
           a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->ffn_dim == b->ffn_dim && a->max_seq_len == b->max_seq_len &&
           a->norm_eps == b->norm_eps && a->rope_scaling == b->rope_scaling &&
           (a->arch == ARCH_GPT2 || a->rope_theta == b->rope_theta) && a->qkv_bias == b->qkv_bias &&
           a->tied_embeddings == b->tied_embeddings && a->lm_head == b->lm_head &&
           a->value_head == b->value_head && a->bos_id == b->bos_id && a->eos_id == b->eos_id &&
           a->pad_id == b->pad_id && a->rope_factor == b->rope_factor &&
           a->rope_low_freq_factor == b->rope_low_freq_factor &&
           a->rope_high_freq_factor == b->rope_high_freq_factor &&
           a->rope_original_max_pos == b->rope_original_max_pos;
}

static void test_hash(void) {
    CHECK(ckpt_hash64("", 0) == 0xEF46DB3751D8E999ULL, "xxh64 of empty");
    CHECK(ckpt_hash64("a", 1) == 0xD24EC4F1A98C6E5BULL, "xxh64 of \"a\"");
    CHECK(ckpt_hash64("abc", 3) == 0x44BC2CF5AD770999ULL, "xxh64 of \"abc\"");
    unsigned char buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (unsigned char)(i * 7 + 3);
    uint64_t whole = ckpt_hash64(buf, sizeof buf);
    int ok = 1;
    for (size_t split = 0; split <= 1000; split += 37) {
        CkptHash h;
        ckpt_hash_init(&h);
        ckpt_hash_update(&h, buf, split / 3);
        ckpt_hash_update(&h, buf + split / 3, split - split / 3);
        ckpt_hash_update(&h, buf + split, sizeof buf - split);
        ok &= ckpt_hash_final(&h) == whole;
    }
    CHECK(ok, "streaming hash equals one-shot hash at every split");
}

static void config_round_trip(const ModelConfig *c, const char *what) {
    char *json = model_config_to_hf_json(c);
    CHECK(json != NULL, "%s: to json: %s", what, align_error());
    if (!json) return;
    ModelConfig back;
    int rc = model_config_from_hf_json(json, strlen(json), "test", &back);
    CHECK(rc == 0, "%s: from json: %s", what, align_error());
    if (rc == 0) CHECK(same_config(c, &back), "%s: config differs after a round trip:\n%s", what, json);
    free(json);
}

static void expect_config_refused(const char *json, const char *needle) {
    ModelConfig c;
    int rc = model_config_from_hf_json(json, strlen(json), "cfg.json", &c);
    CHECK(rc == -1 && strstr(align_error(), needle) && strstr(align_error(), "cfg.json"),
          "config %s should be refused mentioning \"%s\" (got rc %d: %s)", json, needle, rc,
          align_error());
}

static void test_config_json(void) {
    ModelConfig c;
    tiny_gpt2(&c);
    config_round_trip(&c, "gpt2");
    tiny_llama(&c);
    config_round_trip(&c, "qwen2 with value head");
    c.qkv_bias = 0;
    c.value_head = 0;
    c.tied_embeddings = 1;
    c.rope_scaling = ROPE_SCALING_LLAMA3;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_original_max_pos = 8192;
    config_round_trip(&c, "llama3 rope");
    c.rope_scaling = ROPE_SCALING_LINEAR;
    c.rope_low_freq_factor = c.rope_high_freq_factor = 0;
    c.rope_original_max_pos = 0;
    config_round_trip(&c, "linear rope");
    c.rope_scaling = ROPE_SCALING_NONE;
    c.rope_factor = 1;
    c.lm_head = 0;
    c.value_head = 1;
    config_round_trip(&c, "llama reward model");
    char *json = model_config_to_hf_json(&c);
    CHECK(json && strstr(json, "LlamaForSequenceClassification"), "reward model architecture");
    free(json);

    /* A real-looking HF config (SmolLM2-135M's keys). */
    const char *smol =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":576,"
        "\"intermediate_size\":1536,\"num_hidden_layers\":30,\"num_attention_heads\":9,"
        "\"num_key_value_heads\":3,\"max_position_embeddings\":8192,\"rms_norm_eps\":1e-05,"
        "\"rope_theta\":100000,\"rope_scaling\":null,\"tie_word_embeddings\":true,"
        "\"vocab_size\":49152,\"bos_token_id\":1,\"eos_token_id\":[2,3],\"hidden_act\":\"silu\","
        "\"attention_bias\":false,\"torch_dtype\":\"bfloat16\"}";
    CHECK(model_config_from_hf_json(smol, strlen(smol), "smol", &c) == 0, "smollm2 config: %s",
          align_error());
    CHECK(c.arch == ARCH_LLAMA && c.n_layers == 30 && c.dim == 576 && c.n_heads == 9 &&
              c.n_kv_heads == 3 && c.head_dim == 64 && c.ffn_dim == 1536 && c.tied_embeddings &&
              c.vocab_size == 49152 && c.eos_id == 2 && c.pad_id == -1 && c.lm_head &&
              !c.value_head && c.rope_theta == 100000.0f,
          "smollm2 config values");
    const char *gpt2 = "{\"model_type\":\"gpt2\",\"n_embd\":768,\"n_layer\":12,\"n_head\":12,"
                       "\"n_positions\":1024,\"n_inner\":null,\"vocab_size\":50257,"
                       "\"activation_function\":\"gelu_new\"}";
    CHECK(model_config_from_hf_json(gpt2, strlen(gpt2), "gpt2", &c) == 0 && c.ffn_dim == 3072 &&
              c.tied_embeddings && c.head_dim == 64,
          "gpt2 config with n_inner null: %s", align_error());

    expect_config_refused("{\"model_type\":\"bert\"}", "bert");
    expect_config_refused("[1,2]", "JSON object");
    expect_config_refused("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":1,"
                          "\"num_attention_heads\":4,\"intermediate_size\":8,\"vocab_size\":10,"
                          "\"hidden_act\":\"gelu\"}",
                          "hidden_act");
    expect_config_refused("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":1,"
                          "\"num_attention_heads\":4,\"intermediate_size\":8,\"vocab_size\":10,"
                          "\"attention_bias\":true}",
                          "attention_bias");
    expect_config_refused("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":1,"
                          "\"num_attention_heads\":4,\"intermediate_size\":8,\"vocab_size\":10,"
                          "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}",
                          "yarn");
    expect_config_refused("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":1,"
                          "\"num_attention_heads\":4,\"intermediate_size\":8,\"vocab_size\":\"x\"}",
                          "vocab_size");
    expect_config_refused("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":0,"
                          "\"num_attention_heads\":4,\"intermediate_size\":8,\"vocab_size\":10}",
                          "n_layers");
}

static int same_params(const Model *a, const Model *b) {
    return a->n_elems == b->n_elems && a->n_params == b->n_params &&
           memcmp(a->params, b->params, a->n_elems * sizeof(float)) == 0;
}

static void test_ckpt_round_trip(const ModelConfig *cfg, const char *what) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.ckpt", tmpdir, what);
    Model *m = model_create(cfg, &backend_cpu);
    CHECK(m != NULL, "%s: create: %s", what, align_error());
    if (!m) return;
    model_init_random(m, 1234);
    float *m1 = malloc(m->n_grad_elems * sizeof(float)), *m2 = malloc(m->n_grad_elems * sizeof(float));
    for (size_t i = 0; i < m->n_grad_elems; i++) {
        m1[i] = (float)i * 1e-3f;
        m2[i] = 1.0f / (1.0f + (float)i);
    }
    CkptExtras x;
    ckpt_extras_init(&x);
    ckpt_extras_set(&x.tokenizer_json, "{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\"}}");
    ckpt_extras_set(&x.chat_template, "chatml");
    ckpt_extras_set(&x.train_state, "{\"step\":17,\"rng\":[1,2,3],\"cursor\":99}");
    CHECK(ckpt_extras_add_moments(&x, m, m1, m2) == 0, "%s: add moments", what);
    CHECK(ckpt_save(path, m, &x) == 0, "%s: save: %s", what, align_error());

    Model *back = NULL;
    CkptExtras y;
    CHECK(ckpt_load(path, &backend_cpu, &back, &y) == 0, "%s: load: %s", what, align_error());
    if (back) {
        CHECK(same_config(&m->cfg, &back->cfg), "%s: config differs", what);
        CHECK(same_params(m, back), "%s: parameters not bit-exact", what);
        CHECK(y.tokenizer_json && strcmp(y.tokenizer_json, x.tokenizer_json) == 0,
              "%s: tokenizer text", what);
        CHECK(y.chat_template && strcmp(y.chat_template, "chatml") == 0, "%s: template", what);
        CHECK(y.train_state && strcmp(y.train_state, x.train_state) == 0, "%s: train_state", what);
        float *n1 = calloc(m->n_grad_elems, sizeof(float)), *n2 = calloc(m->n_grad_elems, sizeof(float));
        CHECK(ckpt_extras_get_moments(&y, back, n1, n2) == 0, "%s: get moments: %s", what,
              align_error());
        CHECK(memcmp(n1, m1, m->n_grad_elems * 4) == 0 && memcmp(n2, m2, m->n_grad_elems * 4) == 0,
              "%s: moments bit-exact", what);
        free(n1);
        free(n2);
        ckpt_extras_free(&y);
        model_free(back);
    }
    /* The file is plain safetensors in HF layout. */
    StFile f;
    CHECK(st_open(&f, path) == 0, "%s: st_open", what);
    if (cfg->arch == ARCH_GPT2) {
        const StTensor *t = st_find(&f, "transformer.h.0.mlp.c_fc.weight");
        CHECK(t && t->shape[0] == cfg->dim && t->shape[1] == cfg->ffn_dim,
              "c_fc stored in HF [in, out] layout");
        CHECK(st_find(&f, "lm_head.weight") == NULL, "tied lm_head not stored");
    } else {
        CHECK(st_find(&f, "score.weight") != NULL, "score.weight stored");
        CHECK(st_find(&f, "model.layers.1.self_attn.k_proj.bias") != NULL, "qkv bias stored");
    }
    size_t data_off = (size_t)(f.data - (const uint8_t *)f.map), map_len = f.map_len;
    st_close(&f);

    /* Corruption: one flipped bit in the data section. */
    size_t len;
    char *bytes = align_read_file(path, &len);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/bad_%s.ckpt", tmpdir, what);
    bytes[data_off + (map_len - data_off) / 2] ^= 0x10;
    FILE *o = fopen(bad, "wb");
    fwrite(bytes, 1, len, o);
    fclose(o);
    Model *mm = NULL;
    CHECK(ckpt_load(bad, &backend_cpu, &mm, NULL) == -1 && strstr(align_error(), bad) &&
              strstr(align_error(), "checksum"),
          "%s: flipped bit refused: %s", what, align_error());
    /* Truncation at a few places. */
    int refused = 0, tries = 0;
    for (size_t cut = 0; cut < len; cut += len / 13 + 1, tries++) {
        o = fopen(bad, "wb");
        fwrite(bytes, 1, cut, o);
        fclose(o);
        if (ckpt_load(bad, &backend_cpu, &mm, NULL) == -1 && strstr(align_error(), bad)) refused++;
        else model_free(mm);
    }
    CHECK(refused == tries, "%s: truncated files refused (%d of %d)", what, refused, tries);
    free(bytes);
    CHECK(ckpt_load("/nonexistent/x.ckpt", &backend_cpu, &mm, NULL) == -1 &&
              strstr(align_error(), "/nonexistent/x.ckpt"),
          "missing file refused");

    /* HF export -> import is bit-exact, and model_load_any dispatches. */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/hf_%s", tmpdir, what);
    CHECK(hf_export_dir(dir, m, &x) == 0, "%s: export: %s", what, align_error());
    ModelBundle b;
    CHECK(model_load_any(dir, &backend_cpu, 0, &b) == 0, "%s: import: %s", what, align_error());
    if (b.model) {
        CHECK(same_config(&m->cfg, &b.model->cfg), "%s: config after export", what);
        CHECK(same_params(m, b.model), "%s: export/import not bit-exact", what);
        CHECK(b.extras.tokenizer_json && !strcmp(b.extras.tokenizer_json, x.tokenizer_json),
              "%s: tokenizer.json exported", what);
        CHECK(b.extras.chat_template && !strcmp(b.extras.chat_template, "chatml"),
              "%s: chat template exported and detected", what);
        model_bundle_free(&b);
    }
    CHECK(model_load_any(path, &backend_cpu, 0, &b) == 0 && same_params(m, b.model),
          "%s: model_load_any on .ckpt", what);
    model_bundle_free(&b);

    ckpt_extras_free(&x);
    free(m1);
    free(m2);
    model_free(m);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void touch(const char *path) {
    FILE *f = fopen(path, "wb");
    if (f) fputs("partial", f), fclose(f);
}

static void test_stale_temps(void) {
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0); /* reaped: its pid now names no process */
    long dead = (long)child, live = (long)getppid();
    char path[512], stale[600], stale2[600], alive[600], other[600], odd[600];
    snprintf(path, sizeof path, "%s/stale.ckpt", tmpdir);
    snprintf(stale, sizeof stale, "%s.tmp.%ld.0", path, dead);
    snprintf(stale2, sizeof stale2, "%s.tmp.%ld.17", path, dead);
    snprintf(alive, sizeof alive, "%s.tmp.%ld.0", path, live);
    snprintf(other, sizeof other, "%s/other.ckpt.tmp.%ld.0", tmpdir, dead);
    snprintf(odd, sizeof odd, "%s.tmp.%ld.0.keep", path, dead);
    const char *all[] = {stale, stale2, alive, other, odd};
    for (int i = 0; i < 5; i++) touch(all[i]);
    ModelConfig c;
    tiny_gpt2(&c);
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, 5);
    CHECK(ckpt_save(path, m, NULL) == 0, "save: %s", align_error());
    CHECK(!exists(stale) && !exists(stale2), "a dead process's temp files of the path are removed");
    CHECK(exists(alive), "a live process's temp file is kept");
    CHECK(exists(other) && exists(odd), "temp files of other paths (or other names) are kept");
    model_free(m);
}

/* One NaN (then one Inf) anywhere in the flat buffer is enough. */
static void test_refuses_non_finite(void) {
    ModelConfig c;
    tiny_llama(&c);
    Model *m = model_create(&c, &backend_cpu);
    CHECK(m != NULL, "create: %s", align_error());
    if (!m) return;
    model_init_random(m, 7);
    const ParamInfo *p = &m->info[m->n_params - 1];
    const float bad[2] = {NAN, -INFINITY};
    for (int k = 0; k < 2; k++) {
        m->params[p->offset + p->numel / 2] = bad[k];
        char path[600], dir[600];
        snprintf(path, sizeof path, "%s/nonfinite%d.ckpt", tmpdir, k);
        snprintf(dir, sizeof dir, "%s/nonfinite%d_hf", tmpdir, k);
        CHECK(ckpt_save(path, m, NULL) == -1 && strstr(align_error(), p->name) && strstr(align_error(), path),
              "ckpt_save refuses a non-finite model, naming the parameter and file: %s", align_error());
        CHECK(access(path, F_OK) != 0, "no .ckpt left behind");
        CHECK(hf_export_dir(dir, m, NULL) == -1 && strstr(align_error(), p->name) && strstr(align_error(), dir),
              "hf_export_dir refuses a non-finite model: %s", align_error());
        CHECK(access(dir, F_OK) != 0, "no directory left behind");
    }
    model_free(m);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/align_test_ckpt_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_hash();
    test_config_json();
    ModelConfig c;
    tiny_gpt2(&c);
    test_ckpt_round_trip(&c, "gpt2");
    tiny_llama(&c);
    test_ckpt_round_trip(&c, "llama");
    test_stale_temps();
    test_refuses_non_finite();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
