//! Directory templates: a sandbox whose root is a directory containing a root
//! file system, used read-only as it is, with nothing of the host's.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use soulbox_core::{Error, Sandbox, SandboxOptions};
use soulbox_tests::*;

/// A small root file system built for one test from the host's `sh`, `cat`,
/// `rm` and `mkdir` and the libraries they load, removed when the guard
/// drops.
struct RootFs {
    dir: PathBuf,
}

impl RootFs {
    fn build(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir(&dir).expect("create the root file system's directory");
        let rootfs = Self { dir };
        for program in ["/bin/sh", "/bin/cat", "/bin/rm", "/bin/mkdir"] {
            rootfs.copy_program(program);
        }
        rootfs
    }

    /// Copies `program` to the same path, with every library `ldd` lists.
    fn copy_program(&self, program: &str) {
        self.copy_file(Path::new(program), 0o755);
        let ldd = std::process::Command::new("ldd")
            .arg(program)
            .output()
            .expect("run the host's ldd");
        assert!(ldd.status.success(), "ldd {program} failed: {ldd:?}");
        // Lines read "libc.so.6 => /lib/.../libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no path.
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = line
                .split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(Path::new);
            if let Some(library) = path {
                self.copy_file(library, 0o755);
            }
        }
    }

    /// Copies a host file (following links) to the same path in the root.
    fn copy_file(&self, host: &Path, mode: u32) {
        let target = self.path(host);
        std::fs::create_dir_all(target.parent().expect("a file has a parent"))
            .expect("create directories in the root file system");
        copy_program(host, &target, mode);
    }

    /// Returns the host path of `inside`, an absolute path in the root file
    /// system.
    fn path(&self, inside: impl AsRef<Path>) -> PathBuf {
        let relative = inside.as_ref().strip_prefix("/").unwrap_or(inside.as_ref());
        self.dir.join(relative)
    }

    fn write(&self, inside: &str, contents: &str) {
        let path = self.path(inside);
        std::fs::create_dir_all(path.parent().expect("a file has a parent"))
            .expect("create directories in the root file system");
        std::fs::write(&path, contents).expect("write a file in the root file system");
    }

    fn options(&self) -> SandboxOptions {
        options().template(self.dir.to_str().expect("temporary paths are UTF-8"))
    }
}

impl Drop for RootFs {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("remove {}: {e}", self.dir.display());
        }
    }
}

/// A host directory outside the root file system, removed on drop.
struct HostDir(PathBuf);

