//! Any text -> `Profile::parse`: the TOML validation must return a profile or an error
//! naming the problem, never panic; a profile it accepts keeps the promises of its docs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::LazyLock;
use stockade_runtime::profile::Profile;

/// A file name in the repository's profiles/ directory (it need not exist: only its
/// directory is used, to resolve the relative `seccomp/default.json` of the seeds), so
/// accepted profiles go through the whole path, the seccomp file included.
static SOURCE: LazyLock<PathBuf> = LazyLock::new(|| {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../profiles/fuzz.toml"
    ))
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = Profile::parse(text, &SOURCE) else {
        return;
    };
    assert!(!p.name.trim().is_empty());
    assert!(p.capabilities.no_new_privs);
    for path in p.paths.masked.iter().chain(&p.paths.readonly) {
        assert!(path.starts_with('/'), "{path:?} accepted as a path");
    }
    let u = p.userns;
    assert!(u.first_id >= 65_536 && u.ids_per_pod >= 65_536);
    assert!(u.size >= u.ids_per_pod && u.size % u.ids_per_pod == 0);
    assert!(u64::from(u.first_id) + u64::from(u.size) <= u64::from(u32::MAX));
    let cg = &p.cgroups;
    // "/" is kept as "" (trailing slashes are trimmed): what matters is the joined path.
    assert!(
        format!("{}/pod/c", cg.parent).starts_with('/'),
        "cgroup parent {:?}",
        cg.parent
    );
    for limits in [&cg.defaults, &cg.ceilings] {
        assert!(limits.cpu_millicores >= 10, "{limits:?}");
        assert!(limits.memory_bytes >= 4 << 20, "{limits:?}");
        assert!(limits.pids >= 1, "{limits:?}");
    }
    assert!(cg.defaults.cpu_millicores <= cg.ceilings.cpu_millicores);
    assert!(cg.defaults.memory_bytes <= cg.ceilings.memory_bytes);
    assert!(cg.defaults.pids <= cg.ceilings.pids);
    assert!(p.audit.log.as_ref().is_none_or(|l| l.is_absolute()));
});
