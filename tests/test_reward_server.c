/* reward_server end to end on loopback (ipc:// in a temp dir), with a
 * reward model built from the tiny Qwen2 fixture:
 *   - "info" answers; remote scores equal in-process scores (token and
 *     prompt/response text forms) within 1e-5 relative: batches differ, so
 *     only float rounding of the shared matmuls may differ;
 *   - load: 32 client threads x 12 requests (1-4 sequences each) while a
 *     33rd thread keeps sending big requests and vanishing: every request
 *     is answered exactly once, with its own id and the right scores, and
 *     no extra reply ever arrives;
 *   - malformed messages (garbage, lying lengths, wrong version, unknown
 *     op, bad tokens, bad offsets, oversized) each get an error reply with
 *     the right code, and the server keeps serving;
 *   - SIGTERM with 32 requests in flight: all answered, exit status 0;
 *   - CURVE with an allow-list: a listed client is served, an unlisted one
 *     gets nothing, also when it calls after its handshake was refused;
 *     a client whose server is down fails every call within its timeout;
 *   - one request never stalls the others or runs past the model: a
 *     sequence over the model's positions gets too_long; short requests
 *     sent right after a long one are answered before it; a body announcing
 *     missing attachment frames gets bad_request;
 *   - HTTP: 500 idle connections from one address do not lock others out;
 *     an announced body over the limit gets 413 at once, a request line
 *     that is not HTTP 400, a body short of its Content-Length or a request
 *     line that never ends 408 at the idle timeout, a text over the model's
 *     positions 413, a NUL or a byte that is not UTF-8 in a text 400;
 *   - SIGTERM under a flood of pipelined requests: exit within
 *     --drain-max-ms, nothing sent well after the signal scored, every
 *     request sent before it answered (scores or shutting_down).
 * Every wait is bounded. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "model_load.h"
#include "rm_client.h"
#include "rm_model.h"
#include "test.h"
#include "util.h"
#include "wire.h"

#define N_POOL 64
#define N_THREADS 32
#define N_REQ 12

static char dir[256], ckpt[300];
static void *ctx;
static int32_t *pool_tok[N_POOL];
static int pool_len[N_POOL];
static float ref_score[N_POOL];
static int vocab;

static pid_t start_server(const char *ep, const char *const *extra, const char *log) {
    pid_t pid = fork();
    if (pid == 0) {
        const char *argv[32] = {ALIGN_BIN_DIR "/reward_server", "--model", ckpt, "--bind", ep, "--batch-wait-ms", "2"};
        int n = 7;
        for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
        argv[n] = NULL;
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    return pid;
}

static int stop_server(pid_t pid) {
    kill(pid, SIGTERM);
    int st = -1;
    for (int i = 0; i < 200; i++) { /* at most 10 s */
        if (waitpid(pid, &st, WNOHANG) == pid) return st;
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

static void *dealer(const char *ep) {
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, ep);
    return s;
}

/* A score request for pool sequences idx[0..n) with this id. */
static int send_score(void *s, uint64_t id, const int *idx, int n) {
    int32_t tok[N_POOL * 64];
    int64_t off[N_POOL + 1] = {0};
    for (int i = 0; i < n; i++) {
        memcpy(tok + off[i], pool_tok[idx[i]], pool_len[idx[i]] * sizeof(int32_t));
        off[i + 1] = off[i] + pool_len[idx[i]];
    }
    WireWriter *w = wire_writer_new("score");
    wire_put_uint(w, "id", id);
    wire_put_vec(w, "tokens", WIRE_I32, tok, (size_t)off[n]);
    wire_put_vec(w, "offsets", WIRE_I64, off, n + 1);
    void *buf;
    size_t len;
    if (wire_finish(w, &buf, &len)) return -1;
    int rc = wire_send(s, NULL, buf, len, 0);
    free(buf);
    return rc;
}

/* Next reply within timeout_ms, or NULL. */
static WireMsg *recv_reply(void *s, int timeout_ms) {
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return NULL;
    WireFrames f;
    if (wire_recv(s, &f, 1 << 26, ZMQ_DONTWAIT)) return NULL;
    WireMsg *m = f.body ? wire_parse(f.body, f.body_len, NULL) : NULL;
    wire_frames_free(&f);
    return m;
}

static int scores_match(WireMsg *m, const int *idx, int n, char *why, size_t whyn) {
    WireArray a;
    if (strcmp(wire_op(m), "scores") || wire_get_array(m, "scores", WIRE_F32, NULL, &a)) {
        const char *msg = "";
        size_t ml = 0;
        wire_get_str(m, "message", &msg, &ml);
        snprintf(why, whyn, "not a scores reply: %s %.*s", wire_op(m), (int)ml, msg);
        return 0;
    }
    int ok = (int)a.numel == n;
    for (int i = 0; ok && i < n; i++) {
        float g = ((float *)a.data)[i], w = ref_score[idx[i]];
        if (fabsf(g - w) > 1e-5f * fabsf(w) + 1e-5f) {
            snprintf(why, whyn, "sequence %d: got %.9g want %.9g", idx[i], g, w);
            ok = 0;
        }
    }
    free(a.data);
    return ok;
}

/* ------------------------------------------------------------ load */

typedef struct {
    const char *ep;
    int t;
    int answered, wrong, extra;
    char why[256];
} LoadArg;

static void *load_thread(void *p) {
    LoadArg *a = p;
    void *s = dealer(a->ep);
    uint64_t x = 0x9e3779b97f4a7c15ULL * (a->t + 1);
    for (int r = 0; r < N_REQ; r++) {
        int idx[4], n = 1 + r % 4;
        for (int i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            idx[i] = (int)(x % N_POOL);
        }
        uint64_t id = (uint64_t)a->t * 1000 + r;
        if (send_score(s, id, idx, n)) break;
        WireMsg *m = recv_reply(s, 20000);
        uint64_t got = 0;
        if (!m) {
            snprintf(a->why, sizeof a->why, "request %llu: no reply", (unsigned long long)id);
            break;
        }
        if (wire_get_uint(m, "id", &got) || got != id) {
            a->wrong++;
            snprintf(a->why, sizeof a->why, "request %llu: reply carries id %llu", (unsigned long long)id, (unsigned long long)got);
        } else if (!scores_match(m, idx, n, a->why, sizeof a->why)) {
            a->wrong++;
        } else {
            a->answered++;
        }
        wire_msg_free(m);
    }
    WireMsg *m = recv_reply(s, 100); /* nothing more may come */
    if (m) a->extra++;
    wire_msg_free(m);
    zmq_close(s);
    return NULL;
}

