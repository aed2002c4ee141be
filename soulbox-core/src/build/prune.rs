//! Removal of built templates: [`remove`] drops a name, [`prune`] deletes
//! every build that nothing keeps.
//!
//! A build is kept when a `names/*` or `sources/*` pointer names its key,
//! when a kept build was built on it (its `base_key`, followed through
//! every level), or when it is in use: some mount on the machine has its
//! layer as an overlay lower layer. The PID 1 of every sandbox, also of a
//! warm pool's waiting ones, runs in a mount namespace with that mount,
//! so `/proc/*/mountinfo` shows them all.
//!
//! A zygote's root built ahead is not seen: the zygote holds its mount
//! namespace through a descriptor, with no process in it. Deleting its
//! layer is still safe. A create of the deleted build fails at its lookup,
//! and the zygote hands a root out only while every layer has the device
//! and inode numbers it had at the build. The old layer's directory stays
//! allocated while that root pins it, so a rebuild at the same path gets
//! another inode number.
//!
//! Creates and builds take the cache lock (`built.lock`) shared, from
//! the lookup of a built template until its overlay is mounted. Removal
//! takes it exclusively around the scan of the mounts and the renames of
//! the deleted builds into `build-trash/`. The rename is atomic, so a
//! crash leaves no half-deleted build that `template.json` still marks
//! as complete. The trees in `build-trash/` are removed after the lock is
//! released, and a prune removes what a crash left there.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;

use super::{next_sequence, spec};
use crate::error::{Error, Result};
use crate::image::{cache_dir, remove_tree};

/// What [`remove`] did with one name.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemovedTemplate {
    /// The removed name.
    pub name: String,
    /// The key of the build that the name pointed to.
    pub key: String,
    /// What happened to that build's layer.
    pub layer: LayerOutcome,
}

/// What happened to the layer of a build whose name was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerOutcome {
    /// The build was deleted, freeing `bytes` of disk space.
    Deleted { bytes: u64 },
    /// A mount still uses the layer (a running sandbox or a pool's waiting
    /// sandbox), so it stays until [`prune`] runs after that mount is gone.
    InUse,
    /// Another name, or a template built on this one, still needs the
    /// build.
    Kept,
    /// The build that the name pointed to was already gone.
    Missing,
}

/// A build that [`prune`] deleted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeletedBuild {
    pub key: String,
    /// The `soulbox.toml` it was built from, where its `template.json`
    /// could be read.
    pub source: Option<PathBuf>,
    /// Disk space freed, in bytes.
    pub bytes: u64,
}

/// What [`prune`] deleted and what it left because a mount uses it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PruneReport {
    /// The deleted builds, sorted by key.
    pub deleted: Vec<DeletedBuild>,
    /// Keys of builds that nothing names but that a mount still uses.
    pub in_use: Vec<String>,
    /// Disk space freed, in bytes, with leftovers of earlier deletions.
    pub freed_bytes: u64,
}

/// The file in the layer cache whose `flock` guards the builds in `built/`
/// against a concurrent deletion. It lies outside `built/`, whose entries
/// are builds only.
const LOCK_FILE: &str = "built.lock";

/// A lock on [`LOCK_FILE`], released on drop.
#[derive(Debug)]
pub(crate) struct CacheLock {
    _lock: Flock<File>,
}

/// Takes the cache lock shared, for a create that uses a built template.
/// Returns `None` where the cache is missing or the lock file cannot be
/// opened, as for a user who may only read the cache. Without a cache
/// there is no build to protect, and a missing lock never fails a create.
pub(crate) fn lock_shared() -> Option<CacheLock> {
    take_lock(&cache_dir()?, FlockArg::LockShared).ok()
}

/// Takes the cache lock shared, for a build that is about to save or
/// register a layer in the existing cache directory `cache`.
pub(crate) fn lock_shared_for_build(cache: &Path) -> std::io::Result<CacheLock> {
    take_lock(cache, FlockArg::LockShared)
}

fn take_lock(cache: &Path, mode: FlockArg) -> std::io::Result<CacheLock> {
    let path = cache.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    loop {
        match Flock::lock(file, mode) {
            Ok(lock) => return Ok(CacheLock { _lock: lock }),
            Err((returned, nix::errno::Errno::EINTR)) => file = returned,
            Err((_, errno)) => return Err(std::io::Error::from(errno)),
        }
    }
}

