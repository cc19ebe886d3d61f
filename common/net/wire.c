/* wire: msgpack messages and ZeroMQ framing (see wire.h for the format and
 * the validation rules). */
#include "wire.h"

#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "util.h"

#define WIRE_MAX_FIELDS 64

static const char *dtype_names[] = {"u8", "i32", "i64", "f32", "f64"};
static const size_t dtype_sizes[] = {1, 4, 8, 4, 8};

const char *wire_dtype_name(WireDtype t) { return (unsigned)t <= WIRE_F64 ? dtype_names[t] : "?"; }
size_t wire_dtype_size(WireDtype t) { return (unsigned)t <= WIRE_F64 ? dtype_sizes[t] : 0; }

int wire_dtype_parse(const char *s, size_t len, WireDtype *out) {
    for (int i = 0; i <= WIRE_F64; i++)
        if (strlen(dtype_names[i]) == len && !memcmp(s, dtype_names[i], len)) {
            *out = (WireDtype)i;
            return 0;
        }
    return align_errorf("unknown dtype \"%.*s\" (expected u8, i32, i64, f32 or f64)", (int)(len > 16 ? 16 : len), s);
}

static void limits_resolve(const WireLimits *in, WireLimits *out) {
    WireLimits d = {0};
    if (in) d = *in;
    if (!d.max_bytes) d.max_bytes = 64u << 20;
    if (!d.max_depth) d.max_depth = 8;
    if (!d.max_elems) d.max_elems = d.max_bytes;
    if (!d.max_strings) d.max_strings = 65536;
    *out = d;
}

