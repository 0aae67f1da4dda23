//! Pod sysctls: which a container may set (the profile's allowlist, rule `sysctl`), and
//! where each is applied.
//!
//! A pod's network namespace (made by containerd, named by path) belongs to the host's
//! user namespace: from inside the container's own user namespace its `net.*` sysctls
//! cannot be written, and libcontainer refuses them for a network namespace it does not
//! make. So the `net.*` sysctls of such a container are taken out of the spec and handed to
//! the shim, which writes them as host root inside that namespace before the container's
//! user namespace exists. The others (`kernel.shm*`, `kernel.msg*`, `fs.mqueue.*`: the
//! IPC namespace's, owned by the container) stay for libcontainer.

use std::collections::BTreeMap;

use super::{Refusal, Report, Rule};
use crate::oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};
use crate::profile::Profile;

/// Lets a pod's root bind ports below 1024 in a network namespace it does not own
/// (containerd 2.x sets it for every pod by default).
pub const UNPRIVILEGED_PORT_START: &str = "net.ipv4.ip_unprivileged_port_start";

/// Kubernetes' safe sysctls: namespaced, and unable to affect other pods or the node.
pub const KUBERNETES_SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
];

/// `name` matches an allowlist entry: the same name, or a prefix entry ending in `*`.
fn allowed(name: &str, allowlist: &[String]) -> bool {
    allowlist.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == entry,
    })
}

/// Refuse a sysctl outside the profile's allowlist.
pub(super) fn check(spec: &Spec, profile: &Profile) -> Result<(), Refusal> {
    let sysctls = spec.linux().as_ref().and_then(|l| l.sysctl().clone());
    for name in sysctls.iter().flat_map(|s| s.keys()) {
        if !allowed(name, &profile.policy.allowed_sysctls) {
            return Err(Refusal {
                rule: Rule::Sysctl,
                reason: format!(
                    "sysctl {name:?} is not in the profile's policy.allowed_sysctls ({})",
                    profile.policy.allowed_sysctls.join(", ")
                ),
            });
        }
    }
    Ok(())
}

fn joins_netns_by_path(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_some())
        })
}

