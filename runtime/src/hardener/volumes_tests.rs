//! Bind mounts as containerd 1.6 and 2.2.7 write them for CRI containers (paths captured
//! from both), kubelet's volume layout, and hostPaths.

use super::*;
use crate::hardener::{harden, HardenContext, Hardened, Rule};
use crate::idrange::IdRange;
use crate::volume_settings::Unidmappable;

const SANDBOX: &str = "2633bdf518d6af48e6c9fa2779713ee4829d6bdfb8edaeeb6a2aaf079e94cb28";
const POD_UID: &str = "8f3c2a9e-1b7d-4e60-9a55-0c6f2d1e7b43";
const CRI: &str = "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes";
const CRI_STATE: &str = "/run/containerd/io.containerd.grpc.v1.cri/sandboxes";

fn profile(name: &str) -> Profile {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    Profile::load(&dir.join(format!("{name}.toml"))).unwrap()
}

fn ctx() -> HardenContext {
    HardenContext {
        container_id: "0a1b2c".into(),
        sandbox_id: SANDBOX.into(),
        is_sandbox: false,
        id_range: IdRange {
            first: 1_073_807_360,
            size: 65_536,
        },
        pod_userns: Some("/proc/4242/ns/user".into()),
        pod_pids: vec![4242],
        netns_path_is_host: false,
        cgroup_driver: crate::hardener::CgroupDriver::Cgroupfs,
        cgroup_v1: Vec::new(),
        resolved_sources: Default::default(),
        writable_layer: Default::default(),
    }
}

fn kubelet(rest: &str) -> String {
    format!("/var/lib/kubelet/pods/{POD_UID}/{rest}")
}

/// A CRI app container's spec with `binds` as (destination, source, options).
fn spec(binds: &[(&str, &str, &[&str])]) -> Spec {
    let mut mounts =
        vec![serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"})];
    for (dst, src, options) in binds {
        mounts.push(serde_json::json!({
            "destination": dst, "type": "bind", "source": src, "options": options
        }));
    }
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"cwd": "/", "user": {"uid": 1000, "gid": 0}, "args": ["sh"]},
        "root": {"path": "rootfs"},
        "mounts": mounts,
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": SANDBOX,
            "io.kubernetes.cri.sandbox-uid": POD_UID,
        },
        "linux": {"namespaces": [
            {"type": "pid"}, {"type": "mount"},
            {"type": "ipc", "path": "/proc/4242/ns/ipc"},
            {"type": "network", "path": "/proc/4242/ns/net"}
        ]}
    }))
    .unwrap()
}

fn harden_with(s: Spec, p: &Profile) -> Result<Hardened, HardenError> {
    harden(s, p, &ctx())
}

fn refusal(result: Result<Hardened, HardenError>) -> Refusal {
    match result {
        Err(HardenError::Refused(r)) => r,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(h) => panic!("expected a refusal, got {:?}", h.volumes),
    }
}

fn options(h: &Hardened, destination: &str) -> Vec<String> {
    h.spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new(destination))
        .and_then(|m| m.options().clone())
        .unwrap_or_default()
}

