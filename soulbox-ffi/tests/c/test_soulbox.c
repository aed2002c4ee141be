/*
 * Tests of libsoulbox through soulbox.h, from C.
 *
 * Usage: test_soulbox CASE    runs one case; exit status 0 when it passes
 *        test_soulbox --list  prints the case names, one per line
 *
 * soulbox-ffi/tests/c_api.rs compiles this file with AddressSanitizer,
 * LeakSanitizer and UndefinedBehaviorSanitizer and runs every case in its
 * own process, so a leak or a memory error fails the case it happened in.
 * Cases that create sandboxes need root.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "soulbox.h"

static const char *current_case = "?";

static void fail(const char *file, int line, const char *format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "%s:%d: case %s failed: ", file, line, current_case);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) fail(__FILE__, __LINE__, __VA_ARGS__);                    \
    } while (0)

/* Fails the case unless `error` is NULL. */
#define OK(error) expect_ok(__FILE__, __LINE__, (error), #error)
static void expect_ok(const char *file, int line, soulbox_error *error, const char *call) {
    if (error != NULL) {
        fail(file, line, "%s returned error kind %u (errno %d): %s", call,
             (unsigned)soulbox_error_get_kind(error), soulbox_error_errno(error),
             soulbox_error_message(error));
    }
}

/* Fails the case unless `error` has `kind`; frees it. Returns nothing: the
 * message is checked with EXPECT_ERROR_MESSAGE where it matters. */
#define EXPECT_ERROR(error, kind) expect_error(__FILE__, __LINE__, (error), (kind), #error, NULL, 0)
#define EXPECT_ERROR_MESSAGE(error, kind, needle)                               \
    expect_error(__FILE__, __LINE__, (error), (kind), #error, (needle), 0)
#define EXPECT_ERROR_ERRNO(error, kind, errno_value)                            \
    expect_error(__FILE__, __LINE__, (error), (kind), #error, NULL, (errno_value))
static void expect_error(const char *file, int line, soulbox_error *error,
                         soulbox_error_kind kind, const char *call, const char *needle,
                         int errno_value) {
    if (error == NULL) fail(file, line, "%s succeeded, expected error kind %u", call, kind);
    soulbox_error_kind got = soulbox_error_get_kind(error);
    const char *message = soulbox_error_message(error);
    if (got != kind) {
        fail(file, line, "%s returned error kind %u, expected %u: %s", call, (unsigned)got,
             (unsigned)kind, message);
    }
    if (message == NULL || message[0] == '\0') fail(file, line, "%s: empty error message", call);
    if (needle != NULL && strstr(message, needle) == NULL) {
        fail(file, line, "%s: message %s lacks \"%s\"", call, message, needle);
    }
    if (errno_value != 0 && soulbox_error_errno(error) != errno_value) {
        fail(file, line, "%s: errno %d, expected %d (%s)", call, soulbox_error_errno(error),
             errno_value, message);
    }
    soulbox_error_free(error);
}

/* Returns options whose sandbox dies with its handle, so that a failed case
 * leaves no sandbox running. */
static soulbox_options *dying_options(void) {
    soulbox_options *options = soulbox_options_new();
    OK(soulbox_options_set_kill_on_drop(options, true));
    return options;
}

static soulbox_sandbox *new_sandbox(void) {
    soulbox_options *options = dying_options();
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    CHECK(sandbox != NULL, "create stored no sandbox");
    soulbox_options_free(options);
    return sandbox;
}

/* Returns a metadata value unique to this process and call. */
static const char *unique_label(void) {
    static char label[64];
    static int calls;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(label, sizeof label, "c-test-%d-%ld-%d", (int)getpid(), (long)now.tv_nsec, calls++);
    return label;
}

static soulbox_output *run(soulbox_sandbox *sandbox, const char *command_line,
                           const soulbox_run_options *options) {
    soulbox_output *output = NULL;
    OK(soulbox_run(sandbox, command_line, options, NULL, NULL, &output));
    CHECK(output != NULL, "run stored no output");
    return output;
}

static double seconds_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Waits up to 5 s until no process named `name` is left in the sandbox,
 * zombies included, and returns whether none is. A killed tree takes a
 * moment to be reaped. */
static bool no_process_left(soulbox_sandbox *sandbox, const char *name) {
    char command_line[128];
    snprintf(command_line, sizeof command_line, "pgrep -x %s >/dev/null || echo none", name);
    for (int i = 0; i < 50; i++) {
        soulbox_output *output = run(sandbox, command_line, NULL);
        bool none = strcmp((const char *)output->stdout_data, "none\n") == 0;
        soulbox_output_free(output);
        if (none) return true;
        usleep(100 * 1000);
    }
    return false;
}

/* A pointer that is not NULL and not valid, to check that a failed call
 * overwrites its out-parameter with NULL. */
#define GARBAGE ((void *)(uintptr_t)0x1)

/* ---- cases ---------------------------------------------------------------- */

static void case_run_output(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    const char *id = soulbox_sandbox_id(sandbox);
    CHECK(id != NULL, "the sandbox has an id");
    CHECK(strncmp(id, "sb-", 3) == 0, "sandbox id %s", id);
    CHECK(soulbox_sandbox_is_running(sandbox), "a new sandbox is running");

    soulbox_output *output = run(sandbox, "echo hello; printf err >&2; hostname", NULL);
    CHECK(output->exit_code == 0, "exit code %d", output->exit_code);
    CHECK(output->signal == 0, "signal %d", output->signal);
    CHECK(!output->timed_out, "timed_out is not set");
    CHECK(!output->oom_killed, "oom_killed is not set");
    char expected[128];
    snprintf(expected, sizeof expected, "hello\n%s\n", id);
    CHECK(output->stdout_len == strlen(expected), "stdout length %zu", output->stdout_len);
    CHECK(memcmp(output->stdout_data, expected, output->stdout_len) == 0, "stdout %s",
          (const char *)output->stdout_data);
    CHECK(output->stdout_data[output->stdout_len] == '\0', "stdout is NUL-terminated");
    CHECK(output->stderr_len == 3, "stderr length %zu", output->stderr_len);
    CHECK(strcmp((const char *)output->stderr_data, "err") == 0, "stderr %s",
          (const char *)output->stderr_data);
    soulbox_output_free(output);

    const char *argv[] = {"printf", "%s|%s", "a b", "c", NULL};
    OK(soulbox_exec(sandbox, argv, NULL, NULL, NULL, &output));
    CHECK(strcmp((const char *)output->stdout_data, "a b|c") == 0, "exec passes argv as is: %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);

    OK(soulbox_sandbox_kill(sandbox));
    soulbox_sandbox_free(sandbox);
}

static void case_nonzero_exit(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_output *output = run(sandbox, "echo partial; exit 7", NULL);
    CHECK(output->exit_code == 7, "exit code %d", output->exit_code);
    CHECK(output->signal == 0, "signal %d", output->signal);
    CHECK(strcmp((const char *)output->stdout_data, "partial\n") == 0,
          "output before a failing exit is kept");
    soulbox_output_free(output);

    output = run(sandbox, "kill -TERM $$", NULL);
    CHECK(output->exit_code == -1, "exit code after a signal %d", output->exit_code);
    CHECK(output->signal == SIGTERM, "signal %d", output->signal);
    soulbox_output_free(output);
    soulbox_sandbox_free(sandbox);
}

static void case_timeout(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_run_options *options = soulbox_run_options_new();
    /* Long enough for a login shell to print "early" on a loaded host. */
    OK(soulbox_run_options_set_timeout_ms(options, 2000));
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    soulbox_output *output = run(sandbox, "echo early; sleep 30; echo late", options);
    double elapsed = seconds_since(&start);
    CHECK(output->timed_out, "timed_out is set");
    CHECK(output->signal == SIGKILL, "signal after the timeout %d", output->signal);
    CHECK(output->exit_code == -1, "exit code after the timeout %d", output->exit_code);
    CHECK(strcmp((const char *)output->stdout_data, "early\n") == 0,
          "output before the timeout is returned: %s", (const char *)output->stdout_data);
    CHECK(elapsed < 15.0, "the 2 s timeout took %.1f s", elapsed);
    soulbox_output_free(output);
    CHECK(no_process_left(sandbox, "sleep"), "the timeout left the command's sleep running");
    soulbox_run_options_free(options);
    soulbox_sandbox_free(sandbox);
}

struct collected {
    char out[256];
    size_t out_len;
    char err[256];
    size_t err_len;
    int calls;
    int bad_calls;
    pthread_t thread;
};

static void collect(void *user_data, soulbox_stream stream, const uint8_t *data, size_t len) {
    struct collected *c = user_data;
    c->calls++;
    if (!pthread_equal(pthread_self(), c->thread) || data == NULL || len == 0) {
        c->bad_calls++;
        return;
    }
    char *buffer = stream == SOULBOX_STREAM_STDOUT ? c->out : c->err;
    size_t *used = stream == SOULBOX_STREAM_STDOUT ? &c->out_len : &c->err_len;
    if (stream != SOULBOX_STREAM_STDOUT && stream != SOULBOX_STREAM_STDERR) c->bad_calls++;
    if (*used + len < sizeof c->out) {
        memcpy(buffer + *used, data, len);
        *used += len;
    }
}

static void case_streaming_callback(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    struct collected c = {.thread = pthread_self()};
    soulbox_output *output = NULL;
    OK(soulbox_run(sandbox,
                   "for i in 1 2 3; do echo line$i; echo e$i >&2; sleep 0.05; done; exit 4",
                   NULL, collect, &c, &output));
    CHECK(c.bad_calls == 0, "%d callbacks came on another thread or were empty", c.bad_calls);
    CHECK(c.calls >= 2, "callback called %d times", c.calls);
    CHECK(c.out_len == 18, "streamed stdout length %zu", c.out_len);
    CHECK(memcmp(c.out, "line1\nline2\nline3\n", 18) == 0, "streamed stdout %.*s",
          (int)c.out_len, c.out);
    CHECK(c.err_len == 9, "streamed stderr length %zu", c.err_len);
    CHECK(memcmp(c.err, "e1\ne2\ne3\n", 9) == 0, "streamed stderr %.*s", (int)c.err_len,
          c.err);
    CHECK(output->exit_code == 4, "exit code %d", output->exit_code);
    CHECK(output->stdout_len == 0, "streamed stdout is not also collected");
    CHECK(output->stderr_len == 0, "streamed stderr is not also collected");
    CHECK(output->stdout_data != NULL, "empty stdout is not NULL");
    CHECK(output->stdout_data[0] == '\0', "empty stdout is \"\"");
    soulbox_output_free(output);
    soulbox_sandbox_free(sandbox);
}

static void case_stdin(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_run_options *options = soulbox_run_options_new();
    OK(soulbox_run_options_set_stdin(options, true));
    const char *argv[] = {"cat", NULL};
    soulbox_command *command = NULL;
    OK(soulbox_command_start_argv(sandbox, argv, options, &command));
    CHECK(soulbox_command_pid(command) > 0, "pid %u", soulbox_command_pid(command));
    static const uint8_t data[] = {'h', 'i', 0, 0xff, 0x80, '\n'};
    OK(soulbox_command_send_stdin(command, data, sizeof data));
    OK(soulbox_command_send_stdin(command, NULL, 0));
    OK(soulbox_command_close_stdin(command));
    EXPECT_ERROR(soulbox_command_close_stdin(command), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(command, NULL, NULL, &output));
    CHECK(output->exit_code == 0, "cat exit code %d", output->exit_code);
    CHECK(output->stdout_len == sizeof data, "cat echoed %zu bytes", output->stdout_len);
    CHECK(memcmp(output->stdout_data, data, sizeof data) == 0, "cat echoed other bytes");
    soulbox_output_free(output);
    soulbox_command_free(command);

    /* Without the stdin option there is no stdin to write to. */
    OK(soulbox_command_start(sandbox, "sleep 30", NULL, &command));
    EXPECT_ERROR_MESSAGE(soulbox_command_send_stdin(command, data, sizeof data),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "stdin");
    OK(soulbox_command_kill(command));
    soulbox_command_free(command);

    /* soulbox_run cannot take stdin: nothing could write to it. */
    soulbox_output *none = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_run(sandbox, "cat", options, NULL, NULL, &none),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "soulbox_command_start");
    CHECK(none == NULL, "a failed run stores NULL");
    soulbox_run_options_free(options);
    soulbox_sandbox_free(sandbox);
}

/* Sends the command a line for each of the first two lines it prints, and
 * closes its stdin at the third. It runs as the output callback, so it
 * calls SoulBox while a wait is in progress. */
struct ping_pong {
    soulbox_command *command;
    int lines;
    int failures;
};

static void answer(void *user_data, soulbox_stream stream, const uint8_t *data, size_t len) {
    struct ping_pong *p = user_data;
    if (stream != SOULBOX_STREAM_STDOUT) return;
    for (size_t i = 0; i < len; i++) {
        if (data[i] != '\n') continue;
        p->lines++;
        soulbox_error *error = NULL;
        if (p->lines < 3) {
            error = soulbox_command_send_stdin(p->command, (const uint8_t *)"x\n", 2);
        } else if (p->lines == 3) {
            error = soulbox_command_close_stdin(p->command);
        }
        if (error != NULL) {
            p->failures++;
            soulbox_error_free(error);
        }
    }
}

static void case_callback_reentry(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_run_options *options = soulbox_run_options_new();
    OK(soulbox_run_options_set_stdin(options, true));
    OK(soulbox_run_options_set_timeout_ms(options, 20000));
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "echo go; while read line; do echo got; done; echo eof",
                             options, &command));
    struct ping_pong p = {.command = command};
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(command, answer, &p, &output));
    CHECK(p.failures == 0, "%d calls from the callback failed", p.failures);
    CHECK(p.lines == 4, "lines seen %d (go, got, got, eof)", p.lines);
    CHECK(!output->timed_out, "the command timed out");
    CHECK(output->exit_code == 0, "exit code %d", output->exit_code);
    soulbox_output_free(output);

    /* A wait after the end returns the same exit again, with no output. */
    OK(soulbox_command_wait(command, NULL, NULL, &output));
    CHECK(output->exit_code == 0, "second wait: exit code %d", output->exit_code);
    CHECK(output->stdout_len == 0, "second wait: %zu bytes of output", output->stdout_len);
    soulbox_output_free(output);
    soulbox_command_free(command);
    soulbox_run_options_free(options);
    soulbox_sandbox_free(sandbox);
}

/* A thread that waits for a command, streaming its output. `streaming`
 * turns 1 at the first chunk, while the wait is surely in progress. */
struct waiter {
    soulbox_command *command;
    soulbox_output *output;
    soulbox_error *error;
    atomic_int streaming;
    atomic_int saw_never;
};

static void note_chunk(void *user_data, soulbox_stream stream, const uint8_t *data, size_t len) {
    struct waiter *w = user_data;
    (void)stream;
    if (memmem(data, len, "never", 5) != NULL) atomic_store(&w->saw_never, 1);
    atomic_store(&w->streaming, 1);
}

static void *wait_in_thread(void *arg) {
    struct waiter *w = arg;
    w->error = soulbox_command_wait(w->command, note_chunk, w, &w->output);
    return NULL;
}

