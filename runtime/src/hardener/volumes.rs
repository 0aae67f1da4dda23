//! Bind mounts (kubelet's volumes, containerd's per-pod files, hostPaths): what each one
//! is, whether the profile allows it (rule `host-path`), and how the shim mounts it.
//!
//! Every bind mount is staged by the shim as an idmapped clone through the pod's user
//! namespace, so a file owned on disk by host ID N appears as N inside and what container
//! UID N writes lands on disk as N, as under runc. That also lets container root write
//! host-root-owned files, which is why a source that is neither kubelet's (under
//! `<kubelet.root_dir>/pods/<this pod's uid>/`) nor containerd's own per-pod files is a
//! hostPath, allowed only as the profile's `[volumes]` says.
//!
//! Secret and service-account-token volumes are sealed (ro, nosuid, nodev, noexec) whatever
//! the request.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HardenContext, HardenError, Refusal, Report, Rule};
use crate::oci_spec::runtime::{Mount, Spec};
use crate::pod::ANNOTATION_SANDBOX_UID;
use crate::profile::Profile;
use crate::volume_settings::{HostPathRule, Unidmappable, UnlistedHostPaths, VolumeSettings};

/// kubelet volume plugins whose files are secrets.
const SECRET_PLUGINS: [&str; 2] = ["kubernetes.io~secret", "kubernetes.io~projected"];
/// Options that seal a secret volume.
const SEALED: [&str; 4] = ["ro", "nosuid", "nodev", "noexec"];
/// The files containerd's CRI keeps per pod sandbox and bind-mounts into its containers.
const POD_FILES: [&str; 4] = ["hostname", "hosts", "resolv.conf", "shm"];

/// Where a bind mount's source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum VolumeKind {
    /// Under kubelet's directory of this pod; `plugin` is the volume plugin
    /// (`kubernetes.io~secret`, ...) for `volumes/<plugin>/<name>`, None for kubelet's other
    /// files (etc-hosts, termination log, subPaths).
    Kubelet {
        plugin: Option<String>,
    },
    /// containerd's per-pod hosts, hostname, resolv.conf or /dev/shm of this sandbox.
    PodFile,
    HostPath,
}

/// How the shim mounts a planned volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// An idmapped clone through the pod's user namespace.
    Idmapped,
    /// A plain bind: mount propagation (shared, slave) cannot pass an idmapped clone.
    Plain,
}

/// One bind mount of the spec, as the shim stages it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedVolume {
    /// Its index in the spec's `mounts` (also its staging name).
    pub index: usize,
    pub destination: PathBuf,
    /// What to mount (for a hostPath, the source with symlinks resolved).
    pub source: PathBuf,
    pub kind: VolumeKind,
    pub recursive: bool,
    pub mapping: Mapping,
    /// What to do when the source's filesystem cannot be idmapped.
    pub on_unidmappable: Unidmappable,
    /// Read-only, nosuid, nodev, noexec on the staged mount itself (secrets).
    pub sealed: bool,
}

pub(crate) fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Read-only as mount(8) reads the options: the last of ro/rro and rw/rrw wins.
fn is_read_only(options: &[String]) -> bool {
    options.iter().fold(false, |ro, o| match o.as_str() {
        "ro" | "rro" => true,
        "rw" | "rrw" => false,
        _ => ro,
    })
}

fn propagation(options: &[String]) -> Option<&str> {
    options
        .iter()
        .map(String::as_str)
        .find(|o| matches!(*o, "shared" | "rshared" | "slave" | "rslave"))
}

/// A single normal path component (a pod UID or sandbox id as a directory name).
fn is_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/')
}

/// What `source` is for a container of the pod with kubelet UID `pod_uid` and sandbox
/// `sandbox_id`.
pub fn classify(
    source: &Path,
    kubelet_root: &Path,
    pod_uid: Option<&str>,
    sandbox_id: &str,
) -> VolumeKind {
    if let Some(uid) = pod_uid.filter(|u| is_name(u)) {
        let pod_dir = kubelet_root.join("pods").join(uid);
        if let Ok(rest) = source.strip_prefix(&pod_dir) {
            let parts: Vec<_> = rest.components().collect();
            let plugin = match parts.as_slice() {
                [Component::Normal(v), Component::Normal(p), ..] if *v == "volumes" => {
                    p.to_str().map(str::to_string)
                }
                _ => None,
            };
            return VolumeKind::Kubelet { plugin };
        }
    }
    let parts: Vec<_> = source.components().collect();
    let is_pod_file = parts.windows(4).enumerate().any(|(i, w)| {
        matches!(w, [Component::Normal(cri), Component::Normal(sb), Component::Normal(id), Component::Normal(file)]
            if *cri == "io.containerd.grpc.v1.cri" && *sb == "sandboxes" && *id == sandbox_id
                && is_name(sandbox_id) && POD_FILES.iter().any(|f| file == f)
                && i + 4 == parts.len())
    });
    if is_pod_file {
        VolumeKind::PodFile
    } else {
        VolumeKind::HostPath
    }
}

