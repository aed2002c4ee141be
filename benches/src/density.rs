//! The density task: many idle sandboxes at once.
//!
//! It creates `count` sandboxes one after the other and keeps them idle
//! (only their PID 1 runs), then measures:
//! - the time to create them all;
//! - the summed PSS (`/proc/PID/smaps_rollup`) of every process in their
//!   cgroups, which is each PID 1, and this process's own PSS growth, which
//!   is what the handles cost here;
//! - the drop of the host's `MemAvailable`, which also counts kernel memory
//!   (namespaces, mounts, tmpfs, cgroups, sockets), taken against the mean
//!   of a reading before the creates and one after the kills;
//! - this process's open descriptors and its RLIMIT_NOFILE.
//!
//! Then it kills them all, times that, and checks that nothing leaked: no
//! process, cgroup directory or listed sandbox of theirs is left. It prints
//! one JSON object. The sandboxes are `kill_on_drop`, so that a crash of
//! this program takes them along; that changes nothing in their memory.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use soulbox_core::{Error, Sandbox, SandboxOptions};

/// Creates and kills are also timed in blocks of this many, to show how
/// their cost grows with the number of sandboxes alive.
const BLOCK: usize = 100;

pub fn run(options: SandboxOptions, count: usize) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return crate::fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(measure(options, count)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(message) => crate::fail(&message),
    }
}

async fn measure(options: SandboxOptions, count: usize) -> Result<serde_json::Value, String> {
    let limits_before = nofile_limits()?;
    let host_pss_before = pss_kib(std::process::id() as i32).unwrap_or(0);
    let fds_before = open_fds();
    let available_before = settled_available_kib().await?;
    let kernel_before = kernel_kib()?;

    let start = Instant::now();
    let mut block_start = start;
    let mut create_blocks = Vec::new();
    let mut sandboxes = Vec::with_capacity(count);
    for n in 0..count {
        if n > 0 && n % BLOCK == 0 {
            create_blocks.push(block_start.elapsed().as_secs_f64());
            block_start = Instant::now();
        }
        let sandbox = Sandbox::create(options.clone().kill_on_drop(true))
            .await
            .map_err(|e| {
                format!(
                    "create {} of {count} failed: {e} ({:?})",
                    n + 1,
                    std::error::Error::source(&e)
                )
            })?;
        sandboxes.push(sandbox);
    }
    let create_seconds = start.elapsed().as_secs_f64();
    create_blocks.push(block_start.elapsed().as_secs_f64());

    let available_with = settled_available_kib().await?;
    let kernel_with = kernel_kib()?;
    let mut sandbox_pss = 0;
    let mut processes = 0;
    for sandbox in &sandboxes {
        for pid in sandbox_pids(sandbox) {
            sandbox_pss += pss_kib(pid).unwrap_or(0);
            processes += 1;
        }
    }
    let host_pss_with = pss_kib(std::process::id() as i32).unwrap_or(0);
    let fds_with = open_fds();
    let limits_with = nofile_limits()?;

    let ids: Vec<String> = sandboxes.iter().map(|s| s.id().to_string()).collect();
    let pids: Vec<i32> = sandboxes.iter().map(Sandbox::pid).collect();
    let cgroups: Vec<_> = sandboxes.iter().flat_map(Sandbox::cgroup_paths).collect();
    let start = Instant::now();
    let mut block_start = start;
    let mut kill_blocks = Vec::new();
    for (n, sandbox) in sandboxes.iter().enumerate() {
        if n > 0 && n % BLOCK == 0 {
            kill_blocks.push(block_start.elapsed().as_secs_f64());
            block_start = Instant::now();
        }
        sandbox
            .kill()
            .await
            .map_err(|e| format!("kill {} failed: {e}", sandbox.id()))?;
    }
    let kill_seconds = start.elapsed().as_secs_f64();
    kill_blocks.push(block_start.elapsed().as_secs_f64());
    drop(sandboxes);
    let available_after = settled_available_kib().await?;
    let kernel_after = kernel_kib()?;

    let leaks = find_leaks(&ids, &pids, &cgroups).await?;
    let baseline = (available_before + available_after) as f64 / 2.0;
    let used_kib = baseline - available_with as f64;
    let per_sandbox_kib = |kib: f64| kib / count as f64;
    Ok(json!({
        "count": count,
        "memory_limit": options.memory_limit,
        "pids_limit": options.pids_limit,
        "create_seconds": create_seconds,
        "creates_per_second": count as f64 / create_seconds,
        "kill_seconds": kill_seconds,
        "create_seconds_per_block": create_blocks,
        "kill_seconds_per_block": kill_blocks,
        "block": BLOCK,
        "available_kib": {
            "before": available_before,
            "with": available_with,
            "after": available_after,
        },
        "available_drop_per_sandbox_kib": per_sandbox_kib(used_kib),
        "kernel_growth_per_sandbox_kib": KERNEL_FIELDS
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let baseline = (kernel_before[i] + kernel_after[i]) as f64 / 2.0;
                (field.trim_end_matches(':').to_string(),
                 json!(per_sandbox_kib(kernel_with[i] as f64 - baseline)))
            })
            .collect::<serde_json::Map<_, _>>(),
        "sandbox_processes": processes,
        "sandbox_pss_per_sandbox_kib": per_sandbox_kib(sandbox_pss as f64),
        "host_pss_kib": { "before": host_pss_before, "with": host_pss_with },
        "host_pss_growth_per_sandbox_kib":
            per_sandbox_kib(host_pss_with.saturating_sub(host_pss_before) as f64),
        "open_fds": { "before": fds_before, "with": fds_with, "after": open_fds() },
        "nofile_soft": { "before": limits_before.0, "with": limits_with.0 },
        "nofile_hard": limits_before.1,
        "leaks": leaks,
    }))
}

