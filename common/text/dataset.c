/* dataset: records in, token ids out (see dataset.h for the record shapes).
 *
 * Two stages per record. parse_* turns the JSON object into a text-level Rec
 * (prompt messages or prompt string, chosen/rejected or completion content),
 * which is where every shape and every "bad record" decision lives. tokenize
 * then renders the Rec with the chat template and encodes it: control spans
 * by id lookup, all other text with allow_special = 0, so data can never
 * produce a control token. Keeping the stages apart keeps the error messages
 * about the record, not about tokens.
 *
 * Streaming: JSONL is read with getline, one line at a time. A .json array
 * is read into memory once and split into elements by a small scanner that
 * tracks strings and nesting, and each element is parsed alone, so memory is
 * the file plus one element's tree rather than the file plus a tree of all
 * of it. */
#define _GNU_SOURCE
#include "dataset.h"

#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "table_reader.h"
#include "util.h"

void ds_options_default(DsOptions *o) {
    memset(o, 0, sizeof *o);
    o->kind = DS_PREFERENCE;
    o->chat_template = CHAT_TEMPLATE_NONE;
    o->overflow = DS_OVERFLOW_TRUNCATE;
}

/* ============================================================ records (text level) */

typedef struct {
    int conv;            /* prompt as messages: render with the chat template */
    ChatMessage *pmsgs;  /* conv: prompt messages (points into the cJSON tree) */
    int n_pmsgs;
    const char *prompt;  /* !conv: prompt text */
    const char *chosen;  /* completion content (SFT: the completion; multi-turn: the first assistant turn) */
    const ChatMessage *later; /* multi-turn SFT: the messages after the first assistant turn (ends with
                               * an assistant turn); NULL otherwise */
    int n_later;
    const char *rejected;
    int text_mode;       /* {text}: no prompt, no template */
    float margin;
    int has_margin;
    float score_chosen, score_rejected;
    char *owned;         /* an implicit prompt's copy */
    ChatMessage user_msg; /* a string prompt as one user message */
} Rec;

static void rec_free(Rec *r) {
    if (r->pmsgs != &r->user_msg) free(r->pmsgs);
    free(r->owned);
}

static const cJSON *field(const cJSON *o, const char *name) {
    return cJSON_GetObjectItemCaseSensitive(o, name);
}

/* A string or a message list; anything else present is an error. */
static int check_text_or_msgs(const cJSON *v, const char *name) {
    if (cJSON_IsString(v) || cJSON_IsArray(v)) return 0;
    return align_errorf("field \"%s\" must be a string or a list of {role, content} messages", name);
}

static int parse_msgs(const cJSON *arr, const char *name, ChatMessage **out, int *n) {
    int cnt = cJSON_GetArraySize(arr);
    *out = NULL;
    *n = 0;
    if (cnt == 0) return align_errorf("field \"%s\" is an empty list", name);
    ChatMessage *m = malloc((size_t)cnt * sizeof *m);
    if (!m) return align_errorf("out of memory reading messages");
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *role = field(it, "role"), *content = field(it, "content");
        if (!cJSON_IsObject(it) || !cJSON_IsString(role) || !cJSON_IsString(content)) {
            free(m);
            return align_errorf("field \"%s\": message %d is not a {role, content} object with string values",
                                name, i);
        }
        /* ShareGPT's speaker names ({"from": "human"/"gpt"} turned into
         * roles): no template knows them, and the record would otherwise
         * fail later as "not from the assistant" */
        if (!strcmp(role->valuestring, "human") || !strcmp(role->valuestring, "gpt")) {
            free(m);
            return align_errorf("field \"%s\": message %d has role \"%s\" (ShareGPT's name): the roles are "
                                "\"system\", \"user\" and \"assistant\" (human -> user, gpt -> assistant)",
                                name, i, role->valuestring);
        }
        m[i].role = role->valuestring;
        m[i].content = content->valuestring;
        i++;
    }
    *out = m;
    *n = cnt;
    return 0;
}

static int msg_eq(const ChatMessage *a, const ChatMessage *b) {
    return strcmp(a->role, b->role) == 0 && strcmp(a->content, b->content) == 0;
}

/* A completion given as a message list: drop leading messages that repeat
 * the prompt (UltraFeedback stores the whole conversation in chosen), then
 * exactly one assistant message must remain. */
static int completion_from_msgs(const cJSON *arr, const char *name, const ChatMessage *pm, int npm,
                                const char **content) {
    ChatMessage *m;
    int n;
    if (parse_msgs(arr, name, &m, &n)) return -1;
    int k = 0;
    if (npm > 0 && n > npm) {
        while (k < npm && msg_eq(&m[k], &pm[k])) k++;
        if (k < npm) k = 0;
    }
    if (n - k != 1 || strcmp(m[k].role, "assistant") != 0) {
        free(m);
        return align_errorf("field \"%s\" must be one assistant message (after the prompt's messages)", name);
    }
    *content = m[k].content;
    free(m);
    return 0;
}

static int set_string_prompt(Rec *r, const char *s) {
    r->prompt = s;
    r->user_msg.role = "user";
    r->user_msg.content = s;
    return 0;
}

/* The prompt field (string or messages) into r. */
static int take_prompt(Rec *r, const cJSON *p, const char *name) {
    if (check_text_or_msgs(p, name)) return -1;
    if (cJSON_IsString(p)) return set_string_prompt(r, p->valuestring);
    r->conv = 1;
    return parse_msgs(p, name, &r->pmsgs, &r->n_pmsgs);
}

static int utf8_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

/* hh-rlhf style: chosen and rejected are whole transcripts. The prompt ends
 * after the last "\n\nAssistant:" inside their common prefix; without one,
 * at the common prefix (moved back before a trailing space, as TRL's
 * extract_prompt does, so the completions keep their leading space). */
static int implicit_string_prompt(Rec *r, const char *c, const char *rj) {
    size_t n = 0;
    while (c[n] && c[n] == rj[n]) n++;
    while (n > 0 && utf8_cont((unsigned char)c[n])) n--; /* never split a character */
    static const char MARK[] = "\n\nAssistant:";
    const size_t mlen = sizeof MARK - 1;
    size_t cut = 0;
    int found = 0;
    for (const char *p = c; (p = strstr(p, MARK)) != NULL && (size_t)(p - c) + mlen <= n; p++) {
        cut = (size_t)(p - c) + mlen;
        found = 1;
    }
    if (!found) {
        cut = n;
        if (cut > 0 && c[cut - 1] == ' ') cut--;
    }
    if (!c[cut] && !rj[cut]) return align_errorf("\"chosen\" and \"rejected\" are identical");
    if (!c[cut]) return align_errorf("\"chosen\" has nothing after the prompt it shares with \"rejected\"");
    if (!rj[cut]) return align_errorf("\"rejected\" has nothing after the prompt it shares with \"chosen\"");
    r->owned = strndup(c, cut);
    if (!r->owned) return align_errorf("out of memory");
    set_string_prompt(r, r->owned);
    r->chosen = c + cut;
    r->rejected = rj + cut;
    return 0;
}

