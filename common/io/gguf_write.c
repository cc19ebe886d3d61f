/* gguf_write: see the header.
 *
 * The header (key/values and tensor infos) is built in memory, since its
 * counts come first; tensor data then streams one tensor at a time, so only
 * one tensor's fp32 copy exists at once. */
#include "gguf_write.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "chat_template.h"
#include "phi3_fused.h"
#include "gguf.h"
#include "quant.h"
#include "tokenizer.h"
#include "util.h"

#define ALIGNMENT 32

/* llama.cpp's llama_ftype values for general.file_type */
enum { FTYPE_F32 = 0, FTYPE_F16 = 1, FTYPE_Q4_0 = 2, FTYPE_Q8_0 = 7, FTYPE_Q4_K_M = 15, FTYPE_BF16 = 32 };

int gguf_out_type_parse(const char *name, GgufOutType *out) {
    static const char *const names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"};
    for (int i = 0; i < 6; i++)
        if (!strcasecmp(name, names[i])) return *out = (GgufOutType)i, 0;
    return align_errorf("unknown GGUF type '%s' (expected f32, f16, bf16, q8_0, q4_0 or q4_k_m)", name);
}

/* ------------------------------------------------------------ header buffer */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
    uint64_t count; /* key/values or tensor infos written */
} Buf;

static void put(Buf *b, const void *x, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}
static void put_u32(Buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(Buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(Buf *b, const char *s) {
    size_t n = strlen(s);
    put_u64(b, n);
    put(b, s, n);
}
static void kv_key(Buf *b, const char *key, GgufType t) {
    put_str(b, key);
    put_u32(b, t);
    b->count++;
}
static void kv_str(Buf *b, const char *key, const char *v) { kv_key(b, key, GGUF_STRING), put_str(b, v); }
static void kv_u32(Buf *b, const char *key, uint32_t v) { kv_key(b, key, GGUF_UINT32), put_u32(b, v); }
static void kv_f32(Buf *b, const char *key, float v) { kv_key(b, key, GGUF_FLOAT32), put(b, &v, 4); }
static void kv_bool(Buf *b, const char *key, int v) {
    uint8_t x = v != 0;
    kv_key(b, key, GGUF_BOOL), put(b, &x, 1);
}
static void kv_arch_u32(Buf *b, const char *arch, const char *key, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_u32(b, k, v);
}
static void kv_arch_f32(Buf *b, const char *arch, const char *key, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_f32(b, k, v);
}

/* ------------------------------------------------------------ tokenizer */

/* 1 when the tokenizer.json's post-processor puts a special token first in
 * a single sequence (Llama 3's TemplateProcessing adds <|begin_of_text|>). */
static int adds_bos(const cJSON *pp) {
    if (!cJSON_IsObject(pp)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pp, "type");
    if (cJSON_IsString(type) && !strcmp(type->valuestring, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pp, "processors")) {
            if (adds_bos(it)) return 1;
        }
        return 0;
    }
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "TemplateProcessing")) return 0;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    return cJSON_IsArray(single) && cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken") != NULL;
}

/* "<0xXX>": a SentencePiece byte piece (GGUF token type 6) */
static int is_byte_piece(const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && strchr(hex, s[3]) && strchr(hex, s[4]) && s[5] == '>';
}

/* 1 when a SentencePiece-style tokenizer.json puts "▁" before the text:
 * a Prepend normalizer (Llama 2's) or a Metaspace pre-tokenizer that
 * prepends (prepend_scheme other than "never", or add_prefix_space). */
static int prepends_space(const cJSON *node) {
    if (cJSON_IsArray(node)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, node) {
            if (prepends_space(it)) return 1;
        }
        return 0;
    }
    if (!cJSON_IsObject(node)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
    if (cJSON_IsString(type) && !strcmp(type->valuestring, "Prepend")) return 1;
    if (cJSON_IsString(type) && !strcmp(type->valuestring, "Metaspace")) {
        const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(node, "prepend_scheme");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(node, "add_prefix_space");
        if (cJSON_IsString(scheme)) return strcmp(scheme->valuestring, "never") != 0;
        return !cJSON_IsFalse(aps);
    }
    /* the tokenizer.json itself, or a Sequence of normalizers / pre-tokenizers */
    static const char *const keys[] = {"normalizer", "pre_tokenizer", "normalizers", "pretokenizers"};
    for (int i = 0; i < 4; i++)
        if (prepends_space(cJSON_GetObjectItemCaseSensitive(node, keys[i]))) return 1;
    return 0;
}

