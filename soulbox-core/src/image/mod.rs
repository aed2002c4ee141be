//! OCI image templates: an OCI image layout directory, or a tar archive of
//! one or of `docker save` output, used as a sandbox's root without Docker.
//!
//! The selected image's manifest and configuration are verified against
//! their digests, and its layers are unpacked once each into the layer
//! cache, a directory per diff_id under [`LAYER_CACHE_VAR`] or its
//! default, where they become the overlay's lower layers. The image's
//! `Env`, `WorkingDir`, `User`, `Entrypoint` and `Cmd` become the defaults
//! of the sandbox's commands.

mod extract;
mod layers;
mod select;
mod source;
mod user;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

pub use layers::LAYER_CACHE_VAR;
pub(crate) use layers::{cache_dir, remove_tree, LayerCache};
pub(crate) use source::ImageError;
pub(crate) use user::Account;

use self::source::Source;

/// The kind of file an image template is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageKind {
    /// An OCI image layout directory.
    Layout,
    /// A tar archive.
    Archive,
}

/// The command defaults of a sandbox built from an image, from the image's
/// configuration.
#[derive(Debug)]
pub(crate) struct ImageDefaults {
    /// `Env`, in order, as (name, value).
    pub(crate) env: Vec<(String, String)>,
    /// `WorkingDir`, or `/` where the image sets none, as Docker does.
    pub(crate) working_dir: String,
    /// The user `User` names, or root where it names none.
    pub(crate) user: Account,
    /// `Entrypoint` followed by `Cmd`.
    pub(crate) command: Vec<String>,
    /// The image's users and groups, for a command's own `user`.
    accounts: user::Accounts,
}

impl ImageDefaults {
    /// Returns the user that a command's `user` names in this image: a name
    /// in its /etc/passwd, or `UID[:GID]`.
    pub(crate) fn account(&self, spec: &str) -> std::result::Result<Account, String> {
        self.accounts.resolve(spec)
    }

    /// Returns the account named `name` in the image's /etc/passwd.
    pub(crate) fn account_named(&self, name: &str) -> Option<Account> {
        self.accounts.by_name(name)
    }
}

impl ImageDefaults {
    /// Builds the command defaults of a template built from a
    /// `soulbox.toml`: those of its `base` image, if it has one, with the
    /// file's `env` over the image's `Env`, and its `user` and `workdir`
    /// in place of the image's. Without them, the default user is `user`
    /// (uid 1000), as in the `host` template, and the default directory is
    /// the user's home. `user` and `root` exist even where the layers'
    /// /etc/passwd lacks them, as in image templates. `layers` are the
    /// built layer and the base's.
    pub(crate) fn for_built(
        layers: &[PathBuf],
        opaque_xattr: &str,
        base: Option<&ImageDefaults>,
        env: &[(String, String)],
        user: Option<&str>,
        working_dir: Option<&str>,
    ) -> std::result::Result<Self, String> {
        let accounts = user::Accounts::read(layers, opaque_xattr);
        let named = |name: &str| -> std::result::Result<Account, String> {
            if let Some(account) = accounts.by_name(name) {
                return Ok(account);
            }
            match name {
                "user" => Ok(Account {
                    name: Some("user".into()),
                    uid: crate::template::USER_UID,
                    gid: crate::template::USER_UID,
                    home: crate::template::USER_HOME.into(),
                    shell: None,
                }),
                "root" => Ok(Account {
                    name: Some("root".into()),
                    uid: 0,
                    gid: 0,
                    home: "/root".into(),
                    shell: None,
                }),
                spec => accounts.resolve(spec),
            }
        };
        let account = match (user, base) {
            (Some(name), _) => named(name)?,
            (None, Some(base)) => base.user.clone(),
            (None, None) => named("user")?,
        };
        let mut merged = base.map(|base| base.env.clone()).unwrap_or_default();
        for (key, value) in env {
            match merged.iter_mut().find(|(known, _)| known == key) {
                Some(entry) => entry.1.clone_from(value),
                None => merged.push((key.clone(), value.clone())),
            }
        }
        let working_dir = match (working_dir, base) {
            (Some(dir), _) => dir.to_string(),
            (None, Some(base)) if user.is_none() => base.working_dir.clone(),
            _ => account.home.clone(),
        };
        Ok(Self {
            env: merged,
            working_dir,
            user: account,
            command: base.map(|base| base.command.clone()).unwrap_or_default(),
            accounts,
        })
    }
}

