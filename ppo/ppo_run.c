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
 * unbroken run. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
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
#include "lora.h"
#include "metrics.h"
#include "model_load.h"
#include "ppo_math.h"
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
    uint64_t next_id;
    double heartbeat_s;
    int dead_after;
    double startup_s;
    const char *reward_model;
    int max_restarts;
    int64_t weights_version;
    size_t sync_bytes; /* payload per rollout worker in the last sync */
    char last_ckpt[PATH_MAX];
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
        dup2(2, 1);
        if (p->role == ROLE_REWARD)
            execl(prog, prog, "--model", G.reward_model, "--bind", p->ep, "--batch-wait-ms", "1", "--max-message-mb",
                  "1024", "--drain-max-ms", "500", (char *)NULL);
        else
            execl(prog, prog, "--bind", p->ep, (char *)NULL);
        fprintf(stderr, PROG ": cannot run %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    fprintf(stderr, PROG ": started %s (pid %d) on %s\n", p->name, (int)pid, p->ep);
}

static void peer_connect(Peer *p) {
    if (p->sock) zmq_close(p->sock);
    p->sock = zmq_socket(G.ctx, ZMQ_DEALER);
    int linger = 0, ivl = 50;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
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

static int send_raw(Peer *p, const void *body, size_t len) { return wire_send(p->sock, NULL, body, len, 0); }

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
        const char *ep = p->ep;
        wire_put_str_array(w, "endpoints", &ep, NULL, 1);
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
                if (send_raw(&G.peer[c->peer], c->body, c->len)) return -1;
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
                if (recovering) return align_errorf("%s died again while being set up: %s", p->name, why);
                int usable = recover(i, why) == 0;
                for (int j = 0; j < n; j++)
                    if (!calls[j].done && calls[j].peer == i) {
                        calls[j].sent = 0;
                        if (!usable) calls[j].peer = pick_rollout();
                        if (calls[j].peer < 0) return align_errorf("no rollout worker left");
                    }
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
} RunState;

