//! Parsing cgroup files (pure): single values, limits, flat-keyed and per-device files.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::CgroupError;

/// v1 reports "no limit" as the largest page-aligned `i64`; anything this high is not a
/// real limit on any page size.
const V1_UNLIMITED_THRESHOLD: u64 = (i64::MAX as u64) - (1 << 24);

/// `major:minor`.
pub(crate) fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A single unsigned number, as in `memory.current` or `cpuacct.usage`.
pub fn parse_u64(content: &str) -> Result<u64, String> {
    let s = content.trim();
    s.parse()
        .map_err(|_| format!("expected an unsigned number, found {s:?}"))
}

/// A limit: "max" (v2, pids) or a v1 value near `i64::MAX` mean unlimited.
pub fn parse_limit(content: &str) -> Result<Option<u64>, String> {
    let s = content.trim();
    if s == "max" {
        return Ok(None);
    }
    let v = parse_u64(s)?;
    Ok((v < V1_UNLIMITED_THRESHOLD).then_some(v))
}

/// Whitespace-separated numbers, as in `cpuacct.usage_percpu`.
pub fn parse_u64_list(content: &str) -> Result<Vec<u64>, String> {
    content.split_whitespace().map(parse_u64).collect()
}

/// "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
/// Lines that do not hold a number are skipped: new kernels add fields.
pub fn parse_flat_keyed(content: &str) -> BTreeMap<String, u64> {
    content
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let key = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((key.to_string(), value))
        })
        .collect()
}

/// The value of `key` in a flat-keyed cgroup file.
pub fn flat_keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next()? == key).then(|| parts.next()?.parse().ok())?
    })
}

/// Reads a cgroup file; `None` when this kernel or controller does not have it.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // Reading a cgroup file that is being removed gives ENODEV.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(CgroupError::Io {
            op: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parsed<T>(path: &Path, r: Result<T, String>) -> Result<T, CgroupError> {
    r.map_err(|problem| CgroupError::Parse {
        path: path.to_path_buf(),
        problem,
    })
}

pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_opt(path)?
        .map(|s| parsed(path, parse_u64(&s)))
        .transpose()
}

pub(crate) fn read_limit_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    Ok(read_opt(path)?
        .map(|s| parsed(path, parse_limit(&s)))
        .transpose()?
        .flatten())
}

pub(crate) fn read_u64_list_opt(path: &Path) -> Result<Vec<u64>, CgroupError> {
    Ok(read_opt(path)?
        .map(|s| parsed(path, parse_u64_list(&s)))
        .transpose()?
        .unwrap_or_default())
}

pub(crate) fn read_flat_keyed_opt(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    Ok(read_opt(path)?
        .map(|s| parse_flat_keyed(&s))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_max_and_v1_unlimited_as_none() {
        assert_eq!(parse_limit("max\n").unwrap(), None);
        assert_eq!(parse_limit("9223372036854771712\n").unwrap(), None);
        // 64 KiB pages give a slightly different "unlimited".
        assert_eq!(parse_limit("9223372036854710272").unwrap(), None);
        assert_eq!(parse_limit("16777216\n").unwrap(), Some(16 << 20));
        assert!(parse_limit("sixteen").is_err());
        assert_eq!(parse_u64(" 42\n").unwrap(), 42);
        assert_eq!(parse_u64_list("1 2 3 \n").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn flat_keyed_skips_lines_without_numbers() {
        let map = parse_flat_keyed("usage_usec 1500\nuser_usec 1000\nbogus\nweird x\n");
        assert_eq!(map.len(), 2);
        assert_eq!(map["usage_usec"], 1500);
        assert_eq!(map["user_usec"], 1000);
    }

    #[test]
    fn flat_keyed_finds_one_key_exactly() {
        let v1_oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2_events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        let v1_cpu = "nr_periods 10\nnr_throttled 4\nthrottled_time 2500000000\n";
        let v2_cpu = "usage_usec 100\nuser_usec 50\nsystem_usec 50\nnr_periods 5\nnr_throttled 1\nthrottled_usec 1500000\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(flat_keyed(v1_oom, "oom_kill"), Some(3));
        assert_eq!(flat_keyed(v2_events, "oom_kill"), Some(2));
        assert_eq!(flat_keyed(v2_events, "oom"), Some(2));
        assert_eq!(flat_keyed(v1_cpu, "throttled_time"), Some(2_500_000_000));
        assert_eq!(flat_keyed(v2_cpu, "throttled_usec"), Some(1_500_000));
        assert_eq!(flat_keyed(v2_cpu, "throttled"), None);
    }
}
