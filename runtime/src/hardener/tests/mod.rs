//! Table tests over realistic specs (shapes containerd's `ctr` and CRI plugin produce).

use super::*;
use crate::oci_spec::runtime::{Capability, LinuxSeccompAction};
use crate::profile::{OnExcess, Verdict};
use std::path::Path;

fn fixture(name: &str) -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Spec::load(&path).unwrap()
}

fn profile(name: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(format!("{name}.toml"));
    Profile::load(&path).unwrap()
}

const RANGE: IdRange = IdRange {
    first: 1_073_807_360,
    size: 65_536,
};

fn sandbox_ctx() -> HardenContext {
    HardenContext {
        container_id: "c1".into(),
        sandbox_id: "c1".into(),
        is_sandbox: true,
        id_range: RANGE,
        pod_userns: None,
        pod_pids: Vec::new(),
        netns_path_is_host: false,
        cgroup_driver: CgroupDriver::Cgroupfs,
        cgroup_v1: Vec::new(),
        resolved_sources: Default::default(),
        writable_layer: Default::default(),
    }
}

fn app_ctx() -> HardenContext {
    HardenContext {
        container_id: "0a1b2c3d".into(),
        sandbox_id: "pod".into(),
        is_sandbox: false,
        id_range: RANGE,
        pod_userns: Some("/proc/4242/ns/user".into()),
        pod_pids: vec![4242],
        netns_path_is_host: false,
        cgroup_driver: CgroupDriver::Cgroupfs,
        cgroup_v1: Vec::new(),
        resolved_sources: Default::default(),
        writable_layer: Default::default(),
    }
}

/// The spec with its process run as `uid:uid` (strict refuses root: `run-as-root`).
fn as_user(mut spec: Spec, uid: u32) -> Spec {
    let mut process = spec.process().clone().unwrap();
    let mut user = process.user().clone();
    user.set_uid(uid);
    user.set_gid(uid);
    process.set_user(user);
    spec.set_process(Some(process));
    spec
}

/// A fixture as the strict profile accepts it: run as an application user.
fn strict_fixture(name: &str) -> Spec {
    as_user(fixture(name), 1000)
}

fn refused_by(result: Result<Hardened, HardenError>) -> Rule {
    match result {
        Err(HardenError::Refused(r)) => r.rule,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a hardened spec"),
    }
}

fn linux(spec: &Spec) -> &crate::oci_spec::runtime::Linux {
    spec.linux().as_ref().unwrap()
}

fn resources(spec: &Spec) -> &LinuxResources {
    linux(spec).resources().as_ref().unwrap()
}

/// The invariants every hardened spec keeps, whatever went in.
fn assert_hardened(h: &Hardened, p: &Profile, ctx: &HardenContext) {
    let process = h.spec.process().as_ref().unwrap();
    let caps = process.capabilities().as_ref().unwrap();
    for set in [caps.bounding(), caps.effective(), caps.permitted()] {
        let set = set.as_ref().unwrap();
        assert!(set.is_subset(&p.capabilities.allow), "{set:?}");
    }
    assert_eq!(caps.inheritable().as_ref().map(|s| s.len()), Some(0));
    assert_eq!(caps.ambient().as_ref().map(|s| s.len()), Some(0));
    assert_eq!(process.no_new_privileges(), Some(true));

    let l = linux(&h.spec);
    assert!(l.seccomp().is_none(), "seccomp must not reach libcontainer");
    let user = l
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .expect("a user namespace");
    assert_eq!(user.path().is_some(), !ctx.is_sandbox);
    let map = l.uid_mappings().as_ref().unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map[0].container_id(), 0);
    assert_eq!(map[0].host_id(), ctx.id_range.first);
    assert_eq!(l.gid_mappings(), l.uid_mappings());
    for m in &p.paths.masked {
        assert!(l.masked_paths().as_ref().unwrap().contains(m), "{m}");
    }
    for r in &p.paths.readonly {
        assert!(l.readonly_paths().as_ref().unwrap().contains(r), "{r}");
    }

    let r = resources(&h.spec);
    let mem = r.memory().unwrap().limit().unwrap();
    assert!(mem > 0 && mem <= p.cgroups.ceilings.memory_bytes);
    let cpu = r.cpu().as_ref().unwrap();
    let (quota, period) = (cpu.quota().unwrap(), cpu.period().unwrap());
    assert!(quota > 0);
    assert!(quota as u128 * 1000 <= p.cgroups.ceilings.cpu_millicores as u128 * period as u128);
    let pids = r.pids().unwrap().limit();
    assert!(pids > 0 && pids <= p.cgroups.ceilings.pids);
    assert!(l.cgroups_path().as_ref().unwrap().is_absolute());
}

