/* model_config_json: see the header. Reading is strict about keys that
 * change the maths; unknown keys that do not (dropout rates, torch_dtype,
 * use_cache, ...) are ignored, as transformers ignores them at inference. */
#include "model_config_json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_config_gemma.h"
#include "util.h"

/* ------------------------------------------------------------------ reading */

/* Integer key: absent or null leaves *out as is; a list takes its first
 * element (Llama-3 lists several eos ids). */
static int get_int(const cJSON *o, const char *key, int *out, const char *origin) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 2147483647.0)
        return align_errorf("%s: \"%s\" is not an integer", origin, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_float(const cJSON *o, const char *key, float *out, const char *origin) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v)) return align_errorf("%s: \"%s\" is not a number", origin, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) *out = cJSON_IsTrue(v);
    return 0;
}

static const char *get_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int has_arch(const cJSON *root, const char *needle) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "architectures"), *it;
    cJSON_ArrayForEach(it, a) if (cJSON_IsString(it) && strstr(it->valuestring, needle)) return 1;
    return 0;
}

static int parse_gpt2(const cJSON *r, ModelConfig *c, const char *origin) {
    model_config_defaults(c, ARCH_GPT2);
    c->vocab_size = 50257;
    c->dim = 768;
    c->n_layers = 12;
    c->n_heads = 12;
    c->max_seq_len = 1024;
    c->norm_eps = 1e-5f;
    int inner = -1;
    if (get_int(r, "vocab_size", &c->vocab_size, origin) || get_int(r, "n_embd", &c->dim, origin) ||
        get_int(r, "n_layer", &c->n_layers, origin) || get_int(r, "n_head", &c->n_heads, origin) ||
        get_int(r, "n_positions", &c->max_seq_len, origin) ||
        get_int(r, "n_inner", &inner, origin) ||
        get_float(r, "layer_norm_epsilon", &c->norm_eps, origin))
        return -1;
    const char *act = get_str(r, "activation_function");
    if (act && strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh") &&
        strcmp(act, "gelu_fast"))
        return align_errorf("%s: activation_function \"%s\" is not supported (GPT-2 here uses the "
                            "tanh GELU, gelu_new)",
                            origin, act);
    int flag = 0;
    get_bool(r, "scale_attn_by_inverse_layer_idx", &flag);
    if (flag) return align_errorf("%s: scale_attn_by_inverse_layer_idx is not supported", origin);
    flag = 1;
    get_bool(r, "scale_attn_weights", &flag);
    if (!flag) return align_errorf("%s: scale_attn_weights false is not supported", origin);
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    c->ffn_dim = inner > 0 ? inner : 4 * c->dim;
    c->tied_embeddings = 1;
    c->qkv_bias = 0;
    c->rope_scaling = ROPE_SCALING_NONE;
    return 0;
}

/* Sliding-window attention. Mistral: "sliding_window" on every layer (null:
 * none). Qwen2: only with "use_sliding_window", on layers from
 * "max_window_layers" on (transformers' default 28). transformers 5 also
 * writes "layer_types" ("full_attention" / "sliding_attention" per layer),
 * which wins; only full layers followed by sliding ones can be represented.
 * A window at least as long as max_position_embeddings changes nothing
 * within the context and is dropped, so such models keep running on
 * backends without windowed attention. */
