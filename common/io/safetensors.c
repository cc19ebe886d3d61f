/* safetensors: reader (mmap + full validation) and atomic writer.
 *
 * The reader trusts nothing in the file. The header length must fit in the
 * file and under a fixed cap, the header must be one JSON object (trailing
 * spaces allowed, as the reference writer pads with them), every tensor needs
 * a known dtype, a shape whose element count times the dtype size neither
 * overflows nor differs from its byte range, and the byte ranges, sorted,
 * must tile the data section exactly: no overlap, no gap, nothing left over
 * (the same rule Python's safetensors applies). After st_open succeeds every
 * later access (st_read_f32, direct use of f->data) is in bounds by
 * construction.
 *
 * The writer keeps pointers to the caller's arrays and streams them out
 * after the header, so a multi-GB checkpoint is never copied in memory. The
 * header is padded with spaces to a multiple of 8 so the data section (and
 * every fp32 tensor in it) is 8-byte aligned in the mapped file. */
#include "safetensors.h"
#include "quant.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* The reference implementation refuses headers over 100 MB; so do we. */
#define ST_MAX_HEADER (100u * 1024u * 1024u)
#define ST_MAX_INT 9007199254740992.0 /* 2^53: exact in a JSON double */

static const char *const dtype_names[ST_DTYPE_COUNT] = {"F32", "F16", "BF16", "F64", "I64",
                                                        "I32", "I16", "I8",   "U8",  "BOOL"};
static const size_t dtype_sizes[ST_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};

size_t st_dtype_size(StDtype dt) { return (unsigned)dt < ST_DTYPE_COUNT ? dtype_sizes[dt] : 0; }
const char *st_dtype_name(StDtype dt) {
    return (unsigned)dt < ST_DTYPE_COUNT ? dtype_names[dt] : "?";
}

int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* ------------------------------------------------------------------ reading */

static void st_free_parsed(StFile *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    f->tensors = NULL;
    f->meta_keys = f->meta_values = NULL;
    f->n_tensors = f->n_meta = 0;
}

