//! Running commands: the per-command pump that moves output to every
//! attached handle, the handle callers hold, and the sandbox's command registry.
//!
//! A command's stdout and stderr are pipes (or one PTY). The command has
//! their write ends and this process their read ends, so nothing is copied
//! through the sandbox's PID 1. One tokio task per command, the pump, reads
//! them in chunks of at most [`CHUNK_SIZE`] and sends each chunk to every
//! attached handle over a bounded channel. A slow handle therefore slows the
//! pump, the pump stops reading, the pipe fills and the command blocks in
//! `write`: output is never buffered without bound. With no handle attached
//! (after `disconnect`) the pump reads and discards, so the command never
//! blocks on output nobody wants.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use soulbox_proto::{Request, Signal, StatusRecord, STATUS_RECORD_LEN};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::command::{ExitStatus, Output};
use crate::error::{Error, Result};
use crate::sandbox::{Inner, Sandbox};
use crate::sys;

/// Largest chunk the pump reads and delivers at once, in bytes.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// How long a PTY must stay quiet after its command's exit before the end
/// is delivered, and the longest that wait may last.
// NOTE: a heuristic. With 25 ms, a CI run on the 2-core VM, with a thread
// spinning as tests/process.rs does, lost a line written before the exit
// in 1 of 300 PTY runs; a kernel worker slower than this window still can.
const PTY_QUIET: Duration = Duration::from_millis(50);
const PTY_DRAIN_LIMIT: Duration = Duration::from_millis(250);

/// Chunks queued per attached handle before the pump waits for it. With
/// [`CHUNK_SIZE`] this bounds the queue at 1 MiB per handle.
const QUEUE_CHUNKS: usize = 16;

/// End state of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandExit {
    /// Exit status of the command's first process.
    pub status: ExitStatus,
    /// Whether the command's timeout ended it (its whole tree was killed).
    pub timed_out: bool,
    /// Whether the sandbox's out-of-memory killer ended it: the first
    /// process died of SIGKILL while the sandbox's memory cgroup counted an
    /// out-of-memory kill. Always false without a memory limit.
    pub oom_killed: bool,
}

/// Output or the end of a running command. Chunks of stdout keep their
/// order, and so do chunks of stderr, but the two are separate pipes and
/// their relative order is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    /// Bytes the command wrote to stdout (or to its PTY), as written: a
    /// multibyte character may be split across two chunks.
    Stdout(Vec<u8>),
    /// Bytes the command wrote to stderr.
    Stderr(Vec<u8>),
    /// The command's first process ended. Everything it and its children
    /// wrote before that has been delivered.
    Exit(CommandExit),
}

/// Advice for a caller whose command's supervisor the OOM killer ended.
pub(crate) const OUT_OF_MEMORY: &str = "the sandbox is at its memory limit, \
    which files in /tmp, /dev/shm and the writable layer count towards; \
    remove files with the file API, from outside (a command inside may be \
    killed too), or raise memory_limit";

/// Cause of a command's end, kept in the registry for late handles.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Exited(CommandExit),
    /// The supervisor died without reporting: killed from inside, or by
    /// the OOM killer (`oom`) when the memory limit was full.
    SupervisorLost {
        oom: bool,
    },
    /// The sandbox ended first.
    SandboxEnded,
    /// The task moving the output stopped early (a bug).
    PumpFailed,
}

#[derive(Debug, Clone)]
enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    End(Ending),
}

/// A running command as [`Commands::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The first process's pid inside the sandbox.
    pub pid: u32,
    /// The tag given at start, if any.
    pub tag: Option<String>,
    /// The program.
    pub cmd: String,
    /// Its arguments, without the program.
    pub args: Vec<String>,
    /// Environment variables given for this command (not the defaults or
    /// the sandbox's).
    pub envs: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: String,
}

/// One command in the sandbox's registry.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) info: ProcessInfo,
    command_id: u64,
    subscribers: Mutex<Vec<mpsc::Sender<Event>>>,
    stdin: tokio::sync::Mutex<Option<StdinWriter>>,
    /// Set once the command has ended, for handles that attach late.
    ending: Mutex<Option<Ending>>,
    /// Set when the first process has exited.
    ended: AtomicBool,
    /// Set when the timeout killed the command.
    timed_out: AtomicBool,
    pty: Option<Arc<AsyncFd<OwnedFd>>>,
}

