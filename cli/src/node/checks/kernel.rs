//! Kernel settings and features.

use super::{Finding, Status};
use crate::node::facts::{IdmapFact, IdmapUse, KernelFacts, NodeFacts};

pub fn judge(facts: &NodeFacts) -> Vec<Finding> {
    let k = &facts.kernel;
    let mut out = vec![
        user_namespaces(k),
        at_least(
            k,
            "kernel.kptr_restrict",
            1,
            Status::Warn,
            "kernel addresses in /proc/kallsyms, /proc/modules and elsewhere are readable: \
             an exploit inside a container gets KASLR's offsets for free",
            "sysctl -w kernel.kptr_restrict=2 (persist it in /etc/sysctl.d/)",
        ),
        at_least(
            k,
            "kernel.dmesg_restrict",
            1,
            Status::Warn,
            "the kernel log (addresses, other tenants' OOM kills and audit records) is readable \
             without CAP_SYSLOG",
            "sysctl -w kernel.dmesg_restrict=1 (persist it in /etc/sysctl.d/)",
        ),
        at_least(
            k,
            "kernel.perf_event_paranoid",
            2,
            Status::Warn,
            "perf_event_open is open to unprivileged processes for kernel profiling: a large, \
             often exploited kernel interface and a side channel across containers",
            "sysctl -w kernel.perf_event_paranoid=3 (Debian's patched kernels) or 2",
        ),
        at_least(
            k,
            "kernel.unprivileged_bpf_disabled",
            1,
            Status::Warn,
            "unprivileged eBPF (verifier bugs have given root many times) is open to every \
             process on the host",
            "sysctl -w kernel.unprivileged_bpf_disabled=2 (or 1: off until reboot)",
        ),
        bpf_jit(k),
    ];
    out.extend(kernel_features(facts));
    out
}

fn at_least(
    k: &KernelFacts,
    name: &str,
    want: i64,
    status: Status,
    why: &str,
    fix: &str,
) -> Finding {
    match k.int(name) {
        Some(v) if v >= want => Finding::ok(name, format!("{name} = {v}")),
        Some(v) => Finding::new(
            status,
            name,
            format!("{name} = {v} (want >= {want})"),
            why,
            fix,
        ),
        None => Finding::new(
            Status::Info,
            name,
            format!("{name} is not readable"),
            "this kernel does not say; the setting cannot be checked",
            "check the kernel's documentation for an equivalent",
        ),
    }
}

fn user_namespaces(k: &KernelFacts) -> Finding {
    let check = "kernel.user_namespaces";
    if k.int("user.max_user_namespaces") == Some(0) {
        return Finding::new(
            Status::Fail,
            check,
            "user.max_user_namespaces = 0",
            "Stockade gives every pod its own user namespace; with none allowed no pod starts",
            "sysctl -w user.max_user_namespaces=65536 (persist it in /etc/sysctl.d/)",
        );
    }
    // Stockade makes namespaces as root; only unprivileged creation is a weakness.
    match (
        k.int("kernel.unprivileged_userns_clone"),
        k.int("kernel.apparmor_restrict_unprivileged_userns"),
    ) {
        (Some(0), _) | (_, Some(1)) => {
            Finding::ok(check, "unprivileged user namespaces are off or restricted")
        }
        (Some(_), _) => Finding::new(
            Status::Warn,
            check,
            "kernel.unprivileged_userns_clone = 1",
            "any host process can create user namespaces and reach kernel code written for \
             root (the first step of many local privilege escalations); Stockade does not \
             need it (it creates pods' namespaces as root)",
            "sysctl -w kernel.unprivileged_userns_clone=0 (persist it in /etc/sysctl.d/)",
        ),
        (None, _) => Finding::new(
            Status::Info,
            check,
            "unprivileged user namespaces allowed (this kernel has no switch for them)",
            "any host process can create user namespaces; inside Stockade containers the \
             seccomp filter refuses it",
            "where available, restrict them (Ubuntu: kernel.apparmor_restrict_unprivileged_userns=1)",
        ),
    }
}

fn bpf_jit(k: &KernelFacts) -> Finding {
    let check = "net.core.bpf_jit_harden";
    match (k.int("net.core.bpf_jit_enable"), k.int(check)) {
        (Some(0), _) => Finding::ok(check, "BPF JIT off (interpreter only)"),
        (_, Some(2)) => Finding::ok(check, format!("{check} = 2")),
        (_, Some(v)) => Finding::new(
            if v == 1 && k.int("kernel.unprivileged_bpf_disabled").unwrap_or(0) >= 1 {
                Status::Info
            } else {
                Status::Warn
            },
            check,
            format!("{check} = {v} (want 2)"),
            "JIT-compiled BPF programs are not blinded (constant blinding defeats JIT spraying)",
            "sysctl -w net.core.bpf_jit_harden=2",
        ),
        (_, None) => Finding::new(
            Status::Info,
            check,
            format!("{check} is not readable"),
            "this kernel has no BPF JIT hardening setting",
            "none",
        ),
    }
}

