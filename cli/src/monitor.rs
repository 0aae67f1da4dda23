//! `stockade monitor`: the node's Prometheus exporter (see the `stockade_monitor` crate).

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use stockade_monitor::{Monitor, MonitorConfig, SeccompSource, DEFAULT_LISTEN};
use stockade_runtime::profile::Profile;
use stockade_runtime::state_dir::StateDir;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("seccomp-source").args(["netlink", "kmsg", "audit_log", "no_seccomp"])))]
pub struct MonitorArgs {
    /// Address to serve /metrics and /healthz on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Stockade's node state directory, where the shims write their container records and
    /// ID ranges (default: $STOCKADE_STATE_DIR, else /run/stockade).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A profile in use on this node (repeatable): its name, ID pool and audit log.
    #[arg(long = "profile", value_name = "FILE")]
    profiles: Vec<PathBuf>,
    /// An audit trail to count decisions from, besides the profiles' (repeatable).
    #[arg(long = "audit-trail", value_name = "FILE")]
    audit_trails: Vec<PathBuf>,
    /// Read seccomp records from the audit netlink multicast group (default: complete,
    /// works with or without auditd; needs CAP_AUDIT_READ).
    #[arg(long)]
    netlink: bool,
    /// Read seccomp records from the kernel log (/dev/kmsg); the kernel rate-limits it
    /// (10 records per 5 s by default), so counts are a lower bound.
    #[arg(long)]
    kmsg: bool,
    /// Read seccomp records from auditd's log file.
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Do not count seccomp denials.
    #[arg(long)]
    no_seccomp: bool,
    /// Where the cgroup hierarchies are mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
}

pub fn run(args: MonitorArgs) -> Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();

    let state = match args.state_dir {
        Some(dir) => StateDir::new(dir)?,
        None => StateDir::from_env()?,
    };
    let mut names = Vec::new();
    let mut id_pools = Vec::new();
    let mut audit_trails = args.audit_trails.clone();
    for file in &args.profiles {
        let profile = Profile::load(file)?;
        names.push(profile.name.clone());
        id_pools.push(profile.userns);
        if let Some(log) = profile.audit.log {
            if !audit_trails.contains(&log) {
                audit_trails.push(log);
            }
        }
    }
    let seccomp = if args.no_seccomp {
        SeccompSource::Off
    } else if args.kmsg {
        SeccompSource::Kmsg(PathBuf::from("/dev/kmsg"))
    } else if let Some(path) = args.audit_log {
        SeccompSource::AuditLog(path)
    } else {
        SeccompSource::Netlink
    };
    let monitor = Monitor::start(MonitorConfig {
        listen: args.listen,
        state_dir: state.containers(),
        cgroup_root: args.cgroup_root,
        audit_trails,
        profiles: names,
        id_pools,
        id_state: Some(state.id_ranges()),
        seccomp,
    })
    .context("starting the exporter")?;
    // One line on stdout, for scripts (and tests) that bind port 0.
    println!(
        "{}",
        stockade_monitor::banner(monitor.local_addr(), monitor.source())
    );
    monitor.wait();
    Ok(ExitCode::SUCCESS)
}