/// A prepared image template: its unpacked layers, top first, and its
/// command defaults.
#[derive(Debug, Clone)]
pub(crate) struct ImageTemplate {
    pub(crate) layers: Vec<PathBuf>,
    pub(crate) defaults: Arc<ImageDefaults>,
}

/// Identity of an image's source file when it was read: device, inode,
/// size and modification time of the archive or the layout's index.json.
type SourceIdentity = (u64, u64, u64, i64, i64);

/// Images already read by this process, by template name.
static PREPARED: Mutex<Option<HashMap<String, (SourceIdentity, ImageTemplate)>>> = Mutex::new(None);

/// Returns what `path` is, if it is an image: a regular file that starts
/// with a ustar, GNU or PAX tar header is an archive, and a directory with
/// an `oci-layout` file is a layout. `metadata` is the path's own, which
/// the caller has.
pub(crate) fn kind_of(path: &Path, metadata: &std::fs::Metadata) -> Option<ImageKind> {
    if metadata.is_file() {
        return is_tar(path).then_some(ImageKind::Archive);
    }
    if metadata.is_dir() && path.join("oci-layout").exists() {
        return Some(ImageKind::Layout);
    }
    None
}

/// Prepares the image at `path` (the selected one when `reference` is
/// given), unpacking the layers that the cache lacks. `name` is the
/// template as the caller gave it, for errors.
///
/// A second call for the same, unchanged image reuses what the first read,
/// after checking that its layers are still in the cache.
pub(crate) fn prepare(
    name: &str,
    path: &Path,
    kind: ImageKind,
    reference: Option<&str>,
) -> Result<ImageTemplate> {
    let fail = |error: ImageError| Error::Template {
        name: name.to_string(),
        path: error.path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error.message),
    };
    let identity = source_identity(path, kind).map_err(fail)?;
    if let Some(template) = remembered(name, identity) {
        return Ok(template);
    }
    let template = read_and_unpack(path, kind, reference).map_err(fail)?;
    let mut prepared = PREPARED.lock().unwrap_or_else(|p| p.into_inner());
    prepared
        .get_or_insert_with(HashMap::new)
        .insert(name.to_string(), (identity, template.clone()));
    Ok(template)
}

/// Returns whether the file at `path` starts with a tar header that has
/// the `ustar` magic at offset 257, as every tar format that Docker,
/// Podman and skopeo write does.
fn is_tar(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 512];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .is_ok_and(|()| &header[257..262] == b"ustar")
}

fn source_identity(path: &Path, kind: ImageKind) -> Result<SourceIdentity, ImageError> {
    let file = match kind {
        ImageKind::Archive => path.to_path_buf(),
        ImageKind::Layout => path.join("index.json"),
    };
    let metadata = std::fs::metadata(&file)
        .map_err(|e| ImageError::new(&file, format!("cannot read it: {e}")))?;
    Ok((
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec(),
    ))
}

/// Returns the template prepared earlier for `name`, if its source has not
/// changed and its layers are still in the cache.
fn remembered(name: &str, identity: SourceIdentity) -> Option<ImageTemplate> {
    let prepared = PREPARED.lock().unwrap_or_else(|p| p.into_inner());
    let (known, template) = prepared.as_ref()?.get(name)?;
    let intact = *known == identity && template.layers.iter().all(|layer| layer.is_dir());
    intact.then(|| template.clone())
}