/* Message lists without "prompt": the shared leading messages. */
static int implicit_msgs_prompt(Rec *r, const cJSON *c, const cJSON *rj) {
    ChatMessage *mc, *mr;
    int nc, nr;
    if (parse_msgs(c, "chosen", &mc, &nc)) return -1;
    if (parse_msgs(rj, "rejected", &mr, &nr)) {
        free(mc);
        return -1;
    }
    int k = 0;
    while (k < nc && k < nr && msg_eq(&mc[k], &mr[k])) k++;
    int rc = 0;
    if (k == nc && k == nr) rc = align_errorf("\"chosen\" and \"rejected\" are identical");
    else if (nc - k != 1 || strcmp(mc[k].role, "assistant") != 0)
        rc = align_errorf("after the messages it shares with \"rejected\", \"chosen\" must be one assistant message");
    else if (nr - k != 1 || strcmp(mr[k].role, "assistant") != 0)
        rc = align_errorf("after the messages it shares with \"chosen\", \"rejected\" must be one assistant message");
    if (rc == 0) {
        r->conv = 1;
        r->chosen = mc[k].content;
        r->rejected = mr[k].content;
        r->n_pmsgs = k;
        r->pmsgs = mc; /* the first k entries are the prompt */
        mc = NULL;
    }
    free(mc);
    free(mr);
    return rc;
}

static int opt_number(const cJSON *o, const char *name, float *v, int *has) {
    const cJSON *x = field(o, name);
    if (!x || cJSON_IsNull(x)) return 0;
    if (!cJSON_IsNumber(x)) return align_errorf("field \"%s\" must be a number", name);
    *v = (float)x->valuedouble;
    if (has) *has = 1;
    return 0;
}

static int completion_field(Rec *r, const cJSON *v, const char *name, const char **out) {
    if (check_text_or_msgs(v, name)) return -1;
    if (cJSON_IsString(v)) {
        *out = v->valuestring;
        return 0;
    }
    if (!r->conv) { /* a string prompt with list completions: the prompt is one user message */
        r->conv = 1;
        r->pmsgs = &r->user_msg;
        r->n_pmsgs = 1;
    }
    return completion_from_msgs(v, name, r->pmsgs, r->n_pmsgs, out);
}

static int parse_preference(const cJSON *o, Rec *r) {
    const cJSON *p = field(o, "prompt"), *c = field(o, "chosen"), *rj = field(o, "rejected");
    if (!c && field(o, "completion") && field(o, "label"))
        return align_errorf("an unpaired record {prompt, completion, label} is KTO data (--loss kto); "
                            "the pairwise losses need {prompt, chosen, rejected}");
    if (!c) return align_errorf("missing field \"chosen\"");
    if (!rj) return align_errorf("missing field \"rejected\"");
    if (check_text_or_msgs(c, "chosen") || check_text_or_msgs(rj, "rejected")) return -1;
    if (p) {
        if (take_prompt(r, p, "prompt")) return -1;
        const char *sc, *sr;
        /* Both completions are judged against the same prompt messages. */
        if (completion_field(r, c, "chosen", &sc) || completion_field(r, rj, "rejected", &sr)) return -1;
        r->chosen = sc;
        r->rejected = sr;
    } else if (cJSON_IsString(c) && cJSON_IsString(rj)) {
        if (implicit_string_prompt(r, c->valuestring, rj->valuestring)) return -1;
    } else if (cJSON_IsArray(c) && cJSON_IsArray(rj)) {
        if (implicit_msgs_prompt(r, c, rj)) return -1;
    } else {
        return align_errorf("without \"prompt\", \"chosen\" and \"rejected\" must both be strings or both message lists");
    }
    if (!*r->chosen) return align_errorf("field \"chosen\" is empty");
    if (!*r->rejected) return align_errorf("field \"rejected\" is empty");
    if (opt_number(o, "margin", &r->margin, &r->has_margin)) return -1;
    if (opt_number(o, "score_chosen", &r->score_chosen, NULL)) return -1;
    if (opt_number(o, "score_rejected", &r->score_rejected, NULL)) return -1;
    return 0;
}

/* KTO data: {prompt, completion, label} puts the completion on the chosen
 * side (label true, desirable) or the rejected side (false, undesirable);
 * a preference record keeps both sides, one example of each label. */
static int parse_unpaired(const cJSON *o, Rec *r) {
    if (field(o, "chosen") || field(o, "rejected") || !field(o, "completion")) return parse_preference(o, r);
    const cJSON *p = field(o, "prompt"), *c = field(o, "completion"), *label = field(o, "label");
    if (!p) return align_errorf("missing field \"prompt\"");
    if (!label) return align_errorf("missing field \"label\" (true = desirable, false = undesirable)");
    if (!cJSON_IsBool(label)) {
        /* the value shown: "True" or 1 from a pandas export is the usual cause */
        char *v = cJSON_PrintUnformatted(label);
        align_errorf("field \"label\" must be true or false (a JSON boolean, as TRL's; it is %.40s%s)", v ? v : "?",
                     v && strlen(v) > 40 ? "..." : "");
        free(v);
        return -1;
    }
    const char *text;
    if (take_prompt(r, p, "prompt") || completion_field(r, c, "completion", &text)) return -1;
    if (!*text) return align_errorf("field \"completion\" is empty");
    if (cJSON_IsTrue(label)) r->chosen = text;
    else r->rejected = text;
    return 0;
}

static int need_string(const cJSON *o, const char *name, const char **out) {
    const cJSON *v = field(o, name);
    if (!v) return align_errorf("missing field \"%s\"", name);
    if (!cJSON_IsString(v)) return align_errorf("field \"%s\" must be a string", name);
    *out = v->valuestring;
    return 0;
}

/* {messages}: the last message must be the assistant's. With last_turn
 * everything before it is the prompt; otherwise the prompt ends at the
 * first assistant message and every assistant turn from there on is trained
 * (r->later holds the messages after the first). */
