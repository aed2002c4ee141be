//! Builds the sandbox's filesystem, hostname and network from the host's
//! [`Config`], in the order the kernel requires.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use soulbox_proto::{BindMount, Config, RootPlan, SetupStage};

use crate::sys;

/// A failed setup step, reported to the host before PID 1 exits.
pub struct SetupError {
    pub stage: SetupStage,
    pub error: io::Error,
    pub detail: Vec<u8>,
}

trait StageContext<T> {
    fn stage(self, stage: SetupStage, detail: &[u8]) -> Result<T, SetupError>;
}

impl<T> StageContext<T> for io::Result<T> {
    fn stage(self, stage: SetupStage, detail: &[u8]) -> Result<T, SetupError> {
        self.map_err(|error| SetupError {
            stage,
            error,
            detail: detail.to_vec(),
        })
    }
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn join(base: &[u8], path: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    if !path.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out
}

const NOSUID_NODEV: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Capabilities that sandbox root keeps: the OCI runtime specification's
/// default set (CHOWN, DAC_OVERRIDE, FSETID, FOWNER, NET_RAW, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE) without MKNOD
/// and SETFCAP. Every mount of a sandbox is nodev and nosuid, so device
/// nodes and file capabilities serve nothing inside, while on a writable
/// host mount they would give other host users a device or a privileged
/// program. Numbers from <linux/capability.h>.
const KEPT_CAPS: [u32; 12] = [0, 1, 4, 3, 13, 6, 7, 8, 10, 18, 5, 29];

/// Facts about the kernel and the user namespace that the build needs,
/// read once by the zygote for every PID 1 it forks.
#[derive(Clone, Copy)]
pub struct KernelFacts {
    /// The highest capability number the kernel supports.
    last_cap: u32,
    /// Whether PID 1 runs in a user namespace other than the initial one.
    /// It cannot change namespace while it builds.
    in_user_namespace: bool,
}

impl KernelFacts {
    pub fn read() -> Self {
        Self {
            last_cap: sys::last_cap(),
            in_user_namespace: sys::in_user_namespace(),
        }
    }
}

/// The parts a root is built from, borrowed from a PID 1's [`Config`] or
/// from the [`RootPlan`] that the zygote builds a root ahead from.
#[derive(Clone, Copy)]
struct RootParts<'a> {
    lower_dirs: &'a [Vec<u8>],
    binds: &'a [BindMount],
    scratch_dir: &'a [u8],
    scratch_size: u64,
    scratch_inodes: u64,
    tmp_size: u64,
}

impl<'a> From<&'a Config> for RootParts<'a> {
    fn from(config: &'a Config) -> Self {
        Self {
            lower_dirs: &config.lower_dirs,
            binds: &config.binds,
            scratch_dir: &config.scratch_dir,
            scratch_size: config.scratch_size,
            scratch_inodes: config.scratch_inodes,
            tmp_size: config.tmp_size,
        }
    }
}

impl<'a> From<&'a RootPlan> for RootParts<'a> {
    fn from(plan: &'a RootPlan) -> Self {
        Self {
            lower_dirs: &plan.lower_dirs,
            binds: &plan.binds,
            scratch_dir: &plan.scratch_dir,
            scratch_size: plan.scratch_size,
            scratch_inodes: plan.scratch_inodes,
            tmp_size: plan.tmp_size,
        }
    }
}

/// Builds the sandbox. Runs in PID 1, in the fresh mount, PID, network, UTS
/// and IPC namespaces the host created it in. Returns a descriptor of the
/// overlay's upper directory when the configuration requests one
/// (`send_upper`), opened before the switch to the new root hides it.
///
/// With `prebuilt`, PID 1 runs in a mount namespace whose root the zygote
/// built ahead from this configuration's [`RootPlan`] (see
/// [`build_root_ahead`]), and only /proc and what follows it are left.
pub fn build(
    config: &Config,
    facts: KernelFacts,
    prebuilt: bool,
) -> Result<Option<OwnedFd>, SetupError> {
    let (upper, host_mounts) = if prebuilt {
        // /proc shows the PID namespace of the process that mounts it, so
        // it cannot be made ahead.
        mount_proc(b"")?;
        (None, Vec::new())
    } else {
        let root = build_tree(config.into(), facts.in_user_namespace)?;
        let upper = if config.send_upper {
            let upper = join(&config.scratch_dir, b"upper");
            let upper_c = cstr(&upper).stage(SetupStage::Overlay, &upper)?;
            Some(sys::open_read_only(&upper_c).stage(SetupStage::Overlay, &upper)?)
        } else {
            None
        };
        mount_proc(&root)?;
        let host_mounts = clone_host_mounts(config)?;
        switch_root(&root)?;
        (upper, host_mounts)
    };
    write_etc(config)?;
    make_homes();
    attach_host_mounts(config, host_mounts)?;

    sys::sethostname(&config.sandbox_id).stage(SetupStage::Hostname, &config.sandbox_id)?;
    sys::loopback_up().stage(SetupStage::Loopback, b"lo")?;
    drop_bounding_caps(facts.last_cap);
    set_rlimits(config)?;
    Ok(upper)
}