/// Removes the built template `name`, and deletes its build where nothing
/// else keeps it. The name's file stops naming the build too (its
/// `sources/*` pointer goes) unless another name still points to the same
/// build. A build that a mount uses stays until [`prune`] runs after that
/// mount is gone.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when no built template has this name;
/// [`Error::Template`] when the cache cannot be read or changed.
pub fn remove(name: &str) -> Result<RemovedTemplate> {
    let unknown = || {
        Error::InvalidArgument(format!(
            "template {name:?} is not the name of a built template; list the names with \
             `soulbox template list`"
        ))
    };
    spec::check_name(name).map_err(Error::InvalidArgument)?;
    let cache = cache_dir().ok_or_else(unknown)?;
    let pointer = cache.join("names").join(name);
    if !pointer.is_file() {
        return Err(unknown());
    }
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Template {
            name: name.to_string(),
            path,
            source,
        }
    };
    let built = cache.join("built");
    let lock = take_lock(&cache, FlockArg::LockExclusive).map_err(fail(&cache.join(LOCK_FILE)))?;
    // Read again under the lock, because another remove may have removed
    // the name since the check above.
    let key = match std::fs::read_to_string(&pointer) {
        Ok(text) => text.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
        Err(e) => return Err(fail(&pointer)(e)),
    };
    std::fs::remove_file(&pointer).map_err(fail(&pointer))?;
    let pointers = read_pointers(&cache).map_err(fail(&cache))?;
    if !is_key(&key) || !built.join(&key).is_dir() {
        return Ok(RemovedTemplate {
            name: name.to_string(),
            key,
            layer: LayerOutcome::Missing,
        });
    }
    if !pointers.names.contains(&key) {
        // The file's path named the same build as this name; without the
        // name it no longer counts as built.
        for id in pointers.sources.iter().filter(|(_, to)| **to == key) {
            let path = cache.join("sources").join(id.0);
            std::fs::remove_file(&path).map_err(fail(&path))?;
        }
    }
    let pointers = read_pointers(&cache).map_err(fail(&cache))?;
    let named = with_bases(&built, pointers.keys());
    if named.contains(&key) {
        return Ok(RemovedTemplate {
            name: name.to_string(),
            key,
            layer: LayerOutcome::Kept,
        });
    }
    let in_use = with_bases(&built, layers_in_use());
    if in_use.contains(&key) {
        return Ok(RemovedTemplate {
            name: name.to_string(),
            key,
            layer: LayerOutcome::InUse,
        });
    }
    let trashed = move_to_trash(&cache, std::slice::from_ref(&key)).map_err(fail(&built))?;
    drop(lock);
    let bytes = empty_trash(trashed)
        .into_iter()
        .map(|(_, bytes)| bytes)
        .sum();
    Ok(RemovedTemplate {
        name: name.to_string(),
        key,
        layer: LayerOutcome::Deleted { bytes },
    })
}

