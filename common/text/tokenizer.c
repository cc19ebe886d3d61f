/* tokenizer: byte-level BPE, the contract of tokenizer.h.
 *
 * Design. Every vocabulary entry is kept twice: its stored string (GPT-2's
 * byte-to-unicode alphabet, as tokenizer.json writes it) and the raw bytes it
 * stands for. BPE runs on token ids, never on strings: a piece of text starts
 * as one id per byte, and merges are looked up by (left id, right id) in an
 * open-addressing hash that gives (rank, merged id), as tiktoken and
 * llama.cpp do. Short pieces (almost all of them) merge with a rank array
 * scanned for its minimum; long ones (whitespace runs, base64) use a binary
 * heap with lazy invalidation, O(n log n). Ties go to the leftmost pair,
 * which is the order Hugging Face `tokenizers` uses.
 *
 * Text goes through three stages, as in `tokenizers`: added tokens are cut
 * out of the raw text first (leftmost, then longest match); each stretch in
 * between is split by the pre-tokenizer steps (a list of PCRE2 regexes
 * applied in turn with "Isolated" behaviour: matches and the gaps between
 * them both become pieces, each step seeing only its own piece, so a
 * look-ahead stops at the piece's end); each final piece is BPE-encoded.
 * The regexes are compiled with PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF
 * and JIT: invalid UTF-8 is never matched, so it falls into gaps, which are
 * encoded byte by byte and still decode exactly.
 *
 * Results of whole pieces are cached (piece bytes -> ids). The cache lives in
 * the Tokenizer behind a mutex taken with trylock once per tok_encode call:
 * one thread at a time uses it, others encode without it, nobody waits. So
 * tok_encode is safe to call from several threads on one Tokenizer.
 *
 * SentencePiece-style BPE (Llama 2, Mistral; tok_from_spm for GGUF's
 * "llama" tokenizer) shares the merge loop and the added-token stage but
 * not the rest: a stretch of text between added tokens gets its spaces
 * replaced by "▁" and a "▁" dummy prefix (spm_prepend says when), and is
 * then one piece (no pre-tokenizer; Metaspace split = true cuts it before
 * each "▁"), starting as one symbol per character that is a model token,
 * else that character's <0xXX> byte tokens (byte fallback) or the unknown
 * token. Such a token's raw bytes are its string with "▁" as a space (or
 * its byte), and decoding drops the one leading space the prefix put there,
 * as the Strip decoder of those tokenizer.json files does. Unigram models
 * take the same text path with a Viterbi search for the segmentation of
 * highest score in place of merges (uni_piece); their Precompiled
 * normalizer (T5, ALBERT, XLNet ship one) is not implemented.
 *
 * Not implemented: normalizers other than NFC, which is accepted and kept
 * for export but not applied (text is taken to be NFC already; for text that
 * is not, Qwen2's ids can differ from Hugging Face's, decoding is still
 * exact); ByteLevel add_prefix_space; Split behaviours other than Isolated. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <cJSON.h>
#include <limits.h>
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ------------------------------------------------------------------------ */
/* Known pre-tokenizer patterns, as tokenizer.json files write them.         */

static const char PAT_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char PAT_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_DIGIT[] = "\\p{N}";     /* Digits, individual_digits = true */
static const char PAT_DIGITS[] = "\\p{N}+";   /* Digits, individual_digits = false */

#define TOK_MAX_STEPS 8
#define BPE_SHORT 64          /* pieces up to this many bytes merge by array scan */
#define CACHE_MAX_PIECE 64    /* longer pieces are not cached */
#define CACHE_MAX_ENTRIES (1u << 17)

/* ------------------------------------------------------------------------ */
/* Hashing and the two maps.                                                 */

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xbf58476d1ce4e5b9ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0x94d049bb133111ebull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    return mix64(h ^ v);
}

/* Byte-string -> (v1, v2). Keys live in an arena owned by the map. */
typedef struct {
    uint32_t off, len;  /* off == UINT32_MAX: empty slot */
    uint32_t h32;
    int32_t v1, v2;
} StrSlot;

typedef struct {
    StrSlot *slots;
    size_t mask, n;
    char *keys;
    size_t keys_len, keys_cap;
} StrMap;

static int strmap_init(StrMap *m, size_t expect) {
    size_t cap = 16;
    while (cap < expect * 2) cap <<= 1;
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return align_errorf("out of memory for a tokenizer hash table");
    for (size_t i = 0; i < cap; i++) m->slots[i].off = UINT32_MAX;
    m->mask = cap - 1;
    m->n = 0;
    m->keys = NULL;
    m->keys_len = m->keys_cap = 0;
    return 0;
}

static void strmap_free(StrMap *m) {
    free(m->slots);
    free(m->keys);
    memset(m, 0, sizeof *m);
}

static void strmap_clear(StrMap *m) {
    for (size_t i = 0; i <= m->mask; i++) m->slots[i].off = UINT32_MAX;
    m->n = 0;
    m->keys_len = 0;
}

static inline StrSlot *strmap_find(const StrMap *m, const void *key, size_t len, uint64_t h) {
    uint32_t h32 = (uint32_t)(h >> 32);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        StrSlot *s = &m->slots[i];
        if (s->off == UINT32_MAX) return NULL;
        if (s->h32 == h32 && s->len == len && memcmp(m->keys + s->off, key, len) == 0) return s;
    }
}

