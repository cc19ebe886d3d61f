/* wire: the message layer of every align service (reward, PPO workers).
 *
 * A message is one msgpack map (docs/PROTOCOL.md). Every map carries
 *   "op"  string   what the message is ("score", "scores", "error", ...)
 *   "v"   integer  protocol version (WIRE_VERSION)
 * and op-specific fields. Numeric arrays (token ids, scores, log-probs)
 * never travel as msgpack arrays of numbers: a field holding one is a
 * nested map
 *   {"dtype": "i32"|"i64"|"f32"|"f64"|"u8", "shape": [d0, ...], "data": bin}
 * with the elements little-endian, row-major, no gaps, so a 1M-token batch
 * is one memcpy at each end. A ragged batch (B sequences of different
 * lengths) is one concatenated array plus an "offsets" array of B+1
 * entries (offsets[0] = 0, non-decreasing, offsets[B] = total), the layout
 * the packed model batches use.
 *
 * Parsing is defensive, because a service reads bytes from any peer that
 * can connect:
 *   - the size is checked against limits before anything is decoded;
 *   - a pre-scan walks the raw msgpack and refuses any container whose
 *     element count exceeds the bytes left (each element needs one byte at
 *     least): msgpack-c allocates count * 24 bytes on an array header
 *     alone, so a 5-byte message claiming 2^32 elements would otherwise
 *     ask for 96 GiB. With the scan, decoding costs O(message bytes);
 *   - nesting depth is limited, map keys must be strings, duplicates are
 *     refused, ext types are refused;
 *   - a numeric array's shape must multiply (without overflow) to exactly
 *     the bin's length, and the data is COPIED out: a decoded bin points
 *     into the receive buffer at any alignment.
 * Every failure is one sentence naming the field, via align_errorf.
 *
 * ZeroMQ: services bind a ROUTER; clients are DEALERs (or REQs). A
 * WireFrames holds one received multipart message: the routing envelope
 * (identity frames, plus the empty delimiter a REQ adds) and the body, the
 * last frame. Replies go back with the same envelope. */
#ifndef ALIGN_WIRE_H
#define ALIGN_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION 1
#define WIRE_MAX_DIMS 4
#define WIRE_MAX_ENVELOPE 8 /* routing frames kept from one message */

typedef enum { WIRE_U8 = 0, WIRE_I32, WIRE_I64, WIRE_F32, WIRE_F64 } WireDtype;

const char *wire_dtype_name(WireDtype t);  /* "u8", "i32", ... */
size_t wire_dtype_size(WireDtype t);
int wire_dtype_parse(const char *s, size_t len, WireDtype *out);

typedef struct {
    size_t max_bytes;  /* whole message; 0 = 64 MiB */
    int max_depth;     /* container nesting; 0 = 8 */
    size_t max_elems;  /* elements of one numeric array; 0 = max_bytes */
    size_t max_strings;/* strings in one string array; 0 = 65536 */
} WireLimits;

/* ------------------------------------------------------------ building */

typedef struct WireWriter WireWriter;

/* A message with "op" = op and "v" = WIRE_VERSION already in it. */
WireWriter *wire_writer_new(const char *op);
int wire_put_str(WireWriter *w, const char *key, const char *s);
int wire_put_strn(WireWriter *w, const char *key, const char *s, size_t len);
int wire_put_int(WireWriter *w, const char *key, int64_t v);
int wire_put_uint(WireWriter *w, const char *key, uint64_t v);
int wire_put_float(WireWriter *w, const char *key, double v);
int wire_put_bool(WireWriter *w, const char *key, int v);
int wire_put_nil(WireWriter *w, const char *key);
/* A numeric array field (host order in, little-endian on the wire). */
int wire_put_array(WireWriter *w, const char *key, WireDtype t, const void *data, int ndim,
                   const int64_t *shape);
/* Convenience: a 1-D array of n elements. */
int wire_put_vec(WireWriter *w, const char *key, WireDtype t, const void *data, size_t n);
/* An array of n strings (lens may be NULL: NUL-terminated). */
int wire_put_str_array(WireWriter *w, const char *key, const char *const *s, const size_t *lens, size_t n);
/* The encoded message (malloc'd; caller frees) and its length. The writer
 * is freed either way. */
int wire_finish(WireWriter *w, void **data, size_t *len);
void wire_writer_free(WireWriter *w);

/* An "error" reply: {"op":"error","v","code","message"[,"id"]}; has_id = 0
 * leaves "id" out. malloc'd. */
int wire_error_message(const char *code, const char *message, int has_id, uint64_t id, void **data,
                       size_t *len);

/* ------------------------------------------------------------ parsing */

typedef struct WireMsg WireMsg;

/* Decode and validate one message; NULL with an error. The message keeps
 * no pointer into data (strings are looked up in its own copy). */
