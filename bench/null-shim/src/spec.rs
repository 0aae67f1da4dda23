//! The few fields of an OCI runtime spec the null runtime uses: the process to run and
//! where the rootfs is. Everything else (namespaces, mounts, cgroups, capabilities,
//! seccomp) is ignored on purpose.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Process {
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub terminal: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Root {
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Spec {
    pub process: Option<Process>,
    pub root: Option<Root>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

pub fn load(path: &Path) -> anyhow::Result<Spec> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

impl Spec {
    /// The pod this container belongs to (CRI containers only).
    pub fn sandbox_id(&self) -> Option<String> {
        self.annotations
            .get(SANDBOX_ID)
            .filter(|s| !s.is_empty())
            .cloned()
    }

    /// The rootfs directory: `root.path`, relative to the bundle unless absolute.
    pub fn rootfs(&self, bundle: &Path) -> PathBuf {
        let p = self
            .root
            .as_ref()
            .map(|r| r.path.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("rootfs");
        bundle.join(p)
    }
}

impl Process {
    /// The executable's path inside the rootfs: args[0] if it has a slash, else the
    /// first PATH entry (from the process's env) where `root` has it.
    pub fn executable(&self, root: &Path) -> anyhow::Result<String> {
        let Some(arg0) = self.args.first().filter(|a| !a.is_empty()) else {
            anyhow::bail!("process.args is empty: nothing to run");
        };
        if arg0.contains('/') {
            return Ok(arg0.clone());
        }
        let path = self
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        for dir in path.split(':').filter(|d| d.starts_with('/')) {
            let candidate = format!("{}/{arg0}", dir.trim_end_matches('/'));
            if root
                .join(candidate.trim_start_matches('/'))
                .metadata()
                .is_ok_and(|m| m.is_file())
            {
                return Ok(candidate);
            }
        }
        anyhow::bail!(
            "{arg0:?} not found in PATH {path:?} under {}",
            root.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_needs_and_ignores_the_rest() {
        let s: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"args":["sleep","1"],"env":["PATH=/bin"],
                "cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs","readonly":true},
                "linux":{"namespaces":[{"type":"pid"}]},
                "annotations":{"io.kubernetes.cri.sandbox-id":"abc"}}"#,
        )
        .unwrap();
        assert_eq!(s.sandbox_id().as_deref(), Some("abc"));
        assert_eq!(s.rootfs(Path::new("/b")), PathBuf::from("/b/rootfs"));
        assert_eq!(s.process.unwrap().args, vec!["sleep", "1"]);
    }

    #[test]
    fn executable_is_searched_in_the_rootfs_path() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::write(root.path().join("usr/bin/tool"), b"").unwrap();
        let p = Process {
            args: vec!["tool".into()],
            env: vec!["PATH=/bin:/usr/bin".into()],
            ..Default::default()
        };
        assert_eq!(p.executable(root.path()).unwrap(), "/usr/bin/tool");
        let missing = Process {
            args: vec!["nope".into()],
            ..Default::default()
        };
        let e = missing.executable(root.path()).unwrap_err().to_string();
        assert!(e.contains("\"nope\" not found"), "{e}");
        let empty = Process::default();
        assert!(empty.executable(root.path()).is_err());
    }
}
