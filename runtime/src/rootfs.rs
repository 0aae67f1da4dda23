//! Mounting a container's rootfs for a user-namespaced container.
//!
//! containerd passes the rootfs as mounts in CreateTaskRequest: one `overlay` mount
//! (`lowerdir=A:B:C,upperdir=U,workdir=W`, overlayfs snapshotter) or one `bind` mount
//! (a single layer, the native snapshotter). Image layers are shared between containers
//! and pods and are never chowned. Instead:
//! - overlay: every lower layer gets an idmapped clone (`open_tree(OPEN_TREE_CLONE)` +
//!   `mount_setattr(MOUNT_ATTR_IDMAP)`), attached read-only at `<staging>/lower-N`; the
//!   upper and work dirs (private to this container) have their top directory chowned to
//!   the range's root; overlay is mounted on `target` over the idmapped lowers. An overlay
//!   mount itself cannot be idmapped, and idmapping the upper+work pair breaks overlay's
//!   work dir (EOVERFLOW): this is the combination that works.
//! - bind: an idmapped clone of the source, attached at `target`. Note that files the
//!   container creates through it land on disk with host IDs mapped back through the
//!   idmap (container root writes host-UID-0 files into the snapshot directory, which
//!   containerd keeps 0700).
//!
//! The cost is per layer, not per file. Needs Linux >= 5.19 (idmapped layers under
//! overlay); on kernels or filesystems without idmapped mounts the mount is refused with
//! [`RootfsError::IdmapUnsupported`].
//!
//! Restarted containers: when the upper dir already holds files (a container restarted
//! on the same snapshot), only the top directories of upper and work are chowned; files
//! below were written by the container under the pod's range and keep their owners.
//!
//! `staging` is a directory this module owns: it is created by [`mount_rootfs`] (it must
//! be missing or empty) and removed by [`unmount_rootfs`]. Put it next to the bundle's
//! rootfs, e.g. `<bundle>/.stockade-rootfs`.
//!
//! Mount propagation: clones and the overlay are attached like any mount under the
//! bundle, so they follow the bundle directory's propagation (the same as runc's shim).

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::idrange::IdRange;

/// One rootfs mount as containerd passes it (`type`, `source`, `options`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsMount {
    /// `overlay` or `bind`.
    #[serde(alias = "type", alias = "typ")]
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("invalid rootfs mounts: {0}")]
    Invalid(String),
    #[error(
        "idmapped mount of {path} refused: this kernel or filesystem does not support idmapped \
         mounts (Linux >= 5.12 for idmapped mounts, >= 5.19 for idmapped overlay layers): {source}"
    )]
    IdmapUnsupported { path: PathBuf, source: io::Error },
    #[error("rootfs target {0} is already a mount point; unmount it first")]
    AlreadyMounted(PathBuf),
    #[error("rootfs staging directory {0} exists and is not empty")]
    StagingNotEmpty(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("mounting overlay on {target}: {source}{detail}")]
    Overlay {
        target: PathBuf,
        source: io::Error,
        /// Messages of the kernel's filesystem context, if any.
        detail: String,
    },
    #[error("cleaning up {path}: {problem}")]
    Cleanup { path: PathBuf, problem: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Set to `1` to mount overlay with mount(2) and a data string instead of the new mount
/// API (what kernels before 6.8 get anyway); for diagnosis and for testing that path.
pub const LEGACY_MOUNT_ENV: &str = "STOCKADE_ROOTFS_LEGACY_MOUNT";

/// The longest mount(2) data string (a page, NUL included).
const MAX_MOUNT_DATA: usize = 4095;

/// What to mount, parsed and checked before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Overlay {
        /// Top-most first, as in `lowerdir=`.
        lowers: Vec<PathBuf>,
        /// Upper and work dir; None for a read-only view.
        upper: Option<(PathBuf, PathBuf)>,
        /// Other overlay options: `key=value` or a flag.
        extra: Vec<(String, Option<String>)>,
        attrs: u64,
    },
    Bind {
        source: PathBuf,
        recursive: bool,
        attrs: u64,
    },
}

