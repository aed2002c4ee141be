/*
 * Times create + run + kill through libsoulbox, the C counterpart of
 * soulbox-bench-api.
 *
 * Usage: bench_ffi --iterations N [--no-limits]
 *
 * Each iteration creates a sandbox, runs /bin/true in it without a shell
 * (soulbox_exec) and kills it. It prints the wall time of those three
 * calls in nanoseconds, one line per iteration. The handles are freed
 * after the timer stops, as the Rust bench drops its values after taking
 * its time. --no-limits turns off the default memory and pids limits.
 * benches/ffi.sh runs it interleaved with soulbox-bench-api.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "soulbox.h"

static int usage(const char *message) {
    fprintf(stderr, "bench_ffi: %s\nusage: bench_ffi --iterations N [--no-limits]\n", message);
    return 2;
}

static int fail(const char *what, soulbox_error *error) {
    fprintf(stderr, "bench_ffi: %s failed: %s\n", what, soulbox_error_message(error));
    soulbox_error_free(error);
    return 1;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long iterations = 0;
    int no_limits = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-limits") == 0) {
            no_limits = 1;
        } else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
            char *end = NULL;
            iterations = strtol(argv[++i], &end, 10);
            if (*end != '\0' || iterations <= 0) return usage("--iterations is not a positive integer");
        } else {
            return usage("unknown or incomplete option");
        }
    }
    if (iterations == 0) return usage("--iterations is required");

    soulbox_options *options = soulbox_options_new();
    if (no_limits) {
        soulbox_error *error = soulbox_options_set_memory_limit(options, 0);
        if (error == NULL) error = soulbox_options_set_pids_limit(options, 0);
        if (error != NULL) return fail("setting the options", error);
    }
    const char *const argv_true[] = {"/bin/true", NULL};
    for (long i = 0; i < iterations; i++) {
        long long start = now_ns();
        soulbox_sandbox *sandbox = NULL;
        soulbox_error *error = soulbox_sandbox_create(options, &sandbox);
        if (error != NULL) return fail("create", error);
        soulbox_output *output = NULL;
        error = soulbox_exec(sandbox, argv_true, NULL, NULL, NULL, &output);
        if (error != NULL) return fail("exec", error);
        error = soulbox_sandbox_kill(sandbox);
        if (error != NULL) return fail("kill", error);
        long long elapsed = now_ns() - start;
        if (output->exit_code != 0) {
            fprintf(stderr, "bench_ffi: /bin/true exited with %d\n", output->exit_code);
            return 1;
        }
        printf("%lld\n", elapsed);
        soulbox_output_free(output);
        soulbox_sandbox_free(sandbox);
    }
    soulbox_options_free(options);
    return 0;
}