static void case_background_kill(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "echo started; sleep 300 & sleep 301; echo never", NULL,
                             &command));
    struct waiter w = {.command = command};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, wait_in_thread, &w) == 0, "pthread_create");
    for (int i = 0; i < 6000 && !atomic_load(&w.streaming); i++) usleep(10 * 1000);
    CHECK(atomic_load(&w.streaming), "no output reached the waiting thread within 60 s");

    /* Another thread is waiting, so this wait fails at once. */
    soulbox_output *output = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_command_wait(command, NULL, NULL, &output),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "already being waited for");
    CHECK(output == NULL, "a failed wait stores NULL");

    EXPECT_ERROR(soulbox_command_signal(command, 0), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    EXPECT_ERROR(soulbox_command_signal(command, 65), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    OK(soulbox_command_kill(command));
    CHECK(pthread_join(thread, NULL) == 0, "pthread_join");
    OK(w.error);
    CHECK(w.output->signal == SIGKILL, "signal after kill %d", w.output->signal);
    CHECK(!atomic_load(&w.saw_never), "the killed command went on to print \"never\"");
    soulbox_output_free(w.output);
    soulbox_command_free(command);

    CHECK(no_process_left(sandbox, "sleep"), "the kill left a sleep of the command's tree");
    soulbox_sandbox_free(sandbox);
}

static void case_signal(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "trap 'echo term; exit 5' TERM; echo ready; sleep 300 & wait",
                             NULL, &command));
    /* Wait until the trap is installed: "ready" comes after it. */
    int up = 0;
    for (int i = 0; i < 600 && !up; i++) {
        soulbox_output *probe = run(sandbox, "pgrep -x sleep >/dev/null && echo up", NULL);
        up = probe->stdout_len > 0;
        soulbox_output_free(probe);
        if (!up) usleep(50 * 1000);
    }
    CHECK(up, "the command's sleep did not start within 30 s");
    OK(soulbox_command_signal(command, SIGTERM));
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(command, NULL, NULL, &output));
    CHECK(output->exit_code == 5, "trap exit code %d", output->exit_code);
    CHECK(strstr((const char *)output->stdout_data, "term\n") != NULL, "trap output %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);
    OK(soulbox_command_kill(command)); /* ends the sleep the shell left */
    soulbox_command_free(command);
    soulbox_sandbox_free(sandbox);
}

static void case_env_and_user(void) {
    soulbox_options *options = dying_options();
    OK(soulbox_options_set_env(options, "SANDBOX_WIDE", "one"));
    OK(soulbox_options_set_env(options, "OVERRIDDEN", "sandbox"));
    OK(soulbox_options_set_timeout_ms(options, 60000));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options); /* the sandbox does not keep it */

    soulbox_run_options *run_options = soulbox_run_options_new();
    OK(soulbox_run_options_set_env(run_options, "OVERRIDDEN", "command"));
    OK(soulbox_run_options_set_user(run_options, "root"));
    OK(soulbox_run_options_set_cwd(run_options, "/tmp"));
    soulbox_output *output =
        run(sandbox, "echo $SANDBOX_WIDE $OVERRIDDEN $(id -u) $PWD", run_options);
    CHECK(strcmp((const char *)output->stdout_data, "one command 0 /tmp\n") == 0, "got %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);
    soulbox_run_options_free(run_options);

    output = run(sandbox, "echo $OVERRIDDEN $(id -un) $PWD", NULL);
    CHECK(strcmp((const char *)output->stdout_data, "sandbox user /home/user\n") == 0,
          "defaults: %s", (const char *)output->stdout_data);
    soulbox_output_free(output);
    soulbox_sandbox_free(sandbox);
}

static void case_files_round_trip(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    size_t size = 3 * 1024 * 1024 + 17;
    uint8_t *data = malloc(size);
    CHECK(data != NULL, "malloc");
    uint32_t state = 2463534242u;
    for (size_t i = 0; i < size; i++) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        data[i] = (uint8_t)(i < 256 ? i : state);
    }
    OK(soulbox_files_write(sandbox, "data/blob.bin", data, size, NULL));
    soulbox_bytes *bytes = NULL;
    OK(soulbox_files_read(sandbox, "/home/user/data/blob.bin", NULL, &bytes));
    CHECK(bytes->len == size, "read %zu bytes, wrote %zu", bytes->len, size);
    CHECK(memcmp(bytes->data, data, size) == 0, "read bytes differ from written ones");
    CHECK(bytes->data[bytes->len] == 0, "buffer is NUL-terminated");
    soulbox_bytes_free(bytes);
    free(data);

    /* Commands in the sandbox read the file the host wrote, and it belongs
     * to the sandbox user. */
    soulbox_output *output = run(sandbox, "stat -c '%s %U' data/blob.bin", NULL);
    char expected[64];
    snprintf(expected, sizeof expected, "%zu user\n", size);
    CHECK(strcmp((const char *)output->stdout_data, expected) == 0, "stat: %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);

    /* An empty file: data may be NULL when len is 0. */
    OK(soulbox_files_write(sandbox, "empty", NULL, 0, NULL));
    OK(soulbox_files_read(sandbox, "empty", NULL, &bytes));
    CHECK(bytes->len == 0, "empty file read as %zu bytes", bytes->len);
    CHECK(bytes->data != NULL, "an empty buffer is not NULL");
    CHECK(bytes->data[0] == 0, "an empty buffer is \"\"");
    soulbox_bytes_free(bytes);

    bool flag = false;
    OK(soulbox_files_exists(sandbox, "empty", NULL, &flag));
    CHECK(flag, "exists after write");
    OK(soulbox_files_make_dir(sandbox, "a/b/c", NULL, &flag));
    CHECK(flag, "make_dir creates a new directory");
    OK(soulbox_files_make_dir(sandbox, "a/b/c", NULL, &flag));
    CHECK(!flag, "make_dir reports an existing directory");
    OK(soulbox_files_make_dir(sandbox, "a/d", NULL, NULL));
    OK(soulbox_files_remove(sandbox, "a", NULL));
    OK(soulbox_files_exists(sandbox, "a", NULL, &flag));
    CHECK(!flag, "a is removed with its contents");
    OK(soulbox_files_remove(sandbox, "a", NULL)); /* missing: not an error */

    /* Permissions are the sandbox user's. */
    static const uint8_t secret[] = "root only";
    OK(soulbox_files_write(sandbox, "/root/secret", secret, sizeof secret - 1, "root"));
    bytes = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_files_read(sandbox, "/root/secret", NULL, &bytes),
                       SOULBOX_ERROR_KIND_PERMISSION_DENIED, EACCES);
    CHECK(bytes == NULL, "a failed read stores NULL");
    OK(soulbox_files_read(sandbox, "/root/secret", "root", &bytes));
    CHECK(bytes->len == sizeof secret - 1, "root read %zu bytes", bytes->len);
    CHECK(strcmp((const char *)bytes->data, "root only") == 0, "root read %s",
          (const char *)bytes->data);
    soulbox_bytes_free(bytes);
    soulbox_sandbox_free(sandbox);
}

static void case_missing_file(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_bytes *bytes = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_files_read(sandbox, "no/such/file.txt", NULL, &bytes),
                       SOULBOX_ERROR_KIND_FILE_NOT_FOUND, ENOENT);
    CHECK(bytes == NULL, "a failed read stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_read(sandbox, "/home", NULL, &bytes),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "directory");
    EXPECT_ERROR_MESSAGE(soulbox_files_write(sandbox, "/usr/x", (const uint8_t *)"x", 1, "root"),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "read-only");
    EXPECT_ERROR_MESSAGE(soulbox_files_read(sandbox, "x", "nobody", &bytes),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "nobody");
    soulbox_sandbox_free(sandbox);
}

static void case_spawn_errors(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_output *output = GARBAGE;
    const char *missing[] = {"/no/such/program", NULL};
    EXPECT_ERROR_ERRNO(soulbox_exec(sandbox, missing, NULL, NULL, NULL, &output),
                       SOULBOX_ERROR_KIND_SPAWN, ENOENT);
    CHECK(output == NULL, "a failed exec stores NULL");

    soulbox_run_options *options = soulbox_run_options_new();
    OK(soulbox_run_options_set_cwd(options, "/does/not/exist"));
    EXPECT_ERROR_MESSAGE(soulbox_run(sandbox, "true", options, NULL, NULL, &output),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "/does/not/exist");
    soulbox_command *command = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_command_start(sandbox, "true", options, &command),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "/does/not/exist");
    CHECK(command == NULL, "a failed start stores NULL");
    soulbox_run_options_free(options);

    options = soulbox_run_options_new();
    OK(soulbox_run_options_set_user(options, "nobody"));
    EXPECT_ERROR_MESSAGE(soulbox_run(sandbox, "true", options, NULL, NULL, &output),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "nobody");
    soulbox_run_options_free(options);

    options = soulbox_run_options_new();
    OK(soulbox_run_options_set_env(options, "A=B", "x"));
    EXPECT_ERROR_MESSAGE(soulbox_run(sandbox, "true", options, NULL, NULL, &output),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "A=B");
    soulbox_run_options_free(options);

    const char *empty[] = {NULL};
    EXPECT_ERROR_MESSAGE(soulbox_exec(sandbox, empty, NULL, NULL, NULL, &output),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argv is empty");
    soulbox_sandbox_free(sandbox);
}

static void case_invalid_options(void) {
    struct {
        const char *name;
        soulbox_error *(*set)(soulbox_options *, uint64_t);
        uint64_t value;
    } numbers[] = {
        {"memory_limit", soulbox_options_set_memory_limit, 1 << 20},
        {"pids_limit", soulbox_options_set_pids_limit, 2},
        {"disk_size", soulbox_options_set_disk_size, 1024},
        {"tmp_size", soulbox_options_set_tmp_size, 1024},
        {"disk_inodes", soulbox_options_set_disk_inodes, 10},
        {"open_files_limit", soulbox_options_set_open_files_limit, 3},
    };
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        soulbox_options *options = soulbox_options_new();
        OK(numbers[i].set(options, numbers[i].value));
        soulbox_sandbox *sandbox = GARBAGE;
        EXPECT_ERROR_MESSAGE(soulbox_sandbox_create(options, &sandbox),
                             SOULBOX_ERROR_KIND_INVALID_ARGUMENT, numbers[i].name);
        CHECK(sandbox == NULL, "a failed create stores NULL");
        soulbox_options_free(options);
    }

    soulbox_options *options = soulbox_options_new();
    EXPECT_ERROR_MESSAGE(soulbox_options_set_cpu_limit(options, -1.0),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "cpu_limit");
    OK(soulbox_options_set_cpu_limit(options, 5000.0));
    soulbox_sandbox *sandbox = NULL;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_create(options, &sandbox),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "cpu_limit");
    soulbox_options_free(options);

    options = soulbox_options_new();
    OK(soulbox_options_set_template(options, "ubuntu"));
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_create(options, &sandbox),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "ubuntu");
    soulbox_options_free(options);

    options = soulbox_options_new();
    OK(soulbox_options_set_env(options, "", "x"));
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_create(options, &sandbox),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "environment variable");
    soulbox_options_free(options);

    /* Strings that must be UTF-8 are checked at once. */
    options = soulbox_options_new();
    EXPECT_ERROR_MESSAGE(soulbox_options_set_template(options, "bad\xff"),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "UTF-8");
    soulbox_options_free(options);
    soulbox_run_options *run_options = soulbox_run_options_new();
    EXPECT_ERROR_MESSAGE(soulbox_run_options_set_cwd(run_options, "\xc3("),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument dir");
    soulbox_run_options_free(run_options);
}

static void case_null_arguments(void) {
    /* Errors and free functions accept NULL. */
    CHECK(soulbox_error_get_kind(NULL) == SOULBOX_ERROR_KIND_NONE, "kind of NULL");
    CHECK(soulbox_error_errno(NULL) == 0, "errno of NULL");
    CHECK(strcmp(soulbox_error_message(NULL), "") == 0, "message of NULL");
    CHECK(soulbox_sandbox_id(NULL) == NULL, "id of NULL");
    CHECK(!soulbox_sandbox_is_running(NULL), "NULL is not running");
    CHECK(soulbox_command_pid(NULL) == 0, "pid of NULL");
    soulbox_error_free(NULL);
    soulbox_sandbox_free(NULL);
    soulbox_command_free(NULL);
    soulbox_output_free(NULL);
    soulbox_bytes_free(NULL);
    soulbox_options_free(NULL);
    soulbox_run_options_free(NULL);
    soulbox_chunk_free(NULL);
    soulbox_process_info_list_free(NULL);
    soulbox_entry_info_free(NULL);
    soulbox_entry_info_list_free(NULL);
    soulbox_copy_summary_free(NULL);
    soulbox_watcher_free(NULL);
    soulbox_filesystem_event_free(NULL);

    const int invalid = SOULBOX_ERROR_KIND_INVALID_ARGUMENT;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_create(NULL, NULL), invalid, "argument out is NULL");
    EXPECT_ERROR_ERRNO(soulbox_options_set_timeout_ms(NULL, 1), invalid, EINVAL);
    EXPECT_ERROR(soulbox_options_set_memory_limit(NULL, 1 << 30), invalid);
    EXPECT_ERROR(soulbox_run_options_set_stdin(NULL, true), invalid);
    EXPECT_ERROR(soulbox_sandbox_kill(NULL), invalid);
    EXPECT_ERROR(soulbox_sandbox_set_timeout_ms(NULL, 1), invalid);
    EXPECT_ERROR(soulbox_command_kill(NULL), invalid);
    EXPECT_ERROR(soulbox_command_close_stdin(NULL), invalid);
    EXPECT_ERROR(soulbox_command_send_stdin(NULL, NULL, 0), invalid);

    soulbox_output *output = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_run(NULL, "true", NULL, NULL, NULL, &output), invalid,
                         "argument sandbox is NULL");
    CHECK(output == NULL, "out is cleared even when the sandbox is NULL");
    EXPECT_ERROR(soulbox_command_wait(NULL, NULL, NULL, &output), invalid);
    bool flag = true;
    EXPECT_ERROR(soulbox_files_exists(NULL, "x", NULL, &flag), invalid);
    CHECK(!flag, "a failed exists stores false");
    flag = true;
    EXPECT_ERROR(soulbox_files_make_dir(NULL, "x", NULL, &flag), invalid);
    CHECK(!flag, "a failed make_dir stores false");
    flag = true;
    EXPECT_ERROR(soulbox_sandbox_pause(NULL, &flag), invalid);
    CHECK(!flag, "a failed pause stores false");

    soulbox_options *options = soulbox_options_new();
    EXPECT_ERROR_MESSAGE(soulbox_options_set_env(options, "A", NULL), invalid,
                         "argument value is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_options_set_template(options, NULL), invalid, "name");
    soulbox_options_free(options);

    soulbox_sandbox *sandbox = new_sandbox();
    EXPECT_ERROR_MESSAGE(soulbox_run(sandbox, NULL, NULL, NULL, NULL, &output), invalid,
                         "argument command_line is NULL");
    CHECK(output == NULL, "a failed run stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_run(sandbox, "true", NULL, NULL, NULL, NULL), invalid,
                         "argument out is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_exec(sandbox, NULL, NULL, NULL, NULL, &output), invalid,
                         "argument argv is NULL");
    soulbox_command *command = GARBAGE;
    EXPECT_ERROR(soulbox_command_start(sandbox, NULL, NULL, &command), invalid);
    CHECK(command == NULL, "a failed start stores NULL");
    EXPECT_ERROR(soulbox_command_start_argv(sandbox, NULL, NULL, &command), invalid);
    soulbox_bytes *bytes = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_files_read(sandbox, NULL, NULL, &bytes), invalid,
                         "argument path is NULL");
    CHECK(bytes == NULL, "a failed read stores NULL");
    EXPECT_ERROR(soulbox_files_read(sandbox, "x", NULL, NULL), invalid);
    EXPECT_ERROR_MESSAGE(soulbox_files_write(sandbox, "x", NULL, 5, NULL), invalid,
                         "argument data is NULL but its length is 5");
    EXPECT_ERROR_MESSAGE(soulbox_files_exists(sandbox, "x", NULL, NULL), invalid,
                         "argument exists is NULL");
    EXPECT_ERROR(soulbox_files_remove(sandbox, NULL, NULL), invalid);
    EXPECT_ERROR(soulbox_files_make_dir(sandbox, NULL, NULL, NULL), invalid);
    CHECK(soulbox_sandbox_is_running(sandbox), "the sandbox survives bad arguments");

    /* An array of length 0 is not read, so its pointer may be anything,
     * even one that is not aligned for its type. */
    soulbox_sandbox_info_list *sandboxes = GARBAGE;
    OK(soulbox_sandbox_list(GARBAGE, 0, SOULBOX_SANDBOX_STATE_ANY, &sandboxes));
    CHECK(sandboxes != NULL && sandboxes != GARBAGE, "list stored no list");
    soulbox_sandbox_info_list_free(sandboxes);
    OK(soulbox_files_write(sandbox, "empty", GARBAGE, 0, NULL));
    OK(soulbox_files_exists(sandbox, "empty", NULL, &flag));
    CHECK(flag, "an empty write created no file");
    soulbox_sandbox_free(sandbox);
}