/* The wire is little-endian; swap on a big-endian host. */
static int host_is_little(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static void swap_copy(void *dst, const void *src, size_t n, size_t size) {
    if (size == 1 || host_is_little()) {
        memcpy(dst, src, n * size);
        return;
    }
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (size_t i = 0; i < n; i++)
        for (size_t b = 0; b < size; b++) d[i * size + b] = s[i * size + size - 1 - b];
}

/* ------------------------------------------------------------ building */

struct WireWriter {
    msgpack_sbuffer body;
    msgpack_packer pk;
    int n_fields;
    int failed;
};

WireWriter *wire_writer_new(const char *op) {
    WireWriter *w = calloc(1, sizeof *w);
    if (!w) {
        align_errorf("out of memory");
        return NULL;
    }
    msgpack_sbuffer_init(&w->body);
    msgpack_packer_init(&w->pk, &w->body, msgpack_sbuffer_write);
    wire_put_str(w, "op", op);
    wire_put_int(w, "v", WIRE_VERSION);
    return w;
}

static int put_key(WireWriter *w, const char *key) {
    if (w->n_fields >= WIRE_MAX_FIELDS) {
        w->failed = 1;
        return align_errorf("message has more than %d fields", WIRE_MAX_FIELDS);
    }
    w->n_fields++;
    size_t n = strlen(key);
    return msgpack_pack_str(&w->pk, n) || msgpack_pack_str_body(&w->pk, key, n) ? (w->failed = 1, -1) : 0;
}

int wire_put_strn(WireWriter *w, const char *key, const char *s, size_t len) {
    if (put_key(w, key)) return -1;
    return msgpack_pack_str(&w->pk, len) || msgpack_pack_str_body(&w->pk, s, len) ? (w->failed = 1, -1) : 0;
}
int wire_put_str(WireWriter *w, const char *key, const char *s) { return wire_put_strn(w, key, s, strlen(s)); }
int wire_put_int(WireWriter *w, const char *key, int64_t v) {
    return put_key(w, key) || msgpack_pack_int64(&w->pk, v) ? (w->failed = 1, -1) : 0;
}
int wire_put_uint(WireWriter *w, const char *key, uint64_t v) {
    return put_key(w, key) || msgpack_pack_uint64(&w->pk, v) ? (w->failed = 1, -1) : 0;
}
int wire_put_float(WireWriter *w, const char *key, double v) {
    return put_key(w, key) || msgpack_pack_double(&w->pk, v) ? (w->failed = 1, -1) : 0;
}
int wire_put_bool(WireWriter *w, const char *key, int v) {
    return put_key(w, key) || (v ? msgpack_pack_true(&w->pk) : msgpack_pack_false(&w->pk)) ? (w->failed = 1, -1) : 0;
}
int wire_put_nil(WireWriter *w, const char *key) {
    return put_key(w, key) || msgpack_pack_nil(&w->pk) ? (w->failed = 1, -1) : 0;
}

int wire_put_array(WireWriter *w, const char *key, WireDtype t, const void *data, int ndim, const int64_t *shape) {
    if (ndim < 1 || ndim > WIRE_MAX_DIMS || wire_dtype_size(t) == 0) {
        w->failed = 1;
        return align_errorf("field %s: bad array (ndim %d)", key, ndim);
    }
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    size_t bytes = n * wire_dtype_size(t);
    if (bytes > 0xffffffffu) {
        w->failed = 1;
        return align_errorf("field %s: array of %zu bytes is too large for one message", key, bytes);
    }
    if (put_key(w, key)) return -1;
    msgpack_packer *pk = &w->pk;
    int rc = msgpack_pack_map(pk, 3);
    rc |= msgpack_pack_str(pk, 5) || msgpack_pack_str_body(pk, "dtype", 5);
    const char *dn = wire_dtype_name(t);
    rc |= msgpack_pack_str(pk, strlen(dn)) || msgpack_pack_str_body(pk, dn, strlen(dn));
    rc |= msgpack_pack_str(pk, 5) || msgpack_pack_str_body(pk, "shape", 5);
    rc |= msgpack_pack_array(pk, ndim);
    for (int i = 0; i < ndim; i++) rc |= msgpack_pack_uint64(pk, (uint64_t)shape[i]);
    rc |= msgpack_pack_str(pk, 4) || msgpack_pack_str_body(pk, "data", 4);
    rc |= msgpack_pack_bin(pk, bytes);
    if (host_is_little() || wire_dtype_size(t) == 1) {
        if (bytes) rc |= msgpack_pack_bin_body(pk, data, bytes);
    } else {
        uint8_t *tmp = malloc(bytes + 1);
        if (!tmp) rc = 1;
        else {
            swap_copy(tmp, data, n, wire_dtype_size(t));
            rc |= msgpack_pack_bin_body(pk, tmp, bytes);
            free(tmp);
        }
    }
    if (rc) {
        w->failed = 1;
        return align_errorf("field %s: out of memory", key);
    }
    return 0;
}

int wire_put_vec(WireWriter *w, const char *key, WireDtype t, const void *data, size_t n) {
    int64_t shape[1] = {(int64_t)n};
    return wire_put_array(w, key, t, data, 1, shape);
}

int wire_put_str_array(WireWriter *w, const char *key, const char *const *s, const size_t *lens, size_t n) {
    if (put_key(w, key)) return -1;
    int rc = msgpack_pack_array(&w->pk, n);
    for (size_t i = 0; i < n && !rc; i++) {
        size_t len = lens ? lens[i] : strlen(s[i]);
        rc = msgpack_pack_str(&w->pk, len) || msgpack_pack_str_body(&w->pk, s[i], len);
    }
    if (rc) w->failed = 1;
    return rc ? align_errorf("field %s: out of memory", key) : 0;
}

void wire_writer_free(WireWriter *w) {
    if (!w) return;
    msgpack_sbuffer_destroy(&w->body);
    free(w);
}

int wire_finish(WireWriter *w, void **data, size_t *len) {
    *data = NULL;
    *len = 0;
    if (!w) return -1;
    if (w->failed) {
        wire_writer_free(w);
        return -1;
    }
    /* the map header needs the field count, known only now */
    msgpack_sbuffer head;
    msgpack_sbuffer_init(&head);
    msgpack_packer hp;
    msgpack_packer_init(&hp, &head, msgpack_sbuffer_write);
    int rc = msgpack_pack_map(&hp, w->n_fields);
    uint8_t *out = rc ? NULL : malloc(head.size + w->body.size);
    if (out) {
        memcpy(out, head.data, head.size);
        memcpy(out + head.size, w->body.data, w->body.size);
        *data = out;
        *len = head.size + w->body.size;
    }
    msgpack_sbuffer_destroy(&head);
    wire_writer_free(w);
    return out ? 0 : align_errorf("out of memory encoding a message");
}

int wire_error_message(const char *code, const char *message, int has_id, uint64_t id, void **data, size_t *len) {
    WireWriter *w = wire_writer_new("error");
    if (!w) return -1;
    wire_put_str(w, "code", code);
    wire_put_str(w, "message", message);
    if (has_id) wire_put_uint(w, "id", id);
    return wire_finish(w, data, len);
}

/* ------------------------------------------------------------ pre-scan */

static int need(size_t pos, size_t n, size_t len) { return n <= len && pos <= len - n; }

static uint64_t be_read(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Walk one object at *pos; refuse counts the remaining bytes cannot hold. */
static int scan(const uint8_t *p, size_t len, size_t *pos, int depth, int max_depth) {
    if (!need(*pos, 1, len)) return align_errorf("message truncated at byte %zu", *pos);
    uint8_t b = p[(*pos)++];
    uint64_t count = 0, bytes = 0;
    int kind = 0; /* 0 scalar with `bytes` payload, 1 array, 2 map */
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;
    if (b >= 0x80 && b <= 0x8f) kind = 2, count = b & 0x0f;
    else if (b >= 0x90 && b <= 0x9f) kind = 1, count = b & 0x0f;
    else if (b >= 0xa0 && b <= 0xbf) bytes = b & 0x1f;
    else {
        int hdr = 0;
        switch (b) {
        case 0xc4: case 0xd9: hdr = 1; break;             /* bin8, str8 */
        case 0xc5: case 0xda: hdr = 2; break;             /* bin16, str16 */
        case 0xc6: case 0xdb: hdr = 4; break;             /* bin32, str32 */
        case 0xca: bytes = 4; break;
        case 0xcb: bytes = 8; break;
        case 0xcc: case 0xd0: bytes = 1; break;
        case 0xcd: case 0xd1: bytes = 2; break;
        case 0xce: case 0xd2: bytes = 4; break;
        case 0xcf: case 0xd3: bytes = 8; break;
        case 0xdc: kind = 1, hdr = 2; break;
        case 0xdd: kind = 1, hdr = 4; break;
        case 0xde: kind = 2, hdr = 2; break;
        case 0xdf: kind = 2, hdr = 4; break;
        default:
            return align_errorf("unsupported msgpack type 0x%02x at byte %zu (ext types are not used)", b, *pos - 1);
        }
        if (hdr) {
            if (!need(*pos, hdr, len)) return align_errorf("message truncated at byte %zu", *pos);
            uint64_t v = be_read(p + *pos, hdr);
            *pos += hdr;
            if (kind) count = v;
            else bytes = v;
        }
    }
    if (kind == 0) {
        if (!need(*pos, bytes, len))
            return align_errorf("a string or bin claims %llu bytes but only %zu remain", (unsigned long long)bytes, len - *pos);
        *pos += bytes;
        return 0;
    }
    if (depth >= max_depth) return align_errorf("message nested deeper than %d levels", max_depth);
    uint64_t items = kind == 2 ? 2 * count : count;
    if (items > len - *pos)
        return align_errorf("a %s claims %llu entries but only %zu bytes remain", kind == 2 ? "map" : "array",
                            (unsigned long long)count, len - *pos);
    for (uint64_t i = 0; i < items; i++)
        if (scan(p, len, pos, depth + 1, max_depth)) return -1;
    return 0;
}

/* ------------------------------------------------------------ parsing */

struct WireMsg {
    msgpack_unpacked up;
    uint8_t *copy;   /* the message's bytes, as received */
    size_t copy_len;
    int n;
    const char *key[WIRE_MAX_FIELDS];
    uint32_t key_len[WIRE_MAX_FIELDS];
    const msgpack_object *val[WIRE_MAX_FIELDS];
    const char *op;  /* NUL-terminated copy */
    int64_t v;
};

void wire_msg_free(WireMsg *m) {
    if (!m) return;
    msgpack_unpacked_destroy(&m->up);
    free(m->copy);
    free((char *)m->op);
    free(m);
}

static const msgpack_object *find(const WireMsg *m, const char *key) {
    size_t n = strlen(key);
    for (int i = 0; i < m->n; i++)
        if (m->key_len[i] == n && !memcmp(m->key[i], key, n)) return m->val[i];
    return NULL;
}

WireMsg *wire_parse(const void *data, size_t len, const WireLimits *lim_in) {
    WireLimits lim;
    limits_resolve(lim_in, &lim);
    if (len > lim.max_bytes) {
        align_errorf("message of %zu bytes is over the limit of %zu", len, lim.max_bytes);
        return NULL;
    }
    if (len == 0) {
        align_errorf("empty message");
        return NULL;
    }
    size_t pos = 0;
    if (scan(data, len, &pos, 0, lim.max_depth)) return NULL;
    if (pos != len) {
        align_errorf("%zu bytes of garbage after the message", len - pos);
        return NULL;
    }
    WireMsg *m = calloc(1, sizeof *m);
    if (!m || !(m->copy = malloc(len))) {
        free(m);
        align_errorf("out of memory");
        return NULL;
    }
    memcpy(m->copy, data, len);
    m->copy_len = len;
    msgpack_unpacked_init(&m->up);
    size_t off = 0;
    if (msgpack_unpack_next(&m->up, (const char *)m->copy, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        align_errorf("malformed msgpack");
        goto fail;
    }
    const msgpack_object *root = &m->up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        align_errorf("a message must be a msgpack map");
        goto fail;
    }
    if (root->via.map.size > WIRE_MAX_FIELDS) {
        align_errorf("message has %u fields (at most %d)", root->via.map.size, WIRE_MAX_FIELDS);
        goto fail;
    }
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) {
            align_errorf("message field %u: keys must be strings", i);
            goto fail;
        }
        const char *k = kv->key.via.str.ptr;
        uint32_t kl = kv->key.via.str.size;
        for (int j = 0; j < m->n; j++)
            if (m->key_len[j] == kl && (kl == 0 || !memcmp(m->key[j], k, kl))) { /* an empty key has no pointer */
                align_errorf("field \"%.*s\" appears twice", (int)(kl > 40 ? 40 : kl), k);
                goto fail;
            }
        m->key[m->n] = k;
        m->key_len[m->n] = kl;
        m->val[m->n] = &kv->val;
        m->n++;
    }
    const msgpack_object *op = find(m, "op"), *v = find(m, "v");
    if (!op || op->type != MSGPACK_OBJECT_STR || op->via.str.size == 0 || op->via.str.size > 64) {
        align_errorf("a message needs \"op\", a string of 1 to 64 bytes");
        goto fail;
    }
    if (memchr(op->via.str.ptr, 0, op->via.str.size)) {
        align_errorf("\"op\" contains a NUL byte");
        goto fail;
    }
    if (!v || (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)) {
        align_errorf("a message needs \"v\", the protocol version (a positive integer)");
        goto fail;
    }
    m->v = v->via.u64 > INT64_MAX ? INT64_MAX : (int64_t)v->via.u64;
    char *opc = malloc(op->via.str.size + 1);
    if (!opc) {
        align_errorf("out of memory");
        goto fail;
    }
    memcpy(opc, op->via.str.ptr, op->via.str.size);
    opc[op->via.str.size] = 0;
    m->op = opc;
    return m;
fail:
    wire_msg_free(m);
    return NULL;
}

