//! cgroups (version and driver), Stockade's ID pool against /etc/subuid and /etc/subgid,
//! and the profiles in use.

use super::{Finding, Status};
use crate::node::facts::{CgroupVersion, NodeFacts, ProfileSummary, SubIds};

pub fn judge(facts: &NodeFacts) -> Vec<Finding> {
    let mut out = vec![cgroup_version(facts.cgroup.version), cgroup_driver(facts)];
    let pools = pools(facts);
    for ids in [&facts.subuid, &facts.subgid] {
        out.extend(id_pool(&pools, ids));
    }
    out.extend(useradd_range(&pools, facts.useradd_subuid_range));
    out.extend(profiles(facts));
    out
}

fn cgroup_version(version: CgroupVersion) -> Finding {
    let check = "cgroup.version";
    match version {
        CgroupVersion::V2 => Finding::new(
            Status::Info,
            check,
            "cgroup v2",
            "Stockade's libcontainer is built without `cgroupsv2_devices`: on v2 no device \
             cgroup rules are applied (containers still cannot create device nodes in their \
             user namespace, and get only the /dev entries of their spec)",
            "none needed; keep privileged pods refused",
        ),
        CgroupVersion::Hybrid | CgroupVersion::V1 => Finding::new(
            Status::Warn,
            check,
            format!(
                "cgroup v1{}",
                if version == CgroupVersion::Hybrid {
                    " (hybrid: v2 mounted without controllers)"
                } else {
                    ""
                }
            ),
            "v1 has no memory.oom.group (a container's processes are OOM-killed one by one), \
             no PSI, and Kubernetes keeps v1 in maintenance only (kubelet refuses it by default \
             from 1.35)",
            "boot with systemd.unified_cgroup_hierarchy=1 (or cgroup_no_v1=all)",
        ),
        CgroupVersion::Unknown => Finding::new(
            Status::Fail,
            check,
            "no cgroup mount at /sys/fs/cgroup",
            "Stockade enforces CPU, memory and pids limits through cgroups",
            "mount cgroup2 at /sys/fs/cgroup",
        ),
    }
}

fn cgroup_driver(facts: &NodeFacts) -> Finding {
    let check = "cgroup.driver";
    let kubelet = facts.kubelet_cgroup_driver.as_deref();
    let runc_systemd = facts
        .containerd
        .iter()
        .flat_map(|c| &c.runtimes)
        .filter(|r| r.systemd_cgroup == Some(true))
        .map(|r| r.name.clone())
        .collect::<Vec<_>>();
    let why = "kubelet's systemd driver gives containerd `slice:prefix:name` cgroup paths; \
               Stockade takes only absolute (cgroupfs) paths, so its pods fail to start";
    match kubelet {
        Some("systemd") => Finding::new(
            Status::Fail,
            check,
            "kubelet cgroupDriver: systemd",
            why,
            "cgroupDriver: cgroupfs in kubelet's config (and SystemdCgroup = false for runc)",
        ),
        Some(driver) => Finding::ok(check, format!("kubelet cgroupDriver: {driver}")),
        None if !runc_systemd.is_empty() => Finding::new(
            Status::Warn,
            check,
            format!(
                "SystemdCgroup = true for {} (kubelet's config not found)",
                runc_systemd.join(", ")
            ),
            format!(
                "containerd and kubelet must agree on the driver: this suggests systemd, and {why}"
            ),
            "cgroupDriver: cgroupfs in kubelet's config, SystemdCgroup = false for runc",
        ),
        None => Finding::ok(check, "cgroupfs (no systemd driver configured)"),
    }
}

/// The distinct ID pools of the profiles in use: (profile, first, size).
fn pools(facts: &NodeFacts) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    for p in facts
        .profiles
        .iter()
        .filter_map(|p| p.summary.as_ref().ok())
    {
        if !out.iter().any(|(_, f, s)| (*f, *s) == (p.first_id, p.size)) {
            out.push((p.name.clone(), p.first_id, p.size));
        }
    }
    out
}

