//! Escape probes, each run in a default runc container (the baseline: where runc lets an
//! attempt through, the probe shows it really tests something) and in a Stockade
//! container (where every attempt must be stopped). Prints the report table and writes
//! it to `target/security-report.md` (`make security-report` shows it).

use k8s_cri::v1::NamespaceMode;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use stockade_integration::cgroups::process_cgroups;
use stockade_integration::exec::wait_for;
use stockade_integration::probes::{
    self, describe, install_probe_images, parse_probe_lines, run_probe, Outcome, Row, EVIL_IMAGE,
};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::{Containerd, Cri};
use stockade_runtime::profile::Profile;
use stockade_runtime::seccomp;

#[path = "security/rules.rs"]
mod rules;

/// What a probe gave under one runtime.
#[derive(Debug, Clone)]
struct Res {
    outcome: Option<Outcome>,
    text: String,
}

impl Res {
    fn of(outcome: Outcome, text: impl Into<String>) -> Res {
        Res {
            outcome: Some(outcome),
            text: text.into(),
        }
    }
    /// The harness or runtime failed in a way that is neither "allowed" nor "blocked".
    fn error(text: impl Into<String>) -> Res {
        Res {
            outcome: None,
            text: format!("ERROR: {}", text.into()),
        }
    }
    fn cell(&self) -> String {
        match self.outcome {
            Some(o) => format!("{}: {}", o.word(), self.text),
            None => self.text.clone(),
        }
    }
}

type Results = BTreeMap<String, Res>;

/// A probe of the table: its name, whether runc's default container must let it through
/// (else the table says why runc stops it too), the guards that stop it under Stockade,
/// the syscall the seccomp guard is checked against, whether Stockade runs it with the
/// strict profile, and the policy rule its refusal must name.
struct Spec {
    name: &'static str,
    runc_allows: bool,
    guard: &'static str,
    syscall: Option<(i64, [u64; 6])>,
    strict: bool,
    rule: Option<&'static str>,
    /// Why runc stops it too, when not by its defaults.
    runc_note: Option<&'static str>,
}