const void *wire_msg_bytes(const WireMsg *m, size_t *len) {
    *len = m->copy_len;
    return m->copy;
}

const char *wire_op(const WireMsg *m) { return m->op; }
int64_t wire_version(const WireMsg *m) { return m->v; }
int wire_has(const WireMsg *m, const char *key) {
    const msgpack_object *o = find(m, key);
    return o && o->type != MSGPACK_OBJECT_NIL;
}

static const msgpack_object *get(const WireMsg *m, const char *key, msgpack_object_type t, const char *what) {
    const msgpack_object *o = find(m, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        align_errorf("field \"%s\" is missing", key);
        return NULL;
    }
    if (o->type != t) {
        align_errorf("field \"%s\" must be %s", key, what);
        return NULL;
    }
    return o;
}

int wire_get_str(const WireMsg *m, const char *key, const char **s, size_t *len) {
    const msgpack_object *o = get(m, key, MSGPACK_OBJECT_STR, "a string");
    if (!o) return -1;
    *s = o->via.str.ptr;
    if (len) *len = o->via.str.size;
    return 0;
}

int wire_get_int(const WireMsg *m, const char *key, int64_t *v) {
    const msgpack_object *o = find(m, key);
    if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return 0;
    }
    if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX) return align_errorf("field \"%s\" is out of range", key);
        *v = (int64_t)o->via.u64;
        return 0;
    }
    return align_errorf(o && o->type != MSGPACK_OBJECT_NIL ? "field \"%s\" must be an integer" : "field \"%s\" is missing", key);
}

