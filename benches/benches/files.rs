//! The file API against the host's own `cp`, in one run: a 1 GiB file
//! written into a sandbox and read back, and 10,000 small files.
//!
//! Run as root: `cargo bench -p soulbox-benches --bench files`. Each row is
//! the median of `ROUNDS` runs after one untimed warm-up run, and every
//! timed run's time goes to stderr. The
//! host source file lives on /tmp's file system. The sandbox's writable
//! layer is a tmpfs, so the host `cp` is timed both to /tmp's file system
//! and to /dev/shm, a tmpfs.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use soulbox_core::{Files, Sandbox, SandboxOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Size of the large file.
const LARGE: u64 = 1 << 30;
/// Runs per row; the median is reported.
const ROUNDS: usize = 5;
/// Number and size of the small files.
const SMALL_COUNT: usize = 10_000;
const SMALL_SIZE: usize = 1024;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// A host directory removed with everything in it on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create(parent: &str) -> Self {
        let path = Path::new(parent).join(format!("soulbox-bench-files-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `len` pseudo-random bytes to `path`.
fn write_source(path: &Path, len: u64) {
    use std::io::Write;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut block = Vec::with_capacity(1 << 20);
    while block.len() < 1 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        block.extend_from_slice(&state.to_le_bytes());
    }
    let mut file = std::fs::File::create(path).expect("create the source file");
    for index in 0..len / block.len() as u64 {
        block[..8].copy_from_slice(&index.to_le_bytes());
        file.write_all(&block).expect("write the source file");
    }
}

/// Brings the host to the same state before every timed round. Dirty
/// pages are written back first, so that no round pays for the writeback
/// of the one before it: a `cp` to ext4 returns long before its gigabyte
/// reaches the disk. Then `source` is read into the page cache, because
/// the kernel may have reclaimed part of it since it was last read.
fn settle(source: Option<&Path>) {
    let status = std::process::Command::new("sync")
        .status()
        .expect("run sync");
    assert!(status.success(), "sync failed");
    if let Some(source) = source {
        let mut file = std::fs::File::open(source).expect("open the source");
        std::io::copy(&mut file, &mut std::io::sink()).expect("read the source");
    }
}

/// The cleanup before each round of a row, so that every round starts
/// from the same state.
#[derive(Clone)]
enum Cleanup {
    Nothing,
    Host(PathBuf),
    /// A host directory, emptied.
    HostDir(PathBuf),
    Sandbox(&'static str),
}

/// One line of a result table.
struct Row {
    name: &'static str,
    time: Duration,
}

/// The rows of one table and what they need.
struct Bench {
    files: Files,
    rows: Vec<Row>,
}

impl Bench {
    /// Times `run` `ROUNDS` times, each after `cleanup` and [`settle`], and
    /// adds a row with the median. Every round's time goes to stderr. What
    /// the last round made stays.
    ///
    /// An untimed warm-up round comes first. On a VM with free page
    /// reporting (virtio-balloon), memory that the previous row freed goes
    /// back to the hypervisor. Touching it again made the first round of a
    /// row take about 3 s instead of 0.4 s on the machine in BENCHMARKS.md.
    async fn row<R, F>(
        &mut self,
        name: &'static str,
        source: Option<&Path>,
        cleanup: Cleanup,
        mut run: R,
    ) -> Duration
    where
        R: FnMut() -> F,
        F: Future<Output = ()>,
    {
        let mut times = Vec::with_capacity(ROUNDS);
        for round in 0..=ROUNDS {
            self.clean(&cleanup).await;
            settle(source);
            let start = Instant::now();
            run().await;
            if round > 0 {
                times.push(start.elapsed());
            }
        }
        let shown: Vec<String> = times
            .iter()
            .map(|t| format!("{:.3}", t.as_secs_f64()))
            .collect();
        eprintln!("{name}: {} s", shown.join(" "));
        times.sort();
        let time = times[ROUNDS / 2];
        self.rows.push(Row { name, time });
        time
    }

    async fn clean(&self, cleanup: &Cleanup) {
        match cleanup {
            Cleanup::Nothing => {}
            Cleanup::Host(path) => {
                let _ = std::fs::remove_file(path);
            }
            Cleanup::HostDir(path) => {
                let _ = std::fs::remove_dir_all(path);
                std::fs::create_dir_all(path).expect("create a scratch directory");
            }
            Cleanup::Sandbox(path) => self
                .files
                .remove(path)
                .await
                .expect("remove in the sandbox"),
        }
    }
}

fn host_cp(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp failed");
}

/// Reads a sandbox file through the API into a host file, as a caller
/// that saves a download would.
async fn read_to_host(files: &Files, path: &str, host: &Path) {
    let reader = files.read_stream(path).await.expect("open a stream");
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, reader);
    let mut out = tokio::fs::File::create(host)
        .await
        .expect("create the host file");
    tokio::io::copy_buf(&mut reader, &mut out)
        .await
        .expect("copy the stream");
    out.flush().await.expect("flush the host file");
}

/// Reads a sandbox file through the API and drops the bytes.
async fn read_to_nothing(files: &Files, path: &str) -> u64 {
    let mut reader = files.read_stream(path).await.expect("open a stream");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await.expect("read the stream");
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

/// Paths of the large-file rows.
struct LargePaths {
    source: PathBuf,
    disk_copy: PathBuf,
    shm_copy: PathBuf,
}

/// Times the host's `cp` of the source to /tmp's file system and to
/// /dev/shm; returns both medians.
async fn host_baselines(bench: &mut Bench, paths: &LargePaths) -> (Duration, Duration) {
    let source = paths.source.as_path();
    let disk = bench
        .row(
            "host `cp` to /tmp's file system",
            Some(source),
            Cleanup::Host(paths.disk_copy.clone()),
            || async { host_cp(source, &paths.disk_copy) },
        )
        .await;
    let shm = bench
        .row(
            "host `cp` to /dev/shm (tmpfs)",
            Some(source),
            Cleanup::Host(paths.shm_copy.clone()),
            || async { host_cp(source, &paths.shm_copy) },
        )
        .await;
    (disk, shm)
}

/// Times the ways into the sandbox. Leaves big.bin in the sandbox for the
/// reads.
async fn api_writes(bench: &mut Bench, paths: &LargePaths) {
    let source = paths.source.as_path();
    let files = bench.files.clone();
    bench
        .row(
            "API `copy_in` (host file) into the sandbox",
            Some(source),
            Cleanup::Sandbox("copied.bin"),
            || async {
                files.copy_in(source, "copied.bin").await.expect("copy_in");
            },
        )
        .await;
    files.remove("copied.bin").await.expect("remove copied.bin");
    bench
        .row(
            "API `write_from` (host file as AsyncRead) into the sandbox",
            Some(source),
            Cleanup::Sandbox("big.bin"),
            || async {
                let host = tokio::fs::File::open(source)
                    .await
                    .expect("open the source");
                let written = files.write_from("big.bin", host).await.expect("write_from");
                assert_eq!(written, LARGE, "bytes written");
            },
        )
        .await;
}

/// Times the ways out of the sandbox, reading the big.bin that
/// [`api_writes`] left.
async fn api_reads(bench: &mut Bench, paths: &LargePaths) {
    let files = bench.files.clone();
    for (name, target) in [
        ("API `copy_out` into a /tmp file", &paths.disk_copy),
        ("API `copy_out` into a /dev/shm file", &paths.shm_copy),
    ] {
        bench
            .row(name, None, Cleanup::Host(target.clone()), || async {
                files.copy_out("big.bin", target).await.expect("copy_out");
            })
            .await;
    }
    for (name, target) in [
        ("API `read_stream` into a /tmp file", &paths.disk_copy),
        ("API `read_stream` into a /dev/shm file", &paths.shm_copy),
    ] {
        bench
            .row(name, None, Cleanup::Host(target.clone()), || {
                read_to_host(&files, "big.bin", target)
            })
            .await;
    }
    bench
        .row(
            "API `read_stream`, bytes dropped",
            None,
            Cleanup::Nothing,
            || async {
                assert_eq!(
                    read_to_nothing(&files, "big.bin").await,
                    LARGE,
                    "bytes read"
                );
            },
        )
        .await;
}

/// Times each half of the streaming paths on its own, to show where the
/// time of `write_from` and `read_stream` goes.
async fn breakdown(bench: &mut Bench, paths: &LargePaths) {
    let source = paths.source.as_path();
    let files = bench.files.clone();
    bench
        .row(
            "host file read through tokio::fs::File (1 MiB reads), no sandbox",
            Some(source),
            Cleanup::Nothing,
            || async {
                let mut file = tokio::fs::File::open(source).await.expect("open");
                let mut buf = vec![0u8; 1 << 20];
                while file.read(&mut buf).await.expect("read the source") > 0 {}
            },
        )
        .await;
    bench
        .row(
            "API `write_from` of bytes from memory (tokio::io::repeat)",
            None,
            Cleanup::Sandbox("zeros.bin"),
            || async {
                let zeros = tokio::io::repeat(0).take(LARGE);
                let written = files
                    .write_from("zeros.bin", zeros)
                    .await
                    .expect("write_from");
                assert_eq!(written, LARGE, "bytes written");
            },
        )
        .await;
    bench
        .row(
            "host file write through tokio::fs::File to /tmp, no sandbox",
            None,
            Cleanup::Host(paths.disk_copy.clone()),
            || async {
                let mut out = tokio::fs::File::create(&paths.disk_copy)
                    .await
                    .expect("create");
                let zeros = tokio::io::repeat(0).take(LARGE);
                let mut zeros = tokio::io::BufReader::with_capacity(1 << 20, zeros);
                tokio::io::copy_buf(&mut zeros, &mut out)
                    .await
                    .expect("write");
                out.flush().await.expect("flush");
            },
        )
        .await;
}

/// Prints rows with their throughput for `bytes` each, relative to `cp`
/// to /tmp's file system and to /dev/shm when those are given.
fn print_rows(title: &str, rows: &[Row], bytes: u64, baselines: Option<(Duration, Duration)>) {
    println!();
    match baselines {
        Some(_) => {
            println!("| {title} | median s | MiB/s | vs. cp to /tmp | vs. cp to /dev/shm |");
            println!("|---|---:|---:|---:|---:|");
        }
        None => {
            println!("| {title} | median s | MiB/s |");
            println!("|---|---:|---:|");
        }
    }
    for row in rows {
        let secs = row.time.as_secs_f64();
        let mib = bytes as f64 / f64::from(1 << 20) / secs;
        match baselines {
            Some((disk, shm)) => {
                let to_disk = disk.as_secs_f64() / secs;
                let to_shm = shm.as_secs_f64() / secs;
                println!(
                    "| {} | {secs:.3} | {mib:.0} | {to_disk:.2}x | {to_shm:.2}x |",
                    row.name
                );
            }
            None => println!("| {} | {secs:.3} | {mib:.0} |", row.name),
        }
    }
}

async fn large_file(files: &Files) {
    let scratch = ScratchDir::create("/tmp");
    let shm = ScratchDir::create("/dev/shm");
    let paths = LargePaths {
        source: scratch.0.join("source.bin"),
        disk_copy: scratch.0.join("copy.bin"),
        shm_copy: shm.0.join("copy.bin"),
    };
    write_source(&paths.source, LARGE);

    let mut bench = Bench {
        files: files.clone(),
        rows: Vec::new(),
    };
    let baselines = host_baselines(&mut bench, &paths).await;
    api_writes(&mut bench, &paths).await;
    api_reads(&mut bench, &paths).await;
    print_rows("operation (1 GiB)", &bench.rows, LARGE, Some(baselines));

    bench.rows.clear();
    breakdown(&mut bench, &paths).await;
    print_rows("breakdown (1 GiB)", &bench.rows, LARGE, None);
    let _ = files.remove("big.bin").await;
}

async fn small_files(files: &Files) {
    let data = vec![b's'; SMALL_SIZE];
    let names: Vec<String> = (0..SMALL_COUNT).map(|i| format!("small/f{i:05}")).collect();
    let mut bench = Bench {
        files: files.clone(),
        rows: Vec::new(),
    };
    bench
        .row(
            "API `write`, one call per file",
            None,
            Cleanup::Sandbox("small"),
            || async {
                for name in &names {
                    files.write(name, data.clone()).await.expect("write");
                }
            },
        )
        .await;
    bench
        .row(
            "API `write_many`, one call",
            None,
            Cleanup::Sandbox("small"),
            || async {
                let batch = names.iter().map(|name| (name.as_str(), data.clone()));
                files.write_many(batch).await.expect("write_many");
            },
        )
        .await;

    let shm = ScratchDir::create("/dev/shm");
    bench
        .row(
            "host `std::fs::write` to /dev/shm, no sandbox",
            None,
            Cleanup::HostDir(shm.0.clone()),
            || async {
                for i in 0..SMALL_COUNT {
                    let path = shm.0.join(format!("f{i:05}"));
                    std::fs::write(path, &data).expect("write a host file");
                }
            },
        )
        .await;

    println!();
    println!("| operation ({SMALL_COUNT} files of {SMALL_SIZE} bytes) | median s | µs per file |");
    println!("|---|---:|---:|");
    for row in &bench.rows {
        let secs = row.time.as_secs_f64();
        let per_file = secs * 1e6 / SMALL_COUNT as f64;
        println!("| {} | {secs:.3} | {per_file:.1} |", row.name);
    }
}

fn main() {
    if !is_root() {
        eprintln!("the files bench needs root to create sandboxes; skipped");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start a tokio runtime");
    runtime.block_on(async {
        let sandbox = Sandbox::create(SandboxOptions::default().kill_on_drop(true))
            .await
            .expect("create a sandbox");
        let files = sandbox.files();
        large_file(&files).await;
        small_files(&files).await;
        sandbox.kill().await.expect("kill the sandbox");
    });
}