fn specs() -> Vec<Spec> {
    let s = |name, runc_allows, guard, syscall| Spec {
        name,
        runc_allows,
        guard,
        syscall,
        strict: false,
        rule: None,
        runc_note: None,
    };
    let nr = |n: libc::c_long| -> i64 { n };
    vec![
        s(
            "userns",
            true,
            "seccomp",
            Some((
                nr(libc::SYS_unshare),
                [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
            )),
        ),
        s(
            "mount-tmpfs",
            false,
            "seccomp; capabilities (no SYS_ADMIN)",
            Some((nr(libc::SYS_mount), [0; 6])),
        ),
        s(
            "release-agent",
            false,
            "seccomp (mount); capabilities; /sys/fs/cgroup read-only",
            Some((nr(libc::SYS_mount), [0; 6])),
        ),
        s(
            "af-packet",
            true,
            "capabilities (no NET_RAW)",
            Some((nr(libc::SYS_socket), [17, 3, 768, 0, 0, 0])),
        ),
        s(
            "af-vsock",
            true,
            "seccomp (socket family rule)",
            Some((nr(libc::SYS_socket), [40, 1, 0, 0, 0, 0])),
        ),
        s(
            "af-alg",
            false,
            "seccomp (socket family rule)",
            Some((nr(libc::SYS_socket), [38, 5, 0, 0, 0, 0])),
        ),
        s(
            "keyctl",
            true,
            "seccomp",
            Some((nr(libc::SYS_keyctl), [1, 0, 0, 0, 0, 0])),
        ),
        s("bpf", false, "seccomp", Some((nr(libc::SYS_bpf), [0; 6]))),
        s(
            "perf_event_open",
            true,
            "seccomp",
            Some((nr(libc::SYS_perf_event_open), [0; 6])),
        ),
        s(
            "userfaultfd",
            true,
            "seccomp",
            Some((nr(libc::SYS_userfaultfd), [0o2000001, 0, 0, 0, 0, 0])),
        ),
        s(
            "io_uring_setup",
            true,
            "seccomp",
            Some((nr(libc::SYS_io_uring_setup), [4, 0, 0, 0, 0, 0])),
        ),
        s("sysrq-trigger", false, "read-only path", None),
        s("kcore", false, "masked path", None),
        s("setuid", false, "no_new_privs", None),
        s(
            "proc-exe-overwrite",
            false,
            "userns (container root is an unprivileged host UID)",
            None,
        ),
        s(
            "cwd-leaked-fd",
            false,
            "runtime: no host fd reaches the container; cwd checked",
            None,
        ),
        s(
            "devnull-symlink",
            false,
            "runtime: /dev is a fresh tmpfs, symlink not followed",
            None,
        ),
        s(
            "signal-other-pod",
            true,
            "policy rule foreign-namespace (no joining another pod's PID namespace); \
             behind it, userns (pods have disjoint host ID ranges)",
            None,
        ),
        s(
            "ptrace-other-pod",
            true,
            "policy rule foreign-namespace; behind it, userns and ptrace checks",
            None,
        ),
        s(
            "host-netns-by-path",
            true,
            "policy rule foreign-namespace (a /proc/PID/ns path of a process outside the pod)",
            None,
        ),
        s(
            "host-netns-pinned",
            true,
            "policy rule host-network (a pinned namespace file is checked for the host's identity)",
            None,
        ),
        s("fork-bomb", true, "cgroup pids (default pids.max)", None),
        s(
            "memory-bomb",
            true,
            "cgroup memory (default limit), OOM kill + TaskOOM event",
            None,
        ),
        s("cpu-hog", true, "cgroup cpu (default CFS quota)", None),
        s("privileged-pod", true, "policy rule `privileged`", None),
        s("host-network-pod", true, "policy rule `host-network`", None),
        s("host-pid-pod", true, "policy rule `host-pid`", None),
        s("host-ipc-pod", true, "policy rule `host-ipc`", None),
        s(
            "untrusted-registry",
            true,
            "policy rule `untrusted-registry`",
            None,
        ),
    ]
    .into_iter()
    .chain(rules::specs())
    .collect()
}

fn lines_into(results: &mut Results, out: &Output, expected: &[&str], what: &str) {
    let lines = parse_probe_lines(&String::from_utf8_lossy(&out.stdout));
    for name in expected {
        let res = match lines.iter().find(|l| l.name == *name) {
            Some(l) => Res::of(l.outcome, l.detail.clone()),
            None => Res::error(format!("{what}: no result; {}", describe(out))),
        };
        results.insert(name.to_string(), res);
    }
}

const SYSCALL_PROBES: [&str; 13] = [
    "userns",
    "mount-tmpfs",
    "release-agent",
    "af-packet",
    "af-vsock",
    "af-alg",
    "keyctl",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "sysrq-trigger",
    "kcore",
];

fn label(rt: &TestRuntime) -> &'static str {
    if rt.hardened() {
        "stk"
    } else {
        "runc"
    }
}

/// The probes that run through `ctr`.
fn ctr_probes(c: &Containerd, rt: &TestRuntime, canary: &Path, r: &mut Results) {
    let l = label(rt);
    let out = run_probe(c, rt, &[], &format!("{l}-sys"), &["/probe", "all"]);
    lines_into(r, &out, &SYSCALL_PROBES, "probe all");

    let out = run_probe(
        c,
        rt,
        &[],
        &format!("{l}-suid"),
        &["/probe", "setuid", "/probe-suid"],
    );
    lines_into(r, &out, &["setuid"], "setuid");

    r.insert("proc-exe-overwrite".into(), exe_overwrite(c, rt));
    r.insert("cwd-leaked-fd".into(), cwd_leak(c, rt, canary));

    let before = std::fs::read(canary).unwrap_or_default();
    let out = run_probe(c, rt, &[], &format!("{l}-null"), &["/probe", "devnull"]);
    lines_into(r, &out, &["devnull-symlink"], "devnull");
    if std::fs::read(canary).unwrap_or_default() != before {
        r.insert(
            "devnull-symlink".into(),
            Res::of(
                Outcome::Allowed,
                "the host file behind the image's /dev/null was written",
            ),
        );
    }

    let (sig, ptr) = other_pod(c, rt);
    r.insert("signal-other-pod".into(), sig);
    r.insert("ptrace-other-pod".into(), ptr);
    let (by_path, pinned) = host_netns(c, rt);
    r.insert("host-netns-by-path".into(), by_path);
    r.insert("host-netns-pinned".into(), pinned);
    r.insert("fork-bomb".into(), fork_bomb(c, rt));
    r.insert("memory-bomb".into(), memory_bomb(c, rt));
    r.insert("cpu-hog".into(), cpu_hog(c, rt));
}

