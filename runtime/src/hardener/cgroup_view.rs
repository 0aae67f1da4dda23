//! The container's /sys/fs/cgroup on a cgroup v1 node: a tmpfs holding, per hierarchy, a
//! read-only bind of the container's own cgroup there (what runc shows without a cgroup
//! namespace, and what a namespaced mount shows with one).
//!
//! The spec's `cgroup` mount is not left to libcontainer on v1: its v1 cgroup mount looks
//! up `/proc/<own pid>` in the host's /proc before mounting anything, and a container that
//! joins the pod's PID namespace has a PID there that names another process or none, so its
//! Create fails now and then (`Procfs(NotFound("/proc/9"))`). On cgroup v2 libcontainer's
//! mount is kept.

use std::path::{Path, PathBuf};

use stockade_cgroups::{CgroupsPath, V1Hierarchy};

use super::{HardenError, Report};
use crate::oci_spec::runtime::{Linux, Mount, MountBuilder, Spec};

const TMPFS_OPTIONS: [&str; 4] = ["nosuid", "noexec", "nodev", "mode=755"];
const BIND_OPTIONS: [&str; 5] = ["rbind", "ro", "nosuid", "nodev", "noexec"];
/// The `cgroup` mount [`restore_cgroup_mount`] puts back (read-only, as harden_mounts
/// leaves it).
const CGROUP_OPTIONS: [&str; 4] = ["nosuid", "noexec", "nodev", "ro"];

/// Replace each `cgroup` mount of `spec` with the v1 view (no change when `hierarchies` is
/// empty: cgroup v2). Runs after the cgroupsPath is final.
pub(crate) fn emulate_v1(
    spec: &mut Spec,
    linux: &mut Linux,
    hierarchies: &[V1Hierarchy],
    report: &mut Report,
) -> Result<(), HardenError> {
    if hierarchies.is_empty() {
        return Ok(());
    }
    let Some(mounts) = spec.mounts().clone() else {
        return Ok(());
    };
    if !mounts.iter().any(is_cgroup_mount) {
        return Ok(());
    }
    let given = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let own = CgroupsPath::parse(&given)
        .map_err(|e| HardenError::InvalidSpec(format!("linux.cgroupsPath {given:?}: {e}")))?
        .relative();

    let mut out = Vec::with_capacity(mounts.len() + hierarchies.len());
    let mut binds = Vec::new();
    let mut views = Vec::new();
    for m in mounts {
        if !is_cgroup_mount(&m) {
            out.push(m);
            continue;
        }
        let root = m.destination().clone();
        // Same place in the list (the shim's volume plan counts by index); binds at the end.
        out.push(mount(&root, "tmpfs", "tmpfs", &TMPFS_OPTIONS)?);
        for (source, destination) in view(&root, hierarchies, &own) {
            binds.push(mount(
                &destination,
                &source.to_string_lossy(),
                "bind",
                &BIND_OPTIONS,
            )?);
        }
        let mut readonly = linux.readonly_paths().clone().unwrap_or_default();
        let root_text = root.to_string_lossy().into_owned();
        if !readonly.contains(&root_text) {
            readonly.push(root_text);
        }
        linux.set_readonly_paths(Some(readonly));
        views.push(root.display().to_string());
    }
    out.extend(binds);
    spec.set_mounts(Some(out));
    report.change(
        "cgroups",
        format!(
            "{}: the container's own cgroup in each of {} cgroup v1 hierarchies, bound read-only \
             (instead of libcontainer's v1 cgroup mount)",
            views.join(", "),
            hierarchies.len()
        ),
    );
    Ok(())
}

