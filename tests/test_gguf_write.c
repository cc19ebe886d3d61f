/* test_gguf_write: GGUF out (gguf_write), read back by align's GGUF reader,
 * whose layout and q/k un-permutation are checked against real llama.cpp
 * files (test_gguf, test_gguf_smollm2).
 *
 *   f32, tiny llama / qwen2-style (q/k/v biases, unpermuted) / gpt2: every
 *     tensor reads back bit for bit, logits equal, the tokenizer encodes
 *     the same ids (special tokens included), bos/eos/pad and the chat
 *     template survive
 *   f16, bf16, q8_0, q4_0, q4_k_m: every tensor reads back as exactly the
 *     rounding of the original to its type (fp16 / bf16 round-to-nearest-
 *     even, ggml's reference quantizers; q4_0 keeps embeddings at q8_0,
 *     norms f32; q4_k_m as llama-quantize's recipe, with its Q5_0 / Q8_0
 *     fallbacks for rows of 64); logits close
 *   qwen3, phi3 (sliding window; longrope on partial rotary dims), gemma2,
 *     gemma3 (with and without sliding layers): f32 bit for bit (Gemma norms
 *     as (1 + w) - 1: the same 1 + w, equal logits), f16 and q8_0 close
 *   a base kept as Q8_0 blocks (QLoRA) writes its blocks unchanged
 *   refused with an error: a reward model (value head), unmerged LoRA,
 *     a GGUF type for a non-.gguf path, Gemmas llama.cpp cannot hold
 *     (query_pre_attn_scalar not head_dim, an untied Gemma 2, a Gemma 3
 *     with attention soft caps) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "chat_template.h"
#include "gguf.h"
#include "gguf_write.h"
#include "lora.h"
#include "model_load.h"
#include "quant.h"
#include "test.h"
#include "util.h"

static const Backend *be = &backend_cpu;
static char dir[] = "/tmp/test_gguf_write_XXXXXX";

static ModelConfig tiny(ModelArch arch, int qkv_bias) {
    ModelConfig c;
    model_config_defaults(&c, arch);
    c.vocab_size = 260, c.dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = arch == ARCH_GPT2 ? 4 : 2;
    c.head_dim = 16, c.ffn_dim = 96, c.max_seq_len = 32, c.qkv_bias = qkv_bias, c.tied_embeddings = arch == ARCH_GPT2;
    c.rope_theta = 5000.0f, c.norm_eps = 1e-5f, c.bos_id = 256, c.eos_id = 257, c.pad_id = 258;
    return c;
}

/* a model with a byte-level tokenizer, its specials and a chat template */
static void make_bundle(ModelBundle *b, ModelConfig c, uint64_t seed) {
    memset(b, 0, sizeof *b);
    ckpt_extras_init(&b->extras);
    b->model = model_create(&c, be);
    model_init_random(b->model, seed);
    const char *specials[3] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"};
    Tokenizer *t = tok_byte_level(specials, 3);
    char *json = tok_to_hf_json(t);
    ckpt_extras_set(&b->extras.tokenizer_json, json);
    ckpt_extras_set(&b->extras.chat_template, "chatml");
    ckpt_extras_set(&b->extras.chat_template_jinja, chat_template_export_jinja("chatml"));
    free(json);
    tok_free(t);
}

static float *params_of(Model *m, const ParamInfo *p) {
    float *x = malloc(p->numel * sizeof(float));
    model_param_to_host(m, p, x);
    return x;
}

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

