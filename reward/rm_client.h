/* rm_client: a client of reward_server (rm_score --connect, PPO).
 *
 * One DEALER socket per client; one request in flight at a time, each
 * with a fresh "id", and a reply whose id does not match (a late answer to
 * a request that timed out) is discarded, so a retry never reads a stale
 * score. Not thread-safe: give each thread its own client (they may share
 * one ZeroMQ context). Errors come back as -1 with the server's sentence
 * ("reward_server: <code>: <message>"). */
#ifndef ALIGN_RM_CLIENT_H
#define ALIGN_RM_CLIENT_H

#include <stdint.h>

#include "dataset.h"
#include "wire.h"

typedef struct RmClient RmClient;

typedef struct {
    const char *server_public; /* Z85 public key of the server (40 chars) or NULL: no CURVE */
    const char *secret_file;   /* this client's secret key file (reward_server --curve-keygen) */
} RmCurveClient;

/* ctx may be NULL (the client makes and owns one). timeout_ms bounds
 * every call, its send included (<= 0: 60000). */
RmClient *rm_client_connect(void *ctx, const char *endpoint, const RmCurveClient *curve, int timeout_ms);
void rm_client_close(RmClient *c);

/* Send a message (the writer is consumed; "id" is added) and wait for the
 * matching reply; an "error" reply is returned as -1 with its message. */
int rm_client_call(RmClient *c, WireWriter *req, WireMsg **reply);

/* Scores of n sequences given as (prompt, completion) token pairs; sent in
 * the split tokens form. */
int rm_client_score_seqs(RmClient *c, const DsSeq *seqs, int n, float *scores);
/* The server's tokenizer.json text and chat template name (malloc'd;
 * *tokenizer_json NULL when the model has none). */
int rm_client_tokenizer(RmClient *c, char **tokenizer_json, char **chat_template);

#endif
