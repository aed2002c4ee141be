//! Templates built from a `soulbox.toml`: a base template, files copied in
//! and shell steps run in a sandbox, whose writable layer is kept as a new
//! lower layer. No Docker is involved.
//!
//! A build is cached under a key: the SHA-256 of the file's bytes, the
//! copied files' paths, modes and contents, the base's layer paths (which
//! name an image's layers by digest and a built base by its key) and the
//! caller's uid. A second build with nothing changed returns at once. The
//! result lives in the layer cache (see [`crate::image::LAYER_CACHE_VAR`]):
//! - `built/<key>/layer`: the layer, and `built/<key>/template.json`, the
//!   defaults of its sandboxes. The directory appears only by a rename
//!   from `build-staging/`, so a killed build leaves nothing that a
//!   create uses.
//! - `names/<name>`: the key of the template built under `name`.
//! - `sources/<sha256 of the soulbox.toml's path>`: the key of that file's
//!   latest build, so that the file's path or folder names the template.
//!
//! [`remove`] and [`prune`] delete the builds that nothing keeps any more,
//! by a rename into `build-trash/` first. [`prune`] says what keeps a build.

mod files;
mod layer;
mod prune;
mod spec;
mod startup;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::ExitStatus;
use crate::error::{Error, Result};
use crate::image::{cache_dir, remove_tree, ImageDefaults, ImageError, LayerCache};
use crate::network::Network;
use crate::process::CommandEvent;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::template::Template;

pub(crate) use prune::{lock_shared, CacheLock};
pub use prune::{prune, remove, DeletedBuild, LayerOutcome, PruneReport, RemovedTemplate};
pub use spec::{Resources, SPEC_FILE};

/// Version of the key and of `template.json`; a change makes every
/// template build anew.
const FORMAT: u32 = 1;

/// Metadata key whose value is the `soulbox.toml` that a build sandbox
/// runs the steps of.
pub const BUILD_LABEL: &str = "soulbox.build";

/// How to build; start from [`BuildOptions::default`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BuildOptions {
    /// The name to register the template under, in place of the file's
    /// `name` key.
    pub name: Option<String>,
}

impl BuildOptions {
    /// Sets the name the template is registered under.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Progress of a build, passed to the caller's callback as it happens.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildEvent<'a> {
    /// A build with the same key is cached; nothing runs.
    Cached {
        /// The cached build's key.
        key: &'a str,
    },
    /// A `[[files]]` entry is being copied in.
    File {
        /// Path in the build folder.
        from: &'a Path,
        /// Path in the template.
        to: &'a str,
    },
    /// A `run` step starts; `number` counts from 1.
    Step {
        number: usize,
        count: usize,
        command: &'a str,
    },
    /// Bytes that the running step wrote to stdout.
    Stdout(&'a [u8]),
    /// Bytes that the running step wrote to stderr.
    Stderr(&'a [u8]),
    /// Every step succeeded; the writable layer is being saved.
    Saving,
}

/// A built template.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuiltTemplate {
    /// The build's key (hex SHA-256).
    pub key: String,
    /// The name it is registered under, if any.
    pub name: Option<String>,
    /// The `soulbox.toml` it was built from.
    pub source: PathBuf,
    /// The kept layer.
    pub layer: PathBuf,
    /// Whether the build was cached and nothing ran.
    pub cached: bool,
}

/// A named built template, as [`list`] returns it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TemplateSummary {
    pub name: String,
    pub key: String,
    pub source: PathBuf,
    pub base: String,
    /// When it was built, in milliseconds since the Unix epoch.
    pub built_at_ms: u64,
}

/// The contents of `template.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Metadata {
    format: u32,
    source: PathBuf,
    name: Option<String>,
    base: String,
    /// The key of the build that `base` named at this build, where it is a
    /// built template, so that a rebuild of the base leaves this one on
    /// the layer it was built on.
    #[serde(default)]
    base_key: Option<String>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    user: Option<String>,
    start: Option<String>,
    ready: Option<String>,
    ready_timeout_ms: u64,
    resources: Resources,
    built_at_ms: u64,
}

/// What a built template adds to each create: its start and ready
/// commands and its resource defaults.
#[derive(Debug, Clone)]
pub(crate) struct Startup {
    /// The build's directory in the cache.
    pub(crate) built: PathBuf,
    pub(crate) start: Option<String>,
    pub(crate) ready: Option<String>,
    pub(crate) ready_timeout: Duration,
    pub(crate) resources: Resources,
}

