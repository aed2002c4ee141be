//! Internet access for a sandbox through slirp4netns, a user-mode network
//! stack: it gives the sandbox's network namespace a tap device and relays
//! its traffic through ordinary sockets of the host, so SoulBox changes no
//! firewall rule, route or sysctl of the host, as root and rootless alike.
//!
//! slirp4netns ends when a pipe closes whose only write end PID 1 holds, so
//! it ends with the sandbox however the sandbox ends. It runs as an orphan
//! that the host's init reaps, never as a child of the creating process.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;
use soulbox_proto::Ipv4Cidr;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::sys;

/// The network a sandbox gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Network {
    /// Loopback only: nothing inside reaches or is reached from outside,
    /// except through [`crate::Sandbox::get_host`]. The default.
    #[default]
    None,
    /// Loopback and a tap device `eth0` (10.0.2.100/24, default route via
    /// 10.0.2.2) whose traffic slirp4netns relays to wherever the host can
    /// connect, except the host's own loopback. DNS goes to 10.0.2.3,
    /// which forwards to the host's resolvers.
    Internet,
}

impl Network {
    /// Returns the lowercase name that `str::parse` takes: `none` or
    /// `internet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Internet => "internet",
        }
    }
}

impl std::str::FromStr for Network {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "none" => Ok(Self::None),
            "internet" => Ok(Self::Internet),
            other => Err(Error::InvalidArgument(format!(
                "network {other:?} is unknown; use `none` or `internet`"
            ))),
        }
    }
}

/// The CIDR block of every IPv4 address, as E2B's SDKs name it. `deny_out`
/// with it and `allow_out` with some networks lets a sandbox reach only
/// those networks.
pub const ALL_TRAFFIC: &str = "0.0.0.0/0";

/// Maximum number of `allow_out` and `deny_out` entries of a sandbox,
/// together. Each becomes a policy routing rule, which the kernel walks
/// through in order on every route lookup of the sandbox.
pub const MAX_EGRESS_ENTRIES: usize = 256;

/// The gateway of a sandbox with internet access, slirp4netns's own
/// address, which relays nothing because slirp4netns runs with
/// `--disable-host-loopback`.
const GATEWAY: Ipv4Cidr = Ipv4Cidr {
    address: [10, 0, 2, 2],
    prefix_len: 32,
};

/// The address of the DNS forwarder inside a sandbox with internet access.
/// Egress rules treat it like any other address, so `deny_out`
/// [`ALL_TRAFFIC`] stops name resolution unless `allow_out` contains it.
pub const DNS_SERVER: &str = "10.0.2.3";

/// Checks the `allow_out` and `deny_out` entries of a sandbox with
/// `network`, and returns them as networks, each list without repeats.
/// With any `deny_out` entry, the allowed networks start with the gateway:
/// slirp4netns adds the default route via 10.0.2.2 while PID 1 installs
/// the rules, and the kernel rejects that route with EACCES when a rule
/// prohibits the gateway itself.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an entry that is not an IPv4 address or
/// CIDR block (a domain name, an IPv6 network, a bad prefix length or host
/// bits set), and the message names it. Also for more than
/// [`MAX_EGRESS_ENTRIES`] entries together, and for any entry without
/// [`Network::Internet`].
pub(crate) fn egress_networks(
    network: Network,
    allow_out: &[String],
    deny_out: &[String],
) -> Result<(Vec<Ipv4Cidr>, Vec<Ipv4Cidr>)> {
    if allow_out.is_empty() && deny_out.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let count = allow_out.len() + deny_out.len();
    if count > MAX_EGRESS_ENTRIES {
        return Err(Error::InvalidArgument(format!(
            "allow_out and deny_out have {count} entries together; at most \
             {MAX_EGRESS_ENTRIES} are allowed, so merge neighboring networks into wider \
             CIDR blocks"
        )));
    }
    let parse = |list: &str, entries: &[String]| -> Result<Vec<Ipv4Cidr>> {
        let mut networks: Vec<Ipv4Cidr> = Vec::with_capacity(entries.len());
        for entry in entries {
            let network = parse_cidr(list, entry)?;
            if !networks.contains(&network) {
                networks.push(network);
            }
        }
        Ok(networks)
    };
    let mut networks = (parse("allow_out", allow_out)?, parse("deny_out", deny_out)?);
    if !networks.1.is_empty() && !networks.0.contains(&GATEWAY) {
        networks.0.insert(0, GATEWAY);
    }
    if network != Network::Internet {
        return Err(Error::InvalidArgument(
            "allow_out and deny_out restrict internet access, but the sandbox's network is \
             none; set the network to internet to use them"
                .to_string(),
        ));
    }
    Ok(networks)
}

