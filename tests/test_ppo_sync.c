/* test_ppo_sync: the weights the PPO policy pushes to its rollout workers
 * (common/net/ppo_sync.h, docs/PROTOCOL.md "weights_raw"), through a real worker
 * socket (ppo_service on ipc:// in a temp dir) where the framing matters.
 *
 * Models: tiny Llama-shaped (vocab 64, dim 32, 2 layers), random weights.
 *   full sync: the worker's parameters equal the policy's bit for bit; the
 *     floats travel as one zero-copy attachment frame, released by ZeroMQ
 *     exactly once
 *   LoRA sync: only the adapters travel (a small fraction of the model); a
 *     worker that loaded the same base and attached the same config then
 *     has the policy's parameters bit for bit, and the same per-token
 *     log-probs (PPO's old_logp) on a batch, which differed before the sync
 *   malformed headers and frames are refused with a sentence naming the
 *     fault, and the worker's weights are untouched: wrong kind, dtype,
 *     numel vs frame size, missing frame, model size, negative version,
 *     adapters to a worker without LoRA, another LoRA config, another base;
 *     a body announcing more attachments than frames gets an error reply */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "lora.h"
#include "model.h"
#include "ppo_batch.h"
#include "ppo_service.h"
#include "ppo_sync.h"
#include "test.h"
#include "util.h"

static Model *tiny(uint64_t seed, int layers) {
    ModelConfig c;
    model_config_defaults(&c, ARCH_LLAMA);
    c.vocab_size = 64, c.dim = 32, c.n_layers = layers, c.n_heads = 2, c.head_dim = 16, c.n_kv_heads = 2;
    c.ffn_dim = 64, c.max_seq_len = 64, c.tied_embeddings = 1;
    c.bos_id = 1, c.eos_id = 2, c.pad_id = 0;
    Model *m = model_create(&c, &backend_cpu);
    if (m) model_init_random(m, seed);
    return m;
}

static LoraConfig lora_cfg(int rank, uint64_t seed) {
    LoraConfig c;
    lora_config_defaults(&c);
    c.rank = rank, c.alpha = 2.0f * rank, c.dropout = 0, c.seed = seed;
    return c;
}