impl HostDir {
    fn create(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).expect("create a host directory");
        Self(path)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn create(rootfs: &RootFs) -> Sandbox {
    within_limit("create", Sandbox::create(rootfs.options()))
        .await
        .expect("create a sandbox from a directory template")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_is_whole_root() {
    if !require_root("directory_is_whole_root") {
        return;
    }
    let rootfs = RootFs::build("rootfs-own");
    rootfs.write("/srv/marker", "from the template\n");
    let sandbox = create(&rootfs).await;

    assert_eq!(
        run_ok(&sandbox, "cat /srv/marker").await,
        "from the template\n"
    );
    // Host programs, which the `host` template binds, are absent.
    let absent = "for p in /usr/bin/python3 /usr/bin/env /etc/passwd; do \
                  [ -e $p ] && echo present $p; done; echo checked";
    assert_eq!(run_ok(&sandbox, absent).await, "checked\n");
    assert_eq!(
        run_ok(&sandbox, "cat /etc/hostname").await.trim_end(),
        sandbox.id(),
        "/etc/hostname does not name the sandbox"
    );
    // The home that commands start in is made, and belongs to the user.
    let home = run_ok(&sandbox, "pwd; echo note > here; cat here").await;
    assert_eq!(home, "/home/user\nnote\n");
    let status = run_ok(&sandbox, "cat /proc/self/status").await;
    let uid_line = status.lines().find(|l| l.starts_with("Uid:"));
    assert_eq!(
        uid_line.and_then(|l| l.split_whitespace().nth(1)),
        Some("1000"),
        "commands do not run as the sandbox user: {uid_line:?}"
    );
    let info = sandbox.get_info().await.expect("get the sandbox's info");
    assert_eq!(info.template, rootfs.dir.to_str().unwrap());
    sandbox.kill().await.expect("kill the sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stay_out_of_the_directory() {
    if !require_root("writes_stay_out_of_the_directory") {
        return;
    }
    let rootfs = RootFs::build("rootfs-writes");
    rootfs.write("/srv/marker", "original\n");
    let before = tree(&rootfs.dir);
    let sandbox = create(&rootfs).await;
    let changes = "echo changed > /srv/marker && echo new > /bin/new && rm /bin/cat \
                   && mkdir -p /opt/made && echo done";
    let output = sandbox
        .shell(changes)
        .user("root")
        .output()
        .await
        .expect("run the changes as root");
    assert_eq!(stdout(&output), "done\n", "changes failed: {output:?}");
    sandbox.kill().await.expect("kill the sandbox");

    assert_eq!(
        tree(&rootfs.dir),
        before,
        "the sandbox changed its template directory"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.path("/srv/marker")).unwrap(),
        "original\n"
    );
}

/// Lists every path under `dir` with its size, sorted.
fn tree(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read a template directory") {
            let entry = entry.expect("read a directory entry");
            let meta = entry.metadata().expect("stat a template entry");
            if meta.is_dir() {
                pending.push(entry.path());
            }
            found.push((entry.path(), meta.len()));
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbolic_links_in_the_template_resolve_inside() {
    if !require_root("symbolic_links_in_the_template_resolve_inside") {
        return;
    }
    // /etc is an absolute link to a path that exists on the host as well as
    // in the template. Followed before the sandbox's root is in place, it
    // would lead to the host's directory.
    let decoy = PathBuf::from("/var/tmp").join(unique_name("etc-decoy"));
    let host_decoy = HostDir::create(decoy.clone());
    std::fs::write(host_decoy.0.join("hostname"), "host's own\n").unwrap();
    let rootfs = RootFs::build("rootfs-links");
    std::fs::create_dir_all(rootfs.path(&decoy)).unwrap();
    symlink(&decoy, rootfs.path("/etc")).unwrap();

    let sandbox = create(&rootfs).await;
    assert_eq!(
        run_ok(&sandbox, "cat /etc/hostname").await.trim_end(),
        sandbox.id()
    );
    sandbox.kill().await.expect("kill the sandbox");
    assert_eq!(
        std::fs::read_to_string(host_decoy.0.join("hostname")).unwrap(),
        "host's own\n",
        "creating the sandbox wrote through the template's /etc link to the host"
    );
    assert!(
        !host_decoy.0.join("hosts").exists(),
        "creating the sandbox made /etc/hosts in the host's directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_etc_files_are_replaced_in_the_sandbox() {
    if !require_root("linked_etc_files_are_replaced_in_the_sandbox") {
        return;
    }
    let target = HostDir::create(PathBuf::from("/var/tmp").join(unique_name("hosts-target")));
    std::fs::write(target.0.join("hosts"), "host's hosts\n").unwrap();
    let rootfs = RootFs::build("rootfs-etc-links");
    std::fs::create_dir_all(rootfs.path("/etc")).unwrap();
    symlink(target.0.join("hosts"), rootfs.path("/etc/hosts")).unwrap();

    let sandbox = create(&rootfs).await;
    let hosts = run_ok(&sandbox, "cat /etc/hosts").await;
    assert!(
        hosts.contains(sandbox.id()) && hosts.contains("localhost"),
        "/etc/hosts in the sandbox is not its own: {hosts:?}"
    );
    sandbox.kill().await.expect("kill the sandbox");
    assert_eq!(
        std::fs::read_to_string(target.0.join("hosts")).unwrap(),
        "host's hosts\n"
    );
    assert!(
        std::fs::symlink_metadata(rootfs.path("/etc/hosts"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the template's own link was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_mount_point_rejected() {
    if !require_root("linked_mount_point_rejected") {
        return;
    }
    let rootfs = RootFs::build("rootfs-proc-link");
    symlink("/proc", rootfs.path("/proc")).unwrap();
    let error = within_limit("create", Sandbox::create(rootfs.options()))
        .await
        .expect_err("a template whose /proc is a link was accepted");
    let message = format!("{error:#}");
    assert!(
        message.contains("/proc is a symbolic link in the template"),
        "unexpected error: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_template_names_rejected_before_anything_is_made() {
    if !require_root("bad_template_names_rejected_before_anything_is_made") {
        return;
    }
    let rootfs = RootFs::build("rootfs-names");
    let file = rootfs.path("/bin/cat");
    let missing = rootfs.path("/missing");
    let state_dir = soulbox_core::diagnostics::state_dir().display().to_string();
    let cases = [
        (
            "ubuntu".to_string(),
            "neither \"host\", an absolute path nor",
        ),
        (
            "relative/dir".to_string(),
            "neither \"host\", an absolute path nor",
        ),
        (missing.display().to_string(), "cannot be opened"),
        (
            file.display().to_string(),
            "is not a directory, a tar archive",
        ),
        ("/".to_string(), "is the host's root"),
        (state_dir, "overlaps SoulBox's state directory"),
    ];
    for (template, expected) in cases {
        let error = Sandbox::create(options().template(template.clone()))
            .await
            .expect_err("a bad template was accepted");
        assert!(
            matches!(&error, Error::InvalidArgument(m) if m.contains(expected)),
            "template {template:?}: expected an InvalidArgument with {expected:?}, got {error}"
        );
    }
}

/// Kinds of special file that a template may hold where PID 1 expects a
/// regular file or a directory.
#[derive(Debug, Clone, Copy)]
enum Special {
    Fifo,
    Socket,
    CharDevice,
    RegularFile,
}

impl Special {
    /// Creates this kind of file at `path` on the host.
    fn create(self, path: &Path) {
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .expect("test paths have no NUL byte");
        let status = match self {
            // SAFETY: `cpath` is a valid C string.
            Self::Fifo => unsafe { libc::mkfifo(cpath.as_ptr(), 0o644) },
            // SAFETY: `cpath` is a valid C string.
            Self::CharDevice => unsafe {
                libc::mknod(cpath.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3))
            },
            Self::Socket => {
                let listener = std::os::unix::net::UnixListener::bind(path)
                    .unwrap_or_else(|e| panic!("bind a socket at {}: {e}", path.display()));
                // The socket file stays after the listener closes.
                drop(listener);
                0
            }
            Self::RegularFile => {
                std::fs::write(path, "not a directory\n").expect("write a file");
                0
            }
        };
        assert_eq!(
            status,
            0,
            "create a {self:?} at {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }

    fn matches(self, file_type: std::fs::FileType) -> bool {
        use std::os::unix::fs::FileTypeExt;
        match self {
            Self::Fifo => file_type.is_fifo(),
            Self::Socket => file_type.is_socket(),
            Self::CharDevice => file_type.is_char_device(),
            Self::RegularFile => file_type.is_file(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_etc_files_are_replaced() {
    if !require_root("special_etc_files_are_replaced") {
        return;
    }
    // Opening a FIFO for writing blocks until a reader comes, so PID 1 must
    // not open one. A device node cannot be opened on the nodev root.
    let layouts = [
        (Special::Fifo, Special::CharDevice),
        (Special::Socket, Special::Fifo),
    ];
    for (hostname, hosts) in layouts {
        let rootfs = RootFs::build("rootfs-etc-special");
        std::fs::create_dir_all(rootfs.path("/etc")).unwrap();
        hostname.create(&rootfs.path("/etc/hostname"));
        hosts.create(&rootfs.path("/etc/hosts"));

        let created = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            Sandbox::create(rootfs.options()),
        )
        .await;
        let sandbox = match created {
            Ok(Ok(sandbox)) => sandbox,
            Ok(Err(e)) => panic!("{hostname:?} at /etc/hostname, {hosts:?} at /etc/hosts: {e}"),
            Err(_) => panic!("{hostname:?} at /etc/hostname, {hosts:?} at /etc/hosts: create hung"),
        };
        assert_eq!(
            run_ok(&sandbox, "cat /etc/hostname").await.trim_end(),
            sandbox.id(),
            "/etc/hostname replacing a {hostname:?}"
        );
        let hosts_file = run_ok(&sandbox, "cat /etc/hosts").await;
        assert!(
            hosts_file.contains(sandbox.id()),
            "/etc/hosts replacing a {hosts:?} is not the sandbox's own: {hosts_file:?}"
        );
        sandbox.kill().await.expect("kill the sandbox");
        for (name, kind) in [("/etc/hostname", hostname), ("/etc/hosts", hosts)] {
            let meta = std::fs::symlink_metadata(rootfs.path(name)).unwrap();
            assert!(
                kind.matches(meta.file_type()),
                "the template's {name} is no longer a {kind:?}"
            );
        }
    }
}

/// Creates a sandbox from `rootfs`, expecting the setup to fail, and
/// returns the error's message.
async fn setup_error(rootfs: &RootFs) -> String {
    let error = within_limit("create", Sandbox::create(rootfs.options()))
        .await
        .expect_err("a template that cannot work was accepted");
    assert!(
        matches!(error, Error::Setup { .. }),
        "expected a setup error, got {error:?}"
    );
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_etc_named_with_fix() {
    if !require_root("unusable_etc_named_with_fix") {
        return;
    }
    let rootfs = RootFs::build("rootfs-etc-dir");
    std::fs::create_dir_all(rootfs.path("/etc/hostname")).unwrap();
    let message = setup_error(&rootfs).await;
    assert!(
        message.contains("/etc/hostname is a directory in the template"),
        "the error does not name the directory: {message}"
    );
    assert!(
        message.contains("must be a file, a symbolic link or absent"),
        "the error does not give the fix: {message}"
    );

    let rootfs = RootFs::build("rootfs-etc-file");
    Special::RegularFile.create(&rootfs.path("/etc"));
    let message = setup_error(&rootfs).await;
    assert!(
        message.contains("/etc in the template must be a directory"),
        "the error does not give the fix: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_directory_mount_points_rejected() {
    if !require_root("non_directory_mount_points_rejected") {
        return;
    }
    let cases = [
        ("dev", Special::RegularFile, "a regular file"),
        ("proc", Special::Fifo, "a FIFO"),
        ("tmp", Special::Socket, "a socket"),
        ("sys", Special::CharDevice, "a device node"),
    ];
    for (name, kind, described) in cases {
        let rootfs = RootFs::build("rootfs-mount-point");
        kind.create(&rootfs.path(format!("/{name}")));
        let message = setup_error(&rootfs).await;
        let expected = format!("/{name} is {described} in the template");
        assert!(
            message.contains(&expected),
            "{kind:?} at /{name}: {message}"
        );
        assert!(
            message.contains("must be directories or absent"),
            "{kind:?} at /{name}, the error does not give the fix: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_file_systems_rejected() {
    if !require_root("kernel_file_systems_rejected") {
        return;
    }
    // The `host` template leaves /sys out, and a directory on sysfs or
    // procfs would show the host's kernel state to the sandbox.
    let cases = [
        ("/proc/self", "procfs"),
        ("/proc/sys", "procfs"),
        ("/sys/kernel", "sysfs"),
    ];
    for (template, file_system) in cases {
        let error = Sandbox::create(options().template(template))
            .await
            .expect_err("a kernel file system was accepted as a template");
        let message = error.to_string();
        assert!(
            matches!(&error, Error::InvalidArgument(_)),
            "template {template:?}: expected an InvalidArgument, got {error:?}"
        );
        assert!(
            message.contains(&format!("is on {file_system}")),
            "template {template:?}: {message}"
        );
        assert!(
            message.contains("copy the root file system into a directory"),
            "template {template:?}, the error does not give the fix: {message}"
        );
    }
}
