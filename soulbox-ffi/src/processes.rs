//! The result of `soulbox_commands_list`: the running commands of a
//! sandbox, in one owned block as in [`crate::info`].

use std::ffi::c_char;

use soulbox_core::ProcessInfo as CoreProcess;

use crate::block::{array_ptr, Strings};
use crate::info::KeyValue;

/// A running command as `soulbox_commands_list` returns it. It belongs to
/// its list, and so do the strings and arrays it points to. Bytes of its
/// strings that are not UTF-8 become U+FFFD.
#[repr(C)]
#[derive(Debug)]
pub struct ProcessInfo {
    /// The pid of the command's first process inside the sandbox, which
    /// `soulbox_commands_connect` takes.
    pub pid: u32,
    /// The tag given with `soulbox_run_options_set_tag`, or NULL.
    pub tag: *const c_char,
    /// The program, such as "/bin/bash" for a command line run through the
    /// shell.
    pub cmd: *const c_char,
    /// Its arguments, without the program; NULL when there are none.
    pub args: *const *const c_char,
    /// Number of entries in `args`.
    pub args_len: usize,
    /// Environment variables given for this command with
    /// `soulbox_run_options_set_env`, sorted by name (not the defaults or
    /// the sandbox's); NULL when there are none.
    pub envs: *const KeyValue,
    /// Number of entries in `envs`.
    pub envs_len: usize,
    /// The working directory.
    pub cwd: *const c_char,
}

/// The running commands of a sandbox, ordered by pid. Owned by the caller
/// and freed with `soulbox_process_info_list_free`.
#[repr(C)]
#[derive(Debug)]
pub struct ProcessList {
    /// The commands; NULL when there are none.
    pub items: *const ProcessInfo,
    /// Number of entries in `items`.
    pub len: usize,
}

/// A [`ProcessList`] with everything its entries point into; `public` is
/// at offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct ProcessListBlock {
    public: ProcessList,
    items: Vec<ProcessInfo>,
    storage: ProcessStorage,
}

/// The strings and arrays of every entry of one list. Moving it moves
/// none of their heap buffers, so the pointers stay valid.
#[derive(Debug, Default)]
#[expect(
    dead_code,
    reason = "the fields are only kept alive; C reads them through ProcessInfo"
)]
struct ProcessStorage {
    strings: Strings,
    args: Vec<Vec<*const c_char>>,
    envs: Vec<Vec<KeyValue>>,
}

impl ProcessListBlock {
    pub fn new(processes: &[CoreProcess]) -> Box<Self> {
        let mut strings = Strings::default();
        let mut all_args = Vec::with_capacity(processes.len());
        let mut all_envs = Vec::with_capacity(processes.len());
        let mut items = Vec::with_capacity(processes.len());
        for process in processes {
            let args: Vec<*const c_char> = process.args.iter().map(|a| strings.keep(a)).collect();
            let envs = strings.key_values(&process.envs);
            items.push(ProcessInfo {
                pid: process.pid,
                tag: process
                    .tag
                    .as_deref()
                    .map_or(std::ptr::null(), |tag| strings.keep(tag)),
                cmd: strings.keep(&process.cmd),
                args: array_ptr(&args),
                args_len: args.len(),
                envs: array_ptr(&envs),
                envs_len: envs.len(),
                cwd: strings.keep(&process.cwd),
            });
            all_args.push(args);
            all_envs.push(envs);
        }
        Box::new(Self {
            public: ProcessList {
                items: array_ptr(&items),
                len: items.len(),
            },
            items,
            storage: ProcessStorage {
                strings,
                args: all_args,
                envs: all_envs,
            },
        })
    }
}
