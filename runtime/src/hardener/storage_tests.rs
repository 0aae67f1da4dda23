use super::*;
use crate::storage_settings::StorageSettings;
use std::collections::HashMap;
use std::path::Path;

fn profile(unsupported: Unsupported) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/default.toml");
    let mut p = Profile::load(&path).unwrap();
    p.storage = Some(StorageSettings {
        defaults: StorageLimits {
            bytes: 1 << 30,
            inodes: 10_000,
        },
        ceilings: StorageLimits {
            bytes: 4 << 30,
            inodes: 50_000,
        },
        unsupported,
    });
    p
}

fn spec(annotations: &[(&str, &str)]) -> Spec {
    let mut spec = Spec::default();
    let map: HashMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.set_annotations(Some(map));
    spec
}

fn quota_layer() -> WritableLayer {
    WritableLayer::Quota {
        dirs: vec![
            "/var/lib/containerd/snapshots/7/fs".into(),
            "/var/lib/containerd/snapshots/7/work".into(),
        ],
        filesystem: "ext4 on /dev/loop3".into(),
    }
}

fn no_quota() -> WritableLayer {
    WritableLayer::NoQuota {
        why: "/x is on ext4 (/dev/vda1) mounted without prjquota".into(),
    }
}

#[test]
fn default_limits_on_a_quota_filesystem() {
    let mut report = Report::default();
    let q = decide(
        &spec(&[]),
        &profile(Unsupported::Refuse),
        &quota_layer(),
        &mut report,
    )
    .unwrap()
    .unwrap();
    assert_eq!(q.limits.bytes, 1 << 30);
    assert_eq!(q.limits.inodes, 10_000);
    assert_eq!(q.dirs[0], Path::new("/var/lib/containerd/snapshots/7/fs"));
    assert!(report.changes.iter().any(|c| c.guard == "storage"));
}

#[test]
fn annotations_choose_within_the_ceiling() {
    let s = spec(&[(ANNOTATION_BYTES, "2Gi"), (ANNOTATION_INODES, "2000")]);
    let mut report = Report::default();
    let q = decide(
        &s,
        &profile(Unsupported::Refuse),
        &quota_layer(),
        &mut report,
    )
    .unwrap()
    .unwrap();
    assert_eq!((q.limits.bytes, q.limits.inodes), (2 << 30, 2000));
}

/// What one annotation on a quota filesystem gets, where it is refused.
fn annotated_error(key: &str, value: &str) -> HardenError {
    decide(
        &spec(&[(key, value)]),
        &profile(Unsupported::Unbounded),
        &quota_layer(),
        &mut Report::default(),
    )
    .unwrap_err()
}

#[test]
fn above_the_ceiling_is_refused_naming_the_annotation() {
    for (key, value) in [(ANNOTATION_BYTES, "5Gi"), (ANNOTATION_INODES, "50001")] {
        let e = annotated_error(key, value);
        let HardenError::Refused(r) = &e else {
            panic!("{e}")
        };
        assert_eq!(r.rule, Rule::EphemeralStorageCeiling);
        assert!(e.to_string().contains(key), "{e}");
        assert!(e.to_string().contains("ephemeral-storage-ceiling"), "{e}");
    }
}

#[test]
fn malformed_annotations_name_the_key() {
    for (key, value) in [
        (ANNOTATION_BYTES, "lots"),
        (ANNOTATION_BYTES, "1Zi"),
        (ANNOTATION_BYTES, "10"),
        (ANNOTATION_INODES, "-5"),
        (ANNOTATION_INODES, "1e6"),
        (ANNOTATION_INODES, "3"),
    ] {
        let e = annotated_error(key, value);
        assert!(
            matches!(&e, HardenError::InvalidSpec(m) if m.contains(key)),
            "{key}={value}: {e}"
        );
    }
}

#[test]
fn no_quota_refuses_or_records_as_the_profile_says() {
    let e = decide(
        &spec(&[]),
        &profile(Unsupported::Refuse),
        &no_quota(),
        &mut Report::default(),
    )
    .unwrap_err();
    assert!(matches!(&e, HardenError::Refused(r) if r.rule == Rule::EphemeralStorage));
    assert!(e.to_string().contains("without prjquota"), "{e}");

    let mut report = Report::default();
    let q = decide(
        &spec(&[]),
        &profile(Unsupported::Unbounded),
        &no_quota(),
        &mut report,
    )
    .unwrap();
    assert!(q.is_none());
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].rule, "ephemeral-storage");
    assert!(report.findings[0].reason.contains("without prjquota"));
}

#[test]
fn no_writable_layer_or_no_storage_table_bounds_nothing() {
    let mut report = Report::default();
    assert!(decide(
        &spec(&[]),
        &profile(Unsupported::Refuse),
        &WritableLayer::None,
        &mut report
    )
    .unwrap()
    .is_none());
    assert!(report.findings.is_empty());
    let mut p = profile(Unsupported::Refuse);
    p.storage = None;
    assert!(decide(&spec(&[]), &p, &no_quota(), &mut report)
        .unwrap()
        .is_none());
    assert!(report.findings.is_empty());
}