void st_close(StFile *f) {
    if (!f) return;
    st_free_parsed(f);
    if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > ST_MAX_INT || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int cmp_by_begin(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Parse and validate the header JSON (hdr[0..n)) against data_len. */
static int st_parse_header(StFile *f, const char *hdr, size_t n) {
    if (memchr(hdr, 0, n)) return align_errorf("header contains a NUL byte");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, n, &end, 0);
    if (!root) return align_errorf("header is not valid JSON");
    for (const char *p = end; p && p < hdr + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return align_errorf("header has trailing bytes after the JSON object");
        }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return align_errorf("header is not a JSON object");
    }
    int count = cJSON_GetArraySize(root);
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    StTensor **sorted = calloc(count ? count : 1, sizeof *sorted);
    if (!f->tensors || !sorted) {
        free(sorted);
        cJSON_Delete(root);
        return align_errorf("out of memory reading the header");
    }
    int rc = -1, seen_meta = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        const char *name = it->string;
        if (!name || !name[0]) {
            align_errorf("a tensor has an empty name");
            goto out;
        }
        if (strcmp(name, "__metadata__") == 0) {
            if (seen_meta++) {
                align_errorf("__metadata__ appears twice");
                goto out;
            }
            if (!cJSON_IsObject(it)) {
                align_errorf("__metadata__ is not an object");
                goto out;
            }
            int nm = cJSON_GetArraySize(it);
            f->meta_keys = calloc(nm ? nm : 1, sizeof(char *));
            f->meta_values = calloc(nm ? nm : 1, sizeof(char *));
            if (!f->meta_keys || !f->meta_values) {
                align_errorf("out of memory reading the header");
                goto out;
            }
            const cJSON *m;
            cJSON_ArrayForEach(m, it) {
                if (!cJSON_IsString(m)) {
                    align_errorf("metadata value \"%.64s\" is not a string", m->string);
                    goto out;
                }
                f->meta_keys[f->n_meta] = strdup(m->string);
                f->meta_values[f->n_meta] = strdup(m->valuestring);
                f->n_meta++;
                if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1]) {
                    align_errorf("out of memory reading the header");
                    goto out;
                }
            }
            continue;
        }
        if (!cJSON_IsObject(it)) {
            align_errorf("tensor \"%.64s\" is not an object", name);
            goto out;
        }
        StTensor *t = &f->tensors[f->n_tensors];
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off)) {
            align_errorf("tensor \"%.64s\" lacks dtype, shape or data_offsets", name);
            goto out;
        }
        int d;
        for (d = 0; d < ST_DTYPE_COUNT; d++)
            if (strcmp(dt->valuestring, dtype_names[d]) == 0) break;
        if (d == ST_DTYPE_COUNT) {
            align_errorf("tensor \"%.64s\" has unsupported dtype \"%.16s\"", name, dt->valuestring);
            goto out;
        }
        t->dtype = (StDtype)d;
        int nd = cJSON_GetArraySize(sh);
        if (nd > 8) {
            align_errorf("tensor \"%.64s\" has %d dimensions (at most 8)", name, nd);
            goto out;
        }
        t->ndim = nd;
        /* Element count with overflow checks: bytes must fit in the file. */
        uint64_t numel = 1;
        int zero = 0;
        for (int i = 0; i < nd; i++) {
            uint64_t v;
            if (json_uint(cJSON_GetArrayItem(sh, i), &v) != 0) {
                align_errorf("tensor \"%.64s\" has a bad shape entry", name);
                goto out;
            }
            t->shape[i] = (int64_t)v;
            if (v == 0) zero = 1;
            else if (!zero && numel > f->data_len / v) {
                align_errorf("tensor \"%.64s\" shape is larger than the file", name);
                goto out;
            } else if (!zero)
                numel *= v;
        }
        if (zero) numel = 0;
        uint64_t b, e;
        if (cJSON_GetArraySize(off) != 2 || json_uint(cJSON_GetArrayItem(off, 0), &b) != 0 ||
            json_uint(cJSON_GetArrayItem(off, 1), &e) != 0) {
            align_errorf("tensor \"%.64s\" has bad data_offsets", name);
            goto out;
        }
        if (b > e || e > f->data_len) {
            align_errorf("tensor \"%.64s\" data_offsets [%llu, %llu] lie outside the %zu-byte data "
                         "section",
                         name, (unsigned long long)b, (unsigned long long)e, f->data_len);
            goto out;
        }
        if (numel > f->data_len || numel * dtype_sizes[d] != e - b) {
            align_errorf("tensor \"%.64s\" shape needs %llu bytes but data_offsets span %llu", name,
                         (unsigned long long)(numel * dtype_sizes[d]), (unsigned long long)(e - b));
            goto out;
        }
        t->begin = (size_t)b;
        t->end = (size_t)e;
        t->name = strdup(name);
        if (!t->name) {
            align_errorf("out of memory reading the header");
            goto out;
        }
        for (int j = 0; j < f->n_tensors; j++)
            if (strcmp(f->tensors[j].name, name) == 0) {
                f->n_tensors++;
                align_errorf("tensor \"%.64s\" appears twice", name);
                goto out;
            }
        sorted[f->n_tensors] = t;
        f->n_tensors++;
    }
    /* The byte ranges must tile [0, data_len) exactly. */
    qsort(sorted, f->n_tensors, sizeof *sorted, cmp_by_begin);
    size_t pos = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        if (sorted[i]->begin < pos) {
            align_errorf("tensors \"%.64s\" and \"%.64s\" overlap", sorted[i - 1]->name,
                         sorted[i]->name);
            goto out;
        }
        if (sorted[i]->begin > pos) {
            align_errorf("gap in the data section before tensor \"%.64s\"", sorted[i]->name);
            goto out;
        }
        pos = sorted[i]->end;
    }
    if (pos != f->data_len) {
        align_errorf("data section is %zu bytes but the tensors cover %zu", f->data_len, pos);
        goto out;
    }
    rc = 0;
out:
    free(sorted);
    cJSON_Delete(root);
    return rc;
}

