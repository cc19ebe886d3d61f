/* bench_mquant: the CPU backend's matmul_forward_q_int8 (mquant_forward in
 * cpu/matmul_quant.c, the int8 kernels `generate` runs on a quantised
 * GGUF) alone, for quick loops on one kernel: CPU
 * milliseconds per call, best of --reps (each rep the mean of 10 calls),
 * for each N of --ns at one weight shape. Random blocks (block scales set
 * to 2^-7 so no fp16 scale is Inf/NaN), random inputs in [-1, 1]. Prints
 * one JSON object.
 *
 *   bench_mquant [--type q8_0] [--ns 1,16,256] [--c 576] [--oc 1536] [--reps 5]
 *
 * With 1 thread and C = 576, OC = 1536 the weight (0.5-0.9 MB) sits in L2:
 * the kernel's arithmetic, not the memory, is measured (bench_gguf_decode
 * measures the whole model, weights from DRAM). */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli.h"
#include "backend.h"
#include "quant.h"
#include "util.h"

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *type = "q8_0", *ns = "1,16,256";
    int C = 576, OC = 1536, reps = 5;
    CliFlag flags[] = {
        {"type", CLI_STRING, &type, "weight block type: q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k"},
        {"ns", CLI_STRING, &ns, "input row counts, comma-separated"},
        {"c", CLI_INT, &C, "inputs per row (a multiple of the type's block)", CLI_AT_LEAST_1},
        {"oc", CLI_INT, &OC, "weight rows", CLI_AT_LEAST_1},
        {"reps", CLI_INT, &reps, "repetitions (best taken)", CLI_AT_LEAST_1},
    };
    CliSpec spec = {.prog = "bench_mquant", .usage = "bench_mquant [flags]",
                    .about = "CPU time of mquant_forward at one weight shape and several input row counts.",
                    .flags = flags, .n_flags = sizeof flags / sizeof flags[0]};
    cli_parse_or_exit(&spec, argc, argv);
    QuantType t = QUANT_NONE;
    for (int q = 1; q <= QUANT_Q6_K; q++)
        if (quant_is_ggml((QuantType)q) && !strcasecmp(quant_name((QuantType)q), type)) t = (QuantType)q;
    if (t == QUANT_NONE) {
        fprintf(stderr, "bench_mquant: --type %s is not a ggml block type (q4_0 .. q6_k)\n", type);
        return 2;
    }
    if (C % quant_block_elems(t)) {
        fprintf(stderr, "bench_mquant: --c %d is not a multiple of %s's block of %d\n", C, type, quant_block_elems(t));
        return 2;
    }
    size_t rb = quant_row_bytes(t, C);
    uint8_t *w = malloc(rb * OC);
    srand(1);
    for (size_t i = 0; i < rb * OC; i++) w[i] = (uint8_t)rand();
    /* every fp16 at a block's or super-block's scale offsets: 2^-7 */
    int be = quant_block_elems(t), bb = (int)quant_row_bytes(t, be);
    for (size_t blk = 0; blk < (size_t)OC * (C / be); blk++) {
        uint8_t *p = w + blk * bb;
        int at = t == QUANT_Q6_K ? bb - 2 : 0, n = t == QUANT_Q4_1 || t == QUANT_Q5_1 || t == QUANT_Q4_K || t == QUANT_Q5_K ? 2 : 1;
        for (int k = 0; k < n; k++) p[at + 2 * k] = 0x00, p[at + 2 * k + 1] = 0x20;
    }
    printf("{\"type\": \"%s\", \"c\": %d, \"oc\": %d, \"threads\": %d, \"ms\": {", type, C, OC, omp_get_max_threads());
    const char *s = ns;
    for (int first = 1; *s; first = 0) {
        int N = atoi(s);
        if (N < 1) {
            fprintf(stderr, "bench_mquant: --ns %s: %d is not a row count\n", ns, N);
            return 2;
        }
        float *x = malloc(sizeof(float) * N * C), *out = malloc(sizeof(float) * N * OC);
        for (int i = 0; i < N * C; i++) x[i] = (float)(rand() % 2001 - 1000) / 1000.0f;
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = cpu_now();
            for (int k = 0; k < 10; k++) {
                backend_cpu.matmul_forward_q_int8(out, x, w, t, NULL, N, C, OC);
                if (backend_cpu.status()) {
                    fprintf(stderr, "bench_mquant: %s\n", align_error());
                    return 1;
                }
            }
            double dt = (cpu_now() - t0) / 10;
            best = dt < best ? dt : best;
        }
        printf("%s\"%d\": %.4f", first ? "" : ", ", N, best * 1e3);
        free(x), free(out);
        while (*s && *s != ',') s++;
        if (*s) s++;
    }
    printf("}}\n");
    cli_free(&spec);
    free(w);
    return 0;
}
