//! A hostPath with a submount (a tmpfs on `<dir>/tmpfs`, as critest's "Container Mount
//! Readonly" specs make it), mounted read-only and recursively read-only (CRI
//! `recursive_read_only`) into a container of a running pod, under runc and under Stockade
//! in the same run:
//! - writes: the top is read-only either way; the submount is writable under plain ro and
//!   read-only under rro (containerd 1.6's CRI has no `recursive_read_only`: plain ro there);
//! - while the container runs, the host unmounts the submount and removes the directory
//!   (critest's cleanup): nothing of the container's mounts is in the host's namespace;
//! - once the container is removed, its pod still running, no mount namespace on the node
//!   holds the submount, and it unmounts without MNT_DETACH.
//!
//! And a read-only hostPath with HostToContainer propagation (staged as a plain bind, a
//! peer of its source) still receives a mount the host makes after the container started,
//! though Stockade's staged bind is gone from the host's namespace by then.

mod common;

use k8s_cri::v1::{Mount, MountPropagation, PodSandboxConfig};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};
use stockade_integration::mount_holders::{self, Holder};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::{Containerd, Cri};

/// A temp dir in the instance's dir (as critest's are in its run's) and its
/// subdirectory `sub`, to mount on.
fn dir_in(c: &Containerd, prefix: &str, sub: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&c.dir)
        .unwrap();
    let path = dir.path().join(sub);
    std::fs::create_dir(&path).unwrap();
    (dir, path)
}