/// Options that are generic mount flags; they become mount attributes.
fn mount_flag(option: &str) -> Option<u64> {
    Some(match option {
        "ro" => libc::MOUNT_ATTR_RDONLY,
        "nosuid" => libc::MOUNT_ATTR_NOSUID,
        "nodev" => libc::MOUNT_ATTR_NODEV,
        "noexec" => libc::MOUNT_ATTR_NOEXEC,
        "noatime" => libc::MOUNT_ATTR_NOATIME,
        "nodiratime" => libc::MOUNT_ATTR_NODIRATIME,
        "strictatime" => libc::MOUNT_ATTR_STRICTATIME,
        "rw" | "suid" | "dev" | "exec" | "relatime" | "atime" | "diratime" | "async" => 0,
        _ => return None,
    })
}

/// Overlay options passed through as they are (anything else is refused by name).
const OVERLAY_PASSTHROUGH: &[&str] = &[
    "index",
    "metacopy",
    "redirect_dir",
    "xino",
    "nfs_export",
    "volatile",
    "userxattr",
    "uuid",
];

fn absolute_path(value: &str, what: &str) -> Result<PathBuf, RootfsError> {
    let path = PathBuf::from(value);
    if value.is_empty() {
        return Err(RootfsError::Invalid(format!("{what} is empty")));
    }
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(RootfsError::Invalid(format!(
            "{what} {value:?} must be an absolute path without `..`"
        )));
    }
    Ok(path)
}

