/* http_gate: first-line check in front of libmicrohttpd (http_gate.h). */
#include "http_gate.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define GATE_PEEK 8192 /* a longer first line goes to libmicrohttpd, which answers it */

typedef struct {
    int fd;
    struct sockaddr_in addr;
    double t_accept;
    int peeked; /* bytes seen so far */
} GateConn;

struct HttpGate {
    int listen_fd, wake[2], port;
    int max_conn, per_ip, idle_s;
    HttpGateAccept accept;
    void *cls;
    int started;
    GateConn *conns;
    int n_conns;
    pthread_t tid;
};

static void gate_drop(HttpGate *g, int i) {
    close(g->conns[i].fd);
    g->conns[i] = g->conns[--g->n_conns];
}

/* A whole response, never blocking: a peer that does not read loses it. */
static void gate_reply(int fd, int status, const char *reason, const char *msg) {
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n"
                     "{\"error\":\"%s\"}",
                     status, reason, strlen(msg) + 12, msg);
    if (n > 0 && (size_t)n < sizeof resp && send(fd, resp, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        /* gone or not reading: nothing more to do */
    }
    /* what it sent is read out first: a socket closed with unread bytes
     * resets the connection, and the client may lose the reply with it */
    char sink[4096];
    for (int k = 0; k < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; k++) {}
    shutdown(fd, SHUT_WR);
}

static void gate_accept(HttpGate *g) {
    for (;;) {
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        int fd = accept(g->listen_fd, (struct sockaddr *)&a, &len);
        if (fd < 0) return; /* EAGAIN: all taken */
        int same = 0;
        for (int i = 0; i < g->n_conns; i++) same += g->conns[i].addr.sin_addr.s_addr == a.sin_addr.s_addr;
        if (g->n_conns >= g->max_conn || same >= g->per_ip) {
            close(fd);
            continue;
        }
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        g->conns[g->n_conns++] = (GateConn){fd, a, align_now(), 0};
    }
}

/* Look at connection i's first line; it may be handed over or dropped. */
static void gate_check(HttpGate *g, int i) {
    GateConn *c = &g->conns[i];
    char buf[GATE_PEEK];
    ssize_t n = recv(c->fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { /* gone */
        gate_drop(g, i);
        return;
    }
    if (n < 0) return;
    size_t at = 0; /* empty lines before the request line are tolerated, as libmicrohttpd does */
    while (at < (size_t)n && (buf[at] == '\r' || buf[at] == '\n')) at++;
    char *nl = memchr(buf + at, '\n', (size_t)n - at);
    if (!nl && n < GATE_PEEK) { /* wait for more: poll wakes when a byte past these comes */
        c->peeked = (int)n;
        int lowat = (int)n + 1;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
        return;
    }
    if (nl && !memchr(buf + at, ' ', (size_t)(nl - (buf + at)))) {
        gate_reply(c->fd, 400, "Bad Request", "not an HTTP request: expected a request line such as POST /get_reward HTTP/1.1");
        gate_drop(g, i);
        return;
    }
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
    int fd = c->fd;
    struct sockaddr_in a = c->addr;
    g->conns[i] = g->conns[--g->n_conns];
    g->accept(g->cls, fd, (const struct sockaddr *)&a, sizeof a);
}

static void *gate_thread(void *arg) {
    HttpGate *g = arg;
    struct pollfd *p = malloc((size_t)(g->max_conn + 2) * sizeof *p);
    if (!p) return NULL;
    for (;;) {
        p[0] = (struct pollfd){g->wake[0], POLLIN, 0};
        p[1] = (struct pollfd){g->listen_fd, POLLIN, 0};
        int n = g->n_conns;
        for (int i = 0; i < n; i++) p[2 + i] = (struct pollfd){g->conns[i].fd, POLLIN, 0};
        if (poll(p, (nfds_t)(n + 2), 100) < 0 && errno != EINTR) break;
        if (p[0].revents) break;
        /* newest first, so dropping (which moves the last one into its slot) skips none */
        for (int i = n - 1; i >= 0; i--)
            if (p[2 + i].revents) gate_check(g, i);
        double now = align_now();
        for (int i = g->n_conns - 1; i >= 0; i--) {
            if (now - g->conns[i].t_accept < g->idle_s) continue;
            if (g->conns[i].peeked) {
                char msg[160];
                snprintf(msg, sizeof msg, "the request line did not arrive within --http-idle-timeout %d s", g->idle_s);
                gate_reply(g->conns[i].fd, 408, "Request Timeout", msg);
            }
            gate_drop(g, i);
        }
        if (p[1].revents) gate_accept(g);
    }
    free(p);
    return NULL;
}

HttpGate *http_gate_start(const struct sockaddr_in *addr, int max_conn, int per_ip, int idle_s, HttpGateAccept accept_cb,
                          void *cls) {
    HttpGate *g = calloc(1, sizeof *g);
    if (!g || !(g->conns = calloc((size_t)max_conn, sizeof(GateConn)))) {
        free(g);
        align_errorf("out of memory");
        return NULL;
    }
    g->max_conn = max_conn, g->per_ip = per_ip, g->idle_s = idle_s, g->accept = accept_cb, g->cls = cls;
    g->wake[0] = g->wake[1] = -1;
    g->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in bound;
    socklen_t len = sizeof bound;
    if (g->listen_fd < 0 || setsockopt(g->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(g->listen_fd, (const struct sockaddr *)addr, sizeof *addr) || listen(g->listen_fd, 128) ||
        getsockname(g->listen_fd, (struct sockaddr *)&bound, &len) || pipe(g->wake)) {
        align_errorf("%s", strerror(errno));
        http_gate_stop(g);
        return NULL;
    }
    g->port = ntohs(bound.sin_port);
    if ((g->started = !pthread_create(&g->tid, NULL, gate_thread, g)) == 0) {
        align_errorf("cannot start a thread");
        http_gate_stop(g);
        return NULL;
    }
    return g;
}

int http_gate_port(const HttpGate *g) { return g->port; }

void http_gate_stop(HttpGate *g) {
    if (!g) return;
    if (g->started) {
        if (write(g->wake[1], "x", 1) != 1) {
            /* a pipe of one byte cannot be full: the thread wakes */
        }
        pthread_join(g->tid, NULL);
    }
    for (int i = 0; i < g->n_conns; i++) close(g->conns[i].fd);
    if (g->listen_fd >= 0) close(g->listen_fd);
    if (g->wake[0] >= 0) close(g->wake[0]), close(g->wake[1]);
    free(g->conns);
    free(g);
}
