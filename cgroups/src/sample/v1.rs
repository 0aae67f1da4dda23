//! Reading a cgroup v1 container cgroup (hybrid hosts included).

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    CgroupMode, CgroupSample, CpuSample, IoSample, MemoryCounter, MemorySample, PidsSample,
};
use crate::host::Host;
use crate::parse::{
    parse_dev, read_flat_keyed_opt, read_limit_opt, read_opt, read_u64_list_opt, read_u64_opt,
};
use crate::path::CgroupsPath;
use crate::CgroupError;

pub(crate) fn read(host: &Host, path: &CgroupsPath) -> Result<CgroupSample, CgroupError> {
    let mem = host.dir("memory", path);
    let cpuacct = host.dir("cpuacct", path);
    let cpu = host.dir("cpu", path);
    let pids = host.dir("pids", path);
    let blkio = host.dir("blkio", path);
    if !mem.is_dir() && !cpuacct.is_dir() && !pids.is_dir() {
        return Err(CgroupError::Missing(format!(
            "{} (in no v1 controller)",
            path.relative().display()
        )));
    }

    let mut cpu_sample = CpuSample {
        usage_ns: read_u64_opt(&cpuacct.join("cpuacct.usage"))?.unwrap_or(0),
        per_cpu_ns: read_u64_list_opt(&cpuacct.join("cpuacct.usage_percpu"))?,
        ..CpuSample::default()
    };
    // usage_user/usage_sys are in nanoseconds; cpuacct.stat only has USER_HZ ticks.
    match (
        read_u64_opt(&cpuacct.join("cpuacct.usage_user"))?,
        read_u64_opt(&cpuacct.join("cpuacct.usage_sys"))?,
    ) {
        (Some(user), Some(sys)) => {
            cpu_sample.user_ns = user;
            cpu_sample.system_ns = sys;
        }
        _ => {
            let stat = read_flat_keyed_opt(&cpuacct.join("cpuacct.stat"))?;
            let ns_per_tick = 1_000_000_000 / clock_ticks_per_sec();
            cpu_sample.user_ns = stat.get("user").copied().unwrap_or(0) * ns_per_tick;
            cpu_sample.system_ns = stat.get("system").copied().unwrap_or(0) * ns_per_tick;
        }
    }
    let stat = read_flat_keyed_opt(&cpu.join("cpu.stat"))?;
    cpu_sample.periods = stat.get("nr_periods").copied().unwrap_or(0);
    cpu_sample.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
    cpu_sample.throttled_ns = stat.get("throttled_time").copied().unwrap_or(0);

    let oom_control = read_flat_keyed_opt(&mem.join("memory.oom_control"))?;
    let memory = MemorySample {
        memory: read_counter(&mem, "memory")?.unwrap_or_default(),
        swap: read_counter(&mem, "memory.memsw")?,
        kernel: read_counter(&mem, "memory.kmem")?,
        kernel_tcp: read_counter(&mem, "memory.kmem.tcp")?,
        oom_kills: oom_control.get("oom_kill").copied().unwrap_or(0),
        events: oom_control,
        stat: read_flat_keyed_opt(&mem.join("memory.stat"))?,
    };

    let pids = PidsSample {
        current: read_u64_opt(&pids.join("pids.current"))?.unwrap_or(0),
        limit: read_limit_opt(&pids.join("pids.max"))?,
    };

    let io = match (
        read_opt(&blkio.join("blkio.throttle.io_service_bytes_recursive"))?,
        read_opt(&blkio.join("blkio.throttle.io_serviced_recursive"))?,
    ) {
        (Some(bytes), Some(ops)) => merge_blkio(&parse_blkio(&bytes), &parse_blkio(&ops)),
        _ => Vec::new(),
    };

    Ok(CgroupSample {
        mode: CgroupMode::V1,
        cpu: cpu_sample,
        memory,
        pids,
        io,
    })
}

/// Reads `<prefix>.usage_in_bytes` and friends; `None` when the kernel lacks them (no
/// swap accounting, no kmem).
fn read_counter(dir: &Path, prefix: &str) -> Result<Option<MemoryCounter>, CgroupError> {
    let Some(usage) = read_u64_opt(&dir.join(format!("{prefix}.usage_in_bytes")))? else {
        return Ok(None);
    };
    Ok(Some(MemoryCounter {
        usage,
        limit: read_limit_opt(&dir.join(format!("{prefix}.limit_in_bytes")))?,
        max_usage: read_u64_opt(&dir.join(format!("{prefix}.max_usage_in_bytes")))?,
        failcnt: read_u64_opt(&dir.join(format!("{prefix}.failcnt")))?.unwrap_or(0),
    }))
}

/// One line of a v1 blkio file: "8:0 Read 4096"; the "Total" line is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlkioLine {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

pub(crate) fn parse_blkio(content: &str) -> Vec<BlkioLine> {
    content
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = parse_dev(parts.next()?)?;
            let op = parts.next()?.to_string();
            let value = parts.next()?.parse().ok()?;
            Some(BlkioLine {
                major,
                minor,
                op,
                value,
            })
        })
        .collect()
}

pub(crate) fn merge_blkio(bytes: &[BlkioLine], ops: &[BlkioLine]) -> Vec<IoSample> {
    let mut by_dev: BTreeMap<(u64, u64), IoSample> = BTreeMap::new();
    let mut add = |line: &BlkioLine, is_bytes: bool| {
        let entry = by_dev
            .entry((line.major, line.minor))
            .or_insert_with(|| IoSample {
                major: line.major,
                minor: line.minor,
                ..IoSample::default()
            });
        match (line.op.as_str(), is_bytes) {
            ("Read", true) => entry.read_bytes = line.value,
            ("Write", true) => entry.write_bytes = line.value,
            ("Read", false) => entry.reads = line.value,
            ("Write", false) => entry.writes = line.value,
            _ => {}
        }
    };
    bytes.iter().for_each(|l| add(l, true));
    ops.iter().for_each(|l| add(l, false));
    by_dev.into_values().collect()
}

pub(crate) fn clock_ticks_per_sec() -> u64 {
    procfs::ticks_per_second().max(1)
}
