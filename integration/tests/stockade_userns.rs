//! The user-namespace promises seen from the host: container root is an unprivileged host
//! UID from its pod's range, copy-up lands in the upper layer owned by that UID, the
//! image's layers are never chowned, and volumes (idmapped through the pod's user
//! namespace) keep runc's owners: what container root writes there is host root's.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use stockade_integration::paths;
use stockade_integration::runtimes::TestRuntime;

const POOL_FIRST: u32 = 1_073_741_824;
const IDS_PER_POD: u32 = 65_536;

fn status_id(pid: i32, key: &str) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The overlay upperdir of the rootfs mounted for container `id`.
fn upperdir(id: &str) -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.contains(" overlay ") && l.contains(&format!("/{id}/rootfs ")))
        .unwrap_or_else(|| panic!("no overlay rootfs for {id}"));
    let upper = line
        .split([',', ' '])
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap();
    PathBuf::from(upper)
}

#[test]
fn container_root_is_an_unprivileged_host_uid_and_owns_what_it_writes() {
    let c = common::start();
    let rt = TestRuntime::stockade().expect("profiles/default.toml");
    // A host-root-owned 0755 directory (the test profile lists this place as a writable
    // hostPath): through the idmapped mount, container root is its owner, as under runc.
    std::fs::create_dir_all(paths::test_volumes_dir()).unwrap();
    let volume = tempfile::tempdir_in(paths::test_volumes_dir()).unwrap();
    std::fs::set_permissions(
        volume.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        volume.path().display()
    );
    let mut firsts = Vec::new();
    for id in ["uns-a", "uns-b"] {
        let out = common::ctr_run(&c, &rt, &["-d", "--mount", &mount], id, &["sleep", "60"]);
        assert!(out.status.success(), "{out:?}");
        let (pid, _) = c.task(id).unwrap();
        let uid = status_id(pid, "Uid:");
        let gid = status_id(pid, "Gid:");
        assert_ne!(uid, 0, "container root must not be host root");
        assert!(
            uid >= POOL_FIRST && (uid - POOL_FIRST) % IDS_PER_POD == 0,
            "uid {uid}"
        );
        assert_eq!(gid, uid);
        firsts.push(uid);
    }
    assert_ne!(firsts[0], firsts[1], "two pods share a range");

    // Copy-up and a new file as container root: the upper layer holds them, owned by the
    // pod's first host UID; the image layer is unchanged.
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "w",
        "uns-a",
        "sh",
        "-c",
        "echo x:x:5:5::/:/bin/sh >> /etc/passwd && touch /newfile /data/from-a && id -u",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    let upper = upperdir("uns-a");
    for f in ["etc/passwd", "newfile"] {
        let meta = std::fs::metadata(upper.join(f)).unwrap();
        assert_eq!(meta.uid(), firsts[0], "{f} in {}", upper.display());
    }
    // Before volumes were idmapped this file was the pod's first host UID's; now it is
    // what runc gives: host root's (container root's own file, mapped back).
    let volume_file = std::fs::metadata(volume.path().join("from-a")).unwrap();
    assert_eq!(
        (volume_file.uid(), volume_file.gid()),
        (0, 0),
        "volume write owner"
    );

    // A read-only volume stays read-only for container root.
    let ro = format!(
        "type=bind,src={},dst=/ro,options=rbind:ro",
        volume.path().display()
    );
    let out = common::ctr_run(
        &c,
        &rt,
        &["--rm", "--mount", &ro],
        "uns-ro",
        &["touch", "/ro/x"],
    );
    assert!(!out.status.success(), "write to a read-only volume worked");
    assert!(!volume.path().join("x").exists());

    for id in ["uns-a", "uns-b"] {
        let _ = c.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
    }
    for id in ["uns-a", "uns-b"] {
        let _ = c.wait_task_status(id, "STOPPED");
        let _ = c.ctr(&["tasks", "rm", id]);
        let _ = c.ctr(&["containers", "rm", id]);
    }
}
