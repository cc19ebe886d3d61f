/* http_gate: the listening side of reward_server's HTTP endpoint, in front
 * of libmicrohttpd.
 *
 * libmicrohttpd 0.9.75 closes a connection whose request line is not HTTP
 * (no space in it: "garbage") without a word, and it shuts the socket
 * before any callback could answer. The gate accepts each connection
 * itself and looks at its first line (MSG_PEEK: nothing is consumed)
 * before it hands the socket over (MHD_add_connection, through the
 * accept callback): a line with no space gets 400 and a JSON error; a
 * request line that has not ended within the idle timeout gets 408 (a
 * connection that sent nothing is closed silently, as nginx does).
 * Everything else, malformed or not, is libmicrohttpd's to answer.
 *
 * Waiting connections are bounded as libmicrohttpd's are (in all and per
 * address): one over a limit is closed at once. SO_RCVLOWAT makes poll wake
 * only when more bytes come, so a slow line costs no spinning. */
#ifndef ALIGN_HTTP_GATE_H
#define ALIGN_HTTP_GATE_H

#include <netinet/in.h>
#include <sys/socket.h>

typedef struct HttpGate HttpGate;

/* Called on the gate's thread with a socket whose first line looks like
 * HTTP; the callee owns fd from then on. */
typedef void (*HttpGateAccept)(void *cls, int fd, const struct sockaddr *addr, socklen_t addr_len);

/* Listen on addr (port 0: any free port) and start the gate's thread.
 * NULL with align_error() set when the address cannot be bound. */
HttpGate *http_gate_start(const struct sockaddr_in *addr, int max_conn, int per_ip, int idle_s, HttpGateAccept accept,
                          void *cls);
/* The port listened on. */
int http_gate_port(const HttpGate *g);
/* Stop listening, close the connections still waiting, join the thread. */
void http_gate_stop(HttpGate *g);

#endif
