/* ppo_run: PPO as separate processes over ZeroMQ (docs/DESIGN.md, "Processes
 * and the wire"; the ops are in docs/PROTOCOL.md, "PPO workers").
 *
 *   ppo_run --policy sft.ckpt --reward rm.ckpt --prompts prompts.jsonl --out ppo.ckpt
 *
 * Processes. ppo_run owns the loop, the prompt stream and the checkpoints;
 * it starts the workers next to its own binary (/proc/self/exe) on ipc://
 * endpoints in a private temp dir, or connects to ones started by hand
 * (--policy-connect, --ref-connect, --reward-connect, --rollout-connect):
 *   ppo_policy      actor + critic, their optimizers, the PPO update; pushes
 *                   new weights straight to the rollout workers
 *   ppo_ref         the frozen starting policy: reference log-probs
 *   reward_server   the reward model: scores
 *   rollout_worker  xN: a copy of the policy; samples completions
 * One DEALER per worker; every request carries an id and gets one reply.
 *
 * One iteration (--batch-size prompts, --n samples each):
 *   generate   prompt chunks to the rollout workers in parallel; sample j of
 *              the prompt at GLOBAL stream position g is seeded by (seed, g,
 *              j), so the draw never depends on the split or on a resume
 *   score      in parallel: reference log-probs, reward scores (at the last
 *              real token; prompt + response, EOS included when sampled),
 *              critic values (the old values)
 *   math       per-token KL, processed scores (missing-EOS penalty, clip),
 *              advantages (GAE with the critic, or RLOO/GRPO with none), TRL's
 *              rollout metrics (ppo_math.h)
 *   update     ppo-epochs of minibatch steps on the policy process
 *   sync       the policy pushes the new weights to every rollout worker:
 *              with LoRA (--lora-rank, --lora-adapter) the adapters alone,
 *              since every worker attached them to the same frozen base it
 *              loaded from --policy; else every parameter
 *
 * Faults. ppo_run pings every worker each --heartbeat-ms (workers answer
 * while they compute) and watches its children's exit: a worker that exits
 * or misses --dead-after pings in a row is dead. A dead worker it started is
 * killed, started again, set up again (a rollout worker also gets the
 * current weights), and its request is sent again; a dead rollout worker it
 * did not start is dropped and its prompts go to another. The policy process
 * holds the training state: if it dies, the run stops and says which
 * checkpoint to --resume from. ppo_run itself killed: --resume the newest
 * checkpoint; the prompt stream, the sampling seeds, the minibatch orders,
 * the KL coefficient and the running score moments all continue as in an
 * unbroken run. Ctrl-C or SIGTERM: ppo_run finishes the iteration, saves
 * the checkpoint to resume from and exits 130; the workers it starts live
 * in their own process groups, so a terminal's Ctrl-C reaches ppo_run
 * alone. Their sockets are in /tmp/ppo_run.<pid>.XXXXXX; a run killed with
 * SIGKILL leaves its folder, which the next start removes once that pid is
 * gone. A send to a worker waits at most --dead-after pings' time, then the
 * worker counts as dead. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "cli.h"
#include "curve.h"
#include "lora.h"
#include "metrics.h"
#include "model_load.h"
#include "ppo_math.h"
#include "reward_http.h"
#include "reward_terms.h"
#include "ppo_service.h"
#include "ppo_sync.h"
#include "safetensors.h"
#include "trainer.h"
#include "util.h"

#define PROG "ppo_run"
#define MAX_PEERS 67

typedef enum { ROLE_POLICY = 0, ROLE_REF, ROLE_REWARD, ROLE_ROLLOUT } Role;
static const char *ROLE_NAME[] = {"policy", "reference", "reward", "rollout"};

typedef struct {
    Role role;
    char name[32];
    char ep[512];
    int spawned;       /* 1: ppo_run started it and may restart it */
    pid_t pid;
    void *sock;
    void *monitor;     /* a worker started by hand: its socket's handshake failures */
    double last_seen, last_ping, born;
    int ever_seen;
    int gone;          /* an external rollout worker declared dead: not used again */
    int restarts;
    void *setup;       /* encoded setup request (NULL: reward_server needs none) */
    size_t setup_len;
} Peer;

typedef struct {
    int peer;
    WireWriter *w;     /* until first sent */
    void *body;
    size_t len;
    uint64_t id;
    int sent, done;
    double t_sent, t_done;
    WireMsg *reply;
} Call;

static struct {
    void *ctx;
    char tmpdir[256];
    char bin_dir[PATH_MAX];
    Peer peer[MAX_PEERS];
    int n_peers;
    int policy, ref, reward, rollout0, n_rollout;
    int policy_ranks; /* > 1: the policy is started as mpirun -np N ppo_policy */
    char curve_server[41];      /* the hand-started workers' public key ("": no CURVE) */
    const char *curve_secret;   /* ppo_run's (and the policy's) secret key file */
    uint64_t next_id;
    double heartbeat_s;
    int dead_after;
    double startup_s;
    const char *reward_model;
    int max_restarts;
    int send_timeout_ms;
    int64_t weights_version;
    size_t sync_bytes; /* payload per rollout worker in the last sync */
    char last_ckpt[PATH_MAX];
    char *kept[64]; /* step checkpoints on disk, oldest first (--save-total-limit) */
    int n_kept;
} G;

/* ------------------------------------------------------------ processes */

static void kill_children(void) {
    for (int i = 0; i < G.n_peers; i++)
        if (G.peer[i].spawned && G.peer[i].pid > 0) kill(G.peer[i].pid, SIGTERM);
    double until = align_now() + 3;
    for (int i = 0; i < G.n_peers; i++) {
        Peer *p = &G.peer[i];
        if (!p->spawned || p->pid <= 0) continue;
        while (waitpid(p->pid, NULL, WNOHANG) == 0 && align_now() < until) usleep(10000);
        if (waitpid(p->pid, NULL, WNOHANG) == 0) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
        }
        p->pid = 0;
    }
    if (G.tmpdir[0]) {
        for (int i = 0; i < G.n_peers; i++)
            if (!strncmp(G.peer[i].ep, "ipc://", 6)) unlink(G.peer[i].ep + 6);
        rmdir(G.tmpdir);
        G.tmpdir[0] = 0;
    }
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    kill_children();
    exit(1);
}

