//! The stateful code interpreter: `run_code` keeps Python's variables
//! between calls, captures output of the code and its child processes,
//! reports exceptions and rich values, and survives timeouts and crashes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use soulbox_core::{CodeContextOptions, CodeEvent, Error, Execution, SandboxOptions};
use soulbox_tests::*;

/// Asserts that a run_code call timed out, and whether its context was
/// restarted.
fn assert_timed_out(result: &Result<Execution, Error>, restarted: bool) {
    match result {
        Err(Error::CodeTimedOut {
            context_restarted, ..
        }) => assert_eq!(*context_restarted, restarted, "context_restarted"),
        other => panic!("expected CodeTimedOut, got {other:?}"),
    }
}

#[tokio::test]
async fn variables_persist_between_executions() {
    if !require_root("variables_persist_between_executions") {
        return;
    }
    let sandbox = sandbox().await;
    let first = within_limit("first run_code", sandbox.run_code("x = 6 * 7\nimport math"))
        .await
        .expect("run x = 6 * 7");
    assert_eq!(first.error, None);
    assert!(first.results.is_empty(), "an assignment has no value");
    let second = within_limit("second run_code", sandbox.run_code("x + math.floor(0.5)"))
        .await
        .expect("run x");
    assert_eq!(second.text(), Some("42"));
    assert_eq!(second.execution_count, Some(2));
}

#[tokio::test]
async fn output_of_code_and_child_processes_is_captured() {
    if !require_root("output_of_code_and_child_processes_is_captured") {
        return;
    }
    let sandbox = sandbox().await;
    let code = "import os, sys\n\
                print('from print')\n\
                print('to stderr', file=sys.stderr)\n\
                os.system('echo from a child; echo child error >&2')\n\
                'done'";
    let execution = within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("run the code");
    assert_eq!(execution.logs.stdout.concat(), "from print\nfrom a child\n");
    assert_eq!(execution.logs.stderr.concat(), "to stderr\nchild error\n");
    assert_eq!(execution.text(), Some("'done'"));
}

#[tokio::test]
async fn exception_is_reported_with_its_traceback() {
    if !require_root("exception_is_reported_with_its_traceback") {
        return;
    }
    let sandbox = sandbox().await;
    let code = "def divide(a, b):\n    return a / b\n\nprint('before')\ndivide(1, 0)";
    let execution = within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("an exception is not an error of the call");
    let error = execution.error.expect("the exception is reported");
    assert_eq!(error.name, "ZeroDivisionError");
    assert_eq!(error.value, "division by zero");
    assert!(
        error.traceback.contains("return a / b"),
        "the traceback shows the failing line: {}",
        error.traceback
    );
    assert!(
        !error.traceback.contains("kernel.py") && !error.traceback.contains("<string>"),
        "the traceback starts at the executed code: {}",
        error.traceback
    );
    assert_eq!(execution.logs.stdout.concat(), "before\n");

    let syntax = within_limit("run_code", sandbox.run_code("def broken(:"))
        .await
        .expect("a syntax error is not an error of the call");
    assert_eq!(syntax.error.map(|e| e.name).as_deref(), Some("SyntaxError"));
}

