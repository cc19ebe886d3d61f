/* sampler.c: temperature, top-k and top-p over one row of logits without
 * sorting the vocabulary (see sampler.h for the contract).
 *
 * Every path starts with one pass for the max logit (the argmax, lowest id
 * on ties) and the log-sum-exp of the raw logits, which gives the returned
 * log-prob. Weights are exp((logit - max) / T), so the largest is 1 and
 * nothing overflows; sums are in double.
 *
 *   top-k (k < V): a min-heap of the k best (logit, id) pairs, one pass;
 *                  the k survivors are then sorted (k log k).
 *   top-p alone:   tokens fall into buckets of 1/16 nat of tempered
 *                  log-probability below the max; bucket masses are added
 *                  from the top until they reach p. Every token in the
 *                  buckets above that one is kept (in id order: the mass
 *                  before each is below p whatever the order), and only the
 *                  tokens of the crossing bucket are sorted to make the
 *                  exact cut, so a flat distribution costs no full sort.
 *   top-p after top-k: the cut runs on the k sorted survivors, renormalised
 *                  among themselves (Hugging Face's order).
 *   neither:       one walk over the weights in id order.
 * Ties in the sorted order break toward the lower id, so the kept set and
 * the draw are deterministic. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "vexp.h"

#define SAMPLER_BUCKETS 1024
#define SAMPLER_BUCKETS_PER_NAT 16.0f

struct Sampler {
    int V;
    float *w;        /* [V] weights exp((l - max) / T) in id order */
    int32_t *idx;    /* [V] candidate ids, best first */
    float *cw;       /* [V] weights of the candidates, aligned with idx */
    double mass[SAMPLER_BUCKETS];
};

void sampler_config_defaults(SamplerConfig *c) {
    c->temperature = 1.0f;
    c->top_k = 0;
    c->top_p = 1.0f;
}

int sampler_config_validate(const SamplerConfig *c) {
    if (!(c->temperature >= 0.0f) || isinf(c->temperature))
        return align_errorf("temperature %g must be a finite number >= 0 (0 = greedy)", c->temperature);
    if (c->top_k < 0) return align_errorf("top_k %d must be >= 0 (0 = off)", c->top_k);
    if (!(c->top_p > 0.0f && c->top_p <= 1.0f)) return align_errorf("top_p %g must be in (0, 1] (1 = off)", c->top_p);
    return 0;
}

Sampler *sampler_create(int vocab_size) {
    if (vocab_size <= 0) {
        align_errorf("sampler: vocabulary size %d must be positive", vocab_size);
        return NULL;
    }
    Sampler *s = calloc(1, sizeof *s);
    if (!s) {
        align_errorf("out of memory creating a sampler");
        return NULL;
    }
    s->V = vocab_size;
    s->w = malloc((size_t)vocab_size * sizeof(float));
    s->cw = malloc((size_t)vocab_size * sizeof(float));
    s->idx = malloc((size_t)vocab_size * sizeof(int32_t));
    if (!s->w || !s->cw || !s->idx) {
        sampler_free(s);
        align_errorf("out of memory for a sampler over %d tokens", vocab_size);
        return NULL;
    }
    return s;
}

void sampler_free(Sampler *s) {
    if (!s) return;
    free(s->w);
    free(s->cw);
    free(s->idx);
    free(s);
}