static void spawn(Peer *p) {
    char prog[PATH_MAX];
    const char *name = p->role == ROLE_POLICY ? "ppo_policy" : p->role == ROLE_REF ? "ppo_ref"
                     : p->role == ROLE_REWARD ? "reward_server" : "rollout_worker";
    snprintf(prog, sizeof prog, "%s/%s", G.bin_dir, name);
    if (access(prog, X_OK)) die("cannot run %s (%s): build it next to ppo_run, or start it by hand and pass --%s-connect",
                                prog, strerror(errno), p->role == ROLE_REF ? "ref" : ROLE_NAME[p->role]);
    pid_t parent = getpid();
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* ppo_run killed: its workers go too */
        if (getppid() != parent) _exit(1);
        /* Out of the terminal's process group: Ctrl-C (SIGINT to the whole
         * group) is ppo_run's to handle, by saving and stopping its workers
         * itself; a worker killed by it would lose the run. */
        setpgid(0, 0);
        dup2(2, 1);
        if (p->role == ROLE_REWARD)
            execl(prog, prog, "--model", G.reward_model, "--bind", p->ep, "--batch-wait-ms", "1", "--max-message-mb",
                  "1024", "--drain-max-ms", "500", (char *)NULL);
        else if (p->role == ROLE_POLICY && G.policy_ranks > 1) {
            char np[16];
            snprintf(np, sizeof np, "%d", G.policy_ranks);
            execlp("mpirun", "mpirun", "-np", np, "--oversubscribe", prog, "--bind", p->ep, (char *)NULL);
            fprintf(stderr, PROG ": --policy-ranks %s: cannot run mpirun (%s): apt-get install openmpi-bin\n", np, strerror(errno));
            _exit(127);
        } else
            execl(prog, prog, "--bind", p->ep, (char *)NULL);
        fprintf(stderr, PROG ": cannot run %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here, so no Ctrl-C reaches it before it runs */
    p->pid = pid;
    fprintf(stderr, PROG ": started %s (pid %d) on %s\n", p->name, (int)pid, p->ep);
}

/* A worker started by hand whose handshake fails (a CURVE key it does not
 * accept, CURVE on one side only) would only look silent until
 * --startup-timeout: watch the socket's handshake events instead, so the
 * run stops at once with the reason. */
static void peer_monitor(Peer *p) {
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://ppo-run-monitor-%p", (void *)p);
    if (zmq_socket_monitor(p->sock, ep, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL))
        return; /* no monitor: the startup timeout still ends it */
    p->monitor = zmq_socket(G.ctx, ZMQ_PAIR);
    int linger = 0;
    zmq_setsockopt(p->monitor, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(p->monitor, ep)) {
        zmq_close(p->monitor);
        p->monitor = NULL;
    }
}

static void peer_check_handshake(const Peer *p) {
    if (!p->monitor) return;
    zmq_msg_t ev;
    zmq_msg_init(&ev);
    int got = zmq_msg_recv(&ev, p->monitor, ZMQ_DONTWAIT) >= 6;
    uint16_t event = 0;
    if (got) memcpy(&event, zmq_msg_data(&ev), sizeof event);
    zmq_msg_close(&ev);
    while (got) { /* the frame naming the endpoint */
        zmq_msg_init(&ev);
        int more = zmq_msg_recv(&ev, p->monitor, ZMQ_DONTWAIT) >= 0 && zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (!more) break;
    }
    if (!got) return;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        die("%s at %s refused ppo_run's CURVE key: add ppo_run's public key (the pair of --curve-secret-file) to its --curve-allow file",
            p->name, p->ep);
    if (G.curve_server[0])
        die("%s at %s: the CURVE handshake failed: is --curve-server-key the public key of its --curve-secret-file, "
            "and does it run with CURVE?", p->name, p->ep);
    die("%s at %s: the handshake failed: if it runs with --curve-secret-file, give ppo_run --curve-server-key and "
        "--curve-secret-file", p->name, p->ep);
}

static void peer_connect(Peer *p) {
    if (p->sock) zmq_close(p->sock);
    if (p->monitor) zmq_close(p->monitor);
    p->monitor = NULL;
    p->sock = zmq_socket(G.ctx, ZMQ_DEALER);
    int linger = 0, ivl = 50;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p->sock, ZMQ_SNDTIMEO, &G.send_timeout_ms, sizeof G.send_timeout_ms);
    zmq_setsockopt(p->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    if (!p->spawned && G.curve_server[0] && curve_client_apply_key(p->sock, G.curve_server, G.curve_secret))
        die("%s at %s: %s", p->name, p->ep, align_error());
    if (!p->spawned) peer_monitor(p);
    if (zmq_connect(p->sock, p->ep)) die("cannot connect to %s at %s: %s", p->name, p->ep, zmq_strerror(errno));
    p->born = p->last_seen = p->last_ping = align_now();
    p->ever_seen = 0;
}

static int add_peer(Role role, int index, const char *connect_ep) {
    if (G.n_peers >= MAX_PEERS) die("too many workers");
    Peer *p = &G.peer[G.n_peers];
    memset(p, 0, sizeof *p);
    p->role = role;
    if (role == ROLE_ROLLOUT) snprintf(p->name, sizeof p->name, "rollout worker %d", index);
    else snprintf(p->name, sizeof p->name, "%s process", ROLE_NAME[role]);
    if (connect_ep) {
        snprintf(p->ep, sizeof p->ep, "%s", connect_ep);
    } else {
        p->spawned = 1;
        if (role == ROLE_ROLLOUT) snprintf(p->ep, sizeof p->ep, "ipc://%s/rollout%d.sock", G.tmpdir, index);
        else snprintf(p->ep, sizeof p->ep, "ipc://%s/%s.sock", G.tmpdir, ROLE_NAME[role]);
        spawn(p);
    }
    peer_connect(p);
    return G.n_peers++;
}

/* ------------------------------------------------------------ calls */

static void call_init(Call *c, int peer, WireWriter *w) {
    memset(c, 0, sizeof *c);
    c->peer = peer;
    c->w = w;
}

static void call_free(Call *c) {
    free(c->body);
    wire_msg_free(c->reply);
    if (c->w) wire_writer_free(c->w);
    memset(c, 0, sizeof *c);
}

/* A send waits at most --dead-after pings' time (ZMQ_SNDTIMEO): a peer that
 * takes nothing in is dead, not a reason to hang the run. */
static int send_raw(Peer *p, const void *body, size_t len) {
    if (!wire_send(p->sock, NULL, body, len, 0)) return 0;
    if (errno == EAGAIN) return align_errorf("it took no message within %d ms", G.send_timeout_ms);
    return -1;
}

static void send_ping(Peer *p) {
    WireWriter *w = wire_writer_new("ping");
    wire_put_uint(w, "id", ++G.next_id);
    void *d;
    size_t l;
    if (!wire_finish(w, &d, &l)) {
        wire_send(p->sock, NULL, d, l, ZMQ_DONTWAIT);
        free(d);
    }
    p->last_ping = align_now();
}

static int run_calls(Call *calls, int n, int recovering);

/* Replies that arrived while a nested run_calls (a recovery) was reading:
 * they belong to the outer calls, which look here first. */
#define STASH_MAX 64
static struct {
    int peer;
    uint64_t id;
    WireMsg *m;
} stash[STASH_MAX];
static int n_stash;

static void stash_put(int peer, uint64_t id, WireMsg *m) {
    if (n_stash == STASH_MAX) { /* the oldest cannot be wanted any more */
        wire_msg_free(stash[0].m);
        memmove(stash, stash + 1, (STASH_MAX - 1) * sizeof stash[0]);
        n_stash--;
    }
    stash[n_stash].peer = peer, stash[n_stash].id = id, stash[n_stash].m = m;
    n_stash++;
}

static WireMsg *stash_take(int peer, uint64_t id) {
    for (int i = 0; i < n_stash; i++)
        if (stash[i].peer == peer && stash[i].id == id) {
            WireMsg *m = stash[i].m;
            memmove(stash + i, stash + i + 1, (size_t)(n_stash - i - 1) * sizeof stash[0]);
            n_stash--;
            return m;
        }
    return NULL;
}

/* A worker is dead: start it again (when ours) and set it up; for an
 * external rollout worker, drop it. Returns 0 when p is usable again. */
/* A "sync" request's rollout endpoints (peers idx[0..n)) and, for those
 * started by hand under CURVE, what the policy needs to reach them. */
static void put_sync_endpoints(WireWriter *w, const int *idx, int n) {
    const char *eps[MAX_PEERS];
    uint8_t curve[MAX_PEERS];
    int any = 0;
    for (int i = 0; i < n; i++) {
        eps[i] = G.peer[idx[i]].ep;
        curve[i] = !G.peer[idx[i]].spawned && G.curve_server[0];
        any |= curve[i];
    }
    wire_put_str_array(w, "endpoints", eps, NULL, (size_t)n);
    if (!any) return;
    wire_put_vec(w, "curve", WIRE_U8, curve, (size_t)n);
    wire_put_str(w, "curve_server_key", G.curve_server);
    wire_put_str(w, "curve_secret_file", G.curve_secret);
}

static int recover(int pi, const char *why) {
    Peer *p = &G.peer[pi];
    fprintf(stderr, PROG ": %s (%s) is dead: %s\n", p->name, p->ep, why);
    if (p->role == ROLE_POLICY)
        die("the policy process died (it holds the weights being trained); continue with --resume %s",
            G.last_ckpt[0] ? G.last_ckpt : "<a checkpoint written by --save-every>");
    if (++p->restarts > G.max_restarts) die("%s died %d times; giving up", p->name, p->restarts);
    if (!p->spawned && p->role == ROLE_ROLLOUT) {
        int others = 0;
        for (int i = 0; i < G.n_rollout; i++) others += !G.peer[G.rollout0 + i].gone && G.rollout0 + i != pi;
        if (others) {
            p->gone = 1;
            fprintf(stderr, PROG ": its prompts go to the other rollout workers\n");
            return -1;
        }
        fprintf(stderr, PROG ": no other rollout worker; waiting for it to come back\n");
    }
    if (p->spawned) {
        if (p->pid > 0) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
        }
        if (!strncmp(p->ep, "ipc://", 6)) unlink(p->ep + 6);
        spawn(p);
    }
    peer_connect(p);
    if (p->setup) {
        Call c;
        call_init(&c, pi, NULL);
        c.body = malloc(p->setup_len);
        memcpy(c.body, p->setup, p->setup_len);
        c.len = p->setup_len;
        c.id = 0; /* the setup body carries no id: the reply is matched by op */
        if (run_calls(&c, 1, 1)) die("%s: setup after restart failed: %s", p->name, align_error());
        call_free(&c);
    }
    if (p->role == ROLE_ROLLOUT && G.weights_version >= 0) {
        WireWriter *w = wire_writer_new("sync");
        put_sync_endpoints(w, &pi, 1);
        wire_put_int(w, "version", G.weights_version);
        Call c;
        call_init(&c, G.policy, w);
        if (run_calls(&c, 1, 1)) die("weight sync to the restarted %s failed: %s", p->name, align_error());
        WireArray ok;
        int good = !wire_get_array(c.reply, "ok", WIRE_U8, NULL, &ok) && ok.numel == 1 && ((uint8_t *)ok.data)[0];
        if (!good) die("weight sync to the restarted %s failed", p->name);
        free(ok.data);
        call_free(&c);
    }
    /* other workers went unpinged meanwhile: give them a fresh grace */
    double now = align_now();
    for (int i = 0; i < G.n_peers; i++) G.peer[i].last_seen = G.peer[i].last_ping = now;
    fprintf(stderr, PROG ": %s is back\n", p->name);
    return 0;
}

static int pick_rollout(void) {
    for (int i = 0; i < G.n_rollout; i++)
        if (!G.peer[G.rollout0 + i].gone) return G.rollout0 + i;
    return -1;
}

/* Peer i is dead (why): recover it and send its calls again (to another
 * rollout worker when it was dropped). 0, or -1 when the calls cannot go
 * on. */
static int peer_dead(Call *calls, int n, int i, const char *why, int recovering) {
    if (recovering) return align_errorf("%s died again while being set up: %s", G.peer[i].name, why);
    int usable = recover(i, why) == 0;
    for (int j = 0; j < n; j++)
        if (!calls[j].done && calls[j].peer == i) {
            calls[j].sent = 0;
            if (!usable) calls[j].peer = pick_rollout();
            if (calls[j].peer < 0) return align_errorf("no rollout worker left");
        }
    return 0;
}

/* Send every call, wait for every reply, keep workers under watch. An
 * "error" reply fails the whole set (-1 with the worker's sentence). */
static int run_calls(Call *calls, int n, int recovering) {
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) {
            Call *c = &calls[i];
            if (c->done) continue;
            left++;
            if (G.peer[c->peer].gone) {
                c->peer = pick_rollout();
                if (c->peer < 0) return align_errorf("no rollout worker left");
                c->sent = 0;
            }
            if (!c->sent) {
                if (c->w) {
                    c->id = ++G.next_id;
                    wire_put_uint(c->w, "id", c->id);
                    if (wire_finish(c->w, &c->body, &c->len)) return -1;
                    c->w = NULL;
                }
                if (send_raw(&G.peer[c->peer], c->body, c->len)) {
                    char why[200];
                    snprintf(why, sizeof why, "%s", align_error());
                    if (peer_dead(calls, n, c->peer, why, recovering)) return -1;
                    continue; /* sent again on the next pass */
                }
                c->sent = 1;
                c->t_sent = align_now();
            }
        }
        if (!left) return 0;
        for (int i = 0; i < n; i++) {
            Call *c = &calls[i];
            WireMsg *m = !c->done && c->sent && c->id ? stash_take(c->peer, c->id) : NULL;
            if (!m) continue;
            if (!strcmp(wire_op(m), "error")) {
                const char *msg = "";
                size_t ml = 0;
                wire_get_str(m, "message", &msg, &ml);
                align_errorf("%s: %.*s", G.peer[c->peer].name, (int)ml, msg);
                wire_msg_free(m);
                return -1;
            }
            c->reply = m;
            c->done = 1;
            c->t_done = align_now();
        }
        /* the peers to watch: those with calls in flight (all of them when not recovering) */
        zmq_pollitem_t items[MAX_PEERS];
        int map[MAX_PEERS], k = 0;
        for (int i = 0; i < G.n_peers; i++) {
            int involved = !recovering;
            for (int j = 0; j < n && !involved; j++) involved = !calls[j].done && calls[j].peer == i;
            if (!involved || G.peer[i].gone) continue;
            items[k] = (zmq_pollitem_t){G.peer[i].sock, 0, ZMQ_POLLIN, 0};
            map[k++] = i;
        }
        int rc = zmq_poll(items, k, 50);
        if (rc < 0 && errno != EINTR) return align_errorf("poll: %s", zmq_strerror(errno));
        double now = align_now();
        for (int j = 0; rc > 0 && j < k; j++) {
            if (!(items[j].revents & ZMQ_POLLIN)) continue;
            Peer *p = &G.peer[map[j]];
            WireFrames f;
            while (!wire_recv(p->sock, &f, PPO_MAX_MESSAGE, ZMQ_DONTWAIT)) {
                WireMsg *m = f.body ? wire_parse(f.body, f.body_len, ppo_wire_limits()) : NULL;
                wire_frames_free(&f);
                p->last_seen = now;
                p->ever_seen = 1;
                if (!m) continue;
                const char *op = wire_op(m);
                uint64_t id = 0;
                int has_id = wire_has(m, "id") && !wire_get_uint(m, "id", &id);
                if (!strcmp(op, "pong") || !strcmp(op, "info")) {
                    wire_msg_free(m);
                    continue;
                }
                Call *match = NULL;
                for (int i = 0; i < n && !match; i++)
                    if (!calls[i].done && calls[i].sent && calls[i].peer == map[j] &&
                        (calls[i].id ? has_id && id == calls[i].id : !strcmp(op, "ready") || !strcmp(op, "error")))
                        match = &calls[i];
                if (!match) { /* an outer call's reply (kept), or a stale one */
                    if (has_id) stash_put(map[j], id, m);
                    else wire_msg_free(m);
                    continue;
                }
                if (!strcmp(op, "error")) {
                    const char *msg = "", *code = "";
                    size_t ml = 0, cl = 0;
                    wire_get_str(m, "message", &msg, &ml);
                    wire_get_str(m, "code", &code, &cl);
                    align_errorf("%s: %.*s: %.*s", p->name, (int)cl, code, (int)ml, msg);
                    wire_msg_free(m);
                    return -1;
                }
                match->reply = m;
                match->done = 1;
                match->t_done = now;
            }
        }
        /* heartbeats and deaths */
        for (int i = 0; i < G.n_peers; i++) {
            Peer *p = &G.peer[i];
            if (p->gone) continue;
            int involved = !recovering;
            for (int j = 0; j < n && !involved; j++) involved = !calls[j].done && calls[j].peer == i;
            if (!involved) continue;
            const char *why = NULL;
            char buf[128];
            int status;
            peer_check_handshake(p);
            if (p->spawned && p->pid > 0 && waitpid(p->pid, &status, WNOHANG) == p->pid) {
                snprintf(buf, sizeof buf, "process %d %s %d", (int)p->pid, WIFSIGNALED(status) ? "killed by signal" : "exited with",
                         WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                p->pid = 0;
                why = buf;
            } else if (p->ever_seen && now - p->last_seen > G.dead_after * G.heartbeat_s) {
                snprintf(buf, sizeof buf, "%d pings unanswered", G.dead_after);
                why = buf;
            } else if (!p->ever_seen && now - p->born > G.startup_s) {
                snprintf(buf, sizeof buf, "no answer within %.0f s of starting", G.startup_s);
                why = buf;
            }
            if (why) {
                if (peer_dead(calls, n, i, why, recovering)) return -1;
                continue;
            }
            if (now - p->last_ping >= G.heartbeat_s) send_ping(p);
        }
    }
}

