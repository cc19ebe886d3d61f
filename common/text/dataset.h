/* dataset: JSON Lines / .json array / table records -> tokenized examples -> packed batches.
 *
 * Records (one JSON object per line, or the elements of one top-level array):
 *   preference  {prompt?, chosen, rejected, margin?, score_chosen?, score_rejected?}
 *               strings or [{role, content}] lists; without "prompt" the prompt
 *               is what chosen and rejected share (hh-rlhf strings: up to the
 *               last "\n\nAssistant:" they share; messages: the shared leading
 *               messages). Unpaired {prompt, completion, label} is refused.
 *   unpaired    (DS_UNPAIRED, KTO) {prompt, completion, label: true|false}
 *               (TRL's format; strings or message lists): the completion is
 *               `chosen` when label is true, `rejected` when false, the
 *               other side empty (n = 0); preference records are read as
 *               above and keep both sides (one desirable and one
 *               undesirable example).
 *   SFT         {messages} (loss on every assistant message, its content and
 *               end marker, never on system/user text, as TRL's
 *               assistant_only_loss; last_turn_only: the last one only, earlier
 *               turns are prompt), {question, answer}, {prompt, completion},
 *               {text} (pretraining: empty prompt, loss on every token).
 *   prompt-only {prompt} (string or messages), {question}, {messages} (a
 *               trailing assistant message is dropped), and any preference or
 *               SFT record (its prompt is taken), so one file serves both.
 *               An "answer" field is kept as the example's label (RL with
 *               verifiable rewards: GSM8K's {question, answer: "...#### 42"},
 *               {prompt, answer}, {messages, answer}).
 *
 * Tokens: control tokens of the chat template are looked up by id; all text
 * (roles, content, plain markup) is encoded with special tokens disallowed,
 * so a record containing "<|im_end|>" gets the characters, never the token.
 * Message lists always go through the chat template; plain strings do too
 * unless the template is "none" (then prompt and completion are raw text).
 * Completions end with the template's end-of-turn token (<|im_end|>,
 * <|eot_id|>) or, for hh/none, the tokenizer's EOS id (when it has one).
 *
 * Length: when prompt + completion (the longer of chosen/rejected) exceeds
 * max_length, DS_OVERFLOW_TRUNCATE drops tokens from the prompt's START
 * (keeps its end, TRL's keep_end) but not below half of max_length, then
 * cuts the completion's END; DS_OVERFLOW_DROP drops the example and counts it.
 *
 * Tables: a path ending in .csv, .tsv or .xlsx is read by table_reader.h,
 * each row (after the header row naming the fields) becoming the JSON
 * object above, so the same shapes and checks apply: columns question and
 * answer make SFT records, prompt/chosen/rejected preference records.
 *
 * Errors: one sentence "FILE:LINE: reason" (JSONL, 1-based lines; tables:
 * the row, or the CSV line it starts on) or
 * "FILE: element N: reason" (.json arrays, 0-based index as jq counts).
 * With skip_bad the record is skipped, counted, and the first message kept.
 *
 * Reading is streaming: JSONL is read line by line (one line and one parsed
 * record in memory); a .json array is read once and split into elements
 * without building the whole tree. Token ids of a loaded dataset live in one
 * pool. */
#ifndef ALIGN_DATASET_H
#define ALIGN_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "model.h"
#include "tokenizer.h"

typedef enum {
    DS_PREFERENCE = 0, /* prompt, chosen, rejected */
    DS_SFT,            /* prompt, completion */
    DS_PROMPT,         /* prompt only (rollouts, generation) */
    DS_UNPAIRED,       /* KTO: {prompt, completion, label} or a preference record */
} DsKind;

typedef enum {
    DS_OVERFLOW_TRUNCATE = 0, /* keep the prompt's end, then the completion's start */
    DS_OVERFLOW_DROP,         /* drop the example, count it in n_dropped */
} DsOverflow;

typedef struct {
    DsKind kind;
    ChatTemplate chat_template;
    int max_length;        /* prompt + completion tokens; 0 = no limit */
    int max_prompt_length; /* applied first, keeping the end; 0 = no limit */
    DsOverflow overflow;
    int skip_bad;          /* 1: skip and count bad records instead of failing */
    const char *sheet;     /* .xlsx: the worksheet to read (NULL = the first) */
    int last_turn_only;    /* SFT {messages}: train the last assistant turn only */
} DsOptions;

/* kind DS_PREFERENCE, template none, no limits, overflow truncate, skip_bad 0. */
void ds_options_default(DsOptions *o);

typedef struct {
    int32_t *prompt;   /* includes the generation prompt (assistant header) */
    int n_prompt;
    int32_t *chosen;   /* SFT: the completion; DS_PROMPT: NULL; unpaired: NULL when absent */
    int n_chosen;
    uint8_t *chosen_mask; /* multi-turn SFT: [n_chosen], 1 where the loss applies
                           * (assistant turns), 0 between them; NULL = all 1 */
    int32_t *rejected; /* preference and unpaired only (unpaired: NULL when absent) */
    int n_rejected;
    float margin;      /* "margin", 0 when absent */
    int has_margin;
    float score_chosen, score_rejected; /* UltraFeedback metadata, NAN when absent */
    char *label;       /* DS_PROMPT: the record's "answer" (a string, or a number as written), the
                        * reference a rule-based reward checks against; NULL when absent */
    long line;         /* JSONL: 1-based line; .json array: 0-based element; table: row */
    int truncated;     /* 1 when max_length/max_prompt_length cut it */
} DsExample;

