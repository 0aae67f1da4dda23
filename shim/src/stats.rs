//! Task.Stats: the container's cgroup as containerd's v1/v2 Metrics (stockade-cgroups).

use containerd_shim_protos::protobuf::well_known_types::any::Any;

/// Reads the container's cgroup (`cgroups_path` as in its spec) and packs it.
pub fn collect(cgroups_path: &str) -> anyhow::Result<Any> {
    Ok(stockade_cgroups::metrics::collect(cgroups_path)?)
}
