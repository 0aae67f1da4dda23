//! Real-cgroup tests of the readers, the OOM watcher and the libcgroups managers (run as
//! root; on the hybrid host and inside the cgroup v2 VM).
//!
//! Every test makes its own parent cgroup `stockade-test-<pid>-<n>` in each
//! controller it needs and removes it afterwards, also when it fails. The code
//! under test picks v1 or v2 by detection; this file sets the cgroups up the
//! same way.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::cgroups::metrics as v1pb;
use containerd_shim_protos::cgroups_v2::metrics as v2pb;
use containerd_shim_protos::protobuf::Message;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use stockade_cgroups::{metrics, oom, sample, CgroupMode, Host};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Tests that open eventfd or inotify fds (tokio runtimes included) hold this, so the
/// fd-leak checks see only their own.
static FD_LOCK: Mutex<()> = Mutex::new(());

/// Takes [`FD_LOCK`] and then builds a runtime, in that order.
fn locked_runtime() -> (MutexGuard<'static, ()>, tokio::runtime::Runtime) {
    let guard = FD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (guard, rt)
}

const MIB: u64 = 1 << 20;
/// Generous bound for the watcher to see the end of a removed cgroup; only a
/// hang guard, the tests assert on what arrives, not when.
const HANG_GUARD: Duration = Duration::from_secs(60);
const BUSYBOX: &str = "/bin/busybox";

static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Limits {
    memory: u64,
    pids: u64,
}

/// A container-like cgroup `/<parent>/ctr` under a parent of our own, in every
/// controller the code reads; removed (child, then parent) on drop.
struct TestCgroup {
    mode: CgroupMode,
    /// The container's cgroupsPath, as an OCI spec would carry it.
    cgroups_path: String,
    /// Per hierarchy: (parent dir, container dir).
    dirs: Vec<(PathBuf, PathBuf)>,
}

impl TestCgroup {
    fn new(limits: Limits) -> Self {
        let parent = format!(
            "stockade-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mode = if Host::current().unwrap().is_unified() {
            CgroupMode::V2
        } else {
            CgroupMode::V1
        };
        let roots: Vec<PathBuf> = match mode {
            CgroupMode::V1 => [
                "memory", "pids", "cpu", "cpuacct", "blkio", "freezer", "devices",
            ]
            .iter()
            .map(|c| Path::new(CGROUP_ROOT).join(c))
            .filter(|p| p.is_dir())
            .collect(),
            CgroupMode::V2 => vec![PathBuf::from(CGROUP_ROOT)],
        };
        let mut cg = TestCgroup {
            mode,
            cgroups_path: format!("/{parent}/ctr"),
            dirs: Vec::new(),
        };
        for root in roots {
            let p = root.join(&parent);
            fs::create_dir(&p).unwrap();
            cg.dirs.push((p.clone(), p.join("ctr")));
            if mode == CgroupMode::V2 {
                fs::write(p.join("cgroup.subtree_control"), "+memory +pids +cpu").unwrap();
            }
            fs::create_dir(p.join("ctr")).unwrap();
        }
        match mode {
            CgroupMode::V1 => {
                cg.write(
                    "memory",
                    "memory.limit_in_bytes",
                    &limits.memory.to_string(),
                );
                // Without swap accounting the file is absent and nothing can swap anyway.
                if cg
                    .dir("memory")
                    .join("memory.memsw.limit_in_bytes")
                    .exists()
                {
                    cg.write(
                        "memory",
                        "memory.memsw.limit_in_bytes",
                        &limits.memory.to_string(),
                    );
                }
                cg.write("pids", "pids.max", &limits.pids.to_string());
            }
            CgroupMode::V2 => {
                cg.write("", "memory.max", &limits.memory.to_string());
                if cg.dir("").join("memory.swap.max").exists() {
                    cg.write("", "memory.swap.max", "0");
                }
                cg.write("", "pids.max", &limits.pids.to_string());
            }
        }
        cg
    }

    /// The container directory in the hierarchy of `controller` (ignored on v2).
    fn dir(&self, controller: &str) -> PathBuf {
        match self.mode {
            CgroupMode::V2 => self.dirs[0].1.clone(),
            CgroupMode::V1 => self
                .dirs
                .iter()
                .find(|(p, _)| p.parent().unwrap().ends_with(controller))
                .map(|(_, c)| c.clone())
                .unwrap(),
        }
    }

