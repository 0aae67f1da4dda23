//! `stockade profile diff`: how a pod's seccomp profile (a recorded one, or any localhost
//! profile), stacked on a Stockade profile's default filter, narrows it.

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use stockade_runtime::profile::Profile;
use stockade_runtime::seccomp::{self, recorded, Arch};

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The Stockade profile whose default filter the pod runs under.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/stockade/default.toml"
    )]
    profile: PathBuf,
    /// The pod's OCI LinuxSeccomp JSON (e.g. from `stockade profile record`).
    pod_profile: PathBuf,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DiffArgs) -> Result<ExitCode> {
    let profile = Profile::load(&args.profile)?;
    let pod = seccomp::load_file(&args.pod_profile)?;
    let arch = Arch::running().ok_or_else(|| anyhow::anyhow!("unsupported architecture"))?;
    let n = recorded::narrowing(&profile.seccomp.profile, &pod, arch)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&n)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "default filter {}: {} syscalls allowed on {}",
        profile.seccomp.file.display(),
        n.default_allowed,
        n.arch
    );
    println!(
        "with {} stacked on it: {} allowed ({} fewer, {:.0}% of the default)",
        args.pod_profile.display(),
        n.stacked_allowed,
        n.newly_denied.len(),
        100.0 * n.stacked_allowed as f64 / n.default_allowed.max(1) as f64
    );
    println!("  still allowed: {}", n.kept.join(" "));
    println!("  now denied:    {}", n.newly_denied.join(" "));
    if !n.still_denied.is_empty() {
        println!(
            "  allowed by the pod's profile but denied by the default (stays denied): {}",
            n.still_denied.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
