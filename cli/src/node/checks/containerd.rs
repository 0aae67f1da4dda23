//! containerd's settings: Stockade registered, privileged pods' devices, insecure
//! registries, and the CRI settings Stockade depends on.

use super::{Finding, Status};
use crate::node::facts::{ContainerdFacts, NodeFacts};

pub fn judge(facts: &NodeFacts) -> Vec<Finding> {
    let Some(c) = &facts.containerd else {
        return vec![Finding::new(
            Status::Fail,
            "containerd.config",
            "no containerd config file: containerd runs on its defaults",
            "without a runtime of type io.containerd.stockade.v1 no pod runs under Stockade",
            "add deploy/containerd-stockade.toml to containerd's config and restart containerd",
        )];
    };
    let mut out = Vec::new();
    for problem in &c.problems {
        out.push(Finding::new(
            Status::Fail,
            "containerd.config",
            problem.clone(),
            "containerd refuses a config it cannot read: it does not start, or not with this file",
            "fix the file named",
        ));
    }
    if c.files.is_empty() {
        return out;
    }
    let files: Vec<String> = c
        .files
        .iter()
        .map(|(p, v)| format!("{} (version {v})", p.display()))
        .collect();
    out.push(Finding::ok("containerd.config", files.join(", ")));
    out.push(stockade_registered(c));
    out.extend(privileged_devices(c));
    out.extend(insecure_registries(c));
    out.push(oom_score_adj(c, facts.cap_sys_resource));
    out.push(unprivileged_ports(c));
    out
}

fn stockade_registered(c: &ContainerdFacts) -> Finding {
    let ours: Vec<String> = c
        .runtimes
        .iter()
        .filter(|r| r.is_stockade())
        .map(|r| match &r.config_path {
            Some(p) => format!("{} ({p})", r.name),
            None => format!("{} (no ConfigPath: the shim's default profile)", r.name),
        })
        .collect();
    if ours.is_empty() {
        return Finding::new(
            Status::Fail,
            "containerd.stockade_runtime",
            "no runtime with runtime_type io.containerd.stockade.v1",
            "pods with runtimeClassName stockade fail to start (no such handler); every other \
             pod runs unhardened",
            "add deploy/containerd-stockade.toml (or the installer's drop-in) and restart containerd",
        );
    }
    Finding::ok("containerd.stockade_runtime", ours.join(", "))
}

fn privileged_devices(c: &ContainerdFacts) -> Vec<Finding> {
    // Stockade refuses privileged pods by policy; other runtimes run them.
    let open: Vec<&str> = c
        .runtimes
        .iter()
        .filter(|r| !r.is_stockade() && !r.privileged_without_host_devices)
        .map(|r| r.name.as_str())
        .collect();
    if open.is_empty() {
        return vec![Finding::ok(
            "containerd.privileged_without_host_devices",
            "no runtime hands privileged pods the host's devices",
        )];
    }
    vec![Finding::new(
        Status::Warn,
        "containerd.privileged_without_host_devices",
        format!("privileged pods get every host device under: {}", open.join(", ")),
        "a privileged pod of these runtimes sees /dev/sda, /dev/mem, /dev/kvm and every other \
         host device node, enough to read or rewrite the host's disks",
        "set privileged_without_host_devices = true on those runtimes (or admit no privileged pods)",
    )]
}

fn insecure_registries(c: &ContainerdFacts) -> Vec<Finding> {
    if c.insecure_registries.is_empty() {
        return vec![Finding::ok(
            "containerd.insecure_registries",
            "every registry is reached over verified TLS",
        )];
    }
    c.insecure_registries
        .iter()
        .map(|r| {
            Finding::new(
                Status::Warn,
                "containerd.insecure_registries",
                format!("{}: {} ({})", r.host, r.how, r.source),
                "images from this registry can be replaced in transit: Stockade's registry \
                 allowlist checks names, not who served the bytes",
                "use https with a trusted CA (hosts.toml `ca`) and drop insecure_skip_verify / http endpoints",
            )
        })
        .collect()
}

fn oom_score_adj(c: &ContainerdFacts, cap_sys_resource: Option<bool>) -> Finding {
    let check = "containerd.restrict_oom_score_adj";
    match (c.restrict_oom_score_adj.unwrap_or(false), cap_sys_resource) {
        (true, _) => Finding::ok(check, "restrict_oom_score_adj = true"),
        (false, Some(false)) => Finding::new(
            Status::Fail,
            check,
            "restrict_oom_score_adj is not set and root here lacks CAP_SYS_RESOURCE",
            "containerd's CRI sets each sandbox's oom_score_adj below its own, which fails \
             without CAP_SYS_RESOURCE: no pod sandbox starts",
            "set restrict_oom_score_adj = true in the CRI runtime plugin's section",
        ),
        (false, _) => Finding::ok(check, "not set (root has CAP_SYS_RESOURCE: not needed)"),
    }
}

