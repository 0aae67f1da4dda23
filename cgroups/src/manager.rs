//! A container's cgroup through libcgroups: resource updates, freezing, its processes,
//! device rules, removal. A systemd cgroupsPath goes through systemd's D-Bus API where
//! systemd must know (resources, removal) and through the files of its scope otherwise.

use std::path::PathBuf;

use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt,
    FreezerState,
};
use oci_spec::runtime::LinuxResources;

use crate::path::CgroupsPath;
use crate::sample::container_path;
use crate::{CgroupError, Host};

/// How a manager reaches the cgroup.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Through {
    /// systemd for systemd paths (D-Bus), the files otherwise.
    Driver,
    /// The cgroup's files, also for a systemd scope.
    Files,
}

fn manager(
    host: &Host,
    cgroups_path: &str,
    through: Through,
) -> Result<(CgroupsPath, AnyCgroupManager), CgroupError> {
    let path = container_path(cgroups_path)?;
    let systemd = path.is_systemd();
    if systemd {
        if let Some(why) = host.why_not_systemd() {
            return Err(CgroupError::NoSystemd {
                path: cgroups_path.to_string(),
                why,
            });
        }
    }
    let config = match (systemd, through) {
        (true, Through::Driver) => CgroupConfig {
            cgroup_path: PathBuf::from(cgroups_path),
            systemd_cgroup: true,
            container_name: String::new(),
        },
        _ => CgroupConfig {
            cgroup_path: PathBuf::from(path.absolute()),
            systemd_cgroup: false,
            container_name: String::new(),
        },
    };
    let manager = create_cgroup_manager(config).map_err(|e| CgroupError::Manager {
        op: "opening",
        path: cgroups_path.to_string(),
        detail: e.to_string(),
    })?;
    Ok((path, manager))
}

fn failed<'a>(
    op: &'static str,
    cgroups_path: &'a str,
) -> impl FnOnce(libcgroups::common::AnyManagerError) -> CgroupError + 'a {
    move |e| CgroupError::Manager {
        op,
        path: cgroups_path.to_string(),
        detail: chain(&e),
    }
}

/// libcgroups' errors keep their cause in `source()`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    msg
}

impl Host {
    /// Applies already-hardened resources to the container's cgroup (Task Update); under
    /// systemd as unit properties, so systemd keeps them.
    pub fn apply(&self, cgroups_path: &str, resources: &LinuxResources) -> Result<(), CgroupError> {
        let (_, m) = manager(self, cgroups_path, Through::Driver)?;
        m.apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(failed("updating", cgroups_path))
    }

    /// Freezes (pause) or thaws (resume) every process in the cgroup.
    pub fn freeze(&self, cgroups_path: &str, frozen: bool) -> Result<(), CgroupError> {
        let (_, m) = manager(self, cgroups_path, Through::Files)?;
        let state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        m.freeze(state).map_err(failed(
            if frozen { "freezing" } else { "thawing" },
            cgroups_path,
        ))
    }

    /// Makes the container's cgroup directories in the v1 hierarchies libcgroups moves it
    /// into, before its create: on cgroup v1 each is a directory per hierarchy, and made
    /// here, beside the rest of Create, the container's intermediate process finds them
    /// made instead of making them on its path. The same directories libcgroups would make
    /// (it makes them with `create_dir_all` too, and then fills cpuset's). Nothing on v2,
    /// where libcgroups enables the parents' controllers as it makes the path, nor for a
    /// systemd path. Returns the directories made.
    pub fn make_v1_dirs(&self, cgroups_path: &str) -> Result<Vec<PathBuf>, CgroupError> {
        let path = container_path(cgroups_path)?;
        if self.is_unified() || path.is_systemd() {
            return Ok(Vec::new());
        }
        let rel = path.relative();
        let mut made = Vec::new();
        for h in self.v1_hierarchies().iter().filter(|h| h.managed) {
            let dir = h.mount_point.join(&rel);
            if dir.is_dir() {
                continue;
            }
            std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Io {
                op: "making",
                path: dir.clone(),
                source,
            })?;
            made.push(dir);
        }
        Ok(made)
    }

    /// Every process in the cgroup and below it.
    pub fn pids(&self, cgroups_path: &str) -> Result<Vec<i32>, CgroupError> {
        let (_, m) = manager(self, cgroups_path, Through::Files)?;
        let pids = m
            .get_all_pids()
            .map_err(failed("listing the processes of", cgroups_path))?;
        Ok(pids.into_iter().map(|p| p.as_raw()).collect())
    }

    /// Removes the (empty) cgroup; a systemd scope is stopped through systemd.
    pub fn remove(&self, cgroups_path: &str) -> Result<(), CgroupError> {
        let (_, m) = manager(self, cgroups_path, Through::Driver)?;
        m.remove().map_err(failed("removing", cgroups_path))
    }

    /// Enforces `resources.devices` on a cgroup v2 scope with an eBPF program. libcgroups'
    /// systemd manager applies no device rules (its cgroupfs manager does, at create), so
    /// under systemd the shim calls this once the scope exists and before the container
    /// starts. Nothing to do on cgroup v1 (the devices controller is set at create) or for
    /// a cgroupfs path.
    pub fn enforce_devices(
        &self,
        cgroups_path: &str,
        resources: &LinuxResources,
    ) -> Result<(), CgroupError> {
        let path = container_path(cgroups_path)?;
        if !self.is_unified() || !path.is_systemd() {
            return Ok(());
        }
        let dir = self.dir("devices", &path);
        libcgroups::v2::devices::controller::Devices::apply_devices(&dir, resources.devices())
            .map_err(|e| CgroupError::Manager {
                op: "enforcing the device rules of",
                path: cgroups_path.to_string(),
                detail: chain(&e),
            })?;
        tracing::debug!(cgroup = %dir.display(), "device rules enforced with eBPF");
        Ok(())
    }
}