/// Builds the template that the `soulbox.toml` at `path` (or in the
/// directory `path`) describes, and registers it under its name. Calls
/// `on_event` with each step and each chunk of a step's output as they
/// happen.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an invalid file, naming the key;
/// [`Error::Build`] when a file cannot be copied, a step exits with a
/// non-zero status (naming the step and the status) or the layer cannot
/// be saved; other variants as [`Sandbox::create`] for the build sandbox.
/// A failed build leaves nothing in the cache.
pub async fn build(
    path: &Path,
    options: &BuildOptions,
    on_event: &mut (dyn FnMut(BuildEvent<'_>) + Send),
) -> Result<BuiltTemplate> {
    let spec = spec::Spec::load(path)?;
    let name = options.name.clone().or_else(|| spec.name.clone());
    if let Some(name) = &name {
        spec::check_name(name).map_err(Error::InvalidArgument)?;
    }
    let state_dir = crate::paths::state_dir();
    let cache = LayerCache::open().map_err(image_error(&spec.path))?;
    let mut attempt = 1;
    let (key, cached, _lock) = loop {
        let base =
            crate::sandbox::resolve_template(&spec.base, &state_dir).map_err(|e| match e {
                Error::InvalidArgument(message) => Error::InvalidArgument(format!(
                    "{}: base {:?}: {message}",
                    spec.path.display(),
                    spec.base
                )),
                other => other,
            })?;
        let mut items = files::open(&spec)?;
        let key = build_key(&spec, &base, &mut items)?;
        let base_key = base.startup.as_ref().map(|below| key_of(&below.built));
        let base_layers = base.lower_dirs.clone();
        // Releases the cache lock that resolving a built base takes, so that
        // a prune waits for no build. The build sandbox's create resolves the
        // base again, and checks that it has the same layers.
        drop(base);
        let built = cache.dir().join("built").join(&key);
        // Held until the pointers are written, so that no prune deletes the
        // build between the check or the save and its registration.
        let lock = prune::lock_shared_for_build(cache.dir()).map_err(|e| lock_error(&spec, &e))?;
        if built.join("template.json").is_file() {
            on_event(BuildEvent::Cached { key: &key });
            break (key, true, lock);
        }
        drop(lock);
        let labels = Labels {
            name: name.as_deref(),
            base_key,
            base_layers: &base_layers,
        };
        match run_build(&spec, &labels, &items, &cache, &built, on_event).await? {
            Some(lock) => break (key, false, lock),
            // The base was rebuilt, or its image pulled again, since the key
            // was computed: the key must name the base the steps run on.
            None if attempt < BASE_CHANGE_ATTEMPTS => attempt += 1,
            None => {
                return Err(Error::Build {
                    path: spec.path.clone(),
                    message: format!(
                        "its base {:?} changed {BASE_CHANGE_ATTEMPTS} times while the build \
                         started (rebuilt, or its image pulled again); build again once the \
                         base stays the same",
                        spec.base
                    ),
                })
            }
        }
    };
    let built = cache.dir().join("built").join(&key);
    let fail = |e: std::io::Error| Error::Build {
        path: spec.path.clone(),
        message: format!(
            "cannot register the template in {}: {e}",
            cache.dir().display()
        ),
    };
    write_pointer(cache.dir(), "sources", &source_id(&spec.path), &key).map_err(fail)?;
    if let Some(name) = &name {
        write_pointer(cache.dir(), "names", name, &key).map_err(fail)?;
    }
    Ok(BuiltTemplate {
        key,
        name,
        source: spec.path.clone(),
        layer: built.join("layer"),
        cached,
    })
}

/// Lists the named built templates, sorted by name.
///
/// # Errors
///
/// [`Error::Template`] when the layer cache cannot be read.
pub fn list() -> Result<Vec<TemplateSummary>> {
    let Some(dir) = cache_dir() else {
        return Ok(Vec::new());
    };
    let names = match std::fs::read_dir(dir.join("names")) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Template {
                name: "(list)".into(),
                path: dir.join("names"),
                source,
            })
        }
    };
    let mut summaries = Vec::new();
    for entry in names.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if spec::check_name(&name).is_err() {
            continue;
        }
        let Ok(built) = lookup_name(&name) else {
            continue;
        };
        let Ok(metadata) = read_metadata(&built) else {
            continue;
        };
        summaries.push(TemplateSummary {
            name,
            key: key_of(&built),
            source: metadata.source,
            base: metadata.base,
            built_at_ms: metadata.built_at_ms,
        });
    }
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(summaries)
}

