/* phi3_fused: see the header. */
#include "phi3_fused.h"

#include <stdio.h>
#include <string.h>

/* 1 when name is model.layers.<l>.<suffix>; *l receives the layer. */
static int layer_tensor(const char *name, const char *suffix, int *l) {
    char rest[96];
    return sscanf(name, "model.layers.%d.%95s", l, rest) == 2 && !strcmp(rest, suffix);
}

int phi3_fused_group(const ModelConfig *c, const ParamInfo *p, ParamInfo *group) {
    int l;
    if (!c->phi3 || c->arch != ARCH_LLAMA) return 0;
    if (layer_tensor(p->name, "self_attn.k_proj.weight", &l) || layer_tensor(p->name, "self_attn.v_proj.weight", &l) ||
        layer_tensor(p->name, "mlp.up_proj.weight", &l))
        return 2;
    int64_t rows;
    const char *fused;
    if (layer_tensor(p->name, "self_attn.q_proj.weight", &l)) {
        rows = (int64_t)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
        fused = "self_attn.qkv_proj.weight";
    } else if (layer_tensor(p->name, "mlp.gate_proj.weight", &l)) {
        rows = 2 * (int64_t)c->ffn_dim;
        fused = "mlp.gate_up_proj.weight";
    } else {
        return 0;
    }
    *group = *p;
    snprintf(group->name, sizeof group->name, "model.layers.%d.%s", l, fused);
    group->shape[0] = rows;
    group->numel = (size_t)rows * p->shape[1];
    return 1;
}
