//! The container's cgroup (stockade-cgroups): resource updates, pids, the cleanup sweep,
//! and the node's cgroup driver for a new container.

use std::path::PathBuf;
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use stockade_cgroups::{CgroupDriver, CgroupsPath, Host};
use stockade_runtime::oci_spec::runtime::{LinuxResources, Spec};

fn host() -> anyhow::Result<&'static Host> {
    Ok(Host::current()?)
}

/// The node's cgroup v1 hierarchies for the hardener (none on cgroup v2, or where the
/// setup cannot be read: Create then fails at the cgroup step, naming it).
pub fn v1_hierarchies() -> Vec<stockade_cgroups::V1Hierarchy> {
    host()
        .map(|h| h.v1_hierarchies().to_vec())
        .unwrap_or_default()
}

/// Detects the node's cgroup setup now (once per process; on cgroup v1 it asks the kernel
/// about the mounts under the cgroup root, or reads the whole mount table where the
/// kernel is older than 6.11). The server calls it before forking its zygote, so both
/// share one detection; a failure is logged and met again on first use.
pub fn detect() {
    if let Err(e) = host() {
        tracing::warn!(error = %format!("{e:#}"), "cgroup setup unknown");
    }
}

/// Keeps the kernel's cgroup-migration lock ready (see `Host::open_attach_window`) until
/// the window is dropped, so the container's move does not wait for a grace period.
pub fn open_attach_window() -> stockade_cgroups::AttachWindow {
    match host() {
        Ok(host) => host.open_attach_window(),
        Err(_) => stockade_cgroups::AttachWindow::none(),
    }
}

/// Applies already-hardened resources to the container's cgroup.
pub fn apply(cgroups_path: &str, resources: &LinuxResources) -> anyhow::Result<()> {
    Ok(host()?.apply(cgroups_path, resources)?)
}

/// Whether the node's controllers are on cgroup v1 (legacy or hybrid); false where the
/// setup cannot be read.
pub fn is_v1() -> bool {
    host().is_ok_and(|h| !h.is_unified())
}

/// Makes the container's cgroup directories on cgroup v1 (`Host::make_v1_dirs`).
pub fn make_v1_dirs(cgroups_path: &str) -> anyhow::Result<()> {
    host()?.make_v1_dirs(cgroups_path)?;
    Ok(())
}

pub fn pids(cgroups_path: &str) -> anyhow::Result<Vec<i32>> {
    Ok(host()?.pids(cgroups_path)?)
}

/// Removes the cgroup `dir` in every hierarchy where it exists and is empty.
pub fn remove_empty(dir: &str) {
    match host() {
        Ok(host) => host.remove_empty(dir),
        Err(e) => tracing::warn!(cgroup = dir, error = %e, "pod cgroup kept"),
    }
}

/// Empties and removes a container's cgroup; returns the directories left.
pub fn kill_and_remove(dir: &str, timeout: Duration) -> Vec<PathBuf> {
    match host() {
        Ok(host) => host.kill_and_remove(dir, timeout),
        Err(e) => {
            tracing::warn!(cgroup = dir, error = %e, "container cgroup not swept");
            vec![PathBuf::from(dir)]
        }
    }
}

/// Enforces the spec's device rules on a systemd scope (see `Host::enforce_devices`);
/// call once the container is created and before it starts.
pub fn enforce_devices(cgroups_path: &str, resources: &LinuxResources) -> anyhow::Result<()> {
    Ok(host()?.enforce_devices(cgroups_path, resources)?)
}

