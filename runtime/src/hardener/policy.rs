//! Policy: what a profile refuses outright, checked before anything is changed.

use super::registry::ImageOrigin;
use super::{devices, HardenContext, Refusal, Report, Rule};
use crate::oci_spec::runtime::{
    Capabilities, Capability, LinuxNamespace, LinuxNamespaceType, Spec,
};
use crate::pod::{self, ANNOTATION_IMAGE_NAME};
use crate::profile::{Profile, RootPolicy, Verdict};
use std::path::{Component, Path};

/// Every check in order; the first rule that refuses wins.
pub(crate) fn check(
    spec: &Spec,
    profile: &Profile,
    ctx: &HardenContext,
    report: &mut Report,
) -> Result<(), Refusal> {
    let policy = &profile.policy;
    let privileged = privileged_reason(spec);
    if let Some(why) = &privileged {
        if policy.privileged == Verdict::Deny {
            return Err(Refusal {
                rule: Rule::Privileged,
                reason: format!("privileged containers are not allowed: {why}"),
            });
        }
        report.note(format!(
            "privileged container allowed by the profile ({why}): host devices not checked"
        ));
    } else {
        devices::check_create(spec, profile)?;
    }

    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    for (typ, verdict, rule, name) in [
        (
            LinuxNamespaceType::Network,
            policy.host_network,
            Rule::HostNetwork,
            "network",
        ),
        (
            LinuxNamespaceType::Pid,
            policy.host_pid,
            Rule::HostPid,
            "PID",
        ),
        (
            LinuxNamespaceType::Ipc,
            policy.host_ipc,
            Rule::HostIpc,
            "IPC",
        ),
    ] {
        if !has(typ) {
            if verdict == Verdict::Deny {
                return Err(Refusal {
                    rule,
                    reason: format!("the container asks for the host's {name} namespace"),
                });
            }
            report.note(format!("host {name} namespace allowed by the profile"));
        }
    }
    check_joined_namespaces(&namespaces, policy.host_network, ctx, report)?;

    let extra = extra_capabilities(spec, profile);
    if !extra.is_empty() {
        if policy.extra_capabilities == Verdict::Deny {
            return Err(Refusal {
                rule: Rule::ExtraCapabilities,
                reason: format!(
                    "capabilities beyond the profile's allowlist were asked for: {}",
                    extra.join(", ")
                ),
            });
        }
        report.note(format!(
            "extra capabilities allowed by policy but dropped by the allowlist: {}",
            extra.join(", ")
        ));
    }

    check_registry(spec, &policy.allowed_registries, report)?;
    check_run_as_root(spec, policy.run_as_root, ctx, report)
}

/// The `run-as-root` rule: an app container's process must not run as UID 0 (root in the
/// pod's user namespace still owns the container's files and can reach everything the
/// capability allowlist leaves it). containerd has already resolved the image's USER (or
/// the pod's runAsUser) into `process.user`. The pod sandbox (pause) is exempt.
fn check_run_as_root(
    spec: &Spec,
    mode: RootPolicy,
    ctx: &HardenContext,
    report: &mut Report,
) -> Result<(), Refusal> {
    let annotations = spec.annotations().clone().unwrap_or_default();
    let user = spec
        .process()
        .as_ref()
        .map(|p| p.user().clone())
        .unwrap_or_default();
    if mode == RootPolicy::Allow
        || user.uid() != 0
        || (ctx.is_sandbox && pod::is_cri_sandbox(&annotations))
    {
        return Ok(());
    }
    let image = match pod::trusted_image_name(&annotations) {
        Some(image) => format!("image {image:?}"),
        None => "the image".to_string(),
    };
    let reason = format!(
        "the container's process would run as root: UID 0, GID {} (the user of {image}, or \
         the pod's runAsUser); run it as an application user: in Kubernetes set \
         securityContext.runAsUser (e.g. 1000) and runAsNonRoot: true on the pod or \
         container, or USER in the image; with `ctr run` (containerd 2), --user 1000:1000",
        user.gid()
    );
    if mode == RootPolicy::Deny {
        return Err(Refusal {
            rule: Rule::RunAsRoot,
            reason,
        });
    }
    report.finding(Rule::RunAsRoot, reason);
    Ok(())
}

