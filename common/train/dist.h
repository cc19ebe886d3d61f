/* dist: the processes of a data-parallel job, over MPI.
 *
 * `mpirun -np N sft_run ...` starts N ranks; OpenMPI tells each its place
 * through OMPI_COMM_WORLD_* (PMIX_RANK, PMI_RANK for other launchers), and
 * only then is MPI initialised: a program started without a launcher is a
 * world of size 1 and never touches MPI, and a build without MPI (no
 * libopenmpi-dev) is always a world of size 1.
 *
 * Without mpirun, N processes started by hand (or by a scheduler, on one
 * host or several) with `--dist-init tcp://HOST:PORT --rank R --world-size
 * N` meet at rank 0's address and become one MPI communicator
 * (dist_rendezvous.h: OpenMPI singletons joined through an ompi-server that
 * rank 0 starts). Every collective below runs on that job communicator, so
 * the trainers cannot tell the two ways apart.
 *
 * The collectives are MPI's own (MPI_Allreduce, MPI_Bcast, MPI_Allgatherv,
 * MPI_Gatherv); the wrappers only split counts past INT_MAX and turn an MPI
 * error into an align_errorf sentence.
 *
 * Faults: when a rank dies, mpirun ends the job by sending SIGTERM to the
 * others. dist_init installs a SIGTERM/SIGINT handler that prints one line
 * naming the lost rank (the peers on this host whose process is gone) and
 * the last checkpoint to resume from (dist_set_resume_hint), then exits 1
 * at once: the atomic writers (.ckpt, metrics) leave no half file behind.
 * A collective that waits longer than the timeout (a hung peer) aborts the
 * job with the same kind of line. With --dist-init there is no mpirun to
 * send SIGTERM: the rendezvous sockets stay open, and a rank that dies or
 * leaves with an error stops every other one at once with a line naming
 * it. */
#ifndef ALIGN_DIST_H
#define ALIGN_DIST_H

#include <stddef.h>

#include "metrics.h"

/* Join the job when started by a launcher or given a rendezvous
 * (idempotent). prog prefixes the fault messages; timeout_s bounds every
 * collective and, with a rendezvous, the wait for every rank to arrive
 * (0 = no bound). */
int dist_init(const char *prog, double timeout_s);
/* Before dist_init: --dist-init tcp://HOST:PORT, --rank, --world-size
 * (url NULL: none). Checks them (an error names the flag; refused under
 * mpirun, which already says who is who) and makes dist_rank() answer
 * with this rank from then on. */
int dist_set_rendezvous(const char *url, int rank, int world_size);
/* This process's rank (before dist_init: the launcher's, from the
 * environment, or the rendezvous's --rank). */
int dist_rank(void);
int dist_size(void);
/* Whether this build can run more than one rank. */
int dist_available(void);

/* Sum buf over the ranks, in place (in buckets of at most 64 Mi floats). */
int dist_allreduce_sum(float *buf, size_t n);
/* The same without waiting (MPI_Iallreduce, in place): the sum is started
 * and kept pending until dist_wait_sums. Every rank must start the same
 * sums (sizes) in the same order; buf must not be touched meanwhile. */
int dist_iallreduce_sum(float *buf, size_t n);
/* Let the pending sums advance (MPI_Testall): OpenMPI has no progress
 * thread by default, so a nonblocking collective moves only inside MPI
 * calls; call it between pieces of work. */
int dist_progress(void);
/* Wait for every pending sum (MPI_Waitall), bounded by the timeout as the
 * blocking collectives are. */
int dist_wait_sums(void);
int dist_allreduce_sum_double(double *buf, int n);
int dist_allreduce_max_double(double *buf, int n);
/* Every rank's `bytes` of `mine` into all (size() * bytes, rank order). */
int dist_allgather_bytes(const void *mine, void *all, size_t bytes);
/* buf holds every rank's part (counts[r] floats at displs[r]); rank r
 * filled its own: afterwards every rank holds them all (in place). */
int dist_allgatherv(float *buf, const size_t *counts, const size_t *displs);
/* Rank `root` receives every rank's part into all (counts/displs as above);
 * `mine` is this rank's counts[rank] floats. all may be NULL elsewhere. */
int dist_gatherv(const float *mine, float *all, const size_t *counts, const size_t *displs, int root);
int dist_bcast(void *buf, size_t bytes, int root);
/* The same for a rank that waits for work of unknown length (a worker
 * between requests): no timeout, and it sleeps between polls instead of
 * spinning as a blocking MPI_Bcast does. */
int dist_bcast_idle(void *buf, size_t bytes, int root);
int dist_barrier(void);
/* Every rank's metric accumulators merged, in rank order, on every rank
 * (so all ranks see the same loss and stop together on a bad one). */
int dist_merge_metrics(Metrics *acc);
/* Stop every rank: one line on stderr, then MPI_Abort (exit(code) alone
 * when single). */
void dist_abort(const char *why, int code);
/* Every rank found the same fault (a mismatch job_agree.h found, after an
 * allgather): one line, then exit(code) on every rank, none taken for a lost
 * one. Under mpirun (one merged output) rank 0 prints it; with --dist-init
 * every rank does (each has its own terminal or log). */
void dist_exit_agreed(const char *why, int code) __attribute__((noreturn));
/* End a job that has no end of its own (a service: ppo_policy) on purpose,
 * every rank with exit 0; for a SIGTERM/SIGINT handler (async-signal-safe;
 * does not return). Under mpirun, mpirun's SIGTERM reaches every rank and
 * each just leaves; with --dist-init the signal reaches one rank, which
 * tells the others and leaves after them (rank 0's ompi-server last). */
void dist_stop_job(void);

/* Whether the job was started by a launcher (mpirun) or joined by
 * --dist-init, whatever its size. */
int dist_launched(void);
/* This rank's index among the ranks on its host (the GPU it takes). */
int dist_local_rank(void);

/* ---- NCCL (dist_nccl.c): gradients in GPU memory ----
 * Under a launcher with --device cuda, the trainer sums gradients with
 * ncclAllReduce on one communicator over the MPI world (its id sent from
 * rank 0 by MPI_Bcast; each rank takes the GPU of its local rank). With
 * `mpirun -np 1` the path runs with a world of one (tests/gpu/check.sh). */
int dist_nccl_available(void); /* this build has NCCL */
int dist_nccl_init(void);      /* after dist_init; idempotent */
int dist_nccl_allreduce_sum(float *dev_buf, size_t n);
void dist_nccl_finalize(void);

/* The checkpoint the fault messages tell the user to resume from. */
void dist_set_resume_hint(const char *path);
/* Seconds spent inside collectives since the last call (and reset). */
double dist_take_comm_time(void);

#endif
