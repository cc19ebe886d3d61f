/* matmul_small: out[N,OC] = inp[N,C] @ w[OC,C]^T (+ bias) for the few rows
 * of a decoding step (N <= MSMALL_MAX_ROWS), where OpenBLAS is far from the
 * machine's limits: sgemm with M = 1..32 reaches a fraction of its peak and
 * its threads split the rows, so each one reads the whole weight matrix.
 *
 * Here the weight rows (OC) are split into one contiguous slice per OpenMP
 * thread, so every weight byte is read from memory once per call by one
 * thread, and a register-blocked dot-product kernel (4 weight rows x up to 3
 * input rows, AVX2 + FMA where the compiler targets it, plain C otherwise)
 * reuses each weight tile from L1 for all N input rows. At up to 6 rows
 * (mostly bandwidth-bound) each thread reads its slice as 4 streams side by
 * side, which this machine's memory serves 1.15-1.5x faster than one.
 *
 * Every output element is summed in the same order whatever N, the tile it
 * falls in and the thread count, so a row's result does not depend on which
 * other rows share the batch (batched decoding gives batch-1 logits bit for
 * bit). */
#ifndef ALIGN_MATMUL_SMALL_H
#define ALIGN_MATMUL_SMALL_H

/* Largest N msmall_forward is meant for: above it sgemm's packing pays. */
#define MSMALL_MAX_ROWS 32

/* out[N,OC] = inp[N,C] @ w[OC,C]^T (+ bias[OC] when non-NULL). Any N >= 1 is
 * computed correctly; it is only fast for small N. Opens one OpenMP parallel
 * region (or runs on the calling thread when called inside one). */
void msmall_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);

#endif
