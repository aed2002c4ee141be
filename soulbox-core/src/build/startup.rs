//! The start and ready commands of a built template, run after each create.

use std::time::Duration;

use super::Startup;
use crate::error::{Error, Result};
use crate::sandbox::{KillUnlessReturned, Sandbox};

/// Pause between two runs of a ready command that did not exit 0.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Bytes of a ready command's stdout, and of its stderr, kept for the
/// error message; the rest is read and dropped as it arrives.
const READY_OUTPUT_KEPT: usize = 4096;

/// Longest single run of a ready command; a run that takes longer counts as
/// not ready and is run again while time is left.
const READY_RUN_TIMEOUT: Duration = Duration::from_secs(10);

impl Sandbox {
    /// Starts the template's `start` command in the background and waits
    /// until its `ready` command exits 0. Kills the sandbox when either
    /// fails or the call is dropped while it waits, so that a failed
    /// create leaves nothing.
    pub(crate) async fn start_template_service(&self, startup: &Startup) -> Result<()> {
        let unreturned = KillUnlessReturned(Some(&self.inner));
        self.start_and_wait_ready(startup).await?;
        unreturned.defuse();
        Ok(())
    }

    async fn start_and_wait_ready(&self, startup: &Startup) -> Result<()> {
        if let Some(start) = &startup.start {
            // The read ends of a command's pipes live in this process, so a
            // service that wrote to them after it exits, such as after
            // `soulbox create`, would die of SIGPIPE. Its output goes to
            // /dev/null instead.
            let mut command = self.shell(format!("exec >/dev/null 2>&1\n{start}"));
            command.timeout(None).tag("template-start");
            command.start().await?.disconnect();
        }
        let Some(ready) = &startup.ready else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + startup.ready_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut command = self.shell(ready);
            command.timeout(Some(
                left.clamp(Duration::from_millis(1), READY_RUN_TIMEOUT),
            ));
            let output = command
                .start()
                .await?
                .wait_keeping_last(READY_OUTPUT_KEPT)
                .await?;
            if output.status.success() {
                return Ok(());
            }
            if tokio::time::Instant::now() + READY_POLL_INTERVAL >= deadline {
                let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stdout));
                return Err(Error::NotReady {
                    command: ready.clone(),
                    timeout_ms: startup.ready_timeout.as_millis() as u64,
                    output: format!("{}, {:?}", output.status, last_chars(text.trim(), 500)),
                });
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }
}

/// Returns the last `count` characters of `text`.
fn last_chars(text: &str, count: usize) -> &str {
    let skip = text.chars().count().saturating_sub(count);
    match text.char_indices().nth(skip) {
        Some((start, _)) => &text[start..],
        None => text,
    }
}