static int parse_sliding_window(const cJSON *r, ModelConfig *c, const char *origin, int qwen2) {
    int sw = 0, from = 0;
    if (get_int(r, "sliding_window", &sw, origin)) return -1;
    if (qwen2) {
        int use = 0;
        get_bool(r, "use_sliding_window", &use);
        if (!use) sw = 0;
        from = 28;
        if (get_int(r, "max_window_layers", &from, origin)) return -1;
    }
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(r, "layer_types");
    if (cJSON_IsArray(types)) {
        int n = cJSON_GetArraySize(types), first = n, l = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, types) {
            const char *t = cJSON_IsString(it) ? it->valuestring : "";
            int sliding = !strcmp(t, "sliding_attention");
            if (!sliding && strcmp(t, "full_attention"))
                return align_errorf("%s: layer_types[%d] \"%s\" is not supported (full_attention, sliding_attention)",
                                    origin, l, t);
            if (sliding && first == n) first = l;
            if (!sliding && first < n)
                return align_errorf("%s: layer_types has a full_attention layer (%d) after a sliding_attention one "
                                    "(%d); only sliding layers after full ones are supported",
                                    origin, l, first);
            l++;
        }
        from = first;
    }
    if (sw < 0) return align_errorf("%s: sliding_window %d is negative", origin, sw);
    if (sw == 0 || sw >= c->max_seq_len || from >= c->n_layers) sw = from = 0;
    c->sliding_window = sw;
    c->window_from_layer = from;
    return 0;
}

/* partial_rotary_factor (top level, or in rope_parameters): rotary_dim =
 * int(head_dim * factor) as transformers computes it; call after head_dim. */
static int parse_partial_rotary(const cJSON *o, ModelConfig *c, const char *origin) {
    float partial = 1.0f;
    if (get_float(o, "partial_rotary_factor", &partial, origin)) return -1;
    if (!(partial > 0.0f && partial <= 1.0f))
        return align_errorf("%s: partial_rotary_factor %g is not in (0, 1]", origin, partial);
    int rot = (int)(c->head_dim * (double)partial);
    if (rot % 2 || rot <= 0)
        return align_errorf("%s: partial_rotary_factor %g gives %d rotary dims of head_dim %d; RoPE needs an even "
                            "number",
                            origin, partial, rot, c->head_dim);
    c->rotary_dim = rot == c->head_dim ? 0 : rot;
    return 0;
}

static int get_factors(const cJSON *rs, const char *key, float *out, int n, const char *origin) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rs, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return align_errorf("%s: longrope %s must be a list of %d numbers (rotary dims / 2)", origin, key, n);
    for (int j = 0; j < n; j++) {
        const cJSON *x = cJSON_GetArrayItem(v, j);
        if (!cJSON_IsNumber(x) || !(x->valuedouble > 0))
            return align_errorf("%s: longrope %s[%d] is not a positive number", origin, key, j);
        out[j] = (float)x->valuedouble;
    }
    return 0;
}

/* Phi-3's longrope as transformers' _compute_longrope_parameters: factor
 * defaults to max_position_embeddings / original_max_position_embeddings
 * (the top-level original_max wins, as Phi3Config does), attention_factor
 * to sqrt(1 + ln(factor) / ln(original_max)), or 1 when factor <= 1. */
static int parse_longrope(const cJSON *r, const cJSON *rs, ModelConfig *c, const char *origin, const char *rs_name) {
    int half = model_rotary_dim(c) / 2;
    if (half > MODEL_ROPE_MAX_FACTORS)
        return align_errorf("%s: longrope with %d rotary dims is larger than supported", origin, 2 * half);
    c->rope_scaling = ROPE_SCALING_LONGROPE;
    c->rope_original_max_pos = 0;
    if (get_int(rs, "original_max_position_embeddings", &c->rope_original_max_pos, origin) ||
        get_int(r, "original_max_position_embeddings", &c->rope_original_max_pos, origin))
        return -1;
    if (c->rope_original_max_pos <= 0)
        return align_errorf("%s: %s longrope needs original_max_position_embeddings", origin, rs_name);
    if (get_factors(rs, "short_factor", c->rope_short_factor, half, origin) ||
        get_factors(rs, "long_factor", c->rope_long_factor, half, origin))
        return -1;
    double factor = (double)c->max_seq_len / c->rope_original_max_pos;
    const cJSON *fv = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    if (cJSON_IsNumber(fv)) factor = fv->valuedouble;
    c->rope_factor = (float)factor;
    const cJSON *av = cJSON_GetObjectItemCaseSensitive(rs, "attention_factor");
    if (cJSON_IsNumber(av)) c->rope_attn_factor = (float)av->valuedouble;
    else c->rope_attn_factor = factor <= 1.0 ? 1.0f : (float)sqrt(1.0 + log(factor) / log(c->rope_original_max_pos));
    if (!(c->rope_attn_factor > 0)) return align_errorf("%s: longrope attention_factor must be positive", origin);
    return 0;
}

