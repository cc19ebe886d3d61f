/* rollout_worker: one of PPO's N rollout processes. It holds a copy of the
 * policy, receives new weights from the policy process after each update,
 * and samples completions of the prompt chunks ppo_run hands it, with the
 * log-prob of every sampled token under the raw distribution (PPO's
 * old_logp) and how each ended (docs/PROTOCOL.md, "PPO workers").
 *
 *   rollout_worker --bind EP [--device cpu]
 *
 * Sampling is generate_run's: sample j of prompt i is seeded by (seed,
 * prompt_index_base + i, j) alone, and ppo_run passes the prompt's GLOBAL
 * index in the run's prompt stream, so which worker draws a prompt, how the
 * batch was split, or whether the run was resumed never changes the draw.
 *
 * Weights. With full fine-tuning the policy sends every parameter after
 * each update; with LoRA (lora_rank or lora_adapter in setup) the worker
 * attaches the same adapters to the base it loaded itself from the same
 * --policy file, and the policy sends the adapters alone ("weights_raw",
 * common/net/ppo_sync.h). Either way the floats arrive as one raw frame and are
 * copied once, from ZeroMQ's buffer into the model, after the header has
 * been checked against this model. A restarted worker is set up again
 * (loading the base) and then gets the current weights before it generates.
 *
 * The worker's socket service (ping answered while generating) and the sync
 * messages are common/net/ppo_service.c and common/net/ppo_sync.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "model_load.h"
#include "ppo_service.h"
#include "ppo_sync.h"
#include "util.h"

typedef struct {
    ModelBundle mb;
    GenConfig gc;
    int32_t stop_ids[8];
    int64_t version;
    uint64_t base_fp; /* with LoRA: the base's fingerprint, checked against the policy's */
} Worker;

static int do_setup(Worker *w, const WireMsg *m, const Backend *be) {
    char *path = ppo_get_strdup(m, "model");
    if (!path) return align_errorf("setup needs \"model\"");
    if (w->mb.model) model_bundle_free(&w->mb);
    memset(&w->mb, 0, sizeof w->mb);
    int rc = model_load_any(path, be, 0, &w->mb);
    free(path);
    if (rc) {
        memset(&w->mb, 0, sizeof w->mb);
        return -1;
    }
    if (!w->mb.model->cfg.lm_head) return align_errorf("the policy has no LM head");
    if (ppo_set_batch_invariant(w->mb.model, m)) return -1;
    int virt = ppo_prompt_setup(w->mb.model, m, (uint64_t)ppo_get_num(m, "seed", 0)); /* values come by sync */
    model_set_trainable(w->mb.model, "", 0);
    int lora = virt ? 0 : ppo_lora_setup(w->mb.model, m, (uint64_t)ppo_get_num(m, "seed", 0));
    w->base_fp = 0;
    if (virt < 0 || lora < 0 || ((lora || virt) && !(w->base_fp = ppo_base_fingerprint(w->mb.model)))) {
        model_bundle_free(&w->mb); /* half set up: take no weights, generate nothing */
        memset(&w->mb, 0, sizeof w->mb);
        return -1;
    }
    generate_config_defaults(&w->gc);
    w->gc.max_new_tokens = (int)ppo_get_num(m, "max_new_tokens", 64);
    w->gc.sampler.temperature = (float)ppo_get_num(m, "temperature", 1.0);
    w->gc.sampler.top_p = (float)ppo_get_num(m, "top_p", 1.0);
    w->gc.sampler.top_k = (int)ppo_get_num(m, "top_k", 0);
    w->gc.n_samples = (int)ppo_get_num(m, "n", 1);
    w->gc.seed = (uint64_t)ppo_get_num(m, "seed", 0);
    w->gc.n_slots = (int)ppo_get_num(m, "n_slots", 16);
    WireArray a;
    w->gc.n_stop_ids = 0;
    if (wire_has(m, "stop_ids")) {
        if (wire_get_array(m, "stop_ids", WIRE_I32, ppo_wire_limits(), &a)) return -1;
        for (size_t i = 0; i < a.numel && i < 8; i++) w->stop_ids[w->gc.n_stop_ids++] = ((int32_t *)a.data)[i];
        free(a.data);
    }
    w->gc.stop_ids = w->stop_ids;
    w->version = 0;
    return sampler_config_validate(&w->gc.sampler);
}

/* weights_raw: the header, and the floats in attachment 0. */
static int do_weights_raw(Worker *w, const PpoRequest *r) {
    if (!w->mb.model) return align_errorf("no model yet: send setup first");
    if (r->n_att > 1) return align_errorf("weights_raw: %d attachment frames (one is expected)", r->n_att);
    size_t len = 0;
    const void *data = ppo_request_attachment(r, 0, &len);
    return ppo_sync_apply(w->mb.model, w->base_fp, r->msg, data, len, &w->version);
}

