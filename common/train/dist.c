#include "dist.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist_rendezvous.h"
#include "util.h"

#ifdef ALIGN_HAVE_MPI
#include <mpi.h>
#include <pthread.h>
#endif

static int g_rank = 0, g_size = 1, g_inited = 0, g_launched = 0;
static char g_prefix[160];        /* "prog: rank R: " for the fault lines */
static char g_prog[64];           /* "prog" */
static char g_hint[4096];         /* the last checkpoint, for the fault lines */
static double g_comm_time;
static DistRendezvous g_rdv;      /* --dist-init, when given (g_rdv.size > 0) */

/* Before dist_init, the launcher's word (so loading messages can be
 * printed once per job, not once per rank). */
int dist_rank(void) {
    if (g_inited) return g_rank;
    if (g_rdv.size) return g_rdv.rank;
    const char *names[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
    for (int i = 0; i < 3; i++)
        if (getenv(names[i])) return atoi(getenv(names[i]));
    return 0;
}
int dist_size(void) { return g_size; }

void dist_set_resume_hint(const char *path) { snprintf(g_hint, sizeof g_hint, "%s", path ? path : ""); }

/* The launcher's environment, if one started this process. */
static const char *launcher_env(void) {
    const char *names[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"};
    for (int i = 0; i < 3; i++)
        if (getenv(names[i])) return names[i];
    return NULL;
}

int dist_set_rendezvous(const char *url, int rank, int world_size) {
    if (!url) {
        if (rank >= 0 || world_size > 0)
            return align_errorf("--rank and --world-size go with --dist-init tcp://HOST:PORT (under mpirun, mpirun numbers the ranks)");
        return 0;
    }
    if (rank < 0) return align_errorf("--dist-init needs --rank R (this process's rank, 0 to N-1)");
    /* joined already (trainer_load_policy meets early; trainer_run checks
     * the flags again): OpenMPI has set PMIX_RANK by now, which is no launcher */
    if (g_inited && g_rdv.size && g_rdv.rank == rank && g_rdv.size == world_size) return 0;
    DistRendezvous r;
    if (dist_rendezvous_parse(url, rank, world_size, &r)) return -1;
    const char *env = launcher_env();
    if (env)
        return align_errorf("--dist-init with a launcher (%s is set): under mpirun the ranks already meet; drop --dist-init, --rank "
                            "and --world-size", env);
#ifndef ALIGN_HAVE_MPI
    if (world_size > 1)
        return align_errorf("--dist-init with --world-size %d: this build has no MPI (install libopenmpi-dev and rebuild)", world_size);
#endif
    if (g_inited && (!g_rdv.size || g_rdv.rank != rank || g_rdv.size != world_size))
        return align_errorf("--dist-init given after the job was joined");
    g_rdv = r;
    return 0;
}

double dist_take_comm_time(void) {
    double t = g_comm_time;
    g_comm_time = 0;
    return t;
}

#ifdef ALIGN_HAVE_MPI
int dist_available(void) { return 1; }

/* Where each rank runs, so a SIGTERM from mpirun can name the rank whose
 * process is gone (those on this host; a remote one shows as "another host"). */
typedef struct {
    int pid;
    char host[64];
} Peer;
static Peer *g_peers;
static char g_host[64];
/* The job's communicator: MPI_COMM_WORLD under mpirun, the joined one
 * with --dist-init (dist_rendezvous.h). */
static MPI_Comm g_world;

/* The watchdog's view of the collective in flight (0 = none), in ms. */
static atomic_llong g_coll_since;
static double g_timeout_s;

static long long now_ms(void) { return (long long)(align_now() * 1000.0); }

/* async-signal-safe output: write(2) of pieces */
static void say(const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w, n -= (size_t)w;
    }
}
static void say_int(long v) {
    char b[24];
    int i = sizeof b - 1;
    b[i] = 0;
    int neg = v < 0;
    unsigned long u = neg ? -(unsigned long)v : (unsigned long)v;
    do b[--i] = (char)('0' + u % 10), u /= 10;
    while (u && i > 1);
    if (neg) b[--i] = '-';
    say(b + i);
}

static void say_resume(void) {
    if (g_hint[0]) {
        say("; resume with --resume ");
        say(g_hint);
        say(" (any number of ranks)\n");
    } else {
        say("; no checkpoint was written yet (--save-every N keeps one), so start again\n");
    }
}

/* dist_exit_agreed is under way: every rank leaves with this status on
 * purpose, so a peer gone meanwhile is no loss to report. */
static atomic_int g_agreed;

/* mpirun ends the whole job when one rank dies: every other rank gets
 * SIGTERM. Name the lost ones on this host, say where to resume, leave.
 * A signal sent to this rank by someone else (kill, a scheduler) is said
 * as such by this rank: it was not lost and mpirun was not interrupted. */
static void on_term(int sig, siginfo_t *si, void *uctx) {
    (void)uctx;
    int agreed = atomic_load(&g_agreed);
    if (agreed) _exit(agreed); /* the job is ending on a fault every rank found; it was said once */
    if (!g_rdv.size && si && si->si_code <= 0 && si->si_pid > 0 && si->si_pid != getppid()) {
        /* si_code <= 0: sent by a process (kill, sigqueue, tkill); the parent is mpirun or its orted */
        say(g_prefix);
        say(sig == SIGINT ? "stopped by SIGINT from pid " : "stopped by SIGTERM from pid ");
        say_int(si->si_pid);
        say(" (not from mpirun); the job stops with this rank, nothing was written half");
        say_resume();
        _exit(1);
    }
    if (g_rdv.size) { /* no mpirun sent this: someone stopped this rank; the others hear it */
        say(g_prefix);
        say("stopped by a signal; stopping the job, nothing was written half");
        say_resume();
        dist_rendezvous_leave(128 + sig);
        _exit(1);
    }
    int lost = 0, lower_alive = 0;
    for (int r = 0; r < g_size; r++) {
        if (r == g_rank || !g_peers || strcmp(g_peers[r].host, g_host)) continue;
        int gone = kill(g_peers[r].pid, 0) != 0 && errno == ESRCH;
        if (!gone && r < g_rank) lower_alive = 1;
    }
    if (!lower_alive) { /* one line for the job: the lowest surviving rank's */
        say(g_prefix);
        say("the job was stopped: ");
        for (int r = 0; r < g_size; r++) {
            if (r == g_rank || !g_peers || strcmp(g_peers[r].host, g_host)) continue;
            if (kill(g_peers[r].pid, 0) != 0 && errno == ESRCH) {
                say(lost++ ? ", rank " : "rank ");
                say_int(r);
                say(" (pid ");
                say_int(g_peers[r].pid);
                say(")");
            }
        }
        if (lost) say(lost > 1 ? " were lost" : " was lost");
        else say("mpirun was interrupted or a rank on another host was lost");
        say("; nothing was written half");
        say_resume();
    }
    _exit(1);
}

static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        sleep(1);
        long long since = atomic_load(&g_coll_since);
        if (since && (now_ms() - since) / 1000.0 > g_timeout_s) {
            say(g_prefix);
            say("a collective waited more than ");
            say_int((long)g_timeout_s);
            say(" s (a rank is hung or unreachable); aborting the job");
            say_resume();
            if (g_rdv.size) dist_rendezvous_leave(1); /* no mpirun: the peers hear it from us */
            else MPI_Abort(g_world, 1);
            _exit(1);
        }
    }
    return NULL;
}