fn refuse(reason: String) -> HardenError {
    HardenError::Refused(Refusal {
        rule: Rule::HostPath,
        reason,
    })
}

/// The profile's verdict on a hostPath: Ok with a note, or the refusal.
fn check_host_path(
    source: &Path,
    destination: &Path,
    read_only: bool,
    settings: &VolumeSettings,
) -> Result<String, HardenError> {
    let (s, d) = (source.display(), destination.display());
    // The most specific entry decides.
    let listed: Option<&HostPathRule> = settings
        .host_paths
        .iter()
        .filter(|r| r.covers(source))
        .max_by_key(|r| r.path.components().count());
    match listed {
        Some(rule) if read_only || rule.writable => Ok(format!(
            "hostPath {s} at {d} allowed{} by volumes.host_paths ({})",
            if read_only { " read-only" } else { " writable" },
            rule.path.display()
        )),
        Some(rule) => Err(refuse(format!(
            "host path {s} would be mounted writable at {d}, but volumes.host_paths lists {} \
             read-only",
            rule.path.display()
        ))),
        None => match settings.unlisted_host_paths {
            UnlistedHostPaths::Deny => Err(refuse(format!(
                "the container would mount host path {s} at {d}: this profile allows only the \
                 host paths listed in volumes.host_paths ({})",
                listed_paths(settings)
            ))),
            UnlistedHostPaths::ReadOnly if read_only => Ok(format!(
                "hostPath {s} at {d} allowed read-only (not listed in volumes.host_paths)"
            )),
            UnlistedHostPaths::ReadOnly => Err(refuse(format!(
                "the container would mount host path {s} writable at {d}: a host path not listed \
                 in volumes.host_paths may only be mounted read-only ({})",
                listed_paths(settings)
            ))),
        },
    }
}

fn listed_paths(settings: &VolumeSettings) -> String {
    if settings.host_paths.is_empty() {
        return "none listed".into();
    }
    let paths: Vec<String> = settings
        .host_paths
        .iter()
        .map(|r| {
            format!(
                "{}{}",
                r.path.display(),
                if r.writable { " writable" } else { "" }
            )
        })
        .collect();
    format!("listed: {}", paths.join(", "))
}

/// Seal a secret volume's options: ro, nosuid, nodev, noexec; rw, suid, dev, exec removed.
fn seal(options: &mut Vec<String>) -> bool {
    let before = options.clone();
    options.retain(|o| !matches!(o.as_str(), "rw" | "rrw" | "suid" | "dev" | "exec"));
    for o in SEALED {
        if !options.iter().any(|have| have == o) {
            options.push(o.to_string());
        }
    }
    *options != before
}

