//! Removal of built templates: `build::remove`, `build::prune` and their
//! CLI commands, on real builds and real sandboxes, and a build whose base
//! is rebuilt while it starts.
//!
//! Every test of this file shares one layer cache under the build
//! directory's tmp folder, emptied when the first test starts. A prune
//! deletes every unnamed build of that cache, so the tests run one at a
//! time.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Once;

use soulbox_core::build::{self, BuildEvent, BuildOptions, BuiltTemplate, LayerOutcome};
use soulbox_core::{Error, Launcher, Sandbox};
use soulbox_tests::*;

/// Serializes the tests of this file, whose prunes see each other's builds.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Points SoulBox's layer cache at this test binary's own directory and
/// returns it.
fn layer_cache() -> PathBuf {
    static SET: Once = Once::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("remove-cache");
    SET.call_once(|| {
        let _ = std::fs::remove_dir_all(&dir);
        std::env::set_var(soulbox_core::image::LAYER_CACHE_VAR, &dir);
    });
    dir
}

/// A build folder for one test, removed when the guard drops.
struct Folder {
    dir: PathBuf,
}

impl Folder {
    /// Makes a folder with `soulbox.toml` containing `spec`, with a comment
    /// unique to this test run so that no earlier build is cached.
    fn new(tag: &str, spec: &str) -> Self {
        layer_cache();
        let dir = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir(&dir).expect("create the build folder");
        let folder = Self { dir };
        folder.write_spec(tag, spec);
        folder
    }

