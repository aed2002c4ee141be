//! The file API against a real sandbox: round trips, paths, ownership,
//! errors, and symlinks planted inside that try to reach host files.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use soulbox_core::Error;
use soulbox_tests::*;

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
