//! Stockade's one cgroup layer, shared by the shim (stats, OOM watch, update, pids,
//! cleanup) and `stockade monitor` (OOM kills, CPU throttling, process attribution).
//!
//! - [`Host`]: the node's setup, detected once (libcgroups' v1/hybrid/v2 detection, v1
//!   mount points, whether systemd runs the node) and the cgroup directories of a
//!   cgroupsPath in either form ([`CgroupsPath`]: `/a/b` or systemd's `slice:prefix:name`).
//! - Container cgroups through libcgroups' managers: [`Host::apply`], [`Host::freeze`],
//!   [`Host::pids`], [`Host::remove`], [`Host::enforce_devices`] (eBPF on cgroup v2), and
//!   the by-path sweep [`Host::kill_and_remove`] / [`Host::remove_empty`].
//! - Readings: [`Host::sample`] ([`CgroupSample`]), [`Host::oom_kills`],
//!   [`Host::cpu_throttled_seconds`]; [`proc`] for /proc/PID/cgroup.
//! - [`Host::open_attach_window`]: keeps the kernel's cgroup-migration lock ready (its
//!   grace period started and kept passed, in the background) while a container's move
//!   may come, so the move at Create or Exec does not wait for it.
//! - Features: `metrics` packs a sample as containerd's v1/v2 Metrics; `oom-watch` is the
//!   tokio OOM watcher (memory.events on v2, an eventfd on v1).

mod attach_wait;
mod host;
mod manager;
pub mod parse;
pub mod path;
pub mod proc;
pub mod sample;
mod statmount;
mod sweep;
mod v1_hierarchy;

#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "oom-watch")]
pub mod oom;

use std::path::PathBuf;

pub use attach_wait::AttachWindow;
pub use host::{Hierarchy, Host};
pub use path::{CgroupDriver, CgroupsPath, PathError, SystemdPath};
pub use sample::{
    CgroupMode, CgroupSample, CpuSample, IoSample, MemoryCounter, MemorySample, PidsSample,
};
pub use v1_hierarchy::V1Hierarchy;

/// Everything this crate can fail at; each names the cgroup or file.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("refusing to use the root cgroup (cgroupsPath {0:?})")]
    Root(String),
    #[error("detecting the cgroup setup at {root}: {detail}")]
    Detect { root: PathBuf, detail: String },
    #[error("cgroupsPath {path:?} needs the systemd cgroup driver, but {why}")]
    NoSystemd { path: String, why: String },
    #[error("cgroup {0} does not exist")]
    Missing(String),
    #[error("{op} cgroup {path}: {detail}")]
    Manager {
        op: &'static str,
        path: String,
        detail: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {problem}")]
    Parse { path: PathBuf, problem: String },
    #[error("reading the cgroups of process {pid}: {detail}")]
    Proc { pid: i32, detail: String },
    #[error("watching OOM of container {container}: {detail}")]
    Watch { container: String, detail: String },
    #[error("encoding cgroup metrics: {0}")]
    Encode(String),
}