/// Builds the root that `plan` describes, up to /proc, and makes it the
/// calling process's root. The zygote calls this in a mount namespace it
/// has just unshared, and hands that namespace to the next PID 1 whose
/// configuration has an equal plan (see [`build`]).
pub fn build_root_ahead(plan: &RootPlan, facts: KernelFacts) -> Result<(), SetupError> {
    let root = build_tree(plan.into(), facts.in_user_namespace)?;
    switch_root(&root)
}

/// Mounts the overlay root and what lies under it that every sandbox of
/// one [`RootPlan`] has alike: the host binds, /dev and /tmp. Returns the
/// root's path. Runs in a mount namespace of its own, before /proc.
fn build_tree(parts: RootParts<'_>, in_user_namespace: bool) -> Result<Vec<u8>, SetupError> {
    // Before any other mount: nothing mounted below may propagate back to
    // the host, and no later host mount may appear inside.
    sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .stage(SetupStage::MountPropagation, b"/")?;
    let root = mount_root(parts, in_user_namespace)?;
    reject_non_directory_mount_points(&root)?;
    bind_host_paths(parts.binds, &root)?;
    // /dev before /proc: the /proc masks are binds of its /dev/null.
    build_dev(&root, in_user_namespace)?;
    mount_tmp(parts, &root)?;
    Ok(root)
}

/// Queued signals that the sandbox's processes may have pending, counted
/// per user across the host: without a user namespace, a sandbox's users
/// are the host's, and the kernel checks this count against the receiving
/// process's RLIMIT_SIGPENDING. Every sandbox together can then hold at
/// most this many of a user's queued signals (the host's limit is in the
/// tens of thousands), and the rest stays for the host's processes.
pub const SIGPENDING_CAP: u64 = 4096;

/// Bytes of POSIX message queues, counted per user across the host as
/// queued signals are, against the opening process's RLIMIT_MSGQUEUE: half
/// of the kernel's default of 819,200.
pub const MSGQUEUE_CAP: u64 = 409_600;

