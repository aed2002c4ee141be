//! The results of `soulbox_sandbox_get_info`, `soulbox_sandbox_list` and
//! `soulbox_sandbox_metrics`: plain structs that C reads directly. Each is
//! allocated with the strings and arrays it points to in one owned block,
//! as in [`crate::output`].

use std::ffi::c_char;

use soulbox_core::{SandboxInfo as CoreInfo, SandboxMetrics, SandboxState as CoreState};

use crate::block::{array_ptr, millis, Strings};

/// Value of a `uint64_t` field that is unknown or does not apply, such as
/// the memory use of a sandbox without a memory limit.
pub const SOULBOX_NONE: u64 = u64::MAX;

/// State of a sandbox, and the state filter of `soulbox_sandbox_list`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// Any state; only as a filter.
    Any = 0,
    /// Its processes run.
    Running = 1,
    /// Its processes are frozen, and its timeout clock is stopped.
    Paused = 2,
}

impl SandboxState {
    /// Reads a state filter that C passed as a number.
    pub fn from_filter(value: u32) -> Option<Option<CoreState>> {
        [
            (Self::Any, None),
            (Self::Running, Some(CoreState::Running)),
            (Self::Paused, Some(CoreState::Paused)),
        ]
        .into_iter()
        .find(|(state, _)| *state as u32 == value)
        .map(|(_, filter)| filter)
    }

    fn of(state: CoreState) -> Self {
        match state {
            CoreState::Running => Self::Running,
            CoreState::Paused => Self::Paused,
        }
    }
}

/// A key and its value, both NUL-terminated UTF-8.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KeyValue {
    /// The key.
    pub key: *const c_char,
    /// Its value.
    pub value: *const c_char,
}

/// A sandbox as `soulbox_sandbox_get_info` and `soulbox_sandbox_list`
/// return it. One from `soulbox_sandbox_get_info` is owned by the caller
/// and freed with `soulbox_sandbox_info_free`; one in a
/// `soulbox_sandbox_info_list` belongs to the list. The strings and arrays
/// it points to belong to it.
#[repr(C)]
#[derive(Debug)]
pub struct SandboxInfo {
    /// The sandbox id.
    pub sandbox_id: *const c_char,
    /// The template it was built from.
    pub template_name: *const c_char,
    /// Labels given at creation, sorted by key; NULL when there are none.
    pub metadata: *const KeyValue,
    /// Number of entries in `metadata`.
    pub metadata_len: usize,
    /// Sandbox-wide environment variables given at creation, sorted by
    /// name; NULL when there are none.
    pub envs: *const KeyValue,
    /// Number of entries in `envs`.
    pub envs_len: usize,
    /// Creation time, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// When the sandbox's timeout ends it, in milliseconds since the Unix
    /// epoch; -1 without a timeout and while it is paused, because a paused
    /// sandbox's clock is stopped.
    pub ends_at_ms: i64,
    /// SOULBOX_SANDBOX_STATE_RUNNING or SOULBOX_SANDBOX_STATE_PAUSED.
    pub state: SandboxState,
    /// CPU limit in cores, or 0 when none is enforced.
    pub cpu_limit: f64,
    /// Memory limit in bytes, or SOULBOX_NONE when none is enforced.
    pub memory_limit: u64,
    /// Host pid of the sandbox's PID 1.
    pub pid: i32,
}

/// The sandboxes `soulbox_sandbox_list` found, oldest first. Owned by the
/// caller and freed with `soulbox_sandbox_info_list_free`.
#[repr(C)]
#[derive(Debug)]
pub struct SandboxList {
    /// The sandboxes; NULL when there are none.
    pub items: *const SandboxInfo,
    /// Number of entries in `items`.
    pub len: usize,
}