/// Destination of the command's stdin.
#[derive(Debug)]
pub(crate) enum StdinWriter {
    Pipe(pipe::Sender),
    Pty(PtyWriter),
}

/// The sandbox's running commands by pid.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: HashMap<u32, Arc<Entry>>,
}

impl Inner {
    /// Returns whether a running command has `tag`.
    pub(crate) fn commands_tagged(&self, tag: &str) -> bool {
        lock(&self.commands)
            .entries
            .values()
            .any(|e| e.info.tag.as_deref() == Some(tag))
    }
}

/// A readable end of a command's output.
#[derive(Debug)]
pub(crate) enum OutputStream {
    Pipe(pipe::Receiver),
    Pty(PtyReader),
}

impl OutputStream {
    fn raw(&self) -> BorrowedFd<'_> {
        match self {
            Self::Pipe(pipe) => pipe.as_fd(),
            Self::Pty(reader) => reader.fd.get_ref().as_fd(),
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Pipe(pipe) => pipe.read(buf).await,
            Self::Pty(reader) => reader.read(buf).await,
        }
    }
}

/// The readable side of a PTY controller.
#[derive(Debug)]
pub(crate) struct PtyReader {
    fd: Arc<AsyncFd<OwnedFd>>,
}

/// The writable side of a PTY controller.
#[derive(Debug)]
pub(crate) struct PtyWriter {
    fd: Arc<AsyncFd<OwnedFd>>,
}

impl PtyReader {
    /// Returns the shared controller, for resizing.
    pub(crate) fn shared(&self) -> Arc<AsyncFd<OwnedFd>> {
        Arc::clone(&self.fd)
    }
}

/// Registers a PTY controller and splits it into reader and writer.
pub(crate) fn pty_streams(controller: OwnedFd) -> Result<(PtyReader, PtyWriter)> {
    sys::set_nonblocking(controller.as_fd()).map_err(Error::os("make the PTY non-blocking"))?;
    let fd = Arc::new(sys::async_fd(controller).map_err(Error::os("register the PTY"))?);
    Ok((
        PtyReader {
            fd: Arc::clone(&fd),
        },
        PtyWriter { fd },
    ))
}

impl AsyncRead for PtyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| sys::read_nonblocking(fd.get_ref().as_fd(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The controller reads EIO once every subsidiary descriptor
                // is closed: that is the PTY's end of file.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = match self.fd.poll_write_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            match guard.try_io(|fd| sys::write_nonblocking(fd.get_ref().as_fd(), buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reader of the fixed-size records a command's supervisor writes.
#[derive(Debug)]
pub(crate) struct StatusPipe {
    pipe: pipe::Receiver,
}

/// Registers the read end of a pipe the caller has just made with pipe2.
pub(crate) fn pipe_receiver(fd: OwnedFd) -> Result<pipe::Receiver> {
    sys::make_new_pipe_end_nonblocking(fd.as_fd())
        .map_err(Error::os("make a pipe non-blocking"))?;
    pipe::Receiver::from_owned_fd_unchecked(fd)
        .map_err(Error::os("register a pipe with the runtime"))
}

/// Registers the write end of a pipe the caller has just made with pipe2.
pub(crate) fn pipe_sender(fd: OwnedFd) -> Result<pipe::Sender> {
    sys::make_new_pipe_end_nonblocking(fd.as_fd())
        .map_err(Error::os("make a pipe non-blocking"))?;
    pipe::Sender::from_owned_fd_unchecked(fd).map_err(Error::os("register a pipe with the runtime"))
}

impl StatusPipe {
    /// Takes the read end of a pipe made for one command.
    pub(crate) fn new(fd: OwnedFd) -> Result<Self> {
        Ok(Self {
            pipe: pipe_receiver(fd)?,
        })
    }

    /// Reads the next record; `None` when the supervisor is gone.
    pub(crate) async fn next(&mut self) -> Result<Option<StatusRecord>> {
        let mut raw = [0u8; STATUS_RECORD_LEN];
        match self.pipe.read_exact(&mut raw).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::os("read a command's status")(e)),
        }
        StatusRecord::decode(&raw)
            .map(Some)
            .map_err(|e| Error::Protocol(e.to_string()))
    }
}

