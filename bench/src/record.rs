//! Record mode's cost to the workload: a syscall-heavy loop (getppid) and fork+exec of a
//! static busybox, each in forked children of a single-threaded helper (this binary
//! re-executed with `--internal-record`) under the default filter and under its recording
//! version (`hardener::record::recording_filter`), interleaved in the same run. While the
//! children run, this process reads the audit netlink multicast group as `stockade
//! profile record` does, so the kernel delivers every record as it would while recording.

use crate::model::Section;
use crate::seccomp::{fork_measure_with, getppid_ns, run_helper};
use crate::util::{bar, check_stop};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use stockade_monitor::sources::{Netlink, RecordSource};

/// getppid calls per child.
const LOOP: u64 = 20_000;
/// fork+exec+wait rounds per child.
const EXECS: u64 = 20;
/// Samples per helper process (so the parent can show progress).
const CHUNK: usize = 10;
/// The static binary the fork+exec rounds run (`true`).
const BUSYBOX: &std::ffi::CStr = c"/bin/busybox";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChildReport {
    pub getppid_ns_default: Vec<f64>,
    pub getppid_ns_record: Vec<f64>,
    pub exec_us_default: Vec<f64>,
    pub exec_us_record: Vec<f64>,
}

/// ns per getppid.
fn getppid_loop() -> f64 {
    getppid_ns(LOOP)
}

/// µs per fork + exec(busybox true) + wait; negative when a round failed.
fn fork_exec_loop() -> f64 {
    let argv = [c"busybox".as_ptr(), c"true".as_ptr(), std::ptr::null()];
    let t = Instant::now();
    for _ in 0..EXECS {
        // SAFETY: called in a single-threaded child; the grandchild only calls execv and
        // _exit, whose arguments were built before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above; argv is NULL-terminated and outlives the call.
            unsafe {
                libc::execv(BUSYBOX.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        if pid < 0 {
            return -1.0;
        }
        let mut status = 0;
        // SAFETY: waiting for our own child, status is a local.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return -1.0;
        }
    }
    t.elapsed().as_nanos() as f64 / EXECS as f64 / 1e3
}

/// The helper's main: `samples` rounds of (default, record) for both workloads.
pub fn child_main(profile_toml: &Path, samples: usize) -> Result<()> {
    let profile = stockade_runtime::profile::Profile::load(profile_toml)
        .with_context(|| format!("loading {}", profile_toml.display()))?;
    let default = stockade_runtime::seccomp::compile(&profile.seccomp.profile)?;
    let recording = stockade_runtime::hardener::record::recording_filter(&profile.seccomp.profile);
    let recording = stockade_runtime::seccomp::compile(&recording)?;
    let log = profile.seccomp.log_denials;
    let mut report = ChildReport::default();
    let figure = |filter, work| -> Result<f64> {
        let (_, v) = fork_measure_with(Some(filter), log, work)?;
        if v < 0.0 {
            bail!("a fork+exec round failed in the measurement child");
        }
        Ok(v)
    };
    for _ in 0..samples {
        report
            .getppid_ns_default
            .push(figure(&default, getppid_loop)?);
        report
            .getppid_ns_record
            .push(figure(&recording, getppid_loop)?);
        report
            .exec_us_default
            .push(figure(&default, fork_exec_loop)?);
        report
            .exec_us_record
            .push(figure(&recording, fork_exec_loop)?);
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Reads the audit multicast group until stopped; returns (records, socket overruns).
fn listen(stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<(u64, u64)>> {
    let mut source = Netlink::open().context("opening the audit netlink multicast group")?;
    // As `stockade profile record` does; a refusal leaves the default buffer.
    let _ = source.force_rx_buffer(64 << 20);
    Ok(std::thread::spawn(move || {
        let (mut records, mut lost) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            match source.read() {
                Ok(batch) => {
                    records += batch.records.len() as u64;
                    lost += batch.lost;
                }
                Err(_) => break,
            }
        }
        (records, lost)
    }))
}

pub fn run(samples: usize) -> Result<Section> {
    stockade_integration::paths::require_tool("busybox")?;
    let profile = stockade_integration::paths::profile("default.toml")?;
    let mut sec = Section::new(
        "record",
        "Record mode's cost to the workload",
        &format!(
            "profiles/default.toml's seccomp filter (`default`) and its recording version \
             (`record`: every allowed syscall SECCOMP_RET_LOG, what `[seccomp] record = true` \
             installs), each installed in forked children of a single-threaded helper, \
             alternating, {samples} samples each: {LOOP} getppid calls (ns per call) and \
             {EXECS} rounds of fork + exec of the static /bin/busybox true + wait (µs per \
             round). Each recorded syscall costs an audit record (formatted by the kernel, \
             queued, sent to the netlink multicast group), which this process reads \
             meanwhile as `stockade profile record` would."
        ),
    );
    sec.baseline = "default".to_string();
    let exe = std::env::current_exe().context("locating stockade-bench")?;
    let before = stockade_monitor::audit_status::read().ok();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = listen(stop.clone())?;
    let pb = bar(samples, "record");
    let mut done = 0;
    let result = (|| -> Result<()> {
        while done < samples {
            check_stop()?;
            let n = CHUNK.min(samples - done);
            let r: ChildReport = run_helper(&exe, "--internal-record", &profile, n, "record")?;
            let series = [
                ("default", "getppid", "ns/op", r.getppid_ns_default),
                ("record", "getppid", "ns/op", r.getppid_ns_record),
                ("default", "fork+exec", "us/op", r.exec_us_default),
                ("record", "fork+exec", "us/op", r.exec_us_record),
            ];
            for (runtime, metric, unit, values) in series {
                for v in values {
                    sec.push(runtime, metric, unit, v);
                }
            }
            done += n;
            pb.inc(n as u64);
        }
        Ok(())
    })();
    pb.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    let (records, overruns) = listener.join().unwrap_or((0, 0));
    let after = stockade_monitor::audit_status::read().ok();
    result?;
    let lost = match (before, after) {
        (Some(b), Some(a)) => a.lost.wrapping_sub(b.lost).to_string(),
        _ => "unknown (AUDIT_GET failed)".into(),
    };
    sec.notes.push(format!(
        "seccomp records read while measuring: {records}; socket overruns: {overruns}; \
         kernel audit records lost meanwhile (node-wide): {lost}"
    ));
    Ok(sec)
}
