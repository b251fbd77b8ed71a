/*
 * ref_batch: the raw file work of a cache batch and nothing else; the
 * baseline `ffkit cache-batch` is compared with in scripts/bench.sh.
 *
 * Reads `key:value` lines from stdin and, per entry, does what an atomic
 * entry write needs at minimum: create a temp value file (O_EXCL, 0600),
 * write the value, close; create a temp sidecar, write a small JSON record,
 * close; rename the value into place, rename the sidecar into place.
 * No locking, no index, no journal, no key validation.
 *
 * Usage: ref_batch DIR [INPUT]   (INPUT defaults to stdin)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
    fprintf(stderr, "ref_batch: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void write_file(int dfd, const char *name, const char *buf, size_t len) {
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) die("open", name);
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) die("write", name);
        buf += n;
        len -= (size_t)n;
    }
    if (close(fd) != 0) die("close", name);
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: ref_batch DIR [INPUT]\n");
        return 2;
    }
    FILE *in = stdin;
    if (argc == 3 && (in = fopen(argv[2], "r")) == NULL) die("open", argv[2]);
    if (mkdir(argv[1], 0700) != 0 && errno != EEXIST) die("mkdir", argv[1]);
    int dfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) die("open", argv[1]);
    long now = (long)time(NULL);
    pid_t pid = getpid();
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned long seq = 0;
    char vtmp[64], mtmp[64], meta_name[512], meta[1024];
    while ((len = getline(&line, &cap, in)) > 0) {
        if (line[len - 1] == '\n') line[--len] = '\0';
        if (len == 0) continue;
        char *colon = memchr(line, ':', (size_t)len);
        if (colon == NULL) continue;
        *colon = '\0';
        const char *key = line;
        const char *value = colon + 1;
        size_t vlen = (size_t)(line + len - value);
        snprintf(vtmp, sizeof vtmp, ".tmp-%d-%lu", (int)pid, seq++);
        snprintf(mtmp, sizeof mtmp, ".tmp-%d-%lu", (int)pid, seq++);
        snprintf(meta_name, sizeof meta_name, "%s.meta", key);
        int mlen = snprintf(meta, sizeof meta,
                            "{\"key\":\"%s\",\"created_at\":%ld,\"expires_at\":%ld,"
                            "\"ttl\":300,\"size\":%zu}\n",
                            key, now, now + 300, vlen);
        write_file(dfd, vtmp, value, vlen);
        write_file(dfd, mtmp, meta, (size_t)mlen);
        if (renameat(dfd, vtmp, dfd, key) != 0) die("rename", key);
        if (renameat(dfd, mtmp, dfd, meta_name) != 0) die("rename", meta_name);
    }
    free(line);
    return 0;
}
