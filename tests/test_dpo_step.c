/* Two dpo_run training steps equal two PyTorch steps
 * (fixtures/make_dpo_step_fixture.py): the tiny Qwen2 fixture, three
 * preference pairs in one packed micro-batch, sigmoid DPO (beta 0.1)
 * against a frozen copy of the starting model, AdamW with weight decay on
 * 2-D tensors and clipping. The loss and TRL's reward metrics of each step
 * match within 1e-5 relative, and every weight after the two steps within
 * 1e-5 relative (per-tensor norm). The same dpo_batch runs inside dpo_run.
 * Adam's eps is 1e-6 here (both sides): with 1e-8, elements whose gradient
 * is near zero turn float32-vs-float64 rounding of that gradient into
 * lr-sized steps of either sign, which says nothing about DPO. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dpo_batch.h"
#include "hf_import.h"
#include "optim.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

static int32_t *read_ids(StFile *f, const char *name, int *n) {
    const StTensor *t = st_find(f, name);
    if (!t) return NULL;
    *n = (int)st_numel(t);
    int32_t *ids = malloc(*n * sizeof(int32_t));
    memcpy(ids, f->data + t->begin, *n * sizeof(int32_t));
    return ids;
}

static float read_scalar(StFile *f, const char *name, int i) {
    const StTensor *t = st_find(f, name);
    float v[8];
    st_read_f32(f, t, v);
    return v[i];
}

int main(void) {
    const char *dir = ALIGN_TEST_DIR "/fixtures/hf_tiny_qwen2";
    StFile fx;
    CHECK(st_open(&fx, ALIGN_TEST_DIR "/fixtures/dpo_step.safetensors") == 0, "fixture: %s", align_error());
    ModelBundle policy, ref;
    CHECK(hf_import_dir(dir, &backend_cpu, &policy) == 0, "import policy: %s", align_error());
    CHECK(hf_import_dir(dir, &backend_cpu, &ref) == 0, "import reference: %s", align_error());
    model_set_trainable(ref.model, "", 0);
    DsSeq seqs[6];
    int32_t *ids[9];
    for (int i = 0; i < 3; i++) {
        char nm[64];
        int np = 0, nc = 0, nr = 0;
        snprintf(nm, sizeof nm, "pair.%d.prompt", i);
        ids[3 * i] = read_ids(&fx, nm, &np);
        snprintf(nm, sizeof nm, "pair.%d.chosen", i);
        ids[3 * i + 1] = read_ids(&fx, nm, &nc);
        snprintf(nm, sizeof nm, "pair.%d.rejected", i);
        ids[3 * i + 2] = read_ids(&fx, nm, &nr);
        seqs[2 * i] = (DsSeq){ids[3 * i], np, ids[3 * i + 1], nc};
        seqs[2 * i + 1] = (DsSeq){ids[3 * i], np, ids[3 * i + 2], nr};
    }
    DpoLossConfig loss;
    dpo_loss_defaults(&loss);
    loss.beta = 0.1f;
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = 1e-2f, oc.weight_decay = 0.01f, oc.max_grad_norm = 1.0f, oc.schedule = LR_CONSTANT, oc.eps = 1e-6f;
    Optimizer *o = optim_create(policy.model, &oc);
    for (int step = 0; step < 2; step++) {
        Metrics acc;
        metrics_clear(&acc);
        CHECK(dpo_batch(&loss, policy.model, ref.model, seqs, 3, NULL, 1.0f, 1, &acc) > 0, "dpo_batch: %s", align_error());
        CHECK_CLOSE(metrics_get(&acc, "loss", NAN), read_scalar(&fx, "loss", step), 1e-5, 1e-7, "loss");
        CHECK_CLOSE(metrics_get(&acc, "rewards/chosen", NAN), read_scalar(&fx, "rewards_chosen", step), 1e-4, 1e-6, "rewards/chosen");
        CHECK_CLOSE(metrics_get(&acc, "rewards/rejected", NAN), read_scalar(&fx, "rewards_rejected", step), 1e-4, 1e-6, "rewards/rejected");
        optim_step(o, NULL);
    }
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < policy.model->n_params; i++) {
        ParamInfo *p = &policy.model->info[i];
        char nm[160];
        snprintf(nm, sizeof nm, "final.%s", p->name);
        const StTensor *t = st_find(&fx, nm);
        CHECK(t != NULL, "fixture lacks %s", nm);
        if (!t) continue;
        float *want = malloc(p->numel * sizeof(float));
        st_read_f32(&fx, t, want);
        double num = 0, den = 0;
        for (size_t k = 0; k < p->numel; k++) {
            double d = policy.model->params[p->offset + k] - want[k];
            num += d * d;
            den += (double)want[k] * want[k];
        }
        double rel = sqrt(num / (den > 0 ? den : 1));
        if (rel > worst) worst = rel, worst_name = p->name;
        if (getenv("VERBOSE") && rel > 1e-6) printf("%s %.3g\n", p->name, rel);
        free(want);
    }
    CHECK(worst < 1e-5, "weights after two DPO steps: worst relative error %.3g (%s)", worst, worst_name);
    printf("worst weight error after two steps: %.3g (%s)\n", worst, worst_name);
    optim_free(o);
    model_bundle_free(&policy);
    model_bundle_free(&ref);
    for (int i = 0; i < 9; i++) free(ids[i]);
    st_close(&fx);
    return test_summary();
}
