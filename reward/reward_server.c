/* reward_server: a reward model as a ZeroMQ service (docs/PROTOCOL.md).
 *
 *   reward_server --model rm.ckpt [--bind EP] [--http PORT]
 *
 * One thread owns the model. It reads requests from a ROUTER socket (any
 * number of DEALER/REQ clients) and, with --http, from an in-process ROUTER
 * fed by the HTTP threads; "score" requests wait in a queue and are run
 * together: dynamic batching. A batch closes when the queued tokens reach
 * --max-batch-tokens or the oldest request has waited --batch-wait-ms, so
 * one client alone pays at most that wait, and many clients share each
 * forward. A request of more tokens than one batch is "long": it is scored
 * alone, one forward of at most --max-batch-tokens at a time, and the short
 * batches waiting meanwhile take turns with its forwards, so one long
 * request delays the others by one forward, not by its whole duration
 * (docs/DECISIONS.md). A sequence longer than the model's positions (or
 * --max-length) is refused with error too_long, never run. Every request
 * gets exactly one reply, on the envelope it came with, in its own order (a
 * request's scores are in its sequences' order).
 *
 * Robustness: a message that does not parse, is over --max-message-mb,
 * names an unknown op or a wrong version, or carries bad tokens gets an
 * "error" reply and the server goes on. ZMQ_ROUTER_MANDATORY makes a reply
 * to a vanished client an error we count instead of a silent drop, and
 * replies never block (a client that stops reading loses its replies, not
 * everyone else's). SIGTERM/SIGINT: what waits at the sockets is taken,
 * and what arrives within --drain-quiet-ms more (sent before the signal);
 * from then on new score requests get error shutting_down at once, what was
 * taken is answered, and whatever is still queued when --drain-max-ms has
 * passed gets shutting_down too; exit 0 (docs/DECISIONS.md).
 *
 * Security: endpoints default to loopback; binding another interface is the
 * user's explicit choice (--bind tcp://0.0.0.0:...) and without CURVE the
 * server says so. --curve-secret-file turns on CurveZMQ (encryption and
 * server authentication); --curve-allow FILE then admits only the listed
 * client public keys, checked by a ZAP handler thread. HTTP has no
 * authentication and binds 127.0.0.1 unless --http-bind says otherwise; it
 * bounds what clients can hold (connections in all and per address, an
 * idle timeout), answers 413 to a body announced over the limit before
 * reading it, 400 to a first line that is not HTTP and 408 to a request
 * unfinished at the idle timeout (http_gate.h), and refuses NUL and bytes
 * that are not UTF-8 in texts as the ZeroMQ path does. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "cli.h"
#include "curve.h"
#include "http_gate.h"
#include "model_load.h"
#include "rm_model.h"
#include "rm_proto.h"
#include "util.h"
#include "wire.h"

#define HTTP_INPROC "inproc://align-reward-http"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

typedef struct {
    WireFrames env; /* body freed once decoded */
    int sock;       /* 0: the public socket, 1: the HTTP bridge */
    RmRequest req;
    double t_arrival;
    int next_seq;   /* a long request: sequences scored so far */
    float *scores;  /* a long request: their scores */
} Pending;

typedef struct {
    Pending *v;
    int len, cap;
    long tokens;
} PendingQueue;

typedef struct {
    Model *model;
    Tokenizer *tok;
    ChatTemplate tmpl;
    const char *chat_template_name;
    char *tokenizer_json;
    RmProtoLimits lim;
    size_t max_message_bytes;
    int max_message_mb; /* the flag that set it, named in too_large replies */
    long max_batch_tokens;
    double batch_wait_s;
    int normalize;
    double reward_mean, reward_std;
    int have_stats;
    void *sock[2];
    int n_socks;
    /* score requests: those of at most max_batch_tokens are batched
     * together; longer ones are scored alone, one forward at a time, taking
     * turns with the short batches (long_turn: the next turn is theirs) */
    PendingQueue shortq, longq;
    int long_turn;
    /* shutting down: stopping once the signal is seen, refusing once new
     * score requests are no longer taken */
    int stopping, refusing;
    double last_forward_s; /* the last forward's duration: none is started that would end past the drain limit */
    /* counters */
    long served, errors, dropped_replies, batches, batch_seqs, refused;
    int verbose;
} Server;

/* ------------------------------------------------------------ replies */

static void send_reply(Server *s, const WireFrames *env, int sock, void *data, size_t len) {
    if (!data) return;
    if (wire_send(s->sock[sock], env, data, len, ZMQ_DONTWAIT)) {
        /* EHOSTUNREACH (ROUTER_MANDATORY): the client is gone; EAGAIN: it stopped reading */
        s->dropped_replies++;
        if (s->verbose) fprintf(stderr, "reward_server: reply dropped: %s\n", align_error());
    }
    free(data);
}

static void send_error(Server *s, const WireFrames *env, int sock, const char *code, const char *msg, int has_id,
                       uint64_t id) {
    void *data;
    size_t len;
    s->errors++;
    if (s->verbose) fprintf(stderr, "reward_server: error reply (%s): %s\n", code, msg);
    if (!wire_error_message(code, msg, has_id, id, &data, &len)) send_reply(s, env, sock, data, len);
}

