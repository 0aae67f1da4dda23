//! The harness cleans up after itself, also when a test panics with containers running.

use stockade_integration::containerd::{
    StartOptions, HANDLER_RUNC, HANDLER_STOCKADE, RUNC_RUNTIME,
};
use stockade_integration::image::BUSYBOX_IMAGE;
use stockade_integration::{teardown, Containerd};

#[test]
fn panicking_test_leaves_nothing_behind() {
    panic_with_containers_running(false);
}

/// With containerd gone, nothing can be removed through it: teardown must find the
/// shims, containers, mounts, cgroups and network namespaces by itself.
#[test]
fn teardown_without_containerd_leaves_nothing_behind() {
    panic_with_containers_running(true);
}

fn panic_with_containers_running(kill_containerd_first: bool) {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = Containerd::start().unwrap();
        c.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            RUNC_RUNTIME,
            BUSYBOX_IMAGE,
            "left",
            "sleep",
            "600",
        ])
        .unwrap();
        c.ctr_ok(&["tasks", "pause", "left"]).unwrap();
        let cri = c.cri().unwrap();
        let (pod, _) = cri
            .run_pod_with_app("left", HANDLER_RUNC, &["sleep", "600"])
            .unwrap();
        let netns = cri.pod_netns(&pod).unwrap().unwrap();
        let shims: Vec<i32> = teardown::instance_processes(&c.dir.display().to_string(), &[])
            .iter()
            .filter(|p| Some(p.pid as u32) != c.pid())
            .map(|p| p.pid)
            .collect();
        assert!(
            !shims.is_empty(),
            "expected shims and containers to be running"
        );
        // Proves the socket naming is right: the running shims' sockets are found.
        let sockets = c.shim_sockets();
        assert!(
            sockets.len() >= 2,
            "shim sockets of running shims not found: {sockets:?}"
        );
        seen = Some((
            c.dir.clone(),
            c.cgroup_dirs(),
            c.bridge.clone(),
            netns,
            shims,
            c.name.clone(),
            sockets,
        ));
        if kill_containerd_first {
            c.stop_daemon().unwrap();
        }
        panic!("deliberate failure with containers running");
    }));
    assert!(result.is_err());
    let (dir, cgroups, bridge, netns, pids, name, sockets) = seen.unwrap();
    for sock in sockets {
        assert!(!sock.exists(), "shim socket {} left", sock.display());
    }
    assert!(!dir.exists(), "{} left", dir.display());
    for cg in cgroups {
        assert!(!cg.exists(), "cgroup {} left", cg.display());
    }
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists(),
        "bridge {bridge} left"
    );
    assert!(!netns.exists(), "netns {} left", netns.display());
    let cni_cache: Vec<_> = std::fs::read_dir("/var/lib/cni/results")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !cni_cache
            .iter()
            .any(|f: &String| f.starts_with(&format!("{name}-"))),
        "CNI cache entries left: {cni_cache:?}"
    );
    for pid in pids {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z"),
            "process {pid} still alive: {state}"
        );
    }
}

#[test]
fn config_registers_runc_and_both_stockade_handlers() {
    let c = Containerd::start().unwrap();
    let cfg = c.config_toml();
    for needle in [
        "restrict_oom_score_adj = true",
        "containerd.runtimes.stockade]",
        "containerd.runtimes.stockade-strict]",
        "runtime_type = \"io.containerd.stockade.v1\"",
        "default_runtime_name = \"runc\"",
    ] {
        assert!(cfg.contains(needle), "config lacks {needle}:\n{cfg}");
    }
    assert!(cfg.contains("profiles/default.toml") && cfg.contains("profiles/strict.toml"));
    let cri = c.cri().unwrap();
    assert_eq!(cri.version().unwrap().runtime_name, "containerd");
}

/// The benchmark's layout: containerd's state, runc's root and the Stockade shims' state
/// on a tmpfs of the instance's own, which both runtimes run pods from and which goes
/// with the instance.
#[test]
fn runtime_state_on_a_tmpfs_serves_both_runtimes_and_goes_with_the_instance() {
    let c = Containerd::start_with(StartOptions {
        run_on_tmpfs: true,
        ..StartOptions::default()
    })
    .unwrap();
    let fs = nix::sys::statfs::statfs(&c.run_dir).unwrap();
    assert_eq!(fs.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    assert_ne!(c.run_dir, c.dir, "the tmpfs has a directory of its own");
    for p in [&c.state, &c.stockade_state.root().to_path_buf()] {
        assert!(
            p.starts_with(&c.run_dir),
            "{} not on the tmpfs",
            p.display()
        );
    }
    let cri = c.cri().unwrap();
    for (name, handler) in [
        ("tmpfs-runc", HANDLER_RUNC),
        ("tmpfs-stockade", HANDLER_STOCKADE),
    ] {
        let (pod, app) = cri
            .run_pod_with_app(name, handler, &["sleep", "600"])
            .unwrap();
        let out = cri.exec_sync(&app, &["echo", "up"]).unwrap();
        assert_eq!((out.exit_code, out.stdout.trim()), (0, "up"), "{handler}");
        cri.stop_pod_sandbox(&pod).unwrap();
        cri.remove_pod_sandbox(&pod).unwrap();
    }
    assert!(
        c.stockade_state.id_ranges().is_file(),
        "the Stockade pod's ID range was not recorded on the tmpfs"
    );
    let runc_root = c.run_dir.join("runc");
    assert!(
        runc_root.is_dir(),
        "runc kept no state in {}",
        runc_root.display()
    );
    let dir = c.dir.clone();
    drop(c);
    assert!(
        teardown::mounts_under(&dir).is_empty(),
        "mounts left under {}",
        dir.display()
    );
    assert!(!dir.exists(), "{} left", dir.display());
}