WireMsg *wire_parse(const void *data, size_t len, const WireLimits *lim);
void wire_msg_free(WireMsg *m);

/* The bytes m was parsed from (to pass a message on unchanged). */
const void *wire_msg_bytes(const WireMsg *m, size_t *len);
const char *wire_op(const WireMsg *m);
int64_t wire_version(const WireMsg *m);
int wire_has(const WireMsg *m, const char *key); /* present and not nil */

/* Getters: 0 = ok, -1 = missing or wrong type (error names the key).
 * Strings are NOT NUL-terminated in general: use the length; they stay
 * valid until wire_msg_free. */
int wire_get_str(const WireMsg *m, const char *key, const char **s, size_t *len);
int wire_get_int(const WireMsg *m, const char *key, int64_t *v);
int wire_get_uint(const WireMsg *m, const char *key, uint64_t *v);
int wire_get_float(const WireMsg *m, const char *key, double *v); /* ints accepted */
int wire_get_bool(const WireMsg *m, const char *key, int *v);

typedef struct {
    WireDtype dtype;
    int ndim;
    int64_t shape[WIRE_MAX_DIMS];
    size_t numel;
    void *data; /* malloc'd, aligned, host order; free() it */
} WireArray;

/* A numeric array field of dtype want (-1: any). int64 offsets may be sent
 * as i32 or i64: wire_get_index_array converts either into int64. */
int wire_get_array(const WireMsg *m, const char *key, int want, const WireLimits *lim, WireArray *out);
int wire_get_index_array(const WireMsg *m, const char *key, const WireLimits *lim, int64_t **out, size_t *n);
/* An array of strings: *out is one malloc'd block of n pointers to
 * NUL-terminated copies (strings containing NUL are refused); free(*out). */
int wire_get_str_array(const WireMsg *m, const char *key, const WireLimits *lim, char ***out, size_t *n);

/* Ragged batch check: n_off = B + 1 offsets, off[0] = 0, non-decreasing,
 * off[B] = total. */
int wire_check_offsets(const int64_t *off, size_t n_off, size_t total, const char *key);

/* ------------------------------------------------------------ ZeroMQ */

typedef struct {
    int n_env;                     /* routing frames */
    void *env[WIRE_MAX_ENVELOPE];  /* malloc'd copies */
    size_t env_len[WIRE_MAX_ENVELOPE];
    void *body;                    /* malloc'd; NULL when oversized */
    size_t body_len;               /* the real length, also when oversized */
    int oversized;                 /* body longer than the limit: not kept */
    int bad_envelope;              /* more than WIRE_MAX_ENVELOPE frames */
} WireFrames;

/* Receive one multipart message (zmq flags, e.g. ZMQ_DONTWAIT). The body
 * is kept only when it is at most max_body bytes. Returns 0, or -1 with
 * errno from zmq (EAGAIN, EINTR, ...) and an error message. */
int wire_recv(void *sock, WireFrames *f, size_t max_body, int flags);
void wire_frames_free(WireFrames *f);
/* Send env (may be NULL for a DEALER) then body as the last frame. */
int wire_send(void *sock, const WireFrames *env, const void *body, size_t len, int flags);

/* Attachments: bulk data (a model's parameters) as raw ZeroMQ frames, so it
 * is never copied into msgpack and out again. They travel right BEFORE the
 * body, which stays the last frame, and the body's "attachments" field
 * (uint k) says how many: a receiver takes the k frames before the body out
 * of the envelope (docs/PROTOCOL.md, "Attachments"). Each attachment is
 * sent zero-copy when free_fn is set: ZeroMQ reads data in place after this
 * call returns and calls free_fn(data, hint) once it is done with it (sent,
 * or dropped with the socket), so data must stay valid and unchanged until
 * then. Without free_fn the bytes are copied before the call returns. */
typedef struct {
    const void *data;
    size_t len;
    void (*free_fn)(void *data, void *hint);
    void *hint;
} WireAttach;

#define WIRE_MAX_ATTACH 4

/* Send env (may be NULL), the n_att attachments, then body. On failure the
 * attachments not yet handed to ZeroMQ are released (free_fn called), so
 * the caller's count of pending attachments stays right. */
int wire_send_attached(void *sock, const WireFrames *env, const void *body, size_t len, const WireAttach *att,
                       int n_att, int flags);
/* The message's "attachments" count (0 when absent), checked against the
 * n_frames frames that can be attachments (those before the body, less
 * the routing envelope a ROUTER needs to reply): 0, or -1 with an error. */
int wire_get_attachments(const WireMsg *m, int n_frames, int *k);

/* CurveZMQ key files: the first 40-character Z85 key on a line of its own
 * (lines starting with # are comments). */
int wire_read_z85_key(const char *path, char key[41]);

#endif
