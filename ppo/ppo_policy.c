/* ppo_policy: PPO's policy process. It owns the actor (the policy being
 * trained) and the critic (a value model, by default initialised from the
 * reward model: the reward model already reads "how good is this text",
 * the closest thing to a value function available before training), each
 * with its own AdamW, and runs the PPO update; after an update it pushes
 * the new actor weights to the rollout workers (docs/PROTOCOL.md, "PPO
 * workers").
 *
 *   ppo_policy --bind EP [--device cpu]
 *
 * Everything else arrives with ppo_run's "setup" request (model paths, the
 * optimizer and loss settings), so a hand-started process needs only its
 * endpoint, and ppo_run can set it up again.
 *
 * The update: ppo-epochs passes over the batch, each in a fresh order
 * (seeded by the run's seed, the iteration and the epoch, so a resumed run
 * shuffles the same way), cut into minibatches; per minibatch one optimizer
 * step of each model. The actor's gradient is ppo_policy_loss's per-token
 * d loss / d logp through model_backward(actor, dlogp, NULL); the critic's
 * is ppo_value_loss's d loss / d V, weighted by vf_coef, through
 * model_backward(critic, NULL, dvalues). Old log-probs are the rollout
 * workers' (the same weights, sampled with the raw distribution), so the
 * first minibatch starts at ratio 1 up to float rounding (and LoRA
 * dropout, which is on while training).
 *
 * LoRA (setup's lora_rank or lora_adapter): the actor trains adapters on its
 * frozen base; the critic stays a full model. The rollout workers attached
 * the same adapters to the same base, so the sync after an update sends the
 * adapters alone (ppo_sync.h); with full fine-tuning it sends every
 * parameter, as one raw frame read in place from the model's buffer.
 *
 * Data parallel (`mpirun -np N ppo_policy --bind EP`, ppo_run
 * --policy-ranks N, or N processes started by hand with `--dist-init
 * tcp://HOST:PORT --rank R --world-size N`, rank 0 with --bind EP and
 * ppo_run --policy-connect EP): rank 0 serves the socket and passes every "setup" and
 * "update" request on to the other ranks unchanged (MPI_Bcast of its
 * bytes); every rank loads the same models and takes a contiguous 1/N of
 * each minibatch; the loss is normalised by the whole minibatch's count
 * (ppo_loss.h's denom), so the MPI_Allreduce sum of the ranks' gradients
 * is the one-process gradient and every rank makes the same AdamW step.
 * Values, weight sync and saves are rank 0's alone (the weights are the
 * same on every rank). A policy has no end of its own: a SIGTERM ends it
 * (ppo_run's to mpirun, passed on to every rank; with --dist-init, yours to
 * any one rank, which stops the others through the rendezvous) and every
 * rank leaves with exit 0. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "dist.h"
#include "freeze.h"
#include "lora.h"
#include "model_load.h"
#include "optim.h"
#include "peft.h"
#include "peft_prompt.h"
#include "ppo_batch.h"
#include "ppo_math.h"
#include "ppo_service.h"
#include "ppo_sync.h"
#include "rm_model.h"
#include "trainer.h"
#include "util.h"

typedef struct {
    char ep[512];
    void *sock;
} Push;

typedef struct {
    const Backend *be;
    ModelBundle actor, critic;
    int have_critic;
    Optimizer *oa, *oc;
    PpoConfig c;
    int max_tokens;
    void *ctx;
    Push push[64];
    int n_push;
    uint64_t push_id;
    uint64_t base_fp; /* LoRA: the frozen base's fingerprint, sent with the adapters */
} Policy;

static void policy_free_models(Policy *p) {
    optim_free(p->oa), optim_free(p->oc);
    p->oa = p->oc = NULL;
    if (p->actor.model) model_bundle_free(&p->actor);
    if (p->have_critic && p->critic.model) model_bundle_free(&p->critic);
    memset(&p->actor, 0, sizeof p->actor);
    memset(&p->critic, 0, sizeof p->critic);
    p->have_critic = 0;
}

static long state_long(const char *json, const char *key, long dflt) {
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    cJSON *v = cJSON_GetObjectItem(o, key);
    long r = cJSON_IsNumber(v) ? (long)v->valuedouble : dflt;
    cJSON_Delete(o);
    return r;
}

static int restore_moments(ModelBundle *b, Optimizer *o, const char *path) {
    Model *m = b->model;
    size_t n = m->n_grad_elems;
    if (!n) return 0;
    float *m1 = malloc(n * sizeof(float)), *m2 = malloc(n * sizeof(float));
    int rc = !m1 || !m2 ? align_errorf("out of memory") : ckpt_extras_get_moments(&b->extras, m, m1, m2);
    if (!rc) {
        m->be->to_device(o->m, m1, n * sizeof(float));
        m->be->to_device(o->v, m2, n * sizeof(float));
        o->step = state_long(b->extras.train_state, "optim_step", 0);
    } else {
        align_error_prefix("--resume %s: optimizer moments", path);
    }
    free(m1), free(m2);
    return rc;
}

/* setup's train_part: BitFit (biases only) or freeze tuning (the last
 * trainable_layers layers, trainable_modules of them) on the actor, as
 * the trainers' --peft bitfit|freeze (freeze.h); absent: every tensor. */
