/* rm_proto: the reward service's messages (docs/PROTOCOL.md, "reward").
 *
 * A "score" request names its sequences in one of three forms:
 *   tokens   "tokens" i32 [N] + "offsets" [B+1] (ragged), optionally with
 *            "prompt_tokens" + "prompt_offsets" [B+1]: sequence i is then
 *            prompt_i followed by tokens_i (a PPO rollout as it comes);
 *   texts    "texts": [B strings], whole sequences (OpenRLHF's "query":
 *            prompt + response with the chat markup already in it); special
 *            token strings in them become their ids, as HF tokenizers do;
 *   split    "prompts" + "responses": [B strings] each, rendered through
 *            the model's chat template exactly as rm_train renders a
 *            {prompt, completion} record (content is plain text, the
 *            completion ends with the end-of-turn token).
 * The reply is {"op": "scores", "scores": f32 [B]} in request order, with
 * the request's "id" echoed. Decoding validates everything a peer controls:
 * token ids against the vocabulary, sequence lengths against the model,
 * sizes against the server's limits. */
#ifndef ALIGN_RM_PROTO_H
#define ALIGN_RM_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "tokenizer.h"
#include "wire.h"

typedef struct {
    int vocab_size;        /* token ids must be in [0, vocab_size) */
    int max_seq_len;       /* longest sequence (prompt + response); 0 = no limit */
    long max_tokens;       /* tokens of one request */
    int max_seqs;          /* sequences of one request */
    WireLimits wire;
} RmProtoLimits;

typedef struct {
    int has_id;
    uint64_t id;
    int n_seqs;
    /* sequence i is prompt[poff[i]..poff[i+1]) then resp[roff[i]..roff[i+1]);
     * prompt/poff are NULL when the request had no split */
    int32_t *prompt, *resp;
    int64_t *poff, *roff;
    long n_tokens;
} RmRequest;

/* The "id" of any message, when it has a valid one (for error replies). */
int rm_proto_get_id(const WireMsg *m, uint64_t *id);

/* Decode a "score" request. tok may be NULL (then only the tokens form is
 * served). Returns 0, or -1 with a sentence for the error reply; *code is
 * set to "bad_request", "too_large" (the request is over a per-request
 * limit: split it), "too_long" (one sequence is longer than max_seq_len:
 * no split helps) or "no_tokenizer". */
int rm_request_decode(const WireMsg *m, const Tokenizer *tok, ChatTemplate tmpl, const RmProtoLimits *lim,
                      RmRequest *out, const char **code);
void rm_request_free(RmRequest *r);
/* Length of sequence i. */
static inline long rm_request_len(const RmRequest *r, int i) {
    return (r->poff ? r->poff[i + 1] - r->poff[i] : 0) + (r->roff[i + 1] - r->roff[i]);
}

/* Offset of the first byte of s[0..n) that does not begin a well-formed
 * UTF-8 sequence (RFC 3629: no overlong forms, surrogates or code points
 * past U+10FFFF), or -1 when all of it is UTF-8. Text fields ("texts",
 * "prompts", "responses"; HTTP's "query") are refused with bad_request
 * naming the field and index when it is >= 0. */
long rm_proto_utf8_invalid(const char *s, size_t n);

/* {"op":"scores","v","scores": f32 [n][,"id"]} (malloc'd). */
int rm_reply_scores(int has_id, uint64_t id, const float *scores, int n, void **data, size_t *len);

#endif
