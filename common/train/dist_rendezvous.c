/* dist_rendezvous: hand-started ranks joined into one MPI communicator
 * through a TCP meeting point and an ompi-server (dist_rendezvous.h). */
#define _GNU_SOURCE /* accept4 */
#include "dist_rendezvous.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int dist_rendezvous_parse(const char *url, int rank, int size, DistRendezvous *out) {
    memset(out, 0, sizeof *out);
    if (!url || strncmp(url, "tcp://", 6))
        return align_errorf("--dist-init %s: expected tcp://HOST:PORT (rank 0's address, as torchrun's)", url ? url : "");
    const char *h = url + 6, *colon;
    size_t hl;
    if (*h == '[') { /* [IPv6]:PORT */
        const char *end = strchr(h, ']');
        if (!end || end[1] != ':') return align_errorf("--dist-init %s: expected tcp://[IPV6]:PORT", url);
        h++, hl = (size_t)(end - h), colon = end + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon) return align_errorf("--dist-init %s: no port (expected tcp://HOST:PORT)", url);
        hl = (size_t)(colon - h);
    }
    if (hl == 0 || hl >= sizeof out->host) return align_errorf("--dist-init %s: no host (expected tcp://HOST:PORT)", url);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == 0 || *end || port < 1 || port > 65535)
        return align_errorf("--dist-init %s: the port must be a number from 1 to 65535", url);
    if (size < 1) return align_errorf("--dist-init needs --world-size N (the number of ranks, at least 1)");
    if (rank < 0 || rank >= size)
        return align_errorf("--rank %d: expected 0 to %d (--world-size %d); every rank is started with its own --rank", rank,
                            size - 1, size);
    memcpy(out->host, h, hl);
    snprintf(out->port, sizeof out->port, "%ld", port);
    out->rank = rank, out->size = size;
    return 0;
}

#ifdef ALIGN_HAVE_MPI
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* What a rank says when it arrives at rank 0. */
typedef struct {
    char magic[8];
    int32_t rank, size, pid;
    char host[64];
} Hello;
#define HELLO_MAGIC "ALIGNRV1"

/* Rank 0's answer once all have arrived (or why the job cannot start). */
typedef struct {
    int32_t ok;
    char text[1024]; /* ok: the ompi-server URI; else one sentence */
} Answer;

/* Messages for the rest of the run: rank 0's "your turn to connect"
 * (followed by the port name: ranks must join in rank order, as MPI_Comm_accept
 * takes whichever connect comes first), then goodbyes and losses, and the
 * stop of a job that has no end of its own (rank = the rank told to stop). */
enum { MSG_BYE = 1, MSG_LOST = 2, MSG_TURN = 3, MSG_STOP = 4 };
typedef struct {
    int32_t type, rank, status;
} Msg;

static int g_me, g_n;
static int *g_fd;                /* rank 0: the socket of each rank (g_fd[0] unused); others: g_fd[0] */
static int g_lfd = -1;           /* rank 0: the meeting point, open for the run (late comers are refused) */
static char g_addr[300];         /* "tcp://HOST:PORT", for those refusals */
static pid_t g_server = -1;      /* rank 0's ompi-server */
static char g_server_dir[64];    /* its URI file's folder */
static char g_mpi_tmp[512];     /* this rank's OpenMPI session folder (its orted's too), removed at exit */
static atomic_int g_tmp_removed;
static atomic_int g_leaving;
static atomic_int g_stopping;    /* a stop on purpose (MSG_STOP) is under way */
static DistLostFn g_lost;

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL); /* a peer gone must not SIGPIPE us */
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* Read n bytes, waiting until the deadline (align_now() seconds; 0 = forever).
 * Returns 0, -1 on EOF or error, -2 on timeout. */
