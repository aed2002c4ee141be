//! A host process killed with SIGKILL at any moment of create, exec or kill
//! leaks nothing: once its sandbox ends, the next SoulBox call removes what
//! was left.
//!
//! This binary holds one test, so no other test of it creates sandboxes
//! meanwhile. It runs the `soulbox` command with a state directory of its
//! own, and counts cgroup directories host-wide.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use soulbox_core::{ListQuery, Sandbox};
use soulbox_tests::*;

/// Every sandbox cgroup directory on the host.
fn sandbox_cgroups() -> HashSet<PathBuf> {
    let mut dirs = HashSet::new();
    for parent in soulbox_core::diagnostics::cgroup_parents() {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name
                .to_str()
                .is_some_and(soulbox_core::diagnostics::is_sandbox_id)
            {
                dirs.insert(entry.path());
            }
        }
    }
    dirs
}

/// A small deterministic generator, seeded from the clock and printed, so
/// a failing run can be repeated.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}

struct Cli {
    state_dir: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(soulbox_bin());
        command
            .args(args)
            .env("SOULBOX_STATE_DIR", &self.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    }

    /// Creates a sandbox to completion and returns its id.
    fn create(&self) -> String {
        let output = self
            .command(&["create", "--timeout", "60", "--metadata", "suite=crash"])
            .output()
            .expect("run soulbox create");
        assert!(output.status.success(), "soulbox create failed");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// Starts `args` and SIGKILLs it after `delay`.
    fn kill_after(&self, args: &[&str], delay: Duration) {
        let mut child: Child = self.command(args).spawn().expect("start soulbox");
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Times one uninterrupted run of `args`.
    fn time(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        let _ = self.command(args).output().expect("run soulbox");
        started.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_leaks_nothing() {
    if !require_root("sigkill_at_random_moments_leaks_nothing") {
        return;
    }
    let state_dir = std::env::temp_dir().join(unique_name("crash-state"));
    std::fs::create_dir_all(&state_dir).unwrap();
    // The in-process calls below use the same state directory as the CLI.
    std::env::set_var("SOULBOX_STATE_DIR", &state_dir);
    let cli = Cli {
        state_dir: state_dir.clone(),
    };
    let cgroups_before = sandbox_cgroups();

    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("random seed: {seed}");
    let mut random = Random(seed);

    // How long each step takes when not interrupted, so the kills land
    // anywhere from its start to its end.
    let create_time = cli.time(&["create", "--timeout", "5"]);
    let probe = cli.create();
    let exec_time = cli.time(&["exec", &probe, "--", "sh", "-c", "echo x > /tmp/f"]);
    let kill_time = cli.time(&["kill", &probe]);
    println!("uninterrupted: create {create_time:?}, exec {exec_time:?}, kill {kill_time:?}");
    let mut window =
        |time: Duration| Duration::from_micros(random.below(time.as_micros() as u64 + 1));

    for round in 0..20 {
        match round % 3 {
            0 => {
                let delay = window(create_time);
                cli.kill_after(&["create", "--timeout", "60"], delay);
            }
            1 => {
                let id = cli.create();
                let delay = window(exec_time);
                cli.kill_after(&["exec", &id, "--", "sh", "-c", "echo x > /tmp/f"], delay);
            }
            _ => {
                let id = cli.create();
                let delay = window(kill_time);
                cli.kill_after(&["kill", &id], delay);
            }
        }
    }

    // The next call: list the survivors (it removes dead sandboxes' state
    // on the way), then kill them. A PID 1 whose creator died mid-create
    // exits a moment after its creator, so list again until that settles.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for info in Sandbox::list(&ListQuery::default()).await.unwrap() {
            Sandbox::kill_id(&info.sandbox_id).await.unwrap();
        }
        let entries: Vec<_> = std::fs::read_dir(state_dir.join("sandboxes"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let new_cgroups: Vec<_> = sandbox_cgroups()
            .difference(&cgroups_before)
            .cloned()
            .collect();
        if entries.is_empty() && new_cgroups.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: state entries {entries:?}, cgroups {new_cgroups:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        host_mounts_mentioning(state_dir.to_str().unwrap()).is_empty(),
        "mounts left behind"
    );
    let _ = std::fs::remove_dir_all(&state_dir);
}
