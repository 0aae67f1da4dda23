//! The node's cgroup v1 hierarchies as a container sees them: where each is mounted, which
//! controllers it holds, and which cgroup of it a new container ends up in.
//!
//! The shim gives containers a view of these (bind mounts of their own cgroup in each
//! hierarchy) instead of letting libcontainer 0.7 mount them: its v1 cgroup mount looks up
//! `/proc/<its own pid>` in the host's /proc, which names another (or no) process when the
//! container joins the pod's PID namespace.

use std::path::{Path, PathBuf};

use libcgroups::v1::ControllerType;
use procfs::process::MountInfos;
use procfs::ProcessCGroup;

use crate::host::unescape_mountinfo;

/// One v1 hierarchy (a `cgroup` mount under the cgroup root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Where the host mounts it, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    pub mount_point: PathBuf,
    /// Its controllers (`cpu`, `cpuacct`), or `name=systemd` for a named hierarchy.
    pub controllers: Vec<String>,
    /// Whether libcgroups moves a container into the container's own cgroup here (it
    /// manages one of its controllers); otherwise the container stays in `inherited`.
    pub managed: bool,
    /// The shim's own cgroup in this hierarchy (as /proc/self/cgroup shows it), which a
    /// container inherits where libcgroups does not move it.
    pub inherited: String,
}

impl V1Hierarchy {
    /// The directory name under the cgroup root (`cpu,cpuacct`, `systemd`).
    pub fn name(&self) -> Option<&str> {
        self.mount_point.file_name().and_then(|n| n.to_str())
    }
}

/// The v1 hierarchies mounted directly under `root`, from mountinfo and the caller's
/// /proc/self/cgroup. `managed_mounts`: the mount points libcgroups drives (one per
/// controller it knows and finds).
pub(crate) fn hierarchies(
    root: &Path,
    infos: &MountInfos,
    own: &[ProcessCGroup],
    managed_mounts: &[PathBuf],
) -> Vec<V1Hierarchy> {
    let mut out = Vec::new();
    for info in infos {
        if info.fs_type != "cgroup" {
            continue;
        }
        let mount_point = unescape_mountinfo(&info.mount_point);
        if mount_point.parent() != Some(root) {
            continue;
        }
        let mut controllers: Vec<String> = info
            .super_options
            .iter()
            .filter_map(|(key, value)| match (key.as_str(), value) {
                ("name", Some(name)) => Some(format!("name={name}")),
                ("rw" | "ro" | "xattr" | "noprefix" | "clone_children" | "release_agent", _) => {
                    None
                }
                (controller, None) => Some(controller.to_string()),
                _ => None,
            })
            .collect();
        let inherited = own
            .iter()
            .find(|c| c.controllers.iter().any(|own| controllers.contains(own)))
            .map(|c| c.pathname.clone())
            .unwrap_or_else(|| "/".into());
        controllers.sort();
        out.push(V1Hierarchy {
            managed: managed_mounts.contains(&mount_point),
            mount_point,
            controllers,
            inherited,
        });
    }
    out.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    out.dedup_by(|a, b| a.mount_point == b.mount_point);
    out
}

/// The mount points libcgroups' v1 manager puts a container's tasks in: those holding a
/// controller it knows. Taken from the mountinfo already read (libcgroups' own lookup
/// rereads the node's whole mount table once per controller, on every shim's start).
pub(crate) fn managed_mounts(infos: &MountInfos) -> Vec<PathBuf> {
    infos
        .into_iter()
        .filter(|info| info.fs_type == "cgroup")
        .filter(|info| {
            MANAGED
                .iter()
                .any(|c| info.super_options.contains_key(&c.to_string()))
        })
        .map(|info| unescape_mountinfo(&info.mount_point))
        .collect()
}

/// The controllers libcgroups' v1 manager adds tasks to (its list is private; the match
/// below stops the build when it gains one).
const MANAGED: [ControllerType; 12] = [
    ControllerType::Cpu,
    ControllerType::CpuAcct,
    ControllerType::CpuSet,
    ControllerType::Devices,
    ControllerType::HugeTlb,
    ControllerType::Memory,
    ControllerType::Pids,
    ControllerType::PerfEvent,
    ControllerType::Blkio,
    ControllerType::NetworkPriority,
    ControllerType::NetworkClassifier,
    ControllerType::Freezer,
];

#[allow(dead_code)]
fn every_controller_is_listed(c: ControllerType) {
    use ControllerType::*;
    match c {
        Cpu | CpuAcct | CpuSet | Devices | HugeTlb | Memory | Pids | PerfEvent | Blkio
        | NetworkPriority | NetworkClassifier | Freezer => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::parse_process_cgroups;
    use procfs::FromBufRead;

    use crate::host::tests::MOUNTINFO;

    const OWN: &str = "\
5:memory:/system.slice/containerd.service
4:cpu,cpuacct:/system.slice/containerd.service
1:name=systemd:/system.slice/containerd.service
0::/system.slice/containerd.service
";

    #[test]
    fn lists_the_v1_hierarchies_under_the_root_with_their_inherited_cgroups() {
        let infos = MountInfos::from_buf_read(MOUNTINFO.as_bytes()).unwrap();
        let own = parse_process_cgroups(OWN).unwrap();
        let managed = managed_mounts(&infos);
        let found = hierarchies(Path::new("/sys/fs/cgroup"), &infos, &own, &managed);
        let summary: Vec<(Option<&str>, Vec<&str>, bool, &str)> = found
            .iter()
            .map(|h| {
                (
                    h.name(),
                    h.controllers.iter().map(String::as_str).collect(),
                    h.managed,
                    h.inherited.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    Some("cpu,cpuacct"),
                    vec!["cpu", "cpuacct"],
                    true,
                    "/system.slice/containerd.service"
                ),
                (
                    Some("memory"),
                    vec!["memory"],
                    true,
                    "/system.slice/containerd.service"
                ),
                (
                    Some("systemd"),
                    vec!["name=systemd"],
                    false,
                    "/system.slice/containerd.service"
                ),
            ]
        );
    }

    #[test]
    fn this_machine_lists_what_libcgroups_manages_as_managed() {
        let Ok(host) = crate::Host::detect() else {
            return;
        };
        for h in host.v1_hierarchies() {
            // A managed hierarchy holds one of libcgroups' controllers.
            if h.managed {
                assert!(
                    h.controllers
                        .iter()
                        .any(|c| MANAGED.iter().any(|k| k.to_string() == *c)),
                    "{h:?}"
                );
            }
        }
    }
}
