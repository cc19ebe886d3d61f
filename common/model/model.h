/* model: one decoder-only transformer for the GPT-2 and Llama families.
 *
 * Config switches pick the family's pieces:
 *   GPT-2: LayerNorm (with bias), learned positions, GELU (tanh), biases on
 *          every linear, LM head tied to the token embedding.
 *   Llama: RMSNorm, RoPE (theta, optional llama3 scaling), SwiGLU,
 *          grouped-query attention, optional q/k/v bias (Qwen2), optional
 *          tied embeddings (SmolLM2), optional sliding-window attention on
 *          the later layers (Mistral, Qwen2), optional per-head q/k
 *          RMSNorm (Qwen3); Phi-3/4 are this family with fused files.
 *   Gemma 2 / 3 (text): the Llama decoder with RMSNorm scaling by (1 + w),
 *          embeddings times sqrt(hidden), post-attention and pre/post-MLP
 *          norms, GeGLU, attention scale query_pre_attn_scalar^-1/2,
 *          attention and final logit soft caps (Gemma 2), q/k norms and
 *          per-layer RoPE bases (Gemma 3), sliding layers in a repeating
 *          pattern. Needs the backend's optional Gemma ops (CPU only).
 * Heads: the LM head (per-token log-probs of given targets) and a scalar
 * value/score head (`score.weight`, reward models and critics) on the final
 * normalised hidden state.
 *
 * Parameters live in ONE flat buffer; gradients of the trainable ones in a
 * second flat buffer (frozen tensors get no gradient slot and no optimizer
 * state), so AdamW, clipping and any all-reduce are one call each. Each
 * tensor carries its Hugging Face name (GPT-2 uses the GPT2LMHeadModel names
 * with the `transformer.` prefix; Llama uses `model.layers.N...`).
 * Weights are stored as [out, in] row-major (nn.Linear layout) for both
 * families; GPT-2's Conv1D tensors are [in, out] in Hugging Face files, so
 * ParamInfo.hf_transposed tells the file readers and writers to transpose.
 *
 * Tensors that one matmul can serve are laid out next to each other in the
 * flat buffer: q_proj, k_proj, v_proj form one [(Hq+2Hkv)*hd, dim] matrix
 * (GPT-2's c_attn is that matrix already), and Llama's gate_proj, up_proj
 * form one [2*ffn, dim] matrix. Weight gradients are still computed per
 * tensor, so each can be frozen on its own.
 *
 * Batches are packed "varlen" style: n_seqs sequences of different lengths
 * concatenated into one array of n_tokens tokens, with seq_start offsets.
 * Positions restart at 0 in every sequence and attention never crosses a
 * sequence boundary, which is the block-diagonal causal mask of packing with
 * no padding at all, so no compute is spent on padding.
 *
 * PEFT (common/model/lora.h): LoRA adapters are ordinary tensors appended to the
 * table (PEFT names, `base_model.model.<module>.lora_A.weight`), so AdamW,
 * clipping, checkpoints and resume treat them like any parameter; the base
 * is frozen. Linear weights of the layers may instead be stored quantised
 * (common/compute/quant.h: ParamInfo.qtype != QUANT_NONE): their blocks live in
 * Model.qparams, they take no room in params, get no gradient, and every
 * matmul on them goes through the backend's *_q ops. Embeddings, norms,
 * biases and the heads always stay fp32.
 *
 * Usage for one micro-batch:
 *   model_forward(m, &batch)             hidden states for every token
 *   model_token_logprobs(m, targets, lp) LM head: log p(target | prefix)
 *   model_values(m, v)                   value head: one scalar per token
 *   model_backward(m, dlogp, dvalue)     accumulates into m->grads
 * Gradients accumulate across micro-batches until model_zero_grad(). */
#ifndef ALIGN_MODEL_H
#define ALIGN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "quant.h"

typedef enum { ARCH_GPT2 = 0, ARCH_LLAMA = 1 } ModelArch;

/* LONGROPE: Phi-3's (rope_scaling type "longrope", legacy "su"): per-frequency
 * short and long factors, chosen per forward chunk by its length (model.c). */
typedef enum {
    ROPE_SCALING_NONE = 0,
    ROPE_SCALING_LINEAR = 1,
    ROPE_SCALING_LLAMA3 = 2,
    ROPE_SCALING_LONGROPE = 3
} RopeScaling;

