/* bench_decode: KV-cache decoding speed on the SmolLM2-135M shape (Llama,
 * dim 576, 30 layers, 9 heads / 3 kv heads of 64, ffn 1536, vocab 49152,
 * tied embeddings, random weights). Prints one JSON object:
 *
 *   decode_b1     tokens/s of one sequence (forward + greedy sampling),
 *                 and that as a fraction of the memory-bandwidth bound:
 *                 bound = copy bandwidth / weight bytes read per token
 *                 (every weight is read once per step at batch 1)
 *   decode_b16    aggregate tokens/s of 16 sequences decoding together,
 *                 and the ratio to batch 1
 *   generate_b16  generate_run end to end (16 prompts, top-p sampling,
 *                 prefill included)
 *   prefill       tokens/s of one long prompt and of packed prompts
 *   generate_n4   4 samples of a prompt sharing its prefill, against the
 *                 same prompt repeated as 4 prompts of one sample
 *   ops_b1        (cpu) each linear layer at one row: the backend's matmul
 *                 (matmul_small.c for up to 32 rows), cblas_sgemv and a plain
 *                 OpenMP gemv against its own bandwidth bound; at 16 rows the
 *                 backend against a plain cblas_sgemm (what it replaced);
 *                 and the time of the rest of a step
 *
 * Bandwidth: a large copy through the backend (memcpy on the CPU) and, on
 * the CPU, the same copy split over the OpenMP threads; bytes counted are
 * read + written (STREAM's convention). The bound uses the larger. On the
 * CPU also the read-only bandwidth (a parallel sum) and decode_b1 as a
 * fraction of it: a step only reads weights, and reading is slower than a
 * copy's read + write on some machines (this one: ~22 vs ~28 GB/s).
 *
 * Rounds (--rounds, default 5): each measures the copy (and read) bandwidth,
 * then batch 1, then batch B, back to back; fraction_of_bound and
 * ratio_to_b1 are the medians of the per-round figures (each from one
 * round's own measurements), tokens/s the medians over rounds, and every
 * round's figure is listed (*_rounds) so the spread is visible.
 *
 *   bench_decode [--steps N] [--prompt-len P] [--batch B] [--rounds R] [--device cpu|cuda] */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "generate.h"
#include "kvcache.h"
#include "model.h"
#include "rng.h"
#include "sampler.h"
#include "bench_util.h"
#include "util.h"

static void smollm2_135m(ModelConfig *c) {
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 49152, c->dim = 576, c->n_layers = 30, c->n_heads = 9, c->n_kv_heads = 3;
    c->head_dim = 64, c->ffn_dim = 1536, c->rope_theta = 100000, c->tied_embeddings = 1;
    c->norm_eps = 1e-5f, c->max_seq_len = 8192;
}

/* Copy bandwidth in bytes/s (read + write), best of reps. */
static double copy_bw(const Backend *be, size_t bytes, int threads) {
    char *a = be->alloc(bytes), *b = be->alloc(bytes);
    if (!a || !b) return 0;
    be->copy(b, a, bytes); /* touch */
    double best = 0;
    for (int r = 0; r < 5; r++) {
        be->sync();
        double t = align_now();
        if (threads) {
#pragma omp parallel
            {
                int n = omp_get_num_threads(), i = omp_get_thread_num();
                size_t per = (bytes / n + 4095) & ~(size_t)4095, lo = per * i;
                if (lo < bytes) memcpy(b + lo, a + lo, lo + per > bytes ? bytes - lo : per);
            }
        } else {
            be->copy(b, a, bytes);
        }
        be->sync();
        t = align_now() - t;
        if (2.0 * bytes / t > best) best = 2.0 * bytes / t;
    }
    be->free(a), be->free(b);
    return best;
}

/* Read-only bandwidth in bytes/s (CPU), best of reps: every OpenMP thread
 * sums its share of a large buffer as 4 parts side by side, the access
 * pattern of matmul_small at one row (4 streams per core read faster than
 * one here: ~1.35x). A decoding step only reads weights, so this is the
 * bound a gemv can reach; a copy also writes, with non-temporal stores that
 * do not compete with the reads in the same way. */