float sampler_logprob(const float *logits, int V, int32_t token) {
    float mx = logits[0];
    for (int i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    return (float)((double)logits[token] - mx - log(sum));
}

/* ---- ordering: "a before b" = larger logit, then lower id ---- */

static inline int better(const float *l, int32_t a, int32_t b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

/* Sort ids best first; qsort has no context argument, so the logits go
 * through a thread-local pointer (samplers run on several threads). */
static _Thread_local const float *tl_logits;
static int cmp_desc_tl(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    const float *l = tl_logits;
    return better(l, a, b) ? -1 : better(l, b, a) ? 1 : 0;
}
static void sort_desc(int32_t *ids, int n, const float *l) {
    tl_logits = l;
    qsort(ids, n, sizeof *ids, cmp_desc_tl);
}

/* k best ids of l[0..V) into ids[0..k), best first. */
static void top_k_select(int32_t *ids, int k, const float *l, int V) {
    /* min-heap: ids[0] is the worst of the kept k */
    for (int i = 0; i < V; i++) {
        int pos;
        if (i < k) {
            pos = i; /* sift up */
            ids[pos] = i;
            while (pos > 0) {
                int parent = (pos - 1) / 2;
                if (!better(l, ids[parent], ids[pos])) break;
                int32_t t = ids[parent];
                ids[parent] = ids[pos], ids[pos] = t;
                pos = parent;
            }
            continue;
        }
        if (!better(l, i, ids[0])) continue;
        ids[0] = i; /* replace the worst, sift down */
        pos = 0;
        for (;;) {
            int a = 2 * pos + 1, b = a + 1, worst = pos;
            if (a < k && better(l, ids[worst], ids[a])) worst = a;
            if (b < k && better(l, ids[worst], ids[b])) worst = b;
            if (worst == pos) break;
            int32_t t = ids[worst];
            ids[worst] = ids[pos], ids[pos] = t;
            pos = worst;
        }
    }
    sort_desc(ids, k, l);
}

/* The shared front half of a draw. Sets *argmax and *lse (of the raw
 * logits); for temperature > 0 also fills the candidate list:
 *   *n_cand = -1: no filter, the draw walks s->w over the whole vocabulary
 *                 (*kept_mass = its sum);
 *   otherwise:    s->idx[0..n_kept) (the kept tokens; best first except
 *                 after top-p alone) with weights s->cw, *kept_mass
 *                 their sum. */
static int prepare(Sampler *s, const SamplerConfig *c, const float *l, int32_t *argmax, double *lse,
                   int *n_cand, int *n_kept, double *kept_mass) {
    int V = s->V;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    if (!isfinite(mx)) return align_errorf("sampler: the logits hold NaN or +inf (max %g)", mx);
    int32_t am = 0;
    while (l[am] != mx) am++; /* the lowest id holding the max */
    double sum = 0;
    float *w = s->w;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; i++) sum += w[i] = vexp(l[i] - mx);
    if (isnan(sum)) /* a NaN logit (the max skips NaN) */
        for (int i = 0; i < V; i++)
            if (isnan(l[i])) return align_errorf("sampler: logit %d is NaN", i);
    *argmax = am;
    *lse = mx + log(sum);
    if (c->temperature <= 0.0f) return 0;

    float invT = 1.0f / c->temperature;
    int use_k = c->top_k > 0 && c->top_k < V, use_p = c->top_p < 1.0f;
    int tempered_w = invT != 1.0f;
    if (!use_k) {
        /* top-p alone or nothing: we need every tempered weight */
        if (tempered_w) {
            sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int i = 0; i < V; i++) sum += w[i] = vexp((l[i] - mx) * invT);
        }
        if (!use_p) {
            *n_cand = -1;
            *kept_mass = sum;
            return 0;
        }
        /* bucket by tempered log-prob below the max; find where the mass reaches p */
        memset(s->mass, 0, sizeof s->mass);
        for (int i = 0; i < V; i++) {
            float d = (mx - l[i]) * invT * SAMPLER_BUCKETS_PER_NAT;
            int b = d < (float)(SAMPLER_BUCKETS - 1) ? (int)d : SAMPLER_BUCKETS - 1;
            s->mass[b] += w[i];
        }
        double target = (double)c->top_p * sum, cum = 0;
        int cut = SAMPLER_BUCKETS - 1;
        for (int b = 0; b < SAMPLER_BUCKETS; b++) {
            cum += s->mass[b];
            if (cum >= target) {
                cut = b;
                break;
            }
        }
        /* every token in a bucket above the cut is kept (the mass before it
         * is below the target whatever the order); only the cut bucket is
         * sorted to find the exact end */
        int n = 0, n_cut = 0;
        double above = 0;
        for (int b = 0; b < cut; b++) above += s->mass[b];
        int32_t *tail = s->idx + V; /* cut-bucket ids collected from the end */
        for (int i = 0; i < V; i++) {
            float d = (mx - l[i]) * invT * SAMPLER_BUCKETS_PER_NAT;
            int b = d < (float)(SAMPLER_BUCKETS - 1) ? (int)d : SAMPLER_BUCKETS - 1;
            if (b < cut) s->idx[n++] = i;
            else if (b == cut) *--tail = i, n_cut++;
        }
        memmove(s->idx + n, tail, n_cut * sizeof(int32_t));
        sort_desc(s->idx + n, n_cut, l);
        for (int j = 0; j < n + n_cut; j++) s->cw[j] = w[s->idx[j]];
        *n_cand = n + n_cut;
        /* the cut uses the whole vocabulary's mass */
        double before = above;
        int keep = n;
        while (keep < n + n_cut && (keep == 0 || before < target)) before += s->cw[keep++];
        *n_kept = keep;
        *kept_mass = before;
        return 0;
    }
    /* top-k, then (optionally) top-p among the k */
    int k = c->top_k;
    top_k_select(s->idx, k, l, V);
    double tot = 0;
    for (int j = 0; j < k; j++) {
        s->cw[j] = expf((l[s->idx[j]] - mx) * invT);
        tot += s->cw[j];
    }
    *n_cand = k;
    if (!use_p) {
        *n_kept = k;
        *kept_mass = tot;
        return 0;
    }
    double target = (double)c->top_p * tot, before = 0;
    int keep = 0;
    while (keep < k && (keep == 0 || before < target)) before += s->cw[keep++];
    *n_kept = keep;
    *kept_mass = before;
    return 0;
}