static void case_kill_then_use(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "sleep 300", NULL, &command));
    OK(soulbox_sandbox_kill(sandbox));
    CHECK(!soulbox_sandbox_is_running(sandbox), "killed sandbox is not running");
    CHECK(soulbox_sandbox_id(sandbox) != NULL, "the id outlives the kill");
    OK(soulbox_sandbox_kill(sandbox)); /* a second kill does nothing */

    const int not_running = SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING;
    soulbox_output *output = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_run(sandbox, "true", NULL, NULL, NULL, &output), not_running,
                       ESRCH);
    CHECK(output == NULL, "a failed run stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_write(sandbox, "x", (const uint8_t *)"x", 1, NULL),
                         not_running, soulbox_sandbox_id(sandbox));
    soulbox_bytes *bytes = NULL;
    EXPECT_ERROR(soulbox_files_read(sandbox, "x", NULL, &bytes), not_running);
    EXPECT_ERROR(soulbox_sandbox_set_timeout_ms(sandbox, 1000), not_running);

    /* The command's handle stays valid and reports the sandbox's end. */
    EXPECT_ERROR(soulbox_command_wait(command, NULL, NULL, &output), not_running);
    EXPECT_ERROR(soulbox_command_wait(command, NULL, NULL, &output), not_running);
    EXPECT_ERROR(soulbox_command_kill(command), not_running);
    soulbox_command_free(command);
    soulbox_sandbox_free(sandbox);
}

static void case_kill_on_drop(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    char id[64];
    snprintf(id, sizeof id, "%s", soulbox_sandbox_id(sandbox));
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "sleep 300", NULL, &command));
    soulbox_sandbox_free(sandbox);
    soulbox_output *output = NULL;
    EXPECT_ERROR(soulbox_command_wait(command, NULL, NULL, &output),
                 SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING);
    soulbox_command_free(command);
    EXPECT_ERROR_ERRNO(soulbox_sandbox_connect(id, &sandbox), SOULBOX_ERROR_KIND_SANDBOX_NOT_FOUND,
                       ESRCH);
}

/* Returns a sandbox that outlives its handle for up to 120 s, and copies
 * its id to `id`, which has `id_size` bytes. */
static soulbox_sandbox *lasting_sandbox(char *id, size_t id_size) {
    soulbox_options *options = soulbox_options_new();
    OK(soulbox_options_set_timeout_ms(options, 120000));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options);
    snprintf(id, id_size, "%s", soulbox_sandbox_id(sandbox));
    return sandbox;
}

static void case_free_keeps_running(void) {
    char id[64];
    soulbox_sandbox *sandbox = lasting_sandbox(id, sizeof id);
    OK(soulbox_files_write(sandbox, "marker", (const uint8_t *)"kept", 4, NULL));
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "sleep 300", NULL, &command));
    soulbox_sandbox_free(sandbox);

    /* Without kill_on_drop the sandbox outlives its handle, and so does a
     * command started through it. */
    OK(soulbox_sandbox_connect(id, &sandbox));
    CHECK(strcmp(soulbox_sandbox_id(sandbox), id) == 0, "connected to %s, not %s",
          soulbox_sandbox_id(sandbox), id);
    soulbox_bytes *bytes = NULL;
    OK(soulbox_files_read(sandbox, "marker", NULL, &bytes));
    CHECK(strcmp((const char *)bytes->data, "kept") == 0, "marker %s", (const char *)bytes->data);
    soulbox_bytes_free(bytes);
    OK(soulbox_command_kill(command));
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(command, NULL, NULL, &output));
    CHECK(output->signal == SIGKILL, "the command ran on until killed: signal %d", output->signal);
    soulbox_output_free(output);
    soulbox_command_free(command);
    soulbox_sandbox_free(sandbox);

    bool was_running = false;
    OK(soulbox_sandbox_kill_id(id, &was_running));
    CHECK(was_running, "kill_id found the sandbox");
    OK(soulbox_sandbox_kill_id(id, &was_running));
    CHECK(!was_running, "a second kill_id finds nothing");
    OK(soulbox_sandbox_kill_id(id, NULL));
    sandbox = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_connect(id, &sandbox),
                         SOULBOX_ERROR_KIND_SANDBOX_NOT_FOUND, id);
    CHECK(sandbox == NULL, "a failed connect stores NULL");
}

static void case_pause_resume(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    bool changed = false;
    OK(soulbox_sandbox_pause(sandbox, &changed));
    CHECK(changed, "pause of a running sandbox");
    OK(soulbox_sandbox_pause(sandbox, &changed));
    CHECK(!changed, "a second pause reports the sandbox paused already");
    soulbox_sandbox_info *info = NULL;
    OK(soulbox_sandbox_get_info(sandbox, &info));
    CHECK(info->state == SOULBOX_SANDBOX_STATE_PAUSED, "state %u", (unsigned)info->state);
    CHECK(info->ends_at_ms == -1, "a paused sandbox has no end time: %lld",
          (long long)info->ends_at_ms);
    soulbox_sandbox_info_free(info);

    /* The file API works on a paused sandbox. */
    OK(soulbox_files_write(sandbox, "while-paused", (const uint8_t *)"x", 1, NULL));

    OK(soulbox_sandbox_resume(sandbox, &changed));
    CHECK(changed, "resume of a paused sandbox");
    OK(soulbox_sandbox_resume(sandbox, NULL));
    OK(soulbox_sandbox_get_info(sandbox, &info));
    CHECK(info->state == SOULBOX_SANDBOX_STATE_RUNNING, "state %u", (unsigned)info->state);
    soulbox_sandbox_info_free(info);
    soulbox_output *output = run(sandbox, "cat while-paused", NULL);
    CHECK(strcmp((const char *)output->stdout_data, "x") == 0, "the resumed sandbox runs");
    soulbox_output_free(output);
    soulbox_sandbox_free(sandbox);
}

static const char *find_value(const soulbox_key_value *pairs, size_t len, const char *key) {
    for (size_t i = 0; i < len; i++) {
        if (strcmp(pairs[i].key, key) == 0) return pairs[i].value;
    }
    return NULL;
}

static void case_info_and_list(void) {
    char label[64];
    snprintf(label, sizeof label, "%s", unique_label());
    soulbox_options *options = dying_options();
    OK(soulbox_options_set_metadata(options, "job", label));
    OK(soulbox_options_set_metadata(options, "owner", "c-tests"));
    OK(soulbox_options_set_env(options, "MODE", "test"));
    OK(soulbox_options_set_timeout_ms(options, 90000));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options);
    const char *id = soulbox_sandbox_id(sandbox);

    soulbox_sandbox_info *info = NULL;
    OK(soulbox_sandbox_get_info(sandbox, &info));
    CHECK(strcmp(info->sandbox_id, id) == 0, "info id %s", info->sandbox_id);
    CHECK(strcmp(info->template_name, "host") == 0, "template %s", info->template_name);
    CHECK(info->metadata_len == 2, "metadata entries %zu", info->metadata_len);
    const char *job = find_value(info->metadata, info->metadata_len, "job");
    CHECK(job != NULL && strcmp(job, label) == 0, "metadata job %s", job ? job : "(none)");
    CHECK(info->envs_len == 1, "envs entries %zu", info->envs_len);
    const char *mode = find_value(info->envs, info->envs_len, "MODE");
    CHECK(mode != NULL && strcmp(mode, "test") == 0, "env MODE %s", mode ? mode : "(none)");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long now_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    long long age = now_ms - (long long)info->started_at_ms;
    CHECK(age >= 0, "started %lld ms in the future", -age);
    CHECK(age < 60000, "started %lld ms ago", age);
    long long lifetime = (long long)(info->ends_at_ms - info->started_at_ms);
    CHECK(lifetime > 85000, "ends %lld ms after its start, expected about 90000", lifetime);
    CHECK(lifetime < 95000, "ends %lld ms after its start, expected about 90000", lifetime);
    CHECK(info->state == SOULBOX_SANDBOX_STATE_RUNNING, "state %u", (unsigned)info->state);
    CHECK(info->memory_limit == 2ULL << 30, "memory limit %llu",
          (unsigned long long)info->memory_limit);
    CHECK(info->cpu_limit == 0.0, "no CPU limit: %f", info->cpu_limit);
    CHECK(info->pid > 0, "pid %d", info->pid);
    soulbox_sandbox_info_free(info);

    soulbox_key_value filter[] = {{"job", label}, {"owner", "c-tests"}};
    soulbox_sandbox_info_list *list = NULL;
    OK(soulbox_sandbox_list(filter, 2, SOULBOX_SANDBOX_STATE_ANY, &list));
    CHECK(list->len == 1, "listed %zu sandboxes with job %s", list->len, label);
    CHECK(strcmp(list->items[0].sandbox_id, id) == 0, "listed %s", list->items[0].sandbox_id);
    CHECK(list->items[0].metadata_len == 2, "listed metadata entries %zu",
          list->items[0].metadata_len);
    soulbox_sandbox_info_list_free(list);

    OK(soulbox_sandbox_list(filter, 1, SOULBOX_SANDBOX_STATE_PAUSED, &list));
    CHECK(list->len == 0, "a running sandbox is listed as paused");
    CHECK(list->items == NULL, "an empty list has no items");
    soulbox_sandbox_info_list_free(list);

    soulbox_key_value other[] = {{"job", "no-such-job"}};
    OK(soulbox_sandbox_list(other, 1, SOULBOX_SANDBOX_STATE_ANY, &list));
    CHECK(list->len == 0, "listed %zu sandboxes for another job", list->len);
    soulbox_sandbox_info_list_free(list);

    /* Filtered by state too. A list without a metadata filter would also
     * query the sandboxes of every other test running on this host. */
    OK(soulbox_sandbox_list(filter, 1, SOULBOX_SANDBOX_STATE_RUNNING, &list));
    CHECK(list->len == 1, "listed %zu running sandboxes with job %s", list->len, label);
    soulbox_sandbox_info_list_free(list);

    list = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_list(NULL, 0, 7, &list),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "state 7");
    CHECK(list == NULL, "a failed list stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_list(NULL, 1, SOULBOX_SANDBOX_STATE_ANY, &list),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "metadata is NULL");
    soulbox_key_value missing_value[] = {{"job", NULL}};
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_list(missing_value, 1, SOULBOX_SANDBOX_STATE_ANY, &list),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "metadata[0].value");
    soulbox_sandbox_free(sandbox);
}

static void case_metrics(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_output *output = run(sandbox, "head -c 1000000 /dev/zero > filler", NULL);
    soulbox_output_free(output);
    soulbox_metrics *metrics = NULL;
    OK(soulbox_sandbox_metrics(sandbox, &metrics));
    CHECK(metrics->timestamp_ms > 0, "timestamp %lld", (long long)metrics->timestamp_ms);
    CHECK(metrics->cpu_count > 0.0, "cpu_count %f", metrics->cpu_count);
    CHECK(metrics->cpu_used_pct >= 0.0, "cpu_used_pct %f", metrics->cpu_used_pct);
    CHECK(metrics->mem_total == 2ULL << 30, "mem_total %llu",
          (unsigned long long)metrics->mem_total);
    CHECK(metrics->mem_used != SOULBOX_NONE, "mem_used is known with a memory limit");
    CHECK(metrics->mem_used > 0, "mem_used %llu", (unsigned long long)metrics->mem_used);
    CHECK(metrics->disk_total == 4ULL << 30, "disk_total %llu",
          (unsigned long long)metrics->disk_total);
    CHECK(metrics->disk_used >= 1000000, "disk_used %llu counts the 1 MB file",
          (unsigned long long)metrics->disk_used);
    soulbox_metrics_free(metrics);
    OK(soulbox_sandbox_kill(sandbox));
    metrics = GARBAGE;
    EXPECT_ERROR(soulbox_sandbox_metrics(sandbox, &metrics),
                 SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING);
    CHECK(metrics == NULL, "failed metrics store NULL");
    soulbox_sandbox_free(sandbox);
}

static void case_sandbox_timeout(void) {
    soulbox_options *options = dying_options();
    OK(soulbox_options_set_timeout_ms(options, 60000));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options);
    OK(soulbox_sandbox_set_timeout_ms(sandbox, 200));
    for (int i = 0; i < 300 && soulbox_sandbox_is_running(sandbox); i++) usleep(50 * 1000);
    CHECK(!soulbox_sandbox_is_running(sandbox), "the sandbox outlived its 200 ms timeout by 15 s");
    soulbox_output *output = NULL;
    EXPECT_ERROR(soulbox_run(sandbox, "true", NULL, NULL, NULL, &output),
                 SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING);
    soulbox_sandbox_free(sandbox);
}