static volatile int vanish_stop;
static void *vanish_thread(void *p) {
    const char *ep = p;
    int idx[N_POOL];
    for (int i = 0; i < N_POOL; i++) idx[i] = i;
    for (int k = 0; k < 20 && !vanish_stop; k++) {
        void *s = dealer(ep);
        send_score(s, 999999, idx, N_POOL);
        usleep(2000);
        zmq_close(s); /* gone before the reply */
    }
    return NULL;
}

/* An error reply with this code, whose message holds in_message (NULL: any). */
static int is_error(WireMsg *m, const char *code, const char *in_message) {
    const char *c = "", *msg = "";
    size_t cl = 0, ml = 0;
    if (!m || strcmp(wire_op(m), "error")) return 0;
    wire_get_str(m, "code", &c, &cl);
    wire_get_str(m, "message", &msg, &ml);
    char text[512];
    snprintf(text, sizeof text, "%.*s", (int)ml, msg);
    return cl == strlen(code) && !memcmp(c, code, cl) && (!in_message || strstr(text, in_message));
}

/* The reply's message, for a failed check's report. */
static const char *reply_text(WireMsg *m, char *buf, size_t n) {
    const char *msg = "";
    size_t ml = 0;
    if (!m) return "no reply";
    wire_get_str(m, "message", &msg, &ml);
    snprintf(buf, n, "%s: %.*s", wire_op(m), (int)ml, msg);
    return buf;
}

static WireMsg *call_raw(void *s, WireWriter *w, int timeout_ms) {
    void *buf;
    size_t len;
    if (wire_finish(w, &buf, &len)) return NULL;
    wire_send(s, NULL, buf, len, 0);
    free(buf);
    return recv_reply(s, timeout_ms);
}

/* ------------------------------------------------------------ SIGTERM under load */

/* Dealers that each keep FLOOD_DEPTH requests outstanding, sending a new one
 * for every reply, until told to stop: the queue never runs dry. */
enum { FLOOD_SOCKS = 8, FLOOD_DEPTH = 4, FLOOD_SEQS = 4, FLOOD_MAX = 200000 };
typedef struct {
    const char *ep;
    volatile int stop;
    volatile double t_kill; /* set by main when it sends SIGTERM (0 before) */
    double *t_sent;         /* per request id */
    signed char *outcome;   /* per request id: 0 none, 1 scores, 2 shutting_down, 3 other */
    int n_sent;
    double last_scored_sent_after_kill; /* latest send time (after the signal) of a request that was scored */
} Flood;

static void *flood_thread(void *p) {
    Flood *a = p;
    void *socks[FLOOD_SOCKS];
    zmq_pollitem_t items[FLOOD_SOCKS];
    for (int k = 0; k < FLOOD_SOCKS; k++) {
        socks[k] = dealer(a->ep);
        items[k] = (zmq_pollitem_t){socks[k], 0, ZMQ_POLLIN, 0};
    }
    int idx[FLOOD_SEQS];
    for (int k = 0; k < FLOOD_SOCKS; k++)
        for (int d = 0; d < FLOOD_DEPTH && a->n_sent < FLOOD_MAX; d++) {
            for (int j = 0; j < FLOOD_SEQS; j++) idx[j] = (a->n_sent * 7 + j * 13) % N_POOL;
            a->t_sent[a->n_sent] = align_now();
            send_score(socks[k], (uint64_t)a->n_sent, idx, FLOOD_SEQS);
            a->n_sent++;
        }
    while (!a->stop) {
        if (zmq_poll(items, FLOOD_SOCKS, 20) <= 0) continue;
        for (int k = 0; k < FLOOD_SOCKS; k++) {
            if (!(items[k].revents & ZMQ_POLLIN)) continue;
            WireMsg *m = recv_reply(socks[k], 0);
            uint64_t id = 0;
            if (m && !wire_get_uint(m, "id", &id) && id < (uint64_t)a->n_sent) {
                int scored = !strcmp(wire_op(m), "scores");
                a->outcome[id] = scored ? 1 : is_error(m, "shutting_down", NULL) ? 2 : 3;
                if (scored && a->t_kill > 0 && a->t_sent[id] > a->t_kill &&
                    a->t_sent[id] - a->t_kill > a->last_scored_sent_after_kill)
                    a->last_scored_sent_after_kill = a->t_sent[id] - a->t_kill;
            }
            wire_msg_free(m);
            if (a->n_sent < FLOOD_MAX) {
                for (int j = 0; j < FLOOD_SEQS; j++) idx[j] = (a->n_sent * 7 + j * 13) % N_POOL;
                a->t_sent[a->n_sent] = align_now();
                send_score(socks[k], (uint64_t)a->n_sent, idx, FLOOD_SEQS);
                a->n_sent++;
            }
        }
    }
    for (int k = 0; k < FLOOD_SOCKS; k++) zmq_close(socks[k]);
    return NULL;
}

/* SIGTERM while clients keep the queue full: the server answers what it
 * holds (or refuses it with shutting_down at --drain-max-ms), takes nothing
 * sent well after the signal, and exits within the limit. */
