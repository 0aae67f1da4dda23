//! Faults: the shim SIGKILLed with a running container and in the middle of Create,
//! containerd restarted under running containers, many pods created at once, and the
//! state directory on a full filesystem. Every test ends with nothing left behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_cri::v1::{ContainerState, PodSandboxState};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use stockade_integration::containerd::{shim_socket_path, CRI_NAMESPACE};
use stockade_integration::cri::Cri;
use stockade_integration::exec::wait_for;
use stockade_integration::hardening::parse_id_map;
use stockade_integration::image::BUSYBOX_IMAGE;
use stockade_integration::paths::SHIM_BINARY;
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::teardown::{self, ProcInfo};
use stockade_integration::Containerd;
use stockade_runtime::idrange::{IdAllocator, IdRange, IdRangeError, IdTable};
use stockade_runtime::profile::IdPoolSettings;

/// How long containerd may take to notice a dead shim, or a container to go away.
const NOTICE: Duration = Duration::from_secs(15);

fn stockade() -> TestRuntime {
    TestRuntime::stockade().expect("profiles/default.toml")
}

fn assert_nothing_left(c: &Containerd) {
    let left = c.leftovers();
    if !left.is_empty() {
        // What each left process is doing, to tell which stage it was stranded in.
        for p in &left.processes {
            let pid = p.split_whitespace().next().unwrap_or_default();
            let read =
                |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
            let status: Vec<String> = read("status")
                .lines()
                .filter(|l| {
                    [
                        "Name:", "State:", "PPid:", "Uid:", "SigBlk:", "SigPnd:", "ShdPnd:",
                    ]
                    .iter()
                    .any(|k| l.starts_with(k))
                })
                .map(str::to_string)
                .collect();
            eprintln!(
                "[faults] left process {pid}: {status:?} wchan={} cgroup={:?}",
                read("wchan"),
                read("cgroup")
            );
        }
        for cg in &left.cgroups {
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            let freezer = std::fs::read_to_string(cg.join("freezer.state")).unwrap_or_default();
            eprintln!(
                "[faults] left cgroup {}: procs {procs:?} freezer {freezer:?}",
                cg.display()
            );
        }
    }
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// Leftovers of cleanup containerd does in the background (after a dead shim) may take a
/// moment to go: wait for them, then assert.
fn assert_nothing_left_soon(c: &Containerd) {
    let _ = wait_for("no leftovers", NOTICE, || {
        Some(()).filter(|_| c.leftovers().is_empty())
    });
    assert_nothing_left(c);
}

// ------------------------------------------------------------------ finding the shim

/// `p` runs this instance's Stockade shim binary as a server (`-socket`): the server, its
/// zygote, or a container process not exec'd yet (they share the server's command line).
fn is_our_shim(c: &Containerd, p: &ProcInfo) -> bool {
    let address = c.socket.display().to_string();
    p.state != 'Z'
        && p.args.first().is_some_and(|a| a.ends_with(SHIM_BINARY))
        && teardown::arg_value(&p.args, "-address") == Some(address.as_str())
        && teardown::arg_value(&p.args, "-socket").is_some()
}

/// This instance's shim servers (pid, `-id`): our shim's command line under a parent that
/// is not one (the zygote and not-yet-exec'd container processes are the server's
/// children). Found by what identifies them as ours, never by name.
fn shim_servers(c: &Containerd) -> Vec<(i32, String)> {
    let procs = teardown::processes();
    let shims: Vec<&ProcInfo> = procs.iter().filter(|p| is_our_shim(c, p)).collect();
    shims
        .iter()
        .filter(|p| !shims.iter().any(|q| q.pid == p.ppid))
        .map(|p| {
            let id = teardown::arg_value(&p.args, "-id").unwrap_or_default();
            (p.pid, id.to_string())
        })
        .collect()
}

/// The one shim server serving `group` (a ctr container id, or a CRI pod's sandbox id).
fn shim_server(c: &Containerd, group: &str) -> i32 {
    let servers: Vec<i32> = shim_servers(c)
        .into_iter()
        .filter(|(_, id)| id == group)
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(servers.len(), 1, "shim servers of {group}: {servers:?}");
    servers[0]
}

/// The ID table of this instance's shims (pod id -> host ID range).
fn id_table(c: &Containerd) -> Result<IdTable, IdRangeError> {
    // Only reading the table: any pool will do.
    let any_pool = IdPoolSettings {
        first_id: 1 << 30,
        size: 1 << 16,
        ids_per_pod: 1 << 16,
    };
    IdAllocator::open(c.stockade_state.id_ranges(), any_pool)?.table()
}

/// Running (neither gone nor a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let i = s.rfind(')')?;
            s[i + 1..].split_whitespace().next().map(str::to_string)
        })
        .is_some_and(|st| st != "Z" && st != "X")
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL of our shim");
}

