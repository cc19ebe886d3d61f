/* fuzz_safetensors: libFuzzer target for the safetensors reader. st_open
 * reads a path (it maps the file), so each input goes through a file in
 * /dev/shm (or TMPDIR); every accepted float tensor is then converted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "safetensors.h"

static char path[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/fuzz_st_%ld.safetensors", dir, (long)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    StFile st;
    if (st_open(&st, path) == 0) {
        for (int i = 0; i < st.n_tensors; i++) {
            int64_t n = st_numel(&st.tensors[i]);
            if (n > (1 << 22)) continue;
            float *out = malloc((size_t)(n ? n : 1) * sizeof(float));
            if (out) st_read_f32(&st, &st.tensors[i], out);
            free(out);
        }
        st_meta(&st, "config");
        st_close(&st);
    }
    return 0;
}
