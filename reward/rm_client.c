/* rm_client: request/reply client of reward_server (see rm_client.h). */
#include "rm_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "curve.h"
#include "util.h"

struct RmClient {
    void *ctx, *sock;
    int own_ctx;
    int timeout_ms;
    uint64_t next_id;
    char endpoint[256];
};

RmClient *rm_client_connect(void *ctx, const char *endpoint, const RmCurveClient *curve, int timeout_ms) {
    RmClient *c = calloc(1, sizeof *c);
    if (!c) {
        align_errorf("out of memory");
        return NULL;
    }
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    c->own_ctx = ctx == NULL;
    c->ctx = ctx ? ctx : zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    /* ids differ between clients of one process so logs can tell them apart */
    c->next_id = ((uint64_t)(uintptr_t)c << 20) ^ (uint64_t)(align_now() * 1e6);
    if (!c->sock) {
        align_errorf("cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
        goto fail;
    }
    /* A DEALER's send blocks while it has no peer to queue to (the server
     * not up yet, or CURVE refused this client and the connection was
     * dropped), and a blocking send has no timeout of its own: every send is
     * bounded by the call's deadline (ZMQ_SNDTIMEO, set per call), and with
     * ZMQ_IMMEDIATE a request is queued only to a connection whose handshake
     * completed, so one that cannot be delivered fails instead of waiting in
     * a queue nobody reads. Nothing lingers on close. */
    int linger = 0, one = 1;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    if (curve && curve->server_public && curve_client_apply_key(c->sock, curve->server_public, curve->secret_file))
        goto fail;
    if (zmq_connect(c->sock, endpoint)) {
        align_errorf("cannot connect to %s: %s", endpoint, zmq_strerror(errno));
        goto fail;
    }
    return c;
fail:
    rm_client_close(c);
    return NULL;
}

void rm_client_close(RmClient *c) {
    if (!c) return;
    if (c->sock) zmq_close(c->sock);
    if (c->own_ctx && c->ctx) zmq_ctx_term(c->ctx);
    free(c);
}

int rm_client_call(RmClient *c, WireWriter *req, WireMsg **reply) {
    *reply = NULL;
    uint64_t id = ++c->next_id;
    void *data;
    size_t len;
    if (!req) return -1;
    wire_put_uint(req, "id", id);
    if (wire_finish(req, &data, &len)) return -1;
    double deadline = align_now() + c->timeout_ms / 1000.0;
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
    int rc = wire_send(c->sock, NULL, data, len, 0);
    int send_errno = errno;
    free(data);
    if (rc && send_errno == EAGAIN)
        return align_errorf("no reply from %s: the request could not be sent within %d ms (server down, or it refused "
                            "this client's CURVE key)", c->endpoint, c->timeout_ms);
    if (rc) return -1;
    for (;;) {
        double left = deadline - align_now();
        if (left <= 0) return align_errorf("no reply from %s within %d ms", c->endpoint, c->timeout_ms);
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, (long)(left * 1000) + 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) continue;
        WireFrames f;
        if (wire_recv(c->sock, &f, (size_t)1 << 30, ZMQ_DONTWAIT)) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return -1;
        }
        WireMsg *m = f.body ? wire_parse(f.body, f.body_len, &(WireLimits){.max_bytes = (size_t)1 << 30}) : NULL;
        wire_frames_free(&f);
        if (!m) return align_error_prefix("reply from %s", c->endpoint);
        uint64_t got;
        if (!wire_has(m, "id") || wire_get_uint(m, "id", &got) || got != id) {
            /* a stale reply (an earlier request timed out), or an error about
             * a message the server could not even parse: only the latter is ours */
            if (!strcmp(wire_op(m), "error") && !wire_has(m, "id")) {
                const char *msg = "", *code = "";
                size_t ml = 0, cl = 0;
                wire_get_str(m, "message", &msg, &ml);
                wire_get_str(m, "code", &code, &cl);
                align_errorf("reward_server: %.*s: %.*s", (int)cl, code, (int)ml, msg);
                wire_msg_free(m);
                return -1;
            }
            wire_msg_free(m);
            continue;
        }
        if (!strcmp(wire_op(m), "error")) {
            const char *msg = "", *code = "";
            size_t ml = 0, cl = 0;
            wire_get_str(m, "message", &msg, &ml);
            wire_get_str(m, "code", &code, &cl);
            align_errorf("reward_server: %.*s: %.*s", (int)cl, code, (int)ml, msg);
            wire_msg_free(m);
            return -1;
        }
        *reply = m;
        return 0;
    }
}

static int read_scores(WireMsg *m, int n, float *scores) {
    WireArray a;
    int rc = wire_get_array(m, "scores", WIRE_F32, NULL, &a);
    if (!rc && (a.ndim != 1 || (int)a.numel != n)) {
        rc = align_errorf("reply has %zu scores for %d sequences", a.numel, n);
    }
    if (!rc) memcpy(scores, a.data, n * sizeof(float));
    free(a.data);
    wire_msg_free(m);
    return rc;
}

int rm_client_score_seqs(RmClient *c, const DsSeq *seqs, int n, float *scores) {
    size_t np = 0, nr = 0;
    for (int i = 0; i < n; i++) np += seqs[i].n_prompt, nr += seqs[i].n_completion;
    int32_t *p = malloc((np + 1) * sizeof(int32_t)), *r = malloc((nr + 1) * sizeof(int32_t));
    int64_t *po = malloc((n + 1) * sizeof(int64_t)), *ro = malloc((n + 1) * sizeof(int64_t));
    int rc = -1;
    if (!p || !r || !po || !ro) {
        align_errorf("out of memory");
        goto done;
    }
    po[0] = ro[0] = 0;
    for (int i = 0; i < n; i++) {
        if (seqs[i].n_prompt) memcpy(p + po[i], seqs[i].prompt, seqs[i].n_prompt * sizeof(int32_t));
        if (seqs[i].n_completion) memcpy(r + ro[i], seqs[i].completion, seqs[i].n_completion * sizeof(int32_t));
        po[i + 1] = po[i] + seqs[i].n_prompt;
        ro[i + 1] = ro[i] + seqs[i].n_completion;
    }
    WireWriter *w = wire_writer_new("score");
    if (w) {
        wire_put_vec(w, "prompt_tokens", WIRE_I32, p, np);
        wire_put_vec(w, "prompt_offsets", WIRE_I64, po, n + 1);
        wire_put_vec(w, "tokens", WIRE_I32, r, nr);
        wire_put_vec(w, "offsets", WIRE_I64, ro, n + 1);
    }
    WireMsg *m;
    if (rm_client_call(c, w, &m) == 0) rc = read_scores(m, n, scores);
done:
    free(p), free(r), free(po), free(ro);
    return rc;
}

int rm_client_tokenizer(RmClient *c, char **tokenizer_json, char **chat_template) {
    *tokenizer_json = *chat_template = NULL;
    WireMsg *m;
    if (rm_client_call(c, wire_writer_new("tokenizer"), &m)) return -1;
    const char *s;
    size_t len;
    if (wire_has(m, "tokenizer_json") && !wire_get_str(m, "tokenizer_json", &s, &len)) {
        *tokenizer_json = malloc(len + 1);
        if (*tokenizer_json) memcpy(*tokenizer_json, s, len), (*tokenizer_json)[len] = 0;
    }
    if (wire_has(m, "chat_template") && !wire_get_str(m, "chat_template", &s, &len)) {
        *chat_template = malloc(len + 1);
        if (*chat_template) memcpy(*chat_template, s, len), (*chat_template)[len] = 0;
    }
    wire_msg_free(m);
    return 0;
}
