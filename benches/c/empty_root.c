/*
 * Compares two ways for a sandbox's PID 1 to switch to its root:
 *
 * - "pivot": from the host's mount namespace, as PID 1 does now. The
 *   child copies the host's mounts, mounts a scratch tmpfs, an overlay on
 *   the template's layer and /proc, then pivot_root(".", ".") and detaches
 *   the old root, which unmounts the copies of the host's mounts.
 * - "chroot": from a parent whose mount namespace holds only an empty
 *   read-only tmpfs. The template's layer reaches the overlay as a
 *   detached mount (open_tree(OPEN_TREE_CLONE), then fsconfig's
 *   FSCONFIG_SET_FD "lowerdir+", Linux 6.15 or later), and the child
 *   chroots into the overlay, so nothing of the host is there to unmount.
 *
 * Each iteration clones a child into a new PID namespace, which builds
 * its root one way and exits, and times it from the clone to the wait, so
 * that the namespace's teardown counts too. The two ways alternate.
 *
 *   cc -O2 -o empty_root benches/c/empty_root.c
 *   ./empty_root LAYER WORK_DIR ITERATIONS
 *
 * LAYER is a template's lower layer, such as /run/soulbox/templates/host-*;
 * WORK_DIR an empty directory for the scratch and base mounts, which only
 * the children's namespaces see. Prints the median and the 10th and 90th
 * percentiles of each way in microseconds. Needs root.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(call)                                                                          \
	do {                                                                                 \
		if ((call) < 0) {                                                            \
			perror(#call);                                                       \
			_exit(9);                                                            \
		}                                                                            \
	} while (0)

static const char *layer;
static char scratch[4096], base[4096];

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void build_with_pivot(void)
{
	char path[4200], options[9000];
	CHECK(unshare(CLONE_NEWNS));
	CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
	CHECK(mount("scratch", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"));
	const char *dirs[] = {"upper", "work", "root"};
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", scratch, dirs[i]);
		CHECK(mkdir(path, 0755));
	}
	snprintf(options, sizeof(options), "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", layer,
		 scratch, scratch);
	snprintf(path, sizeof(path), "%s/root", scratch);
	CHECK(mount("overlay", path, "overlay", MS_NOSUID | MS_NODEV, options));
	CHECK(chdir(path));
	mkdir("proc", 0555);
	CHECK(mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
	CHECK(syscall(SYS_pivot_root, ".", "."));
	CHECK(umount2(".", MNT_DETACH));
	CHECK(chdir("/"));
	_exit(0);
}

/* Moves the calling process into a mount namespace whose root is an empty
 * read-only tmpfs with one directory, /s. Returns the detached mount of the
 * layer, made while the layer is still in reach. */
static int enter_empty_root(void)
{
	int tree = syscall(SYS_open_tree, AT_FDCWD, layer, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	CHECK(tree);
	CHECK(unshare(CLONE_NEWNS));
	CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
	CHECK(mount("base", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755"));
	CHECK(chdir(base));
	CHECK(mkdir("s", 0755));
	CHECK(syscall(SYS_pivot_root, ".", "."));
	CHECK(umount2(".", MNT_DETACH));
	CHECK(chdir("/"));
	CHECK(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL));
	return tree;
}

static void build_with_chroot(int tree)
{
	CHECK(unshare(CLONE_NEWNS));
	CHECK(mount("scratch", "/s", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"));
	CHECK(mkdir("/s/upper", 0755));
	CHECK(mkdir("/s/work", 0755));
	CHECK(mkdir("/s/root", 0755));
	int context = syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
	CHECK(context);
	CHECK(syscall(SYS_fsconfig, context, FSCONFIG_SET_FD, "lowerdir+", NULL, tree));
	CHECK(syscall(SYS_fsconfig, context, FSCONFIG_SET_STRING, "upperdir", "/s/upper", 0));
	CHECK(syscall(SYS_fsconfig, context, FSCONFIG_SET_STRING, "workdir", "/s/work", 0));
	CHECK(syscall(SYS_fsconfig, context, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	int overlay = syscall(SYS_fsmount, context, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	CHECK(overlay);
	CHECK(syscall(SYS_move_mount, overlay, "", AT_FDCWD, "/s/root", MOVE_MOUNT_F_EMPTY_PATH));
	CHECK(chdir("/s/root"));
	mkdir("proc", 0555);
	CHECK(mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
	CHECK(chroot("."));
	CHECK(chdir("/"));
	_exit(0);
}

static double time_child(int chroot_way, int tree)
{
	double start = now_us();
	pid_t child = syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
	if (child < 0) {
		perror("clone");
		exit(1);
	}
	if (child == 0) {
		if (chroot_way)
			build_with_chroot(tree);
		build_with_pivot();
	}
	int status;
	waitpid(child, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "a child failed (status %d)\n", status);
		exit(1);
	}
	return now_us() - start;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void print(const char *way, double *times, int n)
{
	qsort(times, n, sizeof(*times), by_value);
	printf("%-6s median %.1f us, p10 %.1f, p90 %.1f\n", way, times[n / 2], times[n / 10],
	       times[n * 9 / 10]);
}

int main(int argc, char **argv)
{
	if (argc != 4 || atoi(argv[3]) < 10) {
		fprintf(stderr, "usage: %s LAYER WORK_DIR ITERATIONS (at least 10)\n", argv[0]);
		return 2;
	}
	layer = argv[1];
	int n = atoi(argv[3]);
	snprintf(scratch, sizeof(scratch), "%s/scratch", argv[2]);
	snprintf(base, sizeof(base), "%s/base", argv[2]);
	mkdir(scratch, 0755);
	mkdir(base, 0755);
	double *pivot = calloc(n, sizeof(double)), *chroot_times = calloc(n, sizeof(double));

	/* The chroot way needs its parent in the empty root, and the pivot way
	 * must not start there, so a helper process enters it. */
	int requests[2], replies[2];
	if (pipe(requests) || pipe(replies))
		return 1;
	pid_t helper = fork();
	if (helper == 0) {
		close(requests[1]);
		close(replies[0]);
		int tree = enter_empty_root();
		char byte;
		while (read(requests[0], &byte, 1) == 1) {
			double elapsed = time_child(1, tree);
			if (write(replies[1], &elapsed, sizeof(elapsed)) != sizeof(elapsed))
				_exit(1);
		}
		_exit(0);
	}
	if (helper < 0) {
		perror("fork");
		return 1;
	}
	close(requests[0]);
	close(replies[1]);
	for (int i = 0; i < n; i++) {
		pivot[i] = time_child(0, -1);
		char byte = 0;
		if (write(requests[1], &byte, 1) != 1 ||
		    read(replies[0], &chroot_times[i], sizeof(double)) != sizeof(double)) {
			fprintf(stderr, "the chroot helper failed\n");
			return 1;
		}
	}
	close(requests[1]);
	waitpid(helper, NULL, 0);
	print("pivot", pivot, n);
	print("chroot", chroot_times, n);
	return 0;
}
