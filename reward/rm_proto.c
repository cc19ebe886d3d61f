/* rm_proto: decode "score" requests, encode "scores" replies (rm_proto.h). */
#include "rm_proto.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "util.h"

int rm_proto_get_id(const WireMsg *m, uint64_t *id) {
    if (!wire_has(m, "id")) return 0;
    return wire_get_uint(m, "id", id) == 0;
}

void rm_request_free(RmRequest *r) {
    free(r->prompt), free(r->resp), free(r->poff), free(r->roff);
    memset(r, 0, sizeof *r);
}

static int set_code(const char **code, const char *c) {
    *code = c;
    return -1;
}

/* i32 tokens + offsets -> ids, checked against the vocabulary */
static int get_ragged(const WireMsg *m, const char *tkey, const char *okey, const RmProtoLimits *lim,
                      int32_t **ids, int64_t **off, size_t *n_off, const char **code) {
    WireArray a;
    if (wire_get_array(m, tkey, WIRE_I32, &lim->wire, &a)) return set_code(code, "bad_request");
    if (a.ndim != 1) {
        free(a.data);
        align_errorf("field \"%s\" must be 1-D", tkey);
        return set_code(code, "bad_request");
    }
    if ((long)a.numel > lim->max_tokens) {
        free(a.data);
        align_errorf("field \"%s\": %zu tokens is over the limit of %ld per request", tkey, a.numel, lim->max_tokens);
        return set_code(code, "too_large");
    }
    int32_t *t = a.data;
    for (size_t i = 0; i < a.numel; i++)
        if (t[i] < 0 || t[i] >= lim->vocab_size) {
            align_errorf("field \"%s\": token %d at index %zu is outside the vocabulary [0, %d)", tkey, t[i], i, lim->vocab_size);
            free(a.data);
            return set_code(code, "bad_request");
        }
    if (wire_get_index_array(m, okey, &lim->wire, off, n_off) || wire_check_offsets(*off, *n_off, a.numel, okey)) {
        free(a.data);
        free(*off);
        *off = NULL;
        return set_code(code, "bad_request");
    }
    *ids = t;
    return 0;
}

/* Append ids to a growing pool; offsets per sequence. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} Pool;

static int pool_add(Pool *p, const int32_t *ids, size_t n) {
    if (p->n + n > p->cap) {
        size_t cap = (p->n + n) * 2 + 64;
        int32_t *q = realloc(p->ids, cap * sizeof(int32_t));
        if (!q) return align_errorf("out of memory");
        p->ids = q, p->cap = cap;
    }
    if (n) memcpy(p->ids + p->n, ids, n * sizeof(int32_t));
    p->n += n;
    return 0;
}

long rm_proto_utf8_invalid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xBF; /* the range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            if (c == 0xE0) lo = 0xA0;      /* overlong */
            else if (c == 0xED) hi = 0x9F; /* UTF-16 surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            if (c == 0xF0) lo = 0x90;      /* overlong */
            else if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
        } else {
            return (long)i; /* a continuation byte, C0/C1 (overlong) or F5..FF */
        }
        if (i + k >= n) return (long)i; /* cut short */
        if (p[i + 1] < lo || p[i + 1] > hi) return (long)i;
        for (size_t j = 2; j <= k; j++)
            if ((p[i + j] & 0xC0) != 0x80) return (long)i;
        i += k + 1;
    }
    return -1;
}

/* Every string of a text field must be UTF-8: the msgpack str type promises
 * it, the tokenizer's pre-tokenizer reads UTF-8, and bytes that are not
 * would be scored as something the client did not mean. */
static int check_utf8(char **a, size_t n, const char *field) {
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(a[i]);
        long at = rm_proto_utf8_invalid(a[i], len);
        if (at >= 0)
            return align_errorf("field \"%s\": string %zu is not valid UTF-8 (byte 0x%02x at offset %ld)", field, i,
                                (unsigned char)a[i][at], at);
    }
    return 0;
}

