//! Shim memory with many pods running: PSS and RSS (smaps_rollup) of every shim of our
//! containerd, and the node's MemAvailable drop per pod. One runtime at a time, so the
//! node figure belongs to one runtime.

use crate::lifecycle::{discard_pod, wait_state, SLEEP_CMD};
use crate::machine::meminfo_kb;
use crate::model::Section;
use crate::runtimes::{active_runtimes, Rt};
use crate::util::{bar, check_stop};
use anyhow::{bail, Context, Result};
use k8s_cri::v1::ContainerState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stockade_integration::teardown::{arg_value, processes, ProcInfo};
use stockade_integration::{Containerd, Cri};

/// Rss and Pss of a process, kB, from /proc/PID/smaps_rollup.
pub fn smaps_rollup(pid: i32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok((field("Rss:")?, field("Pss:")?))
}

fn exe(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// A shim of our containerd and its helper processes (descendants running the same
/// binary, e.g. a zygote); container processes are not counted.
#[derive(Debug, Clone)]
pub struct Shim {
    pub pid: i32,
    pub binary: String,
    pub family: Vec<i32>,
}

/// Shims whose `-address` is our containerd's socket (containerd 1.6 daemonises them,
/// so they are not necessarily its children).
pub fn shims_of(c: &Containerd) -> Vec<Shim> {
    let procs = processes();
    let socket = c.socket.display().to_string();
    let mut shims = Vec::new();
    for p in &procs {
        let Some(exe_path) = exe(p.pid) else { continue };
        let binary = exe_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !binary.starts_with("containerd-shim") || arg_value(&p.args, "-address") != Some(&socket)
        {
            continue;
        }
        // A forked helper of a shim has the shim's command line too: count it with its
        // parent, not as a shim of its own.
        if procs
            .iter()
            .any(|q| q.pid == p.ppid && exe(q.pid).as_deref() == Some(exe_path.as_path()))
        {
            continue;
        }
        let family = family(p.pid, &exe_path, &procs);
        shims.push(Shim {
            pid: p.pid,
            binary,
            family,
        });
    }
    shims
}

/// `root` and its descendants that run `exe_path`.
fn family(root: i32, exe_path: &Path, procs: &[ProcInfo]) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for p in procs.iter().filter(|p| p.ppid == parent) {
            if exe(p.pid).as_deref() == Some(exe_path) && !out.contains(&p.pid) {
                out.push(p.pid);
            }
        }
        i += 1;
    }
    out
}

fn mem_available_kb() -> Result<f64> {
    // Three reads a little apart: MemAvailable jitters with page-cache activity.
    let mut sum = 0.0;
    for _ in 0..3 {
        sum += meminfo_kb("MemAvailable").context("no MemAvailable in /proc/meminfo")? as f64;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(sum / 3.0)
}

pub fn run(c: &Containerd, rts: &[Rt], pods: usize) -> Result<Section> {
    let mut sec = Section::new(
        "memory",
        &format!("Shim memory with {pods} pods running"),
        &format!(
            "{pods} pods of one runtime running at once, each with one busybox `{}` container; \
             shims found by their `-address` (our containerd's socket), each counted with its \
             helper processes running the same binary (container processes excluded). PSS and \
             RSS from /proc/PID/smaps_rollup. `shim_pss_per_pod` = total shim PSS / pods. \
             `node_mem_per_pod` = drop of MemAvailable from before the first pod to {pods} \
             pods running, / pods (includes the containers, the pause process and kernel \
             objects; other load on the machine makes it noisy). Runtimes one after the other.",
            SLEEP_CMD.join(" ")
        ),
    );
    // Seccomp changes neither shim memory nor the rootfs: runc-seccomp is left out here.
    let rts: Vec<Rt> = active_runtimes(rts, &mut sec)
        .into_iter()
        .filter(|r| !r.runc_seccomp)
        .collect();
    let cri = c.cri()?;
    let pb = bar(rts.len() * (pods + 1), "memory");
    for rt in &rts {
        check_stop()?;
        pb.set_message(rt.label.clone());
        let mut pod_ids = Vec::new();
        let r = measure(c, &cri, rt, pods, &mut pod_ids, &mut sec, &pb);
        for pod in &pod_ids {
            discard_pod(&cri, pod);
        }
        if let Err(e) = r {
            sec.fail(&rt.label, &e);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(sec)
}

fn measure(
    c: &Containerd,
    cri: &Cri,
    rt: &Rt,
    pods: usize,
    pod_ids: &mut Vec<String>,
    sec: &mut Section,
    pb: &indicatif::ProgressBar,
) -> Result<()> {
    // Shims of earlier pods may take a moment to exit; they are not counted.
    let _ = stockade_integration::exec::wait_for(
        "earlier shims to exit",
        Duration::from_secs(15),
        || shims_of(c).is_empty().then_some(()),
    );
    let earlier: Vec<i32> = shims_of(c).iter().map(|s| s.pid).collect();
    if !earlier.is_empty() {
        sec.notes.push(format!(
            "{}: shims of earlier pods still ran (not counted): {earlier:?}",
            rt.label
        ));
    }
    let before = mem_available_kb()?;
    for i in 0..pods {
        check_stop()?;
        let pod_cfg = cri.pod_config(&format!("bench-mem-{}-{i}", rt.label));
        let pod = cri.run_pod_sandbox(&pod_cfg, rt.handler())?;
        pod_ids.push(pod.clone());
        let ctr_cfg = rt.container_config(cri, "app", SLEEP_CMD);
        let id = cri.run_container(&pod, &ctr_cfg, &pod_cfg)?;
        wait_state(
            cri,
            &id,
            ContainerState::ContainerRunning,
            Duration::from_secs(60),
        )?;
        pb.inc(1);
    }
    // Let lazily touched pages and the page cache settle.
    std::thread::sleep(Duration::from_secs(2));
    let after = mem_available_kb()?;
    let shims: Vec<Shim> = shims_of(c)
        .into_iter()
        .filter(|s| s.binary == rt.shim_binary() && !earlier.contains(&s.pid))
        .collect();
    if shims.is_empty() {
        bail!(
            "no {} process found for {pods} running pods",
            rt.shim_binary()
        );
    }
    let mut total_pss = 0.0;
    let mut total_rss = 0.0;
    let mut family_sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for shim in &shims {
        let (mut rss, mut pss) = (0u64, 0u64);
        for pid in &shim.family {
            let (r, p) = smaps_rollup(*pid)?;
            rss += r;
            pss += p;
        }
        *family_sizes.entry(shim.family.len()).or_default() += 1;
        let (rss_mb, pss_mb) = (rss as f64 / 1024.0, pss as f64 / 1024.0);
        sec.push(&rt.label, "shim_pss_each", "MB", pss_mb);
        sec.push(&rt.label, "shim_rss_each", "MB", rss_mb);
        total_pss += pss_mb;
        total_rss += rss_mb;
    }
    let n = pods as f64;
    sec.push(&rt.label, "shim_pss_per_pod", "MB", total_pss / n);
    sec.push(&rt.label, "shim_rss_per_pod", "MB", total_rss / n);
    sec.push(
        &rt.label,
        "node_mem_per_pod",
        "MB",
        (before - after) / 1024.0 / n,
    );
    sec.notes.push(format!(
        "{}: {} {} process tree(s) for {pods} pods (processes per tree -> trees: {:?})",
        rt.label,
        shims.len(),
        rt.shim_binary(),
        family_sizes
    ));
    Ok(())
}
