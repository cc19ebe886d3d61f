/* dist_nccl: the GPU side of data parallelism (dist.h) — one NCCL
 * communicator over the MPI world, its id handed from rank 0 with
 * MPI_Bcast, and the gradient all-reduce on device memory. Built when CMake
 * finds NCCL beside the CUDA toolkit and MPI (ALIGN_HAVE_NCCL); otherwise
 * every call says so. */
#include "dist.h"

#include "util.h"

#ifdef ALIGN_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>

static ncclComm_t g_comm;
static cudaStream_t g_stream;
static int g_ready;

int dist_nccl_available(void) { return 1; }

int dist_nccl_init(void) {
    if (g_ready) return 0;
    int devices = 0;
    cudaError_t ce = cudaGetDeviceCount(&devices);
    if (ce != cudaSuccess || devices == 0)
        return align_errorf("NCCL: no CUDA device (%s)", ce != cudaSuccess ? cudaGetErrorString(ce) : "count 0");
    /* one GPU per rank: the rank's index on its host picks it, as torchrun's LOCAL_RANK */
    int dev = dist_local_rank() % devices;
    if ((ce = cudaSetDevice(dev)) != cudaSuccess) return align_errorf("NCCL: cudaSetDevice(%d): %s", dev, cudaGetErrorString(ce));
    ncclUniqueId id;
    ncclResult_t nr = ncclSuccess;
    if (dist_rank() == 0 && (nr = ncclGetUniqueId(&id)) != ncclSuccess)
        return align_errorf("NCCL: ncclGetUniqueId: %s", ncclGetErrorString(nr));
    if (dist_bcast(&id, sizeof id, 0)) return -1;
    if ((nr = ncclCommInitRank(&g_comm, dist_size(), id, dist_rank())) != ncclSuccess)
        return align_errorf("NCCL: ncclCommInitRank (rank %d of %d): %s", dist_rank(), dist_size(), ncclGetErrorString(nr));
    if ((ce = cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking)) != cudaSuccess) {
        ncclCommDestroy(g_comm);
        return align_errorf("NCCL: cudaStreamCreate: %s", cudaGetErrorString(ce));
    }
    g_ready = 1;
    return 0;
}

int dist_nccl_allreduce_sum(float *dev_buf, size_t n) {
    if (!g_ready) return align_errorf("NCCL: dist_nccl_init was not called");
    /* the backward's kernels wrote dev_buf on the default stream: finish them first */
    cudaError_t ce = cudaDeviceSynchronize();
    if (ce != cudaSuccess) return align_errorf("NCCL: before the all-reduce: %s", cudaGetErrorString(ce));
    ncclResult_t nr = ncclAllReduce(dev_buf, dev_buf, n, ncclFloat, ncclSum, g_comm, g_stream);
    if (nr != ncclSuccess) return align_errorf("NCCL: ncclAllReduce of %zu floats: %s", n, ncclGetErrorString(nr));
    if ((ce = cudaStreamSynchronize(g_stream)) != cudaSuccess)
        return align_errorf("NCCL: all-reduce: %s", cudaGetErrorString(ce));
    return 0;
}

void dist_nccl_finalize(void) {
    if (!g_ready) return;
    cudaStreamDestroy(g_stream);
    ncclCommDestroy(g_comm);
    g_ready = 0;
}

#else /* no NCCL in this build */

int dist_nccl_available(void) { return 0; }
int dist_nccl_init(void) {
    return align_errorf("this build has no NCCL (configure with the CUDA toolkit, NCCL and MPI found: see docs/SCALING.md)");
}
int dist_nccl_allreduce_sum(float *dev_buf, size_t n) {
    (void)dev_buf, (void)n;
    return align_errorf("this build has no NCCL");
}
void dist_nccl_finalize(void) {}
#endif