static void case_pause_on_timeout(void) {
    soulbox_options *options = dying_options();
    EXPECT_ERROR(soulbox_options_set_lifecycle(options, "stop", false),
                 SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    EXPECT_ERROR(soulbox_options_set_lifecycle(options, "kill", true),
                 SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    EXPECT_ERROR(soulbox_options_set_lifecycle(options, NULL, false),
                 SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    OK(soulbox_options_set_lifecycle(options, "pause", true));
    OK(soulbox_options_set_timeout_ms(options, 1000));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options);

    soulbox_sandbox_info *info = NULL;
    bool paused = false;
    for (int i = 0; i < 120 && !paused; i++) {
        usleep(50 * 1000);
        OK(soulbox_sandbox_get_info(sandbox, &info));
        paused = info->state == SOULBOX_SANDBOX_STATE_PAUSED;
        soulbox_sandbox_info_free(info);
    }
    CHECK(paused, "not paused 5 s after its 1 s timeout");
    CHECK(soulbox_sandbox_is_running(sandbox), "the timeout ended a sandbox that pauses");

    /* With auto_resume, starting a command resumes the sandbox. */
    soulbox_output *output = run(sandbox, "echo awake", NULL);
    CHECK(strcmp((const char *)output->stdout_data, "awake\n") == 0, "stdout %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);
    OK(soulbox_sandbox_get_info(sandbox, &info));
    CHECK(info->state == SOULBOX_SANDBOX_STATE_RUNNING, "state %u", (unsigned)info->state);
    soulbox_sandbox_info_free(info);
    soulbox_sandbox_free(sandbox);
}

static void case_lifecycle_by_id(void) {
    soulbox_sandbox *sandbox = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_sandbox_connect("sb-0000000000000", &sandbox),
                       SOULBOX_ERROR_KIND_SANDBOX_NOT_FOUND, ESRCH);
    CHECK(sandbox == NULL, "a failed connect stores NULL");
    bool was_running = true;
    OK(soulbox_sandbox_kill_id("sb-0000000000000", &was_running));
    CHECK(!was_running, "kill_id of an unknown id finds nothing");
    EXPECT_ERROR(soulbox_sandbox_connect(NULL, &sandbox), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    EXPECT_ERROR(soulbox_sandbox_kill_id(NULL, NULL), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    EXPECT_ERROR(soulbox_sandbox_connect("sb-1", NULL), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
}

/* Collects what `soulbox_command_read` returns until the command ends or
 * `needle` appears in its stdout, for up to 30 s. Returns whether the
 * command ended. The last bytes of stdout stay in `stdout_text`. */
struct reading {
    char stdout_text[4096];
    size_t stdout_len;
    char stderr_text[1024];
    size_t stderr_len;
    int chunks;
    int bad_chunks;
};

static void keep_tail(char *buffer, size_t size, size_t *used, const uint8_t *data, size_t len) {
    if (len >= size) {
        data += len - (size - 1);
        len = size - 1;
    }
    if (*used + len >= size) {
        size_t drop = *used + len - (size - 1);
        memmove(buffer, buffer + drop, *used - drop);
        *used -= drop;
    }
    memcpy(buffer + *used, data, len);
    *used += len;
    buffer[*used] = '\0';
}

static bool read_output(soulbox_command *command, struct reading *r, const char *needle) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (seconds_since(&start) < 30.0) {
        soulbox_chunk *chunk = GARBAGE;
        bool ended = true;
        OK(soulbox_command_read(command, 1000, &ended, &chunk));
        if (ended) {
            CHECK(chunk == NULL, "the end comes with no chunk");
            return true;
        }
        if (chunk == NULL) continue;
        r->chunks++;
        if (chunk->len == 0 || chunk->data == NULL || chunk->data[chunk->len] != '\0') {
            r->bad_chunks++;
        }
        if (chunk->stream == SOULBOX_STREAM_STDOUT) {
            keep_tail(r->stdout_text, sizeof r->stdout_text, &r->stdout_len, chunk->data,
                      chunk->len);
        } else if (chunk->stream == SOULBOX_STREAM_STDERR) {
            keep_tail(r->stderr_text, sizeof r->stderr_text, &r->stderr_len, chunk->data,
                      chunk->len);
        } else {
            r->bad_chunks++;
        }
        soulbox_chunk_free(chunk);
        if (needle != NULL && strstr(r->stdout_text, needle) != NULL) return false;
    }
    fail(__FILE__, __LINE__, "no end%s%s within 30 s; stdout so far: %s",
         needle ? " and no " : "", needle ? needle : "", r->stdout_text);
    return false;
}

static void case_command_read(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "echo out; echo err >&2; sleep 0.3; echo late; exit 3",
                             NULL, &command));
    struct reading r = {0};
    CHECK(read_output(command, &r, NULL), "read returned before the end");
    CHECK(r.bad_chunks == 0, "%d chunks were empty, unterminated or of no stream", r.bad_chunks);
    CHECK(strcmp(r.stdout_text, "out\nlate\n") == 0, "stdout read: %s", r.stdout_text);
    CHECK(strcmp(r.stderr_text, "err\n") == 0, "stderr read: %s", r.stderr_text);

    /* After the end, a read reports it at once and a wait returns the exit
     * with no output: the reads took it. */
    soulbox_chunk *chunk = GARBAGE;
    bool ended = false;
    OK(soulbox_command_read(command, -1, &ended, &chunk));
    CHECK(ended, "a read after the end reports the end");
    CHECK(chunk == NULL, "a read after the end stores no chunk");
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(command, NULL, NULL, &output));
    CHECK(output->exit_code == 3, "exit code %d", output->exit_code);
    CHECK(output->stdout_len == 0, "the wait repeated %zu bytes the reads took",
          output->stdout_len);
    soulbox_output_free(output);
    soulbox_command_free(command);

    /* A read times out when there is no output. */
    OK(soulbox_command_start(sandbox, "sleep 300", NULL, &command));
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    ended = true;
    chunk = GARBAGE;
    OK(soulbox_command_read(command, 300, &ended, &chunk));
    double elapsed = seconds_since(&start);
    CHECK(chunk == NULL, "a timed-out read stores no chunk");
    CHECK(!ended, "a timed-out read does not report the end");
    CHECK(elapsed >= 0.25, "a 300 ms read returned after %.3f s", elapsed);
    CHECK(elapsed < 10.0, "a 300 ms read returned after %.1f s", elapsed);
    OK(soulbox_command_read(command, 0, &ended, &chunk));
    CHECK(chunk == NULL, "a 0 ms read of a quiet command stores no chunk");
    CHECK(!ended, "a 0 ms read of a quiet command does not report the end");

    /* After a kill, reads reach the end. */
    OK(soulbox_command_kill(command));
    r = (struct reading){0};
    CHECK(read_output(command, &r, NULL), "the killed command did not end");
    OK(soulbox_command_wait(command, NULL, NULL, &output));
    CHECK(output->signal == SIGKILL, "signal after kill %d", output->signal);
    soulbox_output_free(output);

    const int invalid = SOULBOX_ERROR_KIND_INVALID_ARGUMENT;
    EXPECT_ERROR_MESSAGE(soulbox_command_read(NULL, 0, &ended, &chunk), invalid,
                         "argument command is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_command_read(command, 0, NULL, &chunk), invalid,
                         "argument ended is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_command_read(command, 0, &ended, NULL), invalid,
                         "argument out is NULL");
    soulbox_command_free(command);
    soulbox_sandbox_free(sandbox);
}

/* Returns whether SIGPIPE is blocked in the calling thread. */
static bool sigpipe_blocked(void) {
    sigset_t mask;
    CHECK(pthread_sigmask(SIG_BLOCK, NULL, &mask) == 0, "pthread_sigmask");
    return sigismember(&mask, SIGPIPE) == 1;
}

static void case_stdin_closed_pipe(void) {
    /* SIGPIPE keeps its default action, which ends the process, as in most
     * C programs. A write to a pipe that nothing reads must come back as an
     * error instead. */
    CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR, "signal: %s", strerror(errno));
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_run_options *options = soulbox_run_options_new();
    OK(soulbox_run_options_set_stdin(options, true));
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "exec 0<&-; echo closed; sleep 300", options, &command));
    struct reading r = {0};
    CHECK(!read_output(command, &r, "closed\n"), "the command ended early: %s", r.stdout_text);
    EXPECT_ERROR_MESSAGE(soulbox_command_send_stdin(command, (const uint8_t *)"x\n", 2),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "closed its stdin or exited");
    CHECK(!sigpipe_blocked(), "the call left SIGPIPE blocked in the caller's thread");
    sigset_t pending;
    CHECK(sigpending(&pending) == 0, "sigpending");
    CHECK(sigismember(&pending, SIGPIPE) == 0, "the call left a SIGPIPE pending");
    OK(soulbox_command_kill(command));
    soulbox_command_free(command);

    /* The sandbox's end closes the pipe of a command that reads it, and the
     * error names the end. */
    OK(soulbox_command_start(sandbox, "cat", options, &command));
    OK(soulbox_sandbox_kill(sandbox));
    EXPECT_ERROR(soulbox_command_send_stdin(command, (const uint8_t *)"x\n", 2),
                 SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING);
    soulbox_command_free(command);
    soulbox_run_options_free(options);
    soulbox_sandbox_free(sandbox);
}

/* Types `line` into the PTY session and reads until `needle` appears. */
static void type_and_expect(soulbox_command *pty, const char *line, const char *needle) {
    OK(soulbox_command_send_stdin(pty, (const uint8_t *)line, strlen(line)));
    struct reading r = {0};
    bool ended = read_output(pty, &r, needle);
    CHECK(!ended, "the PTY session ended before printing %s: %s", needle, r.stdout_text);
    CHECK(r.bad_chunks == 0, "%d chunks were empty, unterminated or of no stream", r.bad_chunks);
    CHECK(r.stderr_len == 0, "a PTY session wrote to stderr: %s", r.stderr_text);
}

static void case_pty_session(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_command *pty = NULL;
    OK(soulbox_pty_create(sandbox, 24, 80, NULL, &pty));
    CHECK(pty != NULL, "pty_create stored no handle");
    CHECK(soulbox_command_pid(pty) > 0, "pid %u", soulbox_command_pid(pty));
    /* The terminal echoes the typed line, which contains "size:" but never
     * "size:" followed by digits. */
    type_and_expect(pty, "stty size | sed 's/^/size:/'\n", "size:24 80");
    type_and_expect(pty, "echo term=$TERM tty=$(tty)\n", "term=xterm-256color tty=/dev/pts/");
    OK(soulbox_command_resize(pty, 30, 100));
    type_and_expect(pty, "stty size | sed 's/^/size:/'\n", "size:30 100");

    OK(soulbox_command_send_stdin(pty, (const uint8_t *)"exit 7\n", 7));
    struct reading r = {0};
    CHECK(read_output(pty, &r, NULL), "the shell did not end after exit");
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(pty, NULL, NULL, &output));
    CHECK(output->exit_code == 7, "shell exit code %d", output->exit_code);
    soulbox_output_free(output);
    soulbox_command_free(pty);

    /* Run options apply to the shell. */
    soulbox_run_options *options = soulbox_run_options_new();
    OK(soulbox_run_options_set_env(options, "PTY_VAR", "hello"));
    OK(soulbox_run_options_set_cwd(options, "/tmp"));
    OK(soulbox_run_options_set_user(options, "root"));
    OK(soulbox_pty_create(sandbox, 10, 40, options, &pty));
    soulbox_run_options_free(options);
    type_and_expect(pty, "echo v=$PTY_VAR d=$PWD u=$(id -u)\n", "v=hello d=/tmp u=0");
    OK(soulbox_command_kill(pty));
    OK(soulbox_command_wait(pty, NULL, NULL, &output));
    CHECK(output->signal == SIGKILL, "signal after kill %d", output->signal);
    soulbox_output_free(output);
    soulbox_command_free(pty);

    const int invalid = SOULBOX_ERROR_KIND_INVALID_ARGUMENT;
    pty = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_pty_create(sandbox, 0, 80, NULL, &pty), invalid, "0x80");
    CHECK(pty == NULL, "a failed pty_create stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_pty_create(NULL, 24, 80, NULL, &pty), invalid,
                         "argument sandbox is NULL");
    soulbox_command *plain = NULL;
    OK(soulbox_command_start(sandbox, "sleep 300", NULL, &plain));
    EXPECT_ERROR_MESSAGE(soulbox_command_resize(plain, 24, 80), invalid, "no PTY");
    OK(soulbox_command_kill(plain));
    soulbox_command_free(plain);
    EXPECT_ERROR_MESSAGE(soulbox_command_resize(NULL, 24, 80), invalid,
                         "argument command is NULL");
    soulbox_sandbox_free(sandbox);
}

static const soulbox_process_info *find_process(const soulbox_process_info_list *list,
                                                uint32_t pid) {
    for (size_t i = 0; i < list->len; i++) {
        if (list->items[i].pid == pid) return &list->items[i];
    }
    return NULL;
}

static void case_commands_list_connect(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_run_options *options = soulbox_run_options_new();
    OK(soulbox_run_options_set_stdin(options, true));
    OK(soulbox_run_options_set_tag(options, "reader"));
    OK(soulbox_run_options_set_env(options, "LIST_VAR", "one"));
    OK(soulbox_run_options_set_cwd(options, "/tmp"));
    const char *line = "read line; echo got $line; sleep 300";
    soulbox_command *reader = NULL;
    OK(soulbox_command_start(sandbox, line, options, &reader));
    const char *argv[] = {"sleep", "301", NULL};
    soulbox_command *sleeper = NULL;
    OK(soulbox_command_start_argv(sandbox, argv, NULL, &sleeper));

    soulbox_process_info_list *list = NULL;
    OK(soulbox_commands_list(sandbox, &list));
    CHECK(list->len == 2, "listed %zu commands", list->len);
    CHECK(list->items[0].pid < list->items[1].pid, "the list is ordered by pid");
    const soulbox_process_info *info = find_process(list, soulbox_command_pid(reader));
    CHECK(info != NULL, "the reader is listed");
    CHECK(info->tag != NULL, "the tagged command has no tag");
    CHECK(strcmp(info->tag, "reader") == 0, "tag %s", info->tag);
    CHECK(strcmp(info->cmd, "/bin/bash") == 0, "cmd %s", info->cmd);
    CHECK(info->args_len >= 1, "args %zu", info->args_len);
    CHECK(strcmp(info->args[info->args_len - 1], line) == 0, "last argument %s",
          info->args[info->args_len - 1]);
    CHECK(info->envs_len == 1, "envs %zu", info->envs_len);
    CHECK(strcmp(info->envs[0].key, "LIST_VAR") == 0, "env name %s", info->envs[0].key);
    CHECK(strcmp(info->envs[0].value, "one") == 0, "env value %s", info->envs[0].value);
    CHECK(strcmp(info->cwd, "/tmp") == 0, "cwd %s", info->cwd);
    info = find_process(list, soulbox_command_pid(sleeper));
    CHECK(info != NULL, "the sleeper is listed");
    CHECK(info->tag == NULL, "an untagged command has tag %s", info->tag);
    CHECK(strcmp(info->cmd, "sleep") == 0, "cmd %s", info->cmd);
    CHECK(info->args_len == 1, "args %zu", info->args_len);
    CHECK(strcmp(info->args[0], "301") == 0, "argument %s", info->args[0]);
    CHECK(info->envs_len == 0, "envs %zu", info->envs_len);
    CHECK(info->envs == NULL, "no envs, but envs is not NULL");
    CHECK(strcmp(info->cwd, "/home/user") == 0, "cwd %s", info->cwd);
    soulbox_process_info_list_free(list);

    /* A handle attached by pid writes to the command and reads what it
     * prints from then on. */
    soulbox_command *attached = NULL;
    OK(soulbox_commands_connect(sandbox, soulbox_command_pid(reader), &attached));
    CHECK(soulbox_command_pid(attached) == soulbox_command_pid(reader), "attached pid %u",
          soulbox_command_pid(attached));
    OK(soulbox_command_send_stdin(attached, (const uint8_t *)"hi\n", 3));
    struct reading r = {0};
    CHECK(!read_output(attached, &r, "got hi\n"), "the command ended early: %s",
          r.stdout_text);

    soulbox_command *by_tag = NULL;
    OK(soulbox_commands_connect_tag(sandbox, "reader", &by_tag));
    CHECK(soulbox_command_pid(by_tag) == soulbox_command_pid(reader), "pid by tag %u",
          soulbox_command_pid(by_tag));
    soulbox_command_free(by_tag);

    /* Tags are unique among running commands. */
    soulbox_command *duplicate = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_command_start(sandbox, "true", options, &duplicate),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "reader");
    CHECK(duplicate == NULL, "a failed start stores NULL");
    soulbox_run_options_free(options);

    /* The kill through the attached handle ends the command for both. */
    OK(soulbox_command_kill(attached));
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(attached, NULL, NULL, &output));
    CHECK(output->signal == SIGKILL, "attached handle: signal %d", output->signal);
    soulbox_output_free(output);
    OK(soulbox_command_wait(reader, NULL, NULL, &output));
    CHECK(output->signal == SIGKILL, "first handle: signal %d", output->signal);
    CHECK(strcmp((const char *)output->stdout_data, "got hi\n") == 0, "first handle read %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);
    soulbox_command_free(attached);

    /* An ended command leaves the list. */
    OK(soulbox_commands_list(sandbox, &list));
    CHECK(list->len == 1, "listed %zu commands after one ended", list->len);
    CHECK(list->items[0].pid == soulbox_command_pid(sleeper), "the sleeper is left");
    soulbox_process_info_list_free(list);

    attached = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_commands_connect(sandbox, soulbox_command_pid(reader), &attached),
                       SOULBOX_ERROR_KIND_NOT_FOUND, ENOENT);
    CHECK(attached == NULL, "a failed connect stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_commands_connect_tag(sandbox, "reader", &attached),
                         SOULBOX_ERROR_KIND_NOT_FOUND, "reader");
    EXPECT_ERROR_MESSAGE(soulbox_commands_connect_tag(sandbox, NULL, &attached),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument tag is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_commands_list(sandbox, NULL),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument out is NULL");
    OK(soulbox_command_kill(sleeper));
    soulbox_command_free(sleeper);
    soulbox_command_free(reader);
    soulbox_sandbox_free(sandbox);
}