// ------------------------------------------------------------------------- ctr helpers

/// `ctr run <flags> --runtime stockade --runtime-config-path <default> busybox <id> <cmd>`.
fn run_args(rt: &TestRuntime, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
    let mut args = vec!["run".to_string()];
    args.extend(flags.iter().map(|s| s.to_string()));
    args.extend(rt.ctr_run_args());
    args.push(BUSYBOX_IMAGE.to_string());
    args.push(id.to_string());
    args.extend(cmd.iter().map(|s| s.to_string()));
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `ctr events` of this instance, read by a thread.
struct Events {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Events {
    fn start(c: &Containerd) -> Events {
        let mut child = c.spawn_ctr(&["events"]).unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Events { child, rx }
    }

    /// The first event line that has `topic` and names `container` as container_id.
    fn wait(&self, topic: &str, container: &str, timeout: Duration) -> Option<String> {
        let needle = format!("\"container_id\":\"{container}\"");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).ok()?;
            if line.contains(topic) && line.contains(&needle) {
                return Some(line);
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait (bounded) for a client we spawned; kill it at the deadline. Returns its status
/// and stderr.
fn wait_client(mut child: Child, timeout: Duration) -> (std::process::ExitStatus, String) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // ctr starts no processes of its own: once it is gone, its stderr is closed.
    (status, reader.join().unwrap_or_default())
}

/// `ctr tasks rm -f` and `ctr containers rm` of `id`: a task containerd already deleted
/// (after a dead shim) is "not found", which is fine; any other error is not.
fn ctr_remove(c: &Containerd, id: &str) {
    let out = c.ctr(&["tasks", "rm", "-f", id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("not found"),
        "ctr tasks rm -f {id}: {err}"
    );
    let listed = c.ctr_ok(&["containers", "ls", "-q"]).unwrap();
    if listed.lines().any(|l| l.trim() == id) {
        c.ctr_ok(&["containers", "rm", id]).unwrap();
    }
}

// ------------------------------------------------------------ kill -9 of a running shim

/// `ctr run -d`, then SIGKILL the container's shim: containerd publishes the task's exit
/// (137), drops the task, the container's processes are gone (`shim delete` kills what the
/// dead server left), and ctr removes the container with nothing left.
#[test]
fn ctr_shim_killed_with_running_container() {
    let c = Containerd::start().unwrap();
    let rt = stockade();
    let events = Events::start(&c);
    c.ctr_ok(&strs(&run_args(&rt, &["-d"], "k9", &["sleep", "600"])))
        .unwrap();
    c.wait_task_status("k9", "RUNNING").unwrap();
    let (init, _) = c.task("k9").unwrap();
    let shim = shim_server(&c, "k9");
    assert!(alive(init), "the container's init {init} is not running");

    sigkill(shim);
    let killed = Instant::now();
    let exit = events
        .wait("/tasks/exit", "k9", NOTICE)
        .unwrap_or_else(|| panic!("no /tasks/exit for k9 within {NOTICE:?} of the shim's SIGKILL"));
    let noticed = killed.elapsed();
    assert!(exit.contains("\"exit_status\":137"), "exit event: {exit}");
    // containerd 1.6 deletes a dead shim's task itself: it is no longer listed as running.
    wait_for("task k9 not running", NOTICE, || {
        Some(()).filter(|_| c.task("k9").map_or(true, |(_, s)| s != "RUNNING"))
    })
    .unwrap();
    wait_for("the container's init to be gone", NOTICE, || {
        Some(()).filter(|_| !alive(init))
    })
    .unwrap();
    let gone = killed.elapsed();
    let log = std::fs::read_to_string(&c.log_path).unwrap();
    let killed_by_delete = log.contains("killing what the dead shim left running");
    eprintln!(
        "[faults] ctr: task exit seen {noticed:?} after SIGKILL of the shim, init gone after \
         {gone:?} (outlived the server, killed by `shim delete`: {killed_by_delete})"
    );

    ctr_remove(&c, "k9");
    assert_nothing_left_soon(&c);
}

/// A CRI pod with a running container, its shim SIGKILLed: the container is EXITED, the
/// sandbox NOTREADY, both processes gone; stopping and removing the pod through CRI
/// succeeds and nothing is left.
#[test]
fn cri_shim_killed_with_running_pod() {
    let c = Containerd::start().unwrap();
    let rt = stockade();
    let cri = c.cri().unwrap();
    let (pod, id) = cri
        .run_pod_with_app("k9", rt.cri_handler, &["sleep", "600"])
        .unwrap();
    let (pause, app) = (cri.pod_pid(&pod).unwrap(), cri.container_pid(&id).unwrap());
    let shim = shim_server(&c, &pod);

    sigkill(shim);
    let killed = Instant::now();
    wait_for("the container to be EXITED", NOTICE, || {
        cri.container_state(&id)
            .ok()
            .filter(|s| *s == ContainerState::ContainerExited)
    })
    .unwrap();
    let noticed = killed.elapsed();
    wait_for("the sandbox to be NOTREADY", NOTICE, || {
        cri.pod_sandbox_status(&pod)
            .ok()
            .and_then(|r| r.status)
            .filter(|s| s.state == PodSandboxState::SandboxNotready as i32)
    })
    .unwrap();
    wait_for("the pod's processes to be gone", NOTICE, || {
        Some(()).filter(|_| !alive(pause) && !alive(app))
    })
    .unwrap();
    eprintln!(
        "[faults] CRI: container EXITED {noticed:?} after SIGKILL of the pod's shim, \
         processes gone after {:?}",
        killed.elapsed()
    );

    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    assert_nothing_left_soon(&c);
}

// --------------------------------------------------------------- kill -9 during Create

/// How far Create had come when the shim died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// No ID range taken yet (Create not begun, or still deciding).
    BeforeCreate,
    /// The pod's ID range taken, rootfs not mounted.
    RangeTaken,
    /// Rootfs mounted, libcontainer not started.
    RootfsMounted,
    /// libcontainer's state exists: the container was being created.
    ContainerCreating,
    /// Create had answered.
    Created,
}

impl Phase {
    fn mid_create(self) -> bool {
        !matches!(self, Phase::BeforeCreate | Phase::Created)
    }
}

/// The bundle of task `id` in containerd namespace `ns`.
fn bundle(c: &Containerd, ns: &str, id: &str) -> PathBuf {
    c.state
        .join("io.containerd.runtime.v2.task")
        .join(ns)
        .join(id)
}

/// What the dead shim had done for container `id` (a sandbox, or a ctr container, whose
/// pod id is its own id), seen on the machine right after the kill.
fn progress_on_disk(c: &Containerd, ns: &str, id: &str) -> Phase {
    let rootfs = bundle(c, ns, id).join("rootfs");
    let range_taken = id_table(c).is_ok_and(|t| t.get(id).is_some());
    if c.stockade_state.libcontainer().join(ns).join(id).exists() {
        Phase::ContainerCreating
    } else if teardown::mounts_under(&rootfs).contains(&rootfs) {
        Phase::RootfsMounted
    } else if range_taken {
        Phase::RangeTaken
    } else {
        Phase::BeforeCreate
    }
}

/// The same from the shim's log lines in containerd's log (lines the shim wrote just
/// before it died may be lost).
fn progress_in_log(c: &Containerd, ns: &str, id: &str) -> Phase {
    let log = std::fs::read_to_string(&c.log_path).unwrap_or_default();
    let rootfs = bundle(c, ns, id).join("rootfs");
    if log.contains(&format!("created container={id} ")) {
        Phase::Created
    } else if log.contains(&format!("rootfs mounted target={} ", rootfs.display())) {
        Phase::RootfsMounted
    } else if log.contains(&format!("ID range allocated pod={id} ")) {
        Phase::RangeTaken
    } else {
        Phase::BeforeCreate
    }
}

/// What `shim delete` logged (through containerd's "cleanup warnings") so far: processes
/// the dead server left, processes left in a container's cgroup, ID ranges released.
fn cleanup_counts(c: &Containerd) -> [usize; 3] {
    let log = std::fs::read_to_string(&c.log_path).unwrap_or_default();
    [
        "killing a process the dead shim left",
        "killing a process left in the container's cgroup",
        "released the dead shim's ID range",
    ]
    .map(|what| log.matches(what).count())
}

/// Poll /proc (tightly) for a shim server of this instance whose `-id` passes `group`;
/// returns its pid and `-id`.
fn await_shim(c: &Containerd, group: impl Fn(&str) -> bool) -> Option<(i32, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(found) = shim_servers(c).into_iter().find(|(_, id)| group(id)) {
            return Some(found);
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    None
}

/// SIGKILL `pid` and wait until it is dead.
fn sigkill_and_wait(pid: i32) {
    sigkill(pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// When to SIGKILL the shim: as soon as it exists, or as soon as Create has visibly
/// reached a stage (polled tightly on the machine).
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// The server process exists (Create not begun).
    ShimExists,
    /// The pod's ID range is in the ID table.
    RangeTaken,
    /// `<bundle>/rootfs` is a mount point.
    RootfsMounted,
    /// libcontainer's state dir exists (libcontainer is creating the container).
    LibcontainerState,
    /// The container's cgroup exists (libcontainer is starting its processes).
    Cgroup,
}

const KILL_POINTS: [KillAt; 5] = [
    KillAt::ShimExists,
    KillAt::RangeTaken,
    KillAt::RootfsMounted,
    KillAt::LibcontainerState,
    KillAt::Cgroup,
];

/// Whether Create of container `id` (containerd namespace `ns`) has reached `at`.
fn reached(c: &Containerd, ns: &str, id: &str, at: KillAt) -> bool {
    match at {
        KillAt::ShimExists => true,
        KillAt::RangeTaken => progress_on_disk(c, ns, id) >= Phase::RangeTaken,
        KillAt::RootfsMounted => {
            let rootfs = bundle(c, ns, id).join("rootfs");
            teardown::mounts_under(&rootfs).contains(&rootfs)
        }
        KillAt::LibcontainerState => c.stockade_state.libcontainer().join(ns).join(id).exists(),
        KillAt::Cgroup => c.cgroup_dirs().iter().any(|d| d.join(id).exists()),
    }
}

/// Wait (tightly, bounded) until Create of `id` reaches `at`; false if it did not.
fn await_stage(c: &Containerd, ns: &str, id: &str, at: KillAt, shim: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && alive(shim) {
        if reached(c, ns, id, at) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

/// `ctr run` with the shim SIGKILLed as soon as it exists, and as soon as Create has taken
/// the pod's ID range, mounted the rootfs, written libcontainer's state, made the cgroup:
/// ctr fails, and after removing the container through ctr nothing is left (no process,
/// mount, ID range, cgroup, libcontainer state, node record, socket).
#[test]
fn ctr_shim_killed_during_create() {
    let c = Containerd::start().unwrap();
    let rt = stockade();
    let ns = c.namespace().to_string();
    let mut landed = Vec::new();
    for (n, at) in KILL_POINTS.into_iter().enumerate() {
        let id = format!("create{n}");
        let before = cleanup_counts(&c);
        let child = c.spawn_ctr(&strs(&run_args(&rt, &[], &id, &["sleep", "600"])));
        let child = child.unwrap();
        let Some((shim, _)) = await_shim(&c, |g| g == id) else {
            let (status, err) = wait_client(child, Duration::from_secs(30));
            panic!("no shim server for {id} appeared; ctr: {status}: {err}");
        };
        let hit = await_stage(&c, &ns, &id, at, shim);
        sigkill_and_wait(shim);
        let on_disk = progress_on_disk(&c, &ns, &id);
        let (status, err) = wait_client(child, Duration::from_secs(60));
        let p = on_disk.max(progress_in_log(&c, &ns, &id));
        eprintln!(
            "[faults] {id}: SIGKILL at {at:?} (reached: {hit}): {p:?}; ctr {status}: {}",
            err.trim()
        );
        if p != Phase::Created {
            assert!(
                !status.success(),
                "ctr run {id} succeeded although its shim died during Create"
            );
        }
        ctr_remove(&c, &id);
        // The harness finds shim sockets by the ids containerd logged; a shim killed before
        // containerd connected may never be named there: look for this one's directly.
        let socket = shim_socket_path(&c.socket, &ns, &id);
        let refused = format!(
            "dial unix {}: connect: connection refused",
            socket.display()
        );
        if socket.exists() && err.contains(&refused) {
            // Killed after `start` saw it serving and before containerd dialed it (a window
            // of about a millisecond): containerd 1.6 runs no `shim delete` for a shim it
            // never reached, so nobody can remove the socket. Known limitation.
            eprintln!(
                "[faults] {id}: the shim died between `start` and containerd's dial; \
                 removing its socket {} (containerd runs no `shim delete` then)",
                socket.display()
            );
            std::fs::remove_file(&socket).unwrap();
        }
        assert_nothing_left_soon(&c);
        assert!(
            !socket.exists(),
            "{id}: shim socket {} left",
            socket.display()
        );
        let after = cleanup_counts(&c);
        eprintln!(
            "[faults] {id}: shim delete killed {} stray shim process(es), {} in the cgroup; \
             released the ID range: {}",
            after[0] - before[0],
            after[1] - before[1],
            after[2] > before[2]
        );
        landed.push(p);
    }
    assert!(
        landed.iter().filter(|p| p.mid_create()).count() >= 2,
        "fewer than two kills landed in the middle of Create: {landed:?}"
    );
}

/// RunPodSandbox with the pod's shim SIGKILLed during the sandbox's Create (rootfs
/// mounted; container being created): CRI fails the call, and nothing is left once CRI
/// has stopped and removed whatever pod it kept.
#[test]
fn cri_shim_killed_during_create() {
    let c = Containerd::start().unwrap();
    let rt = stockade();
    let cri = c.cri().unwrap();
    let mut landed = Vec::new();
    for at in [KillAt::RootfsMounted, KillAt::Cgroup] {
        let pod_cfg = cri.pod_config("dying");
        let (result, p) = std::thread::scope(|s| {
            let run = s.spawn(|| cri.run_pod_sandbox(&pod_cfg, rt.cri_handler));
            // No other shim runs: the sandbox's is the first to appear.
            let (shim, sandbox) = await_shim(&c, |_| true).expect("a shim server");
            await_stage(&c, CRI_NAMESPACE, &sandbox, at, shim);
            sigkill_and_wait(shim);
            let on_disk = progress_on_disk(&c, CRI_NAMESPACE, &sandbox);
            let result = run.join().unwrap();
            (
                result,
                on_disk.max(progress_in_log(&c, CRI_NAMESPACE, &sandbox)),
            )
        });
        eprintln!(
            "[faults] CRI: SIGKILL at {at:?}: {p:?}; RunPodSandbox: {:?}",
            result.as_ref().map_err(|e| e.to_string())
        );
        if p != Phase::Created {
            assert!(result.is_err(), "RunPodSandbox succeeded: {result:?}");
        }
        for pod in cri.list_pod_sandboxes().unwrap() {
            cri.stop_pod_sandbox(&pod.id).unwrap();
            cri.remove_pod_sandbox(&pod.id).unwrap();
        }
        assert_nothing_left_soon(&c);
        landed.push(p);
    }
    assert!(
        landed.iter().any(|p| p.mid_create()),
        "no kill landed in the middle of the sandbox's Create: {landed:?}"
    );
}

// ------------------------------------------------------------- containerd restarted

/// containerd restarted under a running ctr container and a running CRI pod: both still
/// run and exec, and both are removed through the API with nothing left.
#[test]
fn containerd_restart_with_running_containers() {
    let mut c = Containerd::start().unwrap();
    let rt = stockade();
    c.ctr_ok(&strs(&run_args(
        &rt,
        &["-d"],
        "survivor",
        &["sleep", "600"],
    )))
    .unwrap();
    c.wait_task_status("survivor", "RUNNING").unwrap();
    let (pod, id) = c
        .cri()
        .unwrap()
        .run_pod_with_app("survivor", rt.cri_handler, &["sleep", "600"])
        .unwrap();
    let mut shims_before = shim_servers(&c);
    shims_before.sort();
    c.restart().unwrap();
    let mut shims_after = shim_servers(&c);
    shims_after.sort();
    assert_eq!(
        shims_after, shims_before,
        "the shims must survive containerd's restart"
    );

    c.wait_task_status("survivor", "RUNNING").unwrap();
    let out = c
        .ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            "after",
            "survivor",
            "echo",
            "ctr here",
        ])
        .unwrap();
    assert_eq!(out.trim(), "ctr here");
    let cri = c.cri().unwrap();
    assert_eq!(
        cri.container_state(&id).unwrap(),
        ContainerState::ContainerRunning
    );
    let out = cri
        .exec_sync(&id, &["echo", "cri here"])
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(out.trim(), "cri here");

    c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "survivor"])
        .unwrap();
    c.wait_task_status("survivor", "STOPPED").unwrap();
    c.ctr_ok(&["tasks", "rm", "survivor"]).unwrap();
    c.ctr_ok(&["containers", "rm", "survivor"]).unwrap();
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    assert_nothing_left(&c);
}

// ---------------------------------------------------------------- 20 pods at once

const PODS: usize = 20;

/// 20 pods (sandbox + one container each) created at once through CRI, one client per
/// thread: all run, each with its own host ID range (from the container's uid_map, the
/// same as in the ID table), then all removed at once with nothing left.
#[test]
fn cri_twenty_pods_at_once() {
    let c = Containerd::start().unwrap();
    let rt = stockade();
    // Connected (and the images seen) before the clock starts.
    let clients: Vec<Cri> = (0..PODS).map(|_| c.cri().unwrap()).collect();
    let started = Instant::now();
    let pods: Vec<(String, String, IdRange, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(n, cri)| {
                let handler = rt.cri_handler;
                s.spawn(move || {
                    let t = Instant::now();
                    let (pod, id) =
                        cri.run_pod_with_app(&format!("many-{n}"), handler, &["sleep", "600"])?;
                    let took = t.elapsed();
                    let pid = cri.container_pid(&id)?;
                    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
                    let e = *parse_id_map(&map)?.first().expect("a uid_map line");
                    assert_eq!(e.inside, 0, "uid_map of {id}: {map}");
                    let range = IdRange {
                        first: u32::try_from(e.outside)?,
                        size: u32::try_from(e.count)?,
                    };
                    anyhow::Ok((pod, id, range, took))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let all = started.elapsed();
    let slowest = pods.iter().map(|p| p.3).max().unwrap_or_default();
    eprintln!("[faults] {PODS} pods (sandbox + container each) created at once in {all:?}; slowest pod {slowest:?}");

    let cri = &clients[0];
    for (pod, id, _, _) in &pods {
        assert_eq!(
            cri.container_state(id).unwrap(),
            ContainerState::ContainerRunning
        );
        let status = cri.pod_sandbox_status(pod).unwrap().status.unwrap();
        assert_eq!(status.state, PodSandboxState::SandboxReady as i32, "{pod}");
    }
    for (i, a) in pods.iter().enumerate() {
        for b in &pods[i + 1..] {
            assert!(
                !a.2.overlaps(&b.2),
                "pods {} and {} share host IDs: {} and {}",
                a.0,
                b.0,
                a.2,
                b.2
            );
        }
    }
    let table = id_table(&c).unwrap();
    for (pod, _, range, _) in &pods {
        let held = table.get(pod).map(|a| a.range);
        assert_eq!(held, Some(*range), "ID table entry of pod {pod}");
    }

    let removing = Instant::now();
    std::thread::scope(|s| {
        for ((pod, _, _, _), cri) in pods.iter().zip(&clients) {
            s.spawn(move || {
                cri.stop_pod_sandbox(pod).unwrap();
                cri.remove_pod_sandbox(pod).unwrap();
            });
        }
    });
    eprintln!(
        "[faults] {PODS} pods removed at once in {:?}",
        removing.elapsed()
    );
    assert!(cri.list_pod_sandboxes().unwrap().is_empty());
    assert_nothing_left(&c);
}

// ------------------------------------------------------ state directory on a full disk

/// A small tmpfs mounted in our own temp dir; unmounted on Drop, also when the test fails.
struct SmallTmpfs {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let tmp = tempfile::Builder::new()
            .prefix("stockade-faults-fullfs-")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap();
        SmallTmpfs { dir, _tmp: tmp }
    }

    /// Write a file until the filesystem is full (ENOSPC), down to the last byte.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        for chunk in [4096usize, 1] {
            let buf = vec![0u8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                        break;
                    }
                }
            }
        }
        path
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("[faults] unmounting {}: {e}", self.dir.display());
        }
    }
}

/// Everything below `dir`: files with their size, directories with None.
fn entries_below(dir: &Path) -> Vec<(PathBuf, Option<u64>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
                out.push((e.path(), None));
            } else {
                out.push((e.path(), Some(md.len())));
            }
        }
    }
    out.sort();
    out
}

