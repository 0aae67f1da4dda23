//! What a private containerd instance still has beyond containerd itself (processes,
//! mounts, cgroups, task dirs, ID ranges, node records): tests assert it is nothing.

use crate::containerd::{Containerd, CRI_NAMESPACE};
use crate::teardown;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use stockade_runtime::idrange::IdAllocator;
use stockade_runtime::profile::IdPoolSettings;

/// Processes, mounts, cgroups and state an instance still has (see [`Containerd::leftovers`]).
#[derive(Debug, Default)]
pub struct Leftovers {
    pub processes: Vec<String>,
    pub mounts: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    /// containerd's task bundles, Stockade's libcontainer state dirs, shim sockets.
    pub task_dirs: Vec<PathBuf>,
    /// Pods of this instance that still hold a host ID range.
    pub id_ranges: Vec<String>,
    /// Node state records (for the exporter) of this instance's containers.
    pub node_records: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.task_dirs.is_empty()
            && self.id_ranges.is_empty()
            && self.node_records.is_empty()
    }
}

impl Containerd {
    /// What this instance has beyond containerd itself: processes other than containerd,
    /// mounts under its root and state, cgroups below its parent, shim task dirs.
    pub fn leftovers(&self) -> Leftovers {
        let marker = self.dir.display().to_string();
        let daemon = self.pid().map(|p| p as i32);
        let processes = teardown::instance_processes(&marker, &self.cgroup_dirs())
            .into_iter()
            .filter(|p| Some(p.pid) != daemon)
            // Our own ctr clients, if any are running, are not leftovers.
            .filter(|p| p.args.first().is_none_or(|a| !a.ends_with("ctr")))
            .map(|p| format!("{} {}", p.pid, p.args.join(" ")))
            .collect();
        let mut mounts = teardown::mounts_under(&self.root);
        mounts.extend(teardown::mounts_under(&self.state));
        let cgroups = self
            .cgroup_dirs()
            .iter()
            .flat_map(|d| teardown::cgroup_tree(d).into_iter().skip(1))
            .collect();
        let mut task_dirs = Vec::new();
        for ns in [self.name.as_str(), CRI_NAMESPACE] {
            let d = self.state.join("io.containerd.runtime.v2.task").join(ns);
            if let Ok(entries) = std::fs::read_dir(&d) {
                task_dirs.extend(entries.flatten().map(|e| e.path()));
            }
        }
        task_dirs.extend(self.shim_state_dirs());
        task_dirs.extend(self.shim_sockets());
        let ids = self.logged_ids();
        // Only reading the table: any pool will do.
        let any_pool = IdPoolSettings {
            first_id: 1 << 30,
            size: 1 << 16,
            ids_per_pod: 1 << 16,
        };
        let id_ranges = IdAllocator::open(self.stockade_state.id_ranges(), any_pool)
            .and_then(|allocator| allocator.table())
            .map(|table| {
                table
                    .iter()
                    .map(|(pod, _)| pod.to_string())
                    .filter(|pod| ids.contains(pod))
                    .collect()
            })
            .unwrap_or_default();
        let node_records = ids
            .iter()
            .map(|id| self.stockade_state.containers().join(format!("{id}.json")))
            .filter(|p| p.exists())
            .collect();
        Leftovers {
            processes,
            mounts,
            cgroups,
            task_dirs,
            id_ranges,
            node_records,
        }
    }

    /// Panic with what is left, unless nothing is (within a few seconds: a refused
    /// container's shim exits right after containerd's Shutdown, but asynchronously).
    pub fn assert_nothing_left(&self, what: &str) {
        let settled = crate::exec::wait_for(
            "nothing to be left",
            std::time::Duration::from_secs(10),
            || self.leftovers().is_empty().then_some(()),
        );
        if settled.is_err() {
            let left = self.leftovers();
            assert!(left.is_empty(), "{what}: left behind: {left:#?}");
        }
    }

    /// Container ids this containerd has logged (CRI's 64-hex ids and ctr's `id=` names).
    pub(crate) fn logged_ids(&self) -> BTreeSet<String> {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut ids: BTreeSet<String> = log
            .split(|c: char| !c.is_ascii_hexdigit())
            .filter(|t| t.len() == 64)
            .map(str::to_string)
            .collect();
        // Bundle paths name the id: .../io.containerd.runtime.v2.task/<ns>/<id>.
        for part in log.split("io.containerd.runtime.v2.task/").skip(1) {
            if let Some(id) = part
                .split(|c: char| c == '"' || c.is_whitespace())
                .next()
                .and_then(|p| p.split('/').nth(1))
                .filter(|id| !id.is_empty())
            {
                ids.insert(id.to_string());
            }
        }
        for part in log.split(" id=").skip(1) {
            let id = part
                .trim_start_matches('"')
                .split(|c: char| c == '"' || c.is_whitespace())
                .next()
                .unwrap_or("");
            if !id.is_empty() {
                ids.insert(id.to_string());
            }
        }
        ids
    }

    /// Shim sockets (in /run/containerd/s, named by a hash of our address, namespace and
    /// container id) that still exist for containers of this instance.
    pub fn shim_sockets(&self) -> Vec<PathBuf> {
        let ids = self.logged_ids();
        let mut found = Vec::new();
        for ns in [self.name.as_str(), CRI_NAMESPACE] {
            for id in &ids {
                let path = shim_socket_path(&self.socket, ns, id);
                if path.exists() {
                    found.push(path);
                }
            }
        }
        found
    }

    /// Stockade's libcontainer state dirs of this instance's containers. Its ctr
    /// namespace is ours alone; in k8s.io only the IDs our containerd logged are ours.
    pub fn shim_state_dirs(&self) -> Vec<PathBuf> {
        let root = self.stockade_state.libcontainer();
        let mut dirs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(root.join(&self.name)) {
            dirs.extend(entries.flatten().map(|e| e.path()));
        }
        for id in self.logged_ids().iter().filter(|id| id.len() == 64) {
            let d = root.join(CRI_NAMESPACE).join(id);
            if d.exists() {
                dirs.push(d);
            }
        }
        dirs
    }
}

/// containerd 1.6 (and the Rust shim crate) put a shim's socket at
/// /run/containerd/s/sha256(<containerd address>/<namespace>/<id>).
pub fn shim_socket_path(address: &Path, namespace: &str, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = address.join(namespace).join(id);
    let hash = Sha256::digest(key.display().to_string().as_bytes());
    Path::new("/run/containerd/s").join(format!("{hash:x}"))
}