static void need_reply_ok(int rc, const char *what) {
    if (rc) die("%s: %s", what, align_error());
}

/* ------------------------------------------------------------ the prompt stream */

typedef struct {
    Dataset ds;
    int seed;
    int epoch;       /* of the cached order */
    int32_t *order;
} Prompts;

/* The dataset example at global stream position g: epoch g / N in that
 * epoch's seeded order, so no state beyond the position is needed. */
static const DsExample *prompt_at(Prompts *p, long g) {
    int n = (int)p->ds.n, e = (int)(g / n);
    if (e != p->epoch) {
        trainer_epoch_order(p->seed, e, n, p->order);
        p->epoch = e;
    }
    return &p->ds.ex[p->order[g % n]];
}

/* ------------------------------------------------------------ checkpoints */

static void ckpt_paths(const char *out, long iter, char *pol, char *crit, size_t n) {
    size_t len = strlen(out);
    while (len > 1 && out[len - 1] == '/') len--;
    if (len > 5 && !strncmp(out + len - 5, ".ckpt", 5)) len -= 5;
    if (iter >= 0) {
        snprintf(pol, n, "%.*s-step%ld.ckpt", (int)len, out, iter);
        snprintf(crit, n, "%.*s-step%ld-critic.ckpt", (int)len, out, iter);
    } else {
        snprintf(pol, n, "%s", out);
        snprintf(crit, n, "%.*s-critic.ckpt", (int)len, out);
    }
}

typedef struct {
    long iteration;
    double kl_coef;
    PpoRunningMoments running;
    long cursor; /* the next prompt's stream position (batch_size per iteration, more with dynamic sampling) */
} RunState;

static char *state_json(const RunState *s, const TrainArgs *a, int n_samples) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "program", PROG);
    cJSON_AddNumberToObject(o, "step", (double)s->iteration);
    cJSON_AddNumberToObject(o, "iteration", (double)s->iteration);
    cJSON_AddNumberToObject(o, "prompt_cursor", (double)s->cursor);
    cJSON_AddNumberToObject(o, "batch_size", a->batch_size);
    cJSON_AddNumberToObject(o, "n_samples", n_samples);
    cJSON_AddNumberToObject(o, "seed", a->seed);
    cJSON_AddNumberToObject(o, "kl_coef", s->kl_coef);
    cJSON *r = cJSON_AddObjectToObject(o, "running_scores");
    cJSON_AddNumberToObject(r, "mean", s->running.mean);
    cJSON_AddNumberToObject(r, "var", s->running.var);
    cJSON_AddNumberToObject(r, "std", s->running.std);
    cJSON_AddNumberToObject(r, "count", s->running.count);
    char *str = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return str;
}

static int read_state(const char *path, const TrainArgs *a, int n_samples, RunState *s) {
    StFile f;
    if (st_open(&f, path)) return align_error_prefix("--resume %s", path);
    const char *js = st_meta(&f, "train_state");
    cJSON *o = js ? cJSON_Parse(js) : NULL;
    cJSON *it = cJSON_GetObjectItem(o, "iteration"), *kl = cJSON_GetObjectItem(o, "kl_coef"),
          *bs = cJSON_GetObjectItem(o, "batch_size"), *ns = cJSON_GetObjectItem(o, "n_samples"),
          *r = cJSON_GetObjectItem(o, "running_scores");
    int rc = 0;
    if (!cJSON_IsNumber(it) || !cJSON_IsNumber(kl) || !cJSON_IsObject(r)) {
        rc = align_errorf("--resume %s: no ppo_run training state in this checkpoint (use one written by --save-every)", path);
    } else if ((int)bs->valuedouble != a->batch_size || (int)ns->valuedouble != n_samples) {
        rc = align_errorf("--resume %s: written with --batch-size %d --n %d; resume with the same", path,
                          (int)bs->valuedouble, (int)ns->valuedouble);
    } else {
        s->iteration = (long)it->valuedouble;
        cJSON *cur = cJSON_GetObjectItem(o, "prompt_cursor");
        s->cursor = cJSON_IsNumber(cur) ? (long)cur->valuedouble : s->iteration * a->batch_size;
        s->kl_coef = kl->valuedouble;
        s->running.mean = cJSON_GetObjectItem(r, "mean")->valuedouble;
        s->running.var = cJSON_GetObjectItem(r, "var")->valuedouble;
        s->running.std = cJSON_GetObjectItem(r, "std")->valuedouble;
        s->running.count = cJSON_GetObjectItem(r, "count")->valuedouble;
    }
    cJSON_Delete(o);
    st_close(&f);
    return rc;
}

static void save_via_policy(const char *pol, const char *crit, const char *state, int moments, const char *adapter) {
    WireWriter *w = wire_writer_new("save");
    if (adapter) wire_put_str(w, "adapter_path", adapter);
    wire_put_str(w, "path", pol);
    wire_put_str(w, "critic_path", crit);
    wire_put_str(w, "train_state", state);
    wire_put_bool(w, "moments", moments);
    Call c;
    call_init(&c, G.policy, w);
    need_reply_ok(run_calls(&c, 1, 0), "saving a checkpoint");
    call_free(&c);
}

/* ------------------------------------------------------------ weights */

static void sync_rollouts(void) {
    for (;;) {
        int idx[MAX_PEERS], n = 0;
        for (int i = 0; i < G.n_rollout; i++)
            if (!G.peer[G.rollout0 + i].gone) idx[n++] = G.rollout0 + i;
        if (!n) die("no rollout worker left");
        WireWriter *w = wire_writer_new("sync");
        put_sync_endpoints(w, idx, n);
        wire_put_int(w, "version", G.weights_version);
        wire_put_int(w, "timeout_ms", (int64_t)(G.dead_after * G.heartbeat_s * 1000 + 5000));
        int restarts[MAX_PEERS];
        for (int i = 0; i < n; i++) restarts[i] = G.peer[idx[i]].restarts;
        Call c;
        call_init(&c, G.policy, w);
        need_reply_ok(run_calls(&c, 1, 0), "weight sync");
        WireArray ok;
        if (wire_get_array(c.reply, "ok", WIRE_U8, NULL, &ok) || (int)ok.numel != n) die("weight sync: a bad reply");
        G.sync_bytes = (size_t)ppo_get_num(c.reply, "bytes", 0);
        /* a worker restarted meanwhile was synced by recover() already */
        for (int i = 0; i < n; i++)
            if (!((uint8_t *)ok.data)[i] && G.peer[idx[i]].restarts == restarts[i] && !G.peer[idx[i]].gone)
                recover(idx[i], "did not take the new weights");
        free(ok.data);
        call_free(&c);
        return;
    }
}

/* ------------------------------------------------------------ options */

typedef struct {
    TrainArgs a;
    const char *policy_path, *reward_path, *prompts_path, *critic_path;
    const char *policy_ep, *ref_ep, *reward_ep, *rollout_eps;
    const char *curve_server_key, *curve_secret; /* CURVE with the workers started by hand */
    const char *kl_est, *adv_name, *loss_agg, *policy_loss, *scale_rewards;
    const char *reward_url, *format_pattern;
    int reward_retries, overlong_buffer, dynamic_sampling, max_gen_batches, batch_invariant;
    float reward_timeout, cliprange_high, tis_cap;
    int n_rollout, policy_ranks, max_new, top_k, n_samples, ppo_epochs, minibatch, whiten;
    int heartbeat_ms, dead_after, startup_s, max_restarts, max_prompt_len;
    float temperature, top_p, kl_coef, kl_target, kl_horizon, gamma, lam, score_clip, no_eos, cliprange,
        cliprange_value, vf_coef, critic_lr, kl_loss_coef;
    /* derived from the flags */
    PpoConfig c;
    LoraConfig lc;
    const char *train_part; /* "bitfit" / "freeze": the policy trains that subset of the base (NULL: all, or adapters) */
    int use_lora, use_critic, use_ref; /* use_ref 0: no KL anywhere, no reference process */
    int virt_kind;            /* 0, or PROMPT_TUNING / PREFIX_TUNING (--peft prompt|prefix) */
    RewardSpec rs;            /* the --reward terms */
    const char *reward_model; /* the reward-model term's path (NULL: none, or --reward-connect) */
    VerifyPattern *format;    /* --format-pattern, compiled */
    Tokenizer *tok;           /* the policy's: completions to text for the rule-based and remote terms */
    Dataset eval;             /* --eval-data (n = 0: none) */
    long total_iters, opt_steps;
    int S, mbs; /* completions per iteration, per minibatch */
} Opts;

static Opts O;

/* ppo_run's own flags; the shared training flags (train_args_flags) follow
 * them in the table cli_parse sees. */
