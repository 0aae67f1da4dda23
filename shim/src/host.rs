//! What the Task service does to the node outside the launcher: the pod's ID range, the
//! bundle's permissions and bind sources, the container's cgroup. Behind a trait so the
//! Task service's logic is unit-tested without root ([`RealHost`] is the node itself).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use stockade_runtime::hardener::ResolvedSources;
use stockade_runtime::idrange::IdRange;
use stockade_runtime::kubelet::{KubeletRange, KubeletSettings};
use stockade_runtime::oci_spec::runtime::{LinuxResources, Spec};
use stockade_runtime::profile::{IdPoolSettings, Profile};
use stockade_runtime::state_dir::StateDir;
use tokio::sync::mpsc;

use crate::state::{self, Record};
use crate::{binds, cgroups, oom, podrange, stats};

/// How long a cgroup sweep waits for the processes it killed to go.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);

pub trait Host: Send + Sync + 'static {
    /// Allocate a new sandbox's ID range from the node's allocator.
    fn allocate_id_range(&self, sandbox_id: &str, pool: IdPoolSettings) -> anyhow::Result<IdRange>;
    fn release_id_range(
        &self,
        sandbox_id: &str,
        pool: IdPoolSettings,
    ) -> anyhow::Result<Option<IdRange>>;
    /// Check the container's root directory and let the pod's root reach it.
    fn open_bundle(&self, spec: &Spec, bundle: &Path, range: IdRange) -> anyhow::Result<()>;
    /// Before anything is mounted: the pod's root (host ID `range.first`) can reach the bundle.
    fn check_reachable(&self, bundle: &Path, range: IdRange) -> anyhow::Result<()>;
    /// With the rootfs mounted and nothing in it yet: the spec's mount destinations resolved
    /// inside the rootfs (see stockade_runtime::destinations), or the refusal.
    fn resolve_destinations(&self, spec: &mut Spec, bundle: &Path) -> anyhow::Result<()>;
    /// Unmount and remove the container's staged bind mounts (the zygote staged them).
    fn unstage_binds(&self, bundle: &Path);
    /// Bind sources with their symlinks resolved (the hardener judges hostPaths by them).
    fn resolve_sources(&self, sources: &[std::path::PathBuf]) -> ResolvedSources;
    /// kubelet's user-namespace range on this node, as the profile's `[kubelet]` finds it.
    fn kubelet_range(&self, settings: &KubeletSettings) -> anyhow::Result<Option<KubeletRange>>;
    /// Whether the node's controllers are on cgroup v1, where Create makes the container's
    /// cgroup directories ahead ([`Host::make_cgroup_dirs`]).
    fn is_cgroup_v1(&self) -> bool;
    /// Makes a container's cgroup v1 directories ahead of its create (blocking).
    fn make_cgroup_dirs(&self, cgroups_path: &str) -> anyhow::Result<()>;
    /// Kill what is left in the container's cgroup and remove it, then the pod's cgroup
    /// if it is empty (blocking).
    fn sweep_cgroups(&self, id: &str, record: &Record) -> anyhow::Result<()>;
    fn watch_oom(&self, id: &str, cgroups_path: &str) -> anyhow::Result<mpsc::Receiver<String>>;
    fn update_cgroup(&self, cgroups_path: &str, resources: &LinuxResources) -> anyhow::Result<()>;
    fn cgroup_pids(&self, cgroups_path: &str) -> anyhow::Result<Vec<i32>>;
    fn cgroup_stats(&self, cgroups_path: &str) -> anyhow::Result<Any>;
    /// The process no longer runs the shim's own binary: it exec'd its workload, or is gone.
    fn left_shim_binary(&self, pid: i32) -> bool;
    /// The process exists and has not begun to exit.
    fn is_alive(&self, pid: i32) -> bool;
}

/// Undo what Create recorded in `record` (after libcontainer's own delete): sweep the
/// container's cgroup, give back the pod's ID range, remove the record. While processes
/// may still run under the pod's IDs, the range and the record are kept.
pub fn undo_record(
    host: &dyn Host,
    id: &str,
    bundle: &Path,
    record: &Record,
    pool: impl FnOnce() -> anyhow::Result<IdPoolSettings>,
) -> anyhow::Result<()> {
    host.sweep_cgroups(id, record)?;
    if let Err(e) = crate::quota::release(bundle) {
        // The ID range and the record are released all the same; the claim stays taken.
        tracing::warn!(container = id, error = %format!("{e:#}"), "releasing the project quota failed");
    }
    if record.is_sandbox {
        if let Some(range) = host.release_id_range(&record.sandbox_id, pool()?)? {
            tracing::info!(pod = %record.sandbox_id, %range, "ID range released");
        }
    }
    let _ = std::fs::remove_file(bundle.join(state::RECORD_FILE));
    Ok(())
}

/// The ID pool of the profile a record names (for `shim delete`, which has nothing else).
pub fn record_pool(record: &Record) -> anyhow::Result<IdPoolSettings> {
    Profile::load(&record.profile)
        .map(|p| p.userns)
        .with_context(|| {
            format!(
                "loading {} to release the ID range",
                record.profile.display()
            )
        })
}

pub struct RealHost {
    state: StateDir,
}