/// Check every bind mount against the profile and plan how it is mounted; seals secret
/// volumes in `spec`.
pub(crate) fn plan(
    spec: &mut Spec,
    profile: &Profile,
    ctx: &HardenContext,
    report: &mut Report,
) -> Result<Vec<PlannedVolume>, HardenError> {
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(Vec::new());
    };
    let pod_uid = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SANDBOX_UID))
        .cloned();
    let mut planned = Vec::new();
    for (index, m) in mounts.iter_mut().enumerate() {
        take_mount_mappings(index, m, ctx)?;
        if !is_bind(m) {
            continue;
        }
        let destination = m.destination().clone();
        let Some(source) = m.source().clone() else {
            return Err(HardenError::InvalidSpec(format!(
                "mounts[{index}] (destination {}): a bind mount without a source",
                destination.display()
            )));
        };
        if !source.is_absolute() || source.components().any(|c| c == Component::ParentDir) {
            return Err(refuse(format!(
                "bind source {:?} of the volume at {} must be an absolute path without `..`",
                source,
                destination.display()
            )));
        }
        let mut options = m.options().clone().unwrap_or_default();
        let read_only = is_read_only(&options);
        let kind = classify(
            &source,
            &profile.kubelet.root_dir,
            pod_uid.as_deref(),
            &ctx.sandbox_id,
        );
        let mut mount_source = source.clone();
        if kind == VolumeKind::HostPath {
            if let Some(resolved) = ctx.resolved_sources.get(&source) {
                mount_source = resolved.clone();
            }
            let note = check_host_path(&mount_source, &destination, read_only, &profile.volumes)?;
            report.note(note);
        }
        let sealed = matches!(&kind, VolumeKind::Kubelet { plugin: Some(p) } if SECRET_PLUGINS.contains(&p.as_str()));
        if sealed && seal(&mut options) {
            report.change(
                "volumes",
                format!(
                    "secret volume at {} mounted {} (was: {})",
                    destination.display(),
                    SEALED.join(","),
                    m.options().clone().unwrap_or_default().join(",")
                ),
            );
            m.set_options(Some(options.clone()));
        }
        let mapping = match propagation(&options) {
            Some(p) => {
                report.note(format!(
                    "volume at {}: mount propagation `{p}` needs a plain bind, so its files keep \
                     their host IDs",
                    destination.display()
                ));
                Mapping::Plain
            }
            None => Mapping::Idmapped,
        };
        planned.push(PlannedVolume {
            index,
            destination,
            source: mount_source,
            recursive: m.typ().as_deref() == Some("rbind") || options.iter().any(|o| o == "rbind"),
            on_unidmappable: match kind {
                // containerd's shm is a tmpfs; these files are the runtime's, readable by all.
                VolumeKind::PodFile => Unidmappable::Unmapped,
                _ => profile.volumes.unidmappable,
            },
            kind,
            mapping,
            sealed,
        });
    }
    spec.set_mounts(Some(mounts));
    let idmapped: Vec<String> = planned
        .iter()
        .filter(|v| v.mapping == Mapping::Idmapped)
        .map(|v| v.destination.display().to_string())
        .collect();
    if !idmapped.is_empty() {
        report.change(
            "volumes",
            format!(
                "idmapped through the pod's user namespace (host IDs kept, as under runc): {}",
                idmapped.join(", ")
            ),
        );
    }
    Ok(planned)
}

/// containerd 2.x asks for idmapped binds of its own pod files in a hostUsers: false pod
/// (`uidMappings`/`gidMappings` on the mount). Every bind is idmapped with the pod's
/// mapping anyway, so such a request is taken out of the spec (libcontainer refuses it)
/// when it names exactly that mapping; any other is an error.
fn take_mount_mappings(
    index: usize,
    m: &mut Mount,
    ctx: &HardenContext,
) -> Result<(), HardenError> {
    let (uids, gids) = (m.uid_mappings().clone(), m.gid_mappings().clone());
    if uids.is_none() && gids.is_none() {
        return Ok(());
    }
    let pod = (0, ctx.id_range.first, ctx.id_range.size);
    let is_pod = |maps: &Option<Vec<crate::oci_spec::runtime::LinuxIdMapping>>| matches!(maps.as_deref(), Some([one]) if (one.container_id(), one.host_id(), one.size()) == pod);
    if !is_bind(m) || !is_pod(&uids) || !is_pod(&gids) {
        return Err(HardenError::InvalidSpec(format!(
            "mounts[{index}] (destination {}): an idmapped mount is supported only as a bind \
             mount with the pod's own mapping 0:{}:{}",
            m.destination().display(),
            ctx.id_range.first,
            ctx.id_range.size
        )));
    }
    m.set_uid_mappings(None);
    m.set_gid_mappings(None);
    Ok(())
}

/// Host paths of the spec's bind sources, for the shim to resolve (symlinks) before
/// hardening.
pub fn bind_sources(spec: &Spec) -> Vec<PathBuf> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| is_bind(m))
        .filter_map(|m| m.source().clone())
        .filter(|s| s.is_absolute())
        .collect()
}

/// The spec's bind mounts pointed at their staged copies (`<staging>/<index>`).
pub fn point_at_staging(spec: &mut Spec, planned: &[PlannedVolume], staging: &Path) {
    let Some(mut mounts) = spec.mounts().clone() else {
        return;
    };
    for v in planned {
        if let Some(m) = mounts.get_mut(v.index) {
            m.set_source(Some(staging.join(v.index.to_string())));
        }
    }
    spec.set_mounts(Some(mounts));
}

/// Sources resolved by the shim (original -> canonical), for [`HardenContext`].
pub type ResolvedSources = BTreeMap<PathBuf, PathBuf>;

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