/* what writing as `type` and reading back must give for this tensor */
static void expected(const ParamInfo *p, GgufOutType type, const ModelConfig *c, float *x) {
    int tied = c->tied_embeddings;
    if (c->norm_plus_one && p->ndim == 1 && strstr(p->name, "norm.weight")) {
        /* Gemma: written as 1 + w (fp32), read back as that minus 1 */
        for (size_t i = 0; i < p->numel; i++) x[i] = (x[i] + 1.0f) - 1.0f;
        return;
    }
    if (p->ndim == 1 || type == GGUF_OUT_F32 || strstr(p->name, ".wpe.")) return;
    int emb = strstr(p->name, "embed_tokens") || !strcmp(p->name, "lm_head.weight") || strstr(p->name, ".wte.");
    if (type == GGUF_OUT_F16 || p->shape[1] % 32) {
        for (size_t i = 0; i < p->numel; i++) x[i] = quant_f16_to_f32(quant_f32_to_f16(x[i]));
    } else if (type == GGUF_OUT_BF16) {
        for (size_t i = 0; i < p->numel; i++) {
            uint32_t u = (uint32_t)bf16_of(x[i]) << 16;
            memcpy(&x[i], &u, 4);
        }
    } else {
        QuantType q = type == GGUF_OUT_Q8_0 || emb ? QUANT_Q8_0 : QUANT_Q4_0;
        if (type == GGUF_OUT_Q4_K_M) { /* llama-quantize's Q4_K_M recipe for 2 layers: v and down of layer 1 */
            int big = !strcmp(p->name, "lm_head.weight") || (emb && tied) || strstr(p->name, "c_attn") ||
                      (strstr(p->name, "layers.1.") && (strstr(p->name, "v_proj") || strstr(p->name, "down_proj"))) ||
                      (strstr(p->name, "h.1.") && strstr(p->name, "mlp.c_proj"));
            q = p->shape[1] % 256 ? (big ? QUANT_Q8_0 : QUANT_Q5_0) : big ? QUANT_Q6_K : QUANT_Q4_K;
        }
        void *blk = malloc(p->numel * 2);
        if (quant_quantize_rows(q, x, blk, p->shape[0], p->shape[1])) x[0] = INFINITY; /* fails the check */
        else quant_dequantize_rows(q, blk, x, p->shape[0], p->shape[1]);
        free(blk);
    }
}

static void logits_of(Model *m, float *out) {
    int32_t t[9] = {256, 72, 101, 108, 108, 111, 33, 257, 10}, s[2] = {0, 9}, rows[9];
    for (int i = 0; i < 9; i++) rows[i] = i;
    Batch b = {9, 1, t, s};
    model_forward(m, &b);
    model_logits(m, rows, 9, out);
}

