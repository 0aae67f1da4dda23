//! Reading a cgroup v2 container cgroup.
//!
//! Only the files of enabled controllers exist: a systemd scope usually has no io or
//! hugetlb files. A missing file reads as "not reported", not as an error.

use std::path::Path;

use super::{
    CgroupMode, CgroupSample, CpuSample, IoSample, MemoryCounter, MemorySample, PidsSample,
};
use crate::parse::{parse_dev, read_flat_keyed_opt, read_limit_opt, read_opt, read_u64_opt};
use crate::CgroupError;

pub(crate) fn read(dir: &Path) -> Result<CgroupSample, CgroupError> {
    if !dir.is_dir() {
        return Err(CgroupError::Missing(dir.display().to_string()));
    }
    let stat = read_flat_keyed_opt(&dir.join("cpu.stat"))?;
    let usec = |k: &str| stat.get(k).copied().unwrap_or(0).saturating_mul(1000);
    let cpu = CpuSample {
        usage_ns: usec("usage_usec"),
        user_ns: usec("user_usec"),
        system_ns: usec("system_usec"),
        per_cpu_ns: Vec::new(),
        periods: stat.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
        throttled_ns: usec("throttled_usec"),
    };

    let events = read_flat_keyed_opt(&dir.join("memory.events"))?;
    let memory_counter = MemoryCounter {
        usage: read_u64_opt(&dir.join("memory.current"))?.unwrap_or(0),
        limit: read_limit_opt(&dir.join("memory.max"))?,
        max_usage: read_u64_opt(&dir.join("memory.peak"))?,
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    let swap = match read_u64_opt(&dir.join("memory.swap.current"))? {
        Some(usage) => Some(MemoryCounter {
            usage,
            limit: read_limit_opt(&dir.join("memory.swap.max"))?,
            max_usage: read_u64_opt(&dir.join("memory.swap.peak"))?,
            failcnt: 0,
        }),
        None => None,
    };
    let memory = MemorySample {
        memory: memory_counter,
        swap,
        kernel: None,
        kernel_tcp: None,
        oom_kills: events.get("oom_kill").copied().unwrap_or(0),
        events,
        stat: read_flat_keyed_opt(&dir.join("memory.stat"))?,
    };

    let pids = PidsSample {
        current: read_u64_opt(&dir.join("pids.current"))?.unwrap_or(0),
        limit: read_limit_opt(&dir.join("pids.max"))?,
    };
    let io = read_opt(&dir.join("io.stat"))?
        .map(|s| parse_io_stat(&s))
        .unwrap_or_default();

    Ok(CgroupSample {
        mode: CgroupMode::V2,
        cpu,
        memory,
        pids,
        io,
    })
}

/// v2 io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
pub(crate) fn parse_io_stat(content: &str) -> Vec<IoSample> {
    content
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = parse_dev(parts.next()?)?;
            let mut entry = IoSample {
                major,
                minor,
                ..IoSample::default()
            };
            for kv in parts {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(v) = v.parse::<u64>() else { continue };
                match k {
                    "rbytes" => entry.read_bytes = v,
                    "wbytes" => entry.write_bytes = v,
                    "rios" => entry.reads = v,
                    "wios" => entry.writes = v,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}
