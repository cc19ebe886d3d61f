/* Properties of the core that hold for any weights:
 *  - packed equals separate: per-token log-probs and values of sequences
 *    packed into one batch equal those of each sequence run alone (1e-5);
 *  - determinism: the same seed and data give bit-identical weights after
 *    several AdamW steps;
 *  - gradient accumulation: two micro-batches accumulated give the gradient
 *    of the combined batch (1e-5 relative);
 *  - frozen tensors: no gradient slot, no optimizer state, unchanged by a
 *    step, while trainable ones move;
 *  - a frozen model (which keeps one layer's activations instead of all)
 *    gives bit-identical log-probs and values to the same weights trainable;
 *    thawed after such a forward, its backward is refused when it needs the
 *    layers' activations, and for the value head alone gives the gradient
 *    of a fresh forward;
 *  - LR schedules: the values transformers' get_*_schedule_with_warmup
 *    gives (hand-computed here).
 *  - shared prefixes: preference pairs packed with each prompt computed
 *    once (ds_pack_pairs) give the log-prob sums, last-token values and
 *    weight gradient of the plain packing (1e-5 relative);
 *  - bad batches are refused with an error, not a crash. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "seq_logprobs.h"
#include "test.h"
#include "util.h"

static void tiny_config(ModelConfig *c, ModelArch arch) {
    model_config_defaults(c, arch);
    c->vocab_size = 50, c->dim = 32, c->n_layers = 2, c->n_heads = 4, c->head_dim = 8, c->ffn_dim = 40;
    c->n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    c->max_seq_len = 64;
    c->value_head = 1;
    if (arch == ARCH_LLAMA) c->qkv_bias = 1;
}

/* A tiny model of arch with random weights from seed; its config in *c. */
static Model *tiny_model(ModelArch arch, uint64_t seed, ModelConfig *c) {
    tiny_config(c, arch);
    Model *m = model_create(c, &backend_cpu);
    model_init_random(m, seed);
    return m;
}

static void random_tokens(Rng *r, int32_t *t, int n, int V) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)rng_below(r, V);
}

static void test_packed_equals_separate(ModelArch arch) {
    ModelConfig c;
    Model *m = tiny_model(arch, 3, &c);
    Rng r;
    rng_seed(&r, 5);
    enum { NS = 3 };
    int lens[NS] = {5, 17, 9}, starts[NS + 1] = {0};
    for (int s = 0; s < NS; s++) starts[s + 1] = starts[s] + lens[s];
    int total = starts[NS];
    int32_t tokens[64], targets[64];
    random_tokens(&r, tokens, total, c.vocab_size);
    Batch packed = {.n_tokens = total, .n_seqs = NS, .tokens = tokens, .seq_start = starts};
    batch_next_token_targets(&packed, targets);
    float lp_packed[64], v_packed[64], lp_one[64], v_one[64];
    CHECK(model_forward(m, &packed) == 0, "forward: %s", align_error());
    model_token_logprobs(m, targets, lp_packed);
    model_values(m, v_packed);
    double worst = 0;
    for (int s = 0; s < NS; s++) {
        int32_t st[2] = {0, lens[s]};
        Batch one = {.n_tokens = lens[s], .n_seqs = 1, .tokens = tokens + starts[s], .seq_start = st};
        model_forward(m, &one);
        model_token_logprobs(m, targets + starts[s], lp_one);
        model_values(m, v_one);
        for (int i = 0; i < lens[s]; i++) {
            worst = fmax(worst, fabs(lp_one[i] - lp_packed[starts[s] + i]) / (1e-3 + fabs(lp_one[i])));
            worst = fmax(worst, fabs(v_one[i] - v_packed[starts[s] + i]) / (1e-3 + fabs(v_one[i])));
        }
    }
    CHECK(worst < 1e-5, "%s packed vs separate: worst relative difference %.3g", arch == ARCH_GPT2 ? "gpt2" : "llama", worst);
    model_free(m);
}