fn unprivileged_ports(c: &ContainerdFacts) -> Finding {
    let check = "containerd.enable_unprivileged_ports";
    let major = c.major_version();
    let effective = c.enable_unprivileged_ports.or(major.map(|v| v >= 2));
    let observed = match (c.enable_unprivileged_ports, major) {
        (Some(v), _) => format!("enable_unprivileged_ports = {v}"),
        (None, Some(m)) => format!(
            "not set: containerd {m}.x defaults to {}",
            if m >= 2 { "on" } else { "off" }
        ),
        (None, None) => "not set: off on containerd 1.x, on from 2.0".to_string(),
    };
    if effective == Some(true) {
        return Finding::ok(
            check,
            format!("{observed} (sandboxes get net.ipv4.ip_unprivileged_port_start=0)"),
        );
    }
    // Ports below 1024 work either way: Stockade sets ip_unprivileged_port_start=0 itself
    // in a pod whose profile lets it hold CAP_NET_BIND_SERVICE. Only ICMP sockets (ping)
    // still depend on containerd's ping_group_range.
    Finding::new(
        Status::Info,
        check,
        format!("{observed} (Stockade lowers ip_unprivileged_port_start itself)"),
        "ping from a Stockade pod needs ICMP sockets (net.ipv4.ping_group_range), which \
         containerd sets only with enable_unprivileged_icmp; low ports are Stockade's own \
         business (its pods get ip_unprivileged_port_start=0 where NET_BIND_SERVICE is allowed)",
        "for ping in pods: enable_unprivileged_ports = true and enable_unprivileged_icmp = true",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::facts::{InsecureRegistry, RuntimeFact};

    fn runtime(name: &str, kind: &str, pwhd: bool) -> RuntimeFact {
        RuntimeFact {
            name: name.into(),
            runtime_type: kind.into(),
            privileged_without_host_devices: pwhd,
            config_path: None,
            systemd_cgroup: None,
        }
    }

    fn facts(c: ContainerdFacts, cap: Option<bool>) -> Vec<Finding> {
        judge(&NodeFacts {
            containerd: Some(c),
            cap_sys_resource: cap,
            ..NodeFacts::default()
        })
    }

    fn find<'a>(f: &'a [Finding], check: &str) -> Vec<&'a Finding> {
        f.iter().filter(|x| x.check == check).collect()
    }

    #[test]
    fn no_config_no_stockade() {
        let f = judge(&NodeFacts::default());
        assert_eq!(f[0].status, Status::Fail);
        let bare = ContainerdFacts {
            files: vec![("/etc/containerd/config.toml".into(), 2)],
            ..ContainerdFacts::default()
        };
        let f = facts(bare, Some(false));
        assert_eq!(
            find(&f, "containerd.stockade_runtime")[0].status,
            Status::Fail
        );
        assert_eq!(
            find(&f, "containerd.restrict_oom_score_adj")[0].status,
            Status::Fail
        );
        assert_eq!(
            find(&f, "containerd.enable_unprivileged_ports")[0].status,
            Status::Info
        );
    }

    #[test]
    fn weak_and_hardened_settings() {
        let weak = ContainerdFacts {
            files: vec![("/c".into(), 2)],
            runtimes: vec![
                runtime("runc", "io.containerd.runc.v2", false),
                runtime("stockade", "io.containerd.stockade.v1", false),
            ],
            enable_unprivileged_ports: Some(false),
            insecure_registries: vec![InsecureRegistry {
                host: "reg:5000".into(),
                how: "plain-http",
                source: "x".into(),
            }],
            ..ContainerdFacts::default()
        };
        let f = facts(weak, Some(true));
        let devices = find(&f, "containerd.privileged_without_host_devices");
        assert_eq!(devices[0].status, Status::Warn);
        assert!(devices[0].observed.contains("runc") && !devices[0].observed.contains("stockade"));
        assert_eq!(
            find(&f, "containerd.insecure_registries")[0].status,
            Status::Warn
        );
        assert_eq!(
            find(&f, "containerd.enable_unprivileged_ports")[0].status,
            Status::Info
        );
        assert_eq!(
            find(&f, "containerd.restrict_oom_score_adj")[0].status,
            Status::Ok
        );

        let good = ContainerdFacts {
            files: vec![("/c".into(), 3)],
            runtimes: vec![runtime("runc", "io.containerd.runc.v2", true)],
            restrict_oom_score_adj: Some(true),
            ..ContainerdFacts::default()
        };
        let f = facts(good, Some(false));
        // Version 3: containerd 2.x, whose default turns unprivileged ports on.
        assert_eq!(
            find(&f, "containerd.enable_unprivileged_ports")[0].status,
            Status::Ok
        );
        assert_eq!(
            find(&f, "containerd.privileged_without_host_devices")[0].status,
            Status::Ok
        );
        assert_eq!(
            find(&f, "containerd.restrict_oom_score_adj")[0].status,
            Status::Ok
        );
    }
}