/// Kernels since which a filesystem takes idmapped mounts.
fn idmap_since(fs: &str) -> Option<(u32, u32)> {
    Some(match fs {
        "ext4" | "xfs" | "vfat" => (5, 12),
        "btrfs" => (5, 15),
        "erofs" => (5, 17),
        "f2fs" => (5, 18),
        "tmpfs" => (6, 3),
        "ceph" => (6, 7),
        _ => return None,
    })
}

fn kernel_features(facts: &NodeFacts) -> Vec<Finding> {
    let version = facts.kernel.version();
    let release = facts
        .kernel
        .release
        .clone()
        .unwrap_or_else(|| "unknown".into());
    let mut out = Vec::new();
    out.push(match version {
        Some(v) if v >= (6, 8) => Finding::ok(
            "kernel.overlay_lowerdir_plus",
            format!("{release} (>= 6.8)"),
        ),
        Some(_) => Finding::new(
            Status::Info,
            "kernel.overlay_lowerdir_plus",
            format!("{release}: no overlay `lowerdir+` (6.8)"),
            "Stockade mounts the rootfs with one lowerdir string, limited to a page: images \
             with very many layers or long snapshot paths fail to start",
            "kernel 6.8 or later",
        ),
        None => Finding::new(
            Status::Warn,
            "kernel.version",
            "kernel release unknown",
            "features cannot be judged",
            "check /proc/sys/kernel/osrelease",
        ),
    });
    for fact in &facts.idmap {
        out.push(idmap(fact, version, &release));
    }
    out
}