/* The Llama-family model types that parse_llama reads. */
enum { LL_LLAMA = 0, LL_QWEN2 = 1, LL_QWEN3 = 2, LL_PHI3 = 3 };

static int parse_llama(const cJSON *r, ModelConfig *c, const char *origin, int family) {
    int qwen2 = family == LL_QWEN2;
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 32000;
    c->max_seq_len = 2048;
    c->norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->n_heads = 0;
    c->n_kv_heads = -1;
    c->head_dim = -1;
    c->tied_embeddings = 0;
    if (get_int(r, "vocab_size", &c->vocab_size, origin) ||
        get_int(r, "hidden_size", &c->dim, origin) ||
        get_int(r, "num_hidden_layers", &c->n_layers, origin) ||
        get_int(r, "num_attention_heads", &c->n_heads, origin) ||
        get_int(r, "num_key_value_heads", &c->n_kv_heads, origin) ||
        get_int(r, "head_dim", &c->head_dim, origin) ||
        get_int(r, "intermediate_size", &c->ffn_dim, origin) ||
        get_int(r, "max_position_embeddings", &c->max_seq_len, origin) ||
        get_float(r, "rms_norm_eps", &c->norm_eps, origin) ||
        get_float(r, "rope_theta", &c->rope_theta, origin))
        return -1;
    if (c->n_kv_heads < 0) c->n_kv_heads = c->n_heads;
    if (c->head_dim <= 0) c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    get_bool(r, "tie_word_embeddings", &c->tied_embeddings);
    const char *act = get_str(r, "hidden_act");
    if (act && strcmp(act, "silu") && strcmp(act, "swish"))
        return align_errorf("%s: hidden_act \"%s\" is not supported (the Llama family here uses "
                            "SwiGLU with silu)",
                            origin, act);
    int attn_bias = 0, mlp_bias = 0;
    get_bool(r, "attention_bias", &attn_bias);
    get_bool(r, "mlp_bias", &mlp_bias);
    if (mlp_bias) return align_errorf("%s: mlp_bias is not supported", origin);
    if (attn_bias && !qwen2)
        return align_errorf("%s: attention_bias (biases on q, k, v and o_proj) is not supported; "
                            "only Qwen2's q/k/v biases are",
                            origin);
    c->qkv_bias = qwen2;
    c->qk_norm = family == LL_QWEN3;
    c->phi3 = family == LL_PHI3;
    /* Phi-4-mini rotates only part of each head; Phi-3-mini-4k and Phi-4 the
     * whole head */
    if (parse_partial_rotary(r, c, origin)) return -1;
    /* Qwen3 windows layers as Qwen2 does (use_sliding_window, max_window_layers) */
    if (parse_sliding_window(r, c, origin, qwen2 || family == LL_QWEN3)) return -1;
    c->rope_scaling = ROPE_SCALING_NONE;
    /* transformers 5 writes "rope_parameters" ({rope_type, rope_theta,
     * factor, ...}) instead of "rope_scaling" and a top-level "rope_theta";
     * missing it silently left theta at 10000 and the llama3 scaling off. */
    const char *rs_name = "rope_scaling";
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(r, rs_name);
    if (!rs || cJSON_IsNull(rs)) {
        rs_name = "rope_parameters";
        rs = cJSON_GetObjectItemCaseSensitive(r, rs_name);
    }
    if (rs && !cJSON_IsNull(rs)) {
        if (!cJSON_IsObject(rs)) return align_errorf("%s: %s is not an object", origin, rs_name);
        if (cJSON_GetObjectItemCaseSensitive(rs, "rope_theta") && get_float(rs, "rope_theta", &c->rope_theta, origin))
            return -1;
        if (cJSON_GetObjectItemCaseSensitive(rs, "partial_rotary_factor") && parse_partial_rotary(rs, c, origin))
            return -1;
        const char *type = get_str(rs, "rope_type");
        if (!type) type = get_str(rs, "type");
        if (!type) return align_errorf("%s: %s has no rope_type (per-layer RoPE parameters are not supported)", origin, rs_name);
        c->rope_factor = 1.0f;
        if (get_float(rs, "factor", &c->rope_factor, origin)) return -1;
        if (strcmp(type, "default") == 0) {
            c->rope_scaling = ROPE_SCALING_NONE;
        } else if (strcmp(type, "linear") == 0) {
            c->rope_scaling = ROPE_SCALING_LINEAR;
        } else if (strcmp(type, "llama3") == 0) {
            c->rope_scaling = ROPE_SCALING_LLAMA3;
            c->rope_low_freq_factor = 1.0f;
            c->rope_high_freq_factor = 4.0f;
            c->rope_original_max_pos = 8192;
            if (get_float(rs, "low_freq_factor", &c->rope_low_freq_factor, origin) ||
                get_float(rs, "high_freq_factor", &c->rope_high_freq_factor, origin) ||
                get_int(rs, "original_max_position_embeddings", &c->rope_original_max_pos, origin))
                return -1;
        } else if (!strcmp(type, "longrope") || !strcmp(type, "su")) {
            if (parse_longrope(r, rs, c, origin, rs_name)) return -1;
        } else {
            return align_errorf("%s: %s type \"%s\" is not supported (llama3, linear, longrope)",
                                origin, rs_name, type);
        }
    }
    return 0;
}

