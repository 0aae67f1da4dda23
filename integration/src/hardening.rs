//! Checks of what a container really got, read from inside (/proc/self/status,
//! /proc/self/uid_map) and from the host (its cgroups). Each check returns the list of
//! violations, so a test can also assert that an unhardened container (runc) fails it.

use crate::cgroups::{process_cgroups, CgroupLimits};
use anyhow::{bail, Context, Result};
use std::str::FromStr;

/// Security-relevant fields of /proc/PID/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStatus {
    /// 0 disabled, 1 strict, 2 filter.
    pub seccomp: u32,
    pub no_new_privs: u32,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
}

/// Parse /proc/PID/status text.
pub fn parse_status(text: &str) -> Result<ProcStatus> {
    let field = |name: &str| -> Result<&str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
            .with_context(|| format!("/proc/self/status has no {name} line:\n{text}"))
    };
    let hex = |name: &str| -> Result<u64> {
        let v = field(name)?;
        u64::from_str_radix(v, 16).with_context(|| format!("{name}: not hex: {v:?}"))
    };
    let dec = |name: &str| -> Result<u32> {
        let v = field(name)?;
        v.parse()
            .with_context(|| format!("{name}: not a number: {v:?}"))
    };
    Ok(ProcStatus {
        seccomp: dec("Seccomp")?,
        no_new_privs: dec("NoNewPrivs")?,
        cap_inh: hex("CapInh")?,
        cap_prm: hex("CapPrm")?,
        cap_eff: hex("CapEff")?,
        cap_bnd: hex("CapBnd")?,
        cap_amb: hex("CapAmb")?,
    })
}

/// One line of /proc/PID/uid_map or gid_map: inside, outside, count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapEntry {
    pub inside: u64,
    pub outside: u64,
    pub count: u64,
}

pub fn parse_id_map(text: &str) -> Result<Vec<IdMapEntry>> {
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let nums: Vec<u64> = line
            .split_whitespace()
            .map(u64::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad id map line {line:?}"))?;
        let [inside, outside, count] = nums[..] else {
            bail!("bad id map line {line:?}");
        };
        entries.push(IdMapEntry {
            inside,
            outside,
            count,
        });
    }
    Ok(entries)
}

/// The host ID that container ID `id` maps to, if any.
pub fn map_id(entries: &[IdMapEntry], id: u64) -> Option<u64> {
    entries
        .iter()
        .find(|e| id >= e.inside && id < e.inside + e.count)
        .map(|e| e.outside + (id - e.inside))
}

/// Capability bitmask of names like `CAP_CHOWN` or `chown`.
pub fn cap_mask<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Result<u64> {
    let mut mask = 0u64;
    for name in names {
        let raw = name.as_ref().trim();
        let upper = raw.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        let cap = caps::Capability::from_str(&full)
            .map_err(|e| anyhow::anyhow!("unknown capability {raw:?}: {e}"))?;
        mask |= cap.bitmask();
    }
    Ok(mask)
}

