//! `hostUsers: false` pods: kubelet (played by the test) picks the pod's user-namespace
//! mapping from its range (paths::TEST_KUBELET_IDS, beside Stockade's pool) and sends it in
//! the CRI's userns options.
//!
//! - containerd 2.x writes the mapping into the specs and the overlay snapshotter adds
//!   `uidmap=`/`gidmap=` to the rootfs mount: Stockade runs the pod in kubelet's mapping
//!   (seen in /proc/PID/uid_map), its rootfs and volumes usable. Under Debian's runc 1.1.5
//!   the same pod's containers fail for a machine reason: that runc has no `features`
//!   command, so containerd finds no idmap support for the bind mounts it idmaps.
//!   containerd 2.2.7's CRI also sets the I/O owner of a user-namespaced container through
//!   runc's options type, which fails for a runtime whose options are CRI's
//!   `runtimeoptions` (Stockade's `ConfigPath`): the handler used here has no options, so
//!   the shim takes its profile from `STOCKADE_PROFILE` (the harness's default.toml).
//! - containerd 1.6 knows no userns options: the pod runs in a range of Stockade's own.
//!
//! A mapping inside Stockade's own pool is refused with rule `userns-mapping` (2.x).

mod common;

use k8s_cri::v1::{IdMapping, NamespaceMode, NamespaceOption, PodSandboxConfig, UserNamespace};
use std::os::unix::fs::MetadataExt;
use stockade_integration::kubelet_layout::{KubeletPod, SECRET};
use stockade_integration::paths::{self, TEST_KUBELET_IDS};
use stockade_integration::{Containerd, Cri};

/// A Stockade handler without runtime options (see the module comment).
const HANDLER: &str = "stockade-env";
const STOCKADE_POOL_FIRST: u32 = 1 << 30;

/// Register [`HANDLER`] in the instance's config and restart containerd.
fn add_handler_without_options(c: &mut Containerd) {
    let config = std::fs::read_to_string(&c.config_path).unwrap();
    let runc_table = config
        .lines()
        .find(|l| l.trim_start().starts_with('[') && l.trim_end().ends_with(".runtimes.runc]"))
        .expect("the config names the runc runtime");
    let prefix = runc_table
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(".runc]");
    let extra = format!("\n[{prefix}.{HANDLER}]\n  runtime_type = \"io.containerd.stockade.v1\"\n");
    std::fs::write(&c.config_path, config + &extra).unwrap();
    c.restart().unwrap();
}

fn userns(first: u32) -> UserNamespace {
    let m = IdMapping {
        host_id: first,
        container_id: 0,
        length: 65_536,
    };
    UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: vec![m],
        gids: vec![m],
    }
}

/// A pod's or container's namespace options asking for kubelet's mapping at `first`.
fn set_userns(sc: Option<&mut k8s_cri::v1::NamespaceOption>, first: u32) {
    sc.expect("namespace options").userns_options = Some(userns(first));
}

fn pod_namespaces(cfg: &mut PodSandboxConfig) -> Option<&mut NamespaceOption> {
    cfg.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
}

fn uid_map(pid: i32) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/uid_map"))
        .unwrap()
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

/// kubelet's pick: a 65536-ID block of its range, other than its first.
fn kubelet_pick() -> u32 {
    let blocks = TEST_KUBELET_IDS.1 / 65_536;
    let n = 1 + std::process::id() % (blocks - 1);
    TEST_KUBELET_IDS.0 + n * 65_536
}

struct Pod {
    pod: String,
    app: Result<String, String>,
}

/// A hostUsers: false pod mapped at `first` with an emptyDir (root:2000 2777) and a secret
/// (0440 root:2000), its app container running `sleep`.
fn run_pod(cri: &Cri, handler: &str, first: u32, kubelet: &mut KubeletPod, uid: &str) -> Pod {
    let mut pod_cfg = cri.pod_config("hostusers");
    pod_cfg.metadata.as_mut().unwrap().uid = uid.to_string();
    set_userns(pod_namespaces(&mut pod_cfg), first);
    let scratch = kubelet.empty_dir("scratch", 2000).unwrap();
    let creds = kubelet
        .atomic_volume(
            SECRET,
            "creds",
            2000,
            &[("password", "hunter2\n", 0o440, 0, 2000)],
        )
        .unwrap();
    let pod = cri.run_pod_sandbox(&pod_cfg, handler).unwrap();
    let mut cfg = cri.container_config("app", &["sleep", "600"]);
    set_userns(
        cfg.linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut()),
        first,
    );
    cfg.mounts = vec![
        k8s_cri::v1::Mount {
            container_path: "/scratch".into(),
            host_path: scratch.display().to_string(),
            ..Default::default()
        },
        k8s_cri::v1::Mount {
            container_path: "/etc/creds".into(),
            host_path: creds.display().to_string(),
            readonly: true,
            ..Default::default()
        },
    ];
    let app = cri
        .run_container(&pod, &cfg, &pod_cfg)
        .map_err(|e| format!("{e:#}"));
    Pod { pod, app }
}

