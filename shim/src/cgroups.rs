//! The container's cgroup, through libcgroups: resource updates, pids, and removing the
//! pod's parent cgroup once it is empty.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager, ControllerOpt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
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

/// The directories of the absolute cgroup path `dir` in every hierarchy (cgroup v2's
/// unified one and each v1 controller's), whether they exist or not; none for the root.
fn hierarchy_dirs(dir: &str) -> Vec<PathBuf> {
    let rel = Path::new(dir.trim_start_matches('/'));
    if rel.as_os_str().is_empty() {
        return Vec::new();
    }
    let mut dirs = vec![Path::new(CGROUP_ROOT).join(rel)];
    if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
        for e in entries.flatten() {
            dirs.push(e.path().join(rel));
        }
    }
    dirs
}

/// Remove the cgroup directory `dir` (absolute cgroup path) in every hierarchy where it
/// exists and is empty; a busy or missing directory is left alone.
pub fn remove_empty(dir: &str) {
    for dir in hierarchy_dirs(dir) {
        match std::fs::remove_dir(&dir) {
            Ok(()) => tracing::debug!(cgroup = %dir.display(), "removed pod cgroup"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(cgroup = %dir.display(), error = %e, "pod cgroup kept"),
        }
    }
}

/// Empty and remove a container's cgroup `dir` (absolute cgroup path) in every hierarchy:
/// thaw it, SIGKILL every process in it, wait (up to `timeout`) for them to go, remove the
/// directories. For what a shim killed in the middle of Create leaves: libcontainer may
/// have made only some of the hierarchies' directories, and its own delete then fails
/// half-way, leaving the cgroup frozen with its processes in it. Returns the directories
/// that could not be removed.
pub fn kill_and_remove(dir: &str, timeout: Duration) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = hierarchy_dirs(dir)
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    if dirs.is_empty() {
        return dirs;
    }
    for d in &dirs {
        // A frozen process cannot act on SIGKILL.
        for (file, thawed) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
            let path = d.join(file);
            if path.exists() {
                if let Err(e) = std::fs::write(&path, thawed) {
                    tracing::warn!(cgroup = %d.display(), error = %e, "thawing");
                }
            }
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let pids: BTreeSet<i32> = dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        for &pid in &pids {
            tracing::info!(
                cgroup = dir,
                pid,
                "killing a process left in the container's cgroup"
            );
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let remaining: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| std::fs::remove_dir(d).is_err() && d.exists())
            .cloned()
            .collect();
        if remaining.is_empty() {
            tracing::debug!(cgroup = dir, "container cgroup removed");
            return remaining;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                cgroup = dir,
                ?remaining,
                ?pids,
                "container cgroup not removed"
            );
            return remaining;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
