//! A small mount namespace for libcontainer's create.
//!
//! Creating one container reads the whole of /proc/self/mountinfo about ten times:
//! libcgroups' v1 manager walks it to the end once for every controller the node has not
//! mounted, in the zygote and again in libcontainer's intermediate process, and the init
//! reads it twice after copying the zygote's mount namespace. With 250 pods the node's
//! table holds a thousand mounts, most of them other pods' overlays, whose options the
//! kernel escapes character by character on every read: that is where start latency grew
//! with the pod count. So the zygote creates each container in a namespace of its own that
//! holds only what creating it touches (the bundle, libcontainer's state, /proc, /sys, /dev,
//! the namespaces and mount sources the spec names, the console socket, systemd's and
//! D-Bus's sockets), at the same paths, and returns to the node's namespace afterwards.
//!
//! The namespace is made a slave before anything changes in it: nothing done there reaches
//! the node, and mounts the node adds later still propagate into the container (volumes
//! with HostToContainer propagation).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, Context};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rustix::fs::{FileType, CWD};
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
use stockade_runtime::oci_spec::runtime::Spec;

/// Always there: libcontainer and libcgroups read /proc and /sys (the cgroup mounts), the
/// init binds device nodes from /dev; the cgroup driver's systemd reaches it over these
/// sockets (absent on a node without systemd, then skipped).
const ALWAYS: [&str; 5] = ["/proc", "/sys", "/dev", "/run/systemd", "/run/dbus"];

/// Where the old root goes while the namespace's own root takes its place.
const OLD_ROOT: &str = ".stockade-node-root";

/// The paths creating the container reads, outermost only, or None when the spec may
/// reach paths this cannot list (hooks run programs of the node; a relative path with
/// `..` could leave what is listed): then the container is created in the node's
/// namespace, as before.
pub fn needed_paths(
    spec: &Spec,
    bundle: &Path,
    root: &Path,
    netns: Option<&Path>,
    console_socket: Option<&Path>,
) -> Option<Vec<PathBuf>> {
    if spec.hooks().is_some() {
        return None;
    }
    let mut paths = vec![bundle.to_path_buf()];
    paths.extend(netns.map(Path::to_path_buf));
    paths.extend(console_socket.map(Path::to_path_buf));
    if let Some(r) = spec.root() {
        paths.push(bundle.join(r.path()));
    }
    for m in spec.mounts().iter().flatten() {
        if let Some(source) = m.source() {
            // A source that is no path (proc, tmpfs, "none") is mounted from nothing.
            if source.is_absolute() || source.components().count() > 1 {
                paths.push(bundle.join(source));
            }
        }
    }
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone());
    for ns in namespaces.iter().flatten() {
        if let Some(p) = ns.path() {
            paths.push(bundle.join(p));
        }
    }
    if paths
        .iter()
        .any(|p| p.components().any(|c| c == Component::ParentDir))
    {
        return None;
    }
    let extra: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    Some(for_container(root, &extra))
}

/// Sorted, without duplicates and without any path under another one of them.
fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        // Sorted: a path's ancestors come before it. starts_with compares components.
        if out.iter().any(|kept| p.starts_with(kept)) {
            continue;
        }
        out.push(p);
    }
    out
}

/// What every call touches ([`ALWAYS`] and libcontainer's state under `root`) plus
/// `extra`, outermost only: for an existing container nothing else but, for an exec, the
/// bundle, the process file and the console socket; for a create, what [`needed_paths`]
/// lists.
pub fn for_container(root: &Path, extra: &[&Path]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = ALWAYS.iter().map(PathBuf::from).collect();
    paths.push(root.to_path_buf());
    paths.extend(extra.iter().map(|p| p.to_path_buf()));
    outermost(paths)
}

/// Runs `f` in a new mount namespace holding only `needed` (at their paths), then returns
/// the calling process to its own namespace. The process must be single-threaded. Where
/// the namespace cannot be made, `f` runs in the process's own namespace: this only saves
/// time, it changes nothing `f` does.
pub fn run_in<T>(
    op: &str,
    needed: &[PathBuf],
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let Ok(node) = File::open("/proc/thread-self/ns/mnt") else {
        return f();
    };
    let cwd = std::env::current_dir().ok();
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
        tracing::debug!(error = %e, "no mount namespace of its own (threads?)");
        return f();
    }
    match build(needed) {
        Ok(kept) => {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let mounts = std::fs::read_to_string("/proc/self/mountinfo")
                    .map(|t| t.lines().count())
                    .unwrap_or(0);
                tracing::debug!(op, kept, mounts, "in a mount namespace of its own");
            }
        }
        Err(e) => {
            tracing::warn!(op, error = %format!("{e:#}"), "working in the node's mount namespace instead");
            return_to(&node, cwd.as_deref());
            return f();
        }
    }
    let result = f();
    return_to(&node, cwd.as_deref());
    result
}

fn return_to(node: &File, cwd: Option<&Path>) {
    if let Err(e) = setns(node, CloneFlags::CLONE_NEWNS) {
        // Never serve another request from the wrong namespace.
        tracing::error!(error = %e, "cannot return to the zygote's mount namespace");
        std::process::exit(1);
    }
    if let Some(cwd) = cwd {
        let _ = std::env::set_current_dir(cwd);
    }
}

