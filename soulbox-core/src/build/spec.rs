//! The `soulbox.toml` file of a template build: its keys, read with the
//! `toml` crate and checked before anything is built.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::network::Network;

/// Name of the file that `soulbox template build DIR` reads in DIR.
pub const SPEC_FILE: &str = "soulbox.toml";

/// Maximum size of a `soulbox.toml`.
const MAX_SPEC_BYTES: u64 = 1 << 20;
/// Maximum number of `[[files]]` entries.
pub(crate) const MAX_FILES: usize = 1024;
/// Maximum number of bytes of all `[[files]]` together: 1 GiB.
pub(crate) const MAX_FILES_BYTES: u64 = 1 << 30;
/// Maximum number of `run` steps.
const MAX_RUN_STEPS: usize = 256;
/// Time that `ready` has by default to exit 0 after `start` starts.
const DEFAULT_READY_TIMEOUT_SECS: u64 = 60;
/// Maximum of `ready_timeout_secs`: one hour.
const MAX_READY_TIMEOUT_SECS: u64 = 3600;
/// Time that each `run` step has by default before the build kills it and
/// fails: one hour.
const DEFAULT_RUN_TIMEOUT_SECS: u64 = 3600;
/// Maximum of `run_timeout_secs`: one day.
pub(crate) const MAX_RUN_TIMEOUT_SECS: u64 = 86_400;

/// The file as written; every key but `base` is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Option<String>,
    base: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    user: Option<String>,
    network: Option<String>,
    #[serde(default)]
    run: Vec<String>,
    run_timeout_secs: Option<u64>,
    start: Option<String>,
    ready: Option<String>,
    ready_timeout_secs: Option<u64>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    resources: Resources,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    from: String,
    to: String,
}

/// Resource defaults of the sandboxes made from a built template, under
/// `[resources]`. A create that sets a limit to other than SoulBox's
/// default keeps its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit in MiB.
    pub memory_mb: Option<u64>,
    /// CPU limit in cores (0.5 is half a core).
    pub cpu_count: Option<f64>,
    /// Size of the writable layer in MiB.
    pub disk_mb: Option<u64>,
}

/// One `[[files]]` entry: a file of the build folder and its path in the
/// template.
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    /// Relative to the folder of the `soulbox.toml`, inside it.
    pub(crate) from: PathBuf,
    /// Absolute path in the template.
    pub(crate) to: String,
}

/// A checked `soulbox.toml`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The file, canonical.
    pub(crate) path: PathBuf,
    /// Its folder, canonical, where `files` and a relative `base` start.
    pub(crate) folder: PathBuf,
    /// The file's bytes, part of the build's key.
    pub(crate) text: Vec<u8>,
    pub(crate) name: Option<String>,
    /// `host`, or an absolute path with an optional `:NAME`.
    pub(crate) base: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) network: Network,
    pub(crate) files: Vec<FileEntry>,
    pub(crate) run: Vec<String>,
    /// How long each `run` step may take.
    pub(crate) run_timeout: Duration,
    pub(crate) start: Option<String>,
    pub(crate) ready: Option<String>,
    pub(crate) ready_timeout: Duration,
    pub(crate) resources: Resources,
}

impl Spec {
    /// Reads and checks the `soulbox.toml` at `path`, or in the directory
    /// `path`.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join(SPEC_FILE)
        } else {
            path.to_path_buf()
        };
        let path = std::fs::canonicalize(&file).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot open {}: {e}; give a soulbox.toml or the directory that contains one",
                file.display()
            ))
        })?;
        let folder = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut text = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut text))
            .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", path.display())))?;
        let invalid =
            |message: String| Error::InvalidArgument(format!("{}: {message}", path.display()));
        if text.len() as u64 > MAX_SPEC_BYTES {
            return Err(invalid(format!(
                "the file is larger than {MAX_SPEC_BYTES} bytes"
            )));
        }
        let source = std::str::from_utf8(&text)
            .map_err(|e| invalid(format!("the file is not valid UTF-8 ({e})")))?;
        let raw: RawSpec = toml::from_str(source).map_err(|e| invalid(e.to_string()))?;
        let spec = check(raw, &folder).map_err(invalid)?;
        Ok(Self {
            path,
            folder,
            text,
            ..spec
        })
    }
}