/// Everything the pump needs for one started command.
pub(crate) struct Started {
    pub(crate) info: ProcessInfo,
    pub(crate) command_id: u64,
    pub(crate) stdout: OutputStream,
    pub(crate) stderr: Option<OutputStream>,
    pub(crate) stdin: Option<StdinWriter>,
    pub(crate) status: StatusPipe,
    pub(crate) timeout: Option<Duration>,
    /// Whether the timeout passed before the start was reported, and the
    /// command's tree was killed for it.
    pub(crate) start_timed_out: bool,
    pub(crate) pty: Option<Arc<AsyncFd<OwnedFd>>>,
    /// The sandbox's out-of-memory kill count when the command started.
    pub(crate) oom_kills_before: Option<u64>,
}

/// Registers a started command, starts its pump and returns the first
/// handle, attached before any output can arrive.
pub(crate) fn register(sandbox: &Arc<Inner>, started: Started) -> CommandHandle {
    let (sender, receiver) = mpsc::channel(QUEUE_CHUNKS);
    let pty = started.pty.clone();
    let entry = Arc::new(Entry {
        info: started.info.clone(),
        command_id: started.command_id,
        subscribers: Mutex::new(vec![sender]),
        stdin: tokio::sync::Mutex::new(started.stdin),
        ending: Mutex::new(None),
        ended: AtomicBool::new(false),
        timed_out: AtomicBool::new(started.start_timed_out),
        pty,
    });
    lock(&sandbox.commands)
        .entries
        .insert(entry.info.pid, Arc::clone(&entry));
    let pump = Pump {
        sandbox: Arc::downgrade(sandbox),
        entry: Arc::clone(&entry),
        // A timeout that passed before the start has killed the tree already.
        timeout: started.timeout.filter(|_| !started.start_timed_out),
        oom_kills_before: started.oom_kills_before,
    };
    tokio::spawn(pump.run(started.stdout, started.stderr, started.status));
    CommandHandle {
        sandbox: Arc::clone(sandbox),
        entry,
        events: receiver,
        ended: None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Pump {
    /// Weak, so a running command does not keep a dropped sandbox alive.
    sandbox: Weak<Inner>,
    entry: Arc<Entry>,
    timeout: Option<Duration>,
    oom_kills_before: Option<u64>,
}

impl Pump {
    /// Returns whether the out-of-memory killer has struck in the sandbox
    /// since the command started. A SIGKILLed command is reported as out of
    /// memory when it has.
    fn oom_since_start(&self) -> bool {
        let now = self.sandbox.upgrade().and_then(|s| s.oom_kills());
        matches!((self.oom_kills_before, now), (Some(before), Some(now)) if now > before)
    }

    async fn run(
        self,
        mut stdout: OutputStream,
        mut stderr: Option<OutputStream>,
        mut status: StatusPipe,
    ) {
        let mut guard = EndGuard {
            pump: &self,
            finished: false,
        };
        let mut out_buf = vec![0u8; CHUNK_SIZE];
        let mut err_buf = vec![0u8; CHUNK_SIZE];
        let mut out_open = true;
        let mut err_open = stderr.is_some();
        // The timeout runs in its own task: the pump may wait a long time
        // for a slow handle to take a chunk, and the kill must not wait.
        if let Some(timeout) = self.timeout {
            tokio::spawn(enforce_timeout(
                self.sandbox.clone(),
                Arc::clone(&self.entry),
                timeout,
            ));
        }
        let record = loop {
            tokio::select! {
                read = stdout.read(&mut out_buf), if out_open => match read {
                    Ok(n) if n > 0 => self.publish(Event::Stdout(out_buf[..n].to_vec())).await,
                    _ => out_open = false,
                },
                read = read_optional(&mut stderr, &mut err_buf), if err_open => match read {
                    Ok(n) if n > 0 => self.publish(Event::Stderr(err_buf[..n].to_vec())).await,
                    _ => err_open = false,
                },
                record = status.next() => break record,
            }
        };
        self.entry.ended.store(true, Ordering::Release);
        let timed_out = self.entry.timed_out.load(Ordering::Acquire);
        // The first process has exited, so everything written before its
        // exit is already in the pipes; deliver exactly that much.
        if out_open {
            self.drain(&mut stdout, &mut out_buf, Event::Stdout).await;
        }
        if let (true, Some(stream)) = (err_open, stderr.as_mut()) {
            self.drain(stream, &mut err_buf, Event::Stderr).await;
        }
        let ending = match record {
            Ok(Some(StatusRecord::Exited { code })) => Ending::Exited(CommandExit {
                status: ExitStatus::Code(code),
                timed_out,
                oom_killed: false,
            }),
            Ok(Some(StatusRecord::Signaled { signal })) => Ending::Exited(CommandExit {
                status: ExitStatus::Signal(signal),
                timed_out,
                oom_killed: signal == libc::SIGKILL && !timed_out && self.oom_since_start(),
            }),
            _ => self.ending_without_report().await,
        };
        *lock(&self.entry.ending) = Some(ending);
        if let Some(sandbox) = self.sandbox.upgrade() {
            lock(&sandbox.commands).entries.remove(&self.entry.info.pid);
        }
        self.publish(Event::End(ending)).await;
        lock(&self.entry.subscribers).clear();
        guard.finished = true;
        // Processes the command left running may still write; keep reading
        // so they never block or die of SIGPIPE, until they close the pipes.
        while out_open || err_open {
            tokio::select! {
                read = stdout.read(&mut out_buf), if out_open => {
                    if !matches!(read, Ok(n) if n > 0) { out_open = false; }
                }
                read = read_optional(&mut stderr, &mut err_buf), if err_open => {
                    if !matches!(read, Ok(n) if n > 0) { err_open = false; }
                }
            }
        }
    }

    /// Determines why the supervisor closed its status pipe without an exit
    /// report: the sandbox ended, or something inside killed the supervisor.
    async fn ending_without_report(&self) -> Ending {
        match self.sandbox.upgrade() {
            Some(sandbox) if !sandbox.has_ended().await => Ending::SupervisorLost {
                oom: self.oom_since_start(),
            },
            _ => Ending::SandboxEnded,
        }
    }

    /// Delivers the bytes waiting in `stream` now, and no more.
    async fn drain(&self, stream: &mut OutputStream, buf: &mut [u8], wrap: fn(Vec<u8>) -> Event) {
        if matches!(stream, OutputStream::Pty(_)) {
            // Bytes written to a PTY just before the exit can still sit in
            // the tty layer's flip buffer, which a kernel worker moves to
            // the controller side shortly after; FIONREAD does not count
            // them, and no call flushes them. So read until the PTY has
            // been quiet for PTY_QUIET, within PTY_DRAIN_LIMIT, which also
            // keeps a process that writes without pause from holding the
            // end back.
            let limit = tokio::time::Instant::now() + PTY_DRAIN_LIMIT;
            while tokio::time::Instant::now() < limit {
                match tokio::time::timeout(PTY_QUIET, stream.read(buf)).await {
                    Ok(Ok(n)) if n > 0 => self.publish(wrap(buf[..n].to_vec())).await,
                    _ => return,
                }
            }
            return;
        }
        let mut waiting = sys::bytes_readable(stream.raw()).unwrap_or(0);
        while waiting > 0 {
            let want = waiting.min(buf.len());
            match stream.read(&mut buf[..want]).await {
                Ok(n) if n > 0 => {
                    waiting -= n;
                    self.publish(wrap(buf[..n].to_vec())).await;
                }
                _ => return,
            }
        }
    }

    /// Sends an event to every attached handle, waiting for room in each
    /// queue; a handle that went away is dropped from the list.
    async fn publish(&self, event: Event) {
        let subscribers: Vec<mpsc::Sender<Event>> = lock(&self.entry.subscribers).clone();
        for subscriber in subscribers {
            if subscriber.send(event.clone()).await.is_err() {
                lock(&self.entry.subscribers).retain(|s| !s.same_channel(&subscriber));
            }
        }
    }
}

/// Ends a pump that stopped early (a panic unwinding through it): the
/// command leaves the registry and every handle receives its end instead
/// of waiting forever.
struct EndGuard<'a> {
    pump: &'a Pump,
    finished: bool,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let entry = &self.pump.entry;
        lock(&entry.ending).get_or_insert(Ending::PumpFailed);
        if let Some(sandbox) = self.pump.sandbox.upgrade() {
            lock(&sandbox.commands).entries.remove(&entry.info.pid);
        }
        lock(&entry.subscribers).clear();
    }
}

