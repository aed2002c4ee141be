//! The code interpreter's JavaScript contexts (`language("js")`): Node.js
//! keeps declarations between calls, top-level `await` works, output of
//! the code and of its child processes is captured, and errors, timeouts
//! and crashes are reported as for Python. Needs `node` on the host, which
//! the `host` template shows inside. A template without node is tested in
//! code_interpreter.rs.

use std::time::{Duration, Instant};

use soulbox_core::{CodeContextOptions, Error, Execution};
use soulbox_tests::*;

/// Runs `code` in the sandbox's default JavaScript context.
async fn js(sandbox: &soulbox_core::Sandbox, code: &str) -> Execution {
    within_limit("run_code", sandbox.run_code(code).language("js"))
        .await
        .unwrap_or_else(|e| panic!("run {code:?}: {e}"))
}

#[tokio::test]
async fn declarations_persist_and_top_level_await_works() {
    if !require_root("declarations_persist_and_top_level_await_works") {
        return;
    }
    let sandbox = sandbox().await;
    let first = js(&sandbox, "let x = 41").await;
    assert_eq!(first.error, None);
    assert!(first.results.is_empty(), "a declaration has no value");
    assert_eq!(js(&sandbox, "x + 1").await.text(), Some("42"));

    let awaited = js(
        &sandbox,
        "const f = async () => 7;\nlet y = await f();\ny * 2",
    )
    .await;
    assert_eq!(awaited.error, None, "{awaited:?}");
    assert_eq!(awaited.text(), Some("14"));
    // Declarations of a cell that awaited stay, as in Node's REPL, and
    // both `require` and `import()` load modules.
    let after = js(
        &sandbox,
        "[y, typeof f, require('os').platform(), (await import('path')).sep]",
    )
    .await;
    assert_eq!(after.error, None, "{after:?}");
    assert_eq!(after.text(), Some("[ 7, 'function', 'linux', '/' ]"));
    assert!(
        after.logs.stderr.is_empty(),
        "no warning of node's: {after:?}"
    );
    assert_eq!(after.execution_count, Some(4));

    let contexts = sandbox.list_code_contexts();
    assert_eq!(contexts.len(), 1, "{contexts:?}");
    assert_eq!(contexts[0].id, "default-js");
    assert_eq!(contexts[0].language, "js");
}

#[tokio::test]
async fn output_of_code_and_child_processes_is_captured() {
    if !require_root("output_of_code_and_child_processes_is_captured") {
        return;
    }
    let sandbox = sandbox().await;
    let code = "console.log('from console');\n\
                console.error('to stderr');\n\
                require('child_process').execSync('echo from a child; echo child error >&2', \
                {stdio: 'inherit'});\n\
                'done'";
    let execution = js(&sandbox, code).await;
    assert_eq!(
        execution.logs.stdout.concat(),
        "from console\nfrom a child\n"
    );
    assert_eq!(execution.logs.stderr.concat(), "to stderr\nchild error\n");
    assert_eq!(execution.text(), Some("'done'"));
    // Nothing of it reaches the next execution.
    let next = js(&sandbox, "1").await;
    assert!(
        next.logs.stdout.is_empty() && next.logs.stderr.is_empty(),
        "{next:?}"
    );
}

#[tokio::test]
async fn exception_is_reported_and_the_context_kept() {
    if !require_root("exception_is_reported_and_the_context_kept") {
        return;
    }
    let sandbox = sandbox().await;
    js(&sandbox, "var kept = 'still here'").await;
    let failed = js(
        &sandbox,
        "function check(v) {\n  throw new TypeError('bad value ' + v);\n}\ncheck(3)",
    )
    .await;
    let error = failed.error.expect("the exception is reported");
    assert_eq!(error.name, "TypeError");
    assert_eq!(error.value, "bad value 3");
    assert!(
        error.traceback.starts_with("TypeError: bad value 3"),
        "{}",
        error.traceback
    );
    assert!(error.traceback.contains("cell:2"), "{}", error.traceback);
    assert!(!error.traceback.contains("node:"), "{}", error.traceback);

    let thrown = js(&sandbox, "throw 5").await;
    assert_eq!(thrown.error.map(|e| e.value), Some("5".to_string()));
    let syntax = js(&sandbox, "let = = 1").await;
    assert_eq!(syntax.error.map(|e| e.name), Some("SyntaxError".into()));
    assert_eq!(js(&sandbox, "kept").await.text(), Some("'still here'"));
}