static int set_train_part(Model *actor, const WireMsg *m) {
    char *part = ppo_get_strdup(m, "train_part"), *modules = ppo_get_strdup(m, "trainable_modules");
    int n = 0;
    if (part && !strcmp(part, "bitfit")) n = model_train_only_biases(actor);
    else if (part && !strcmp(part, "freeze")) n = model_train_layers(actor, (int)ppo_get_num(m, "trainable_layers", 2), modules);
    else if (part) n = align_errorf("setup: train_part \"%s\": expected bitfit or freeze", part);
    if (part && n >= 0)
        fprintf(stderr, "ppo_policy: %s: %zu trainable parameters in %d tensors\n", part, model_trainable_elems(actor), n);
    free(part), free(modules);
    return n < 0 ? -1 : 0;
}

static int do_setup(Policy *p, const WireMsg *m) {
    policy_free_models(p);
    char *policy = ppo_get_strdup(m, "policy"), *critic = ppo_get_strdup(m, "critic");
    char *resume = ppo_get_strdup(m, "resume"), *resume_critic = ppo_get_strdup(m, "resume_critic");
    char *sched = ppo_get_strdup(m, "lr_schedule"), *agg = ppo_get_strdup(m, "loss_agg");
    char *pl = ppo_get_strdup(m, "policy_loss");
    int rc = -1;
    const char *apath = resume ? resume : policy;
    if (!apath) {
        align_errorf("setup needs \"policy\"");
        goto done;
    }
    if (model_load_any(apath, p->be, 0, &p->actor)) goto done;
    if (!p->actor.model->cfg.lm_head) {
        align_errorf("%s has no LM head: the policy must be a causal LM", apath);
        goto done;
    }
    if (ppo_set_batch_invariant(p->actor.model, m)) goto done;
    /* LoRA: adapters on the frozen base; a --resume checkpoint holds the
     * trained ones as extra tensors (its base is the same frozen base) */
    /* prompt / prefix tuning: the virtual tokens (a --resume .ckpt brought
     * its own back when it was loaded) */
    int virt = ppo_prompt_setup(p->actor.model, m, (uint64_t)ppo_get_num(m, "seed", 0));
    if (virt < 0) goto done;
    int lora = virt ? 0 : ppo_lora_setup(p->actor.model, m, (uint64_t)ppo_get_num(m, "seed", 0));
    if (lora < 0) goto done;
    if (resume) {
        int n = lora ? peft_adapter_from_extras(p->actor.model, &p->actor.extras) : 0;
        for (int i = 0; !lora && i < p->actor.extras.n_tensors; i++)
            if (strstr(p->actor.extras.tensors[i].name, ".lora_A.weight")) n = -1;
        if (n < 0 && !lora) align_errorf("--resume %s holds LoRA adapters: resume with the same --lora-* flags", resume);
        else if (lora && n == 0) align_errorf("--resume %s: the checkpoint has no LoRA adapters (it was not trained with LoRA)", resume);
        if (n < 0 || (lora && n == 0)) goto done;
    }
    if (!lora && !virt && set_train_part(p->actor.model, m)) goto done;
    p->base_fp = 0;
    if ((lora || virt) && !(p->base_fp = ppo_base_fingerprint(p->actor.model))) goto done;
    const char *cpath = resume_critic ? resume_critic : critic;
    if (cpath) {
        if (model_load_any(cpath, p->be, 0, &p->critic)) goto done;
        p->have_critic = 1;
        if (!rm_is_reward_model(&p->critic.model->cfg)) { /* a causal LM: a fresh value head on its trunk */
            Model *v;
            if (rm_from_base(p->critic.model, (uint64_t)ppo_get_num(m, "seed", 0), &v)) goto done;
            if (v != p->critic.model) {
                model_free(p->critic.model);
                p->critic.model = v;
            }
        }
    }
    ppo_config_defaults(&p->c);
    p->c.clip_low = ppo_get_num(m, "clip_low", p->c.clip_low);
    p->c.clip_high = ppo_get_num(m, "clip_high", p->c.clip_high);
    p->c.dual_clip = ppo_get_num(m, "dual_clip", p->c.dual_clip);
    p->c.cliprange_value = ppo_get_num(m, "cliprange_value", p->c.cliprange_value);
    p->c.vf_coef = ppo_get_num(m, "vf_coef", p->c.vf_coef);
    p->c.kl_loss_coef = ppo_get_num(m, "kl_loss_coef", p->c.kl_loss_coef);
    p->c.loss_norm_len = (int)ppo_get_num(m, "loss_norm_len", 0);
    p->c.tis_cap = ppo_get_num(m, "tis_cap", 0);
    if (agg && ppo_loss_agg_parse("loss_agg", agg, &p->c.loss_agg)) goto done;
    if (pl && ppo_policy_loss_parse("policy_loss", pl, &p->c.policy_loss)) goto done;
    p->max_tokens = (int)ppo_get_num(m, "max_batch_tokens", 8192);
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.lr = (float)ppo_get_num(m, "lr", 1e-6);
    oc.weight_decay = (float)ppo_get_num(m, "weight_decay", 0);
    oc.max_grad_norm = (float)ppo_get_num(m, "max_grad_norm", 1.0);
    oc.beta1 = (float)ppo_get_num(m, "adam_beta1", oc.beta1);
    oc.beta2 = (float)ppo_get_num(m, "adam_beta2", oc.beta2);
    oc.eps = (float)ppo_get_num(m, "adam_epsilon", oc.eps);
    oc.warmup_steps = (int)ppo_get_num(m, "warmup_steps", 0);
    oc.total_steps = (int)ppo_get_num(m, "total_steps", 1);
    if (sched && optim_parse_schedule(sched, &oc.schedule)) goto done;
    if (!(p->oa = optim_create(p->actor.model, &oc))) goto done;
    if (resume && restore_moments(&p->actor, p->oa, resume)) goto done;
    if (p->have_critic) {
        oc.lr = (float)ppo_get_num(m, "critic_lr", oc.lr);
        if (!(p->oc = optim_create(p->critic.model, &oc))) goto done;
        if (resume_critic && restore_moments(&p->critic, p->oc, resume_critic)) goto done;
    }
    rc = 0;
done:
    free(policy), free(critic), free(resume), free(resume_critic), free(sched), free(agg), free(pl);
    if (rc) {
        char keep[600];
        snprintf(keep, sizeof keep, "%s", align_error());
        policy_free_models(p);
        align_errorf("%s", keep);
    }
    return rc;
}

