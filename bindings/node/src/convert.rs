//! Plain objects exchanged with JavaScript, and checks of the numbers that
//! arrive from it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use soulbox_core::{EntryInfo, FileType, Network, ProcessInfo, SandboxInfo, SandboxMetrics};

use crate::error::{invalid_argument, Result};

/// Largest whole number JavaScript can pass exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Converts a timeout in milliseconds from JavaScript; zero means none.
///
/// # Errors
///
/// An invalid-argument error naming `what` for a negative, fractional or
/// non-finite number.
pub(crate) fn timeout_from_ms(what: &str, ms: Option<f64>) -> Result<Option<Duration>> {
    let Some(ms) = ms else {
        return Ok(None);
    };
    let ms = whole_number(what, ms)?;
    Ok(ms.map(Duration::from_millis))
}

/// Converts a limit from JavaScript; zero means none.
///
/// # Errors
///
/// An invalid-argument error naming `what` for a negative, fractional or
/// non-finite number.
pub(crate) fn whole_number(what: &str, value: f64) -> Result<Option<u64>> {
    if !value.is_finite() || value < 0.0 || value.fract() != 0.0 || value > MAX_SAFE_INTEGER {
        return Err(invalid_argument(format!(
            "{what} of {value} is not a whole number from 0 up; pass 0 for no limit"
        )));
    }
    Ok((value != 0.0).then_some(value as u64))
}

/// Converts a terminal dimension from JavaScript.
pub(crate) fn terminal_size(what: &str, value: u32) -> Result<u16> {
    u16::try_from(value).map_err(|_| {
        invalid_argument(format!(
            "terminal {what} of {value} is too large; the maximum is {}",
            u16::MAX
        ))
    })
}

/// Converts a TCP port number from JavaScript.
///
/// # Errors
///
/// An invalid-argument error for anything but a whole number from 1 to
/// 65535.
pub(crate) fn port_number(value: f64) -> Result<u16> {
    // NaN and the infinities have a NaN fraction, so they fail here too.
    if value.fract() != 0.0 || !(1.0..=f64::from(u16::MAX)).contains(&value) {
        return Err(invalid_argument(format!(
            "port {value} is not a TCP port number; pass a whole number from 1 to 65535"
        )));
    }
    Ok(value as u16)
}

/// A running command, as E2B's `ProcessInfo`.
#[napi(object)]
#[derive(Debug)]
pub struct ProcessInfoObject {
    pub pid: u32,
    pub tag: Option<String>,
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: HashMap<String, String>,
    pub cwd: String,
}

impl From<ProcessInfo> for ProcessInfoObject {
    fn from(info: ProcessInfo) -> Self {
        Self {
            pid: info.pid,
            tag: info.tag,
            cmd: info.cmd,
            args: info.args,
            envs: info.envs.into_iter().collect(),
            cwd: info.cwd,
        }
    }
}

/// A file or directory, as E2B's `EntryInfo`. `modifiedMs` is milliseconds
/// since the Unix epoch; `index.js` turns it into a `Date`.
#[napi(object)]
#[derive(Debug)]
pub struct EntryInfoObject {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[napi(js_name = "type")]
    pub kind: String,
    pub path: String,
    pub size: f64,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    pub modified_ms: f64,
    pub symlink_target: Option<String>,
}

impl From<EntryInfo> for EntryInfoObject {
    fn from(entry: EntryInfo) -> Self {
        let kind = match entry.kind {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            _ => "other",
        };
        let modified_ms = epoch_ms(entry.modified);
        Self {
            name: entry.name,
            kind: kind.to_string(),
            path: entry.path,
            size: entry.size as f64,
            mode: entry.mode,
            permissions: entry.permissions,
            owner: entry.owner,
            group: entry.group,
            modified_ms,
            symlink_target: entry.symlink_target,
        }
    }
}

/// Milliseconds since the Unix epoch, which JavaScript's `Date` takes; a
/// time before the epoch counts as the epoch itself.
fn epoch_ms(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A sandbox as `getInfo()` and `list()` describe it. Times are
/// milliseconds since the Unix epoch.
#[napi(object)]
#[derive(Debug)]
pub struct SandboxInfoObject {
    pub sandbox_id: String,
    pub template: String,
    pub metadata: HashMap<String, String>,
    pub envs: HashMap<String, String>,
    pub started_ms: f64,
    /// Absent without a timeout and while paused.
    pub ends_ms: Option<f64>,
    /// `running` or `paused`.
    pub state: String,
    pub cpu_limit: Option<f64>,
    pub memory_limit: Option<f64>,
    /// Whether the sandbox has internet access through slirp4netns.
    pub internet_access: bool,
    /// The egress rules as given at creation.
    pub allow_out: Vec<String>,
    pub deny_out: Vec<String>,
    /// `kill` or `pause`.
    pub on_timeout: String,
    pub auto_resume: bool,
}

impl From<SandboxInfo> for SandboxInfoObject {
    fn from(info: SandboxInfo) -> Self {
        Self {
            sandbox_id: info.sandbox_id,
            template: info.template,
            metadata: info.metadata.into_iter().collect(),
            envs: info.envs.into_iter().collect(),
            started_ms: epoch_ms(info.started_at),
            ends_ms: info.ends_at.map(epoch_ms),
            state: info.state.as_str().to_string(),
            cpu_limit: info.cpu_limit,
            memory_limit: info.memory_limit.map(|bytes| bytes as f64),
            internet_access: info.network == Network::Internet,
            allow_out: info.allow_out,
            deny_out: info.deny_out,
            on_timeout: info.on_timeout.as_str().to_string(),
            auto_resume: info.auto_resume,
        }
    }
}

/// A sandbox's resource use, as E2B's `SandboxMetrics`.
#[napi(object)]
#[derive(Debug)]
pub struct SandboxMetricsObject {
    pub timestamp_ms: f64,
    pub cpu_count: f64,
    pub cpu_used_pct: f64,
    /// Absent without a memory cgroup.
    pub mem_used: Option<f64>,
    /// Absent without a memory limit.
    pub mem_total: Option<f64>,
    pub disk_used: f64,
    pub disk_total: f64,
}

impl From<SandboxMetrics> for SandboxMetricsObject {
    fn from(metrics: SandboxMetrics) -> Self {
        Self {
            timestamp_ms: epoch_ms(metrics.timestamp),
            cpu_count: metrics.cpu_count,
            cpu_used_pct: metrics.cpu_used_pct,
            mem_used: metrics.mem_used.map(|bytes| bytes as f64),
            mem_total: metrics.mem_total.map(|bytes| bytes as f64),
            disk_used: metrics.disk_used as f64,
            disk_total: metrics.disk_total as f64,
        }
    }
}

/// One file for `writeFiles`.
#[napi(object)]
#[expect(
    missing_debug_implementations,
    reason = "napi-rs's Buffer has no Debug"
)]
pub struct WriteEntryObject {
    pub path: String,
    pub data: Buffer,
}
