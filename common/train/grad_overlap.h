/* grad_overlap: the data-parallel gradient sum overlapping the backward pass.
 *
 * model_backward runs from the last layer down; as soon as layer l's weight
 * gradients are final (Model.grads_ready), that layer's contiguous range of
 * the flat gradient buffer is summed across the ranks with one in-place
 * MPI_Iallreduce (a bucket), while the lower layers are still computed.
 * Each hook call also drives the pending sums (dist_progress): OpenMPI has
 * no progress thread by default. After the backward, what no layer bucket
 * holds (embeddings, final norm, LM head, value head) is summed and every
 * sum is waited for, bounded by --dist-timeout (dist_wait_sums).
 *
 * Every rank starts the buckets in one fixed order (layers from the last
 * down, then the rest in buffer order), whichever layers its backward
 * reached, so a rank with no examples in a micro-batch still matches the
 * others. Only the last micro-batch of a step uses it (earlier ones only
 * accumulate), and only for a task with one backward per micro-batch
 * (TrainTask.one_backward): a second backward would add into buffers
 * already being summed.
 *
 * A layout that is not one range per layer falls back to the single
 * all-reduce after the backward: adapters (LoRA, DoRA, IA3 and virtual
 * tokens are tensors appended after the heads, written by every layer's
 * backward) or a layer whose trainable tensors are not adjacent in the
 * gradient buffer. */
#ifndef ALIGN_GRAD_OVERLAP_H
#define ALIGN_GRAD_OVERLAP_H

#include <stddef.h>

#include "model.h"

typedef struct {
    Model *m;
    int n_layers;
    size_t *lo, *hi; /* layer l's trainable gradients: grads[lo[l] .. hi[l]) (empty when lo == hi) */
    int next;        /* the highest layer whose bucket is not started yet */
    int failed;      /* a hook call failed: grad_overlap_finish reports it */
    long started_early, started; /* buckets started during the backward, all buckets (whole run) */
} GradOverlap;

/* Plan the buckets of m's current gradient layout (call after the
 * trainable set is final). Returns 1 when the overlap can run, 0 when it
 * cannot (why: a phrase for the log), -1 on error. */
int grad_overlap_plan(GradOverlap *g, Model *m, const char **why);
/* Make the next model_backward start the layer buckets (sets the hook). */
void grad_overlap_arm(GradOverlap *g);
/* Clear the hook (after the micro-batch's backward, or on its failure). */
void grad_overlap_disarm(GradOverlap *g);
/* After the backward: clear the hook, start every bucket not started yet
 * and the rest of the buffer, and wait for all. 0 or -1 with an error. */
int grad_overlap_finish(GradOverlap *g);
void grad_overlap_free(GradOverlap *g);

#endif