static int strmap_grow(StrMap *m) {
    size_t cap = (m->mask + 1) * 2;
    StrSlot *ns = malloc(cap * sizeof *ns);
    if (!ns) return align_errorf("out of memory for a tokenizer hash table");
    for (size_t i = 0; i < cap; i++) ns[i].off = UINT32_MAX;
    for (size_t i = 0; i <= m->mask; i++) {
        StrSlot *s = &m->slots[i];
        if (s->off == UINT32_MAX) continue;
        uint64_t h = hash_bytes(m->keys + s->off, s->len);
        size_t j = h & (cap - 1);
        while (ns[j].off != UINT32_MAX) j = (j + 1) & (cap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->mask = cap - 1;
    return 0;
}

/* Insert or overwrite. */
static int strmap_put(StrMap *m, const void *key, size_t len, int32_t v1, int32_t v2) {
    uint64_t h = hash_bytes(key, len);
    StrSlot *s = strmap_find(m, key, len, h);
    if (s) {
        s->v1 = v1;
        s->v2 = v2;
        return 0;
    }
    if ((m->n + 1) * 2 > m->mask + 1 && strmap_grow(m)) return -1;
    if (m->keys_len + len + 1 > m->keys_cap) {
        size_t cap = m->keys_cap ? m->keys_cap * 2 : 4096;
        while (cap < m->keys_len + len + 1) cap *= 2;
        if (cap > UINT32_MAX) return align_errorf("tokenizer hash table keys exceed 4 GiB");
        char *nk = realloc(m->keys, cap);
        if (!nk) return align_errorf("out of memory for a tokenizer hash table");
        m->keys = nk;
        m->keys_cap = cap;
    }
    memcpy(m->keys + m->keys_len, key, len);
    m->keys[m->keys_len + len] = 0;
    size_t i = h & m->mask;
    while (m->slots[i].off != UINT32_MAX) i = (i + 1) & m->mask;
    m->slots[i] = (StrSlot){(uint32_t)m->keys_len, (uint32_t)len, (uint32_t)(h >> 32), v1, v2};
    m->keys_len += len + 1;
    m->n++;
    return 0;
}

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t *keys;  /* UINT64_MAX: empty */
    int32_t *rank, *merged;
    size_t mask, n;
} PairMap;

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static int pairmap_init(PairMap *m, size_t expect) {
    size_t cap = 16;
    while (cap < expect * 2) cap <<= 1;
    m->keys = malloc(cap * sizeof *m->keys);
    m->rank = malloc(cap * sizeof *m->rank);
    m->merged = malloc(cap * sizeof *m->merged);
    if (!m->keys || !m->rank || !m->merged) return align_errorf("out of memory for the merge table");
    memset(m->keys, 0xff, cap * sizeof *m->keys);
    m->mask = cap - 1;
    m->n = 0;
    return 0;
}

static void pairmap_free(PairMap *m) {
    free(m->keys);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

/* Rank of the pair, INT32_MAX when the pair never merges. */
static inline int32_t pairmap_get(const PairMap *m, int32_t a, int32_t b, int32_t *merged) {
    uint64_t k = pair_key(a, b);
    for (size_t i = mix64(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == k) {
            *merged = m->merged[i];
            return m->rank[i];
        }
        if (m->keys[i] == UINT64_MAX) return INT32_MAX;
    }
}

/* Returns 1 when inserted, 0 when the pair was already there (first rank wins). */
static int pairmap_add(PairMap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if ((m->n + 1) * 2 > m->mask + 1) {
        PairMap g;
        if (pairmap_init(&g, (m->mask + 1))) return -1;
        for (size_t i = 0; i <= m->mask; i++) {
            if (m->keys[i] == UINT64_MAX) continue;
            size_t j = mix64(m->keys[i]) & g.mask;
            while (g.keys[j] != UINT64_MAX) j = (j + 1) & g.mask;
            g.keys[j] = m->keys[i];
            g.rank[j] = m->rank[i];
            g.merged[j] = m->merged[i];
        }
        g.n = m->n;
        pairmap_free(m);
        *m = g;
    }
    uint64_t k = pair_key(a, b);
    size_t i = mix64(k) & m->mask;
    for (; m->keys[i] != UINT64_MAX; i = (i + 1) & m->mask)
        if (m->keys[i] == k) return 0;
    m->keys[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
    m->n++;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* GPT-2's byte-to-unicode alphabet.                                         */

static uint16_t byte_to_cp[256];
static int16_t cp_to_byte[324];  /* code points used are all below 324 */
static pthread_once_t alphabet_once = PTHREAD_ONCE_INIT;

static void alphabet_init(void) {
    int n = 0;
    for (int i = 0; i < 324; i++) cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : 256 + n++;
        byte_to_cp[b] = (uint16_t)cp;
        cp_to_byte[cp] = (int16_t)b;
    }
}

Tokenizer *tok_byte_level(const char *const *specials, int n_specials) {
    pthread_once(&alphabet_once, alphabet_init);
    int n = 256 + n_specials;
    char(*names)[4] = malloc(256 * sizeof *names);
    const char **tokens = malloc(n * sizeof(char *));
    int32_t *types = malloc(n * sizeof(int32_t));
    Tokenizer *t = NULL;
    if (!names || !tokens || !types) {
        align_errorf("out of memory building a byte-level tokenizer");
        goto done;
    }
    for (int b = 0; b < 256; b++) {
        unsigned cp = byte_to_cp[b];
        if (cp < 0x80) {
            names[b][0] = (char)cp, names[b][1] = 0;
        } else {
            names[b][0] = (char)(0xC0 | (cp >> 6)), names[b][1] = (char)(0x80 | (cp & 0x3F)), names[b][2] = 0;
        }
        tokens[b] = names[b];
        types[b] = 1; /* normal */
    }
    for (int i = 0; i < n_specials; i++) {
        tokens[256 + i] = specials[i];
        types[256 + i] = 3; /* control */
    }
    t = tok_from_vocab(tokens, n, NULL, 0, types, TOK_PRE_GPT2);
done:
    free(names), free(tokens), free(types);
    return t;
}

/* Writes the alphabet form of bytes (at most 2 output bytes per input). */
static size_t bytes_to_alphabet(const uint8_t *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned cp = byte_to_cp[in[i]];
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return o;
}

/* Decodes an alphabet string to bytes; -1 when a character is outside the
 * alphabet (such a token stands for its own UTF-8 text). */
static long alphabet_to_bytes(const char *s, size_t n, uint8_t *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = (uint8_t)s[i], cp;
        if (c < 0x80) {
            cp = c;
            i++;
        } else if ((c & 0xE0) == 0xC0 && i + 1 < n && ((uint8_t)s[i + 1] & 0xC0) == 0x80) {
            cp = ((c & 0x1F) << 6) | ((uint8_t)s[i + 1] & 0x3F);
            i += 2;
        } else {
            return -1;
        }
        if (cp >= 324 || cp_to_byte[cp] < 0) return -1;
        out[o++] = (uint8_t)cp_to_byte[cp];
    }
    return (long)o;
}

/* ------------------------------------------------------------------------ */
/* The tokenizer.                                                            */

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
} AddedTok;

typedef struct {
    char *pattern;    /* the regex as tokenizer.json writes it */
    int digits;       /* 1: came from a Digits pre-tokenizer */
    pcre2_code *re;
} PreStep;

enum { ID_HOLE = 0, ID_MODEL = 1, ID_ADDED = 2, ID_SPECIAL = 4 };

/* SentencePiece's dummy prefix, as the tokenizer.json forms write it:
 * NORMALIZER: a Prepend("▁") normalizer (Llama 2, Mistral; llama.cpp's
 * add_space_prefix): every stretch of text between added tokens, unless
 * empty. ALWAYS / FIRST: Metaspace prepend_scheme, only when the stretch
 * does not start with "▁" already, FIRST only for the stretch at the start
 * of the text. */
enum { SPM_PREPEND_NONE = 0, SPM_PREPEND_NORMALIZER, SPM_PREPEND_ALWAYS, SPM_PREPEND_FIRST };
static const char SPM_SPACE[] = "\xe2\x96\x81"; /* U+2581 "▁" */

/* "<0xXX>" -> the byte, else -1. */
static int spm_byte_token(const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    if (strlen(s) != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *h = strchr(hex, s[3]), *l = strchr(hex, s[4]);
    if (!h || !l || !s[3] || !s[4]) return -1;
    return (int)((h - hex) * 16 + (l - hex));
}

struct Tokenizer {
    int n_ids;
    char **str;            /* stored form per id; NULL for an unused id */
    uint32_t *boff, *blen; /* the raw bytes per id, in bytes[] */
    char *bytes;
    size_t bytes_len;
    uint8_t *flags;        /* ID_* bits per id */
    StrMap vocab;          /* stored string -> id */
    PairMap merges;
    int32_t (*merge_list)[2];
    int n_merges, merge_cap;
    int32_t byte_id[256];
    AddedTok *added;
    int n_added;
    int *added_order;      /* indices sorted by first byte, then longest first */
    int added_start[257];
    uint8_t first_byte[256]; /* bit 1: some added token starts here; bit 2: a non-special one */
    TokPretok pre;
    PreStep steps[TOK_MAX_STEPS];
    int n_steps;
    int ignore_merges;
    int nfc;               /* source declared an NFC normalizer (kept for export) */
    int spm;               /* SentencePiece-style BPE: tokens spell spaces as "▁", bytes as <0xXX> */
    int spm_prepend;       /* SPM_PREPEND_*: where a "▁" goes before a stretch of text */
    int spm_split;         /* Metaspace split = true: pieces start at each "▁" */
    int spm_no_bytes;      /* SentencePiece without byte_fallback: <0xXX> tokens are ordinary */
    int spm_metaspace;     /* came as a Metaspace pre-tokenizer (else as a normalizer) */
    double *uni_score;     /* Unigram model: log-probability per id (NULL: BPE) */
    double uni_unk_score;  /* the unknown token's: lowest score - 10, as tokenizers */
    int uni_max_len;       /* longest piece in bytes */
    int32_t unk, bos, eos, pad;
    char *post_processor;  /* JSON text kept from the source, or NULL */
    int add_bos;           /* a sequence starts with bos (the post-processor, GGUF's add_bos_token) */
    pthread_mutex_t cache_lock;
    StrMap cache;          /* piece bytes -> (offset, count) in cache_ids */
    int32_t *cache_ids;
    size_t cache_ids_len, cache_ids_cap;
};

static Tokenizer *tok_alloc(int n_ids, size_t n_merges_hint) {
    pthread_once(&alphabet_once, alphabet_init);
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        align_errorf("out of memory for a tokenizer");
        return NULL;
    }
    t->n_ids = n_ids;
    t->str = calloc((size_t)n_ids, sizeof *t->str);
    t->boff = calloc((size_t)n_ids, sizeof *t->boff);
    t->blen = calloc((size_t)n_ids, sizeof *t->blen);
    t->flags = calloc((size_t)n_ids, 1);
    t->unk = t->bos = t->eos = t->pad = -1;
    pthread_mutex_init(&t->cache_lock, NULL);
    if (!t->str || !t->boff || !t->blen || !t->flags || strmap_init(&t->vocab, (size_t)n_ids + 16) ||
        pairmap_init(&t->merges, n_merges_hint + 16) || strmap_init(&t->cache, 1024)) {
        tok_free(t);
        align_errorf("out of memory for a tokenizer of %d tokens", n_ids);
        return NULL;
    }
    return t;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    if (t->str)
        for (int i = 0; i < t->n_ids; i++) free(t->str[i]);
    free(t->str);
    free(t->boff);
    free(t->blen);
    free(t->bytes);
    free(t->flags);
    strmap_free(&t->vocab);
    pairmap_free(&t->merges);
    free(t->merge_list);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->added_order);
    for (int i = 0; i < t->n_steps; i++) {
        free(t->steps[i].pattern);
        pcre2_code_free(t->steps[i].re);
    }
    free(t->post_processor);
    free(t->uni_score);
    strmap_free(&t->cache);
    free(t->cache_ids);
    pthread_mutex_destroy(&t->cache_lock);
    free(t);
}

/* Sets the stored string of an id (model vocabulary or added token). */
static int tok_put(Tokenizer *t, int32_t id, const char *s, size_t len, int flag) {
    if (id < 0 || id >= t->n_ids) return align_errorf("token id %d is out of range", (int)id);
    /* An added token may restate a vocabulary entry (same string) but never
     * take another string's id: text merging to that string would then
     * encode as the added token (found by tests/fuzz/fuzz_tokenizer). */
    if ((flag & ID_ADDED) && t->str[id] && strcmp(t->str[id], s) != 0)
        return align_errorf("added token \"%s\" has id %d, which already belongs to \"%s\"", s, (int)id,
                            t->str[id]);
    if (!t->str[id] || (flag & ID_ADDED)) {
        char *c = malloc(len + 1);
        if (!c) return align_errorf("out of memory for a token string");
        memcpy(c, s, len);
        c[len] = 0;
        free(t->str[id]);
        t->str[id] = c;
    } else if (strcmp(t->str[id], s) != 0) {
        return align_errorf("token id %d is given twice (\"%s\" and \"%s\")", (int)id, t->str[id], s);
    }
    t->flags[id] |= (uint8_t)flag;
    return strmap_put(&t->vocab, s, len, id, 0);
}

static int32_t vocab_lookup(const Tokenizer *t, const char *s, size_t len) {
    StrSlot *sl = strmap_find(&t->vocab, s, len, hash_bytes(s, len));
    return sl ? sl->v1 : -1;
}

/* Adds merge "a b" with the next rank. */
static int tok_merge(Tokenizer *t, const char *a, size_t alen, const char *b, size_t blen) {
    int32_t ia = vocab_lookup(t, a, alen), ib = vocab_lookup(t, b, blen);
    char stackbuf[256];
    char *ab = alen + blen <= sizeof stackbuf ? stackbuf : malloc(alen + blen);
    if (!ab) return align_errorf("out of memory for a merge");
    memcpy(ab, a, alen);
    memcpy(ab + alen, b, blen);
    int32_t im = vocab_lookup(t, ab, alen + blen);
    if (ab != stackbuf) free(ab);
    if (ia < 0 || ib < 0 || im < 0)
        return align_errorf("merge %d (\"%.*s %.*s\") uses a token that is not in the vocabulary",
                            t->n_merges + 1, (int)alen, a, (int)blen, b);
    int r = pairmap_add(&t->merges, ia, ib, t->n_merges, im);
    if (r < 0) return -1;
    if (r == 0) return 0;  /* a repeated merge keeps its first rank */
    if (t->n_merges == t->merge_cap) {
        int cap = t->merge_cap ? t->merge_cap * 2 : 1024;
        void *nl = realloc(t->merge_list, (size_t)cap * sizeof *t->merge_list);
        if (!nl) return align_errorf("out of memory for the merge list");
        t->merge_list = nl;
        t->merge_cap = cap;
    }
    t->merge_list[t->n_merges][0] = ia;
    t->merge_list[t->n_merges][1] = ib;
    t->n_merges++;
    return 0;
}

static int tok_add_added(Tokenizer *t, const char *content, int32_t id, int special, int lstrip,
                         int rstrip, int single_word, int normalized) {
    size_t len = strlen(content);
    if (len == 0) return align_errorf("added token %d has empty content", (int)id);
    if (tok_put(t, id, content, len, ID_ADDED | (special ? ID_SPECIAL : 0))) return -1;
    void *na = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *t->added);
    if (!na) return align_errorf("out of memory for added tokens");
    t->added = na;
    AddedTok *a = &t->added[t->n_added];
    a->content = strdup(content);
    if (!a->content) return align_errorf("out of memory for added tokens");
    a->len = len;
    a->id = id;
    a->special = special;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    a->single_word = single_word;
    a->normalized = normalized;
    t->n_added++;
    return 0;
}