static int read_all(int fd, void *buf, size_t n, double deadline) {
    char *p = buf;
    while (n) {
        int ms = -1;
        if (deadline > 0) {
            double left = deadline - align_now();
            if (left <= 0) return -2;
            ms = (int)(left * 1000) + 1;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int k = poll(&pf, 1, ms);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        if (k == 0) continue; /* the deadline check above ends it */
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r, n -= (size_t)r;
    }
    return 0;
}

static struct addrinfo *resolve(const DistRendezvous *r, int passive) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0}, *ai;
    int e = getaddrinfo(r->host, r->port, &hints, &ai);
    if (e) {
        align_errorf("--dist-init tcp://%s:%s: cannot resolve %s: %s", r->host, r->port, r->host, gai_strerror(e));
        return NULL;
    }
    return ai;
}

/* Rank 0's meeting point: HOST must be an address of this host (a probe
 * bind to each address it resolves to, port 0), but the socket listens on
 * every address at PORT, as torchrun's store does: the other hosts may
 * reach this one by an address HOST does not resolve to here (Debian maps
 * the host's own name to 127.0.1.1 in /etc/hosts, and a listener on that
 * alone is out of their reach). */
static int listen_on(const DistRendezvous *r) {
    struct addrinfo *ai = resolve(r, 1);
    if (!ai) return -1;
    int local = 0, err = EADDRNOTAVAIL;
    for (struct addrinfo *a = ai; a && !local; a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        struct sockaddr_storage ss;
        memcpy(&ss, a->ai_addr, a->ai_addrlen);
        if (ss.ss_family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = 0;
        else if (ss.ss_family == AF_INET6) ((struct sockaddr_in6 *)&ss)->sin6_port = 0;
        if (bind(fd, (struct sockaddr *)&ss, a->ai_addrlen) == 0) local = 1;
        else err = errno;
        close(fd);
    }
    freeaddrinfo(ai);
    if (!local && err == EADDRNOTAVAIL)
        return align_errorf("--dist-init tcp://%s:%s: %s is not an address of this host; rank 0 runs on the host --dist-init names",
                            r->host, r->port, r->host);
    if (!local) return align_errorf("--dist-init tcp://%s:%s: cannot listen: %s", r->host, r->port, strerror(err));
    int port = atoi(r->port), one = 1, zero = 0;
    /* IPv6 with IPv4 mapped (both families on one socket), or IPv4 alone where there is no IPv6 */
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    err = 0;
    if (fd >= 0) {
        struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = IN6ADDR_ANY_INIT};
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* a previous job's TIME_WAIT must not block the port */
        if (bind(fd, (struct sockaddr *)&any6, sizeof any6) || listen(fd, 128)) err = errno, close(fd), fd = -1;
    }
    if (fd < 0 && err != EADDRINUSE) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        err = fd < 0 ? errno : 0;
        if (fd >= 0) {
            struct sockaddr_in any4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = {htonl(INADDR_ANY)}};
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (bind(fd, (struct sockaddr *)&any4, sizeof any4) || listen(fd, 128)) err = errno, close(fd), fd = -1;
        }
    }
    if (fd >= 0) return fd;
    if (err == EADDRINUSE)
        return align_errorf("--dist-init tcp://%s:%s: port %s is in use on this host (another job's rank 0?); pick another port",
                            r->host, r->port, r->port);
    return align_errorf("--dist-init tcp://%s:%s: cannot listen: %s", r->host, r->port, strerror(err));
}

/* A rank's way to rank 0: retried until the deadline, as rank 0 may start later. */
static int connect_to(const DistRendezvous *r, double deadline, double timeout_s) {
    for (;;) {
        struct addrinfo *ai = resolve(r, 0);
        if (!ai) return -1;
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
            int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) continue;
            if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
                freeaddrinfo(ai);
                return fd;
            }
            close(fd);
        }
        freeaddrinfo(ai);
        if (deadline > 0 && align_now() > deadline)
            return align_errorf("--dist-init tcp://%s:%s: rank 0 did not answer within %.0f s (--dist-timeout); is it running there?",
                                r->host, r->port, timeout_s);
        usleep(200 * 1000);
    }
}

/* ompi-server, the name service through which OpenMPI 4.1 singletons
 * connect; it reports its URI in a file and dies with rank 0. */
