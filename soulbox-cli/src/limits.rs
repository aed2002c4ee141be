//! `--template`, `--memory`, `--cpus`, `--pids` and `--disk`: how `run`
//! and `create` build the new sandbox.

use clap::Args;
use soulbox_core::{Mount, SandboxOptions};

/// The template and resource limits of the new sandbox.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// `host` (the default), a directory, an image or a built template. A
    /// directory contains a root file system, such as one made by
    /// debootstrap, and becomes the sandbox's read-only root as it is. An
    /// image is an OCI image layout directory or image archive (`docker
    /// save`, `podman save --format oci-archive`), optionally followed by
    /// `:NAME` to pick one of several. A built template is the name given
    /// to `soulbox template build`, or the path of its soulbox.toml or of
    /// the folder that contains it.
    #[arg(long, value_name = "TEMPLATE", value_parser = parse_template)]
    template: Option<String>,

    /// Memory limit, swap closed, such as 512M or 2G; `none` for no limit.
    /// Files in the writable layer and /tmp count towards it. Default 2G.
    #[arg(long, value_name = "SIZE", value_parser = parse_optional_size, allow_hyphen_values = true)]
    memory: Option<Limit<u64>>,

    /// CPU limit in cores, such as 0.5; default: no limit.
    #[arg(long, value_name = "CORES", value_parser = parse_cpus, allow_negative_numbers = true)]
    cpus: Option<f64>,

    /// Most processes and threads at once; `none` for no limit. Default 1024.
    #[arg(long, value_name = "N", value_parser = parse_pids, allow_negative_numbers = true)]
    pids: Option<Limit<u64>>,

    /// Size of the writable layer, such as 1G. Default 4G.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
    disk: Option<u64>,

    /// Mounts a host file or directory into the sandbox, read-only (`:ro`,
    /// the default) unless `:rw` follows; nosuid and nodev either way.
    /// Repeatable.
    #[arg(long = "mount", value_name = "HOST_PATH:SANDBOX_PATH[:ro|:rw]", value_parser = parse_mount)]
    mounts: Vec<Mount>,
}

/// A limit given on the command line: a value, or `none`.
#[derive(Debug, Clone, Copy)]
pub enum Limit<T> {
    Value(T),
    None,
}

impl<T> Limit<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Self::Value(value) => Some(value),
            Self::None => None,
        }
    }
}

impl LimitArgs {
    /// Applies the limits given to `options`; the core validates them
    /// before anything is created.
    pub fn apply(&self, options: &mut SandboxOptions) {
        if let Some(template) = &self.template {
            options.template.clone_from(template);
        }
        if let Some(memory) = self.memory {
            options.memory_limit = memory.into_option();
        }
        if let Some(cpus) = self.cpus {
            options.cpu_limit = Some(cpus);
        }
        if let Some(pids) = self.pids {
            options.pids_limit = pids.into_option();
        }
        if let Some(disk) = self.disk {
            options.disk_size = disk;
        }
        options.mounts.extend(self.mounts.iter().cloned());
    }
}

/// Reads `HOST_PATH:SANDBOX_PATH`, with `:ro` (the default) or `:rw` after
/// it. A relative host path starts at the current directory; the core
/// checks both paths.
fn parse_mount(text: &str) -> Result<Mount, String> {
    let (rest, writable) = match text.rsplit_once(':') {
        Some((rest, "rw")) => (rest, true),
        Some((rest, "ro")) => (rest, false),
        _ => (text, false),
    };
    let Some((host, inside)) = rest.split_once(':') else {
        return Err(format!(
            "{text:?} is not HOST_PATH:SANDBOX_PATH, such as ./data:/home/user/data or ./out:/out:rw"
        ));
    };
    if inside.contains(':') {
        return Err(format!(
            "{text:?} has a ':' in its sandbox path {inside:?}; give HOST_PATH:SANDBOX_PATH \
             with at most one :ro or :rw after it"
        ));
    }
    let host = std::path::absolute(host)
        .map_err(|e| format!("cannot make {host:?} an absolute path ({e})"))?;
    Ok(Mount {
        source: host,
        target: inside.to_string(),
        writable,
    })
}

/// Reads a template: `host`, or a path with an optional `:NAME` after it,
/// made absolute here so that the core, which takes absolute paths only,
/// gets one. A relative path must name an existing file or directory; the
/// core checks the rest.
fn parse_template(text: &str) -> Result<String, String> {
    if text == "host" || text.starts_with('/') {
        return Ok(text.to_string());
    }
    // A word that names no file here is a built template's name, such as
    // `py-data` from `soulbox template build --name py-data`.
    if !text.contains(['/', ':']) && std::fs::symlink_metadata(text).is_err() {
        return Ok(text.to_string());
    }
    // The first ':' separates the path from the image's name, which may
    // contain ':' itself (alpine:3.20).
    let (path, reference) = match text.split_once(':') {
        Some((path, reference)) => (path, Some(reference)),
        None => (text, None),
    };
    let absolute = match std::fs::canonicalize(path) {
        // A lossy conversion would name another path, usually a missing
        // one.
        Ok(absolute) => absolute
            .into_os_string()
            .into_string()
            .map_err(|absolute| {
                format!(
                    "{path:?} resolves to {absolute:?}, which is not valid UTF-8; move it to a \
                 UTF-8 path"
                )
            })?,
        Err(e) => {
            return Err(format!(
                "{path:?} is neither `host` nor a directory or image file that can be opened \
                 ({e})"
            ))
        }
    };
    Ok(match reference {
        Some(reference) => format!("{absolute}:{reference}"),
        None => absolute,
    })
}

/// Parses a byte size: a whole number with an optional binary suffix K, M,
/// G or T (KiB to TiB; `KiB` and `KB` are read the same).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a size such as 512M, 2G or 1048576");
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let without_b = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match without_b.chars().last() {
        Some('K') => (&without_b[..without_b.len() - 1], 10),
        Some('M') => (&without_b[..without_b.len() - 1], 20),
        Some('G') => (&without_b[..without_b.len() - 1], 30),
        Some('T') => (&without_b[..without_b.len() - 1], 40),
        _ => (without_b, 0),
    };
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_optional_size(text: &str) -> Result<Limit<u64>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Limit::None);
    }
    parse_size(text).map(Limit::Value)
}

fn parse_pids(text: &str) -> Result<Limit<u64>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Limit::None);
    }
    text.parse()
        .map(Limit::Value)
        .map_err(|_| format!("{text:?} is not a whole number of processes, or none"))
}

fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(cores) if cores.is_finite() && cores > 0.0 => Ok(cores),
        _ => Err(format!(
            "{text:?} is not a positive number of cores such as 0.5"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parsed() {
        let read_only = parse_mount("/srv/data:/data").expect("a plain mount");
        assert_eq!(
            (read_only.target.as_str(), read_only.writable),
            ("/data", false)
        );
        let writable = parse_mount("/srv/out:/out:rw").expect("a writable mount");
        assert_eq!(
            (writable.target.as_str(), writable.writable),
            ("/out", true)
        );
        assert!(!parse_mount("/srv/in:/in:ro").expect(":ro").writable);
        let doubled = parse_mount("/srv/x:/x:rw:ro").expect_err("two modes");
        assert!(doubled.contains("':' in its sandbox path"), "{doubled}");
        assert!(parse_mount("no-colon").is_err());
    }

    #[test]
    fn sizes_parsed_with_binary_suffixes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "M", "12X", "-1G", "1.5G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn cpus_must_be_positive() {
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        for bad in ["0", "-1", "nan", "inf", "half"] {
            assert!(parse_cpus(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