static void case_commands_connect_other_handle(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_run_options *options = soulbox_run_options_new();
    OK(soulbox_run_options_set_tag(options, "worker"));
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "sleep 300", options, &command));
    soulbox_run_options_free(options);
    uint32_t pid = soulbox_command_pid(command);

    /* Another handle of the same sandbox lists and reaches only the commands
     * started through it, and the error names the C call that lists them. */
    soulbox_sandbox *other = NULL;
    OK(soulbox_sandbox_connect(soulbox_sandbox_id(sandbox), &other));
    soulbox_process_info_list *list = NULL;
    OK(soulbox_commands_list(other, &list));
    CHECK(list->len == 0, "the other handle lists %zu commands", list->len);
    soulbox_process_info_list_free(list);
    soulbox_command *attached = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_commands_connect(other, pid, &attached),
                       SOULBOX_ERROR_KIND_NOT_FOUND, ENOENT);
    CHECK(attached == NULL, "a failed connect stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_commands_connect(other, pid, &attached),
                         SOULBOX_ERROR_KIND_NOT_FOUND, "soulbox_commands_list");
    EXPECT_ERROR_MESSAGE(soulbox_commands_connect(other, pid, &attached),
                         SOULBOX_ERROR_KIND_NOT_FOUND, soulbox_sandbox_id(sandbox));
    EXPECT_ERROR_MESSAGE(soulbox_commands_connect_tag(other, "worker", &attached),
                         SOULBOX_ERROR_KIND_NOT_FOUND, "tag \"worker\"");
    soulbox_sandbox_free(other);

    /* The handle that started it reaches it. */
    OK(soulbox_commands_connect(sandbox, pid, &attached));
    CHECK(soulbox_command_pid(attached) == pid, "attached pid %u", soulbox_command_pid(attached));
    soulbox_command_free(attached);
    OK(soulbox_command_kill(command));
    soulbox_command_free(command);
    soulbox_sandbox_free(sandbox);
}

static const soulbox_entry_info *find_entry(const soulbox_entry_info_list *list,
                                            const char *path) {
    for (size_t i = 0; i < list->len; i++) {
        if (strcmp(list->items[i].path, path) == 0) return &list->items[i];
    }
    return NULL;
}

static long long now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void case_files_list_and_stat(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    OK(soulbox_files_write(sandbox, "tree/a.txt", (const uint8_t *)"hello", 5, NULL));
    OK(soulbox_files_write(sandbox, "tree/sub/b.txt", (const uint8_t *)"xy", 2, NULL));
    OK(soulbox_files_make_dir(sandbox, "tree/sub/deeper", NULL, NULL));
    soulbox_output *output = run(sandbox, "chmod 4751 tree/a.txt && ln -s a.txt tree/link", NULL);
    CHECK(output->exit_code == 0, "setup failed: %s", (const char *)output->stderr_data);
    soulbox_output_free(output);

    soulbox_entry_info_list *list = NULL;
    OK(soulbox_files_list(sandbox, "tree", 1, NULL, &list));
    CHECK(list->len == 3, "depth 1 listed %zu entries", list->len);
    const soulbox_entry_info *a = &list->items[0];
    CHECK(strcmp(a->path, "/home/user/tree/a.txt") == 0, "first path %s", a->path);
    CHECK(strcmp(a->name, "a.txt") == 0, "name %s", a->name);
    CHECK(a->kind == SOULBOX_FILE_TYPE_FILE, "kind %u", (unsigned)a->kind);
    CHECK(a->size == 5, "size %llu", (unsigned long long)a->size);
    CHECK(a->mode == 04751, "mode %o", a->mode);
    CHECK(strcmp(a->permissions, "rwsr-x--x") == 0, "permissions %s", a->permissions);
    CHECK(strcmp(a->owner, "user") == 0, "owner %s", a->owner);
    CHECK(strcmp(a->group, "user") == 0, "group %s", a->group);
    CHECK(a->symlink_target == NULL, "a file has no symlink target");
    long long age = now_ms() - (long long)a->modified_ms;
    CHECK(age >= -5000, "modified %lld ms in the future", -age);
    CHECK(age < 60000, "modified %lld ms ago", age);
    const soulbox_entry_info *link = &list->items[1];
    CHECK(strcmp(link->path, "/home/user/tree/link") == 0, "second path %s", link->path);
    CHECK(link->kind == SOULBOX_FILE_TYPE_SYMLINK, "link kind %u", (unsigned)link->kind);
    CHECK(link->symlink_target != NULL, "a symlink has a target");
    CHECK(strcmp(link->symlink_target, "a.txt") == 0, "link target %s", link->symlink_target);
    CHECK(link->size == 5, "a symlink's size is its target's length: %llu",
          (unsigned long long)link->size);
    const soulbox_entry_info *sub = &list->items[2];
    CHECK(strcmp(sub->path, "/home/user/tree/sub") == 0, "third path %s", sub->path);
    CHECK(sub->kind == SOULBOX_FILE_TYPE_DIR, "sub kind %u", (unsigned)sub->kind);
    soulbox_entry_info_list_free(list);

    OK(soulbox_files_list(sandbox, "/home/user/tree", 2, NULL, &list));
    CHECK(list->len == 5, "depth 2 listed %zu entries", list->len);
    const soulbox_entry_info *b = find_entry(list, "/home/user/tree/sub/b.txt");
    CHECK(b != NULL, "depth 2 lists sub/b.txt");
    CHECK(b->size == 2, "b.txt size %llu", (unsigned long long)b->size);
    const soulbox_entry_info *deeper = find_entry(list, "/home/user/tree/sub/deeper");
    CHECK(deeper != NULL, "depth 2 lists sub/deeper");
    CHECK(deeper->kind == SOULBOX_FILE_TYPE_DIR, "sub/deeper kind %u", (unsigned)deeper->kind);
    for (size_t i = 1; i < list->len; i++) {
        CHECK(strcmp(list->items[i - 1].path, list->items[i].path) < 0, "sorted by path");
    }
    soulbox_entry_info_list_free(list);

    OK(soulbox_files_list(sandbox, "tree/sub/deeper", 1, NULL, &list));
    CHECK(list->len == 0, "an empty directory listed %zu entries", list->len);
    CHECK(list->items == NULL, "an empty list has no items");
    soulbox_entry_info_list_free(list);

    soulbox_entry_info *info = NULL;
    OK(soulbox_files_stat(sandbox, "tree/sub", NULL, &info));
    CHECK(strcmp(info->name, "sub") == 0, "stat name %s", info->name);
    CHECK(strcmp(info->path, "/home/user/tree/sub") == 0, "stat path %s", info->path);
    CHECK(info->kind == SOULBOX_FILE_TYPE_DIR, "stat kind %u", (unsigned)info->kind);
    CHECK(strcmp(info->permissions, "rwxr-xr-x") == 0, "new directory permissions %s",
          info->permissions);
    soulbox_entry_info_free(info);
    OK(soulbox_files_stat(sandbox, "tree/link", NULL, &info));
    CHECK(info->kind == SOULBOX_FILE_TYPE_SYMLINK, "stat does not follow a symlink");
    soulbox_entry_info_free(info);
    OK(soulbox_files_stat(sandbox, "/", NULL, &info));
    CHECK(strcmp(info->name, "/") == 0, "the root's name %s", info->name);
    CHECK(strcmp(info->owner, "root") == 0, "the root's owner %s", info->owner);
    soulbox_entry_info_free(info);

    const int invalid = SOULBOX_ERROR_KIND_INVALID_ARGUMENT;
    list = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_files_list(sandbox, "tree", 0, NULL, &list), invalid, "depth");
    CHECK(list == NULL, "a failed list stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_list(sandbox, "tree/a.txt", 1, NULL, &list), invalid,
                         "not a directory");
    EXPECT_ERROR_ERRNO(soulbox_files_list(sandbox, "no/such/dir", 1, NULL, &list),
                       SOULBOX_ERROR_KIND_FILE_NOT_FOUND, ENOENT);
    info = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_files_stat(sandbox, "tree/missing", NULL, &info),
                       SOULBOX_ERROR_KIND_FILE_NOT_FOUND, ENOENT);
    CHECK(info == NULL, "a failed stat stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_stat(sandbox, NULL, NULL, &info), invalid,
                         "argument path is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_stat(sandbox, "tree/\xff", NULL, &info), invalid,
                         "argument path is not valid UTF-8");
    EXPECT_ERROR_MESSAGE(soulbox_files_list(sandbox, "tree", 1, "nobody", &list), invalid,
                         "nobody");
    soulbox_sandbox_free(sandbox);
}

static void case_files_rename(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    OK(soulbox_files_write(sandbox, "old.txt", (const uint8_t *)"data", 4, NULL));
    soulbox_entry_info *info = NULL;
    OK(soulbox_files_rename(sandbox, "old.txt", "/home/user/new.txt", NULL, &info));
    CHECK(strcmp(info->path, "/home/user/new.txt") == 0, "renamed path %s", info->path);
    CHECK(strcmp(info->name, "new.txt") == 0, "renamed name %s", info->name);
    CHECK(info->kind == SOULBOX_FILE_TYPE_FILE, "renamed kind %u", (unsigned)info->kind);
    CHECK(info->size == 4, "renamed size %llu", (unsigned long long)info->size);
    soulbox_entry_info_free(info);
    bool flag = true;
    OK(soulbox_files_exists(sandbox, "old.txt", NULL, &flag));
    CHECK(!flag, "the old name is gone");
    soulbox_bytes *bytes = NULL;
    OK(soulbox_files_read(sandbox, "new.txt", NULL, &bytes));
    CHECK(strcmp((const char *)bytes->data, "data") == 0, "renamed file holds %s",
          (const char *)bytes->data);
    soulbox_bytes_free(bytes);

    /* out may be NULL; a directory moves with its contents. */
    OK(soulbox_files_write(sandbox, "dir/inner", (const uint8_t *)"in", 2, NULL));
    OK(soulbox_files_rename(sandbox, "dir", "moved", NULL, NULL));
    OK(soulbox_files_exists(sandbox, "moved/inner", NULL, &flag));
    CHECK(flag, "the directory moved with its contents");

    info = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_files_rename(sandbox, "missing", "other", NULL, &info),
                       SOULBOX_ERROR_KIND_FILE_NOT_FOUND, ENOENT);
    CHECK(info == NULL, "a failed rename stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_rename(sandbox, "new.txt", "/tmp/new.txt", NULL, &info),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "different mounts");
    EXPECT_ERROR(soulbox_files_rename(sandbox, "new.txt", "/etc/new.txt", NULL, &info),
                 SOULBOX_ERROR_KIND_PERMISSION_DENIED);
    OK(soulbox_files_rename(sandbox, "new.txt", "/etc/new.txt", "root", NULL));
    EXPECT_ERROR_MESSAGE(soulbox_files_rename(sandbox, "moved", NULL, NULL, &info),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument to is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_rename(sandbox, NULL, "x", NULL, &info),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument from is NULL");
    soulbox_sandbox_free(sandbox);
}

/* Reads events of `watcher` for up to 20 s until one has `name` and
 * `kind`, and returns whether it came. The names of all events read are
 * appended to `seen`, each followed by a newline. */
static bool await_event(soulbox_watcher *watcher, const char *name,
                        soulbox_filesystem_event_kind kind, char *seen, size_t seen_size) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (seconds_since(&start) < 20.0) {
        soulbox_filesystem_event *event = GARBAGE;
        bool ended = true;
        OK(soulbox_watcher_next(watcher, 1000, &ended, &event));
        CHECK(!ended, "the watch ended while waiting for %s", name);
        if (event == NULL) continue;
        size_t used = strlen(seen);
        snprintf(seen + used, seen_size - used, "%s\n", event->name);
        bool match = strcmp(event->name, name) == 0 && event->kind == kind;
        soulbox_filesystem_event_free(event);
        if (match) return true;
    }
    return false;
}

/* Reads events until the watch reports its end, for up to 20 s, and
 * returns whether it did. */
static bool await_watch_end(soulbox_watcher *watcher) {
    for (int i = 0; i < 1000; i++) {
        soulbox_filesystem_event *event = GARBAGE;
        bool ended = false;
        OK(soulbox_watcher_next(watcher, 20000, &ended, &event));
        if (ended) return event == NULL;
        if (event == NULL) return false;
        soulbox_filesystem_event_free(event);
    }
    return false;
}

struct watch_waiter {
    soulbox_watcher *watcher;
    soulbox_error *error;
    bool ended;
    soulbox_filesystem_event *event;
};

static void *next_in_thread(void *arg) {
    struct watch_waiter *w = arg;
    w->error = soulbox_watcher_next(w->watcher, -1, &w->ended, &w->event);
    return NULL;
}

static void case_files_watch(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    OK(soulbox_files_make_dir(sandbox, "watched/sub", NULL, NULL));
    soulbox_watcher *watcher = NULL;
    OK(soulbox_files_watch_dir(sandbox, "watched", false, NULL, &watcher));
    CHECK(watcher != NULL, "watch_dir stored no watcher");
    soulbox_filesystem_event *event = GARBAGE;
    bool ended = true;
    OK(soulbox_watcher_next(watcher, 0, &ended, &event));
    CHECK(event == NULL, "an unchanged directory has no event");
    CHECK(!ended, "a running watch has not ended");

    char seen[4096] = "";
    OK(soulbox_files_write(sandbox, "watched/new.txt", (const uint8_t *)"x", 1, NULL));
    CHECK(await_event(watcher, "new.txt", SOULBOX_FILESYSTEM_EVENT_KIND_CREATE, seen, sizeof seen),
          "no CREATE event for new.txt; events: %s", seen);
    soulbox_output *output = run(sandbox, "mv watched/new.txt watched/moved.txt", NULL);
    soulbox_output_free(output);
    CHECK(await_event(watcher, "new.txt", SOULBOX_FILESYSTEM_EVENT_KIND_RENAME, seen, sizeof seen),
          "no RENAME event for new.txt; events: %s", seen);
    CHECK(await_event(watcher, "moved.txt", SOULBOX_FILESYSTEM_EVENT_KIND_CREATE, seen,
                      sizeof seen),
          "no CREATE event for moved.txt; events: %s", seen);
    OK(soulbox_files_remove(sandbox, "watched/moved.txt", NULL));
    CHECK(await_event(watcher, "moved.txt", SOULBOX_FILESYSTEM_EVENT_KIND_REMOVE, seen,
                      sizeof seen),
          "no REMOVE event for moved.txt; events: %s", seen);

    /* Without recursion, changes inside sub are not reported. */
    seen[0] = '\0';
    OK(soulbox_files_write(sandbox, "watched/sub/inner.txt", (const uint8_t *)"x", 1, NULL));
    OK(soulbox_files_write(sandbox, "watched/marker", (const uint8_t *)"x", 1, NULL));
    CHECK(await_event(watcher, "marker", SOULBOX_FILESYSTEM_EVENT_KIND_CREATE, seen, sizeof seen),
          "no CREATE event for marker; events: %s", seen);
    CHECK(strstr(seen, "inner.txt") == NULL, "a watch without recursion saw: %s", seen);

    /* After a stop, the queued events are still returned, then the end. */
    OK(soulbox_files_write(sandbox, "watched/last", (const uint8_t *)"x", 1, NULL));
    OK(soulbox_watcher_stop(watcher));
    OK(soulbox_watcher_stop(watcher));
    CHECK(await_watch_end(watcher), "the stopped watch did not end");
    OK(soulbox_watcher_next(watcher, -1, &ended, &event));
    CHECK(ended, "a read after the end reports the end at once");
    CHECK(event == NULL, "a read after the end stores no event");
    soulbox_watcher_free(watcher);

    /* A recursive watch reports the entries of new subdirectories. */
    OK(soulbox_files_watch_dir(sandbox, "watched", true, NULL, &watcher));
    seen[0] = '\0';
    OK(soulbox_files_write(sandbox, "watched/sub/deep/file.txt", (const uint8_t *)"x", 1, NULL));
    CHECK(await_event(watcher, "sub/deep/file.txt", SOULBOX_FILESYSTEM_EVENT_KIND_CREATE, seen,
                      sizeof seen),
          "no CREATE event for sub/deep/file.txt; events: %s", seen);

    /* A stop from another thread ends a next that waits without limit.
     * First read what is queued, such as the WRITE of file.txt. */
    for (bool queued = true; queued;) {
        OK(soulbox_watcher_next(watcher, 500, &ended, &event));
        CHECK(!ended, "the watch ended before the stop");
        queued = event != NULL;
        soulbox_filesystem_event_free(event);
    }
    struct watch_waiter w = {.watcher = watcher};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, next_in_thread, &w) == 0, "pthread_create");
    usleep(200 * 1000);
    OK(soulbox_watcher_stop(watcher));
    CHECK(pthread_join(thread, NULL) == 0, "pthread_join");
    OK(w.error);
    CHECK(w.ended, "the waiting next did not report the end after the stop");
    CHECK(w.event == NULL, "the waiting next returned an event: %s", w.event->name);
    soulbox_watcher_free(watcher);

    /* The sandbox's end is the last error, then the end. */
    OK(soulbox_files_watch_dir(sandbox, "watched", false, NULL, &watcher));
    OK(soulbox_sandbox_kill(sandbox));
    soulbox_error *error = NULL;
    for (int i = 0; i < 20 && error == NULL; i++) {
        event = NULL;
        error = soulbox_watcher_next(watcher, 20000, &ended, &event);
        CHECK(error != NULL || !ended, "the watch ended without an error");
        soulbox_filesystem_event_free(event);
    }
    EXPECT_ERROR(error, SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING);
    CHECK(await_watch_end(watcher), "the watch did not end with the sandbox");
    soulbox_watcher_free(watcher);

    const int invalid = SOULBOX_ERROR_KIND_INVALID_ARGUMENT;
    EXPECT_ERROR_MESSAGE(soulbox_watcher_next(NULL, 0, &ended, &event), invalid,
                         "argument watcher is NULL");
    EXPECT_ERROR(soulbox_watcher_stop(NULL), invalid);
    soulbox_sandbox_free(sandbox);

    sandbox = new_sandbox();
    OK(soulbox_files_write(sandbox, "plain.txt", (const uint8_t *)"x", 1, NULL));
    watcher = GARBAGE;
    EXPECT_ERROR_ERRNO(soulbox_files_watch_dir(sandbox, "no/such/dir", false, NULL, &watcher),
                       SOULBOX_ERROR_KIND_FILE_NOT_FOUND, ENOENT);
    CHECK(watcher == NULL, "a failed watch_dir stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_watch_dir(sandbox, "plain.txt", false, NULL, &watcher),
                         invalid, "not a directory");
    EXPECT_ERROR_MESSAGE(soulbox_files_watch_dir(sandbox, NULL, false, NULL, &watcher), invalid,
                         "argument path is NULL");
    OK(soulbox_files_watch_dir(sandbox, ".", false, NULL, &watcher));
    EXPECT_ERROR_MESSAGE(soulbox_watcher_next(watcher, 0, NULL, &event), invalid,
                         "argument ended is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_watcher_next(watcher, 0, &ended, NULL), invalid,
                         "argument out is NULL");
    soulbox_watcher_free(watcher);
    soulbox_sandbox_free(sandbox);
}

