/* fuzz_ckpt: libFuzzer target for .ckpt loading (safetensors structure,
 * metadata, the config.json inside it, checksum, parameter shapes). Inputs
 * go through a file because ckpt_load maps a path. Most mutations of a real
 * checkpoint stop at the checksum; the header and config paths before it
 * are where the parsing risk is, and they run on every input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ckpt.h"

static char path[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/fuzz_ckpt_%ld.ckpt", dir, (long)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    ModelConfig cfg;
    if (ckpt_read_config(path, &cfg) != 0) return 0;
    /* Keep the fuzzer from allocating huge models a header merely claims. */
    if ((double)cfg.vocab_size * cfg.dim > 1e7 || (double)cfg.n_layers * cfg.dim * cfg.ffn_dim > 1e8 ||
        (double)cfg.max_seq_len * cfg.dim > 1e7)
        return 0;
    Model *m = NULL;
    CkptExtras x;
    if (ckpt_load(path, &backend_cpu, &m, &x) == 0) {
        model_free(m);
        ckpt_extras_free(&x);
    }
    return 0;
}
