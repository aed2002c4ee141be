//! Templates built from a `soulbox.toml`: real builds in real sandboxes,
//! and sandboxes created from what they keep.
//!
//! Every test of this file shares one layer cache under the build
//! directory's tmp folder, emptied when the first test starts. Run steps
//! use only what the host template or a busybox root file system has, and
//! no network.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Once;

use soulbox_core::build::{self, BuildEvent, BuildOptions, BuiltTemplate};
use soulbox_core::{Error, ListQuery, Sandbox};
use soulbox_tests::*;

/// Points SoulBox's layer cache at this test binary's own directory and
/// returns it.
fn layer_cache() -> PathBuf {
    static SET: Once = Once::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("build-cache");
    SET.call_once(|| {
        let _ = std::fs::remove_dir_all(&dir);
        // Set before the first sandbox of this process, by the first test
        // to get here, while the others wait in `call_once`.
        std::env::set_var(soulbox_core::image::LAYER_CACHE_VAR, &dir);
    });
    dir
}

/// A build folder for one test, removed when the guard drops.
struct Folder {
    dir: PathBuf,
}

impl Folder {
    /// Makes a folder with `soulbox.toml` holding `spec`, with a comment
    /// unique to this test run so that no earlier build is cached.
    fn new(tag: &str, spec: &str) -> Self {
        layer_cache();
        let dir = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir(&dir).expect("create the build folder");
        let folder = Self { dir };
        folder.write("soulbox.toml", &format!("# {}\n{spec}", unique_name(tag)));
        folder
    }

    fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.dir.join(name), contents).expect("write into the build folder");
    }

    fn path_text(&self) -> String {
        self.dir
            .to_str()
            .expect("temporary paths are UTF-8")
            .to_string()
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds `path`, collecting the step output.
async fn build_at(path: &Path, options: &BuildOptions) -> (Result<BuiltTemplate, Error>, String) {
    let mut output = String::new();
    let mut on_event = |event: BuildEvent<'_>| match event {
        BuildEvent::Stdout(data) | BuildEvent::Stderr(data) => {
            output.push_str(&String::from_utf8_lossy(data));
        }
        BuildEvent::Step { command, .. } => output.push_str(&format!("[step] {command}\n")),
        _ => {}
    };
    let result = within_limit("build", build::build(path, options, &mut on_event)).await;
    (result, output)
}

async fn build_ok(folder: &Folder, options: &BuildOptions) -> BuiltTemplate {
    let (result, output) = build_at(&folder.dir, options).await;
    result.unwrap_or_else(|e| panic!("build {}: {e}\noutput:\n{output}", folder.dir.display()))
}

async fn create(template: &str) -> Sandbox {
    within_limit(
        "create",
        Sandbox::create(options().template(template.to_string())),
    )
    .await
    .unwrap_or_else(|e| panic!("create a sandbox from {template}: {e}"))
}

/// Returns the entries of `dir`, or none where it is missing.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|read| {
            read.flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn file_and_step_kept() {
    if !require_root("file_and_step_kept") {
        return;
    }
    let folder = Folder::new(
        "build-basic",
        r#"
env = { GREETING = "hello" }
run = [
  "cp /home/user/app/data.txt /home/user/app/copy.txt",
  "echo \"$GREETING from $(id -un)\" > /home/user/step.txt",
]

[[files]]
from = "data.txt"
to = "/home/user/app/data.txt"
"#,
    );
    folder.write("data.txt", "from the build folder\n");
    let name = format!("basic-{}", std::process::id());
    let built = build_ok(&folder, &BuildOptions::default().name(name.clone())).await;
    assert!(!built.cached, "a first build was reported as cached");
    assert_eq!(built.name.as_deref(), Some(name.as_str()));

    for template in [name.clone(), folder.path_text()] {
        let sandbox = create(&template).await;
        assert_eq!(
            run_ok(&sandbox, "cat /home/user/app/data.txt").await,
            "from the build folder\n",
            "the copied file, template {template}"
        );
        assert_eq!(
            run_ok(&sandbox, "cat /home/user/app/copy.txt").await,
            "from the build folder\n",
            "the first step's copy, template {template}"
        );
        assert_eq!(
            run_ok(&sandbox, "cat /home/user/step.txt").await,
            "hello from user\n",
            "the second step's file, template {template}"
        );
        // The host's programs are still there, above the built layer.
        assert_eq!(run_ok(&sandbox, "ls /usr/bin/env").await, "/usr/bin/env\n");
        assert_eq!(
            run_ok(&sandbox, "cat /etc/hostname").await.trim(),
            sandbox.id()
        );
    }
    // Only an image gives a default command; this template is built on host.
    let command = soulbox_core::image::default_command(&name).expect("the default command");
    assert_eq!(command, None);
    let listed = build::list().expect("list the built templates");
    assert!(
        listed.iter().any(|t| t.name == name && t.key == built.key),
        "{name} missing from {listed:?}"
    );
}

/// Makes a root file system of the host's static busybox in `folder`,
/// with a directory and a file that a build deletes.
fn busybox_rootfs(folder: &Folder) -> PathBuf {
    let root = folder.dir.join("rootfs");
    for dir in ["bin", "etc", "data/old-dir"] {
        std::fs::create_dir_all(root.join(dir)).expect("create a rootfs directory");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "rm", "mkdir", "ls", "cat", "echo", "test"] {
        symlink("busybox", root.join("bin").join(applet)).expect("link an applet");
    }
    std::fs::write(root.join("etc/removed"), "old\n").expect("write a file");
    std::fs::write(root.join("data/kept-out"), "old\n").expect("write a file");
    std::fs::write(root.join("data/old-dir/inner"), "old\n").expect("write a file");
    root
}