int32_t sampler_sample(Sampler *s, const SamplerConfig *c, const float *l, Rng *rng, float *logprob) {
    if (sampler_config_validate(c)) return -1;
    int32_t am, tok = -1;
    double lse, mass = 0;
    int n_cand = 0, n_kept = 0;
    if (prepare(s, c, l, &am, &lse, &n_cand, &n_kept, &mass)) return -1;
    if (c->temperature <= 0.0f) {
        tok = am;
    } else {
        if (!rng) return align_errorf("sampler: a temperature above 0 needs an Rng");
        double u = rng_uniform(rng) * mass, cum = 0;
        if (n_cand < 0) {
            const float *w = s->w;
            for (int i = 0; i < s->V; i++) {
                cum += w[i];
                if (u < cum) {
                    tok = i;
                    break;
                }
                if (w[i] > 0) tok = i; /* rounding fallback: the last drawable id */
            }
        } else {
            for (int j = 0; j < n_kept; j++) {
                cum += s->cw[j];
                if (u < cum) {
                    tok = s->idx[j];
                    break;
                }
                if (s->cw[j] > 0) tok = s->idx[j];
            }
        }
        if (tok < 0) tok = am;
    }
    if (logprob) *logprob = (float)((double)l[tok] - lse);
    return tok;
}

int sampler_kept_set(Sampler *s, const SamplerConfig *c, const float *l, int32_t *kept, int *n_out) {
    if (sampler_config_validate(c)) return -1;
    int32_t am;
    double lse, mass = 0;
    int n_cand = 0, n_kept = 0;
    if (prepare(s, c, l, &am, &lse, &n_cand, &n_kept, &mass)) return -1;
    if (c->temperature <= 0.0f) {
        kept[0] = am;
        *n_out = 1;
    } else if (n_cand < 0) {
        for (int i = 0; i < s->V; i++) kept[i] = i;
        sort_desc(kept, s->V, l);
        *n_out = s->V;
    } else {
        memcpy(kept, s->idx, (size_t)n_kept * sizeof(int32_t));
        sort_desc(kept, n_kept, l);
        *n_out = n_kept;
    }
    return 0;
}
