//! Leaving nothing behind: find the processes, mounts and cgroups one private containerd
//! instance created, and remove them. Processes are found by what identifies them as
//! ours (our unique temp dir in their command line, membership of our cgroups, descent
//! from those), never by name.

use crate::cgroups::{cgroup_mounts, unescape_mountinfo};
use crate::containerd::Containerd;
use crate::cri::Cri;
use crate::exec::output_with_timeout;
use crate::leftovers::shim_socket_path;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub args: Vec<String>,
}

/// Every process visible in /proc (processes that vanish mid-scan are skipped).
pub fn processes() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The comm field may hold spaces and parentheses: parse after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let args = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(ProcInfo {
            pid,
            ppid,
            state,
            args,
        });
    }
    out
}

/// PIDs listed in cgroup.procs anywhere below the given cgroup directories.
pub fn pids_in_cgroups(dirs: &[PathBuf]) -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    for dir in dirs {
        for d in cgroup_tree(dir) {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
    }
    pids
}

/// A cgroup directory and all directories below it, parents first.
pub fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if !d.is_dir() {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out
}

/// The processes that belong to one instance: those whose command line mentions
/// `marker` (our unique temp dir: containerd, its shims, ctr clients), those in our
/// cgroups, and all their descendants. Never includes this process or its ancestors.
pub fn instance_processes(marker: &str, cgroup_dirs: &[PathBuf]) -> Vec<ProcInfo> {
    let procs = processes();
    let me = std::process::id() as i32;
    let mut ancestors = BTreeSet::from([me]);
    let mut cur = me;
    while let Some(p) = procs.iter().find(|p| p.pid == cur) {
        if p.ppid <= 0 || !ancestors.insert(p.ppid) {
            break;
        }
        cur = p.ppid;
    }
    let mut ours: BTreeSet<i32> = procs
        .iter()
        .filter(|p| p.args.iter().any(|a| a.contains(marker)))
        .map(|p| p.pid)
        .collect();
    ours.extend(pids_in_cgroups(cgroup_dirs));
    loop {
        let before = ours.len();
        for p in &procs {
            if ours.contains(&p.ppid) {
                ours.insert(p.pid);
            }
        }
        if ours.len() == before {
            break;
        }
    }
    procs
        .into_iter()
        .filter(|p| ours.contains(&p.pid) && !ancestors.contains(&p.pid) && p.state != 'Z')
        .collect()
}

/// The value of `-flag VALUE` in a shim's command line.
pub fn arg_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// SIGKILL the given processes and wait (bounded) until they are gone or zombies.
pub fn kill_and_wait(pids: &[i32], timeout: Duration) -> Vec<i32> {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        s.rfind(')')
                            .and_then(|i| s[i + 1..].split_whitespace().next())
                            .is_some_and(|st| st != "Z" && st != "X")
                    })
                    .unwrap_or(false)
            })
            .collect();
        if alive.is_empty() || Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points at or below `prefix`, deepest first.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(prefix))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

/// Lazily unmount everything at or below `prefix`; returns what is still mounted.
pub fn unmount_under(prefix: &Path) -> Vec<PathBuf> {
    for _ in 0..8 {
        let mounts = mounts_under(prefix);
        if mounts.is_empty() {
            return mounts;
        }
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(prefix)
}

/// The directories of cgroup `rel` (e.g. "/stockade-it-123") in every hierarchy.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    cgroup_mounts()
        .unwrap_or_default()
        .iter()
        .map(|m| m.mount_point.join(rel.trim_start_matches('/')))
        .collect()
}

/// Thaw every frozen cgroup below `dirs` (a frozen process cannot die of SIGKILL).
pub fn thaw(dirs: &[PathBuf]) {
    for dir in dirs {
        for d in cgroup_tree(dir) {
            let v1 = d.join("freezer.state");
            if v1.exists() {
                let _ = std::fs::write(&v1, "THAWED");
            }
            let v2 = d.join("cgroup.freeze");
            if v2.exists() {
                let _ = std::fs::write(&v2, "0");
            }
        }
    }
}