static void send_info(Server *s, const WireFrames *env, int sock, int has_id, uint64_t id) {
    const ModelConfig *c = &s->model->cfg;
    WireWriter *w = wire_writer_new("info");
    if (!w) return;
    if (has_id) wire_put_uint(w, "id", id);
    wire_put_str(w, "service", "reward");
    wire_put_str(w, "arch", c->arch == ARCH_GPT2 ? "gpt2" : "llama");
    wire_put_int(w, "dim", c->dim);
    wire_put_int(w, "n_layers", c->n_layers);
    wire_put_int(w, "vocab_size", c->vocab_size);
    wire_put_int(w, "max_seq_len", s->lim.max_seq_len);
    wire_put_str(w, "chat_template", s->chat_template_name);
    wire_put_bool(w, "has_tokenizer", s->tok != NULL);
    if (s->have_stats) {
        wire_put_float(w, "reward_mean", s->reward_mean);
        wire_put_float(w, "reward_std", s->reward_std);
    }
    wire_put_bool(w, "normalized", s->normalize);
    wire_put_bool(w, "stopping", s->stopping);
    wire_put_int(w, "max_batch_tokens", s->max_batch_tokens);
    wire_put_int(w, "max_request_tokens", s->lim.max_tokens);
    wire_put_int(w, "max_request_seqs", s->lim.max_seqs);
    wire_put_int(w, "max_message_bytes", (int64_t)s->max_message_bytes);
    wire_put_float(w, "batch_wait_ms", s->batch_wait_s * 1000);
    wire_put_int(w, "queued", s->shortq.len + s->longq.len);
    wire_put_int(w, "served", s->served);
    wire_put_int(w, "errors", s->errors);
    wire_put_int(w, "dropped_replies", s->dropped_replies);
    wire_put_int(w, "batches", s->batches);
    void *data;
    size_t len;
    if (!wire_finish(w, &data, &len)) send_reply(s, env, sock, data, len);
}

static void send_tokenizer(Server *s, const WireFrames *env, int sock, int has_id, uint64_t id) {
    WireWriter *w = wire_writer_new("tokenizer");
    if (!w) return;
    if (has_id) wire_put_uint(w, "id", id);
    if (s->tokenizer_json) wire_put_str(w, "tokenizer_json", s->tokenizer_json);
    else wire_put_nil(w, "tokenizer_json");
    wire_put_str(w, "chat_template", s->chat_template_name);
    void *data;
    size_t len;
    if (!wire_finish(w, &data, &len)) send_reply(s, env, sock, data, len);
}

/* ------------------------------------------------------------ batching */

static DsSeq request_seq(const RmRequest *r, int j) {
    DsSeq q = {0}; /* fields not set here (the loss mask) stay zero */
    q.prompt = r->poff ? r->prompt + r->poff[j] : NULL;
    q.n_prompt = r->poff ? (int)(r->poff[j + 1] - r->poff[j]) : 0;
    q.completion = r->resp + r->roff[j];
    q.n_completion = (int)(r->roff[j + 1] - r->roff[j]);
    return q;
}

static void normalize_scores(const Server *s, float *scores, int n) {
    if (!s->normalize || !s->have_stats) return;
    for (int i = 0; i < n; i++) scores[i] = (float)((scores[i] - s->reward_mean) / (s->reward_std > 0 ? s->reward_std : 1));
}

static int queue_push(PendingQueue *q, const Pending *p) {
    if (q->len == q->cap) {
        int cap = q->cap * 2 + 16;
        Pending *v = realloc(q->v, (size_t)cap * sizeof(Pending));
        if (!v) return align_errorf("out of memory");
        q->v = v, q->cap = cap;
    }
    q->v[q->len++] = *p;
    q->tokens += p->req.n_tokens;
    return 0;
}

/* Answer the first k requests of q (scores: theirs, concatenated; NULL: the
 * error err_code, "internal" when NULL, with align_error()'s sentence) and
 * drop them. */
static void queue_answer(Server *s, PendingQueue *q, int k, const float *scores, const char *err_code) {
    for (int i = 0, at = 0; i < k; i++) {
        Pending *p = &q->v[i];
        if (!scores) {
            send_error(s, &p->env, p->sock, err_code ? err_code : "internal", align_error(), p->req.has_id, p->req.id);
        } else {
            void *data;
            size_t len;
            if (!rm_reply_scores(p->req.has_id, p->req.id, scores + at, p->req.n_seqs, &data, &len)) {
                send_reply(s, &p->env, p->sock, data, len);
                s->served++;
            }
        }
        at += p->req.n_seqs;
        q->tokens -= p->req.n_tokens;
        rm_request_free(&p->req);
        wire_frames_free(&p->env);
        free(p->scores);
    }
    memmove(q->v, q->v + k, (size_t)(q->len - k) * sizeof(Pending));
    q->len -= k;
}

/* Run the short queue's first requests (at least one, up to
 * max_batch_tokens) through the model and answer them. */
static int run_batch(Server *s) {
    PendingQueue *q = &s->shortq;
    int k = 0;
    long tokens = 0;
    int n_seqs = 0;
    while (k < q->len && (k == 0 || tokens + q->v[k].req.n_tokens <= s->max_batch_tokens)) {
        tokens += q->v[k].req.n_tokens;
        n_seqs += q->v[k].req.n_seqs;
        k++;
    }
    DsSeq *seqs = malloc((size_t)(n_seqs + 1) * sizeof(DsSeq));
    float *scores = malloc((size_t)(n_seqs + 1) * sizeof(float));
    int rc = 0;
    if (!seqs || !scores) rc = align_errorf("out of memory");
    for (int i = 0, at = 0; !rc && i < k; i++)
        for (int j = 0; j < q->v[i].req.n_seqs; j++) seqs[at++] = request_seq(&q->v[i].req, j);
    double t0 = align_now();
    if (!rc && n_seqs > 0) rc = rm_score_seqs(s->model, seqs, n_seqs, (int)s->max_batch_tokens, scores);
    s->last_forward_s = align_now() - t0;
    /* the HTTP bridge gets raw scores and normalises them itself: it answers
     * both (OpenRLHF's "rewards" and "scores") */
    for (int i = 0, at = 0; !rc && i < k; at += q->v[i].req.n_seqs, i++)
        if (q->v[i].sock != 1) normalize_scores(s, scores + at, q->v[i].req.n_seqs);
    s->batches++;
    s->batch_seqs += n_seqs;
    queue_answer(s, q, k, rc ? NULL : scores, NULL);
    free(seqs), free(scores);
    return rc;
}