static void test_drain_under_load(void) {
    char ep[320], log[320];
    snprintf(ep, sizeof ep, "ipc://%s/rm5.sock", dir);
    snprintf(log, sizeof log, "%s/server5.log", dir);
    const char *x[] = {"--max-batch-tokens", "160", "--drain-quiet-ms", "100", "--drain-max-ms", "700",
                       "--max-request-tokens", "2000000", "--max-request-seqs", "20000", NULL};
    pid_t pid = start_server(ep, x, log);
    void *probe = dealer(ep);
    int one[1] = {0};
    send_score(probe, 1, one, 1);
    WireMsg *pm = recv_reply(probe, 20000);
    CHECK(pm != NULL, "drain server answers");
    wire_msg_free(pm);
    zmq_close(probe);
    Flood f = {.ep = ep, .t_sent = calloc(FLOOD_MAX, sizeof(double)), .outcome = calloc(FLOOD_MAX, 1)};
    pthread_t th;
    pthread_create(&th, NULL, flood_thread, &f);
    usleep(300000);
    /* and a long request (20000 sequences of the model's 64 positions:
     * 10000 forwards, seconds), which the limit must cut short */
    enum { N_LONG = 20000 };
    int32_t *lt = malloc((size_t)N_LONG * 64 * sizeof(int32_t));
    int64_t *lo = malloc((size_t)(N_LONG + 1) * sizeof(int64_t));
    for (int i = 0; i < N_LONG * 64; i++) lt[i] = (int32_t)((i * 31 + 7) % vocab);
    for (int i = 0; i <= N_LONG; i++) lo[i] = (int64_t)i * 64;
    WireWriter *w = wire_writer_new("score");
    wire_put_uint(w, "id", 7);
    wire_put_vec(w, "tokens", WIRE_I32, lt, (size_t)lo[N_LONG]);
    wire_put_vec(w, "offsets", WIRE_I64, lo, N_LONG + 1);
    void *longs = dealer(ep), *buf;
    size_t len;
    wire_finish(w, &buf, &len);
    wire_send(longs, NULL, buf, len, 0);
    free(buf), free(lt), free(lo);
    usleep(100000);
    f.t_kill = align_now();
    kill(pid, SIGTERM);
    int st = -1;
    double t_exit = -1;
    while (align_now() - f.t_kill < 6) { /* the flood goes on meanwhile */
        if (waitpid(pid, &st, WNOHANG) == pid) {
            t_exit = align_now() - f.t_kill;
            break;
        }
        usleep(10000);
    }
    usleep(200000); /* replies still in the client's pipes */
    f.stop = 1;
    pthread_join(th, NULL);
    if (t_exit < 0) st = stop_server(pid); /* the flood has stopped: it may drain now */
    int before = 0, before_answered = 0, scored_after = 0, refused = 0;
    for (int i = 0; i < f.n_sent; i++) {
        if (f.t_sent[i] < f.t_kill) before++, before_answered += f.outcome[i] == 1 || f.outcome[i] == 2;
        scored_after += f.t_sent[i] > f.t_kill && f.outcome[i] == 1;
        refused += f.outcome[i] == 2;
    }
    printf("drain under load: %d requests sent (%d before SIGTERM); exit %.3f s after it; %d sent after it scored "
           "(the last sent %.3f s after), %d refused with shutting_down\n",
           f.n_sent, before, t_exit, scored_after, f.last_scored_sent_after_kill, refused);
    /* the slack is for a loaded machine; before the fix it served the flood for as long as it lasted */
    CHECK(t_exit >= 0 && t_exit < 0.7 + 2.5 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "SIGTERM under load: exit 0 within --drain-max-ms 700 (+2.5 s slack) while clients keep sending (exit after %.3f s, "
          "status %d)", t_exit, st);
    CHECK(before_answered == before, "SIGTERM under load: each of the %d requests sent before the signal got scores or "
          "shutting_down (%d did)", before, before_answered);
    CHECK(f.last_scored_sent_after_kill < 0.1 + 1.5,
          "SIGTERM under load: no request sent more than --drain-quiet-ms 100 (+1.5 s slack) after the signal is scored "
          "(one sent %.3f s after was)", f.last_scored_sent_after_kill);
    WireMsg *lm = recv_reply(longs, 1000);
    char why[600];
    CHECK(is_error(lm, "shutting_down", "--drain-max-ms 700"),
          "SIGTERM under load: a long request not done at --drain-max-ms gets shutting_down naming the flag (%s)",
          reply_text(lm, why, sizeof why));
    wire_msg_free(lm);
    zmq_close(longs);
    free(f.t_sent), free(f.outcome);
}

/* ------------------------------------------------------------ malformed */

static void expect_error_msg(void *s, const void *bytes, size_t len, const char *code, const char *in_message,
                             const char *what) {
    wire_send(s, NULL, bytes, len, 0);
    WireMsg *m = recv_reply(s, 10000);
    char why[600];
    CHECK(is_error(m, code, in_message), "%s: expected an error reply with code %s%s%s (%s)", what, code,
          in_message ? " naming " : "", in_message ? in_message : "", reply_text(m, why, sizeof why));
    wire_msg_free(m);
}

static void expect_error(void *s, const void *bytes, size_t len, const char *code, const char *what) {
    expect_error_msg(s, bytes, len, code, NULL, what);
}

static void finish_and_expect(void *s, WireWriter *w, const char *code, const char *what) {
    void *buf;
    size_t len;
    wire_finish(w, &buf, &len);
    expect_error(s, buf, len, code, what);
    free(buf);
}

static void finish_and_expect_msg(void *s, WireWriter *w, const char *code, const char *in_message, const char *what) {
    void *buf;
    size_t len;
    wire_finish(w, &buf, &len);
    expect_error_msg(s, buf, len, code, in_message, what);
    free(buf);
}


static void test_malformed(const char *ep) {
    void *s = dealer(ep);
    expect_error(s, "garbage!", 8, "bad_request", "garbage bytes");
    uint8_t lying[] = {0x82, 0xa2, 'o', 'p', 0xa5, 's', 'c', 'o', 'r', 'e', 0xa1, 'v', 0xdd, 0xff, 0xff, 0xff, 0xff};
    expect_error(s, lying, sizeof lying, "bad_request", "array32 claiming 2^32 entries");
    uint8_t vers[] = {0x82, 0xa2, 'o', 'p', 0xa4, 'i', 'n', 'f', 'o', 0xa1, 'v', 0x63};
    expect_error(s, vers, sizeof vers, "version", "protocol version 99");
    finish_and_expect(s, wire_writer_new("launch"), "unknown_op", "unknown op");
    int32_t bad_tok[2] = {1, 1 << 30};
    int64_t off2[2] = {0, 2}, off_bad[2] = {0, 3};
    WireWriter *w = wire_writer_new("score");
    wire_put_vec(w, "tokens", WIRE_I32, bad_tok, 2);
    wire_put_vec(w, "offsets", WIRE_I64, off2, 2);
    finish_and_expect(s, w, "bad_request", "token outside the vocabulary");
    w = wire_writer_new("score");
    wire_put_vec(w, "tokens", WIRE_I32, bad_tok, 1);
    wire_put_vec(w, "offsets", WIRE_I64, off_bad, 2);
    finish_and_expect(s, w, "bad_request", "offsets beyond the tokens");
    w = wire_writer_new("score");
    wire_put_vec(w, "tokens", WIRE_F32, (float[]){1, 2}, 2);
    wire_put_vec(w, "offsets", WIRE_I64, off2, 2);
    finish_and_expect(s, w, "bad_request", "float tokens");
    w = wire_writer_new("score");
    finish_and_expect(s, w, "bad_request", "score without sequences");
    /* text that is not UTF-8 is refused, naming the field and the string */
    w = wire_writer_new("score");
    wire_put_str_array(w, "texts", (const char *[]){"fine", "caf\xe9 latin-1"}, NULL, 2);
    finish_and_expect_msg(s, w, "bad_request", "\"texts\": string 1 is not valid UTF-8", "texts in latin-1");
    w = wire_writer_new("score");
    wire_put_str_array(w, "prompts", (const char *[]){"ok", "ok"}, NULL, 2);
    wire_put_str_array(w, "responses", (const char *[]){"good", "a surrogate \xed\xa0\x80"}, NULL, 2);
    finish_and_expect_msg(s, w, "bad_request", "\"responses\": string 1 is not valid UTF-8", "a UTF-16 surrogate in a response");
    w = wire_writer_new("score");
    wire_put_str_array(w, "prompts", (const char *[]){"overlong \xc0\xaf"}, NULL, 1);
    wire_put_str_array(w, "responses", (const char *[]){"x"}, NULL, 1);
    finish_and_expect_msg(s, w, "bad_request", "\"prompts\": string 0 is not valid UTF-8", "an overlong form in a prompt");
    w = wire_writer_new("score");
    wire_put_str_array(w, "texts", (const char *[]){"cut short \xe2\x9c"}, NULL, 1);
    finish_and_expect_msg(s, w, "bad_request", "string 0 is not valid UTF-8 (byte 0xe2 at offset 10)", "a sequence cut short");
    w = wire_writer_new("score");
    wire_put_str_array(w, "texts", (const char *[]){"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"}, NULL, 1);
    WireMsg *um = call_raw(s, w, 10000);
    char uwhy[600];
    CHECK(um && !strcmp(wire_op(um), "scores"), "UTF-8 of 2, 3 and 4 bytes (up to U+10FFFF) is scored (%s)", reply_text(um, uwhy, sizeof uwhy));
    wire_msg_free(um);
    /* 1.5 MiB against --max-message-mb 1 */
    size_t big = 3 << 19;
    uint8_t *huge = calloc(1, big);
    expect_error_msg(s, huge, big, "too_large", "--max-message-mb 1", "oversized message (the reply names the real flag)");
    free(huge);
    /* still serving */
    int idx[2] = {3, 5};
    send_score(s, 42, idx, 2);
    WireMsg *m = recv_reply(s, 10000);
    char why[256] = "";
    uint64_t id = 0;
    CHECK(m && !wire_get_uint(m, "id", &id) && id == 42 && scores_match(m, idx, 2, why, sizeof why),
          "a valid request after the bad ones is served: %s", why);
    wire_msg_free(m);
    zmq_close(s);
}