static char *state_json(const RunState *s, const TrainArgs *a, int n_samples) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "program", PROG);
    cJSON_AddNumberToObject(o, "step", (double)s->iteration);
    cJSON_AddNumberToObject(o, "iteration", (double)s->iteration);
    cJSON_AddNumberToObject(o, "prompt_cursor", (double)s->iteration * a->batch_size);
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
        const char *eps[MAX_PEERS];
        int idx[MAX_PEERS], n = 0;
        for (int i = 0; i < G.n_rollout; i++)
            if (!G.peer[G.rollout0 + i].gone) idx[n] = G.rollout0 + i, eps[n++] = G.peer[G.rollout0 + i].ep;
        if (!n) die("no rollout worker left");
        WireWriter *w = wire_writer_new("sync");
        wire_put_str_array(w, "endpoints", eps, NULL, (size_t)n);
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

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    TrainArgs a;
    train_args_defaults(&a);
    a.lr = 3e-6f; /* TRL's PPOConfig */
    a.max_length = 512;
    const char *policy_path = NULL, *reward_path = NULL, *prompts_path = NULL, *critic_path = NULL;
    const char *policy_ep = NULL, *ref_ep = NULL, *reward_ep = NULL, *rollout_eps = NULL;
    const char *kl_est = "k1", *adv_name = "gae", *loss_agg = "token-mean";
    int n_rollout = 1, max_new = 64, top_k = 0, n_samples = 1, ppo_epochs = 4, minibatch = 0, whiten = 1;
    int heartbeat_ms = 1000, dead_after = 3, startup_s = 120, max_restarts = 10, max_prompt_len = 0;
    float temperature = 1.0f, top_p = 1.0f, kl_coef = 0.05f, kl_target = 0, kl_horizon = 10000, gamma = 1.0f,
          lam = 0.95f, score_clip = 0, no_eos = 0, cliprange = 0.2f, cliprange_value = 0.2f, vf_coef = 0.1f,
          critic_lr = -1, kl_loss_coef = 0;
    enum { NF = 37 };
    CliFlag flags[NF + TRAIN_ARGS_N_FLAGS] = {
        {"policy", CLI_STRING, &policy_path, "starting policy (the SFT model): .ckpt, .gguf or a Hugging Face directory; also the reference"},
        {"reward", CLI_STRING, &reward_path, "reward model (rm_train's .ckpt); served by a reward_server ppo_run starts, and the critic's start"},
        {"prompts", CLI_STRING, &prompts_path, "prompt records (JSONL or .json; any record with a prompt)"},
        {"critic", CLI_STRING, &critic_path, "the critic's starting model (default: --reward)"},
        {"rollout-workers", CLI_INT, &n_rollout, "rollout worker processes to start (default 1)"},
        {"policy-connect", CLI_STRING, &policy_ep, "use a policy process started by hand (ppo_policy --bind EP)"},
        {"ref-connect", CLI_STRING, &ref_ep, "use a reference process started by hand (ppo_ref --bind EP)"},
        {"reward-connect", CLI_STRING, &reward_ep, "use a reward_server started by hand"},
        {"rollout-connect", CLI_STRING, &rollout_eps, "use rollout workers started by hand: EP[,EP...] (instead of --rollout-workers)"},
        {"max-new-tokens", CLI_INT, &max_new, "longest completion sampled (default 64)"},
        {"temperature", CLI_FLOAT, &temperature, "sampling temperature (default 1)"},
        {"top-p", CLI_FLOAT, &top_p, "nucleus sampling (1 = off)"},
        {"top-k", CLI_INT, &top_k, "top-k sampling (0 = off)"},
        {"n", CLI_INT, &n_samples, "samples per prompt (default 1; RLOO/GRPO need >= 2)"},
        {"kl-coef", CLI_FLOAT, &kl_coef, "KL penalty coefficient in the per-token reward (default 0.05)"},
        {"kl-estimator", CLI_STRING, &kl_est, "k1, k2 or k3 (default k1); also what objective/kl logs"},
        {"kl-target", CLI_FLOAT, &kl_target, "adaptive KL control toward this KL per completion (0 = fixed --kl-coef)"},
        {"kl-horizon", CLI_FLOAT, &kl_horizon, "adaptive KL controller horizon (default 10000)"},
        {"gamma", CLI_FLOAT, &gamma, "discount (default 1)"},
        {"lam", CLI_FLOAT, &lam, "GAE lambda (default 0.95)"},
        {"ppo-epochs", CLI_INT, &ppo_epochs, "passes over each rollout batch (default 4)"},
        {"minibatch-size", CLI_INT, &minibatch, "completions per optimizer step (default: the whole batch)"},
        {"advantage", CLI_STRING, &adv_name, "gae (critic), rloo, grpo or reinforce++ (no critic process)"},
        {"whiten-advantages", CLI_BOOL, &whiten, "whiten advantages over the batch (default on; --no-whiten-advantages)"},
        {"score-clip", CLI_FLOAT, &score_clip, "clip scores to +-this (0 = off)"},
        {"missing-eos-penalty", CLI_FLOAT, &no_eos, "subtracted from the score of a completion cut at --max-new-tokens (0 = off)"},
        {"cliprange", CLI_FLOAT, &cliprange, "policy ratio clip epsilon (default 0.2)"},
        {"cliprange-value", CLI_FLOAT, &cliprange_value, "value clip (default 0.2; 0 = off)"},
        {"vf-coef", CLI_FLOAT, &vf_coef, "weight of the value loss (default 0.1)"},
        {"critic-lr", CLI_FLOAT, &critic_lr, "critic learning rate (default: --lr)"},
        {"kl-loss-coef", CLI_FLOAT, &kl_loss_coef, "KL(pi||ref) in the policy loss instead of the reward (GRPO's beta; default 0)"},
        {"loss-agg", CLI_STRING, &loss_agg, "token-mean, seq-mean-token-mean or seq-mean-token-sum"},
        {"max-prompt-length", CLI_INT, &max_prompt_len, "keep the last N prompt tokens (0 = --max-length - --max-new-tokens)"},
        {"heartbeat-ms", CLI_INT, &heartbeat_ms, "ping workers this often (default 1000)"},
        {"dead-after", CLI_INT, &dead_after, "missed pings before a worker is dead (default 3)"},
        {"startup-timeout", CLI_INT, &startup_s, "seconds a new worker may take to answer its first ping (default 120)"},
        {"max-restarts", CLI_INT, &max_restarts, "restarts of one worker before the run gives up (default 10)"},
    };
    int nf = NF + train_args_flags(&a, flags + NF);
    CliSpec spec = {.prog = PROG, .usage = "ppo_run --policy sft.ckpt --reward rm.ckpt --prompts prompts.jsonl --out ppo.ckpt [flags]",
                    .about = "PPO with separate policy, reference, reward and rollout processes over ZeroMQ; metrics named as TRL names them.",
                    .flags = flags, .n_flags = nf};
    cli_parse_or_exit(&spec, argc, argv);
    if (!policy_path) die("--policy is required (the starting policy, also the reference; see --help)");
    if (!prompts_path) die("--prompts is required (see --help)");
    if (!a.out) die("--out is required (where the trained policy goes)");
    if (!reward_path && !reward_ep) die("--reward (or --reward-connect) is required");
    if (a.batch_size <= 0 || n_samples <= 0 || max_new <= 0 || ppo_epochs <= 0 || minibatch < 0)
        die("--batch-size, --n, --max-new-tokens and --ppo-epochs must be positive");
    if (heartbeat_ms <= 0 || dead_after <= 0) die("--heartbeat-ms and --dead-after must be positive");
    if (a.quantize_base)
        die("--quantize-base is not supported by ppo_run (the reference and the rollout workers load the fp32 base); "
            "use --lora-rank alone");
    /* LoRA: the policy process trains adapters; every rollout worker attaches
     * the same ones to the base it loads, so only adapters travel */
    int use_lora = a.lora_rank > 0 || a.lora_adapter;
    LoraConfig lc;
    lora_config_defaults(&lc);
    if (use_lora) {
        lc.rank = a.lora_rank > 0 ? a.lora_rank : lc.rank;
        lc.alpha = a.lora_alpha > 0 ? a.lora_alpha : 2.0f * lc.rank;
        lc.dropout = a.lora_dropout;
        lc.seed = (uint64_t)a.seed;
        if (a.lora_targets && lora_parse_targets(a.lora_targets, &lc.targets)) die("--lora-targets: %s", align_error());
    }

    PpoConfig c;
    ppo_config_defaults(&c);
    if (ppo_kl_estimator_parse("--kl-estimator", kl_est, &c.kl_estimator) ||
        ppo_advantage_parse("--advantage", adv_name, &c.advantage) ||
        ppo_loss_agg_parse("--loss-agg", loss_agg, &c.loss_agg))
        die("%s", align_error());
    c.kl_coef = kl_coef;
    c.adaptive_kl = kl_target > 0;
    if (kl_target > 0) c.kl_target = kl_target;
    c.kl_horizon = kl_horizon;
    c.gamma = gamma, c.lam = lam;
    c.whiten_advantages = whiten;
    c.group_size = n_samples;
    c.score_clip = score_clip;
    if (no_eos > 0) c.no_eos = PPO_NO_EOS_SUBTRACT, c.no_eos_penalty = no_eos;
    c.clip_low = c.clip_high = cliprange;
    c.cliprange_value = cliprange_value;
    c.vf_coef = vf_coef;
    c.kl_loss_coef = kl_loss_coef;
    if ((c.advantage == PPO_ADV_RLOO || c.advantage == PPO_ADV_GRPO) && n_samples < 2)
        die("--advantage %s needs --n 2 or more (a baseline from the other samples of a prompt)", adv_name);
    if (ppo_config_check(&c)) die("%s", align_error());
    int use_critic = c.advantage == PPO_ADV_GAE;
    if (!critic_path) critic_path = reward_path;
    if (use_critic && !critic_path) die("--advantage gae needs a critic: give --critic or --reward (or use --advantage rloo)");

    /* the prompts, tokenized as the policy's tokenizer and template do */
    ModelBundle pb;
    if (model_load_any(policy_path, backend_get("cpu"), MODEL_LOAD_TOKENIZER, &pb)) die("%s", align_error());
    ChatTemplate tmpl = CHAT_TEMPLATE_NONE;
    if (a.chat_template) {
        if (chat_template_from_name(a.chat_template, &tmpl)) die("--chat-template: %s", align_error());
    } else if (pb.extras.chat_template) {
        chat_template_from_name(pb.extras.chat_template, &tmpl);
    } else if (pb.extras.chat_template_jinja) {
        chat_template_detect(pb.extras.chat_template_jinja, &tmpl);
    }
    int32_t stop_ids[4];
    int n_stop = 0;
    {
        int32_t cand[3] = {tok_eos_id(pb.tok), pb.model->cfg.eos_id, -1};
        const char *marker = chat_template_end_marker(tmpl);
        if (marker) cand[2] = tok_token_id(pb.tok, marker);
        for (int i = 0; i < 3; i++) {
            int dup = 0;
            for (int j = 0; j < n_stop; j++) dup |= stop_ids[j] == cand[i];
            if (cand[i] >= 0 && cand[i] < pb.model->cfg.vocab_size && !dup) stop_ids[n_stop++] = cand[i];
        }
    }
    Prompts ps = {.seed = a.seed, .epoch = -1};
    {
        DsOptions o;
        ds_options_default(&o);
        o.kind = DS_PROMPT;
        o.chat_template = tmpl;
        o.max_prompt_length = max_prompt_len > 0 ? max_prompt_len : (a.max_length > max_new ? a.max_length - max_new : 0);
        o.skip_bad = a.skip_bad;
        if (ds_load(prompts_path, pb.tok, &o, &ps.ds)) die("%s", align_error());
        fprintf(stderr, PROG ": %s: %zu prompts\n", prompts_path, ps.ds.n);
        for (size_t i = 0; i < ps.ds.n; i++)
            if (ps.ds.ex[i].n_prompt < 1) die("%s: record %ld has an empty prompt", prompts_path, ps.ds.ex[i].line);
        ps.order = malloc(ps.ds.n * sizeof(int32_t));
    }
    model_bundle_free(&pb);

    RunState st = {0, c.kl_coef, {0}};
    ppo_running_init(&st.running);
    if (a.resume) {
        if (read_state(a.resume, &a, n_samples, &st)) die("%s", align_error());
        fprintf(stderr, PROG ": resuming from %s at iteration %ld\n", a.resume, st.iteration);
    }
    long total_iters = a.max_steps > 0 ? a.max_steps
                                       : ((long)ps.ds.n * (a.epochs > 0 ? a.epochs : 1) + a.batch_size - 1) / a.batch_size;
    int S = a.batch_size * n_samples;
    int mbs = minibatch > 0 && minibatch < S ? minibatch : S;
    long opt_steps = total_iters * ppo_epochs * ((S + mbs - 1) / mbs);

    /* ---- processes ---- */
    memset(&G, 0, sizeof G);
    G.heartbeat_s = heartbeat_ms / 1000.0;
    G.dead_after = dead_after;
    G.startup_s = startup_s;
    G.max_restarts = max_restarts;
    G.reward_model = reward_path;
    G.weights_version = -1;
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
    snprintf(G.tmpdir, sizeof G.tmpdir, "/tmp/ppo_run.XXXXXX");
    if (!mkdtemp(G.tmpdir)) die("cannot make a temp dir: %s", strerror(errno));
    chmod(G.tmpdir, 0700);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (reward_ep == NULL && !reward_path) die("--reward is required");
    G.policy = add_peer(ROLE_POLICY, 0, policy_ep);
    G.ref = add_peer(ROLE_REF, 0, ref_ep);
    G.reward = add_peer(ROLE_REWARD, 0, reward_ep);
    G.rollout0 = G.n_peers;
    if (rollout_eps) {
        char *list = strdup(rollout_eps), *save = NULL;
        for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) add_peer(ROLE_ROLLOUT, G.n_rollout++, e);
        free(list);
    } else {
        if (n_rollout < 1 || n_rollout > 64) die("--rollout-workers must be in 1..64");
        for (int i = 0; i < n_rollout; i++) add_peer(ROLE_ROLLOUT, G.n_rollout++, NULL);
    }

    /* setup requests, kept for restarts (no id: the reply is matched by op) */
    {
        WireWriter *w = wire_writer_new("setup");
        wire_put_str(w, "policy", policy_path);
        if (use_critic) wire_put_str(w, "critic", critic_path);
        char rp[PATH_MAX], rc_[PATH_MAX];
        if (a.resume) {
            snprintf(rp, sizeof rp, "%s", a.resume);
            size_t l = strlen(rp);
            if (l > 5 && !strcmp(rp + l - 5, ".ckpt")) rp[l - 5] = 0;
            snprintf(rc_, sizeof rc_, "%s-critic.ckpt", rp);
            wire_put_str(w, "resume", a.resume);
            if (use_critic) wire_put_str(w, "resume_critic", rc_);
        }
        wire_put_float(w, "lr", a.lr);
        wire_put_float(w, "critic_lr", critic_lr > 0 ? critic_lr : a.lr);
        wire_put_float(w, "weight_decay", a.weight_decay);
        wire_put_float(w, "max_grad_norm", a.max_grad_norm);
        wire_put_str(w, "lr_schedule", a.lr_schedule);
        wire_put_int(w, "warmup_steps", a.warmup_steps);
        wire_put_int(w, "total_steps", opt_steps);
        wire_put_float(w, "clip_low", c.clip_low);
        wire_put_float(w, "clip_high", c.clip_high);
        wire_put_float(w, "cliprange_value", c.cliprange_value);
        wire_put_float(w, "vf_coef", c.vf_coef);
        wire_put_float(w, "kl_loss_coef", c.kl_loss_coef);
        wire_put_str(w, "loss_agg", ppo_loss_agg_name(c.loss_agg));
        wire_put_int(w, "seed", a.seed);
        if (use_lora) ppo_lora_put(w, &lc, a.lora_adapter);
        if (wire_finish(w, &G.peer[G.policy].setup, &G.peer[G.policy].setup_len)) die("%s", align_error());
        w = wire_writer_new("setup");
        wire_put_str(w, "model", policy_path);
        if (wire_finish(w, &G.peer[G.ref].setup, &G.peer[G.ref].setup_len)) die("%s", align_error());
        for (int i = 0; i < G.n_rollout; i++) {
            w = wire_writer_new("setup");
            wire_put_str(w, "model", policy_path);
            wire_put_int(w, "max_new_tokens", max_new);
            wire_put_float(w, "temperature", temperature);
            wire_put_float(w, "top_p", top_p);
            wire_put_int(w, "top_k", top_k);
            wire_put_int(w, "n", n_samples);
            wire_put_int(w, "seed", a.seed);
            wire_put_vec(w, "stop_ids", WIRE_I32, stop_ids, (size_t)n_stop);
            if (use_lora) ppo_lora_put(w, &lc, a.lora_adapter);
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
                        kind && !strcmp(kind, "lora") ? "LoRA adapters only" : "all parameters", numel * 4 / 1048576.0);
                free(kind);
            }
            call_free(&calls[i]);
        }
        G.weights_version = st.iteration;
        sync_rollouts();
    }

    MetricsLog log;
    memset(&log, 0, sizeof log);
    if (metrics_log_open(&log, PROG, a.metrics, a.resume != NULL)) die("%s", align_error());
    PpoKlController ctl;
    ppo_kl_controller_init(&ctl, &c);
    ctl.value = st.kl_coef;
    static const char *shown[] = {"objective/scores", "objective/kl", "objective/rlhf_reward", "policy/clipfrac_avg",
                                  "time/iteration", NULL};
    int P = a.batch_size, rc = 0;

    for (; st.iteration < total_iters; st.iteration++) {
        double t_it = align_now();
        Metrics m;
        metrics_clear(&m);
        long g0 = st.iteration * P;
        /* ---- prompts ---- */
        int32_t *pp_off = malloc(((size_t)P + 1) * sizeof(int32_t));
        const DsExample **ex = malloc((size_t)P * sizeof *ex);
        pp_off[0] = 0;
        for (int i = 0; i < P; i++) {
            ex[i] = prompt_at(&ps, g0 + i);
            pp_off[i + 1] = pp_off[i] + ex[i]->n_prompt;
        }
        int32_t *pp_tok = malloc((size_t)pp_off[P] * sizeof(int32_t));
        for (int i = 0; i < P; i++) memcpy(pp_tok + pp_off[i], ex[i]->prompt, (size_t)ex[i]->n_prompt * sizeof(int32_t));
        /* ---- generate: contiguous chunks, one per live rollout worker ---- */
        double t0 = align_now();
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
        double t_gen = align_now() - t0;
        /* ---- the batch: S completions, prompt-major ---- */
        int32_t *poff = malloc(((size_t)S + 1) * sizeof(int32_t)), *roff = malloc(((size_t)S + 1) * sizeof(int32_t));
        uint8_t *has_eos = malloc((size_t)S);
        long T = 0, PT = 0;
        for (int k = 0; k < chunks; k++) {
            WireArray off;
            if (wire_get_array(gen[k].reply, "offsets", WIRE_I32, ppo_wire_limits(), &off)) die("generation: %s", align_error());
            T += ((int32_t *)off.data)[off.numel - 1];
            free(off.data);
        }
        PT = 0;
        for (int i = 0; i < P; i++) PT += (long)ex[i]->n_prompt * n_samples;
        int32_t *ptok = malloc((size_t)PT * sizeof(int32_t)), *rtok = malloc((size_t)T * sizeof(int32_t));
        float *old_logp = malloc((size_t)T * sizeof(float));
        poff[0] = roff[0] = 0;
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
                memcpy(ptok + poff[s], e->prompt, (size_t)e->n_prompt * sizeof(int32_t));
                poff[s + 1] = poff[s] + e->n_prompt;
                int nt = of[j + 1] - of[j];
                if (nt < 1) die("generation: an empty completion");
                memcpy(rtok + roff[s], tk + of[j], (size_t)nt * sizeof(int32_t));
                memcpy(old_logp + roff[s], lp + of[j], (size_t)nt * sizeof(float));
                roff[s + 1] = roff[s] + nt;
                has_eos[s] = ((uint8_t *)fin.data)[j] == 1; /* GEN_FINISH_STOP */
            }
            free(tk), free(of), free(lp), free(fin.data);
        }
        for (int k = 0; k < chunks; k++) call_free(&gen[k]);
        /* ---- reference, reward, values in parallel ---- */
        t0 = align_now();
        Call sc[3];
        int nsc = 0, ci_ref, ci_rew, ci_val = -1;
        WireWriter *w = wire_writer_new("logprobs");
        ppo_put_ragged(w, "prompt_tokens", "prompt_offsets", ptok, poff, S);
        ppo_put_ragged(w, "tokens", "offsets", rtok, roff, S);
        call_init(&sc[ci_ref = nsc++], G.ref, w);
        w = wire_writer_new("score");
        ppo_put_ragged(w, "prompt_tokens", "prompt_offsets", ptok, poff, S);
        ppo_put_ragged(w, "tokens", "offsets", rtok, roff, S);
        call_init(&sc[ci_rew = nsc++], G.reward, w);
        if (use_critic) {
            w = wire_writer_new("values");
            ppo_put_ragged(w, "prompt_tokens", "prompt_offsets", ptok, poff, S);
            ppo_put_ragged(w, "tokens", "offsets", rtok, roff, S);
            call_init(&sc[ci_val = nsc++], G.policy, w);
        }
        need_reply_ok(run_calls(sc, nsc, 0), "scoring");
        float *ref_logp, *raw, *values = NULL;
        if (ppo_get_f32(sc[ci_ref].reply, "logprobs", T, &ref_logp, NULL) ||
            ppo_get_f32(sc[ci_rew].reply, "scores", S, &raw, NULL) ||
            (use_critic && ppo_get_f32(sc[ci_val].reply, "values", T, &values, NULL)))
            die("scoring: a bad reply: %s", align_error());
        double t_ref = sc[ci_ref].t_done - t0, t_rew = sc[ci_rew].t_done - t0,
               t_val = use_critic ? sc[ci_val].t_done - t0 : 0, t_score = align_now() - t0;
        for (int i = 0; i < nsc; i++) call_free(&sc[i]);
        /* ---- the PPO math ---- */
        c.kl_coef = ctl.value;
        PpoSeqs seqs = {S, roff};
        float *kl = malloc((size_t)T * sizeof(float)), *scores = malloc((size_t)S * sizeof(float));
        float *rewards = malloc((size_t)T * sizeof(float)), *adv = malloc((size_t)T * sizeof(float)),
              *ret = malloc((size_t)T * sizeof(float));
        ppo_kl(c.kl_estimator, old_logp, ref_logp, (int)T, kl);
        if (ppo_process_scores(&c, &st.running, raw, has_eos, S, scores) ||
            ppo_advantages(&c, &seqs, scores, kl, values, rewards, adv, ret) ||
            ppo_rollout_metrics(&c, &seqs, kl, old_logp, scores, raw, has_eos, NULL, values, use_critic ? ret : NULL, &m))
            die("%s", align_error());
        /* ---- update ---- */
        t0 = align_now();
        w = wire_writer_new("update");
        ppo_put_ragged(w, "prompt_tokens", "prompt_offsets", ptok, poff, S);
        ppo_put_ragged(w, "tokens", "offsets", rtok, roff, S);
        wire_put_vec(w, "old_logp", WIRE_F32, old_logp, (size_t)T);
        wire_put_vec(w, "advantages", WIRE_F32, adv, (size_t)T);
        if (use_critic) {
            wire_put_vec(w, "returns", WIRE_F32, ret, (size_t)T);
            wire_put_vec(w, "old_values", WIRE_F32, values, (size_t)T);
        }
        if (c.kl_loss_coef > 0) wire_put_vec(w, "ref_logp", WIRE_F32, ref_logp, (size_t)T);
        wire_put_int(w, "ppo_epochs", ppo_epochs);
        wire_put_int(w, "minibatch_size", mbs);
        wire_put_int(w, "seed", a.seed);
        wire_put_int(w, "iteration", st.iteration);
        Call up;
        call_init(&up, G.policy, w);
        need_reply_ok(run_calls(&up, 1, 0), "the PPO update");
        {
            char **keys;
            size_t nk;
            WireArray vals;
            if (wire_get_str_array(up.reply, "keys", ppo_wire_limits(), &keys, &nk) ||
                wire_get_array(up.reply, "values", WIRE_F64, ppo_wire_limits(), &vals) || vals.numel != nk)
                die("the PPO update: a bad reply: %s", align_error());
            for (size_t i = 0; i < nk; i++) metrics_set(&m, keys[i], ((double *)vals.data)[i]);
            free(keys), free(vals.data);
        }
        call_free(&up);
        double t_up = align_now() - t0;
        /* ---- KL control, weight sync ---- */
        ctl.value = ppo_kl_controller_update(&ctl, metrics_get(&m, "objective/kl", 0), S);
        st.kl_coef = ctl.value;
        t0 = align_now();
        G.weights_version = st.iteration + 1;
        sync_rollouts();
        double t_sync = align_now() - t0;
        double t_all = align_now() - t_it;
        metrics_set(&m, "time/generate", t_gen);
        metrics_set(&m, "time/reference", t_ref);
        metrics_set(&m, "time/reward", t_rew);
        if (use_critic) metrics_set(&m, "time/values", t_val);
        metrics_set(&m, "time/score_all", t_score);
        metrics_set(&m, "time/update", t_up);
        metrics_set(&m, "time/weight_sync", t_sync);
        metrics_set(&m, "weight_sync/bytes", (double)G.sync_bytes);
        metrics_set(&m, "time/iteration", t_all);
        metrics_set(&m, "tokens_per_s", t_gen > 0 ? T / t_gen : 0);
        metrics_set(&m, "val/mean_response_length", (double)T / S);
        double epoch = (double)(st.iteration + 1) * P / ps.ds.n;
        metrics_log_step(&log, st.iteration + 1, total_iters, epoch, &m, shown);
        free(pp_off), free(ex), free(pp_tok), free(poff), free(roff), free(has_eos), free(ptok), free(rtok), free(old_logp);
        free(ref_logp), free(raw), free(values), free(kl), free(scores), free(rewards), free(adv), free(ret);
        /* ---- checkpoint ---- */
        long done_iters = st.iteration + 1;
        int periodic = a.save_every > 0 && done_iters % a.save_every == 0 && done_iters < total_iters;
        if (periodic || interrupted) {
            RunState s2 = st;
            s2.iteration = done_iters;
            char pol[PATH_MAX], crit[PATH_MAX];
            ckpt_paths(a.out, done_iters, pol, crit, sizeof pol);
            char *js = state_json(&s2, &a, n_samples);
            save_via_policy(pol, crit, js, 1, NULL);
            free(js);
            if (G.last_ckpt[0] && strcmp(G.last_ckpt, pol)) {
                char op[PATH_MAX], oc[PATH_MAX];
                snprintf(op, sizeof op, "%s", G.last_ckpt);
                size_t l = strlen(op);
                if (l > 5) op[l - 5] = 0;
                snprintf(oc, sizeof oc, "%s-critic.ckpt", op);
                unlink(G.last_ckpt), unlink(oc);
            }
            snprintf(G.last_ckpt, sizeof G.last_ckpt, "%s", pol);
            if (interrupted) {
                fprintf(stderr, "\n" PROG ": interrupted after iteration %ld; saved %s (continue with --resume %s)\n",
                        done_iters, pol, pol);
                rc = 130;
                break;
            }
        }
    }
    if (!rc) {
        RunState s2 = st;
        char pol[PATH_MAX], crit[PATH_MAX];
        ckpt_paths(a.out, -1, pol, crit, sizeof pol);
        char *js = state_json(&s2, &a, n_samples);
        save_via_policy(pol, crit, js, 0, a.lora_out);
        free(js);
        fprintf(stderr, PROG ": saved %s%s%s after %ld iterations\n", pol, use_critic ? " and " : "", use_critic ? crit : "",
                st.iteration);
    }
    metrics_log_close(&log);
    kill_children();
    for (int i = 0; i < G.n_peers; i++) {
        if (G.peer[i].sock) zmq_close(G.peer[i].sock);
        free(G.peer[i].setup);
    }
    zmq_ctx_term(G.ctx);
    ds_free(&ps.ds);
    free(ps.order);
    cli_free(&spec);
    return rc;
}
