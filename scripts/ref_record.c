/* ref_record.c: what a lock pair's holder record costs the file system, per
 * pair, in a loop on one file (BENCHMARKS.md, "Seventh pass on the lock
 * pair"): flock, a 160-byte record written at offset 0, then the release:
 *   mode 0: re-assert the lock and ftruncate to 0 (ffkit before 2026-12-06)
 *   mode 1: a pwrite over the record (the free line; no size change)
 *   mode 2: nothing (the record left as it is)
 * then unlock.  Usage: cc -O2 -o ref_record ref_record.c; ./ref_record MODE [N]
 * in a directory of the file system to measure (it makes ./ref_record.lock). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODE [N]\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]);
    int n = argc > 2 ? atoi(argv[2]) : 200000;
    char rec[160];
    memset(rec, 'x', sizeof rec);
    rec[0] = '{';
    rec[sizeof rec - 1] = '\n';
    static const char free_line[] = "{\"kind\":\"free\"}";
    int fd = open("ref_record.lock", O_RDWR | O_CREAT, 0600);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    double a = now_us();
    for (int i = 0; i < n; i++) {
        if (flock(fd, LOCK_EX | LOCK_NB) || pwrite(fd, rec, sizeof rec, 0) != sizeof rec)
            return 1;
        if (mode == 0) {
            if (flock(fd, LOCK_EX | LOCK_NB) || ftruncate(fd, 0))
                return 1;
        } else if (mode == 1) {
            if (pwrite(fd, free_line, sizeof free_line - 1, 0) < 0)
                return 1;
        }
        if (flock(fd, LOCK_UN))
            return 1;
    }
    printf("mode %d: %.3f us per pair\n", mode, (now_us() - a) / n);
    unlink("ref_record.lock");
    return 0;
}
