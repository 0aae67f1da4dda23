//! The node's cgroup setup, detected once: which hierarchy (libcgroups' detection), where
//! the v1 controllers are mounted (statmount of the cgroup root's entries, or
//! /proc/self/mountinfo through procfs on older kernels), and whether systemd runs the
//! node (and so can be the cgroup driver).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libcgroups::common::{get_cgroup_setup_with_root, CgroupSetup, DEFAULT_CGROUP_ROOT};

use crate::path::{CgroupDriver, CgroupsPath};
use crate::v1_hierarchy::{self, V1Hierarchy};
use crate::CgroupError;

/// Controllers whose v1 mount points the readers need.
const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "blkio"];

/// Which hierarchy holds the controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount without controllers (`/sys/fs/cgroup/unified`).
    Hybrid,
    /// Pure cgroup v2: every controller on the unified hierarchy at the root.
    Unified,
}

impl Hierarchy {
    pub fn name(&self) -> &'static str {
        match self {
            Hierarchy::Legacy => "legacy (cgroup v1)",
            Hierarchy::Hybrid => "hybrid (controllers on cgroup v1)",
            Hierarchy::Unified => "unified (cgroup v2)",
        }
    }
}

/// The cgroup setup of this node.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    hierarchy: Hierarchy,
    systemd: bool,
    /// v1 controller -> mount point; controllers not listed are at `<root>/<controller>`.
    v1_mounts: HashMap<String, PathBuf>,
    /// Every v1 hierarchy under the root, as a container sees it.
    v1_hierarchies: Vec<V1Hierarchy>,
}

static CURRENT: OnceLock<Result<Host, String>> = OnceLock::new();