static int messages_record(const cJSON *o, Rec *r, int prompt_only, int last_turn) {
    const cJSON *m = field(o, "messages");
    if (!cJSON_IsArray(m)) return align_errorf("field \"messages\" must be a list of {role, content} messages");
    if (parse_msgs(m, "messages", &r->pmsgs, &r->n_pmsgs)) return -1;
    r->conv = 1;
    int last_is_asst = strcmp(r->pmsgs[r->n_pmsgs - 1].role, "assistant") == 0;
    if (prompt_only) {
        if (last_is_asst) r->n_pmsgs--;
        if (r->n_pmsgs == 0) return align_errorf("field \"messages\" has no message before the assistant's");
        return 0;
    }
    if (!last_is_asst)
        return align_errorf("the last message in \"messages\" is not from the assistant (its role is \"%s\")",
                            r->pmsgs[r->n_pmsgs - 1].role);
    int first = r->n_pmsgs - 1;
    if (!last_turn)
        for (int i = 0; i < r->n_pmsgs; i++)
            if (strcmp(r->pmsgs[i].role, "assistant") == 0) {
                first = i;
                break;
            }
    r->chosen = r->pmsgs[first].content;
    if (first < r->n_pmsgs - 1) {
        r->later = r->pmsgs + first + 1;
        r->n_later = r->n_pmsgs - first - 1;
    }
    r->n_pmsgs = first;
    return 0;
}

/* The formats people bring that TRL does not read either, named so the
 * error says what the file is and how to make it a record: ShareGPT's
 * conversations, Alpaca's instruction/input/output, and records wrapped
 * in one object ({"data": [...]}, what some exporters write). */
static const char *other_format_hint(const cJSON *o) {
    if (field(o, "conversations"))
        return "; this looks like ShareGPT (\"conversations\" of from/value turns): write them as \"messages\" "
               "of role/content (human -> user, gpt -> assistant)";
    if (field(o, "instruction") && field(o, "output"))
        return "; this looks like Alpaca (\"instruction\", \"input\", \"output\"): write \"prompt\" (the "
               "instruction, then the input if any) and \"completion\" (the output)";
    const cJSON *only = o->child;
    if (only && !only->next && cJSON_IsArray(only) && cJSON_IsObject(only->child))
        return "; the records seem to be the list inside this one object: a .json file holds a JSON array of "
               "records [{...}, ...], a .jsonl file one record per line";
    /* otherwise the fields it has: a table's header row (a title row above
     * the header becomes the header), a renamed column, a typo */
    static char buf[400];
    size_t at = (size_t)snprintf(buf, sizeof buf, "; the record's fields are ");
    int k = 0;
    for (const cJSON *it = o->child; it && at < sizeof buf; it = it->next, k++) {
        if (k == 6) {
            snprintf(buf + at, sizeof buf - at, ", ...");
            break;
        }
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s\"%.40s\"", k ? ", " : "", it->string ? it->string : "");
    }
    return k ? buf : "; the record is an empty object";
}

static int parse_sft(const cJSON *o, Rec *r, int last_turn) {
    if (field(o, "messages")) {
        if (messages_record(o, r, 0, last_turn)) return -1;
    } else if (field(o, "text")) {
        if (need_string(o, "text", &r->chosen)) return -1;
        r->text_mode = 1;
        if (!*r->chosen) return align_errorf("field \"text\" is empty");
        return 0;
    } else if (field(o, "question")) {
        const char *q = NULL;
        if (need_string(o, "question", &q) || need_string(o, "answer", &r->chosen)) return -1;
        set_string_prompt(r, q);
    } else if (field(o, "prompt")) {
        const cJSON *c = field(o, "completion"), *label = field(o, "label");
        if (!c) return align_errorf("missing field \"completion\"");
        if (label && cJSON_IsFalse(label))
            return align_errorf("the completion is labelled false (undesirable); it cannot be an SFT target");
        if (take_prompt(r, field(o, "prompt"), "prompt") || completion_field(r, c, "completion", &r->chosen))
            return -1;
    } else {
        return align_errorf("no SFT fields: expected \"messages\", \"text\", \"question\"/\"answer\" or "
                            "\"prompt\"/\"completion\"%s",
                            other_format_hint(o));
    }
    if (!*r->chosen) return align_errorf("the completion is empty");
    return 0;
}

static int parse_prompt_only(const cJSON *o, Rec *r) {
    if (field(o, "prompt")) {
        if (take_prompt(r, field(o, "prompt"), "prompt")) return -1;
    } else if (field(o, "question")) {
        const char *q = NULL;
        if (need_string(o, "question", &q)) return -1;
        set_string_prompt(r, q);
    } else if (field(o, "messages")) {
        return messages_record(o, r, 1, 1);
    } else if (field(o, "chosen") && field(o, "rejected")) {
        return parse_preference(o, r);
    } else {
        return align_errorf("no prompt: expected \"prompt\", \"question\" or \"messages\"%s", other_format_hint(o));
    }
    if (!r->conv && !*r->prompt) return align_errorf("the prompt is empty");
    return 0;
}

/* ============================================================ tokenizing */

typedef struct {
    int32_t *v;
    int n, cap;
} Ids;

static int ids_push(Ids *a, const int32_t *x, int n) {
    if (n <= 0) return 0; /* an empty piece (x may be NULL) */
    if (a->n + n > a->cap) {
        int cap = a->cap ? a->cap : 64;
        while (cap < a->n + n) cap *= 2;
        int32_t *p = realloc(a->v, (size_t)cap * sizeof *p);
        if (!p) return align_errorf("out of memory tokenizing a record");
        a->v = p;
        a->cap = cap;
    }
    memcpy(a->v + a->n, x, (size_t)n * sizeof *x);
    a->n += n;
    return 0;
}

static int encode_text(Ids *a, const Tokenizer *tok, const char *s, size_t n) {
    if (n == 0) return 0;
    int32_t *ids = NULL;
    int k = 0;
    if (tok_encode(tok, s, n, 0, &ids, &k)) return -1;
    int rc = ids_push(a, ids, k);
    free(ids);
    return rc;
}

/* The text a sequence starts with when no chat template renders it (a raw
 * prompt, a {text} record): transformers' tokenizer(text), BOS first when
 * the model adds one, as TRL tokenizes non-conversational data. A rendered
 * template brings its own BOS (apply_chat_template encodes without special
 * tokens), and a completion continues its prompt: neither gets one. */
static int encode_start(Ids *a, const Tokenizer *tok, const char *s, size_t n) {
    int32_t *ids = NULL;
    int k = 0;
    if (tok_encode_start(tok, s, n, 0, &ids, &k)) return -1;
    int rc = ids_push(a, ids, k);
    free(ids);
    return rc;
}

/* Control spans become their token id; a tokenizer without that token sees
 * the markup as text (what HF's tokenizer would do with the rendered string). */
