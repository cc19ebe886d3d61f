/* Generation: the sampler and the continuous-batching loop.
 *
 *   sampler   greedy takes the argmax (lowest id on ties); draws follow the
 *             filtered distribution (chi-square, 200000 draws, 0.1% level);
 *             top-k / top-p never return a token outside the set a plain
 *             full-sort reference (Hugging Face's order) keeps; the
 *             returned log-prob is log_softmax of the raw logits.
 *   cache     a long prompt decoded token by token matches full forwards.
 *   generate  greedy output of a batch (more prompts than slots, prompt
 *             chunks) equals greedy decoding by full forwards of each
 *             prompt alone; the same seed gives the same samples whatever
 *             the slot count or prefill chunk; each returned log-prob
 *             equals log_softmax of a full forward at that position
 *             (1e-5) at any temperature; stop ids, the callback,
 *             max_new_tokens and a full cache give the right finish
 *             reason; bad input is refused with a message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "rng.h"
#include "sampler.h"
#include "test.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* the sampler alone                                                   */

/* Chi-square critical values at significance 0.001 for df = 1..10. */
static const double CHI2_999[] = {0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588};

/* Reference kept set: temper, sort everything (larger logit, then lower id
 * first), cut to top_k, then keep tokens while the probability before them
 * (renormalised over the survivors) is below top_p. */
static int ref_kept(const float *l, int V, const SamplerConfig *c, int32_t *ids, double *p) {
    for (int i = 0; i < V; i++) ids[i] = i;
    for (int i = 1; i < V; i++) /* insertion sort: small V only */
        for (int j = i; j > 0 && (l[ids[j]] > l[ids[j - 1]] || (l[ids[j]] == l[ids[j - 1]] && ids[j] < ids[j - 1])); j--) {
            int32_t t = ids[j];
            ids[j] = ids[j - 1], ids[j - 1] = t;
        }
    int n = c->top_k > 0 && c->top_k < V ? c->top_k : V;
    double mx = l[ids[0]], tot = 0;
    for (int j = 0; j < n; j++) tot += p[j] = exp((l[ids[j]] - mx) / c->temperature);
    for (int j = 0; j < n; j++) p[j] /= tot;
    if (c->top_p < 1.0f) {
        double before = 0;
        int keep = 0;
        while (keep < n && (keep == 0 || before < c->top_p)) before += p[keep++];
        n = keep;
        for (int j = 0; j < n; j++) p[j] /= before;
    }
    return n;
}

static void test_greedy_and_logprob(void) {
    float l[7] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, -INFINITY, 0.0f};
    Sampler *s = sampler_create(7);
    SamplerConfig c;
    sampler_config_defaults(&c);
    c.temperature = 0;
    float lp;
    int32_t t = sampler_sample(s, &c, l, NULL, &lp);
    CHECK(t == 1, "greedy picks the lowest id among tied maxima: got %d want 1", t);
    double sum = 0;
    for (int i = 0; i < 7; i++) sum += exp((double)l[i]);
    CHECK_CLOSE(lp, 3.0 - log(sum), 0, 1e-6, "greedy log-prob = log_softmax(raw)[1]");
    CHECK_CLOSE(sampler_logprob(l, 7, 4), 2.9 - log(sum), 0, 1e-6, "sampler_logprob");
    /* a tempered, truncated draw still reports the raw log-prob */
    c.temperature = 0.3f, c.top_k = 2;
    Rng r;
    rng_seed(&r, 1);
    for (int k = 0; k < 50; k++) {
        t = sampler_sample(s, &c, l, &r, &lp);
        CHECK(t == 1 || t == 3, "top_k 2 drew %d", t);
        CHECK_CLOSE(lp, 3.0 - log(sum), 0, 1e-6, "tempered draw reports the raw log-prob");
    }
    float bad[7] = {0, NAN, 1, 0, 0, 0, 0}; /* the sampler reads V = 7 logits */
    c.top_k = 0;
    CHECK(sampler_sample(s, &c, bad, &r, NULL) < 0 && strstr(align_error(), "NaN"), "NaN logits are refused: %s", align_error());
    c.temperature = -1;
    CHECK(sampler_sample(s, &c, l, &r, NULL) < 0 && strstr(align_error(), "temperature"), "negative temperature refused");
    c.temperature = 1, c.top_p = 0;
    CHECK(sampler_sample(s, &c, l, &r, NULL) < 0 && strstr(align_error(), "top_p"), "top_p 0 refused");
    sampler_free(s);
}

