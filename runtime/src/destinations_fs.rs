//! The facts [`crate::destinations`] decides on, read from a mounted rootfs through
//! libpathrs (openat2 `RESOLVE_IN_ROOT` where the kernel has it): every lookup stays inside
//! the rootfs, whatever its symlinks say.

use std::path::{Path, PathBuf};

use crate::destinations::{self, DestinationError, Entry, Lookup, MountDest, Rewrite};
use crate::oci_spec::runtime::Spec;

/// A rootfs opened as a [`pathrs::Root`].
pub struct RootLookup {
    root: pathrs::Root,
}

impl RootLookup {
    pub fn open(rootfs: &Path) -> std::io::Result<RootLookup> {
        let root = pathrs::Root::open(rootfs).map_err(|e| {
            std::io::Error::other(format!("opening the rootfs {}: {e}", rootfs.display()))
        })?;
        Ok(RootLookup { root })
    }
}

fn errno(e: &pathrs::error::Error) -> Option<i32> {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(n) => n,
        _ => None,
    }
}

impl Lookup for RootLookup {
    fn entry(&self, path: &Path) -> std::io::Result<Entry> {
        let handle = match self.root.resolve_nofollow(path) {
            Ok(h) => h,
            Err(e) if errno(&e) == Some(libc::ENOENT) => return Ok(Entry::Missing),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        let st = rustix::fs::fstat(&handle)?;
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        Ok(match kind {
            rustix::fs::FileType::Directory => Entry::Dir,
            rustix::fs::FileType::Symlink => Entry::Symlink(
                self.root
                    .readlink(path)
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            ),
            _ => Entry::Other,
        })
    }
}

/// Resolve the spec's mount destinations in `rootfs` (mounted, nothing mounted in it yet)
/// and give the spec the resolved ones; returns what changed.
pub fn resolve_spec(spec: &mut Spec, rootfs: &Path) -> Result<Vec<Rewrite>, DestinationError> {
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(Vec::new());
    };
    let lookup = RootLookup::open(rootfs).map_err(|e| DestinationError::Io {
        index: 0,
        destination: PathBuf::from("/"),
        path: rootfs.to_path_buf(),
        error: e.to_string(),
    })?;
    let dests: Vec<MountDest<'_>> = mounts
        .iter()
        .map(|m| MountDest {
            destination: m.destination(),
            fs: m.typ().as_deref(),
        })
        .collect();
    let rewrites = destinations::plan(&dests, &lookup)?;
    for r in &rewrites {
        if let Some(m) = mounts.get_mut(r.index) {
            m.set_destination(r.to.clone());
        }
    }
    spec.set_mounts(Some(mounts));
    Ok(rewrites)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// The real lookup on a directory tree: links read, not followed, never out of it.
    #[test]
    fn reads_a_tree_without_leaving_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("var/data")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        symlink("/var/data", root.join("data")).unwrap();
        // Outside the rootfs, next to it: in-root resolution never reaches it.
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        symlink("../outside", root.join("up")).unwrap();
        let l = RootLookup::open(&root).unwrap();
        assert_eq!(l.entry(Path::new("/var/data")).unwrap(), Entry::Dir);
        assert_eq!(l.entry(Path::new("/file")).unwrap(), Entry::Other);
        assert_eq!(l.entry(Path::new("/none")).unwrap(), Entry::Missing);
        assert_eq!(
            l.entry(Path::new("/data")).unwrap(),
            Entry::Symlink(PathBuf::from("/var/data"))
        );
        assert_eq!(l.entry(Path::new("/up/x")).unwrap(), Entry::Missing);

        let mut spec = Spec::default();
        let mut m = crate::oci_spec::runtime::Mount::default();
        m.set_destination(PathBuf::from("/data/x"));
        m.set_typ(Some("bind".into()));
        let mut n = m.clone();
        n.set_destination(PathBuf::from("/up/y"));
        spec.set_mounts(Some(vec![m, n]));
        let rewrites = resolve_spec(&mut spec, &root).unwrap();
        assert_eq!(rewrites.len(), 2);
        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        assert_eq!(
            dests,
            [PathBuf::from("/var/data/x"), PathBuf::from("/outside/y")]
        );
    }
}