/* Longest short_factor / long_factor list (rotary_dim / 2) a config holds. */
#define MODEL_ROPE_MAX_FACTORS 256

typedef struct {
    ModelArch arch;
    int vocab_size;
    int dim;          /* hidden size */
    int n_layers;
    int n_heads;      /* query heads */
    int n_kv_heads;   /* key/value heads (GQA); == n_heads for GPT-2 */
    int head_dim;     /* usually dim / n_heads */
    int ffn_dim;      /* MLP inner size */
    int max_seq_len;  /* GPT-2: rows of the position table */
    float norm_eps;
    float rope_theta;
    RopeScaling rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    /* Longrope: inv_freq[j] = 1 / (factor[j] * theta^(2j/rotary_dim)) with the
     * short factors while a chunk's length (its last position + 1) is at
     * most rope_original_max_pos, else the long ones; cos and sin are both
     * multiplied by rope_attn_factor, as transformers' attention_scaling. */
    float rope_short_factor[MODEL_ROPE_MAX_FACTORS], rope_long_factor[MODEL_ROPE_MAX_FACTORS];
    float rope_attn_factor; /* 1 unless longrope */
    /* RoPE rotates the first rotary_dim dims of each head (Phi-4-mini's
     * partial_rotary_factor 0.75); the rest pass through. 0 = head_dim. */
    int rotary_dim;
    /* Sliding-window attention (Mistral's sliding_window, Qwen2's with
     * use_sliding_window): layers window_from_layer.. let a query see only
     * the sliding_window latest keys, itself included. 0 = full attention. */
    int sliding_window;
    int window_from_layer; /* Qwen2's max_window_layers; 0 for Mistral */
    int qkv_bias;        /* Llama family only (Qwen2); GPT-2 always has biases */
    int tied_embeddings; /* LM head shares the token embedding */
    int lm_head;         /* 1: model has the LM head */
    int value_head;      /* 1: model has score.weight [1, dim] */
    int bos_id, eos_id, pad_id; /* -1 when unknown */
    /* Qwen3, Gemma 3: RMSNorm of each q and k head (self_attn.q_norm /
     * k_norm, weight [head_dim], eps norm_eps; Gemma's by 1 + w) after the
     * projections, before RoPE. */
    int qk_norm;
    /* Phi-3/3.5/4 (model_type phi3): the same maths as Llama; only its files
     * differ, fusing qkv_proj and gate_up_proj, which the importers split
     * into our q|k|v and gate|up (already adjacent) and the exporters fuse. */
    int phi3;
    /* Gemma 2 / Gemma 3 text (all 0 for the other families). */
    int gemma;             /* 2 or 3: the Hugging Face model_type (gemma2, gemma3_text) to write back */
    int norm_plus_one;     /* every RMSNorm scales by (1 + w); w stays as the files store it */
    float embed_scale;     /* > 0: token embeddings times this (Gemma: sqrt(hidden_size)) */
    int sandwich_norms;    /* post_attention_layernorm on the attention output, pre_ and
                              post_feedforward_layernorm around the MLP */
    int geglu;             /* MLP gate activation: GELU (tanh) instead of SiLU */
    float attn_scalar;     /* > 0: scores scaled by attn_scalar^-1/2 (query_pre_attn_scalar); else head_dim^-1/2 */
    float attn_softcap;    /* > 0: attention scores s -> c tanh(s / c) before the softmax */
    float final_softcap;   /* > 0: logits x -> c tanh(x / c) */
    int sliding_pattern;   /* > 0: layer l slides unless (l + 1) % sliding_pattern == 0 (window_from_layer unused) */
    float rope_local_theta; /* > 0: sliding layers use this RoPE base and no scaling (Gemma 3) */
} ModelConfig;

/* Fill a config with the family's defaults; sizes must then be set. */
void model_config_defaults(ModelConfig *c, ModelArch arch);
/* Check a config for consistency; returns -1 with an error naming the field. */
int model_config_validate(const ModelConfig *c);
/* The attention window of layer l: c->sliding_window from
 * window_from_layer on, else 0 (full causal attention). */
