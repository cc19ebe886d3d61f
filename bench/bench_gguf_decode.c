/* bench_gguf_decode: decoding speed on a real GGUF, the way `generate`
 * runs it (gguf_import_blocks: the file's blocks, int8 inputs), for
 * generate_vs_llamacpp.py to set beside llama.cpp on the same file, prompt
 * ids and threads. Prints one JSON object:
 *
 *   prefill     one prompt of --prefill tokens (the prompt ids repeated) in
 *               one forward: tokens/s (best of --reps)
 *   decode_b1   the prompt, then --steps greedy steps of one sequence:
 *               tokens/s of the steps (forward + argmax), best of --reps
 *   decode_bB   --batch sequences of the same prompt prefilled together,
 *               then --steps steps of all of them: aggregate tokens/s
 *   tokens_b1   the greedy ids of the batch-1 run (to compare texts)
 *   cpu_s       process CPU seconds of each best run (robust on a loaded
 *               machine: with 1 thread, wall = CPU when idle)
 *
 * Every step decodes a fixed number of tokens (no stop at EOS), so both
 * sides do the same work.
 *
 *   bench_gguf_decode MODEL.gguf --prompt-ids 1,2,3 [--steps 64] [--batch 16] [--prefill 256] [--reps 3] */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "gguf.h"
#include "kvcache.h"
#include "quant.h"
#include "util.h"

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

typedef struct {
    double wall, cpu;
} Timing;

/* B sequences of the prompt, prefilled in one forward, then `steps` greedy
 * steps of all B; the steps' timing (and the prefill's in *pre). */
static void run(Model *m, const int32_t *prompt, int P, int B, int steps, int32_t *out_ids, Timing *dec, Timing *pre) {
    int V = m->cfg.vocab_size;
    KVCache *kv = kvcache_create(m, B, P + steps + 1);
    if (!kv) align_die_error("bench_gguf_decode");
    int32_t *tokens = malloc(sizeof(int32_t) * B * P), *starts = malloc(sizeof(int32_t) * (B + 1)),
            *slots = malloc(sizeof(int32_t) * B), *next = malloc(sizeof(int32_t) * B);
    float *logits = malloc(sizeof(float) * B * V);
    for (int s = 0; s < B; s++) memcpy(tokens + s * P, prompt, P * sizeof(int32_t)), slots[s] = s;
    for (int s = 0; s <= B; s++) starts[s] = s * P;
    Batch b = {.n_tokens = B * P, .n_seqs = B, .tokens = tokens, .seq_start = starts};
    double w0 = align_now(), c0 = cpu_now();
    if (model_forward_cached(m, kv, slots, &b, logits)) align_die_error("bench_gguf_decode");
    if (pre) pre->wall = align_now() - w0, pre->cpu = cpu_now() - c0;
    for (int s = 0; s < B; s++) next[s] = argmax(logits + (size_t)s * V, V);
    for (int s = 0; s <= B; s++) starts[s] = s;
    w0 = align_now(), c0 = cpu_now();
    for (int k = 0; k < steps; k++) {
        if (out_ids) out_ids[k] = next[0];
        Batch d = {.n_tokens = B, .n_seqs = B, .tokens = next, .seq_start = starts};
        if (model_forward_cached(m, kv, slots, &d, logits)) align_die_error("bench_gguf_decode");
        for (int s = 0; s < B; s++) next[s] = argmax(logits + (size_t)s * V, V);
    }
    dec->wall = align_now() - w0, dec->cpu = cpu_now() - c0;
    kvcache_free(kv);
    free(tokens), free(starts), free(slots), free(next), free(logits);
}

static void best(Timing *acc, Timing t) {
    if (acc->wall == 0 || t.wall < acc->wall) *acc = t;
}

int main(int argc, char **argv) {
    int steps = 64, B = 16, PF = 256, reps = 3;
    const char *ids = NULL;
    CliFlag flags[] = {
        {"prompt-ids", CLI_STRING, &ids, "comma-separated prompt token ids"},
        {"steps", CLI_INT, &steps, "greedy decode steps timed", CLI_AT_LEAST_1},
        {"batch", CLI_INT, &B, "sequences in the batched decode", CLI_AT_LEAST_1},
        {"prefill", CLI_INT, &PF, "prompt tokens of the prefill measurement", CLI_AT_LEAST_1},
        {"reps", CLI_INT, &reps, "repetitions; the best is reported", CLI_AT_LEAST_1},
    };
    CliSpec spec = {.prog = "bench_gguf_decode", .usage = "bench_gguf_decode MODEL.gguf --prompt-ids IDS [flags]",
                    .about = "prefill, batch-1 and batch-B greedy decode on a GGUF's own blocks; prints JSON.",
                    .flags = flags, .n_flags = 5, .min_positional = 1, .max_positional = 1};
    cli_parse_or_exit(&spec, argc, argv);
    if (!ids) align_die("bench_gguf_decode", "--prompt-ids is required");
    int32_t prompt[4096];
    int P = 0;
    for (const char *s = ids; *s && P < 4096;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) align_die("bench_gguf_decode", "--prompt-ids: '%s' is not a list of integers", ids);
        prompt[P++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    ModelBundle mb;
    if (gguf_import_blocks(spec.positional[0], &backend_cpu, &mb)) align_die_error("bench_gguf_decode");
    Model *m = mb.model;
    model_set_trainable(m, "", 0);
    int32_t *pf = malloc(sizeof(int32_t) * PF), *ids1 = malloc(sizeof(int32_t) * steps);
    for (int i = 0; i < PF; i++) pf[i] = prompt[i % P];
    Timing t1 = {0}, tB = {0}, tp = {0}, t;
    Timing dummy;
    run(m, prompt, P, 1, 4, NULL, &dummy, NULL); /* warm up */
    for (int r = 0; r < reps; r++) {
        Timing p;
        run(m, pf, PF, 1, 1, NULL, &dummy, &p);
        best(&tp, p);
        run(m, prompt, P, 1, steps, ids1, &t, NULL);
        best(&t1, t);
        run(m, prompt, P, B, steps, NULL, &t, NULL);
        best(&tB, t);
    }
    printf("{\n  \"model\": \"%s\",\n  \"threads\": %d,\n  \"prompt_tokens\": %d,\n  \"steps\": %d,\n",
           spec.positional[0], omp_get_max_threads(), P, steps);
    printf("  \"lm_head\": \"%s\",\n", m->lm_head_q ? quant_name((QuantType)m->lm_head_qtype) : "f32");
    printf("  \"prefill\": {\"tokens\": %d, \"tokens_per_s\": %.1f, \"cpu_s\": %.3f},\n", PF, PF / tp.wall, tp.cpu);
    printf("  \"decode_b1\": {\"tokens_per_s\": %.1f, \"cpu_s\": %.3f},\n", steps / t1.wall, t1.cpu);
    printf("  \"decode_b%d\": {\"tokens_per_s\": %.1f, \"cpu_s\": %.3f},\n", B, (double)B * steps / tB.wall, tB.cpu);
    printf("  \"tokens_b1\": [");
    for (int k = 0; k < steps; k++) printf("%s%d", k ? "," : "", ids1[k]);
    printf("]\n}\n");
    free(pf), free(ids1);
    model_bundle_free(&mb);
    cli_free(&spec);
    return 0;
}