/* One forward of the oldest long request: its next sequences, up to
 * max_batch_tokens (at least one, so a sequence longer than that goes
 * alone); the request is answered with its last forward. */
static int run_long_piece(Server *s) {
    Pending *p = &s->longq.v[0];
    const RmRequest *r = &p->req;
    int first = p->next_seq, k = 0;
    long tokens = 0;
    while (first + k < r->n_seqs && (k == 0 || tokens + rm_request_len(r, first + k) <= s->max_batch_tokens)) {
        tokens += rm_request_len(r, first + k);
        k++;
    }
    DsSeq *seqs = malloc((size_t)k * sizeof(DsSeq));
    int rc = seqs ? 0 : align_errorf("out of memory");
    for (int j = 0; !rc && j < k; j++) seqs[j] = request_seq(r, first + j);
    double t0 = align_now();
    if (!rc) rc = rm_score_seqs(s->model, seqs, k, (int)s->max_batch_tokens, p->scores + first);
    s->last_forward_s = align_now() - t0;
    free(seqs);
    s->batches++;
    s->batch_seqs += k;
    p->next_seq += k;
    if (!rc && p->next_seq < r->n_seqs) return 0;
    if (!rc && p->sock != 1) normalize_scores(s, p->scores, r->n_seqs); /* HTTP: raw, as run_batch */
    queue_answer(s, &s->longq, 1, rc ? NULL : p->scores, NULL);
    return rc;
}

/* One received message: answer it now, or queue it. */
static void handle(Server *s, int sock, WireFrames *f) {
    if (f->bad_envelope) { /* more routing frames than any client sends: nowhere sane to reply */
        s->errors++;
        wire_frames_free(f);
        return;
    }
    if (f->oversized) {
        char msg[160];
        snprintf(msg, sizeof msg, "message of %zu bytes is over the limit of %zu bytes (--max-message-mb %d)",
                 f->body_len, s->max_message_bytes, s->max_message_mb);
        send_error(s, f, sock, "too_large", msg, 0, 0);
        wire_frames_free(f);
        return;
    }
    WireMsg *m = wire_parse(f->body, f->body_len, &s->lim.wire);
    if (!m) {
        send_error(s, f, sock, "bad_request", align_error(), 0, 0);
        wire_frames_free(f);
        return;
    }
    uint64_t id = 0;
    int has_id = rm_proto_get_id(m, &id), k = 0;
    const char *op = wire_op(m);
    /* frames a body announces must be there: the first routing frame is the
     * peer's identity, the rest of the envelope can hold them */
    if (wire_get_attachments(m, f->n_env - 1, &k)) {
        send_error(s, f, sock, "bad_request", align_error(), has_id, id);
        wire_msg_free(m);
        wire_frames_free(f);
        return;
    }
    /* no reward op reads attachments: they are not sent back with the reply */
    while (k-- > 0) free(f->env[--f->n_env]);
    if (wire_version(m) != WIRE_VERSION) {
        char msg[128];
        snprintf(msg, sizeof msg, "protocol version %lld is not served (this server speaks version %d)",
                 (long long)wire_version(m), WIRE_VERSION);
        send_error(s, f, sock, "version", msg, has_id, id);
    } else if (!strcmp(op, "info") || !strcmp(op, "ping")) {
        send_info(s, f, sock, has_id, id);
    } else if (!strcmp(op, "tokenizer")) {
        send_tokenizer(s, f, sock, has_id, id);
    } else if (!strcmp(op, "score") && s->refusing) {
        s->refused++;
        send_error(s, f, sock, "shutting_down", "the server is shutting down and takes no new requests; send it elsewhere or retry later",
                   has_id, id);
    } else if (!strcmp(op, "score")) {
        Pending p;
        memset(&p, 0, sizeof p);
        const char *code;
        if (rm_request_decode(m, s->tok, s->tmpl, &s->lim, &p.req, &code)) {
            send_error(s, f, sock, code, align_error(), p.req.has_id, p.req.id);
        } else {
            int is_long = p.req.n_tokens > s->max_batch_tokens;
            p.env = *f; /* the envelope moves into the queue */
            p.env.body = NULL;
            p.sock = sock;
            p.t_arrival = align_now();
            if ((is_long && !(p.scores = malloc((size_t)p.req.n_seqs * sizeof(float)))) ||
                queue_push(is_long ? &s->longq : &s->shortq, &p)) {
                send_error(s, f, sock, "internal", "out of memory", p.req.has_id, p.req.id);
                rm_request_free(&p.req);
                free(p.scores);
            } else {
                free(f->body);
                memset(f, 0, sizeof *f);
            }
        }
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "unknown op \"%.64s\" (this service serves score, info, ping, tokenizer)", op);
        send_error(s, f, sock, "unknown_op", msg, has_id, id);
    }
    wire_msg_free(m);
    wire_frames_free(f);
}

/* Read everything waiting on the sockets (at most budget messages, until
 * the time until when not 0, so a flood cannot keep the model idle
 * forever). Returns messages read. */
static int drain_sockets(Server *s, int budget, double until) {
    int got = 0, progress = 1;
    while (progress && got < budget && (!until || align_now() < until)) {
        progress = 0;
        for (int i = 0; i < s->n_socks && got < budget; i++) {
            WireFrames f;
            if (wire_recv(s->sock[i], &f, s->max_message_bytes, ZMQ_DONTWAIT)) continue;
            handle(s, i, &f);
            got++, progress = 1;
        }
    }
    return got;
}

/* Shutting down: every request still queued gets shutting_down, and so
 * does every one already waiting at the sockets (up to a bound), so their
 * clients hear it now instead of at their timeout. */
static void refuse_rest(Server *s, double drain_max_s) {
    int n = s->shortq.len + s->longq.len;
    if (n) {
        align_errorf("the server is shutting down and could not score this request within --drain-max-ms %g", drain_max_s * 1000);
        s->refused += n;
        queue_answer(s, &s->shortq, s->shortq.len, NULL, "shutting_down");
        queue_answer(s, &s->longq, s->longq.len, NULL, "shutting_down");
    }
    s->refusing = 1;
    drain_sockets(s, 4096, 0);
}