/* Frequencies of 200000 draws against the filtered distribution. */
static void check_frequencies(const char *what, const float *l, int V, SamplerConfig c, uint64_t seed) {
    enum { DRAWS = 200000 };
    int32_t ids[16];
    double p[16];
    int n = ref_kept(l, V, &c, ids, p);
    long count[16] = {0};
    Sampler *s = sampler_create(V);
    Rng r;
    rng_seed(&r, seed);
    int outside = 0;
    for (int k = 0; k < DRAWS; k++) {
        int32_t t = sampler_sample(s, &c, l, &r, NULL);
        int j = 0;
        while (j < n && ids[j] != t) j++;
        if (j == n) outside++;
        else count[j]++;
    }
    CHECK(outside == 0, "%s: %d draws outside the kept set", what, outside);
    if (n > 1) {
        double chi2 = 0;
        for (int j = 0; j < n; j++) chi2 += (count[j] - DRAWS * p[j]) * (count[j] - DRAWS * p[j]) / (DRAWS * p[j]);
        CHECK(chi2 < CHI2_999[n - 1], "%s: chi-square %.2f >= %.3f (df %d, p = 0.001)", what, chi2, CHI2_999[n - 1], n - 1);
    } else {
        CHECK(count[0] == DRAWS, "%s: a single kept token must always be drawn", what);
    }
    sampler_free(s);
}

static void test_frequencies(void) {
    const double probs[6] = {0.05, 0.10, 0.15, 0.20, 0.25, 0.25};
    float l[6];
    for (int i = 0; i < 6; i++) l[i] = (float)log(probs[i]) + 1.7f; /* a shift changes nothing */
    SamplerConfig c;
    sampler_config_defaults(&c);
    check_frequencies("T=1", l, 6, c, 11);
    c.temperature = 0.6f;
    check_frequencies("T=0.6", l, 6, c, 12);
    c.temperature = 1.8f;
    check_frequencies("T=1.8", l, 6, c, 13);
    c.temperature = 1, c.top_k = 3;
    check_frequencies("top_k=3", l, 6, c, 14);
    c.top_k = 0, c.top_p = 0.6f; /* keeps ids 4, 5, 3 */
    check_frequencies("top_p=0.6", l, 6, c, 15);
    c.top_k = 4, c.top_p = 0.5f, c.temperature = 0.8f;
    check_frequencies("T=0.8 top_k=4 top_p=0.5", l, 6, c, 16);
    c.top_k = 0, c.top_p = 0.01f;
    check_frequencies("top_p=0.01 keeps one token", l, 6, c, 17);
}

/* top-k and top-p on a large random vocabulary: the kept set equals the
 * full-sort reference and no draw leaves it. */
