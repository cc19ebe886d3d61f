/* backend.c: picking a backend by name at run time (--device cpu|cuda), and
 * turning a backend's recorded failure into a caller's error. */
#include <string.h>

#include "backend.h"
#include "util.h"
#ifdef ALIGN_HAVE_CUDA
#include "cuda/backend_cuda.h"
#endif

const Backend *backend_get(const char *name) {
    if (!name || !strcmp(name, "cpu")) return &backend_cpu;
    if (!strcmp(name, "cuda")) {
#ifdef ALIGN_HAVE_CUDA
        if (cuda_backend_available()) return &backend_cuda;
        align_errorf("--device cuda: no CUDA device is available on this machine");
#else
        align_errorf("--device cuda: this build has no CUDA backend (rebuild with nvcc and -DALIGN_CUDA=ON)");
#endif
        return NULL;
    }
    align_errorf("--device %s: unknown device (expected cpu or cuda)", name);
    return NULL;
}

int backend_check(const Backend *be, const char *what) {
    if (!be->status || !be->status()) return 0;
    return align_error_prefix("%s", what);
}