static WireWriter *do_values(Policy *p, const WireMsg *m) {
    int32_t *pt = NULL, *po = NULL, *rt = NULL, *ro = NULL;
    int np = 0, nr = 0;
    float *v = NULL;
    WireWriter *w = NULL;
    if (!p->have_critic) align_errorf("this run has no critic");
    else if (ppo_get_ragged(m, "prompt_tokens", "prompt_offsets", &pt, &po, &np) ||
             ppo_get_ragged(m, "tokens", "offsets", &rt, &ro, &nr)) {
    } else if (np != nr) align_errorf("prompts and responses differ in count");
    else if (!(v = malloc(((size_t)ro[nr] + 1) * sizeof(float)))) align_errorf("out of memory");
    else if (!ppo_score_all(p->critic.model, pt, po, rt, ro, nr, p->max_tokens, NULL, v)) {
        w = wire_writer_new("values");
        wire_put_vec(w, "values", WIRE_F32, v, (size_t)ro[nr]);
    }
    free(pt), free(po), free(rt), free(ro), free(v);
    return w;
}

/* Per-token arrays of sequences idx[0..n) gathered from the whole batch. */
static void gather(const float *src, const int32_t *roff, const int32_t *idx, int n, float *dst) {
    if (!src) return;
    for (int i = 0, at = 0; i < n; i++) {
        int s = idx[i], len = roff[s + 1] - roff[s];
        memcpy(dst + at, src + roff[s], (size_t)len * sizeof(float));
        at += len;
    }
}

/* ppo_loss.h's denom for a minibatch: its response tokens under
 * token-mean, else its number of sequences. */
static double minibatch_denom(const PpoConfig *c, const int32_t *roff, const int32_t *idx, int n) {
    if (c->loss_agg != PPO_AGG_TOKEN_MEAN) return n;
    long t = 0;
    for (int i = 0; i < n; i++) t += roff[idx[i] + 1] - roff[idx[i]];
    return (double)t;
}

/* One optimizer step of the actor (and the critic) on the gradients the
 * minibatch left, summed over the ranks first, and so are the ranks' parts
 * of the minibatch's losses (loss_parts[3]: policy, surrogate, value). */
static int step_models(Policy *p, Metrics *acc, double *loss_parts) {
    Model *a = p->actor.model, *c = p->have_critic ? p->critic.model : NULL;
    if (dist_size() > 1 && ((a->n_grad_elems && dist_allreduce_sum(a->grads, a->n_grad_elems)) ||
                            (c && c->n_grad_elems && dist_allreduce_sum(c->grads, c->n_grad_elems)) ||
                            dist_allreduce_sum_double(loss_parts, 3)))
        return -1;
    float lr = 0;
    metrics_add(acc, "grad_norm", optim_step(p->oa, &lr), 1);
    if (c) metrics_add(acc, "critic/grad_norm", optim_step(p->oc, NULL), 1);
    metrics_set(acc, "lr", lr);
    metrics_set(acc, "learning_rate", lr);
    return 0;
}