#[test]
fn ordinary_ctr_container_is_hardened() {
    let p = profile("default");
    let ctx = sandbox_ctx();
    let h = harden(fixture("ctr-default.json"), &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    // containerd's defaults beyond the allowlist are dropped quietly, and reported.
    let caps = h
        .spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert!(!caps
        .bounding()
        .as_ref()
        .unwrap()
        .contains(&Capability::NetRaw));
    assert!(caps
        .bounding()
        .as_ref()
        .unwrap()
        .contains(&Capability::Chown));
    assert!(h
        .report
        .changes
        .iter()
        .any(|c| c.guard == "capabilities" && c.what.contains("CAP_NET_RAW")));
    // No limits asked: the defaults.
    let r = resources(&h.spec);
    assert_eq!(
        r.memory().unwrap().limit(),
        Some(p.cgroups.defaults.memory_bytes)
    );
    assert_eq!(r.pids().unwrap().limit(), p.cgroups.defaults.pids);
    assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(100_000));
    // The masked path containerd lacks is added.
    assert!(linux(&h.spec)
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/sys/devices/virtual/powercap".to_string()));
    assert!(h.seccomp.pod.is_none());
    assert_eq!(h.seccomp.default, p.seccomp.profile);
    // The cgroupsPath containerd gave is kept.
    assert_eq!(
        linux(&h.spec).cgroups_path().as_deref(),
        Some(Path::new("/default/demo"))
    );
}

#[test]
fn cri_sandbox_and_app_container() {
    let p = profile("default");
    let ctx = sandbox_ctx();
    let h = harden(fixture("cri-sandbox.json"), &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);

    let ctx = app_ctx();
    let h = harden(fixture("cri-container.json"), &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    let ns = linux(&h.spec).namespaces().clone().unwrap();
    let user = ns
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .unwrap();
    assert_eq!(
        user.path().as_deref(),
        Some(Path::new("/proc/4242/ns/user"))
    );
    // The pod's own limits within the ceilings are kept as asked.
    let r = resources(&h.spec);
    assert_eq!(r.memory().unwrap().limit(), Some(268_435_456));
    assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
}

#[test]
fn privileged_is_refused() {
    let p = profile("default");
    assert_eq!(
        refused_by(harden(fixture("cri-privileged.json"), &p, &app_ctx())),
        Rule::Privileged
    );
    // All devices alone is enough (ctr --privileged keeps masked paths).
    let mut spec = fixture("ctr-default.json");
    let text = serde_json::to_string(&spec).unwrap().replace(
        r#"{"allow":false,"access":"rwm"}"#,
        r#"{"allow":true,"access":"rwm"}"#,
    );
    spec = serde_json::from_str(&text).unwrap();
    let err = harden(spec, &p, &sandbox_ctx()).unwrap_err();
    assert!(err.to_string().contains("`privileged`"), "{err}");
}

fn without_namespace(mut spec: Spec, typ: LinuxNamespaceType) -> Spec {
    let mut l = spec.linux().clone().unwrap();
    let ns: Vec<_> = l
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|n| n.typ() != typ)
        .collect();
    l.set_namespaces(Some(ns));
    spec.set_linux(Some(l));
    spec
}

#[test]
fn host_namespaces_are_refused_by_name() {
    let p = profile("default");
    for (typ, rule) in [
        (LinuxNamespaceType::Network, Rule::HostNetwork),
        (LinuxNamespaceType::Pid, Rule::HostPid),
        (LinuxNamespaceType::Ipc, Rule::HostIpc),
    ] {
        let spec = without_namespace(fixture("cri-container.json"), typ);
        assert_eq!(refused_by(harden(spec, &p, &app_ctx())), rule);
    }
}

#[test]
fn host_namespace_allowed_by_profile_is_kept() {
    let mut p = profile("default");
    p.policy.host_network = Verdict::Allow;
    let spec = without_namespace(fixture("ctr-default.json"), LinuxNamespaceType::Network);
    let h = harden(spec, &p, &sandbox_ctx()).unwrap();
    let ns = linux(&h.spec).namespaces().clone().unwrap();
    assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    assert!(h.report.notes.iter().any(|n| n.contains("network")));
}

fn with_caps(mut spec: Spec, extra: &[Capability]) -> Spec {
    let mut process = spec.process().clone().unwrap();
    let mut caps = process.capabilities().clone().unwrap();
    let mut set = caps.bounding().clone().unwrap();
    set.extend(extra.iter().copied());
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set.clone()));
    caps.set_ambient(Some(set));
    process.set_capabilities(Some(caps));
    spec.set_process(Some(process));
    spec
}

