/* phi3_fused: Phi-3/3.5/4 files (Hugging Face and GGUF) hold q_proj, k_proj,
 * v_proj as one qkv_proj and gate_proj, up_proj as one gate_up_proj (gate
 * rows first), while the model keeps the Llama names. Our flat buffer
 * already stores each group's members adjacently in that row order, so a
 * fused file tensor is read into, or written from, the first member's
 * offset with the group's rows: no reordering. */
#ifndef ALIGN_PHI3_FUSED_H
#define ALIGN_PHI3_FUSED_H

#include <stddef.h>

#include "model.h"

/* For parameter p of a model with cfg.phi3: 1 when p heads a fused group
 * (q_proj.weight, gate_proj.weight): *group is p widened to the whole group
 * (shape[0], numel) and renamed to the Hugging Face tensor; 2 when p is a
 * later member (k_proj, v_proj, up_proj: read or written with its head);
 * 0 for any other tensor or model. */
int phi3_fused_group(const ModelConfig *c, const ParamInfo *p, ParamInfo *group);

#endif
