//! Staging a container's bind mounts as the hardener planned them
//! ([`crate::hardener::PlannedVolume`]): each source becomes a mount at
//! `<staging>/<index>` (a directory or file the pod's root can reach through the bundle),
//! and the spec's source then points there.
//!
//! - idmapped (the rule): a clone of the source tree (`open_tree(OPEN_TREE_CLONE)`, with
//!   `AT_RECURSIVE` for an rbind) idmapped through the pod's user namespace
//!   (`mount_setattr(MOUNT_ATTR_IDMAP)`) and attached with `move_mount`. With the pod's
//!   mapping (container 0 is host R), a file owned on disk by host ID N appears as N inside,
//!   and what container UID N writes lands on disk as N: the owners runc gives.
//! - plain: a bind mount, for mount propagation (a clone leaves the source's peer group),
//!   and for a filesystem that cannot be idmapped when the plan says to mount it anyway.
//! - sealed (secrets): read-only, nosuid, nodev, noexec set on the staged mount itself, so
//!   the container cannot undo them (flags set from the host are locked in its namespace).
//!
//! Uses rootfs.rs's mount primitives. On error nothing staged is left behind.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{self, FsType};

use crate::hardener::{Mapping, PlannedVolume, ResolvedSources};
use crate::rootfs::{self, RootfsError};
use crate::volume_settings::Unidmappable;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "volume at {destination}: its source {source_path} is on a {fs_type} filesystem, which this \
         kernel cannot idmap{hint} ({cause}); the profile's volumes.unidmappable = \"unmapped\" \
         mounts such volumes without idmapping"
    )]
    Unidmappable {
        destination: PathBuf,
        source_path: PathBuf,
        fs_type: String,
        hint: &'static str,
        cause: io::Error,
    },
    #[error("volume at {destination}: {op} {path}: {cause}")]
    Io {
        destination: PathBuf,
        op: &'static str,
        path: PathBuf,
        cause: String,
    },
}

/// What staging did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Staged {
    pub idmapped: usize,
    pub plain: usize,
    /// Volumes mounted without idmapping because their filesystem cannot be idmapped:
    /// (the volume's position in the plan, its filesystem type).
    pub unmapped: Vec<(usize, String)>,
}

/// A filesystem's name from its statfs magic.
fn fs_type_name(magic: FsType) -> String {
    const NAMES: &[(FsType, &str)] = &[
        (statfs::TMPFS_MAGIC, "tmpfs"),
        (statfs::EXT4_SUPER_MAGIC, "ext4"),
        (statfs::XFS_SUPER_MAGIC, "xfs"),
        (statfs::BTRFS_SUPER_MAGIC, "btrfs"),
        (statfs::NFS_SUPER_MAGIC, "nfs"),
        (statfs::OVERLAYFS_SUPER_MAGIC, "overlay"),
        (statfs::FUSE_SUPER_MAGIC, "fuse"),
        (statfs::SYSFS_MAGIC, "sysfs"),
        (statfs::PROC_SUPER_MAGIC, "proc"),
    ];
    NAMES
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("{magic:?}"))
}

fn fs_type_of(path: &Path) -> String {
    statfs::statfs(path)
        .map(|s| fs_type_name(s.filesystem_type()))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn io_err(v: &PlannedVolume, op: &'static str, path: &Path, cause: impl ToString) -> VolumeError {
    VolumeError::Io {
        destination: v.destination.clone(),
        op,
        path: path.to_path_buf(),
        cause: cause.to_string(),
    }
}

/// The mount point at `<staging>/<index>`: a directory for a directory, a file otherwise.
fn make_target(v: &PlannedVolume, staging: &Path) -> Result<PathBuf, VolumeError> {
    let md = std::fs::metadata(&v.source).map_err(|e| io_err(v, "bind source", &v.source, e))?;
    let target = staging.join(v.index.to_string());
    if md.is_dir() {
        std::fs::create_dir(&target)
    } else {
        std::fs::File::create(&target).map(|_| ())
    }
    .map_err(|e| io_err(v, "creating", &target, e))?;
    Ok(target)
}

const SEALED_ATTRS: u64 = libc::MOUNT_ATTR_RDONLY
    | libc::MOUNT_ATTR_NOSUID
    | libc::MOUNT_ATTR_NODEV
    | libc::MOUNT_ATTR_NOEXEC;

fn plain_bind(v: &PlannedVolume, target: &Path) -> Result<(), VolumeError> {
    let mut flags = MsFlags::MS_BIND;
    if v.recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(&v.source), target, None::<&str>, flags, None::<&str>)
        .map_err(|e| io_err(v, "bind-mounting", &v.source, e))?;
    if v.sealed {
        let sealed = MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(None::<&str>, target, None::<&str>, sealed, None::<&str>)
            .map_err(|e| io_err(v, "sealing", target, e))?;
    }
    Ok(())
}

