//! The profile's `[volumes]` table (what happens to a container's bind mounts) and the
//! `policy.secret_in_env` verdict.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kubelet::clean_absolute;

/// A volume whose filesystem cannot be idmapped (tmpfs before Linux 6.3, a filesystem
/// without idmapped-mount support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unidmappable {
    /// The container is not created; the error names the volume, its source and its
    /// filesystem.
    #[default]
    Refuse,
    /// Mounted as it is (its files keep their host IDs, which the pod sees as nobody),
    /// with a warning.
    Unmapped,
}

/// A hostPath that is not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UnlistedHostPaths {
    /// Allowed when mounted read-only; a writable one is refused (rule `host-path`).
    #[default]
    ReadOnly,
    /// Refused (rule `host-path`).
    Deny,
}

/// A listed host path: it and everything below it may be mounted (writable only if
/// `writable`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPathRule {
    pub path: PathBuf,
    #[serde(default)]
    pub writable: bool,
}

impl HostPathRule {
    /// `source` is this path or below it (component by component).
    pub fn covers(&self, source: &Path) -> bool {
        source.starts_with(&self.path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeSettings {
    pub unidmappable: Unidmappable,
    pub host_paths: Vec<HostPathRule>,
    pub unlisted_host_paths: UnlistedHostPaths,
}

/// What a container whose environment looks like it holds a secret gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SecretInEnv {
    /// Created; an audit line names the variables (never their values).
    #[default]
    Audit,
    /// Refused (rule `secret-in-env`).
    Deny,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVolumes {
    #[serde(default)]
    unidmappable: Unidmappable,
    #[serde(default)]
    host_paths: Vec<HostPathRule>,
    #[serde(default)]
    unlisted_host_paths: UnlistedHostPaths,
}

impl RawVolumes {
    /// Validated settings; `Err((key, problem))` names the key.
    pub(crate) fn validate(self) -> Result<VolumeSettings, (String, String)> {
        for (i, rule) in self.host_paths.iter().enumerate() {
            let key = format!("volumes.host_paths[{i}].path");
            clean_absolute(&rule.path).map_err(|p| (key.clone(), p))?;
            if rule.path.components().any(|c| c == Component::CurDir) {
                return Err((key, format!("{} must not contain `.`", rule.path.display())));
            }
            if self.host_paths[..i].iter().any(|r| r.path == rule.path) {
                return Err((key, format!("{} is listed twice", rule.path.display())));
            }
        }
        Ok(VolumeSettings {
            unidmappable: self.unidmappable,
            host_paths: self.host_paths,
            unlisted_host_paths: self.unlisted_host_paths,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> Result<VolumeSettings, (String, String)> {
        let raw: RawVolumes = toml::from_str(toml_text).unwrap();
        raw.validate()
    }

    #[test]
    fn defaults_refuse_and_allow_unlisted_read_only() {
        let s = raw("").unwrap();
        assert_eq!(s, VolumeSettings::default());
        assert_eq!(s.unidmappable, Unidmappable::Refuse);
        assert_eq!(s.unlisted_host_paths, UnlistedHostPaths::ReadOnly);
    }

    #[test]
    fn host_path_rules_are_checked() {
        let s = raw(r#"unlisted_host_paths = "deny"
               unidmappable = "unmapped"
               host_paths = [{ path = "/srv/data", writable = true }, { path = "/var/log" }]"#)
        .unwrap();
        assert!(s.host_paths[0].writable && !s.host_paths[1].writable);
        assert!(s.host_paths[0].covers(Path::new("/srv/data/x")));
        assert!(!s.host_paths[0].covers(Path::new("/srv/database")));
        for (text, key) in [
            (
                r#"host_paths = [{ path = "srv" }]"#,
                "volumes.host_paths[0].path",
            ),
            (
                r#"host_paths = [{ path = "/a" }, { path = "/a/../b" }]"#,
                "volumes.host_paths[1].path",
            ),
            (
                r#"host_paths = [{ path = "/a" }, { path = "/a" }]"#,
                "volumes.host_paths[1].path",
            ),
        ] {
            assert_eq!(raw(text).unwrap_err().0, key, "{text}");
        }
    }
}
