//! Profiles already loaded by this shim: every container of a pod names the same profile,
//! and loading one parses its TOML, reads its seccomp JSON and compiles it. A profile is
//! loaded again when its file or its seccomp file changed on disk. The cache is locked for
//! the whole of a load, so a Create that comes while the server's warm-up loads the profile
//! waits for that load instead of doing it again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stockade_runtime::profile::{Profile, ProfileError};

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let md = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
    })
}

/// The files a loaded profile depends on: itself, its seccomp file, and the subuid file
/// its kubelet range may come from.
fn stamps(path: &Path, profile: &Profile) -> [Option<Stamp>; 3] {
    [
        stamp(path),
        stamp(&profile.seccomp.file),
        stamp(&profile.kubelet.subuid_file),
    ]
}

struct Cached {
    profile: Arc<Profile>,
    stamps: [Option<Stamp>; 3],
}

#[derive(Default)]
pub struct ProfileCache {
    loaded: Mutex<HashMap<PathBuf, Cached>>,
}

impl ProfileCache {
    /// The profile at `path`, loaded and passed through `check` once, and again whenever
    /// one of its files changes; a profile that fails `check` is not kept.
    pub fn load(
        &self,
        path: &Path,
        check: impl FnOnce(&Profile) -> Result<(), String>,
    ) -> Result<Arc<Profile>, String> {
        // A poisoned lock only means another load panicked: loading again is still right.
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = loaded.get(path) {
            let now = stamps(path, &cached.profile);
            if now[0].is_some() && now == cached.stamps {
                return Ok(cached.profile.clone());
            }
        }
        let profile = Arc::new(Profile::load(path).map_err(|e: ProfileError| e.to_string())?);
        check(&profile)?;
        let stamps = stamps(path, &profile);
        loaded.insert(
            path.to_path_buf(),
            Cached {
                profile: profile.clone(),
                stamps,
            },
        );
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_profile(dir: &Path, name: &str) -> PathBuf {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let text = std::fs::read_to_string(shipped.join("default.toml"))
            .unwrap()
            .replace("name = \"default\"", &format!("name = {name:?}"))
            .replace(
                "profile = \"seccomp/default.json\"",
                &format!("profile = {:?}", dir.join("seccomp.json")),
            );
        let path = dir.join("p.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A profile named `name` in `dir`, with a copy of the shipped seccomp file beside it.
    fn profile_with_seccomp(dir: &Path, name: &str) -> PathBuf {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        std::fs::copy(
            shipped.join("seccomp/default.json"),
            dir.join("seccomp.json"),
        )
        .unwrap();
        write_profile(dir, name)
    }

    #[test]
    fn a_profile_is_loaded_once_and_again_when_either_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = profile_with_seccomp(dir.path(), "one");
        let seccomp = dir.path().join("seccomp.json");
        let cache = ProfileCache::default();
        let first = cache.load(&path, |_| Ok(())).unwrap();
        assert!(
            Arc::ptr_eq(&first, &cache.load(&path, |_| Ok(())).unwrap()),
            "cached"
        );

        let path = write_profile(dir.path(), "two-changed");
        let second = cache.load(&path, |_| Ok(())).unwrap();
        assert_eq!(second.name, "two-changed");

        let mut json = std::fs::read_to_string(&seccomp).unwrap();
        json.push('\n');
        std::fs::write(&seccomp, json).unwrap();
        assert!(
            !Arc::ptr_eq(&second, &cache.load(&path, |_| Ok(())).unwrap()),
            "seccomp changed"
        );

        std::fs::remove_file(&path).unwrap();
        assert!(
            cache.load(&path, |_| Ok(())).is_err(),
            "a removed profile is an error"
        );
    }

    #[test]
    fn a_load_that_comes_during_another_waits_for_it_instead_of_loading_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = profile_with_seccomp(dir.path(), "warmed");
        let cache = Arc::new(ProfileCache::default());
        let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (started, in_check) = std::sync::mpsc::channel();
        let warm_up = {
            let (cache, checks, path) = (cache.clone(), checks.clone(), path.clone());
            std::thread::spawn(move || {
                cache.load(&path, |_| {
                    checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    started.send(()).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    Ok(())
                })
            })
        };
        // The warm-up is inside its load now: this one must wait for it.
        in_check.recv().unwrap();
        let second = cache
            .load(&path, |_| {
                checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        let first = warm_up.join().unwrap().unwrap();
        assert_eq!(checks.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            Arc::ptr_eq(&first, &second),
            "the waiting load got the warm-up's"
        );
    }

    #[test]
    fn the_check_runs_on_load_only_and_a_failed_one_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = profile_with_seccomp(dir.path(), "checked");
        let cache = ProfileCache::default();
        let refused = cache.load(&path, |_| Err("overlaps kubelet".into()));
        assert_eq!(refused.err().as_deref(), Some("overlaps kubelet"));
        let mut checks = 0;
        cache
            .load(&path, |_| {
                checks += 1;
                Ok(())
            })
            .unwrap();
        cache
            .load(&path, |_| {
                checks += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(checks, 1, "checked when loaded, not when cached");
    }
}
