/* --dist-init's address and the rank flags (dist_rendezvous_parse): a
 * host name, IPv4 or bracketed IPv6 and a port are taken apart; a missing
 * scheme, host or port, a port out of range, and a rank outside the world
 * are refused with a sentence naming the flag. */
#include <string.h>

#include "dist_rendezvous.h"
#include "test.h"
#include "util.h"

static int refused(const char *url, int rank, int size, const char *says) {
    DistRendezvous r;
    return dist_rendezvous_parse(url, rank, size, &r) == -1 && strstr(align_error(), says) != NULL;
}

int main(void) {
    DistRendezvous r;
    CHECK(dist_rendezvous_parse("tcp://10.0.0.1:29500", 1, 4, &r) == 0, "an IPv4 address: %s", align_error());
    CHECK(!strcmp(r.host, "10.0.0.1") && !strcmp(r.port, "29500") && r.rank == 1 && r.size == 4, "host %s port %s", r.host, r.port);
    CHECK(dist_rendezvous_parse("tcp://node-a.cluster:1", 0, 1, &r) == 0 && !strcmp(r.host, "node-a.cluster") && !strcmp(r.port, "1"),
          "a host name, port 1, a world of one");
    CHECK(dist_rendezvous_parse("tcp://[fd00::2]:65535", 2, 3, &r) == 0 && !strcmp(r.host, "fd00::2") && !strcmp(r.port, "65535"),
          "a bracketed IPv6 address: %s", r.host);

    CHECK(refused("10.0.0.1:29500", 0, 2, "expected tcp://HOST:PORT"), "no scheme: %s", align_error());
    CHECK(refused("env://", 0, 2, "expected tcp://HOST:PORT"), "another scheme");
    CHECK(refused("tcp://10.0.0.1", 0, 2, "no port"), "no port: %s", align_error());
    CHECK(refused("tcp://:29500", 0, 2, "no host"), "no host: %s", align_error());
    CHECK(refused("tcp://h:0", 0, 2, "from 1 to 65535"), "port 0");
    CHECK(refused("tcp://h:65536", 0, 2, "from 1 to 65535"), "port 65536");
    CHECK(refused("tcp://h:29x", 0, 2, "from 1 to 65535"), "a port with letters");
    CHECK(refused("tcp://h:", 0, 2, "from 1 to 65535"), "an empty port");
    CHECK(refused("tcp://[fd00::2]29500", 0, 2, "tcp://[IPV6]:PORT"), "IPv6 without the port's colon");
    CHECK(refused("tcp://h:29500", 0, 0, "needs --world-size"), "no world size: %s", align_error());
    CHECK(refused("tcp://h:29500", 2, 2, "--rank 2: expected 0 to 1"), "rank = world size: %s", align_error());
    CHECK(refused("tcp://h:29500", -1, 2, "--rank -1"), "a negative rank");
    return test_summary();
}
