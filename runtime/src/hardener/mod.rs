//! The hardener: a pure function from (spec, profile, context) to (hardened spec, report)
//! or a refusal naming the rule. No I/O happens here, so every rule is testable without
//! root; the shim only carries out what this decides.
//!
//! Order matters: policy refusals are checked first, on the spec as the pod asked for it;
//! only then is the spec rewritten (capabilities, no_new_privs, paths, user namespace,
//! cgroup limits, seccomp).

mod cgroup_view;
mod devices;
mod kubelet_userns;
mod placement;
mod policy;
mod propagation;
pub mod record;
pub mod registry;
mod resources;
mod secrets;
pub mod storage;
mod sysctls;
pub mod volumes;

pub use kubelet_userns::{kubelet_mapping, MIN_MAPPING_SIZE};
pub use secrets::{SecretEnvFinding, SecretReason};
pub use sysctls::{KUBERNETES_SAFE as KUBERNETES_SAFE_SYSCTLS, UNPRIVILEGED_PORT_START};
pub use volumes::{Mapping, PlannedVolume, ResolvedSources, VolumeKind};

use crate::idrange::IdRange;
use crate::oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxDeviceCgroup, LinuxIdMappingBuilder, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, LinuxSeccomp, Mount, Spec,
};
use crate::profile::Profile;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use stockade_cgroups::{CgroupDriver, V1Hierarchy};

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
    /// Init PIDs of the pod's running containers (facts the shim gathers): the only
    /// processes whose namespaces a container may join through `/proc/PID/ns/*`.
    pub pod_pids: Vec<i32>,
    /// Whether the spec's network namespace path is the host's network namespace (the shim
    /// compares the file's identity with its own namespace).
    pub netns_path_is_host: bool,
    /// The node's cgroup driver for this container: systemd where the runtime options or
    /// the cgroupsPath ask for it and systemd runs the node on cgroup v2.
    pub cgroup_driver: CgroupDriver,
    /// The node's cgroup v1 hierarchies (none on cgroup v2): the container's
    /// /sys/fs/cgroup is made of them (cgroup_view.rs).
    pub cgroup_v1: Vec<V1Hierarchy>,
    /// Bind sources with symlinks resolved (facts the shim gathers): hostPaths are judged,
    /// and mounted, by where they really lead.
    pub resolved_sources: ResolvedSources,
    /// The container's writable layer and whether a project quota can bound it (facts the
    /// shim gathers from the rootfs mounts).
    pub writable_layer: storage::WritableLayer,
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
    /// `net.*` sysctls the shim writes in the pod's network namespace (see sysctls.rs).
    pub pod_sysctls: std::collections::BTreeMap<String, String>,
    /// The spec's bind mounts, as the shim stages them (volumes.rs).
    pub volumes: Vec<PlannedVolume>,
    /// The writable layer's project quota ([`storage::decide`]); None: not bounded.
    pub storage: Option<storage::StorageQuota>,
    pub report: Report,
}

/// Every change the hardener made, and why; notes for what it let through; findings for
/// rules the profile audits instead of enforcing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub changes: Vec<Change>,
    pub notes: Vec<String>,
    pub findings: Vec<Finding>,
}

/// A rule that matched but, by the profile's choice, only records (e.g. `run-as-root`
/// under `policy.run_as_root = "audit"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// The rule's `Rule::name()`.
    pub rule: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// Which guard made the change: capabilities, seccomp, paths, userns, cgroups.
    pub guard: &'static str,
    pub what: String,
}

impl Report {
    fn change(&mut self, guard: &'static str, what: impl Into<String>) {
        self.changes.push(Change {
            guard,
            what: what.into(),
        });
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn finding(&mut self, rule: Rule, reason: impl Into<String>) {
        self.findings.push(Finding {
            rule: rule.name().to_string(),
            reason: reason.into(),
        });
    }
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
    ForeignNamespace,
    Sysctl,
    HostDevices,
    RunAsRoot,
    UnknownSandbox,
    HostPath,
    SecretInEnv,
    UsernsMapping,
    EphemeralStorage,
    EphemeralStorageCeiling,
}

impl Rule {
    pub const ALL: [Rule; 19] = [
        Rule::Privileged,
        Rule::HostNetwork,
        Rule::HostPid,
        Rule::HostIpc,
        Rule::ExtraCapabilities,
        Rule::UntrustedRegistry,
        Rule::CpuCeiling,
        Rule::MemoryCeiling,
        Rule::PidsCeiling,
        Rule::ForeignNamespace,
        Rule::Sysctl,
        Rule::HostDevices,
        Rule::RunAsRoot,
        Rule::UnknownSandbox,
        Rule::HostPath,
        Rule::SecretInEnv,
        Rule::UsernsMapping,
        Rule::EphemeralStorage,
        Rule::EphemeralStorageCeiling,
    ];

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
            Rule::ForeignNamespace => "foreign-namespace",
            Rule::Sysctl => "sysctl",
            Rule::HostDevices => "host-devices",
            Rule::RunAsRoot => "run-as-root",
            Rule::UnknownSandbox => "unknown-sandbox",
            Rule::HostPath => "host-path",
            Rule::SecretInEnv => "secret-in-env",
            Rule::UsernsMapping => "userns-mapping",
            Rule::EphemeralStorage => "ephemeral-storage",
            Rule::EphemeralStorageCeiling => "ephemeral-storage-ceiling",
        }
    }
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

