/* chat_template_families: the chat templates of today's model families
 * (Llama 3.1-3.3, Qwen2.5, Qwen3, Gemma 2/3, Phi-3/3.5/4, DeepSeek-R1
 * distills, Mistral v3/v7, SmolLM2, Zephyr), each rendered in C exactly as
 * transformers renders the model's own Jinja, and recognised in a model's
 * template string by fingerprints. Internal to the text layer: programs use
 * chat_template.h, which dispatches here for these ids. */
#ifndef ALIGN_CHAT_TEMPLATE_FAMILIES_H
#define ALIGN_CHAT_TEMPLATE_FAMILIES_H

#include "chat_template.h"

typedef struct ChatFamily ChatFamily;
struct ChatFamily {
    ChatTemplate id;
    const char *name;       /* --chat-template NAME */
    const char *end_marker; /* the control token that ends an assistant turn */
    const char *trailer;    /* rendered after end_marker but never generated (ChatML's "\n") */
    /* Fingerprint: the template string holds every `need` substring and no
     * `deny` one. Fingerprints are literal markers and phrases (a default
     * system message, a variable only that family uses), never layout, so
     * a revision that re-indents the Jinja still matches. */
    const char *need[7];
    const char *deny[7];
    /* The conversation. cont = 1 renders messages in the middle of a
     * conversation (no BOS, no default or preamble system block). */
    int (*render)(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *out);
    /* An assistant reply as the model generates it after the generation
     * prompt, without the end marker. */
    int (*reply)(const ChatFamily *f, const char *content, ChatText *out);
    int variant;
};

const ChatFamily *chat_family(ChatTemplate t);          /* NULL for the built-ins */
const ChatFamily *chat_family_by_name(const char *name); /* NULL when unknown */
/* The family a model's template string is; NULL when none matches. */
const ChatFamily *chat_family_detect(const char *jinja);
/* "llama3.1, qwen2.5, ..." for error messages. */
const char *chat_family_names(void);

#endif
