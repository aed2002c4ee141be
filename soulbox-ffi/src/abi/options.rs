//! `soulbox_options_*` and `soulbox_run_options_*`.

use std::ffi::c_char;
use std::ptr;

use super::{c_os_string, c_str, free_box, guard, guard_value, handle_mut};
use crate::error::{Error, Result};
use crate::options::{Options, RunOptions};

/// Runs a setter on the builder `options` points to.
fn update<T>(
    function: &'static str,
    options: *mut T,
    change: impl FnOnce(&mut T) -> Result<()>,
) -> *mut Error {
    guard(function, || {
        // SAFETY: the header requires NULL or a live builder from the
        // matching `_new` function, used by one thread at a time.
        let options = unsafe { handle_mut(options, "options") }?;
        change(options)
    })
}

/// Creates sandbox options holding the defaults: template "host", a
/// 300 s lifetime, 2 GiB of memory, 1024 processes, a 4 GiB writable
/// layer with 262,144 inodes, a 1 GiB /tmp and 4096 open files per
/// process. Never returns NULL. Free it with `soulbox_options_free`; a
/// sandbox created from it does not keep it.
#[no_mangle]
pub extern "C" fn soulbox_options_new() -> *mut Options {
    guard_value(ptr::null_mut(), || Box::into_raw(Box::default()))
}

/// Frees sandbox options. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_options_free(options: *mut Options) {
    guard_value((), || {
        // SAFETY: the header requires NULL or options from
        // soulbox_options_new that were not freed yet.
        unsafe { free_box(options) }
    });
}

/// Sets the template, one of:
/// - "host";
/// - the absolute path of a directory that contains a root file system,
///   used as the sandbox's read-only root as it is;
/// - the absolute path of an OCI image layout or image archive, with an
///   optional `:NAME`;
/// - a template built by `soulbox template build`.
///
/// A built template is its name, or the absolute path of its soulbox.toml
/// or of the folder. Any other name fails `soulbox_sandbox_create`.
#[no_mangle]
pub extern "C" fn soulbox_options_set_template(
    options: *mut Options,
    name: *const c_char,
) -> *mut Error {
    update("soulbox_options_set_template", options, |options| {
        // SAFETY: the header requires a NUL-terminated string.
        let name = unsafe { c_str(name, "name") }?;
        options.set_template(name);
        Ok(())
    })
}

/// Adds a host file or directory to mount into the sandbox at `target`,
/// an absolute path inside it. `source` is an absolute host path, any
/// bytes but NUL; `target` is UTF-8. The mount is read-only unless
/// `writable`, and nosuid and nodev either way; files that the sandbox
/// writes to a writable mount land on the host. Mounts apply in the order
/// added. A bad path fails `soulbox_sandbox_create` with an
/// invalid-argument error that names the mount.
#[no_mangle]
pub extern "C" fn soulbox_options_add_mount(
    options: *mut Options,
    source: *const c_char,
    target: *const c_char,
    writable: bool,
) -> *mut Error {
    update("soulbox_options_add_mount", options, |options| {
        // SAFETY: the header requires NUL-terminated strings.
        let (source, target) =
            unsafe { (c_os_string(source, "source")?, c_str(target, "target")?) };
        options.add_mount(source, target, writable);
        Ok(())
    })
}

/// Sets how long the sandbox lives, in milliseconds, enforced by its own
/// PID 1 even if this process dies; 0 means no limit. Default 300,000.
#[no_mangle]
pub extern "C" fn soulbox_options_set_timeout_ms(options: *mut Options, ms: u64) -> *mut Error {
    update("soulbox_options_set_timeout_ms", options, |options| {
        options.set_timeout_ms(ms);
        Ok(())
    })
}

/// Sets an environment variable for every command in the sandbox, below
/// each command's own. Both strings must be UTF-8; the name must not be
/// empty or contain '='. Setting a name again replaces its value.
#[no_mangle]
pub extern "C" fn soulbox_options_set_env(
    options: *mut Options,
    name: *const c_char,
    value: *const c_char,
) -> *mut Error {
    update("soulbox_options_set_env", options, |options| {
        // SAFETY: the header requires NUL-terminated strings.
        let (name, value) = unsafe { (c_str(name, "name")?, c_str(value, "value")?) };
        options.set_env(name, value);
        Ok(())
    })
}