/// Parses an `allow_out` or `deny_out` entry (named by `list`): an IPv4
/// address, taken as a /32, or an IPv4 CIDR block in its canonical form.
fn parse_cidr(list: &str, entry: &str) -> Result<Ipv4Cidr> {
    let invalid =
        |problem: String| Error::InvalidArgument(format!("{list} entry {entry:?} {problem}"));
    if entry.contains(':') {
        return Err(invalid(
            "is an IPv6 address or network; sandboxes have no IPv6, so only IPv4 addresses \
             and CIDR blocks are accepted"
                .to_string(),
        ));
    }
    let (address_text, prefix_text) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let Ok(address) = address_text.parse::<std::net::Ipv4Addr>() else {
        let looks_like_name = prefix_text.is_none()
            && entry.chars().any(|c| c.is_ascii_alphabetic())
            && entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*'));
        return Err(invalid(if looks_like_name {
            "is a domain name; SoulBox filters egress by IPv4 address only, not by name, so \
             give the addresses the name resolves to as IPv4 addresses or CIDR blocks"
                .to_string()
        } else {
            "is not an IPv4 address or CIDR block, such as 192.0.2.1 or 192.0.2.0/24".to_string()
        }));
    };
    let prefix_len = match prefix_text {
        None => 32,
        Some(text) => match text.parse::<u8>() {
            Ok(len)
                if len <= 32
                    && !text.starts_with('+')
                    && (text == "0" || !text.starts_with('0')) =>
            {
                len
            }
            _ => {
                return Err(invalid(format!(
                    "has an invalid prefix length {text:?}; use a number from 0 to 32"
                )))
            }
        },
    };
    let bits = u32::from(address);
    let host_mask = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
    if bits & host_mask != 0 {
        let host_bits = std::net::Ipv4Addr::from(bits & host_mask);
        let network = std::net::Ipv4Addr::from(bits & !host_mask);
        return Err(invalid(format!(
            "has host bits set ({host_bits} lies beyond the /{prefix_len} prefix); use \
             {network}/{prefix_len}"
        )));
    }
    Ok(Ipv4Cidr {
        address: address.octets(),
        prefix_len,
    })
}

/// Environment variable that names the slirp4netns program to run, as a
/// path or a name looked up on `PATH`. Tests point it at a wrapper that
/// starts slirp4netns in a network namespace of their own.
pub const SLIRP4NETNS_ENV: &str = "SOULBOX_SLIRP4NETNS";

const PROGRAM: &str = "slirp4netns";

/// Name of the tap device inside the sandbox.
const DEVICE: &str = "eth0";

/// The tap device's MTU: the largest slirp4netns takes below 65521, as
/// Podman uses, which moves bulk data in far fewer packets than 1500.
const MTU: u32 = 65520;

/// /etc/resolv.conf of a sandbox with internet access: the DNS forwarder
/// that slirp4netns serves at the third address of its 10.0.2.0/24 network.
pub(crate) const RESOLV_CONF: &[u8] =
    b"# Generated by SoulBox: slirp4netns forwards DNS queries to the host's resolvers.\n\
      nameserver 10.0.2.3\n";