#[test]
fn extra_capabilities_are_refused_or_dropped() {
    let p = profile("default");
    let spec = with_caps(
        fixture("cri-container.json"),
        &[Capability::NetAdmin, Capability::SysPtrace],
    );
    let err = harden(spec.clone(), &p, &app_ctx()).unwrap_err();
    assert!(err.to_string().contains("`extra-capabilities`"), "{err}");
    assert!(
        err.to_string().contains("CAP_NET_ADMIN, CAP_SYS_PTRACE"),
        "{err}"
    );

    let mut lenient = p.clone();
    lenient.policy.extra_capabilities = Verdict::Allow;
    let ctx = app_ctx();
    let h = harden(spec, &lenient, &ctx).unwrap();
    assert_hardened(&h, &lenient, &ctx);
}

#[test]
fn strict_profile_keeps_only_net_bind_service() {
    let p = profile("strict");
    let ctx = sandbox_ctx();
    let h = harden(strict_fixture("ctr-default.json"), &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    let caps = h
        .spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    let expected: Capabilities = [Capability::NetBindService].into_iter().collect();
    assert_eq!(caps.effective().as_ref(), Some(&expected));
}

fn with_limits(mut spec: Spec, memory: i64, quota: i64, pids: i64) -> Spec {
    let text = serde_json::json!({
        "memory": {"limit": memory, "swap": -1, "reservation": memory},
        "cpu": {"quota": quota, "period": 100000},
        "pids": {"limit": pids},
        "unified": {"memory.max": "max", "pids.max": "max", "memory.oom.group": "1"}
    });
    let mut l = spec.linux().clone().unwrap();
    l.set_resources(Some(serde_json::from_value(text).unwrap()));
    spec.set_linux(Some(l));
    spec
}

#[test]
fn huge_limits_are_clamped_under_default() {
    let p = profile("default");
    let ctx = sandbox_ctx();
    let spec = with_limits(fixture("ctr-default.json"), 1 << 40, 64 * 100_000, 1 << 30);
    let h = harden(spec, &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    let r = resources(&h.spec);
    let mem = r.memory().unwrap();
    assert_eq!(mem.limit(), Some(p.cgroups.ceilings.memory_bytes));
    assert_eq!(mem.swap(), mem.limit(), "no swap beyond the limit");
    assert_eq!(mem.reservation(), mem.limit());
    assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(200_000));
    assert_eq!(r.pids().unwrap().limit(), p.cgroups.ceilings.pids);
    let unified = r.unified().clone().unwrap();
    assert!(!unified.contains_key("memory.max") && !unified.contains_key("pids.max"));
    assert_eq!(
        unified.get("memory.oom.group").map(String::as_str),
        Some("1")
    );
    assert!(h
        .report
        .changes
        .iter()
        .any(|c| c.what.contains("lowered to the ceiling")));
}

#[test]
fn huge_limits_are_refused_under_strict() {
    let p = profile("strict");
    assert_eq!(p.cgroups.on_excess, OnExcess::Refuse);
    let spec = with_limits(strict_fixture("ctr-default.json"), 1 << 40, 50_000, 100);
    assert_eq!(
        refused_by(harden(spec, &p, &sandbox_ctx())),
        Rule::MemoryCeiling
    );
    let spec = with_limits(
        strict_fixture("ctr-default.json"),
        64 << 20,
        64 * 100_000,
        100,
    );
    assert_eq!(
        refused_by(harden(spec, &p, &sandbox_ctx())),
        Rule::CpuCeiling
    );
    let spec = with_limits(
        strict_fixture("ctr-default.json"),
        64 << 20,
        50_000,
        100_000,
    );
    assert_eq!(
        refused_by(harden(spec, &p, &sandbox_ctx())),
        Rule::PidsCeiling
    );
}

#[test]
fn negative_and_zero_limits_get_defaults() {
    let p = profile("default");
    let ctx = sandbox_ctx();
    let spec = with_limits(fixture("ctr-default.json"), -1, -1, 0);
    let h = harden(spec, &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    let r = resources(&h.spec);
    assert_eq!(
        r.memory().unwrap().limit(),
        Some(p.cgroups.defaults.memory_bytes)
    );
    assert_eq!(r.pids().unwrap().limit(), p.cgroups.defaults.pids);
}

#[test]
fn update_is_clamped_like_create() {
    let p = profile("default");
    let update: LinuxResources = serde_json::from_value(serde_json::json!({
        "memory": {"limit": 1i64 << 50}, "pids": {"limit": 3}
    }))
    .unwrap();
    let (r, report) = harden_resources(update, &p).unwrap();
    assert_eq!(
        r.memory().unwrap().limit(),
        Some(p.cgroups.ceilings.memory_bytes)
    );
    assert_eq!(r.pids().unwrap().limit(), 3);
    assert!(!report.changes.is_empty());
    let strict = profile("strict");
    let update: LinuxResources =
        serde_json::from_value(serde_json::json!({"memory": {"limit": 1i64 << 50}})).unwrap();
    let err = harden_resources(update, &strict).unwrap_err();
    assert!(err.to_string().contains("`memory-ceiling`"), "{err}");
}

#[test]
fn pod_seccomp_is_taken_out_and_stacked() {
    let p = profile("default");
    let mut spec = fixture("cri-container.json");
    let pod_profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    }))
    .unwrap();
    let mut l = spec.linux().clone().unwrap();
    l.set_seccomp(Some(pod_profile.clone()));
    spec.set_linux(Some(l));
    let ctx = app_ctx();
    let h = harden(spec, &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    assert_eq!(h.seccomp.pod, Some(pod_profile));
    assert_eq!(
        h.seccomp.default.default_action(),
        LinuxSeccompAction::ScmpActErrno
    );
}