async fn read_optional(
    stream: &mut Option<OutputStream>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match stream {
        Some(stream) => stream.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Kills the command's tree once `timeout` has passed, unless it ended.
async fn enforce_timeout(sandbox: Weak<Inner>, entry: Arc<Entry>, timeout: Duration) {
    // A timeout too large to represent is no timeout.
    let Some(deadline) = tokio::time::Instant::now().checked_add(timeout) else {
        return;
    };
    tokio::time::sleep_until(deadline).await;
    if entry.ended.load(Ordering::Acquire) {
        return;
    }
    entry.timed_out.store(true, Ordering::Release);
    if let Some(sandbox) = sandbox.upgrade() {
        let _ = send_kill_tree(&sandbox, &entry).await;
    }
}

async fn send_kill_tree(sandbox: &Inner, entry: &Entry) -> Result<()> {
    let request = Signal {
        command_id: entry.command_id,
        pid: entry.info.pid,
        signal: libc::SIGKILL,
        kill_tree: true,
    };
    sandbox.request(&Request::Signal(request), &[]).await
}

/// A running command. Dropping it, like [`CommandHandle::disconnect`], stops
/// the output for this handle but leaves the command running.
#[derive(Debug)]
pub struct CommandHandle {
    sandbox: Arc<Inner>,
    entry: Arc<Entry>,
    events: mpsc::Receiver<Event>,
    ended: Option<Ending>,
}

impl CommandHandle {
    /// Returns the pid of the command's first process inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.entry.info.pid
    }

    /// Returns the command as [`Commands::list`] shows it.
    pub fn info(&self) -> &ProcessInfo {
        &self.entry.info
    }

    /// Waits for the next chunk of output or the command's end; `None`
    /// after the end was returned.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox ended first;
    /// [`Error::Protocol`] if the command's supervisor was killed from
    /// inside the sandbox, so its exit is unknown.
    pub async fn next_event(&mut self) -> Result<Option<CommandEvent>> {
        if self.ended.is_some() {
            return Ok(None);
        }
        let event = match self.events.recv().await {
            Some(event) => event,
            // The pump finished before this handle attached, or dropped it.
            None => Event::End(lock(&self.entry.ending).unwrap_or(Ending::SandboxEnded)),
        };
        match event {
            Event::Stdout(bytes) => Ok(Some(CommandEvent::Stdout(bytes))),
            Event::Stderr(bytes) => Ok(Some(CommandEvent::Stderr(bytes))),
            Event::End(ending) => {
                self.ended = Some(ending);
                self.ending_result()
                    .map(|exit| Some(CommandEvent::Exit(exit)))
            }
        }
    }

    fn ending_result(&self) -> Result<CommandExit> {
        match self.ended {
            Some(Ending::Exited(exit)) => Ok(exit),
            Some(Ending::SupervisorLost { oom: false }) => Err(Error::Protocol(format!(
                "the supervisor of command {} ended without reporting its exit; a process \
                 in the sandbox running as root may have killed it",
                self.pid()
            ))),
            Some(Ending::SupervisorLost { oom: true }) => Err(Error::Protocol(format!(
                "the out-of-memory killer ended the supervisor of command {}, so its exit \
                 is unknown: {OUT_OF_MEMORY}",
                self.pid()
            ))),
            Some(Ending::PumpFailed) => Err(Error::Protocol(format!(
                "the output of command {} stopped early; this is a SoulBox bug",
                self.pid()
            ))),
            Some(Ending::SandboxEnded) | None => Err(self.sandbox.not_running()),
        }
    }

    /// Waits for the command to end and returns the output it wrote from
    /// the moment this handle attached.
    ///
    /// # Errors
    ///
    /// As [`CommandHandle::next_event`]. A non-zero exit is not an error
    /// here; see [`Output::check`].
    pub async fn wait(&mut self) -> Result<Output> {
        self.wait_keeping_last(usize::MAX).await
    }

    /// Waits as [`CommandHandle::wait`] does, but keeps only the last
    /// `kept` bytes of stdout and of stderr, so that a command that writes
    /// without end costs this process no more memory than that.
    pub(crate) async fn wait_keeping_last(&mut self, kept: usize) -> Result<Output> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        loop {
            match self.next_event().await? {
                Some(CommandEvent::Stdout(bytes)) => append_keeping_last(&mut stdout, &bytes, kept),
                Some(CommandEvent::Stderr(bytes)) => append_keeping_last(&mut stderr, &bytes, kept),
                Some(CommandEvent::Exit(exit)) => return Ok(Output::new(exit, stdout, stderr)),
                None => return self.ending_result().map(|e| Output::new(e, stdout, stderr)),
            }
        }
    }

    /// Sends `signal` to the command's first process.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a number outside 1..=64;
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        signal_entry(&self.sandbox, &self.entry, signal).await
    }

    /// Kills the command's first process and every process it started,
    /// however they detached (new sessions, double forks).
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn kill(&self) -> Result<()> {
        send_kill_tree(&self.sandbox, &self.entry).await
    }

    /// Writes `data` to the command's stdin, waiting while its pipe is full.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the command was started without stdin,
    /// its stdin was closed, or no process reads the pipe any more (on a
    /// PTY: once the command's first process has exited).
    /// [`Error::SandboxNotRunning`] once the sandbox has ended.
    pub async fn send_stdin(&self, data: &[u8]) -> Result<()> {
        send_stdin_entry(&self.sandbox, &self.entry, data).await
    }

    /// Closes the command's stdin, so it reads end of file.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the command was started without stdin.
    pub async fn close_stdin(&self) -> Result<()> {
        close_stdin_entry(&self.entry).await
    }

    /// Resizes the command's PTY; the kernel sends it SIGWINCH.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the command has no PTY, a size is 0,
    /// or the command's first process has exited;
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        resize_entry(&self.sandbox, &self.entry, rows, cols)
    }

    /// Returns a controller of this command. It signals, kills and writes
    /// to the command from another task or thread while this handle waits
    /// for events, which takes `&mut self`.
    pub fn controller(&self) -> CommandController {
        CommandController {
            sandbox: Arc::clone(&self.sandbox),
            entry: Arc::clone(&self.entry),
        }
    }

    /// Stops receiving output; the command keeps running and can be
    /// attached again with [`Commands::connect`].
    pub fn disconnect(self) {}
}