/// How long slirp4netns may take to bring the tap device up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of slirp4netns's error output quoted in an error.
const MAX_QUOTED_OUTPUT: u64 = 2048;

/// The part of an internet sandbox's network made before PID 1 starts: the
/// program to run and the exit pipe, whose write end goes to PID 1 with its
/// configuration.
#[derive(Debug)]
pub(crate) struct Plan {
    program: PathBuf,
    exit_read: OwnedFd,
    exit_write: OwnedFd,
}

impl Plan {
    /// Finds slirp4netns and makes the exit pipe.
    ///
    /// # Errors
    ///
    /// [`Error::Network`] when the program is not found.
    pub(crate) fn new() -> Result<Self> {
        let program = find_program()?;
        let (exit_read, exit_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| Error::os("create the slirp4netns exit pipe")(e.into()))?;
        Ok(Self {
            program,
            exit_read,
            exit_write,
        })
    }

    /// Returns the exit pipe's write end, which PID 1 keeps open for its
    /// whole life.
    pub(crate) fn pid1_end(&self) -> BorrowedFd<'_> {
        self.exit_write.as_fd()
    }

    /// Starts slirp4netns for the network namespace of PID 1, whose pid is
    /// `pid`, once PID 1 has its end of the exit pipe. In `rootless` mode
    /// slirp4netns joins PID 1's user namespace too, which owns the network
    /// namespace. Returns at once; [`Starting::wait`] waits for the device.
    pub(crate) fn start(self, pidfd: BorrowedFd<'_>, pid: i32, rootless: bool) -> Result<Starting> {
        let Self {
            program,
            exit_read,
            exit_write,
        } = self;
        // Only PID 1 may have the write end open from now on.
        drop(exit_write);
        let open = |namespace| {
            sys::pidfd_namespace(pidfd, pid, namespace)
                .map_err(Error::os("open the sandbox's namespace for slirp4netns"))
        };
        let network_namespace = open(sys::Namespace::Network)?;
        let user_namespace = if rootless {
            Some(open(sys::Namespace::User)?)
        } else {
            None
        };
        let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Error::os("create the slirp4netns ready pipe")(e.into()))?;
        sys::clear_nonblocking(ready_write.as_fd())
            .map_err(Error::os("create the slirp4netns ready pipe"))?;
        let output = sys::memfd(c"slirp4netns-output")
            .map_err(Error::os("create the slirp4netns output file"))?;

        let mut inherit = vec![
            ready_write.as_raw_fd(),
            exit_read.as_raw_fd(),
            network_namespace.as_raw_fd(),
        ];
        let mut command = Command::new(&program);
        command
            .arg("--configure")
            .arg(format!("--mtu={MTU}"))
            // Sandboxed code must not reach the host's loopback services
            // through the gateway address 10.0.2.2.
            .arg("--disable-host-loopback")
            .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_read.as_raw_fd()))
            .arg("--netns-type=path");
        if let Some(user_namespace) = &user_namespace {
            inherit.push(user_namespace.as_raw_fd());
            command.arg(format!(
                "--userns-path=/proc/self/fd/{}",
                user_namespace.as_raw_fd()
            ));
        } else {
            // A new mount namespace with little of the host's files in it,
            // and every capability dropped but CAP_NET_BIND_SERVICE. It
            // needs root, because unprivileged slirp4netns cannot unshare
            // a mount namespace.
            command.arg("--enable-sandbox");
        }
        command
            .arg("--enable-seccomp")
            .arg(format!("/proc/self/fd/{}", network_namespace.as_raw_fd()))
            .arg(DEVICE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                output
                    .try_clone()
                    .map_err(Error::os("duplicate the slirp4netns output file"))?,
            ))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        sys::spawn_orphan(&mut command, &inherit).map_err(|source| Error::Network {
            reason: format!("could not start {}", program.display()),
            source: Some(source),
        })?;
        let ready = sys::async_fd(ready_read).map_err(Error::os("register the ready pipe"))?;
        Ok(Starting { ready, output })
    }
}

