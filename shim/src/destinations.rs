//! The spec's mount destinations resolved inside the mounted rootfs before libcontainer
//! sees them (stockade_runtime::destinations decides; this carries it out and says so).

use std::path::Path;

use stockade_runtime::destinations_fs;
use stockade_runtime::oci_spec::runtime::Spec;

/// Resolve `spec`'s destinations in the bundle's rootfs and give the spec the resolved ones.
pub fn resolve(spec: &mut Spec, bundle: &Path) -> anyhow::Result<()> {
    let Some(root) = spec.root().as_ref().map(|r| r.path().clone()) else {
        return Ok(());
    };
    let rootfs = bundle.join(root);
    let rewrites = destinations_fs::resolve_spec(spec, &rootfs)
        .map_err(|e| anyhow::anyhow!("rootfs {}: {e}", rootfs.display()))?;
    for r in rewrites {
        tracing::info!(
            mount = r.index,
            destination = %r.from.display(),
            resolved = %r.to.display(),
            "mount destination resolved through the image's symlinks, inside the rootfs"
        );
    }
    Ok(())
}