int st_open(StFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return align_errorf("cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return align_errorf("cannot stat %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return align_errorf("%s is not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return align_errorf("%s is not a safetensors file: %zu bytes, too short for a header",
                            path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return align_errorf("cannot map %s: %s", path, strerror(errno));
    f->map = map;
    f->map_len = size;
    f->path = strdup(path);
    const uint8_t *p = map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];
    if (n > size - 8) {
        align_errorf("%s is truncated or not a safetensors file: header length %llu exceeds the "
                     "file size %zu",
                     path, (unsigned long long)n, size);
        st_close(f);
        return -1;
    }
    if (n > ST_MAX_HEADER || n < 2) {
        align_errorf("%s has an implausible safetensors header length %llu", path,
                     (unsigned long long)n);
        st_close(f);
        return -1;
    }
    f->data = p + 8 + n;
    f->data_len = size - 8 - (size_t)n;
    if (!f->path || st_parse_header(f, (const char *)p + 8, (size_t)n) != 0) {
        align_error_prefix("%s", path);
        st_close(f);
        return -1;
    }
    return 0;
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

int st_read_f32(const StFile *f, const StTensor *t, float *out) {
    const uint8_t *src = f->data + t->begin;
    size_t n = (size_t)st_numel(t);
    switch (t->dtype) {
    case ST_F32: memcpy(out, src, n * 4); return 0;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = quant_f16_to_f32(h);
        }
        return 0;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
        }
        return 0;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        return align_errorf("%s: tensor \"%.64s\" has dtype %s, which cannot be read as floats",
                            f->path ? f->path : "safetensors", t->name, dtype_names[t->dtype]);
    }
}

/* ------------------------------------------------------------------ writing */

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[8];
    size_t bytes;
    const void *data;
} StEntry;

struct StWriter {
    StEntry *e;
    int n, cap;
    char **mk, **mv;
    int nm, capm;
};

StWriter *st_writer_new(void) {
    StWriter *w = calloc(1, sizeof *w);
    if (!w) align_errorf("out of memory creating a safetensors writer");
    return w;
}

void st_writer_free(StWriter *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    for (int i = 0; i < w->nm; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->e);
    free(w->mk);
    free(w->mv);
    free(w);
}

int st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                  const void *data) {
    if (!name || !name[0] || strcmp(name, "__metadata__") == 0)
        return align_errorf("safetensors writer: bad tensor name");
    if ((unsigned)dtype >= ST_DTYPE_COUNT || ndim < 0 || ndim > 8)
        return align_errorf("safetensors writer: tensor \"%.64s\" has a bad dtype or rank", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            return align_errorf("safetensors writer: tensor \"%.64s\" added twice", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        StEntry *e = realloc(w->e, cap * sizeof *e);
        if (!e) return align_errorf("out of memory in the safetensors writer");
        w->e = e;
        w->cap = cap;
    }
    StEntry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return align_errorf("safetensors writer: negative dimension in %.64s", name);
        e->shape[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    e->name = strdup(name);
    if (!e->name) return align_errorf("out of memory in the safetensors writer");
    e->dtype = dtype;
    e->ndim = ndim;
    e->bytes = numel * dtype_sizes[dtype];
    e->data = data;
    w->n++;
    return 0;
}

int st_writer_meta(StWriter *w, const char *key, const char *value) {
    for (int i = 0; i < w->nm; i++)
        if (strcmp(w->mk[i], key) == 0) {
            char *v = strdup(value);
            if (!v) return align_errorf("out of memory in the safetensors writer");
            free(w->mv[i]);
            w->mv[i] = v;
            return 0;
        }
    if (w->nm == w->capm) {
        int cap = w->capm ? 2 * w->capm : 8;
        char **a = realloc(w->mk, cap * sizeof *a);
        if (!a) return align_errorf("out of memory in the safetensors writer");
        w->mk = a;
        char **b = realloc(w->mv, cap * sizeof *b);
        if (!b) return align_errorf("out of memory in the safetensors writer");
        w->mv = b;
        w->capm = cap;
    }
    w->mk[w->nm] = strdup(key);
    w->mv[w->nm] = strdup(value);
    w->nm++;
    if (!w->mk[w->nm - 1] || !w->mv[w->nm - 1])
        return align_errorf("out of memory in the safetensors writer");
    return 0;
}

static int write_all(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t k = write(fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static char *st_build_header(const StWriter *w, size_t *len_out) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (w->nm > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta && i < w->nm; i++) cJSON_AddStringToObject(meta, w->mk[i], w->mv[i]);
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const StEntry *e = &w->e[i];
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        if (!t) break;
        cJSON_AddStringToObject(t, "dtype", dtype_names[e->dtype]);
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; sh && d < e->ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
        cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
        if (o) {
            cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
            cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + e->bytes)));
        }
        off += e->bytes;
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!s) return NULL;
    size_t n = strlen(s), padded = (n + 8 + 7) / 8 * 8 - 8; /* data starts 8-aligned */
    char *out = realloc(s, padded + 1);
    if (!out) {
        free(s);
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = 0;
    *len_out = padded;
    return out;
}