fn plan(mounts: &[RootfsMount]) -> Result<Plan, RootfsError> {
    let mount = match mounts {
        [] => {
            return Err(RootfsError::Invalid(
                "no rootfs mounts given (expected one overlay or bind mount)".into(),
            ))
        }
        [one] => one,
        more => {
            return Err(RootfsError::Invalid(format!(
                "{} rootfs mounts given; Stockade mounts exactly one overlay or bind mount",
                more.len()
            )))
        }
    };
    let kind = mount.kind.as_str();
    let bad = |option: &str, problem: &str| {
        RootfsError::Invalid(format!("{kind} mount option {option:?}: {problem}"))
    };
    match kind {
        "overlay" => {
            let (mut lowers, mut upper, mut work, mut extra, mut attrs) =
                (None, None, None, Vec::new(), 0);
            for option in &mount.options {
                if let Some(flag) = mount_flag(option) {
                    attrs |= flag;
                    continue;
                }
                let (key, value) = match option.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (option.as_str(), None),
                };
                match (key, value) {
                    ("lowerdir", Some(v)) => {
                        if lowers.is_some() {
                            return Err(bad(option, "lowerdir given twice"));
                        }
                        if v.contains('\\') {
                            return Err(bad(option, "escaped lowerdir paths are not supported"));
                        }
                        let layers = v
                            .split(':')
                            .map(|l| {
                                if l.is_empty() {
                                    Err(bad(
                                        option,
                                        "empty layer (or data-only `::` layers, not supported)",
                                    ))
                                } else {
                                    absolute_path(l, "lower layer")
                                }
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        lowers = Some(layers);
                    }
                    ("upperdir", Some(v)) => upper = Some(absolute_path(v, "upperdir")?),
                    ("workdir", Some(v)) => work = Some(absolute_path(v, "workdir")?),
                    (k, v) if OVERLAY_PASSTHROUGH.contains(&k) => {
                        extra.push((k.to_string(), v.map(str::to_string)));
                    }
                    _ => return Err(bad(option, "unknown overlay option")),
                }
            }
            let lowers = lowers.ok_or_else(|| {
                RootfsError::Invalid("overlay mount has no lowerdir option (no layers)".into())
            })?;
            let upper = match (upper, work) {
                (Some(u), Some(w)) => Some((u, w)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(RootfsError::Invalid(
                        "overlay mount has upperdir but no workdir".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(RootfsError::Invalid(
                        "overlay mount has workdir but no upperdir".into(),
                    ))
                }
            };
            Ok(Plan::Overlay {
                lowers,
                upper,
                extra,
                attrs,
            })
        }
        "bind" | "rbind" => {
            let mut recursive = kind == "rbind";
            let mut attrs = 0;
            for option in &mount.options {
                match option.as_str() {
                    "bind" => {}
                    "rbind" => recursive = true,
                    o => attrs |= mount_flag(o).ok_or_else(|| bad(o, "unknown bind option"))?,
                }
            }
            Ok(Plan::Bind {
                source: absolute_path(&mount.source, "bind source")?,
                recursive,
                attrs,
            })
        }
        other => Err(RootfsError::Invalid(format!(
            "rootfs mount type {other:?} is not supported (overlay or bind)"
        ))),
    }
}

/// A rootfs mounted by [`mount_rootfs`]. Dropping it leaves the mounts in place (the
/// container outlives this value); call [`MountedRootfs::unmount`] to remove them.
#[derive(Debug)]
pub struct MountedRootfs {
    target: PathBuf,
    staging: PathBuf,
    layers: usize,
}

impl MountedRootfs {
    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Idmapped layer clones made (0 for a bind rootfs).
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Remove everything [`mount_rootfs`] mounted and created.
    pub fn unmount(self) -> Result<(), RootfsError> {
        unmount_rootfs(&self.target, &self.staging)
    }
}

/// Things done so far, undone in reverse on failure.
enum Step {
    CreatedDir(PathBuf),
    Mounted(PathBuf),
    Chowned { path: PathBuf, uid: u32, gid: u32 },
}

#[derive(Default)]
struct Undo(Vec<Step>);

impl Undo {
    fn rollback(self) {
        for step in self.0.into_iter().rev() {
            let result = match &step {
                Step::CreatedDir(p) => fs::remove_dir(p).map_err(|e| (p, e.to_string())),
                Step::Mounted(p) => unmount_all(p).map_err(|e| (p, e.to_string())),
                Step::Chowned { path, uid, gid } => {
                    std::os::unix::fs::lchown(path, Some(*uid), Some(*gid))
                        .map_err(|e| (path, e.to_string()))
                }
            };
            if let Err((path, error)) = result {
                tracing::warn!(path = %path.display(), %error, "rootfs rollback step failed");
            }
        }
    }
}

/// Mount the rootfs described by `mounts` on `target` for a container whose user
/// namespace (`userns_fd`) maps container 0 to `range.first`. `target` is created if
/// missing. On error nothing is left behind (no mount, no staging directory, ownership
/// of upper/work restored).
pub fn mount_rootfs(
    mounts: &[RootfsMount],
    target: &Path,
    staging: &Path,
    range: IdRange,
    userns_fd: BorrowedFd<'_>,
) -> Result<MountedRootfs, RootfsError> {
    let plan = plan(&crate::rootfs_idmap::take_idmap_options(mounts, range)?)?;
    if !range.is_valid() {
        return Err(RootfsError::Invalid(format!(
            "ID range {range} is not usable"
        )));
    }
    check_userns(userns_fd)?;
    let mut undo = Undo::default();
    match mount_plan(&plan, target, staging, range, userns_fd, &mut undo) {
        Ok(layers) => {
            tracing::debug!(target = %target.display(), layers, first = range.first, "rootfs mounted");
            Ok(MountedRootfs {
                target: target.to_path_buf(),
                staging: staging.to_path_buf(),
                layers,
            })
        }
        Err(e) => {
            undo.rollback();
            Err(e)
        }
    }
}

/// `ioctl(NS_GET_NSTYPE)`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// A wrong fd would otherwise surface as mount_setattr's EINVAL, which reads like a
/// missing kernel feature.
fn check_userns(fd: BorrowedFd<'_>) -> Result<(), RootfsError> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the fd.
    let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if nstype != libc::CLONE_NEWUSER {
        return Err(RootfsError::Invalid(format!(
            "userns fd {} is not a user namespace",
            fd.as_raw_fd()
        )));
    }
    Ok(())
}

fn mount_plan(
    plan: &Plan,
    target: &Path,
    staging: &Path,
    range: IdRange,
    userns: BorrowedFd<'_>,
    undo: &mut Undo,
) -> Result<usize, RootfsError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            if is_mount_point(target)? {
                return Err(RootfsError::AlreadyMounted(target.to_path_buf()));
            }
        }
        Ok(_) => {
            return Err(RootfsError::Invalid(format!(
                "rootfs target {} is not a directory",
                target.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(target).map_err(io_err("creating", target))?;
            undo.0.push(Step::CreatedDir(target.to_path_buf()));
        }
        Err(e) => return Err(io_err("inspecting", target)(e)),
    }

    match plan {
        Plan::Bind {
            source,
            recursive,
            attrs,
        } => {
            let tree = idmapped_clone(source, *recursive, *attrs, userns)?;
            attach(&tree, target)?;
            undo.0.push(Step::Mounted(target.to_path_buf()));
            Ok(0)
        }
        Plan::Overlay {
            lowers,
            upper,
            extra,
            attrs,
        } => {
            create_staging(staging, undo)?;
            let mut staged = Vec::with_capacity(lowers.len());
            for (i, lower) in lowers.iter().enumerate() {
                let tree = idmapped_clone(lower, true, libc::MOUNT_ATTR_RDONLY, userns)?;
                let dir = staging.join(format!("lower-{i}"));
                fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
                undo.0.push(Step::CreatedDir(dir.clone()));
                attach(&tree, &dir)?;
                undo.0.push(Step::Mounted(dir.clone()));
                staged.push(dir);
            }
            if let Some((upper, work)) = upper {
                let upper_in_use = fs::read_dir(upper)
                    .map_err(io_err("reading", upper))?
                    .next()
                    .is_some();
                if upper_in_use {
                    tracing::info!(upper = %upper.display(),
                        "upper dir not empty (restarted container): chowning its top dir only");
                }
                for dir in [upper, work] {
                    chown_top(dir, range.first, undo)?;
                }
            }
            mount_overlay(&staged, upper.as_ref(), extra, *attrs, target)?;
            undo.0.push(Step::Mounted(target.to_path_buf()));
            Ok(staged.len())
        }
    }
}

fn create_staging(staging: &Path, undo: &mut Undo) -> Result<(), RootfsError> {
    match fs::create_dir(staging) {
        Ok(()) => {
            undo.0.push(Step::CreatedDir(staging.to_path_buf()));
            // Only root needs to see the idmapped layers.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(staging, fs::Permissions::from_mode(0o700))
                .map_err(io_err("setting the mode of", staging))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let empty = fs::read_dir(staging)
                .map_err(io_err("reading", staging))?
                .next()
                .is_none();
            if empty {
                Ok(())
            } else {
                Err(RootfsError::StagingNotEmpty(staging.to_path_buf()))
            }
        }
        Err(e) => Err(io_err("creating", staging)(e)),
    }
}

/// Chown the directory itself (never its contents) to the range's root.
fn chown_top(dir: &Path, root: u32, undo: &mut Undo) -> Result<(), RootfsError> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("inspecting", dir))?;
    if !meta.is_dir() {
        return Err(RootfsError::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() == root && meta.gid() == root {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, Some(root), Some(root)).map_err(io_err("chowning", dir))?;
    undo.0.push(Step::Chowned {
        path: dir.to_path_buf(),
        uid: meta.uid(),
        gid: meta.gid(),
    });
    Ok(())
}

fn cpath(path: &Path) -> Result<CString, RootfsError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RootfsError::Invalid(format!("path {} contains a NUL byte", path.display())))
}

fn cstr(s: &str) -> Result<CString, RootfsError> {
    CString::new(s).map_err(|_| RootfsError::Invalid(format!("{s:?} contains a NUL byte")))
}

/// Whether the filesystem holding `path` takes idmapped mounts: an idmapped clone of its
/// mount is made through `userns` and dropped again, never attached, so nothing is left
/// behind. Ok(false) when the kernel or the filesystem refuses idmapping.
pub fn idmap_supported(path: &Path, userns: BorrowedFd<'_>) -> Result<bool, RootfsError> {
    match idmapped_clone(path, false, 0, userns) {
        Ok(_tree) => Ok(true),
        Err(RootfsError::IdmapUnsupported { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A detached clone of the tree at `source`, idmapped through `userns` and with `attrs`.
pub(crate) fn idmapped_clone(
    source: &Path,
    recursive: bool,
    attrs: u64,
    userns: BorrowedFd<'_>,
) -> Result<OwnedFd, RootfsError> {
    let c_source = cpath(source)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree(2) with a NUL-terminated path; returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_source.as_ptr(),
            flags,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Err(RootfsError::IdmapUnsupported {
                path: source.to_path_buf(),
                source: e,
            });
        }
        return Err(io_err("cloning the mount tree of", source)(e));
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };

    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut at_flags = libc::AT_EMPTY_PATH;
    if recursive {
        at_flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr(2) on the detached tree fd with an empty path; `attr` is a
    // valid struct mount_attr and its size is passed alongside.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at_flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if ret != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                RootfsError::IdmapUnsupported {
                    path: source.to_path_buf(),
                    source: e,
                }
            }
            _ => io_err("idmapping the clone of", source)(e),
        });
    }
    Ok(tree)
}

