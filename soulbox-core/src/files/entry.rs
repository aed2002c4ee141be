//! Describing files: [`EntryInfo`], `stat`, `exists` and `list`.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, SystemTime};

use super::path::{self, Name, SandboxPath, DIR_READ};
use super::{file_error, Files};
use crate::error::{Error, Result};
use crate::sandbox::Inner;
use crate::sys;

/// The kind of a file. Symlinks are reported as symlinks, never as what
/// they point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// Information about one file or directory in a sandbox, as E2B's
/// `EntryInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// The last component of `path`; `/` for the root. Bytes that are not
    /// UTF-8 become U+FFFD.
    pub name: String,
    /// The kind of file.
    pub kind: FileType,
    /// The absolute path inside the sandbox.
    pub path: String,
    /// Size in bytes; for a symlink, the length of its target.
    pub size: u64,
    /// Permission bits, with the setuid, setgid and sticky bits
    /// (`st_mode & 0o7777`).
    pub mode: u32,
    /// `mode` as `ls -l` shows it, for example `rwxr-xr-x`.
    pub permissions: String,
    /// The owner's name in the sandbox's /etc/passwd, or the uid as text.
    pub owner: String,
    /// The group's name in the sandbox's /etc/group, or the gid as text.
    pub group: String,
    /// Last modification time.
    pub modified: SystemTime,
    /// The target of a symlink, as stored in it; `None` for other kinds.
    pub symlink_target: Option<String>,
}

impl Files {
    /// Describes the file or directory at `path`. A symlink is described
    /// itself, not followed.
    ///
    /// # Errors
    ///
    /// [`Error::FileNotFound`] if it does not exist;
    /// [`Error::PermissionDenied`] if the user may not search a parent.
    pub async fn stat(&self, path: &str) -> Result<EntryInfo> {
        let path = self.sandbox_path(path)?;
        self.run_as_user(move |sandbox| stat_path(sandbox, &path))
            .await
    }

    /// E2B's name for [`Files::stat`].
    ///
    /// # Errors
    ///
    /// As [`Files::stat`].
    pub async fn get_info(&self, path: &str) -> Result<EntryInfo> {
        self.stat(path).await
    }

    /// Returns whether `path` exists. A symlink exists even if its target
    /// does not.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] if the user may not search a parent,
    /// because then whether it exists is unknown.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        let path = self.sandbox_path(path)?;
        self.run_as_user(move |sandbox| {
            match path::open_in_root(sandbox, &path.c_full(), STAT_FLAGS) {
                Ok(_) => Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                    Ok(false)
                }
                Err(e) => Err(file_error(path.caller(), "look up a path in the sandbox")(
                    e,
                )),
            }
        })
        .await
    }

    /// Lists the directory `path`: with `depth` 1 its entries, with 2 also
    /// the entries of its subdirectories, and so on. Entries come sorted by
    /// path. Symlinks are listed as symlinks and not descended into.
    ///
    /// Subdirectories the user may not read are listed but not descended
    /// into, and entries that vanish while the listing runs are left out.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `depth` is 0 or `path` is not a
    /// directory; [`Error::FileNotFound`] if it does not exist;
    /// [`Error::PermissionDenied`] if the user may not read it.
    pub async fn list(&self, path: &str, depth: usize) -> Result<Vec<EntryInfo>> {
        if depth < 1 {
            return Err(Error::InvalidArgument(format!(
                "list depth {depth} is below 1; depth 1 lists a directory's own entries"
            )));
        }
        let path = self.sandbox_path(path)?;
        self.run_as_user(move |sandbox| list_dir(sandbox, &path, depth))
            .await
    }
}

/// Flags that open the last component itself, even if it is a symlink.
const STAT_FLAGS: i32 = libc::O_PATH | libc::O_NOFOLLOW;

pub(super) fn stat_path(sandbox: &Inner, path: &SandboxPath) -> Result<EntryInfo> {
    let caller = path.caller();
    let fd = path::open_in_root(sandbox, &path.c_full(), STAT_FLAGS)
        .map_err(file_error(caller, "look up a path in the sandbox"))?;
    let stat =
        sys::fstat_fd(fd.as_fd()).map_err(file_error(caller, "stat a path in the sandbox"))?;
    let target = if file_type(&stat) == FileType::Symlink {
        let target = sys::readlink_fd(fd.as_fd()).map_err(file_error(caller, "read a symlink"))?;
        Some(String::from_utf8_lossy(&target).into_owned())
    } else {
        None
    };
    let full = path.normalized();
    let name = match full.rsplit_once('/') {
        Some((_, "")) | None => "/".to_string(),
        Some((_, last)) => last.to_string(),
    };
    let accounts = Accounts::load(sandbox);
    Ok(entry_info(name, full, &stat, target, &accounts))
}