/// Sets the resource limits every process of the sandbox inherits: open
/// files and file size as configured, and no core dumps, so a crashing
/// program cannot fill the writable layer or leak memory into a file.
/// Queued signals and message queue bytes are capped, so that sandboxes
/// cannot use up what the host's processes of the same user need.
///
/// A limit above the hard limit that PID 1 inherited from the creating
/// process needs CAP_SYS_RESOURCE; the error then names the limit.
fn set_rlimits(config: &Config) -> Result<(), SetupError> {
    let limits = [
        (
            libc::RLIMIT_NOFILE,
            "RLIMIT_NOFILE",
            config.open_files_limit,
        ),
        (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE", config.file_size_limit),
        (libc::RLIMIT_CORE, "RLIMIT_CORE", 0),
    ];
    for (resource, name, value) in limits {
        sys::set_rlimit(resource, value)
            .stage(SetupStage::Rlimits, format!("{name} {value}").as_bytes())?;
    }
    let caps = [
        (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING", SIGPENDING_CAP),
        (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE", MSGQUEUE_CAP),
    ];
    for (resource, name, cap) in caps {
        sys::cap_rlimit(resource, cap)
            .stage(SetupStage::Rlimits, format!("{name} {cap}").as_bytes())?;
    }
    Ok(())
}

/// Enters a new cgroup namespace. It must come from PID 1 rather than from
/// the host's clone: its root is the caller's cgroup at the time of the
/// unshare, and only once the host reports [`Request::Attached`] is PID 1 in
/// the sandbox's own cgroups.
///
/// [`Request::Attached`]: soulbox_proto::Request::Attached
pub fn enter_cgroup_namespace() -> Result<(), SetupError> {
    sys::unshare(libc::CLONE_NEWCGROUP).stage(SetupStage::CgroupNamespace, b"")
}

/// Mounts the scratch tmpfs and the overlay on top of the template's layers.
/// Returns the path of the new root.
fn mount_root(parts: RootParts<'_>, in_user_namespace: bool) -> Result<Vec<u8>, SetupError> {
    let scratch = parts.scratch_dir;
    let scratch_c = cstr(scratch).stage(SetupStage::Scratch, scratch)?;
    let options = format!(
        "mode=0755,size={},nr_inodes={}",
        parts.scratch_size, parts.scratch_inodes
    );
    mount_sized_tmpfs(c"soulbox", &scratch_c, &options).stage(SetupStage::Scratch, scratch)?;

    let upper = join(scratch, b"upper");
    let work = join(scratch, b"work");
    let root = join(scratch, b"root");
    for dir in [&upper, &work, &root] {
        let dir_c = cstr(dir).stage(SetupStage::Scratch, dir)?;
        sys::mkdir(&dir_c, 0o755).stage(SetupStage::Scratch, dir)?;
    }

    // The host checked that no layer path contains ',' or ':', which
    // overlayfs would read as separators.
    let mut options = b"lowerdir=".to_vec();
    for (i, lower) in parts.lower_dirs.iter().enumerate() {
        if i > 0 {
            options.push(b':');
        }
        options.extend_from_slice(lower);
    }
    options.extend_from_slice(b",upperdir=");
    options.extend_from_slice(&upper);
    options.extend_from_slice(b",workdir=");
    options.extend_from_slice(&work);
    if in_user_namespace {
        // Outside the initial user namespace overlayfs may not use trusted.*
        // xattrs; user.* ones work on tmpfs since Linux 6.6.
        options.extend_from_slice(b",userxattr");
    }
    let options = cstr(&options).stage(SetupStage::Overlay, &root)?;
    let root_c = cstr(&root).stage(SetupStage::Overlay, &root)?;
    sys::mount(
        Some(c"overlay"),
        &root_c,
        Some(c"overlay"),
        NOSUID_NODEV,
        Some(&options),
    )
    .stage(SetupStage::Overlay, &root)?;
    Ok(root)
}

/// Directories of the root that PID 1 mounts over (or, for /sys, leaves
/// out) and that must therefore be real directories in the template.
const MOUNT_POINTS: [&[u8]; 4] = [b"proc", b"sys", b"dev", b"tmp"];

/// Rejects a template whose /proc, /sys, /dev or /tmp exists but is not a
/// directory. Until pivot_root, an absolute link resolves against the
/// host's root. A template with `dev -> /dev` would therefore have PID 1
/// mount the sandbox's /dev over the host's directory (in the sandbox's
/// mount namespace), and the sandbox's own path would point elsewhere. Any
/// other file would fail its mount with a message that names only the
/// scratch path. Nothing inside runs yet, so the file cannot change between
/// this check and the mounts.
fn reject_non_directory_mount_points(root: &[u8]) -> Result<(), SetupError> {
    for name in MOUNT_POINTS {
        let path = join(root, name);
        let path_c = cstr(&path).stage(SetupStage::Overlay, &path)?;
        let described = match sys::file_type(&path_c) {
            None | Some(libc::S_IFDIR) => continue,
            Some(libc::S_IFLNK) => "a symbolic link",
            Some(libc::S_IFREG) => "a regular file",
            Some(libc::S_IFIFO) => "a FIFO",
            Some(libc::S_IFSOCK) => "a socket",
            Some(_) => "a device node",
        };
        let mut detail = b"/".to_vec();
        detail.extend_from_slice(name);
        detail.extend_from_slice(
            format!(
                " is {described} in the template; /proc, /sys, /dev and /tmp must be \
                 directories or absent"
            )
            .as_bytes(),
        );
        return Err(SetupError {
            stage: SetupStage::Overlay,
            error: io::Error::from_raw_os_error(libc::ENOTDIR),
            detail,
        });
    }
    Ok(())
}

/// Bind-mounts host paths read-only, nosuid and nodev into the new root.
fn bind_host_paths(binds: &[BindMount], root: &[u8]) -> Result<(), SetupError> {
    for bind in binds {
        let target = join(root, &bind.target);
        let source_c = cstr(&bind.source).stage(SetupStage::Binds, &bind.source)?;
        let target_c = cstr(&target).stage(SetupStage::Binds, &bind.target)?;
        let bind_mount = || {
            sys::mount(
                Some(&source_c),
                &target_c,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
        };
        // The template usually has the mount point, so it is made only when
        // the first try finds it missing: a lookup on the overlay less.
        match bind_mount() {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if sys::is_dir(&source_c) {
                    sys::mkdir(&target_c, 0o755).stage(SetupStage::Binds, &bind.target)?;
                } else {
                    sys::write_file(&target_c, b"", 0o644)
                        .stage(SetupStage::Binds, &bind.target)?;
                }
                bind_mount().stage(SetupStage::Binds, &bind.source)?;
            }
            other => other.stage(SetupStage::Binds, &bind.source)?,
        }
        let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        sys::mount_setattr_recursive(&target_c, attrs).stage(SetupStage::Binds, &bind.target)?;
    }
    Ok(())
}

/// A detached copy of one of the caller's host paths, and whether that
/// path is a directory.
struct HostTree {
    tree: OwnedFd,
    is_dir: bool,
}

/// Clones the caller's host paths while the host's tree is still in reach:
/// read-only unless writable, and always nosuid and nodev.
fn clone_host_mounts(config: &Config) -> Result<Vec<HostTree>, SetupError> {
    let mut trees = Vec::with_capacity(config.mounts.len());
    for mount in &config.mounts {
        let source = cstr(&mount.source).stage(SetupStage::Mounts, &mount.source)?;
        let tree = sys::open_tree_clone(&source).stage(SetupStage::Mounts, &mount.source)?;
        let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if !mount.writable {
            attrs |= MOUNT_ATTR_RDONLY;
        }
        sys::mount_setattr_tree(tree.as_fd(), attrs).stage(SetupStage::Mounts, &mount.source)?;
        let is_dir = sys::tree_is_dir(tree.as_fd());
        trees.push(HostTree { tree, is_dir });
    }
    Ok(trees)
}

/// Attaches the cloned host paths at their targets. Runs after the switch
/// to the new root, so a target, and any symbolic link on its way that the
/// template has, resolves inside the sandbox.
fn attach_host_mounts(config: &Config, trees: Vec<HostTree>) -> Result<(), SetupError> {
    for (mount, tree) in config.mounts.iter().zip(trees) {
        let fail = |e| SetupError {
            stage: SetupStage::Mounts,
            error: e,
            detail: mount.target.clone(),
        };
        let target = open_mount_point(&mount.target, tree.is_dir).map_err(fail)?;
        sys::move_mount_to(tree.tree.as_fd(), target.as_fd()).map_err(fail)?;
    }
    Ok(())
}

/// Opens the mount point at `target`, an absolute path, one component at
/// a time. Missing directories on the way are made, owned by root, and so
/// is the mount point: a directory, or an empty file for a file. Symbolic
/// links are followed, but a /proc magic link such as /proc/self/fd/N fails
/// with `ELOOP`: through one, a template's link would reach the clones of
/// the other mounts, not yet attached, and make directories in their host
/// sources.
fn open_mount_point(target: &[u8], is_dir: bool) -> io::Result<OwnedFd> {
    let names: Vec<&[u8]> = target
        .split(|&b| b == b'/')
        .filter(|name| !name.is_empty())
        .collect();
    let Some((last, parents)) = names.split_last() else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let mut dir = sys::open_path(None, c"/", sys::RESOLVE_NO_MAGICLINKS)?;
    for name in parents {
        let name = cstr(name)?;
        sys::mkdir_at(dir.as_fd(), &name, 0o755)?;
        dir = sys::open_path(Some(dir.as_fd()), &name, sys::RESOLVE_NO_MAGICLINKS)?;
    }
    let last = cstr(last)?;
    if is_dir {
        sys::mkdir_at(dir.as_fd(), &last, 0o755)?;
    } else {
        sys::create_file_at(dir.as_fd(), &last, 0o644)?;
    }
    sys::open_path(Some(dir.as_fd()), &last, sys::RESOLVE_NO_MAGICLINKS)
}

fn mount_proc(root: &[u8]) -> Result<(), SetupError> {
    let proc_dir = join(root, b"proc");
    let proc_c = cstr(&proc_dir).stage(SetupStage::Proc, &proc_dir)?;
    sys::mkdir(&proc_c, 0o555).stage(SetupStage::Proc, &proc_dir)?;
    // A fresh procfs shows only this PID namespace's processes.
    let flags = NOSUID_NODEV | libc::MS_NOEXEC;
    sys::mount(Some(c"proc"), &proc_c, Some(c"proc"), flags, None)
        .stage(SetupStage::Proc, &proc_dir)?;
    // Kernel knobs stay readable but not writable from inside.
    for knob in [&b"sys"[..], b"sysrq-trigger", b"irq", b"bus", b"fs"] {
        let path = join(&proc_dir, knob);
        let path_c = cstr(&path).stage(SetupStage::Proc, &path)?;
        let flags = libc::MS_BIND | libc::MS_REC;
        match sys::mount(Some(&path_c), &path_c, None, flags, None) {
            // This kernel does not have it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            other => other.stage(SetupStage::Proc, &path)?,
        }
        let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        sys::mount_setattr_recursive(&path_c, attrs).stage(SetupStage::Proc, &path)?;
    }
    // Files that leak host kernel state (memory layout, keys, kernel
    // configuration, allocator statistics) are covered by the sandbox's
    // /dev/null. That mount is already read-only, nosuid and noexec, and a
    // bind mount copies its source mount's flags, so each mask needs one
    // call. Not nodev: the mask is /dev/null itself and must stay readable.
    let null = join(root, b"dev/null");
    let null_c = cstr(&null).stage(SetupStage::Proc, &null)?;
    for secret in MASKED_PROC_FILES {
        let path = join(&proc_dir, secret);
        let path_c = cstr(&path).stage(SetupStage::Proc, &path)?;
        match sys::mount(Some(&null_c), &path_c, None, libc::MS_BIND, None) {
            // This kernel does not have the file.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => other.stage(SetupStage::Proc, &path)?,
        }
    }
    // Directories of host hardware drivers are covered by an empty,
    // read-only tmpfs.
    for dir in MASKED_PROC_DIRS {
        let path = join(&proc_dir, dir);
        let path_c = cstr(&path).stage(SetupStage::Proc, &path)?;
        let flags = libc::MS_RDONLY | NOSUID_NODEV | libc::MS_NOEXEC;
        match sys::mount(
            Some(c"tmpfs"),
            &path_c,
            Some(c"tmpfs"),
            flags,
            Some(c"size=0"),
        ) {
            // This kernel has no such directory.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
            other => other.stage(SetupStage::Proc, &path)?,
        }
    }
    Ok(())
}

/// /proc files masked with /dev/null, as Docker and the OCI runtimes do,
/// plus the allocator and page statistics that help kernel exploits.
const MASKED_PROC_FILES: [&[u8]; 14] = [
    b"kcore",
    b"keys",
    b"key-users",
    b"timer_list",
    b"timer_stats",
    b"kallsyms",
    b"sched_debug",
    b"latency_stats",
    b"config.gz",
    b"vmallocinfo",
    b"slabinfo",
    b"pagetypeinfo",
    b"kpageflags",
    b"kpagecount",
];

/// /proc directories masked with an empty read-only tmpfs.
const MASKED_PROC_DIRS: [&[u8]; 3] = [b"acpi", b"scsi", b"asound"];

/// The device nodes of /dev, with their major and minor numbers; all are
/// harmless character devices.
const DEVICES: [(&[u8], u32, u32); 6] = [
    (b"null", 1, 3),
    (b"zero", 1, 5),
    (b"full", 1, 7),
    (b"random", 1, 8),
    (b"urandom", 1, 9),
    (b"tty", 5, 0),
];

fn build_dev(root: &[u8], in_user_namespace: bool) -> Result<(), SetupError> {
    let dev = join(root, b"dev");
    let dev_c = cstr(&dev).stage(SetupStage::Dev, &dev)?;
    sys::mkdir(&dev_c, 0o755).stage(SetupStage::Dev, &dev)?;
    sys::mount(
        Some(c"tmpfs"),
        &dev_c,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"mode=0755,size=64k"),
    )
    .stage(SetupStage::Dev, &dev)?;

    if in_user_namespace {
        bind_host_devices(&dev)?;
    } else {
        make_devices(&dev)?;
    }

    let pts = join(&dev, b"pts");
    let pts_c = cstr(&pts).stage(SetupStage::Dev, &pts)?;
    sys::mkdir(&pts_c, 0o755).stage(SetupStage::Dev, &pts)?;
    // gid 5 is the `tty` group of the generated /etc/group; in a user
    // namespace that maps only root it does not exist.
    let pts_options = if in_user_namespace {
        c"newinstance,ptmxmode=0666,mode=0620"
    } else {
        c"newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    sys::mount(
        Some(c"devpts"),
        &pts_c,
        Some(c"devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(pts_options),
    )
    .stage(SetupStage::Dev, &pts)?;

    let shm = join(&dev, b"shm");
    let shm_c = cstr(&shm).stage(SetupStage::Dev, &shm)?;
    sys::mkdir(&shm_c, 0o1777).stage(SetupStage::Dev, &shm)?;
    sys::mount(
        Some(c"shm"),
        &shm_c,
        Some(c"tmpfs"),
        NOSUID_NODEV,
        Some(c"mode=1777,size=64m"),
    )
    .stage(SetupStage::Dev, &shm)?;

    let links: [(&[u8], &[u8]); 5] = [
        (b"ptmx", b"pts/ptmx"),
        (b"fd", b"/proc/self/fd"),
        (b"stdin", b"/proc/self/fd/0"),
        (b"stdout", b"/proc/self/fd/1"),
        (b"stderr", b"/proc/self/fd/2"),
    ];
    for (name, target) in links {
        let path = join(&dev, name);
        let path_c = cstr(&path).stage(SetupStage::Dev, &path)?;
        let target_c = cstr(target).stage(SetupStage::Dev, target)?;
        sys::symlink(&target_c, &path_c).stage(SetupStage::Dev, &path)?;
    }

    // Nothing inside may add device nodes: /dev becomes read-only, and every
    // writable mount is nodev.
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
    sys::mount(
        None,
        &dev_c,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"mode=0755,size=64k"),
    )
    .or_else(|_| sys::mount_setattr_recursive(&dev_c, attrs))
    .stage(SetupStage::Dev, &dev)?;
    Ok(())
}

/// Creates the device nodes in the sandbox's /dev: one system call each,
/// where a bind of the host's node takes four. The nodes belong to this
/// /dev alone, which becomes read-only once built, so sandbox root cannot
/// change their mode.
fn make_devices(dev: &[u8]) -> Result<(), SetupError> {
    let previous = sys::umask(0);
    let made = DEVICES.iter().try_for_each(|&(name, major, minor)| {
        let target = join(dev, name);
        let target_c = cstr(&target).stage(SetupStage::Dev, &target)?;
        sys::mknod_char(&target_c, 0o666, major, minor).stage(SetupStage::Dev, &target)
    });
    sys::umask(previous);
    made
}

/// Binds the host's device nodes into the sandbox's /dev, for a user
/// namespace, where mknod is not allowed.
fn bind_host_devices(dev: &[u8]) -> Result<(), SetupError> {
    for (name, _, _) in DEVICES {
        let host = join(b"/dev", name);
        let target = join(dev, name);
        let host_c = cstr(&host).stage(SetupStage::Dev, &host)?;
        let target_c = cstr(&target).stage(SetupStage::Dev, &target)?;
        sys::write_file(&target_c, b"", 0o666).stage(SetupStage::Dev, &target)?;
        sys::mount(Some(&host_c), &target_c, None, libc::MS_BIND, None)
            .stage(SetupStage::Dev, &host)?;
        // The bind would keep the host /dev's flags. Read-only stops chmod
        // and chown of the host's node (sandbox root has CAP_FOWNER) while
        // reads and writes of the device itself still work.
        let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
        sys::mount_setattr_recursive(&target_c, attrs).stage(SetupStage::Dev, &target)?;
    }
    Ok(())
}

fn mount_tmp(parts: RootParts<'_>, root: &[u8]) -> Result<(), SetupError> {
    let tmp = join(root, b"tmp");
    let tmp_c = cstr(&tmp).stage(SetupStage::Tmp, &tmp)?;
    sys::mkdir(&tmp_c, 0o1777).stage(SetupStage::Tmp, &tmp)?;
    let options = format!(
        "mode=1777,size={},nr_inodes={}",
        parts.tmp_size, parts.scratch_inodes
    );
    mount_sized_tmpfs(c"tmpfs", &tmp_c, &options).stage(SetupStage::Tmp, &tmp)?;
    Ok(())
}

/// Mounts a tmpfs for file data, with huge pages for files of 2 MiB and
/// more (`huge=within_size`). Large writes then allocate one page per 2 MiB
/// instead of 512, which makes them about 1.5 times faster, and small
/// files still take 4 KiB pages. A kernel without transparent huge pages
/// rejects the option, and the mount is retried without it.
fn mount_sized_tmpfs(source: &CStr, target: &CStr, options: &str) -> io::Result<()> {
    let with_huge = cstr(format!("{options},huge=within_size").as_bytes())?;
    let mounted = sys::mount(
        Some(source),
        target,
        Some(c"tmpfs"),
        NOSUID_NODEV,
        Some(&with_huge),
    );
    match mounted {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let plain = cstr(options.as_bytes())?;
            sys::mount(
                Some(source),
                target,
                Some(c"tmpfs"),
                NOSUID_NODEV,
                Some(&plain),
            )
        }
        other => other,
    }
}

/// Writes the files in /etc that depend on the sandbox: its hostname and
/// hosts and, when the configuration has one, resolv.conf. It runs after
/// pivot_root, so that the template's symbolic links resolve inside the
/// sandbox: a directory template's /etc, or a file in it, may be a link,
/// and before the pivot an absolute one would lead to the host's files.
fn write_etc(config: &Config) -> Result<(), SetupError> {
    let id = String::from_utf8_lossy(&config.sandbox_id);
    let hostname = format!("{id}\n");
    let hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{id}\n");
    let resolv_conf = (!config.resolv_conf.is_empty())
        .then_some((c"/etc/resolv.conf", config.resolv_conf.as_slice()));
    let files = [
        (c"/etc/hostname", hostname.as_bytes()),
        (c"/etc/hosts", hosts.as_bytes()),
    ];
    sys::mkdir(c"/etc", 0o755).stage(SetupStage::EtcFiles, b"/etc")?;
    for (name, contents) in files.into_iter().chain(resolv_conf) {
        let written = sys::write_file(name, contents, 0o644).or_else(|first| {
            // A symbolic link (ELOOP), a FIFO or socket (ENXIO) or a device
            // node (EACCES, because the root is nodev) in the template is
            // replaced by a file of this sandbox's own in the writable
            // layer. If the unlink fails too, as for a directory, the first
            // error is returned.
            sys::unlink(name).map_err(|_| first)?;
            sys::write_file(name, contents, 0o644)
        });
        written.map_err(|error| etc_error(name, error))?;
    }
    Ok(())
}

/// Describes a failure to write `name` in /etc with the template layout
/// that causes it.
fn etc_error(name: &CStr, error: io::Error) -> SetupError {
    let name = name.to_string_lossy();
    let detail = match error.raw_os_error() {
        Some(libc::EISDIR) => format!(
            "{name} is a directory in the template; it must be a file, a symbolic link or absent"
        ),
        Some(libc::ENOTDIR | libc::ENOENT | libc::ELOOP | libc::EROFS) => format!(
            "{name}; /etc in the template must be a directory, or a symbolic link to a writable \
             directory inside the sandbox"
        ),
        _ => name.into_owned(),
    };
    SetupError {
        stage: SetupStage::EtcFiles,
        error,
        detail: detail.into_bytes(),
    }
}

/// uid and gid of the sandbox's `user`, whose home commands start in.
const USER_ID: libc::uid_t = 1000;

/// Makes /home/user and /root, where commands of `user` and `root` start by
/// default, if the template lacks them (the `host` template has both). A
/// failure is left for the command's start to report, as a working
/// directory that cannot be entered.
fn make_homes() {
    let _ = sys::mkdir(c"/root", 0o700);
    let created = match sys::make_dir(c"/home/user", 0o755) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let _ = sys::mkdir(c"/home", 0o755);
            sys::make_dir(c"/home/user", 0o755)
        }
        other => other,
    };
    if matches!(created, Ok(true)) {
        // In a user namespace that does not map uid 1000 this fails, and
        // the directory stays root's, as PID 1 made it.
        let _ = sys::chown(c"/home/user", USER_ID, USER_ID);
    }
}

