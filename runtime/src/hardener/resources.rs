//! cgroup limits: defaults where the pod set none, ceilings it cannot exceed.

use super::{Refusal, Report, Rule};
use crate::oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};
use crate::profile::{CgroupSettings, OnExcess};

/// cgroup v2 keys that would override the limits below if a pod passed them raw.
const GUARDED_UNIFIED_KEYS: [&str; 4] = ["cpu.max", "memory.max", "memory.swap.max", "pids.max"];
/// CFS accepts periods from 1 ms to 1 s and quotas from 1 ms.
const CPU_PERIOD_RANGE_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
const MIN_CPU_QUOTA_US: i64 = 1_000;

/// Give `resources` CPU, memory and pids limits within the profile's ceilings.
pub(crate) fn limit(
    mut resources: LinuxResources,
    cg: &CgroupSettings,
    report: &mut Report,
) -> Result<LinuxResources, Refusal> {
    let memory = limit_memory(resources.memory().unwrap_or_default(), cg, report)?;
    let cpu = limit_cpu(resources.cpu().clone().unwrap_or_default(), cg, report)?;
    let pids = limit_pids(resources.pids().unwrap_or_default(), cg, report)?;
    resources.set_memory(Some(memory));
    resources.set_cpu(Some(cpu));
    resources.set_pids(Some(pids));

    if let Some(unified) = resources.unified_mut() {
        for key in GUARDED_UNIFIED_KEYS {
            if let Some(value) = unified.remove(key) {
                report.change(
                    "cgroups",
                    format!(
                        "dropped raw cgroup v2 setting {key}={value:?}: the limits above decide it"
                    ),
                );
            }
        }
    }
    Ok(resources)
}

/// A request above the ceiling: lowered to it, or refused, as the profile says.
fn over_ceiling(
    cg: &CgroupSettings,
    rule: Rule,
    what: String,
    report: &mut Report,
) -> Result<(), Refusal> {
    match cg.on_excess {
        OnExcess::Refuse => Err(Refusal {
            rule,
            reason: format!("{what}, above the profile's ceiling"),
        }),
        OnExcess::Clamp => {
            report.change("cgroups", format!("{what}: lowered to the ceiling"));
            Ok(())
        }
    }
}

fn limit_memory(
    mut memory: LinuxMemory,
    cg: &CgroupSettings,
    report: &mut Report,
) -> Result<LinuxMemory, Refusal> {
    let ceiling = cg.ceilings.memory_bytes;
    let limit = match memory.limit() {
        Some(l) if l > 0 && l <= ceiling => l,
        Some(l) if l > ceiling => {
            over_ceiling(
                cg,
                Rule::MemoryCeiling,
                format!("memory limit {l} bytes asked, ceiling {ceiling}"),
                report,
            )?;
            ceiling
        }
        asked => {
            report.change(
                "cgroups",
                format!(
                    "memory limit set to the default {} bytes ({})",
                    cg.defaults.memory_bytes,
                    no_limit(asked)
                ),
            );
            cg.defaults.memory_bytes
        }
    };
    memory.set_limit(Some(limit));
    // memory+swap at the memory limit: no swap beyond what the limit allows.
    if let Some(swap) = memory.swap() {
        if swap != limit {
            report.change(
                "cgroups",
                format!("memory+swap limit {swap} set to the memory limit {limit}"),
            );
            memory.set_swap(Some(limit));
        }
    }
    if let Some(reservation) = memory.reservation() {
        if reservation > limit {
            report.change(
                "cgroups",
                format!("memory reservation {reservation} lowered to the limit {limit}"),
            );
            memory.set_reservation(Some(limit));
        }
    }
    if memory.disable_oom_killer() == Some(true) {
        report.change(
            "cgroups",
            "OOM killer re-enabled: a container at its limit is killed, not frozen".to_string(),
        );
        memory.set_disable_oom_killer(Some(false));
    }
    Ok(memory)
}

fn limit_cpu(
    mut cpu: LinuxCpu,
    cg: &CgroupSettings,
    report: &mut Report,
) -> Result<LinuxCpu, Refusal> {
    let period = match cpu.period() {
        Some(p) if CPU_PERIOD_RANGE_US.contains(&p) => p,
        Some(p) => {
            report.change(
                "cgroups",
                format!(
                    "CPU period {p}us is outside 1ms..1s: using {}us",
                    cg.cpu_period_us
                ),
            );
            cg.cpu_period_us
        }
        None => cg.cpu_period_us,
    };
    // Below one core, a short period would give the ceiling (or default) a quota under
    // CFS's 1 ms minimum, and rounding it up to 1 ms would exceed the ceiling: lengthen the
    // period until the smaller of the two is at least 1 ms.
    let smallest = cg
        .ceilings
        .cpu_millicores
        .min(cg.defaults.cpu_millicores)
        .max(1);
    let floor = (MIN_CPU_QUOTA_US as u64 * 1000).div_ceil(smallest);
    let period = if period < floor {
        let longer = floor.min(*CPU_PERIOD_RANGE_US.end());
        report.change(
            "cgroups",
            format!(
                "CPU period {period}us is too short for a quota of {smallest} millicores: using {longer}us"
            ),
        );
        longer
    } else {
        period
    };
    // Quotas scale with the period: millicores * period / 1000.
    let quota_for = |millicores: u64| -> i64 {
        i64::try_from(millicores.saturating_mul(period) / 1000)
            .unwrap_or(i64::MAX)
            .max(MIN_CPU_QUOTA_US)
    };
    let ceiling = quota_for(cg.ceilings.cpu_millicores);
    let quota = match cpu.quota() {
        Some(q) if q > 0 && q <= ceiling => q.max(MIN_CPU_QUOTA_US),
        Some(q) if q > ceiling => {
            over_ceiling(
                cg,
                Rule::CpuCeiling,
                format!(
                    "CPU quota {q}us per {period}us asked ({} cores), ceiling {} cores",
                    cores(q, period),
                    cores(ceiling, period)
                ),
                report,
            )?;
            ceiling
        }
        asked => {
            let q = quota_for(cg.defaults.cpu_millicores);
            report.change(
                "cgroups",
                format!(
                    "CPU quota set to the default {q}us per {period}us ({} cores; {})",
                    cores(q, period),
                    no_limit(asked)
                ),
            );
            q
        }
    };
    cpu.set_period(Some(period));
    cpu.set_quota(Some(quota));
    Ok(cpu)
}

/// Why a request is no limit: none given, or zero or negative (OCI's -1 is "unlimited").
fn no_limit(asked: Option<i64>) -> String {
    match asked {
        None => "none asked".into(),
        Some(v) => format!("{v} asked, which is no limit"),
    }
}

fn cores(quota: i64, period: u64) -> String {
    format!("{:.2}", quota as f64 / period as f64)
}

fn limit_pids(
    pids: LinuxPids,
    cg: &CgroupSettings,
    report: &mut Report,
) -> Result<LinuxPids, Refusal> {
    let ceiling = cg.ceilings.pids;
    let limit = match pids.limit() {
        l if l > 0 && l <= ceiling => l,
        l if l > ceiling => {
            over_ceiling(
                cg,
                Rule::PidsCeiling,
                format!("pids limit {l} asked, ceiling {ceiling}"),
                report,
            )?;
            ceiling
        }
        asked => {
            report.change(
                "cgroups",
                format!(
                    "pids limit set to the default {} ({})",
                    cg.defaults.pids,
                    no_limit((asked != 0).then_some(asked))
                ),
            );
            cg.defaults.pids
        }
    };
    let mut pids = pids;
    pids.set_limit(limit);
    Ok(pids)
}