/// Attach a detached mount (fd from open_tree or fsmount) at `path`.
pub(crate) fn attach(tree: &OwnedFd, path: &Path) -> Result<(), RootfsError> {
    let c_path = cpath(path)?;
    // SAFETY: move_mount(2) from the fd (empty path + MOVE_MOUNT_F_EMPTY_PATH) onto a
    // NUL-terminated absolute or cwd-relative path.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret != 0 {
        return Err(io_err("attaching a mount at", path)(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<&(PathBuf, PathBuf)>,
    extra: &[(String, Option<String>)],
    attrs: u64,
    target: &Path,
) -> Result<(), RootfsError> {
    if std::env::var_os(LEGACY_MOUNT_ENV).is_some_and(|v| v == "1") {
        return mount_overlay_legacy(lowers, upper, extra, attrs, target);
    }
    match mount_overlay_fsconfig(lowers, upper, extra, attrs, target) {
        Err(FsconfigError::LowerdirPlusUnsupported) => {
            tracing::debug!("kernel lacks overlay `lowerdir+` (< 6.8): using mount(2)");
            mount_overlay_legacy(lowers, upper, extra, attrs, target)
        }
        Err(FsconfigError::Failed(e)) => Err(e),
        Ok(()) => Ok(()),
    }
}

enum FsconfigError {
    LowerdirPlusUnsupported,
    Failed(RootfsError),
}

impl From<RootfsError> for FsconfigError {
    fn from(e: RootfsError) -> Self {
        FsconfigError::Failed(e)
    }
}

/// Messages the kernel queued on a filesystem context fd ("e overlayfs: ...").
fn fs_context_log(fs: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        // SAFETY: reads into a valid buffer of the given length from our own fd.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.push_str(": ");
        out.push_str(String::from_utf8_lossy(&buf[..n as usize]).trim_end());
    }
    out
}

fn fsconfig(
    fs: &OwnedFd,
    cmd: libc::c_uint,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> io::Result<()> {
    // SAFETY: fsconfig(2) on our fs context fd; key and value are NUL-terminated strings
    // or NULL as the command requires; aux is 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key.map_or(std::ptr::null(), CStr::as_ptr),
            value.map_or(std::ptr::null(), CStr::as_ptr),
            0 as libc::c_int,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The new mount API: one `lowerdir+` per layer, so any number of layers fits (the
/// mount(2) data string is limited to a page).
fn mount_overlay_fsconfig(
    lowers: &[PathBuf],
    upper: Option<&(PathBuf, PathBuf)>,
    extra: &[(String, Option<String>)],
    attrs: u64,
    target: &Path,
) -> Result<(), FsconfigError> {
    // SAFETY: fsopen(2) with a NUL-terminated fs name; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(FsconfigError::LowerdirPlusUnsupported);
    }
    // SAFETY: fsopen returned a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let failed = |source: io::Error| {
        FsconfigError::Failed(RootfsError::Overlay {
            target: target.to_path_buf(),
            source,
            detail: fs_context_log(&fs),
        })
    };
    let set = |key: &str, value: &CStr| {
        let key = cstr(key)?;
        fsconfig(&fs, libc::FSCONFIG_SET_STRING, Some(&key), Some(value)).map_err(failed)
    };
    set("source", c"overlay")?;
    for (i, lower) in lowers.iter().enumerate() {
        let key = c"lowerdir+";
        let value = cpath(lower)?;
        if let Err(e) = fsconfig(&fs, libc::FSCONFIG_SET_STRING, Some(key), Some(&value)) {
            if i == 0 && e.raw_os_error() == Some(libc::EINVAL) {
                return Err(FsconfigError::LowerdirPlusUnsupported);
            }
            return Err(failed(e));
        }
    }
    if let Some((upper, work)) = upper {
        set("upperdir", &cpath(upper)?)?;
        set("workdir", &cpath(work)?)?;
    }
    for (key, value) in extra {
        match value {
            Some(v) => set(key, &cstr(v)?)?,
            None => {
                fsconfig(&fs, libc::FSCONFIG_SET_FLAG, Some(&cstr(key)?), None).map_err(failed)?
            }
        }
    }
    fsconfig(&fs, libc::FSCONFIG_CMD_CREATE, None, None).map_err(failed)?;
    // SAFETY: fsmount(2) on the created context; returns a new detached mount fd or -1.
    let mnt = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    };
    if mnt < 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    // SAFETY: fsmount returned a new fd that nothing else owns.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as libc::c_int) };
    attach(&mnt, target)?;
    Ok(())
}

/// mount(2) with a data string, for kernels before 6.8.
fn mount_overlay_legacy(
    lowers: &[PathBuf],
    upper: Option<&(PathBuf, PathBuf)>,
    extra: &[(String, Option<String>)],
    attrs: u64,
    target: &Path,
) -> Result<(), RootfsError> {
    let join = |p: &Path| -> Result<String, RootfsError> {
        let s = p
            .to_str()
            .filter(|s| !s.contains([',', ':', '\\']))
            .ok_or_else(|| {
                RootfsError::Invalid(format!(
                    "{} cannot be written into overlay's option string",
                    p.display()
                ))
            })?;
        Ok(s.to_string())
    };
    let lowerdir = lowers
        .iter()
        .map(|p| join(p))
        .collect::<Result<Vec<_>, _>>()?
        .join(":");
    let mut data = vec![format!("lowerdir={lowerdir}")];
    if let Some((upper, work)) = upper {
        data.push(format!("upperdir={}", join(upper)?));
        data.push(format!("workdir={}", join(work)?));
    }
    for (key, value) in extra {
        data.push(match value {
            Some(v) => format!("{key}={v}"),
            None => key.clone(),
        });
    }
    let data = data.join(",");
    if data.len() > MAX_MOUNT_DATA {
        return Err(RootfsError::Invalid(format!(
            "{} layers make overlay options of {} bytes, beyond mount(2)'s {MAX_MOUNT_DATA}; \
             kernels >= 6.8 have no such limit",
            lowers.len(),
            data.len()
        )));
    }
    let mut flags = nix::mount::MsFlags::empty();
    for (attr, flag) in [
        (libc::MOUNT_ATTR_RDONLY, nix::mount::MsFlags::MS_RDONLY),
        (libc::MOUNT_ATTR_NOSUID, nix::mount::MsFlags::MS_NOSUID),
        (libc::MOUNT_ATTR_NODEV, nix::mount::MsFlags::MS_NODEV),
        (libc::MOUNT_ATTR_NOEXEC, nix::mount::MsFlags::MS_NOEXEC),
        (libc::MOUNT_ATTR_NOATIME, nix::mount::MsFlags::MS_NOATIME),
        (
            libc::MOUNT_ATTR_NODIRATIME,
            nix::mount::MsFlags::MS_NODIRATIME,
        ),
        (
            libc::MOUNT_ATTR_STRICTATIME,
            nix::mount::MsFlags::MS_STRICTATIME,
        ),
    ] {
        if attrs & attr != 0 {
            flags |= flag;
        }
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|errno| RootfsError::Overlay {
        target: target.to_path_buf(),
        source: io::Error::from(errno),
        detail: if errno == nix::errno::Errno::EINVAL {
            " (idmapped lower layers need Linux >= 5.19)".into()
        } else {
            String::new()
        },
    })
}

/// Whether `path` is the root of a mount.
fn is_mount_point(path: &Path) -> Result<bool, RootfsError> {
    let c_path = cpath(path)?;
    // SAFETY: zeroed statx is a valid out-buffer for statx(2).
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(2) with a NUL-terminated path and a valid out-buffer.
    let ret = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    if ret != 0 {
        return Err(io_err("inspecting", path)(io::Error::last_os_error()));
    }
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(stx.stx_attributes_mask & bit != 0 && stx.stx_attributes & bit != 0)
}

/// Unmount everything stacked on `path`: gently first, detached if busy. Not mounted
/// (or missing) is success.
pub(crate) fn unmount_all(path: &Path) -> Result<(), RootfsError> {
    use nix::errno::Errno;
    use nix::mount::{umount2, MntFlags};
    for _ in 0..32 {
        match umount2(path, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EBUSY) => match umount2(path, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(e) => return Err(io_err("unmounting", path)(io::Error::from(e))),
            },
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(io_err("unmounting", path)(io::Error::from(e))),
        }
    }
    Err(RootfsError::Cleanup {
        path: path.to_path_buf(),
        problem: "still mounted after 32 unmounts".into(),
    })
}