/* Sums, last-token values and weight gradient (malloc'd) of pairs packed by pairs ? ds_pack_pairs : ds_pack,
 * with d(loss)/d(logp) = w[i][j] for the j-th completion token of sequence i. */
static float *pair_grads(Model *m, const DsSeq *seqs, int n_pairs, int pairs, const float w[][16], double *sums,
                         float *last) {
    DsPacked p;
    int counts[16];
    CHECK((pairs ? ds_pack_pairs(seqs, n_pairs, 1, &p) : ds_pack(seqs, 2 * n_pairs, 1, &p)) == 0, "pack: %s",
          align_error());
    float *dlogp = calloc(p.batch.n_tokens, sizeof(float));
    CHECK(seq_logprobs_packed(m, &p, sums, counts) == 0, "forward: %s", align_error());
    for (int i = 0; i < 2 * n_pairs; i++) {
        int s = ds_packed_seq(&p, i), j = 0;
        for (int t = p.seq_start[s]; t < p.seq_start[s + 1]; t++)
            if (p.loss_mask[t]) dlogp[t] = w[i][j++];
    }
    float *v = malloc(p.batch.n_tokens * sizeof(float));
    CHECK(model_values(m, v) == 0, "values: %s", align_error());
    for (int i = 0; i < 2 * n_pairs; i++) last[i] = v[p.seq_start[ds_packed_seq(&p, i) + 1] - 1];
    free(v);
    model_zero_grad(m);
    CHECK(model_backward(m, dlogp, NULL) == 0, "backward: %s", align_error());
    float *g = malloc(m->n_grad_elems * sizeof(float));
    memcpy(g, m->grads, m->n_grad_elems * sizeof(float));
    if (pairs) CHECK(p.batch.n_seqs > 2 * n_pairs, "some pair shared its prompt");
    free(dlogp);
    ds_packed_free(&p);
    return g;
}

static void test_shared_prefix_equals_plain(ModelArch arch) {
    ModelConfig c;
    Model *m = tiny_model(arch, 4, &c);
    Rng r;
    rng_seed(&r, 6);
    enum { NP = 4 };
    /* same prompt; prompts apart after 3 tokens; nothing alike; a one-token prompt */
    int32_t tok[2 * NP][3][12];
    int np[2 * NP] = {7, 7, 6, 9, 5, 5, 1, 1}, nc[2 * NP] = {4, 6, 3, 5, 8, 2, 5, 4};
    DsSeq seqs[2 * NP];
    for (int i = 0; i < 2 * NP; i++) {
        random_tokens(&r, tok[i][0], 12, c.vocab_size);
        random_tokens(&r, tok[i][1], 12, c.vocab_size);
    }
    memcpy(tok[1][0], tok[0][0], sizeof tok[0][0]);
    memcpy(tok[3][0], tok[2][0], 3 * sizeof(int32_t));
    memcpy(tok[7][0], tok[6][0], sizeof tok[6][0]);
    for (int i = 0; i < 2 * NP; i++) seqs[i] = (DsSeq){tok[i][0], np[i], tok[i][1], nc[i]};
    float w[2 * NP][16];
    for (int i = 0; i < 2 * NP; i++)
        for (int j = 0; j < 16; j++) w[i][j] = (float)rng_uniform(&r) - 0.5f;
    double plain[2 * NP], shared[2 * NP];
    float vplain[2 * NP], vshared[2 * NP];
    float *g0 = pair_grads(m, seqs, NP, 0, w, plain, vplain), *g1 = pair_grads(m, seqs, NP, 1, w, shared, vshared);
    double worst = 0, num = 0, den = 0;
    for (int i = 0; i < 2 * NP; i++) {
        worst = fmax(worst, fabs(plain[i] - shared[i]) / (1e-3 + fabs(plain[i])));
        worst = fmax(worst, fabs(vplain[i] - vshared[i]) / (1e-3 + fabs(vplain[i])));
    }
    for (size_t k = 0; k < m->n_grad_elems; k++) num += (double)(g0[k] - g1[k]) * (g0[k] - g1[k]), den += (double)g0[k] * g0[k];
    const char *name = arch == ARCH_GPT2 ? "gpt2" : "llama";
    CHECK(worst < 1e-5, "%s shared-prompt log-prob sums and last values vs plain: worst relative difference %.3g", name,
          worst);
    CHECK(sqrt(num / den) < 1e-5, "%s shared-prompt gradient vs plain: relative difference %.3g", name, sqrt(num / den));
    free(g0), free(g1);
    model_free(m);
}