int model_layer_window(const ModelConfig *c, int l);
/* 1 when layer l is a sliding (local) layer, whatever its window. */
int model_layer_sliding(const ModelConfig *c, int l);

typedef struct {
    char name[96];      /* Hugging Face tensor name */
    int ndim;
    int64_t shape[2];   /* our layout: [out, in] for linear weights */
    size_t offset;      /* element offset into Model.params */
    size_t numel;
    long grad_offset;   /* element offset into Model.grads, -1 when frozen */
    int hf_transposed;  /* 1: HF files store this tensor as [in, out] */
    int no_decay;       /* 1: biases and norm weights get no weight decay */
    int qtype;          /* QuantType: QUANT_NONE = fp32 in params; else blocks in qparams */
    size_t qoffset;     /* byte offset into Model.qparams when quantised (offset unused) */
    int lora;           /* 1: an adapter tensor (lora_A / lora_B, DoRA's magnitude, IA3's ia3_l, or virtual tokens: prompt_learning.h) */
} ParamInfo;

/* Quantised weights of one layer (NULL / QUANT_NONE where fp32). Fused
 * members share a type and are adjacent, so qkv and gate|up are one matrix. */
typedef struct {
    const void *qkv, *o, *up, *down; /* up: Llama gate|up, GPT-2 c_fc */
    int t_qkv, t_o, t_up, t_down;
} LayerQuant;

/* Pointers to one layer's tensors (into params, or into grads with NULL for
 * frozen or absent tensors). */
typedef struct {
    float *norm1_w, *norm1_b;
    float *wq, *wk, *wv, *bq, *bk, *bv; /* wq..wv adjacent: fused qkv */
    float *wo, *bo;
    float *norm2_w, *norm2_b;
    float *w_gate, *w_up, *b_up;        /* Llama: gate then up, adjacent; GPT-2: w_up = c_fc */
    float *w_down, *b_down;
    /* Gemma: post_attention_layernorm (on the attention output; norm2 is then
     * pre_feedforward_layernorm), post_feedforward_layernorm, q_norm, k_norm */
    float *post_attn_norm_w, *post_ffn_norm_w;
    float *q_norm, *k_norm;             /* per-head q/k norms [head_dim] (Qwen3, Gemma 3); NULL otherwise */
} LayerTensors;

typedef struct {
    float *wte, *wpe, *normf_w, *normf_b, *lm_head, *score;
    LayerTensors *layers;
} ModelTensors;

/* A packed batch (see the header comment). seq_start has n_seqs + 1 entries,
 * seq_start[0] == 0, seq_start[n_seqs] == n_tokens. */
typedef struct {
    int n_tokens;
    int n_seqs;
    const int32_t *tokens;
    const int32_t *seq_start;
    /* NULL, or per sequence -1 or the index p < s of a sequence this one
     * extends: it attends to all of p's tokens and its positions continue
     * after them (p extends nothing itself). A DPO pair packed as
     * [prompt | chosen | rejected] so computes its prompt once. Needs a
     * backend with attention_*_prefixed (model_shares_prefixes). */
    const int32_t *seq_prefix;
} Batch;

typedef struct ModelActs ModelActs; /* saved activations, private to model.c */
typedef struct ModelLora ModelLora; /* adapter state, private to the adapter's file (lora.c) */
typedef struct Model Model;

/* Adapters plug into the decoder through this table, so the model knows no
 * adapter type (lora.c fills it when adapters are attached). An adapter adds
 * to the output of a linear at one of four slots. */
enum { MODEL_SLOT_QKV = 0, MODEL_SLOT_O = 1, MODEL_SLOT_UP = 2, MODEL_SLOT_DOWN = 3, MODEL_N_SLOTS = 4 };
typedef struct {
    /* A forward of N tokens starts: 1 when adapters apply, 0 when not, -1 on error. */
    int (*begin_forward)(Model *m, int N);
    /* y[:, slot columns] += adapters(x), x [N, in], y rows ldy apart; save = 1
     * keeps what backward needs (training forward), 0 uses scratch only
     * (cached decoding, after reserve_scratch). */
    void (*forward)(Model *m, int layer, int slot, const float *x, float *y, int ldy, int N, int save);
    /* Adds the adapters' gradients and dx += d(adapter)/dx given dy. */
    void (*backward)(Model *m, int layer, int slot, const float *x, const float *dy, int ldy, float *dx, int N);
    int (*reserve_scratch)(Model *m, int N);
    int (*inference_active)(const Model *m); /* adapters apply to an inference forward */
    int (*backward_active)(const Model *m);  /* the last begin_forward applied them */
    int (*lowest_layer)(const Model *m);     /* lowest layer with a trainable adapter; n_layers if none */
    void (*free)(Model *m);
} ModelAdapterOps;