static void test_kept_sets(void) {
    enum { V = 3000, DRAWS = 400 };
    float *l = malloc(V * sizeof(float));
    int32_t *ref = malloc(V * sizeof(int32_t)), *got = malloc(V * sizeof(int32_t));
    double *p = malloc(V * sizeof(double));
    char *in_ref = malloc(V);
    Sampler *s = sampler_create(V);
    Rng r;
    rng_seed(&r, 21);
    const float temps[] = {0.5f, 1.0f, 2.0f};
    const int ks[] = {0, 1, 7, 60};
    const float ps[] = {1.0f, 0.05f, 0.5f, 0.9f, 0.999f};
    int n_configs = 0, mismatched = 0, outside = 0;
    for (int scale = 0; scale < 2; scale++) {
        /* flat (scale 0) and peaked (scale 1) distributions, with ties */
        for (int i = 0; i < V; i++) l[i] = (float)(rng_normal(&r) * (scale ? 4.0 : 0.5));
        l[17] = l[18] = l[19] = 30.0f * scale + 2.0f;
        for (int ti = 0; ti < 3; ti++)
            for (int ki = 0; ki < 4; ki++)
                for (int pi = 0; pi < 5; pi++) {
                    SamplerConfig c = {.temperature = temps[ti], .top_k = ks[ki], .top_p = ps[pi]};
                    if (c.top_k == 0 && c.top_p == 1.0f) continue;
                    n_configs++;
                    int n_ref = ref_kept(l, V, &c, ref, p), n_got = 0;
                    memset(in_ref, 0, V);
                    for (int j = 0; j < n_ref; j++) in_ref[ref[j]] = 1;
                    sampler_kept_set(s, &c, l, got, &n_got);
                    int same = n_got == n_ref;
                    for (int j = 0; same && j < n_got; j++) same = got[j] == ref[j];
                    if (!same) {
                        mismatched++;
                        fprintf(stderr, "kept set differs: T=%g k=%d p=%g: %d vs reference %d tokens\n", c.temperature,
                                c.top_k, c.top_p, n_got, n_ref);
                    }
                    for (int k = 0; k < DRAWS; k++) {
                        int32_t t = sampler_sample(s, &c, l, &r, NULL);
                        if (t < 0 || !in_ref[t]) outside++;
                    }
                }
    }
    CHECK(mismatched == 0, "%d of %d configs keep a different set than the reference", mismatched, n_configs);
    CHECK(outside == 0, "%d draws outside the kept set", outside);
    sampler_free(s);
    free(l), free(ref), free(got), free(p), free(in_ref);
}

/* ------------------------------------------------------------------ */
/* a tiny model                                                        */

static Model *tiny_model(ModelArch arch, int vocab) {
    ModelConfig c;
    model_config_defaults(&c, arch);
    c.vocab_size = vocab, c.dim = 32, c.n_layers = 2, c.n_heads = 4, c.head_dim = 8, c.ffn_dim = 64,
    c.max_seq_len = 256;
    c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    if (arch == ARCH_LLAMA) c.tied_embeddings = 1;
    Model *m = model_create(&c, &backend_cpu);
    model_init_random(m, 5);
    for (size_t i = 0; i < m->n_elems; i++) m->params[i] *= 4.0f; /* sharper distributions: no near-ties */
    return m;
}

/* Logits of the last token of tokens[0..n) by a full forward. */
static void full_logits(Model *m, const int32_t *tokens, int n, float *out) {
    int32_t st[2] = {0, n}, last = n - 1;
    Batch b = {.n_tokens = n, .n_seqs = 1, .tokens = tokens, .seq_start = st};
    model_forward(m, &b);
    model_logits(m, &last, 1, out);
}

/* Prompts of lengths 1, 3, ..., deterministic. */
enum { NP = 7, MAXP = 40 };
static int32_t prompt_buf[NP][MAXP];
static GenPrompt prompts[NP];
static void make_prompts(int vocab) {
    Rng r;
    rng_seed(&r, 77);
    const int lens[NP] = {5, 1, 13, 3, 9, 2, 11};
    for (int i = 0; i < NP; i++) {
        for (int t = 0; t < lens[i]; t++) prompt_buf[i][t] = (int32_t)rng_below(&r, vocab);
        prompts[i].tokens = prompt_buf[i], prompts[i].n_tokens = lens[i];
    }
}

