/* dist_rendezvous: N hand-started processes joined into one MPI
 * communicator, torchrun-style (`--dist-init tcp://HOST:PORT --rank R
 * --world-size N`), for dist.c; no mpirun.
 *
 * OpenMPI 4.1's singletons (processes that call MPI_Init without a
 * launcher) can connect to each other only through a common `ompi-server`
 * (docs/DECISIONS.md, "Data parallelism over MPI"). So:
 *  1. rank 0 listens on HOST:PORT; every other rank connects and says who it
 *     is (rank, world size, pid, host). Rank 0 checks them (same world size,
 *     no rank twice) and waits until all have arrived or the timeout says
 *     which ranks are missing;
 *  2. rank 0 starts `ompi-server` (it dies with rank 0) and opens an MPI
 *     port, then sends the server's URI to every rank; each rank points its
 *     singleton at the server (OMPI_MCA_pmix_server_uri) and calls MPI_Init;
 *  3. ranks 1..N-1 join in rank order: rank 0 tells rank k its turn (an
 *     accept takes whichever connect comes first), rank k MPI_Comm_connects
 *     to the port, the communicator of ranks 0..k-1 MPI_Comm_accepts it, and
 *     MPI_Intercomm_merge puts k last. The result is the job's world.
 * The collectives are MPI's own; only the meeting and the liveness are ours.
 *
 * The TCP sockets stay open for the whole run: a rank that dies (closes
 * them without a word) or leaves with an error is seen by rank 0 at once,
 * which tells the others which rank it was, and every rank stops with one
 * line (the `lost` callback) instead of waiting in a collective. A rank that
 * ends normally says so first, so a clean end is never taken for a loss. A
 * job with no end of its own (ppo_policy, a service) is stopped through the
 * same sockets: dist_rendezvous_stop on the rank a signal reached. */
#ifndef ALIGN_DIST_RENDEZVOUS_H
#define ALIGN_DIST_RENDEZVOUS_H

typedef struct {
    char host[256];
    char port[16];
    int rank, size;
} DistRendezvous;

/* Parse "tcp://HOST:PORT" (HOST a name, an IPv4 address or [IPv6]) and
 * check rank and size; an error names the flag. */
int dist_rendezvous_parse(const char *url, int rank, int size, DistRendezvous *out);

#ifdef ALIGN_HAVE_MPI
#include <mpi.h>

/* Called from the liveness thread when rank `rank` is gone: status -1 when
 * it vanished without a word (killed), DIST_RDV_STOPPED when it stopped the
 * job on purpose (dist_rendezvous_stop: a service told to end; every rank
 * leaves with exit 0), else the exit status it left with. It prints and
 * ends this process. */
typedef void (*DistLostFn)(int rank, int status);
#define DIST_RDV_STOPPED (-2)

/* Steps 1-3 above, MPI_Init included; timeout_s bounds the wait for the
 * other ranks (0 = forever). On success *world holds the N ranks in rank
 * order and the liveness thread runs. */
int dist_rendezvous_join(const DistRendezvous *r, double timeout_s, MPI_Comm *world, DistLostFn lost);
/* This rank is leaving with `status` (0: a clean end, after the final
 * barrier): tell the peers, and on rank 0 stop the ompi-server.
 * Async-signal-safe (the fault handlers call it). */
void dist_rendezvous_leave(int status);
/* Stop the whole job on purpose, now, wherever the ranks are (a service's
 * SIGTERM: ppo_policy has no end of its own; mpirun's counterpart is its
 * SIGTERM to every rank). Every other rank hears it through the liveness
 * sockets (its `lost` callback with DIST_RDV_STOPPED); rank 0 stops its
 * ompi-server last. Returns once the others are gone (or after a few
 * seconds), so this rank leaves after them and no collective sees a peer
 * vanish. Async-signal-safe (called from a signal handler). */
void dist_rendezvous_stop(void);
/* Remove this rank's OpenMPI session folder (made by dist_rendezvous_join:
 * without MPI_Finalize OpenMPI leaves it). dist_rendezvous_leave and
 * dist_rendezvous_stop do; for an exit that calls neither. Async-signal-safe. */
void dist_rendezvous_remove_tmp(void);
/* Whether such a stop is under way on this rank: a collective that fails
 * meanwhile failed because the peers are leaving, not a fault. */
int dist_rendezvous_stopping(void);
#endif

#endif