#[tokio::test]
async fn timeout_interrupts_and_keeps_the_declarations() {
    if !require_root("timeout_interrupts_and_keeps_the_declarations") {
        return;
    }
    let sandbox = sandbox().await;
    js(&sandbox, "let kept = 5").await;
    for code in ["while (true) {}", "await new Promise(() => {})"] {
        let started = Instant::now();
        let timed_out = within_limit(
            "run_code",
            sandbox
                .run_code(code)
                .language("js")
                .timeout(Some(Duration::from_millis(500))),
        )
        .await;
        match timed_out {
            Err(Error::CodeTimedOut {
                context_restarted, ..
            }) => assert!(!context_restarted, "{code}: the interrupt stopped it"),
            other => panic!("{code}: expected CodeTimedOut, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(js(&sandbox, "kept").await.text(), Some("5"), "after {code}");
    }
}

#[tokio::test]
async fn late_errors_and_envs_leave_the_context_running() {
    if !require_root("late_errors_and_envs_leave_the_context_running") {
        return;
    }
    let sandbox = sandbox().await;
    let with_env = within_limit(
        "run_code",
        sandbox
            .run_code("process.env.STAGE")
            .language("js")
            .env("STAGE", "build"),
    )
    .await
    .expect("run with an env");
    assert_eq!(with_env.text(), Some("'build'"));
    assert_eq!(js(&sandbox, "process.env.STAGE").await.results.len(), 0);

    // A callback that throws after its cell ended would end a plain node.
    let timer = js(
        &sandbox,
        "var later = 1; setTimeout(() => { throw new Error('from a timer') }, 0)",
    )
    .await;
    assert!(
        !timer.logs.stderr.concat().contains("from a timer"),
        "written after the cell ended: {timer:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = js(&sandbox, "later + 1").await;
    assert_eq!(next.text(), Some("2"));
    assert!(
        next.logs
            .stderr
            .concat()
            .contains("Uncaught Error: from a timer"),
        "{next:?}"
    );
}

#[tokio::test]
async fn crashed_node_is_reported_and_replaced() {
    if !require_root("crashed_node_is_reported_and_replaced") {
        return;
    }
    let sandbox = sandbox().await;
    js(&sandbox, "var lost = 1").await;
    let crashed = within_limit(
        "run_code",
        sandbox.run_code("process.exit(7)").language("js"),
    )
    .await;
    match crashed {
        Err(Error::Protocol(message)) => {
            assert!(message.contains("node"), "{message}");
            assert!(message.contains("exit code 7"), "{message}");
        }
        other => panic!("expected the crash to be reported, got {other:?}"),
    }
    assert_eq!(
        js(&sandbox, "typeof lost").await.text(),
        Some("'undefined'")
    );
}

#[tokio::test]
async fn javascript_and_python_contexts_are_separate() {
    if !require_root("javascript_and_python_contexts_are_separate") {
        return;
    }
    let sandbox = sandbox().await;
    within_limit("run_code", sandbox.run_code("x = 'python'"))
        .await
        .expect("run Python");
    assert_eq!(js(&sandbox, "typeof x").await.text(), Some("'undefined'"));
    let own = within_limit(
        "create a context",
        sandbox.create_code_context(CodeContextOptions {
            language: Some("javascript".into()),
            cwd: Some("/tmp".into()),
        }),
    )
    .await
    .expect("create a JavaScript context");
    assert_eq!(own.language, "js");
    let cwd = within_limit("run_code", sandbox.run_code("process.cwd()").context(&own))
        .await
        .expect("run in the context");
    assert_eq!(cwd.text(), Some("'/tmp'"));
    let python = within_limit("run_code", sandbox.run_code("x"))
        .await
        .expect("run Python again");
    assert_eq!(python.text(), Some("'python'"));
}

#[tokio::test]
async fn large_output_stays_with_its_execution() {
    if !require_root("large_output_stays_with_its_execution") {
        return;
    }
    let sandbox = sandbox().await;
    // Far more than the runner's stdout socket holds, so that Node queues
    // most of it in the stream.
    let big = js(
        &sandbox,
        "process.stdout.write('x'.repeat(8000000)); console.error('end'); 'written'",
    )
    .await;
    assert_eq!(big.text(), Some("'written'"));
    assert_eq!(big.logs.stdout.concat().len(), 8_000_000);
    assert_eq!(big.logs.stderr.concat(), "end\n");
    let next = js(&sandbox, "console.log('next'); 1").await;
    let stdout = next.logs.stdout.concat();
    assert_eq!(
        stdout.len(),
        "next\n".len(),
        "the next execution has {} bytes of stdout",
        stdout.len()
    );
}

#[tokio::test]
async fn lone_surrogate_in_error_is_reported() {
    if !require_root("lone_surrogate_in_error_is_reported") {
        return;
    }
    let sandbox = sandbox().await;
    // `slice` cuts the emoji between its two UTF-16 code units.
    let failed = js(&sandbox, "throw new Error('half of ' + '😀'.slice(0, 1))").await;
    let error = failed.error.expect("the error is reported");
    assert_eq!(error.value, "half of \\ud83d");
    assert!(
        error.traceback.starts_with("Error: half of \\ud83d"),
        "{}",
        error.traceback
    );
}

#[tokio::test]
async fn closed_stdout_or_stderr_ends_the_execution() {
    if !require_root("closed_stdout_or_stderr_ends_the_execution") {
        return;
    }
    let sandbox = sandbox().await;
    js(&sandbox, "var kept = 1").await;
    for fd in [1, 2] {
        let code = format!("require('fs').closeSync({fd}); 'closed {fd}'");
        // No mark can pass a closed descriptor, so the end of its stream
        // has to end the execution, well before this timeout.
        let closed = within_limit(
            "run_code",
            sandbox
                .run_code(code.as_str())
                .language("js")
                .timeout(Some(Duration::from_secs(20))),
        )
        .await
        .unwrap_or_else(|e| panic!("run {code:?}: {e}"));
        assert_eq!(closed.text(), Some(format!("'closed {fd}'").as_str()));
        assert_eq!(js(&sandbox, "kept").await.text(), Some("1"), "after {code}");
    }
}
