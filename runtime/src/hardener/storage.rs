//! Ephemeral storage: how much the container may write to its writable layer.
//!
//! kubelet's ephemeral-storage limit never reaches the runtime (it is not in the OCI spec
//! nor in CRI's LinuxContainerResources; kubelet enforces it by evicting pods after the
//! fact), so the bound comes from the profile: its default, or what the container asks for
//! through an annotation, within the profile's ceiling. An annotation can come from the
//! pod itself (containerd's `pod_annotations` passthrough): the ceiling is what bounds it.

use std::path::PathBuf;

use super::{HardenError, Refusal, Report, Rule};
use crate::oci_spec::runtime::Spec;
use crate::profile::{parse_byte_size, ByteSize, Profile};
use crate::storage_settings::{StorageLimits, Unsupported, MIN_BYTES, MIN_INODES};

/// Bytes the container's writable layer may hold ("2Gi", "1073741824").
pub const ANNOTATION_BYTES: &str = "io.stockade.ephemeral-storage";
/// Inodes (files, directories, links) it may hold.
pub const ANNOTATION_INODES: &str = "io.stockade.ephemeral-inodes";

/// What the shim found under the container's writable layer (facts, gathered before the
/// decision).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WritableLayer {
    /// No writable layer: a read-only overlay, or no rootfs mounts at all.
    #[default]
    None,
    /// The overlay upper directory and its work directory (which must share the upper's
    /// project: a copy-up renames from one into the other), on a filesystem with project
    /// quotas enforced.
    Quota {
        dirs: Vec<PathBuf>,
        filesystem: String,
    },
    /// Somewhere no project quota can bound: `why` names the filesystem and what it lacks.
    NoQuota { why: String },
}

/// A project quota to set on the upper directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageQuota {
    /// The upper directory first, then the work directory.
    pub dirs: Vec<PathBuf>,
    pub limits: StorageLimits,
}

/// The quota for the container's writable layer; None where nothing is bounded.
pub fn decide(
    spec: &Spec,
    profile: &Profile,
    layer: &WritableLayer,
    report: &mut Report,
) -> Result<Option<StorageQuota>, HardenError> {
    let Some(settings) = &profile.storage else {
        return Ok(None);
    };
    let annotations = spec.annotations().clone().unwrap_or_default();
    let asked = |key: &str, parse: fn(&str) -> Result<u64, String>, min: u64| {
        annotations
            .get(key)
            .map(|v| {
                parse(v)
                    .and_then(|n| {
                        if n < min {
                            Err(format!("{n} is below the minimum of {min}"))
                        } else {
                            Ok(n)
                        }
                    })
                    .map_err(|p| HardenError::InvalidSpec(format!("annotation {key}: {p}")))
            })
            .transpose()
    };
    let bytes = asked(ANNOTATION_BYTES, parse_bytes, MIN_BYTES)?;
    let inodes = asked(ANNOTATION_INODES, parse_count, MIN_INODES)?;
    let ceilings = settings.ceilings;
    for (value, ceiling, key, ceiling_key) in [
        (
            bytes,
            ceilings.bytes,
            ANNOTATION_BYTES,
            "storage.ceilings.ephemeral",
        ),
        (
            inodes,
            ceilings.inodes,
            ANNOTATION_INODES,
            "storage.ceilings.inodes",
        ),
    ] {
        if let Some(v) = value.filter(|v| *v > ceiling) {
            return Err(Refusal {
                rule: Rule::EphemeralStorageCeiling,
                reason: format!(
                    "annotation {key} asks for {v}, above the profile's {ceiling_key} ({ceiling})"
                ),
            }
            .into());
        }
    }
    let limits = StorageLimits {
        bytes: bytes.unwrap_or(settings.defaults.bytes),
        inodes: inodes.unwrap_or(settings.defaults.inodes),
    };
    match layer {
        WritableLayer::None => {
            report.note("ephemeral storage: no writable layer, nothing to bound");
            Ok(None)
        }
        WritableLayer::Quota { dirs, filesystem } => {
            report.change(
                "storage",
                format!(
                    "writable layer bounded to {} bytes and {} inodes (project quota on {filesystem})",
                    limits.bytes, limits.inodes
                ),
            );
            Ok(Some(StorageQuota {
                dirs: dirs.clone(),
                limits,
            }))
        }
        WritableLayer::NoQuota { why } => match settings.unsupported {
            Unsupported::Refuse => Err(Refusal {
                rule: Rule::EphemeralStorage,
                reason: format!(
                    "its writable layer cannot be bounded to {} bytes: {why} (storage.unsupported \
                     = \"refuse\")",
                    limits.bytes
                ),
            }
            .into()),
            Unsupported::Unbounded => {
                report.finding(
                    Rule::EphemeralStorage,
                    format!(
                        "writable layer unbounded (storage.unsupported = \"unbounded\"): {why}"
                    ),
                );
                Ok(None)
            }
        },
    }
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let n = parse_byte_size(&ByteSize::Text(text.to_string()))?;
    u64::try_from(n).map_err(|_| format!("{text:?} is negative"))
}

fn parse_count(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a count (e.g. 100000)"))
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
