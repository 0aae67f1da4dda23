//! Reading a process's cgroups from the host, for cgroup v1, v2 and hybrid hosts.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One cgroup filesystem mount of this host.
#[derive(Debug, Clone)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// The mount's root inside the hierarchy (usually "/").
    pub root: String,
    /// v1 controllers (and `name=` options) of the hierarchy; empty for cgroup2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// Every cgroup (v1) and cgroup2 mount, from /proc/self/mountinfo.
pub fn cgroup_mounts() -> Result<Vec<CgroupMount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.len() < 3 {
            continue;
        }
        let fstype = rfields[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let controllers = if fstype == "cgroup" {
            rfields[2]
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("clone_children"))
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        mounts.push(CgroupMount {
            mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
            root: unescape_mountinfo(fields[3]),
            controllers,
            v2: fstype == "cgroup2",
        });
    }
    Ok(mounts)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// Host directory of `path` (as shown in /proc/PID/cgroup) inside `mount`.
fn host_dir(mount: &CgroupMount, path: &str) -> PathBuf {
    let rel = if mount.root != "/" {
        path.strip_prefix(&mount.root).unwrap_or(path)
    } else {
        path
    };
    mount.mount_point.join(rel.trim_start_matches('/'))
}

/// Where a process's memory, cpu, pids and freezer controllers are, on the host.
#[derive(Debug, Clone)]
pub struct ProcessCgroups {
    /// True when the controllers are on the unified (v2) hierarchy.
    pub v2: bool,
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub pids: PathBuf,
    pub freezer: PathBuf,
    /// The v1 device controller (`devices.list`); None on cgroup v2 (eBPF programs).
    pub devices: Option<PathBuf>,
}

/// Locate the cgroups of host process `pid`.
pub fn process_cgroups(pid: i32) -> Result<ProcessCgroups> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    let mounts = cgroup_mounts()?;
    let mut v1 = std::collections::HashMap::new();
    let mut unified: Option<PathBuf> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            if let Some(m) = mounts.iter().find(|m| m.v2) {
                unified = Some(host_dir(m, path));
            }
            continue;
        }
        for ctrl in ctrls.split(',') {
            if let Some(m) = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == ctrl))
            {
                v1.insert(ctrl.to_string(), host_dir(m, path));
            }
        }
    }
    if let Some(memory) = v1.get("memory") {
        let get = |c: &str| -> Result<PathBuf> {
            v1.get(c)
                .cloned()
                .with_context(|| format!("process {pid} has no v1 {c} cgroup"))
        };
        return Ok(ProcessCgroups {
            v2: false,
            memory: memory.clone(),
            cpu: get("cpu")?,
            pids: get("pids")?,
            freezer: get("freezer")?,
            devices: v1.get("devices").cloned(),
        });
    }
    match unified {
        Some(dir) => Ok(ProcessCgroups {
            v2: true,
            memory: dir.clone(),
            cpu: dir.clone(),
            pids: dir.clone(),
            freezer: dir,
            devices: None,
        }),
        None => bail!("process {pid}: no memory cgroup found in /proc/{pid}/cgroup"),
    }
}

/// The limits a cgroup enforces; None means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory: Option<u64>,
    pub cpu_quota: Option<u64>,
    pub cpu_period: Option<u64>,
    pub pids: Option<u64>,
}

fn read_trim(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

fn parse_max(value: &str, what: &Path) -> Result<Option<u64>> {
    if value == "max" {
        return Ok(None);
    }
    value
        .parse::<u64>()
        .map(Some)
        .with_context(|| format!("{}: unexpected value {value:?}", what.display()))
}

/// v1 memory.limit_in_bytes reads PAGE_COUNTER_MAX pages when unlimited.
const V1_MEMORY_UNLIMITED_FLOOR: u64 = 1 << 62;

impl ProcessCgroups {
    pub fn limits(&self) -> Result<CgroupLimits> {
        if self.v2 {
            let mem = self.memory.join("memory.max");
            let pids = self.pids.join("pids.max");
            let cpu = self.cpu.join("cpu.max");
            let cpu_max = read_trim(&cpu)?;
            let mut it = cpu_max.split_whitespace();
            let quota = parse_max(it.next().unwrap_or("max"), &cpu)?;
            let period = parse_max(it.next().unwrap_or("max"), &cpu)?;
            Ok(CgroupLimits {
                memory: parse_max(&read_trim(&mem)?, &mem)?,
                cpu_quota: quota,
                cpu_period: period,
                pids: parse_max(&read_trim(&pids)?, &pids)?,
            })
        } else {
            let mem = self.memory.join("memory.limit_in_bytes");
            let memory =
                parse_max(&read_trim(&mem)?, &mem)?.filter(|v| *v < V1_MEMORY_UNLIMITED_FLOOR);
            let quota_path = self.cpu.join("cpu.cfs_quota_us");
            let quota = read_trim(&quota_path)?;
            let quota = if quota.starts_with('-') {
                None
            } else {
                parse_max(&quota, &quota_path)?
            };
            let period_path = self.cpu.join("cpu.cfs_period_us");
            let pids = self.pids.join("pids.max");
            Ok(CgroupLimits {
                memory,
                cpu_quota: quota,
                cpu_period: parse_max(&read_trim(&period_path)?, &period_path)?,
                pids: parse_max(&read_trim(&pids)?, &pids)?,
            })
        }
    }

    /// True when the freezer holds the cgroup frozen.
    pub fn frozen(&self) -> Result<bool> {
        if self.v2 {
            let events = read_trim(&self.freezer.join("cgroup.events"))?;
            Ok(events.lines().any(|l| l.trim() == "frozen 1"))
        } else {
            Ok(read_trim(&self.freezer.join("freezer.state"))? == "FROZEN")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn finds_own_cgroups() {
        let cg = process_cgroups(std::process::id() as i32).unwrap();
        assert!(cg.memory.exists(), "{}", cg.memory.display());
        assert!(cg.pids.exists(), "{}", cg.pids.display());
    }
}
