/*
 * Compares two ways to build a sandbox's writable root from a template's
 * skeleton directory: an overlay on top of it (what PID 1 does) and a copy
 * of its entries into the scratch tmpfs. Each iteration forks a child that
 * unshares a mount namespace, mounts a scratch tmpfs, builds the root one
 * way, writes /etc/hostname and /etc/hosts as PID 1 does, looks up seven
 * paths and exits, so the namespace's teardown is timed too. The two ways
 * alternate, so that the machine's drift affects both alike.
 *
 *   cc -O2 -o root_layer benches/c/root_layer.c
 *   ./root_layer SKELETON SCRATCH_DIR ITERATIONS
 *
 * SKELETON is a template's lower layer, such as
 * /run/soulbox/templates/host-*; SCRATCH_DIR an empty directory that the
 * children mount over in their own namespaces. Prints, for each way, the
 * median and the 10th and 90th percentiles of the build alone and of the
 * whole child (fork to wait). Needs root.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTRIES 256
#define PATH_LEN 1024

enum kind { DIRECTORY, SYMLINK, REGULAR };

/* One entry of the skeleton, read before the timing starts. */
struct entry {
    char path[PATH_LEN];
    enum kind kind;
    char target[PATH_LEN];
    char *data;
    size_t len;
    mode_t mode;
};

static const char *skeleton;
static const char *scratch;
static struct entry entries[MAX_ENTRIES];
static int entry_count;

static void die(const char *context)
{
    perror(context);
    exit(1);
}

/* Writes "base/name" to `out`, or exits if it does not fit. */
static void join(char *out, size_t size, const char *base, const char *name)
{
    int n = snprintf(out, size, "%s/%s", base, name);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "path too long: %s/%s\n", base, name);
        _exit(9);
    }
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Reads the skeleton's entries below `relative`, parents before children. */
static void scan(const char *relative)
{
    char dir_path[PATH_LEN];
    join(dir_path, sizeof dir_path, skeleton, relative);
    DIR *dir = opendir(dir_path);
    if (!dir)
        die(dir_path);
    struct dirent *dirent;
    while ((dirent = readdir(dir))) {
        if (!strcmp(dirent->d_name, ".") || !strcmp(dirent->d_name, ".."))
            continue;
        if (entry_count == MAX_ENTRIES) {
            fprintf(stderr, "the skeleton has more than %d entries\n", MAX_ENTRIES);
            exit(1);
        }
        struct entry *entry = &entries[entry_count++];
        snprintf(entry->path, sizeof entry->path, "%s%s%s", relative, *relative ? "/" : "",
                 dirent->d_name);
        char source[PATH_LEN];
        join(source, sizeof source, skeleton, entry->path);
        struct stat st;
        if (lstat(source, &st))
            die(source);
        entry->mode = st.st_mode & 07777;
        if (S_ISDIR(st.st_mode)) {
            entry->kind = DIRECTORY;
            scan(entry->path);
        } else if (S_ISLNK(st.st_mode)) {
            entry->kind = SYMLINK;
            ssize_t n = readlink(source, entry->target, sizeof entry->target - 1);
            if (n < 0)
                die(source);
            entry->target[n] = 0;
        } else {
            entry->kind = REGULAR;
            entry->len = st.st_size;
            entry->data = malloc(entry->len + 1);
            int fd = open(source, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || read(fd, entry->data, entry->len) != (ssize_t)entry->len)
                die(source);
            close(fd);
        }
    }
    closedir(dir);
}

static void write_file(const char *path, const char *contents)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, contents, strlen(contents)) < 0)
        _exit(4);
    close(fd);
}

static void build_overlay(const char *root)
{
    char upper[PATH_LEN], work[PATH_LEN], options[3 * PATH_LEN];
    join(upper, sizeof upper, scratch, "upper");
    join(work, sizeof work, scratch, "work");
    if (mkdir(upper, 0755) || mkdir(work, 0755))
        _exit(5);
    snprintf(options, sizeof options, "lowerdir=%s,upperdir=%s,workdir=%s", skeleton, upper,
             work);
    if (mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, options))
        _exit(6);
}

