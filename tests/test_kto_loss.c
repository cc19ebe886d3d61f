/* The KTO loss of a micro-batch, its per-token gradients, the reference
 * point and TRL's metrics against PyTorch autograd written as TRL's
 * KTOTrainer computes them (fixtures/make_kto_fixtures.py), within 1e-6
 * relative (1e-10 absolute): mixed labels, one label only, desirable and
 * undesirable weights, and a mean KL below zero (clamped to 0). The
 * mismatched pairs' log-probs get no gradient (the fixture's autograd
 * gives exactly 0 for them; kto_batch_loss has no output for them). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kto_loss.h"
#include "test.h"
#include "util.h"

static double *arr(cJSON *c, const char *key, int n) {
    double *v = malloc(n * sizeof(double));
    cJSON *a = cJSON_GetObjectItem(c, key);
    for (int i = 0; i < n; i++) v[i] = cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

static double num(cJSON *c, const char *key) {
    cJSON *v = cJSON_GetObjectItem(c, key);
    return v ? v->valuedouble : NAN;
}

int main(void) {
    size_t len;
    char *text = align_read_file(ALIGN_TEST_DIR "/fixtures/kto_losses.json", &len);
    CHECK(text != NULL, "fixture: %s", align_error());
    if (!text) return test_summary();
    cJSON *root = cJSON_Parse(text), *c;
    int k = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        int n = cJSON_GetArraySize(cJSON_GetObjectItem(c, "label"));
        int *lab = malloc(n * sizeof(int));
        for (int i = 0; i < n; i++) lab[i] = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "label"), i)->valueint != 0;
        double *lp = arr(c, "logps", n), *rl = arr(c, "ref_logps", n), *kl = arr(c, "kl_logps", n),
               *rk = arr(c, "ref_kl_logps", n), *want_d = arr(c, "dlogps", n), *got_d = malloc(n * sizeof(double));
        KtoLossConfig cfg;
        kto_loss_defaults(&cfg);
        cfg.beta = (float)num(c, "beta");
        cfg.desirable_weight = (float)num(c, "desirable_weight");
        cfg.undesirable_weight = (float)num(c, "undesirable_weight");
        double z = kto_kl_estimate(kl, rk, n);
        KtoBatchResult r;
        kto_batch_loss(&cfg, n, lab, lp, rl, z, got_d, &r);
        char what[96];
        snprintf(what, sizeof what, "case %d (n %d, beta %g) kl", k, n, cfg.beta);
        CHECK_CLOSE(z, num(c, "kl"), 1e-6, 1e-10, what);
        snprintf(what, sizeof what, "case %d loss", k);
        CHECK_CLOSE(r.loss, num(c, "loss"), 1e-6, 1e-10, what);
        for (int i = 0; i < n; i++) {
            snprintf(what, sizeof what, "case %d d loss/d logp[%d]", k, i);
            CHECK_CLOSE(got_d[i], want_d[i], 1e-6, 1e-10, what);
        }
        const char *mk[4] = {"rewards_chosen", "rewards_rejected", "logps_chosen", "logps_rejected"};
        double mv[4] = {r.rewards_chosen, r.rewards_rejected, r.logps_chosen, r.logps_rejected};
        for (int m = 0; m < 4; m++) {
            double want = num(c, mk[m]);
            snprintf(what, sizeof what, "case %d %s", k, mk[m]);
            if (isnan(want)) CHECK(isnan(mv[m]), "%s: no example of that label, want NAN, got %g", what, mv[m]);
            else CHECK_CLOSE(mv[m], want, 1e-6, 1e-10, what);
        }
        double *dk = arr(c, "dkl_logps", n);
        for (int i = 0; i < n; i++) CHECK(dk[i] == 0, "case %d: the fixture's KL sequences have no gradient", k);
        free(lab), free(lp), free(rl), free(kl), free(rk), free(want_d), free(got_d), free(dk);
        k++;
    }
    CHECK(k == 6, "6 fixture cases read (%d)", k);
    cJSON_Delete(root);
    free(text);
    return test_summary();
}
