//! End to end (root): real cgroups, a real seccomp filter with denial logging, the
//! exporter scraped over HTTP, its output checked by `promtool check metrics`.
//!
//! The test makes its own cgroup parent `stockade-test-<pid>-<n>` in every controller it
//! reads and removes it afterwards, also on failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use stockade_monitor::cgroup::CgroupLayout;
use stockade_monitor::{http, Monitor, MonitorConfig, SeccompSource};
use stockade_runtime::audit::{AuditEvent, AuditLog};
use stockade_runtime::hardener::{Refusal, Rule};
use stockade_runtime::idrange::IdAllocator;
use stockade_runtime::node_state::{self, ContainerRecord};
use stockade_runtime::pod::PodIdentity;
use stockade_runtime::profile::IdPoolSettings;
use stockade_runtime::seccomp;

/// Only a guard against hanging; the assertions are on values.
const HANG_GUARD: Duration = Duration::from_secs(60);
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// `<parent>/<sandbox>/<container>` cgroups under a parent of our own, in each controller
/// the exporter reads; emptied and removed on drop.
struct TestCgroups {
    layout: CgroupLayout,
    parent: String,
    /// Absolute cgroup paths created, parents first.
    paths: Vec<String>,
}

impl TestCgroups {
    fn new() -> Self {
        let layout = CgroupLayout::detect(Path::new(CGROUP_ROOT)).unwrap();
        let parent = format!(
            "/stockade-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        TestCgroups {
            layout,
            parent,
            paths: Vec::new(),
        }
    }

