//! Image templates: OCI image layouts, tars of them and `docker save`
//! archives, built here from the host's static busybox, unpacked into the
//! layer cache and run as sandboxes.
//!
//! Every test of this file shares one layer cache under the build
//! directory's tmp folder, emptied when the first test starts.

use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use serde_json::json;
use soulbox_core::{Error, ListQuery, Sandbox, SandboxOptions, SandboxPool};
use soulbox_tests::image::*;
use soulbox_tests::*;

/// Points SoulBox's layer cache at this test binary's own directory and
/// returns it.
fn layer_cache() -> PathBuf {
    static SET: Once = Once::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("layer-cache");
    SET.call_once(|| {
        let _ = std::fs::remove_dir_all(&dir);
        // Set before the first sandbox of this process, by the first test
        // to get here, while the others wait in `call_once`.
        std::env::set_var(soulbox_core::image::LAYER_CACHE_VAR, &dir);
    });
    dir
}

/// Returns file contents that differ in every test and run, so each
/// test's upper layer is a layer of its own in the shared cache.
fn nonce(tag: &str) -> Vec<u8> {
    unique_name(tag).into_bytes()
}

fn options_for(template: &Path) -> SandboxOptions {
    options().template(template.to_str().expect("temporary paths are UTF-8"))
}

async fn create(template: &Path) -> Sandbox {
    within_limit("create", Sandbox::create(options_for(template)))
        .await
        .unwrap_or_else(|e| panic!("create a sandbox from {}: {e}", template.display()))
}

