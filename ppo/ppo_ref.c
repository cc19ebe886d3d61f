/* ppo_ref: PPO's reference process. It holds a frozen copy of the starting
 * policy and answers the log-probs of given sequences' response tokens
 * (docs/PROTOCOL.md, "PPO workers").
 *
 *   ppo_ref --bind EP [--device cpu]
 *
 * ppo_run starts it, or it is started by hand and given to ppo_run with
 * --ref-connect EP. The model arrives with the "setup" request, so the same
 * process can be set up again after ppo_run restarts. The reference
 * log-probs are computed once per rollout batch, never during the PPO
 * epochs: the reference does not change, so the KL penalty of a sample is
 * fixed when it is drawn. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_load.h"
#include "ppo_batch.h"
#include "ppo_service.h"
#include "util.h"

typedef struct {
    ModelBundle mb;
    int max_tokens;
} Ref;

static WireWriter *do_setup(Ref *ref, const Backend *be, const WireMsg *m, const char **code) {
    char *path = ppo_get_strdup(m, "model");
    if (!path) {
        *code = "bad_request";
        align_errorf("setup needs \"model\"");
        return NULL;
    }
    if (ref->mb.model) model_bundle_free(&ref->mb);
    memset(&ref->mb, 0, sizeof ref->mb);
    int rc = model_load_any(path, be, 0, &ref->mb);
    free(path);
    if (rc) {
        memset(&ref->mb, 0, sizeof ref->mb);
        return NULL;
    }
    model_set_trainable(ref->mb.model, "", 0);
    WireWriter *w = wire_writer_new("ready");
    wire_put_int(w, "n_params", (int64_t)ref->mb.model->n_elems);
    return w;
}

static WireWriter *do_logprobs(Ref *ref, const WireMsg *m, const char **code) {
    int32_t *pt = NULL, *po = NULL, *rt = NULL, *ro = NULL;
    int np = 0, nr = 0;
    float *lp = NULL;
    WireWriter *w = NULL;
    if (!ref->mb.model) {
        *code = "not_ready";
        align_errorf("no model yet: send setup first");
    } else if (ppo_get_ragged(m, "prompt_tokens", "prompt_offsets", &pt, &po, &np) ||
               ppo_get_ragged(m, "tokens", "offsets", &rt, &ro, &nr) || np != nr) {
        *code = "bad_request";
        if (np != nr) align_errorf("prompts and responses differ in count");
    } else if (!(lp = malloc(((size_t)ro[nr] + 1) * sizeof(float)))) {
        align_errorf("out of memory");
    } else if (!ppo_score_all(ref->mb.model, pt, po, rt, ro, nr, ref->max_tokens, lp, NULL)) {
        w = wire_writer_new("logprobs");
        wire_put_vec(w, "logprobs", WIRE_F32, lp, (size_t)ro[nr]);
    }
    free(pt), free(po), free(rt), free(ro), free(lp);
    return w;
}

static WireWriter *handle(void *state, const Backend *be, PpoRequest *r, const char **code) {
    Ref *ref = state;
    if (!strcmp(r->op, "setup")) return do_setup(ref, be, r->msg, code);
    if (!strcmp(r->op, "logprobs")) return do_logprobs(ref, r->msg, code);
    *code = "unknown_op";
    return NULL;
}

int main(int argc, char **argv) {
    Ref ref = {.max_tokens = 8192};
    CliFlag flags[] = {
        {"max-batch-tokens", CLI_INT, &ref.max_tokens, "tokens per forward (default 8192)", CLI_AT_LEAST_1},
    };
    PpoWorker w = {.prog = "ppo_ref", .service = "reference",
                   .about = "PPO reference worker: a frozen model that answers response-token log-probs (started by ppo_run).",
                   .serves = "the reference serves setup, logprobs, ping", .seed_help = "unused (every program takes it)",
                   .flags = flags, .n_flags = sizeof flags / sizeof *flags, .handle = handle};
    return ppo_worker_main(&w, &ref, argc, argv);
}
