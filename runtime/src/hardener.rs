//! The hardener: a pure function from (spec, profile, context) to (hardened spec, report)
//! or a refusal naming the rule. No I/O here.
//! (Signatures are the contract; the body is being written.)
#![allow(dead_code)]

use crate::idrange::IdRange;
use crate::oci_spec::runtime::{LinuxResources, LinuxSeccomp, Spec};
use crate::profile::Profile;
use std::path::PathBuf;

/// Everything the hardener needs to know about where the container runs.
#[derive(Debug, Clone)]
pub struct HardenContext {
    pub container_id: String,
    pub sandbox_id: String,
    pub is_sandbox: bool,
    /// The pod's host ID range.
    pub id_range: IdRange,
    /// For app containers: the sandbox's user namespace (`/proc/PID/ns/user`) to join.
    pub pod_userns: Option<PathBuf>,
}

/// The seccomp filters to install, in order: the profile's default, then the pod's own.
#[derive(Debug, Clone)]
pub struct SeccompPlan {
    pub default: LinuxSeccomp,
    pub pod: Option<LinuxSeccomp>,
}

#[derive(Debug, Clone)]
pub struct Hardened {
    /// The spec to hand to libcontainer (no `linux.seccomp`).
    pub spec: Spec,
    pub seccomp: SeccompPlan,
    pub report: Report,
}

/// Every change the hardener made, and why.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// Which guard made the change: capabilities, seccomp, paths, userns, cgroups, policy.
    pub guard: &'static str,
    pub what: String,
}

/// A policy rule that can refuse a container; `name()` is what errors and metrics carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    Privileged,
    HostNetwork,
    HostPid,
    HostIpc,
    ExtraCapabilities,
    UntrustedRegistry,
    CpuCeiling,
    MemoryCeiling,
    PidsCeiling,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("refused by stockade policy rule `{rule_name}`: {reason}", rule_name = .rule.name())]
pub struct Refusal {
    pub rule: Rule,
    pub reason: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum HardenError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
}

impl Rule {
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Privileged => "privileged",
            Rule::HostNetwork => "host-network",
            Rule::HostPid => "host-pid",
            Rule::HostIpc => "host-ipc",
            Rule::ExtraCapabilities => "extra-capabilities",
            Rule::UntrustedRegistry => "untrusted-registry",
            Rule::CpuCeiling => "cpu-ceiling",
            Rule::MemoryCeiling => "memory-ceiling",
            Rule::PidsCeiling => "pids-ceiling",
        }
    }
}

/// Harden a container's spec.
pub fn harden(_spec: Spec, _profile: &Profile, _ctx: &HardenContext) -> Result<Hardened, HardenError> {
    todo!()
}

/// Clamp (or refuse) a resources update the same way `harden` does for Create.
pub fn harden_resources(
    _resources: LinuxResources,
    _profile: &Profile,
) -> Result<(LinuxResources, Report), HardenError> {
    todo!()
}