static double read_bw(size_t bytes) {
    size_t n = bytes / sizeof(float);
    float *a = align_alloc(n * sizeof(float));
    if (!a) return 0;
    for (size_t i = 0; i < n; i++) a[i] = 1.0f;
    double best = 0;
    volatile float sink = 0;
    int nt = omp_get_max_threads();
    size_t part = n / nt / 4, read = part * 4 * nt * sizeof(float);
    for (int r = 0; r < 5; r++) {
        double t = align_now();
        float tot = 0;
#pragma omp parallel num_threads(nt) reduction(+ : tot)
        {
            const float *p = a + (size_t)omp_get_thread_num() * 4 * part;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (size_t i = 0; i < part; i++) s0 += p[i], s1 += p[part + i], s2 += p[2 * part + i], s3 += p[3 * part + i];
            tot += s0 + s1 + s2 + s3;
        }
        t = align_now() - t;
        sink += tot;
        if (read / t > best) best = read / t;
    }
    align_free(a);
    return best;
}

/* Bytes of weights one decoding step reads: every tensor, except that an
 * untied embedding table is only read one row per token. */
static double weight_bytes_per_token(const Model *m) {
    double bytes = (double)m->n_elems * 4;
    if (!m->cfg.tied_embeddings) bytes -= ((double)m->cfg.vocab_size - 1) * m->cfg.dim * 4;
    return bytes;
}

static int fill_prompts(int32_t *tokens, int n, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tokens[i] = (int32_t)rng_below(&r, V);
    return 0;
}

/* Prefill B prompts of P tokens, then `steps` decode steps of one token per
 * sequence with greedy sampling. Returns decode tokens/s; *fwd_s and
 * *sample_s receive the time per step in the forward and in sampling. */
static double decode(Model *m, int B, int P, int steps, double *fwd_s, double *sample_s) {
    int V = m->cfg.vocab_size;
    KVCache *kv = kvcache_create(m, B, P + steps + 1);
    if (!kv) align_die_error("bench_decode");
    int32_t *tokens = malloc(sizeof(int32_t) * B * P), *starts = malloc(sizeof(int32_t) * (B + 1)),
            *slots = malloc(sizeof(int32_t) * B), *next = malloc(sizeof(int32_t) * B);
    float *logits = malloc(sizeof(float) * B * V);
    fill_prompts(tokens, B * P, V, 7);
    for (int s = 0; s <= B; s++) starts[s] = s * P;
    for (int s = 0; s < B; s++) slots[s] = s;
    Batch pre = {.n_tokens = B * P, .n_seqs = B, .tokens = tokens, .seq_start = starts};
    if (model_forward_cached(m, kv, slots, &pre, logits)) align_die_error("bench_decode");
    Sampler *sp = sampler_create(V);
    SamplerConfig sc = {.temperature = 0, .top_k = 0, .top_p = 1};
    for (int s = 0; s < B; s++) next[s] = sampler_sample(sp, &sc, logits + (size_t)s * V, NULL, NULL);
    for (int s = 0; s <= B; s++) starts[s] = s;
    double tf = 0, ts = 0;
    for (int k = 0; k < steps; k++) {
        Batch dec = {.n_tokens = B, .n_seqs = B, .tokens = next, .seq_start = starts};
        double t0 = align_now();
        if (model_forward_cached(m, kv, slots, &dec, logits)) align_die_error("bench_decode");
        double t1 = align_now();
        for (int s = 0; s < B; s++) next[s] = sampler_sample(sp, &sc, logits + (size_t)s * V, NULL, NULL);
        ts += align_now() - t1;
        tf += t1 - t0;
    }
    *fwd_s = tf / steps, *sample_s = ts / steps;
    sampler_free(sp);
    kvcache_free(kv);
    free(tokens), free(starts), free(slots), free(next), free(logits);
    return (double)B * steps / (tf + ts);
}