static pcre2_code *compile_pattern(const char *pattern, int literal) {
    int err;
    PCRE2_SIZE erroff;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &err, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        align_errorf("pre-tokenizer regex does not compile at offset %d: %s", (int)erroff, (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  /* without JIT, pcre2_match interprets */
    return re;
}

static int add_step(Tokenizer *t, const char *pattern, int digits, int literal) {
    if (t->n_steps == TOK_MAX_STEPS) return align_errorf("pre-tokenizer has more than %d steps", TOK_MAX_STEPS);
    pcre2_code *re = compile_pattern(pattern, literal);
    if (!re) return -1;
    PreStep *s = &t->steps[t->n_steps++];
    s->pattern = strdup(pattern);
    s->digits = digits;
    s->re = re;
    return s->pattern ? 0 : align_errorf("out of memory for a pre-tokenizer");
}

static int set_known_pretok(Tokenizer *t, TokPretok pre) {
    t->pre = pre;
    switch (pre) {
    case TOK_PRE_GPT2: return add_step(t, PAT_GPT2, 0, 0);
    case TOK_PRE_LLAMA3: return add_step(t, PAT_LLAMA3, 0, 0);
    case TOK_PRE_QWEN2: return add_step(t, PAT_QWEN2, 0, 0);
    case TOK_PRE_SMOLLM: return add_step(t, PAT_DIGIT, 1, 0) || add_step(t, PAT_GPT2, 0, 0) ? -1 : 0;
    }
    return align_errorf("unknown pre-tokenizer kind %d", (int)pre);
}

/* Names the steps' pattern family for tok_pretok(); custom lists report the
 * closest family. */
static TokPretok classify_steps(const Tokenizer *t) {
    if (t->n_steps == 2 && t->steps[0].digits && strcmp(t->steps[0].pattern, PAT_DIGIT) == 0 &&
        strcmp(t->steps[1].pattern, PAT_GPT2) == 0)
        return TOK_PRE_SMOLLM;
    for (int i = 0; i < t->n_steps; i++) {
        const char *p = t->steps[i].pattern;
        if (strcmp(p, PAT_LLAMA3) == 0 || strstr(p, "\\p{N}{1,3}")) return TOK_PRE_LLAMA3;
        if (strcmp(p, PAT_QWEN2) == 0) return TOK_PRE_QWEN2;
    }
    return TOK_PRE_GPT2;
}

/* qsort has no context argument: the tokenizer being sorted is passed in
 * sort_ctx, under sort_lock. */
static const Tokenizer *sort_ctx;
static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;

static int cmp_added_idx(const void *pa, const void *pb) {
    const Tokenizer *t = sort_ctx;
    const AddedTok *a = &t->added[*(const int *)pa], *b = &t->added[*(const int *)pb];
    uint8_t fa = (uint8_t)a->content[0], fb = (uint8_t)b->content[0];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Everything derived once the vocabulary, merges and added tokens are in. */
static int tok_finish(Tokenizer *t) {
    size_t total = 0;
    for (int i = 0; i < t->n_ids; i++)
        if (t->str[i]) total += strlen(t->str[i]);
    t->bytes = malloc(total + 1);
    if (!t->bytes) return align_errorf("out of memory for token bytes");
    size_t o = 0;
    for (int i = 0; i < t->n_ids; i++) {
        t->boff[i] = (uint32_t)o;
        if (!t->str[i]) continue;
        size_t len = strlen(t->str[i]);
        long nb = -1;
        if (t->spm && !(t->flags[i] & ID_ADDED)) { /* "▁" is a space, <0xXX> its byte */
            int by = t->spm_no_bytes ? -1 : spm_byte_token(t->str[i]);
            if (by >= 0) {
                t->bytes[o] = (char)by;
                nb = 1;
            } else {
                nb = 0;
                for (size_t k = 0; k < len;)
                    if (k + 3 <= len && memcmp(t->str[i] + k, SPM_SPACE, 3) == 0) {
                        t->bytes[o + (size_t)nb++] = ' ';
                        k += 3;
                    } else {
                        t->bytes[o + (size_t)nb++] = t->str[i][k++];
                    }
            }
        } else if (!(t->flags[i] & ID_ADDED)) {
            nb = alphabet_to_bytes(t->str[i], len, (uint8_t *)t->bytes + o);
        }
        if (nb < 0) {  /* added token or not in the alphabet: it stands for its own text */
            memcpy(t->bytes + o, t->str[i], len);
            nb = (long)len;
        }
        t->blen[i] = (uint32_t)nb;
        o += (size_t)nb;
    }
    t->bytes_len = o;
    for (int b = 0; b < 256; b++) {
        char s[8];
        uint8_t by = (uint8_t)b;
        size_t n = t->spm ? (size_t)snprintf(s, sizeof s, "<0x%02X>", b) : bytes_to_alphabet(&by, 1, s);
        t->byte_id[b] = t->spm_no_bytes ? -1 : vocab_lookup(t, s, n);
    }
    t->added_order = malloc(((size_t)t->n_added + 1) * sizeof *t->added_order);
    if (!t->added_order) return align_errorf("out of memory for added tokens");
    for (int i = 0; i < t->n_added; i++) t->added_order[i] = i;
    pthread_mutex_lock(&sort_lock);
    sort_ctx = t;
    qsort(t->added_order, (size_t)t->n_added, sizeof(int), cmp_added_idx);
    pthread_mutex_unlock(&sort_lock);
    memset(t->first_byte, 0, sizeof t->first_byte);
    int k = 0;
    for (int c = 0; c < 256; c++) {
        t->added_start[c] = k;
        while (k < t->n_added && (uint8_t)t->added[t->added_order[k]].content[0] == c) {
            t->first_byte[c] |= 1;
            if (!t->added[t->added_order[k]].special) t->first_byte[c] |= 2;
            k++;
        }
    }
    t->added_start[256] = k;
    if (t->n_steps == 0 && !t->spm && set_known_pretok(t, TOK_PRE_GPT2)) return -1;
    return 0;
}

/* Default special ids from well-known token names (tokenizer.json has no
 * place for them; callers with a tokenizer_config.json or GGUF metadata set
 * them with tok_set_special_ids). */
static void guess_special_ids(Tokenizer *t) {
    static const char *bos_names[] = {"<|begin_of_text|>", "<s>", NULL};
    static const char *eos_names[] = {"<|end_of_text|>", "<|endoftext|>", "</s>", NULL};
    for (int i = 0; bos_names[i] && t->bos < 0; i++) t->bos = tok_token_id(t, bos_names[i]);
    for (int i = 0; eos_names[i] && t->eos < 0; i++) t->eos = tok_token_id(t, eos_names[i]);
    if (t->bos < 0 && t->eos >= 0 && strcmp(t->str[t->eos], "<|endoftext|>") == 0) t->bos = t->eos;
}

/* ------------------------------------------------------------------------ */
/* Loading.                                                                  */

static int parse_merge_string(Tokenizer *t, const char *s) {
    const char *sp = strchr(s, ' ');
    if (!sp || strchr(sp + 1, ' '))
        return align_errorf("merge %d (\"%s\") is not two tokens separated by one space", t->n_merges + 1, s);
    return tok_merge(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1));
}

/* One pre-tokenizer object (maybe a Sequence) into steps. */
static int parse_pretok(Tokenizer *t, const cJSON *p) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsString(type)) return align_errorf("pre_tokenizer has no \"type\"");
    const char *ty = type->valuestring;
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"), *it;
        if (!cJSON_IsArray(list)) return align_errorf("pre_tokenizer Sequence has no \"pretokenizers\" list");
        cJSON_ArrayForEach(it, list) if (parse_pretok(t, it)) return -1;
        return 0;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space");
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        if (cJSON_IsTrue(aps)) return align_errorf("ByteLevel add_prefix_space = true is not supported");
        if (!ur || cJSON_IsTrue(ur)) return add_step(t, PAT_GPT2, 0, 0);
        return 0;
    }
    if (strcmp(ty, "Digits") == 0) {
        const cJSON *ind = cJSON_GetObjectItemCaseSensitive(p, "individual_digits");
        return cJSON_IsTrue(ind) ? add_step(t, PAT_DIGIT, 1, 0) : add_step(t, PAT_DIGITS, 1, 0);
    }
    if (strcmp(ty, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        const cJSON *inv = cJSON_GetObjectItemCaseSensitive(p, "invert");
        if (cJSON_IsTrue(inv)) return align_errorf("pre_tokenizer Split with invert = true is not supported");
        if (cJSON_IsString(beh) && strcmp(beh->valuestring, "Isolated") != 0)
            return align_errorf("pre_tokenizer Split behavior \"%s\" is not supported (only Isolated)",
                                beh->valuestring);
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
        if (cJSON_IsString(lit)) return add_step(t, lit->valuestring, 0, 1);
        if (!cJSON_IsString(rx)) return align_errorf("pre_tokenizer Split has no pattern");
        /* A regex PCRE2 cannot read is an error: standing in another family's
         * pattern would give ids that differ from the model's own tokenizer. */
        if (add_step(t, rx->valuestring, 0, 0) == 0) return 0;
        char why[ALIGN_ERR_LEN];
        snprintf(why, sizeof why, "%s", align_error());  /* align_errorf may not read its own buffer */
        return align_errorf("pre_tokenizer Split regex \"%.300s\" is not usable: %s", rx->valuestring, why);
    }
    return align_errorf("pre_tokenizer type \"%s\" is not supported (byte-level BPE only)", ty);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Distinct ids among the vocabulary's values and the added tokens' "id"s
 * (already checked to be numbers); -1 when out of memory. */
static long count_distinct_ids(const cJSON *vocab, const cJSON *added) {
    size_t n = (size_t)cJSON_GetArraySize(vocab) + (added ? (size_t)cJSON_GetArraySize(added) : 0), k = 0;
    int *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return align_errorf("out of memory reading the vocabulary");
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) ids[k++] = it->valueint;
    cJSON_ArrayForEach(it, added) ids[k++] = cJSON_GetObjectItemCaseSensitive(it, "id")->valueint;
    qsort(ids, k, sizeof *ids, cmp_int);
    long d = 0;
    for (size_t i = 0; i < k; i++) d += i == 0 || ids[i] != ids[i - 1];
    free(ids);
    return d;
}

static int json_str_is(const cJSON *o, const char *key, const char *want) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

/* SentencePiece's text handling, in either form transformers writes it:
 * normalizer [Prepend("▁"),] Replace(" ", "▁") and no pre-tokenizer
 * (Llama 2's legacy form), or no normalizer and a Metaspace pre-tokenizer.
 * Sets t->spm*. Returns 1 when the file is SentencePiece-style, 0 when it
 * is not (neither form), -1 for a form align cannot follow. */
static int parse_spm(Tokenizer *t, const cJSON *norm, const cJSON *pre) {
    int has_norm = norm && !cJSON_IsNull(norm), has_pre = pre && !cJSON_IsNull(pre);
    if (has_pre && json_str_is(pre, "type", "Metaspace")) {
        if (has_norm) return align_errorf("a normalizer together with a Metaspace pre-tokenizer is not supported");
        const cJSON *rep = cJSON_GetObjectItemCaseSensitive(pre, "replacement");
        if (!cJSON_IsString(rep) || strcmp(rep->valuestring, SPM_SPACE) != 0)
            return align_errorf("Metaspace replacement other than \"▁\" is not supported");
        const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(pre, "prepend_scheme");
        const char *sc = cJSON_IsString(scheme) ? scheme->valuestring
                         : cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space")) ? "never"
                                                                                                   : "always";
        if (!strcmp(sc, "always")) t->spm_prepend = SPM_PREPEND_ALWAYS;
        else if (!strcmp(sc, "first")) t->spm_prepend = SPM_PREPEND_FIRST;
        else if (!strcmp(sc, "never")) t->spm_prepend = SPM_PREPEND_NONE;
        else return align_errorf("Metaspace prepend_scheme \"%s\" is not supported", sc);
        t->spm_split = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "split"));
        t->spm = t->spm_metaspace = 1;
        return 1;
    }
    if (!has_norm) return 0;
    /* [Prepend("▁"),] Replace(" ", "▁"), alone or in a Sequence */
    const cJSON *list = json_str_is(norm, "type", "Sequence") ? cJSON_GetObjectItemCaseSensitive(norm, "normalizers")
                                                             : NULL;
    const cJSON *first = list ? cJSON_GetArrayItem(list, 0) : norm;
    int n = list ? cJSON_GetArraySize(list) : 1, k = 0, prepend = 0;
    const cJSON *it = first;
    if (it && json_str_is(it, "type", "Prepend") && json_str_is(it, "prepend", SPM_SPACE)) {
        prepend = 1;
        k++;
        it = list ? cJSON_GetArrayItem(list, 1) : NULL;
    }
    const cJSON *pat = it ? cJSON_GetObjectItemCaseSensitive(it, "pattern") : NULL;
    if (!(it && k + 1 == n && json_str_is(it, "type", "Replace") && json_str_is(pat, "String", " ") &&
          json_str_is(it, "content", SPM_SPACE)))
        return prepend ? align_errorf("a Prepend(\"▁\") normalizer without Replace(\" \", \"▁\") after it is not "
                                      "supported")
                       : 0;
    if (has_pre) return align_errorf("SentencePiece's Replace(\" \", \"▁\") normalizer with a pre-tokenizer is not supported");
    t->spm = 1;
    t->spm_prepend = prepend ? SPM_PREPEND_NORMALIZER : SPM_PREPEND_NONE;
    return 1;
}