/// Remove the cgroup trees below `dirs`, children first; returns what remains.
pub fn remove_cgroups(dirs: &[PathBuf], timeout: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut remaining = Vec::new();
        for dir in dirs {
            for d in cgroup_tree(dir).into_iter().rev() {
                if std::fs::remove_dir(&d).is_err() && d.exists() {
                    remaining.push(d);
                }
            }
        }
        if remaining.is_empty() || Instant::now() > deadline {
            return remaining;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------ one instance's teardown

impl Containerd {
    /// Best effort: remove CRI pods and ctr containers through containerd itself, with
    /// short deadlines (a hung shim must not hang the teardown; the forced path follows).
    fn graceful_cleanup(&self) {
        const QUICK: Duration = Duration::from_secs(20);
        let ctr = |args: &[&str]| -> Option<String> {
            let mut cmd = self.ctr_command(&self.name, args);
            output_with_timeout(&mut cmd, QUICK)
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        if let Ok(cri) = Cri::connect(
            &self.socket,
            self.dir.join("pods"),
            self.cgroup_parent(),
            Arc::clone(&self.netns),
        ) {
            let cri = cri.with_timeout(QUICK);
            if let Ok(pods) = cri.list_pod_sandboxes() {
                for pod in pods {
                    let _ = cri.stop_pod_sandbox(&pod.id);
                    let _ = cri.remove_pod_sandbox(&pod.id);
                }
            }
        }
        if let Some(tasks) = ctr(&["tasks", "ls", "-q"]) {
            for id in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = ctr(&["tasks", "rm", "-f", id]);
            }
        }
        if let Some(containers) = ctr(&["containers", "ls", "-q"]) {
            for id in containers.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = ctr(&["containers", "rm", id]);
            }
        }
    }

    /// Stop everything this instance started and remove what it created; returns a
    /// description of anything that could not be removed.
    pub(crate) fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.child.is_some() {
            self.graceful_cleanup();
        }
        if let Err(e) = self.stop_daemon() {
            problems.push(format!("stopping containerd: {e:#}"));
        }
        let cgroup_dirs = self.cgroup_dirs();
        thaw(&cgroup_dirs);
        let marker = self.dir.display().to_string();
        let procs = instance_processes(&marker, &cgroup_dirs);
        let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
        let alive = kill_and_wait(&pids, Duration::from_secs(10));
        if !alive.is_empty() {
            problems.push(format!("processes still alive: {alive:?}"));
        }
        // Shim sockets live in /run/containerd/s, named by a hash of our address.
        for p in &procs {
            self.remove_shim_socket(&p.args);
        }
        if let Ok(mut netns) = self.netns.lock() {
            for ns in netns.drain(..) {
                // CRI names them under /var/run, mountinfo under /run: unmount whatever
                // the path is; a pod removed through CRI has no file left anyway.
                if ns.exists() {
                    let _ = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH);
                    let _ = std::fs::remove_file(&ns);
                    if ns.exists() {
                        problems.push(format!("network namespace {} left", ns.display()));
                    }
                }
            }
        }
        let still_mounted = unmount_under(&self.dir);
        if !still_mounted.is_empty() {
            problems.push(format!("still mounted: {still_mounted:?}"));
        }
        for sock in self.shim_sockets() {
            let _ = std::fs::remove_file(sock);
        }
        for d in self.shim_state_dirs() {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = std::fs::remove_dir(self.stockade_state.libcontainer().join(&self.name));
        let cgroups = remove_cgroups(&cgroup_dirs, Duration::from_secs(10));
        if !cgroups.is_empty() {
            problems.push(format!("cgroups left: {cgroups:?}"));
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = output_with_timeout(
                Command::new("ip").args(["link", "del", &self.bridge]),
                Duration::from_secs(10),
            );
        }
        // libcni caches results per network name (ours is unique) in /var/lib/cni.
        if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
            let prefix = format!("{}-", self.name);
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                // <network>-<sandbox id>-<ifname>; the pod's loopback result goes too.
                if let Some(rest) = file.strip_prefix(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                    if let Some((sandbox, _)) = rest.rsplit_once('-') {
                        let lo = format!("cni-loopback-{sandbox}-lo");
                        let _ = std::fs::remove_file(Path::new("/var/lib/cni/results").join(lo));
                    }
                }
            }
        }
        // runc's default root for containers started by ctr is namespaced by our name.
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.name));
        if still_mounted.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                problems.push(format!("removing {}: {e}", self.dir.display()));
            }
        }
        problems
    }

    fn remove_shim_socket(&self, args: &[String]) {
        let (Some(ns), Some(id), Some(addr)) = (
            arg_value(args, "-namespace"),
            arg_value(args, "-id"),
            arg_value(args, "-address"),
        ) else {
            return;
        };
        if Path::new(addr) == self.socket {
            let _ = std::fs::remove_file(shim_socket_path(&self.socket, ns, id));
        }
    }
}