/* 1 when a forward started now would end past the drain limit (its length
 * guessed from the last one's). */
static int past_drain_limit(const Server *s, double stop_at, double drain_max_s) {
    return stop_at && align_now() + s->last_forward_s > stop_at + drain_max_s;
}

/* The model thread's loop. After SIGTERM/SIGINT (stop_at) the first read
 * takes everything waiting at the sockets, however much (it was sent
 * before the signal, even if a forward kept the server from reading it),
 * and requests arriving within drain_quiet_s after that read are taken
 * too (in transit when the signal came). Then new score requests are
 * refused as they come (shutting_down), what was taken is answered, and
 * by drain_max_s after the signal the rest is refused and the loop
 * returns. Reading goes on while draining, so a refused client hears so at
 * once instead of at its timeout, and the queue cannot refill: a flood of
 * new requests no longer holds the server (it kept serving one for 195 s). */
static int serve(Server *s, double drain_quiet_s, double drain_max_s) {
    zmq_pollitem_t items[2];
    for (int i = 0; i < s->n_socks; i++) items[i] = (zmq_pollitem_t){s->sock[i], 0, ZMQ_POLLIN, 0};
    double stop_at = 0, take_until = 0;
    for (;;) {
        double now = align_now();
        if (stop_requested && !stop_at) {
            stop_at = now;
            s->stopping = 1;
            fprintf(stderr, "reward_server: stopping: answering what is in flight (at most %g ms)\n", drain_max_s * 1000);
            drain_sockets(s, 1 << 30, now + drain_quiet_s); /* until the sockets are empty */
            take_until = align_now() + drain_quiet_s;
            if (take_until > stop_at + drain_max_s) take_until = stop_at + drain_max_s;
            now = align_now();
        }
        if (stop_at && !s->refusing && now >= take_until) {
            s->refusing = 1;
            if (s->verbose)
                fprintf(stderr, "reward_server: stopping: %d requests taken; new ones get shutting_down\n",
                        s->shortq.len + s->longq.len);
        }
        int queued = s->shortq.len + s->longq.len;
        if (stop_at && s->refusing && !queued) {
            drain_sockets(s, 4096, 0); /* what came meanwhile: refused, not left unanswered */
            return 0;
        }
        if (queued && past_drain_limit(s, stop_at, drain_max_s)) {
            refuse_rest(s, drain_max_s);
            return 0;
        }
        long timeout_ms = 200;
        if (s->longq.len) {
            timeout_ms = 0;
        } else if (s->shortq.len) {
            double left = s->shortq.v[0].t_arrival + s->batch_wait_s - now;
            timeout_ms = left > 0 ? (long)(left * 1000) + 1 : 0;
        }
        if (stop_at) /* no batch waits for company; idle, wake when taking ends */
            timeout_ms = queued || now >= take_until ? 0 : (long)((take_until - now) * 1000) + 1;
        int n = zmq_poll(items, s->n_socks, timeout_ms);
        if (n < 0 && errno != EINTR) return align_errorf("poll: %s", zmq_strerror(errno));
        if (n > 0) drain_sockets(s, 256, 0);
        if ((s->shortq.len || s->longq.len) && past_drain_limit(s, stop_at, drain_max_s)) {
            refuse_rest(s, drain_max_s);
            return 0;
        }
        now = align_now();
        /* One forward per turn, the sockets read between turns. While short
         * batches and a long request both wait they alternate, so a short
         * request waits for at most one forward of a long one, and a stream
         * of short requests cannot starve a long one. */
        int short_ready = s->shortq.len && (stop_at || s->shortq.tokens >= s->max_batch_tokens ||
                                            now - s->shortq.v[0].t_arrival >= s->batch_wait_s);
        if (short_ready && !(s->longq.len && s->long_turn)) {
            if (run_batch(s)) fprintf(stderr, "reward_server: batch failed: %s\n", align_error());
            s->long_turn = 1;
        } else if (s->longq.len) {
            if (run_long_piece(s)) fprintf(stderr, "reward_server: long request failed: %s\n", align_error());
            s->long_turn = 0;
        }
    }
}

/* ------------------------------------------------------------ HTTP /get_reward */

typedef struct {
    void *ctx;
    const Server *s; /* --normalize and its statistics, fixed before the HTTP threads start */
    size_t max_body;
    int timeout_ms;
    int idle_s; /* --http-idle-timeout */
    volatile int stopping;
} Http;

typedef struct {
    char *buf;
    size_t len, cap;
    int too_big;
    const char *announced; /* Content-Length as sent, or NULL */
} HttpBody;

/* libmicrohttpd 0.9.75 closes a connection whose body stops short of its
 * Content-Length at the idle timeout without a word, so the client cannot
 * tell its own short body from a network fault: http_completed writes the
 * 408 itself when no response was queued (MHD calls it before it shuts the
 * socket). HttpConn is the per-connection state that tells. */
typedef struct {
    int responded; /* a response is queued for the current request */
} HttpConn;

static HttpConn *http_conn(struct MHD_Connection *con) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static int http_fd(struct MHD_Connection *con) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* A whole response written to the socket directly (MHD has given up on
 * the connection), never blocking: a peer that does not read loses it. */
static void http_write_error(int fd, unsigned status, const char *reason, const char *msg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    char *body = cJSON_PrintUnformatted(o), resp[1024];
    cJSON_Delete(o);
    if (!body) return;
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason, strlen(body), body);
    free(body);
    if (n > 0 && (size_t)n < sizeof resp && send(fd, resp, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        /* the peer has gone or stopped reading: nothing more to do */
    }
}