static int encode_chat(Ids *a, const Tokenizer *tok, const ChatText *ct) {
    char name[64];
    for (int i = 0; i < ct->n_spans; i++) {
        const ChatSpan *s = &ct->spans[i];
        if (s->control && s->len < sizeof name) {
            memcpy(name, ct->text + s->off, s->len);
            name[s->len] = 0;
            int32_t id = tok_token_id(tok, name);
            if (id >= 0) {
                if (ids_push(a, &id, 1)) return -1;
                continue;
            }
        }
        if (encode_text(a, tok, ct->text + s->off, s->len)) return -1;
    }
    return 0;
}

static int push_eos(Ids *a, const Tokenizer *tok, ChatTemplate t) {
    int32_t eos = tok_eos_id(tok);
    if (chat_template_end_marker(t) || eos < 0) return 0;
    return ids_push(a, &eos, 1);
}

/* One completion (chosen, rejected or SFT) after a rendered prompt. */
static int encode_completion(Ids *a, const Tokenizer *tok, ChatTemplate t, int use_template,
                             const char *content) {
    if (!use_template) {
        if (encode_text(a, tok, content, strlen(content))) return -1;
        return push_eos(a, tok, CHAT_TEMPLATE_NONE);
    }
    ChatText p, c;
    if (chat_render_split(t, NULL, 0, content, &p, &c)) return -1;
    int rc = encode_chat(a, tok, &c) || push_eos(a, tok, t);
    chat_text_free(&p);
    chat_text_free(&c);
    return rc ? -1 : 0;
}

/* An hh-rlhf transcript prompt ("\n\nHuman: q\n\nAssistant: a\n\nHuman:
 * q2\n\nAssistant:") as chat turns, for a chat template: one user or
 * assistant message per "Human: "/"Assistant: " section, the final empty
 * "Assistant:" becoming the template's generation prompt. Returns the
 * number of messages (into *out, contents in *owned), 0 when the text is
 * not such a transcript (it stays one user message), -1 on error. */
static int hh_turns(const char *text, ChatMessage **out, char **owned) {
    static const char H[] = "\n\nHuman: ", A[] = "\n\nAssistant: ", END[] = "\n\nAssistant:";
    if (strncmp(text, H, sizeof H - 1)) return 0;
    size_t n = strlen(text);
    if (n < sizeof END - 1 || strcmp(text + n - (sizeof END - 1), END)) return 0;
    char *buf = strdup(text);
    int cap = 4, k = 0;
    ChatMessage *m = malloc((size_t)cap * sizeof *m);
    if (!buf || !m) {
        free(buf), free(m);
        return align_errorf("out of memory");
    }
    buf[n - (sizeof END - 1)] = 0; /* the generation prompt */
    char *p = buf;
    const char *role = "user";
    size_t skip = sizeof H - 1;
    for (;;) {
        p += skip;
        char *nh = strstr(p, H), *na = strstr(p, A);
        char *next = nh && (!na || nh < na) ? nh : na;
        if (k == cap) {
            ChatMessage *g = realloc(m, (size_t)(cap *= 2) * sizeof *m);
            if (!g) {
                free(buf), free(m);
                return align_errorf("out of memory");
            }
            m = g;
        }
        m[k++] = (ChatMessage){role, p};
        if (!next) break;
        role = next == nh ? "user" : "assistant";
        skip = next == nh ? sizeof H - 1 : sizeof A - 1;
        *next = 0;
        p = next;
    }
    if (strcmp(m[k - 1].role, "user")) { /* the last turn before the reply must be the human's */
        free(buf), free(m);
        return 0;
    }
    *out = m;
    *owned = buf;
    return k;
}

/* Pads the loss mask with v up to the completion's length. */
static int mask_to(Ids *mask, int n, int32_t v) {
    while (mask->n < n)
        if (ids_push(mask, &v, 1)) return -1;
    return 0;
}

/* Multi-turn SFT: the completion runs from the first assistant turn to the
 * last; mask is 1 over each assistant turn (content + end marker) and 0
 * over the text between turns (ChatML's "\n", the user/system/tool
 * messages, the next assistant header). Templates without an end marker
 * (hh, none) get the EOS once, after the last turn: it ends the
 * conversation, and the rendered conversation has none between turns. */
static int encode_turns(const Rec *r, const Tokenizer *tok, ChatTemplate t, Ids *c, Ids *mask) {
    const char *content = r->chosen;
    int at = 0; /* the first message of r->later not yet encoded */
    for (;;) {
        ChatText p, ct;
        if (chat_render_split(t, NULL, 0, content, &p, &ct)) return -1;
        int rc = encode_chat(c, tok, &ct);
        chat_text_free(&p);
        chat_text_free(&ct);
        if (rc || mask_to(mask, c->n, 1)) return -1;
        int next = at;
        while (next < r->n_later && strcmp(r->later[next].role, "assistant") != 0) next++;
        if (next == r->n_later) break; /* content was the last turn */
        ChatText between;
        if (chat_render_between(t, r->later + at, next - at, &between)) return -1;
        rc = encode_chat(c, tok, &between);
        chat_text_free(&between);
        if (rc || mask_to(mask, c->n, 0)) return -1;
        content = r->later[next].content;
        at = next + 1;
    }
    if (push_eos(c, tok, t)) return -1;
    return mask_to(mask, c->n, 1);
}

static int tokenize_rec(const Rec *r, const Tokenizer *tok, const DsOptions *opt, Ids *prompt, Ids *chosen,
                        Ids *rejected, Ids *mask) {
    if (r->text_mode) return encode_start(chosen, tok, r->chosen, strlen(r->chosen)) ||
                              push_eos(chosen, tok, CHAT_TEMPLATE_NONE) ? -1 : 0;
    ChatTemplate t = opt->chat_template;
    int use_template = r->conv || t != CHAT_TEMPLATE_NONE;
    int hh = 0;
    if (use_template) {
        const ChatMessage *pm = r->conv ? r->pmsgs : &r->user_msg;
        int npm = r->conv ? r->n_pmsgs : 1;
        ChatMessage *turns = NULL;
        char *owned = NULL;
        if (!r->conv && (hh = hh_turns(r->prompt, &turns, &owned)) < 0) return -1;
        if (hh > 0) pm = turns, npm = hh;
        ChatText ct;
        int rc = chat_render(t, pm, npm, 1, &ct);
        if (!rc) rc = encode_chat(prompt, tok, &ct), chat_text_free(&ct);
        free(turns), free(owned);
        if (rc) return -1;
    } else if (encode_start(prompt, tok, r->prompt, strlen(r->prompt))) {
        return -1;
    }
    if (r->later) return encode_turns(r, tok, t, chosen, mask);
    /* an hh reply's leading space belongs to the "Assistant: " marker */
    const char *c = r->chosen && hh > 0 && r->chosen[0] == ' ' ? r->chosen + 1 : r->chosen;
    const char *rj = r->rejected && hh > 0 && r->rejected[0] == ' ' ? r->rejected + 1 : r->rejected;
    if (c && encode_completion(chosen, tok, t, use_template, c)) return -1;
    if (rj && encode_completion(rejected, tok, t, use_template, rj)) return -1;
    return 0;
}