/// Signals, kills and writes to one command without receiving its output;
/// see [`CommandHandle::controller`]. Clones control the same command.
/// Unlike [`Commands`], it reaches the command after its first process has
/// exited too, so [`CommandController::kill`] still ends what it left
/// running.
#[derive(Debug, Clone)]
pub struct CommandController {
    sandbox: Arc<Inner>,
    entry: Arc<Entry>,
}

impl CommandController {
    /// Returns the pid of the command's first process inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.entry.info.pid
    }

    /// Returns whether the command's first process has exited.
    pub fn has_exited(&self) -> bool {
        self.entry.ended.load(Ordering::Acquire)
    }

    /// As [`CommandHandle::signal`].
    ///
    /// # Errors
    ///
    /// As [`CommandHandle::signal`].
    pub async fn signal(&self, signal: i32) -> Result<()> {
        signal_entry(&self.sandbox, &self.entry, signal).await
    }

    /// As [`CommandHandle::kill`].
    ///
    /// # Errors
    ///
    /// As [`CommandHandle::kill`].
    pub async fn kill(&self) -> Result<()> {
        send_kill_tree(&self.sandbox, &self.entry).await
    }

    /// As [`CommandHandle::send_stdin`].
    ///
    /// # Errors
    ///
    /// As [`CommandHandle::send_stdin`].
    pub async fn send_stdin(&self, data: &[u8]) -> Result<()> {
        send_stdin_entry(&self.sandbox, &self.entry, data).await
    }

    /// As [`CommandHandle::close_stdin`].
    ///
    /// # Errors
    ///
    /// As [`CommandHandle::close_stdin`].
    pub async fn close_stdin(&self) -> Result<()> {
        close_stdin_entry(&self.entry).await
    }

    /// As [`CommandHandle::resize`].
    ///
    /// # Errors
    ///
    /// As [`CommandHandle::resize`].
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        resize_entry(&self.sandbox, &self.entry, rows, cols)
    }
}

