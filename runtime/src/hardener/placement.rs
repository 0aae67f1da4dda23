//! Where the container's cgroup goes: the spec's cgroupsPath where it fits the node's
//! cgroup driver, else the profile's parent.

use std::path::PathBuf;

use stockade_cgroups::{CgroupDriver, CgroupsPath};

use super::{HardenContext, Report};
use crate::profile::CgroupSettings;

/// The scope prefix of containers Stockade places in the profile's slice.
const SCOPE_PREFIX: &str = "stockade";

/// The cgroupsPath the container gets. Kept: an absolute path without `..` (any driver;
/// libcgroups manages it as files), a `slice:prefix:name` path under the systemd driver.
/// Replaced, with the reason in the report: none, malformed, the root cgroup, or the
/// systemd form on a cgroupfs node.
pub(crate) fn cgroups_path(
    given: Option<&str>,
    cg: &CgroupSettings,
    ctx: &HardenContext,
    report: &mut Report,
) -> PathBuf {
    let why = match given.map(CgroupsPath::parse) {
        None => "none given".to_string(),
        Some(Err(e)) => e.to_string(),
        Some(Ok(p)) if p.relative().as_os_str().is_empty() => "the root cgroup".to_string(),
        Some(Ok(CgroupsPath::Systemd(s))) if ctx.cgroup_driver == CgroupDriver::Cgroupfs => {
            format!("{s} is systemd's form, and this node's cgroup driver is cgroupfs")
        }
        Some(Ok(p)) => return PathBuf::from(p.to_string()),
    };
    let path = default_path(cg, ctx);
    report.change(
        "cgroups",
        format!("cgroupsPath set to {} ({why})", path.display()),
    );
    path
}

/// `<slice>:stockade:<id>` under systemd with a slice parent, else `<parent>/<sandbox>/<id>`.
fn default_path(cg: &CgroupSettings, ctx: &HardenContext) -> PathBuf {
    if let (CgroupDriver::Systemd, Some(slice)) = (ctx.cgroup_driver, &cg.parent_slice) {
        let scope = format!("{slice}:{SCOPE_PREFIX}:{}", ctx.container_id);
        // A container ID systemd cannot take in a unit name falls back to the directory.
        if CgroupsPath::parse(&scope).is_ok() {
            return PathBuf::from(scope);
        }
    }
    PathBuf::from(format!(
        "{}/{}/{}",
        cg.parent, ctx.sandbox_id, ctx.container_id
    ))
}