int wire_get_uint(const WireMsg *m, const char *key, uint64_t *v) {
    const msgpack_object *o = get(m, key, MSGPACK_OBJECT_POSITIVE_INTEGER, "a non-negative integer");
    if (!o) return -1;
    *v = o->via.u64;
    return 0;
}

int wire_get_float(const WireMsg *m, const char *key, double *v) {
    const msgpack_object *o = find(m, key);
    if (o && (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)) *v = o->via.f64;
    else if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) *v = (double)o->via.u64;
    else if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) *v = (double)o->via.i64;
    else return align_errorf(o && o->type != MSGPACK_OBJECT_NIL ? "field \"%s\" must be a number" : "field \"%s\" is missing", key);
    return 0;
}

int wire_get_bool(const WireMsg *m, const char *key, int *v) {
    const msgpack_object *o = get(m, key, MSGPACK_OBJECT_BOOLEAN, "a boolean");
    if (!o) return -1;
    *v = o->via.boolean;
    return 0;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key) {
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n && !memcmp(kv->key.via.str.ptr, key, n))
            return &kv->val;
    }
    return NULL;
}

int wire_get_array(const WireMsg *m, const char *key, int want, const WireLimits *lim_in, WireArray *out) {
    memset(out, 0, sizeof *out);
    WireLimits lim;
    limits_resolve(lim_in, &lim);
    const msgpack_object *o = get(m, key, MSGPACK_OBJECT_MAP, "an array map {dtype, shape, data}");
    if (!o) return -1;
    if (o->via.map.size != 3) return align_errorf("field \"%s\": an array map has exactly dtype, shape and data", key);
    const msgpack_object *dt = map_get(o, "dtype"), *sh = map_get(o, "shape"), *da = map_get(o, "data");
    if (!dt || dt->type != MSGPACK_OBJECT_STR || !sh || sh->type != MSGPACK_OBJECT_ARRAY || !da ||
        da->type != MSGPACK_OBJECT_BIN)
        return align_errorf("field \"%s\": an array needs \"dtype\" (string), \"shape\" (array) and \"data\" (bin)", key);
    WireDtype t = WIRE_U8;
    if (wire_dtype_parse(dt->via.str.ptr, dt->via.str.size, &t)) return align_error_prefix("field \"%s\"", key);
    if (want >= 0 && (int)t != want)
        return align_errorf("field \"%s\": dtype %s where %s is expected", key, wire_dtype_name(t), wire_dtype_name((WireDtype)want));
    uint32_t nd = sh->via.array.size;
    if (nd < 1 || nd > WIRE_MAX_DIMS) return align_errorf("field \"%s\": shape must have 1 to %d dimensions", key, WIRE_MAX_DIMS);
    size_t numel = 1;
    for (uint32_t i = 0; i < nd; i++) {
        const msgpack_object *d = &sh->via.array.ptr[i];
        if (d->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return align_errorf("field \"%s\": shape entries must be non-negative integers", key);
        uint64_t v = d->via.u64;
        if (v > lim.max_elems || (v && numel > lim.max_elems / v))
            return align_errorf("field \"%s\": shape is over the limit of %zu elements", key, lim.max_elems);
        numel *= v;
        out->shape[i] = (int64_t)v;
    }
    size_t es = wire_dtype_size(t);
    if ((uint64_t)da->via.bin.size != (uint64_t)numel * es)
        return align_errorf("field \"%s\": shape says %zu %s elements (%zu bytes) but data has %u bytes", key, numel,
                            wire_dtype_name(t), numel * es, da->via.bin.size);
    /* copy out: the bin sits at any alignment inside the receive buffer */
    void *buf = malloc(numel * es + 8);
    if (!buf) return align_errorf("field \"%s\": out of memory", key);
    swap_copy(buf, da->via.bin.ptr, numel, es);
    out->dtype = t;
    out->ndim = (int)nd;
    out->numel = numel;
    out->data = buf;
    return 0;
}

int wire_get_index_array(const WireMsg *m, const char *key, const WireLimits *lim, int64_t **out, size_t *n) {
    WireArray a;
    *out = NULL;
    *n = 0;
    if (wire_get_array(m, key, -1, lim, &a)) return -1;
    if (a.ndim != 1 || (a.dtype != WIRE_I32 && a.dtype != WIRE_I64)) {
        free(a.data);
        return align_errorf("field \"%s\" must be a 1-D i32 or i64 array", key);
    }
    int64_t *v = malloc((a.numel + 1) * sizeof(int64_t));
    if (!v) {
        free(a.data);
        return align_errorf("out of memory");
    }
    for (size_t i = 0; i < a.numel; i++) v[i] = a.dtype == WIRE_I32 ? ((int32_t *)a.data)[i] : ((int64_t *)a.data)[i];
    free(a.data);
    *out = v;
    *n = a.numel;
    return 0;
}

int wire_get_str_array(const WireMsg *m, const char *key, const WireLimits *lim_in, char ***out, size_t *n) {
    *out = NULL;
    *n = 0;
    WireLimits lim;
    limits_resolve(lim_in, &lim);
    const msgpack_object *o = get(m, key, MSGPACK_OBJECT_ARRAY, "an array of strings");
    if (!o) return -1;
    uint32_t k = o->via.array.size;
    if (k > lim.max_strings) return align_errorf("field \"%s\": %u strings (at most %zu)", key, k, lim.max_strings);
    size_t total = 0;
    for (uint32_t i = 0; i < k; i++) {
        const msgpack_object *s = &o->via.array.ptr[i];
        if (s->type != MSGPACK_OBJECT_STR) return align_errorf("field \"%s\": element %u is not a string", key, i);
        if (memchr(s->via.str.ptr, 0, s->via.str.size)) return align_errorf("field \"%s\": element %u contains a NUL byte", key, i);
        total += s->via.str.size + 1;
    }
    /* one block: k pointers then the strings (bounded by the message size) */
    char **v = malloc((size_t)k * sizeof(char *) + total + 1);
    if (!v) return align_errorf("out of memory");
    char *p = (char *)(v + k);
    for (uint32_t i = 0; i < k; i++) {
        const msgpack_object *s = &o->via.array.ptr[i];
        v[i] = p;
        memcpy(p, s->via.str.ptr, s->via.str.size);
        p[s->via.str.size] = 0;
        p += s->via.str.size + 1;
    }
    *out = v;
    *n = k;
    return 0;
}

int wire_check_offsets(const int64_t *off, size_t n_off, size_t total, const char *key) {
    if (n_off < 1) return align_errorf("field \"%s\": offsets need at least one entry", key);
    if (off[0] != 0) return align_errorf("field \"%s\": offsets must start at 0", key);
    for (size_t i = 1; i < n_off; i++)
        if (off[i] < off[i - 1]) return align_errorf("field \"%s\": offsets decrease at entry %zu", key, i);
    if ((uint64_t)off[n_off - 1] != (uint64_t)total)
        return align_errorf("field \"%s\": last offset %lld does not match the %zu elements sent", key,
                            (long long)off[n_off - 1], total);
    return 0;
}

/* ------------------------------------------------------------ ZeroMQ */

void wire_frames_free(WireFrames *f) {
    for (int i = 0; i < f->n_env; i++) free(f->env[i]);
    free(f->body);
    memset(f, 0, sizeof *f);
}

int wire_recv(void *sock, WireFrames *f, size_t max_body, int flags) {
    memset(f, 0, sizeof *f);
    zmq_msg_t part;
    int more = 1, first = 1;
    while (more) {
        zmq_msg_init(&part);
        /* after the first frame the rest of a multipart message is already here */
        if (zmq_msg_recv(&part, sock, first ? flags : 0) < 0) {
            int e = errno;
            zmq_msg_close(&part);
            if (!first) wire_frames_free(f);
            errno = e;
            return align_errorf("receive: %s", zmq_strerror(e));
        }
        first = 0;
        more = zmq_msg_more(&part);
        size_t n = zmq_msg_size(&part);
        if (more) {
            if (f->n_env < WIRE_MAX_ENVELOPE) {
                f->env[f->n_env] = malloc(n + 1);
                if (f->env[f->n_env]) {
                    memcpy(f->env[f->n_env], zmq_msg_data(&part), n);
                    f->env_len[f->n_env++] = n;
                } else {
                    f->bad_envelope = 1;
                }
            } else {
                f->bad_envelope = 1;
            }
        } else {
            f->body_len = n;
            if (n > max_body) {
                f->oversized = 1;
            } else {
                f->body = malloc(n + 1);
                if (f->body) memcpy(f->body, zmq_msg_data(&part), n);
                else f->oversized = 1;
            }
        }
        zmq_msg_close(&part);
    }
    return 0;
}

int wire_send(void *sock, const WireFrames *env, const void *body, size_t len, int flags) {
    for (int i = 0; env && i < env->n_env; i++)
        if (zmq_send(sock, env->env[i], env->env_len[i], flags | ZMQ_SNDMORE) < 0)
            return align_errorf("send: %s", zmq_strerror(errno));
    if (zmq_send(sock, body, len, flags) < 0) return align_errorf("send: %s", zmq_strerror(errno));
    return 0;
}

static void attach_release(const WireAttach *a) {
    if (a->free_fn) a->free_fn((void *)a->data, a->hint);
}

int wire_send_attached(void *sock, const WireFrames *env, const void *body, size_t len, const WireAttach *att,
                       int n_att, int flags) {
    int i = 0, rc = 0;
    if (n_att < 0 || n_att > WIRE_MAX_ATTACH) {
        rc = align_errorf("send: %d attachments (at most %d)", n_att, WIRE_MAX_ATTACH);
        goto release;
    }
    for (int e = 0; env && e < env->n_env; e++)
        if (zmq_send(sock, env->env[e], env->env_len[e], flags | ZMQ_SNDMORE) < 0) {
            rc = align_errorf("send: %s", zmq_strerror(errno));
            goto release;
        }
    for (; i < n_att; i++) {
        zmq_msg_t msg;
        if (att[i].free_fn ? zmq_msg_init_data(&msg, (void *)att[i].data, att[i].len, att[i].free_fn, att[i].hint)
                           : zmq_msg_init_size(&msg, att[i].len)) {
            rc = align_errorf("send: cannot make a frame of %zu bytes", att[i].len);
            goto release;
        }
        if (!att[i].free_fn && att[i].len) memcpy(zmq_msg_data(&msg), att[i].data, att[i].len);
        if (zmq_msg_send(&msg, sock, flags | ZMQ_SNDMORE) < 0) {
            rc = align_errorf("send: %s", zmq_strerror(errno));
            zmq_msg_close(&msg); /* calls free_fn: attachment i is released */
            i++;
            goto release;
        }
    }
    if (zmq_send(sock, body, len, flags) < 0) return align_errorf("send: %s", zmq_strerror(errno));
    return 0;
release:
    for (; i < n_att; i++) attach_release(&att[i]);
    return rc;
}

int wire_get_attachments(const WireMsg *m, int n_frames, int *k) {
    *k = 0;
    if (!wire_has(m, "attachments")) return 0;
    uint64_t v;
    if (wire_get_uint(m, "attachments", &v)) return -1;
    if (v > WIRE_MAX_ATTACH) return align_errorf("field \"attachments\": %llu (at most %d)", (unsigned long long)v, WIRE_MAX_ATTACH);
    if (v > 0 && (int)v > n_frames)
        return align_errorf("field \"attachments\" says %llu frames but the message has %d", (unsigned long long)v,
                            n_frames < 0 ? 0 : n_frames);
    *k = (int)v;
    return 0;
}

int wire_read_z85_key(const char *path, char key[41]) {
    FILE *f = fopen(path, "r");
    if (!f) return align_errorf("%s: cannot open the key file", path);
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '#') continue;
        size_t n = strcspn(s, " \t\r\n");
        if (n == 40) {
            memcpy(key, s, 40);
            key[40] = 0;
            uint8_t raw[32];
            found = zmq_z85_decode(raw, key) != NULL;
        }
    }
    fclose(f);
    return found ? 0 : align_errorf("%s: no 40-character Z85 key in the file", path);
}
