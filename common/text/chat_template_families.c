/* chat_template_families: one C renderer per model family's chat template,
 * the table that names them, and the fingerprints that recognise them.
 *
 * Each renderer follows the model's own Jinja (stored verbatim under
 * tests/fixtures/chat_templates/) for the messages align trains on: system,
 * user and assistant turns with string content. Tool calls and tool
 * results are refused with a sentence, never rendered approximately; where
 * the Jinja raises (Gemma 2 given a system message, roles that do not
 * alternate) the renderer refuses with the same reason. BOS/EOS are the
 * strings each model's tokenizer uses; every control token the template
 * writes is a control span, so the dataset layer encodes it by id.
 *
 * Dates: Llama 3.1/3.3 print "Today Date: 26 Jul 2024" (the Jinja's default
 * date_string, which transformers keeps); Llama 3.2's Jinja prints today's
 * date (strftime_now), so align does too, in UTC from SOURCE_DATE_EPOCH
 * when that is set (the reproducible-builds convention) and in local time
 * as transformers does otherwise. */
#include "chat_template_families.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_text.h"
#include "util.h"

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        if (x) return -1;                                                                                              \
    } while (0)

static const char *C(const ChatMessage *m) { return m->content ? m->content : ""; }
static const char *R(const ChatMessage *m) { return m->role ? m->role : ""; }
static int is(const ChatMessage *m, const char *role) { return strcmp(R(m), role) == 0; }
static int add(ChatText *o, const char *s, size_t n) { return chat_text_add(o, s, n, 0); }
static int str(ChatText *o, const char *s) { return chat_text_str(o, s); }
static int ctl(ChatText *o, const char *s) { return chat_text_ctl(o, s); }

static int refuse_role(const ChatFamily *f, const ChatMessage *m) {
    return align_errorf("the %s chat template: align renders system, user and assistant messages, not \"%s\"", f->name,
                        R(m));
}

/* roles must alternate user/assistant, as the Jinja's raise_exception says */
static int alternates(const ChatFamily *f, const ChatMessage *m, int n) {
    for (int i = 0; i < n; i++)
        if (is(&m[i], "user") != (i % 2 == 0))
            return align_errorf("the %s chat template: conversation roles must alternate user/assistant/user/"
                                "assistant/... (message %d is \"%s\")",
                                f->name, i + 1, R(&m[i]));
    return 0;
}

/* s with leading/trailing characters of `set` removed: Python's strip(set) */
static void strip_set(const char **s, size_t *n, const char *set, int left, int right) {
    while (left && *n && strchr(set, (*s)[0])) (*s)++, (*n)--;
    while (right && *n && strchr(set, (*s)[*n - 1])) (*n)--;
}

/* strftime_now("%d %b %Y") (long = 0) or ("%d %B %Y") (long = 1), in the C
 * locale whatever the process's locale is, as Python's strftime gives it. */
static void today(char out[24], int long_month) {
    static const char *const MON[] = {"January", "February", "March",     "April",   "May",      "June",
                                      "July",    "August",   "September", "October", "November", "December"};
    const char *e = getenv("SOURCE_DATE_EPOCH");
    time_t t = e && *e ? (time_t)strtoll(e, NULL, 10) : time(NULL);
    struct tm tm;
    if (e && *e) gmtime_r(&t, &tm);
    else localtime_r(&t, &tm);
    snprintf(out, 24, "%02d %.*s %04d", tm.tm_mday, long_month ? 9 : 3, MON[tm.tm_mon % 12], tm.tm_year + 1900);
}

/* ---------------------------------------------------------------- ChatML */

/* <|im_start|>role\ncontent<|im_end|>\n: SmolLM2, Qwen2.5 and Qwen3 share it. */
static int im_msg(ChatText *o, const char *role, const char *s, size_t n) {
    return ctl(o, "<|im_start|>") || str(o, role) || str(o, "\n") || add(o, s, n) || ctl(o, "<|im_end|>") ||
                   str(o, "\n")
               ? -1
               : 0;
}