fn read_and_unpack(
    path: &Path,
    kind: ImageKind,
    reference: Option<&str>,
) -> Result<ImageTemplate, ImageError> {
    let source = match kind {
        ImageKind::Layout => Source::open_layout(path)?,
        ImageKind::Archive => Source::open_archive(path)?,
    };
    let selected = select::select(&source, reference)?;
    check_platform(&source, &selected.config)?;
    let cache = LayerCache::open()?;
    let mut layers: Vec<PathBuf> = Vec::with_capacity(selected.layers.len());
    for layer in &selected.layers {
        layers.push(cache.ensure(&source, layer)?);
    }
    // Top first, as overlayfs lists lower layers. A layer that appears
    // twice keeps only its top place: its copy further down shows nothing
    // that the top copy does not already show or hide.
    layers.reverse();
    let mut seen = std::collections::HashSet::new();
    layers.retain(|layer| seen.insert(layer.clone()));
    check_mount_options_fit(&cache, &layers)?;

    let accounts = user::Accounts::read(&layers, cache.opaque_xattr());
    let config = selected.config.config().clone().unwrap_or_default();
    let user_spec = config.user().clone().unwrap_or_default();
    let user = accounts.resolve(&user_spec).map_err(|problem| {
        ImageError::new(
            source.path(),
            format!("the image's User {user_spec:?}: {problem}"),
        )
    })?;
    let env = parse_env(config.env().clone().unwrap_or_default())
        .map_err(|problem| ImageError::new(source.path(), format!("the image's Env: {problem}")))?;
    let working_dir = config
        .working_dir()
        .clone()
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let mut command = config.entrypoint().clone().unwrap_or_default();
    command.extend(config.cmd().clone().unwrap_or_default());
    Ok(ImageTemplate {
        layers,
        defaults: Arc::new(ImageDefaults {
            env,
            working_dir,
            user,
            command,
            accounts,
        }),
    })
}

/// Splits the image's `Env` entries into (name, value) at their first `=`.
/// An entry without `=` has an empty value, and one with an empty name is
/// skipped. A NUL byte is rejected, because execve would fail with `EINVAL`
/// for every command of the sandbox.
fn parse_env(entries: Vec<String>) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.contains('\0') {
            return Err(format!(
                "{entry:?} contains a NUL byte, which no environment variable can hold"
            ));
        }
        let (key, value) = match entry.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (entry, String::new()),
        };
        if !key.is_empty() {
            env.push((key, value));
        }
    }
    Ok(env)
}

/// Rejects an image that is not for Linux on this host's architecture,
/// whose programs could not run here.
fn check_platform(
    source: &Source,
    config: &oci_spec::image::ImageConfiguration,
) -> Result<(), ImageError> {
    let os = config.os().to_string();
    let arch = config.architecture().to_string();
    let host = select::host_architecture();
    if os != "linux" || arch != host {
        return Err(ImageError::new(
            source.path(),
            format!("the image is for {os}/{arch}, but this host runs linux/{host}"),
        ));
    }
    Ok(())
}

/// Rejects layers whose paths do not fit the overlay's mount options, which
/// the kernel takes in one page: the lower layers, the upper and work
/// directories and the separators.
fn check_mount_options_fit(cache: &LayerCache, layers: &[PathBuf]) -> Result<(), ImageError> {
    if let Some((lower, room)) = crate::template::lowerdir_overflow(layers) {
        return Err(ImageError::new(
            cache.dir(),
            format!(
                "the image has {} layers, whose paths take {lower} bytes of the overlay's mount \
                 options, more than the {room} that fit; set {LAYER_CACHE_VAR} to a shorter path \
                 or use an image with fewer layers",
                layers.len(),
            ),
        ));
    }
    Ok(())
}

/// Returns the command that the image template `template` runs by default:
/// its `Entrypoint` followed by its `Cmd`. Returns `None` for the `host`
/// template, directory templates and templates built on either, and an
/// empty list for an image that sets neither. A template built on an image
/// has the image's command. The image is prepared (its layers unpacked) as a create
/// would, so a create with the same template that follows reuses it.
///
/// # Errors
///
/// As [`crate::Sandbox::create`] for an invalid or unreadable template.
pub fn default_command(template: &str) -> Result<Option<Vec<String>>> {
    if template == crate::template::HOST {
        return Ok(None);
    }
    let state_dir = crate::paths::state_dir();
    let resolved = crate::template::resolve(template, &state_dir)?;
    let command = resolved.image.as_ref().map(|image| image.command.clone());
    // A template built on `host` or a directory has no image command.
    if resolved.startup.is_some() && command.as_ref().is_some_and(Vec::is_empty) {
        return Ok(None);
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_split() {
        let entries = ["A=1=2", "B", "=x", "C="].map(String::from).to_vec();
        let env = parse_env(entries).expect("valid entries");
        let expected = [("A", "1=2"), ("B", ""), ("C", "")]
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .to_vec();
        assert_eq!(env, expected);
    }

    #[test]
    fn env_nul_rejected() {
        for entry in ["A=1\0B=2", "A\0B=1"] {
            let error = parse_env(vec![entry.to_string()]).expect_err(entry);
            assert!(error.contains("NUL"), "{error}");
        }
    }
}
