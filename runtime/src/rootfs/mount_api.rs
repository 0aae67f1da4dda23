//! The mount syscalls: idmapped clones (open_tree + mount_setattr), attaching them
//! (move_mount), and overlay through fsconfig (`lowerdir+`, Linux >= 6.8) or mount(2).
//! rustix wraps all but mount_setattr(2), which is called directly.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    open_tree, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};

use super::{io_err, RootfsError, LEGACY_MOUNT_ENV};
use crate::kernel;

/// The longest mount(2) data string (a page, NUL included).
const MAX_MOUNT_DATA: usize = 4095;

pub(super) fn cpath(path: &Path) -> Result<CString, RootfsError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RootfsError::Invalid(format!("path {} contains a NUL byte", path.display())))
}

/// Why the kernel refused to idmap a clone of `source`, from this node's facts.
fn idmap_refusal(source: &Path) -> String {
    match kernel::NodeFacts::probe(&[source]) {
        Ok(facts) => match facts.dirs.first() {
            Some((_, fs)) => kernel::explain_idmap(facts.kernel, fs, source),
            None => format!("{} cannot be inspected", source.display()),
        },
        Err(e) => format!("the kernel version is unknown: {e}"),
    }
}

/// A detached clone of the tree at `source`, idmapped through `userns` and with `attrs`.
pub(crate) fn idmapped_clone(
    source: &Path,
    recursive: bool,
    attrs: u64,
    userns: BorrowedFd<'_>,
) -> Result<OwnedFd, RootfsError> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = open_tree(CWD, source, flags).map_err(|errno| {
        let e = io::Error::from(errno);
        if errno == rustix::io::Errno::NOSYS {
            RootfsError::IdmapUnsupported {
                path: source.to_path_buf(),
                source: e,
                why: "this kernel has no open_tree(2) (Linux >= 5.2)".into(),
            }
        } else {
            io_err("cloning the mount tree of", source)(e)
        }
    })?;

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
    // rustix has no mount_setattr(2).
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
                    why: idmap_refusal(source),
                }
            }
            _ => io_err("idmapping the clone of", source)(e),
        });
    }
    Ok(tree)
}

/// Attach a detached mount (fd from open_tree or fsmount) at `path`.
pub(crate) fn attach(tree: &OwnedFd, path: &Path) -> Result<(), RootfsError> {
    move_mount(tree, "", CWD, path, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| io_err("attaching a mount at", path)(e.into()))
}

pub(super) fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<&(PathBuf, PathBuf)>,
    extra: &[(String, Option<String>)],
    attrs: u64,
    target: &Path,
) -> Result<(), RootfsError> {
    // Chosen by version, not by trying: before 6.5 overlay parses fsconfig options only at
    // FSCONFIG_CMD_CREATE, so a missing `lowerdir+` shows as a bare EINVAL there.
    let api = match running_kernel() {
        _ if std::env::var_os(LEGACY_MOUNT_ENV).is_some_and(|v| v == "1") => {
            kernel::OverlayApi::Legacy
        }
        Some(k) => kernel::overlay_api(k),
        None => kernel::OverlayApi::LowerdirPlus,
    };
    if api == kernel::OverlayApi::Legacy {
        return mount_overlay_legacy(lowers, upper, extra, attrs, target);
    }
    match mount_overlay_fsconfig(lowers, upper, extra, attrs, target) {
        Err(FsconfigError::LowerdirPlusUnsupported) => {
            tracing::debug!("kernel lacks overlay `lowerdir+`: using mount(2)");
            mount_overlay_legacy(lowers, upper, extra, attrs, target)
        }
        Err(FsconfigError::Failed(e)) => Err(e),
        Ok(()) => Ok(()),
    }
}

fn running_kernel() -> Option<kernel::KernelVersion> {
    let uts = nix::sys::utsname::uname().ok()?;
    kernel::KernelVersion::parse(&uts.release().to_string_lossy())
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
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => {
                out.push_str(": ");
                out.push_str(String::from_utf8_lossy(&buf[..n]).trim_end());
            }
            _ => break,
        }
    }
    out
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
    let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
        return Err(FsconfigError::LowerdirPlusUnsupported);
    };
    let failed = |errno: rustix::io::Errno| {
        FsconfigError::Failed(RootfsError::Overlay {
            target: target.to_path_buf(),
            source: errno.into(),
            detail: fs_context_log(&fs),
        })
    };
    fsconfig_set_string(&fs, "source", "overlay").map_err(failed)?;
    for (i, lower) in lowers.iter().enumerate() {
        if let Err(e) = fsconfig_set_string(&fs, "lowerdir+", lower) {
            if i == 0 && e == rustix::io::Errno::INVAL {
                return Err(FsconfigError::LowerdirPlusUnsupported);
            }
            return Err(failed(e));
        }
    }
    if let Some((upper, work)) = upper {
        fsconfig_set_string(&fs, "upperdir", upper).map_err(failed)?;
        fsconfig_set_string(&fs, "workdir", work).map_err(failed)?;
    }
    for (key, value) in extra {
        match value {
            Some(v) => fsconfig_set_string(&fs, key.as_str(), v.as_str()).map_err(failed)?,
            None => fsconfig_set_flag(&fs, key.as_str()).map_err(failed)?,
        }
    }
    fsconfig_create(&fs).map_err(failed)?;
    let attrs = MountAttrFlags::from_bits_truncate(attrs as u32);
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(failed)?;
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
    let options = |lowers: &[String]| -> Result<String, RootfsError> {
        let mut data = vec![format!("lowerdir={}", lowers.join(":"))];
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
        Ok(data.join(","))
    };
    let paths = lowers
        .iter()
        .map(|p| join(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut data = options(&paths)?;
    // Too long for a page: name each layer by an fd of this process instead (about 17
    // bytes a layer); the fds only need to live until mount(2) has resolved them.
    let mut _held = Vec::new();
    if data.len() > MAX_MOUNT_DATA {
        let mut short = Vec::with_capacity(lowers.len());
        for lower in lowers {
            let fd = rustix::fs::open(
                lower,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| io_err("opening", lower)(e.into()))?;
            short.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            _held.push(fd);
        }
        data = options(&short)?;
    }
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
        detail: match running_kernel() {
            Some(k) if errno == nix::errno::Errno::EINVAL => {
                let facts = kernel::NodeFacts {
                    kernel: k,
                    dirs: Vec::new(),
                };
                let missing: Vec<String> = kernel::check(&facts)
                    .into_iter()
                    .filter(|f| !f.ok)
                    .map(|f| f.detail)
                    .collect();
                if missing.is_empty() {
                    " (see the kernel log: `dmesg | grep overlayfs`)".into()
                } else {
                    format!(" ({})", missing.join("; "))
                }
            }
            _ => String::new(),
        },
    })
}