    fn controllers(&self) -> &'static [&'static str] {
        match self.layout {
            CgroupLayout::V1 { .. } => &["memory", "cpu", "pids"],
            CgroupLayout::V2 { .. } => &["unified"],
        }
    }

    fn dir(&self, controller: &str, path: &str) -> PathBuf {
        self.layout.dir(controller, path)
    }

    /// Creates `<parent>/<sandbox>/<container>`; returns its cgroupsPath.
    fn container(&mut self, sandbox: &str, container: &str) -> String {
        let pod = format!("{}/{sandbox}", self.parent);
        let path = format!("{pod}/{container}");
        for p in [self.parent.clone(), pod, path.clone()] {
            if self.paths.contains(&p) {
                continue;
            }
            for c in self.controllers() {
                fs::create_dir(self.dir(c, &p)).unwrap();
            }
            if let CgroupLayout::V2 { .. } = self.layout {
                // Controllers for the children (the leaf stays without any).
                if p != path {
                    fs::write(
                        self.dir("", &p).join("cgroup.subtree_control"),
                        "+memory +cpu +pids",
                    )
                    .unwrap();
                }
            }
            self.paths.push(p);
        }
        path
    }

    fn add_process(&self, path: &str, pid: i32) {
        for c in self.controllers() {
            fs::write(self.dir(c, path).join("cgroup.procs"), pid.to_string()).unwrap();
        }
    }

    fn limit_memory(&self, path: &str, bytes: u64) {
        let file = match self.layout {
            CgroupLayout::V1 { .. } => "memory.limit_in_bytes",
            CgroupLayout::V2 { .. } => "memory.max",
        };
        fs::write(self.dir("memory", path).join(file), bytes.to_string()).unwrap();
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        for path in self.paths.iter().rev() {
            for c in self.controllers() {
                let dir = self.dir(c, path);
                // Move stragglers out (to the hierarchy's root), then remove.
                if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.lines() {
                        let _ = fs::write(self.dir(c, "/").join("cgroup.procs"), pid);
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while fs::remove_dir(&dir).is_err() && dir.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// A forked child that waits on `go` before acting and on `done` before exiting; killed
/// and reaped on drop.
struct Child {
    pid: i32,
    go: i32,
    done: i32,
    reaped: Option<i32>,
}

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

/// Blocks reading one byte (or EOF); async-signal-safe.
fn wait_fd(fd: i32) {
    let mut b = 0u8;
    // SAFETY: reading into a live one-byte buffer.
    while unsafe { libc::read(fd, &mut b as *mut u8 as *mut libc::c_void, 1) } < 0 {}
}

impl Child {
    /// Forks; the child runs `body` after `go` and exits with its return value after `done`.
    /// `body` must only make raw system calls (the parent is multi-threaded).
    fn spawn(body: impl FnOnce() -> i32) -> Child {
        let (go_r, go_w) = pipe();
        let (done_r, done_w) = pipe();
        // SAFETY: the child only calls async-signal-safe functions (read, raw syscalls,
        // seccomp installation that does not allocate, _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            wait_fd(go_r);
            let code = body();
            wait_fd(done_r);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: closing our copies of the child's ends.
        unsafe {
            libc::close(go_r);
            libc::close(done_r);
        }
        Child {
            pid,
            go: go_w,
            done: done_w,
            reaped: None,
        }
    }

    fn go(&self) {
        // SAFETY: writing one byte from a live buffer to our pipe.
        assert_eq!(
            unsafe { libc::write(self.go, b"g".as_ptr() as *const _, 1) },
            1
        );
    }

    /// Lets the child exit and returns its wait status. A byte, not EOF: the other forked
    /// children hold copies of this pipe's write end.
    fn finish(&mut self) -> i32 {
        // SAFETY: writing one byte from a live buffer to our pipe, then closing our fd.
        unsafe {
            assert_eq!(libc::write(self.done, b"d".as_ptr() as *const _, 1), 1);
            libc::close(self.done);
        }
        self.done = -1;
        let deadline = Instant::now() + HANG_GUARD;
        let mut status = 0;
        // SAFETY: polling our own child.
        while unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == 0 {
            assert!(
                Instant::now() < deadline,
                "child {} does not exit",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.reaped = Some(status);
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            // SAFETY: signalling and reaping our own, not yet reaped child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        // SAFETY: closing our own fds (-1 when already closed).
        unsafe {
            libc::close(self.go);
            if self.done >= 0 {
                libc::close(self.done);
            }
        }
    }
}

fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// The value of the sample whose line starts with `series` (name and labels).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(monitor: &Monitor) -> String {
    let (status, body) = http::get(monitor.local_addr(), "/metrics").unwrap();
    assert_eq!(status, 200);
    body
}

/// Scrapes until `series` reaches `at_least`.
fn scrape_until(monitor: &Monitor, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let body = scrape(monitor);
        if value(&body, series).is_some_and(|v| v >= at_least) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn promtool_check(metrics: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{}{}\n---\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn record(id: &str, sandbox: &str, name: &str, cgroups_path: &str, pid: i32) -> ContainerRecord {
    let pod = PodIdentity {
        sandbox_id: sandbox.into(),
        is_sandbox: false,
        namespace: Some("monitor-test".into()),
        pod_name: Some(format!("pod-{sandbox}")),
        container_name: Some(name.into()),
        image: None,
    };
    let mut record = ContainerRecord::new(id, &pod, "e2e", cgroups_path, pid, None);
    record.start_latency_ms = Some(180.0);
    record
}

#[test]
fn denials_ooms_and_refusals_reach_the_exporter() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("containers");
    let trail = tmp.path().join("log/audit.jsonl");
    let audit = AuditLog::open(&trail).unwrap();

    let id_state = tmp.path().join("idranges.json");
    let pool = IdPoolSettings {
        first_id: 1 << 30,
        size: 65536 * 4,
        ids_per_pod: 65536,
    };
    let monitor = Monitor::start(MonitorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: state.clone(),
        cgroup_root: CGROUP_ROOT.into(),
        audit_trails: vec![trail.clone()],
        profiles: vec!["e2e".into()],
        id_pools: vec![pool],
        id_state: Some(id_state.clone()),
        seccomp: SeccompSource::Netlink,
    })
    .unwrap();
    let (status, body) = http::get(monitor.local_addr(), "/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let sandbox = format!("sb{}", std::process::id());
    let pod = format!("pod-{sandbox}");
    let denied = |syscall: &str| {
        format!("stockade_seccomp_denials_total{{namespace=\"monitor-test\",pod=\"{pod}\",container=\"denier\",syscall=\"{syscall}\",action=\"errno\"}}")
    };
    let oom_series = format!(
        "stockade_oom_kills_total{{namespace=\"monitor-test\",pod=\"{pod}\",container=\"oomer\"}}"
    );
    let refused = "stockade_policy_refusals_total{rule=\"privileged\"}";

    let before = scrape(&monitor);
    assert_eq!(value(&before, &denied("keyctl")), None);
    assert_eq!(value(&before, refused), Some(0.0));
    assert_eq!(
        value(&before, "stockade_containers_running{profile=\"e2e\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&before, "stockade_container_start_latency_seconds_count"),
        Some(0.0)
    );
    assert_eq!(value(&before, "stockade_id_ranges_in_use"), Some(0.0));
    assert_eq!(value(&before, "stockade_id_ranges_free"), Some(4.0));

    // A refused pod: the audit line, and the counter for its rule.
    let identity = PodIdentity {
        sandbox_id: "refused-sb".into(),
        is_sandbox: true,
        namespace: Some("monitor-test".into()),
        pod_name: Some("privileged-pod".into()),
        container_name: None,
        image: None,
    };
    let refusal = Refusal {
        rule: Rule::Privileged,
        reason: "privileged containers are not allowed".into(),
    };
    audit
        .record(&AuditEvent::refused(
            "refused-sb",
            &identity,
            "e2e",
            &refusal,
        ))
        .unwrap();
    let text = fs::read_to_string(&trail).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(line["event"], "refused");
    assert_eq!(line["rule"], "privileged");
    assert_eq!(line["pod"], "privileged-pod");

    let mut cgroups = TestCgroups::new();
    let denier_path = cgroups.container(&sandbox, "denier");
    let oomer_path = cgroups.container(&sandbox, "oomer");
    cgroups.limit_memory(&oomer_path, 16 << 20);

    // The denier: the default filter with logging, then denied calls.
    let profile_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/seccomp/default.json");
    let filter = seccomp::compile(&seccomp::load_file(&profile_file).unwrap()).unwrap();
    let mut denier = Child::spawn(|| {
        if filter.install(true).is_err() {
            return 10;
        }
        for _ in 0..5 {
            // SAFETY: raw syscall with integer arguments.
            if unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) } != -1 {
                return 11;
            }
        }
        for _ in 0..3 {
            // SAFETY: raw syscall with an integer argument.
            if unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) } != -1 {
                return 12;
            }
        }
        0
    });
    // The oomer: its init stays; a process it forks is OOM-killed in the container.
    let mut oomer = Child::spawn(|| {
        // SAFETY: fork in a single-threaded child; the grandchild only makes raw calls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let len = 256 << 20;
            // SAFETY: anonymous private mapping; touched only within its length.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                ) as *mut u8;
                if p as *mut libc::c_void == libc::MAP_FAILED {
                    libc::_exit(20);
                }
                for off in (0..len).step_by(4096) {
                    std::ptr::write_volatile(p.add(off), 1);
                }
                libc::_exit(21)
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
            0
        } else {
            22
        }
    });

    // The pod's ID range, as the shim allocates it.
    IdAllocator::open(&id_state, pool)
        .unwrap()
        .allocate(&sandbox)
        .unwrap();
    cgroups.add_process(&denier_path, denier.pid);
    cgroups.add_process(&oomer_path, oomer.pid);
    let sb = sandbox.as_str();
    node_state::write(
        &state,
        &record("denier-1", sb, "denier", &denier_path, denier.pid),
    )
    .unwrap();
    node_state::write(
        &state,
        &record("oomer-1", sb, "oomer", &oomer_path, oomer.pid),
    )
    .unwrap();
    denier.go();
    oomer.go();

    scrape_until(&monitor, &denied("keyctl"), 5.0);
    scrape_until(&monitor, &denied("unshare"), 3.0);
    let after = scrape_until(&monitor, &oom_series, 1.0);
    // Exactly what the child did: nobody else is in these cgroups.
    assert_eq!(value(&after, &denied("keyctl")), Some(5.0), "{after}");
    assert_eq!(value(&after, &denied("unshare")), Some(3.0), "{after}");
    assert_eq!(value(&after, &oom_series), Some(1.0), "{after}");
    assert_eq!(value(&after, refused), Some(1.0), "{after}");
    assert_eq!(
        value(&after, "stockade_containers_running{profile=\"e2e\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&after, "stockade_container_start_latency_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        value(
            &after,
            "stockade_container_start_latency_seconds_bucket{le=\"0.25\"}"
        ),
        Some(2.0)
    );
    assert_eq!(value(&after, "stockade_id_ranges_in_use"), Some(1.0));
    assert_eq!(value(&after, "stockade_id_ranges_free"), Some(3.0));
    assert!(
        value(
            &after,
            &format!("stockade_cpu_throttled_seconds_total{{namespace=\"monitor-test\",pod=\"{pod}\",container=\"denier\"}}")
        )
        .is_some(),
        "{after}"
    );
    promtool_check(&after);
    println!("{after}");

    assert_eq!(exit_code(denier.finish()), Some(0), "denier child failed");
    assert_eq!(
        exit_code(oomer.finish()),
        Some(0),
        "no OOM kill in the oomer"
    );
    node_state::remove(&state, "denier-1").unwrap();
    node_state::remove(&state, "oomer-1").unwrap();
    let gone = scrape(&monitor);
    assert_eq!(
        value(&gone, "stockade_containers_running{profile=\"e2e\"}"),
        Some(0.0)
    );
    monitor.stop();
    drop(cgroups);
}
