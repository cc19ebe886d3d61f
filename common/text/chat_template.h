/* chat_template: the built-in chat formats, rendered in C instead of Jinja.
 *
 * A model's own template is Jinja; align does not interpret Jinja. Instead it
 * knows the four formats its users train with (ChatML as Qwen2 and SmolLM2
 * use it, Llama-3, Anthropic hh-rlhf's "\n\nHuman:/\n\nAssistant:" text, and
 * "none" = plain concatenation), renders them byte for byte as the Jinja
 * does, recognises them in a model's template string, and hands out Jinja
 * text for each so an exported model renders the same strings in HF tools.
 *
 * Rendering produces a ChatText: the text plus spans that say which bytes are
 * control tokens ("<|im_start|>", "<|eot_id|>", ...). The dataset layer maps
 * control spans to their ids and encodes everything else with special tokens
 * disallowed, so message content can never smuggle in a control token; roles
 * and content sit in text spans.
 *
 * "chatml" is plain ChatML: it adds NO default system message. SmolLM2's and
 * Qwen2's own templates insert one ("You are a helpful AI assistant named
 * SmolLM, trained by Hugging Face" / "You are a helpful assistant.") when the
 * conversation has none; pass that system message explicitly to reproduce it.
 * "llama3" is Meta-Llama-3-Instruct's template: "<|begin_of_text|>" once,
 * each message's content stripped of surrounding whitespace (Jinja `trim`). */
#ifndef ALIGN_CHAT_TEMPLATE_H
#define ALIGN_CHAT_TEMPLATE_H

#include <stddef.h>

typedef enum {
    CHAT_TEMPLATE_NONE = 0, /* plain concatenation of contents, no markup */
    CHAT_TEMPLATE_CHATML,   /* <|im_start|>role\ncontent<|im_end|>\n */
    CHAT_TEMPLATE_LLAMA3,   /* <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> */
    CHAT_TEMPLATE_HH,       /* \n\nHuman: content\n\nAssistant: content */
    /* Model families, rendered as their own Jinja renders (chat_template_families.c) */
    CHAT_TEMPLATE_SMOLLM2,           /* ChatML + SmolLM2's default system message */
    CHAT_TEMPLATE_SMOLLM3,           /* SmolLM3: dated system block, /think and /no_think */
    CHAT_TEMPLATE_SMOLLM3_NOTHINK,   /* the same template with enable_thinking=False */
    CHAT_TEMPLATE_QWEN25,            /* ChatML + "You are Qwen, created by Alibaba Cloud. ..." */
    CHAT_TEMPLATE_QWEN3,             /* ChatML + <think> blocks (enable_thinking on, the default) */
    CHAT_TEMPLATE_QWEN3_NOTHINK,     /* the same template with enable_thinking=False */
    CHAT_TEMPLATE_LLAMA31,           /* Llama 3.1 / 3.3: system block with "Today Date: 26 Jul 2024" */
    CHAT_TEMPLATE_LLAMA32,           /* Llama 3.2: the same with today's date */
    CHAT_TEMPLATE_GEMMA,             /* Gemma 2 (and 1): <start_of_turn>, no system role */
    CHAT_TEMPLATE_GEMMA3,            /* Gemma 3: system folded into the first user turn */
    CHAT_TEMPLATE_PHI3,              /* <|user|>\n...<|end|>\n */
    CHAT_TEMPLATE_PHI35,             /* Phi-3 skipping an empty system message */
    CHAT_TEMPLATE_PHI4,              /* <|im_start|>role<|im_sep|>...<|im_end|> */
    CHAT_TEMPLATE_DEEPSEEK_R1,       /* <｜User｜>...<｜Assistant｜><think>\n */
    CHAT_TEMPLATE_MISTRAL_V3,        /* [INST] ...[/INST] reply</s>, system in the last user turn */
    CHAT_TEMPLATE_MISTRAL_V3_TEKKEN, /* the same without the spaces (Mistral-Nemo) */
    CHAT_TEMPLATE_MISTRAL_V7,        /* [SYSTEM_PROMPT] ...[/SYSTEM_PROMPT][INST] ...[/INST] */
    CHAT_TEMPLATE_ZEPHYR,            /* <|user|>\n...</s>\n */
    CHAT_TEMPLATE_COUNT
} ChatTemplate;

typedef struct {
    const char *role;    /* "system", "user", "assistant", ... */
    const char *content; /* UTF-8, NUL-terminated */
} ChatMessage;

/* One run of rendered text; control = 1 when it is exactly one control-token
 * string of the template (to be encoded as that token's id). */
typedef struct {
    size_t off, len;
    int control;
} ChatSpan;

typedef struct {
    char *text; /* NUL-terminated, malloc'd */
    size_t len, cap;
    ChatSpan *spans; /* consecutive, covering text[0..len) */
    int n_spans, cap_spans;
} ChatText;

/* "none", "chatml", "llama3", "hh", or a family name ("qwen2.5", "llama3.1",
 * ...: chat_template_known_names) -> template; an unknown name is an error
 * that lists the known ones. */