/// Checks every key, naming the key and the fix in the message.
fn check(raw: RawSpec, folder: &Path) -> std::result::Result<Spec, String> {
    if let Some(name) = &raw.name {
        check_name(name).map_err(|e| format!("name: {e}"))?;
    }
    let base = base_template(raw.base.as_deref().unwrap_or(crate::template::HOST), folder)?;
    for (key, value) in &raw.env {
        crate::command::validate_env(key, value).map_err(|e| format!("env.{key}: {e}"))?;
    }
    if let Some(dir) = &raw.workdir {
        if !dir.starts_with('/') || dir.contains('\0') {
            return Err(format!(
                "workdir {dir:?} must be an absolute path such as /home/user/app"
            ));
        }
    }
    if let Some(user) = &raw.user {
        if user.is_empty() || user.contains(['\0', '\n']) {
            return Err(format!(
                "user {user:?} is not a user name; give a name such as \"user\" or \"root\", or UID[:GID]"
            ));
        }
    }
    let network = match raw.network.as_deref() {
        None | Some("none") => Network::None,
        Some("internet") => Network::Internet,
        Some(other) => {
            return Err(format!(
                "network {other:?} is invalid; give \"none\" (the default) or \"internet\""
            ))
        }
    };
    if raw.files.len() > MAX_FILES {
        return Err(format!(
            "files has {} entries, more than {MAX_FILES}; copy a directory's archive and unpack \
             it in a run step",
            raw.files.len()
        ));
    }
    let mut files = Vec::with_capacity(raw.files.len());
    for (i, file) in raw.files.into_iter().enumerate() {
        let from = check_relative(&file.from)
            .map_err(|e| format!("files[{i}].from {:?}: {e}", file.from))?;
        check_sandbox_path(&file.to).map_err(|e| format!("files[{i}].to {:?}: {e}", file.to))?;
        files.push(FileEntry { from, to: file.to });
    }
    if raw.run.len() > MAX_RUN_STEPS {
        return Err(format!(
            "run has {} steps, more than {MAX_RUN_STEPS}; join some with && or move them into a \
             script",
            raw.run.len()
        ));
    }
    for (i, step) in raw.run.iter().enumerate() {
        if step.trim().is_empty() || step.contains('\0') {
            return Err(format!(
                "run[{i}] {step:?} is empty or contains a NUL byte; give a shell command line"
            ));
        }
    }
    for (key, command) in [("start", &raw.start), ("ready", &raw.ready)] {
        if let Some(command) = command {
            if command.trim().is_empty() || command.contains('\0') {
                return Err(format!(
                    "{key} {command:?} is empty or contains a NUL byte; give a shell command \
                     line or leave {key} out"
                ));
            }
        }
    }
    let ready_timeout_secs = raw.ready_timeout_secs.unwrap_or(DEFAULT_READY_TIMEOUT_SECS);
    if !(1..=MAX_READY_TIMEOUT_SECS).contains(&ready_timeout_secs) {
        return Err(format!(
            "ready_timeout_secs {ready_timeout_secs} is out of range; give 1 to \
             {MAX_READY_TIMEOUT_SECS}"
        ));
    }
    let run_timeout_secs = raw.run_timeout_secs.unwrap_or(DEFAULT_RUN_TIMEOUT_SECS);
    if !(1..=MAX_RUN_TIMEOUT_SECS).contains(&run_timeout_secs) {
        return Err(format!(
            "run_timeout_secs {run_timeout_secs} is out of range; give 1 to \
             {MAX_RUN_TIMEOUT_SECS}"
        ));
    }
    check_resources(&raw.resources)?;
    Ok(Spec {
        path: PathBuf::new(),
        folder: PathBuf::new(),
        text: Vec::new(),
        name: raw.name,
        base,
        env: raw.env.into_iter().collect(),
        workdir: raw.workdir,
        user: raw.user,
        network,
        files,
        run: raw.run,
        run_timeout: Duration::from_secs(run_timeout_secs),
        start: raw.start,
        ready: raw.ready,
        ready_timeout: Duration::from_secs(ready_timeout_secs),
        resources: raw.resources,
    })
}

/// What a built template's name may be, as error messages say it.
const NAME_RULE: &str = "use up to 64 letters, digits, '.', '_' and '-', starting with a letter \
                         or digit, other than \"host\"";

/// Checks the name a built template is registered under: letters, digits,
/// `.`, `_` and `-`, starting with a letter or digit, at most 64 bytes,
/// and not `host`.
pub(crate) fn check_name(name: &str) -> std::result::Result<(), String> {
    crate::template::check_no_nul_byte(name, NAME_RULE)?;
    let valid_start = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name == crate::template::HOST || !valid_start || !valid_chars || name.len() > 64 {
        return Err(format!(
            "{name:?} is not a valid template name; {NAME_RULE}"
        ));
    }
    Ok(())
}