async fn close_stdin_entry(entry: &Entry) -> Result<()> {
    let mut stdin = entry.stdin.lock().await;
    match stdin.take() {
        Some(_) => Ok(()),
        None => Err(no_stdin(entry.info.pid)),
    }
}

fn resize_entry(sandbox: &Inner, entry: &Entry, rows: u16, cols: u16) -> Result<()> {
    let Some(pty) = &entry.pty else {
        return Err(Error::InvalidArgument(format!(
            "command {} has no PTY to resize; start it with a PTY",
            entry.info.pid
        )));
    };
    check_size(rows, cols)?;
    ensure_pty_open(sandbox, entry, "cannot be resized")?;
    sys::set_window_size(pty.get_ref().as_fd(), rows, cols).map_err(Error::os("resize the PTY"))
}

/// Fails once a PTY command's first process has exited or its sandbox has
/// ended. This process keeps the PTY's controller open until the command
/// is dropped, so writes and resizes would otherwise succeed and reach no
/// one. `consequence` ends the message, such as "cannot be resized".
fn ensure_pty_open(sandbox: &Inner, entry: &Entry, consequence: &str) -> Result<()> {
    if !sandbox.is_running() {
        return Err(sandbox.not_running());
    }
    if entry.ended.load(Ordering::Acquire) {
        return Err(Error::InvalidArgument(format!(
            "command {} has exited, so its PTY {consequence}",
            entry.info.pid
        )));
    }
    Ok(())
}

