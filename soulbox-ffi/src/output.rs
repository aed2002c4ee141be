//! Results handed to C: a command's output, a chunk of it and a byte
//! buffer.
//!
//! All are plain structs that C reads directly. SoulBox allocates them,
//! with the bytes they point to, in one owned block, and frees them all in
//! one call. Every buffer is followed by a NUL byte that its length does
//! not count, so text can be passed to C string functions as it is.

use std::ffi::c_int;

use soulbox_core::{CommandExit, ExitStatus};

/// Output stream that a chunk passed to `soulbox_output_callback` comes
/// from.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The command's standard output.
    Stdout = 1,
    /// The command's standard error.
    Stderr = 2,
}

/// The result of a command that ran to its end. Owned by the caller and
/// freed with `soulbox_output_free`. C may read every field and must not
/// change any.
#[repr(C)]
#[derive(Debug)]
pub struct Output {
    /// Exit code of the command's first process, or -1 when a signal ended
    /// it.
    pub exit_code: c_int,
    /// Signal that ended the command's first process (9 after a timeout),
    /// or 0 when it exited.
    pub signal: c_int,
    /// Whether the command's timeout ended it; its whole process tree was
    /// killed.
    pub timed_out: bool,
    /// Whether the sandbox's out-of-memory killer ended it.
    pub oom_killed: bool,
    /// Everything the command wrote to stdout, unless an output callback
    /// received it; never NULL. Followed by a NUL byte that `stdout_len`
    /// does not count.
    pub stdout_data: *const u8,
    /// Length of `stdout_data` in bytes.
    pub stdout_len: usize,
    /// Everything the command wrote to stderr, as `stdout_data`.
    pub stderr_data: *const u8,
    /// Length of `stderr_data` in bytes.
    pub stderr_len: usize,
}

/// A byte buffer owned by the caller and freed with `soulbox_bytes_free`.
#[repr(C)]
#[derive(Debug)]
pub struct Bytes {
    /// The bytes; never NULL. Followed by a NUL byte that `len` does not
    /// count.
    pub data: *const u8,
    /// Length of `data` in bytes.
    pub len: usize,
}

/// A chunk of a command's output from `soulbox_command_read`. Owned by the
/// caller and freed with `soulbox_chunk_free`.
#[repr(C)]
#[derive(Debug)]
pub struct Chunk {
    /// The stream it came from: SOULBOX_STREAM_STDOUT, which is also
    /// everything a PTY's command writes, or SOULBOX_STREAM_STDERR.
    pub stream: Stream,
    /// The bytes, as the command wrote them: a multibyte character may be
    /// split across two chunks. Never NULL. Followed by a NUL byte that
    /// `len` does not count.
    pub data: *const u8,
    /// Length of `data` in bytes, from 1 to 65,536.
    pub len: usize,
}

/// An [`Output`] with the buffers it points into. `repr(C)` puts `public`
/// at offset 0, so a pointer to the whole block is also a pointer to the
/// `Output` that C sees.
#[repr(C)]
#[derive(Debug)]
pub struct OutputBlock {
    public: Output,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// A [`Bytes`] with its buffer, laid out as [`OutputBlock`].
#[repr(C)]
#[derive(Debug)]
pub struct BytesBlock {
    public: Bytes,
    buffer: Vec<u8>,
}

/// A [`Chunk`] with its buffer, laid out as [`OutputBlock`].
#[repr(C)]
#[derive(Debug)]
pub struct ChunkBlock {
    public: Chunk,
    buffer: Vec<u8>,
}

/// Appends the NUL byte that C string functions need.
fn nul_terminated(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.reserve_exact(1);
    bytes.push(0);
    bytes
}

impl OutputBlock {
    /// Builds the block for a command's end and the output it collected.
    pub fn new(exit: CommandExit, stdout: Vec<u8>, stderr: Vec<u8>) -> Box<Self> {
        let (exit_code, signal) = match exit.status {
            ExitStatus::Code(code) => (code, 0),
            ExitStatus::Signal(signal) => (-1, signal),
        };
        let mut block = Box::new(Self {
            public: Output {
                exit_code,
                signal,
                timed_out: exit.timed_out,
                oom_killed: exit.oom_killed,
                stdout_data: std::ptr::null(),
                stdout_len: stdout.len(),
                stderr_data: std::ptr::null(),
                stderr_len: stderr.len(),
            },
            stdout: nul_terminated(stdout),
            stderr: nul_terminated(stderr),
        });
        // The vectors' heap buffers stay where they are when the box moves.
        block.public.stdout_data = block.stdout.as_ptr();
        block.public.stderr_data = block.stderr.as_ptr();
        block
    }

    #[cfg(test)]
    fn public(&self) -> &Output {
        &self.public
    }
}

impl BytesBlock {
    pub fn new(bytes: Vec<u8>) -> Box<Self> {
        let len = bytes.len();
        let mut block = Box::new(Self {
            public: Bytes {
                data: std::ptr::null(),
                len,
            },
            buffer: nul_terminated(bytes),
        });
        block.public.data = block.buffer.as_ptr();
        block
    }

    #[cfg(test)]
    fn public(&self) -> &Bytes {
        &self.public
    }
}

impl ChunkBlock {
    pub fn new(stream: Stream, bytes: Vec<u8>) -> Box<Self> {
        let len = bytes.len();
        let mut block = Box::new(Self {
            public: Chunk {
                stream,
                data: std::ptr::null(),
                len,
            },
            buffer: nul_terminated(bytes),
        });
        block.public.data = block.buffer.as_ptr();
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_points_into_its_buffers() {
        let exit = CommandExit {
            status: ExitStatus::Signal(9),
            timed_out: true,
            oom_killed: false,
        };
        let block = OutputBlock::new(exit, b"out".to_vec(), Vec::new());
        let output = block.public();
        assert_eq!(output.exit_code, -1);
        assert_eq!(output.signal, 9);
        assert!(output.timed_out);
        assert_eq!(output.stdout_len, 3);
        assert_eq!(output.stdout_data, block.stdout.as_ptr());
        assert_eq!(block.stdout, b"out\0");
        assert_eq!(output.stderr_len, 0);
        assert_eq!(block.stderr, b"\0");
    }

    #[test]
    fn bytes_are_nul_terminated() {
        let block = BytesBlock::new(vec![0, 1, 2]);
        assert_eq!(block.public().len, 3);
        assert_eq!(block.buffer, [0, 1, 2, 0]);
    }
}