fn remove(cri: &Cri, pod: &str) {
    cri.stop_pod_sandbox(pod).unwrap();
    cri.remove_pod_sandbox(pod).unwrap();
}

#[test]
fn a_host_users_false_pod_runs_in_kubelets_mapping() {
    let mut c = common::start();
    add_handler_without_options(&mut c);
    let cri = c.cri().unwrap();
    let version = cri.version().unwrap().runtime_version;
    let containerd_2 = !version.starts_with("1.");
    let first = kubelet_pick();

    let uid = format!("hostusers-{}", std::process::id());
    let mut kubelet = KubeletPod::new(&paths::test_kubelet_root(), &uid).unwrap();
    let p = run_pod(&cri, HANDLER, first, &mut kubelet, &uid);
    let app = p
        .app
        .clone()
        .expect("the app container runs under Stockade");
    let sandbox_map = uid_map(cri.pod_pid(&p.pod).unwrap());
    let app_pid = cri.container_pid(&app).unwrap();
    let app_map = uid_map(app_pid);
    println!("containerd {version}: sandbox uid_map {sandbox_map:?}, app {app_map:?}");
    if containerd_2 {
        assert_eq!(
            sandbox_map,
            [0, u64::from(first), 65_536],
            "kubelet's mapping"
        );
    } else {
        // containerd 1.6 drops the userns options: a range of Stockade's own.
        assert!(
            sandbox_map[1] >= u64::from(STOCKADE_POOL_FIRST),
            "{sandbox_map:?}"
        );
    }
    assert_eq!(
        app_map, sandbox_map,
        "the app container shares the pod's namespace"
    );
    let root = sandbox_map[1] as u32;

    // The rootfs: container root writes it; on disk (seen through the container's root
    // from the host) the file is the mapped root's.
    let out = cri
        .exec_sync(
            &app,
            &[
                "sh",
                "-c",
                "echo x > /rootfs-file && stat -c %u:%g /rootfs-file",
            ],
        )
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(out.trim(), "0:0");
    let md = std::fs::metadata(format!("/proc/{app_pid}/root/rootfs-file")).unwrap();
    assert_eq!((md.uid(), md.gid()), (root, root));
    // Volumes, idmapped with the pod's mapping: host IDs as they are on disk.
    let out = cri
        .exec_sync(
            &app,
            &[
                "sh",
                "-c",
                "cat /etc/creds/password && echo y > /scratch/f && stat -c %u:%g /scratch/f",
            ],
        )
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(out, "hunter2\n0:2000\n");
    let md = std::fs::metadata(
        kubelet
            .dir
            .join("volumes/kubernetes.io~empty-dir/scratch/f"),
    )
    .unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 2000));
    remove(&cri, &p.pod);

    if containerd_2 {
        // Debian's runc 1.1.5 has no `features` command: containerd finds no idmap support
        // for the bind mounts it idmaps in such a pod.
        let uid = format!("hostusers-runc-{}", std::process::id());
        let mut kubelet = KubeletPod::new(&paths::test_kubelet_root(), &uid).unwrap();
        let p = run_pod(&cri, "runc", first, &mut kubelet, &uid);
        let e = p
            .app
            .expect_err("runc 1.1.5 runs no user-namespaced container with binds");
        assert!(e.contains("idmap mounts not supported"), "{e}");
        remove(&cri, &p.pod);

        // A mapping inside Stockade's own pool is refused by name, leaving nothing.
        let mut pod_cfg = cri.pod_config("inpool");
        set_userns(pod_namespaces(&mut pod_cfg), STOCKADE_POOL_FIRST);
        let e = format!("{:#}", cri.run_pod_sandbox(&pod_cfg, HANDLER).unwrap_err());
        assert!(
            e.contains("`userns-mapping`") && e.contains("Stockade's own ID pool"),
            "{e}"
        );
    }
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    drop(kubelet);
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
