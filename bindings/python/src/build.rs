//! Template builds from a `soulbox.toml`, in both flavours.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use soulbox_core::build::{self, BuildEvent, BuildOptions, BuiltTemplate};

use crate::bridge::{block, spawn, ToPython};
use crate::sandbox::NativeSandbox;

/// A build's result as (key, name, soulbox.toml path, layer path, cached).
struct Built(BuiltTemplate);

impl ToPython for Built {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let built = self.0;
        let tuple = (
            built.key,
            built.name,
            built.source.to_string_lossy().into_owned(),
            built.layer.to_string_lossy().into_owned(),
            built.cached,
        );
        Ok(tuple.into_pyobject(py)?.into_any().unbind())
    }
}

/// Builds the template at `path`, passing each chunk of a step's output to
/// `on_output` as (`"stdout"` or `"stderr"`, bytes). An exception that
/// `on_output` raises is reported as unraisable and the build goes on.
async fn build_future(
    path: PathBuf,
    name: Option<String>,
    on_output: Option<Py<PyAny>>,
) -> soulbox_core::Result<Built> {
    let mut options = BuildOptions::default();
    if let Some(name) = name {
        options = options.name(name);
    }
    let mut on_event = move |event: BuildEvent<'_>| {
        let Some(callback) = &on_output else {
            return;
        };
        let (stream, data) = match event {
            BuildEvent::Stdout(data) => ("stdout", data),
            BuildEvent::Stderr(data) => ("stderr", data),
            _ => return,
        };
        Python::attach(|py| {
            if let Err(error) = callback.call1(py, (stream, PyBytes::new(py, data))) {
                error.write_unraisable(py, Some(callback.bind(py)));
            }
        });
    };
    build::build(&path, &options, &mut on_event)
        .await
        .map(Built)
}

#[pymethods]
impl NativeSandbox {
    /// Builds a template from the soulbox.toml at `path` (or in the
    /// directory `path`) and registers it under `name` if given.
    #[staticmethod]
    #[pyo3(signature = (path, name=None, on_output=None))]
    fn build_template(
        py: Python<'_>,
        path: PathBuf,
        name: Option<String>,
        on_output: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        block(py, build_future(path, name, on_output))
    }

    /// Awaitable flavour of `build_template`.
    #[staticmethod]
    #[pyo3(signature = (path, name=None, on_output=None))]
    fn build_template_async(
        py: Python<'_>,
        path: PathBuf,
        name: Option<String>,
        on_output: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, build_future(path, name, on_output))
    }
}
