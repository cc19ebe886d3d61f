/* reward_http: the client side of OpenRLHF's remote reward protocol, so a
 * reward can be written in any language and served over HTTP.
 *
 *   POST URL  {"query": [prompt + completion, ...], "prompts": [...],
 *              "labels": [label or null, ...]}
 *   200       {"rewards": [r, ...], "scores": [s, ...]?,
 *              "extra_logs": {"name": [v, ...], ...}?}
 *
 * One request per batch, plain HTTP/1.1 over a POSIX socket (no TLS: the
 * function runs next to the trainer; put a proxy in front for anything
 * else). Every call has a deadline (connect, send and the whole reply); a
 * failed call (refused, timed out, a non-200 status, a reply that is not
 * that JSON, the wrong number of rewards, a non-finite reward) is tried
 * again after 0.25 s, 0.5 s, 1 s ... up to `retries` more times, then the
 * error names the URL, the tries and the last reason. */
#ifndef ALIGN_REWARD_HTTP_H
#define ALIGN_REWARD_HTTP_H

typedef struct {
    char host[256];
    char port[8];
    char path[512];
} RewardUrl;

/* "http://HOST[:PORT][/PATH]" (port 80, path "/" by default). -1 with a
 * sentence otherwise (https is refused by name). */
int reward_url_parse(const char *url, RewardUrl *out);

typedef struct {
    double timeout_s; /* per try */
    int retries;      /* extra tries after the first */
} RewardHttpOpts;

/* The reply of one batch: rewards[n]; scores[n] (NULL when the reply had
 * none); the extra_logs' keys and their means (n_logs of them). */
typedef struct {
    float *rewards, *scores;
    int n_logs;
    char **log_keys;
    double *log_means;
} RewardHttpReply;

void reward_http_reply_free(RewardHttpReply *r);

/* labels[i] may be NULL (sent as null). */
int reward_http_call(const char *url, const RewardHttpOpts *o, const char *const *query, const char *const *prompts,
                     const char *const *labels, int n, RewardHttpReply *out);

#endif
