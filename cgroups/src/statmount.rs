//! The cgroup mounts under the cgroup root, asked of the kernel one mount at a time.
//!
//! /proc/self/mountinfo is formatted for every mount of the node, each overlay's options
//! escaped character by character: with 250 pods it is a thousand lines, and reading it
//! cost every shim about 8 ms as it started, on the path of RunPodSandbox. statmount(2)
//! (Linux 6.8; a mount's filesystem options since 6.11) describes one mount: here it is
//! asked about the few directories under the root only, each found by statx's unique
//! mount ID (6.8). Where the kernel lacks any of that, [`under`] says so and the caller
//! reads mountinfo as before.
//!
//! No crate wraps statmount (rustix and nix do not), so the call is made here, with the
//! kernel's structs as linux-raw-sys generates them from its headers.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use linux_raw_sys::general::{
    __NR_statmount, mnt_id_req, statmount, CGROUP_SUPER_MAGIC, MNT_ID_REQ_SIZE_VER0,
    STATMOUNT_FS_TYPE, STATMOUNT_MNT_BASIC, STATMOUNT_MNT_OPTS, STATMOUNT_MNT_POINT,
    STATMOUNT_MNT_ROOT, STATMOUNT_SB_BASIC, STATX_MNT_ID_UNIQUE,
};
use procfs::process::{MountInfo, MountInfos};
use rustix::fs::{statx, AtFlags, StatxFlags, CWD};

/// Room for a cgroup mount's strings (its path, root, type and controllers).
const STRINGS: usize = 4096;

/// The cgroup and cgroup2 mounts directly under `root` (the mounts at its entries; not
/// the root itself, not deeper mounts), as [`describe`] gives them. None where the kernel
/// cannot answer this way (before 6.11) or an entry cannot be asked about: the caller
/// then reads mountinfo.
pub(crate) fn under(root: &Path) -> Option<MountInfos> {
    let mut infos = Vec::new();
    for entry in std::fs::read_dir(root).ok()? {
        let entry = entry.ok()?;
        // Symlinks (`cpu` -> `cpu,cpuacct`) name a mount already listed at its target.
        if !entry.file_type().ok()?.is_dir() {
            continue;
        }
        let path = entry.path();
        let info = describe(unique_mount_id(&path)?)?;
        // Not a plain directory of the root's tmpfs, nor another filesystem.
        if info.mount_point == path && matches!(info.fs_type.as_str(), "cgroup" | "cgroup2") {
            infos.push(info);
        }
    }
    infos.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    Some(MountInfos(infos))
}

/// The 64-bit ID of the mount `path` is on (statx, Linux 6.8); None where the kernel does
/// not give it.
fn unique_mount_id(path: &Path) -> Option<u64> {
    // rustix names STATX_MNT_ID but not its unique form (6.8); the bit is passed as is.
    let unique = StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE);
    let stx = statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
        unique,
    )
    .ok()?;
    (stx.stx_mask & STATX_MNT_ID_UNIQUE != 0).then_some(stx.stx_mnt_id)
}

