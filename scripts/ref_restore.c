/*
 * ref_restore: the floor of a per-file restore of a tree, the baseline
 * scripts/bench-output.sh compares `cp -a` with on the reflink image
 * (BENCHMARKS.md, "cache-run --output, reflink restore, another pass").
 *
 * Recreates SRC at DST (absent) the cheapest way a restore that makes one
 * inode per file can: every source is read or opened BEFORE the clock
 * starts (small files' bytes in memory, larger ones as open descriptors,
 * standing in for the store's blobs: same file system, same sizes), then,
 * timed: mkdir of every directory (parents first), then by THREADS threads,
 * a directory at a time, per file openat(O_CREAT|O_EXCL) with its final
 * mode (umask 0), one write of its bytes (below CLONE_FROM) or FICLONE of
 * its source, futimens (the mtime), close; then every directory's mode and
 * mtime, deepest first. No manifest, no hashing, no blob opens or reads, no
 * swap: what is left is what any per-file restore pays.
 *
 * STEPS: 0 = create + close only (empty files), 1 = + the data, 3 = + the
 * mtime (the whole floor; the default); 7 = the same, but each source is
 * opened (and a small one read) inside the timed part, as a restore opens
 * and reads its blobs.
 *
 * Usage: ref_restore SRC DST THREADS CLONE_FROM [STEPS]
 * Prints: ref_restore wall=SECONDS sys=SECONDS files=N dirs=N (the timed
 * part only; sys is the process's system time over it).
 * Regular files and directories only (a node_modules tree's shape).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char *name, *path;
    int src;          /* open source for a clone, or -1 (opened when cloned) */
    char *data;       /* the bytes of a file below CLONE_FROM */
    size_t len;
    mode_t mode;
    struct timespec mtime;
} File;

typedef struct {
    char *rel;
    mode_t mode;
    struct timespec mtime;
    File *files;
    int n, cap;
} Dir;

static Dir *dirs;
static int ndirs, capdirs, open_srcs, steps = 3;
static long clone_from;
static const char *dst;
static int src_fd; /* SRC, for STEPS 7 */
static int next_dir;
static pthread_mutex_t next_lock = PTHREAD_MUTEX_INITIALIZER;

