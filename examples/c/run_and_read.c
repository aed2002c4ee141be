/*
 * Runs a small job in a fresh sandbox through libsoulbox and reads its
 * result file back from the host side.
 *
 * Build and run (as root) after installing libsoulbox, see README.md:
 *   make && ./run_and_read
 */
#include <stdio.h>
#include <stdlib.h>

#include <soulbox.h>

/* Prints the error, frees it and exits when `error` is not NULL. */
static void check(soulbox_error *error, const char *what) {
    if (error == NULL) return;
    fprintf(stderr, "run_and_read: %s failed: %s\n", what, soulbox_error_message(error));
    soulbox_error_free(error);
    exit(1);
}

/* Streams the job's output to the terminal while it runs. */
static void print_chunk(void *user_data, soulbox_stream stream, const uint8_t *data, size_t len) {
    (void)user_data;
    fwrite(data, 1, len, stream == SOULBOX_STREAM_STDOUT ? stdout : stderr);
    fflush(stream == SOULBOX_STREAM_STDOUT ? stdout : stderr);
}

int main(void) {
    soulbox_sandbox *sandbox = NULL;
    check(soulbox_sandbox_create(NULL, &sandbox), "creating a sandbox");
    printf("sandbox %s is running\n", soulbox_sandbox_id(sandbox));

    /* The host writes the job's input into the sandbox. */
    static const char numbers[] = "4\n8\n15\n16\n23\n42\n";
    check(soulbox_files_write(sandbox, "job/numbers.txt", (const uint8_t *)numbers,
                              sizeof numbers - 1, NULL),
          "writing job/numbers.txt");

    /* The job runs as the sandbox's unprivileged user in /home/user. */
    soulbox_output *output = NULL;
    check(soulbox_run(sandbox,
                      "cd job && awk '{ sum += $1 } END { print sum }' numbers.txt > sum.txt"
                      " && echo \"job: wrote sum.txt as $(id -un)\"",
                      NULL, print_chunk, NULL, &output),
          "running the job");
    int exit_code = output->exit_code;
    soulbox_output_free(output);
    if (exit_code != 0) {
        fprintf(stderr, "run_and_read: the job exited with code %d\n", exit_code);
        soulbox_sandbox_free(sandbox);
        return 1;
    }

    /* The host reads the result back. */
    soulbox_bytes *sum = NULL;
    check(soulbox_files_read(sandbox, "job/sum.txt", NULL, &sum), "reading job/sum.txt");
    printf("sum.txt: %s", (const char *)sum->data); /* the buffer is NUL-terminated */
    soulbox_bytes_free(sum);

    check(soulbox_sandbox_kill(sandbox), "killing the sandbox");
    soulbox_sandbox_free(sandbox);
    return 0;
}
