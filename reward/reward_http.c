#define _GNU_SOURCE
#include "reward_http.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

#define MAX_REPLY (256u << 20) /* a reply larger than this is not a batch of rewards */

int reward_url_parse(const char *url, RewardUrl *out) {
    memset(out, 0, sizeof *out);
    if (!strncmp(url, "https://", 8))
        return align_errorf("--reward-url %s: https is not supported; serve the reward function over http next to the trainer", url);
    if (strncmp(url, "http://", 7)) return align_errorf("--reward-url %s: expected http://HOST:PORT/PATH", url);
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    char hostport[300];
    if (hl == 0 || hl >= sizeof hostport) return align_errorf("--reward-url %s: no host", url);
    memcpy(hostport, h, hl);
    hostport[hl] = 0;
    char *colon = strrchr(hostport, ':');
    if (colon) {
        *colon = 0;
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 1 || port > 65535) return align_errorf("--reward-url %s: bad port \"%s\"", url, colon + 1);
        snprintf(out->port, sizeof out->port, "%ld", port);
    } else {
        snprintf(out->port, sizeof out->port, "80");
    }
    if (!*hostport || strlen(hostport) >= sizeof out->host) return align_errorf("--reward-url %s: bad host", url);
    snprintf(out->host, sizeof out->host, "%s", hostport);
    snprintf(out->path, sizeof out->path, "%s", slash ? slash : "/");
    return 0;
}

void reward_http_reply_free(RewardHttpReply *r) {
    free(r->rewards), free(r->scores), free(r->log_means);
    for (int i = 0; i < r->n_logs; i++) free(r->log_keys[i]);
    free(r->log_keys);
    memset(r, 0, sizeof *r);
}

static int wait_fd(int fd, short ev, double deadline) {
    for (;;) {
        int ms = (int)((deadline - align_now()) * 1000);
        if (ms <= 0) return align_errorf("timed out");
        struct pollfd p = {fd, ev, 0};
        int rc = poll(&p, 1, ms);
        if (rc > 0) return 0;
        if (rc < 0 && errno != EINTR) return align_errorf("poll: %s", strerror(errno));
    }
}

static int connect_to(const RewardUrl *u, double deadline) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(u->host, u->port, &hints, &res);
    if (g) return align_errorf("cannot resolve %s: %s", u->host, gai_strerror(g));
    int fd = -1;
    char why[200] = "no address";
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc && errno == EINPROGRESS) {
            int err = 0;
            socklen_t el = sizeof err;
            if (wait_fd(fd, POLLOUT, deadline)) err = ETIMEDOUT;
            else getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
            rc = err ? -1 : 0;
            errno = err;
        }
        if (!rc) break;
        snprintf(why, sizeof why, "cannot connect to %s:%s: %s", u->host, u->port, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return align_errorf("%s", why);
    return fd;
}

/* The body of a chunked reply, decoded in place; -1 when malformed. */
static long dechunk(char *b, size_t n) {
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        unsigned long len = strtoul(b + in, &end, 16);
        char *crlf = strstr(end, "\r\n");
        if (end == b + in || !crlf) return -1;
        in = (size_t)(crlf - b) + 2;
        if (len == 0) return (long)out;
        if (in + len + 2 > n) return -1;
        memmove(b + out, b + in, len);
        out += len;
        in += len + 2;
    }
}

/* One try: the reply body (malloc'd, NUL-terminated) or NULL with a reason. */
static char *post_once(const RewardUrl *u, const char *body, size_t blen, double timeout_s) {
    double deadline = align_now() + timeout_s;
    int fd = connect_to(u, deadline);
    if (fd < 0) return NULL;
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      u->path, u->host, u->port, blen);
    const char *parts[2] = {head, body};
    size_t lens[2] = {(size_t)hl, blen};
    char *buf = NULL;
    for (int k = 0; k < 2; k++)
        for (size_t at = 0; at < lens[k];) {
            ssize_t w = send(fd, parts[k] + at, lens[k] - at, MSG_NOSIGNAL);
            if (w > 0) {
                at += (size_t)w;
            } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_fd(fd, POLLOUT, deadline)) goto fail;
            } else {
                align_errorf("sending the request: %s", strerror(errno));
                goto fail;
            }
        }
    size_t n = 0, cap = 65536;
    buf = malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_REPLY) {
                align_errorf("the reply is larger than %u MiB", MAX_REPLY >> 20);
                goto fail;
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                align_errorf("out of memory reading the reply");
                goto fail;
            }
            buf = nb;
        }
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r > 0) {
            n += (size_t)r;
        } else if (r == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline)) {
                align_errorf("no complete reply within %g s", timeout_s);
                goto fail;
            }
        } else {
            align_errorf("reading the reply: %s", strerror(errno));
            goto fail;
        }
    }
    close(fd);
    fd = -1;
    buf[n] = 0;
    int status = 0;
    if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1) {
        align_errorf("not an HTTP reply");
        goto fail;
    }
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep) {
        align_errorf("the reply has no end of headers");
        goto fail;
    }
    *sep = 0;
    char *payload = sep + 4;
    size_t plen = n - (size_t)(payload - buf);
    int chunked = 0;
    for (char *line = strstr(buf, "\r\n"); line; line = strstr(line + 2, "\r\n"))
        if (!strncasecmp(line + 2, "Transfer-Encoding:", 18) && strstr(line + 2, "chunked")) chunked = 1;
    if (chunked) {
        long d = dechunk(payload, plen);
        if (d < 0) {
            align_errorf("a malformed chunked reply");
            goto fail;
        }
        plen = (size_t)d;
    }
    if (status != 200) {
        align_errorf("HTTP status %d: %.200s", status, payload);
        goto fail;
    }
    memmove(buf, payload, plen);
    buf[plen] = 0;
    return buf;
