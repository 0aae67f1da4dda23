//! The security suite's escape probes: the probe program (integration/probe/probe.c,
//! built with `gcc -static` at test time), a probe image around it, running it in a
//! container under a runtime, and the report table (runc vs Stockade, and the guard
//! that stopped each attempt).

use crate::containerd::{Containerd, CRI_NAMESPACE};
use crate::image::{process, write_oci_archive, Layer, OciImage};
use crate::paths;
use crate::runtimes::TestRuntime;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// busybox plus the probe (`/probe`), a setuid-root copy (`/probe-suid`) and a `/dev/null`
/// that is a symlink to a host path (CVE-2025-31133 class).
pub const PROBE_IMAGE: &str = "registry.k8s.io/stockade-test/probe:latest";
/// The same content from a registry no profile allows.
pub const EVIL_IMAGE: &str = "evil.example.com/busybox:latest";
/// The probe image whose config runs it as an application user (`USER 1000:1000`):
/// what the strict profile (`run-as-root`) accepts, through ctr too.
pub const PROBE_USER_IMAGE: &str = "registry.k8s.io/stockade-test/probe-user:latest";
/// The application user of [`PROBE_USER_IMAGE`].
pub const PROBE_UID: u32 = 1000;

/// What one probe attempt printed: `PROBE <name> <outcome> <detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeLine {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The attempt worked.
    Allowed,
    /// The attempt failed (detail says how).
    Blocked,
    /// The kernel itself lacks the feature: says nothing about the runtime.
    Unsupported,
    /// The situation the probe waits for never arose (e.g. no runtime process visible).
    Unobserved,
}

impl Outcome {
    fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "ALLOWED" => Outcome::Allowed,
            "BLOCKED" => Outcome::Blocked,
            "UNSUPPORTED" => Outcome::Unsupported,
            "UNOBSERVED" => Outcome::Unobserved,
            _ => return None,
        })
    }

    pub fn word(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Blocked => "blocked",
            Outcome::Unsupported => "n/a (kernel)",
            Outcome::Unobserved => "not observed",
        }
    }
}

/// The `PROBE` lines of a probe's stdout.
pub fn parse_probe_lines(stdout: &str) -> Vec<ProbeLine> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut parts = l.trim_end().splitn(4, ' ');
            if parts.next()? != "PROBE" {
                return None;
            }
            let name = parts.next()?.to_string();
            let outcome = Outcome::parse(parts.next()?)?;
            let detail = parts.next().unwrap_or("").to_string();
            Some(ProbeLine {
                name,
                outcome,
                detail,
            })
        })
        .collect()
}