/// Resource use of a sandbox. Owned by the caller and freed with
/// `soulbox_metrics_free`.
#[repr(C)]
#[derive(Debug)]
pub struct Metrics {
    /// When the numbers were read, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// CPUs the sandbox may use: its CPU limit in cores, or the host's CPU
    /// count without one.
    pub cpu_count: f64,
    /// CPU use in percent of `cpu_count`, averaged since the previous
    /// metrics call on this handle, or since creation for the first.
    pub cpu_used_pct: f64,
    /// CPU time used since creation in microseconds, or SOULBOX_NONE where
    /// no cgroup counts it.
    pub cpu_time_us: u64,
    /// Memory in use in bytes, page cache and the in-memory writable layer
    /// included, or SOULBOX_NONE without a memory cgroup.
    pub mem_used: u64,
    /// The memory limit in bytes, or SOULBOX_NONE without one.
    pub mem_total: u64,
    /// Bytes used in the sandbox's writable layer.
    pub disk_used: u64,
    /// Size limit of the writable layer in bytes.
    pub disk_total: u64,
}

/// The strings and arrays that one [`SandboxInfo`] points into. Moving it
/// moves none of their heap buffers, so the pointers stay valid.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the fields are only kept alive; C reads them through SandboxInfo"
)]
struct InfoStorage {
    strings: Strings,
    metadata: Vec<KeyValue>,
    envs: Vec<KeyValue>,
}

/// A [`SandboxInfo`] with its storage; `public` is at offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct InfoBlock {
    public: SandboxInfo,
    storage: InfoStorage,
}

/// A [`SandboxList`] with its entries and their storage; `public` is at
/// offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct ListBlock {
    public: SandboxList,
    items: Vec<SandboxInfo>,
    storage: Vec<InfoStorage>,
}

fn c_info(info: &CoreInfo) -> (SandboxInfo, InfoStorage) {
    let mut strings = Strings::default();
    let sandbox_id = strings.keep(&info.sandbox_id);
    let template_name = strings.keep(&info.template);
    let metadata = strings.key_values(&info.metadata);
    let envs = strings.key_values(&info.envs);
    let public = SandboxInfo {
        sandbox_id,
        template_name,
        metadata: array_ptr(&metadata),
        metadata_len: metadata.len(),
        envs: array_ptr(&envs),
        envs_len: envs.len(),
        started_at_ms: millis(info.started_at),
        ends_at_ms: info.ends_at.map_or(-1, millis),
        state: SandboxState::of(info.state),
        cpu_limit: info.cpu_limit.unwrap_or(0.0),
        memory_limit: info.memory_limit.unwrap_or(SOULBOX_NONE),
        pid: info.pid,
    };
    let storage = InfoStorage {
        strings,
        metadata,
        envs,
    };
    (public, storage)
}

impl InfoBlock {
    pub fn new(info: &CoreInfo) -> Box<Self> {
        let (public, storage) = c_info(info);
        Box::new(Self { public, storage })
    }
}

impl ListBlock {
    pub fn new(infos: &[CoreInfo]) -> Box<Self> {
        let (items, storage): (Vec<SandboxInfo>, Vec<InfoStorage>) =
            infos.iter().map(c_info).unzip();
        Box::new(Self {
            public: SandboxList {
                items: array_ptr(&items),
                len: items.len(),
            },
            items,
            storage,
        })
    }
}

impl Metrics {
    pub fn new(metrics: &SandboxMetrics) -> Box<Self> {
        Box::new(Self {
            timestamp_ms: millis(metrics.timestamp),
            cpu_count: metrics.cpu_count,
            cpu_used_pct: metrics.cpu_used_pct,
            cpu_time_us: metrics.cpu_time.map_or(SOULBOX_NONE, |time| {
                u64::try_from(time.as_micros()).unwrap_or(SOULBOX_NONE - 1)
            }),
            mem_used: metrics.mem_used.unwrap_or(SOULBOX_NONE),
            mem_total: metrics.mem_total.unwrap_or(SOULBOX_NONE),
            disk_used: metrics.disk_used,
            disk_total: metrics.disk_total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_filter_rejects_unknown_values() {
        assert_eq!(SandboxState::from_filter(0), Some(None));
        assert_eq!(SandboxState::from_filter(2), Some(Some(CoreState::Paused)));
        assert_eq!(SandboxState::from_filter(3), None);
    }
}
