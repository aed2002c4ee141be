//! The file API against a real sandbox: round trips, paths, ownership,
//! errors, and symlinks planted inside that try to reach host files.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use soulbox_core::{
    EntryInfo, Error, FileType, FilesystemEvent, FilesystemEventKind, Sandbox, Watcher,
};
use soulbox_tests::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

/// How long a file operation on a FIFO may take before the test counts it
/// as blocked.
const FIFO_LIMIT: Duration = Duration::from_secs(5);

/// A host file under /tmp that exists for one test and is removed on drop.
struct HostMarker {
    path: PathBuf,
    contents: Vec<u8>,
}

impl HostMarker {
    fn create(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let name = format!("soulbox-marker-{test}-{}-{nanos}", std::process::id());
        let path = PathBuf::from("/tmp").join(name);
        let contents = format!("host file {} must stay out of sandboxes\n", path.display());
        std::fs::write(&path, &contents).expect("write the host marker file");
        Self {
            path,
            contents: contents.into_bytes(),
        }
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .expect("marker has a name")
            .to_string_lossy()
            .into_owned()
    }

    /// Reads the marker's current contents on the host.
    fn read(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read the host marker file")
    }
}

impl Drop for HostMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Computes the SHA-256 of `data` with the host's sha256sum, as hex.
fn host_sha256(data: &[u8]) -> String {
    let mut child = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sha256sum on the host");
    let mut stdin = child.stdin.take().expect("sha256sum stdin is piped");
    stdin.write_all(data).expect("write data to sha256sum");
    drop(stdin);
    let output = child.wait_with_output().expect("wait for sha256sum");
    assert!(
        output.status.success(),
        "host sha256sum failed: {:?}",
        output.status
    );
    let text = String::from_utf8(output.stdout).expect("sha256sum prints ASCII");
    text.split_whitespace()
        .next()
        .expect("sha256sum prints a hash")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_round_trip() {
    if !require_root("binary_round_trip") {
        return;
    }
    let sbx = sandbox().await;
    let data: Vec<u8> = (0..=255).collect::<Vec<u8>>().repeat(1000);
    sbx.files()
        .write("bin/data", data.clone())
        .await
        .expect("write 256000 bytes");

    let back = sbx
        .files()
        .read("bin/data")
        .await
        .expect("read the bytes back");
    assert_eq!(back.len(), data.len(), "length after a round trip");
    assert!(back == data, "bytes changed in a write and read round trip");

    let inside = sh(&sbx, "sha256sum /home/user/bin/data").await;
    let inside_hash = stdout(&inside)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        inside_hash,
        host_sha256(&data),
        "sha256sum inside the sandbox vs on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_round_trip() {
    if !require_root("empty_file_round_trip") {
        return;
    }
    let sbx = sandbox().await;
    sbx.files()
        .write("empty", Vec::new())
        .await
        .expect("write an empty file");
    let back = sbx
        .files()
        .read("empty")
        .await
        .expect("read the empty file");
    assert!(back.is_empty(), "an empty file read back as {back:?}");
    let size = sh(&sbx, "stat -c %s /home/user/empty").await;
    assert_eq!(
        stdout(&size),
        "0\n",
        "size of the empty file inside the sandbox"
    );

    let touch = sh(&sbx, "touch touched").await;
    assert!(touch.status.success(), "touch failed: {:?}", touch.stderr);
    let touched = sbx
        .files()
        .read("touched")
        .await
        .expect("read a file made by touch");
    assert!(
        touched.is_empty(),
        "a file made by touch read as {touched:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_path_under_home() {
    if !require_root("relative_path_under_home") {
        return;
    }
    let sbx = sandbox().await;
    sbx.files()
        .write("x/y.txt", "hello")
        .await
        .expect("write x/y.txt");
    let output = sh(&sbx, "cat /home/user/x/y.txt").await;
    assert_eq!(
        stdout(&output),
        "hello",
        "x/y.txt should be /home/user/x/y.txt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_files_owned_by_user() {
    if !require_root("created_files_owned_by_user") {
        return;
    }
    let sbx = sandbox().await;
    let created = sbx.files().make_dir("d").await.expect("make directory d");
    assert!(created, "make_dir should return true for a new directory");
    let again = sbx
        .files()
        .make_dir("d")
        .await
        .expect("make directory d again");
    assert!(
        !again,
        "make_dir should return false for an existing directory"
    );
    sbx.files().write("d/a", "x").await.expect("write d/a");

    let moved = sh(&sbx, "mv d/a d/b").await;
    assert!(
        moved.status.success(),
        "user could not rename d/a: {}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let owners = sh(&sbx, "stat -c %U d d/b").await;
    assert_eq!(stdout(&owners), "user\nuser\n", "owners of d and d/b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_errors_mapped() {
    if !require_root("file_errors_mapped") {
        return;
    }
    let sbx = sandbox().await;
    let missing = sbx.files().read("missing").await;
    assert!(
        matches!(missing, Err(Error::FileNotFound { .. })),
        "reading a missing file should fail with FileNotFound, got {missing:?}"
    );

    sbx.files()
        .make_dir("dir")
        .await
        .expect("make directory dir");
    let directory = sbx.files().read("dir").await;
    assert!(
        matches!(directory, Err(Error::InvalidArgument(_))),
        "reading a directory should fail with InvalidArgument, got {directory:?}"
    );

    sbx.files()
        .write("plain", "data")
        .await
        .expect("write plain");
    let under_file = sbx.files().write("plain/child", "data").await;
    assert!(
        matches!(under_file, Err(Error::InvalidArgument(_))),
        "writing below a regular file should fail with InvalidArgument, got {under_file:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_keeps_caller_path() {
    if !require_root("not_found_keeps_caller_path") {
        return;
    }
    let sbx = sandbox().await;
    // Error::FileNotFound documents `path` as the path the caller gave.
    match sbx.files().read("missing").await {
        Err(Error::FileNotFound { path }) => {
            assert_eq!(
                path, "missing",
                "FileNotFound should carry the caller's relative path"
            )
        }
        other => panic!("reading a missing file should fail with FileNotFound, got {other:?}"),
    }
}

/// An error without a variant of its own, here EINVAL from /proc, still
/// names the path the caller gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_file_error_names_path() {
    if !require_root("other_file_error_names_path") {
        return;
    }
    let sbx = sandbox().await;
    let path = "/proc/1/comm";
    let written = sbx.files().user("root").write(path, "x").await;
    let Err(error) = written else {
        panic!("writing {path} should fail");
    };
    assert!(
        matches!(&error, Error::File { path: named, .. } if named == path),
        "the error should be Error::File for {path}, got {error:?}"
    );
    assert!(
        error.to_string().contains(path),
        "the message should name {path}: {error}"
    );
    assert!(
        error.errno().is_some(),
        "the OS error number is lost: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_stay_inside() {
    if !require_root("symlinks_stay_inside") {
        return;
    }
    let sbx = sandbox().await;
    let links = "ln -s /etc/hostname /home/user/link && ln -s ../../../../../etc /home/user/up";
    let planted = sbx
        .shell(links)
        .user("root")
        .output()
        .await
        .expect("plant symlinks");
    assert!(
        planted.status.success(),
        "ln failed: {}",
        String::from_utf8_lossy(&planted.stderr)
    );

    let sandbox_hostname = format!("{}\n", sbx.id()).into_bytes();
    let host_hostname = std::fs::read("/etc/hostname").unwrap_or_default();
    let through_link = sbx.files().read("link").await.expect("read link");
    assert_eq!(
        through_link, sandbox_hostname,
        "link should reach the sandbox's /etc/hostname"
    );
    assert_ne!(
        through_link, host_hostname,
        "link reached the host's /etc/hostname"
    );
    let through_up = sbx
        .files()
        .read("up/hostname")
        .await
        .expect("read up/hostname");
    assert_eq!(
        through_up, sandbox_hostname,
        "`..` past the root should stop at the sandbox root"
    );
}

/// A write through a symlink whose target is missing creates the target,
/// inside the sandbox, as a shell's `>` does, and keeps the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_creates_missing_link_target() {
    if !require_root("write_creates_missing_link_target") {
        return;
    }
    let sbx = sandbox().await;
    let planted = sh(
        &sbx,
        "ln -s /home/user/target.txt /home/user/link && \
         ln -s /home/user/no-such-dir/target.txt /home/user/deep",
    )
    .await;
    assert!(planted.status.success(), "ln failed: {planted:?}");

    sbx.files()
        .write("link", "through the link")
        .await
        .expect("write through a link to a missing file");
    let target = sbx
        .files()
        .read("target.txt")
        .await
        .expect("read target.txt");
    assert_eq!(target, b"through the link");
    let seen = sh(
        &sbx,
        "stat -c '%F %U %a' /home/user/link /home/user/target.txt",
    )
    .await;
    assert_eq!(
        stdout(&seen),
        "symbolic link user 777\nregular file user 644\n",
        "the link should stay a link, and the target a file of the user with mode 0644"
    );

    let deep = sbx.files().write("deep", "x").await;
    assert!(
        matches!(deep, Err(Error::FileNotFound { .. })),
        "a link into a missing directory should fail with FileNotFound, got {deep:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_to_host_tmp() {
    if !require_root("symlink_to_host_tmp") {
        return;
    }
    let marker = HostMarker::create("symlink_to_host_tmp");
    let sbx = sandbox().await;
    let line = format!(
        "ln -s /tmp/{name} /home/user/m && ln -s /tmp /home/user/t",
        name = marker.name()
    );
    let planted = sh(&sbx, &line).await;
    assert!(
        planted.status.success(),
        "ln failed: {}",
        String::from_utf8_lossy(&planted.stderr)
    );

    match sbx.files().read("m").await {
        Err(Error::FileNotFound { .. }) => {}
        other => {
            panic!("m points at a file only the host has, expected FileNotFound, got {other:?}")
        }
    }

    // Whether these writes fail or land in the sandbox's /tmp, the host
    // file must keep its contents.
    let _ = sbx.files().write("m", "written through m").await;
    assert_eq!(
        marker.read(),
        marker.contents,
        "writing through m changed the host file"
    );
    let into_tmp = format!("t/{}", marker.name());
    let written = sbx.files().write(&into_tmp, "written through t").await;
    assert!(
        written.is_ok(),
        "writing through t into the sandbox's /tmp failed: {written:?}"
    );
    assert_eq!(
        marker.read(),
        marker.contents,
        "writing through t changed the host file"
    );
    let inside = sh(&sbx, &format!("cat /tmp/{}", marker.name())).await;
    assert_eq!(
        stdout(&inside),
        "written through t",
        "the write through t should land in the sandbox's /tmp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_root_links_refused() {
    if !require_root("proc_root_links_refused") {
        return;
    }
    let marker = HostMarker::create("proc_root_links_refused");
    let sbx = sandbox().await;
    let name = marker.name();
    let line = format!(
        "ln -s /proc/1/root/tmp/{name} /home/user/p1 && ln -s /proc/self/root/tmp/{name} /home/user/pself"
    );
    let planted = sh(&sbx, &line).await;
    assert!(
        planted.status.success(),
        "ln failed: {}",
        String::from_utf8_lossy(&planted.stderr)
    );

    for link in ["p1", "pself"] {
        let result = sbx.files().read(link).await;
        assert!(
            !matches!(&result, Ok(data) if *data == marker.contents),
            "reading {link} returned the host file {}",
            marker.path.display()
        );
        assert!(
            result.is_err(),
            "reading {link} through /proc should fail, got {result:?}"
        );
    }
    for link in ["/proc/1/root/etc/hostname", "/proc/self/root/etc/hostname"] {
        let result = sbx.files().read(link).await;
        assert!(
            result.is_err(),
            "reading {link} should fail, got {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_fifo_returns_promptly() {
    if !require_root("read_fifo_returns_promptly") {
        return;
    }
    let sbx = sandbox().await;
    let planted = sh(&sbx, "mkfifo /home/user/fifo").await;
    assert!(
        planted.status.success(),
        "mkfifo failed: {}",
        String::from_utf8_lossy(&planted.stderr)
    );

    // Sandboxed code can put a FIFO where the host expects a file. Opening
    // it for reading blocks until a writer appears, so the read must not
    // wait for one.
    let result = tokio::time::timeout(FIFO_LIMIT, sbx.files().read("fifo")).await;
    if result.is_err() {
        // Release the host thread stuck in open(2) so the runtime can shut
        // down, then report the hang.
        sh(&sbx, "echo release > /home/user/fifo").await;
    }
    let result = result.unwrap_or_else(|_| {
        panic!("files().read of a FIFO planted in the sandbox blocked for {FIFO_LIMIT:?}")
    });
    assert!(
        result.is_err(),
        "reading a FIFO should fail because it is not a regular file, got {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_fifo_returns_promptly() {
    if !require_root("write_fifo_returns_promptly") {
        return;
    }
    let sbx = sandbox().await;
    let planted = sh(&sbx, "mkfifo /home/user/fifo").await;
    assert!(
        planted.status.success(),
        "mkfifo failed: {}",
        String::from_utf8_lossy(&planted.stderr)
    );

    // Opening a FIFO for writing blocks until a reader appears.
    let result = tokio::time::timeout(FIFO_LIMIT, sbx.files().write("fifo", "data")).await;
    if result.is_err() {
        // Release the host thread stuck in open(2) so the runtime can shut
        // down, then report the hang.
        sh(&sbx, "cat /home/user/fifo > /dev/null").await;
    }
    assert!(
        result.is_ok(),
        "files().write to a FIFO planted in the sandbox blocked for {FIFO_LIMIT:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_names_round_trip() {
    if !require_root("unusual_names_round_trip") {
        return;
    }
    let sbx = sandbox().await;
    let path = "dir with space/ünï😀.txt";
    sbx.files()
        .write(path, "odd")
        .await
        .expect("write a file with an unusual name");
    let back = sbx.files().read(path).await.expect("read it back");
    assert_eq!(back, b"odd", "contents of {path}");

    let listing = sh(&sbx, "ls '/home/user/dir with space'").await;
    assert_eq!(
        stdout(&listing),
        "ünï😀.txt\n",
        "ls should show the name unchanged"
    );
}

// Helpers of the tests below.

/// Environment variable that selects the body of the test it names, in a
/// process that [`run_alone`] started.
const ALONE_VAR: &str = "SOULBOX_TEST_ALONE";

/// Returns whether this process was started by [`run_alone`] for `test`.
fn started_for(test: &str) -> bool {
    std::env::var_os(ALONE_VAR).is_some_and(|name| name == test)
}

/// Runs `test` in a new process of this test binary that selects only it,
/// and panics with that process's output if the test fails there or did
/// not run. The tests of one binary run on threads of one process, so a
/// measurement of the whole process, such as its peak RSS, needs a
/// process where no other test runs.
fn run_alone(test: &str) {
    let binary = std::env::current_exe().expect("path of this test binary");
    let output = std::process::Command::new(&binary)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ALONE_VAR, test)
        .output()
        .unwrap_or_else(|e| panic!("start {} to run {test}: {e}", binary.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The test's report lines and panic messages, shown where this test's
    // own output is shown.
    eprint!("{stderr}");
    assert!(
        output.status.success(),
        "{test} failed in a process of its own ({}):\n{stdout}",
        output.status
    );
    assert!(
        stdout.contains(&format!("test {test} ... ok")),
        "the process started for {test} did not run it:\n{stdout}"
    );
}

/// Returns a unique name for a host path under /tmp.
fn unique_name(test: &str, what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("soulbox-{what}-{test}-{}-{nanos}", std::process::id())
}

/// A host directory under /tmp holding one file, removed on drop.
struct HostMarkerDir {
    path: PathBuf,
    inner: String,
}

impl HostMarkerDir {
    fn create(test: &str) -> Self {
        let path = PathBuf::from("/tmp").join(unique_name(test, "markerdir"));
        std::fs::create_dir(&path).expect("create the host marker directory");
        let inner = "inner-secret".to_string();
        std::fs::write(path.join(&inner), "host directory contents\n")
            .expect("write the file in the host marker directory");
        Self { path, inner }
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .expect("marker directory has a name")
            .to_string_lossy()
            .into_owned()
    }

    fn is_intact(&self) -> bool {
        std::fs::read(self.path.join(&self.inner))
            .is_ok_and(|data| data == b"host directory contents\n")
    }
}

impl Drop for HostMarkerDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A host path under /tmp that no file call may create; removed on drop
/// if one did.
struct MustNotExist(PathBuf);

impl MustNotExist {
    fn new(name: String) -> Self {
        Self(PathBuf::from("/tmp").join(name))
    }

    fn name(&self) -> String {
        self.0
            .file_name()
            .expect("path has a name")
            .to_string_lossy()
            .into_owned()
    }

    fn exists(&self) -> bool {
        std::fs::symlink_metadata(&self.0).is_ok()
    }
}

impl Drop for MustNotExist {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host path removed with everything below it on drop.
struct RemoveTree(PathBuf);

impl Drop for RemoveTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a shell command line as root in the sandbox and checks that it
/// succeeded.
async fn root_sh(sbx: &Sandbox, line: &str) -> soulbox_core::Output {
    let output = sbx
        .shell(line)
        .user("root")
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {line:?} as root: {e}"));
    assert!(
        output.status.success(),
        "{line:?} as root failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a shell command line as `user` and checks that it succeeded.
async fn user_sh(sbx: &Sandbox, line: &str) -> soulbox_core::Output {
    let output = sh(sbx, line).await;
    assert!(
        output.status.success(),
        "{line:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Reads a whole FileReader with reads of at most `step` bytes.
async fn read_all_in_steps(mut reader: soulbox_core::FileReader, step: usize) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; step];
    loop {
        let n = reader.read(&mut buf).await.expect("read from the stream");
        if n == 0 {
            return data;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// Size of the block that [`PatternReader`] repeats.
const PATTERN_BLOCK: usize = 1 << 20;

/// `len` deterministic bytes: a 1 MiB pseudo-random block, repeated, with
/// the block's number in its first 8 bytes so that no two blocks are
/// equal. Producing them costs a memcpy per byte.
struct PatternReader {
    block: Vec<u8>,
    len: u64,
    position: u64,
}

impl PatternReader {
    fn new(len: u64) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = Vec::with_capacity(PATTERN_BLOCK);
        while block.len() < PATTERN_BLOCK {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            block.extend_from_slice(&state.to_le_bytes());
        }
        Self {
            block,
            len,
            position: 0,
        }
    }

    /// Fills `out` with the bytes from `self.position` on; returns how many.
    fn fill(&mut self, out: &mut [u8]) -> usize {
        let offset = (self.position % PATTERN_BLOCK as u64) as usize;
        let index = (self.position / PATTERN_BLOCK as u64).to_le_bytes();
        let left = usize::try_from(self.len - self.position).unwrap_or(usize::MAX);
        let n = out.len().min(PATTERN_BLOCK - offset).min(left);
        out[..n].copy_from_slice(&self.block[offset..offset + n]);
        let header_end = (offset + n).min(8);
        if offset < header_end {
            out[..header_end - offset].copy_from_slice(&index[offset..header_end]);
        }
        self.position += n as u64;
        n
    }

    /// Writes every byte to `out`, as the sandbox receives them.
    fn write_all_to(mut self, out: &mut impl Write) -> std::io::Result<()> {
        let mut buf = vec![0u8; PATTERN_BLOCK];
        loop {
            let n = self.fill(&mut buf);
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n])?;
        }
    }
}

impl AsyncRead for PatternReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = this.fill(buf.initialize_unfilled());
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// The host's sha256sum, fed through its stdin.
struct HostSha256 {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
}

impl HostSha256 {
    fn start() -> Self {
        let mut child = std::process::Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sha256sum on the host");
        let stdin = child.stdin.take().expect("sha256sum stdin is piped");
        Self { child, stdin }
    }

    fn finish(self) -> String {
        drop(self.stdin);
        let output = self.child.wait_with_output().expect("wait for sha256sum");
        assert!(output.status.success(), "host sha256sum failed");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .next()
            .expect("sha256sum prints a hash")
            .to_string()
    }
}

impl Write for HostSha256 {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.stdin.write(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.flush()
    }
}

/// Returns the value in kB of a `Vm...:` line of /proc/self/status.
fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("/proc/self/status has no {field} line"))
}

/// Returns the entry with this path, or panics showing the paths listed.
fn entry<'a>(entries: &'a [EntryInfo], path: &str) -> &'a EntryInfo {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry {path} in {:?}", paths_of(entries)))
}

fn paths_of(entries: &[EntryInfo]) -> Vec<&str> {
    entries.iter().map(|e| e.path.as_str()).collect()
}

/// Reads events until every `(kind, name)` in `expected` was seen or
/// `limit` passed; returns all events read.
async fn collect_events(
    watcher: &mut Watcher,
    expected: &[(FilesystemEventKind, &str)],
    limit: Duration,
) -> Vec<FilesystemEvent> {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<FilesystemEvent> = Vec::new();
    let all_seen = |seen: &[FilesystemEvent]| {
        expected
            .iter()
            .all(|(kind, name)| seen.iter().any(|e| e.kind == *kind && e.name == *name))
    };
    while !all_seen(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watcher.next()).await {
            Ok(Some(Ok(event))) => seen.push(event),
            Ok(Some(Err(e))) => panic!("watch failed: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

/// Reads events for `quiet` and returns them; for checking that nothing
/// arrives.
async fn events_within(watcher: &mut Watcher, quiet: Duration) -> Vec<FilesystemEvent> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watcher.next()).await {
            Ok(Some(Ok(event))) => seen.push(event),
            Ok(Some(Err(e))) => panic!("watch failed: {e}"),
            Ok(None) | Err(_) => return seen,
        }
    }
}

// Round trips, names and idempotent operations.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_round_trip_streamed() {
    if !require_root("binary_round_trip_streamed") {
        return;
    }
    let sbx = sandbox().await;
    let data: Vec<u8> = (0..=255).collect::<Vec<u8>>().repeat(1000);
    let written = sbx
        .files()
        .write_from("bin/streamed", &data[..])
        .await
        .expect("write_from 256000 bytes");
    assert_eq!(written, data.len() as u64, "bytes reported by write_from");

    let reader = sbx
        .files()
        .read_stream("bin/streamed")
        .await
        .expect("open a stream");
    assert_eq!(reader.size(), data.len() as u64, "size of the stream");
    let back = read_all_in_steps(reader, 4096).await;
    assert_eq!(back.len(), data.len(), "length after a streamed round trip");
    assert!(back == data, "bytes changed in a streamed round trip");
    let whole = sbx.files().read("bin/streamed").await.expect("read whole");
    assert!(whole == data, "read of a file written with write_from");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_chunk_stream_round_trip() {
    if !require_root("multi_chunk_stream_round_trip") {
        return;
    }
    let sbx = sandbox().await;
    // Three and a half chunks, so that a short last chunk follows full ones.
    let len = 3 * PATTERN_BLOCK + PATTERN_BLOCK / 2;
    let mut expected = vec![0u8; len];
    let mut pattern = PatternReader::new(len as u64);
    let mut filled = 0;
    while filled < len {
        filled += pattern.fill(&mut expected[filled..]);
    }
    sbx.files()
        .write_from("chunks", PatternReader::new(len as u64))
        .await
        .expect("write 3.5 MiB from a reader");
    let reader = sbx
        .files()
        .read_stream("chunks")
        .await
        .expect("open a stream");
    let back = read_all_in_steps(reader, 100_000).await;
    assert_eq!(back.len(), len, "length after the round trip");
    assert!(back == expected, "bytes changed across chunk boundaries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_streamed() {
    if !require_root("empty_file_streamed") {
        return;
    }
    let sbx = sandbox().await;
    sbx.files()
        .write("empty", Vec::new())
        .await
        .expect("write an empty file");
    let reader = sbx
        .files()
        .read_stream("empty")
        .await
        .expect("open a stream");
    assert_eq!(reader.size(), 0, "size of an empty stream");
    let back = read_all_in_steps(reader, 4096).await;
    assert!(back.is_empty(), "an empty file streamed as {back:?}");
    let info = sbx
        .files()
        .stat("empty")
        .await
        .expect("stat the empty file");
    assert_eq!(info.size, 0, "stat size of the empty file");

    user_sh(&sbx, "touch touched").await;
    let reader = sbx
        .files()
        .read_stream("touched")
        .await
        .expect("open a stream on a touched file");
    let touched = read_all_in_steps(reader, 4096).await;
    assert!(touched.is_empty(), "a touched file streamed as {touched:?}");

    let written = sbx
        .files()
        .write_from("from-empty", tokio::io::empty())
        .await
        .expect("write_from an empty reader");
    assert_eq!(written, 0, "bytes written from an empty reader");
    let size = sh(&sbx, "stat -c %s /home/user/from-empty").await;
    assert_eq!(stdout(&size), "0\n", "size of a file written from nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_names_full_cycle() {
    if !require_root("unusual_names_full_cycle") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    let path = "dir with space/ünï😀.txt";
    files
        .write(path, "odd")
        .await
        .expect("write an unusual name");

    let listing = files
        .list("dir with space", 1)
        .await
        .expect("list the directory");
    assert_eq!(listing.len(), 1, "entries: {:?}", paths_of(&listing));
    assert_eq!(listing[0].name, "ünï😀.txt", "listed name");
    assert_eq!(
        listing[0].path, "/home/user/dir with space/ünï😀.txt",
        "listed path"
    );
    assert_eq!(files.read(path).await.expect("read it"), b"odd", "contents");

    let renamed = "dir with space/ñew 名前 ✓.txt";
    let info = files.rename(path, renamed).await.expect("rename it");
    assert_eq!(info.name, "ñew 名前 ✓.txt", "name after the rename");
    assert!(
        !files.exists(path).await.expect("exists old"),
        "old name remains"
    );
    assert_eq!(
        files.read(renamed).await.expect("read renamed"),
        b"odd",
        "contents after rename"
    );
    let inside = sh(&sbx, "cat '/home/user/dir with space/ñew 名前 ✓.txt'").await;
    assert_eq!(stdout(&inside), "odd", "the command sees the renamed file");

    files.remove(renamed).await.expect("remove it");
    assert!(
        !files.exists(renamed).await.expect("exists renamed"),
        "file remains after remove"
    );
    files
        .remove("dir with space")
        .await
        .expect("remove the directory");
    assert!(
        !files.exists("dir with space").await.expect("exists dir"),
        "directory remains"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_operations() {
    if !require_root("idempotent_operations") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    files
        .remove("never-existed")
        .await
        .expect("remove of a missing path");
    files
        .remove("missing-dir/below/it")
        .await
        .expect("remove below a missing directory");
    files.write("plain", "x").await.expect("write plain");
    files
        .remove("plain/below")
        .await
        .expect("remove below a regular file");

    assert!(
        files.make_dir("made").await.expect("make_dir"),
        "first make_dir"
    );
    assert!(
        !files.make_dir("made").await.expect("make_dir again"),
        "second make_dir"
    );
    match files.make_dir("plain").await {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains("plain"),
                "message names the path: {message}"
            )
        }
        other => panic!("make_dir over a file should be InvalidArgument, got {other:?}"),
    }
    let nested = files
        .make_dir("a/b/c")
        .await
        .expect("make nested directories");
    assert!(nested, "make_dir of nested directories");
    let modes = sh(&sbx, "stat -c '%a %U' a a/b a/b/c").await;
    assert_eq!(
        stdout(&modes),
        "755 user\n755 user\n755 user\n",
        "new directories"
    );

    match files.list("made", 0).await {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains("depth"),
                "message names the depth: {message}"
            )
        }
        other => panic!("list with depth 0 should be InvalidArgument, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_arguments_rejected() {
    if !require_root("path_arguments_rejected") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    let invalid = |result: Result<(), Error>, what: &str| {
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{what} should be InvalidArgument, got {result:?}"
        )
    };
    invalid(files.read("").await.map(drop), "read of an empty path");
    invalid(files.write("a\0b", "x").await, "write of a path with NUL");
    invalid(files.write("/", "x").await, "write of the root");
    invalid(
        files.write("dir/..", "x").await,
        "write of a path ending in ..",
    );
    invalid(files.remove("/").await, "remove of the root");
    invalid(files.remove("x/.").await, "remove of a path ending in .");
    invalid(files.rename("/", "x").await.map(drop), "rename of the root");
    invalid(
        files.write_with_mode("m", "x", 0o4755).await,
        "write_with_mode with a setuid bit",
    );
    invalid(
        files.user("nobody").read("x").await.map(drop),
        "an unknown user",
    );
    let nothing = sh(&sbx, "ls -A /home/user").await;
    assert_eq!(stdout(&nothing), "", "rejected calls created something");
}

// Listing, describing, removing and renaming.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_depths_and_entry_fields() {
    if !require_root("list_depths_and_entry_fields") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    let before = std::time::SystemTime::now() - Duration::from_secs(5);
    files
        .write("t/a.txt", "hello")
        .await
        .expect("write t/a.txt");
    files
        .write_with_mode("t/run.sh", "#!/bin/sh\n", 0o755)
        .await
        .expect("write t/run.sh");
    files
        .write("t/sub/deep/f", "x")
        .await
        .expect("write t/sub/deep/f");
    user_sh(
        &sbx,
        "ln -s a.txt t/link && ln -s /etc t/etc-link && mkfifo t/fifo",
    )
    .await;

    let one = files.list("t", 1).await.expect("list depth 1");
    assert_eq!(
        paths_of(&one),
        vec![
            "/home/user/t/a.txt",
            "/home/user/t/etc-link",
            "/home/user/t/fifo",
            "/home/user/t/link",
            "/home/user/t/run.sh",
            "/home/user/t/sub",
        ],
        "depth 1 lists direct entries only"
    );
    let a = entry(&one, "/home/user/t/a.txt");
    assert_eq!(a.name, "a.txt", "name");
    assert_eq!(a.kind, FileType::File, "kind of a file");
    assert_eq!(a.size, 5, "size");
    assert_eq!(a.mode, 0o644, "mode");
    assert_eq!(a.permissions, "rw-r--r--", "permissions");
    assert_eq!(a.owner, "user", "owner");
    assert_eq!(a.group, "user", "group");
    assert!(
        a.modified > before,
        "modified time {:?} is too old",
        a.modified
    );
    assert_eq!(a.symlink_target, None, "a file has no symlink target");
    assert_eq!(
        entry(&one, "/home/user/t/run.sh").permissions,
        "rwxr-xr-x",
        "script permissions"
    );
    let link = entry(&one, "/home/user/t/link");
    assert_eq!(link.kind, FileType::Symlink, "a symlink is listed as one");
    assert_eq!(
        link.symlink_target.as_deref(),
        Some("a.txt"),
        "symlink target"
    );
    assert_eq!(
        entry(&one, "/home/user/t/sub").kind,
        FileType::Dir,
        "kind of a directory"
    );
    assert_eq!(
        entry(&one, "/home/user/t/fifo").kind,
        FileType::Other,
        "kind of a FIFO"
    );

    let three = files.list("t", 3).await.expect("list depth 3");
    let paths = paths_of(&three);
    assert!(
        paths.contains(&"/home/user/t/sub/deep"),
        "depth 3: {paths:?}"
    );
    assert!(
        paths.contains(&"/home/user/t/sub/deep/f"),
        "depth 3: {paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("/home/user/t/etc-link/")),
        "a symlinked directory was descended into: {paths:?}"
    );
    let two = files.list("t", 2).await.expect("list depth 2");
    assert!(
        !paths_of(&two).contains(&"/home/user/t/sub/deep/f"),
        "depth 2 went too deep: {:?}",
        paths_of(&two)
    );

    let root = files.list("/", 1).await.expect("list the root");
    assert!(
        paths_of(&root).contains(&"/etc"),
        "root listing: {:?}",
        paths_of(&root)
    );

    match files.list("t/a.txt", 1).await {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("listing a file should be InvalidArgument, got {other:?}"),
    }
    match files.list("nope", 1).await {
        Err(Error::FileNotFound { path }) => assert_eq!(path, "nope", "path in the error"),
        other => panic!("listing a missing path should be FileNotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_and_exists() {
    if !require_root("stat_and_exists") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    files
        .write("s/file", "12345678")
        .await
        .expect("write s/file");
    user_sh(&sbx, "ln -s file s/link && ln -s /missing s/dangling").await;

    let file = files.stat("s/file").await.expect("stat a file");
    assert_eq!(file.kind, FileType::File, "kind");
    assert_eq!(file.size, 8, "size");
    assert_eq!(file.path, "/home/user/s/file", "path");
    assert_eq!(file.name, "file", "name");
    let link = files
        .get_info("s/link")
        .await
        .expect("get_info of a symlink");
    assert_eq!(
        link.kind,
        FileType::Symlink,
        "stat does not follow a symlink"
    );
    assert_eq!(link.symlink_target.as_deref(), Some("file"), "target");
    let dangling = files
        .stat("s/dangling")
        .await
        .expect("stat a dangling symlink");
    assert_eq!(
        dangling.symlink_target.as_deref(),
        Some("/missing"),
        "dangling target"
    );
    let dir = files.stat("/home/user/s/").await.expect("stat a directory");
    assert_eq!(dir.kind, FileType::Dir, "kind of a directory");
    assert_eq!(
        dir.name, "s",
        "name of a directory given with a trailing slash"
    );
    let root = files.stat("/").await.expect("stat the root");
    assert_eq!(
        (root.name.as_str(), root.path.as_str()),
        ("/", "/"),
        "the root"
    );
    let hostname = files
        .stat("/etc/hostname")
        .await
        .expect("stat /etc/hostname");
    assert_eq!(hostname.owner, "root", "owner of /etc/hostname");

    match files.stat("s/none").await {
        Err(Error::FileNotFound { path }) => assert_eq!(path, "s/none", "path in the error"),
        other => panic!("stat of a missing path should be FileNotFound, got {other:?}"),
    }
    assert!(
        files.exists("s/file").await.expect("exists file"),
        "file exists"
    );
    assert!(
        files.exists("s").await.expect("exists dir"),
        "directory exists"
    );
    assert!(
        files.exists("s/dangling").await.expect("exists dangling"),
        "dangling link exists"
    );
    assert!(
        !files.exists("s/none").await.expect("exists missing"),
        "missing path"
    );
    assert!(
        !files
            .exists("s/file/below")
            .await
            .expect("exists below file"),
        "path below a file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_trees_and_links() {
    if !require_root("remove_trees_and_links") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    user_sh(
        &sbx,
        "mkdir -p keep/inner tree/a/b/c && echo k > keep/inner/k && echo 1 > tree/one \
         && echo 2 > tree/a/b/c/two && ln -s ../keep tree/a/to-keep && ln -s /etc tree/etc \
         && ln -s keep keep-link && mkfifo tree/a/fifo",
    )
    .await;
    files.remove("tree").await.expect("remove a tree");
    assert!(
        !files.exists("tree").await.expect("exists tree"),
        "tree remains"
    );
    let kept = files
        .read("keep/inner/k")
        .await
        .expect("read through the kept tree");
    assert_eq!(kept, b"k\n", "a symlink in the removed tree was followed");
    let etc = sh(&sbx, "ls /etc/hostname").await;
    assert!(
        etc.status.success(),
        "removing tree/etc removed /etc/hostname"
    );

    files
        .remove("keep-link")
        .await
        .expect("remove a symlink to a directory");
    assert!(
        !files.exists("keep-link").await.expect("exists link"),
        "link remains"
    );
    assert!(
        files.exists("keep/inner/k").await.expect("exists k"),
        "link target was removed"
    );

    let deep = "d/".repeat(300);
    files
        .write(&format!("{deep}leaf"), "x")
        .await
        .expect("write 300 levels deep");
    files.remove("d").await.expect("remove 300 levels");
    assert!(
        !files.exists("d").await.expect("exists d"),
        "deep tree remains"
    );

    files.write("one-file", "x").await.expect("write one-file");
    files.remove("one-file").await.expect("remove one file");
    assert!(
        !files.exists("one-file").await.expect("exists one-file"),
        "file remains"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_cases() {
    if !require_root("rename_cases") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    files.write("r/a", "A").await.expect("write r/a");
    files.write("r/b", "B").await.expect("write r/b");
    files.make_dir("r/dir").await.expect("make r/dir");
    files.write("r/full/x", "x").await.expect("write r/full/x");

    let info = files.rename("r/a", "r/moved").await.expect("rename a file");
    assert_eq!(info.path, "/home/user/r/moved", "path of the renamed file");
    assert_eq!(
        files.read("r/moved").await.expect("read moved"),
        b"A",
        "contents moved"
    );
    files
        .rename("r/moved", "r/b")
        .await
        .expect("rename over a file");
    assert_eq!(
        files.read("r/b").await.expect("read b"),
        b"A",
        "the target was replaced"
    );
    let dir = files
        .rename("r/dir", "r/dir2")
        .await
        .expect("rename a directory");
    assert_eq!(dir.kind, FileType::Dir, "kind of the renamed directory");

    user_sh(&sbx, "ln -s b r/link").await;
    let link = files
        .rename("r/link", "r/link2")
        .await
        .expect("rename a symlink");
    assert_eq!(link.kind, FileType::Symlink, "a symlink is renamed itself");
    assert_eq!(
        files.read("r/b").await.expect("read b"),
        b"A",
        "the target stayed"
    );

    match files.rename("r/none", "r/x").await {
        Err(Error::FileNotFound { path }) => assert_eq!(path, "r/none", "path in the error"),
        other => panic!("renaming a missing path should be FileNotFound, got {other:?}"),
    }
    match files.rename("r/b", "r/no-dir/x").await {
        Err(Error::FileNotFound { path }) => assert_eq!(path, "r/no-dir/x", "path in the error"),
        other => panic!("renaming into a missing directory should be FileNotFound, got {other:?}"),
    }
    let invalid = [
        ("r/b", "/tmp/b", "across mounts"),
        ("r", "r/dir2/r", "into itself"),
        ("r/b", "r/dir2", "a file over a directory"),
        ("r/dir2", "r/full", "over a directory that is not empty"),
    ];
    for (from, to, case) in invalid {
        let result = files.rename(from, to).await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "rename {case} should be InvalidArgument, got {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_many_files() {
    if !require_root("write_many_files") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    files
        .write_many([
            ("m/one", &b"1"[..]),
            ("m/sub/two", b"22"),
            ("/tmp/three", b"333"),
        ])
        .await
        .expect("write three files");
    let cat = sh(&sbx, "cat m/one m/sub/two /tmp/three").await;
    assert_eq!(stdout(&cat), "122333", "contents of the files");

    let rejected = files
        .write_many(vec![("m/four", b"4".to_vec()), ("", b"5".to_vec())])
        .await;
    assert!(
        matches!(rejected, Err(Error::InvalidArgument(_))),
        "an empty path should be InvalidArgument, got {rejected:?}"
    );
    assert!(
        !files.exists("m/four").await.expect("exists m/four"),
        "a file was written before the invalid path was rejected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_replaces_and_keeps_mode() {
    if !require_root("write_replaces_and_keeps_mode") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    files
        .write_with_mode("script", "long original contents", 0o700)
        .await
        .expect("write a script");
    files.write("script", "short").await.expect("overwrite it");
    assert_eq!(
        files.read("script").await.expect("read"),
        b"short",
        "old bytes remain"
    );
    let info = files.stat("script").await.expect("stat");
    assert_eq!(info.mode, 0o700, "an existing file keeps its mode");

    user_sh(&sbx, "ln -s script alias").await;
    files
        .write("alias", "through")
        .await
        .expect("write through a symlink");
    assert_eq!(
        files.read("script").await.expect("read"),
        b"through",
        "the target was written"
    );
    assert_eq!(
        files.stat("alias").await.expect("stat alias").kind,
        FileType::Symlink,
        "the symlink stays a symlink"
    );
    match files.write("/usr/new-file", "x").await {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("read-only"), "message: {message}")
        }
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("writing to /usr should fail, got {other:?}"),
    }
}

/// The file stays writable after a kill, into a layer nothing can reach,
/// so a stream that outlives its sandbox must still fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_from_after_kill_fails() {
    if !require_root("write_from_after_kill_fails") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    let (mut source, reader) = tokio::io::duplex(64 * 1024);
    let write = tokio::spawn(async move { files.write_from("streamed", reader).await });
    source
        .write_all(&[b'a'; 100_000])
        .await
        .expect("feed the first bytes");

    sbx.kill().await.expect("kill the sandbox");
    // The rest may find the stream gone if write_from already failed.
    let _ = source.write_all(&[b'b'; 100_000]).await;
    drop(source);
    let written = within_limit("write_from after the kill", write)
        .await
        .expect("join write_from");

    assert!(
        matches!(&written, Err(Error::SandboxNotRunning { id }) if id == sbx.id()),
        "write_from across a kill should be SandboxNotRunning, got {written:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_from_cleans_up() {
    if !require_root("write_from_cleans_up") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();

    /// Gives `limit` bytes, then fails.
    struct FailingReader(u64);
    impl AsyncRead for FailingReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.0 == 0 {
                return Poll::Ready(Err(std::io::Error::other("source broke")));
            }
            let n = (buf.remaining() as u64).min(self.0) as usize;
            buf.put_slice(&vec![b'z'; n]);
            self.0 -= n as u64;
            Poll::Ready(Ok(()))
        }
    }
    let failed = files.write_from("broken", FailingReader(3 << 20)).await;
    assert!(
        matches!(failed, Err(Error::Os { .. })),
        "a failing reader should be an Os error, got {failed:?}"
    );
    assert!(
        !files.exists("broken").await.expect("exists"),
        "partial file remains"
    );

    // A reader that never ends: the write is cancelled by a timeout.
    let endless = PatternReader::new(u64::MAX).chain(tokio::io::empty());
    let slow = tokio::io::AsyncReadExt::take(endless, 5 << 20).chain(Pending);
    let cancelled = tokio::time::timeout(
        Duration::from_millis(500),
        files.write_from("cancelled", slow),
    )
    .await;
    assert!(cancelled.is_err(), "the endless write should time out");
    let deadline = Instant::now() + Duration::from_secs(5);
    while files.exists("cancelled").await.expect("exists") {
        assert!(
            Instant::now() < deadline,
            "a cancelled write left its file behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    files
        .write("kept", "old contents")
        .await
        .expect("write kept");
    let failed = files.write_from("kept", FailingReader(10)).await;
    assert!(failed.is_err(), "a failing reader should fail the write");
    let kept = files.read("kept").await.expect("read kept");
    assert!(
        kept.is_empty(),
        "a failed write over a file left {} bytes",
        kept.len()
    );
}

/// A reader that never becomes ready.
struct Pending;

impl AsyncRead for Pending {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_tree() {
    if !require_root("copy_in_tree") {
        return;
    }
    let host = PathBuf::from("/tmp").join(unique_name("copy_in_tree", "source"));
    let _cleanup = RemoveTree(host.clone());
    std::fs::create_dir_all(host.join("sub/deeper")).expect("create host tree");
    std::fs::write(host.join("top.txt"), "top").expect("write top.txt");
    std::fs::write(host.join("sub/deeper/big.bin"), vec![7u8; 3 << 20]).expect("write big.bin");
    std::fs::write(host.join("run.sh"), "#!/bin/sh\necho ran\n").expect("write run.sh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod run.sh");
    std::os::unix::fs::symlink("/etc/shadow", host.join("shadow-link")).expect("symlink");

    let sbx = sandbox().await;
    let summary = sbx
        .files()
        .copy_in(&host, "copied")
        .await
        .expect("copy the tree in");
    assert_eq!(summary.files, 3, "files copied: {summary:?}");
    assert_eq!(summary.directories, 3, "directories copied: {summary:?}");
    assert_eq!(
        summary.bytes,
        3 + (3 << 20) + 19,
        "bytes copied: {summary:?}"
    );
    assert_eq!(
        summary.skipped,
        vec![host.join("shadow-link")],
        "skipped entries"
    );

    let run = sh(
        &sbx,
        "copied/run.sh && stat -c '%a %U' copied/run.sh copied/sub/deeper/big.bin",
    )
    .await;
    assert_eq!(
        stdout(&run),
        "ran\n755 user\n644 user\n",
        "script, modes and owners"
    );
    let big = sbx
        .files()
        .read("copied/sub/deeper/big.bin")
        .await
        .expect("read big.bin");
    assert!(big == vec![7u8; 3 << 20], "big.bin changed in the copy");
    assert!(
        !sbx.files()
            .exists("copied/shadow-link")
            .await
            .expect("exists"),
        "a host symlink was copied"
    );

    let single = sbx
        .files()
        .copy_in(host.join("top.txt"), "/tmp/single.txt")
        .await
        .expect("copy one file");
    assert_eq!(single.files, 1, "one file copied");
    assert_eq!(
        sbx.files().read("/tmp/single.txt").await.expect("read"),
        b"top",
        "contents"
    );
    let missing = sbx.files().copy_in(host.join("none"), "x").await;
    assert!(
        matches!(missing, Err(Error::HostFile { .. })),
        "a missing host path should be HostFile, got {missing:?}"
    );
}

/// Rounds of [`copy_in_during_kill`]. Each kills one sandbox while a copy
/// into it runs.
const KILL_DURING_COPY_ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_during_kill() {
    if !require_root("copy_in_during_kill") {
        return;
    }
    // 40 directories of 100 small files: long enough to copy that the kill
    // lands in the middle.
    let host = PathBuf::from("/tmp").join(unique_name("copy_in_during_kill", "source"));
    let _cleanup = RemoveTree(host.clone());
    for dir in 0..40 {
        let dir = host.join(format!("d{dir:02}"));
        std::fs::create_dir_all(&dir).expect("create a host directory");
        for file in 0..100 {
            std::fs::write(dir.join(format!("f{file:03}")), "x").expect("write a host file");
        }
    }

    let mut interrupted = 0;
    for round in 0..KILL_DURING_COPY_ROUNDS {
        let sbx = sandbox().await;
        let files = sbx.files();
        let source = host.clone();
        let copy = tokio::spawn(async move { files.copy_in(&source, "copied").await });
        // The copy makes the top directory first, then fills it.
        let deadline = Instant::now() + STEP_LIMIT;
        while !sbx.files().exists("copied").await.unwrap_or(false) {
            assert!(
                Instant::now() < deadline,
                "round {round}: the copy did not start within {STEP_LIMIT:?}"
            );
            tokio::task::yield_now().await;
        }
        sbx.kill().await.expect("kill the sandbox");
        let copied = within_limit("the copy after the kill", copy)
            .await
            .expect("the copy task panicked");
        match copied {
            // The copy finished before the kill took effect.
            Ok(_) => {}
            Err(Error::SandboxNotRunning { .. }) => interrupted += 1,
            Err(other) => panic!(
                "round {round}: a copy cut off by the kill should be SandboxNotRunning, \
                 got {other:?}"
            ),
        }
    }
    assert!(
        interrupted > 0,
        "no kill in {KILL_DURING_COPY_ROUNDS} rounds landed during the copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_tree() {
    if !require_root("copy_out_tree") {
        return;
    }
    let host = PathBuf::from("/tmp").join(unique_name("copy_out_tree", "copy"));
    let _cleanup = RemoveTree(host.clone());
    let single = PathBuf::from("/tmp").join(unique_name("copy_out_tree", "single"));
    let _cleanup_single = RemoveTree(single.clone());
    let sbx = sandbox().await;
    user_sh(
        &sbx,
        "mkdir -p out/sub/deeper && echo a > out/a && chmod 750 out/a \
         && head -c 3145728 /dev/urandom > out/sub/deeper/big && ln -s /etc/passwd out/link \
         && ln -s /tmp out/sub/tmp-link && mkfifo out/fifo",
    )
    .await;
    let summary = sbx
        .files()
        .copy_out("out", &host)
        .await
        .expect("copy the tree out");
    assert_eq!(summary.files, 2, "files copied: {summary:?}");
    assert_eq!(summary.directories, 3, "directories copied: {summary:?}");
    assert_eq!(summary.bytes, 2 + (3 << 20), "bytes copied: {summary:?}");
    let mut skipped = summary.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        vec![
            PathBuf::from("/home/user/out/fifo"),
            PathBuf::from("/home/user/out/link"),
            PathBuf::from("/home/user/out/sub/tmp-link"),
        ],
        "skipped entries"
    );
    assert_eq!(
        std::fs::read(host.join("a")).expect("read a"),
        b"a\n",
        "contents of a"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(host.join("a"))
        .expect("stat a")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "mode of a on the host");
    let inside = sbx
        .files()
        .read("out/sub/deeper/big")
        .await
        .expect("read big inside");
    let outside = std::fs::read(host.join("sub/deeper/big")).expect("read big on the host");
    assert!(inside == outside, "big changed in the copy");
    assert!(
        std::fs::symlink_metadata(host.join("link")).is_err(),
        "a sandbox symlink was copied to the host"
    );

    let one = sbx
        .files()
        .copy_out("out/a", &single)
        .await
        .expect("copy one file out");
    assert_eq!(one.files, 1, "one file copied");
    assert_eq!(
        std::fs::read(&single).expect("read the copy"),
        b"a\n",
        "contents"
    );

    match sbx.files().copy_out("none", &single).await {
        Err(Error::FileNotFound { path }) => assert_eq!(path, "none", "path in the error"),
        other => panic!("copying out a missing path should be FileNotFound, got {other:?}"),
    }
    sbx.files()
        .user("root")
        .write_with_mode("/home/user/secret", "s", 0o600)
        .await
        .expect("write a root-only file");
    let denied = sbx.files().copy_out("secret", &single).await;
    assert!(
        matches!(denied, Err(Error::PermissionDenied { .. })),
        "user copying out a root-only file should be PermissionDenied, got {denied:?}"
    );
    assert_eq!(
        std::fs::read(&single).expect("read the copy"),
        b"a\n",
        "the copy changed"
    );
}

/// Names below a copy_out's top come from the sandbox, so a host symlink
/// planted under such a name in the destination must not be followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_skips_host_symlinks() {
    if !require_root("copy_out_skips_host_symlinks") {
        return;
    }
    let marker = HostMarker::create("copy_out_skips_host_symlinks");
    let marker_dir = HostMarkerDir::create("copy_out_skips_host_symlinks");
    let host = PathBuf::from("/tmp").join(unique_name("copy_out_links", "copy"));
    let _cleanup = RemoveTree(host.clone());
    std::fs::create_dir(&host).expect("create the host destination");
    std::os::unix::fs::symlink(&marker.path, host.join("a")).expect("plant a file link");
    std::os::unix::fs::symlink(&marker_dir.path, host.join("sub")).expect("plant a dir link");
    let sbx = sandbox().await;
    user_sh(
        &sbx,
        "mkdir -p out/sub && echo evil > out/a && echo evil > out/sub/x",
    )
    .await;
    let copied = sbx.files().copy_out("out", &host).await;
    assert!(
        matches!(copied, Err(Error::HostFile { .. })),
        "copying over host symlinks should be HostFile, got {copied:?}"
    );
    assert_eq!(
        marker.read(),
        marker.contents,
        "the host file behind a link changed"
    );
    assert!(
        marker_dir.is_intact(),
        "the host directory behind a link changed"
    );
    assert!(
        !marker_dir.path.join("x").exists(),
        "copy_out wrote into a symlinked host directory"
    );
}

/// A FIFO at the destination would block an open for writing until a
/// reader came, so copy_out must fail at once instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_rejects_host_fifo() {
    if !require_root("copy_out_rejects_host_fifo") {
        return;
    }
    let host = PathBuf::from("/tmp").join(unique_name("copy_out_fifo", "copy"));
    let _cleanup = RemoveTree(host.clone());
    std::fs::create_dir(&host).expect("create the host destination");

    let fifo = host.join("fifo");
    let fifo_c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `fifo_c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0, "mkfifo");

    let sbx = sandbox().await;
    user_sh(&sbx, "echo data > single").await;
    let copied = tokio::time::timeout(
        Duration::from_secs(10),
        sbx.files().copy_out("single", &fifo),
    )
    .await;
    let Ok(copied) = copied else {
        use std::os::unix::fs::OpenOptionsExt;
        // A reader releases the blocked open, so that the test fails
        // instead of hanging at the runtime's shutdown.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        panic!("copy_out to a host FIFO blocked for 10 s");
    };

    assert!(
        matches!(copied, Err(Error::HostFile { .. })),
        "copying onto a host FIFO should be HostFile, got {copied:?}"
    );
}

/// `soulbox run --copy` goes through `Files::copy_in`. As uid 65534 the
/// sandbox is rootless: its only user is root, which is the caller, so no
/// credentials switch and everything copied belongs to sandbox root.
#[test]
fn rootless_copy_in_through_cli() {
    if !require_root("rootless_copy_in_through_cli") {
        return;
    }
    let binary = soulbox_bin();
    if !binary.exists() {
        // `cargo test --workspace` builds soulbox-cli's binary; a run of
        // this package alone may not.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} was not built",
            binary.display()
        );
        eprintln!(
            "rootless_copy_in_through_cli: skipped, {} not built",
            binary.display()
        );
        return;
    }
    let host = PathBuf::from("/tmp").join(unique_name("rootless_copy_in", "source"));
    let _cleanup = RemoveTree(host.clone());
    std::fs::create_dir_all(host.join("sub")).expect("create the host tree");
    std::fs::write(host.join("sub/a.txt"), "copied rootless\n").expect("write a.txt");
    std::fs::write(host.join("run.sh"), "#!/bin/sh\necho script ran\n").expect("write run.sh");
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        (host.clone(), 0o755),
        (host.join("sub"), 0o755),
        (host.join("run.sh"), 0o755),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::os::unix::fs::symlink("/etc/shadow", host.join("link")).expect("plant a symlink");

    // uid 65534 may not reach the build directory (it can sit below a
    // home directory of mode 0700), so it runs a copy in the tree above.
    let reachable = host.join("soulbox");
    copy_program(&binary, &reachable, 0o755);
    let copy = format!("{}:/home/user/in", host.display());
    let output = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .args(["env", "-i", "PATH=/usr/bin:/bin"])
        .arg(&reachable)
        .args(["run", "--copy", &copy, "--", "sh", "-c"])
        .arg("cd /root && cat /home/user/in/sub/a.txt && /home/user/in/run.sh && stat -c '%u %a %n' /home/user/in /home/user/in/sub/a.txt /home/user/in/run.sh && ls -A /home/user/in")
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "soulbox run as uid 65534 failed: {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "copied rootless\nscript ran\n0 755 /home/user/in\n0 644 /home/user/in/sub/a.txt\n\
         0 755 /home/user/in/run.sh\nrun.sh\nsoulbox\nsub\n",
        "contents, owners and modes inside the rootless sandbox"
    );
    assert!(
        stderr.contains("skipped") && stderr.contains("link"),
        "the skipped symlink should be reported: {stderr}"
    );
}

// Users, ownership and permissions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_and_user_ownership() {
    if !require_root("root_and_user_ownership") {
        return;
    }
    let sbx = sandbox().await;
    let root = sbx.files().user("root");
    root.write("/home/user/by-root", "r")
        .await
        .expect("write as root");
    root.make_dir("/opt/by-root/dir")
        .await
        .expect("make_dir as root");
    sbx.files()
        .write("by-user", "u")
        .await
        .expect("write as user");
    let owners = sh(&sbx, "stat -c '%U:%G' by-root /opt/by-root/dir by-user").await;
    assert_eq!(
        stdout(&owners),
        "root:root\nroot:root\nuser:user\n",
        "owners"
    );
    assert_eq!(
        root.stat("/home/user/by-root").await.expect("stat").owner,
        "root",
        "owner reported by stat"
    );
    let explicit = sbx.files().user("user");
    explicit
        .write("explicit", "e")
        .await
        .expect("write as explicit user");
    let owner = sh(&sbx, "stat -c %U explicit").await;
    assert_eq!(stdout(&owner), "user\n", "owner with .user(\"user\")");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_cannot_reach_root_files() {
    if !require_root("user_cannot_reach_root_files") {
        return;
    }
    let sbx = sandbox().await;
    let root = sbx.files().user("root");
    let user = sbx.files();
    root.write_with_mode("/home/user/secret", "top secret", 0o600)
        .await
        .expect("write a root-only file");
    let info = root
        .stat("/home/user/secret")
        .await
        .expect("stat the secret");
    assert_eq!(
        (info.owner.as_str(), info.mode),
        ("root", 0o600),
        "the secret's owner and mode"
    );
    assert_eq!(
        root.read("/home/user/secret")
            .await
            .expect("root reads the secret"),
        b"top secret",
        "root's read"
    );
    root.make_dir("/root/private")
        .await
        .expect("root makes /root/private");

    let denied = |result: Result<(), Error>, what: &str| match result {
        Err(Error::PermissionDenied { path }) => {
            assert!(!path.is_empty(), "{what}: the error names no path");
        }
        other => panic!("{what} as user should be PermissionDenied, got {other:?}"),
    };
    match user.read("/home/user/secret").await {
        Err(e @ Error::PermissionDenied { .. }) => {
            assert_eq!(e.errno(), Some(libc::EACCES), "errno of PermissionDenied");
            assert!(e.to_string().contains("/home/user/secret"), "message: {e}");
        }
        other => panic!("user reading a root-only file should be PermissionDenied, got {other:?}"),
    }
    denied(
        user.read_stream("/home/user/secret").await.map(drop),
        "read_stream of the secret",
    );
    denied(
        user.write("/home/user/secret", "x").await,
        "write over the secret",
    );
    denied(user.write("/etc/new-file", "x").await, "write into /etc");
    denied(
        user.make_dir("/etc/new-dir").await.map(drop),
        "make_dir in /etc",
    );
    denied(user.list("/root", 1).await.map(drop), "list /root");
    denied(
        user.stat("/root/private").await.map(drop),
        "stat below /root",
    );
    denied(
        user.exists("/root/private").await.map(drop),
        "exists below /root",
    );
    denied(user.remove("/etc/hostname").await, "remove /etc/hostname");
    denied(
        user.rename("/etc/hostname", "/home/user/h").await.map(drop),
        "rename /etc/hostname",
    );
    denied(
        user.watch_dir("/root", false).await.map(drop),
        "watch /root",
    );
    let data = PatternReader::new(10);
    denied(
        user.write_from("/etc/streamed", data).await.map(drop),
        "write_from into /etc",
    );
    assert_eq!(
        root.read("/home/user/secret")
            .await
            .expect("root reads again"),
        b"top secret",
        "the secret changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_credentials_restored() {
    if !require_root("thread_credentials_restored") {
        return;
    }
    // A host file that only host root may read. If a blocking thread kept a
    // sandbox user's credentials, reading it from that thread would fail.
    let marker = HostMarker::create("thread_credentials_restored");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&marker.path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the marker 0600");
    let sbx = sandbox().await;
    for _ in 0..20 {
        let denied = sbx.files().list("/root", 1).await;
        assert!(denied.is_err(), "user listed /root");
        sbx.files().write("x", "x").await.expect("write as user");
    }
    for _ in 0..50 {
        let path = marker.path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .expect("join the blocking read");
        assert!(
            read.is_ok(),
            "a blocking thread lost host root's access after file calls: {read:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_kill_fail() {
    if !require_root("calls_after_kill_fail") {
        return;
    }
    let sbx = sandbox().await;
    sbx.files().make_dir("w").await.expect("make w");
    let mut watcher = sbx.files().watch_dir("w", true).await.expect("watch w");
    let files = sbx.files();
    sbx.kill().await.expect("kill the sandbox");
    let not_running = |result: Result<(), Error>, what: &str| {
        assert!(
            matches!(result, Err(Error::SandboxNotRunning { .. })),
            "{what} after kill should be SandboxNotRunning, got {result:?}"
        )
    };
    not_running(files.read("x").await.map(drop), "read");
    not_running(files.write("x", "x").await, "write");
    not_running(files.list("/", 1).await.map(drop), "list");
    not_running(files.remove("x").await, "remove");
    not_running(files.watch_dir("w", false).await.map(drop), "watch_dir");
    let ended = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("the watcher should end when the sandbox ends");
    assert!(
        matches!(ended, Some(Err(Error::SandboxNotRunning { .. }))),
        "the watcher's last item should be SandboxNotRunning, got {ended:?}"
    );
    let after = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("the watcher should close");
    assert!(
        after.is_none(),
        "the watcher yielded {after:?} after the end"
    );
}

// Watching directories.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_recursive_events() {
    if !require_root("watch_recursive_events") {
        return;
    }
    let sbx = sandbox().await;
    sbx.files().make_dir("w").await.expect("make w");
    let mut watcher = sbx.files().watch_dir("w", true).await.expect("watch w");
    use FilesystemEventKind::*;
    // The watch misses what is made inside a new directory before it covers
    // that directory, so the files come once a/b is watched.
    user_sh(&sbx, "mkdir -p w/a/b").await;
    let directories = [(Create, "a"), (Create, "a/b")];
    let mut events = collect_events(&mut watcher, &directories, Duration::from_secs(5)).await;
    user_sh(
        &sbx,
        "cd w && echo x > a/b/f && mv a/b/f a/b/g && chmod 600 a/b/g && rm a/b/g",
    )
    .await;
    let expected = [
        (Create, "a/b/f"),
        (Write, "a/b/f"),
        (Rename, "a/b/f"),
        (Create, "a/b/g"),
        (Chmod, "a/b/g"),
        (Remove, "a/b/g"),
    ];
    events.extend(collect_events(&mut watcher, &expected, Duration::from_secs(5)).await);
    for (kind, name) in directories.into_iter().chain(expected) {
        assert!(
            events.iter().any(|e| e.kind == kind && e.name == name),
            "no {kind:?} event for {name}; events: {events:?}"
        );
    }
    assert!(
        events
            .iter()
            .all(|e| !e.name.starts_with('/') && !e.name.starts_with("w/")),
        "names should be relative to w: {events:?}"
    );

    watcher.stop();
    let _ = events_within(&mut watcher, Duration::from_millis(200)).await;
    user_sh(&sbx, "touch w/after-stop").await;
    let late = events_within(&mut watcher, Duration::from_millis(300)).await;
    assert!(late.is_empty(), "events after stop: {late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_existing_subdirectories() {
    if !require_root("watch_existing_subdirectories") {
        return;
    }
    let sbx = sandbox().await;
    sbx.files()
        .write("w2/old/deeper/keep", "k")
        .await
        .expect("prepare a tree");
    let mut recursive = sbx
        .files()
        .watch_dir("w2", true)
        .await
        .expect("watch recursively");
    let mut flat = sbx
        .files()
        .watch_dir("w2", false)
        .await
        .expect("watch one level");
    user_sh(&sbx, "echo y > w2/old/deeper/new && echo z > w2/top && mv w2/old w2/renamed && echo q > w2/renamed/deeper/after-move").await;
    use FilesystemEventKind::*;
    let expected = [
        (Create, "old/deeper/new"),
        (Create, "top"),
        (Rename, "old"),
        (Create, "renamed"),
        (Create, "renamed/deeper/after-move"),
    ];
    let events = collect_events(&mut recursive, &expected, Duration::from_secs(5)).await;
    for (kind, name) in expected {
        assert!(
            events.iter().any(|e| e.kind == kind && e.name == name),
            "recursive watch: no {kind:?} event for {name}; events: {events:?}"
        );
    }
    assert!(
        !events
            .iter()
            .any(|e| e.name.starts_with("old/deeper/after-move")),
        "an event kept the directory's old name: {events:?}"
    );
    let flat_events = events_within(&mut flat, Duration::from_millis(500)).await;
    assert!(
        flat_events
            .iter()
            .any(|e| e.kind == Create && e.name == "top"),
        "flat watch: no create of top: {flat_events:?}"
    );
    assert!(
        flat_events.iter().all(|e| !e.name.contains('/')),
        "a flat watch reported a subdirectory's entry: {flat_events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_errors_and_end() {
    if !require_root("watch_errors_and_end") {
        return;
    }
    let sbx = sandbox().await;
    match sbx.files().watch_dir("missing", true).await {
        Err(Error::FileNotFound { path }) => assert_eq!(path, "missing", "path in the error"),
        other => panic!("watching a missing path should be FileNotFound, got {other:?}"),
    }
    sbx.files()
        .write("a-file", "x")
        .await
        .expect("write a-file");
    match sbx.files().watch_dir("a-file", false).await {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains("a-file"),
                "message names the path: {message}"
            )
        }
        other => panic!("watching a file should be InvalidArgument, got {other:?}"),
    }
    sbx.files().make_dir("gone").await.expect("make gone");
    let mut watcher = sbx
        .files()
        .watch_dir("gone", false)
        .await
        .expect("watch gone");
    user_sh(&sbx, "rmdir gone").await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(item) = watcher.next().await {
            item.expect("events before the end are not errors");
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the watch did not end after its directory was removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rejects_procfs() {
    if !require_root("watch_rejects_procfs") {
        return;
    }
    let sbx = sandbox().await;
    user_sh(&sbx, "ln -s /proc proc-link && ln -s /proc/1 pid1-link").await;
    for path in ["/proc", "/proc/1", "/proc/sys", "proc-link", "pid1-link"] {
        match sbx.files().watch_dir(path, false).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(
                    message.contains(&format!("{path:?}")),
                    "message names {path}: {message}"
                );
                assert!(
                    message.contains("inotify reports no changes"),
                    "message gives the reason: {message}"
                );
                assert!(
                    message.contains("/proc and /sys"),
                    "message names /proc and /sys: {message}"
                );
            }
            other => panic!("watching {path} should be InvalidArgument, got {other:?}"),
        }
    }
}

/// A directory template of the host's static busybox, removed on drop.
/// Its sandboxes have a handful of directories outside /proc, while the
/// host template's /usr alone has more than the 4096 directories that one
/// recursive watch may follow.
struct BusyboxRoot(PathBuf);

impl BusyboxRoot {
    fn create(test: &str) -> Self {
        let root = Self(PathBuf::from("/tmp").join(unique_name(test, "rootfs")));
        let bin = root.0.join("bin");
        std::fs::create_dir_all(&bin).expect("create the template's /bin");
        std::fs::create_dir(root.0.join("etc")).expect("create the template's /etc");
        copy_program(
            std::path::Path::new("/bin/busybox"),
            &bin.join("busybox"),
            0o755,
        );
        for applet in ["sh", "mkdir", "chmod", "stat"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("link a busybox applet");
        }
        root
    }

    fn path_text(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for BusyboxRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One watch of an inotify descriptor, as its fdinfo shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InotifyWatch {
    inode: u64,
    /// The device in the kernel's encoding, see [`kernel_device`].
    device: u64,
}

/// Returns the watches of each inotify descriptor of this process, where
/// `watch_dir` keeps its descriptors. /proc/self/fdinfo lists one line
/// `inotify wd:1 ino:2 sdev:2a ...` (hex) per watch (proc(5)).
fn inotify_watches() -> Vec<Vec<InotifyWatch>> {
    let mut instances = Vec::new();
    let descriptors = std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd");
    for entry in descriptors.flatten() {
        let target = std::fs::read_link(entry.path());
        if !target.is_ok_and(|target| target.as_os_str() == "anon_inode:inotify") {
            continue;
        }
        // Another test may have closed the descriptor since the listing.
        let fdinfo = PathBuf::from("/proc/self/fdinfo").join(entry.file_name());
        let Ok(info) = std::fs::read_to_string(fdinfo) else {
            continue;
        };
        instances.push(info.lines().filter_map(parse_inotify_watch).collect());
    }
    instances
}

fn parse_inotify_watch(line: &str) -> Option<InotifyWatch> {
    let fields = line.strip_prefix("inotify ")?;
    let hex_field = |key: &str| {
        let value = fields
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key))?;
        u64::from_str_radix(value, 16).ok()
    };
    Some(InotifyWatch {
        inode: hex_field("ino:")?,
        device: hex_field("sdev:")?,
    })
}

/// Converts an `st_dev` from stat(2) to the kernel's internal encoding,
/// major << 20 | minor, which fdinfo's `sdev` shows.
fn kernel_device(st_dev: u64) -> u64 {
    let major = u64::from(libc::major(st_dev));
    let minor = u64::from(libc::minor(st_dev));
    (major << 20) | minor
}

/// Returns the watch that a directory in the sandbox would have, from the
/// output of `stat -c '%d %i'` for it.
fn watch_of_stat(line: &str) -> InotifyWatch {
    let numbers: Vec<u64> = line
        .split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("stat printed {line:?}: {e}"))
        })
        .collect();
    assert_eq!(numbers.len(), 2, "stat printed {line:?}");
    InotifyWatch {
        inode: numbers[1],
        device: kernel_device(numbers[0]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_of_root_skips_proc() {
    if !require_root("watch_of_root_skips_proc") {
        return;
    }
    let template = BusyboxRoot::create("watch_of_root_skips_proc");
    let sbx = Sandbox::create(options().template(template.path_text()))
        .await
        .expect("create a sandbox from the busybox template");
    // The walk must go on past a directory that the user may not read, as
    // it does past /root.
    user_sh(
        &sbx,
        "mkdir -p /home/user/locked/inner && chmod 000 /home/user/locked",
    )
    .await;
    let stats = stdout(&user_sh(&sbx, "stat -c '%d %i' / /home/user /proc").await);
    let stats: Vec<InotifyWatch> = stats.lines().map(watch_of_stat).collect();
    let [root, home, proc] = stats[..] else {
        panic!("stat printed {} lines, expected 3: {stats:?}", stats.len());
    };

    let mut watcher = sbx
        .files()
        .watch_dir("/", true)
        .await
        .expect("watch / recursively");
    let instances = inotify_watches();
    let watches = instances
        .iter()
        .find(|watches| watches.contains(&root))
        .unwrap_or_else(|| panic!("no inotify descriptor watches {root:?}: {instances:?}"));
    assert!(
        watches.contains(&home),
        "the walk did not reach /home/user: {watches:?}"
    );
    let on_proc = watches.iter().filter(|w| w.device == proc.device).count();
    assert_eq!(
        on_proc,
        0,
        "{on_proc} of the {} watches are on the sandbox's procfs",
        watches.len()
    );

    user_sh(&sbx, "echo x > /home/user/after-watch").await;
    let expected = [(FilesystemEventKind::Create, "home/user/after-watch")];
    let events = collect_events(&mut watcher, &expected, Duration::from_secs(5)).await;
    assert!(
        events
            .iter()
            .any(|e| e.kind == FilesystemEventKind::Create && e.name == "home/user/after-watch"),
        "no Create event for home/user/after-watch: {events:?}"
    );
}

/// Creates a sandbox and a watch of its directory `flood`, and then 6,000
/// files there: 12,000 events (create and attrib), more than a watch
/// queues for a reader that has not read yet.
async fn flooded_watch() -> (Sandbox, Watcher) {
    let sbx = sandbox().await;
    sbx.files().make_dir("flood").await.expect("make flood");
    let watcher = sbx
        .files()
        .watch_dir("flood", false)
        .await
        .expect("watch flood");
    user_sh(&sbx, "cd flood && seq 1 6000 | xargs touch").await;
    (sbx, watcher)
}

/// Reads a watch's items until none arrives for `quiet`, and returns how
/// many events came and the errors, in order.
async fn drain_watch(watcher: &mut Watcher, quiet: Duration) -> (usize, Vec<Error>) {
    let mut events = 0;
    let mut errors = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(quiet, watcher.next()).await {
        match item {
            Ok(_) => events += 1,
            Err(e) => errors.push(e),
        }
    }
    (events, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_loss_reported_when_quiet() {
    if !require_root("watch_loss_reported_when_quiet") {
        return;
    }
    // The sandbox is killed when `_sandbox` is dropped, at the end.
    let (_sandbox, mut watcher) = flooded_watch().await;

    // No event follows the flood, so the report must not wait for one.
    let (events, errors) = drain_watch(&mut watcher, Duration::from_secs(2)).await;
    assert!(events > 0, "no event arrived before the loss");
    assert_eq!(errors.len(), 1, "one report of lost events: {errors:?}");
    assert!(
        matches!(&errors[0], Error::WatchEventsLost { path, .. } if path == "flood"),
        "the report is WatchEventsLost for \"flood\": {:?}",
        errors[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_end_reported_after_loss() {
    if !require_root("watch_end_reported_after_loss") {
        return;
    }
    let (sbx, mut watcher) = flooded_watch().await;
    sbx.kill().await.expect("kill the sandbox");

    let (_, errors) = drain_watch(&mut watcher, Duration::from_secs(2)).await;
    assert!(
        matches!(errors.last(), Some(Error::SandboxNotRunning { .. })),
        "the last item is SandboxNotRunning with a full queue: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, Error::WatchEventsLost { .. })),
        "the loss is reported before the end: {errors:?}"
    );
}

// Symlinks and `..` that try to leave the sandbox, one operation at a time.
// Each test plants links to host paths that only the host has, so any
// access that reached the host would show.

/// Host marker paths and the sandbox links planted towards them.
struct EscapeSetup {
    sbx: Sandbox,
    file: HostMarker,
    dir: HostMarkerDir,
}

impl EscapeSetup {
    async fn new(test: &str) -> Self {
        let file = HostMarker::create(test);
        let dir = HostMarkerDir::create(test);
        let sbx = sandbox().await;
        let links = format!(
            "ln -s /tmp/{file} lf && ln -s /tmp lt && ln -s /tmp/{dir} ld \
             && ln -s ../../../../../../../tmp lu && ln -s /proc/1/root/tmp lp",
            file = file.name(),
            dir = dir.name(),
        );
        user_sh(&sbx, &links).await;
        Self { sbx, file, dir }
    }

    /// Paths that name the host marker file if resolved on the host.
    fn file_paths(&self) -> Vec<String> {
        let name = self.file.name();
        vec![
            "lf".into(),
            format!("lt/{name}"),
            format!("lu/{name}"),
            format!("lp/{name}"),
            format!("../../../../../tmp/{name}"),
            format!("/../../tmp/{name}"),
            format!("/proc/1/root/tmp/{name}"),
            format!("/proc/self/root/tmp/{name}"),
        ]
    }

    /// Paths that name the host marker directory if resolved on the host.
    fn dir_paths(&self) -> Vec<String> {
        let name = self.dir.name();
        vec![
            "ld".into(),
            format!("lt/{name}"),
            format!("lu/{name}"),
            format!("../../../../tmp/{name}"),
            format!("/proc/1/root/tmp/{name}"),
        ]
    }

    /// Asserts that both host markers are as they were created.
    fn assert_host_intact(&self, after: &str) {
        assert_eq!(
            std::fs::read(&self.file.path).ok(),
            Some(self.file.contents.clone()),
            "{after} changed or removed host file {}",
            self.file.path.display()
        );
        assert!(
            self.dir.is_intact(),
            "{after} changed host directory {}",
            self.dir.path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_read() {
    if !require_root("escape_read") {
        return;
    }
    let setup = EscapeSetup::new("escape_read").await;
    let files = setup.sbx.files().user("root");
    let mut paths = setup.file_paths();
    paths.extend(
        setup
            .dir_paths()
            .iter()
            .map(|d| format!("{d}/{}", setup.dir.inner)),
    );
    let copy = MustNotExist::new(unique_name("escape_read", "copy-out"));
    for path in &paths {
        let read = files.read(path).await;
        assert!(read.is_err(), "read of {path} should fail, got {read:?}");
        let stream = files.read_stream(path).await;
        assert!(stream.is_err(), "read_stream of {path} should fail");
        let copied = files.copy_out(path, &copy.0).await;
        assert!(
            copied.is_err(),
            "copy_out of {path} should fail, got {copied:?}"
        );
        assert!(!copy.exists(), "copy_out of {path} wrote a host file");
    }
    for dir in setup.dir_paths() {
        let copied = files.copy_out(&dir, &copy.0).await;
        assert!(
            copied.is_err(),
            "copy_out of {dir} should fail, got {copied:?}"
        );
    }
    setup.assert_host_intact("reading");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_write() {
    if !require_root("escape_write") {
        return;
    }
    let setup = EscapeSetup::new("escape_write").await;
    let files = setup.sbx.files().user("root");
    let created = MustNotExist::new(format!("{}-created", setup.file.name()));
    let made_dir = MustNotExist::new(format!("{}-made", setup.file.name()));
    let copied = MustNotExist::new(format!("{}-copied", setup.file.name()));
    for path in setup.file_paths() {
        let _ = files.write(&path, "written by the file API").await;
        let _ = files.write_from(&path, &b"streamed"[..]).await;
        let _ = files.write_many([(path.as_str(), &b"many"[..])]).await;
        setup.assert_host_intact(&format!("writing {path}"));
    }
    for base in ["lt", "lu", "lp", "../../../../tmp", "/proc/1/root/tmp"] {
        let _ = files
            .write(&format!("{base}/{}", created.name()), "new")
            .await;
        let _ = files
            .make_dir(&format!("{base}/{}/sub", made_dir.name()))
            .await;
        let _ = files
            .copy_in(&setup.file.path, &format!("{base}/{}", copied.name()))
            .await;
        assert!(
            !created.exists(),
            "writing through {base} created a host file"
        );
        assert!(
            !made_dir.exists(),
            "make_dir through {base} created a host directory"
        );
        assert!(
            !copied.exists(),
            "copy_in through {base} created a host file"
        );
    }
    for dir in setup.dir_paths() {
        let _ = files
            .write(&format!("{dir}/{}", setup.dir.inner), "over")
            .await;
        let _ = files.write(&format!("{dir}/added"), "added").await;
    }
    assert!(
        !setup.dir.path.join("added").exists(),
        "a write through a link added a file to the host directory"
    );
    setup.assert_host_intact("writing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_list() {
    if !require_root("escape_list") {
        return;
    }
    let setup = EscapeSetup::new("escape_list").await;
    let files = setup.sbx.files().user("root");
    let host_names = [setup.file.name(), setup.dir.name(), setup.dir.inner.clone()];
    let mut dirs = vec![
        "lt".to_string(),
        "lu".into(),
        "lp".into(),
        "../../../../tmp".into(),
        "/proc/1/root/tmp".into(),
        "/".into(),
    ];
    dirs.extend(setup.dir_paths());
    for dir in &dirs {
        let Ok(entries) = files.list(dir, 3).await else {
            continue;
        };
        for entry in &entries {
            assert!(
                !host_names.contains(&entry.name),
                "listing {dir} showed host entry {}",
                entry.path
            );
        }
    }
    let home = files
        .list("/home/user", 5)
        .await
        .expect("list the home directory");
    assert!(
        home.iter().all(|e| !e.path.starts_with("/home/user/lt/")),
        "list descended into a symlink: {:?}",
        paths_of(&home)
    );
    setup.assert_host_intact("listing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_stat() {
    if !require_root("escape_stat") {
        return;
    }
    let setup = EscapeSetup::new("escape_stat").await;
    let files = setup.sbx.files().user("root");
    let link = files.stat("lf").await.expect("stat lf");
    assert_eq!(link.kind, FileType::Symlink, "lf is reported as a symlink");
    assert_eq!(
        link.symlink_target,
        Some(format!("/tmp/{}", setup.file.name())),
        "target of lf"
    );
    for path in setup.file_paths().into_iter().skip(1) {
        let info = files.stat(&path).await;
        assert!(info.is_err(), "stat of {path} should fail, got {info:?}");
        let exists = files.exists(&path).await;
        assert!(
            !matches!(exists, Ok(true)),
            "exists of {path} should not be true"
        );
    }
    for path in setup.dir_paths().into_iter().skip(1) {
        let info = files.get_info(&path).await;
        assert!(
            info.is_err(),
            "get_info of {path} should fail, got {info:?}"
        );
    }
    setup.assert_host_intact("stat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_remove() {
    if !require_root("escape_remove") {
        return;
    }
    let setup = EscapeSetup::new("escape_remove").await;
    let files = setup.sbx.files().user("root");
    for path in setup.file_paths().into_iter().skip(1) {
        let _ = files.remove(&path).await;
        setup.assert_host_intact(&format!("removing {path}"));
    }
    for dir in setup.dir_paths().into_iter().skip(1) {
        let _ = files.remove(&format!("{dir}/{}", setup.dir.inner)).await;
        let _ = files.remove(&dir).await;
        setup.assert_host_intact(&format!("removing {dir}"));
    }
    // A tree whose entries link to the host directory.
    user_sh(
        &setup.sbx,
        &format!(
            "mkdir -p tree/sub && ln -s /tmp/{d} tree/abs && ln -s ../../../../../tmp/{d} tree/sub/rel \
             && ln -s /tmp tree/sub/tmp",
            d = setup.dir.name()
        ),
    )
    .await;
    files.remove("tree").await.expect("remove the tree");
    for link in ["lf", "ld", "lt", "lu", "lp"] {
        files.remove(link).await.expect("remove a link");
        assert!(!files.exists(link).await.expect("exists"), "{link} remains");
    }
    setup.assert_host_intact("removing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_rename() {
    if !require_root("escape_rename") {
        return;
    }
    let setup = EscapeSetup::new("escape_rename").await;
    let files = setup.sbx.files().user("root");
    let moved_in = MustNotExist::new(format!("{}-renamed", setup.file.name()));
    files
        .write("local", "sandbox file")
        .await
        .expect("write local");
    for path in setup.file_paths().into_iter().skip(1) {
        let result = files.rename(&path, "took").await;
        assert!(
            result.is_err(),
            "renaming {path} should fail, got {result:?}"
        );
        setup.assert_host_intact(&format!("renaming {path}"));
    }
    for dir in setup.dir_paths().into_iter().skip(1) {
        let _ = files
            .rename(&format!("{dir}/{}", setup.dir.inner), "took")
            .await;
        let _ = files.rename(&dir, "took-dir").await;
        setup.assert_host_intact(&format!("renaming {dir}"));
    }
    for base in ["lt", "lu", "lp", "../../../../tmp", "/proc/1/root/tmp"] {
        let _ = files
            .rename("local", &format!("{base}/{}", moved_in.name()))
            .await;
        assert!(!moved_in.exists(), "renaming into {base} reached the host");
        if !files.exists("local").await.expect("exists local") {
            files
                .write("local", "sandbox file")
                .await
                .expect("write local again");
        }
    }
    let renamed = files.rename("lf", "lf2").await.expect("rename the link lf");
    assert_eq!(renamed.kind, FileType::Symlink, "the link itself moved");
    setup.assert_host_intact("renaming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_watch() {
    if !require_root("escape_watch") {
        return;
    }
    let setup = EscapeSetup::new("escape_watch").await;
    let files = setup.sbx.files().user("root");
    for dir in setup.dir_paths() {
        let watched = files.watch_dir(&dir, true).await;
        assert!(
            watched.is_err(),
            "watching {dir} should fail: the host directory is not in the sandbox"
        );
    }
    for path in ["/proc/1/root/tmp", "lp"] {
        let watched = files.watch_dir(path, false).await;
        assert!(
            watched.is_err(),
            "watching {path} through a /proc magic link should fail"
        );
    }
    for dir in ["lt", "lu", "../../../../tmp"] {
        let mut watcher = files
            .watch_dir(dir, true)
            .await
            .expect("watch the sandbox's /tmp");
        let host_only = MustNotExist::new(format!("{}-host-event", setup.file.name()));
        std::fs::write(&host_only.0, "host").expect("write a host file in /tmp");
        let seen = events_within(&mut watcher, Duration::from_millis(300)).await;
        assert!(
            seen.iter().all(|e| e.name != host_only.name()),
            "watching {dir} saw the host's /tmp: {seen:?}"
        );
        root_sh(&setup.sbx, "touch /tmp/inside-event").await;
        let inside = collect_events(
            &mut watcher,
            &[(FilesystemEventKind::Create, "inside-event")],
            Duration::from_secs(5),
        )
        .await;
        assert!(
            inside.iter().any(|e| e.name == "inside-event"),
            "watching {dir} should see the sandbox's /tmp: {inside:?}"
        );
        root_sh(&setup.sbx, "rm /tmp/inside-event").await;
    }
    setup.assert_host_intact("watching");
}

/// Sandboxed code swaps a directory for a symlink to / in a tight loop while
/// the host reads, writes, lists, renames and removes through it. Every
/// path resolves inside the sandbox, so no host file may ever change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_swap_race() {
    if !require_root("symlink_swap_race") {
        return;
    }
    let marker = HostMarker::create("symlink_swap_race");
    // A second host file that the sandbox never has, so that seeing it in a
    // listing or reading it could only come from the host.
    let hidden = HostMarker::create("symlink_swap_race_hidden");
    let name = marker.name();
    let new_file = MustNotExist::new(format!("{name}-new"));
    let moved = MustNotExist::new(format!("{name}-moved"));
    let new_dir = MustNotExist::new(format!("{name}-dir"));
    let sbx = sandbox().await;
    let swapper = "import os\n\
        os.makedirs('/home/user/race/real/tmp')\n\
        os.chdir('/home/user/race')\n\
        os.symlink('/', 'link')\n\
        while True:\n\
        \x20   os.rename('real', 'swap'); os.rename('swap', 'real')\n\
        \x20   os.rename('link', 'swap'); os.rename('swap', 'link')\n";
    sbx.files()
        .write("swapper.py", swapper)
        .await
        .expect("write the swapper");
    let loop_handle = sbx
        .command("python3")
        .arg("/home/user/swapper.py")
        .start()
        .await
        .expect("start the swapper");
    let files = sbx.files().user("root");
    let deadline = Instant::now() + Duration::from_secs(4);
    while !files.exists("race/link").await.expect("exists race/link") {
        assert!(Instant::now() < deadline, "the swapper did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let through = |leaf: &str| format!("race/swap/tmp/{leaf}");
    let end = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0u32;
    let mut successes = 0u32;
    while Instant::now() < end {
        rounds += 1;
        successes += u32::from(
            files
                .write(&through(&name), "from the host loop")
                .await
                .is_ok(),
        );
        if let Ok(data) = files.read(&through(&name)).await {
            successes += 1;
            assert_ne!(
                data, marker.contents,
                "read the host marker through the swap"
            );
        }
        let hidden_read = files.read(&through(&hidden.name())).await;
        assert!(
            hidden_read.is_err(),
            "read a host-only file: {hidden_read:?}"
        );
        let _ = files.stat(&through(&name)).await;
        if let Ok(entries) = files.list("race/swap/tmp", 1).await {
            assert!(
                entries.iter().all(|e| e.name != hidden.name()),
                "listed the host's /tmp through the swap"
            );
        }
        let _ = files.write(&through(&new_file.name()), "new").await;
        let _ = files.rename(&through(&name), &through(&moved.name())).await;
        let _ = files.remove(&through(&moved.name())).await;
        let _ = files.make_dir(&through(&new_dir.name())).await;
        let _ = files.remove(&through(&new_dir.name())).await;
        let _ = files.remove(&through(&new_file.name())).await;
        assert_eq!(
            marker.read(),
            marker.contents,
            "the host marker changed in round {rounds}"
        );
        assert_eq!(
            hidden.read(),
            hidden.contents,
            "the hidden marker changed in round {rounds}"
        );
        assert!(
            !new_file.exists(),
            "a host file was created in round {rounds}"
        );
        assert!(
            !moved.exists(),
            "the host marker was renamed in round {rounds}"
        );
        assert!(
            !new_dir.exists(),
            "a host directory was created in round {rounds}"
        );
    }
    loop_handle.kill().await.expect("stop the swapper");
    assert!(rounds > 20, "only {rounds} rounds ran");
    assert!(
        successes > 0,
        "no call succeeded, so the race was not exercised"
    );
}

// Large files and a full disk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_not_enough_space() {
    if !require_root("full_disk_is_not_enough_space") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.disk_size = 16 << 20;
    let sbx = Sandbox::create(options)
        .await
        .expect("create a sandbox with a 16 MiB disk");
    let files = sbx.files();

    match files.write_from("big", PatternReader::new(32 << 20)).await {
        Err(Error::NotEnoughSpace { path }) => assert_eq!(path, "big", "path in the error"),
        other => panic!("writing 32 MiB to a 16 MiB disk should be NotEnoughSpace, got {other:?}"),
    }
    assert!(
        !files.exists("big").await.expect("exists big"),
        "the partial file remains"
    );
    files
        .write("small", "still works")
        .await
        .expect("a small write after the full disk");
    assert_eq!(
        files.read("small").await.expect("read small"),
        b"still works",
        "small file"
    );
    let alive = sh(&sbx, "echo alive").await;
    assert_eq!(stdout(&alive), "alive\n", "a command after the full disk");

    let whole = files.write("whole", vec![1u8; 20 << 20]).await;
    assert!(
        matches!(whole, Err(Error::NotEnoughSpace { .. })),
        "a 20 MiB write should be NotEnoughSpace, got {whole:?}"
    );
    let copy_source = MustNotExist::new(unique_name("full_disk", "copy-source"));
    std::fs::write(&copy_source.0, vec![2u8; 20 << 20]).expect("write a 20 MiB host file");
    let copied = files.copy_in(&copy_source.0, "copied").await;
    assert!(
        matches!(copied, Err(Error::NotEnoughSpace { .. })),
        "copying 20 MiB in should be NotEnoughSpace, got {copied:?}"
    );
    files
        .write("small2", "still works")
        .await
        .expect("a small write after the failed copy");
    let used = sh(&sbx, "du -sk /home/user | cut -f1").await;
    let used_kib: u64 = stdout(&used).trim().parse().expect("du prints a number");
    assert!(used_kib < 1024, "failed writes left {used_kib} KiB behind");
}

/// Streams 2 GiB in and out with checksums on both sides, and checks that
/// the host process's memory stays flat while it does. The peak RSS is the
/// whole process's, so the test runs in a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_round_trip() {
    if !require_root("two_gib_round_trip") {
        return;
    }
    if !started_for("two_gib_round_trip") {
        // On this thread, whose output the test harness captures.
        tokio::task::block_in_place(|| run_alone("two_gib_round_trip"));
        return;
    }
    const LEN: u64 = 2 << 30;
    const GROWTH_LIMIT_KIB: u64 = 64 << 10;
    let sbx = sandbox().await;
    // Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current
    // RSS (proc(5)).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let peak_before = vm_kib("VmHWM:");

    // The expected hash, computed on another thread from the same bytes.
    let expected = std::thread::spawn(|| {
        let mut hasher = HostSha256::start();
        PatternReader::new(LEN)
            .write_all_to(&mut hasher)
            .expect("feed sha256sum");
        hasher.finish()
    });
    let written = sbx
        .files()
        .write_from("big.bin", PatternReader::new(LEN))
        .await
        .expect("write 2 GiB");
    assert_eq!(written, LEN, "bytes written");

    let inside = sbx
        .command("sha256sum")
        .arg("/home/user/big.bin")
        .timeout(Some(Duration::from_secs(300)))
        .output()
        .await
        .expect("run sha256sum inside");
    let inside_hash = stdout(&inside)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();

    // Read back, hashing each chunk as it arrives on a blocking thread.
    let mut reader = sbx
        .files()
        .read_stream("big.bin")
        .await
        .expect("open a stream");
    assert_eq!(reader.size(), LEN, "stream size");
    let (chunks, mut receive) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = HostSha256::start();
        let mut total = 0u64;
        while let Some(chunk) = receive.blocking_recv() {
            total += chunk.len() as u64;
            hasher.write_all(&chunk).expect("feed sha256sum");
        }
        (total, hasher.finish())
    });
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        let n = reader.read(&mut chunk).await.expect("read the stream");
        if n == 0 {
            break;
        }
        chunk.truncate(n);
        chunks
            .send(chunk)
            .await
            .expect("hand a chunk to the hasher");
    }
    drop(chunks);
    let (read_len, read_hash) = hashing.await.expect("join the hasher");
    let peak_after = vm_kib("VmHWM:");
    let expected_hash = expected.join().expect("join the expected hash");

    assert_eq!(read_len, LEN, "bytes read back");
    assert_eq!(
        inside_hash, expected_hash,
        "sha256sum inside vs. the bytes sent"
    );
    assert_eq!(
        read_hash, expected_hash,
        "hash of the bytes read back vs. the bytes sent"
    );
    let growth = peak_after.saturating_sub(peak_before);
    assert!(
        growth < GROWTH_LIMIT_KIB,
        "peak RSS grew by {growth} KiB (from {peak_before} to {peak_after}) moving 2 GiB"
    );
    eprintln!(
        "two_gib_round_trip: VmHWM {peak_before} -> {peak_after} KiB, VmRSS now {} KiB",
        vm_kib("VmRSS:")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_file_read_refused() {
    if !require_root("sparse_file_read_refused") {
        return;
    }
    let sbx = sandbox().await;
    // A 1 TiB file that takes no space: read() must refuse it before it
    // allocates anything, and read_stream() must still open it.
    let made = sh(&sbx, "truncate -s 1T /home/user/sparse && echo made").await;
    assert_eq!(
        stdout(&made),
        "made\n",
        "truncate should create the sparse file"
    );
    match sbx.files().read("sparse").await {
        Err(soulbox_core::Error::InvalidArgument(message)) => {
            assert!(
                message.contains("read_stream"),
                "the error should point to read_stream: {message}"
            );
            assert!(
                message.contains("format=\"stream\""),
                "the error should name Python's stream read too: {message}"
            );
        }
        other => panic!(
            "reading a 1 TiB sparse file should be refused, got {:?}",
            other.map(|d| d.len())
        ),
    }
    let mut reader = sbx
        .files()
        .read_stream("sparse")
        .await
        .expect("stream the sparse file");
    let mut head = [0xffu8; 4096];
    tokio::io::AsyncReadExt::read_exact(&mut reader, &mut head)
        .await
        .expect("read its start");
    assert!(head.iter().all(|&b| b == 0), "a sparse file reads as zeros");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_copy_out_keeps_holes() {
    if !require_root("sparse_copy_out_keeps_holes") {
        return;
    }
    let sbx = sandbox().await;
    // 256 MiB that take no space, with 3 bytes of data in the middle.
    let made = sh(&sbx, "truncate -s 256M /home/user/sp && printf abc | dd of=/home/user/sp bs=1 seek=1000000 conv=notrunc 2>/dev/null && echo made").await;
    assert_eq!(stdout(&made), "made\n", "the sparse file should be created");
    let host = std::env::temp_dir().join(format!("soulbox-sparse-out-{}", std::process::id()));
    let summary = sbx
        .files()
        .copy_out("sp", &host)
        .await
        .expect("copy the sparse file out");
    let meta = std::fs::metadata(&host).expect("stat the copy");
    let data = {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&host).expect("open the copy");
        file.seek(SeekFrom::Start(1_000_000))
            .expect("seek to the data");
        let mut three = [0u8; 3];
        file.read_exact(&mut three).expect("read the data");
        three
    };
    let _ = std::fs::remove_file(&host);
    assert_eq!(meta.len(), 256 << 20, "the copy keeps the logical size");
    use std::os::unix::fs::MetadataExt;
    // The writable layer allocates file data in 2 MiB huge pages, so the
    // 3 bytes come out as one 2 MiB extent; the other 254 MiB stay holes.
    assert!(
        meta.blocks() * 512 <= 2 << 20,
        "the copy must stay sparse, uses {} bytes",
        meta.blocks() * 512
    );
    assert_eq!(&data, b"abc", "the data extent is copied");
    assert!(
        summary.bytes <= 2 << 20,
        "only data extents are counted as copied: {}",
        summary.bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_tree_refused_quickly() {
    if !require_root("deep_tree_refused_quickly") {
        return;
    }
    let sbx = sandbox().await;
    let nest = "python3 -c 'import os\nos.chdir(\"/home/user\")\nfor _ in range(2000):\n    os.mkdir(\"d\"); os.chdir(\"d\")\nprint(\"nested\")'";
    let made = sh(&sbx, nest).await;
    assert_eq!(
        stdout(&made),
        "nested\n",
        "the deep tree should be created: {made:?}"
    );
    let started = std::time::Instant::now();
    let listed = sbx.files().list("d", usize::MAX).await;
    assert!(
        matches!(listed, Err(soulbox_core::Error::InvalidArgument(ref m)) if m.contains("deeper")),
        "listing a 2000-level tree should be refused: {:?}",
        listed.as_ref().map(|l| l.len())
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the refusal should come quickly, took {:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let removed = sbx.files().remove("d").await;
    assert!(
        matches!(removed, Err(soulbox_core::Error::InvalidArgument(ref m)) if m.contains("deeper")),
        "removing a 2000-level tree should be refused: {removed:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the refused remove should come quickly, took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_write_from_leaves_no_file() {
    if !require_root("cancelled_write_from_leaves_no_file") {
        return;
    }
    let sbx = sandbox().await;
    let files = sbx.files();
    // A reader that never yields data, so no call can finish.
    let (mut reader, _writer) = tokio::io::duplex(64);
    // Polled once, a call has started opening the file on a blocking
    // thread; dropped then, it is cancelled during the open.
    let mut write = Box::pin(files.write_from("cancelled-open.bin", &mut reader));
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(write.as_mut(), cx))
    })
    .await;
    assert!(first.is_pending(), "the write finished: {first:?}");
    drop(write);
    // Cancelled after its open has handed the file over, before the call
    // took it: the future was not polled again.
    let mut opened = Box::pin(files.write_from("cancelled-opened.bin", &mut reader));
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(opened.as_mut(), cx))
    })
    .await;
    assert!(first.is_pending(), "the write finished: {first:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !files
        .exists("cancelled-opened.bin")
        .await
        .expect("stat the file")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the open never made the file"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(opened);
    // Cancelled later, while it waits for the first chunk.
    let later = files.write_from("cancelled-read.bin", &mut reader);
    let result = tokio::time::timeout(Duration::from_millis(200), later).await;
    assert!(result.is_err(), "the write finished: {result:?}");
    // The open and undo steps finish on blocking threads of their own.
    // After 500 ms a cancelled open has made its file if it ever will, and
    // a loaded machine may run the undo later still: wait up to 10 s more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = sh(&sbx, "ls /home/user | grep -c cancelled || true").await;
        if stdout(&left) == "0\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cancelled writes left files behind: {}",
            stdout(&sh(&sbx, "ls /home/user").await)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
