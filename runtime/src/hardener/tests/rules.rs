//! The `host-devices` and `run-as-root` rules, and what a pod's annotations can reach.

use super::*;
use crate::pod::{ANNOTATION_CONTAINER_NAME, ANNOTATION_IMAGE_NAME};
use crate::profile::RootPolicy;
use serde_json::json;

/// What `ctr run --device PATH` adds: the node, and a cgroup rule opening it.
fn with_device(mut spec: Spec, path: &str, typ: &str, major: i64, minor: i64) -> Spec {
    let mut l = spec.linux().clone().unwrap();
    let mut devices = l.devices().clone().unwrap_or_default();
    devices.push(
        serde_json::from_value(json!({
            "path": path, "type": typ, "major": major, "minor": minor,
            "fileMode": 0o660, "uid": 0, "gid": 6
        }))
        .unwrap(),
    );
    l.set_devices(Some(devices));
    spec.set_linux(Some(l));
    with_device_rule(
        spec,
        json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": "rwm"}),
    )
}

fn with_device_rule(mut spec: Spec, rule: serde_json::Value) -> Spec {
    let mut l = spec.linux().clone().unwrap();
    let mut r = l.resources().clone().unwrap_or_default();
    let mut rules = r.devices().clone().unwrap_or_default();
    rules.push(serde_json::from_value(rule).unwrap());
    r.set_devices(Some(rules));
    l.set_resources(Some(r));
    spec.set_linux(Some(l));
    spec
}

fn refusal(result: Result<Hardened, HardenError>) -> Refusal {
    match result {
        Err(HardenError::Refused(r)) => r,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a hardened spec"),
    }
}

#[test]
fn a_host_disk_is_refused_by_name() {
    let p = profile("default");
    let spec = with_device(fixture("ctr-default.json"), "/dev/vda", "b", 254, 0);
    let r = refusal(harden(spec, &p, &sandbox_ctx()));
    assert_eq!(r.rule, Rule::HostDevices);
    let msg = r.to_string();
    assert!(msg.contains("rule `host-devices`"), "{msg}");
    assert!(msg.contains("/dev/vda (block 254:0)"), "{msg}");
    assert!(msg.contains("policy.allowed_devices is empty"), "{msg}");
}

#[test]
fn an_allowed_device_and_its_rule_pass() {
    let mut p = profile("default");
    p.policy.allowed_devices = vec!["/dev/fuse".into()];
    let spec = with_device(fixture("ctr-default.json"), "/dev/fuse", "c", 10, 229);
    let ctx = sandbox_ctx();
    let h = harden(spec, &p, &ctx).unwrap();
    assert_hardened(&h, &p, &ctx);
    // The allowlist names that device, not its neighbours.
    let spec = with_device(fixture("ctr-default.json"), "/dev/vda", "b", 254, 0);
    assert_eq!(refused_by(harden(spec, &p, &ctx)), Rule::HostDevices);
}

#[test]
fn device_rules_without_an_allowed_node_are_refused() {
    let p = profile("default");
    let cases = [
        (
            json!({"allow": true, "type": "b", "major": 254, "minor": 0, "access": "rw"}),
            "allow b 254:0 rw",
        ),
        (
            json!({"allow": true, "type": "b", "major": 8, "access": "rwm"}),
            "allow b 8:* rwm",
        ),
        (
            json!({"allow": true, "type": "c", "major": 1, "minor": 1, "access": "r"}),
            "allow c 1:1 r",
        ),
    ];
    for (rule, shown) in cases {
        let spec = with_device_rule(fixture("ctr-default.json"), rule);
        let r = refusal(harden(spec, &p, &sandbox_ctx()));
        assert_eq!(r.rule, Rule::HostDevices);
        assert!(r.reason.contains(shown), "{shown}: {r}");
    }
    // Deny rules and mknod-only rules only narrow; default devices pass.
    for ok in [
        json!({"allow": false, "type": "b", "major": 8, "access": "rwm"}),
        json!({"allow": true, "type": "c", "access": "m"}),
        json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}),
    ] {
        let spec = with_device_rule(fixture("ctr-default.json"), ok.clone());
        assert!(harden(spec, &p, &sandbox_ctx()).is_ok(), "{ok}");
    }
}

#[test]
fn a_default_device_name_with_another_number_is_refused() {
    let p = profile("default");
    let spec = with_device(fixture("ctr-default.json"), "/dev/null", "b", 8, 0);
    let r = refusal(harden(spec, &p, &sandbox_ctx()));
    assert_eq!(r.rule, Rule::HostDevices);
    assert!(r.reason.contains("/dev/null (block 8:0)"), "{r}");
    assert!(r.reason.contains("which is character 1:3"), "{r}");
}

#[test]
fn a_privileged_container_the_profile_allows_is_not_refused_for_devices() {
    let mut p = profile("default");
    p.policy.privileged = Verdict::Allow;
    p.policy.extra_capabilities = Verdict::Allow;
    let h = harden(fixture("cri-privileged.json"), &p, &app_ctx()).unwrap();
    assert!(h
        .report
        .notes
        .iter()
        .any(|n| n.contains("host devices not checked")));
}

fn update(rules: serde_json::Value) -> LinuxResources {
    serde_json::from_value(json!({"devices": rules, "pids": {"limit": 10}})).unwrap()
}

