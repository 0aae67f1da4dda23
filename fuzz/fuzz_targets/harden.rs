//! Any OCI runtime spec -> `hardener::harden` with the shipped profiles. It must return a
//! hardened spec or an error, never panic, and a hardened spec always keeps the guards:
//! no_new_privs, capabilities within the allowlist, the pod's user namespace, CPU, memory
//! and pids limits within the ceilings, the profile's masked and read-only paths.
//!
//! Input: one byte choosing the case (bit 0: sandbox or app container, bit 1: default or
//! strict, bit 2: the policy as shipped or every policy rule on allow, so specs reach the
//! rewrite steps; bit 3: the spec's network namespace path is the host's), then the spec's
//! JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::LazyLock;
use stockade_runtime::hardener::{
    harden, CgroupDriver, HardenContext, HardenError, Hardened, Rule, V1Hierarchy,
};
use stockade_runtime::idrange::IdRange;
use stockade_runtime::oci_spec::runtime::{LinuxNamespaceType, Spec};
use stockade_runtime::profile::{Profile, RootPolicy, Verdict};

/// [default, strict] x [as shipped, permissive].
static PROFILES: LazyLock<[[Profile; 2]; 2]> = LazyLock::new(|| {
    let load = |text: &str, file: &str| {
        // The relative seccomp path resolves against the repository's profiles/ directory.
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../profiles")
            .join(file);
        let shipped = Profile::parse(text, &source).expect("shipped profile");
        let mut permissive = shipped.clone();
        let policy = &mut permissive.policy;
        policy.privileged = Verdict::Allow;
        policy.host_network = Verdict::Allow;
        policy.host_pid = Verdict::Allow;
        policy.host_ipc = Verdict::Allow;
        policy.extra_capabilities = Verdict::Allow;
        policy.run_as_root = RootPolicy::Allow;
        [shipped, permissive]
    };
    [
        load(include_str!("../../profiles/default.toml"), "default.toml"),
        load(include_str!("../../profiles/strict.toml"), "strict.toml"),
    ]
});

const POD_PID: i32 = 4242;

fuzz_target!(|data: &[u8]| {
    let Some((&case, json)) = data.split_first() else {
        return;
    };
    let Ok(spec) = serde_json::from_slice::<Spec>(json) else {
        return;
    };
    let is_sandbox = case & 1 != 0;
    let permissive = case & 4 != 0;
    let profile = &PROFILES[usize::from(case & 2 != 0)][usize::from(permissive)];
    let v1_node = || {
        ["cpu,cpuacct", "memory", "systemd"]
            .map(|dir| V1Hierarchy {
                mount_point: std::path::Path::new("/sys/fs/cgroup").join(dir),
                controllers: dir.split(',').map(str::to_string).collect(),
                managed: dir != "systemd",
                inherited: "/system.slice/containerd.service".into(),
            })
            .to_vec()
    };
    let ctx = HardenContext {
        container_id: "c".into(),
        sandbox_id: "pod".into(),
        is_sandbox,
        id_range: IdRange {
            first: profile.userns.first_id,
            size: profile.userns.ids_per_pod,
        },
        pod_userns: (!is_sandbox).then(|| format!("/proc/{POD_PID}/ns/user").into()),
        pod_pids: vec![POD_PID],
        netns_path_is_host: case & 8 != 0,
        cgroup_driver: CgroupDriver::Cgroupfs,
        // Half the cases on a cgroup v1 node: /sys/fs/cgroup becomes the hardener's view.
        cgroup_v1: if case & 16 != 0 {
            v1_node()
        } else {
            Vec::new()
        },
        resolved_sources: Default::default(),
        writable_layer: Default::default(),
    };
    match harden(spec, profile, &ctx) {
        Ok(h) => check(&h, profile, &ctx, permissive),
        Err(HardenError::Refused(r)) if permissive => assert!(
            !matches!(
                r.rule,
                Rule::Privileged
                    | Rule::HostNetwork
                    | Rule::HostPid
                    | Rule::HostIpc
                    | Rule::ExtraCapabilities
                    | Rule::RunAsRoot
            ),
            "refused by a rule the profile allows: {r}"
        ),
        Err(_) => {}
    }
});

fn check(h: &Hardened, p: &Profile, ctx: &HardenContext, permissive: bool) {
    let process = h.spec.process().as_ref().expect("process");
    assert_eq!(process.no_new_privileges(), Some(true));
    let caps = process.capabilities().as_ref().expect("capabilities");
    for set in [caps.bounding(), caps.effective(), caps.permitted()] {
        let set = set.as_ref().expect("capability set");
        assert!(set.is_subset(&p.capabilities.allow), "{set:?}");
    }
    for set in [caps.inheritable(), caps.ambient()] {
        assert!(set.as_ref().is_some_and(|s| s.is_empty()), "{set:?}");
    }

    let linux = h.spec.linux().as_ref().expect("linux");
    assert!(
        linux.seccomp().is_none(),
        "linux.seccomp reaches libcontainer"
    );
    let namespaces = linux.namespaces().as_ref().expect("namespaces");
    let user: Vec<_> = namespaces
        .iter()
        .filter(|n| n.typ() == LinuxNamespaceType::User)
        .collect();
    assert_eq!(user.len(), 1, "{namespaces:?}");
    assert_eq!(user[0].path(), &ctx.pod_userns);
    if !permissive {
        for typ in [
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
        ] {
            assert!(namespaces.iter().any(|n| n.typ() == typ), "no own {typ}");
        }
    }
    for maps in [linux.uid_mappings(), linux.gid_mappings()] {
        let maps = maps.as_ref().expect("ID mappings");
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].container_id(), 0);
        assert_eq!(maps[0].host_id(), ctx.id_range.first);
        assert_eq!(maps[0].size(), ctx.id_range.size);
    }
    for (have, want) in [
        (linux.masked_paths(), &p.paths.masked),
        (linux.readonly_paths(), &p.paths.readonly),
    ] {
        let have = have.as_deref().unwrap_or_default();
        assert!(want.iter().all(|w| have.contains(w)), "{have:?}");
    }

    let ceilings = &p.cgroups.ceilings;
    let r = linux.resources().as_ref().expect("resources");
    let memory = r.memory().expect("memory");
    let limit = memory.limit().expect("memory limit");
    assert!(
        limit > 0 && limit <= ceilings.memory_bytes,
        "memory {limit}"
    );
    assert!(memory.swap().is_none_or(|s| s == limit), "swap {memory:?}");
    let cpu = r.cpu().as_ref().expect("cpu");
    let (quota, period) = (cpu.quota().expect("quota"), cpu.period().expect("period"));
    assert!((1_000..=1_000_000).contains(&period), "period {period}");
    assert!(quota >= 1_000, "quota {quota}");
    assert!(
        quota as u128 * 1000 <= u128::from(ceilings.cpu_millicores) * u128::from(period),
        "quota {quota} per {period}"
    );
    let pids = r.pids().expect("pids").limit();
    assert!(pids > 0 && pids <= ceilings.pids, "pids {pids}");
    if let Some(unified) = r.unified() {
        for key in ["cpu.max", "memory.max", "memory.swap.max", "pids.max"] {
            assert!(!unified.contains_key(key), "raw {key} kept");
        }
    }
    let cgroups_path = linux.cgroups_path().as_ref().expect("cgroupsPath");
    assert!(cgroups_path.is_absolute(), "{cgroups_path:?}");

    // The shim writes the hardened spec as config.json.
    serde_json::to_vec(&h.spec).expect("the hardened spec serializes");
}