impl Host {
    /// This node's setup at /sys/fs/cgroup, detected on first use (it does not change
    /// while a process runs).
    pub fn current() -> Result<&'static Host, CgroupError> {
        CURRENT
            .get_or_init(|| Host::detect().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|detail| CgroupError::Detect {
                root: PathBuf::from(DEFAULT_CGROUP_ROOT),
                detail: detail.clone(),
            })
    }

    /// Detects the setup at /sys/fs/cgroup now.
    pub fn detect() -> Result<Host, CgroupError> {
        let mut host = Host::detect_at(Path::new(DEFAULT_CGROUP_ROOT))?;
        host.systemd = libcgroups::systemd::booted();
        if host.hierarchy != Hierarchy::Unified {
            let failed = |e: &dyn std::fmt::Display| CgroupError::Detect {
                root: host.root.clone(),
                detail: format!("reading /proc/self/mountinfo: {e}"),
            };
            let infos = match crate::statmount::under(&host.root) {
                Some(infos) if !infos.0.is_empty() => infos,
                // Older kernels; and v1 hierarchies mounted elsewhere, which only the
                // whole table shows.
                _ => {
                    let table =
                        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| failed(&e))?;
                    cgroup_mounts(&table).map_err(|e| failed(&e))?
                }
            };
            host.v1_mounts = v1_mounts(&infos);
            let own = crate::proc::process_cgroups(std::process::id() as i32)?;
            host.v1_hierarchies = v1_hierarchy::hierarchies(
                &host.root,
                &infos,
                &own,
                &v1_hierarchy::managed_mounts(&infos),
            );
        }
        Ok(host)
    }

    /// Detects the hierarchy mounted at `root` (a cgroup2 mount, or the tmpfs holding v1
    /// hierarchies); v1 controllers are taken to be at `<root>/<controller>`.
    pub fn detect_at(root: &Path) -> Result<Host, CgroupError> {
        let setup = get_cgroup_setup_with_root(root).map_err(|e| CgroupError::Detect {
            root: root.to_path_buf(),
            detail: e.to_string(),
        })?;
        let hierarchy = match setup {
            CgroupSetup::Legacy => Hierarchy::Legacy,
            CgroupSetup::Hybrid => Hierarchy::Hybrid,
            CgroupSetup::Unified => Hierarchy::Unified,
        };
        Ok(Host::at(root, hierarchy, false))
    }

    /// A host with the given layout, for readers of another root (tests, fixtures).
    pub fn at(root: &Path, hierarchy: Hierarchy, systemd: bool) -> Host {
        Host {
            root: root.to_path_buf(),
            hierarchy,
            systemd,
            v1_mounts: HashMap::new(),
            v1_hierarchies: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }

    pub fn is_unified(&self) -> bool {
        self.hierarchy == Hierarchy::Unified
    }

    /// The v1 hierarchies under the root (none on cgroup v2).
    pub fn v1_hierarchies(&self) -> &[V1Hierarchy] {
        &self.v1_hierarchies
    }

    /// Whether systemd is PID 1 (`/run/systemd/system` exists).
    pub fn systemd_booted(&self) -> bool {
        self.systemd
    }

    /// The driver a container gets when its runtime options or cgroupsPath ask for
    /// systemd (`wants_systemd`): systemd only where it runs the node on cgroup v2, which
    /// is where libcgroups has a systemd manager.
    pub fn driver(&self, wants_systemd: bool) -> CgroupDriver {
        if wants_systemd && self.systemd && self.is_unified() {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        }
    }

    /// Why [`Host::driver`] gives cgroupfs to a container that wants systemd; None when it
    /// gives systemd.
    pub fn why_not_systemd(&self) -> Option<String> {
        if !self.systemd {
            Some("systemd is not running on this node".into())
        } else if !self.is_unified() {
            Some(format!(
                "the cgroup hierarchy is {}; Stockade drives systemd on cgroup v2 only",
                self.hierarchy.name()
            ))
        } else {
            None
        }
    }

    /// Where the v1 hierarchy that has `controller` is mounted.
    pub(crate) fn v1_mount(&self, controller: &str) -> PathBuf {
        self.v1_mounts
            .get(controller)
            .cloned()
            .unwrap_or_else(|| self.root.join(controller))
    }

    /// The cgroup's directory in the hierarchy that has `controller` (any on v2).
    pub fn dir(&self, controller: &str, path: &CgroupsPath) -> PathBuf {
        let rel = path.relative();
        match self.hierarchy {
            Hierarchy::Unified => self.root.join(rel),
            Hierarchy::Legacy | Hierarchy::Hybrid => self.v1_mount(controller).join(rel),
        }
    }

    /// The cgroup's directories in every hierarchy (v2's, each v1 controller's, named
    /// ones), whether they exist or not; none for the root cgroup.
    pub fn all_dirs(&self, path: &CgroupsPath) -> Vec<PathBuf> {
        let rel = path.relative();
        if rel.as_os_str().is_empty() {
            return Vec::new();
        }
        let mut dirs = vec![self.root.join(&rel)];
        if !self.is_unified() {
            if let Ok(entries) = std::fs::read_dir(&self.root) {
                dirs.extend(entries.flatten().map(|e| e.path().join(&rel)));
            }
        }
        dirs
    }
}

/// Mount points of the v1 controllers the readers use, from mountinfo.
fn v1_mounts(infos: &procfs::process::MountInfos) -> HashMap<String, PathBuf> {
    let mut mounts = HashMap::new();
    for info in infos {
        if info.fs_type != "cgroup" {
            continue;
        }
        for controller in V1_CONTROLLERS {
            if info.super_options.contains_key(controller) {
                mounts
                    .entry(controller.to_string())
                    .or_insert_with(|| unescape_mountinfo(&info.mount_point));
            }
        }
    }
    mounts
}

