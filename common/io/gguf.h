/* gguf: read GGUF v2/v3 files (llama.cpp's format) and import them.
 *
 * The reader maps the file and parses it through a bounds-checked cursor:
 * every count and length is checked against the bytes that remain before
 * anything is allocated, so a lying header cannot make us allocate without
 * limit or read out of bounds. Metadata values are typed; tensors of type
 * F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants Q2_K to
 * Q6_K are dequantised to fp32 (block layouts in quant.h and
 * docs/REFERENCE.md); the IQ types are refused by name.
 *
 * gguf_import maps llama.cpp tensor names (token_embd, blk.N.attn_q, ...) to
 * Hugging Face names, undoes the q/k row permutation llama.cpp's converter
 * applies for its RoPE layout (architecture "llama" only; qwen2 files are
 * stored unpermuted), reads the config from the <arch>.* keys, the
 * tokenizer from tokenizer.ggml.* (byte-level BPE, "gpt2" model only) and
 * the chat template from tokenizer.chat_template. */
#ifndef ALIGN_GGUF_H
#define ALIGN_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "model_bundle.h"

typedef enum {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4,
    GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9,
    GGUF_UINT64 = 10, GGUF_INT64 = 11, GGUF_FLOAT64 = 12, GGUF_TYPE_COUNT
} GgufType;

/* ggml tensor types we read. */
enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7, GGML_Q8_0 = 8,
    GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_BF16 = 30
};

typedef struct {
    char *key;
    GgufType type;
    /* scalars */
    int64_t i;          /* integer and bool types */
    double f;           /* float types (also set for integers) */
    char *str;          /* GGUF_STRING */
    /* arrays */
    GgufType arr_type;
    uint64_t arr_n;
    const uint8_t *arr; /* numeric array elements, little-endian, in the mapping */
    char **arr_str;     /* string arrays, NUL-terminated copies */
} GgufKV;

typedef struct {
    char *name;
    int ndim;
    int64_t ne[4];      /* ggml order: ne[0] is the contiguous dimension */
    uint32_t type;
    uint64_t offset;    /* from the start of the data section */
    size_t bytes;
} GgufTensor;

typedef struct {
    char *path;
    uint32_t version;
    int n_kv, n_tensors;
    GgufKV *kv;
    GgufTensor *tensors;
    size_t alignment;
    const uint8_t *data;
    size_t data_len;
    void *map;          /* private */
    size_t map_len;
} GgufFile;

int gguf_open(GgufFile *f, const char *path);
/* Parse a buffer already in memory (kept, not copied); origin names it.
 * On failure f is left empty (nothing to close). */
int gguf_parse(GgufFile *f, const uint8_t *buf, size_t len, const char *origin);
void gguf_close(GgufFile *f);

const GgufKV *gguf_find_kv(const GgufFile *f, const char *key);
/* Typed getters: 0 when present and convertible, -1 otherwise (no error). */
int gguf_get_int(const GgufFile *f, const char *key, int64_t *out);
int gguf_get_float(const GgufFile *f, const char *key, double *out);
const char *gguf_get_str(const GgufFile *f, const char *key);

const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name);
int64_t gguf_tensor_numel(const GgufTensor *t);
/* Dequantise/convert a tensor into out[gguf_tensor_numel(t)]. */
int gguf_read_f32(const GgufFile *f, const GgufTensor *t, float *out);

/* The llama.cpp name (blk.N.attn_q.weight, ...) of a parameter's Hugging
 * Face name for arch; -1 when it has none (LoRA tensors, a value head). */
int gguf_tensor_name(const char *hf, ModelArch arch, char *out, size_t n);
/* The same for a model config: Gemma's norms have names of their own
 * (post_attention_norm, ffn_norm = pre-feedforward, post_ffw_norm). */
int gguf_tensor_name_for(const ModelConfig *c, const char *hf, char *out, size_t n);

/* Import a whole model (see the header comment). */
int gguf_import(const char *path, const Backend *be, ModelBundle *out);
/* The same, keeping the layers' linear weights quantised (model.h,
 * quant.h): tensors of any block type quant_supported accepts (Q4_0 to
 * Q8_0 and the K-quants: a Q4_K_M file as it is) keep their blocks as
 * stored (rows un-permuted for llama), other linear weights are quantised
 * to `fallback` (Q4_0, Q4_1 or Q8_0; with fallback NF4 or FP4 every
 * linear weight is, GGUF blocks included); q|k|v or gate|up of mixed types
 * (Q4_K_M stores v as Q6_K) are dequantised to fp32, since one fused
 * matmul serves them;
 * embeddings, norms and heads are dequantised to fp32. The fp32 form of
 * the quantised weights never exists. */
int gguf_import_quant(const char *path, const Backend *be, int fallback, ModelBundle *out);
/* For inference (generate): every tensor of a ggml block type keeps its
 * blocks as stored (fused members of mixed types: fp32, as above), every
 * other one is fp32 (nothing is re-quantised), and the LM head's blocks
 * (output.weight, or token_embd.weight when tied) are kept beside the fp32
 * embedding (model_set_lm_head_blocks): the weights llama.cpp reads. The
 * model's cached forward then multiplies them with int8 inputs
 * (Model.infer_int8), as llama.cpp does. */
int gguf_import_blocks(const char *path, const Backend *be, ModelBundle *out);

#endif
