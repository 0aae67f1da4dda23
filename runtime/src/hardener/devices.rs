//! The `host-devices` rule: a container gets the OCI default devices and, beyond them,
//! only the device paths the profile allows (`policy.allowed_devices`). Checked on the
//! device nodes (`linux.devices`) and on the device cgroup rules
//! (`linux.resources.devices`), which could open a device without a node (a node can be
//! made later, or reached through another path). An Update may not change the rules.

use super::{Refusal, Report, Rule};
use crate::oci_spec::runtime::{
    LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Spec,
};
use crate::profile::Profile;

/// The devices every OCI runtime gives a container: (path, type, major, minor). Also
/// /dev/net/tun, which containerd 1.6's defaults still allow (1.7 dropped it); opening it
/// does nothing without CAP_NET_ADMIN over the pod's network namespace, owned by the
/// host's user namespace.
const DEFAULT_DEVICES: [(&str, LinuxDeviceType, i64, i64); 9] = [
    ("/dev/null", LinuxDeviceType::C, 1, 3),
    ("/dev/zero", LinuxDeviceType::C, 1, 5),
    ("/dev/full", LinuxDeviceType::C, 1, 7),
    ("/dev/random", LinuxDeviceType::C, 1, 8),
    ("/dev/urandom", LinuxDeviceType::C, 1, 9),
    ("/dev/tty", LinuxDeviceType::C, 5, 0),
    ("/dev/console", LinuxDeviceType::C, 5, 1),
    ("/dev/ptmx", LinuxDeviceType::C, 5, 2),
    ("/dev/net/tun", LinuxDeviceType::C, 10, 200),
];
/// /dev/pts/*: the one wildcard rule of the defaults (containerd's WithDefaultUnixDevices).
const PTS_MAJOR: i64 = 136;

/// (type, major, minor) of a device a rule may open.
type DeviceId = (LinuxDeviceType, i64, i64);

fn kind(t: LinuxDeviceType) -> &'static str {
    match t {
        LinuxDeviceType::B => "block",
        LinuxDeviceType::C | LinuxDeviceType::U => "character",
        LinuxDeviceType::P => "FIFO",
        LinuxDeviceType::A => "any",
    }
}

fn describe_node(d: &LinuxDevice) -> String {
    format!(
        "{} ({} {}:{})",
        d.path().display(),
        kind(d.typ()),
        d.major(),
        d.minor()
    )
}

fn refuse(reason: String) -> Refusal {
    Refusal {
        rule: Rule::HostDevices,
        reason,
    }
}

fn allowlist(profile: &Profile) -> String {
    match profile.policy.allowed_devices.as_slice() {
        [] => "policy.allowed_devices is empty: none beyond the OCI defaults".into(),
        list => format!("policy.allowed_devices: {}", list.join(", ")),
    }
}

/// Whether a rule can only narrow or only allows mknod (a node made under a user
/// namespace cannot be opened anyway, and reading needs its own rule).
fn harmless(rule: &LinuxDeviceCgroup) -> bool {
    !rule.allow()
        || rule
            .access()
            .as_deref()
            .is_some_and(|a| !a.is_empty() && a.chars().all(|c| c == 'm'))
}

/// A default rule: a default device by number, or /dev/pts/*.
fn is_default_rule(rule: &LinuxDeviceCgroup) -> bool {
    match (rule.typ(), rule.major(), rule.minor()) {
        (Some(LinuxDeviceType::C), Some(PTS_MAJOR), None) => true,
        (Some(t), Some(major), Some(minor)) => DEFAULT_DEVICES
            .iter()
            .any(|(_, dt, dm, dn)| (*dt, *dm, *dn) == (t, major, minor)),
        _ => false,
    }
}

/// Check a Create's device nodes and device cgroup rules.
pub(crate) fn check_create(spec: &Spec, profile: &Profile) -> Result<(), Refusal> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let mut permitted: Vec<DeviceId> = Vec::new();
    for d in linux.devices().iter().flatten() {
        let path = d.path().to_string_lossy();
        let id = (d.typ(), d.major(), d.minor());
        if let Some((_, t, major, minor)) = DEFAULT_DEVICES.iter().find(|(p, ..)| *p == path) {
            if id != (*t, *major, *minor) {
                return Err(refuse(format!(
                    "the container asks for {} under the name of the OCI default device \
                     {path}, which is {} {major}:{minor}",
                    describe_node(d),
                    kind(*t)
                )));
            }
        } else if !profile.policy.allowed_devices.iter().any(|a| *a == path) {
            return Err(refuse(format!(
                "the container asks for host device {}, which is not allowed ({})",
                describe_node(d),
                allowlist(profile)
            )));
        }
        permitted.push(id);
    }
    let rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    for rule in &rules {
        if harmless(rule) || is_default_rule(rule) {
            continue;
        }
        let matches_a_node = match (rule.typ(), rule.major(), rule.minor()) {
            (Some(t), Some(major), Some(minor)) => permitted.contains(&(t, major, minor)),
            _ => false,
        };
        if !matches_a_node {
            return Err(refuse(format!(
                "the device cgroup rule `allow {rule}` opens devices beyond the OCI defaults \
                 and the container's allowed device nodes ({})",
                allowlist(profile)
            )));
        }
    }
    Ok(())
}

/// Check an Update's device rules: with the Create's rules known, they must be the same
/// (in any order); unknown, only default and harmless rules. Either way the rules are
/// taken out of the update, so the device cgroup stays as Create set it.
pub(crate) fn check_update(
    mut resources: LinuxResources,
    created: Option<&[LinuxDeviceCgroup]>,
    report: &mut Report,
) -> Result<LinuxResources, Refusal> {
    let Some(rules) = resources.devices().clone().filter(|r| !r.is_empty()) else {
        return Ok(resources);
    };
    let changed: Vec<String> = match created {
        Some(created) => {
            let missing = created.iter().filter(|c| !rules.contains(c));
            let added = rules.iter().filter(|r| !created.contains(r));
            added
                .map(|r| format!("adds `{}`", describe_rule(r)))
                .chain(missing.map(|c| format!("drops `{}`", describe_rule(c))))
                .collect()
        }
        None => rules
            .iter()
            .filter(|r| !harmless(r) && !is_default_rule(r))
            .map(|r| format!("adds `{}`", describe_rule(r)))
            .collect(),
    };
    if !changed.is_empty() {
        return Err(refuse(format!(
            "an Update may not change the container's device rules; this one {}",
            changed.join(", ")
        )));
    }
    report.change(
        "devices",
        "the update's device rules repeat the container's: the device cgroup is left as Create set it",
    );
    resources.set_devices(None);
    Ok(resources)
}

fn describe_rule(rule: &LinuxDeviceCgroup) -> String {
    format!("{} {rule}", if rule.allow() { "allow" } else { "deny" })
}