static void test_long_cached_decode(void) {
    Model *m = tiny_model(ARCH_LLAMA, 50);
    int V = 50, L = 200;
    int32_t *seq = malloc(L * sizeof(int32_t));
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < L; i++) seq[i] = (int32_t)rng_below(&r, V);
    KVCache *kv = kvcache_create(m, 2, L);
    float got[50], want[50];
    int32_t slot = 1, st[2] = {0, 120};
    Batch pre = {.n_tokens = 120, .n_seqs = 1, .tokens = seq, .seq_start = st};
    model_forward_cached(m, kv, &slot, &pre, got);
    double worst = 0;
    for (int i = 120; i < L; i++) {
        if ((i - 120) % 20 == 0 || i == L - 1) {
            full_logits(m, seq, i, want);
            double scale = 0;
            for (int v = 0; v < V; v++) scale = fmax(scale, fabs(want[v]));
            for (int v = 0; v < V; v++) worst = fmax(worst, fabs(got[v] - want[v]) / scale);
        }
        int32_t one_st[2] = {0, 1};
        Batch one = {.n_tokens = 1, .n_seqs = 1, .tokens = seq + i, .seq_start = one_st};
        model_forward_cached(m, kv, &slot, &one, got);
    }
    full_logits(m, seq, L, want);
    CHECK(worst < 1e-5, "200-token cached decode vs full forward: max relative difference %.3g", worst);
    kvcache_free(kv);
    free(seq);
    model_free(m);
}

/* Greedy decoding by full forwards: the reference. */
static int greedy_reference(Model *m, const GenPrompt *p, int max_new, int32_t *out) {
    int V = m->cfg.vocab_size, n = p->n_tokens;
    int32_t *seq = malloc((n + max_new) * sizeof(int32_t));
    float *l = malloc(V * sizeof(float));
    memcpy(seq, p->tokens, n * sizeof(int32_t));
    for (int k = 0; k < max_new; k++) {
        full_logits(m, seq, n + k, l);
        int best = 0;
        for (int v = 1; v < V; v++) best = l[v] > l[best] ? v : best;
        out[k] = seq[n + k] = best;
    }
    free(seq), free(l);
    return max_new;
}

static void test_greedy_batch(ModelArch arch) {
    const char *name = arch == ARCH_GPT2 ? "gpt2" : "llama";
    int V = 64, MAXNEW = 12;
    Model *m = tiny_model(arch, V);
    make_prompts(V);
    GenConfig gc;
    generate_config_defaults(&gc);
    gc.sampler.temperature = 0, gc.max_new_tokens = MAXNEW, gc.n_slots = 3, gc.prefill_chunk = 6;
    GenOutput out[NP], alone[1];
    CHECK(generate_run(m, &gc, prompts, NP, out, NULL, NULL) == 0, "%s greedy batch: %s", name, align_error());
    int32_t ref[32];
    for (int i = 0; i < NP; i++) {
        greedy_reference(m, &prompts[i], MAXNEW, ref);
        int same = out[i].n_tokens == MAXNEW && out[i].finish == GEN_FINISH_LENGTH;
        for (int k = 0; same && k < MAXNEW; k++) same = out[i].tokens[k] == ref[k];
        CHECK(same, "%s prompt %d: batched greedy (3 slots, chunks of 6) differs from full-forward greedy", name, i);
        GenConfig one = gc;
        one.n_slots = 1, one.prefill_chunk = 512;
        generate_run(m, &one, &prompts[i], 1, alone, NULL, NULL);
        same = alone[0].n_tokens == out[i].n_tokens;
        for (int k = 0; same && k < MAXNEW; k++) same = alone[0].tokens[k] == out[i].tokens[k];
        CHECK(same, "%s prompt %d: batched greedy differs from the prompt generated alone", name, i);
        CHECK(out[i].prompt_index == i && out[i].sample_index == 0, "output %d is labelled with its prompt", i);
        generate_outputs_free(alone, 1);
    }
    generate_outputs_free(out, NP);
    model_free(m);
}

static int same_outputs(const GenOutput *a, const GenOutput *b, int n) {
    for (int i = 0; i < n; i++) {
        if (a[i].n_tokens != b[i].n_tokens || a[i].finish != b[i].finish) return 0;
        if (memcmp(a[i].tokens, b[i].tokens, a[i].n_tokens * sizeof(int32_t))) return 0;
        for (int k = 0; k < a[i].n_tokens; k++)
            if (fabsf(a[i].logprobs[k] - b[i].logprobs[k]) > 1e-5f) return 0;
    }
    return 1;
}

