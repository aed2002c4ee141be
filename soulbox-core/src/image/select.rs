//! Picks one image out of an OCI image layout or a `docker save` archive,
//! and reads its verified manifest and configuration.

use std::io::Read;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use super::source::{self, ImageError, ImageResult, Source};

/// Annotation that names an image in an OCI index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation with the full image name that containerd and Docker 25 and
/// later write next to a short `ref.name`.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Deepest nesting of image indexes that is followed.
const MAX_INDEX_DEPTH: usize = 4;

const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Compression of a layer's blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One layer of the selected image.
#[derive(Debug, Clone)]
pub(crate) struct LayerBlob {
    /// The blob's path in the layout or archive.
    pub(crate) name: String,
    /// The blob's digest and size from its descriptor, where there is one
    /// (a `docker save` archive before Docker 25 has none).
    pub(crate) digest: Option<(String, u64)>,
    pub(crate) compression: Compression,
    /// Digest of the uncompressed tar stream, from the configuration's
    /// `rootfs.diff_ids`.
    pub(crate) diff_id: String,
}

/// The selected image: its configuration and layers, bottom first.
#[derive(Debug)]
pub(crate) struct Selected {
    pub(crate) config: ImageConfiguration,
    pub(crate) layers: Vec<LayerBlob>,
}

/// Selects the image that `reference` names, or the only one.
pub(crate) fn select(source: &Source, reference: Option<&str>) -> ImageResult<Selected> {
    // `docker save` writes manifest.json; Docker 25 and later also write
    // an OCI layout beside it, whose names are only tags.
    if matches!(source, Source::Archive { .. }) && source.has("manifest.json") {
        return select_docker(source, reference);
    }
    if !source.has("oci-layout") || !source.has("index.json") {
        return Err(ImageError::new(
            source.path(),
            "not an image: an OCI image layout has the files oci-layout and index.json, and \
             `docker save` output has manifest.json",
        ));
    }
    select_oci(source, reference)
}

/// A name under which a top-level entry of an image's index can be
/// selected, and the entry.
struct Candidate<'a> {
    names: Vec<String>,
    descriptor: &'a Descriptor,
}

fn select_oci(source: &Source, reference: Option<&str>) -> ImageResult<Selected> {
    check_layout_version(source)?;
    let index: ImageIndex = parse_json(source, "index.json", &source.read_small("index.json")?)?;
    let candidates: Vec<Candidate<'_>> = index
        .manifests()
        .iter()
        .map(|descriptor| Candidate {
            names: descriptor_names(descriptor),
            descriptor,
        })
        .collect();
    let chosen = choose_entries(source, &candidates, reference)?;
    let manifest_descriptor = pick_platform(source, &chosen)?;
    let manifest: ImageManifest = read_verified_json(source, &manifest_descriptor)?;

    let config_descriptor = manifest.config();
    let config_type = config_descriptor.media_type().to_string();
    if *config_descriptor.media_type() != MediaType::ImageConfig && config_type != DOCKER_CONFIG {
        return Err(ImageError::new(
            source.path(),
            format!(
                "manifest {} is not a container image: its configuration has media type \
                 {config_type}",
                manifest_descriptor.digest()
            ),
        ));
    }
    let config: ImageConfiguration = read_verified_json(source, config_descriptor)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::new(
            source.path(),
            format!(
                "manifest {} lists {} layers, but its configuration has {} diff_ids",
                manifest_descriptor.digest(),
                manifest.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(descriptor, diff_id)| layer_blob(source, descriptor, diff_id))
        .collect::<ImageResult<Vec<_>>>()?;
    Ok(Selected { config, layers })
}

/// Checks that the layout's `oci-layout` file gives its version.
fn check_layout_version(source: &Source) -> ImageResult<()> {
    let layout: serde_json::Value =
        parse_json(source, "oci-layout", &source.read_small("oci-layout")?)?;
    if layout
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(ImageError::new(
            source.error_path("oci-layout"),
            format!(
                "{} has no imageLayoutVersion",
                source.describe("oci-layout")
            ),
        ));
    }
    Ok(())
}

