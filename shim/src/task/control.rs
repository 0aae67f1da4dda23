//! Kill, pause and resume, and resource updates (hardened like Create's).

use containerd_shim_protos::api::{Empty, KillRequest, UpdateTaskRequest};
use containerd_shim_protos::events::task::{TaskPaused, TaskResumed};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use stockade_runtime::audit::AuditEvent;
use stockade_runtime::hardener;
use stockade_runtime::oci_spec::runtime::LinuxResources;

use super::TaskService;
use crate::audit;
use crate::error::{Result, ShimError};
use crate::launcher::Request;

impl TaskService {
    pub(super) async fn kill(&self, req: KillRequest) -> Result<Empty> {
        let signal = i32::try_from(req.signal)
            .map_err(|_| ShimError::InvalidArgument(format!("bad signal {}", req.signal)))?;
        let (pid, alive, init_pid) = {
            let table = self.inner.table.lock().await;
            let c = table.get(&req.id)?;
            let p = c.proc(&req.exec_id)?;
            (p.pid, p.life.phase().is_alive(), c.init.pid)
        };
        if !alive && !req.all {
            return Err(ShimError::already_finished());
        }
        if !req.exec_id.is_empty() {
            if pid <= 0 {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {} not started",
                    req.exec_id
                )));
            }
            let signal = Signal::try_from(signal)
                .map_err(|e| ShimError::InvalidArgument(format!("signal {signal}: {e}")))?;
            return match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
                Ok(()) => Ok(Empty::new()),
                Err(nix::errno::Errno::ESRCH) => Err(ShimError::already_finished()),
                Err(e) => Err(ShimError::Internal(anyhow::anyhow!(
                    "signalling pid {pid}: {e}"
                ))),
            };
        }
        let request = Request::Kill {
            id: req.id.clone(),
            root: self.inner.root.clone(),
            signal,
            all: req.all,
        };
        match self.inner.launcher.call(request, Vec::new()).await {
            Ok(_) => Ok(Empty::new()),
            // The init exited between our check and libcontainer's (which then refuses a
            // stopped container): the process is finished, not the shim broken.
            Err(_) if !alive || !self.inner.host.is_alive(init_pid) => {
                Err(ShimError::already_finished())
            }
            Err(e) => Err(ShimError::Internal(e)),
        }
    }

    pub(super) async fn pause_resume(&self, id: &str, pause: bool) -> Result<Empty> {
        {
            // Check first: libcontainer's own refusal would come back as Internal.
            let mut table = self.inner.table.lock().await;
            let life = &mut table.get_mut(id)?.init.life;
            if pause {
                life.pause()?;
            } else {
                life.resume()?;
            }
        }
        let root = self.inner.root.clone();
        let request = if pause {
            Request::Pause {
                id: id.to_string(),
                root,
            }
        } else {
            Request::Resume {
                id: id.to_string(),
                root,
            }
        };
        if let Err(e) = self.inner.launcher.call(request, Vec::new()).await {
            // Back to where it was, unless it exited meanwhile.
            let mut table = self.inner.table.lock().await;
            if let Ok(c) = table.get_mut(id) {
                let _ = if pause {
                    c.init.life.resume()
                } else {
                    c.init.life.pause()
                };
            }
            return Err(ShimError::Internal(e));
        }
        let container_id = id.to_string();
        if pause {
            self.publish(TaskPaused {
                container_id,
                ..Default::default()
            })
            .await;
        } else {
            self.publish(TaskResumed {
                container_id,
                ..Default::default()
            })
            .await;
        }
        Ok(Empty::new())
    }

    pub(super) async fn update(&self, req: UpdateTaskRequest) -> Result<Empty> {
        let (cgroups_path, profile, pod, image, created_devices) = {
            let table = self.inner.table.lock().await;
            let c = table.get(&req.id)?;
            let created_devices = c
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref())
                .and_then(|r| r.devices().clone());
            (
                c.cgroups_path.clone(),
                c.profile.clone(),
                c.pod.clone(),
                c.image.clone(),
                created_devices,
            )
        };
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("update without resources".into()))?;
        let resources: LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("invalid resources: {e}")))?;
        let outcome = hardener::harden_update(resources, created_devices.as_deref(), &profile);
        audit::record(
            &profile,
            AuditEvent::from_outcome(
                &req.id,
                &pod,
                &profile.name,
                outcome.as_ref().map(|(_, r)| r),
            )
            .for_update()
            .with_image(image.as_deref()),
        );
        let (resources, report) = outcome.map_err(|e| ShimError::from_harden(e, None))?;
        for change in &report.changes {
            tracing::info!(container = %req.id, guard = change.guard, what = %change.what, "update hardened");
        }
        let host = self.inner.host.clone();
        tokio::task::spawn_blocking(move || host.update_cgroup(&cgroups_path, &resources))
            .await
            .map_err(|e| ShimError::Internal(e.into()))??;
        Ok(Empty::new())
    }
}