pub(crate) fn check_size(rows: u16, cols: u16) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::InvalidArgument(format!(
            "terminal size {rows}x{cols} is invalid; rows and columns must be at least 1"
        )));
    }
    Ok(())
}

fn no_stdin(pid: u32) -> Error {
    Error::InvalidArgument(format!(
        "command {pid} has no open stdin; start it with stdin enabled and do not close it first"
    ))
}

async fn send_stdin_entry(sandbox: &Inner, entry: &Entry, data: &[u8]) -> Result<()> {
    let mut stdin = entry.stdin.lock().await;
    let result = match stdin.as_mut() {
        Some(StdinWriter::Pipe(pipe)) => pipe.write_all(data).await,
        Some(StdinWriter::Pty(pty)) => {
            ensure_pty_open(sandbox, entry, "takes no more input")?;
            pty.write_all(data).await
        }
        None => return Err(no_stdin(entry.info.pid)),
    };
    result.map_err(|e| match e.raw_os_error() {
        Some(libc::EPIPE) if !sandbox.is_running() => sandbox.not_running(),
        Some(libc::EPIPE) => Error::InvalidArgument(format!(
            "command {} closed its stdin or exited",
            entry.info.pid
        )),
        _ => Error::os("write to a command's stdin")(e),
    })
}

async fn signal_entry(sandbox: &Inner, entry: &Entry, signal: i32) -> Result<()> {
    if !(1..=64).contains(&signal) {
        return Err(Error::InvalidArgument(format!(
            "signal {signal} is not a signal number (1 to 64)"
        )));
    }
    let request = Signal {
        command_id: entry.command_id,
        pid: entry.info.pid,
        signal,
        kill_tree: false,
    };
    sandbox.request(&Request::Signal(request), &[]).await
}