static int decode_texts(const WireMsg *m, const Tokenizer *tok, ChatTemplate tmpl, const RmProtoLimits *lim,
                        RmRequest *out, const char **code) {
    int split = !wire_has(m, "texts");
    char **a = NULL, **b = NULL;
    size_t na = 0, nb = 0;
    if (split) {
        if (wire_get_str_array(m, "prompts", &lim->wire, &a, &na) || wire_get_str_array(m, "responses", &lim->wire, &b, &nb)) {
            free(a);
            return set_code(code, "bad_request");
        }
        if (na != nb) {
            free(a), free(b);
            align_errorf("\"prompts\" has %zu strings but \"responses\" has %zu", na, nb);
            return set_code(code, "bad_request");
        }
    } else if (wire_get_str_array(m, "texts", &lim->wire, &a, &na)) {
        return set_code(code, "bad_request");
    }
    if (check_utf8(a, na, split ? "prompts" : "texts") || (split && check_utf8(b, nb, "responses"))) {
        free(a), free(b);
        return set_code(code, "bad_request");
    }
    if ((long)na > lim->max_seqs) {
        free(a), free(b);
        align_errorf("%zu sequences is over the limit of %d per request", na, lim->max_seqs);
        return set_code(code, "too_large");
    }
    Pool pp = {0}, rp = {0};
    out->roff = calloc(na + 1, sizeof(int64_t));
    if (split) out->poff = calloc(na + 1, sizeof(int64_t));
    int rc = 0;
    if (!out->roff || (split && !out->poff)) rc = align_errorf("out of memory");
    DsOptions opt;
    ds_options_default(&opt);
    opt.kind = DS_SFT;
    opt.chat_template = tmpl;
    for (size_t i = 0; i < na && !rc; i++) {
        if (!split) {
            int32_t *ids = NULL;
            int n = 0;
            /* as OpenRLHF's serve_rm: tokenizer(query), BOS first when the model adds it,
             * once (a query decoded with its "<bos>" keeps that one) */
            rc = tok_encode_start(tok, a[i], strlen(a[i]), 1, &ids, &n) || pool_add(&rp, ids, n);
            free(ids);
        } else {
            /* exactly the dataset layer's {prompt, completion} record */
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "prompt", a[i]);
            cJSON_AddStringToObject(o, "completion", b[i]);
            char *json = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
            DsExample ex;
            memset(&ex, 0, sizeof ex);
            char where[32];
            snprintf(where, sizeof where, "sequence %zu", i);
            if (!json || ds_parse_record(json, strlen(json), where, tok, &opt, &ex) != 1) rc = -1;
            else rc = pool_add(&pp, ex.prompt, ex.n_prompt) || pool_add(&rp, ex.chosen, ex.n_chosen);
            ds_example_free(&ex);
            free(json);
        }
        if (!rc && (long)(pp.n + rp.n) > lim->max_tokens) {
            rc = -1;
            align_errorf("the request tokenizes to more than %ld tokens", lim->max_tokens);
            *code = "too_large";
        }
        if (!rc) {
            out->roff[i + 1] = (int64_t)rp.n;
            if (split) out->poff[i + 1] = (int64_t)pp.n;
        }
    }
    free(a), free(b);
    out->resp = rp.ids;
    out->prompt = pp.ids;
    out->n_seqs = (int)na;
    out->n_tokens = (long)(pp.n + rp.n);
    if (rc) {
        if (!*code) *code = "bad_request";
        return -1;
    }
    if (!out->resp) out->resp = malloc(sizeof(int32_t));
    if (split && !out->prompt) out->prompt = malloc(sizeof(int32_t));
    return 0;
}

int rm_request_decode(const WireMsg *m, const Tokenizer *tok, ChatTemplate tmpl, const RmProtoLimits *lim,
                      RmRequest *out, const char **code) {
    memset(out, 0, sizeof *out);
    *code = NULL;
    uint64_t id;
    if (wire_has(m, "id")) {
        if (wire_get_uint(m, "id", &id)) return set_code(code, "bad_request");
        out->has_id = 1, out->id = id;
    }
    int forms = wire_has(m, "tokens") + wire_has(m, "texts") + (wire_has(m, "prompts") || wire_has(m, "responses"));
    if (forms != 1) {
        align_errorf("a score request carries exactly one of \"tokens\"+\"offsets\", \"texts\", or \"prompts\"+\"responses\"");
        return set_code(code, "bad_request");
    }
    int rc;
    if (wire_has(m, "tokens")) {
        size_t nr = 0, np = 0;
        rc = get_ragged(m, "tokens", "offsets", lim, &out->resp, &out->roff, &nr, code);
        if (!rc && (wire_has(m, "prompt_tokens") || wire_has(m, "prompt_offsets"))) {
            rc = get_ragged(m, "prompt_tokens", "prompt_offsets", lim, &out->prompt, &out->poff, &np, code);
            if (!rc && np != nr) {
                align_errorf("\"prompt_offsets\" has %zu entries but \"offsets\" has %zu", np, nr);
                rc = set_code(code, "bad_request");
            }
        }
        if (!rc) {
            out->n_seqs = (int)(nr - 1);
            out->n_tokens = out->roff[nr - 1] + (out->poff ? out->poff[np - 1] : 0);
            if ((long)nr - 1 > lim->max_seqs) {
                align_errorf("%zu sequences is over the limit of %d per request", nr - 1, lim->max_seqs);
                rc = set_code(code, "too_large");
            } else if (out->n_tokens > lim->max_tokens) {
                align_errorf("%ld tokens is over the limit of %ld per request", out->n_tokens, lim->max_tokens);
                rc = set_code(code, "too_large");
            }
        }
    } else {
        if (!tok) {
            align_errorf("this reward model has no tokenizer: send token ids (\"tokens\" + \"offsets\")");
            return set_code(code, "no_tokenizer");
        }
        rc = decode_texts(m, tok, tmpl, lim, out, code);
    }
    for (int i = 0; !rc && i < out->n_seqs; i++) {
        long len = rm_request_len(out, i);
        if (len == 0) {
            align_errorf("sequence %d is empty", i);
            rc = set_code(code, "bad_request");
        } else if (lim->max_seq_len > 0 && len > lim->max_seq_len) {
            align_errorf("sequence %d has %ld tokens; this server scores at most %d (the model's positions or --max-length)",
                         i, len, lim->max_seq_len);
            rc = set_code(code, "too_long");
        }
    }
    if (rc) {
        uint64_t keep = out->id;
        int has = out->has_id;
        rm_request_free(out);
        out->id = keep, out->has_id = has;
    }
    return rc;
}

int rm_reply_scores(int has_id, uint64_t id, const float *scores, int n, void **data, size_t *len) {
    WireWriter *w = wire_writer_new("scores");
    if (!w) return -1;
    if (has_id) wire_put_uint(w, "id", id);
    wire_put_vec(w, "scores", WIRE_F32, scores, (size_t)n);
    return wire_finish(w, data, len);
}
