//! What a running Stockade pod keeps on the node while it runs: one mount per container
//! rootfs in the node's mount table (as runc's), and no zygote once idle; the containers
//! keep their volumes, and the zygote comes back for exec, a new container and stop.

mod common;

use std::time::Duration;
use stockade_integration::containerd::HANDLER_STOCKADE;
use stockade_integration::exec::wait_for;
use stockade_integration::teardown::{arg_value, mounts_under, processes};
use stockade_integration::Containerd;

/// Zygotes of the pod's shim: its children named `stockade-zygote`.
fn zygotes_of_shims(c: &Containerd) -> Vec<i32> {
    let socket = c.socket.display().to_string();
    let procs = processes();
    let shims: Vec<i32> = procs
        .iter()
        .filter(|p| {
            arg_value(&p.args, "-address") == Some(socket.as_str())
                && std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                    .is_ok_and(|comm| comm.trim() == "containerd-shim")
        })
        .map(|p| p.pid)
        .collect();
    procs
        .iter()
        .filter(|p| shims.contains(&p.ppid) && p.state != 'Z')
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                .is_ok_and(|comm| comm.trim() == "stockade-zygote")
        })
        .map(|p| p.pid)
        .collect()
}

/// Zygotes the pods' shims have exec'd so far (their debug line in containerd's log).
fn zygotes_started(c: &Containerd) -> usize {
    std::fs::read_to_string(&c.log_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("zygote started"))
        .count()
}

/// Mount points inside the container, from its own mountinfo.
fn container_mounts(cri: &stockade_integration::Cri, id: &str) -> Vec<String> {
    let out = cri
        .exec_sync(id, &["cat", "/proc/self/mountinfo"])
        .unwrap()
        .ok()
        .unwrap();
    out.lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

#[test]
fn an_idle_pod_keeps_one_mount_per_rootfs_and_no_zygote() {
    let c = common::start();
    let cri = c.cri().unwrap();
    let pod_cfg = cri.pod_config("idle");
    let pod = cri.run_pod_sandbox(&pod_cfg, HANDLER_STOCKADE).unwrap();
    let a = cri
        .run_container(
            &pod,
            &cri.container_config("a", &["sleep", "600"]),
            &pod_cfg,
        )
        .unwrap();

    // The node's mount table: the sandbox's and the app's rootfs under their bundles,
    // nothing else (no layer clones, no staged volumes).
    let bundles = c.state.join("io.containerd.runtime.v2.task");
    let mut node = mounts_under(&bundles);
    node.sort();
    assert_eq!(node.len(), 2, "mounts under the bundles: {node:#?}");
    assert!(
        node.iter().all(|m| m.ends_with("rootfs")),
        "mounts under the bundles: {node:#?}"
    );
    // The container keeps the volumes that were staged for it.
    let inside = container_mounts(&cri, &a);
    for volume in [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/dev/shm",
    ] {
        assert!(
            inside.iter().any(|m| m == volume),
            "{volume} not mounted in the container: {inside:#?}"
        );
    }
    let hostname = cri.exec_sync(&a, &["cat", "/etc/hostname"]).unwrap();
    assert_eq!(hostname.ok().unwrap().trim(), "idle");

    // Idle: the zygote goes.
    wait_for(
        "the idle pod's zygote to go",
        Duration::from_secs(15),
        || zygotes_of_shims(&c).is_empty().then_some(()),
    )
    .unwrap();
    let started = zygotes_started(&c);
    // And comes back for exec (a new one: the first went), a second container of the pod,
    // and stop.
    let out = cri.exec_sync(&a, &["echo", "exec after idle"]).unwrap();
    assert_eq!(out.ok().unwrap().trim(), "exec after idle");
    assert_eq!(
        zygotes_started(&c),
        started + 1,
        "a zygote started for the exec"
    );
    let b = cri
        .run_container(
            &pod,
            &cri.container_config("b", &["sleep", "600"]),
            &pod_cfg,
        )
        .unwrap();
    let ns = |id: &str| {
        cri.exec_sync(id, &["readlink", "/proc/self/ns/user"])
            .unwrap()
            .ok()
            .unwrap()
    };
    assert_eq!(
        ns(&a),
        ns(&b),
        "a container made by a later zygote joins the pod's user namespace"
    );
    wait_for("the zygote to go again", Duration::from_secs(15), || {
        zygotes_of_shims(&c).is_empty().then_some(())
    })
    .unwrap();
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
