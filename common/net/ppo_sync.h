/* ppo_sync: the weights the policy process pushes to the rollout workers
 * after each update (docs/PROTOCOL.md, "weights_raw"), and the LoRA setup
 * both ends share.
 *
 * What travels. With full fine-tuning, the actor's whole flat parameter
 * buffer (540 MB for SmolLM2-135M); with LoRA, only the adapters (A and B
 * of every adapted linear, in table order: model_lora_get's buffer, a few
 * MB), because the base is frozen and every rollout worker loaded the same
 * base and attached the same LoRA config at setup; with prompt or prefix
 * tuning, only the virtual tokens (kind "prompt", a few KB) likewise. A restarted worker loads
 * the base itself from the same --policy file, so adapters alone are
 * always enough; a fingerprint of the base in every adapter message makes a
 * worker set up from another model refuse instead of sampling from a
 * mixture.
 *
 * How. The header is a small msgpack body; the floats are one raw ZeroMQ
 * attachment frame (wire_send_attached), sent zero-copy from the model's
 * own host buffer and copied once on arrival, straight from ZeroMQ's
 * receive buffer into the model's parameters. Everything about the frame is
 * checked against the receiving model (kind, dtype, element count, frame
 * size, LoRA config, base fingerprint) before a byte of it is applied.
 *
 * This file depends on align_core alone: rollout_worker compiles it in
 * directly, as it does ppo_service.c. */
#ifndef ALIGN_PPO_SYNC_H
#define ALIGN_PPO_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "lora.h"
#include "model.h"
#include "prompt_learning.h"
#include "wire.h"

/* PPO_SYNC_PROMPT: the virtual tokens of prompt or prefix tuning alone
 * (prompt_learning.h), one tensor of a few KB, checked like adapters. */
typedef enum { PPO_SYNC_FULL = 0, PPO_SYNC_LORA = 1, PPO_SYNC_PROMPT = 2 } PpoSyncKind;

const char *ppo_sync_kind_name(PpoSyncKind k); /* "full", "lora", "prompt" */

/* ---- LoRA in setup requests (policy and rollout workers alike) ---- */

/* lora_rank, lora_alpha, lora_dropout, lora_targets (LORA_T_* bits) and,
 * when adapter_dir is set, lora_adapter (a peft directory to start from). */
int ppo_lora_put(WireWriter *w, const LoraConfig *c, const char *adapter_dir);
/* Attach what a setup request asks for: 1 attached, 0 none asked, -1 on
 * error. seed: A's init (as trainer_setup_peft: the run's seed). */
int ppo_lora_setup(Model *m, const WireMsg *setup, uint64_t seed);

/* ---- prompt / prefix tuning in setup requests ---- */

/* virtual_kind ("prompt" or "prefix"), num_virtual_tokens,
 * prefix_projection (when set) and, for a prompt-tuning TEXT init,
 * prompt_init_ids (the text's token ids). */
int ppo_prompt_put(WireWriter *w, PromptKind kind, int n_virtual, int projection, const int32_t *init_ids, int n_init);
/* Attach what a setup request asks for (or keep the same virtual tokens a
 * loaded --resume .ckpt carried): 1 attached, 0 none asked, -1 on error
 * (also when the model carries virtual tokens the request does not name). */
int ppo_prompt_setup(Model *m, const WireMsg *setup, uint64_t seed);
/* The setup's batch_invariant field (1: --batch-invariant): switches the
 * CPU backend's batch-invariant mode (backend.h) on or off for this
 * process, so the rollout's sampled log-probs and the policy's recomputed
 * ones are bit-identical. -1 with an error when asked for on another
 * backend. */
int ppo_set_batch_invariant(const Model *m, const WireMsg *setup);

/* A fingerprint of the frozen base: every non-adapter tensor's name and
 * size and a strided sample of its values (cheap; different checkpoints
 * differ nearly everywhere). 0 on error. */
uint64_t ppo_base_fingerprint(Model *m);

/* ---- the sender (policy process) ---- */

typedef struct {
    PpoSyncKind kind;
    const float *data; /* host, little-endian f32 */
    size_t numel;
    float *owned;      /* align_alloc'd copy behind data, or NULL (data is m->params) */
} PpoSyncPayload;

/* What m would send now: its adapters when LoRA is attached, else all of
 * its parameters (in place on a CPU model). Release with
 * ppo_sync_payload_free once nothing reads data any more. */
int ppo_sync_payload(Model *m, PpoSyncPayload *p);
void ppo_sync_payload_free(PpoSyncPayload *p);
/* The "weights_raw" header for p (id not included): version, kind, dtype,
 * numel, n_params, attachments = 1, and for adapters the LoRA config and
 * the base fingerprint base_fp. */
WireWriter *ppo_sync_header(const Model *m, const PpoSyncPayload *p, int64_t version, uint64_t base_fp);

/* ---- the receiver (rollout worker) ---- */

/* Check a "weights_raw" header and its attachment (data, len: NULL/0 when
 * the message had none) against m, then copy the floats into m. base_fp:
 * the fingerprint of m's base (checked for adapters). On success *version
 * is the header's; on failure m is untouched and the error names the
 * field. */
int ppo_sync_apply(Model *m, uint64_t base_fp, const WireMsg *hdr, const void *data, size_t len, int64_t *version);

#endif