static int start_server(char *uri, size_t cap) {
    snprintf(g_server_dir, sizeof g_server_dir, "/tmp/align-rdv-XXXXXX");
    if (!mkdtemp(g_server_dir)) return align_errorf("cannot make a folder under /tmp for ompi-server's URI: %s", strerror(errno));
    char path[96];
    snprintf(path, sizeof path, "%s/uri", g_server_dir);
    pid_t parent = getpid();
    g_server = fork();
    if (g_server < 0) return align_errorf("cannot start ompi-server: fork: %s", strerror(errno));
    if (g_server == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* rank 0 killed: its server goes too */
        if (getppid() != parent) _exit(1);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1), dup2(null, 2); /* it prints the signals it forwards */
        execlp("ompi-server", "ompi-server", "--no-daemonize", "--report-uri", path, (char *)NULL);
        _exit(127);
    }
    for (double until = align_now() + 30; align_now() < until;) {
        int st;
        if (waitpid(g_server, &st, WNOHANG) == g_server) {
            g_server = -1;
            return align_errorf("ompi-server could not be started (%s); --dist-init needs OpenMPI's ompi-server (apt-get install openmpi-bin)",
                                WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "not found" : "it exited at once");
        }
        FILE *f = fopen(path, "r");
        if (f) {
            int whole = fgets(uri, (int)cap, f) && strchr(uri, '\n');
            fclose(f);
            if (whole) { /* read once: nothing is left on disk, even if rank 0 is killed */
                uri[strcspn(uri, "\n")] = 0;
                unlink(path);
                rmdir(g_server_dir);
                g_server_dir[0] = 0;
                return 0;
            }
        }
        usleep(20 * 1000);
    }
    return align_errorf("ompi-server did not report its address within 30 s");
}

static void stop_server(void) { /* async-signal-safe */
    if (g_server > 0) {
        kill(g_server, SIGTERM);
        g_server = -1;
    }
    if (g_server_dir[0]) {
        char path[96];
        size_t n = strlen(g_server_dir);
        memcpy(path, g_server_dir, n);
        memcpy(path + n, "/uri", 5);
        unlink(path);
        rmdir(g_server_dir);
        g_server_dir[0] = 0;
    }
}

/* Remove name (under the folder parent_fd) and all below it.
 * Async-signal-safe (openat, getdents64, unlinkat): the fault paths that
 * _exit call it too. OpenMPI's session tree is a few levels deep. */
static void remove_tree(int parent_fd, const char *name, int depth) {
    int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    for (int pass = 0; fd >= 0 && pass < 3; pass++) { /* entries removed while listing may hide others: list again */
        char buf[4096];
        lseek(fd, 0, SEEK_SET);
        long n, removed = 0;
        while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
            for (long at = 0; at < n;) {
                struct {
                    uint64_t ino;
                    int64_t off;
                    unsigned short reclen;
                    unsigned char type;
                    char name[];
                } *d = (void *)(buf + at);
                at += d->reclen;
                if (d->name[0] == '.' && (!d->name[1] || (d->name[1] == '.' && !d->name[2]))) continue;
                if (unlinkat(fd, d->name, 0) == 0) removed++;
                else if (errno == EISDIR && depth < 8) remove_tree(fd, d->name, depth + 1), removed++;
            }
        }
        if (!removed) break;
    }
    if (fd >= 0) close(fd);
    unlinkat(parent_fd, name, AT_REMOVEDIR);
}

void dist_rendezvous_remove_tmp(void) {
    if (!g_mpi_tmp[0] || atomic_exchange(&g_tmp_removed, 1)) return;
    remove_tree(AT_FDCWD, g_mpi_tmp, 0);
}

void dist_rendezvous_leave(int status) {
    if (atomic_exchange(&g_leaving, 1) || !g_fd) return;
    Msg m = {MSG_BYE, g_me, status};
    if (g_me == 0) {
        for (int r = 1; r < g_n; r++)
            if (g_fd[r] >= 0) write_all(g_fd[r], &m, sizeof m);
        if (g_lfd >= 0) close(g_lfd), g_lfd = -1;
        stop_server();
    } else if (g_fd[0] >= 0) {
        write_all(g_fd[0], &m, sizeof m);
    }
    dist_rendezvous_remove_tmp();
}