#[tokio::test(flavor = "multi_thread")]
async fn deletions_honoured() {
    if !require_root("deletions_honoured") {
        return;
    }
    let folder = Folder::new(
        "build-deletions",
        r#"
base = "rootfs"
user = "root"
run = [
  "rm /etc/removed",
  "rm -r /data && mkdir /data && echo new > /data/new",
]
"#,
    );
    let rootfs = busybox_rootfs(&folder);
    let built = build_ok(&folder, &BuildOptions::default()).await;

    // What the layer holds: a whiteout and an opaque directory.
    let layer = &built.layer;
    let whiteout = std::fs::symlink_metadata(layer.join("etc/removed")).expect("a whiteout");
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&whiteout.file_type()),
        "etc/removed in the layer is not a whiteout: {whiteout:?}"
    );
    let opaque = xattr_of(&layer.join("data"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]), "data is not opaque");

    let sandbox = create(&folder.path_text()).await;
    let removed = sh(&sandbox, "test -e /etc/removed").await;
    assert!(!removed.status.success(), "/etc/removed is back");
    assert_eq!(run_ok(&sandbox, "ls /data").await, "new\n");
    // The base directory itself is untouched.
    assert!(rootfs.join("etc/removed").is_file());
    assert_eq!(entries(&rootfs.join("data")), ["kept-out", "old-dir"]);
}

fn xattr_of(path: &Path, name: &str) -> Option<Vec<u8>> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, sys; sys.stdout.buffer.write(os.getxattr(sys.argv[1], sys.argv[2]))",
        ])
        .arg(path)
        .arg(name)
        .output()
        .expect("run python3 for getxattr");
    output.status.success().then_some(output.stdout)
}

/// A step that outlives `run_timeout_secs` is killed with what it started,
/// and the build fails with a message that names the key to raise.
#[tokio::test(flavor = "multi_thread")]
async fn step_timeout_fails_build() {
    if !require_root("step_timeout_fails_build") {
        return;
    }
    let folder = Folder::new(
        "build-step-timeout",
        r#"
run_timeout_secs = 1
run = ["echo started; sleep 600 & sleep 600"]
"#,
    );
    let started = std::time::Instant::now();
    let (result, output) = build_at(&folder.dir, &BuildOptions::default()).await;
    let error = result.expect_err("a build whose step sleeps 600 s succeeded");
    let message = error.to_string();
    assert!(matches!(error, Error::Build { .. }), "{error:?}");
    assert!(message.contains("run step 1 of 1"), "{message}");
    assert!(message.contains("timed out after 1 s"), "{message}");
    assert!(message.contains("run_timeout_secs"), "{message}");
    assert!(
        output.contains("started"),
        "step output not streamed: {output}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the build took {:?}",
        started.elapsed()
    );
}

