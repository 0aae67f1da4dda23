//! Property tests: whatever spec a pod sends, a hardened spec never holds a capability
//! outside the allowlist, always has a user namespace and no_new_privs, always has CPU,
//! memory and pids limits within the ceilings, and never keeps `linux.seccomp`.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use stockade_cgroups::CgroupsPath;
use stockade_runtime::hardener::{harden, CgroupDriver, HardenContext, HardenError, V1Hierarchy};
use stockade_runtime::idrange::IdRange;
use stockade_runtime::oci_spec::runtime::{LinuxNamespaceType, Spec};
use stockade_runtime::profile::{Profile, Verdict};

const CAPS: [&str; 20] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
    "CAP_SYS_ADMIN",
    "CAP_NET_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_SYS_MODULE",
    "CAP_BPF",
    "CAP_DAC_READ_SEARCH",
];

fn load(name: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(format!("{name}.toml"));
    Profile::load(&path).unwrap()
}

/// The same profile with every policy rule on allow, so generated specs reach the rewrite
/// steps instead of stopping at a refusal.
fn permissive(name: &str) -> Profile {
    let mut p = load(name);
    p.policy.privileged = Verdict::Allow;
    p.policy.host_network = Verdict::Allow;
    p.policy.host_pid = Verdict::Allow;
    p.policy.host_ipc = Verdict::Allow;
    p.policy.extra_capabilities = Verdict::Allow;
    p
}

fn cap_set() -> impl Strategy<Value = Option<Vec<&'static str>>> {
    proptest::option::of(proptest::sample::subsequence(CAPS.to_vec(), 0..CAPS.len()))
}

fn limit() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        Just(Some(-1)),
        Just(Some(0)),
        (1i64..1 << 20).prop_map(Some),
        (1i64..i64::MAX).prop_map(Some),
    ]
}

prop_compose! {
    fn spec()(
        bounding in cap_set(), effective in cap_set(), permitted in cap_set(),
        inheritable in cap_set(), ambient in cap_set(),
        no_new_privs in proptest::option::of(any::<bool>()),
        namespaces in proptest::sample::subsequence(
            vec!["pid", "ipc", "uts", "mount", "network", "user", "cgroup"], 0..7),
        memory in limit(), swap in limit(), quota in limit(),
        period in proptest::option::of(0u64..5_000_000), pids in limit(),
        seccomp in any::<bool>(),
        uid in 0u32..65_536,
        cgroup_mount in any::<bool>(),
    ) -> Spec {
        let caps = |set: Option<Vec<&str>>| set.map(|s| serde_json::json!(s));
        let mut resources = serde_json::json!({});
        if memory.is_some() || swap.is_some() {
            resources["memory"] = serde_json::json!({"limit": memory, "swap": swap});
        }
        if quota.is_some() || period.is_some() {
            resources["cpu"] = serde_json::json!({"quota": quota, "period": period});
        }
        if let Some(p) = pids {
            resources["pids"] = serde_json::json!({"limit": p});
        }
        let mut linux = serde_json::json!({
            "namespaces": namespaces.iter().map(|t| serde_json::json!({"type": t})).collect::<Vec<_>>(),
            "resources": resources,
        });
        if seccomp {
            linux["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"});
        }
        let mut process = serde_json::json!({
            "user": {"uid": uid, "gid": uid},
            "args": ["/bin/true"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps(bounding), "effective": caps(effective),
                "permitted": caps(permitted), "inheritable": caps(inheritable),
                "ambient": caps(ambient),
            },
        });
        if let Some(n) = no_new_privs {
            process["noNewPrivileges"] = serde_json::json!(n);
        }
        let mut text = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": process,
            "root": {"path": "rootfs"},
            "linux": linux,
        });
        if cgroup_mount {
            text["mounts"] = serde_json::json!([{
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            }]);
        }
        serde_json::from_value(strip_nulls(text)).unwrap()
    }
}

/// JSON nulls from `Option::None` mean "not set" in the OCI spec.
fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// A cgroup v1 node's hierarchies, for the view of /sys/fs/cgroup.
fn v1_node() -> Vec<V1Hierarchy> {
    let h = |dir: &str, controllers: &[&str], managed: bool| V1Hierarchy {
        mount_point: PathBuf::from("/sys/fs/cgroup").join(dir),
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
        managed,
        inherited: "/system.slice/containerd.service".into(),
    };
    vec![
        h("cpu,cpuacct", &["cpu", "cpuacct"], true),
        h("memory", &["memory"], true),
        h("pids", &["pids"], true),
        h("systemd", &["name=systemd"], false),
    ]
}

