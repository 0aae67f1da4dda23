//! Harness for tests against a private containerd: starting and tearing it down
//! ([`containerd`]), a CRI client ([`cri`]), locally built test images ([`image`]), and
//! checks of what a container really got ([`hardening`], [`cgroups`]), a private Prometheus
//! ([`prometheus`]).

pub mod binaries;
pub mod cgroups;
pub mod config;
pub mod conformance;
pub mod containerd;
pub mod cri;
pub mod deploy;
pub mod exec;
pub mod exporter;
pub mod hardening;
pub mod image;
pub mod kubelet_layout;
pub mod leftovers;
pub mod mount_holders;
pub mod paths;
pub mod probes;
pub mod prometheus;
pub mod record;
pub mod runtimes;
pub mod teardown;

pub use containerd::Containerd;
pub use cri::Cri;