/* The id a tokenizer.json post-processor puts first in a single sequence, or
 * -1: a TemplateProcessing whose "single" starts with a SpecialToken (Llama
 * 2/3, Mistral, Gemma), also inside a Sequence (Llama 3: ByteLevel then the
 * template). Its id comes from the template's special_tokens, else the
 * vocabulary. Roberta/BertProcessing belong to encoder families we do not
 * load. */
static int32_t post_first_special(const Tokenizer *t, const cJSON *pp) {
    if (!cJSON_IsObject(pp)) return -1;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pp, "type"), *it;
    if (json_str_is(pp, "type", "Sequence")) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pp, "processors")) {
            int32_t id = post_first_special(t, it);
            if (id >= 0) return id;
        }
        return -1;
    }
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "TemplateProcessing")) return -1;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(first, "SpecialToken"), "id");
    if (!cJSON_IsString(name)) return -1;
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pp, "special_tokens"),
                                                         name->valuestring);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(spec, "ids");
    if (cJSON_GetArraySize(ids) == 1 && cJSON_IsNumber(cJSON_GetArrayItem(ids, 0))) {
        int v = cJSON_GetArrayItem(ids, 0)->valueint;
        if (v >= 0 && v < t->n_ids) return v;
    }
    return tok_token_id(t, name->valuestring);
}

Tokenizer *tok_load_hf_json(const char *json, size_t len, const char *origin) {
    if (!origin) origin = "tokenizer.json";
    cJSON *root = cJSON_ParseWithLength(json, len);
    Tokenizer *t = NULL;
    if (!root) {
        align_errorf("%s: not valid JSON", origin);
        return NULL;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *it;
    if (!cJSON_IsObject(model)) {
        align_errorf("%s: no \"model\" object", origin);
        goto fail;
    }
    int uni = cJSON_IsString(mtype) && strcmp(mtype->valuestring, "Unigram") == 0;
    if (cJSON_IsString(mtype) && strcmp(mtype->valuestring, "BPE") != 0 && !uni) {
        align_errorf("%s: model type \"%s\" is not supported (BPE: byte-level or SentencePiece-style; Unigram; "
                     "not WordPiece)",
                     origin, mtype->valuestring);
        goto fail;
    }
    if (uni ? !cJSON_IsArray(vocab) : !cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        align_errorf(uni ? "%s: Unigram model has no \"vocab\" list" : "%s: model has no \"vocab\" object and "
                                                                       "\"merges\" list",
                     origin);
        goto fail;
    }
    int byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affix[i]);
        if (cJSON_IsString(a) && a->valuestring[0]) {
            align_errorf("%s: BPE %s is not supported", origin, affix[i]);
            goto fail;
        }
    }
    int max_id = -1;
    cJSON_ArrayForEach(it, vocab) {
        if (uni) { /* [piece, score]; the id is the index */
            if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsString(it->child) ||
                !cJSON_IsNumber(it->child->next) || !isfinite(it->child->next->valuedouble)) {
                /* a score of 1e999 reads as infinity, which JSON cannot write back
                 * (found by tests/fuzz/fuzz_tokenizer) */
                align_errorf("%s: Unigram vocab entry %d is not [piece, finite score]", origin, max_id + 1);
                goto fail;
            }
            max_id++;
            continue;
        }
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e8) {
            align_errorf("%s: vocab entry \"%s\" has no valid id", origin, it->string);
            goto fail;
        }
        if (it->valueint > max_id) max_id = it->valueint;
    }
    if (added && !cJSON_IsArray(added)) {
        align_errorf("%s: \"added_tokens\" is not a list", origin);
        goto fail;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e8 || !cJSON_IsString(content)) {
            align_errorf("%s: an added token lacks a valid \"id\" or \"content\"", origin);
            goto fail;
        }
        if (id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) {
        align_errorf("%s: the vocabulary is empty", origin);
        goto fail;
    }
    /* Ids are (nearly) contiguous in every real file; a lone huge id would
     * make a few bytes of JSON allocate tables for millions of tokens
     * (found by tests/fuzz/fuzz_tokenizer). */
    long n_entries = uni ? cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added) : count_distinct_ids(vocab, added);
    if (n_entries < 0) goto fail;
    if (max_id >= 2 * n_entries + 1024) {
        align_errorf("%s: token id %d is far beyond the %ld ids listed (ids must be contiguous)", origin, max_id,
                     n_entries);
        goto fail;
    }
    t = tok_alloc(max_id + 1, uni ? 0 : (size_t)cJSON_GetArraySize(merges));
    if (!t) goto fail;
    if (uni) {
        t->uni_score = malloc(sizeof(double) * (size_t)(max_id + 1));
        if (!t->uni_score) {
            align_errorf("out of memory for Unigram scores");
            goto fail_prefix;
        }
        double lowest = 0.0;
        int i = 0;
        cJSON_ArrayForEach(it, vocab) {
            const char *piece = it->child->valuestring;
            size_t pl = strlen(piece);
            if (tok_put(t, i, piece, pl, ID_MODEL)) goto fail_prefix;
            t->uni_score[i] = it->child->next->valuedouble;
            lowest = i == 0 || t->uni_score[i] < lowest ? t->uni_score[i] : lowest;
            if ((int)pl > t->uni_max_len) t->uni_max_len = (int)pl;
            i++;
        }
        t->uni_unk_score = lowest - 10.0;
        for (; i <= max_id; i++) t->uni_score[i] = 0.0; /* added tokens past the vocabulary */
        const cJSON *uid = cJSON_GetObjectItemCaseSensitive(model, "unk_id");
        if (cJSON_IsNumber(uid) && uid->valueint >= 0 && uid->valueint < cJSON_GetArraySize(vocab))
            t->unk = uid->valueint;
    } else {
        cJSON_ArrayForEach(it, vocab) {
            if (tok_put(t, it->valueint, it->string, strlen(it->string), ID_MODEL)) goto fail_prefix;
        }
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        const cJSON *norm = cJSON_GetObjectItemCaseSensitive(it, "normalized");
        if (tok_add_added(t, content->valuestring, id->valueint,
                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special")),
                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "lstrip")),
                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "rstrip")),
                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "single_word")),
                          norm ? cJSON_IsTrue(norm) : 0))
            goto fail_prefix;
    }
    cJSON_ArrayForEach(it, merges) {
        int rc;
        if (cJSON_IsString(it)) {
            rc = parse_merge_string(t, it->valuestring);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            const char *a = it->child->valuestring, *b = it->child->next->valuestring;
            rc = tok_merge(t, a, strlen(a), b, strlen(b));
        } else {
            rc = align_errorf("merge %d is neither \"a b\" nor [\"a\", \"b\"]", t->n_merges + 1);
        }
        if (rc) goto fail_prefix;
    }
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) t->unk = tok_token_id(t, unk->valuestring);
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    int spm = parse_spm(t, norm, pre);
    if (spm < 0) goto fail_prefix;
    if (byte_fallback && !spm) {
        align_errorf("BPE byte_fallback without SentencePiece's \"▁\" (a Replace normalizer or a Metaspace "
                     "pre-tokenizer) is not supported");
        goto fail_prefix;
    }
    if (uni && !spm) {
        align_errorf("a Unigram model needs SentencePiece's \"▁\" (a Metaspace pre-tokenizer or a Replace "
                     "normalizer); this normalizer/pre-tokenizer (e.g. Precompiled) is not supported");
        goto fail_prefix;
    }
    if (spm && !byte_fallback) t->spm_no_bytes = 1;
    if (spm) {
        /* the normalizer and pre-tokenizer were SentencePiece's */
    } else if (norm && !cJSON_IsNull(norm)) {
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(norm, "type");
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
        if (cJSON_IsString(nt) && strcmp(nt->valuestring, "NFC") == 0) {
            t->nfc = 1;
        } else if (cJSON_IsString(nt) && strcmp(nt->valuestring, "Sequence") == 0 && cJSON_IsArray(list) &&
                   cJSON_GetArraySize(list) == 0) {
            /* an empty Sequence does nothing */
        } else {
            align_errorf("normalizer \"%s\" is not supported", cJSON_IsString(nt) ? nt->valuestring : "?");
            goto fail_prefix;
        }
    }
    if (!spm) {
        if (!pre || cJSON_IsNull(pre)) {
            align_errorf("there is no pre_tokenizer (byte-level BPE needs ByteLevel)");
            goto fail_prefix;
        }
        if (parse_pretok(t, pre)) goto fail_prefix;
        t->pre = classify_steps(t);
    }
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (post && !cJSON_IsNull(post)) t->post_processor = cJSON_PrintUnformatted(post);
    if (tok_finish(t)) goto fail_prefix;
    guess_special_ids(t);
    int32_t first = post_first_special(t, post);
    if (first >= 0) t->add_bos = 1, t->bos = first; /* the token transformers puts first is the BOS */
    cJSON_Delete(root);
    return t;
fail_prefix:
    align_error_prefix("%s", origin);
fail:
    tok_free(t);
    cJSON_Delete(root);
    return NULL;
}

Tokenizer *tok_load_hf_file(const char *path) {
    size_t n;
    char *s = align_read_file(path, &n);
    if (!s) return NULL;
    Tokenizer *t = tok_load_hf_json(s, n, path);
    free(s);
    return t;
}