static void http_connection(void *cls, struct MHD_Connection *con, void **socket_context,
                            enum MHD_ConnectionNotificationCode code) {
    (void)cls, (void)con;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = calloc(1, sizeof(HttpConn));
    } else {
        free(*socket_context);
        *socket_context = NULL;
    }
}

static enum MHD_Result http_respond(struct MHD_Connection *con, unsigned status, cJSON *o) {
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return MHD_NO;
    HttpConn *c = http_conn(con);
    if (c) c->responded = 1;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(con, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result http_error(struct MHD_Connection *con, unsigned status, const char *msg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    return http_respond(con, status, o);
}

/* Score texts through the model thread (the in-process ROUTER). On failure
 * err holds the sentence and code the error's code ("timeout", "stopping",
 * or the service's code: "too_long", "bad_request", ...). */
static int http_score(Http *h, const char *const *texts, int n, float *scores, char *err, size_t errn, char *code,
                      size_t coden) {
    void *sock = zmq_socket(h->ctx, ZMQ_DEALER), *data = NULL;
    int linger = 0, rc = -1;
    size_t len;
    snprintf(code, coden, "internal");
    if (!sock) {
        snprintf(err, errn, "internal: %s", zmq_strerror(errno));
        return -1;
    }
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &h->timeout_ms, sizeof h->timeout_ms);
    if (zmq_connect(sock, HTTP_INPROC)) {
        snprintf(err, errn, "internal: %s", zmq_strerror(errno));
        goto done;
    }
    WireWriter *w = wire_writer_new("score");
    wire_put_str_array(w, "texts", texts, NULL, n);
    if (wire_finish(w, &data, &len) || wire_send(sock, NULL, data, len, 0)) {
        snprintf(err, errn, "%s", align_error());
        goto done;
    }
    double deadline = align_now() + h->timeout_ms / 1000.0;
    snprintf(err, errn, "timed out");
    snprintf(code, coden, "timeout");
    while (align_now() < deadline && !h->stopping) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        WireFrames f;
        if (wire_recv(sock, &f, (size_t)1 << 30, ZMQ_DONTWAIT)) continue;
        WireMsg *m = f.body ? wire_parse(f.body, f.body_len, &(WireLimits){.max_bytes = (size_t)1 << 30}) : NULL;
        wire_frames_free(&f);
        snprintf(code, coden, "internal");
        if (!m) {
            snprintf(err, errn, "internal: bad reply");
        } else if (!strcmp(wire_op(m), "error")) {
            const char *msg = "", *c = "";
            size_t ml = 0, cl = 0;
            wire_get_str(m, "message", &msg, &ml);
            wire_get_str(m, "code", &c, &cl);
            snprintf(err, errn, "%.*s", (int)ml, msg);
            snprintf(code, coden, "%.*s", (int)cl, c);
        } else {
            WireArray a;
            if (!wire_get_array(m, "scores", WIRE_F32, NULL, &a) && (int)a.numel == n) {
                memcpy(scores, a.data, n * sizeof(float));
                rc = 0;
            }
            free(a.data);
        }
        wire_msg_free(m);
        break;
    }
    if (h->stopping && rc) {
        snprintf(err, errn, "the server is shutting down");
        snprintf(code, coden, "stopping");
    }
done:
    free(data);
    zmq_close(sock);
    return rc;
}

/* 1 when a string of the JSON text holds a NUL (the escape \u0000, or a raw
 * NUL byte): cJSON would keep the string only up to it, and a text scored
 * in part is a wrong score, not an error. The ZeroMQ path refuses NUL in
 * texts too. */
static int json_has_nul(const char *p, size_t n) {
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (!p[i]) return 1;
        if (!in_str) {
            in_str = p[i] == '"';
        } else if (p[i] == '"') {
            in_str = 0;
        } else if (p[i] == '\\' && i + 1 < n) {
            if (p[i + 1] == 'u' && i + 5 < n && !memcmp(p + i + 2, "0000", 4)) return 1;
            i++; /* the escaped character */
        }
    }
    return 0;
}

