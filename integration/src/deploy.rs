//! deploy/ as the tests use it: the containerd snippets, containerd's view of a config
//! (`config dump`), and a pod run through a registered handler to show it works.

use crate::binaries::{Binaries, ConfigVersion};
use crate::containerd::Containerd;
use crate::hardening::{assert_no_violations, check_container, profile_cap_allowlist};
use crate::paths;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The version-2 snippet (containerd 1.6; merged into config.toml).
pub const SNIPPET_V2: &str = "deploy/containerd-stockade.toml";
/// The version-3 drop-in (containerd 2.x, through `imports`).
pub const SNIPPET_V3: &str = "deploy/containerd-stockade-v3.toml";
/// The profile directory the snippets name.
pub const NODE_PROFILES: &str = "/etc/stockade/";

pub fn snippet_path(version: ConfigVersion) -> PathBuf {
    paths::workspace_root().join(match version {
        ConfigVersion::V2 => SNIPPET_V2,
        ConfigVersion::V3 => SNIPPET_V3,
    })
}

/// The snippet's text, its profile paths pointed at `profiles` (the node's /etc/stockade
/// is not the tests' to write).
pub fn snippet(version: ConfigVersion, profiles: &Path) -> Result<String> {
    let path = snippet_path(version);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.replace(NODE_PROFILES, &format!("{}/", profiles.display())))
}

/// Only the tables of Stockade's runtimes from a snippet (what an operator adds to a
/// config that already has its runc table).
pub fn stockade_tables(snippet: &str) -> String {
    let mut keep = false;
    let mut out = String::new();
    for line in snippet.lines() {
        let t = line.trim_start();
        if t.starts_with('#') {
            continue;
        }
        if t.starts_with('[') {
            keep = t.contains(".runtimes.stockade]")
                || t.contains(".runtimes.stockade.")
                || t.contains(".runtimes.stockade-strict")
                || t.contains(".runtimes.stockade-record");
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A config with `imports = [<file>]` added after its `version` line.
pub fn with_import(config: &str, file: &Path) -> Result<String> {
    let Some((version, rest)) = config.split_once('\n') else {
        bail!("config has no lines");
    };
    if !version.starts_with("version") {
        bail!("config does not start with its version line: {version:?}");
    }
    Ok(format!(
        "{version}\nimports = [{:?}]\n{rest}",
        file.display().to_string()
    ))
}

/// `containerd --config <config> config dump` of the containerd under test, parsed.
pub fn config_dump(config: &Path) -> Result<toml::Table> {
    let containerd = Binaries::get()?.containerd();
    let out = Command::new(&containerd)
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .with_context(|| format!("running {} config dump", containerd.display()))?;
    if !out.status.success() {
        bail!(
            "{} --config {} config dump: {}",
            containerd.display(),
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).context("parsing the config dump")
}

/// The CRI runtimes table of a config dump (its layout follows the containerd's version,
/// whatever version the config file had).
pub fn dumped_runtimes(dump: &toml::Table) -> Result<&toml::Table> {
    let plugin = match Binaries::get()?.config_version() {
        ConfigVersion::V2 => "io.containerd.grpc.v1.cri",
        ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
    };
    dump.get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|p| p.get("containerd"))
        .and_then(|p| p.get("runtimes"))
        .and_then(toml::Value::as_table)
        .with_context(|| format!("no plugins.{plugin}.containerd.runtimes in the dump"))
}

/// `ConfigPath` of each of Stockade's handlers in a dump (None where absent).
pub fn dumped_config_paths(dump: &toml::Table) -> Result<Vec<(String, Option<String>)>> {
    let runtimes = dumped_runtimes(dump)?;
    Ok(crate::paths::HANDLER_PROFILES
        .iter()
        .map(|(name, _)| {
            let rt = runtimes.get(*name);
            let typed = rt
                .and_then(|r| r.get("runtime_type"))
                .and_then(toml::Value::as_str)
                == Some(crate::containerd::STOCKADE_RUNTIME);
            let path = rt
                .and_then(|r| r.get("options"))
                .and_then(|o| o.get("ConfigPath"))
                .and_then(toml::Value::as_str)
                .filter(|_| typed)
                .map(str::to_string);
            (name.to_string(), path)
        })
        .collect())
}

/// Run a pod with one container under `handler` (a Stockade handler whose profile is
/// `profile`), check from inside and from the host that it is hardened, then remove it.
pub fn hardened_pod_round_trip(c: &Containerd, handler: &str, profile: &Path) -> Result<()> {
    let cri = c.cri()?;
    let name = format!("deploy-{handler}");
    let pod_cfg = cri.pod_config(&name);
    // An application user: the strict profile refuses root (rule run-as-root).
    let app = cri.container_config_as("app", &["sleep", "600"], 1000);
    let (pod, id) = cri
        .run_pod_sandbox(&pod_cfg, handler)
        .and_then(|pod| Ok((pod.clone(), cri.run_container(&pod, &app, &pod_cfg)?)))
        .with_context(|| format!("a pod under handler {handler}"))?;
    let status = cri.exec_sync(&id, &["cat", "/proc/self/status"])?.ok()?;
    let uid_map = cri.exec_sync(&id, &["cat", "/proc/self/uid_map"])?.ok()?;
    let pid = cri.container_pid(&id)?;
    let violations = check_container(&status, &uid_map, profile_cap_allowlist(profile)?, pid)?;
    assert_no_violations(&format!("container under {handler}"), &violations);
    cri.stop_pod_sandbox(&pod)?;
    cri.remove_pod_sandbox(&pod)?;
    Ok(())
}

/// Executables of the Stockade shims serving this instance (found by its socket in their
/// command line).
pub fn stockade_shim_exes(c: &Containerd) -> Vec<PathBuf> {
    let socket = c.socket.display().to_string();
    crate::teardown::processes()
        .into_iter()
        .filter(|p| {
            p.args
                .first()
                .is_some_and(|a| a.ends_with(paths::SHIM_BINARY))
        })
        .filter(|p| crate::teardown::arg_value(&p.args, "-address") == Some(socket.as_str()))
        .filter_map(|p| std::fs::read_link(format!("/proc/{}/exe", p.pid)).ok())
        .collect()
}