Tokenizer *tok_load_gpt2_files(const char *encoder_json_path, const char *vocab_bpe_path) {
    size_t n;
    char *enc = align_read_file(encoder_json_path, &n);
    if (!enc) return NULL;
    cJSON *root = cJSON_ParseWithLength(enc, n);
    free(enc);
    Tokenizer *t = NULL;
    char *bpe = NULL;
    const cJSON *it;
    if (!cJSON_IsObject(root)) {
        align_errorf("%s: not a JSON object of token -> id", encoder_json_path);
        goto fail;
    }
    int max_id = -1;
    cJSON_ArrayForEach(it, root) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e8) {
            align_errorf("%s: entry \"%s\" has no valid id", encoder_json_path, it->string);
            goto fail;
        }
        if (it->valueint > max_id) max_id = it->valueint;
    }
    if (max_id < 0) {
        align_errorf("%s: the vocabulary is empty", encoder_json_path);
        goto fail;
    }
    t = tok_alloc(max_id + 1, 50000);
    if (!t) goto fail;
    cJSON_ArrayForEach(it, root) {
        if (tok_put(t, it->valueint, it->string, strlen(it->string), ID_MODEL)) {
            align_error_prefix("%s", encoder_json_path);
            goto fail;
        }
    }
    int32_t eot = tok_token_id(t, "<|endoftext|>");
    if (eot >= 0 && tok_add_added(t, "<|endoftext|>", eot, 1, 0, 0, 0, 0)) goto fail;
    bpe = align_read_file(vocab_bpe_path, &n);
    if (!bpe) goto fail;
    int line = 0;
    for (char *p = bpe, *e; *p; p = e) {
        e = strchr(p, '\n');
        e = e ? e + 1 : p + strlen(p);
        line++;
        size_t ll = (size_t)(e - p);
        while (ll && (p[ll - 1] == '\n' || p[ll - 1] == '\r')) ll--;
        if (ll == 0 || (line == 1 && p[0] == '#')) continue;
        const char *sp = memchr(p, ' ', ll);
        if (!sp || memchr(sp + 1, ' ', ll - (size_t)(sp + 1 - p))) {
            align_errorf("%s:%d: not two tokens separated by one space", vocab_bpe_path, line);
            goto fail;
        }
        if (tok_merge(t, p, (size_t)(sp - p), sp + 1, ll - (size_t)(sp + 1 - p))) {
            align_error_prefix("%s:%d", vocab_bpe_path, line);
            goto fail;
        }
    }
    if (set_known_pretok(t, TOK_PRE_GPT2) || tok_finish(t)) goto fail;
    t->bos = t->eos = eot;
    free(bpe);
    cJSON_Delete(root);
    return t;
fail:
    free(bpe);
    tok_free(t);
    cJSON_Delete(root);
    return NULL;
}

Tokenizer *tok_from_vocab(const char *const *tokens, int n_tokens, const char *const *merges, int n_merges,
                          const int32_t *token_types, TokPretok pre) {
    if (n_tokens <= 0) {
        align_errorf("the vocabulary is empty");
        return NULL;
    }
    Tokenizer *t = tok_alloc(n_tokens, (size_t)(n_merges > 0 ? n_merges : 0));
    if (!t) return NULL;
    for (int i = 0; i < n_tokens; i++) {
        if (!tokens[i]) continue;
        int type = token_types ? token_types[i] : 1;
        int rc = (type == 3 || type == 4) ? tok_add_added(t, tokens[i], i, type == 3, 0, 0, 0, 0)
                                          : tok_put(t, i, tokens[i], strlen(tokens[i]), ID_MODEL);
        if (rc) goto fail;
    }
    for (int i = 0; i < n_merges; i++)
        if (parse_merge_string(t, merges[i])) goto fail;
    /* llama.cpp encodes Llama-3 with ignore_merges, as its tokenizer.json says */
    t->ignore_merges = pre == TOK_PRE_LLAMA3;
    if (set_known_pretok(t, pre) || tok_finish(t)) goto fail;
    guess_special_ids(t);
    return t;
fail:
    tok_free(t);
    return NULL;
}

/* Code points in s[0, n). */
static int utf8_count(const char *s, size_t n) {
    int c = 0;
    for (size_t i = 0; i < n; i++) c += ((uint8_t)s[i] & 0xC0) != 0x80;
    return c;
}

typedef struct {
    int32_t l, r, order;
    float score;
    int len_l, len_r;
} SpmMerge;

/* transformers' generate_merges order: score, then the left piece's length,
 * then the right's, all descending; ties keep the order of discovery. */
static int cmp_spm_merge(const void *pa, const void *pb) {
    const SpmMerge *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->len_l != b->len_l) return a->len_l > b->len_l ? -1 : 1;
    if (a->len_r != b->len_r) return a->len_r > b->len_r ? -1 : 1;
    return (a->order > b->order) - (a->order < b->order);
}

Tokenizer *tok_from_spm(const char *const *tokens, const float *scores, const int32_t *token_types, int n_tokens,
                        int add_space_prefix) {
    if (n_tokens <= 0) {
        align_errorf("the vocabulary is empty");
        return NULL;
    }
    for (int i = 0; scores && i < n_tokens; i++)
        if (!isfinite(scores[i])) {
            align_errorf("piece %d has a score that is not a finite number", i);
            return NULL;
        }
    Tokenizer *t = tok_alloc(n_tokens, (size_t)n_tokens * 2);
    SpmMerge *mg = NULL;
    if (!t) return NULL;
    t->spm = 1;
    t->spm_prepend = add_space_prefix ? SPM_PREPEND_NORMALIZER : SPM_PREPEND_NONE;
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] && tokens[i][0] && tok_put(t, i, tokens[i], strlen(tokens[i]), ID_MODEL)) goto fail;
    /* SentencePiece control and unknown pieces are special added tokens,
     * user-defined ones plain added tokens, as transformers converts them */
    for (int i = 0; i < n_tokens; i++) {
        int type = token_types ? token_types[i] : 1;
        if (!tokens[i] || !tokens[i][0] || (type != 2 && type != 3 && type != 4)) continue;
        if (tok_add_added(t, tokens[i], i, type != 4, 0, 0, 0, 0)) goto fail;
        if (type == 2 && t->unk < 0) t->unk = i;
    }
    /* Merges from the scores, as transformers' generate_merges derives them
     * (for each piece in id order, every split into two pieces of the
     * vocabulary, by (left id, right id)), so ids equal a tokenizer.json
     * converted from the same model. */
    size_t n = 0, cap = 1024;
    mg = malloc(cap * sizeof *mg);
    if (!mg) goto oom;
    for (int i = 0; i < n_tokens; i++) {
        const char *p = tokens[i];
        if (!p) continue;
        size_t len = strlen(p), first = n;
        for (size_t k = 1; k < len; k++) {
            if (((uint8_t)p[k] & 0xC0) == 0x80) continue; /* split between characters only */
            int32_t l = vocab_lookup(t, p, k), r = vocab_lookup(t, p + k, len - k);
            if (l < 0 || r < 0) continue;
            if (n == cap) {
                SpmMerge *nm = realloc(mg, 2 * cap * sizeof *mg);
                if (!nm) goto oom;
                mg = nm;
                cap *= 2;
            }
            mg[n++] = (SpmMerge){l, r, 0, scores ? scores[i] : 0.0f, utf8_count(p, k), utf8_count(p + k, len - k)};
        }
        for (size_t a = first + 1; a < n; a++) /* by (left id, right id) within the piece */
            for (size_t b = a; b > first && (mg[b - 1].l > mg[b].l || (mg[b - 1].l == mg[b].l && mg[b - 1].r > mg[b].r));
                 b--) {
                SpmMerge x = mg[b];
                mg[b] = mg[b - 1];
                mg[b - 1] = x;
            }
    }
    for (size_t i = 0; i < n; i++) mg[i].order = (int32_t)i;
    qsort(mg, n, sizeof *mg, cmp_spm_merge);
    for (size_t i = 0; i < n; i++) {
        const char *a = t->str[mg[i].l], *b = t->str[mg[i].r];
        if (tok_merge(t, a, strlen(a), b, strlen(b))) goto fail;
    }
    free(mg);
    mg = NULL;
    if (tok_finish(t)) goto fail;
    guess_special_ids(t);
    return t;
oom:
    align_errorf("out of memory deriving merges for a vocabulary of %d pieces", n_tokens);
fail:
    free(mg);
    tok_free(t);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Export.                                                                   */

static cJSON *bytelevel_obj(int use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddFalseToObject(o, "add_prefix_space");
    cJSON_AddTrueToObject(o, "trim_offsets");
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

/* SentencePiece's normalizer, pre-tokenizer and decoder, in the form they
 * came in (Llama 2's normalizer, or Metaspace). */
static void spm_json(const Tokenizer *t, cJSON *root) {
    if (t->spm_metaspace) {
        cJSON_AddNullToObject(root, "normalizer");
        cJSON *m = typed("Metaspace");
        cJSON_AddStringToObject(m, "replacement", SPM_SPACE);
        cJSON_AddStringToObject(m, "prepend_scheme", t->spm_prepend == SPM_PREPEND_FIRST    ? "first"
                                                     : t->spm_prepend == SPM_PREPEND_ALWAYS ? "always"
                                                                                            : "never");
        cJSON_AddBoolToObject(m, "split", t->spm_split);
        cJSON_AddItemToObject(root, "pre_tokenizer", m);
    } else {
        cJSON *n = cJSON_AddObjectToObject(root, "normalizer");
        cJSON_AddStringToObject(n, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(n, "normalizers");
        if (t->spm_prepend == SPM_PREPEND_NORMALIZER) {
            cJSON *p = typed("Prepend");
            cJSON_AddStringToObject(p, "prepend", SPM_SPACE);
            cJSON_AddItemToArray(list, p);
        }
        cJSON *r = typed("Replace");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "pattern"), "String", " ");
        cJSON_AddStringToObject(r, "content", SPM_SPACE);
        cJSON_AddItemToArray(list, r);
        cJSON_AddNullToObject(root, "pre_tokenizer");
    }
    cJSON *d = typed("Sequence");
    cJSON *list = cJSON_AddArrayToObject(d, "decoders");
    cJSON *r = typed("Replace");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "pattern"), "String", SPM_SPACE);
    cJSON_AddStringToObject(r, "content", " ");
    cJSON_AddItemToArray(list, r);
    if (!t->spm_no_bytes) cJSON_AddItemToArray(list, typed("ByteFallback"));
    cJSON_AddItemToArray(list, typed("Fuse"));
    if (t->spm_prepend != SPM_PREPEND_NONE) {
        cJSON *s = typed("Strip");
        cJSON_AddStringToObject(s, "content", " ");
        cJSON_AddNumberToObject(s, "start", 1);
        cJSON_AddNumberToObject(s, "stop", 0);
        cJSON_AddItemToArray(list, s);
    }
    cJSON_AddItemToObject(root, "decoder", d);
}