static void finalize_at_exit(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

/* With --dist-init: the liveness thread found rank `rank` gone (status -1:
 * killed; else the status it left with). One line, then leave. */
static void on_lost(int rank, int status) {
    if (atomic_load(&g_agreed)) return; /* every rank is leaving on purpose (dist_exit_agreed) */
    say(g_prefix);
    if (status == DIST_RDV_STOPPED) { /* dist_stop_job on that rank: a clean end, not a fault */
        say("the job was stopped by a signal to rank ");
        say_int(rank);
        say("; leaving\n");
        dist_rendezvous_remove_tmp();
        _exit(0);
    }
    say("the job was stopped: rank ");
    say_int(rank);
    if (g_peers && rank >= 0 && rank < g_size && g_peers[rank].pid) {
        say(" (pid ");
        say_int(g_peers[rank].pid);
        say(" on ");
        say(g_peers[rank].host);
        say(")");
    }
    if (status < 0) {
        say(" was lost");
    } else {
        say(" left with exit status ");
        say_int(status);
        say(" (its own output says why)");
    }
    say("; nothing was written half");
    say_resume();
    dist_rendezvous_leave(1);
    _exit(1);
}

/* With --dist-init, at exit: a clean end waits for every rank (rank 0 may
 * still be writing the model) and says goodbye; an error end tells the
 * peers at once. No MPI_Finalize: after MPI_Comm_accept/connect, OpenMPI
 * 4.1's finalize sometimes hangs (2 of 10 probe runs, docs/DECISIONS.md), and
 * the process ending frees everything anyway. */
static void rendezvous_exit(int status, void *arg) {
    (void)arg;
    if (status == 0 && g_size > 1) {
        long long t0 = now_ms();
        atomic_store(&g_coll_since, t0); /* the watchdog bounds it */
        if (MPI_Barrier(g_world) != MPI_SUCCESS) status = 1;
        atomic_store(&g_coll_since, 0);
    }
    dist_rendezvous_leave(status);
}

static int mpi_fail(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    /* most often a peer is gone: say where to resume, as the SIGTERM path does */
    if (g_hint[0])
        return align_errorf("%s failed on rank %d of %d: %.*s (a rank may have been lost; resume with --resume %s)", what,
                            g_rank, g_size, len, msg, g_hint);
    return align_errorf("%s failed on rank %d of %d: %.*s (a rank may have been lost; no checkpoint was written yet)",
                        what, g_rank, g_size, len, msg);
}

static void coll_begin(void) { atomic_store(&g_coll_since, now_ms()); }
static void coll_end(long long t0) {
    atomic_store(&g_coll_since, 0);
    g_comm_time += (now_ms() - t0) / 1000.0;
}

int dist_init(const char *prog, double timeout_s) {
    if (g_inited) return 0;
    g_inited = 1;
    snprintf(g_prog, sizeof g_prog, "%s", prog);
    if (g_rdv.size) {
        g_launched = 1;
        snprintf(g_prefix, sizeof g_prefix, "%s: rank %d of %d: ", prog, g_rdv.rank, g_rdv.size);
        signal(SIGPIPE, SIG_IGN); /* OpenMPI's sockets to a peer gone: an error, not a silent death */
        if (dist_rendezvous_join(&g_rdv, timeout_s, &g_world, on_lost)) {
            /* the others hear it through the sockets; MPI is left as it is */
            dist_rendezvous_leave(1);
            return -1;
        }
        on_exit(rendezvous_exit, NULL);
    } else {
        if (!launcher_env()) return 0; /* no launcher: a world of one, MPI untouched */
        g_launched = 1;
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return align_errorf("MPI_Init failed (started by mpirun?)");
        g_world = MPI_COMM_WORLD;
        atexit(finalize_at_exit);
    }
    MPI_Comm_set_errhandler(g_world, MPI_ERRORS_RETURN);
    MPI_Comm_rank(g_world, &g_rank);
    MPI_Comm_size(g_world, &g_size);
    snprintf(g_prefix, sizeof g_prefix, "%s: rank %d of %d: ", prog, g_rank, g_size);
    gethostname(g_host, sizeof g_host - 1);
    g_peers = calloc((size_t)g_size, sizeof *g_peers);
    if (!g_peers) return align_errorf("out of memory");
    Peer me = {.pid = (int)getpid()};
    memcpy(me.host, g_host, sizeof me.host);
    if (MPI_Allgather(&me, sizeof me, MPI_BYTE, g_peers, sizeof me, MPI_BYTE, g_world) != MPI_SUCCESS)
        return align_errorf("MPI_Allgather of the ranks' hosts failed");
    struct sigaction sa = {0};
    sa.sa_sigaction = on_term;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    g_timeout_s = timeout_s;
    if (timeout_s > 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, watchdog, NULL) == 0) pthread_detach(t);
    }
    return 0;
}

