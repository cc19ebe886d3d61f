/* bench_dpo_memory: peak memory and speed of DPO on the SmolLM2-135M shape
 * with full fine-tuning, LoRA, and LoRA on a 4-bit base (GGUF's Q4, QLoRA's
 * NF4 and FP4), side by side.
 * Prints one JSON object.
 *
 *   bench_dpo_memory [--gguf cache/SmolLM2-135M-Instruct.Q4_1.gguf] [--steps N]
 *                    [--pairs P] [--prompt T] [--completion T] [--rank R]
 *                    [--modes full,lora,lora_q4,lora_nf4,lora_fp4,dora,ia3]
 *
 * Each mode runs in its own child process, so its peak resident memory
 * (VmHWM from /proc/self/status) is its own: model(s), gradients, AdamW
 * moments, activations and the LM head's logits. The DPO step is dpo_run's:
 * chosen and rejected of every pair packed into one forward of the policy,
 * reference log-probs from
 *   full     a second, frozen fp32 model (dpo_run's default --ref)
 *   lora     the policy's own base with the adapters off (no second model)
 *   lora_q4  the same, with the base's linear weights kept Q4 (with --gguf:
 *            the file's Q4_1 blocks as stored; random weights: Q4_0)
 *   lora_nf4 / lora_fp4  the base in QLoRA's NF4 / FP4 with double
 *            quantisation (with --gguf: every linear weight re-quantised)
 *   dora / ia3  peft's DoRA (rank --rank, every linear) and IA3 (k, v,
 *            down) adapters on the fp32 base, reference = adapters off
 * then the sigmoid loss, backward and AdamW (clip 1.0). Random weights
 * unless --gguf; random tokens (speed and memory don't depend on them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>

#include "cli.h"
#include "dataset.h"
#include "gguf.h"
#include "lora.h"
#include "optim.h"
#include "rng.h"
#include "seq_logprobs.h"
#include "util.h"

typedef struct {
    const char *gguf, *modes;
    int steps, pairs, prompt, completion, rank;
} Opts;

typedef struct {
    double hwm_mib, steps_per_s, tokens_per_s, weight_mib, loss_first, loss_last;
    long trainable;
    int ok;
} Result;

static double vm_hwm_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    return kb / 1024.0;
}

static void smollm2(ModelConfig *c) {
    model_config_defaults(c, ARCH_LLAMA);
    c->vocab_size = 49152, c->dim = 576, c->n_layers = 30, c->n_heads = 9, c->n_kv_heads = 3;
    c->head_dim = 64, c->ffn_dim = 1536, c->rope_theta = 100000, c->tied_embeddings = 1, c->norm_eps = 1e-5f;
}

static int pick_type(const ParamInfo *p, void *ctx) {
    (void)p;
    return *(const int *)ctx;
}

/* quant: 0 (fp32) or the QuantType of the base's linear weights */
static Model *load(const Opts *o, int quant) {
    if (o->gguf) {
        ModelBundle b;
        if ((quant ? gguf_import_quant(o->gguf, &backend_cpu, quant, &b) : gguf_import(o->gguf, &backend_cpu, &b)))
            return NULL;
        Model *m = b.model;
        b.model = NULL;
        model_bundle_free(&b);
        return m;
    }
    ModelConfig c;
    smollm2(&c);
    /* quantised from creation: the fp32 base is never allocated */
    Model *m = quant ? model_create_quant(&c, &backend_cpu, pick_type, &quant) : model_create(&c, &backend_cpu);
    if (m) model_init_random(m, 1);
    return m;
}