/// The shims' state directory on a full filesystem: `ctr run` and RunPodSandbox fail with
/// an error naming the file and "No space left on device", and nothing is left: no ID
/// range, no half-written state file (only the filler and the allocator's empty lock
/// file, which holds no state and is reused by the next allocation).
#[test]
fn state_dir_on_a_full_filesystem() {
    // Declared first: dropped (unmounted) after containerd's teardown.
    let fs = SmallTmpfs::mount("256k");
    let filler = fs.fill();
    let c = Containerd::start_with_state_dir(Some(&fs.dir)).unwrap();
    let rt = stockade();
    let state = fs.dir.display().to_string();

    let out = c.ctr(&strs(&run_args(&rt, &["--rm"], "full", &["true"])));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("[faults] ctr run on a full state dir: {}", err.trim());
    assert!(!out.status.success(), "ctr run succeeded on a full disk");
    assert!(
        err.contains(&state) && err.contains("No space left on device"),
        "the error must name the state directory's file and say the device is full: {err}"
    );

    let cri = c.cri().unwrap();
    let result = cri.run_pod_sandbox(&cri.pod_config("full"), rt.cri_handler);
    let err = format!(
        "{:#}",
        result.expect_err("RunPodSandbox succeeded on a full disk")
    );
    eprintln!("[faults] RunPodSandbox on a full state dir: {err}");
    assert!(
        err.contains(&state) && err.contains("No space left on device"),
        "the error must name the state directory's file and say the device is full: {err}"
    );
    for pod in cri.list_pod_sandboxes().unwrap() {
        cri.stop_pod_sandbox(&pod.id).unwrap();
        cri.remove_pod_sandbox(&pod.id).unwrap();
    }
    ctr_remove(&c, "full");
    assert_nothing_left(&c);

    let lock = c.stockade_state.id_ranges().with_extension("json.lock");
    let entries = entries_below(&fs.dir);
    eprintln!("[faults] left on the full filesystem: {entries:?}");
    // Empty directories and the empty lock file hold no state; any other file would.
    let unexpected: Vec<_> = entries
        .iter()
        .filter(|(p, len)| match len {
            None => false,
            Some(len) => !(p == &filler || (p == &lock && *len == 0)),
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "state files left on the full filesystem: {unexpected:?} (all: {entries:?})"
    );
}
