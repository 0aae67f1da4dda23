//! Mount destinations resolved inside the container's rootfs, before anything is mounted
//! there: symlinks in a destination are followed as if the rootfs were `/` (a `..` or an
//! absolute target never leaves it), as runc does (securejoin), and the spec is given the
//! symlink-free path. What cannot be mounted is refused naming the mount, the path and why.
//!
//! Decided here, from facts ([`Lookup`]: what an in-root path is); [`crate::destinations_fs`]
//! gathers them from the mounted rootfs.
//!
//! What is an error (runc fails on each too): a symlink loop (more than [`MAX_LINKS`]
//! links), a path component that exists but is not a directory, and proc or sysfs on a
//! destination that is a symlink or not a directory in the image. A symlink aimed out of the
//! rootfs (`/etc/evil -> /../../host/path`) is not: it resolves inside, like every other, and
//! the mount lands in the rootfs (logged with both paths).

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};

/// Links followed in one destination at most (Linux's and securejoin's limit).
pub const MAX_LINKS: usize = 40;

/// What an in-root path (absolute, symlink-free up to its last component) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Dir,
    /// A file, device, socket...: nothing can be resolved through it.
    Other,
    Symlink(PathBuf),
}

/// The facts: what `path` (absolute, inside the rootfs) is, its last component unfollowed.
pub trait Lookup {
    fn entry(&self, path: &Path) -> std::io::Result<Entry>;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error(
        "mounts[{index}] (destination {destination}): more than {MAX_LINKS} symlinks to follow \
         in the image (a symlink loop at {at}): runc refuses it too"
    )]
    Loop {
        index: usize,
        destination: PathBuf,
        at: PathBuf,
    },
    #[error(
        "mounts[{index}] (destination {destination}): {component} in the image is not a \
         directory, so nothing can be mounted below it"
    )]
    NotADirectory {
        index: usize,
        destination: PathBuf,
        component: PathBuf,
    },
    #[error(
        "mounts[{index}] ({fs} at {destination}): {destination} in the image is a symlink (to \
         {target}); {fs} must be mounted on an ordinary directory (runc refuses it too)"
    )]
    SpecialOnSymlink {
        index: usize,
        fs: String,
        destination: PathBuf,
        target: PathBuf,
    },
    #[error(
        "mounts[{index}] ({fs} at {destination}): {destination} in the image is not a \
         directory; {fs} must be mounted on an ordinary directory (runc refuses it too)"
    )]
    SpecialNotDir {
        index: usize,
        fs: String,
        destination: PathBuf,
    },
    #[error(
        "mounts[{index}] (destination {destination}): inspecting {path} in the rootfs: {error}"
    )]
    Io {
        index: usize,
        destination: PathBuf,
        path: PathBuf,
        error: String,
    },
}

/// A mount of the spec, as far as resolving its destination goes.
#[derive(Debug, Clone)]
pub struct MountDest<'a> {
    pub destination: &'a Path,
    /// The mount's filesystem type (`proc`, `sysfs`, `bind`, ...), if the spec names one.
    pub fs: Option<&'a str>,
}

/// A destination the spec must be given instead of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub index: usize,
    pub from: PathBuf,
    pub to: PathBuf,
}