/* Tokens/s of prefilling B prompts of P tokens in one call (best of 2). */
static double prefill(Model *m, int B, int P) {
    KVCache *kv = kvcache_create(m, B, P);
    if (!kv) align_die_error("bench_decode");
    int32_t *tokens = malloc(sizeof(int32_t) * B * P), *starts = malloc(sizeof(int32_t) * (B + 1)),
            *slots = malloc(sizeof(int32_t) * B);
    float *logits = malloc(sizeof(float) * B * m->cfg.vocab_size);
    fill_prompts(tokens, B * P, m->cfg.vocab_size, 8);
    for (int s = 0; s <= B; s++) starts[s] = s * P;
    for (int s = 0; s < B; s++) slots[s] = s;
    double best = 1e30;
    for (int r = 0; r < 2; r++) {
        for (int s = 0; s < B; s++) kvcache_reset(kv, s);
        Batch b = {.n_tokens = B * P, .n_seqs = B, .tokens = tokens, .seq_start = starts};
        double t = align_now();
        if (model_forward_cached(m, kv, slots, &b, logits)) align_die_error("bench_decode");
        t = align_now() - t;
        if (t < best) best = t;
    }
    kvcache_free(kv);
    free(tokens), free(starts), free(slots), free(logits);
    return (double)B * P / best;
}

/* generate_run end to end: B prompts of P tokens, `steps` new tokens each. */
static double generate_e2e(Model *m, int B, int P, int steps) {
    int32_t *tokens = malloc(sizeof(int32_t) * B * P);
    fill_prompts(tokens, B * P, m->cfg.vocab_size, 9);
    GenPrompt *p = malloc(sizeof(GenPrompt) * B);
    for (int i = 0; i < B; i++) p[i] = (GenPrompt){tokens + i * P, P};
    GenConfig gc;
    generate_config_defaults(&gc);
    gc.sampler.temperature = 1.0f, gc.sampler.top_p = 0.9f;
    gc.max_new_tokens = steps, gc.n_slots = B, gc.seed = 1;
    GenOutput *out = calloc(B, sizeof *out);
    double t = align_now();
    if (generate_run(m, &gc, p, B, out, NULL, NULL)) align_die_error("bench_decode");
    t = align_now() - t;
    long n = 0;
    for (int i = 0; i < B; i++) n += out[i].n_tokens;
    generate_outputs_free(out, B);
    free(out), free(p), free(tokens);
    return n / t;
}

/* Seconds for n samples of each of np prompts of P tokens (max_new new
 * tokens each, temperature 1): with n_samples = n the samples of a prompt
 * share its prefill; the same work as np * n prompts of one sample each
 * (repeat) prefills every copy. */
static double generate_samples(Model *m, int np, int n, int P, int max_new, int repeat) {
    int32_t *tokens = malloc(sizeof(int32_t) * np * P);
    fill_prompts(tokens, np * P, m->cfg.vocab_size, 10);
    int n_prompts = repeat ? np * n : np;
    GenPrompt *p = malloc(sizeof(GenPrompt) * n_prompts);
    for (int i = 0; i < n_prompts; i++) p[i] = (GenPrompt){tokens + (repeat ? i / n : i) * P, P};
    GenConfig gc;
    generate_config_defaults(&gc);
    gc.max_new_tokens = max_new, gc.n_slots = np * n, gc.seed = 1, gc.n_samples = repeat ? 1 : n;
    GenOutput *out = calloc(np * n, sizeof *out);
    double t = align_now();
    if (generate_run(m, &gc, p, n_prompts, out, NULL, NULL)) align_die_error("bench_decode");
    t = align_now() - t;
    generate_outputs_free(out, np * n);
    free(out), free(p), free(tokens);
    return t;
}

/* y[OC] = W[OC,C] x[C]: the plain reference a one-row linear layer could be. */
static void gemv(float *y, const float *x, const float *w, int C, int OC) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        const float *r = w + (size_t)o * C;
        float acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int i = 0; i < C; i++) acc += r[i] * x[i];
        y[o] = acc;
    }
}

typedef struct {
    const char *name;
    int C, OC;
    double be_s, gemv_s, sgemv_s, bound_s; /* seconds per call at one row */
    double be16_s, sgemm16_s;               /* at 16 rows */
} OpTime;

/* One linear shape at one row through the backend's matmul and through
 * gemv, cycling over every layer's copy of the weight (w[l]) so nothing
 * stays in cache between calls. */