/* Train a few steps from a seed; return the final weights (malloc'd). */
static float *train_steps(ModelArch arch, uint64_t seed, int steps) {
    ModelConfig c;
    tiny_config(&c, arch);
    c.value_head = 0;
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, seed);
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 1e-2f, oc.weight_decay = 0.1f, oc.schedule = LR_COSINE, oc.warmup_steps = 1, oc.total_steps = steps;
    Optimizer *o = optim_create(m, &oc);
    Rng r;
    rng_seed(&r, seed + 1);
    int32_t tokens[48], targets[48], starts[3] = {0, 20, 48};
    float logp[48], dlogp[48];
    for (int s = 0; s < steps; s++) {
        random_tokens(&r, tokens, 48, c.vocab_size);
        Batch b = {.n_tokens = 48, .n_seqs = 2, .tokens = tokens, .seq_start = starts};
        batch_next_token_targets(&b, targets);
        model_forward(m, &b);
        model_token_logprobs(m, targets, logp);
        for (int i = 0; i < 48; i++) dlogp[i] = targets[i] >= 0 ? -1.0f / 46 : 0.0f;
        model_backward(m, dlogp, NULL);
        optim_step(o, NULL);
    }
    float *w = malloc(m->n_elems * sizeof(float));
    memcpy(w, m->params, m->n_elems * sizeof(float));
    optim_free(o);
    model_free(m);
    return w;
}

static void test_determinism(void) {
    ModelConfig c;
    tiny_config(&c, ARCH_LLAMA);
    c.value_head = 0;
    Model *m = model_create(&c, &backend_cpu);
    size_t n = m->n_elems;
    model_free(m);
    float *a = train_steps(ARCH_LLAMA, 42, 4), *b = train_steps(ARCH_LLAMA, 42, 4), *d = train_steps(ARCH_LLAMA, 43, 4);
    CHECK(memcmp(a, b, n * sizeof(float)) == 0, "same seed gave different weights");
    CHECK(memcmp(a, d, n * sizeof(float)) != 0, "a different seed gave identical weights");
    free(a), free(b), free(d);
}

static void test_grad_accumulation(void) {
    ModelConfig c;
    tiny_config(&c, ARCH_GPT2);
    c.value_head = 0;
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, 11);
    Rng r;
    rng_seed(&r, 12);
    int32_t tokens[30], targets[30], starts[3] = {0, 12, 30};
    random_tokens(&r, tokens, 30, c.vocab_size);
    float logp[30], dlogp[30];
    Batch both = {.n_tokens = 30, .n_seqs = 2, .tokens = tokens, .seq_start = starts};
    batch_next_token_targets(&both, targets);
    for (int i = 0; i < 30; i++) dlogp[i] = targets[i] >= 0 ? -1.0f : 0.0f;
    model_forward(m, &both);
    model_token_logprobs(m, targets, logp);
    model_backward(m, dlogp, NULL);
    float *g_both = malloc(m->n_grad_elems * sizeof(float));
    memcpy(g_both, m->grads, m->n_grad_elems * sizeof(float));
    model_zero_grad(m);
    for (int s = 0; s < 2; s++) {
        int32_t st[2] = {0, starts[s + 1] - starts[s]};
        Batch one = {.n_tokens = st[1], .n_seqs = 1, .tokens = tokens + starts[s], .seq_start = st};
        model_forward(m, &one);
        model_token_logprobs(m, targets + starts[s], logp);
        model_backward(m, dlogp + starts[s], NULL);
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < m->n_grad_elems; i++) {
        num += pow(m->grads[i] - g_both[i], 2);
        den += pow(g_both[i], 2);
    }
    CHECK(sqrt(num / den) < 1e-5, "accumulated gradient differs from the combined batch: %.3g", sqrt(num / den));
    free(g_both);
    model_free(m);
}