static enum MHD_Result http_handler(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                                    const char *version, const char *upload, size_t *upload_size, void **state) {
    Http *h = cls;
    (void)version;
    HttpBody *b = *state;
    if (!b) { /* first call: headers only */
        if (!(b = calloc(1, sizeof *b))) return MHD_NO;
        *state = b;
        HttpConn *c = http_conn(con);
        if (c) c->responded = 0;
        /* a body announced over the limit is refused before it is read, so
         * the client gets its answer instead of waiting on a body nobody takes */
        const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        b->announced = cl;
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno == ERANGE || v > h->max_body) {
                char msg[160];
                snprintf(msg, sizeof msg, "request body of %s bytes is over the limit of %zu (--max-message-mb)", cl, h->max_body);
                b->too_big = 1;
                return http_error(con, MHD_HTTP_CONTENT_TOO_LARGE, msg);
            }
        }
        return MHD_YES;
    }
    if (b->too_big && *upload_size) { /* answered already: the rest of the body is dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (b->len + *upload_size > h->max_body) b->too_big = 1;
        else {
            if (b->len + *upload_size + 1 > b->cap) {
                size_t cap = (b->len + *upload_size + 1) * 2;
                char *p = realloc(b->buf, cap);
                if (!p) return MHD_NO;
                b->buf = p, b->cap = cap;
            }
            memcpy(b->buf + b->len, upload, *upload_size);
            b->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/get_reward")) return http_error(con, MHD_HTTP_NOT_FOUND, "not found: POST /get_reward");
    if (strcmp(method, "POST")) return http_error(con, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST /get_reward");
    if (b->too_big) return http_error(con, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
    if (b->buf && json_has_nul(b->buf, b->len))
        return http_error(con, MHD_HTTP_BAD_REQUEST, "a string in the body contains NUL (\\u0000)");
    cJSON *o = b->buf ? cJSON_ParseWithLength(b->buf, b->len) : NULL;
    cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "query");
    int n = cJSON_IsArray(q) ? cJSON_GetArraySize(q) : -1;
    if (n < 0) {
        cJSON_Delete(o);
        return http_error(con, MHD_HTTP_BAD_REQUEST, "expected {\"query\": [texts]}");
    }
    const char **texts = malloc((n + 1) * sizeof(char *));
    float *scores = malloc((n + 1) * sizeof(float));
    if (!texts || !scores) {
        free(texts), free(scores);
        cJSON_Delete(o);
        return http_error(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    }
    int i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, q) {
        if (!cJSON_IsString(it)) break;
        texts[i++] = it->valuestring;
    }
    enum MHD_Result rc;
    char err[512], code[32];
    /* cJSON passes bytes that are not UTF-8 through; the model thread would
     * refuse them too, but naming "texts", a field this client never sent */
    long bad_at = -1;
    int bad = 0;
    for (; i == n && bad < n; bad++)
        if ((bad_at = rm_proto_utf8_invalid(texts[bad], strlen(texts[bad]))) >= 0) break;
    if (i != n) rc = http_error(con, MHD_HTTP_BAD_REQUEST, "every element of \"query\" must be a string");
    else if (bad_at >= 0) {
        snprintf(err, sizeof err, "\"query\": string %d is not valid UTF-8 (byte 0x%02x at offset %ld)", bad,
                 (unsigned char)texts[bad][bad_at], bad_at);
        rc = http_error(con, MHD_HTTP_BAD_REQUEST, err);
    } else if (n == 0) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddArrayToObject(r, "rewards");
        cJSON_AddArrayToObject(r, "scores");
        cJSON_AddObjectToObject(r, "extra_logs");
        rc = http_respond(con, MHD_HTTP_OK, r);
    } else if (http_score(h, texts, n, scores, err, sizeof err, code, sizeof code)) {
        unsigned status = !strcmp(code, "stopping") || !strcmp(code, "shutting_down") ? MHD_HTTP_SERVICE_UNAVAILABLE
                        : !strcmp(code, "timeout")                                 ? MHD_HTTP_GATEWAY_TIMEOUT
                        : !strcmp(code, "too_long") || !strcmp(code, "too_large") ? MHD_HTTP_CONTENT_TOO_LARGE
                        : !strcmp(code, "internal")                                ? MHD_HTTP_INTERNAL_SERVER_ERROR
                                                                                   : MHD_HTTP_BAD_REQUEST;
        rc = http_error(con, status, err);
    } else {
        /* OpenRLHF's reply: "rewards" (what the trainer optimises: normalised
         * under --normalize, as the ZeroMQ path answers), "scores" (the
         * model's raw scores) and "extra_logs" (per-item lists its trainers
         * log as means) */
        cJSON *r = cJSON_CreateObject();
        cJSON *rew = cJSON_AddArrayToObject(r, "rewards"), *sc = cJSON_AddArrayToObject(r, "scores");
        cJSON *raw = cJSON_AddArrayToObject(cJSON_AddObjectToObject(r, "extra_logs"), "raw_score");
        for (int k = 0; k < n; k++) {
            cJSON_AddItemToArray(sc, cJSON_CreateNumber(scores[k]));
            cJSON_AddItemToArray(raw, cJSON_CreateNumber(scores[k]));
        }
        normalize_scores(h->s, scores, n);
        for (int k = 0; k < n; k++) cJSON_AddItemToArray(rew, cJSON_CreateNumber(scores[k]));
        rc = http_respond(con, MHD_HTTP_OK, r);
    }
    free(texts), free(scores);
    cJSON_Delete(o);
    return rc;
}

static void http_completed(void *cls, struct MHD_Connection *con, void **state, enum MHD_RequestTerminationCode t) {
    Http *h = cls;
    HttpBody *b = *state;
    HttpConn *c = http_conn(con);
    int fd = http_fd(con);
    if (t == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && c && !c->responded && !h->stopping && fd >= 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "the request body did not arrive within --http-idle-timeout %d s (%zu of %s bytes)",
                 h->idle_s, b ? b->len : 0, b && b->announced ? b->announced : "the announced");
        http_write_error(fd, 408, "Request Timeout", msg);
    }
    if (c) c->responded = 0;
    if (b) free(b->buf), free(b);
    *state = NULL;
}

