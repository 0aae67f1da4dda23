//! Leaving nothing behind: find the processes, mounts and cgroups one private containerd
//! instance created, and remove them. Processes are found by what identifies them as
//! ours (our unique temp dir in their command line, membership of our cgroups, descent
//! from those), never by name.

use crate::cgroups::{cgroup_mounts, unescape_mountinfo};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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
