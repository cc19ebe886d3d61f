/* chat_text: the span buffer every chat-template renderer appends to
 * (internal to the text layer: chat_template.c and chat_template_families.c).
 * A ChatText is the rendered text plus spans saying which bytes are one
 * control token; adjacent text spans merge so the encoder sees the longest
 * runs, as Hugging Face's tokenizers do after splitting out added tokens. */
#ifndef ALIGN_CHAT_TEXT_H
#define ALIGN_CHAT_TEXT_H

#include <stddef.h>
#include <string.h>

#include "chat_template.h"

/* Append n bytes of s as a text (control 0) or control-token (1) span.
 * Returns 0, or -1 when out of memory (message set). */
int chat_text_add(ChatText *ct, const char *s, size_t n, int control);
static inline int chat_text_str(ChatText *ct, const char *s) { return chat_text_add(ct, s, strlen(s), 0); }
static inline int chat_text_ctl(ChatText *ct, const char *s) { return chat_text_add(ct, s, strlen(s), 1); }

/* Jinja's whitespace set for `trim` (Python str.strip(); ASCII here). */
static inline int chat_is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
/* Append s with Jinja's `trim` applied. */
int chat_text_trimmed(ChatText *ct, const char *s);

#endif
