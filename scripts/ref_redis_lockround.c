/* The honest minimum of a lock round, in C (issue 24): one process start,
 * one loopback connect, an acquire (SET NX PX, one round trip),
 * posix_spawnp of the command, waitpid, a release (DEL, one round trip).
 * Against the floor (ref_redis_roundtrip.c) it says what a lock round
 * cannot go below; against ffkit, what ffkit adds. Used by
 * scripts/bench-redis.sh and scripts/bench-redis-round.sh; never a
 * dependency of ffkit.
 *   cc -O2 -o ref_redis_lockround scripts/ref_redis_lockround.c
 *   ref_redis_lockround PORT CMD [ARGS...]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
static int rt(int s, const char *req) {
    char buf[512];
    ssize_t n = (ssize_t)strlen(req);
    if (write(s, req, n) != n) return 1;
    ssize_t r = read(s, buf, sizeof buf);
    return r <= 0 || buf[0] == '-';
}
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
    if (rt(s, "*6\r\n$3\r\nSET\r\n$2\r\nlx\r\n$1\r\nv\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n30000\r\n")) return 1;
    pid_t pid;
    if (posix_spawnp(&pid, argv[2], NULL, NULL, argv + 2, environ) != 0) return 127;
    int st;
    if (waitpid(pid, &st, 0) != pid) return 1;
    if (rt(s, "*2\r\n$3\r\nDEL\r\n$2\r\nlx\r\n")) return 1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