#[test]
fn a_kubelet_pod_is_planned_kind_by_kind() {
    let binds: &[(&str, &str, &[&str])] = &[
        (
            "/etc/creds",
            &kubelet("volumes/kubernetes.io~secret/creds"),
            &["rbind", "rprivate", "ro"],
        ),
        (
            "/var/run/secrets/kubernetes.io/serviceaccount",
            &kubelet("volumes/kubernetes.io~projected/kube-api-access-x"),
            &["rbind", "rprivate", "rw"],
        ),
        (
            "/scratch",
            &kubelet("volumes/kubernetes.io~empty-dir/scratch"),
            &["rbind", "rprivate", "rw"],
        ),
        (
            "/data",
            &kubelet("volumes/kubernetes.io~csi/pv-1/mount"),
            &["rbind", "rprivate", "rw"],
        ),
        (
            "/etc/hosts",
            &kubelet("etc-hosts"),
            &["rbind", "rprivate", "rw"],
        ),
        (
            "/etc/hostname",
            &format!("{CRI}/{SANDBOX}/hostname"),
            &["rbind", "rprivate", "rw"],
        ),
        (
            "/dev/shm",
            &format!("{CRI_STATE}/{SANDBOX}/shm"),
            &["rbind", "rprivate", "rw"],
        ),
        ("/logs", "/var/log/app", &["rbind", "rprivate", "ro"]),
    ];
    let h = harden_with(spec(binds), &profile("default")).unwrap();
    let kinds: Vec<(usize, &VolumeKind)> = h.volumes.iter().map(|v| (v.index, &v.kind)).collect();
    let plugin = |p: &str| VolumeKind::Kubelet {
        plugin: Some(p.into()),
    };
    assert_eq!(
        kinds,
        [
            (1, &plugin("kubernetes.io~secret")),
            (2, &plugin("kubernetes.io~projected")),
            (3, &plugin("kubernetes.io~empty-dir")),
            (4, &plugin("kubernetes.io~csi")),
            (5, &VolumeKind::Kubelet { plugin: None }),
            (6, &VolumeKind::PodFile),
            (7, &VolumeKind::PodFile),
            (8, &VolumeKind::HostPath),
        ]
    );
    assert!(h
        .volumes
        .iter()
        .all(|v| v.recursive && v.mapping == Mapping::Idmapped));
    // Secrets and tokens are sealed, whatever was asked; nothing else is.
    for (dst, sealed) in [
        ("/etc/creds", true),
        ("/var/run/secrets/kubernetes.io/serviceaccount", true),
        ("/scratch", false),
    ] {
        let o = options(&h, dst);
        let v = h
            .volumes
            .iter()
            .find(|v| v.destination == Path::new(dst))
            .unwrap();
        assert_eq!(v.sealed, sealed, "{dst}");
        for flag in SEALED {
            assert_eq!(o.iter().any(|x| x == flag), sealed, "{dst}: {o:?}");
        }
        assert_eq!(
            o.iter().any(|x| x == "rw"),
            !sealed && dst != "/etc/creds",
            "{dst}"
        );
    }
    let report = serde_json::to_string(&h.report).unwrap();
    assert!(report.contains("secret volume at /var/run/secrets/kubernetes.io/serviceaccount mounted ro,nosuid,nodev,noexec"), "{report}");
    assert!(
        report.contains("hostPath /var/log/app at /logs allowed read-only"),
        "{report}"
    );
    // containerd's own files fall back to a plain bind (its shm is a tmpfs); the rest
    // follow the profile.
    for v in &h.volumes {
        let expected = if v.kind == VolumeKind::PodFile {
            Unidmappable::Unmapped
        } else {
            Unidmappable::Refuse
        };
        assert_eq!(v.on_unidmappable, expected, "{v:?}");
    }
}

#[test]
fn writable_host_paths_need_the_allowlist() {
    let rw = spec(&[("/data", "/srv/data", &["rbind", "rw"])]);
    let ro = spec(&[("/data", "/srv/data", &["rbind", "ro"])]);
    let r = refusal(harden_with(rw.clone(), &profile("default")));
    assert_eq!(r.rule, Rule::HostPath);
    assert!(
        r.reason.contains("/srv/data")
            && r.reason.contains("/data")
            && r.reason.contains("read-only"),
        "{}",
        r.reason
    );
    harden_with(ro.clone(), &profile("default")).unwrap();
    // strict: no hostPath at all.
    assert_eq!(
        refusal(harden_with(ro.clone(), &profile("strict"))).rule,
        Rule::HostPath
    );

    let mut p = profile("default");
    p.volumes.host_paths = vec![
        HostPathRule {
            path: "/srv".into(),
            writable: false,
        },
        HostPathRule {
            path: "/srv/data".into(),
            writable: true,
        },
    ];
    let h = harden_with(rw, &p).unwrap();
    assert!(h
        .report
        .notes
        .iter()
        .any(|n| n.contains("allowed writable by volumes.host_paths (/srv/data)")));
    let other = spec(&[("/x", "/srv/other", &["rbind", "rw"])]);
    let r = refusal(harden_with(other, &p));
    assert!(r.reason.contains("lists /srv read-only"), "{}", r.reason);
    p.volumes.unlisted_host_paths = UnlistedHostPaths::Deny;
    harden_with(ro, &p).unwrap();
    let r = refusal(harden_with(spec(&[("/e", "/etc", &["rbind", "ro"])]), &p));
    assert!(
        r.reason.contains("/srv/data writable") && r.reason.contains("/etc"),
        "{}",
        r.reason
    );
}

#[test]
fn look_alikes_are_host_paths() {
    // Another pod's kubelet directory, another sandbox's files, and climbing out.
    for source in [
        "/var/lib/kubelet/pods/other-pod/volumes/kubernetes.io~secret/s".to_string(),
        "/var/lib/kubelet/pods".to_string(),
        format!("{CRI}/0000/hosts"),
        format!("{CRI}/{SANDBOX}/hosts/x"),
        format!("/tmp/io.containerd.grpc.v1.cri/sandboxes/{SANDBOX}/config.json"),
    ] {
        let r = refusal(harden_with(
            spec(&[("/x", &source, &["rbind", "rw"])]),
            &profile("default"),
        ));
        assert_eq!(r.rule, Rule::HostPath, "{source}");
    }
    for source in [kubelet("volumes/../../../../etc"), "etc/shadow".into()] {
        let r = refusal(harden_with(
            spec(&[("/x", &source, &["rbind", "ro"])]),
            &profile("default"),
        ));
        assert!(r.reason.contains("without `..`"), "{}", r.reason);
    }
    // Without the pod's UID (ctr), nothing is kubelet's.
    let mut s = spec(&[(
        "/x",
        &kubelet("volumes/kubernetes.io~empty-dir/e"),
        &["rbind", "rw"],
    )]);
    s.set_annotations(None);
    assert_eq!(
        refusal(harden_with(s, &profile("default"))).rule,
        Rule::HostPath
    );
}

