/*
 * ref_write_new: the honest floor of one cache write, the baseline
 * scripts/bench-write.sh compares ffkit's writes with (BENCHMARKS.md,
 * "Writes against the honest floor").
 *
 * Per write, what an atomic entry write needs at minimum, with NEW names
 * each time (users write new keys): create a temp value file (O_EXCL,
 * 0600), write the value, close, rename it to a new key; the same for its
 * sidecar (a small JSON record). No lock, no index, no journal.
 *
 * With `over` as the third argument every write rewrites the same key
 * instead (the old, flattering baseline: on ext4 a rename over an existing
 * file forces a flush of the new file's data first, auto_da_alloc, so it is
 * slower than a write of a new key and made ffkit look better than the
 * floor).
 *
 * Usage: ref_write_new DIR N [over]   prints microseconds per write
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
    fprintf(stderr, "ref_write_new: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void put(int dfd, const char *tmp, const char *dest, const char *buf, size_t len) {
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) die("open", tmp);
    if (write(fd, buf, len) != (ssize_t)len) die("write", tmp);
    if (close(fd)) die("close", tmp);
    if (renameat(dfd, tmp, dfd, dest)) die("rename", tmp);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: ref_write_new DIR N [over]\n");
        return 2;
    }
    int n = atoi(argv[2]);
    int over = argc > 3 && strcmp(argv[3], "over") == 0;
    int dfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) die("open", argv[1]);
    char key[64], meta_name[80], vtmp[64], mtmp[64], meta[160];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, over ? "k" : "n%d", i);
        snprintf(meta_name, sizeof meta_name, "%s.meta", key);
        snprintf(vtmp, sizeof vtmp, ".tmp-%d-%d", (int)getpid(), 2 * i);
        snprintf(mtmp, sizeof mtmp, ".tmp-%d-%d", (int)getpid(), 2 * i + 1);
        int len = snprintf(meta, sizeof meta,
                           "{\"key\":\"%s\",\"created_at\":1,\"expires_at\":null,\"ttl\":0,\"size\":1}\n", key);
        put(dfd, vtmp, key, "v", 1);
        put(dfd, mtmp, meta_name, meta, (size_t)len);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n);
    return 0;
}