/// Capability names of a bitmask (for readable failure messages).
pub fn cap_names(mask: u64) -> Vec<String> {
    caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The capability allowlist of a Stockade profile (`capabilities.allow`), as a bitmask.
/// Read with the TOML parser alone, so the harness does not depend on the runtime crate.
pub fn profile_cap_allowlist(profile: &std::path::Path) -> Result<u64> {
    let text = std::fs::read_to_string(profile)
        .with_context(|| format!("reading profile {}", profile.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing profile {}", profile.display()))?;
    let allow = doc
        .get("capabilities")
        .and_then(|c| c.get("allow"))
        .and_then(|a| a.as_array())
        .with_context(|| format!("{}: no capabilities.allow list", profile.display()))?;
    let names = allow
        .iter()
        .map(|v| v.as_str().context("capabilities.allow holds a non-string"))
        .collect::<Result<Vec<_>>>()?;
    cap_mask(names)
}

/// Violations of the per-process promise: seccomp filter mode, no_new_privs, every
/// capability set within `allowed_caps`, inheritable and ambient empty, and a user
/// namespace whose root is not host root.
pub fn check_process(status_text: &str, uid_map_text: &str, allowed_caps: u64) -> Vec<String> {
    let mut v = Vec::new();
    match parse_status(status_text) {
        Err(e) => v.push(format!("{e:#}")),
        Ok(s) => {
            if s.seccomp != 2 {
                v.push(format!("Seccomp is {} (want 2, filter)", s.seccomp));
            }
            if s.no_new_privs != 1 {
                v.push(format!("NoNewPrivs is {} (want 1)", s.no_new_privs));
            }
            for (set, mask) in [
                ("CapEff", s.cap_eff),
                ("CapPrm", s.cap_prm),
                ("CapBnd", s.cap_bnd),
            ] {
                let extra = mask & !allowed_caps;
                if extra != 0 {
                    v.push(format!(
                        "{set} {mask:016x} has capabilities outside the allowlist: {:?}",
                        cap_names(extra)
                    ));
                }
            }
            for (set, mask) in [("CapInh", s.cap_inh), ("CapAmb", s.cap_amb)] {
                if mask != 0 {
                    v.push(format!(
                        "{set} is {mask:016x} (want empty): {:?}",
                        cap_names(mask)
                    ));
                }
            }
        }
    }
    match parse_id_map(uid_map_text) {
        Err(e) => v.push(format!("{e:#}")),
        Ok(map) => {
            let identity = map.len() == 1
                && map[0].inside == 0
                && map[0].outside == 0
                && map[0].count == 4_294_967_295;
            if identity {
                v.push("uid_map is the identity (0 0 4294967295): no user namespace".into());
            } else if map.is_empty() {
                v.push("uid_map is empty".into());
            } else if let Some(e) = map.iter().find(|e| e.outside == 0) {
                v.push(format!("uid_map maps host root into the container: {e:?}"));
            }
        }
    }
    v
}

/// Violations of "CPU, memory and pids limits, always" for host process `pid`.
pub fn check_cgroup_limits(pid: i32) -> Result<(CgroupLimits, Vec<String>)> {
    let cg = process_cgroups(pid)?;
    let limits = cg.limits()?;
    let mut v = Vec::new();
    if limits.memory.is_none() {
        v.push(format!("no memory limit in {}", cg.memory.display()));
    }
    if limits.cpu_quota.is_none() {
        v.push(format!("no CPU quota in {}", cg.cpu.display()));
    }
    if limits.pids.is_none() {
        v.push(format!("no pids limit in {}", cg.pids.display()));
    }
    Ok((limits, v))
}

/// Every violation of a container: its process as seen from inside (`status_text`,
/// `uid_map_text`) and its cgroup as seen from the host (`host_pid`).
pub fn check_container(
    status_text: &str,
    uid_map_text: &str,
    allowed_caps: u64,
    host_pid: i32,
) -> Result<Vec<String>> {
    let mut v = check_process(status_text, uid_map_text, allowed_caps);
    v.extend(check_cgroup_limits(host_pid)?.1);
    Ok(v)
}

/// Panic with every violation, if any.
pub fn assert_no_violations(what: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{what} is not hardened:\n  - {}",
        violations.join("\n  - ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARDENED: &str = "Name:\tsh\nCapInh:\t0000000000000000\nCapPrm:\t00000000000005fb\n\
        CapEff:\t00000000000005fb\nCapBnd:\t00000000000005fb\nCapAmb:\t0000000000000000\n\
        NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";

    fn default_caps() -> u64 {
        cap_mask([
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "KILL",
        ])
        .unwrap()
    }

    #[test]
    fn hardened_process_passes() {
        let v = check_process(HARDENED, "0 100000 65536\n", default_caps());
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn each_weakness_is_reported() {
        let host =
            "CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
            CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n";
        let v = check_process(host, "         0          0 4294967295\n", default_caps());
        let text = v.join("\n");
        assert!(text.contains("Seccomp is 0"), "{text}");
        assert!(text.contains("NoNewPrivs is 0"), "{text}");
        assert!(
            text.contains("CapEff") && text.contains("CAP_SYS_ADMIN"),
            "{text}"
        );
        assert!(text.contains("identity"), "{text}");
    }

    #[test]
    fn root_mapped_to_root_is_reported() {
        let v = check_process(HARDENED, "0 0 65536\n", default_caps());
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn reads_the_default_profile_allowlist() {
        let p = crate::paths::profile("default.toml").unwrap();
        assert_eq!(profile_cap_allowlist(&p).unwrap(), default_caps());
    }

    #[test]
    fn cap_mask_knows_names() {
        assert_eq!(cap_mask(["CAP_CHOWN"]).unwrap(), 1);
        assert_eq!(cap_mask(["kill"]).unwrap(), 1 << 5);
        assert!(cap_mask(["CAP_NOPE"]).is_err());
    }
}