static void round_trip(const char *label, ModelConfig c, GgufOutType type) {
    static const char *const tn[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"};
    char path[256];
    snprintf(path, sizeof path, "%s/%s_%s.gguf", dir, label, tn[type]);
    ModelBundle a, r;
    make_bundle(&a, c, 7);
    if (c.norm_plus_one) { /* Gemma's norms near 0 (1 + w near 1), as trained ones: random, not 1 */
        uint64_t st = 12345;
        for (int i = 0; i < a.model->n_params; i++) {
            const ParamInfo *p = &a.model->info[i];
            if (p->ndim != 1 || !strstr(p->name, "norm.weight")) continue;
            float *w = malloc(p->numel * sizeof(float));
            for (size_t k = 0; k < p->numel; k++) {
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                w[k] = (float)((double)(st >> 11) / 9007199254740992.0 - 0.5) * 0.6f;
            }
            be->to_device(a.model->params + p->offset, w, p->numel * sizeof(float));
            free(w);
        }
    }
    CHECK(gguf_write(path, &a, type) == 0, "%s %s: write: %s", label, tn[type], align_error());
    CHECK(gguf_import(path, be, &r) == 0, "%s %s: read back: %s", label, tn[type], align_error());
    if (!r.model) {
        model_bundle_free(&a);
        return;
    }
    const ModelConfig *rc = &r.model->cfg;
    int same_family = rc->qk_norm == c.qk_norm && rc->phi3 == c.phi3 && rc->gemma == c.gemma &&
                      rc->sliding_window == c.sliding_window && rc->rotary_dim == c.rotary_dim &&
                      rc->rope_scaling == c.rope_scaling && rc->rope_factor == c.rope_factor &&
                      rc->attn_softcap == c.attn_softcap && rc->final_softcap == c.final_softcap &&
                      (!c.gemma || (rc->sliding_pattern == c.sliding_pattern && rc->rope_local_theta == c.rope_local_theta &&
                                    rc->embed_scale == c.embed_scale && model_attn_scale(rc) == model_attn_scale(&c))) &&
                      (c.rope_scaling != ROPE_SCALING_LONGROPE ||
                       (rc->rope_original_max_pos == c.rope_original_max_pos && rc->rope_attn_factor == c.rope_attn_factor &&
                        !memcmp(rc->rope_short_factor, c.rope_short_factor, sizeof c.rope_short_factor) &&
                        !memcmp(rc->rope_long_factor, c.rope_long_factor, sizeof c.rope_long_factor)));
    CHECK(same_family, "%s %s: the family's settings read back", label, tn[type]);
    int same_cfg = r.model->cfg.arch == c.arch && r.model->cfg.n_layers == c.n_layers && r.model->cfg.dim == c.dim &&
                   r.model->cfg.n_kv_heads == c.n_kv_heads && r.model->cfg.qkv_bias == c.qkv_bias &&
                   r.model->cfg.tied_embeddings == c.tied_embeddings && (c.arch == ARCH_GPT2 || r.model->cfg.rope_theta == c.rope_theta) &&
                   r.model->cfg.bos_id == 256 && r.model->cfg.eos_id == 257 && r.model->cfg.pad_id == 258;
    CHECK(same_cfg, "%s %s: config and special ids read back", label, tn[type]);
    CHECK(r.model->n_params == a.model->n_params, "%s %s: %d tensors", label, tn[type], r.model->n_params);
    double worst = 0;
    for (int i = 0; i < a.model->n_params && i < r.model->n_params; i++) {
        const ParamInfo *p = &a.model->info[i];
        float *want = params_of(a.model, p), *got = params_of(r.model, model_find_param(r.model, p->name));
        expected(p, type, &c, want);
        for (size_t k = 0; k < p->numel; k++) worst = fmax(worst, fabs(want[k] - got[k]));
        free(want), free(got);
    }
    CHECK(worst == 0, "%s %s: every tensor reads back as the original rounded to the type (max diff %.3g)", label, tn[type],
          worst);
    int V = c.vocab_size;
    float *l1 = malloc(9 * V * 4), *l2 = malloc(9 * V * 4);
    logits_of(a.model, l1), logits_of(r.model, l2);
    double dl = 0, scale = 0;
    for (int i = 0; i < 9 * V; i++) dl = fmax(dl, fabs(l1[i] - l2[i])), scale = fmax(scale, fabs(l1[i]));
    double tol = type == GGUF_OUT_F32 ? 0 : type >= GGUF_OUT_Q4_0 ? 0.2 : 0.02;
    CHECK(dl <= tol * (1 + scale), "%s %s: logits %s (max diff %.3g, logits up to %.3g)", label, tn[type],
          type == GGUF_OUT_F32 ? "equal" : "close", dl, scale);
    printf("%s %s: logits max diff %.3g (logits up to %.3g)\n", label, tn[type], dl, scale);
    free(l1), free(l2);
    if (type == GGUF_OUT_F32) {
        Tokenizer *t0 = tok_load_hf_json(a.extras.tokenizer_json, strlen(a.extras.tokenizer_json), "orig");
        const char *text = "<|im_start|>user\nHéllo, wörld! 123<|im_end|>\n";
        int32_t *i0 = NULL, *i1 = NULL;
        int n0 = 0, n1 = 0;
        CHECK(r.tok != NULL, "%s: the tokenizer reads back", label);
        if (r.tok && t0) {
            tok_encode(t0, text, strlen(text), 1, &i0, &n0);
            tok_encode(r.tok, text, strlen(text), 1, &i1, &n1);
            CHECK(n0 == n1 && n0 > 0 && !memcmp(i0, i1, n0 * sizeof *i0), "%s: the same ids (%d vs %d)", label, n0, n1);
            CHECK(tok_is_special(r.tok, 256) && tok_token_id(r.tok, "<|im_end|>") == 257, "%s: specials keep their ids", label);
        }
        free(i0), free(i1);
        tok_free(t0);
        CHECK(r.extras.chat_template_jinja && !strcmp(r.extras.chat_template_jinja, a.extras.chat_template_jinja),
              "%s: the chat template survives", label);
    }
    model_bundle_free(&a), model_bundle_free(&r);
    unlink(path);
}

/* The families llama.cpp names otherwise (qwen3, phi3, gemma2, gemma3), with
 * their switches on: f32 reads back bit for bit (Gemma's norms as 1 + w
 * minus 1, which gives the same 1 + w: equal logits), f16 and q8_0 close. */
static void families(void) {
    ModelConfig q3 = tiny(ARCH_LLAMA, 0);
    q3.qk_norm = 1;
    ModelConfig p3 = tiny(ARCH_LLAMA, 0);
    p3.phi3 = 1, p3.sliding_window = 5;
    ModelConfig lr = tiny(ARCH_LLAMA, 0); /* Phi-4-mini: longrope on 12 of 16 dims */
    lr.phi3 = 1, lr.rotary_dim = 12, lr.rope_scaling = ROPE_SCALING_LONGROPE, lr.rope_original_max_pos = 4;
    lr.rope_factor = 8.0f, lr.rope_attn_factor = 1.25f;
    for (int j = 0; j < 6; j++) lr.rope_short_factor[j] = 1.0f + 0.1f * j, lr.rope_long_factor[j] = 2.0f + 0.5f * j;
    ModelConfig g2 = tiny(ARCH_LLAMA, 0);
    g2.gemma = 2, g2.norm_plus_one = 1, g2.embed_scale = 8.0f, g2.sandwich_norms = 1, g2.geglu = 1;
    g2.attn_scalar = 16, g2.attn_softcap = 3.0f, g2.final_softcap = 5.0f, g2.sliding_window = 4, g2.sliding_pattern = 2;
    g2.tied_embeddings = 1;
    ModelConfig g3 = g2;
    g3.gemma = 3, g3.qk_norm = 1, g3.attn_softcap = 0, g3.final_softcap = 20.0f, g3.sliding_window = 3;
    g3.sliding_pattern = 2, g3.rope_local_theta = 700.0f, g3.rope_scaling = ROPE_SCALING_LINEAR, g3.rope_factor = 2.0f;
    g3.tied_embeddings = 0;
    ModelConfig g3n = g3; /* no sliding layers: llama.cpp builds none without the window key */
    g3n.sliding_window = 0, g3n.sliding_pattern = 0, g3n.rope_local_theta = 10000.0f;
    const char *names[] = {"qwen3", "phi3", "phi4_longrope", "gemma2", "gemma3", "gemma3_full"};
    ModelConfig cs[] = {q3, p3, lr, g2, g3, g3n};
    for (int i = 0; i < 6; i++) {
        round_trip(names[i], cs[i], GGUF_OUT_F32);
        round_trip(names[i], cs[i], GGUF_OUT_F16);
    }
    round_trip("gemma3", g3, GGUF_OUT_Q8_0);
    round_trip("phi4_longrope", lr, GGUF_OUT_Q8_0);
}

/* A SentencePiece-style BPE (byte fallback: Llama 2, Mistral, Gemma, Phi-3)
 * goes out as llama.cpp's "llama" tokenizer (pieces, scores, byte pieces of
 * type 6, add_space_prefix) and reads back encoding the fixture corpus as
 * the original does: the legacy Prepend normalizer exactly (special tokens
 * on), the Metaspace "first" form but for texts that start with a space and
 * for special tokens inside a text (GGUF has only add_space_prefix, which
 * prefixes those texts and every text after a special token, as
 * llama.cpp and gguf import do). */
static void spm_tokenizer(const char *file, int metaspace) {
    char path[256];
    snprintf(path, sizeof path, "%s/spm.gguf", dir);
    size_t n;
    char *json = align_read_file(file, &n), *corpus_text = align_read_file(ALIGN_TEST_DIR "/fixtures/spm/corpus.json", &n);
    cJSON *corpus = corpus_text ? cJSON_Parse(corpus_text) : NULL;
    CHECK(json && corpus, "read %s and the corpus", file);
    if (!json || !corpus) {
        free(json), free(corpus_text), cJSON_Delete(corpus);
        return;
    }
    ModelBundle a, r;
    ModelConfig c = tiny(ARCH_LLAMA, 0);
    c.vocab_size = 420, c.bos_id = c.eos_id = c.pad_id = -1;
    memset(&a, 0, sizeof a);
    ckpt_extras_init(&a.extras);
    a.model = model_create(&c, be);
    model_init_random(a.model, 3);
    ckpt_extras_set(&a.extras.tokenizer_json, json);
    CHECK(gguf_write(path, &a, GGUF_OUT_F16) == 0, "%s: write: %s", file, align_error());
    GgufFile f;
    if (gguf_open(&f, path) == 0) {
        const char *model = gguf_get_str(&f, "tokenizer.ggml.model");
        const GgufKV *types = gguf_find_kv(&f, "tokenizer.ggml.token_type"), *sc = gguf_find_kv(&f, "tokenizer.ggml.scores");
        int64_t space = -1;
        gguf_get_int(&f, "tokenizer.ggml.add_space_prefix", &space);
        int bytes = 0;
        for (uint64_t i = 0; types && i < types->arr_n; i++) {
            int32_t type; /* the array sits in the mapped file at any alignment */
            memcpy(&type, (const char *)types->arr + 4 * i, 4);
            bytes += type == 6;
        }
        CHECK(model && !strcmp(model, "llama") && sc && sc->arr_n == 420 && bytes == 256 && space == 1,
              "%s: a \"llama\" tokenizer with scores, 256 byte pieces, add_space_prefix (%s, %d)", file, model ? model : "-", bytes);
        gguf_close(&f);
    }
    CHECK(gguf_import(path, be, &r) == 0, "%s: read back: %s", file, align_error());
    Tokenizer *t0 = tok_load_hf_json(json, strlen(json), file);
    int same = 0, total = 0;
    for (int i = 0; r.tok && t0 && i < cJSON_GetArraySize(corpus); i++) {
        const char *text = cJSON_GetArrayItem(corpus, i)->valuestring;
        if (metaspace && text[0] == ' ') continue;
        int32_t *i0 = NULL, *i1 = NULL;
        int n0 = 0, n1 = 0;
        tok_encode(t0, text, strlen(text), !metaspace, &i0, &n0);
        tok_encode(r.tok, text, strlen(text), !metaspace, &i1, &n1);
        int ok = n0 == n1 && !memcmp(i0, i1, (size_t)n0 * sizeof *i0);
        if (!ok) printf("%s: \"%s\" encodes otherwise after the round trip\n", file, text);
        same += ok;
        total++;
        free(i0), free(i1);
    }
    CHECK(total > 10 && same == total, "%s: %d of %d corpus texts encode to the original's ids", file, same, total);
    tok_free(t0);
    if (r.model) model_bundle_free(&r);
    model_bundle_free(&a);
    free(json), free(corpus_text), cJSON_Delete(corpus);
    unlink(path);
}

static void kept_blocks(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/kept.gguf", dir);
    ModelBundle a, r;
    make_bundle(&a, tiny(ARCH_LLAMA, 0), 9);
    CHECK(model_quantize_base(a.model, QUANT_Q8_0) > 0, "quantise the base to q8_0");
    CHECK(gguf_write(path, &a, GGUF_OUT_Q8_0) == 0, "write a kept-q8_0 base: %s", align_error());
    CHECK(gguf_import_quant(path, be, QUANT_Q8_0, &r) == 0, "read back keeping blocks: %s", align_error());
    if (r.model) {
        int same = 1, n = 0;
        for (int i = 0; i < a.model->n_params; i++) {
            const ParamInfo *p = &a.model->info[i], *q = model_find_param(r.model, p->name);
            if (!p->qtype) continue;
            size_t bytes = (size_t)p->shape[0] * quant_row_bytes((QuantType)p->qtype, p->shape[1]);
            same &= q && q->qtype == p->qtype && !memcmp(a.model->qparams + p->qoffset, r.model->qparams + q->qoffset, bytes);
            n++;
        }
        CHECK(same && n == 14, "the %d kept blocks are written as they are (no second rounding)", n);
        model_bundle_free(&r);
    }
    model_bundle_free(&a);
    unlink(path);
}

static void refusals(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/no.gguf", dir);
    ModelBundle a;
    ModelConfig c = tiny(ARCH_LLAMA, 0);
    c.lm_head = 0, c.value_head = 1;
    make_bundle(&a, c, 1);
    CHECK(gguf_write(path, &a, GGUF_OUT_F16) != 0 && strstr(align_error(), "reward model"), "a value-head model is refused: %s",
          align_error());
    model_bundle_free(&a);
    make_bundle(&a, tiny(ARCH_LLAMA, 0), 1);
    LoraConfig lc;
    lora_config_defaults(&lc);
    model_lora_attach(a.model, &lc);
    CHECK(gguf_write(path, &a, GGUF_OUT_F16) != 0 && strstr(align_error(), "LoRA"), "unmerged LoRA is refused: %s",
          align_error());
    CHECK(access(path, F_OK) != 0, "nothing is left behind");
    snprintf(path, sizeof path, "%s/x.ckpt", dir);
    CHECK(model_save_as(path, &a, "q8_0") != 0 && strstr(align_error(), ".gguf"), "a GGUF type for a .ckpt is refused: %s",
          align_error());
    /* Gemmas llama.cpp would compute otherwise: one sentence each */
    ModelConfig g = tiny(ARCH_LLAMA, 0);
    g.gemma = 2, g.norm_plus_one = 1, g.embed_scale = 8.0f, g.sandwich_norms = 1, g.geglu = 1, g.attn_scalar = 12;
    g.attn_softcap = 3.0f, g.final_softcap = 5.0f, g.sliding_window = 4, g.sliding_pattern = 2, g.tied_embeddings = 1;
    ModelConfig g_untied = g, g3_capped = g;
    g_untied.attn_scalar = 16, g_untied.tied_embeddings = 0;
    g3_capped.attn_scalar = 16, g3_capped.gemma = 3, g3_capped.qk_norm = 1;
    const ModelConfig gs[] = {g, g_untied, g3_capped};
    const char *why[] = {"query_pre_attn_scalar 12 differs from the 16", "own lm_head", "no attention soft cap"};
    snprintf(path, sizeof path, "%s/g.gguf", dir);
    for (int i = 0; i < 3; i++) {
        ModelBundle gb;
        make_bundle(&gb, gs[i], 1);
        CHECK(gguf_write(path, &gb, GGUF_OUT_F16) != 0 && strstr(align_error(), why[i]) && access(path, F_OK) != 0,
              "a Gemma llama.cpp cannot hold is refused (%s): %s", why[i], align_error());
        model_bundle_free(&gb);
    }
    GgufOutType t;
    CHECK(gguf_out_type_parse("q5_k_m", &t) != 0 && strstr(align_error(), "q4_k_m"), "an unknown type names the known ones");
    model_bundle_free(&a);
}

int main(void) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    round_trip("llama", tiny(ARCH_LLAMA, 0), GGUF_OUT_F32);
    round_trip("qwen2", tiny(ARCH_LLAMA, 1), GGUF_OUT_F32);
    round_trip("gpt2", tiny(ARCH_GPT2, 0), GGUF_OUT_F32);
    for (int t = GGUF_OUT_F16; t <= GGUF_OUT_Q4_0; t++) round_trip("llama", tiny(ARCH_LLAMA, 0), (GgufOutType)t);
    round_trip("gpt2", tiny(ARCH_GPT2, 0), GGUF_OUT_Q8_0);
    /* q4_k_m: rows of 64 take the fallbacks (Q5_0, Q8_0); rows of 256 the K-quants */
    round_trip("llama", tiny(ARCH_LLAMA, 0), GGUF_OUT_Q4_K_M);
    ModelConfig wide = tiny(ARCH_LLAMA, 0);
    wide.dim = 256, wide.ffn_dim = 256, wide.n_heads = 4, wide.head_dim = 64, wide.n_kv_heads = 2;
    round_trip("llama256", wide, GGUF_OUT_Q4_K_M);
    ModelConfig wide2 = tiny(ARCH_GPT2, 0);
    wide2.dim = 256, wide2.ffn_dim = 512, wide2.head_dim = 64;
    round_trip("gpt2_256", wide2, GGUF_OUT_Q4_K_M);
    families();
    spm_tokenizer(ALIGN_TEST_DIR "/fixtures/spm/legacy.json", 0);
    spm_tokenizer(ALIGN_TEST_DIR "/fixtures/spm/metaspace.json", 1);
    kept_blocks();
    refusals();
    rmdir(dir);
    return test_summary();
}
