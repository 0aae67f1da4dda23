//! Which cgroups a process is in (/proc/PID/cgroup, through procfs), and whether that is
//! a container's cgroup (either cgroupsPath form).

use procfs::FromBufRead;

pub use procfs::ProcessCGroup;

use crate::path::CgroupsPath;
use crate::CgroupError;

/// The cgroups of process `pid` (one per hierarchy; v2's is hierarchy 0 with no
/// controllers). An error when the process is gone.
pub fn process_cgroups(pid: i32) -> Result<Vec<ProcessCGroup>, CgroupError> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.cgroups())
        .map(|c| c.0)
        .map_err(|e| CgroupError::Proc {
            pid,
            detail: e.to_string(),
        })
}

/// Parses a /proc/PID/cgroup text (v1, v2 or hybrid).
pub fn parse_process_cgroups(text: &str) -> Result<Vec<ProcessCGroup>, CgroupError> {
    procfs::ProcessCGroups::from_buf_read(text.as_bytes())
        .map(|c| c.0)
        .map_err(|e| CgroupError::Proc {
            pid: 0,
            detail: e.to_string(),
        })
}

/// Whether cgroup `path` (as /proc/PID/cgroup shows it) is `ancestor` or below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

/// Whether one of a process's cgroups is the container's cgroup `cgroups_path` (a spec's
/// cgroupsPath, cgroupfs or systemd form) or below it.
pub fn contains_process(cgroups_path: &str, process: &[ProcessCGroup]) -> bool {
    let Ok(path) = CgroupsPath::parse(cgroups_path) else {
        return false;
    };
    let dir = path.absolute();
    process.iter().any(|c| is_within(&c.pathname, &dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_proc_cgroup_lists_every_hierarchy() {
        let text = "12:pids:/stockade/sb/c1\n11:memory:/stockade/sb/c1\n4:cpu,cpuacct:/stockade/sb/c1\n1:name=systemd:/system.slice/containerd.service\n0::/system.slice/containerd.service\n";
        let cgroups = parse_process_cgroups(text).unwrap();
        assert_eq!(cgroups.len(), 5);
        assert_eq!(cgroups[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cgroups[2].pathname, "/stockade/sb/c1");
        assert_eq!(cgroups[3].controllers, vec!["name=systemd"]);
        assert_eq!(cgroups[4].hierarchy, 0);
        assert!(cgroups[4].controllers.is_empty());
        assert!(contains_process("/stockade/sb/c1", &cgroups));
        assert!(!contains_process("/stockade/sb/c2", &cgroups));
    }

    #[test]
    fn systemd_paths_match_their_scope() {
        let cgroups = parse_process_cgroups("0::/system.slice/stockade-c1.scope/sub\n").unwrap();
        assert!(contains_process("system.slice:stockade:c1", &cgroups));
        assert!(!contains_process("system.slice:stockade:c", &cgroups));
        assert!(!contains_process("not a path", &cgroups));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_process_cgroups("garbage\n").is_err());
    }

    #[test]
    fn within() {
        assert!(is_within("/a/b", "/a/b"));
        assert!(is_within("/a/b/c", "/a/b/"));
        assert!(!is_within("/a/bc", "/a/b"));
        assert!(!is_within("/a", "/a/b"));
    }

    #[test]
    fn this_process_has_cgroups() {
        let mine = process_cgroups(std::process::id() as i32).unwrap();
        assert!(!mine.is_empty());
        assert!(process_cgroups(i32::MAX).is_err());
    }
}
