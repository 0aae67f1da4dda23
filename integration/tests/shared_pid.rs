//! Containers that share the pod's PID namespace (CRI's NamespaceMode POD, kubelet's
//! `shareProcessNamespace: true`, and critest's default), under runc and under Stockade.
//!
//! Such a container's PID inside the pod names another process, or none, in the host's
//! /proc. libcontainer 0.7's cgroup v1 mount looked its own PID up there, so on a v1 node
//! a Create failed whenever that PID was free on the host. The test drives the pod's PID
//! counter to a number the host does not use, then creates a container there, and compares
//! the container's /sys/fs/cgroup with runc's.

mod common;

use k8s_cri::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};
use std::path::Path;
use stockade_integration::cgroups::process_cgroups;
use stockade_integration::cri::Cri;
use stockade_integration::runtimes::TestRuntime;

fn share_pod_pids(ns: &mut Option<k8s_cri::v1::NamespaceOption>) {
    if let Some(ns) = ns.as_mut() {
        ns.pid = NamespaceMode::Pod as i32;
    }
}

fn pod_config(cri: &Cri) -> PodSandboxConfig {
    let mut cfg = cri.pod_config("shared-pid");
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        share_pod_pids(&mut sc.namespace_options);
    }
    cfg
}

fn app(cri: &Cri, rt: &TestRuntime, name: &str, cmd: &[&str]) -> ContainerConfig {
    let mut cfg = common::app_config(cri, rt, name, cmd);
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        share_pod_pids(&mut sc.namespace_options);
    }
    cfg
}

/// What a container sees of its cgroups: the entries of /sys/fs/cgroup, whether its
/// pids limit there is its own cgroup's, and whether it can write there.
#[derive(Debug)]
struct CgroupView {
    entries: String,
    pids_max_matches_host: bool,
    writable: bool,
}

const FREE_WINDOW: u32 = 4;
const MAX_ATTEMPTS: u32 = 5;

fn host_has_pid(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Execs in `first` until the pod's next few PIDs are free on the host (the next container's
/// init takes one of them); returns the next one.
fn drive_pod_pids_to_free_host_pids(cri: &Cri, rt: &TestRuntime, first: &str) -> u32 {
    let free_on_host = |pid: u32| (pid..pid + FREE_WINDOW).all(|p| !host_has_pid(p));
    let mut next = 0;
    for _ in 0..500 {
        let out = cri.exec_sync(first, &["sh", "-c", "echo $$"]).unwrap();
        let pid: u32 = out.stdout.trim().parse().expect("a pid");
        next = pid + 1;
        if free_on_host(next) {
            break;
        }
    }
    assert!(
        free_on_host(next),
        "no free host PIDs found after the pod's PIDs ({})",
        rt.label
    );
    next
}

fn shared_pid_container(rt: &TestRuntime) -> CgroupView {
    let c = common::start();
    let cri = c.cri().unwrap();
    let pod_cfg = pod_config(&cri);
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
    let first = cri
        .run_container(&pod, &app(&cri, rt, "first", &["sleep", "600"]), &pod_cfg)
        .unwrap();
    let pid1 = cri.exec_sync(&first, &["cat", "/proc/1/cmdline"]).unwrap();
    assert!(
        !pid1.stdout.starts_with("sleep"),
        "{}: the container shares the pod's PID namespace (PID 1 is the sandbox's): {pid1:?}",
        rt.label
    );

    let script = "echo \"pid $$\"; ls /sys/fs/cgroup | sort | tr '\\n' ' '; echo; \
                  cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
                  if touch /sys/fs/cgroup/probe 2>/dev/null; then echo writable; else echo read-only; fi; \
                  exec sleep 600";
    // The host allocates PIDs too (its counter wraps on a busy CI machine): where it took
    // the container's PID before the check below, the attempt proves nothing and is made
    // again at the pod's next free PIDs.
    let mut attempts = 0;
    let (second, host_pid, lines) = loop {
        attempts += 1;
        let next = drive_pod_pids_to_free_host_pids(&cri, rt, &first);
        // A name (and so a log file) of its own: a retry must not read the last one's log.
        let name = format!("second-{attempts}");
        let second = cri
            .run_container(&pod, &app(&cri, rt, &name, &["sh", "-c", script]), &pod_cfg)
            .unwrap_or_else(|e| panic!("{}: a container at pod PID {next}: {e:#}", rt.label));
        let host_pid = cri.container_pid(&second).unwrap();
        let logs =
            stockade_integration::exec::wait_for("the view in the log", common::WAIT, || {
                cri.container_logs(&second)
                    .ok()
                    .filter(|l| l.lines().count() >= 4)
            })
            .unwrap();
        let lines: Vec<String> = logs.lines().map(str::to_string).collect();
        let own_pid: u32 = lines[0]
            .trim_start_matches("pid ")
            .parse()
            .expect("the container's pid");
        if !host_has_pid(own_pid) {
            break (second, host_pid, lines);
        }
        assert!(
            attempts < MAX_ATTEMPTS,
            "{}: the host took the container's pod PID in each of {attempts} attempts: the test proves nothing",
            rt.label
        );
        eprintln!(
            "{}: the host took pod PID {own_pid} meanwhile; again at the next free PIDs",
            rt.label
        );
        cri.stop_container(&second, 5).unwrap();
        cri.remove_container(&second).unwrap();
    };
    let host_pids_max =
        std::fs::read_to_string(process_cgroups(host_pid).unwrap().pids.join("pids.max")).unwrap();
    let view = CgroupView {
        entries: lines[1].trim().to_string(),
        pids_max_matches_host: lines[2].trim() == host_pids_max.trim(),
        writable: lines[3].trim() == "writable",
    };
    eprintln!(
        "{}: {lines:?}, host pids.max {}",
        rt.label,
        host_pids_max.trim()
    );

    for id in [&second, &first] {
        cri.stop_container(id, 5).unwrap();
        cri.remove_container(id).unwrap();
    }
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    view
}

#[test]
fn a_container_at_a_pod_pid_free_on_the_host_sees_its_cgroups_as_under_runc() {
    let runc = shared_pid_container(&TestRuntime::runc());
    let stockade = shared_pid_container(&TestRuntime::stockade().expect("profiles/default.toml"));
    assert!(runc.pids_max_matches_host, "runc: {runc:?}");
    assert_eq!(
        stockade.entries, runc.entries,
        "Stockade's /sys/fs/cgroup against runc's"
    );
    assert!(stockade.pids_max_matches_host, "stockade: {stockade:?}");
    // Stricter than runc 1.1, whose v1 tmpfs stays writable to container root.
    assert!(!stockade.writable, "stockade: {stockade:?}");
}