static void time_linear(const Model *m, OpTime *op, const float *const *w, int n_w, double bw) {
    const Backend *be = m->be;
    float *x = be->alloc(sizeof(float) * 16 * op->C), *y = be->alloc(sizeof(float) * 16 * op->OC);
    for (int i = 0; i < 16 * op->C; i++) x[i] = 0.01f * (i % 13);
    int reps = n_w > 1 ? 3 : 20;
    double best_s = 1e30, best_g = 1e30, best_v = 1e30, best_16 = 1e30, best_b16 = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = align_now();
        for (int l = 0; l < n_w; l++) be->matmul_forward(y, x, w[l], NULL, 1, op->C, op->OC);
        t = (align_now() - t) / n_w;
        if (t < best_s) best_s = t;
        t = align_now();
        for (int l = 0; l < n_w; l++) gemv(y, x, w[l], op->C, op->OC);
        t = (align_now() - t) / n_w;
        if (t < best_g) best_g = t;
        t = align_now();
        for (int l = 0; l < n_w; l++)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, op->OC, op->C, 1.0f, w[l], op->C, x, 1, 0.0f, y, 1);
        t = (align_now() - t) / n_w;
        if (t < best_v) best_v = t;
        t = align_now();
        for (int l = 0; l < n_w; l++) be->matmul_forward(y, x, w[l], NULL, 16, op->C, op->OC);
        t = (align_now() - t) / n_w;
        if (t < best_b16) best_b16 = t;
        t = align_now();
        for (int l = 0; l < n_w; l++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 16, op->OC, op->C, 1.0f, x, op->C, w[l], op->C, 0.0f,
                        y, op->OC);
        t = (align_now() - t) / n_w;
        if (t < best_16) best_16 = t;
    }
    op->be_s = best_s, op->gemv_s = best_g, op->sgemv_s = best_v, op->be16_s = best_b16, op->sgemm16_s = best_16;
    op->bound_s = (double)op->C * op->OC * 4 / bw;
    be->free(x), be->free(y);
}


/* Median of x[0..n) (x is left as it is). */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(const double *x, int n) {
    double *t = malloc(sizeof(double) * n);
    memcpy(t, x, sizeof(double) * n);
    qsort(t, n, sizeof(double), cmp_double);
    double m = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    free(t);
    return m;
}

/*     "name_rounds": [x0, x1, ...] (no newline) */
static void print_rounds(const char *name, const double *x, int n, int decimals) {
    printf("    \"%s_rounds\": [", name);
    for (int r = 0; r < n; r++) printf("%s%.*f", r ? ", " : "", decimals, x[r]);
    printf("]");
}

/* Cost of one empty OpenMP parallel region (fork + join), seconds. */
static double omp_region_cost(void) {
    volatile int sink = 0;
    double t = align_now();
    for (int r = 0; r < 20000; r++) {
#pragma omp parallel
        {
            if (omp_get_thread_num() == 0) sink++;
        }
    }
    return (align_now() - t) / 20000;
}

