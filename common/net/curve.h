/* curve: CurveZMQ on the project's sockets — encryption and server
 * authentication (RFC 26) and an allow-list of client keys checked by a ZAP
 * handler (RFC 27). Shared by reward_server, the PPO workers (ppo_policy,
 * ppo_ref, rollout_worker) and their clients (rm_client, ppo_run, the
 * policy's weight sync to rollout workers).
 *
 * Keys are text files as `reward_server --curve-keygen PREFIX` writes them:
 * PREFIX.secret (mode 0600; the Z85 secret key on a line of its own) and
 * PREFIX.public (the Z85 public key). A server takes its secret key file
 * and, optionally, a file of allowed client public keys, one per line. A
 * client takes the server's public key file and its own secret key file. */
#ifndef ALIGN_CURVE_H
#define ALIGN_CURVE_H

/* Write PREFIX.secret and PREFIX.public and print the public key. */
int curve_keygen(const char *prefix);

/* Make sock (a ROUTER, before bind) a CURVE server with the secret key in
 * secret_file; pub (41 bytes, may be NULL) receives its public key. The
 * ZAP domain is set so a running allow-list (curve_zap_start) checks it. */
int curve_server_apply(void *sock, const char *secret_file, char *pub);

/* Make sock (before connect) a CURVE client of the server whose public key
 * is in server_public_file, as the key pair in secret_file. */
int curve_client_apply(void *sock, const char *server_public_file, const char *secret_file);
/* The same with the server's public key as Z85 text (40 characters). */
int curve_client_apply_key(void *sock, const char *server_public, const char *secret_file);

/* The allow-list: a thread answering the context's ZAP requests, admitting
 * the CURVE clients whose public key is listed in allow_file. It ends when
 * the context is terminated; curve_zap_join then waits for it. */
typedef struct CurveZap CurveZap;
CurveZap *curve_zap_start(void *ctx, const char *allow_file);
void curve_zap_join(CurveZap *z);

/* ipc://, inproc:// and loopback tcp:// endpoints: reachable from this
 * machine only. */
int curve_endpoint_is_loopback(const char *ep);

#endif
