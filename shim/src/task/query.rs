//! The calls that read: state, wait, pids, stats, connect; and the small ones that act on
//! a process's stdio (resize, close) or on the shim (shutdown).

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, Empty, PidsRequest, PidsResponse, ProcessInfo,
    ResizePtyRequest, ShutdownRequest, StateRequest, StateResponse, StatsRequest, StatsResponse,
    Status, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::MessageField;

use super::lifecycle::Phase;
use super::{now, pid_u32, TaskService, DRAIN_TIMEOUT};
use crate::error::{Result, ShimError};

fn status(phase: Phase) -> Status {
    match phase {
        // containerd knows no "starting": until Start returns, the process is created.
        Phase::Created | Phase::Starting => Status::CREATED,
        Phase::Running => Status::RUNNING,
        Phase::Paused => Status::PAUSED,
        Phase::Stopped | Phase::Deleted => Status::STOPPED,
    }
}

impl TaskService {
    pub(super) async fn state(&self, req: StateRequest) -> Result<StateResponse> {
        let table = self.inner.table.lock().await;
        let c = table.get(&req.id)?;
        let p = c.proc(&req.exec_id)?;
        let exit = p.life.exit();
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: pid_u32(p.pid),
            status: status(p.life.phase()).into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.as_ref().map(|e| e.code).unwrap_or(0),
            exited_at: exit.map(|e| e.at).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub(super) async fn wait(&self, req: WaitRequest) -> Result<WaitResponse> {
        let mut rx = {
            let table = self.inner.table.lock().await;
            table.get(&req.id)?.proc(&req.exec_id)?.life.subscribe()
        };
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| ShimError::NotFound("process was deleted".into()))?
            .clone();
        // As for TaskExit: `ctr tasks exec` (2.2) deletes the process as soon as Wait
        // returns, and containerd's client then closes its fifo reader, dropping a TTY's
        // output that had not reached the fifo yet. The console is looked up only now:
        // ctr calls Wait before Start, when there is none yet. An exit is recorded only
        // once Start has stored the pid, and with it the console.
        let drained = {
            let table = self.inner.table.lock().await;
            table
                .get(&req.id)
                .and_then(|c| c.proc(&req.exec_id))
                .ok()
                .and_then(|p| p.drained())
        };
        if let Some(mut drained) = drained {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained.wait_for(|d| *d)).await;
        }
        let (code, at) = exit.map(|e| (e.code, e.at)).unwrap_or((0, now()));
        Ok(WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn cgroups_path(&self, id: &str) -> Result<String> {
        Ok(self.inner.table.lock().await.get(id)?.cgroups_path.clone())
    }

    pub(super) async fn pids(&self, req: PidsRequest) -> Result<PidsResponse> {
        let path = self.cgroups_path(&req.id).await?;
        let host = self.inner.host.clone();
        let pids = tokio::task::spawn_blocking(move || host.cgroup_pids(&path))
            .await
            .map_err(|e| ShimError::Internal(e.into()))??;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid_u32(pid),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    pub(super) async fn stats(&self, req: StatsRequest) -> Result<StatsResponse> {
        let path = self.cgroups_path(&req.id).await?;
        let host = self.inner.host.clone();
        let stats = tokio::task::spawn_blocking(move || host.cgroup_stats(&path))
            .await
            .map_err(|e| ShimError::Internal(e.into()))??;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    pub(super) async fn connect(&self, req: ConnectRequest) -> Result<ConnectResponse> {
        let table = self.inner.table.lock().await;
        let task_pid = table.get(&req.id).map(|c| c.init.pid).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: pid_u32(task_pid),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    pub(super) async fn resize_pty(&self, req: ResizePtyRequest) -> Result<Empty> {
        let table = self.inner.table.lock().await;
        let p = table.get(&req.id)?.proc(&req.exec_id)?;
        let console = p
            .console
            .as_ref()
            .ok_or_else(|| ShimError::FailedPrecondition("the process has no terminal".into()))?;
        console.resize(req.width, req.height)?;
        Ok(Empty::new())
    }

    /// The shim holds no writer of a process's stdin (see io.rs): containerd closing its
    /// end is what the process sees; nothing to do but check the process exists.
    pub(super) async fn close_io(&self, req: CloseIORequest) -> Result<Empty> {
        let table = self.inner.table.lock().await;
        table.get(&req.id)?.proc(&req.exec_id)?;
        Ok(Empty::new())
    }

    pub(super) async fn shutdown(&self, _req: ShutdownRequest) -> Result<Empty> {
        if self.inner.table.lock().await.is_empty() {
            tracing::info!("no containers left: shutting down");
            self.inner.shutdown.notify_one();
        }
        Ok(Empty::new())
    }
}