/* Cut to the limits (see dataset.h). Returns 1 when something was cut, 0
 * when it fits, -1 when it doesn't fit and overflow is DS_OVERFLOW_DROP. */
static int fit_length(const DsOptions *opt, Ids *p, Ids *c, Ids *r) {
    int cut = 0;
    if (opt->max_prompt_length > 0 && p->n > opt->max_prompt_length) {
        if (opt->overflow == DS_OVERFLOW_DROP) return -1;
        int drop = p->n - opt->max_prompt_length;
        memmove(p->v, p->v + drop, (size_t)(p->n - drop) * sizeof *p->v);
        p->n -= drop;
        cut = 1;
    }
    int longest = c->n > r->n ? c->n : r->n;
    int L = opt->max_length;
    if (L > 0 && p->n + longest > L) {
        if (opt->overflow == DS_OVERFLOW_DROP) return -1;
        int keep_min = p->n < L / 2 ? p->n : L / 2;
        int drop = p->n + longest - L;
        if (drop > p->n - keep_min) drop = p->n - keep_min;
        if (drop > 0) memmove(p->v, p->v + drop, (size_t)(p->n - drop) * sizeof *p->v); /* p->v may be NULL */
        p->n -= drop;
        int room = L - p->n;
        if (c->n > room) c->n = room;
        if (r->n > room) r->n = room;
        cut = 1;
    }
    return cut;
}

void ds_example_free(DsExample *ex) {
    if (!ex) return;
    free(ex->prompt);
    free(ex->chosen);
    free(ex->rejected);
    free(ex->label);
    free(ex->chosen_mask);
    memset(ex, 0, sizeof *ex);
}

/* Offset of the first byte that is not well-formed UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF), or n. cJSON copies
 * such bytes into strings as they are: a file in Latin-1 or cp1252 would
 * train on mojibake without a word. */
static size_t utf8_bad_offset(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c >= 0xE0 && c <= 0xEF) k = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else return i;
        if (i + k >= n) return i; /* cut short */
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return i;
        i += k + 1;
    }
    return n;
}

int ds_check_utf8(const char *text, size_t len, const char *where) {
    size_t bad = utf8_bad_offset((const unsigned char *)text, len);
    if (bad == len) return 0;
    const unsigned char *u = (const unsigned char *)text;
    if (bad == 0 && len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF)))
        return align_errorf("%s: the file is UTF-16 (Excel's \"Unicode Text\", Notepad's \"Unicode\"), not UTF-8: "
                            "convert it (iconv -f utf-16 -t utf-8) or save it as UTF-8",
                            where);
    /* Windows-1252, not Latin-1: it is what Excel's plain CSV and Windows
     * editors write, and latin1 would turn its curly quotes and euro sign
     * (0x80-0x9F) into control characters without a word */
    return align_errorf("%s: not valid UTF-8 (byte 0x%02X at column %zu); convert the file to UTF-8 (Excel's \"CSV "
                        "(Comma delimited)\" and Windows editors write Windows-1252: iconv -f cp1252 -t utf-8; or "
                        "save as \"CSV UTF-8\")",
                        where, u[bad], bad + 1);
}

int ds_parse_record(const char *json, size_t len, const char *where, const Tokenizer *tok,
                    const DsOptions *opt, DsExample *ex) {
    memset(ex, 0, sizeof *ex);
    ex->score_chosen = ex->score_rejected = NAN;
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    int rc = -1;
    Rec r;
    memset(&r, 0, sizeof r);
    r.score_chosen = r.score_rejected = NAN;
    Ids p = {0}, c = {0}, rj = {0}, mask = {0};
    if (!o) {
        size_t col = end && end >= json ? (size_t)(end - json) + 1 : 1;
        align_errorf("not valid JSON (column %zu)", col);
        goto done;
    }
    for (const char *q = end; q < json + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\r' && *q != '\n') {
            align_errorf("text after the JSON object (column %zu)", (size_t)(q - json) + 1);
            goto done;
        }
    if (!cJSON_IsObject(o)) {
        align_errorf("the record is not a JSON object");
        goto done;
    }
    int prc = opt->kind == DS_PREFERENCE ? parse_preference(o, &r)
              : opt->kind == DS_UNPAIRED ? parse_unpaired(o, &r)
              : opt->kind == DS_SFT      ? parse_sft(o, &r, opt->last_turn_only)
                                         : parse_prompt_only(o, &r);
    if (prc) goto done;
    if (opt->kind == DS_PROMPT) {
        r.chosen = r.rejected = NULL;
        const cJSON *ans = field(o, "answer"); /* the label a verifier checks (RLVR) */
        if (cJSON_IsString(ans)) ex->label = strdup(ans->valuestring);
        else if (cJSON_IsNumber(ans)) ex->label = cJSON_PrintUnformatted(ans);
    }
    if (opt->kind == DS_SFT) r.rejected = NULL;
    if (tokenize_rec(&r, tok, opt, &p, &c, &rj, &mask)) goto done;
    int fit = fit_length(opt, &p, &c, &rj);
    if (fit < 0) {
        rc = 0;
        goto done;
    }
    ex->truncated = fit;
    ex->prompt = p.v, ex->n_prompt = p.n;
    ex->chosen = c.v, ex->n_chosen = c.n;
    ex->rejected = rj.v, ex->n_rejected = rj.n;
    p.v = c.v = rj.v = NULL;
    if (mask.n > 0) { /* follows the completion, cut or not */
        ex->chosen_mask = malloc((size_t)ex->n_chosen + 1);
        if (!ex->chosen_mask) {
            ds_example_free(ex);
            align_errorf("out of memory");
            goto done;
        }
        for (int i = 0; i < ex->n_chosen; i++) ex->chosen_mask[i] = (uint8_t)mask.v[i];
    }
    ex->margin = r.has_margin ? r.margin : 0.0f;
    ex->has_margin = r.has_margin;
    ex->score_chosen = r.score_chosen;
    ex->score_rejected = r.score_rejected;
    rc = 1;
done:
    if (rc != 1) {
        free(ex->label);
        ex->label = NULL;
    }
    if (rc < 0 && where) align_error_prefix("%s", where);
    free(p.v);
    free(c.v);
    free(rj.v);
    free(mask.v);
    rec_free(&r);
    cJSON_Delete(o);
    return rc;
}

/* ============================================================ reading files */