/* ------------------------------------------------------------ bounded calls */

/* A client call run on its own thread (and its own ZeroMQ context), so a
 * call that never returns fails the check instead of hanging the test. */
typedef struct {
    const char *ep;
    const RmCurveClient *curve;
    int timeout_ms, n_calls, settle_ms;
    int failed_in_time; /* calls that returned -1 */
    char err[256];
    volatile int done;
} CallArg;

static void *call_thread(void *p) {
    CallArg *a = p;
    RmClient *c = rm_client_connect(NULL, a->ep, a->curve, a->timeout_ms);
    if (c && a->settle_ms) usleep(a->settle_ms * 1000); /* let a refused handshake finish first */
    int32_t tok[3] = {1, 2, 3};
    DsSeq q = {tok, 3, NULL, 0};
    float sc;
    for (int i = 0; c && i < a->n_calls; i++) {
        if (rm_client_score_seqs(c, &q, 1, &sc) == -1) a->failed_in_time++;
        snprintf(a->err, sizeof a->err, "%s", align_error());
    }
    rm_client_close(c);
    a->done = 1;
    return NULL;
}

/* Run the calls; 1 when they all returned within limit_s. A thread still
 * stuck is left behind (detached): the process exits soon anyway. */
static int bounded_calls(CallArg *a, double limit_s) {
    pthread_t t;
    pthread_create(&t, NULL, call_thread, a);
    double t0 = align_now();
    while (!a->done && align_now() - t0 < limit_s) usleep(10000);
    if (!a->done) {
        pthread_detach(t);
        return 0;
    }
    pthread_join(t, NULL);
    return 1;
}

/* ------------------------------------------------------------ one request vs the others */