int dist_local_rank(void) {
    const char *env = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (env) return atoi(env);
    int local = 0;
    for (int r = 0; g_peers && r < g_rank; r++) local += !strcmp(g_peers[r].host, g_host);
    return local;
}

/* MPI counts are ints: bigger buffers go in buckets. */
#define BUCKET (64L << 20)

int dist_allreduce_sum(float *buf, size_t n) {
    if (g_size == 1) return 0;
    long long t0 = now_ms();
    coll_begin();
    for (size_t at = 0; at < n; at += BUCKET) {
        int k = (int)(n - at < (size_t)BUCKET ? n - at : (size_t)BUCKET);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + at, k, MPI_FLOAT, MPI_SUM, g_world);
        if (rc != MPI_SUCCESS) {
            coll_end(t0);
            return mpi_fail(rc, "MPI_Allreduce of the gradients");
        }
    }
    coll_end(t0);
    return 0;
}

/* The sums started by dist_iallreduce_sum and not yet waited for. */
static MPI_Request *g_reqs;
static int g_n_reqs, g_cap_reqs;

int dist_iallreduce_sum(float *buf, size_t n) {
    if (g_size == 1) return 0;
    long long t0 = now_ms();
    for (size_t at = 0; at < n; at += BUCKET) {
        if (g_n_reqs == g_cap_reqs) {
            int cap = g_cap_reqs ? 2 * g_cap_reqs : 64;
            MPI_Request *r = realloc(g_reqs, (size_t)cap * sizeof *r);
            if (!r) return align_errorf("out of memory");
            g_reqs = r, g_cap_reqs = cap;
        }
        int k = (int)(n - at < (size_t)BUCKET ? n - at : (size_t)BUCKET);
        int rc = MPI_Iallreduce(MPI_IN_PLACE, buf + at, k, MPI_FLOAT, MPI_SUM, g_world, &g_reqs[g_n_reqs]);
        if (rc != MPI_SUCCESS) {
            g_comm_time += (now_ms() - t0) / 1000.0;
            return mpi_fail(rc, "MPI_Iallreduce of the gradients");
        }
        g_n_reqs++;
    }
    g_comm_time += (now_ms() - t0) / 1000.0;
    return 0;
}