/* tokenizer.ggml.scores for a SentencePiece BPE. llama.cpp (and gguf
 * import, as transformers) merge the adjacent pair whose joined piece
 * scores highest, where the BPE of tokenizer.json merges the lowest rank:
 * a piece scores minus the rank of the first merge making it, so both
 * orders agree (they do exactly when the merges were derived from
 * SentencePiece scores, as transformers' and our GGUF import derive them).
 * Pieces no merge makes come after every merge, by id. */
static int put_spm_scores(Buf *kv, const Tokenizer *tok, const cJSON *merges, int V) {
    float *sc = malloc((size_t)V * sizeof *sc);
    char *buf = NULL;
    size_t cap = 0;
    if (!sc) return align_errorf("out of memory for the GGUF tokenizer's scores");
    int n_merges = cJSON_IsArray(merges) ? cJSON_GetArraySize(merges) : 0;
    for (int i = 0; i < V; i++) sc[i] = -(float)(n_merges + 1 + i);
    int rank = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        const char *sp = cJSON_IsString(it) ? strchr(it->valuestring, ' ') : NULL;
        size_t la, lb;
        if (sp) {
            a = it->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else {
            const cJSON *x = cJSON_GetArrayItem(it, 0), *y = cJSON_GetArrayItem(it, 1);
            if (!cJSON_IsString(x) || !cJSON_IsString(y)) {
                free(sc), free(buf);
                return align_errorf("the model's tokenizer.json has a malformed merge");
            }
            a = x->valuestring, la = strlen(a), b = y->valuestring, lb = strlen(b);
        }
        if (la + lb + 1 > cap) {
            cap = 2 * (la + lb + 1);
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(sc), free(buf);
                return align_errorf("out of memory for the GGUF tokenizer's scores");
            }
            buf = nb;
        }
        memcpy(buf, a, la), memcpy(buf + la, b, lb), buf[la + lb] = 0;
        int id = tok_token_id(tok, buf);
        if (id >= 0 && id < V && sc[id] < -(float)rank) sc[id] = -(float)rank;
        rank++;
    }
    kv_key(kv, "tokenizer.ggml.scores", GGUF_ARRAY);
    put_u32(kv, GGUF_FLOAT32), put_u64(kv, (uint64_t)V);
    put(kv, sc, (size_t)V * sizeof *sc);
    free(sc), free(buf);
    return 0;
}

/* tokenizer.ggml.* from the bundle's tokenizer.json, padded to the model's
 * vocabulary with [PAD<id>] tokens of type unused, as convert_hf_to_gguf. */
