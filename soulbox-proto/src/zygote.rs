//! Wire format between the host library and its zygote: the long-lived
//! soulbox-init process that forks each sandbox's PID 1 on request.
//!
//! Both messages travel over a `SOCK_SEQPACKET` socket pair. A
//! [`ForkRequest`] carries PID 1's end of the control socket and,
//! optionally, a cgroup v2 directory to start it in (SCM_RIGHTS, in that
//! order). A [`ForkReply::Started`] carries a pidfd for the new PID 1.

use crate::{DecodeError, Decoder, Encoder, RootPlan};

/// Size in bytes of an encoded [`ForkRequest`] without a root plan: the
/// header and the clone flags.
pub const REQUEST_LEN: usize = 12;
/// Largest encoded [`ForkRequest`] the zygote accepts. A request whose
/// root plan would make it longer goes without the plan.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;
/// Size in bytes of an encoded [`ForkReply`].
pub const REPLY_LEN: usize = 12;
/// Maximum number of descriptors sent with a [`ForkRequest`]: the control
/// socket, then the cgroup v2 directory.
pub const REQUEST_MAX_FDS: usize = 2;
/// The clone flags a [`ForkRequest`] may carry: CLONE_NEWNS, CLONE_NEWCGROUP,
/// CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID and CLONE_NEWNET
/// from <linux/sched.h>.
pub const NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// First four bytes of both messages: magic, protocol version, and a flags
/// byte ([`BACKGROUND`] and [`ROOT`] in a request, zero in a reply) that
/// also keeps the fields after it aligned.
const HEADER: [u8; 4] = [b'S', b'Z', crate::VERSION, 0];

/// Request flag: fork PID 1 at the scheduler's idle priority.
const BACKGROUND: u8 = 1;
/// Request flag: a [`RootPlan`] follows the clone flags.
const ROOT: u8 = 2;

/// A request to fork one sandbox's PID 1 in new namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRequest {
    /// CLONE_NEW* flags; only bits of [`NAMESPACE_FLAGS`].
    pub namespaces: u64,
    /// Clone at the scheduler's idle priority, for a warm pool's refill;
    /// PID 1 then starts with that priority, and leaves it before it
    /// reports ready.
    pub background: bool,
    /// The plan of PID 1's root, sent when the zygote may build that root
    /// ahead of time. If the zygote has a root built for an equal plan,
    /// PID 1 starts in its mount namespace, and the zygote builds the next
    /// one after its reply. `None` for a root that must be built at the
    /// create, such as one with the caller's host mounts.
    pub root: Option<RootPlan>,
}

impl ForkRequest {
    /// Encodes the request. Its length may exceed [`MAX_REQUEST_LEN`]
    /// only with a root plan, which the caller then leaves out.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REQUEST_LEN);
        out.extend_from_slice(&HEADER);
        if self.background {
            out[3] |= BACKGROUND;
        }
        out.extend_from_slice(&self.namespaces.to_le_bytes());
        match &self.root {
            Some(plan) => {
                out[3] |= ROOT;
                let mut e = Encoder::headless(out);
                e.root_plan(plan);
                e.buf
            }
            None => out,
        }
    }

    /// Decodes a request.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError`] for a message that is too short or too
    /// long, has the wrong header or trailing bytes, or has clone flags
    /// outside [`NAMESPACE_FLAGS`].
    pub fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        if msg.len() > MAX_REQUEST_LEN {
            return Err(DecodeError::TooLong("request"));
        }
        if msg.len() < REQUEST_LEN {
            return Err(DecodeError::Truncated("namespaces"));
        }
        let (fixed, rest) = msg.split_at(REQUEST_LEN);
        check_header(fixed, BACKGROUND | ROOT)?;
        let mut flags = [0u8; 8];
        flags.copy_from_slice(&fixed[4..]);
        let namespaces = u64::from_le_bytes(flags);
        if namespaces & !NAMESPACE_FLAGS != 0 {
            return Err(DecodeError::InvalidField("namespaces"));
        }
        let root = if fixed[3] & ROOT != 0 {
            let mut d = Decoder::headless(rest);
            let plan = d.root_plan()?;
            Some(d.finish(plan)?)
        } else if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        } else {
            None
        };
        Ok(Self {
            namespaces,
            background: fixed[3] & BACKGROUND != 0,
            root,
        })
    }
}

/// The zygote's reply to a [`ForkRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkReply {
    /// PID 1 runs; its pidfd comes with the reply.
    Started {
        /// Host pid of PID 1.
        pid: i32,
        /// Whether PID 1 started in the cgroup sent with the request.
        in_cgroup: bool,
    },
    /// The fork failed with this OS error number; nothing was started.
    Failed {
        /// The OS error number.
        errno: i32,
    },
}

impl ForkReply {
    /// Encodes the reply into its fixed-size form.
    pub fn encode(&self) -> [u8; REPLY_LEN] {
        let (kind, value) = match *self {
            Self::Started {
                pid,
                in_cgroup: false,
            } => (1u32, pid),
            Self::Started {
                pid,
                in_cgroup: true,
            } => (2, pid),
            Self::Failed { errno } => (3, errno),
        };
        let mut out = [0u8; REPLY_LEN];
        out[..4].copy_from_slice(&HEADER);
        out[4..8].copy_from_slice(&kind.to_le_bytes());
        out[8..].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// Decodes a reply.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError`] for a message of the wrong size or header,
    /// an unknown kind, or a pid or errno that is not positive.
    pub fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let raw = fixed::<REPLY_LEN>(msg, "reply")?;
        check_header(&raw, 0)?;
        let kind = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let value = i32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
        match kind {
            1 | 2 if value > 0 => Ok(Self::Started {
                pid: value,
                in_cgroup: kind == 2,
            }),
            3 if value > 0 => Ok(Self::Failed { errno: value }),
            1 | 2 => Err(DecodeError::InvalidField("pid")),
            3 => Err(DecodeError::InvalidField("errno")),
            other => Err(DecodeError::UnknownKind(other.min(255) as u8)),
        }
    }
}