impl RealHost {
    pub fn new(state: StateDir) -> RealHost {
        RealHost { state }
    }
}

impl Host for RealHost {
    fn allocate_id_range(&self, sandbox_id: &str, pool: IdPoolSettings) -> anyhow::Result<IdRange> {
        podrange::allocate(&self.state, sandbox_id, pool)
    }

    fn release_id_range(
        &self,
        sandbox_id: &str,
        pool: IdPoolSettings,
    ) -> anyhow::Result<Option<IdRange>> {
        podrange::release(&self.state, sandbox_id, pool)
    }

    fn open_bundle(&self, spec: &Spec, bundle: &Path, range: IdRange) -> anyhow::Result<()> {
        check_root_dir(spec, bundle)?;
        open_bundle_to(bundle, range)
    }

    fn check_reachable(&self, bundle: &Path, range: IdRange) -> anyhow::Result<()> {
        stockade_runtime::traversal::check_reachable(bundle, range.first, range.first)
            .map_err(anyhow::Error::msg)
    }

    fn resolve_destinations(&self, spec: &mut Spec, bundle: &Path) -> anyhow::Result<()> {
        crate::destinations::resolve(spec, bundle)
    }

    fn unstage_binds(&self, bundle: &Path) {
        binds::unstage(bundle)
    }

    fn resolve_sources(&self, sources: &[std::path::PathBuf]) -> ResolvedSources {
        stockade_runtime::volumes::resolve(sources)
    }

    fn kubelet_range(&self, settings: &KubeletSettings) -> anyhow::Result<Option<KubeletRange>> {
        stockade_runtime::kubelet::kubelet_range(settings).map_err(anyhow::Error::msg)
    }

    fn is_cgroup_v1(&self) -> bool {
        cgroups::is_v1()
    }

    fn make_cgroup_dirs(&self, cgroups_path: &str) -> anyhow::Result<()> {
        cgroups::make_v1_dirs(cgroups_path)
    }

    fn sweep_cgroups(&self, id: &str, record: &Record) -> anyhow::Result<()> {
        let left = match &record.cgroups_path {
            Some(dir) => cgroups::kill_and_remove(dir, SWEEP_TIMEOUT),
            None => Vec::new(),
        };
        if !left.is_empty() {
            anyhow::bail!(
                "container {id}: cgroup {} not removed ({left:?}); the ID range of pod {} is kept",
                record.cgroups_path.as_deref().unwrap_or_default(),
                record.sandbox_id
            );
        }
        if let Some(dir) = &record.pod_cgroup {
            cgroups::remove_empty(dir);
        }
        Ok(())
    }

    fn watch_oom(&self, id: &str, cgroups_path: &str) -> anyhow::Result<mpsc::Receiver<String>> {
        oom::watch(id.to_string(), cgroups_path)
    }

    fn update_cgroup(&self, cgroups_path: &str, resources: &LinuxResources) -> anyhow::Result<()> {
        cgroups::apply(cgroups_path, resources)
    }

    fn cgroup_pids(&self, cgroups_path: &str) -> anyhow::Result<Vec<i32>> {
        cgroups::pids(cgroups_path)
    }

    fn cgroup_stats(&self, cgroups_path: &str) -> anyhow::Result<Any> {
        stats::collect(cgroups_path)
    }

    fn left_shim_binary(&self, pid: i32) -> bool {
        let Ok(own) = std::fs::metadata("/proc/self/exe") else {
            return true;
        };
        // Exec'd (another binary), or gone (exited, or a zombie): done either way.
        !matches!(std::fs::metadata(format!("/proc/{pid}/exe")),
            Ok(md) if md.dev() == own.dev() && md.ino() == own.ino())
    }

    fn is_alive(&self, pid: i32) -> bool {
        is_alive(pid)
    }
}

/// The process exists and has not begun to exit: it is no zombie, and its namespaces are
/// still there (an exiting process drops them before it becomes a zombie).
pub fn is_alive(pid: i32) -> bool {
    procfs::process::Process::new(pid).is_ok_and(|p| p.is_alive())
        && Path::new(&format!("/proc/{pid}/ns/mnt")).exists()
}

/// The container's root must be a directory by now (containerd's rootfs is mounted): said
/// here, with the path, rather than as libcontainer's "failed to prepare rootfs".
fn check_root_dir(spec: &Spec, bundle: &Path) -> anyhow::Result<()> {
    let Some(root) = spec.root() else {
        return Ok(());
    };
    let path = bundle.join(root.path());
    match std::fs::metadata(&path) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(anyhow!("root.path {}: not a directory", path.display())),
        Err(e) => Err(anyhow!("root.path {}: {e}", path.display())),
    }
}

/// The container's root (a host ID of the pod's range) must traverse the bundle to reach
/// its rootfs: group-owned by the range's root group, mode 0710, as containerd 1.7 does
/// for user-namespaced bundles.
fn open_bundle_to(bundle: &Path, range: IdRange) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(bundle, None, Some(range.first))
        .map_err(|e| anyhow!("chown {}: {e}", bundle.display()))?;
    std::fs::set_permissions(bundle, std::fs::Permissions::from_mode(0o710))
        .map_err(|e| anyhow!("chmod {}: {e}", bundle.display()))
}