int model_config_from_hf_json(const char *json, size_t len, const char *origin, ModelConfig *out) {
    cJSON *r = cJSON_ParseWithLength(json, len);
    if (!r || !cJSON_IsObject(r)) {
        cJSON_Delete(r);
        return align_errorf("%s is not a JSON object", origin);
    }
    ModelConfig c;
    memset(&c, 0, sizeof c);
    const char *mt = get_str(r, "model_type");
    const cJSON *gemma_text = NULL; /* gemma3's text_config */
    int rc;
    if (mt ? strcmp(mt, "gpt2") == 0 : has_arch(r, "GPT2")) rc = parse_gpt2(r, &c, origin);
    else if (mt ? strcmp(mt, "qwen2") == 0 : has_arch(r, "Qwen2")) rc = parse_llama(r, &c, origin, LL_QWEN2);
    else if (mt ? strcmp(mt, "qwen3") == 0 : has_arch(r, "Qwen3")) rc = parse_llama(r, &c, origin, LL_QWEN3);
    else if (mt ? strcmp(mt, "phi3") == 0 : has_arch(r, "Phi3")) rc = parse_llama(r, &c, origin, LL_PHI3);
    else if (mt ? (!strcmp(mt, "llama") || !strcmp(mt, "mistral"))
                : (has_arch(r, "Llama") || has_arch(r, "Mistral")))
        rc = parse_llama(r, &c, origin, LL_LLAMA);
    else if (mt ? !strcmp(mt, "gemma2") : has_arch(r, "Gemma2"))
        rc = model_config_parse_gemma(r, &c, origin, 2);
    else if (mt ? !strcmp(mt, "gemma3_text") : has_arch(r, "Gemma3ForCausalLM"))
        rc = model_config_parse_gemma(r, &c, origin, 3);
    else if (mt && !strcmp(mt, "gemma3")) {
        /* Gemma 3 with its vision tower: the text model is text_config
         * (hf_import finds its tensors under language_model); the tower
         * and projector are left behind */
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(r, "text_config");
        rc = cJSON_IsObject(tc) ? model_config_parse_gemma(tc, &c, origin, 3)
                                : align_errorf("%s: model_type gemma3 without a text_config object", origin);
        if (rc == 0 && cJSON_IsObject(tc)) gemma_text = tc;
        c.final_softcap = 0; /* Gemma3ForConditionalGeneration never applies it */
    }
    else
        rc = align_errorf("%s: model_type \"%s\" is not supported (gpt2, llama, qwen2, qwen3, mistral, phi3, "
                          "gemma2, gemma3, gemma3_text)",
                          origin, mt ? mt : "(missing)");
    if (rc == 0) {
        c.bos_id = c.eos_id = c.pad_id = -1;
        rc = get_int(r, "bos_token_id", &c.bos_id, origin) ||
                     get_int(r, "eos_token_id", &c.eos_id, origin) ||
                     get_int(r, "pad_token_id", &c.pad_id, origin)
                 ? -1
                 : 0;
        if (rc == 0 && gemma_text && c.bos_id < 0 && c.eos_id < 0)
            rc = get_int(gemma_text, "bos_token_id", &c.bos_id, origin) ||
                         get_int(gemma_text, "eos_token_id", &c.eos_id, origin) ||
                         get_int(gemma_text, "pad_token_id", &c.pad_id, origin)
                     ? -1
                     : 0;
    }
    if (rc == 0) {
        /* Heads: a sequence classifier with one label is a value/reward
         * model; our own keys (written by model_config_to_hf_json) win. */
        c.lm_head = 1;
        c.value_head = 0;
        if (has_arch(r, "ForSequenceClassification")) {
            int labels = 1;
            const cJSON *id2label = cJSON_GetObjectItemCaseSensitive(r, "id2label");
            if (cJSON_IsObject(id2label)) labels = cJSON_GetArraySize(id2label);
            get_int(r, "num_labels", &labels, origin);
            if (labels != 1) {
                rc = align_errorf("%s: a sequence classifier with %d labels is not supported "
                                  "(reward models have one)",
                                  origin, labels);
            }
            c.lm_head = 0;
            c.value_head = 1;
        }
        get_bool(r, "align_lm_head", &c.lm_head);
        get_bool(r, "align_value_head", &c.value_head);
        if (c.arch == ARCH_GPT2 && !c.lm_head) c.tied_embeddings = 1;
    }
    cJSON_Delete(r);
    if (rc != 0) return -1;
    if (model_config_validate(&c) != 0) return align_error_prefix("%s", origin);
    *out = c;
    return 0;
}

