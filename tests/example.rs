//! The README's main job: the sales-analysis example runs in a sandbox and
//! produces its report, through the Rust API and through `soulbox run`.

use std::path::PathBuf;

use soulbox_tests::*;

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/analysis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_example_runs_in_sandbox() {
    if !require_root("analysis_example_runs_in_sandbox") {
        return;
    }
    let sandbox = sandbox().await;
    for name in ["analyze.py", "sales.csv"] {
        let data = std::fs::read(example_dir().join(name)).expect("read the example's files");
        sandbox
            .files()
            .write(&format!("analysis/{name}"), data)
            .await
            .expect("copy into sandbox");
    }
    let output = sandbox
        .command("python3")
        .arg("analyze.py")
        .cwd("analysis")
        .output()
        .await
        .expect("run the analysis");
    let report = stdout(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "analysis failed with {}: {stderr}",
        output.status
    );
    assert!(
        report.starts_with("# Sales report"),
        "unexpected report start: {report:.200}"
    );
    assert!(
        report.contains("| Valid orders | 3,997 |"),
        "valid-order count missing: {report}"
    );
    assert!(
        report.contains("| Malformed rows skipped | 3 |"),
        "skip count missing: {report}"
    );

    let written = sandbox
        .files()
        .read("analysis/report.md")
        .await
        .expect("read report.md back");
    assert_eq!(
        written, output.stdout,
        "report.md should hold the printed report"
    );
    sandbox.kill().await.expect("kill the sandbox");
}

#[test]
fn analysis_example_runs_through_cli() {
    if !require_root("analysis_example_runs_through_cli") {
        return;
    }
    let binary = soulbox_bin();
    if !binary.exists() {
        // `cargo test --workspace` builds soulbox-cli's binary; a run of
        // this package alone may not.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} was not built",
            binary.display()
        );
        eprintln!(
            "analysis_example_runs_through_cli: skipped, {} not built",
            binary.display()
        );
        return;
    }
    let copy = format!("{}:/home/user/analysis", example_dir().display());
    let output = std::process::Command::new(binary)
        .args([
            "run",
            "--copy",
            &copy,
            "--cwd",
            "/home/user/analysis",
            "--",
            "python3",
            "analyze.py",
        ])
        .output()
        .expect("run soulbox");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "soulbox run failed: {stderr}"
    );
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("| Valid orders | 3,997 |"),
        "valid-order count missing: {report}"
    );
    assert!(
        stderr.contains("wrote report.md"),
        "the script's stderr should stream: {stderr}"
    );
}