static CliFlag PPO_FLAGS[] = {
    {"policy", CLI_STRING, &O.policy_path, "starting policy (the SFT model): .ckpt, .gguf or a Hugging Face directory; also the reference"},
    {"reward", CLI_STRING, &O.reward_path, "the reward: weighted terms, e.g. math,format:0.2,rm.ckpt:0.5: math, exact, regex, format, length, overlong, url, or a reward model (rm_train's .ckpt, served by a reward_server ppo_run starts, and the critic's start)"},
    {"reward-url", CLI_STRING, &O.reward_url, "a remote reward function speaking OpenRLHF's protocol: http://HOST:PORT/get_reward (the url term, weight 1 unless --reward names url:W)"},
    {"reward-timeout", CLI_FLOAT, &O.reward_timeout, "seconds one --reward-url call may take (default 60)", CLI_POSITIVE},
    {"reward-retries", CLI_INT, &O.reward_retries, "extra tries of a failed --reward-url call (default 2)", CLI_NONNEG},
    {"format-pattern", CLI_STRING, &O.format_pattern, "the format term's PCRE2 pattern (DOTALL), e.g. ^<think>.*</think>"},
    {"overlong-buffer", CLI_INT, &O.overlong_buffer, "the overlong term's soft buffer: tokens before --max-new-tokens where the penalty ramps from 0 to -1 (DAPO's L_cache; default max-new-tokens/4)", CLI_NONNEG},
    {"prompts", CLI_STRING, &O.prompts_path, "prompt records (JSONL or .json; any record with a prompt)"},
    {"critic", CLI_STRING, &O.critic_path, "the critic's starting model (default: the reward model in --reward)"},
    {"rollout-workers", CLI_INT, &O.n_rollout, "rollout worker processes to start, 1..64 (default 1)", CLI_AT_LEAST_1},
    {"policy-connect", CLI_STRING, &O.policy_ep, "use a policy process started by hand (ppo_policy --bind EP, or mpirun -np N ppo_policy --bind EP)"},
    {"curve-server-key", CLI_STRING, &O.curve_server_key, "file with the public key of the workers started by hand (their --curve-secret-file's pair): turns CurveZMQ on for every --*-connect endpoint"},
    {"curve-secret-file", CLI_STRING, &O.curve_secret, "ppo_run's own CURVE secret key file (reward_server --curve-keygen); the policy also uses it for the weight sync to rollout workers started by hand"},
    {"policy-ranks", CLI_INT, &O.policy_ranks, "run the policy as N data-parallel ranks under mpirun (CPU; 1..256, default 1): each takes 1/N of every minibatch", CLI_AT_LEAST_1},
    {"ref-connect", CLI_STRING, &O.ref_ep, "use a reference process started by hand (ppo_ref --bind EP)"},
    {"reward-connect", CLI_STRING, &O.reward_ep, "use a reward_server started by hand"},
    {"rollout-connect", CLI_STRING, &O.rollout_eps, "use rollout workers started by hand: EP[,EP...] (instead of --rollout-workers)"},
    {"max-new-tokens", CLI_INT, &O.max_new, "longest completion sampled (default 64)", CLI_AT_LEAST_1},
    {"temperature", CLI_FLOAT, &O.temperature, "sampling temperature (default 1; 0 = greedy)", CLI_NONNEG},
    {"top-p", CLI_FLOAT, &O.top_p, "nucleus sampling, in (0, 1] (1 = off)", CLI_UNIT},
    {"top-k", CLI_INT, &O.top_k, "top-k sampling (0 = off)", CLI_NONNEG},
    {"n", CLI_INT, &O.n_samples, "samples per prompt (default 1; RLOO/GRPO need >= 2)", CLI_AT_LEAST_1},
    {"kl-coef", CLI_FLOAT, &O.kl_coef, "KL penalty coefficient in the per-token reward (default 0.05; 0 with no --kl-loss-coef/--kl-target: no reference process, TRL's GRPO beta 0)", CLI_NONNEG},
    {"kl-estimator", CLI_STRING, &O.kl_est, "k1, k2 or k3 (default k1); also what objective/kl logs"},
    {"kl-target", CLI_FLOAT, &O.kl_target, "adaptive KL control toward this KL per completion (0 = fixed --kl-coef)", CLI_NONNEG},
    {"kl-horizon", CLI_FLOAT, &O.kl_horizon, "adaptive KL controller horizon (default 10000)", CLI_POSITIVE},
    {"gamma", CLI_FLOAT, &O.gamma, "discount, in [0, 1] (default 1)", CLI_UNIT},
    {"lam", CLI_FLOAT, &O.lam, "GAE lambda, in [0, 1] (default 0.95)", CLI_UNIT},
    {"ppo-epochs", CLI_INT, &O.ppo_epochs, "passes over each rollout batch (default 4)", CLI_AT_LEAST_1},
    {"minibatch-size", CLI_INT, &O.minibatch, "completions per optimizer step (0 = the whole batch, the default)", CLI_NONNEG},
    {"advantage", CLI_STRING, &O.adv_name, "gae (critic), rloo, grpo or reinforce++ (no critic process)"},
    {"whiten-advantages", CLI_BOOL, &O.whiten, "whiten advantages over the batch (default on; --no-whiten-advantages)"},
    {"score-clip", CLI_FLOAT, &O.score_clip, "clip scores to +-this (0 = off)", CLI_NONNEG},
    {"missing-eos-penalty", CLI_FLOAT, &O.no_eos, "subtracted from the score of a completion cut at --max-new-tokens (0 = off)", CLI_NONNEG},
    {"cliprange", CLI_FLOAT, &O.cliprange, "policy ratio clip epsilon, in (0, 1) (default 0.2)", CLI_UNIT_OPEN},
    {"cliprange-high", CLI_FLOAT, &O.cliprange_high, "upper clip epsilon (DAPO's clip-higher, 0.28; default --cliprange); the cap of cispo's weight", CLI_NONNEG},
    {"policy-loss", CLI_STRING, &O.policy_loss, "vanilla (PPO/GRPO/DAPO), gspo (sequence ratio) or cispo (capped detached weight)"},
    {"dynamic-sampling", CLI_BOOL, &O.dynamic_sampling, "DAPO's dynamic sampling: drop prompt groups whose rewards all agree and sample more prompts to refill the batch (grpo/rloo)"},
    {"max-gen-batches", CLI_INT, &O.max_gen_batches, "with --dynamic-sampling: generation rounds per iteration at most (default 4); then train on the groups found", CLI_AT_LEAST_1},
    {"tis-cap", CLI_FLOAT, &O.tis_cap, "truncated importance sampling: weigh each token by min(pi_policy/pi_rollout, cap), cap >= 1 (e.g. 2; 0 = off); costs one forward pass", CLI_NONNEG},
    {"batch-invariant", CLI_BOOL, &O.batch_invariant, "CPU: the rollout workers and the policy compute every forward row with the same fixed-order kernels, so the rollout's log-probs equal the policy's to the bit (rollout/logp_diff_max 0); costs forward time (docs/DECISIONS.md)"},
    {"scale-rewards", CLI_STRING, &O.scale_rewards, "GRPO's advantage scale: group (default), batch or none (Dr. GRPO)"},
    {"cliprange-value", CLI_FLOAT, &O.cliprange_value, "value clip (default 0.2; 0 = off)", CLI_NONNEG},
    {"vf-coef", CLI_FLOAT, &O.vf_coef, "weight of the value loss (default 0.1)", CLI_NONNEG},
    {"critic-lr", CLI_FLOAT, &O.critic_lr, "critic learning rate (0 = --lr, the default)", CLI_NONNEG},
    {"kl-loss-coef", CLI_FLOAT, &O.kl_loss_coef, "KL(pi||ref) in the policy loss instead of the reward (GRPO's beta; default 0)", CLI_NONNEG},
    {"loss-agg", CLI_STRING, &O.loss_agg, "token-mean, seq-mean-token-mean, seq-mean-token-sum or seq-mean-token-sum-norm (Dr. GRPO; default token-mean, seq-mean-token-mean with gspo)"},
    {"max-prompt-length", CLI_INT, &O.max_prompt_len, "keep the last N prompt tokens (0 = --max-length - --max-new-tokens)", CLI_NONNEG},
    {"heartbeat-ms", CLI_INT, &O.heartbeat_ms, "ping workers this often (default 1000)", CLI_AT_LEAST_1},
    {"dead-after", CLI_INT, &O.dead_after, "missed pings before a worker is dead (default 3)", CLI_AT_LEAST_1},
    {"startup-timeout", CLI_INT, &O.startup_s, "seconds a new worker may take to answer its first ping (default 120)", CLI_AT_LEAST_1},
    {"max-restarts", CLI_INT, &O.max_restarts, "restarts of one worker before the run gives up (default 10)", CLI_NONNEG},
};
#define N_PPO_FLAGS ((int)(sizeof PPO_FLAGS / sizeof *PPO_FLAGS))

static void opts_defaults(Opts *o) {
    train_args_defaults(&o->a);
    o->a.lr = 3e-6f; /* TRL's PPOConfig */
    o->a.max_length = 512;
    o->kl_est = "k1", o->adv_name = "gae", o->loss_agg = NULL, o->policy_loss = "vanilla", o->scale_rewards = "group";
    o->max_gen_batches = 4;
    o->reward_timeout = 60, o->reward_retries = 2, o->overlong_buffer = -1, o->cliprange_high = -1;
    o->n_rollout = 1, o->policy_ranks = 1, o->max_new = 64, o->n_samples = 1, o->ppo_epochs = 4, o->whiten = 1;
    o->heartbeat_ms = 1000, o->dead_after = 3, o->startup_s = 120, o->max_restarts = 10;
    o->temperature = 1.0f, o->top_p = 1.0f, o->kl_coef = 0.05f, o->kl_horizon = 10000, o->gamma = 1.0f, o->lam = 0.95f;
    o->cliprange = 0.2f, o->cliprange_value = 0.2f, o->vf_coef = 0.1f;
}

/* What the flags say, checked as a whole, into o->c (the PPO math's
 * settings) and o->lc (LoRA). Exits 2 on a flag the parser refuses, 1 on a
 * combination that cannot run. */
static void parse_options(Opts *o, CliSpec *spec, int argc, char **argv) {
    static CliFlag flags[N_PPO_FLAGS + TRAIN_ARGS_N_FLAGS];
    opts_defaults(o);
    memcpy(flags, PPO_FLAGS, sizeof PPO_FLAGS);
    int nf = N_PPO_FLAGS + train_args_flags(&o->a, flags + N_PPO_FLAGS);
    *spec = (CliSpec){.prog = PROG, .usage = "ppo_run --policy sft.ckpt --reward rm.ckpt|math,format:0.1,... --prompts prompts.jsonl --out ppo.ckpt [flags]",
                      .about = "PPO with separate policy, reference, reward and rollout processes over ZeroMQ; metrics named as TRL names them.",
                      .flags = flags, .n_flags = nf};
    cli_parse_or_exit(spec, argc, argv);
    const TrainArgs *a = &o->a;
    if (!o->policy_path) die("--policy is required (the starting policy, also the reference; see --help)");
    if (!o->prompts_path) die("--prompts is required (see --help)");
    if (!a->out) die("--out is required (where the trained policy goes)");
    if (!o->reward_path && !o->reward_ep && !o->reward_url) die("--reward (or --reward-connect, --reward-url) is required");
    /* the reward's terms */
    memset(&o->rs, 0, sizeof o->rs);
    o->rs.model = o->rs.url = -1;
    if (o->reward_path && reward_spec_parse(o->reward_path, &o->rs)) die("%s", align_error());
    /* the reward model's path: what a reward_server ppo_run starts serves, and the critic's start; with
     * --reward-connect the hand-started server serves the model term (weight 1 when --reward names none) */
    o->reward_model = o->rs.model >= 0 ? o->rs.t[o->rs.model].path : NULL;
    if (o->reward_ep && o->rs.model < 0 && reward_spec_add(&o->rs, RT_MODEL, o->reward_ep, 1.0)) die("%s", align_error());
    if (o->reward_url && o->rs.url < 0 && reward_spec_add(&o->rs, RT_URL, "url", 1.0)) die("%s", align_error());
    if (o->rs.url >= 0 && !o->reward_url) die("--reward names the url term: give --reward-url http://HOST:PORT/PATH");
    if (o->reward_url) {
        RewardUrl u;
        if (reward_url_parse(o->reward_url, &u)) die("%s", align_error());
    }
    o->format = NULL;
    for (int i = 0; i < o->rs.n; i++)
        if (o->rs.t[i].kind == RT_FORMAT) {
            if (!o->format_pattern) die("--reward format: give the pattern completions must match with --format-pattern");
            if (!(o->format = verify_pattern_new(o->format_pattern, "--format-pattern"))) die("%s", align_error());
        }
    if (o->overlong_buffer < 0) o->overlong_buffer = o->max_new / 4;
    if (o->overlong_buffer > o->max_new) die("--overlong-buffer %d: at most --max-new-tokens (%d)", o->overlong_buffer, o->max_new);
    if (a->batch_size <= 0) die("--batch-size %d: must be positive", a->batch_size);
    if (!o->rollout_eps && o->n_rollout > 64) die("--rollout-workers %d: at most 64", o->n_rollout);
    if (o->policy_ranks > 256) die("--policy-ranks %d: at most 256", o->policy_ranks);
    if (o->policy_ranks > 1 && o->policy_ep)
        die("--policy-ranks starts the policy under mpirun; with --policy-connect start it yourself: mpirun -np %d ppo_policy --bind EP",
            o->policy_ranks);
    if (!(o->cliprange > 0)) die("--cliprange %g: must be in (0, 1)", o->cliprange);
    if (!(o->top_p > 0)) die("--top-p %g: must be in (0, 1] (1 = off)", o->top_p);
    if (a->dist_init || a->rank >= 0 || a->world_size > 0) /* shared trainer flags ppo_run has no use for */
        die("--dist-init, --rank and --world-size are for the ranks themselves, not ppo_run: run the policy as N ranks with "
            "--policy-ranks N (under mpirun), or start them by hand with ppo_policy --dist-init tcp://HOST:PORT --rank R "
            "--world-size N (rank 0 with --bind EP) and give ppo_run --policy-connect EP");
    if (a->quantize_base)
        die("--quantize-base is not supported by ppo_run (the reference and the rollout workers load the fp32 base); "
            "use --lora-rank alone");
    if (a->report_to && strcmp(a->report_to, "none") && strcmp(a->report_to, "tensorboard"))
        die("--report-to %s: expected none or tensorboard", a->report_to);
    /* LoRA: the policy process trains adapters; every rollout worker attaches
     * the same ones to the base it loads, so only adapters travel */
    int peft = trainer_peft_mode(a);
    if (peft < 0) die("%s", align_error());
    /* BitFit and freeze tuning train a subset of the base: the policy
     * process thaws it, and the sync sends every parameter as with full
     * fine-tuning (the frozen ones arrive unchanged) */
    o->train_part = peft == TRAIN_PEFT_BITFIT ? "bitfit" : peft == TRAIN_PEFT_FREEZE ? "freeze" : NULL;
    o->use_lora = peft == TRAIN_PEFT_LORA;
    o->virt_kind = peft == TRAIN_PEFT_PROMPT ? PROMPT_TUNING : peft == TRAIN_PEFT_PREFIX ? PREFIX_TUNING : 0;
    if (o->virt_kind && a->lora_adapter)
        die("--lora-adapter with --peft %s is not supported by ppo_run yet (sft_run, dpo_run and rm_train have it)", a->peft);
    if (o->virt_kind && (!a->out || strlen(a->out) < 5 || strcmp(a->out + strlen(a->out) - 5, ".ckpt")))
        die("--out %s: --peft %s keeps the base and its virtual tokens apart, so the model goes to a .ckpt (the peft "
            "adapter to <out>-adapter/)", a->out ? a->out : "(none)", a->peft);
    lora_config_defaults(&o->lc);
    /* LoRA, DoRA or IA3: the same adapter sync */
    if (o->use_lora && trainer_lora_config(a, &o->lc)) die("%s", align_error());
    PpoConfig *c = &o->c;
    ppo_config_defaults(c);
    if (ppo_kl_estimator_parse("--kl-estimator", o->kl_est, &c->kl_estimator) ||
        ppo_advantage_parse("--advantage", o->adv_name, &c->advantage) ||
        ppo_policy_loss_parse("--policy-loss", o->policy_loss, &c->policy_loss) ||
        ppo_scale_rewards_parse("--scale-rewards", o->scale_rewards, &c->grpo_scale_std))
        die("%s", align_error());
    /* GSPO's ratio is per sequence: each sequence counts once unless told otherwise (verl's recipe) */
    if (!o->loss_agg) o->loss_agg = c->policy_loss == PPO_PL_GSPO ? "seq-mean-token-mean" : "token-mean";
    if (ppo_loss_agg_parse("--loss-agg", o->loss_agg, &c->loss_agg)) die("%s", align_error());
    c->loss_norm_len = o->max_new;
    c->kl_coef = o->kl_coef;
    c->adaptive_kl = o->kl_target > 0;
    if (o->kl_target > 0) c->kl_target = o->kl_target;
    c->kl_horizon = o->kl_horizon;
    c->gamma = o->gamma, c->lam = o->lam;
    c->whiten_advantages = o->whiten;
    c->group_size = o->n_samples;
    c->score_clip = o->score_clip;
    if (o->no_eos > 0) c->no_eos = PPO_NO_EOS_SUBTRACT, c->no_eos_penalty = o->no_eos;
    c->clip_low = c->clip_high = o->cliprange;
    if (o->cliprange_high >= 0) c->clip_high = o->cliprange_high;
    c->tis_cap = o->tis_cap;
    c->cliprange_value = o->cliprange_value;
    c->vf_coef = o->vf_coef;
    c->kl_loss_coef = o->kl_loss_coef;
    if ((c->advantage == PPO_ADV_RLOO || c->advantage == PPO_ADV_GRPO) && o->n_samples < 2)
        die("--advantage %s needs --n 2 or more (a baseline from the other samples of a prompt)", o->adv_name);
    if (ppo_config_check(c)) die("%s", align_error());
    o->use_critic = c->advantage == PPO_ADV_GAE;
    /* No KL in the reward or the loss (TRL's GRPO default, beta 0): the
     * reference's log-probs would be computed only to log objective/kl, so
     * no reference process is started and the KL is logged as 0, as TRL
     * loads no reference model then. --ref-connect still uses one. */
    o->use_ref = c->kl_coef > 0 || c->kl_loss_coef > 0 || c->adaptive_kl || o->ref_ep;
    if (a->eval_every > 0 && !a->eval_data) die("--eval-every %d needs --eval-data (the held-out prompts)", a->eval_every);
    if (o->dynamic_sampling && c->advantage != PPO_ADV_GRPO && c->advantage != PPO_ADV_RLOO)
        die("--dynamic-sampling needs groups of samples per prompt: use --advantage grpo or rloo with --n 2 or more");
    if (!o->critic_path) o->critic_path = o->reward_model;
    if (o->use_critic && !o->critic_path)
        die("--advantage gae needs a critic: give --critic or a reward model in --reward (or use --advantage grpo or rloo)");
}