#[tokio::test]
async fn rich_values_and_display_become_results() {
    if !require_root("rich_values_and_display_become_results") {
        return;
    }
    let sandbox = sandbox().await;
    let code = "class Table:\n\
                \x20   def _repr_html_(self):\n\
                \x20       return '<table></table>'\n\
                \x20   def _repr_json_(self):\n\
                \x20       return {'rows': 0}\n\
                display('shown first')\n\
                Table()";
    let execution = within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("run the code");
    assert_eq!(execution.results.len(), 2, "{:?}", execution.results);
    let displayed = &execution.results[0];
    assert!(!displayed.is_main_result);
    assert_eq!(displayed.text(), Some("'shown first'"));
    let main = &execution.results[1];
    assert!(main.is_main_result);
    assert_eq!(main.get("html"), Some("<table></table>"));
    assert_eq!(main.get("json"), Some(r#"{"rows": 0}"#));
}

/// The start of every PNG file, `\x89PNG\r\n\x1a\n`, in base64.
const PNG_BASE64_START: &str = "iVBORw0KGgo";

/// Returns the PNG results of an execution.
fn png_results(execution: &Execution) -> Vec<&str> {
    execution
        .results
        .iter()
        .filter_map(|result| result.get("png"))
        .collect()
}

#[tokio::test]
async fn matplotlib_figures_become_png_results() {
    if !require_root("matplotlib_figures_become_png_results") {
        return;
    }
    let sandbox = sandbox().await;
    let import = within_limit(
        "import pyplot",
        sandbox.run_code("import matplotlib.pyplot as plt"),
    )
    .await
    .expect("run the import");
    assert_eq!(
        import.error, None,
        "the host's python3 needs matplotlib (Debian: python3-matplotlib)"
    );

    let shown = "plt.plot([1, 2, 3])\nplt.show()\nprint('after show')";
    let shown = within_limit("plt.show()", sandbox.run_code(shown))
        .await
        .expect("run plt.show()");
    assert_eq!(shown.error, None);
    let pngs = png_results(&shown);
    assert_eq!(pngs.len(), 1, "one figure: {:?}", shown.results);
    assert!(
        pngs[0].starts_with(PNG_BASE64_START),
        "a PNG: {}",
        &pngs[0][..20]
    );
    assert!(
        pngs[0].len() > 1000,
        "a drawn figure, {} characters",
        pngs[0].len()
    );
    let figure = shown.results.iter().find(|r| r.get("png").is_some());
    let text = figure.and_then(|figure| figure.text()).unwrap_or_default();
    assert!(text.starts_with("<Figure size"), "{text}");
    assert_eq!(shown.logs.stdout.concat(), "after show\n");

    let unshown = "plt.figure()\nplt.bar(['a'], [1])\nplt.figure()\nplt.plot([1])\nNone";
    let unshown = within_limit("figures without show", sandbox.run_code(unshown))
        .await
        .expect("run two figures without show()");
    assert_eq!(png_results(&unshown).len(), 2, "{:?}", unshown.results);

    let failed = within_limit(
        "a figure, then an exception",
        sandbox.run_code("plt.plot([1])\n1 / 0"),
    )
    .await
    .expect("run a failing cell");
    let error = failed.error.as_ref().map(|e| e.name.as_str());
    assert_eq!(error, Some("ZeroDivisionError"));
    assert_eq!(png_results(&failed).len(), 1, "{:?}", failed.results);

    // A figure that cannot be drawn (bad mathtext) fails the execution with
    // a note naming it, and the figure after it is still sent.
    let bad_figure =
        "plt.figure()\nplt.title(r'$\\notacommand{x}$')\nplt.figure()\nplt.plot([2])\nNone";
    let drawn = within_limit("an undrawable figure", sandbox.run_code(bad_figure))
        .await
        .expect("run a cell whose first figure cannot be drawn");
    let drawing_error = drawn.error.as_ref().expect("the drawing error is reported");
    assert!(
        drawing_error
            .traceback
            .contains("matplotlib figure 1 for display"),
        "{}",
        drawing_error.traceback
    );
    assert_eq!(png_results(&drawn).len(), 1, "{:?}", drawn.results);

    let open = within_limit(
        "count open figures",
        sandbox.run_code("len(plt.get_fignums())"),
    )
    .await
    .expect("count the open figures");
    assert_eq!(open.text(), Some("0"), "shown figures are closed");
    assert!(png_results(&open).is_empty());
}

/// A finder of the code's own that calls every other finder in turn, as
/// import hooks do, and a stand-in pyplot module, such as a test's stub.
#[tokio::test]
async fn pyplot_hooks_and_stubs_keep_working() {
    if !require_root("pyplot_hooks_and_stubs_keep_working") {
        return;
    }
    let sandbox = sandbox().await;
    let hook = [
        "import sys",
        "class Hook:",
        "    def find_spec(self, name, path=None, target=None):",
        "        for finder in sys.meta_path:",
        "            if finder is not self and hasattr(finder, 'find_spec'):",
        "                spec = finder.find_spec(name, path, target)",
        "                if spec is not None:",
        "                    return spec",
        "        return None",
        "sys.meta_path.insert(0, Hook())",
        "import matplotlib.pyplot as plt",
        "plt.plot([1, 2])",
        "None",
    ]
    .join("\n");
    let hooked = within_limit("import pyplot under a hook", sandbox.run_code(&hook))
        .await
        .expect("run the hooked import");
    assert_eq!(hooked.error, None);
    assert_eq!(png_results(&hooked).len(), 1, "{:?}", hooked.results);

    let stub = [
        "import sys, types",
        "sys.modules['matplotlib.pyplot'] = types.ModuleType('matplotlib.pyplot')",
        "1",
    ]
    .join("\n");
    let stubbed = within_limit("stub pyplot", sandbox.run_code(&stub))
        .await
        .expect("run the stub");
    assert_eq!(stubbed.error, None);
    let next = within_limit("a cell after the stub", sandbox.run_code("2"))
        .await
        .expect("run the next cell");
    assert_eq!(next.error, None);
    assert_eq!(next.text(), Some("2"));
}

#[tokio::test]
async fn events_stream_in_order_before_the_call_returns() {
    if !require_root("events_stream_in_order_before_the_call_returns") {
        return;
    }
    let sandbox = sandbox().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let code = "import time\nprint('one')\ntime.sleep(0.2)\nprint('two')\n3";
    within_limit(
        "run_code",
        sandbox.run_code(code).on_event(move |event| {
            sink.lock().unwrap().push((Instant::now(), event));
        }),
    )
    .await
    .expect("run the code");

    let seen = seen.lock().unwrap();
    let kinds: Vec<String> = seen
        .iter()
        .map(|(_, event)| match event {
            CodeEvent::Stdout(text) => format!("stdout {text:?}"),
            CodeEvent::Result(result) => format!("result {:?}", result.text()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "stdout \"one\\n\"",
            "stdout \"two\\n\"",
            "result Some(\"3\")"
        ]
    );
    let gap = seen[1].0 - seen[0].0;
    assert!(
        gap >= Duration::from_millis(150),
        "the first line arrived while the code still ran, {gap:?} before the second"
    );
}

#[tokio::test]
async fn timeout_interrupts_and_keeps_the_variables() {
    if !require_root("timeout_interrupts_and_keeps_the_variables") {
        return;
    }
    let sandbox = sandbox().await;
    within_limit("run_code", sandbox.run_code("kept = 'still here'"))
        .await
        .expect("set a variable");
    let started = Instant::now();
    let timed_out = within_limit(
        "run_code",
        sandbox
            .run_code("import time\ntime.sleep(30)")
            .timeout(Some(Duration::from_millis(500))),
    )
    .await;
    assert_timed_out(&timed_out, false);
    assert!(started.elapsed() < Duration::from_secs(10));
    let after = within_limit("run_code", sandbox.run_code("kept"))
        .await
        .expect("the context still runs");
    assert_eq!(after.text(), Some("'still here'"));
}

#[tokio::test]
async fn code_that_ignores_the_interrupt_restarts_its_context() {
    if !require_root("code_that_ignores_the_interrupt_restarts_its_context") {
        return;
    }
    let sandbox = sandbox().await;
    let code = "import signal, time\n\
                signal.signal(signal.SIGINT, signal.SIG_IGN)\n\
                lost = 1\n\
                time.sleep(30)";
    let timed_out = within_limit(
        "run_code",
        sandbox
            .run_code(code)
            .timeout(Some(Duration::from_millis(300))),
    )
    .await;
    assert_timed_out(&timed_out, true);
    let after = within_limit("run_code", sandbox.run_code("'lost' in globals()"))
        .await
        .expect("a new context starts");
    assert_eq!(after.text(), Some("False"));
}

/// Code that fills the memory limit gets the interpreter OOM-killed, and
/// the error names the memory limit rather than only "killed by signal 9".
#[tokio::test]
async fn oom_killed_interpreter_names_memory_limit() {
    if !require_root("oom_killed_interpreter_names_memory_limit") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.memory_limit = Some(256 << 20);
    let sandbox = within_limit("create", soulbox_core::Sandbox::create(options))
        .await
        .expect("create a sandbox with a memory limit");
    // bytearray zero-fills, so every page is touched.
    let killed = within_limit("run_code", sandbox.run_code("b = bytearray(1 << 30)")).await;
    match killed {
        Err(Error::Protocol(message)) => assert!(
            message.contains("memory limit"),
            "the message names the memory limit: {message}"
        ),
        other => panic!("expected the OOM kill to be reported, got {other:?}"),
    }
    let after = within_limit("run_code", sandbox.run_code("1 + 1"))
        .await
        .expect("the next call starts a new interpreter");
    assert_eq!(after.text(), Some("2"));
}

#[tokio::test]
async fn crashed_interpreter_is_reported_and_replaced() {
    if !require_root("crashed_interpreter_is_reported_and_replaced") {
        return;
    }
    let sandbox = sandbox().await;
    let crashed = within_limit("run_code", sandbox.run_code("import os\nos._exit(7)")).await;
    match crashed {
        Err(Error::Protocol(message)) => assert!(
            message.contains("exit code 7"),
            "the message names the exit: {message}"
        ),
        other => panic!("expected the crash to be reported, got {other:?}"),
    }
    let after = within_limit("run_code", sandbox.run_code("1 + 1"))
        .await
        .expect("the next call starts a new interpreter");
    assert_eq!(after.text(), Some("2"));
}

#[tokio::test]
async fn contexts_are_separate() {
    if !require_root("contexts_are_separate") {
        return;
    }
    let sandbox = sandbox().await;
    let context = within_limit(
        "create_code_context",
        sandbox.create_code_context(CodeContextOptions {
            cwd: Some("/tmp".into()),
            ..CodeContextOptions::default()
        }),
    )
    .await
    .expect("create a context");
    assert_eq!(context.language, "python");
    within_limit("run_code", sandbox.run_code("name = 'default'"))
        .await
        .expect("run in the default context");
    let inside = within_limit(
        "run_code",
        sandbox
            .run_code("import os\n(os.getcwd(), 'name' in globals())")
            .context(&context),
    )
    .await
    .expect("run in the new context");
    assert_eq!(inside.text(), Some("('/tmp', False)"));
    let ids: Vec<String> = sandbox
        .list_code_contexts()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(ids.contains(&context.id), "{ids:?}");
    assert_eq!(ids.len(), 2, "{ids:?}");

    within_limit(
        "remove_code_context",
        sandbox.remove_code_context(&context.id),
    )
    .await
    .expect("remove the context");
    let removed = within_limit("run_code", sandbox.run_code("1").context(&context)).await;
    assert!(matches!(removed, Err(Error::NotFound(_))), "{removed:?}");
}

#[tokio::test]
async fn per_execution_variables_do_not_stay() {
    if !require_root("per_execution_variables_do_not_stay") {
        return;
    }
    let sandbox = sandbox().await;
    let with = within_limit(
        "run_code",
        sandbox
            .run_code("import os\nos.environ.get('GREETING')")
            .env("GREETING", "hello"),
    )
    .await
    .expect("run with a variable");
    assert_eq!(with.text(), Some("'hello'"));
    let without = within_limit(
        "run_code",
        sandbox.run_code("import os\nos.environ.get('GREETING', 'unset')"),
    )
    .await
    .expect("run without it");
    assert_eq!(without.text(), Some("'unset'"));
}

#[tokio::test]
async fn unsupported_language_and_missing_programs_are_named() {
    if !require_root("unsupported_language_and_missing_programs_are_named") {
        return;
    }
    let sandbox = sandbox().await;
    let r = sandbox.run_code("cat('hi')").language("r").await;
    match r {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("\"r\""), "{message}");
            assert!(message.contains("\"js\""), "names what runs: {message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    // A template with a shell and no python3.
    let dir = std::env::temp_dir().join(unique_name("nopython"));
    std::fs::create_dir_all(dir.join("bin")).expect("make the template");
    let busybox = std::path::Path::new("/bin/busybox");
    if !busybox.exists() {
        panic!("this test needs /bin/busybox on the host (Debian's busybox-static)");
    }
    copy_program(busybox, &dir.join("bin/sh"), 0o755);
    let bare = soulbox_core::Sandbox::create(
        SandboxOptions::default()
            .kill_on_drop(true)
            .template(dir.to_str().expect("a UTF-8 temporary path")),
    )
    .await
    .expect("create a sandbox on the template");
    let missing = within_limit("run_code", bare.run_code("1")).await;
    let missing_node = within_limit("run_code", bare.run_code("1").language("js")).await;
    drop(bare);
    let _ = std::fs::remove_dir_all(&dir);
    match missing {
        Err(Error::Unsupported { reason, .. }) => assert!(reason.contains("python3"), "{reason}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    match missing_node {
        Err(Error::Unsupported { reason, .. }) => {
            assert!(reason.contains("no node on its PATH"), "{reason}")
        }
        other => panic!("expected Unsupported for js, got {other:?}"),
    }
}

#[tokio::test]
async fn kept_output_is_bounded() {
    if !require_root("kept_output_is_bounded") {
        return;
    }
    let sandbox = sandbox().await;
    let mut streamed = 0;
    let execution = within_limit(
        "run_code",
        sandbox
            .run_code("import sys\nsys.stdout.write('x' * (17 << 20))\nNone")
            .on_event(|event| {
                if let CodeEvent::Stdout(text) = event {
                    streamed += text.len();
                }
            }),
    )
    .await
    .expect("run the code");
    assert_eq!(streamed, 17 << 20, "the callback sees every byte");
    let kept = execution.logs.stdout.concat();
    assert!(
        kept.len() < soulbox_core::MAX_KEPT_LOG_BYTES + 1024,
        "kept {} bytes",
        kept.len()
    );
    let note = execution.logs.stdout.last().expect("a note ends the logs");
    assert!(note.contains("kept the first 16 MiB"), "{note:?}");
}

#[tokio::test]
async fn oversized_reply_line_stops_the_context() {
    if !require_root("oversized_reply_line_stops_the_context") {
        return;
    }
    let sandbox = sandbox().await;
    // The kernel program's reply stream, reached the way hostile code in
    // the sandbox could: a line of 65 MiB without a line end.
    let code = "import os\n\
                replies = display.__globals__['_replies']\n\
                os.write(replies.fileno(), b'x' * (65 << 20))";
    let flooded = within_limit("run_code", sandbox.run_code(code)).await;
    match flooded {
        Err(Error::Protocol(message)) => assert!(message.contains("64 MiB"), "{message}"),
        other => panic!("expected the flood to stop the context, got {other:?}"),
    }
    let after = within_limit("run_code", sandbox.run_code("'fresh'"))
        .await
        .expect("the next call starts a new interpreter");
    assert_eq!(after.text(), Some("'fresh'"));
}

#[tokio::test]
async fn interrupt_stops_the_code_and_keeps_the_context() {
    if !require_root("interrupt_stops_the_code_and_keeps_the_context") {
        return;
    }
    let sandbox = sandbox().await;
    within_limit("run_code", sandbox.run_code("kept = 1"))
        .await
        .expect("set a variable");
    let idle = sandbox.interrupt_code_context("default-python");
    assert!(matches!(idle, Ok(false)), "nothing runs yet: {idle:?}");
    let unknown = sandbox.interrupt_code_context("no-such-context");
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");

    let runner = sandbox.clone();
    let long = tokio::spawn(async move {
        runner
            .run_code("import time\nprint('sleeping')\ntime.sleep(30)")
            .await
    });
    // The request is in as soon as the execution is registered, before its
    // code starts; the interrupt then waits for the start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sandbox
        .interrupt_code_context("default-python")
        .expect("the default context exists")
    {
        assert!(Instant::now() < deadline, "the execution never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let execution = within_limit("the interrupted execution", long)
        .await
        .expect("the execution task panicked")
        .expect("an interrupt is not an error of the call");
    let error = execution.error.expect("the interrupt is reported");
    assert_eq!(error.name, "KeyboardInterrupt");
    assert!(
        !error.traceback.contains("<string>"),
        "the traceback shows only the cell: {}",
        error.traceback
    );
    let after = within_limit("run_code", sandbox.run_code("kept"))
        .await
        .expect("the context still runs");
    assert_eq!(after.text(), Some("1"));
}

#[tokio::test]
async fn exception_with_failing_str_keeps_the_context() {
    if !require_root("exception_with_failing_str_keeps_the_context") {
        return;
    }
    let sandbox = sandbox().await;
    within_limit("run_code", sandbox.run_code("kept = 1"))
        .await
        .expect("set a variable");
    let code = "class Broken(Exception):\n\
                \x20   def __str__(self):\n\
                \x20       raise RuntimeError('no text')\n\
                raise Broken()";
    let execution = within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("an exception is not an error of the call");
    let error = execution.error.expect("the exception is reported");
    assert_eq!(error.name, "Broken");
    assert_eq!(error.value, "<exception str() failed>");
    assert!(
        error.traceback.contains("raise Broken()"),
        "{}",
        error.traceback
    );
    let after = within_limit("run_code", sandbox.run_code("kept"))
        .await
        .expect("the context still runs");
    assert_eq!(after.text(), Some("1"));
}

#[tokio::test]
async fn lone_surrogates_reach_the_host_escaped() {
    if !require_root("lone_surrogates_reach_the_host_escaped") {
        return;
    }
    let sandbox = sandbox().await;
    // A file name that is not UTF-8 decodes to a lone surrogate in Python,
    // which JSON readers reject.
    let name = "name = b'report-\\xff.csv'.decode('utf-8', 'surrogateescape')\n";
    let raised = within_limit(
        "run_code",
        sandbox.run_code(format!("{name}raise ValueError('cannot read ' + name)")),
    )
    .await
    .expect("an exception is not an error of the call");
    let error = raised.error.expect("the exception is reported");
    assert_eq!(error.name, "ValueError");
    assert_eq!(error.value, "cannot read report-\\udcff.csv");

    let code = format!(
        "{name}class Page:\n\
         \x20   def _repr_html_(self):\n\
         \x20       return '<b>' + name + '</b>'\n\
         Page()"
    );
    let shown = within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("run the code");
    assert_eq!(shown.results.len(), 1, "{:?}", shown.results);
    assert_eq!(
        shown.results[0].get("html"),
        Some("<b>report-\\udcff.csv</b>")
    );

    let plain = within_limit("run_code", sandbox.run_code("'é ✓ 😀'"))
        .await
        .expect("run the code");
    assert_eq!(plain.text(), Some("'é ✓ 😀'"));
}

#[tokio::test]
async fn stopped_interpreter_cannot_outlast_the_timeout() {
    if !require_root("stopped_interpreter_cannot_outlast_the_timeout") {
        return;
    }
    let sandbox = sandbox().await;
    // The interpreter stops itself between executions, so it reads no
    // more requests, and a request larger than the stdin pipe cannot be
    // written whole.
    let code = "import os, signal, threading\n\
                stop = lambda: os.kill(os.getpid(), signal.SIGSTOP)\n\
                threading.Timer(0.3, stop).start()";
    within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("start the timer");
    tokio::time::sleep(Duration::from_millis(800)).await;

    let large = format!("x = 1  # {}", "a".repeat(1 << 20));
    let started = Instant::now();
    let timed_out = within_limit(
        "run_code",
        sandbox
            .run_code(large)
            .timeout(Some(Duration::from_secs(2))),
    )
    .await;
    assert_timed_out(&timed_out, true);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "returned after {:?}",
        started.elapsed()
    );
    let after = within_limit("run_code", sandbox.run_code("'fresh'"))
        .await
        .expect("a new context starts");
    assert_eq!(after.text(), Some("'fresh'"));
}

#[tokio::test]
async fn dropped_call_leaves_the_context_usable() {
    if !require_root("dropped_call_leaves_the_context_usable") {
        return;
    }
    let sandbox = sandbox().await;
    within_limit("run_code", sandbox.run_code("kept = 1"))
        .await
        .expect("set a variable");
    // ctypes.PyDLL calls keep the GIL, so the interpreter reads nothing
    // for 2 s and the large request below is cut short when its call is
    // dropped.
    let busy = sandbox.run_code("import ctypes\nctypes.PyDLL(None).sleep(2)");
    let dropped = tokio::time::timeout(Duration::from_millis(300), busy).await;
    assert!(dropped.is_err(), "the busy call ended early: {dropped:?}");
    let large = format!("y = 1  # {}", "a".repeat(2 << 20));
    let cut = tokio::time::timeout(Duration::from_millis(300), sandbox.run_code(large)).await;
    assert!(cut.is_err(), "the large call ended early: {cut:?}");
    let registered = sandbox.interrupt_code_context("default-python");
    assert!(
        matches!(registered, Ok(false)),
        "a dropped call leaves no execution to interrupt: {registered:?}"
    );

    let after = within_limit(
        "run_code",
        sandbox
            .run_code("kept")
            .timeout(Some(Duration::from_secs(10))),
    )
    .await
    .expect("the context still runs");
    assert_eq!(after.text(), Some("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn late_interrupt_spares_the_next_execution() {
    if !require_root("late_interrupt_spares_the_next_execution") {
        return;
    }
    let sandbox = sandbox().await;
    within_limit("run_code", sandbox.run_code("import time"))
        .await
        .expect("import time");
    let runner = sandbox.clone();
    let first = tokio::spawn(async move { runner.run_code("time.sleep(1)\n'first'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A stopped PID 1 is as slow as a busy one can be: it handles requests
    // only once it runs again.
    let pid1 = sandbox.pid();
    // SAFETY: kill takes integers; pid1 is this test's sandbox.
    assert_eq!(unsafe { libc::kill(pid1, libc::SIGSTOP) }, 0);
    let requested = sandbox.interrupt_code_context("default-python");
    let first = within_limit("the first execution", first).await;

    let runner = sandbox.clone();
    let second = tokio::spawn(async move { runner.run_code("time.sleep(1)\n'second'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid1, libc::SIGCONT) }, 0);
    let second = within_limit("the second execution", second)
        .await
        .expect("the second execution's task panicked")
        .expect("run the second execution");

    assert!(matches!(requested, Ok(true)), "{requested:?}");
    let first = first
        .expect("the first execution's task panicked")
        .expect("run the first execution");
    assert!(
        first.error.is_none() || first.error.as_ref().unwrap().name == "KeyboardInterrupt",
        "{first:?}"
    );
    assert_eq!(
        second.error, None,
        "the interrupt reached the next execution"
    );
    assert_eq!(second.text(), Some("'second'"));
}

#[tokio::test]
async fn forked_child_ends_with_the_cell() {
    if !require_root("forked_child_ends_with_the_cell") {
        return;
    }
    let sandbox = sandbox().await;
    // The child returns from the cell into the interpreter's own loop,
    // where it would compete with its parent for requests.
    let code = "import os, time\n\
                pid = os.fork()\n\
                if pid == 0:\n\
                \x20   print('from the child')\n\
                else:\n\
                \x20   time.sleep(0.5)\n\
                'value'";
    let execution = within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("run the code");
    assert_eq!(execution.error, None);
    assert_eq!(execution.results.len(), 1, "{:?}", execution.results);
    assert_eq!(execution.text(), Some("'value'"));
    assert_eq!(execution.logs.stdout.concat(), "from the child\n");

    let reaped = within_limit(
        "run_code",
        sandbox
            .run_code("os.waitpid(pid, 0)[1]")
            .timeout(Some(Duration::from_secs(10))),
    )
    .await
    .expect("the child has exited");
    assert_eq!(reaped.text(), Some("0"), "the child's exit status");
    let count = within_limit("run_code", sandbox.run_code("1 + 1"))
        .await
        .expect("run after the fork");
    assert_eq!(count.execution_count, Some(3));
}

#[tokio::test]
async fn redirected_stdout_gets_only_the_code_output() {
    if !require_root("redirected_stdout_gets_only_the_code_output") {
        return;
    }
    let sandbox = sandbox().await;
    // Code that sends descriptor 1, and so its child processes' output, to
    // a file of its own.
    let code = "import os\n\
                log = open('/tmp/cell.log', 'wb')\n\
                saved = os.dup(1)\n\
                os.dup2(log.fileno(), 1)\n\
                print('to the log')";
    let started = Instant::now();
    within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("redirect stdout");
    let redirected = started.elapsed();
    let started = Instant::now();
    within_limit(
        "run_code",
        sandbox.run_code("os.system('echo from a child')"),
    )
    .await
    .expect("run a child process");
    let child = started.elapsed();
    let content = within_limit(
        "run_code",
        sandbox.run_code("os.dup2(saved, 1)\nprint('back')\nopen('/tmp/cell.log', 'rb').read()"),
    )
    .await
    .expect("read the log");

    assert_eq!(
        content.text(),
        Some("b'to the log\\nfrom a child\\n'"),
        "the file holds what the code wrote, and nothing of the interpreter's"
    );
    assert_eq!(content.logs.stdout.concat(), "back\n");
    // The interpreter waits up to 2 s for a descriptor's own pipe to catch
    // up, which a redirected descriptor never does.
    assert!(redirected < Duration::from_millis(1500), "{redirected:?}");
    assert!(child < Duration::from_millis(1500), "{child:?}");
}

#[tokio::test]
async fn restart_and_remove_end_running_code() {
    if !require_root("restart_and_remove_end_running_code") {
        return;
    }
    let sandbox = sandbox().await;
    let context = within_limit(
        "create_code_context",
        sandbox.create_code_context(CodeContextOptions::default()),
    )
    .await
    .expect("create a context");
    let endless = "import time\ntime.sleep(3600)";
    let default_runner = sandbox.clone();
    let in_default =
        tokio::spawn(async move { default_runner.run_code(endless).timeout(None).await });
    let context_runner = sandbox.clone();
    let in_context = {
        let context = context.clone();
        tokio::spawn(async move {
            context_runner
                .run_code(endless)
                .context(&context)
                .timeout(None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    within_limit(
        "restart_code_context",
        sandbox.restart_code_context("default-python"),
    )
    .await
    .expect("restart the default context");
    within_limit(
        "remove_code_context",
        sandbox.remove_code_context(&context.id),
    )
    .await
    .expect("remove the context");

    let ended = within_limit("the default context's execution", in_default)
        .await
        .expect("the execution task panicked");
    assert!(matches!(ended, Err(Error::Protocol(_))), "{ended:?}");
    let ended = within_limit("the removed context's execution", in_context)
        .await
        .expect("the execution task panicked");
    assert!(matches!(ended, Err(Error::Protocol(_))), "{ended:?}");
    let after = within_limit("run_code", sandbox.run_code("1 + 1"))
        .await
        .expect("the restarted context runs");
    assert_eq!(after.text(), Some("2"));
}

#[tokio::test]
async fn cell_definitions_can_be_pickled() {
    if !require_root("cell_definitions_can_be_pickled") {
        return;
    }
    let sandbox = sandbox().await;
    // pickle finds classes and functions through sys.modules['__main__'],
    // as multiprocessing does to send a function to its workers.
    let define = "class Point:\n\
                  \x20   pass\n\
                  def double(x):\n\
                  \x20   return 2 * x";
    within_limit("run_code", sandbox.run_code(define))
        .await
        .expect("define a class and a function");
    let pickled = within_limit(
        "run_code",
        sandbox.run_code("import pickle\ntype(pickle.loads(pickle.dumps(Point()))).__name__"),
    )
    .await
    .expect("pickle an instance");
    assert_eq!(pickled.error, None);
    assert_eq!(pickled.text(), Some("'Point'"));

    let pool = "import multiprocessing\n\
                with multiprocessing.get_context('fork').Pool(2) as pool:\n\
                \x20   doubled = pool.map(double, [1, 2, 3])\n\
                doubled";
    let mapped = within_limit("run_code", sandbox.run_code(pool))
        .await
        .expect("map over a process pool");
    assert_eq!(mapped.error, None);
    assert_eq!(mapped.text(), Some("[2, 4, 6]"));
}

#[tokio::test]
async fn context_restarts_after_a_paused_timeout() {
    if !require_root("context_restarts_after_a_paused_timeout") {
        return;
    }
    let sandbox = sandbox().await;
    within_limit("run_code", sandbox.run_code("kept = 1"))
        .await
        .expect("start the context");
    assert!(sandbox.pause().await.expect("pause the sandbox"));
    // The frozen interpreter never replies, and the kill that restarts it
    // waits in the frozen PID 1 until the resume.
    let frozen = within_limit(
        "run_code",
        sandbox
            .run_code("kept")
            .timeout(Some(Duration::from_secs(1))),
    )
    .await;
    assert_timed_out(&frozen, true);
    assert!(sandbox.resume().await.expect("resume the sandbox"));

    let after = within_limit("run_code", sandbox.run_code("'kept' in globals()"))
        .await
        .expect("a new interpreter starts once the old one has ended");
    assert_eq!(after.text(), Some("False"));
}

#[tokio::test]
async fn forged_result_keeps_known_formats_only() {
    if !require_root("forged_result_keeps_known_formats_only") {
        return;
    }
    let sandbox = sandbox().await;
    // Hostile code writes results of its own to the reply stream. Every
    // entry of a format map stays in memory, so unknown names with empty
    // values would escape the bound on kept result bytes.
    let code = "import json\n\
                replies = display.__globals__['_replies']\n\
                current = display.__globals__['_current']['id']\n\
                formats = {'name%d' % i: '' for i in range(1000)}\n\
                formats['text'] = 'forged'\n\
                line = {'id': current, 'type': 'result', 'main': False, 'formats': formats}\n\
                replies.write(json.dumps(line) + '\\n')\n\
                replies.flush()";
    let execution = within_limit("run_code", sandbox.run_code(code))
        .await
        .expect("run the code");
    assert_eq!(execution.error, None);
    assert_eq!(execution.results.len(), 1, "{:?}", execution.results.len());
    let names: Vec<&String> = execution.results[0].formats.keys().collect();
    assert_eq!(names, ["text"]);
    assert_eq!(execution.results[0].text(), Some("forged"));
}

#[tokio::test]
async fn late_thread_output_reaches_the_next_execution() {
    if !require_root("late_thread_output_reaches_the_next_execution") {
        return;
    }
    let sandbox = sandbox().await;
    let first = within_limit(
        "run_code",
        sandbox.run_code(
            "import threading\n\
             threading.Timer(0.3, lambda: print('late line', flush=True)).start()",
        ),
    )
    .await
    .expect("start the thread");
    assert!(first.logs.stdout.is_empty(), "{:?}", first.logs.stdout);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let next = within_limit("run_code", sandbox.run_code("1"))
        .await
        .expect("run the next cell");
    assert_eq!(next.logs.stdout.concat(), "late line\n");
    assert_eq!(next.text(), Some("1"));
}
