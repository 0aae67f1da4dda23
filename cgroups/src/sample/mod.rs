//! Reading a container's cgroup into a plain [`CgroupSample`] (v1 or v2, cgroupfs or
//! systemd path), and the two counters the monitor exports.
//!
//! Why not libcgroups' `CgroupManager::stats()`: it fails as a whole when one
//! controller's files are absent (a systemd scope has no `io.stat` or `hugetlb.*`, a v1
//! host without swap accounting has no `memory.memsw.*`), it reports v1 user/system CPU
//! in USER_HZ ticks and v2's in microseconds, and it reads no OOM counters. These
//! readers take what the kernel has and leave the rest empty.

mod v1;
mod v2;

use std::collections::BTreeMap;

use crate::host::{Hierarchy, Host};
use crate::parse::{flat_keyed, read_opt};
use crate::path::CgroupsPath;
use crate::CgroupError;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

/// Which cgroup version a sample was read from (the Metrics type follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// v1 controllers (also hybrid hosts: their cgroup2 mount has no controllers).
    V1,
    /// Pure cgroup v2 (unified) hierarchy.
    V2,
}

/// One reading of a container cgroup, independent of the cgroup version.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupSample {
    pub mode: CgroupMode,
    pub cpu: CpuSample,
    pub memory: MemorySample,
    pub pids: PidsSample,
    /// Block IO per device (v1 blkio throttle counters, v2 io.stat).
    pub io: Vec<IoSample>,
}

/// CPU time, all in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSample {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    /// Per-CPU usage (v1 only; empty on v2).
    pub per_cpu_ns: Vec<u64>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

impl CpuSample {
    /// Time the cgroup was throttled by its CPU quota, in microseconds.
    pub fn throttled_usec(&self) -> u64 {
        self.throttled_ns / 1000
    }
}

/// A usage counter with its limit; `None` limits mean unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryCounter {
    pub usage: u64,
    pub limit: Option<u64>,
    /// High-water mark (v1 `max_usage_in_bytes`, v2 `memory.peak` where present).
    pub max_usage: Option<u64>,
    /// Times the limit was hit (v1 `failcnt`, v2 the `max` event count).
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemorySample {
    pub memory: MemoryCounter,
    /// v1: memory+swap (`memory.memsw.*`); v2: swap alone (`memory.swap.*`).
    pub swap: Option<MemoryCounter>,
    /// v1 only: kernel memory (`memory.kmem.*`).
    pub kernel: Option<MemoryCounter>,
    /// v1 only: kernel TCP buffers (`memory.kmem.tcp.*`).
    pub kernel_tcp: Option<MemoryCounter>,
    /// OOM kills in this cgroup (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_kills: u64,
    /// v1 `memory.oom_control` or v2 `memory.events`, as keyed counters.
    pub events: BTreeMap<String, u64>,
    /// `memory.stat`, keys as the kernel names them.
    pub stat: BTreeMap<String, u64>,
}

impl MemorySample {
    /// A `memory.stat` value, 0 when the kernel does not report it.
    pub fn stat(&self, key: &str) -> u64 {
        self.stat.get(key).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsSample {
    pub current: u64,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoSample {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

impl Host {
    /// Reads the container's cgroup (`cgroups_path` as in its spec).
    pub fn sample(&self, cgroups_path: &str) -> Result<CgroupSample, CgroupError> {
        let path = container_path(cgroups_path)?;
        match self.hierarchy() {
            Hierarchy::Unified => v2::read(&self.dir("", &path)),
            Hierarchy::Legacy | Hierarchy::Hybrid => v1::read(self, &path),
        }
    }

    /// OOM kills in the cgroup (v1 memory.oom_control, v2 memory.events `oom_kill`).
    pub fn oom_kills(&self, cgroups_path: &str) -> Result<u64, CgroupError> {
        let path = container_path(cgroups_path)?;
        let file = if self.is_unified() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.counter(&path, "memory", file, "oom_kill")
    }

    /// Time the cgroup was throttled by its CPU quota, in seconds (v1 cpu.stat
    /// `throttled_time` in ns, v2 cpu.stat `throttled_usec`).
    pub fn cpu_throttled_seconds(&self, cgroups_path: &str) -> Result<f64, CgroupError> {
        let path = container_path(cgroups_path)?;
        Ok(if self.is_unified() {
            self.counter(&path, "cpu", "cpu.stat", "throttled_usec")? as f64 / 1e6
        } else {
            self.counter(&path, "cpu", "cpu.stat", "throttled_time")? as f64 / 1e9
        })
    }

    fn counter(
        &self,
        path: &CgroupsPath,
        controller: &str,
        file: &str,
        key: &str,
    ) -> Result<u64, CgroupError> {
        let file = self.dir(controller, path).join(file);
        let text =
            read_opt(&file)?.ok_or_else(|| CgroupError::Missing(file.display().to_string()))?;
        flat_keyed(&text, key).ok_or_else(|| CgroupError::Parse {
            path: file,
            problem: format!("no `{key}`"),
        })
    }
}

/// A container's cgroupsPath, refusing the root cgroup.
pub(crate) fn container_path(cgroups_path: &str) -> Result<CgroupsPath, CgroupError> {
    let path = CgroupsPath::parse(cgroups_path)?;
    if path.relative().as_os_str().is_empty() {
        return Err(CgroupError::Root(cgroups_path.to_string()));
    }
    Ok(path)
}

/// Reads the container's cgroup on this node.
pub fn sample(cgroups_path: &str) -> Result<CgroupSample, CgroupError> {
    Host::current()?.sample(cgroups_path)
}