fail:
    if (fd >= 0) close(fd);
    free(buf);
    return NULL;
}

static float *float_list(const cJSON *a, int n, const char *name) {
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) {
        align_errorf("\"%s\" must be a list of %d numbers, got %s", name, n,
                     cJSON_IsArray(a) ? "a list of another length" : a ? "something else" : "nothing");
        return NULL;
    }
    float *x = malloc((size_t)n * sizeof *x + 1);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
            align_errorf("\"%s\"[%d] is not a finite number", name, i);
            free(x);
            return NULL;
        }
        x[i++] = (float)it->valuedouble;
    }
    return x;
}

static int parse_reply(const char *text, int n, RewardHttpReply *out) {
    cJSON *o = cJSON_Parse(text);
    int rc = -1;
    if (!cJSON_IsObject(o)) {
        align_errorf("the reply is not a JSON object: %.120s", text);
        goto done;
    }
    if (!(out->rewards = float_list(cJSON_GetObjectItem(o, "rewards"), n, "rewards"))) goto done;
    const cJSON *sc = cJSON_GetObjectItem(o, "scores");
    if (sc && !cJSON_IsNull(sc) && !(out->scores = float_list(sc, n, "scores"))) goto done;
    const cJSON *logs = cJSON_GetObjectItem(o, "extra_logs"), *it;
    if (cJSON_IsObject(logs)) {
        int k = cJSON_GetArraySize(logs);
        out->log_keys = calloc((size_t)k + 1, sizeof *out->log_keys);
        out->log_means = calloc((size_t)k + 1, sizeof *out->log_means);
        cJSON_ArrayForEach(it, logs) { /* a list's mean, or a number; anything else is not a metric */
            double sum = 0;
            int cnt = 0;
            if (cJSON_IsNumber(it)) sum = it->valuedouble, cnt = 1;
            const cJSON *v;
            if (cJSON_IsArray(it))
                cJSON_ArrayForEach(v, it) if (cJSON_IsNumber(v)) sum += v->valuedouble, cnt++;
            if (!cnt || !isfinite(sum)) continue;
            out->log_keys[out->n_logs] = strdup(it->string);
            out->log_means[out->n_logs++] = sum / cnt;
        }
    }
    rc = 0;
done:
    cJSON_Delete(o);
    if (rc) reward_http_reply_free(out);
    return rc;
}

int reward_http_call(const char *url, const RewardHttpOpts *o, const char *const *query, const char *const *prompts,
                     const char *const *labels, int n, RewardHttpReply *out) {
    memset(out, 0, sizeof *out);
    RewardUrl u;
    if (reward_url_parse(url, &u)) return -1;
    cJSON *req = cJSON_CreateObject(), *q = cJSON_AddArrayToObject(req, "query"),
          *p = cJSON_AddArrayToObject(req, "prompts"), *l = cJSON_AddArrayToObject(req, "labels");
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(q, cJSON_CreateString(query[i]));
        cJSON_AddItemToArray(p, cJSON_CreateString(prompts[i]));
        cJSON_AddItemToArray(l, labels && labels[i] ? cJSON_CreateString(labels[i]) : cJSON_CreateNull());
    }
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!body) return align_errorf("--reward-url %s: out of memory building the request", url);
    char why[400] = "";
    int tries = 0, rc = -1;
    for (double wait = 0.25; tries <= o->retries; tries++, wait *= 2) {
        if (tries) usleep((useconds_t)(wait / 2 * 1e6));
        char *reply = post_once(&u, body, strlen(body), o->timeout_s);
        if (reply && !parse_reply(reply, n, out)) rc = 0;
        free(reply);
        if (!rc) break;
        snprintf(why, sizeof why, "%s", align_error());
    }
    free(body);
    if (rc)
        return align_errorf("--reward-url %s: no usable reply after %d %s (timeout %g s each): %s", url, tries,
                            tries == 1 ? "try" : "tries", o->timeout_s, why);
    return 0;
}