static void test_seeded_reproducible(void) {
    int V = 64;
    Model *m = tiny_model(ARCH_LLAMA, V);
    for (size_t i = 0; i < m->n_elems; i++) m->params[i] *= 0.3f; /* flatter: draws vary */
    make_prompts(V);
    GenConfig gc;
    generate_config_defaults(&gc);
    gc.sampler.temperature = 1.0f, gc.sampler.top_p = 0.95f, gc.max_new_tokens = 10, gc.n_samples = 3;
    gc.seed = 1234, gc.n_slots = 4;
    enum { N = NP * 3 };
    GenOutput a[N], b[N], c[N], d[N];
    CHECK(generate_run(m, &gc, prompts, NP, a, NULL, NULL) == 0, "sampling: %s", align_error());
    generate_run(m, &gc, prompts, NP, b, NULL, NULL);
    CHECK(same_outputs(a, b, N), "the same seed gives the same samples");
    GenConfig gc2 = gc;
    gc2.n_slots = 1, gc2.prefill_chunk = 4;
    generate_run(m, &gc2, prompts, NP, c, NULL, NULL);
    CHECK(same_outputs(a, c, N), "1 slot with chunks of 4 gives the same samples as 4 slots");
    int own = 1; /* one slot: no two samples in flight, each reads its prompt */
    for (int i = 0; i < N; i++) own &= c[i].prefilled == prompts[i / 3].n_tokens;
    CHECK(own, "with one slot every sample prefills its whole prompt");
    generate_outputs_free(c, N);
    gc2.n_slots = 21, gc2.prefill_chunk = 100000;
    generate_run(m, &gc2, prompts, NP, c + 0, NULL, NULL);
    CHECK(same_outputs(a, c, N), "21 slots gives the same samples as 4 slots (shared prompts)");
    int shared = 1; /* all in flight together: one sample reads the prompt, two copy it */
    for (int i = 0; i < NP; i++) {
        int P = prompts[i].n_tokens, sum = c[3 * i].prefilled + c[3 * i + 1].prefilled + c[3 * i + 2].prefilled;
        shared &= c[3 * i].prefilled == P && sum == (P > 1 ? P + 2 : 3);
    }
    CHECK(shared, "the samples of a prompt prefill it once (plus its last token each)");
    generate_outputs_free(c, N);
    /* prompt 4 among different neighbours draws the same samples */
    GenPrompt other[NP];
    int32_t filler[NP][3];
    for (int i = 0; i < NP; i++) {
        filler[i][0] = i, filler[i][1] = 2 * i + 1, filler[i][2] = 3;
        other[i] = i == 4 ? prompts[4] : (GenPrompt){filler[i], 1 + i % 3};
    }
    generate_run(m, &gc, other, NP, c, NULL, NULL);
    CHECK(same_outputs(a + 4 * 3, c + 4 * 3, 3), "a prompt's samples do not depend on the prompts beside it");
    generate_outputs_free(c, N);
    /* prompts 4..6 run as a chunk with prompt_index_base 4 draw what they drew in the whole run */
    GenConfig gc4 = gc;
    gc4.prompt_index_base = 4;
    generate_run(m, &gc4, prompts + 4, 3, c, NULL, NULL);
    CHECK(same_outputs(a + 4 * 3, c, 9), "a chunk with prompt_index_base draws what the whole run drew");
    generate_outputs_free(c, 9);
    CHECK(generate_sequence_seed(1234, 4, 1) != generate_sequence_seed(1234, 0, 1) &&
              generate_sequence_seed(1234, 4, 1) != generate_sequence_seed(1234, 4, 2) &&
              generate_sequence_seed(1234, 4, 1) != generate_sequence_seed(1235, 4, 1),
          "seed, prompt index and sample index all enter a sequence's seed");
    gc.seed = 1235;
    generate_run(m, &gc, prompts, NP, d, NULL, NULL);
    CHECK(!same_outputs(a, d, N), "a different seed gives different samples");
    int differ = 0;
    for (int i = 0; i < NP; i++)
        differ += a[i * 3].n_tokens != a[i * 3 + 1].n_tokens ||
                  memcmp(a[i * 3].tokens, a[i * 3 + 1].tokens, a[i * 3].n_tokens * 4) != 0;
    CHECK(differ > 0, "the samples of one prompt differ from each other");
    generate_outputs_free(a, N), generate_outputs_free(b, N), generate_outputs_free(d, N);
    model_free(m);
}

