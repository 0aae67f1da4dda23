//! Where a container's bind mounts are staged: `<bundle>/.stockade-binds/<n>`, one per bind
//! mount of the spec, each an idmapped clone of its source through the pod's user namespace
//! (made by the zygote, see stockade_runtime::volumes). The bundle is traversable by the
//! pod's root (host.rs), so libcontainer, resolving bind sources as that user, reaches them
//! even where the original source lies under directories only host root may enter.
//! Once libcontainer has created the container (its init bound them into its own mount
//! namespace), the staged mounts are removed again (launcher::container): the node's mount
//! table keeps none of them while the container runs.

use std::path::{Path, PathBuf};

pub const STAGING_DIR: &str = ".stockade-binds";

pub fn staging_dir(bundle: &Path) -> PathBuf {
    bundle.join(STAGING_DIR)
}

/// Unmount and remove every staged mount of the bundle (safe to repeat, also after a
/// crash); failures are logged.
pub fn unstage(bundle: &Path) {
    if let Err(e) = stockade_runtime::volumes::unstage(&staging_dir(bundle)) {
        tracing::warn!(bundle = %bundle.display(), error = %e, "unstaging volumes");
    }
}
