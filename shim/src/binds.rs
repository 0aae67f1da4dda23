//! Bind-mount sources the container's root cannot reach.
//!
//! In a user namespace, container root is an unprivileged host ID, and libcontainer
//! resolves bind-mount sources as that user. CRI's per-pod files (`/dev/shm`,
//! `/etc/hosts`, `/etc/resolv.conf`, …) and kubelet's volumes live under directories
//! only host root may enter, so libcontainer fails with EACCES. The shim bind-mounts each
//! such source to `<bundle>/.stockade-binds/<n>` (the bundle is traversable by the pod's
//! root, see service.rs) and points the spec at that staged path. The object itself keeps
//! its own ownership and mode.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use stockade_runtime::oci_spec::runtime::{Mount, Spec};

pub const STAGING_DIR: &str = ".stockade-binds";

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Some directory above `path` denies "others" the search permission.
fn unreachable_for_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .filter_map(|dir| std::fs::metadata(dir).ok())
        .any(|md| md.mode() & 0o001 == 0)
}

/// Stage every unreachable bind source and rewrite the spec; on error, undo.
pub fn stage(spec: &mut Spec, bundle: &Path) -> anyhow::Result<()> {
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(());
    };
    let dir = bundle.join(STAGING_DIR);
    let result = (|| -> anyhow::Result<()> {
        for (i, m) in mounts.iter_mut().enumerate() {
            if !is_bind(m) {
                continue;
            }
            let Some(source) = m.source().clone() else {
                continue;
            };
            if !source.is_absolute() || !unreachable_for_others(&source) {
                continue;
            }
            let md = std::fs::metadata(&source)
                .with_context(|| format!("bind mount source {}", source.display()))?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let staged = dir.join(i.to_string());
            if md.is_dir() {
                std::fs::create_dir(&staged)
            } else {
                std::fs::File::create(&staged).map(|_| ())
            }
            .with_context(|| format!("creating {}", staged.display()))?;
            mount(
                Some(&source),
                &staged,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| anyhow!("staging bind source {}: {e}", source.display()))?;
            tracing::debug!(source = %source.display(), staged = %staged.display(), "bind source staged");
            m.set_source(Some(staged));
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            spec.set_mounts(Some(mounts));
            Ok(())
        }
        Err(e) => {
            unstage(bundle);
            Err(e)
        }
    }
}

/// Unmount and remove every staged source of the bundle (safe to repeat).
pub fn unstage(bundle: &Path) {
    let dir = bundle.join(STAGING_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let staged: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    for p in staged {
        while umount2(&p, MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir(&p).or_else(|_| std::fs::remove_file(&p));
    }
    let _ = std::fs::remove_dir(&dir);
}