static WireWriter *do_update(Policy *p, const WireMsg *m) {
    int32_t *pt = NULL, *po = NULL, *rt = NULL, *ro = NULL, *order = NULL;
    int np = 0, S = 0;
    float *old = NULL, *adv = NULL, *ret = NULL, *oldv = NULL, *ref = NULL;
    float *buf = NULL;
    WireWriter *w = NULL;
    if (!p->actor.model) {
        align_errorf("no model yet: send setup first");
        return NULL;
    }
    if (ppo_get_ragged(m, "prompt_tokens", "prompt_offsets", &pt, &po, &np) ||
        ppo_get_ragged(m, "tokens", "offsets", &rt, &ro, &S))
        goto done;
    if (np != S) {
        align_errorf("prompts and responses differ in count");
        goto done;
    }
    long T = ro[S];
    if (ppo_get_f32(m, "old_logp", T, &old, NULL) || ppo_get_f32(m, "advantages", T, &adv, NULL)) goto done;
    if (p->have_critic && (ppo_get_f32(m, "returns", T, &ret, NULL) || ppo_get_f32(m, "old_values", T, &oldv, NULL)))
        goto done;
    if (p->c.kl_loss_coef > 0 && ppo_get_f32(m, "ref_logp", T, &ref, NULL)) goto done;
    int epochs = (int)ppo_get_num(m, "ppo_epochs", 1), mbs = (int)ppo_get_num(m, "minibatch_size", 0);
    int seed = (int)ppo_get_num(m, "seed", 0);
    long iteration = (long)ppo_get_num(m, "iteration", 0);
    if (mbs <= 0 || mbs > S) mbs = S;
    order = malloc((size_t)S * sizeof(int32_t));
    buf = malloc((size_t)(T + 1) * 11 * sizeof(float));
    if (!order || !buf) {
        align_errorf("out of memory");
        goto done;
    }
    float *b_old = buf, *b_adv = buf + T + 1, *b_ret = buf + 2 * (T + 1), *b_oldv = buf + 3 * (T + 1),
          *b_ref = buf + 4 * (T + 1), *b_lp = buf + 5 * (T + 1), *b_d = buf + 6 * (T + 1), *b_v = buf + 7 * (T + 1),
          *b_ent = buf + 8 * (T + 1), *tis = buf + 9 * (T + 1), *b_w = buf + 10 * (T + 1);
    Metrics acc;
    metrics_clear(&acc);
    int use_tis = p->c.tis_cap > 0;
    int rank = dist_rank(), world = dist_size();
    double gap[3] = {0, 0, 0}; /* rollout vs policy log-probs: max |d|, sum |d|, tokens */
    if (use_tis) {
        /* Truncated importance sampling: the trainer's own log-probs of the
         * batch before any step (old), one forward pass in minibatches; the
         * PPO ratio is taken against them, and each token is weighted by
         * min(exp(old - rollout), cap) (ppo_loss.h) */
        float *own = malloc((size_t)(T + 1) * sizeof(float));
        int32_t *all = malloc((size_t)S * sizeof(int32_t));
        int rc = own && all ? 0 : align_errorf("out of memory");
        for (int i = 0; i < S; i++) all[i] = i;
        /* chunk k on rank k % world; the others' tokens stay 0 for the sum */
        if (own) memset(own, 0, (size_t)(T + 1) * sizeof(float));
        for (int at = 0, k = 0; !rc && at < S; at += mbs, k++) {
            int n = S - at < mbs ? S - at : mbs;
            if (k % world != rank) continue;
            PpoPacked b;
            if ((rc = ppo_pack(pt, po, rt, ro, all + at, n, &b))) break;
            rc = ppo_forward(p->actor.model, &b, own + ro[at], NULL);
            ppo_packed_free(&b);
        }
        if (!rc && world > 1) rc = dist_allreduce_sum(own, (size_t)T);
        double gmax = 0, gsum = 0;
        for (long t = 0; !rc && t < T; t++) {
            double d = fabs((double)own[t] - (double)old[t]);
            gmax = d > gmax ? d : gmax;
            gsum += d;
        }
        if (!rc) {
            ppo_tis_weights(own, old, (int)T, p->c.tis_cap, tis);
            memcpy(old, own, (size_t)T * sizeof(float));
            metrics_set(&acc, "rollout/logp_diff_max", gmax);
            metrics_set(&acc, "rollout/logp_diff_mean", T ? gsum / T : 0);
        }
        free(own), free(all);
        if (rc) goto done;
    }
    double t0 = align_now();
    long tokens = 0;
    for (int e = 0; e < epochs; e++) {
        /* one order per (seed, iteration, epoch): a resumed run shuffles as the unbroken one did */
        trainer_epoch_order(seed + (int)(iteration * 7919), e, S, order);
        for (int at = 0; at < S; at += mbs) {
            int n_mb = S - at < mbs ? S - at : mbs;
            /* this rank's contiguous shard; the loss is normalised by the
             * whole minibatch's count, so the ranks' gradients sum to it */
            int lo = (int)((long)n_mb * rank / world), hi = (int)((long)n_mb * (rank + 1) / world);
            double denom = world > 1 ? minibatch_denom(&p->c, ro, order + at, n_mb) : 0;
            const int32_t *idx = order + at + lo;
            int n = hi - lo;
            if (n == 0) { /* fewer sequences than ranks: this one adds nothing but joins the sums */
                double none[3] = {0, 0, 0};
                if (step_models(p, &acc, none)) goto done;
                continue;
            }
            PpoPacked b;
            if (ppo_pack(pt, po, rt, ro, idx, n, &b)) goto done;
            PpoSeqs seqs = {n, b.resp_off};
            gather(old, ro, idx, n, b_old), gather(adv, ro, idx, n, b_adv), gather(ret, ro, idx, n, b_ret);
            gather(oldv, ro, idx, n, b_oldv), gather(ref, ro, idx, n, b_ref);
            if (use_tis) gather(tis, ro, idx, n, b_w);
            PpoPolicyStats pst;
            PpoValueStats vst;
            /* LoRA dropout masks keyed by the optimizer step: a resumed run draws the same */
            model_lora_train_mode(p->actor.model, 1, (uint64_t)p->oa->step);
            int rc = ppo_forward(p->actor.model, &b, b_lp, NULL);
            for (int i = 0; !rc && i < b.n_resp; i++) b_ent[i] = -b_lp[i]; /* sampled entropy estimate */
            if (!rc && e == 0 && at == 0 && !use_tis) {
                /* Before the first optimizer step the policy's log-probs are
                 * those of the weights the rollout workers sampled with: the
                 * gap is the two engines' numerical mismatch (the whole batch
                 * when one minibatch is the batch, else its first minibatch) */
                for (int i = 0; i < b.n_resp; i++) {
                    double d = fabs((double)b_lp[i] - (double)b_old[i]);
                    gap[0] = d > gap[0] ? d : gap[0];
                    gap[1] += d;
                }
                gap[2] += b.n_resp;
            }
            if (!rc)
                rc = ppo_policy_loss_w(&p->c, &seqs, b_lp, b_old, b_adv, ref ? b_ref : NULL, b_ent, use_tis ? b_w : NULL,
                                       denom, b_d, &pst);
            if (!rc) rc = ppo_backward(p->actor.model, &b, b_d, NULL);
            model_lora_train_mode(p->actor.model, 0, 0);
            if (!rc && p->have_critic) {
                rc = ppo_forward(p->critic.model, &b, NULL, b_v);
                if (!rc) rc = ppo_value_loss(&p->c, &seqs, b_v, b_oldv, b_ret, denom, b_d, &vst);
                for (int i = 0; !rc && i < b.n_resp; i++) b_d[i] *= (float)p->c.vf_coef;
                if (!rc) rc = ppo_backward(p->critic.model, &b, NULL, b_d);
            }
            tokens += b.p.batch.n_tokens;
            ppo_packed_free(&b);
            if (rc) goto done;
            double parts[3] = {pst.loss, pst.pg_loss, p->have_critic ? vst.loss : 0};
            if (step_models(p, &acc, parts)) goto done;
            pst.loss = parts[0], pst.pg_loss = parts[1], vst.loss = parts[2];
            ppo_train_metrics_add(&acc, &p->c, &pst, p->have_critic ? &vst : NULL);
        }
    }
    if (world > 1) { /* every rank's figures, merged (the gap: the largest, and the mean over all tokens) */
        double tok = (double)tokens, sums[2] = {gap[1], gap[2]};
        if (dist_merge_metrics(&acc) || dist_allreduce_sum_double(&tok, 1) || dist_allreduce_max_double(gap, 1) ||
            dist_allreduce_sum_double(sums, 2))
            goto done;
        tokens = (long)tok, gap[1] = sums[0], gap[2] = sums[1];
    }
    if (!use_tis) {
        metrics_set(&acc, "rollout/logp_diff_max", gap[0]);
        metrics_set(&acc, "rollout/logp_diff_mean", gap[2] > 0 ? gap[1] / gap[2] : 0);
    }
    double dt = align_now() - t0;
    metrics_set(&acc, "update/tokens_per_s", dt > 0 ? tokens / dt : 0);
    metrics_set(&acc, "update/optimizer_steps", (double)p->oa->step);
    w = wire_writer_new("updated");
    const char *keys[METRICS_MAX];
    double vals[METRICS_MAX];
    for (int i = 0; i < acc.n; i++) {
        keys[i] = acc.key[i];
        vals[i] = metrics_get(&acc, acc.key[i], 0);
    }
    wire_put_str_array(w, "keys", keys, NULL, (size_t)acc.n);
    wire_put_vec(w, "values", WIRE_F64, vals, (size_t)acc.n);
done:
    free(pt), free(po), free(rt), free(ro), free(order), free(old), free(adv), free(ret), free(oldv), free(ref), free(buf);
    return w;
}