fn idmap(fact: &IdmapFact, version: Option<(u32, u32)>, release: &str) -> Finding {
    let (check, status, why) = match fact.purpose {
        IdmapUse::ImageLayers => (
            "idmap.image_layers",
            Status::Fail,
            "every container's image layers are idmapped into its pod's user namespace: \
             without idmapped mounts no Stockade container starts",
        ),
        IdmapUse::Volumes => (
            "idmap.volumes",
            Status::Warn,
            "volumes on disk cannot be idmapped: under the pod's user namespace their files \
             show as nobody (65534) and the pod cannot use files kubelet prepared for it",
        ),
        IdmapUse::TmpfsVolumes => (
            "idmap.tmpfs",
            Status::Warn,
            "memory-backed volumes (Secrets, service-account tokens, emptyDir medium Memory) \
             cannot be idmapped: 0400/0440 secrets are unreadable by the container's root",
        ),
    };
    let path = fact.path.display();
    let Some(fs) = &fact.fs_type else {
        return Finding::ok(check, format!("{path}: not present on this node"));
    };
    let fix = match idmap_since(fs) {
        Some((a, b)) => format!("kernel {a}.{b} or later for {fs}; or put {path} on ext4 or xfs"),
        None => format!("put {path} on a filesystem with idmapped mounts (ext4, xfs, btrfs)"),
    };
    match &fact.probed {
        Some(Ok(true)) => Finding::ok(
            check,
            format!("{path} ({fs}): idmapped mount works (probed)"),
        ),
        Some(Ok(false)) => Finding::new(
            status,
            check,
            format!("{path} ({fs}): idmapped mount refused (probed)"),
            why,
            fix,
        ),
        Some(Err(e)) => Finding::new(
            Status::Info,
            check,
            format!("{path} ({fs}): probe failed: {e}"),
            "support could not be tested",
            "run as root",
        ),
        None => match (idmap_since(fs), version) {
            (Some(since), Some(v)) if v >= since => Finding::ok(
                check,
                format!(
                    "{path} ({fs}): idmapped mounts since {}.{}",
                    since.0, since.1
                ),
            ),
            (Some(since), Some(_)) => Finding::new(
                status,
                check,
                format!(
                    "{path} ({fs}): needs {}.{}, kernel is {release}",
                    since.0, since.1
                ),
                why,
                fix,
            ),
            _ => Finding::new(
                status,
                check,
                format!("{path} ({fs}): no idmapped mounts known for {fs}"),
                why,
                fix,
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn kernel(release: &str, sysctls: &[(&str, &str)]) -> NodeFacts {
        let mut facts = NodeFacts::default();
        facts.kernel.release = Some(release.into());
        for (k, v) in sysctls {
            facts
                .kernel
                .sysctls
                .insert(k.to_string(), Some(v.to_string()));
        }
        facts
    }

    fn status(findings: &[Finding], check: &str) -> Status {
        findings
            .iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("{check}"))
            .status
    }

    #[test]
    fn hardened_and_weak_sysctls() {
        let good = judge(&kernel(
            "6.18.4",
            &[
                ("kernel.kptr_restrict", "2"),
                ("kernel.dmesg_restrict", "1"),
                ("kernel.perf_event_paranoid", "3"),
                ("kernel.unprivileged_bpf_disabled", "2"),
                ("net.core.bpf_jit_harden", "2"),
                ("kernel.unprivileged_userns_clone", "0"),
            ],
        ));
        assert!(good.iter().all(|f| f.status == Status::Ok), "{good:#?}");
        let weak = judge(&kernel(
            "6.1.0-13-amd64",
            &[
                ("kernel.kptr_restrict", "0"),
                ("kernel.dmesg_restrict", "0"),
                ("kernel.perf_event_paranoid", "1"),
                ("kernel.unprivileged_bpf_disabled", "0"),
                ("net.core.bpf_jit_enable", "1"),
                ("net.core.bpf_jit_harden", "0"),
                ("kernel.unprivileged_userns_clone", "1"),
                ("user.max_user_namespaces", "0"),
            ],
        ));
        for check in [
            "kernel.kptr_restrict",
            "kernel.dmesg_restrict",
            "kernel.perf_event_paranoid",
            "kernel.unprivileged_bpf_disabled",
            "net.core.bpf_jit_harden",
        ] {
            assert_eq!(status(&weak, check), Status::Warn, "{check}");
            let f = weak.iter().find(|f| f.check == check).unwrap();
            assert!(!f.why.is_empty() && f.fix.contains("sysctl"), "{f:?}");
        }
        assert_eq!(status(&weak, "kernel.user_namespaces"), Status::Fail);
        assert_eq!(status(&weak, "kernel.overlay_lowerdir_plus"), Status::Info);
    }

    #[test]
    fn user_namespace_switches() {
        let clone_on = judge(&kernel("6.1", &[("kernel.unprivileged_userns_clone", "1")]));
        assert_eq!(status(&clone_on, "kernel.user_namespaces"), Status::Warn);
        let mainline = judge(&kernel("6.18", &[]));
        assert_eq!(status(&mainline, "kernel.user_namespaces"), Status::Info);
        let ubuntu = judge(&kernel(
            "6.8",
            &[("kernel.apparmor_restrict_unprivileged_userns", "1")],
        ));
        assert_eq!(status(&ubuntu, "kernel.user_namespaces"), Status::Ok);
        // JIT hardening for unprivileged programs only is fine when those are disabled.
        let jit = judge(&kernel(
            "6.1",
            &[
                ("net.core.bpf_jit_harden", "1"),
                ("kernel.unprivileged_bpf_disabled", "1"),
            ],
        ));
        assert_eq!(status(&jit, "net.core.bpf_jit_harden"), Status::Info);
    }

    fn idmap_fact(purpose: IdmapUse, fs: &str, probed: Option<Result<bool, String>>) -> IdmapFact {
        IdmapFact {
            purpose,
            path: PathBuf::from("/p"),
            fs_type: Some(fs.into()),
            probed,
        }
    }

    #[test]
    fn idmap_by_version_and_by_probe() {
        let mut facts = kernel("6.1.0", &[]);
        facts.idmap = vec![
            idmap_fact(IdmapUse::ImageLayers, "ext4", None),
            idmap_fact(IdmapUse::TmpfsVolumes, "tmpfs", None),
        ];
        let f = judge(&facts);
        assert_eq!(status(&f, "idmap.image_layers"), Status::Ok);
        let tmpfs = f.iter().find(|f| f.check == "idmap.tmpfs").unwrap();
        assert_eq!(tmpfs.status, Status::Warn);
        assert!(tmpfs.observed.contains("6.3"), "{tmpfs:?}");
        // A probe's answer beats the version table.
        facts.idmap = vec![
            idmap_fact(IdmapUse::ImageLayers, "ext4", Some(Ok(false))),
            idmap_fact(IdmapUse::Volumes, "nfs", None),
        ];
        let f = judge(&facts);
        assert_eq!(status(&f, "idmap.image_layers"), Status::Fail);
        assert_eq!(status(&f, "idmap.volumes"), Status::Warn);
        facts.kernel.release = Some("6.18".into());
        facts.idmap = vec![idmap_fact(IdmapUse::TmpfsVolumes, "tmpfs", None)];
        assert_eq!(status(&judge(&facts), "idmap.tmpfs"), Status::Ok);
    }
}
