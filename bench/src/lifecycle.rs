//! CRI lifecycle latency: RunPodSandbox -> CreateContainer -> StartContainer -> running,
//! then StopPodSandbox -> RemovePodSandbox; serial and N-way parallel, runtimes
//! interleaved A/B/A/B so drift on the machine hits all of them alike.

use crate::model::Section;
use crate::phases::Ran;
use crate::runtimes::{active, Rt};
use crate::util::{bar, check_stop, ms_since};
use anyhow::{bail, Context, Result};
use k8s_cri::v1::ContainerState;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use stockade_integration::{Containerd, Cri};

/// The app container of every lifecycle pod.
pub const SLEEP_CMD: &[&str] = &["/bin/sleep", "3600"];

/// One full cycle, milliseconds per phase, and the ids CRI gave the pod (its sandbox
/// container's id) and the app container.
#[derive(Debug, Clone)]
pub struct Cycle {
    pub pod_id: String,
    pub container_id: String,
    pub run_pod: f64,
    pub create: f64,
    pub start: f64,
    pub start_total: f64,
    pub stop_pod: f64,
    pub remove_pod: f64,
    pub cycle_total: f64,
}

impl Cycle {
    pub fn record(&self, sec: &mut Section, runtime: &str) {
        for (metric, v) in [
            ("start_total", self.start_total),
            ("run_pod_sandbox", self.run_pod),
            ("create_container", self.create),
            ("start_container", self.start),
            ("stop_pod_sandbox", self.stop_pod),
            ("remove_pod_sandbox", self.remove_pod),
            ("cycle_total", self.cycle_total),
        ] {
            sec.push(runtime, metric, "ms", v);
        }
    }
}