#[test]
fn host_paths_are_judged_and_mounted_where_their_symlinks_lead() {
    let mut p = profile("default");
    p.volumes.host_paths = vec![HostPathRule {
        path: "/srv/data".into(),
        writable: true,
    }];
    let s = spec(&[("/x", "/srv/data/link", &["rbind", "rw"])]);
    let mut c = ctx();
    c.resolved_sources
        .insert("/srv/data/link".into(), "/etc".into());
    let r = refusal(harden(s.clone(), &p, &c));
    assert!(r.reason.contains("/etc"), "{}", r.reason);
    c.resolved_sources
        .insert("/srv/data/link".into(), "/srv/data/real".into());
    let h = harden(s, &p, &c).unwrap();
    assert_eq!(h.volumes[0].source, Path::new("/srv/data/real"));
}

#[test]
fn propagation_gets_a_plain_bind_and_staging_rewrites_sources() {
    let mut s = spec(&[
        (
            "/a",
            &kubelet("volumes/kubernetes.io~empty-dir/a"),
            &["rbind", "rslave", "rw"],
        ),
        (
            "/b",
            &kubelet("volumes/kubernetes.io~empty-dir/b"),
            &["bind", "rprivate"],
        ),
    ]);
    let h = harden_with(s.clone(), &profile("default")).unwrap();
    assert_eq!(h.volumes[0].mapping, Mapping::Plain);
    assert!(!h.volumes[1].recursive && h.volumes[1].mapping == Mapping::Idmapped);
    assert!(h
        .report
        .notes
        .iter()
        .any(|n| n.contains("`rslave` needs a plain bind")));
    point_at_staging(&mut s, &h.volumes, Path::new("/b/.stockade-binds"));
    let sources: Vec<_> = s
        .mounts()
        .iter()
        .flatten()
        .filter_map(|m| m.source().clone())
        .collect();
    assert_eq!(
        sources,
        [
            PathBuf::from("proc"),
            "/b/.stockade-binds/1".into(),
            "/b/.stockade-binds/2".into()
        ]
    );
    assert_eq!(
        bind_sources(&spec(&[("/x", "/y", &["rbind"])])),
        [PathBuf::from("/y")]
    );
}

#[test]
fn mount_mappings_of_the_pods_own_range_are_taken_out() {
    let c = ctx();
    let pod = serde_json::json!([{"containerID": 0, "hostID": c.id_range.first, "size": 65536}]);
    let other = serde_json::json!([{"containerID": 0, "hostID": 1310720, "size": 65536}]);
    let with = |maps: &serde_json::Value, typ: &str| {
        let mut s = serde_json::to_value(spec(&[])).unwrap();
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/etc/hosts", "type": typ, "source": format!("{CRI}/{SANDBOX}/hosts"),
            "options": if typ == "bind" { vec!["rbind", "rw"] } else { vec!["rw"] },
            "uidMappings": maps, "gidMappings": maps
        }));
        serde_json::from_value::<Spec>(s).unwrap()
    };
    let h = harden(with(&pod, "bind"), &profile("default"), &c).unwrap();
    let m = &h.spec.mounts().as_ref().unwrap()[1];
    assert!(m.uid_mappings().is_none() && m.gid_mappings().is_none());
    assert_eq!(h.volumes[0].kind, VolumeKind::PodFile);
    for (maps, typ) in [(&other, "bind"), (&pod, "tmpfs")] {
        match harden(with(maps, typ), &profile("default"), &c) {
            Err(HardenError::InvalidSpec(e)) => assert!(e.contains("mounts[1]"), "{e}"),
            other => panic!("{typ}: {other:?}"),
        }
    }
}

#[test]
fn an_exec_on_a_hardened_spec_keeps_the_pods_range() {
    // The shim hardens an exec process against the spec the hardener left: its mapping is
    // the pod's Stockade range, not kubelet's.
    let p = profile("default");
    let h = harden_with(spec(&[]), &p).unwrap();
    let again = harden_with(h.spec, &p).unwrap();
    let m = again
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .uid_mappings()
        .clone()
        .unwrap();
    assert_eq!(m[0].host_id(), ctx().id_range.first);
}