#[test]
fn an_update_may_not_change_device_rules() {
    let p = profile("default");
    let vda = json!([{"allow": true, "type": "b", "major": 254, "minor": 0, "access": "rwm"}]);
    let e = harden_resources(update(vda.clone()), &p).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("rule `host-devices`"), "{msg}");
    assert!(msg.contains("adds `allow b 254:0 rwm`"), "{msg}");

    // Only default rules, or what Create set (CRI repeats it on every update): accepted,
    // and the device cgroup is not written again.
    let created = resources(&fixture("ctr-default.json"))
        .devices()
        .clone()
        .unwrap();
    let (r, report) =
        harden_resources(update(serde_json::to_value(&created).unwrap()), &p).unwrap();
    assert_eq!(r.devices(), &None);
    assert!(report.changes.iter().any(|c| c.guard == "devices"));
    let mut shuffled = created.clone();
    shuffled.reverse();
    let again = update(serde_json::to_value(&shuffled).unwrap());
    let (r, _) = harden_update(again, Some(&created), &p).unwrap();
    assert_eq!((r.devices(), r.pids().unwrap().limit()), (&None, 10));

    // Against the Create's rules: adding or dropping one is a change.
    let mut more = created.clone();
    more.push(serde_json::from_value(vda[0].clone()).unwrap());
    let e = harden_update(
        update(serde_json::to_value(&more).unwrap()),
        Some(&created),
        &p,
    )
    .unwrap_err();
    assert!(e.to_string().contains("adds `allow b 254:0 rwm`"), "{e}");
    let fewer = &created[..created.len() - 1];
    let e = harden_update(
        update(serde_json::to_value(fewer).unwrap()),
        Some(&created),
        &p,
    )
    .unwrap_err();
    assert!(e.to_string().contains("drops `allow c 10:200 rwm`"), "{e}");
    // No device rules at all: nothing to check.
    let plain: LinuxResources = serde_json::from_value(json!({"pids": {"limit": 10}})).unwrap();
    assert!(harden_update(plain, Some(&[]), &p).is_ok());
}

#[test]
fn strict_refuses_a_root_app_container_and_says_how_to_fix_it() {
    let p = profile("strict");
    assert_eq!(p.policy.run_as_root, RootPolicy::Deny);
    let spec = with_image(fixture("cri-container.json"), "registry.k8s.io/app:1");
    let r = refusal(harden(spec, &p, &app_ctx()));
    assert_eq!(r.rule, Rule::RunAsRoot);
    let msg = r.to_string();
    for needle in [
        "rule `run-as-root`",
        "UID 0, GID 0",
        "the user of image \"registry.k8s.io/app:1\"",
        "securityContext.runAsUser",
        "runAsNonRoot: true",
        "--user 1000:1000",
    ] {
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    // A `ctr run` container is its own pod but no pod sandbox: not exempt.
    assert_eq!(
        refused_by(harden(fixture("ctr-default.json"), &p, &sandbox_ctx())),
        Rule::RunAsRoot
    );
    // An application user runs.
    let spec = as_user(
        with_image(fixture("cri-container.json"), "registry.k8s.io/app:1"),
        1000,
    );
    assert!(harden(spec, &p, &app_ctx()).is_ok());
}

#[test]
fn the_pod_sandbox_is_exempt() {
    let p = profile("strict");
    let ctx = sandbox_ctx();
    let h = harden(as_user(fixture("cri-sandbox.json"), 0), &p, &ctx).unwrap();
    assert!(h.report.findings.is_empty());
}

#[test]
fn default_records_a_root_container_as_a_finding() {
    let mut p = profile("default");
    assert_eq!(p.policy.run_as_root, RootPolicy::Audit);
    let h = harden(fixture("cri-container.json"), &p, &app_ctx()).unwrap();
    assert_eq!(h.report.findings.len(), 1);
    assert_eq!(h.report.findings[0].rule, "run-as-root");
    assert!(h.report.findings[0].reason.contains("runAsUser"));
    let h = harden(as_user(fixture("cri-container.json"), 1000), &p, &app_ctx()).unwrap();
    assert!(h.report.findings.is_empty());
    p.policy.run_as_root = RootPolicy::Allow;
    let h = harden(fixture("cri-container.json"), &p, &app_ctx()).unwrap();
    assert!(h.report.findings.is_empty());
}

/// containerd's pod_annotations passthrough can put any annotation a pod likes on its
/// sandbox's spec where CRI writes none (image-name, container-name): it changes no
/// decision.
#[test]
fn annotations_a_pod_can_forge_on_its_sandbox_decide_nothing() {
    let strict = profile("strict");
    let ctx = sandbox_ctx();
    let clean = harden(fixture("cri-sandbox.json"), &strict, &ctx).unwrap();
    let mut forged = fixture("cri-sandbox.json");
    let mut a = forged.annotations().clone().unwrap();
    a.insert(ANNOTATION_IMAGE_NAME.into(), "evil.example.com/x:1".into());
    a.insert(ANNOTATION_CONTAINER_NAME.into(), "app".into());
    forged.set_annotations(Some(a));
    let attacked = harden(forged, &strict, &ctx).unwrap();
    let without_annotations = |h: &Hardened| {
        let mut s = h.spec.clone();
        s.set_annotations(None);
        serde_json::to_value(&s).unwrap()
    };
    assert_eq!(without_annotations(&attacked), without_annotations(&clean));
    assert_eq!(attacked.report.changes, clean.report.changes);
    assert_eq!(attacked.report.notes, clean.report.notes);
}