/* Wait until the peer of fd has closed it (its process is gone), at most
 * until `until` (align_now() seconds); whatever it still sends is dropped.
 * Async-signal-safe: poll and recv. The liveness thread may read the same
 * socket meanwhile; the end of the stream stays readable for both. */
static void wait_closed(int fd, double until) {
    while (fd >= 0) {
        int ms = (int)((until - align_now()) * 1000);
        if (ms <= 0) return;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int k = poll(&pf, 1, ms);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return;
        char buf[64];
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return;
    }
}

/* Rank 0: tell every rank but `from` that the job is stopped (by `from`),
 * wait for them to go (3 s at most: a rank stuck in a computation does not
 * hold the others), then stop the server. */
static void stop_others(int from) {
    Msg m = {MSG_STOP, from, 0};
    for (int r = 1; r < g_n; r++)
        if (r != from && g_fd[r] >= 0) write_all(g_fd[r], &m, sizeof m);
    double until = align_now() + 3;
    for (int r = 1; r < g_n; r++)
        if (r != from) wait_closed(g_fd[r], until);
    pid_t server = g_server;
    stop_server();
    /* reap it (a second at most), so not even a zombie outlives the job */
    struct timespec nap = {0, 5 * 1000 * 1000}; /* nanosleep: async-signal-safe, usleep is not listed */
    for (double end = align_now() + 1; server > 0 && waitpid(server, NULL, WNOHANG) == 0 && align_now() < end;)
        nanosleep(&nap, NULL);
}

int dist_rendezvous_stopping(void) { return atomic_load(&g_stopping); }

void dist_rendezvous_stop(void) {
    if (atomic_exchange(&g_leaving, 1) || !g_fd) return; /* already leaving: nothing more to tell */
    atomic_store(&g_stopping, 1);
    if (g_me == 0) {
        stop_others(0);
        dist_rendezvous_remove_tmp();
        return;
    }
    /* rank 0 passes it on and leaves once the others are gone: waiting for
     * it (longer than it waits for them) keeps this rank alive until then */
    Msg m = {MSG_STOP, g_me, 0};
    if (g_fd[0] >= 0 && !write_all(g_fd[0], &m, sizeof m)) wait_closed(g_fd[0], align_now() + 5);
    dist_rendezvous_remove_tmp();
}

/* Rank 0 tells the others which rank is gone before it stops itself. */
static void tell_lost(int rank, int status, const int *done) {
    Msg m = {MSG_LOST, rank, status};
    for (int r = 1; r < g_n; r++)
        if (r != rank && !done[r] && g_fd[r] >= 0) write_all(g_fd[r], &m, sizeof m);
}

/* Rank 0, while the job runs: a process arriving at the meeting point is
 * told the job has all its ranks (one hello read, a second at most: the
 * liveness of the real ranks waits meanwhile). */
static void refuse_late(int lfd) {
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) return;
    Hello h;
    if (read_all(c, &h, sizeof h, align_now() + 1) == 0 && !memcmp(h.magic, HELLO_MAGIC, 8)) {
        h.host[sizeof h.host - 1] = 0;
        Answer a = {.ok = 0};
        snprintf(a.text, sizeof a.text,
                 "the job at %s already runs with all its %d ranks; is --rank %d (pid %d on %s) started twice, or is this "
                 "another job's address?", g_addr, g_n, h.rank, h.pid, h.host);
        write_all(c, &a, sizeof a);
    }
    close(c);
}

/* The liveness thread: a peer's socket closing without a clean goodbye,
 * or a goodbye with an error status, stops this rank through g_lost. */