/// CVE-2019-5736 class: the container watches for the runtime's process while execs run.
fn exe_overwrite(c: &Containerd, rt: &TestRuntime) -> Res {
    let id = format!("{}-exe", label(rt));
    let args = probes::ctr_run_args(rt, &["--rm"], &id, &["/probe", "exe-watch", "6"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = match c.spawn_ctr(&refs) {
        Ok(ch) => ch,
        Err(e) => return Res::error(format!("{e:#}")),
    };
    if let Err(e) = c.wait_task_status(&id, "RUNNING") {
        let _ = child.kill();
        let _ = child.wait();
        return Res::error(format!("{e:#}"));
    }
    let mut exec_errors = 0;
    for i in 0..15 {
        let out = c.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            &format!("x{i}"),
            &id,
            "/bin/true",
        ]);
        if !out.status.success() {
            exec_errors += 1;
        }
    }
    let mut stdout = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    let _ = child.wait();
    let lines = parse_probe_lines(&stdout);
    match lines.first() {
        Some(l) => Res::of(
            l.outcome,
            format!("{} (15 execs, {exec_errors} failed)", l.detail),
        ),
        None => Res::error(format!("no result: {stdout}")),
    }
}

/// CVE-2024-21626 class: start with cwd /proc/self/fd/N for the fds a runtime may leak.
fn cwd_leak(c: &Containerd, rt: &TestRuntime, canary: &Path) -> Res {
    let canary = canary.display().to_string();
    let (mut refused, mut inside) = (Vec::new(), Vec::new());
    for n in 3..=9 {
        let cwd = format!("/proc/self/fd/{n}");
        let id = format!("{}-cwd{n}", label(rt));
        let out = run_probe(c, rt, &["--cwd", &cwd], &id, &["/probe", "cwd", &canary]);
        let lines = parse_probe_lines(&String::from_utf8_lossy(&out.stdout));
        match lines.first() {
            Some(l) if l.outcome == Outcome::Allowed => {
                return Res::of(Outcome::Allowed, format!("fd {n}: {}", l.detail))
            }
            Some(_) => inside.push(n),
            None if !out.status.success() => refused.push(n),
            None => return Res::error(format!("fd {n}: {}", describe(&out))),
        }
        // A refused start may leave the container record behind.
        let _ = c.ctr(&["containers", "rm", &id]);
    }
    Res::of(
        Outcome::Blocked,
        format!("start refused for fds {refused:?}, cwd inside the container for {inside:?}"),
    )
}