/// Harden a container's spec.
pub fn harden(
    mut spec: Spec,
    profile: &Profile,
    ctx: &HardenContext,
) -> Result<Hardened, HardenError> {
    let mut report = Report::default();
    if spec.process().is_none() {
        return Err(HardenError::InvalidSpec("the spec has no `process`".into()));
    }
    let Some(root) = spec.root() else {
        return Err(HardenError::InvalidSpec("the spec has no `root`".into()));
    };
    check_root_path(root.path())?;
    if spec.linux().is_none() {
        return Err(HardenError::InvalidSpec(
            "the spec has no `linux` section".into(),
        ));
    }
    if !ctx.is_sandbox && ctx.pod_userns.is_none() {
        return Err(HardenError::InvalidSpec(format!(
            "container {} of pod {} has no pod user namespace to join",
            ctx.container_id, ctx.sandbox_id
        )));
    }

    cgroup_view::restore_cgroup_mount(&mut spec, &ctx.cgroup_v1);
    policy::check(&spec, profile, ctx, &mut report)?;
    sysctls::check(&spec, profile)?;
    secrets::check(&spec, profile.policy.secret_in_env, &mut report)?;
    let storage = storage::decide(&spec, profile, &ctx.writable_layer, &mut report)?;
    let kubelet_mapped = if kubelet_userns::is_stockade_range(&spec, profile, ctx.id_range) {
        None
    } else {
        kubelet_mapping(&spec, profile)?
    };
    if kubelet_mapped.is_some_and(|r| r != ctx.id_range) {
        return Err(HardenError::InvalidSpec(format!(
            "container {}: the pod's range {} is not kubelet's mapping in the spec",
            ctx.container_id, ctx.id_range
        )));
    }
    let volumes = volumes::plan(&mut spec, profile, ctx, &mut report)?;
    let pod_sysctls =
        sysctls::take_pod_netns_sysctls(&mut spec, profile, ctx.is_sandbox, &mut report);

    harden_process(&mut spec, profile, ctx, &mut report)?;
    harden_mounts(&mut spec, &mut report);
    propagation::for_libcontainer(&mut spec, &mut report);

    let mut linux = spec.linux().clone().unwrap_or_default();
    add_paths(&mut linux, profile, &mut report);
    join_user_namespace(&mut linux, ctx, kubelet_mapped.is_some(), &mut report)?;

    let limited = resources::limit(
        linux.resources().clone().unwrap_or_default(),
        &profile.cgroups,
        &mut report,
    )?;
    linux.set_resources(Some(limited));
    let given = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let path = placement::cgroups_path(given.as_deref(), &profile.cgroups, ctx, &mut report);
    linux.set_cgroups_path(Some(path));
    cgroup_view::emulate_v1(&mut spec, &mut linux, &ctx.cgroup_v1, &mut report)?;

    // libcontainer without libseccomp would silently ignore this: we install it ourselves.
    let pod_seccomp = linux.seccomp().clone();
    linux.set_seccomp(None);
    if let Some(pod) = &pod_seccomp {
        check_pod_seccomp(pod)?;
    }
    if pod_seccomp.is_some() {
        report.change(
            "seccomp",
            "the pod's seccomp profile is installed after the default one, so it can only narrow it",
        );
    }
    report.change(
        "seccomp",
        format!(
            "default filter from {} installed before exec",
            profile.seccomp.file.display()
        ),
    );
    spec.set_linux(Some(linux));

    Ok(Hardened {
        spec,
        seccomp: SeccompPlan {
            default: record::default_filter(profile, &mut report),
            pod: pod_seccomp,
        },
        pod_sysctls,
        volumes,
        storage,
        report,
    })
}

