#include "job_agree.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dist.h"
#include "util.h"

/* One thing every rank must have alike: what to call it in the sentence,
 * how this rank shows it, and a hash of it (the comparison). */
typedef struct {
    char what[64];  /* "--lr", "training examples (--data)", ... */
    char shown[80]; /* "0.0005", "20 examples", ... */
    uint64_t hash;
} Item;

/* Sent first, so ranks running different programs are told apart before
 * their item tables (of different lengths) are compared. */
typedef struct {
    char prog[32];
    int32_t n_items;
} Head;

#define FNV_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * FNV_PRIME;
    return h;
}
/* The same mixing a word at a time: the weights of a real model are
 * hundreds of MB and the check must not cost seconds. */
static uint64_t hash_words(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * FNV_PRIME;
        h ^= h >> 29;
    }
    return hash_bytes(h, b + i, n - i);
}

static uint64_t g_data_hash;
static size_t g_data_n;
static int g_data_set;

void job_agree_note_data(const Dataset *ds) {
    uint64_t h = FNV_BASIS;
    for (size_t i = 0; i < ds->n; i++) {
        const DsExample *e = &ds->ex[i];
        int32_t len[4] = {e->n_prompt, e->n_chosen, e->n_rejected, e->has_margin};
        h = hash_words(h, len, sizeof len);
        h = hash_words(h, &e->margin, sizeof e->margin);
        if (e->prompt) h = hash_words(h, e->prompt, (size_t)e->n_prompt * sizeof(int32_t));
        if (e->chosen) h = hash_words(h, e->chosen, (size_t)e->n_chosen * sizeof(int32_t));
        if (e->rejected) h = hash_words(h, e->rejected, (size_t)e->n_rejected * sizeof(int32_t));
        if (e->chosen_mask) h = hash_words(h, e->chosen_mask, (size_t)e->n_chosen);
        if (e->label) h = hash_bytes(h, e->label, strlen(e->label) + 1);
    }
    g_data_hash = h, g_data_n = ds->n, g_data_set = 1;
}

/* Flags that are the rank's own (where it is, how long it waits) or that
 * only rank 0 acts on (it alone writes and evaluates): they may differ. */
int job_agree_is_local(const char *name) {
    static const char *local[] = {"rank",      "world-size",   "dist-init",      "dist-timeout",     "out",
                                  "metrics",   "logging-dir",  "report-to",      "logging-steps",    "lora-out",
                                  "eval-data", "eval-every",   "eval-sheet",     "save-total-limit", NULL};
    for (int i = 0; local[i]; i++)
        if (!strcmp(name, local[i])) return 1;
    return 0;
}

static void add(Item *it, int *n, const char *what, uint64_t hash, const char *shown) {
    Item *x = &it[(*n)++];
    memset(x, 0, sizeof *x);
    snprintf(x->what, sizeof x->what, "%s", what);
    snprintf(x->shown, sizeof x->shown, "%s", shown);
    x->hash = hash;
}

