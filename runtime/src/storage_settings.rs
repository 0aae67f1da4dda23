//! The profile's `[storage]` table: how much a container may write to its writable layer
//! (ephemeral storage: the overlay upper directory, where /tmp and every copy-up land).
//!
//! Enforced with a project quota on the upper directory where its filesystem has project
//! quotas (ext4 with the `project,quota` features mounted with `prjquota`, xfs with
//! `prjquota`), as CRI-O's `overlay.size` and Docker's `--storage-opt size` do; elsewhere
//! `unsupported` decides.

use serde::Deserialize;

use crate::profile::{parse_byte_size, ByteSize};

/// A filesystem without project quotas under the container's writable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unsupported {
    /// The container is not created (rule `ephemeral-storage`); the error names the
    /// filesystem and what it lacks.
    Refuse,
    /// The container runs without a disk bound, loudly: a warning log line and an
    /// `ephemeral-storage` finding in the audit line (`stockade_policy_findings_total`).
    #[default]
    Unbounded,
}

/// Bytes and inodes of the writable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageLimits {
    pub bytes: u64,
    pub inodes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageSettings {
    /// Where the pod asked for nothing (annotations `ANNOTATION_BYTES`, `ANNOTATION_INODES`).
    pub defaults: StorageLimits,
    /// The most a pod may ask for; above it the container is refused
    /// (`ephemeral-storage-ceiling`).
    pub ceilings: StorageLimits,
    pub unsupported: Unsupported,
}

/// The smallest writable layer a container can start with (containerd writes /etc/hosts
/// and friends, the shell its history).
pub const MIN_BYTES: u64 = 1 << 20;
pub const MIN_INODES: u64 = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    defaults: RawStorageLimits,
    ceilings: RawStorageLimits,
    #[serde(default)]
    unsupported: Unsupported,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorageLimits {
    /// Bytes of the writable layer ("10Gi").
    ephemeral: ByteSize,
    /// Files, directories and links in it.
    inodes: i64,
}

impl RawStorage {
    /// Validated settings; `Err((key, problem))` names the key.
    pub(crate) fn validate(self) -> Result<StorageSettings, (String, String)> {
        let defaults = self.defaults.validate("storage.defaults")?;
        let ceilings = self.ceilings.validate("storage.ceilings")?;
        for (over, which) in [
            (defaults.bytes > ceilings.bytes, "ephemeral"),
            (defaults.inodes > ceilings.inodes, "inodes"),
        ] {
            if over {
                return Err((
                    format!("storage.defaults.{which}"),
                    format!("is above storage.ceilings.{which}"),
                ));
            }
        }
        Ok(StorageSettings {
            defaults,
            ceilings,
            unsupported: self.unsupported,
        })
    }
}

impl RawStorageLimits {
    fn validate(self, key: &str) -> Result<StorageLimits, (String, String)> {
        let bytes_key = format!("{key}.ephemeral");
        let bytes = parse_byte_size(&self.ephemeral).map_err(|p| (bytes_key.clone(), p))?;
        let bytes = u64::try_from(bytes)
            .ok()
            .filter(|b| *b >= MIN_BYTES)
            .ok_or_else(|| {
                (
                    bytes_key,
                    format!("{bytes} bytes is below the minimum of 1Mi"),
                )
            })?;
        let inodes = u64::try_from(self.inodes)
            .ok()
            .filter(|i| *i >= MIN_INODES)
            .ok_or_else(|| {
                (
                    format!("{key}.inodes"),
                    format!("{} is below the minimum of {MIN_INODES}", self.inodes),
                )
            })?;
        Ok(StorageLimits { bytes, inodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Result<StorageSettings, (String, String)> {
        let raw: RawStorage = toml::from_str(text).unwrap();
        raw.validate()
    }

    #[test]
    fn limits_parse_with_units() {
        let s = raw(r#"defaults = { ephemeral = "1Gi", inodes = 100000 }
                       ceilings = { ephemeral = 10737418240, inodes = 1000000 }
                       unsupported = "refuse""#)
        .unwrap();
        assert_eq!(s.defaults.bytes, 1 << 30);
        assert_eq!(s.ceilings.bytes, 10 << 30);
        assert_eq!(s.unsupported, Unsupported::Refuse);
        let s = raw(r#"defaults = { ephemeral = "1Gi", inodes = 100 }
                       ceilings = { ephemeral = "1Gi", inodes = 100 }"#)
        .unwrap();
        assert_eq!(s.unsupported, Unsupported::Unbounded);
    }

    #[test]
    fn bad_limits_name_their_key() {
        for (text, key) in [
            (
                r#"defaults = { ephemeral = "2Gi", inodes = 100 }
                   ceilings = { ephemeral = "1Gi", inodes = 100 }"#,
                "storage.defaults.ephemeral",
            ),
            (
                r#"defaults = { ephemeral = "1Gi", inodes = 1000 }
                   ceilings = { ephemeral = "1Gi", inodes = 100 }"#,
                "storage.defaults.inodes",
            ),
            (
                r#"defaults = { ephemeral = "1Zi", inodes = 100 }
                   ceilings = { ephemeral = "1Gi", inodes = 100 }"#,
                "storage.defaults.ephemeral",
            ),
            (
                r#"defaults = { ephemeral = "1Gi", inodes = 100 }
                   ceilings = { ephemeral = "1Gi", inodes = 0 }"#,
                "storage.ceilings.inodes",
            ),
            (
                r#"defaults = { ephemeral = 1024, inodes = 100 }
                   ceilings = { ephemeral = "1Gi", inodes = 100 }"#,
                "storage.defaults.ephemeral",
            ),
        ] {
            assert_eq!(raw(text).unwrap_err().0, key, "{text}");
        }
    }
}