/// Remove what [`mount_rootfs`] set up on `target` and in `staging`, from the paths
/// alone (usable by a fresh process after a crash). Missing pieces are not an error.
/// `target` itself (the bundle's rootfs directory) is kept; `staging` is removed.
pub fn unmount_rootfs(target: &Path, staging: &Path) -> Result<(), RootfsError> {
    unmount_all(target)?;
    let entries = match fs::read_dir(staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("reading", staging)(e)),
    };
    let mut first_error = None;
    for entry in entries {
        let entry = entry.map_err(io_err("reading", staging))?;
        let name = entry.file_name();
        let is_lower = name
            .to_str()
            .and_then(|n| n.strip_prefix("lower-"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_lower {
            continue;
        }
        let dir = entry.path();
        let result =
            unmount_all(&dir).and_then(|()| fs::remove_dir(&dir).map_err(io_err("removing", &dir)));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    fs::remove_dir(staging).map_err(|e| RootfsError::Cleanup {
        path: staging.to_path_buf(),
        problem: format!("cannot remove the staging directory: {e}"),
    })?;
    tracing::debug!(target = %target.display(), "rootfs unmounted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, source: &str, options: &[&str]) -> Vec<RootfsMount> {
        vec![RootfsMount {
            kind: kind.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }]
    }

    #[test]
    fn overlay_options_parse() {
        let p = plan(&m(
            "overlay",
            "overlay",
            &[
                "index=off",
                "lowerdir=/l/2:/l/1",
                "upperdir=/u",
                "workdir=/w",
                "ro",
                "userxattr",
            ],
        ))
        .unwrap();
        assert_eq!(
            p,
            Plan::Overlay {
                lowers: vec!["/l/2".into(), "/l/1".into()],
                upper: Some(("/u".into(), "/w".into())),
                extra: vec![
                    ("index".into(), Some("off".into())),
                    ("userxattr".into(), None)
                ],
                attrs: libc::MOUNT_ATTR_RDONLY,
            }
        );
    }

    #[test]
    fn bind_options_parse() {
        let p = plan(&m("bind", "/snap/fs", &["rbind", "ro"])).unwrap();
        assert_eq!(
            p,
            Plan::Bind {
                source: "/snap/fs".into(),
                recursive: true,
                attrs: libc::MOUNT_ATTR_RDONLY
            }
        );
    }

    #[test]
    fn bad_mounts_say_what_is_wrong() {
        let cases: &[(Vec<RootfsMount>, &str)] = &[
            (vec![], "no rootfs mounts"),
            (
                m("overlay", "overlay", &["upperdir=/u", "workdir=/w"]),
                "no lowerdir",
            ),
            (m("overlay", "overlay", &["lowerdir="]), "empty"),
            (m("overlay", "overlay", &["lowerdir=/a::/b"]), "empty layer"),
            (m("overlay", "overlay", &["lowerdir=a/b"]), "absolute"),
            (m("overlay", "overlay", &["lowerdir=/a/../b"]), "absolute"),
            (
                m("overlay", "overlay", &["lowerdir=/a", "upperdir=/u"]),
                "no workdir",
            ),
            (
                m("overlay", "overlay", &["lowerdir=/a", "frob=1"]),
                "unknown overlay option",
            ),
            (m("bind", "/x", &["rbind", "shared"]), "unknown bind option"),
            (m("bind", "x", &["rbind"]), "absolute"),
            (m("tmpfs", "tmpfs", &[]), "not supported"),
        ];
        for (mounts, expected) in cases {
            let err = plan(mounts).unwrap_err().to_string();
            assert!(err.contains(expected), "{mounts:?}: {err}");
        }
        let two = [m("bind", "/a", &[]), m("bind", "/b", &[])].concat();
        assert!(plan(&two)
            .unwrap_err()
            .to_string()
            .contains("2 rootfs mounts"));
    }
}