fn with_image(mut spec: Spec, image: &str) -> Spec {
    let mut a = spec.annotations().clone().unwrap_or_default();
    a.insert(crate::pod::ANNOTATION_IMAGE_NAME.into(), image.into());
    spec.set_annotations(Some(a));
    spec
}

#[test]
fn registries() {
    let p = profile("default");
    for ok in [
        "nginx:1.27",
        "docker.io/library/nginx",
        "team.azurecr.io/app:v2",
    ] {
        let spec = with_image(fixture("cri-container.json"), ok);
        assert!(harden(spec, &p, &app_ctx()).is_ok(), "{ok}");
    }
    for bad in [
        "evil.example.com/miner:latest",
        "localhost:5000/x",
        "not a name",
    ] {
        let spec = with_image(fixture("cri-container.json"), bad);
        let err = harden(spec, &p, &app_ctx()).unwrap_err();
        assert!(
            err.to_string().contains("`untrusted-registry`"),
            "{bad}: {err}"
        );
    }
    // strict trusts only its own list: docker.io is out.
    let strict = profile("strict");
    let spec = fixture("cri-container.json");
    assert_eq!(
        refused_by(harden(spec, &strict, &app_ctx())),
        Rule::UntrustedRegistry
    );
    // Without the annotation (not CRI) the registry is not checked, and the report says so.
    let h = harden(fixture("ctr-default.json"), &p, &sandbox_ctx()).unwrap();
    assert!(h
        .report
        .notes
        .iter()
        .any(|n| n.contains("registry not checked")));
}

