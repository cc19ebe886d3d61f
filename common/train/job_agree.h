/* job_agree: every rank of a data-parallel job trains the same thing.
 *
 * Ranks started by hand (`--dist-init`) each get their own command line, and
 * mpirun can start different ones (`mpirun -np 1 A : -np 1 B`). Nothing in the
 * collectives notices a rank given another --lr, --seed or --data: the ranks
 * silently train different models, or one ends early and the others wait in
 * a collective until --dist-timeout. So right after the ranks meet, each one
 * sends the others a fingerprint of its job and every rank compares it with
 * rank 0's:
 *  - every flag of the program, as parsed (config file included), except the
 *    ones that are the rank's own or only rank 0 uses (--rank, --out,
 *    --metrics, --eval-data, ...: job_agree_is_local);
 *  - the training examples as loaded (their token ids, lengths and labels:
 *    the same path may hold another file on another host);
 *  - the starting weights (the model, --resume, --lora-adapter).
 * The first difference (lowest rank, then table order) is one sentence that
 * every rank agrees on, naming the flag and both values; the job stops with
 * exit status 2 before any step. docs/DECISIONS.md, "Data parallelism over
 * MPI". */
#ifndef ALIGN_JOB_AGREE_H
#define ALIGN_JOB_AGREE_H

#include <stdint.h>

#include "dataset.h"
#include "model.h"

/* Remember the training data a program loaded (trainer_load_data calls it). */
void job_agree_note_data(const Dataset *ds);
/* Whether flag `name` may differ between ranks. */
int job_agree_is_local(const char *name);
/* Compare this rank's job with rank 0's (a no-op in a world of one).
 * Returns 0 when they agree, -1 when a collective failed (align_error());
 * on a difference every rank prints (dist_exit_agreed) and exits 2. */
int job_agree_check(const char *prog, const Model *m, long n_train);

#endif
