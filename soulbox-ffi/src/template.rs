//! Templates built from a `soulbox.toml`: `soulbox_built_template`.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use soulbox_core::build::{self, BuildEvent, BuildOptions};

use crate::error::{Error, ErrorKind, Result};
use crate::runtime;

/// A built template, from `soulbox_template_build`, freed with
/// `soulbox_built_template_free`. Its strings are kept as C strings so
/// that the accessors can lend them out.
#[derive(Debug)]
pub struct BuiltTemplate {
    key: CString,
    name: Option<CString>,
    source: CString,
    layer: CString,
    cached: bool,
}

impl BuiltTemplate {
    /// Builds the template at `path` (a `soulbox.toml` or its folder) and
    /// registers it under `name` if given. Step output is discarded.
    pub fn build(path: &OsStr, name: Option<&str>) -> Result<Box<Self>> {
        let mut options = BuildOptions::default();
        if let Some(name) = name {
            options = options.name(name);
        }
        let mut ignore_events = |_: BuildEvent<'_>| {};
        let built =
            runtime::block_on(build::build(Path::new(path), &options, &mut ignore_events))??;
        Ok(Box::new(Self {
            key: c_string(built.key.as_bytes(), "key")?,
            name: built
                .name
                .map(|name| c_string(name.as_bytes(), "name"))
                .transpose()?,
            source: c_string(built.source.as_os_str().as_bytes(), "source")?,
            layer: c_string(built.layer.as_os_str().as_bytes(), "layer")?,
            cached: built.cached,
        }))
    }

    pub fn key(&self) -> &CString {
        &self.key
    }

    pub fn name(&self) -> Option<&CString> {
        self.name.as_ref()
    }

    pub fn source(&self) -> &CString {
        &self.source
    }

    pub fn layer(&self) -> &CString {
        &self.layer
    }

    pub fn cached(&self) -> bool {
        self.cached
    }
}

/// Copies a field of the build's result into a C string. No field can
/// contain a NUL byte, because the paths come from a C string and from the
/// environment and the core checks the key and name, so an error here is
/// a bug and has the internal kind.
fn c_string(bytes: &[u8], field: &str) -> Result<CString> {
    CString::new(bytes).map_err(|_| {
        let message = format!(
            "the built template's {field} {:?} contains a NUL byte",
            String::from_utf8_lossy(bytes)
        );
        Error::new(ErrorKind::Internal, 0, &message)
    })
}
