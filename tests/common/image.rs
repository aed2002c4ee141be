//! Builds container images for tests: layers as tar streams, written out
//! as an OCI image layout, a tar of one, or `docker save` output.
//!
//! The base layer contains the host's static busybox (Debian's
//! `busybox-static`) with links for the applets the tests use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Where the tests' static busybox comes from.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked to busybox in the base layer.
const APPLETS: [&str; 16] = [
    "sh", "cat", "ls", "id", "pwd", "env", "echo", "test", "stat", "true", "mkdir", "rm", "touch",
    "grep", "sleep", "printf",
];

/// Returns `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Returns the hex part of a `sha256:` digest.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("a sha256 digest")
}

/// A layer's tar stream, built entry by entry.
#[derive(Default)]
pub struct Layer {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer").finish_non_exhaustive()
    }
}

impl Layer {
    pub fn new() -> Self {
        Self {
            builder: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn append(&mut self, header: &mut tar::Header, name: &[u8], data: &[u8]) {
        let old = header.as_old_mut();
        assert!(
            name.len() < old.name.len(),
            "test entry names fit the header"
        );
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        self.builder
            .as_mut()
            .expect("layer not finished")
            .append(header, data)
            .expect("append a tar entry");
    }

    /// Adds a regular file. The name is written as it is, so it may be
    /// absolute or contain `..`.
    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode);
        self.append(&mut header, name.as_bytes(), data);
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        self.append(&mut header, name.as_bytes(), b"");
        self
    }

    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o777);
        let old = header.as_old_mut();
        old.linkname = [0; 100];
        old.linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.append(&mut header, name.as_bytes(), b"");
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target)
    }

    pub fn hard_link(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target)
    }

    /// Deletes `name` (in directory `dir`) from the layers below.
    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh.{name}"), b"", 0o644)
    }

    /// Hides the lower layers' entries of `dir`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// Returns the uncompressed tar stream.
    pub fn finish(&mut self) -> Vec<u8> {
        self.builder
            .take()
            .expect("layer finished once")
            .into_inner()
            .expect("finish the tar stream")
    }
}

/// Returns the base layer: busybox, its applet links, /etc/passwd and
/// /etc/group. It is built once per test process.
pub fn base_layer() -> Vec<u8> {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let busybox = std::fs::read(BUSYBOX)
            .unwrap_or_else(|e| panic!("read {BUSYBOX} (Debian's busybox-static): {e}"));
        let mut layer = Layer::new();
        layer.dir("bin", 0o755).file("bin/busybox", &busybox, 0o755);
        for applet in APPLETS {
            layer.symlink(&format!("bin/{applet}"), "busybox");
        }
        layer
            .dir("etc", 0o755)
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\napp:x:4242:4343:app:/home/app:/bin/sh\n",
                0o644,
            )
            .file("etc/group", b"root:x:0:\napp:x:4343:\nstaff:x:50:\n", 0o644)
            .dir("tmp", 0o1777)
            .dir("home", 0o755)
            .dir("home/app", 0o755);
        layer.finish()
    })
    .clone()
}

/// How a layer's blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One image: its layers (bottom first) and the `config` part of its
/// configuration.
#[derive(Debug)]
pub struct Image {
    pub layers: Vec<(Vec<u8>, Compression)>,
    pub config: Value,
    /// The configuration's `rootfs.diff_ids` in place of the layers' own.
    pub diff_ids: Option<Vec<String>>,
}

impl Image {
    /// Returns an image of the base layer and `upper`, gzip-compressed,
    /// with `config` (such as `{"Cmd": [...]}`).
    pub fn with_layer(upper: Vec<u8>, config: Value) -> Self {
        Self {
            layers: vec![
                (base_layer(), Compression::None),
                (upper, Compression::Gzip),
            ],
            config,
            diff_ids: None,
        }
    }