/* Reads events of `watcher` for up to 20 s until an error comes, and
 * returns it. The names of the events read are appended to `seen`. */
static soulbox_error *await_watch_error(soulbox_watcher *watcher, char *seen, size_t seen_size) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (seconds_since(&start) < 20.0) {
        soulbox_filesystem_event *event = NULL;
        bool ended = false;
        soulbox_error *error = soulbox_watcher_next(watcher, 1000, &ended, &event);
        if (error != NULL) return error;
        CHECK(!ended, "the watch ended; events: %s", seen);
        if (event == NULL) continue;
        size_t used = strlen(seen);
        snprintf(seen + used, seen_size - used, "%s\n", event->name);
        soulbox_filesystem_event_free(event);
    }
    return NULL;
}

static void case_files_watch_limit(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    /* With its top, the tree has 4095 directories, one less than a
     * recursive watch covers. */
    soulbox_output *output = run(sandbox, "mkdir many && cd many && mkdir $(seq -f d%g 1 4094)", NULL);
    CHECK(output->exit_code == 0, "mkdir failed: %s", (const char *)output->stderr_data);
    soulbox_output_free(output);
    soulbox_watcher *watcher = NULL;
    OK(soulbox_files_watch_dir(sandbox, "many", true, NULL, &watcher));

    /* The first new subdirectory is watched, the second is not, and an
     * error says so. */
    OK(soulbox_files_make_dir(sandbox, "many/e1", NULL, NULL));
    OK(soulbox_files_make_dir(sandbox, "many/e2", NULL, NULL));
    char seen[256] = "";
    soulbox_error *error = await_watch_error(watcher, seen, sizeof seen);
    CHECK(error != NULL, "no error within 20 s; events: %s", seen);
    EXPECT_ERROR_MESSAGE(error, SOULBOX_ERROR_KIND_INVALID_ARGUMENT,
                         "more than 4096 directory watches");

    /* The watch goes on for what it covers. */
    seen[0] = '\0';
    OK(soulbox_files_write(sandbox, "many/e2/unwatched", (const uint8_t *)"x", 1, NULL));
    OK(soulbox_files_write(sandbox, "many/e1/watched", (const uint8_t *)"x", 1, NULL));
    CHECK(await_event(watcher, "e1/watched", SOULBOX_FILESYSTEM_EVENT_KIND_CREATE, seen,
                      sizeof seen),
          "no CREATE event for e1/watched; events: %s", seen);
    CHECK(strstr(seen, "unwatched") == NULL, "an unwatched directory reported: %s", seen);
    soulbox_watcher_free(watcher);

    /* A tree that is already too large fails at the start, unless the watch
     * is not recursive. */
    watcher = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_files_watch_dir(sandbox, "many", true, NULL, &watcher),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "more than 4096 directory watches");
    CHECK(watcher == NULL, "a failed watch_dir stores NULL");
    OK(soulbox_files_watch_dir(sandbox, "many", false, NULL, &watcher));
    soulbox_watcher_free(watcher);
    soulbox_sandbox_free(sandbox);
}

static void case_pty_input_after_end(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_command *pty = NULL;
    OK(soulbox_pty_create(sandbox, 24, 80, NULL, &pty));
    OK(soulbox_command_send_stdin(pty, (const uint8_t *)"exit 4\n", 7));
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(pty, NULL, NULL, &output));
    CHECK(output->exit_code == 4, "shell exit code %d", output->exit_code);
    soulbox_output_free(output);
    /* Input and a resize after the shell's exit fail. */
    EXPECT_ERROR_MESSAGE(soulbox_command_send_stdin(pty, (const uint8_t *)"echo lost\n", 10),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "has exited");
    EXPECT_ERROR_MESSAGE(soulbox_command_resize(pty, 30, 100),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "has exited");
    soulbox_command_free(pty);

    /* After the sandbox's end they fail as reads do. */
    OK(soulbox_pty_create(sandbox, 24, 80, NULL, &pty));
    OK(soulbox_sandbox_kill(sandbox));
    EXPECT_ERROR_MESSAGE(soulbox_command_send_stdin(pty, (const uint8_t *)"echo lost\n", 10),
                         SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING, soulbox_sandbox_id(sandbox));
    EXPECT_ERROR_MESSAGE(soulbox_command_resize(pty, 30, 100),
                         SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING, soulbox_sandbox_id(sandbox));
    /* Output written before the end, such as the prompt, comes first. */
    soulbox_error *error = NULL;
    for (int i = 0; i < 100 && error == NULL; i++) {
        soulbox_chunk *chunk = NULL;
        bool ended = false;
        error = soulbox_command_read(pty, -1, &ended, &chunk);
        CHECK(!ended, "the read reported the end instead of the sandbox's end");
        CHECK(error == NULL || chunk == NULL, "a failed read stored a chunk");
        soulbox_chunk_free(chunk);
    }
    EXPECT_ERROR_MESSAGE(error, SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING,
                         soulbox_sandbox_id(sandbox));
    soulbox_command_free(pty);
    soulbox_sandbox_free(sandbox);
}

