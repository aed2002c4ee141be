//! Option builders: `soulbox_options` for a new sandbox and
//! `soulbox_run_options` for a command.
//!
//! Both are opaque so that new options never change a struct layout that
//! compiled C code depends on. Setters only store values; soulbox-core
//! checks them when the sandbox is created or the command starts, so an
//! out-of-range value fails that call with an invalid-argument error that
//! names the option.

use std::ffi::OsString;
use std::time::Duration;

use soulbox_core::SandboxOptions;

use crate::error::Result;

/// Options for `soulbox_sandbox_create`. Start from
/// `soulbox_options_new`, which contains soulbox-core's defaults.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub(crate) inner: SandboxOptions,
}

/// Options for `soulbox_run`, `soulbox_exec`, `soulbox_command_start`,
/// `soulbox_command_start_argv` and `soulbox_pty_create`. Start from
/// `soulbox_run_options_new`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub(crate) cwd: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) envs: Vec<(OsString, OsString)>,
    /// `None` until set: then run waits 60 s and start has no timeout.
    pub(crate) timeout: Option<Option<Duration>>,
    pub(crate) stdin: bool,
    pub(crate) tag: Option<String>,
}

/// Turns a C "0 means none" count into soulbox-core's `Option`.
fn zero_is_none(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}

impl Options {
    pub fn set_template(&mut self, name: &str) {
        self.inner.template = name.to_string();
    }

    pub fn add_mount(&mut self, source: OsString, target: &str, writable: bool) {
        self.inner.mounts.push(soulbox_core::Mount {
            source: source.into(),
            target: target.to_string(),
            writable,
        });
    }

    pub fn set_timeout_ms(&mut self, ms: u64) {
        // soulbox-core's zero timeout already means none.
        self.inner.timeout = Duration::from_millis(ms);
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.inner.envs.insert(key.to_string(), value.to_string());
    }

    pub fn set_metadata(&mut self, key: &str, value: &str) {
        self.inner
            .metadata
            .insert(key.to_string(), value.to_string());
    }

    pub fn set_kill_on_drop(&mut self, kill_on_drop: bool) {
        self.inner.kill_on_drop = kill_on_drop;
    }

    pub fn set_lifecycle(&mut self, on_timeout: soulbox_core::OnTimeout, auto_resume: bool) {
        self.inner.on_timeout = on_timeout;
        self.inner.auto_resume = auto_resume;
    }

    pub fn set_internet_access(&mut self, enabled: bool) {
        self.inner.network = if enabled {
            soulbox_core::Network::Internet
        } else {
            soulbox_core::Network::None
        };
    }

    pub fn add_allow_out(&mut self, network: &str) {
        self.inner.allow_out.push(network.to_string());
    }

    pub fn add_deny_out(&mut self, network: &str) {
        self.inner.deny_out.push(network.to_string());
    }

    pub fn set_memory_limit(&mut self, bytes: u64) {
        self.inner.memory_limit = zero_is_none(bytes);
    }

    pub fn set_pids_limit(&mut self, count: u64) {
        self.inner.pids_limit = zero_is_none(count);
    }

    pub fn set_cpu_limit(&mut self, cores: f64) -> Result<()> {
        if cores.is_nan() || cores < 0.0 {
            return Err(crate::error::Error::invalid(format!(
                "cpu_limit of {cores} cores is invalid; pass a number of cores such as 0.5, or \
                 0 for no limit"
            )));
        }
        self.inner.cpu_limit = (cores != 0.0).then_some(cores);
        Ok(())
    }

    pub fn set_disk_size(&mut self, bytes: u64) {
        self.inner.disk_size = bytes;
    }

    pub fn set_disk_inodes(&mut self, count: u64) {
        self.inner.disk_inodes = count;
    }

    pub fn set_tmp_size(&mut self, bytes: u64) {
        self.inner.tmp_size = bytes;
    }

    pub fn set_open_files_limit(&mut self, count: u64) {
        self.inner.open_files_limit = count;
    }

    pub fn set_file_size_limit(&mut self, bytes: u64) {
        self.inner.file_size_limit = zero_is_none(bytes);
    }
}

impl RunOptions {
    pub fn set_cwd(&mut self, dir: &str) {
        self.cwd = Some(dir.to_string());
    }

    pub fn set_user(&mut self, name: &str) {
        self.user = Some(name.to_string());
    }

    pub fn set_env(&mut self, key: OsString, value: OsString) {
        self.envs.push((key, value));
    }

    pub fn set_timeout_ms(&mut self, ms: u64) {
        self.timeout = Some((ms != 0).then(|| Duration::from_millis(ms)));
    }

    pub fn set_stdin(&mut self, open: bool) {
        self.stdin = open;
    }

    pub fn set_tag(&mut self, tag: &str) {
        self.tag = Some(tag.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_mean_none() {
        let mut options = Options::default();
        options.set_memory_limit(0);
        options.set_pids_limit(0);
        options.set_file_size_limit(0);
        options.set_cpu_limit(0.0).expect("0 cores is no limit");
        assert_eq!(options.inner.memory_limit, None);
        assert_eq!(options.inner.pids_limit, None);
        assert_eq!(options.inner.file_size_limit, None);
        assert_eq!(options.inner.cpu_limit, None);
    }

    #[test]
    fn negative_cpu_limit_is_rejected() {
        let mut options = Options::default();
        assert!(options.set_cpu_limit(-1.0).is_err());
        assert!(options.set_cpu_limit(f64::NAN).is_err());
        assert_eq!(options.inner.cpu_limit, None);
    }

    #[test]
    fn run_timeout_zero_is_no_limit() {
        let mut options = RunOptions::default();
        assert_eq!(options.timeout, None);
        options.set_timeout_ms(0);
        assert_eq!(options.timeout, Some(None));
        options.set_timeout_ms(1500);
        assert_eq!(options.timeout, Some(Some(Duration::from_millis(1500))));
    }
}
