//! Whether the container's root (an unprivileged host UID of the pod's range) can reach
//! the container's bundle: libcontainer's init runs as that UID when it goes to the rootfs,
//! so a directory on the way without search permission for it (e.g. containerd's root in a
//! 0700 `mktemp -d` directory) would fail it as "failed to prepare rootfs". Checked before
//! anything is mounted, naming the directory, its mode and owner and the UID that must pass.
//!
//! [`check`] decides from stat facts; [`ancestors`] gathers them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One directory on the way: what `stat` says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFacts {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraversalError {
    #[error(
        "{target} is out of reach of the container's root, host UID {uid} (GID {gid}): \
         {dir} (mode {mode:04o}, owner {owner}:{group}) does not let it pass; give that \
         directory search permission for others (chmod o+x, e.g. 0711, as containerd's own \
         directories have) or put containerd's state elsewhere"
    )]
    Blocked {
        target: PathBuf,
        dir: PathBuf,
        mode: u32,
        owner: u32,
        group: u32,
        uid: u32,
        gid: u32,
    },
    #[error("inspecting {path} on the way to {target}: {error}")]
    Io {
        target: PathBuf,
        path: PathBuf,
        error: String,
    },
}

/// Whether `uid`/`gid` (no supplementary groups, no capabilities over these directories:
/// host root's files are not its own) may search every directory of `dirs`, as the kernel's
/// permission check goes: owner bits, else group bits, else others' bits. ACLs are not read.
pub fn check(target: &Path, dirs: &[DirFacts], uid: u32, gid: u32) -> Result<(), TraversalError> {
    for d in dirs {
        let bit = if d.uid == uid {
            0o100
        } else if d.gid == gid {
            0o010
        } else {
            0o001
        };
        if d.mode & bit == 0 {
            return Err(TraversalError::Blocked {
                target: target.to_path_buf(),
                dir: d.path.clone(),
                mode: d.mode & 0o7777,
                owner: d.uid,
                group: d.gid,
                uid,
                gid,
            });
        }
    }
    Ok(())
}

/// The directories from `/` down to `target`'s parent (the ones a lookup of `target`
/// searches), `/` first.
pub fn ancestors(target: &Path) -> Result<Vec<DirFacts>, TraversalError> {
    let mut dirs: Vec<&Path> = target.ancestors().skip(1).collect();
    dirs.reverse();
    dirs.into_iter()
        .map(|p| {
            let md = std::fs::metadata(p).map_err(|e| TraversalError::Io {
                target: target.to_path_buf(),
                path: p.to_path_buf(),
                error: e.to_string(),
            })?;
            Ok(DirFacts {
                path: p.to_path_buf(),
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
            })
        })
        .collect()
}

/// [`ancestors`] then [`check`].
pub fn check_reachable(target: &Path, uid: u32, gid: u32) -> Result<(), TraversalError> {
    check(target, &ancestors(target)?, uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str, mode: u32, uid: u32, gid: u32) -> DirFacts {
        DirFacts {
            path: PathBuf::from(path),
            mode,
            uid,
            gid,
        }
    }

    const U: u32 = 1 << 30;

    #[test]
    fn a_private_temp_dir_blocks_and_is_named() {
        let dirs = [
            dir("/", 0o40755, 0, 0),
            dir("/tmp", 0o41777, 0, 0),
            dir("/tmp/tmp.abc", 0o40700, 0, 0),
            dir("/tmp/tmp.abc/state", 0o40711, 0, 0),
        ];
        let target = Path::new("/tmp/tmp.abc/state/bundle");
        let e = check(target, &dirs, U, U).unwrap_err();
        assert_eq!(
            e,
            TraversalError::Blocked {
                target: target.to_path_buf(),
                dir: PathBuf::from("/tmp/tmp.abc"),
                mode: 0o700,
                owner: 0,
                group: 0,
                uid: U,
                gid: U,
            }
        );
        let text = e.to_string();
        for needle in [
            "/tmp/tmp.abc ",
            "mode 0700",
            "host UID 1073741824",
            "chmod o+x",
        ] {
            assert!(text.contains(needle), "{needle:?} in {text}");
        }
    }

    #[test]
    fn owner_and_group_bits_count_for_their_own() {
        let target = Path::new("/x/y");
        // Others may not, but the range's root group may: passes.
        assert!(check(target, &[dir("/x", 0o710, 0, U)], U, U).is_ok());
        // Owned by the UID, owner bit set, others' not: passes.
        assert!(check(target, &[dir("/x", 0o700, U, 0)], U, U).is_ok());
        // Owned by it without the owner bit: others' bit does not help (as the kernel).
        assert!(check(target, &[dir("/x", 0o601, U, 0)], U, U).is_err());
        // Group without the group bit, others' set: blocked.
        assert!(check(target, &[dir("/x", 0o701, 0, U)], U, U).is_err());
        // containerd's usual 0711.
        assert!(check(target, &[dir("/x", 0o711, 0, 0)], U, U).is_ok());
    }

    #[test]
    fn gathers_from_the_root_down() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("a/b");
        std::fs::create_dir_all(t.path().join("a")).unwrap();
        let dirs = ancestors(&target).unwrap();
        assert_eq!(dirs[0].path, Path::new("/"));
        assert_eq!(dirs.last().unwrap().path, t.path().join("a"));
        let missing = ancestors(&t.path().join("none/b")).unwrap_err();
        assert!(missing.to_string().contains("none"));
    }
}