static void test_frozen(void) {
    ModelConfig c;
    tiny_config(&c, ARCH_LLAMA);
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, 1);
    size_t all = m->n_grad_elems;
    CHECK(model_set_trainable(m, "", 0) == m->n_params, "freezing everything matches every tensor");
    CHECK(model_set_trainable(m, "score.weight", 1) == 1, "unfreeze the value head");
    CHECK(m->n_grad_elems == (size_t)c.dim, "only the value head has gradient slots (%zu of %zu)", m->n_grad_elems, all);
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 0.1f, oc.schedule = LR_CONSTANT;
    Optimizer *o = optim_create(m, &oc);
    float *before = malloc(m->n_elems * sizeof(float));
    memcpy(before, m->params, m->n_elems * sizeof(float));
    int32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8}, starts[2] = {0, 8};
    Batch b = {.n_tokens = 8, .n_seqs = 1, .tokens = tokens, .seq_start = starts};
    float v[8], dv[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    model_forward(m, &b);
    model_values(m, v);
    CHECK(model_backward(m, NULL, dv) == 0, "backward with only the value head trainable: %s", align_error());
    optim_step(o, NULL);
    ParamInfo *score = model_find_param(m, "score.weight");
    int frozen_moved = 0, head_moved = 0;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->info[i];
        int moved = memcmp(before + p->offset, m->params + p->offset, p->numel * sizeof(float)) != 0;
        if (p == score) head_moved = moved;
        else frozen_moved |= moved;
    }
    CHECK(head_moved, "the trainable value head did not move");
    CHECK(!frozen_moved, "a frozen tensor moved");
    free(before);
    optim_free(o);
    model_free(m);
}

static void test_frozen_forward_only(ModelArch arch) {
    ModelConfig c;
    tiny_config(&c, arch);
    Model *train = model_create(&c, &backend_cpu), *frozen = model_create(&c, &backend_cpu);
    model_init_random(train, 21);
    memcpy(frozen->params, train->params, train->n_elems * sizeof(float));
    model_set_trainable(frozen, "", 0);
    Rng r;
    rng_seed(&r, 22);
    int32_t tokens[40], targets[40], starts[3] = {0, 15, 40};
    random_tokens(&r, tokens, 40, c.vocab_size);
    Batch b = {.n_tokens = 40, .n_seqs = 2, .tokens = tokens, .seq_start = starts};
    batch_next_token_targets(&b, targets);
    float lp1[40], lp2[40], v1[40], v2[40];
    model_forward(train, &b), model_token_logprobs(train, targets, lp1), model_values(train, v1);
    CHECK(model_forward(frozen, &b) == 0, "frozen forward: %s", align_error());
    model_token_logprobs(frozen, targets, lp2), model_values(frozen, v2);
    CHECK(!memcmp(lp1, lp2, sizeof lp1) && !memcmp(v1, v2, sizeof v1),
          "%s: a frozen model's log-probs/values differ from the trainable one's", arch == ARCH_GPT2 ? "gpt2" : "llama");
    model_free(train), model_free(frozen);
}