/// The cgroup and cgroup2 mounts of a mountinfo table. Only their lines are parsed: the
/// table holds every mount of the node (a thousand lines with 250 pods), and this runs on
/// every shim's start, on the path of RunPodSandbox.
pub(crate) fn cgroup_mounts(table: &str) -> procfs::ProcResult<procfs::process::MountInfos> {
    let mounts = table
        .lines()
        .filter(|line| {
            // The filesystem type is the first field after the " - " separator.
            line.split_once(" - ")
                .and_then(|(_, tail)| tail.split(' ').next())
                .is_some_and(|fs| fs == "cgroup" || fs == "cgroup2")
        })
        .map(procfs::process::MountInfo::from_line)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(procfs::process::MountInfos(mounts))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`; procfs keeps them.
pub(crate) fn unescape_mountinfo(path: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = path.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|o| {
            bytes[i] == b'\\' && o.iter().all(|b| (b'0'..=b'7').contains(b)) && o[0] <= b'3'
        });
        match octal {
            Some(o) => {
                out.push(o.iter().fold(0u8, |acc, b| acc * 8 + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use procfs::FromBufRead;

    /// A hybrid node's mountinfo (also v1_hierarchy's fixture).
    pub(crate) const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /mnt/my\\040pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn path(p: &str) -> CgroupsPath {
        CgroupsPath::parse(p).unwrap()
    }

    #[test]
    fn only_cgroup_lines_are_read_and_a_broken_one_is_an_error() {
        let table = format!(
            "{MOUNTINFO}50 31 0:40 / /run/x rw - overlay overlay rw,lowerdir=a\n\
             51 31 0:41 / /mnt/cgroup\\040look rw - tmpfs cgroup rw\n"
        );
        let infos = cgroup_mounts(&table).unwrap();
        let points: Vec<_> = infos.iter().map(|m| m.mount_point.clone()).collect();
        assert_eq!(points.len(), 5, "{points:?}");
        assert!(infos
            .iter()
            .all(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2"));
        // Same answers as from the whole table.
        let whole = procfs::process::MountInfos::from_buf_read(table.as_bytes()).unwrap();
        assert_eq!(v1_mounts(&infos), v1_mounts(&whole));
        assert!(cgroup_mounts("32 31 0:29 / - cgroup cgroup rw,cpu\n").is_err());
    }

    #[test]
    fn mountinfo_finds_v1_controllers_including_combined_and_escaped() {
        let infos = procfs::process::MountInfos::from_buf_read(MOUNTINFO.as_bytes()).unwrap();
        let mut host = Host::at(Path::new("/sys/fs/cgroup"), Hierarchy::Hybrid, false);
        host.v1_mounts = v1_mounts(&infos);
        let p = path("/stockade/ctr");
        assert_eq!(
            host.dir("cpu", &p),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/stockade/ctr")
        );
        assert_eq!(
            host.dir("cpuacct", &p),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/stockade/ctr")
        );
        assert_eq!(
            host.dir("pids", &p),
            PathBuf::from("/mnt/my pids/stockade/ctr")
        );
        // Not in mountinfo: the conventional place.
        assert_eq!(
            host.dir("blkio", &p),
            PathBuf::from("/sys/fs/cgroup/blkio/stockade/ctr")
        );
    }

    #[test]
    fn unified_dirs_resolve_systemd_paths_to_their_scope() {
        let host = Host::at(Path::new("/sys/fs/cgroup"), Hierarchy::Unified, true);
        assert_eq!(
            host.dir("memory", &path("system.slice:stockade:c1")),
            PathBuf::from("/sys/fs/cgroup/system.slice/stockade-c1.scope")
        );
        assert_eq!(
            host.all_dirs(&path("/stockade/p/c")),
            vec![PathBuf::from("/sys/fs/cgroup/stockade/p/c")]
        );
        assert!(host.all_dirs(&path("/")).is_empty());
    }

    #[test]
    fn systemd_drives_only_where_it_runs_on_cgroup_v2() {
        let root = Path::new("/sys/fs/cgroup");
        let v2_systemd = Host::at(root, Hierarchy::Unified, true);
        assert_eq!(v2_systemd.driver(true), CgroupDriver::Systemd);
        assert_eq!(v2_systemd.driver(false), CgroupDriver::Cgroupfs);
        assert_eq!(v2_systemd.why_not_systemd(), None);
        let v2_plain = Host::at(root, Hierarchy::Unified, false);
        assert_eq!(v2_plain.driver(true), CgroupDriver::Cgroupfs);
        assert!(v2_plain.why_not_systemd().unwrap().contains("not running"));
        let hybrid = Host::at(root, Hierarchy::Hybrid, true);
        assert_eq!(hybrid.driver(true), CgroupDriver::Cgroupfs);
        assert!(hybrid.why_not_systemd().unwrap().contains("hybrid"));
    }

    #[test]
    fn detects_this_machine() {
        // Either answer is right; detection itself must work on a cgroup mount.
        let host = Host::detect().unwrap();
        let v2_here = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        assert_eq!(host.is_unified(), v2_here);
        assert_eq!(
            host.systemd_booted(),
            Path::new("/run/systemd/system").is_dir()
        );
    }

    #[test]
    fn a_root_that_is_no_cgroup_mount_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Host::detect_at(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
