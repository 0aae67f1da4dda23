//! Seccomp filter install time for the default profile, measured in forked children of a
//! single-threaded helper process (this binary re-executed with `--internal-seccomp`):
//! forking a multi-threaded process and then running Rust code is not safe.

use crate::model::Section;
use crate::util::{bar, check_stop};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// getppid calls per child, with and without the filter.
const LOOP: u64 = 50_000;
/// Samples per helper process (so the parent can show progress).
const CHUNK: usize = 50;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChildReport {
    pub compile_ms: Vec<f64>,
    pub install_us: Vec<f64>,
    pub getppid_ns_filtered: Vec<f64>,
    pub getppid_ns_plain: Vec<f64>,
    pub programs: usize,
    pub instructions: usize,
}

/// In a forked child: optionally install `filter`, time a getppid loop, send both
/// figures (ns) through `fd`, exit. Returns (install ns, ns per getppid).
fn fork_measure(
    filter: Option<&stockade_runtime::seccomp::CompiledFilter>,
    log: bool,
) -> Result<(f64, f64)> {
    fork_measure_with(filter, log, getppid_loop)
}

/// ns per getppid over [`LOOP`] calls.
fn getppid_loop() -> f64 {
    getppid_ns(LOOP)
}

/// ns per getppid over `calls` calls.
pub(crate) fn getppid_ns(calls: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..calls {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe {
            libc::syscall(libc::SYS_getppid);
        }
    }
    t.elapsed().as_nanos() as f64 / calls as f64
}

/// In a forked child: optionally install `filter`, run `work` (which returns its own
/// figure, e.g. ns per operation), send the install time and that figure through a pipe,
/// exit. Returns (install ns, the figure). `work` runs in the forked child of a
/// single-threaded process: it must not rely on locks held by other threads.
pub(crate) fn fork_measure_with(
    filter: Option<&stockade_runtime::seccomp::CompiledFilter>,
    log: bool,
    work: fn() -> f64,
) -> Result<(f64, f64)> {
    let (read_end, write_end) = nix::unistd::pipe().context("pipe")?;
    // SAFETY: this helper process is single-threaded (see the module docs), so the child
    // may run ordinary code; it only installs the filter (no allocation), runs `work`
    // and _exits.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let t = Instant::now();
            let ok = match filter {
                Some(f) => f.install(log).is_ok(),
                None => true,
            };
            let install_ns = t.elapsed().as_nanos() as u64;
            let figure = work();
            let mut buf = [0u8; 16];
            buf[..8].copy_from_slice(&install_ns.to_le_bytes());
            buf[8..].copy_from_slice(&figure.to_bits().to_le_bytes());
            // SAFETY: writing our own stack buffer to a pipe fd we own, then _exit (no
            // destructors, no atexit handlers in a forked child).
            unsafe {
                libc::write(write_end.as_raw_fd(), buf.as_ptr().cast(), buf.len());
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let mut buf = [0u8; 16];
            let mut file = std::fs::File::from(read_end);
            let read = std::io::Read::read_exact(&mut file, &mut buf);
            let status = nix::sys::wait::waitpid(child, None).context("waitpid")?;
            read.context("reading the child's figures")?;
            if !matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)) {
                bail!("measurement child ended with {status:?} (filter install failed?)");
            }
            let install = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
            let figure = u64::from_le_bytes(buf[8..].try_into().unwrap_or_default());
            Ok((install as f64, f64::from_bits(figure)))
        }
    }
}

/// Runs this binary as a measurement helper (`flag profile samples`) and parses the JSON
/// report it prints.
pub(crate) fn run_helper<T: serde::de::DeserializeOwned>(
    exe: &Path,
    flag: &str,
    profile: &Path,
    samples: usize,
    what: &str,
) -> Result<T> {
    let out = Command::new(exe)
        .arg(flag)
        .arg(profile)
        .arg(samples.to_string())
        .output()
        .with_context(|| format!("running the {what} helper"))?;
    if !out.status.success() {
        bail!(
            "{what} helper failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the {what} helper's report"))
}

/// The helper's main: compile the profile's filter, then `samples` forked children with
/// the filter and as many without; JSON report on stdout.
pub fn child_main(profile_toml: &Path, samples: usize) -> Result<()> {
    let profile = stockade_runtime::profile::Profile::load(profile_toml)
        .with_context(|| format!("loading {}", profile_toml.display()))?;
    let mut report = ChildReport::default();
    for _ in 0..5 {
        let t = Instant::now();
        stockade_runtime::seccomp::compile(&profile.seccomp.profile)?;
        report.compile_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let filter = stockade_runtime::seccomp::compile(&profile.seccomp.profile)?;
    report.programs = filter.program_count();
    report.instructions = filter.instruction_count();
    for _ in 0..samples {
        let (install, per_call) = fork_measure(Some(&filter), profile.seccomp.log_denials)?;
        report.install_us.push(install / 1e3);
        report.getppid_ns_filtered.push(per_call);
        let (_, per_call) = fork_measure(None, false)?;
        report.getppid_ns_plain.push(per_call);
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

pub fn run(samples: usize) -> Result<Section> {
    let profile = stockade_integration::paths::profile("default.toml")?;
    let mut sec = Section::new(
        "seccomp",
        "Seccomp filter install time (default profile)",
        &format!(
            "profiles/default.toml's seccomp profile compiled with stockade_runtime::seccomp::compile \
             (5 times, timed), then installed with CompiledFilter::install in {samples} forked \
             children of a single-threaded helper process (install time measured inside the \
             child). Each child then times {LOOP} getppid calls; children without a filter give \
             the `no filter` column. The install time is prctl(NO_NEW_PRIVS) plus one \
             seccomp(2) per BPF program; the kernel checks and JIT-compiles each program and \
             (since 5.11) precomputes its per-syscall action cache, so it grows with the \
             filter's length. runc installs no filter through CRI unless the pod asks for \
             RuntimeDefault (see runc-seccomp in the lifecycle tables for that cost)."
        ),
    );
    sec.baseline = "no filter".to_string();
    let exe = std::env::current_exe().context("locating stockade-bench")?;
    let pb = bar(samples, "seccomp");
    let mut done = 0;
    let mut first = true;
    while done < samples {
        check_stop()?;
        let n = CHUNK.min(samples - done);
        let r: ChildReport = run_helper(&exe, "--internal-seccomp", &profile, n, "seccomp")?;
        if first {
            for v in &r.compile_ms {
                sec.push("stockade", "compile", "ms", *v);
            }
            sec.notes.push(format!(
                "default profile: {} BPF program(s), {} instructions",
                r.programs, r.instructions
            ));
            first = false;
        }
        for v in r.install_us {
            sec.push("stockade", "install", "us", v);
        }
        for v in r.getppid_ns_filtered {
            sec.push("stockade", "getppid", "ns/op", v);
        }
        for v in r.getppid_ns_plain {
            sec.push("no filter", "getppid", "ns/op", v);
        }
        done += n;
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(sec)
}