/* Each returned log-prob = log_softmax of a full forward at that position. */
static void test_logprobs_match_forward(void) {
    int V = 64;
    Model *m = tiny_model(ARCH_LLAMA, V);
    make_prompts(V);
    const SamplerConfig cfgs[] = {{0, 0, 1}, {0.7f, 0, 1}, {1.5f, 10, 0.9f}, {1.0f, 0, 0.5f}};
    float *l = malloc(V * sizeof(float));
    for (int ci = 0; ci < 4; ci++) {
        GenConfig gc;
        generate_config_defaults(&gc);
        gc.sampler = cfgs[ci], gc.max_new_tokens = 8, gc.n_slots = 3, gc.seed = 9 + ci;
        GenOutput out[NP];
        CHECK(generate_run(m, &gc, prompts, NP, out, NULL, NULL) == 0, "generate: %s", align_error());
        double worst = 0;
        for (int i = 0; i < NP; i++) {
            int n = prompts[i].n_tokens, T = n + out[i].n_tokens;
            int32_t seq[64], tgt[64], st[2] = {0, T};
            memcpy(seq, prompts[i].tokens, n * 4);
            memcpy(seq + n, out[i].tokens, out[i].n_tokens * 4);
            Batch b = {.n_tokens = T, .n_seqs = 1, .tokens = seq, .seq_start = st};
            batch_next_token_targets(&b, tgt);
            for (int t = 0; t < n - 1; t++) tgt[t] = -1;
            float lp[64];
            model_forward(m, &b);
            model_token_logprobs(m, tgt, lp);
            for (int k = 0; k < out[i].n_tokens; k++)
                worst = fmax(worst, fabs(out[i].logprobs[k] - lp[n - 1 + k]));
        }
        CHECK(worst < 1e-5, "T=%g k=%d p=%g: logprobs differ from a full forward by %.3g", cfgs[ci].temperature,
              cfgs[ci].top_k, cfgs[ci].top_p, worst);
        generate_outputs_free(out, NP);
    }
    free(l);
    model_free(m);
}

typedef struct {
    int stop_after;
    int calls;
} CbState;
static int stop_cb(void *ctx, const GenOutput *seq) {
    CbState *s = ctx;
    s->calls++;
    return seq->prompt_index == 2 && seq->n_tokens == s->stop_after;
}

