//! `hostUsers: false` pods: kubelet chose the pod's user-namespace mapping, containerd 2.x
//! wrote it into the specs (`linux.uidMappings`, `gidMappings`) and chowned the snapshot for
//! it. Stockade then runs the pod in that mapping instead of a range of its own, provided
//! it is one range of at least 65,536 IDs, the same for UIDs and GIDs, that maps no host ID
//! below the profile's floor (`kubelet.min_host_id`) and none of Stockade's own pool
//! (refused otherwise, rule `userns-mapping`).
//!
//! Only CRI containers qualify: a mapping in a `ctr` spec is replaced by the pod's range,
//! as before.

use super::{HardenError, Refusal, Rule};
use crate::idrange::IdRange;
use crate::oci_spec::runtime::{LinuxIdMapping, Spec};
use crate::pod::ANNOTATION_CONTAINER_TYPE;
use crate::profile::Profile;

/// The smallest mapping a pod may get (every image UID/GID must map).
pub const MIN_MAPPING_SIZE: u32 = 65_536;

fn refuse(reason: String) -> HardenError {
    HardenError::Refused(Refusal {
        rule: Rule::UsernsMapping,
        reason,
    })
}

fn describe(m: &[LinuxIdMapping]) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|m| format!("{}:{}:{}", m.container_id(), m.host_id(), m.size()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The spec's mapping is `range`, a range of Stockade's own pool: a spec Stockade hardened
/// already (an exec process's), not kubelet's.
pub(crate) fn is_stockade_range(spec: &Spec, profile: &Profile, range: IdRange) -> bool {
    let pool = IdRange {
        first: profile.userns.first_id,
        size: profile.userns.size,
    };
    let own = |m: &Option<Vec<LinuxIdMapping>>| {
        matches!(m.as_deref(), Some([one])
            if (one.container_id(), one.host_id(), one.size()) == (0, range.first, range.size))
    };
    let fits = u64::from(range.first) >= u64::from(pool.first) && range.end() <= pool.end();
    spec.linux()
        .as_ref()
        .is_some_and(|l| fits && own(l.uid_mappings()) && own(l.gid_mappings()))
}

/// kubelet's mapping of a CRI container's spec as the pod's host ID range; None when the
/// spec carries no mapping (or is not a CRI container's).
pub fn kubelet_mapping(spec: &Spec, profile: &Profile) -> Result<Option<IdRange>, HardenError> {
    let is_cri = spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_CONTAINER_TYPE));
    let Some(linux) = spec.linux().as_ref().filter(|_| is_cri) else {
        return Ok(None);
    };
    let uids = linux.uid_mappings().clone().unwrap_or_default();
    let gids = linux.gid_mappings().clone().unwrap_or_default();
    if uids.is_empty() && gids.is_empty() {
        return Ok(None);
    }
    let one = match (uids.as_slice(), gids.as_slice()) {
        ([u], [g]) if u == g => *u,
        _ => {
            return Err(refuse(format!(
                "kubelet's user-namespace mapping must be one range, the same for UIDs {} and \
                 GIDs {}",
                describe(&uids),
                describe(&gids)
            )))
        }
    };
    let shown = describe(&[one]);
    if one.container_id() != 0 {
        return Err(refuse(format!(
            "the mapping {shown} does not start at container ID 0"
        )));
    }
    let range = IdRange {
        first: one.host_id(),
        size: one.size(),
    };
    if range.size < MIN_MAPPING_SIZE {
        return Err(refuse(format!(
            "the mapping {shown} spans {} IDs; a pod needs at least {MIN_MAPPING_SIZE}",
            range.size
        )));
    }
    let floor = profile.kubelet.min_host_id;
    if range.first < floor {
        return Err(refuse(format!(
            "the mapping {shown} maps host IDs below {floor} (kubelet.min_host_id), which belong \
             to the host's users"
        )));
    }
    if !range.is_valid() {
        return Err(refuse(format!(
            "the mapping {shown} passes the largest host ID"
        )));
    }
    let pool = IdRange {
        first: profile.userns.first_id,
        size: profile.userns.size,
    };
    if range.overlaps(&pool) {
        return Err(refuse(format!(
            "the mapping {shown} overlaps Stockade's own ID pool {pool}: the pod could share \
             host IDs with a Stockade pod"
        )));
    }
    Ok(Some(range))
}