/* The payload stays alive while ZeroMQ may still read it: one reference
 * per frame handed to ZeroMQ (released by wire_send_attached's free_fn,
 * from ZeroMQ's I/O thread) plus do_sync's own. */
typedef struct {
    atomic_int refs;
    PpoSyncPayload pl;
} SyncHold;

static void hold_release(void *data, void *hint) {
    (void)data;
    SyncHold *h = hint;
    if (atomic_fetch_sub(&h->refs, 1) == 1) {
        ppo_sync_payload_free(&h->pl);
        free(h);
    }
}

/* Push the actor's weights (its adapters with LoRA) to every endpoint as a
 * "weights_raw" header + one raw frame sent in place; ok[i] = 1 when it
 * acked. *bytes: the payload size per worker. */
/* CURVE for the rollout workers started by hand (ppo_run's sync request
 * names them): the workers' public key and the key pair to connect as. */
typedef struct {
    const uint8_t *on; /* [n] 1: this endpoint needs CURVE (NULL: none does) */
    const char *server_key, *secret_file;
} SyncCurve;

static int do_sync(Policy *p, char **eps, int n, const SyncCurve *cv, int64_t version, int timeout_ms, uint8_t *ok,
                   size_t *bytes) {
    Model *a = p->actor.model;
    SyncHold *hold = calloc(1, sizeof *hold);
    if (!hold) return align_errorf("out of memory");
    if (ppo_sync_payload(a, &hold->pl)) {
        free(hold);
        return -1;
    }
    atomic_init(&hold->refs, 1);
    WireWriter *w = ppo_sync_header(a, &hold->pl, version, p->base_fp);
    uint64_t id = ++p->push_id;
    if (w) wire_put_uint(w, "id", id);
    void *data;
    size_t len;
    if (!w || wire_finish(w, &data, &len)) {
        hold_release(NULL, hold);
        return -1;
    }
    *bytes = hold->pl.numel * sizeof(float);
    WireAttach att = {hold->pl.data, *bytes, hold_release, hold};
    int slot[64];
    for (int i = 0; i < n; i++) {
        ok[i] = 0;
        slot[i] = -1;
        for (int k = 0; k < p->n_push; k++)
            if (!strcmp(p->push[k].ep, eps[i])) slot[i] = k;
        if (slot[i] < 0 && p->n_push < 64) {
            Push *q = &p->push[p->n_push];
            q->sock = zmq_socket(p->ctx, ZMQ_DEALER);
            int linger = 0;
            zmq_setsockopt(q->sock, ZMQ_LINGER, &linger, sizeof linger);
            if (cv->on && cv->on[i] && curve_client_apply_key(q->sock, cv->server_key, cv->secret_file)) {
                fprintf(stderr, "ppo_policy: weight sync to %s: %s\n", eps[i], align_error());
                zmq_close(q->sock);
                continue;
            }
            if (zmq_connect(q->sock, eps[i])) {
                zmq_close(q->sock);
                continue;
            }
            snprintf(q->ep, sizeof q->ep, "%s", eps[i]);
            slot[i] = p->n_push++;
        }
        if (slot[i] < 0) continue;
        atomic_fetch_add(&hold->refs, 1);
        if (wire_send_attached(p->push[slot[i]].sock, NULL, data, len, &att, 1, 0)) slot[i] = -1;
    }
    free(data);
    double deadline = align_now() + timeout_ms / 1000.0;
    int pending = 0;
    for (int i = 0; i < n; i++) pending += slot[i] >= 0;
    while (pending > 0 && align_now() < deadline) {
        zmq_pollitem_t items[64];
        int map[64], k = 0;
        for (int i = 0; i < n; i++)
            if (slot[i] >= 0 && !ok[i]) items[k] = (zmq_pollitem_t){p->push[slot[i]].sock, 0, ZMQ_POLLIN, 0}, map[k++] = i;
        if (zmq_poll(items, k, 100) <= 0) continue;
        for (int j = 0; j < k; j++) {
            if (!(items[j].revents & ZMQ_POLLIN)) continue;
            WireFrames f;
            if (wire_recv(items[j].socket, &f, 1 << 20, ZMQ_DONTWAIT)) continue;
            WireMsg *r = f.body ? wire_parse(f.body, f.body_len, ppo_wire_limits()) : NULL;
            uint64_t got = 0;
            if (r && !strcmp(wire_op(r), "weights_ok") && !wire_get_uint(r, "id", &got) && got == id) {
                ok[map[j]] = 1;
                pending--;
            } else if (r && !strcmp(wire_op(r), "error") && !wire_get_uint(r, "id", &got) && got == id) {
                const char *msg = "";
                size_t ml = 0;
                wire_get_str(r, "message", &msg, &ml);
                fprintf(stderr, "ppo_policy: %s refused the weights: %.*s\n", eps[map[j]], (int)ml, msg);
                pending--;
                slot[map[j]] = -1;
            }
            wire_msg_free(r);
            wire_frames_free(&f);
        }
    }
    /* a worker that did not answer gets a fresh socket next time (no stale
     * queued weights, and a restarted worker on the same endpoint starts clean) */
    for (int i = 0; i < n; i++)
        if (!ok[i] && slot[i] >= 0) {
            int k = slot[i];
            zmq_close(p->push[k].sock);
            p->push[k] = p->push[--p->n_push];
            for (int j = 0; j < n; j++)
                if (slot[j] == p->n_push) slot[j] = k;
        }
    /* The frames are sent in place: nothing may change the weights before
     * ZeroMQ has let go of every one (an acked frame is already released;
     * one queued for a closed socket is dropped promptly). */
    double until = align_now() + 60;
    while (atomic_load(&hold->refs) > 1 && align_now() < until) usleep(1000);
    if (atomic_load(&hold->refs) > 1)
        fprintf(stderr, "ppo_policy: a weights frame is still held by ZeroMQ after 60 s\n");
    hold_release(NULL, hold);
    return 0;
}