/* ------------------------------------------------------------------ writing */

/* A float as the shortest decimal that reads back as the same float, so
 * config.json says 1e-05 rather than 9.99999974737875e-06. */
static double tidy(float x) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if ((float)strtod(buf, NULL) == x) break;
    }
    return strtod(buf, NULL);
}

/* Floats keep a decimal point even when integral ("factor": 8.0): transformers
 * checks rope_scaling fields with isinstance(x, float). */
static void add_float(cJSON *o, const char *key, float x) {
    double v = tidy(x);
    if (v == (double)(long long)v && fabs(v) < 1e15) {
        char buf[40];
        snprintf(buf, sizeof buf, "%.1f", v);
        cJSON_AddRawToObject(o, key, buf);
    } else {
        cJSON_AddNumberToObject(o, key, v);
    }
}

static void add_id(cJSON *o, const char *key, int id) {
    if (id >= 0) cJSON_AddNumberToObject(o, key, id);
    else cJSON_AddNullToObject(o, key);
}

char *model_config_to_hf_json(const ModelConfig *c) {
    cJSON *r = cJSON_CreateObject();
    if (!r) {
        align_errorf("out of memory writing config.json");
        return NULL;
    }
    int classifier = c->value_head && !c->lm_head;
    int qwen3 = c->arch == ARCH_LLAMA && c->qk_norm, phi3 = c->arch == ARCH_LLAMA && c->phi3 && !qwen3;
    int qwen2 = c->arch == ARCH_LLAMA && c->qkv_bias && !qwen3;
    /* Llama has no sliding window in transformers: a windowed model without
     * q/k/v biases is a Mistral */
    int mistral = c->arch == ARCH_LLAMA && !qwen2 && !qwen3 && !phi3 && c->sliding_window > 0;
    const char *arch;
    if (c->gemma) {
        model_config_write_gemma(r, c, classifier);
        goto ids;
    }
    if (c->arch == ARCH_GPT2) arch = classifier ? "GPT2ForSequenceClassification" : "GPT2LMHeadModel";
    else if (qwen3) arch = classifier ? "Qwen3ForSequenceClassification" : "Qwen3ForCausalLM";
    else if (phi3) arch = classifier ? "Phi3ForSequenceClassification" : "Phi3ForCausalLM";
    else if (qwen2) arch = classifier ? "Qwen2ForSequenceClassification" : "Qwen2ForCausalLM";
    else if (mistral) arch = classifier ? "MistralForSequenceClassification" : "MistralForCausalLM";
    else arch = classifier ? "LlamaForSequenceClassification" : "LlamaForCausalLM";
    cJSON *archs = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(arch));
    cJSON_AddStringToObject(r, "model_type",
                            c->arch == ARCH_GPT2 ? "gpt2"
                            : qwen3              ? "qwen3"
                            : phi3               ? "phi3"
                            : qwen2              ? "qwen2"
                            : mistral            ? "mistral"
                                                 : "llama");
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab_size);
    if (c->arch == ARCH_GPT2) {
        cJSON_AddNumberToObject(r, "n_embd", c->dim);
        cJSON_AddNumberToObject(r, "n_layer", c->n_layers);
        cJSON_AddNumberToObject(r, "n_head", c->n_heads);
        cJSON_AddNumberToObject(r, "n_positions", c->max_seq_len);
        cJSON_AddNumberToObject(r, "n_ctx", c->max_seq_len);
        cJSON_AddNumberToObject(r, "n_inner", c->ffn_dim);
        add_float(r, "layer_norm_epsilon", c->norm_eps);
        cJSON_AddStringToObject(r, "activation_function", "gelu_new");
        cJSON_AddNumberToObject(r, "resid_pdrop", 0.0);
        cJSON_AddNumberToObject(r, "embd_pdrop", 0.0);
        cJSON_AddNumberToObject(r, "attn_pdrop", 0.0);
        cJSON_AddTrueToObject(r, "tie_word_embeddings");
    } else {
        cJSON_AddNumberToObject(r, "hidden_size", c->dim);
        cJSON_AddNumberToObject(r, "num_hidden_layers", c->n_layers);
        cJSON_AddNumberToObject(r, "num_attention_heads", c->n_heads);
        cJSON_AddNumberToObject(r, "num_key_value_heads", c->n_kv_heads);
        cJSON_AddNumberToObject(r, "head_dim", c->head_dim);
        cJSON_AddNumberToObject(r, "intermediate_size", c->ffn_dim);
        cJSON_AddNumberToObject(r, "max_position_embeddings", c->max_seq_len);
        add_float(r, "rms_norm_eps", c->norm_eps);
        add_float(r, "rope_theta", c->rope_theta);
        cJSON_AddStringToObject(r, "hidden_act", "silu");
        cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tied_embeddings != 0);
        if (!qwen2) {
            cJSON_AddFalseToObject(r, "attention_bias");
            cJSON_AddFalseToObject(r, "mlp_bias");
        }
        if (qwen2 || qwen3) cJSON_AddBoolToObject(r, "use_sliding_window", c->sliding_window > 0);
        if (c->sliding_window > 0) {
            cJSON_AddNumberToObject(r, "sliding_window", c->sliding_window);
            if (qwen2 || qwen3) cJSON_AddNumberToObject(r, "max_window_layers", c->window_from_layer);
            cJSON *types = cJSON_AddArrayToObject(r, "layer_types");
            for (int l = 0; l < c->n_layers; l++)
                cJSON_AddItemToArray(types, cJSON_CreateString(model_layer_window(c, l) ? "sliding_attention"
                                                                                        : "full_attention"));
        }
        cJSON_AddNumberToObject(r, "attention_dropout", 0.0);
        if (c->rope_scaling == ROPE_SCALING_NONE) {
            cJSON_AddNullToObject(r, "rope_scaling");
        } else {
            cJSON *rs = cJSON_AddObjectToObject(r, "rope_scaling");
            if (c->rope_scaling == ROPE_SCALING_LONGROPE) {
                /* Phi-3.5's form: type and the factor lists, the original
                 * context also at the top level (Phi3Config reads it there
                 * first); attention_factor written out so no reader has to
                 * re-derive it from max_position_embeddings. */
                int half = model_rotary_dim(c) / 2;
                cJSON_AddStringToObject(rs, "type", "longrope");
                cJSON *sf = cJSON_AddArrayToObject(rs, "short_factor"), *lf = cJSON_AddArrayToObject(rs, "long_factor");
                for (int j = 0; j < half; j++) {
                    cJSON_AddItemToArray(sf, cJSON_CreateNumber(tidy(c->rope_short_factor[j])));
                    cJSON_AddItemToArray(lf, cJSON_CreateNumber(tidy(c->rope_long_factor[j])));
                }
                add_float(rs, "attention_factor", c->rope_attn_factor);
                cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_original_max_pos);
                cJSON_AddNumberToObject(r, "original_max_position_embeddings", c->rope_original_max_pos);
                goto rope_done;
            }
            const char *t = c->rope_scaling == ROPE_SCALING_LLAMA3 ? "llama3" : "linear";
            cJSON_AddStringToObject(rs, "rope_type", t);
            if (c->rope_scaling == ROPE_SCALING_LINEAR) cJSON_AddStringToObject(rs, "type", t);
            add_float(rs, "factor", c->rope_factor);
            if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
                add_float(rs, "low_freq_factor", c->rope_low_freq_factor);
                add_float(rs, "high_freq_factor", c->rope_high_freq_factor);
                cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                        c->rope_original_max_pos);
            }
        }
    rope_done:
        if (c->rotary_dim && c->rotary_dim != c->head_dim)
            add_float(r, "partial_rotary_factor", (float)((double)c->rotary_dim / c->head_dim));
    }
ids:
    add_id(r, "bos_token_id", c->bos_id);
    add_id(r, "eos_token_id", c->eos_id);
    add_id(r, "pad_token_id", c->pad_id);
    if (classifier) {
        cJSON *id2label = cJSON_AddObjectToObject(r, "id2label");
        cJSON_AddStringToObject(id2label, "0", "LABEL_0");
        cJSON *label2id = cJSON_AddObjectToObject(r, "label2id");
        cJSON_AddNumberToObject(label2id, "LABEL_0", 0);
    }
    /* Our own keys: transformers keeps unknown keys as attributes and
     * ignores them; a re-import reads the heads back exactly. */
    cJSON_AddBoolToObject(r, "align_lm_head", c->lm_head != 0);
    cJSON_AddBoolToObject(r, "align_value_head", c->value_head != 0);
    cJSON_AddStringToObject(r, "torch_dtype", "float32");
    cJSON_AddBoolToObject(r, "use_cache", 1);
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    if (!s) align_errorf("out of memory writing config.json");
    return s;
}