/// statmount(2) of one mount, as mountinfo would list it with the fields the host's
/// readers use (type, mount point, root, super options; no per-mount options or
/// propagation): None where the call or any of the fields asked for is not supported.
fn describe(id: u64) -> Option<MountInfo> {
    let want = STATMOUNT_SB_BASIC
        | STATMOUNT_MNT_BASIC
        | STATMOUNT_MNT_ROOT
        | STATMOUNT_MNT_POINT
        | STATMOUNT_FS_TYPE
        | STATMOUNT_MNT_OPTS;
    let req = mnt_id_req {
        size: MNT_ID_REQ_SIZE_VER0,
        spare: 0,
        mnt_id: id,
        param: u64::from(want),
        mnt_ns_id: 0,
    };
    let head = std::mem::size_of::<statmount>();
    // u64 words: the buffer is aligned for the struct at its start.
    let mut buf = vec![0u64; (head + STRINGS).div_ceil(8)];
    let len = buf.len() * 8;
    // SAFETY: req is a mnt_id_req whose first MNT_ID_REQ_SIZE_VER0 bytes the kernel reads;
    // buf is `len` writable bytes the kernel fills with a statmount and its strings.
    let rc = unsafe {
        libc::syscall(
            libc::c_long::from(__NR_statmount),
            &req as *const mnt_id_req,
            buf.as_mut_ptr(),
            len,
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: buf starts with the statmount the kernel wrote, aligned (u64 words) and
    // `head` bytes long at least.
    let sm: statmount = unsafe { std::ptr::read(buf.as_ptr().cast::<statmount>()) };
    let required = u64::from(want & !STATMOUNT_MNT_OPTS);
    if sm.mask & required != required {
        return None;
    }
    // SAFETY: the kernel wrote at most `len` bytes; viewing the buffer as bytes is sound.
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
    let strings = bytes.get(head..)?;
    let text = |offset: u32| -> Option<&[u8]> {
        let tail = strings.get(offset as usize..)?;
        Some(&tail[..tail.iter().position(|&b| b == 0)?])
    };
    // The options are left out where a filesystem shows none, and by kernels before 6.11.
    // A v1 hierarchy always shows its controllers, so without them the kernel is too old.
    let has_options = sm.mask & u64::from(STATMOUNT_MNT_OPTS) != 0;
    if sm.sb_magic == u64::from(CGROUP_SUPER_MAGIC) && !has_options {
        return None;
    }
    let super_options = match has_options {
        true => String::from_utf8_lossy(text(sm.mnt_opts)?)
            .split(',')
            .filter(|o| !o.is_empty())
            .map(|o| match o.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (o.to_string(), None),
            })
            .collect(),
        false => HashMap::new(),
    };
    Some(MountInfo {
        mnt_id: i32::try_from(sm.mnt_id_old).ok()?,
        pid: i32::try_from(sm.mnt_parent_id_old).ok()?,
        majmin: format!("{}:{}", sm.sb_dev_major, sm.sb_dev_minor),
        root: String::from_utf8_lossy(text(sm.mnt_root)?).into_owned(),
        mount_point: PathBuf::from(std::ffi::OsStr::from_bytes(text(sm.mnt_point)?)),
        mount_options: HashMap::new(),
        opt_fields: Vec::new(),
        fs_type: String::from_utf8_lossy(text(sm.fs_type)?).into_owned(),
        mount_source: None,
        super_options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_mountinfo(root: &Path) -> Vec<(PathBuf, String, Vec<String>)> {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut out: Vec<_> = crate::host::cgroup_mounts(&table)
            .unwrap()
            .into_iter()
            .filter(|i| i.mount_point.parent() == Some(root))
            .map(|i| summary(&i))
            .collect();
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    fn summary(i: &MountInfo) -> (PathBuf, String, Vec<String>) {
        let mut opts: Vec<String> = i
            .super_options
            .iter()
            .filter(|(k, _)| *k != "rw" && *k != "ro")
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        opts.sort();
        (i.mount_point.clone(), i.fs_type.clone(), opts)
    }

    #[test]
    fn statmount_lists_what_mountinfo_lists_under_the_cgroup_root() {
        let root = Path::new("/sys/fs/cgroup");
        let Some(infos) = under(root) else {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            eprintln!("SKIPPED: statmount with mount options is not available on {release}");
            return;
        };
        let mut got: Vec<_> = infos.into_iter().map(|i| summary(&i)).collect();
        got.sort();
        // On pure v2 the root itself is the mount: nothing under it.
        assert_eq!(got, from_mountinfo(root));
    }

    #[test]
    fn a_missing_root_gives_no_answer() {
        assert!(under(Path::new("/nonexistent/cgroup-root")).is_none());
    }
}