/* A checkpoint: with moments, everything --resume needs (LoRA adapters are
 * ordinary tensors of the table); without, the plain model (LoRA merged,
 * and the adapter alone in adapter_dir, peft's layout). */
static int save_one(ModelBundle *b, Optimizer *o, const char *path, const char *state, int moments,
                    const char *adapter_dir) {
    Model *m = b->model;
    cJSON *st = state ? cJSON_Parse(state) : cJSON_CreateObject();
    if (!st) st = cJSON_CreateObject();
    cJSON_DeleteItemFromObject(st, "optim_step");
    cJSON_AddNumberToObject(st, "optim_step", (double)o->step);
    char *js = cJSON_PrintUnformatted(st);
    cJSON_Delete(st);
    int rc;
    if (!moments) {
        for (int i = 0; i < b->extras.n_tensors; i++) {
            if (b->extras.tensors[i].owned) free(b->extras.tensors[i].data);
            free(b->extras.tensors[i].name);
        }
        free(b->extras.tensors);
        b->extras.tensors = NULL;
        b->extras.n_tensors = 0;
        ckpt_extras_set(&b->extras.train_state, js);
        if (m->lora || m->prompt) {
            char dir[4096];
            if (adapter_dir) {
                snprintf(dir, sizeof dir, "%s", adapter_dir);
            } else {
                size_t len = strlen(path);
                while (len > 1 && path[len - 1] == '/') len--;
                if (len > 5 && !strncmp(path + len - 5, ".ckpt", 5)) len -= 5;
                snprintf(dir, sizeof dir, "%.*s-adapter", (int)len, path);
            }
            if (m->prompt) { /* nothing merges: the .ckpt keeps the base and the virtual tokens */
                rc = peft_prompt_save(dir, m, b->extras.base_model) ? -1 : 0;
                ckpt_extras_set(&b->extras.base_model, NULL);
                if (!rc) rc = model_save_any(path, b) ? -1 : 0;
            } else {
                rc = peft_save_adapter(dir, m, b->extras.base_model) ? -1 : 0;
                ckpt_extras_set(&b->extras.base_model, NULL); /* the merged weights are trained ones */
                if (!rc) rc = model_save_merged(path, b) ? -1 : 0;
            }
        } else {
            ckpt_extras_set(&b->extras.base_model, NULL); /* trained weights */
            rc = model_save_any(path, b);
        }
    } else {
        size_t n = m->n_grad_elems;
        float *m1 = malloc(n * sizeof(float) + 1), *m2 = malloc(n * sizeof(float) + 1);
        CkptExtras ex;
        ckpt_extras_init(&ex);
        rc = !m1 || !m2 ? align_errorf("out of memory") : 0;
        if (!rc && n) {
            m->be->to_host(m1, o->m, n * sizeof(float));
            m->be->to_host(m2, o->v, n * sizeof(float));
        }
        rc = rc || ckpt_extras_set(&ex.tokenizer_json, b->extras.tokenizer_json) ||
             ckpt_extras_set(&ex.chat_template, b->extras.chat_template) ||
             ckpt_extras_set(&ex.chat_template_jinja, b->extras.chat_template_jinja) ||
             ckpt_extras_set(&ex.train_state, js) || ckpt_extras_add_moments(&ex, m, m1, m2) ||
             (m->lora && ckpt_extras_set(&ex.base_model, b->extras.base_model)) || ckpt_save(path, m, &ex);
        rc = rc ? -1 : 0;
        ckpt_extras_free(&ex);
        free(m1), free(m2);
    }
    free(js);
    return rc;
}