/// The probe's sources, in this crate.
pub fn probe_sources() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("probe");
    ["probe.c", "probe_rules.c"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

/// Compile the probe statically into `dir`; returns the binary's path.
pub fn build_probe(dir: &Path) -> Result<PathBuf> {
    let out = dir.join("stockade-probe");
    gcc_static(&probe_sources(), &out)?;
    Ok(out)
}

/// `gcc -static -O2 -Wall -o OUT SOURCES...`, failing with gcc's message.
pub fn gcc_static(sources: &[PathBuf], out: &Path) -> Result<()> {
    paths::require_tool("gcc")?;
    let result = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(out)
        .args(sources)
        .output()
        .context("running gcc")?;
    if !result.status.success() {
        bail!(
            "gcc -static {} failed (apt-get install gcc libc6-dev): {}",
            sources
                .iter()
                .map(|s| s.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(())
}

/// The probe image's single layer. `/dev/null` points at `devnull_target`, a host path.
fn probe_layer(probe: &[u8], devnull_target: &Path) -> Result<Vec<u8>> {
    let mut l = Layer::busybox(None)?;
    l.file("probe", 0o755, probe)?;
    // setuid root: under no_new_privs exec must not raise the euid.
    l.file("probe-suid", 0o4755, probe)?;
    l.symlink("dev/null", devnull_target)?;
    l.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nprobe:x:1000:1000::/tmp:/bin/sh\n",
    )?;
    l.file("etc/group", 0o644, b"root:x:0:\nprobe:x:1000:\n")?;
    l.finish()
}

/// Write an OCI archive holding [`PROBE_IMAGE`] and [`EVIL_IMAGE`] (distinct configs:
/// containerd 1.6 names a container's image by the first name of its image).
pub fn write_probe_images(out: &Path, probe: &Path, devnull_target: &Path) -> Result<()> {
    let probe = std::fs::read(probe).with_context(|| format!("reading {}", probe.display()))?;
    let layer = probe_layer(&probe, devnull_target)?;
    let image = |name, label, user: Option<String>| {
        let mut config = process(&["sh"], &[("org.stockade.test", label)]);
        config.set_user(user);
        OciImage {
            name,
            layer: &layer,
            process: config,
        }
    };
    write_oci_archive(
        out,
        &[
            image(PROBE_IMAGE, "probe", None),
            image(EVIL_IMAGE, "untrusted-registry", None),
            image(
                PROBE_USER_IMAGE,
                "probe-user",
                Some(format!("{PROBE_UID}:{PROBE_UID}")),
            ),
        ],
    )
}

/// Build the probe, the probe images and import them into `c`'s own namespace and
/// `k8s.io`. Returns the host canary file the image's `/dev/null` points at.
pub fn install_probe_images(c: &Containerd) -> Result<PathBuf> {
    let dir = c.dir.join("probe");
    std::fs::create_dir_all(&dir)?;
    let canary = dir.join("host-canary");
    std::fs::write(&canary, "host file: must never change\n")?;
    let probe = build_probe(&dir)?;
    let archive = dir.join("probe-images.tar");
    write_probe_images(&archive, &probe, &canary)?;
    let archive = archive.display().to_string();
    for ns in [c.namespace(), CRI_NAMESPACE] {
        let out = c.ctr_in(ns, &["images", "import", &archive]);
        if !out.status.success() {
            bail!(
                "importing the probe images into {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(canary)
}

/// `ctr run` arguments for the probe image under `rt`: `run [flags] <rt> IMAGE id cmd..`.
pub fn ctr_run_args(rt: &TestRuntime, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
    ctr_run_image_args(rt, PROBE_IMAGE, flags, id, cmd)
}

/// [`ctr_run_args`] for another image (e.g. [`PROBE_USER_IMAGE`]).
pub fn ctr_run_image_args(
    rt: &TestRuntime,
    image: &str,
    flags: &[&str],
    id: &str,
    cmd: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(flags.iter().map(|s| s.to_string()));
    args.extend(rt.ctr_run_args());
    args.push(image.into());
    args.push(id.into());
    args.extend(cmd.iter().map(|s| s.to_string()));
    args
}

/// Run the probe image attached (`ctr run --rm`) and return ctr's output.
pub fn run_probe(
    c: &Containerd,
    rt: &TestRuntime,
    flags: &[&str],
    id: &str,
    cmd: &[&str],
) -> Output {
    let mut all = vec!["--rm"];
    all.extend_from_slice(flags);
    let args = ctr_run_args(rt, &all, id, cmd);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    c.ctr(&refs)
}

/// stdout + stderr of a command, for messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// One row of the security report.
#[derive(Debug, Clone)]
pub struct Row {
    pub probe: String,
    pub runc: String,
    pub stockade: String,
    /// The guard(s) that stopped it under Stockade.
    pub guard: String,
    /// Whether runc's default container lets the attempt through (the probe is "real").
    pub runc_allows: bool,
    /// Whether Stockade stopped it.
    pub stockade_stops: bool,
    /// Why the runc baseline cannot show the probe is real (runc blocks it too, or the
    /// kernel lacks the feature), if so.
    pub note: String,
}

/// The report as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| probe | runc (default) | Stockade | stopped by (Stockade) | note |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    let cell = |t: &str| t.replace('|', "\\|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            cell(&r.probe),
            cell(&r.runc),
            cell(&r.stockade),
            cell(&r.guard),
            cell(&r.note)
        );
    }
    s
}

/// Where the report is written: `$STOCKADE_SECURITY_REPORT`, else
/// `<workspace>/target/security-report.md`.
pub fn report_path() -> PathBuf {
    std::env::var_os("STOCKADE_SECURITY_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::workspace_root().join("target/security-report.md"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_lines() {
        let out =
            "noise\nPROBE bpf BLOCKED errno=EPERM\nPROBE kcore UNSUPPORTED open errno=ENOENT\n\
                   PROBE x WHATEVER y\n";
        let lines = parse_probe_lines(out);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name, "bpf");
        assert_eq!(lines[0].outcome, Outcome::Blocked);
        assert_eq!(lines[1].detail, "open errno=ENOENT");
    }

    #[test]
    fn probe_compiles_statically() {
        let dir = tempfile::tempdir().unwrap();
        let bin = build_probe(dir.path()).unwrap();
        let out = Command::new(&bin).arg("af-alg").output().unwrap();
        let lines = parse_probe_lines(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(lines.len(), 1, "{out:?}");
        assert_eq!(lines[0].name, "af-alg");
        let file = Command::new("file").arg(&bin).output();
        if let Ok(f) = file {
            let text = String::from_utf8_lossy(&f.stdout).to_string();
            assert!(!text.contains("dynamically"), "{text}");
        }
    }

    #[test]
    fn markdown_escapes_pipes() {
        let rows = [Row {
            probe: "a|b".into(),
            runc: "allowed".into(),
            stockade: "blocked".into(),
            guard: "seccomp".into(),
            runc_allows: true,
            stockade_stops: true,
            note: String::new(),
        }];
        let md = markdown(&rows);
        assert!(md.contains("a\\|b"));
        assert_eq!(md.lines().count(), 3);
    }
}
