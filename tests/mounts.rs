//! Host files and directories mounted into a sandbox: read-only or
//! writable, always nosuid and nodev, with targets that resolve inside the
//! sandbox, and bad mounts rejected before anything is created.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use soulbox_core::{Error, Mount, Sandbox, SandboxOptions, SandboxPool};
use soulbox_tests::*;

/// A host directory for one test, removed when the guard drops.
struct HostDir(PathBuf);

impl HostDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir(&dir).expect("create a host directory");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn sandbox_with(mounts: Vec<Mount>) -> Sandbox {
    let mut options = options();
    options.mounts = mounts;
    Sandbox::create(options)
        .await
        .expect("create a sandbox with mounts")
}

/// Returns the mount options of the mount at `target` in the sandbox, as
/// /proc/self/mountinfo lists them (the sixth field, such as `ro,nosuid`).
async fn mount_options(sandbox: &Sandbox, target: &str) -> String {
    let mountinfo = sh(sandbox, "cat /proc/self/mountinfo").await;
    stdout(&mountinfo)
        .lines()
        .find(|line| line.split(' ').nth(4) == Some(target))
        .and_then(|line| line.split(' ').nth(5).map(str::to_string))
        .unwrap_or_else(|| panic!("{target} is not a mount point in the sandbox"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mount_shows_host_files() {
    if !require_root("read_only_mount_shows_host_files") {
        return;
    }
    let host = HostDir::new("mount-ro");
    std::fs::write(host.path().join("notes.txt"), "from the host\n").expect("write a host file");
    let sandbox = sandbox_with(vec![Mount::read_only(host.path(), "/home/user/project")]).await;

    let read = sh(&sandbox, "cat /home/user/project/notes.txt").await;
    assert_eq!(stdout(&read), "from the host\n");
    let write = sh_as_root(&sandbox, "touch /home/user/project/new").await;
    assert!(
        !write.status.success(),
        "root wrote to a read-only mount: {write:?}"
    );
    assert!(!host.path().join("new").exists());
    let options = mount_options(&sandbox, "/home/user/project").await;
    for flag in ["ro", "nosuid", "nodev"] {
        assert!(
            options.split(',').any(|o| o == flag),
            "{flag} missing from {options}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_mount_writes_reach_the_host() {
    if !require_root("writable_mount_writes_reach_the_host") {
        return;
    }
    let host = HostDir::new("mount-rw");
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o777))
        .expect("open the host directory to the sandbox user");
    let sandbox = sandbox_with(vec![Mount::writable(host.path(), "/data/out")]).await;

    let write = sh(&sandbox, "echo result > /data/out/report.txt").await;
    assert!(
        write.status.success(),
        "write to the writable mount: {write:?}"
    );
    let written = host.path().join("report.txt");
    let contents = std::fs::read_to_string(&written).expect("read the file on the host");
    assert_eq!(contents, "result\n");
    let owner = std::fs::metadata(&written).expect("stat the file").uid();
    assert_eq!(owner, 1000, "the sandbox user's uid owns what it wrote");
    let options = mount_options(&sandbox, "/data/out").await;
    assert!(options.split(',').any(|o| o == "rw"), "{options}");
    assert!(options.split(',').any(|o| o == "nosuid"), "{options}");
}

/// Sandbox root cannot leave a setuid or setgid program, a device node or
/// a file capability on the host through a writable mount: each would be
/// a privilege for other host users, whatever nosuid and nodev do inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_mount_takes_no_privileged_files() {
    if !require_root("writable_mount_takes_no_privileged_files") {
        return;
    }
    let host = HostDir::new("mount-setid");
    let sandbox = sandbox_with(vec![Mount::writable(host.path(), "/out")]).await;
    let script = r#"
import os, stat
def attempt(name, call):
    try:
        call()
        print(name, "ok")
    except OSError as e:
        print(name, e.errno)
open("/out/plain", "w").close()
attempt("chmod-setuid", lambda: os.chmod("/out/plain", 0o4755))
attempt("chmod-setgid", lambda: os.chmod("/out/plain", 0o2755))
attempt("open-setuid", lambda: os.close(os.open("/out/created", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt("mknod-device", lambda: os.mknod("/out/null", stat.S_IFCHR | 0o666, os.makedev(1, 3)))
attempt("file-capability", lambda: os.setxattr("/out/plain", "security.capability", b"\x01\x00\x00\x02" + b"\x00" * 16))
attempt("chmod-plain", lambda: os.chmod("/out/plain", 0o755))
"#;
    let output = sh_as_root(&sandbox, &format!("python3 -c '{script}'")).await;
    let expected = "chmod-setuid 1\nchmod-setgid 1\nopen-setuid 1\nmknod-device 1\n\
                    file-capability 1\nchmod-plain ok\n";
    assert_eq!(stdout(&output), expected, "{output:?}");
    for entry in std::fs::read_dir(host.path())
        .expect("list the host directory")
        .flatten()
    {
        let mode = entry.metadata().expect("stat a written file").mode();
        assert_eq!(
            mode & 0o6000,
            0,
            "{} has a setuid or setgid bit",
            entry.path().display()
        );
    }

    let mut unconfined = options();
    unconfined.seccomp = soulbox_core::SeccompPolicy::unconfined();
    unconfined.mounts = vec![Mount::writable(host.path(), "/out")];
    let created = Sandbox::create(unconfined).await;
    assert!(
        matches!(&created, Err(Error::InvalidArgument(m)) if m.contains("seccomp filter")),
        "{created:?}"
    );
}

/// Without a writable mount, the sandbox's own files may still take the
/// bits, which do nothing under nosuid but which package installs set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_bits_stay_allowed_without_writable_mounts() {
    if !require_root("setuid_bits_stay_allowed_without_writable_mounts") {
        return;
    }
    let sandbox = sandbox_with(Vec::new()).await;
    let output = sh_as_root(
        &sandbox,
        "touch /tmp/f && chmod 4755 /tmp/f && stat -c %a /tmp/f",
    )
    .await;
    assert_eq!(stdout(&output), "4755\n", "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mount_and_pool_hand_over() {
    if !require_root("file_mount_and_pool_hand_over") {
        return;
    }
    let host = HostDir::new("mount-file");
    let config = host.path().join("app.toml");
    std::fs::write(&config, "level = 3\n").expect("write a host file");
    let mut options = options();
    options.mounts = vec![Mount::read_only(&config, "/etc/app/app.toml")];
    let pool = SandboxPool::new(options, 1).expect("start a pool");
    let sandbox = within_limit("pool hand-over", pool.create())
        .await
        .expect("hand over a pooled sandbox");

    let read = sh(&sandbox, "cat /etc/app/app.toml").await;
    assert_eq!(stdout(&read), "level = 3\n");
    pool.close().await;
}

/// Builds a directory template with busybox's sh, cat and ls, and an empty
/// /etc.
fn busybox_rootfs() -> HostDir {
    let rootfs = HostDir::new("mount-rootfs");
    let bin = rootfs.path().join("bin");
    std::fs::create_dir_all(&bin).expect("create bin");
    copy_program(Path::new("/usr/bin/busybox"), &bin.join("busybox"), 0o755);
    for applet in ["sh", "cat", "ls"] {
        symlink("busybox", bin.join(applet)).expect("link an applet");
    }
    std::fs::create_dir(rootfs.path().join("etc")).expect("create etc");
    rootfs
}

/// A directory template whose `/data` links to `/etc`: a mount at
/// `/data/NAME` lands in the sandbox's /etc, never in the host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_links_resolve_inside_the_sandbox() {
    if !require_root("target_links_resolve_inside_the_sandbox") {
        return;
    }
    let rootfs = busybox_rootfs();
    symlink("/etc", rootfs.path().join("data")).expect("plant /data -> /etc");
    let source = HostDir::new("mount-src");
    std::fs::write(source.path().join("marker"), "inside\n").expect("write a marker");
    let name = unique_name("escape");

    let mut options = options().template(rootfs.path().to_string_lossy());
    options.mounts = vec![Mount::read_only(source.path(), format!("/data/{name}"))];
    let sandbox = Sandbox::create(options).await.expect("create the sandbox");

    let read = sh(&sandbox, &format!("cat /etc/{name}/marker")).await;
    assert_eq!(stdout(&read), "inside\n");
    assert!(
        !Path::new("/etc").join(&name).exists(),
        "the mount point was made in the host's /etc"
    );
}

/// A directory template whose links go through /proc/self/fd/N, where PID 1
/// keeps the clones of the mounts not yet attached. A target through one is
/// rejected, and no directory appears in the writable host source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_magic_links_are_rejected() {
    if !require_root("target_magic_links_are_rejected") {
        return;
    }
    let rootfs = busybox_rootfs();
    let descriptors = 0..=20;
    for fd in descriptors.clone() {
        symlink(
            format!("/proc/self/fd/{fd}"),
            rootfs.path().join(format!("fd{fd}")),
        )
        .expect("plant /fdN -> /proc/self/fd/N");
    }
    let source = HostDir::new("mount-src");
    let writable = HostDir::new("mount-out");

    for fd in descriptors {
        let mut options = options().template(rootfs.path().to_string_lossy());
        options.mounts = vec![
            Mount::read_only(source.path(), format!("/fd{fd}/planted")),
            Mount::writable(writable.path(), "/out"),
        ];
        let created = Sandbox::create(options).await;
        assert!(created.is_err(), "a mount at /fd{fd}/planted was attached");
        let entries: Vec<_> = std::fs::read_dir(writable.path())
            .expect("list the writable source")
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        assert!(
            entries.is_empty(),
            "/fd{fd}/planted made {entries:?} in the writable host source"
        );
    }
}

/// Swaps `first` and `second`, a directory and a symbolic link, by
/// `renameat2(RENAME_EXCHANGE)` until `stop` is set.
fn swap_until(first: &Path, second: &Path, stop: &std::sync::atomic::AtomicBool) {
    use std::os::unix::ffi::OsStrExt;
    let first = std::ffi::CString::new(first.as_os_str().as_bytes()).expect("no NUL");
    let second = std::ffi::CString::new(second.as_os_str().as_bytes()).expect("no NUL");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: both paths are valid C strings.
        let swapped = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                first.as_ptr(),
                libc::AT_FDCWD,
                second.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        assert_eq!(swapped, 0, "renameat2: {}", std::io::Error::last_os_error());
    }
}

/// A source that a symbolic link replaces after the host has checked it,
/// as code in another sandbox can do through a writable mount: PID 1
/// follows no link in the source, so the state directory never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_swapped_for_link_is_rejected() {
    if !require_root("source_swapped_for_link_is_rejected") {
        return;
    }
    let host = HostDir::new("mount-swap");
    let source = host.path().join("data");
    let link = host.path().join("link");
    std::fs::create_dir(&source).expect("create the source");
    std::fs::write(source.join("marker"), "public\n").expect("write a marker");
    let state_dir = soulbox_core::diagnostics::state_dir();
    symlink(&state_dir, &link).expect("link to the state directory");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (source, link, stop) = (source.clone(), link.clone(), stop.clone());
        std::thread::spawn(move || swap_until(&source, &link, &stop))
    };

    let mut exposed = Vec::new();
    // About one create in ten exposed it before PID 1 refused links.
    for _ in 0..500 {
        let mut options = options();
        options.mounts = vec![Mount::read_only(&source, "/data")];
        let Ok(sandbox) = Sandbox::create(options).await else {
            continue;
        };
        let listing = stdout(&sh_as_root(&sandbox, "ls /data").await);
        if listing.contains("sandboxes") {
            exposed.push(listing);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().expect("the swapping thread ends");
    assert!(
        exposed.is_empty(),
        "{} sandboxes saw the state directory {}: {:?}",
        exposed.len(),
        state_dir.display(),
        exposed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mounts_are_rejected_by_name() {
    if !require_root("bad_mounts_are_rejected_by_name") {
        return;
    }
    let host = HostDir::new("mount-bad");
    let state_dir = soulbox_core::diagnostics::state_dir();
    let cases = [
        (Mount::read_only("relative/dir", "/data"), "relative source"),
        (
            Mount::read_only(host.path().join("missing"), "/data"),
            "cannot use its source",
        ),
        (
            Mount::read_only("/proc/self", "/data"),
            "kernel file system",
        ),
        (Mount::read_only("/", "/host"), "host's root"),
        (Mount::read_only(&state_dir, "/state"), "state directory"),
        (Mount::read_only(host.path(), "data"), "relative target"),
        (
            Mount::read_only(host.path(), "/proc/data"),
            "/proc, /sys or /dev",
        ),
        (Mount::read_only(host.path(), "/a/../etc"), ". or .."),
        (Mount::read_only(host.path(), "/"), "has / as its target"),
    ];
    for (mount, expected) in cases {
        let described = format!("{mount:?}");
        let mut options = options();
        options.mounts = vec![mount];
        match Sandbox::create(options).await {
            Err(Error::InvalidArgument(message)) => assert!(
                message.contains(expected),
                "{described}: {message:?} does not say {expected:?}"
            ),
            other => panic!("{described} should be rejected, got {other:?}"),
        }
    }
    let many = vec![Mount::read_only(host.path(), "/data"); soulbox_core::MAX_MOUNTS + 1];
    let mut options = options();
    options.mounts = many;
    let created = Sandbox::create(options).await;
    assert!(
        matches!(created, Err(Error::InvalidArgument(_))),
        "{created:?}"
    );
}

/// A target under a read-only directory, where PID 1 cannot make the mount
/// point, fails with a message that gives the cause and a writable place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_parent_named_in_error() {
    if !require_root("read_only_parent_named_in_error") {
        return;
    }
    let host = HostDir::new("mount-under-usr");
    let mut options = options();
    options.mounts = vec![Mount::read_only(host.path(), "/usr/soulbox-test-target")];
    match Sandbox::create(options).await {
        Err(error @ Error::Setup { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("/usr/soulbox-test-target"),
                "the message should name the target: {message}"
            );
            assert!(
                message.contains("read-only in the sandbox"),
                "the message should say what is read-only: {message}"
            );
            assert_eq!(error.errno(), Some(libc::EROFS));
        }
        other => panic!("a mount under /usr should fail at setup, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_leave_nothing_on_the_host() {
    if !require_root("mounts_leave_nothing_on_the_host") {
        return;
    }
    let host = HostDir::new("mount-leak");
    let before = host_mounts_mentioning(&host.path().to_string_lossy());
    let sandbox = sandbox_with(vec![Mount::writable(host.path(), "/work")]).await;
    let write = sh(&sandbox, "true").await;
    assert!(write.status.success());
    sandbox.kill().await.expect("kill the sandbox");

    assert_eq!(
        host_mounts_mentioning(&host.path().to_string_lossy()),
        before
    );
    std::fs::remove_dir(host.path()).expect("the host directory is free to remove");
}

/// `soulbox run --mount` as an unprivileged user: PID 1 clones the host
/// directory inside its own user namespace, and the mount stays read-only.
#[test]
fn rootless_cli_mount_is_read_only() {
    if !require_root("rootless_cli_mount_is_read_only") {
        return;
    }
    let binary = soulbox_bin();
    assert!(binary.exists(), "{} was not built", binary.display());
    let host = HostDir::new("mount-rootless");
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open the directory to every user");
    std::fs::write(host.path().join("input.txt"), "shared\n").expect("write a host file");
    std::fs::set_permissions(
        host.path().join("input.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("make the file readable");
    // The unprivileged user may not reach the build directory, so it runs a
    // copy.
    let reachable = host.path().join("soulbox");
    copy_program(&binary, &reachable, 0o755);

    let mount = format!("{}:/data", host.path().display());
    let (uid, gid) = unprivileged_ids();
    let output = std::process::Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &gid, "--clear-groups", "--"])
        .args(["env", "-i", "PATH=/usr/bin:/bin"])
        .arg(&reachable)
        .args(["run", "--mount", &mount, "--", "sh", "-c"])
        .arg("cat /data/input.txt; if touch /data/new 2>/dev/null; then echo wrote; else echo read-only; fi")
        .output()
        .expect("run setpriv (util-linux)");

    assert!(
        output.status.success(),
        "soulbox run --mount as uid {uid} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "shared\nread-only\n"
    );
    assert!(!host.path().join("new").exists());
}

/// Options with `SandboxOptions::mount`, the builder form.
#[test]
fn builder_adds_mounts_in_order() {
    let options = SandboxOptions::default()
        .mount(Mount::read_only("/srv/a", "/a"))
        .mount(Mount::writable("/srv/b", "/b"));
    assert_eq!(
        options.mounts,
        [
            Mount::read_only("/srv/a", "/a"),
            Mount::writable("/srv/b", "/b")
        ]
    );
}