/// Poll ContainerStatus until the container is `want` (tight polling: this is timed).
pub fn wait_state(cri: &Cri, id: &str, want: ContainerState, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = cri.container_state(id)?;
        if state == want {
            return Ok(());
        }
        if want == ContainerState::ContainerRunning && state == ContainerState::ContainerExited {
            bail!("container {id} exited instead of running");
        }
        if Instant::now() > deadline {
            bail!("container {id} still {state:?} after {timeout:?} (waiting for {want:?})");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Stop and remove a pod, ignoring errors (cleanup after a failed step).
pub fn discard_pod(cri: &Cri, pod: &str) {
    let _ = cri.stop_pod_sandbox(pod);
    let _ = cri.remove_pod_sandbox(pod);
}

/// Run a pod with one sleeping container, wait until it runs, tear the pod down.
pub fn pod_cycle(cri: &Cri, rt: &Rt, name: &str) -> Result<Cycle> {
    let handler = rt.handler();
    let pod_cfg = cri.pod_config(name);
    let ctr_cfg = rt.container_config(cri, "app", SLEEP_CMD);
    let t0 = Instant::now();
    let pod = cri
        .run_pod_sandbox(&pod_cfg, handler)
        .context("RunPodSandbox")?;
    let run_pod = ms_since(t0);
    let started = (|| -> Result<(String, f64, f64)> {
        let t = Instant::now();
        let id = cri
            .create_container(&pod, &ctr_cfg, &pod_cfg)
            .context("CreateContainer")?;
        let create = ms_since(t);
        let t = Instant::now();
        cri.start_container(&id).context("StartContainer")?;
        wait_state(
            cri,
            &id,
            ContainerState::ContainerRunning,
            Duration::from_secs(60),
        )?;
        Ok((id, create, ms_since(t)))
    })();
    let (container_id, create, start) = match started {
        Ok(v) => v,
        Err(e) => {
            discard_pod(cri, &pod);
            return Err(e);
        }
    };
    let start_total = ms_since(t0);
    let t = Instant::now();
    if let Err(e) = cri.stop_pod_sandbox(&pod) {
        discard_pod(cri, &pod);
        return Err(e.context("StopPodSandbox"));
    }
    let stop_pod = ms_since(t);
    let t = Instant::now();
    cri.remove_pod_sandbox(&pod).context("RemovePodSandbox")?;
    let remove_pod = ms_since(t);
    Ok(Cycle {
        pod_id: pod,
        container_id,
        run_pod,
        create,
        start,
        start_total,
        stop_pod,
        remove_pod,
        cycle_total: ms_since(t0),
    })
}

/// `ran` gets the pods and containers of every cycle (for the shim-phase breakdown).
pub fn serial(c: &Containerd, rts: &[Rt], n: usize, ran: &mut Vec<Ran>) -> Result<Section> {
    let mut sec = Section::new(
        "lifecycle_serial",
        "CRI lifecycle latency, serial",
        &format!(
            "One pod at a time through the CRI API (k8s-cri gRPC client on containerd's socket): \
             RunPodSandbox -> CreateContainer (busybox `{}`) -> StartContainer -> ContainerStatus \
             polled every 1 ms until RUNNING (= start_total), then StopPodSandbox -> \
             RemovePodSandbox (= cycle_total). {n} cycles per runtime, runtimes alternating \
             cycle by cycle.",
            SLEEP_CMD.join(" ")
        ),
    );
    let rts = active(rts, &mut sec);
    let cri = c.cri()?;
    let pb = bar(n * rts.len(), "lifecycle serial");
    for i in 0..n {
        for rt in &rts {
            check_stop()?;
            if sec.has_failed(&rt.label) {
                continue;
            }
            pb.set_message(rt.label.clone());
            match pod_cycle(&cri, rt, &format!("bench-{}-{i}", rt.label)) {
                Ok(cycle) => {
                    cycle.record(&mut sec, &rt.label);
                    for (kind, id) in [("sandbox", &cycle.pod_id), ("app", &cycle.container_id)] {
                        ran.push(Ran {
                            runtime: rt.label.clone(),
                            kind: kind.to_string(),
                            id: id.clone(),
                        });
                    }
                }
                Err(e) => sec.fail(&rt.label, &e),
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(sec)
}

pub fn parallel(c: &Containerd, rts: &[Rt], width: usize, batches: usize) -> Result<Section> {
    let mut sec = Section::new(
        "lifecycle_parallel",
        &format!("CRI lifecycle latency, {width}-way parallel"),
        &format!(
            "{width} pods started at once (one CRI connection and thread each, released by a \
             barrier), each doing the full serial cycle; {batches} batch(es) per runtime, \
             batches alternating between runtimes. `batch_wall` is the time until the last pod \
             of a batch is removed."
        ),
    );
    let rts = active(rts, &mut sec);
    let pb = bar(batches * rts.len(), "lifecycle parallel");
    for b in 0..batches {
        for rt in &rts {
            check_stop()?;
            if sec.has_failed(&rt.label) {
                continue;
            }
            pb.set_message(rt.label.clone());
            match batch(c, rt, width, b) {
                Ok((cycles, wall)) => {
                    for cy in cycles {
                        cy.record(&mut sec, &rt.label);
                    }
                    sec.push(&rt.label, "batch_wall", "ms", wall);
                }
                Err(e) => sec.fail(&rt.label, &e),
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(sec)
}

/// One batch: `width` threads, each its own CRI connection, one cycle each.
fn batch(c: &Containerd, rt: &Rt, width: usize, b: usize) -> Result<(Vec<Cycle>, f64)> {
    let barrier = Barrier::new(width + 1);
    let (tx, rx) = std::sync::mpsc::channel::<Result<Cycle>>();
    let mut results = Vec::new();
    let mut wall = 0.0;
    std::thread::scope(|s| {
        for w in 0..width {
            let barrier = &barrier;
            let tx = tx.clone();
            s.spawn(move || {
                let cri = c.cri();
                barrier.wait();
                let r = cri.and_then(|cri| {
                    pod_cycle(&cri, rt, &format!("bench-par-{}-{b}-{w}", rt.label))
                });
                let _ = tx.send(r);
            });
        }
        drop(tx);
        barrier.wait();
        let t = Instant::now();
        // Ends when every worker has sent (or died: its sender is dropped either way).
        results.extend(rx.iter());
        wall = ms_since(t);
    });
    if results.len() < width {
        bail!(
            "{} of {width} workers died without a result",
            width - results.len()
        );
    }
    let mut cycles = Vec::new();
    for r in results {
        cycles.push(r?);
    }
    Ok((cycles, wall))
}
