/* chat_template: the four built-in formats as small C renderers.
 *
 * Each renderer appends spans to a ChatText, marking control-token strings,
 * so the same code gives the text (for logs, export checks, generate) and the
 * token layout (for datasets: control spans become ids, text spans are
 * encoded with special tokens disallowed). The Jinja strings below are the
 * references the renderers follow byte for byte; the ChatML and Llama-3 ones
 * are the upstream templates (ChatML without SmolLM2's/Qwen2's default system
 * branch, see chat_template.h). */
#include "chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const NAMES[] = {"none", "chatml", "llama3", "hh"};

static const char JINJA_NONE[] = "{% for message in messages %}{{ message['content'] }}{% endfor %}";

static const char JINJA_CHATML[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}";

/* Meta-Llama-3-8B-Instruct's template, verbatim. */
static const char JINJA_LLAMA3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

static const char JINJA_HH[] =
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '\\n\\nHuman: ' + "
    "message['content'] }}{% elif message['role'] == 'assistant' %}{{ '\\n\\nAssistant: ' + "
    "message['content'] }}{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}";

int chat_template_from_name(const char *name, ChatTemplate *out) {
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, NAMES[i]) == 0) {
            *out = (ChatTemplate)i;
            return 0;
        }
    return align_errorf("unknown chat template \"%s\" (known: chatml, llama3, hh, none)", name ? name : "");
}

const char *chat_template_name(ChatTemplate t) {
    return (unsigned)t < 4 ? NAMES[t] : "unknown";
}

int chat_template_detect(const char *jinja, ChatTemplate *out) {
    *out = CHAT_TEMPLATE_NONE;
    if (!jinja || !*jinja) return CHAT_DETECT_ABSENT;
    if (strstr(jinja, "<|im_start|>")) *out = CHAT_TEMPLATE_CHATML;
    else if (strstr(jinja, "<|start_header_id|>")) *out = CHAT_TEMPLATE_LLAMA3;
    /* In a Jinja source the newlines are usually the escape "\n", sometimes
     * literal newline characters: accept both spellings. */
    else if (strstr(jinja, "\\n\\nHuman:") || strstr(jinja, "\n\nHuman:")) *out = CHAT_TEMPLATE_HH;
    else if (strcmp(jinja, JINJA_NONE) == 0) return CHAT_DETECT_MATCHED;
    else return CHAT_DETECT_UNKNOWN;
    return CHAT_DETECT_MATCHED;
}

const char *chat_template_jinja(const char *name) {
    ChatTemplate t = CHAT_TEMPLATE_NONE;
    if (!name || chat_template_from_name(name, &t) != 0) return NULL;
    switch (t) {
    case CHAT_TEMPLATE_NONE: return JINJA_NONE;
    case CHAT_TEMPLATE_CHATML: return JINJA_CHATML;
    case CHAT_TEMPLATE_LLAMA3: return JINJA_LLAMA3;
    case CHAT_TEMPLATE_HH: return JINJA_HH;
    }
    return NULL;
}

const char *chat_template_end_marker(ChatTemplate t) {
    if (t == CHAT_TEMPLATE_CHATML) return "<|im_end|>";
    if (t == CHAT_TEMPLATE_LLAMA3) return "<|eot_id|>";
    return NULL;
}

/* ------------------------------------------------------------ ChatText */

void chat_text_free(ChatText *ct) {
    if (!ct) return;
    free(ct->text);
    free(ct->spans);
    memset(ct, 0, sizeof *ct);
}

/* Append bytes as a span; adjacent text spans merge so the encoder sees the
 * longest runs (as HF does after splitting out added tokens). */