static void test_thawed_after_frozen_forward(void) {
    ModelConfig c;
    Model *m = tiny_model(ARCH_LLAMA, 31, &c);
    Rng r;
    rng_seed(&r, 32);
    int32_t tokens[20], targets[20], starts[3] = {0, 8, 20};
    random_tokens(&r, tokens, 20, c.vocab_size);
    Batch b = {.n_tokens = 20, .n_seqs = 2, .tokens = tokens, .seq_start = starts};
    batch_next_token_targets(&b, targets);
    float logp[20], dlogp[20], v[20], dv[20];
    for (int i = 0; i < 20; i++) dlogp[i] = targets[i] >= 0 ? -1.0f : 0.0f, dv[i] = (float)(i % 3) - 1.0f;

    model_set_trainable(m, "", 0);
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, targets, logp) == 0, "frozen forward: %s", align_error());
    model_set_trainable(m, "", 1);
    CHECK(model_backward(m, dlogp, NULL) == -1 && strstr(align_error(), "kept no activations"),
          "backward through the layers after a frozen forward refused: %s", align_error());
    CHECK(model_forward(m, &b) == 0 && model_token_logprobs(m, targets, logp) == 0 && model_backward(m, dlogp, NULL) == 0,
          "a new forward makes backward work again: %s", align_error());

    /* The value head's gradient needs only the final hidden state, which
     * even a frozen forward keeps. */
    model_set_trainable(m, "", 0);
    model_set_trainable(m, "score.weight", 1);
    model_forward(m, &b), model_values(m, v);
    float want[64], got[64];
    CHECK(model_backward(m, NULL, dv) == 0, "value head backward after a stored-everything forward: %s", align_error());
    memcpy(want, m->grads, c.dim * sizeof(float));
    model_set_trainable(m, "", 0);
    model_forward(m, &b), model_values(m, v);
    model_set_trainable(m, "score.weight", 1);
    CHECK(model_backward(m, NULL, dv) == 0, "value head backward after a frozen forward: %s", align_error());
    memcpy(got, m->grads, c.dim * sizeof(float));
    CHECK(!memcmp(want, got, c.dim * sizeof(float)), "the value head's gradient after a frozen forward differs");
    model_free(m);
}

static void test_schedules(void) {
    OptimConfig c;
    optim_config_defaults(&c);
    c.lr = 1.0f, c.warmup_steps = 2, c.total_steps = 10;
    c.schedule = LR_COSINE;
    CHECK_CLOSE(optim_lr_at(&c, 0), 0.0, 0, 1e-7, "cosine step 0 (warmup starts at 0)");
    CHECK_CLOSE(optim_lr_at(&c, 1), 0.5, 0, 1e-7, "cosine step 1");
    CHECK_CLOSE(optim_lr_at(&c, 2), 1.0, 0, 1e-7, "cosine step 2");
    CHECK_CLOSE(optim_lr_at(&c, 6), 0.5, 0, 1e-6, "cosine midpoint");
    CHECK_CLOSE(optim_lr_at(&c, 10), 0.0, 0, 1e-7, "cosine end");
    c.schedule = LR_LINEAR;
    CHECK_CLOSE(optim_lr_at(&c, 4), 0.75, 0, 1e-7, "linear step 4 = (10-4)/(10-2)");
    c.schedule = LR_CONSTANT;
    CHECK_CLOSE(optim_lr_at(&c, 9), 1.0, 0, 1e-7, "constant after warmup");
    LrSchedule s;
    CHECK(optim_parse_schedule("cosine", &s) == 0 && s == LR_COSINE, "parse cosine");
    CHECK(optim_parse_schedule("exp", &s) == -1, "unknown schedule refused");
}

