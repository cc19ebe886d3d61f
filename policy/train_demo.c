/* train_demo: the core, end to end, with nothing to download.
 *
 * Trains a small Llama-family (or GPT-2) model from scratch on built-in
 * text, with byte-level tokens (vocabulary 256), packed batches of random
 * windows, AdamW with cosine warmup and gradient clipping; prints the loss
 * as it falls and a greedy sample before and after. It stands in for the
 * alignment demo until sft_run/dpo_run exist. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "util.h"

static const char *TEXT =
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
    "no pictures or conversations in it, and what is the use of a book, thought Alice, without "
    "pictures or conversations? So she was considering in her own mind (as well as she could, for "
    "the hot day made her feel very sleepy and stupid), whether the pleasure of making a "
    "daisy-chain would be worth the trouble of getting up and picking the daisies, when suddenly a "
    "White Rabbit with pink eyes ran close by her. There was nothing so very remarkable in that; "
    "nor did Alice think it so very much out of the way to hear the Rabbit say to itself, Oh dear! "
    "Oh dear! I shall be late! But when the Rabbit actually took a watch out of its "
    "waistcoat-pocket, and looked at it, and then hurried on, Alice started to her feet, for it "
    "flashed across her mind that she had never before seen a rabbit with either a "
    "waistcoat-pocket, or a watch to take out of it, and burning with curiosity, she ran across "
    "the field after it, and fortunately was just in time to see it pop down a large rabbit-hole "
    "under the hedge. In another moment down went Alice after it, never once considering how in "
    "the world she was to get out again. ";

/* Greedy continuation of `prompt` by full forward passes (the KV-cache
 * sampler lives in the generation module). */
static void sample(Model *m, const char *prompt, int n_new) {
    int V = m->cfg.vocab_size, n = (int)strlen(prompt);
    int32_t tokens[256], starts[2] = {0, 0};
    float *logits = malloc(V * sizeof(float));
    for (int i = 0; i < n; i++) tokens[i] = (unsigned char)prompt[i];
    printf("  \"%s", prompt);
    for (int k = 0; k < n_new && n < 256; k++) {
        starts[1] = n;
        Batch b = {.n_tokens = n, .n_seqs = 1, .tokens = tokens, .seq_start = starts};
        int32_t last = n - 1;
        if (model_forward(m, &b) || model_logits(m, &last, 1, logits)) align_die_error("train_demo");
        int best = 0;
        for (int v = 1; v < V; v++) best = logits[v] > logits[best] ? v : best;
        tokens[n++] = best;
        putchar(best >= 32 && best < 127 ? best : '?');
    }
    printf("\"\n");
    free(logits);
}

int main(int argc, char **argv) {
    int steps = 300, seed = 1;
    const char *arch = "llama", *device = "cpu";
    CliFlag flags[] = {
        {"steps", CLI_INT, &steps, "optimizer steps"},
        {"arch", CLI_STRING, &arch, "llama or gpt2"},
        {"seed", CLI_INT, &seed, "seed for weights and data"},
        {"device", CLI_STRING, &device, "cpu or cuda"},
    };
    CliSpec spec = {.prog = "train_demo", .usage = "train_demo [flags]",
                    .about = "Trains a small model from scratch on built-in text (byte tokens) and prints the falling loss.",
                    .flags = flags, .n_flags = 4};
    cli_parse_or_exit(&spec, argc, argv);
    if (steps <= 0) align_die("train_demo", "--steps must be positive");
    const Backend *be = backend_get(device);
    if (!be) align_die_error("train_demo");

    ModelConfig c;
    if (!strcmp(arch, "gpt2")) {
        model_config_defaults(&c, ARCH_GPT2);
        c.n_heads = c.n_kv_heads = 4;
        c.max_seq_len = 256;
    } else if (!strcmp(arch, "llama")) {
        model_config_defaults(&c, ARCH_LLAMA);
        c.n_heads = 4, c.n_kv_heads = 2, c.tied_embeddings = 1;
    } else {
        align_die("train_demo", "--arch %s: expected llama or gpt2", arch);
    }
    c.vocab_size = 256, c.dim = 128, c.n_layers = 4, c.head_dim = 32, c.ffn_dim = 384;
    Model *m = model_create(&c, be);
    if (!m) align_die_error("train_demo");
    model_init_random(m, (uint64_t)seed);

    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 3e-3f, oc.weight_decay = 0.1f, oc.schedule = LR_COSINE;
    oc.warmup_steps = steps / 10, oc.total_steps = steps;
    Optimizer *o = optim_create(m, &oc);
    if (!o) align_die_error("train_demo");

    printf("train_demo: %s model, %zu parameters, %d steps on %zu bytes of built-in text (%s)\n",
           arch, m->n_elems, steps, strlen(TEXT), be->name);
    printf("before training, greedy sample:\n");
    sample(m, "Alice was ", 40);

    /* Each step: 8 windows of 64 bytes packed into one batch. */
    enum { SEQS = 8, LEN = 64 };
    int32_t tokens[SEQS * LEN], targets[SEQS * LEN], starts[SEQS + 1];
    float logp[SEQS * LEN], dlogp[SEQS * LEN];
    size_t text_len = strlen(TEXT);
    Rng rng;
    rng_seed(&rng, (uint64_t)seed);
    double t0 = align_now(), first_loss = 0, loss = 0;
    for (int step = 0; step < steps; step++) {
        for (int s = 0; s < SEQS; s++) {
            size_t at = rng_below(&rng, text_len - LEN);
            for (int i = 0; i < LEN; i++) tokens[s * LEN + i] = (unsigned char)TEXT[at + i];
            starts[s] = s * LEN;
        }
        starts[SEQS] = SEQS * LEN;
        Batch b = {.n_tokens = SEQS * LEN, .n_seqs = SEQS, .tokens = tokens, .seq_start = starts};
        batch_next_token_targets(&b, targets);
        if (model_forward(m, &b) || model_token_logprobs(m, targets, logp)) align_die_error("train_demo");
        int counted = SEQS * (LEN - 1);
        loss = 0;
        for (int i = 0; i < SEQS * LEN; i++) {
            dlogp[i] = targets[i] >= 0 ? -1.0f / counted : 0.0f;
            if (targets[i] >= 0) loss -= logp[i] / counted;
        }
        if (step == 0) first_loss = loss;
        if (model_backward(m, dlogp, NULL)) align_die_error("train_demo");
        float lr;
        double gnorm = optim_step(o, &lr);
        if (step % (steps / 15 > 0 ? steps / 15 : 1) == 0 || step == steps - 1)
            printf("step %4d  loss %.4f  lr %.2e  grad_norm %.3f  %.0f tokens/s\n", step, loss, lr, gnorm,
                   (step + 1) * (double)SEQS * LEN / (align_now() - t0));
    }
    printf("loss %.4f -> %.4f (uniform over bytes would be %.4f)\n", first_loss, loss, log(256.0));
    printf("after training, greedy sample:\n");
    sample(m, "Alice was ", 60);
    optim_free(o);
    model_free(m);
    return loss < first_loss ? 0 : 1;
}
