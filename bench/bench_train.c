/* bench_train: one training step (forward + backward + AdamW) at batch
 * 4 x 256 tokens for the SmolLM2-135M and GPT-2 124M shapes, reported as
 * tokens/s, achieved FLOP/s, and that as a fraction of this machine's
 * sgemm FLOP/s measured in the same run. Prints one JSON object.
 *
 *   bench_train [--steps N] [--batch B] [--seq T] [--model smollm2|gpt2|all]
 *
 * FLOPs counted are the useful ones (model_flops_per_token: 6 per weight
 * per token plus causal attention), as MFU figures conventionally count. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "optim.h"
#include "rng.h"
#include "bench_util.h"
#include "cli.h"
#include "util.h"


static void shape(const char *name, ModelConfig *c) {
    if (!strcmp(name, "smollm2-135m")) {
        model_config_defaults(c, ARCH_LLAMA);
        c->vocab_size = 49152, c->dim = 576, c->n_layers = 30, c->n_heads = 9, c->n_kv_heads = 3;
        c->head_dim = 64, c->ffn_dim = 1536, c->rope_theta = 100000, c->tied_embeddings = 1;
        c->norm_eps = 1e-5f;
    } else {
        model_config_defaults(c, ARCH_GPT2);
        c->vocab_size = 50257, c->dim = 768, c->n_layers = 12, c->n_heads = 12, c->n_kv_heads = 12;
        c->head_dim = 64, c->ffn_dim = 3072, c->max_seq_len = 1024;
    }
}

static int run(const char *name, int B, int T, int steps, double sgemm, int first) {
    ModelConfig c;
    shape(name, &c);
    Model *m = model_create(&c, &backend_cpu);
    if (!m) return -1;
    model_init_random(m, 1);
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 1e-4f;
    Optimizer *o = optim_create(m, &oc);
    if (!o) return -1;
    int n = B * T;
    int32_t *tokens = malloc(n * sizeof(int32_t)), *targets = malloc(n * sizeof(int32_t)), *starts = malloc((B + 1) * sizeof(int32_t));
    float *logp = malloc(n * sizeof(float)), *dlogp = malloc(n * sizeof(float));
    Rng r;
    rng_seed(&r, 2);
    for (int i = 0; i < n; i++) tokens[i] = (int32_t)rng_below(&r, c.vocab_size);
    for (int s = 0; s <= B; s++) starts[s] = s * T;
    Batch b = {.n_tokens = n, .n_seqs = B, .tokens = tokens, .seq_start = starts};
    batch_next_token_targets(&b, targets);
    for (int i = 0; i < n; i++) dlogp[i] = targets[i] >= 0 ? -1.0f / (n - B) : 0.0f;
    double best = 1e30, total = 0;
    for (int s = 0; s <= steps; s++) { /* step 0 warms up (allocations, page faults) */
        double t = align_now();
        if (model_forward(m, &b) || model_token_logprobs(m, targets, logp) || model_backward(m, dlogp, NULL)) return -1;
        optim_step(o, NULL);
        t = align_now() - t;
        if (s > 0) {
            total += t;
            if (t < best) best = t;
        }
    }
    double mean = total / steps;
    double flops = model_flops_per_token(&c, T, 1) * n;
    printf("%s    \"%s\": {\"params\": %zu, \"batch\": %d, \"seq_len\": %d, \"step_s\": %.3f, \"step_s_best\": %.3f, "
           "\"tokens_per_s\": %.1f, \"gflops_per_s\": %.2f, \"fraction_of_sgemm\": %.3f}",
           first ? "" : ",\n", name, m->n_elems, B, T, mean, best, n / mean, flops / mean / 1e9, flops / mean / sgemm);
    fflush(stdout);
    free(tokens), free(targets), free(starts), free(logp), free(dlogp);
    optim_free(o);
    model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    int steps = 3, B = 4, T = 256;
    const char *which = "all";
    CliFlag flags[] = {
        {"steps", CLI_INT, &steps, "timed training steps", CLI_AT_LEAST_1},
        {"batch", CLI_INT, &B, "sequences per step", CLI_AT_LEAST_1},
        {"seq", CLI_INT, &T, "tokens per sequence", CLI_AT_LEAST_1},
        {"model", CLI_STRING, &which, "smollm2, gpt2 or all"},
    };
    CliSpec spec = {.prog = "bench_train", .usage = "bench_train [--steps N] [--batch B] [--seq T] [--model smollm2|gpt2|all]",
                    .about = "One training step's tokens/s and FLOP/s (and the fraction of sgemm's) on the SmolLM2-135M and GPT-2 shapes; prints JSON.",
                    .flags = flags, .n_flags = sizeof flags / sizeof *flags};
    cli_parse_or_exit(&spec, argc, argv);
    if (strcmp(which, "smollm2") && strcmp(which, "gpt2") && strcmp(which, "all"))
        cli_usage_error(&spec, "--model %s: expected smollm2, gpt2 or all", which);
    double sgemm = bench_sgemm_peak();
    printf("{\n  \"threads\": %d,\n  \"sgemm_gflops_per_s\": %.2f,\n  \"train_step\": {\n", omp_get_max_threads(), sgemm / 1e9);
    int first = 1;
    if (strcmp(which, "gpt2")) {
        if (run("smollm2-135m", B, T, steps, sgemm, first)) align_die_error("bench_train");
        first = 0;
    }
    if (strcmp(which, "smollm2")) {
        if (run("gpt2-124m", B, T, steps, sgemm, first)) align_die_error("bench_train");
    }
    printf("\n  }\n}\n");
    return 0;
}
