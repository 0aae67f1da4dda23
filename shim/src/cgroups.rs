//! The container's cgroup, through libcgroups: resource updates, pids, and removing the
//! pod's parent cgroup once it is empty.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager, ControllerOpt};
use stockade_runtime::oci_spec::runtime::LinuxResources;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn manager(cgroups_path: &str) -> anyhow::Result<libcgroups::common::AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroups_path),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| anyhow!("cgroup {cgroups_path}: {e}"))
}

/// Apply already-hardened resources to the container's cgroup.
pub fn apply(cgroups_path: &str, resources: &LinuxResources) -> anyhow::Result<()> {
    manager(cgroups_path)?
        .apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| anyhow!("updating cgroup {cgroups_path}: {e}"))
}

pub fn pids(cgroups_path: &str) -> anyhow::Result<Vec<i32>> {
    let pids = manager(cgroups_path)?
        .get_all_pids()
        .map_err(|e| anyhow!("listing pids of cgroup {cgroups_path}: {e}"))?;
    Ok(pids.into_iter().map(|p| p.as_raw()).collect())
}

/// Remove the cgroup directory `dir` (absolute cgroup path) in every hierarchy where it
/// exists and is empty; a busy or missing directory is left alone.
pub fn remove_empty(dir: &str) {
    let rel = Path::new(dir.trim_start_matches('/'));
    if rel.as_os_str().is_empty() {
        return;
    }
    let mut dirs = vec![Path::new(CGROUP_ROOT).join(rel)];
    if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
        for e in entries.flatten() {
            dirs.push(e.path().join(rel));
        }
    }
    for dir in dirs {
        match std::fs::remove_dir(&dir) {
            Ok(()) => tracing::debug!(cgroup = %dir.display(), "removed pod cgroup"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(cgroup = %dir.display(), error = %e, "pod cgroup kept"),
        }
    }
}