static void die(const char *what, const char *path) {
    fprintf(stderr, "ref_restore: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static char *join(const char *a, const char *b) {
    char *p;
    if (!strcmp(b, ".")) b = "";
    if (!*b) return strdup(a);
    if (asprintf(&p, "%s/%s", a, b) < 0) die("asprintf", b);
    return p;
}

/* Reads the tree under ROOT/REL: directories parents first. */
static void walk(const char *root, const char *rel) {
    char *p = join(root, rel);
    struct stat st;
    if (stat(p, &st)) die("stat", p);
    if (ndirs == capdirs) {
        capdirs = capdirs ? capdirs * 2 : 1024;
        dirs = realloc(dirs, capdirs * sizeof *dirs);
        if (!dirs) die("realloc", p);
    }
    int me = ndirs++;
    dirs[me] = (Dir){strdup(rel), st.st_mode & 07777, st.st_mtim, NULL, 0, 0};
    DIR *d = opendir(p);
    if (!d) die("opendir", p);
    char **subs = NULL;
    int nsubs = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *q = join(p, e->d_name);
        struct stat s;
        if (lstat(q, &s)) die("lstat", q);
        if (S_ISDIR(s.st_mode)) {
            subs = realloc(subs, (nsubs + 1) * sizeof *subs);
            subs[nsubs++] = join(rel, e->d_name);
            free(q);
            continue;
        }
        if (!S_ISREG(s.st_mode)) {
            errno = EINVAL;
            die("not a regular file or directory:", q);
        }
        Dir *dd = &dirs[me];
        if (dd->n == dd->cap) {
            dd->cap = dd->cap ? dd->cap * 2 : 16;
            dd->files = realloc(dd->files, dd->cap * sizeof *dd->files);
            if (!dd->files) die("realloc", q);
        }
        File *f = &dd->files[dd->n++];
        *f = (File){strdup(e->d_name), q, -1, NULL, (size_t)s.st_size, s.st_mode & 07777, s.st_mtim};
        if (steps & 4) {
            free(q);
            f->path = join(rel, e->d_name);
            continue;
        }
        int fd = open(q, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open", q);
        if (clone_from < 0 || (long)f->len < clone_from) {
            f->data = malloc(f->len + 1);
            if (!f->data || read(fd, f->data, f->len) != (ssize_t)f->len) die("read", q);
            close(fd);
        } else if (open_srcs < 15000) {
            f->src = fd;
            open_srcs++;
        } else {
            close(fd);
        }
    }
    closedir(d);
    free(p);
    for (int i = 0; i < nsubs; i++) walk(root, subs[i]);
    free(subs);
}

static void *work(void *unused) {
    (void)unused;
    char *buf = (steps & 4) ? malloc(1 << 20) : NULL;
    for (;;) {
        pthread_mutex_lock(&next_lock);
        int i = next_dir++;
        pthread_mutex_unlock(&next_lock);
        if (i >= ndirs) return NULL;
        Dir *d = &dirs[i];
        if (!d->n) continue;
        char *p = join(dst, d->rel);
        int dfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) die("open", p);
        for (int j = 0; j < d->n; j++) {
            File *f = &d->files[j];
            if (steps & 4) {
                /* The source, opened (and a small one read) now. */
                f->src = openat(src_fd, f->path, O_RDONLY | O_NOATIME | O_CLOEXEC);
                if (f->src < 0) die("open", f->path);
                if (clone_from < 0 || (long)f->len < clone_from) {
                    if (!buf || read(f->src, buf, f->len + 1) != (ssize_t)f->len) die("read", f->path);
                    f->data = buf;
                }
            }
            int fd = openat(dfd, f->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, f->mode);
            if (fd < 0) die("create", f->name);
            if (!(steps & 1)) {
            } else if (f->data) {
                if (f->len && write(fd, f->data, f->len) != (ssize_t)f->len) die("write", f->name);
            } else {
                int s = f->src >= 0 ? f->src : open(f->path, O_RDONLY | O_CLOEXEC);
                if (s < 0) die("open", f->path);
                if (ioctl(fd, FICLONE, s)) die("FICLONE", f->name);
                if (f->src < 0) close(s);
            }
            struct timespec ts[2] = {{0, UTIME_OMIT}, f->mtime};
            if ((steps & 2) && futimens(fd, ts)) die("futimens", f->name);
            close(fd);
            if (steps & 4) {
                close(f->src);
                f->src = -1;
                f->data = NULL;
            }
        }
        close(dfd);
        free(p);
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double sys_time(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: ref_restore SRC DST THREADS CLONE_FROM [STEPS]\n");
        return 2;
    }
    int threads = atoi(argv[3]);
    if (threads < 1 || threads > 64) threads = 1;
    clone_from = atol(argv[4]);
    if (argc > 5) steps = atoi(argv[5]);
    dst = argv[2];
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    walk(argv[1], ".");
    src_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (src_fd < 0) die("open", argv[1]);

    double s0 = sys_time(), t0 = now();
    umask(0);
    for (int i = 0; i < ndirs; i++) {
        char *p = join(dst, dirs[i].rel);
        if (mkdir(p, 0700)) die("mkdir", p);
        free(p);
    }
    pthread_t t[64];
    for (int i = 1; i < threads; i++) pthread_create(&t[i], NULL, work, NULL);
    work(NULL);
    for (int i = 1; i < threads; i++) pthread_join(t[i], NULL);
    for (int i = ndirs - 1; i >= 0; i--) {
        char *p = join(dst, dirs[i].rel);
        struct timespec ts[2] = {{0, UTIME_OMIT}, dirs[i].mtime};
        if (chmod(p, dirs[i].mode) || utimensat(AT_FDCWD, p, ts, 0)) die("chmod/utimensat", p);
        free(p);
    }
    double t1 = now(), s1 = sys_time();

    int nfiles = 0;
    for (int i = 0; i < ndirs; i++) nfiles += dirs[i].n;
    printf("ref_restore wall=%.3f sys=%.3f files=%d dirs=%d threads=%d clone_from=%ld steps=%d\n",
           t1 - t0, s1 - s0, nfiles, ndirs, threads, clone_from, steps);
    return 0;
}
