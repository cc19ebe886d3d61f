/* bench_allreduce: the gradient all-reduce alone (dist_allreduce_sum, i.e.
 * MPI_Allreduce of floats, in place), after a barrier so no rank's wait for
 * a slower one is counted: seconds per call and the bus bandwidth
 * 2(N-1)/N x bytes / seconds (the ring all-reduce's traffic per rank).
 * Not a test. mpirun -np 2 ./build/bin/bench_allreduce [--mib 16] [--reps 20]
 * prints one JSON object from rank 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "util.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    double mib = 16;
    int reps = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mib")) mib = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_allreduce: unknown flag %s (--mib, --reps)\n", argv[i]);
            return 2;
        }
    }
    if (mib <= 0 || reps < 1) {
        fprintf(stderr, "bench_allreduce: --mib must be > 0 and --reps >= 1\n");
        return 2;
    }
    if (dist_init("bench_allreduce", 60)) {
        fprintf(stderr, "bench_allreduce: %s\n", align_error());
        return 1;
    }
    size_t n = (size_t)(mib * 1048576 / sizeof(float));
    float *buf = malloc(n * sizeof(float));
    double *t = malloc((size_t)reps * sizeof(double));
    if (!buf || !t) return 1;
    for (size_t i = 0; i < n; i++) buf[i] = 1e-3f * (float)(i % 1000);
    for (int r = -2; r < reps; r++) { /* two warm-up calls */
        if (dist_barrier()) break;
        double t0 = align_now();
        if (dist_allreduce_sum(buf, n)) {
            fprintf(stderr, "bench_allreduce: %s\n", align_error());
            return 1;
        }
        if (r >= 0) t[r] = align_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    int N = dist_size();
    double bytes = (double)n * sizeof(float), med = t[reps / 2];
    if (dist_rank() == 0)
        printf("{\"ranks\": %d, \"mib\": %.2f, \"reps\": %d, \"median_s\": %.6f, \"min_s\": %.6f, \"bus_gb_per_s\": %.3f}\n", N,
               bytes / 1048576, reps, med, t[0], N > 1 ? 2.0 * (N - 1) / N * bytes / med / 1e9 : 0.0);
    free(buf), free(t);
    return 0;
}
