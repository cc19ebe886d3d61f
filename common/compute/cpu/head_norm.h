/* head_norm: the CPU backend's per-head q/k RMSNorm (Backend.head_rmsnorm_*),
 * kept apart from ops_cpu.c because only the families with q/k norms (Qwen3,
 * Gemma 3, whose 1+w the model passes as the weight) use it. */
#ifndef ALIGN_HEAD_NORM_H
#define ALIGN_HEAD_NORM_H

void cpu_head_rmsnorm_forward(float *qkv, float *saved, float *rstd, const float *wq, const float *wk, int N, int Hq,
                              int Hkv, int hd, float eps);
void cpu_head_rmsnorm_backward(float *dqkv, float *dwq, float *dwk, const float *saved, const float *rstd,
                               const float *wq, const float *wk, int N, int Hq, int Hkv, int hd);

#endif
