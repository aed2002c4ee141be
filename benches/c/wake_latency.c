/*
 * Measures what a wake-up across CPUs costs: two processes pass one byte
 * back and forth through two pipes, both pinned to the same CPU or to
 * two different ones, with an optional pause before each round trip. A
 * CPU that has been idle for a while may take far longer to wake than
 * one that has just gone idle, most of all in a VM whose idle virtual
 * CPUs halt.
 *
 *   cc -O2 -o wake_latency benches/c/wake_latency.c
 *   ./wake_latency CPU_A CPU_B ROUND_TRIPS [PAUSE_US]
 *
 * CPU_A runs the timing process and CPU_B its partner; -1 leaves a
 * process unpinned. Prints the mean round trip in microseconds.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void pin(int cpu)
{
	cpu_set_t set;
	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("sched_setaffinity");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s CPU_A CPU_B ROUND_TRIPS [PAUSE_US]\n", argv[0]);
		return 2;
	}
	int cpu_a = atoi(argv[1]), cpu_b = atoi(argv[2]);
	int rounds = atoi(argv[3]), pause_us = argc > 4 ? atoi(argv[4]) : 0;
	int to_partner[2], to_timer[2];
	char byte = 0;
	if (rounds < 1 || pipe(to_partner) || pipe(to_timer)) {
		fprintf(stderr, "invalid ROUND_TRIPS or no pipes\n");
		return 2;
	}

	pid_t partner = fork();
	if (partner < 0) {
		perror("fork");
		return 1;
	}
	if (partner == 0) {
		close(to_partner[1]);
		pin(cpu_b);
		while (read(to_partner[0], &byte, 1) == 1)
			if (write(to_timer[1], &byte, 1) != 1)
				_exit(1);
		_exit(0);
	}
	close(to_partner[0]);
	pin(cpu_a);

	double total = 0;
	for (int i = 0; i < rounds; i++) {
		if (pause_us)
			usleep(pause_us);
		double start = now_us();
		if (write(to_partner[1], &byte, 1) != 1 || read(to_timer[0], &byte, 1) != 1) {
			fprintf(stderr, "the partner process ended\n");
			return 1;
		}
		total += now_us() - start;
	}
	close(to_partner[1]);
	waitpid(partner, NULL, 0);
	printf("CPU %d to %d, pause %d us: %.1f us per round trip\n", cpu_a, cpu_b, pause_us,
	       total / rounds);
	return 0;
}