char *tok_to_hf_json(const Tokenizer *t) {
    cJSON *root = cJSON_CreateObject();
    if (!root) goto oom;
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    int *order = malloc(((size_t)t->n_added + 1) * sizeof *order);
    if (!order) goto oom;
    for (int i = 0; i < t->n_added; i++) order[i] = i;
    for (int i = 1; i < t->n_added; i++)  /* by id, as tokenizers writes them */
        for (int j = i; j > 0 && t->added[order[j - 1]].id > t->added[order[j]].id; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    for (int i = 0; i < t->n_added; i++) {
        const AddedTok *a = &t->added[order[i]];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", a->id);
        cJSON_AddStringToObject(o, "content", a->content);
        cJSON_AddBoolToObject(o, "single_word", a->single_word);
        cJSON_AddBoolToObject(o, "lstrip", a->lstrip);
        cJSON_AddBoolToObject(o, "rstrip", a->rstrip);
        cJSON_AddBoolToObject(o, "normalized", a->normalized);
        cJSON_AddBoolToObject(o, "special", a->special);
        cJSON_AddItemToArray(added, o);
    }
    free(order);
    if (t->spm) {
        spm_json(t, root);
    } else if (t->nfc) {
        cJSON *n = cJSON_AddObjectToObject(root, "normalizer");
        cJSON_AddStringToObject(n, "type", "NFC");
    } else {
        cJSON_AddNullToObject(root, "normalizer");
    }
    /* A GPT-2 regex as the last step is ByteLevel's own regex. */
    int last_bl = t->n_steps > 0 && strcmp(t->steps[t->n_steps - 1].pattern, PAT_GPT2) == 0;
    if (t->spm) {
        /* written by spm_json */
    } else if (t->n_steps == 1 && last_bl) {
        cJSON_AddItemToObject(root, "pre_tokenizer", bytelevel_obj(1));
    } else {
        cJSON *seq = cJSON_AddObjectToObject(root, "pre_tokenizer");
        cJSON_AddStringToObject(seq, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(seq, "pretokenizers");
        for (int i = 0; i < t->n_steps - last_bl; i++) {
            const PreStep *s = &t->steps[i];
            cJSON *o = cJSON_CreateObject();
            if (s->digits) {
                cJSON_AddStringToObject(o, "type", "Digits");
                cJSON_AddBoolToObject(o, "individual_digits", strcmp(s->pattern, PAT_DIGIT) == 0);
            } else {
                cJSON_AddStringToObject(o, "type", "Split");
                cJSON *pat = cJSON_AddObjectToObject(o, "pattern");
                cJSON_AddStringToObject(pat, "Regex", s->pattern);
                cJSON_AddStringToObject(o, "behavior", "Isolated");
                cJSON_AddFalseToObject(o, "invert");
            }
            cJSON_AddItemToArray(list, o);
        }
        cJSON_AddItemToArray(list, bytelevel_obj(last_bl));
    }
    cJSON *post = t->post_processor ? cJSON_Parse(t->post_processor) : NULL;
    if (!post && t->spm) {
        post = cJSON_CreateNull();
    } else if (!post) {
        post = bytelevel_obj(1);
        cJSON_ReplaceItemInObjectCaseSensitive(post, "trim_offsets", cJSON_CreateFalse());
    }
    cJSON_AddItemToObject(root, "post_processor", post);
    if (!t->spm) cJSON_AddItemToObject(root, "decoder", bytelevel_obj(1));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    if (t->uni_score) {
        cJSON_AddStringToObject(model, "type", "Unigram");
        if (t->unk >= 0) cJSON_AddNumberToObject(model, "unk_id", t->unk);
        else cJSON_AddNullToObject(model, "unk_id");
        cJSON *v = cJSON_AddArrayToObject(model, "vocab");
        for (int i = 0; i < t->n_ids && t->str[i] && (t->flags[i] & ID_MODEL); i++) {
            cJSON *e = cJSON_CreateArray();
            cJSON_AddItemToArray(e, cJSON_CreateString(t->str[i]));
            cJSON_AddItemToArray(e, cJSON_CreateNumber(t->uni_score[i]));
            cJSON_AddItemToArray(v, e);
        }
        cJSON_AddBoolToObject(model, "byte_fallback", !t->spm_no_bytes);
        goto print;
    }
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    if (t->unk >= 0 && t->str[t->unk])
        cJSON_AddStringToObject(model, "unk_token", t->str[t->unk]);
    else
        cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddStringToObject(model, "continuing_subword_prefix", "");
    cJSON_AddStringToObject(model, "end_of_word_suffix", "");
    cJSON_AddBoolToObject(model, "fuse_unk", t->spm);
    cJSON_AddBoolToObject(model, "byte_fallback", t->spm && !t->spm_no_bytes);
    cJSON_AddBoolToObject(model, "ignore_merges", t->ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    /* Added tokens go into the vocabulary too, at their own ids, as real
     * tokenizer.json files have them: Hugging Face's tokenizers renumbers an
     * added token that is missing from model.vocab past the end of it. */
    for (int i = 0; i < t->n_ids; i++)
        if (t->str[i] && (t->flags[i] & ID_MODEL)) cJSON_AddItemToObject(vocab, t->str[i], cJSON_CreateNumber(i));
    for (int i = 0; i < t->n_ids; i++) /* few: a linear lookup each is fine */
        if (t->str[i] && (t->flags[i] & ID_ADDED) && !(t->flags[i] & ID_MODEL) &&
            !cJSON_GetObjectItemCaseSensitive(vocab, t->str[i]))
            cJSON_AddItemToObject(vocab, t->str[i], cJSON_CreateNumber(i));
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    int pairs = 0;  /* a token with a space cannot be written as "a b" */
    for (int i = 0; i < t->n_merges && !pairs; i++)
        pairs = strchr(t->str[t->merge_list[i][0]], ' ') || strchr(t->str[t->merge_list[i][1]], ' ');
    for (int i = 0; i < t->n_merges; i++) {
        const char *a = t->str[t->merge_list[i][0]], *b = t->str[t->merge_list[i][1]];
        if (pairs) {
            const char *ab[2] = {a, b};
            cJSON_AddItemToArray(merges, cJSON_CreateStringArray(ab, 2));
        } else {
            size_t la = strlen(a), lb = strlen(b);
            char stackbuf[256], *s = la + lb + 2 <= sizeof stackbuf ? stackbuf : malloc(la + lb + 2);
            if (!s) goto oom;
            memcpy(s, a, la);
            s[la] = ' ';
            memcpy(s + la + 1, b, lb + 1);
            cJSON_AddItemToArray(merges, cJSON_CreateString(s));
            if (s != stackbuf) free(s);
        }
    }
print:;
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!out) align_errorf("out of memory writing tokenizer.json");
    return out;
oom:
    cJSON_Delete(root);
    align_errorf("out of memory writing tokenizer.json");
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Encoding.                                                                 */

typedef struct {
    const Tokenizer *t;
    int32_t *v;
    int n, cap;
    pcre2_match_data *md[TOK_MAX_STEPS];
    int use_cache;
    char *scratch;  /* alphabet form of a piece, for ignore_merges */
    size_t scratch_cap;
} Enc;

static int enc_push(Enc *e, int32_t id) {
    if (e->n == e->cap) {
        int cap = e->cap ? e->cap * 2 : 256;
        int32_t *nv = realloc(e->v, (size_t)cap * sizeof *nv);
        if (!nv) return align_errorf("out of memory encoding text");
        e->v = nv;
        e->cap = cap;
    }
    e->v[e->n++] = id;
    return 0;
}

static int enc_reserve(Enc *e, size_t more) {
    if ((size_t)e->n + more <= (size_t)e->cap) return 0;
    size_t cap = e->cap ? (size_t)e->cap : 256;
    while (cap < (size_t)e->n + more) cap *= 2;
    if (cap > INT_MAX) return align_errorf("text encodes to more than 2^31 tokens");
    int32_t *nv = realloc(e->v, cap * sizeof *nv);
    if (!nv) return align_errorf("out of memory encoding text");
    e->v = nv;
    e->cap = (int)cap;
    return 0;
}

static int bpe_merge(Enc *e, size_t n);

/* BPE of one piece; appends its ids. */
static int bpe_piece(Enc *e, const uint8_t *p, size_t n) {
    const Tokenizer *t = e->t;
    if (enc_reserve(e, n)) return -1;
    int32_t *out = e->v + e->n;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[p[i]];
        if (id < 0) {
            if (t->unk < 0) return align_errorf("byte 0x%02x has no token in this vocabulary", p[i]);
            id = t->unk;
        }
        out[i] = id;
    }
    return bpe_merge(e, n);
}

/* Merges the n symbols at e->v + e->n by rank and appends the result. */
static int bpe_merge(Enc *e, size_t n) {
    const Tokenizer *t = e->t;
    int32_t *out = e->v + e->n;
    if (n <= BPE_SHORT) {
        /* rank[i]: rank of the pair (out[i], out[i+1]); merge the lowest, leftmost first */
        int32_t rank[BPE_SHORT], merged[BPE_SHORT];
        int m = (int)n;
        for (int i = 0; i + 1 < m; i++) rank[i] = pairmap_get(&t->merges, out[i], out[i + 1], &merged[i]);
        while (m > 1) {
            int best = -1;
            int32_t br = INT32_MAX;
            for (int i = 0; i + 1 < m; i++)
                if (rank[i] < br) {
                    br = rank[i];
                    best = i;
                }
            if (best < 0) break;
            out[best] = merged[best];
            for (int i = best + 1; i + 1 < m; i++) out[i] = out[i + 1];
            for (int i = best + 1; i + 2 < m; i++) {
                rank[i] = rank[i + 1];
                merged[i] = merged[i + 1];
            }
            m--;
            if (best > 0) rank[best - 1] = pairmap_get(&t->merges, out[best - 1], out[best], &merged[best - 1]);
            if (best + 1 < m) rank[best] = pairmap_get(&t->merges, out[best], out[best + 1], &merged[best]);
        }
        e->n += m;
        return 0;
    }
    /* Long piece: linked list of symbols, heap of candidate merges keyed by
     * (rank << 32 | position); an entry is stale when its pair has changed. */
    int *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
    uint64_t *heap = malloc(3 * n * sizeof *heap);
    if (!next || !prev || !heap) {
        free(next);
        free(prev);
        free(heap);
        return align_errorf("out of memory encoding a long piece");
    }
    size_t hn = 0;
#define HEAP_PUSH(x)                                                    \
    do {                                                                \
        size_t c_ = hn++;                                               \
        heap[c_] = (x);                                                 \
        while (c_ > 0 && heap[(c_ - 1) / 2] > heap[c_]) {               \
            uint64_t tmp_ = heap[c_];                                   \
            heap[c_] = heap[(c_ - 1) / 2];                              \
            heap[(c_ - 1) / 2] = tmp_;                                  \
            c_ = (c_ - 1) / 2;                                          \
        }                                                               \
    } while (0)
    int32_t mg;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (int)i + 1 : -1;
        prev[i] = (int)i - 1;
        if (i + 1 < n) {
            int32_t r = pairmap_get(&t->merges, out[i], out[i + 1], &mg);
            if (r != INT32_MAX) HEAP_PUSH(((uint64_t)(uint32_t)r << 32) | i);
        }
    }
    while (hn > 0) {
        uint64_t top = heap[0];
        heap[0] = heap[--hn];
        for (size_t c = 0;;) {
            size_t l = 2 * c + 1, r = l + 1, s = c;
            if (l < hn && heap[l] < heap[s]) s = l;
            if (r < hn && heap[r] < heap[s]) s = r;
            if (s == c) break;
            uint64_t tmp = heap[c];
            heap[c] = heap[s];
            heap[s] = tmp;
            c = s;
        }
        int pos = (int)(top & 0xffffffffu);
        int32_t rank = (int32_t)(top >> 32);
        if (out[pos] < 0 || next[pos] < 0) continue;
        int nx = next[pos];
        if (pairmap_get(&t->merges, out[pos], out[nx], &mg) != rank) continue;
        out[pos] = mg;
        out[nx] = -1;
        next[pos] = next[nx];
        if (next[nx] >= 0) prev[next[nx]] = pos;
        if (prev[pos] >= 0) {
            int32_t r = pairmap_get(&t->merges, out[prev[pos]], out[pos], &mg);
            if (r != INT32_MAX) HEAP_PUSH(((uint64_t)(uint32_t)r << 32) | (uint32_t)prev[pos]);
        }
        if (next[pos] >= 0) {
            int32_t r = pairmap_get(&t->merges, out[pos], out[next[pos]], &mg);
            if (r != INT32_MAX) HEAP_PUSH(((uint64_t)(uint32_t)r << 32) | (uint32_t)pos);
        }
    }
#undef HEAP_PUSH
    int m = 0;
    for (int i = 0; i >= 0; i = next[i]) out[m++] = out[i];
    e->n += m;
    free(next);
    free(prev);
    free(heap);
    return 0;
}

static int encode_piece(Enc *e, const uint8_t *p, size_t n) {
    Tokenizer *t = (Tokenizer *)e->t;  /* only the cache is written, under its lock */
    int cacheable = e->use_cache && n <= CACHE_MAX_PIECE;
    if (cacheable) {
        StrSlot *s = strmap_find(&t->cache, p, n, hash_bytes(p, n));
        if (s) {
            if (enc_reserve(e, (size_t)s->v2)) return -1;
            memcpy(e->v + e->n, t->cache_ids + s->v1, (size_t)s->v2 * sizeof(int32_t));
            e->n += s->v2;
            return 0;
        }
    }
    int start = e->n;
    int32_t whole = -1;
    if (t->ignore_merges && n > 1) {
        if (e->scratch_cap < 2 * n) {
            char *ns = realloc(e->scratch, 2 * n);
            if (!ns) return align_errorf("out of memory encoding text");
            e->scratch = ns;
            e->scratch_cap = 2 * n;
        }
        size_t an = bytes_to_alphabet(p, n, e->scratch);
        whole = vocab_lookup(t, e->scratch, an);
        if (whole >= 0 && !(t->flags[whole] & ID_MODEL)) whole = -1;
    }
    if (whole >= 0 ? enc_push(e, whole) : bpe_piece(e, p, n)) return -1;
    if (cacheable) {
        int k = e->n - start;
        if (t->cache.n >= CACHE_MAX_ENTRIES) {
            strmap_clear(&t->cache);
            t->cache_ids_len = 0;
        }
        if (t->cache_ids_len + (size_t)k > t->cache_ids_cap) {
            size_t cap = t->cache_ids_cap ? t->cache_ids_cap * 2 : 65536;
            int32_t *nc = realloc(t->cache_ids, cap * sizeof *nc);
            if (!nc) return 0;  /* the cache is an optimisation only */
            t->cache_ids = nc;
            t->cache_ids_cap = cap;
        }
        memcpy(t->cache_ids + t->cache_ids_len, e->v + start, (size_t)k * sizeof(int32_t));
        if (strmap_put(&t->cache, p, n, (int32_t)t->cache_ids_len, k) == 0) t->cache_ids_len += (size_t)k;
    }
    return 0;
}

static size_t utf8_next(const uint8_t *s, size_t i, size_t n) {
    i++;
    while (i < n && (s[i] & 0xC0) == 0x80) i++;
    return i;
}

/* Pre-tokenizer step k over text[a, b): each match and each gap between
 * matches goes on to step k + 1; after the last step a piece is encoded. */
static int pretok(Enc *e, int k, const uint8_t *text, size_t a, size_t b) {
    if (a >= b) return 0;
    const Tokenizer *t = e->t;
    if (k == t->n_steps) return encode_piece(e, text + a, b - a);
    const uint8_t *sub = text + a;
    size_t n = b - a, pos = 0, from = 0;
    pcre2_match_data *md = e->md[k];
    while (pos < n) {
        int rc = pcre2_match(t->steps[k].re, sub, n, from, 0, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return align_errorf("pre-tokenizer regex failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {  /* an empty match splits nothing */
            if (ms >= n) break;
            from = utf8_next(sub, ms, n);
            continue;
        }
        if (ms > pos && pretok(e, k + 1, text, a + pos, a + ms)) return -1;
        if (pretok(e, k + 1, text, a + ms, a + me)) return -1;
        pos = from = me;
    }
    return pretok(e, k + 1, text, a + pos, b);
}

/* SentencePiece BPE of one piece of normalized text ("▁" for spaces): one
 * symbol per character that is a model token, else its bytes' <0xXX>
 * tokens (all of them, or the unknown token for the character), runs of
 * unknown fused into one as `tokenizers` does (fuse_unk); then merges. */
static int spm_piece(Enc *e, const uint8_t *p, size_t n) {
    const Tokenizer *t = e->t;
    if (n == 0) return 0;
    if (enc_reserve(e, n)) return -1;
    int32_t *out = e->v + e->n;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t j = utf8_next(p, i, n);
        int32_t id = vocab_lookup(t, (const char *)p + i, j - i);
        if (id >= 0 && (t->flags[id] & ID_MODEL)) {
            out[m++] = id;
        } else {
            int all = 1;
            for (size_t k = i; k < j; k++) all &= t->byte_id[p[k]] >= 0;
            if (all) {
                for (size_t k = i; k < j; k++) out[m++] = t->byte_id[p[k]];
            } else if (t->unk < 0) {
                return align_errorf("character \"%.*s\" has no token and no byte tokens in this vocabulary",
                                    (int)(j - i), (const char *)p + i);
            } else if (m == 0 || out[m - 1] != t->unk) {
                out[m++] = t->unk;
            }
        }
        i = j;
    }
    return bpe_merge(e, m);
}

/* Unigram: the segmentation of highest total score (Viterbi over byte
 * positions, pieces tried shortest first, a later one winning only when
 * strictly better, as `tokenizers` does). A character no piece starts with
 * is the unknown token at lowest score - 10; runs of them are fused and
 * then given as their bytes' <0xXX> tokens under byte fallback. */
static int uni_piece(Enc *e, const uint8_t *p, size_t n) {
    const Tokenizer *t = e->t;
    if (n == 0) return 0;
    double *best = malloc((n + 1) * sizeof *best);
    int32_t *from = malloc((n + 1) * sizeof *from), *via = malloc((n + 1) * sizeof *via);
    if (!best || !from || !via) {
        free(best), free(from), free(via);
        return align_errorf("out of memory encoding text");
    }
    for (size_t i = 0; i <= n; i++) from[i] = -1;
    best[0] = 0.0;
    for (size_t s = 0; s < n; s = utf8_next(p, s, n)) {
        if (s > 0 && from[s] < 0) continue; /* not reached (inside an invalid sequence) */
        size_t ch = utf8_next(p, s, n) - s;
        int single = 0;
        for (size_t len = 1; len <= (size_t)t->uni_max_len && s + len <= n; len++) {
            int32_t id = vocab_lookup(t, (const char *)p + s, len);
            if (id < 0 || !(t->flags[id] & ID_MODEL)) continue;
            double c = best[s] + t->uni_score[id];
            if (from[s + len] < 0 || c > best[s + len]) best[s + len] = c, from[s + len] = (int32_t)s, via[s + len] = id;
            single |= len == ch;
        }
        if (!single) {
            double c = best[s] + t->uni_unk_score;
            if (from[s + ch] < 0 || c > best[s + ch]) best[s + ch] = c, from[s + ch] = (int32_t)s, via[s + ch] = -1;
        }
    }
    /* back from the end: (start, id) pairs in reverse into from/via order */
    int m = 0;
    for (size_t i = n; i > 0; i = (size_t)from[i]) m++;
    int32_t *st = malloc(sizeof(int32_t) * (size_t)(m + 1)), *id = malloc(sizeof(int32_t) * (size_t)(m + 1));
    int rc = 0;
    if (!st || !id) {
        rc = align_errorf("out of memory encoding text");
        goto done;
    }
    int k = m;
    for (size_t i = n; i > 0; i = (size_t)from[i]) st[--k] = from[i], id[k] = via[i];
    st[m] = (int32_t)n;
    for (int a = 0; a < m && rc == 0;) {
        if (id[a] >= 0) {
            rc = enc_push(e, id[a++]);
            continue;
        }
        int b = a;
        while (b < m && id[b] < 0) b++; /* fuse the unknown run [a, b) */
        const uint8_t *u = p + st[a];
        size_t ul = (size_t)(st[b] - st[a]);
        int32_t whole = vocab_lookup(t, (const char *)u, ul), all = !t->spm_no_bytes;
        for (size_t q = 0; q < ul; q++) all &= t->byte_id[u[q]] >= 0;
        if (whole >= 0 && (t->flags[whole] & ID_MODEL)) rc = enc_push(e, whole);
        else if (all)
            for (size_t q = 0; q < ul && rc == 0; q++) rc = enc_push(e, t->byte_id[u[q]]);
        else if (t->unk >= 0) rc = enc_push(e, t->unk);
        else rc = align_errorf("text \"%.*s\" has no piece, and the Unigram model no unknown token", (int)ul, u);
        a = b;
    }
done:
    free(best), free(from), free(via), free(st), free(id);
    return rc;
}

/* A stretch of text between added tokens: spaces become "▁", the dummy
 * prefix goes in front as spm_prepend says (first: the stretch starts the
 * text), and with Metaspace split each "▁" starts a new piece. */
static int spm_stretch(Enc *e, const uint8_t *text, size_t n, int first) {
    const Tokenizer *t = e->t;
    if (n == 0) return 0;
    int pre = t->spm_prepend == SPM_PREPEND_NORMALIZER ||
              ((t->spm_prepend == SPM_PREPEND_ALWAYS || (t->spm_prepend == SPM_PREPEND_FIRST && first)) &&
               text[0] != ' ' && !(n >= 3 && memcmp(text, SPM_SPACE, 3) == 0));
    size_t cap = 3 * n + 3, k = 0;
    if (e->scratch_cap < cap) {
        char *ns = realloc(e->scratch, cap);
        if (!ns) return align_errorf("out of memory encoding text");
        e->scratch = ns;
        e->scratch_cap = cap;
    }
    uint8_t *b = (uint8_t *)e->scratch;
    if (pre) memcpy(b, SPM_SPACE, 3), k = 3;
    for (size_t i = 0; i < n; i++)
        if (text[i] == ' ') memcpy(b + k, SPM_SPACE, 3), k += 3;
        else b[k++] = text[i];
    int (*piece)(Enc *, const uint8_t *, size_t) = t->uni_score ? uni_piece : spm_piece;
    if (!t->spm_split) return piece(e, b, k);
    size_t a = 0;
    for (size_t i = 3; i + 3 <= k; i++)
        if (memcmp(b + i, SPM_SPACE, 3) == 0) {
            if (piece(e, b + a, i - a)) return -1;
            a = i;
            i += 2;
        }
    return piece(e, b + a, k - a);
}

static int is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
static int is_word(uint8_t c) { return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'); }

/* Leftmost, then longest, added token in text[from, len). */
static int find_added(const Tokenizer *t, const uint8_t *text, size_t len, size_t from, int allow_special,
                      size_t *ms, size_t *me, int32_t *id) {
    uint8_t mask = allow_special ? 1 : 2;
    for (size_t i = from; i < len; i++) {
        if (!(t->first_byte[text[i]] & mask)) continue;
        for (int k = t->added_start[text[i]]; k < t->added_start[text[i] + 1]; k++) {
            const AddedTok *a = &t->added[t->added_order[k]];
            if (a->special && !allow_special) continue;
            if (a->len > len - i || memcmp(text + i, a->content, a->len) != 0) continue;
            size_t s = i, end = i + a->len;
            if (a->single_word && ((s > from && is_word(text[s - 1])) || (end < len && is_word(text[end]))))
                continue;
            if (a->lstrip)
                while (s > from && is_ws(text[s - 1])) s--;
            if (a->rstrip)
                while (end < len && is_ws(text[end])) end++;
            *ms = s;
            *me = end;
            *id = a->id;
            return 1;
        }
    }
    return 0;
}

int tok_encode(const Tokenizer *t, const char *text, size_t len, int allow_special, int32_t **ids, int *n_ids) {
    Enc e = {.t = t};
    *ids = NULL;
    *n_ids = 0;
    int rc = -1;
    for (int k = 0; k < t->n_steps; k++) {
        e.md[k] = pcre2_match_data_create(1, NULL);
        if (!e.md[k]) {
            align_errorf("out of memory encoding text");
            goto done;
        }
    }
    Tokenizer *mt = (Tokenizer *)t;
    e.use_cache = pthread_mutex_trylock(&mt->cache_lock) == 0;
    const uint8_t *s = (const uint8_t *)text;
    size_t pos = 0, ms, me;
    int32_t id;
    while (pos < len) {
        size_t end = len;
        int found = t->n_added && find_added(t, s, len, pos, allow_special, &ms, &me, &id);
        if (found) end = ms;
        if (t->spm ? spm_stretch(&e, s + pos, end - pos, pos == 0) : pretok(&e, 0, s, pos, end)) goto unlock;
        if (found && enc_push(&e, id)) goto unlock;
        pos = found ? me : len;
    }
    rc = 0;
unlock:
    if (e.use_cache) pthread_mutex_unlock(&mt->cache_lock);
done:
    for (int k = 0; k < t->n_steps; k++) pcre2_match_data_free(e.md[k]);
    free(e.scratch);
    if (rc) {
        free(e.v);
        return -1;
    }
    if (!e.v) e.v = malloc(sizeof(int32_t));  /* empty text: a valid, empty array */
    if (!e.v) return align_errorf("out of memory encoding text");
    *ids = e.v;
    *n_ids = e.n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Decoding and lookups.                                                     */

char *tok_decode(const Tokenizer *t, const int32_t *ids, int n_ids, size_t *len) {
    size_t total = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->str[ids[i]]) {
            align_errorf("token id %d at position %d is not in the vocabulary (size %d)", (int)ids[i], i, t->n_ids);
            return NULL;
        }
        total += t->blen[ids[i]];
    }
    char *out = malloc(total + 1);
    if (!out) {
        align_errorf("out of memory decoding %d tokens", n_ids);
        return NULL;
    }
    size_t o = 0;
    for (int i = 0; i < n_ids; i++) {
        memcpy(out + o, t->bytes + t->boff[ids[i]], t->blen[ids[i]]);
        o += t->blen[ids[i]];
    }
    /* SentencePiece's decoder drops the dummy prefix: one leading space
     * (Strip(" ", 1, 0) in tokenizer.json), so decode(encode(s)) == s */
    if (t->spm && t->spm_prepend != SPM_PREPEND_NONE && o > 0 && out[0] == ' ') {
        memmove(out, out + 1, o - 1);
        o--;
    }
    out[o] = 0;
    if (len) *len = o;
    return out;
}

int tok_vocab_size(const Tokenizer *t) { return t->n_ids; }

int32_t tok_token_id(const Tokenizer *t, const char *token) {
    return vocab_lookup(t, token, strlen(token));
}

const char *tok_token_str(const Tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids ? t->str[id] : NULL;
}

int32_t tok_bos_id(const Tokenizer *t) { return t->bos; }
int32_t tok_eos_id(const Tokenizer *t) { return t->eos; }
int32_t tok_pad_id(const Tokenizer *t) { return t->pad; }

void tok_set_special_ids(Tokenizer *t, int32_t bos, int32_t eos, int32_t pad) {
    t->bos = bos;
    t->eos = eos;
    t->pad = pad;
}

TokPretok tok_pretok(const Tokenizer *t) { return t->pre; }

int tok_pretok_from_name(const char *name, TokPretok *out) {
    static const struct {
        const char *name;
        TokPretok pre;
    } names[] = {{"gpt-2", TOK_PRE_GPT2},      {"gpt2", TOK_PRE_GPT2},       {"default", TOK_PRE_GPT2},
                 {"llama-bpe", TOK_PRE_LLAMA3}, {"llama3", TOK_PRE_LLAMA3},   {"llama-v3", TOK_PRE_LLAMA3},
                 {"qwen2", TOK_PRE_QWEN2},      {"smollm", TOK_PRE_SMOLLM}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].pre;
            return 0;
        }
    return align_errorf("pre-tokenizer \"%s\" is not supported (gpt-2, llama-bpe, qwen2, smollm)", name);
}