static uint64_t digest(const Model *m) {
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t *b = (const uint8_t *)m->params;
    for (size_t i = 0; i < m->n_elems * sizeof(float); i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* per-token log-probs of a fixed batch of 3 (prompt, response) pairs */
static void logprobs(Model *m, float *out) {
    int32_t pt[] = {1, 5, 9, 1, 7, 1, 3, 3, 4}, po[] = {0, 3, 5, 9};
    int32_t rt[] = {10, 11, 12, 13, 20, 21, 30, 31, 32, 33, 2}, ro[] = {0, 4, 6, 11};
    CHECK(ppo_score_all(m, pt, po, rt, ro, 3, 256, out, NULL) == 0, "ppo_score_all: %s", align_error());
}

/* ---- a worker socket and a client */

static PpoService *svc;
static void *ctx, *cli;
static atomic_int released;

static void on_release(void *data, void *hint) {
    (void)data, (void)hint;
    atomic_fetch_add(&released, 1);
}

/* Send header (+ the payload as attachment when p) and receive it as the worker does. */
static int push(const Model *from, const PpoSyncPayload *p, int64_t version, uint64_t base_fp, PpoRequest *r) {
    WireWriter *w = ppo_sync_header(from, p, version, base_fp);
    wire_put_uint(w, "id", 42);
    void *body;
    size_t len;
    if (wire_finish(w, &body, &len)) return -1;
    WireAttach a = {p->data, p->numel * sizeof(float), on_release, NULL};
    int rc = wire_send_attached(cli, NULL, body, len, &a, 1, 0);
    free(body);
    return rc || ppo_service_next(svc, r);
}

/* A crafted "weights_raw" header applied with data (len bytes) as its
 * attachment (NULL: none). rank 0: no LoRA fields. Returns the apply's
 * status. */
static int apply_crafted(Model *to, uint64_t fp, const char *kind, const char *dtype, uint64_t numel, uint64_t n_params,
                         int64_t version, const float *data, size_t len, int rank, unsigned targets, uint64_t base) {
    WireWriter *w = wire_writer_new("weights_raw");
    wire_put_int(w, "version", version);
    wire_put_str(w, "kind", kind);
    wire_put_str(w, "dtype", dtype);
    wire_put_uint(w, "numel", numel);
    wire_put_uint(w, "n_params", n_params);
    wire_put_uint(w, "attachments", data ? 1 : 0);
    if (rank) {
        wire_put_int(w, "lora_rank", rank);
        wire_put_float(w, "lora_alpha", 2.0 * rank);
        wire_put_uint(w, "lora_targets", targets);
        wire_put_uint(w, "base", base);
    }
    void *body;
    size_t bl;
    wire_finish(w, &body, &bl);
    WireMsg *m = wire_parse(body, bl, ppo_wire_limits());
    free(body);
    int64_t v = -7;
    int rc = ppo_sync_apply(to, fp, m, data, len, &v);
    wire_msg_free(m);
    return rc;
}

static void refused(int rc, const char *needle, const char *what, Model *w, uint64_t before) {
    CHECK(rc == -1, "%s: accepted", what);
    CHECK(rc == -1 && strstr(align_error(), needle), "%s: error \"%s\" does not say \"%s\"", what, align_error(), needle);
    CHECK(digest(w) == before, "%s: the worker's weights changed", what);
}

int main(void) {
    char dir[] = "/tmp/test_ppo_sync.XXXXXX", ep[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(ep, sizeof ep, "ipc://%s/rollout.sock", dir);
    svc = ppo_service_start("rollout", ep, NULL);
    CHECK(svc != NULL, "service: %s", align_error());
    if (!svc) return test_summary();
    ctx = zmq_ctx_new();
    cli = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(cli, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(cli, ep);

    /* ---- full sync, bit for bit */
    Model *pol = tiny(1, 2), *wk = tiny(2, 2);
    PpoSyncPayload pl;
    CHECK(ppo_sync_payload(pol, &pl) == 0 && pl.kind == PPO_SYNC_FULL && pl.numel == pol->n_elems &&
              pl.data == pol->params && !pl.owned,
          "full payload: all parameters, read in place from the model");
    CHECK(digest(pol) != digest(wk), "two random models differ");
    PpoRequest r;
    atomic_store(&released, 0);
    CHECK(push(pol, &pl, 3, 0, &r) == 0, "full: push: %s", align_error());
    CHECK(!strcmp(r.op, "weights_raw") && r.n_att == 1 && r.has_id && r.id == 42 && r.env.n_env == 1,
          "full: the worker sees the header, one attachment and a one-frame envelope (op %s, att %d, env %d)", r.op,
          r.n_att, r.env.n_env);
    size_t alen = 0;
    const void *adata = ppo_request_attachment(&r, 0, &alen);
    int64_t ver = -1;
    CHECK(ppo_sync_apply(wk, 0, r.msg, adata, alen, &ver) == 0, "full: apply: %s", align_error());
    CHECK(ver == 3, "full: version %lld", (long long)ver);
    CHECK(!memcmp(wk->params, pol->params, pol->n_elems * sizeof(float)), "full: the worker's parameters equal the policy's bit for bit");
    ppo_service_reply(svc, &r, wire_writer_new("weights_ok"));
    for (int i = 0; i < 500 && atomic_load(&released) < 1; i++) usleep(2000);
    CHECK(atomic_load(&released) == 1, "full: ZeroMQ released the zero-copy frame once (%d)", atomic_load(&released));
    ppo_sync_payload_free(&pl);
    {   /* the reply came back to the client */
        WireFrames f;
        int rc = wire_recv(cli, &f, 1 << 20, 0);
        WireMsg *m = rc ? NULL : wire_parse(f.body, f.body_len, NULL);
        CHECK(m && !strcmp(wire_op(m), "weights_ok"), "full: the client got weights_ok");
        wire_msg_free(m);
        if (!rc) wire_frames_free(&f);
    }

    /* ---- LoRA: adapters only */
    Model *lp = tiny(1, 2), *lw = tiny(1, 2); /* the same base */
    LoraConfig c1 = lora_cfg(4, 11), c2 = lora_cfg(4, 99); /* A's init differs: only the sync makes them equal */
    CHECK(model_lora_attach(lp, &c1) == 0 && model_lora_attach(lw, &c2) == 0, "attach: %s", align_error());
    size_t na = model_lora_numel(lp);
    float *ad = malloc(na * sizeof(float));
    model_lora_get(lp, ad);
    for (size_t i = 0; i < na; i++) ad[i] = 0.05f * (float)sin(0.37 * (double)i + 1.0); /* a trained-looking B too */
    model_lora_set(lp, ad);
    float before_p[11], before_w[11], after_w[11];
    logprobs(lp, before_p), logprobs(lw, before_w);
    CHECK(memcmp(before_p, before_w, sizeof before_p), "LoRA: before the sync the worker's log-probs differ");
    uint64_t fp_p = ppo_base_fingerprint(lp), fp_w = ppo_base_fingerprint(lw);
    CHECK(fp_p && fp_p == fp_w, "LoRA: the same base has the same fingerprint");
    CHECK(ppo_sync_payload(lp, &pl) == 0 && pl.kind == PPO_SYNC_LORA && pl.numel == na && pl.owned,
          "LoRA payload: the adapters alone");
    CHECK(pl.numel < lp->n_elems / 4, "LoRA payload: %zu of %zu elements", pl.numel, lp->n_elems);
    atomic_store(&released, 0);
    CHECK(push(lp, &pl, 5, fp_p, &r) == 0, "LoRA: push: %s", align_error());
    adata = ppo_request_attachment(&r, 0, &alen);
    CHECK(alen == na * sizeof(float), "LoRA: the frame holds the adapters (%zu bytes)", alen);
    CHECK(ppo_sync_apply(lw, fp_w, r.msg, adata, alen, &ver) == 0 && ver == 5, "LoRA: apply: %s", align_error());
    ppo_request_free(&r);
    CHECK(!memcmp(lw->params, lp->params, lp->n_elems * sizeof(float)),
          "LoRA: base and adapters equal the policy's bit for bit");
    logprobs(lw, after_w);
    CHECK(!memcmp(before_p, after_w, sizeof after_w), "LoRA: the worker's log-probs equal the policy's bit for bit");
    ppo_sync_payload_free(&pl);
    free(ad);

    /* ---- malformed messages: refused, weights untouched */
    uint64_t dw = digest(wk), dlw = digest(lw);
    size_t n = pol->n_elems, full = n * sizeof(float);
    const float *src = pol->params;
    refused(apply_crafted(wk, 0, "half", "f32", n, n, 1, src, full, 0, 0, 0), "\"kind\"", "kind half", wk, dw);
    refused(apply_crafted(wk, 0, "full", "f16", n, n, 1, src, full, 0, 0, 0), "\"dtype\"", "dtype f16", wk, dw);
    refused(apply_crafted(wk, 0, "full", "f32", n + 1, n, 1, src, full, 0, 0, 0), "bytes", "numel one too many", wk, dw);
    refused(apply_crafted(wk, 0, "full", "f32", n, n, 1, src, full - 4, 0, 0, 0), "bytes", "a short frame", wk, dw);
    refused(apply_crafted(wk, 0, "full", "f32", n, n, 1, NULL, 0, 0, 0, 0), "no attachment", "no frame", wk, dw);
    refused(apply_crafted(wk, 0, "full", "f32", n, n, -1, src, full, 0, 0, 0), "version", "negative version", wk, dw);
    Model *small = tiny(3, 1);
    size_t ns = small->n_elems;
    refused(apply_crafted(wk, 0, "full", "f32", ns, ns, 1, small->params, ns * 4, 0, 0, 0), "parameters",
            "another model's size", wk, dw);
    refused(apply_crafted(wk, 0, "lora", "f32", na, n, 1, src, na * 4, 4, c1.targets, fp_p), "without LoRA",
            "adapters to a worker without LoRA", wk, dw);
    size_t nl = lw->n_elems;
    const float *lsrc = lp->params + (lp->n_elems - na);
    refused(apply_crafted(lw, fp_w, "lora", "f32", na, nl, 1, lsrc, na * 4, 8, c1.targets, fp_p), "rank 8",
            "another LoRA rank", lw, dlw);
    refused(apply_crafted(lw, fp_w, "lora", "f32", na, nl, 1, lsrc, na * 4, 4, LORA_T_Q, fp_p), "targets",
            "other LoRA targets", lw, dlw);
    refused(apply_crafted(lw, fp_w, "lora", "f32", na, nl, 1, lsrc, na * 4, 4, c1.targets, fp_p ^ 1), "base model differs",
            "another base", lw, dlw);
    CHECK(apply_crafted(lw, fp_w, "lora", "f32", na, nl, 9, lsrc, na * 4, 4, c1.targets, fp_p) == 0,
          "the well-formed LoRA header is accepted: %s", align_error());
    Model *other = tiny(4, 2);
    model_lora_attach(other, &c1);
    CHECK(ppo_base_fingerprint(other) != fp_p, "another base, another fingerprint");

    /* ---- framing: more attachments announced than frames sent */
    {
        WireWriter *w = wire_writer_new("weights_raw");
        wire_put_uint(w, "id", 7);
        wire_put_uint(w, "attachments", 2);
        void *body;
        size_t bl;
        wire_finish(w, &body, &bl);
        WireAttach a = {src, 16, NULL, NULL};
        wire_send_attached(cli, NULL, body, bl, &a, 1, 0);
        free(body);
        w = wire_writer_new("noop");
        wire_put_uint(w, "id", 8);
        wire_finish(w, &body, &bl);
        wire_send(cli, NULL, body, bl, 0);
        free(body);
        CHECK(ppo_service_next(svc, &r) == 0 && !strcmp(r.op, "noop") && r.n_att == 0,
              "the bad message is answered by the service and skipped");
        ppo_service_reply(svc, &r, wire_writer_new("done"));
        WireFrames f;
        int rc = wire_recv(cli, &f, 1 << 20, 0);
        WireMsg *m = rc ? NULL : wire_parse(f.body, f.body_len, NULL);
        const char *code = "", *msg = "";
        size_t cl = 0, ml = 0;
        uint64_t id = 0;
        if (m) wire_get_str(m, "code", &code, &cl), wire_get_str(m, "message", &msg, &ml), wire_get_uint(m, "id", &id);
        CHECK(m && !strcmp(wire_op(m), "error") && cl == 11 && !memcmp(code, "bad_request", 11) && id == 7 &&
                  ml && memmem(msg, ml, "attachments", 11),
              "an error reply (bad_request, id 7) naming \"attachments\": %.*s", (int)ml, msg);
        wire_msg_free(m);
        if (!rc) wire_frames_free(&f);
    }

    model_free(pol), model_free(wk), model_free(lp), model_free(lw), model_free(small), model_free(other);
    zmq_close(cli);
    zmq_ctx_term(ctx);
    ppo_service_stop(svc);
    char sock[300];
    snprintf(sock, sizeof sock, "%s/rollout.sock", dir);
    unlink(sock);
    rmdir(dir);
    return test_summary();
}