#[test]
fn malformed_specs_are_invalid_not_panics() {
    let p = profile("default");
    let mut spec = fixture("ctr-default.json");
    spec.set_process(None);
    let err = harden(spec, &p, &sandbox_ctx()).unwrap_err();
    assert!(
        matches!(err, HardenError::InvalidSpec(ref m) if m.contains("process")),
        "{err}"
    );

    let mut spec = fixture("ctr-default.json");
    spec.set_linux(None);
    assert!(matches!(
        harden(spec, &p, &sandbox_ctx()),
        Err(HardenError::InvalidSpec(_))
    ));

    // A UID the pod's range cannot map.
    let mut spec = fixture("ctr-default.json");
    let mut process = spec.process().clone().unwrap();
    process.user_mut().set_uid(70_000);
    spec.set_process(Some(process));
    let err = harden(spec, &p, &sandbox_ctx()).unwrap_err();
    assert!(err.to_string().contains("process.user.uid 70000"), "{err}");

    // An app container without its pod's user namespace.
    let mut ctx = app_ctx();
    ctx.pod_userns = None;
    let err = harden(fixture("cri-container.json"), &p, &ctx).unwrap_err();
    assert!(err.to_string().contains("user namespace"), "{err}");
}

#[test]
fn spec_without_capabilities_gets_none() {
    let p = profile("default");
    let mut spec = fixture("ctr-default.json");
    let mut process = spec.process().clone().unwrap();
    process.set_capabilities(None);
    spec.set_process(Some(process));
    let h = harden(spec, &p, &sandbox_ctx()).unwrap();
    let caps = h
        .spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert_eq!(caps.bounding().as_ref().map(|s| s.len()), Some(0));
}