const char *tok_pretok_name(TokPretok pre) {
    switch (pre) {
    case TOK_PRE_GPT2: return "gpt-2";
    case TOK_PRE_LLAMA3: return "llama-bpe";
    case TOK_PRE_QWEN2: return "qwen2";
    case TOK_PRE_SMOLLM: return "smollm";
    }
    return "gpt-2";
}

int tok_is_special(const Tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & ID_SPECIAL) != 0;
}

int tok_token_bytes(const Tokenizer *t, int32_t id, const char **bytes, size_t *len) {
    if (id < 0 || id >= t->n_ids || !t->str[id])
        return align_errorf("token id %d is not in the vocabulary (size %d)", (int)id, t->n_ids);
    *bytes = t->bytes + t->boff[id];
    *len = t->blen[id];
    return 0;
}

/* ------------------------------------------------------------ BOS */

int tok_add_bos(const Tokenizer *t) { return t->add_bos && t->bos >= 0; }

/* transformers' update_post_processor: "<bos>:0 $A:0" and "<bos>:0 $A:0
 * <bos>:1 $B:1", the BOS named in special_tokens with its id. */
static cJSON *bos_template(const Tokenizer *t) {
    const char *bos = t->str[t->bos];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "TemplateProcessing");
    const char *keys[] = {"single", "pair"};
    for (int k = 0; k < 2; k++) {
        cJSON *list = cJSON_AddArrayToObject(o, keys[k]);
        for (int part = 0; part <= k; part++) {
            cJSON *sp = cJSON_CreateObject(), *in = cJSON_AddObjectToObject(sp, "SpecialToken");
            cJSON_AddStringToObject(in, "id", bos);
            cJSON_AddNumberToObject(in, "type_id", part);
            cJSON *sq = cJSON_CreateObject(), *sin = cJSON_AddObjectToObject(sq, "Sequence");
            cJSON_AddStringToObject(sin, "id", part ? "B" : "A");
            cJSON_AddNumberToObject(sin, "type_id", part);
            cJSON_AddItemToArray(list, sp);
            cJSON_AddItemToArray(list, sq);
        }
    }
    cJSON *spec = cJSON_AddObjectToObject(o, "special_tokens"), *e = cJSON_AddObjectToObject(spec, bos);
    cJSON_AddStringToObject(e, "id", bos);
    cJSON_AddItemToObject(e, "ids", cJSON_CreateIntArray((const int[]){t->bos}, 1));
    cJSON_AddItemToObject(e, "tokens", cJSON_CreateStringArray(&bos, 1));
    return o;
}

