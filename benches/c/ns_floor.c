/*
 * The kernel's floor under a sandbox create on this machine: clone a child
 * into the namespaces a SoulBox sandbox gets (mount, PID, network, UTS,
 * IPC), let it exec /bin/true or --program PATH (or exit at once with
 * --no-exec), and wait
 * for it. No mounts, no cgroups, no seccomp filter and no messages, so
 * every sandbox runtime pays at least this for create + /bin/true +
 * destroy.
 *
 *   cc -O2 -o ns_floor benches/c/ns_floor.c
 *   ./ns_floor --iterations N [--no-exec] [--no-namespaces] [--program PATH]
 *
 * Prints one line per iteration: its wall time in nanoseconds, as
 * soulbox-bench-api does, so benches/compare.sh reads both alike. Needs
 * root unless --no-namespaces.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int run_true = 1;
static char *program = "/bin/true";
static char child_stack[64 * 1024] __attribute__((aligned(16)));

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int child(void *unused)
{
	(void)unused;
	if (run_true) {
		char *argv[] = { program, NULL };
		char *envp[] = { NULL };
		execve(program, argv, envp);
		_exit(127);
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	long iterations = -1;
	int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
			iterations = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--no-exec") == 0)
			run_true = 0;
		else if (strcmp(argv[i], "--no-namespaces") == 0)
			flags = 0;
		else if (strcmp(argv[i], "--program") == 0 && i + 1 < argc)
			program = argv[++i];
		else {
			fprintf(stderr, "ns_floor: unknown argument '%s'\n"
					"usage: ns_floor --iterations N [--no-exec] [--no-namespaces] "
					"[--program PATH]\n",
				argv[i]);
			return 2;
		}
	}
	if (iterations < 1) {
		fprintf(stderr, "ns_floor: --iterations needs a number of 1 or more\n");
		return 2;
	}
	for (long i = 0; i < iterations; i++) {
		long long start = now_ns();
		pid_t pid = clone(child, child_stack + sizeof child_stack, flags | SIGCHLD, NULL);
		if (pid < 0) {
			fprintf(stderr, "ns_floor: clone: %s\n", strerror(errno));
			return 1;
		}
		int status;
		if (waitpid(pid, &status, 0) != pid) {
			fprintf(stderr, "ns_floor: waitpid: %s\n", strerror(errno));
			return 1;
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "ns_floor: the child failed with status %#x\n", status);
			return 1;
		}
		printf("%lld\n", now_ns() - start);
	}
	return 0;
}
