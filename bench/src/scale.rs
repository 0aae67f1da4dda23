//! Cost as the node fills up: CRI start latency with 0, 100, 250 (configurable) pods of
//! the same runtime already running, and the shims' memory at each level (the memory
//! section is the top level's).

use crate::floor;
use crate::lifecycle::{discard_pod, pod_cycle, wait_state, SLEEP_CMD};
use crate::memory::{self, mem_available_kb};
use crate::model::Section;
use crate::phases::Ran;
use crate::report::{summary, Figure};
use crate::runtimes::{active, Rt, FLOOR};
use crate::stats::summarize;
use crate::svg;
use crate::util::{bar, check_stop};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use k8s_cri::v1::ContainerState;
use std::time::Duration;
use stockade_integration::{Containerd, Cri};

pub fn start_metric(pods: usize) -> String {
    format!("start_total_{pods}_pods")
}

/// The CRI calls of one timed cycle, as recorded per level (`<call>_<N>_pods`):
/// RunPodSandbox, CreateContainer, and StartContainer until ContainerStatus says running.
pub const CALLS: &[&str] = &["run_pod_sandbox", "create_container", "start_container"];

pub fn call_metric(call: &str, pods: usize) -> String {
    format!("{call}_{pods}_pods")
}

fn pss_metric(pods: usize) -> String {
    format!("shim_pss_per_pod_{pods}_pods")
}

fn rss_metric(pods: usize) -> String {
    format!("shim_rss_per_pod_{pods}_pods")
}

