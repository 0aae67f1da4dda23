//! The undo journal of a Create: each step that changed the node pushes what reverses it;
//! a failure runs them in reverse order, so exactly what was done is undone.
//!
//! The bundle's record (stockade.json) is the on-disk twin of this journal, for a shim that
//! dies mid-Create: `shim delete` undoes from it what this journal would have.

use std::path::{Path, PathBuf};

use stockade_runtime::profile::IdPoolSettings;

use super::TaskService;
use crate::launcher::Request;
use crate::state::{self, Record};

/// One thing Create did to the node, as the step that reverses it.
#[derive(Debug, Clone, PartialEq)]
pub enum UndoStep {
    /// The record file in the bundle.
    RemoveRecord,
    /// The sandbox's ID range.
    ReleaseRange {
        sandbox_id: String,
        pool: IdPoolSettings,
    },
    /// The writable layer's project quota (recorded in the bundle).
    ReleaseQuota,
    UnmountRootfs,
    UnstageBinds,
    /// The seccomp plan file next to config.json.
    RemovePlan,
    /// Whatever runs in the container's cgroup, and the cgroup (`record` names it).
    SweepCgroups {
        record: Box<Record>,
    },
    /// libcontainer's container: its state, its init process.
    DeleteContainer,
}

pub struct Undo {
    id: String,
    bundle: PathBuf,
    steps: Vec<UndoStep>,
}

impl Undo {
    pub fn new(id: &str, bundle: &Path) -> Undo {
        Undo {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            steps: Vec::new(),
        }
    }

    pub fn push(&mut self, step: UndoStep) {
        self.steps.push(step);
    }

    /// The create succeeded: nothing is undone.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl TaskService {
    /// Undo `undo`'s steps in reverse order; failures are logged. While processes may still
    /// run in the container's cgroup, the pod's ID range and the record are kept (`shim
    /// delete` retries from the record).
    pub(super) async fn run_undo(&self, mut undo: Undo) {
        let (id, bundle) = (undo.id.clone(), undo.bundle.clone());
        let mut keep_identity = false;
        while let Some(step) = undo.steps.pop() {
            tracing::debug!(container = %id, ?step, "undo");
            let result = match step {
                UndoStep::RemoveRecord if keep_identity => Ok(()),
                UndoStep::RemoveRecord => remove(&bundle.join(state::RECORD_FILE)),
                UndoStep::ReleaseRange { .. } if keep_identity => Ok(()),
                UndoStep::ReleaseRange { sandbox_id, pool } => self
                    .inner
                    .host
                    .release_id_range(&sandbox_id, pool)
                    .map(|_| ()),
                UndoStep::ReleaseQuota => crate::quota::release(&bundle),
                UndoStep::UnmountRootfs => self.unmount_rootfs(&bundle).await,
                UndoStep::UnstageBinds => {
                    self.inner.host.unstage_binds(&bundle);
                    Ok(())
                }
                UndoStep::RemovePlan => remove(&bundle.join(state::SECCOMP_FILE)),
                UndoStep::DeleteContainer => self.delete_container(&id).await,
                UndoStep::SweepCgroups { record } => {
                    let swept = self.sweep_cgroups(&id, *record).await;
                    keep_identity = swept.is_err();
                    swept
                }
            };
            if let Err(e) = result {
                tracing::warn!(container = %id, error = %format!("{e:#}"), "undo incomplete");
            }
        }
    }

    /// libcontainer's forced delete: kills the init, removes its state and cgroup.
    pub(super) async fn delete_container(&self, id: &str) -> anyhow::Result<()> {
        let req = Request::Delete {
            id: id.to_string(),
            root: self.inner.root.clone(),
            force: true,
        };
        self.inner.launcher.call(req, Vec::new()).await.map(|_| ())
    }

    pub(super) async fn unmount_rootfs(&self, bundle: &Path) -> anyhow::Result<()> {
        let req = Request::Unmount {
            target: bundle.join("rootfs"),
            staging: bundle.join(state::ROOTFS_STAGING),
        };
        self.inner.launcher.call(req, Vec::new()).await.map(|_| ())
    }

    /// The host's cgroup sweep, off the async threads: it waits for killed processes.
    pub(super) async fn sweep_cgroups(&self, id: &str, record: Record) -> anyhow::Result<()> {
        let host = self.inner.host.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || host.sweep_cgroups(&id, &record)).await?
    }
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!("removing {}: {e}", path.display())),
    }
}
