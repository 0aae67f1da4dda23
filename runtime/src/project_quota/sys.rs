//! The kernel's project-quota interfaces: a directory's project ID (FS_IOC_FSGETXATTR /
//! FS_IOC_FSSETXATTR) and a project's limits (quotactl_fd, Linux 5.14, which takes any fd
//! on the filesystem instead of its block device's path). Written by hand: neither libc
//! nor rustix wraps fsxattr or quotactl_fd.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct fsxattr` (linux/fs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// _IOR('X', 31, struct fsxattr) and _IOW('X', 32, struct fsxattr).
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
/// New files and directories below get the directory's project ID.
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const PRJQUOTA: libc::c_int = 2;
/// dqb_valid bits: block and inode limits.
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
/// dqb_bhardlimit counts 1 KiB blocks.
const QUOTA_BLOCK: u64 = 1024;

/// Give `dir` project `id`, inherited by everything created below it.
pub fn set_project(dir: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    let mut attr = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one fsxattr into `attr`, which lives for the call.
    if unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            FS_IOC_FSGETXATTR,
            &mut attr as *mut FsXattr,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    attr.projid = id;
    attr.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: FS_IOC_FSSETXATTR only reads the fsxattr `attr` points to.
    if unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSSETXATTR, &attr as *const FsXattr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A project's usage: (bytes, inodes).
pub fn usage(fs: BorrowedFd<'_>, id: u32) -> io::Result<(u64, u64)> {
    let mut q = zeroed_dqblk();
    match quotactl(fs, libc::Q_GETQUOTA, id, &mut q) {
        Ok(()) => Ok((q.dqb_curspace, q.dqb_curinodes)),
        // xfs: no quota record yet, i.e. nothing charged to it.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// Hard limits for project `id` (0 and 0 remove them).
pub fn set_limits(fs: BorrowedFd<'_>, id: u32, bytes: u64, inodes: u64) -> io::Result<()> {
    let mut q = zeroed_dqblk();
    q.dqb_bhardlimit = bytes.div_ceil(QUOTA_BLOCK);
    q.dqb_ihardlimit = inodes;
    q.dqb_valid = QIF_BLIMITS | QIF_ILIMITS;
    quotactl(fs, libc::Q_SETQUOTA, id, &mut q)
}

/// Whether project quotas are on (tracked and enforced) for the filesystem of `fs`.
pub fn project_quotas_on(fs: BorrowedFd<'_>) -> io::Result<()> {
    // struct if_dqinfo: u64, u64, u32, u32.
    let mut info = [0u64; 3];
    let cmd = libc::QCMD(libc::Q_GETINFO, PRJQUOTA);
    // SAFETY: Q_GETINFO writes one if_dqinfo (24 bytes) to the buffer, which has 24.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fs.as_raw_fd(),
            cmd,
            0,
            info.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn quotactl(fs: BorrowedFd<'_>, cmd: libc::c_int, id: u32, q: &mut libc::dqblk) -> io::Result<()> {
    let cmd = libc::QCMD(cmd, PRJQUOTA);
    // SAFETY: Q_GETQUOTA and Q_SETQUOTA read or write one dqblk, which `q` is.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fs.as_raw_fd(),
            cmd,
            id,
            q as *mut libc::dqblk,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn zeroed_dqblk() -> libc::dqblk {
    libc::dqblk {
        dqb_bhardlimit: 0,
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: 0,
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: 0,
    }
}
