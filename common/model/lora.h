/* lora: low-rank adapters on the decoder's linear layers (Hu et al., as the
 * `peft` library implements them).
 *
 * An adapted linear computes y = x W^T + (alpha/r) * dropout(x) A^T B^T
 * with A [r, in] (kaiming-uniform, as peft) and B [out, r] (zero), so a
 * fresh adapter leaves the model unchanged. A and B are ordinary tensors
 * appended to the model's parameter table under PEFT's names
 * (`base_model.model.<HF module>.lora_A.weight`), so they live in the flat
 * parameter and gradient buffers: AdamW, clipping, checkpoints with moments
 * and --resume need nothing special. Attaching freezes every base tensor.
 *
 * Targets are HF module names: q_proj, k_proj, v_proj, o_proj, gate_proj,
 * up_proj, down_proj (Llama family). Members of a fused projection get one
 * adapter each, writing their own column slice of the fused output. GPT-2's
 * c_attn is one module (one adapter over q|k|v); its names map so:
 * q_proj/k_proj/v_proj/c_attn -> attn.c_attn, o_proj -> attn.c_proj,
 * gate_proj/up_proj/c_fc -> mlp.c_fc, down_proj -> mlp.c_proj, and c_proj
 * means both c_proj modules (peft's suffix match). Phi-3 likewise (its
 * files fuse them, so peft adapts them whole): q_proj/k_proj/v_proj/qkv_proj
 * -> self_attn.qkv_proj, gate_proj/up_proj/gate_up_proj -> mlp.gate_up_proj.
 *
 * Cost per adapted linear: two thin matmuls forward (x A^T, then h B^T
 * accumulated into the base output), four backward; the saved activation is
 * h (N x r). Dropout masks are a pure function of (seed, training key,
 * forward count, layer, adapter, element) and are recomputed in backward,
 * so they cost no memory and a resumed run draws the same masks; dropout is
 * applied only in training mode (model_lora_train_mode), and with p = 0 it
 * is skipped entirely.
 *
 * model_lora_enable(m, 0) turns the adapters off: the same model then gives
 * the base model's outputs bit for bit (the base matmuls are untouched), the
 * DPO/PPO reference without a second copy of the weights. Merge adds
 * (alpha/r) B A into fp32 base weights (unmerge subtracts it); a quantised
 * base cannot be merged in place, but model_export_copy builds the merged
 * fp32 model for export from either. */
#ifndef ALIGN_LORA_H
#define ALIGN_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

enum {
    LORA_T_Q = 1, LORA_T_K = 2, LORA_T_V = 4, LORA_T_O = 8,
    LORA_T_GATE = 16, LORA_T_UP = 32, LORA_T_DOWN = 64,
    LORA_T_ALL = 127
};

/* The adapter family sharing this plumbing (attach, on/off, flat get/set,
 * checkpoints, export): LoRA; DoRA (Liu et al. 2024, peft's use_dora): LoRA
 * plus a trainable magnitude per output row, W' = m (W + s B A) / ||W + s B A||
 * with the row norm detached in backward as peft does (dora.c); IA3 (Liu et
 * al. 2022, peft's IA3Config): a trainable vector, initialised to 1, scaling
 * the output of k/v (GPT-2: c_attn) and the input of the MLP's down
 * projection (ia3.c). rank, alpha and dropout do not apply to IA3. DoRA and
 * IA3 run on the CPU backend. */
typedef enum { LORA_METHOD_LORA = 0, LORA_METHOD_DORA = 1, LORA_METHOD_IA3 = 2 } LoraMethod;

typedef struct {
    int method;        /* LoraMethod */
    int rank;          /* r > 0 */
    float alpha;       /* scale = alpha / r */
    float dropout;     /* probability in [0, 1) */
    unsigned targets;  /* LORA_T_* bits */
    uint64_t seed;     /* A's init and the dropout masks */
} LoraConfig;

/* TRL's ModelConfig defaults: r 16, alpha 32, dropout 0.05, every
 * attention and MLP projection. */
void lora_config_defaults(LoraConfig *c);
/* peft's IA3 targets for arch (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING):
 * Llama family k_proj, v_proj, down_proj; GPT-2 c_attn, mlp.c_proj. The down
 * projection is the feedforward module (its input is scaled). */
unsigned lora_ia3_default_targets(ModelArch arch);
/* "LoRA", "DoRA" or "IA3" */
const char *lora_method_name(int method);
/* Comma-separated module names (see above), or "all" / "all-linear". */
int lora_parse_targets(const char *list, unsigned *out);
/* The target_modules peft should see for these targets on arch, written
 * into names[k] (k < 8); returns the count. */
int lora_target_modules(unsigned targets, ModelArch arch, char names[8][24]);

/* Attach adapters (a model has at most one set). Freezes the base and
 * re-lays out the gradient buffer: call before creating the optimizer. */
int model_lora_attach(Model *m, const LoraConfig *c);
const LoraConfig *model_lora_config(const Model *m); /* NULL when none */
/* Adapters on (1) or off (0); returns the previous state. */
int model_lora_enable(Model *m, int on);
/* Fold (alpha/r) B A into the fp32 base weights / take it out again.
 * While merged the forward pass skips the adapters. -1 on a quantised
 * base, and for DoRA and IA3 (fold them with model_export_copy). */
int model_lora_merge(Model *m);
int model_lora_unmerge(Model *m);
/* Dropout on (training) with a key the caller derives from its position
 * (e.g. the micro-step index), or off (evaluation, reference passes). */
void model_lora_train_mode(Model *m, int training, uint64_t key);

/* All adapter tensors as one flat fp32 buffer, in table order (for weight
 * sync of adapters only, e.g. PPO policy -> rollout workers): numel, and
 * get/set through host memory. */
size_t model_lora_numel(const Model *m);
int model_lora_get(Model *m, float *host);
int model_lora_set(Model *m, const float *host);

/* A plain fp32 model (no adapters, no quantised tensors) computing what m
 * computes now: base weights dequantised, enabled unmerged adapters merged
 * (DoRA: W' = m (W + s B A) / ||W + s B A|| per row; IA3: the scaled rows,
 * and bias, of k/v, the scaled input columns of down).
 * For export to Hugging Face / .ckpt. */
Model *model_export_copy(Model *m);

#endif