/// Returns whether `name` has the form of a built template's name.
pub(crate) fn is_name(name: &str) -> bool {
    spec::check_name(name).is_ok()
}

/// Returns the directory of the template built under `name`.
pub(crate) fn lookup_name(name: &str) -> Result<PathBuf> {
    lookup("names", name, || {
        format!(
            "template {name:?} is neither \"host\", an absolute path nor the name of a built \
             template; build one with `soulbox template build --name {name} DIR`"
        )
    })
}

/// Returns the directory of the latest build of the `soulbox.toml` at
/// `path` (canonical).
pub(crate) fn lookup_source(path: &Path) -> Result<PathBuf> {
    lookup("sources", &source_id(path), || {
        format!(
            "template {} has not been built; run `soulbox template build {}` first",
            path.display(),
            path.display()
        )
    })
}

/// Returns the template that the build in `built` makes: its layer above
/// the base's layers, the base's binds, and the file's defaults.
pub(crate) fn resolve(built: &Path, state_dir: &Path) -> Result<Template> {
    resolve_at_depth(built, state_dir, 0)
}

/// Most templates built on built templates below one another.
const MAX_BASE_DEPTH: usize = 16;

fn resolve_at_depth(built: &Path, state_dir: &Path, depth: usize) -> Result<Template> {
    let metadata = read_metadata(built)?;
    let base = match &metadata.base_key {
        Some(key) if depth < MAX_BASE_DEPTH => {
            let base_dir = built.with_file_name(key);
            if !base_dir.join("template.json").is_file() {
                return Err(Error::InvalidArgument(format!(
                    "template {}: its base {:?} (build {key}) is gone from the cache; build the \
                     base and then this template again",
                    metadata.source.display(),
                    metadata.base
                )));
            }
            std::borrow::Cow::Owned(resolve_at_depth(&base_dir, state_dir, depth + 1)?)
        }
        Some(_) => {
            return Err(Error::InvalidArgument(format!(
                "template {} lies on more than {MAX_BASE_DEPTH} built templates; build it on \
                 fewer",
                metadata.source.display()
            )))
        }
        None => crate::template::resolve(&metadata.base, state_dir)?,
    };
    let mut lower_dirs = vec![built.join("layer")];
    lower_dirs.extend(base.lower_dirs.iter().cloned());
    check_mount_options_fit(&metadata.source, &lower_dirs)?;
    let opaque = if crate::sys::geteuid() == 0 {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    };
    let defaults = ImageDefaults::for_built(
        &lower_dirs,
        opaque,
        base.image.as_deref(),
        &metadata.env,
        metadata.user.as_deref(),
        metadata.workdir.as_deref(),
    )
    .map_err(|problem| {
        Error::InvalidArgument(format!(
            "template {}: user: {problem}",
            metadata.source.display()
        ))
    })?;
    let mut startup = Startup {
        built: built.to_path_buf(),
        start: metadata.start,
        ready: metadata.ready,
        ready_timeout: Duration::from_millis(metadata.ready_timeout_ms),
        resources: metadata.resources,
    };
    // What this file leaves out, a built base gives.
    if let Some(below) = base.startup.as_deref() {
        startup.start = startup.start.or_else(|| below.start.clone());
        if startup.ready.is_none() {
            startup.ready.clone_from(&below.ready);
            startup.ready_timeout = below.ready_timeout;
        }
        let resources = &mut startup.resources;
        resources.memory_mb = resources.memory_mb.or(below.resources.memory_mb);
        resources.cpu_count = resources.cpu_count.or(below.resources.cpu_count);
        resources.disk_mb = resources.disk_mb.or(below.resources.disk_mb);
    }
    Ok(Template {
        lower_dirs,
        binds: base.binds.clone(),
        image: Some(Arc::new(defaults)),
        startup: Some(Arc::new(startup)),
        cache_lock: None,
    })
}

/// Rejects layers whose paths, joined into the overlay's `lowerdir=`
/// option, leave too little of the one page that the kernel takes for all
/// mount options, as image templates do.
fn check_mount_options_fit(source: &Path, layers: &[PathBuf]) -> Result<()> {
    if let Some((lower, room)) = crate::template::lowerdir_overflow(layers) {
        return Err(Error::InvalidArgument(format!(
            "template {} has {} layers, whose paths take {lower} bytes of the overlay's mount \
             options, more than the {room} that fit; set {} to a shorter path or build on a base \
             with fewer layers",
            source.display(),
            layers.len(),
            crate::image::LAYER_CACHE_VAR
        )));
    }
    Ok(())
}