/// Resolve every destination of `mounts` (in spec order) in the rootfs that `lookup` sees.
/// A destination at or below an earlier mount's is resolved only up to that mount: what lies
/// below it is not the image's (libcontainer resolves the rest, in-root, when it mounts).
pub fn plan(
    mounts: &[MountDest<'_>],
    lookup: &dyn Lookup,
) -> Result<Vec<Rewrite>, DestinationError> {
    let mut earlier: Vec<PathBuf> = Vec::new();
    let mut rewrites = Vec::new();
    for (index, m) in mounts.iter().enumerate() {
        // A relative destination is taken from `/`, as libcontainer does.
        let dest = m.destination;
        let resolved = resolve(index, dest, lookup, &earlier)?;
        if let Some(fs @ ("proc" | "sysfs")) = m.fs {
            check_special(index, fs, dest, lookup, &earlier)?;
        }
        if resolved != lexical(dest) {
            rewrites.push(Rewrite {
                index,
                from: dest.to_path_buf(),
                to: resolved.clone(),
            });
        }
        earlier.push(resolved);
    }
    Ok(rewrites)
}

/// `path` with `.`, `..` and repeated separators taken out (as the kernel would in a
/// directory tree without symlinks, `..` stopping at `/`).
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `dest` with its symlinks resolved in the rootfs, securejoin's way: component by
/// component, a link's target put in front of what remains (an absolute one restarting at the
/// rootfs's `/`), `..` never above `/`, missing components kept as they are.
fn resolve(
    index: usize,
    dest: &Path,
    lookup: &dyn Lookup,
    earlier: &[PathBuf],
) -> Result<PathBuf, DestinationError> {
    let mut remaining: VecDeque<PathBuf> = components(dest);
    let mut resolved = PathBuf::from("/");
    let mut links = 0;
    while let Some(c) = remaining.pop_front() {
        if c.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        if below_earlier(&resolved, earlier) {
            // Below an earlier mount: not the image's tree any more.
            resolved.push(c);
            for rest in remaining {
                resolved.push(rest);
            }
            return Ok(lexical(&resolved));
        }
        let candidate = resolved.join(&c);
        let entry = lookup.entry(&candidate).map_err(|e| DestinationError::Io {
            index,
            destination: dest.to_path_buf(),
            path: candidate.clone(),
            error: e.to_string(),
        })?;
        match entry {
            Entry::Symlink(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(DestinationError::Loop {
                        index,
                        destination: dest.to_path_buf(),
                        at: candidate,
                    });
                }
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for t in components(&target).into_iter().rev() {
                    remaining.push_front(t);
                }
            }
            Entry::Other if remaining.iter().any(|r| r.as_os_str() != "..") => {
                return Err(DestinationError::NotADirectory {
                    index,
                    destination: dest.to_path_buf(),
                    component: candidate,
                });
            }
            Entry::Missing | Entry::Dir | Entry::Other => resolved = candidate,
        }
    }
    Ok(resolved)
}

/// proc and sysfs go on an ordinary directory only: their destination itself is looked at
/// unfollowed (the GHSA-fh74-hm69-rqjw attack put a symlink there).
fn check_special(
    index: usize,
    fs: &str,
    dest: &Path,
    lookup: &dyn Lookup,
    earlier: &[PathBuf],
) -> Result<(), DestinationError> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    let Some(name) = dest.file_name() else {
        return Ok(());
    };
    let path = resolve(index, parent, lookup, earlier)?.join(name);
    if below_earlier(&path, earlier) {
        return Ok(());
    }
    let entry = lookup.entry(&path).map_err(|e| DestinationError::Io {
        index,
        destination: dest.to_path_buf(),
        path: path.clone(),
        error: e.to_string(),
    })?;
    match entry {
        Entry::Missing | Entry::Dir => Ok(()),
        Entry::Symlink(target) => Err(DestinationError::SpecialOnSymlink {
            index,
            fs: fs.to_string(),
            destination: dest.to_path_buf(),
            target,
        }),
        Entry::Other => Err(DestinationError::SpecialNotDir {
            index,
            fs: fs.to_string(),
            destination: dest.to_path_buf(),
        }),
    }
}

/// `path` is an earlier mount's destination or below it (a mount on `/` does not count:
/// the rootfs is the image's).
fn below_earlier(path: &Path, earlier: &[PathBuf]) -> bool {
    earlier
        .iter()
        .any(|e| e != Path::new("/") && path.starts_with(e))
}

/// The components of `path` that name something (`..` kept, `.` and `/` dropped).
fn components(path: &Path) -> VecDeque<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "destinations_tests.rs"]
mod tests;
