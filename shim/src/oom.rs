//! OOM-kill notifications for a container cgroup (stockade-cgroups' watcher).

use tokio::sync::mpsc;

/// Starts watching the container's cgroup; each report carries `container_id`. Call it
/// inside the tokio runtime; the channel closes when the cgroup is removed.
pub fn watch(container_id: String, cgroups_path: &str) -> anyhow::Result<mpsc::Receiver<String>> {
    Ok(stockade_cgroups::oom::watch(container_id, cgroups_path)?)
}