#[test]
fn foreign_user_namespace_is_replaced_and_sys_made_read_only() {
    let p = profile("default");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ctr-default.json"),
    )
    .unwrap()
    .replace(
        r#""ro"
      ]"#,
        r#""rw"
      ]"#,
    );
    assert!(
        text.contains(r#""rw""#),
        "the fixture's /sys must start read-write"
    );
    let mut spec: Spec = serde_json::from_str(&text).unwrap();
    let mut l = spec.linux().clone().unwrap();
    let mut ns = l.namespaces().clone().unwrap();
    let mut user = LinuxNamespace::default();
    user.set_typ(LinuxNamespaceType::User);
    user.set_path(Some("/proc/1/ns/user".into()));
    ns.push(user);
    l.set_namespaces(Some(ns));
    spec.set_linux(Some(l));
    let ctx = sandbox_ctx();
    let h = harden(spec, &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    let sys = h
        .spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    let options = sys.options().clone().unwrap();
    assert!(options.contains(&"ro".to_string()) && !options.contains(&"rw".to_string()));
}

#[test]
fn every_rule_has_a_distinct_name() {
    let names: std::collections::HashSet<_> = Rule::ALL.iter().map(Rule::name).collect();
    assert_eq!(names.len(), Rule::ALL.len());
}

fn with_namespace_path(spec: Spec, typ: LinuxNamespaceType, path: &str) -> Spec {
    let mut spec = without_namespace(spec, typ);
    let mut l = spec.linux().clone().unwrap();
    let mut ns = l.namespaces().clone().unwrap_or_default();
    let mut joined = LinuxNamespace::default();
    joined.set_typ(typ);
    joined.set_path(Some(path.into()));
    ns.push(joined);
    l.set_namespaces(Some(ns));
    spec.set_linux(Some(l));
    spec
}

#[test]
fn joining_namespaces_of_the_own_pod_is_allowed() {
    let p = profile("default");
    // The fixture joins /proc/4242/ns/{ipc,uts,net}: the sandbox's.
    harden(fixture("cri-container.json"), &p, &app_ctx()).unwrap();
    // Another container of the pod (kubectl debug --target): its PID namespace.
    let mut ctx = app_ctx();
    ctx.pod_pids.push(5000);
    let spec = with_namespace_path(
        fixture("cri-container.json"),
        LinuxNamespaceType::Pid,
        "/proc/5000/ns/pid",
    );
    harden(spec, &p, &ctx).unwrap();
    // A sandbox's pinned CNI network namespace.
    let spec = with_namespace_path(
        fixture("ctr-default.json"),
        LinuxNamespaceType::Network,
        "/var/run/netns/cni-1234",
    );
    harden(spec, &p, &sandbox_ctx()).unwrap();
}

#[test]
fn joining_foreign_namespaces_is_refused_by_name() {
    let p = profile("default");
    for (typ, path, ctx) in [
        // Another pod's (or the host's) processes.
        (LinuxNamespaceType::Pid, "/proc/777/ns/pid", app_ctx()),
        (LinuxNamespaceType::Network, "/proc/777/ns/net", app_ctx()),
        (LinuxNamespaceType::Ipc, "/proc/1/ns/ipc", sandbox_ctx()),
        (LinuxNamespaceType::Uts, "/proc/self/ns/uts", sandbox_ctx()),
        // The pod's process, but a namespace file of another type or a crafted path.
        (LinuxNamespaceType::Pid, "/proc/4242/ns/net", app_ctx()),
        (
            LinuxNamespaceType::Pid,
            "/proc/4242/ns/../ns/pid",
            app_ctx(),
        ),
        (
            LinuxNamespaceType::Mount,
            "/proc/4242/ns/mnt",
            sandbox_ctx(),
        ),
        // Only a network namespace may be a pinned file outside /proc.
        (LinuxNamespaceType::Ipc, "/var/run/ipcns/x", sandbox_ctx()),
        (
            LinuxNamespaceType::Network,
            "/var/run/netns/../../proc/1/ns/net",
            sandbox_ctx(),
        ),
        (LinuxNamespaceType::Network, "netns/relative", sandbox_ctx()),
    ] {
        let base = if ctx.is_sandbox {
            "ctr-default.json"
        } else {
            "cri-container.json"
        };
        let spec = with_namespace_path(fixture(base), typ, path);
        match harden(spec, &p, &ctx) {
            Err(HardenError::Refused(r)) => {
                assert_eq!(r.rule, Rule::ForeignNamespace, "{path}");
                assert!(r.to_string().contains(path), "{r}");
                assert!(r.to_string().contains("foreign-namespace"), "{r}");
            }
            other => panic!(
                "{typ:?} {path}: expected a refusal, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[test]
fn the_hosts_network_namespace_by_path_is_host_network() {
    let mut p = profile("default");
    let mut ctx = sandbox_ctx();
    ctx.netns_path_is_host = true;
    let spec = with_namespace_path(
        fixture("ctr-default.json"),
        LinuxNamespaceType::Network,
        "/var/run/netns/looks-innocent",
    );
    let refusal = match harden(spec.clone(), &p, &ctx) {
        Err(HardenError::Refused(r)) => r,
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    };
    assert_eq!(refusal.rule, Rule::HostNetwork);
    assert!(refusal.reason.contains("looks-innocent"), "{refusal}");
    // A profile that allows the host network allows it by path too.
    p.policy.host_network = Verdict::Allow;
    let h = harden(spec, &p, &ctx).unwrap();
    assert!(h.report.notes.iter().any(|n| n.contains("by path")));
}

// ---- bad input: absurd values a pod (or a hand-written config.json) can send ----------

fn with_root(mut spec: Spec, path: &str) -> Spec {
    let mut root = spec.root().clone().unwrap();
    root.set_path(path.into());
    spec.set_root(Some(root));
    spec
}

fn invalid(result: Result<Hardened, HardenError>) -> String {
    match result {
        Err(HardenError::InvalidSpec(m)) => m,
        Err(e) => panic!("expected an invalid spec, got {e}"),
        Ok(_) => panic!("expected an invalid spec, got a hardened spec"),
    }
}

#[test]
fn empty_or_escaping_root_paths_are_invalid() {
    let p = profile("default");
    let spec = with_root(fixture("ctr-default.json"), "");
    assert_eq!(
        invalid(harden(spec, &p, &sandbox_ctx())),
        "root.path is empty"
    );
    for bad in ["../../../../etc", "rootfs/../../x"] {
        let spec = with_root(fixture("ctr-default.json"), bad);
        let m = invalid(harden(spec, &p, &sandbox_ctx()));
        assert!(m.contains("root.path") && m.contains(bad), "{m}");
    }
    for ok in ["rootfs", "/var/lib/images/x/rootfs"] {
        let spec = with_root(fixture("ctr-default.json"), ok);
        assert!(harden(spec, &p, &sandbox_ctx()).is_ok(), "{ok}");
    }
}

fn with_pod_seccomp(mut spec: Spec, json: serde_json::Value) -> Spec {
    let mut l = spec.linux().clone().unwrap();
    l.set_seccomp(Some(serde_json::from_value(json).unwrap()));
    spec.set_linux(Some(l));
    spec
}

#[test]
fn a_pod_seccomp_profile_that_cannot_compile_is_invalid() {
    let p = profile("default");
    let spec = with_pod_seccomp(
        fixture("cri-container.json"),
        serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["frobnicate"], "action": "SCMP_ACT_ERRNO"}]}),
    );
    let m = invalid(harden(spec, &p, &app_ctx()));
    assert!(
        m.starts_with("linux.seccomp: syscalls[1]") && m.contains("`frobnicate` is unknown"),
        "{m}"
    );
    let spec = with_pod_seccomp(
        fixture("cri-container.json"),
        serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
    );
    let m = invalid(harden(spec, &p, &app_ctx()));
    assert!(m.contains("linux.seccomp") && m.contains("NOTIFY"), "{m}");
}

#[test]
fn a_pod_seccomp_profile_with_duplicate_syscalls_is_accepted() {
    // Stacked filters can only narrow, and the most restrictive matching rule wins (see
    // seccomp's module docs): a syscall named twice, even with conflicting actions, has
    // one meaning, so a pod's profile is taken as it is.
    let p = profile("default");
    let spec = with_pod_seccomp(
        fixture("cri-container.json"),
        serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getcwd", "getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"}]}),
    );
    let h = harden(spec, &p, &app_ctx()).unwrap();
    assert!(h.seccomp.pod.is_some());
}

#[test]
fn uid_and_gid_mappings_of_the_spec_are_replaced_by_the_pods() {
    let p = profile("default");
    let mut spec = fixture("ctr-default.json");
    let mut l = spec.linux().clone().unwrap();
    let host_root: Vec<crate::oci_spec::runtime::LinuxIdMapping> =
        serde_json::from_value(serde_json::json!([
            {"containerID": 0, "hostID": 0, "size": 4_294_967_295u32}
        ]))
        .unwrap();
    l.set_uid_mappings(Some(host_root.clone()));
    l.set_gid_mappings(Some(host_root));
    spec.set_linux(Some(l));
    let ctx = sandbox_ctx();
    let h = harden(spec, &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    let l = linux(&h.spec);
    for m in [l.uid_mappings(), l.gid_mappings()] {
        let m = m.as_ref().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].host_id(), m[0].size()), (RANGE.first, RANGE.size));
    }
    assert!(
        h.report
            .changes
            .iter()
            .any(|c| c.guard == "userns" && c.what.contains("mappings replaced")),
        "{:?}",
        h.report.changes
    );
}

