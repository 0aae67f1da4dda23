//! Pure cgroup v2, with and without systemd as the cgroup driver. These run inside the
//! cgroup v2 VM (`scripts/cgroup2-vm.sh`, from `make test`); on other hosts they are
//! ignored, and they fail if run where the hierarchy is not unified.
//!
//! What the rest of the suite (stockade_ctr, stockade_cri, run in the VM as well) does not
//! show: device rules are enforced with eBPF (a bind-mounted char device 1:11, mode 0666,
//! cannot be opened, under Stockade and runc alike), and under systemd a
//! `slice:prefix:name` cgroupsPath, from ctr or from a kubelet-style CRI pod, lands in its
//! scope with Stockade's limits, and the scope goes with the container.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use stockade_integration::cri::Cri;
use stockade_integration::hardening::{assert_no_violations, check_cgroup_limits};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;

fn require_unified() {
    assert!(
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "not a pure cgroup v2 host: run this through scripts/cgroup2-vm.sh"
    );
}

fn systemd_is_pid1() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

fn require_systemd() {
    require_unified();
    assert!(
        systemd_is_pid1(),
        "systemd is not PID 1: run with C2VM_INIT=systemd"
    );
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A char device 1:11 (kmsg), mode 0666, in a directory of our own: no file mode stops
/// the container, only the device rules can.
struct DeviceNode {
    dir: tempfile::TempDir,
}

impl DeviceNode {
    fn new() -> DeviceNode {
        let dir = tempfile::Builder::new()
            .prefix("stockade-it-dev-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let node = dir.path().join("kmsg");
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 11),
        )
        .unwrap();
        // mknod honours the umask.
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666)).unwrap();
        DeviceNode { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("kmsg")
    }

    /// Read-only: a hostPath outside the profile's list may only be mounted so (rule
    /// `host-path`), and a read-only mount still lets a device node open for writing.
    fn ctr_mount(&self) -> String {
        format!(
            "type=bind,src={},dst=/dev/stockade-kmsg,options=rbind:ro",
            self.path().display()
        )
    }
}

/// Opens the bind-mounted node and /dev/null (allowed) in the container, for writing:
/// kmsg itself refuses readers without CAP_SYSLOG (dmesg_restrict) with EPERM too, but
/// takes any writer, so only the device rules can refuse this open.
const OPEN_BOTH: &str = "/bin/busybox dd if=/dev/null of=/dev/stockade-kmsg count=0 conv=notrunc 2>&1; \
     /bin/busybox dd if=/dev/null of=/dev/null count=0 conv=notrunc 2>/dev/null && echo null-opened";

fn assert_device_refused(what: &str, output: &str) {
    assert!(
        output.contains("Operation not permitted"),
        "{what}: opening char device 1:11 was not refused with EPERM:\n{output}"
    );
    assert!(
        output.contains("null-opened"),
        "{what}: /dev/null (allowed) could not be opened:\n{output}"
    );
}

