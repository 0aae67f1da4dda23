//! Start: the container's init (libcontainer lets the waiting init exec), or an exec
//! process (made now). Start returns once the process runs its workload, hardened.

use std::time::Duration;

use containerd_shim_protos::api::{StartRequest, StartResponse};
use containerd_shim_protos::events::task::{TaskExecStarted, TaskStart};
use stockade_runtime::node_state::{self, ContainerRecord};
use tracing::Instrument;

use super::{pid_u32, TaskService};
use crate::error::{Result, ShimError};
use crate::launcher::Request;
use crate::poll::poll_until;
use crate::state;

/// How long Start waits for the process to exec its workload.
const EXEC_TIMEOUT: Duration = Duration::from_secs(2);

impl TaskService {
    pub(super) async fn start(&self, req: StartRequest) -> Result<StartResponse> {
        let pid = if req.exec_id.is_empty() {
            let span = tracing::debug_span!("start", container = %req.id);
            self.start_init(&req.id).instrument(span).await?
        } else {
            let span = tracing::debug_span!("exec", container = %req.id, exec = %req.exec_id);
            self.start_exec(&req.id, &req.exec_id)
                .instrument(span)
                .await?
        };
        Ok(StartResponse {
            pid: pid_u32(pid),
            ..Default::default()
        })
    }

    async fn start_init(&self, id: &str) -> Result<i32> {
        let (pid, mut record, created_at) = {
            let mut table = self.inner.table.lock().await;
            let c = table.get_mut(id)?;
            c.init.life.begin_start()?;
            let record = ContainerRecord::new(
                id,
                &c.pod,
                &c.profile.name,
                &c.cgroups_path,
                c.init.pid,
                c.record.id_range,
            );
            (c.init.pid, record, c.created_at)
        };
        let records = self.inner.config.state.containers();
        // Written before the workload runs, so the exporter can attribute even its first
        // denied syscalls; rewritten below with the start latency.
        if let Err(e) = node_state::write(&records, &record) {
            tracing::warn!(container = %id, error = %e, "node state record not written");
        }
        let request = Request::Start {
            id: id.to_string(),
            root: self.inner.root.clone(),
        };
        let started = self
            .inner
            .launcher
            .call(request, Vec::new())
            .instrument(tracing::debug_span!("start.libcontainer"))
            .await;
        if started.is_ok() {
            self.await_exec(pid)
                .instrument(tracing::debug_span!("start.exec"))
                .await;
        }
        let held = self
            .inner
            .table
            .lock()
            .await
            .finish_start(id, "", started.is_ok());
        if let Err(e) = started {
            let _ = node_state::remove(&records, id);
            self.publish_held_exit(held).await;
            return Err(self.launch_error(id, pid, e));
        }
        record.start_latency_ms = Some(created_at.elapsed().as_secs_f64() * 1000.0);
        if let Err(e) = node_state::write(&records, &record) {
            tracing::warn!(container = %id, error = %e, "node state record not written");
        }
        self.publish(TaskStart {
            container_id: id.to_string(),
            pid: pid_u32(pid),
            ..Default::default()
        })
        .await;
        self.publish_held_exit(held).await;
        Ok(pid)
    }

    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<i32> {
        // Held until the launcher has moved the exec into the container's cgroup.
        let (attach_window, stdio, process_file, plan, init_pid) = {
            let mut table = self.inner.table.lock().await;
            let c = table.get_mut(id)?;
            if !c.init.life.phase().is_alive() {
                return Err(ShimError::not_running(id));
            }
            let (bundle, init_pid) = (c.bundle.clone(), c.init.pid);
            let p = c.proc_mut(exec_id)?;
            p.life.begin_start()?;
            (
                p.attach_window.take(),
                p.stdio.clone(),
                p.process_file.clone().unwrap_or_default(),
                bundle.join(state::SECCOMP_FILE),
                init_pid,
            )
        };
        let root = self.inner.root.clone();
        let spawned = self
            .spawn_process(&stdio, |console_socket, mask| Request::Exec {
                id: id.to_string(),
                root,
                process: process_file,
                console_socket,
                seccomp: plan,
                stdio: mask,
            })
            .await;
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                let held = self
                    .inner
                    .table
                    .lock()
                    .await
                    .finish_start(id, exec_id, false);
                self.publish_held_exit(held).await;
                return Err(self.launch_error(id, init_pid, e.error));
            }
        };
        drop(attach_window);
        let pid = spawned.pid;
        {
            let mut table = self.inner.table.lock().await;
            if let Ok(p) = table.get_mut(id).and_then(|c| c.proc_mut(exec_id)) {
                p.pid = pid;
                p.console = spawned.console;
            }
        }
        self.await_exec(pid).await;
        self.apply_early_exit(pid).await;
        let held = self
            .inner
            .table
            .lock()
            .await
            .finish_start(id, exec_id, true);
        self.publish(TaskExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid: pid_u32(pid),
            ..Default::default()
        })
        .await;
        self.publish_held_exit(held).await;
        Ok(pid)
    }

    /// libcontainer only signals the init, which then installs the seccomp filters and
    /// execs: wait (briefly) until `pid` no longer runs the shim's own binary, so Start
    /// returns with the workload running and hardened.
    async fn await_exec(&self, pid: i32) {
        let host = std::sync::Arc::clone(&self.inner.host);
        // Often done already: then no thread is needed.
        if host.left_shim_binary(pid) {
            return;
        }
        // On a blocking thread: the runtime's timers tick in whole milliseconds, and
        // sleeping 2 ms between checks made every Start wait about 3 ms for an exec that
        // follows within a fraction of one.
        let exec = tokio::task::spawn_blocking(move || {
            poll_until(EXEC_TIMEOUT, || host.left_shim_binary(pid))
        });
        if !matches!(exec.await, Ok(true)) {
            tracing::warn!(pid, "the process did not exec within 2s of Start");
        }
    }

    /// A launcher failure for a container whose init may have exited meanwhile: then the
    /// container is not running (what containerd expects), not an internal error.
    pub(super) fn launch_error(&self, id: &str, init_pid: i32, e: anyhow::Error) -> ShimError {
        if init_pid > 0 && !self.inner.host.is_alive(init_pid) {
            tracing::debug!(container = %id, error = %format!("{e:#}"), "the container exited meanwhile");
            return ShimError::not_running(id);
        }
        ShimError::Internal(e)
    }
}