fn lookup(kind: &str, id: &str, missing: impl Fn() -> String) -> Result<PathBuf> {
    let dir = cache_dir().ok_or_else(|| Error::InvalidArgument(missing()))?;
    let key = match std::fs::read_to_string(dir.join(kind).join(id)) {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::InvalidArgument(missing()))
        }
        Err(source) => {
            return Err(Error::Template {
                name: id.into(),
                path: dir.join(kind).join(id),
                source,
            })
        }
    };
    let key = key.trim();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!(
            "{} does not hold a build key; build the template again",
            dir.join(kind).join(id).display()
        )));
    }
    let built = dir.join("built").join(key);
    if !built.join("template.json").is_file() {
        return Err(Error::InvalidArgument(format!(
            "{}: the build it names is gone from {}; build the template again",
            missing(),
            dir.display()
        )));
    }
    Ok(built)
}

fn key_of(built: &Path) -> String {
    built
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_metadata(built: &Path) -> Result<Metadata> {
    let path = built.join("template.json");
    let text = std::fs::read(&path).map_err(|source| Error::Template {
        name: key_of(built),
        path: path.clone(),
        source,
    })?;
    let metadata: Metadata = serde_json::from_slice(&text).map_err(|e| Error::Template {
        name: key_of(built),
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    if metadata.format != FORMAT {
        return Err(Error::InvalidArgument(format!(
            "{} is of format {}, this SoulBox reads {FORMAT}; build the template again",
            path.display(),
            metadata.format
        )));
    }
    Ok(metadata)
}

/// Writes `key` into `<cache>/<kind>/<id>` by a rename, so that a reader
/// sees the old key or the new one.
fn write_pointer(cache: &Path, kind: &str, id: &str, key: &str) -> std::io::Result<()> {
    let dir = cache.join(kind);
    std::fs::create_dir_all(&dir)?;
    let staging = dir.join(format!(".{id}.{}.{}", std::process::id(), next_sequence()));
    std::fs::write(&staging, format!("{key}\n"))?;
    std::fs::rename(&staging, dir.join(id)).inspect_err(|_| {
        let _ = std::fs::remove_file(&staging);
    })
}

/// Returns a number unique within this process, for temporary names that
/// concurrent builds in one process must not share.
fn next_sequence() -> u64 {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn source_id(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    hex(&Sha256::digest(path.as_os_str().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn image_error(path: &Path) -> impl Fn(ImageError) -> Error + '_ {
    move |error| Error::Build {
        path: path.to_path_buf(),
        message: format!("{}: {}", error.path.display(), error.message),
    }
}

/// Returns the build's key; see the module's documentation.
fn build_key(spec: &spec::Spec, base: &Template, items: &mut [files::CopyItem]) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut hash = Sha256::new();
    hash.update(format!(
        "soulbox-template {FORMAT}\nuid {}\n",
        crate::sys::geteuid()
    ));
    hash.update((spec.text.len() as u64).to_le_bytes());
    hash.update(&spec.text);
    hash.update(spec.base.as_bytes());
    hash.update([0]);
    for layer in &base.lower_dirs {
        hash.update(layer.as_os_str().as_bytes());
        hash.update([0]);
    }
    files::hash_into(&mut hash, spec, items)?;
    Ok(hex(&hash.finalize()))
}

/// How many times a build starts over when its base changes between the
/// key's computation and the build sandbox's create.
const BASE_CHANGE_ATTEMPTS: u32 = 3;

/// What `template.json` records besides the file's keys, and the base's
/// layers that the key was computed from.
struct Labels<'a> {
    name: Option<&'a str>,
    base_key: Option<String>,
    base_layers: &'a [PathBuf],
}

/// Runs the build in a sandbox and saves its layer as `built`. Returns the
/// shared cache lock, which the caller holds until it has registered the
/// build, or `None`, with nothing built, when the base no longer has the
/// layers in `labels`.
async fn run_build(
    spec: &spec::Spec,
    labels: &Labels<'_>,
    items: &[files::CopyItem],
    cache: &LayerCache,
    built: &Path,
    on_event: &mut (dyn FnMut(BuildEvent<'_>) + Send),
) -> Result<Option<CacheLock>> {
    let fail = |message: String| Error::Build {
        path: spec.path.clone(),
        message,
    };
    let mut options = SandboxOptions::default()
        .template(spec.base.clone())
        .kill_on_drop(true)
        .network(spec.network)
        .timeout(Duration::ZERO);
    if let Some(disk) = spec.resources.disk_mb {
        options.disk_size = disk << 20;
    }
    // The writable layer is a tmpfs, whose pages count towards the memory
    // limit, so a layer that fills the disk size must still leave the
    // steps SoulBox's default memory.
    options.memory_limit = Some(
        options
            .disk_size
            .saturating_add(crate::DEFAULT_MEMORY_LIMIT),
    );
    // Labels the build sandbox in `soulbox ls`, where a path fits the
    // metadata rules.
    if let Some(path) = spec
        .path
        .to_str()
        .filter(|path| path.len() <= 1024 && !path.chars().any(char::is_control))
    {
        options = options.metadata(BUILD_LABEL, path);
    }
    options.send_upper = true;
    options.validate()?;
    let same_base = |base: &Template| base.lower_dirs == labels.base_layers;
    let Some(mut prepared) =
        Sandbox::prepare_if(&options, (options.timeout, false), None, same_base).await?
    else {
        return Ok(None);
    };
    let upper = prepared.take_upper().ok_or_else(|| {
        fail("the sandbox's PID 1 sent no descriptor of its writable layer".into())
    })?;
    let sandbox = prepared.hand_over(&options, false).await?;

    if let Some(dir) = &spec.workdir {
        make_workdir(&sandbox, spec, dir).await?;
    }
    files::copy_in(&sandbox, spec, items, on_event).await?;
    let count = spec.run.len();
    for (index, step) in spec.run.iter().enumerate() {
        on_event(BuildEvent::Step {
            number: index + 1,
            count,
            command: step,
        });
        let mut command = sandbox.shell(step);
        command.timeout(Some(spec.run_timeout));
        for (key, value) in &spec.env {
            command.env(key, value);
        }
        if let Some(user) = &spec.user {
            command.user(user.clone());
        }
        if let Some(dir) = &spec.workdir {
            command.cwd(dir.clone());
        }
        let mut handle = command.start().await?;
        let exit = loop {
            match handle.next_event().await? {
                Some(CommandEvent::Stdout(data)) => on_event(BuildEvent::Stdout(&data)),
                Some(CommandEvent::Stderr(data)) => on_event(BuildEvent::Stderr(&data)),
                Some(CommandEvent::Exit(exit)) => break Some(exit),
                None => break None,
            }
        };
        if exit.is_some_and(|exit| exit.timed_out) {
            return Err(fail(format!(
                "run step {} of {count} ({step:?}) timed out after {} s and was killed; raise \
                 run_timeout_secs (at most {}) if it needs longer",
                index + 1,
                spec.run_timeout.as_secs(),
                spec::MAX_RUN_TIMEOUT_SECS
            )));
        }
        let status = exit.map(|exit| exit.status);
        if !status.is_some_and(ExitStatus::success) {
            let status = status.map_or("no exit status (the sandbox ended)".to_string(), |s| {
                s.to_string()
            });
            return Err(fail(format!(
                "run step {} of {count} ({step:?}) failed with {status}",
                index + 1
            )));
        }
    }
    on_event(BuildEvent::Saving);
    // Taken while the build sandbox still mounts a built base, so that a
    // prune sees the base in use until the new build names it.
    let lock = prune::lock_shared_for_build(cache.dir()).map_err(|e| lock_error(spec, &e))?;
    // Every process ends first, so the layer no longer changes.
    sandbox.kill().await?;
    let network_written: &[&str] = match spec.network {
        Network::Internet => &["etc/resolv.conf"],
        Network::None => &[],
    };
    let metadata = Metadata {
        format: FORMAT,
        source: spec.path.clone(),
        name: labels.name.map(str::to_string),
        base: spec.base.clone(),
        base_key: labels.base_key.clone(),
        env: spec.env.clone(),
        workdir: spec.workdir.clone(),
        user: spec.user.clone(),
        start: spec.start.clone(),
        ready: spec.ready.clone(),
        ready_timeout_ms: spec.ready_timeout.as_millis() as u64,
        resources: spec.resources.clone(),
        built_at_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let cache_dir = cache.dir().to_path_buf();
    let built = built.to_path_buf();
    let opaque = cache.opaque_xattr();
    let saved = tokio::task::spawn_blocking(move || {
        save_layer(
            &cache_dir,
            &built,
            &upper,
            opaque,
            network_written,
            &metadata,
        )
    })
    .await
    .map_err(|e| fail(format!("the task saving the layer failed: {e}")))?;
    saved.map_err(|e| fail(format!("cannot save the layer: {e}")))?;
    Ok(Some(lock))
}

fn lock_error(spec: &spec::Spec, error: &std::io::Error) -> Error {
    Error::Build {
        path: spec.path.clone(),
        message: format!("cannot lock the layer cache's built.lock: {error}"),
    }
}

/// Makes `dir` for the steps, owned by their user, also where only root
/// may create it (such as `/srv/app`). Its missing parents belong to root.
async fn make_workdir(sandbox: &Sandbox, spec: &spec::Spec, dir: &str) -> Result<()> {
    let created = sandbox.files().user("root").make_dir(dir).await?;
    let (uid, gid) = crate::command::user_ids(
        spec.user.as_deref(),
        sandbox.inner.rootless,
        sandbox.inner.image.as_deref(),
    )?;
    if !created || uid == 0 {
        return Ok(());
    }
    let mut chown = sandbox.command("chown");
    chown
        .args([format!("{uid}:{gid}"), dir.to_string()])
        .user("root");
    let output = chown.output().await?;
    if !output.status.success() {
        return Err(Error::Build {
            path: spec.path.clone(),
            message: format!(
                "cannot give workdir {dir} to uid {uid}: {}; the base needs chown",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Copies the upper directory into a staging directory with its
/// `template.json`, syncs it and renames it to `built`. Removes staging
/// directories of builds whose process is gone.
fn save_layer(
    cache: &Path,
    built: &Path,
    upper: &std::os::fd::OwnedFd,
    opaque_xattr: &str,
    skip: &[&str],
    metadata: &Metadata,
) -> std::io::Result<()> {
    // Not the image layers' `staging/`, whose sweep removes every entry
    // without a held lock.
    let staging_root = cache.join("build-staging");
    std::fs::create_dir_all(&staging_root)?;
    remove_abandoned(&staging_root);
    // The sequence number keeps two builds of one key in this process
    // apart; the pid stays last for `remove_abandoned`.
    let staging = staging_root.join(format!(
        "built-{}-{}-{}",
        key_of(built),
        next_sequence(),
        std::process::id()
    ));
    remove_tree(&staging)?;
    std::fs::create_dir(&staging)?;
    let result = (|| {
        // The trailing `.` makes every lookup, `lstat` included, go through
        // the magic link to the directory rather than stop at the link.
        let source = PathBuf::from(format!("/proc/self/fd/{}/.", upper.as_raw_fd()));
        let plan = layer::CopyPlan {
            opaque_xattr,
            chown: crate::sys::geteuid() == 0,
            skip,
        };
        layer::copy_upper(&source, &staging.join("layer"), &plan)?;
        let json = serde_json::to_vec_pretty(metadata).map_err(std::io::Error::other)?;
        std::fs::write(staging.join("template.json"), json)?;
        let dir = std::fs::File::open(&staging)?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(std::io::Error::from)?;
        std::fs::create_dir_all(built.parent().unwrap_or(cache))?;
        // Another build of the same key may have finished first; its
        // layer is equivalent, so this one is dropped.
        match std::fs::rename(&staging, built) {
            Err(_) if built.join("template.json").is_file() => {
                let _ = remove_tree(&staging);
                Ok(())
            }
            other => other,
        }
    })();
    if result.is_err() {
        let _ = remove_tree(&staging);
    }
    result
}

/// Removes `built-KEY-N-PID` staging directories whose process no longer
/// runs: builds that were killed midway.
fn remove_abandoned(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|name| name.starts_with("built-"))
            .and_then(|name| name.rsplit('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // NOTE: a reused pid keeps its directory until that process ends.
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = remove_tree(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_layer_paths_rejected() {
        let source = Path::new("/srv/app/soulbox.toml");
        let short = vec![PathBuf::from("/var/lib/soulbox/layers/built/a/layer"); 3];
        assert!(check_mount_options_fit(source, &short).is_ok());
        let long = vec![PathBuf::from(format!("/{}", "x".repeat(250))); 20];
        let error = check_mount_options_fit(source, &long).expect_err("20 long layers fit");
        let message = error.to_string();
        assert!(message.contains("20 layers"), "{message}");
        assert!(message.contains(crate::image::LAYER_CACHE_VAR), "{message}");
    }
}
