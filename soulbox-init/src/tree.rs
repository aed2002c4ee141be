//! Process-tree queries over the sandbox's own /proc.

use std::fs;

use crate::sys;

/// Reads the parent pid and state of `pid` from /proc/PID/stat.
fn stat(pid: libc::pid_t) -> Option<(libc::pid_t, u8)> {
    let text = fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain ") ", so
    // the fields start after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut fields = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let ppid = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    Some((ppid, state))
}

/// Returns the parent of `pid`, or `None` if it is gone.
pub fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    stat(pid).map(|(ppid, _)| ppid)
}

/// Lists every live (non-zombie) process below `ancestor`.
fn descendants(ancestor: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if let Some((ppid, state)) = stat(pid) {
            parents.push((pid, ppid, state));
        }
    }
    let mut found = vec![ancestor];
    let mut live = Vec::new();
    // Breadth-first over the parent links; each pass adds one generation.
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(pid, ppid, state) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                if state != b'Z' {
                    live.push(pid);
                }
            }
        }
        i += 1;
    }
    live
}

/// SIGKILLs every descendant of `ancestor` (a subreaper supervisor), and
/// repeats until none is left, so processes forked during the scan die too.
pub fn kill_descendants(ancestor: libc::pid_t) {
    // Each round kills everything it saw; only a process forked after the
    // scan survives a round. 100 rounds stop a runaway fork loop from
    // keeping PID 1 busy forever; the sandbox's own teardown is the backstop.
    for _ in 0..100 {
        let live = descendants(ancestor);
        if live.is_empty() {
            return;
        }
        for pid in live {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }
}
