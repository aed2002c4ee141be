//! Installs the seccomp filter the host compiled, as PID 1's last setup
//! step; every supervisor and command inherits it.
//!
//! PID 1 compiles nothing: the host builds the policy into a classic BPF
//! program once and sends it in the configuration. The kernel checks the
//! program again when it is installed.

use soulbox_proto::SOCK_FILTER_LEN;

use crate::sys::{self, SockFilter};

/// Installs `program`, the configuration's `seccomp_filter`; an empty one
/// installs nothing.
pub fn install(program: &[u8]) -> std::io::Result<()> {
    if program.is_empty() {
        return Ok(());
    }
    let instructions = decode(program)?;
    sys::install_seccomp_filter(&instructions)
}

/// Splits the wire format into instructions. The decoder of the
/// configuration already checked the length, so EINVAL here means a
/// message that bypassed it.
fn decode(program: &[u8]) -> std::io::Result<Vec<SockFilter>> {
    if program.len() % SOCK_FILTER_LEN != 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(program
        .chunks_exact(SOCK_FILTER_LEN)
        .map(|raw| SockFilter {
            code: u16::from_le_bytes([raw[0], raw[1]]),
            jt: raw[2],
            jf: raw[3],
            k: u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_decoded() {
        let program = [
            0x20, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, // load arch
            0x15, 0x00, 0x01, 0x02, 0x3e, 0x00, 0x00, 0xc0, // jeq x86-64
            0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x7f, // allow
        ];
        let decoded = decode(&program).expect("a whole program");
        let fields: Vec<(u16, u8, u8, u32)> =
            decoded.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            fields,
            [
                (0x20, 0, 0, 4),
                (0x15, 1, 2, 0xc000_003e),
                (0x06, 0, 0, 0x7fff_0000)
            ]
        );
    }

    #[test]
    fn partial_instruction_rejected() {
        let error = decode(&[0x06, 0, 0, 0, 0, 0, 0xff]).expect_err("7 bytes");
        assert_eq!(error.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn empty_program_installs_nothing() {
        // Would fail with EFAULT or EINVAL if it reached the kernel.
        install(&[]).expect("an empty program must install nothing");
    }
}
