//! The shim v2 Task service, one file per concern:
//! - `service.rs`: the ttrpc `Task` impl, which only forwards here;
//! - `create.rs` (with `undo.rs`), `start.rs`, `exec.rs`, `delete.rs`: the lifecycle calls;
//! - `control.rs`: kill, pause/resume, update; `query.rs`: state, wait, pids, stats;
//! - `process.rs`: the process table; `lifecycle.rs`: one process's state machine;
//! - `events.rs`: events to containerd; `spawn.rs`: stdio and the launcher call.
//!
//! Decisions are the hardener's: Create loads the profile, hardens the bundle's spec and
//! writes it back; this service only does what the hardened spec says (through the
//! [`Launcher`] and the [`Host`]) and undoes all of it when anything fails.

mod control;
mod create;
mod delete;
pub mod events;
mod exec;
pub mod lifecycle;
mod process;
mod profiles;
mod query;
mod service;
mod spawn;
mod start;
mod undo;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::event::Event;
use containerd_shim_protos::protobuf;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use stockade_runtime::state_dir::StateDir;
use tokio::sync::{Mutex, Notify};

use self::events::EventSink;
use self::process::{ExitEvent, ProcessTable};
use crate::host::Host;
use crate::launcher::Launcher;
use crate::state;

/// How long TaskExit and Wait wait for a TTY's output to reach the fifo.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where this shim keeps its state.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// containerd's namespace of the pod.
    pub namespace: String,
    pub state: StateDir,
}

impl ShimConfig {
    /// libcontainer's root for this namespace.
    pub fn libcontainer_root(&self) -> PathBuf {
        state::libcontainer_root(&self.state, &self.namespace)
    }
}

/// The Task service. Cheap to clone: every clone is the same service.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

struct Inner {
    config: ShimConfig,
    root: PathBuf,
    launcher: Arc<dyn Launcher>,
    host: Arc<dyn Host>,
    events: Arc<dyn EventSink>,
    table: Mutex<ProcessTable>,
    profiles: profiles::ProfileCache,
    shutdown: Notify,
    /// The attach window the server opened as it started, until the first Create has
    /// its own open (see [`TaskService::hold_start_window`]).
    start_window: std::sync::Mutex<Option<stockade_cgroups::AttachWindow>>,
}

impl TaskService {
    pub fn new(
        config: ShimConfig,
        launcher: Arc<dyn Launcher>,
        host: Arc<dyn Host>,
        events: Arc<dyn EventSink>,
    ) -> TaskService {
        TaskService {
            inner: Arc::new(Inner {
                root: config.libcontainer_root(),
                config,
                launcher,
                host,
                events,
                table: Mutex::new(ProcessTable::default()),
                profiles: profiles::ProfileCache::default(),
                shutdown: Notify::new(),
                start_window: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Keeps the window a new server opened (server.rs) until the first Create opens its
    /// own. A new pod's first cgroup move waits in the kernel for an RCU grace period
    /// while it holds the cgroup mutex, and the intermediate process's cgroup mkdir waits
    /// behind it (perf's sched_switch stacks: once per pod, 4.4 ms median, up to 10 ms).
    /// Opened as the server starts instead of when Create arrives, more of that wait runs
    /// while containerd connects and Create decides and mounts.
    pub fn hold_start_window(&self, window: stockade_cgroups::AttachWindow) {
        if let Ok(mut slot) = self.inner.start_window.lock() {
            *slot = Some(window);
        }
    }

    /// The server's start window goes once a Create's own is open.
    fn close_start_window(&self) {
        if let Ok(mut slot) = self.inner.start_window.lock() {
            slot.take();
        }
    }

    /// Resolves once containerd's Shutdown found no container left.
    pub async fn shut_down(&self) {
        self.inner.shutdown.notified().await
    }

    /// Called by the reaper for every child that exited.
    pub async fn on_exit(&self, pid: i32, code: i32) {
        if self.inner.launcher.helper_exited(pid) {
            // Idled out, or died: the launcher starts another when needed.
            tracing::debug!(pid, code, "the zygote exited");
            return;
        }
        let event = self
            .inner
            .table
            .lock()
            .await
            .record_exit(pid, code, exited(code));
        if let Some(event) = event {
            self.publish_exit(event).await;
        }
    }

    /// After learning a new pid: an exit that arrived before it was recorded is applied now.
    async fn apply_early_exit(&self, pid: i32) {
        let event = {
            let mut table = self.inner.table.lock().await;
            table
                .take_early_exit(pid)
                .and_then(|code| table.record_exit(pid, code, exited(code)))
        };
        if let Some(event) = event {
            self.publish_exit(event).await;
        }
    }

    async fn publish<E: Event + protobuf::Message>(&self, event: E) {
        match events::Outgoing::new(&event) {
            Ok(out) => self.inner.events.publish(out).await,
            Err(e) => tracing::warn!(error = %e, "event not published"),
        }
    }

    /// TaskExit, once a TTY's output has reached the fifo.
    async fn publish_exit(&self, exit: ExitEvent) {
        if let Some(mut drained) = exit.drained {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained.wait_for(|d| *d)).await;
        }
        self.publish(exit.event).await;
    }

    async fn publish_held_exit(&self, exit: Option<ExitEvent>) {
        if let Some(exit) = exit {
            self.publish_exit(exit).await;
        }
    }
}

/// An exit status as of now (reaped a moment ago).
fn exited(code: i32) -> lifecycle::ExitStatus {
    lifecycle::ExitStatus {
        code: u32::try_from(code).unwrap_or(255),
        at: now(),
    }
}

pub(crate) fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

/// A pid as containerd's messages carry it.
fn pid_u32(pid: i32) -> u32 {
    u32::try_from(pid).unwrap_or(0)
}