#[test]
#[ignore = "pure cgroup v2 only: scripts/cgroup2-vm.sh runs it in the VM"]
fn devices_outside_the_rules_cannot_be_opened() {
    require_unified();
    let c = common::start();
    let node = DeviceNode::new();
    for rt in [TestRuntime::runc(), TestRuntime::stockade().unwrap()] {
        let id = format!("dev-{}", rt.label);
        let mount = node.ctr_mount();
        let out = common::ctr_run(
            &c,
            &rt,
            &["--rm", "--mount", &mount],
            &id,
            &["sh", "-c", OPEN_BOTH],
        );
        assert_device_refused(rt.label, &String::from_utf8_lossy(&out.stdout));
    }
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
#[ignore = "pure cgroup v2 only: scripts/cgroup2-vm.sh runs it in the VM"]
fn a_systemd_path_without_systemd_goes_under_the_profile_parent() {
    require_unified();
    assert!(!systemd_is_pid1(), "run without C2VM_INIT=systemd");
    let c = common::start();
    let rt = TestRuntime::stockade().unwrap();
    let out = common::ctr_run(
        &c,
        &rt,
        &["-d", "--cgroup", "system.slice:stockade:nosd"],
        "nosd",
        &["sleep", "600"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    c.wait_task_status("nosd", "RUNNING").unwrap();
    let (pid, _) = c.task("nosd").unwrap();
    let cgroup = process_cgroup(pid);
    assert!(
        cgroup.starts_with("/stockade/") && cgroup.ends_with("/nosd"),
        "cgroup {cgroup}"
    );
    let (_, violations) = check_cgroup_limits(pid).unwrap();
    assert_no_violations("container nosd", &violations);
    remove(&c, "nosd");
    assert!(
        !Path::new("/sys/fs/cgroup").join(&cgroup[1..]).exists(),
        "{cgroup} left behind"
    );
}

/// The v2 path of process `pid` (`0::/path`).
fn process_cgroup(pid: i32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no v2 cgroup for {pid}: {text}"))
        .to_string()
}

fn remove(c: &Containerd, id: &str) {
    let _ = c.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
    c.wait_task_status(id, "STOPPED").unwrap();
    c.ctr_ok(&["tasks", "rm", id]).unwrap();
    c.ctr_ok(&["containers", "rm", id]).unwrap();
}

fn systemctl_show(unit: &str, property: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", "-p", property, "--value", unit])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn unit_active(unit: &str) -> bool {
    systemctl_show(unit, "ActiveState") == "active"
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

#[test]
#[ignore = "pure cgroup v2 only: scripts/cgroup2-vm.sh runs it in the VM"]
fn a_systemd_path_lands_in_its_scope_with_the_limits() {
    require_systemd();
    let c = common::start();
    let node = DeviceNode::new();
    let rt = TestRuntime::stockade().unwrap();
    let id = format!("sd{}", std::process::id());
    let unit = format!("stockade-{id}.scope");
    let cgroups_path = format!("system.slice:stockade:{id}");
    let mount = node.ctr_mount();
    let out = common::ctr_run(
        &c,
        &rt,
        &["-d", "--cgroup", &cgroups_path, "--mount", &mount],
        &id,
        &["sleep", "600"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    c.wait_task_status(&id, "RUNNING").unwrap();
    let (pid, _) = c.task(&id).unwrap();
    assert_eq!(process_cgroup(pid), format!("/system.slice/{unit}"));
    assert!(unit_active(&unit), "{unit} is not active");
    let dir = Path::new("/sys/fs/cgroup/system.slice").join(&unit);
    let (limits, violations) = check_cgroup_limits(pid).unwrap();
    assert_no_violations(&format!("container {id}"), &violations);
    // systemd knows the limits (it would otherwise put its own back).
    assert_eq!(
        systemctl_show(&unit, "MemoryMax"),
        limits.memory.unwrap().to_string()
    );
    assert_eq!(
        systemctl_show(&unit, "TasksMax"),
        limits.pids.unwrap().to_string()
    );
    assert_ne!(read(&dir, "cpu.max").split(' ').next(), Some("max"));

    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "dev",
        &id,
        "sh",
        "-c",
        OPEN_BOTH,
    ]);
    assert_device_refused("systemd scope", &String::from_utf8_lossy(&out.stdout));

    let metrics = c.ctr_ok(&["tasks", "metrics", &id]).unwrap();
    assert!(
        metrics.contains(&limits.memory.unwrap().to_string()),
        "metrics without the memory limit:\n{metrics}"
    );
    c.ctr_ok(&["tasks", "pause", &id]).unwrap();
    c.wait_task_status(&id, "PAUSED").unwrap();
    assert!(read(&dir, "cgroup.events").contains("frozen 1"));
    c.ctr_ok(&["tasks", "resume", &id]).unwrap();
    c.wait_task_status(&id, "RUNNING").unwrap();
    assert!(read(&dir, "cgroup.events").contains("frozen 0"));

    remove(&c, &id);
    assert!(!unit_active(&unit), "{unit} still active after delete");
    assert!(!dir.exists(), "{} left behind", dir.display());
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// A slice of our own for the kubelet-style pod, stopped (with whatever is left in it)
/// when the test ends.
struct TestSlice(String);

impl Drop for TestSlice {
    fn drop(&mut self) {
        let _ = Command::new("systemctl").args(["stop", &self.0]).status();
    }
}

#[test]
#[ignore = "pure cgroup v2 only: scripts/cgroup2-vm.sh runs it in the VM"]
fn a_kubelet_style_pod_lands_in_its_slice_with_the_limits() {
    require_systemd();
    let c = common::start();
    let cri: Cri = c.cri().unwrap();
    let root = format!("stockadeit{}", std::process::id());
    let _slice = TestSlice(format!("{root}.slice"));
    // kubelet's systemd names: <qos-parent>-pod<uid with _ for ->.slice
    let pod_slice = format!("{root}-besteffort-pod{}.slice", std::process::id());
    let mut pod = cri.pod_config("sdpod");
    if let Some(linux) = pod.linux.as_mut() {
        linux.cgroup_parent = pod_slice.clone();
    }
    let pod_id = cri.run_pod_sandbox(&pod, "stockade").unwrap();
    let ctr = cri
        .run_container(
            &pod_id,
            &cri.container_config("app", &["sleep", "600"]),
            &pod,
        )
        .unwrap();
    let pid = cri.container_pid(&ctr).unwrap();
    let slice_dir = format!("/{root}.slice/{root}-besteffort.slice/{pod_slice}");
    let unit = format!("cri-containerd-{ctr}.scope");
    assert_eq!(process_cgroup(pid), format!("{slice_dir}/{unit}"));
    let (limits, violations) = check_cgroup_limits(pid).unwrap();
    assert_no_violations("kubelet-style container", &violations);
    assert_eq!(
        systemctl_show(&unit, "MemoryMax"),
        limits.memory.unwrap().to_string()
    );
    // The sandbox is in the pod's slice too.
    let sandbox = cri.pod_pid(&pod_id).unwrap();
    assert_eq!(
        process_cgroup(sandbox),
        format!("{slice_dir}/cri-containerd-{pod_id}.scope")
    );

    // Update goes through systemd.
    let resources = k8s_cri::v1::LinuxContainerResources {
        memory_limit_in_bytes: 96 << 20,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        ..Default::default()
    };
    cri.update_container_resources(&ctr, resources).unwrap();
    assert_eq!(
        systemctl_show(&unit, "MemoryMax"),
        (96u64 << 20).to_string()
    );
    let dir = PathBuf::from(format!("/sys/fs/cgroup{slice_dir}/{unit}"));
    assert_eq!(read(&dir, "memory.max"), (96u64 << 20).to_string());
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");

    cri.stop_container(&ctr, 0).unwrap();
    cri.remove_container(&ctr).unwrap();
    cri.stop_pod_sandbox(&pod_id).unwrap();
    cri.remove_pod_sandbox(&pod_id).unwrap();
    assert!(!unit_active(&unit), "{unit} still active after removal");
    assert!(!dir.exists(), "{} left behind", dir.display());
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