static void case_free_during_waits(void) {
    /* Without kill_on_drop, a watcher outlives the handle it came from. */
    char id[64];
    soulbox_sandbox *sandbox = lasting_sandbox(id, sizeof id);
    soulbox_watcher *watcher = NULL;
    OK(soulbox_files_watch_dir(sandbox, ".", false, NULL, &watcher));
    soulbox_command *command = NULL;
    OK(soulbox_command_start(sandbox, "sleep 0.3; echo x > after-free", NULL, &command));
    soulbox_sandbox_free(sandbox);
    char seen[1024] = "";
    CHECK(await_event(watcher, "after-free", SOULBOX_FILESYSTEM_EVENT_KIND_CREATE, seen,
                      sizeof seen),
          "no CREATE event after the handle's free; events: %s", seen);
    soulbox_output *output = NULL;
    OK(soulbox_command_wait(command, NULL, NULL, &output));
    CHECK(output->exit_code == 0, "exit code %d", output->exit_code);
    soulbox_output_free(output);
    soulbox_command_free(command);
    bool was_running = false;
    OK(soulbox_sandbox_kill_id(id, &was_running));
    CHECK(was_running, "kill_id found the sandbox");
    soulbox_watcher_free(watcher);

    /* With kill_on_drop, the free kills the sandbox, which ends a wait on a
     * PTY session and a watcher_next that wait without limit in other
     * threads. */
    sandbox = new_sandbox();
    snprintf(id, sizeof id, "%s", soulbox_sandbox_id(sandbox));
    OK(soulbox_files_watch_dir(sandbox, ".", false, NULL, &watcher));
    soulbox_command *pty = NULL;
    OK(soulbox_pty_create(sandbox, 24, 80, NULL, &pty));
    struct waiter pty_waiter = {.command = pty};
    struct watch_waiter watch_waiter = {.watcher = watcher};
    pthread_t pty_thread, watch_thread;
    CHECK(pthread_create(&pty_thread, NULL, wait_in_thread, &pty_waiter) == 0, "pthread_create");
    CHECK(pthread_create(&watch_thread, NULL, next_in_thread, &watch_waiter) == 0,
          "pthread_create");
    usleep(300 * 1000);
    soulbox_sandbox_free(sandbox);
    CHECK(pthread_join(pty_thread, NULL) == 0, "pthread_join");
    CHECK(pthread_join(watch_thread, NULL) == 0, "pthread_join");
    EXPECT_ERROR_MESSAGE(pty_waiter.error, SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING, id);
    CHECK(pty_waiter.output == NULL, "the ended wait returned an output");
    EXPECT_ERROR_MESSAGE(watch_waiter.error, SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING, id);
    CHECK(watch_waiter.event == NULL, "the ended next returned an event");
    soulbox_command_free(pty);
    soulbox_watcher_free(watcher);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

/* Removes the host directory tree `path`. */
static void remove_tree(const char *path) {
    CHECK(nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0, "remove %s: %s", path,
          strerror(errno));
}

static void write_host_file(const char *path, const char *text, mode_t mode) {
    FILE *file = fopen(path, "w");
    CHECK(file != NULL, "create %s: %s", path, strerror(errno));
    CHECK(fputs(text, file) >= 0, "write %s", path);
    CHECK(fclose(file) == 0, "close %s", path);
    CHECK(chmod(path, mode) == 0, "chmod %s: %s", path, strerror(errno));
}

static void case_files_copy_tree(void) {
    char host[] = "/tmp/soulbox-c-test-XXXXXX";
    CHECK(mkdtemp(host) != NULL, "mkdtemp: %s", strerror(errno));
    char src[128], dir[128], path[192], out_dir[128];
    snprintf(src, sizeof src, "%s/src", host);
    snprintf(dir, sizeof dir, "%s/src/dir", host);
    snprintf(out_dir, sizeof out_dir, "%s/out", host);
    CHECK(mkdir(src, 0755) == 0, "mkdir %s: %s", src, strerror(errno));
    CHECK(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/a.txt", src);
    write_host_file(path, "alpha", 0644);
    snprintf(path, sizeof path, "%s/b.sh", dir);
    write_host_file(path, "echo beta\n", 0750);
    snprintf(path, sizeof path, "%s/link", src);
    CHECK(symlink("a.txt", path) == 0, "symlink: %s", strerror(errno));

    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_copy_summary *summary = NULL;
    OK(soulbox_files_copy_in(sandbox, src, "copied", NULL, &summary));
    CHECK(summary->files == 2, "copied in %llu files", (unsigned long long)summary->files);
    CHECK(summary->directories == 2, "copied in %llu directories",
          (unsigned long long)summary->directories);
    CHECK(summary->bytes == 15, "copied in %llu bytes", (unsigned long long)summary->bytes);
    CHECK(summary->skipped_len == 1, "skipped %zu entries", summary->skipped_len);
    CHECK(strcmp(summary->skipped[0], path) == 0, "skipped %s", summary->skipped[0]);
    soulbox_copy_summary_free(summary);
    soulbox_output *output = run(sandbox,
                                 "cat copied/a.txt; stat -c ' %a %U' copied/dir/b.sh; "
                                 "test -e copied/link || echo ' no link'",
                                 NULL);
    CHECK(strcmp((const char *)output->stdout_data, "alpha 750 user\n no link\n") == 0,
          "the copy inside: %s", (const char *)output->stdout_data);
    soulbox_output_free(output);
    snprintf(path, sizeof path, "%s/a.txt", src);
    OK(soulbox_files_copy_in(sandbox, path, "single.txt", NULL, NULL));
    bool flag = false;
    OK(soulbox_files_exists(sandbox, "single.txt", NULL, &flag));
    CHECK(flag, "a single file was copied in");

    OK(soulbox_files_copy_out(sandbox, "copied", out_dir, NULL, &summary));
    CHECK(summary->files == 2, "copied out %llu files", (unsigned long long)summary->files);
    CHECK(summary->directories == 2, "copied out %llu directories",
          (unsigned long long)summary->directories);
    CHECK(summary->skipped_len == 0, "copy out skipped %zu entries", summary->skipped_len);
    CHECK(summary->skipped == NULL, "nothing skipped, but skipped is not NULL");
    soulbox_copy_summary_free(summary);
    snprintf(path, sizeof path, "%s/dir/b.sh", out_dir);
    struct stat st;
    CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    CHECK((st.st_mode & 07777) == 0750, "copied-out mode %o", (unsigned)(st.st_mode & 07777));
    CHECK(st.st_size == 10, "copied-out size %lld", (long long)st.st_size);
    snprintf(path, sizeof path, "%s/a.txt", out_dir);
    FILE *file = fopen(path, "r");
    CHECK(file != NULL, "open %s: %s", path, strerror(errno));
    char text[16] = "";
    CHECK(fgets(text, sizeof text, file) != NULL, "read %s", path);
    fclose(file);
    CHECK(strcmp(text, "alpha") == 0, "copied-out a.txt holds %s", text);

    summary = GARBAGE;
    snprintf(path, sizeof path, "%s/missing", host);
    EXPECT_ERROR_MESSAGE(soulbox_files_copy_in(sandbox, path, "x", NULL, &summary),
                         SOULBOX_ERROR_KIND_HOST_FILE, path);
    CHECK(summary == NULL, "a failed copy stores NULL");
    EXPECT_ERROR_ERRNO(soulbox_files_copy_out(sandbox, "no/such/dir", out_dir, NULL, &summary),
                       SOULBOX_ERROR_KIND_FILE_NOT_FOUND, ENOENT);
    EXPECT_ERROR_MESSAGE(soulbox_files_copy_in(sandbox, NULL, "x", NULL, &summary),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument host_path is NULL");
    EXPECT_ERROR_MESSAGE(soulbox_files_copy_out(sandbox, "copied", NULL, NULL, &summary),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument host_path is NULL");
    soulbox_sandbox_free(sandbox);
    remove_tree(host);
}

/* Runs `code` with soulbox_run_code and returns the execution's JSON,
 * which the caller frees. */
static soulbox_bytes *run_code(soulbox_sandbox *sandbox, const char *code, uint64_t timeout_ms) {
    soulbox_bytes *execution = NULL;
    OK(soulbox_run_code(sandbox, code, timeout_ms, &execution));
    CHECK(execution != NULL, "run_code stored no execution");
    CHECK(execution->data[execution->len] == '\0', "the JSON is NUL-terminated");
    CHECK(strlen((const char *)execution->data) == execution->len, "the JSON has no NUL inside");
    return execution;
}

#define CHECK_JSON_EQUALS(execution, expected)                                                   \
    CHECK(strcmp((const char *)(execution)->data, (expected)) == 0, "execution %s, expected %s", \
          (const char *)(execution)->data, (expected))
#define CHECK_JSON_CONTAINS(execution, needle)                                                   \
    CHECK(strstr((const char *)(execution)->data, (needle)) != NULL, "execution %s lacks %s",    \
          (const char *)(execution)->data, (needle))

static void case_run_code(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_bytes *execution = run_code(sandbox, "x = 6 * 7", 0);
    CHECK_JSON_EQUALS(execution, "{\"error\":null,\"execution_count\":1,"
                                 "\"logs\":{\"stderr\":[],\"stdout\":[]},\"results\":[]}");
    soulbox_bytes_free(execution);

    /* One write, so the output arrives as one piece. */
    execution = run_code(sandbox, "print('out', end='')\nx", 0);
    CHECK_JSON_EQUALS(execution,
                      "{\"error\":null,\"execution_count\":2,"
                      "\"logs\":{\"stderr\":[],\"stdout\":[\"out\"]},"
                      "\"results\":[{\"formats\":{\"text\":\"42\"},\"is_main_result\":true}]}");
    soulbox_bytes_free(execution);

    execution = run_code(sandbox,
                         "class Bold:\n"
                         "    def _repr_html_(self):\n"
                         "        return '<b>hi</b>'\n"
                         "Bold()",
                         0);
    CHECK_JSON_CONTAINS(execution, "\"html\":\"<b>hi</b>\"");
    CHECK_JSON_CONTAINS(execution, "\"is_main_result\":true");
    soulbox_bytes_free(execution);

    execution = run_code(sandbox, "import sys\nprint('e', file=sys.stderr, end='')\n1 / 0", 0);
    CHECK_JSON_CONTAINS(execution, "\"name\":\"ZeroDivisionError\"");
    CHECK_JSON_CONTAINS(execution, "\"value\":\"division by zero\"");
    CHECK_JSON_CONTAINS(execution, "\"traceback\":\"Traceback");
    CHECK_JSON_CONTAINS(execution, "\"stderr\":[\"e\"]");
    CHECK_JSON_CONTAINS(execution, "\"results\":[]");
    soulbox_bytes_free(execution);

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    execution = GARBAGE;
    expect_error(__FILE__, __LINE__,
                 soulbox_run_code(sandbox, "import time\ntime.sleep(30)", 500, &execution),
                 SOULBOX_ERROR_KIND_CODE_TIMED_OUT, "soulbox_run_code past its timeout",
                 "keeps its variables", ETIMEDOUT);
    CHECK(execution == NULL, "a timed-out run stores NULL");
    double elapsed = seconds_since(&start);
    CHECK(elapsed < 15.0, "the 0.5 s timeout took %.1f s", elapsed);

    execution = run_code(sandbox, "x", 0);
    CHECK_JSON_CONTAINS(execution, "\"text\":\"42\"");
    soulbox_bytes_free(execution);

    execution = GARBAGE;
    EXPECT_ERROR(soulbox_run_code(NULL, "1", 0, &execution), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    CHECK(execution == NULL, "a failed run stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_run_code(sandbox, NULL, 0, &execution),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "code");
    EXPECT_ERROR_MESSAGE(soulbox_run_code(sandbox, "\xff", 0, &execution),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "UTF-8");
    EXPECT_ERROR(soulbox_run_code(sandbox, "1", 0, NULL), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    soulbox_sandbox_free(sandbox);
}

static void case_run_code_language(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    soulbox_bytes *execution = NULL;
    OK(soulbox_run_code_language(sandbox, "let x = 40", "js", 0, &execution));
    CHECK_JSON_EQUALS(execution, "{\"error\":null,\"execution_count\":1,"
                                 "\"logs\":{\"stderr\":[],\"stdout\":[]},\"results\":[]}");
    soulbox_bytes_free(execution);

    OK(soulbox_run_code_language(sandbox, "console.log('out'); x + 2", "javascript", 0,
                                 &execution));
    CHECK_JSON_EQUALS(execution,
                      "{\"error\":null,\"execution_count\":2,"
                      "\"logs\":{\"stderr\":[],\"stdout\":[\"out\\n\"]},"
                      "\"results\":[{\"formats\":{\"text\":\"42\"},\"is_main_result\":true}]}");
    soulbox_bytes_free(execution);

    /* NULL is Python, whose context does not see the JavaScript one's x. */
    OK(soulbox_run_code_language(sandbox, "'x' in globals()", NULL, 0, &execution));
    CHECK_JSON_CONTAINS(execution, "\"text\":\"False\"");
    soulbox_bytes_free(execution);

    execution = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_run_code_language(sandbox, "1", "ruby", 0, &execution),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "\"ruby\"");
    CHECK(execution == NULL, "a rejected language stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_run_code_language(sandbox, "1", "\xff", 0, &execution),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "language");
    soulbox_sandbox_free(sandbox);
}

/* Connects to `address` ("127.0.0.1:PORT"), sends `request`, and reads the
 * reply into `reply` (NUL-terminated) until the peer closes the
 * connection. Returns the length of the reply, or -1 with errno set when
 * the connection failed or was reset. */
static ssize_t exchange(const char *address, const char *request, char *reply, size_t size) {
    const char *colon = strrchr(address, ':');
    CHECK(colon != NULL, "address %s has no port", address);
    char host[INET_ADDRSTRLEN] = {0};
    CHECK((size_t)(colon - address) < sizeof host, "address %s: host too long", address);
    memcpy(host, address, (size_t)(colon - address));
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    CHECK(inet_pton(AF_INET, host, &peer.sin_addr) == 1, "address %s: host is not IPv4", address);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0, "socket: %s", strerror(errno));
    struct timeval limit = {.tv_sec = 10};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) == 0, "SO_RCVTIMEO");
    ssize_t total = -1;
    bool sent = connect(fd, (const struct sockaddr *)&peer, sizeof peer) == 0 &&
                send(fd, request, strlen(request), MSG_NOSIGNAL) >= 0;
    if (sent) {
        total = 0;
        ssize_t n = 0;
        while ((size_t)total < size - 1 &&
               (n = recv(fd, reply + total, size - 1 - (size_t)total, 0)) > 0) {
            total += n;
        }
        if (n < 0) total = -1;
    }
    int saved = errno;
    close(fd);
    reply[total < 0 ? 0 : total] = '\0';
    errno = saved;
    return total;
}

/* Replies to each connection to 127.0.0.1:8000 with "echo " and the
 * request. */
static const char echo_server[] = "import socket\n"
                                  "s = socket.socket()\n"
                                  "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                                  "s.bind(('127.0.0.1', 8000))\n"
                                  "s.listen()\n"
                                  "while True:\n"
                                  "    c, _ = s.accept()\n"
                                  "    c.sendall(b'echo ' + c.recv(100))\n"
                                  "    c.close()\n";

/* Internet access gives the sandbox slirp4netns's tap device and DNS
 * address; without it the sandbox has loopback only. Nothing here sends a
 * packet. */
static void case_internet_access(void) {
    soulbox_options *options = dying_options();
    OK(soulbox_options_set_internet_access(options, true));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options);
    soulbox_output *output = run(sandbox, "ip -o -4 addr show dev eth0", NULL);
    CHECK(output->exit_code == 0, "ip exit code %d", output->exit_code);
    CHECK(strstr((const char *)output->stdout_data, "10.0.2.100/24") != NULL,
          "eth0 has no 10.0.2.100/24: %s", (const char *)output->stdout_data);
    soulbox_output_free(output);
    output = run(sandbox, "cat /etc/resolv.conf", NULL);
    CHECK(strstr((const char *)output->stdout_data, "nameserver 10.0.2.3\n") != NULL,
          "resolv.conf: %s", (const char *)output->stdout_data);
    soulbox_output_free(output);
    OK(soulbox_sandbox_kill(sandbox));
    soulbox_sandbox_free(sandbox);

    sandbox = new_sandbox();
    output = run(sandbox, "ip -o link show dev eth0", NULL);
    CHECK(output->exit_code != 0, "a sandbox without internet access has eth0: %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);
    soulbox_sandbox_free(sandbox);
}

/* Egress rules: denied networks fail route lookups with EACCES, allowed
 * ones route through the gateway. Route lookups only: nothing here sends a
 * packet. */
static void case_egress_rules(void) {
    soulbox_options *options = dying_options();
    OK(soulbox_options_set_internet_access(options, true));
    OK(soulbox_options_add_deny_out(options, "0.0.0.0/0"));
    OK(soulbox_options_add_allow_out(options, "192.0.2.0/24"));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options);
    soulbox_output *output = run(sandbox, "ip -4 route get 192.0.2.1", NULL);
    CHECK(output->exit_code == 0, "allowed lookup exit code %d", output->exit_code);
    CHECK(strstr((const char *)output->stdout_data, "via 10.0.2.2 dev eth0") != NULL,
          "route to 192.0.2.1: %s", (const char *)output->stdout_data);
    soulbox_output_free(output);
    output = run(sandbox, "ip -4 route get 203.0.113.1 2>&1", NULL);
    CHECK(output->exit_code != 0, "a denied address has a route: %s",
          (const char *)output->stdout_data);
    CHECK(strstr((const char *)output->stdout_data, "Permission denied") != NULL,
          "denied lookup: %s", (const char *)output->stdout_data);
    soulbox_output_free(output);
    OK(soulbox_sandbox_kill(sandbox));
    soulbox_sandbox_free(sandbox);

    /* Bad entries fail the create with a message that names them. */
    options = soulbox_options_new();
    OK(soulbox_options_set_internet_access(options, true));
    OK(soulbox_options_add_allow_out(options, "example.com"));
    sandbox = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_create(options, &sandbox),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "\"example.com\" is a domain name");
    CHECK(sandbox == NULL, "a failed create stores NULL");
    soulbox_options_free(options);

    options = soulbox_options_new();
    OK(soulbox_options_add_deny_out(options, "198.51.100.0/24"));
    sandbox = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_create(options, &sandbox),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "set the network to internet");
    CHECK(sandbox == NULL, "a failed create stores NULL");
    EXPECT_ERROR(soulbox_options_add_deny_out(options, NULL), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    soulbox_options_free(options);
}

static void case_get_host(void) {
    soulbox_sandbox *sandbox = new_sandbox();
    const char *const argv[] = {"python3", "-c", echo_server, NULL};
    soulbox_command *server = NULL;
    OK(soulbox_command_start_argv(sandbox, argv, NULL, &server));

    soulbox_bytes *host = NULL;
    OK(soulbox_sandbox_get_host(sandbox, 8000, &host));
    CHECK(host != NULL, "get_host stored no address");
    const char *address = (const char *)host->data;
    CHECK(strlen(address) == host->len, "address %s: len %zu", address, host->len);
    CHECK(strncmp(address, "127.0.0.1:", 10) == 0, "address %s is not on 127.0.0.1", address);
    int port = atoi(address + 10);
    CHECK(port > 0, "address %s has no valid port", address);
    CHECK(port <= 65535, "address %s has a port above 65535", address);

    /* No SoulBox call runs while this thread connects, so the library's
     * own threads forward the connection. The server may still be
     * starting, when the connection is reset. */
    char reply[256];
    ssize_t len = -1;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        len = exchange(address, "ping", reply, sizeof reply);
        if (len > 0 || seconds_since(&start) > 20.0) break;
        usleep(50 * 1000);
    }
    CHECK(len > 0, "no reply through %s within 20 s (errno %d)", address, errno);
    CHECK(strcmp(reply, "echo ping") == 0, "reply through %s: %s", address, reply);

    soulbox_bytes *again = NULL;
    OK(soulbox_sandbox_get_host(sandbox, 8000, &again));
    CHECK(strcmp((const char *)again->data, address) == 0, "a second call for port 8000 "
          "returned %s, the first %s", (const char *)again->data, address);
    soulbox_bytes_free(again);

    /* Nothing listens on 8001 in the sandbox, so the connection is reset. */
    soulbox_bytes *unused = NULL;
    OK(soulbox_sandbox_get_host(sandbox, 8001, &unused));
    CHECK(strcmp((const char *)unused->data, address) != 0, "ports 8000 and 8001 share %s",
          address);
    errno = 0;
    len = exchange((const char *)unused->data, "ping", reply, sizeof reply);
    CHECK(len == -1 && (errno == ECONNRESET || errno == EPIPE),
          "a port without a server returned %zd bytes (errno %d): %s", len, errno, reply);
    soulbox_bytes_free(unused);

    soulbox_bytes *failed = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_get_host(sandbox, 0, &failed),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "port 0");
    CHECK(failed == NULL, "a failed get_host stores NULL");
    failed = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_get_host(NULL, 8000, &failed),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument sandbox is NULL");
    CHECK(failed == NULL, "a failed get_host stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_get_host(sandbox, 8000, NULL),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "argument out is NULL");

    OK(soulbox_command_kill(server));
    soulbox_command_free(server);
    OK(soulbox_sandbox_kill(sandbox));
    failed = GARBAGE;
    EXPECT_ERROR(soulbox_sandbox_get_host(sandbox, 8000, &failed),
                 SOULBOX_ERROR_KIND_SANDBOX_NOT_RUNNING);
    CHECK(failed == NULL, "a failed get_host stores NULL");
    /* The forwarding ends with the sandbox. */
    len = exchange(address, "ping", reply, sizeof reply);
    CHECK(len <= 0, "%s still forwards after the kill: %s", address, reply);
    soulbox_bytes_free(host);
    soulbox_sandbox_free(sandbox);
}

static void case_mounts(void) {
    char dir[] = "/tmp/soulbox-c-mount-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
    CHECK(chmod(dir, 0777) == 0, "chmod: %s", strerror(errno));
    char input[128];
    snprintf(input, sizeof input, "%s/input.txt", dir);
    FILE *file = fopen(input, "w");
    CHECK(file != NULL, "create %s", input);
    fputs("from the host\n", file);
    fclose(file);

    soulbox_options *options = dying_options();
    OK(soulbox_options_add_mount(options, dir, "/home/user/shared", true));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options);
    soulbox_output *output = run(sandbox, "cat shared/input.txt && echo out > shared/output.txt", NULL);
    CHECK(output->exit_code == 0, "exit code %d: %s", output->exit_code,
          (const char *)output->stderr_data);
    CHECK(strcmp((const char *)output->stdout_data, "from the host\n") == 0, "stdout %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);
    OK(soulbox_sandbox_kill(sandbox));
    soulbox_sandbox_free(sandbox);
    char written[128];
    snprintf(written, sizeof written, "%s/output.txt", dir);
    CHECK(access(written, F_OK) == 0, "the sandbox's write reached %s", written);

    options = soulbox_options_new();
    OK(soulbox_options_add_mount(options, dir, "/proc/shared", false));
    sandbox = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_sandbox_create(options, &sandbox),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "/proc, /sys or /dev");
    CHECK(sandbox == NULL, "a failed create stores NULL");
    EXPECT_ERROR_MESSAGE(soulbox_options_add_mount(options, dir, NULL, false),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "target");
    soulbox_options_free(options);
    unlink(written);
    unlink(input);
    rmdir(dir);
}

/* Makes the build folder `dir` from its mkdtemp template, with an
 * input.txt that contains "copied in\n" and a soulbox.toml that contains
 * `spec`, whose path goes to `toml`. Points the layer cache into the folder,
 * so the case builds into a cache of its own. */
