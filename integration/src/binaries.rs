//! Which containerd the tests run against: Debian's (from PATH, 1.6) by default, or the
//! directory named by `STOCKADE_CONTAINERD` (containerd, ctr and containerd-shim-runc-v2,
//! e.g. the shared 2.x build in `<shared>/containerd-2/bin`).

use crate::paths;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable naming the directory of the containerd binaries to test with.
pub const ENV_CONTAINERD: &str = "STOCKADE_CONTAINERD";

/// containerd's config file format: version 2 (containerd 1.x) or 3 (2.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersion {
    V2,
    V3,
}

/// The containerd binaries of this test run and their version.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// None: Debian's, from PATH.
    pub dir: Option<PathBuf>,
    /// `containerd --version`'s version, e.g. (1, 6, 20).
    pub version: (u32, u32, u32),
}

impl Binaries {
    /// The containerd of this run, checked once per process.
    pub fn get() -> Result<&'static Binaries> {
        static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
        BINARIES
            .get_or_init(|| {
                let found = Binaries::from_env().map_err(|e| format!("{e:#}"));
                if let Ok(b) = &found {
                    eprintln!(
                        "[harness] containerd {} ({}), config version {:?}",
                        b.version_string(),
                        b.dir
                            .as_ref()
                            .map_or("from PATH".to_string(), |d| d.display().to_string()),
                        b.config_version()
                    );
                }
                found
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn from_env() -> Result<Binaries> {
        let dir = std::env::var_os(ENV_CONTAINERD)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        match &dir {
            Some(d) => {
                for bin in ["containerd", "ctr", "containerd-shim-runc-v2"] {
                    if !d.join(bin).is_file() {
                        bail!(
                            "{ENV_CONTAINERD}={}: no {bin} there (the directory must hold \
                             containerd, ctr and containerd-shim-runc-v2)",
                            d.display()
                        );
                    }
                }
            }
            None => {
                for tool in ["containerd", "ctr", "containerd-shim-runc-v2"] {
                    paths::require_tool(tool)?;
                }
            }
        }
        let containerd = dir
            .as_ref()
            .map_or_else(|| PathBuf::from("containerd"), |d| d.join("containerd"));
        let out = Command::new(&containerd)
            .arg("--version")
            .output()
            .with_context(|| format!("running {} --version", containerd.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).with_context(|| {
            format!(
                "no version in `{} --version`: {text:?}",
                containerd.display()
            )
        })?;
        Ok(Binaries { dir, version })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(|| PathBuf::from(name), |d| d.join(name))
    }

    pub fn containerd(&self) -> PathBuf {
        self.bin("containerd")
    }

    pub fn ctr(&self) -> PathBuf {
        self.bin("ctr")
    }

    /// Directories to put on containerd's PATH (after the Stockade shim's), so it finds
    /// the matching containerd-shim-runc-v2.
    pub fn path_dirs(&self) -> Vec<PathBuf> {
        self.dir.iter().cloned().collect()
    }

    pub fn major(&self) -> u32 {
        self.version.0
    }

    /// The config format this containerd is written for.
    pub fn config_version(&self) -> ConfigVersion {
        if self.major() >= 2 {
            ConfigVersion::V3
        } else {
            ConfigVersion::V2
        }
    }

    /// "1.6.20", for messages.
    pub fn version_string(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }
}

/// The first `X.Y.Z` (optionally `vX.Y.Z`, with any suffix such as `~ds1`) in
/// `containerd --version` output.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split_whitespace().find_map(|word| {
        let word = word.strip_prefix('v').unwrap_or(word);
        let mut parts = word.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch: String = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some((major, minor, patch.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_of_debian_and_upstream_builds() {
        assert_eq!(
            parse_version(
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
            ),
            Some((1, 6, 20))
        );
        assert_eq!(
            parse_version("containerd github.com/containerd/containerd/v2 v2.2.7 7835c8dfefce"),
            Some((2, 2, 7))
        );
        assert_eq!(parse_version("containerd (devel)"), None);
    }
}
