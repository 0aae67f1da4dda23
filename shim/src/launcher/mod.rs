//! Launching containers: the requests the Task service makes of libcontainer, and the
//! [`Launcher`] that carries them out (the [`zygote`] in the shim, through its
//! [`handle`]; a fake in unit tests).
//!
//! Requests are plain data (they cross a socket to the zygote as JSON); large payloads
//! (spec, process, seccomp plan) travel as files in the bundle.

pub mod container;
pub mod handle;
pub mod lean_ns;
pub mod zygote;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stockade_runtime::hardener::PlannedVolume;
use stockade_runtime::idrange::IdRange;
pub use stockade_runtime::rootfs::RootfsMount;

/// Carries out one request; `fds` are the process's stdio, in [`StdioMask`] order. Returns
/// the new process's pid for Create and Exec.
#[async_trait]
pub trait Launcher: Send + Sync {
    async fn call(&self, req: Request, fds: Vec<OwnedFd>) -> anyhow::Result<Option<i32>>;

    /// `pid`, a child of the shim that exited, was one of the launcher's own helper
    /// processes (its exit is no container's). Asked once per exit.
    fn helper_exited(&self, pid: i32) -> bool;
}

/// Which of stdin, stdout, stderr travel with a request (in that order).
pub type StdioMask = [bool; 3];

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Mount the rootfs at `target`, idmapped to `range` (`staging` holds the layer
    /// clones). `userns`: the pod's user namespace to take the mapping from; None for a
    /// sandbox, whose namespace does not exist yet (a helper namespace is made).
    Mount {
        mounts: Vec<RootfsMount>,
        target: PathBuf,
        staging: PathBuf,
        range: IdRange,
        userns: Option<PathBuf>,
    },
    /// Unmount what Mount set up.
    Unmount {
        target: PathBuf,
        staging: PathBuf,
    },
    /// Stage the container's bind mounts at `<staging>/<index>`, idmapped through the pod's
    /// user namespace (`userns` and `range` as for Mount). Create unstages them once the
    /// container's mount namespace holds its copies; Delete and undo, from the path alone.
    StageVolumes {
        volumes: Vec<PlannedVolume>,
        staging: PathBuf,
        range: IdRange,
        userns: Option<PathBuf>,
    },
    /// Create the container (init waits for Start), returns the init pid.
    Create {
        id: String,
        root: PathBuf,
        bundle: PathBuf,
        console_socket: Option<PathBuf>,
        /// JSON file with the [`container::FilterPlan`].
        seccomp: PathBuf,
        stdio: StdioMask,
        /// Network namespace the container inherits (its spec names none).
        netns: Option<PathBuf>,
        /// `net.*` sysctls to write in `netns` before the container is made.
        sysctls: BTreeMap<String, String>,
    },
    Start {
        id: String,
        root: PathBuf,
    },
    /// Run an extra process in the container, returns its pid.
    Exec {
        id: String,
        root: PathBuf,
        /// OCI `Process` JSON file.
        process: PathBuf,
        console_socket: Option<PathBuf>,
        seccomp: PathBuf,
        stdio: StdioMask,
    },
    Kill {
        id: String,
        root: PathBuf,
        signal: i32,
        all: bool,
    },
    Delete {
        id: String,
        root: PathBuf,
        force: bool,
    },
    Pause {
        id: String,
        root: PathBuf,
    },
    Resume {
        id: String,
        root: PathBuf,
    },
}
