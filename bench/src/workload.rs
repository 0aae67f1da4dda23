//! Workload overhead inside the container: `stockade-load` (a static C program in the
//! bench image) times a getppid loop, pipe read/write, fork+exec, file create+write in
//! the rootfs and a CPU loop, and prints its figures to the container log.

use crate::images::{LOAD_BINARY, LOAD_IMAGE};
use crate::lifecycle::{discard_pod, wait_state};
use crate::model::Section;
use crate::runtimes::{active_runtimes, Rt};
use crate::util::{bar, check_stop};
use anyhow::{bail, Context, Result};
use k8s_cri::v1::{ContainerState, ImageSpec, LinuxContainerResources};
use std::collections::BTreeMap;
use std::time::Duration;
use stockade_integration::{Containerd, Cri};

/// The limits Stockade applies by default (from profiles/default.toml): runc gets the
/// same ones explicitly, so both loops run under the same CPU limit.
#[derive(Debug, Clone, Copy)]
pub struct DefaultLimits {
    pub cpu_millicores: u64,
    pub period_us: u64,
    pub memory_bytes: i64,
}

pub fn default_limits() -> Result<DefaultLimits> {
    let path = stockade_integration::paths::profile("default.toml")?;
    let p = stockade_runtime::profile::Profile::load(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(DefaultLimits {
        cpu_millicores: p.cgroups.defaults.cpu_millicores,
        period_us: p.cgroups.cpu_period_us,
        memory_bytes: p.cgroups.defaults.memory_bytes,
    })
}

/// `RESULT <name> <value> <unit>` lines of stockade-load's output.
pub fn parse_results(log: &str) -> Result<Vec<(String, f64, String)>> {
    let mut out = Vec::new();
    for line in log.lines() {
        let mut f = line.split_whitespace();
        if f.next() != Some("RESULT") {
            continue;
        }
        match (f.next(), f.next().map(str::parse::<f64>), f.next()) {
            (Some(name), Some(Ok(v)), Some(unit)) => {
                out.push((name.to_string(), v, unit.to_string()))
            }
            _ => bail!("malformed result line {line:?}"),
        }
    }
    if !log.lines().any(|l| l.trim() == "DONE") {
        bail!("stockade-load did not finish; its output:\n{log}");
    }
    Ok(out)
}

pub fn run(c: &Containerd, rts: &[Rt], reps: usize, scale: u32, warmup: bool) -> Result<Section> {
    let mut sec = Section::new(
        "workload",
        "Workload overhead inside the container",
        &format!(
            "A static C program (bench/load/stockade-load.c, built by build.rs) runs as the \
             container's command and times itself with CLOCK_MONOTONIC: {} getppid via \
             syscall(2); {} one-byte write+read on a pipe; {} fork + execve of itself + \
             waitpid; {} create+write(4 KiB)+close of a file in /bench-work (the rootfs: \
             overlay upper dir, idmapped lower for Stockade); a {}-round xorshift CPU loop. \
             CPU limit: Stockade's default from profiles/default.toml (no limit in the CRI \
             request), runc the same quota explicitly. {reps} container(s) per runtime, \
             alternating{}; lower is better for every figure.",
            2_000_000 / scale,
            500_000 / scale,
            2_000 / scale,
            5_000 / scale,
            300_000_000 / scale,
            if warmup {
                ", after one warm-up container per runtime (not counted)"
            } else {
                ""
            }
        ),
    );
    if LOAD_BINARY.is_empty() {
        sec.skipped = Some(
            "stockade-load was not built (no static C toolchain when stockade-bench was \
             compiled; see the cargo warning)"
                .into(),
        );
        return Ok(sec);
    }
    let limits = default_limits()?;
    sec.notes.push(format!(
        "CPU limit {} millicores (period {} us), memory {} MiB",
        limits.cpu_millicores,
        limits.period_us,
        limits.memory_bytes / (1 << 20)
    ));
    let rts = active_runtimes(rts, &mut sec);
    let cri = c.cri()?;
    let mut pods: BTreeMap<String, (String, k8s_cri::v1::PodSandboxConfig)> = BTreeMap::new();
    let first = usize::from(!warmup);
    let pb = bar((reps + 1 - first) * rts.len(), "workload");
    let result = (|| -> Result<()> {
        for i in first..=reps {
            for rt in &rts {
                check_stop()?;
                if sec.has_failed(&rt.label) {
                    continue;
                }
                pb.set_message(rt.label.clone());
                let r = one(&cri, rt, i, scale, limits, &mut pods);
                match r {
                    Ok(_) if i == 0 => {} // warm-up
                    Ok(results) => {
                        for (name, v, unit) in results {
                            sec.push(&rt.label, &name, &unit, v);
                        }
                    }
                    Err(e) => sec.fail(&rt.label, &e),
                }
                pb.inc(1);
            }
        }
        Ok(())
    })();
    for (pod, _) in pods.values() {
        discard_pod(&cri, pod);
    }
    pb.finish_and_clear();
    result.map(|_| sec)
}

/// One workload container of `rt` (in its pod, created on first use); its results.
fn one(
    cri: &Cri,
    rt: &Rt,
    i: usize,
    scale: u32,
    limits: DefaultLimits,
    pods: &mut BTreeMap<String, (String, k8s_cri::v1::PodSandboxConfig)>,
) -> Result<Vec<(String, f64, String)>> {
    if !pods.contains_key(&rt.label) {
        let cfg = cri.pod_config(&format!("bench-load-{}", rt.label));
        let pod = cri
            .run_pod_sandbox(&cfg, rt.handler())
            .context("RunPodSandbox")?;
        pods.insert(rt.label.clone(), (pod, cfg));
    }
    let Some((pod, pod_cfg)) = pods.get(&rt.label) else {
        bail!("no pod for {}", rt.label);
    };
    let scale_arg = scale.to_string();
    let mut cfg = rt.container_config(
        cri,
        &format!("load-{i}"),
        &["/stockade-load", "all", scale_arg.as_str()],
    );
    cfg.image = Some(ImageSpec {
        image: LOAD_IMAGE.to_string(),
        ..Default::default()
    });
    if !rt.rt.hardened() {
        if let Some(linux) = cfg.linux.as_mut() {
            linux.resources = Some(LinuxContainerResources {
                cpu_period: limits.period_us as i64,
                cpu_quota: (limits.cpu_millicores * limits.period_us / 1000) as i64,
                memory_limit_in_bytes: limits.memory_bytes,
                ..Default::default()
            });
        }
    }
    let id = cri
        .run_container(pod, &cfg, pod_cfg)
        .context("starting the workload container")?;
    let r = (|| -> Result<Vec<(String, f64, String)>> {
        wait_state(
            cri,
            &id,
            ContainerState::ContainerExited,
            Duration::from_secs(600),
        )?;
        let status = cri.container_status(&id)?.status.context("no status")?;
        let log = cri.container_logs(&id).unwrap_or_default();
        if status.exit_code != 0 {
            bail!(
                "stockade-load exited with {} ({}): {}",
                status.exit_code,
                status.reason,
                log.trim()
            );
        }
        parse_results(&log)
    })();
    let _ = cri.remove_container(&id);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        let log = "RESULT getppid 51.20 ns/op\nCHECK 7\nRESULT cpu_loop 12.5 ms\nDONE\n";
        let r = parse_results(log).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], ("getppid".to_string(), 51.2, "ns/op".to_string()));
    }

    #[test]
    fn unfinished_or_malformed_output_is_an_error() {
        assert!(parse_results("RESULT getppid 5 ns/op\n").is_err());
        assert!(parse_results("RESULT getppid x ns/op\nDONE\n").is_err());
    }
}