/* Virtual tokens (prompt tuning and prefix tuning / P-tuning v2,
 * common/model/prompt_learning.h) plug in through this table. While
 * n_virtual(m) > 0, model_forward packs one extra sequence of that many
 * rows first and makes every sequence extend it (Batch.seq_prefix), so each
 * sequence attends to the virtual tokens and its positions start after
 * them, as peft's prepended prompt / past_key_values do; the callers'
 * arrays (targets, log-probs, values, logits rows) keep their own indices.
 * The virtual rows' inputs come from embed (prompt tuning) or their keys
 * and values are replaced after RoPE by kv (prefix tuning: stored as given,
 * not rotated again). */
typedef struct ModelPrompt ModelPrompt; /* private to prompt_learning.c */
typedef struct {
    int (*n_virtual)(const Model *m);                       /* 0 when off */
    void (*embed)(Model *m, float *x);                      /* x [n_virtual, dim]: the virtual inputs */
    void (*kv)(Model *m, int layer, float *qkv, int ldq);   /* rows 0.. of qkv: set their k | v */
    /* Backward: kv_backward takes d(k|v) of the virtual rows and zeroes
     * their dqkv rows (nothing flows below from them); embed_backward takes
     * d(inputs) [n_virtual, dim]. */
    void (*kv_backward)(Model *m, int layer, float *dqkv, int ldq);
    void (*embed_backward)(Model *m, const float *dx);
    int (*lowest_layer)(const Model *m); /* -1: needs d(inputs); 0: every layer; n_layers: nothing trains */
    void (*free)(Model *m);
} ModelVirtualOps;

struct Model {
    ModelConfig cfg;
    const Backend *be;
    ParamInfo *info;
    int n_params;
    size_t n_elems;       /* elements in params */
    size_t n_grad_elems;  /* elements in grads (trainable only) */
    float *params;        /* backend memory */
    float *grads;         /* backend memory; NULL until first needed or when nothing is trainable */
    ModelTensors w;       /* views into params */
    ModelTensors g;       /* views into grads (NULL = frozen) */
    ModelActs *acts;
    uint8_t *qparams;     /* backend memory: quantised blocks (NULL when none) */
    size_t n_qbytes;
    LayerQuant *qw;       /* [n_layers] views into qparams */
    /* Inference only: the LM head as a quantised GGUF stores it (its
     * blocks, backend memory; NULL = use w.lm_head). The cached forward
     * computes logits from it, as llama.cpp does; set by
     * model_set_lm_head_blocks, which anything changing the head's weights
     * must clear. */
    uint8_t *lm_head_q;
    int lm_head_qtype;
    /* 1: the cached forward multiplies quantised weights with int8 inputs
     * (model_linear_forward_infer); 0 (the default, training and rollouts
     * that feed training): fp32 inputs, the arithmetic the trainer's forward
     * uses, so rollout log-probs equal the training forward's. */
    int infer_int8;
    ModelLora *lora;      /* NULL when no adapters are attached */
    const ModelAdapterOps *adapter; /* the adapters' hooks; NULL when none */
    /* norm_plus_one: w with every norm weight replaced by 1 + w (norm_eff),
     * as the forward applies them; model_norm_weights refreshes it. */
    ModelTensors wn;
    float *norm_eff, *ones;
    ModelPrompt *prompt;  /* virtual tokens; NULL when none */
    const ModelVirtualOps *virt; /* their hooks; NULL when none */
    /* Called by model_backward right after layer l's weight gradients are
     * final (layers from the last down to the lowest that trains), so a
     * data-parallel trainer can start summing them across processes while
     * the lower layers are still computed (common/train/grad_overlap.h).
     * NULL: none. The backend's work for layer l has been issued, not
     * necessarily finished: only for a synchronous backend (the CPU) are
     * the gradients in memory when it is called. */
    void (*grads_ready)(void *ctx, int layer);
    void *grads_ready_ctx;
};