/* ------------------------------------------------------------ the prompts */

/* The prompts, tokenized as the policy's tokenizer and template do, and the
 * token ids generation stops at. */
static void load_prompts(Opts *o, Prompts *ps, int32_t stop_ids[4], int *n_stop) {
    const TrainArgs *a = &o->a;
    ModelBundle pb;
    if (model_load_any(o->policy_path, backend_get("cpu"), MODEL_LOAD_TOKENIZER, &pb)) die("%s", align_error());
    if (trainer_check_quantised_base(a, o->policy_path, pb.model)) die("%s", align_error());
    ChatTemplate tmpl;
    if (chat_template_choose_for_training(a->chat_template, pb.extras.chat_template, pb.extras.chat_template_jinja,
                                          &tmpl))
        die("%s", align_error());
    *n_stop = 0;
    int32_t cand[3] = {tok_eos_id(pb.tok), pb.model->cfg.eos_id, -1};
    const char *marker = chat_template_end_marker(tmpl);
    if (marker) cand[2] = tok_token_id(pb.tok, marker);
    for (int i = 0; i < 3; i++) {
        int dup = 0;
        for (int j = 0; j < *n_stop; j++) dup |= stop_ids[j] == cand[i];
        if (cand[i] >= 0 && cand[i] < pb.model->cfg.vocab_size && !dup) stop_ids[(*n_stop)++] = cand[i];
    }
    *ps = (Prompts){.seed = a->seed, .epoch = -1};
    DsOptions opt;
    ds_options_default(&opt);
    opt.kind = DS_PROMPT;
    opt.chat_template = tmpl;
    opt.max_prompt_length =
        o->max_prompt_len > 0 ? o->max_prompt_len : (a->max_length > o->max_new ? a->max_length - o->max_new : 0);
    opt.skip_bad = a->skip_bad;
    opt.sheet = a->sheet; /* --sheet names the --prompts worksheet (it was accepted and not used) */
    if (ds_load(o->prompts_path, pb.tok, &opt, &ps->ds)) die("%s", align_error());
    fprintf(stderr, PROG ": %s: %zu prompts\n", o->prompts_path, ps->ds.n);
    memset(&o->eval, 0, sizeof o->eval);
    if (a->eval_data) {
        opt.sheet = a->eval_sheet;
        if (ds_load(a->eval_data, pb.tok, &opt, &o->eval)) die("--eval-data: %s", align_error());
        fprintf(stderr, PROG ": %s: %zu held-out prompts\n", a->eval_data, o->eval.n);
    }
    for (size_t i = 0; i < ps->ds.n; i++)
        if (ps->ds.ex[i].n_prompt < 1) die("%s: record %ld has an empty prompt", o->prompts_path, ps->ds.ex[i].line);
    ps->order = malloc(ps->ds.n * sizeof(int32_t));
    int verified = 0, labelled = 0;
    for (int i = 0; i < o->rs.n; i++) verified |= o->rs.t[i].kind == RT_MATH || o->rs.t[i].kind == RT_EXACT || o->rs.t[i].kind == RT_REGEX;
    for (size_t i = 0; i < ps->ds.n; i++) labelled += ps->ds.ex[i].label != NULL;
    if (verified && !labelled)
        die("%s: no record has an \"answer\" for the math/exact/regex reward to check against", o->prompts_path);
    if (verified && (size_t)labelled < ps->ds.n)
        fprintf(stderr, PROG ": %s: %zu of %zu records have no \"answer\"; their completions score 0 on math/exact/regex\n",
                o->prompts_path, ps->ds.n - (size_t)labelled, ps->ds.n);
    o->tok = pb.tok; /* kept: completions become text for the rule-based and remote terms */
    pb.tok = NULL;
    model_bundle_free(&pb);
}

/* ------------------------------------------------------------ starting the processes */

/* Socket folders are /tmp/ppo_run.<pid>.XXXXXX. A run killed with SIGKILL
 * cannot remove its own, so each start removes the ones (of this user)
 * whose run no longer exists; a live run's folder, or one whose pid now
 * belongs to another process, is left alone. */
static void remove_stale_socket_dirs(void) {
    DIR *d = opendir("/tmp");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = 0;
        int n = 0;
        if (sscanf(e->d_name, "ppo_run.%ld.%n", &pid, &n) != 1 || n == 0 || pid <= 0 || strlen(e->d_name + n) != 6)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (EPERM: another user's process) */
        char path[PATH_MAX];
        snprintf(path, sizeof path, "/tmp/%s", e->d_name);
        struct stat st;
        if (lstat(path, &st) || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) continue;
        DIR *sd = opendir(path);
        if (!sd) continue;
        struct dirent *f;
        while ((f = readdir(sd)))
            if (strcmp(f->d_name, ".") && strcmp(f->d_name, "..")) unlinkat(dirfd(sd), f->d_name, 0);
        closedir(sd);
        if (!rmdir(path)) fprintf(stderr, PROG ": removed %s, left by run %ld, which no longer exists\n", path, pid);
    }
    closedir(d);
}

/* The workers, started here or connected to (--*-connect). */
static void start_processes(const Opts *o) {
    memset(&G, 0, sizeof G);
    G.heartbeat_s = o->heartbeat_ms / 1000.0;
    G.dead_after = o->dead_after;
    G.startup_s = o->startup_s;
    G.policy_ranks = o->policy_ranks;
    if (o->curve_server_key || o->curve_secret) {
        if (!o->curve_server_key || !o->curve_secret)
            die("CURVE needs both --curve-server-key (the workers' public key) and --curve-secret-file (ppo_run's own key)");
        char sec[41], pub[41];
        if (wire_read_z85_key(o->curve_server_key, G.curve_server) || wire_read_z85_key(o->curve_secret, sec))
            die("%s", align_error());
        if (zmq_curve_public(pub, sec)) die("--curve-secret-file %s: not a valid CURVE secret key", o->curve_secret);
        G.curve_secret = o->curve_secret;
    }
    G.max_restarts = o->max_restarts;
    G.reward_model = o->reward_model;
    G.weights_version = -1;
    /* a peer that has not taken a message in as long as a silent one may
     * stay alive is treated as dead (at least a second) */
    G.send_timeout_ms = o->dead_after * o->heartbeat_ms > 1000 ? o->dead_after * o->heartbeat_ms : 1000;
    /* Several processes share the cores, each idle most of the time: OpenMP
     * threads that spin-wait after a parallel region starve the one process
     * that has work (100x slower on 2 cores). Workers block instead, unless
     * the user chose otherwise. */
    setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    G.ctx = zmq_ctx_new();
    ssize_t len = readlink("/proc/self/exe", G.bin_dir, sizeof G.bin_dir - 1);
    if (len <= 0) die("cannot find my own binary (/proc/self/exe)");
    G.bin_dir[len] = 0;
    *strrchr(G.bin_dir, '/') = 0;
    remove_stale_socket_dirs();
    snprintf(G.tmpdir, sizeof G.tmpdir, "/tmp/ppo_run.%d.XXXXXX", (int)getpid());
    if (!mkdtemp(G.tmpdir)) die("cannot make a temp dir: %s", strerror(errno));
    chmod(G.tmpdir, 0700);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    G.policy = add_peer(ROLE_POLICY, 0, o->policy_ep);
    G.ref = o->use_ref ? add_peer(ROLE_REF, 0, o->ref_ep) : -1;
    G.reward = o->rs.model >= 0 ? add_peer(ROLE_REWARD, 0, o->reward_ep) : -1; /* rule-based or remote only: no reward model */
    G.rollout0 = G.n_peers;
    if (o->rollout_eps) {
        char *list = strdup(o->rollout_eps), *save = NULL;
        for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) add_peer(ROLE_ROLLOUT, G.n_rollout++, e);
        free(list);
    } else {
        for (int i = 0; i < o->n_rollout; i++) add_peer(ROLE_ROLLOUT, G.n_rollout++, NULL);
    }
}

/* The setup requests (kept: a restarted worker gets its own again; no id,
 * the reply is matched by op), sent to every worker; then the rollout
 * workers get the policy's weights. */