/// Adds a metadata label, UTF-8, that `soulbox_sandbox_get_info` returns
/// and `soulbox_sandbox_list` filters by. Setting a key again replaces its
/// value.
#[no_mangle]
pub extern "C" fn soulbox_options_set_metadata(
    options: *mut Options,
    key: *const c_char,
    value: *const c_char,
) -> *mut Error {
    update("soulbox_options_set_metadata", options, |options| {
        // SAFETY: the header requires NUL-terminated strings.
        let (key, value) = unsafe { (c_str(key, "key")?, c_str(value, "value")?) };
        options.set_metadata(key, value);
        Ok(())
    })
}

/// Sets whether the sandbox ends with the handle that
/// `soulbox_sandbox_create` returns: when true, `soulbox_sandbox_free` on
/// that handle kills it, and so does the exit or death of this process.
/// When false, the default as on E2B, the sandbox runs until its timeout
/// or a kill, and any process of the same user can reach it with
/// `soulbox_sandbox_connect`.
#[no_mangle]
pub extern "C" fn soulbox_options_set_kill_on_drop(
    options: *mut Options,
    kill_on_drop: bool,
) -> *mut Error {
    update("soulbox_options_set_kill_on_drop", options, |options| {
        options.set_kill_on_drop(kill_on_drop);
        Ok(())
    })
}

/// Sets what the sandbox's timeout does, as E2B's `lifecycle` option.
/// `on_timeout` is "kill" (the default), which ends the sandbox, or
/// "pause", which freezes it as `soulbox_sandbox_pause` does and keeps its
/// memory and files. `soulbox_sandbox_resume` or `soulbox_sandbox_connect`
/// thaws it, and its timeout then starts again at its length at creation.
/// With `auto_resume`, valid only with "pause", starting a command, a file
/// call or running code through a handle resumes the paused sandbox
/// first. Without it such calls find the sandbox paused: a command starts
/// only once it is resumed. "pause" needs a writable cgroup v2 hierarchy,
/// and `soulbox_sandbox_create` fails with an unsupported error without one.
#[no_mangle]
pub extern "C" fn soulbox_options_set_lifecycle(
    options: *mut Options,
    on_timeout: *const c_char,
    auto_resume: bool,
) -> *mut Error {
    update("soulbox_options_set_lifecycle", options, |options| {
        // SAFETY: the header requires a NUL-terminated string.
        let on_timeout = unsafe { c_str(on_timeout, "on_timeout") }?;
        let on_timeout: soulbox_core::OnTimeout = on_timeout.parse()?;
        if auto_resume && on_timeout != soulbox_core::OnTimeout::Pause {
            return Err(Error::invalid(
                "auto_resume is valid only with on_timeout \"pause\"; pass \"pause\" or \
                 auto_resume false",
            ));
        }
        options.set_lifecycle(on_timeout, auto_resume);
        Ok(())
    })
}

/// Sets whether the sandbox gets internet access: a tap device `eth0` whose
/// traffic slirp4netns relays through the host's sockets, with DNS at
/// 10.0.2.3. False, the default, leaves it loopback only (E2B's default is
/// internet access). slirp4netns must be installed (package
/// `slirp4netns`). SoulBox runs the program that `SOULBOX_SLIRP4NETNS`
/// names when that is set, else `slirp4netns` from `PATH`. When it is
/// missing, create fails with a message that names it.
#[no_mangle]
pub extern "C" fn soulbox_options_set_internet_access(
    options: *mut Options,
    enabled: bool,
) -> *mut Error {
    update("soulbox_options_set_internet_access", options, |options| {
        options.set_internet_access(enabled);
        Ok(())
    })
}

/// Adds an IPv4 address or CIDR block, UTF-8 such as "192.0.2.1" or
/// "192.0.2.0/24", that the sandbox may send to even where a network
/// added with `soulbox_options_add_deny_out` contains it. The sandbox
/// needs internet access (`soulbox_options_set_internet_access`). Domain
/// names, IPv6 and CIDR blocks with host bits set fail
/// `soulbox_sandbox_create` with an invalid-argument error that names the
/// entry, and so do more than 256 entries of both kinds together.
#[no_mangle]
pub extern "C" fn soulbox_options_add_allow_out(
    options: *mut Options,
    network: *const c_char,
) -> *mut Error {
    update("soulbox_options_add_allow_out", options, |options| {
        // SAFETY: the header requires a NUL-terminated string.
        let network = unsafe { c_str(network, "network") }?;
        options.add_allow_out(network);
        Ok(())
    })
}