/// A namespace given by path is joined, not created. Only two kinds of path are allowed:
/// `/proc/PID/ns/<type>` of a container of the same pod (CRI's shared IPC, UTS, network and
/// PID namespaces), and, for the network, a pinned namespace file outside /proc (CNI's
/// `/var/run/netns/cni-...`) that is not the host's. Anything else would put the container
/// into the host's or another pod's namespace: the zygote enters a network namespace as
/// host root, so the kernel's own checks would not stop that one.
fn check_joined_namespaces(
    namespaces: &[LinuxNamespace],
    host_network: Verdict,
    ctx: &HardenContext,
    report: &mut Report,
) -> Result<(), Refusal> {
    for ns in namespaces {
        let Some(path) = ns.path() else { continue };
        let typ = ns.typ();
        // The hardener replaces any user namespace with the pod's own.
        if typ == LinuxNamespaceType::User {
            continue;
        }
        if proc_ns_pid(path, typ).is_some_and(|pid| ctx.pod_pids.contains(&pid)) {
            continue;
        }
        let pinned = path.is_absolute()
            && !path.starts_with("/proc")
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if typ == LinuxNamespaceType::Network && pinned {
            if !ctx.netns_path_is_host {
                continue;
            }
            if host_network == Verdict::Deny {
                return Err(Refusal {
                    rule: Rule::HostNetwork,
                    reason: format!("the network namespace at {} is the host's", path.display()),
                });
            }
            report.note("host network namespace (by path) allowed by the profile");
            continue;
        }
        return Err(Refusal {
            rule: Rule::ForeignNamespace,
            reason: format!(
                "the container would join the {typ} namespace at {}, which is not its pod's: \
                 a container may join only the namespaces of its own pod's containers",
                path.display()
            ),
        });
    }
    Ok(())
}

/// The PID of a `/proc/PID/ns/<file>` path naming a namespace of type `typ`.
fn proc_ns_pid(path: &Path, typ: LinuxNamespaceType) -> Option<i32> {
    let file = match typ {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
        LinuxNamespaceType::User => "user",
    };
    let mut parts = path.components();
    if parts.next() != Some(Component::RootDir)
        || parts.next() != Some(Component::Normal("proc".as_ref()))
    {
        return None;
    }
    let pid = match parts.next() {
        Some(Component::Normal(pid)) => pid.to_str()?.parse::<i32>().ok()?,
        _ => return None,
    };
    let rest: Vec<_> = parts.collect();
    (rest
        == [
            Component::Normal("ns".as_ref()),
            Component::Normal(file.as_ref()),
        ]
        && pid > 0)
        .then_some(pid)
}

/// Why a spec looks like a privileged container (CRI `privileged: true`, `ctr
/// --privileged`), if it does.
fn privileged_reason(spec: &Spec) -> Option<String> {
    let linux = spec.linux().as_ref()?;
    let all_devices = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().as_ref())
        .is_some_and(|rules| {
            rules.iter().any(|d| {
                d.allow()
                    && d.major().is_none()
                    && d.minor().is_none()
                    && d.typ().is_none_or(|t| t.as_str() == "a")
            })
        });
    if all_devices {
        return Some("its device cgroup allows every device".into());
    }
    let unmasked = linux.masked_paths().as_ref().is_none_or(Vec::is_empty)
        && linux.readonly_paths().as_ref().is_none_or(Vec::is_empty);
    if unmasked && requested_capabilities(spec).contains(&Capability::SysAdmin) {
        return Some("it holds CAP_SYS_ADMIN with no masked or read-only paths".into());
    }
    None
}

/// The union of every capability set in the spec.
pub(crate) fn requested_capabilities(spec: &Spec) -> Capabilities {
    let Some(caps) = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
    else {
        return Capabilities::new();
    };
    [
        caps.bounding(),
        caps.effective(),
        caps.permitted(),
        caps.inheritable(),
        caps.ambient(),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .copied()
    .collect()
}

/// Capabilities asked for that are neither allowed nor runtime defaults, sorted.
fn extra_capabilities(spec: &Spec, profile: &Profile) -> Vec<String> {
    let caps = &profile.capabilities;
    let mut extra: Vec<String> = requested_capabilities(spec)
        .into_iter()
        .filter(|c| !caps.allow.contains(c) && !caps.runtime_defaults.contains(c))
        .map(|c| format!("CAP_{c}"))
        .collect();
    extra.sort();
    extra
}

fn check_registry(spec: &Spec, allowed: &[String], report: &mut Report) -> Result<(), Refusal> {
    if allowed.is_empty() {
        return Ok(());
    }
    let annotations = spec.annotations().clone().unwrap_or_default();
    let Some(image) = pod::trusted_image_name(&annotations) else {
        report.note(format!(
            "no {ANNOTATION_IMAGE_NAME} annotation written by CRI (a pod sandbox, or not a \
             CRI container): registry not checked"
        ));
        return Ok(());
    };
    let origin = ImageOrigin::parse(image).ok_or_else(|| Refusal {
        rule: Rule::UntrustedRegistry,
        reason: format!("image name {image:?} cannot be parsed"),
    })?;
    if allowed.iter().any(|p| origin.matches(p)) {
        Ok(())
    } else {
        Err(Refusal {
            rule: Rule::UntrustedRegistry,
            reason: format!(
                "image {image:?} comes from {}, which is not in the allowed registries ({})",
                origin.domain,
                allowed.join(", ")
            ),
        })
    }
}
