//! The rate task: creates per second with several creators at once.
//!
//! Each of `parallel` threads runs its own single-threaded tokio runtime
//! and loops over create + `/bin/true` + kill until `duration` has passed
//! since a common start. It prints one JSON object with the completed
//! loops, the rate, and the median and 95th percentile of one loop.

use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;
use soulbox_core::SandboxOptions;

pub fn run(options: SandboxOptions, duration: Duration, parallel: usize) -> ExitCode {
    let barrier = Arc::new(Barrier::new(parallel));
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let options = options.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || worker(options, duration, &barrier))
        })
        .collect();
    let mut loops = Vec::new();
    let mut elapsed = Duration::ZERO;
    for worker in workers {
        match worker.join() {
            Ok(Ok((times, spent))) => {
                loops.extend(times);
                elapsed = elapsed.max(spent);
            }
            Ok(Err(message)) => return crate::fail(&message),
            Err(_) => return crate::fail("a worker thread panicked"),
        }
    }
    loops.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let percentile = |p: f64| {
        let index = ((loops.len() as f64 - 1.0) * p).round() as usize;
        loops.get(index).copied().map(ms)
    };
    let report = json!({
        "parallel": parallel,
        "seconds": elapsed.as_secs_f64(),
        "creates": loops.len(),
        "creates_per_second": loops.len() as f64 / elapsed.as_secs_f64(),
        "loop_median_ms": percentile(0.5),
        "loop_p95_ms": percentile(0.95),
    });
    println!("{report}");
    ExitCode::SUCCESS
}

/// Loops until `duration` after the common start; returns each loop's time
/// and the time from the start to the end of the last loop.
fn worker(
    options: SandboxOptions,
    duration: Duration,
    barrier: &Barrier,
) -> Result<(Vec<Duration>, Duration), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        barrier.wait();
        let start = Instant::now();
        let mut times = Vec::new();
        while start.elapsed() < duration {
            let begin = Instant::now();
            let sandbox = soulbox_core::Sandbox::create(options.clone())
                .await
                .map_err(|e| format!("create failed: {e}"))?;
            let ran = crate::run_checked(&sandbox, &["/bin/true"]).await;
            sandbox
                .kill()
                .await
                .map_err(|e| format!("kill failed: {e}"))?;
            ran?;
            times.push(begin.elapsed());
        }
        Ok((times, start.elapsed()))
    })
}