fn fixed<const N: usize>(msg: &[u8], field: &'static str) -> Result<[u8; N], DecodeError> {
    if msg.len() > N {
        return Err(DecodeError::TrailingBytes(msg.len() - N));
    }
    msg.try_into().map_err(|_| DecodeError::Truncated(field))
}

/// Checks the magic and version, and that the flags byte has no bit
/// outside `flags`.
fn check_header(raw: &[u8], flags: u8) -> Result<(), DecodeError> {
    if raw[..2] != HEADER[..2] {
        return Err(DecodeError::BadMagic);
    }
    if raw[2] != crate::VERSION {
        return Err(DecodeError::UnsupportedVersion(raw[2]));
    }
    if raw[3] & !flags != 0 {
        return Err(DecodeError::InvalidField("header"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        for background in [false, true] {
            let request = ForkRequest {
                namespaces: 0x2000_0000 | 0x0002_0000,
                background,
                root: None,
            };
            assert_eq!(ForkRequest::decode(&request.encode()), Ok(request));
        }
    }

    fn plan() -> RootPlan {
        RootPlan {
            lower_dirs: vec![b"/run/soulbox/templates/host-1".to_vec()],
            binds: vec![crate::BindMount {
                source: b"/usr".to_vec(),
                target: b"/usr".to_vec(),
            }],
            scratch_dir: b"/run/soulbox/scratch".to_vec(),
            scratch_size: 1 << 30,
            scratch_inodes: 1 << 20,
            tmp_size: 1 << 28,
        }
    }

    #[test]
    fn request_with_root_plan_round_trips() {
        let request = ForkRequest {
            namespaces: 0x2000_0000,
            background: true,
            root: Some(plan()),
        };
        let encoded = request.encode();
        assert!(encoded.len() > REQUEST_LEN);
        assert_eq!(ForkRequest::decode(&encoded), Ok(request));
    }

    #[test]
    fn request_with_cut_root_plan_rejected() {
        let encoded = ForkRequest {
            namespaces: 0,
            background: false,
            root: Some(plan()),
        }
        .encode();
        for len in REQUEST_LEN..encoded.len() {
            assert!(
                ForkRequest::decode(&encoded[..len]).is_err(),
                "a request cut to {len} bytes was accepted"
            );
        }
        let mut long = encoded.clone();
        long.push(0);
        assert_eq!(
            ForkRequest::decode(&long),
            Err(DecodeError::TrailingBytes(1))
        );
        let mut oversized = encoded;
        oversized.resize(MAX_REQUEST_LEN + 1, 0);
        assert_eq!(
            ForkRequest::decode(&oversized),
            Err(DecodeError::TooLong("request"))
        );
    }

    #[test]
    fn request_rejects_unknown_flags() {
        let mut raw = ForkRequest {
            namespaces: 0x2000_0000,
            background: true,
            root: None,
        }
        .encode();
        raw[3] = 0x80;
        assert_eq!(
            ForkRequest::decode(&raw),
            Err(DecodeError::InvalidField("header"))
        );
    }

    #[test]
    fn request_rejects_other_clone_flags() {
        // CLONE_VM is not a namespace flag.
        let request = ForkRequest {
            namespaces: 0x2000_0000 | 0x100,
            background: false,
            root: None,
        };
        assert_eq!(
            ForkRequest::decode(&request.encode()),
            Err(DecodeError::InvalidField("namespaces"))
        );
    }

    #[test]
    fn request_rejects_wrong_sizes() {
        let encoded = ForkRequest {
            namespaces: 0,
            background: false,
            root: None,
        }
        .encode();
        assert_eq!(
            ForkRequest::decode(&encoded[..5]),
            Err(DecodeError::Truncated("namespaces"))
        );
        let mut long = encoded.to_vec();
        long.push(0);
        assert_eq!(
            ForkRequest::decode(&long),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn reply_round_trips() {
        for reply in [
            ForkReply::Started {
                pid: 4242,
                in_cgroup: true,
            },
            ForkReply::Started {
                pid: 1,
                in_cgroup: false,
            },
            ForkReply::Failed { errno: 12 },
        ] {
            assert_eq!(ForkReply::decode(&reply.encode()), Ok(reply));
        }
    }

    #[test]
    fn reply_rejects_bad_fields() {
        let mut raw = ForkReply::Started {
            pid: 7,
            in_cgroup: false,
        }
        .encode();
        raw[8..].copy_from_slice(&0i32.to_le_bytes());
        assert_eq!(
            ForkReply::decode(&raw),
            Err(DecodeError::InvalidField("pid"))
        );
        raw[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(ForkReply::decode(&raw), Err(DecodeError::UnknownKind(9)));
        raw[0] = b'X';
        assert_eq!(ForkReply::decode(&raw), Err(DecodeError::BadMagic));
    }
}