static void make_build_folder(char *dir, char *toml, size_t toml_size, const char *spec) {
    CHECK(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
    char path[256];
    snprintf(path, sizeof path, "%s/cache", dir);
    /* Set before the first SoulBox call, so no library thread reads the
     * environment meanwhile. */
    CHECK(setenv("SOULBOX_LAYER_CACHE", path, 1) == 0, "setenv: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/input.txt", dir);
    write_host_file(path, "copied in\n", 0644);
    snprintf(toml, toml_size, "%s/soulbox.toml", dir);
    write_host_file(toml, spec, 0644);
}

/* Builds a template from a soulbox.toml into a layer cache of this case's
 * own, creates a sandbox from it by name, and checks the cached rebuild
 * and the errors. */
static void case_template_build(void) {
    char dir[] = "/tmp/soulbox-c-build-XXXXXX";
    char toml[256];
    make_build_folder(dir, toml, sizeof toml,
                      "run = [\"cat /home/user/copied.txt > /home/user/built.txt\"]\n"
                      "\n"
                      "[[files]]\n"
                      "from = \"input.txt\"\n"
                      "to = \"/home/user/copied.txt\"\n");
    char name[64];
    snprintf(name, sizeof name, "%s", unique_label());

    soulbox_built_template *built = GARBAGE;
    OK(soulbox_template_build(dir, name, &built));
    CHECK(built != NULL, "the build stored no result");
    CHECK(!soulbox_built_template_cached(built), "a first build is not cached");
    CHECK(strcmp(soulbox_built_template_name(built), name) == 0, "name %s",
          soulbox_built_template_name(built));
    CHECK(strcmp(soulbox_built_template_source(built), toml) == 0, "source %s",
          soulbox_built_template_source(built));
    char key[65];
    snprintf(key, sizeof key, "%s", soulbox_built_template_key(built));
    CHECK(strlen(soulbox_built_template_key(built)) == 64, "key %s", key);
    CHECK(access(soulbox_built_template_layer(built), F_OK) == 0, "layer %s: %s",
          soulbox_built_template_layer(built), strerror(errno));
    soulbox_built_template_free(built);

    /* A relative path starts at the current directory. */
    char cwd[256];
    CHECK(getcwd(cwd, sizeof cwd) != NULL, "getcwd: %s", strerror(errno));
    CHECK(chdir(dir) == 0, "chdir %s: %s", dir, strerror(errno));
    built = NULL;
    soulbox_error *error = soulbox_template_build("soulbox.toml", NULL, &built);
    CHECK(chdir(cwd) == 0, "chdir %s: %s", cwd, strerror(errno));
    OK(error);
    CHECK(soulbox_built_template_cached(built), "an unchanged rebuild is cached");
    CHECK(strcmp(soulbox_built_template_key(built), key) == 0, "rebuild key %s",
          soulbox_built_template_key(built));
    CHECK(soulbox_built_template_name(built) == NULL, "a build without a name has none");
    soulbox_built_template_free(built);

    soulbox_options *options = dying_options();
    OK(soulbox_options_set_template(options, name));
    soulbox_sandbox *sandbox = NULL;
    OK(soulbox_sandbox_create(options, &sandbox));
    soulbox_options_free(options);
    soulbox_output *output = run(sandbox, "cat /home/user/built.txt", NULL);
    CHECK(strcmp((const char *)output->stdout_data, "copied in\n") == 0, "stdout %s",
          (const char *)output->stdout_data);
    soulbox_output_free(output);
    OK(soulbox_sandbox_kill(sandbox));
    soulbox_sandbox_free(sandbox);

    write_host_file(toml, "rn = [\"true\"]\n", 0644);
    built = GARBAGE;
    EXPECT_ERROR_MESSAGE(soulbox_template_build(dir, NULL, &built),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "unknown field `rn`");
    CHECK(built == NULL, "a failed build stores NULL");
    write_host_file(toml, "run = [\"echo failing; exit 3\"]\n", 0644);
    EXPECT_ERROR_MESSAGE(soulbox_template_build(dir, NULL, &built), SOULBOX_ERROR_KIND_TEMPLATE,
                         "exit code 3");
    EXPECT_ERROR_MESSAGE(soulbox_template_build(dir, "bad name!", &built),
                         SOULBOX_ERROR_KIND_INVALID_ARGUMENT, "bad name!");
    EXPECT_ERROR(soulbox_template_build(NULL, NULL, &built), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    EXPECT_ERROR(soulbox_template_build(dir, NULL, NULL), SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    CHECK(soulbox_built_template_key(NULL) == NULL, "key of NULL");
    CHECK(soulbox_built_template_name(NULL) == NULL, "name of NULL");
    CHECK(soulbox_built_template_source(NULL) == NULL, "source of NULL");
    CHECK(soulbox_built_template_layer(NULL) == NULL, "layer of NULL");
    CHECK(!soulbox_built_template_cached(NULL), "cached of NULL");
    soulbox_built_template_free(NULL);
    remove_tree(dir);
}

/* What a build passed to record_build_event. `trace` contains one line for
 * each event other than output, and the output of the steps goes to `out`
 * and `err`. `first_output_position` and `last_output_position` are the
 * number of trace lines that came before the first and the last output
 * chunk, which places the output among the other events. */
struct build_events {
    pthread_t thread;
    char trace[1024];
    size_t trace_len;
    char out[256];
    size_t out_len;
    char err[256];
    size_t err_len;
    int trace_lines;
    int first_output_position;
    int last_output_position;
    int output_chunks;
    int bad_calls;
    /* The soulbox.toml whose build sandbox a STEP event looks up. */
    const char *toml;
    int build_sandboxes_seen;
    int list_failures;
};

static void append(char *buffer, size_t size, size_t *used, const char *data, size_t len) {
    if (*used + len < size) {
        memcpy(buffer + *used, data, len);
        *used += len;
        buffer[*used] = '\0';
    }
}

/* Counts the sandboxes labelled as the build sandbox of `e->toml`, through
 * a SoulBox call made from inside the callback. */
static void count_build_sandboxes(struct build_events *e) {
    soulbox_key_value label = {.key = "soulbox.build", .value = e->toml};
    soulbox_sandbox_info_list *list = NULL;
    soulbox_error *error = soulbox_sandbox_list(&label, 1, SOULBOX_SANDBOX_STATE_ANY, &list);
    if (error != NULL) {
        fprintf(stderr, "soulbox_sandbox_list in the callback: %s\n",
                soulbox_error_message(error));
        e->list_failures++;
        soulbox_error_free(error);
        return;
    }
    e->build_sandboxes_seen += (int)list->len;
    soulbox_sandbox_info_list_free(list);
}

static void record_build_event(void *user_data, soulbox_build_event_kind kind,
                               const uint8_t *data, size_t len) {
    struct build_events *e = user_data;
    if (!pthread_equal(pthread_self(), e->thread) || data == NULL || data[len] != '\0') {
        e->bad_calls++;
        return;
    }
    const char *text = (const char *)data;
    const char *label = NULL;
    switch (kind) {
    case SOULBOX_BUILD_EVENT_KIND_STDOUT:
    case SOULBOX_BUILD_EVENT_KIND_STDERR:
        if (len == 0) e->bad_calls++;
        if (e->output_chunks == 0) e->first_output_position = e->trace_lines;
        e->last_output_position = e->trace_lines;
        e->output_chunks++;
        if (kind == SOULBOX_BUILD_EVENT_KIND_STDOUT) {
            append(e->out, sizeof e->out, &e->out_len, text, len);
        } else {
            append(e->err, sizeof e->err, &e->err_len, text, len);
        }
        return;
    case SOULBOX_BUILD_EVENT_KIND_CACHED: label = "cached "; break;
    case SOULBOX_BUILD_EVENT_KIND_FILE: label = "file "; break;
    case SOULBOX_BUILD_EVENT_KIND_STEP:
        label = "step ";
        count_build_sandboxes(e);
        break;
    case SOULBOX_BUILD_EVENT_KIND_SAVING:
        label = "saving";
        if (len != 0) e->bad_calls++;
        break;
    default:
        e->bad_calls++;
        return;
    }
    append(e->trace, sizeof e->trace, &e->trace_len, label, strlen(label));
    append(e->trace, sizeof e->trace, &e->trace_len, text, len);
    append(e->trace, sizeof e->trace, &e->trace_len, "\n", 1);
    e->trace_lines++;
}

/* Builds a template whose step writes known text to stdout and stderr and
 * checks the events that soulbox_template_build_with_output passes on: for
 * a new build, a cached one, a failing one and with no callback. */
static void case_template_build_output(void) {
    char dir[] = "/tmp/soulbox-c-build-output-XXXXXX";
    char toml[256];
    make_build_folder(dir, toml, sizeof toml,
                      "run = [\"echo to-stdout; echo to-stderr >&2\", \"true\"]\n"
                      "\n"
                      "[[files]]\n"
                      "from = \"input.txt\"\n"
                      "to = \"/home/user/copied.txt\"\n");

    struct build_events e = {.thread = pthread_self(), .toml = toml};
    soulbox_built_template *built = GARBAGE;
    OK(soulbox_template_build_with_output(dir, NULL, record_build_event, &e, &built));
    CHECK(built != NULL, "the build stored no result");
    CHECK(!soulbox_built_template_cached(built), "a first build is not cached");
    CHECK(e.bad_calls == 0, "%d events came on another thread, with NULL data, without a NUL "
          "after the data or of an unknown kind", e.bad_calls);
    const char *expected_trace = "file /home/user/copied.txt\n"
                                 "step echo to-stdout; echo to-stderr >&2\n"
                                 "step true\n"
                                 "saving\n";
    CHECK(strcmp(e.trace, expected_trace) == 0, "events:\n%s", e.trace);
    CHECK(strcmp(e.out, "to-stdout\n") == 0, "stdout %s", e.out);
    CHECK(strcmp(e.err, "to-stderr\n") == 0, "stderr %s", e.err);
    CHECK(e.output_chunks >= 2, "%d output chunks", e.output_chunks);
    CHECK(e.first_output_position == 2, "the first output chunk came after %d events, expected "
          "2 (the file and the first step)", e.first_output_position);
    CHECK(e.last_output_position == 2, "the last output chunk came after %d events, expected 2 "
          "(before the second step)", e.last_output_position);
    CHECK(e.list_failures == 0, "%d SoulBox calls from the callback failed", e.list_failures);
    CHECK(e.build_sandboxes_seen == 2, "the callback saw the build sandbox %d times in 2 steps",
          e.build_sandboxes_seen);
    char key[65];
    snprintf(key, sizeof key, "%s", soulbox_built_template_key(built));
    soulbox_built_template_free(built);

    /* An unchanged rebuild passes only the key it reuses. */
    struct build_events cached = {.thread = pthread_self(), .toml = toml};
    built = NULL;
    OK(soulbox_template_build_with_output(dir, NULL, record_build_event, &cached, &built));
    CHECK(soulbox_built_template_cached(built), "an unchanged rebuild is cached");
    char expected_cached[80];
    snprintf(expected_cached, sizeof expected_cached, "cached %s\n", key);
    CHECK(strcmp(cached.trace, expected_cached) == 0, "events of the cached build:\n%s",
          cached.trace);
    CHECK(cached.output_chunks == 0, "%d output chunks from a cached build",
          cached.output_chunks);
    soulbox_built_template_free(built);

    /* A NULL callback builds as soulbox_template_build does. */
    built = NULL;
    OK(soulbox_template_build_with_output(dir, NULL, NULL, NULL, &built));
    CHECK(soulbox_built_template_cached(built), "a rebuild without a callback is cached");
    soulbox_built_template_free(built);

    /* A failing step's output comes before the error, and nothing is saved. */
    write_host_file(toml, "run = [\"echo before-failing; exit 3\"]\n", 0644);
    struct build_events failing = {.thread = pthread_self(), .toml = toml};
    built = GARBAGE;
    EXPECT_ERROR_MESSAGE(
        soulbox_template_build_with_output(dir, NULL, record_build_event, &failing, &built),
        SOULBOX_ERROR_KIND_TEMPLATE, "exit code 3");
    CHECK(built == NULL, "a failed build stores NULL");
    CHECK(strcmp(failing.trace, "step echo before-failing; exit 3\n") == 0,
          "events of the failing build:\n%s", failing.trace);
    CHECK(strcmp(failing.out, "before-failing\n") == 0, "stdout of the failing step %s",
          failing.out);

    EXPECT_ERROR(soulbox_template_build_with_output(NULL, NULL, record_build_event, &e, &built),
                 SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    EXPECT_ERROR(soulbox_template_build_with_output(dir, NULL, record_build_event, &e, NULL),
                 SOULBOX_ERROR_KIND_INVALID_ARGUMENT);
    remove_tree(dir);
}

static void case_version(void) {
    const char *version = soulbox_version();
    CHECK(version != NULL, "soulbox_version returned NULL");
    CHECK(version[0] >= '0' && version[0] <= '9', "version %s starts with a digit", version);
    CHECK(strchr(version, '.') != NULL, "version %s has a dot", version);
}

/* Leaks on purpose. The Rust driver expects this case to fail with a
 * LeakSanitizer report, which shows that the sanitizer checks the other
 * cases. */
static void case_sanitizer_catches_leak(void) {
    for (int i = 0; i < 3; i++) {
        soulbox_error *error = soulbox_sandbox_kill(NULL);
        CHECK(error != NULL, "kill(NULL) fails");
    }
}

/* ---- driver ---------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*run)(void);
} cases[] = {
    {"run_output", case_run_output},
    {"nonzero_exit", case_nonzero_exit},
    {"timeout", case_timeout},
    {"streaming_callback", case_streaming_callback},
    {"stdin", case_stdin},
    {"callback_reentry", case_callback_reentry},
    {"background_kill", case_background_kill},
    {"signal", case_signal},
    {"env_and_user", case_env_and_user},
    {"files_round_trip", case_files_round_trip},
    {"missing_file", case_missing_file},
    {"spawn_errors", case_spawn_errors},
    {"invalid_options", case_invalid_options},
    {"null_arguments", case_null_arguments},
    {"kill_then_use", case_kill_then_use},
    {"kill_on_drop", case_kill_on_drop},
    {"free_keeps_running", case_free_keeps_running},
    {"pause_resume", case_pause_resume},
    {"info_and_list", case_info_and_list},
    {"metrics", case_metrics},
    {"sandbox_timeout", case_sandbox_timeout},
    {"pause_on_timeout", case_pause_on_timeout},
    {"lifecycle_by_id", case_lifecycle_by_id},
    {"command_read", case_command_read},
    {"stdin_closed_pipe", case_stdin_closed_pipe},
    {"pty_session", case_pty_session},
    {"commands_list_connect", case_commands_list_connect},
    {"commands_connect_other_handle", case_commands_connect_other_handle},
    {"files_list_and_stat", case_files_list_and_stat},
    {"files_rename", case_files_rename},
    {"files_watch", case_files_watch},
    {"files_watch_limit", case_files_watch_limit},
    {"pty_input_after_end", case_pty_input_after_end},
    {"free_during_waits", case_free_during_waits},
    {"files_copy_tree", case_files_copy_tree},
    {"run_code", case_run_code},
    {"run_code_language", case_run_code_language},
    {"internet_access", case_internet_access},
    {"egress_rules", case_egress_rules},
    {"get_host", case_get_host},
    {"mounts", case_mounts},
    {"template_build", case_template_build},
    {"template_build_output", case_template_build_output},
    {"version", case_version},
    {"sanitizer_catches_leak", case_sanitizer_catches_leak},
};

int main(int argc, char **argv) {
    size_t count = sizeof cases / sizeof cases[0];
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < count; i++) puts(cases[i].name);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASE | --list\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < count; i++) {
        if (strcmp(argv[1], cases[i].name) == 0) {
            current_case = cases[i].name;
            cases[i].run();
            printf("ok %s\n", cases[i].name);
            return 0;
        }
    }
    fprintf(stderr, "%s: unknown case %s; --list shows the cases\n", argv[0], argv[1]);
    return 2;
}
