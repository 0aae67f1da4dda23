use super::*;
use crate::storage_settings::StorageLimits;

fn mount(kind: &str, options: &[&str]) -> RootfsMount {
    RootfsMount {
        kind: kind.into(),
        source: kind.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

#[test]
fn the_writable_layer_is_the_overlay_upper_directory() {
    let ro = mount("overlay", &["lowerdir=/a:/b"]);
    assert_eq!(writable_layer(&[ro]), WritableLayer::None);
    assert_eq!(writable_layer(&[]), WritableLayer::None);
    let bind_ro = mount("bind", &["rbind", "ro"]);
    assert_eq!(writable_layer(&[bind_ro]), WritableLayer::None);
    let WritableLayer::NoQuota { why } = writable_layer(&[mount("bind", &["rbind", "rw"])]) else {
        panic!("a writable bind rootfs cannot be bounded")
    };
    assert!(why.contains("bind mount"), "{why}");
    let missing = mount(
        "overlay",
        &["lowerdir=/a", "upperdir=/nonexistent/u", "workdir=/w"],
    );
    let WritableLayer::NoQuota { why } = writable_layer(&[missing]) else {
        panic!("a missing upper directory cannot be bounded")
    };
    assert!(why.contains("/nonexistent/u"), "{why}");
}

/// The build directory's filesystem (ext4 or tmpfs here, without project quotas) is named,
/// with what a quota needs.
#[test]
fn a_filesystem_without_project_quotas_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("fs");
    std::fs::create_dir(&upper).unwrap();
    let options = [
        "lowerdir=/a".to_string(),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", dir.path().join("work").display()),
    ];
    let m = RootfsMount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: options.to_vec(),
    };
    match writable_layer(&[m]) {
        WritableLayer::NoQuota { why } => {
            assert!(why.contains(&upper.display().to_string()), "{why}");
            assert!(why.contains("project quotas need ext4"), "{why}");
        }
        // A machine whose temp dir enforces project quotas: nothing to check here.
        WritableLayer::Quota { filesystem, .. } => eprintln!("temp dir has quotas: {filesystem}"),
        WritableLayer::None => panic!("the upper directory was not found"),
    }
}

#[test]
fn a_failed_apply_leaves_no_claim_and_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let (table, bundle) = (dir.path().join("ids"), dir.path().join("bundle"));
    std::fs::create_dir(&bundle).unwrap();
    let quota = StorageQuota {
        dirs: vec![dir.path().join("no-such-upper")],
        limits: StorageLimits {
            bytes: 1 << 30,
            inodes: 1000,
        },
    };
    let e = apply(&quota, &table, &bundle, "c1").unwrap_err();
    assert!(e.to_string().contains("no-such-upper"), "{e}");
    assert!(!bundle.join(RECORD).exists());
    assert_eq!(std::fs::read_dir(&table).map_or(0, |d| d.count()), 0);
    // Nothing recorded: release has nothing to do.
    assert!(release(&bundle).unwrap().is_none());
}

#[test]
fn the_first_mount_of_a_device_is_found_without_parsing_the_others() {
    let table = "\
22 1 0:21 / /proc rw - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
28 27 254:0 /srv /srv rw - ext4 /dev/vda rw,prjquota
not a mountinfo line at all
";
    let m = first_mount_of(table.lines(), "254:0").expect("the root mount");
    assert_eq!(m.mount_point, Path::new("/"));
    assert_eq!(m.mount_source.as_deref(), Some("/dev/vda"));
    assert!(!m.super_options.contains_key("prjquota"));
    assert!(first_mount_of(table.lines(), "8:1").is_none());
    // A malformed line of the device itself gives no facts rather than wrong ones.
    assert!(first_mount_of("1 2 8:1 broken\n".lines(), "8:1").is_none());
}