static int put_tokenizer(Buf *kv, const ModelBundle *b) {
    const char *json = b->extras.tokenizer_json;
    const ModelConfig *c = &b->model->cfg;
    if (!json) return 0; /* a model without a tokenizer still converts */
    int V = c->vocab_size, rc = -1;
    cJSON *root = cJSON_Parse(json);
    Tokenizer *tok = tok_load_hf_json(json, strlen(json), "the model's tokenizer.json");
    char **toks = calloc(V, sizeof *toks);
    int32_t *types = calloc(V, sizeof *types);
    char pad[32];
    if (!root || !tok || !toks || !types) {
        if (!tok) align_error_prefix("GGUF tokenizer");
        else align_errorf("cannot read the model's tokenizer.json for the GGUF tokenizer");
        goto out;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") || !cJSON_IsObject(vocab)) {
        align_errorf("the model's tokenizer is neither byte-level nor SentencePiece-style BPE; GGUF export writes "
                     "only those (\"gpt2\", \"llama\")");
        goto out;
    }
    /* byte fallback: SentencePiece's BPE (Llama 2, Mistral, Gemma, Phi-3) */
    int spm = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int id = cJSON_IsNumber(it) ? it->valueint : -1;
        if (id < 0 || id >= V) {
            align_errorf("tokenizer token \"%.40s\" has id %d, outside the model's vocabulary of %d", it->string, id, V);
            goto out;
        }
        toks[id] = it->string, types[id] = 1; /* normal */
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id"), *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content)) continue;
        if (id->valueint < 0 || id->valueint >= V) {
            align_errorf("added token \"%.40s\" has id %d, outside the model's vocabulary of %d", content->valuestring, id->valueint, V);
            goto out;
        }
        toks[id->valueint] = content->valuestring;
        types[id->valueint] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special")) ? 3 : 4; /* control, user-defined */
    }
    kv_str(kv, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    kv_str(kv, "tokenizer.ggml.pre", spm ? "default" : tok_pretok_name(tok_pretok(tok)));
    kv_key(kv, "tokenizer.ggml.tokens", GGUF_ARRAY);
    put_u32(kv, GGUF_STRING), put_u64(kv, (uint64_t)V);
    for (int i = 0; i < V; i++) {
        if (!toks[i]) snprintf(pad, sizeof pad, "[PAD%d]", i), types[i] = 5; /* unused */
        else if (spm && types[i] == 1 && is_byte_piece(toks[i])) types[i] = 6; /* <0xXX>: byte */
        put_str(kv, toks[i] ? toks[i] : pad);
    }
    kv_key(kv, "tokenizer.ggml.token_type", GGUF_ARRAY);
    put_u32(kv, GGUF_INT32), put_u64(kv, (uint64_t)V);
    put(kv, types, (size_t)V * 4);
    if (spm) {
        if (put_spm_scores(kv, tok, merges, V)) goto out;
        const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
        int unk_id = cJSON_IsString(unk) ? tok_token_id(tok, unk->valuestring) : -1;
        if (unk_id >= 0 && unk_id < V) kv_u32(kv, "tokenizer.ggml.unknown_token_id", (uint32_t)unk_id);
    } else if (cJSON_IsArray(merges)) {
        kv_key(kv, "tokenizer.ggml.merges", GGUF_ARRAY);
        put_u32(kv, GGUF_STRING), put_u64(kv, (uint64_t)cJSON_GetArraySize(merges));
        cJSON_ArrayForEach(it, merges) {
            if (cJSON_IsString(it)) { /* "a b" */
                put_str(kv, it->valuestring);
            } else { /* ["a", "b"]: GGUF has only the "a b" form */
                const cJSON *x = cJSON_GetArrayItem(it, 0), *y = cJSON_GetArrayItem(it, 1);
                if (!cJSON_IsString(x) || !cJSON_IsString(y)) {
                    align_errorf("the model's tokenizer.json has a malformed merge");
                    goto out;
                }
                size_t lx = strlen(x->valuestring), ly = strlen(y->valuestring);
                put_u64(kv, lx + 1 + ly), put(kv, x->valuestring, lx), put(kv, " ", 1), put(kv, y->valuestring, ly);
            }
        }
    }
    int bos = c->bos_id >= 0 ? c->bos_id : tok_bos_id(tok), eos = c->eos_id >= 0 ? c->eos_id : tok_eos_id(tok);
    int padid = c->pad_id >= 0 ? c->pad_id : tok_pad_id(tok);
    if (bos >= 0 && bos < V) kv_u32(kv, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0 && eos < V) kv_u32(kv, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (padid >= 0 && padid < V) kv_u32(kv, "tokenizer.ggml.padding_token_id", (uint32_t)padid);
    kv_bool(kv, "tokenizer.ggml.add_bos_token", adds_bos(cJSON_GetObjectItemCaseSensitive(root, "post_processor")));
    if (spm) kv_bool(kv, "tokenizer.ggml.add_eos_token", 0);
    kv_bool(kv, "tokenizer.ggml.add_space_prefix", spm && prepends_space(root));
    rc = 0;
out:
    free(toks), free(types);
    tok_free(tok);
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------------ tensors */

typedef struct {
    const ParamInfo *p;
    char name[128];
    int type;        /* ggml type */
    int heads;       /* > 0: permute this many heads' rows (llama q/k) */
    int plus_one;    /* Gemma's norm weights: written as 1 + w, as llama.cpp's converter */
    ParamInfo group; /* Phi-3: a fused group (attn_qkv, ffn_up), p points here */
    size_t bytes;
    uint64_t offset; /* in the data section */
} OutTensor;

static size_t row_bytes(int type, int64_t cols) {
    switch (type) {
    case GGML_F32: return (size_t)cols * 4;
    case GGML_F16:
    case GGML_BF16: return (size_t)cols * 2;
    default: return quant_row_bytes((QuantType)type, cols);
    }
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and
 * every third one between get the bigger type in Q4_K_M */
static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* llama.cpp's fallback for a K-quant whose rows are not whole super-blocks */
static int k_or_fallback(int k, int64_t cols) {
    if (cols % 256 == 0) return k;
    return k == GGML_Q4_K ? GGML_Q5_0 : GGML_Q8_0;
}

static int pick_type(const ParamInfo *p, GgufOutType t, const ModelConfig *c) {
    /* GPT-2's position table stays F32: llama.cpp never quantises it */
    if (p->ndim == 1 || t == GGUF_OUT_F32 || strstr(p->name, ".wpe.")) return GGML_F32;
    if (t == GGUF_OUT_F16) return GGML_F16;
    if (t == GGUF_OUT_BF16) return GGML_BF16;
    if (p->shape[1] % QUANT_BLOCK) return GGML_F16;
    if (t == GGUF_OUT_Q8_0) return GGML_Q8_0;
    int head = !strcmp(p->name, "lm_head.weight"), emb = strstr(p->name, "embed_tokens") || strstr(p->name, ".wte.");
    if (t == GGUF_OUT_Q4_0) return head || emb ? GGML_Q8_0 : GGML_Q4_0;
    /* Q4_K_M */
    int layer = -1;
    if (sscanf(p->name, "model.layers.%d.", &layer) != 1) sscanf(p->name, "transformer.h.%d.", &layer);
    /* a tied embedding is the output head too: llama.cpp gives it the head's type */
    int big = head || (emb && c->tied_embeddings) || strstr(p->name, "attn.c_attn.") ||
              (layer >= 0 && (strstr(p->name, "v_proj.") || strstr(p->name, "down_proj.") || strstr(p->name, "mlp.c_proj.")) &&
               use_more_bits(layer, c->n_layers));
    return k_or_fallback(big ? GGML_Q6_K : GGML_Q4_K, p->shape[1]);
}

/* HF row h*hd + s*hd/2 + j goes to row h*hd + 2j + s (gguf.c undoes it). */
static void permute_rows(uint8_t *w, int heads, int hd, size_t rb, uint8_t *tmp) {
    int half = hd / 2;
    for (int h = 0; h < heads; h++) {
        uint8_t *blk = w + (size_t)h * hd * rb;
        memcpy(tmp, blk, (size_t)hd * rb);
        for (int s = 0; s < 2; s++)
            for (int j = 0; j < half; j++) memcpy(blk + (size_t)(2 * j + s) * rb, tmp + (size_t)(s * half + j) * rb, rb);
    }
}

/* ggml_compute_fp32_to_bf16: round to nearest even, NaN kept quiet */
static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

/* One tensor's bytes in its output type (out holds t->bytes). */
static int tensor_bytes(Model *m, const OutTensor *t, float *x, uint8_t *out, uint8_t *tmp) {
    const ParamInfo *p = t->p;
    int64_t rows = p->ndim == 1 ? 1 : p->shape[0], cols = p->ndim == 1 ? p->shape[0] : p->shape[1];
    if (p->qtype && p->qtype == t->type) { /* kept blocks of the same type: no second rounding */
        m->be->to_host(out, m->qparams + p->qoffset, t->bytes);
    } else {
        if (model_param_to_host(m, p, x)) return -1;
        if (t->plus_one)
            for (size_t i = 0; i < p->numel; i++) x[i] += 1.0f;
        switch (t->type) {
        case GGML_F32: memcpy(out, x, p->numel * 4); break;
        case GGML_F16:
            for (size_t i = 0; i < p->numel; i++) {
                uint16_t h = quant_f32_to_f16(x[i]);
                memcpy(out + 2 * i, &h, 2);
            }
            break;
        case GGML_BF16:
            for (size_t i = 0; i < p->numel; i++) {
                uint16_t h = f32_to_bf16(x[i]);
                memcpy(out + 2 * i, &h, 2);
            }
            break;
        default:
            if (quant_quantize_rows((QuantType)t->type, x, out, rows, cols)) return -1;
        }
    }
    if (t->heads) permute_rows(out, t->heads, m->cfg.head_dim, row_bytes(t->type, cols), tmp);
    return 0;
}

/* llama.cpp's vocabulary loader gives a model whose general.name contains
 * "phi3" or "phi-3" the tokens </s>, <unk>, <s> and <|endoftext|> special
 * attributes by text and fails to load ("unordered_map::at") when one is
 * missing (a tiny or retokenised Phi-3). Such a name is then not written.
 * The tokens are looked for as JSON strings in the tokenizer.json text:
 * none of them needs escaping. */
static int phi3_name_breaks_llamacpp(const char *name, const char *tokenizer_json) {
    char low[256];
    size_t n = strlen(name);
    if (n >= sizeof low) n = sizeof low - 1;
    for (size_t i = 0; i < n; i++) low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    low[n] = 0;
    if (!strstr(low, "phi3") && !strstr(low, "phi-3")) return 0;
    if (!tokenizer_json) return 0;
    static const char *const need[] = {"\"</s>\"", "\"<unk>\"", "\"<s>\"", "\"<|endoftext|>\""};
    for (int i = 0; i < 4; i++)
        if (!strstr(tokenizer_json, need[i])) return 1;
    return 0;
}

/* ------------------------------------------------------------ Gemma */

/* llama.cpp's gemma2 / gemma3 fix what transformers' config lets vary: the
 * score scale is head_dim^-1/2 (hidden/heads for the 27B models, told
 * apart by 46 / 62 layers) and no key changes it; Gemma 2 always caps
 * scores and logits and always ties the head to the embedding; Gemma 3
 * never caps scores; sliding layers follow one "full every P-th" pattern,
 * unscaled on Gemma 3. A model outside that would load and compute
 * something else, so it is refused by name. */
static int gemma_representable(const char *path, const ModelConfig *c) {
    int v3 = c->gemma == 3, big = c->n_layers == (v3 ? 62 : 46);
    float want = big ? (float)(c->dim / c->n_heads) : (float)c->head_dim;
    float have = c->attn_scalar > 0 ? c->attn_scalar : (float)c->head_dim;
    if (have != want)
        return align_errorf("%s: query_pre_attn_scalar %g differs from the %g llama.cpp derives for this Gemma (%s); "
                            "llama.cpp has no key for it, so the GGUF would compute other scores",
                            path, have, want, big ? "hidden / heads" : "head_dim");
    if (!v3 && (c->attn_softcap <= 0 || c->final_softcap <= 0))
        return align_errorf("%s: llama.cpp's gemma2 always soft-caps scores and logits; this Gemma 2 lacks %s",
                            path, c->attn_softcap <= 0 ? "attn_logit_softcapping" : "final_logit_softcapping");
    if (v3 && c->attn_softcap > 0)
        return align_errorf("%s: llama.cpp's gemma3 has no attention soft cap (attn_logit_softcapping %g)", path,
                            c->attn_softcap);
    if (!v3 && !c->tied_embeddings)
        return align_errorf("%s: llama.cpp's gemma2 reads the LM head from the token embedding; this Gemma 2 has its "
                            "own lm_head",
                            path);
    if (!v3 && c->rope_scaling != ROPE_SCALING_NONE)
        return align_errorf("%s: RoPE scaling on a Gemma 2 has no GGUF form", path);
    if (v3 && c->sliding_window > 0 && c->rope_local_theta <= 0 && c->rope_scaling != ROPE_SCALING_NONE)
        return align_errorf("%s: llama.cpp's gemma3 never scales the sliding layers' RoPE; this Gemma 3 scales them",
                            path);
    if (c->sliding_window > 0 && c->sliding_pattern <= 0)
        return align_errorf("%s: a Gemma whose sliding layers follow no \"full every P-th layer\" pattern has no "
                            "GGUF form",
                            path);
    return 0;
}

/* ------------------------------------------------------------ the file */

int gguf_write(const char *path, const ModelBundle *b, GgufOutType type) {
    Model *m = b->model;
    const ModelConfig *c = &m->cfg;
    int is_gpt2 = c->arch == ARCH_GPT2, gemma = is_gpt2 ? 0 : c->gemma;
    int qwen3 = !is_gpt2 && !gemma && c->qk_norm, phi3 = !is_gpt2 && !gemma && c->phi3 && !qwen3;
    int qwen2 = !is_gpt2 && !gemma && c->qkv_bias && !qwen3;
    /* llama.cpp's arch names; only "llama" rotates interleaved pairs (permuted q/k rows) */
    const char *arch = is_gpt2 ? "gpt2"
                       : gemma ? (gemma == 3 ? "gemma3" : "gemma2")
                       : qwen3 ? "qwen3"
                       : phi3  ? "phi3"
                       : qwen2 ? "qwen2"
                               : "llama";
    int permute = !is_gpt2 && !gemma && !qwen2 && !qwen3 && !phi3;
    /* Phi's longrope: rope_factors_long / rope_factors_short, F32 [rot/2] */
    int longrope = !is_gpt2 && c->rope_scaling == ROPE_SCALING_LONGROPE, n_extra = longrope ? 2 : 0;
    size_t factor_bytes = (size_t)(model_rotary_dim(c) / 2) * sizeof(float);
    const float *factors[2] = {c->rope_long_factor, c->rope_short_factor};
    if (c->value_head || !c->lm_head)
        return align_errorf("%s: a model without its LM head (a reward model or critic) has no GGUF form", path);
    if (gemma && gemma_representable(path, c)) return -1;
    if (c->rope_scaling == ROPE_SCALING_LLAMA3)
        return align_errorf("%s: Llama-3.1 rope scaling is not written to GGUF yet (export a Hugging Face directory "
                            "and convert it with llama.cpp's convert_hf_to_gguf.py)",
                            path);
    for (int i = 0; i < m->n_params; i++)
        if (m->info[i].lora)
            return align_errorf("%s: the model carries LoRA adapters; save it merged to write a GGUF", path);

    Buf kv = {0}, ti = {0};
    OutTensor *ts = calloc(m->n_params, sizeof *ts);
    float *x = NULL;
    uint8_t *data = NULL, *tmp = NULL;
    FILE *f = NULL;
    char *tmp_path = NULL;
    int rc = -1;
    if (!ts) goto oom;

    static const int ftype[] = {FTYPE_F32, FTYPE_F16, FTYPE_BF16, FTYPE_Q8_0, FTYPE_Q4_0, FTYPE_Q4_K_M};
    kv_str(&kv, "general.architecture", arch);
    kv_str(&kv, "general.type", "model");
    /* the last part of the base model's name or path, as llama.cpp shows it */
    const char *bm = b->extras.base_model && *b->extras.base_model ? b->extras.base_model : "align model";
    const char *slash = strrchr(bm, '/');
    const char *name = slash && slash[1] ? slash + 1 : bm;
    if (phi3_name_breaks_llamacpp(name, b->extras.tokenizer_json)) name = "align model";
    kv_str(&kv, "general.name", name);
    kv_u32(&kv, "general.file_type", (uint32_t)ftype[type]);
    if (type >= GGUF_OUT_Q8_0) kv_u32(&kv, "general.quantization_version", 2);
    kv_arch_u32(&kv, arch, "context_length", (uint32_t)c->max_seq_len);
    kv_arch_u32(&kv, arch, "embedding_length", (uint32_t)c->dim);
    kv_arch_u32(&kv, arch, "feed_forward_length", (uint32_t)c->ffn_dim);
    kv_arch_u32(&kv, arch, "block_count", (uint32_t)c->n_layers);
    kv_arch_u32(&kv, arch, "attention.head_count", (uint32_t)c->n_heads);
    if (is_gpt2) {
        kv_arch_f32(&kv, arch, "attention.layer_norm_epsilon", c->norm_eps);
    } else {
        kv_arch_u32(&kv, arch, "attention.head_count_kv", (uint32_t)c->n_kv_heads);
        kv_arch_f32(&kv, arch, "attention.layer_norm_rms_epsilon", c->norm_eps);
        kv_arch_f32(&kv, arch, "rope.freq_base", c->rope_theta);
        kv_arch_u32(&kv, arch, "rope.dimension_count", (uint32_t)model_rotary_dim(c)); /* partial rotary: fewer */
        if (gemma || c->head_dim * c->n_heads != c->dim) { /* Gemma's converter always writes them */
            kv_arch_u32(&kv, arch, "attention.key_length", (uint32_t)c->head_dim);
            kv_arch_u32(&kv, arch, "attention.value_length", (uint32_t)c->head_dim);
        }
        kv_arch_u32(&kv, arch, "vocab_size", (uint32_t)c->vocab_size);
        if (phi3 && c->sliding_window > 0)
            kv_arch_u32(&kv, arch, "attention.sliding_window", (uint32_t)c->sliding_window);
        if (c->rope_scaling == ROPE_SCALING_LINEAR) {
            char k[64];
            snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
            kv_str(&kv, k, "linear");
            kv_arch_f32(&kv, arch, "rope.scaling.factor", c->rope_factor);
        }
        if (gemma) { /* what llama.cpp's gemma2 / gemma3 read (gemma_representable checked the rest) */
            if (c->attn_softcap > 0) kv_arch_f32(&kv, arch, "attn_logit_softcapping", c->attn_softcap);
            if (c->final_softcap > 0) kv_arch_f32(&kv, arch, "final_logit_softcapping", c->final_softcap);
            if (c->sliding_window > 0) {
                kv_arch_u32(&kv, arch, "attention.sliding_window", (uint32_t)c->sliding_window);
                /* llama.cpp assumes 2 (Gemma 2) or 6 (Gemma 3) without it */
                kv_arch_u32(&kv, arch, "attention.sliding_window_pattern", (uint32_t)c->sliding_pattern);
            } else if (gemma == 2) { /* Gemma 2 always builds sliding layers: pattern 1 makes none */
                kv_arch_u32(&kv, arch, "attention.sliding_window_pattern", 1);
            }
            if (gemma == 3 && c->sliding_window > 0)
                kv_arch_f32(&kv, arch, "rope.freq_base_swa", c->rope_local_theta > 0 ? c->rope_local_theta : c->rope_theta);
        }
        if (longrope) { /* as llama.cpp's Phi3 converter: the factors are tensors (below) */
            kv_arch_u32(&kv, arch, "rope.scaling.original_context_length", (uint32_t)c->rope_original_max_pos);
            kv_arch_f32(&kv, arch, "rope.scaling.attn_factor", c->rope_attn_factor);
        }
    }
    if (put_tokenizer(&kv, b)) goto fail;
    const char *jinja = b->extras.chat_template_jinja;
    if (!jinja && b->extras.chat_template) jinja = chat_template_export_jinja(b->extras.chat_template);
    if (jinja && *jinja) kv_str(&kv, "tokenizer.chat_template", jinja);

    /* tensor infos, offsets aligned as ggml expects */
    int nt = 0;
    uint64_t off = 0;
    size_t max_numel = 0, max_bytes = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        OutTensor *t = &ts[nt];
        /* a Phi-3 group's members are adjacent (fp32 and blocks alike): one tensor */
        int fused = phi3_fused_group(c, p, &t->group);
        if (fused == 2) continue;
        if (fused == 1) p = &t->group;
        nt++;
        t->p = p;
        if (gguf_tensor_name_for(c, p->name, t->name, sizeof t->name)) {
            align_errorf("%s: %s has no GGUF counterpart", path, p->name);
            goto fail;
        }
        t->type = pick_type(p, type, c);
        t->plus_one = gemma && p->ndim == 1 && strstr(p->name, "norm.weight") != NULL;
        if (permute && p->ndim == 2) {
            if (strstr(p->name, "self_attn.q_proj.weight")) t->heads = c->n_heads;
            else if (strstr(p->name, "self_attn.k_proj.weight")) t->heads = c->n_kv_heads;
        }
        int64_t ne0 = p->ndim == 1 ? p->shape[0] : p->shape[1], ne1 = p->ndim == 1 ? 1 : p->shape[0];
        t->bytes = row_bytes(t->type, ne0) * (size_t)ne1;
        t->offset = off;
        off += (t->bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
        if (p->numel > max_numel) max_numel = p->numel;
        if (t->bytes > max_bytes) max_bytes = t->bytes;
        put_str(&ti, t->name);
        put_u32(&ti, (uint32_t)p->ndim);
        put_u64(&ti, (uint64_t)ne0);
        if (p->ndim == 2) put_u64(&ti, (uint64_t)ne1);
        put_u32(&ti, (uint32_t)t->type);
        put_u64(&ti, t->offset);
    }
    for (int e = 0; e < n_extra; e++) {
        put_str(&ti, e ? "rope_factors_short.weight" : "rope_factors_long.weight");
        put_u32(&ti, 1);
        put_u64(&ti, (uint64_t)(factor_bytes / sizeof(float)));
        put_u32(&ti, GGML_F32);
        put_u64(&ti, off);
        off += (factor_bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }
    if (kv.oom || ti.oom) goto oom;
    x = malloc((max_numel ? max_numel : 1) * sizeof(float));
    data = malloc(max_bytes ? max_bytes : 1);
    tmp = malloc((size_t)(c->head_dim > 0 ? c->head_dim : 1) * (size_t)c->dim * 4 + 64);
    tmp_path = malloc(strlen(path) + 8);
    if (!x || !data || !tmp || !tmp_path) goto oom;
    sprintf(tmp_path, "%s.tmp", path);
    if (!(f = fopen(tmp_path, "wb"))) {
        align_errorf("cannot write %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    static const uint8_t zeros[ALIGNMENT] = {0};
    uint32_t version = 3;
    uint64_t counts[2] = {(uint64_t)(nt + n_extra), kv.count};
    int ok = fwrite("GGUF", 1, 4, f) == 4 && fwrite(&version, 4, 1, f) == 1 && fwrite(counts, 8, 2, f) == 2 &&
             fwrite(kv.p, 1, kv.n, f) == kv.n && fwrite(ti.p, 1, ti.n, f) == ti.n;
    size_t hdr = 24 + kv.n + ti.n, padn = (ALIGNMENT - hdr % ALIGNMENT) % ALIGNMENT;
    ok = ok && fwrite(zeros, 1, padn, f) == padn;
    for (int i = 0; ok && i < nt; i++) {
        if (tensor_bytes(m, &ts[i], x, data, tmp)) goto fail;
        size_t tail = (ALIGNMENT - ts[i].bytes % ALIGNMENT) % ALIGNMENT;
        ok = fwrite(data, 1, ts[i].bytes, f) == ts[i].bytes && fwrite(zeros, 1, tail, f) == tail;
    }
    for (int e = 0; ok && e < n_extra; e++) {
        size_t tail = (ALIGNMENT - factor_bytes % ALIGNMENT) % ALIGNMENT;
        ok = fwrite(factors[e], 1, factor_bytes, f) == factor_bytes && fwrite(zeros, 1, tail, f) == tail;
    }
    if (!ok || fflush(f) || ferror(f)) {
        align_errorf("cannot write %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    int closed = fclose(f);
    f = NULL;
    if (closed || rename(tmp_path, path)) {
        align_errorf("cannot write %s: %s", path, strerror(errno));
        goto fail;
    }
    rc = 0;
    goto done;
oom:
    align_errorf("out of memory writing %s", path);
fail:
    if (f) fclose(f);
    if (tmp_path) unlink(tmp_path);
done:
    free(kv.p), free(ti.p), free(ts), free(x), free(data), free(tmp), free(tmp_path);
    return rc;
}