/// Returns the error's message with its sources, as the CLI and the
/// bindings show it.
fn message_of(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn create_err(template: &str) -> Error {
    let created = within_limit("create", Sandbox::create(options().template(template))).await;
    match created {
        Ok(sandbox) => panic!("template {template} was accepted: sandbox {}", sandbox.id()),
        Err(e) => e,
    }
}

/// Returns the cache directory of the layer whose uncompressed tar is
/// `tar`.
fn cached_layer(tar: &[u8]) -> PathBuf {
    layer_cache().join("sha256").join(hex_of(&sha256(tar)))
}

/// Checks that the cache has no staging directory for the layer whose
/// uncompressed tar is `tar`. Other tests may be unpacking their own
/// layers meanwhile.
fn assert_no_staging(tar: &[u8], context: &str) {
    let staging = layer_cache().join("staging").join(hex_of(&sha256(tar)));
    assert!(
        !staging.exists(),
        "{context}: {} was left behind",
        staging.display()
    );
}

fn upper_with_release(tag: &str) -> Vec<u8> {
    let mut layer = Layer::new();
    layer
        .file("etc/os-release", b"NAME=\"SoulBox test image\"\n", 0o644)
        .file("etc/nonce", &nonce(tag), 0o644);
    layer.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_runs_command() {
    if !require_root("oci_layout_runs_command") {
        return;
    }
    layer_cache();
    let dir = TempDir::new("oci-layout");
    let mut image = Image::with_layer(upper_with_release("layout"), json!({}));
    // A third layer, compressed with zstd.
    let mut top = Layer::new();
    top.file("srv/zstd", b"from a zstd layer\n", 0o644)
        .file("srv/nonce", &nonce("zstd"), 0o644);
    image.layers.push((top.finish(), Compression::Zstd));
    write_dir(dir.path(), &oci_layout_files(&[(Some("latest"), &image)]));

    let sandbox = create(dir.path()).await;
    assert_eq!(
        run_ok(&sandbox, "cat /etc/os-release").await,
        "NAME=\"SoulBox test image\"\n"
    );
    assert_eq!(
        run_ok(&sandbox, "cat /srv/zstd").await,
        "from a zstd layer\n"
    );
    // Nothing of the host: busybox's links are all /bin has.
    assert_eq!(
        run_ok(&sandbox, "test -e /usr/bin/python3 || echo absent").await,
        "absent\n"
    );
    // PID 1 wrote /etc/hostname and /etc/hosts in the merged tree.
    assert_eq!(
        run_ok(&sandbox, "cat /etc/hostname").await.trim_end(),
        sandbox.id()
    );
    assert!(run_ok(&sandbox, "cat /etc/hosts")
        .await
        .contains(sandbox.id()));
    let info = sandbox.get_info().await.expect("get the sandbox's info");
    assert_eq!(info.template, dir.path().to_str().unwrap());
    sandbox.kill().await.expect("kill the sandbox");
}

/// A setuid or setgid file of an image is unpacked without those bits, so
/// the layer cache on the host contains no privileged program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setid_bits_dropped_when_unpacking() {
    if !require_root("setid_bits_dropped_when_unpacking") {
        return;
    }
    layer_cache();
    let dir = TempDir::new("setid");
    let mut top = Layer::new();
    top.file("bin/setuid-tool", b"#!/bin/sh\n", 0o4755)
        .file("bin/setgid-tool", b"#!/bin/sh\n", 0o2755)
        .dir("shared", 0o1777)
        .file("etc/nonce", &nonce("setid"), 0o644);
    let tar = top.finish();
    let image = Image::with_layer(tar.clone(), json!({}));
    write_dir(dir.path(), &oci_layout_files(&[(None, &image)]));

    let sandbox = create(dir.path()).await;
    let modes = run_ok(
        &sandbox,
        "stat -c %a /bin/setuid-tool /bin/setgid-tool /shared",
    )
    .await;
    assert_eq!(modes, "755\n755\n1777\n");
    let cached = cached_layer(&tar).join("bin/setuid-tool");
    let mode = std::fs::metadata(&cached)
        .expect("stat the cached file")
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "{} in the cache", cached.display());
    sandbox.kill().await.expect("kill the sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_save_archive_runs_command() {
    if !require_root("docker_save_archive_runs_command") {
        return;
    }
    layer_cache();
    let dir = TempDir::new("docker-save");
    let archive = dir.path().join("image.tar");
    let image = Image::with_layer(upper_with_release("docker"), json!({}));
    write_tar(&archive, &docker_save_files(&[(&["test/app:1"], &image)]));

    let sandbox = create(&archive).await;
    assert_eq!(
        run_ok(&sandbox, "cat /etc/os-release").await,
        "NAME=\"SoulBox test image\"\n"
    );
    sandbox.kill().await.expect("kill the sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_archive_runs_command() {
    if !require_root("oci_archive_runs_command") {
        return;
    }
    layer_cache();
    let dir = TempDir::new("oci-archive");
    let archive = dir.path().join("image.tar");
    let image = Image::with_layer(upper_with_release("oci-archive"), json!({}));
    write_tar(&archive, &oci_layout_files(&[(Some("latest"), &image)]));

    let sandbox = create(&archive).await;
    assert_eq!(
        run_ok(&sandbox, "cat /etc/os-release").await,
        "NAME=\"SoulBox test image\"\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_hide_lower_files() {
    if !require_root("whiteouts_hide_lower_files") {
        return;
    }
    layer_cache();
    let mut middle = Layer::new();
    middle
        .file("data/gone.txt", b"deleted above\n", 0o644)
        .file("data/kept.txt", b"kept\n", 0o644)
        .file("cleared/old.txt", b"hidden by an opaque directory\n", 0o644)
        .file("replaced/old.txt", b"hidden by a whiteout\n", 0o644)
        .file("data/nonce", &nonce("whiteout-middle"), 0o644);
    let middle = middle.finish();
    let mut top = Layer::new();
    top.whiteout("data", "gone.txt")
        .opaque("cleared")
        .file("cleared/new.txt", b"new\n", 0o644)
        // Deleted and made again in one layer: the new directory must not
        // show the old one's files.
        .whiteout(".", "replaced")
        .dir("replaced", 0o755)
        .file("replaced/new.txt", b"new\n", 0o644)
        .file("data/nonce-top", &nonce("whiteout-top"), 0o644);
    let top = top.finish();
    let image = Image {
        layers: vec![
            (base_layer(), Compression::None),
            (middle, Compression::Gzip),
            (top.clone(), Compression::Gzip),
        ],
        config: json!({}),
        diff_ids: None,
    };
    let dir = TempDir::new("whiteouts");
    write_dir(dir.path(), &oci_layout_files(&[(None, &image)]));

    let sandbox = create(dir.path()).await;
    assert_eq!(
        run_ok(&sandbox, "ls /data").await,
        "kept.txt\nnonce\nnonce-top\n"
    );
    assert_eq!(run_ok(&sandbox, "ls -A /cleared").await, "new.txt\n");
    assert_eq!(run_ok(&sandbox, "ls -A /replaced").await, "new.txt\n");

    // The cache contains them as overlayfs reads them in a lower layer.
    let layer = cached_layer(&top);
    let whiteout = std::fs::symlink_metadata(layer.join("data/gone.txt")).expect("the whiteout");
    assert!(whiteout.file_type().is_char_device(), "{whiteout:?}");
    assert_eq!(whiteout.rdev(), 0);
    for opaque in ["cleared", "replaced"] {
        let value = xattr::get(layer.join(opaque), "trusted.overlay.opaque").expect("read xattr");
        assert_eq!(value.as_deref(), Some(&b"y"[..]), "{opaque} is not opaque");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_defaults_apply() {
    if !require_root("config_defaults_apply") {
        return;
    }
    layer_cache();
    let mut upper = Layer::new();
    // Open to every user, so that the image's user can write there.
    upper
        .dir("srv", 0o755)
        .dir("srv/app", 0o777)
        .file("srv/app/nonce", &nonce("config"), 0o644);
    let config = json!({
        "Env": ["PATH=/bin:/usr/bin", "FROM_IMAGE=image", "SHARED=image"],
        "WorkingDir": "/srv/app",
        "User": "app",
        "Cmd": ["sh", "-c", "echo from-cmd"],
    });
    let image = Image::with_layer(upper.finish(), config);
    let dir = TempDir::new("config");
    write_dir(dir.path(), &oci_layout_files(&[(None, &image)]));

    let options = options_for(dir.path())
        .env("SHARED", "sandbox")
        .env("FROM_SANDBOX", "sandbox");
    let sandbox = within_limit("create", Sandbox::create(options))
        .await
        .expect("create a sandbox from the image");
    let report = "pwd; id -u; id -g; echo $HOME $USER $FROM_IMAGE $SHARED $FROM_SANDBOX $PATH";
    assert_eq!(
        run_ok(&sandbox, report).await,
        "/srv/app\n4242\n4343\n/home/app app image sandbox sandbox /bin:/usr/bin\n"
    );
    // A command's own variables win over both.
    let output = sandbox
        .command("sh")
        .args(["-c", "echo $SHARED"])
        .env("SHARED", "command")
        .output()
        .await
        .expect("run a command with its own variable");
    assert_eq!(stdout(&output), "command\n");
    // A command may still name another user: root, an account of the
    // image, or uid:gid.
    for (user, expected) in [
        ("root", "0 0 /srv/app\n"),
        ("1234:50", "1234 50 /srv/app\n"),
    ] {
        let output = sandbox
            .command("sh")
            .args(["-c", "echo $(id -u) $(id -g) $(pwd)"])
            .user(user)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run as {user}: {e}"));
        assert_eq!(stdout(&output), expected, "as {user}");
    }
    let unknown = sandbox.command("true").user("nobody-here").output().await;
    assert!(
        matches!(&unknown, Err(Error::InvalidArgument(m)) if m.contains("app")),
        "an unknown user should be rejected with the image's users: {unknown:?}"
    );
    assert_eq!(
        soulbox_core::image::default_command(dir.path().to_str().unwrap())
            .expect("read the image's command"),
        Some(vec!["sh".into(), "-c".into(), "echo from-cmd".into()])
    );

    // The files API acts as the commands do: the image's user, and
    // relative paths from its WorkingDir.
    let files = sandbox.files();
    files
        .write("note.txt", "from the files API\n")
        .await
        .expect("write a relative path");
    assert_eq!(
        run_ok(&sandbox, "cat note.txt; stat -c '%u %g' note.txt").await,
        "from the files API\n4242 4343\n"
    );
    let read = files.read("note.txt").await.expect("read it back");
    assert_eq!(read, b"from the files API\n");
    files
        .user("root")
        .write("/srv/app/by-root", "r")
        .await
        .expect("write as root");
    assert_eq!(run_ok(&sandbox, "stat -c %u by-root").await, "0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_create_unpacks_nothing() {
    if !require_root("second_create_unpacks_nothing") {
        return;
    }
    layer_cache();
    let upper = upper_with_release("second-create");
    let image = Image::with_layer(upper.clone(), json!({}));
    let dir = TempDir::new("second-create");
    let archive = dir.path().join("image.tar");
    write_tar(&archive, &oci_layout_files(&[(None, &image)]));

    let first = create(&archive).await;
    let layers = [cached_layer(&base_layer()), cached_layer(&upper)];
    let inodes: Vec<(u64, i64, i64)> = layers
        .iter()
        .map(|layer| {
            let metadata = std::fs::metadata(layer)
                .unwrap_or_else(|e| panic!("layer {} is not cached: {e}", layer.display()));
            (metadata.ino(), metadata.ctime(), metadata.ctime_nsec())
        })
        .collect();
    drop(first);
    // A new handle in the same process, and `soulbox run` in another, find
    // every layer in place.
    let second = create(&archive).await;
    assert_eq!(
        run_ok(&second, "cat /etc/os-release").await.lines().count(),
        1
    );
    let output = std::process::Command::new(soulbox_bin())
        .args(["run", "--template"])
        .arg(&archive)
        .args(["--", "cat", "/etc/nonce"])
        .output()
        .expect("run soulbox");
    assert!(output.status.success(), "soulbox run failed: {output:?}");
    let after: Vec<(u64, i64, i64)> = layers
        .iter()
        .map(|layer| {
            let metadata = std::fs::metadata(layer).expect("the layer is still cached");
            (metadata.ino(), metadata.ctime(), metadata.ctime_nsec())
        })
        .collect();
    assert_eq!(inodes, after, "a layer was unpacked again");
    assert_no_staging(&upper, "second create");
}

/// Builds an image whose top layer is `top`, creates a sandbox from it,
/// and returns the error.
async fn rejected(tag: &str, top: Vec<u8>) -> (Error, PathBuf) {
    let image = Image::with_layer(top.clone(), json!({}));
    let dir = TempDir::new(tag);
    let archive = dir.path().join("image.tar");
    write_tar(&archive, &oci_layout_files(&[(None, &image)]));
    let error = create_err(archive.to_str().unwrap()).await;
    assert!(
        !cached_layer(&top).exists(),
        "{tag}: the rejected layer is in the cache"
    );
    assert_no_staging(&top, tag);
    (error, archive)
}

/// Builds an image whose top layer is a nonce file and what `build` adds,
/// and checks that the create fails with every text of `expected` in its
/// message. Nothing may appear in the host directory that `build` gets,
/// in the cache or in its staging directory.
async fn assert_rejected(tag: &str, build: impl FnOnce(&mut Layer, &str), expected: &[&str]) {
    if !require_root(tag) {
        return;
    }
    layer_cache();
    let outside = TempDir::new("outside");
    let mut layer = Layer::new();
    layer.file("etc/nonce", &nonce(tag), 0o644);
    build(&mut layer, outside.path().to_str().unwrap());
    let (error, _) = Box::pin(rejected(tag, layer.finish())).await;
    let message = message_of(&error);
    assert!(
        matches!(error, Error::Template { .. }),
        "{tag}: expected Error::Template, got {error:?}"
    );
    for text in expected {
        assert!(
            message.contains(text),
            "{tag}: {text:?} is not in {message:?}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .flatten()
        .collect();
    assert!(
        left.is_empty(),
        "{tag}: an entry escaped the layer: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotdot_entry_rejected() {
    let escape = "../../../../../../../tmp/soulbox-test-escaped-by-dotdot";
    assert_rejected(
        "dotdot-entry",
        |layer, _| {
            layer.file(escape, b"x", 0o644);
        },
        &["\"..\"", "escaped-by-dotdot"],
    )
    .await;
    assert!(!Path::new("/tmp/soulbox-test-escaped-by-dotdot").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_entry_rejected() {
    assert_rejected(
        "absolute-entry",
        |layer, outside| {
            layer.file(&format!("{outside}/escaped"), b"x", 0o644);
        },
        &["absolute path", "escaped"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_through_symlink_rejected() {
    assert_rejected(
        "symlink-entry",
        |layer, outside| {
            layer
                .symlink("escape", outside)
                .file("escape/escaped-through-link", b"x", 0o644);
        },
        &["escape/escaped-through-link", "symbolic link"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_link_outside_rejected() {
    assert_rejected(
        "hardlink-absolute",
        |layer, _| {
            layer.hard_link("passwd-copy", "/etc/passwd");
        },
        &["passwd-copy", "absolute path"],
    )
    .await;
    assert_rejected(
        "hardlink-dotdot",
        |layer, _| {
            layer.hard_link("passwd-copy", "../../../../../../../etc/passwd");
        },
        &["passwd-copy", "\"..\""],
    )
    .await;
    // A name that only a lower layer has is outside this layer too.
    assert_rejected(
        "hardlink-lower",
        |layer, _| {
            layer.hard_link("busybox-copy", "bin/busybox");
        },
        &["busybox-copy", "not an earlier entry"],
    )
    .await;
    assert_rejected(
        "hardlink-via-symlink",
        |layer, _| {
            layer
                .symlink("host-etc", "/etc")
                .hard_link("passwd-copy", "host-etc/passwd");
        },
        &["passwd-copy", "symbolic link"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_rejected() {
    if !require_root("wrong_digest_rejected") {
        return;
    }
    layer_cache();
    let upper = upper_with_release("digest");
    let image = Image::with_layer(upper.clone(), json!({}));
    let dir = TempDir::new("digest");
    let mut files = oci_layout_files(&[(None, &image)]);
    // Flip one byte of the gzip layer's blob, whose digest the manifest
    // names. The blob is the one file that starts with gzip's magic.
    let (name, blob) = files
        .iter_mut()
        .find(|(_, data)| data.starts_with(&[0x1f, 0x8b]))
        .expect("the gzip layer");
    let last = blob.len() - 10;
    blob[last] ^= 0xff;
    let name = name.clone();
    write_dir(dir.path(), &files);

    let error = create_err(dir.path().to_str().unwrap()).await;
    let message = message_of(&error);
    let expected_digest = format!("sha256:{}", name.trim_start_matches("blobs/sha256/"));
    assert!(
        matches!(error, Error::Template { .. }),
        "a digest mismatch should be Error::Template: {error:?}"
    );
    assert!(message.contains(&expected_digest), "{message}");
    assert!(
        message.contains(&name),
        "the message should name the file: {message}"
    );
    assert!(!cached_layer(&upper).exists());
    assert_no_staging(&upper, "wrong digest");

    // A layer whose uncompressed tar is not the one the configuration's
    // diff_id names.
    let mut claimed = Layer::new();
    claimed.file("etc/nonce", &nonce("diff-id-claimed"), 0o644);
    let claimed = sha256(&claimed.finish());
    let actual = upper_with_release("diff-id-actual");
    let mut image = Image::with_layer(actual.clone(), json!({}));
    image.diff_ids = Some(vec![sha256(&base_layer()), claimed.clone()]);
    let dir = TempDir::new("diff-id");
    write_dir(dir.path(), &oci_layout_files(&[(None, &image)]));
    let message = message_of(&create_err(dir.path().to_str().unwrap()).await);
    assert!(message.contains(&claimed), "{message}");
    assert!(message.contains(&sha256(&actual)), "{message}");
    assert!(!cached_layer(&actual).exists());
    assert!(!layer_cache().join("sha256").join(hex_of(&claimed)).exists());
    assert_no_staging(&actual, "wrong diff_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_blob_rejected() {
    if !require_root("fifo_blob_rejected") {
        return;
    }
    layer_cache();
    let upper = upper_with_release("fifo-blob");
    let image = Image::with_layer(upper.clone(), json!({}));
    let dir = TempDir::new("fifo-blob");
    let files = oci_layout_files(&[(None, &image)]);
    let (name, _) = files
        .iter()
        .find(|(_, data)| data.starts_with(&[0x1f, 0x8b]))
        .expect("the gzip layer");
    let fifo = dir.path().join(name);
    let others: Files = files
        .iter()
        .filter(|(other, _)| other != name)
        .cloned()
        .collect();
    write_dir(dir.path(), &others);
    let fifo_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path and keeps no pointer.
    let made = unsafe { libc::mkfifo(fifo_path.as_ptr(), 0o644) };
    assert_eq!(made, 0, "mkfifo: {}", std::io::Error::last_os_error());

    // A create that blocks opening the FIFO is released after 10 s by a
    // writer that opens and closes it, so the test fails instead of hanging.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let release = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            if finished.recv_timeout(Duration::from_secs(10)).is_err() {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&fifo);
            }
        })
    };
    let started = std::time::Instant::now();
    let error = create_err(dir.path().to_str().unwrap()).await;
    let elapsed = started.elapsed();
    let _ = done.send(());
    release.join().expect("the releasing thread");
    let message = message_of(&error);
    assert!(
        elapsed < Duration::from_secs(5),
        "the create waited {elapsed:?} on the FIFO"
    );
    assert!(
        matches!(error, Error::Template { .. }),
        "a FIFO blob should be Error::Template: {error:?}"
    );
    assert!(message.contains("not a regular file"), "{message}");
    assert!(
        message.contains(name.as_str()),
        "the message should name the file: {message}"
    );
    assert!(!cached_layer(&upper).exists());
    assert_no_staging(&upper, "FIFO blob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_selected_by_name() {
    if !require_root("images_selected_by_name") {
        return;
    }
    layer_cache();
    let image_for = |tag: &str| {
        let mut layer = Layer::new();
        layer
            .file("which", format!("{tag}\n").as_bytes(), 0o644)
            .file("etc/nonce", &nonce(tag), 0o644);
        Image::with_layer(layer.finish(), json!({}))
    };
    let (one, two) = (image_for("one"), image_for("two"));

    let dir = TempDir::new("select");
    let layout = dir.path().join("layout");
    write_dir(
        &layout,
        &oci_layout_files(&[(Some("one"), &one), (Some("two"), &two)]),
    );
    let archive = dir.path().join("saved.tar");
    write_tar(
        &archive,
        &docker_save_files(&[
            (&["test/one:1"], &one),
            (&["test/two:2", "two:latest"], &two),
        ]),
    );
    for (path, name, other) in [
        (&layout, "two", "one"),
        (&archive, "test/two:2", "test/one:1"),
        (&archive, "two:latest", "test/one:1"),
    ] {
        let template = format!("{}:{name}", path.display());
        let sandbox = within_limit("create", Sandbox::create(options().template(&template)))
            .await
            .unwrap_or_else(|e| panic!("create from {template}: {e}"));
        assert_eq!(run_ok(&sandbox, "cat /which").await, "two\n", "{template}");
        let info = sandbox.get_info().await.expect("get the sandbox's info");
        assert_eq!(info.template, template);

        let error = create_err(path.to_str().unwrap()).await;
        let message = message_of(&error);
        assert!(message.contains("several images"), "{message}");
        assert!(message.contains(other), "{message}");
        assert!(
            message.contains(name) || message.contains("test/two:2"),
            "{message}"
        );

        let missing = format!("{}:three", path.display());
        let message = message_of(&create_err(&missing).await);
        assert!(message.contains("no image named \"three\""), "{message}");
        assert!(message.contains(other), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_and_list_show_template() {
    if !require_root("pool_and_list_show_template") {
        return;
    }
    layer_cache();
    let dir = TempDir::new("pool");
    let image = Image::with_layer(upper_with_release("pool"), json!({"WorkingDir": "/etc"}));
    write_dir(dir.path(), &oci_layout_files(&[(None, &image)]));
    let template = dir.path().to_str().unwrap().to_string();
    let label = unique_name("pool-label");

    let pool = SandboxPool::new(options().template(&template).metadata("test", &label), 1)
        .expect("start a pool");
    let sandbox = within_limit("pool create", pool.create())
        .await
        .expect("take a sandbox from the pool");
    assert_eq!(run_ok(&sandbox, "pwd").await, "/etc\n");
    let listed = Sandbox::list(&ListQuery::default().metadata("test", &label))
        .await
        .expect("list sandboxes");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].template, template);
    // A handle from connect reads the image's defaults again.
    let connected = Sandbox::connect(sandbox.id()).await.expect("connect");
    assert_eq!(run_ok(&connected, "pwd").await, "/etc\n");
    sandbox.kill().await.expect("kill the sandbox");
    pool.close().await;
}

/// Builds an image with a Cmd in `dir` and returns the archive's name.
fn write_cli_image(dir: &Path, tag: &str) -> &'static str {
    let mut upper = Layer::new();
    upper
        .dir("data", 0o755)
        .file("data/kept", b"kept\n", 0o644)
        .file("etc/nonce", &nonce(tag), 0o644);
    let mut top = Layer::new();
    top.whiteout("etc", "nonce")
        .opaque("data")
        .file("data/new", b"new\n", 0o644);
    let image = Image {
        layers: vec![
            (base_layer(), Compression::None),
            (upper.finish(), Compression::Gzip),
            (top.finish(), Compression::Gzip),
        ],
        config: json!({"Cmd": ["sh", "-c", "echo from-cmd; ls /data; test -e /etc/nonce || echo no-nonce"]}),
        diff_ids: None,
    };
    write_tar(
        &dir.join("image.tar"),
        &docker_save_files(&[(&["cli:1"], &image)]),
    );
    "image.tar"
}

#[test]
fn cli_runs_image_by_relative_path() {
    if !require_root("cli_runs_image_by_relative_path") {
        return;
    }
    layer_cache();
    let dir = TempDir::new("cli");
    let archive = write_cli_image(dir.path(), "cli");
    let relative = format!("./{archive}");
    let run = |args: &[&str]| {
        std::process::Command::new(soulbox_bin())
            .current_dir(dir.path())
            .arg("run")
            .args(args)
            .output()
            .expect("run soulbox")
    };
    let output = run(&["--template", &relative]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "from-cmd\nnew\nno-nonce\n"
    );

    let named = format!("{relative}:cli:1");
    let output = run(&["--template", &named, "--", "cat", "/data/new"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "new\n");

    let output = run(&["--", "cat", "/data/new"]).status;
    assert!(!output.success(), "the host template has no /data/new");
    let output = run(&[]);
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("<COMMAND> is missing"));
}

/// A rootless `soulbox run` unpacks into its own cache, with `user.`
/// extended attributes for opaque directories, and overlayfs honours them
/// and the whiteouts.
#[test]
fn rootless_cli_runs_image() {
    if !require_root("rootless_cli_runs_image") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rootless-image");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let archive = write_cli_image(dir.path(), "rootless");
    let binary = dir.path().join("soulbox");
    copy_program(&soulbox_bin(), &binary, 0o755);
    let (uid, gid) = unprivileged_ids();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let chown = std::process::Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(&home)
        .status()
        .expect("run chown");
    assert!(chown.success());
    let output = std::process::Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &gid, "--clear-groups", "--"])
        .args(["env", "-i", "PATH=/usr/bin:/bin"])
        .arg(format!("HOME={}", home.display()))
        .arg(&binary)
        .args(["run", "--template"])
        .arg(dir.path().join(archive))
        .output()
        .expect("run setpriv (util-linux)");
    assert!(
        output.status.success(),
        "rootless soulbox run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "from-cmd\nnew\nno-nonce\n"
    );
    let cache = home.join(".cache/soulbox/layers/sha256");
    let layers = std::fs::read_dir(&cache)
        .expect("the rootless cache")
        .count();
    assert_eq!(layers, 3, "one directory per layer in {}", cache.display());
}
