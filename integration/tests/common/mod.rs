//! Scenarios shared by the runc tests (which validate the harness) and the Stockade
//! tests. Each scenario starts its own private containerd and checks that nothing is
//! left behind. For runc the hardening checks must FAIL (runc's containers are not
//! hardened), which shows the checks can fail; for Stockade they must pass.
#![allow(dead_code)]

use k8s_cri::v1::{ContainerConfig, ContainerState, LinuxContainerResources};
use std::io::{BufRead, BufReader};
use std::process::Output;
use std::sync::mpsc;
use std::time::Duration;
use stockade_integration::cri::Cri;
use stockade_integration::exec::wait_for;
use stockade_integration::hardening::{
    assert_no_violations, check_cgroup_limits, check_container, check_process,
    profile_cap_allowlist,
};
use stockade_integration::image::BUSYBOX_IMAGE;
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;

pub const WAIT: Duration = Duration::from_secs(60);

pub fn start() -> Containerd {
    Containerd::start().expect("starting a private containerd")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ctr run [flags] <runtime flags> busybox <id> <cmd...>`.
pub fn ctr_run(c: &Containerd, rt: &TestRuntime, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
    let rt_args = rt.ctr_run_args();
    let mut args: Vec<&str> = vec!["run"];
    args.extend_from_slice(flags);
    args.extend(rt_args.iter().map(String::as_str));
    args.push(BUSYBOX_IMAGE);
    args.push(id);
    args.extend_from_slice(cmd);
    c.ctr(&args)
}

fn ctr_run_ok(c: &Containerd, rt: &TestRuntime, flags: &[&str], id: &str, cmd: &[&str]) -> String {
    let out = ctr_run(c, rt, flags, id, cmd);
    assert!(
        out.status.success(),
        "ctr run {id} ({}): {}",
        rt.label,
        describe(&out)
    );
    text(&out)
}

fn ctr_exec_ok(c: &Containerd, id: &str, exec_id: &str, cmd: &[&str]) -> String {
    let mut args = vec!["tasks", "exec", "--exec-id", exec_id, id];
    args.extend_from_slice(cmd);
    let out = c.ctr(&args);
    assert!(
        out.status.success(),
        "ctr exec {cmd:?} in {id}: {}",
        describe(&out)
    );
    text(&out)
}

/// The profile's capability allowlist (runc: the checks use the default profile's).
pub fn allowed_caps(rt: &TestRuntime) -> u64 {
    let profile = match &rt.profile {
        Some(p) => p.clone(),
        None => stockade_integration::paths::profile("default.toml").expect("default profile"),
    };
    profile_cap_allowlist(&profile).expect("profile's capability allowlist")
}

/// An app container config as `rt` accepts it: as an application user (UID 1000) where
/// the profile refuses root (`run-as-root`), else the image's user.
pub fn app_config(cri: &Cri, rt: &TestRuntime, name: &str, cmd: &[&str]) -> ContainerConfig {
    if rt.refuses_root() {
        cri.container_config_as(name, cmd, APP_UID)
    } else {
        cri.container_config(name, cmd)
    }
}

/// The application user of tests under profiles that refuse root.
pub const APP_UID: i64 = 1000;

/// Hardened for Stockade, visibly not hardened for runc.
fn expect_hardening(rt: &TestRuntime, what: &str, violations: Vec<String>) {
    if rt.hardened() {
        assert_no_violations(what, &violations);
    } else {
        assert!(
            !violations.is_empty(),
            "{what} under runc passed the hardening checks: the checks cannot fail"
        );
    }
}

/// Check a running ctr container from inside (via exec) and its cgroup from the host.
fn check_ctr_container(c: &Containerd, rt: &TestRuntime, id: &str) {
    let status = ctr_exec_ok(c, id, "hardening-status", &["cat", "/proc/self/status"]);
    let uid_map = ctr_exec_ok(c, id, "hardening-uidmap", &["cat", "/proc/self/uid_map"]);
    let (pid, _) = c.task(id).unwrap();
    let v = check_container(&status, &uid_map, allowed_caps(rt), pid).unwrap();
    expect_hardening(rt, &format!("exec in ctr container {id}"), v);
}

fn assert_nothing_left(c: &Containerd) {
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

fn remove_ctr_container(c: &Containerd, id: &str) {
    let _ = c.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
    c.wait_task_status(id, "STOPPED").unwrap();
    c.ctr_ok(&["tasks", "rm", id]).unwrap();
    c.ctr_ok(&["containers", "rm", id]).unwrap();
}

// ---------------------------------------------------------------- ctr scenarios

/// `ctr run` prints the container's output; its init process is hardened.
pub fn ctr_run_with_output(rt: &TestRuntime) {
    let c = start();
    let out = ctr_run_ok(&c, rt, &["--rm"], "echo", &["echo", "hello", "stockade"]);
    assert_eq!(out.trim(), "hello stockade");
    let status = ctr_run_ok(&c, rt, &["--rm"], "status", &["cat", "/proc/self/status"]);
    let uid_map = ctr_run_ok(&c, rt, &["--rm"], "uidmap", &["cat", "/proc/self/uid_map"]);
    expect_hardening(
        rt,
        "init process",
        check_process(&status, &uid_map, allowed_caps(rt)),
    );
    // A failing command's exit code comes back through ctr.
    let out = ctr_run(&c, rt, &["--rm"], "exit7", &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert_nothing_left(&c);
}

/// Exec with and without a TTY into a running container.
pub fn ctr_exec_tty_and_no_tty(rt: &TestRuntime) {
    let c = start();
    ctr_run_ok(&c, rt, &["-d"], "exec", &["sleep", "600"]);
    c.wait_task_status("exec", "RUNNING").unwrap();
    check_ctr_container(&c, rt, "exec");

    let out = c.ctr(&["tasks", "exec", "--exec-id", "notty", "exec", "tty"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "tty without a TTY: {}",
        describe(&out)
    );
    assert!(text(&out).contains("not a tty"), "{}", describe(&out));

    let out = c
        .ctr_tty(&["tasks", "exec", "-t", "--exec-id", "withtty", "exec", "tty"])
        .unwrap();
    assert!(out.status.success(), "exec -t: {out:?}");
    assert!(
        out.output.contains("/dev/pts/"),
        "exec -t tty printed {:?}",
        out.output
    );

    // The exec'd shell reads its stdin from the TTY: what we type comes back.
    let out = c
        .ctr_tty(&[
            "tasks",
            "exec",
            "-t",
            "--exec-id",
            "tty2",
            "exec",
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo both-ttys",
        ])
        .unwrap();
    assert!(out.output.contains("both-ttys"), "{out:?}");

    remove_ctr_container(&c, "exec");
    assert_nothing_left(&c);
}

/// SIGTERM reaches a process that traps it; its exit code comes back to `ctr run`.
pub fn ctr_kill(rt: &TestRuntime) {
    let c = start();
    let rt_args = rt.ctr_run_args();
    let mut args: Vec<&str> = vec!["run"];
    args.extend(rt_args.iter().map(String::as_str));
    args.extend_from_slice(&[
        BUSYBOX_IMAGE,
        "kill",
        "sh",
        "-c",
        "trap 'exit 3' TERM; echo ready; while :; do sleep 1; done",
    ]);
    let mut run = c.spawn_ctr(&args).unwrap();
    c.wait_task_status("kill", "RUNNING").unwrap();
    // The trap is set before "ready" is printed.
    let stdout = run.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    c.ctr_ok(&["tasks", "kill", "-s", "SIGTERM", "kill"])
        .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(3), "ctr run after SIGTERM");
    // An attached `ctr run` deletes the task itself once it exits.
    assert!(c.task("kill").is_err(), "task kill still listed");

    // SIGKILL always works, even on PID 1 without a handler.
    ctr_run_ok(&c, rt, &["-d"], "kill9", &["sleep", "600"]);
    c.wait_task_status("kill9", "RUNNING").unwrap();
    check_ctr_container(&c, rt, "kill9");
    c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "kill9"])
        .unwrap();
    c.wait_task_status("kill9", "STOPPED").unwrap();
    c.ctr_ok(&["tasks", "rm", "kill9"]).unwrap();
    c.ctr_ok(&["containers", "rm", "kill", "kill9"]).unwrap();
    assert_nothing_left(&c);
}

/// Value of a metric row in `ctr tasks metrics` output.
fn metric(out: &str, name: &str) -> Option<String> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name))
        .and_then(|cols| cols.get(1).map(|s| s.to_string()))
}

/// `ctr tasks metrics` reports the container's memory limit and pids.
pub fn ctr_metrics(rt: &TestRuntime) {
    let c = start();
    let limit = 200 * 1024 * 1024;
    ctr_run_ok(
        &c,
        rt,
        &["-d", "--memory-limit", &limit.to_string()],
        "stats",
        &["sleep", "600"],
    );
    c.wait_task_status("stats", "RUNNING").unwrap();
    check_ctr_container(&c, rt, "stats");
    let out = c.ctr_ok(&["tasks", "metrics", "stats"]).unwrap();
    let mem_limit = metric(&out, "memory.limit_in_bytes")
        .or_else(|| metric(&out, "memory.limit"))
        .unwrap_or_else(|| panic!("no memory limit in metrics:\n{out}"));
    assert_eq!(mem_limit, limit.to_string(), "metrics:\n{out}");
    let pids: u64 = metric(&out, "pids.current")
        .unwrap_or_else(|| panic!("no pids.current in metrics:\n{out}"))
        .parse()
        .unwrap();
    assert!(pids >= 1, "metrics:\n{out}");
    let usage: u64 = metric(&out, "memory.usage_in_bytes")
        .or_else(|| metric(&out, "memory.usage"))
        .unwrap_or_else(|| panic!("no memory usage in metrics:\n{out}"))
        .parse()
        .unwrap();
    assert!(usage > 0, "metrics:\n{out}");
    if rt.hardened() {
        let pids_limit: u64 = metric(&out, "pids.limit")
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        assert!(
            pids_limit > 0,
            "Stockade always sets a pids limit; metrics:\n{out}"
        );
    }
    remove_ctr_container(&c, "stats");
    assert_nothing_left(&c);
}

/// Pause freezes the container's cgroup; resume thaws it and exec works again.
pub fn ctr_pause_resume(rt: &TestRuntime) {
    let c = start();
    ctr_run_ok(&c, rt, &["-d"], "pause", &["sleep", "600"]);
    c.wait_task_status("pause", "RUNNING").unwrap();
    let (pid, _) = c.task("pause").unwrap();
    let cg = stockade_integration::cgroups::process_cgroups(pid).unwrap();
    assert!(!cg.frozen().unwrap());
    c.ctr_ok(&["tasks", "pause", "pause"]).unwrap();
    c.wait_task_status("pause", "PAUSED").unwrap();
    assert!(
        cg.frozen().unwrap(),
        "cgroup {} not frozen after pause",
        cg.freezer.display()
    );
    c.ctr_ok(&["tasks", "resume", "pause"]).unwrap();
    c.wait_task_status("pause", "RUNNING").unwrap();
    assert!(!cg.frozen().unwrap(), "cgroup still frozen after resume");
    let out = ctr_exec_ok(&c, "pause", "after-resume", &["echo", "thawed"]);
    assert_eq!(out.trim(), "thawed");
    check_ctr_container(&c, rt, "pause");
    remove_ctr_container(&c, "pause");
    assert_nothing_left(&c);
}

/// A container that exceeds its memory limit is OOM-killed and `ctr events` shows
/// /tasks/oom for it.
pub fn ctr_oom_event(rt: &TestRuntime) {
    let c = start();
    let mut events = c.spawn_ctr(&["events"]).unwrap();
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // dd fills a 64 MiB buffer: more than the 32 MiB the container may use.
    let out = ctr_run(
        &c,
        rt,
        &["--memory-limit", "33554432"],
        "oom",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    assert!(
        !out.status.success(),
        "dd survived a 32 MiB limit: {}",
        describe(&out)
    );
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("/tasks/oom") && line.contains("\"oom\"") {
                    break true;
                }
                seen.push(line);
            }
            Err(_) => break false,
        }
    };
    let _ = events.kill();
    let _ = events.wait();
    assert!(
        found,
        "no /tasks/oom event for container oom; events seen:\n{}",
        seen.join("\n")
    );
    c.ctr_ok(&["containers", "rm", "oom"]).unwrap();
    assert_nothing_left(&c);
}

// ---------------------------------------------------------------- CRI scenarios

fn check_cri_container(cri: &Cri, rt: &TestRuntime, id: &str) {
    let status = cri
        .exec_sync(id, &["cat", "/proc/self/status"])
        .unwrap()
        .ok()
        .unwrap();
    let uid_map = cri
        .exec_sync(id, &["cat", "/proc/self/uid_map"])
        .unwrap()
        .ok()
        .unwrap();
    let pid = cri.container_pid(id).unwrap();
    let v = check_container(&status, &uid_map, allowed_caps(rt), pid).unwrap();
    expect_hardening(rt, &format!("CRI container {id}"), v);
}

/// The sandbox (pause) process, read from the host.
fn check_sandbox(cri: &Cri, rt: &TestRuntime, pod: &str) {
    let pid = cri.pod_pid(pod).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let mut v = check_process(&status, &uid_map, allowed_caps(rt));
    v.extend(check_cgroup_limits(pid).unwrap().1);
    expect_hardening(rt, &format!("sandbox of pod {pod}"), v);
}

/// RunPodSandbox, CreateContainer, StartContainer, ExecSync, logs, status, stop and
/// remove, with the hardening checked on the app container and the sandbox.
pub fn cri_pod_lifecycle(rt: &TestRuntime) {
    let c = start();
    let cri = c.cri().unwrap();
    let pod_cfg = cri.pod_config("lifecycle");
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
    check_sandbox(&cri, rt, &pod);

    let cfg = app_config(
        &cri,
        rt,
        "app",
        &[
            "sh",
            "-c",
            "echo started; echo to-stderr >&2; exec sleep 600",
        ],
    );
    let id = cri.run_container(&pod, &cfg, &pod_cfg).unwrap();
    assert_eq!(
        cri.container_state(&id).unwrap(),
        ContainerState::ContainerRunning
    );
    let out = cri
        .exec_sync(&id, &["echo", "exec works"])
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(out.trim(), "exec works");
    let failed = cri
        .exec_sync(&id, &["sh", "-c", "echo err >&2; exit 4"])
        .unwrap();
    assert_eq!((failed.exit_code, failed.stderr.trim()), (4, "err"));
    let logs = wait_for("both log lines", WAIT, || {
        cri.container_logs(&id)
            .ok()
            .filter(|l| l.lines().count() >= 2)
    })
    .unwrap();
    assert!(
        logs.contains("started\n") && logs.contains("to-stderr\n"),
        "logs: {logs:?}"
    );
    check_cri_container(&cri, rt, &id);

    cri.stop_container(&id, 5).unwrap();
    assert_eq!(
        cri.container_state(&id).unwrap(),
        ContainerState::ContainerExited
    );
    cri.remove_container(&id).unwrap();
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    assert_nothing_left(&c);
}

fn ns_links(cri: &Cri, id: &str) -> Vec<String> {
    ["user", "net", "ipc", "uts"]
        .iter()
        .map(|ns| {
            cri.exec_sync(id, &["readlink", &format!("/proc/self/ns/{ns}")])
                .unwrap()
                .ok()
                .unwrap()
                .trim()
                .to_string()
        })
        .collect()
}

/// Two containers of one pod share the pod's user, network, IPC and UTS namespaces,
/// which are not the host's.
pub fn cri_pod_shares_namespaces(rt: &TestRuntime) {
    let c = start();
    let cri = c.cri().unwrap();
    let pod_cfg = cri.pod_config("shared");
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
    let [a, b] = ["a", "b"].map(|name| {
        cri.run_container(
            &pod,
            &cri.container_config(name, &["sleep", "600"]),
            &pod_cfg,
        )
        .unwrap()
    });
    let (la, lb) = (ns_links(&cri, &a), ns_links(&cri, &b));
    assert_eq!(
        la, lb,
        "containers of one pod must share user/net/ipc/uts namespaces"
    );
    let sandbox = cri.pod_pid(&pod).unwrap();
    for (i, ns) in ["user", "net", "ipc", "uts"].iter().enumerate() {
        let pause = std::fs::read_link(format!("/proc/{sandbox}/ns/{ns}")).unwrap();
        assert_eq!(
            la[i],
            pause.display().to_string(),
            "{ns} namespace differs from the sandbox's"
        );
    }
    let host_net = std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();
    assert_ne!(
        la[1], host_net,
        "pod must not be in the host network namespace"
    );
    let host_user = std::fs::read_link("/proc/self/ns/user")
        .unwrap()
        .display()
        .to_string();
    if rt.hardened() {
        assert_ne!(
            la[0], host_user,
            "Stockade pods get their own user namespace"
        );
    }
    check_cri_container(&cri, rt, &a);
    check_cri_container(&cri, rt, &b);
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert_nothing_left(&c);
}

/// UpdateContainerResources changes the limits in the container's cgroup.
pub fn cri_update_resources(rt: &TestRuntime) {
    let c = start();
    let cri = c.cri().unwrap();
    let (pod, id) = cri
        .run_pod_with_app("update", rt.cri_handler, &["sleep", "600"])
        .unwrap();
    let pid = cri.container_pid(&id).unwrap();
    let memory = 200 * 1024 * 1024;
    cri.update_container_resources(
        &id,
        LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            ..Default::default()
        },
    )
    .unwrap();
    let (limits, _) = check_cgroup_limits(pid).unwrap();
    assert_eq!(limits.memory, Some(memory as u64), "{limits:?}");
    assert_eq!(limits.cpu_quota, Some(50_000), "{limits:?}");
    assert_eq!(limits.cpu_period, Some(100_000), "{limits:?}");
    if rt.hardened() {
        assert!(
            limits.pids.is_some(),
            "an update must not drop the pids limit: {limits:?}"
        );
    }
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert_nothing_left(&c);
}

/// containerd restarted (stopped by PID, started with the same dirs) while a pod runs:
/// the pod still runs, can be exec'd, stopped and removed.
pub fn cri_survives_containerd_restart(rt: &TestRuntime) {
    let mut c = start();
    let (pod, id) = c
        .cri()
        .unwrap()
        .run_pod_with_app("restart", rt.cri_handler, &["sleep", "600"])
        .unwrap();
    let old = c.pid();
    c.restart().unwrap();
    assert_ne!(c.pid(), old);
    let cri = c.cri().unwrap();
    assert_eq!(
        cri.container_state(&id).unwrap(),
        ContainerState::ContainerRunning
    );
    let out = cri
        .exec_sync(&id, &["echo", "still here"])
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(out.trim(), "still here");
    check_cri_container(&cri, rt, &id);
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    assert_nothing_left(&c);
}

// ------------------------------------------------------- Stockade-only scenarios

fn assert_refused(result: anyhow::Result<String>, rule: &str, what: &str) {
    match result {
        Ok(id) => panic!("{what} was accepted (id {id}); expected a refusal by rule `{rule}`"),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains(rule),
                "{what} failed, but the error does not name the rule `{rule}`: {msg}"
            );
        }
    }
}

/// A privileged pod is refused with the rule's name. containerd 1.6 builds the same
/// sandbox spec for privileged and unprivileged pods, so the refusal may come at
/// RunPodSandbox or, at the latest, for the pod's privileged container.
pub fn cri_refuses_privileged(rt: &TestRuntime) {
    let c = start();
    let cri = c.cri().unwrap();
    let mut pod_cfg = cri.pod_config("privileged");
    if let Some(sc) = pod_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.privileged = true;
    }
    match cri.run_pod_sandbox(&pod_cfg, rt.cri_handler) {
        Err(e) => assert_refused(Err(e), "privileged", "privileged pod sandbox"),
        Ok(pod) => {
            let mut cfg = cri.container_config("root", &["sleep", "600"]);
            if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
                sc.privileged = true;
            }
            let result = cri
                .create_container(&pod, &cfg, &pod_cfg)
                .and_then(|id| cri.start_container(&id).map(|_| id));
            assert_refused(result, "privileged", "privileged container");
            cri.stop_pod_sandbox(&pod).unwrap();
            cri.remove_pod_sandbox(&pod).unwrap();
        }
    }
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    assert_nothing_left(&c);
}

/// A pod in the host's PID namespace is refused at RunPodSandbox, naming `host-pid`,
/// and nothing of it is left.
pub fn cri_refuses_host_pid(rt: &TestRuntime) {
    let c = start();
    let cri = c.cri().unwrap();
    let mut pod_cfg = cri.pod_config("hostpid");
    if let Some(ns) = pod_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = k8s_cri::v1::NamespaceMode::Node as i32;
    }
    assert_refused(
        cri.run_pod_sandbox(&pod_cfg, rt.cri_handler),
        "host-pid",
        "hostPID pod",
    );
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    assert_nothing_left(&c);
}

/// A container whose image comes from a registry the profile does not allow is refused.
pub fn cri_refuses_untrusted_registry(rt: &TestRuntime) {
    let c = start();
    let cri = c.cri().unwrap();
    let pod_cfg = cri.pod_config("registry");
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
    let mut cfg = cri.container_config("untrusted", &["sleep", "600"]);
    if let Some(image) = cfg.image.as_mut() {
        image.image = stockade_integration::image::UNTRUSTED_BUSYBOX_IMAGE.to_string();
    }
    let result = cri
        .create_container(&pod, &cfg, &pod_cfg)
        .and_then(|id| cri.start_container(&id).map(|_| id));
    assert_refused(result, "untrusted-registry", "image from localhost");
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert_nothing_left(&c);
}

/// The host UID that container root of `id` maps to.
fn host_root_uid(cri: &Cri, id: &str) -> (u64, u64) {
    let map = cri
        .exec_sync(id, &["cat", "/proc/self/uid_map"])
        .unwrap()
        .ok()
        .unwrap();
    let entries = stockade_integration::hardening::parse_id_map(&map).unwrap();
    let e = entries.first().copied().expect("a uid_map line");
    assert_eq!(e.inside, 0, "uid_map {map:?}");
    (e.outside, e.count)
}

/// Each pod gets its own host ID range: two pods' ranges do not overlap.
pub fn cri_pods_get_distinct_id_ranges(rt: &TestRuntime) {
    let c = start();
    let cri = c.cri().unwrap();
    let mut ranges = Vec::new();
    let mut pods = Vec::new();
    for name in ["range-a", "range-b"] {
        let (pod, id) = cri
            .run_pod_with_app(name, rt.cri_handler, &["sleep", "600"])
            .unwrap();
        ranges.push(host_root_uid(&cri, &id));
        pods.push(pod);
    }
    let ((a, na), (b, nb)) = (ranges[0], ranges[1]);
    assert!(
        a + na <= b || b + nb <= a,
        "pods share host IDs: {a}+{na} and {b}+{nb}"
    );
    for pod in pods {
        cri.stop_pod_sandbox(&pod).unwrap();
        cri.remove_pod_sandbox(&pod).unwrap();
    }
    assert_nothing_left(&c);
}

/// A container asking for more memory than the profile's ceiling: clamped to the ceiling
/// (`expect_limit`) or refused naming `memory-ceiling` (`None`), per the profile.
pub fn cri_memory_above_ceiling(rt: &TestRuntime, request: i64, expect_limit: Option<u64>) {
    let c = start();
    let cri = c.cri().unwrap();
    let pod_cfg = cri.pod_config("ceiling");
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
    let mut cfg = app_config(&cri, rt, "big", &["sleep", "600"]);
    if let Some(linux) = cfg.linux.as_mut() {
        linux.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: request,
            ..Default::default()
        });
    }
    let result = cri
        .create_container(&pod, &cfg, &pod_cfg)
        .and_then(|id| cri.start_container(&id).map(|_| id));
    match expect_limit {
        Some(limit) => {
            let id = result.unwrap();
            let pid = cri.container_pid(&id).unwrap();
            let (limits, _) = check_cgroup_limits(pid).unwrap();
            assert_eq!(limits.memory, Some(limit), "{limits:?}");
        }
        None => assert_refused(result, "memory-ceiling", "memory above the ceiling"),
    }
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert_nothing_left(&c);
}