    /// Returns the configuration's JSON and each layer's blob, media type
    /// and diff_id.
    fn blobs(&self) -> (Vec<u8>, Vec<(Vec<u8>, &'static str)>) {
        let mut diff_ids = Vec::new();
        let mut blobs = Vec::new();
        for (tar, compression) in &self.layers {
            diff_ids.push(sha256(tar));
            match compression {
                Compression::None => {
                    blobs.push((tar.clone(), "application/vnd.oci.image.layer.v1.tar"))
                }
                Compression::Gzip => {
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    encoder.write_all(tar).expect("gzip a layer");
                    blobs.push((
                        encoder.finish().expect("finish gzip"),
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                    ));
                }
                Compression::Zstd => blobs.push((
                    ruzstd::encoding::compress_to_vec(
                        tar.as_slice(),
                        ruzstd::encoding::CompressionLevel::Fastest,
                    ),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                )),
            }
        }
        let diff_ids = self.diff_ids.clone().unwrap_or(diff_ids);
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        (
            serde_json::to_vec(&config).expect("encode the configuration"),
            blobs,
        )
    }
}

/// Files of an image layout or archive, by path.
pub type Files = Vec<(String, Vec<u8>)>;

/// Returns the files of an OCI image layout holding `images`, each under
/// its `org.opencontainers.image.ref.name` if it has one.
pub fn oci_layout_files(images: &[(Option<&str>, &Image)]) -> Files {
    let mut files: Files = vec![(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut manifests = Vec::new();
    for (name, image) in images {
        let (config, layers) = image.blobs();
        let mut layer_descriptors = Vec::new();
        for (blob, media_type) in layers {
            let digest = sha256(&blob);
            layer_descriptors
                .push(json!({"mediaType": media_type, "digest": digest, "size": blob.len()}));
            files.push((format!("blobs/sha256/{}", hex_of(&digest)), blob));
        }
        let config_digest = sha256(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layer_descriptors,
        });
        files.push((format!("blobs/sha256/{}", hex_of(&config_digest)), config));
        let manifest = serde_json::to_vec(&manifest).expect("encode the manifest");
        let manifest_digest = sha256(&manifest);
        let mut descriptor = json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
        });
        if let Some(name) = name {
            descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        }
        manifests.push(descriptor);
        files.push((
            format!("blobs/sha256/{}", hex_of(&manifest_digest)),
            manifest,
        ));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    files.push((
        "index.json".into(),
        serde_json::to_vec(&index).expect("encode the index"),
    ));
    files
}

/// Returns the files of `docker save` output (the format before Docker
/// 25) holding `images`, each with its repository tags.
pub fn docker_save_files(images: &[(&[&str], &Image)]) -> Files {
    let mut files: Files = Vec::new();
    let mut manifest = Vec::new();
    for (tags, image) in images {
        let (config, _) = image.blobs();
        let config_name = format!("{}.json", hex_of(&sha256(&config)));
        let mut layer_names = Vec::new();
        for (tar, _) in &image.layers {
            // Old `docker save` stores every layer uncompressed.
            let name = format!("{}/layer.tar", hex_of(&sha256(tar)));
            layer_names.push(name.clone());
            files.push((name, tar.clone()));
        }
        manifest.push(json!({"Config": config_name, "RepoTags": tags, "Layers": layer_names}));
        files.push((config_name, config));
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).expect("encode"),
    ));
    files
}

/// Writes `files` below the new directory `dir`.
pub fn write_dir(dir: &Path, files: &Files) {
    for (name, data) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create directories");
        std::fs::write(&path, data).expect("write an image file");
    }
}

/// Writes `files` into the new tar archive `path`.
pub fn write_tar(path: &Path, files: &Files) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).expect("create the archive"));
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, name, data.as_slice())
            .expect("append an archive member");
    }
    builder.finish().expect("finish the archive");
}

/// A directory of the tests' own, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(crate::unique_name(tag));
        std::fs::create_dir(&dir).expect("create a temporary directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("remove {}: {e}", self.0.display());
        }
    }
}
