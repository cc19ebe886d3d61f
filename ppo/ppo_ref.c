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

#include "cli.h"
#include "model_load.h"
#include "ppo_batch.h"
#include "ppo_service.h"
#include "util.h"

int main(int argc, char **argv) {
    const char *bind = NULL, *device = "cpu";
    int max_tokens = 8192, seed = 0;
    CliFlag flags[] = {
        {"bind", CLI_STRING, &bind, "ZeroMQ endpoint to serve on (ipc://PATH or tcp://127.0.0.1:PORT)"},
        {"device", CLI_STRING, &device, "cpu or cuda"},
        {"max-batch-tokens", CLI_INT, &max_tokens, "tokens per forward (default 8192)"},
        {"seed", CLI_INT, &seed, "unused (every program takes it)"},
    };
    CliSpec spec = {.prog = "ppo_ref", .usage = "ppo_ref --bind EP [flags]",
                    .about = "PPO reference worker: a frozen model that answers response-token log-probs (started by ppo_run).",
                    .flags = flags, .n_flags = sizeof flags / sizeof *flags};
    cli_parse_or_exit(&spec, argc, argv);
    if (!bind) align_die("ppo_ref", "--bind is required (see --help)");
    const Backend *be = backend_get(device);
    if (!be) align_die_error("ppo_ref");
    PpoService *svc = ppo_service_start("reference", bind);
    if (!svc) align_die_error("ppo_ref");
    fprintf(stderr, "ppo_ref: listening on %s\n", ppo_service_endpoint(svc));
    ModelBundle mb = {0};
    PpoRequest r;
    while (!ppo_service_next(svc, &r)) {
        if (!strcmp(r.op, "setup")) {
            char *path = ppo_get_strdup(r.msg, "model");
            if (!path) {
                ppo_service_error(svc, &r, "bad_request", "setup needs \"model\"");
                continue;
            }
            if (mb.model) model_bundle_free(&mb);
            memset(&mb, 0, sizeof mb);
            if (model_load_any(path, be, 0, &mb)) {
                char msg[600];
                snprintf(msg, sizeof msg, "%s", align_error());
                memset(&mb, 0, sizeof mb);
                ppo_service_error(svc, &r, "internal", msg);
            } else {
                model_set_trainable(mb.model, "", 0);
                WireWriter *w = wire_writer_new("ready");
                wire_put_int(w, "n_params", (int64_t)mb.model->n_elems);
                ppo_service_reply(svc, &r, w);
            }
            free(path);
        } else if (!strcmp(r.op, "logprobs")) {
            int32_t *pt = NULL, *po = NULL, *rt = NULL, *ro = NULL;
            int np = 0, nr = 0;
            float *lp = NULL;
            if (!mb.model) {
                ppo_service_error(svc, &r, "not_ready", "no model yet: send setup first");
            } else if (ppo_get_ragged(r.msg, "prompt_tokens", "prompt_offsets", &pt, &po, &np) ||
                       ppo_get_ragged(r.msg, "tokens", "offsets", &rt, &ro, &nr) || np != nr) {
                ppo_service_error(svc, &r, "bad_request", np != nr ? "prompts and responses differ in count" : align_error());
            } else if (!(lp = malloc(((size_t)ro[nr] + 1) * sizeof(float))) ||
                       ppo_score_all(mb.model, pt, po, rt, ro, nr, max_tokens, lp, NULL)) {
                ppo_service_error(svc, &r, "internal", lp ? align_error() : "out of memory");
            } else {
                WireWriter *w = wire_writer_new("logprobs");
                wire_put_vec(w, "logprobs", WIRE_F32, lp, (size_t)ro[nr]);
                ppo_service_reply(svc, &r, w);
            }
            free(pt), free(po), free(rt), free(ro), free(lp);
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown op \"%.64s\" (the reference serves setup, logprobs, ping)", r.op);
            ppo_service_error(svc, &r, "unknown_op", msg);
        }
    }
    fprintf(stderr, "ppo_ref: %s\n", align_error());
    return 1;
}
