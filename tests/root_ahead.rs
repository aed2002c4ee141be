//! Roots built ahead: after each create, the zygote builds the next
//! sandbox's root (overlay, host binds, /dev, /tmp) in a mount namespace
//! of its own, and hands it to the next create whose root plan is equal.
//! Such a sandbox must be indistinguishable from one whose PID 1 built its
//! root at the create.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use soulbox_core::diagnostics::zygote_pid;
use soulbox_core::{Sandbox, SandboxOptions};
use soulbox_tests::image::{oci_layout_files, write_dir, Image, Layer, TempDir};
use soulbox_tests::*;

/// The zygote is process-wide, so the tests of this binary take turns.
static ZYGOTE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn mount_namespace(pid: impl std::fmt::Display) -> String {
    let link = format!("/proc/{pid}/ns/mnt");
    std::fs::read_link(&link)
        .unwrap_or_else(|e| panic!("read {link}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// Returns the mount namespaces the zygote keeps open besides the host's:
/// the root it built for the next sandbox, if any.
fn built_roots(zygote: i32) -> Vec<String> {
    let host = mount_namespace("self");
    let dir = format!("/proc/{zygote}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {dir}: {e}"))
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("mnt:") && *target != host)
        .collect()
}

/// Waits up to 5 s for the zygote to hold a root for the next sandbox.
fn wait_for_root(zygote: i32) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let roots = built_roots(zygote);
        assert!(
            roots.len() <= 1,
            "the zygote keeps several roots: {roots:?}"
        );
        if let Some(root) = roots.into_iter().next() {
            return root;
        }
        assert!(
            Instant::now() < deadline,
            "the zygote built no root within 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

async fn create(options: SandboxOptions) -> Sandbox {
    Sandbox::create(options).await.expect("create a sandbox")
}

/// Size of the sandbox's /tmp in KiB, as `df` inside reports it.
async fn tmp_kib(sandbox: &Sandbox) -> u64 {
    let output = run_ok(sandbox, "df -k /tmp | tail -n 1").await;
    output
        .split_whitespace()
        .nth(1)
        .and_then(|size| size.parse().ok())
        .unwrap_or_else(|| panic!("no size in df's line {output:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_sandbox_starts_in_the_root_built_ahead() {
    if !require_root("next_sandbox_starts_in_the_root_built_ahead") {
        return;
    }
    let _turn = ZYGOTE.lock().await;
    let first = sandbox().await;
    let zygote = zygote_pid().expect("a zygote runs after a create");
    let root = wait_for_root(zygote);
    assert_ne!(root, mount_namespace(first.pid()));

    let second = sandbox().await;
    assert_eq!(
        mount_namespace(second.pid()),
        root,
        "the second sandbox should start in the root the zygote built"
    );
    // Its own /proc, hostname and /etc files, as at any create.
    let id = second.id().to_string();
    let seen = run_ok(
        &second,
        "cat /proc/1/comm; hostname; cat /etc/hostname; grep -c . /proc/self/mountinfo",
    )
    .await;
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[..3], ["soulbox-init", id.as_str(), id.as_str()]);
    let mounts_first = run_ok(&first, "grep -c . /proc/self/mountinfo").await;
    assert_eq!(
        lines[3],
        mounts_first.trim(),
        "a root built ahead has as many mounts as one built at the create"
    );
    let listed = run_ok(&second, "ls /").await;
    assert_eq!(listed, run_ok(&first, "ls /").await);

    // The zygote keeps no reference to a root it handed over.
    let next = wait_for_root(zygote);
    assert_ne!(next, root, "the zygote kept the root it handed over");
    for sandbox in [&first, &second] {
        let _ = sandbox.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_root_has_no_earlier_files() {
    if !require_root("built_root_has_no_earlier_files") {
        return;
    }
    let _turn = ZYGOTE.lock().await;
    let first = sandbox().await;
    let files = "/etc/marker /tmp/marker /dev/shm/marker /home/user/marker /root/marker";
    let written = sh_as_root(
        &first,
        &format!("for f in {files}; do echo x > $f || exit 1; done"),
    )
    .await;
    assert!(written.status.success(), "{written:?}");
    let zygote = zygote_pid().expect("a zygote runs after a create");
    let root = wait_for_root(zygote);
    let second = sandbox().await;
    assert_eq!(mount_namespace(second.pid()), root);
    let output = sh_as_root(&second, &format!("ls {files} 2>&1; true")).await;
    let listing = stdout(&output);
    assert_eq!(
        listing.matches("No such file").count(),
        5,
        "files of the first sandbox in the second: {listing}"
    );
    for sandbox in [&first, &second] {
        let _ = sandbox.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sizes_get_a_root_of_their_own() {
    if !require_root("other_sizes_get_a_root_of_their_own") {
        return;
    }
    let _turn = ZYGOTE.lock().await;
    let first = sandbox().await;
    let zygote = zygote_pid().expect("a zygote runs after a create");
    let root = wait_for_root(zygote);
    let default_tmp = tmp_kib(&first).await;

    let mut small = options();
    small.tmp_size = 32 << 20;
    let second = create(small.clone()).await;
    assert_ne!(
        mount_namespace(second.pid()),
        root,
        "a sandbox with another /tmp size got the root built for the default one"
    );
    assert_eq!(tmp_kib(&second).await, 32 << 10);
    assert_ne!(default_tmp, 32 << 10);

    // The zygote now builds for the new plan, and the next sandbox with it
    // starts there, with the size it asked for.
    let next = wait_for_root(zygote);
    let third = create(small).await;
    assert_eq!(mount_namespace(third.pid()), next);
    assert_eq!(tmp_kib(&third).await, 32 << 10);
    for sandbox in [&first, &second, &third] {
        let _ = sandbox.kill().await;
    }
}

/// A directory of the caller's may change between two creates, so its
/// root is built at each create and never ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_template_root_is_built_at_the_create() {
    if !require_root("directory_template_root_is_built_at_the_create") {
        return;
    }
    let _turn = ZYGOTE.lock().await;
    let dir = std::env::temp_dir().join(unique_name("root-ahead"));
    let _remove = RemoveDir(dir.clone());
    std::fs::create_dir_all(dir.join("bin")).expect("create the template's /bin");
    copy_program(
        std::path::Path::new("/bin/busybox"),
        &dir.join("bin/busybox"),
        0o755,
    );
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).expect("link /bin/sh");
    let from_dir = || options().template(dir.to_string_lossy().into_owned());

    let first = sandbox().await;
    let zygote = zygote_pid().expect("a zygote runs after a create");
    let root = wait_for_root(zygote);
    let second = create(from_dir()).await;
    assert_ne!(mount_namespace(second.pid()), root);
    std::fs::write(dir.join("added"), "later\n").expect("add a file to the template");
    let third = create(from_dir()).await;
    assert_eq!(run_ok(&third, "cat /added").await, "later\n");
    // The zygote still keeps the root built for the `host` template, and
    // built none for the directory.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(built_roots(zygote), [root]);
    for sandbox in [&first, &second, &third] {
        let _ = sandbox.kill().await;
    }
}

/// A layer cache that was removed is unpacked again at the next create,
/// into the same paths. The root built ahead on the removed layers must
/// not be handed over: its overlay shows the deleted files, so the
/// sandbox would have no programs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_layers_not_handed_over() {
    if !require_root("removed_layers_not_handed_over") {
        return;
    }
    let _turn = ZYGOTE.lock().await;
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("root-ahead-layers");
    let _ = std::fs::remove_dir_all(&cache);
    // Only image templates read it, and only this test uses one.
    std::env::set_var(soulbox_core::image::LAYER_CACHE_VAR, &cache);
    let image_dir = TempDir::new("root-ahead-image");
    let mut upper = Layer::new();
    upper.file("etc/marker", unique_name("layer").as_bytes(), 0o644);
    let image = Image::with_layer(upper.finish(), json!({}));
    write_dir(image_dir.path(), &oci_layout_files(&[(None, &image)]));
    let from_image = || options().template(image_dir.path().to_string_lossy().into_owned());

    let first = create(from_image()).await;
    let marker = run_ok(&first, "cat /etc/marker").await;
    let zygote = zygote_pid().expect("a zygote runs after a create");
    wait_for_root(zygote);
    std::fs::remove_dir_all(&cache).expect("remove the layer cache");

    // The mount namespaces cannot tell which root the second sandbox got:
    // the one dropped may give its inode number to the one PID 1 makes.
    let second = create(from_image()).await;
    let output = sh(&second, "cat /etc/marker").await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), marker);
    for sandbox in [&first, &second] {
        let _ = sandbox.kill().await;
    }
}

/// Set for the run of [`host_mount_changes_drop_the_built_root`] in a
/// mount namespace of its own.
const IN_PRIVATE_MOUNTS_VAR: &str = "SOULBOX_TEST_ROOT_AHEAD_IN_PRIVATE_MOUNTS";

/// Waits up to 5 s for the zygote to hold no built root.
fn wait_for_no_root(zygote: i32, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !built_roots(zygote).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the zygote still holds the root it built before {after}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_mount_command(args: &[&str]) {
    let status = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(status.success(), "{args:?} failed: {status}");
}

/// A root built ahead binds the host's /usr as it was mounted at the
/// build. A file system mounted under /usr afterwards must show in the
/// next sandbox, and one unmounted afterwards must not. The zygote must
/// also drop the root at once, so that it keeps no unmounted file system
/// busy. The test runs itself again in a mount namespace of its own, where
/// it mounts and unmounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mount_changes_drop_the_built_root() {
    if !require_root("host_mount_changes_drop_the_built_root") {
        return;
    }
    let _turn = ZYGOTE.lock().await;
    if std::env::var_os(IN_PRIVATE_MOUNTS_VAR).is_some() {
        check_host_mount_changes().await;
        return;
    }
    let mut unshare = std::process::Command::new("unshare");
    unshare.args(["--mount", "--propagation", "private"]);
    run_again(
        unshare,
        "host_mount_changes_drop_the_built_root",
        IN_PRIVATE_MOUNTS_VAR,
    );
}

/// Runs the test named `test` of this binary again, as the last arguments
/// of `launcher` and with `var` set, and checks that it passed.
fn run_again(mut launcher: std::process::Command, test: &str, var: &str) {
    let test_binary = std::env::current_exe().expect("find the test binary");
    let output = launcher
        .arg(&test_binary)
        .args(["--exact", test, "--nocapture"])
        .env(var, "1")
        .output()
        .unwrap_or_else(|e| panic!("run {launcher:?}: {e}"));
    let report = format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the second run of {test} failed: {report}"
    );
    assert!(
        report.contains("1 passed"),
        "the second run of {test} ran no test: {report}"
    );
}

/// Checks [`host_mount_changes_drop_the_built_root`] in the test's own
/// mount namespace, where it may cover /usr/local.
async fn check_host_mount_changes() {
    let covered = "/usr/local";
    let marker_path = format!("{covered}/soulbox-marker");
    let marker = unique_name("mounted-later");

    let first = sandbox().await;
    let zygote = zygote_pid().expect("a zygote runs after a create");
    let root = wait_for_root(zygote);
    // A mount that no source of the root is at, above or below keeps it.
    // The zygote handles a change within milliseconds, and builds no new
    // root until the next create, so a dropped root would be missing.
    for command in [
        &["mount", "-t", "tmpfs", "soulbox-test", "/mnt"][..],
        &["umount", "/mnt"],
    ] {
        run_mount_command(command);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            built_roots(zygote),
            std::slice::from_ref(&root),
            "{command:?}, which the root does not depend on, dropped the root"
        );
    }

    run_mount_command(&["mount", "-t", "tmpfs", "soulbox-test", covered]);
    std::fs::write(&marker_path, &marker).expect("write the marker into the new tmpfs");
    wait_for_no_root(zygote, "the mount");
    let second = sandbox().await;
    assert_eq!(
        run_ok(&second, &format!("cat {marker_path}")).await,
        marker,
        "a file system mounted on the host is missing from the next sandbox"
    );

    wait_for_root(zygote);
    run_mount_command(&["umount", covered]);
    wait_for_no_root(zygote, "the unmount");
    let third = sandbox().await;
    let output = sh(&third, &format!("test -e {marker_path}")).await;
    assert!(
        !output.status.success(),
        "a file system unmounted on the host is still in the next sandbox"
    );
    for sandbox in [&first, &second, &third] {
        let _ = sandbox.kill().await;
    }
}