/// Returns the index entries that `reference` names, or every entry when
/// they are all one image. Fails with the names to choose from otherwise.
fn choose_entries<'a>(
    source: &Source,
    candidates: &[Candidate<'a>],
    reference: Option<&str>,
) -> ImageResult<Vec<&'a Descriptor>> {
    let Some(reference) = reference else {
        if candidates.is_empty() {
            return Err(ImageError::new(
                source.error_path("index.json"),
                format!("{} lists no image", source.describe("index.json")),
            ));
        }
        if !is_one_image(candidates) {
            return Err(ImageError::new(
                source.path(),
                format!(
                    "it contains several images; select one by appending ':NAME' to the \
                     path, with NAME one of {}",
                    list_names(candidates)
                ),
            ));
        }
        return Ok(candidates.iter().map(|c| c.descriptor).collect());
    };
    let matching: Vec<&Descriptor> = candidates
        .iter()
        .filter(|c| {
            c.names.iter().any(|n| n == reference) || c.descriptor.digest().as_ref() == reference
        })
        .map(|c| c.descriptor)
        .collect();
    if matching.is_empty() {
        return Err(ImageError::new(
            source.path(),
            format!(
                "no image named {reference:?}; it has {}",
                list_names(candidates)
            ),
        ));
    }
    Ok(matching)
}

/// Describes the layer of `descriptor`, whose uncompressed tar has the
/// digest `diff_id`.
fn layer_blob(source: &Source, descriptor: &Descriptor, diff_id: String) -> ImageResult<LayerBlob> {
    let name = blob_name(source, descriptor)?;
    let compression = compression_of(descriptor.media_type()).ok_or_else(|| {
        ImageError::new(
            source.error_path(&name),
            format!(
                "layer {} has media type {}, which SoulBox cannot unpack; it reads tar \
                 layers, uncompressed or compressed with gzip or zstd",
                descriptor.digest(),
                descriptor.media_type()
            ),
        )
    })?;
    Ok(LayerBlob {
        name,
        digest: Some((descriptor.digest().to_string(), descriptor.size())),
        compression,
        diff_id,
    })
}