/* Drops every part of a post-processor that adds a leading special token;
 * returns the rest (NULL when nothing is left). */
static cJSON *post_without_bos(const Tokenizer *t, cJSON *pp) {
    if (!pp || post_first_special(t, pp) < 0) return pp;
    if (!json_str_is(pp, "type", "Sequence")) {
        cJSON_Delete(pp);
        return NULL;
    }
    cJSON *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
    for (int i = cJSON_GetArraySize(list) - 1; i >= 0; i--)
        if (post_first_special(t, cJSON_GetArrayItem(list, i)) >= 0) cJSON_DeleteItemFromArray(list, i);
    return pp;
}

/* The flag and the post-processor move together, so the tokenizer.json that
 * travels in a .ckpt, an HF export or a GGUF says what the model was given
 * (GGUF's add_bos_token, tokenizer_config.json's add_bos_token). */
int tok_set_add_bos(Tokenizer *t, int on) {
    if (on && t->bos < 0) return align_errorf("the tokenizer adds BOS but has no BOS token");
    cJSON *pp = t->post_processor ? cJSON_Parse(t->post_processor) : NULL;
    if (on && pp && post_first_special(t, pp) == t->bos) { /* already says so */
        cJSON_Delete(pp);
        t->add_bos = 1;
        return 0;
    }
    pp = post_without_bos(t, pp);
    if (on) {
        if (!pp && !t->spm) { /* keep byte-level BPE's ByteLevel step, as tok_to_hf_json would write it */
            pp = bytelevel_obj(1);
            cJSON_ReplaceItemInObjectCaseSensitive(pp, "trim_offsets", cJSON_CreateFalse());
        }
        if (!pp) {
            pp = bos_template(t);
        } else if (json_str_is(pp, "type", "Sequence")) {
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(pp, "processors"), bos_template(t));
        } else {
            cJSON *seq = cJSON_CreateObject(), *list;
            cJSON_AddStringToObject(seq, "type", "Sequence");
            list = cJSON_AddArrayToObject(seq, "processors");
            cJSON_AddItemToArray(list, pp);
            cJSON_AddItemToArray(list, bos_template(t));
            pp = seq;
        }
    }
    char *text = pp ? cJSON_PrintUnformatted(pp) : NULL;
    cJSON_Delete(pp);
    if (pp && !text) return align_errorf("out of memory for the tokenizer's post-processor");
    free(t->post_processor);
    t->post_processor = text;
    t->add_bos = on;
    return 0;
}

/* A BOS written at the very start of the text counts as the BOS (never two),
 * as llama.cpp warns about and transformers users strip by hand. */
int tok_encode_start(const Tokenizer *t, const char *text, size_t len, int allow_special, int32_t **ids,
                     int *n_ids) {
    if (!tok_add_bos(t)) return tok_encode(t, text, len, allow_special, ids, n_ids);
    const char *bos = NULL;
    size_t blen = 0;
    if (tok_token_bytes(t, t->bos, &bos, &blen)) blen = 0;
    size_t skip = blen && len >= blen && !memcmp(text, bos, blen) ? blen : 0;
    int32_t *rest = NULL;
    int n = 0;
    if (tok_encode(t, text + skip, len - skip, allow_special, &rest, &n)) return -1;
    int32_t *out = malloc(((size_t)n + 1) * sizeof *out);
    if (!out) {
        free(rest);
        return align_errorf("out of memory encoding text");
    }
    out[0] = t->bos;
    if (n) memcpy(out + 1, rest, (size_t)n * sizeof *out);
    free(rest);
    *ids = out;
    *n_ids = n + 1;
    return 0;
}