static int im_gen(ChatText *o) { return ctl(o, "<|im_start|>") || str(o, "assistant\n") ? -1 : 0; }

enum { SMOLLM2 = 1, QWEN25 };
enum { THINK = 0, NO_THINK = 1 }; /* Qwen3's and SmolLM3's enable_thinking */
static const char SMOLLM2_SYSTEM[] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
static const char QWEN25_SYSTEM[] = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/* SmolLM2 and Qwen2.5: ChatML plus a default system message when the
 * conversation has none (SmolLM2 only before a first message). */
static int render_chatml_default(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    const char *dflt = f->variant == SMOLLM2 ? SMOLLM2_SYSTEM : QWEN25_SYSTEM;
    if (!cont && !(n > 0 && is(&m[0], "system")) && (n > 0 || f->variant == QWEN25))
        TRY(im_msg(o, "system", dflt, strlen(dflt)));
    /* a system message of the conversation is plain ChatML in both Jinjas */
    for (int i = 0; i < n; i++) {
        if (is(&m[i], "tool")) return refuse_role(f, &m[i]);
        TRY(im_msg(o, R(&m[i]), C(&m[i]), strlen(C(&m[i]))));
    }
    return gen ? im_gen(o) : 0;
}

static int reply_plain(const ChatFamily *f, const char *c, ChatText *o) {
    (void)f;
    return str(o, c);
}

/* ---------------------------------------------------------------- Qwen3 */

/* content's reasoning and answer as Qwen3's Jinja splits them at </think> */
static void qwen3_split(const char *c, const char **rs, size_t *rn, const char **as, size_t *an) {
    const char *close = strstr(c, "</think>");
    *rs = "", *rn = 0, *as = c, *an = strlen(c);
    if (!close) return;
    /* reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
    const char *b = c;
    size_t bn = (size_t)(close - c);
    strip_set(&b, &bn, "\n", 0, 1);
    for (const char *p = b; p + 7 <= b + bn; p++)
        if (!memcmp(p, "<think>", 7)) bn -= (size_t)(p + 7 - b), b = p + 7, p = b - 1;
    strip_set(&b, &bn, "\n", 1, 0);
    *rs = b, *rn = bn;
    /* answer = content.split('</think>')[-1].lstrip('\n') */
    const char *last = close, *p;
    while ((p = strstr(last + 8, "</think>"))) last = p;
    *as = last + 8, *an = strlen(last + 8);
    strip_set(as, an, "\n", 1, 0);
}

static int qwen3_think_block(ChatText *o, const char *rs, size_t rn, const char *as, size_t an) {
    strip_set(&rs, &rn, "\n", 1, 1);
    strip_set(&as, &an, "\n", 1, 0);
    return ctl(o, "<think>") || str(o, "\n") || add(o, rs, rn) || str(o, "\n") || ctl(o, "</think>") ||
                   str(o, "\n\n") || add(o, as, an)
               ? -1
               : 0;
}