/// `root.path`: absolute, or relative to the bundle without leaving it (containerd writes
/// `rootfs`).
fn check_root_path(path: &std::path::Path) -> Result<(), HardenError> {
    if path.as_os_str().is_empty() {
        return Err(HardenError::InvalidSpec("root.path is empty".into()));
    }
    if path.is_relative()
        && path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(HardenError::InvalidSpec(format!(
            "root.path {path:?} is relative and contains `..`: it must stay inside the bundle \
             (or be absolute)"
        )));
    }
    Ok(())
}

/// The pod's own seccomp profile must compile before anything is set up for it (it is
/// compiled again, and installed, in the container's init).
fn check_pod_seccomp(pod: &LinuxSeccomp) -> Result<(), HardenError> {
    crate::seccomp::compile(pod).map_err(|e| {
        let e = e.to_string();
        let problem = e
            .strip_prefix("seccomp profile: ")
            .or_else(|| e.strip_prefix("seccomp: "))
            .unwrap_or(&e);
        HardenError::InvalidSpec(format!("linux.seccomp: {problem}"))
    })?;
    Ok(())
}

/// Clamp (or refuse) a resources update the same way `harden` does for Create. The
/// container's device rules are unknown here: an update may carry only the OCI default
/// device rules (which are then left as Create set them); prefer [`harden_update`].
pub fn harden_resources(
    resources: LinuxResources,
    profile: &Profile,
) -> Result<(LinuxResources, Report), HardenError> {
    harden_update(resources, None, profile)
}

/// [`harden_resources`] knowing the device rules the container was created with
/// (`linux.resources.devices` of its hardened spec): an update that changes them is
/// refused (`host-devices`); one that repeats them (as CRI's UpdateContainerResources
/// does) leaves the device cgroup as it is.
pub fn harden_update(
    resources: LinuxResources,
    created_devices: Option<&[LinuxDeviceCgroup]>,
    profile: &Profile,
) -> Result<(LinuxResources, Report), HardenError> {
    let mut report = Report::default();
    let resources = devices::check_update(resources, created_devices, &mut report)?;
    let limited = resources::limit(resources, &profile.cgroups, &mut report)?;
    Ok((limited, report))
}

fn harden_process(
    spec: &mut Spec,
    profile: &Profile,
    ctx: &HardenContext,
    report: &mut Report,
) -> Result<(), HardenError> {
    let mut process = spec.process().clone().unwrap_or_default();

    let allow = &profile.capabilities.allow;
    let requested = policy::requested_capabilities(spec);
    let mut dropped: Vec<String> = requested
        .iter()
        .filter(|c| !allow.contains(c))
        .map(|c| format!("CAP_{c}"))
        .collect();
    dropped.sort();
    if !dropped.is_empty() {
        report.change(
            "capabilities",
            format!("dropped (not in the allowlist): {}", dropped.join(", ")),
        );
    }
    let old = process.capabilities().clone();
    let clamp = |set: Option<&Capabilities>| -> Capabilities {
        set.map(|s| s.intersection(allow).copied().collect())
            .unwrap_or_default()
    };
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(clamp(
        old.as_ref().and_then(|c| c.bounding().as_ref()),
    )));
    caps.set_effective(Some(clamp(
        old.as_ref().and_then(|c| c.effective().as_ref()),
    )));
    caps.set_permitted(Some(clamp(
        old.as_ref().and_then(|c| c.permitted().as_ref()),
    )));
    // Nothing crosses exec for a non-root user.
    caps.set_inheritable(Some(Capabilities::new()));
    caps.set_ambient(Some(Capabilities::new()));
    if old.is_none() {
        report.change("capabilities", "the spec set none: every set is empty");
    }
    process.set_capabilities(Some(caps));

    if process.no_new_privileges() != Some(true) {
        report.change("capabilities", "no_new_privs set");
    }
    process.set_no_new_privileges(Some(true));

    let user = process.user();
    let size = ctx.id_range.size;
    let ids = std::iter::once(("process.user.uid", user.uid()))
        .chain(std::iter::once(("process.user.gid", user.gid())))
        .chain(
            user.additional_gids()
                .iter()
                .flatten()
                .map(|g| ("process.user.additionalGids", *g)),
        );
    for (what, id) in ids {
        if id >= size {
            return Err(HardenError::InvalidSpec(format!(
                "{what} {id} is outside the pod's user namespace (IDs 0..{size})"
            )));
        }
    }

    spec.set_process(Some(process));
    Ok(())
}