fn id_pool(pools: &[(String, u64, u64)], ids: &SubIds) -> Vec<Finding> {
    let file = ids.path.display().to_string();
    let check = format!("ids.{}", file.trim_start_matches("/etc/"));
    let mut out = Vec::new();
    for (profile, first, size) in pools {
        let end = first + size;
        let range = format!("{first}..{end}");
        let overlaps: Vec<&(String, u64, u64)> = ids
            .entries
            .iter()
            .filter(|(owner, start, count)| {
                owner != "stockade" && *start < end && first < &(start + count)
            })
            .collect();
        for (owner, start, count) in &overlaps {
            let why = if owner == "kubelet" {
                "kubelet gives pods with hostUsers: false (under runc) host IDs from this entry: \
                 such a pod and a Stockade pod can run as the same host user and read or \
                 signal each other's processes and files"
                    .to_string()
            } else {
                format!(
                    "{owner}'s rootless containers and user namespaces run as these host IDs: \
                     they and Stockade pods can reach each other's processes and files"
                )
            };
            out.push(Finding::new(
                Status::Fail,
                check.clone(),
                format!(
                    "profile {profile:?}'s pool {range} overlaps {owner}:{start}:{count} in {file}"
                ),
                why,
                format!(
                    "move the pool ([userns] first_id) or the {owner} entry so they do not overlap"
                ),
            ));
        }
        if overlaps.is_empty() {
            let reserved = ids.entries.iter().any(|(owner, start, count)| {
                owner == "stockade" && *start <= *first && end <= start + count
            });
            out.push(if reserved {
                Finding::ok(
                    check.clone(),
                    format!("pool {range} reserved as `stockade` in {file}"),
                )
            } else {
                Finding::new(
                    Status::Info,
                    check.clone(),
                    format!("pool {range} overlaps nothing in {file}, but is not reserved"),
                    "nothing stops a later `useradd` or a kubelet entry from being given these IDs",
                    format!("add `stockade:{first}:{size}` to {file}"),
                )
            });
        }
    }
    out
}

fn useradd_range(pools: &[(String, u64, u64)], (min, max): (u64, u64)) -> Vec<Finding> {
    pools
        .iter()
        .filter(|(_, first, size)| *first <= max && min < first + size)
        .map(|(profile, first, size)| {
            Finding::new(
                Status::Warn,
                "ids.useradd_range",
                format!("profile {profile:?}'s pool {first}..{} is inside useradd's SUB_UID range {min}..{max}", first + size),
                "new users get subordinate IDs from this range automatically: they would share host IDs with Stockade pods",
                "move the pool above SUB_UID_MAX, or reserve it in /etc/subuid and /etc/subgid",
            )
        })
        .collect()
}

/// Capabilities that undo the isolation of a user namespace or the host's network.
const DANGEROUS_CAPS: &[&str] = &[
    "SYS_ADMIN",
    "SYS_PTRACE",
    "SYS_MODULE",
    "SYS_RAWIO",
    "NET_ADMIN",
    "NET_RAW",
    "DAC_READ_SEARCH",
    "BPF",
    "PERFMON",
    "SYS_BOOT",
    "SYSLOG",
    "MAC_ADMIN",
];

fn profiles(facts: &NodeFacts) -> Vec<Finding> {
    if facts.profiles.is_empty() {
        return vec![Finding::new(
            Status::Info,
            "profiles",
            "no profile in use (no Stockade runtime, no --profile)",
            "nothing to check",
            "register Stockade with containerd",
        )];
    }
    let mut out = Vec::new();
    for p in &facts.profiles {
        let check = format!("profile.{}", p.path.display());
        let used_by = if p.handlers.is_empty() {
            "no containerd handler uses it".to_string()
        } else {
            format!("handlers {}", p.handlers.join(", "))
        };
        match &p.summary {
            Err(e) => out.push(Finding::new(
                Status::Fail,
                check,
                format!("{used_by}: {e}"),
                "the shim cannot load it: every pod of these RuntimeClasses fails to start",
                format!("fix it, then `stockade profile check {}`", p.path.display()),
            )),
            Ok(s) => out.push(profile(check, &used_by, s)),
        }
    }
    out
}

