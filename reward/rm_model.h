/* rm_model: a reward model is the decoder with a scalar score head and no
 * LM head; its score of a sequence is the head's value at the sequence's
 * LAST token.
 *
 * Shape. rm_from_base turns any loaded model (a causal LM from a .ckpt,
 * .gguf or Hugging Face directory) into a reward model: value_head = 1
 * (`score.weight` [1, dim], the name LlamaForSequenceClassification,
 * Qwen2ForSequenceClassification and GPT2ForSequenceClassification use, so
 * an export loads in transformers as a sequence classifier with
 * num_labels = 1) and lm_head = 0. The LM head is dropped on purpose: a
 * reward model never produces logits, the head is the largest single matrix
 * of a small model (49152 x 576 for SmolLM2-135M), and a classifier export
 * must not carry it. Every shared tensor is copied by name; score.weight is
 * kept when the base has one, else drawn from N(0, 1/(dim+1)) (std
 * 1/sqrt(dim+1), TRL's value-head init), deterministic in the seed.
 *
 * Last token. Batches are packed with no padding, so the last real token of
 * sequence i is seq_start[i+1] - 1: a score can never be read at a pad
 * position (the padding-side bug docs/REFERENCE.md lists).
 *
 * Batching. Scoring packs whole sequences into forwards of at most
 * max_batch_tokens tokens (a longer sequence goes alone). Attention never
 * crosses a sequence boundary, so a score does not depend on what else was
 * in its batch beyond float rounding of the shared matmuls. */
#ifndef ALIGN_RM_MODEL_H
#define ALIGN_RM_MODEL_H

#include <stdint.h>

#include "dataset.h"
#include "metrics.h"
#include "model.h"
#include "rm_loss.h"

/* 1 when the config is a reward model already (value head, no LM head). */
int rm_is_reward_model(const ModelConfig *c);

/* A new reward model built from base (on base's backend); base is left
 * untouched (the caller frees it). When base is a reward model already,
 * *out = base and nothing is copied. */
int rm_from_base(Model *base, uint64_t seed, Model **out);

/* Forward of one packed batch; scores[s] = value at the last token of
 * sequence s (b->n_seqs floats). */
int rm_score_batch(Model *m, const Batch *b, float *scores);

/* Score n sequences (prompt + completion each) in forwards of at most
 * max_batch_tokens tokens; scores[i] for seqs[i]. */
int rm_score_seqs(Model *m, const DsSeq *seqs, int n, int max_batch_tokens, float *scores);

/* One training micro-batch of n preference pairs: pairs[2i] chosen,
 * pairs[2i+1] rejected, packed into ONE forward with each pair's prompt
 * computed once (seq_pack_pairs); Bradley-Terry loss (rm_loss) times scale
 * backpropagated from the two last-token values of each pair when
 * train = 1. margins may be NULL. Metrics into acc; the scores into
 * scores_out[2n] when non-NULL. Returns the pairs' tokens or -1. */
long rm_pairs_step(const RmLossConfig *cfg, Model *m, const DsSeq *pairs, const float *margins, int n,
                   float scale, int train, Metrics *acc, float *scores_out);

#endif