/// A slirp4netns that was started and may not have its device up yet.
/// Dropping it leaves slirp4netns to end with the sandbox.
#[derive(Debug)]
pub(crate) struct Starting {
    ready: AsyncFd<OwnedFd>,
    output: OwnedFd,
}

impl Starting {
    /// Waits until slirp4netns reports the tap device up and configured.
    ///
    /// # Errors
    ///
    /// [`Error::Network`] when slirp4netns exits first or takes longer than
    /// 10 s, quoting what it wrote to stderr.
    pub(crate) async fn wait(self) -> Result<()> {
        let read = async {
            loop {
                let mut guard = self.ready.readable().await?;
                let mut byte = [0u8; 1];
                match guard.try_io(|fd| sys::read_fd(fd.get_ref().as_fd(), &mut byte)) {
                    Ok(result) => return result,
                    Err(_would_block) => continue,
                }
            }
        };
        let (reason, source) = match tokio::time::timeout(READY_TIMEOUT, read).await {
            Ok(Ok(1)) => return Ok(()),
            Ok(Ok(_)) => (
                "slirp4netns exited before it brought the tap device up",
                None,
            ),
            Ok(Err(error)) => ("reading the slirp4netns ready pipe failed", Some(error)),
            Err(_) => (
                "slirp4netns did not bring the tap device up within 10 s",
                Some(std::io::Error::from_raw_os_error(libc::ETIMEDOUT)),
            ),
        };
        Err(Error::Network {
            reason: format!("{reason}; its output: {:?}", self.output_tail()),
            source,
        })
    }

    /// Returns the last [`MAX_QUOTED_OUTPUT`] bytes slirp4netns wrote.
    fn output_tail(&self) -> String {
        let Ok(output) = self.output.try_clone() else {
            return String::new();
        };
        let mut file = File::from(output);
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(MAX_QUOTED_OUTPUT);
        let mut text = String::new();
        if file.seek(std::io::SeekFrom::Start(start)).is_ok() {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).trim().to_string();
        }
        text
    }
}