static void build_copy(const char *root)
{
    char path[2 * PATH_LEN];
    for (int i = 0; i < entry_count; i++) {
        struct entry *entry = &entries[i];
        join(path, sizeof path, root, entry->path);
        if (entry->kind == DIRECTORY) {
            if (mkdir(path, entry->mode))
                _exit(7);
        } else if (entry->kind == SYMLINK) {
            if (symlink(entry->target, path))
                _exit(7);
        } else {
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, entry->mode);
            if (fd < 0 || (entry->len && write(fd, entry->data, entry->len) < 0))
                _exit(7);
            close(fd);
        }
    }
}

/* Runs in the child: builds the root one way and reports the build's time. */
static void child(int use_copy, int report_fd)
{
    double start = now_ms();
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
        _exit(2);
    if (mount("scratch", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64m"))
        _exit(3);
    char root[PATH_LEN];
    join(root, sizeof root, scratch, "root");
    if (mkdir(root, 0755))
        _exit(3);
    if (use_copy)
        build_copy(root);
    else
        build_overlay(root);

    char path[2 * PATH_LEN];
    join(path, sizeof path, root, "etc/hostname");
    write_file(path, "sandbox\n");
    join(path, sizeof path, root, "etc/hosts");
    write_file(path, "127.0.0.1\tlocalhost\n");
    const char *lookups[] = {"proc", "sys", "dev", "tmp", "usr", "etc/ld.so.cache", "etc/passwd"};
    for (size_t i = 0; i < sizeof lookups / sizeof lookups[0]; i++) {
        struct stat st;
        join(path, sizeof path, root, lookups[i]);
        lstat(path, &st);
    }
    double built = now_ms() - start;
    if (write(report_fd, &built, sizeof built) != sizeof built)
        _exit(8);
    _exit(0);
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_row(const char *name, double *times, int n)
{
    qsort(times, n, sizeof *times, compare_doubles);
    printf("%-20s median %.3f ms  p10 %.3f  p90 %.3f\n", name, times[n / 2], times[n / 10],
           times[9 * n / 10]);
}

int main(int argc, char **argv)
{
    if (argc != 4 || atoi(argv[3]) < 10) {
        fprintf(stderr, "usage: %s SKELETON SCRATCH_DIR ITERATIONS (at least 10)\n", argv[0]);
        return 2;
    }
    skeleton = argv[1];
    scratch = argv[2];
    int n = atoi(argv[3]);
    scan("");

    double *whole[2], *build[2];
    for (int way = 0; way < 2; way++) {
        whole[way] = malloc(n * sizeof(double));
        build[way] = malloc(n * sizeof(double));
    }
    int report[2];
    if (pipe(report))
        die("pipe");
    for (int i = 0; i < n; i++) {
        for (int way = 0; way < 2; way++) {
            double start = now_ms();
            pid_t pid = fork();
            if (pid < 0)
                die("fork");
            if (pid == 0)
                child(way, report[1]);
            int status;
            if (waitpid(pid, &status, 0) < 0)
                die("waitpid");
            whole[way][i] = now_ms() - start;
            if (!WIFEXITED(status) || WEXITSTATUS(status)) {
                fprintf(stderr, "the %s child failed with status %d\n",
                        way ? "copy" : "overlay", status);
                return 1;
            }
            if (read(report[0], &build[way][i], sizeof(double)) != sizeof(double))
                die("read the build time");
        }
    }
    print_row("overlay, build", build[0], n);
    print_row("copy, build", build[1], n);
    print_row("overlay, whole", whole[0], n);
    print_row("copy, whole", whole[1], n);
    printf("skeleton entries: %d\n", entry_count);
    return 0;
}