fn list_dir(sandbox: &Inner, path: &SandboxPath, depth: usize) -> Result<Vec<EntryInfo>> {
    let caller = path.caller();
    let top = open_dir_for_reading(sandbox, path)?;
    let accounts = Accounts::load(sandbox);
    let mut entries = Vec::new();
    // Directories still to list: their names below `top`, and their path
    // as reported.
    let mut pending: Vec<(Vec<Name>, String)> = vec![(Vec::new(), path.normalized())];
    while let Some((names, shown)) = pending.pop() {
        let opened;
        let dir = if names.is_empty() {
            top.as_fd()
        } else {
            match path::open_descendant(top.as_fd(), &names, DIR_READ) {
                Ok(fd) => {
                    opened = fd;
                    opened.as_fd()
                }
                Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                    return Err(file_error(caller, "list a directory")(e));
                }
                // Unreadable, or removed or replaced by sandboxed code since
                // it was listed: list it, but not its entries.
                Err(_) => continue,
            }
        };
        let children = read_names(dir).map_err(file_error(caller, "list a directory"))?;
        for name in children {
            let Some(info) = describe_child(dir, &name, &shown, &accounts)
                .map_err(file_error(caller, "stat an entry in the sandbox"))?
            else {
                continue;
            };
            if info.kind == FileType::Dir && names.len() + 1 < depth {
                let mut below = names.clone();
                below.push(name);
                pending.push((below, info.path.clone()));
            }
            entries.push(info);
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// Describes the entry `name` of `dir`, or returns `None` if it vanished.
fn describe_child(
    dir: BorrowedFd<'_>,
    name: &Name,
    dir_path: &str,
    accounts: &Accounts,
) -> std::io::Result<Option<EntryInfo>> {
    let stat = match sys::fstatat_name(dir, name.as_c_str()) {
        Ok(stat) => stat,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let target = if file_type(&stat) == FileType::Symlink {
        match sys::readlinkat_name(dir, name.as_c_str()) {
            Ok(target) => Some(String::from_utf8_lossy(&target).into_owned()),
            // Replaced by something else since the fstatat.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let name = name.to_lossy();
    let path = if dir_path == "/" {
        format!("/{name}")
    } else {
        format!("{dir_path}/{name}")
    };
    Ok(Some(entry_info(name, path, &stat, target, accounts)))
}

/// Reads every entry name of `dir` but `.` and `..`, sorted.
pub(super) fn read_names(dir: BorrowedFd<'_>) -> std::io::Result<Vec<Name>> {
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let filled = sys::getdents64(dir, &mut buf)?;
        if filled == 0 {
            break;
        }
        names.extend(dirent_names(&buf[..filled]).filter_map(Name::new));
    }
    names.sort_by(|a, b| a.as_c_str().cmp(b.as_c_str()));
    Ok(names)
}

/// Yields the names in a buffer of `struct linux_dirent64` records: a u64
/// inode, an i64 offset, a u16 record length, a u8 type, then the
/// NUL-terminated name at byte 19 (getdents64(2)).
pub(super) fn dirent_names(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    const NAME_OFFSET: usize = 19;
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NAME_OFFSET {
            return None;
        }
        let record_len = usize::from(u16::from_ne_bytes([rest[16], rest[17]]));
        if record_len < NAME_OFFSET || record_len > rest.len() {
            return None;
        }
        let field = &rest[NAME_OFFSET..record_len];
        let name_len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        let name = &field[..name_len];
        rest = &rest[record_len..];
        Some(name)
    })
}

fn file_type(stat: &libc::stat) -> FileType {
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFREG => FileType::File,
        libc::S_IFDIR => FileType::Dir,
        libc::S_IFLNK => FileType::Symlink,
        _ => FileType::Other,
    }
}

fn entry_info(
    name: String,
    path: String,
    stat: &libc::stat,
    symlink_target: Option<String>,
    accounts: &Accounts,
) -> EntryInfo {
    let mode = stat.st_mode & 0o7777;
    EntryInfo {
        name,
        kind: file_type(stat),
        path,
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mode,
        permissions: permissions_text(mode),
        owner: accounts.user_name(stat.st_uid),
        group: accounts.group_name(stat.st_gid),
        modified: modified_time(stat),
        symlink_target,
    }
}

fn modified_time(stat: &libc::stat) -> SystemTime {
    let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
    match u64::try_from(stat.st_mtime) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::new(secs, nanos),
        Err(_) => SystemTime::UNIX_EPOCH - Duration::from_secs(stat.st_mtime.unsigned_abs()),
    }
}