/// Set for the run of [`mount_with_request_drops_the_root`] in a mount
/// namespace of its own.
const ONE_POLL_IN_PRIVATE_MOUNTS_VAR: &str = "SOULBOX_TEST_ROOT_AHEAD_ONE_POLL_IN_PRIVATE_MOUNTS";

/// A mount that reaches the zygote in the same poll as the next request
/// must still drop its built root, because that poll resets the watch and
/// the hand-over would not see the change again. The test stops the
/// zygote, mounts a tmpfs over /usr/local and sends the create's request,
/// so that both are pending when the zygote continues. Without the stop
/// this happens when a mount and a create follow a create while the
/// zygote builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_with_request_drops_the_root() {
    if !require_root("mount_with_request_drops_the_root") {
        return;
    }
    let _turn = ZYGOTE.lock().await;
    if std::env::var_os(ONE_POLL_IN_PRIVATE_MOUNTS_VAR).is_some() {
        check_mount_with_request().await;
        return;
    }
    let mut unshare = std::process::Command::new("unshare");
    unshare.args(["--mount", "--propagation", "private"]);
    run_again(
        unshare,
        "mount_with_request_drops_the_root",
        ONE_POLL_IN_PRIVATE_MOUNTS_VAR,
    );
}

/// Returns a duplicate of the zygote's end of its channel (fd 3), taken
/// with pidfd_getfd, on which a pending request shows as POLLIN.
fn zygote_channel(zygote: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, zygote, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open of the zygote {zygote} failed: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd as i32) };
    let pidfd = std::os::fd::AsRawFd::as_raw_fd(&pidfd);
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that
    // process and flags, and returns a new descriptor or -1.
    let channel = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, 3, 0) };
    assert!(
        channel >= 0,
        "pidfd_getfd of the zygote's fd 3 failed: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: pidfd_getfd returned a new descriptor that nothing else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(channel as i32) }
}