/// Selector of a running command: its pid or the tag given at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The first process's pid inside the sandbox.
    Pid(u32),
    /// The tag given with [`crate::Command::tag`].
    Tag(String),
}

impl From<u32> for Selector {
    fn from(pid: u32) -> Self {
        Self::Pid(pid)
    }
}

impl From<&str> for Selector {
    fn from(tag: &str) -> Self {
        Self::Tag(tag.to_string())
    }
}

/// The running commands of one sandbox; see [`Sandbox::commands`].
#[derive(Debug, Clone)]
pub struct Commands {
    sandbox: Arc<Inner>,
}

impl Sandbox {
    /// Lists, reaches and controls the sandbox's running commands.
    pub fn commands(&self) -> Commands {
        Commands {
            sandbox: Arc::clone(&self.inner),
        }
    }
}

impl Commands {
    /// Lists the commands still running, ordered by pid.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut list: Vec<ProcessInfo> = lock(&self.sandbox.commands)
            .entries
            .values()
            .map(|e| e.info.clone())
            .collect();
        list.sort_by_key(|info| info.pid);
        list
    }

    fn find(&self, selector: &Selector) -> Option<Arc<Entry>> {
        let registry = lock(&self.sandbox.commands);
        match selector {
            Selector::Pid(pid) => registry.entries.get(pid).cloned(),
            Selector::Tag(tag) => registry
                .entries
                .values()
                .find(|e| e.info.tag.as_deref() == Some(tag.as_str()))
                .cloned(),
        }
    }

    fn not_found(selector: &Selector) -> Error {
        let what = match selector {
            Selector::Pid(pid) => format!("pid {pid}"),
            Selector::Tag(tag) => format!("tag {tag:?}"),
        };
        Error::NotFound(format!(
            "no running command with {what}; list() shows the running ones"
        ))
    }

    /// Attaches a new handle to a running command. It receives the output
    /// written from now on, and the command's end.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no running command matches.
    pub fn connect(&self, selector: impl Into<Selector>) -> Result<CommandHandle> {
        let selector = selector.into();
        let entry = self
            .find(&selector)
            .ok_or_else(|| Self::not_found(&selector))?;
        let (sender, receiver) = mpsc::channel(QUEUE_CHUNKS);
        lock(&entry.subscribers).push(sender);
        Ok(CommandHandle {
            sandbox: Arc::clone(&self.sandbox),
            entry,
            events: receiver,
            ended: None,
        })
    }

    /// Kills a running command's whole process tree. Returns false if no
    /// running command matches.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn kill(&self, selector: impl Into<Selector>) -> Result<bool> {
        match self.find(&selector.into()) {
            Some(entry) => send_kill_tree(&self.sandbox, &entry).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Sends `signal` to a running command's first process.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no running command matches.
    pub async fn signal(&self, selector: impl Into<Selector>, signal: i32) -> Result<()> {
        let selector = selector.into();
        let entry = self
            .find(&selector)
            .ok_or_else(|| Self::not_found(&selector))?;
        signal_entry(&self.sandbox, &entry, signal).await
    }

    /// Writes to a running command's stdin.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no running command matches; as
    /// [`CommandHandle::send_stdin`] otherwise.
    pub async fn send_stdin(&self, selector: impl Into<Selector>, data: &[u8]) -> Result<()> {
        let selector = selector.into();
        let entry = self
            .find(&selector)
            .ok_or_else(|| Self::not_found(&selector))?;
        send_stdin_entry(&self.sandbox, &entry, data).await
    }
}

/// Appends `bytes` to `buffer` and drops its oldest bytes beyond `kept`.
fn append_keeping_last(buffer: &mut Vec<u8>, bytes: &[u8], kept: usize) {
    buffer.extend_from_slice(bytes);
    if buffer.len() > kept {
        buffer.drain(..buffer.len() - kept);
    }
}