static void http_gate_accept(void *cls, int fd, const struct sockaddr *addr, socklen_t addr_len) {
    MHD_add_connection(cls, fd, addr, addr_len); /* closes fd when it cannot take it (its limits) */
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    const char *model_path = NULL, *bind_ep = "tcp://127.0.0.1:5555", *device = "cpu", *chat_template = NULL;
    const char *curve_secret = NULL, *curve_allow = NULL, *keygen = NULL, *http_bind = "127.0.0.1";
    int http_port = -1, max_batch_tokens = 4096, max_request_tokens = 65536, max_request_seqs = 4096, seed = 0;
    int max_length = 0, max_message_mb = 64, normalize = 0, verbose = 0, http_timeout = 180;
    int http_max_conn = 256, http_per_ip = 64, http_idle_s = 15;
    float batch_wait_ms = 5, drain_quiet_ms = 200, drain_max_ms = 5000;
    CliFlag flags[] = {
        {"model", CLI_STRING, &model_path, "reward model: .ckpt written by rm_train (or any model with a score head)"},
        {"bind", CLI_STRING, &bind_ep, "ZeroMQ endpoint (default tcp://127.0.0.1:5555; ipc://PATH; tcp://127.0.0.1:* picks a free port); another interface only when you name it"},
        {"device", CLI_STRING, &device, "cpu or cuda"},
        {"chat-template", CLI_STRING, &chat_template, "template for prompts/responses requests (default: the model's)"},
        {"max-length", CLI_INT, &max_length, "longest sequence accepted, in tokens (default and most: the model's positions); longer ones get error too_long", CLI_NONNEG},
        {"max-batch-tokens", CLI_INT, &max_batch_tokens, "tokens per forward (default 4096); a request over it is scored alone, a forward at a time, taking turns with the others", CLI_AT_LEAST_1},
        {"batch-wait-ms", CLI_FLOAT, &batch_wait_ms, "how long the oldest request may wait for others to join its batch (default 5)", CLI_NONNEG},
        {"max-request-tokens", CLI_INT, &max_request_tokens, "tokens of one request (default 65536)", CLI_AT_LEAST_1},
        {"max-request-seqs", CLI_INT, &max_request_seqs, "sequences of one request (default 4096)", CLI_AT_LEAST_1},
        {"max-message-mb", CLI_INT, &max_message_mb, "largest message read, MiB (default 64); larger ones get an error reply", CLI_AT_LEAST_1},
        {"normalize", CLI_BOOL, &normalize, "return (score - reward_mean) / reward_std with the statistics rm_train stored"},
        {"curve-secret-file", CLI_STRING, &curve_secret, "turn on CurveZMQ with this server secret key file"},
        {"curve-allow", CLI_STRING, &curve_allow, "file of client public keys (Z85, one per line) admitted under CURVE"},
        {"curve-keygen", CLI_STRING, &keygen, "write a new key pair to PREFIX.secret and PREFIX.public, print the public key, exit"},
        {"http", CLI_INT, &http_port, "also serve OpenRLHF's POST /get_reward on this port, 1..65535 (0 = any free port)", CLI_PORT},
        {"http-bind", CLI_STRING, &http_bind, "address for --http (default 127.0.0.1)"},
        {"http-timeout", CLI_INT, &http_timeout, "seconds an HTTP request may wait for its scores (default 180)", CLI_AT_LEAST_1},
        {"http-max-connections", CLI_INT, &http_max_conn, "HTTP connections open at once (default 256)", CLI_AT_LEAST_1},
        {"http-per-ip", CLI_INT, &http_per_ip, "HTTP connections open at once from one address (default 64)", CLI_AT_LEAST_1},
        {"http-idle-timeout", CLI_INT, &http_idle_s, "seconds an HTTP connection may stay silent, headers and body included, before it is closed (default 15)", CLI_AT_LEAST_1},
        {"drain-quiet-ms", CLI_FLOAT, &drain_quiet_ms, "on SIGTERM, what waits at the sockets is taken, and what arrives this much longer (default 200: requests in transit); later ones get error shutting_down", CLI_NONNEG},
        {"drain-max-ms", CLI_FLOAT, &drain_max_ms, "on SIGTERM, exit within this long: requests not scored by then get error shutting_down (default 5000)", CLI_NONNEG},
        {"seed", CLI_INT, &seed, "accepted for a uniform command line; scoring draws no random numbers"},
        {"verbose", CLI_BOOL, &verbose, "log every error reply and dropped reply"},
    };
    CliSpec spec = {.prog = "reward_server", .usage = "reward_server --model rm.ckpt [--bind EP] [--http PORT] [flags]",
                    .about = "Serve a reward model over ZeroMQ (msgpack, docs/PROTOCOL.md) with dynamic batching; "
                             "optionally OpenRLHF's HTTP POST /get_reward.",
                    .flags = flags, .n_flags = sizeof flags / sizeof flags[0]};
    cli_parse_or_exit(&spec, argc, argv);
    if (keygen) {
        if (curve_keygen(keygen)) align_die_error("reward_server");
        return 0;
    }
    if (!model_path) align_die("reward_server", "--model is required (see --help)");
    if (http_timeout > 86400) align_die("reward_server", "--http-timeout %d: at most 86400 seconds", http_timeout);
    if (http_idle_s > 86400) align_die("reward_server", "--http-idle-timeout %d: at most 86400 seconds", http_idle_s);
    if (max_message_mb > 1 << 20) align_die("reward_server", "--max-message-mb %d: at most %d", max_message_mb, 1 << 20);
    if (curve_allow && !curve_secret) align_die("reward_server", "--curve-allow needs --curve-secret-file (the allow-list is checked under CURVE)");

    const Backend *be = backend_get(device);
    if (!be) align_die_error("reward_server");
    ModelBundle b;
    if (model_load_any(model_path, be, 0, &b)) align_die_error("reward_server");
    if (!b.model->cfg.value_head) align_die("reward_server", "%s has no score head (score.weight): train it with rm_train", model_path);
    Server s;
    memset(&s, 0, sizeof s);
    s.model = b.model;
    s.verbose = verbose;
    if (b.extras.tokenizer_json) {
        s.tok = tok_load_hf_json(b.extras.tokenizer_json, strlen(b.extras.tokenizer_json), model_path);
        if (!s.tok) align_die_error("reward_server");
        s.tokenizer_json = b.extras.tokenizer_json;
    }
    if (chat_template_choose(chat_template, b.extras.chat_template, b.extras.chat_template_jinja, &s.tmpl) < 0)
        align_die_error("reward_server");
    s.chat_template_name = chat_template_name(s.tmpl);
    cJSON *st = b.extras.train_state ? cJSON_Parse(b.extras.train_state) : NULL;
    cJSON *mean = cJSON_GetObjectItem(st, "reward_mean"), *std = cJSON_GetObjectItem(st, "reward_std");
    if (cJSON_IsNumber(mean) && cJSON_IsNumber(std)) s.have_stats = 1, s.reward_mean = mean->valuedouble, s.reward_std = std->valuedouble;
    cJSON_Delete(st);
    if (normalize && !s.have_stats) align_die("reward_server", "--normalize: %s has no reward_mean/reward_std (written by rm_train)", model_path);
    s.normalize = normalize;
    s.lim.vocab_size = b.model->cfg.vocab_size;
    /* A sequence past the model's positions (GPT-2's table, a RoPE model's
     * max_position_embeddings / context_length) is refused, never run: its
     * scores would be meaningless and its attention memory unbounded. */
    int model_len = b.model->cfg.max_seq_len;
    if (max_length > 0 && model_len > 0 && max_length > model_len)
        align_die("reward_server", "--max-length %d is over the %d positions of %s", max_length, model_len, model_path);
    s.lim.max_seq_len = max_length > 0 ? max_length : model_len;
    s.lim.max_tokens = max_request_tokens;
    s.lim.max_seqs = max_request_seqs;
    s.max_message_bytes = (size_t)max_message_mb << 20;
    s.max_message_mb = max_message_mb;
    s.lim.wire.max_bytes = s.max_message_bytes;
    s.lim.wire.max_strings = (size_t)max_request_seqs;
    s.max_batch_tokens = max_batch_tokens;
    s.batch_wait_s = batch_wait_ms / 1000.0;

    void *ctx = zmq_ctx_new();
    CurveZap *zap = NULL;
    if (curve_allow && !(zap = curve_zap_start(ctx, curve_allow))) align_die_error("reward_server");
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(router, ZMQ_LINGER, &(int){2000}, sizeof(int));
    /* messages far over the limit are cut off by ZeroMQ itself (the peer is
     * disconnected) so they never occupy memory; those just over it get an
     * error reply */
    int64_t hard_max = (int64_t)s.max_message_bytes * 4;
    zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &hard_max, sizeof hard_max);
    if (curve_secret) {
        char pub[41];
        if (curve_server_apply(router, curve_secret, pub)) align_die_error("reward_server");
        fprintf(stderr, "reward_server: CURVE on, server public key %s%s\n", pub, curve_allow ? ", allow-list on" : " (any client with this key may connect: add --curve-allow)");
    }
    (void)zero;
    if (zmq_bind(router, bind_ep)) align_die("reward_server", "--bind %s: %s", bind_ep, zmq_strerror(errno));
    char last[512] = "";
    size_t ll = sizeof last;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, last, &ll);
    if (!curve_endpoint_is_loopback(bind_ep) && !curve_secret)
        fprintf(stderr, "reward_server: warning: %s is reachable from other machines and unauthenticated (use --curve-secret-file and --curve-allow)\n", last);
    s.sock[0] = router;
    s.n_socks = 1;
    Http http = {.ctx = ctx, .s = &s, .max_body = s.max_message_bytes, .timeout_ms = http_timeout * 1000, .idle_s = http_idle_s};
    struct MHD_Daemon *mhd = NULL;
    HttpGate *gate = NULL;
    if (http_port >= 0) {
        void *bridge = zmq_socket(ctx, ZMQ_ROUTER);
        zmq_setsockopt(bridge, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        if (zmq_bind(bridge, HTTP_INPROC)) align_die("reward_server", "internal: %s", zmq_strerror(errno));
        s.sock[1] = bridge;
        s.n_socks = 2;
        struct sockaddr_in addr = {0};
        addr.sin_family = AF_INET;
        addr.sin_port = htons((uint16_t)http_port);
        if (inet_pton(AF_INET, http_bind, &addr.sin_addr) != 1) align_die("reward_server", "--http-bind %s: not an IPv4 address", http_bind);
        /* the gate listens and hands MHD the connections whose first line is HTTP (http_gate.h) */
        mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                                   MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC,
                               0, NULL, NULL, http_handler, &http, MHD_OPTION_CONNECTION_LIMIT, (unsigned)http_max_conn,
                               MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)http_per_ip,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)http_idle_s,
                               MHD_OPTION_NOTIFY_COMPLETED, http_completed, &http,
                               MHD_OPTION_NOTIFY_CONNECTION, http_connection, &http, MHD_OPTION_END);
        if (!mhd) align_die("reward_server", "--http %d: cannot start the HTTP server", http_port);
        if (!(gate = http_gate_start(&addr, http_max_conn, http_per_ip, http_idle_s, http_gate_accept, mhd)))
            align_die("reward_server", "--http %d: cannot listen on %s: %s", http_port, http_bind, align_error());
        fprintf(stderr, "reward_server: HTTP on http://%s:%d/get_reward\n", http_bind, http_gate_port(gate));
        if (strcmp(http_bind, "127.0.0.1"))
            fprintf(stderr, "reward_server: warning: the HTTP endpoint has no authentication and listens on %s\n", http_bind);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal; /* no SA_RESTART: zmq_poll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    fprintf(stderr, "reward_server: listening on %s (%s, %d layers, dim %d; sequences of <= %d tokens; batches of <= %d tokens, wait <= %g ms)\n",
            last, model_path, b.model->cfg.n_layers, b.model->cfg.dim, s.lim.max_seq_len, max_batch_tokens, batch_wait_ms);
    int rc = serve(&s, drain_quiet_ms / 1000.0, drain_max_ms / 1000.0);
    if (rc) fprintf(stderr, "reward_server: %s\n", align_error());
    if (mhd) {
        http.stopping = 1;
        http_gate_stop(gate);
        MHD_stop_daemon(mhd);
    }
    fprintf(stderr, "reward_server: served %ld requests in %ld batches (%ld error replies, %ld of them shutting_down; %ld replies undeliverable); bye\n",
            s.served, s.batches, s.errors, s.refused, s.dropped_replies);
    for (int i = 0; i < s.n_socks; i++) zmq_close(s.sock[i]);
    zmq_ctx_term(ctx);
    curve_zap_join(zap);
    for (int i = 0; i < s.shortq.len; i++) rm_request_free(&s.shortq.v[i].req), wire_frames_free(&s.shortq.v[i].env);
    for (int i = 0; i < s.longq.len; i++)
        rm_request_free(&s.longq.v[i].req), wire_frames_free(&s.longq.v[i].env), free(s.longq.v[i].scores);
    free(s.shortq.v), free(s.longq.v);
    tok_free(s.tok);
    model_bundle_free(&b);
    cli_free(&spec);
    return rc ? 1 : 0;
}