int dist_progress(void) {
    if (!g_n_reqs) return 0;
    long long t0 = now_ms();
    int done = 0, rc = MPI_Testall(g_n_reqs, g_reqs, &done, MPI_STATUSES_IGNORE);
    g_comm_time += (now_ms() - t0) / 1000.0;
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Testall of the gradient sums");
    if (done) g_n_reqs = 0; /* completed requests are MPI_REQUEST_NULL now */
    return 0;
}

int dist_wait_sums(void) {
    if (!g_n_reqs) return 0;
    long long t0 = now_ms();
    coll_begin(); /* the watchdog bounds the wait as it bounds a blocking collective */
    int rc = MPI_Waitall(g_n_reqs, g_reqs, MPI_STATUSES_IGNORE);
    coll_end(t0);
    g_n_reqs = 0;
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Waitall of the gradient sums");
}

static int allreduce_double(double *buf, int n, MPI_Op op) {
    if (g_size == 1) return 0;
    long long t0 = now_ms();
    coll_begin();
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, op, g_world);
    coll_end(t0);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Allreduce");
}
int dist_allreduce_sum_double(double *buf, int n) { return allreduce_double(buf, n, MPI_SUM); }
int dist_allreduce_max_double(double *buf, int n) { return allreduce_double(buf, n, MPI_MAX); }