/* The server runs with --max-batch-tokens 64. */
static void test_one_request(const char *ep) {
    void *s = dealer(ep);
    /* 65 tokens: one past the fixture's 64 positions (max_position_embeddings) */
    int32_t t65[65];
    for (int i = 0; i < 65; i++) t65[i] = i % vocab;
    int64_t off65[2] = {0, 65};
    WireWriter *w = wire_writer_new("score");
    wire_put_vec(w, "tokens", WIRE_I32, t65, 65);
    wire_put_vec(w, "offsets", WIRE_I64, off65, 2);
    WireMsg *m = call_raw(s, w, 10000);
    CHECK(is_error(m, "too_long", "64"), "a sequence over the model's 64 positions gets error too_long, not scores (%s)",
          m ? wire_op(m) : "no reply");
    wire_msg_free(m);

    /* a body announcing attachment frames that are not there */
    int idx[2] = {3, 5};
    int64_t off2[3] = {0, pool_len[3], pool_len[3] + pool_len[5]};
    int32_t tok2[128];
    memcpy(tok2, pool_tok[3], pool_len[3] * sizeof(int32_t));
    memcpy(tok2 + pool_len[3], pool_tok[5], pool_len[5] * sizeof(int32_t));
    w = wire_writer_new("score");
    wire_put_uint(w, "attachments", 2);
    wire_put_vec(w, "tokens", WIRE_I32, tok2, (size_t)off2[2]);
    wire_put_vec(w, "offsets", WIRE_I64, off2, 3);
    m = call_raw(s, w, 10000);
    CHECK(is_error(m, "bad_request", "attachments"), "a body announcing 2 missing attachment frames gets bad_request (%s)",
          m ? wire_op(m) : "no reply");
    wire_msg_free(m);
    /* one that is there: scored, and the reply does not carry it back */
    w = wire_writer_new("score");
    wire_put_uint(w, "id", 77);
    wire_put_uint(w, "attachments", 1);
    wire_put_vec(w, "tokens", WIRE_I32, tok2, (size_t)off2[2]);
    wire_put_vec(w, "offsets", WIRE_I64, off2, 3);
    void *buf;
    size_t len;
    wire_finish(w, &buf, &len);
    zmq_send(s, "raw", 3, ZMQ_SNDMORE);
    zmq_send(s, buf, len, 0);
    free(buf);
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    int frames = 0;
    m = NULL;
    if (zmq_poll(&it, 1, 10000) == 1) {
        WireFrames f;
        if (!wire_recv(s, &f, 1 << 26, ZMQ_DONTWAIT)) {
            frames = f.n_env + 1;
            m = f.body ? wire_parse(f.body, f.body_len, NULL) : NULL;
            wire_frames_free(&f);
        }
    }
    char why[256] = "no reply";
    CHECK(m && frames == 1 && scores_match(m, idx, 2, why, sizeof why),
          "a body with its one attachment is scored and answered in one frame (%d frames; %s)", frames, why);
    wire_msg_free(m);

    /* a long request (every pool sequence 40 times: about 850 forwards of
     * 64 tokens), then short ones from other clients once the server has
     * read it */
    enum { REPS = 40, N_SHORT = 4 };
    int n_long = REPS * N_POOL;
    int32_t *lt = malloc((size_t)n_long * 64 * sizeof(int32_t));
    int64_t *lo = malloc((size_t)(n_long + 1) * sizeof(int64_t));
    lo[0] = 0;
    for (int i = 0; i < n_long; i++) {
        memcpy(lt + lo[i], pool_tok[i % N_POOL], pool_len[i % N_POOL] * sizeof(int32_t));
        lo[i + 1] = lo[i] + pool_len[i % N_POOL];
    }
    w = wire_writer_new("score");
    wire_put_uint(w, "id", 1);
    wire_put_vec(w, "tokens", WIRE_I32, lt, (size_t)lo[n_long]);
    wire_put_vec(w, "offsets", WIRE_I64, lo, n_long + 1);
    wire_finish(w, &buf, &len);
    free(lt), free(lo);
    void *shorts[N_SHORT];
    for (int k = 0; k < N_SHORT; k++) {
        shorts[k] = dealer(ep);
        /* connected before the long request goes, so nothing waits on a handshake */
        int one[1] = {k};
        send_score(shorts[k], 100 + k, one, 1);
        wire_msg_free(recv_reply(shorts[k], 10000));
    }
    double t0 = align_now(), t_long = -1, t_short_last = -1;
    int short_ok = 0, long_ok = 0;
    wire_send(s, NULL, buf, len, 0);
    free(buf);
    /* an info right behind it on the same connection: its reply means the
     * long request has been read (a connection keeps its order) */
    w = wire_writer_new("info");
    wire_finish(w, &buf, &len);
    wire_send(s, NULL, buf, len, 0);
    free(buf);
    for (int got_info = 0; !got_info && align_now() - t0 < 60;) {
        WireMsg *r = recv_reply(s, 1000);
        uint64_t id = 0;
        if (r && !strcmp(wire_op(r), "info")) got_info = 1;
        else if (r && !strcmp(wire_op(r), "scores") && !wire_get_uint(r, "id", &id) && id == 1) long_ok = 1, t_long = align_now() - t0;
        wire_msg_free(r);
    }
    for (int k = 0; k < N_SHORT; k++) {
        int one[1] = {k};
        send_score(shorts[k], 200 + k, one, 1);
    }
    zmq_pollitem_t items[1 + N_SHORT];
    items[0] = (zmq_pollitem_t){s, 0, ZMQ_POLLIN, 0};
    for (int k = 0; k < N_SHORT; k++) items[1 + k] = (zmq_pollitem_t){shorts[k], 0, ZMQ_POLLIN, 0};
    while ((!long_ok || short_ok < N_SHORT) && align_now() - t0 < 60) {
        if (zmq_poll(items, 1 + N_SHORT, 1000) <= 0) continue;
        for (int k = 0; k <= N_SHORT; k++) {
            if (!(items[k].revents & ZMQ_POLLIN)) continue;
            WireMsg *r = recv_reply(items[k].socket, 0);
            uint64_t id = 0;
            int ok = r && !strcmp(wire_op(r), "scores") && !wire_get_uint(r, "id", &id);
            if (ok && k == 0 && id == 1) long_ok = 1, t_long = align_now() - t0;
            if (ok && k > 0 && id == (uint64_t)(199 + k)) short_ok++, t_short_last = align_now() - t0;
            wire_msg_free(r);
        }
    }
    printf("long request of %d sequences answered after %.3f s; %d short requests sent after it, the last answered after %.3f s\n",
           n_long, t_long, N_SHORT, t_short_last);
    CHECK(long_ok && short_ok == N_SHORT, "the long request and the short ones are all answered (%d, %d)", long_ok, short_ok);
    CHECK(t_short_last >= 0 && t_short_last < t_long, "short requests sent after a long one are answered before it (%.3f s vs %.3f s)",
          t_short_last, t_long);
    for (int k = 0; k < N_SHORT; k++) zmq_close(shorts[k]);
    zmq_close(s);
}

/* ------------------------------------------------------------ HTTP */

/* A TCP connection to 127.0.0.1:port from source address src (any
 * 127.x.y.z works on loopback), not waiting for the handshake. */
static int tcp_open(int port, const char *src) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One HTTP exchange (the request sent as given, then read until the server
 * closes): the status code, or -1 when none came within timeout_ms. The
 * response (headers and body) goes to resp. */
static int http_raw(int port, const char *src, const char *req, size_t req_len, int timeout_ms, char *resp, size_t respn) {
    int fd = tcp_open(port, src);
    size_t got = 0, sent = 0;
    resp[0] = 0;
    double deadline = align_now() + timeout_ms / 1000.0;
    while (fd >= 0 && align_now() < deadline) {
        struct pollfd p = {fd, (short)(POLLIN | (sent < req_len ? POLLOUT : 0)), 0};
        if (poll(&p, 1, 50) <= 0) continue;
        if ((p.revents & POLLOUT) && sent < req_len) {
            ssize_t n = send(fd, req + sent, req_len - sent, MSG_NOSIGNAL);
            if (n > 0) sent += (size_t)n;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, resp + got, respn - 1 - got, 0);
            if (n <= 0) break;
            got += (size_t)n;
            resp[got] = 0;
        }
    }
    if (fd >= 0) close(fd);
    int status = -1;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) status = -1;
    return status;
}

typedef struct {
    int port;
    const char *req;
    int timeout_ms;
    char *resp;
    size_t respn;
    int status;
} HttpRawArg;

static void *http_raw_thread(void *p) {
    HttpRawArg *a = p;
    a->status = http_raw(a->port, "127.0.0.4", a->req, strlen(a->req), a->timeout_ms, a->resp, a->respn);
    return NULL;
}

static int http_post(int port, const char *src, const char *body, int timeout_ms, char *resp, size_t respn) {
    char req[8192];
    int n = snprintf(req, sizeof req,
                     "POST /get_reward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     strlen(body), body);
    return http_raw(port, src, req, (size_t)n, timeout_ms, resp, respn);
}

/* The list `key` of a JSON object as n floats; 0 when it is not one. */
static int json_floats(const cJSON *o, const char *key, float *out, int n) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key), *v;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) return 0;
    int i = 0;
    cJSON_ArrayForEach(v, a) {
        if (!cJSON_IsNumber(v)) return 0;
        out[i++] = (float)v->valuedouble;
    }
    return 1;
}

/* OpenRLHF's reply shape: {"rewards", "scores", "extra_logs": {"raw_score"}},
 * one entry per query; with no --normalize the three lists are the ZeroMQ
 * path's scores for the same texts. */
