//! Where the harness finds the workspace, the built shim and the profiles.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The shim binary containerd looks up for runtime_type `io.containerd.stockade.v1`.
pub const SHIM_BINARY: &str = "containerd-shim-stockade-v1";

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("STOCKADE_WORKSPACE") {
        return PathBuf::from(dir);
    }
    // integration/ is one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Directories that may hold the freshly built shim, most specific first.
fn shim_dir_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("STOCKADE_SHIM_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    // Test binaries live in <target>/<profile>/deps, the demo in <target>/<profile>.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if dir.file_name().is_some_and(|n| n == "deps") {
                if let Some(profile_dir) = dir.parent() {
                    dirs.push(profile_dir.to_path_buf());
                }
            } else {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(&target).join("debug"));
        dirs.push(PathBuf::from(&target).join("release"));
    }
    dirs.push(workspace_root().join("target").join("debug"));
    dirs.push(workspace_root().join("target").join("release"));
    dirs
}

/// The directory holding `containerd-shim-stockade-v1`; containerd gets it first in PATH.
pub fn shim_dir() -> Result<PathBuf> {
    let candidates = shim_dir_candidates();
    for dir in &candidates {
        if dir.join(SHIM_BINARY).is_file() {
            return Ok(dir.clone());
        }
    }
    bail!(
        "{SHIM_BINARY} not found (looked in {}); build it first: \
         cargo build -p containerd-shim-stockade-v1 (or `make test`, which builds it)",
        candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Stockade's CRI handlers as deploy/ registers them, with their profiles' file names.
pub const HANDLER_PROFILES: [(&str, &str); 3] = [
    ("stockade", "default.toml"),
    ("stockade-strict", "strict.toml"),
    ("stockade-record", "record.toml"),
];

/// The profiles directory (default.toml, strict.toml, record.toml, seccomp/).
///
/// By default, the shipped profiles as tests use them: copied under target/ with their
/// audit log pointed there too, so tests never write the node's /var/log/stockade.
pub fn profiles_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STOCKADE_PROFILES_DIR") {
        return PathBuf::from(dir);
    }
    static TEST_PROFILES: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEST_PROFILES
        .get_or_init(|| {
            let shipped = workspace_root().join("profiles");
            test_profiles(&shipped).unwrap_or(shipped)
        })
        .clone()
}

/// The audit log the test copies of the profiles write.
pub fn test_audit_log() -> PathBuf {
    test_profiles_dir().join("audit.jsonl")
}

/// The one host path the test copies of the profiles list as writable
/// (`volumes.host_paths`): tests put their writable hostPath volumes below it.
pub fn test_volumes_dir() -> PathBuf {
    workspace_root().join("target/stockade-test-volumes")
}

/// kubelet's root directory in the test copies of the profiles (`kubelet.root_dir`):
/// tests lay out kubelet's volumes below `<it>/pods/<pod uid>/`.
pub fn test_kubelet_root() -> PathBuf {
    workspace_root().join("target/stockade-test-kubelet")
}

/// The tests play kubelet: its user-namespace IDs (`kubelet.userns_ids`), which hostUsers:
/// false test pods take their mappings from, beside Stockade's pool.
pub const TEST_KUBELET_IDS: (u32, u32) = (65_536, 110 * 65_536);

fn test_profiles_dir() -> PathBuf {
    workspace_root().join("target/stockade-test-profiles")
}

/// A shipped profile as tests use it: its audit log under target/, the tests' kubelet, and
/// (with `seccomp`) its seccomp paths absolute.
fn test_profile_text(shipped: &Path, name: &str, seccomp: Option<&Path>) -> Result<String> {
    let path = shipped.join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // Every relative "seccomp/..." path (profile, narrow) points at `seccomp`, the
    // resolved directory of the shipped seccomp files.
    // kubelet's range and root are the tests' own (TEST_KUBELET_IDS, test_kubelet_root), and
    // default.toml lists the tests' writable hostPath directory.
    let lines: Vec<String> = text
        .lines()
        .map(|line| match seccomp {
            _ if line.starts_with("log = ") => format!("log = {:?}", test_audit_log()),
            _ if line.starts_with("userns_ids = ") => format!(
                "userns_ids = \"{}:{}\"",
                TEST_KUBELET_IDS.0, TEST_KUBELET_IDS.1
            ),
            _ if line.starts_with("root_dir = ") => {
                format!("root_dir = {:?}", test_kubelet_root())
            }
            _ if line.starts_with("host_paths = ") && name == "default.toml" => format!(
                "host_paths = [{{ path = {:?}, writable = true }}]",
                test_volumes_dir()
            ),
            Some(dir) => line.replace("\"seccomp/", &format!("\"{}/", dir.display())),
            None => line.to_string(),
        })
        .collect();
    Ok(lines.join("\n") + "\n")
}

fn test_profiles(shipped: &Path) -> Result<PathBuf> {
    let dir = test_profiles_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let seccomp = shipped.join("seccomp");
    let seccomp = seccomp
        .canonicalize()
        .with_context(|| format!("resolving {}", seccomp.display()))?;
    for name in ["default.toml", "strict.toml", "record.toml"] {
        let text = test_profile_text(shipped, name, Some(&seccomp))?;
        // Several test processes may do this at once: write aside, then rename.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(name))
            .with_context(|| format!("renaming {}", tmp.display()))?;
    }
    Ok(dir)
}

/// The shipped profiles laid out as an installer copies them (default.toml, strict.toml,
/// record.toml, seccomp/default.json and strict.json, the seccomp paths relative), in `dir`, with the audit log under
/// target/ so an installed copy never writes the node's /var/log/stockade.
pub fn installable_profiles(dir: &Path) -> Result<()> {
    let shipped = workspace_root().join("profiles");
    std::fs::create_dir_all(dir.join("seccomp"))
        .with_context(|| format!("creating {}/seccomp", dir.display()))?;
    for name in HANDLER_PROFILES.map(|(_, profile)| profile) {
        let text = test_profile_text(&shipped, name, None)?;
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    for json in ["seccomp/default.json", "seccomp/strict.json"] {
        std::fs::copy(shipped.join(json), dir.join(json))
            .with_context(|| format!("copying {}", shipped.join(json).display()))?;
    }
    Ok(())
}

/// A profile by file name, e.g. `default.toml`; errors if it does not exist.
pub fn profile(name: &str) -> Result<PathBuf> {
    let path = profiles_dir().join(name);
    if !path.is_file() {
        bail!("profile {} does not exist", path.display());
    }
    path.canonicalize()
        .with_context(|| format!("resolving {}", path.display()))
}

/// Fail loudly (not skip) when a host tool the tests need is missing.
pub fn require_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "`{name}` is not installed (the integration tests need containerd, runc, \
         busybox-static and containernetworking-plugins: apt-get install containerd runc \
         busybox-static containernetworking-plugins)"
    )
}
