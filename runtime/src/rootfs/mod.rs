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
//!   work dir (EOVERFLOW): this is the combination that works. overlayfs takes private
//!   clones of its layers when it is mounted, so the attached clones (and `staging`) are
//!   removed again right after: the node's mount table keeps one mount per rootfs, as
//!   under runc (every mount left there lengthens each read of mountinfo on the node,
//!   which libcgroups does once per v1 controller for every container).
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
//! be missing or empty) and removed once the overlay is mounted, or by [`unmount_rootfs`]
//! where that failed (or after a crash in between). Put it next to the bundle's rootfs,
//! e.g. `<bundle>/.stockade-rootfs`.
//!
//! Mount propagation: clones and the overlay are attached like any mount under the
//! bundle, so they follow the bundle directory's propagation (the same as runc's shim).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::idrange::IdRange;

mod mount_api;
mod plan;

pub(crate) use mount_api::{attach, idmapped_clone};
use mount_api::{cpath, mount_overlay};
use plan::{plan, Plan};

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
    #[error("idmapped mount of {path} refused ({source}): {why}")]
    IdmapUnsupported {
        path: PathBuf,
        source: io::Error,
        /// What this kernel or filesystem lacks (see [`crate::kernel`]).
        why: String,
    },
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

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Set to `1` to mount overlay with mount(2) and a data string instead of the new mount
/// API (what kernels before 6.8 get anyway); for diagnosis and for testing that path.
pub const LEGACY_MOUNT_ENV: &str = "STOCKADE_ROOTFS_LEGACY_MOUNT";

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
            release_layers(&staged, staging);
            Ok(staged.len())
        }
    }
}

/// Detach the attached layer clones and remove `staging`, once the overlay holds its own
/// clones of them. A failure only leaves them for [`unmount_rootfs`]: it is logged.
fn release_layers(staged: &[PathBuf], staging: &Path) {
    let released = staged
        .iter()
        .try_for_each(|dir| {
            unmount_all(dir).and_then(|()| fs::remove_dir(dir).map_err(io_err("removing", dir)))
        })
        .and_then(|()| fs::remove_dir(staging).map_err(io_err("removing", staging)));
    if let Err(e) = released {
        tracing::warn!(staging = %staging.display(), error = %e, "layer clones kept until the rootfs is unmounted");
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
