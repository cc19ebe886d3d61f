/* kto_batch on a real model (the tiny Qwen2 fixture), checked by an
 * independent route:
 *  1. Its loss and kl metrics equal kto_loss applied to log-probs that
 *     seq_logprobs computes on plainly packed sequences, with the
 *     mismatched pairs built here by hand (prompt i, completion i-1): the
 *     rotation, the shared-prompt packing and the reference pass agree.
 *  2. Its gradient equals central differences of the KTO loss with the
 *     reference point held at its value (it is detached), along the
 *     gradient's own direction, within 0.2%. Finite differences of the loss
 *     with the reference point moving too give a different number, so the
 *     check would see a gradient that flowed through the KL sequences.
 *  3. The three ways the policy can run the mismatched pairs give the
 *     same metrics and the same gradient, element by element: KTO_KL_LAST
 *     (kto_batch's: packed behind the examples, the backward stopping
 *     before them; check 2 runs on it), KTO_KL_SHARED (through the
 *     backward with a zero gradient) and KTO_KL_SEPARATE (a forward-only
 *     pass of their own).
 * A frozen copy of the starting model is the reference; one micro-batch
 * of 4 examples (3 desirable, 1 undesirable, prompts of different
 * lengths). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hf_import.h"
#include "kto_batch.h"
#include "seq_logprobs.h"
#include "test.h"
#include "util.h"

enum { N = 4 };
static const int32_t P0[] = {5, 17, 42, 8, 99}, P1[] = {7, 3}, P2[] = {11, 12, 13, 14, 15, 16, 17},
                     P3[] = {60, 61, 62};
static const int32_t C0[] = {20, 21, 22}, C1[] = {30, 31, 32, 33, 34}, C2[] = {40}, C3[] = {50, 51, 52, 53};
static DsSeq seqs[N];
static const int lab[N] = {1, 0, 1, 1};

/* Summed completion log-probs of seqs and of the mismatched pairs. */
static void sums_of(Model *m, double *own, double *mis) {
    DsSeq all[2 * N];
    int counts[2 * N];
    double s[2 * N];
    for (int i = 0; i < N; i++) {
        all[i] = seqs[i];
        const DsSeq *o = &seqs[(i + N - 1) % N];
        all[N + i] = (DsSeq){seqs[i].prompt, seqs[i].n_prompt, o->completion, o->n_completion};
    }
    CHECK(seq_logprobs(m, all, 2 * N, 2 * N, 0, s, counts) == 0, "seq_logprobs: %s", align_error());
    for (int i = 0; i < N; i++) own[i] = s[i], mis[i] = s[N + i];
}

static double frozen_loss(const KtoLossConfig *c, Model *m, const double *ref_own, double z) {
    double own[N], mis[N];
    sums_of(m, own, mis);
    KtoBatchResult r;
    kto_batch_loss(c, N, lab, own, ref_own, z, NULL, &r);
    return r.loss;
}

static double full_loss(const KtoLossConfig *c, Model *m, const double *ref_own, const double *ref_mis) {
    double own[N], mis[N];
    sums_of(m, own, mis);
    KtoBatchResult r;
    kto_batch_loss(c, N, lab, own, ref_own, kto_kl_estimate(mis, ref_mis, N), NULL, &r);
    return r.loss;
}

/* params += h * dir over the trainable tensors (dir laid out like grads). */
static void move(Model *m, const float *dir, double h) {
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (p->grad_offset < 0) continue;
        for (size_t k = 0; k < p->numel; k++) m->params[p->offset + k] += (float)(h * dir[p->grad_offset + k]);
    }
}

