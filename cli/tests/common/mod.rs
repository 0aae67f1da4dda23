//! What the CLI's test files share: the workspace root, the exporter as a child process,
//! profiles whose audit log is in a temp dir, promtool.
#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The exporter process; killed (by its pid, via the handle) and reaped on drop.
pub struct Exporter {
    child: Child,
    pub addr: SocketAddr,
}

impl Exporter {
    /// `stockade monitor --listen 127.0.0.1:0 ARGS`.
    pub fn start(args: &[&str]) -> Exporter {
        let mut all = vec!["monitor", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Exporter::start_exact(&all)
    }

    /// `stockade ARGS` (which must start the exporter).
    pub fn start_exact(args: &[&str]) -> Exporter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stockade"))
            .args(args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = stockade_monitor::banner_addr(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no address in the exporter's first line ({args:?}): {line:?}");
        };
        Exporter { child, addr }
    }
}

/// An exporter without a seccomp source, for the shipped default profile (its audit log
/// in `dir`) and the node state in `dir`.
pub fn default_exporter(dir: &Path) -> Exporter {
    let profile = profile_copy(dir, "default.toml");
    Exporter::start(&[
        "--no-seccomp",
        "--profile",
        profile.to_str().unwrap(),
        "--state-dir",
        dir.to_str().unwrap(),
    ])
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `series` (name and labels, exactly as exported).
pub fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The shipped profile `name` (default.toml, strict.toml) copied into `dir`, with its
/// seccomp file resolved and its audit log at `dir/audit.jsonl`.
pub fn profile_copy(dir: &Path, name: &str) -> PathBuf {
    let shipped = std::fs::read_to_string(root().join("profiles").join(name)).unwrap();
    // Every relative "seccomp/..." file (profile, strict's narrow) at the shipped one.
    let seccomp = root().join("profiles/seccomp");
    let trail = dir.join("audit.jsonl");
    let text = shipped
        .replace("\"seccomp/", &format!("\"{}/", seccomp.display()))
        .replace(
            "log = \"/var/log/stockade/audit.jsonl\"",
            &format!("log = {:?}", trail.display().to_string()),
        );
    assert_ne!(text, shipped, "profiles/{name} changed shape");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs promtool (Debian package prometheus, installed by `make test`) in `dir`.
pub fn promtool(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `make test` installs it)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
