//! Criterion benches of the sandbox hot paths: create + `/bin/true` +
//! destroy, and `/bin/true` in a running sandbox against the host's own
//! fork and exec. Needs root; without it the benches print why and stop.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use soulbox_core::{Sandbox, SandboxOptions};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

fn lifecycle(c: &mut Criterion) {
    if !is_root() {
        eprintln!("benches need root to create sandboxes; skipped");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("sandbox");
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("create_true_destroy", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let sandbox = Sandbox::create(SandboxOptions::default().kill_on_drop(true))
                    .await
                    .unwrap();
                let output = sandbox.command("/bin/true").output().await.unwrap();
                assert!(output.status.success());
                sandbox.kill().await.unwrap();
            })
        })
    });
    let sandbox = runtime
        .block_on(Sandbox::create(
            SandboxOptions::default().kill_on_drop(true),
        ))
        .unwrap();
    group.bench_function("exec_true_in_running_sandbox", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let output = sandbox.command("/bin/true").output().await.unwrap();
                assert!(output.status.success());
            })
        })
    });
    group.bench_function("host_fork_exec_true", |b| {
        b.iter(|| {
            let status = std::process::Command::new("/bin/true").status().unwrap();
            assert!(status.success());
        })
    });
    group.finish();
    runtime.block_on(sandbox.kill()).unwrap();
}

criterion_group!(benches, lifecycle);
criterion_main!(benches);
