//! Port forwarding: a TCP port of the sandbox, reached through a port on the
//! host's loopback interface, as E2B's `get_host`.
//!
//! The host listens on 127.0.0.1 and, for each connection it accepts,
//! requests from PID 1 a socket connecting to the port on the sandbox's own loopback
//! (see [`Request::OpenTcp`](soulbox_proto::Request::OpenTcp)). PID 1 makes
//! the socket in the sandbox's network namespace and passes it over, so this
//! works rootless as well, where the host may not enter that namespace. The
//! host then copies bytes both ways; the sandbox keeps its loopback-only
//! network.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::error::{Error, Result};
use crate::sandbox::{Inner, Sandbox};
use crate::sys;

/// How long a forwarded connection waits for the sandbox's side to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The forwarded ports of one [`Sandbox`] handle and its clones. Dropping
/// it stops them.
#[derive(Debug, Default)]
pub(crate) struct Ports {
    forwards: Mutex<HashMap<u16, Forward>>,
}

#[derive(Debug)]
struct Forward {
    address: SocketAddr,
    task: AbortHandle,
}

impl Drop for Ports {
    fn drop(&mut self) {
        let forwards = self
            .forwards
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for forward in forwards.values() {
            forward.task.abort();
        }
    }
}

impl Sandbox {
    /// Returns `127.0.0.1:PORT`, an address on the host's loopback interface
    /// whose connections reach `port` on the sandbox's loopback interface,
    /// as E2B's `get_host` names the host of a sandbox's port. The first
    /// call for a port starts listening and later calls return the same
    /// address. A server inside may listen on 127.0.0.1, ::1 or every
    /// address.
    ///
    /// The call must come from within a tokio runtime, on which the
    /// forwarding then runs until the sandbox ends or the last clone of
    /// this handle is dropped. Any
    /// process of the host can connect to the address, as to any port on
    /// the host's loopback interface. A connection that finds nothing
    /// listening in the sandbox is reset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for port 0 or a call outside a tokio
    /// runtime; [`Error::SandboxNotRunning`] once the sandbox has ended;
    /// [`Error::Os`] when the host cannot listen.
    pub fn get_host(&self, port: u16) -> Result<String> {
        if port == 0 {
            return Err(Error::InvalidArgument(
                "port 0 cannot be forwarded; give the port the sandbox's server listens on".into(),
            ));
        }
        if !self.inner.is_running() {
            return Err(self.inner.not_running());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidArgument(
                "get_host was called outside a tokio runtime, which the forwarding runs on; \
                 call it from async code or inside Runtime::enter"
                    .into(),
            )
        })?;

        let ports = &self.owner.ports;
        let mut forwards = ports
            .forwards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(forward) = forwards.get(&port) {
            if !forward.task.is_finished() {
                return Ok(forward.address.to_string());
            }
        }

        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .map_err(Error::os("listen on the host's loopback interface"))?;
        let address = listener
            .local_addr()
            .map_err(Error::os("read the forwarding address"))?;
        let listener =
            TcpListener::from_std(listener).map_err(Error::os("register the forwarding socket"))?;

        let pid1 = self.open_pid1_pidfd()?;
        let task = runtime.spawn(accept_loop(Arc::clone(&self.inner), listener, port, pid1));
        forwards.insert(
            port,
            Forward {
                address,
                task: task.abort_handle(),
            },
        );
        Ok(address.to_string())
    }
}

impl Sandbox {
    /// Opens a pidfd of the sandbox's PID 1, which becomes readable when it
    /// exits, and registers it with the current tokio runtime.
    fn open_pid1_pidfd(&self) -> Result<AsyncFd<OwnedFd>> {
        let pidfd = sys::pidfd_open(self.pid()).map_err(|e| {
            if e.raw_os_error() == Some(libc::ESRCH) {
                self.inner.not_running()
            } else {
                Error::os("open a pidfd of the sandbox's PID 1")(e)
            }
        })?;
        // Until PID 1 has exited its pid cannot name another process, so a
        // sandbox still running now means that the pidfd refers to PID 1.
        if !self.inner.is_running() {
            return Err(self.inner.not_running());
        }
        sys::async_fd(pidfd).map_err(Error::os("register a pidfd of the sandbox's PID 1"))
    }
}

/// Accepts host connections and forwards each to `port` in the sandbox,
/// until the sandbox ends, which closes the listener at once.
async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, port: u16, pid1: AsyncFd<OwnedFd>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = pid1.readable() => return,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close.
                tracing::warn!(sandbox_id = %inner.id, port, error = %e, "accepting a forwarded connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !inner.is_running() {
            return;
        }
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            match connect_inside(&inner, port).await {
                Ok(mut upstream) => {
                    let mut client = client;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => {
                    tracing::debug!(sandbox_id = %inner.id, port, error = %e, "forwarded connection refused");
                    // A reset shows the client that nothing listens, as a
                    // refused connect would.
                    let reset = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    let _ = nix::sys::socket::setsockopt(
                        &client,
                        nix::sys::socket::sockopt::Linger,
                        &reset,
                    );
                }
            }
        });
    }
}

/// Connects to `port` on the sandbox's 127.0.0.1, or on its ::1 when
/// nothing listens on the former.
async fn connect_inside(inner: &Inner, port: u16) -> Result<TcpStream> {
    match connect_family(inner, port, false).await {
        Err(Error::Os { source, .. }) if source.raw_os_error() == Some(libc::ECONNREFUSED) => {
            connect_family(inner, port, true).await
        }
        other => other,
    }
}

async fn connect_family(inner: &Inner, port: u16, ipv6: bool) -> Result<TcpStream> {
    let socket = inner.open_tcp(port, ipv6).await?;
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))
        .map_err(Error::os("register a forwarded socket"))?;
    let connect_failed = |source| Error::Os {
        step: "connect to the sandbox's port",
        source,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, stream.writable()).await {
        Ok(ready) => ready.map_err(connect_failed)?,
        Err(_) => {
            return Err(connect_failed(std::io::Error::from_raw_os_error(
                libc::ETIMEDOUT,
            )))
        }
    }
    if let Some(error) = stream.take_error().map_err(connect_failed)? {
        return Err(connect_failed(error));
    }
    Ok(stream)
}
