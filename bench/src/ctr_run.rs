//! `ctr run --rm` per runtime: container create -> task start -> exit -> delete, timed as
//! the wall time of one `ctr` process (ctr's own start-up, a few ms, is in both columns).
//! Then `ctr tasks exec` into a running container of each runtime (what a probe's
//! ExecSync costs the runtime), timed the same way.

use crate::model::Section;
use crate::runtimes::{active, active_runtimes, Rt};
use crate::util::{bar, check_stop, ms_since};
use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use stockade_integration::image::BUSYBOX_IMAGE;
use stockade_integration::Containerd;

const TIMEOUT: Duration = Duration::from_secs(90);

/// Run `cmd` to completion; kill it by its PID after [`TIMEOUT`]. Returns the wall time
/// in ms (waited on blockingly, so the timing has no polling granularity).
pub fn run_timed(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(TIMEOUT).is_err() {
            // SAFETY: kill(2) on the PID of our own child that has not been reaped yet
            // (wait_with_output below has not returned), so the PID cannot be reused.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    });
    let out = child.wait_with_output();
    let ms = ms_since(t);
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let out = out.context("waiting for ctr")?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(ms)
}

pub fn run(c: &Containerd, rts: &[Rt], n: usize) -> Result<Section> {
    let mut sec = Section::new(
        "ctr_run",
        "`ctr run --rm` (containerd API, no CRI)",
        &format!(
            "`ctr -n <ns> run --rm --runtime <runtime> [--runtime-config-path <profile>] \
             {BUSYBOX_IMAGE} <id> /bin/true`, wall time of the ctr process (container create, \
             task create+start, wait for exit, task and container delete; the `ctr` binary is \
             used as the API client). {n} runs per runtime, alternating. `exec`: \
             `ctr tasks exec --exec-id <id> <container> /bin/true` into a running \
             `sleep` container of each runtime (process create+start, wait for exit, \
             delete), {n} per runtime, alternating; not for the floor, which runs no exec."
        ),
    );
    let active = active(rts, &mut sec);
    let pb = bar(n * active.len(), "ctr run --rm");
    for i in 0..n {
        for rt in &active {
            check_stop()?;
            if sec.has_failed(&rt.label) {
                continue;
            }
            let id = format!("bench-ctr-{}-{i}", rt.label);
            let mut cmd = ctr_command(c);
            cmd.args(["run", "--rm"])
                .args(rt.ctr_args())
                .args([BUSYBOX_IMAGE, &id, "/bin/true"]);
            match run_timed(&mut cmd) {
                Ok(ms) => sec.push(&rt.label, "total", "ms", ms),
                Err(e) => {
                    // Leave nothing behind for the next run.
                    let _ = c.ctr(&["tasks", "rm", "-f", &id]);
                    let _ = c.ctr(&["containers", "rm", &id]);
                    sec.fail(&rt.label, &e);
                }
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    exec(c, rts, n, &mut sec)?;
    Ok(sec)
}

/// `ctr tasks exec` into one running container per runtime, `n` times each, alternating.
fn exec(c: &Containerd, rts: &[Rt], n: usize, sec: &mut Section) -> Result<()> {
    let mut running = Vec::new();
    for rt in active_runtimes(rts, sec) {
        let id = format!("bench-exec-{}", rt.label);
        let mut args = vec!["run".to_string(), "-d".to_string()];
        args.extend(rt.ctr_args());
        args.extend([BUSYBOX_IMAGE, &id, "sleep", "3600"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match c
            .ctr_ok(&args)
            .and_then(|_| c.wait_task_status(&id, "RUNNING"))
        {
            Ok(()) => running.push((rt, id)),
            Err(e) => {
                remove(c, &id);
                sec.fail(&rt.label, &e);
            }
        }
    }
    let pb = bar(n * running.len(), "ctr tasks exec");
    let result = (|| {
        for i in 0..n {
            for (rt, id) in &running {
                check_stop()?;
                let mut cmd = ctr_command(c);
                cmd.args([
                    "tasks",
                    "exec",
                    "--exec-id",
                    &format!("e{i}"),
                    id,
                    "/bin/true",
                ]);
                match run_timed(&mut cmd) {
                    Ok(ms) => sec.push(&rt.label, "exec", "ms", ms),
                    Err(e) => sec.fail(&rt.label, &e),
                }
                pb.inc(1);
            }
        }
        Ok(())
    })();
    pb.finish_and_clear();
    for (_, id) in &running {
        remove(c, id);
    }
    result
}

/// `ctr` on this containerd's socket and namespace.
fn ctr_command(c: &Containerd) -> Command {
    let mut cmd = Command::new(c.binaries().ctr());
    cmd.arg("--address")
        .arg(&c.socket)
        .arg("--namespace")
        .arg(c.namespace());
    cmd
}

/// Kill and delete a bench container, whatever state it is in.
fn remove(c: &Containerd, id: &str) {
    let _ = c.ctr(&["tasks", "rm", "-f", id]);
    let _ = c.ctr(&["containers", "rm", id]);
}
