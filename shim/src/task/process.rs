//! The process table: the shim's containers, each with its init and exec processes, and
//! the exits that arrive before their process is known.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::protobuf::MessageField;
use stockade_runtime::hardener::HardenContext;
use stockade_runtime::oci_spec::runtime::Spec;
use stockade_runtime::pod::PodIdentity;
use stockade_runtime::profile::Profile;
use tokio::sync::watch;

use super::lifecycle::{ExitOutcome, ExitStatus, Lifecycle};
use crate::error::{Result, ShimError};
use crate::io::{Console, StdioPaths};
use crate::state::Record;
use stockade_runtime::quote::quoted;

/// Exits of pids nobody claimed (libcontainer's intermediate processes, or a process that
/// exited before its Create/Start answer arrived) are kept this long.
const EARLY_EXIT_TTL: Duration = Duration::from_secs(60);

/// The container's init or one exec process.
pub struct Proc {
    /// 0 until the process exists.
    pub pid: i32,
    pub life: Lifecycle,
    pub stdio: StdioPaths,
    pub console: Option<Console>,
    /// Exec processes: the hardened OCI Process file.
    pub process_file: Option<PathBuf>,
    /// Exec processes, from Exec until their Start: see `cgroups::open_attach_window`.
    pub attach_window: Option<stockade_cgroups::AttachWindow>,
}

impl Proc {
    pub fn new(subject: String, stdio: StdioPaths) -> Proc {
        Proc {
            pid: 0,
            life: Lifecycle::new(subject),
            stdio,
            console: None,
            process_file: None,
            attach_window: None,
        }
    }

    /// Becomes true once a TTY's output has reached its fifo (None: no TTY).
    pub fn drained(&self) -> Option<watch::Receiver<bool>> {
        self.console.as_ref().map(|c| c.drained.clone())
    }
}

/// What Create decided and did, kept for the container's later calls.
pub struct Container {
    pub bundle: PathBuf,
    pub pod: PodIdentity,
    pub image: Option<String>,
    /// When Create arrived, for the start latency in the node state record.
    pub created_at: Instant,
    pub record: Record,
    pub profile: Arc<Profile>,
    pub ctx: HardenContext,
    /// The hardened spec, base for hardening exec processes.
    pub spec: Spec,
    pub cgroups_path: String,
    pub init: Proc,
    pub execs: HashMap<String, Proc>,
}

impl Container {
    pub fn proc(&self, exec_id: &str) -> Result<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id} not found")))
    }

    pub fn proc_mut(&mut self, exec_id: &str) -> Result<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id} not found")))
    }
}

/// A TaskExit to publish, once the process's TTY output (if any) is drained.
pub struct ExitEvent {
    pub event: TaskExit,
    pub drained: Option<watch::Receiver<bool>>,
}

#[derive(Default)]
pub struct ProcessTable {
    containers: HashMap<String, Container>,
    early_exits: HashMap<i32, (i32, Instant)>,
}

impl ProcessTable {
    pub fn contains(&self, id: &str) -> bool {
        self.containers.contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    pub fn get(&self, id: &str) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| ShimError::container_not_found(id))
    }

    pub fn get_mut(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| ShimError::container_not_found(id))
    }

    pub fn insert(&mut self, id: String, c: Container) {
        self.containers.insert(id, c);
    }

    pub fn remove(&mut self, id: &str) -> Option<Container> {
        self.containers.remove(id)
    }

    /// The user namespace an app container of `pod` joins: its sandbox's.
    pub fn pod_userns(&self, pod: &PodIdentity) -> Result<Option<PathBuf>> {
        if pod.is_sandbox {
            return Ok(None);
        }
        let sandbox = self.containers.get(&pod.sandbox_id).ok_or_else(|| {
            ShimError::FailedPrecondition(format!(
                "the sandbox {} of this pod is not managed by this shim",
                quoted(&pod.sandbox_id)
            ))
        })?;
        if !sandbox.init.life.phase().is_alive() || sandbox.init.pid <= 0 {
            return Err(ShimError::FailedPrecondition(format!(
                "the sandbox {} is not running",
                pod.sandbox_id
            )));
        }
        Ok(Some(PathBuf::from(format!(
            "/proc/{}/ns/user",
            sandbox.init.pid
        ))))
    }

    /// The host ID range the pod's sandbox got (for an app container), if this shim runs it.
    pub fn pod_range(&self, pod: &PodIdentity) -> Option<stockade_runtime::idrange::IdRange> {
        (!pod.is_sandbox)
            .then(|| self.containers.get(&pod.sandbox_id))
            .flatten()
            .map(|c| c.ctx.id_range)
    }

    /// Init PIDs of the pod's running containers: the processes whose namespaces a new
    /// container of the pod may join.
    pub fn pod_pids(&self, pod: &PodIdentity) -> Vec<i32> {
        if pod.is_sandbox {
            return Vec::new();
        }
        self.containers
            .values()
            .filter(|c| c.pod.sandbox_id == pod.sandbox_id)
            .filter(|c| c.init.pid > 0 && c.init.life.phase().is_alive())
            .map(|c| c.init.pid)
            .collect()
    }

    /// Record that `pid` exited. Returns the event to publish now; None when the exit is
    /// held (Start under way), a repeat, or of a pid not known yet (kept for
    /// [`ProcessTable::take_early_exit`]).
    pub fn record_exit(&mut self, pid: i32, code: i32, status: ExitStatus) -> Option<ExitEvent> {
        for (cid, c) in self.containers.iter_mut() {
            let procs = std::iter::once(("", &mut c.init))
                .chain(c.execs.iter_mut().map(|(k, v)| (k.as_str(), v)));
            for (eid, p) in procs {
                if p.pid != pid || !p.life.phase().is_alive() {
                    continue;
                }
                tracing::info!(container = %cid, exec = %eid, pid, code = status.code, "process exited");
                let event = exit_event(cid, eid, pid, &status);
                return match p.life.exited(status) {
                    ExitOutcome::Publish => Some(ExitEvent {
                        event,
                        drained: p.drained(),
                    }),
                    ExitOutcome::Held | ExitOutcome::Ignored => None,
                };
            }
        }
        self.early_exits
            .retain(|_, (_, at)| at.elapsed() < EARLY_EXIT_TTL);
        self.early_exits.insert(pid, (code, Instant::now()));
        None
    }

    /// An exit of `pid` that arrived before the pid was recorded.
    pub fn take_early_exit(&mut self, pid: i32) -> Option<i32> {
        self.early_exits.remove(&pid).map(|(code, _)| code)
    }

    /// End a Start: the process's phase moves on, and an exit held meanwhile comes back
    /// as the event to publish after Start's own.
    pub fn finish_start(&mut self, id: &str, exec_id: &str, started: bool) -> Option<ExitEvent> {
        let p = self.containers.get_mut(id)?.proc_mut(exec_id).ok()?;
        let status = p.life.finish_start(started)?;
        Some(ExitEvent {
            event: exit_event(id, exec_id, p.pid, &status),
            drained: p.drained(),
        })
    }
}

fn exit_event(container_id: &str, exec_id: &str, pid: i32, status: &ExitStatus) -> TaskExit {
    TaskExit {
        container_id: container_id.to_string(),
        id: if exec_id.is_empty() {
            container_id.to_string()
        } else {
            exec_id.to_string()
        },
        pid: u32::try_from(pid).unwrap_or(0),
        exit_status: status.code,
        exited_at: MessageField::some(status.at.clone()),
        ..Default::default()
    }
}