/// Deletes every build that nothing keeps: no name or file points to it,
/// no kept build was built on it and no mount uses its layer. Running
/// builds, which are still in `build-staging/`, are left alone. Also
/// removes what an interrupted deletion left in `build-trash/`.
///
/// # Errors
///
/// [`Error::Template`] when the cache cannot be read or changed.
pub fn prune() -> Result<PruneReport> {
    let Some(cache) = cache_dir() else {
        return Ok(PruneReport::default());
    };
    let built = cache.join("built");
    if !built.is_dir() {
        return Ok(PruneReport::default());
    }
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Template {
            name: "(prune)".into(),
            path,
            source,
        }
    };
    let lock = take_lock(&cache, FlockArg::LockExclusive).map_err(fail(&cache.join(LOCK_FILE)))?;
    let pointers = read_pointers(&cache).map_err(fail(&cache))?;
    let named = with_bases(&built, pointers.keys());
    let mounted = layers_in_use();
    let in_use: HashSet<String> = with_bases(&built, mounted.iter().cloned())
        .into_iter()
        .filter(|key| !named.contains(key))
        .collect();
    let kept: HashSet<&String> = named.iter().chain(&in_use).collect();
    let mut unkept = Vec::new();
    for entry in std::fs::read_dir(&built).map_err(fail(&built))? {
        let entry = entry.map_err(fail(&built))?;
        let Some(key) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if is_key(&key) && !kept.contains(&key) {
            unkept.push(key);
        }
    }
    unkept.sort();
    let sources: HashMap<String, Option<PathBuf>> = unkept
        .iter()
        .map(|key| (key.clone(), read_source(&built.join(key))))
        .collect();
    let trashed = move_to_trash(&cache, &unkept).map_err(fail(&built))?;
    let leftovers = abandoned_trash(&cache, &mounted);
    drop(lock);

    let mut report = PruneReport::default();
    for (key, bytes) in empty_trash(trashed) {
        report.freed_bytes += bytes;
        report.deleted.push(DeletedBuild {
            source: sources.get(&key).cloned().flatten(),
            key,
            bytes,
        });
    }
    report.freed_bytes += empty_trash(leftovers)
        .into_iter()
        .map(|(_, bytes)| bytes)
        .sum::<u64>();
    let mut in_use: Vec<String> = in_use
        .into_iter()
        .filter(|key| built.join(key).is_dir())
        .collect();
    in_use.sort();
    report.in_use = in_use;
    Ok(report)
}

/// The keys that `names/*` and `sources/*` point to.
struct Pointers {
    /// Keys of `names/*`.
    names: HashSet<String>,
    /// Key of each `sources/*` entry, by file name.
    sources: HashMap<std::ffi::OsString, String>,
}

impl Pointers {
    fn keys(&self) -> Vec<String> {
        self.names
            .iter()
            .chain(self.sources.values())
            .cloned()
            .collect()
    }
}

fn read_pointers(cache: &Path) -> std::io::Result<Pointers> {
    let mut pointers = Pointers {
        names: HashSet::new(),
        sources: HashMap::new(),
    };
    for kind in ["names", "sources"] {
        let entries = match std::fs::read_dir(cache.join(kind)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name();
            // `.ID.PID.N` files are pointers being written.
            if file_name.as_bytes().starts_with(b".") {
                continue;
            }
            let key = match std::fs::read_to_string(entry.path()) {
                Ok(text) => text.trim().to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !is_key(&key) {
                continue;
            }
            if kind == "names" {
                pointers.names.insert(key);
            } else {
                pointers.sources.insert(file_name, key);
            }
        }
    }
    Ok(pointers)
}

/// Returns `keys` with the keys of the builds below them, following each
/// `template.json`'s `base_key`.
fn with_bases(built: &Path, keys: impl IntoIterator<Item = String>) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut pending: Vec<String> = keys.into_iter().collect();
    while let Some(key) = pending.pop() {
        if !found.insert(key.clone()) {
            continue;
        }
        if let Some(base) = read_base_key(&built.join(&key)) {
            pending.push(base);
        }
    }
    found
}

/// The fields of `template.json` that removal reads, of any format.
#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    source: Option<PathBuf>,
    #[serde(default)]
    base_key: Option<String>,
}

