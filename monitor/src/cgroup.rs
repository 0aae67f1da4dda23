//! Reading a container's cgroup: which cgroup a process is in (/proc/PID/cgroup), and the
//! OOM-kill and CPU-throttling counters (cgroup v1 and v2).

use std::path::{Path, PathBuf};

pub use stockade_cgroups::parse::flat_keyed;
pub use stockade_cgroups::proc::{is_within, parse_process_cgroups, ProcessCGroup};

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Pure cgroup v2: one hierarchy at the root.
    V2 { root: PathBuf },
    /// v1 controllers at `<root>/<controller>` (hybrid setups included).
    V1 { root: PathBuf },
}

impl CgroupLayout {
    /// v2 when `root` is a pure cgroup v2 hierarchy, else v1 (stockade-cgroups' detection).
    pub fn detect(root: &Path) -> std::io::Result<CgroupLayout> {
        let host = stockade_cgroups::Host::detect_at(root)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let root = root.to_path_buf();
        Ok(if host.is_unified() {
            CgroupLayout::V2 { root }
        } else {
            CgroupLayout::V1 { root }
        })
    }

    /// The directory of cgroup `path` (absolute, as in cgroupsPath) for `controller`.
    pub fn dir(&self, controller: &str, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        match self {
            CgroupLayout::V2 { root } => root.join(rel),
            CgroupLayout::V1 { root } => root.join(controller).join(rel),
        }
    }

    /// OOM kills in the cgroup (v1 memory.oom_control, v2 memory.events `oom_kill`).
    pub fn oom_kills(&self, path: &str) -> std::io::Result<u64> {
        let (file, key) = match self {
            CgroupLayout::V2 { .. } => ("memory.events", "oom_kill"),
            CgroupLayout::V1 { .. } => ("memory.oom_control", "oom_kill"),
        };
        let text = std::fs::read_to_string(self.dir("memory", path).join(file))?;
        flat_keyed(&text, key).ok_or_else(|| missing(file, key))
    }

    /// Time the cgroup was throttled by its CPU quota, in seconds (v1 cpu.stat
    /// `throttled_time` ns, v2 cpu.stat `throttled_usec`).
    pub fn cpu_throttled_seconds(&self, path: &str) -> std::io::Result<f64> {
        let text = std::fs::read_to_string(self.dir("cpu", path).join("cpu.stat"))?;
        match self {
            CgroupLayout::V2 { .. } => flat_keyed(&text, "throttled_usec")
                .map(|us| us as f64 / 1e6)
                .ok_or_else(|| missing("cpu.stat", "throttled_usec")),
            CgroupLayout::V1 { .. } => flat_keyed(&text, "throttled_time")
                .map(|ns| ns as f64 / 1e9)
                .ok_or_else(|| missing("cpu.stat", "throttled_time")),
        }
    }
}

fn missing(file: &str, key: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{file} has no `{key}`"),
    )
}

/// The cgroups a process is in; Err when it is gone.
pub fn read_proc_cgroup(pid: i32) -> std::io::Result<Vec<ProcessCGroup>> {
    stockade_cgroups::proc::process_cgroups(pid).map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let v1 = CgroupLayout::V1 {
            root: root.join("v1"),
        };
        let v2 = CgroupLayout::V2 {
            root: root.join("v2"),
        };
        let put = |p: PathBuf, text: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put(
            root.join("v1/memory/s/c/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        put(
            root.join("v1/cpu/s/c/cpu.stat"),
            "nr_periods 1\nnr_throttled 1\nthrottled_time 500000000\n",
        );
        put(root.join("v2/s/c/memory.events"), "oom 4\noom_kill 4\n");
        put(root.join("v2/s/c/cpu.stat"), "throttled_usec 250000\n");
        assert_eq!(v1.oom_kills("/s/c").unwrap(), 1);
        assert_eq!(v1.cpu_throttled_seconds("/s/c").unwrap(), 0.5);
        assert_eq!(v2.oom_kills("/s/c").unwrap(), 4);
        assert_eq!(v2.cpu_throttled_seconds("/s/c").unwrap(), 0.25);
        assert!(v2.oom_kills("/s/none").is_err());
    }

    #[test]
    fn detects_this_machine() {
        // Either answer is right; the call itself must work on a cgroup mount.
        let layout = CgroupLayout::detect(Path::new("/sys/fs/cgroup")).unwrap();
        let v2_here = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        assert_eq!(matches!(layout, CgroupLayout::V2 { .. }), v2_here);
    }
}
