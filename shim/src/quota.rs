//! The writable layer's project quota, as the hardener decided it (`Hardened::storage`):
//! the facts for the decision, the quota set before the rootfs is mounted, released with
//! the container (`host::undo_record`).

use std::path::Path;

use containerd_shim_protos::api::CreateTaskRequest;
use stockade_runtime::hardener::storage::{StorageQuota, WritableLayer};
use stockade_runtime::hardener::{Report, Rule};
use stockade_runtime::project_quota;
use stockade_runtime::rootfs::RootfsMount;
use stockade_runtime::state_dir::StateDir;

/// containerd's rootfs mounts of a Create.
pub fn rootfs_mounts(req: &CreateTaskRequest) -> Vec<RootfsMount> {
    req.rootfs
        .iter()
        .map(|m| RootfsMount {
            kind: m.type_.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}

/// Where the container's writable layer is and whether a project quota can bound it.
pub fn writable_layer(req: &CreateTaskRequest) -> WritableLayer {
    project_quota::writable_layer(&rootfs_mounts(req))
}

/// A container that runs without a disk bound says so in the shim's log, too.
pub fn warn_unbounded(id: &str, pod: &str, report: &Report) {
    let rule = Rule::EphemeralStorage.name();
    for f in report.findings.iter().filter(|f| f.rule == rule) {
        tracing::warn!(container = id, pod, decision = "unbounded", reason = %f.reason, "ephemeral storage");
    }
}

/// Set the quota; on success the bundle records it for [`release`].
pub fn apply(
    quota: &StorageQuota,
    state: &StateDir,
    bundle: &Path,
    id: &str,
) -> anyhow::Result<()> {
    let applied = project_quota::apply(quota, &project_quota::table_dir(state), bundle, id)?;
    tracing::info!(
        container = id,
        project = applied.project_id,
        bytes = quota.limits.bytes,
        inodes = quota.limits.inodes,
        "ephemeral storage bounded"
    );
    Ok(())
}

/// Take back the quota the bundle records, if any.
pub fn release(bundle: &Path) -> anyhow::Result<()> {
    if let Some(applied) = project_quota::release(bundle)? {
        tracing::debug!(project = applied.project_id, "project quota released");
    }
    Ok(())
}