/// Returns the template that `base` names: `host`, or a directory or image
/// path made absolute against `folder`, with its `:NAME` kept.
fn base_template(base: &str, folder: &Path) -> std::result::Result<String, String> {
    if base == crate::template::HOST {
        return Ok(base.to_string());
    }
    // A name that is no path here names a built template.
    if check_name(base).is_ok() && std::fs::symlink_metadata(folder.join(base)).is_err() {
        return Ok(base.to_string());
    }
    let (path, reference) = match base.split_once(':') {
        Some((path, reference)) => (path, Some(reference)),
        None => (base, None),
    };
    if path.is_empty() {
        return Err(format!(
            "base {base:?} has no path; give \"host\", a directory or an image path"
        ));
    }
    let resolved = std::fs::canonicalize(folder.join(path)).map_err(|e| {
        format!(
            "base {base:?} cannot be opened ({e}); give \"host\", a built template's name, or \
             the path of a root file system directory, an OCI image or a built soulbox.toml, \
             relative to the soulbox.toml's folder"
        )
    })?;
    let mut text = resolved
        .into_os_string()
        .into_string()
        .map_err(|path| format!("base {base:?} resolves to {path:?}, which is not valid UTF-8"))?;
    if let Some(reference) = reference {
        text.push(':');
        text.push_str(reference);
    }
    Ok(text)
}

/// Checks a relative path inside the build folder: no `..`, no `.`, not
/// absolute, not empty. Symlinks are rejected when the file is opened.
fn check_relative(path: &str) -> std::result::Result<PathBuf, &'static str> {
    let parsed = Path::new(path);
    if path.is_empty() || path.contains('\0') {
        return Err(
            "is empty or contains a NUL byte; give a path relative to the soulbox.toml's folder",
        );
    }
    // `components` drops a `.` inside a path, so the text is checked too.
    let normal = parsed
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !normal || path.split('/').any(|part| part == ".") {
        return Err("must be relative to the soulbox.toml's folder and stay inside it (no '/' at the start, no '.' or '..')");
    }
    Ok(parsed.to_path_buf())
}

/// Checks a path in the template: absolute, without `.` or `..`, not `/`,
/// and not under /proc, /sys, /dev or /tmp, which every sandbox mounts
/// anew.
fn check_sandbox_path(path: &str) -> std::result::Result<(), &'static str> {
    let parsed = Path::new(path);
    let mut components = parsed.components();
    if components.next() != Some(Component::RootDir) || path.contains('\0') {
        return Err("must be an absolute path such as /home/user/app");
    }
    let rest: Vec<Component<'_>> = components.collect();
    let normal = rest.iter().all(|c| matches!(c, Component::Normal(_)));
    if rest.is_empty() || !normal || path.split('/').any(|part| part == ".") {
        return Err("must name a path below / without '.' or '..'");
    }
    if let Some(Component::Normal(first)) = rest.first() {
        if ["proc", "sys", "dev", "tmp"].iter().any(|m| first == m) {
            return Err("is under /proc, /sys, /dev or /tmp, which every sandbox mounts anew; pick another directory");
        }
    }
    Ok(())
}

fn check_resources(resources: &Resources) -> std::result::Result<(), String> {
    if let Some(memory) = resources.memory_mb {
        if !(16..=(1 << 30)).contains(&memory) {
            return Err(format!(
                "resources.memory_mb {memory} is out of range; give at least 16"
            ));
        }
    }
    if let Some(cpus) = resources.cpu_count {
        if !cpus.is_finite() || cpus <= 0.0 || cpus > 4096.0 {
            return Err(format!(
                "resources.cpu_count {cpus} is out of range; give a number of cores above 0, such as 0.5 or 2"
            ));
        }
    }
    if let Some(disk) = resources.disk_mb {
        if !(1..=(1 << 30)).contains(&disk) {
            return Err(format!(
                "resources.disk_mb {disk} is out of range; give at least 1"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_checked() {
        for good in ["a", "dir/file.txt", "a/b/c"] {
            assert!(check_relative(good).is_ok(), "{good} was rejected");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "./a",
            "a/./b",
            "a\0b",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sandbox_paths_checked() {
        for good in ["/home/user/x", "/srv/app/data.txt", "/opt"] {
            assert!(check_sandbox_path(good).is_ok(), "{good} was rejected");
        }
        for bad in [
            "relative", "/", "/proc/x", "/tmp/a", "/dev", "/a/../b", "/a/./b",
        ] {
            assert!(check_sandbox_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn template_names_checked() {
        for good in ["py-data", "a", "v1.2_x"] {
            assert!(check_name(good).is_ok(), "{good} was rejected");
        }
        let long = "a".repeat(65);
        for bad in ["host", "", "-a", ".a", "a b", "a/b", "a:b", long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn template_name_with_nul_named() {
        for name in ["a\0b", "\0"] {
            let message = check_name(name).expect_err(&format!("{name:?} was accepted"));
            assert!(
                message.contains(&format!("template {name:?} contains a NUL byte")),
                "{name:?}: {message}"
            );
        }
    }
}