/// Undo [`emulate_v1`] on a spec this hardener already hardened (exec processes are
/// hardened against the container's hardened spec): its binds are not the pod's hostPaths,
/// and the view is made again from the `cgroup` mount, so hardening twice changes nothing.
/// Only mounts exactly as [`emulate_v1`] makes them for this cgroupsPath are taken back.
pub(crate) fn restore_cgroup_mount(spec: &mut Spec, hierarchies: &[V1Hierarchy]) {
    let (Some(mounts), Some(given)) = (
        spec.mounts().clone(),
        spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
    ) else {
        return;
    };
    if hierarchies.is_empty() {
        return;
    }
    let Ok(own) = CgroupsPath::parse(&given.to_string_lossy()) else {
        return;
    };
    let roots: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| is_view_tmpfs(m))
        .map(|m| m.destination().clone())
        .collect();
    let ours: Vec<(PathBuf, PathBuf)> = roots
        .iter()
        .flat_map(|root| view(root, hierarchies, &own.relative()))
        .collect();
    let restored: Vec<Mount> = mounts
        .into_iter()
        .filter(|m| !is_view_bind(m, &ours))
        .map(|m| {
            if is_view_tmpfs(&m) {
                mount(m.destination(), "cgroup", "cgroup", &CGROUP_OPTIONS).unwrap_or(m)
            } else {
                m
            }
        })
        .collect();
    spec.set_mounts(Some(restored));
}

fn has_options(m: &Mount, want: &[&str]) -> bool {
    let have = m.options().clone().unwrap_or_default();
    have.len() == want.len() && want.iter().all(|w| have.iter().any(|h| h == w))
}

fn is_view_tmpfs(m: &Mount) -> bool {
    m.typ().as_deref() == Some("tmpfs") && has_options(m, &TMPFS_OPTIONS)
}

fn is_view_bind(m: &Mount, ours: &[(PathBuf, PathBuf)]) -> bool {
    m.typ().as_deref() == Some("bind")
        && has_options(m, &BIND_OPTIONS)
        && m.source().as_ref().is_some_and(|source| {
            ours.iter()
                .any(|(s, d)| s == source && d == m.destination())
        })
}

fn is_cgroup_mount(m: &Mount) -> bool {
    m.typ().as_deref() == Some("cgroup")
}

/// (source, destination) of each bind: the hierarchy's directory name, and for a
/// comounted one (`cpu,cpuacct`) each controller's name too (runc makes those symlinks).
fn view(root: &Path, hierarchies: &[V1Hierarchy], own: &Path) -> Vec<(PathBuf, PathBuf)> {
    let names: Vec<&str> = hierarchies.iter().filter_map(V1Hierarchy::name).collect();
    let mut out = Vec::new();
    for h in hierarchies {
        let Some(name) = h.name() else {
            continue;
        };
        let cgroup = if h.managed {
            own.to_path_buf()
        } else {
            PathBuf::from(h.inherited.trim_start_matches('/'))
        };
        let source = h.mount_point.join(cgroup);
        out.push((source.clone(), root.join(name)));
        if h.controllers.len() > 1 {
            for alias in &h.controllers {
                if !alias.starts_with("name=") && !names.contains(&alias.as_str()) {
                    out.push((source.clone(), root.join(alias)));
                }
            }
        }
    }
    out
}