/// Adds an IPv4 address or CIDR block that the sandbox may not send to,
/// TCP and UDP alike, unless a network added with
/// `soulbox_options_add_allow_out` contains the address: a connect fails
/// with EACCES and no packet leaves. "0.0.0.0/0" denies every address,
/// the DNS forwarder 10.0.2.3 included. The rules are fixed at create.
/// Checked as in `soulbox_options_add_allow_out`.
#[no_mangle]
pub extern "C" fn soulbox_options_add_deny_out(
    options: *mut Options,
    network: *const c_char,
) -> *mut Error {
    update("soulbox_options_add_deny_out", options, |options| {
        // SAFETY: the header requires a NUL-terminated string.
        let network = unsafe { c_str(network, "network") }?;
        options.add_deny_out(network);
        Ok(())
    })
}

/// Sets the memory limit in bytes, swap closed; 0 means no limit. At
/// least 16 MiB. Default 2 GiB.
#[no_mangle]
pub extern "C" fn soulbox_options_set_memory_limit(
    options: *mut Options,
    bytes: u64,
) -> *mut Error {
    update("soulbox_options_set_memory_limit", options, |options| {
        options.set_memory_limit(bytes);
        Ok(())
    })
}

/// Sets the maximum number of processes and threads; 0 means no limit.
/// At least 8. Default 1024.
#[no_mangle]
pub extern "C" fn soulbox_options_set_pids_limit(options: *mut Options, count: u64) -> *mut Error {
    update("soulbox_options_set_pids_limit", options, |options| {
        options.set_pids_limit(count);
        Ok(())
    })
}

/// Sets the CPU limit in cores (0.5 is half a core); 0 means no limit,
/// the default. Between 0.01 and 1024.
#[no_mangle]
pub extern "C" fn soulbox_options_set_cpu_limit(options: *mut Options, cores: f64) -> *mut Error {
    update("soulbox_options_set_cpu_limit", options, |options| {
        options.set_cpu_limit(cores)
    })
}

/// Sets the size limit of the writable layer in bytes. At least 1 MiB.
/// Default 4 GiB.
#[no_mangle]
pub extern "C" fn soulbox_options_set_disk_size(options: *mut Options, bytes: u64) -> *mut Error {
    update("soulbox_options_set_disk_size", options, |options| {
        options.set_disk_size(bytes);
        Ok(())
    })
}

/// Sets the maximum number of files and directories in the writable
/// layer. At least 1024. Default 262,144.
#[no_mangle]
pub extern "C" fn soulbox_options_set_disk_inodes(options: *mut Options, count: u64) -> *mut Error {
    update("soulbox_options_set_disk_inodes", options, |options| {
        options.set_disk_inodes(count);
        Ok(())
    })
}

/// Sets the size limit of the sandbox's /tmp in bytes. At least 1 MiB.
/// Default 1 GiB.
#[no_mangle]
pub extern "C" fn soulbox_options_set_tmp_size(options: *mut Options, bytes: u64) -> *mut Error {
    update("soulbox_options_set_tmp_size", options, |options| {
        options.set_tmp_size(bytes);
        Ok(())
    })
}

/// Sets the maximum number of open files per process (RLIMIT_NOFILE).
/// Between 64 and 1,048,576. Default 4096.
#[no_mangle]
pub extern "C" fn soulbox_options_set_open_files_limit(
    options: *mut Options,
    count: u64,
) -> *mut Error {
    update("soulbox_options_set_open_files_limit", options, |options| {
        options.set_open_files_limit(count);
        Ok(())
    })
}

/// Sets the largest file a sandboxed process may write, in bytes
/// (RLIMIT_FSIZE); 0 means no limit, the default. It does not bind the
/// `soulbox_files_*` calls.
#[no_mangle]
pub extern "C" fn soulbox_options_set_file_size_limit(
    options: *mut Options,
    bytes: u64,
) -> *mut Error {
    update("soulbox_options_set_file_size_limit", options, |options| {
        options.set_file_size_limit(bytes);
        Ok(())
    })
}