typedef struct {
    DsExample *ex;
    size_t n;
    size_t n_bad;       /* skipped (skip_bad) */
    size_t n_dropped;   /* over max_length with DS_OVERFLOW_DROP */
    size_t n_truncated; /* kept but cut */
    char first_bad[512]; /* first skipped record's message, "" when none */
    /* private: the id pool the examples point into */
    int32_t *pool;
    size_t pool_len, pool_cap;
    uint8_t *mask_pool; /* the examples' chosen_mask */
    size_t mask_len, mask_cap;
} Dataset;

/* Load and tokenize a whole file. Returns -1 on the first bad record (unless
 * skip_bad), an unreadable file, or an empty result. */
int ds_load(const char *path, const Tokenizer *tok, const DsOptions *opt, Dataset *out);
void ds_free(Dataset *ds);

/* Streaming: one example at a time. ds_reader_next returns 1 with *ex set
 * (its ids stay valid until the next call), 0 at the end, -1 on error. */
typedef struct DsReader DsReader;
DsReader *ds_reader_open(const char *path, const Tokenizer *tok, const DsOptions *opt);
int ds_reader_next(DsReader *r, DsExample *ex);
/* The next record as its JSON object text instead (a JSONL line, a .json
 * element, a table row as JSON), UTF-8 checked, and where it is ("f:3",
 * "f: element 2"; row: the DsExample.line it would get), for a program that
 * decides per record how to read it (rm_score: preference or SFT). 1, 0 at
 * the end, -1 a bad record (the error names it; the next call goes on),
 * -2 the file cannot be read further. The text is valid until the next
 * call; skip_bad and the counts are the caller's. */
int ds_reader_next_record(DsReader *r, const char **json, size_t *len, long *row, char *where, size_t cap);
/* Counts so far (any pointer may be NULL) and the first skipped message. */
void ds_reader_counts(const DsReader *r, size_t *n_bad, size_t *n_dropped, size_t *n_truncated);
const char *ds_reader_first_bad(const DsReader *r);
void ds_reader_close(DsReader *r);

/* A data file's record must be UTF-8: -1 with "where: not valid UTF-8
 * (byte 0xE9 at column 12) ..." otherwise. The reader checks every line
 * (cJSON keeps such bytes in strings, so a Latin-1 file would train on
 * mojibake without a word); programs reading files themselves call it. */
int ds_check_utf8(const char *text, size_t len, const char *where);

/* One record's JSON text -> example (ids malloc'd into ex: free with
 * ds_example_free). where names it in errors ("file:3"). Returns 1 = ok,
 * 0 = dropped (too long with DS_OVERFLOW_DROP), -1 = bad record. For fuzzing
 * and tests. */
int ds_parse_record(const char *json, size_t len, const char *where, const Tokenizer *tok,
                    const DsOptions *opt, DsExample *ex);
void ds_example_free(DsExample *ex);

/* ------------------------------------------------------------ packing */

/* One sequence to pack: prompt tokens then completion tokens. */
typedef struct {
    const int32_t *prompt;
    int n_prompt;
    const int32_t *completion;
    int n_completion;
    const uint8_t *completion_mask; /* NULL: every completion token counts in the loss */
} DsSeq;

/* which: 0 = chosen (SFT completion), 1 = rejected. */
DsSeq ds_example_seq(const DsExample *ex, int which);

/* A packed batch: batch.tokens/seq_start point at tokens/seq_start here.
 * targets[i] = tokens[i+1] inside a sequence, -1 at each sequence's last
 * token; loss_mask[i] = 1 when targets[i] is a completion token (that the
 * sequence's completion_mask, if any, trains). With
 * mask_prompt_targets, targets[i] = -1 wherever loss_mask[i] == 0, so the LM
 * head skips prompt rows. */
typedef struct {
    Batch batch;
    int32_t *tokens;
    int32_t *seq_start; /* n_seqs + 1 */
    int32_t *targets;
    uint8_t *loss_mask;
    int n_loss_tokens;  /* sum of loss_mask */
    int32_t *seq_prefix; /* ds_pack_pairs: batch.seq_prefix; else NULL */
    int32_t *seq_of;     /* ds_pack_pairs: input sequence -> packed sequence; else NULL (the same) */
    int n_inputs;        /* input sequences */
} DsPacked;

int ds_pack(const DsSeq *seqs, int n_seqs, int mask_prompt_targets, DsPacked *out);

/* Pairs (seqs[2i], seqs[2i+1]) packed so that the beginning they share and
 * that predicts nothing (their common prompt but its last token) runs once:
 * [shared | rest of 2i | rest of 2i+1], both rests extending the shared
 * sequence (Batch.seq_prefix) and starting at the last prompt token, whose
 * row predicts each one's first completion token. Log-probs, loss mask and
 * gradients are those of ds_pack's layout; only the rows differ. A pair
 * with nothing to share packs as two plain sequences. */
int ds_pack_pairs(const DsSeq *seqs, int n_pairs, int mask_prompt_targets, DsPacked *out);

/* The packed sequence that holds input sequence i's completion. */
static inline int ds_packed_seq(const DsPacked *p, int i) { return p->seq_of ? p->seq_of[i] : i; }

void ds_packed_free(DsPacked *p);

#endif