static WireWriter *do_sync_request(Policy *p, const WireMsg *m) {
    char **eps = NULL;
    size_t n = 0, bytes = 0;
    uint8_t ok[64];
    WireWriter *w = NULL;
    if (wire_get_str_array(m, "endpoints", ppo_wire_limits(), &eps, &n)) return NULL;
    SyncCurve cv = {0};
    WireArray on = {0};
    char *key = NULL, *secret = NULL;
    int failed = n > 64 ? align_errorf("at most 64 rollout endpoints") : 0;
    if (!failed && wire_has(m, "curve")) {
        key = ppo_get_strdup(m, "curve_server_key"), secret = ppo_get_strdup(m, "curve_secret_file");
        if (wire_get_array(m, "curve", WIRE_U8, ppo_wire_limits(), &on) || on.numel != n || !key || strlen(key) != 40 || !secret)
            failed = align_errorf("sync: \"curve\" needs one flag per endpoint, \"curve_server_key\" and \"curve_secret_file\"");
        else cv = (SyncCurve){on.data, key, secret};
    }
    if (!failed && !do_sync(p, eps, (int)n, &cv, (int64_t)ppo_get_num(m, "version", 0), (int)ppo_get_num(m, "timeout_ms", 30000),
                            ok, &bytes)) {
        w = wire_writer_new("synced");
        wire_put_vec(w, "ok", WIRE_U8, ok, n);
        wire_put_uint(w, "bytes", bytes);
    }
    free(eps), free(on.data), free(key), free(secret);
    return w;
}

static WireWriter *do_save(Policy *p, const WireMsg *m) {
    char *path = ppo_get_strdup(m, "path"), *cpath = ppo_get_strdup(m, "critic_path"),
         *state = ppo_get_strdup(m, "train_state"), *adir = ppo_get_strdup(m, "adapter_path");
    int moments = (int)ppo_get_num(m, "moments", 1), failed;
    if (!path) failed = align_errorf("save needs \"path\"");
    else failed = save_one(&p->actor, p->oa, path, state, moments, adir) ||
                  (p->have_critic && cpath && save_one(&p->critic, p->oc, cpath, state, moments, NULL));
    /* a checkpoint ppo_run can --resume from, whole now: the fault lines name it */
    if (!failed && moments) dist_set_resume_hint(path);
    free(path), free(cpath), free(state), free(adir);
    return failed ? NULL : wire_writer_new("saved");
}

/* Rank 0: pass a request every rank must run on (or, for a save, know of)
 * to the others, unchanged. */
static int share_request(const WireMsg *m) {
    size_t len;
    const void *bytes = wire_msg_bytes(m, &len);
    uint64_t n = len;
    return dist_bcast_idle(&n, sizeof n, 0) || dist_bcast((void *)bytes, len, 0) ? -1 : 0;
}

static WireWriter *handle(void *state, const Backend *be, PpoRequest *r, const char **code) {
    Policy *p = state;
    p->be = be;
    if (dist_size() > 1 && (!strcmp(r->op, "setup") || !strcmp(r->op, "update")) && share_request(r->msg))
        dist_abort(align_error(), 1); /* the ranks no longer agree on the model: end the job */
    if (!strcmp(r->op, "setup")) {
        if (do_setup(p, r->msg)) return NULL;
        WireWriter *w = wire_writer_new("ready");
        Model *am = p->actor.model;
        wire_put_int(w, "n_params", (int64_t)am->n_elems);
        wire_put_int(w, "optim_step", p->oa->step);
        wire_put_bool(w, "critic", p->have_critic);
        wire_put_str(w, "sync", am->prompt ? "prompt" : am->lora ? "lora" : "full");
        wire_put_uint(w, "sync_numel", am->prompt ? model_prompt_numel(am)
                                       : am->lora ? model_lora_numel(am) : am->n_elems);
        return w;
    }
    int known = !strcmp(r->op, "values") || !strcmp(r->op, "update") || !strcmp(r->op, "sync") || !strcmp(r->op, "save");
    if (known && !p->actor.model) {
        *code = "not_ready";
        align_errorf("no model yet: send setup first");
        return NULL;
    }
    if (!strcmp(r->op, "values")) return do_values(p, r->msg);
    if (!strcmp(r->op, "update")) return do_update(p, r->msg);
    if (!strcmp(r->op, "sync")) return do_sync_request(p, r->msg);
    if (!strcmp(r->op, "save")) {
        WireWriter *w = do_save(p, r->msg);
        /* after the save, not before: the other ranks' fault lines name it
         * as a checkpoint to resume from only once it is whole */
        if (w && dist_size() > 1 && ppo_get_num(r->msg, "moments", 1) && share_request(r->msg))
            dist_abort(align_error(), 1);
        return w;
    }
    *code = "unknown_op";
    return NULL;
}

