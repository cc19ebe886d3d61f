/* ppo_service: the worker side of PPO's processes (policy, reference,
 * rollout) and the message helpers they share with ppo_run.
 *
 * A worker binds one ROUTER (docs/PROTOCOL.md, "PPO workers"), like
 * reward_server, so it can be started by ppo_run or by hand on any
 * endpoint. Its model work (a PPO update, a batch of generation) takes
 * seconds to minutes, and ppo_run declares a worker dead after ~3 missed
 * pings, so a worker must answer pings WHILE it computes: the ROUTER belongs
 * to an I/O thread that answers "ping" itself (a "pong" saying whether the
 * worker is busy) and hands every other request to the compute thread over
 * an inproc PAIR; replies travel back the same way. The compute thread sees
 * one request at a time, in arrival order (ppo_service_next /
 * ppo_service_reply), so worker programs stay single-threaded.
 *
 * Only the ping peek is done on the I/O thread, and only for small bodies:
 * a 500 MB weights message is never parsed twice. Attachment frames (wire.h:
 * the weights of "weights_raw") pass from the I/O thread to the compute
 * thread without a copy and reach the request as ZeroMQ's own buffers.
 *
 * This file depends on align_core alone (wire, cli, backend, util), so rollout/, which
 * links nothing else, compiles it into rollout_worker directly. */
#ifndef ALIGN_PPO_SERVICE_H
#define ALIGN_PPO_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "cli.h"
#include "wire.h"

/* PPO messages carry whole models (weight sync) and whole rollout batches:
 * the 64 MiB default of the reward service is far too small. */
#define PPO_MAX_MESSAGE ((size_t)4 << 30)

typedef struct PpoService PpoService;

typedef struct {
    WireFrames env; /* routing envelope (body freed) */
    WireMsg *msg;   /* parsed body; NULL when it did not parse (error already answered) */
    const char *op; /* wire_op(msg) */
    uint64_t id;
    int has_id;
    int n_att;      /* attachments (raw frames the body announced; wire.h) */
    void *att[WIRE_MAX_ATTACH]; /* zmq_msg_t *, released with the request */
} PpoRequest;

/* CurveZMQ for a worker's socket (curve.h): its secret key file (NULL: no
 * CURVE) and, optionally, the file of client public keys it admits. */
typedef struct {
    const char *secret_file;
    const char *allow_file;
} PpoCurve;

/* Bind a ROUTER on endpoint and start the I/O thread. service: the name
 * put in pongs ("policy", "reference", "rollout"); curve may be NULL.
 * NULL with an error. */
PpoService *ppo_service_start(const char *service, const char *endpoint, const PpoCurve *curve);
/* The endpoint actually bound (tcp://127.0.0.1:* resolved). */
const char *ppo_service_endpoint(const PpoService *s);
/* Block until the next request that is not a ping. Messages that do not
 * parse, carry another protocol version or announce more attachments than
 * they have are answered with an error here and skipped. 0 with *r filled, -1 on a socket error. */
int ppo_service_next(PpoService *s, PpoRequest *r);
/* Reply to r with w (consumed; "id" added when the request had one) and
 * release r. */
int ppo_service_reply(PpoService *s, PpoRequest *r, WireWriter *w);
/* Reply with {"op":"error","code","message"} and release r. */
int ppo_service_error(PpoService *s, PpoRequest *r, const char *code, const char *message);
void ppo_request_free(PpoRequest *r);
/* Attachment i of r in place (ZeroMQ's receive buffer, valid until the
 * request is released), or NULL when r has fewer. */
const void *ppo_request_attachment(const PpoRequest *r, int i, size_t *len);
void ppo_service_stop(PpoService *s);

/* ---- a worker program's main ----
 *
 * Every worker (ppo_policy, ppo_ref, rollout_worker) parses --bind,
 * --device and --seed, binds its service and answers requests one at a time
 * until its socket fails; a program adds only its own flags and one
 * function that answers a request. */

typedef struct {
    const char *prog;    /* "ppo_ref": the prefix of its messages */
    const char *service; /* "reference": put in pongs */
    const char *about;   /* --help's paragraph */
    const char *serves;  /* "the reference serves setup, logprobs, ping": said of an unknown op */
    const char *seed_help; /* --seed's help (workers get their seed with setup) */
    CliFlag *flags;      /* the program's own flags, beyond --bind, --device and --seed */
    int n_flags;
    /* Answer r: the reply (ppo_worker_main sends it), or NULL with the error
     * in align_error() and *code its wire code ("internal" unless the handler
     * sets another). An op the program does not serve: NULL with *code =
     * "unknown_op" and no message needed. */
    WireWriter *(*handle)(void *state, const Backend *be, PpoRequest *r, const char **code);
    /* Optional, for a worker run as several ranks (ppo_policy under
     * mpirun or --dist-init): called once the flags are read, with --bind's
     * endpoint (NULL when not given: only the serving rank needs one, and
     * follow says so); a rank that does not serve (it follows rank 0)
     * returns its exit status, a serving one -1. */
    int (*follow)(void *state, const Backend *be, const char *bind);
} PpoWorker;

/* The whole of a worker's main: returns the exit status (1 once the socket
 * fails; usage errors exit 2 inside). state goes to every handle call. */
int ppo_worker_main(const PpoWorker *w, void *state, int argc, char **argv);

/* The common limits for parsing PPO messages. */
const WireLimits *ppo_wire_limits(void);

/* A ragged i32 batch: data [off[n]] under key, n+1 offsets under okey. */
int ppo_put_ragged(WireWriter *w, const char *key, const char *okey, const int32_t *data, const int32_t *off, int n);
/* Read one back; *data and *off malloc'd (off has n+1 int32 entries).
 * Checks the offsets. */
int ppo_get_ragged(const WireMsg *m, const char *key, const char *okey, int32_t **data, int32_t **off, int *n);
/* A 1-D f32 array of exactly n elements (n < 0: any; *n_out may be NULL). */
int ppo_get_f32(const WireMsg *m, const char *key, long n, float **out, long *n_out);
/* An optional string field as a malloc'd NUL-terminated copy (NULL when
 * absent or nil). */
char *ppo_get_strdup(const WireMsg *m, const char *key);
/* Numbers with a default when absent. */
double ppo_get_num(const WireMsg *m, const char *key, double dflt);

#endif
