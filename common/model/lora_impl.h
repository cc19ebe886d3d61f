/* lora_impl.h: the adapter state shared by lora.c (LoRA and the plumbing
 * every method uses: attach, enable, flat get/set, export), dora.c (DoRA's
 * magnitude) and ia3.c (IA3's scaling vectors). Private to common/model. */
#ifndef ALIGN_LORA_IMPL_H
#define ALIGN_LORA_IMPL_H

#include <stdint.h>

#include "lora.h"

typedef struct {
    int pa, pb;      /* parameter indices of lora_A [r, C] and lora_B [OC, r] (-1 for IA3) */
    int pm;          /* DoRA: lora_magnitude_vector [OC]; IA3: ia3_l; else -1 */
    int pbase;       /* the adapted base weight */
    int col0, OC, C; /* writes columns [col0, col0 + OC) of the slot's output; C inputs */
    int slot;
    int ff;          /* IA3: 1 scales the input (a feedforward module), 0 the output */
    int pbias;       /* the base's bias of these columns, -1 if none */
} LoraAdapter;

struct ModelLora {
    LoraConfig cfg;
    float scale;                 /* alpha / r */
    int enabled, merged;
    int n_slot[MODEL_N_SLOTS], slot_start[MODEL_N_SLOTS], per_layer;
    LoraAdapter *ad;             /* [n_layers][per_layer], slot-major */
    int first_param;             /* adapters are the table's last tensors */
    /* dropout state */
    int training;
    uint64_t key, counter, fwd_seed;
    int fwd_active, fwd_dropout; /* what the last lora_begin_forward decided */
    /* buffers (backend memory) */
    int cap;                     /* tokens hs holds */
    float *hs;                   /* [n_layers][per_layer][cap * r]: scale * dropout(x) A^T */
    int scap, max_c, max_oc;
    float *sx, *sh;              /* scratch [scap * max_c], [scap * r] */
    /* DoRA and IA3 */
    size_t *zoff;                /* per adapter: offset of its saved outputs in zs (units of cap) */
    size_t zrow;                 /* sum of the saved widths (cap * zrow floats in zs) */
    float *zs;                   /* IA3 (output scaling): the unscaled output */
    float *sy, *sy2;             /* scratch [scap * max_oc] each */
    float *gscale, *gnorm;       /* DoRA: m / ||W + s B A|| and ||W + s B A|| per adapter row, [sum OC] (host) */
    size_t *goff;                /* per adapter: offset into gscale and wnorm2 */
    double *wnorm2;              /* DoRA: ||W_o||^2 per row, fixed at attach */
    uint64_t gsum;               /* fingerprint of the adapters gscale was computed from */
    int gvalid;
};

/* dora.c */
int dora_attach(Model *m, ModelLora *L);            /* after the tensors exist: magnitude = ||W|| rows */
int dora_update_scale(Model *m, ModelLora *L, int force); /* gscale from the current A, B, magnitude */
void dora_forward(Model *m, ModelLora *L, int idx, const float *x, const float *xin, float *y, int ldy, int N,
                  int save);
void dora_backward(Model *m, ModelLora *L, int idx, const float *x, const float *dy, int ldy, float *dx, int N);
/* The merged weight of adapter idx into W (fp32 [OC, C], host): W = g (W + s B A). */
int dora_merge_into(Model *m, ModelLora *L, int idx, float *W);

/* ia3.c */
void ia3_forward(Model *m, ModelLora *L, int idx, const float *x, float *y, int ldy, int N, int save);
void ia3_backward(Model *m, ModelLora *L, int idx, const float *x, const float *dy, int ldy, float *dx, int N);
/* Fold the scales into W [OC, C] and bias [OC] (host; bias may be NULL). */
int ia3_merge_into(Model *m, ModelLora *L, int idx, float *W, float *bias);

/* lora.c: the dropout mask seed of adapter idx in this forward */
uint64_t lora_adapter_seed(const ModelLora *L, int idx);
/* lora.c: the base weight rows of adapter idx as the linear kernels take them */
void lora_base_weight(const Model *m, const LoraAdapter *ad, const float **w, const void **wq, int *qtype);

#endif
