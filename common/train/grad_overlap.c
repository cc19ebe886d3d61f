#include "grad_overlap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "util.h"

/* The decoder layer a tensor belongs to, from its Hugging Face name
 * (model.layers.N. for the Llama family, transformer.h.N. for GPT-2); -1
 * for the embeddings, the final norm and the heads. */
static int param_layer(const char *name) {
    static const char *const prefixes[] = {"model.layers.", "transformer.h."};
    for (int k = 0; k < 2; k++) {
        size_t n = strlen(prefixes[k]);
        if (strncmp(name, prefixes[k], n)) continue;
        int l = 0, used = 0;
        if (sscanf(name + n, "%d.%n", &l, &used) == 1 && used > 0) return l;
    }
    return -1;
}

int grad_overlap_plan(GradOverlap *g, Model *m, const char **why) {
    memset(g, 0, sizeof *g);
    g->m = m;
    int L = m->cfg.n_layers;
    *why = NULL;
    if (m->lora || m->prompt) {
        *why = "adapters train, and their tensors are not one range per layer";
        return 0;
    }
    g->lo = calloc((size_t)L + 1, sizeof(size_t));
    g->hi = calloc((size_t)L + 1, sizeof(size_t));
    size_t *sum = calloc((size_t)L + 1, sizeof(size_t));
    if (!g->lo || !g->hi || !sum) {
        free(sum);
        grad_overlap_free(g);
        return align_errorf("out of memory");
    }
    for (int l = 0; l < L; l++) g->lo[l] = (size_t)-1;
    int ok = 1;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->info[i];
        if (p->grad_offset < 0) continue;
        if (p->lora) {
            *why = "adapters train, and their tensors are not one range per layer";
            ok = 0;
            break;
        }
        int l = param_layer(p->name);
        if (l < 0) continue;
        if (l >= L) {
            *why = "a tensor names a layer the model does not have";
            ok = 0;
            break;
        }
        size_t a = (size_t)p->grad_offset, b = a + p->numel;
        if (a < g->lo[l]) g->lo[l] = a;
        if (b > g->hi[l]) g->hi[l] = b;
        sum[l] += p->numel;
    }
    for (int l = 0; ok && l < L; l++) {
        if (g->lo[l] == (size_t)-1) g->lo[l] = g->hi[l] = 0; /* nothing of layer l trains */
        else if (g->hi[l] - g->lo[l] != sum[l]) {
            /* another tensor's gradient sits inside the range: it would be
             * summed before it is final */
            *why = "a layer's trainable tensors are not adjacent in the gradient buffer";
            ok = 0;
        }
    }
    free(sum);
    if (!ok) {
        grad_overlap_free(g);
        g->m = m;
        return 0;
    }
    g->n_layers = L;
    g->next = L - 1;
    return 1;
}

/* Start the buckets of layers next .. down to `to`, highest first. */
static int start_down_to(GradOverlap *g, int to, int early) {
    for (; g->next >= to; g->next--) {
        int l = g->next;
        if (g->hi[l] == g->lo[l]) continue;
        if (dist_iallreduce_sum(g->m->grads + g->lo[l], g->hi[l] - g->lo[l])) return -1;
        g->started++;
        g->started_early += early;
    }
    return 0;
}

static void on_layer_ready(void *ctx, int layer) {
    GradOverlap *g = ctx;
    if (g->failed) return;
    if (start_down_to(g, layer, 1) || dist_progress()) g->failed = 1;
}

void grad_overlap_arm(GradOverlap *g) {
    g->m->grads_ready = on_layer_ready;
    g->m->grads_ready_ctx = g;
}

void grad_overlap_disarm(GradOverlap *g) {
    g->m->grads_ready = NULL;
    g->m->grads_ready_ctx = NULL;
}

int grad_overlap_finish(GradOverlap *g) {
    grad_overlap_disarm(g);
    int rc = g->failed ? -1 : start_down_to(g, 0, 0);
    /* the rest: the gaps between the layer ranges, in buffer order (the
     * layers' ranges are disjoint; sort their starts) */
    size_t at = 0, n = g->m->n_grad_elems;
    while (rc == 0 && at < n) {
        size_t end = n, skip = 0;
        for (int l = 0; l < g->n_layers; l++) /* the first layer range at or after `at` */
            if (g->hi[l] > g->lo[l] && g->lo[l] >= at && g->lo[l] < end) end = g->lo[l], skip = g->hi[l];
        if (end > at) {
            rc = dist_iallreduce_sum(g->m->grads + at, end - at);
            g->started++;
        }
        at = end < n ? skip : n;
    }
    /* wait even after a failure to start one: the started ones must end */
    int wrc = dist_wait_sums();
    g->next = g->n_layers - 1;
    g->failed = 0;
    return rc || wrc ? -1 : 0;
}

void grad_overlap_free(GradOverlap *g) {
    if (g->m && g->m->grads_ready == on_layer_ready) grad_overlap_disarm(g);
    free(g->lo), free(g->hi);
    g->lo = g->hi = NULL;
    g->n_layers = 0;
}