/* --peft prompt|prefix in a setup request; the policy's also carries a
 * --prompt-tuning-init-text's token ids. */
static void put_virtual(WireWriter *w, const Opts *o, int with_init) {
    const TrainArgs *a = &o->a;
    int32_t *ids = NULL;
    int n = 0;
    if (with_init && a->prompt_tuning_init_text &&
        tok_encode(o->tok, a->prompt_tuning_init_text, strlen(a->prompt_tuning_init_text), 0, &ids, &n))
        die("--prompt-tuning-init-text: %s", align_error());
    if (ppo_prompt_put(w, (PromptKind)o->virt_kind, a->num_virtual_tokens ? a->num_virtual_tokens : 20, a->prefix_projection,
                       ids, n))
        die("%s", align_error());
    free(ids);
}

static void setup_workers(const Opts *o, long iteration, const int32_t *stop_ids, int n_stop) {
    const TrainArgs *a = &o->a;
    const PpoConfig *c = &o->c;
    WireWriter *w = wire_writer_new("setup");
    wire_put_str(w, "policy", o->policy_path);
    if (o->use_critic) wire_put_str(w, "critic", o->critic_path);
    if (a->resume) {
        char rp[PATH_MAX], rc_[PATH_MAX];
        snprintf(rp, sizeof rp, "%s", a->resume);
        size_t l = strlen(rp);
        if (l > 5 && !strcmp(rp + l - 5, ".ckpt")) rp[l - 5] = 0;
        snprintf(rc_, sizeof rc_, "%s-critic.ckpt", rp);
        wire_put_str(w, "resume", a->resume);
        if (o->use_critic) wire_put_str(w, "resume_critic", rc_);
    }
    wire_put_float(w, "lr", a->lr);
    wire_put_float(w, "critic_lr", o->critic_lr > 0 ? o->critic_lr : a->lr);
    wire_put_float(w, "weight_decay", a->weight_decay);
    wire_put_float(w, "max_grad_norm", a->max_grad_norm);
    wire_put_float(w, "adam_beta1", a->adam_beta1);
    wire_put_float(w, "adam_beta2", a->adam_beta2);
    wire_put_float(w, "adam_epsilon", a->adam_epsilon);
    wire_put_str(w, "lr_schedule", a->lr_schedule);
    wire_put_int(w, "warmup_steps", a->warmup_steps);
    wire_put_int(w, "total_steps", o->opt_steps);
    wire_put_float(w, "clip_low", c->clip_low);
    wire_put_float(w, "clip_high", c->clip_high);
    wire_put_float(w, "cliprange_value", c->cliprange_value);
    wire_put_float(w, "vf_coef", c->vf_coef);
    wire_put_float(w, "kl_loss_coef", c->kl_loss_coef);
    wire_put_str(w, "loss_agg", ppo_loss_agg_name(c->loss_agg));
    wire_put_int(w, "loss_norm_len", c->loss_norm_len);
    wire_put_float(w, "tis_cap", c->tis_cap);
    wire_put_int(w, "batch_invariant", o->batch_invariant);
    wire_put_str(w, "policy_loss", ppo_policy_loss_name(c->policy_loss));
    if (o->train_part) {
        wire_put_str(w, "train_part", o->train_part);
        wire_put_int(w, "trainable_layers", a->trainable_layers ? a->trainable_layers : 2);
        if (a->trainable_modules) wire_put_str(w, "trainable_modules", a->trainable_modules);
    }
    wire_put_int(w, "seed", a->seed);
    if (o->use_lora) ppo_lora_put(w, &o->lc, a->lora_adapter);
    if (o->virt_kind) put_virtual(w, o, 1);
    if (wire_finish(w, &G.peer[G.policy].setup, &G.peer[G.policy].setup_len)) die("%s", align_error());
    if (G.ref >= 0) {
        w = wire_writer_new("setup");
        wire_put_str(w, "model", o->policy_path);
        if (wire_finish(w, &G.peer[G.ref].setup, &G.peer[G.ref].setup_len)) die("%s", align_error());
    }
    for (int i = 0; i < G.n_rollout; i++) {
        w = wire_writer_new("setup");
        wire_put_str(w, "model", o->policy_path);
        wire_put_int(w, "max_new_tokens", o->max_new);
        wire_put_float(w, "temperature", o->temperature);
        wire_put_float(w, "top_p", o->top_p);
        wire_put_int(w, "top_k", o->top_k);
        wire_put_int(w, "n", o->n_samples);
        wire_put_int(w, "seed", a->seed);
        wire_put_vec(w, "stop_ids", WIRE_I32, stop_ids, (size_t)n_stop);
        wire_put_int(w, "batch_invariant", o->batch_invariant);
        if (o->use_lora) ppo_lora_put(w, &o->lc, a->lora_adapter);
        if (o->virt_kind) put_virtual(w, o, 0); /* the values follow by sync */
        Peer *p = &G.peer[G.rollout0 + i];
        if (wire_finish(w, &p->setup, &p->setup_len)) die("%s", align_error());
    }
    Call calls[MAX_PEERS];
    int nc = 0;
    for (int i = 0; i < G.n_peers; i++) {
        if (!G.peer[i].setup) continue;
        call_init(&calls[nc], i, NULL);
        calls[nc].body = malloc(G.peer[i].setup_len);
        memcpy(calls[nc].body, G.peer[i].setup, G.peer[i].setup_len);
        calls[nc].len = G.peer[i].setup_len;
        nc++;
    }
    need_reply_ok(run_calls(calls, nc, 0), "setting up the workers");
    for (int i = 0; i < nc; i++) {
        if (calls[i].peer == G.policy) {
            char *kind = ppo_get_strdup(calls[i].reply, "sync");
            double numel = ppo_get_num(calls[i].reply, "sync_numel", 0);
            fprintf(stderr, PROG ": weight sync: %s, %.2f MiB per rollout worker\n",
                    kind && !strcmp(kind, "lora")     ? "LoRA adapters only"
                    : kind && !strcmp(kind, "prompt") ? "virtual tokens only"
                                                      : "all parameters",
                    numel * 4 / 1048576.0);
            free(kind);
        }
        call_free(&calls[i]);
    }
    G.weights_version = iteration;
    sync_rollouts();
}

static void stop_processes(void) {
    kill_children();
    for (int i = 0; i < G.n_peers; i++) {
        if (G.peer[i].sock) zmq_close(G.peer[i].sock);
        if (G.peer[i].monitor) zmq_close(G.peer[i].monitor);
        free(G.peer[i].setup);
    }
    zmq_ctx_term(G.ctx);
}

/* ------------------------------------------------------------ one iteration */

/* One iteration's S completions, prompt-major, in the ragged layout. */
typedef struct {
    int S;
    long T;
    int32_t *ptok, *poff, *rtok, *roff;
    float *old_logp, *ref_logp, *raw, *values;
    uint8_t *has_eos;
    const char **label; /* per completion: its prompt record's answer (NULL: none) */
} Rollout;

static void rollout_free(Rollout *b) {
    free(b->ptok), free(b->poff), free(b->rtok), free(b->roff), free(b->has_eos);
    free(b->old_logp), free(b->ref_logp), free(b->raw), free(b->values), free(b->label);
    memset(b, 0, sizeof *b);
}

/* The prompts at stream positions g0.. in contiguous chunks, one per live
 * rollout worker; their completions and old log-probs into b. */
static void generate_examples(const Opts *o, const DsExample **ex, int P, long g0, Rollout *b) {
    int n_samples = o->n_samples, S = P * n_samples;
    int32_t *pp_off = malloc(((size_t)P + 1) * sizeof(int32_t));
    pp_off[0] = 0;
    for (int i = 0; i < P; i++) pp_off[i + 1] = pp_off[i] + ex[i]->n_prompt;
    int32_t *pp_tok = malloc((size_t)pp_off[P] * sizeof(int32_t));
    for (int i = 0; i < P; i++) memcpy(pp_tok + pp_off[i], ex[i]->prompt, (size_t)ex[i]->n_prompt * sizeof(int32_t));
    int live[MAX_PEERS], nl = 0;
    for (int i = 0; i < G.n_rollout; i++)
        if (!G.peer[G.rollout0 + i].gone) live[nl++] = G.rollout0 + i;
    int chunks = nl < P ? nl : P;
    Call gen[MAX_PEERS];
    int cstart[MAX_PEERS + 1];
    for (int k = 0; k <= chunks; k++) cstart[k] = (int)((long)P * k / chunks);
    for (int k = 0; k < chunks; k++) {
        WireWriter *w = wire_writer_new("generate");
        int s0 = cstart[k], s1 = cstart[k + 1];
        int32_t *off = malloc(((size_t)(s1 - s0) + 1) * sizeof(int32_t));
        for (int i = s0; i <= s1; i++) off[i - s0] = pp_off[i] - pp_off[s0];
        ppo_put_ragged(w, "prompt_tokens", "prompt_offsets", pp_tok + pp_off[s0], off, s1 - s0);
        wire_put_int(w, "prompt_index_base", g0 + s0);
        free(off);
        call_init(&gen[k], live[k], w);
    }
    need_reply_ok(run_calls(gen, chunks, 0), "generation");
    memset(b, 0, sizeof *b);
    b->S = S;
    b->poff = malloc(((size_t)S + 1) * sizeof(int32_t)), b->roff = malloc(((size_t)S + 1) * sizeof(int32_t));
    b->has_eos = malloc((size_t)S);
    b->label = malloc((size_t)S * sizeof *b->label);
    for (int k = 0; k < chunks; k++) {
        WireArray off;
        if (wire_get_array(gen[k].reply, "offsets", WIRE_I32, ppo_wire_limits(), &off)) die("generation: %s", align_error());
        b->T += ((int32_t *)off.data)[off.numel - 1];
        free(off.data);
    }
    long PT = 0;
    for (int i = 0; i < P; i++) PT += (long)ex[i]->n_prompt * n_samples;
    b->ptok = malloc((size_t)PT * sizeof(int32_t)), b->rtok = malloc((size_t)b->T * sizeof(int32_t));
    b->old_logp = malloc((size_t)b->T * sizeof(float));
    b->poff[0] = b->roff[0] = 0;
    int s = 0;
    for (int k = 0; k < chunks; k++) {
        int32_t *tk, *of;
        int ns;
        float *lp;
        WireArray fin;
        if (ppo_get_ragged(gen[k].reply, "tokens", "offsets", &tk, &of, &ns) ||
            ppo_get_f32(gen[k].reply, "logprobs", of[ns], &lp, NULL) ||
            wire_get_array(gen[k].reply, "finish", WIRE_U8, ppo_wire_limits(), &fin))
            die("generation: a bad reply: %s", align_error());
        if (ns != (cstart[k + 1] - cstart[k]) * n_samples || (int)fin.numel != ns) die("generation: a reply of the wrong size");
        for (int j = 0; j < ns; j++, s++) {
            const DsExample *e = ex[cstart[k] + j / n_samples];
            memcpy(b->ptok + b->poff[s], e->prompt, (size_t)e->n_prompt * sizeof(int32_t));
            b->poff[s + 1] = b->poff[s] + e->n_prompt;
            int nt = of[j + 1] - of[j];
            if (nt < 1) die("generation: an empty completion");
            memcpy(b->rtok + b->roff[s], tk + of[j], (size_t)nt * sizeof(int32_t));
            memcpy(b->old_logp + b->roff[s], lp + of[j], (size_t)nt * sizeof(float));
            b->roff[s + 1] = b->roff[s] + nt;
            b->has_eos[s] = ((uint8_t *)fin.data)[j] == 1; /* GEN_FINISH_STOP */
            b->label[s] = e->label;
        }
        free(tk), free(of), free(lp), free(fin.data);
    }
    for (int k = 0; k < chunks; k++) call_free(&gen[k]);
    free(pp_off), free(pp_tok);
}