fn read_links(built: &Path) -> Option<Links> {
    let text = std::fs::read(built.join("template.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

fn read_base_key(built: &Path) -> Option<String> {
    read_links(built)?.base_key.filter(|key| is_key(key))
}

fn read_source(built: &Path) -> Option<PathBuf> {
    read_links(built)?.source
}

fn is_key(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Returns the keys of the builds whose layer some overlay mount on the
/// machine has as a lower layer. Reads `/proc/PID/mountinfo` of every
/// process, not once per mount namespace, because it lists only the
/// mounts below the process's root: a chrooted process of a namespace
/// hides the overlay that its other processes show, and a bind of `/`
/// as its root has the device and inode numbers of `/`.
///
/// A lower layer counts by its last three components, `built/KEY/layer`,
/// so a layer mounted through another path of the same cache (a symbolic
/// link, a bind mount) still counts. A build of the same key in another
/// cache that is in use keeps this one too, which errs on the side of
/// keeping.
fn layers_in_use() -> HashSet<String> {
    let mut keys = HashSet::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return keys;
    };
    for entry in processes.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let dir = entry.path();
        // NOTE: a process whose mountinfo cannot be read, such as another
        // user's for a caller that is not root, is skipped.
        let Ok(mountinfo) = std::fs::read(dir.join("mountinfo")) else {
            continue;
        };
        for line in mountinfo.split(|&b| b == b'\n') {
            for lower in overlay_lower_dirs(line) {
                if let Some(key) = built_key_of_layer(&lower) {
                    keys.insert(key);
                }
            }
        }
    }
    keys
}

/// Returns the key of a path that ends in `built/KEY/layer`.
fn built_key_of_layer(path: &[u8]) -> Option<String> {
    let mut parts = path.rsplit(|&b| b == b'/').filter(|part| !part.is_empty());
    let (layer, key, built) = (parts.next()?, parts.next()?, parts.next()?);
    let key = std::str::from_utf8(key).ok()?;
    (layer == b"layer" && built == b"built" && is_key(key)).then(|| key.to_string())
}

/// Returns the lower layers of the overlay mount on one line of
/// `/proc/PID/mountinfo`, or none for another file system. On Linux 6.18
/// the super options show either `lowerdir=A:B` (the string given at the
/// mount, with `\` escaping a `:` in a path) or one `lowerdir+=A` or
/// `datadir+=A` per layer (from `fsconfig`). Every value has `,`, `=`,
/// space, tab, newline and `\` escaped as `\` and three octal digits.
fn overlay_lower_dirs(line: &[u8]) -> Vec<Vec<u8>> {
    let mut layers = Vec::new();
    let Some(separator) = line.windows(3).position(|window| window == b" - ") else {
        return layers;
    };
    let mut fields = line[separator + 3..].split(|&b| b == b' ');
    let (Some(fs_type), Some(_source), Some(options)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return layers;
    };
    if fs_type != b"overlay" {
        return layers;
    }
    for option in options.split(|&b| b == b',') {
        if let Some(value) = option.strip_prefix(b"lowerdir=") {
            layers.extend(split_lowerdir(&unescape_octal(value)));
        } else if let Some(value) = option
            .strip_prefix(b"lowerdir+=")
            .or_else(|| option.strip_prefix(b"datadir+="))
        {
            layers.push(unescape_octal(value));
        }
    }
    layers
}

/// Replaces each `\` followed by three octal digits with that byte, as
/// the kernel's `seq_escape` writes them.
fn unescape_octal(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let digits = text.get(i + 1..i + 4);
        if text[i] == b'\\' && digits.is_some_and(|d| d.iter().all(|b| (b'0'..=b'7').contains(b))) {
            let d = digits.unwrap_or_default();
            out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
            i += 4;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

/// Splits overlayfs's `lowerdir=` value at each `:` that no `\` escapes.
/// Empty parts, as the `::` before data-only layers leaves, are dropped.
fn split_lowerdir(value: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => {
                if let Some(&next) = bytes.next() {
                    current.push(next);
                }
            }
            b':' => parts.push(std::mem::take(&mut current)),
            _ => current.push(b),
        }
    }
    parts.push(current);
    parts.retain(|part| !part.is_empty());
    parts
}

/// A build moved into `build-trash/`, waiting to be removed.
struct Trashed {
    key: String,
    path: PathBuf,
}

/// Renames each `built/KEY` into `build-trash/KEY-N-PID`, then scans the
/// mounts again and puts back any build that was mounted before its
/// rename. Once renamed, its layer's path no longer exists, so no later
/// mount can take it. Must run under the exclusive cache lock.
fn move_to_trash(cache: &Path, keys: &[String]) -> std::io::Result<Vec<Trashed>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let trash = cache.join("build-trash");
    std::fs::create_dir_all(&trash)?;
    let mut trashed = Vec::new();
    for key in keys {
        let path = trash.join(format!("{key}-{}-{}", next_sequence(), std::process::id()));
        match std::fs::rename(cache.join("built").join(key), &path) {
            Ok(()) => trashed.push(Trashed {
                key: key.clone(),
                path,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // A mount made without the lock (by a SoulBox older than the lock) that
    // looked the layer up before its rename shows here.
    let mounted = layers_in_use();
    let mut kept = Vec::new();
    for item in trashed {
        if !mounted.contains(&item.key) {
            kept.push(item);
            continue;
        }
        // NOTE: where a build of the same key took the place meanwhile,
        // the old one stays in the trash until a prune finds it unused.
        let _ = std::fs::rename(&item.path, cache.join("built").join(&item.key));
    }
    Ok(kept)
}

/// Returns the entries of `build-trash/` that a deletion whose process is
/// gone left behind, except those whose key a mount uses.
fn abandoned_trash(cache: &Path, mounted: &HashSet<String>) -> Vec<Trashed> {
    let Ok(entries) = std::fs::read_dir(cache.join("build-trash")) else {
        return Vec::new();
    };
    let mut abandoned = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(pid) = name
            .rsplit('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let key = name.split('-').next().unwrap_or_default();
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if mounted.contains(key) {
            continue;
        }
        abandoned.push(Trashed {
            key: key.to_string(),
            path: entry.path(),
        });
    }
    abandoned
}

/// Removes each trashed tree and returns its key and the bytes freed.
/// A tree that cannot be removed entirely stays for the next prune.
fn empty_trash(trashed: Vec<Trashed>) -> Vec<(String, u64)> {
    trashed
        .into_iter()
        .map(|item| {
            let bytes = disk_usage(&item.path);
            if let Err(error) = remove_tree(&item.path) {
                tracing::warn!(
                    path = %item.path.display(),
                    %error,
                    "cannot remove a deleted build; the next prune retries"
                );
            }
            (item.key, bytes)
        })
        .collect()
}

/// Returns the disk space that the tree at `path` takes, in bytes,
/// counting each hard-linked file once.
fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut linked = HashSet::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.nlink() > 1
            && !metadata.is_dir()
            && !linked.insert((metadata.dev(), metadata.ino()))
        {
            continue;
        }
        total += metadata.blocks() * 512;
        if metadata.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|entry| entry.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn lowerdir_colon_form_parsed() {
        let line = format!(
            "70 47 0:40 / /tmp/m rw,relatime - overlay overlay \
             ro,lowerdir=/var/cache/built/{KEY}/layer:/tmp/a\\040b:/tmp/c\\134:d,redirect_dir=on"
        );
        let layers = overlay_lower_dirs(line.as_bytes());
        assert_eq!(layers.len(), 3, "{layers:?}");
        assert_eq!(
            layers[0],
            format!("/var/cache/built/{KEY}/layer").as_bytes()
        );
        assert_eq!(layers[1], b"/tmp/a b");
        assert_eq!(layers[2], b"/tmp/c:d");
    }

    #[test]
    fn lowerdir_plus_form_parsed() {
        let line = "71 47 0:40 / /tmp/m rw,relatime - overlay overlay \
                    rw,lowerdir+=/tmp/a\\054b,lowerdir+=/tmp/e,datadir+=/tmp/f,upperdir=/tmp/u,\
                    workdir=/tmp/w,uuid=on";
        let layers = overlay_lower_dirs(line.as_bytes());
        assert_eq!(
            layers,
            vec![b"/tmp/a,b".to_vec(), b"/tmp/e".to_vec(), b"/tmp/f".to_vec()]
        );
    }

    #[test]
    fn other_file_systems_ignored() {
        let line = "25 1 0:22 / /tmp rw - tmpfs tmpfs rw,lowerdir=/x";
        assert!(overlay_lower_dirs(line.as_bytes()).is_empty());
        assert!(overlay_lower_dirs(b"").is_empty());
    }

    #[test]
    fn layer_path_names_key() {
        let path = format!("/var/lib/soulbox/layers/built/{KEY}/layer");
        assert_eq!(built_key_of_layer(path.as_bytes()).as_deref(), Some(KEY));
        let image_layer = format!("/var/lib/soulbox/layers/sha256/{KEY}");
        assert_eq!(built_key_of_layer(image_layer.as_bytes()), None);
        let short = "/var/lib/soulbox/layers/built/abc/layer";
        assert_eq!(built_key_of_layer(short.as_bytes()), None);
    }
}