/// Returns whether the index entries are one image: they all have the same
/// names, and where there are several, each names its platform, as the
/// entries of one image built for several platforms do.
fn is_one_image(candidates: &[Candidate<'_>]) -> bool {
    let same_names = candidates.iter().all(|c| c.names == candidates[0].names);
    let platforms = candidates.iter().all(|c| c.descriptor.platform().is_some());
    same_names && (candidates.len() == 1 || platforms || !candidates[0].names.is_empty())
}

/// Returns the names an index entry can be selected by.
fn descriptor_names(descriptor: &Descriptor) -> Vec<String> {
    let Some(annotations) = descriptor.annotations() else {
        return Vec::new();
    };
    [REF_NAME, CONTAINERD_NAME]
        .iter()
        .filter_map(|key| annotations.get(*key).cloned())
        .collect()
}

/// Lists the candidates for a message: their names, or the digest of an
/// unnamed one.
fn list_names(candidates: &[Candidate<'_>]) -> String {
    let mut names: Vec<String> = candidates
        .iter()
        .map(|c| match c.names.as_slice() {
            [] => c.descriptor.digest().to_string(),
            names => names.join(" or "),
        })
        .collect();
    names.dedup();
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Returns the Go name of this host's architecture, as image platforms
/// give it.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Expands image indexes among `chosen` and returns the manifest for this
/// host's platform.
fn pick_platform(source: &Source, chosen: &[&Descriptor]) -> ImageResult<Descriptor> {
    let mut manifests: Vec<Descriptor> = Vec::new();
    let mut pending: Vec<(Descriptor, usize)> = chosen.iter().map(|d| ((*d).clone(), 0)).collect();
    while let Some((descriptor, depth)) = pending.pop() {
        if is_index(descriptor.media_type()) {
            if depth >= MAX_INDEX_DEPTH {
                return Err(ImageError::new(
                    source.path(),
                    format!("image indexes are nested more than {MAX_INDEX_DEPTH} deep"),
                ));
            }
            let index: ImageIndex = read_verified_json(source, &descriptor)?;
            pending.extend(index.manifests().iter().map(|d| (d.clone(), depth + 1)));
        } else if is_manifest(descriptor.media_type()) {
            manifests.push(descriptor);
        }
    }
    let arch = host_architecture();
    let fits = |d: &Descriptor| match d.platform() {
        None => true,
        Some(p) => p.os().to_string() == "linux" && p.architecture().to_string() == arch,
    };
    let mut fitting: Vec<&Descriptor> = manifests.iter().filter(|d| fits(d)).collect();
    // An entry that names this platform wins over one that names none,
    // such as an attestation or a single-platform image's only entry.
    if fitting.iter().any(|d| d.platform().is_some()) {
        fitting.retain(|d| d.platform().is_some());
    }
    fitting.dedup_by(|a, b| a.digest() == b.digest());
    match fitting.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let platforms: Vec<String> = manifests
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect();
            Err(ImageError::new(
                source.path(),
                format!(
                    "no image manifest for linux/{arch}, this host's platform; it has {}",
                    if platforms.is_empty() {
                        "no image manifest".to_string()
                    } else {
                        platforms.join(", ")
                    }
                ),
            ))
        }
        many => Err(ImageError::new(
            source.path(),
            format!(
                "{} image manifests fit linux/{arch}; select one by appending ':DIGEST' to the \
                 path, with DIGEST one of {}",
                many.len(),
                many.iter()
                    .map(|d| d.digest().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn is_index(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageIndex || media_type.to_string() == DOCKER_MANIFEST_LIST
}

fn is_manifest(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageManifest || media_type.to_string() == DOCKER_MANIFEST
}

/// Returns the compression of a layer media type, or `None` for one that
/// is not a tar layer.
fn compression_of(media_type: &MediaType) -> Option<Compression> {
    match media_type {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Some(Compression::None),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Some(Compression::Gzip)
        }
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
            Some(Compression::Zstd)
        }
        MediaType::Other(other) => match other.as_str() {
            "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        },
        _ => None,
    }
}

/// Returns the path of a descriptor's blob, `blobs/sha256/<hex>`.
fn blob_name(source: &Source, descriptor: &Descriptor) -> ImageResult<String> {
    let digest = descriptor.digest().to_string();
    match source::sha256_hex(&digest) {
        Some(hex) => Ok(format!("blobs/sha256/{hex}")),
        None => Err(ImageError::new(
            source.path(),
            format!("digest {digest} is not a sha256 digest, the only algorithm SoulBox verifies"),
        )),
    }
}

/// Reads the blob of `descriptor`, checks its size and SHA-256 digest, and
/// parses it as JSON.
fn read_verified_json<T: serde::de::DeserializeOwned>(
    source: &Source,
    descriptor: &Descriptor,
) -> ImageResult<T> {
    let name = blob_name(source, descriptor)?;
    let data = source.read_small(&name)?;
    let digest = source::sha256_digest(&data);
    let expected = descriptor.digest().to_string();
    if digest != expected || data.len() as u64 != descriptor.size() {
        return Err(ImageError::new(
            source.error_path(&name),
            format!(
                "{} has digest {digest} and {} bytes, but its descriptor gives {expected} and {} \
                 bytes",
                source.describe(&name),
                data.len(),
                descriptor.size()
            ),
        ));
    }
    parse_json(source, &name, &data)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    source: &Source,
    name: &str,
    data: &[u8],
) -> ImageResult<T> {
    serde_json::from_slice(data).map_err(|e| {
        ImageError::new(
            source.error_path(name),
            format!("{} is not valid: {e}", source.describe(name)),
        )
    })
}

/// One image of a `docker save` archive's manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn select_docker(source: &Source, reference: Option<&str>) -> ImageResult<Selected> {
    let images: Vec<DockerImage> = parse_json(
        source,
        "manifest.json",
        &source.read_small("manifest.json")?,
    )?;
    // An image saved by id has no tags; its id is its configuration's
    // digest.
    let names = |image: &DockerImage| -> Vec<String> {
        let mut names = image.repo_tags.clone().unwrap_or_default();
        if let Some(hex) = docker_config_hex(&image.config) {
            names.push(format!("sha256:{hex}"));
        }
        names
    };
    let listing = || {
        images
            .iter()
            .map(|image| format!("{:?}", names(image).first().cloned().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let image = match reference {
        Some(reference) => images
            .iter()
            .find(|image| names(image).iter().any(|n| n == reference))
            .ok_or_else(|| {
                ImageError::new(
                    source.path(),
                    format!("no image named {reference:?}; it has {}", listing()),
                )
            })?,
        None => match images.as_slice() {
            [one] => one,
            [] => {
                return Err(ImageError::new(
                    source.path(),
                    "its manifest.json lists no image",
                ))
            }
            _ => {
                return Err(ImageError::new(
                    source.path(),
                    format!(
                        "it contains several images; select one by appending ':NAME' to the path, \
                         with NAME one of {}",
                        listing()
                    ),
                ))
            }
        },
    };
    let config_name = source::normalize_member(&image.config).unwrap_or_default();
    let data = source.read_small(&config_name)?;
    if let Some(hex) = docker_config_hex(&config_name) {
        let digest = source::sha256_digest(&data);
        if digest != format!("sha256:{hex}") {
            return Err(ImageError::new(
                source.path(),
                format!(
                    "{} has digest {digest}, but its name gives sha256:{hex}",
                    source.describe(&config_name)
                ),
            ));
        }
    }
    let config: ImageConfiguration = parse_json(source, &config_name, &data)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != image.layers.len() {
        return Err(ImageError::new(
            source.path(),
            format!(
                "manifest.json lists {} layers for this image, but its configuration has {} \
                 diff_ids",
                image.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (name, diff_id) in image.layers.iter().zip(diff_ids) {
        let name = source::normalize_member(name).unwrap_or_default();
        // Docker 25 and later store layers under their digest.
        let digest = name
            .strip_prefix("blobs/sha256/")
            .and_then(|hex| source::sha256_hex(&format!("sha256:{hex}")).map(str::to_string))
            .map(|hex| format!("sha256:{hex}"));
        let compression = sniff_compression(source, &name)?;
        let size = source.open(&name)?.1;
        layers.push(LayerBlob {
            digest: digest.map(|digest| (digest, size)),
            name,
            compression,
            diff_id,
        });
    }
    Ok(Selected { config, layers })
}

/// Returns the hex digest that a `docker save` configuration's name
/// carries: `<hex>.json` before Docker 25, `blobs/sha256/<hex>` after.
fn docker_config_hex(name: &str) -> Option<String> {
    let hex = name
        .strip_suffix(".json")
        .or_else(|| name.strip_prefix("blobs/sha256/"))?;
    source::sha256_hex(&format!("sha256:{hex}")).map(str::to_string)
}

/// Reads the first bytes of a `docker save` layer, which has no media
/// type, to tell gzip and zstd from a plain tar.
fn sniff_compression(source: &Source, name: &str) -> ImageResult<Compression> {
    let (mut reader, _) = source.open(name)?;
    let mut magic = [0u8; 4];
    let mut filled = 0;
    while filled < magic.len() {
        match reader.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                return Err(ImageError::new(
                    source.error_path(name),
                    format!("read of {} failed: {e}", source.describe(name)),
                ))
            }
        }
    }
    Ok(match &magic[..filled] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}