fn mount_tmpfs(at: &Path) {
    mount(
        Some("none"),
        at,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap_or_else(|e| panic!("mounting a tmpfs on {}: {e}", at.display()));
}

/// A host directory with a tmpfs mounted on its `tmpfs` subdirectory ([`dir_in`]); the
/// tmpfs is detached on drop, and whatever a failed test leaves goes with the instance.
struct HostPath {
    dir: Option<tempfile::TempDir>,
    sub: PathBuf,
    /// The tmpfs's `major:minor`.
    dev: String,
}

impl HostPath {
    fn new(c: &Containerd) -> HostPath {
        let (dir, sub) = dir_in(c, "hostpath-", "tmpfs");
        mount_tmpfs(&sub);
        let dev = mount_holders::device_of(&sub).unwrap();
        HostPath {
            dir: Some(dir),
            sub,
            dev,
        }
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Every mount of the tmpfs on the node but the original one in the host's namespace.
    fn other_holders(&self) -> Vec<Holder> {
        let own = mount_holders::own_mnt_ns().unwrap();
        let mut all = mount_holders::holders(&self.dev).unwrap();
        let original = all
            .iter()
            .position(|h| h.mnt_ns == own && h.mount_point == self.sub);
        if let Some(i) = original {
            all.remove(i);
        }
        all
    }

    /// What critest's cleanup does: a lazy unmount of the tmpfs, then removing the tree.
    fn remove(mut self, flags: MntFlags) -> Result<(), String> {
        umount2(&self.sub, flags).map_err(|e| format!("unmounting {}: {e}", self.sub.display()))?;
        let dir = self.dir.take().unwrap();
        let path = dir.path().to_path_buf();
        std::fs::remove_dir_all(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        std::mem::forget(dir);
        Ok(())
    }
}

impl Drop for HostPath {
    fn drop(&mut self) {
        if self.dir.is_some() {
            let _ = umount2(&self.sub, MntFlags::MNT_DETACH);
        }
    }
}

/// The exit code and message of `sh -c script` in the container.
fn run(cri: &Cri, id: &str, script: &str) -> (i32, String) {
    let r = cri.exec_sync(id, &["sh", "-c", script]).unwrap();
    (
        r.exit_code,
        format!("{}{}", r.stdout, r.stderr).trim().into(),
    )
}

/// What a container with the hostPath at /mnt could write: (the top, the submount).
#[derive(Debug, PartialEq, Eq)]
struct Writes {
    top: bool,
    submount: bool,
}

fn container(cri: &Cri, pod: &str, pod_cfg: &PodSandboxConfig, hp: &HostPath, rro: bool) -> String {
    let name = if rro { "rro" } else { "ro" };
    let mut cfg = cri.container_config(name, &["sleep", "600"]);
    cfg.mounts = vec![Mount {
        container_path: "/mnt".into(),
        host_path: hp.path().display().to_string(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    }];
    cri.run_container(pod, &cfg, pod_cfg)
        .unwrap_or_else(|e| panic!("{name} container: {e:#}"))
}

fn remove_container(cri: &Cri, id: &str) {
    cri.stop_container(id, 0).unwrap();
    cri.remove_container(id).unwrap();
}

/// One mode (`rro` or plain ro) under `rt` in `pod`: what the container could write.
fn scenario(
    c: &Containerd,
    cri: &Cri,
    rt: &TestRuntime,
    pod: &str,
    pod_cfg: &PodSandboxConfig,
    rro: bool,
) -> Writes {
    let what = format!("{} {}", rt.label, if rro { "rro" } else { "ro" });

    // critest's order: the hostPath goes while its container still runs.
    let hp = HostPath::new(c);
    let id = container(cri, pod, pod_cfg, &hp, rro);
    let (top, top_msg) = run(cri, &id, "touch /mnt/top");
    let (sub, sub_msg) = run(cri, &id, "touch /mnt/tmpfs/file");
    for (code, msg) in [(top, &top_msg), (sub, &sub_msg)] {
        assert!(
            code == 0 || msg.contains("Read-only file system"),
            "{what}: {msg}"
        );
    }
    let in_host_ns: Vec<Holder> = {
        let own = mount_holders::own_mnt_ns().unwrap();
        hp.other_holders()
            .into_iter()
            .filter(|h| h.mnt_ns == own)
            .collect()
    };
    assert!(
        in_host_ns.is_empty(),
        "{what}: the container's copies of the submount are in the host's mount namespace:{}",
        mount_holders::describe(&in_host_ns)
    );
    let holders = mount_holders::holders(&hp.dev).unwrap();
    if let Err(e) = hp.remove(MntFlags::MNT_DETACH) {
        panic!(
            "{what}: {e}, with the container running; mounts of the submount before:{}",
            mount_holders::describe(&holders)
        );
    }
    let (code, msg) = run(cri, &id, "ls /mnt");
    assert_eq!(code, 0, "{what}: the container lost its mount: {msg}");
    remove_container(cri, &id);

    // The container removed, its pod still running: nothing holds the submount.
    let hp = HostPath::new(c);
    let id = container(cri, pod, pod_cfg, &hp, rro);
    remove_container(cri, &id);
    let left = hp.other_holders();
    assert!(
        left.is_empty(),
        "{what}: after RemoveContainer, with the pod running, the submount is still mounted:{}",
        mount_holders::describe(&left)
    );
    hp.remove(MntFlags::empty())
        .unwrap_or_else(|e| panic!("{what}: {e}, after RemoveContainer"));

    Writes {
        top: top == 0,
        submount: sub == 0,
    }
}

/// Both modes under `rt`, in one pod that runs throughout.
fn both_modes(c: &Containerd, rt: &TestRuntime) -> [Writes; 2] {
    let cri = c.cri().unwrap();
    let pod_cfg = cri.pod_config(&format!("rro-{}", rt.label));
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
    let writes = [false, true].map(|rro| scenario(c, &cri, rt, &pod, &pod_cfg, rro));
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    writes
}

#[test]
fn read_only_host_paths_with_a_submount_match_runc_and_release_it() {
    let c = common::start();
    let runc = both_modes(&c, &TestRuntime::runc());
    let stockade = both_modes(&c, &TestRuntime::stockade().unwrap());
    // containerd 1.6's CRI drops recursive_read_only: rro is plain ro there.
    let rro_honoured = c.binaries().major() >= 2;
    let expected = [
        Writes {
            top: false,
            submount: true,
        },
        Writes {
            top: false,
            submount: !rro_honoured,
        },
    ];
    assert_eq!(runc, expected, "runc (ro, rro)");
    assert_eq!(stockade, runc, "stockade against runc (ro, rro)");
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// containerd writes rootfsPropagation `rslave` for a HostToContainer volume, which
/// libcontainer 0.7 refused until the hardener gave it as `slave`.
#[test]
fn host_to_container_propagation_outlives_the_staged_bind() {
    let c = common::start();
    let cri = c.cri().unwrap();
    for rt in [TestRuntime::runc(), TestRuntime::stockade().unwrap()] {
        // A shared mount of its own, as CRI wants for HostToContainer (/ is private here).
        let (_dir, shared) = dir_in(&c, "shared-", "m");
        mount(
            Some(&shared),
            &shared,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            &shared,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        let pod_cfg = cri.pod_config(&format!("prop-{}", rt.label));
        let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
        let mut cfg = cri.container_config("prop", &["sleep", "600"]);
        cfg.mounts = vec![Mount {
            container_path: "/mnt".into(),
            host_path: shared.display().to_string(),
            readonly: true,
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }];
        let id = cri
            .run_container(&pod, &cfg, &pod_cfg)
            .unwrap_or_else(|e| panic!("{}: {e:#}", rt.label));
        let late = shared.join("late");
        std::fs::create_dir(&late).unwrap();
        mount_tmpfs(&late);
        std::fs::write(late.join("f"), "propagated\n").unwrap();
        let (code, msg) = run(&cri, &id, "cat /mnt/late/f");
        assert_eq!(
            (code, msg.as_str()),
            (0, "propagated"),
            "{}: a mount made on the host after the start",
            rt.label
        );
        remove_container(&cri, &id);
        cri.stop_pod_sandbox(&pod).unwrap();
        cri.remove_pod_sandbox(&pod).unwrap();
        umount2(&late, MntFlags::empty()).unwrap();
        umount2(&shared, MntFlags::empty()).unwrap();
    }
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