static void test_bad_batches(void) {
    ModelConfig c;
    tiny_config(&c, ARCH_GPT2);
    Model *m = model_create(&c, &backend_cpu);
    int32_t tokens[4] = {1, 2, 99, 3}, starts[2] = {0, 4}, bad_starts[3] = {0, 0, 4};
    Batch b = {.n_tokens = 4, .n_seqs = 1, .tokens = tokens, .seq_start = starts};
    CHECK(model_forward(m, &b) == -1 && strstr(align_error(), "outside the vocabulary"), "token out of range refused");
    tokens[2] = 5;
    Batch e = {.n_tokens = 4, .n_seqs = 2, .tokens = tokens, .seq_start = bad_starts};
    CHECK(model_forward(m, &e) == -1, "empty sequence refused");
    int32_t *longt = calloc(100, sizeof(int32_t)), ls[2] = {0, 100};
    Batch l = {.n_tokens = 100, .n_seqs = 1, .tokens = longt, .seq_start = ls};
    CHECK(model_forward(m, &l) == -1 && strstr(align_error(), "positions"), "sequence longer than GPT-2 positions refused");
    free(longt);
    int32_t ps[3] = {0, 2, 4}, cyclic[2] = {1, 0}, chained[3] = {-1, 0, 1}, cs[4] = {0, 1, 2, 4};
    Batch pb = {.n_tokens = 4, .n_seqs = 2, .tokens = tokens, .seq_start = ps, .seq_prefix = cyclic};
    CHECK(model_forward(m, &pb) == -1 && strstr(align_error(), "prefix"), "a prefix that is not an earlier sequence refused");
    Batch pc = {.n_tokens = 4, .n_seqs = 3, .tokens = tokens, .seq_start = cs, .seq_prefix = chained};
    CHECK(model_forward(m, &pc) == -1 && strstr(align_error(), "prefix"), "a chain of prefixes refused");
    /* a refused batch after a good one leaves nothing to read: the caller
     * that ignores the error must not get the earlier batch's logits */
    Batch good = {.n_tokens = 4, .n_seqs = 1, .tokens = tokens, .seq_start = starts};
    int32_t row0[1] = {0};
    float *logits = malloc(sizeof(float) * c.vocab_size);
    CHECK(model_forward(m, &good) == 0 && model_logits(m, row0, 1, logits) == 0, "a good batch runs");
    CHECK(model_forward(m, &e) == -1 && model_logits(m, row0, 1, logits) == -1 &&
              strstr(align_error(), "before model_forward"),
          "after a refused batch, model_logits refuses instead of returning the previous batch's");
    free(logits);
    ModelConfig bad = c;
    bad.n_kv_heads = 3;
    CHECK(model_create(&bad, &backend_cpu) == NULL, "inconsistent config refused");
    model_free(m);
}

/* ZeRO-1's arithmetic without MPI: optimizers over slices of the gradient
 * buffer (cut inside tensors, decayed and not), each stepping on the same
 * gradients and norm, update the parameters exactly as one optimizer over
 * the whole buffer, step after step (moments carried per slice). A frozen
 * tensor in the middle leaves a gap the slices must skip. */
static void test_sharded_optimizer(void) {
    ModelConfig c;
    tiny_config(&c, ARCH_LLAMA);
    c.value_head = 0;
    Model *a = model_create(&c, &backend_cpu), *b = model_create(&c, &backend_cpu);
    model_init_random(a, 5);
    model_init_random(b, 5);
    model_set_trainable(a, "model.layers.0.mlp.up_proj.weight", 0);
    model_set_trainable(b, "model.layers.0.mlp.up_proj.weight", 0);
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 1e-2f, oc.weight_decay = 0.1f, oc.schedule = LR_LINEAR, oc.total_steps = 10;
    Optimizer *whole = optim_create(a, &oc);
    CHECK(model_ensure_grads(b) == 0, "gradients for the sharded model");
    size_t n = b->n_grad_elems, cut[4] = {0, n / 3 + 7, 2 * n / 3 + 1, n};
    Optimizer *part[3];
    size_t held = 0;
    for (int k = 0; k < 3; k++) {
        part[k] = optim_create_shard(b, &oc, cut[k], cut[k + 1]);
        held += part[k]->shard_hi - part[k]->shard_lo;
    }
    CHECK(held == n, "the slices cover the buffer once (%zu of %zu)", held, n);
    float *g = malloc(n * sizeof(float));
    Rng r;
    rng_seed(&r, 9);
    int32_t tokens[32], targets[32], starts[2] = {0, 32};
    float logp[32], dlogp[32];
    for (int step = 0; step < 3; step++) {
        random_tokens(&r, tokens, 32, c.vocab_size);
        Batch bt = {.n_tokens = 32, .n_seqs = 1, .tokens = tokens, .seq_start = starts};
        batch_next_token_targets(&bt, targets);
        model_forward(a, &bt);
        model_token_logprobs(a, targets, logp);
        for (int i = 0; i < 32; i++) dlogp[i] = targets[i] >= 0 ? -1.0f / 31 : 0.0f;
        model_backward(a, dlogp, NULL);
        memcpy(g, a->grads, n * sizeof(float));
        double norm = optim_grad_norm(whole);
        optim_step_with_norm(whole, norm, NULL);
        for (int k = 0; k < 3; k++) { /* each step zeroes every gradient: as on its own rank */
            memcpy(b->grads, g, n * sizeof(float));
            optim_step_with_norm(part[k], norm, NULL);
        }
    }
    double worst = 0;
    for (size_t i = 0; i < a->n_elems; i++) worst = fmax(worst, fabs(a->params[i] - b->params[i]));
    CHECK(worst == 0, "sliced AdamW differs from whole AdamW by %g", worst);
    free(g);
    for (int k = 0; k < 3; k++) optim_free(part[k]);
    optim_free(whole);
    model_free(a), model_free(b);
}

