//! `stockade profile record`: collects the SECCOMP_RET_LOG records of containers running
//! in record mode (a profile with `[seccomp] record = true`) until SIGINT, SIGTERM or
//! `--duration`, then writes per container a Kubernetes localhost seccomp profile
//! (`OUT/<pod>/<container>.json`) and `OUT/recording.json` (what was seen and whether the
//! recording is complete).

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};
use stockade_monitor::attribution::{Attribution, Workload};
use stockade_monitor::record_cache::RecordCache;
use stockade_monitor::recording::{Recording, UidMemory};
use stockade_monitor::seccomp_log::SeccompRecord;
use stockade_monitor::sources::{Netlink, RecordSource};
use stockade_monitor::{audit_status, recording::Completeness};
use stockade_runtime::profile::Profile;
use stockade_runtime::seccomp::{self, recorded, Arch};
use stockade_runtime::state_dir::StateDir;

/// The line printed once records are being read (scripts and tests wait for it).
pub const BANNER: &str = "stockade profile record: recording";

#[derive(clap::Args)]
pub struct RecordArgs {
    /// Where to write the profiles (`<pod>/<container>.json`) and `recording.json`.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The profile whose default filter the recorded containers run under (its ERRNO
    /// answers are carried into the generated profiles).
    #[arg(long, value_name = "FILE", default_value = "/etc/stockade/record.toml")]
    profile: PathBuf,
    /// Stockade's node state directory (default: $STOCKADE_STATE_DIR, else /run/stockade).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: at SIGINT or SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u64>,
}

/// The record socket's receive buffer: a syscall-heavy workload makes hundreds of
/// thousands of records a second.
const RX_BUFFER: usize = 64 << 20;
/// How long records already in flight are waited for after the stop.
const DRAIN: Duration = Duration::from_millis(500);

pub fn run(args: RecordArgs) -> Result<ExitCode> {
    let profile = Profile::load(&args.profile)?;
    let state = match &args.state_dir {
        Some(dir) => StateDir::new(dir)?,
        None => StateDir::from_env()?,
    };
    check_log_action()?;
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .context("blocking SIGINT and SIGTERM")?;
    let signalfd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("signalfd")?;

    let mut source = Netlink::open().context("opening the audit netlink multicast group")?;
    if let Err(e) = source.force_rx_buffer(RX_BUFFER) {
        tracing::warn!(error = %e, "cannot raise the record socket's buffer; bursts may overflow it");
    }
    let mut recording = Recording {
        audit_before: audit_status::read()
            .map_err(|e| tracing::warn!(error = %e, "cannot read the kernel's audit status"))
            .ok(),
        ..Recording::default()
    };
    let pool = (profile.userns.first_id, profile.userns.size);
    let mut attributor = Attributor::new(&state.containers(), pool);
    println!("{BANNER} (seccomp records from {})", source.describe());

    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut stop_at: Option<Instant> = None;
    loop {
        let batch = source.read().context("reading seccomp records")?;
        recording.socket_overruns += batch.lost;
        let empty = batch.records.is_empty();
        for record in &batch.records {
            let attribution = attributor.attribute(record);
            recording.add(record, attribution);
        }
        let now = Instant::now();
        if stop_at.is_none()
            && (signalfd.read_signal().ok().flatten().is_some()
                || deadline.is_some_and(|d| now >= d))
        {
            stop_at = Some(now + DRAIN);
        }
        if stop_at.is_some_and(|s| now >= s) && empty {
            break;
        }
    }
    recording.audit_after = audit_status::read().ok();
    write_results(&args.out, &profile, &recording)?;
    Ok(ExitCode::SUCCESS)
}

/// SECCOMP_RET_LOG writes a record only where the node logs the `log` action (a global
/// sysctl this command reads, never changes).
fn check_log_action() -> Result<()> {
    let path = "/proc/sys/kernel/seccomp/actions_logged";
    let logged = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    if !logged.split_whitespace().any(|a| a == "log") {
        anyhow::bail!(
            "{path} is {:?}: without `log` the kernel writes no record for SECCOMP_RET_LOG \
             and nothing can be recorded",
            logged.trim()
        );
    }
    Ok(())
}

/// Pid -> container, remembered once its cgroup confirmed it: a process's first record
/// (right after its fork) finds it alive, its last ones (exit_group) may not.
struct Attributor {
    cache: RecordCache,
    known: HashMap<(i32, Option<u32>), Workload>,
    uids: UidMemory,
    /// Stockade's host ID pool (first, size).
    pool: (u32, u32),
}

impl Attributor {
    fn new(dir: &Path, pool: (u32, u32)) -> Attributor {
        Attributor {
            cache: RecordCache::new(dir),
            known: HashMap::new(),
            uids: UidMemory::default(),
            pool,
        }
    }