/// Creates command options with the defaults: user "user" (root in a
/// rootless sandbox), working directory /home/user, no extra environment,
/// stdin from /dev/null, a 60 s timeout for `soulbox_run` and
/// `soulbox_exec` and none for `soulbox_command_start`. Never returns
/// NULL. Free it with `soulbox_run_options_free`; a command does not keep
/// it.
#[no_mangle]
pub extern "C" fn soulbox_run_options_new() -> *mut RunOptions {
    guard_value(ptr::null_mut(), || Box::into_raw(Box::default()))
}

/// Frees command options. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_run_options_free(options: *mut RunOptions) {
    guard_value((), || {
        // SAFETY: the header requires NULL or options from
        // soulbox_run_options_new that were not freed yet.
        unsafe { free_box(options) }
    });
}

/// Sets the working directory, UTF-8; a relative path starts at the
/// user's home. A directory that does not exist fails the command's start
/// with an invalid-argument error.
#[no_mangle]
pub extern "C" fn soulbox_run_options_set_cwd(
    options: *mut RunOptions,
    dir: *const c_char,
) -> *mut Error {
    update("soulbox_run_options_set_cwd", options, |options| {
        // SAFETY: the header requires a NUL-terminated string.
        options.set_cwd(unsafe { c_str(dir, "dir") }?);
        Ok(())
    })
}

/// Sets the user the command runs as: "user" (uid 1000) or "root". Any
/// other name fails the command's start.
#[no_mangle]
pub extern "C" fn soulbox_run_options_set_user(
    options: *mut RunOptions,
    name: *const c_char,
) -> *mut Error {
    update("soulbox_run_options_set_user", options, |options| {
        // SAFETY: the header requires a NUL-terminated string.
        options.set_user(unsafe { c_str(name, "name") }?);
        Ok(())
    })
}

/// Sets an environment variable for the command, over the sandbox's. Any
/// bytes but NUL; the name must not be empty or contain '=', which the
/// command's start checks.
#[no_mangle]
pub extern "C" fn soulbox_run_options_set_env(
    options: *mut RunOptions,
    name: *const c_char,
    value: *const c_char,
) -> *mut Error {
    update("soulbox_run_options_set_env", options, |options| {
        // SAFETY: the header requires NUL-terminated strings.
        let (name, value) = unsafe { (c_os_string(name, "name")?, c_os_string(value, "value")?) };
        options.set_env(name, value);
        Ok(())
    })
}

/// Sets how long the command may run, in milliseconds, before its whole
/// process tree is killed and its output is returned with `timed_out`
/// set; 0 means no limit.
#[no_mangle]
pub extern "C" fn soulbox_run_options_set_timeout_ms(
    options: *mut RunOptions,
    ms: u64,
) -> *mut Error {
    update("soulbox_run_options_set_timeout_ms", options, |options| {
        options.set_timeout_ms(ms);
        Ok(())
    })
}

/// Keeps the command's stdin open for `soulbox_command_send_stdin` when
/// true; otherwise it reads /dev/null. Only for `soulbox_command_start`
/// and `soulbox_command_start_argv`: `soulbox_run` and `soulbox_exec`
/// reject it with an invalid-argument error. `soulbox_pty_create` ignores
/// it, because a PTY session's input is always open.
#[no_mangle]
pub extern "C" fn soulbox_run_options_set_stdin(
    options: *mut RunOptions,
    open: bool,
) -> *mut Error {
    update("soulbox_run_options_set_stdin", options, |options| {
        options.set_stdin(open);
        Ok(())
    })
}

/// Tags the command with `tag`, UTF-8, which `soulbox_commands_list`
/// shows and `soulbox_commands_connect_tag` finds it by. The command's
/// start fails with an invalid-argument error if the tag is empty or a
/// running command started through the same sandbox handle already has
/// it.
#[no_mangle]
pub extern "C" fn soulbox_run_options_set_tag(
    options: *mut RunOptions,
    tag: *const c_char,
) -> *mut Error {
    update("soulbox_run_options_set_tag", options, |options| {
        // SAFETY: the header requires a NUL-terminated string.
        options.set_tag(unsafe { c_str(tag, "tag") }?);
        Ok(())
    })
}