static int ct_add(ChatText *ct, const char *s, size_t n, int control) {
    if (!ct->text) {
        ct->cap = 256;
        ct->text = malloc(ct->cap);
        if (!ct->text) return align_errorf("out of memory rendering a chat template");
        ct->len = 0;
        ct->text[0] = 0;
    }
    if (n == 0) return 0;
    if (ct->len + n + 1 > ct->cap) {
        size_t cap = ct->cap;
        while (ct->len + n + 1 > cap) cap *= 2;
        char *p = realloc(ct->text, cap);
        if (!p) return align_errorf("out of memory rendering a chat template");
        ct->text = p;
        ct->cap = cap;
    }
    memcpy(ct->text + ct->len, s, n);
    if (!control && ct->n_spans > 0 && !ct->spans[ct->n_spans - 1].control) {
        ct->spans[ct->n_spans - 1].len += n;
    } else {
        if (ct->n_spans == ct->cap_spans) {
            int cap = ct->cap_spans ? 2 * ct->cap_spans : 16;
            ChatSpan *p = realloc(ct->spans, (size_t)cap * sizeof *p);
            if (!p) return align_errorf("out of memory rendering a chat template");
            ct->spans = p;
            ct->cap_spans = cap;
        }
        ct->spans[ct->n_spans++] = (ChatSpan){ct->len, n, control};
    }
    ct->len += n;
    ct->text[ct->len] = 0;
    return 0;
}

static int ct_str(ChatText *ct, const char *s) { return ct_add(ct, s, strlen(s), 0); }
static int ct_ctl(ChatText *ct, const char *s) { return ct_add(ct, s, strlen(s), 1); }

static int is_jinja_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Jinja's `trim` (Python str.strip(); ASCII whitespace here). */
static int ct_trimmed(ChatText *ct, const char *s) {
    size_t a = 0, b = strlen(s);
    while (a < b && is_jinja_space((unsigned char)s[a])) a++;
    while (b > a && is_jinja_space((unsigned char)s[b - 1])) b--;
    return ct_add(ct, s + a, b - a, 0);
}

static int render_msg(ChatTemplate t, const ChatMessage *m, int first, ChatText *out) {
    const char *role = m->role ? m->role : "";
    const char *content = m->content ? m->content : "";
    switch (t) {
    case CHAT_TEMPLATE_NONE: return ct_str(out, content);
    case CHAT_TEMPLATE_CHATML:
        return ct_ctl(out, "<|im_start|>") || ct_str(out, role) || ct_str(out, "\n") ||
                       ct_str(out, content) || ct_ctl(out, "<|im_end|>") || ct_str(out, "\n")
                   ? -1
                   : 0;
    case CHAT_TEMPLATE_LLAMA3:
        if (first && ct_ctl(out, "<|begin_of_text|>")) return -1;
        return ct_ctl(out, "<|start_header_id|>") || ct_str(out, role) || ct_ctl(out, "<|end_header_id|>") ||
                       ct_str(out, "\n\n") || ct_trimmed(out, content) || ct_ctl(out, "<|eot_id|>")
                   ? -1
                   : 0;
    case CHAT_TEMPLATE_HH:
        if (strcmp(role, "user") == 0 && ct_str(out, "\n\nHuman: ")) return -1;
        if (strcmp(role, "assistant") == 0 && ct_str(out, "\n\nAssistant: ")) return -1;
        return ct_str(out, content);
    }
    return align_errorf("unknown chat template %d", (int)t);
}

static int render_gen_prompt(ChatTemplate t, int first, ChatText *out) {
    switch (t) {
    case CHAT_TEMPLATE_NONE: return 0;
    case CHAT_TEMPLATE_CHATML: return ct_ctl(out, "<|im_start|>") || ct_str(out, "assistant\n") ? -1 : 0;
    case CHAT_TEMPLATE_LLAMA3:
        /* The Jinja emits bos_token only with the first message; an empty
         * conversation gets none, as there. */
        (void)first;
        return ct_ctl(out, "<|start_header_id|>") || ct_str(out, "assistant") ||
                       ct_ctl(out, "<|end_header_id|>") || ct_str(out, "\n\n")
                   ? -1
                   : 0;
    case CHAT_TEMPLATE_HH: return ct_str(out, "\n\nAssistant:");
    }
    return align_errorf("unknown chat template %d", (int)t);
}