/* The weights as the forward applies them: &m->w, or for a norm_plus_one
 * model &m->wn with 1 + w computed afresh from m->w. NULL on error. */
const ModelTensors *model_norm_weights(Model *m);
/* RoPE inverse frequencies of layer l (Gemma 3's sliding layers have their own). */
const float *model_layer_rope_inv_freq(const Model *m, int l);
/* The rotated dims of each head: rotary_dim, or head_dim when 0. */
int model_rotary_dim(const ModelConfig *c);
/* RoPE of layer l on qkv's rows [0, N) in place, forward (backward = 0) or
 * its transpose on gradients (backward = 1). The rows are S chunks split at
 * seq_start (host, S + 1 entries); pos (backend) and pos_host (host) their
 * positions. A longrope model picks short or long factors per chunk by its
 * largest position + 1, as transformers does per forward call. */
void model_rope(const Model *m, int l, float *qkv, const int32_t *pos, const int32_t *pos_host,
                const int32_t *seq_start, int S, int N, int backward);
/* Attention score scale of the config: attn_scalar^-1/2 or head_dim^-1/2. */
float model_attn_scale(const ModelConfig *c);
/* 1 when attention needs the backend's *_ext ops (a scale other than
 * head_dim^-1/2, or a soft cap). */
int model_attn_ext(const ModelConfig *c);

/* 1 when model_forward accepts batches with seq_prefix on m's backend (not
 * on a model with virtual tokens, which take that one level of prefix). */
int model_shares_prefixes(const Model *m);

/* Create a model with zeroed parameters and every tensor trainable. */
Model *model_create(const ModelConfig *cfg, const Backend *be);
/* The same with some linear weights stored quantised from the start (so
 * their fp32 form is never allocated): pick returns the QuantType for each
 * tensor model_quantizable accepts (QUANT_NONE keeps fp32). Members of a
 * fused projection (q|k|v, gate|up) must agree, else the group stays fp32.
 * Quantised tensors are frozen; their blocks are zero until filled with
 * model_param_set_blocks. */
typedef int (*ModelQuantPick)(const ParamInfo *p, void *ctx);
Model *model_create_quant(const ModelConfig *cfg, const Backend *be, ModelQuantPick pick, void *ctx);
/* 1 when p may be quantised: a 2-D linear weight inside a layer (attention
 * and MLP projections) whose input size is a multiple of 32. */
int model_quantizable(const ModelConfig *c, const ParamInfo *p);
/* Quantise every quantizable base weight of an fp32 model to type t (the
 * fp32 copies are released); they become frozen. Returns how many tensors
 * were quantised, or -1. */
int model_quantize_base(Model *m, QuantType t);
/* One tensor as fp32 in HF-independent [out, in] layout on the host,
 * dequantising a quantised one. out has p->numel floats. */
int model_param_to_host(Model *m, const ParamInfo *p, float *out);
/* Fill a quantised tensor with rows of blocks (host memory, p->shape[0] *
 * quant_row_bytes(p->qtype, p->shape[1]) bytes). */
int model_param_set_blocks(Model *m, const ParamInfo *p, const void *blocks);
/* Bytes of weights held: fp32 params plus quantised blocks. */
size_t model_weight_bytes(const Model *m);
void model_free(Model *m);

/* GPT-2 style init: N(0, 0.02) weights, residual projections scaled by
 * 1/sqrt(2*n_layers), zero biases, unit norm weights. Deterministic in seed. */
void model_init_random(Model *m, uint64_t seed);

/* Look up a tensor by its HF name; NULL when absent. */
ParamInfo *model_find_param(Model *m, const char *name);

/* Freeze (trainable = 0) or unfreeze every tensor whose name contains
 * `substring` ("" matches all). Re-lays out the gradient buffer, so call it
 * before creating the optimizer. Returns the number of tensors matched. */
int model_set_trainable(Model *m, const char *substring, int trainable);
/* The same for every tensor at once: tensor i trains when train[i] (a
 * quantised one never does). Returns how many train. */