/// Returns the slirp4netns program: [`SLIRP4NETNS_ENV`] when set, else
/// `slirp4netns`; a name without a slash is looked up on `PATH`.
fn find_program() -> Result<PathBuf> {
    let name = std::env::var_os(SLIRP4NETNS_ENV).unwrap_or_else(|| OsString::from(PROGRAM));
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(&name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::Network {
                reason: format!(
                    "{} (from {SLIRP4NETNS_ENV}) is not an executable file",
                    path.display()
                ),
                source: Some(std::io::Error::from_raw_os_error(libc::ENOENT)),
            })
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(&name))
        .find(|path| is_executable(path));
    found.ok_or_else(|| Error::Network {
        reason: format!(
            "{} was not found on PATH ({}); install the slirp4netns package \
             (apt-get install slirp4netns on Debian and Ubuntu), or set {SLIRP4NETNS_ENV} \
             to the program's path",
            Path::new(&name).display(),
            search.to_string_lossy()
        ),
        source: Some(std::io::Error::from_raw_os_error(libc::ENOENT)),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_parse() {
        assert_eq!("none".parse::<Network>().unwrap(), Network::None);
        assert_eq!("internet".parse::<Network>().unwrap(), Network::Internet);
        for network in [Network::None, Network::Internet] {
            assert_eq!(network.as_str().parse::<Network>().unwrap(), network);
        }
        let error = "wifi".parse::<Network>().unwrap_err();
        assert!(error.to_string().contains("\"wifi\""), "{error}");
    }

    fn egress_error(allow_out: &[&str], deny_out: &[&str]) -> String {
        let strings = |entries: &[&str]| entries.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        egress_networks(Network::Internet, &strings(allow_out), &strings(deny_out))
            .expect_err("the entries were accepted")
            .to_string()
    }

    #[test]
    fn egress_entries_parse() {
        let entries = [
            "192.0.2.1".to_string(),
            "198.51.100.0/24".to_string(),
            ALL_TRAFFIC.to_string(),
            "192.0.2.1/32".to_string(),
        ];
        let (allow_out, deny_out) =
            egress_networks(Network::Internet, &entries, &entries[2..]).unwrap();
        let network = |address, prefix_len| Ipv4Cidr {
            address,
            prefix_len,
        };
        // The gateway comes first, and the /32 repeat of the first entry
        // is dropped.
        assert_eq!(
            allow_out,
            [
                GATEWAY,
                network([192, 0, 2, 1], 32),
                network([198, 51, 100, 0], 24),
                network([0, 0, 0, 0], 0),
            ]
        );
        assert_eq!(
            deny_out,
            [network([0, 0, 0, 0], 0), network([192, 0, 2, 1], 32)]
        );
        assert_eq!(
            egress_networks(Network::Internet, &[], &[]).unwrap(),
            (Vec::new(), Vec::new())
        );
        let (allow_out, _) = egress_networks(Network::Internet, &entries[..1], &[]).unwrap();
        assert_eq!(
            allow_out,
            [network([192, 0, 2, 1], 32)],
            "no gateway without deny_out"
        );
    }

    #[test]
    fn invalid_egress_entries_named() {
        let cases: [(&[&str], &[&str], &str); 10] = [
            (
                &["example.com"],
                &[],
                "allow_out entry \"example.com\" is a domain name",
            ),
            (
                &[],
                &["*.example.com"],
                "deny_out entry \"*.example.com\" is a domain name",
            ),
            (&["2001:db8::/32"], &[], "is an IPv6 address or network"),
            (&[], &["::/0"], "deny_out entry \"::/0\" is an IPv6"),
            (
                &["10.0.0.256"],
                &[],
                "\"10.0.0.256\" is not an IPv4 address or CIDR block",
            ),
            (
                &["10.0.0.0/8x"],
                &[],
                "\"10.0.0.0/8x\" has an invalid prefix length \"8x\"",
            ),
            (&["10.0.0.0/33"], &[], "invalid prefix length \"33\""),
            (&["10.0.0.0/08"], &[], "invalid prefix length \"08\""),
            (
                &[],
                &["10.1.2.3/16"],
                "deny_out entry \"10.1.2.3/16\" has host bits set (0.0.2.3 lies beyond the \
                 /16 prefix); use 10.1.0.0/16",
            ),
            (&[" 10.0.0.1"], &[], "is not an IPv4 address"),
        ];
        for (allow_out, deny_out, expected) in cases {
            let error = egress_error(allow_out, deny_out);
            assert!(
                error.contains(expected),
                "{allow_out:?} {deny_out:?}: {error}"
            );
        }
    }

    #[test]
    fn egress_entries_limited() {
        let entries = vec![ALL_TRAFFIC; MAX_EGRESS_ENTRIES / 2];
        let strings: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        assert!(egress_networks(Network::Internet, &strings, &strings).is_ok());
        let error = egress_error(&entries, &vec![ALL_TRAFFIC; MAX_EGRESS_ENTRIES / 2 + 1]);
        assert!(
            error.contains("have 257 entries together; at most 256"),
            "{error}"
        );
    }

    #[test]
    fn egress_entries_need_internet() {
        let error = egress_networks(Network::None, &[], &[ALL_TRAFFIC.to_string()])
            .expect_err("rules without internet access were accepted")
            .to_string();
        assert!(error.contains("set the network to internet"), "{error}");
        assert!(egress_networks(Network::None, &[], &[]).is_ok());
    }
}