#[test]
fn step_timeout_out_of_range_rejected() {
    if !require_root("step_timeout_out_of_range_rejected") {
        return;
    }
    for value in ["0", "86401"] {
        let folder = Folder::new(
            "build-step-timeout-range",
            &format!("run_timeout_secs = {value}\nrun = [\"true\"]\n"),
        );
        let built = soulbox_within_limit(&["template", "build", "--quiet", &folder.path_text()]);
        let stderr = String::from_utf8_lossy(&built.stderr);
        assert_eq!(built.status.code(), Some(125), "{value}: {built:?}");
        assert!(
            stderr.contains(&format!(
                "run_timeout_secs {value} is out of range; give 1 to 86400"
            )),
            "{value}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_step_leaves_nothing() {
    if !require_root("failing_step_leaves_nothing") {
        return;
    }
    let folder = Folder::new(
        "build-failing",
        r#"
run = ["echo first > /home/user/first", "echo about to fail; exit 7", "echo never"]
"#,
    );
    let cache = layer_cache();
    let built_before = entries(&cache.join("built"));
    let name = format!("failing-{}", std::process::id());
    let (result, output) = build_at(&folder.dir, &BuildOptions::default().name(name.clone())).await;
    let error = result.expect_err("a build whose step exits 7 succeeded");
    let message = error.to_string();
    assert!(matches!(error, Error::Build { .. }), "{error:?}");
    assert!(message.contains("run step 2 of 3"), "{message}");
    assert!(message.contains("exit 7"), "{message}");
    assert!(message.contains("exit code 7"), "{message}");
    assert!(
        output.contains("about to fail"),
        "step output not streamed: {output}"
    );
    assert!(
        !output.contains("[step] echo never"),
        "a step ran after the failure: {output}"
    );

    let built_after = entries(&cache.join("built"));
    let new: Vec<_> = built_after
        .iter()
        .filter(|key| !built_before.contains(key))
        .collect();
    // Other tests build in parallel; none of theirs is named after this one.
    for key in new {
        let json = std::fs::read_to_string(cache.join("built").join(key).join("template.json"))
            .unwrap_or_default();
        assert!(
            !json.contains(&folder.path_text()),
            "the failed build was kept as {key}"
        );
    }
    let staged: Vec<_> = entries(&cache.join("build-staging"))
        .into_iter()
        .filter(|name| name.ends_with(&format!("-{}", std::process::id())))
        .collect();
    assert!(staged.is_empty(), "staging left behind: {staged:?}");
    let error = Sandbox::create(options().template(name.clone()))
        .await
        .expect_err("a failed build's name resolved");
    assert!(
        error.to_string().contains("soulbox template build"),
        "{error}"
    );
    let by_path = Sandbox::create(options().template(folder.path_text()))
        .await
        .expect_err("a failed build's folder resolved");
    assert!(
        by_path.to_string().contains("has not been built"),
        "{by_path}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_rebuild_cached() {
    if !require_root("unchanged_rebuild_cached") {
        return;
    }
    let folder = Folder::new(
        "build-cached",
        r#"
run = ["cat /home/user/input > /home/user/output"]

[[files]]
from = "input"
to = "/home/user/input"
"#,
    );
    folder.write("input", "one\n");
    let first = build_ok(&folder, &BuildOptions::default()).await;
    let (second, output) = build_at(&folder.dir, &BuildOptions::default()).await;
    let second = second.expect("rebuild");
    assert!(second.cached, "an unchanged rebuild ran again");
    assert_eq!(second.key, first.key);
    assert!(
        !output.contains("[step]"),
        "a cached build ran a step: {output}"
    );

    // A changed input file is a new build.
    folder.write("input", "two\n");
    let third = build_ok(&folder, &BuildOptions::default()).await;
    assert!(!third.cached, "a build with a changed file was cached");
    assert_ne!(third.key, first.key);
    let sandbox = create(&folder.path_text()).await;
    assert_eq!(run_ok(&sandbox, "cat /home/user/output").await, "two\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_apply_and_options_override() {
    if !require_root("defaults_apply_and_options_override") {
        return;
    }
    let folder = Folder::new(
        "build-defaults",
        r#"
env = { MODE = "from-template", OTHER = "kept" }
workdir = "/srv/work"
user = "root"
run = ["pwd > /srv/work/build-dir", "echo $MODE > /srv/work/build-mode"]

[resources]
memory_mb = 300
cpu_count = 0.5
"#,
    );
    build_ok(&folder, &BuildOptions::default()).await;
    let template = folder.path_text();

    let sandbox = create(&template).await;
    assert_eq!(run_ok(&sandbox, "cat build-dir").await, "/srv/work\n");
    assert_eq!(run_ok(&sandbox, "cat build-mode").await, "from-template\n");
    assert_eq!(run_ok(&sandbox, "pwd").await, "/srv/work\n");
    assert_eq!(
        run_ok(&sandbox, "echo $MODE $OTHER").await,
        "from-template kept\n"
    );
    assert_eq!(run_ok(&sandbox, "id -un").await, "root\n");
    // Code contexts start where commands do, as the template's user.
    let code = within_limit(
        "run_code",
        sandbox.run_code("import os\n(os.getcwd(), os.getuid())"),
    )
    .await
    .expect("run code");
    assert_eq!(code.text(), Some("('/srv/work', 0)"));
    let info = sandbox.get_info().await.expect("get_info");
    assert_eq!(info.memory_limit, Some(300 << 20));
    assert_eq!(info.cpu_limit, Some(0.5));

    let mut overridden = options()
        .template(template.clone())
        .env("MODE", "from-sandbox");
    overridden.memory_limit = Some(400 << 20);
    overridden.cpu_limit = Some(1.0);
    let sandbox = within_limit("create", Sandbox::create(overridden))
        .await
        .expect("create with overrides");
    assert_eq!(
        run_ok(&sandbox, "echo $MODE $OTHER").await,
        "from-sandbox kept\n"
    );
    let mut command = sandbox.shell("pwd; id -un");
    command.cwd("/").user("user");
    let output = command.output().await.expect("run with cwd and user");
    assert_eq!(stdout(&output), "/\nuser\n");
    let info = sandbox.get_info().await.expect("get_info");
    assert_eq!(info.memory_limit, Some(400 << 20));
    assert_eq!(info.cpu_limit, Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn start_runs_before_create_returns() {
    if !require_root("start_runs_before_create_returns") {
        return;
    }
    let folder = Folder::new(
        "build-start",
        r#"
start = "sleep 0.5; echo up > /tmp/service-up; exec sleep 1000"
ready = "test -f /tmp/service-up"
"#,
    );
    build_ok(&folder, &BuildOptions::default()).await;
    let sandbox = create(&folder.path_text()).await;
    // No wait here: create returned once `ready` exited 0.
    assert_eq!(run_ok(&sandbox, "cat /tmp/service-up").await, "up\n");
    let processes = run_ok(&sandbox, "ps -eo args").await;
    assert!(
        processes.contains("sleep 1000"),
        "start is not running: {processes}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_starts_service_at_hand_over() {
    if !require_root("pool_starts_service_at_hand_over") {
        return;
    }
    let folder = Folder::new(
        "build-pool",
        r#"
start = "echo $$ > /tmp/service-pid; exec sleep 1000"
ready = "test -s /tmp/service-pid"
"#,
    );
    build_ok(&folder, &BuildOptions::default()).await;
    let pool = soulbox_core::SandboxPool::new(options().template(folder.path_text()), 1)
        .expect("start a pool");
    for _ in 0..2 {
        let sandbox = within_limit("pool create", pool.create())
            .await
            .expect("take a sandbox from the pool");
        let pid = run_ok(&sandbox, "cat /tmp/service-pid").await;
        let alive = sh(&sandbox, &format!("kill -0 {}", pid.trim())).await;
        assert!(
            alive.status.success(),
            "the service is not running: {alive:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_timeout_fails_create() {
    if !require_root("ready_timeout_fails_create") {
        return;
    }
    let folder = Folder::new(
        "build-not-ready",
        r#"
start = "sleep 1000"
ready = "echo still waiting; false"
ready_timeout_secs = 1
"#,
    );
    build_ok(&folder, &BuildOptions::default()).await;
    let label = unique_name("not-ready");
    let options = options()
        .template(folder.path_text())
        .kill_on_drop(false)
        .metadata("test", label.clone());
    let error = match within_limit("create", Sandbox::create(options)).await {
        Ok(sandbox) => {
            let _ = sandbox.kill().await;
            panic!("a create whose ready command never succeeds returned");
        }
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(matches!(error, Error::NotReady { .. }), "{error:?}");
    assert!(message.contains("echo still waiting; false"), "{message}");
    assert!(message.contains("still waiting"), "{message}");
    let left = Sandbox::list(&ListQuery::default().metadata("test", label))
        .await
        .expect("list sandboxes");
    assert!(
        left.is_empty(),
        "the failed sandbox is still there: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_outside_folder_rejected() {
    if !require_root("files_outside_folder_rejected") {
        return;
    }
    let outside = HostFile::create(
        std::env::temp_dir().join(unique_name("outside")),
        "secret\n",
    );
    let outside_name = outside
        .path
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a file name")
        .to_string();
    let cases = [
        (format!("../{outside_name}"), "stay inside it"),
        (outside.path.display().to_string(), "stay inside it"),
        ("link".to_string(), "symbolic link"),
        ("sub/../link".to_string(), "stay inside it"),
        ("dir".to_string(), "symbolic link at \"dir/link\""),
    ];
    for (from, expected) in cases {
        let folder = Folder::new(
            "build-escape",
            &format!("run = [\"true\"]\n\n[[files]]\nfrom = {from:?}\nto = \"/home/user/x\"\n"),
        );
        symlink(&outside.path, folder.dir.join("link")).expect("link out of the folder");
        std::fs::create_dir(folder.dir.join("dir")).expect("create a directory");
        symlink(&outside.path, folder.dir.join("dir/link")).expect("link out of the folder");
        let (result, output) = build_at(&folder.dir, &BuildOptions::default()).await;
        let error = result.expect_err(&format!("files.from {from:?} was accepted"));
        let message = error.to_string();
        assert!(
            matches!(error, Error::InvalidArgument(_)),
            "{from}: {error:?}"
        );
        assert!(message.contains("files[0].from"), "{from}: {message}");
        assert!(message.contains(expected), "{from}: {message}");
        assert!(output.is_empty(), "{from}: a step ran: {output}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_keys_named() {
    if !require_root("invalid_keys_named") {
        return;
    }
    let cases = [
        ("rn = [\"true\"]\n", "unknown field `rn`"),
        ("network = \"wifi\"\n", "network \"wifi\""),
        (
            "[[files]]\nfrom = \"a\"\nto = \"relative\"\n",
            "files[0].to",
        ),
        ("[[files]]\nfrom = \"a\"\nto = \"/tmp/a\"\n", "/tmp"),
        ("[resources]\nmemory_mb = 1\n", "resources.memory_mb"),
        ("base = \"missing-dir\"\n", "base \"missing-dir\""),
        ("name = \"no spaces\"\n", "name:"),
    ];
    for (spec, expected) in cases {
        let folder = Folder::new("build-invalid", spec);
        let (result, _) = build_at(&folder.dir, &BuildOptions::default()).await;
        let error = result.expect_err(&format!("{spec:?} was accepted"));
        assert!(
            matches!(error, Error::InvalidArgument(_)),
            "{spec}: {error:?}"
        );
        assert!(error.to_string().contains(expected), "{spec}: {error}");
    }
}

/// A name with a NUL byte, through the API and through the file's `name`
/// key. An argument cannot contain a NUL byte, so the CLI gets the name
/// from the file.
#[tokio::test(flavor = "multi_thread")]
async fn nul_in_name_named() {
    let nul_name_key = "name = \"a\\u0000b\"\n";
    let cases = [
        (
            "BuildOptions::name",
            "run = [\"true\"]\n",
            BuildOptions::default().name("a\0b"),
            "template \"a\\0b\" contains a NUL byte",
        ),
        (
            "the name key",
            nul_name_key,
            BuildOptions::default(),
            "name: template \"a\\0b\" contains a NUL byte",
        ),
    ];
    for (source, spec, options, expected) in cases {
        let folder = Folder::new("build-nul-name", spec);
        let (result, _) = build_at(&folder.dir, &options).await;
        let error = result.expect_err(&format!("{source}: a NUL byte was accepted"));
        assert!(
            matches!(error, Error::InvalidArgument(_)),
            "{source}: {error:?}"
        );
        assert!(error.to_string().contains(expected), "{source}: {error}");
    }

    let folder = Folder::new("build-nul-name", nul_name_key);
    let built = std::process::Command::new(soulbox_bin())
        .args(["template", "build", &folder.path_text()])
        .env(soulbox_core::image::LAYER_CACHE_VAR, layer_cache())
        .output()
        .expect("run the soulbox binary");
    assert!(
        !built.status.success(),
        "the CLI accepted the name: {built:?}"
    );
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(
        stderr.contains("template \"a\\0b\" contains a NUL byte"),
        "the CLI's error: {stderr}"
    );
}

#[test]
fn cli_builds_lists_and_runs() {
    if !require_root("cli_builds_lists_and_runs") {
        return;
    }
    let folder = Folder::new(
        "build-cli",
        "run = [\"echo built-by-cli > /home/user/cli\"]\n",
    );
    let name = format!("cli-{}", std::process::id());
    let soulbox = |args: &[&str]| {
        std::process::Command::new(soulbox_bin())
            .args(args)
            .env(soulbox_core::image::LAYER_CACHE_VAR, layer_cache())
            .output()
            .expect("run the soulbox binary")
    };
    let dir = folder.path_text();

    let built = soulbox(&["template", "build", "--name", &name, &dir]);
    assert!(built.status.success(), "{built:?}");
    assert!(
        String::from_utf8_lossy(&built.stderr).contains("step 1/1"),
        "{built:?}"
    );
    let again = soulbox(&["template", "build", "--name", &name, &dir]);
    assert!(
        String::from_utf8_lossy(&again.stdout).starts_with("cached"),
        "{again:?}"
    );

    let listed = soulbox(&["template", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&name),
        "{listed:?}"
    );
    let ran = soulbox(&["run", "--template", &name, "--", "cat", "/home/user/cli"]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "built-by-cli\n",
        "{ran:?}"
    );

    let failed = soulbox(&["run", "--template", "no-such-template-here", "--", "true"]);
    assert_eq!(failed.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("soulbox template build --name"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_build_leaves_nothing() {
    if !require_root("killed_build_leaves_nothing") {
        return;
    }
    use std::io::{BufRead, BufReader};
    let folder = Folder::new(
        "build-killed",
        "run = [\"echo partial > /home/user/partial; echo waiting; exec sleep 60\"]\n",
    );
    let mut child = std::process::Command::new(soulbox_bin())
        .args(["template", "build"])
        .arg(&folder.dir)
        .env(soulbox_core::image::LAYER_CACHE_VAR, layer_cache())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the soulbox binary");
    let stderr = child.stderr.take().expect("the build's stderr");
    let mut lines = BufReader::new(stderr).lines();
    let waiting = lines.any(|line| line.is_ok_and(|line| line == "waiting"));
    assert!(waiting, "the step never printed its line");
    let toml = std::fs::canonicalize(folder.dir.join("soulbox.toml")).expect("the toml's path");
    let toml = toml
        .to_str()
        .expect("temporary paths are UTF-8")
        .to_string();
    let query = ListQuery::default().metadata(build::BUILD_LABEL, toml.clone());
    let running = Sandbox::list(&query).await.expect("list sandboxes");
    assert_eq!(
        running.len(),
        1,
        "the build sandbox is not listed: {running:?}"
    );
    // Its writable layer is in memory, so the layer's size adds to the limit.
    let expected = soulbox_core::DEFAULT_DISK_SIZE + soulbox_core::DEFAULT_MEMORY_LIMIT;
    assert_eq!(running[0].memory_limit, Some(expected));

    child.kill().expect("kill the build");
    child.wait().expect("reap the build");

    // The build sandbox ends with the process that created it.
    let mut left = Vec::new();
    for _ in 0..50 {
        left = Sandbox::list(&query).await.expect("list sandboxes");
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        left.is_empty(),
        "the killed build's sandbox is still there: {left:?}"
    );
    let error = Sandbox::create(options().template(folder.path_text()))
        .await
        .expect_err("a killed build's folder resolved");
    assert!(error.to_string().contains("has not been built"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workdir_belongs_to_user() {
    if !require_root("workdir_belongs_to_user") {
        return;
    }
    let folder = Folder::new(
        "build-workdir",
        "workdir = \"/srv/app\"\nrun = [\"id -un > who\"]\n",
    );
    build_ok(&folder, &BuildOptions::default()).await;
    let sandbox = create(&folder.path_text()).await;
    assert_eq!(run_ok(&sandbox, "cat /srv/app/who").await, "user\n");
    assert_eq!(run_ok(&sandbox, "stat -c %U /srv/app").await, "user\n");
    assert_eq!(run_ok(&sandbox, "stat -c %U /srv").await, "root\n");
    assert_eq!(run_ok(&sandbox, "pwd").await, "/srv/app\n");
}

/// A rootless build through the `soulbox` command: the layer keeps the
/// deletion (a whiteout that Linux 5.8 and later let any user make), so a
/// sandbox created from it has the file and lacks the deleted one.
#[test]
fn rootless_cli_builds_and_runs() {
    if !require_root("rootless_cli_builds_and_runs") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let folder = Folder::new(
        "build-rootless",
        "run = [\"echo rootless > /root/made\", \"rm /etc/shells\"]\n",
    );
    let open = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .expect("open a path to the unprivileged user");
    };
    open(&folder.dir, 0o755);
    open(&folder.dir.join("soulbox.toml"), 0o644);
    let binary = folder.dir.join("soulbox");
    std::fs::copy(soulbox_bin(), &binary).expect("copy the soulbox binary");
    open(&binary, 0o755);
    let (uid, gid) = unprivileged_ids();
    let home = folder.dir.join("home");
    std::fs::create_dir(&home).expect("create a home directory");
    let chown = std::process::Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(&home)
        .status()
        .expect("run chown");
    assert!(chown.success());
    let soulbox = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid", &uid, "--regid", &gid, "--clear-groups", "--"])
            .args(["env", "-i", "PATH=/usr/bin:/bin"])
            .arg(format!("HOME={}", home.display()))
            .arg(&binary)
            .args(args)
            .output()
            .expect("run setpriv (util-linux)")
    };
    let dir = folder.path_text();

    let built = soulbox(&["template", "build", "--quiet", &dir]);
    assert!(
        built.status.success(),
        "rootless build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = soulbox(&[
        "run",
        "--template",
        &dir,
        "--",
        "sh",
        "-c",
        "cat /root/made; test -e /etc/shells || echo deleted",
    ]);
    assert!(
        ran.status.success(),
        "rootless run failed: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "rootless\ndeleted\n");
    let built_dir = home.join(".cache/soulbox/layers/built");
    assert_eq!(
        entries(&built_dir).len(),
        1,
        "one build in {}",
        built_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_copied_whole() {
    if !require_root("directory_copied_whole") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let folder = Folder::new(
        "build-directory",
        "run = [\"/home/user/app/bin/tool > /home/user/tool-output\"]\n\n[[files]]\nfrom = \"src\"\nto = \"/home/user/app\"\n",
    );
    for dir in ["src/bin", "src/lib/deep", "src/empty"] {
        std::fs::create_dir_all(folder.dir.join(dir)).expect("create a source directory");
    }
    folder.write("src/lib/deep/data.txt", "deep\n");
    folder.write("src/bin/tool", "#!/bin/sh\necho tool ran\n");
    let tool = folder.dir.join("src/bin/tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    build_ok(&folder, &BuildOptions::default()).await;

    let sandbox = create(&folder.path_text()).await;
    assert_eq!(
        run_ok(&sandbox, "cat /home/user/app/lib/deep/data.txt").await,
        "deep\n"
    );
    assert_eq!(
        run_ok(&sandbox, "cat /home/user/tool-output").await,
        "tool ran\n"
    );
    assert_eq!(
        run_ok(&sandbox, "stat -c %a /home/user/app/bin/tool").await,
        "755\n"
    );
    assert_eq!(
        run_ok(&sandbox, "stat -c %a /home/user/app/lib/deep/data.txt").await,
        "644\n"
    );
    assert_eq!(
        run_ok(&sandbox, "stat -c %U /home/user/app/empty").await,
        "user\n"
    );
}

/// A `[[files]]` source rewritten in place with the same size after the
/// key was hashed and before the copy. The rewrite happens in the build's
/// own `File` event, which `copy_in` sends for a file just before it copies
/// that file, after every file was hashed. The callback runs inside the
/// build, so the rewrite lands between the hash and the copy every time,
/// with no sleep and no test-only hook.
#[tokio::test(flavor = "multi_thread")]
async fn file_rewritten_before_copy_rejected() {
    if !require_root("file_rewritten_before_copy_rejected") {
        return;
    }
    use std::io::Write;
    let folder = Folder::new(
        "build-rewritten",
        "[[files]]\nfrom = \"data.txt\"\nto = \"/home/user/data.txt\"\n",
    );
    let original = "original contents\n";
    let replaced = "replaced contents\n";
    assert_eq!(original.len(), replaced.len());
    folder.write("data.txt", original);
    let source = folder.dir.join("data.txt");
    let mut rewrites = 0;
    let mut on_event = |event: BuildEvent<'_>| {
        if let BuildEvent::File { from, .. } = event {
            if from == Path::new("data.txt") {
                // No O_TRUNC: the file keeps its inode and never changes size.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&source)
                    .expect("open the source to rewrite it");
                file.write_all(replaced.as_bytes())
                    .expect("rewrite the source");
                rewrites += 1;
            }
        }
    };
    let result = within_limit(
        "build",
        build::build(&folder.dir, &BuildOptions::default(), &mut on_event),
    )
    .await;
    assert_eq!(rewrites, 1, "File events for data.txt");
    let error = result.expect_err("a build whose source changed after hashing succeeded");
    let message = error.to_string();
    assert!(
        message.contains("\"data.txt\" changed while it was copied"),
        "{message}"
    );
    assert!(message.contains("build again"), "{message}");

    // The failed build kept nothing, so a build of the original contents
    // runs anew instead of reusing a layer that contains the replaced ones.
    folder.write("data.txt", original);
    let built = build_ok(&folder, &BuildOptions::default()).await;
    assert!(
        !built.cached,
        "a layer with the replaced contents was cached under the original contents' key"
    );
    let sandbox = create(&folder.path_text()).await;
    assert_eq!(run_ok(&sandbox, "cat /home/user/data.txt").await, original);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_base_keeps_image_defaults() {
    if !require_root("image_base_keeps_image_defaults") {
        return;
    }
    use soulbox_tests::image::{docker_save_files, write_tar, Image, Layer};
    let folder = Folder::new(
        "build-image",
        r#"
base = "image.tar"
env = { B = "from-toml" }
run = ["rm /data/old && echo $A $B > /data/env && pwd > /data/pwd && id -un > /data/who"]
"#,
    );
    let mut upper = Layer::new();
    upper
        .dir("data", 0o777)
        .file("data/old", b"old\n", 0o644)
        .file("data/kept", b"kept\n", 0o644);
    let image = Image::with_layer(
        upper.finish(),
        serde_json::json!({
            "Env": ["A=from-image", "B=from-image"],
            "User": "app",
            "WorkingDir": "/home/app",
            "Cmd": ["sh", "-c", "echo image-cmd"],
        }),
    );
    write_tar(
        &folder.dir.join("image.tar"),
        &docker_save_files(&[(&["built-base:1"], &image)]),
    );
    build_ok(&folder, &BuildOptions::default()).await;

    let template = folder.path_text();
    let sandbox = create(&template).await;
    assert_eq!(
        run_ok(&sandbox, "cat /data/env").await,
        "from-image from-toml\n"
    );
    assert_eq!(run_ok(&sandbox, "cat /data/pwd").await, "/home/app\n");
    assert_eq!(run_ok(&sandbox, "cat /data/who").await, "app\n");
    assert_eq!(run_ok(&sandbox, "ls /data").await, "env\nkept\npwd\nwho\n");
    assert_eq!(run_ok(&sandbox, "id -un; pwd").await, "app\n/home/app\n");
    let command = soulbox_core::image::default_command(&template).expect("the default command");
    assert_eq!(
        command,
        Some(vec![
            "sh".to_string(),
            "-c".to_string(),
            "echo image-cmd".to_string()
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn built_template_as_base() {
    if !require_root("built_template_as_base") {
        return;
    }
    let lower = Folder::new(
        "build-lower",
        r#"
env = { LEVEL = "lower", FROM_LOWER = "yes" }
user = "root"
run = ["echo lower > /opt/lower", "echo doomed > /opt/doomed"]
start = "echo up > /tmp/lower-service; exec sleep 1000"
ready = "test -f /tmp/lower-service"

[resources]
cpu_count = 0.5
"#,
    );
    let lower_name = format!("lower-{}", std::process::id());
    build_ok(&lower, &BuildOptions::default().name(lower_name.clone())).await;
    let upper = Folder::new(
        "build-upper",
        &format!(
            r#"
base = "{lower_name}"
env = {{ LEVEL = "upper" }}
run = ["cat /opt/lower > /opt/upper", "rm /opt/doomed"]
"#
        ),
    );
    build_ok(&upper, &BuildOptions::default()).await;

    let template = upper.path_text();
    let sandbox = create(&template).await;
    assert_eq!(run_ok(&sandbox, "cat /opt/upper").await, "lower\n");
    let doomed = sh(&sandbox, "test -e /opt/doomed").await;
    assert!(
        !doomed.status.success(),
        "a deletion above a built base came back"
    );
    assert_eq!(
        run_ok(&sandbox, "echo $LEVEL $FROM_LOWER").await,
        "upper yes\n"
    );
    assert_eq!(run_ok(&sandbox, "id -un").await, "root\n");
    assert_eq!(run_ok(&sandbox, "cat /tmp/lower-service").await, "up\n");
    let info = sandbox.get_info().await.expect("get_info");
    assert_eq!(info.cpu_limit, Some(0.5));

    // A rebuild of the base leaves the upper template on the layer it was
    // built on.
    lower.write(
        "soulbox.toml",
        "user = \"root\"\nrun = [\"echo changed > /opt/lower\"]\n",
    );
    build_ok(&lower, &BuildOptions::default().name(lower_name.clone())).await;
    let sandbox = create(&template).await;
    assert_eq!(run_ok(&sandbox, "cat /opt/lower").await, "lower\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_create_kills_sandbox() {
    if !require_root("dropped_create_kills_sandbox") {
        return;
    }
    let folder = Folder::new(
        "build-dropped",
        "start = \"sleep 1000\"\nready = \"false\"\nready_timeout_secs = 600\n",
    );
    build_ok(&folder, &BuildOptions::default()).await;
    let label = unique_name("dropped");
    let options = options()
        .template(folder.path_text())
        .kill_on_drop(false)
        .metadata("test", label.clone());
    let query = ListQuery::default().metadata("test", label);
    let waited =
        tokio::time::timeout(std::time::Duration::from_secs(2), Sandbox::create(options)).await;
    assert!(
        waited.is_err(),
        "a create whose ready never succeeds returned: {waited:?}"
    );
    let left = Sandbox::list(&query).await.expect("list sandboxes");
    assert!(
        left.is_empty(),
        "the dropped create's sandbox is still there: {left:?}"
    );
}

/// Runs the soulbox binary with this file's layer cache, killing it when it
/// takes longer than [`STEP_LIMIT`], because a build that blocks in a
/// system call would also block an async test's timeout.
fn soulbox_within_limit(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(soulbox_bin())
        .args(args)
        .env(soulbox_core::image::LAYER_CACHE_VAR, layer_cache())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the soulbox binary");
    let deadline = std::time::Instant::now() + STEP_LIMIT;
    while child.try_wait().expect("wait for soulbox").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("soulbox {args:?} did not finish within {STEP_LIMIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect soulbox's output")
}

#[test]
fn fifo_in_files_rejected() {
    if !require_root("fifo_in_files_rejected") {
        return;
    }
    for (from, fifo) in [("pipe", "pipe"), ("dir", "dir/pipe")] {
        let folder = Folder::new(
            "build-fifo",
            &format!("[[files]]\nfrom = {from:?}\nto = \"/home/user/x\"\n"),
        );
        std::fs::create_dir(folder.dir.join("dir")).expect("create a directory");
        let made = std::process::Command::new("mkfifo")
            .arg(folder.dir.join(fifo))
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo failed: {made}");
        let built = soulbox_within_limit(&["template", "build", "--quiet", &folder.path_text()]);
        let stderr = String::from_utf8_lossy(&built.stderr);
        assert_eq!(built.status.code(), Some(125), "{from}: {built:?}");
        assert!(
            stderr.contains("not a regular file or a directory"),
            "{from}: {stderr}"
        );
    }
}

/// A device node in the folder is rejected without being opened: opening
/// one runs its driver. The node here has a major number with no driver,
/// so an open fails with ENXIO (or EACCES on a nodev mount) and the build
/// would report that instead of the node's type.
#[test]
fn device_node_in_files_not_opened() {
    if !require_root("device_node_in_files_not_opened") {
        return;
    }
    let folder = Folder::new(
        "build-device",
        "[[files]]\nfrom = \"node\"\nto = \"/home/user/x\"\n",
    );
    let mknod = std::process::Command::new("mknod")
        .arg(folder.dir.join("node"))
        .args(["c", "240", "0"])
        .status()
        .expect("run mknod");
    assert!(mknod.success(), "mknod failed: {mknod}");
    let built = soulbox_within_limit(&["template", "build", "--quiet", &folder.path_text()]);
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert_eq!(built.status.code(), Some(125), "{built:?}");
    assert!(
        stderr.contains("not a regular file or a directory"),
        "{stderr}"
    );
}

#[test]
fn start_survives_creating_process() {
    if !require_root("start_survives_creating_process") {
        return;
    }
    // The service writes only after `soulbox create` has exited.
    let folder = Folder::new(
        "build-start-output",
        r#"
start = "touch /tmp/started; sleep 1; echo out; echo err >&2; touch /tmp/wrote; exec sleep 1000"
ready = "test -f /tmp/started"
"#,
    );
    let dir = folder.path_text();
    let built = soulbox_within_limit(&["template", "build", "--quiet", &dir]);
    assert!(built.status.success(), "{built:?}");
    let created = soulbox_within_limit(&["create", "--template", &dir]);
    assert!(created.status.success(), "{created:?}");
    let id = String::from_utf8_lossy(&created.stdout).trim().to_string();

    std::thread::sleep(std::time::Duration::from_secs(2));
    let wrote = soulbox_within_limit(&["exec", &id, "--", "test", "-f", "/tmp/wrote"]);
    let processes = soulbox_within_limit(&["exec", &id, "--", "ps", "-eo", "args"]);
    let killed = soulbox_within_limit(&["kill", &id]);
    assert!(killed.status.success(), "{killed:?}");
    assert!(
        wrote.status.success(),
        "the service died at its first output: {wrote:?}"
    );
    assert!(
        String::from_utf8_lossy(&processes.stdout).contains("sleep 1000"),
        "{processes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_builds_same_key() {
    if !require_root("racing_builds_same_key") {
        return;
    }
    // Enough files that saving the layers takes a while, so the two
    // builds of this process save at the same time.
    let folder = Folder::new(
        "build-race",
        r#"
run = ["mkdir /home/user/many && cd /home/user/many && seq 1 3000 | xargs touch && echo done > /home/user/last"]
"#,
    );
    let options = BuildOptions::default().name(unique_name("race").replace("soulbox-test-", ""));
    let (first, second) = tokio::join!(
        build_at(&folder.dir, &options),
        build_at(&folder.dir, &options)
    );
    let first = first
        .0
        .unwrap_or_else(|e| panic!("first build: {e}\n{}", first.1));
    let second = second
        .0
        .unwrap_or_else(|e| panic!("second build: {e}\n{}", second.1));
    assert_eq!(first.key, second.key);
    assert_eq!(entries(&first.layer.join("home/user/many")).len(), 3000);
    assert_eq!(
        std::fs::read_to_string(first.layer.join("home/user/last")).expect("read the last file"),
        "done\n"
    );
    let staging = layer_cache().join("build-staging");
    let leftovers: Vec<String> = entries(&staging)
        .into_iter()
        .filter(|name| name.contains(&first.key))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn ready_output_flood_bounded() {
    if !require_root("ready_output_flood_bounded") {
        return;
    }
    let folder = Folder::new(
        "build-ready-flood",
        r#"
ready = "head -c 400000000 /dev/zero; exit 1"
ready_timeout_secs = 5
"#,
    );
    let dir = folder.path_text();
    let built = soulbox_within_limit(&["template", "build", "--quiet", &dir]);
    assert!(built.status.success(), "{built:?}");
    let created = soulbox_within_limit(&["create", "--template", &dir]);
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert_eq!(created.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("did not exit 0"), "{stderr}");
    assert!(stderr.len() < 16 << 10, "{} bytes of error", stderr.len());

    // The largest resident size of any child this test process reaped:
    // the soulbox processes of this file's tests, none of which needs
    // 200 MiB unless it keeps the ready command's 400 MB.
    // SAFETY: rusage holds only integers, for which zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for getrusage to fill.
    let status = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(status, 0, "getrusage failed");
    let max_rss_mib = usage.ru_maxrss / 1024;
    assert!(
        max_rss_mib < 200,
        "soulbox create grew to {max_rss_mib} MiB"
    );
}
