//! Where the container's cgroup goes, by cgroup driver and profile parent.

use super::*;

fn with_cgroups_path(path: Option<&str>) -> Spec {
    let mut spec = fixture("ctr-default.json");
    let mut l = spec.linux().clone().unwrap();
    l.set_cgroups_path(path.map(Into::into));
    spec.set_linux(Some(l));
    spec
}

fn placed(spec: Spec, p: &Profile, driver: CgroupDriver) -> (String, Report) {
    let ctx = HardenContext {
        cgroup_driver: driver,
        cgroup_v1: Vec::new(),
        ..sandbox_ctx()
    };
    let h = harden(spec, p, &ctx).unwrap();
    let path = linux(&h.spec).cgroups_path().clone().unwrap();
    (path.display().to_string(), h.report)
}

fn cgroups_changes(report: &Report) -> Vec<&str> {
    report
        .changes
        .iter()
        .filter(|c| c.guard == "cgroups" && c.what.starts_with("cgroupsPath"))
        .map(|c| c.what.as_str())
        .collect()
}

#[test]
fn kubelet_systemd_paths_are_kept_under_the_systemd_driver() {
    let p = profile("default");
    let kubelet = "kubepods-burstable-pod1234.slice:cri-containerd:abc";
    let (path, report) = placed(with_cgroups_path(Some(kubelet)), &p, CgroupDriver::Systemd);
    assert_eq!(path, kubelet);
    assert!(cgroups_changes(&report).is_empty(), "{report:?}");
    // The limits land there too.
    let (path, _) = placed(
        with_cgroups_path(Some("system.slice:stockade:c1")),
        &p,
        CgroupDriver::Systemd,
    );
    assert_eq!(path, "system.slice:stockade:c1");
}

#[test]
fn systemd_paths_on_a_cgroupfs_node_go_under_the_parent() {
    let p = profile("default");
    let (path, report) = placed(
        with_cgroups_path(Some("system.slice:stockade:c1")),
        &p,
        CgroupDriver::Cgroupfs,
    );
    let ctx = sandbox_ctx();
    assert_eq!(
        path,
        format!(
            "{}/{}/{}",
            p.cgroups.parent, ctx.sandbox_id, ctx.container_id
        )
    );
    let changes = cgroups_changes(&report);
    assert_eq!(changes.len(), 1, "{report:?}");
    assert!(
        changes[0].contains("cgroup driver is cgroupfs"),
        "{changes:?}"
    );
}

#[test]
fn malformed_systemd_paths_are_replaced_with_the_reason() {
    let p = profile("default");
    for (bad, reason) in [
        ("nope.slice:a:b:c", "three parts"),
        ("system:p:n", ".slice"),
        ("relative", "must be absolute"),
        ("/", "root cgroup"),
    ] {
        let (path, report) = placed(with_cgroups_path(Some(bad)), &p, CgroupDriver::Systemd);
        assert!(path.starts_with(&p.cgroups.parent), "{bad}: {path}");
        let changes = cgroups_changes(&report);
        assert!(changes[0].contains(reason), "{bad}: {changes:?}");
    }
}

#[test]
fn a_slice_parent_gives_a_scope_under_systemd_and_a_directory_under_cgroupfs() {
    let mut p = profile("default");
    p.cgroups.parent_slice = Some("stockade.slice".into());
    p.cgroups.parent = "/stockade.slice".into();
    let ctx = sandbox_ctx();
    let (path, report) = placed(with_cgroups_path(None), &p, CgroupDriver::Systemd);
    assert_eq!(
        path,
        format!("stockade.slice:stockade:{}", ctx.container_id)
    );
    assert!(cgroups_changes(&report)[0].contains("none given"));
    let (path, _) = placed(with_cgroups_path(None), &p, CgroupDriver::Cgroupfs);
    assert_eq!(
        path,
        format!("/stockade.slice/{}/{}", ctx.sandbox_id, ctx.container_id)
    );
}
