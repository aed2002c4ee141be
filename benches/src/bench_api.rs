//! Times SoulBox's Rust API in-process, for `benches/compare.sh`.
//!
//! Usage: `soulbox-bench-api --task TASK [OPTIONS]`
//!
//! Timing tasks print one line per iteration with its wall time in
//! nanoseconds (`--iterations N`):
//! - `true`, `py`: `Sandbox::create`, running `/bin/true` (or
//!   `python3 -c 'print(1)'`) to completion, and `Sandbox::kill`.
//!   `shell-true` is `true` with the command line `true` run through
//!   `/bin/bash -l -c`, as `Sandbox::run` and E2B's `commands.run` do;
//!   `benches/python_create.py` compares it with the Python package. With
//!   `--pool SIZE` the create is `SandboxPool::create` on a pool of that
//!   size, and each iteration first waits, untimed, until the pool is full
//!   again, so it times a hand-over rather than the refill. With
//!   `--phases` each line has four numbers instead of one: the whole
//!   iteration, then its create (or hand-over), command and kill.
//! - `exec`: running `/bin/true` in one sandbox created beforehand; with
//!   `--pause-ms MS` each iteration first sleeps, untimed, as an agent's
//!   commands arrive with pauses between them.
//! - `run-code`: `Sandbox::run_code("1 + 1")` in one sandbox created
//!   beforehand. The first line is the first call, which starts the
//!   Python context (with `--language js`, the JavaScript one); the others
//!   reuse it.
//! - `forward`: a connection through `Sandbox::get_host` to a Python
//!   server in one sandbox created beforehand: connect, send a byte, read
//!   the byte it echoes, close.
//! - `host-exec`: `std::process::Command::new("/bin/true").status()` from
//!   this process, the floor for `exec`.
//! - `connect`: `Sandbox::connect` to a sandbox created once beforehand,
//!   running `/bin/true`, and dropping the handle.
//! - `pause-resume`: `Sandbox::pause` then `Sandbox::resume` of a sandbox
//!   created once beforehand.
//!
//! Other tasks print one JSON object:
//! - `density --count N`: N idle sandboxes at once; see [`density`].
//! - `rate --seconds S --parallel P`: P threads each create, run
//!   `/bin/true` in and kill sandboxes in a loop for S seconds; see
//!   [`rate`].
//!
//! `--template DIR` builds the sandboxes from a directory that contains a root
//! file system instead of the `host` template, so that `compare.sh` can run
//! the same busybox `true` as the other runtimes.
//! `--no-limits` turns off the default memory and pids limits, to measure
//! what joining their cgroups costs. `--no-seccomp` creates sandboxes with
//! `SeccompPolicy::unconfined()`, to measure what the filter costs; never
//! run untrusted code that way. `--shell` runs the `true` and `py`
//! tasks' command line through the sandbox's shell (`/bin/bash -l -c`), as
//! E2B's `commands.run` and the Node binding do, instead of executing the
//! program directly. `--on-request` waits for a line on stdin before each
//! iteration of `true`, `py` and `shell-true`, so another program can
//! interleave its own iterations with these one by one. `--multi-thread`
//! runs the timing tasks on tokio's multi-thread runtime, as the Python and
//! Node bindings do, in place of a current-thread runtime. `--no-zygote`
//! executes each sandbox's PID 1 afresh (`Launcher::Exec`) instead of
//! forking it from the zygote, as the `soulbox` command does.
//! `--with-create` starts the `true` and `py` tasks' command with
//! `Sandbox::create_and_start` instead of `Sandbox::create` and then
//! `Command::output`; with `--phases` its create then includes the start.

mod density;
mod rate;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use soulbox_core::{CommandSpec, Sandbox, SandboxOptions, SandboxPool, SeccompPolicy};

const USAGE: &str = "usage: soulbox-bench-api --task \
                     true|py|shell-true|exec|run-code|forward|host-exec|connect|pause-resume --iterations N \
                     [--pool SIZE] [--template DIR] [--pause-ms MS] [--no-limits] [--no-seccomp] [--shell] [--on-request] [--phases] \
                     [--multi-thread] [--no-zygote] [--with-create] [--language js]\n       \
                     soulbox-bench-api --task density --count N [--no-limits] [--no-zygote]\n       \
                     soulbox-bench-api --task rate --seconds S [--parallel P] [--no-limits] \
                     [--no-zygote]";