/// Turns the fresh copy of the node's namespace into one holding only `needed`; returns
/// how many of them were there to keep.
fn build(needed: &[PathBuf]) -> anyhow::Result<usize> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making the create's mount namespace a slave of the node's")?;
    // Copies of what is kept, taken before anything covers it.
    let mut trees: Vec<(&Path, OwnedFd, bool)> = Vec::new();
    for path in needed {
        let flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        let tree = match open_tree(CWD, path, flags) {
            Ok(tree) => tree,
            // Absent here means absent for libcontainer too, which then says so itself.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(anyhow!("cloning {}: {e}", path.display())),
        };
        let is_dir = rustix::fs::fstat(&tree)
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            .with_context(|| format!("inspecting {}", path.display()))?;
        trees.push((path, tree, is_dir));
    }
    // The new root: a tmpfs over the first kept directory (it is held as a tree above).
    let top = trees
        .iter()
        .find(|(_, _, is_dir)| *is_dir)
        .map(|(p, _, _)| p.to_path_buf())
        .ok_or_else(|| anyhow!("no directory to keep"))?;
    mount(
        Some("tmpfs"),
        &top,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .with_context(|| format!("mounting the create's root at {}", top.display()))?;
    for (path, tree, is_dir) in &trees {
        let at = top.join(path.strip_prefix("/").unwrap_or(path));
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        if *is_dir {
            std::fs::create_dir(&at)
        } else {
            File::create(&at).map(drop)
        }
        .with_context(|| format!("creating {}", at.display()))?;
        move_mount(tree, "", CWD, &at, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
            .with_context(|| format!("attaching {} at {}", path.display(), at.display()))?;
    }
    let old = top.join(OLD_ROOT);
    std::fs::create_dir(&old).with_context(|| format!("creating {}", old.display()))?;
    nix::unistd::pivot_root(&top, &old).context("pivoting into the create's root")?;
    std::env::set_current_dir("/").context("entering the create's root")?;
    let old = Path::new("/").join(OLD_ROOT);
    umount2(&old, MntFlags::MNT_DETACH).context("detaching the node's mounts")?;
    std::fs::remove_dir(&old).with_context(|| format!("removing {}", old.display()))?;
    Ok(trees.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn lists_what_the_spec_names_outermost_only() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "mounts":[
              {"destination":"/proc","type":"proc","source":"proc"},
              {"destination":"/data","type":"bind","source":"/var/lib/kubelet/pods/p/volumes/v"},
              {"destination":"/etc/hosts","type":"bind","source":"/var/lib/kubelet/pods/p/etc-hosts"},
              {"destination":"/x","type":"bind","source":"/bundle/.stockade-binds/0"},
              {"destination":"/dev/shm","type":"bind","source":"/run/c/sandboxes/s/shm"}],
            "linux":{"namespaces":[{"type":"user","path":"/proc/42/ns/user"},{"type":"mount"}]}}"#,
        );
        let got = needed_paths(
            &s,
            Path::new("/bundle"),
            Path::new("/run/stockade/k8s.io"),
            Some(Path::new("/run/netns/cni-1")),
            None,
        )
        .unwrap();
        let want: Vec<PathBuf> = [
            "/bundle",
            "/dev",
            "/proc",
            "/run/c/sandboxes/s/shm",
            "/run/dbus",
            "/run/netns/cni-1",
            "/run/stockade/k8s.io",
            "/run/systemd",
            "/sys",
            "/var/lib/kubelet/pods/p/etc-hosts",
            "/var/lib/kubelet/pods/p/volumes/v",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn hooks_or_parent_components_keep_the_node_namespace() {
        let hooks =
            spec(r#"{"ociVersion":"1.0.2","hooks":{"createRuntime":[{"path":"/usr/bin/hook"}]}}"#);
        assert_eq!(
            needed_paths(&hooks, Path::new("/b"), Path::new("/r"), None, None),
            None
        );
        let dotdot = spec(
            r#"{"ociVersion":"1.0.2","mounts":[{"destination":"/d","type":"bind","source":"../../etc"}]}"#,
        );
        assert_eq!(
            needed_paths(&dotdot, Path::new("/b"), Path::new("/r"), None, None),
            None
        );
    }

    #[test]
    fn an_existing_container_needs_its_state_and_extras() {
        let got = for_container(
            Path::new("/run/stockade/k8s.io"),
            &[Path::new("/b/exec.json"), Path::new("/b")],
        );
        assert!(got.contains(&PathBuf::from("/b")));
        assert!(!got.contains(&PathBuf::from("/b/exec.json")));
        assert!(got.contains(&PathBuf::from("/run/stockade/k8s.io")));
        assert!(got.contains(&PathBuf::from("/proc")));
    }

    #[test]
    fn outermost_drops_descendants_not_prefix_siblings() {
        let got = outermost(
            [
                "/run/a/b", "/run/a", "/run/ab", "/run/a", "/dev/pts", "/dev",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        );
        let want: Vec<PathBuf> = ["/dev", "/run/a", "/run/ab"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }
}