int main(int argc, char **argv) {
    int steps = 64, P = 32, B = 16, rounds = 5;
    const char *device = "cpu";
    CliFlag flags[] = {
        {"steps", CLI_INT, &steps, "decode steps timed", CLI_AT_LEAST_1},
        {"prompt-len", CLI_INT, &P, "prompt tokens per sequence before decoding", CLI_AT_LEAST_1},
        {"batch", CLI_INT, &B, "sequences in the batched decode", CLI_AT_LEAST_1},
        {"device", CLI_STRING, &device, "cpu or cuda"},
        {"rounds", CLI_INT, &rounds, "rounds of (bandwidth, batch 1, batch B); medians are reported", CLI_AT_LEAST_1},
    };
    CliSpec spec = {.prog = "bench_decode", .usage = "bench_decode [flags]",
                    .about = "KV-cache decode and prefill throughput on the SmolLM2-135M shape; prints JSON.",
                    .flags = flags, .n_flags = 5};
    cli_parse_or_exit(&spec, argc, argv);
    const Backend *be = backend_get(device);
    if (!be) align_die_error("bench_decode");
    ModelConfig c;
    smollm2_135m(&c);
    Model *m = model_create(&c, be);
    if (!m) align_die_error("bench_decode");
    model_set_trainable(m, "", 0); /* inference only: no gradient buffer */
    model_init_random(m, 1);
    int is_cpu = !strcmp(be->name, "cpu");

    double wbytes = weight_bytes_per_token(m);
    size_t bw_bytes = (size_t)512 << 20;
    double bw_memcpy = copy_bw(be, bw_bytes, 0);

    /* Rounds: bandwidth, batch 1 and batch B measured back to back, so each
     * round's fraction and ratio compare figures taken under the same
     * conditions (a shared machine's speed drifts by 1.5x within minutes);
     * the medians over rounds are reported. */
    double f1 = 0, s1 = 0, f16 = 0, s16 = 0;
    int steps16 = steps / 2 > 8 ? steps / 2 : 8;
    decode(m, 1, P, 4, &f16, &s16); /* warm up */
    f16 = s16 = 0;
    double *bw_r = malloc(sizeof(double) * 7 * rounds), *rd_r = bw_r + rounds, *tps1_r = rd_r + rounds,
           *tpsB_r = tps1_r + rounds, *frac_r = tpsB_r + rounds, *ratio_r = frac_r + rounds,
           *frac_read_r = ratio_r + rounds;
    for (int r = 0; r < rounds; r++) {
        bw_r[r] = is_cpu ? copy_bw(be, bw_bytes, 1) : bw_memcpy;
        if (bw_r[r] < bw_memcpy) bw_r[r] = bw_memcpy; /* the bound uses the faster copy */
        rd_r[r] = is_cpu ? read_bw(bw_bytes) : 0;
        double f, sm;
        tps1_r[r] = decode(m, 1, P, steps, &f, &sm);
        f1 += f / rounds, s1 += sm / rounds;
        tpsB_r[r] = decode(m, B, P, steps16, &f, &sm);
        f16 += f / rounds, s16 += sm / rounds;
        frac_r[r] = tps1_r[r] * wbytes / bw_r[r], ratio_r[r] = tpsB_r[r] / tps1_r[r];
        frac_read_r[r] = is_cpu ? tps1_r[r] * wbytes / rd_r[r] : 0;
    }
    double bw = median(bw_r, rounds), bw_read = median(rd_r, rounds), bound = bw / wbytes;
    double tps1 = median(tps1_r, rounds), tpsB = median(tpsB_r, rounds);
    double frac = median(frac_r, rounds), ratio = median(ratio_r, rounds);
    double frac_read = median(frac_read_r, rounds);
    double gen = generate_e2e(m, B, P, steps16);
    double pre1 = prefill(m, 1, 512), pre4 = prefill(m, 4, 128);
    double n4_shared = generate_samples(m, 2, 4, 256, 8, 0), n4_own = generate_samples(m, 2, 4, 256, 8, 1);

    printf("{\n  \"model\": \"smollm2-135m shape (random weights)\",\n  \"device\": \"%s\",\n  \"threads\": %d,\n",
           be->name, omp_get_max_threads());
    printf("  \"params\": %zu,\n  \"weight_bytes_per_token\": %.0f,\n", m->n_elems, wbytes);
    printf("  \"rounds\": %d,\n", rounds);
    printf("  \"copy_bandwidth_gb_s\": {\"memcpy\": %.2f, \"used_median\": %.2f},\n", bw_memcpy / 1e9, bw / 1e9);
    printf("  \"bandwidth_bound_tokens_per_s\": %.2f,\n", bound);
    if (is_cpu) printf("  \"read_bandwidth_gb_s\": %.2f,\n", bw_read / 1e9);
    printf("  \"decode_b1\": {\"tokens_per_s\": %.2f, \"fraction_of_bound\": %.3f, ", tps1, frac);
    if (is_cpu) printf("\"fraction_of_read_bound\": %.3f, ", frac_read);
    printf("\"forward_ms\": %.2f, \"sample_ms\": %.3f, \"prompt_len\": %d, \"steps\": %d,\n", f1 * 1e3, s1 * 1e3, P,
           steps);
    print_rounds("fraction_of_bound", frac_r, rounds, 3);
    printf(",\n");
    print_rounds("tokens_per_s", tps1_r, rounds, 1);
    printf("},\n");
    printf("  \"decode_b%d\": {\"tokens_per_s\": %.2f, \"ratio_to_b1\": %.2f, \"forward_ms\": %.2f, \"sample_ms\": %.3f, "
           "\"steps\": %d,\n",
           B, tpsB, ratio, f16 * 1e3, s16 * 1e3, steps16);
    print_rounds("ratio_to_b1", ratio_r, rounds, 2);
    printf(",\n");
    print_rounds("tokens_per_s", tpsB_r, rounds, 1);
    printf("},\n");
    printf("  \"generate_b%d\": {\"tokens_per_s\": %.2f, \"note\": \"generate_run, top_p 0.9, prefill of %d x %d included\"},\n",
           B, gen, B, P);
    printf("  \"prefill\": {\"tokens_per_s_1x512\": %.1f, \"tokens_per_s_4x128\": %.1f},\n", pre1, pre4);
    printf("  \"generate_n4\": {\"shared_prompt_s\": %.2f, \"prompt_per_sample_s\": %.2f, \"speedup\": %.2f, "
           "\"note\": \"2 prompts of 256 tokens x 4 samples x 8 new tokens\"}",
           n4_shared, n4_own, n4_own / n4_shared);
    if (is_cpu) {
        int L = c.n_layers;
        const float **w = malloc(sizeof(float *) * L);
        OpTime ops[5] = {{"qkv", c.dim, (c.n_heads + 2 * c.n_kv_heads) * c.head_dim},
                         {"o_proj", c.n_heads * c.head_dim, c.dim},
                         {"gate_up", c.dim, 2 * c.ffn_dim},
                         {"down", c.ffn_dim, c.dim},
                         {"lm_head", c.dim, c.vocab_size}};
        for (int k = 0; k < 5; k++) {
            for (int l = 0; l < L; l++)
                w[l] = k == 0 ? m->w.layers[l].wq : k == 1 ? m->w.layers[l].wo : k == 2 ? m->w.layers[l].w_gate
                                                                                        : m->w.layers[l].w_down;
            if (k == 4) w[0] = m->w.lm_head;
            time_linear(m, &ops[k], w, k == 4 ? 1 : L, bw);
        }
        free(w);
        double lin_be = 0, lin_gemv = 0, lin_sgemv = 0, lin_bound = 0, lin_be16 = 0, lin16 = 0;
        for (int k = 0; k < 5; k++) {
            int times = k == 4 ? 1 : L;
            lin_be += times * ops[k].be_s, lin_gemv += times * ops[k].gemv_s, lin_bound += times * ops[k].bound_s;
            lin_sgemv += times * ops[k].sgemv_s, lin_be16 += times * ops[k].be16_s, lin16 += times * ops[k].sgemm16_s;
        }
        double peak = bench_sgemm_peak();
        printf(",\n  \"ops_b1\": {\n");
        for (int k = 0; k < 5; k++)
            printf("    \"%s\": {\"shape\": [%d, %d], \"backend_us\": %.1f, \"cblas_sgemv_us\": %.1f, \"omp_gemv_us\": %.1f, "
                   "\"bound_us\": %.1f, \"backend_16rows_us\": %.1f, \"backend_16rows_gflops\": %.1f, "
                   "\"sgemm_16rows_us\": %.1f, \"sgemm_16rows_gflops\": %.1f},\n",
                   ops[k].name, ops[k].OC, ops[k].C, ops[k].be_s * 1e6, ops[k].sgemv_s * 1e6, ops[k].gemv_s * 1e6,
                   ops[k].bound_s * 1e6, ops[k].be16_s * 1e6, 2.0 * 16 * ops[k].C * ops[k].OC / ops[k].be16_s / 1e9,
                   ops[k].sgemm16_s * 1e6, 2.0 * 16 * ops[k].C * ops[k].OC / ops[k].sgemm16_s / 1e9);
        printf("    \"linear_total_ms\": {\"backend\": %.2f, \"cblas_sgemv\": %.2f, \"omp_gemv\": %.2f, \"bound\": %.2f, "
               "\"backend_16rows\": %.2f, \"sgemm_16rows\": %.2f},\n",
               lin_be * 1e3, lin_sgemv * 1e3, lin_gemv * 1e3, lin_bound * 1e3, lin_be16 * 1e3, lin16 * 1e3);
        printf("    \"sgemm_peak_gflops\": %.1f,\n", peak / 1e9);
        printf("    \"rest_of_step_ms\": %.2f,\n", (f1 - lin_be) * 1e3);
        printf("    \"omp_parallel_region_us\": %.2f\n  }", omp_region_cost() * 1e6);
    }
    printf("\n}\n");
    free(bw_r);
    model_free(m);
    cli_free(&spec);
    return 0;
}