static void test_http_reply(int port, const char *ep) {
    const char *texts[] = {"hello there", "bye"};
    char resp[8192];
    int st = http_post(port, "127.0.0.2", "{\"query\": [\"hello there\", \"bye\"], \"prompts\": [\"\", \"\"]}", 10000,
                       resp, sizeof resp);
    const char *body = strstr(resp, "\r\n\r\n");
    cJSON *o = st == 200 && body ? cJSON_Parse(body + 4) : NULL;
    float rew[2] = {0}, sc[2] = {0}, raw[2] = {0}, zq[2] = {0};
    int have = json_floats(o, "rewards", rew, 2), have_sc = json_floats(o, "scores", sc, 2);
    int have_raw = json_floats(cJSON_GetObjectItemCaseSensitive(o, "extra_logs"), "raw_score", raw, 2);
    CHECK(have && have_sc && have_raw, "HTTP: the reply has rewards, scores and extra_logs.raw_score, 2 floats each (status %d: %.300s)",
          st, body ? body : resp);
    cJSON_Delete(o);
    void *d = dealer(ep);
    WireWriter *w = wire_writer_new("score");
    wire_put_str_array(w, "texts", texts, NULL, 2);
    WireMsg *m = call_raw(d, w, 20000);
    WireArray a = {0};
    int zok = m && !wire_get_array(m, "scores", WIRE_F32, NULL, &a) && a.numel == 2;
    if (zok) memcpy(zq, a.data, sizeof zq);
    free(a.data);
    wire_msg_free(m);
    zmq_close(d);
    int same = zok;
    for (int i = 0; i < 2; i++)
        same &= fabsf(sc[i] - zq[i]) <= 1e-5f * fabsf(zq[i]) + 1e-5f && rew[i] == sc[i] && raw[i] == sc[i];
    CHECK(same, "HTTP: scores equal the ZeroMQ path's (%.7g %.7g vs %.7g %.7g), and rewards and raw_score equal them without --normalize",
          sc[0], sc[1], zq[0], zq[1]);
}

