//! Where Stockade keeps its node state: one directory, `/run/stockade` (tmpfs: gone after
//! a reboot, like the containers), or the absolute path in `STOCKADE_STATE_DIR`. containerd
//! passes its environment to the shims, so the variable is set on containerd's service; the
//! exporter must be given the same directory.

use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/run/stockade";
/// Environment override of [`DEFAULT_ROOT`].
pub const ENV: &str = "STOCKADE_STATE_DIR";

#[derive(Debug, thiserror::Error)]
#[error("{ENV}={value:?}: the state directory must be an absolute path")]
pub struct StateDirError {
    value: String,
}

/// The node's Stockade state directory and what lives in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Result<StateDir, StateDirError> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(StateDirError {
                value: root.display().to_string(),
            });
        }
        Ok(StateDir { root })
    }

    /// From [`ENV`] when set and not empty, else [`DEFAULT_ROOT`].
    pub fn from_env() -> Result<StateDir, StateDirError> {
        match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
            Some(value) => StateDir::new(PathBuf::from(value)),
            None => StateDir::new(DEFAULT_ROOT),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pods' host ID ranges (see [`crate::idrange`]).
    pub fn id_ranges(&self) -> PathBuf {
        self.root.join("idranges.json")
    }

    /// One record per running container, for the exporter (see [`crate::node_state`]).
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// libcontainer's state, one directory per containerd namespace.
    pub fn libcontainer(&self) -> PathBuf {
        self.root.join("libcontainer")
    }

    /// Console sockets of TTY processes being started.
    pub fn console(&self) -> PathBuf {
        self.root.join("console")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_validation() {
        let dirs = StateDir::new("/var/run/x").unwrap();
        assert_eq!(dirs.id_ranges(), Path::new("/var/run/x/idranges.json"));
        assert_eq!(dirs.containers(), Path::new("/var/run/x/containers"));
        assert_eq!(dirs.libcontainer(), Path::new("/var/run/x/libcontainer"));
        let err = StateDir::new("relative/dir").unwrap_err().to_string();
        assert!(
            err.contains("STOCKADE_STATE_DIR") && err.contains("relative/dir"),
            "{err}"
        );
    }
}