/// The cgroup driver for a new container: systemd when its runtime options say
/// `SystemdCgroup` or its cgroupsPath has systemd's `slice:prefix:name` form, and systemd
/// runs this node on cgroup v2; cgroupfs otherwise.
pub fn driver(options: Option<&Any>, spec: &Spec) -> CgroupDriver {
    let path_wants = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .and_then(|p| CgroupsPath::parse(&p.to_string_lossy()).ok())
        .is_some_and(|p| p.is_systemd());
    let wants = path_wants || options.is_some_and(systemd_cgroup_option);
    match host() {
        Ok(host) => {
            let driver = host.driver(wants);
            if wants && driver != CgroupDriver::Systemd {
                tracing::warn!(
                    why = host.why_not_systemd().unwrap_or_default(),
                    "systemd cgroup driver asked for but not available: using cgroupfs"
                );
            }
            driver
        }
        Err(e) => {
            tracing::warn!(error = %e, "cgroup setup unknown: using cgroupfs");
            CgroupDriver::Cgroupfs
        }
    }
}

/// `SystemdCgroup = true` in the runtime options: runc's options message (field 9,
/// `systemd_cgroup`, as `ctr run --runc-systemd-cgroup` sends it), or the runtime's TOML
/// table that containerd passes as `ConfigBody` (field 3) when it has no `ConfigPath`.
fn systemd_cgroup_option(any: &Any) -> bool {
    use containerd_shim_protos::protobuf::CodedInputStream;
    let field = if any.type_url.ends_with("runc.v1.Options") {
        9
    } else if any.type_url.ends_with("runtimeoptions.v1.Options") {
        3
    } else {
        return false;
    };
    let mut input = CodedInputStream::from_bytes(&any.value);
    let mut found = false;
    while let Ok(Some(tag)) = input.read_raw_tag_or_eof() {
        let (number, wire) = (tag >> 3, tag & 7);
        let value = match (number == field, wire) {
            (true, 0) => input.read_bool().ok(),
            (true, 2) => input
                .read_bytes()
                .ok()
                .map(|body| toml_says_systemd(&String::from_utf8_lossy(&body))),
            _ => {
                let Some(wt) = containerd_shim_protos::protobuf::rt::WireType::new(wire) else {
                    return false;
                };
                if input.skip_field(wt).is_err() {
                    return false;
                }
                continue;
            }
        };
        match value {
            Some(v) => found = v,
            None => return false,
        }
    }
    found
}

/// `SystemdCgroup = true` as a top-level key of a TOML table.
fn toml_says_systemd(body: &str) -> bool {
    body.lines().any(|line| {
        let line = line.split('#').next().unwrap_or_default();
        matches!(line.split_once('='), Some((k, v)) if k.trim() == "SystemdCgroup" && v.trim() == "true")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn runc_options_systemd_cgroup_field() {
        // field 1 (no_pivot_root) false, field 9 (systemd_cgroup) true
        let on = any("containerd.runc.v1.Options", vec![0x08, 0, 0x48, 1]);
        assert!(systemd_cgroup_option(&on));
        let off = any("containerd.runc.v1.Options", vec![0x48, 0]);
        assert!(!systemd_cgroup_option(&off));
        assert!(!systemd_cgroup_option(&any(
            "containerd.runc.v1.Options",
            vec![]
        )));
        // Truncated: no decision for systemd.
        assert!(!systemd_cgroup_option(&any(
            "containerd.runc.v1.Options",
            vec![0x48]
        )));
    }

    #[test]
    fn cri_config_body_systemd_cgroup_key() {
        let body = b"BinaryName = \"x\"\nSystemdCgroup = true # kubelet's driver\n";
        let mut value = vec![0x1a, body.len() as u8];
        value.extend_from_slice(body);
        assert!(systemd_cgroup_option(&any(
            "cri.runtimeoptions.v1.Options",
            value
        )));
        let body = b"SystemdCgroup = false\n";
        let mut value = vec![0x1a, body.len() as u8];
        value.extend_from_slice(body);
        assert!(!systemd_cgroup_option(&any(
            "cri.runtimeoptions.v1.Options",
            value
        )));
        assert!(!systemd_cgroup_option(&any("other.Options", vec![0x48, 1])));
    }
}
