//! Stockade's hardening core.
//!
//! The decision ("what does this container get?") lives in [`hardener`] and is pure:
//! `harden(spec, profile, ctx) -> (spec, report) | refusal`. Everything that touches the
//! machine (mounts, namespaces, cgroups, installing filters) lives in other modules and
//! only carries out what the hardener decided.

/// Re-exported so every crate of the workspace uses the same OCI types as libcontainer.
pub use libcontainer::oci_spec;

pub mod audit;
pub mod destinations;
pub mod destinations_fs;
pub mod hardener;
pub mod idrange;
pub mod kernel;
pub mod kubelet;
pub mod launch;
pub mod namespaces;
pub mod node_state;
pub mod pod;
pub mod profile;
pub mod project_quota;
pub mod quote;
pub mod rootfs;
pub mod rootfs_idmap;
pub mod seccomp;
pub mod spec;
pub mod state_dir;
pub mod storage_settings;
pub mod traversal;
pub mod userns;
pub mod volume_settings;
pub mod volumes;