/// Returns what the killed sandboxes left: live processes, cgroup
/// directories, and sandboxes that `connect` still finds.
async fn find_leaks(
    ids: &[String],
    pids: &[i32],
    cgroups: &[std::path::PathBuf],
) -> Result<Vec<String>, String> {
    let mut leaks = Vec::new();
    for pid in pids {
        if std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end() == "soulbox-init")
        {
            leaks.push(format!("process {pid}"));
        }
    }
    for dir in cgroups {
        if dir.exists() {
            leaks.push(format!("cgroup {}", dir.display()));
        }
    }
    for id in ids {
        match Sandbox::connect_without_resume(id).await {
            Err(Error::SandboxNotFound { .. }) => {}
            Ok(_) => leaks.push(format!("sandbox {id} still reachable")),
            Err(e) => return Err(format!("connect to {id} failed: {e}")),
        }
    }
    Ok(leaks)
}

/// Returns the host pids of every process in the sandbox's cgroup v2
/// directory, or its PID 1 alone without one.
fn sandbox_pids(sandbox: &Sandbox) -> Vec<i32> {
    let v2 = sandbox
        .cgroup_paths()
        .into_iter()
        .find(|dir| dir.join("cgroup.freeze").exists());
    let Some(dir) = v2 else {
        return vec![sandbox.pid()];
    };
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![sandbox.pid()])
}

/// Reads a process's proportional set size in KiB.
fn pss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    meminfo_field(&text, "Pss:")
}

/// Reads `field` (such as `MemAvailable:`) in KiB from meminfo-style text.
fn meminfo_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn available_kib() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| e.to_string())?;
    meminfo_field(&text, "MemAvailable:").ok_or_else(|| "no MemAvailable in /proc/meminfo".into())
}

/// Returns the median of 7 `MemAvailable` readings 300 ms apart, repeated
/// until two medians in a row differ by less than 1 MiB (at most 8 times):
/// namespace and mount teardown finish asynchronously in the kernel.
async fn settled_available_kib() -> Result<u64, String> {
    let mut previous: Option<u64> = None;
    for _ in 0..8 {
        let mut samples = Vec::with_capacity(7);
        for _ in 0..7 {
            samples.push(available_kib()?);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        samples.sort_unstable();
        let median = samples[3];
        if previous.is_some_and(|p| p.abs_diff(median) < 1024) {
            return Ok(median);
        }
        previous = Some(median);
    }
    previous.ok_or_else(|| "no MemAvailable reading".into())
}

/// The /proc/meminfo fields that hold kernel memory a sandbox uses:
/// namespaces, mounts, cgroups and sockets are slab objects, tmpfs pages
/// are Shmem, and per-CPU counters (cgroups) are Percpu. Unlike
/// `MemAvailable`, they barely move when other programs on the host
/// allocate or free memory.
const KERNEL_FIELDS: [&str; 6] = [
    "Slab:",
    "SUnreclaim:",
    "KernelStack:",
    "PageTables:",
    "Percpu:",
    "Shmem:",
];

fn kernel_kib() -> Result<[u64; 6], String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| e.to_string())?;
    let mut values = [0; 6];
    for (value, field) in values.iter_mut().zip(KERNEL_FIELDS) {
        *value = meminfo_field(&text, field).ok_or(format!("no {field} in /proc/meminfo"))?;
    }
    Ok(values)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Reads this process's RLIMIT_NOFILE as (soft, hard).
fn nofile_limits() -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string("/proc/self/limits").map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or("no 'Max open files' line in /proc/self/limits")?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    match numbers[..] {
        [soft, hard] => Ok((soft, hard)),
        _ => Err(format!("cannot read the limits in {line:?}")),
    }
}
