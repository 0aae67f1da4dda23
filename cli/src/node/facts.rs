//! What `stockade node check` knows about a node: plain data, gathered by [`super::gather`]
//! and judged by [`super::checks`]. Serializable, so `--json` shows what a verdict rests on.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeFacts {
    pub kernel: KernelFacts,
    /// Whether the filesystems Stockade idmaps take idmapped mounts.
    pub idmap: Vec<IdmapFact>,
    pub cgroup: CgroupFacts,
    /// None: no config file at the path (containerd runs on its defaults).
    pub containerd: Option<ContainerdFacts>,
    /// kubelet's `cgroupDriver` (its config file), if found.
    pub kubelet_cgroup_driver: Option<String>,
    pub subuid: SubIds,
    pub subgid: SubIds,
    /// useradd's SUB_UID_MIN / SUB_UID_MAX (/etc/login.defs; Debian's defaults otherwise).
    pub useradd_subuid_range: (u64, u64),
    pub profiles: Vec<ProfileFact>,
    /// Whether this process (root, as containerd is) has CAP_SYS_RESOURCE.
    pub cap_sys_resource: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelFacts {
    /// /proc/sys/kernel/osrelease.
    pub release: Option<String>,
    /// sysctl name (dotted) -> value; None where the kernel has no such file.
    pub sysctls: BTreeMap<String, Option<String>>,
}

impl KernelFacts {
    /// A sysctl's integer value (None: absent or not a number).
    pub fn int(&self, name: &str) -> Option<i64> {
        self.sysctls.get(name)?.as_deref()?.trim().parse().ok()
    }

    /// (major, minor) of the release, e.g. (6, 18) for "6.18.44-fc".
    pub fn version(&self) -> Option<(u32, u32)> {
        let release = self.release.as_deref()?;
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
}

/// The sysctls the checks read.
pub const SYSCTLS: &[&str] = &[
    "user.max_user_namespaces",
    "kernel.unprivileged_userns_clone",
    "kernel.apparmor_restrict_unprivileged_userns",
    "kernel.kptr_restrict",
    "kernel.dmesg_restrict",
    "kernel.perf_event_paranoid",
    "kernel.unprivileged_bpf_disabled",
    "net.core.bpf_jit_enable",
    "net.core.bpf_jit_harden",
];

/// What the filesystem at `path` is for Stockade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdmapUse {
    /// Image layers (containerd's snapshots): idmapped for every container.
    ImageLayers,
    /// Volumes on disk (kubelet's pod directories).
    Volumes,
    /// Memory-backed volumes: Secrets, projected tokens, emptyDir medium Memory.
    TmpfsVolumes,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdmapFact {
    pub purpose: IdmapUse,
    pub path: PathBuf,
    /// Filesystem type (from the mount table); None when the path was not found.
    pub fs_type: Option<String>,
    /// A real probe's answer (an idmapped clone made and dropped); None: not probed.
    pub probed: Option<Result<bool, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupVersion {
    V1,
    /// v1 controllers with a cgroup2 mount at /sys/fs/cgroup/unified.
    Hybrid,
    V2,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CgroupFacts {
    pub version: CgroupVersion,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerdFacts {
    /// The files read, main config first, with their `version`.
    pub files: Vec<(PathBuf, i64)>,
    /// Imports that could not be read or parsed.
    pub problems: Vec<String>,
    /// `containerd --version`, when it could be run.
    pub binary_version: Option<String>,
    pub runtimes: Vec<RuntimeFact>,
    pub restrict_oom_score_adj: Option<bool>,
    pub enable_unprivileged_ports: Option<bool>,
    pub enable_unprivileged_icmp: Option<bool>,
    /// Registries reached without TLS or without verifying it, and where that is set.
    pub insecure_registries: Vec<InsecureRegistry>,
    /// The registry `config_path` (hosts.toml directories).
    pub registry_config_path: Option<PathBuf>,
    /// containerd's `root` (snapshots live below it).
    pub root: PathBuf,
    pub snapshotter: String,
}

impl ContainerdFacts {
    /// The major version of the containerd binary, or what the config version implies.
    pub fn major_version(&self) -> Option<u32> {
        if let Some(v) = &self.binary_version {
            let digits = v
                .split_whitespace()
                .find(|w| w.starts_with(['v', '1', '2', '3']))?;
            return digits
                .trim_start_matches('v')
                .split('.')
                .next()?
                .parse()
                .ok();
        }
        // Only containerd 2.x reads version-3 configs.
        match self.files.first()?.1 {
            3 => Some(2),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeFact {
    pub name: String,
    pub runtime_type: String,
    pub privileged_without_host_devices: bool,
    /// options.ConfigPath (Stockade's profile).
    pub config_path: Option<String>,
    /// options.SystemdCgroup (runc's cgroup driver).
    pub systemd_cgroup: Option<bool>,
}

pub const STOCKADE_RUNTIME_TYPE: &str = "io.containerd.stockade.v1";

impl RuntimeFact {
    pub fn is_stockade(&self) -> bool {
        self.runtime_type == STOCKADE_RUNTIME_TYPE
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InsecureRegistry {
    pub host: String,
    /// `plain-http` or `skip-verify`.
    pub how: &'static str,
    /// The file (and key) that says so.
    pub source: String,
}

/// Entries of /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubIds {
    pub path: PathBuf,
    /// false: the file does not exist.
    pub exists: bool,
    /// (owner, first id, count).
    pub entries: Vec<(String, u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileFact {
    pub path: PathBuf,
    /// The containerd runtime handlers that use it (empty: --profile, or installed only).
    pub handlers: Vec<String>,
    pub summary: Result<ProfileSummary, String>,
}

/// What the checks read of a profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileSummary {
    pub name: String,
    pub first_id: u64,
    pub size: u64,
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub log_denials: bool,
    /// Policy rules set to allow (privileged, host-network, ...).
    pub allowed_rules: Vec<String>,
    pub audit_log: Option<PathBuf>,
}