/// Stage the `n`th volume of the plan at `target`.
fn stage_one(
    n: usize,
    v: &PlannedVolume,
    target: &Path,
    userns: BorrowedFd<'_>,
    staged: &mut Staged,
) -> Result<(), VolumeError> {
    if v.mapping == Mapping::Plain {
        plain_bind(v, target)?;
        staged.plain += 1;
        return Ok(());
    }
    let attrs = if v.sealed { SEALED_ATTRS } else { 0 };
    match rootfs::idmapped_clone(&v.source, v.recursive, attrs, userns) {
        Ok(tree) => {
            rootfs::attach(&tree, target).map_err(|e| io_err(v, "attaching", target, e))?;
            staged.idmapped += 1;
            Ok(())
        }
        Err(RootfsError::IdmapUnsupported { source, .. }) => {
            let fs_type = fs_type_of(&v.source);
            if v.on_unidmappable == Unidmappable::Refuse {
                return Err(VolumeError::Unidmappable {
                    destination: v.destination.clone(),
                    source_path: v.source.clone(),
                    hint: if fs_type == "tmpfs" {
                        " (tmpfs needs Linux >= 6.3)"
                    } else {
                        ""
                    },
                    fs_type,
                    cause: source,
                });
            }
            plain_bind(v, target)?;
            staged.unmapped.push((n, fs_type));
            Ok(())
        }
        Err(e) => Err(io_err(v, "idmapping", &v.source, e)),
    }
}

/// Stage every planned volume under `staging` (created, 0711); on error, unstage all.
/// `userns`: the pod's user namespace, whose mapping the idmapped clones take.
pub fn stage(
    volumes: &[PlannedVolume],
    staging: &Path,
    userns: BorrowedFd<'_>,
) -> Result<Staged, VolumeError> {
    let mut staged = Staged::default();
    if volumes.is_empty() {
        return Ok(staged);
    }
    let result = (|| {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(staging)
            .map_err(|e| io_err(&volumes[0], "creating", staging, e))?;
        for (n, v) in volumes.iter().enumerate() {
            let target = make_target(v, staging)?;
            stage_one(n, v, &target, userns, &mut staged)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(staged),
        Err(e) => {
            if let Err(cleanup) = unstage(staging) {
                tracing::warn!(error = %cleanup, "unstaging after a failed stage");
            }
            Err(e)
        }
    }
}

/// `sources` with their symlinks resolved (those that exist), for the hardener's context.
pub fn resolve(sources: &[PathBuf]) -> ResolvedSources {
    sources
        .iter()
        .filter_map(|s| Some((s.clone(), s.canonicalize().ok()?)))
        .collect()
}

/// Unmount and remove everything staged under `staging`, and the directory (from the path
/// alone: usable after a crash; safe to repeat; nothing there is success).
pub fn unstage(staging: &Path) -> Result<(), RootfsError> {
    let entries = match std::fs::read_dir(staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RootfsError::Io {
                op: "reading",
                path: staging.to_path_buf(),
                source,
            })
        }
    };
    let mut first_error = None;
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = rootfs::unmount_all(&path).and_then(|()| {
            std::fs::remove_dir(&path)
                .or_else(|_| std::fs::remove_file(&path))
                .map_err(|source| RootfsError::Io {
                    op: "removing",
                    path: path.clone(),
                    source,
                })
        });
        if let Err(e) = removed {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    std::fs::remove_dir(staging).map_err(|source| RootfsError::Io {
        op: "removing",
        path: staging.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_names() {
        assert_eq!(fs_type_name(statfs::TMPFS_MAGIC), "tmpfs");
        assert_eq!(fs_type_name(statfs::EXT4_SUPER_MAGIC), "ext4");
        assert!(fs_type_of(Path::new("/proc")).contains("proc"));
    }

    #[test]
    fn unstaging_nothing_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        unstage(&dir.path().join("missing")).unwrap();
        let staging = dir.path().join("staged");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("3"), "").unwrap();
        std::fs::create_dir(staging.join("4")).unwrap();
        unstage(&staging).unwrap();
        assert!(!staging.exists());
    }
}
