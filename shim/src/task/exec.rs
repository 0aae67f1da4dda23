//! Exec: an extra process in a running container, hardened like the container's own
//! (same profile, same pod context); it runs when Start names its exec id.

use containerd_shim_protos::api::{Empty, ExecProcessRequest};
use containerd_shim_protos::events::task::TaskExecAdded;
use stockade_runtime::audit::AuditEvent;
use stockade_runtime::hardener;
use stockade_runtime::oci_spec::runtime::Process as OciProcess;

use super::process::Proc;
use super::TaskService;
use crate::audit;
use crate::error::{Result, ShimError};
use crate::io::StdioPaths;

impl TaskService {
    pub(super) async fn exec(&self, req: ExecProcessRequest) -> Result<Empty> {
        // libcontainer moves the exec's intermediate process into the container's cgroup
        // once Start comes: the window opens now and stays open until that Start.
        let attach_window = crate::cgroups::open_attach_window();
        let spec_any = req
            .spec
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("exec without a process spec".into()))?;
        let process: OciProcess = serde_json::from_slice(&spec_any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("invalid exec process: {e}")))?;
        let mut table = self.inner.table.lock().await;
        let c = table.get_mut(&req.id)?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "exec {} exists",
                req.exec_id
            )));
        }
        if !c.init.life.phase().is_alive() {
            return Err(ShimError::not_running(&req.id));
        }
        let mut spec = c.spec.clone();
        spec.set_process(Some(process));
        let outcome = hardener::harden(spec, &c.profile, &c.ctx);
        audit::record(
            &c.profile,
            AuditEvent::from_outcome(
                &format!("{}/exec/{}", req.id, req.exec_id),
                &c.pod,
                &c.profile.name,
                outcome.as_ref().map(|h| &h.report),
            )
            .with_image(c.image.as_deref()),
        );
        let hardened = outcome.map_err(|e| ShimError::from_harden(e, None))?;
        let process = hardened
            .spec
            .process()
            .clone()
            .ok_or_else(|| anyhow::anyhow!("hardened exec has no process"))?;
        let file = c.bundle.join(format!("exec-{}.json", req.exec_id));
        std::fs::write(
            &file,
            serde_json::to_vec(&process).map_err(anyhow::Error::from)?,
        )
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
        let mut p = Proc::new(
            format!("exec {} of container {}", req.exec_id, req.id),
            StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
        );
        p.process_file = Some(file);
        p.attach_window = Some(attach_window);
        c.execs.insert(req.exec_id.clone(), p);
        drop(table);
        self.publish(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
        .await;
        Ok(Empty::new())
    }
}

/// An exec's process file and the copy handed to libcontainer (launcher::container).
pub(super) fn remove_process_files(file: &std::path::Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(file.with_extension("libcontainer.json"));
}
