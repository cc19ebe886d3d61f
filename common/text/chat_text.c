/* chat_text: the span buffer chat-template renderers write into. */
#include "chat_text.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void chat_text_free(ChatText *ct) {
    if (!ct) return;
    free(ct->text);
    free(ct->spans);
    memset(ct, 0, sizeof *ct);
}

int chat_text_add(ChatText *ct, const char *s, size_t n, int control) {
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

int chat_text_trimmed(ChatText *ct, const char *s) {
    size_t a = 0, b = strlen(s);
    while (a < b && chat_is_space((unsigned char)s[a])) a++;
    while (b > a && chat_is_space((unsigned char)s[b - 1])) b--;
    return chat_text_add(ct, s + a, b - a, 0);
}
