//! `stockade`: the operator's command line.
//!
//! - `stockade profile check FILE`: validate a profile and its seccomp file.
//! - `stockade harden --profile FILE CONFIG_JSON`: show what Stockade would make of a
//!   container's config.json: the hardened config on stdout, the report on stderr, or the
//!   refusal naming the rule.
//! - `stockade monitor`: the node's Prometheus exporter.
//! - `stockade node check [--json]`: what on this node weakens containers.

mod monitor;
mod node;
mod profile;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use stockade_runtime::hardener::{self, CgroupDriver, HardenContext, HardenError};
use stockade_runtime::idrange::{IdRange, REUSE_POLICY};
use stockade_runtime::pod::PodIdentity;
use stockade_runtime::profile::Profile;
use stockade_runtime::seccomp;
use stockade_runtime::{kubelet, namespaces, volumes};

/// Exit code for a container the policy refuses (bad input exits 2).
const EXIT_REFUSED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "stockade",
    version,
    about = "Stockade: hardened containers for Kubernetes nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with hardening profiles.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Print the hardened version of an OCI config.json, or the refusal.
    Harden {
        /// The profile to apply.
        #[arg(long)]
        profile: PathBuf,
        /// The container's OCI config.json.
        config: PathBuf,
        /// Container ID (default: "stockade-dry-run").
        #[arg(long, default_value = "stockade-dry-run")]
        container_id: String,
        /// For an app container of a pod: the sandbox's user namespace to join; its PID is
        /// taken as the pod's, whose namespaces the container may join.
        #[arg(long, default_value = "/proc/SANDBOX_PID/ns/user")]
        pod_userns: PathBuf,
        /// Print the result as one JSON document {"spec", "seccomp", "report"} on stdout.
        #[arg(long)]
        json: bool,
        /// Harden as on a node whose cgroup driver is systemd (keeps `slice:prefix:name`
        /// cgroupsPaths).
        #[arg(long)]
        systemd_cgroup: bool,
    },
    /// Serve Prometheus metrics about this node's Stockade containers (one per node).
    Monitor(monitor::MonitorArgs),
    /// Look at this node itself.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Report what on this node weakens containers (kernel, containerd, cgroups, ID pool,
    /// profiles), each finding with why it matters and the fix. Exits 1 on a failure.
    Check(node::CheckArgs),
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Validate a profile TOML and the seccomp profile it names.
    Check { file: PathBuf },
    /// Record what containers in record mode call; write a seccomp profile per container.
    Record(profile::record::RecordArgs),
    /// Show how a pod's seccomp profile narrows a profile's default filter.
    Diff(profile::diff::DiffArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profile {
            command: ProfileCommand::Check { file },
        } => check_profile(&file),
        Command::Profile {
            command: ProfileCommand::Record(args),
        } => profile::record::run(args),
        Command::Profile {
            command: ProfileCommand::Diff(args),
        } => profile::diff::run(args),
        Command::Harden {
            profile,
            config,
            container_id,
            pod_userns,
            json,
            systemd_cgroup,
        } => {
            let driver = if systemd_cgroup {
                CgroupDriver::Systemd
            } else {
                CgroupDriver::Cgroupfs
            };
            harden(&profile, &config, container_id, pod_userns, json, driver)
        }
        Command::Monitor(args) => monitor::run(args),
        Command::Node {
            command: NodeCommand::Check(args),
        } => node::check(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stockade: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check_profile(file: &std::path::Path) -> Result<ExitCode> {
    let profile = Profile::load(file)?;
    // The shim refuses a profile whose pool overlaps kubelet's user-namespace IDs.
    let kubelet = kubelet::kubelet_range(&profile.kubelet)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("profile {}: key `kubelet.userns_ids`", file.display()))?;
    if let Some(why) = kubelet::pool_overlap(&profile.userns, kubelet.as_ref()) {
        anyhow::bail!("profile {}: key `userns`: {why}", file.display());
    }
    let compiled = seccomp::compile(&profile.seccomp.profile)
        .with_context(|| format!("compiling {}", profile.seccomp.file.display()))?;
    let mut allow: Vec<String> = profile
        .capabilities
        .allow
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    allow.sort();
    let c = &profile.cgroups;
    let pods = profile.userns.size / profile.userns.ids_per_pod;
    println!("{}: profile {:?} is valid", file.display(), profile.name);
    println!("  capabilities: {}", allow.join(", "));
    let seccomp_files: Vec<String> = std::iter::once(&profile.seccomp.file)
        .chain(&profile.seccomp.narrowing)
        .map(|f| f.display().to_string())
        .collect();
    println!(
        "  seccomp:      {} ({} BPF instructions on this architecture, denials logged: {})",
        seccomp_files.join(" narrowed by "),
        compiled.instruction_count(),
        profile.seccomp.log_denials
    );
    println!(
        "  masked paths: {}, read-only paths: {}",
        profile.paths.masked.len(),
        profile.paths.readonly.len()
    );
    println!(
        "  user IDs:     {} pods of {} IDs from host ID {}; reuse: {REUSE_POLICY}",
        pods, profile.userns.ids_per_pod, profile.userns.first_id
    );
    let v = &profile.volumes;
    println!(
        "  kubelet:      root {}, user-namespace IDs {}; hostPaths listed: {}, others: {:?}; \
         unidmappable volumes: {:?}",
        profile.kubelet.root_dir.display(),
        kubelet.map_or("none".to_string(), |k| k.to_string()),
        v.host_paths.len(),
        v.unlisted_host_paths,
        v.unidmappable
    );
    let devices = match profile.policy.allowed_devices.as_slice() {
        [] => "none beyond the OCI defaults".to_string(),
        list => list.join(", "),
    };
    println!(
        "  rules:        host-devices: {devices}; run-as-root: {:?}",
        profile.policy.run_as_root
    );
    println!(
        "  limits:       default cpu {:.2} / memory {} / pids {}; ceiling cpu {:.2} / memory {} / pids {}; above the ceiling: {:?}",
        c.defaults.cpu_millicores as f64 / 1000.0,
        c.defaults.memory_bytes,
        c.defaults.pids,
        c.ceilings.cpu_millicores as f64 / 1000.0,
        c.ceilings.memory_bytes,
        c.ceilings.pids,
        c.on_excess
    );
    Ok(ExitCode::SUCCESS)
}

fn harden(
    profile: &std::path::Path,
    config: &std::path::Path,
    container_id: String,
    pod_userns: PathBuf,
    json: bool,
    cgroup_driver: CgroupDriver,
) -> Result<ExitCode> {
    let profile = Profile::load(profile)?;
    let spec = stockade_runtime::spec::load(config)?;
    let pod = PodIdentity::from_annotations(
        &container_id,
        &spec.annotations().clone().unwrap_or_default(),
    );
    // A dry run: the pod gets the pool's first range; its sandbox is the process named by
    // --pod-userns; the network namespace path, if any, is looked at on this machine.
    let sandbox_pid = pod_userns
        .strip_prefix("/proc")
        .ok()
        .and_then(|rest| rest.iter().next()?.to_str()?.parse::<i32>().ok());
    let netns_path_is_host = namespaces::spec_netns_is_host(&spec);
    // A hostUsers: false pod keeps kubelet's mapping (or is refused for it).
    let id_range = match hardener::kubelet_mapping(&spec, &profile) {
        Ok(mapping) => mapping.unwrap_or(IdRange {
            first: profile.userns.first_id,
            size: profile.userns.ids_per_pod,
        }),
        Err(HardenError::Refused(refusal)) => {
            eprintln!("stockade: {refusal}");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Err(e) => anyhow::bail!("invalid spec {}: {e}", config.display()),
    };
    let ctx = HardenContext {
        container_id,
        sandbox_id: pod.sandbox_id.clone(),
        is_sandbox: pod.is_sandbox,
        id_range,
        pod_userns: (!pod.is_sandbox).then_some(pod_userns),
        pod_pids: sandbox_pid
            .into_iter()
            .filter(|_| !pod.is_sandbox)
            .collect(),
        netns_path_is_host,
        cgroup_driver,
        cgroup_v1: stockade_cgroups::Host::current()
            .map(|h| h.v1_hierarchies().to_vec())
            .unwrap_or_default(),
        resolved_sources: volumes::resolve(&hardener::volumes::bind_sources(&spec)),
        writable_layer: Default::default(),
    };
    let hardened = match hardener::harden(spec, &profile, &ctx) {
        Ok(h) => h,
        Err(HardenError::Refused(refusal)) => {
            eprintln!("stockade: {refusal}");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Err(HardenError::InvalidSpec(problem)) => {
            anyhow::bail!("invalid spec {}: {problem}", config.display())
        }
    };
    if json {
        let doc = serde_json::json!({
            "spec": hardened.spec,
            "seccomp": {"default": hardened.seccomp.default, "pod": hardened.seccomp.pod},
            "report": hardened.report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&hardened.spec)?);
        eprintln!("stockade: hardened with profile {:?}:", profile.name);
        for change in &hardened.report.changes {
            eprintln!("  {:<13} {}", change.guard, change.what);
        }
        for note in &hardened.report.notes {
            eprintln!("  {:<13} {}", "note", note);
        }
        for finding in &hardened.report.findings {
            eprintln!(
                "  {:<13} rule `{}`: {}",
                "finding", finding.rule, finding.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