/* The pid in a temp file name "<base>.tmp.PID.N" of ours, else 0. */
static long temp_file_pid(const char *name, const char *base) {
    size_t blen = strlen(base);
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0) return 0;
    const char *p = name + blen + 5;
    long pid = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 10; p++, digits++) pid = pid * 10 + (*p - '0');
    if (!digits || *p++ != '.' || !(*p >= '0' && *p <= '9')) return 0;
    while (*p >= '0' && *p <= '9') p++;
    return *p || pid > INT32_MAX ? 0 : pid;
}

/* A process killed during a save (SIGKILL, the OOM killer) leaves its temp
 * file behind, a whole checkpoint's size each time; repeated kills fill the
 * disk. Before writing path again, remove its temp files whose writer is
 * gone (kill(pid, 0) fails with ESRCH). A live pid keeps its file, be it a
 * concurrent writer, a reused pid or another user's process (EPERM); so do
 * our own, which may be a save in progress on another thread. A writer in
 * another pid namespace sharing the directory would look dead: don't point
 * containers with separate pid spaces at the same checkpoint path. Best
 * effort: nothing here stops the save. */
static void remove_stale_temps(const char *path) {
    char *d = strdup(path), *b = strdup(path);
    DIR *dp = d && b ? opendir(dirname(d)) : NULL;
    if (dp) {
        const char *base = basename(b);
        struct dirent *e;
        while ((e = readdir(dp))) {
            long pid = temp_file_pid(e->d_name, base);
            if (pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) == -1 && errno == ESRCH)
                unlinkat(dirfd(dp), e->d_name, 0);
        }
        closedir(dp);
    }
    free(d);
    free(b);
}

int st_writer_save(StWriter *w, const char *path) {
    remove_stale_temps(path);
    size_t hlen;
    char *hdr = st_build_header(w, &hlen);
    if (!hdr) return align_errorf("out of memory building the safetensors header for %s", path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 64);
    char *dir = strdup(path);
    if (!tmp || !dir) {
        free(hdr);
        free(tmp);
        free(dir);
        return align_errorf("out of memory writing %s", path);
    }
    static _Atomic unsigned counter;
    snprintf(tmp, plen + 64, "%s.tmp.%ld.%u", path, (long)getpid(), counter++);
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        align_errorf("cannot create %s: %s", tmp, strerror(errno));
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int bad = write_all(fd, len8, 8) || write_all(fd, hdr, hlen);
    for (int i = 0; !bad && i < w->n; i++)
        if (w->e[i].bytes) bad = write_all(fd, w->e[i].data, w->e[i].bytes);
    if (bad) {
        align_errorf("cannot write %s: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (fsync(fd) != 0) {
        align_errorf("cannot sync %s: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (close(fd) != 0) {
        align_errorf("cannot close %s: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        align_errorf("cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    /* Make the rename itself durable. */
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
done:
    free(hdr);
    free(tmp);
    free(dir);
    return rc;
}