static void test_finish_reasons(void) {
    int V = 64;
    Model *m = tiny_model(ARCH_LLAMA, V);
    make_prompts(V);
    GenConfig gc;
    generate_config_defaults(&gc);
    gc.sampler.temperature = 0, gc.max_new_tokens = 10, gc.n_slots = 2;
    GenOutput base[NP], out[NP];
    generate_run(m, &gc, prompts, NP, base, NULL, NULL);
    int all_length = 1;
    for (int i = 0; i < NP; i++) all_length &= base[i].finish == GEN_FINISH_LENGTH && base[i].n_tokens == 10;
    CHECK(all_length, "without stops every sequence ends by length after max_new_tokens");
    CHECK(!strcmp(generate_finish_name(GEN_FINISH_LENGTH), "length") &&
              !strcmp(generate_finish_name(GEN_FINISH_STOP), "stop"), "finish names");
    /* stop at the first occurrence of prompt 0's 4th greedy token */
    int32_t stop = base[0].tokens[3];
    gc.stop_ids = &stop, gc.n_stop_ids = 1;
    generate_run(m, &gc, prompts, NP, out, NULL, NULL);
    int ok = 1;
    for (int i = 0; i < NP; i++) {
        int first = -1;
        for (int k = 0; k < 10 && first < 0; k++)
            if (base[i].tokens[k] == stop) first = k;
        if (first < 0) ok &= out[i].finish == GEN_FINISH_LENGTH && out[i].n_tokens == 10;
        else ok &= out[i].finish == GEN_FINISH_STOP && out[i].n_tokens == first + 1 && out[i].tokens[first] == stop;
    }
    CHECK(ok, "a stop id ends its sequence with finish stop, the stop id included");
    CHECK(out[0].finish == GEN_FINISH_STOP && out[0].n_tokens <= 4, "prompt 0 stops by its 4th token");
    generate_outputs_free(out, NP);
    /* the callback stops prompt 2 after 3 tokens */
    gc.n_stop_ids = 0;
    CbState st = {3, 0};
    generate_run(m, &gc, prompts, NP, out, stop_cb, &st);
    CHECK(out[2].finish == GEN_FINISH_STOP && out[2].n_tokens == 3, "callback stop: finish %s after %d tokens",
          generate_finish_name(out[2].finish), out[2].n_tokens);
    CHECK(st.calls == 6 * 10 + 3, "the callback runs once per generated token (%d calls)", st.calls);
    generate_outputs_free(out, NP);
    /* a cache too short: prompt 2 (13 tokens) in 16 slots ends by length */
    KVCache *kv = kvcache_create(m, 2, 16);
    gc.cache = kv;
    generate_run(m, &gc, prompts, NP, out, NULL, NULL);
    CHECK(out[2].finish == GEN_FINISH_LENGTH && out[2].n_tokens == 16 - 13 + 1,
          "a full cache slot ends the sequence by length (%d tokens)", out[2].n_tokens);
    ok = 1;
    for (int k = 0; k < out[2].n_tokens; k++) ok &= out[2].tokens[k] == base[2].tokens[k];
    CHECK(ok, "a reused cache gives the same greedy tokens");
    generate_outputs_free(out, NP);
    /* errors */
    GenPrompt empty = {prompt_buf[0], 0};
    CHECK(generate_run(m, &gc, &empty, 1, out, NULL, NULL) < 0 && strstr(align_error(), "empty"), "an empty prompt is refused");
    int32_t longp[20] = {0};
    GenPrompt too_long = {longp, 20};
    CHECK(generate_run(m, &gc, &too_long, 1, out, NULL, NULL) < 0 && strstr(align_error(), "more than the cache"),
          "a prompt longer than the cache is refused: %s", align_error());
    int32_t bad_tok = V + 3;
    GenPrompt bad = {&bad_tok, 1};
    CHECK(generate_run(m, &gc, &bad, 1, out, NULL, NULL) < 0 && strstr(align_error(), "vocabulary"), "an out-of-range token is refused");
    gc.cache = NULL, gc.n_slots = 3;
    gc.sampler.top_p = 2;
    CHECK(generate_run(m, &gc, prompts, 1, out, NULL, NULL) < 0 && strstr(align_error(), "top_p"), "top_p 2 is refused");
    gc.cache = kv, gc.n_slots = 3, gc.sampler.top_p = 1;
    CHECK(generate_run(m, &gc, prompts, 1, out, NULL, NULL) < 0 && strstr(align_error(), "slots"), "a cache with too few slots is refused");
    generate_outputs_free(out, 1);
    kvcache_free(kv);
    generate_outputs_free(base, NP);
    model_free(m);
}

int main(void) {
    test_greedy_and_logprob();
    test_frequencies();
    test_kept_sets();
    test_long_cached_decode();
    test_greedy_batch(ARCH_LLAMA);
    test_greedy_batch(ARCH_GPT2);
    test_seeded_reproducible();
    test_logprobs_match_forward();
    test_finish_reasons();
    return test_summary();
}
