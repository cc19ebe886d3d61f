/* ckpt: the .ckpt checkpoint, a safetensors file Python's safetensors reads.
 *
 * Tensors carry their Hugging Face names in Hugging Face layout (GPT-2's
 * Conv1D weights are transposed back to [in, out] on save and forward again
 * on load), as F32: the master weights, bit-exact across a round trip.
 * __metadata__ holds
 *   "format"          "pt" (so the file also loads as a plain state dict)
 *   "align_format"    "ckpt-1"
 *   "config"          the model's Hugging Face config.json text
 *   "tokenizer"       tokenizer.json text (when known)
 *   "chat_template"   built-in template name (when known)
 *   "chat_template_jinja"  the model's own Jinja template (when known)
 *   "train_state"     the caller's JSON text (step, RNG, data cursor, ...)
 *   "base_model"      the Hugging Face name or path these weights load from
 *                     (when they are still those weights: a conversion, a
 *                     LoRA run's checkpoint; a peft adapter names it)
 *   "checksum"        "xxh64:<16 hex digits>" of the whole data section
 * Extra tensors (optimizer moments "optim.m.<name>" / "optim.v.<name>", or
 * anything a caller adds) follow the model's. The checksum is verified on
 * load, so a truncated or bit-flipped file is refused with a sentence naming
 * the file. Writes are atomic (st_writer_save). */
#ifndef ALIGN_CKPT_H
#define ALIGN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "safetensors.h"

typedef struct {
    char *name;
    int ndim;
    int64_t shape[8];
    size_t numel;
    float *data;   /* host memory */
    int owned;     /* 1: freed by ckpt_extras_free */
} CkptTensor;

/* Everything in a .ckpt besides the model. Strings are owned (malloc'd) and
 * freed by ckpt_extras_free; NULL means absent. */
typedef struct {
    char *tokenizer_json;
    char *chat_template;        /* name: "chatml", "llama3", "hh", "none" */
    char *chat_template_jinja;  /* the model's own template text */
    char *train_state;          /* caller's JSON text */
    char *base_model;           /* HF name or path of the same weights (peft's base_model_name_or_path) */
    int n_tensors;
    CkptTensor *tensors;
} CkptExtras;

void ckpt_extras_init(CkptExtras *e);
void ckpt_extras_free(CkptExtras *e);
/* Replace one of the string fields with a copy of s (s may be NULL). */
int ckpt_extras_set(char **field, const char *s);
/* Add an extra tensor; copy = 0 keeps the pointer (it must outlive the
 * ckpt_save call), copy = 1 takes a copy. */
int ckpt_extras_add(CkptExtras *e, const char *name, int ndim, const int64_t *shape,
                    const float *data, int copy);
const CkptTensor *ckpt_extras_find(const CkptExtras *e, const char *name);

/* Optimizer moments: m1, m2 are HOST arrays of m->n_grad_elems laid out as
 * m->grads (Optimizer.m / .v after backend->to_host). add: one tensor per
 * trainable parameter, "optim.m.<name>" and "optim.v.<name>", not copied.
 * get: fills m1, m2; -1 when any moment is missing or mis-shaped. */
int ckpt_extras_add_moments(CkptExtras *e, const Model *m, const float *m1, const float *m2);
int ckpt_extras_get_moments(const CkptExtras *e, const Model *m, float *m1, float *m2);

/* Save the model (and extras, which may be NULL) atomically. A model with
 * a NaN or Inf parameter is refused (nothing written), as by hf_export. */
int ckpt_save(const char *path, Model *m, const CkptExtras *extras);

/* Load a .ckpt onto backend be. extras_out (may be NULL) receives the
 * metadata and every tensor that is not a model parameter; free it with
 * ckpt_extras_free. */
int ckpt_load(const char *path, const Backend *be, Model **out, CkptExtras *extras_out);
/* The same with the linear weights model_quantizable accepts stored as
 * qtype (QuantType; 0 = fp32), each quantised as it is read, so the whole
 * fp32 model never exists. */
int ckpt_load_quant(const char *path, const Backend *be, int qtype, Model **out, CkptExtras *extras_out);

/* Read only the config of a .ckpt (cheap: no tensor data is touched). */
int ckpt_read_config(const char *path, ModelConfig *cfg);

/* ---- shared with hf_import / hf_export ----
 * A model's parameters on the host, in HF layout, ready for a safetensors
 * writer (buffers live until ckpt_stage_free, after st_writer_save). */
typedef struct CkptStage CkptStage;
CkptStage *ckpt_stage_model(Model *m, StWriter *w);
/* The same with hf_names = 1 naming tensors as Hugging Face files do for
 * the model's family (Phi-3's fused qkv_proj and gate_up_proj). */
CkptStage *ckpt_stage_model_hf(Model *m, StWriter *w, int hf_names);
void ckpt_stage_free(CkptStage *s);
/* All parameters as one host array (m->params itself on the CPU backend),
 * copied from the device when fetch = 1. Release with commit = 1 to copy it
 * back to the device (after filling it), 0 to just drop it. */
float *ckpt_host_params(Model *m, int fetch);
void ckpt_host_params_release(Model *m, float *host, int commit);
/* Convert one file tensor (HF layout, F32/F16/BF16/F64) into parameter p of
 * host[] (transposing hf_transposed tensors); -1 on a shape mismatch. */
int ckpt_read_param(const ParamInfo *p, const StFile *f, const StTensor *t, float *host);
/* The same for any parameter of m: a quantised one is read into a buffer of
 * its own size, quantised and stored as blocks. */
int ckpt_read_param_into(Model *m, const ParamInfo *p, const StFile *f, const StTensor *t, float *host);
/* model_create, or with qtype != 0 model_create_quant with every
 * quantizable weight of that type. */
Model *ckpt_model_create(const ModelConfig *cfg, const Backend *be, int qtype);

/* ---- the checksum: XXH64 (seed 0), streaming ---- */
typedef struct {
    uint64_t v[4], total;
    uint8_t buf[32];
    size_t buf_len;
} CkptHash;
void ckpt_hash_init(CkptHash *h);
void ckpt_hash_update(CkptHash *h, const void *data, size_t len);
uint64_t ckpt_hash_final(const CkptHash *h);
uint64_t ckpt_hash64(const void *data, size_t len);

#endif
