//! The pod's host ID range, from the node's persisted allocator
//! (`stockade_runtime::idrange::IdAllocator`): allocated when the sandbox is created,
//! looked up for app containers, released when the sandbox is deleted. Allocations are
//! owned by this shim process, so a crashed shim's range can be reclaimed once no process
//! runs under it any more.

use std::path::Path;

use anyhow::{anyhow, Context};
use stockade_runtime::idrange::{IdAllocator, IdRange};
use stockade_runtime::pod::PodIdentity;
use stockade_runtime::profile::Profile;

use crate::state::Record;

fn allocator(profile: &Profile) -> anyhow::Result<IdAllocator> {
    IdAllocator::open(crate::state::state_dir().id_ranges(), profile.userns)
        .map_err(|e| anyhow!("ID range allocator: {e}"))
}

/// The pod's range: allocated for a sandbox, looked up for an app container.
pub fn range_for(pod: &PodIdentity, profile: &Profile) -> anyhow::Result<IdRange> {
    let alloc = allocator(profile)?;
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

/// Give back a range taken for a sandbox whose Create failed or was refused.
pub fn release_range(pod: &PodIdentity, profile: &Profile) -> anyhow::Result<()> {
    if pod.is_sandbox {
        allocator(profile)?
            .release(&pod.sandbox_id)
            .map_err(|e| anyhow!("releasing the ID range of pod {}: {e}", pod.sandbox_id))?;
    }
    Ok(())
}

/// Give back the range of a deleted sandbox (also from the `delete` action, which only
/// has the record: the profile it names gives the pool). Returns the range released, if
/// the pod held one.
pub fn release(record: &Record) -> anyhow::Result<Option<IdRange>> {
    if !record.is_sandbox {
        return Ok(None);
    }
    let profile = Profile::load(Path::new(&record.profile)).with_context(|| {
        format!(
            "loading {} to release the ID range",
            record.profile.display()
        )
    })?;
    allocator(&profile)?
        .release(&record.sandbox_id)
        .map_err(|e| anyhow!("releasing the ID range of pod {}: {e}", record.sandbox_id))
}