/* The training prompts at stream positions g0..g0 + batch_size. */
static void generate(const Opts *o, Prompts *ps, long g0, Rollout *b) {
    int P = o->a.batch_size;
    const DsExample **ex = malloc((size_t)P * sizeof *ex);
    for (int i = 0; i < P; i++) ex[i] = prompt_at(ps, g0 + i);
    generate_examples(o, ex, P, g0, b);
    free(ex);
}

static WireWriter *sequences_request(const char *op, const Rollout *b) {
    WireWriter *w = wire_writer_new(op);
    ppo_put_ragged(w, "prompt_tokens", "prompt_offsets", b->ptok, b->poff, b->S);
    ppo_put_ragged(w, "tokens", "offsets", b->rtok, b->roff, b->S);
    return w;
}

/* Completion s as text (its stop token dropped: the template's end of turn
 * is not part of the answer), and its prompt. */
static char *completion_text(const Opts *o, const Rollout *b, int s) {
    int n = b->roff[s + 1] - b->roff[s] - (b->has_eos[s] ? 1 : 0);
    size_t len;
    char *t = tok_decode(o->tok, b->rtok + b->roff[s], n > 0 ? n : 0, &len);
    char *c = verify_utf8_clean(t ? t : "", t ? len : 0);
    free(t);
    return c;
}

static char *prompt_text(const Opts *o, const Rollout *b, int s) {
    size_t len;
    char *t = tok_decode(o->tok, b->ptok + b->poff[s], b->poff[s + 1] - b->poff[s], &len);
    char *c = verify_utf8_clean(t ? t : "", t ? len : 0);
    free(t);
    return c;
}

/* The term whose value says "correct" in evaluation: the first of math,
 * exact, regex in --reward; -1 when there is none. */
static int verifier_term(const Opts *o) {
    for (int k = 0; k < o->rs.n; k++)
        if (o->rs.t[k].kind == RT_MATH || o->rs.t[k].kind == RT_EXACT || o->rs.t[k].kind == RT_REGEX) return k;
    return -1;
}

/* The rule-based and remote terms, and the weighted sum with the reward
 * model's scores (rm, NULL when no model term) into b->raw; each term's
 * mean into m (rewards/NAME/mean, TRL's names). */
static void combine_rewards(const Opts *o, Rollout *b, const float *rm, Metrics *m, double *verified) {
    int S = b->S;
    char **comp = malloc((size_t)S * sizeof *comp), **prom = NULL, **query = NULL;
    for (int s = 0; s < S; s++) comp[s] = completion_text(o, b, s);
    double *total = calloc((size_t)S, sizeof *total);
    RewardRuleCtx ctx = {o->format, o->max_new, o->overlong_buffer};
    double t0 = align_now();
    for (int k = 0; k < o->rs.n; k++) {
        const RewardTerm *t = &o->rs.t[k];
        double sum = 0;
        char key[96];
        if (t->kind == RT_MODEL) {
            for (int s = 0; s < S; s++) total[s] += t->weight * rm[s], sum += rm[s];
        } else if (t->kind == RT_URL) {
            prom = malloc((size_t)S * sizeof *prom), query = malloc((size_t)S * sizeof *query);
            for (int s = 0; s < S; s++) {
                prom[s] = prompt_text(o, b, s);
                size_t pl = strlen(prom[s]), cl = strlen(comp[s]);
                query[s] = malloc(pl + cl + 1);
                memcpy(query[s], prom[s], pl), memcpy(query[s] + pl, comp[s], cl + 1);
            }
            RewardHttpOpts ho = {o->reward_timeout, o->reward_retries};
            RewardHttpReply rep;
            double th = align_now();
            if (reward_http_call(o->reward_url, &ho, (const char *const *)query, (const char *const *)prom, b->label, S,
                                 &rep))
                die("%s", align_error());
            metrics_set(m, "time/reward_url", align_now() - th);
            for (int s = 0; s < S; s++) total[s] += t->weight * rep.rewards[s], sum += rep.rewards[s];
            if (rep.scores) {
                double ss = 0;
                for (int s = 0; s < S; s++) ss += rep.scores[s];
                metrics_set(m, "rewards/url/scores_mean", ss / S);
            }
            for (int i = 0; i < rep.n_logs; i++) {
                snprintf(key, sizeof key, "rewards/url/%s", rep.log_keys[i]);
                metrics_set(m, key, rep.log_means[i]);
            }
            reward_http_reply_free(&rep);
        } else {
            for (int s = 0; s < S; s++) {
                double v;
                if (reward_term_eval(t, &ctx, comp[s], b->label[s], b->roff[s + 1] - b->roff[s], &v)) die("%s", align_error());
                total[s] += t->weight * v, sum += v;
                if (verified && k == verifier_term(o)) verified[s] = v;
            }
        }
        snprintf(key, sizeof key, "rewards/%s/mean", t->name);
        metrics_set(m, key, sum / S);
    }
    metrics_set(m, "time/reward_rules", align_now() - t0);
    free(b->raw);
    b->raw = malloc((size_t)S * sizeof(float));
    for (int s = 0; s < S; s++) b->raw[s] = (float)total[s];
    for (int s = 0; s < S; s++) {
        free(comp[s]);
        if (prom) free(prom[s]), free(query[s]);
    }
    free(comp), free(prom), free(query), free(total);
}

/* Reference log-probs, reward-model scores and (with a critic) the old
 * values, in parallel; each one's time into m; then the whole reward. */
static void score(const Opts *o, Rollout *b, Metrics *m) {
    double t0 = align_now();
    Call sc[3];
    int nsc = 0, ci_ref = -1, ci_rew = -1, ci_val = -1;
    if (G.ref >= 0) call_init(&sc[ci_ref = nsc++], G.ref, sequences_request("logprobs", b));
    if (G.reward >= 0) call_init(&sc[ci_rew = nsc++], G.reward, sequences_request("score", b));
    if (o->use_critic) call_init(&sc[ci_val = nsc++], G.policy, sequences_request("values", b));
    need_reply_ok(run_calls(sc, nsc, 0), "scoring");
    float *rm = NULL;
    if ((ci_ref >= 0 && ppo_get_f32(sc[ci_ref].reply, "logprobs", b->T, &b->ref_logp, NULL)) ||
        (ci_rew >= 0 && ppo_get_f32(sc[ci_rew].reply, "scores", b->S, &rm, NULL)) ||
        (o->use_critic && ppo_get_f32(sc[ci_val].reply, "values", b->T, &b->values, NULL)))
        die("scoring: a bad reply: %s", align_error());
    if (ci_ref >= 0) {
        metrics_set(m, "time/reference", sc[ci_ref].t_done - t0);
    } else { /* no reference: itself, so every KL estimate is exactly 0 */
        free(b->ref_logp);
        b->ref_logp = malloc((size_t)b->T * sizeof(float));
        memcpy(b->ref_logp, b->old_logp, (size_t)b->T * sizeof(float));
    }
    if (ci_rew >= 0) metrics_set(m, "time/reward", sc[ci_rew].t_done - t0);
    if (o->use_critic) metrics_set(m, "time/values", sc[ci_val].t_done - t0);
    for (int i = 0; i < nsc; i++) call_free(&sc[i]);
    combine_rewards(o, b, rm, m, NULL);
    free(rm);
    metrics_set(m, "time/score_all", align_now() - t0);
}

/* Held-out evaluation (--eval-data): every eval prompt sampled --n times
 * as in training (same temperature, seeds from a range training never
 * uses), each completion rewarded as in training. Into out:
 *   mean@N  the mean reward over the N samples, averaged over prompts (verl's name)
 *   pass@1  with the verifier term (the first of math, exact, regex): the
 *           unbiased estimate from N samples, mean of c/N (Chen et al. 2021)
 *   pass@N  the fraction of prompts with at least one correct sample
 * A completion is correct when its verifier value is 1. */
static void evaluate(const Opts *o, const Dataset *ev, Metrics *out) {
    int P = o->a.batch_size, N = o->n_samples, vt = verifier_term(o);
    double reward = 0, pass1 = 0, passn = 0;
    double t0 = align_now();
    for (size_t at = 0; at < ev->n; at += (size_t)P) {
        int np = ev->n - at < (size_t)P ? (int)(ev->n - at) : P;
        const DsExample **ex = malloc((size_t)np * sizeof *ex);
        for (int i = 0; i < np; i++) ex[i] = &ev->ex[at + i];
        Rollout b;
        generate_examples(o, ex, np, (1L << 40) + (long)at, &b); /* seeds apart from the training stream's */
        free(ex);
        float *rm = NULL;
        if (G.reward >= 0) {
            Call c;
            call_init(&c, G.reward, sequences_request("score", &b));
            need_reply_ok(run_calls(&c, 1, 0), "scoring the eval set");
            if (ppo_get_f32(c.reply, "scores", b.S, &rm, NULL)) die("scoring the eval set: a bad reply: %s", align_error());
            call_free(&c);
        }
        Metrics scratch;
        metrics_clear(&scratch);
        double *ver = calloc((size_t)b.S, sizeof *ver);
        combine_rewards(o, &b, rm, &scratch, ver);
        for (int i = 0; i < np; i++) {
            double r = 0, c = 0;
            for (int j = 0; j < N; j++) r += b.raw[i * N + j], c += ver[i * N + j] == 1.0;
            reward += r / N, pass1 += c / N, passn += c > 0;
        }
        free(ver), free(rm);
        rollout_free(&b);
    }
    char key[32];
    snprintf(key, sizeof key, "mean@%d", N);
    metrics_set(out, key, reward / (double)ev->n);
    if (vt >= 0) {
        metrics_set(out, "pass@1", pass1 / (double)ev->n);
        snprintf(key, sizeof key, "pass@%d", N);
        metrics_set(out, key, passn / (double)ev->n);
    }
    metrics_set(out, "time", align_now() - t0);
}

/* Appends the completions of the groups (k completions each) with keep[g]
 * set from src to acc (acc zeroed = empty). Prompt-major order is kept. */
static void rollout_append_groups(Rollout *acc, const Rollout *src, const uint8_t *keep, int k, int max_groups) {
    int add = 0;
    long add_t = 0, add_p = 0;
    for (int g = 0; g < src->S / k && acc->S / k + add < max_groups; g++)
        if (keep[g]) {
            add++;
            add_t += src->roff[(g + 1) * k] - src->roff[g * k];
            add_p += src->poff[(g + 1) * k] - src->poff[g * k];
        }
    if (!add) return;
    int S0 = acc->S, S1 = S0 + add * k;
    long T0 = acc->T, P0 = S0 ? acc->poff[S0] : 0;
#define GROW(f, n) acc->f = realloc(acc->f, (size_t)(n) * sizeof *acc->f)
    GROW(poff, S1 + 1), GROW(roff, S1 + 1), GROW(ptok, P0 + add_p), GROW(rtok, T0 + add_t);
    GROW(old_logp, T0 + add_t), GROW(ref_logp, T0 + add_t), GROW(raw, S1), GROW(has_eos, S1), GROW(label, S1);
    if (src->values) GROW(values, T0 + add_t);
#undef GROW
    if (!S0) acc->poff[0] = acc->roff[0] = 0;
    int s = S0;
    for (int g = 0, taken = 0; g < src->S / k && taken < add; g++) {
        if (!keep[g]) continue;
        taken++;
        for (int j = g * k; j < (g + 1) * k; j++, s++) {
            int np = src->poff[j + 1] - src->poff[j], nr = src->roff[j + 1] - src->roff[j];
            memcpy(acc->ptok + acc->poff[s], src->ptok + src->poff[j], (size_t)np * sizeof(int32_t));
            acc->poff[s + 1] = acc->poff[s] + np;
            long r0 = acc->roff[s];
            memcpy(acc->rtok + r0, src->rtok + src->roff[j], (size_t)nr * sizeof(int32_t));
            memcpy(acc->old_logp + r0, src->old_logp + src->roff[j], (size_t)nr * sizeof(float));
            memcpy(acc->ref_logp + r0, src->ref_logp + src->roff[j], (size_t)nr * sizeof(float));
            if (src->values) memcpy(acc->values + r0, src->values + src->roff[j], (size_t)nr * sizeof(float));
            acc->roff[s + 1] = (int32_t)(r0 + nr);
            acc->raw[s] = src->raw[j], acc->has_eos[s] = src->has_eos[j], acc->label[s] = src->label[j];
        }
    }
    acc->S = S1;
    acc->T = acc->roff[S1];
}

