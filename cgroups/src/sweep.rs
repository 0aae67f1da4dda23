//! Removing what a container or a pod leaves in the cgroup hierarchies, by path alone
//! (usable by a fresh process after a crash).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::path::CgroupsPath;
use crate::Host;

impl Host {
    /// Removes the cgroup `cgroups_path` in every hierarchy where it exists and is empty;
    /// a busy or missing directory is left alone (a pod's parent cgroup, after its last
    /// container).
    pub fn remove_empty(&self, cgroups_path: &str) {
        let Ok(path) = CgroupsPath::parse(cgroups_path) else {
            tracing::warn!(cgroup = cgroups_path, "not a cgroup path; nothing removed");
            return;
        };
        for dir in self.all_dirs(&path) {
            match std::fs::remove_dir(&dir) {
                Ok(()) => tracing::debug!(cgroup = %dir.display(), "removed pod cgroup"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!(cgroup = %dir.display(), error = %e, "pod cgroup kept"),
            }
        }
    }

    /// Empties and removes a container's cgroup in every hierarchy: thaws it, SIGKILLs
    /// every process in it, waits (up to `timeout`) for them to go, removes the
    /// directories. For what a shim killed in the middle of Create leaves: libcontainer may
    /// have made only some of the hierarchies' directories, and its own delete then fails
    /// half-way, leaving the cgroup frozen with its processes in it. A systemd scope stops
    /// by itself once empty. Returns the directories that could not be removed.
    pub fn kill_and_remove(&self, cgroups_path: &str, timeout: Duration) -> Vec<PathBuf> {
        let Ok(path) = CgroupsPath::parse(cgroups_path) else {
            tracing::warn!(cgroup = cgroups_path, "not a cgroup path; nothing removed");
            return Vec::new();
        };
        let dirs: Vec<PathBuf> = self
            .all_dirs(&path)
            .into_iter()
            .filter(|d| d.is_dir())
            .collect();
        if dirs.is_empty() {
            return dirs;
        }
        for d in &dirs {
            // A frozen process cannot act on SIGKILL.
            for (file, thawed) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
                let file = d.join(file);
                if file.exists() {
                    if let Err(e) = std::fs::write(&file, thawed) {
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
                    cgroup = cgroups_path,
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
                tracing::debug!(cgroup = cgroups_path, "container cgroup removed");
                return remaining;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    cgroup = cgroups_path,
                    ?remaining,
                    ?pids,
                    "container cgroup not removed"
                );
                return remaining;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
