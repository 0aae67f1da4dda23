//! Reading a container's cgroup: which cgroup a process is in (/proc/PID/cgroup), and the
//! OOM-kill and CPU-throttling counters (cgroup v1 and v2).

use std::path::{Path, PathBuf};

/// CGROUP2_SUPER_MAGIC from `<linux/magic.h>`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Pure cgroup v2: one hierarchy at the root.
    V2 { root: PathBuf },
    /// v1 controllers at `<root>/<controller>` (hybrid setups included).
    V1 { root: PathBuf },
}

impl CgroupLayout {
    /// v2 when `root` itself is a cgroup2 mount, else v1.
    pub fn detect(root: &Path) -> std::io::Result<CgroupLayout> {
        let path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: an all-zero statfs is a valid value to be overwritten.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `st` a valid, writable statfs.
        let rc = unsafe { libc::statfs(path.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let root = root.to_path_buf();
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
        Ok(if st.f_type as i64 == CGROUP2_SUPER_MAGIC {
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

/// The value of `key` in a flat-keyed cgroup file (`key value` per line).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// One line of /proc/PID/cgroup: `hierarchy-id:controllers:path` (v2: `0::/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    pub hierarchy: u32,
    /// Empty for the v2 hierarchy; `name=systemd` style for named v1 hierarchies.
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses /proc/PID/cgroup (v1, v2 or hybrid); malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            Some(ProcCgroup {
                hierarchy,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The cgroups a process is in; Err when it is gone.
pub fn read_proc_cgroup(pid: i32) -> std::io::Result<Vec<ProcCgroup>> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map(|t| parse_proc_cgroup(&t))
}

/// Whether cgroup `path` is `ancestor` or below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_v1_hybrid() {
        let text = "12:pids:/stockade/sb/c1\n11:memory:/stockade/sb/c1\n4:cpu,cpuacct:/stockade/sb/c1\n1:name=systemd:/system.slice/containerd.service\n0::/system.slice/containerd.service\n";
        let cgroups = parse_proc_cgroup(text);
        assert_eq!(cgroups.len(), 5);
        assert_eq!(cgroups[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cgroups[2].path, "/stockade/sb/c1");
        assert_eq!(cgroups[3].controllers, vec!["name=systemd"]);
        assert_eq!(cgroups[4].hierarchy, 0);
        assert!(cgroups[4].controllers.is_empty());
    }

    #[test]
    fn proc_cgroup_v2_and_garbage() {
        let cgroups = parse_proc_cgroup("0::/kubepods/pod1/c2\ngarbage\n1:x:relative\n");
        assert_eq!(
            cgroups,
            vec![ProcCgroup {
                hierarchy: 0,
                controllers: vec![],
                path: "/kubepods/pod1/c2".into()
            }]
        );
    }

    #[test]
    fn flat_keyed_files() {
        let v1_oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2_events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        let v1_cpu = "nr_periods 10\nnr_throttled 4\nthrottled_time 2500000000\n";
        let v2_cpu = "usage_usec 100\nuser_usec 50\nsystem_usec 50\nnr_periods 5\nnr_throttled 1\nthrottled_usec 1500000\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(flat_keyed(v1_oom, "oom_kill"), Some(3));
        assert_eq!(flat_keyed(v2_events, "oom_kill"), Some(2));
        assert_eq!(flat_keyed(v2_events, "oom"), Some(2));
        assert_eq!(flat_keyed(v1_cpu, "throttled_time"), Some(2_500_000_000));
        assert_eq!(flat_keyed(v2_cpu, "throttled_usec"), Some(1_500_000));
        assert_eq!(flat_keyed(v2_cpu, "throttled"), None);
    }

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
    fn within() {
        assert!(is_within("/a/b", "/a/b"));
        assert!(is_within("/a/b/c", "/a/b/"));
        assert!(!is_within("/a/bc", "/a/b"));
        assert!(!is_within("/a", "/a/b"));
    }

    #[test]
    fn detects_this_machine() {
        // Either answer is right; the call itself must work on a cgroup mount.
        let layout = CgroupLayout::detect(Path::new("/sys/fs/cgroup")).unwrap();
        let v2_here = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        assert_eq!(matches!(layout, CgroupLayout::V2 { .. }), v2_here);
    }
}