fn usage(message: &str) -> ExitCode {
    eprintln!("soulbox-bench-api: {message}");
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn fail(message: &str) -> ExitCode {
    eprintln!("soulbox-bench-api: {message}");
    ExitCode::FAILURE
}

/// The parsed command line.
#[derive(Debug)]
struct Args {
    task: String,
    iterations: Option<usize>,
    count: Option<usize>,
    seconds: Option<u64>,
    parallel: usize,
    pool: Option<usize>,
    /// Untimed pause before each `exec` iteration.
    pause: Option<Duration>,
    shell: bool,
    on_request: bool,
    phases: bool,
    multi_thread: bool,
    with_create: bool,
    /// The language of the `run-code` task; Python when not given.
    language: Option<String>,
    options: SandboxOptions,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        task: String::new(),
        iterations: None,
        count: None,
        seconds: None,
        parallel: 2,
        pool: None,
        pause: None,
        shell: false,
        on_request: false,
        phases: false,
        multi_thread: false,
        with_create: false,
        language: None,
        options: SandboxOptions::default(),
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut rest = raw.iter();
    while let Some(flag) = rest.next() {
        if flag == "--no-limits" {
            args.options.memory_limit = None;
            args.options.pids_limit = None;
            continue;
        }
        if flag == "--no-seccomp" {
            args.options.seccomp = SeccompPolicy::unconfined();
            continue;
        }
        if flag == "--shell" {
            args.shell = true;
            continue;
        }
        if flag == "--on-request" {
            args.on_request = true;
            continue;
        }
        if flag == "--phases" {
            args.phases = true;
            continue;
        }
        if flag == "--with-create" {
            args.with_create = true;
            continue;
        }
        if flag == "--multi-thread" {
            args.multi_thread = true;
            continue;
        }
        if flag == "--no-zygote" {
            soulbox_core::set_launcher(soulbox_core::Launcher::Exec);
            continue;
        }
        let Some(value) = rest.next() else {
            return Err(format!("option {flag:?} needs a value"));
        };
        let positive = || match value.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{flag} {value:?} is not a positive integer")),
        };
        match flag.as_str() {
            "--task" => args.task = value.clone(),
            "--iterations" => args.iterations = Some(positive()?),
            "--count" => args.count = Some(positive()?),
            "--seconds" => args.seconds = Some(positive()? as u64),
            "--parallel" => args.parallel = positive()?,
            "--pool" => args.pool = Some(positive()?),
            "--template" => args.options.template.clone_from(value),
            "--pause-ms" => args.pause = Some(Duration::from_millis(positive()? as u64)),
            "--language" => args.language = Some(value.clone()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if args.task.is_empty() {
        return Err("--task is required".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|arg| arg == "--help" || arg == "-h")
    {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => return usage(&message),
    };
    match args.task.as_str() {
        "density" => {
            let Some(count) = args.count else {
                return usage("--count is required for density");
            };
            return density::run(args.options, count);
        }
        "rate" => {
            let Some(seconds) = args.seconds else {
                return usage("--seconds is required for rate");
            };
            return rate::run(args.options, Duration::from_secs(seconds), args.parallel);
        }
        _ => {}
    }
    let Some(iterations) = args.iterations else {
        return usage("--iterations is required");
    };
    let mut builder = if args.multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let options = args.options;
    let result = match args.task.as_str() {
        "true" | "py" | "shell-true" => {
            let task = Task {
                name: if args.task == "py" { "py" } else { "true" },
                shell: args.shell || args.task == "shell-true",
                bare_command: args.task == "shell-true",
                on_request: args.on_request,
                phases: args.phases,
                with_create: args.with_create,
            };
            if task.with_create && (task.shell || args.pool.is_some()) {
                return usage("--with-create takes neither --shell, shell-true nor --pool");
            }
            match args.pool {
                Some(size) => runtime.block_on(time_pooled(options, size, &task, iterations)),
                None => runtime.block_on(time_create(options, &task, iterations)),
            }
        }
        "exec" => runtime.block_on(time_exec(options, iterations, args.pause)),
        "host-exec" => time_host_exec(iterations),
        "run-code" => runtime.block_on(time_run_code(options, iterations, args.language)),
        "forward" => runtime.block_on(time_forward(options, iterations)),
        "connect" => runtime.block_on(time_connect(options, iterations)),
        "pause-resume" => runtime.block_on(time_pause_resume(options, iterations)),
        other => return usage(&format!("unknown task {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// What each iteration of a create task runs, and when.
struct Task {
    /// `py` for `python3 -c 'print(1)'`, else `/bin/true`.
    name: &'static str,
    /// The command line goes through the sandbox's shell.
    shell: bool,
    /// The shell's command line is `true` rather than `/bin/true`.
    bare_command: bool,
    /// Waits for a line on stdin before each iteration.
    on_request: bool,
    /// Prints the create, command and kill times after the total.
    phases: bool,
    /// Starts the command with `Sandbox::create_and_start`.
    with_create: bool,
}

impl Task {
    /// Prints one iteration's line: its total, and with `phases` the time
    /// of each step, all in nanoseconds.
    fn report(&self, start: Instant, created: Instant, ran: Instant, end: Instant) {
        let total = (end - start).as_nanos();
        if self.phases {
            println!(
                "{total} {} {} {}",
                (created - start).as_nanos(),
                (ran - created).as_nanos(),
                (end - ran).as_nanos()
            );
        } else {
            println!("{total}");
        }
    }

    /// Waits for the next request when `on_request` is set.
    fn wait_for_request(
        &self,
        requests: &mut std::io::Lines<std::io::StdinLock<'_>>,
    ) -> Result<(), String> {
        if self.on_request && !matches!(requests.next(), Some(Ok(_))) {
            return Err("stdin closed before all iterations were requested".into());
        }
        Ok(())
    }

    /// Returns the program with its arguments, and the command line for
    /// the shell.
    fn command(&self) -> (&'static [&'static str], &'static str) {
        match (self.name, self.bare_command) {
            ("py", _) => (
                &["/usr/bin/python3", "-c", "print(1)"],
                "/usr/bin/python3 -c 'print(1)'",
            ),
            (_, true) => (&["true"], "true"),
            _ => (&["/bin/true"], "/bin/true"),
        }
    }

    async fn run(&self, sandbox: &Sandbox) -> Result<(), String> {
        let (argv, command_line) = self.command();
        if !self.shell {
            return run_checked(sandbox, argv).await;
        }
        let output = sandbox
            .shell(command_line)
            .output()
            .await
            .map_err(|e| format!("{command_line:?} failed: {e}"))?;
        if !output.status.success() {
            return Err(format!("{command_line:?} failed: {:?}", output.status));
        }
        Ok(())
    }
}

/// Runs `argv` in `sandbox` and checks that it succeeded.
async fn run_checked(sandbox: &Sandbox, argv: &[&str]) -> Result<(), String> {
    let output = sandbox
        .command(argv[0])
        .args(&argv[1..])
        .output()
        .await
        .map_err(|e| format!("{argv:?} failed: {e}"))?;
    if !output.status.success() {
        return Err(format!("{argv:?} failed: {:?}", output.status));
    }
    Ok(())
}

/// Times create + the task's command + kill.
async fn time_create(
    options: SandboxOptions,
    task: &Task,
    iterations: usize,
) -> Result<(), String> {
    let mut requests = std::io::stdin().lines();
    for _ in 0..iterations {
        task.wait_for_request(&mut requests)?;
        let start = Instant::now();
        let (sandbox, created, ran) = if task.with_create {
            let (argv, _) = task.command();
            let mut spec = CommandSpec::new(argv[0]);
            spec.argv.extend(argv[1..].iter().map(Into::into));
            let (sandbox, mut handle) = Sandbox::create_and_start(options.clone(), &spec)
                .await
                .map_err(|e| format!("create and start {argv:?} failed: {e}"))?;
            let created = Instant::now();
            let ran = match handle.wait().await {
                Ok(output) if output.status.success() => Ok(()),
                Ok(output) => Err(format!("{argv:?} failed: {:?}", output.status)),
                Err(e) => Err(format!("{argv:?} failed: {e}")),
            };
            (sandbox, created, ran)
        } else {
            let sandbox = Sandbox::create(options.clone())
                .await
                .map_err(|e| format!("create failed: {e}"))?;
            let created = Instant::now();
            let ran = task.run(&sandbox).await;
            (sandbox, created, ran)
        };
        let run_end = Instant::now();
        let killed = sandbox.kill().await;
        let end = Instant::now();
        ran?;
        killed.map_err(|e| format!("kill failed: {e}"))?;
        task.report(start, created, run_end, end);
    }
    Ok(())
}

/// Times a pool hand-over + the task's command + kill, with a full pool
/// each time.
async fn time_pooled(
    options: SandboxOptions,
    size: usize,
    task: &Task,
    iterations: usize,
) -> Result<(), String> {
    let pool = SandboxPool::new(options, size).map_err(|e| format!("pool failed: {e}"))?;
    let mut requests = std::io::stdin().lines();
    for _ in 0..iterations {
        wait_full(&pool).await?;
        task.wait_for_request(&mut requests)?;
        let start = Instant::now();
        let sandbox = pool
            .create()
            .await
            .map_err(|e| format!("pool create failed: {e}"))?;
        let created = Instant::now();
        let ran = task.run(&sandbox).await;
        let run_end = Instant::now();
        let killed = sandbox.kill().await;
        let end = Instant::now();
        ran?;
        killed.map_err(|e| format!("kill failed: {e}"))?;
        task.report(start, created, run_end, end);
    }
    pool.close().await;
    Ok(())
}

/// Waits until every sandbox of `pool` is built, for up to a minute.
async fn wait_full(pool: &SandboxPool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.waiting() < pool.size() {
        if Instant::now() > deadline {
            return Err(format!(
                "the pool did not fill within 60 s ({} of {} waiting)",
                pool.waiting(),
                pool.size()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Creates the one sandbox that a task times its calls against.
async fn create_lasting(options: SandboxOptions) -> Result<Sandbox, String> {
    Sandbox::create(options.kill_on_drop(true))
        .await
        .map_err(|e| format!("create failed: {e}"))
}

/// Times `/bin/true` in one running sandbox.
async fn time_exec(
    options: SandboxOptions,
    iterations: usize,
    pause: Option<Duration>,
) -> Result<(), String> {
    let sandbox = create_lasting(options).await?;
    for _ in 0..iterations {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        let start = Instant::now();
        run_checked(&sandbox, &["/bin/true"]).await?;
        println!("{}", start.elapsed().as_nanos());
    }
    Ok(())
}

/// Times `run_code("1 + 1")` in one running sandbox, the first call
/// (which starts the context) included.
async fn time_run_code(
    options: SandboxOptions,
    iterations: usize,
    language: Option<String>,
) -> Result<(), String> {
    let sandbox = create_lasting(options).await?;
    for _ in 0..iterations {
        let start = Instant::now();
        let mut run = sandbox.run_code("1 + 1");
        if let Some(language) = &language {
            run = run.language(language.clone());
        }
        let execution = run.await.map_err(|e| format!("run_code failed: {e}"))?;
        let elapsed = start.elapsed();
        if execution.text() != Some("2") {
            return Err(format!("run_code returned {execution:?}"));
        }
        println!("{}", elapsed.as_nanos());
    }
    Ok(())
}

/// Times one connection through a forwarded port to an echo server in one
/// running sandbox.
async fn time_forward(options: SandboxOptions, iterations: usize) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let sandbox = create_lasting(options).await?;
    let server = "import socket\n\
                  s = socket.socket()\n\
                  s.bind(('127.0.0.1', 9000))\n\
                  s.listen(64)\n\
                  while True:\n\
                  \x20   c, _ = s.accept()\n\
                  \x20   c.sendall(c.recv(1))\n\
                  \x20   c.close()\n";
    sandbox
        .command("python3")
        .args(["-c", server])
        .timeout(None)
        .start()
        .await
        .map_err(|e| format!("starting the echo server failed: {e}"))?
        .disconnect();
    let host = sandbox
        .get_host(9000)
        .map_err(|e| format!("get_host failed: {e}"))?;
    let exchange = |host: String| async move {
        let mut stream = tokio::net::TcpStream::connect(&host).await?;
        stream.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        Ok::<_, std::io::Error>(())
    };
    // Until the server listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    while exchange(host.clone()).await.is_err() {
        if Instant::now() > deadline {
            return Err("the echo server did not answer within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..iterations {
        let start = Instant::now();
        exchange(host.clone())
            .await
            .map_err(|e| format!("the forwarded exchange failed: {e}"))?;
        println!("{}", start.elapsed().as_nanos());
    }
    Ok(())
}

/// Times the host's own fork, exec and wait of `/bin/true`.
fn time_host_exec(iterations: usize) -> Result<(), String> {
    for _ in 0..iterations {
        let start = Instant::now();
        let status = std::process::Command::new("/bin/true")
            .status()
            .map_err(|e| format!("/bin/true failed to start: {e}"))?;
        let elapsed = start.elapsed();
        if !status.success() {
            return Err(format!("/bin/true failed: {status}"));
        }
        println!("{}", elapsed.as_nanos());
    }
    Ok(())
}

/// Times connect + `/bin/true` + drop against one long-lived sandbox.
async fn time_connect(options: SandboxOptions, iterations: usize) -> Result<(), String> {
    let sandbox = create_lasting(options).await?;
    for _ in 0..iterations {
        let start = Instant::now();
        let connected = Sandbox::connect(sandbox.id())
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        run_checked(&connected, &["/bin/true"]).await?;
        drop(connected);
        println!("{}", start.elapsed().as_nanos());
    }
    Ok(())
}

/// Times pause + resume of one sandbox.
async fn time_pause_resume(options: SandboxOptions, iterations: usize) -> Result<(), String> {
    let sandbox = create_lasting(options).await?;
    for _ in 0..iterations {
        let start = Instant::now();
        let paused = sandbox.pause().await;
        let resumed = sandbox.resume().await;
        match (paused, resumed) {
            (Ok(true), Ok(true)) => println!("{}", start.elapsed().as_nanos()),
            other => return Err(format!("pause or resume failed: {other:?}")),
        }
    }
    Ok(())
}
