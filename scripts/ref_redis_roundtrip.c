/* The floor for one Redis call from a shell (issue 24's latency goal): one
 * process start, one loopback TCP connect, one command sent as RESP, one
 * reply read; no parsing beyond "a reply arrived". Used by
 * scripts/bench-redis.sh; never a dependency of ffkit.
 *   cc -O2 -o ref_redis_roundtrip scripts/ref_redis_roundtrip.c
 *   ref_redis_roundtrip PORT 'GET' 'key'          (any command, its words)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT WORD...\n", argv[0]);
        return 2;
    }
    char buf[65536];
    int n = snprintf(buf, sizeof buf, "*%d\r\n", argc - 2);
    for (int i = 2; i < argc && n < (int)sizeof buf; i++)
        n += snprintf(buf + n, sizeof buf - n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
    if (write(s, buf, n) != n) return 1;
    ssize_t r = read(s, buf, sizeof buf);
    if (r <= 0) return 1;
    return buf[0] == '-' ? 1 : 0;
}
