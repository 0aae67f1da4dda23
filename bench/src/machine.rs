//! Machine and version facts recorded with every run.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// First line of `cmd args` (stdout, else stderr), or "not found".
/// A containerd binary of the run: the harness's choice where it can make one.
fn bin(name: &str) -> std::path::PathBuf {
    let chosen = stockade_integration::binaries::Binaries::get().ok();
    match (name, chosen) {
        ("containerd", Some(b)) => b.containerd(),
        ("ctr", Some(b)) => b.ctr(),
        _ => name.into(),
    }
}

fn version_of(cmd: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    match Command::new(cmd).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(_) => "not found".to_string(),
    }
}

fn cpu_model() -> String {
    read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A field of /proc/meminfo in kB.
pub fn meminfo_kb(field: &str) -> Option<u64> {
    read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn loadavg() -> String {
    read("/proc/loadavg")
}

fn cgroup_mode() -> &'static str {
    let v2_root = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let unified = Path::new("/sys/fs/cgroup/unified").exists();
    match (v2_root, unified) {
        (true, _) => "v2 (unified)",
        (false, true) => "hybrid (v1 controllers, empty v2 at /sys/fs/cgroup/unified)",
        (false, false) => "v1",
    }
}

fn git_rev(root: &Path) -> String {
    let rev = version_of(
        "git",
        &[
            "-C",
            &root.display().to_string(),
            "rev-parse",
            "--short=12",
            "HEAD",
        ],
    );
    let dirty = Command::new("git")
        .args(["-C", &root.display().to_string(), "status", "--porcelain"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{rev} (with uncommitted changes)")
    } else {
        rev
    }
}

/// Everything about the machine, the tools and the build that a reader of the report
/// needs to compare runs.
pub fn collect(shim: &Result<std::path::PathBuf, String>) -> Value {
    let root = stockade_integration::paths::workspace_root();
    let shim_info = match shim {
        Ok(path) => {
            let meta = std::fs::metadata(path).ok();
            json!({
                "path": path.display().to_string(),
                "build": if path.components().any(|c| c.as_os_str() == "release") { "release" } else { "debug" },
                "size_bytes": meta.as_ref().map(|m| m.len()),
            })
        }
        Err(e) => json!({ "error": e }),
    };
    json!({
        "hostname": read("/proc/sys/kernel/hostname"),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "kernel_version": read("/proc/sys/kernel/version"),
        "arch": std::env::consts::ARCH,
        "cpu": cpu_model(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_total_kb": meminfo_kb("MemTotal"),
        "os": read("/etc/os-release").lines().find(|l| l.starts_with("PRETTY_NAME=")).map(|l| l.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_string()),
        "cgroups": cgroup_mode(),
        // The containerd under test (STOCKADE_CONTAINERD, else Debian's from PATH).
        "containerd": version_of(bin("containerd"), &["--version"]),
        "runc": version_of("runc", &["--version"]),
        "ctr": version_of(bin("ctr"), &["--version"]),
        "rustc": version_of("rustc", &["--version"]),
        "git_rev": git_rev(&root),
        "bench_build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "stockade_shim": shim_info,
        "loadavg_start": loadavg(),
    })
}