fn mount(
    destination: &Path,
    source: &str,
    typ: &str,
    options: &[&str],
) -> Result<Mount, HardenError> {
    MountBuilder::default()
        .destination(destination)
        .source(source)
        .typ(typ)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| HardenError::InvalidSpec(format!("cgroup view mount {destination:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci_spec::runtime::{LinuxBuilder, SpecBuilder};

    fn hierarchy(dir: &str, controllers: &[&str], managed: bool) -> V1Hierarchy {
        V1Hierarchy {
            mount_point: PathBuf::from("/sys/fs/cgroup").join(dir),
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            managed,
            inherited: "/system.slice/containerd.service".into(),
        }
    }

    /// A v1 node: a comounted, a plain and a named hierarchy.
    fn node() -> [V1Hierarchy; 3] {
        [
            hierarchy("cpu,cpuacct", &["cpu", "cpuacct"], true),
            hierarchy("memory", &["memory"], true),
            hierarchy("systemd", &["name=systemd"], false),
        ]
    }

    fn spec() -> (Spec, Linux) {
        let mounts = vec![
            mount(Path::new("/proc"), "proc", "proc", &[]).unwrap(),
            mount(Path::new("/sys/fs/cgroup"), "cgroup", "cgroup", &["ro"]).unwrap(),
            mount(Path::new("/etc/hosts"), "/x/hosts", "bind", &["rbind"]).unwrap(),
        ];
        let linux = LinuxBuilder::default()
            .cgroups_path(PathBuf::from("/kubepods/pod1/c1"))
            .readonly_paths(vec!["/proc/bus".to_string()])
            .build()
            .unwrap();
        let spec = SpecBuilder::default().mounts(mounts).build().unwrap();
        (spec, linux)
    }

    fn summary(spec: &Spec) -> Vec<(String, String, String)> {
        spec.mounts()
            .iter()
            .flatten()
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.typ().clone().unwrap_or_default(),
                    m.source()
                        .as_ref()
                        .map(|s| s.display().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn the_cgroup_mount_becomes_a_tmpfs_with_read_only_binds_of_the_containers_cgroups() {
        let (mut spec, mut linux) = spec();
        let hierarchies = node();
        let mut report = Report::default();
        emulate_v1(&mut spec, &mut linux, &hierarchies, &mut report).unwrap();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            summary(&spec),
            vec![
                s("/proc", "proc", "proc"),
                s("/sys/fs/cgroup", "tmpfs", "tmpfs"),
                s("/etc/hosts", "bind", "/x/hosts"),
                s(
                    "/sys/fs/cgroup/cpu,cpuacct",
                    "bind",
                    "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"
                ),
                s(
                    "/sys/fs/cgroup/cpu",
                    "bind",
                    "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"
                ),
                s(
                    "/sys/fs/cgroup/cpuacct",
                    "bind",
                    "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"
                ),
                s(
                    "/sys/fs/cgroup/memory",
                    "bind",
                    "/sys/fs/cgroup/memory/kubepods/pod1/c1"
                ),
                s(
                    "/sys/fs/cgroup/systemd",
                    "bind",
                    "/sys/fs/cgroup/systemd/system.slice/containerd.service"
                ),
            ]
        );
        for m in spec.mounts().iter().flatten().skip(3) {
            let options = m.options().clone().unwrap_or_default();
            assert!(options.contains(&"ro".to_string()), "{m:?}");
            assert!(options.contains(&"nosuid".to_string()), "{m:?}");
        }
        assert_eq!(
            linux.readonly_paths().clone().unwrap_or_default(),
            vec!["/proc/bus".to_string(), "/sys/fs/cgroup".to_string()]
        );
        assert!(report
            .changes
            .iter()
            .any(|c| c.guard == "cgroups" && c.what.contains("3 cgroup v1 hierarchies")));
    }

    #[test]
    fn a_hardened_view_is_taken_back_and_made_again_the_same() {
        let (mut spec, mut linux) = spec();
        let hierarchies = node();
        emulate_v1(&mut spec, &mut linux, &hierarchies, &mut Report::default()).unwrap();
        let once = summary(&spec);
        spec.set_linux(Some(linux.clone()));
        // A bind the pod asked for itself, into the view's directory, stays a bind.
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            mount(
                Path::new("/sys/fs/cgroup/memory"),
                "/sys/fs/cgroup/memory",
                "bind",
                &BIND_OPTIONS,
            )
            .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        restore_cgroup_mount(&mut spec, &hierarchies);
        let restored = summary(&spec);
        assert_eq!(restored.len(), 4, "{restored:?}");
        assert_eq!(restored[1].1, "cgroup");
        assert_eq!(restored[3].0, "/sys/fs/cgroup/memory");
        emulate_v1(&mut spec, &mut linux, &hierarchies, &mut Report::default()).unwrap();
        let mut again = summary(&spec);
        again.retain(|m| m.2 != "/sys/fs/cgroup/memory");
        assert_eq!(again, once);
    }

    #[test]
    fn cgroup_v2_keeps_the_spec_as_it_is() {
        let (mut spec, mut linux) = spec();
        let before = summary(&spec);
        let mut report = Report::default();
        emulate_v1(&mut spec, &mut linux, &[], &mut report).unwrap();
        assert_eq!(summary(&spec), before);
        assert!(report.changes.is_empty());
        assert_eq!(
            linux.readonly_paths().clone().unwrap_or_default(),
            vec!["/proc/bus".to_string()]
        );
    }

    #[test]
    fn an_unparsable_cgroups_path_is_named() {
        let (mut spec, _) = spec();
        let mut linux = LinuxBuilder::default()
            .cgroups_path(PathBuf::from("a:b"))
            .build()
            .unwrap();
        let err = emulate_v1(
            &mut spec,
            &mut linux,
            &[hierarchy("memory", &["memory"], true)],
            &mut Report::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("linux.cgroupsPath \"a:b\""),
            "{err}"
        );
    }
}