/* The CPU AdamW takes 8 elements at a time where it can and the rest one
 * by one: both paths give the same bits (the same element shifted by 3
 * lands in the other path), and the update is AdamW's formula (double
 * reference); sum_squares (the gradient norm) matches a double sum. */
static void test_adamw_paths(void) {
    enum { n = 45, off = 3 };
    float p[n + off], g[n + off], m[n + off], v[n + off], p2[n + off], g2[n + off], m2[n + off], v2[n + off];
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < n; i++) {
        p[i] = rng_normal(&r), g[i] = rng_normal(&r), m[i] = 0.1f * rng_normal(&r), v[i] = (float)fabs(rng_normal(&r));
        p2[i + off] = p[i], g2[i + off] = g[i], m2[i + off] = m[i], v2[i + off] = v[i];
    }
    float want[n];
    double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, bc1 = 0.19, bc2 = 0.002, gs = 0.5;
    for (int i = 0; i < n; i++) {
        double gi = g[i] * gs, mi = b1 * m[i] + (1 - b1) * gi, vi = b2 * v[i] + (1 - b2) * gi * gi;
        want[i] = (float)(p[i] * (1 - lr * wd) - lr / bc1 * mi / (sqrt(vi) / sqrt(bc2) + eps));
    }
    backend_cpu.adamw(p, g, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, (float)bc1, (float)bc2,
                      (float)gs);
    backend_cpu.adamw(p2 + off, g2 + off, m2 + off, v2 + off, n, (float)lr, (float)b1, (float)b2, (float)eps,
                      (float)wd, (float)bc1, (float)bc2, (float)gs);
    int same = 1;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        same &= p[i] == p2[i + off] && m[i] == m2[i + off] && v[i] == v2[i + off];
        worst = fmax(worst, fabs(p[i] - want[i]) / fmax(fabs(want[i]), 1e-3));
    }
    CHECK(same, "AdamW: the 8-wide and the one-by-one paths give the same bits");
    CHECK(worst < 1e-5, "AdamW = its formula in double (worst relative %g)", worst);
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)g[i] * g[i];
    CHECK_CLOSE(backend_cpu.sum_squares(g, n), s, 1e-12, 0, "sum_squares = a double sum");
}

int main(void) {
    test_packed_equals_separate(ARCH_GPT2);
    test_packed_equals_separate(ARCH_LLAMA);
    test_shared_prefix_equals_plain(ARCH_GPT2);
    test_shared_prefix_equals_plain(ARCH_LLAMA);
    test_determinism();
    test_grad_accumulation();
    test_frozen();
    test_sharded_optimizer();
    test_frozen_forward_only(ARCH_GPT2);
    test_frozen_forward_only(ARCH_LLAMA);
    test_thawed_after_frozen_forward();
    test_schedules();
    test_bad_batches();
    test_adamw_paths();
    return test_summary();
}