/// Take the `net.*` sysctls out of a spec that joins a network namespace by path, and add
/// `ip_unprivileged_port_start=0` to a sandbox's when its containers may hold
/// NET_BIND_SERVICE (what containerd 2.x does by default). Returns what the shim applies
/// in that namespace.
pub(super) fn take_pod_netns_sysctls(
    spec: &mut Spec,
    profile: &Profile,
    is_sandbox: bool,
    report: &mut Report,
) -> BTreeMap<String, String> {
    let mut taken = BTreeMap::new();
    if !joins_netns_by_path(spec) {
        return taken;
    }
    let Some(mut linux) = spec.linux().clone() else {
        return taken;
    };
    let mut sysctls = linux.sysctl().clone().unwrap_or_default();
    sysctls.retain(|name, value| {
        if name.starts_with("net.") {
            taken.insert(name.clone(), value.clone());
            false
        } else {
            true
        }
    });
    if !taken.is_empty() {
        report.change(
            "sysctls",
            format!(
                "{} set by the shim inside the pod's network namespace",
                taken.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let binds_low_ports = profile
        .capabilities
        .allow
        .contains(&Capability::NetBindService);
    if is_sandbox && binds_low_ports && !taken.contains_key(UNPRIVILEGED_PORT_START) {
        taken.insert(UNPRIVILEGED_PORT_START.to_string(), "0".to_string());
        report.change(
            "sysctls",
            format!(
                "{UNPRIVILEGED_PORT_START}=0 in the pod's network namespace: the profile allows \
                 NET_BIND_SERVICE, which a user-namespaced root cannot use in a namespace it \
                 does not own"
            ),
        );
    }
    linux.set_sysctl((!sysctls.is_empty()).then_some(sysctls));
    spec.set_linux(Some(linux));
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardener::{harden, HardenContext, HardenError};
    use crate::idrange::IdRange;
    use std::path::Path;

    fn allowed_in(name: &str, list: &[&str]) -> bool {
        allowed(
            name,
            &list.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn prefix_entries_match_and_exact_entries_do_not_widen() {
        let list = ["net.ipv4.tcp_*", "kernel.shm_rmid_forced"];
        assert!(allowed_in("net.ipv4.tcp_syncookies", &list));
        assert!(allowed_in("kernel.shm_rmid_forced", &list));
        assert!(!allowed_in("kernel.shm_rmid_forced2", &list));
        assert!(!allowed_in("net.ipv4.ip_forward", &list));
    }

    fn profile(name: &str) -> Profile {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        Profile::load(&dir.join(format!("{name}.toml"))).unwrap()
    }

    /// The sandbox spec containerd 2.x writes with its defaults (enable_unprivileged_*).
    fn sandbox(sysctls: &[(&str, &str)]) -> Spec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cri-sandbox.json");
        let mut spec = Spec::load(path).unwrap();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_sysctl(Some(
            sysctls
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        spec.set_linux(Some(linux));
        spec
    }

    fn ctx() -> HardenContext {
        HardenContext {
            container_id: "c1".into(),
            sandbox_id: "c1".into(),
            is_sandbox: true,
            id_range: IdRange {
                first: 1_073_807_360,
                size: 65_536,
            },
            pod_userns: None,
            pod_pids: Vec::new(),
            netns_path_is_host: false,
            cgroup_driver: crate::hardener::CgroupDriver::Cgroupfs,
            cgroup_v1: Vec::new(),
            resolved_sources: Default::default(),
            writable_layer: Default::default(),
        }
    }

    #[test]
    fn net_sysctls_of_a_pod_netns_go_to_the_shim_and_the_rest_stay() {
        let spec = sandbox(&[
            ("net.ipv4.ip_unprivileged_port_start", "0"),
            ("net.ipv4.ping_group_range", "0 2147483647"),
            ("kernel.shm_rmid_forced", "1"),
        ]);
        let h = harden(spec, &profile("default"), &ctx()).unwrap();
        let left = h.spec.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert_eq!(left.keys().collect::<Vec<_>>(), ["kernel.shm_rmid_forced"]);
        assert_eq!(
            h.pod_sysctls,
            BTreeMap::from([
                ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
                ("net.ipv4.ping_group_range".into(), "0 2147483647".into()),
            ])
        );
    }

    #[test]
    fn low_ports_follow_net_bind_service_and_a_pod_value_wins() {
        let h = harden(sandbox(&[]), &profile("default"), &ctx()).unwrap();
        assert_eq!(
            h.pod_sysctls
                .get(UNPRIVILEGED_PORT_START)
                .map(String::as_str),
            Some("0")
        );
        let mut no_bind = profile("default");
        no_bind
            .capabilities
            .allow
            .remove(&Capability::NetBindService);
        // containerd asks for it by default: dropped, not refused, under this profile.
        no_bind
            .capabilities
            .runtime_defaults
            .insert(Capability::NetBindService);
        let h = harden(sandbox(&[]), &no_bind, &ctx()).unwrap();
        assert!(h.pod_sysctls.is_empty(), "{:?}", h.pod_sysctls);
        let spec = sandbox(&[(UNPRIVILEGED_PORT_START, "80")]);
        let h = harden(spec, &profile("default"), &ctx()).unwrap();
        assert_eq!(h.pod_sysctls[UNPRIVILEGED_PORT_START], "80");
    }

    #[test]
    fn a_sysctl_outside_the_allowlist_is_refused_by_name() {
        for name in [
            "net.ipv4.ip_forward",
            "kernel.msgmax",
            "vm.overcommit_memory",
        ] {
            let err = harden(sandbox(&[(name, "1")]), &profile("default"), &ctx()).unwrap_err();
            match err {
                HardenError::Refused(r) => {
                    assert_eq!(r.rule, Rule::Sysctl);
                    assert!(r.to_string().contains(name), "{r}");
                    assert!(r.to_string().contains("`sysctl`"), "{r}");
                }
                other => panic!("{name}: {other}"),
            }
        }
    }

    #[test]
    fn a_container_that_makes_its_own_netns_keeps_its_net_sysctls() {
        let mut spec = sandbox(&[("net.ipv4.tcp_syncookies", "1")]);
        let mut linux = spec.linux().clone().unwrap();
        let namespaces = linux
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .map(|n| {
                if n.typ() == LinuxNamespaceType::Network {
                    let mut n = n;
                    n.set_path(None);
                    n
                } else {
                    n
                }
            })
            .collect();
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        let h = harden(spec, &profile("default"), &ctx()).unwrap();
        assert!(h.pod_sysctls.is_empty());
        let left = h.spec.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert!(left.contains_key("net.ipv4.tcp_syncookies"));
    }
}
