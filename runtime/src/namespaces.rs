//! Facts about namespaces the hardener cannot gather itself (it does no I/O).

use crate::oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether two namespace files (`/proc/PID/ns/*`, or bind mounts of them) are the same
/// namespace: nsfs gives every namespace one inode.
pub fn same_namespace(a: &Path, b: &Path) -> io::Result<bool> {
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Whether `path` is the network namespace this process runs in (for the shim, which
/// containerd starts in the host's, the host's network namespace).
pub fn is_own_netns(path: &Path) -> io::Result<bool> {
    same_namespace(path, Path::new("/proc/self/ns/net"))
}

/// Whether the network namespace path a spec names is the host's, as far as this process
/// can tell (see [`is_own_netns`]). A path that cannot be read is not the host's: entering
/// it fails later with its own error.
pub fn spec_netns_is_host(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .filter(|n| n.typ() == LinuxNamespaceType::Network)
        .filter_map(|n| n.path().as_deref())
        .any(|p| is_own_netns(p).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_shares_its_own_namespaces() {
        assert!(is_own_netns(Path::new("/proc/self/ns/net")).unwrap());
        let pid = std::process::id();
        assert!(is_own_netns(&Path::new("/proc").join(pid.to_string()).join("ns/net")).unwrap());
        // Different namespace types are different namespaces.
        assert!(!is_own_netns(Path::new("/proc/self/ns/uts")).unwrap());
        assert!(is_own_netns(Path::new("/nonexistent")).is_err());
    }
}
