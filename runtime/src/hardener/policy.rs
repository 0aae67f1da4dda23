//! Policy: what a profile refuses outright, checked before anything is changed.

use super::registry::ImageOrigin;
use super::{Refusal, Report, Rule};
use crate::oci_spec::runtime::{Capabilities, Capability, LinuxNamespaceType, Spec};
use crate::pod::ANNOTATION_IMAGE_NAME;
use crate::profile::{Profile, Verdict};

/// Every check in order; the first rule that refuses wins.
pub(crate) fn check(spec: &Spec, profile: &Profile, report: &mut Report) -> Result<(), Refusal> {
    let policy = &profile.policy;
    if policy.privileged == Verdict::Deny {
        if let Some(why) = privileged_reason(spec) {
            return Err(Refusal {
                rule: Rule::Privileged,
                reason: format!("privileged containers are not allowed: {why}"),
            });
        }
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

    check_registry(spec, &policy.allowed_registries, report)
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
    let image = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_IMAGE_NAME))
        .filter(|v| !v.is_empty());
    let Some(image) = image else {
        report.note(format!(
            "no {ANNOTATION_IMAGE_NAME} annotation (not a CRI container): registry not checked"
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