    /// Replaces the `soulbox.toml`, again with a unique comment.
    fn write_spec(&self, tag: &str, spec: &str) {
        let text = format!("# {}\n{spec}", unique_name(tag));
        std::fs::write(self.dir.join("soulbox.toml"), text).expect("write soulbox.toml");
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

async fn build_ok(folder: &Folder, name: Option<&str>) -> BuiltTemplate {
    let mut options = BuildOptions::default();
    if let Some(name) = name {
        options = options.name(name);
    }
    let mut output = String::new();
    let mut on_event = |event: BuildEvent<'_>| {
        if let BuildEvent::Stdout(data) | BuildEvent::Stderr(data) = event {
            output.push_str(&String::from_utf8_lossy(data));
        }
    };
    let result = within_limit("build", build::build(&folder.dir, &options, &mut on_event)).await;
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

fn built_dir(key: &str) -> PathBuf {
    layer_cache().join("built").join(key)
}

fn name_file(name: &str) -> PathBuf {
    layer_cache().join("names").join(name)
}

/// Runs the `soulbox` binary on this file's layer cache.
fn soulbox(args: &[&str]) -> Output {
    std::process::Command::new(soulbox_bin())
        .args(args)
        .env(soulbox_core::image::LAYER_CACHE_VAR, layer_cache())
        .output()
        .expect("run the soulbox binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_deletes_layer_and_name() {
    if !require_root("rm_deletes_layer_and_name") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let folder = Folder::new("remove-basic", "run = [\"echo kept > /home/user/file\"]\n");
    let name = format!("remove-basic-{}", std::process::id());
    let built = build_ok(&folder, Some(&name)).await;
    assert!(
        built_dir(&built.key).join("layer").is_dir(),
        "no layer was built"
    );

    let removed = build::remove(&name).expect("remove the template");
    assert_eq!(removed.name, name);
    assert_eq!(removed.key, built.key);
    assert!(
        matches!(removed.layer, LayerOutcome::Deleted { bytes } if bytes > 0),
        "{:?}",
        removed.layer
    );
    assert!(
        !built_dir(&built.key).exists(),
        "the build is still in the cache"
    );
    assert!(!name_file(&name).exists(), "the name is still registered");
    let listed = build::list().expect("list the templates");
    assert!(
        listed.iter().all(|template| template.name != name),
        "the removed name is listed"
    );

    let by_name = Sandbox::create(options().template(name.clone()))
        .await
        .expect_err("a removed template's name resolved");
    assert!(matches!(by_name, Error::InvalidArgument(_)), "{by_name:?}");
    assert!(by_name.to_string().contains(&name), "{by_name}");
    assert!(
        by_name.to_string().contains("soulbox template build"),
        "{by_name}"
    );
    let by_path = Sandbox::create(options().template(folder.path_text()))
        .await
        .expect_err("a removed template's folder resolved");
    assert!(
        by_path.to_string().contains("has not been built"),
        "{by_path}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_keeps_build_of_other_name() {
    if !require_root("rm_keeps_build_of_other_name") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let folder = Folder::new(
        "remove-two-names",
        "run = [\"echo shared > /home/user/file\"]\n",
    );
    let first = format!("remove-first-{}", std::process::id());
    let second = format!("remove-second-{}", std::process::id());
    let built = build_ok(&folder, Some(&first)).await;
    let again = build_ok(&folder, Some(&second)).await;
    assert_eq!(again.key, built.key, "the same file built to another key");

    let removed = build::remove(&first).expect("remove the first name");
    assert_eq!(removed.layer, LayerOutcome::Kept);
    assert!(
        built_dir(&built.key).join("layer").is_dir(),
        "the shared build was deleted"
    );
    let sandbox = create(&second).await;
    assert_eq!(run_ok(&sandbox, "cat /home/user/file").await, "shared\n");
    sandbox.kill().await.expect("kill the sandbox");

    let removed = build::remove(&second).expect("remove the second name");
    assert!(
        matches!(removed.layer, LayerOutcome::Deleted { .. }),
        "{:?}",
        removed.layer
    );
    assert!(
        !built_dir(&built.key).exists(),
        "the build outlived its last name"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_of_template_in_use() {
    if !require_root("rm_of_template_in_use") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let folder = Folder::new(
        "remove-in-use",
        "run = [\"echo still-here > /home/user/file\"]\n",
    );
    let name = format!("remove-in-use-{}", std::process::id());
    let built = build_ok(&folder, Some(&name)).await;
    let sandbox = create(&name).await;

    let removed = build::remove(&name).expect("remove the template");
    assert_eq!(removed.layer, LayerOutcome::InUse);
    assert!(!name_file(&name).exists(), "the name is still registered");
    assert!(
        built_dir(&built.key).join("layer").is_dir(),
        "the layer of a running sandbox was deleted"
    );
    // The first read of the file, so a deleted lower layer would hide it.
    assert_eq!(
        run_ok(&sandbox, "cat /home/user/file").await,
        "still-here\n"
    );

    let report = build::prune().expect("prune while the sandbox runs");
    assert!(
        report
            .deleted
            .iter()
            .all(|deleted| deleted.key != built.key),
        "prune deleted a layer in use"
    );
    assert!(report.in_use.contains(&built.key), "{report:?}");
    assert_eq!(
        run_ok(&sandbox, "cat /home/user/file").await,
        "still-here\n"
    );

    sandbox.kill().await.expect("kill the sandbox");
    let report = build::prune().expect("prune after the kill");
    assert!(
        report
            .deleted
            .iter()
            .any(|deleted| deleted.key == built.key),
        "{report:?}"
    );
    assert!(report.freed_bytes > 0, "{report:?}");
    assert!(
        !built_dir(&built.key).exists(),
        "prune left the unused layer"
    );
}

/// `/proc/PID/mountinfo` lists only the mounts below the process's root,
/// so a chrooted process that comes first in a mount namespace must not
/// hide the overlay that the namespace's other processes show.
#[tokio::test(flavor = "multi_thread")]
async fn rm_with_chrooted_process_in_namespace() {
    if !require_root("rm_with_chrooted_process_in_namespace") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let folder = Folder::new(
        "remove-chroot",
        "run = [\"echo still-here > /home/user/file\"]\n",
    );
    let name = format!("remove-chroot-{}", std::process::id());
    let built = build_ok(&folder, Some(&name)).await;
    let root = folder.dir.join("root");
    let mount_point = folder.dir.join("mnt");
    let empty_lower = folder.dir.join("empty");
    for dir in [&root, &mount_point, &empty_lower] {
        std::fs::create_dir(dir).expect("create a directory for the mounts");
    }
    let layer = built_dir(&built.key).join("layer");
    // The first process mounts the overlay in a new mount namespace and
    // then chroots into a bind of `/` made before, which lacks that mount.
    let script = format!(
        "mount --rbind / {root} && mount -t overlay overlay -o lowerdir={layer}:{empty} {mnt} \
         && exec chroot {root} sleep 600",
        root = root.display(),
        layer = layer.display(),
        empty = empty_lower.display(),
        mnt = mount_point.display(),
    );
    let mut chrooted = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .spawn()
        .expect("start unshare");
    let proc_root = format!("/proc/{}/root", chrooted.id());
    while std::fs::read_link(&proc_root).ok().as_deref() != Some(root.as_path()) {
        assert!(
            chrooted.try_wait().expect("poll unshare").is_none(),
            "unshare exited before its chroot"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The second process of the namespace has its root, where the overlay
    // shows.
    let mut entered = std::process::Command::new("nsenter")
        .args(["-t", &chrooted.id().to_string(), "-m", "sleep", "600"])
        .spawn()
        .expect("start nsenter");
    let entered_mounts = format!("/proc/{}/mountinfo", entered.id());
    let layer_text = layer
        .to_str()
        .expect("temporary paths are UTF-8")
        .to_string();
    while !std::fs::read_to_string(&entered_mounts)
        .unwrap_or_default()
        .contains(&layer_text)
    {
        assert!(
            entered.try_wait().expect("poll nsenter").is_none(),
            "nsenter exited before it entered the namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let removed = build::remove(&name);
    let layer_left = layer.is_dir();
    for child in [&mut entered, &mut chrooted] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let removed = removed.expect("remove the template");
    assert_eq!(removed.layer, LayerOutcome::InUse);
    assert!(layer_left, "rm deleted a layer that a mount uses");
    build::prune().expect("prune after the processes ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn zygote_root_of_deleted_build() {
    if !require_root("zygote_root_of_deleted_build") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let folder = Folder::new(
        "remove-zygote",
        "run = [\"echo from-zygote > /home/user/file\"]\n",
    );
    let name = format!("remove-zygote-{}", std::process::id());
    let built = build_ok(&folder, Some(&name)).await;
    // A zygote forks PID 1, SoulBox's default for root.
    assert_eq!(soulbox_core::launcher(), Launcher::Zygote);
    let sandbox = create(&name).await;
    assert_eq!(
        run_ok(&sandbox, "cat /home/user/file").await,
        "from-zygote\n"
    );
    sandbox.kill().await.expect("kill the sandbox");

    // The zygote may hold a root built ahead on this layer, through a
    // namespace descriptor that no mount table shows.
    let removed = build::remove(&name).expect("remove the template");
    assert!(
        matches!(removed.layer, LayerOutcome::Deleted { .. }),
        "{:?}",
        removed.layer
    );
    let rebuilt = build_ok(&folder, Some(&name)).await;
    assert_eq!(rebuilt.key, built.key, "the same file built to another key");
    assert!(!rebuilt.cached, "the deleted build was reported as cached");

    // The rebuilt layer has the old path, so only the zygote's check of
    // the layers' inode numbers keeps it from handing out the old root.
    let sandbox = create(&name).await;
    let file = sh(&sandbox, "cat /home/user/file").await;
    assert_eq!(stdout(&file), "from-zygote\n", "{file:?}");
    sandbox.kill().await.expect("kill the sandbox");
    build::remove(&name).expect("remove the rebuilt template");
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_deletes_old_rebuilds() {
    if !require_root("prune_deletes_old_rebuilds") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let pid = std::process::id();
    let base_name = format!("remove-base-{pid}");
    let child_name = format!("remove-child-{pid}");
    let base = Folder::new("remove-base", "run = [\"echo base-1 > /home/user/base\"]\n");
    let base_1 = build_ok(&base, Some(&base_name)).await;
    let child_spec = |run: &str| format!("base = \"{base_name}\"\nrun = [\"{run}\"]\n");
    let child = Folder::new(
        "remove-child",
        &child_spec("echo child-1 > /home/user/child"),
    );
    let child_1 = build_ok(&child, Some(&child_name)).await;

    child.write_spec(
        "remove-child",
        &child_spec("echo child-2 > /home/user/child"),
    );
    let child_2 = build_ok(&child, Some(&child_name)).await;
    assert_ne!(child_2.key, child_1.key, "the changed file was cached");
    base.write_spec("remove-base", "run = [\"echo base-2 > /home/user/base\"]\n");
    let base_2 = build_ok(&base, Some(&base_name)).await;
    assert_ne!(base_2.key, base_1.key, "the changed base was cached");
    for (what, key) in [
        ("old child", &child_1.key),
        ("new child", &child_2.key),
        ("old base", &base_1.key),
        ("new base", &base_2.key),
    ] {
        assert!(
            built_dir(key).is_dir(),
            "the {what} build is missing before the prune"
        );
    }

    let report = build::prune().expect("prune");
    let deleted: Vec<&str> = report.deleted.iter().map(|d| d.key.as_str()).collect();
    assert!(deleted.contains(&child_1.key.as_str()), "{report:?}");
    assert!(
        !built_dir(&child_1.key).exists(),
        "the old child build is still there"
    );
    let source = report
        .deleted
        .iter()
        .find(|d| d.key == child_1.key)
        .and_then(|d| d.source.clone());
    assert_eq!(source, Some(child.dir.join("soulbox.toml")));
    for (what, key) in [
        ("new child", &child_2.key),
        ("old base, below the new child", &base_1.key),
        ("new base", &base_2.key),
    ] {
        assert!(!deleted.contains(&key.as_str()), "prune deleted the {what}");
        assert!(
            built_dir(key).join("layer").is_dir(),
            "the {what} build is gone"
        );
    }

    let sandbox = create(&child_name).await;
    assert_eq!(run_ok(&sandbox, "cat /home/user/child").await, "child-2\n");
    assert_eq!(run_ok(&sandbox, "cat /home/user/base").await, "base-1\n");
    sandbox.kill().await.expect("kill the sandbox");

    // The child's name was the last thing keeping the old base.
    build::remove(&child_name).expect("remove the child");
    let report = build::prune().expect("prune after removing the child");
    assert!(
        report.deleted.iter().any(|d| d.key == base_1.key),
        "{report:?}"
    );
    assert!(
        built_dir(&base_2.key).is_dir(),
        "prune deleted the named base"
    );
    build::remove(&base_name).expect("remove the base");
}

#[test]
fn rm_of_unknown_name() {
    if !require_root("rm_of_unknown_name") {
        return;
    }
    layer_cache();
    let name = "remove-no-such-template";
    let error = build::remove(name).expect_err("an unknown name was removed");
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&format!("{name:?}")), "{message}");
    assert!(message.contains("soulbox template list"), "{message}");
}

#[test]
fn rm_of_invalid_name_names_the_rule() {
    if !require_root("rm_of_invalid_name_names_the_rule") {
        return;
    }
    layer_cache();
    for name in ["Not A Name", "..", "", "host"] {
        let error = build::remove(name).expect_err("an invalid name was removed");
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&format!("{name:?}")), "{message}");
        assert!(
            message.contains("is not a valid template name"),
            "{message}"
        );
    }
    // The CLI reports no freed space when it removed nothing.
    let output = soulbox(&["template", "rm", "../evil"]);
    assert_eq!(output.status.code(), Some(125));
    assert_eq!(text(&output.stdout), "", "stdout of a failed rm");
    assert!(
        text(&output.stderr).contains("is not a valid template name"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_rm_and_prune() {
    if !require_root("cli_rm_and_prune") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let folder = Folder::new("remove-cli", "run = [\"echo cli > /home/user/file\"]\n");
    let name = format!("remove-cli-{}", std::process::id());
    let built = build_ok(&folder, Some(&name)).await;

    let removed = soulbox(&["template", "rm", &name, "remove-cli-unknown"]);
    assert_eq!(removed.status.code(), Some(125), "{removed:?}");
    let stdout = text(&removed.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!(
            "removed template {name}: deleted build {}",
            &built.key[..12]
        )),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("freed ") && lines[1].ends_with("iB"),
        "{stdout}"
    );
    let stderr = text(&removed.stderr);
    assert!(stderr.contains("\"remove-cli-unknown\""), "{stderr}");
    assert!(stderr.contains("soulbox template list"), "{stderr}");
    assert!(!built_dir(&built.key).exists(), "the CLI left the build");

    let old = build_ok(&folder, None).await;
    folder.write_spec("remove-cli", "run = [\"echo cli-2 > /home/user/file\"]\n");
    let new = build_ok(&folder, None).await;
    let pruned = soulbox(&["template", "prune"]);
    assert_eq!(pruned.status.code(), Some(0), "{pruned:?}");
    let stdout = text(&pruned.stdout);
    let expected = format!(
        "deleted build {} of {}",
        &old.key[..12],
        folder.dir.join("soulbox.toml").display()
    );
    assert!(
        stdout.lines().any(|line| line.starts_with(&expected)),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("freed ")),
        "{stdout}"
    );
    assert!(
        built_dir(&new.key).is_dir(),
        "prune deleted the file's latest build"
    );

    let usage = soulbox(&["template", "rm"]);
    assert_eq!(usage.status.code(), Some(125), "{usage:?}");
}

/// Returns whether this process holds a shared `flock` on the file with
/// inode `inode`, as /proc/locks lists it.
fn shared_lock_held(inode: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let pid = std::process::id().to_string();
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "N: FLOCK ADVISORY READ PID MAJ:MIN:INODE 0 EOF"; a waiter's
        // line has "->" after the number.
        fields.len() >= 6
            && fields[1] == "FLOCK"
            && fields[3] == "READ"
            && fields[4] == pid
            && fields[5].rsplit(':').next() == Some(inode.to_string().as_str())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn build_runs_on_the_base_its_key_names() {
    use std::os::unix::fs::MetadataExt;

    if !require_root("build_runs_on_the_base_its_key_names") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let name = format!("race-base-{}", std::process::id());
    let first = Folder::new(
        "race-first",
        "user = \"root\"\nrun = [\"echo first > /opt/base\"]\n",
    );
    build_ok(&first, Some(&name)).await;
    let second = Folder::new(
        "race-second",
        "user = \"root\"\nrun = [\"echo second > /opt/base\"]\n",
    );
    let second_name = format!("{name}-2");
    let second_build = build_ok(&second, Some(&second_name)).await;
    // A file large enough that hashing it keeps the build between its two
    // lookups of the base for a while.
    let child = Folder::new(
        "race-child",
        &format!(
            "base = \"{name}\"\nuser = \"root\"\nrun = [\"cat /opt/base > /opt/seen\"]\n\n\
             [[files]]\nfrom = \"big\"\nto = \"/opt/big\"\n"
        ),
    );
    std::fs::write(child.dir.join("big"), vec![7u8; 16 << 20]).expect("write the big file");

    let lock_path = layer_cache().join("built.lock");
    let inode = std::fs::metadata(&lock_path)
        .expect("the builds made the cache lock")
        .ino();
    let dir = child.dir.clone();
    let task = tokio::spawn(async move {
        let mut quiet = |_: BuildEvent<'_>| {};
        build::build(&dir, &BuildOptions::default(), &mut quiet).await
    });
    // The build holds the shared lock from its first lookup of the base
    // until it has hashed the file.
    let waited = std::time::Instant::now();
    while !shared_lock_held(inode) {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(60) && !task.is_finished(),
            "the build never took the cache lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // Granted once the build has let go, after its key was computed; the
    // build then waits here before it looks the base up again.
    let exclusive = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&lock_path).expect("open the cache lock");
        // SAFETY: flock on a descriptor this closure owns.
        let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
        file
    })
    .await
    .expect("take the cache lock");
    // The base is rebuilt under its name meanwhile.
    std::fs::write(name_file(&name), format!("{}\n", second_build.key)).expect("move the name");
    drop(exclusive);
    let built = within_limit("build", task)
        .await
        .expect("the build task")
        .expect("build on the moved base");

    let sandbox = create(&child.path_text()).await;
    let read = |path: &'static str| {
        let files = sandbox.files();
        async move { String::from_utf8(files.read(path).await.expect(path).to_vec()).expect(path) }
    };
    let seen = read("/opt/seen").await;
    let base = read("/opt/base").await;
    assert_eq!(seen, "second\n", "the steps ran on the moved base");
    assert_eq!(base, seen, "the template's base is the one its steps saw");
    let metadata = std::fs::read_to_string(built_dir(&built.key).join("template.json"))
        .expect("read template.json");
    assert!(metadata.contains(&second_build.key), "{metadata}");
    drop(sandbox);
    for removed in [name.as_str(), second_name.as_str()] {
        build::remove(removed).expect("remove a base");
    }
}