/// Formats permission bits as `ls -l` does, setuid, setgid and sticky bits
/// included (`rwsr-xr-t`).
pub(super) fn permissions_text(mode: u32) -> String {
    let mut text = String::with_capacity(9);
    let classes: [(u32, u32, char); 3] = [
        (0o700, 0o4000, 's'),
        (0o070, 0o2000, 's'),
        (0o007, 0o1000, 't'),
    ];
    for (bits, special, special_char) in classes {
        let shift = bits.trailing_zeros();
        let class = (mode & bits) >> shift;
        text.push(if class & 0o4 != 0 { 'r' } else { '-' });
        text.push(if class & 0o2 != 0 { 'w' } else { '-' });
        let execute = class & 0o1 != 0;
        text.push(match (mode & special != 0, execute) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    text
}

/// User and group names from the sandbox's own /etc/passwd and /etc/group.
#[derive(Debug, Default)]
struct Accounts {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

/// How much of /etc/passwd or /etc/group is read. Sandboxed root can make
/// these files any size, and the host reads them into memory.
const ACCOUNTS_FILE_LIMIT: u64 = 1 << 20;

impl Accounts {
    /// Reads the name tables through the sandbox's root. A file that is
    /// missing, unreadable or not a regular file leaves its table empty,
    /// so ids show as numbers.
    fn load(sandbox: &Inner) -> Self {
        Self {
            users: parse_ids(&read_accounts_file(sandbox, "/etc/passwd")),
            groups: parse_ids(&read_accounts_file(sandbox, "/etc/group")),
        }
    }

    fn user_name(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    fn group_name(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

fn read_accounts_file(sandbox: &Inner, path: &str) -> Vec<u8> {
    let Ok(path) = SandboxPath::new(path) else {
        return Vec::new();
    };
    let Ok(file) = path::open_regular(sandbox, &path, libc::O_RDONLY) else {
        return Vec::new();
    };
    let mut data = Vec::new();
    if file
        .take(ACCOUNTS_FILE_LIMIT)
        .read_to_end(&mut data)
        .is_err()
    {
        return Vec::new();
    }
    data
}

/// Maps the id in the third field of each `name:x:id:...` line to the
/// name; the first line with an id wins, as getpwuid(3) does.
fn parse_ids(data: &[u8]) -> HashMap<u32, String> {
    let mut ids = HashMap::new();
    for line in String::from_utf8_lossy(data).lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(id) = id.parse::<u32>() {
            ids.entry(id).or_insert_with(|| name.to_string());
        }
    }
    ids
}

/// Returns the directory at `path` opened for reading, for listing and
/// watching: a missing path is [`Error::FileNotFound`] and anything but a
/// directory is [`Error::InvalidArgument`].
pub(super) fn open_dir_for_reading(sandbox: &Inner, path: &SandboxPath) -> Result<OwnedFd> {
    let caller = path.caller();
    match path::open_in_root(sandbox, &path.c_full(), DIR_READ) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(Error::InvalidArgument(format!(
            "{caller:?} is not a directory"
        ))),
        Err(e) => Err(file_error(caller, "open a directory in the sandbox")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_like_ls() {
        assert_eq!(permissions_text(0o755), "rwxr-xr-x");
        assert_eq!(permissions_text(0o600), "rw-------");
        assert_eq!(permissions_text(0o4755), "rwsr-xr-x");
        assert_eq!(permissions_text(0o2745), "rwxr-Sr-x");
        assert_eq!(permissions_text(0o1777), "rwxrwxrwt");
        assert_eq!(permissions_text(0o1776), "rwxrwxrwT");
        assert_eq!(permissions_text(0), "---------");
    }

    #[test]
    fn passwd_ids_parsed() {
        let ids = parse_ids(
            b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/h:/bin/sh\nbad\nalias:x:0:0\n",
        );
        assert_eq!(ids.get(&0).map(String::as_str), Some("root"));
        assert_eq!(ids.get(&1000).map(String::as_str), Some("user"));
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn dirent_records_parsed() {
        let mut buf = Vec::new();
        for name in [&b"."[..], b"abc", "ü".as_bytes()] {
            let record_len = (19 + name.len() + 1).next_multiple_of(8);
            let mut record = vec![0u8; record_len];
            record[16..18].copy_from_slice(&(record_len as u16).to_ne_bytes());
            record[19..19 + name.len()].copy_from_slice(name);
            buf.extend(record);
        }
        let names: Vec<&[u8]> = dirent_names(&buf).collect();
        assert_eq!(names, vec![&b"."[..], b"abc", "ü".as_bytes()]);
    }

    #[test]
    fn truncated_dirent_buffer_ends() {
        let mut record = vec![0u8; 24];
        record[16..18].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(dirent_names(&record).count(), 0);
    }
}
