//! Project IDs, one per container, from a table in the shim's state directory: one file
//! per ID in use, created with O_EXCL, so the shims of different pods never hand out the
//! same one. An ID whose project still has files charged to it (a deleted container's
//! snapshot not yet removed, or someone else's project) is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::state_dir::StateDir;

/// Far above the small IDs operators give projects by hand (/etc/projid).
pub const FIRST_PROJECT_ID: u32 = 0x5354_0000;
pub const PROJECT_IDS: u32 = 1 << 16;

#[derive(Debug)]
pub(super) enum ClaimError {
    Io(PathBuf, std::io::Error),
    Exhausted,
}

/// The table of project IDs in use.
pub fn table_dir(state: &StateDir) -> PathBuf {
    state.root().join("project-ids")
}

/// Claim a free ID for `owner`; `unused(id)` says whether nothing is charged to it.
pub(super) fn claim(
    table: &Path,
    owner: &str,
    unused: impl Fn(u32) -> std::io::Result<bool>,
) -> Result<(u32, PathBuf), ClaimError> {
    std::fs::create_dir_all(table).map_err(|e| ClaimError::Io(table.to_path_buf(), e))?;
    // Start where the owner's name hashes to: concurrent shims rarely race for one file.
    let start = owner
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % PROJECT_IDS;
    for i in 0..PROJECT_IDS {
        let id = FIRST_PROJECT_ID + (start + i) % PROJECT_IDS;
        let path = table.join(id.to_string());
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ClaimError::Io(path, e)),
        };
        let free = unused(id).map_err(|e| ClaimError::Io(path.clone(), e));
        match free {
            Ok(true) => {
                file.write_all(owner.as_bytes())
                    .map_err(|e| ClaimError::Io(path.clone(), e))?;
                return Ok((id, path));
            }
            Ok(false) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        }
    }
    Err(ClaimError::Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_never_collide_and_skip_used_projects() {
        let dir = tempfile::tempdir().unwrap();
        let (a, pa) = claim(dir.path(), "c1", |_| Ok(true)).unwrap();
        // Same owner name again: the taken ID is skipped.
        let (b, _) = claim(dir.path(), "c1", |_| Ok(true)).unwrap();
        assert_ne!(a, b);
        // A project with files charged to it is not handed out.
        let (c, _) = claim(dir.path(), "c1", |id| Ok(id != b + 1)).unwrap();
        assert!(c != a && c != b && c != b + 1, "{a} {b} {c}");
        assert_eq!(std::fs::read_to_string(&pa).unwrap(), "c1");
        // Freed: claimable again.
        std::fs::remove_file(&pa).unwrap();
        let (d, _) = claim(dir.path(), "c1", |_| Ok(true)).unwrap();
        assert_eq!(d, a);
        for id in [a, b, c] {
            assert!((FIRST_PROJECT_ID..FIRST_PROJECT_ID + PROJECT_IDS).contains(&id));
        }
    }

    #[test]
    fn a_failing_usage_check_leaves_no_claim() {
        let dir = tempfile::tempdir().unwrap();
        let e = claim(dir.path(), "c1", |_| Err(std::io::ErrorKind::Other.into()));
        assert!(matches!(e, Err(ClaimError::Io(..))));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
