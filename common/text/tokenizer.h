/* tokenizer: byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM families),
 * SentencePiece-style BPE with byte fallback (Llama 2, Mistral, TinyLlama:
 * spaces as "▁", a dummy prefix, <0xXX> tokens for what the vocabulary
 * lacks), from tokenizer.json or GGUF's "llama" tokenizer, and Unigram
 * models in tokenizer.json (Metaspace, no Precompiled normalizer).
 *
 * Sources: a Hugging Face tokenizer.json, GPT-2's encoder.json + vocab.bpe,
 * or a vocabulary + merges list (GGUF metadata). Text is split by the
 * family's pre-tokenizer pattern (PCRE2, UTF-8 + UCP), each piece is mapped
 * to GPT-2's byte-to-unicode alphabet and merged by BPE rank. Added/special
 * tokens are matched on the raw text before any of that. Decoding is exact:
 * decode(encode(s)) == s for every valid UTF-8 string s
 * (special-token strings taken as text), but for a SentencePiece Metaspace
 * "first" tokenizer on text that starts with a space, as in `tokenizers`.
 *
 * (Contract shared by the formats, datasets and programs; the implementation
 * lives in tokenizer.c.) */
#ifndef ALIGN_TOKENIZER_H
#define ALIGN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;

typedef enum {
    TOK_PRE_GPT2 = 0,  /* GPT-2's pattern */
    TOK_PRE_LLAMA3,    /* Llama-3's pattern */
    TOK_PRE_QWEN2,     /* as Llama-3 with \p{N} single digits */
    TOK_PRE_SMOLLM,    /* digits one by one, then GPT-2's pattern */
} TokPretok;

/* From the text of a tokenizer.json (origin names the file for errors). */
Tokenizer *tok_load_hf_json(const char *json, size_t len, const char *origin);
Tokenizer *tok_load_hf_file(const char *path);
/* From GPT-2's encoder.json and vocab.bpe. */
Tokenizer *tok_load_gpt2_files(const char *encoder_json_path, const char *vocab_bpe_path);
/* From a vocabulary (id order) and merges ("a b" strings, rank order), as
 * GGUF stores them. token_types may be NULL; type 3 (control) and 4
 * (user-defined) mark added tokens. */
Tokenizer *tok_from_vocab(const char *const *tokens, int n_tokens, const char *const *merges,
                          int n_merges, const int32_t *token_types, TokPretok pre);
/* A SentencePiece BPE vocabulary as GGUF stores it (tokenizer.ggml.model
 * "llama": pieces, scores, types 1 normal, 2 unknown, 3 control, 4
 * user-defined, 6 byte) and llama.cpp's add_space_prefix. Merges are derived
 * from the scores as transformers does when it converts such a model, so
 * ids equal its tokenizer.json's. */
Tokenizer *tok_from_spm(const char *const *tokens, const float *scores, const int32_t *token_types,
                        int n_tokens, int add_space_prefix);
/* The smallest byte-level BPE: one token per byte (ids 0..255, byte order),
 * no merges, then the given special tokens (ids 256...). Every text
 * round-trips; used to build models from scratch with nothing to download. */
Tokenizer *tok_byte_level(const char *const *specials, int n_specials);
void tok_free(Tokenizer *t);

/* Serialise as tokenizer.json text (for .ckpt metadata and HF export);
 * malloc'd, caller frees. */
char *tok_to_hf_json(const Tokenizer *t);

/* Encode UTF-8 text. allow_special: 1 = special-token strings in the text
 * become their ids (chat templates), 0 = they are encoded as plain text
 * (untrusted user data). *ids is malloc'd; caller frees. */
int tok_encode(const Tokenizer *t, const char *text, size_t len, int allow_special,
               int32_t **ids, int *n_ids);
/* Encode text that starts a sequence, as transformers' tokenizer(text): the
 * BOS first when the model adds one (tok_add_bos), once: a BOS token written
 * at the start of the text is that BOS. Otherwise as tok_encode. */
int tok_encode_start(const Tokenizer *t, const char *text, size_t len, int allow_special, int32_t **ids,
                     int *n_ids);
/* 1 when the model's sequences start with BOS: tokenizer.json's
 * post-processor (a TemplateProcessing starting with a special token, also
 * inside a Sequence), tokenizer_config.json's or GGUF's add_bos_token. */
int tok_add_bos(const Tokenizer *t);
/* Sets it, rewriting the post-processor that tok_to_hf_json writes to match;
 * -1 when on and the tokenizer has no BOS. */
int tok_set_add_bos(Tokenizer *t, int on);
/* Decode ids to UTF-8 (malloc'd, NUL-terminated, length in *len). */
char *tok_decode(const Tokenizer *t, const int32_t *ids, int n_ids, size_t *len);

int tok_vocab_size(const Tokenizer *t);
/* Id of an exact token string (added tokens included), or -1. */
int32_t tok_token_id(const Tokenizer *t, const char *token);
/* Token string as stored in the vocabulary (byte-level alphabet), or NULL. */
const char *tok_token_str(const Tokenizer *t, int32_t id);
int32_t tok_bos_id(const Tokenizer *t);  /* -1 when none */
int32_t tok_eos_id(const Tokenizer *t);  /* -1 when none */
int32_t tok_pad_id(const Tokenizer *t);  /* -1 when none */
void tok_set_special_ids(Tokenizer *t, int32_t bos, int32_t eos, int32_t pad);

/* The pre-tokenizer family (a tokenizer.json with an unknown Split regex
 * keeps that regex and reports the closest family). */
TokPretok tok_pretok(const Tokenizer *t);
/* GGUF's tokenizer.ggml.pre names: "gpt-2"/"gpt2"/"default", "llama-bpe"/
 * "llama3", "qwen2", "smollm". Unknown names are an error. */
int tok_pretok_from_name(const char *name, TokPretok *out);
const char *tok_pretok_name(TokPretok pre);  /* the GGUF name */
/* 1 when id is an added token marked special (control), else 0. */
int tok_is_special(const Tokenizer *t, int32_t id);
/* The raw bytes one token decodes to (not NUL-terminated; points into t). */
int tok_token_bytes(const Tokenizer *t, int32_t id, const char **bytes, size_t *len);

#endif
