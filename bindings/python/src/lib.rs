//! The native part of the `soulbox` Python package, `soulbox._native`.
//!
//! It is a thin layer over soulbox-core: each method builds one core
//! future and hands it to `bridge`, which holds the binding policy (GIL
//! release, Ctrl-C, asyncio, error mapping). The E2B-shaped API that users
//! import lives in Python, under `python/soulbox`.

mod bridge;
mod build;
mod code;
mod command;
mod files;
mod lifecycle;
mod pool;
mod sandbox;
mod writer;

use pyo3::prelude::*;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<sandbox::NativeSandbox>()?;
    module.add_class::<pool::NativePool>()?;
    module.add_class::<command::NativeCommand>()?;
    module.add_class::<code::NativeCodeRun>()?;
    module.add_class::<files::NativeFileReader>()?;
    module.add_class::<files::NativeWatcher>()?;
    module.add_class::<writer::NativeFileWriter>()?;
    module.add_function(wrap_pyfunction!(bridge::shut_down, module)?)?;
    // Runs before the interpreter's finalization; see bridge::shut_down.
    let shut_down = module.getattr("shut_down")?;
    module
        .py()
        .import("atexit")?
        .call_method1("register", (shut_down,))?;
    module.add(
        "DEFAULT_TIMEOUT",
        soulbox_core::DEFAULT_TIMEOUT.as_secs_f64(),
    )?;
    module.add("MAX_POOL_SIZE", soulbox_core::MAX_POOL_SIZE)?;
    module.add("DEFAULT_MEMORY_LIMIT", soulbox_core::DEFAULT_MEMORY_LIMIT)?;
    module.add("ALL_TRAFFIC", soulbox_core::ALL_TRAFFIC)?;
    module.add("DEFAULT_PIDS_LIMIT", soulbox_core::DEFAULT_PIDS_LIMIT)?;
    module.add("DEFAULT_DISK_SIZE", soulbox_core::DEFAULT_DISK_SIZE)?;
    module.add("DEFAULT_TMP_SIZE", soulbox_core::DEFAULT_TMP_SIZE)?;
    module.add("DEFAULT_DISK_INODES", soulbox_core::DEFAULT_DISK_INODES)?;
    module.add(
        "DEFAULT_OPEN_FILES_LIMIT",
        soulbox_core::DEFAULT_OPEN_FILES_LIMIT,
    )?;
    module.add(
        "DEFAULT_COMMAND_TIMEOUT",
        soulbox_core::DEFAULT_COMMAND_TIMEOUT.as_secs_f64(),
    )?;
    module.add(
        "DEFAULT_CODE_TIMEOUT",
        soulbox_core::DEFAULT_CODE_TIMEOUT.as_secs_f64(),
    )?;
    Ok(())
}