/// Signal and ptrace another pod's process from a container that shares its PID
/// namespace (so the process is visible at all).
fn other_pod(c: &Containerd, rt: &TestRuntime) -> (Res, Res) {
    let a = format!("{}-victim", label(rt));
    let b = format!("{}-attacker", label(rt));
    let args = probes::ctr_run_args(rt, &["-d"], &a, &["sleep", "600"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Err(e) = c.ctr_ok(&refs) {
        let e = Res::error(format!("victim: {e:#}"));
        return (e.clone(), e);
    }
    let result = (|| {
        c.wait_task_status(&a, "RUNNING")
            .map_err(|e| format!("{e:#}"))?;
        let (pid, _) = c.task(&a).map_err(|e| format!("{e:#}"))?;
        let ns = format!("pid:/proc/{pid}/ns/pid");
        let out = run_probe(c, rt, &["--with-ns", &ns], &b, &["/probe", "signal", "1"]);
        let lines = parse_probe_lines(&String::from_utf8_lossy(&out.stdout));
        if lines.is_empty() {
            let _ = c.ctr(&["containers", "rm", &b]);
            if out.status.success() {
                return Err(describe(&out));
            }
            let why = String::from_utf8_lossy(&out.stderr);
            let why = why.lines().last().unwrap_or("").to_string();
            let r = Res::of(
                Outcome::Blocked,
                format!("runtime refused to start it: {why}"),
            );
            return Ok((r.clone(), r));
        }
        let get = |n: &str| {
            lines
                .iter()
                .find(|l| l.name == n)
                .map(|l| Res::of(l.outcome, l.detail.clone()))
                .unwrap_or_else(|| Res::error("no result"))
        };
        Ok((get("signal-other-pod"), get("ptrace-other-pod")))
    })();
    let _ = c.ctr(&["tasks", "kill", "-s", "SIGKILL", &a]);
    let _ = c.wait_task_status(&a, "STOPPED");
    let _ = c.ctr(&["tasks", "rm", &a]);
    let _ = c.ctr(&["containers", "rm", &a]);
    result.unwrap_or_else(|e| (Res::error(e.clone()), Res::error(e)))
}

/// Join the host's network namespace by naming it as a namespace path instead of asking
/// for no network namespace at all (which the host-network rule refuses by its absence):
/// `ctr run --with-ns network:/proc/PID/ns/net` (PID: our containerd's), and the same
/// namespace pinned by a bind mount outside /proc, as CNI pins a pod's.
fn host_netns(c: &Containerd, rt: &TestRuntime) -> (Res, Res) {
    use std::os::unix::fs::MetadataExt;
    let Some(pid) = c.pid() else {
        let e = Res::error("containerd is not running");
        return (e.clone(), e);
    };
    let host = format!("/proc/{pid}/ns/net");
    let ino = match std::fs::metadata(&host) {
        Ok(md) => md.ino(),
        Err(e) => {
            let e = Res::error(format!("{host}: {e}"));
            return (e.clone(), e);
        }
    };
    let by_path = join_netns(c, rt, &host, ino, "netns");
    let pinned = c.dir.join(format!("{}-pinned-netns", label(rt)));
    let bound = std::fs::write(&pinned, b"")
        .map_err(|e| e.to_string())
        .and_then(|()| {
            nix::mount::mount(
                Some(Path::new(&host)),
                &pinned,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind {host} on {}: {e}", pinned.display()))
        });
    let pinned_res = match bound {
        Ok(()) => {
            let r = join_netns(c, rt, &pinned.display().to_string(), ino, "pinned");
            let _ = nix::mount::umount2(&pinned, nix::mount::MntFlags::MNT_DETACH);
            r
        }
        Err(e) => Res::error(e),
    };
    let _ = std::fs::remove_file(&pinned);
    (by_path, pinned_res)
}

fn join_netns(c: &Containerd, rt: &TestRuntime, path: &str, ino: u64, tag: &str) -> Res {
    let id = format!("{}-{tag}", label(rt));
    let ns = format!("network:{path}");
    let out = run_probe(
        c,
        rt,
        &["--with-ns", &ns],
        &id,
        &["/probe", "netns", &ino.to_string()],
    );
    let lines = parse_probe_lines(&String::from_utf8_lossy(&out.stdout));
    match lines.first() {
        Some(l) => Res::of(l.outcome, l.detail.clone()),
        None if !out.status.success() => {
            let _ = c.ctr(&["containers", "rm", &id]);
            let why = String::from_utf8_lossy(&out.stderr);
            Res::of(
                Outcome::Blocked,
                format!(
                    "runtime refused to start it: {}",
                    why.lines().last().unwrap_or("")
                ),
            )
        }
        None => Res::error(describe(&out)),
    }
}

/// Fork 1500 processes (above Stockade's default pids limit of 1024); then the node
/// must still fork and containerd still answer.
fn fork_bomb(c: &Containerd, rt: &TestRuntime) -> Res {
    let out = run_probe(
        c,
        rt,
        &[],
        &format!("{}-fork", label(rt)),
        &["/probe", "forkbomb", "1500"],
    );
    let lines = parse_probe_lines(&String::from_utf8_lossy(&out.stdout));
    let host_ok = std::process::Command::new("true")
        .status()
        .is_ok_and(|s| s.success());
    let ctr_ok = c.ctr_ok(&["version"]).is_ok();
    match lines.first() {
        Some(l) => Res::of(
            l.outcome,
            format!(
                "{}; node healthy afterwards: host fork {}, containerd {}",
                l.detail,
                if host_ok { "ok" } else { "FAILED" },
                if ctr_ok { "ok" } else { "FAILED" }
            ),
        ),
        None => Res::error(describe(&out)),
    }
}

/// Touch 1.5 GiB (above Stockade's default 1 GiB limit): OOM-killed in its own cgroup,
/// with a /tasks/oom event.
fn memory_bomb(c: &Containerd, rt: &TestRuntime) -> Res {
    let id = format!("{}-mem", label(rt));
    let mut events = match c.spawn_ctr(&["events"]) {
        Ok(e) => e,
        Err(e) => return Res::error(format!("{e:#}")),
    };
    let stdout = events.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        if let Some(s) = stdout {
            for line in std::io::BufReader::new(s).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }
    });
    let out = run_probe(c, rt, &[], &id, &["/probe", "membomb", "1536"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let reached = text
        .lines()
        .filter_map(|l| l.strip_prefix("MEM "))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let lines = parse_probe_lines(&text);
    let mut oom_event = false;
    let deadline = Instant::now() + Duration::from_secs(if lines.is_empty() { 20 } else { 2 });
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("/tasks/oom") && line.contains(&id) {
            oom_event = true;
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    match lines.first() {
        Some(l) => Res::of(l.outcome, l.detail.clone()),
        None if !out.status.success() => Res::of(
            Outcome::Blocked,
            format!(
                "killed after {reached} MiB (ctr exit {:?}); TaskOOM event: {}",
                out.status.code(),
                if oom_event { "yes" } else { "NO" }
            ),
        ),
        None => Res::error(describe(&out)),
    }
}

/// CFS quota and throttling count of a cgroup (v1 or v2).
fn cpu_quota_and_throttled(pid: i32) -> Option<(String, u64)> {
    let cg = process_cgroups(pid).ok()?;
    let quota = if cg.v2 {
        std::fs::read_to_string(cg.cpu.join("cpu.max"))
            .ok()?
            .trim()
            .to_string()
    } else {
        let q = std::fs::read_to_string(cg.cpu.join("cpu.cfs_quota_us")).ok()?;
        let p = std::fs::read_to_string(cg.cpu.join("cpu.cfs_period_us")).ok()?;
        format!("{} {}", q.trim(), p.trim())
    };
    let stat = std::fs::read_to_string(cg.cpu.join("cpu.stat")).ok()?;
    let throttled = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Some((quota, throttled))
}

/// Two workers spin for 4 s: under a quota of one core they are throttled.
/// Two workers spin for 4 s. Blocked: the CFS quota is set and throttled them. A busy
/// node can keep them under the quota without any throttling (neither proof nor
/// disproof), so such a run is repeated, up to three times.
fn cpu_hog(c: &Containerd, rt: &TestRuntime) -> Res {
    let mut inconclusive = Vec::new();
    for attempt in 0..3 {
        let run = cpu_hog_once(c, rt, attempt);
        let (quota, throttled, used) = match run {
            Ok(v) => v,
            Err(e) => return e,
        };
        let limited = !quota.starts_with("-1") && !quota.starts_with("max");
        let cores = cores_used(&used);
        let quota_cores = quota_cores(&quota);
        if limited && throttled > 0 {
            return Res::of(
                Outcome::Blocked,
                format!("quota {quota}: throttled {throttled} times; {used}"),
            );
        }
        let over_quota = match (cores, quota_cores) {
            (Some(used), Some(q)) => used > q + 0.1,
            _ => true,
        };
        if !limited || over_quota {
            return Res::of(
                Outcome::Allowed,
                format!("quota {quota}, throttled {throttled} times; {used}"),
            );
        }
        inconclusive.push(format!("quota {quota}, throttled 0 times; {used}"));
    }
    Res::error(format!(
        "the node was too busy for the hog to reach its quota in 3 runs: {}",
        inconclusive.join(" | ")
    ))
}

/// One run: the cgroup's quota and throttle count as last seen, and the probe's report.
fn cpu_hog_once(
    c: &Containerd,
    rt: &TestRuntime,
    attempt: u32,
) -> Result<(String, u64, String), Res> {
    let id = format!("{}-cpu{attempt}", label(rt));
    let args = probes::ctr_run_args(rt, &["--rm"], &id, &["/probe", "cpuhog", "2", "4"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = c
        .spawn_ctr(&refs)
        .map_err(|e| Res::error(format!("{e:#}")))?;
    let pid = wait_for("the cpu hog to run", Duration::from_secs(60), || {
        c.task(&id)
            .ok()
            .filter(|(p, s)| *p > 0 && s == "RUNNING")
            .map(|(p, _)| p)
    });
    let mut last = None;
    if let Ok(pid) = pid {
        while child.try_wait().ok().flatten().is_none() {
            if let Some(v) = cpu_quota_and_throttled(pid) {
                last = Some(v);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut stdout = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    let _ = child.wait();
    let used = parse_probe_lines(&stdout)
        .into_iter()
        .next()
        .map(|l| l.detail)
        .unwrap_or_else(|| "no probe output".into());
    match last {
        Some((quota, throttled)) => Ok((quota, throttled, used)),
        None => Err(Res::error(format!(
            "could not read the container's cpu cgroup; {used}"
        ))),
    }
}

/// `cores_used=1.02 (...)` from the probe's report.
fn cores_used(report: &str) -> Option<f64> {
    report
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cores_used="))
        .and_then(|v| v.parse().ok())
}

/// `100000 100000` (cgroup v1 quota period, or v2 cpu.max) as cores.
fn quota_cores(quota: &str) -> Option<f64> {
    let mut parts = quota.split_whitespace();
    let q: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (period > 0.0).then_some(q / period)
}

fn refusal(e: anyhow::Error) -> Res {
    let msg = format!("{e:#}");
    let rule = [
        "privileged",
        "host-network",
        "host-pid",
        "host-ipc",
        "untrusted-registry",
    ]
    .into_iter()
    .find(|r| msg.contains(&format!("`{r}`")) || msg.contains(r));
    match rule {
        Some(r) => Res::of(Outcome::Blocked, format!("refused, rule `{r}`")),
        None => Res::error(format!("failed without naming a rule: {msg}")),
    }
}

/// Privileged and host-namespace pods, and an image from a registry outside the
/// allowlist, through CRI.
fn cri_probes(c: &Containerd, rt: &TestRuntime, r: &mut Results) {
    let cri = match c.cri() {
        Ok(cri) => cri,
        Err(e) => {
            for n in [
                "privileged-pod",
                "host-network-pod",
                "host-pid-pod",
                "host-ipc-pod",
                "untrusted-registry",
            ] {
                r.insert(n.into(), Res::error(format!("{e:#}")));
            }
            return;
        }
    };
    type Mutate = fn(&mut k8s_cri::v1::PodSandboxConfig);
    let cases: [(&str, Mutate); 4] = [
        ("privileged-pod", |p| {
            if let Some(sc) = p.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
                sc.privileged = true;
            }
        }),
        ("host-network-pod", |p| {
            // kubelet gives host-network pods no hostname of their own.
            p.hostname = String::new();
            set_ns(p, |n| n.network = NamespaceMode::Node as i32)
        }),
        ("host-pid-pod", |p| {
            set_ns(p, |n| n.pid = NamespaceMode::Node as i32)
        }),
        ("host-ipc-pod", |p| {
            set_ns(p, |n| n.ipc = NamespaceMode::Node as i32)
        }),
    ];
    for (name, mutate) in cases {
        let mut pod_cfg = cri.pod_config(name);
        mutate(&mut pod_cfg);
        let res = match cri.run_pod_sandbox(&pod_cfg, rt.cri_handler) {
            Err(e) => refusal(e),
            Ok(pod) => {
                let mut cfg = cri.container_config("app", &["sleep", "600"]);
                if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
                    if name == "privileged-pod" {
                        sc.privileged = true;
                    }
                    if let (Some(ns), Some(pns)) = (
                        sc.namespace_options.as_mut(),
                        pod_cfg
                            .linux
                            .as_ref()
                            .and_then(|l| l.security_context.as_ref())
                            .and_then(|s| s.namespace_options.as_ref()),
                    ) {
                        *ns = pns.clone();
                    }
                }
                let res = match cri.run_container(&pod, &cfg, &pod_cfg) {
                    Ok(_) => Res::of(Outcome::Allowed, "pod and container run"),
                    Err(e) => refusal(e),
                };
                remove_pod(&cri, &pod);
                res
            }
        };
        r.insert(name.into(), res);
    }
    let pod_cfg = cri.pod_config("registry");
    let res = match cri.run_pod_sandbox(&pod_cfg, rt.cri_handler) {
        Err(e) => Res::error(format!("sandbox: {e:#}")),
        Ok(pod) => {
            let mut cfg = cri.container_config("evil", &["sleep", "600"]);
            if let Some(image) = cfg.image.as_mut() {
                image.image = EVIL_IMAGE.to_string();
            }
            let res = match cri.run_container(&pod, &cfg, &pod_cfg) {
                Ok(_) => Res::of(Outcome::Allowed, format!("{EVIL_IMAGE} runs")),
                Err(e) => refusal(e),
            };
            remove_pod(&cri, &pod);
            res
        }
    };
    r.insert("untrusted-registry".into(), res);
}

fn set_ns(
    p: &mut k8s_cri::v1::PodSandboxConfig,
    f: impl FnOnce(&mut k8s_cri::v1::NamespaceOption),
) {
    if let Some(ns) = p
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        f(ns);
    }
}

fn remove_pod(cri: &Cri, pod: &str) {
    let _ = cri.stop_pod_sandbox(pod);
    let _ = cri.remove_pod_sandbox(pod);
}

/// The seccomp verdict of the default (or strict) profile for a probe's syscall, e.g.
/// "ERRNO(1)".
fn seccomp_verdict(syscall: Option<(i64, [u64; 6])>, strict: bool) -> Option<String> {
    let (nr, args) = syscall?;
    let file = if strict {
        "strict.toml"
    } else {
        "default.toml"
    };
    let profile = Profile::load(&stockade_integration::paths::profile(file).ok()?).ok()?;
    let filter = seccomp::compile(&profile.seccomp.profile).ok()?;
    let ret = filter.evaluate(nr, args).ok()?;
    Some(seccomp::describe_action(ret))
}

fn build_rows(runc: &Results, stk: &Results) -> Vec<Row> {
    let missing = || Res::error("not run");
    specs()
        .into_iter()
        .map(|s| {
            let rr = runc.get(s.name).cloned().unwrap_or_else(missing);
            let sr = stk.get(s.name).cloned().unwrap_or_else(missing);
            let mut guard = s.guard.to_string();
            if let Some(v) = seccomp_verdict(s.syscall, s.strict) {
                if guard.contains("seccomp") {
                    guard = guard.replacen("seccomp", &format!("seccomp [{v}]"), 1);
                } else if v != "ALLOW" {
                    guard.push_str(&format!("; seccomp [{v}]"));
                }
            }
            let runc_allows = rr.outcome == Some(Outcome::Allowed);
            let stockade_stops = sr.outcome.is_some_and(|o| o != Outcome::Allowed);
            let note = if runc_allows {
                String::new()
            } else if rr.outcome == Some(Outcome::Unsupported) {
                "the kernel lacks it (runc gets the same answer)".into()
            } else if s.runc_allows {
                "EXPECTED runc to allow it".into()
            } else if let Some(note) = s.runc_note {
                note.into()
            } else {
                "runc's default blocks it too".into()
            };
            Row {
                probe: s.name.into(),
                runc: rr.cell(),
                stockade: sr.cell(),
                guard,
                runc_allows,
                stockade_stops,
                note,
            }
        })
        .collect()
}

#[test]
fn security_probes() {
    let c = Containerd::start().expect("starting a private containerd");
    let canary = install_probe_images(&c).expect("building the probe image");
    let audit = rules::Audit::start();
    let mut results = Vec::new();
    for rt in [
        TestRuntime::runc(),
        TestRuntime::stockade().expect("profiles/default.toml"),
    ] {
        let mut r = Results::new();
        ctr_probes(&c, &rt, &canary, &mut r);
        cri_probes(&c, &rt, &mut r);
        rules::probes(&c, &rt, &audit, &mut r);
        results.push(r);
    }
    let rows = build_rows(&results[0], &results[1]);
    let table = probes::markdown(&rows);
    let path = probes::report_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, &table).expect("writing the security report");
    println!("\n{table}\n(written to {})", path.display());

    let mut failures = Vec::new();
    for (row, spec) in rows.iter().zip(specs()) {
        if !row.stockade_stops {
            failures.push(format!(
                "{}: NOT stopped by Stockade: {}",
                row.probe, row.stockade
            ));
        }
        if spec.runc_allows && !row.runc_allows {
            failures.push(format!(
                "{}: runc baseline did not let it through, so the probe proves nothing: {}",
                row.probe, row.runc
            ));
        }
        if row.runc.starts_with("ERROR") {
            failures.push(format!("{}: runc run failed: {}", row.probe, row.runc));
        }
        if let Some(rule) = spec.rule {
            if !row.stockade.contains(&format!("`{rule}`")) {
                failures.push(format!(
                    "{}: not refused by rule `{rule}`: {}",
                    row.probe, row.stockade
                ));
            }
        }
    }
    // The default profile runs the probe's root containers and records each.
    failures.extend(audit.missing_root_finding("stk-sys"));
    let mem = &results[1]
        .get("memory-bomb")
        .map(|r| r.text.clone())
        .unwrap_or_default();
    if !mem.contains("TaskOOM event: yes") {
        failures.push(format!(
            "memory-bomb: no TaskOOM event under Stockade: {mem}"
        ));
    }
    for r in &results {
        if let Some(f) = r.get("fork-bomb") {
            if f.text.contains("FAILED") {
                failures.push(format!("fork-bomb: node unhealthy afterwards: {}", f.text));
            }
        }
    }
    let left = c.leftovers();
    if !left.is_empty() {
        failures.push(format!("left behind: {left:?}"));
    }
    assert!(
        failures.is_empty(),
        "security suite failures:\n{}\n\n{table}",
        failures.join("\n")
    );
}

/// The guards the table names for seccomp are real: the default profile's filter denies
/// each of those syscalls (checked without root, against the compiled BPF).
#[test]
fn seccomp_guard_claims_hold() {
    for s in specs() {
        if s.guard.starts_with("seccomp") {
            let v = seccomp_verdict(s.syscall, s.strict)
                .unwrap_or_else(|| panic!("{}: no verdict", s.name));
            assert_ne!(v, "ALLOW", "{}: the table claims seccomp stops it", s.name);
        }
    }
}
