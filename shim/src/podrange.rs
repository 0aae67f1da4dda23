//! The pod's host ID range, from the node's persisted allocator
//! (`stockade_runtime::idrange::IdAllocator`): allocated when the sandbox is created,
//! looked up for app containers, released when the sandbox is deleted. Allocations are
//! owned by this shim process, so a crashed shim's range can be reclaimed once no process
//! runs under it any more.

use anyhow::anyhow;
use stockade_runtime::idrange::{IdAllocator, IdRange};
use stockade_runtime::pod::PodIdentity;
use stockade_runtime::profile::IdPoolSettings;
use stockade_runtime::state_dir::StateDir;

fn allocator(state: &StateDir, pool: IdPoolSettings) -> anyhow::Result<IdAllocator> {
    IdAllocator::open(state.id_ranges(), pool).map_err(|e| anyhow!("ID range allocator: {e}"))
}

/// The pod's range: allocated for a sandbox, looked up for an app container.
pub fn range_for(
    state: &StateDir,
    pod: &PodIdentity,
    pool: IdPoolSettings,
) -> anyhow::Result<IdRange> {
    let alloc = allocator(state, pool)?;
    if pod.is_sandbox {
        alloc
            .allocate(&pod.sandbox_id)
            .map_err(|e| anyhow!("allocating an ID range for pod {}: {e}", pod.sandbox_id))
    } else {
        alloc
            .get(&pod.sandbox_id)
            .map_err(|e| anyhow!("ID range of pod {}: {e}", pod.sandbox_id))?
            .ok_or_else(|| {
                anyhow!(
                    "pod {} has no ID range (sandbox not created?)",
                    pod.sandbox_id
                )
            })
    }
}

/// Give back the range of a sandbox. Returns the range released, if the pod held one.
pub fn release(
    state: &StateDir,
    sandbox_id: &str,
    pool: IdPoolSettings,
) -> anyhow::Result<Option<IdRange>> {
    allocator(state, pool)?
        .release(sandbox_id)
        .map_err(|e| anyhow!("releasing the ID range of pod {sandbox_id}: {e}"))
}