/* This rank's table: the program's flags, then the data and the weights. */
static Item *build(const Model *m, long n_train, int *n_out) {
    const CliSpec *spec = cli_parsed();
    int cap = (spec ? spec->n_flags : 0) + 3, n = 0;
    Item *it = calloc((size_t)cap, sizeof *it);
    if (!it) return NULL;
    for (int i = 0; spec && i < spec->n_flags; i++) {
        const CliFlag *f = &spec->flags[i];
        if (!f->dst || job_agree_is_local(f->name)) continue;
        char what[64], shown[80];
        snprintf(what, sizeof what, "--%s", f->name);
        uint64_t h = FNV_BASIS;
        if (f->type == CLI_STRING) {
            const char *s = *(const char **)f->dst;
            h = s ? hash_bytes(h, s, strlen(s) + 1) : 0;
            snprintf(shown, sizeof shown, "%s%.70s%s", s ? "\"" : "", s ? s : "(not given)", s ? "\"" : "");
        } else if (f->type == CLI_FLOAT) {
            float v = *(const float *)f->dst;
            h = hash_bytes(h, &v, sizeof v);
            snprintf(shown, sizeof shown, "%g", v);
        } else { /* CLI_INT, CLI_BOOL */
            int v = *(const int *)f->dst;
            h = hash_bytes(h, &v, sizeof v);
            snprintf(shown, sizeof shown, "%d", v);
        }
        add(it, &n, what, h, shown);
    }
    char shown[80];
    if (g_data_set) {
        snprintf(shown, sizeof shown, "%zu examples, contents %016llx", g_data_n, (unsigned long long)g_data_hash);
        add(it, &n, "training examples (--data)", g_data_hash, shown);
    }
    snprintf(shown, sizeof shown, "%ld", n_train);
    add(it, &n, "number of training sequences", (uint64_t)n_train, shown);
    /* every weight, frozen or not (a base and its adapters), as the device holds them */
    uint64_t h = FNV_BASIS;
    size_t chunk = 1 << 20;
    float *buf = malloc(chunk * sizeof(float));
    if (!buf) {
        free(it);
        return NULL;
    }
    for (size_t at = 0; at < m->n_elems; at += chunk) {
        size_t k = m->n_elems - at < chunk ? m->n_elems - at : chunk;
        m->be->to_host(buf, m->params + at, k * sizeof(float));
        h = hash_words(h, buf, k * sizeof(float));
    }
    for (size_t at = 0; m->qparams && at < m->n_qbytes; at += chunk * sizeof(float)) {
        size_t k = m->n_qbytes - at < chunk * sizeof(float) ? m->n_qbytes - at : chunk * sizeof(float);
        m->be->to_host(buf, m->qparams + at, k);
        h = hash_words(h, buf, k);
    }
    free(buf);
    snprintf(shown, sizeof shown, "%zu values, contents %016llx", m->n_elems, (unsigned long long)h);
    add(it, &n, "starting weights (the model, --resume or --lora-adapter)", h, shown);
    *n_out = n;
    return it;
}

int job_agree_check(const char *prog, const Model *m, long n_train) {
    int world = dist_size();
    if (world == 1) return 0;
    int n = 0;
    Item *mine = build(m, n_train, &n);
    Head head = {.n_items = n}, *heads = calloc((size_t)world, sizeof *heads);
    if (!mine || !heads) {
        free(mine), free(heads);
        return align_errorf("out of memory");
    }
    snprintf(head.prog, sizeof head.prog, "%s", prog);
    if (dist_allgather_bytes(&head, heads, sizeof head)) {
        free(mine), free(heads);
        return -1;
    }
    char why[1024] = "";
    for (int r = 1; r < world && !why[0]; r++)
        if (strcmp(heads[r].prog, heads[0].prog) || heads[r].n_items != heads[0].n_items)
            snprintf(why, sizeof why, "rank %d runs %s with %d flags, rank 0 %s with %d; every rank runs the same program", r,
                     heads[r].prog, heads[r].n_items, heads[0].prog, heads[0].n_items);
    free(heads);
    if (!why[0]) {
        Item *all = calloc((size_t)world * (size_t)n, sizeof *all);
        if (!all) {
            free(mine);
            return align_errorf("out of memory");
        }
        if (dist_allgather_bytes(mine, all, (size_t)n * sizeof *mine)) {
            free(mine), free(all);
            return -1;
        }
        for (int r = 1; r < world && !why[0]; r++)
            for (int i = 0; i < n && !why[0]; i++) {
                const Item *a = &all[(size_t)r * n + i], *z = &all[i];
                if (a->hash == z->hash && !strcmp(a->what, z->what)) continue;
                if (a->what[0] == '-')
                    snprintf(why, sizeof why, "rank %d was started with %s %s, rank 0 with %s %s; every rank must be given the same "
                             "training flags (only where it writes, logs and evaluates, and --rank, --dist-init, --dist-timeout may differ)",
                             r, a->what, a->shown, z->what, z->shown);
                else
                    snprintf(why, sizeof why, "rank %d's %s: %s; rank 0's: %s; every rank must load the same", r, a->what,
                             a->shown, z->shown);
            }
        free(all);
    }
    free(mine);
    if (why[0]) dist_exit_agreed(why, 2);
    return 0;
}
