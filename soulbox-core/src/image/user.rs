//! The accounts of an image: its `/etc/passwd` and `/etc/group`, read from
//! the unpacked layers as the overlay will show them, and the user that an
//! image's `User` or a command's `user` names.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Largest /etc/passwd or /etc/group that is read.
const MAX_ACCOUNTS_FILE: u64 = 4 << 20;

/// `(uid_t)-1` and `(gid_t)-1`, which setresuid and setresgid read as
/// "leave this id unchanged", so a process switching to it stays root.
const UNCHANGED_ID: u32 = u32::MAX;

/// A user as a command runs as it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    /// The name in /etc/passwd, if the image has one for this uid.
    pub(crate) name: Option<String>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: String,
    /// The login shell in /etc/passwd, if any.
    pub(crate) shell: Option<String>,
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

/// An image's users and groups.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accounts {
    users: Vec<PasswdEntry>,
    groups: Vec<(String, u32)>,
}

impl Accounts {
    /// Reads /etc/passwd and /etc/group from `layers` (top first), as the
    /// overlay of those layers shows them. A missing file means no entries.
    pub(crate) fn read(layers: &[PathBuf], opaque_xattr: &str) -> Self {
        let read = |name: &[&str]| {
            find_in_layers(layers, name, opaque_xattr)
                .and_then(|path| read_bounded(&path).ok())
                .unwrap_or_default()
        };
        let users = read(&["etc", "passwd"])
            .lines()
            .filter_map(parse_passwd_line)
            .collect();
        let groups = read(&["etc", "group"])
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?.to_string();
                let gid = fields
                    .nth(1)?
                    .parse()
                    .ok()
                    .filter(|&gid| gid != UNCHANGED_ID)?;
                Some((name, gid))
            })
            .collect();
        Self { users, groups }
    }

    /// Returns the user that `spec` names, as Docker reads an image's
    /// `User`: `NAME` or `UID`, optionally followed by `:GROUP` or `:GID`.
    /// Names are looked up in the image's files; a uid need not be there.
    /// An empty spec is root.
    pub(crate) fn resolve(&self, spec: &str) -> Result<Account, String> {
        let (user, group) = match spec.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (spec, None),
        };
        let entry = match user.parse::<u32>() {
            _ if user.is_empty() => self.users.iter().find(|e| e.uid == 0),
            Ok(uid) => self.users.iter().find(|e| e.uid == uid),
            Err(_) => Some(self.users.iter().find(|e| e.name == user).ok_or_else(|| {
                format!(
                    "user {user:?} is not in the image's /etc/passwd{}",
                    self.list_users()
                )
            })?),
        };
        let uid = match (entry, user.parse::<u32>()) {
            (_, Ok(uid)) => uid,
            (Some(entry), Err(_)) => entry.uid,
            (None, Err(_)) => 0,
        };
        let gid = match group {
            None | Some("") => entry.map_or(0, |e| e.gid),
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => self
                    .groups
                    .iter()
                    .find(|(name, _)| name == group)
                    .map(|&(_, gid)| gid)
                    .ok_or_else(|| format!("group {group:?} is not in the image's /etc/group"))?,
            },
        };
        if uid == UNCHANGED_ID || gid == UNCHANGED_ID {
            return Err(format!(
                "user or group id {UNCHANGED_ID} is invalid, because the kernel reads it as \
                 \"leave unchanged\" and the command would keep running as root"
            ));
        }
        // Docker's default home for a uid without an entry.
        let default_home = if uid == 0 { "/root" } else { "/" };
        Ok(Account {
            name: entry.map(|e| e.name.clone()),
            uid,
            gid,
            home: entry.map_or_else(|| default_home.to_string(), |e| e.home.clone()),
            shell: entry.map(|e| e.shell.clone()).filter(|s| !s.is_empty()),
        })
    }

    /// Returns the account named `name` in /etc/passwd, if there is one.
    pub(crate) fn by_name(&self, name: &str) -> Option<Account> {
        let entry = self.users.iter().find(|e| e.name == name)?;
        Some(Account {
            name: Some(entry.name.clone()),
            uid: entry.uid,
            gid: entry.gid,
            home: entry.home.clone(),
            shell: Some(entry.shell.clone()).filter(|s| !s.is_empty()),
        })
    }

    fn list_users(&self) -> String {
        if self.users.is_empty() {
            return ", which is missing or empty".into();
        }
        let names: Vec<&str> = self.users.iter().map(|e| e.name.as_str()).collect();
        format!(", which has {}", names.join(", "))
    }
}

fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 7 || fields[0].is_empty() {
        return None;
    }
    let valid_id = |field: &str| field.parse().ok().filter(|&id| id != UNCHANGED_ID);
    Some(PasswdEntry {
        name: fields[0].to_string(),
        uid: valid_id(fields[2])?,
        gid: valid_id(fields[3])?,
        home: fields[5].to_string(),
        shell: fields[6].to_string(),
    })
}

fn read_bounded(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_ACCOUNTS_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Finds the regular file at `components` in the overlay of `layers` (top
/// first): the topmost layer that has it, unless a whiteout, an opaque
/// directory or a file on the way hides it first.
// NOTE: a symbolic link at the path, or on the way to it, counts as
// missing, although the sandbox would follow it.
pub(crate) fn find_in_layers(
    layers: &[PathBuf],
    components: &[&str],
    opaque_xattr: &str,
) -> Option<PathBuf> {
    for layer in layers {
        let mut path = layer.clone();
        let mut below_opaque = false;
        for (depth, component) in components.iter().enumerate() {
            path.push(component);
            let metadata = match fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                Err(_) => break,
            };
            if is_whiteout(&metadata) {
                return None;
            }
            if depth + 1 == components.len() {
                return metadata.is_file().then_some(path);
            }
            if !metadata.is_dir() {
                return None;
            }
            if xattr::get(&path, opaque_xattr).ok().flatten().as_deref() == Some(b"y") {
                below_opaque = true;
            }
        }
        if below_opaque {
            return None;
        }
    }
    None
}

fn is_whiteout(metadata: &fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                      app:x:1000:1000::/home/app:/bin/sh\n\
                      nobody2:x:4294967295:4294967295::/:/bin/sh\n";
        Accounts {
            users: passwd.lines().filter_map(parse_passwd_line).collect(),
            groups: vec![("app".into(), 1000)],
        }
    }

    #[test]
    fn unchanged_id_rejected() {
        let accounts = accounts();
        for spec in [
            "4294967295",
            "4294967295:0",
            "0:4294967295",
            "app:4294967295",
        ] {
            let error = accounts.resolve(spec).expect_err(spec);
            assert!(error.contains("4294967295"), "{spec}: {error}");
        }
        // An entry of /etc/passwd with that id is ignored, as if missing.
        assert!(accounts.resolve("nobody2").is_err());
        assert_eq!(accounts.by_name("nobody2"), None);
    }

    #[test]
    fn valid_ids_resolve() {
        let accounts = accounts();
        let app = accounts.resolve("app").expect("app");
        assert_eq!((app.uid, app.gid), (1000, 1000));
        let numeric = accounts.resolve("4294967294:app").expect("numeric");
        assert_eq!((numeric.uid, numeric.gid), (4294967294, 1000));
        let root = accounts.resolve("").expect("root");
        assert_eq!((root.uid, root.gid), (0, 0));
    }
}
