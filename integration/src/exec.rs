//! Running host commands with a deadline, so a hung client fails the test instead of
//! hanging it; and running one under a pseudo-terminal.

use anyhow::{Context, Result};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` to completion, capturing stdout and stderr; kill it (by its PID) after
/// `timeout`. A timed-out command reports SIGKILL as its status and says so on stderr.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut buf);
        }
        buf
    });
    let (status, timed_out) = wait_or_kill(&mut child, timeout)?;
    // A killed client may leave grandchildren holding the pipes: don't wait for them.
    let stdout = join_bounded(out_reader, timed_out);
    let mut stderr = join_bounded(err_reader, timed_out);
    if timed_out {
        stderr.extend_from_slice(
            format!("\n[harness] {cmd:?} timed out after {timeout:?} and was killed\n").as_bytes(),
        );
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn join_bounded(handle: std::thread::JoinHandle<Vec<u8>>, timed_out: bool) -> Vec<u8> {
    if timed_out {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !handle.is_finished() {
            return Vec::new();
        }
    }
    handle.join().unwrap_or_default()
}

/// Result of a command run under a pseudo-terminal: stdout and stderr arrive merged.
#[derive(Debug)]
pub struct TtyOutput {
    pub status: ExitStatus,
    pub output: String,
}

/// Run `cmd` with a fresh pseudo-terminal as its stdin, stdout and stderr (as a user at
/// a terminal would), killing it after `timeout`.
pub fn tty_output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<TtyOutput> {
    let pty = nix::pty::openpty(None, None).context("openpty")?;
    let slave = std::fs::File::from(pty.slave);
    let mut child = cmd
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave)
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    // Drop the Command's copies of the slave so the master reads EIO once the child
    // side closes.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match master.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    });
    let (status, timed_out) = wait_or_kill(&mut child, timeout)?;
    let mut output = String::from_utf8_lossy(&join_bounded(reader, true)).into_owned();
    if timed_out {
        output.push_str(&format!("\n[harness] timed out after {timeout:?}\n"));
        return Ok(TtyOutput {
            status: ExitStatus::from_raw(9),
            output,
        });
    }
    Ok(TtyOutput { status, output })
}

/// Poll `f` until it returns Some, or fail after `timeout` with `what` in the message.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait for `child` up to `timeout`, then kill it; returns its status and whether it had to
/// be killed.
fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::io::Result<(std::process::ExitStatus, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Ok((child.wait()?, true));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
