/* kvcache: incremental decoding with a key/value cache.
 *
 * A cache has n_slots sequence slots of up to max_len tokens each, per
 * layer: keys and values of every token already seen, so each new token
 * costs one pass over the weights instead of a forward over the whole
 * prefix. model_forward_cached appends tokens to several slots in one call
 * (a prefill of whole prompts, or one token per sequence while decoding, or
 * a mix), packed exactly like a training Batch, and returns the logits of
 * each sequence's last new token. Inference only: nothing is kept for a
 * backward pass. Logits equal those of a full model_forward over the same
 * tokens (tests/test_kvcache.c). */
#ifndef ALIGN_KVCACHE_H
#define ALIGN_KVCACHE_H

#include "model.h"

typedef struct KVCache KVCache;

KVCache *kvcache_create(Model *m, int n_slots, int max_len);
void kvcache_free(KVCache *kv);
/* Forget a slot's tokens (start a new sequence there). */
void kvcache_reset(KVCache *kv, int slot);
/* Make slot dst hold the first len tokens of slot src (a shared prompt:
 * several samples of one prompt prefill it once). dst's own tokens are
 * dropped. Fails with an error for a bad slot or len > src's length. */
int kvcache_copy_prefix(KVCache *kv, int dst, int src, int len);
int kvcache_len(const KVCache *kv, int slot);
int kvcache_max_len(const KVCache *kv);

/* Append b's sequences to slots[s] (distinct slots) and write the logits of
 * each sequence's last token to last_logits[n_seqs, vocab] (host). Fails
 * with an error, changing nothing, when a slot would overflow max_len. */
int model_forward_cached(Model *m, KVCache *kv, const int32_t *slots, const Batch *b,
                         float *last_logits);

#endif
