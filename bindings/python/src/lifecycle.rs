//! Sandboxes reachable by id: connect, list, kill by id, info, pause,
//! resume and metrics, in both flavours.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use soulbox_core::{ListQuery, Network, Sandbox, SandboxInfo, SandboxMetrics, SandboxState};

use crate::bridge::{self, block, spawn, List, ToPython};
use crate::sandbox::NativeSandbox;

/// Seconds since the Unix epoch, negative before it.
fn epoch_seconds(time: SystemTime) -> f64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// A sandbox's description as (id, template, metadata, envs, started at,
/// ends at, state, CPU limit, memory limit, PID 1's host pid, (internet
/// access, allow_out, deny_out), (on_timeout, auto_resume)); times are
/// seconds since the epoch. The last two are nested because PyO3 (0.27)
/// converts tuples of at most 12 elements.
struct Info(SandboxInfo);

impl ToPython for Info {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let info = self.0;
        let tuple = (
            info.sandbox_id,
            info.template,
            info.metadata,
            info.envs,
            epoch_seconds(info.started_at),
            info.ends_at.map(epoch_seconds),
            info.state.as_str(),
            info.cpu_limit,
            info.memory_limit,
            info.pid,
            (
                info.network == Network::Internet,
                info.allow_out,
                info.deny_out,
            ),
            (info.on_timeout.as_str(), info.auto_resume),
        );
        Ok(tuple.into_pyobject(py)?.into_any().unbind())
    }
}

/// Resource use as (timestamp, CPU count, CPU percent, CPU seconds, memory
/// used, memory limit, disk used, disk limit).
struct Metrics(SandboxMetrics);

impl ToPython for Metrics {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let metrics = self.0;
        let tuple = (
            epoch_seconds(metrics.timestamp),
            metrics.cpu_count,
            metrics.cpu_used_pct,
            metrics.cpu_time.map(|time| time.as_secs_f64()),
            metrics.mem_used,
            metrics.mem_total,
            metrics.disk_used,
            metrics.disk_total,
        );
        Ok(tuple.into_pyobject(py)?.into_any().unbind())
    }
}

fn list_query(
    py: Python<'_>,
    metadata: BTreeMap<String, String>,
    state: Option<String>,
) -> PyResult<ListQuery> {
    let mut query = ListQuery::default();
    for (key, value) in metadata {
        query = query.metadata(key, value);
    }
    if let Some(state) = state.as_deref() {
        let state: SandboxState = state.parse().map_err(|e| bridge::core_error(py, e))?;
        query = query.state(state);
    }
    Ok(query)
}

async fn list_future(query: ListQuery) -> soulbox_core::Result<List<Info>> {
    let infos = Sandbox::list(&query).await?;
    Ok(List(infos.into_iter().map(Info).collect()))
}

#[pymethods]
impl NativeSandbox {
    /// Connects to the sandbox `id` of this user, resuming it if paused.
    #[staticmethod]
    fn connect(py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        block(py, async move {
            Sandbox::connect(&id).await.map(NativeSandbox::new)
        })
    }

    /// Awaitable flavour of `connect`.
    #[staticmethod]
    fn connect_async(py: Python<'_>, id: String) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            Sandbox::connect(&id).await.map(NativeSandbox::new)
        })
    }

    /// Lists this user's sandboxes that have every `metadata` pair and,
    /// if given, the `state` "running" or "paused"; oldest first.
    #[staticmethod]
    #[pyo3(signature = (metadata, state=None))]
    fn list(
        py: Python<'_>,
        metadata: BTreeMap<String, String>,
        state: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let query = list_query(py, metadata, state)?;
        block(py, list_future(query))
    }

    /// Awaitable flavour of `list`.
    #[staticmethod]
    #[pyo3(signature = (metadata, state=None))]
    fn list_async(
        py: Python<'_>,
        metadata: BTreeMap<String, String>,
        state: Option<String>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let query = list_query(py, metadata, state)?;
        spawn(py, list_future(query))
    }

    /// Kills the sandbox `id`; returns false if it does not exist.
    #[staticmethod]
    fn kill_id(py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        block(py, async move { Sandbox::kill_id(&id).await })
    }

    /// Awaitable flavour of `kill_id`.
    #[staticmethod]
    fn kill_id_async(py: Python<'_>, id: String) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move { Sandbox::kill_id(&id).await })
    }

    /// Describes this sandbox.
    fn get_info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let sandbox = self.sandbox.clone();
        block(py, async move { sandbox.get_info().await.map(Info) })
    }

    /// Awaitable flavour of `get_info`.
    fn get_info_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sandbox = self.sandbox.clone();
        spawn(py, async move { sandbox.get_info().await.map(Info) })
    }

    /// Returns this sandbox's resource use.
    fn metrics(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let sandbox = self.sandbox.clone();
        block(py, async move { sandbox.metrics().await.map(Metrics) })
    }

    /// Awaitable flavour of `metrics`.
    fn metrics_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sandbox = self.sandbox.clone();
        spawn(py, async move { sandbox.metrics().await.map(Metrics) })
    }

    /// Pauses this sandbox; returns false if it was paused already.
    fn pause(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let sandbox = self.sandbox.clone();
        block(py, async move { sandbox.pause().await })
    }

    /// Awaitable flavour of `pause`.
    fn pause_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sandbox = self.sandbox.clone();
        spawn(py, async move { sandbox.pause().await })
    }

    /// Resumes this sandbox; returns false if it was not paused.
    fn resume(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let sandbox = self.sandbox.clone();
        block(py, async move { sandbox.resume().await })
    }

    /// Awaitable flavour of `resume`.
    fn resume_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sandbox = self.sandbox.clone();
        spawn(py, async move { sandbox.resume().await })
    }

    /// Connects to the sandbox `id` without resuming it.
    #[staticmethod]
    fn connect_paused(py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        block(py, async move {
            Sandbox::connect_without_resume(&id)
                .await
                .map(NativeSandbox::new)
        })
    }

    /// Awaitable flavour of `connect_paused`.
    #[staticmethod]
    fn connect_paused_async(py: Python<'_>, id: String) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            Sandbox::connect_without_resume(&id)
                .await
                .map(NativeSandbox::new)
        })
    }
}
