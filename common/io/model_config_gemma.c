/* model_config_gemma: see the header. Defaults are transformers' own
 * (Gemma2Config, Gemma3TextConfig), so a config.json that leaves a key out
 * means what it means there. */
#include "model_config_gemma.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int num(const cJSON *o, const char *key, double *out, int *present, const char *origin) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (present) *present = v != NULL;
    if (!v) return 0;
    if (cJSON_IsNull(v)) {
        *out = 0; /* null soft caps / windows: off */
        return 0;
    }
    if (!cJSON_IsNumber(v)) return align_errorf("%s: \"%s\" is not a number", origin, key);
    *out = v->valuedouble;
    return 0;
}

static int get_i(const cJSON *o, const char *key, int *out, const char *origin) {
    double d = *out;
    if (num(o, key, &d, NULL, origin)) return -1;
    if (d != floor(d) || fabs(d) > 2147483647.0) return align_errorf("%s: \"%s\" is not an integer", origin, key);
    *out = (int)d;
    return 0;
}

static int get_f(const cJSON *o, const char *key, float *out, const char *origin) {
    double d = *out;
    if (num(o, key, &d, NULL, origin)) return -1;
    *out = (float)d;
    return 0;
}

/* One RoPE parameter block ({rope_type, rope_theta, factor}): default or
 * linear only, as Gemma ships. */
static int parse_rope(const cJSON *rs, const char *what, float *theta, RopeScaling *scaling, float *factor,
                      const char *origin) {
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs)) return align_errorf("%s: %s is not an object", origin, what);
    if (get_f(rs, "rope_theta", theta, origin)) return -1;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "default";
    if (!strcmp(type, "default")) {
        *scaling = ROPE_SCALING_NONE;
    } else if (!strcmp(type, "linear")) {
        *scaling = ROPE_SCALING_LINEAR;
        *factor = 1.0f;
        if (get_f(rs, "factor", factor, origin)) return -1;
    } else {
        return align_errorf("%s: %s rope_type \"%s\" is not supported for Gemma (default, linear)", origin, what,
                            type);
    }
    return 0;
}