int dist_allgather_bytes(const void *mine, void *all, size_t bytes) {
    if (g_size == 1) {
        memcpy(all, mine, bytes);
        return 0;
    }
    if (bytes > INT_MAX) return align_errorf("MPI_Allgather of %zu bytes: too large", bytes);
    long long t0 = now_ms();
    coll_begin();
    int rc = MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, g_world);
    coll_end(t0);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Allgather");
}

/* int counts and displacements, or an error past INT_MAX elements */
static int int_layout(const size_t *counts, const size_t *displs, int *ic, int *id) {
    for (int r = 0; r < g_size; r++) {
        if (counts[r] > INT_MAX || displs[r] > INT_MAX)
            return align_errorf("a sharded run of %zu floats at %zu exceeds MPI's int counts", counts[r], displs[r]);
        ic[r] = (int)counts[r];
        id[r] = (int)displs[r];
    }
    return 0;
}

int dist_allgatherv(float *buf, const size_t *counts, const size_t *displs) {
    if (g_size == 1) return 0;
    int *ic = malloc(2 * (size_t)g_size * sizeof(int));
    if (!ic) return align_errorf("out of memory");
    int *id = ic + g_size, rc = int_layout(counts, displs, ic, id);
    if (rc == 0) {
        long long t0 = now_ms();
        coll_begin();
        rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, ic, id, MPI_FLOAT, g_world);
        coll_end(t0);
        rc = rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Allgatherv of the parameters");
    }
    free(ic);
    return rc;
}

int dist_gatherv(const float *mine, float *all, const size_t *counts, const size_t *displs, int root) {
    if (g_size == 1) {
        if (counts[0]) memcpy(all + displs[0], mine, counts[0] * sizeof(float));
        return 0;
    }
    int *ic = malloc(2 * (size_t)g_size * sizeof(int));
    if (!ic) return align_errorf("out of memory");
    int *id = ic + g_size, rc = int_layout(counts, displs, ic, id);
    if (rc == 0) {
        long long t0 = now_ms();
        coll_begin();
        rc = MPI_Gatherv(mine, ic[g_rank], MPI_FLOAT, all, ic, id, MPI_FLOAT, root, g_world);
        coll_end(t0);
        rc = rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Gatherv of the optimizer moments");
    }
    free(ic);
    return rc;
}

int dist_bcast(void *buf, size_t bytes, int root) {
    if (g_size == 1) return 0;
    if (bytes > INT_MAX) return align_errorf("MPI_Bcast of %zu bytes: too large", bytes);
    long long t0 = now_ms();
    coll_begin();
    int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, g_world);
    coll_end(t0);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Bcast");
}

int dist_bcast_idle(void *buf, size_t bytes, int root) {
    if (g_size == 1) return 0;
    if (bytes > INT_MAX) return align_errorf("MPI_Ibcast of %zu bytes: too large", bytes);
    MPI_Request req;
    int rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, g_world, &req);
    for (int done = 0; rc == MPI_SUCCESS && !done;) {
        rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (!done) usleep(1000); /* a waiting rank must not take a core from the busy processes beside it */
    }
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Ibcast");
}

int dist_barrier(void) {
    if (g_size == 1) return 0;
    long long t0 = now_ms();
    coll_begin();
    int rc = MPI_Barrier(g_world);
    coll_end(t0);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Barrier");
}