    fn attribute(&mut self, record: &SeccompRecord) -> Attribution {
        if let Some(w) = self.known.get(&(record.pid, record.uid)) {
            return Attribution::Container(w.clone());
        }
        let (found, confirmed) = self.cache.attribute_checked(record);
        match found {
            Attribution::Container(w) if confirmed => {
                self.uids.learn(record.uid, &w);
                self.known.insert((record.pid, record.uid), w.clone());
                Attribution::Container(w)
            }
            other => self.uids.fallback(record.uid, other, self.pool),
        }
    }
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    completeness: Completeness,
    log_records: u64,
    foreign: u64,
    /// Syscalls of records no container could be named for, by pod.
    unattributed_syscalls: &'a std::collections::BTreeMap<String, BTreeSet<String>>,
    containers: Vec<ContainerSummary<'a>>,
}

#[derive(serde::Serialize)]
struct ContainerSummary<'a> {
    namespace: &'a str,
    pod: &'a str,
    container: &'a str,
    records: u64,
    /// Per ABI: the recorded syscalls.
    syscalls: &'a std::collections::BTreeMap<String, BTreeSet<String>>,
    denied: &'a BTreeSet<String>,
    profile: Option<PathBuf>,
    /// Syscalls the generated profile allows, and the default filter.
    profile_allows: Option<usize>,
    default_allows: Option<usize>,
    /// Syscalls of the pod's unattributed records that this container did not record:
    /// its profile allows them too, so that what may have been its own is not denied.
    added_from_pod: BTreeSet<String>,
    problems: Vec<String>,
}

fn write_results(out: &Path, profile: &Profile, recording: &Recording) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let default = &profile.seccomp.profile;
    let mut containers = Vec::new();
    for (w, c) in &recording.containers {
        let mut summary = ContainerSummary {
            namespace: &w.namespace,
            pod: &w.pod,
            container: &w.container,
            records: c.records,
            syscalls: &c.syscalls,
            denied: &c.denied,
            profile: None,
            profile_allows: None,
            default_allows: None,
            added_from_pod: BTreeSet::new(),
            problems: Vec::new(),
        };
        let pod_unattributed = recording
            .unattributed_syscalls
            .get(&format!("{}/{}", w.namespace, w.pod));
        for (abi, names) in &c.syscalls {
            let Ok(arch) = Arch::from_str(abi) else {
                summary
                    .problems
                    .push(format!("syscalls of ABI {abi} ignored: {names:?}"));
                continue;
            };
            let (known, unknown): (BTreeSet<String>, BTreeSet<String>) = names
                .iter()
                .cloned()
                .partition(|n| arch.number(n).is_some());
            if !unknown.is_empty() {
                summary.problems.push(format!(
                    "syscalls unknown to Stockade on {abi}: {unknown:?}"
                ));
            }
            let mut allowed = known.clone();
            if Some(arch) == Arch::running() {
                for name in pod_unattributed.into_iter().flatten() {
                    if arch.number(name).is_some() && allowed.insert(name.clone()) {
                        summary.added_from_pod.insert(name.clone());
                    }
                }
            }
            let generated = recorded::profile_from_recording(&allowed, default, arch)?;
            let dir = out.join(file_name(&w.pod));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut name = file_name(&w.container);
            if Some(arch) != Arch::running() {
                name = format!("{name}.{abi}");
            }
            let path = dir.join(format!("{name}.json"));
            let text = serde_json::to_string_pretty(&generated)? + "\n";
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            let narrowing = recorded::narrowing(default, &generated, arch)?;
            let added = match summary.added_from_pod.len() {
                0 => String::new(),
                n => format!(", {n} more from the pod's unattributed records"),
            };
            println!(
                "{}/{}/{}: {} syscalls recorded ({abi}){added}; profile allows {} of the default's {} -> {}",
                w.namespace,
                w.pod,
                w.container,
                known.len(),
                narrowing.stacked_allowed,
                narrowing.default_allowed,
                path.display()
            );
            summary.profile_allows = Some(narrowing.stacked_allowed);
            summary.default_allows = Some(narrowing.default_allowed);
            summary.profile = Some(path);
        }
        containers.push(summary);
    }
    let completeness = recording.completeness();
    if completeness.complete {
        println!(
            "recording complete: {} records, none lost",
            recording.log_records
        );
    } else {
        eprintln!(
            "stockade: recording INCOMPLETE: {}",
            completeness.problems.join("; ")
        );
    }
    let summary = Summary {
        completeness,
        log_records: recording.log_records,
        foreign: recording.foreign,
        unattributed_syscalls: &recording.unattributed_syscalls,
        containers,
    };
    let path = out.join("recording.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    // The compiler must take every generated profile (it is what the shim runs).
    for c in &summary.containers {
        if let Some(p) = &c.profile {
            seccomp::compile(&seccomp::load_file(p)?)?;
        }
    }
    Ok(())
}

/// A pod or container name as a file name (Kubernetes names are DNS labels; anything
/// else is replaced).
fn file_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match clean.as_str() {
        "" | "." | ".." => "_".into(),
        _ => clean,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_stay_in_their_directory() {
        assert_eq!(super::file_name("web-0"), "web-0");
        assert_eq!(super::file_name("../x"), ".._x");
        assert_eq!(super::file_name(".."), "_");
        assert_eq!(super::file_name(""), "_");
    }
}