/// Makes `root` the root directory and detaches the host's tree.
fn switch_root(root: &[u8]) -> Result<(), SetupError> {
    let root_c = cstr(root).stage(SetupStage::PivotRoot, root)?;
    sys::chdir(&root_c).stage(SetupStage::PivotRoot, root)?;
    // pivot_root(".", ".") stacks the old root on top of the new one, so no
    // put_old directory is needed; detaching "." then removes the old root.
    sys::pivot_root(c".", c".").stage(SetupStage::PivotRoot, root)?;
    sys::umount_detach(c".").stage(SetupStage::PivotRoot, b"old root")?;
    sys::chdir(c"/").stage(SetupStage::PivotRoot, b"/")?;
    Ok(())
}

/// Removes every capability outside [`KEPT_CAPS`] from the bounding set, so
/// no program run inside, even as root, can gain them. PID 1 keeps its own
/// capabilities to start commands as other users.
fn drop_bounding_caps(last_cap: u32) {
    for cap in 0..=last_cap {
        if !KEPT_CAPS.contains(&cap) {
            // EINVAL for capabilities newer than these headers is harmless.
            let _ = sys::drop_bounding_cap(cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use soulbox_proto::BindMount;
    use std::os::unix::ffi::OsStrExt;

    /// A directory under the system's temporary directory, removed on drop.
    struct TempRoot(std::path::PathBuf);

    impl TempRoot {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("soulbox-init-test-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create a temporary root");
            Self(dir)
        }

        fn bytes(&self) -> &[u8] {
            self.0.as_os_str().as_bytes()
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config_with_binds(binds: Vec<BindMount>) -> Config {
        Config {
            sandbox_id: b"sb-test".to_vec(),
            lower_dirs: Vec::new(),
            binds,
            scratch_dir: Vec::new(),
            scratch_size: 0,
            scratch_inodes: 0,
            tmp_size: 0,
            open_files_limit: 0,
            file_size_limit: 0,
            timeout_ms: 0,
            seccomp_filter: Vec::new(),
            background: false,
            mounts: Vec::new(),
            resolv_conf: Vec::new(),
            allow_out: Vec::new(),
            deny_out: Vec::new(),
            pause_on_timeout: false,
            resume_timeout_ms: 0,
            send_upper: false,
        }
    }

    /// Returns the mount points of this thread's mount namespace.
    fn mount_points() -> Vec<String> {
        std::fs::read_to_string("/proc/thread-self/mountinfo")
            .expect("read mountinfo")
            .lines()
            .filter_map(|line| line.split(' ').nth(4).map(str::to_string))
            .collect()
    }

    /// A template without a bind's mount point gets one made: a directory
    /// for a directory, an empty file for a file.
    #[test]
    fn missing_bind_targets_made() {
        if !sys::has_effective_caps() {
            eprintln!("missing_bind_targets_made needs root; skipped");
            return;
        }
        // A mount namespace of this test thread's own, which ends with it.
        sys::unshare(libc::CLONE_NEWNS).expect("unshare the mount namespace");
        sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
            .expect("make mounts private");
        let root = TempRoot::new("binds");
        let sources = TempRoot::new("bind-sources");
        std::fs::create_dir(sources.0.join("dir")).expect("create the source directory");
        std::fs::write(sources.0.join("dir/marker"), b"x").expect("write the marker");
        std::fs::write(sources.0.join("file"), b"contents").expect("write the source file");
        let bind = |name: &str, target: &str| BindMount {
            source: sources.0.join(name).as_os_str().as_bytes().to_vec(),
            target: target.as_bytes().to_vec(),
        };
        let config = config_with_binds(vec![bind("dir", "/opt/dir"), bind("file", "/file")]);
        std::fs::create_dir(root.0.join("opt")).expect("create opt");

        assert!(bind_host_paths(&config.binds, root.bytes()).is_ok());
        let mounted = mount_points();
        for target in ["opt/dir", "file"] {
            let path = root.0.join(target);
            assert!(
                mounted.contains(&path.to_string_lossy().into_owned()),
                "{} is not a mount point: {mounted:?}",
                path.display()
            );
        }
        assert_eq!(std::fs::read(root.0.join("opt/dir/marker")).unwrap(), b"x");
        assert_eq!(std::fs::read(root.0.join("file")).unwrap(), b"contents");
        for target in ["opt/dir", "file"] {
            let path = cstr(root.0.join(target).as_os_str().as_bytes()).unwrap();
            sys::umount_detach(&path).expect("unmount the bind");
        }
    }

    #[test]
    fn real_or_missing_mount_points_accepted() {
        let root = TempRoot::new("dirs");
        std::fs::create_dir(root.0.join("proc")).expect("create proc");
        std::fs::create_dir(root.0.join("dev")).expect("create dev");
        assert!(reject_non_directory_mount_points(root.bytes()).is_ok());
    }

    #[test]
    fn symlinked_mount_points_rejected() {
        for name in ["proc", "sys", "dev", "tmp"] {
            let root = TempRoot::new(name);
            std::os::unix::fs::symlink(format!("/{name}"), root.0.join(name))
                .expect("create the symbolic link");
            let error = match reject_non_directory_mount_points(root.bytes()) {
                Err(error) => error,
                Ok(()) => panic!("a symbolic link at /{name} was accepted"),
            };
            assert_eq!(error.stage, SetupStage::Overlay, "{name}");
            assert_eq!(error.error.raw_os_error(), Some(libc::ENOTDIR), "{name}");
            let detail = String::from_utf8_lossy(&error.detail);
            assert!(
                detail.starts_with(&format!("/{name} is a symbolic link")),
                "{detail}"
            );
        }
    }
}