/// /sys and its cgroup view are read-only, as kubelet gives unprivileged containers.
fn harden_mounts(spec: &mut Spec, report: &mut Report) {
    let Some(mounts) = spec.mounts().clone() else {
        return;
    };
    let mounts: Vec<Mount> = mounts
        .into_iter()
        .map(|mut m| {
            let dest = m.destination().to_string_lossy().into_owned();
            let is_sys = matches!(
                m.typ().as_deref(),
                Some("sysfs") | Some("cgroup") | Some("cgroup2")
            ) && (dest == "/sys" || dest == "/sys/fs/cgroup");
            if is_sys {
                let mut options: Vec<String> = m.options().clone().unwrap_or_default();
                if !options.iter().any(|o| o == "ro") {
                    options.retain(|o| o != "rw");
                    options.push("ro".into());
                    report.change("paths", format!("{dest} mounted read-only"));
                    m.set_options(Some(options));
                }
            }
            m
        })
        .collect();
    spec.set_mounts(Some(mounts));
}

fn add_paths(linux: &mut crate::oci_spec::runtime::Linux, profile: &Profile, report: &mut Report) {
    let merge = |have: Option<Vec<String>>, want: &[String]| -> (Vec<String>, Vec<String>) {
        let mut paths = have.unwrap_or_default();
        let mut added = Vec::new();
        for p in want {
            if !paths.contains(p) {
                paths.push(p.clone());
                added.push(p.clone());
            }
        }
        (paths, added)
    };
    let (masked, added) = merge(linux.masked_paths().clone(), &profile.paths.masked);
    if !added.is_empty() {
        report.change("paths", format!("masked: {}", added.join(", ")));
    }
    linux.set_masked_paths(Some(masked));
    let (readonly, added) = merge(linux.readonly_paths().clone(), &profile.paths.readonly);
    if !added.is_empty() {
        report.change("paths", format!("read-only: {}", added.join(", ")));
    }
    linux.set_readonly_paths(Some(readonly));
}

/// The pod's user namespace: the sandbox creates it with the pod's mapping, app containers
/// join it by path. Also gives the container its own mount and cgroup namespaces, and a
/// UTS namespace wherever it has its own network.
fn join_user_namespace(
    linux: &mut crate::oci_spec::runtime::Linux,
    ctx: &HardenContext,
    kubelet_mapped: bool,
    report: &mut Report,
) -> Result<(), HardenError> {
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let user_ns = {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::User);
        ns.set_path(if ctx.is_sandbox {
            None
        } else {
            ctx.pod_userns.clone()
        });
        ns
    };
    match namespaces
        .iter_mut()
        .find(|n| n.typ() == LinuxNamespaceType::User)
    {
        Some(existing) if *existing == user_ns => {}
        Some(existing) => {
            report.change(
                "userns",
                if kubelet_mapped && ctx.is_sandbox {
                    format!(
                        "kubelet's mapping kept (container 0 is host {}), in a user namespace of \
                         the pod's own instead of containerd's pinned one",
                        ctx.id_range.first
                    )
                } else {
                    "the spec's user namespace replaced by the pod's".to_string()
                },
            );
            *existing = user_ns;
        }
        None => {
            namespaces.push(user_ns);
            report.change(
                "userns",
                if ctx.is_sandbox {
                    format!(
                        "new user namespace for pod {}: root is host ID {}",
                        ctx.sandbox_id, ctx.id_range.first
                    )
                } else {
                    format!("joins the user namespace of pod {}", ctx.sandbox_id)
                },
            );
        }
    }
    let has_net = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Network);
    for typ in [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Uts,
    ] {
        if typ == LinuxNamespaceType::Uts && !has_net {
            continue;
        }
        if !namespaces.iter().any(|n| n.typ() == typ) {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            namespaces.push(ns);
            report.change("userns", format!("own {typ} namespace added"));
        }
    }
    linux.set_namespaces(Some(namespaces));

    let mapping = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(ctx.id_range.first)
        .size(ctx.id_range.size)
        .build()
        .map_err(|e| HardenError::InvalidSpec(format!("ID mapping: {e}")))?;
    let foreign = |m: &Option<Vec<crate::oci_spec::runtime::LinuxIdMapping>>| {
        m.as_ref()
            .is_some_and(|m| !m.is_empty() && m.as_slice() != [mapping])
    };
    if foreign(linux.uid_mappings()) || foreign(linux.gid_mappings()) {
        report.change(
            "userns",
            format!(
                "the spec's uid/gid mappings replaced by the pod's range (container 0 is host {})",
                ctx.id_range.first
            ),
        );
    }
    linux.set_uid_mappings(Some(vec![mapping]));
    linux.set_gid_mappings(Some(vec![mapping]));
    Ok(())
}

#[cfg(test)]
mod tests;
