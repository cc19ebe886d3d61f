/* ppo_service: a PPO worker's ROUTER, its ping-answering I/O thread, and
 * the message helpers shared with ppo_run (see ppo_service.h). */
#include "ppo_service.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "util.h"

struct PpoService {
    void *ctx, *router, *pair_io, *pair_work;
    char service[32];
    char endpoint[512];
    pthread_t io;
    atomic_int busy;
    atomic_long served;
    atomic_int stop;
    CurveZap *zap; /* the CURVE allow-list, or NULL */
};

static const WireLimits PPO_LIMITS = {.max_bytes = PPO_MAX_MESSAGE, .max_depth = 8, .max_elems = PPO_MAX_MESSAGE,
                                      .max_strings = 65536};

const WireLimits *ppo_wire_limits(void) { return &PPO_LIMITS; }

/* Receive all parts of one message into msgs (at most cap); returns the
 * count, or -1. Extra parts beyond cap are dropped. */
static int recv_parts(void *sock, zmq_msg_t *msgs, int cap, int flags) {
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_t *p = n < cap ? &msgs[n] : &tmp;
        zmq_msg_init(p);
        if (zmq_msg_recv(p, sock, n == 0 ? flags : 0) < 0) {
            zmq_msg_close(p);
            for (int i = 0; i < n && i < cap; i++) zmq_msg_close(&msgs[i]);
            return -1;
        }
        more = zmq_msg_more(p);
        if (p == &tmp) zmq_msg_close(p);
        else n++;
    }
    return n;
}