/* The trainers' flags for ranks started without mpirun (trainer.c). */
static struct {
    const char *dist_init;
    int rank, world_size; /* -1, 0: unset */
    float dist_timeout;
} D = {NULL, -1, 0, 600};

static CliFlag dist_flags[] = {
    {"dist-init", CLI_STRING, &D.dist_init, "without mpirun: tcp://HOST:PORT where rank 0 listens; start each of the --world-size "
                                            "ranks with its own --rank (rank 0 with --bind EP for ppo_run --policy-connect EP; the others need no --bind)"},
    {"rank", CLI_INT, &D.rank, "with --dist-init: this process's rank, 0 to N-1", CLI_NONNEG},
    {"world-size", CLI_INT, &D.world_size, "with --dist-init: the number of ranks N", CLI_AT_LEAST_1},
    {"dist-timeout", CLI_FLOAT, &D.dist_timeout, "with several ranks: seconds a collective may wait for a hung rank before the job "
                                                 "aborts, and --dist-init waits for every rank to arrive (0 = forever)", CLI_NONNEG},
};

/* mpirun passes ppo_run's SIGTERM (the end of a run) to every rank: leave
 * quietly, there is nothing of ours half written (saves are atomic). With
 * --dist-init the signal reaches one rank, which stops the others. */
static void on_term(int sig) {
    (void)sig;
    dist_stop_job();
}

/* Join the job (the flags are read by now), then ranks 1..N-1 run every
 * request rank 0 passes on, until it sends length 0. */
static int follow_rank0(void *state, const Backend *be, const char *bind) {
    Policy *p = state;
    p->be = be;
    if (dist_set_rendezvous(D.dist_init, D.rank, D.world_size)) {
        fprintf(stderr, "ppo_policy: %s\n", align_error());
        exit(2);
    }
    /* before joining: the other ranks would wait for a rank 0 that cannot serve */
    if (!bind && dist_rank() == 0) {
        fprintf(stderr, "ppo_policy: --bind is required%s (see --help)\n",
                D.dist_init ? " on rank 0, which serves ppo_run (the other ranks need none)" : "");
        exit(1); /* as every worker's missing --bind (ppo_service.c) */
    }
    if (dist_init("ppo_policy", D.dist_timeout)) align_die_error("ppo_policy");
    if (D.dist_init) { /* even a world of one: its ompi-server goes with it, and the exit is 0 */
        signal(SIGTERM, on_term);
        signal(SIGINT, on_term); /* a rank's own terminal: Ctrl-C stops the policy as SIGTERM does */
    }
    if (dist_size() == 1) return -1;
    if (!D.dist_init) {
        signal(SIGTERM, on_term);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* mpirun killed (ppo_run was): no rank is left waiting */
    }
    if (strcmp(be->name, "cpu")) { /* the gradients would be in device memory: the NCCL path is not built */
        fprintf(stderr, "ppo_policy: --device %s: a policy of %d ranks runs on the CPU (MPI_Allreduce of host memory)\n",
                be->name, dist_size());
        dist_abort("stopping every rank", 2);
    }
    if (dist_rank() == 0) {
        fprintf(stderr, "ppo_policy: %d ranks (data parallel): each takes 1/%d of every minibatch\n", dist_size(), dist_size());
        return -1;
    }
    for (;;) {
        uint64_t len = 0;
        if (dist_bcast_idle(&len, sizeof len, 0)) dist_abort(align_error(), 1);
        if (len == 0) return 0;
        char *bytes = malloc(len);
        if (!bytes) dist_abort("out of memory receiving a request", 1);
        if (dist_bcast(bytes, len, 0)) dist_abort(align_error(), 1);
        WireMsg *m = wire_parse(bytes, len, ppo_wire_limits());
        free(bytes);
        if (!m) dist_abort(align_error(), 1);
        /* rank 0 answers ppo_run; an error here is the one it reported */
        if (!strcmp(wire_op(m), "setup")) {
            do_setup(p, m);
        } else if (!strcmp(wire_op(m), "save")) { /* rank 0 saved it: only the fault lines' hint */
            char *path = ppo_get_strdup(m, "path");
            if (path) dist_set_resume_hint(path);
            free(path);
        } else {
            wire_writer_free(do_update(p, m));
        }
        wire_msg_free(m);
    }
}

int main(int argc, char **argv) {
    Policy p;
    memset(&p, 0, sizeof p);
    p.ctx = zmq_ctx_new();
    PpoWorker w = {.prog = "ppo_policy", .service = "policy",
                   .about = "PPO policy worker: actor and critic with their optimizers; runs the PPO update and pushes "
                            "weights to rollout workers (started by ppo_run). As N data-parallel ranks: mpirun -np N "
                            "ppo_policy --bind EP, or without mpirun each rank started by hand with --dist-init "
                            "tcp://HOST:PORT --rank R --world-size N (rank 0 with --bind EP); then ppo_run --policy-connect "
                            "EP. A SIGTERM to any rank stops them all (exit 0).",
                   .serves = "the policy serves setup, values, update, sync, save, ping",
                   .seed_help = "unused: the run's seed comes with setup and update", .handle = handle,
                   .flags = dist_flags, .n_flags = (int)(sizeof dist_flags / sizeof *dist_flags), .follow = follow_rank0};
    int rc = ppo_worker_main(&w, &p, argc, argv);
    uint64_t stop = 0;
    if (dist_size() > 1 && dist_rank() == 0) dist_bcast_idle(&stop, sizeof stop, 0);
    return rc;
}
