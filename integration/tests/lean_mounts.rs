//! Stockade's zygote creates, execs into, stops and deletes containers in a mount
//! namespace of its own that holds only what those steps touch, not the node's whole
//! mount table: libcgroups and libcontainer read that table end to end about ten times per
//! container, and with many pods on the node it holds a thousand mounts.
//!
//! With 150 extra mounts on the node, a pod with a read-only hostPath runs under runc and
//! under Stockade in the same run: both containers read the volume and an exec sees it
//! too; Stockade's shim log shows each step in a namespace of under 150 mounts, made once
//! per zygote and reused, each step giving back what it was lent; nothing is left behind.

mod common;

use k8s_cri::v1::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::PathBuf;
use stockade_integration::containerd::HANDLER_STOCKADE;
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;

const CROWD: usize = 150;

/// `CROWD` tmpfs mounts in a temp dir of the instance, unmounted on drop.
struct Crowd {
    dir: tempfile::TempDir,
    mounted: Vec<PathBuf>,
}

impl Crowd {
    fn new(c: &Containerd) -> Crowd {
        let dir = tempfile::Builder::new()
            .prefix("crowd-")
            .tempdir_in(&c.dir)
            .unwrap();
        let mut crowd = Crowd {
            dir,
            mounted: Vec::new(),
        };
        for i in 0..CROWD {
            let at = crowd.dir.path().join(i.to_string());
            std::fs::create_dir(&at).unwrap();
            mount(
                Some("crowd"),
                &at,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("size=16k"),
            )
            .unwrap_or_else(|e| panic!("mounting a tmpfs on {}: {e}", at.display()));
            crowd.mounted.push(at);
        }
        crowd
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for at in self.mounted.drain(..) {
            let _ = umount2(&at, MntFlags::MNT_DETACH);
        }
    }
}

/// (what the container read from the volume, what an exec read from it).
fn run_pod(c: &Containerd, rt: &TestRuntime, volume: &std::path::Path) -> (String, String) {
    let cri = c.cri().unwrap();
    let pod_cfg = cri.pod_config(&format!("lean-{}", rt.label));
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
    let mut cfg = cri.container_config("reader", &["sh", "-c", "cat /data/hello; sleep 600"]);
    cfg.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: volume.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let id = cri
        .run_container(&pod, &cfg, &pod_cfg)
        .unwrap_or_else(|e| panic!("{}: {e:#}", rt.label));
    let exec = cri.exec_sync(&id, &["cat", "/data/hello"]).unwrap();
    assert_eq!(exec.exit_code, 0, "{}: {exec:?}", rt.label);
    let logged = stockade_integration::exec::wait_for(
        "the container's output",
        std::time::Duration::from_secs(10),
        || {
            let out = cri.container_logs(&id).ok()?;
            (!out.trim().is_empty()).then_some(out)
        },
    )
    .unwrap();
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    (logged.trim().to_string(), exec.stdout.trim().to_string())
}

/// (op, mounts) of each "in a mount namespace of its own" line in containerd's log, and
/// how many times a zygote made its kept namespace.
fn lean_steps(c: &Containerd) -> (Vec<(String, usize)>, usize) {
    let log = std::fs::read_to_string(&c.log_path).unwrap_or_default();
    let made = log
        .lines()
        .filter(|l| l.contains("made the kept mount namespace"))
        .count();
    let steps = log
        .lines()
        .filter(|l| l.contains("in a mount namespace of its own"))
        .filter_map(|l| {
            let field = |key: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .map(|v| v.trim_matches(|ch| ch == '"' || ch == '\\').to_string())
            };
            Some((field("op=")?, field("mounts=")?.parse().ok()?))
        })
        .collect();
    (steps, made)
}

#[test]
fn containers_are_made_and_changed_away_from_the_nodes_mount_table() {
    let c = common::start();
    let _crowd = Crowd::new(&c);
    let node_mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert!(node_mounts > CROWD, "{node_mounts} mounts on the node");
    let volume = tempfile::Builder::new()
        .prefix("volume-")
        .tempdir_in(&c.dir)
        .unwrap();
    std::fs::write(volume.path().join("hello"), "from the node\n").unwrap();

    let runc = run_pod(&c, &TestRuntime::runc(), volume.path());
    assert_eq!(runc, ("from the node".into(), "from the node".into()));
    let stockade = run_pod(&c, &TestRuntime::stockade().unwrap(), volume.path());
    assert_eq!(stockade, runc, "stockade against runc (container, exec)");

    let (steps, made) = lean_steps(&c);
    eprintln!(
        "node: {node_mounts} mounts; Stockade's steps (op, mounts): {steps:?}; namespaces made: {made}"
    );
    for op in ["create", "exec", "kill", "delete"] {
        assert!(
            steps.iter().any(|(o, _)| o == op),
            "no {op} in a mount namespace of its own ({HANDLER_STOCKADE}'s log lines: {steps:?})"
        );
    }
    let creates = steps.iter().filter(|(o, _)| o == "create").count();
    assert!(creates >= 2, "sandbox and app: {steps:?}");
    // One pod, one shim: each of its zygotes (a new one after an idle second) makes the
    // namespace once, as it starts, and every step it serves reuses it.
    assert!(
        made >= 1 && made < steps.len(),
        "namespaces made {made} times for {} steps",
        steps.len()
    );
    // Signals and deletes are lent only libcontainer's state: had a create or an exec left
    // what it was lent (the bundle, the rootfs, the volume), later steps would see more.
    let plain: Vec<usize> = steps
        .iter()
        .filter(|(o, _)| o == "kill" || o == "delete")
        .map(|(_, m)| *m)
        .collect();
    assert!(
        plain.windows(2).all(|w| w[0] == w[1]),
        "signal and delete steps saw different tables: {steps:?}"
    );
    for (op, mounts) in &steps {
        assert!(
            *mounts < CROWD,
            "{op} saw {mounts} mounts, the node has {node_mounts}: {steps:?}"
        );
    }
    drop(_crowd);
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
