/* safetensors: read and write the safetensors format (the .ckpt container).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
 * {string: string}}, then the data section, row-major, no gaps.
 *
 * Reading maps the file and validates everything a lying header could use to
 * make us read out of bounds or allocate without limit (header length versus
 * file size, offsets versus data size, shape product versus byte size,
 * overlapping or gapped tensors). Writing goes to a temporary file in the same
 * directory, fsyncs it, and renames it over the target, so a crash never
 * leaves a half-written file under the final name. */
#ifndef ALIGN_SAFETENSORS_H
#define ALIGN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ST_F32 = 0, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
    ST_DTYPE_COUNT
} StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[8];
    size_t begin, end;   /* byte offsets into the data section */
} StTensor;

typedef struct {
    char *path;
    int n_tensors;
    StTensor *tensors;
    int n_meta;
    char **meta_keys, **meta_values;
    const uint8_t *data;   /* start of the data section */
    size_t data_len;
    void *map;             /* private: mapping of the whole file */
    size_t map_len;
} StFile;

/* Open and validate; -1 with an error naming the file and the fault. */
int st_open(StFile *f, const char *path);
void st_close(StFile *f);

const StTensor *st_find(const StFile *f, const char *name);
/* Metadata value, or NULL when absent. */
const char *st_meta(const StFile *f, const char *key);
size_t st_dtype_size(StDtype dt);
const char *st_dtype_name(StDtype dt);
int64_t st_numel(const StTensor *t);
/* Convert a tensor (F32, F16, BF16, F64) to fp32 into out[st_numel(t)]. */
int st_read_f32(const StFile *f, const StTensor *t, float *out);

/* ---- writing ---- */
typedef struct StWriter StWriter;
StWriter *st_writer_new(void);
/* The data is NOT copied: it must stay valid until st_writer_save returns. */
int st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                  const void *data);
int st_writer_meta(StWriter *w, const char *key, const char *value);
/* Atomic write (temp file "<path>.tmp.PID.N", fsync, rename). First removes
 * the temp files of path left by writers that no longer run. */
int st_writer_save(StWriter *w, const char *path);
void st_writer_free(StWriter *w);

#endif
