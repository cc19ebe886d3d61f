/* The CPU backend's batch-invariant mode (backend.h) makes the rollout's
 * log-probs and the policy's recomputation bit-identical: generate_run
 * samples completions over the KV cache (prefill chunks, then decode steps
 * whose batch changes as sequences finish and others are admitted, 3 slots
 * for 8 sequences), and a packed training forward (model_forward +
 * model_token_logprobs, every sequence in one batch, the way ppo_pack
 * packs them; then again with each prompt's two samples sharing the prompt
 * as a prefix, ds_pack_pairs) recomputes every sampled token's log-prob:
 * the largest difference must be exactly 0 (PPO's rollout/logp_diff_max).
 * The same run with the mode off is printed (the gap the mode removes) and
 * must agree with the mode on within 1e-4: the mode changes rounding, not
 * the model.
 *
 * Models: the tiny Qwen2 (GQA, q/k/v bias), its sliding-window variant
 * (window 7, shorter than the sequences) and the tiny GPT-2 (learned
 * positions, LayerNorm, GELU; 32 positions, so shorter prompts) fixtures,
 * and the tiny Gemma 2 / Gemma 3 (attention scale and soft cap, sliding
 * layers, q/k norms);
 * with --smollm2, SmolLM2-135M-Instruct (cache/, fp32 from the Q4_1 GGUF;
 * skipped without it), the model the gap was first measured on. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "generate.h"
#include "model_load.h"
#include "test.h"
#include "util.h"

enum { N_PROMPTS = 4, N_SAMPLES = 2 };

/* Max and mean |generated log-prob - recomputed| over every sampled token,
 * recomputed with plain packing (pairs = 0) or prompt-sharing pairs. */
static void gap(Model *m, const GenPrompt *pr, const GenOutput *out, int pairs, double *mx, double *mean) {
    int n = N_PROMPTS * N_SAMPLES;
    DsSeq seqs[N_PROMPTS * N_SAMPLES];
    for (int i = 0; i < n; i++)
        seqs[i] = (DsSeq){pr[out[i].prompt_index].tokens, pr[out[i].prompt_index].n_tokens, out[i].tokens,
                          out[i].n_tokens};
    DsPacked p;
    int rc = pairs ? ds_pack_pairs(seqs, n / 2, 1, &p) : ds_pack(seqs, n, 1, &p);
    CHECK(rc == 0, "pack: %s", align_error());
    float *lp = malloc(p.batch.n_tokens * sizeof(float));
    CHECK(model_forward(m, &p.batch) == 0 && model_token_logprobs(m, p.targets, lp) == 0, "forward: %s",
          align_error());
    double worst = 0, sum = 0;
    long count = 0;
    for (int i = 0; i < n; i++) {
        int s = ds_packed_seq(&p, i), k = 0;
        for (int t = p.seq_start[s]; t < p.seq_start[s + 1]; t++)
            if (p.loss_mask[t]) {
                double d = fabs((double)lp[t] - out[i].logprobs[k++]);
                worst = d > worst ? d : worst;
                sum += d, count++;
            }
        CHECK(k == out[i].n_tokens, "sequence %d: %d recomputed tokens for %d sampled", i, k, out[i].n_tokens);
    }
    *mx = worst, *mean = count ? sum / count : 0;
    free(lp);
    ds_packed_free(&p);
}

/* Samples with the mode on or off; *out as generate_run fills it. */
static GenOutput *sample(Model *m, const GenPrompt *pr, int max_new) {
    GenConfig gc;
    generate_config_defaults(&gc);
    gc.max_new_tokens = max_new, gc.n_samples = N_SAMPLES, gc.seed = 7, gc.n_slots = 3, gc.prefill_chunk = 40;
    gc.sampler.temperature = 1.0f;
    GenOutput *out = calloc(N_PROMPTS * N_SAMPLES, sizeof *out);
    CHECK(generate_run(m, &gc, pr, N_PROMPTS, out, NULL, NULL) == 0, "generate: %s", align_error());
    return out;
}

