/* Every DPO-family loss, its per-token gradients and TRL's reward metrics
 * against PyTorch autograd (fixtures/make_dpo_fixtures.py), within 1e-5
 * relative (1e-8 absolute): sigmoid (plain, label-smoothed cDPO, with an
 * RPO term), robust, hinge, IPO, SimPO (with and without smoothing), ORPO. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpo_loss.h"
#include "test.h"
#include "util.h"

static double at(cJSON *arr, int i) { return cJSON_GetArrayItem(arr, i)->valuedouble; }

int main(void) {
    size_t len;
    char *text = align_read_file(ALIGN_TEST_DIR "/fixtures/dpo_losses.json", &len);
    CHECK(text != NULL, "fixture: %s", align_error());
    if (!text) return test_summary();
    cJSON *root = cJSON_Parse(text);
    cJSON *pc = cJSON_GetObjectItem(root, "pc"), *pr = cJSON_GetObjectItem(root, "pr");
    cJSON *rc = cJSON_GetObjectItem(root, "rc"), *rr = cJSON_GetObjectItem(root, "rr");
    cJSON *nc = cJSON_GetObjectItem(root, "nc"), *nr = cJSON_GetObjectItem(root, "nr");
    int P = cJSON_GetArraySize(pc);
    cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        DpoLossConfig cfg;
        dpo_loss_defaults(&cfg);
        const char *kind = cJSON_GetObjectItem(c, "loss_type")->valuestring;
        CHECK(dpo_loss_parse(kind, &cfg.type) == 0, "parse %s", kind);
        cfg.beta = (float)cJSON_GetObjectItem(c, "beta")->valuedouble;
        cfg.label_smoothing = (float)cJSON_GetObjectItem(c, "label_smoothing")->valuedouble;
        cfg.simpo_gamma = (float)cJSON_GetObjectItem(c, "simpo_gamma")->valuedouble;
        cfg.rpo_alpha = (float)cJSON_GetObjectItem(c, "rpo_alpha")->valuedouble;
        for (int i = 0; i < P; i++) {
            DpoPair p = {at(pc, i), at(pr, i), at(rc, i), at(rr, i), (int)at(nc, i), (int)at(nr, i)};
            DpoPairResult r;
            dpo_pair_loss(&cfg, &p, &r);
            char what[96];
            snprintf(what, sizeof what, "%s(beta %g, ls %g, rpo %g) pair %d loss", kind, cfg.beta, cfg.label_smoothing, cfg.rpo_alpha, i);
            CHECK_CLOSE(r.loss, at(cJSON_GetObjectItem(c, "loss"), i), 1e-5, 1e-8, what);
            strcat(what, " dchosen");
            CHECK_CLOSE(r.dtok_chosen, at(cJSON_GetObjectItem(c, "dpc"), i), 1e-5, 1e-8, what);
            CHECK_CLOSE(r.dtok_rejected, at(cJSON_GetObjectItem(c, "dpr"), i), 1e-5, 1e-8, "drejected");
            CHECK_CLOSE(r.reward_chosen, at(cJSON_GetObjectItem(c, "reward_chosen"), i), 1e-5, 1e-8, "rewards/chosen");
            CHECK_CLOSE(r.reward_rejected, at(cJSON_GetObjectItem(c, "reward_rejected"), i), 1e-5, 1e-8, "rewards/rejected");
        }
    }
    DpoLossType t;
    CHECK(dpo_loss_parse("kto", &t) == -1 && strstr(align_error(), "--loss kto"), "unknown loss named");
    CHECK(dpo_loss_reference_free(DPO_SIMPO) && !dpo_loss_reference_free(DPO_SIGMOID), "reference-free losses");
    cJSON_Delete(root);
    free(text);
    return test_summary();
}
