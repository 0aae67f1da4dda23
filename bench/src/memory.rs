//! Shim memory with many pods running: PSS and RSS (smaps_rollup) of every shim of our
//! containerd, and the node's MemAvailable drop per pod. Measured by the scale section
//! at its top level, one runtime at a time, so the node figure belongs to one runtime.

use crate::lifecycle::SLEEP_CMD;
use crate::machine::meminfo_kb;
use crate::model::Section;
use crate::runtimes::Rt;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stockade_integration::teardown::{arg_value, processes, ProcInfo};
use stockade_integration::Containerd;

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
        shims.push(Shim { binary, family });
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

pub fn mem_available_kb() -> Result<f64> {
    // Three reads a little apart: MemAvailable jitters with page-cache activity.
    let mut sum = 0.0;
    for _ in 0..3 {
        sum += meminfo_kb("MemAvailable").context("no MemAvailable in /proc/meminfo")? as f64;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(sum / 3.0)
}

/// How the memory section measures (for its method text).
pub fn method(pods: usize) -> String {
    format!(
        "{pods} pods of one runtime running at once (the scale section's top level), each \
         with one busybox `{}` container; shims found by their `-address` (our \
         containerd's socket), each counted with its helper processes running the same \
         binary (container processes excluded). PSS and RSS from /proc/PID/smaps_rollup. \
         `shim_pss_per_pod` = total shim PSS / pods, `shim_rss_per_pod` likewise. \
         `node_mem_per_pod` = drop of MemAvailable from before the first pod to {pods} pods \
         running, / pods (includes the containers, the pause process and kernel objects; \
         other load on the machine makes it noisy). Runtimes one after the other.",
        SLEEP_CMD.join(" ")
    )
}

/// Shim memory of `rt` with `pods` of its pods running: waits (bounded) until exactly
/// one shim tree per pod is left (shims of pods just removed may still be exiting).
pub struct Snapshot {
    pub pss_each_mb: Vec<f64>,
    pub rss_each_mb: Vec<f64>,
    /// Processes per shim tree -> number of trees.
    pub family_sizes: BTreeMap<usize, usize>,
}

impl Snapshot {
    pub fn pss_total(&self) -> f64 {
        self.pss_each_mb.iter().sum()
    }

    pub fn rss_total(&self) -> f64 {
        self.rss_each_mb.iter().sum()
    }
}

pub fn snapshot(c: &Containerd, rt: &Rt, pods: usize) -> Result<Snapshot> {
    let ours = || -> Vec<Shim> {
        shims_of(c)
            .into_iter()
            .filter(|s| s.binary == rt.shim_binary())
            .collect()
    };
    let _ = stockade_integration::exec::wait_for(
        "one shim per running pod",
        Duration::from_secs(15),
        || (ours().len() == pods).then_some(()),
    );
    let shims = ours();
    if shims.is_empty() {
        bail!(
            "no {} process found for {pods} running pods",
            rt.shim_binary()
        );
    }
    let mut snap = Snapshot {
        pss_each_mb: Vec::new(),
        rss_each_mb: Vec::new(),
        family_sizes: BTreeMap::new(),
    };
    for shim in &shims {
        let (mut rss, mut pss) = (0u64, 0u64);
        for pid in &shim.family {
            let (r, p) = smaps_rollup(*pid)?;
            rss += r;
            pss += p;
        }
        *snap.family_sizes.entry(shim.family.len()).or_default() += 1;
        snap.pss_each_mb.push(pss as f64 / 1024.0);
        snap.rss_each_mb.push(rss as f64 / 1024.0);
    }
    Ok(snap)
}

/// Record a snapshot of `rt` at `pods` pods in the memory section.
pub fn record(sec: &mut Section, rt: &Rt, pods: usize, snap: &Snapshot, node_drop_kb: f64) {
    for (p, r) in snap.pss_each_mb.iter().zip(&snap.rss_each_mb) {
        sec.push(&rt.label, "shim_pss_each", "MB", *p);
        sec.push(&rt.label, "shim_rss_each", "MB", *r);
    }
    let n = pods.max(1) as f64;
    sec.push(&rt.label, "shim_pss_per_pod", "MB", snap.pss_total() / n);
    sec.push(&rt.label, "shim_rss_per_pod", "MB", snap.rss_total() / n);
    sec.push(
        &rt.label,
        "node_mem_per_pod",
        "MB",
        node_drop_kb / 1024.0 / n,
    );
    sec.notes.push(format!(
        "{}: {} {} process tree(s) for {pods} pods (processes per tree -> trees: {:?})",
        rt.label,
        snap.pss_each_mb.len(),
        rt.shim_binary(),
        snap.family_sizes
    ));
}
