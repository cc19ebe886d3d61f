/* matmul_quant: out[N,OC] = inp[N,C] @ dequant(wq)[OC,C]^T (+ bias) with
 * integer dot products, for inference on a quantised GGUF (llama.cpp's
 * way): each input row is quantised once per call to int8 in blocks of 32
 * (scale = absmax / 127, round to nearest), and every weight block is
 * multiplied against it as unsigned codes times int8 (AVX-512 VNNI's
 * vpdpbusd where the CPU has it, AVX2 16-bit multiply-adds otherwise),
 * scaled by the weight's and the input's block scales.
 *
 * A weight block of any supported type is decoded in registers into 32
 * unsigned codes u and, per half of 16 inputs, a scale d and an offset m
 * with x = u * d + m (Q4_0: m = -8d; Q8_0: u = q + 128, m = -128d; the
 * K-quants: their sub-block scales and mins), so one kernel serves Q4_0,
 * Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K:
 *   dot = sum_blocks  d_in * (d_lo * S_lo + d_hi * S_hi) + m . (d_in * sums of the input codes)
 * where S are the integer dot products of each half. Where the offset is
 * a whole number K of steps (Q4_0: 8, Q5_0: 16, Q8_0: 128) it is folded
 * into S instead: S = u . a - K * sum(a), the second term made once per
 * input block and used as vpdpbusd's starting value. Q2_K, Q3_K (and any
 * build without AVX2) dequantise the row to fp32 and use the fp32 input.
 *
 * Rows of the weight are split into one contiguous slice per OpenMP thread
 * (each weight byte is read once per call), and each decoded block is used
 * for up to 8 input rows at a time (4 without AVX-512VL); from 32 input
 * rows on, 16 weight rows at a time meet one group of input rows (whose
 * int8 codes then stay in L1). With AVX-512 (F/BW/VL/VNNI) the K-quants
 * run a kernel of their own: super-block scales unpacked once, two
 * blocks a 512-bit vector, Q6_K's offset (32 steps) folded like Q8_0's;
 * Q8_0, Q5_0 and Q4_0 run one too (forward_sym): whole integer block
 * sums (their offsets are whole steps, so exact), 8 weight rows
 * at a time reduced across lanes for up to 7 input rows, and from 8 input
 * rows on the inputs interleaved 8 rows by 4 bytes against broadcast
 * weight bytes (4 weight rows x 16 input rows a step; Q4_0/Q5_0 rows
 * decoded to bytes once per 4 rows first); both make the same
 * float operations per output, so results stay the same at every N.
 *
 * Error against the fp32 product of the dequantised weight: only the input's
 * quantisation, at most half an input step (absmax / 254) per input times
 * |w|, summed over the row; tests bound it so. Inference only (the training
 * forward keeps matmul_forward_q's fp32 input, so its gradients are those
 * of the function it computed). */
#ifndef ALIGN_MATMUL_QUANT_H
#define ALIGN_MATMUL_QUANT_H

/* 1 when mquant_forward has an integer kernel for QuantType t (others,
 * Q2_K and Q3_K, still work through the fp32 fallback). */
int mquant_has_int8(int t);

/* Returns 0, or -1 when its scratch (the quantised input, N * C * 1.4
 * bytes) cannot be allocated; nothing is written then. Any ggml block type
 * (quant_is_ggml). Opens one OpenMP parallel region. */
int mquant_forward(float *out, const float *inp, const void *wq, int qtype, const float *bias, int N, int C, int OC);

#endif
