//! Hardening profiles: what an operator chooses for a runtime class, loaded from TOML.
//! (Types are the contract; loading and validation are being written.)
#![allow(dead_code)]

use crate::oci_spec::runtime::{Capability, LinuxSeccomp};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ProfileError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

/// Allow or deny, for each policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// What happens to a cgroup request above the profile's ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExcess {
    Clamp,
    Refuse,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// The TOML file it was loaded from.
    pub source: PathBuf,
    pub capabilities: CapabilitySettings,
    pub paths: PathSettings,
    pub seccomp: SeccompSettings,
    pub userns: IdPoolSettings,
    pub cgroups: CgroupSettings,
    pub policy: PolicySettings,
    pub audit: AuditSettings,
}

#[derive(Debug, Clone)]
pub struct CapabilitySettings {
    /// The only capabilities a container may hold (bounding, effective, permitted).
    pub allow: BTreeSet<Capability>,
    /// Capabilities containerd grants every container by default: dropped without refusal
    /// even when `policy.extra_capabilities` is deny.
    pub runtime_defaults: BTreeSet<Capability>,
    pub no_new_privs: bool,
}

#[derive(Debug, Clone)]
pub struct PathSettings {
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SeccompSettings {
    /// Resolved path of the default seccomp profile.
    pub file: PathBuf,
    /// The parsed default profile (validated: it compiles for the running architecture).
    pub profile: LinuxSeccomp,
    /// Install with SECCOMP_FILTER_FLAG_LOG so the kernel audits denials.
    pub log_denials: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct IdPoolSettings {
    pub first_id: u32,
    pub size: u32,
    pub ids_per_pod: u32,
}

/// CPU is expressed as quota/period; memory in bytes; pids as a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cpu_quota: i64,
    pub cpu_period: u64,
    pub memory: i64,
    pub pids: i64,
}

#[derive(Debug, Clone)]
pub struct CgroupSettings {
    /// Absolute cgroup parent for containers whose spec has no absolute cgroupsPath.
    pub parent: String,
    pub defaults: Limits,
    pub ceilings: Limits,
    pub on_excess: OnExcess,
}

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub privileged: Verdict,
    pub host_network: Verdict,
    pub host_pid: Verdict,
    pub host_ipc: Verdict,
    pub extra_capabilities: Verdict,
    /// Registries (host, host/path prefix, or `*.domain`) images may come from; empty
    /// means any.
    pub allowed_registries: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    /// JSON-lines audit log of every hardening decision; None disables it.
    pub log: Option<PathBuf>,
}

impl Profile {
    /// Load and validate a profile; every error names the file, the key and the problem.
    pub fn load(_path: &Path) -> Result<Profile, ProfileError> {
        todo!()
    }
}
