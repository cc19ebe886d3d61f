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

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template_families.h"
#include "chat_text.h"
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
    const ChatFamily *f = chat_family_by_name(name);
    if (f) {
        *out = f->id;
        return 0;
    }
    if (!name) return align_errorf("unknown chat template \"\" (known: %s)", chat_template_known_names());
    size_t n = strlen(name);
    int is_path = strchr(name, '/') || (n > 6 && !strcmp(name + n - 6, ".jinja"));
    /* "ChatML", "Gemma3": llama.cpp's and vLLM's names are lower case, and a
     * capital letter is no reason to stop */
    char low[64];
    if (!is_path && n < sizeof low) {
        for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)name[i]);
        if (strcmp(low, name) && chat_template_from_name(low, out) == 0) return 0;
    }
    /* a template file (chat_template.jinja, as vLLM's --chat-template and
     * llama.cpp's --chat-template-file take): used when it is one align
     * renders exactly, judged as a model's own template string is */
    size_t len;
    char *jinja = is_path ? align_read_file(name, &len) : NULL;
    if (jinja) {
        int rc = chat_template_detect(jinja, out);
        free(jinja);
        if (rc == CHAT_DETECT_MATCHED) return 0;
        return align_errorf("%s: %s (known: %s)", name,
                            rc == CHAT_DETECT_ABSENT ? "the file is empty"
                                                     : "the template in this file is not one align renders exactly "
                                                       "as the model's own; pass one of the names instead",
                            chat_template_known_names());
    }
    if (is_path)
        return align_errorf("%s: cannot read the template file (known names: %s)", name, chat_template_known_names());
    return align_errorf("unknown chat template \"%s\" (known: %s)", name, chat_template_known_names());
}

const char *chat_template_name(ChatTemplate t) {
    if ((unsigned)t < 4) return NAMES[t];
    const ChatFamily *f = chat_family(t);
    return f ? f->name : "unknown";
}

const char *chat_template_known_names(void) {
    static char buf[600];
    if (!buf[0]) snprintf(buf, sizeof buf, "none, chatml, llama3, hh, %s", chat_family_names());
    return buf;
}

/* Plain ChatML / Llama-3 are recognised by their markers, but only where
 * nothing shows the template adds text of its own (a default system
 * message, a date, reasoning blocks, a separator token): such a template
 * is a family above or one align does not know, never plain ChatML. */
static const char *const NOT_PLAIN[] = {"You are", "<think>", "<|im_sep|>", "strftime", "Today Date",
                                        "Cutting Knowledge", "default_system", "system_message", NULL};
static int plain(const char *jinja) {
    for (int i = 0; NOT_PLAIN[i]; i++)
        if (strstr(jinja, NOT_PLAIN[i])) return 0;
    return 1;
}

int chat_template_detect(const char *jinja, ChatTemplate *out) {
    *out = CHAT_TEMPLATE_NONE;
    if (!jinja || !*jinja) return CHAT_DETECT_ABSENT;
    const ChatFamily *f = chat_family_detect(jinja);
    if (f) *out = f->id;
    else if (strstr(jinja, "<|im_start|>")) {
        if (!plain(jinja)) return CHAT_DETECT_UNKNOWN;
        *out = CHAT_TEMPLATE_CHATML;
    } else if (strstr(jinja, "<|start_header_id|>")) {
        if (!plain(jinja)) return CHAT_DETECT_UNKNOWN;
        *out = CHAT_TEMPLATE_LLAMA3;
    }
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
    default: return NULL; /* a family: its Jinja is the model's own */
    }
}

const char *chat_template_end_marker(ChatTemplate t) {
    const ChatFamily *f = chat_family(t);
    if (f) return f->end_marker;
    if (t == CHAT_TEMPLATE_CHATML) return "<|im_end|>";
    if (t == CHAT_TEMPLATE_LLAMA3) return "<|eot_id|>";
    return NULL;
}

static int ct_str(ChatText *ct, const char *s) { return chat_text_str(ct, s); }
static int ct_ctl(ChatText *ct, const char *s) { return chat_text_ctl(ct, s); }
static int ct_trimmed(ChatText *ct, const char *s) { return chat_text_trimmed(ct, s); }
static int ct_add(ChatText *ct, const char *s, size_t n, int control) { return chat_text_add(ct, s, n, control); }

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
    default: break;
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
    default: break;
    }
    return align_errorf("unknown chat template %d", (int)t);
}

int chat_render(ChatTemplate t, const ChatMessage *msgs, int n_msgs, int add_generation_prompt,
                ChatText *out) {
    memset(out, 0, sizeof *out);
    const ChatFamily *f = chat_family(t);
    if ((unsigned)t >= 4 && !f) return align_errorf("unknown chat template %d", (int)t);
    if (ct_add(out, "", 0, 0)) return -1; /* allocate: an empty rendering is "" */
    if (f) {
        if (f->render(f, msgs, n_msgs, add_generation_prompt, 0, out)) goto fail;
        return 0;
    }
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
    const ChatFamily *f = chat_family(t);
    if (f) rc = rc || f->reply(f, c, completion_out) || ct_ctl(completion_out, f->end_marker);
    else switch (t) {
    case CHAT_TEMPLATE_NONE: rc = rc || ct_str(completion_out, c); break;
    case CHAT_TEMPLATE_CHATML: rc = rc || ct_str(completion_out, c) || ct_ctl(completion_out, "<|im_end|>"); break;
    case CHAT_TEMPLATE_LLAMA3: rc = rc || ct_trimmed(completion_out, c) || ct_ctl(completion_out, "<|eot_id|>"); break;
    case CHAT_TEMPLATE_HH: rc = rc || ct_str(completion_out, " ") || ct_str(completion_out, c); break;
    default: break;
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
    const ChatFamily *f = chat_family(t);
    if ((unsigned)t >= 4 && !f) return align_errorf("unknown chat template %d", (int)t);
    if (ct_add(out, "", 0, 0)) return -1;
    if (f) {
        if (ct_str(out, f->trailer) || f->render(f, msgs, n_msgs, 1, 1, out)) goto fail;
        return 0;
    }
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

int chat_template_choose_for_training(const char *flag, const char *model_name, const char *model_jinja,
                                      ChatTemplate *out) {
    int rc = chat_template_choose(flag, model_name, model_jinja, out);
    if (rc == CHAT_DETECT_UNKNOWN)
        return align_errorf("the model's chat template is not one align renders exactly as the model's own; "
                            "pass --chat-template NAME (%s) to train with one",
                            chat_template_known_names());
    return rc;
}

const char *chat_template_own_jinja(ChatTemplate t, const char *model_jinja) {
    const ChatFamily *f = chat_family(t);
    if (!f) return chat_template_export_jinja(chat_template_name(t));
    const ChatFamily *own = chat_family_detect(model_jinja);
    if (own && (own == f || own->render == f->render)) return model_jinja; /* qwen3 / qwen3-nothink */
    return NULL;
}
