/* bench_reward: reward_server throughput and latency, and in-process
 * scoring speed for the ratio, on the SmolLM2-135M shape with random
 * weights (Llama, dim 576, 30 layers, 9 heads, 3 kv heads, head_dim 64,
 * ffn 1536, vocab 49152, value head only).
 *
 *   bench_reward [--seq-len 32] [--device cpu] [--small]
 *
 * Writes a random reward model to a temp .ckpt, starts reward_server (from
 * the same bin/ folder) on an ipc:// endpoint, and drives it with 1, 16 and
 * 64 concurrent DEALER clients, each sending single-sequence requests of
 * --seq-len random tokens: requests/s, p50/p99 latency, and the server's
 * tokens/s against a packed in-process forward of the same sequences.
 * --small uses a 2-layer model (a smoke run). JSON on stdout. */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "ckpt.h"
#include "cli.h"
#include "model.h"
#include "util.h"
#include "wire.h"

static int seq_len = 32, vocab = 49152;
static char endpoint[300];
static void *ctx;

typedef struct {
    int n_req, t;
    double *lat;
    int failed;
} Client;

static void *client_thread(void *p) {
    Client *c = p;
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, endpoint);
    int32_t *tok = malloc(seq_len * sizeof(int32_t));
    int64_t off[2] = {0, seq_len};
    uint64_t x = 0x2545F4914F6CDD1DULL * (c->t + 1);
    for (int r = 0; r < c->n_req; r++) {
        for (int i = 0; i < seq_len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            tok[i] = (int32_t)(x % vocab);
        }
        WireWriter *w = wire_writer_new("score");
        wire_put_uint(w, "id", (uint64_t)r);
        wire_put_vec(w, "tokens", WIRE_I32, tok, seq_len);
        wire_put_vec(w, "offsets", WIRE_I64, off, 2);
        void *buf;
        size_t len;
        wire_finish(w, &buf, &len);
        double t0 = align_now();
        wire_send(s, NULL, buf, len, 0);
        free(buf);
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 600000) <= 0) {
            c->failed++;
            break;
        }
        WireFrames f;
        if (wire_recv(s, &f, 1 << 20, 0)) {
            c->failed++;
            break;
        }
        WireMsg *m = wire_parse(f.body, f.body_len, NULL);
        if (!m || strcmp(wire_op(m), "scores")) c->failed++;
        wire_msg_free(m);
        wire_frames_free(&f);
        c->lat[r] = align_now() - t0;
    }
    free(tok);
    zmq_close(s);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *device = "cpu";
    int small = 0;
    CliFlag flags[] = {
        {"seq-len", CLI_INT, &seq_len, "random tokens per request", CLI_AT_LEAST_1},
        {"device", CLI_STRING, &device, "cpu or cuda"},
        {"small", CLI_BOOL, &small, "a 2-layer model (a smoke run)"},
    };
    CliSpec spec = {.prog = "bench_reward", .usage = "bench_reward [--seq-len N] [--device cpu|cuda] [--small]",
                    .about = "reward_server requests/s and latency at 1, 16 and 64 clients, against in-process scoring; prints JSON.",
                    .flags = flags, .n_flags = sizeof flags / sizeof *flags};
    cli_parse_or_exit(&spec, argc, argv);
    ModelConfig cfg;
    model_config_defaults(&cfg, ARCH_LLAMA);
    cfg.vocab_size = vocab;
    cfg.dim = 576, cfg.n_layers = small ? 2 : 30, cfg.n_heads = 9, cfg.n_kv_heads = 3, cfg.head_dim = 64;
    cfg.ffn_dim = 1536, cfg.max_seq_len = 2048, cfg.rope_theta = 100000, cfg.tied_embeddings = 1;
    cfg.lm_head = 0, cfg.value_head = 1;
    const Backend *be = backend_get(device);
    if (!be) align_die_error("bench_reward");
    Model *m = model_create(&cfg, be);
    if (!m) align_die_error("bench_reward");
    model_init_random(m, 1);
    char dir[] = "/tmp/bench_reward_XXXXXX", ckpt[300];
    if (!mkdtemp(dir)) align_die("bench_reward", "mkdtemp failed");
    snprintf(ckpt, sizeof ckpt, "%s/rm.ckpt", dir);
    snprintf(endpoint, sizeof endpoint, "ipc://%s/rm.sock", dir);
    if (ckpt_save(ckpt, m, NULL)) align_die_error("bench_reward");

    /* in process: one packed forward of 32 sequences, after a warm-up */
    int n_seqs = small ? 64 : 32, n = n_seqs * seq_len;
    int32_t *tok = malloc(n * sizeof(int32_t)), *starts = malloc((n_seqs + 1) * sizeof(int32_t));
    float *values = malloc(n * sizeof(float));
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 2654435761u) % vocab);
    for (int s = 0; s <= n_seqs; s++) starts[s] = s * seq_len;
    Batch b = {n, n_seqs, tok, starts};
    model_forward(m, &b), model_values(m, values);
    int reps = 2;
    double t0 = align_now();
    for (int r = 0; r < reps; r++)
        if (model_forward(m, &b) || model_values(m, values)) align_die_error("bench_reward");
    be->sync();
    double inproc_tps = reps * (double)n / (align_now() - t0);
    model_free(m);
    free(tok), free(starts), free(values);

    /* the server, from our own bin/ folder */
    char exe[PATH_MAX], server[PATH_MAX + 32];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[el > 0 ? el : 0] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(server, sizeof server, "%s/reward_server", exe);
    pid_t pid = fork();
    if (pid == 0) {
        execl(server, server, "--model", ckpt, "--bind", endpoint, "--device", device, "--max-batch-tokens", "2048",
              "--batch-wait-ms", "5", (char *)NULL);
        _exit(127);
    }
    ctx = zmq_ctx_new();
    int levels[3] = {1, 16, 64};
    int per_client[3] = {small ? 20 : 6, small ? 8 : 2, small ? 4 : 1};
    /* warm-up (also waits for the server to load) */
    {
        double lat[1];
        Client c = {1, 999, lat, 0};
        client_thread(&c);
        if (c.failed) align_die("bench_reward", "reward_server did not answer (%s)", server);
    }
    printf("{\n  \"bench\": \"reward\",\n  \"model\": \"SmolLM2-135M shape (random), %d layers, value head only\",\n", cfg.n_layers);
    printf("  \"device\": \"%s\",\n  \"seq_len\": %d,\n  \"in_process_tokens_per_s\": %.1f,\n  \"server\": [\n", device, seq_len, inproc_tps);
    for (int li = 0; li < 3; li++) {
        int C = levels[li], R = per_client[li];
        Client *cl = calloc(C, sizeof(Client));
        pthread_t *th = calloc(C, sizeof(pthread_t));
        double *lat = calloc((size_t)C * R, sizeof(double));
        double s0 = align_now();
        for (int t = 0; t < C; t++) {
            cl[t] = (Client){R, t, lat + (size_t)t * R, 0};
            pthread_create(&th[t], NULL, client_thread, &cl[t]);
        }
        int failed = 0;
        for (int t = 0; t < C; t++) pthread_join(th[t], NULL), failed += cl[t].failed;
        double wall = align_now() - s0;
        int total = C * R;
        qsort(lat, total, sizeof(double), cmp_double);
        double p50 = lat[total / 2], p99 = lat[(int)(0.99 * (total - 1) + 0.5)];
        double tps = total * (double)seq_len / wall;
        printf("    {\"concurrency\": %d, \"requests\": %d, \"failed\": %d, \"requests_per_s\": %.2f, \"p50_ms\": %.1f, "
               "\"p99_ms\": %.1f, \"tokens_per_s\": %.1f, \"ratio_to_in_process\": %.3f}%s\n",
               C, total, failed, total / wall, p50 * 1000, p99 * 1000, tps, tps / inproc_tps, li < 2 ? "," : "");
        fflush(stdout);
        free(cl), free(th), free(lat);
    }
    printf("  ]\n}\n");
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    zmq_ctx_term(ctx);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return 0;
}
