#include "curve.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "util.h"
#include "wire.h"

int curve_keygen(const char *prefix) {
    char pub[41], sec[41], path[4096];
    if (zmq_curve_keypair(pub, sec))
        return align_errorf("CURVE key generation failed: %s (is libzmq built with libsodium?)", zmq_strerror(errno));
    snprintf(path, sizeof path, "%s.secret", prefix);
    mode_t old = umask(077);
    FILE *f = fopen(path, "w");
    umask(old);
    if (!f) return align_errorf("%s: cannot write", path);
    fprintf(f, "# CurveZMQ secret key (keep private)\n%s\n# public key\n# %s\n", sec, pub);
    fclose(f);
    snprintf(path, sizeof path, "%s.public", prefix);
    if (!(f = fopen(path, "w"))) return align_errorf("%s: cannot write", path);
    fprintf(f, "%s\n", pub);
    fclose(f);
    printf("%s\n", pub);
    return 0;
}

int curve_server_apply(void *sock, const char *secret_file, char *pub) {
    char sec[41], p[41];
    int one = 1;
    if (wire_read_z85_key(secret_file, sec)) return -1;
    if (zmq_curve_public(p, sec)) return align_errorf("%s: not a valid CURVE secret key", secret_file);
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) || zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40))
        return align_errorf("CURVE is not available in this libzmq: %s", zmq_strerror(errno));
    zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "align", 5);
    if (pub) memcpy(pub, p, 41);
    return 0;
}

int curve_client_apply_key(void *sock, const char *server_public, const char *secret_file) {
    char secret[41], public[41];
    if (!secret_file) return align_errorf("CURVE needs this client's secret key file as well as the server's public key");
    if (wire_read_z85_key(secret_file, secret)) return -1;
    if (zmq_curve_public(public, secret)) return align_errorf("%s: not a valid CURVE secret key", secret_file);
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public, 40) || zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, public, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, 40))
        return align_errorf("CURVE keys refused by ZeroMQ: %s", zmq_strerror(errno));
    return 0;
}

int curve_client_apply(void *sock, const char *server_public_file, const char *secret_file) {
    char server[41];
    if (wire_read_z85_key(server_public_file, server)) return -1;
    return curve_client_apply_key(sock, server, secret_file);
}

/* ------------------------------------------------------------ ZAP (the allow-list) */

struct CurveZap {
    void *ctx;
    uint8_t (*keys)[32];
    int n_keys;
    int ready; /* 1 bound, -1 failed */
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static int recv_str(void *sock, char *buf, size_t cap, size_t *len) {
    int n = zmq_recv(sock, buf, cap, 0);
    if (n < 0) return -1;
    *len = (size_t)n < cap ? (size_t)n : cap;
    return 0;
}

/* RFC 27: answer each authentication request of the context. */
static void *zap_thread(void *arg) {
    CurveZap *z = arg;
    void *sock = zmq_socket(z->ctx, ZMQ_REP);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    int bound = zmq_bind(sock, "inproc://zeromq.zap.01") == 0;
    pthread_mutex_lock(&z->mu);
    z->ready = bound ? 1 : -1;
    pthread_cond_signal(&z->cv);
    pthread_mutex_unlock(&z->mu);
    if (!bound) {
        zmq_close(sock);
        return NULL;
    }
    for (;;) {
        char f[7][256];
        size_t len[7] = {0};
        int i;
        for (i = 0; i < 7; i++) {
            if (recv_str(sock, f[i], sizeof f[i], &len[i])) break;
            int more = 0;
            size_t ms = sizeof more;
            zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &ms);
            if (!more) {
                i++;
                break;
            }
        }
        if (i == 0) break; /* context terminated */
        /* version, request id, domain, address, identity, mechanism, credentials */
        int allowed = 0;
        if (i >= 7 && len[5] == 5 && !memcmp(f[5], "CURVE", 5) && len[6] == 32)
            for (int k = 0; k < z->n_keys && !allowed; k++) allowed = !memcmp(z->keys[k], f[6], 32);
        const char *code = allowed ? "200" : "400", *text = allowed ? "OK" : "client key not allowed";
        zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(sock, f[1], len[1], ZMQ_SNDMORE);
        zmq_send(sock, code, 3, ZMQ_SNDMORE);
        zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(sock, "", 0, ZMQ_SNDMORE);
        zmq_send(sock, "", 0, 0);
    }
    zmq_close(sock);
    return NULL;
}

static int read_allow_list(const char *path, CurveZap *z) {
    FILE *f = fopen(path, "r");
    if (!f) return align_errorf("--curve-allow %s: cannot open", path);
    char line[512];
    long lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        size_t n = strcspn(p, " \t\r\n");
        if (*p == '#' || n == 0) continue;
        uint8_t raw[32];
        char key[41];
        if (n != 40 || (memcpy(key, p, 40), key[40] = 0, !zmq_z85_decode(raw, key))) {
            fclose(f);
            return align_errorf("--curve-allow %s:%ld: expected a 40-character Z85 public key", path, lineno);
        }
        uint8_t(*k)[32] = realloc(z->keys, (z->n_keys + 1) * sizeof *k);
        if (!k) {
            fclose(f);
            return align_errorf("out of memory");
        }
        z->keys = k;
        memcpy(z->keys[z->n_keys++], raw, 32);
    }
    fclose(f);
    if (!z->n_keys) return align_errorf("--curve-allow %s: no keys in the file", path);
    return 0;
}

CurveZap *curve_zap_start(void *ctx, const char *allow_file) {
    CurveZap *z = calloc(1, sizeof *z);
    if (!z) {
        align_errorf("out of memory");
        return NULL;
    }
    z->ctx = ctx;
    if (read_allow_list(allow_file, z)) {
        free(z->keys);
        free(z);
        return NULL;
    }
    pthread_mutex_init(&z->mu, NULL);
    pthread_cond_init(&z->cv, NULL);
    if (pthread_create(&z->tid, NULL, zap_thread, z)) {
        align_errorf("cannot start the ZAP handler thread");
        free(z->keys);
        free(z);
        return NULL;
    }
    pthread_mutex_lock(&z->mu);
    while (!z->ready) pthread_cond_wait(&z->cv, &z->mu);
    pthread_mutex_unlock(&z->mu);
    if (z->ready < 0) {
        pthread_join(z->tid, NULL);
        free(z->keys);
        free(z);
        align_errorf("cannot start the ZAP handler: %s", zmq_strerror(errno));
        return NULL;
    }
    return z;
}

void curve_zap_join(CurveZap *z) {
    if (!z) return;
    pthread_join(z->tid, NULL);
    pthread_mutex_destroy(&z->mu);
    pthread_cond_destroy(&z->cv);
    free(z->keys);
    free(z);
}

int curve_endpoint_is_loopback(const char *ep) {
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9)) return 1;
    return !strncmp(ep, "tcp://127.", 10) || !strncmp(ep, "tcp://localhost:", 16) || !strncmp(ep, "tcp://[::1]:", 12);
}
