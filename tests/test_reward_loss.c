/* The reward-model loss against PyTorch autograd
 * (fixtures/make_rm_fixtures.py): Bradley-Terry with and without a
 * per-pair margin, with centering coefficients 0, 0.01 and 0.5; the mean
 * loss and the gradient of each score within 1e-6 relative (1e-9
 * absolute); accuracy and mean margin; saturated pairs stay finite. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rm_loss.h"
#include "test.h"
#include "util.h"

static double at(cJSON *arr, int i) { return cJSON_GetArrayItem(arr, i)->valuedouble; }

int main(void) {
    size_t len;
    char *text = align_read_file(ALIGN_TEST_DIR "/fixtures/rm_losses.json", &len);
    CHECK(text != NULL, "fixture: %s", align_error());
    if (!text) return test_summary();
    cJSON *root = cJSON_Parse(text);
    cJSON *jsc = cJSON_GetObjectItem(root, "sc"), *jsr = cJSON_GetObjectItem(root, "sr"),
          *jm = cJSON_GetObjectItem(root, "margins");
    int P = cJSON_GetArraySize(jsc);
    float *sc = malloc(P * sizeof(float)), *sr = malloc(P * sizeof(float)), *mg = malloc(P * sizeof(float));
    double *dsc = malloc(P * sizeof(double)), *dsr = malloc(P * sizeof(double));
    for (int i = 0; i < P; i++) sc[i] = (float)at(jsc, i), sr[i] = (float)at(jsr, i), mg[i] = (float)at(jm, i);
    cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        RmLossConfig cfg = {.center = (float)cJSON_GetObjectItem(c, "center")->valuedouble};
        int use_margin = cJSON_IsTrue(cJSON_GetObjectItem(c, "margin"));
        Metrics acc;
        metrics_clear(&acc);
        double loss = rm_batch_loss(&cfg, sc, sr, use_margin ? mg : NULL, P, dsc, dsr, &acc);
        char what[96];
        snprintf(what, sizeof what, "loss (margin %d, center %g)", use_margin, cfg.center);
        CHECK_CLOSE(loss, cJSON_GetObjectItem(c, "loss")->valuedouble, 1e-6, 1e-9, what);
        CHECK_CLOSE(metrics_get(&acc, "loss", NAN), cJSON_GetObjectItem(c, "loss")->valuedouble, 1e-6, 1e-9, "metric loss");
        for (int i = 0; i < P; i++) {
            snprintf(what, sizeof what, "dsc[%d] (margin %d, center %g)", i, use_margin, cfg.center);
            CHECK_CLOSE(dsc[i], at(cJSON_GetObjectItem(c, "dsc"), i), 1e-6, 1e-9, what);
            snprintf(what, sizeof what, "dsr[%d] (margin %d, center %g)", i, use_margin, cfg.center);
            CHECK_CLOSE(dsr[i], at(cJSON_GetObjectItem(c, "dsr"), i), 1e-6, 1e-9, what);
        }
        CHECK_CLOSE(metrics_get(&acc, "accuracy", NAN), cJSON_GetObjectItem(c, "accuracy")->valuedouble, 1e-9, 1e-12, "accuracy");
        CHECK_CLOSE(metrics_get(&acc, "margin", NAN), cJSON_GetObjectItem(c, "mean_margin")->valuedouble, 1e-6, 1e-9, "margin");
    }
    /* one pair by hand: sc = sr, no margin -> log 2, gradients -1/2, +1/2 */
    RmLossConfig plain = {0};
    RmPairResult r;
    rm_pair_loss(&plain, 1.5, 1.5, 0, &r);
    CHECK_CLOSE(r.loss, log(2.0), 1e-12, 0, "tie loss = log 2");
    CHECK_CLOSE(r.dchosen, -0.5, 1e-12, 0, "tie dchosen");
    CHECK(r.correct == 0, "a tie is not a win");
    rm_pair_loss(&plain, -1e4, 1e4, 0, &r);
    CHECK(isfinite(r.loss) && fabs(r.loss - 2e4) < 1e-6 && fabs(r.dchosen + 1) < 1e-12, "saturated loss finite: %g", r.loss);
    free(sc), free(sr), free(mg), free(dsc), free(dsr);
    cJSON_Delete(root);
    free(text);
    return test_summary();
}