static void *watch(void *arg) {
    (void)arg;
    int n = g_me == 0 ? g_n - 1 : 1, lfd = g_me == 0 ? g_lfd : -1;
    struct pollfd *pf = calloc((size_t)n + 1, sizeof *pf);
    int *peer = calloc((size_t)n, sizeof *peer), *done = calloc((size_t)g_n, sizeof *done);
    if (!pf || !peer || !done) {
        free(pf), free(peer), free(done);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        peer[i] = g_me == 0 ? i + 1 : 0;
        pf[i] = (struct pollfd){.fd = g_fd[g_me == 0 ? i + 1 : 0], .events = POLLIN};
    }
    pf[n] = (struct pollfd){.fd = lfd, .events = POLLIN}; /* rank 0: late comers (fd -1 elsewhere: ignored) */
    for (int open = n; open > 0 && !atomic_load(&g_leaving);) {
        if (poll(pf, (nfds_t)n + 1, 1000) <= 0) continue;
        if (pf[n].fd >= 0 && pf[n].revents) refuse_late(lfd);
        for (int i = 0; i < n && !atomic_load(&g_leaving); i++) {
            if (pf[i].fd < 0 || !pf[i].revents) continue;
            Msg m;
            int lost = -1, status = -1;
            if (read_all(pf[i].fd, &m, sizeof m, align_now() + 5) != 0) {
                pf[i].fd = -1, open--;
                if (done[peer[i]]) continue; /* it said goodbye first: a clean end */
                lost = peer[i];
            } else if (m.type == MSG_BYE && m.status == 0) {
                done[peer[i]] = 1;
                continue;
            } else if (m.type == MSG_STOP) { /* the job is stopped on purpose: everyone leaves cleanly */
                if (atomic_exchange(&g_leaving, 1)) break;
                atomic_store(&g_stopping, 1);
                if (g_me == 0) stop_others(m.rank);
                g_lost(m.rank, DIST_RDV_STOPPED);
                break;
            } else {
                lost = m.rank, status = m.status; /* BYE with an error, or rank 0's LOST */
            }
            if (atomic_load(&g_leaving)) break;
            if (g_me == 0) tell_lost(lost, status, done);
            g_lost(lost, status);
        }
    }
    free(pf), free(peer), free(done);
    return NULL;
}

/* Rank 0: wait for every other rank's hello; check the job adds up. */
static int gather_ranks(int lfd, const DistRendezvous *r, double deadline, double timeout_s) {
    Hello *hello = calloc((size_t)g_n, sizeof *hello);
    if (!hello) return align_errorf("out of memory");
    int arrived = 0, rc = 0;
    char why[1024] = "";
    while (arrived < g_n - 1 && !why[0]) {
        int ms = deadline > 0 ? (int)((deadline - align_now()) * 1000) : 1000;
        if (deadline > 0 && ms <= 0) {
            int o = snprintf(why, sizeof why, "--dist-init tcp://%s:%s: rank", r->host, r->port);
            int missing = 0;
            for (int k = 1; k < g_n; k++)
                if (g_fd[k] < 0) o += snprintf(why + o, sizeof why - (size_t)o, "%s %d", missing++ ? "," : (g_n - 1 - arrived > 1 ? "s" : ""), k);
            snprintf(why + o, sizeof why - (size_t)o, " of %d did not arrive within %.0f s (--dist-timeout)", g_n, timeout_s);
            break;
        }
        struct pollfd pf = {.fd = lfd, .events = POLLIN};
        if (poll(&pf, 1, ms < 1000 ? ms : 1000) <= 0) continue;
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) continue;
        Hello h;
        if (read_all(c, &h, sizeof h, align_now() + 5) || memcmp(h.magic, HELLO_MAGIC, 8)) {
            close(c); /* not one of ours (a port scan, a stale client): ignore it */
            continue;
        }
        h.host[sizeof h.host - 1] = 0;
        if (h.size != g_n)
            snprintf(why, sizeof why, "rank %d (pid %d on %s) was started with --world-size %d, rank 0 with %d; every rank needs the same",
                     h.rank, h.pid, h.host, h.size, g_n);
        else if (h.rank < 1 || h.rank >= g_n)
            snprintf(why, sizeof why, "a process (pid %d on %s) claims --rank %d; expected 1 to %d", h.pid, h.host, h.rank, g_n - 1);
        else if (g_fd[h.rank] >= 0)
            snprintf(why, sizeof why, "two processes claim --rank %d (pid %d on %s and pid %d on %s); each rank needs its own",
                     h.rank, hello[h.rank].pid, hello[h.rank].host, h.pid, h.host);
        if (why[0]) {
            Answer a = {.ok = 0};
            snprintf(a.text, sizeof a.text, "%s", why);
            write_all(c, &a, sizeof a);
            close(c);
            break;
        }
        g_fd[h.rank] = c, hello[h.rank] = h, arrived++;
    }
    if (why[0]) { /* every rank that came hears why the job cannot start */
        Answer a = {.ok = 0};
        snprintf(a.text, sizeof a.text, "%s", why);
        for (int k = 1; k < g_n; k++)
            if (g_fd[k] >= 0) write_all(g_fd[k], &a, sizeof a), close(g_fd[k]), g_fd[k] = -1;
        rc = align_errorf("%s", why);
    }
    free(hello);
    return rc;
}