/* weights (the inline form): the whole flat buffer as a msgpack array. */
static int do_weights(Worker *w, const WireMsg *m) {
    if (!w->mb.model) return align_errorf("no model yet: send setup first");
    float *p;
    if (ppo_get_f32(m, "params", (long)w->mb.model->n_elems, &p, NULL)) return -1;
    Model *mo = w->mb.model;
    mo->be->to_device(mo->params, p, mo->n_elems * sizeof(float));
    free(p);
    w->version = (int64_t)ppo_get_num(m, "version", 0);
    return 0;
}

static WireWriter *do_generate(Worker *w, const WireMsg *m) {
    int32_t *pt = NULL, *po = NULL;
    int np = 0;
    if (!w->mb.model) {
        align_errorf("no model yet: send setup first");
        return NULL;
    }
    if (ppo_get_ragged(m, "prompt_tokens", "prompt_offsets", &pt, &po, &np)) return NULL;
    GenConfig gc = w->gc;
    gc.prompt_index_base = (long)ppo_get_num(m, "prompt_index_base", 0);
    int ns = gc.n_samples, total = np * ns;
    GenPrompt *prompts = malloc((size_t)(np + 1) * sizeof *prompts);
    GenOutput *out = calloc((size_t)total + 1, sizeof *out);
    WireWriter *wr = NULL;
    if (!prompts || !out) {
        align_errorf("out of memory");
        goto done;
    }
    for (int i = 0; i < np; i++) prompts[i] = (GenPrompt){pt + po[i], po[i + 1] - po[i]};
    if (generate_run(w->mb.model, &gc, prompts, np, out, NULL, NULL)) goto done;
    long n_tok = 0;
    for (int i = 0; i < total; i++) n_tok += out[i].n_tokens;
    int32_t *tok = malloc((size_t)(n_tok + 1) * sizeof(int32_t)), *off = malloc(((size_t)total + 1) * sizeof(int32_t));
    float *lp = malloc((size_t)(n_tok + 1) * sizeof(float));
    uint8_t *fin = malloc((size_t)total + 1);
    if (tok && off && lp && fin) {
        off[0] = 0;
        for (int i = 0; i < total; i++) {
            memcpy(tok + off[i], out[i].tokens, (size_t)out[i].n_tokens * sizeof(int32_t));
            memcpy(lp + off[i], out[i].logprobs, (size_t)out[i].n_tokens * sizeof(float));
            off[i + 1] = off[i] + out[i].n_tokens;
            fin[i] = (uint8_t)out[i].finish;
        }
        wr = wire_writer_new("samples");
        ppo_put_ragged(wr, "tokens", "offsets", tok, off, total);
        wire_put_vec(wr, "logprobs", WIRE_F32, lp, (size_t)n_tok);
        wire_put_vec(wr, "finish", WIRE_U8, fin, (size_t)total);
        wire_put_int(wr, "version", w->version);
    } else {
        align_errorf("out of memory");
    }
    free(tok), free(off), free(lp), free(fin);
done:
    generate_outputs_free(out, out ? total : 0);
    free(out), free(prompts), free(pt), free(po);
    return wr;
}

static WireWriter *handle(void *state, const Backend *be, PpoRequest *r, const char **code) {
    Worker *w = state;
    if (!strcmp(r->op, "setup")) {
        if (do_setup(w, r->msg, be)) return NULL;
        WireWriter *o = wire_writer_new("ready");
        wire_put_int(o, "n_params", (int64_t)w->mb.model->n_elems);
        return o;
    }
    if (!strcmp(r->op, "weights") || !strcmp(r->op, "weights_raw")) {
        if (!strcmp(r->op, "weights") ? do_weights(w, r->msg) : do_weights_raw(w, r)) {
            *code = "bad_request";
            return NULL;
        }
        WireWriter *o = wire_writer_new("weights_ok");
        wire_put_int(o, "version", w->version);
        return o;
    }
    if (!strcmp(r->op, "generate")) return do_generate(w, r->msg);
    *code = "unknown_op";
    return NULL;
}

int main(int argc, char **argv) {
    Worker w;
    memset(&w, 0, sizeof w);
    PpoWorker pw = {.prog = "rollout_worker", .service = "rollout",
                    .about = "PPO rollout worker: samples completions with per-token log-probs (started by ppo_run).",
                    .serves = "a rollout worker serves setup, weights, weights_raw, generate, ping",
                    .seed_help = "unused: the sampling seed comes with setup", .handle = handle};
    return ppo_worker_main(&pw, &w, argc, argv);
}