fn check(spec: Spec, profile: &Profile, is_sandbox: bool, v1: bool) -> Result<(), TestCaseError> {
    let ctx = HardenContext {
        container_id: "c".into(),
        sandbox_id: "pod".into(),
        is_sandbox,
        id_range: IdRange {
            first: profile.userns.first_id,
            size: profile.userns.ids_per_pod,
        },
        pod_userns: (!is_sandbox).then(|| "/proc/1234/ns/user".into()),
        pod_pids: if is_sandbox { Vec::new() } else { vec![1234] },
        netns_path_is_host: false,
        cgroup_driver: CgroupDriver::Cgroupfs,
        cgroup_v1: if v1 { v1_node() } else { Vec::new() },
        resolved_sources: Default::default(),
        writable_layer: Default::default(),
    };
    let hardened = match harden(spec, profile, &ctx) {
        Ok(h) => h,
        // Strict refuses what exceeds its ceilings; nothing else may fail.
        Err(HardenError::Refused(r)) if r.rule.name().ends_with("-ceiling") => return Ok(()),
        Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
    };
    let spec = hardened.spec;
    // On v1 libcontainer never sees a `cgroup` mount; hardening the hardened spec again
    // (what an exec does) gives the same mounts.
    let mounts = spec.mounts().clone().unwrap_or_default();
    if v1 {
        prop_assert!(!mounts.iter().any(|m| m.typ().as_deref() == Some("cgroup")));
    }
    match harden(spec.clone(), profile, &ctx) {
        Ok(again) => prop_assert_eq!(again.spec.mounts().clone().unwrap_or_default(), mounts),
        Err(e) => return Err(TestCaseError::fail(format!("hardening again: {e}"))),
    }
    let process = spec.process().as_ref().unwrap();
    let caps = process.capabilities().as_ref().unwrap();
    for set in [caps.bounding(), caps.effective(), caps.permitted()] {
        prop_assert!(set.as_ref().unwrap().is_subset(&profile.capabilities.allow));
    }
    prop_assert!(caps.inheritable().as_ref().unwrap().is_empty());
    prop_assert!(caps.ambient().as_ref().unwrap().is_empty());
    prop_assert_eq!(process.no_new_privileges(), Some(true));

    let linux = spec.linux().as_ref().unwrap();
    prop_assert!(linux.seccomp().is_none());
    let namespaces = linux.namespaces().as_ref().unwrap();
    let user: Vec<_> = namespaces
        .iter()
        .filter(|n| n.typ() == LinuxNamespaceType::User)
        .collect();
    prop_assert_eq!(user.len(), 1);
    prop_assert_eq!(user[0].path().is_none(), is_sandbox);
    prop_assert!(namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Mount));
    let uid_map = linux.uid_mappings().as_ref().unwrap();
    prop_assert_eq!(uid_map[0].host_id(), profile.userns.first_id);
    prop_assert!(uid_map[0].host_id() != 0);

    let ceilings = &profile.cgroups.ceilings;
    let r = linux.resources().as_ref().unwrap();
    let memory = r.memory().unwrap().limit().unwrap();
    prop_assert!(memory > 0 && memory <= ceilings.memory_bytes);
    if let Some(swap) = r.memory().unwrap().swap() {
        prop_assert_eq!(swap, memory);
    }
    let cpu = r.cpu().as_ref().unwrap();
    let (quota, period) = (cpu.quota().unwrap(), cpu.period().unwrap());
    prop_assert!((1_000..=1_000_000).contains(&period));
    prop_assert!(quota >= 1_000);
    prop_assert!(quota as u128 * 1000 <= ceilings.cpu_millicores as u128 * period as u128);
    let pids = r.pids().unwrap().limit();
    prop_assert!(pids > 0 && pids <= ceilings.pids);
    prop_assert!(linux.cgroups_path().as_ref().unwrap().is_absolute());
    Ok(())
}

/// A pod sandbox `c` with the profile's first ID range.
fn sandbox_ctx(profile: &Profile, cgroup_driver: CgroupDriver) -> HardenContext {
    HardenContext {
        container_id: "c".into(),
        sandbox_id: "c".into(),
        is_sandbox: true,
        id_range: IdRange {
            first: profile.userns.first_id,
            size: 65_536,
        },
        pod_userns: None,
        pod_pids: Vec::new(),
        netns_path_is_host: false,
        cgroup_driver,
        cgroup_v1: Vec::new(),
        resolved_sources: Default::default(),
        writable_layer: Default::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn default_profile_invariants(spec in spec(), sandbox in any::<bool>(), v1 in any::<bool>()) {
        check(spec, &permissive("default"), sandbox, v1)?;
    }

    #[test]
    fn strict_profile_invariants(spec in spec(), sandbox in any::<bool>(), v1 in any::<bool>()) {
        check(spec, &permissive("strict"), sandbox, v1)?;
    }

    /// With the policy as shipped, a spec is either refused by a named rule or hardened
    /// with the same invariants.
    #[test]
    fn shipped_policy_refuses_or_hardens(spec in spec()) {
        let profile = load("default");
        let ctx = sandbox_ctx(&profile, CgroupDriver::Cgroupfs);
        match harden(spec.clone(), &profile, &ctx) {
            Ok(_) => check(spec, &profile, true, true)?,
            Err(HardenError::Refused(r)) => prop_assert!(!r.rule.name().is_empty()),
            Err(e) => prop_assert!(false, "unexpected error: {}", e),
        }
    }
    /// Whatever cgroupsPath a spec carries, the container gets a valid one below the
    /// root: the systemd form only under the systemd driver.
    #[test]
    fn cgroups_path_fits_the_driver(
        spec in spec(),
        path in proptest::option::of(prop_oneof![
            "/[a-z0-9./-]{0,24}",
            "[a-z-]{0,10}(\\.slice)?:[a-z-]{0,6}:[a-z0-9.-]{0,8}",
            "[ -~]{0,24}",
        ]),
        systemd in any::<bool>(),
    ) {
        let profile = permissive("default");
        let driver = if systemd { CgroupDriver::Systemd } else { CgroupDriver::Cgroupfs };
        let mut spec = spec;
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(path.map(Into::into));
        spec.set_linux(Some(linux));
        let ctx = sandbox_ctx(&profile, driver);
        if let Ok(h) = harden(spec, &profile, &ctx) {
            let given = h.spec.linux().as_ref().unwrap().cgroups_path().clone().unwrap();
            let parsed = CgroupsPath::parse(&given.to_string_lossy());
            prop_assert!(parsed.is_ok(), "{}: {:?}", given.display(), parsed);
            let parsed = parsed.unwrap();
            prop_assert!(!parsed.relative().as_os_str().is_empty(), "{}", given.display());
            prop_assert!(!parsed.is_systemd() || systemd, "{}", given.display());
        }
    }
}
