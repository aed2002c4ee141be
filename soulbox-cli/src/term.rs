//! The caller's terminal: its size and raw mode for `soulbox run --tty`;
//! and the process set-up that Rust's start-up would otherwise do.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Ignores SIGPIPE, so that writing to a closed pipe fails with EPIPE
/// rather than killing the process, and opens /dev/null on stdin, stdout
/// or stderr where one is closed, so that no descriptor opened later takes
/// its number. Rust's start-up does both before `main`.
pub fn prepare_process() -> std::io::Result<()> {
    // SAFETY: SIG_IGN involves no handler code; nothing else in this
    // process has set SIGPIPE's disposition yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    for fd in 0..=2 {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        // open returns the lowest free number, which is `fd` because the
        // ones below it are open. Like Rust's start-up, it leaves the
        // descriptor open across exec.
        // SAFETY: the path is a valid C string, and the descriptor stays
        // open for the life of the process, as a standard one.
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Returns whether stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Returns whether stdin is /dev/null or not open at all, so that reading
/// it would end at once.
pub fn stdin_is_empty() -> bool {
    match nix::sys::stat::fstat(std::io::stdin().as_raw_fd()) {
        // /dev/null is character device 1:3 on Linux.
        Ok(stat) => {
            stat.st_mode & libc::S_IFMT == libc::S_IFCHR && stat.st_rdev == libc::makedev(1, 3)
        }
        Err(errno) => errno == nix::errno::Errno::EBADF,
    }
}

/// Returns the terminal's size as (rows, columns), or 24x80 when unknown.
pub fn window_size(fd: BorrowedFd<'_>) -> (u16, u16) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer given.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    if ret == 0 && size.ws_row > 0 && size.ws_col > 0 {
        (size.ws_row, size.ws_col)
    } else {
        (24, 80)
    }
}

/// Puts stdin's terminal in raw mode until dropped, so every key reaches
/// the sandbox's PTY as typed, ^C included.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches stdin's terminal to raw mode.
    pub fn enable() -> nix::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