int chat_template_from_name(const char *name, ChatTemplate *out);
const char *chat_template_name(ChatTemplate t);
/* Every accepted --chat-template value, comma-separated, for messages. */
const char *chat_template_known_names(void);

/* Recognise a model's Jinja template: a model family by its fingerprint
 * (chat_template_families.c), else plain ChatML (markers and no default
 * system message, date or <think>) -> chatml, Llama-3 headers without 3.1's
 * preamble -> llama3, "\n\nHuman:" -> hh. *out is always set
 * (to none when nothing matches). Returns CHAT_DETECT_MATCHED, or
 * CHAT_DETECT_ABSENT (jinja NULL or empty: a base model, none is right), or
 * CHAT_DETECT_UNKNOWN (a template align cannot render: callers should warn
 * that "none" stands in, or ask for --chat-template). */
enum { CHAT_DETECT_MATCHED = 0, CHAT_DETECT_ABSENT = 1, CHAT_DETECT_UNKNOWN = 2 };
int chat_template_detect(const char *jinja, ChatTemplate *out);

/* Jinja source rendering exactly what chat_render does, for
 * tokenizer_config.json's "chat_template" (uses bos_token for llama3). Every
 * built-in name has one ("none" concatenates contents); NULL for an unknown
 * name and for the model families, whose Jinja is the model's own. */
const char *chat_template_jinja(const char *name);

/* The template a program uses with a model: `flag` (--chat-template) when
 * given, else the template name stored with the model, else the one its
 * Jinja template implements, else none. Returns 0, -1 for an unknown flag
 * value (message set), or CHAT_DETECT_UNKNOWN when the model has a Jinja
 * template align cannot render (*out is none: callers may warn). */
int chat_template_choose(const char *flag, const char *model_name, const char *model_jinja, ChatTemplate *out);

/* chat_template_choose for the programs that train: a model whose template
 * string is present but not one align renders exactly is an error (-1)
 * naming --chat-template and every accepted name, never a guess and never
 * a silent "none". */
int chat_template_choose_for_training(const char *flag, const char *model_name, const char *model_jinja,
                                      ChatTemplate *out);

/* The Jinja a model trained with template t should carry: the built-in's
 * own (chat_template_export_jinja), or for a model family the model's own
 * template string when it is that family (Qwen3 with thinking off is the
 * same Jinja), else NULL. */
const char *chat_template_own_jinja(ChatTemplate t, const char *model_jinja);

/* The built-in template name ("chatml", "llama3", "hh") a model's Jinja
 * template implements; NULL when none matches (or jinja is NULL). */
const char *chat_template_detect_name(const char *jinja);
/* The Jinja source to store with a model that uses template `name`: NULL
 * for "none" (a model without a template) or an unknown name. */
const char *chat_template_export_jinja(const char *name);

/* The control token that ends a completion ("<|im_end|>", "<|eot_id|>",
 * "<end_of_turn>", "</s>", ...), or NULL (hh, none: the dataset layer
 * appends the tokenizer's EOS id). */
const char *chat_template_end_marker(ChatTemplate t);

/* Render a conversation. add_generation_prompt appends the assistant header
 * ("<|im_start|>assistant\n", "<|start_header_id|>assistant<|end_header_id|>\n\n",
 * "\n\nAssistant:", nothing for none). out must be zeroed or freed before. */
int chat_render(ChatTemplate t, const ChatMessage *msgs, int n_msgs, int add_generation_prompt,
                ChatText *out);

/* Split rendering for training: prompt = render(prompt msgs) + generation
 * prompt; completion = the assistant's content + the end-of-turn marker
 * (chatml: content<|im_end|>, llama3: trim(content)<|eot_id|>, hh: " "
 * + content, none: content). prompt + completion equals the full rendering
 * of the conversation with the completion as its last assistant message,
 * except that ChatML's "\n" after <|im_end|> is left out (it belongs to the
 * next turn and is never generated). */
int chat_render_split(ChatTemplate t, const ChatMessage *prompt, int n_prompt,
                      const char *completion, ChatText *prompt_out, ChatText *completion_out);

/* Multi-turn training: the text between one assistant completion (as
 * chat_render_split ends it) and the next assistant's content: ChatML's "\n"
 * after <|im_end|>, the messages in between (never the first of the
 * conversation, so no llama3 <|begin_of_text|>), and the generation prompt.
 * prompt, then each completion followed by its "between" text, equals
 * chat_render of the whole conversation (less ChatML's final "\n"). */
int chat_render_between(ChatTemplate t, const ChatMessage *msgs, int n_msgs, ChatText *out);

/* Plain-text conveniences (malloc'd strings, caller frees). */
char *chat_render_text(ChatTemplate t, const ChatMessage *msgs, int n_msgs, int add_generation_prompt);
int chat_render_split_text(ChatTemplate t, const ChatMessage *prompt, int n_prompt,
                           const char *completion, char **prompt_text, char **completion_text);

void chat_text_free(ChatText *ct);

#endif
