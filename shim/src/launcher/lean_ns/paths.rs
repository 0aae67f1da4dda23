//! What a step's mount namespace must hold: the paths libcontainer and libcgroups touch
//! to create, exec into, signal or delete a container.

use std::path::{Component, Path, PathBuf};

use stockade_runtime::oci_spec::runtime::Spec;

/// Always there: libcontainer and libcgroups read /proc and /sys (the cgroup mounts), the
/// init binds device nodes from /dev; the cgroup driver's systemd reaches it over these
/// sockets (absent on a node without systemd, then skipped).
const ALWAYS: [&str; 5] = ["/proc", "/sys", "/dev", "/run/systemd", "/run/dbus"];

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

/// The paths of `needed` that the kept namespace's [`ALWAYS`] does not already hold
/// (outermost only), or None when one of them holds part of it (a hostPath of `/run`, say):
/// such a step runs in the node's namespace.
pub(super) fn beyond_always(needed: &[PathBuf]) -> Option<Vec<PathBuf>> {
    let always: Vec<&Path> = ALWAYS.iter().map(Path::new).collect();
    let mut extra = Vec::new();
    for p in needed {
        if !p.is_absolute() || always.iter().any(|a| a.starts_with(p) && a != p) {
            return None;
        }
        if !always.iter().any(|a| p.starts_with(a)) {
            extra.push(p.clone());
        }
    }
    Some(outermost(extra))
}

/// The paths every namespace of this kind holds.
pub(super) fn always() -> Vec<PathBuf> {
    outermost(ALWAYS.iter().map(PathBuf::from).collect())
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
    fn beyond_always_keeps_only_what_the_kept_namespace_lacks() {
        let needed = for_container(
            Path::new("/run/stockade/k8s.io"),
            &[
                Path::new("/b"),
                Path::new("/proc/42/ns/net"),
                Path::new("/dev/shm/x"),
                Path::new("/run/systemd-other"),
            ],
        );
        let want: Vec<PathBuf> = ["/b", "/run/stockade/k8s.io", "/run/systemd-other"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(beyond_always(&needed), Some(want));
        assert!(always().iter().all(|a| a.is_absolute()));
    }

    #[test]
    fn a_path_over_part_of_the_kept_namespace_or_a_relative_one_is_refused() {
        for p in ["/", "/run", "relative/x"] {
            let needed = for_container(Path::new("/r"), &[Path::new(p)]);
            assert_eq!(beyond_always(&needed), None, "{p}");
        }
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