/// The pod counts a scale section has start samples for, ascending.
pub fn levels_of(sec: &Section) -> Vec<usize> {
    let mut v: Vec<usize> = sec
        .metrics()
        .iter()
        .filter_map(|m| {
            m.strip_prefix("start_total_")?
                .strip_suffix("_pods")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Start one background pod with a sleeping container, running when this returns.
pub fn background_pod(cri: &Cri, rt: &Rt, i: usize, pods: &mut Vec<String>) -> Result<()> {
    let cfg = cri.pod_config(&format!("bench-bg-{}-{i}", rt.label));
    let pod = cri
        .run_pod_sandbox(&cfg, rt.handler())
        .context("RunPodSandbox")?;
    pods.push(pod.clone());
    let ctr = rt.container_config(cri, "app", SLEEP_CMD);
    let id = cri
        .run_container(&pod, &ctr, &cfg)
        .context("CreateContainer/StartContainer")?;
    wait_state(
        cri,
        &id,
        ContainerState::ContainerRunning,
        Duration::from_secs(60),
    )
}

/// Returns (scale section, memory section).
pub fn run(
    c: &Containerd,
    rts: &[Rt],
    levels: &[usize],
    samples: usize,
    ran: &mut Vec<Ran>,
) -> Result<(Section, Section)> {
    let mut levels = levels.to_vec();
    levels.sort_unstable();
    levels.dedup();
    let top = levels.last().copied().unwrap_or(0);
    let mut sec = Section::new(
        "scale",
        &format!(
            "Start latency as the node fills up ({} pods running)",
            levels
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &format!(
            "Per runtime, one after the other: pods of that runtime (busybox `{}`) are \
             started until the level is reached and kept running; then {samples} serial CRI \
             cycles (as in the serial lifecycle section) are timed at that level \
             (`start_total_<N>_pods` = RunPodSandbox → running with N pods already \
             running; `run_pod_sandbox_<N>_pods`, `create_container_<N>_pods` and \
             `start_container_<N>_pods` (StartContainer → running) are its CRI calls), and \
             the shims of the running pods are measured \
             (`shim_pss_per_pod_<N>_pods`, `shim_rss_per_pod_<N>_pods`). Levels cannot \
             interleave runtimes (each node holds one runtime's pods), so drift on the \
             machine between runtimes is not cancelled out here. The floor runs the same \
             levels: its growth is containerd's and CNI's, which every runtime pays, and each \
             runtime's own share is its figure minus the floor's at the same level.",
            SLEEP_CMD.join(" ")
        ),
    );
    let mut mem = Section::new(
        "memory",
        &format!("Shim memory with {top} pods running"),
        "",
    );
    mem.method = memory::method(top);
    sec.runtimes_in_turn = true;
    // Seccomp changes neither start path nor shim memory. The floor runs too: its growth
    // is containerd's (and CNI's), which every runtime pays as the node fills up.
    let rts: Vec<Rt> = active(rts, &mut sec)
        .into_iter()
        .filter(|r| !r.runc_seccomp)
        .collect();
    for r in &rts {
        if let Some(e) = sec.failures.get(&r.label) {
            mem.failures.insert(r.label.clone(), e.clone());
        }
    }
    let cri = c.cri()?;
    let pb = bar(rts.len() * (top + levels.len() * samples), "scale");
    for rt in &rts {
        pb.set_message(rt.label.clone());
        let mut pods = Vec::new();
        let r = one_runtime(
            c, &cri, rt, &levels, samples, &mut pods, &mut sec, &mut mem, &pb, ran,
        );
        let t = std::time::Instant::now();
        for pod in &pods {
            discard_pod(&cri, pod);
        }
        sec.push(
            &rt.label,
            "teardown_per_pod",
            "ms",
            t.elapsed().as_secs_f64() * 1e3 / pods.len().max(1) as f64,
        );
        if let Err(e) = r {
            sec.fail(&rt.label, &e);
            mem.fail(&rt.label, &e);
        }
    }
    pb.finish_and_clear();
    own_share_notes(&mut sec, &levels);
    Ok((sec, mem))
}

/// How the floor grew from the first level to the last, and each runtime's own share
/// (its p50 minus the floor's at the same level) at both: the growth that is its own.
fn own_share_notes(sec: &mut Section, levels: &[usize]) {
    let (Some(&first), Some(&last)) = (levels.first(), levels.last()) else {
        return;
    };
    let p50 =
        |runtime: &str, level: usize| summary(sec, runtime, &start_metric(level)).map(|s| s.p50);
    let (Some(f0), Some(f1)) = (p50(FLOOR, first), p50(FLOOR, last)) else {
        return;
    };
    let mut notes = vec![format!(
        "the floor (containerd's own share) at {first} → {last} pods: {f0:.1} → {f1:.1} ms \
         ({:.3}×, {:+.1} ms)",
        f1 / f0,
        f1 - f0
    )];
    let runtimes: std::collections::BTreeSet<&str> = sec
        .series
        .iter()
        .map(|s| s.runtime.as_str())
        .filter(|r| *r != FLOOR)
        .collect();
    for rt in runtimes {
        let own = |level| floor::own_share(sec, rt, &start_metric(level)).map(|o| o.p50);
        if let (Some(r0), Some(r1), Some(own0), Some(own1)) =
            (p50(rt, first), p50(rt, last), own(first), own(last))
        {
            notes.push(format!(
                "{rt}: start p50 {r0:.1} → {r1:.1} ms ({:+.1} ms); own share {own0:.1} → \
                 {own1:.1} ms ({:.3}×)",
                r1 - r0,
                own1 / own0
            ));
        }
    }
    sec.notes.extend(notes);
}

#[allow(clippy::too_many_arguments)]
fn one_runtime(
    c: &Containerd,
    cri: &Cri,
    rt: &Rt,
    levels: &[usize],
    samples: usize,
    pods: &mut Vec<String>,
    sec: &mut Section,
    mem: &mut Section,
    pb: &ProgressBar,
    ran: &mut Vec<Ran>,
) -> Result<()> {
    // Shims of earlier sections' pods may take a moment to exit.
    let _ = stockade_integration::exec::wait_for(
        "earlier shims to exit",
        Duration::from_secs(15),
        || memory::shims_of(c).is_empty().then_some(()),
    );
    let before = mem_available_kb()?;
    let top = levels.last().copied().unwrap_or(0);
    for &level in levels {
        let t = std::time::Instant::now();
        while pods.len() < level {
            check_stop()?;
            background_pod(cri, rt, pods.len(), pods)?;
            pb.inc(1);
        }
        if level > 0 {
            sec.push(
                &rt.label,
                "fill_per_pod",
                "ms",
                t.elapsed().as_secs_f64() * 1e3 / level as f64,
            );
        }
        // The floor's shim is the bench's own stand-in: nothing to weigh.
        if level > 0 && !rt.is_floor() {
            // Let lazily touched pages settle before weighing the shims.
            std::thread::sleep(Duration::from_secs(2));
            let snap = memory::snapshot(c, rt, level)?;
            sec.push(
                &rt.label,
                &pss_metric(level),
                "MB",
                snap.pss_total() / level as f64,
            );
            sec.push(
                &rt.label,
                &rss_metric(level),
                "MB",
                snap.rss_total() / level as f64,
            );
            if level == top {
                let drop = before - mem_available_kb()?;
                memory::record(mem, rt, level, &snap, drop);
            }
        }
        for i in 0..samples {
            check_stop()?;
            let cycle = pod_cycle(cri, rt, &format!("bench-scale-{}-{level}-{i}", rt.label))?;
            sec.push(&rt.label, &start_metric(level), "ms", cycle.start_total);
            for (call, ms) in CALLS.iter().zip([cycle.run_pod, cycle.create, cycle.start]) {
                sec.push(&rt.label, &call_metric(call, level), "ms", ms);
            }
            // The floor's shim writes no spans to break down.
            if !rt.is_floor() {
                for (kind, id) in [("sandbox", &cycle.pod_id), ("app", &cycle.container_id)] {
                    ran.push(Ran {
                        runtime: rt.label.clone(),
                        kind: format!("{kind} {level} pods"),
                        id: id.clone(),
                    });
                }
            }
            pb.inc(1);
        }
    }
    Ok(())
}

/// p50 with p10-p90 per level, one line per runtime, for metrics named by `metric`.
fn level_lines(sec: &Section, metric: fn(usize) -> String) -> Vec<svg::Line> {
    let levels = levels_of(sec);
    let mut runtimes: Vec<String> = Vec::new();
    for s in &sec.series {
        if !runtimes.contains(&s.runtime) {
            runtimes.push(s.runtime.clone());
        }
    }
    runtimes
        .into_iter()
        .filter_map(|r| {
            let points: Vec<svg::Point> = levels
                .iter()
                .filter_map(|&n| {
                    let s = summarize(&sec.samples(&r, &metric(n))?.samples)?;
                    Some(svg::Point {
                        x: n as f64,
                        y: s.p50,
                        lo: s.p10,
                        hi: s.p90,
                    })
                })
                .collect();
            (!points.is_empty()).then_some(svg::Line { label: r, points })
        })
        .collect()
}

pub fn figures(sec: &Section) -> Vec<Figure> {
    let mut out = Vec::new();
    let start = level_lines(sec, start_metric);
    if !start.is_empty() {
        out.push((
            "scale_start.svg".into(),
            svg::lines(
                "CRI start latency against pods already running",
                "pods running",
                "ms (p50, whiskers p10–p90)",
                &start,
            ),
        ));
    }
    let pss = level_lines(sec, pss_metric);
    if !pss.is_empty() {
        out.push((
            "scale_memory.svg".into(),
            svg::lines(
                "Shim PSS per pod against pods running",
                "pods running",
                "MB per pod",
                &pss,
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_figures_come_from_the_metric_names() {
        let mut s = Section::new("scale", "S", "");
        for n in [250, 0, 100] {
            s.push("runc", &start_metric(n), "ms", 100.0 + n as f64);
            s.push("stockade", &start_metric(n), "ms", 80.0);
        }
        s.push("stockade", &pss_metric(100), "MB", 1.5);
        assert_eq!(levels_of(&s), vec![0, 100, 250]);
        let figs = figures(&s);
        assert_eq!(figs.len(), 2);
        assert_eq!(figs[0].1.matches("<polyline").count(), 2);
    }
}