#[test]
fn absurd_limits_are_replaced_and_reported() {
    let p = profile("default");
    let ctx = sandbox_ctx();
    // Negative memory, a zero quota with a zero period, negative pids.
    let mut spec = with_limits(fixture("ctr-default.json"), -5, 0, -3);
    let mut l = spec.linux().clone().unwrap();
    let mut r = l.resources().clone().unwrap();
    let mut cpu = r.cpu().clone().unwrap();
    cpu.set_period(Some(0));
    r.set_cpu(Some(cpu));
    l.set_resources(Some(r));
    spec.set_linux(Some(l));
    let h = harden(spec, &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    let r = resources(&h.spec);
    assert_eq!(
        r.memory().unwrap().limit(),
        Some(p.cgroups.defaults.memory_bytes)
    );
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(cpu.period(), Some(p.cgroups.cpu_period_us));
    assert_eq!(cpu.quota(), Some(100_000));
    assert_eq!(r.pids().unwrap().limit(), p.cgroups.defaults.pids);
    let changes: Vec<&str> = h.report.changes.iter().map(|c| c.what.as_str()).collect();
    for needle in [
        "-5 asked, which is no limit",
        "0 asked, which is no limit",
        "-3 asked, which is no limit",
        "CPU period 0us",
    ] {
        assert!(
            changes.iter().any(|c| c.contains(needle)),
            "{needle}: {changes:?}"
        );
    }
    // 2^62 bytes: the ceiling.
    let spec = with_limits(fixture("ctr-default.json"), 1 << 62, 100_000, 10);
    let h = harden(spec, &p, &ctx).unwrap();
    assert_eq!(
        resources(&h.spec).memory().unwrap().limit(),
        Some(p.cgroups.ceilings.memory_bytes)
    );
}

#[test]
fn a_sub_core_ceiling_holds_at_any_period() {
    let mut p = profile("default");
    p.cgroups.ceilings.cpu_millicores = 500;
    p.cgroups.defaults.cpu_millicores = 250;
    let ctx = sandbox_ctx();
    // A 1 ms period: half a core would be a 0.5 ms quota, below CFS's 1 ms minimum.
    for asked in [Some(1_000), Some(400), None] {
        let mut spec = fixture("ctr-default.json");
        let mut l = spec.linux().clone().unwrap();
        let mut r = l.resources().clone().unwrap_or_default();
        let mut cpu = r.cpu().clone().unwrap_or_default();
        cpu.set_period(Some(1_000));
        cpu.set_quota(asked);
        r.set_cpu(Some(cpu));
        l.set_resources(Some(r));
        spec.set_linux(Some(l));
        let h = harden(spec, &p, &ctx).unwrap();
        let cpu = resources(&h.spec).cpu().clone().unwrap();
        let (quota, period) = (cpu.quota().unwrap(), cpu.period().unwrap());
        assert!(quota >= 1_000, "{asked:?}: quota {quota}");
        assert!(
            quota as u128 * 1000 <= 500 * period as u128,
            "{asked:?}: {quota}us per {period}us is above half a core"
        );
    }
}

#[test]
fn a_cgroups_path_that_climbs_out_is_replaced() {
    let p = profile("default");
    let ctx = sandbox_ctx();
    let mut spec = fixture("ctr-default.json");
    let mut l = spec.linux().clone().unwrap();
    l.set_cgroups_path(Some("/kubepods/../../../system.slice".into()));
    spec.set_linux(Some(l));
    let h = harden(spec, &p, &ctx).unwrap();
    let path = linux(&h.spec).cgroups_path().clone().unwrap();
    assert!(
        !path
            .components()
            .any(|c| c == std::path::Component::ParentDir),
        "{}",
        path.display()
    );
    assert!(path.starts_with(&p.cgroups.parent), "{}", path.display());
}

mod placement;
mod rules;