struct DsReader {
    char *path;
    const Tokenizer *tok;
    DsOptions opt;
    int array;
    TableReader *table; /* .csv, .tsv, .xlsx: rows as JSON records (table_reader.h) */
    FILE *f; /* JSONL */
    char *line;
    size_t line_cap;
    long lineno;
    char *buf; /* .json array */
    size_t buf_len, pos;
    long elem;
    int done;
    DsExample cur;
    size_t n_bad, n_dropped, n_truncated;
    char first_bad[512];
};

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

DsReader *ds_reader_open(const char *path, const Tokenizer *tok, const DsOptions *opt) {
    DsReader *r = calloc(1, sizeof *r);
    if (!r) {
        align_errorf("out of memory");
        return NULL;
    }
    r->path = strdup(path);
    r->tok = tok;
    r->opt = *opt;
    if (table_is_table_path(path)) {
        if (!(r->table = table_open(path, opt->sheet))) {
            ds_reader_close(r);
            return NULL;
        }
        return r;
    }
    if (opt->sheet) {
        align_errorf("%s: --sheet %s names an Excel worksheet, and this is not an .xlsx file", path, opt->sheet);
        ds_reader_close(r);
        return NULL;
    }
    r->f = fopen(path, "rb");
    if (!r->f) {
        align_errorf("cannot open data file %s", path);
        ds_reader_close(r);
        return NULL;
    }
    struct stat sb;
    if (fstat(fileno(r->f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        align_errorf("%s is a directory: the data is one file (.jsonl, .json, .csv, .tsv or .xlsx); a Hugging Face "
                     "dataset's Parquet or Arrow files convert with scripts/convert_dataset.py",
                     path);
        ds_reader_close(r);
        return NULL;
    }
    if (fstat(fileno(r->f), &sb) == 0 && !S_ISREG(sb.st_mode)) {
        /* a pipe (/dev/stdin, <(zcat x.jsonl.gz)) cannot be rewound after
         * the look for '[' below, which ate the first '{' of a JSONL file:
         * such a stream is read whole first, then served from memory */
        size_t cap = 1 << 16, n = 0, got;
        char *b = malloc(cap);
        while (b && (got = fread(b + n, 1, cap - n - 1, r->f)) > 0) {
            n += got;
            if (cap - n - 1 == 0) {
                char *g = realloc(b, cap * 2);
                if (!g) {
                    free(b);
                    b = NULL;
                    break;
                }
                b = g;
                cap *= 2;
            }
        }
        if (!b || ferror(r->f)) {
            free(b);
            align_errorf("%s: read error", path);
            ds_reader_close(r);
            return NULL;
        }
        b[n] = 0;
        fclose(r->f);
        r->f = NULL;
        r->buf = b;
        r->buf_len = n;
        if (n == 0) { /* nothing came: no records (the caller says so) */
            r->done = 1;
            return r;
        }
        r->f = fmemopen(r->buf, n, "rb");
        if (!r->f) {
            align_errorf("out of memory reading %s", path);
            ds_reader_close(r);
            return NULL;
        }
    }
    /* A .json array starts with '[' (after whitespace or a UTF-8 BOM); a JSONL
     * record never does, since records are objects. */
    int ch;
    do ch = fgetc(r->f);
    while (ch != EOF && (is_space((char)ch) || ch == 0xEF || ch == 0xBB || ch == 0xBF));
    if (ch == '[' && r->buf) {
        /* a stream read whole above: the array is already in memory */
        fclose(r->f);
        r->f = NULL;
        r->array = 1;
        r->pos = (size_t)(strchr(r->buf, '[') - r->buf) + 1;
    } else if (ch == '[') {
        fclose(r->f);
        r->f = NULL;
        r->buf = align_read_file(path, &r->buf_len);
        if (!r->buf) {
            ds_reader_close(r);
            return NULL;
        }
        r->array = 1;
        r->pos = (size_t)(strchr(r->buf, '[') - r->buf) + 1;
    } else {
        rewind(r->f);
    }
    return r;
}

/* The next element of the array: [*start, *start + *len). 1 = one, 0 = end. */
static int next_element(DsReader *r, const char **start, size_t *len) {
    const char *b = r->buf;
    size_t n = r->buf_len, i = r->pos;
    while (i < n && is_space(b[i])) i++;
    if (r->elem > 0 || (i < n && b[i] == ']')) {
        /* after an element (or at an empty array): ',' or ']' */
        if (i < n && b[i] == ']') {
            for (i++; i < n; i++)
                if (!is_space(b[i]))
                    return align_errorf("%s: text after the closing ']' of the JSON array", r->path);
            r->done = 1;
            return 0;
        }
        if (r->elem > 0) {
            if (i >= n || b[i] != ',')
                return align_errorf("%s: element %ld: expected ',' or ']' after it in the JSON array", r->path,
                                    r->elem - 1);
            i++;
        }
    }
    while (i < n && is_space(b[i])) i++;
    size_t s = i;
    int depth = 0, in_str = 0;
    for (; i < n; i++) {
        char ch = b[i];
        if (in_str) {
            if (ch == '\\') i++;
            else if (ch == '"') in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (depth == 0) break;
            depth--;
        } else if (ch == ',' && depth == 0) {
            break;
        }
    }
    if (i >= n) return align_errorf("%s: element %ld: the JSON array is not closed", r->path, r->elem);
    *start = b + s;
    *len = i - s;
    r->pos = i;
    return 1;
}

/* A JSONL line that is the start, middle or end of a pretty-printed object
 * (jq without -c, json.dump with indent): it opens a brace or bracket it
 * does not close, or is only a closing one, or ends with a comma. Without
 * this the user reads "not valid JSON (column 1)" about a line that looks
 * fine in their editor. */
static int spread_over_lines(const char *s, size_t n) {
    while (n > 0 && is_space(s[n - 1])) n--;
    while (n > 0 && is_space(*s)) s++, n--;
    if (n == 0) return 0;
    char last = s[n - 1];
    if (last == '{' || last == '[' || last == ',') return 1;
    return n <= 2 && (s[0] == '}' || s[0] == ']');
}

/* The next record's text, UTF-8 checked, named in `where`: 1, 0 at the
 * end, -1 a bad record (the error names it; the next call goes on after
 * it), -2 the file cannot be read further. */
static int next_text(DsReader *r, const char **text_out, size_t *len_out, long *row_out, char *where, size_t cap) {
    for (;;) {
        if (r->done) return 0;
        const char *text = NULL;
        size_t len = 0;
        long row = 0;
        if (r->table) {
            int k = table_next(r->table, &text, &len, &row);
            if (k == 0) {
                r->done = 1;
                return 0;
            }
            if (k == -2) return -2;
            snprintf(where, cap, "%s:%ld", r->path, row);
            if (k < 0) return -1; /* a bad cell: named by the table reader */
        } else if (r->array) {
            int k = next_element(r, &text, &len);
            if (k <= 0) return k == 0 ? 0 : -2;
            snprintf(where, cap, "%s: element %ld", r->path, r->elem);
            row = r->elem++;
        } else {
            ssize_t got = getline(&r->line, &r->line_cap, r->f);
            if (got < 0) {
                if (ferror(r->f)) {
                    align_errorf("%s: read error after line %ld", r->path, r->lineno);
                    return -2;
                }
                r->done = 1;
                return 0;
            }
            r->lineno++;
            len = (size_t)got;
            while (len > 0 && is_space(r->line[len - 1])) len--;
            text = r->line;
            if (r->lineno == 1 && len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3, len -= 3;
            size_t k = 0;
            while (k < len && is_space(text[k])) k++;
            if (k == len) continue; /* blank lines are not records */
            snprintf(where, cap, "%s:%ld", r->path, r->lineno);
            row = r->lineno;
        }
        if (ds_check_utf8(text, len, where)) return -1;
        *text_out = text;
        *len_out = len;
        *row_out = row;
        return 1;
    }
}

int ds_reader_next_record(DsReader *r, const char **json, size_t *len, long *row, char *where, size_t cap) {
    return next_text(r, json, len, row, where, cap);
}

int ds_reader_next(DsReader *r, DsExample *ex) {
    char where[600];
    for (;;) {
        const char *text = NULL;
        size_t len = 0;
        long row = 0;
        int k = next_text(r, &text, &len, &row, where, sizeof where);
        if (k == 0) return 0;
        if (k == -2) return -1;
        if (k == 1) {
            ds_example_free(&r->cur);
            int rc = ds_parse_record(text, len, where, r->tok, &r->opt, &r->cur);
            if (rc < 0 && !r->table && !r->array && spread_over_lines(text, len))
                align_errorf("%s: a JSON record spread over several lines (this line is \"%.*s\"): JSONL holds one "
                             "record per line (jq -c, or json.dumps without indent, writes them so)",
                             where, (int)(len < 24 ? len : 24), text);
            if (rc == 1) {
                if (r->cur.truncated) r->n_truncated++;
                r->cur.line = row;
                *ex = r->cur;
                return 1;
            }
            if (rc == 0) {
                r->n_dropped++;
                continue;
            }
        }
        if (!r->opt.skip_bad) return -1;
        if (r->n_bad++ == 0) snprintf(r->first_bad, sizeof r->first_bad, "%s", align_error());
    }
}

void ds_reader_counts(const DsReader *r, size_t *n_bad, size_t *n_dropped, size_t *n_truncated) {
    if (n_bad) *n_bad = r->n_bad;
    if (n_dropped) *n_dropped = r->n_dropped;
    if (n_truncated) *n_truncated = r->n_truncated;
}

const char *ds_reader_first_bad(const DsReader *r) { return r->first_bad; }

void ds_reader_close(DsReader *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
    table_close(r->table);
    free(r->line);
    free(r->buf);
    free(r->path);
    ds_example_free(&r->cur);
    free(r);
}

/* ============================================================ whole datasets */

static int pool_add(Dataset *ds, const int32_t *x, int n, size_t *off) {
    if (ds->pool_len + (size_t)n > ds->pool_cap) {
        size_t cap = ds->pool_cap ? ds->pool_cap : 1 << 16;
        while (cap < ds->pool_len + (size_t)n) cap *= 2;
        int32_t *p = realloc(ds->pool, cap * sizeof *p);
        if (!p) return align_errorf("out of memory loading a dataset (%zu tokens)", ds->pool_len + (size_t)n);
        ds->pool = p;
        ds->pool_cap = cap;
    }
    *off = ds->pool_len;
    if (n) memcpy(ds->pool + ds->pool_len, x, (size_t)n * sizeof *x);
    ds->pool_len += (size_t)n;
    return 0;
}

static int mask_pool_add(Dataset *ds, const uint8_t *x, int n, size_t *off) {
    if (ds->mask_len + (size_t)n > ds->mask_cap) {
        size_t cap = ds->mask_cap ? ds->mask_cap : 1 << 16;
        while (cap < ds->mask_len + (size_t)n) cap *= 2;
        uint8_t *p = realloc(ds->mask_pool, cap);
        if (!p) return align_errorf("out of memory loading a dataset's loss masks");
        ds->mask_pool = p;
        ds->mask_cap = cap;
    }
    *off = ds->mask_len;
    if (n) memcpy(ds->mask_pool + ds->mask_len, x, (size_t)n);
    ds->mask_len += (size_t)n;
    return 0;
}

int ds_load(const char *path, const Tokenizer *tok, const DsOptions *opt, Dataset *out) {
    memset(out, 0, sizeof *out);
    DsReader *r = ds_reader_open(path, tok, opt);
    if (!r) return -1;
    size_t cap = 0, *offs = NULL; /* 4 pool offsets per example (the 4th in the mask pool, SIZE_MAX for
                                   * none), turned into pointers at the end */
    DsExample ex;
    int k;
    while ((k = ds_reader_next(r, &ex)) == 1) {
        if (out->n == cap) {
            cap = cap ? 2 * cap : 1024;
            DsExample *e = realloc(out->ex, cap * sizeof *e);
            size_t *o = realloc(offs, 4 * cap * sizeof *o);
            if (e) out->ex = e;
            if (o) offs = o;
            if (!e || !o) {
                k = align_errorf("out of memory loading %s", path);
                break;
            }
        }
        size_t *o = offs + 4 * out->n;
        o[3] = SIZE_MAX;
        if (pool_add(out, ex.prompt, ex.n_prompt, &o[0]) || pool_add(out, ex.chosen, ex.n_chosen, &o[1]) ||
            pool_add(out, ex.rejected, ex.n_rejected, &o[2]) ||
            (ex.chosen_mask && mask_pool_add(out, ex.chosen_mask, ex.n_chosen, &o[3]))) {
            k = -1;
            break;
        }
        DsExample *d = &out->ex[out->n++];
        *d = ex;
        d->prompt = d->chosen = d->rejected = NULL;
        d->label = ex.label ? strdup(ex.label) : NULL; /* the reader frees its own copy */
        d->chosen_mask = NULL;
    }
    ds_reader_counts(r, &out->n_bad, &out->n_dropped, &out->n_truncated);
    snprintf(out->first_bad, sizeof out->first_bad, "%s", ds_reader_first_bad(r));
    ds_reader_close(r);
    if (k == 0 && out->n == 0)
        k = align_errorf("%s has no usable records (%zu bad, %zu too long)", path, out->n_bad, out->n_dropped);
    if (k < 0) {
        free(offs);
        ds_free(out);
        return -1;
    }
    for (size_t i = 0; i < out->n; i++) {
        DsExample *d = &out->ex[i];
        d->prompt = out->pool + offs[4 * i];
        d->chosen = d->n_chosen || (opt->kind != DS_PROMPT && opt->kind != DS_UNPAIRED) ? out->pool + offs[4 * i + 1] : NULL;
        d->rejected = opt->kind == DS_PREFERENCE || d->n_rejected ? out->pool + offs[4 * i + 2] : NULL;
        d->chosen_mask = offs[4 * i + 3] == SIZE_MAX ? NULL : out->mask_pool + offs[4 * i + 3];
    }
    free(offs);
    return 0;
}

void ds_free(Dataset *ds) {
    if (!ds) return;
    for (size_t i = 0; i < ds->n; i++) free(ds->ex[i].label);
    free(ds->ex);
    free(ds->pool);
    free(ds->mask_pool);
    memset(ds, 0, sizeof *ds);
}

/* ============================================================ packing */

DsSeq ds_example_seq(const DsExample *ex, int which) {
    DsSeq s = {ex->prompt, ex->n_prompt, which ? ex->rejected : ex->chosen, which ? ex->n_rejected : ex->n_chosen,
               which ? NULL : ex->chosen_mask};
    return s;
}

void ds_packed_free(DsPacked *p) {
    if (!p) return;
    free(p->tokens);
    free(p->seq_start);
    free(p->targets);
    free(p->loss_mask);
    free(p->seq_prefix);
    free(p->seq_of);
    memset(p, 0, sizeof *p);
}

static int32_t seq_token(const DsSeq *q, int j) {
    return j < q->n_prompt ? q->prompt[j] : q->completion[j - q->n_prompt];
}

static int pack_alloc(DsPacked *out, const DsSeq *seqs, int n_seqs, int n_packed) {
    size_t total = 0;
    for (int s = 0; s < n_seqs; s++) {
        if (seqs[s].n_prompt < 0 || seqs[s].n_completion < 0 || seqs[s].n_prompt + seqs[s].n_completion == 0)
            return align_errorf("sequence %d of the batch is empty", s);
        total += (size_t)seqs[s].n_prompt + (size_t)seqs[s].n_completion;
    }
    if (total > INT32_MAX) return align_errorf("batch of %zu tokens is too large", total);
    out->tokens = malloc(total * sizeof *out->tokens);
    out->targets = malloc(total * sizeof *out->targets);
    out->loss_mask = malloc(total);
    out->seq_start = malloc(((size_t)n_packed + 1) * sizeof *out->seq_start);
    if (!out->tokens || !out->targets || !out->loss_mask || !out->seq_start) {
        ds_packed_free(out);
        return align_errorf("out of memory packing %zu tokens", total);
    }
    out->n_inputs = n_seqs;
    return 0;
}

/* Appends rows from..n-1 of q as packed sequence number s. */
static void pack_rows(DsPacked *out, int s, const DsSeq *q, int from, int mask_prompt_targets) {
    int start = out->batch.n_tokens, n = q->n_prompt + q->n_completion;
    out->seq_start[s] = start;
    for (int j = from; j < n; j++) {
        int i = start + j - from, last = j == n - 1;
        /* position j predicts token j+1, a completion token when j+1 >= n_prompt
         * (and, with a completion mask, one the mask trains) */
        int m = !last && j + 1 >= q->n_prompt && (!q->completion_mask || q->completion_mask[j + 1 - q->n_prompt]);
        out->tokens[i] = seq_token(q, j);
        out->loss_mask[i] = (uint8_t)m;
        out->n_loss_tokens += m;
        out->targets[i] = last || (mask_prompt_targets && !m) ? -1 : seq_token(q, j + 1);
    }
    out->batch.n_tokens = start + n - from;
}

static void pack_finish(DsPacked *out, int n_packed) {
    out->seq_start[n_packed] = out->batch.n_tokens;
    out->batch.n_seqs = n_packed;
    out->batch.tokens = out->tokens;
    out->batch.seq_start = out->seq_start;
    out->batch.seq_prefix = out->seq_prefix;
}

int ds_pack(const DsSeq *seqs, int n_seqs, int mask_prompt_targets, DsPacked *out) {
    memset(out, 0, sizeof *out);
    if (n_seqs <= 0) return align_errorf("cannot pack an empty batch");
    if (pack_alloc(out, seqs, n_seqs, n_seqs)) return -1;
    for (int s = 0; s < n_seqs; s++) pack_rows(out, s, &seqs[s], 0, mask_prompt_targets);
    pack_finish(out, n_seqs);
    return 0;
}

/* Rows both sequences have alike and that predict nothing in either. */
static int shared_rows(const DsSeq *a, const DsSeq *b) {
    int k = (a->n_prompt < b->n_prompt ? a->n_prompt : b->n_prompt) - 1;
    for (int j = 0; j < k; j++)
        if (a->prompt[j] != b->prompt[j]) return j;
    return k > 0 ? k : 0;
}

int ds_pack_pairs(const DsSeq *seqs, int n_pairs, int mask_prompt_targets, DsPacked *out) {
    memset(out, 0, sizeof *out);
    if (n_pairs <= 0) return align_errorf("cannot pack an empty batch");
    if (pack_alloc(out, seqs, 2 * n_pairs, 3 * n_pairs)) return -1;
    out->seq_prefix = malloc(3 * (size_t)n_pairs * sizeof(int32_t));
    out->seq_of = malloc(2 * (size_t)n_pairs * sizeof(int32_t));
    if (!out->seq_prefix || !out->seq_of) {
        ds_packed_free(out);
        return align_errorf("out of memory packing %d pairs", n_pairs);
    }
    int s = 0;
    for (int i = 0; i < n_pairs; i++) {
        const DsSeq *pair = &seqs[2 * i];
        int k = shared_rows(&pair[0], &pair[1]), root = -1;
        if (k > 0) { /* the shared rows: no targets */
            root = s;
            out->seq_start[s] = out->batch.n_tokens;
            for (int j = 0; j < k; j++) {
                int at = out->batch.n_tokens++;
                out->tokens[at] = pair[0].prompt[j];
                out->targets[at] = -1;
                out->loss_mask[at] = 0;
            }
            out->seq_prefix[s++] = -1;
        }
        for (int side = 0; side < 2; side++) {
            out->seq_of[2 * i + side] = s;
            out->seq_prefix[s] = root;
            pack_rows(out, s++, &pair[side], k, mask_prompt_targets);
        }
    }
    pack_finish(out, s);
    return 0;
}