/* One iteration's batch: batch_size prompts from the stream; with
 * --dynamic-sampling, rounds of batch_size prompts until batch_size groups
 * whose rewards differ are found (DAPO), at most --max-gen-batches rounds,
 * then the groups found (the last round's batch when none). */
static void collect(Opts *o, Prompts *ps, RunState *st, Rollout *b, Metrics *m) {
    int P = o->a.batch_size, k = o->n_samples;
    double t_gen = 0, t0 = align_now();
    if (!o->dynamic_sampling) {
        generate(o, ps, st->cursor, b);
        metrics_set(m, "time/generate", align_now() - t0);
        st->cursor += P;
        score(o, b, m);
        return;
    }
    Rollout acc;
    memset(&acc, 0, sizeof acc);
    uint8_t *keep = malloc((size_t)P);
    int rounds = 0, seen = 0, kept = 0;
    while (acc.S / k < P && rounds < o->max_gen_batches) {
        Rollout r;
        t0 = align_now();
        generate(o, ps, st->cursor, &r);
        t_gen += align_now() - t0;
        st->cursor += P;
        score(o, &r, m);
        rounds++;
        int n = ppo_groups_with_spread(r.S, k, r.raw, keep);
        if (n < 0) die("%s", align_error());
        seen += r.S / k, kept += n;
        rollout_append_groups(&acc, &r, keep, k, P);
        if (acc.S == 0 && rounds == o->max_gen_batches) { /* nothing to learn anywhere: the last round as it is */
            acc = r;
            break;
        }
        rollout_free(&r);
    }
    free(keep);
    metrics_set(m, "time/generate", t_gen);
    metrics_set(m, "dynamic_sampling/rounds", rounds);
    metrics_set(m, "dynamic_sampling/kept_fraction", seen ? (double)kept / seen : 0);
    metrics_set(m, "dynamic_sampling/groups", acc.S / k);
    *b = acc;
}

/* The PPO update on the policy process; its training metrics into m. */
static void update(const Opts *o, const Rollout *b, const float *adv, const float *ret, long iteration, Metrics *m) {
    size_t T = (size_t)b->T;
    WireWriter *w = sequences_request("update", b);
    wire_put_vec(w, "old_logp", WIRE_F32, b->old_logp, T);
    wire_put_vec(w, "advantages", WIRE_F32, adv, T);
    if (o->use_critic) {
        wire_put_vec(w, "returns", WIRE_F32, ret, T);
        wire_put_vec(w, "old_values", WIRE_F32, b->values, T);
    }
    if (o->c.kl_loss_coef > 0) wire_put_vec(w, "ref_logp", WIRE_F32, b->ref_logp, T);
    wire_put_int(w, "ppo_epochs", o->ppo_epochs);
    wire_put_int(w, "minibatch_size", o->mbs);
    wire_put_int(w, "seed", o->a.seed);
    wire_put_int(w, "iteration", iteration);
    Call up;
    call_init(&up, G.policy, w);
    need_reply_ok(run_calls(&up, 1, 0), "the PPO update");
    char **keys;
    size_t nk;
    WireArray vals;
    if (wire_get_str_array(up.reply, "keys", ppo_wire_limits(), &keys, &nk) ||
        wire_get_array(up.reply, "values", WIRE_F64, ppo_wire_limits(), &vals) || vals.numel != nk)
        die("the PPO update: a bad reply: %s", align_error());
    for (size_t i = 0; i < nk; i++) metrics_set(m, keys[i], ((double *)vals.data)[i]);
    free(keys), free(vals.data);
    call_free(&up);
}

/* Iteration st->iteration: generate, score, the PPO math, update, KL
 * control, weight sync. Its metrics into m. */
static void iterate(Opts *o, Prompts *ps, RunState *st, PpoKlController *ctl, Metrics *m) {
    double t_it = align_now(), t0 = t_it;
    Rollout b;
    collect(o, ps, st, &b, m);
    double t_gen = metrics_get(m, "time/generate", 0);
    /* the PPO math */
    int S = b.S;
    size_t T = (size_t)b.T;
    o->c.kl_coef = ctl->value;
    PpoSeqs seqs = {S, b.roff};
    float *kl = malloc(T * sizeof(float)), *scores = malloc((size_t)S * sizeof(float));
    float *rewards = malloc(T * sizeof(float)), *adv = malloc(T * sizeof(float)), *ret = malloc(T * sizeof(float));
    ppo_kl(o->c.kl_estimator, b.old_logp, b.ref_logp, (int)T, kl);
    if (ppo_process_scores(&o->c, &st->running, b.raw, b.has_eos, S, scores) ||
        ppo_advantages(&o->c, &seqs, scores, kl, b.values, rewards, adv, ret) ||
        ppo_rollout_metrics(&o->c, &seqs, kl, b.old_logp, scores, b.raw, b.has_eos, NULL, b.values,
                            o->use_critic ? ret : NULL, m))
        die("%s", align_error());
    t0 = align_now();
    update(o, &b, adv, ret, st->iteration, m);
    double t_up = align_now() - t0;
    /* KL control, weight sync */
    ctl->value = ppo_kl_controller_update(ctl, metrics_get(m, "objective/kl", 0), S);
    st->kl_coef = ctl->value;
    t0 = align_now();
    G.weights_version = st->iteration + 1;
    sync_rollouts();
    double t_sync = align_now() - t0;
    metrics_set(m, "time/update", t_up);
    metrics_set(m, "time/weight_sync", t_sync);
    metrics_set(m, "weight_sync/bytes", (double)G.sync_bytes);
    metrics_set(m, "time/iteration", align_now() - t_it);
    metrics_set(m, "tokens_per_s", t_gen > 0 ? (double)T / t_gen : 0);
    metrics_set(m, "val/mean_response_length", (double)T / S);
    double ent = 0; /* the sampled estimate: mean -log p of the drawn tokens (the full distribution stays on the worker) */
    for (size_t t = 0; t < T; t++) ent -= b.old_logp[t];
    metrics_set(m, "entropy", T ? ent / (double)T : 0);
    if (ppo_completion_metrics(&seqs, b.has_eos, b.raw, o->n_samples, m)) die("%s", align_error());
    free(kl), free(scores), free(rewards), free(adv), free(ret);
    rollout_free(&b);
}

/* ------------------------------------------------------------ saving */

/* After iteration done_iters: the periodic checkpoint (replacing the
 * previous one), or on SIGINT/SIGTERM the one to --resume from. */
static void save_step(const Opts *o, const RunState *st, long done_iters) {
    RunState s2 = *st;
    s2.iteration = done_iters;
    char pol[PATH_MAX], crit[PATH_MAX];
    ckpt_paths(o->a.out, done_iters, pol, crit, sizeof pol);
    char *js = state_json(&s2, &o->a, o->n_samples);
    save_via_policy(pol, crit, js, 1, NULL);
    free(js);
    /* keep the newest --save-total-limit (0 = all; past 64 the oldest go) */
    if (!G.n_kept || strcmp(G.kept[G.n_kept - 1], pol)) {
        char *copy = strdup(pol);
        if (copy) G.kept[G.n_kept++] = copy;
        int limit = o->a.save_total_limit > 0 && o->a.save_total_limit < 64 ? o->a.save_total_limit : 63;
        while (G.n_kept > limit) {
            char op[PATH_MAX], oc[PATH_MAX];
            snprintf(op, sizeof op, "%s", G.kept[0]);
            size_t l = strlen(op);
            if (l > 5) op[l - 5] = 0;
            snprintf(oc, sizeof oc, "%s-critic.ckpt", op);
            unlink(G.kept[0]), unlink(oc);
            free(G.kept[0]);
            memmove(G.kept, G.kept + 1, (G.n_kept - 1) * sizeof *G.kept);
            G.n_kept--;
        }
    }
    snprintf(G.last_ckpt, sizeof G.last_ckpt, "%s", pol);
}

/* The trained policy to --out (merged, with the adapter beside it under
 * LoRA) and the critic next to it. */
static void save_final(const Opts *o, const RunState *st) {
    char pol[PATH_MAX], crit[PATH_MAX];
    ckpt_paths(o->a.out, -1, pol, crit, sizeof pol);
    char *js = state_json(st, &o->a, o->n_samples);
    save_via_policy(pol, crit, js, 0, o->a.lora_out);
    free(js);
    fprintf(stderr, PROG ": saved %s%s%s after %ld iterations\n", pol, o->use_critic ? " and " : "",
            o->use_critic ? crit : "", st->iteration);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    CliSpec spec;
    parse_options(&O, &spec, argc, argv);
    const TrainArgs *a = &O.a;
    Prompts ps;
    int32_t stop_ids[4];
    int n_stop;
    load_prompts(&O, &ps, stop_ids, &n_stop);

    RunState st = {0, O.c.kl_coef, {0}, 0};
    ppo_running_init(&st.running);
    if (a->resume) {
        if (read_state(a->resume, a, O.n_samples, &st)) die("%s", align_error());
        fprintf(stderr, PROG ": resuming from %s at iteration %ld\n", a->resume, st.iteration);
    }
    O.total_iters = a->max_steps > 0 ? a->max_steps
                                     : ((long)ps.ds.n * (a->epochs > 0 ? a->epochs : 1) + a->batch_size - 1) / a->batch_size;
    O.S = a->batch_size * O.n_samples;
    O.mbs = O.minibatch > 0 && O.minibatch < O.S ? O.minibatch : O.S;
    O.opt_steps = O.total_iters * O.ppo_epochs * ((O.S + O.mbs - 1) / O.mbs);

    start_processes(&O);
    setup_workers(&O, st.iteration, stop_ids, n_stop);

    MetricsLog log;
    memset(&log, 0, sizeof log);
    if (trainer_metrics_open(PROG, a, &log)) die("%s", align_error());
    log.print_every = a->logging_steps > 0 ? a->logging_steps : 10;
    PpoKlController ctl;
    ppo_kl_controller_init(&ctl, &O.c);
    ctl.value = st.kl_coef;
    static const char *shown[] = {"objective/scores", "objective/kl", "objective/rlhf_reward", "policy/clipfrac_avg",
                                  "time/iteration", NULL};
    int rc = 0;
    metrics_log_begin(&log, st.iteration, O.total_iters);
    if (O.eval.n) { /* the starting point, before any update */
        Metrics em;
        metrics_clear(&em);
        evaluate(&O, &O.eval, &em);
        metrics_log_eval(&log, st.iteration, &em);
    }
    for (; st.iteration < O.total_iters; st.iteration++) {
        Metrics m;
        metrics_clear(&m);
        iterate(&O, &ps, &st, &ctl, &m);
        long done_iters = st.iteration + 1;
        metrics_log_step(&log, done_iters, O.total_iters, (double)done_iters * a->batch_size / ps.ds.n, &m, shown);
        if (O.eval.n && ((a->eval_every > 0 && done_iters % a->eval_every == 0) || done_iters == O.total_iters)) {
            Metrics em;
            metrics_clear(&em);
            evaluate(&O, &O.eval, &em);
            metrics_log_eval(&log, done_iters, &em);
        }
        int periodic = a->save_every > 0 && done_iters % a->save_every == 0 && done_iters < O.total_iters;
        if (periodic || interrupted) save_step(&O, &st, done_iters);
        if (interrupted) {
            fprintf(stderr, "\n" PROG ": interrupted after iteration %ld; saved %s (continue with --resume %s)\n",
                    done_iters, G.last_ckpt, G.last_ckpt);
            rc = 130;
            break;
        }
    }
    if (!rc) save_final(&O, &st);
    metrics_log_close(&log);
    trainer_write_report(PROG, a);
    stop_processes();
    ds_free(&ps.ds);
    tok_free(O.tok);
    ds_free(&O.eval);
    verify_pattern_free(O.format);
    free(ps.order);
    cli_free(&spec);
    return rc;
}