int model_config_parse_gemma(const cJSON *r, ModelConfig *c, const char *origin, int version) {
    model_config_defaults(c, ARCH_LLAMA);
    c->gemma = version;
    c->vocab_size = version == 2 ? 256000 : 262208;
    c->dim = 2304;
    c->ffn_dim = 9216;
    c->n_layers = 26;
    c->n_heads = 8;
    c->n_kv_heads = 4;
    c->head_dim = 256;
    c->max_seq_len = version == 2 ? 8192 : 131072;
    c->norm_eps = 1e-6f;
    c->rope_theta = version == 2 ? 10000.0f : 1000000.0f;
    c->tied_embeddings = 1;
    c->attn_scalar = 256;
    c->attn_softcap = version == 2 ? 50.0f : 0.0f;
    c->final_softcap = version == 2 ? 30.0f : 0.0f;
    c->sliding_window = 4096;
    c->sliding_pattern = version == 2 ? 2 : 6;
    c->rope_local_theta = version == 3 ? 10000.0f : 0.0f;
    if (get_i(r, "vocab_size", &c->vocab_size, origin) || get_i(r, "hidden_size", &c->dim, origin) ||
        get_i(r, "intermediate_size", &c->ffn_dim, origin) || get_i(r, "num_hidden_layers", &c->n_layers, origin) ||
        get_i(r, "num_attention_heads", &c->n_heads, origin) ||
        get_i(r, "num_key_value_heads", &c->n_kv_heads, origin) || get_i(r, "head_dim", &c->head_dim, origin) ||
        get_i(r, "max_position_embeddings", &c->max_seq_len, origin) ||
        get_f(r, "rms_norm_eps", &c->norm_eps, origin) || get_f(r, "rope_theta", &c->rope_theta, origin) ||
        get_f(r, "query_pre_attn_scalar", &c->attn_scalar, origin) ||
        get_f(r, "attn_logit_softcapping", &c->attn_softcap, origin) ||
        get_f(r, "final_logit_softcapping", &c->final_softcap, origin) ||
        get_i(r, "sliding_window", &c->sliding_window, origin) ||
        get_i(r, "sliding_window_pattern", &c->sliding_pattern, origin))
        return -1;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(r, "tie_word_embeddings");
    if (cJSON_IsBool(tie)) c->tied_embeddings = cJSON_IsTrue(tie);
    const char *act_key = cJSON_GetObjectItemCaseSensitive(r, "hidden_activation") ? "hidden_activation" : "hidden_act";
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(r, act_key);
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu_pytorch_tanh") && strcmp(act->valuestring, "gelu_new"))
        return align_errorf("%s: %s \"%s\" is not supported (Gemma here uses GeGLU with gelu_pytorch_tanh)", origin,
                            act_key, act->valuestring);
    const cJSON *flag = cJSON_GetObjectItemCaseSensitive(r, "attention_bias");
    if (cJSON_IsTrue(flag)) return align_errorf("%s: attention_bias is not supported", origin);
    flag = cJSON_GetObjectItemCaseSensitive(r, "use_bidirectional_attention");
    if (cJSON_IsTrue(flag))
        return align_errorf("%s: use_bidirectional_attention (EmbeddingGemma) is not supported: align trains "
                            "causal decoders",
                            origin);
    /* layer_types wins over the pattern; only Gemma's repeating pattern
     * (full every P-th layer) is represented */
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(r, "layer_types"), *it;
    if (cJSON_IsArray(types)) {
        int n = cJSON_GetArraySize(types), first_full = -1, l = 0;
        if (n != c->n_layers)
            return align_errorf("%s: layer_types lists %d layers, num_hidden_layers is %d", origin, n, c->n_layers);
        cJSON_ArrayForEach(it, types) {
            const char *t = cJSON_IsString(it) ? it->valuestring : "";
            if (strcmp(t, "full_attention") && strcmp(t, "sliding_attention"))
                return align_errorf("%s: layer_types[%d] \"%s\" is not supported (full_attention, sliding_attention)",
                                    origin, l, t);
            if (first_full < 0 && !strcmp(t, "full_attention")) first_full = l;
            l++;
        }
        int pattern = first_full < 0 ? n + 1 : first_full + 1;
        l = 0;
        cJSON_ArrayForEach(it, types) {
            int full = !strcmp(it->valuestring, "full_attention");
            if (full != ((l + 1) % pattern == 0))
                return align_errorf("%s: layer_types[%d] breaks the pattern of a full_attention layer every %d; "
                                    "only such patterns are supported",
                                    origin, l, pattern);
            l++;
        }
        c->sliding_pattern = pattern;
    }
    if (c->sliding_pattern <= 0) c->sliding_pattern = 1; /* every layer full */
    if (c->sliding_window < 0) return align_errorf("%s: sliding_window %d is negative", origin, c->sliding_window);
    /* RoPE: transformers 5's rope_parameters (per layer type for Gemma 3,
     * one block for Gemma 2), or the older rope_theta / rope_local_base_freq
     * / rope_scaling keys */
    if (get_f(r, "rope_local_base_freq", &c->rope_local_theta, origin)) return -1;
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(r, "rope_parameters");
    float unused_factor = 1.0f;
    RopeScaling local_scaling = ROPE_SCALING_NONE;
    if (cJSON_IsObject(rp) && (cJSON_GetObjectItemCaseSensitive(rp, "full_attention") ||
                               cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention"))) {
        if (parse_rope(cJSON_GetObjectItemCaseSensitive(rp, "full_attention"), "rope_parameters.full_attention",
                       &c->rope_theta, &c->rope_scaling, &c->rope_factor, origin) ||
            parse_rope(cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention"), "rope_parameters.sliding_attention",
                       version == 3 ? &c->rope_local_theta : &c->rope_theta, &local_scaling, &unused_factor, origin))
            return -1;
        if (local_scaling != ROPE_SCALING_NONE)
            return align_errorf("%s: RoPE scaling on the sliding layers is not supported", origin);
    } else if (parse_rope(rp, "rope_parameters", &c->rope_theta, &c->rope_scaling, &c->rope_factor, origin) ||
               parse_rope(cJSON_GetObjectItemCaseSensitive(r, "rope_scaling"), "rope_scaling", &c->rope_theta,
                          &c->rope_scaling, &c->rope_factor, origin)) {
        return -1;
    }
    if (version == 2) {
        if (c->rope_scaling != ROPE_SCALING_NONE)
            return align_errorf("%s: RoPE scaling is not supported for Gemma 2", origin);
        c->rope_local_theta = 0; /* one RoPE table for every layer */
    }
    c->norm_plus_one = 1;
    c->embed_scale = (float)sqrt((double)c->dim);
    c->sandwich_norms = 1;
    c->geglu = 1;
    c->qk_norm = version == 3;
    c->qkv_bias = 0;
    c->window_from_layer = 0;
    return 0;
}

/* Floats keep a decimal point (transformers checks some with isinstance float). */
static void add_f(cJSON *o, const char *key, float x) {
    char buf[48];
    for (int prec = 6; prec <= 9; prec++) { /* the shortest decimal that reads back as x */
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if ((float)strtod(buf, NULL) == x) break;
    }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    cJSON_AddRawToObject(o, key, buf);
}

void model_config_write_gemma(cJSON *r, const ModelConfig *c, int classifier) {
    int v3 = c->gemma == 3;
    const char *arch = v3 ? (classifier ? "Gemma3ForSequenceClassification" : "Gemma3ForCausalLM")
                          : (classifier ? "Gemma2ForSequenceClassification" : "Gemma2ForCausalLM");
    cJSON *archs = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(arch));
    cJSON_AddStringToObject(r, "model_type", v3 ? "gemma3_text" : "gemma2");
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(r, "hidden_size", c->dim);
    cJSON_AddNumberToObject(r, "intermediate_size", c->ffn_dim);
    cJSON_AddNumberToObject(r, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(r, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(r, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(r, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(r, "max_position_embeddings", c->max_seq_len);
    add_f(r, "rms_norm_eps", c->norm_eps);
    cJSON_AddStringToObject(r, "hidden_activation", "gelu_pytorch_tanh");
    cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tied_embeddings != 0);
    cJSON_AddFalseToObject(r, "attention_bias");
    cJSON_AddNumberToObject(r, "attention_dropout", 0.0);
    /* an int in transformers 5's strict Gemma configs */
    float qpas = c->attn_scalar > 0 ? c->attn_scalar : (float)c->head_dim;
    if (qpas == floorf(qpas)) cJSON_AddNumberToObject(r, "query_pre_attn_scalar", qpas);
    else add_f(r, "query_pre_attn_scalar", qpas);
    if (c->attn_softcap > 0) add_f(r, "attn_logit_softcapping", c->attn_softcap);
    else cJSON_AddNullToObject(r, "attn_logit_softcapping");
    if (c->final_softcap > 0) add_f(r, "final_logit_softcapping", c->final_softcap);
    else cJSON_AddNullToObject(r, "final_logit_softcapping");
    cJSON_AddNumberToObject(r, "sliding_window", c->sliding_window);
    if (v3) cJSON_AddNumberToObject(r, "sliding_window_pattern", c->sliding_pattern);
    cJSON *types = cJSON_AddArrayToObject(r, "layer_types");
    for (int l = 0; l < c->n_layers; l++)
        cJSON_AddItemToArray(types,
                             cJSON_CreateString(model_layer_sliding(c, l) ? "sliding_attention" : "full_attention"));
    add_f(r, "rope_theta", c->rope_theta);
    if (v3) add_f(r, "rope_local_base_freq", c->rope_local_theta > 0 ? c->rope_local_theta : c->rope_theta);
    if (c->rope_scaling == ROPE_SCALING_LINEAR) {
        cJSON *rs = cJSON_AddObjectToObject(r, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "linear");
        add_f(rs, "factor", c->rope_factor);
    } else {
        cJSON_AddNullToObject(r, "rope_scaling");
    }
}
