//! The code interpreter: `soulbox_run_code` and
//! `soulbox_run_code_language`, which return the execution as JSON.

use std::time::Duration;

use serde_json::{json, Value};
use soulbox_core::{Execution, DEFAULT_CODE_TIMEOUT};

use crate::error::Result;
use crate::output::BytesBlock;
use crate::runtime;
use crate::sandbox::Sandbox;

/// Runs `code` in the sandbox handle's default context of `language`
/// (Python for `None`) for at most `timeout_ms` milliseconds, or
/// [`DEFAULT_CODE_TIMEOUT`] for 0, and returns the execution as a JSON
/// object.
pub fn run(
    sandbox: &Sandbox,
    code: &str,
    language: Option<&str>,
    timeout_ms: u64,
) -> Result<Box<BytesBlock>> {
    let timeout = match timeout_ms {
        0 => DEFAULT_CODE_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    let mut run = sandbox.inner.run_code(code).timeout(Some(timeout));
    if let Some(language) = language {
        run = run.language(language);
    }
    let execution = runtime::block_on(std::future::IntoFuture::into_future(run))??;
    Ok(BytesBlock::new(
        execution_json(&execution).to_string().into_bytes(),
    ))
}

/// Describes `execution` with the field names of E2B's Python `Execution`.
/// serde_json escapes control characters, so the text has no NUL byte.
fn execution_json(execution: &Execution) -> Value {
    let results: Vec<Value> = execution
        .results
        .iter()
        .map(|result| {
            json!({
                "formats": result.formats,
                "is_main_result": result.is_main_result,
            })
        })
        .collect();
    let error = execution.error.as_ref().map(|error| {
        json!({
            "name": error.name,
            "value": error.value,
            "traceback": error.traceback,
        })
    });
    json!({
        "results": results,
        "logs": {
            "stdout": execution.logs.stdout,
            "stderr": execution.logs.stderr,
        },
        "error": error,
        "execution_count": execution.execution_count,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use soulbox_core::{ExecutionError, ExecutionResult, Logs};

    use super::*;

    #[test]
    fn execution_json_has_every_field() {
        let execution = Execution {
            results: vec![ExecutionResult {
                formats: BTreeMap::from([("text".to_string(), "42".to_string())]),
                is_main_result: true,
            }],
            logs: Logs {
                stdout: vec!["a\0b\n".into()],
                stderr: Vec::new(),
            },
            error: Some(ExecutionError {
                name: "ValueError".into(),
                value: "bad".into(),
                traceback: "Traceback".into(),
            }),
            execution_count: Some(3),
        };
        let text = execution_json(&execution).to_string();
        assert_eq!(
            text,
            r#"{"error":{"name":"ValueError","traceback":"Traceback","value":"bad"},"execution_count":3,"logs":{"stderr":[],"stdout":["a\u0000b\n"]},"results":[{"formats":{"text":"42"},"is_main_result":true}]}"#
        );
    }

    #[test]
    fn missing_error_and_count_are_null() {
        let text = execution_json(&Execution::default()).to_string();
        assert_eq!(
            text,
            r#"{"error":null,"execution_count":null,"logs":{"stderr":[],"stdout":[]},"results":[]}"#
        );
    }
}