static int render_qwen3(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    int i = 0;
    if (!cont && n > 0 && is(&m[0], "system")) {
        TRY(im_msg(o, "system", C(&m[0]), strlen(C(&m[0]))));
        i = 1;
    }
    /* the last user query; assistant turns after it keep their reasoning */
    int last_query = n - 1;
    for (int j = n - 1; j >= 0; j--) {
        const char *c = C(&m[j]);
        size_t cn = strlen(c);
        int tool_resp = cn >= 31 && !strncmp(c, "<tool_response>", 15) && !strcmp(c + cn - 16, "</tool_response>");
        if (is(&m[j], "user") && !tool_resp) {
            last_query = j;
            break;
        }
    }
    for (; i < n; i++) {
        const char *c = C(&m[i]);
        if (is(&m[i], "user") || is(&m[i], "system")) {
            TRY(im_msg(o, R(&m[i]), c, strlen(c)));
        } else if (is(&m[i], "assistant")) {
            const char *rs, *as;
            size_t rn, an;
            qwen3_split(c, &rs, &rn, &as, &an);
            TRY(ctl(o, "<|im_start|>") || str(o, "assistant\n"));
            if (i > last_query && (i == n - 1 || rn > 0)) TRY(qwen3_think_block(o, rs, rn, as, an));
            else TRY(add(o, as, an));
            TRY(ctl(o, "<|im_end|>") || str(o, "\n"));
        } else {
            return refuse_role(f, &m[i]);
        }
    }
    if (!gen) return 0;
    TRY(im_gen(o));
    if (f->variant == NO_THINK) TRY(ctl(o, "<think>") || str(o, "\n\n") || ctl(o, "</think>") || str(o, "\n\n"));
    return 0;
}

/* A reply is the conversation's last assistant turn: with thinking on it
 * carries its <think> block (empty when the record has no reasoning); with
 * enable_thinking false the generation prompt already closed the block, so
 * the reply is the answer alone. */
static int reply_qwen3(const ChatFamily *f, const char *c, ChatText *o) {
    const char *rs, *as;
    size_t rn, an;
    qwen3_split(c, &rs, &rn, &as, &an);
    if (f->variant == NO_THINK) return add(o, as, an);
    return qwen3_think_block(o, rs, rn, as, an);
}

/* ---------------------------------------------------------------- SmolLM3 */

