/* generate: batched sampling over a KV cache with continuous batching.
 *
 * The caller hands over prompts (token ids) and asks for n samples of each;
 * generate_run keeps up to n_slots sequences in flight in one KVCache. Every
 * step is ONE model_forward_cached call whose packed batch mixes the prompt
 * tokens of newly admitted sequences (prefill, in chunks of at most
 * prefill_chunk tokens per step) with one token for each running sequence
 * (decode); a sequence that finishes frees its slot and the next waiting
 * one is admitted at the next step, so slots never idle while work is
 * waiting and no compute is spent on padding.
 *
 * Samples of one prompt share its prefill: one sample reads the prompt, the
 * others copy its cached keys and values (all but the last prompt token,
 * which each feeds itself to get its own first logits).
 *
 * Reproducibility: sequence (prompt i, sample j) draws from its own Rng,
 * seeded from (seed, prompt_index_base + i, j) alone, so its tokens do not depend on the batch
 * size, the slot it lands in, or which other prompts run beside it (up to
 * the floating-point effect of batch shape on the logits, which only
 * matters at an exact tie).
 *
 * Output per sequence: generated ids, the log-prob of each under the
 * unmodified model distribution (see sampler.h), and why it stopped:
 * GEN_FINISH_STOP (a stop id was generated — it is included in the output,
 * as PPO needs its log-prob — or the callback asked to stop) or
 * GEN_FINISH_LENGTH (max_new_tokens, or the cache slot is full).
 *
 * The per-token callback runs on the calling thread, in a deterministic
 * order (step by step, sequences in admission order): programs stream text
 * with it and test for stop strings; returning nonzero ends that sequence.
 *
 * Usage (PPO rollout):
 *   GenConfig gc; generate_config_defaults(&gc);
 *   gc.max_new_tokens = 128; gc.temperature = 1; gc.seed = step;
 *   gc.stop_ids = &eos; gc.n_stop_ids = 1;
 *   GenOutput *out = calloc(n_prompts * gc.n_samples, sizeof *out);
 *   generate_run(model, &gc, prompts, n_prompts, out, NULL, NULL);
 *   ... out[i * n_samples + j] ...
 *   generate_outputs_free(out, n_prompts * gc.n_samples); */
#ifndef ALIGN_GENERATE_H
#define ALIGN_GENERATE_H

#include <stdint.h>

#include "kvcache.h"
#include "model.h"
#include "sampler.h"

typedef enum { GEN_FINISH_NONE = 0, GEN_FINISH_STOP = 1, GEN_FINISH_LENGTH = 2 } GenFinish;

typedef struct {
    SamplerConfig sampler;  /* temperature (0 = greedy), top_k, top_p */
    int max_new_tokens;     /* > 0 */
    int n_samples;          /* samples per prompt, >= 1 */
    uint64_t seed;
    /* Sequence (prompt i, sample j) is seeded as prompt prompt_index_base + i,
     * so a stream of prompts run in chunks draws what one call would. */
    long prompt_index_base;
    const int32_t *stop_ids;/* generating one of these ends the sequence */
    int n_stop_ids;
    int n_slots;            /* sequences in flight (KV-cache slots) */
    int prefill_chunk;      /* most prompt tokens fed per step (all sequences) */
    /* Optional: a cache to reuse across calls (PPO rollouts call every
     * step), with at least n_slots slots; a sequence that fills its slot
     * ends with GEN_FINISH_LENGTH. NULL: generate_run makes one of
     * min(n_slots, sequences) x (longest prompt + max_new_tokens) and
     * frees it. */
    KVCache *cache;
} GenConfig;

typedef struct {
    const int32_t *tokens;
    int n_tokens;           /* >= 1 */
} GenPrompt;

typedef struct {
    int prompt_index, sample_index;
    int32_t *tokens;        /* generated ids (malloc'd) */
    float *logprobs;        /* log p(token | prefix), raw model distribution */
    int n_tokens;
    GenFinish finish;
    int prefilled;          /* prompt tokens run through the model for this
                               sequence; the rest were copied from another
                               sample of the same prompt (n_samples > 1) */
} GenOutput;

/* Called once per generated token (seq->tokens/logprobs already hold it, as
 * seq->n_tokens - 1). Return nonzero to stop this sequence (finish = STOP). */
typedef int (*GenTokenFn)(void *ctx, const GenOutput *seq);

/* Defaults: greedy off (temperature 1, no top-k/top-p), max_new_tokens 256,
 * 1 sample, seed 0, no stop ids, 8 slots, prefill_chunk 512. */
void generate_config_defaults(GenConfig *c);

/* Generate n_samples completions of each prompt. out must hold
 * n_prompts * n_samples entries; out[i * n_samples + j] is sample j of
 * prompt i (filled even on error, where generate_outputs_free still works).
 * cb may be NULL. Returns 0, or -1 with an error (a bad config, a prompt
 * that does not fit the cache, a failed forward). */
int generate_run(Model *m, const GenConfig *c, const GenPrompt *prompts, int n_prompts,
                 GenOutput *out, GenTokenFn cb, void *cb_ctx);

void generate_outputs_free(GenOutput *out, int n);

/* "stop", "length" (and "none" for an unfinished sequence). */
const char *generate_finish_name(GenFinish f);

/* The seed of sequence (prompt i, sample j)'s Rng: a splitmix64 hash of the
 * three numbers, exposed so tests and other stages can reproduce a draw. */
uint64_t generate_sequence_seed(uint64_t seed, long prompt_index, int sample_index);

#endif