    fn write(&self, controller: &str, file: &str, value: &str) {
        let path = self.dir(controller).join(file);
        fs::write(&path, value).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Starts `cmd` inside the container cgroup (in every hierarchy) before it execs.
    fn spawn(&self, cmd: &mut Command) -> ChildGuard {
        let procs: Vec<CString> = self
            .dirs
            .iter()
            .map(|(_, c)| CString::new(c.join("cgroup.procs").as_os_str().as_bytes()).unwrap())
            .collect();
        // SAFETY: the hook only calls open/write/close (async-signal-safe) on
        // strings built before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // "0" moves the writing process itself.
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if n != 1 {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
        ChildGuard(Some(cmd.spawn().unwrap()))
    }

    /// Removes the container cgroup now (the parent stays until drop).
    fn remove_container(&self) {
        for (_, c) in &self.dirs {
            rmdir_retry(c);
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for (p, c) in &self.dirs {
            if c.exists() {
                rmdir_retry(c);
            }
            if p.exists() {
                rmdir_retry(p);
            }
        }
    }
}

/// A cgroup whose last task just died can stay busy for a moment.
fn rmdir_retry(dir: &Path) {
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    eprintln!("could not remove test cgroup {}", dir.display());
}

/// Kills and reaps the child (by its PID, through std) if a test fails midway.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    fn wait(mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// fds of this process that are eventfds or inotify instances.
fn watcher_fds() -> Vec<String> {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| t == "anon_inode:[eventfd]" || t == "anon_inode:inotify")
        .collect()
}

#[test]
fn oom_kill_is_reported_once_and_the_watcher_ends_with_the_cgroup() {
    // Serialised with every other fd-creating test of this binary.
    let (_lock, rt) = locked_runtime();
    rt.block_on(oom_kill_is_reported_once());
}

async fn oom_kill_is_reported_once() {
    let fds_before = watcher_fds().len();
    let cg = TestCgroup::new(Limits {
        memory: 16 * MIB,
        pids: 16,
    });
    let mut rx = oom::watch("oom-ctr".to_string(), &cg.cgroups_path).unwrap();
    assert_eq!(watcher_fds().len(), fds_before + 1, "one fd per watcher");

    // dd reads 64 MiB of zeroes into one buffer: every page gets touched.
    let child = cg.spawn(
        Command::new(BUSYBOX)
            .args(["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"])
            .stderr(Stdio::null()),
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "dd was not OOM-killed: {status:?}"
    );

    let first = tokio::time::timeout(HANG_GUARD, rx.recv()).await.unwrap();
    assert_eq!(first.as_deref(), Some("oom-ctr"));

    let sample = sample::sample(&cg.cgroups_path).unwrap();
    assert!(sample.memory.oom_kills >= 1, "{sample:?}");

    // Removing the cgroup ends the watcher: the channel closes with nothing
    // else in it, so exactly one OOM was reported.
    cg.remove_container();
    let rest = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .expect("the OOM watcher did not stop after its cgroup was removed");
    assert_eq!(rest, None, "a second OOM was reported");
    assert_eq!(
        watcher_fds().len(),
        fds_before,
        "the watcher left its fd open"
    );
}

#[test]
fn dropping_the_receiver_stops_the_watcher() {
    let (_lock, rt) = locked_runtime();
    rt.block_on(dropping_the_receiver());
}

async fn dropping_the_receiver() {
    let fds_before = watcher_fds().len();
    let cg = TestCgroup::new(Limits {
        memory: 16 * MIB,
        pids: 16,
    });
    let rx = oom::watch("dropped".to_string(), &cg.cgroups_path).unwrap();
    assert_eq!(watcher_fds().len(), fds_before + 1);
    drop(rx);
    // The task notices the closed channel on its own; wait for its fd to go.
    let closed = tokio::time::timeout(HANG_GUARD, async {
        while watcher_fds().len() != fds_before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the watcher kept its fd after the receiver was dropped"
    );
}

#[test]
fn collect_reads_cpu_memory_and_pids_of_a_running_child() {
    let cg = TestCgroup::new(Limits {
        memory: 32 * MIB,
        pids: 8,
    });
    // Burn a fixed amount of CPU, say so, then wait on stdin.
    let mut child = cg.spawn(
        Command::new(BUSYBOX)
            .args([
                "sh",
                "-c",
                "/bin/busybox dd if=/dev/zero of=/dev/null bs=1M count=2000 2>/dev/null; echo ready; read x || true",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(child.child().stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");

    let sample = sample::sample(&cg.cgroups_path).unwrap();
    assert_eq!(sample.mode, cg.mode);
    assert!(sample.cpu.usage_ns > 0, "{sample:?}");
    assert!(sample.cpu.user_ns + sample.cpu.system_ns > 0, "{sample:?}");
    assert_eq!(sample.memory.memory.limit, Some(32 * MIB), "{sample:?}");
    assert!(sample.memory.memory.usage > 0, "{sample:?}");
    assert_eq!(sample.pids.current, 1, "only the shell is left: {sample:?}");
    assert_eq!(sample.pids.limit, Some(8), "{sample:?}");

    let any = metrics::collect(&cg.cgroups_path).unwrap();
    match cg.mode {
        CgroupMode::V1 => {
            assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
            let m = v1pb::Metrics::parse_from_bytes(&any.value).unwrap();
            assert!(m.cpu.usage.total > 0);
            assert!(!m.cpu.usage.per_cpu.is_empty());
            assert_eq!(m.memory.usage.limit, 32 * MIB);
            assert!(m.memory.usage.usage > 0);
            assert_eq!((m.pids.current, m.pids.limit), (1, 8));
        }
        CgroupMode::V2 => {
            assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
            let m = v2pb::Metrics::parse_from_bytes(&any.value).unwrap();
            assert!(m.cpu.usage_usec > 0);
            assert_eq!(m.memory.usage_limit, 32 * MIB);
            assert!(m.memory.usage > 0);
            assert_eq!((m.pids.current, m.pids.limit), (1, 8));
        }
    }

    drop(child.child().stdin.take());
    let status = child.wait();
    assert!(status.success(), "{status:?}");
}

#[test]
fn collect_on_a_missing_cgroup_names_it() {
    let missing = format!("/stockade-test-{}-missing/ctr", std::process::id());
    let err = metrics::collect(&missing).unwrap_err();
    assert!(
        err.to_string()
            .contains(&missing.trim_start_matches('/').to_string()),
        "{err}"
    );
}

fn resources(memory: i64, pids: i64, quota: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        // memory+swap at the limit, as the hardener leaves it (v1 refuses a memory limit
        // above memory+swap).
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .swap(memory)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(pids).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn frozen(cg: &TestCgroup) -> bool {
    match cg.mode {
        CgroupMode::V2 => fs::read_to_string(cg.dir("").join("cgroup.events"))
            .unwrap()
            .lines()
            .any(|l| l == "frozen 1"),
        CgroupMode::V1 => {
            fs::read_to_string(cg.dir("freezer").join("freezer.state"))
                .unwrap()
                .trim()
                == "FROZEN"
        }
    }
}

#[test]
fn update_pids_freeze_and_sweep_a_running_child() {
    let host = Host::current().unwrap();
    let cg = TestCgroup::new(Limits {
        memory: 32 * MIB,
        pids: 8,
    });
    let mut child = cg.spawn(Command::new(BUSYBOX).args(["sleep", "600"]));
    let pid = child.child().id() as i32;
    assert_eq!(host.pids(&cg.cgroups_path).unwrap(), vec![pid]);

    host.apply(&cg.cgroups_path, &resources(48 << 20, 16, 50_000))
        .unwrap();
    let sample = host.sample(&cg.cgroups_path).unwrap();
    assert_eq!(sample.memory.memory.limit, Some(48 * MIB), "{sample:?}");
    assert_eq!(sample.pids.limit, Some(16), "{sample:?}");
    let cpu_max = match cg.mode {
        CgroupMode::V2 => fs::read_to_string(cg.dir("").join("cpu.max")).unwrap(),
        CgroupMode::V1 => fs::read_to_string(cg.dir("cpu").join("cpu.cfs_quota_us")).unwrap(),
    };
    assert!(cpu_max.starts_with("50000"), "{cpu_max}");

    host.freeze(&cg.cgroups_path, true).unwrap();
    assert!(frozen(&cg), "not frozen after freeze");
    host.freeze(&cg.cgroups_path, false).unwrap();
    assert!(!frozen(&cg), "still frozen after thaw");

    // A frozen cgroup is thawed, emptied and removed by the sweep.
    host.freeze(&cg.cgroups_path, true).unwrap();
    let left = host.kill_and_remove(&cg.cgroups_path, Duration::from_secs(10));
    assert!(left.is_empty(), "left: {left:?}");
    assert_eq!(child.wait().signal(), Some(libc::SIGKILL));
    assert!(!cg.dir("memory").exists());
}

#[test]
fn managers_name_bad_paths_and_missing_cgroups() {
    let host = Host::current().unwrap();
    let missing = format!("/stockade-test-{}-gone/ctr", std::process::id());
    let err = host.pids(&missing).unwrap_err().to_string();
    assert!(err.contains(&missing), "{err}");
    let err = host
        .apply("relative", &resources(1 << 30, 10, 10_000))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("relative") && err.contains("absolute"),
        "{err}"
    );
    let err = host.freeze("/", true).unwrap_err().to_string();
    assert!(err.contains("root cgroup"), "{err}");
    if host.why_not_systemd().is_some() {
        let err = host
            .apply("system.slice:stockade:x", &resources(1 << 30, 10, 10_000))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("system.slice:stockade:x") && err.contains("systemd"),
            "{err}"
        );
    }
    // Nothing to sweep is not an error, and nothing is made.
    assert!(host
        .kill_and_remove(&missing, Duration::from_secs(1))
        .is_empty());
}
