//! Delete: an exited exec process, or the container with everything Create did for it.

use std::path::Path;
use std::time::Duration;

use containerd_shim_protos::api::{DeleteRequest, DeleteResponse};
use containerd_shim_protos::events::task::TaskDelete;
use containerd_shim_protos::protobuf::MessageField;
use stockade_runtime::node_state;
use stockade_runtime::profile::IdPoolSettings;

use super::exec::remove_process_files;
use super::lifecycle::Phase;
use super::{now, pid_u32, TaskService};
use crate::error::{Result, ShimError};
use crate::host;
use crate::state::{self, Record};

/// How long Delete waits for a Created container's init to die after the forced delete.
const INIT_EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The exit status reported for a process whose exit was never seen (SIGKILL).
const KILLED: u32 = 128 + 9;

impl TaskService {
    pub(super) async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        if !req.exec_id.is_empty() {
            return self.delete_exec(&req.id, &req.exec_id).await;
        }
        let (bundle, record, pool, pid, phase, mut exit_rx) = {
            let table = self.inner.table.lock().await;
            let c = table.get(&req.id)?;
            c.init.life.check_delete()?;
            (
                c.bundle.clone(),
                c.record.clone(),
                c.profile.userns,
                c.init.pid,
                c.init.life.phase(),
                c.init.life.subscribe(),
            )
        };
        self.delete_container(&req.id).await?;
        if phase == Phase::Created {
            // The forced delete killed the waiting init: its exit is what Delete reports.
            let _ =
                tokio::time::timeout(INIT_EXIT_TIMEOUT, exit_rx.wait_for(|e| e.is_some())).await;
        }
        self.teardown(&req.id, &bundle, &record, pool).await;
        let c = self.inner.table.lock().await.remove(&req.id);
        let exit = c.as_ref().and_then(|c| c.init.life.exit());
        if let Some(mut c) = c {
            for p in c.execs.values() {
                if let Some(f) = &p.process_file {
                    remove_process_files(f);
                }
            }
            let _ = c.init.life.mark_deleted();
        }
        let (code, at) = exit.map(|e| (e.code, e.at)).unwrap_or((KILLED, now()));
        tracing::info!(container = %req.id, "deleted");
        self.publish(TaskDelete {
            container_id: req.id.clone(),
            pid: pid_u32(pid),
            exit_status: code,
            exited_at: MessageField::some(at.clone()),
            ..Default::default()
        })
        .await;
        Ok(DeleteResponse {
            pid: pid_u32(pid),
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<DeleteResponse> {
        let mut table = self.inner.table.lock().await;
        let c = table.get_mut(id)?;
        c.proc(exec_id)?.life.check_delete()?;
        let mut p = c
            .execs
            .remove(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id} not found")))?;
        let _ = p.life.mark_deleted();
        if let Some(f) = &p.process_file {
            remove_process_files(f);
        }
        let (code, at) = p.life.exit().map(|e| (e.code, e.at)).unwrap_or((0, now()));
        Ok(DeleteResponse {
            pid: pid_u32(p.pid),
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    /// Undo what Create did, from its record: the rootfs, staged binds, the cgroup, the
    /// pod's ID range (sandbox), the record, the seccomp plan, the node state record.
    /// Failures are logged: Delete itself succeeds, and `shim delete` retries from the
    /// record that is then kept.
    async fn teardown(&self, id: &str, bundle: &Path, record: &Record, pool: IdPoolSettings) {
        if record.rootfs_mounted {
            if let Err(e) = self.unmount_rootfs(bundle).await {
                tracing::warn!(container = id, error = %format!("{e:#}"), "unmounting rootfs failed");
            }
        }
        self.inner.host.unstage_binds(bundle);
        let undone = {
            let host = self.inner.host.clone();
            let (id, bundle, record) = (id.to_string(), bundle.to_path_buf(), record.clone());
            // Blocking: the cgroup sweep may wait for killed processes to go.
            tokio::task::spawn_blocking(move || {
                host::undo_record(host.as_ref(), &id, &bundle, &record, || Ok(pool))
            })
            .await
        };
        match undone {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(container = id, error = %format!("{e:#}"), "cleanup incomplete")
            }
            Err(e) => tracing::warn!(container = id, error = %e, "cleanup task failed"),
        }
        let _ = std::fs::remove_file(bundle.join(state::SECCOMP_FILE));
        let _ = node_state::remove(&self.inner.config.state.containers(), id);
    }
}
