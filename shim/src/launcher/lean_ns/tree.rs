//! The mount work behind the kept namespace: making it from a copy of the node's, and
//! lending it one step's paths from the node's namespace and taking them back.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rustix::fs::{FileType, CWD};
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

/// Where the old root goes while the namespace's own root takes its place.
const OLD_ROOT: &str = ".stockade-node-root";

/// A detached copy of a path's mounts, taken with `open_tree`.
pub(super) struct Tree {
    path: PathBuf,
    fd: OwnedFd,
    is_dir: bool,
}

/// Copies of `paths` (each with what is mounted under it) in the calling process's
/// namespace; an absent path is skipped: absent here means absent for libcontainer too,
/// which then says so itself.
pub(super) fn clone_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Tree>> {
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::AT_RECURSIVE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    let mut trees = Vec::with_capacity(paths.len());
    for path in paths {
        let fd = match open_tree(CWD, path, flags) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(anyhow!("cloning {}: {e}", path.display())),
        };
        let is_dir = rustix::fs::fstat(&fd)
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            .with_context(|| format!("inspecting {}", path.display()))?;
        trees.push(Tree {
            path: path.clone(),
            fd,
            is_dir,
        });
    }
    Ok(trees)
}

fn make_slave(at: &Path) -> anyhow::Result<()> {
    mount(
        None::<&str>,
        at,
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .with_context(|| format!("making {} a slave of the node's mounts", at.display()))
}

/// Turns the calling process's fresh copy of the node's namespace into one holding only
/// `paths`, at their paths, on an empty tmpfs root; returns how many were there to keep.
pub(super) fn make(paths: &[PathBuf]) -> anyhow::Result<usize> {
    // First: nothing done here may reach the node.
    make_slave(Path::new("/"))?;
    // Copies of what is kept, taken before the tmpfs covers any of it.
    let trees = clone_all(paths)?;
    let top = trees
        .iter()
        .find(|t| t.is_dir)
        .map(|t| t.path.clone())
        .ok_or_else(|| anyhow!("no directory to keep"))?;
    mount(
        Some("tmpfs"),
        &top,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .with_context(|| format!("mounting the namespace's root at {}", top.display()))?;
    let old = top.join(OLD_ROOT);
    std::fs::create_dir(&old).with_context(|| format!("creating {}", old.display()))?;
    nix::unistd::pivot_root(&top, &old).context("pivoting into the namespace's root")?;
    std::env::set_current_dir("/").context("entering the namespace's root")?;
    let old = Path::new("/").join(OLD_ROOT);
    umount2(&old, MntFlags::MNT_DETACH).context("detaching the node's mounts")?;
    std::fs::remove_dir(&old).with_context(|| format!("removing {}", old.display()))?;
    // The copies are attached as any step's paths are, but for good: never taken back.
    let mut kept = Lent::default();
    kept.lend(trees)?;
    Ok(kept.count())
}

fn make_point(at: &Path, is_dir: bool) -> anyhow::Result<()> {
    if is_dir {
        std::fs::create_dir(at)
    } else {
        File::create(at).map(drop)
    }
    .with_context(|| format!("creating {}", at.display()))
}

fn attach(t: &Tree, at: &Path) -> anyhow::Result<()> {
    move_mount(&t.fd, "", CWD, at, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .with_context(|| format!("attaching {} at {}", t.path.display(), at.display()))
}

/// What one step lent the kept namespace: the mounts attached and the mount points
/// created for them, in order, so that they can be taken back.
#[derive(Default)]
pub(super) struct Lent {
    attached: Vec<PathBuf>,
    made: Vec<(PathBuf, bool)>,
}

impl Lent {
    /// In the kept namespace: attaches each of `trees` at its path, making the path and
    /// any missing parent on the namespace's tmpfs root. Each tree is made a slave of the
    /// node's mounts it copies before anything else happens: it came from the node's
    /// namespace as their peer, and nothing done here may reach the node. On an error,
    /// what was lent so far is in `self`.
    pub(super) fn lend(&mut self, trees: Vec<Tree>) -> anyhow::Result<()> {
        for t in trees {
            self.make_missing(&t.path, t.is_dir)?;
            attach(&t, &t.path)?;
            self.attached.push(t.path.clone());
            make_slave(&t.path)?;
        }
        Ok(())
    }

    /// Makes `path` (a directory or a file) and any parent that is not there yet,
    /// recording each for [`Lent::take_back`].
    fn make_missing(&mut self, path: &Path, is_dir: bool) -> anyhow::Result<()> {
        let mut at = PathBuf::from("/");
        let parts: Vec<&std::ffi::OsStr> = path.iter().skip(1).collect();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let last = i + 1 == parts.len();
            match std::fs::symlink_metadata(&at) {
                Ok(m) if last || m.is_dir() => {}
                Ok(_) => return Err(anyhow!("{} is not a directory here", at.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let dir = !last || is_dir;
                    make_point(&at, dir)?;
                    self.made.push((at.clone(), dir));
                }
                Err(e) => return Err(anyhow!("inspecting {}: {e}", at.display())),
            }
        }
        Ok(())
    }

    pub(super) fn count(&self) -> usize {
        self.attached.len()
    }

    /// Detaches what was lent and removes the mount points made for it, newest first:
    /// the namespace is as before the step.
    pub(super) fn take_back(self) -> anyhow::Result<()> {
        for at in self.attached.iter().rev() {
            umount2(at, MntFlags::MNT_DETACH)
                .with_context(|| format!("detaching {}", at.display()))?;
        }
        for (at, is_dir) in self.made.iter().rev() {
            if *is_dir {
                std::fs::remove_dir(at)
            } else {
                std::fs::remove_file(at)
            }
            .with_context(|| format!("removing {}", at.display()))?;
        }
        Ok(())
    }
}