static void test_http(int port) {
    char resp[8192];
    int st = http_post(port, "127.0.0.2", "{\"query\": [\"hello there\"]}", 10000, resp, sizeof resp);
    CHECK(st == 200 && strstr(resp, "\"rewards\""), "HTTP: a plain request is served (status %d)", st);

    /* 500 idle connections from one address, then a request from another */
    enum { N_IDLE = 500 };
    int idle[N_IDLE], n_idle = 0;
    for (int i = 0; i < N_IDLE; i++)
        if ((idle[n_idle] = tcp_open(port, "127.0.0.3")) >= 0) n_idle++;
    usleep(500000);
    double t0 = align_now();
    st = http_post(port, "127.0.0.2", "{\"query\": [\"hello there\"]}", 10000, resp, sizeof resp);
    CHECK(st == 200, "HTTP: with %d idle connections open from one address, a request from another is served (status %d after %.1f s)",
          n_idle, st, align_now() - t0);
    for (int i = 0; i < n_idle; i++) close(idle[i]);

    /* an announced body far over the limit: 413 now, not a wait for 10 GB */
    const char *huge = "POST /get_reward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       "Content-Length: 10000000000\r\n\r\n{\"query\"";
    t0 = align_now();
    st = http_raw(port, "127.0.0.2", huge, strlen(huge), 5000, resp, sizeof resp);
    CHECK(st == 413 && strstr(resp, "\"error\""), "HTTP: Content-Length 10000000000 gets 413 with a JSON error (status %d after %.1f s)",
          st, align_now() - t0);

    /* a request line that is not HTTP: 400 at once, not a silent close */
    t0 = align_now();
    st = http_raw(port, "127.0.0.2", "garbage\r\n\r\n", strlen("garbage\r\n\r\n"), 5000, resp, sizeof resp);
    CHECK(st == 400 && strstr(resp, "not an HTTP request") && align_now() - t0 < 1.5,
          "HTTP: the request line \"garbage\" gets 400 with a JSON error at once (status %d after %.1f s: %s)", st,
          align_now() - t0, resp);
    const char *get = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    st = http_raw(port, "127.0.0.2", get, strlen(get), 5000, resp, sizeof resp);
    CHECK(st == 404, "HTTP: a well-formed request for another path still gets libmicrohttpd's handling: 404 (status %d)", st);

    /* at the idle timeout (2 s): a body shorter than its Content-Length, and
     * a request line that never ends, each get 408, not a silent close (run
     * side by side, so the test waits once) */
    const char *shortb = "POST /get_reward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         "Content-Length: 100\r\n\r\n{\"query\"";
    char resp2[8192];
    int st2 = -1;
    t0 = align_now();
    HttpRawArg ha = {port, "garbage without an end", 6000, resp2, sizeof resp2, -1};
    pthread_t ht;
    pthread_create(&ht, NULL, http_raw_thread, &ha);
    st = http_raw(port, "127.0.0.2", shortb, strlen(shortb), 6000, resp, sizeof resp);
    double t_short = align_now() - t0;
    pthread_join(ht, NULL);
    st2 = ha.status;
    double t_both = align_now() - t0;
    CHECK(st == 408 && strstr(resp, "--http-idle-timeout 2") && strstr(resp, "8 of 100 bytes") && t_short < 2 + 1.5,
          "HTTP: a body 92 bytes short of its Content-Length gets 408 naming --http-idle-timeout within it (status %d after %.1f s: %s)",
          st, t_short, resp);
    CHECK(st2 == 408 && strstr(resp2, "--http-idle-timeout 2") && t_both < 2 + 1.5,
          "HTTP: a request line that never ends gets 408 naming --http-idle-timeout within it (status %d, %.1f s: %s)", st2,
          t_both, resp2);

    /* a text over the model's positions */
    char body[4096] = "{\"query\": [\"";
    for (int i = 0; i < 100; i++) strcat(body, "hello there ");
    strcat(body, "\"]}");
    st = http_post(port, "127.0.0.2", body, 10000, resp, sizeof resp);
    CHECK(st == 413 && strstr(resp, "\"error\"") && strstr(resp, "64"),
          "HTTP: a text longer than the model's 64 positions gets 413 with a JSON error (status %d)", st);

    /* NUL inside a text: refused, not scored up to the NUL */
    st = http_post(port, "127.0.0.2", "{\"query\": [\"hello\\u0000 there\"]}", 10000, resp, sizeof resp);
    CHECK(st == 400 && strstr(resp, "NUL"), "HTTP: a NUL inside a query text gets 400 (status %d)", st);
    /* bytes that are not UTF-8 (cJSON passes them through) */
    st = http_post(port, "127.0.0.2", "{\"query\": [\"fine\", \"caf\xe9\"]}", 10000, resp, sizeof resp);
    CHECK(st == 400 && strstr(resp, "\\\"query\\\": string 1 is not valid UTF-8"),
          "HTTP: a query text that is not UTF-8 gets 400 naming query and the string (status %d: %s)", st, resp);
    /* an escaped backslash followed by u0000 is text, not a NUL */
    st = http_post(port, "127.0.0.2", "{\"query\": [\"a\\\\u0000\"]}", 10000, resp, sizeof resp);
    CHECK(st == 200, "HTTP: the text \\u0000 (backslash, u0000) is scored (status %d)", st);
}

/* The HTTP port the server announced on stderr (log), or -1. */
static int http_port_from_log(const char *log) {
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(log, "r");
        char line[512];
        int port = -1;
        while (f && fgets(line, sizeof line, f)) {
            char *p = strstr(line, "http://127.0.0.1:");
            if (p) port = atoi(p + strlen("http://127.0.0.1:"));
        }
        if (f) fclose(f);
        if (port > 0) return port;
        usleep(50000);
    }
    return -1;
}

/* ------------------------------------------------------------ main */

static int make_reward_model(void) {
    ModelBundle b;
    if (model_load_any(ALIGN_TEST_DIR "/fixtures/hf_tiny_qwen2", &backend_cpu, MODEL_LOAD_TOKENIZER, &b)) return -1;
    Model *rm;
    if (rm_from_base(b.model, 7, &rm)) return -1;
    model_free(b.model);
    b.model = rm;
    ckpt_extras_set(&b.extras.chat_template, "chatml");
    int rc = model_save_any(ckpt, &b);
    vocab = rm->cfg.vocab_size;
    /* reference scores, one sequence per forward */
    uint64_t x = 12345;
    for (int i = 0; i < N_POOL && !rc; i++) {
        pool_len[i] = 3 + i % 37;
        pool_tok[i] = malloc(pool_len[i] * sizeof(int32_t));
        for (int k = 0; k < pool_len[i]; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            pool_tok[i][k] = (int32_t)(x % vocab);
        }
        DsSeq q = {pool_tok[i], pool_len[i], NULL, 0};
        rc = rm_score_seqs(rm, &q, 1, 4096, &ref_score[i]);
    }
    model_bundle_free(&b);
    return rc;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/align_rs_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    snprintf(ckpt, sizeof ckpt, "%s/rm.ckpt", dir);
    CHECK(make_reward_model() == 0, "reward model: %s", align_error());
    ctx = zmq_ctx_new();
    char ep[300], log[300];
    snprintf(ep, sizeof ep, "ipc://%s/rm.sock", dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    const char *extra[] = {"--max-message-mb", "1", NULL};
    pid_t pid = start_server(ep, extra, log);

    /* info, and remote == in-process */
    RmClient *c = rm_client_connect(ctx, ep, NULL, 20000);
    WireMsg *m = NULL;
    CHECK(c && rm_client_call(c, wire_writer_new("info"), &m) == 0, "info: %s", align_error());
    const char *svc = "";
    size_t sl = 0;
    if (m) wire_get_str(m, "service", &svc, &sl);
    CHECK(m && sl == 6 && !memcmp(svc, "reward", 6), "info names the service");
    wire_msg_free(m);
    DsSeq seqs[N_POOL];
    float got[N_POOL];
    for (int i = 0; i < N_POOL; i++) seqs[i] = (DsSeq){pool_tok[i], pool_len[i] / 2, pool_tok[i] + pool_len[i] / 2, pool_len[i] - pool_len[i] / 2};
    CHECK(c && rm_client_score_seqs(c, seqs, N_POOL, got) == 0, "score %d sequences: %s", N_POOL, align_error());
    int same = 1;
    for (int i = 0; i < N_POOL; i++) same &= fabsf(got[i] - ref_score[i]) <= 1e-5f * fabsf(ref_score[i]) + 1e-5f;
    CHECK(same, "remote scores equal in-process scores");
    /* texts with a prompt/response split render through the template like rm_train's records */
    ModelBundle b;
    model_load_any(ckpt, &backend_cpu, MODEL_LOAD_TOKENIZER, &b);
    DsOptions opt;
    ds_options_default(&opt);
    opt.kind = DS_SFT;
    opt.chat_template = CHAT_TEMPLATE_CHATML;
    DsExample ex;
    const char *rec = "{\"prompt\": \"how was it\", \"completion\": \"great\"}";
    float local = 0, remote = -1;
    if (ds_parse_record(rec, strlen(rec), "t", b.tok, &opt, &ex) == 1) {
        DsSeq q = ds_example_seq(&ex, 0);
        rm_score_seqs(b.model, &q, 1, 4096, &local);
        ds_example_free(&ex);
    }
    WireWriter *w = wire_writer_new("score");
    wire_put_str_array(w, "prompts", (const char *[]){"how was it"}, NULL, 1);
    wire_put_str_array(w, "responses", (const char *[]){"great"}, NULL, 1);
    if (c && rm_client_call(c, w, &m) == 0) {
        WireArray a;
        if (!wire_get_array(m, "scores", WIRE_F32, NULL, &a)) remote = ((float *)a.data)[0], free(a.data);
        wire_msg_free(m);
    }
    CHECK(fabsf(local - remote) <= 1e-5f * fabsf(local) + 1e-5f, "prompt/response texts: remote %.9g, local %.9g", remote, local);
    model_bundle_free(&b);
    rm_client_close(c);

    /* load with a vanishing client alongside */
    double t0 = align_now();
    pthread_t th[N_THREADS], van;
    LoadArg args[N_THREADS];
    vanish_stop = 0;
    pthread_create(&van, NULL, vanish_thread, ep);
    for (int t = 0; t < N_THREADS; t++) {
        args[t] = (LoadArg){.ep = ep, .t = t};
        pthread_create(&th[t], NULL, load_thread, &args[t]);
    }
    int answered = 0, wrong = 0, extra_replies = 0;
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(th[t], NULL);
        answered += args[t].answered, wrong += args[t].wrong, extra_replies += args[t].extra;
        if (args[t].why[0]) fprintf(stderr, "thread %d: %s\n", t, args[t].why);
    }
    vanish_stop = 1;
    pthread_join(van, NULL);
    printf("load: %d requests from %d clients answered in %.2f s\n", answered, N_THREADS, align_now() - t0);
    CHECK(answered == N_THREADS * N_REQ, "every request answered with the right scores (%d of %d)", answered, N_THREADS * N_REQ);
    CHECK(wrong == 0, "no reply went to the wrong request (%d wrong)", wrong);
    CHECK(extra_replies == 0, "no request answered twice (%d extra)", extra_replies);

    test_malformed(ep);
    int st = stop_server(pid);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "server exits 0 on SIGTERM (status %d)", st);

    /* SIGTERM with requests in flight: a fresh server, heavy requests */
    snprintf(ep, sizeof ep, "ipc://%s/rm2.sock", dir);
    /* a limit no loaded machine reaches: this checks that all is answered (the limit: test_drain_under_load) */
    const char *x2[] = {"--drain-max-ms", "120000", NULL};
    pid = start_server(ep, x2, log);
    void *probe = dealer(ep);
    int one[1] = {0};
    send_score(probe, 1, one, 1);
    WireMsg *pm = recv_reply(probe, 20000); /* the server is up */
    CHECK(pm != NULL, "second server answers");
    wire_msg_free(pm);
    zmq_close(probe);
    void *socks[8];
    int all[N_POOL];
    for (int i = 0; i < N_POOL; i++) all[i] = i;
    for (int k = 0; k < 8; k++) { /* connected first: a request waiting on its handshake has not been sent */
        socks[k] = dealer(ep);
        WireMsg *im = call_raw(socks[k], wire_writer_new("info"), 20000);
        wire_msg_free(im);
    }
    for (int k = 0; k < 8; k++)
        for (int r = 0; r < 4; r++) send_score(socks[k], (uint64_t)k * 10 + r, all, N_POOL);
    usleep(20000);
    kill(pid, SIGTERM);
    int in_flight_answered = 0;
    char last_why[600] = "";
    for (int k = 0; k < 8; k++)
        for (int r = 0; r < 4; r++) {
            WireMsg *rm = recv_reply(socks[k], 20000);
            char why[600] = "";
            uint64_t id;
            if (rm && !wire_get_uint(rm, "id", &id) && id == (uint64_t)k * 10 + r && scores_match(rm, all, N_POOL, why, sizeof why))
                in_flight_answered++;
            else
                snprintf(last_why, sizeof last_why, "request %d: %s", k * 10 + r, why[0] ? why : reply_text(rm, why, sizeof why));
            wire_msg_free(rm);
        }
    for (int k = 0; k < 8; k++) zmq_close(socks[k]);
    CHECK(in_flight_answered == 32, "SIGTERM: all 32 requests in flight answered (%d; %s)", in_flight_answered, last_why);
    st = stop_server(pid);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM with work in flight exits 0 (status %d)", st);

    double t_drain = align_now();
    test_drain_under_load();
    printf("drain under load: the check took %.2f s\n", align_now() - t_drain);

    /* one request against the others, and HTTP */
    {
        char log4[300];
        snprintf(ep, sizeof ep, "ipc://%s/rm4.sock", dir);
        snprintf(log4, sizeof log4, "%s/server4.log", dir);
        /* --drain-quiet-ms over --drain-max-ms: the limit bounds the intake window too */
        const char *x4[] = {"--max-batch-tokens", "64", "--http", "0", "--http-idle-timeout", "2",
                            "--drain-quiet-ms", "20000", "--drain-max-ms", "200", NULL};
        pid = start_server(ep, x4, log4);
        test_one_request(ep);
        int port = http_port_from_log(log4);
        CHECK(port > 0, "the HTTP port is announced");
        if (port > 0) test_http_reply(port, ep);
        if (port > 0) test_http(port);
        double t_stop = align_now();
        st = stop_server(pid); /* SIGKILL after 10 s */
        t_stop = align_now() - t_stop;
        CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && t_stop < 8,
              "the fourth server exits 0, its --drain-quiet-ms 20000 cut to --drain-max-ms 200 (exit after %.1f s, status %d)",
              t_stop, st);
    }

    /* a server that is not there: every call fails within its timeout, also
     * once more requests were sent than a socket queues (1000) */
    {
        char nowhere[320];
        snprintf(nowhere, sizeof nowhere, "ipc://%s/nobody.sock", dir);
        CallArg down = {.ep = nowhere, .timeout_ms = 2, .n_calls = 1100};
        CHECK(bounded_calls(&down, 30) && down.failed_in_time == 1100,
              "no server: all 1100 calls fail within their timeout (%d did; %s)", down.failed_in_time,
              down.done ? down.err : "still blocked after 30 s");
    }

    /* CURVE with an allow-list */
    if (zmq_has("curve")) {
        char spub[41], ssec[41], apub[41], asec[41], bpub[41], bsec[41], path[3][320];
        zmq_curve_keypair(spub, ssec);
        zmq_curve_keypair(apub, asec);
        zmq_curve_keypair(bpub, bsec);
        const char *content[3] = {ssec, apub, asec};
        const char *names[3] = {"server.secret", "allow.txt", "a.secret"};
        for (int i = 0; i < 3; i++) {
            snprintf(path[i], sizeof path[i], "%s/%s", dir, names[i]);
            FILE *f = fopen(path[i], "w");
            fprintf(f, "# key\n%s\n", content[i]);
            fclose(f);
        }
        char bpath[320];
        snprintf(bpath, sizeof bpath, "%s/b.secret", dir);
        FILE *f = fopen(bpath, "w");
        fprintf(f, "%s\n", bsec);
        fclose(f);
        snprintf(ep, sizeof ep, "ipc://%s/rm3.sock", dir);
        const char *cx[] = {"--curve-secret-file", path[0], "--curve-allow", path[1], NULL};
        pid = start_server(ep, cx, log);
        RmCurveClient ca = {spub, path[2]}, cb = {spub, bpath};
        RmClient *A = rm_client_connect(ctx, ep, &ca, 20000), *B = rm_client_connect(ctx, ep, &cb, 1500);
        float sa = 0, sb = 0;
        DsSeq q = {pool_tok[0], pool_len[0], NULL, 0};
        CHECK(A && rm_client_score_seqs(A, &q, 1, &sa) == 0 && fabsf(sa - ref_score[0]) < 1e-5f + 1e-5f * fabsf(sa),
              "CURVE: a listed client is served (%s)", align_error());
        CHECK(B && rm_client_score_seqs(B, &q, 1, &sb) == -1 && strstr(align_error(), "no reply"),
              "CURVE: an unlisted client is not served");
        /* the same unlisted client once its handshake has been refused: the
         * connection is gone, and a send must not wait for it forever */
        CallArg late = {.ep = ep, .curve = &cb, .timeout_ms = 1500, .n_calls = 1, .settle_ms = 3000};
        CHECK(bounded_calls(&late, 15) && late.failed_in_time == 1 && strstr(late.err, "no reply"),
              "CURVE: an unlisted client calling after its refused handshake fails within its timeout (%s)",
              late.done ? late.err : "still blocked after 15 s");
        rm_client_close(A);
        rm_client_close(B);
        st = stop_server(pid);
        CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "CURVE server exits 0 (status %d)", st);
    } else {
        printf("libzmq without CURVE: CURVE test skipped\n");
    }
    zmq_ctx_term(ctx);
    for (int i = 0; i < N_POOL; i++) free(pool_tok[i]);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return test_summary();
}
