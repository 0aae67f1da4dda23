//! `stockade node check`: what on this node weakens containers. Facts are gathered in
//! [`gather`] (files under a root, live probes) and judged in [`checks`] (pure); the
//! result is printed by [`report`] as a table or as JSON.

mod checks;
mod containerd;
mod facts;
mod gather;
mod report;

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Print findings and the facts they rest on as one JSON document.
    #[arg(long)]
    json: bool,
    /// Read the node's files under this directory instead of / (a fixture, a mounted
    /// image); implies --no-probe.
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// containerd's main config file (its imports are followed).
    #[arg(
        long,
        default_value = "/etc/containerd/config.toml",
        value_name = "FILE"
    )]
    containerd_config: PathBuf,
    /// kubelet's config file (for its cgroup driver).
    #[arg(
        long,
        default_value = "/var/lib/kubelet/config.yaml",
        value_name = "FILE"
    )]
    kubelet_config: PathBuf,
    /// A profile to check besides those containerd's config names (repeatable).
    #[arg(long = "profile", value_name = "FILE")]
    profiles: Vec<PathBuf>,
    /// No live probes (idmapped-mount clones, `containerd --version`): judge filesystems
    /// by the kernel version alone.
    #[arg(long)]
    no_probe: bool,
}

/// Exit 0 when nothing fails (warnings included), 1 when a finding fails.
pub fn check(args: CheckArgs) -> Result<ExitCode> {
    let probe = !args.no_probe && args.root == std::path::Path::new("/");
    let sources = gather::Sources {
        root: args.root,
        containerd_config: args.containerd_config,
        kubelet_config: args.kubelet_config,
        profiles: args.profiles,
        probe,
    };
    let facts = gather::gather(&sources);
    let findings = checks::judge(&facts);
    if args.json {
        println!("{}", report::json(&findings, &facts)?);
    } else {
        print!("{}", report::table(&findings));
    }
    let failed = findings.iter().any(|f| f.status == checks::Status::Fail);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