static int run_mode(const Opts *o, const char *mode, Result *r) {
    int lora = strcmp(mode, "full") != 0;
    int method = !strcmp(mode, "dora") ? LORA_METHOD_DORA : !strcmp(mode, "ia3") ? LORA_METHOD_IA3 : LORA_METHOD_LORA;
    int quant = !strcmp(mode, "lora_q4") ? QUANT_Q4_0 : !strcmp(mode, "lora_nf4") ? QUANT_NF4 : !strcmp(mode, "lora_fp4") ? QUANT_FP4 : 0;
    Model *m = load(o, quant), *ref = NULL;
    if (!m) return -1;
    if (lora) {
        LoraConfig lc;
        lora_config_defaults(&lc);
        lc.rank = o->rank, lc.alpha = 2.0f * o->rank;
        lc.method = method;
        if (method == LORA_METHOD_IA3) lc.targets = 0; /* peft's IA3 targets */
        if (model_lora_attach(m, &lc)) return -1;
        ref = m; /* the base, adapters off */
    } else {
        if (!(ref = load(o, 0))) return -1;
        model_set_trainable(ref, "", 0);
    }
    r->weight_mib = model_weight_bytes(m) / 1048576.0 + (ref != m ? model_weight_bytes(ref) / 1048576.0 : 0);
    r->trainable = (long)model_trainable_elems(m);
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 1e-5f;
    oc.max_grad_norm = 1.0f;
    Optimizer *opt = optim_create(m, &oc);
    if (!opt) return -1;
    int S = 2 * o->pairs, len = o->prompt + o->completion;
    int32_t *tok = malloc((size_t)S * len * sizeof(int32_t));
    DsSeq *seqs = malloc(S * sizeof(DsSeq));
    double *refs = malloc(S * sizeof(double)), *sums = malloc(S * sizeof(double));
    int *counts = malloc(S * sizeof(int));
    Rng rng;
    rng_seed(&rng, 5);
    for (size_t i = 0; i < (size_t)S * len; i++) tok[i] = (int32_t)rng_below(&rng, m->cfg.vocab_size);
    for (int s = 0; s < S; s++) {
        int32_t *base = tok + (size_t)(s & ~1) * len; /* a pair shares its prompt */
        seqs[s] = (DsSeq){base, o->prompt, tok + (size_t)s * len + o->prompt, o->completion};
    }
    DsPacked p;
    if (seq_pack_pairs(m, seqs, S / 2, &p)) return -1;
    int N = p.batch.n_tokens;
    float *logp = malloc(N * sizeof(float)), *dlogp = malloc(N * sizeof(float));
    const float beta = 0.1f;
    double t0 = 0;
    for (int step = 0; step <= o->steps; step++) { /* step 0 warms up, untimed */
        if (step == 1) t0 = align_now();
        if (seq_logprobs_reference(ref, m, &p, refs, counts)) return -1;
        model_lora_train_mode(m, 1, (uint64_t)step);
        if (model_forward(m, &p.batch) || model_token_logprobs(m, p.targets, logp)) return -1;
        seq_logprobs_reduce(&p, logp, sums, counts);
        memset(dlogp, 0, N * sizeof(float));
        double loss = 0;
        for (int i = 0; i < o->pairs; i++) {
            double z = beta * ((sums[2 * i] - refs[2 * i]) - (sums[2 * i + 1] - refs[2 * i + 1]));
            loss += log1p(exp(-z)) / o->pairs;
            double g = -beta / (1.0 + exp(z)) / o->pairs; /* d loss / d logp(chosen) */
            for (int side = 0; side < 2; side++)
                for (int t = p.seq_start[ds_packed_seq(&p, 2 * i + side)];
                     t < p.seq_start[ds_packed_seq(&p, 2 * i + side) + 1]; t++)
                    if (p.loss_mask[t]) dlogp[t] = (float)(side ? -g : g);
        }
        if (model_backward(m, dlogp, NULL)) return -1;
        model_lora_train_mode(m, 0, 0);
        optim_step(opt, NULL);
        if (step == 0) r->loss_first = loss;
        r->loss_last = loss;
    }
    double dt = align_now() - t0;
    r->steps_per_s = o->steps / dt;
    r->tokens_per_s = (double)o->steps * N / dt;
    r->hwm_mib = vm_hwm_mib();
    r->ok = 1;
    return 0;
}