int chat_render(ChatTemplate t, const ChatMessage *msgs, int n_msgs, int add_generation_prompt,
                ChatText *out) {
    memset(out, 0, sizeof *out);
    if ((unsigned)t >= 4) return align_errorf("unknown chat template %d", (int)t);
    if (ct_add(out, "", 0, 0)) return -1; /* allocate: an empty rendering is "" */
    for (int i = 0; i < n_msgs; i++)
        if (render_msg(t, &msgs[i], i == 0, out)) goto fail;
    if (add_generation_prompt && render_gen_prompt(t, n_msgs == 0, out)) goto fail;
    return 0;
fail:
    chat_text_free(out);
    return -1;
}

int chat_render_split(ChatTemplate t, const ChatMessage *prompt, int n_prompt,
                      const char *completion, ChatText *prompt_out, ChatText *completion_out) {
    memset(completion_out, 0, sizeof *completion_out);
    if (chat_render(t, prompt, n_prompt, 1, prompt_out)) return -1;
    const char *c = completion ? completion : "";
    int rc = ct_add(completion_out, "", 0, 0);
    switch (t) {
    case CHAT_TEMPLATE_NONE: rc = rc || ct_str(completion_out, c); break;
    case CHAT_TEMPLATE_CHATML: rc = rc || ct_str(completion_out, c) || ct_ctl(completion_out, "<|im_end|>"); break;
    case CHAT_TEMPLATE_LLAMA3: rc = rc || ct_trimmed(completion_out, c) || ct_ctl(completion_out, "<|eot_id|>"); break;
    case CHAT_TEMPLATE_HH: rc = rc || ct_str(completion_out, " ") || ct_str(completion_out, c); break;
    }
    if (rc) {
        chat_text_free(prompt_out);
        chat_text_free(completion_out);
        return -1;
    }
    return 0;
}

int chat_render_between(ChatTemplate t, const ChatMessage *msgs, int n_msgs, ChatText *out) {
    memset(out, 0, sizeof *out);
    if ((unsigned)t >= 4) return align_errorf("unknown chat template %d", (int)t);
    if (ct_add(out, "", 0, 0)) return -1;
    if (t == CHAT_TEMPLATE_CHATML && ct_str(out, "\n")) goto fail;
    for (int i = 0; i < n_msgs; i++)
        if (render_msg(t, &msgs[i], 0, out)) goto fail;
    if (render_gen_prompt(t, 0, out)) goto fail;
    return 0;
fail:
    chat_text_free(out);
    return -1;
}

char *chat_render_text(ChatTemplate t, const ChatMessage *msgs, int n_msgs, int add_generation_prompt) {
    ChatText ct;
    if (chat_render(t, msgs, n_msgs, add_generation_prompt, &ct)) return NULL;
    free(ct.spans);
    return ct.text;
}

int chat_render_split_text(ChatTemplate t, const ChatMessage *prompt, int n_prompt,
                           const char *completion, char **prompt_text, char **completion_text) {
    ChatText p, c;
    if (chat_render_split(t, prompt, n_prompt, completion, &p, &c)) return -1;
    free(p.spans);
    free(c.spans);
    *prompt_text = p.text;
    *completion_text = c.text;
    return 0;
}

const char *chat_template_detect_name(const char *jinja) {
    ChatTemplate t;
    if (!jinja || chat_template_detect(jinja, &t) != CHAT_DETECT_MATCHED) return NULL;
    return chat_template_name(t);
}

const char *chat_template_export_jinja(const char *name) {
    if (!name || !strcmp(name, "none")) return NULL;
    return chat_template_jinja(name);
}

int chat_template_choose(const char *flag, const char *model_name, const char *model_jinja, ChatTemplate *out) {
    *out = CHAT_TEMPLATE_NONE;
    if (flag) return chat_template_from_name(flag, out) ? align_error_prefix("--chat-template") : 0;
    if (model_name) {
        if (chat_template_from_name(model_name, out)) *out = CHAT_TEMPLATE_NONE; /* a name from a newer align */
        return 0;
    }
    if (model_jinja && chat_template_detect(model_jinja, out) == CHAT_DETECT_UNKNOWN) return CHAT_DETECT_UNKNOWN;
    return 0;
}
