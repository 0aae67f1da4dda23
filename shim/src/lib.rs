//! `containerd-shim-stockade-v1`: the containerd shim v2 of Stockade, as a library (the
//! binary in main.rs only picks the action).
//!
//! Actions: `start` ([`bootstrap`]: find or launch the pod's shim server), `delete`
//! ([`delete_action`]: clean up after a dead shim) and, without an action, the server
//! ([`server`]), which forks its zygote ([`launcher::zygote`]) before any thread exists and
//! then serves the [`task`] service.

pub mod audit;
pub mod binds;
pub mod bootstrap;
pub mod cgroups;
mod dead_server;
pub mod delete_action;
pub mod destinations;
pub mod error;
pub mod features;
pub mod host;
pub mod io;
pub mod launcher;
pub mod logging;
pub mod memory;
pub mod oom;
pub mod podrange;
mod poll;
pub mod quota;
pub mod server;
pub mod state;
pub mod stats;
pub mod task;

pub const RUNTIME_ID: &str = "io.containerd.stockade.v1";