static const char SMOLLM3_THINK[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an assistant involves "
    "thoroughly exploring questions through a systematic thinking process before providing the final precise and "
    "accurate solutions. This requires engaging in a comprehensive cycle of analysis, summarizing, exploration, "
    "reassessment, reflection, backtracking, and iteration to develop well-considered thinking process. Please "
    "structure your response into two main sections: Thought and Solution using the specified format: <think> "
    "Thought section </think> Solution section. In the Thought section, detail your reasoning process in steps. Each "
    "step should include detailed considerations such as analysing questions, summarizing relevant findings, "
    "brainstorming new ideas, verifying the accuracy of the current steps, refining any errors, and revisiting "
    "previous steps. In the Solution section, based on various attempts, explorations, and reflections from the "
    "Thought section, systematically present the final solution that you deem correct. The Solution section should "
    "be logical, accurate, and concise and detail necessary steps needed to reach the conclusion.\n\n";
static const char SMOLLM3_NO_THINK[] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face.\n\n";

/* s with every occurrence of each of the NULL-terminated words removed, then
 * rstrip()'d: the Jinja's .replace(...).replace(...).rstrip() */
static char *without(const char *s, const char *const *words) {
    char *o = strdup(s);
    if (!o) return NULL;
    for (int w = 0; words[w]; w++) {
        size_t wn = strlen(words[w]);
        char *p;
        while ((p = strstr(o, words[w]))) memmove(p, p + wn, strlen(p + wn) + 1);
    }
    size_t n = strlen(o);
    while (n && chat_is_space((unsigned char)o[n - 1])) o[--n] = 0;
    return o;
}

/* The system block: metadata, the reasoning mode (the system message's
 * /think or /no_think wins over enable_thinking), the custom instructions
 * or a default by mode; "/system_override" keeps the system message alone.
 * Without tools the block has no <|im_end|>: the template writes it only
 * after a tool list. */
static int smollm3_system(ChatText *o, const char *sys, int think) {
    static const char *const FLAGS[] = {"/no_think", "/think", NULL};
    static const char *const OVERRIDE[] = {"/system_override", NULL};
    char *custom = sys ? without(sys, FLAGS) : NULL;
    if (sys && !custom) return align_errorf("out of memory rendering a chat template");
    int rc = ctl(o, "<|im_start|>") || str(o, "system\n");
    if (!rc && sys && strstr(sys, "/system_override")) {
        char *alone = without(custom, OVERRIDE);
        rc = !alone || str(o, alone) || ctl(o, "<|im_end|>") || str(o, "\n");
        free(alone);
    } else if (!rc) {
        char date[24];
        today(date, 1);
        rc = str(o, "## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: ") || str(o, date) ||
             str(o, "\nReasoning Mode: ") || str(o, think ? "/think" : "/no_think") ||
             str(o, "\n\n## Custom Instructions\n\n");
        if (!rc && custom && *custom) rc = str(o, custom) || str(o, "\n\n");
        else if (!rc) rc = str(o, think ? SMOLLM3_THINK : SMOLLM3_NO_THINK);
    }
    free(custom);
    return rc ? -1 : 0;
}

static int smollm3_no_think_block(ChatText *o) {
    return ctl(o, "<think>") || str(o, "\n\n") || ctl(o, "</think>") || str(o, "\n") ? -1 : 0;
}

/* Multi-turn pieces (cont) cannot see the system message, so a /think or
 * /no_think flag in it does not reach them: the family's mode holds there. */
static int render_smollm3(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    int think = f->variant == THINK;
    if (!cont) {
        const char *sys = n > 0 && is(&m[0], "system") ? C(&m[0]) : NULL;
        if (sys && strstr(sys, "/no_think")) think = 0;
        else if (sys && strstr(sys, "/think")) think = 1;
        TRY(smollm3_system(o, sys, think));
    }
    for (int i = 0; i < n; i++) {
        const char *c = C(&m[i]);
        if (is(&m[i], "user")) {
            TRY(im_msg(o, "user", c, strlen(c)));
        } else if (is(&m[i], "assistant")) {
            size_t cn = strlen(c);
            strip_set(&c, &cn, "\n", 1, 0);
            TRY(ctl(o, "<|im_start|>") || str(o, "assistant\n"));
            if (!think) TRY(smollm3_no_think_block(o));
            TRY(add(o, c, cn) || ctl(o, "<|im_end|>") || str(o, "\n"));
        } else if (!is(&m[i], "system")) {
            return refuse_role(f, &m[i]); /* the Jinja renders a system message only as the first */
        }
    }
    if (gen) {
        TRY(im_gen(o));
        if (!think) TRY(smollm3_no_think_block(o));
    }
    return 0;
}

/* Either mode: the answer after the generation prompt (which holds the
 * empty think block with thinking off). */
static int reply_smollm3(const ChatFamily *f, const char *c, ChatText *o) {
    (void)f;
    size_t cn = strlen(c);
    strip_set(&c, &cn, "\n", 1, 0);
    return add(o, c, cn);
}

/* ---------------------------------------------------------------- Llama 3.1 / 3.2 */

enum { LLAMA31 = 0, LLAMA32 = 1 };

static int llama_msg(ChatText *o, const char *role, const char *content) {
    return ctl(o, "<|start_header_id|>") || str(o, role) || ctl(o, "<|end_header_id|>") || str(o, "\n\n") ||
                   chat_text_trimmed(o, content) || ctl(o, "<|eot_id|>")
               ? -1
               : 0;
}

static int render_llama31(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    int i = 0;
    if (!cont) {
        char date[24] = "26 Jul 2024";
        if (f->variant == LLAMA32) today(date, 0);
        const char *sys = "";
        if (n > 0 && is(&m[0], "system")) sys = C(&m[0]), i = 1;
        TRY(ctl(o, "<|begin_of_text|>") || ctl(o, "<|start_header_id|>") || str(o, "system") ||
            ctl(o, "<|end_header_id|>") || str(o, "\n\nCutting Knowledge Date: December 2023\nToday Date: ") ||
            str(o, date) || str(o, "\n\n") || chat_text_trimmed(o, sys) || ctl(o, "<|eot_id|>"));
    }
    for (; i < n; i++) {
        if (is(&m[i], "tool") || is(&m[i], "ipython")) return refuse_role(f, &m[i]);
        TRY(llama_msg(o, R(&m[i]), C(&m[i])));
    }
    if (gen) TRY(ctl(o, "<|start_header_id|>") || str(o, "assistant") || ctl(o, "<|end_header_id|>") || str(o, "\n\n"));
    return 0;
}

static int reply_trimmed(const ChatFamily *f, const char *c, ChatText *o) {
    (void)f;
    return chat_text_trimmed(o, c);
}

/* ---------------------------------------------------------------- Gemma 2 / 3 */

enum { GEMMA2 = 0, GEMMA3 = 1 };

static int render_gemma(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    const char *prefix = NULL;
    if (!cont) {
        TRY(ctl(o, "<bos>"));
        if (n > 0 && is(&m[0], "system")) {
            /* Gemma 3 folds the system message into the first user turn
             * (untrimmed, then a blank line); Gemma 2's Jinja refuses it */
            if (f->variant == GEMMA2) return align_errorf("the gemma chat template: System role not supported");
            prefix = C(&m[0]), m++, n--;
        }
        TRY(alternates(f, m, n));
    }
    for (int i = 0; i < n; i++) {
        if (!is(&m[i], "user") && !is(&m[i], "assistant")) {
            if (f->variant == GEMMA2 && is(&m[i], "system"))
                return align_errorf("the gemma chat template: System role not supported");
            return refuse_role(f, &m[i]);
        }
        TRY(ctl(o, "<start_of_turn>") || str(o, is(&m[i], "assistant") ? "model" : R(&m[i])) || str(o, "\n"));
        if (i == 0 && prefix) TRY(str(o, prefix) || str(o, "\n\n"));
        TRY(chat_text_trimmed(o, C(&m[i])) || ctl(o, "<end_of_turn>") || str(o, "\n"));
    }
    if (gen) TRY(ctl(o, "<start_of_turn>") || str(o, "model\n"));
    return 0;
}

/* ---------------------------------------------------------------- Phi-3 / 3.5 / 4 */

enum { PHI3 = 0, PHI35 = 1 };

static int render_phi3(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    for (int i = 0; i < n; i++) {
        const char *tag = is(&m[i], "system") ? "<|system|>" : is(&m[i], "user") ? "<|user|>"
                        : is(&m[i], "assistant")  ? "<|assistant|>"
                                                  : NULL;
        if (!tag) continue; /* the Jinja renders nothing for other roles */
        if (f->variant == PHI35 && is(&m[i], "system") && !*C(&m[i])) continue;
        TRY(ctl(o, tag) || str(o, "\n") || str(o, C(&m[i])) || ctl(o, "<|end|>") || str(o, "\n"));
    }
    /* between turns (cont) the next assistant header always follows */
    if (gen || cont) return ctl(o, "<|assistant|>") || str(o, "\n") ? -1 : 0;
    return ctl(o, "<|endoftext|>");
}

static int render_phi4(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    (void)f, (void)cont;
    for (int i = 0; i < n; i++) {
        if (!is(&m[i], "system") && !is(&m[i], "user") && !is(&m[i], "assistant")) continue;
        TRY(ctl(o, "<|im_start|>") || str(o, R(&m[i])) || ctl(o, "<|im_sep|>") || str(o, C(&m[i])) ||
            ctl(o, "<|im_end|>"));
    }
    if (gen) TRY(ctl(o, "<|im_start|>") || str(o, "assistant") || ctl(o, "<|im_sep|>"));
    return 0;
}

/* ---------------------------------------------------------------- DeepSeek-R1 distills */

static const char DS_BOS[] = "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
static const char DS_EOS[] = "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
static const char DS_USER[] = "<\xef\xbd\x9cUser\xef\xbd\x9c>";
static const char DS_ASSISTANT[] = "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>";

static int render_deepseek(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    if (!cont) {
        /* the last system message, right after BOS */
        const char *sys = "";
        for (int i = 0; i < n; i++)
            if (is(&m[i], "system")) sys = C(&m[i]);
        TRY(ctl(o, DS_BOS) || str(o, sys));
    }
    for (int i = 0; i < n; i++) {
        if (is(&m[i], "user")) {
            TRY(ctl(o, DS_USER) || str(o, C(&m[i])));
        } else if (is(&m[i], "assistant")) {
            /* past replies lose their reasoning: content.split('</think>')[-1] */
            const char *c = C(&m[i]), *p;
            while ((p = strstr(c, "</think>"))) c = p + 8;
            TRY(ctl(o, DS_ASSISTANT) || str(o, c) || ctl(o, DS_EOS));
        } else if (!is(&m[i], "system")) {
            return refuse_role(f, &m[i]);
        }
    }
    if (gen) TRY(ctl(o, DS_ASSISTANT) || ctl(o, "<think>") || str(o, "\n"));
    return 0;
}

/* The generation prompt opens "<think>\n", so a reply written with its
 * reasoning ("<think>\n...</think>\n\nanswer") continues after it; the
 * reasoning is trained (TRL's training template keeps it as well). */
static int reply_deepseek(const ChatFamily *f, const char *c, ChatText *o) {
    (void)f;
    if (!strncmp(c, "<think>", 7)) c += 7 + (c[7] == '\n');
    return str(o, c);
}

/* ---------------------------------------------------------------- Mistral */

enum { MISTRAL_V3 = 0, MISTRAL_V3_TEKKEN = 1 };

/* v3: the system message joins the LAST message when that is a user turn
 * (Mistral's own placement); no generation prompt: a prompt ends [/INST]. */
static int render_mistral_v3(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    (void)gen;
    const char *sys = NULL;
    const char *inst = f->variant == MISTRAL_V3 ? "[INST] " : "[INST]";
    if (!cont) {
        if (n > 0 && is(&m[0], "system")) sys = C(&m[0]), m++, n--;
        TRY(alternates(f, m, n));
        TRY(ctl(o, "<s>"));
    }
    for (int i = 0; i < n; i++) {
        if (is(&m[i], "user")) {
            TRY(ctl(o, "[INST]") || str(o, inst + 6));
            if (sys && i == n - 1) TRY(str(o, sys) || str(o, "\n\n"));
            TRY(str(o, C(&m[i])) || ctl(o, "[/INST]"));
        } else if (is(&m[i], "assistant")) {
            if (f->variant == MISTRAL_V3) TRY(str(o, " ") || chat_text_trimmed(o, C(&m[i])));
            else TRY(str(o, C(&m[i])));
            TRY(ctl(o, "</s>"));
        } else {
            return refuse_role(f, &m[i]);
        }
    }
    return 0;
}

static int reply_mistral_v3(const ChatFamily *f, const char *c, ChatText *o) {
    if (f->variant == MISTRAL_V3_TEKKEN) return str(o, c);
    return str(o, " ") || chat_text_trimmed(o, c) ? -1 : 0;
}

static int render_mistral_v7(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    (void)gen;
    if (!cont) TRY(ctl(o, "<s>"));
    for (int i = 0; i < n; i++) {
        if (is(&m[i], "user")) TRY(ctl(o, "[INST]") || str(o, " ") || str(o, C(&m[i])) || ctl(o, "[/INST]"));
        else if (is(&m[i], "system"))
            TRY(ctl(o, "[SYSTEM_PROMPT]") || str(o, " ") || str(o, C(&m[i])) || ctl(o, "[/SYSTEM_PROMPT]"));
        else if (is(&m[i], "assistant")) TRY(str(o, " ") || str(o, C(&m[i])) || ctl(o, "</s>"));
        else return refuse_role(f, &m[i]);
    }
    return 0;
}

static int reply_space(const ChatFamily *f, const char *c, ChatText *o) {
    (void)f;
    return str(o, " ") || str(o, c) ? -1 : 0;
}

/* ---------------------------------------------------------------- Zephyr */

/* <|user|> etc. are plain text in Zephyr's (Mistral's) vocabulary; only
 * the EOS "</s>" is a token. */
static int render_zephyr(const ChatFamily *f, const ChatMessage *m, int n, int gen, int cont, ChatText *o) {
    (void)f;
    for (int i = 0; i < n; i++) {
        const char *tag = is(&m[i], "user") ? "<|user|>\n" : is(&m[i], "system") ? "<|system|>\n"
                        : is(&m[i], "assistant")                                 ? "<|assistant|>\n"
                                                                                 : NULL;
        if (tag) TRY(str(o, tag) || str(o, C(&m[i])) || ctl(o, "</s>") || str(o, "\n"));
    }
    /* the Jinja adds the prompt inside its loop: never for no messages */
    if (gen && (n > 0 || cont)) TRY(str(o, "<|assistant|>\n"));
    return 0;
}

/* ---------------------------------------------------------------- the table */

static const ChatFamily FAMILIES[] = {
    {CHAT_TEMPLATE_SMOLLM2, "smollm2", "<|im_end|>", "\n",
     {"<|im_start|>", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
     {"Reasoning Mode", "Metadata", "<think>", "strftime"}, render_chatml_default, reply_plain, SMOLLM2},
    {CHAT_TEMPLATE_SMOLLM3, "smollm3", "<|im_end|>", "\n",
     {"<|im_start|>", "Knowledge Cutoff Date: June 2025", "Reasoning Mode", "/system_override", "custom_instructions",
      "strftime_now"},
     {NULL}, render_smollm3, reply_smollm3, THINK},
    {CHAT_TEMPLATE_SMOLLM3_NOTHINK, "smollm3-nothink", "<|im_end|>", "\n", {NULL}, {NULL}, render_smollm3,
     reply_smollm3, NO_THINK},
    {CHAT_TEMPLATE_QWEN25, "qwen2.5", "<|im_end|>", "\n",
     {"<|im_start|>", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."},
     {"<think>", "enable_thinking"}, render_chatml_default, reply_plain, QWEN25},
    {CHAT_TEMPLATE_QWEN3, "qwen3", "<|im_end|>", "\n",
     {"<|im_start|>", "<think>", "</think>", "enable_thinking", "last_query_index", "reasoning_content"},
     {"preserve_thinking", "reasoning_effort"}, render_qwen3, reply_qwen3, THINK},
    {CHAT_TEMPLATE_QWEN3_NOTHINK, "qwen3-nothink", "<|im_end|>", "\n", {NULL}, {NULL}, render_qwen3, reply_qwen3,
     NO_THINK},
    {CHAT_TEMPLATE_LLAMA31, "llama3.1", "<|eot_id|>", "",
     {"<|start_header_id|>", "Cutting Knowledge Date: December 2023", "Today Date: ", "26 Jul 2024"},
     {"strftime_now", "<|image|>"}, render_llama31, reply_trimmed, LLAMA31},
    {CHAT_TEMPLATE_LLAMA32, "llama3.2", "<|eot_id|>", "",
     {"<|start_header_id|>", "Cutting Knowledge Date: December 2023", "Today Date: ", "strftime_now(\"%d %b %Y\")"},
     {"<|image|>"}, render_llama31, reply_trimmed, LLAMA32},
    {CHAT_TEMPLATE_GEMMA, "gemma", "<end_of_turn>", "\n",
     {"<start_of_turn>", "<end_of_turn>", "System role not supported", "bos_token"}, {"first_user_prefix"},
     render_gemma, reply_trimmed, GEMMA2},
    {CHAT_TEMPLATE_GEMMA3, "gemma3", "<end_of_turn>", "\n",
     {"<start_of_turn>", "<end_of_turn>", "first_user_prefix", "bos_token"}, {"System role not supported"},
     render_gemma, reply_trimmed, GEMMA3},
    {CHAT_TEMPLATE_PHI3, "phi3", "<|end|>", "\n",
     {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "add_generation_prompt", "eos_token"},
     {"bos_token", "'system' and message['content']", "<|tool|>"}, render_phi3, reply_plain, PHI3},
    {CHAT_TEMPLATE_PHI35, "phi3.5", "<|end|>", "\n",
     {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "add_generation_prompt", "'system' and message['content']"},
     {"bos_token", "<|tool|>"}, render_phi3, reply_plain, PHI35},
    {CHAT_TEMPLATE_PHI4, "phi4", "<|im_end|>", "", {"<|im_start|>", "<|im_sep|>", "add_generation_prompt"}, {NULL},
     render_phi4, reply_plain, 0},
    {CHAT_TEMPLATE_DEEPSEEK_R1, "deepseek-r1", DS_EOS, "",
     {DS_USER, DS_ASSISTANT, "</think>", "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c><think>"}, {NULL}, render_deepseek,
     reply_deepseek, 0},
    {CHAT_TEMPLATE_MISTRAL_V3, "mistral-v3", "</s>", "",
     {"[INST] ", "[/INST]", "system_message", "loop.last", "trim"}, {"[SYSTEM_PROMPT]"}, render_mistral_v3,
     reply_mistral_v3, MISTRAL_V3},
    {CHAT_TEMPLATE_MISTRAL_V3_TEKKEN, "mistral-v3-tekken", "</s>", "",
     {"[INST]", "[/INST]", "system_message", "loop.last"}, {"[INST] ", "trim", "[SYSTEM_PROMPT]"}, render_mistral_v3,
     reply_mistral_v3, MISTRAL_V3_TEKKEN},
    {CHAT_TEMPLATE_MISTRAL_V7, "mistral-v7", "</s>", "", {"[SYSTEM_PROMPT] ", "[/SYSTEM_PROMPT]", "[INST] ", "[/INST]"},
     {"default_system_message", "strftime", "[IMG]"}, render_mistral_v7, reply_space, 0},
    {CHAT_TEMPLATE_ZEPHYR, "zephyr", "</s>", "\n",
     {"<|user|>", "<|system|>", "<|assistant|>", "eos_token", "add_generation_prompt", "loop.last"},
     {"<|end|>", "bos_token"}, render_zephyr, reply_plain, 0},
};
#define N_FAMILIES ((int)(sizeof FAMILIES / sizeof FAMILIES[0]))

const ChatFamily *chat_family(ChatTemplate t) {
    for (int i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i].id == t) return &FAMILIES[i];
    return NULL;
}

const ChatFamily *chat_family_by_name(const char *name) {
    for (int i = 0; name && i < N_FAMILIES; i++)
        if (!strcmp(FAMILIES[i].name, name)) return &FAMILIES[i];
    return NULL;
}

const ChatFamily *chat_family_detect(const char *jinja) {
    if (!jinja) return NULL;
    for (int i = 0; i < N_FAMILIES; i++) {
        const ChatFamily *f = &FAMILIES[i];
        if (!f->need[0]) continue; /* a variant chosen by name only */
        int ok = 1;
        for (int k = 0; ok && k < 7 && f->need[k]; k++) ok = strstr(jinja, f->need[k]) != NULL;
        for (int k = 0; ok && k < 7 && f->deny[k]; k++) ok = strstr(jinja, f->deny[k]) == NULL;
        if (ok) return f;
    }
    return NULL;
}

const char *chat_family_names(void) {
    static char buf[512];
    if (!buf[0]) {
        size_t at = 0;
        for (int i = 0; i < N_FAMILIES; i++)
            at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%s", i ? ", " : "", FAMILIES[i].name);
    }
    return buf;
}