/// Waits up to 5 s for process `pid` to be stopped by a signal.
fn wait_until_stopped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        if state == Some("T") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} is not stopped after 5 s: {stat}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Returns whether `fd` turns readable within `timeout_ms`.
fn readable_within(fd: &std::os::fd::OwnedFd, timeout_ms: i32) -> bool {
    let mut fds = [libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(fd),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `fds` is a valid, writable array of one pollfd.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
    ready > 0 && fds[0].revents & libc::POLLIN != 0
}

/// Checks [`mount_with_request_drops_the_root`] in the test's own mount
/// namespace, where it may cover /usr/local.
async fn check_mount_with_request() {
    let covered = "/usr/local";
    let marker_path = format!("{covered}/soulbox-marker");
    let marker = unique_name("mounted-with-request");

    let first = sandbox().await;
    let zygote = zygote_pid().expect("a zygote runs after a create");
    wait_for_root(zygote);
    let channel = zygote_channel(zygote);
    // SAFETY: kill takes plain integers; the zygote is this process's
    // child, reaped only by its own thread.
    assert_eq!(unsafe { libc::kill(zygote, libc::SIGSTOP) }, 0);
    wait_until_stopped(zygote);

    run_mount_command(&["mount", "-t", "tmpfs", "soulbox-test", covered]);
    std::fs::write(&marker_path, &marker).expect("write the marker into the new tmpfs");
    let create = tokio::spawn(sandbox());
    // Well within the 2 s that the host waits for the zygote's reply.
    let request_sent = readable_within(&channel, 1000);
    drop(channel);
    // SAFETY: as for SIGSTOP above.
    assert_eq!(unsafe { libc::kill(zygote, libc::SIGCONT) }, 0);
    assert!(request_sent, "the create sent no request to the zygote");
    let second = create.await.expect("the create panicked");
    assert_eq!(
        zygote_pid(),
        Some(zygote),
        "the zygote was replaced, so the create did not go through it"
    );
    let output = sh(&second, &format!("cat {marker_path}")).await;
    assert_eq!(
        stdout(&output),
        marker,
        "a file system mounted while the request waited is missing from the sandbox: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    run_mount_command(&["umount", covered]);
    for sandbox in [&first, &second] {
        let _ = sandbox.kill().await;
    }
}

/// Set for the run of [`zygote_keeps_its_root_in_a_chroot`] inside the
/// chroot.
const IN_CHROOT_VAR: &str = "SOULBOX_TEST_ROOT_AHEAD_IN_CHROOT";

/// Runs the command given after the empty directory $1 in a chroot whose
/// root is a tmpfs mount point, as pivot_root needs. Each top-level
/// directory of the host is bound in, so the test binary is found
/// wherever the checkout is. All of it happens in a mount namespace of
/// the shell's own, whose root is another tmpfs. The chroot is at /inner, the
/// host's root at /old and its /proc at /proc. So a sandbox that gets the
/// namespace's root instead of its own writes into that tmpfs, not into
/// the host's /etc.
const CHROOT_SCRIPT: &str = r#"
set -e
dir=$1
shift
mount -t tmpfs outer "$dir"
mkdir "$dir/old" "$dir/inner" "$dir/proc"
mount --rbind /proc "$dir/proc"
mount -t tmpfs chroot "$dir/inner"
for path in /*; do
    entry=${path#/}
    if [ -L "$path" ]; then
        ln -s "$(readlink "$path")" "$dir/inner/$entry"
    elif [ -d "$path" ]; then
        mkdir "$dir/inner/$entry"
        mount --rbind "$path" "$dir/inner/$entry"
    fi
done
cd "$dir"
pivot_root . old
exec /old/bin/busybox chroot /inner "$@"
"#;

/// A host process in a chroot: the zygote must stay in the chroot after
/// a build, and no sandbox may get the mount namespace's root in place of
/// its own. setns into a root built under a chroot gives the namespace's
/// root, so such a root must not be handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zygote_keeps_its_root_in_a_chroot() {
    if !require_root("zygote_keeps_its_root_in_a_chroot") {
        return;
    }
    let _turn = ZYGOTE.lock().await;
    if std::env::var_os(IN_CHROOT_VAR).is_some() {
        check_zygote_root_in_chroot().await;
        return;
    }
    let dir = std::env::temp_dir().join(unique_name("root-ahead-chroot"));
    std::fs::create_dir(&dir).expect("create the chroot's mount point");
    let _remove = RemoveDir(dir.clone());
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .args(["--mount", "--propagation", "private"])
        .args(["sh", "-c", CHROOT_SCRIPT, "sh"])
        .arg(&dir);
    run_again(unshare, "zygote_keeps_its_root_in_a_chroot", IN_CHROOT_VAR);
}

/// Checks, inside the chroot, the sandboxes and the zygote's root for
/// [`zygote_keeps_its_root_in_a_chroot`].
async fn check_zygote_root_in_chroot() {
    use std::os::unix::fs::MetadataExt;
    let root_id = |path: &str| {
        let metadata = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}"));
        (metadata.dev(), metadata.ino())
    };
    // The zygote serves the second create only after its build for the
    // first, so the second sandbox gets whatever that build made.
    let first = sandbox().await;
    let second = sandbox().await;
    let listing = "ls -A /";
    assert_eq!(
        run_ok(&second, listing).await,
        run_ok(&first, listing).await,
        "the second sandbox's root is not the template's"
    );
    assert_eq!(
        run_ok(&second, "cat /etc/hostname").await.trim(),
        second.id()
    );

    let zygote = zygote_pid().expect("a zygote runs after a create");
    let deadline = Instant::now() + Duration::from_secs(5);
    let zygote_root = format!("/proc/{zygote}/root/");
    while root_id(&zygote_root) != root_id("/") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        root_id(&zygote_root),
        root_id("/"),
        "the zygote left the chroot after it built a root"
    );
    for sandbox in [&first, &second] {
        let _ = sandbox.kill().await;
    }
}

/// Removes a directory tree when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