fn profile(check: String, used_by: &str, s: &ProfileSummary) -> Finding {
    let mut weak = Vec::new();
    let dangerous: Vec<&str> = s
        .capabilities
        .iter()
        .map(String::as_str)
        .filter(|c| DANGEROUS_CAPS.contains(c))
        .collect();
    if !dangerous.is_empty() {
        weak.push(format!("allows {}", dangerous.join(", ")));
    }
    if !s.allowed_rules.is_empty() {
        weak.push(format!("policy allows {}", s.allowed_rules.join(", ")));
    }
    if !s.no_new_privs {
        weak.push("no_new_privs off".to_string());
    }
    if !weak.is_empty() {
        return Finding::new(
            Status::Warn,
            check,
            format!("{:?} ({used_by}): {}", s.name, weak.join("; ")),
            "each of these gives a container a way out of what Stockade promises (host namespaces, \
             devices, kernel interfaces, setuid gains)",
            "deny the rules and drop the capabilities unless a workload truly needs them (then give it its own profile)",
        );
    }
    if !s.log_denials || s.audit_log.is_none() {
        let missing = if s.log_denials {
            "no audit log"
        } else {
            "seccomp denials not logged"
        };
        return Finding::new(
            Status::Info,
            check,
            format!("{:?} ({used_by}): {missing}", s.name),
            "`stockade monitor` cannot count what it never sees: refusals or denials go unreported",
            "set [seccomp] log_denials = true and [audit] log",
        );
    }
    Finding::ok(
        check,
        format!(
            "{:?} ({used_by}): {} capabilities, policy denies all",
            s.name,
            s.capabilities.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::facts::ProfileFact;
    use std::path::PathBuf;

    fn summary(name: &str) -> ProfileSummary {
        ProfileSummary {
            name: name.into(),
            first_id: 1 << 30,
            size: 1 << 26,
            capabilities: vec!["CHOWN".into(), "NET_BIND_SERVICE".into()],
            no_new_privs: true,
            log_denials: true,
            allowed_rules: vec![],
            audit_log: Some("/var/log/stockade/audit.jsonl".into()),
        }
    }

    fn node(subuid: &[(&str, u64, u64)], profile: ProfileSummary) -> NodeFacts {
        let entries = subuid
            .iter()
            .map(|(o, s, c)| (o.to_string(), *s, *c))
            .collect();
        NodeFacts {
            subuid: SubIds {
                path: "/etc/subuid".into(),
                exists: true,
                entries,
            },
            subgid: SubIds {
                path: "/etc/subgid".into(),
                exists: false,
                entries: vec![],
            },
            useradd_subuid_range: (100_000, 600_100_000),
            profiles: vec![ProfileFact {
                path: PathBuf::from("/etc/stockade/default.toml"),
                handlers: vec!["stockade".into()],
                summary: Ok(profile),
            }],
            cgroup: crate::node::facts::CgroupFacts {
                version: CgroupVersion::V2,
            },
            ..NodeFacts::default()
        }
    }

    fn statuses(f: &[Finding], check: &str) -> Vec<Status> {
        f.iter()
            .filter(|x| x.check == check)
            .map(|x| x.status)
            .collect()
    }

    #[test]
    fn id_pool_against_subuid() {
        let kubelet = judge(&node(
            &[("kubelet", 1 << 30, 65536 * 110)],
            summary("default"),
        ));
        let overlap = kubelet.iter().find(|f| f.check == "ids.subuid").unwrap();
        assert_eq!(overlap.status, Status::Fail);
        assert!(
            overlap.observed.contains("kubelet") && overlap.why.contains("hostUsers"),
            "{overlap:?}"
        );
        let apart = judge(&node(
            &[("kubelet", 65536, 7208960), ("alice", 100000, 65536)],
            summary("default"),
        ));
        assert_eq!(statuses(&apart, "ids.subuid"), [Status::Info]);
        assert_eq!(statuses(&apart, "ids.subgid"), [Status::Info]);
        let reserved = judge(&node(&[("stockade", 1 << 30, 1 << 26)], summary("default")));
        assert_eq!(statuses(&reserved, "ids.subuid"), [Status::Ok]);
        let mut low = summary("low");
        low.first_id = 200_000;
        assert_eq!(
            statuses(&judge(&node(&[], low)), "ids.useradd_range"),
            [Status::Warn]
        );
    }

    #[test]
    fn cgroup_driver_and_profiles() {
        let mut facts = node(&[], summary("default"));
        assert_eq!(
            statuses(&judge(&facts), "profile./etc/stockade/default.toml"),
            [Status::Ok]
        );
        facts.kubelet_cgroup_driver = Some("systemd".into());
        let mut weak = summary("loose");
        weak.capabilities.push("SYS_ADMIN".into());
        weak.allowed_rules = vec!["host-network".into()];
        facts.profiles[0].summary = Ok(weak);
        let f = judge(&facts);
        assert_eq!(statuses(&f, "cgroup.driver"), [Status::Fail]);
        let p = f.iter().find(|x| x.check.starts_with("profile.")).unwrap();
        assert_eq!(p.status, Status::Warn);
        assert!(
            p.observed.contains("SYS_ADMIN") && p.observed.contains("host-network"),
            "{p:?}"
        );
        facts.profiles[0].summary = Err("profile x: key `name`: missing".into());
        assert_eq!(
            statuses(&judge(&facts), "profile./etc/stockade/default.toml"),
            [Status::Fail]
        );
        facts.cgroup.version = CgroupVersion::Hybrid;
        assert_eq!(statuses(&judge(&facts), "cgroup.version"), [Status::Warn]);
    }
}