static void check_model(const char *name, Model *m, int max_new) {
    int V = m->cfg.vocab_size;
    static int32_t toks[N_PROMPTS][64];
    /* 40: above matmul_small's 32 rows in one prefill; GPT-2's learned
     * positions (the tiny one has 32) get prompts that leave room */
    static const int lens[N_PROMPTS] = {3, 17, 9, 40}, short_lens[N_PROMPTS] = {3, 12, 7, 14};
    int gpt2 = m->cfg.arch == ARCH_GPT2 && m->cfg.max_seq_len < 40 + max_new;
    if (gpt2) max_new = m->cfg.max_seq_len - 14;
    GenPrompt pr[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        int n = gpt2 ? short_lens[i] : lens[i];
        for (int t = 0; t < n; t++) toks[i][t] = (int32_t)((i * 131 + t * 17 + 5) % V);
        pr[i] = (GenPrompt){toks[i], n};
    }
    double mx, mean, mx2, mean2, off_mx, off_mean;
    backend_cpu_set_batch_invariant(0);
    GenOutput *off = sample(m, pr, max_new);
    gap(m, pr, off, 0, &off_mx, &off_mean);
    backend_cpu_set_batch_invariant(1);
    GenOutput *on = sample(m, pr, max_new);
    gap(m, pr, on, 0, &mx, &mean);
    gap(m, pr, on, 1, &mx2, &mean2);
    backend_cpu_set_batch_invariant(0);
    long toks_on = 0;
    for (int i = 0; i < N_PROMPTS * N_SAMPLES; i++) toks_on += on[i].n_tokens;
    CHECK(toks_on > N_PROMPTS * N_SAMPLES, "%s: sampled %ld tokens", name, toks_on);
    printf("%s: %ld sampled tokens; gap off: max %.3g mean %.3g; on: max %.3g mean %.3g (shared prompts: max %.3g)\n",
           name, toks_on, off_mx, off_mean, mx, mean, mx2);
    CHECK(mx == 0, "%s: batch-invariant gap, packed: %g", name, mx);
    CHECK(mx2 == 0, "%s: batch-invariant gap, prompt-sharing pairs: %g", name, mx2);
    CHECK(off_mx < 1e-4, "%s: without the mode the gap is rounding only: %g", name, off_mx);
    /* the same tokens (the seed fixes them unless rounding flips a draw) have close log-probs either way */
    double worst = 0;
    for (int i = 0; i < N_PROMPTS * N_SAMPLES; i++)
        for (int k = 0; k < on[i].n_tokens && k < off[i].n_tokens && on[i].tokens[k] == off[i].tokens[k]; k++)
            worst = fmax(worst, fabs(on[i].logprobs[k] - off[i].logprobs[k]));
    CHECK(worst < 1e-4, "%s: the mode changes rounding only (%g)", name, worst);
    generate_outputs_free(on, N_PROMPTS * N_SAMPLES);
    generate_outputs_free(off, N_PROMPTS * N_SAMPLES);
    free(on), free(off);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--smollm2")) {
        const char *path = ALIGN_TEST_DIR "/../cache/SmolLM2-135M-Instruct.Q4_1.gguf";
        FILE *f = fopen(path, "rb");
        if (!f) test_skip("no cache/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-smollm2.sh)");
        fclose(f);
        ModelBundle b;
        CHECK(model_load_any(path, &backend_cpu, 0, &b) == 0, "load: %s", align_error());
        if (test_failed_count) return test_summary();
        check_model("smollm2", b.model, 12);
        model_bundle_free(&b);
        return test_summary();
    }
    static const char *fixtures[] = {"hf_tiny_qwen2", "hf_tiny_qwen2_sw", "hf_tiny_gpt2", "gemma/gemma2", "gemma/gemma3"};
    for (int i = 0; i < 5; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, ALIGN_TEST_DIR "/fixtures/%s", fixtures[i]);
        ModelBundle b;
        CHECK(model_load_any(dir, &backend_cpu, 0, &b) == 0, "load %s: %s", fixtures[i], align_error());
        if (test_failed_count) return test_summary();
        check_model(fixtures[i], b.model, 30);
        model_bundle_free(&b);
    }
    return test_summary();
}