static void send_parts(void *sock, zmq_msg_t *msgs, int n) {
    for (int i = 0; i < n; i++)
        if (zmq_msg_send(&msgs[i], sock, (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
            /* a vanished peer (ROUTER_MANDATORY) or a full queue: drop the rest */
            for (int j = i; j < n; j++) zmq_msg_close(&msgs[j]);
            return;
        }
}

/* A small body that is {"op":"ping"}: answer it on the I/O thread. */
static int answer_ping(PpoService *s, zmq_msg_t *parts, int n) {
    size_t len = zmq_msg_size(&parts[n - 1]);
    if (len > 512 || n > WIRE_MAX_ENVELOPE + 1) return 0;
    WireMsg *m = wire_parse(zmq_msg_data(&parts[n - 1]), len, &PPO_LIMITS);
    if (!m) return 0;
    if (strcmp(wire_op(m), "ping")) {
        wire_msg_free(m);
        return 0;
    }
    WireWriter *w = wire_writer_new("pong");
    uint64_t id;
    if (wire_has(m, "id") && !wire_get_uint(m, "id", &id)) wire_put_uint(w, "id", id);
    wire_put_str(w, "service", s->service);
    wire_put_bool(w, "busy", atomic_load(&s->busy));
    wire_put_int(w, "pid", (int64_t)getpid());
    wire_put_int(w, "served", atomic_load(&s->served));
    wire_msg_free(m);
    void *data;
    size_t dl;
    if (wire_finish(w, &data, &dl)) return 1;
    zmq_msg_t out[WIRE_MAX_ENVELOPE + 1];
    for (int i = 0; i < n - 1; i++) {
        zmq_msg_init(&out[i]);
        zmq_msg_copy(&out[i], &parts[i]);
    }
    zmq_msg_init_size(&out[n - 1], dl);
    memcpy(zmq_msg_data(&out[n - 1]), data, dl);
    free(data);
    send_parts(s->router, out, n);
    return 1;
}

static void *io_thread(void *arg) {
    PpoService *s = arg;
    zmq_pollitem_t items[2] = {{s->router, 0, ZMQ_POLLIN, 0}, {s->pair_io, 0, ZMQ_POLLIN, 0}};
    zmq_msg_t parts[WIRE_MAX_ENVELOPE + WIRE_MAX_ATTACH + 1];
    while (!atomic_load(&s->stop)) {
        int rc = zmq_poll(items, 2, 200);
        if (rc < 0) {
            if (errno == EINTR) continue;
            break; /* context terminated */
        }
        if (items[0].revents & ZMQ_POLLIN) {
            int n = recv_parts(s->router, parts, WIRE_MAX_ENVELOPE + WIRE_MAX_ATTACH + 1, ZMQ_DONTWAIT);
            if (n > 0) {
                if (answer_ping(s, parts, n)) {
                    for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
                } else {
                    send_parts(s->pair_io, parts, n); /* to the compute thread, zero copy */
                }
            }
        }
        if (items[1].revents & ZMQ_POLLIN) {
            int n = recv_parts(s->pair_io, parts, WIRE_MAX_ENVELOPE + WIRE_MAX_ATTACH + 1, ZMQ_DONTWAIT);
            if (n > 0) send_parts(s->router, parts, n);
        }
    }
    return NULL;
}

PpoService *ppo_service_start(const char *service, const char *endpoint, const PpoCurve *curve) {
    PpoService *s = calloc(1, sizeof *s);
    if (!s) {
        align_errorf("out of memory");
        return NULL;
    }
    snprintf(s->service, sizeof s->service, "%s", service);
    s->ctx = zmq_ctx_new();
    s->router = zmq_socket(s->ctx, ZMQ_ROUTER);
    s->pair_io = zmq_socket(s->ctx, ZMQ_PAIR);
    s->pair_work = zmq_socket(s->ctx, ZMQ_PAIR);
    int one = 1, linger = 1000, hwm = 0;
    zmq_setsockopt(s->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s->router, ZMQ_LINGER, &linger, sizeof linger);
    /* no drops between the two threads of this process */
    zmq_setsockopt(s->pair_io, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s->pair_work, ZMQ_SNDHWM, &hwm, sizeof hwm);
    int64_t maxsz = (int64_t)PPO_MAX_MESSAGE;
    zmq_setsockopt(s->router, ZMQ_MAXMSGSIZE, &maxsz, sizeof maxsz);
    char inproc[64];
    snprintf(inproc, sizeof inproc, "inproc://ppo-service-%p", (void *)s);
    if (curve && curve->secret_file) {
        char pub[41];
        if (curve->allow_file && !(s->zap = curve_zap_start(s->ctx, curve->allow_file))) goto fail;
        if (curve_server_apply(s->router, curve->secret_file, pub)) goto fail;
        fprintf(stderr, "%s: CURVE on, public key %s%s\n", service, pub,
                curve->allow_file ? ", allow-list on" : " (any client with this key may connect: add --curve-allow)");
    } else if (!curve_endpoint_is_loopback(endpoint)) {
        fprintf(stderr, "%s: warning: %s is reachable from other machines and unauthenticated "
                        "(use --curve-secret-file and --curve-allow)\n", service, endpoint);
    }
    if (zmq_bind(s->router, endpoint)) {
        align_errorf("--bind %s: %s", endpoint, zmq_strerror(errno));
        goto fail;
    }
    size_t el = sizeof s->endpoint;
    zmq_getsockopt(s->router, ZMQ_LAST_ENDPOINT, s->endpoint, &el);
    if (zmq_bind(s->pair_io, inproc) || zmq_connect(s->pair_work, inproc)) {
        align_errorf("internal socket: %s", zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&s->io, NULL, io_thread, s)) {
        align_errorf("cannot start the I/O thread");
        goto fail;
    }
    return s;
fail:
    zmq_close(s->router), zmq_close(s->pair_io), zmq_close(s->pair_work);
    zmq_ctx_term(s->ctx);
    curve_zap_join(s->zap);
    free(s);
    return NULL;
}

const char *ppo_service_endpoint(const PpoService *s) { return s->endpoint; }

void ppo_request_free(PpoRequest *r) {
    wire_msg_free(r->msg);
    wire_frames_free(&r->env);
    for (int i = 0; i < r->n_att; i++) {
        zmq_msg_close(r->att[i]);
        free(r->att[i]);
    }
    memset(r, 0, sizeof *r);
}

const void *ppo_request_attachment(const PpoRequest *r, int i, size_t *len) {
    if (i < 0 || i >= r->n_att) return NULL;
    if (len) *len = zmq_msg_size(r->att[i]);
    return zmq_msg_data(r->att[i]);
}

static int send_body(PpoService *s, PpoRequest *r, void *data, size_t len) {
    int rc = wire_send(s->pair_work, &r->env, data, len, 0);
    free(data);
    atomic_store(&s->busy, 0);
    atomic_fetch_add(&s->served, 1);
    ppo_request_free(r);
    return rc;
}

int ppo_service_error(PpoService *s, PpoRequest *r, const char *code, const char *message) {
    void *data;
    size_t len;
    if (wire_error_message(code, message, r->has_id, r->id, &data, &len)) {
        ppo_request_free(r);
        return -1;
    }
    return send_body(s, r, data, len);
}

int ppo_service_reply(PpoService *s, PpoRequest *r, WireWriter *w) {
    void *data;
    size_t len;
    if (!w) return ppo_service_error(s, r, "internal", "out of memory");
    if (r->has_id) wire_put_uint(w, "id", r->id);
    if (wire_finish(w, &data, &len)) return ppo_service_error(s, r, "internal", align_error());
    return send_body(s, r, data, len);
}

/* Frames [0, n) of one message into r: the last is the body (parsed), the
 * k before it that the body announces are attachments (kept in ZeroMQ's
 * buffers: a model's weights are not copied here), the rest is the
 * envelope (copied, small). Consumes parts. 0, or -1 with an error
 * (r->env filled as far as possible, so the error reply can be routed). */
static int take_parts(PpoRequest *r, zmq_msg_t *parts, int n) {
    int rc = 0, k = 0;
    zmq_msg_t *body = &parts[n - 1];
    size_t bl = zmq_msg_size(body);
    if (bl > PPO_MAX_MESSAGE) rc = align_errorf("message over the size limit");
    else if (!(r->msg = wire_parse(zmq_msg_data(body), bl, &PPO_LIMITS))) rc = -1;
    else if (r->has_id = wire_has(r->msg, "id") && !wire_get_uint(r->msg, "id", &r->id),
             wire_get_attachments(r->msg, n - 2, &k)) /* a ROUTER's first frame is the peer's identity */
        rc = -1;
    int n_env = n - 1 - k;
    if (!rc && n_env > WIRE_MAX_ENVELOPE) rc = align_errorf("message over the size limit (too many frames)");
    for (int i = 0; i < n - 1; i++) {
        if (i < n_env && r->env.n_env < WIRE_MAX_ENVELOPE) {
            size_t len = zmq_msg_size(&parts[i]);
            void *c = malloc(len + 1);
            if (c) {
                memcpy(c, zmq_msg_data(&parts[i]), len);
                r->env.env[r->env.n_env] = c;
                r->env.env_len[r->env.n_env++] = len;
            } else if (!rc) {
                rc = align_errorf("out of memory");
            }
        } else if (i >= n_env && !rc) {
            zmq_msg_t *a = malloc(sizeof *a);
            if (!a) {
                rc = align_errorf("out of memory");
            } else {
                zmq_msg_init(a);
                zmq_msg_move(a, &parts[i]);
                r->att[r->n_att++] = a;
            }
        }
        zmq_msg_close(&parts[i]);
    }
    zmq_msg_close(body);
    return rc;
}

int ppo_service_next(PpoService *s, PpoRequest *r) {
    zmq_msg_t parts[WIRE_MAX_ENVELOPE + WIRE_MAX_ATTACH + 1];
    for (;;) {
        memset(r, 0, sizeof *r);
        int n = recv_parts(s->pair_work, parts, WIRE_MAX_ENVELOPE + WIRE_MAX_ATTACH + 1, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return align_errorf("receive: %s", zmq_strerror(errno));
        }
        atomic_store(&s->busy, 1);
        if (take_parts(r, parts, n)) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", align_error());
            ppo_service_error(s, r, strstr(msg, "size limit") ? "too_large" : "bad_request", msg);
            continue;
        }
        r->has_id = wire_has(r->msg, "id") && !wire_get_uint(r->msg, "id", &r->id);
        r->op = wire_op(r->msg);
        if (wire_version(r->msg) != WIRE_VERSION) {
            char msg[128];
            snprintf(msg, sizeof msg, "protocol version %lld is not served (this worker speaks version %d)",
                     (long long)wire_version(r->msg), WIRE_VERSION);
            ppo_service_error(s, r, "version", msg);
            continue;
        }
        return 0;
    }
}

void ppo_service_stop(PpoService *s) {
    if (!s) return;
    atomic_store(&s->stop, 1);
    pthread_join(s->io, NULL);
    zmq_close(s->router), zmq_close(s->pair_io), zmq_close(s->pair_work);
    zmq_ctx_term(s->ctx);
    curve_zap_join(s->zap); /* it ends with the context */
    free(s);
}

/* ------------------------------------------------------------ a worker's main */

int ppo_worker_main(const PpoWorker *w, void *state, int argc, char **argv) {
    const char *bind = NULL, *device = "cpu";
    PpoCurve curve = {0};
    int seed = 0;
    CliFlag flags[16] = {
        {"bind", CLI_STRING, &bind, "ZeroMQ endpoint to serve on (ipc://PATH, tcp://127.0.0.1:PORT; another interface only when named, then with CURVE)"},
        {"device", CLI_STRING, &device, "cpu or cuda"},
        {"seed", CLI_INT, &seed, w->seed_help},
        {"curve-secret-file", CLI_STRING, &curve.secret_file, "turn on CurveZMQ with this secret key file (reward_server --curve-keygen PREFIX writes one)"},
        {"curve-allow", CLI_STRING, &curve.allow_file, "file of client public keys (Z85, one per line) admitted under CURVE: ppo_run's and the policy's"},
    };
    int nf = 5;
    for (int i = 0; i < w->n_flags && nf < (int)(sizeof flags / sizeof *flags); i++) flags[nf++] = w->flags[i];
    char usage[96];
    snprintf(usage, sizeof usage, "%s --bind EP [flags]", w->prog);
    CliSpec spec = {.prog = w->prog, .usage = usage, .about = w->about, .flags = flags, .n_flags = nf};
    cli_parse_or_exit(&spec, argc, argv);
    if (!bind && !w->follow) align_die(w->prog, "--bind is required (see --help)");
    if (curve.allow_file && !curve.secret_file)
        align_die(w->prog, "--curve-allow needs --curve-secret-file (the allow-list is checked under CURVE)");
    const Backend *be = backend_get(device);
    if (!be) align_die_error(w->prog);
    int followed = w->follow ? w->follow(state, be, bind) : -1;
    if (followed >= 0) {
        cli_free(&spec);
        return followed;
    }
    /* checked after follow: a rank that follows rank 0 serves no endpoint */
    if (!bind) align_die(w->prog, "--bind is required (see --help)");
    PpoService *svc = ppo_service_start(w->service, bind, &curve);
    if (!svc) align_die_error(w->prog);
    fprintf(stderr, "%s: listening on %s\n", w->prog, ppo_service_endpoint(svc));
    PpoRequest r;
    while (!ppo_service_next(svc, &r)) {
        const char *code = "internal";
        WireWriter *reply = w->handle(state, be, &r, &code);
        if (reply) {
            ppo_service_reply(svc, &r, reply);
            continue;
        }
        char msg[600];
        if (!strcmp(code, "unknown_op")) snprintf(msg, sizeof msg, "unknown op \"%.64s\" (%s)", r.op, w->serves);
        else snprintf(msg, sizeof msg, "%s", align_error());
        ppo_service_error(svc, &r, code, msg);
    }
    fprintf(stderr, "%s: %s\n", w->prog, align_error());
    cli_free(&spec);
    return 1;
}

/* ------------------------------------------------------------ fields */

int ppo_put_ragged(WireWriter *w, const char *key, const char *okey, const int32_t *data, const int32_t *off, int n) {
    if (wire_put_vec(w, key, WIRE_I32, data, (size_t)off[n])) return -1;
    return wire_put_vec(w, okey, WIRE_I32, off, (size_t)n + 1);
}

int ppo_get_ragged(const WireMsg *m, const char *key, const char *okey, int32_t **data, int32_t **off, int *n) {
    WireArray a;
    int64_t *o = NULL;
    size_t no = 0;
    *data = NULL, *off = NULL, *n = 0;
    if (wire_get_array(m, key, WIRE_I32, &PPO_LIMITS, &a)) return -1;
    if (wire_get_index_array(m, okey, &PPO_LIMITS, &o, &no) || wire_check_offsets(o, no, a.numel, okey) ||
        a.numel > INT32_MAX) {
        free(a.data), free(o);
        return -1;
    }
    int32_t *o32 = malloc(no * sizeof(int32_t));
    if (!o32) {
        free(a.data), free(o);
        return align_errorf("out of memory");
    }
    for (size_t i = 0; i < no; i++) o32[i] = (int32_t)o[i];
    free(o);
    *data = a.data;
    *off = o32;
    *n = (int)no - 1;
    return 0;
}

int ppo_get_f32(const WireMsg *m, const char *key, long n, float **out, long *n_out) {
    WireArray a;
    *out = NULL;
    if (wire_get_array(m, key, WIRE_F32, &PPO_LIMITS, &a)) return -1;
    if (n >= 0 && (long)a.numel != n) {
        free(a.data);
        return align_errorf("\"%s\" has %zu elements, expected %ld", key, a.numel, n);
    }
    *out = a.data;
    if (n_out) *n_out = (long)a.numel;
    return 0;
}

char *ppo_get_strdup(const WireMsg *m, const char *key) {
    const char *s;
    size_t len;
    if (!wire_has(m, key) || wire_get_str(m, key, &s, &len)) return NULL;
    char *c = malloc(len + 1);
    if (!c) return NULL;
    memcpy(c, s, len);
    c[len] = 0;
    return c;
}

double ppo_get_num(const WireMsg *m, const char *key, double dflt) {
    double v;
    if (!wire_has(m, key)) return dflt;
    if (!wire_get_float(m, key, &v)) return v;
    int b;
    if (!wire_get_bool(m, key, &b)) return b;
    return dflt;
}