int main(void) {
    const char *dir = ALIGN_TEST_DIR "/fixtures/hf_tiny_qwen2";
    ModelBundle policy, ref;
    CHECK(hf_import_dir(dir, &backend_cpu, &policy) == 0, "import policy: %s", align_error());
    CHECK(hf_import_dir(dir, &backend_cpu, &ref) == 0, "import reference: %s", align_error());
    if (test_failed_count) return test_summary();
    model_set_trainable(ref.model, "", 0);
    Model *m = policy.model;
    seqs[0] = (DsSeq){P0, 5, C0, 3};
    seqs[1] = (DsSeq){P1, 2, C1, 5};
    seqs[2] = (DsSeq){P2, 7, C2, 1};
    seqs[3] = (DsSeq){P3, 3, C3, 4};
    KtoLossConfig c;
    kto_loss_defaults(&c);
    c.beta = 0.5f, c.desirable_weight = 1.0f, c.undesirable_weight = 1.5f;

    /* Move the policy off the reference first, raising the mismatched
     * pairs' log-probs (a step along KTO's gradient with them as desirable
     * examples), so the reference point is above its clamp at 0. */
    Metrics acc;
    metrics_clear(&acc);
    model_zero_grad(m);
    static const int all_good[N] = {1, 1, 1, 1};
    DsSeq mism[N];
    for (int i = 0; i < N; i++) {
        const DsSeq *o = &seqs[(i + N - 1) % N];
        mism[i] = (DsSeq){seqs[i].prompt, seqs[i].n_prompt, o->completion, o->n_completion};
    }
    CHECK(kto_batch(&c, m, ref.model, mism, all_good, N, 1.0f, 1, &acc) > 0, "kto_batch: %s", align_error());
    float *g = malloc(m->n_grad_elems * sizeof(float));
    memcpy(g, m->grads, m->n_grad_elems * sizeof(float));
    move(m, g, -5.0);

    double ref_own[N], ref_mis[N], own[N], mis[N];
    sums_of(ref.model, ref_own, ref_mis);
    sums_of(m, own, mis);
    double z = kto_kl_estimate(mis, ref_mis, N);
    KtoBatchResult want;
    kto_batch_loss(&c, N, lab, own, ref_own, z, NULL, &want);

    /* check 3: the other passes' gradients, kept for after check 2 */
    Metrics other_acc[2];
    float *g_other[2];
    for (int k = 0; k < 2; k++) {
        metrics_clear(&other_acc[k]);
        model_zero_grad(m);
        CHECK(kto_batch_pass(&c, m, ref.model, seqs, lab, N, 1.0f, 1, k ? KTO_KL_SEPARATE : KTO_KL_SHARED,
                             &other_acc[k]) == 60,
              "kto_batch_pass %d: %s", k, align_error());
        g_other[k] = malloc(m->n_grad_elems * sizeof(float));
        memcpy(g_other[k], m->grads, m->n_grad_elems * sizeof(float));
    }

    metrics_clear(&acc);
    model_zero_grad(m);
    long toks = kto_batch(&c, m, ref.model, seqs, lab, N, 1.0f, 1, &acc);
    /* prompts 5+2+7+3, completions 3+5+1+4, each twice */
    CHECK(toks == 60, "tokens of the examples and their mismatched pairs: %ld", toks);
    CHECK(z > 0.01, "the policy moved: reference point %g > 0", z);
    CHECK_CLOSE(metrics_get(&acc, "kl", NAN), z, 1e-4, 1e-6, "kl = mean over the mismatched pairs (built by hand)");
    CHECK_CLOSE(metrics_get(&acc, "loss", NAN), want.loss, 1e-4, 1e-6, "loss");
    CHECK_CLOSE(metrics_get(&acc, "rewards/chosen", NAN), want.rewards_chosen, 1e-4, 1e-5, "rewards/chosen");
    CHECK_CLOSE(metrics_get(&acc, "rewards/rejected", NAN), want.rewards_rejected, 1e-4, 1e-5, "rewards/rejected");
    CHECK_CLOSE(metrics_get(&acc, "logps/chosen", NAN), want.logps_chosen, 1e-4, 1e-5, "logps/chosen");
    CHECK_CLOSE(metrics_get(&acc, "rewards/margins", NAN), want.rewards_chosen - want.rewards_rejected, 1e-4, 1e-5,
                "rewards/margins");

    /* check 3: the same metrics (named in a failure) and gradient all three ways */
    static const char *names[] = {"loss", "kl", "rewards/chosen", "rewards/rejected", "logps/chosen"};
    for (int o = 0; o < 2; o++) {
        for (int k = 0; k < 5; k++)
            CHECK_CLOSE(metrics_get(&other_acc[o], names[k], NAN), metrics_get(&acc, names[k], NAN), 1e-5, 1e-7,
                        names[k]);
        double gmax = 0, dmax = 0;
        for (size_t k = 0; k < m->n_grad_elems; k++) {
            double a = fabs(m->grads[k]), d = fabs((double)m->grads[k] - g_other[o][k]);
            if (a > gmax) gmax = a;
            if (d > dmax) dmax = d;
        }
        printf("gradient: max |pairs last - %s| %.3g, max |grad| %.3g\n", o ? "separate" : "shared", dmax, gmax);
        CHECK(gmax > 0 && dmax <= 1e-4 * gmax, "pairs-last gradient = %s pass gradient (max diff %g of %g)",
              o ? "separate" : "shared", dmax, gmax);
        free(g_other[o]);
    }

    /* directional derivative along d = g / |g| is |g| */
    memcpy(g, m->grads, m->n_grad_elems * sizeof(float));
    double gn = 0;
    for (size_t k = 0; k < m->n_grad_elems; k++) gn += (double)g[k] * g[k];
    gn = sqrt(gn);
    for (size_t k = 0; k < m->n_grad_elems; k++) g[k] = (float)(g[k] / gn);
    double h = getenv("KTO_H") ? atof(getenv("KTO_H")) : 1e-3;
    move(m, g, h);
    double fp = frozen_loss(&c, m, ref_own, z), Fp = full_loss(&c, m, ref_own, ref_mis);
    move(m, g, -2 * h);
    double fm = frozen_loss(&c, m, ref_own, z), Fm = full_loss(&c, m, ref_own, ref_mis);
    move(m, g, h);
    double fd = (fp - fm) / (2 * h), fd_full = (Fp - Fm) / (2 * h);
    printf("|grad| %.6g, central difference (reference point held) %.6g, (reference point moving) %.6g\n", gn, fd,
           fd_full);
    CHECK(fabs(fd - gn) < 2e-3 * gn, "gradient = derivative with the reference point detached (%g vs %g)", gn, fd);
    CHECK(fabs(fd_full - gn) > 5e-2 * gn, "the check tells a gradient through the KL sequences apart (%g vs %g)", gn,
          fd_full);
    free(g);
    model_bundle_free(&policy);
    model_bundle_free(&ref);
    return test_summary();
}