void dist_abort(const char *why, int code) {
    /* a stop on purpose is under way (dist_stop_job): this collective failed
     * because the peers are leaving; the stopping thread ends the process
     * with exit 0 within seconds, so this one must not end it with code */
    if (g_rdv.size && dist_rendezvous_stopping())
        for (;;) pause();
    fprintf(stderr, "%s%s\n", g_prefix, why);
    /* with --dist-init, exit's handler tells the peers (rendezvous_exit) */
    if (g_size > 1 && !g_rdv.size) MPI_Abort(g_world, code);
    exit(code);
}

void dist_exit_agreed(const char *why, int code) {
    atomic_store(&g_agreed, code ? code : 1);
    if (g_rdv.size || g_rank == 0) fprintf(stderr, "%s: %s\n", g_prog, why);
    fflush(stderr);
    /* nobody leaves before every rank has said it: a peer that left first
     * would be reported as lost by a rank still on its way here */
    if (g_size > 1) {
        coll_begin();
        MPI_Barrier(g_world);
        atomic_store(&g_coll_since, 0);
    }
    if (g_rdv.size) dist_rendezvous_leave(code);
    exit(code);
}

#else /* no MPI in this build: a world of one */

int dist_available(void) { return 0; }

int dist_init(const char *prog, double timeout_s) {
    (void)timeout_s;
    if (g_inited) return 0;
    g_inited = 1;
    snprintf(g_prog, sizeof g_prog, "%s", prog);
    if (getenv("OMPI_COMM_WORLD_SIZE") && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1)
        return align_errorf("%s was started by mpirun but built without MPI (install libopenmpi-dev and rebuild)", prog);
    return 0;
}
int dist_allreduce_sum(float *buf, size_t n) { return (void)buf, (void)n, 0; }
int dist_iallreduce_sum(float *buf, size_t n) { return (void)buf, (void)n, 0; }
int dist_progress(void) { return 0; }
int dist_wait_sums(void) { return 0; }
int dist_allreduce_sum_double(double *buf, int n) { return (void)buf, (void)n, 0; }
int dist_allreduce_max_double(double *buf, int n) { return (void)buf, (void)n, 0; }
int dist_allgather_bytes(const void *mine, void *all, size_t bytes) {
    memcpy(all, mine, bytes);
    return 0;
}
int dist_allgatherv(float *buf, const size_t *counts, const size_t *displs) {
    return (void)buf, (void)counts, (void)displs, 0;
}
int dist_gatherv(const float *mine, float *all, const size_t *counts, const size_t *displs, int root) {
    (void)root;
    if (counts[0]) memcpy(all + displs[0], mine, counts[0] * sizeof(float));
    return 0;
}
int dist_bcast(void *buf, size_t bytes, int root) { return (void)buf, (void)bytes, (void)root, 0; }
int dist_bcast_idle(void *buf, size_t bytes, int root) { return (void)buf, (void)bytes, (void)root, 0; }
int dist_barrier(void) { return 0; }
int dist_local_rank(void) { return 0; }
void dist_abort(const char *why, int code) {
    fprintf(stderr, "%s%s\n", g_prefix, why);
    exit(code);
}
void dist_exit_agreed(const char *why, int code) {
    fprintf(stderr, "%s: %s\n", g_prog, why);
    exit(code);
}
#endif

int dist_merge_metrics(Metrics *acc) {
    int world = dist_size();
    if (world == 1) return 0;
    Metrics *all = malloc((size_t)world * sizeof *all);
    if (!all) return align_errorf("out of memory");
    int rc = dist_allgather_bytes(acc, all, sizeof *acc);
    if (rc == 0) {
        metrics_clear(acc);
        for (int r = 0; r < world; r++) metrics_merge(acc, &all[r]);
    }
    free(all);
    return rc;
}

int dist_launched(void) { return g_launched; }

void dist_stop_job(void) {
#ifdef ALIGN_HAVE_MPI
    if (g_rdv.size && g_inited) {
        say(g_prefix);
        say("stopped by a signal; stopping every rank\n");
        dist_rendezvous_stop();
    }
#endif
    _exit(0);
}
