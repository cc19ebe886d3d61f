/* fuzz_gguf: libFuzzer target for the GGUF parser and dequantisers.
 * Parses the input from memory, then reads every tensor it accepted. */
#include <stdint.h>
#include <stdlib.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    GgufFile f;
    if (gguf_parse(&f, data, size, "fuzz.gguf") != 0) return 0;
    for (int i = 0; i < f.n_tensors; i++) {
        int64_t n = gguf_tensor_numel(&f.tensors[i]);
        if (n > (1 << 22)) continue;
        float *out = malloc((size_t)n * sizeof(float));
        if (out) gguf_read_f32(&f, &f.tensors[i], out);
        free(out);
    }
    int64_t v;
    gguf_get_int(&f, "general.alignment", &v);
    gguf_get_str(&f, "general.architecture");
    gguf_close(&f);
    return 0;
}