int model_set_trainable_mask(Model *m, const unsigned char *train);
size_t model_trainable_elems(const Model *m);
/* Allocate the gradient buffer (zeroed) if it is not there yet; model_backward,
 * model_zero_grad and optim_create call it, so inference never pays for it. */
int model_ensure_grads(Model *m);

/* Run the decoder over a packed batch. Returns -1 on a bad batch (token out
 * of range, sequence longer than the position table, bad offsets). */
int model_forward(Model *m, const Batch *b);

/* After model_forward: logp[i] = log softmax(logits_i)[targets[i]] for each
 * token i with targets[i] >= 0 (logp[i] = 0 otherwise). The LM head is only
 * evaluated on rows that have a target, so masked-out prompt tokens cost
 * nothing there. logp may be NULL when only the backward pass is wanted.
 * targets must stay valid until model_backward. */
int model_token_logprobs(Model *m, const int32_t *targets, float *logp);

/* After model_forward: the full logits [n_rows, vocab] of the given token
 * rows (host arrays), e.g. the last token of each sequence for sampling.
 * Invalidates a previous model_token_logprobs for the backward pass. */
int model_logits(Model *m, const int32_t *rows, int n_rows, float *out);

/* After model_forward: values[i] = score . h_i for every token. */
int model_values(Model *m, float *values);

/* Backpropagate d(loss)/d(logp) (from model_token_logprobs, rows without a
 * target are ignored) and/or d(loss)/d(values); either may be NULL. Adds into
 * m->grads. Host arrays of n_tokens floats. A forward run with nothing
 * trainable keeps only one layer's activations: thawing tensors below the
 * heads after it makes backward fail until the forward runs again. */
int model_backward(Model *m, const float *dlogp, const float *dvalues);
/* The same over the batch's first n_rows rows only, n_rows ending a
 * sequence: for a batch whose later sequences carry no gradient and are
 * attended to by none of the earlier ones (a KTO micro-batch's mismatched
 * pairs packed last, each extending its example's prompt), which then
 * cost the forward only. model_backward is n_rows = all of them. */
int model_backward_rows(Model *m, const float *dlogp, const float *dvalues, int n_rows);

void model_zero_grad(Model *m);

/* RoPE inverse frequencies [head_dim/2] (backend memory; NULL for GPT-2),
 * shared by the cached-decoding path. */
const float *model_rope_inv_freq(const Model *m);

/* 6N per token for the dense weights plus the attention term, as llm.c's MFU
 * formula counts it; used by benchmarks. */
double model_flops_per_token(const ModelConfig *c, int seq_len, int training);

/* One linear layer's forward / backward-input on an fp32 weight w or a
 * quantised one (wq, qtype != QUANT_NONE); shared by model.c, kvcache.c and
 * lora.c. Same shapes as Backend.matmul_forward / matmul_backward_input. */
void model_linear_forward(const Model *m, float *out, const float *inp, const float *w, const void *wq, int qtype,
                          const float *bias, int N, int C, int OC);
void model_linear_backward_input(const Model *m, float *dinp, const float *dout, const float *w, const void *wq,
                                 int qtype, int N, int C, int OC, int accumulate);
/* model_linear_forward for inference (the cached forward): with
 * m->infer_int8, a quantised weight goes through
 * Backend.matmul_forward_q_int8 where the backend has it (int8 inputs,
 * llama.cpp's arithmetic); otherwise as model_linear_forward. */
void model_linear_forward_infer(const Model *m, float *out, const float *inp, const float *w, const void *wq,
                                int qtype, const float *bias, int N, int C, int OC);
/* Keep the LM head's blocks (QuantType qtype, [vocab, dim] in our row
 * order) for inference: copies them to the backend. qtype 0 forgets them.
 * -1 with an error for a type the backend cannot multiply or out of memory. */
int model_set_lm_head_blocks(Model *m, int qtype, const void *blocks);

/* Append tensors (name, ndim, shape, numel, hf_transposed, no_decay, lora
 * taken from extra; zero-filled, frozen) to the table and the flat buffer. */
int model_append_params(Model *m, const ParamInfo *extra, int n);

/* Helpers for building batches: next-token targets (-1 at each sequence's
 * last token) for a packed batch. */
void batch_next_token_targets(const Batch *b, int32_t *targets);

#endif