int main(int argc, char **argv) {
    Opts o = {NULL, "full,lora,lora_q4,lora_nf4,lora_fp4,dora,ia3", 2, 1, 64, 192, 16};
    CliFlag flags[] = {
        {"gguf", CLI_STRING, &o.gguf, "use this GGUF's weights (Q4 blocks kept for the 4-bit mode) instead of random ones"},
        {"steps", CLI_INT, &o.steps, "timed DPO steps per mode", CLI_AT_LEAST_1},
        {"pairs", CLI_INT, &o.pairs, "preference pairs per step", CLI_AT_LEAST_1},
        {"prompt", CLI_INT, &o.prompt, "prompt tokens per sequence", CLI_AT_LEAST_1},
        {"completion", CLI_INT, &o.completion, "completion tokens per sequence", CLI_AT_LEAST_1},
        {"rank", CLI_INT, &o.rank, "LoRA rank", CLI_AT_LEAST_1},
        {"modes", CLI_STRING, &o.modes, "comma list of modes to run: full, lora, lora_q4, lora_nf4, lora_fp4, dora, ia3 (default all)"},
    };
    CliSpec spec = {.prog = "bench_dpo_memory", .usage = "bench_dpo_memory [flags]",
                    .about = "Peak memory and steps/s of DPO on the SmolLM2-135M shape: full fine-tuning, LoRA, LoRA on a Q4, NF4 or FP4 base (each mode in its own process); prints JSON.",
                    .flags = flags, .n_flags = sizeof flags / sizeof *flags};
    cli_parse_or_exit(&spec, argc, argv);
    if (o.gguf && access(o.gguf, R_OK)) {
        fprintf(stderr, "bench_dpo_memory: %s not found (scripts/fetch-smollm2.sh fetches it)\n", o.gguf);
        return 1;
    }
    static const char *all[7] = {"full", "lora", "lora_q4", "lora_nf4", "lora_fp4", "dora", "ia3"};
    const char *modes[7];
    int n = 0;
    for (int k = 0; k < 7; k++) {
        size_t len = strlen(all[k]);
        for (const char *s = o.modes; *s;) {
            size_t w = strcspn(s, ",");
            if (w == len && !strncmp(s, all[k], len) && n < 7) modes[n++] = all[k];
            s += w + (s[w] == ',');
        }
    }
    if (!n) {
        fprintf(stderr, "bench_dpo_memory: --modes %s: expected a comma list of full, lora, lora_q4, lora_nf4, lora_fp4, dora, ia3\n", o.modes);
        return 1;
    }
    Result res[7];
    for (int k = 0; k < n; k++) {
        int fd[2];
        memset(&res[k], 0, sizeof res[k]);
        if (pipe(fd)) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(fd[0]);
            Result r = {0};
            if (run_mode(&o, modes[k], &r)) fprintf(stderr, "bench_dpo_memory: %s: %s\n", modes[k], align_error());
            if (write(fd[1], &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
            _exit(0);
        }
        close(fd[1]);
        if (read(fd[0], &res[k], sizeof res[k]) != (ssize_t)sizeof res[k]) res[k].ok = 0;
        close(fd[0]);
        waitpid(pid, NULL, 0);
        fprintf(stderr, "bench_dpo_memory: %s: peak %.0f MiB, %.3f steps/s\n", modes[k], res[k].hwm_mib, res[k].steps_per_s);
    }
    printf("{\"bench\": \"dpo_memory\", \"model\": \"%s\", \"weights\": \"%s\", \"pairs\": %d, \"tokens_per_seq\": %d, "
           "\"steps\": %d, \"lora_rank\": %d, \"threads\": %s,\n \"modes\": {",
           "smollm2-135m", o.gguf ? o.gguf : "random", o.pairs, o.prompt + o.completion, o.steps, o.rank,
           getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "null");
    double full = 0, q4 = 0;
    for (int k = 0; k < n; k++) {
        printf("%s\n  \"%s\": {\"ok\": %s, \"peak_rss_mib\": %.1f, \"weights_mib\": %.1f, \"trainable_params\": %ld, "
               "\"steps_per_s\": %.4f, \"tokens_per_s\": %.1f, \"loss_first\": %.6f, \"loss_last\": %.6f}",
               k ? "," : "", modes[k], res[k].ok ? "true" : "false", res[k].hwm_mib, res[k].weight_mib, res[k].trainable,
               res[k].steps_per_s, res[k].tokens_per_s, res[k].loss_first, res[k].loss_last);
        if (!strcmp(modes[k], "full")) full = res[k].hwm_mib;
        if (!strcmp(modes[k], "lora_q4")) q4 = res[k].hwm_mib;
    }
    printf("}");
    /* the 4-bit base's target: a third of full fine-tuning's peak */
    if (full > 0 && q4 > 0)
        printf(",\n \"lora_q4_over_full_peak\": %.4f, \"target_below\": 0.3333, \"meets_target\": %s", q4 / full,
               q4 / full < 1.0 / 3 ? "true" : "false");
    printf("}\n");
    return 0;
}
