//! The pod's host ID range, from the node's persisted allocator
//! (`stockade_runtime::idrange::IdAllocator`): allocated when the sandbox is created,
//! looked up for app containers, released when the sandbox is deleted. Allocations are
//! owned by this shim process, so a crashed shim's range can be reclaimed once no process
//! runs under it any more.

use anyhow::anyhow;
use stockade_runtime::idrange::{IdAllocator, IdRange};
use stockade_runtime::profile::IdPoolSettings;
use stockade_runtime::state_dir::StateDir;

fn allocator(state: &StateDir, pool: IdPoolSettings) -> anyhow::Result<IdAllocator> {
    IdAllocator::open(state.id_ranges(), pool).map_err(|e| anyhow!("ID range allocator: {e}"))
}

/// Allocate the range of a new sandbox (an app container takes its sandbox's range from
/// the shim's own table, never from here).
pub fn allocate(
    state: &StateDir,
    sandbox_id: &str,
    pool: IdPoolSettings,
) -> anyhow::Result<IdRange> {
    allocator(state, pool)?
        .allocate(sandbox_id)
        .map_err(|e| anyhow!("allocating an ID range for pod {sandbox_id}: {e}"))
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