static int mpi_err(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return align_errorf("--dist-init: %s failed: %.*s", what, len, msg);
}

/* Ranks 0..k-1 (comm) take rank k in, for every k after this rank; rank 0
 * tells rank k when (only one connect may be pending). */
static int admit_later_ranks(MPI_Comm *comm, const char *port) {
    int have;
    MPI_Comm_size(*comm, &have);
    for (int k = have; k < g_n; k++) {
        MPI_Comm inter, merged;
        if (g_me == 0) {
            Msg turn = {MSG_TURN, k, 0};
            if (write_all(g_fd[k], &turn, sizeof turn) || write_all(g_fd[k], port, MPI_MAX_PORT_NAME))
                return align_errorf("--dist-init: rank %d left before it joined", k);
        }
        MPI_Comm_set_errhandler(*comm, MPI_ERRORS_RETURN);
        int rc = MPI_Comm_accept(port, MPI_INFO_NULL, 0, *comm, &inter);
        if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Comm_accept");
        rc = MPI_Intercomm_merge(inter, 0, &merged);
        MPI_Comm_free(&inter);
        if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Intercomm_merge");
        if (*comm != MPI_COMM_SELF) MPI_Comm_free(comm);
        *comm = merged;
    }
    return 0;
}

int dist_rendezvous_join(const DistRendezvous *r, double timeout_s, MPI_Comm *world, DistLostFn lost) {
    g_me = r->rank, g_n = r->size, g_lost = lost;
    g_fd = malloc((size_t)g_n * sizeof *g_fd);
    if (!g_fd) return align_errorf("out of memory");
    for (int k = 0; k < g_n; k++) g_fd[k] = -1;
    double deadline = timeout_s > 0 ? align_now() + timeout_s : 0;
    Answer a = {.ok = 1};
    char port[MPI_MAX_PORT_NAME] = "";
    int provided, rc;
    /* A singleton's OpenMPI (and the orted it starts) keeps a session folder
     * under /tmp/ompi.HOST.UID that only MPI_Finalize removes, and these
     * ranks leave without it: one folder of this rank's own instead, removed
     * at exit (unless the user chose the place). */
    if (!getenv("OMPI_MCA_orte_tmpdir_base")) {
        const char *base = getenv("TMPDIR");
        snprintf(g_mpi_tmp, sizeof g_mpi_tmp, "%s/align-mpi-XXXXXX", base && *base ? base : "/tmp");
        if (mkdtemp(g_mpi_tmp)) setenv("OMPI_MCA_orte_tmpdir_base", g_mpi_tmp, 1);
        else g_mpi_tmp[0] = 0; /* OpenMPI's default place, as before */
    }
    if (g_me == 0) {
        int lfd = listen_on(r);
        if (lfd < 0) return -1;
        /* the server and MPI start while the others are still on their way */
        if (start_server(a.text, sizeof a.text)) {
            close(lfd);
            stop_server();
            return -1;
        }
        setenv("OMPI_MCA_pmix_server_uri", a.text, 1);
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            close(lfd);
            stop_server();
            return align_errorf("--dist-init: MPI_Init failed");
        }
        MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
        if ((rc = MPI_Open_port(MPI_INFO_NULL, port)) != MPI_SUCCESS) {
            close(lfd);
            stop_server();
            return mpi_err(rc, "MPI_Open_port");
        }
        rc = gather_ranks(lfd, r, deadline, timeout_s);
        if (rc) {
            close(lfd);
            stop_server();
            return -1;
        }
        /* kept open: a rank started twice, or a rank of another job sent
         * here, is told at once by the liveness thread instead of retrying
         * until --dist-timeout; and the port stays this job's */
        g_lfd = lfd;
        snprintf(g_addr, sizeof g_addr, "tcp://%s:%s", r->host, r->port);
        for (int k = 1; k < g_n; k++)
            if (write_all(g_fd[k], &a, sizeof a)) {
                stop_server();
                return align_errorf("--dist-init: rank %d left before the job started", k);
            }
    } else {
        int fd = connect_to(r, deadline, timeout_s);
        if (fd < 0) return -1;
        g_fd[0] = fd;
        Hello h = {.rank = r->rank, .size = r->size, .pid = (int32_t)getpid()};
        memcpy(h.magic, HELLO_MAGIC, 8);
        gethostname(h.host, sizeof h.host - 1);
        if (write_all(fd, &h, sizeof h)) return align_errorf("--dist-init tcp://%s:%s: rank 0 closed the connection", r->host, r->port);
        /* rank 0 answers when every rank is there, or gives up at its own timeout */
        int got = read_all(fd, &a, sizeof a, deadline > 0 ? deadline + 10 : 0);
        if (got == -2)
            return align_errorf("--dist-init tcp://%s:%s: the other ranks did not all arrive within %.0f s (--dist-timeout)",
                                r->host, r->port, timeout_s);
        if (got) /* rank 0 stops listening once its ranks are all there: this one came too late */
            return align_errorf("--dist-init tcp://%s:%s: rank 0 closed the connection before the job started: its job "
                                "may have all its ranks already (is --rank %d running twice, or is this another job's address?)",
                                r->host, r->port, r->rank);
        a.text[sizeof a.text - 1] = 0;
        if (!a.ok) return align_errorf("rank 0 refused to start the job: %s", a.text);
        setenv("OMPI_MCA_pmix_server_uri", a.text, 1);
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return align_errorf("--dist-init: MPI_Init failed");
        MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    }
    MPI_Comm comm = MPI_COMM_SELF;
    if (g_me > 0) { /* wait for this rank's turn: the ones before it join first */
        Msg m;
        if (read_all(g_fd[0], &m, sizeof m, 0)) return align_errorf("--dist-init: rank 0 was lost before this rank joined");
        if (m.type == MSG_LOST) return align_errorf("--dist-init: rank %d was lost before this rank joined", m.rank);
        if (m.type != MSG_TURN || read_all(g_fd[0], port, sizeof port, 0))
            return align_errorf("--dist-init: rank 0 stopped before this rank joined");
        port[sizeof port - 1] = 0;
    }
    /* From here a rank that dies is noticed: the joins below would wait forever. */
    pthread_t t;
    if (pthread_create(&t, NULL, watch, NULL) == 0) pthread_detach(t);
    if (g_me > 0) {
        MPI_Comm inter;
        if ((rc = MPI_Comm_connect(port, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter)) != MPI_SUCCESS)
            return mpi_err(rc, "MPI_Comm_connect to rank 0's port");
        rc = MPI_Intercomm_merge(inter, 1, &comm); /* high: after the ranks already in */
        MPI_Comm_free(&inter);
        if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Intercomm_merge");
    }
    if (admit_later_ranks(&comm, port)) return -1;
    if (g_me == 0) MPI_Close_port(port);
    int me, n;
    MPI_Comm_rank(comm, &me);
    MPI_Comm_size(comm, &n);
    if (me != g_me || n != g_n)
        return align_errorf("--dist-init: the joined communicator has this process as rank %d of %d, not %d of %d", me, n, g_me, g_n);
    *world = comm;
    return 0;
}
#endif
